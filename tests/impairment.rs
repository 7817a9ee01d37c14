//! Two real nodes with a lossy path between them: node a dials node b through a user-space UDP
//! relay (tests/common/impair.rs) that drops, reorders, duplicates, corrupts, delays or black-
//! holes datagrams. What users rely on: RawSocket messages arrive complete and in order whatever
//! the path does short of dying; a path that dies for less than the idle timeout costs no link;
//! one that dies for longer closes the links cleanly, and links work again once it returns.
//!
//! Every wait has a deadline; the file runs in well under 2 minutes on a loaded 2-core box.

mod common;
#[path = "common/impair.rs"]
mod impair;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use impair::{ImpairRelay, Impairment};
use rlinkd::cluster::{NodePlan, NodeProcess};

/// Short timeouts so the black-hole cases take seconds. The idle timeout is 4 s (not
/// FAST_QUIC's 2 s) so that "shorter than the idle timeout" leaves room for the retransmission
/// backoff on a loaded box.
const IDLE: Duration = Duration::from_secs(4);
const QUIC: &[&str] = &[
    "idle_timeout = \"4s\"",
    "keepalive_interval = \"500ms\"",
    "connect_timeout = \"2s\"",
    "redial_min = \"100ms\"",
    "redial_max = \"500ms\"",
];

/// An echo pair whose node a reaches node b through an impairment relay.
struct LossyPair {
    pair: EchoPair,
    relay: ImpairRelay,
    node_a: NodeProcess,
    node_b: NodeProcess,
}

fn lossy_pair(settings: Impairment, seed: u64) -> LossyPair {
    let mut pair = echo_pair(QUIC);
    for plan in [&mut pair.a, &mut pair.b] {
        // Stats lines every second: the tests read the open link count from them.
        plan.top_extra.push("stats_interval = \"1s\"".into());
    }
    let b_addr: SocketAddr = format!("127.0.0.1:{}", pair.b.quic_port).parse().unwrap();
    let relay = ImpairRelay::start(b_addr, settings, seed).expect("start relay");
    route_through(&mut pair.a, relay.addr());
    let node_b = pair.env.start(&pair.b);
    let node_a = pair.env.start(&pair.a);
    expect_connected(&node_a, &node_b);
    LossyPair {
        pair,
        relay,
        node_a,
        node_b,
    }
}

/// Points node a's peer "b" at the relay.
fn route_through(a: &mut NodePlan, relay: SocketAddr) {
    for (name, port) in &mut a.peers {
        if name == "b" {
            *port = Some(relay.port());
        }
    }
}

/// Payload sizes of link `i`: every link sends empty, tiny, one-datagram and multi-datagram
/// messages; two links also 1 MiB and a few others 64 or 300 KiB, so that together the sizes
/// span 0 B to 1 MiB while the run stays about 4 MB each way: at 5 % loss a QUIC connection on
/// loopback moves well under 1 MB/s (loss-based congestion control), so more data would only
/// make the test slow.
fn sizes(i: usize) -> Vec<usize> {
    let mut v = vec![0, 1, 17, 1_200, 1_500, 4_096 + i, 0, 5_000 + 7 * i];
    match i % 50 {
        0 => v.push(1 << 20),
        25 => v.push(300_000),
        7 | 17 | 37 => v.push(65_536),
        _ => {}
    }
    v.push(0);
    v
}

#[test]
fn hundred_links_deliver_everything_in_order_through_loss_reordering_and_corruption() {
    let settings = Impairment {
        drop: 0.05,
        burst: 0.005,
        burst_len: 4,
        reorder: 0.05,
        reorder_by: Duration::from_millis(3),
        duplicate: 0.01,
        corrupt: 0.005,
        delay: Duration::from_micros(200),
        jitter: Duration::from_micros(300),
    };
    // The connection comes up on a clean path; the impairment starts under it.
    let lp = lossy_pair(Impairment::default(), 0x5eed_0001);
    lp.relay.set(settings);
    let ep = lp.pair.ep.clone();
    let started = Instant::now();
    let deadline = Duration::from_secs(60);

    // Each link: one thread writes all its messages, another reads and checks the echoes, so
    // many messages are in flight at once and a reordering that reached the router would show.
    let results: Vec<Result<usize, String>> = thread::scope(|s| {
        let handles: Vec<_> = (0..100)
            .map(|i| {
                let ep = ep.clone();
                s.spawn(move || -> Result<usize, String> {
                    let c = match rlinkd::endpoints::RawSocketClient::connect(&ep, hs(15), IO_WAIT)
                    {
                        Ok((c, _)) => c,
                        Err(e) => return Err(format!("link {i}: connect: {e}")),
                    };
                    let payloads: Vec<Vec<u8>> = sizes(i)
                        .into_iter()
                        .enumerate()
                        .map(|(k, n)| pattern(n, (i * 1000 + k) as u64))
                        .collect();
                    let (mut tx, mut rx) = c.split();
                    let expected = payloads.clone();
                    let writer = thread::spawn(move || {
                        for p in &payloads {
                            tx.send(p).map_err(|e| format!("send {} B: {e}", p.len()))?;
                        }
                        Ok::<_, String>(tx)
                    });
                    rx.set_read_timeout(Some(Duration::from_millis(500))).ok();
                    let mut bytes = 0;
                    for (k, want) in expected.iter().enumerate() {
                        let got = loop {
                            match rx.recv() {
                                Ok(m) => break m,
                                Err(rlinkd::endpoints::ClientError::Timeout)
                                    if started.elapsed() < deadline => {}
                                Err(e) => {
                                    return Err(format!(
                                        "link {i}: message {k} ({} B): {e}",
                                        want.len()
                                    ))
                                }
                            }
                        };
                        if got != *want {
                            return Err(format!(
                                "link {i}: message {k} differs: want {} B, got {} B",
                                want.len(),
                                got.len()
                            ));
                        }
                        bytes += got.len();
                    }
                    match writer.join() {
                        Ok(Ok(_tx)) => Ok(bytes),
                        Ok(Err(e)) => Err(format!("link {i}: {e}")),
                        Err(_) => Err(format!("link {i}: writer panicked")),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("link thread panicked".into()))
            })
            .collect()
    });
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let stats = lp.relay.stats();
    assert!(
        failures.is_empty(),
        "{} of 100 links failed after {:.1?} (relay: {stats:?}); first: {:?}",
        failures.len(),
        started.elapsed(),
        &failures[..failures.len().min(5)]
    );
    let total: usize = results.iter().filter_map(|r| r.as_ref().ok()).sum();
    let want: usize = (0..100).flat_map(sizes).sum();
    assert_eq!(total, want);
    // The path really was impaired, in every way asked for.
    assert!(stats.dropped > 0 && stats.burst_dropped > 0, "{stats:?}");
    assert!(
        stats.reordered > 0 && stats.duplicated > 0 && stats.corrupted > 0,
        "{stats:?}"
    );
    eprintln!(
        "100 links, {:.1} MB echoed in {:.1?}; relay: {stats:?}",
        total as f64 / 1e6,
        started.elapsed()
    );
    for node in [&lp.node_a, &lp.node_b] {
        assert_eq!(
            count_lines(node, &["peer connection lost"]),
            0,
            "node {}",
            node.name
        );
    }
}

#[test]
fn a_black_hole_shorter_than_the_idle_timeout_keeps_the_links() {
    let mut lp = lossy_pair(Impairment::default(), 2);
    let ep = lp.pair.ep.clone();
    let mut clients: Vec<_> = (0..10).map(|_| client(&ep, hs(15))).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        echo_on(c, &[pattern(100, i as u64)]).unwrap();
    }

    let hole = IDLE * 2 / 5; // 1.6 s
    lp.relay.black_hole(hole);
    // Messages sent into the hole are held by QUIC and delivered once the path returns.
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&pattern(30_000, 100 + i as u64)).unwrap();
    }
    thread::sleep(hole);
    for (i, c) in clients.iter_mut().enumerate() {
        let got = c
            .recv()
            .unwrap_or_else(|e| panic!("link {i}: echo sent into the hole: {e}"));
        assert!(got == pattern(30_000, 100 + i as u64), "link {i}");
        echo_on(c, &[pattern(70_000, 200 + i as u64)]).unwrap();
    }
    assert!(lp.relay.stats().black_holed > 0);
    for node in [&lp.node_a, &lp.node_b] {
        assert_eq!(
            count_lines(node, &["peer connection lost"]),
            0,
            "node {}",
            node.name
        );
        assert_eq!(
            count_lines(node, &["peer connected"]),
            node_shards(),
            "node {}: one connection per shard",
            node.name
        );
    }
    assert_eq!(lp.pair.router.stats().connections, 10);
    assert!(lp.node_a.is_running() && lp.node_b.is_running());
}

#[test]
fn a_black_hole_longer_than_the_idle_timeout_closes_the_links_and_they_return() {
    let mut lp = lossy_pair(Impairment::default(), 3);
    let ep = lp.pair.ep.clone();
    let mut clients: Vec<_> = (0..10).map(|_| client(&ep, hs(15))).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        echo_on(c, &[pattern(1_000, i as u64)]).unwrap();
    }

    let hole = IDLE + Duration::from_secs(3);
    let started = Instant::now();
    lp.relay.black_hole(hole);
    // The links close once the idle timeout passes, while the path is still dead.
    for (i, c) in clients.iter_mut().enumerate() {
        let left = (IDLE + Duration::from_secs(3)).saturating_sub(started.elapsed());
        expect_client_closed(c, left.max(Duration::from_millis(100)))
            .unwrap_or_else(|e| panic!("link {i} at node a: {e}"));
    }
    for node in [&lp.node_a, &lp.node_b] {
        assert!(
            wait_until(Duration::from_secs(3), || count_lines(
                node,
                &["peer connection lost"]
            ) > 0),
            "node {} did not log the lost connection",
            node.name
        );
    }
    // Every link is closed on both nodes, and node b closed its connections to the router.
    assert!(
        wait_until(Duration::from_secs(5), || lp.pair.router.stats().active
            == 0),
        "router still has {} connections from node b",
        lp.pair.router.stats().active
    );
    for node in [&lp.node_a, &lp.node_b] {
        assert!(
            wait_until(Duration::from_secs(5), || links_open(node) == Some(0)),
            "node {} still reports open links: {:?}",
            node.name,
            links_open(node)
        );
    }

    // The path returns: node a redials and new links work.
    let rest = hole.saturating_sub(started.elapsed());
    thread::sleep(rest);
    link_works_within(&ep, Duration::from_secs(15)).unwrap();
    let mut more: Vec<_> = (0..10).map(|_| client(&ep, hs(15))).collect();
    for (i, c) in more.iter_mut().enumerate() {
        echo_on(c, &[pattern(0, i as u64), pattern(200_000, 50 + i as u64)]).unwrap();
    }
    assert!(lp.relay.stats().black_holed > 0);
    assert!(lp.node_a.is_running() && lp.node_b.is_running());
}
