//! Mutual TLS 1.3 for node-to-node QUIC, and the quiche transport settings built from the node's
//! configuration.
//!
//! Both sides present a certificate from the cluster CA (`rlinkd cert`). The dialing side checks
//! that the acceptor's certificate names the peer it dialed (SNI + hostname verification in
//! BoringSSL); the accepting side requires a client certificate from the CA and then checks that it
//! names a configured peer ([`certificate_names`]).

use std::path::{Path, PathBuf};

use boring::ssl::{SslContextBuilder, SslFiletype, SslMethod, SslVerifyMode, SslVersion};
use boring::x509::{X509Ref, X509};

use crate::config::QuicSettings;

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: boring::error::ErrorStack,
    },
    #[error("TLS context: {0}")]
    Context(boring::error::ErrorStack),
    #[error("QUIC configuration: {0}")]
    Quic(quiche::Error),
}

fn file_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(boring::error::ErrorStack) -> TlsSetupError + 'a {
    move |source| TlsSetupError::File {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Flow-control window of the peer's control stream: its notices are a few bytes.
const CONTROL_STREAM_WINDOW: u64 = 1024;

/// Builds the quiche configuration used for both dialing and accepting.
pub fn quiche_config(q: &QuicSettings) -> Result<quiche::Config, TlsSetupError> {
    let mut ctx = SslContextBuilder::new(SslMethod::tls()).map_err(TlsSetupError::Context)?;
    ctx.set_min_proto_version(Some(SslVersion::TLS1_3))
        .map_err(TlsSetupError::Context)?;
    ctx.set_certificate_chain_file(&q.cert)
        .map_err(file_err("certificate", &q.cert))?;
    ctx.set_private_key_file(&q.key, SslFiletype::PEM)
        .map_err(file_err("private key", &q.key))?;
    ctx.check_private_key()
        .map_err(file_err("private key does not match certificate", &q.key))?;
    ctx.set_ca_file(&q.ca).map_err(file_err("CA file", &q.ca))?;
    ctx.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);

    let mut c = quiche::Config::with_boring_ssl_ctx_builder(quiche::PROTOCOL_VERSION, ctx)
        .map_err(TlsSetupError::Quic)?;
    c.set_application_protos(&[super::ALPN])
        .map_err(TlsSetupError::Quic)?;
    c.set_max_idle_timeout(q.idle_timeout.as_millis() as u64);
    c.set_max_recv_udp_payload_size(65_527);
    c.set_max_send_udp_payload_size(q.max_udp_payload);
    c.set_initial_max_data(q.initial_connection_window);
    c.set_max_connection_window(q.max_connection_window);
    c.set_initial_max_stream_data_bidi_local(q.initial_stream_window);
    c.set_initial_max_stream_data_bidi_remote(q.initial_stream_window);
    c.set_max_stream_window(q.max_stream_window);
    c.set_initial_max_streams_bidi(q.max_streams);
    // One unidirectional stream: the peer's control stream (`quic::control`), a few bytes.
    // Builds that allowed none never receive it.
    c.set_initial_max_streams_uni(1);
    c.set_initial_max_stream_data_uni(CONTROL_STREAM_WINDOW);
    c.set_disable_active_migration(true);
    c.set_cc_algorithm_name(q.congestion_control.name())
        .map_err(TlsSetupError::Quic)?;
    // A data-center path: start with a larger window than the Internet default of 10 packets.
    c.set_initial_congestion_window_packets(32);
    // Pacing timestamps are not used by the send path (no SO_TXTIME); keep quiche's pacer off.
    c.enable_pacing(false);
    Ok(c)
}

/// The names a peer certificate (DER) gives: its DNS subject alternative names, else its
/// subject common name.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    match X509::from_der(der) {
        Ok(cert) => x509_names(&cert),
        Err(_) => Vec::new(),
    }
}

/// Why a PEM file could not be read as a certificate or a key.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a PEM {what}: {source}")]
    Parse {
        what: &'static str,
        source: boring::error::ErrorStack,
    },
}

/// The names of the (first) certificate in a PEM file, by the rule of [`certificate_names`]:
/// what peers will see this node called.
pub fn certificate_file_names(path: &Path) -> Result<Vec<String>, PemError> {
    let cert = read_certificate(path)?;
    Ok(x509_names(&cert))
}

/// Whether the private key in `key` (PEM) belongs to the certificate in `cert` (PEM).
pub fn key_matches_certificate(key: &Path, cert: &Path) -> Result<bool, PemError> {
    let pkey =
        boring::pkey::PKey::private_key_from_pem(&std::fs::read(key)?).map_err(|source| {
            PemError::Parse {
                what: "private key",
                source,
            }
        })?;
    let public = read_certificate(cert)?
        .public_key()
        .map_err(|source| PemError::Parse {
            what: "certificate public key",
            source,
        })?;
    Ok(public.public_eq(&pkey))
}

fn read_certificate(path: &Path) -> Result<X509, PemError> {
    X509::from_pem(&std::fs::read(path)?).map_err(|source| PemError::Parse {
        what: "certificate",
        source,
    })
}

fn x509_names(cert: &X509Ref) -> Vec<String> {
    let mut names: Vec<String> = cert
        .subject_alt_names()
        .map(|sans| {
            sans.iter()
                .filter_map(|n| n.dnsname().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names = cert
            .subject_name()
            .entries_by_nid(boring::nid::Nid::COMMONNAME)
            .filter_map(|e| e.data().as_utf8().ok().map(|s| s.to_string()))
            .collect();
    }
    names
}

/// The fingerprint (first 8 bytes of the SHA-256, hex) of the certificate in a PEM file, as the
/// logs show a peer's ("peer connected ... cert=").
pub fn certificate_file_fingerprint(path: &Path) -> Result<String, PemError> {
    let der = read_certificate(path)?
        .to_der()
        .map_err(|source| PemError::Parse {
            what: "certificate",
            source,
        })?;
    super::driver::fingerprint(&der)
        .ok_or_else(|| PemError::Io(std::io::Error::other("cannot compute a SHA-256 digest")))
}
