//! Unauthenticated handshakes cannot lock out a real peer: while a real QUIC client (quiche) opens
//! 300 connections per second at node b from one UDP socket, without a certificate b accepts,
//! node a (the dialer) is killed and restarted and must be reconnected during the flood.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use boring::ssl::{SslContextBuilder, SslFiletype, SslMethod, SslVerifyMode, SslVersion};
use common::*;
use rlinkd::endpoints::{EchoRouter, RouterOptions};

/// New connections per second, as in the report this test reproduces.
const RATE: u32 = 300;
/// Connection ID length of the flooder's connections (how it finds its connections again).
const FLOOD_CID_LEN: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Every kind of connection in turn.
    Mixed,
    /// Every connection answers the Retry and then stalls.
    Stall,
}

/// What the `n`th connection of a flood does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Completes its side of the handshake with a certificate from another CA.
    ForeignCert,
    /// Completes its side of the handshake without a certificate.
    NoCert,
    /// Sends its first Initial and never answers anything.
    Mute,
    /// Answers a Retry (it owns its address), then never answers the server's handshake.
    Stall,
}

fn kind(mode: Mode, n: u64) -> Kind {
    match mode {
        Mode::Mixed => [Kind::ForeignCert, Kind::NoCert, Kind::Mute, Kind::Stall][n as usize % 4],
        Mode::Stall => Kind::Stall,
    }
}

#[derive(Debug, Default)]
struct Report {
    connections: u64,
    datagrams_sent: u64,
    datagrams_received: u64,
}

struct Flood {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Report>,
}

impl Flood {
    fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("flood thread")
    }
}

fn client_config(with_cert: bool, foreign: &Path) -> quiche::Config {
    let mut ctx = SslContextBuilder::new(SslMethod::tls()).unwrap();
    ctx.set_min_proto_version(Some(SslVersion::TLS1_3)).unwrap();
    if with_cert {
        ctx.set_certificate_chain_file(foreign.join("a.pem"))
            .unwrap();
        ctx.set_private_key_file(foreign.join("a.key"), SslFiletype::PEM)
            .unwrap();
    }
    // Never give up on the server's side: every handshake goes as far as the server lets it.
    ctx.set_verify(SslVerifyMode::NONE);
    let mut c = quiche::Config::with_boring_ssl_ctx_builder(quiche::PROTOCOL_VERSION, ctx).unwrap();
    c.set_application_protos(&[rlinkd::quic::ALPN]).unwrap();
    c.set_max_idle_timeout(10_000);
    c.set_max_recv_udp_payload_size(65_527);
    c.set_initial_max_data(1 << 20);
    c.set_initial_max_stream_data_bidi_local(1 << 16);
    c.set_initial_max_streams_bidi(10);
    c
}

/// Opens `RATE` QUIC connections per second to `target` from one socket until stopped.
fn flood(target: SocketAddr, mode: Mode, foreign: &Path) -> Flood {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let mut with_cert = client_config(true, foreign);
    let mut without_cert = client_config(false, foreign);
    let handle = thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let local = sock.local_addr().unwrap();
        let mut conns: HashMap<Vec<u8>, (quiche::Connection, Kind, Instant)> = HashMap::new();
        let mut report = Report::default();
        let mut buf = vec![0u8; 65_536];
        let mut out = vec![0u8; 1500];
        let interval = Duration::from_secs(1) / RATE;
        let start = Instant::now();
        // A safety bound: the test stops the flood long before.
        while !flag.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
            let due = (start.elapsed().as_nanos() / interval.as_nanos()) as u64;
            while report.connections < due {
                report.connections += 1;
                let scid: Vec<u8> = pattern(FLOOD_CID_LEN, report.connections);
                let cid = quiche::ConnectionId::from_ref(&scid);
                let k = kind(mode, report.connections);
                let config = if k == Kind::ForeignCert {
                    &mut with_cert
                } else {
                    &mut without_cert
                };
                let mut conn = quiche::connect(Some("b"), &cid, local, target, config)
                    .expect("client connection");
                while let Ok((n, info)) = conn.send(&mut out) {
                    if sock.send_to(&out[..n], info.to).is_ok() {
                        report.datagrams_sent += 1;
                    }
                }
                if k != Kind::Mute {
                    conns.insert(scid, (conn, k, Instant::now()));
                }
            }
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                report.datagrams_received += 1;
                let Ok(hdr) = quiche::Header::from_slice(&mut buf[..n], FLOOD_CID_LEN) else {
                    continue;
                };
                if let Some((c, k, _)) = conns.get_mut(hdr.dcid.as_ref()) {
                    if *k == Kind::Stall && hdr.ty != quiche::Type::Retry {
                        continue;
                    }
                    c.recv(&mut buf[..n], quiche::RecvInfo { from, to: local })
                        .ok();
                }
            }
            let now = Instant::now();
            conns.retain(|_, (c, _, born)| {
                if c.timeout_instant().is_some_and(|t| t <= now) {
                    c.on_timeout();
                }
                while let Ok((n, info)) = c.send(&mut out) {
                    if sock.send_to(&out[..n], info.to).is_ok() {
                        report.datagrams_sent += 1;
                    }
                }
                !c.is_closed() && now.duration_since(*born) < Duration::from_secs(10)
            });
            thread::sleep(Duration::from_millis(1));
        }
        report
    });
    Flood { stop, handle }
}

/// Node a is killed and restarted while `mode` floods node b: the restarted node must carry a
/// working link again within 2 s, and b must account for the flood.
fn restart_during_flood(mode: Mode) {
    let env = Env::new(&["a", "b"]);
    let foreign = env.path("foreign");
    rlinkd::cert::generate(&foreign, &["a".to_string()]).unwrap();
    let router = EchoRouter::start(&env.unix("router.sock"), RouterOptions::default()).unwrap();
    let (mut a, mut b) = pair(&["redial_min = \"100ms\"", "redial_max = \"500ms\""]);
    b.top_extra.push("stats_interval = \"1s\"".into());
    let ep = env.unix("a.sock");
    a.links.push(("b".into(), ep.clone(), "echo".into()));
    b.routes.push(("echo".into(), router.local_addr().clone()));
    let mut node_b = env.start(&b);
    let mut node_a = env.start(&a);
    expect_connected(&node_a, &node_b);
    assert_link_works(&ep);

    let target: SocketAddr = format!("127.0.0.1:{}", b.quic_port).parse().unwrap();
    let f = flood(target, mode, &foreign);
    let started = Instant::now();
    // Long enough for the 256 handshake slots of the old code to fill up with connections that
    // never answer (75 or 300 per second, each held for the 10 s idle timeout).
    thread::sleep(Duration::from_secs(4));
    node_a.kill();
    node_a.start_again().unwrap();
    let took = link_works_within(&ep, Duration::from_secs(30));
    let flooded_for = started.elapsed();
    let report = f.stop();
    eprintln!("{mode:?}: flood {report:?}; restarted node a carried a link after {took:?}");
    let took = took.unwrap();
    assert!(
        report.datagrams_received > 0 && report.connections >= RATE as u64,
        "the flood was not real: {report:?}"
    );
    // The restarted node dials at once and is back in about 0.3 s (a Retry round trip, the
    // handshake, 300 ms for b's liveness probe of the dead connection). Before address
    // validation and handshake limits it took 7 s (mixed flood) or more than 30 s (stalling).
    assert!(
        took < Duration::from_secs(2),
        "{mode:?}: the restarted peer took {took:?} to reconnect during the flood"
    );
    // The flood is visible in b's metrics, and refusals are summarised, not logged one by one.
    let counter = |name| node_metric(&node_b, name, &[]).expect("metrics") as u64;
    let retries = counter("rlinkd_handshake_retries_sent_total");
    assert!(
        retries >= RATE as u64,
        "node b answered {retries} Initials with a Retry"
    );
    let summaries = count_lines(&node_b, &["incoming handshakes refused in the last"]);
    // At most one a second per shard (each shard admits its own handshakes).
    let allowed = (flooded_for.as_secs() as usize + 2) * node_shards();
    assert!(
        summaries <= allowed,
        "{summaries} summary lines in {flooded_for:?}: more than one a second per shard"
    );
    if mode == Mode::Mixed {
        let failed = counter("rlinkd_handshake_errors_total");
        assert!(failed > 0, "node b counted no failed handshakes");
        let line = find_line(&node_b, &["incoming handshakes refused in the last"])
            .expect("a summary of the refused handshakes");
        assert!(
            line.contains("last from 127.0.0.1:"),
            "the summary names no address: {line}"
        );
    }
    assert!(node_a.is_running() && node_b.is_running());
}

#[test]
fn a_restarted_peer_reconnects_during_a_flood_of_unauthenticated_handshakes() {
    restart_during_flood(Mode::Mixed);
}

#[test]
fn a_restarted_peer_reconnects_during_a_flood_of_handshakes_that_stall_after_the_retry() {
    restart_during_flood(Mode::Stall);
}
