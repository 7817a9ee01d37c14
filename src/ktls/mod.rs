//! Kernel TLS (kTLS) for TLS 1.3 over TCP: BoringSSL does the handshake in user space, then the
//! record layer moves into the kernel and the socket carries application data with plain
//! `read`/`write` (and `sendfile`/splice, where the kernel can).
//!
//! ```text
//!  prepare_context(ctx)        key-log capture + no session tickets, once per SslContext
//!  handshake in BoringSSL      non-blocking, as usual
//!  KtlsKeys::from_ssl(ssl)     application traffic secrets -> key/iv per direction, seq 0
//!  install(fd, &keys)          TCP_ULP "tls", then TLS_TX and TLS_RX
//!  read/write the TcpStream    the SslStream is dropped (into_inner), never used again
//! ```
//!
//! Constraints, all met by the `tls` benchmark transport:
//! - TLS 1.3 only; AES-128-GCM, AES-256-GCM or ChaCha20-Poly1305.
//! - Install right after the handshake, before user-space TLS sends or reads any application
//!   record: the sequence numbers are then 0 in both directions. `from_ssl` refuses a connection
//!   holding decrypted, unread bytes; BoringSSL reads records exactly (no read-ahead on TLS), so
//!   whatever the peer sent after its Finished is still in the socket for the kernel.
//! - No post-handshake messages: [`prepare_context`] disables session tickets (the BoringSSL
//!   server would otherwise send NewSessionTicket records the client's kernel RX would have to
//!   skip), and nothing here sends KeyUpdate. A KeyUpdate or alert from the peer reaches a plain
//!   `read` as `EIO` (it is delivered to `recvmsg` with a `TLS_GET_RECORD_TYPE` cmsg).
//!
//! Where the kernel has no TLS module (`CONFIG_TLS` unset, as on the project's machine),
//! [`ktls_available`] says so once and callers stay in user space. What can be tested without
//! the kernel is tested here: the key schedule against RFC 8448, and the keys taken from a live
//! BoringSSL connection by building and opening TLS records with them in user space.

mod install;
mod schedule;
mod secrets;

#[cfg(test)]
mod tests;

use std::io;
use std::sync::OnceLock;

use boring::ssl::{SslRef, SslStream, SslVersion};

pub use install::install;
pub use schedule::{hkdf_expand_label, traffic_keys, ScheduleError, Suite, TrafficKeys, IV_LEN};
pub use secrets::prepare_context;

/// Why kTLS is not used on this host; printed in benchmark rows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct KtlsUnavailable {
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KtlsError {
    /// `TCP_ULP` gave `ENOENT`: no `tls` module.
    #[error("kernel without TLS (CONFIG_TLS unset or the tls module not loadable)")]
    NotInKernel,
    #[error("setsockopt(TCP_ULP, \"tls\"): {0}")]
    Ulp(io::Error),
    #[error("setsockopt(SOL_TLS, TLS_TX): {0}")]
    Tx(io::Error),
    /// TX is already in the kernel: the connection can't go back to user-space TLS.
    #[error("setsockopt(SOL_TLS, TLS_RX) after TLS_TX was installed: {0}")]
    RxAfterTx(io::Error),
    #[error("not a TLS 1.3 connection")]
    NotTls13,
    #[error("handshake not finished")]
    HandshakeNotFinished,
    #[error("cipher suite {0:#06x} has no kTLS mapping")]
    UnsupportedCipher(u16),
    #[error("the context was not set up with ktls::prepare_context")]
    NotPrepared,
    #[error("no application traffic secrets logged for this connection (or already taken)")]
    NoSecrets,
    #[error("user-space TLS holds {0} decrypted bytes not yet read; install before any data")]
    BufferedPlaintext(usize),
    #[error("key schedule: {0}")]
    Schedule(#[from] ScheduleError),
    #[error("kTLS probe: {0}")]
    Probe(io::Error),
}

impl KtlsError {
    /// True when the socket is untouched or only has the ULP attached without keys, so the
    /// connection can carry on with user-space TLS.
    pub fn is_recoverable(&self) -> bool {
        !matches!(self, KtlsError::RxAfterTx(_) | KtlsError::Probe(_))
    }
}

/// Record keys for both directions of one connection, from this endpoint's point of view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KtlsKeys {
    pub tx: TrafficKeys,
    pub rx: TrafficKeys,
}

impl KtlsKeys {
    /// The keys of a connection whose handshake has just finished, on a context set up with
    /// [`prepare_context`]. Takes the logged secrets out of the context (a second call fails
    /// with [`KtlsError::NoSecrets`]). Sequence numbers are 0: see the module doc.
    pub fn from_ssl(ssl: &SslRef) -> Result<KtlsKeys, KtlsError> {
        if !ssl.is_init_finished() {
            return Err(KtlsError::HandshakeNotFinished);
        }
        if ssl.version2() != Some(SslVersion::TLS1_3) {
            return Err(KtlsError::NotTls13);
        }
        let id = ssl
            .current_cipher()
            .map(|c| c.protocol_id())
            .ok_or(KtlsError::HandshakeNotFinished)?;
        let suite = Suite::from_protocol_id(id).ok_or(KtlsError::UnsupportedCipher(id))?;
        let pending = ssl.pending();
        if pending != 0 {
            return Err(KtlsError::BufferedPlaintext(pending));
        }
        let (client, server) = secrets::take(ssl).map_err(|m| match m {
            secrets::Missing::NoLog => KtlsError::NotPrepared,
            secrets::Missing::NoSecrets => KtlsError::NoSecrets,
        })?;
        let (tx, rx) = if ssl.is_server() {
            (server, client)
        } else {
            (client, server)
        };
        Ok(KtlsKeys {
            tx: traffic_keys(suite, &tx, 0)?,
            rx: traffic_keys(suite, &rx, 0)?,
        })
    }

    pub fn from_stream<S>(s: &SslStream<S>) -> Result<KtlsKeys, KtlsError> {
        KtlsKeys::from_ssl(s.ssl())
    }
}

/// Whether kTLS works on this host: the first call installs fixed keys on a loopback TCP pair
/// and sends a record each way; the answer is cached for the life of the process.
pub fn ktls_available() -> Result<(), KtlsUnavailable> {
    static VERDICT: OnceLock<Result<(), KtlsUnavailable>> = OnceLock::new();
    VERDICT
        .get_or_init(|| {
            install::probe().map_err(|e| KtlsUnavailable {
                reason: e.to_string(),
            })
        })
        .clone()
}

/// One line for benchmark output: `ktls: active` or `ktls: unavailable (<reason>)`.
pub fn status() -> String {
    match ktls_available() {
        Ok(()) => "ktls: active".to_string(),
        Err(e) => format!("ktls: unavailable ({e})"),
    }
}
