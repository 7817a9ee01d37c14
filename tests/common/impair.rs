//! A user-space UDP impairment relay for loopback tests (this kernel has no netem): one UDP
//! socket on 127.0.0.1 between a dialing node and its peer. The dialer's peer address points at
//! the relay; the relay forwards what the dialer sends to the peer, and what the peer sends back
//! to the last address the dialer sent from, applying loss, burst loss, reordering, duplication,
//! corruption, delay and black holes on the way, in both directions.
//!
//! Randomness comes from one seeded RNG, so a failing run can be replayed with the same seed
//! (the timing of the nodes still varies). Settings and black holes can change while it runs.
//! It lives in the tests, not in the library: only tests use it, and it needs no error handling
//! beyond "the test fails".

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Longest and shortest wait for a datagram in the relay loop.
const MAX_WAIT: Duration = Duration::from_millis(1);
const MIN_WAIT: Duration = Duration::from_micros(20);

/// What the relay does to each datagram, in each direction. Probabilities are 0.0..=1.0.
#[derive(Clone, Copy, Debug, Default)]
pub struct Impairment {
    /// Each datagram is dropped with this probability.
    pub drop: f64,
    /// With this probability a datagram starts a burst: it and the next `burst_len - 1`
    /// datagrams in the same direction are dropped.
    pub burst: f64,
    pub burst_len: u32,
    /// With this probability a datagram is held back `reorder_by` longer than the others, so
    /// later ones overtake it.
    pub reorder: f64,
    pub reorder_by: Duration,
    /// With this probability a datagram is sent twice.
    pub duplicate: f64,
    /// With this probability one random octet of a datagram is flipped.
    pub corrupt: f64,
    /// Every datagram is delayed by this much plus a uniform jitter of up to `jitter`.
    pub delay: Duration,
    pub jitter: Duration,
}

/// What the relay has done so far (for a test to check that the impairment really happened).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImpairStats {
    pub received: u64,
    pub forwarded: u64,
    pub dropped: u64,
    pub burst_dropped: u64,
    pub black_holed: u64,
    pub reordered: u64,
    pub duplicated: u64,
    pub corrupted: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    burst_dropped: AtomicU64,
    black_holed: AtomicU64,
    reordered: AtomicU64,
    duplicated: AtomicU64,
    corrupted: AtomicU64,
}

struct Control {
    settings: Impairment,
    /// Everything is dropped until this instant.
    black_hole_until: Option<Instant>,
}

/// The relay; dropping it stops its thread.
pub struct ImpairRelay {
    addr: SocketAddr,
    control: Arc<Mutex<Control>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A datagram waiting for its send time; ordered by (time, sequence) so equal times keep
/// arrival order.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    at: Instant,
    seq: u64,
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl ImpairRelay {
    /// Binds 127.0.0.1 on a free port and relays towards `peer` with `settings` and `seed`.
    pub fn start(peer: SocketAddr, settings: Impairment, seed: u64) -> io::Result<ImpairRelay> {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        // Room for bursts from both nodes while the relay thread waits for the CPU: a datagram
        // lost in the relay's socket buffer is loss nobody asked for.
        socket.set_recv_buffer_size(4 << 20).ok();
        socket.set_send_buffer_size(4 << 20).ok();
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        let socket: UdpSocket = socket.into();
        // Bounds how long the loop waits for a datagram, so a stop is seen within MAX_WAIT.
        socket.set_read_timeout(Some(MAX_WAIT))?;
        let addr = socket.local_addr()?;
        let control = Arc::new(Mutex::new(Control {
            settings,
            black_hole_until: None,
        }));
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut worker = Worker {
            socket,
            peer,
            dialer: None,
            control: control.clone(),
            counters: counters.clone(),
            rng: StdRng::seed_from_u64(seed),
            held: BinaryHeap::new(),
            seq: 0,
            burst_left: [0, 0],
        };
        let stop_flag = stop.clone();
        let thread = thread::Builder::new()
            .name("impair-relay".into())
            .spawn(move || worker.run(&stop_flag))?;
        Ok(ImpairRelay {
            addr,
            control,
            counters,
            stop,
            thread: Some(thread),
        })
    }

    /// The address the dialing node must use as its peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the settings; applies to datagrams arriving from now on.
    pub fn set(&self, settings: Impairment) {
        self.lock().settings = settings;
    }

    /// Drops every datagram, both ways, for `duration` from now (zero ends a black hole).
    pub fn black_hole(&self, duration: Duration) {
        self.lock().black_hole_until = Some(Instant::now() + duration);
    }

    pub fn stats(&self) -> ImpairStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ImpairStats {
            received: get(&c.received),
            forwarded: get(&c.forwarded),
            dropped: get(&c.dropped),
            burst_dropped: get(&c.burst_dropped),
            black_holed: get(&c.black_holed),
            reordered: get(&c.reordered),
            duplicated: get(&c.duplicated),
            corrupted: get(&c.corrupted),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for ImpairRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
    }
}

struct Worker {
    socket: UdpSocket,
    peer: SocketAddr,
    /// Where the dialer last sent from; the peer's datagrams go there.
    dialer: Option<SocketAddr>,
    control: Arc<Mutex<Control>>,
    counters: Arc<Counters>,
    rng: StdRng,
    held: BinaryHeap<Reverse<Held>>,
    seq: u64,
    /// Datagrams still to drop in the current burst, per direction (0: to peer, 1: to dialer).
    burst_left: [u32; 2],
}

impl Worker {
    fn run(&mut self, stop: &AtomicBool) {
        let mut buf = vec![0u8; 65_536];
        let mut timeout = MAX_WAIT;
        while !stop.load(Ordering::Relaxed) {
            // Wake up when the next held datagram is due, not a whole MAX_WAIT later: the
            // delay settings are sub-millisecond.
            let next = self.held.peek().map_or(MAX_WAIT, |Reverse(h)| {
                h.at.saturating_duration_since(Instant::now())
                    .clamp(MIN_WAIT, MAX_WAIT)
            });
            if next != timeout {
                timeout = next;
                self.socket.set_read_timeout(Some(timeout)).ok();
            }
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => self.on_datagram(&buf[..n], from),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                // ICMP port unreachable from a stopped node surfaces here; keep relaying.
                Err(_) => {}
            }
            self.release_due();
        }
    }

    fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        let c = &self.counters;
        c.received.fetch_add(1, Ordering::Relaxed);
        let (to, dir) = if from == self.peer {
            match self.dialer {
                Some(d) => (d, 1),
                None => return,
            }
        } else {
            self.dialer = Some(from);
            (self.peer, 0)
        };
        let (s, hole) = {
            let ctl = self.control.lock().unwrap_or_else(|p| p.into_inner());
            let hole = ctl.black_hole_until.is_some_and(|t| Instant::now() < t);
            (ctl.settings, hole)
        };
        if hole {
            c.black_holed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.burst_left[dir] > 0 {
            self.burst_left[dir] -= 1;
            c.burst_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.rng.gen_bool(s.burst.clamp(0.0, 1.0)) {
            self.burst_left[dir] = s.burst_len.saturating_sub(1);
            c.burst_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.rng.gen_bool(s.drop.clamp(0.0, 1.0)) {
            c.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut data = bytes.to_vec();
        if !data.is_empty() && self.rng.gen_bool(s.corrupt.clamp(0.0, 1.0)) {
            let i = self.rng.gen_range(0..data.len());
            data[i] ^= 1 << self.rng.gen_range(0..8);
            c.corrupted.fetch_add(1, Ordering::Relaxed);
        }
        let mut wait = s.delay;
        if !s.jitter.is_zero() {
            wait += s.jitter.mul_f64(self.rng.gen::<f64>());
        }
        if self.rng.gen_bool(s.reorder.clamp(0.0, 1.0)) {
            wait += s.reorder_by;
            c.reordered.fetch_add(1, Ordering::Relaxed);
        }
        let copies = if self.rng.gen_bool(s.duplicate.clamp(0.0, 1.0)) {
            c.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        let at = Instant::now() + wait;
        for _ in 0..copies {
            if wait.is_zero() && self.held.is_empty() {
                self.send(&data, to);
            } else {
                self.seq += 1;
                self.held.push(Reverse(Held {
                    at,
                    seq: self.seq,
                    to,
                    bytes: data.clone(),
                }));
            }
        }
    }

    fn release_due(&mut self) {
        let now = Instant::now();
        while self.held.peek().is_some_and(|Reverse(h)| h.at <= now) {
            if let Some(Reverse(h)) = self.held.pop() {
                self.send(&h.bytes, h.to);
            }
        }
    }

    fn send(&self, bytes: &[u8], to: SocketAddr) {
        // A full socket buffer or an unreachable node is one more lost datagram.
        if self.socket.send_to(bytes, to).is_ok() {
            self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        }
    }
}
