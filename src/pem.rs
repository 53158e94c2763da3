//! Reading PEM certificates and keys, for the clients of etcd and for the sentinel's own TLS listener alike;
//! errors say what is wrong with the file, the callers say which file it was meant to be.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Every certificate in a PEM file; at least one.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = crate::files::read_small_file(path, MAX_PEM_BYTES)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = crate::files::read_small_file(path, MAX_PEM_BYTES)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| e.to_string())
}

/// A CA bundle of a few hundred certificates is well under this.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// The one crypto provider every TLS configuration is built with.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS configuration that serves the sentinel's own API, from its certificate chain and key. The message
/// names the file at fault; the caller says which setting named it.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = read_certs(cert).map_err(|e| format!("certificate {}: {e}", cert.display()))?;
    let key_der = read_key(key).map_err(|e| format!("key {}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            format!(
                "certificate {} with key {}: {e}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
