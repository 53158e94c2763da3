//! Loading a configuration file: read it, parse it (pure), then read what it only names — password files and TLS
//! files — so that a missing or malformed one is a configuration error now, not a failed poll later. The one
//! loader `run`, `check-config` and a reload all use.

use std::path::Path;

use super::{Config, ConfigError, parse};
use crate::etcd::connect::Connector;
use crate::secret::{Credentials, Secret};

/// Reads, parses and checks a configuration file; every error names the file (and the line and key it can).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    let mut config = parse(&file, &text)?;
    for c in &mut config.clusters {
        if let Some((user, password_file)) = &c.password_file {
            let password =
                Secret::from_file(password_file).map_err(|source| ConfigError::Secret {
                    file: file.clone(),
                    cluster: c.name.clone(),
                    key: "password_file",
                    source,
                })?;
            c.connect.credentials = Some(Credentials {
                user: user.clone(),
                password,
            });
        }
        // Builds the TLS configuration, which reads and checks the files.
        Connector::new(c.connect.clone()).map_err(|source| ConfigError::Connect {
            file: file.clone(),
            cluster: c.name.clone(),
            source,
        })?;
    }
    Ok(config)
}
