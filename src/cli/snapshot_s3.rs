//! The S3 side of `snapshot save|list|prune|verify`: `--s3 s3://bucket/prefix` and how to reach it. Credentials
//! come from files or the AWS environment variables, never from a flag's value (it would show in `ps`).

use std::path::{Path, PathBuf};

use clap::Args;

use etcd_sentinel::config::{S3Config, S3Credentials};
use etcd_sentinel::maintenance::store::s3::S3Store;
use etcd_sentinel::secret::Secret;
use etcd_sentinel::settings::{check_bucket_name, check_s3_endpoint, check_s3_prefix};

use super::CliError;

#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// S3-compatible storage for snapshots: s3://BUCKET[/PREFIX] (no environment variable: `prune` deletes there)
    #[arg(long, value_name = "s3://BUCKET/PREFIX", value_parser = parse_s3_url)]
    pub s3: Option<S3Url>,

    /// The S3-compatible server's URL (MinIO, Ceph, …); AWS when absent
    #[arg(long, env = "ETCD_SENTINEL_S3_ENDPOINT", value_name = "URL", value_parser = check_s3_endpoint)]
    pub s3_endpoint: Option<String>,

    /// The bucket's region [env: AWS_REGION] [default: us-east-1]
    #[arg(long, env = "ETCD_SENTINEL_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,

    /// Path-style requests (https://endpoint/bucket/key), as MinIO and most S3-compatible servers need
    #[arg(long, env = "ETCD_SENTINEL_S3_PATH_STYLE")]
    pub s3_path_style: bool,

    /// File holding the access key id (else AWS_ACCESS_KEY_ID)
    #[arg(long, value_name = "FILE", requires = "s3_secret_access_key_file")]
    pub s3_access_key_id_file: Option<PathBuf>,

    /// File holding the secret access key (else AWS_SECRET_ACCESS_KEY)
    #[arg(long, value_name = "FILE", requires = "s3_access_key_id_file")]
    pub s3_secret_access_key_file: Option<PathBuf>,
}

/// `s3://bucket/prefix`, split.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Url {
    pub bucket: String,
    pub prefix: String,
}

fn parse_s3_url(text: &str) -> Result<S3Url, String> {
    let rest = text
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{text:?}: expected s3://BUCKET or s3://BUCKET/PREFIX"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    check_bucket_name(bucket)?;
    let prefix = prefix.trim_matches('/');
    check_s3_prefix(prefix)?;
    Ok(S3Url {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
    })
}

/// `s3://bucket/prefix/name` as the location and the object's name.
pub fn split_object_url(text: &str) -> Result<(S3Url, String), String> {
    let url = parse_s3_url(text)?;
    let (prefix, name) = match url.prefix.rsplit_once('/') {
        Some((p, n)) => (p.to_string(), n.to_string()),
        None => (String::new(), url.prefix.clone()),
    };
    if name.is_empty() {
        return Err(format!("{text:?}: expected s3://BUCKET/[PREFIX/]NAME"));
    }
    Ok((
        S3Url {
            bucket: url.bucket,
            prefix,
        },
        name,
    ))
}

impl S3Args {
    /// The store `--s3` names, or `None` without `--s3`.
    pub fn store(&self) -> Result<Option<(S3Store, S3Config)>, CliError> {
        let Some(url) = &self.s3 else {
            return Ok(None);
        };
        self.store_at(url).map(Some)
    }

    /// A store for `url` with this connection's endpoint, region and credentials.
    pub fn store_at(&self, url: &S3Url) -> Result<(S3Store, S3Config), CliError> {
        let read = |flag: &str, path: &Path| {
            // They travel in a request header: visible ASCII only.
            Secret::token_from_file(path)
                .map_err(|e| CliError::Usage(format!("--{flag} {}: {e}", path.display())))
        };
        let credentials = match (&self.s3_access_key_id_file, &self.s3_secret_access_key_file) {
            (Some(id), Some(secret)) => Some(S3Credentials {
                access_key_id: read("s3-access-key-id-file", id)?,
                secret_access_key: read("s3-secret-access-key-file", secret)?,
                session_token: None,
            }),
            _ => None,
        };
        if let Some(endpoint) = &self.s3_endpoint
            && !self.s3_path_style
        {
            etcd_sentinel::settings::check_virtual_hosted(endpoint)
                .map_err(|e| CliError::Usage(format!("--s3-endpoint {e}")))?;
        }
        if self
            .s3_region
            .as_deref()
            .is_some_and(|r| r.trim().is_empty())
        {
            return Err(CliError::Usage("--s3-region: empty".into()));
        }
        let config = S3Config {
            bucket: url.bucket.clone(),
            prefix: url.prefix.clone(),
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            path_style: self.s3_path_style,
            credential_files: None,
            credentials,
        };
        let store = S3Store::new(&config).map_err(|e| CliError::Usage(e.to_string()))?;
        Ok((store, config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_name_a_bucket_and_a_prefix() {
        assert_eq!(
            parse_s3_url("s3://etcd-backups/prod/eu/").unwrap(),
            S3Url {
                bucket: "etcd-backups".into(),
                prefix: "prod/eu".into()
            }
        );
        assert_eq!(parse_s3_url("s3://b12").unwrap().prefix, "");
        assert!(parse_s3_url("https://b12/x").is_err());
        assert!(parse_s3_url("s3://Bad_Bucket").is_err());
        let (at, name) = split_object_url("s3://bkt/p/q/a-20261201T000000Z-rev1.db").unwrap();
        assert_eq!(
            (at.prefix.as_str(), name.as_str()),
            ("p/q", "a-20261201T000000Z-rev1.db")
        );
        assert!(split_object_url("s3://bkt").is_err());
    }
}
