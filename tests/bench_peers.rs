//! `rlinkd bench` against the TLS sidecar pairs users deploy instead (HAProxy, stunnel): each
//! peer row runs and verifies every byte, a relay that is not installed says so in its row, and
//! the pair refuses a peer whose certificate names someone else.
//!
//! Tests that need haproxy or stunnel print why and pass when neither is installed
//! (`scripts/deps.sh` installs both). Every process is bounded in time and stopped by PID.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rlinkd::addr::LocalAddr;
use rlinkd::bench::env::RouterProc;
use rlinkd::bench::peers::{detect, Relay, RelayPlan, RelayProc};
use rlinkd::bench::router::RouterMode;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rlinkd"))
}

fn tmp() -> tempfile::TempDir {
    // Short paths: Unix socket paths are limited to 107 bytes.
    tempfile::Builder::new()
        .prefix("rlinkd-bp")
        .tempdir_in(std::env::temp_dir())
        .unwrap()
}

/// Runs `rlinkd bench ARGS` with `path` as PATH (None: inherited), killed after `limit`.
/// Returns (success, stdout, stderr).
fn bench(args: &[&str], path: Option<&str>, limit: Duration) -> (bool, String, String) {
    let mut cmd = Command::new(exe());
    cmd.arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let mut child = cmd.spawn().unwrap();
    let out = std::thread::spawn({
        let mut so = child.stdout.take().unwrap();
        move || {
            let mut s = String::new();
            so.read_to_string(&mut s).ok();
            s
        }
    });
    let err = std::thread::spawn({
        let mut se = child.stderr.take().unwrap();
        move || {
            let mut s = String::new();
            se.read_to_string(&mut s).ok();
            s
        }
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() >= deadline {
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        status.is_some(),
        "bench did not finish in {limit:?}:\n{out}\n{err}"
    );
    (status.is_some_and(|s| s.success()), out, err)
}

fn installed() -> Vec<&'static str> {
    let v: Vec<&str> = [Relay::Haproxy, Relay::Stunnel]
        .into_iter()
        .filter(|r| detect(*r, 2).binary.is_some())
        .map(|r| r.name())
        .collect();
    if v.is_empty() {
        eprintln!("skipping: neither haproxy nor stunnel is installed (scripts/deps.sh)");
    }
    v
}

/// Each peer transport runs a streaming and a request/echo workload through its two relays,
/// and every byte arrives verified; the relays are separate processes with their CPU counted
/// as the pair; the configs they ran with are kept beside the JSON.
#[test]
fn peer_rows_run_through_both_relays_and_verify() {
    let peers = installed();
    if peers.is_empty() {
        return;
    }
    let dir = tmp();
    let json = dir.path().join("out/bench.json");
    std::fs::create_dir_all(json.parent().unwrap()).unwrap();
    let work = dir.path().join("w");
    let transports = peers.join(",");
    let (ok, out, err) = bench(
        &[
            "--workload",
            "events,rpc",
            "--transport",
            &transports,
            "--duration",
            "200ms",
            "--rounds",
            "1",
            "--dir",
            work.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
        None,
        Duration::from_secs(120),
    );
    assert!(ok, "bench failed:\n{out}\n{err}");
    let rep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let results = rep["results"].as_array().unwrap();
    assert_eq!(results.len(), 2 * peers.len(), "{out}");
    for r in results {
        assert_eq!(r["verified"], true, "{r}");
        let t = r["transport"].as_str().unwrap();
        let names: Vec<&str> = r["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["clients", "router", &format!("{t}-a"), &format!("{t}-b")],
            "{r}"
        );
    }
    for p in &peers {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("  {p} "))),
            "no {p} row:\n{out}"
        );
        let ext = if *p == "haproxy" { "cfg" } else { "conf" };
        for node in ["a", "b"] {
            let cfg = json
                .parent()
                .unwrap()
                .join(format!("peer-configs/{p}-{node}.{ext}"));
            let text = std::fs::read_to_string(&cfg).unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
            assert!(text.contains("TLS_AES_128_GCM_SHA256"), "{text}");
        }
    }
}

/// A relay that is not on this machine is a row that says so, never a missing row.
#[test]
fn a_relay_that_is_not_installed_is_a_skipped_row() {
    let dir = tmp();
    let work = dir.path().join("w");
    let (ok, out, err) = bench(
        &[
            "--workload",
            "rpc",
            "--transport",
            "haproxy,stunnel",
            "--rounds",
            "1",
            "--dir",
            work.to_str().unwrap(),
        ],
        Some(""),
        Duration::from_secs(60),
    );
    assert!(ok, "{out}\n{err}");
    for p in ["haproxy", "stunnel"] {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("  {p} "))
                && l.ends_with(&format!("skipped: {p} not installed"))),
            "no skipped {p} row:\n{out}"
        );
    }
}

/// Sends the RawSocket handshake through relay a; true when the router's reply comes back.
fn handshake_through(addr: &LocalAddr) -> bool {
    let LocalAddr::Unix(p) = addr else {
        panic!("unix leg expected")
    };
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(p) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if s.write_all(&[0x7f, 0xf3, 0, 0]).is_err() {
        return false;
    }
    let mut reply = [0u8; 4];
    s.read_exact(&mut reply).is_ok() && reply[0] == 0x7f
}

fn pair(
    relay: Relay,
    bin: &Path,
    dir: &Path,
    certs: &Path,
    a_cert: &str,
    a_expects: &str,
) -> (RelayProc, RelayProc, LocalAddr) {
    let port = rlinkd::cluster::free_tcp_port().unwrap();
    let between = LocalAddr::Tcp(format!("127.0.0.1:{port}").parse().unwrap());
    let links = LocalAddr::Unix(dir.join(format!("links-{a_cert}-{a_expects}.sock")));
    let plan = |node: &str, cert: &str, peer: &str, listen, connect, tls_in| RelayPlan {
        node: node.into(),
        peer: peer.into(),
        listen,
        connect,
        tls_in,
        ca: certs.join("ca.pem"),
        cert: certs.join(format!("{cert}.pem")),
        key: certs.join(format!("{cert}.key")),
        cert_and_key: dir.join(format!("{}-{node}.pem", relay.name())),
        log: dir.join(format!("{}-{node}.log", relay.name())),
    };
    let router = LocalAddr::Unix(dir.join("router.sock"));
    let b = RelayProc::start(
        relay,
        bin,
        dir,
        &plan("b", "b", "a", between.clone(), router, true),
    )
    .unwrap();
    let a = RelayProc::start(
        relay,
        bin,
        dir,
        &plan("a", a_cert, a_expects, links.clone(), between, false),
    )
    .unwrap();
    (a, b, links)
}

/// Mutual authentication with names: the pair carries a link between `a` and `b`, and refuses
/// when a's certificate is another node's (b checks who connects) or when a expects another
/// name than b's (a checks whom it reached), though every certificate comes from the same CA.
#[test]
fn a_pair_refuses_a_peer_certificate_with_another_name() {
    if installed().is_empty() {
        return;
    }
    let dir = tmp();
    let certs = dir.path().join("certs");
    rlinkd::cert::generate(&certs, &["a".into(), "b".into(), "router".into()]).unwrap();
    let router_addr = LocalAddr::Unix(dir.path().join("router.sock"));
    let _router = RouterProc::start(&exe(), &router_addr, RouterMode::Echo, None).unwrap();
    for relay in [Relay::Haproxy, Relay::Stunnel] {
        let Some(bin) = detect(relay, 2).binary else {
            eprintln!("skipping {}: not installed", relay.name());
            continue;
        };
        let bin = PathBuf::from(bin);
        let (mut a, mut b, links) = pair(relay, &bin, dir.path(), &certs, "a", "b");
        assert!(handshake_through(&links), "{}: good pair", relay.name());
        a.stop();
        b.stop();
        // a presents router's certificate: right CA, wrong name for b.
        let (mut a, mut b, links) = pair(relay, &bin, dir.path(), &certs, "router", "b");
        assert!(
            !handshake_through(&links),
            "{}: b accepted a client named router:\n{}\n{}",
            relay.name(),
            a.log_text(),
            b.log_text()
        );
        a.stop();
        b.stop();
        // a expects a peer named router but reaches b.
        let (mut a, mut b, links) = pair(relay, &bin, dir.path(), &certs, "a", "router");
        assert!(
            !handshake_through(&links),
            "{}: a accepted a server named b as router:\n{}\n{}",
            relay.name(),
            a.log_text(),
            b.log_text()
        );
        a.stop();
        b.stop();
    }
}
