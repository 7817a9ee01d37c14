//! Admission of incoming handshakes: address validation with Retry tokens, limits on the
//! handshakes in progress (in total, per source IP, per source address), and the accounting of
//! what was refused, logged as one summary line at most once per second.
//!
//! Why: anyone can send Initials. Without address validation a spoofed or mute flood makes the
//! node hold a half-open connection per Initial; without limits and a short handshake timeout a
//! flood from one real address fills every slot and locks out a peer that restarts.
//!
//! A Retry token is `version (1) | issued at (8, ms since this process's epoch) | odcid length (1)
//! | odcid | tag (16)`, the tag being HMAC-SHA256 under a random per-process key over everything
//! before it, the client's address and the Retry's source connection ID (the DCID of the Initial
//! that brings the token back). So a token is only good from the address it was sent to, for the
//! one connection ID it names, for [`TOKEN_LIFETIME`]; it never outlives the process. It opens one
//! connection: a copy that arrives after that connection ended (a late retransmission, a replay)
//! is refused.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use quiche::ConnectionId;
use rand::RngCore;

use super::driver::DriverStats;

/// Incoming handshakes in progress at once; more Initials are dropped.
pub const MAX_HANDSHAKING: usize = 256;
/// Incoming handshakes in progress from one IP address (any port). Stops one host from taking
/// every slot while it may still run a few nodes (containers, loopback clusters).
pub const MAX_HANDSHAKING_PER_IP: u32 = 64;
/// Incoming handshakes in progress from one IP address and port, that is, one UDP socket. An
/// rlinkd peer dials from its one QUIC socket and has at most one handshake per shard with us
/// at a time, so a flood from one socket is confined here without touching the peers.
pub const MAX_HANDSHAKING_PER_SOURCE: u32 = 8;
/// How long a Retry token is accepted after it was issued: the client echoes it within a round
/// trip; retransmissions of that Initial come within the handshake timeout.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3);
/// Tokens remembered as used; past this many within [`TOKEN_LIFETIME`] the oldest are forgotten
/// (a flood that large from validated addresses is stopped by the limits anyway).
const MAX_USED_TOKENS: usize = 16_384;
/// Unauthenticated handshake failures are summarised at most this often.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(1);

const TOKEN_VERSION: u8 = 1;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;

/// Why a token was not accepted (counted as `invalid_tokens`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token not issued by this process for this address and connection ID")]
    BadTag,
    #[error("token expired")]
    Expired,
    #[error("token already used")]
    Used,
}

/// Which limit refused a handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Total,
    PerIp,
    PerSource,
}

pub struct Admission {
    key: [u8; KEY_LEN],
    epoch: Instant,
    total: usize,
    per_ip: HashMap<IpAddr, u32>,
    per_source: HashMap<SocketAddr, u32>,
    /// Connection IDs whose token opened a connection, oldest first, until the token expires.
    used: HashSet<Vec<u8>>,
    used_order: VecDeque<(Instant, Vec<u8>)>,
    summary: Summary,
}

impl Admission {
    pub fn new(now: Instant) -> Admission {
        let mut key = [0u8; KEY_LEN];
        if boring::rand::rand_bytes(&mut key).is_err() {
            // BoringSSL's generator does not fail on Linux; the OS-seeded CSPRNG is as good.
            rand::thread_rng().fill_bytes(&mut key);
        }
        Admission {
            key,
            epoch: now,
            total: 0,
            per_ip: HashMap::new(),
            per_source: HashMap::new(),
            used: HashSet::new(),
            used_order: VecDeque::new(),
            summary: Summary::new(now),
        }
    }

    /// The token a Retry to `from` carries; `odcid` is the DCID of the client's first Initial,
    /// `retry_scid` the Retry's source connection ID.
    pub fn mint(
        &self,
        from: SocketAddr,
        odcid: &[u8],
        retry_scid: &[u8],
        now: Instant,
    ) -> Option<Vec<u8>> {
        let len = u8::try_from(odcid.len()).ok()?;
        let issued = u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).ok()?;
        let mut t = Vec::with_capacity(10 + odcid.len() + TAG_LEN);
        t.push(TOKEN_VERSION);
        t.extend_from_slice(&issued.to_be_bytes());
        t.push(len);
        t.extend_from_slice(odcid);
        let tag = self.tag(&t, from, retry_scid)?;
        t.extend_from_slice(&tag);
        Some(t)
    }

    /// Checks a token an Initial from `from` with destination `dcid` carries; returns the
    /// original destination connection ID it was issued for.
    pub fn validate(
        &self,
        token: &[u8],
        from: SocketAddr,
        dcid: &[u8],
        now: Instant,
    ) -> Result<ConnectionId<'static>, TokenError> {
        let (&version, rest) = token.split_first().ok_or(TokenError::Malformed)?;
        if version != TOKEN_VERSION || rest.len() < 9 + TAG_LEN {
            return Err(TokenError::Malformed);
        }
        let (issued, rest) = rest.split_at(8);
        let (&len, rest) = rest.split_first().ok_or(TokenError::Malformed)?;
        if rest.len() != usize::from(len) + TAG_LEN {
            return Err(TokenError::Malformed);
        }
        let (odcid, tag) = rest.split_at(usize::from(len));
        let body = &token[..token.len() - TAG_LEN];
        let expected = self.tag(body, from, dcid).ok_or(TokenError::Malformed)?;
        if !boring::memcmp::eq(&expected, tag) {
            return Err(TokenError::BadTag);
        }
        let mut ms = [0u8; 8];
        ms.copy_from_slice(issued);
        let issued = Duration::from_millis(u64::from_be_bytes(ms));
        let age = now
            .saturating_duration_since(self.epoch)
            .checked_sub(issued)
            .ok_or(TokenError::Expired)?;
        if age > TOKEN_LIFETIME {
            return Err(TokenError::Expired);
        }
        if self.used.contains(dcid) {
            return Err(TokenError::Used);
        }
        Ok(ConnectionId::from_vec(odcid.to_vec()))
    }

    /// Marks the token of the Initial with destination `dcid` as used: it opened a connection.
    pub fn consume(&mut self, dcid: &[u8], now: Instant) {
        while let Some((t, cid)) = self.used_order.front() {
            if now.saturating_duration_since(*t) <= TOKEN_LIFETIME
                && self.used_order.len() < MAX_USED_TOKENS
            {
                break;
            }
            self.used.remove(cid);
            self.used_order.pop_front();
        }
        if self.used.insert(dcid.to_vec()) {
            self.used_order.push_back((now, dcid.to_vec()));
        }
    }

    fn tag(&self, body: &[u8], from: SocketAddr, retry_scid: &[u8]) -> Option<[u8; TAG_LEN]> {
        let mut msg = Vec::with_capacity(body.len() + 40);
        msg.extend_from_slice(body);
        match from.ip() {
            IpAddr::V4(ip) => msg.extend_from_slice(&ip.to_ipv6_mapped().octets()),
            IpAddr::V6(ip) => msg.extend_from_slice(&ip.octets()),
        }
        msg.extend_from_slice(&from.port().to_be_bytes());
        msg.push(u8::try_from(retry_scid.len()).ok()?);
        msg.extend_from_slice(retry_scid);
        let mac = boring::hash::hmac_sha256(&self.key, &msg).ok()?;
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&mac[..TAG_LEN]);
        Some(tag)
    }

    /// Takes a handshake slot for `from`, or says which limit is reached.
    pub fn admit(&mut self, from: SocketAddr) -> Result<(), Limit> {
        let ip = self.per_ip.get(&from.ip()).copied().unwrap_or(0);
        let src = self.per_source.get(&from).copied().unwrap_or(0);
        if self.total >= MAX_HANDSHAKING {
            return Err(Limit::Total);
        }
        if ip >= MAX_HANDSHAKING_PER_IP {
            return Err(Limit::PerIp);
        }
        if src >= MAX_HANDSHAKING_PER_SOURCE {
            return Err(Limit::PerSource);
        }
        self.total += 1;
        self.per_ip.insert(from.ip(), ip + 1);
        self.per_source.insert(from, src + 1);
        Ok(())
    }

    /// Gives back the slot [`Admission::admit`] took for `from`.
    pub fn release(&mut self, from: SocketAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_ip.get_mut(&from.ip()) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&from.ip());
            }
        }
        if let Some(n) = self.per_source.get_mut(&from) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&from);
            }
        }
    }

    /// Incoming handshakes holding a slot now.
    pub fn in_progress(&self) -> usize {
        self.total
    }

    /// Remembers the latest unauthenticated failure, for the next summary line.
    pub fn note_failure(&mut self, from: SocketAddr, why: impl Into<String>) {
        self.summary.last = Some((from, why.into()));
    }

    /// When [`Admission::log_summary`] has something to say and may say it.
    pub fn summary_due(&self, stats: &DriverStats) -> Option<Instant> {
        (self.summary.failures(stats) > 0).then_some(self.summary.next)
    }

    /// Logs what was refused since the last summary, if anything and if one is due.
    pub fn log_summary(&mut self, stats: &DriverStats, now: Instant) {
        if now < self.summary.next || self.summary.failures(stats) == 0 {
            return;
        }
        let s = &self.summary;
        let d = |now: u64, then: u64| now.saturating_sub(then);
        let last = match &s.last {
            Some((addr, why)) => format!("; last from {addr}: {why}"),
            None => String::new(),
        };
        tracing::warn!(
            "incoming handshakes refused in the last {:.1}s: {} over the handshake limits, {} with an invalid Retry token, {} timed out, {} failed{last} (in progress now: {})",
            now.saturating_duration_since(s.since).as_secs_f64(),
            d(stats.handshakes_refused, s.logged.handshakes_refused),
            d(stats.invalid_tokens, s.logged.invalid_tokens),
            d(stats.handshakes_timed_out, s.logged.handshakes_timed_out),
            d(stats.handshakes_failed, s.logged.handshakes_failed),
            self.total,
        );
        self.summary = Summary {
            since: now,
            next: now + SUMMARY_INTERVAL,
            logged: *stats,
            last: None,
        };
    }
}

/// What the last summary line covered.
struct Summary {
    since: Instant,
    next: Instant,
    logged: DriverStats,
    last: Option<(SocketAddr, String)>,
}

impl Summary {
    fn new(now: Instant) -> Summary {
        Summary {
            since: now,
            next: now,
            logged: DriverStats::default(),
            last: None,
        }
    }

    fn failures(&self, s: &DriverStats) -> u64 {
        let d = |now: u64, then: u64| now.saturating_sub(then);
        d(s.handshakes_refused, self.logged.handshakes_refused)
            + d(s.invalid_tokens, self.logged.invalid_tokens)
            + d(s.handshakes_timed_out, self.logged.handshakes_timed_out)
            + d(s.handshakes_failed, self.logged.handshakes_failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_token_is_good_only_for_its_address_connection_id_and_lifetime() {
        let t0 = Instant::now();
        let a = Admission::new(t0);
        let from = addr("192.0.2.1:4433");
        let odcid = [7u8; 20];
        let scid = [9u8; 20];
        let tok = a.mint(from, &odcid, &scid, t0).unwrap();
        let got = a.validate(&tok, from, &scid, t0 + Duration::from_millis(5));
        assert_eq!(got.unwrap().as_ref(), &odcid);
        let other_port = addr("192.0.2.1:4434");
        assert_eq!(
            a.validate(&tok, other_port, &scid, t0),
            Err(TokenError::BadTag)
        );
        assert_eq!(
            a.validate(&tok, from, &[8u8; 20], t0),
            Err(TokenError::BadTag)
        );
        let late = t0 + TOKEN_LIFETIME + Duration::from_millis(1);
        assert_eq!(
            a.validate(&tok, from, &scid, late),
            Err(TokenError::Expired)
        );
        // Another process (key) does not accept it.
        let b = Admission::new(t0);
        assert_eq!(b.validate(&tok, from, &scid, t0), Err(TokenError::BadTag));
        // A flipped bit anywhere is refused; truncations never panic.
        for i in 0..tok.len() {
            let mut t = tok.clone();
            t[i] ^= 1;
            assert!(a.validate(&t, from, &scid, t0).is_err(), "bit flip at {i}");
            assert!(a.validate(&tok[..i], from, &scid, t0).is_err());
        }
        // One connection per token.
        let mut a = a;
        a.consume(&scid, t0);
        assert_eq!(a.validate(&tok, from, &scid, t0), Err(TokenError::Used));
        let tok2 = a.mint(from, &odcid, &[5u8; 20], t0).unwrap();
        assert!(a.validate(&tok2, from, &[5u8; 20], t0).is_ok());
    }

    #[test]
    fn limits_per_source_per_ip_and_in_total() {
        let mut a = Admission::new(Instant::now());
        let src = addr("192.0.2.1:1000");
        for _ in 0..MAX_HANDSHAKING_PER_SOURCE {
            a.admit(src).unwrap();
        }
        assert_eq!(a.admit(src), Err(Limit::PerSource));
        // Another socket on the same host (a real peer on loopback) still gets in.
        a.admit(addr("192.0.2.1:1001")).unwrap();
        for port in 2000..2000 + MAX_HANDSHAKING_PER_IP as u16 {
            let _ = a.admit(addr(&format!("192.0.2.1:{port}")));
        }
        assert_eq!(a.admit(addr("192.0.2.1:3999")), Err(Limit::PerIp));
        // A finished handshake gives its slot back.
        a.release(src);
        a.admit(addr("192.0.2.1:3999")).unwrap();
        let mut n = a.in_progress();
        for i in 0..=255u8 {
            for j in 0..4u16 {
                if a.admit(addr(&format!("198.51.100.{i}:{}", 100 + j)))
                    .is_ok()
                {
                    n += 1;
                }
            }
        }
        assert_eq!(n, MAX_HANDSHAKING);
        assert_eq!(a.admit(addr("203.0.113.1:1")), Err(Limit::Total));
    }
}
