//! Who may connect: certificates from another CA or naming another node are refused (and the
//! logs say who and why), a second process holding a node's certificate cannot take its place,
//! and junk datagrams on the QUIC port harm nothing.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use rlinkd::cluster::{free_udp_port, NodePlan, NodeProcess};
use rlinkd::endpoints::{EchoRouter, RawSocketClient, RouterOptions};

/// A certificate folder for node `node` holding `cert_from/{as_cert}.pem|.key` as its
/// `{node}.pem|.key`, and `ca_from/ca.pem` as its CA.
fn cert_dir(
    env: &Env,
    name: &str,
    node: &str,
    cert_from: &Path,
    as_cert: &str,
    ca_from: &Path,
) -> PathBuf {
    let dir = env.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    for ext in ["pem", "key"] {
        std::fs::copy(
            cert_from.join(format!("{as_cert}.{ext}")),
            dir.join(format!("{node}.{ext}")),
        )
        .unwrap();
    }
    std::fs::copy(ca_from.join("ca.pem"), dir.join("ca.pem")).unwrap();
    dir
}

/// `plan` run under another node's name (and so with that node's certificate, which `rlinkd run`
/// requires to name its node): an impostor at `plan`'s addresses, with `plan`'s peers and links.
fn as_node(plan: &rlinkd::cluster::NodePlan, name: &str) -> rlinkd::cluster::NodePlan {
    let mut p = plan.clone();
    p.name = name.to_string();
    p
}

/// A client at an endpoint whose peer cannot be reached is closed (connect_timeout = 1s).
fn assert_client_closed(ep: &rlinkd::addr::LocalAddr) {
    let started = Instant::now();
    match RawSocketClient::connect(ep, hs(15), Duration::from_secs(20)) {
        Ok(_) => panic!("a link crossed to a peer that should have been refused"),
        Err(e) => assert!(is_close(&e), "expected a close, got {e}"),
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "closed only after {took:?}");
}

#[test]
fn certificate_from_another_ca_is_refused() {
    let env = Env::new(&["a", "b"]);
    let other_ca = env.path("other-ca");
    rlinkd::cert::generate(&other_ca, &["b".to_string()]).unwrap();
    // Node b presents a certificate for "b" from another CA (and trusts that CA: `rlinkd run`
    // refuses to start with a certificate its own `quic.ca` did not issue).
    let foreign = cert_dir(&env, "b-foreign", "b", &other_ca, "b", &other_ca);

    let router = EchoRouter::start(&env.unix("router.sock"), RouterOptions::default()).unwrap();
    let (mut a, mut b) = pair(FAST_QUIC);
    let ep = env.unix("a.sock");
    a.links.push(("b".into(), ep.clone(), "echo".into()));
    b.routes.push(("echo".into(), router.local_addr().clone()));
    let mut node_b = env.start_with_certs(&b, &foreign);
    let mut node_a = env.start(&a);

    // Node a refuses b's certificate during the TLS handshake and says so.
    // (A first dial that races b's start fails with ICMP port unreachable instead.)
    assert!(
        wait_until(CONNECT_WAIT, || find_line(
            &node_a,
            &["cannot reach peer", "peer=b", "unknown_ca"]
        )
        .is_some()),
        "node a's log does not say who and why:\n{}",
        node_a.log_text()
    );
    // Anyone can make a handshake fail, so node b summarises failures (at most a line a second)
    // and names the last one.
    expect_log(
        &node_b,
        "incoming handshakes refused in the last",
        CONNECT_WAIT,
    );
    let line = find_line(&node_b, &["incoming handshakes refused in the last"]).unwrap();
    assert!(
        line.contains("unknown_ca") && line.contains("last from 127.0.0.1:"),
        "node b's log does not say why: {line}"
    );
    assert_client_closed(&ep);
    assert_eq!(count_lines(&node_a, &["peer connected"]), 0);
    assert_eq!(count_lines(&node_b, &["peer connected"]), 0);
    assert_eq!(router.stats().connections, 0);
    assert!(node_a.is_running() && node_b.is_running());

    // With its own certificate back, node b is accepted; node a has kept redialing.
    node_b.stop();
    let mut node_b = env.start(&b);
    expect_connected(&node_a, &node_b);
    link_works_within(&ep, Duration::from_secs(15)).unwrap();
    assert!(node_a.is_running() && node_b.is_running());
}

#[test]
fn certificate_naming_another_node_is_refused() {
    let env = Env::new(&["a", "b", "c"]);
    let router = EchoRouter::start(&env.unix("router.sock"), RouterOptions::default()).unwrap();

    // 1. Node c (right CA, wrong name) runs at b's address: a dialed "b".
    let (mut a, mut b) = pair(FAST_QUIC);
    let ep = env.unix("a.sock");
    a.links.push(("b".into(), ep.clone(), "echo".into()));
    b.routes.push(("echo".into(), router.local_addr().clone()));
    let mut node_b = env.start(&as_node(&b, "c"));
    let mut node_a = env.start(&a);
    // The first dial may race b's start and fail with ICMP port unreachable; the TLS refusal
    // follows on the next attempt.
    assert!(
        wait_until(CONNECT_WAIT, || find_line(
            &node_a,
            &["cannot reach peer", "peer=b", "TLS alert"]
        )
        .is_some()),
        "node a's log does not say who and why:\n{}",
        node_a.log_text()
    );
    assert_client_closed(&ep);
    assert_eq!(count_lines(&node_a, &["peer connected"]), 0);
    assert_eq!(count_lines(&node_b, &["peer connected"]), 0);
    assert_eq!(router.stats().connections, 0);
    assert!(node_a.is_running() && node_b.is_running());
    node_a.stop();
    node_b.stop();

    // 2. Node c dials b in a's place: b knows no peer "c" and refuses it.
    let (mut a, mut b) = pair(FAST_QUIC);
    a.links.push(("b".into(), ep.clone(), "echo".into()));
    b.routes.push(("echo".into(), router.local_addr().clone()));
    let mut node_b = env.start(&b);
    let mut node_a = env.start(&as_node(&a, "c"));
    expect_log(&node_b, "refused peer", CONNECT_WAIT);
    let line = find_line(&node_b, &["refused peer"]).unwrap();
    assert!(
        line.contains("\"c\"") && line.contains("none of which is a configured peer"),
        "node b's log does not say who and why: {line}"
    );
    // Node a learns why from b's CONNECTION_CLOSE (whose reason, being the peer's text, is
    // logged quoted and escaped).
    let why = "certificate does not name a configured peer";
    expect_log(&node_a, why, CONNECT_WAIT);
    let line = find_line(&node_a, &[why]).unwrap();
    assert!(
        line.contains("peer=b") && line.contains(r#"[\"c\"]"#),
        "node a's log does not say who and why: {line}"
    );
    assert_client_closed(&ep);
    assert_eq!(count_lines(&node_b, &["peer connected"]), 0);
    // (That no stream of the refused connection reaches b's router is checked by
    // `refused_peer_streams_never_reach_a_route`.)
    assert!(node_a.is_running() && node_b.is_running());
}

#[test]
fn refused_dialer_backs_off() {
    let env = Env::new(&["a", "b", "c"]);
    let (a, b) = pair(&[
        "connect_timeout = \"1s\"",
        "redial_min = \"100ms\"",
        "redial_max = \"2s\"",
    ]);
    let mut node_b = env.start(&b);
    let mut node_a = env.start(&as_node(&a, "c"));
    expect_log(&node_b, "refused peer", CONNECT_WAIT);
    std::thread::sleep(Duration::from_secs(5));
    // 100 ms doubling up to 2 s allows about 8 attempts in 5 s; without backoff there are ~50.
    let attempts = count_lines(&node_b, &["refused peer"]);
    assert!(
        attempts <= 20,
        "node a redialed {attempts} times in about 5 s although node b refuses it"
    );
    // Every attempt is explained on the dialer's side.
    assert!(find_line(
        &node_a,
        &["peer=b", "certificate does not name a configured peer"]
    )
    .is_some());
    assert!(node_a.is_running() && node_b.is_running());
}

#[test]
fn refused_peer_streams_never_reach_a_route() {
    let env = Env::new(&["a", "b", "c"]);
    let router = EchoRouter::start(&env.unix("router.sock"), RouterOptions::default()).unwrap();
    // Node c dials b in a's place; node b has no peer "c".
    let (mut a, mut b) = pair(&["connect_timeout = \"5s\""]);
    let ep = env.unix("a.sock");
    a.links.push(("b".into(), ep.clone(), "echo".into()));
    b.routes.push(("echo".into(), router.local_addr().clone()));
    let mut node_a = env.start(&as_node(&a, "c"));
    expect_log(&node_a, "node listening", CONNECT_WAIT);
    // Clients wait at node a (handshake and a first message sent) before b is up, so their
    // streams leave with a's first flight after the TLS handshake.
    let clients: Vec<_> = (0..10)
        .map(|i| {
            let ep = ep.clone();
            std::thread::spawn(move || {
                let conn = RawConn::connect(&ep);
                let mut hello = vec![0x7f, 0xf3, 0, 0];
                hello.extend(frame(&pattern(100, i)));
                conn.write(&hello).ok();
                conn.read_until_closed(Duration::from_secs(15))
                    .map(|(bytes, _)| bytes.len())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut node_b = env.start(&b);
    expect_log(&node_b, "refused peer", CONNECT_WAIT);
    for c in clients {
        let got = c.join().unwrap().expect("client closed");
        assert_eq!(
            got, 0,
            "a client of a refused node got a reply from b's router"
        );
    }
    let s = router.stats();
    assert_eq!(
        (s.connections, s.bytes),
        (0, 0),
        "b's router got connections/bytes from a node b refused"
    );
    assert_eq!(
        count_lines(&node_b, &["link in"]),
        0,
        "b relayed a link of a refused peer"
    );
    assert!(node_a.is_running() && node_b.is_running());
}

/// A QUIC v1 Initial packet of `len` bytes whose header parses (connection IDs, empty token,
/// a length that matches) but whose protected payload is random: it cannot be decrypted.
fn well_formed_initial(len: usize, seed: u64) -> Vec<u8> {
    let rnd = pattern(len, seed);
    let mut d = vec![0xc3]; // long header, Initial, 4-byte packet number
    d.extend_from_slice(&1u32.to_be_bytes());
    d.push(8);
    d.extend_from_slice(&rnd[..8]); // DCID
    d.push(8);
    d.extend_from_slice(&rnd[8..16]); // SCID
    d.push(0); // token length
    let rest = len - d.len() - 2;
    d.extend_from_slice(&(0x4000u16 | rest as u16).to_be_bytes()); // 2-byte varint length
    d.extend_from_slice(&rnd[16..16 + rest]);
    d
}

/// `n` datagrams of assorted junk: empty, tiny, short-header-like, and 1200+ byte ones shaped
/// like QUIC v1 long-header (Initial) packets with random connection IDs and contents.
fn junk(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let seed = i as u64 + 1000;
            match i % 8 {
                0 => Vec::new(),
                1 => pattern(1 + i % 40, seed),
                2 => pattern(100 + i % 1100, seed),
                3 => {
                    let mut d = pattern(1500 + i % 2000, seed);
                    d[0] &= 0x7f; // short header
                    d[0] |= 0x40;
                    d
                }
                4 | 5 => well_formed_initial(1200 + (i * 37) % 300, seed),
                _ => {
                    let mut d = pattern(1200 + (i * 37) % 300, seed);
                    d[0] = 0xc0 | (d[0] & 0x3f); // long header, type bits random
                    if i % 2 == 0 {
                        d[0] &= 0xcf; // Initial
                    }
                    d[1..5].copy_from_slice(&1u32.to_be_bytes()); // QUIC v1
                    d[5] = (8 + i % 13) as u8; // DCID length 8..=20
                    d
                }
            }
        })
        .collect()
}

#[test]
fn junk_datagrams_harm_nothing() {
    let EchoPair {
        env,
        router: _router,
        a,
        b,
        ep,
    } = echo_pair(FAST_QUIC);
    let quic_b = format!("127.0.0.1:{}", b.quic_port);
    let quic_a = format!("127.0.0.1:{}", a.quic_port);
    let mut node_b = env.start(&b);
    let mut node_a = env.start(&a);
    expect_connected(&node_a, &node_b);
    let mut c = client(&ep, hs(15));
    echo_on(&mut c, &[pattern(100, 1)]).unwrap();

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (i, d) in junk(2000).iter().enumerate() {
        // Mostly at b, some at a. A full socket buffer only drops junk: ignore send errors.
        let to = if i % 4 == 3 { &quic_a } else { &quic_b };
        sock.send_to(d, to).ok();
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    // The open link and new links still work; both nodes are up.
    echo_on(&mut c, &[pattern(100, 2), pattern(200_000, 3)]).unwrap();
    assert_link_works(&ep);
    assert!(node_a.is_running() && node_b.is_running());
    assert_eq!(count_lines(&node_a, &["peer connection lost"]), 0);
    assert_eq!(count_lines(&node_b, &["peer connection lost"]), 0);

    // And a new connection is still accepted: restart the dialer.
    node_a.kill();
    node_a.start_again().unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || count_lines(
            &node_b,
            &["peer connected"]
        ) >= 2),
        "node b did not accept a new connection after the junk"
    );
    link_works_within(&ep, Duration::from_secs(15)).unwrap();
    assert!(node_a.is_running() && node_b.is_running());
}

#[test]
fn a_second_process_with_the_same_identity_never_displaces_the_live_one() {
    let env = Env::new(&["a", "b"]);
    let router = EchoRouter::start(&env.unix("router.sock"), RouterOptions::default()).unwrap();
    let quic = ["redial_min = \"100ms\"", "redial_max = \"500ms\""];
    let (mut a, mut b) = pair(&quic);
    let ep = env.unix("a.sock");
    a.links.push(("b".into(), ep.clone(), "echo".into()));
    b.routes.push(("echo".into(), router.local_addr().clone()));
    let mut node_b = env.start(&b);
    let mut node_a = env.start(&a);
    expect_connected(&node_a, &node_b);
    let mut c = client(&ep, hs(15));
    echo_on(&mut c, &[pattern(100, 0)]).unwrap();

    // A second process named "a", with a's (valid) certificate, on another port, dials b too.
    let mut impostor_plan = NodePlan::new("a", free_udp_port().unwrap());
    impostor_plan.peers.push(("b".into(), Some(b.quic_port)));
    impostor_plan.quic_extra = quic.iter().map(|s| s.to_string()).collect();
    let impostor_dir = env.path("impostor");
    std::fs::create_dir_all(&impostor_dir).unwrap();
    let mut impostor = NodeProcess::start(
        &exe(),
        &impostor_dir,
        &env.certs,
        &with_test_io(&impostor_plan),
    )
    .expect("start the impostor");

    // For 10 s the real a's link keeps echoing, and its connection is never dropped.
    let until = Instant::now() + Duration::from_secs(10);
    let mut i = 1;
    while Instant::now() < until {
        if let Err(e) = echo_on(&mut c, &[pattern(1000, i)]) {
            panic!(
                "the real a's link broke after {i} echoes: {e}\nimpostor log:\n{}",
                impostor.log_text()
            );
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(impostor.is_running());
    let refused = format!(
        "refused a second connection for peer \"a\" from 127.0.0.1:{}",
        impostor_plan.quic_port
    );
    let connected = format!("is connected from 127.0.0.1:{}", a.quic_port);
    let n = count_lines(&node_b, &[&refused, &connected]);
    assert!(
        n >= 3,
        "node b refused the impostor {n} times (each refusal names both addresses)\nimpostor log:\n{}",
        impostor.log_text()
    );
    // Every attempt of the impostor was refused: it never got further than its own handshake.
    let attempts = count_lines(&impostor, &["peer connected"]);
    assert!(
        attempts.abs_diff(n) <= node_shards(),
        "impostor connected {attempts} times, b refused {n}"
    );
    assert!(impostor.log_text().contains("duplicate identity"));
    // One connection per shard, none replaced.
    assert_eq!(count_lines(&node_b, &["peer connected"]), node_shards());
    assert_eq!(count_lines(&node_b, &["superseded"]), 0);
    assert_eq!(count_lines(&node_a, &["peer connection lost"]), 0);
    assert_eq!(router.stats().connections, 1);
    impostor.kill();
    assert!(node_a.is_running() && node_b.is_running());
}
