//! Things going away: routes that do not exist or do not answer, a peer that is not there yet,
//! a peer killed and restarted (either side), and quiet links that must stay up.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rlinkd::endpoints::{EchoRouter, RawSocketClient, RouterOptions};

#[test]
fn unknown_and_unreachable_routes_close_the_client_promptly() {
    let env = Env::new(&["a", "b"]);
    let router = EchoRouter::start(&env.unix("router.sock"), RouterOptions::default()).unwrap();
    let (mut a, mut b) = pair(&[]);
    let good = env.unix("a-echo.sock");
    let cases = [
        ("nope", env.unix("a-nope.sock"), "no such route"),
        ("dead-unix", env.unix("a-dead-unix.sock"), "unreachable"),
        ("dead-tcp", env.unix("a-dead-tcp.sock"), "unreachable"),
    ];
    a.links.push(("b".into(), good.clone(), "echo".into()));
    for (route, ep, _) in &cases {
        a.links.push(("b".into(), ep.clone(), route.to_string()));
    }
    b.routes.push(("echo".into(), router.local_addr().clone()));
    // Nobody listens on this Unix path or on this TCP port.
    b.routes.push(("dead-unix".into(), env.unix("nobody.sock")));
    b.routes.push(("dead-tcp".into(), free_tcp()));
    let mut node_b = env.start(&b);
    let mut node_a = env.start(&a);
    expect_connected(&node_a, &node_b);

    for (route, ep, why) in &cases {
        let started = Instant::now();
        match RawSocketClient::connect(ep, hs(15), Duration::from_secs(20)) {
            Ok(_) => panic!("route {route}: the client got a handshake reply"),
            Err(e) => assert!(is_close(&e), "route {route}: expected a close, got {e}"),
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "route {route}: closed only after {took:?}"
        );
        // Node b says which route and why; node a says why its link ended.
        let needle = format!("route={route}");
        // A route name the peer sent that matches no route is logged quoted and escaped.
        let logged_by_b = if *why == "no such route" {
            format!("route=\"{route}\"")
        } else {
            needle.clone()
        };
        assert!(
            wait_until(Duration::from_secs(5), || find_line(
                &node_b,
                &[&logged_by_b, why]
            )
            .is_some()),
            "node b did not log {why:?} for route {route}"
        );
        assert!(
            wait_until(Duration::from_secs(5), || {
                find_line(&node_a, &["link out", &needle, "stream reset by peer"]).is_some()
            }),
            "node a did not log why the link to route {route} ended"
        );
    }
    assert!(find_line(&node_a, &["route=nope", "UnknownRoute"]).is_some());
    assert!(find_line(&node_a, &["route=dead-unix", "RouteUnreachable"]).is_some());
    assert!(find_line(&node_a, &["route=dead-tcp", "RouteUnreachable"]).is_some());

    assert_link_works(&good);
    assert!(node_a.is_running() && node_b.is_running());
}

#[test]
fn peer_not_running_closes_clients_after_connect_timeout_then_links_work_once_it_starts() {
    let EchoPair {
        env,
        router: _router,
        a,
        b,
        ep,
    } = echo_pair(FAST_QUIC);
    let mut node_a = env.start(&a);
    expect_log(&node_a, "node listening", CONNECT_WAIT);

    // connect_timeout = 1s: the client's link waits that long for the peer, then is closed.
    for _ in 0..2 {
        let started = Instant::now();
        match RawSocketClient::connect(&ep, hs(15), Duration::from_secs(20)) {
            Ok(_) => panic!("a handshake reply came from a peer that is not running"),
            Err(e) => assert!(is_close(&e), "expected a close, got {e}"),
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(10), "closed only after {took:?}");
    }
    expect_log(
        &node_a,
        "peer b not reachable within",
        Duration::from_secs(5),
    );
    expect_log(&node_a, "cannot reach peer", Duration::from_secs(5));
    assert!(node_a.is_running());

    // Node a keeps redialing (redial_max = 500ms); once b is up, links work.
    let mut node_b = env.start(&b);
    expect_connected(&node_a, &node_b);
    link_works_within(&ep, Duration::from_secs(15)).unwrap();
    assert!(node_a.is_running() && node_b.is_running());
}

/// SIGKILLs node b (the acceptor) under an open link: the client at node a must be closed
/// within 10 s, node a must log a line with every one of `lost_needles`, and after b restarts new
/// links must work.
fn killed_acceptor_scenario(quic: &[&str], lost_needles: &[&str]) {
    let EchoPair {
        env,
        router: _router,
        a,
        b,
        ep,
    } = echo_pair(quic);
    let mut node_b = env.start(&b);
    let mut node_a = env.start(&a);
    expect_connected(&node_a, &node_b);

    let mut c = client(&ep, hs(15));
    echo_on(&mut c, &[pattern(1000, 1), pattern(100_000, 2)]).unwrap();

    // SIGKILL: node b sends no close.
    node_b.kill();
    let took = expect_client_closed(&mut c, Duration::from_secs(10))
        .expect("client at node a closed after its peer died");
    assert!(took < Duration::from_secs(10));
    assert!(
        wait_until(Duration::from_secs(5), || find_line(&node_a, lost_needles)
            .is_some()),
        "node a did not log {lost_needles:?}"
    );
    assert!(node_a.is_running());

    node_b.start_again().unwrap();
    link_works_within(&ep, Duration::from_secs(15)).unwrap();
    assert!(node_a.is_running() && node_b.is_running());
}

#[test]
fn killed_acceptor_closes_links_within_idle_timeout_and_links_return_after_restart() {
    // Node a notices by the idle timeout (2 s) or, sooner, by ICMP.
    killed_acceptor_scenario(FAST_QUIC, &["peer connection lost"]);
}

#[test]
fn a_dead_peer_is_noticed_by_icmp_long_before_the_idle_timeout() {
    // A 60 s idle timeout: only the ICMP "port unreachable" that answers a keepalive to the dead
    // peer can end the connection within the 10 s the scenario allows.
    killed_acceptor_scenario(
        &[
            "idle_timeout = \"60s\"",
            "keepalive_interval = \"500ms\"",
            "redial_min = \"100ms\"",
            "redial_max = \"500ms\"",
        ],
        &["peer connection lost", "ICMP port unreachable"],
    );
}

#[test]
fn killed_dialer_is_replaced_on_the_acceptor_and_links_return() {
    let env = Env::new(&["a", "b"]);
    let router = EchoRouter::start(&env.unix("router.sock"), RouterOptions::default()).unwrap();
    // A long idle timeout: node b can only drop the dead connection because the new one from
    // the same peer replaces it, not because it times out.
    let (mut a, mut b) = pair(&[
        "idle_timeout = \"60s\"",
        "keepalive_interval = \"1s\"",
        "redial_min = \"100ms\"",
        "redial_max = \"500ms\"",
    ]);
    let ep = env.unix("a.sock");
    a.links.push(("b".into(), ep.clone(), "echo".into()));
    b.routes.push(("echo".into(), router.local_addr().clone()));
    let mut node_b = env.start(&b);
    let mut node_a = env.start(&a);
    expect_connected(&node_a, &node_b);

    let mut c = client(&ep, hs(15));
    echo_on(&mut c, &[pattern(1000, 1)]).unwrap();
    assert_eq!(router.stats().active, 1);

    node_a.kill();
    expect_client_closed(&mut c, Duration::from_secs(5)).expect("client of a killed node");
    // (With shards, a's other shards may not have connected before the kill.)
    let before = count_lines(&node_b, &["peer connected"]);
    node_a.start_again().unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || count_lines(
            &node_b,
            &["peer connected"]
        ) > before),
        "node b did not accept the restarted node a"
    );
    // The old connections go because the new ones replace them, or earlier, when a packet to
    // the dead process drew an ICMP port unreachable (the kill and the restart race with b's
    // keepalives); never by the 60 s idle timeout.
    assert!(
        wait_until(Duration::from_secs(5), || {
            find_line(
                &node_b,
                &["closing an older connection replaced by the new one"],
            )
            .is_some()
                || find_line(&node_b, &["peer connection lost", "unreachable"]).is_some()
        }),
        "node b kept the dead connection"
    );
    // The router behind b sees the old link end (so a real router would reconnect it).
    assert!(
        wait_until(Duration::from_secs(10), || router.stats().active == 0),
        "the router's connection of the dead link is still open"
    );
    link_works_within(&ep, Duration::from_secs(15)).unwrap();
    assert!(node_a.is_running() && node_b.is_running());
}

#[test]
fn idle_links_stay_up_through_keepalives() {
    let EchoPair {
        env,
        router,
        a,
        b,
        ep,
    } = echo_pair(FAST_QUIC);
    let mut node_b = env.start(&b);
    let mut node_a = env.start(&a);
    expect_connected(&node_a, &node_b);

    let mut c = client(&ep, hs(15));
    echo_on(&mut c, &[pattern(100, 1)]).unwrap();
    // Three idle timeouts without a RawSocket byte.
    thread::sleep(Duration::from_secs(6));
    echo_on(&mut c, &[pattern(100, 2), pattern(50_000, 3)]).unwrap();
    for node in [&node_a, &node_b] {
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
    assert_eq!(router.stats().connections, 1);
    assert!(node_a.is_running() && node_b.is_running());
}

#[test]
fn a_stopped_peer_closes_links_at_once_and_cleans_up() {
    let env = Env::new(&["a", "b"]);
    let router = EchoRouter::start(&env.unix("router.sock"), RouterOptions::default()).unwrap();
    // A long idle timeout: only node b's CONNECTION_CLOSE can end the links quickly.
    let (mut a, mut b) = pair(&["idle_timeout = \"60s\"", "keepalive_interval = \"1s\""]);
    let ep_a = env.unix("a.sock");
    let ep_b = env.unix("b.sock");
    a.links.push(("b".into(), ep_a.clone(), "echo".into()));
    b.links.push(("a".into(), ep_b.clone(), "echo".into()));
    a.routes.push(("echo".into(), router.local_addr().clone()));
    b.routes.push(("echo".into(), router.local_addr().clone()));
    let mut node_b = env.start(&b);
    let mut node_a = env.start(&a);
    expect_connected(&node_a, &node_b);

    let mut at_a = client(&ep_a, hs(15));
    let mut at_b = client(&ep_b, hs(15));
    echo_on(&mut at_a, &[pattern(100, 1)]).unwrap();
    echo_on(&mut at_b, &[pattern(100, 2)]).unwrap();
    assert_eq!(router.stats().active, 2);

    // SIGTERM node b: it drains. Both links are idle, so each ends at once with a FIN: its own
    // client, node a's client and both router legs see the end within seconds, and b exits as
    // soon as the clients (like Crossbar) close their side.
    node_b.signal(libc::SIGTERM);
    expect_client_closed(&mut at_a, Duration::from_secs(10)).expect("client at a");
    expect_client_closed(&mut at_b, Duration::from_secs(10)).expect("client at b");
    drop((at_a, at_b));
    let status = node_b.wait_exit(Duration::from_secs(9));
    assert!(
        status.is_some_and(|s| s.success()),
        "node b did not exit cleanly within its drain_timeout: {status:?}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || router.stats().active == 0),
        "router connections still open: {}",
        router.stats().active
    );
    expect_log(&node_a, "closed by peer: shutdown", Duration::from_secs(5));
    if let rlinkd::addr::LocalAddr::Unix(p) = &ep_b {
        assert!(!p.exists(), "node b left its endpoint socket file behind");
    }
    assert!(node_a.is_running());
    // Node a keeps redialing; b comes back with the same configuration.
    let mut node_b = env.start(&b);
    link_works_within(&ep_a, Duration::from_secs(20)).unwrap();
    link_works_within(&ep_b, Duration::from_secs(20)).unwrap();
    assert!(node_a.is_running() && node_b.is_running());
}
