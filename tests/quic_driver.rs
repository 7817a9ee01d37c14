//! The sans-I/O QUIC driver in memory: two drivers joined by a seeded lossy, reordering network
//! (`tests/common/lossy.rs`, shared with `shard_core.rs`), no sockets. quiche reads the wall
//! clock itself, so time is real; loss and reordering are deterministic for a seed.

#[path = "common/lossy.rs"]
mod lossy;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use lossy::LossyWire;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rlinkd::config::QuicSettings;
use rlinkd::quic::driver::{ConnId, Direction, DriverEvent, QuicDriver};

struct Side {
    driver: QuicDriver,
    addr: SocketAddr,
    events: Vec<DriverEvent>,
}

struct Net {
    a: Side,
    b: Side,
    wire: LossyWire,
}

fn settings(dir: &Path, node: &str, addr: SocketAddr) -> QuicSettings {
    let mut q = QuicSettings::new(
        addr,
        dir.join(format!("{node}.pem")),
        dir.join(format!("{node}.key")),
        dir.join("ca.pem"),
    );
    q.idle_timeout = Duration::from_secs(5);
    q.keepalive_interval = Duration::from_secs(1);
    q
}

fn driver(dir: &Path, cert_node: &str, addr: SocketAddr, allowed: &[&str]) -> QuicDriver {
    let q = settings(dir, cert_node, addr);
    let config = rlinkd::quic::tls::quiche_config(&q).expect("quiche config");
    QuicDriver::new(
        config,
        addr,
        allowed.iter().map(|s| s.to_string()),
        q.keepalive_interval,
    )
}

impl Net {
    fn new(dir: &Path, a_cert: &str, b_allowed: &[&str], seed: u64) -> Net {
        let a_addr: SocketAddr = "10.255.0.1:4433".parse().unwrap();
        let b_addr: SocketAddr = "10.255.0.2:4433".parse().unwrap();
        Net {
            a: Side {
                driver: driver(dir, a_cert, a_addr, &["b"]),
                addr: a_addr,
                events: vec![],
            },
            b: Side {
                driver: driver(dir, "b", b_addr, b_allowed),
                addr: b_addr,
                events: vec![],
            },
            wire: LossyWire::new(seed),
        }
    }

    /// One round: both sides send, the network drops/reorders, both sides receive, timers run.
    fn step(&mut self) {
        let now = Instant::now();
        let mut buf = vec![0u8; 65_536];
        for side in [&mut self.a, &mut self.b] {
            while let Some(batch) = side.driver.poll_stateless(&mut buf) {
                self.wire
                    .send(side.addr, batch.to, &buf[..batch.len], batch.len);
            }
            for cid in side.driver.conn_ids() {
                while let Some(batch) = side.driver.poll_transmit(cid, &mut buf, 16, now) {
                    self.wire
                        .send(side.addr, batch.to, &buf[..batch.len], batch.segment_size);
                }
            }
        }
        // Reordered and thinned by the wire.
        for mut d in self.wire.take() {
            let dst = if d.to == self.b.addr {
                &mut self.b
            } else {
                &mut self.a
            };
            dst.driver.recv(&mut d.bytes, d.from, now);
        }
        for side in [&mut self.a, &mut self.b] {
            if side.driver.timeout().is_some_and(|t| t <= Instant::now()) {
                side.driver.on_timeout(Instant::now());
            }
            while let Some(ev) = side.driver.poll_event() {
                side.events.push(ev);
            }
        }
    }

    /// Steps until `done` or `limit`; sleeps briefly when idle so quiche's timers can fire.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Net) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            self.step();
            if done(self) {
                return true;
            }
            if self.wire.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        false
    }

    fn established(side: &Side) -> Option<(ConnId, String, Direction)> {
        side.events.iter().find_map(|e| match e {
            DriverEvent::Established {
                conn,
                peer,
                direction,
            } => Some((*conn, peer.clone(), *direction)),
            _ => None,
        })
    }
}

fn certs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    rlinkd::cert::generate(dir.path(), &["a".into(), "b".into(), "c".into()]).unwrap();
    dir
}

#[test]
fn handshake_checks_identity_on_both_sides() {
    let dir = certs();
    let mut net = Net::new(dir.path(), "a", &["a"], 1);
    let b_addr = net.b.addr;
    net.a.driver.connect("b", b_addr, Instant::now()).unwrap();
    assert!(
        net.run_until(Duration::from_secs(10), |n| Net::established(&n.a)
            .is_some()
            && Net::established(&n.b).is_some())
    );
    let (_, a_sees, a_dir) = Net::established(&net.a).unwrap();
    let (_, b_sees, b_dir) = Net::established(&net.b).unwrap();
    assert_eq!((a_sees.as_str(), a_dir), ("b", Direction::Outgoing));
    assert_eq!((b_sees.as_str(), b_dir), ("a", Direction::Incoming));
}

#[test]
fn a_certificate_naming_an_unconfigured_peer_is_refused() {
    let dir = certs();
    // Node "c" dials b with its own (valid, same-CA) certificate, but b only accepts "a".
    let mut net = Net::new(dir.path(), "c", &["a"], 2);
    let b_addr = net.b.addr;
    net.a.driver.connect("b", b_addr, Instant::now()).unwrap();
    let closed = |side: &Side| {
        side.events.iter().find_map(|e| match e {
            DriverEvent::Closed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
    };
    assert!(net.run_until(Duration::from_secs(15), |n| closed(&n.a).is_some()));
    assert!(
        Net::established(&net.b).is_none(),
        "b must not report the refused peer as connected"
    );
    let reason = closed(&net.a).unwrap();
    assert!(
        reason.contains("configured peer"),
        "dialer learns why: {reason}"
    );
    assert_eq!(net.b.driver.stats().peers_refused, 1);
}

#[test]
fn stream_data_crosses_intact_through_loss_and_reordering() {
    let dir = certs();
    let mut net = Net::new(dir.path(), "a", &["a"], 7);
    let b_addr = net.b.addr;
    let conn_a = net.a.driver.connect("b", b_addr, Instant::now()).unwrap();
    assert!(
        net.run_until(Duration::from_secs(10), |n| Net::established(&n.b)
            .is_some())
    );
    let conn_b = Net::established(&net.b).unwrap().0;
    net.wire.loss = 0.03;

    let up: Vec<u8> = (0..3 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let sid = net.a.driver.open_stream(conn_a).unwrap();
    let (mut sent, mut fin_sent, mut got, mut fin_got) = (0usize, false, Vec::new(), false);
    let mut buf = vec![0u8; 65_536];
    let ok = net.run_until(Duration::from_secs(60), |n| {
        let mut qa = n.a.driver.stream(conn_a, sid).unwrap();
        if sent < up.len() {
            sent += qa.send(&up[sent..], false).unwrap_or(0);
        } else if !fin_sent {
            fin_sent = qa.send(&[], true).is_ok();
        }
        let mut qb = n.b.driver.stream(conn_b, sid).unwrap();
        while let Ok((len, fin)) = qb.recv(&mut buf) {
            got.extend_from_slice(&buf[..len]);
            fin_got |= fin;
        }
        fin_got
    });
    assert!(
        ok,
        "transfer did not finish: {} of {} bytes",
        got.len(),
        up.len()
    );
    assert!(got == up, "bytes differ");
    assert!(
        net.wire.dropped > 0,
        "the network dropped nothing; the test proves nothing"
    );
}

#[test]
fn junk_datagrams_are_counted_and_ignored() {
    let dir = certs();
    let mut net = Net::new(dir.path(), "a", &["a"], 3);
    let mut rng = StdRng::seed_from_u64(99);
    let from: SocketAddr = "10.255.0.9:999".parse().unwrap();
    for i in 0..2000 {
        let len = if i % 2 == 0 {
            rng.gen_range(0..64)
        } else {
            rng.gen_range(1200..1500)
        };
        let mut d: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if i % 4 == 1 {
            d[0] = 0xc0; // long header, Initial
            d[1..5].copy_from_slice(&1u32.to_be_bytes());
        }
        net.b.driver.recv(&mut d, from, Instant::now());
    }
    let s = net.b.driver.stats();
    assert!(s.unparsable + s.unknown_connection > 0);
    assert!(
        net.b.driver.conn_ids().is_empty(),
        "junk must not leave half-open connections behind"
    );
    // A real peer still connects afterwards.
    let b_addr = net.b.addr;
    net.a.driver.connect("b", b_addr, Instant::now()).unwrap();
    assert!(
        net.run_until(Duration::from_secs(10), |n| Net::established(&n.b)
            .is_some())
    );
}

/// Every datagram `side` has to send now, Retry packets included.
fn drain(side: &mut Side) -> Vec<Vec<u8>> {
    let now = Instant::now();
    let mut buf = vec![0u8; 65_536];
    let mut out = Vec::new();
    while let Some(b) = side.driver.poll_stateless(&mut buf) {
        out.push(buf[..b.len].to_vec());
    }
    for cid in side.driver.conn_ids() {
        while let Some(b) = side.driver.poll_transmit(cid, &mut buf, 16, now) {
            out.extend(buf[..b.len].chunks(b.segment_size).map(<[u8]>::to_vec));
        }
    }
    out
}

fn packet_type(d: &[u8]) -> Option<quiche::Type> {
    let mut d = d.to_vec();
    quiche::Header::from_slice(&mut d, quiche::MAX_CONN_ID_LEN)
        .ok()
        .map(|h| h.ty)
}

fn token_of(d: &[u8]) -> Vec<u8> {
    let mut d = d.to_vec();
    quiche::Header::from_slice(&mut d, quiche::MAX_CONN_ID_LEN)
        .ok()
        .and_then(|h| h.token)
        .unwrap_or_default()
}

#[test]
fn an_initial_without_a_token_gets_a_retry_and_keeps_no_state() {
    let dir = certs();
    let mut net = Net::new(dir.path(), "a", &["a"], 11);
    let (a_addr, b_addr) = (net.a.addr, net.b.addr);
    let now = Instant::now();
    net.a.driver.connect("b", b_addr, now).unwrap();

    // The client's first flight: b answers with Retry packets only, and keeps nothing.
    for mut d in drain(&mut net.a) {
        assert_eq!(net.b.driver.recv(&mut d, a_addr, now), None);
    }
    assert!(
        net.b.driver.conn_ids().is_empty(),
        "b holds state for an unvalidated address"
    );
    let retries = drain(&mut net.b);
    assert!(!retries.is_empty(), "b did not answer the Initial");
    assert!(retries
        .iter()
        .all(|d| packet_type(d) == Some(quiche::Type::Retry)));
    assert_eq!(net.b.driver.stats().retries_sent, retries.len() as u64);
    for mut d in retries {
        net.a.driver.recv(&mut d, b_addr, now);
    }

    // The client comes back with the token.
    let second = drain(&mut net.a);
    let with_token: Vec<&Vec<u8>> = second.iter().filter(|d| !token_of(d).is_empty()).collect();
    assert!(!with_token.is_empty(), "the client did not echo a token");
    // The same token from another address, or too late, is refused without state.
    let elsewhere: SocketAddr = "10.255.0.9:4433".parse().unwrap();
    let mut copy = with_token[0].clone();
    assert_eq!(net.b.driver.recv(&mut copy, elsewhere, now), None);
    let mut copy = with_token[0].clone();
    let late = now + Duration::from_secs(4);
    assert_eq!(net.b.driver.recv(&mut copy, a_addr, late), None);
    assert_eq!(net.b.driver.stats().invalid_tokens, 2);
    assert!(net.b.driver.conn_ids().is_empty());

    let replay = with_token[0].clone();
    // From the right address, in time: the handshake completes.
    for mut d in second {
        net.b.driver.recv(&mut d, a_addr, now);
    }
    assert_eq!(net.b.driver.conn_ids().len(), 1);
    assert!(
        net.run_until(Duration::from_secs(10), |n| Net::established(&n.a)
            .is_some()
            && Net::established(&n.b).is_some())
    );

    // A token opens one connection: once it has ended, a copy of its Initial opens nothing.
    let conn_b = Net::established(&net.b).unwrap().0;
    net.b
        .driver
        .close(conn_b, rlinkd::quic::codes::ConnCode::Shutdown, "test");
    assert!(net.run_until(Duration::from_secs(10), |n| n
        .b
        .driver
        .conn_ids()
        .is_empty()));
    let mut copy = replay;
    assert_eq!(net.b.driver.recv(&mut copy, a_addr, Instant::now()), None);
    assert_eq!(net.b.driver.stats().invalid_tokens, 3);
    assert!(net.b.driver.conn_ids().is_empty());
}

fn quiet_driver(dir: &Path, node: &str, addr: SocketAddr, allowed: &[&str]) -> QuicDriver {
    // A long idle timeout: only the handshake timeout can end a handshake within the test.
    let mut q = settings(dir, node, addr);
    q.idle_timeout = Duration::from_secs(60);
    let config = rlinkd::quic::tls::quiche_config(&q).expect("quiche config");
    QuicDriver::new(
        config,
        addr,
        allowed.iter().map(|s| s.to_string()),
        q.keepalive_interval,
    )
}

/// Runs `side`'s timers (dropping what it sends) until `done` or `limit`.
fn tick_until(side: &mut Side, limit: Duration, mut done: impl FnMut(&Side) -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        drain(side);
        if side.driver.timeout().is_some_and(|t| t <= Instant::now()) {
            side.driver.on_timeout(Instant::now());
        }
        while let Some(ev) = side.driver.poll_event() {
            side.events.push(ev);
        }
        if done(side) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

fn closed_reason(side: &Side) -> Option<String> {
    side.events.iter().find_map(|e| match e {
        DriverEvent::Closed { reason, .. } => Some(reason.clone()),
        _ => None,
    })
}

#[test]
fn a_handshake_that_does_not_complete_is_dropped_after_the_handshake_timeout() {
    use rlinkd::quic::driver::HANDSHAKE_TIMEOUT;
    let dir = certs();
    let a_addr: SocketAddr = "10.255.0.1:4433".parse().unwrap();
    let b_addr: SocketAddr = "10.255.0.2:4433".parse().unwrap();
    let mut a = Side {
        driver: quiet_driver(dir.path(), "a", a_addr, &["b"]),
        addr: a_addr,
        events: vec![],
    };
    let mut b = Side {
        driver: quiet_driver(dir.path(), "b", b_addr, &["a"]),
        addr: b_addr,
        events: vec![],
    };
    let now = Instant::now();
    a.driver.connect("b", b_addr, now).unwrap();
    // Address validation, then the client's Initial with its token reaches b, and from then on
    // the client is silent (a flood's client that never answers).
    for mut d in drain(&mut a) {
        b.driver.recv(&mut d, a_addr, now);
    }
    for mut d in drain(&mut b) {
        a.driver.recv(&mut d, b_addr, now);
    }
    for mut d in drain(&mut a) {
        b.driver.recv(&mut d, a_addr, now);
    }
    assert_eq!(b.driver.conn_ids().len(), 1);

    // Both sides give up after the handshake timeout, well before the 60 s idle timeout.
    let started = Instant::now();
    let limit = HANDSHAKE_TIMEOUT + Duration::from_secs(5);
    assert!(
        tick_until(&mut b, limit, |s| s.driver.conn_ids().is_empty()),
        "the acceptor still holds the half-open handshake"
    );
    assert_eq!(b.driver.stats().handshakes_timed_out, 1);
    let why = closed_reason(&b).expect("a Closed event");
    assert!(why.contains("handshake not completed"), "{why}");
    assert!(
        tick_until(&mut a, limit, |s| closed_reason(s).is_some()),
        "the dialer is still waiting"
    );
    let why = closed_reason(&a).unwrap();
    assert!(why.contains("handshake not completed"), "{why}");
    assert!(started.elapsed() >= HANDSHAKE_TIMEOUT - Duration::from_millis(100));
    assert!(a.driver.conn_ids().is_empty());
}

/// Nodes on one in-memory network (no loss), any of which can be "dead": what is sent to it or
/// by it is dropped.
struct Mesh {
    sides: Vec<Side>,
    dead: Vec<bool>,
}

impl Mesh {
    fn step(&mut self) {
        let mut flying: Vec<(SocketAddr, SocketAddr, Vec<u8>)> = Vec::new();
        for (i, side) in self.sides.iter_mut().enumerate() {
            let mut buf = vec![0u8; 65_536];
            let now = Instant::now();
            while let Some(b) = side.driver.poll_stateless(&mut buf) {
                flying.push((side.addr, b.to, buf[..b.len].to_vec()));
            }
            for cid in side.driver.conn_ids() {
                while let Some(b) = side.driver.poll_transmit(cid, &mut buf, 16, now) {
                    for d in buf[..b.len].chunks(b.segment_size) {
                        if !self.dead[i] {
                            flying.push((side.addr, b.to, d.to_vec()));
                        }
                    }
                }
            }
        }
        for (from, to, mut d) in flying {
            if let Some(i) = self.sides.iter().position(|s| s.addr == to) {
                if !self.dead[i] {
                    self.sides[i].driver.recv(&mut d, from, Instant::now());
                }
            }
        }
        for side in &mut self.sides {
            if side.driver.timeout().is_some_and(|t| t <= Instant::now()) {
                side.driver.on_timeout(Instant::now());
            }
            while let Some(ev) = side.driver.poll_event() {
                side.events.push(ev);
            }
        }
    }

    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Mesh) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            self.step();
            if done(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }
}

/// Node b and two processes that both hold node a's certificate (at .1 and .3).
fn two_as(dir: &Path) -> Mesh {
    let addrs: Vec<SocketAddr> = ["10.255.0.1:4433", "10.255.0.2:4433", "10.255.0.3:4433"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let side = |cert: &str, addr: SocketAddr, allowed: &[&str]| Side {
        driver: driver(dir, cert, addr, allowed),
        addr,
        events: vec![],
    };
    Mesh {
        sides: vec![
            side("a", addrs[0], &["b"]),
            side("b", addrs[1], &["a"]),
            side("a", addrs[2], &["b"]),
        ],
        dead: vec![false; 3],
    }
}

fn established_on(side: &Side) -> Vec<ConnId> {
    side.events
        .iter()
        .filter_map(|e| match e {
            DriverEvent::Established { conn, .. } => Some(*conn),
            _ => None,
        })
        .collect()
}

#[test]
fn a_second_live_process_with_the_same_identity_is_refused_and_the_first_keeps_its_connection() {
    let dir = certs();
    let mut mesh = two_as(dir.path());
    let b_addr = mesh.sides[1].addr;
    mesh.sides[0]
        .driver
        .connect("b", b_addr, Instant::now())
        .unwrap();
    assert!(
        mesh.run_until(Duration::from_secs(10), |m| established_on(&m.sides[1])
            .len()
            == 1)
    );
    let first = established_on(&mesh.sides[1])[0];

    // The impostor dials b; the real a keeps answering (keepalives, ACKs).
    mesh.sides[2]
        .driver
        .connect("b", b_addr, Instant::now())
        .unwrap();
    assert!(
        mesh.run_until(Duration::from_secs(10), |m| closed_reason(&m.sides[2])
            .is_some()),
        "the impostor's connection was not closed"
    );
    let why = closed_reason(&mesh.sides[2]).unwrap();
    assert!(why.contains("duplicate identity"), "{why}");
    // A while later, b still has exactly the first connection.
    mesh.run_until(Duration::from_millis(500), |_| false);
    let b = &mesh.sides[1];
    assert_eq!(established_on(b), vec![first], "b switched to the impostor");
    assert!(closed_reason(b).is_none_or(|r| !r.contains("superseded")));
    assert!(b.driver.conn(first).is_some_and(|c| c.is_established()));
    assert_eq!(b.driver.stats().duplicates_refused, 1);
    assert_eq!(b.driver.stats().superseded, 0);
    assert!(
        closed_reason(&mesh.sides[0]).is_none(),
        "the real a lost its connection"
    );
}

#[test]
fn a_new_connection_replaces_one_whose_process_died() {
    let dir = certs();
    let mut mesh = two_as(dir.path());
    let b_addr = mesh.sides[1].addr;
    mesh.sides[0]
        .driver
        .connect("b", b_addr, Instant::now())
        .unwrap();
    assert!(
        mesh.run_until(Duration::from_secs(10), |m| established_on(&m.sides[1])
            .len()
            == 1)
    );
    let first = established_on(&mesh.sides[1])[0];

    // The first process dies silently (no close, no ICMP); a new one with its identity dials.
    mesh.dead[0] = true;
    mesh.sides[2]
        .driver
        .connect("b", b_addr, Instant::now())
        .unwrap();
    assert!(
        mesh.run_until(Duration::from_secs(10), |m| established_on(&m.sides[1])
            .len()
            == 2),
        "b did not accept the restarted peer"
    );
    let b = &mesh.sides[1];
    assert_eq!(b.driver.stats().superseded, 1);
    assert_eq!(b.driver.stats().duplicates_refused, 0);
    assert!(
        b.driver
            .conn(first)
            .is_none_or(|c| !c.is_established() || !c.is_live()),
        "the dead connection was not closed"
    );
    assert!(closed_reason(&mesh.sides[2]).is_none());
}

/// With shards, a peer holds one connection per shard of it: node a's shards 0 and 1 (one
/// process: one instance in their connection IDs) both dial b's single shard, and b keeps both.
/// Another live process with a's certificate is refused whatever shard it dials from; when a's
/// process dies and a new one dials, it replaces the old process's connections.
#[test]
fn a_peers_shards_each_hold_a_connection_and_another_process_is_told_apart() {
    let dir = certs();
    let addrs: Vec<SocketAddr> = (1..=5)
        .map(|i| format!("10.255.0.{i}:4433").parse().unwrap())
        .collect();
    let side = |cert: &str, addr: SocketAddr, allowed: &[&str], shard: u8, instance: u64| Side {
        driver: driver(dir.path(), cert, addr, allowed)
            .with_shard(shard)
            .with_instance(instance),
        addr,
        events: vec![],
    };
    let mut mesh = Mesh {
        sides: vec![
            side("a", addrs[0], &["b"], 0, 1),
            side("b", addrs[1], &["a"], 0, 2),
            side("a", addrs[2], &["b"], 1, 1),
            side("a", addrs[3], &["b"], 1, 3), // another live process with a's certificate
            side("a", addrs[4], &["b"], 0, 4), // a restarted a
        ],
        dead: vec![false; 5],
    };
    let b_addr = addrs[1];
    let dial = |mesh: &mut Mesh, i: usize| {
        mesh.sides[i]
            .driver
            .connect("b", b_addr, Instant::now())
            .unwrap();
    };
    dial(&mut mesh, 0);
    dial(&mut mesh, 2);
    assert!(
        mesh.run_until(Duration::from_secs(10), |m| established_on(&m.sides[1])
            .len()
            == 2),
        "b did not take a connection from each of a's shards"
    );
    let first: Vec<ConnId> = established_on(&mesh.sides[1]);
    let mut shards: Vec<u8> = first
        .iter()
        .map(|c| mesh.sides[1].driver.conn(*c).unwrap().remote_shard())
        .collect();
    shards.sort_unstable();
    assert_eq!(
        shards,
        vec![0, 1],
        "each connection names its dialer's shard"
    );
    assert_eq!(mesh.sides[1].driver.stats().duplicates_refused, 0);

    // A second live process (its own instance) dials from shard 1: a's connections answer the
    // liveness probe, so it is refused.
    dial(&mut mesh, 3);
    assert!(
        mesh.run_until(Duration::from_secs(10), |m| closed_reason(&m.sides[3])
            .is_some()),
        "the second process was not refused"
    );
    let why = closed_reason(&mesh.sides[3]).unwrap();
    assert!(why.contains("duplicate identity"), "{why}");

    // a's process dies (both shards, silently); a new process dials: it replaces both.
    mesh.dead[0] = true;
    mesh.dead[2] = true;
    dial(&mut mesh, 4);
    assert!(
        mesh.run_until(Duration::from_secs(10), |m| established_on(&m.sides[1])
            .len()
            == 3),
        "b did not accept the restarted process"
    );
    let b = &mesh.sides[1];
    assert_eq!(
        b.driver.stats().superseded,
        2,
        "both old connections replaced"
    );
    for c in first {
        assert!(
            b.driver
                .conn(c)
                .is_none_or(|c| !c.is_established() || !c.is_live()),
            "an old connection was kept"
        );
    }
    assert!(closed_reason(&mesh.sides[4]).is_none());
}

/// Every datagram `side` has to send now, as (from, to, bytes).
fn transmit_now(side: &mut Side) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let now = Instant::now();
    for cid in side.driver.conn_ids() {
        while let Some(b) = side.driver.poll_transmit(cid, &mut buf, 16, now) {
            for d in buf[..b.len].chunks(b.segment_size.max(1)) {
                out.push((side.addr, b.to, d.to_vec()));
            }
        }
    }
    out
}

/// What `side` sends within `limit` (its timers run meanwhile: an ACK may wait for the
/// ACK delay), at least one datagram.
fn transmit_within(side: &mut Side, limit: Duration) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
    let deadline = Instant::now() + limit;
    loop {
        let out = transmit_now(side);
        if !out.is_empty() || Instant::now() >= deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(2));
        if side.driver.timeout().is_some_and(|t| t <= Instant::now()) {
            side.driver.on_timeout(Instant::now());
        }
    }
}

fn deliver(side: &mut Side, datagrams: Vec<(SocketAddr, SocketAddr, Vec<u8>)>) {
    for (from, _, mut d) in datagrams {
        side.driver.recv(&mut d, from, Instant::now());
    }
}

/// A connected pair (`seed` for its connection ids) where a opened a stream and sent `bytes`
/// (and its FIN when `fin`), all of which b has read: the directory that holds the
/// certificates, the pair, a's and b's connection, the stream.
fn stream_delivered(
    seed: u64,
    bytes: &[u8],
    fin: bool,
) -> (tempfile::TempDir, Net, ConnId, ConnId, u64) {
    let dir = certs();
    let mut net = Net::new(dir.path(), "a", &["a"], seed);
    let b_addr = net.b.addr;
    let conn_a = net.a.driver.connect("b", b_addr, Instant::now()).unwrap();
    assert!(
        net.run_until(Duration::from_secs(10), |n| Net::established(&n.b)
            .is_some()
            && Net::established(&n.a).is_some())
    );
    let conn_b = Net::established(&net.b).unwrap().0;
    let sid = net.a.driver.open_stream(conn_a).unwrap();
    net.a
        .driver
        .stream(conn_a, sid)
        .unwrap()
        .send(bytes, fin)
        .unwrap();
    let mut buf = [0u8; 64];
    let (mut got, mut b_fin) = (0, false);
    assert!(net.run_until(Duration::from_secs(5), |n| {
        if let Some(mut s) = n.b.driver.stream(conn_b, sid) {
            while let Ok((k, f)) = s.recv(&mut buf) {
                got += k;
                b_fin |= f;
            }
        }
        got == bytes.len() && b_fin == fin
    }));
    (dir, net, conn_a, conn_b, sid)
}

/// b answers "pong" on the stream and a reads it; a's ACK for it is returned, not delivered;
/// then b ends its side with a bare FIN (written, not yet sent).
fn answer_then_bare_fin(
    net: &mut Net,
    conn_a: ConnId,
    conn_b: ConnId,
    sid: u64,
) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
    net.b
        .driver
        .stream(conn_b, sid)
        .unwrap()
        .send(b"pong", false)
        .unwrap();
    let answer = transmit_within(&mut net.b, Duration::from_secs(2));
    deliver(&mut net.a, answer);
    let mut buf = [0u8; 64];
    let (n, fin) = net
        .a
        .driver
        .stream(conn_a, sid)
        .unwrap()
        .recv(&mut buf)
        .unwrap();
    assert_eq!((&buf[..n], fin), (&b"pong"[..], false));
    let ack = transmit_within(&mut net.a, Duration::from_secs(2));
    assert!(!ack.is_empty(), "a sent no ACK");
    net.b
        .driver
        .stream(conn_b, sid)
        .unwrap()
        .send(&[], true)
        .unwrap();
    ack
}

/// Runs the pair until a reads the end of the stream (no more bytes: it has read them all), or
/// 5 s pass; true if it did.
fn fin_reaches_a(net: &mut Net, conn_a: ConnId, sid: u64) -> bool {
    let mut buf = [0u8; 64];
    let mut a_fin = false;
    net.run_until(Duration::from_secs(5), |n| {
        if let Some(mut s) = n.a.driver.stream(conn_a, sid) {
            while let Ok((k, fin)) = s.recv(&mut buf) {
                assert_eq!(k, 0, "bytes already read came again");
                a_fin |= fin;
            }
        }
        a_fin
    })
}

/// A bare FIN written after the stream's last bytes were sent, with their ACK processed before
/// the FIN could leave, still reaches the peer. quiche 0.30 counted the send side complete on
/// that ACK and collected the stream with the FIN still queued (cloudflare/quiche#2525; rlinkd
/// builds a patched copy, vendor/README.md): the peer's link then waited forever for the end of
/// the stream (a router that closes right after its last frame does exactly this).
#[test]
fn a_bare_fin_written_before_the_last_bytes_are_acknowledged_still_arrives() {
    let (_dir, mut net, conn_a, conn_b, sid) = stream_delivered(11, b"hello", true);
    let ack = answer_then_bare_fin(&mut net, conn_a, conn_b, sid);
    // Before b sends again, it gets the ACK for "pong".
    deliver(&mut net.b, ack);
    // The FIN must still reach a.
    assert!(
        fin_reaches_a(&mut net, conn_a, sid),
        "the FIN never arrived: b's stream was collected with it"
    );
}

/// Bytes the peer has read already, sent again with the FIN, end the peer's stream. Here b's
/// ACK of "pong" and the packet with b's bare FIN are lost, so b's probe resends "pong" with the
/// FIN (quiche sets it on any frame that reaches the final size). a has read "pong" and drops the
/// duplicate bytes; quiche 0.30 dropped the FIN with them (it recorded the final size without
/// making the stream readable), so a's link never learnt the stream ended (links_lifecycle's
/// churn test, about 1 run in 20 on io_uring with 2 shards). rlinkd builds a patched copy.
#[test]
fn a_fin_that_comes_with_bytes_already_read_still_ends_the_stream() {
    let (_dir, mut net, conn_a, conn_b, sid) = stream_delivered(12, b"ping", false);
    let _lost_ack = answer_then_bare_fin(&mut net, conn_a, conn_b, sid);
    // The packet with the bare FIN is lost too.
    let lost_fin = transmit_within(&mut net.b, Duration::from_secs(2));
    assert!(!lost_fin.is_empty(), "b sent no FIN");
    // From here nothing is lost: b's probe brings "pong" again, with the FIN.
    assert!(
        fin_reaches_a(&mut net, conn_a, sid),
        "a never learnt that b's side of the stream ended"
    );
}
