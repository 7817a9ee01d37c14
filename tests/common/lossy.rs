//! A seeded lossy, reordering datagram wire for in-memory tests (two QUIC drivers in
//! `quic_driver.rs`, two shard cores in `shard_core.rs`): deterministic for a seed, no sockets.

use std::net::SocketAddr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One datagram on the wire.
pub struct Datagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

pub struct LossyWire {
    rng: StdRng,
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Probability that a datagram swaps places with the one before it.
    pub reorder: f64,
    in_flight: Vec<Datagram>,
    pub delivered: u64,
    pub dropped: u64,
}

impl LossyWire {
    pub fn new(seed: u64) -> LossyWire {
        LossyWire {
            rng: StdRng::seed_from_u64(seed),
            loss: 0.0,
            reorder: 0.2,
            in_flight: Vec::new(),
            delivered: 0,
            dropped: 0,
        }
    }

    /// Puts a (GSO) batch on the wire, one datagram per `segment_size` bytes.
    pub fn send(&mut self, from: SocketAddr, to: SocketAddr, contents: &[u8], segment_size: usize) {
        for d in contents.chunks(segment_size.max(1)) {
            self.in_flight.push(Datagram {
                from,
                to,
                bytes: d.to_vec(),
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// What arrives this round: neighbours swapped at random, some dropped.
    pub fn take(&mut self) -> Vec<Datagram> {
        for i in 1..self.in_flight.len() {
            if self.rng.gen_bool(self.reorder) {
                self.in_flight.swap(i - 1, i);
            }
        }
        let mut out = std::mem::take(&mut self.in_flight);
        let before = out.len() as u64;
        let (rng, loss) = (&mut self.rng, self.loss);
        out.retain(|_| !rng.gen_bool(loss));
        self.dropped += before - out.len() as u64;
        self.delivered += out.len() as u64;
        out
    }
}
