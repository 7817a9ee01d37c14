//! The io_uring backend (`io = "uring"`) end to end: links echo verified data in both
//! directions, a dead peer is noticed by ICMP (the multishot receive survives the socket error),
//! and SIGTERM with traffic in flight drains, cancels what is on the ring, waits for it and
//! exits cleanly. Skipped, with the reason, where the kernel cannot run the backend (the node
//! then says it runs on mio).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use rlinkd::cluster::NodePlan;

const URING: &str = "io = \"uring\"";

fn on_uring(plans: &mut [&mut NodePlan]) {
    for p in plans {
        p.top_extra.push(URING.into());
    }
}

#[test]
fn links_echo_verified_data_both_ways() {
    let EchoPair {
        env,
        router,
        mut a,
        mut b,
        ep,
    } = echo_pair(&[]);
    on_uring(&mut [&mut a, &mut b]);
    let node_b = env.start(&b);
    let node_a = env.start(&a);
    if !runs_on_uring(&node_a) || !runs_on_uring(&node_b) {
        return;
    }
    expect_connected(&node_a, &node_b);

    // Eight links at once, payloads from one byte to 1 MiB (many GSO batches and GRO buffers).
    let workers: Vec<_> = (0..8u64)
        .map(|i| {
            let ep = ep.clone();
            thread::spawn(move || {
                let mut c = client(&ep, hs(15));
                let sizes = [1, 100, 1_400, 9_000, 65_000, 300_000, 1 << 20];
                let payloads: Vec<Vec<u8>> = sizes
                    .iter()
                    .enumerate()
                    .map(|(k, &n)| pattern(n, i * 100 + k as u64))
                    .collect();
                echo_on(&mut c, &payloads)
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker").expect("echo verified");
    }
    assert!(router.stats().echoed >= 8 * 7);
    // The metrics count the ring's datagrams.
    for (name, node) in [("sent", &node_a), ("received", &node_b)] {
        let n = node_metric(node, &format!("rlinkd_datagrams_{name}_total"), &[]).unwrap_or(0.0);
        assert!(n > 0.0, "node {}: no datagram {name} counted", node.name);
    }
    // System calls: the QUIC socket's and the links' local sockets' I/O are io_uring_enter
    // calls, never a recvmsg, read or write of their own.
    for node in [&node_a, &node_b] {
        let calls = |call| node_metric(node, "rlinkd_syscalls_total", &[("call", call)]);
        assert!(
            calls("io_uring_enter").is_some_and(|v| v > 0.0),
            "node {}",
            node.name
        );
        for call in ["udp_recvmsg", "local_read", "local_write"] {
            assert_eq!(calls(call), Some(0.0), "node {}: {call}", node.name);
        }
    }
}

#[test]
fn a_dead_peer_is_noticed_by_icmp_and_links_return_after_restart() {
    // A 60 s idle timeout: only the ICMP port unreachable answering a keepalive to the dead
    // peer can end the connection within the 10 s allowed.
    let EchoPair {
        env,
        router: _router,
        mut a,
        mut b,
        ep,
    } = echo_pair(&[
        "idle_timeout = \"60s\"",
        "keepalive_interval = \"500ms\"",
        "redial_min = \"100ms\"",
        "redial_max = \"500ms\"",
    ]);
    on_uring(&mut [&mut a, &mut b]);
    let mut node_b = env.start(&b);
    let mut node_a = env.start(&a);
    if !runs_on_uring(&node_a) {
        return;
    }
    expect_connected(&node_a, &node_b);
    let mut c = client(&ep, hs(15));
    echo_on(&mut c, &[pattern(1000, 1), pattern(100_000, 2)]).unwrap();

    node_b.kill();
    expect_client_closed(&mut c, Duration::from_secs(10))
        .expect("client at node a closed after its peer died");
    assert!(
        wait_until(Duration::from_secs(5), || find_line(
            &node_a,
            &["peer connection lost", "ICMP port unreachable"]
        )
        .is_some()),
        "node a did not end the connection on ICMP"
    );
    // The receive was re-armed after the socket error: the restarted peer gets through.
    node_b.start_again().unwrap();
    link_works_within(&ep, Duration::from_secs(15)).unwrap();
    // Again, so the second ICMP after a re-arm is seen too.
    node_b.kill();
    assert!(
        wait_until(Duration::from_secs(10), || count_lines(
            &node_a,
            &["peer connection lost", "ICMP port unreachable"]
        ) >= 2),
        "the second death was not noticed by ICMP"
    );
    assert!(node_a.is_running());
}

/// Clients echoing 256 KiB messages without pause on `ep` until their link ends; the count of
/// verified echoes.
fn busy_clients(
    ep: &rlinkd::addr::LocalAddr,
    n: u64,
    stop: &Arc<AtomicBool>,
) -> (Arc<AtomicU64>, Vec<thread::JoinHandle<()>>) {
    let echoed = Arc::new(AtomicU64::new(0));
    let threads = (0..n)
        .map(|i| {
            let (ep, stop, echoed) = (ep.clone(), Arc::clone(stop), Arc::clone(&echoed));
            thread::spawn(move || {
                let mut c = client(&ep, hs(15));
                let mut k = 0;
                while !stop.load(Ordering::SeqCst) {
                    if echo_on(&mut c, &[pattern(256 << 10, i * 1_000_000 + k)]).is_err() {
                        return;
                    }
                    echoed.fetch_add(1, Ordering::SeqCst);
                    k += 1;
                }
            })
        })
        .collect();
    (echoed, threads)
}

#[test]
fn sigterm_with_traffic_in_flight_drains_and_exits_cleanly() {
    let EchoPair {
        env,
        router: _router,
        mut a,
        mut b,
        ep,
    } = echo_pair(&[]);
    on_uring(&mut [&mut a, &mut b]);
    let mut node_b = env.start(&b);
    let mut node_a = env.start(&a);
    if !runs_on_uring(&node_a) || !runs_on_uring(&node_b) {
        return;
    }
    expect_connected(&node_a, &node_b);
    let stop = Arc::new(AtomicBool::new(false));
    let (echoed, clients) = busy_clients(&ep, 4, &stop);
    assert!(
        wait_until(Duration::from_secs(20), || echoed.load(Ordering::SeqCst)
            >= 20),
        "traffic did not flow"
    );
    // Node b first (datagrams to and from it in flight on both rings), then node a.
    for node in [&mut node_b, &mut node_a] {
        node.signal(libc::SIGTERM);
        let status = node.wait_exit(Duration::from_secs(15));
        assert!(
            status.is_some_and(|s| s.success()),
            "node {} did not exit cleanly: {status:?}",
            node.name
        );
        assert!(
            find_line(node, &["io_uring shard stopped: every operation completed"]).is_some(),
            "node {} left operations in flight",
            node.name
        );
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("client thread");
    }
}
