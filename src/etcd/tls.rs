//! TLS to etcd: one set of settings (etcdctl's `--cacert`, `--cert`, `--key`, `--insecure-skip-tls-verify`) turned
//! into rustls client configurations, the same for gRPC and for the members' /metrics. Errors name the file and
//! the cause; handshake failures are translated into what an operator should check.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use thiserror::Error;

use crate::pem;

/// TLS settings as the user gives them: paths, read when the connector is built; a reload compares the files'
/// contents (`files_digest`) and reconnects a cluster whose certificates were rotated in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// CA bundle that signs the members' server certificates; the system roots when unset.
    pub cacert: Option<PathBuf>,
    /// Client certificate (for `--client-cert-auth`), with its key.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Accept any server certificate. For emergencies only: it allows a man in the middle.
    pub insecure_skip_verify: bool,
    /// Name to check the server certificate against, instead of the endpoint's host.
    pub server_name: Option<String>,
    /// TLS was asked for without naming anything else: an empty `[cluster.tls]` table (the system's roots).
    pub requested: bool,
    /// A digest of the files' contents when the configuration was loaded (0 when not read): certificates are
    /// rotated in place, so a reload compares contents, not paths, to know whether to reconnect.
    pub files_digest: u64,
}

impl TlsSettings {
    /// The digest of the named files' contents; a file that cannot be read counts as empty (building the TLS
    /// configuration reports it).
    pub fn digest_files(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for path in [&self.cacert, &self.cert, &self.key].into_iter().flatten() {
            path.hash(&mut hasher);
            // Bounded and regular files only, as when they are read for use (a FIFO would block the reload).
            crate::files::read_small_file(path, 1024 * 1024)
                .unwrap_or_default()
                .hash(&mut hasher);
        }
        hasher.finish()
    }
}

impl TlsSettings {
    /// Whether TLS was asked for: any TLS setting, or the configuration's `[cluster.tls]` table even when empty.
    /// Endpoints written without a scheme are then spoken to over TLS, as etcdctl does when given TLS flags.
    pub fn is_configured(&self) -> bool {
        self.requested
            || self.cacert.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || self.insecure_skip_verify
            || self.server_name.is_some()
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TlsError {
    #[error("{kind} {path}: {cause}")]
    File {
        kind: &'static str,
        path: String,
        cause: String,
    },
    #[error("--cert and --key go together: {0} is missing")]
    Incomplete(&'static str),
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The client configurations built from one set of settings.
#[derive(Debug, Clone)]
pub struct TlsConfigs {
    /// With ALPN `h2`, for gRPC.
    pub grpc: Arc<ClientConfig>,
    /// With ALPN `http/1.1`, for /metrics.
    pub http: ClientConfig,
    /// Whether a client certificate is presented (to explain a rejection).
    pub client_cert: bool,
}

fn file_error(kind: &'static str, path: &Path, cause: impl ToString) -> TlsError {
    TlsError::File {
        kind,
        path: path.display().to_string(),
        cause: cause.to_string(),
    }
}

fn read_certs(kind: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    pem::read_certs(path).map_err(|e| file_error(kind, path, e))
}

fn provider() -> Arc<CryptoProvider> {
    pem::crypto_provider()
}

/// Verifies the server certificate against a configured name instead of the host dialled (`--tls-server-name`),
/// for gRPC and /metrics alike.
#[derive(Debug)]
struct VerifyAgainstName {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for VerifyAgainstName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts every server certificate while still checking the handshake signatures.
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Reads the files and builds the client configurations.
pub fn build(settings: &TlsSettings) -> Result<TlsConfigs, TlsError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    match &settings.cacert {
        Some(path) => {
            for cert in read_certs("CA certificate", path)? {
                roots
                    .add(cert)
                    .map_err(|e| file_error("CA certificate", path, e))?;
            }
        }
        None => {
            // etcdctl's behaviour without --cacert: the system's trusted roots.
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
        }
    }
    let roots = Arc::new(roots);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots.clone());
    let mut config = match (&settings.cert, &settings.key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs("client certificate", cert)?;
            let key_der = pem::read_key(key).map_err(|e| file_error("client key", key, e))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                TlsError::Config(format!(
                    "client certificate {} and key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?
        }
        (Some(_), None) => return Err(TlsError::Incomplete("--key")),
        (None, Some(_)) => return Err(TlsError::Incomplete("--cert")),
        (None, None) => builder.with_no_client_auth(),
    };
    if settings.insecure_skip_verify {
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(AcceptAnyServerCert(provider)));
    } else if let Some(name) = &settings.server_name {
        let name = ServerName::try_from(name.clone())
            .map_err(|e| TlsError::Config(format!("TLS server name {name:?}: {e}")))?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(VerifyAgainstName { inner, name }));
    }
    let mut http = config.clone();
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsConfigs {
        grpc: Arc::new(config),
        http,
        client_cert: settings.cert.is_some(),
    })
}

/// Adds what to check to a TLS failure message; the raw cause stays in the message. A rejection by the server
/// reads differently depending on whether we presented a client certificate.
pub fn explain_with(message: &str, client_cert: bool) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    let rejected = [
        "badcertificate",
        "bad certificate",
        "unknownca",
        "unknown ca",
        "decrypterror",
    ];
    if rejected.iter().any(|n| m.contains(n)) {
        return Some(if client_cert {
            "the server rejected our client certificate (expired, or signed by a CA it does not trust)"
        } else {
            "the server requires a client certificate (--cert and --key)"
        });
    }
    explain(message)
}

/// Adds what to check to a TLS failure message; the raw cause stays in the message.
pub fn explain(message: &str) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    let hints: [(&[&str], &'static str); 6] = [
        (
            &["unknownissuer", "unknown issuer"],
            "the server's certificate is not signed by a trusted CA (check --cacert)",
        ),
        (&["expired"], "a certificate has expired"),
        (
            &["notvalidforname", "not valid for name"],
            "the server's certificate does not name this host (name mismatch: use the name in its SAN, or --tls-server-name)",
        ),
        (
            &["certificaterequired", "certificate required"],
            "the server requires a client certificate (--cert and --key)",
        ),
        (
            &["invalidcontenttype", "corrupt message", "tls handshake eof"],
            "the server does not speak TLS there (use http://)",
        ),
        (
            &["frame with invalid size"],
            "the connection was cut during setup; if the server expects TLS, use https:// and --cacert",
        ),
    ];
    hints
        .iter()
        .find(|(needles, _)| needles.iter().any(|n| m.contains(n)))
        .map(|(_, hint)| *hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let s = TlsSettings {
            cacert: Some("/nonexistent/ca.crt".into()),
            ..Default::default()
        };
        let e = build(&s).unwrap_err().to_string();
        assert!(
            e.contains("CA certificate /nonexistent/ca.crt") && e.contains("No such file"),
            "{e}"
        );
        let s = TlsSettings {
            cert: Some("/x.crt".into()),
            ..Default::default()
        };
        assert_eq!(build(&s).unwrap_err(), TlsError::Incomplete("--key"));
    }

    #[test]
    fn a_file_without_pem_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, "not a certificate").unwrap();
        let s = TlsSettings {
            cacert: Some(path),
            ..Default::default()
        };
        assert!(
            build(&s)
                .unwrap_err()
                .to_string()
                .contains("no PEM certificate")
        );
    }

    #[test]
    fn handshake_failures_get_a_hint() {
        assert!(
            explain("invalid peer certificate: UnknownIssuer")
                .unwrap()
                .contains("--cacert")
        );
        assert!(
            explain("received fatal alert: CertificateRequired")
                .unwrap()
                .contains("--cert")
        );
        assert_eq!(
            explain("received fatal alert: BadCertificate"),
            None,
            "needs to know if we sent one"
        );
        assert!(
            explain("invalid peer certificate: certificate not valid for name \"x\"")
                .unwrap()
                .contains("mismatch")
        );
        assert_eq!(explain("connection refused"), None);
        assert!(
            explain_with("received fatal alert: BadCertificate", false)
                .unwrap()
                .contains("requires a client")
        );
        assert!(
            explain_with("received fatal alert: BadCertificate", true)
                .unwrap()
                .contains("rejected our client")
        );
    }
}
