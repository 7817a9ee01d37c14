//! Peer nodes: which connection carries new links to each, when to dial again, and what a
//! connection's arrival or end means for the links.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;

use super::{LocalIo, ShardCore};
use crate::quic::driver::{ConnId, Direction, DriverEvent};

/// A dialed connection that lasted this long counts as a success: the redial backoff restarts
/// from its minimum. (One refused by the peer's certificate check closes within a round trip.)
pub const STABLE_CONNECTION: Duration = Duration::from_secs(2);

/// Capped exponential backoff with ±20 % jitter, so nodes restarted together do not redial in
/// lockstep.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The delay before the next attempt; doubles each call up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        base.mul_f64(jitter)
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

pub struct Peer {
    pub name: String,
    pub connect: Option<SocketAddr>,
    /// Established connections (with the peer's shard and process instance at their other
    /// end), oldest first; new links go on the newest.
    pub conns: Vec<(ConnId, Direction, (u8, u64))>,
    /// Our dial in progress.
    pub dialing: Option<ConnId>,
    /// Our dialed connection that completed its handshake, and since when.
    pub dial_established: Option<(ConnId, Instant)>,
    pub redial_at: Option<Instant>,
    pub backoff: Backoff,
    /// Links (tokens) whose client handshake is in and that wait for a connection.
    pub waiting: VecDeque<usize>,
    /// Consecutive failed dials (for log levels).
    pub failures: u32,
    /// Connections on which the peer announced its drain (`quic::control`): no new links go on
    /// them.
    pub draining: Vec<ConnId>,
    /// The peer announced its drain and no connection has been established since: a link
    /// that finds no usable connection is closed at once instead of waiting for one.
    pub stopping: bool,
}

impl Peer {
    pub fn new(name: String, connect: Option<SocketAddr>, backoff: Backoff) -> Peer {
        Peer {
            name,
            connect,
            conns: Vec::new(),
            dialing: None,
            dial_established: None,
            redial_at: None,
            backoff,
            waiting: VecDeque::new(),
            failures: 0,
            draining: Vec::new(),
            stopping: false,
        }
    }

    /// The connection new links to this peer use: the newest one on which the peer has not
    /// announced its drain.
    pub fn active(&self) -> Option<ConnId> {
        self.conns
            .iter()
            .rev()
            .map(|(c, _, _)| *c)
            .find(|c| !self.draining.contains(c))
    }

    /// Older connections of the same direction that `conn` (from the peer's shard and process
    /// `from`) replaces: the same shard of the peer, or another process of it. The driver
    /// establishes such a connection only after the older ones failed a liveness probe (the peer
    /// restarted; the driver has closed them) or when they were closing anyway.
    pub fn superseded_by(
        &self,
        conn: ConnId,
        direction: Direction,
        from: (u8, u64),
    ) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(c, d, (shard, instance))| {
                *c != conn && *d == direction && (*shard == from.0 || *instance != from.1)
            })
            .map(|(c, _, _)| *c)
            .collect()
    }
}

impl<L: LocalIo> ShardCore<L> {
    pub(super) fn dial(&mut self, i: usize, now: Instant) {
        let p = &mut self.peers[i];
        let Some(addr) = p.connect else { return };
        p.redial_at = None;
        match self.driver.connect(&p.name, addr, now) {
            Ok(cid) => p.dialing = Some(cid),
            Err(e) => {
                let delay = p.backoff.next_delay();
                tracing::warn!(peer = %p.name, %addr, error = %e, "cannot dial; retrying in {delay:.1?}");
                p.redial_at = Some(now + delay);
            }
        }
    }

    pub(super) fn handle_driver_events(&mut self, now: Instant) {
        while let Some(ev) = self.driver.poll_event() {
            match ev {
                DriverEvent::Established {
                    conn,
                    peer,
                    direction,
                } => {
                    let Some(&i) = self.peer_index.get(&peer) else {
                        continue;
                    };
                    let (addr, remote_shard, remote_instance, cert) = self
                        .driver
                        .conn(conn)
                        .map(|c| {
                            let cert = c.peer_cert_fingerprint().unwrap_or_default();
                            (
                                c.peer_addr.to_string(),
                                c.remote_shard(),
                                c.remote_instance(),
                                cert,
                            )
                        })
                        .unwrap_or_default();
                    let shard = self.driver.shard();
                    tracing::info!(peer = %peer, ?direction, %addr, shard, remote_shard, %cert, "peer connected");
                    if self.stopping.is_some() {
                        // Established during our drain (a dial under way when it began).
                        self.send_drain_notice(conn);
                    }
                    let p = &mut self.peers[i];
                    // A new connection: whatever the peer announced was about the old ones.
                    p.stopping = false;
                    if direction == Direction::Outgoing {
                        // Not a success yet: in TLS 1.3 the acceptor checks our certificate after
                        // our side of the handshake is done. The backoff restarts once the
                        // connection has lasted (see on_conn_closed).
                        p.dialing = None;
                        p.dial_established = Some((conn, now));
                    }
                    // The driver has closed them (they failed its liveness probe) or they were
                    // closing already; their links end with their Closed events.
                    let from = (remote_shard, remote_instance);
                    let old = p.superseded_by(conn, direction, from);
                    p.conns.retain(|(c, _, _)| !old.contains(c));
                    p.conns.push((conn, direction, from));
                    self.open_waiting(i);
                }
                DriverEvent::Closed {
                    conn,
                    peer,
                    direction,
                    addr,
                    reason,
                    was_established,
                } => {
                    self.on_conn_closed(conn, peer, direction, addr, &reason, was_established, now);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_conn_closed(
        &mut self,
        conn: ConnId,
        peer: Option<String>,
        direction: Direction,
        addr: SocketAddr,
        reason: &str,
        was_established: bool,
        now: Instant,
    ) {
        let carried: Vec<usize> = self
            .links
            .iter()
            .filter(|(_, l)| l.stream.is_some_and(|(c, _)| c == conn))
            .map(|(k, _)| k)
            .collect();
        let n = carried.len();
        for key in carried {
            self.close_link_quietly(key);
        }
        self.preambles.retain(|(c, _), _| *c != conn);
        self.finished_streams.retain(|(c, _)| *c != conn);
        self.pending_routes.retain(|(c, _), _| *c != conn);
        let i = peer.as_ref().and_then(|p| self.peer_index.get(p)).copied();
        let stopping = self.stopping.is_some();
        // No peer: an incoming handshake that failed. Anyone can cause these, so the driver counts
        // them and logs a summary at most once per second instead of a line each.
        let Some(i) = i else {
            return;
        };
        let p = &mut self.peers[i];
        p.conns.retain(|(c, _, _)| *c != conn);
        p.draining.retain(|c| *c != conn);
        let ours = direction == Direction::Outgoing;
        if ours && p.dialing == Some(conn) {
            p.dialing = None;
        }
        if was_established {
            tracing::warn!(peer = %p.name, %addr, links_closed = n, %reason, "peer connection lost");
        }
        if let Some((_, since)) = p.dial_established.filter(|(c, _)| ours && *c == conn) {
            p.dial_established = None;
            if now.duration_since(since) >= STABLE_CONNECTION {
                p.backoff.reset();
                p.failures = 0;
            }
        }
        if ours
            && !stopping
            && p.dialing.is_none()
            && !p.conns.iter().any(|(_, d, _)| *d == Direction::Outgoing)
        {
            p.failures += 1;
            let delay = p.backoff.next_delay();
            if !was_established {
                if p.failures <= 3 || p.failures.is_multiple_of(10) {
                    tracing::warn!(peer = %p.name, %addr, attempt = p.failures, "cannot reach peer: {reason}; retrying in {delay:.1?}");
                } else {
                    tracing::debug!(peer = %p.name, %addr, "cannot reach peer: {reason}; retrying in {delay:.1?}");
                }
            }
            p.redial_at = Some(now + delay);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        let bases = [100u64, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (d, base) in delays.iter().zip(bases) {
            let ms = d.as_millis() as u64;
            assert!(
                ms >= base * 8 / 10 && ms <= base * 12 / 10,
                "{ms} vs {base}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }
}
