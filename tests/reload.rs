//! Reload (SIGHUP) without dropping links: links to what stays keep flowing, new routes, link
//! endpoints and certificates take effect, removed ones close with `Removed` (0x08), and a
//! configuration that cannot be applied is refused with the key named while the one in force
//! keeps working. The node never exits on SIGHUP.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use rlinkd::addr::LocalAddr;
use rlinkd::endpoints::{EchoRouter, RouterOptions};

/// Frames the echoing link carries at least, however fast the test's reloads go (a fast run
/// once stopped it after 9), so that its count says the link kept working across them.
const MIN_ECHOED: u64 = 11;

/// Echoes a small frame on a link every 10 ms until `stop` and at least [`MIN_ECHOED`] frames:
/// (frames echoed, first failure).
fn keep_echoing(
    ep: &LocalAddr,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<(u64, Option<String>)> {
    let mut c = client(ep, hs(15));
    thread::spawn(move || {
        let mut n = 0u64;
        while n < MIN_ECHOED || !stop.load(Ordering::SeqCst) {
            if let Err(e) = echo_on(&mut c, &[pattern(1000, n)]) {
                return (n, Some(e));
            }
            n += 1;
            thread::sleep(Duration::from_millis(10));
        }
        (n, None)
    })
}

#[test]
fn a_reload_adds_and_removes_routes_and_endpoints_while_a_link_keeps_echoing() {
    let env = Env::new(&["a", "b"]);
    let echo = EchoRouter::start(&env.unix("echo.sock"), RouterOptions::default()).unwrap();
    let gone = EchoRouter::start(&env.unix("gone.sock"), RouterOptions::default()).unwrap();
    let fresh = EchoRouter::start(&env.unix("fresh.sock"), RouterOptions::default()).unwrap();
    let (mut a, mut b) = pair(&[]);
    let ep = env.unix("a-echo.sock");
    let ep_gone = env.unix("a-gone.sock");
    a.links.push(("b".into(), ep.clone(), "echo".into()));
    a.links.push(("b".into(), ep_gone.clone(), "gone".into()));
    b.routes.push(("echo".into(), echo.local_addr().clone()));
    b.routes.push(("gone".into(), gone.local_addr().clone()));
    let node_b = env.start(&b);
    let node_a = env.start(&a);
    expect_connected(&node_a, &node_b);

    let stop = Arc::new(AtomicBool::new(false));
    let echoing = keep_echoing(&ep, Arc::clone(&stop));
    let mut doomed = client(&ep_gone, hs(15));
    echo_on(&mut doomed, &[pattern(100, 7)]).expect("the link on route gone works");

    // b: route "gone" goes, route "fresh" comes.
    let mut b2 = b.clone();
    b2.routes.retain(|(r, _)| r != "gone");
    b2.routes.push(("fresh".into(), fresh.local_addr().clone()));
    let line = env.reload(&node_b, &b2, &env.certs);
    assert!(
        line.contains("reloaded: ") && line.contains("routes added [\"fresh\"] removed [\"gone\"]"),
        "{line}"
    );
    expect_client_closed(&mut doomed, IO_WAIT).expect("the link on the removed route closes");
    expect_log(&node_a, "stream reset by peer: Removed (0x08)", IO_WAIT);
    expect_log(
        &node_b,
        "route gone removed from the configuration",
        IO_WAIT,
    );

    // a: the endpoint to "gone" goes, a TCP endpoint to "fresh" comes.
    let ep_fresh = free_tcp();
    let mut a2 = a.clone();
    a2.links.retain(|(_, l, _)| *l != ep_gone);
    a2.links
        .push(("b".into(), ep_fresh.clone(), "fresh".into()));
    let line = env.reload(&node_a, &a2, &env.certs);
    assert!(line.contains("reloaded: "), "{line}");
    assert_link_works(&ep_fresh);
    assert_link_works(&ep);
    if let LocalAddr::Unix(p) = &ep_gone {
        assert!(
            !p.exists(),
            "the removed endpoint's socket file is still there"
        );
    }
    assert!(
        RawConn::connect_fails(&ep_gone),
        "the removed endpoint still accepts"
    );

    stop.store(true, Ordering::SeqCst);
    let (echoed, failure) = echoing.join().unwrap();
    assert_eq!(failure, None, "the link broke across the reloads");
    assert!(echoed >= MIN_ECHOED, "only {echoed} frames echoed");
    assert!(fresh.stats().echoed >= 3, "nothing reached the new route");
    let (mut node_a, mut node_b) = (node_a, node_b);
    assert!(node_a.is_running() && node_b.is_running());
}

#[test]
fn a_reload_that_cannot_be_applied_names_the_key_and_keeps_the_config_in_force() {
    let EchoPair {
        env,
        router: _router,
        a,
        b,
        ep,
    } = echo_pair(&[]);
    let node_b = env.start(&b);
    let mut node_a = env.start(&a);
    expect_connected(&node_a, &node_b);
    let stop = Arc::new(AtomicBool::new(false));
    let echoing = keep_echoing(&ep, Arc::clone(&stop));
    let mut in_force = with_test_env(&a);
    in_force.admin = node_a.admin;
    let good = in_force.to_toml(&env.certs);

    // A key file that is not there.
    let key = env.certs.join("a.key").display().to_string();
    let bad_key = good.replace(&key, "/nonexistent/a.key");
    assert_ne!(bad_key, good);
    let line = env.reload_with_text(&node_a, &bad_key);
    assert!(
        line.contains("reload refused") && line.contains("quic.key"),
        "{line}"
    );
    // A key the file format does not have.
    let line = env.reload_with_text(&node_a, &format!("{good}\n[relay]\nbogus = 1\n"));
    assert!(
        line.contains("reload refused") && line.contains("bogus"),
        "{line}"
    );
    // A change only a restart can make.
    let mut moved = a.clone();
    moved.quic_port = rlinkd::cluster::free_udp_port().unwrap();
    let line = env.reload(&node_a, &moved, &env.certs);
    assert!(
        line.contains("reload refused")
            && line.contains("quic.listen")
            && line.contains("needs a restart"),
        "{line}"
    );
    // The I/O backend is chosen once, at start.
    let other_io = match std::env::var("RLINKD_TEST_IO").as_deref() {
        Ok("mio") => "uring",
        _ => "mio",
    };
    let mut io_changed = a.clone();
    io_changed.top_extra.push(format!("io = {other_io:?}"));
    let line = env.reload(&node_a, &io_changed, &env.certs);
    assert!(
        line.contains("reload refused") && line.contains("io: changing it needs a restart"),
        "{line}"
    );

    assert!(node_a.is_running(), "SIGHUP stopped the node");
    assert_link_works(&ep);
    stop.store(true, Ordering::SeqCst);
    let (_, failure) = echoing.join().unwrap();
    assert_eq!(failure, None, "the link broke across the refused reloads");
    // The file is good again: the next reload applies.
    let line = env.reload_with_text(&node_a, &good);
    assert!(line.contains("reloaded: nothing changed"), "{line}");
}

#[test]
fn a_reloaded_certificate_is_presented_to_new_connections() {
    let EchoPair {
        env,
        router: _router,
        a,
        b,
        ep,
    } = echo_pair(&[]);
    let mut node_b = env.start(&b);
    let node_a = env.start(&a);
    expect_connected(&node_a, &node_b);

    // A new certificate for a from the same CA, in a folder of its own.
    let certs2 = env.path("certs2");
    std::fs::create_dir(&certs2).unwrap();
    for f in ["ca.pem", "ca.key"] {
        std::fs::copy(env.certs.join(f), certs2.join(f)).unwrap();
    }
    rlinkd::cert::generate(&certs2, &["a".to_string()]).unwrap();
    let fp = |dir: &std::path::Path| {
        rlinkd::quic::tls::certificate_file_fingerprint(&dir.join("a.pem")).unwrap()
    };
    let (old_fp, new_fp) = (fp(&env.certs), fp(&certs2));
    assert_ne!(old_fp, new_fp);
    expect_log(&node_b, &format!("cert={old_fp}"), IO_WAIT);

    let line = env.reload(&node_a, &a, &certs2);
    assert!(line.contains("reloaded: "), "{line}");
    expect_log(&node_a, &format!("cert={new_fp}"), IO_WAIT);
    // The connection in force keeps its session.
    assert_link_works(&ep);

    // b restarts: a's new connections present the new certificate.
    node_b.restart().unwrap();
    expect_log(&node_b, &format!("cert={new_fp}"), CONNECT_WAIT);
    link_works_within(&ep, CONNECT_WAIT).unwrap();
}

/// `log_level` applies on reload: a directive that silences the periodic stats line stops it at
/// once (the reload's own report still shows, its target is not silenced), and the next reload
/// back to `info` brings it back, all without a restart.
#[test]
fn a_reloaded_log_level_applies_without_a_restart() {
    if std::env::var("RUST_LOG").is_ok_and(|v| !v.trim().is_empty()) {
        // RUST_LOG overrides log_level by design; the node inherits this environment.
        eprintln!("skipped: RUST_LOG is set, so the node ignores log_level");
        return;
    }
    let env = Env::new(&["a", "b"]);
    let (mut a, b) = pair(&[]);
    a.top_extra.push("stats_interval = \"100ms\"".into());
    let node_b = env.start(&b);
    let mut node_a = env.start(&a);
    expect_connected(&node_a, &node_b);
    let stats = |n: &rlinkd::cluster::NodeProcess| count_lines(n, &["stats", "links_open="]);
    assert!(
        wait_until(IO_WAIT, || stats(&node_a) >= 2),
        "no stats lines at info: {}",
        node_a.log_text()
    );

    let mut quiet = a.clone();
    quiet
        .top_extra
        .push("log_level = \"info,rlinkd::shard::core::stats=warn\"".into());
    let line = env.reload(&node_a, &quiet, &env.certs);
    assert!(
        line.contains("reloaded: ") && line.contains("log_level changed"),
        "{line}"
    );
    // The filter was in force before the report was written: nothing after it is a stats line.
    let before = stats(&node_a);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        stats(&node_a),
        before,
        "stats lines went on after log_level silenced them"
    );

    let line = env.reload(&node_a, &a, &env.certs);
    assert!(line.contains("log_level changed"), "{line}");
    assert!(
        wait_until(IO_WAIT, || stats(&node_a) >= before + 2),
        "stats lines did not come back with log_level = info"
    );
    assert!(node_a.is_running());
}

/// quiche logs through the `log` crate, whose own maximum level is set when the log starts: a
/// reload that raises the level must raise it too, or quiche's lines stay silent.
#[test]
fn a_reloaded_log_level_reaches_quiche_lines_too() {
    if std::env::var("RUST_LOG").is_ok_and(|v| !v.trim().is_empty()) {
        eprintln!("skipped: RUST_LOG is set, so the node ignores log_level");
        return;
    }
    let p = echo_pair(&[]);
    let node_b = p.env.start(&p.b);
    let node_a = p.env.start(&p.a);
    expect_connected(&node_a, &node_b);
    let packets = |n: &rlinkd::cluster::NodeProcess| count_lines(n, &["rx pkt"]);
    let mut c = client(&p.ep, hs(15));
    echo_on(&mut c, &[pattern(1000, 0)]).expect("echo at info");
    assert_eq!(packets(&node_a), 0, "quiche trace lines at info");

    let mut verbose = p.a.clone();
    verbose
        .top_extra
        .push("log_level = \"info,quiche=trace\"".into());
    let line = p.env.reload(&node_a, &verbose, &p.env.certs);
    assert!(line.contains("log_level changed"), "{line}");
    echo_on(&mut c, &[pattern(1000, 1)]).expect("echo at quiche=trace");
    assert!(
        wait_until(IO_WAIT, || packets(&node_a) > 0),
        "no quiche trace line after the reload raised its level: {}",
        node_a.log_text()
    );
}
