//! A secret value (password, token) that never shows itself: `Debug` and `Display` print a placeholder, so a
//! secret cannot reach a log line, an error message or an API response by accident.

use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// A secret file that cannot be used; the message names the file, never the content.
#[derive(Debug, Error)]
pub enum SecretError {
    #[error("cannot read {}: {cause}", .path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{} is empty", .path.display())]
    Empty { path: PathBuf },
    #[error("{}: {reason}", .path.display())]
    Unusable { path: PathBuf, reason: String },
}

/// The most a secret file may hold.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that must send it (etcd's Authenticate, a comparison).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from a file, trimming the trailing newline editors and `echo` add.
    pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
        if let Err(cause) = std::fs::metadata(path) {
            return Err(SecretError::Read {
                path: path.to_path_buf(),
                cause,
            });
        }
        let unusable = |reason: String| SecretError::Unusable {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = crate::files::read_small_file(path, MAX_SECRET_BYTES).map_err(unusable)?;
        let text = String::from_utf8(bytes).map_err(|_| unusable("not UTF-8 text".into()))?;
        let value = text.trim_end_matches(['\n', '\r']).to_string();
        if value.is_empty() {
            return Err(SecretError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Secret(value))
    }
}

impl Secret {
    /// An API token from a file: it travels in an HTTP header, which clients and servers trim, so it must be
    /// visible ASCII without spaces (a token that can never be presented would lock the API).
    pub fn token_from_file(path: &Path) -> Result<Secret, SecretError> {
        let secret = Secret::from_file(path)?;
        if secret.0.trim().is_empty() {
            return Err(SecretError::Empty {
                path: path.to_path_buf(),
            });
        }
        Secret::token(&secret.0).map_err(|reason| SecretError::Unusable {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// An API token as given (a file's content, an environment variable), trimmed and checked.
    pub fn token(value: &str) -> Result<Secret, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err("the API token is empty".into());
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "an API token is visible ASCII without spaces (it is sent in an HTTP header)"
                    .into(),
            );
        }
        Ok(Secret(value.to_string()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An etcd user and its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: Secret,
}

impl Credentials {
    /// etcdctl's `--user name[:password]`; the password may instead come from `--password`.
    pub fn parse(user: &str, password: Option<Secret>) -> Result<Credentials, String> {
        let (name, inline) = match user.split_once(':') {
            Some((n, p)) => (n, Some(Secret::new(p))),
            None => (user, None),
        };
        if name.is_empty() {
            return Err("--user: the user name is empty".into());
        }
        let password = match (inline, password) {
            (Some(_), Some(_)) => {
                return Err("--user name:password and --password: give the password once".into());
            }
            (Some(p), None) | (None, Some(p)) => p,
            (None, None) => {
                return Err(format!(
                    "--user {name}: no password (use name:password, --password or a password file)"
                ));
            }
        };
        Ok(Credentials {
            user: name.to_string(),
            password,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let c = Credentials::parse("monitor:hunter2", None).unwrap();
        assert_eq!(c.user, "monitor");
        assert_eq!(c.password.expose(), "hunter2");
        let shown = format!("{c:?} {}", c.password);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            Credentials::parse("monitor", None)
                .unwrap_err()
                .contains("no password")
        );
        assert!(Credentials::parse(":x", None).is_err());
        assert!(Credentials::parse("a:b", Some(Secret::new("c"))).is_err());
        assert_eq!(
            Credentials::parse("a", Some(Secret::new("c")))
                .unwrap()
                .password
                .expose(),
            "c"
        );
    }
}
