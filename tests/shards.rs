//! Two nodes of two shards each: one QUIC connection per shard pair, every datagram at the shard
//! that owns its connection (in the kernel with the steering program, by hand-over without it),
//! and links spread over the shards and working on each.

mod common;

use common::*;

/// A two-shard pair (with `quic` lines), links through endpoints of both kinds, traffic on
/// each; returns the nodes' hand-over counts after a stats line that follows the traffic.
fn two_shard_pair(quic: &[&str]) -> (u64, u64) {
    let EchoPair {
        env,
        router,
        mut a,
        mut b,
        ep,
    } = echo_pair(&[FAST_QUIC, quic].concat());
    let tcp = free_tcp();
    a.links.push(("b".into(), tcp.clone(), "echo".into()));
    for p in [&mut a, &mut b] {
        p.top_extra.push("shards = 2".into());
    }
    let node_b = env.start(&b);
    // Every shard socket of b is bound (with the steering program) before any shard says it
    // listens. Dialing earlier, a's Initial for shard 1 can meet b's group before b has bound
    // socket 1, and is steered by hash and handed over: a start-up race, not what this checks.
    expect_log(&node_b, "shard listening", CONNECT_WAIT);
    let node_a = env.start(&a);
    for node in [&node_a, &node_b] {
        for shard in 0..2 {
            expect_log(
                node,
                &format!("shard={shard} remote_shard={shard}"),
                CONNECT_WAIT,
            );
        }
    }
    // Unix links go to the shards in turn, TCP links by the kernel's hash: 16 of them land on
    // both shards.
    let mut clients = Vec::new();
    for i in 0..16u64 {
        let addr = if i % 2 == 0 { &ep } else { &tcp };
        let mut c = client(addr, hs(15));
        echo_on(&mut c, &[pattern(70_000, i), pattern(10, i)]).unwrap();
        clients.push(c);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        echo_on(c, &[pattern(5_000, 100 + i as u64)]).unwrap();
    }
    assert_eq!(router.stats().connections, 16);
    for node in [&node_a, &node_b] {
        let carried: Vec<usize> = (0..2)
            .map(|s| count_lines(node, &["peer connected", &format!("shard={s}")]))
            .collect();
        assert_eq!(
            carried,
            vec![1, 1],
            "node {}: one connection per shard",
            node.name
        );
    }
    drop(clients);
    let handed = |node| {
        node_metric(node, "rlinkd_datagrams_handed_over_total", &[]).expect("metrics") as u64
    };
    (handed(&node_a), handed(&node_b))
}

#[test]
fn with_steering_every_datagram_reaches_its_shard_in_the_kernel() {
    let (a, b) = two_shard_pair(&[]);
    assert_eq!((a, b), (0, 0), "datagrams handed between shards");
}

#[test]
fn without_steering_strays_are_handed_to_their_shard_and_links_still_work() {
    // The kernel hashes one 4-tuple (both shards' connections share the ports) to one socket:
    // on each node, the other shard's datagrams all arrive at the wrong socket.
    let (a, b) = two_shard_pair(&["steering = false"]);
    assert!(a > 0 && b > 0, "hand-overs: a {a}, b {b}");
}
