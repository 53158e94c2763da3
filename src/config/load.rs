//! Loading a configuration file: read it, parse it (pure), then read what it only names — password files, TLS
//! files, the API token, the API's certificate — so that a missing or malformed one is a configuration error
//! now, not a failed poll later. The one loader `run`, `check-config` and a reload all use: whatever `run`
//! refuses in a file, `check-config` refuses with the same message.

use std::path::Path;

use super::{Config, ConfigError, parse};
use crate::etcd::connect::Connector;
use crate::secret::{Credentials, Secret};

/// A configuration of thousands of clusters is well under this.
const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Reads, parses and checks a configuration file; every error names the file (and the line and key it can).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    if let Err(cause) = std::fs::metadata(path) {
        return Err(ConfigError::Read {
            file: file.clone(),
            cause,
        });
    }
    let bytes = crate::files::read_small_file(path, MAX_CONFIG_BYTES).map_err(|message| {
        ConfigError::Whole {
            file: file.clone(),
            message,
        }
    })?;
    let text = String::from_utf8(bytes).map_err(|_| ConfigError::Whole {
        file: file.clone(),
        message: "not UTF-8 text".into(),
    })?;
    let mut config = parse(&file, &text)?;
    for c in &mut config.clusters {
        if let Some((user, password_file)) = &c.password_file {
            let password =
                Secret::from_file(password_file).map_err(|cause| ConfigError::Secret {
                    file: file.clone(),
                    cluster: c.name.clone(),
                    key: "password_file",
                    cause,
                })?;
            c.connect.credentials = Some(Credentials {
                user: user.clone(),
                password,
            });
        }
        if let Some(s3) = c.snapshot.as_mut().and_then(|s| s.s3.as_mut())
            && let Some(files) = &s3.credential_files
        {
            // They travel in a request header: visible ASCII only (a NUL or a space would be refused by the
            // HTTP layer, or worse).
            let read = |path: &Path, key: &'static str| {
                Secret::token_from_file(path).map_err(|cause| ConfigError::Secret {
                    file: file.clone(),
                    cluster: c.name.clone(),
                    key,
                    cause,
                })
            };
            s3.credentials = Some(super::S3Credentials {
                access_key_id: read(&files.access_key_id, "snapshot.s3.access_key_id_file")?,
                secret_access_key: read(
                    &files.secret_access_key,
                    "snapshot.s3.secret_access_key_file",
                )?,
                session_token: files
                    .session_token
                    .as_deref()
                    .map(|p| read(p, "snapshot.s3.session_token_file"))
                    .transpose()?,
            });
        }
        if let Some(s) = &c.snapshot
            && !s.dir.is_dir()
        {
            return Err(ConfigError::Setting {
                file: file.clone(),
                key: "snapshot.dir",
                message: format!(
                    "cluster {}: {} is not a directory (create it first)",
                    c.name,
                    s.dir.display()
                ),
            });
        }
        // Builds the TLS configuration, which reads and checks the files.
        Connector::new(c.connect.clone()).map_err(|cause| ConfigError::Connect {
            file: file.clone(),
            cluster: c.name.clone(),
            cause,
        })?;
        // After the files were checked (regular, bounded) by building the connector.
        c.connect.tls.files_digest = c.connect.tls.digest_files();
    }
    let setting = |key: &'static str, message: String| ConfigError::Setting {
        file: file.clone(),
        key,
        message,
    };
    if let Some(path) = &config.api_token_file {
        config.api_token = Some(
            Secret::token_from_file(path).map_err(|e| setting("api_token_file", e.to_string()))?,
        );
    }
    if let Some((cert, key)) = &config.server_tls {
        crate::pem::server_config(cert, key).map_err(|e| setting("tls_cert, tls_key", e))?;
    }
    Ok(config)
}
