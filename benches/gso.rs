//! The QUIC driver's send path: `QuicDriver::poll_transmit` assembling GSO batches (up to 64
//! equal-sized packets; 45 at 1,452 B in the 64 KiB buffer, the kernel's GSO byte limit) while one stream has plenty of data queued. Two drivers are joined in
//! memory; only the sender's `poll_transmit` calls are timed, so the figure is the cost of
//! packetizing + encrypting (quiche `send`) + batching, per byte of datagrams produced. Acks,
//! the receiver and refilling the stream run untimed between batches.
//!
//! Data-center packet size (max UDP payload 1,452 B), as the driver runs by default.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rlinkd::config::QuicSettings;
use rlinkd::quic::driver::{ConnId, DriverEvent, QuicDriver};

/// Datagram bytes produced per measured iteration.
const PER_ITER: u64 = 4 << 20;
const MAX_SEGMENTS: usize = 64;

fn driver(dir: &Path, node: &str, addr: SocketAddr, allowed: &str) -> QuicDriver {
    let mut q = QuicSettings::new(
        addr,
        dir.join(format!("{node}.pem")),
        dir.join(format!("{node}.key")),
        dir.join("ca.pem"),
    );
    q.idle_timeout = Duration::from_secs(30);
    q.keepalive_interval = Duration::from_secs(10);
    let config = rlinkd::quic::tls::quiche_config(&q).expect("quiche config");
    QuicDriver::new(config, addr, [allowed.to_string()], q.keepalive_interval)
}

/// Sends everything `src` has and feeds it to `dst` (handshake only).
fn pump(
    src: &mut QuicDriver,
    dst: &mut QuicDriver,
    from: SocketAddr,
    out: &mut [u8],
    now: Instant,
) {
    for id in src.conn_ids() {
        while let Some(batch) = src.poll_transmit(id, out, MAX_SEGMENTS, now) {
            for d in out[..batch.len].chunks_mut(batch.segment_size) {
                dst.recv(d, from, now);
            }
        }
    }
}

/// Stream byte at offset `o` (verified by the receiver).
fn pattern_byte(o: u64) -> u8 {
    (o % 251) as u8
}

const CHUNK: usize = 256 << 10;

struct Pair {
    a: QuicDriver,
    b: QuicDriver,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    conn_a: ConnId,
    conn_b: ConnId,
    sid: u64,
    /// `CHUNK + 251` bytes of the pattern; a send starts at `sent % 251`.
    pattern: Vec<u8>,
    sent: u64,
    out: Vec<u8>,
    sink: Vec<u8>,
    in_flight: Vec<Vec<u8>>,
    /// Produced by `a` so far: (batches, datagrams, bytes).
    batches: u64,
    datagrams: u64,
    bytes: u64,
    received: u64,
}

impl Pair {
    fn new(dir: &Path) -> Pair {
        let a_addr: SocketAddr = "10.255.0.1:4433".parse().unwrap();
        let b_addr: SocketAddr = "10.255.0.2:4433".parse().unwrap();
        let mut a = driver(dir, "a", a_addr, "b");
        let mut b = driver(dir, "b", b_addr, "a");
        let conn_a = a.connect("b", b_addr, Instant::now()).expect("connect");
        let mut out = vec![0u8; CHUNK];
        let mut conn_b = None;
        let mut a_up = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(a_up && conn_b.is_some()) {
            assert!(Instant::now() < deadline, "handshake did not finish");
            let now = Instant::now();
            pump(&mut a, &mut b, a_addr, &mut out, now);
            pump(&mut b, &mut a, b_addr, &mut out, now);
            while let Some(ev) = a.poll_event() {
                a_up |= matches!(ev, DriverEvent::Established { .. });
            }
            while let Some(ev) = b.poll_event() {
                if let DriverEvent::Established { conn, .. } = ev {
                    conn_b = Some(conn);
                }
            }
        }
        let sid = a.open_stream(conn_a).expect("stream");
        Pair {
            a,
            b,
            a_addr,
            b_addr,
            conn_a,
            conn_b: conn_b.expect("established"),
            sid,
            pattern: (0..(CHUNK + 251) as u64).map(pattern_byte).collect(),
            sent: 0,
            out,
            sink: vec![0u8; CHUNK],
            in_flight: Vec::new(),
            batches: 0,
            datagrams: 0,
            bytes: 0,
            received: 0,
        }
    }

    /// Keeps the stream's send buffer full (untimed).
    fn refill(&mut self) {
        let mut q = self.a.stream(self.conn_a, self.sid).expect("conn");
        loop {
            let start = (self.sent % 251) as usize;
            match q.send(&self.pattern[start..start + CHUNK], false) {
                Ok(n) => {
                    self.sent += n as u64;
                    if n < CHUNK {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }

    /// Drains `a` into `in_flight`, timing only `poll_transmit`. Returns the time spent and the
    /// datagram bytes produced.
    fn transmit(&mut self) -> (Duration, u64) {
        let now = Instant::now();
        let mut spent = Duration::ZERO;
        let mut produced = 0;
        loop {
            let t = Instant::now();
            let batch = self
                .a
                .poll_transmit(self.conn_a, &mut self.out, MAX_SEGMENTS, now);
            spent += t.elapsed();
            let Some(batch) = batch else { break };
            self.batches += 1;
            self.datagrams += batch.segments as u64;
            produced += batch.len as u64;
            for d in self.out[..batch.len].chunks(batch.segment_size) {
                self.in_flight.push(d.to_vec());
            }
        }
        self.bytes += produced;
        (spent, produced)
    }

    /// Delivers to `b`, lets it read and ack, delivers the acks to `a` (untimed).
    fn deliver(&mut self) {
        let now = Instant::now();
        for mut d in self.in_flight.drain(..) {
            self.b.recv(&mut d, self.a_addr, now);
        }
        let mut qb = self.b.stream(self.conn_b, self.sid).expect("conn");
        while let Ok((n, _)) = qb.recv(&mut self.sink) {
            let at = self.received;
            // memcmp against the pattern: cheap enough to verify every byte in the timed loop.
            let start = (at % 251) as usize;
            assert!(
                self.sink[..n] == self.pattern[start..start + n],
                "stream bytes differ near offset {at}"
            );
            self.received += n as u64;
        }
        while let Some(batch) = self
            .b
            .poll_transmit(self.conn_b, &mut self.out, MAX_SEGMENTS, now)
        {
            for d in self.out[..batch.len].chunks_mut(batch.segment_size) {
                self.a.recv(d, self.b_addr, now);
            }
        }
        for drv in [&mut self.a, &mut self.b] {
            if drv.timeout().is_some_and(|t| t <= Instant::now()) {
                drv.on_timeout(Instant::now());
            }
        }
    }

    /// Time for `a` to produce `PER_ITER` bytes of datagrams, scaled to exactly that amount.
    fn measure(&mut self) -> Duration {
        let mut spent = Duration::ZERO;
        let mut produced = 0u64;
        let mut idle_rounds = 0;
        while produced < PER_ITER {
            self.refill();
            let (t, n) = self.transmit();
            spent += t;
            produced += n;
            idle_rounds = if n == 0 { idle_rounds + 1 } else { 0 };
            assert!(idle_rounds < 10_000, "sender stalled");
            self.deliver();
        }
        spent.mul_f64(PER_ITER as f64 / produced as f64)
    }
}

fn gso(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    rlinkd::cert::generate(dir.path(), &["a".into(), "b".into()]).expect("certs");
    let mut pair = Pair::new(dir.path());
    // Warm up congestion control so batches are not cwnd-limited from the start.
    for _ in 0..4 {
        pair.measure();
    }

    let mut g = c.benchmark_group("gso");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(PER_ITER));
    let (b0, d0, y0) = (pair.batches, pair.datagrams, pair.bytes);
    g.bench_function("poll_transmit/1452B", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| pair.measure()).sum())
    });
    g.finish();
    let (batches, datagrams, bytes) = (pair.batches - b0, pair.datagrams - d0, pair.bytes - y0);
    eprintln!(
        "gso bench: {batches} batches, {:.1} datagrams/batch, {:.0} B/datagram, {:.1} KiB/batch; \
         receiver got {} MiB of {} MiB sent, verified byte by byte",
        datagrams as f64 / batches.max(1) as f64,
        bytes as f64 / datagrams.max(1) as f64,
        bytes as f64 / batches.max(1) as f64 / 1024.0,
        pair.received >> 20,
        pair.sent >> 20
    );
}

criterion_group!(benches, gso);
criterion_main!(benches);
