//! Snapshots in S3-compatible storage, through `object_store`: uploaded after local verification (in parts of
//! 8 MiB, two in flight, completed only when every part is in, aborted otherwise; each request retried with
//! backoff a bounded number of times), listed and pruned by name. A snapshot object counts only with its sidecar
//! object beside it, and the sidecar goes up last: an upload cut short is never listed, so never counted as a
//! backup. Memory is bounded by the parts in flight whatever the snapshot's size.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::parse_name;
use crate::config::S3Config;
use crate::files::{RemoveOnDrop, file_name};

/// Parts of this size; S3 wants at least 5 MiB for all but the last.
const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts in flight at once: memory is about this many parts.
const PARTS_IN_FLIGHT: usize = 2;

/// Why an S3 operation failed, by reason (the `reason` label of `snapshot_upload_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumIter)]
#[strum(serialize_all = "snake_case")]
pub enum RemoteFailure {
    /// The credentials were refused (wrong keys, no permission on the bucket).
    Auth,
    /// The bucket does not exist.
    NoBucket,
    /// The object is not there.
    NotFound,
    /// The server could not be reached, or did not answer in time.
    Network,
    /// The TLS handshake failed (the server's certificate was refused).
    Tls,
    /// The local file could not be read or written.
    Local,
    /// The object is not what was uploaded (its size differs).
    Mismatch,
    Other,
}

#[derive(Debug, Error)]
#[error("{location}: {message}")]
pub struct RemoteError {
    pub kind: RemoteFailure,
    /// `s3://bucket/key`.
    pub location: String,
    pub message: String,
}

impl RemoteError {
    pub fn reason(&self) -> &'static str {
        self.kind.into()
    }
}

/// A snapshot object, as its name and listing say.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteSnapshot {
    pub name: String,
    pub cluster: String,
    pub taken_at: SystemTime,
    pub revision: i64,
    pub size: u64,
}

impl RemoteSnapshot {
    pub fn retention_entry(&self) -> crate::maintenance::retention::Entry {
        crate::maintenance::retention::Entry {
            name: self.name.clone(),
            cluster: self.cluster.clone(),
            taken_at: self.taken_at,
        }
    }
}

/// One bucket and prefix.
pub struct S3Store {
    store: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
}

impl S3Store {
    /// A client for `config`: its credentials when it has them, else the AWS environment variables. Sends
    /// nothing yet.
    pub fn new(config: &S3Config) -> Result<S3Store, RemoteError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_virtual_hosted_style_request(!config.path_style)
            .with_retry(object_store::RetryConfig {
                // 1, 2, 4, 8, 16 s (with jitter): a blip of half a minute is ridden out.
                backoff: object_store::BackoffConfig {
                    init_backoff: Duration::from_secs(1),
                    max_backoff: Duration::from_secs(30),
                    base: 2.0,
                },
                max_retries: 5,
                retry_timeout: Duration::from_secs(120),
            })
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_timeout(Duration::from_secs(120)),
            );
        // Without a region, the AWS environment's (AWS_REGION, AWS_DEFAULT_REGION), else us-east-1.
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(virtual_host_endpoint(
                    endpoint,
                    &config.bucket,
                    config.path_style,
                ))
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(c) = &config.credentials {
            builder = builder
                .with_access_key_id(c.access_key_id.expose())
                .with_secret_access_key(c.secret_access_key.expose());
            if let Some(t) = &c.session_token {
                builder = builder.with_token(t.expose());
            }
        }
        let store = builder.build().map_err(|e| RemoteError {
            kind: RemoteFailure::Other,
            location: config.url(),
            message: e.to_string(),
        })?;
        Ok(S3Store {
            store: Arc::new(store),
            bucket: config.bucket.clone(),
            prefix: config.prefix.clone(),
        })
    }

    fn key(&self, name: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    /// `s3://bucket/prefix/name`.
    pub fn url(&self, name: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(name))
    }

    fn error(&self, name: &str, e: &object_store::Error) -> RemoteError {
        RemoteError {
            kind: classify(e),
            location: self.url(name),
            message: describe(e),
        }
    }

    /// Uploads a verified snapshot and then its sidecar (both local files, named as they will be remotely). If
    /// the snapshot went up but its sidecar did not (or did not check out), the snapshot object is deleted again:
    /// without a sidecar it would never be listed, so never pruned.
    pub async fn upload_snapshot(
        &self,
        snapshot: &Path,
        sidecar: &Path,
    ) -> Result<(), RemoteError> {
        let name = file_name(snapshot);
        if let Err(e) = self.upload(snapshot).await {
            if e.kind == RemoteFailure::Mismatch {
                let _ = self.store.delete(&self.key(&name)).await;
            }
            return Err(e);
        }
        if let Err(e) = self.upload(sidecar).await {
            let _ = self.store.delete(&self.key(&file_name(sidecar))).await;
            let _ = self.store.delete(&self.key(&name)).await;
            return Err(e);
        }
        Ok(())
    }

    /// Uploads one file under its own name: multipart (parts sent `PARTS_IN_FLIGHT` at a time), aborted on any
    /// failure, and its size checked after.
    async fn upload(&self, file: &Path) -> Result<(), RemoteError> {
        let name = file_name(file);
        let local = |cause: std::io::Error| RemoteError {
            kind: RemoteFailure::Local,
            location: self.url(&name),
            message: format!("reading {}: {cause}", file.display()),
        };
        let mut input = tokio::fs::File::open(file).await.map_err(local)?;
        let size = input.metadata().await.map_err(local)?.len();
        let mut upload = self
            .store
            .put_multipart(&self.key(&name))
            .await
            .map_err(|e| self.error(&name, &e))?;
        let result: Result<(), RemoteError> = async {
            // A part's request starts when it is spawned; the oldest is awaited once as many as allowed are out.
            let mut in_flight = std::collections::VecDeque::new();
            loop {
                let mut part = vec![0u8; PART_BYTES];
                let n = read_full(&mut input, &mut part).await.map_err(local)?;
                if n == 0 {
                    break;
                }
                part.truncate(n);
                in_flight.push_back(tokio::spawn(upload.put_part(part.into())));
                if in_flight.len() >= PARTS_IN_FLIGHT
                    && let Some(oldest) = in_flight.pop_front()
                {
                    self.part_done(&name, oldest).await?;
                }
                if n < PART_BYTES {
                    break;
                }
            }
            while let Some(part) = in_flight.pop_front() {
                self.part_done(&name, part).await?;
            }
            upload
                .complete()
                .await
                .map(|_| ())
                .map_err(|e| self.error(&name, &e))
        }
        .await;
        if let Err(e) = result {
            // Best effort: parts left behind cost storage until the bucket's lifecycle rule removes them.
            let _ = upload.abort().await;
            return Err(e);
        }
        let meta = self
            .store
            .head(&self.key(&name))
            .await
            .map_err(|e| self.error(&name, &e))?;
        if meta.size != size {
            return Err(RemoteError {
                kind: RemoteFailure::Mismatch,
                location: self.url(&name),
                message: format!("{} bytes stored, {size} uploaded", meta.size),
            });
        }
        Ok(())
    }

    async fn part_done(
        &self,
        name: &str,
        part: tokio::task::JoinHandle<object_store::Result<()>>,
    ) -> Result<(), RemoteError> {
        match part.await {
            Ok(result) => result.map_err(|e| self.error(name, &e)),
            Err(e) => Err(RemoteError {
                kind: RemoteFailure::Other,
                location: self.url(name),
                message: e.to_string(),
            }),
        }
    }

    /// Snapshots under the prefix that have their sidecar beside them, oldest first.
    pub async fn list(&self) -> Result<Vec<RemoteSnapshot>, RemoteError> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let mut objects = self.store.list(prefix.as_ref());
        let mut sizes = std::collections::BTreeMap::new();
        while let Some(meta) = objects.next().await {
            let meta = meta.map_err(|e| self.error("", &e))?;
            let Some(name) = meta.location.filename() else {
                continue;
            };
            // Only objects directly under the prefix.
            if meta.location.as_ref() != self.key(name).as_ref() {
                continue;
            }
            sizes.insert(name.to_string(), meta.size);
        }
        let mut out: Vec<RemoteSnapshot> = sizes
            .iter()
            .filter(|(name, _)| sizes.contains_key(&format!("{name}.json")))
            .filter_map(|(name, size)| {
                let facts = parse_name(name)?;
                Some(RemoteSnapshot {
                    name: name.clone(),
                    cluster: facts.cluster,
                    taken_at: facts.taken_at,
                    revision: facts.revision,
                    size: *size,
                })
            })
            .collect();
        out.sort_by(|a, b| (a.taken_at, &a.name).cmp(&(b.taken_at, &b.name)));
        Ok(out)
    }

    /// Deletes a snapshot object and then its sidecar (so that a failure between leaves no unlisted snapshot).
    pub async fn delete(&self, name: &str) -> Result<(), RemoteError> {
        self.store
            .delete(&self.key(name))
            .await
            .map_err(|e| self.error(name, &e))?;
        let sidecar = format!("{name}.json");
        match self.store.delete(&self.key(&sidecar)).await {
            Err(object_store::Error::NotFound { .. }) | Ok(()) => Ok(()),
            Err(e) => Err(self.error(&sidecar, &e)),
        }
    }

    /// Downloads a snapshot and its sidecar, when there is one, into `dir` (each through a `.part`, renamed when
    /// complete); returns the snapshot's local path.
    pub async fn download(&self, name: &str, dir: &Path) -> Result<PathBuf, RemoteError> {
        let sidecar = format!("{name}.json");
        match self.download_one(&sidecar, dir).await {
            Err(e) if e.kind == RemoteFailure::NotFound => {}
            other => {
                other?;
            }
        }
        let path = self.download_one(name, dir).await;
        if path.is_err() {
            let _ = std::fs::remove_file(dir.join(&sidecar));
        }
        path
    }

    async fn download_one(&self, name: &str, dir: &Path) -> Result<PathBuf, RemoteError> {
        let target = dir.join(name);
        let part = RemoveOnDrop::new(dir.join(format!("{name}.part")));
        let local = |cause: std::io::Error| RemoteError {
            kind: RemoteFailure::Local,
            location: self.url(name),
            message: format!("writing {}: {cause}", part.path.display()),
        };
        let mut out = tokio::fs::File::create(&part.path).await.map_err(local)?;
        let mut stream = self
            .store
            .get(&self.key(name))
            .await
            .map_err(|e| self.error(name, &e))?
            .into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.error(name, &e))?;
            out.write_all(&chunk).await.map_err(local)?;
        }
        out.sync_all().await.map_err(local)?;
        tokio::fs::rename(&part.path, &target)
            .await
            .map_err(local)?;
        Ok(target)
    }
}

/// The endpoint object_store wants: in virtual-hosted style it takes a custom endpoint as the bucket's own URL,
/// so the bucket goes in front of the host (`https://minio.example:9000` → `https://etcd-backups.minio.example:9000`).
fn virtual_host_endpoint(endpoint: &str, bucket: &str, path_style: bool) -> String {
    if path_style {
        return endpoint.to_string();
    }
    match endpoint.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{bucket}.{rest}"),
        None => endpoint.to_string(),
    }
}

/// Reads until `buf` is full or the file ends.
async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

fn classify(e: &object_store::Error) -> RemoteFailure {
    // The server's answer and the transport's failure are in the sources; the top level also carries the request
    // URL, whose bucket, prefix and names must not be mistaken for an error code.
    let mut inner = String::new();
    let mut transport = None;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        inner.push_str(&s.to_string());
        inner.push('\n');
        if let Some(http) = s.downcast_ref::<object_store::client::HttpError>() {
            transport = Some(http.kind());
        }
        source = s.source();
    }
    let code = |c: &str| inner.contains(&format!("<Code>{c}</Code>"));
    if code("NoSuchBucket") {
        return RemoteFailure::NoBucket;
    }
    if matches!(
        e,
        object_store::Error::Unauthenticated { .. } | object_store::Error::PermissionDenied { .. }
    ) || [
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "ExpiredToken",
    ]
    .iter()
    .any(|c| code(c))
    {
        return RemoteFailure::Auth;
    }
    if matches!(e, object_store::Error::NotFound { .. }) {
        return RemoteFailure::NotFound;
    }
    if ["certificate", "Certificate", "handshake"]
        .iter()
        .any(|w| inner.contains(w))
    {
        // Final, not transient: nobody's retry fixes a certificate the server should not present.
        return RemoteFailure::Tls;
    }
    use object_store::client::HttpErrorKind;
    match transport {
        Some(
            HttpErrorKind::Connect
            | HttpErrorKind::Timeout
            | HttpErrorKind::Request
            | HttpErrorKind::Interrupted,
        ) => RemoteFailure::Network,
        _ => RemoteFailure::Other,
    }
}

/// The error with its sources, on one line (object_store nests the server's answer several levels deep), with an
/// S3 error document shortened to its code and message.
fn describe(e: &object_store::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    shorten_error_document(&text)
}

/// `… 404 Not Found: <?xml …><Error><Code>NoSuchBucket</Code><Message>…</Message>…` → `… 404 Not Found:
/// NoSuchBucket: The specified bucket does not exist`.
fn shorten_error_document(text: &str) -> String {
    let Some(start) = text.find("<?xml").or_else(|| text.find("<Error>")) else {
        return text.to_string();
    };
    let element = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let from = text.find(&open)? + open.len();
        let to = from + text[from..].find(&close)?;
        let value = text[from..to].trim();
        let value = value
            .strip_prefix("<![CDATA[")
            .and_then(|v| v.strip_suffix("]]>"))
            .unwrap_or(value);
        Some(value.to_string())
    };
    let head = text[..start].trim_end().trim_end_matches(':');
    match (element("Code"), element("Message")) {
        (Some(code), Some(message)) => format!("{head}: {code}: {message}"),
        (Some(code), None) => format!("{head}: {code}"),
        _ => head.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_virtual_hosted_endpoint_names_the_bucket_in_its_host() {
        assert_eq!(
            virtual_host_endpoint("https://minio.example:9000", "etcd-backups", false),
            "https://etcd-backups.minio.example:9000"
        );
        assert_eq!(
            virtual_host_endpoint("http://127.0.0.1:9000", "b", true),
            "http://127.0.0.1:9000"
        );
    }

    #[test]
    fn error_documents_are_shortened_to_code_and_message() {
        let text = "Error performing POST http://h/b/k?uploads= in 5ms - Server returned non-2xx status code: \
                    404 Not Found: <?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n    <Code>NoSuchBucket</Code>\n    \
                    <Message><![CDATA[The specified bucket does not exist]]></Message>\n</Error>\n";
        assert_eq!(
            shorten_error_document(text),
            "Error performing POST http://h/b/k?uploads= in 5ms - Server returned non-2xx status code: 404 Not \
             Found: NoSuchBucket: The specified bucket does not exist"
        );
        assert_eq!(shorten_error_document("plain"), "plain");
        assert_eq!(shorten_error_document("x: <Error><Code>A"), "x");
    }
}
