//! Flow control is isolation: links whose router or client stops reading never stall the other
//! links of the node pair, and the stall policy (`relay.stall_timeout`, `relay.stall_budget`)
//! resets them with `Stalled` (0x07) instead of letting them hold the connection's credit.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rlinkd::addr::LocalAddr;
use rlinkd::cluster::{NodePlan, NodeProcess};
use rlinkd::endpoints::{EchoRouter, RouterOptions};

const FRAME: usize = 64 << 10;

/// Routers behind node b: `echo`, `sink` (answers the handshake, then never reads) and `flood`
/// (answers the handshake, then writes frames as fast as the link takes them).
struct StallCluster {
    env: Env,
    _echo: EchoRouter,
    _sink: ScriptedRouter,
    _flood: ScriptedRouter,
    _trickle: ScriptedRouter,
    stop: Arc<AtomicBool>,
    a: NodePlan,
    b: NodePlan,
}

impl Drop for StallCluster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn answer_handshake(conn: &mut UnixStream) -> bool {
    let mut hs = [0u8; 4];
    conn.read_exact(&mut hs).is_ok() && conn.write_all(&[0x7f, 0xf3, 0, 0]).is_ok()
}

fn stall_cluster(relay: &[&str]) -> StallCluster {
    let env = Env::new(&["a", "b"]);
    let echo = EchoRouter::start(&env.unix("echo.sock"), RouterOptions::default()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let sink = ScriptedRouter::start(env.unix("sink.sock"), move |mut conn: UnixStream| {
        if answer_handshake(&mut conn) {
            let end = Instant::now() + Duration::from_secs(300);
            while !s.load(Ordering::SeqCst) && Instant::now() < end {
                thread::sleep(Duration::from_millis(50));
            }
        }
    });
    let s = Arc::clone(&stop);
    let flood = ScriptedRouter::start(env.unix("flood.sock"), move |mut conn: UnixStream| {
        if !answer_handshake(&mut conn) {
            return;
        }
        conn.set_write_timeout(Some(Duration::from_millis(200)))
            .ok();
        let f = frame(&pattern(FRAME - 4, 9));
        let end = Instant::now() + Duration::from_secs(300);
        let mut off = 0;
        while !s.load(Ordering::SeqCst) && Instant::now() < end {
            match conn.write(&f[off..]) {
                Ok(n) => off = (off + n) % f.len(),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return,
            }
        }
    });
    // A slow reader: 4 KiB every 100 ms. It never stalls, but it holds a stream window of
    // unread bytes for as long as its client sends faster.
    let s = Arc::clone(&stop);
    let trickle = ScriptedRouter::start(env.unix("trickle.sock"), move |mut conn: UnixStream| {
        if !answer_handshake(&mut conn) {
            return;
        }
        let mut buf = [0u8; 4096];
        let end = Instant::now() + Duration::from_secs(300);
        while !s.load(Ordering::SeqCst) && Instant::now() < end {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    let (mut a, mut b) = pair(&[]);
    for (name, route) in [
        ("echo", "echo"),
        ("sink", "sink"),
        ("flood", "flood"),
        ("trickle", "trickle"),
    ] {
        a.links.push((
            "b".into(),
            env.unix(&format!("a-{name}.sock")),
            route.into(),
        ));
    }
    b.routes.push(("echo".into(), echo.local_addr().clone()));
    b.routes.push(("sink".into(), sink.addr.clone()));
    b.routes.push(("flood".into(), flood.addr.clone()));
    b.routes.push(("trickle".into(), trickle.addr.clone()));
    for p in [&mut a, &mut b] {
        p.top_extra.push("stats_interval = \"200ms\"".into());
        p.relay_extra.extend(relay.iter().map(|s| s.to_string()));
    }
    StallCluster {
        _echo: echo,
        _sink: sink,
        _flood: flood,
        _trickle: trickle,
        stop,
        env,
        a,
        b,
    }
}

/// A node-wide gauge from `node`'s metrics (0 when it does not answer).
fn gauge(node: &NodeProcess, name: &str) -> u64 {
    node_metric(node, name, &[]).map_or(0, |v| v as u64)
}

fn stalled_now(node: &NodeProcess) -> u64 {
    gauge(node, "rlinkd_links_stalled")
}

/// A link into the sink: its client writes frames (from a thread) until the path is full.
fn sink_link(ep: &LocalAddr, stop: &Arc<AtomicBool>) -> RawConn {
    let c = RawConn::connect(ep);
    c.write(&[0x7f, 0xf3, 0, 0]).unwrap();
    assert_eq!(c.read_exact(4, IO_WAIT).unwrap(), [0x7f, 0xf3, 0, 0]);
    let w = c.stream.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_millis(200))).ok();
    let stop = Arc::clone(stop);
    thread::spawn(move || {
        let f = frame(&pattern(FRAME - 4, 3));
        let end = Instant::now() + Duration::from_secs(300);
        let mut off = 0;
        while !stop.load(Ordering::SeqCst) && Instant::now() < end {
            match (&w).write(&f[off..]) {
                Ok(n) => off = (off + n) % f.len(),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    });
    c
}

/// A link from the flood router whose client reads the handshake reply and nothing more.
fn flood_link(ep: &LocalAddr) -> RawConn {
    let c = RawConn::connect(ep);
    c.write(&[0x7f, 0xf3, 0, 0]).unwrap();
    assert_eq!(c.read_exact(4, IO_WAIT).unwrap(), [0x7f, 0xf3, 0, 0]);
    c
}

/// Four links each echo `frames` frames of 64 KiB, verified; returns MB/s of echoed payload.
fn verified_traffic(ep: &LocalAddr, frames: usize, what: &str) -> f64 {
    let started = Instant::now();
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let ep = ep.clone();
            thread::spawn(move || -> Result<(), String> {
                let mut c = client(&ep, hs(15));
                for k in 0..frames as u64 {
                    echo_on(&mut c, &[pattern(FRAME, w * 1_000_000 + k)])?;
                }
                Ok(())
            })
        })
        .collect();
    for (i, w) in workers.into_iter().enumerate() {
        if let Err(e) = w.join().unwrap() {
            panic!("{what}: verified link {i} failed: {e}");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    (4 * frames * FRAME) as f64 / secs / 1e6
}

#[test]
fn fifty_stalled_links_each_way_leave_the_others_flowing_and_new_links_opening() {
    let c = stall_cluster(&["stall_timeout = \"300s\""]);
    let mut node_b = c.env.start(&c.b);
    let mut node_a = c.env.start(&c.a);
    expect_connected(&node_a, &node_b);
    let (echo, sink, flood) = (
        c.env.unix("a-echo.sock"),
        c.env.unix("a-sink.sock"),
        c.env.unix("a-flood.sock"),
    );
    let before = verified_traffic(&echo, 64, "before the stall");

    // 50 links whose router never reads (stalled on b), 50 whose client never reads (stalled
    // on a): 100 stream windows of unread bytes.
    let sinks: Vec<RawConn> = (0..50).map(|_| sink_link(&sink, &c.stop)).collect();
    let floods: Vec<RawConn> = (0..50).map(|_| flood_link(&flood)).collect();
    assert!(
        wait_until(Duration::from_secs(60), || stalled_now(&node_b) >= 50
            && stalled_now(&node_a) >= 50),
        "links did not stall: a {} b {}",
        stalled_now(&node_a),
        stalled_now(&node_b)
    );

    let during = verified_traffic(&echo, 64, "while 100 links are stalled");
    let new_link = link_works_within(&echo, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("no new link while 100 links are stalled: {e}"));
    eprintln!(
        "verified goodput of 4 other links: {before:.0} MB/s before, {during:.0} MB/s with 50 stalled links each way ({:.2} x); a new link echoed in {new_link:?}",
        during / before
    );
    // Nothing was reset: the stall budget holds 64 stalled links per node by default.
    assert_eq!(count_lines(&node_a, &["Stalled"]), 0);
    assert_eq!(count_lines(&node_b, &["Stalled"]), 0);
    assert!(node_a.is_running() && node_b.is_running());
    drop((sinks, floods));
}

#[test]
fn a_link_stalled_past_stall_timeout_is_reset_and_the_others_keep_going() {
    let c = stall_cluster(&["stall_timeout = \"1s\""]);
    let node_b = c.env.start(&c.b);
    let node_a = c.env.start(&c.a);
    expect_connected(&node_a, &node_b);
    let stalled = sink_link(&c.env.unix("a-sink.sock"), &c.stop);
    let quiet = flood_link(&c.env.unix("a-flood.sock"));
    // The sink's link is reset by b (its router stalled), the flood's by a (its client stalled).
    assert!(
        wait_until(Duration::from_secs(15), || find_line(
            &node_a,
            &["link out", "route=flood", "relay.stall_timeout"]
        )
        .is_some()),
        "the flood link was not reset for its stall"
    );
    stalled
        .read_until_closed(Duration::from_secs(15))
        .expect("the stalled sink link is closed");
    // The flood's client finds the bytes queued for it, then the end.
    quiet
        .read_until_closed(Duration::from_secs(15))
        .expect("the stalled flood link is closed");
    expect_log(&node_b, "Stalled (0x07)", IO_WAIT);
    expect_log(&node_b, "relay.stall_timeout", IO_WAIT);
    expect_log(&node_a, "relay.stall_timeout", IO_WAIT);
    assert_link_works(&c.env.unix("a-echo.sock"));
}

/// A router that reads slowly but keeps reading (4 KiB every 100 ms) is not stalled, however
/// many bytes wait for it: `relay.stall_timeout` is for a reader that takes nothing. On
/// io_uring the bytes wait in the link's writer as well as in its relay buffer, and each of the
/// writer's partial sends is the reader's progress.
#[test]
fn a_slow_reader_that_keeps_reading_outlives_the_stall_timeout() {
    let c = stall_cluster(&["stall_timeout = \"1s\""]);
    let node_b = c.env.start(&c.b);
    let node_a = c.env.start(&c.a);
    expect_connected(&node_a, &node_b);
    let slow = sink_link(&c.env.unix("a-trickle.sock"), &c.stop);
    thread::sleep(Duration::from_secs(4));
    assert_eq!(
        count_lines(&node_b, &["relay.stall_timeout"]),
        0,
        "a reader that keeps reading was reset for a stall"
    );
    assert!(
        slow.read_until_closed(Duration::from_millis(300)).is_err(),
        "the slow reader's link is still open"
    );
    assert_link_works(&c.env.unix("a-echo.sock"));
}

/// `route`'s links (opened one by one, each once the previous one holds credit) exceed a
/// 2.5 MiB budget: the longest-holding are reset until the rest fit, and the others keep working.
fn over_budget(route: &str) {
    let c = stall_cluster(&["stall_timeout = \"300s\"", "stall_budget = \"2560KiB\""]);
    let node_b = c.env.start(&c.b);
    let node_a = c.env.start(&c.a);
    expect_connected(&node_a, &node_b);
    let ep = c.env.unix(&format!("a-{route}.sock"));
    let mut links = Vec::new();
    for i in 0..8u64 {
        links.push(sink_link(&ep, &c.stop));
        assert!(
            wait_until(Duration::from_secs(20), || gauge(
                &node_b,
                "rlinkd_links_holding_credit"
            ) > i
                || count_lines(&node_b, &["stall_budget"]) > 0),
            "link {i} does not hold credit"
        );
    }
    let resets = || count_lines(&node_b, &["stall_budget"]);
    assert!(
        wait_until(Duration::from_secs(20), || resets() >= 3),
        "over-budget links were not reset"
    );
    thread::sleep(Duration::from_secs(2));
    // Each link holds what quiche has unread: 0.6-0.8 MiB until a window update, at most its
    // whole window (1 MiB). So 8 links over a 2.5 MiB budget keep 2 (at 1 MiB each) to 5 (at
    // 0.42 MiB each): 3-6 reset; with 2 shards each keeps 1 or 2 of its links under half the
    // budget: 4-6 reset. Whatever the moment, the longest-holding go
    // first and every reset closes its link: compared at an instant when no reset happened
    // while the links were looked at.
    let mut closed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let before = resets();
        closed = links
            .iter()
            .map(|l| l.read_until_closed(Duration::from_millis(300)).is_ok())
            .collect();
        if resets() == before {
            break;
        }
    }
    let k = closed.iter().take_while(|c| **c).count();
    assert!(
        (3..=6).contains(&k) && closed[k..].iter().all(|c| !c),
        "the longest-holding links go first: {closed:?}"
    );
    assert_eq!(resets(), k, "one reset per closed link");
    assert_link_works(&c.env.unix("a-echo.sock"));
}

/// The budget counts the credit links hold (bytes unread in quiche), not their relay buffers:
/// a slow reader behind a 16 MiB relay buffer holds at most a stream window of credit and stays
/// open under a budget that window fits (such a link once was reset alone, its buffer counted).
#[test]
fn a_slow_reader_behind_a_large_relay_buffer_is_not_reset_while_its_credit_fits() {
    let mut c = stall_cluster(&[
        "stall_timeout = \"300s\"",
        "stall_budget = \"4MiB\"",
        "buffer_size = \"16MiB\"",
    ]);
    // One window of credit (1 MiB) fits a shard's share of the budget (2 MiB with 2 shards);
    // the relay buffer, whose reads grow it to 4 MiB here, would not.
    for p in [&mut c.a, &mut c.b] {
        p.quic_extra.push("initial_stream_window = \"1MiB\"".into());
        p.quic_extra.push("max_stream_window = \"1MiB\"".into());
    }
    let node_b = c.env.start(&c.b);
    let node_a = c.env.start(&c.a);
    expect_connected(&node_a, &node_b);
    let link = sink_link(&c.env.unix("a-trickle.sock"), &c.stop);
    assert!(
        wait_until(Duration::from_secs(20), || gauge(
            &node_b,
            "rlinkd_links_holding_credit"
        ) > 0),
        "the slow reader's link does not hold credit"
    );
    // Past the 1 s grace, checked every 100 ms: long enough for a reset to show.
    thread::sleep(Duration::from_secs(3));
    assert_eq!(
        count_lines(&node_b, &["stall_budget"]),
        0,
        "{}",
        node_b.log_text()
    );
    assert!(
        link.read_until_closed(Duration::from_millis(300)).is_err(),
        "the slow reader's link was closed"
    );
    assert_link_works(&c.env.unix("a-echo.sock"));
}

#[test]
fn past_the_stall_budget_the_longest_stalled_links_are_reset_first() {
    over_budget("sink");
}

#[test]
fn slow_readers_that_never_stall_still_count_against_the_budget() {
    over_budget("trickle");
}
