//! Certificates for mutual TLS between nodes (`rlinkd cert`).
//!
//! One private CA per cluster signs one certificate per node. Each side of a QUIC connection
//! checks the other: the server requires a client certificate that chains to `ca.pem`, and the
//! client checks that the server's certificate carries the peer's name as a SAN DNS name.
//! So a node certificate's SAN is exactly the node name, and its EKU allows both roles.
//!
//! Files written to `dir`: `ca.pem`, `ca.key` (only when no CA is there yet) and, per node,
//! `NODE.pem`, `NODE.key`. Keys are ECDSA P-256 in PKCS#8 PEM, mode 0600.

pub mod check;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::config::validate_name;

/// The CA certificate's subject common name.
pub const CA_COMMON_NAME: &str = "rlinkd CA";
/// How long issued certificates are valid, counted from one day before issue (clock skew).
const VALIDITY_DAYS: i64 = 10 * 365;

/// Why certificates could not be generated. Nothing is overwritten in any case.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("invalid node name: {0}")]
    BadName(String),
    #[error("node {0:?} is named twice")]
    DuplicateName(String),
    #[error("{}: already exists; refusing to overwrite it (delete it to issue a new one)", path.display())]
    Exists { path: PathBuf },
    #[error("{} exists but {} does not; a CA needs both files", present.display(), missing.display())]
    IncompleteCa { present: PathBuf, missing: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot load the existing CA: {source}", path.display())]
    BadCa { path: PathBuf, source: rcgen::Error },
    #[error("generating the certificate for {subject}: {source}")]
    Generate {
        subject: String,
        source: rcgen::Error,
    },
}

/// A CA that can sign node certificates: its parameters (for the issuer name and key
/// identifier) and its key.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// Writes node certificates for `nodes` into `dir` (created if missing), issuing a new CA
/// first unless `dir` already holds `ca.pem` and `ca.key`, in which case that CA signs them, so
/// nodes can be added to a running cluster. Refuses, before writing anything, if any node's
/// `.pem` or `.key` file already exists. Returns the paths written, CA files first.
pub fn generate(dir: &Path, nodes: &[String]) -> Result<Vec<PathBuf>, CertError> {
    let mut seen = std::collections::HashSet::new();
    for name in nodes {
        validate_name(name).map_err(CertError::BadName)?;
        if name == "ca" {
            return Err(CertError::BadName(
                "\"ca\" is reserved for the CA's own files".into(),
            ));
        }
        if !seen.insert(name) {
            return Err(CertError::DuplicateName(name.clone()));
        }
    }
    for name in nodes {
        for path in [
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        ] {
            if path.exists() {
                return Err(CertError::Exists { path });
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_path_buf(),
        source,
    })?;

    let mut written = Vec::new();
    let (ca_pem, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let ca = match (ca_pem.exists(), ca_key.exists()) {
        (true, true) => load_ca(&ca_pem, &ca_key)?,
        (false, false) => {
            let ca = new_ca()?;
            write_file(&ca_key, ca.key.serialize_pem().as_bytes(), 0o600)?;
            written.push(ca_key);
            write_file(&ca_pem, ca.cert.pem().as_bytes(), 0o644)?;
            written.push(ca_pem);
            ca
        }
        (true, false) => {
            return Err(CertError::IncompleteCa {
                present: ca_pem,
                missing: ca_key,
            })
        }
        (false, true) => {
            return Err(CertError::IncompleteCa {
                present: ca_key,
                missing: ca_pem,
            })
        }
    };

    for name in nodes {
        let (pem, key) = issue(&ca, name)?;
        let key_path = dir.join(format!("{name}.key"));
        write_file(&key_path, key.as_bytes(), 0o600)?;
        written.push(key_path);
        let pem_path = dir.join(format!("{name}.pem"));
        write_file(&pem_path, pem.as_bytes(), 0o644)?;
        written.push(pem_path);
    }
    Ok(written)
}

fn validity(params: &mut CertificateParams) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(VALIDITY_DAYS);
}

fn new_ca() -> Result<Ca, CertError> {
    let gen = |source| CertError::Generate {
        subject: CA_COMMON_NAME.into(),
        source,
    };
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    // Path length 0: this CA signs node certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params);
    let cert = params.self_signed(&key).map_err(gen)?;
    Ok(Ca { cert, key })
}

/// Loads an existing CA. Re-signing its parameters with its key gives rcgen an issuer with the
/// same subject name and key identifier as the certificate on disk, which is all that signing
/// needs; the re-signed copy itself is never written.
fn load_ca(pem_path: &Path, key_path: &Path) -> Result<Ca, CertError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| CertError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let key = KeyPair::from_pem(&read(key_path)?).map_err(|source| CertError::BadCa {
        path: key_path.to_path_buf(),
        source,
    })?;
    let bad_cert = |source| CertError::BadCa {
        path: pem_path.to_path_buf(),
        source,
    };
    let params = CertificateParams::from_ca_cert_pem(&read(pem_path)?).map_err(bad_cert)?;
    let cert = params.self_signed(&key).map_err(bad_cert)?;
    Ok(Ca { cert, key })
}

/// Issues a certificate for node `name`; returns (certificate PEM, key PEM).
fn issue(ca: &Ca, name: &str) -> Result<(String, String), CertError> {
    let gen = |source| CertError::Generate {
        subject: name.into(),
        source,
    };
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    // Built by hand, not with CertificateParams::new, which would turn a name like "10.0.0.1"
    // into an IP SAN; peers verify the DNS name.
    params.subject_alt_names = vec![SanType::DnsName(name.try_into().map_err(gen)?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params);
    let cert = params.signed_by(&key, &ca.cert, &ca.key).map_err(gen)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Creates `path` (never replacing an existing file) with `mode`, and writes `data`.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => CertError::Exists {
                path: path.to_path_buf(),
            },
            _ => io(e),
        })?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(io)
}

#[cfg(test)]
mod tests;
