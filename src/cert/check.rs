//! What `rlinkd check` and `rlinkd run` verify about a node's certificate, key and CA before
//! the node starts: everything a peer would refuse it for, found on this host with the file
//! named instead of as a handshake failure on the other node.
//!
//! In order: the certificate parses and is valid now (not expired, not yet valid); it names
//! this node; the key file is private to its owner, parses and is the certificate's key; the CA
//! parses and signed the certificate. Each failure names `quic.cert`, `quic.key` or `quic.ca`.
//! A certificate that expires within [`EXPIRY_WARNING_DAYS`] is a warning, not an error.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use boring::asn1::{Asn1Time, Asn1TimeRef};
use boring::stack::Stack;
use boring::x509::store::X509StoreBuilder;
use boring::x509::{X509NameRef, X509StoreContext, X509};

use crate::config::QuicSettings;

/// A certificate that expires within this many days is reported as a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// A check failed; `key` is the config key of the file at fault.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct CheckError {
    pub key: &'static str,
    pub message: String,
}

fn fail(key: &'static str, message: impl Into<String>) -> CheckError {
    CheckError {
        key,
        message: message.into(),
    }
}

/// What the node's certificate says, for `check` to print and `run` to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateReport {
    /// Subject and issuer as `CN=a`, attributes comma-separated.
    pub subject: String,
    pub issuer: String,
    /// The validity period as the certificate states it (`Jan  1 00:00:00 2036 GMT`).
    pub not_before: String,
    pub not_after: String,
    /// Whole days until `not_after` (0 on the last day).
    pub days_left: i64,
    /// Things that do not stop the node but need the operator (an expiry within 30 days).
    pub warnings: Vec<String>,
}

/// Checks the certificate, key and CA files of `quic` for node `node`. The files are known to
/// be readable regular files (`NodeConfig::check_files` checks that first).
pub fn check(node: &str, quic: &QuicSettings) -> Result<CertificateReport, CheckError> {
    let cert_path = &quic.cert;
    let at = |p: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", p.display());

    let cert = read(cert_path)
        .and_then(|b| X509::from_pem(&b).map_err(|e| format!("not a PEM certificate: {e}")))
        .map_err(|e| fail("quic.cert", at(cert_path, &e)))?;
    let (days_left, report_times) =
        validity(&cert).map_err(|e| fail("quic.cert", at(cert_path, &e)))?;

    let names = crate::quic::tls::certificate_file_names(cert_path)
        .map_err(|e| fail("quic.cert", at(cert_path, &e)))?;
    if !names.iter().any(|n| n == node) {
        return Err(fail(
            "quic.cert",
            format!(
                "{} names {names:?}, not this node {node:?} (`node`); use the certificate \
                 `rlinkd cert` wrote for {node:?}",
                cert_path.display()
            ),
        ));
    }

    check_key(&quic.key, cert_path)?;
    check_chain(&cert, cert_path, &quic.ca)?;

    let mut warnings = Vec::new();
    if days_left < EXPIRY_WARNING_DAYS {
        warnings.push(format!(
            "quic.cert: {} expires in {days_left} days ({}); issue a new one and reload",
            cert_path.display(),
            report_times.1
        ));
    }
    Ok(CertificateReport {
        subject: name_text(cert.subject_name()),
        issuer: name_text(cert.issuer_name()),
        not_before: report_times.0,
        not_after: report_times.1,
        days_left,
        warnings,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| e.to_string())
}

/// Days left until `not_after`, and (not_before, not_after) as text; an error when the
/// certificate is not valid now, as a peer would find it.
fn validity(cert: &X509) -> Result<(i64, (String, String)), String> {
    let now = Asn1Time::days_from_now(0).map_err(|e| e.to_string())?;
    let (nb, na) = (cert.not_before(), cert.not_after());
    let text = (nb.to_string(), na.to_string());
    let secs_from_now = |t: &Asn1TimeRef| -> Result<i64, String> {
        let d = now.diff(t).map_err(|e| e.to_string())?;
        Ok(i64::from(d.days) * 86_400 + i64::from(d.secs))
    };
    if secs_from_now(nb)? > 0 {
        return Err(format!(
            "not valid yet: valid from {} (is this host's clock right?)",
            text.0
        ));
    }
    let left = secs_from_now(na)?;
    if left <= 0 {
        return Err(format!(
            "expired on {}; peers refuse it: issue a new certificate",
            text.1
        ));
    }
    Ok((left / 86_400, text))
}

/// The key must be the certificate's key, and private to its owner.
fn check_key(key: &Path, cert: &Path) -> Result<(), CheckError> {
    match crate::quic::tls::key_matches_certificate(key, cert) {
        Ok(true) => {}
        Ok(false) => {
            return Err(fail(
                "quic.key",
                format!("{} is not the key of {}", key.display(), cert.display()),
            ))
        }
        Err(e) => return Err(fail("quic.key", format!("{}: {e}", key.display()))),
    }
    let mode = std::fs::metadata(key)
        .map_err(|e| fail("quic.key", format!("{}: {e}", key.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        let who = if mode & 0o007 != 0 {
            "others"
        } else {
            "its group"
        };
        return Err(fail(
            "quic.key",
            format!(
                "{} is open to {who} (mode {:04o}): a private key must be readable by its \
                 owner only; chmod 600 it",
                key.display(),
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// The CA file must hold certificates, and one of them must have signed the node's certificate:
/// peers check this node's certificate against the same CA.
fn check_chain(cert: &X509, cert_path: &Path, ca: &Path) -> Result<(), CheckError> {
    let cas = read(ca)
        .and_then(|b| X509::stack_from_pem(&b).map_err(|e| e.to_string()))
        .map_err(|e| fail("quic.ca", format!("{}: {e}", ca.display())))?;
    if cas.is_empty() {
        return Err(fail(
            "quic.ca",
            format!("{}: no PEM certificate in it", ca.display()),
        ));
    }
    let boring_err = |e: boring::error::ErrorStack| fail("quic.ca", e.to_string());
    let mut store = X509StoreBuilder::new().map_err(boring_err)?;
    for c in cas {
        store.add_cert(c).map_err(boring_err)?;
    }
    let store = store.build();
    let chain = Stack::new().map_err(boring_err)?;
    let mut ctx = X509StoreContext::new().map_err(boring_err)?;
    let result = ctx
        .init(&store, cert, &chain, |c| {
            c.verify_cert()?;
            Ok((c.verify_result(), c.error_depth()))
        })
        .map_err(boring_err)?;
    match result {
        (Ok(()), _) => Ok(()),
        // The certificate's own dates were checked first; at depth 1 it is the CA's.
        (Err(r), depth) if depth > 0 => Err(fail(
            "quic.ca",
            format!(
                "{}: the CA certificate fails: {}",
                ca.display(),
                r.error_string()
            ),
        )),
        (Err(r), _) => Err(fail(
            "quic.ca",
            format!(
                "{} did not issue {} ({}); peers using this CA would refuse this node",
                ca.display(),
                cert_path.display(),
                r.error_string()
            ),
        )),
    }
}

/// `CN=a, O=b`: short attribute names, in the certificate's order.
fn name_text(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e
                .data()
                .as_utf8()
                .map(|s| s.to_string())
                .unwrap_or_else(|_| "?".into());
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}
