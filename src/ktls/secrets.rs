//! Getting the application traffic secrets out of BoringSSL.
//!
//! The `boring` crate exposes no `SSL_get_traffic_secrets`-like call, so the secrets are taken
//! from the key-log callback (NSS key-log lines `CLIENT_TRAFFIC_SECRET_0 <client_random>
//! <secret>` and `SERVER_TRAFFIC_SECRET_0 ...`), kept per context, keyed by client random, and
//! taken out (removed) when the connection is handed to the kernel. The log lives in the
//! context's ex-data, so a connection finds it from its `SslRef` alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use boring::error::ErrorStack;
use boring::ex_data::Index;
use boring::ssl::{SslContext, SslContextBuilder, SslOptions, SslRef};

use super::schedule::from_hex;

/// Bytes of `ClientHello.random`.
const RANDOM_LEN: usize = 32;
/// Past this many pending entries, entries older than `STALE` (handshakes that never finished or
/// connections that were never offloaded) are dropped.
const SOFT_CAP: usize = 1024;
const STALE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Pending {
    client: Option<Vec<u8>>,
    server: Option<Vec<u8>>,
    born: Option<Instant>,
}

#[derive(Default)]
pub(crate) struct SecretLog {
    pending: Mutex<HashMap<[u8; RANDOM_LEN], Pending>>,
}

impl SecretLog {
    fn record(&self, line: &str) {
        let mut it = line.split_ascii_whitespace();
        let (Some(label), Some(random), Some(secret), None) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return;
        };
        let client = match label {
            "CLIENT_TRAFFIC_SECRET_0" => true,
            "SERVER_TRAFFIC_SECRET_0" => false,
            _ => return, // handshake and exporter secrets: not needed
        };
        let (Some(random), Some(secret)) = (from_hex(random), from_hex(secret)) else {
            return;
        };
        let Ok(random) = <[u8; RANDOM_LEN]>::try_from(random) else {
            return;
        };
        let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= SOFT_CAP {
            map.retain(|_, p| p.born.is_some_and(|t| t.elapsed() < STALE));
        }
        let e = map.entry(random).or_default();
        e.born.get_or_insert_with(Instant::now);
        if client {
            e.client = Some(secret);
        } else {
            e.server = Some(secret);
        }
    }

    /// Removes and returns `(client, server)` application traffic secrets for `random`, when both
    /// were logged.
    fn take(&self, random: &[u8; RANDOM_LEN]) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let p = map.remove(random)?;
        Some((p.client?, p.server?))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

fn log_index() -> Result<Index<SslContext, Arc<SecretLog>>, ErrorStack> {
    static INDEX: OnceLock<Index<SslContext, Arc<SecretLog>>> = OnceLock::new();
    if let Some(i) = INDEX.get() {
        return Ok(*i);
    }
    let i = SslContext::new_ex_index::<Arc<SecretLog>>()?;
    // A racing thread may have set another index; use whichever won (an index costs nothing).
    Ok(*INDEX.get_or_init(|| i))
}

/// Prepares a client or server context for handing connections to kTLS: records each
/// connection's application traffic secrets (through the key-log callback, which this replaces)
/// and disables session tickets.
///
/// Tickets: a BoringSSL TLS 1.3 server sends NewSessionTicket records right after the handshake,
/// under the application keys. A client switching RX to the kernel would then find a handshake
/// record first (`EIO` on a plain `read`), and the server's TX sequence number would no longer be
/// 0. The benchmark never resumes sessions, so `NO_TICKET` (which BoringSSL honours by not sending
/// tickets in TLS 1.3) is the simplest correct choice; it also spares the server the ticket work.
pub fn prepare_context(b: &mut SslContextBuilder) -> Result<(), ErrorStack> {
    let log = Arc::new(SecretLog::default());
    b.set_ex_data(log_index()?, Arc::clone(&log));
    b.set_keylog_callback(move |_, line| log.record(line));
    b.set_options(SslOptions::NO_TICKET);
    Ok(())
}

/// What [`take`] could not find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// The context was not set up with [`prepare_context`].
    NoLog,
    /// No (or only one) secret was logged for this connection, or it was already taken.
    NoSecrets,
}

/// Removes and returns `(client, server)` application traffic secrets of a finished connection.
pub(crate) fn take(ssl: &SslRef) -> Result<(Vec<u8>, Vec<u8>), Missing> {
    let index = log_index().map_err(|_| Missing::NoLog)?;
    let log = ssl.ssl_context().ex_data(index).ok_or(Missing::NoLog)?;
    let mut random = [0u8; RANDOM_LEN];
    if ssl.client_random(&mut random) != RANDOM_LEN {
        return Err(Missing::NoSecrets);
    }
    log.take(&random).ok_or(Missing::NoSecrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: &str = "cb34ecb1e78163ba1c38c6dacb196a6dffa21a8d9912ec18a2ef6283024dece7";

    #[test]
    fn keeps_only_application_secrets_and_pairs_them() {
        let log = SecretLog::default();
        log.record(&format!(
            "CLIENT_HANDSHAKE_TRAFFIC_SECRET {R} {}",
            "11".repeat(32)
        ));
        assert_eq!(log.len(), 0);
        log.record(&format!("CLIENT_TRAFFIC_SECRET_0 {R} {}", "aa".repeat(32)));
        let random: [u8; 32] = from_hex(R).unwrap().try_into().unwrap();
        // Only one half: nothing to hand out, and the entry is consumed.
        assert!(log.take(&random).is_none());
        log.record(&format!("CLIENT_TRAFFIC_SECRET_0 {R} {}", "aa".repeat(32)));
        log.record(&format!("SERVER_TRAFFIC_SECRET_0 {R} {}", "bb".repeat(48)));
        let (c, s) = log.take(&random).unwrap();
        assert_eq!(c, vec![0xaa; 32]);
        assert_eq!(s, vec![0xbb; 48]);
        assert!(log.take(&random).is_none(), "taken once");
    }

    #[test]
    fn ignores_malformed_lines() {
        let log = SecretLog::default();
        for line in [
            "",
            "CLIENT_TRAFFIC_SECRET_0",
            "CLIENT_TRAFFIC_SECRET_0 zz aa",
            "CLIENT_TRAFFIC_SECRET_0 abcd aa",
            &format!("CLIENT_TRAFFIC_SECRET_0 {R} aa extra"),
            &format!("CLIENT_TRAFFIC_SECRET_0 {R} a"),
        ] {
            log.record(line);
        }
        assert_eq!(log.len(), 0);
    }
}
