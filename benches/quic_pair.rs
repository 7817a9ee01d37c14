//! Bulk stream transfer between two quiche connections joined in memory (no sockets, no
//! driver): per iteration, 16 MiB go from the client's stream to the server (client
//! `stream_send` + `send` -> server `recv` + `stream_recv`, acks back). Everything both
//! endpoints do is timed, on one thread, so the figure is QUIC's CPU cost per byte for sender
//! and receiver together (packetization, AEAD both ways, acks, congestion control).
//!
//! Two packet sizes: the data-center case (max UDP payload 1,452 B, a 1,500-byte path MTU) and
//! loopback-size packets (65,527 B asked; the size quiche really uses is printed).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rlinkd::config::QuicSettings;

const PER_ITER: u64 = 16 << 20;
const CHUNK: usize = 256 << 10;
const DGRAM_ROOM: usize = 65_535;

fn pattern_byte(o: u64) -> u8 {
    (o % 251) as u8
}

fn config(dir: &Path, node: &str, addr: SocketAddr, max_udp_payload: usize) -> quiche::Config {
    let mut q = QuicSettings::new(
        addr,
        dir.join(format!("{node}.pem")),
        dir.join(format!("{node}.key")),
        dir.join("ca.pem"),
    );
    q.idle_timeout = Duration::from_secs(60);
    q.max_udp_payload = max_udp_payload;
    rlinkd::quic::tls::quiche_config(&q).expect("quiche config")
}

/// Datagrams queued between the two sides, back to back in one reused buffer.
#[derive(Default)]
struct Wire {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    largest: usize,
    count: u64,
}

impl Wire {
    /// Everything `conn` wants to send now.
    fn fill_from(&mut self, conn: &mut quiche::Connection) {
        loop {
            let off = self.bytes.len();
            self.bytes.resize(off + DGRAM_ROOM, 0);
            match conn.send(&mut self.bytes[off..]) {
                Ok((n, _)) => {
                    self.bytes.truncate(off + n);
                    self.ends.push(off + n);
                    self.largest = self.largest.max(n);
                    self.count += 1;
                }
                Err(quiche::Error::Done) => {
                    self.bytes.truncate(off);
                    return;
                }
                Err(e) => panic!("send: {e}"),
            }
        }
    }

    /// Hands every queued datagram to `conn` and empties the wire.
    fn deliver_to(&mut self, conn: &mut quiche::Connection, info: quiche::RecvInfo) {
        let mut start = 0;
        for &end in &self.ends {
            if let Err(e) = conn.recv(&mut self.bytes[start..end], info) {
                assert_eq!(e, quiche::Error::Done, "recv");
            }
            start = end;
        }
        self.bytes.clear();
        self.ends.clear();
    }
}

struct Pair {
    client: quiche::Connection,
    server: quiche::Connection,
    to_server: quiche::RecvInfo,
    to_client: quiche::RecvInfo,
    up: Wire,
    down: Wire,
    pattern: Vec<u8>,
    sent: u64,
    received: u64,
    sink: Vec<u8>,
}

const SID: u64 = 0;

impl Pair {
    fn new(dir: &Path, max_udp_payload: usize) -> Pair {
        let c_addr: SocketAddr = "10.255.0.1:4433".parse().unwrap();
        let s_addr: SocketAddr = "10.255.0.2:4433".parse().unwrap();
        let mut c_cfg = config(dir, "a", c_addr, max_udp_payload);
        let mut s_cfg = config(dir, "b", s_addr, max_udp_payload);
        let c_scid = quiche::ConnectionId::from_ref(&[1; quiche::MAX_CONN_ID_LEN]);
        let s_scid = quiche::ConnectionId::from_ref(&[2; quiche::MAX_CONN_ID_LEN]);
        let client =
            quiche::connect(Some("b"), &c_scid, c_addr, s_addr, &mut c_cfg).expect("connect");
        let server = quiche::accept(&s_scid, None, s_addr, c_addr, &mut s_cfg).expect("accept");
        let mut pair = Pair {
            client,
            server,
            to_server: quiche::RecvInfo {
                from: c_addr,
                to: s_addr,
            },
            to_client: quiche::RecvInfo {
                from: s_addr,
                to: c_addr,
            },
            up: Wire::default(),
            down: Wire::default(),
            pattern: (0..(CHUNK + 251) as u64).map(pattern_byte).collect(),
            sent: 0,
            received: 0,
            sink: vec![0u8; CHUNK],
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(pair.client.is_established() && pair.server.is_established()) {
            assert!(Instant::now() < deadline, "handshake did not finish");
            pair.round();
        }
        pair
    }

    /// One exchange: client sends, server receives and reads, server acks, client receives.
    fn round(&mut self) {
        if self.client.is_established() {
            loop {
                let start = (self.sent % 251) as usize;
                match self
                    .client
                    .stream_send(SID, &self.pattern[start..start + CHUNK], false)
                {
                    Ok(n) => {
                        self.sent += n as u64;
                        if n < CHUNK {
                            break;
                        }
                    }
                    Err(quiche::Error::Done) => break,
                    Err(e) => panic!("stream_send: {e}"),
                }
            }
        }
        self.up.fill_from(&mut self.client);
        self.up.deliver_to(&mut self.server, self.to_server);
        while let Ok((n, _)) = self.server.stream_recv(SID, &mut self.sink) {
            let at = self.received;
            // memcmp against the pattern: cheap enough to verify every byte in the timed loop.
            let start = (at % 251) as usize;
            assert!(
                self.sink[..n] == self.pattern[start..start + n],
                "stream bytes differ near offset {at}"
            );
            self.received += n as u64;
        }
        self.down.fill_from(&mut self.server);
        self.down.deliver_to(&mut self.client, self.to_client);
        let now = Instant::now();
        for conn in [&mut self.client, &mut self.server] {
            if conn.timeout_instant().is_some_and(|t| t <= now) {
                conn.on_timeout();
            }
        }
        assert!(
            !self.client.is_closed() && !self.server.is_closed(),
            "connection closed: {:?} / {:?}",
            self.client.peer_error(),
            self.server.local_error()
        );
    }

    /// Moves `PER_ITER` more bytes to the server.
    fn transfer(&mut self) {
        let target = self.received + PER_ITER;
        let mut stalled = 0;
        while self.received < target {
            let before = self.received;
            self.round();
            stalled = if self.received == before {
                stalled + 1
            } else {
                0
            };
            if stalled > 1000 {
                // Only a timer (e.g. loss recovery) can unblock it; wait for it.
                std::thread::sleep(Duration::from_millis(1));
                assert!(stalled < 5000, "transfer stalled");
            }
        }
    }
}

fn quic_pair(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    rlinkd::cert::generate(dir.path(), &["a".into(), "b".into()]).expect("certs");
    let mut g = c.benchmark_group("quic_pair");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Bytes(PER_ITER));
    for (label, payload) in [("1452B", 1452usize), ("65527B", 65_527)] {
        let mut pair = Pair::new(dir.path(), payload);
        pair.transfer(); // congestion window out of slow start
        g.bench_function(format!("stream-16MiB/{label}"), |b| {
            b.iter(|| pair.transfer())
        });
        eprintln!(
            "quic_pair {label}: asked max UDP payload {payload}; quiche sent datagrams up to {} B \
             (max_send_udp_payload_size() reports {}); {} datagrams up, {} down; {} MiB verified",
            pair.up.largest,
            pair.client.max_send_udp_payload_size(),
            pair.up.count,
            pair.down.count,
            pair.received >> 20
        );
    }
    g.finish();
}

criterion_group!(benches, quic_pair);
criterion_main!(benches);
