//! The admin endpoint scraped during traffic: readiness follows the peer and the drain, metrics
//! count links, frames and connections per shard as users read them in Prometheus.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn metrics_and_readiness_follow_the_peer_the_links_and_the_drain() {
    let EchoPair {
        env,
        router: _router,
        mut a,
        mut b,
        ep,
    } = echo_pair(FAST_QUIC);
    with_admin(&mut a);
    with_admin(&mut b);
    let shards = node_shards() as f64;

    // a dials b, which is not running yet: a answers but is not ready, and says why.
    let mut node_a = env.start(&a);
    let admin_a = admin_of(&node_a);
    assert!(
        wait_until(Duration::from_secs(10), || http_get(admin_a, "/healthz")
            .is_some_and(|(s, _)| s == 200)),
        "no /healthz"
    );
    let (status, body) = http_get(admin_a, "/readyz").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("\"peers_not_connected\":[\"b (0 of"),
        "{body}"
    );

    let mut node_b = env.start(&b);
    let admin_b = admin_of(&node_b);
    assert!(
        wait_until(CONNECT_WAIT, || http_get(admin_a, "/readyz")
            .is_some_and(|(s, _)| s == 200)),
        "a never became ready: {:?}",
        http_get(admin_a, "/readyz")
    );
    // b dials nobody: ready as soon as it listens.
    assert_eq!(http_get(admin_b, "/readyz").unwrap().0, 200);
    assert_eq!(
        metric(admin_a, "rlinkd_peer_up", &[("peer", "b")]),
        Some(1.0)
    );
    assert_eq!(
        metric(admin_a, "rlinkd_peer_connections", &[("peer", "b")]),
        Some(shards),
        "one connection per shard"
    );
    assert!(metric(admin_a, "rlinkd_peer_rtt_seconds", &[("peer", "b")]).is_some_and(|v| v > 0.0));

    // One link with traffic: counted open on a's endpoint and b's route, frames each way.
    let mut c = client(&ep, hs(15));
    let payloads: Vec<Vec<u8>> = (0..10).map(|i| pattern(1_000, i)).collect();
    echo_on(&mut c, &payloads).unwrap();
    let link = [("kind", "link")];
    assert_eq!(metric(admin_a, "rlinkd_links_open", &link), Some(1.0));
    assert_eq!(
        metric(
            admin_b,
            "rlinkd_links_open",
            &[("kind", "route"), ("endpoint", "echo")]
        ),
        Some(1.0)
    );
    let to_router = [("kind", "link"), ("direction", "to_router")];
    // The client's HELLO-less frames: 10 each way, plus nothing else.
    assert_eq!(
        metric(admin_a, "rlinkd_link_frames_total", &to_router),
        Some(10.0)
    );
    assert!(metric(admin_a, "rlinkd_peer_sent_bytes_total", &[("peer", "b")]).unwrap() > 10_000.0);
    drop(c);
    assert!(
        wait_until(Duration::from_secs(10), || metric(
            admin_a,
            "rlinkd_links_closed_total",
            &[("kind", "link"), ("reason", "clean")]
        ) == Some(1.0)),
        "the closed link is not counted: {:?}",
        http_get(admin_a, "/metrics")
    );
    assert_eq!(metric(admin_a, "rlinkd_links_open", &link), Some(0.0));
    assert_eq!(
        metric(admin_a, "rlinkd_link_frames_total", &to_router),
        Some(10.0)
    );
    assert_eq!(
        metric(admin_a, "rlinkd_links_opened_total", &link),
        Some(1.0)
    );
    assert!(metric(admin_a, "rlinkd_datagrams_sent_total", &[]).unwrap() > 0.0);
    assert_eq!(metric(admin_a, "rlinkd_shards", &[]), Some(shards));
    // System calls by call, per shard: every shard waits for events; the link's local reads and
    // writes and b's route connect are counted where they were made.
    let calls = |admin, call: &str| metric(admin, "rlinkd_syscalls_total", &[("call", call)]);
    for shard in 0..shards as usize {
        let s = shard.to_string();
        let l = [("shard", s.as_str()), ("call", "epoll_wait")];
        assert!(
            metric(admin_a, "rlinkd_syscalls_total", &l).is_some_and(|v| v > 0.0),
            "shard {shard}: no epoll_wait counted"
        );
    }
    assert!(
        calls(admin_a, "local_accept").is_some_and(|v| v > 0.0),
        "a: no local_accept"
    );
    // The QUIC socket's datagrams: sendmsg/recvmsg on mio, io_uring_enter on the ring; the
    // reads and writes of local connections: read(2) and write(2) on mio, requests carried by
    // the ring's enters.
    let count = |call| calls(admin_a, call).unwrap_or(0.0);
    let ring = std::env::var("RLINKD_TEST_IO").is_ok_and(|io| io == "uring");
    if ring {
        assert!(count("io_uring_enter") > 0.0, "a: no io_uring_enter");
        for call in ["local_read", "local_write"] {
            assert_eq!(count(call), 0.0, "a: {call} outside the ring");
        }
    } else {
        assert!(count("local_read") > 0.0, "a: no local_read");
        assert!(count("local_write") > 0.0, "a: no local_write");
        assert!(
            count("udp_sendmsg") > 0.0 && count("udp_recvmsg") > 0.0,
            "a: no UDP calls"
        );
        assert_eq!(count("io_uring_enter"), 0.0);
    }
    assert!(calls(admin_b, "local_connect").is_some_and(|v| v >= 1.0));

    // Copies are counted where they happen (the closed link's stay counted): what a read from
    // its stream was copied out of a packet and out of quiche, what it sent went into packets.
    let relayed = metric(admin_a, "rlinkd_link_bytes_total", &link).unwrap();
    let to_client = metric(
        admin_a,
        "rlinkd_link_bytes_total",
        &[("kind", "link"), ("direction", "to_client")],
    )
    .unwrap();
    let copied =
        |admin, copy| metric(admin, "rlinkd_copied_bytes_total", &[("copy", copy)]).unwrap();
    let read_a = copied(admin_a, "out_of_quiche");
    assert!(
        (to_client..to_client + 64.0).contains(&read_a),
        "a read {read_a} stream bytes for {to_client} relayed to the client"
    );
    assert_eq!(copied(admin_a, "out_of_packets"), read_a);
    assert!(copied(admin_b, "into_packets") >= read_a);
    let all = metric(admin_a, "rlinkd_copied_bytes_total", &[]).unwrap()
        + metric(admin_b, "rlinkd_copied_bytes_total", &[]).unwrap();
    assert!(
        (3.0 * relayed..4.0 * relayed).contains(&all),
        "{all} bytes copied for {relayed} relayed: {:?}",
        http_get(admin_a, "/metrics")
    );

    // A link whose client stops mid-frame keeps b draining (it waits for the frame's end): b
    // says so in /readyz while it still answers.
    let raw = RawConn::connect(&ep);
    raw.write(&hs(15).encode()).unwrap();
    raw.read_exact(4, IO_WAIT).unwrap();
    raw.write(&frame(&pattern(5_000, 9))[..2_000]).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || metric(
            admin_b,
            "rlinkd_links_open",
            &[]
        ) == Some(1.0)),
        "the half-sent link did not reach b"
    );
    node_b.signal(libc::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(5), || http_get(admin_b, "/readyz")
            .is_some_and(
                |(s, body)| s == 503 && body.contains("\"draining\":true")
            )),
        "b's /readyz does not say it drains: {:?}",
        http_get(admin_b, "/readyz")
    );
    assert_eq!(metric(admin_b, "rlinkd_draining", &[]), Some(1.0));
    drop(raw);
    assert!(
        node_b.wait_exit(Duration::from_secs(15)).is_some(),
        "b did not stop"
    );
    node_a.stop();
}

#[test]
fn a_remote_admin_address_is_refused_unless_allowed() {
    let env = Env::new(&["a"]);
    let mut plan = rlinkd::cluster::NodePlan::new("a", rlinkd::cluster::free_udp_port().unwrap());
    plan.peers.push(("b".into(), None));
    plan.top_extra
        .push("admin = { listen = \"0.0.0.0:9464\" }".into());
    let cfg = env.path("a.toml");
    std::fs::write(&cfg, plan.to_toml(&env.certs)).unwrap();
    let (ok, _out, err) = run_cli(
        &["check", "--config", cfg.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert!(!ok);
    assert!(
        err.contains("admin.listen") && err.contains("loopback"),
        "{err}"
    );
}
