//! Peer nodes: which connection carries new links to each, and when to dial again.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::quic::driver::{ConnId, Direction};

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
    /// Established connections, oldest first; new links go on the newest.
    pub conns: Vec<(ConnId, Direction)>,
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
        }
    }

    /// The connection new links to this peer use.
    pub fn active(&self) -> Option<ConnId> {
        self.conns.last().map(|(c, _)| *c)
    }

    /// Older connections of the same direction that `conn` replaces. The driver establishes a
    /// second connection of a peer only after the older one failed a liveness probe (the peer
    /// restarted; the driver has closed it) or when the older one was closing anyway.
    pub fn superseded_by(&self, conn: ConnId, direction: Direction) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(c, d)| *c != conn && *d == direction)
            .map(|(c, _)| *c)
            .collect()
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
