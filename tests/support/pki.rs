//! Certificates for TLS tests, made in the test: a CA, a server certificate for 127.0.0.1, client certificates
//! (a good one, an expired one, one from another CA), all written as PEM files into a directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};

pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub expired_cert: PathBuf,
    pub expired_key: PathBuf,
    pub stranger_ca: PathBuf,
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

fn ca(name: &str) -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("CA key");
    (params, key)
}

fn leaf(
    dir: &Path,
    file: &str,
    sans: &[&str],
    usage: &[ExtendedKeyUsagePurpose],
    expired: bool,
    issuer: &Issuer<'_, &KeyPair>,
) -> (PathBuf, PathBuf) {
    let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("params");
    params.distinguished_name.push(DnType::CommonName, file);
    params.extended_key_usages = usage.to_vec();
    if expired {
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("sign");
    let cert_path = dir.join(format!("{file}.crt"));
    let key_path = dir.join(format!("{file}.key"));
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    (cert_path, key_path)
}

impl Pki {
    pub fn create(dir: &Path) -> Pki {
        let (ca_params, ca_key) = ca("etcd-sentinel test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
        let ca_path = dir.join("ca.crt");
        std::fs::write(&ca_path, ca_cert.pem()).expect("write CA");
        let issuer = Issuer::from_params(&ca_params, &ca_key);

        let both = [
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let client = [ExtendedKeyUsagePurpose::ClientAuth];
        let (server_cert, server_key) = leaf(
            dir,
            "server",
            &["127.0.0.1", "localhost"],
            &both,
            false,
            &issuer,
        );
        let (client_cert, client_key) = leaf(dir, "client", &[], &client, false, &issuer);
        let (expired_cert, expired_key) = leaf(dir, "expired", &[], &client, true, &issuer);

        let (other_params, other_key) = ca("another CA");
        let other_cert = other_params
            .self_signed(&other_key)
            .expect("self-sign other CA");
        let stranger_ca = dir.join("other-ca.crt");
        std::fs::write(&stranger_ca, other_cert.pem()).expect("write other CA");
        let other_issuer = Issuer::from_params(&other_params, &other_key);
        let (stranger_cert, stranger_key) =
            leaf(dir, "stranger", &[], &client, false, &other_issuer);
        Pki {
            ca: ca_path,
            server_cert,
            server_key,
            client_cert,
            client_key,
            expired_cert,
            expired_key,
            stranger_ca,
            stranger_cert,
            stranger_key,
        }
    }
}
