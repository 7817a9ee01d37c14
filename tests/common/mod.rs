//! Shared set-up for the loopback integration tests: a temporary folder with certificates, node
//! processes started from the real `rlinkd` binary, raw and framed RawSocket clients with bounded
//! waits, and a guard that prints every node's log when a test fails.
//!
//! Every wait here has a deadline and every socket a read timeout, so a broken rlinkd makes a
//! test fail, never hang. Every node is a child process stopped by PID (`NodeProcess` kills it on
//! drop).

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use rlinkd::addr::LocalAddr;
use rlinkd::cluster::{free_tcp_port, free_udp_port, wait_for_log, NodePlan, NodeProcess};
#[allow(unused_imports)] // each test binary uses its own part of this module
pub use rlinkd::cluster::{http_get, metric};
use rlinkd::endpoints::{ClientError, EchoRouter, LocalStream, RawSocketClient, RouterOptions};
use rlinkd::rawsocket::{ClientHandshake, FrameHeader, MaxLen, Serializer};

/// The binary under test: this build's, or `RLINKD_TEST_EXE` (to run the suite against another
/// build, e.g. to show that a regression test fails without its fix).
pub fn exe() -> PathBuf {
    std::env::var_os("RLINKD_TEST_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rlinkd")))
}

/// `RLINKD_TEST_SHARDS`: the shards every test node runs (see [`Env::start_with_certs`]).
pub fn test_shards() -> Option<usize> {
    std::env::var("RLINKD_TEST_SHARDS")
        .ok()
        .and_then(|v| v.parse().ok())
}

/// The shards every test node runs: `RLINKD_TEST_SHARDS`, else the node's default (one per CPU
/// of the affinity mask, which the test process shares). Two nodes hold one connection per
/// shard, so each logs "peer connected" this many times.
pub fn node_shards() -> usize {
    test_shards().unwrap_or_else(|| {
        rlinkd::shard::placement::allowed_cpus().map_or(1, |c| c.len().clamp(1, 256))
    })
}

/// `RLINKD_TEST_WRAPPER`: a command every test node runs under, split at whitespace (e.g.
/// `valgrind --tool=memcheck --error-exitcode=99`; see scripts/valgrind-uring.sh). Unset: none.
pub fn test_wrapper() -> Vec<String> {
    std::env::var("RLINKD_TEST_WRAPPER")
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// `RLINKD_TEST_TIME_SCALE` (a whole number, default 1): how many times longer the shared
/// helpers below wait (log lines, conditions, client connects and reads, closes), for nodes
/// that run much slower than usual (under valgrind). Waits a test writes itself are not scaled.
pub fn time_scale() -> u32 {
    std::env::var("RLINKD_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1)
}

/// `d` times [`time_scale`].
pub fn scaled(d: Duration) -> Duration {
    d * time_scale()
}

/// How long a node may take to connect to its peer on a busy CI box.
pub const CONNECT_WAIT: Duration = Duration::from_secs(15);
/// Read timeout of clients that expect an answer.
pub const IO_WAIT: Duration = Duration::from_secs(20);

/// A test's working folder (certificates, configs, sockets, logs). When the test panics, the
/// log of every node started through it is printed before the folder is removed.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// Certificates of the nodes named in [`Env::new`], signed by one CA.
    pub certs: PathBuf,
    logs: Mutex<Vec<(String, PathBuf)>>,
}

impl Env {
    /// A fresh folder with a CA and certificates for `nodes`.
    pub fn new(nodes: &[&str]) -> Env {
        // A short base path: Unix socket paths are limited to 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("rlinkd-it")
            .tempdir_in(std::env::temp_dir())
            .expect("temp dir");
        let certs = dir.path().join("certs");
        let names: Vec<String> = nodes.iter().map(|s| s.to_string()).collect();
        if !names.is_empty() {
            rlinkd::cert::generate(&certs, &names).expect("generate certificates");
        }
        Env {
            dir,
            certs,
            logs: Mutex::new(Vec::new()),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A Unix socket address in the test folder.
    pub fn unix(&self, name: &str) -> LocalAddr {
        LocalAddr::Unix(self.path(name))
    }

    /// Starts a node with the certificates of [`Env::new`].
    pub fn start(&self, plan: &NodePlan) -> NodeProcess {
        self.start_with_certs(plan, &self.certs.clone())
    }

    /// Starts a node whose `NAME.pem`, `NAME.key` and `ca.pem` come from `certs`. With
    /// `RLINKD_TEST_SHARDS=N` in the environment, every node runs N shards unless its plan says
    /// otherwise (CI runs the suite with 1 and with 2); without it, the node's default. With
    /// `RLINKD_TEST_IO`, likewise its I/O backend ([`with_test_io`]).
    pub fn start_with_certs(&self, plan: &NodePlan, certs: &Path) -> NodeProcess {
        let mut plan = with_test_env(plan);
        // Every test node serves its figures: tests read them there, not in log lines.
        with_admin(&mut plan);
        let plan = &plan;
        let node = NodeProcess::start(&exe(), self.dir.path(), certs, plan)
            .unwrap_or_else(|e| panic!("cannot start node {}: {e}", plan.name));
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((node.name.clone(), node.log.clone()));
        node
    }

    /// Rewrites `node`'s configuration file as `plan` with certificates from `certs` (and the
    /// shard count of [`Env::start_with_certs`]), sends SIGHUP and waits until the node logs
    /// the reload's outcome; returns that line ("reloaded: ..." or "reload refused ...").
    pub fn reload(&self, node: &NodeProcess, plan: &NodePlan, certs: &Path) -> String {
        let mut plan = with_test_env(plan);
        // The admin endpoint it started with (a reload cannot move it).
        plan.admin = node.admin;
        self.reload_with_text(node, &plan.to_toml(certs))
    }

    /// [`Env::reload`] with the configuration file's text as given.
    pub fn reload_with_text(&self, node: &NodeProcess, toml: &str) -> String {
        let outcome = ["reloaded: ", "reload refused"];
        let count = || {
            outcome
                .iter()
                .map(|o| count_lines(node, &[o]))
                .sum::<usize>()
        };
        let before = count();
        std::fs::write(&node.config, toml).expect("write the node's config");
        node.signal(libc::SIGHUP);
        assert!(
            wait_until(IO_WAIT, || count() > before),
            "node {} logged no reload outcome within {IO_WAIT:?}",
            node.name
        );
        node.log_text()
            .lines()
            .filter(|l| outcome.iter().any(|o| l.contains(o)))
            .nth(before)
            .unwrap_or_default()
            .to_string()
    }

    /// Every started node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = std::collections::HashSet::new();
        for (name, path) in logs.iter() {
            if !seen.insert(path.clone()) {
                continue;
            }
            let text = std::fs::read_to_string(path).unwrap_or_default();
            // Keep failure output readable: the last lines are the interesting ones
            // (RLINKD_TEST_LOG_LINES=N shows more).
            let keep = std::env::var("RLINKD_TEST_LOG_LINES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(300usize);
            let lines: Vec<&str> = text.lines().collect();
            let skip = lines.len().saturating_sub(keep);
            out.push_str(&format!(
                "===== node {name} log ({}, {} lines{}) =====\n",
                path.display(),
                lines.len(),
                if skip > 0 {
                    format!(", last {keep} shown")
                } else {
                    String::new()
                }
            ));
            for l in &lines[skip..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// `plan` with `io = "<RLINKD_TEST_IO>"` when that variable is set (to run the whole suite on
/// one I/O backend: `RLINKD_TEST_IO=uring cargo test --release --tests`), unless the plan sets
/// `io` itself.
pub fn with_test_io(plan: &NodePlan) -> NodePlan {
    let mut plan = plan.clone();
    if let Ok(io) = std::env::var("RLINKD_TEST_IO") {
        let sets_io = plan
            .top_extra
            .iter()
            .any(|l| l.split('=').next().is_some_and(|k| k.trim() == "io"));
        if !io.is_empty() && !sets_io {
            plan.top_extra.push(format!("io = {io:?}"));
        }
    }
    plan
}

impl Drop for Env {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("\n{}", self.logs());
        }
    }
}

/// `plan` as the test environment asks: [`with_test_shards`], [`with_test_io`] and the
/// wrapper of [`test_wrapper`] (unless the plan has one).
pub fn with_test_env(plan: &NodePlan) -> NodePlan {
    let mut plan = with_test_io(&with_test_shards(plan));
    if plan.wrapper.is_empty() {
        plan.wrapper = test_wrapper();
    }
    plan
}

/// `plan` with `shards = RLINKD_TEST_SHARDS` unless it says otherwise.
pub fn with_test_shards(plan: &NodePlan) -> NodePlan {
    let mut plan = plan.clone();
    if let Some(n) = test_shards() {
        if !plan.top_extra.iter().any(|l| l.starts_with("shards")) {
            plan.top_extra.push(format!("shards = {n}"));
        }
    }
    plan
}

/// Two nodes: `a` dials `b`, `b` accepts `a`. No links or routes yet; `quic` lines go into both
/// nodes' `[quic]` tables.
pub fn pair(quic: &[&str]) -> (NodePlan, NodePlan) {
    let (pa, pb) = (free_udp_port().unwrap(), free_udp_port().unwrap());
    let mut a = NodePlan::new("a", pa);
    a.peers.push(("b".into(), Some(pb)));
    let mut b = NodePlan::new("b", pb);
    b.peers.push(("a".into(), None));
    for l in quic {
        a.quic_extra.push(l.to_string());
        b.quic_extra.push(l.to_string());
    }
    (a, b)
}

/// The usual set-up: nodes a and b (a dials b), an echo router behind route "echo" on b, and a
/// link endpoint `a.sock` on a that leads to it. Nodes are not started.
pub struct EchoPair {
    pub env: Env,
    pub router: EchoRouter,
    pub a: NodePlan,
    pub b: NodePlan,
    pub ep: LocalAddr,
}

pub fn echo_pair(quic: &[&str]) -> EchoPair {
    let env = Env::new(&["a", "b"]);
    let router = EchoRouter::start(&env.unix("router.sock"), RouterOptions::default()).unwrap();
    let (mut a, mut b) = pair(quic);
    let ep = env.unix("a.sock");
    a.links.push(("b".into(), ep.clone(), "echo".into()));
    b.routes.push(("echo".into(), router.local_addr().clone()));
    EchoPair {
        env,
        router,
        a,
        b,
        ep,
    }
}

/// Timeouts short enough for failure tests, long enough for a loaded 2-core box.
pub const FAST_QUIC: &[&str] = &[
    "idle_timeout = \"2s\"",
    "keepalive_interval = \"500ms\"",
    "connect_timeout = \"1s\"",
    "redial_min = \"100ms\"",
    "redial_max = \"500ms\"",
];

/// A TCP address on 127.0.0.1 that was free a moment ago.
pub fn free_tcp() -> LocalAddr {
    LocalAddr::Tcp(
        format!("127.0.0.1:{}", free_tcp_port().unwrap())
            .parse()
            .unwrap(),
    )
}

/// Panics unless `node` logs `needle` within `timeout`.
pub fn expect_log(node: &NodeProcess, needle: &str, timeout: Duration) {
    let timeout = scaled(timeout);
    assert!(
        wait_for_log(node, needle, timeout),
        "node {} did not log {needle:?} within {timeout:?}",
        node.name
    );
}

/// True if `node` runs on io_uring; false (after saying why) if it fell back to mio.
pub fn runs_on_uring(node: &NodeProcess) -> bool {
    expect_log(node, "I/O backend:", CONNECT_WAIT);
    if find_line(node, &["I/O backend: io_uring"]).is_some() {
        return true;
    }
    let line = find_line(node, &["I/O backend:"]).unwrap_or_default();
    eprintln!("skipped: node {} fell back: {line}", node.name);
    false
}

/// Waits until both nodes report the connection between them.
/// Waits until `a` and `b` are connected on every shard: each logged a connection, and each
/// node's /readyz says every peer it dials is connected on all its shards (with shards, the
/// first connection is not the last, and a test that acts on the first races the others).
pub fn expect_connected(a: &NodeProcess, b: &NodeProcess) {
    expect_log(a, "peer connected", CONNECT_WAIT);
    expect_log(b, "peer connected", CONNECT_WAIT);
    for node in [a, b] {
        let Some(admin) = node.admin_addr() else {
            continue;
        };
        assert!(
            wait_until(CONNECT_WAIT, || http_get(admin, "/readyz")
                .is_some_and(|(status, _)| status == 200)),
            "node {} is not connected on every shard: {:?}",
            node.name,
            http_get(admin, "/readyz")
        );
    }
}

/// `node`'s datagrams dropped as (unparsable, unknown connection), from its metrics.
pub fn dropped_datagrams(node: &NodeProcess) -> Option<(u64, u64)> {
    let dropped = |reason| {
        node_metric(
            node,
            "rlinkd_datagrams_dropped_total",
            &[("reason", reason)],
        )
        .map(|v| v as u64)
    };
    Some((dropped("unparsable")?, dropped("unknown_connection")?))
}

/// How many lines of `node`'s log contain every one of `needles`.
pub fn count_lines(node: &NodeProcess, needles: &[&str]) -> usize {
    node.log_text()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

/// The first log line containing every one of `needles`.
pub fn find_line(node: &NodeProcess, needles: &[&str]) -> Option<String> {
    node.log_text()
        .lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
}

/// Waits until `cond` holds, polling every 50 ms; false if `timeout` passes first.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + scaled(timeout);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A client handshake: CBOR, largest received message 2^(exp+9) bytes.
pub fn hs(exp: u8) -> ClientHandshake {
    ClientHandshake {
        max_len: MaxLen::new(exp).expect("exponent 0..=15"),
        serializer: Serializer::Cbor,
    }
}

/// `n` bytes that differ between sizes, seeds and offsets (catches reordering and truncation).
pub fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (n as u64).wrapping_add(1);
    (0..n)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A regular message frame (prefix + payload) as `RawSocketClient::send` writes it.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = FrameHeader::message(payload.len() as u32).encode().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Connects a framed client with `hs` through `addr`, panicking with the error.
pub fn client(addr: &LocalAddr, hs: ClientHandshake) -> RawSocketClient {
    match RawSocketClient::connect(addr, hs, scaled(IO_WAIT)) {
        Ok((c, _)) => c,
        Err(e) => panic!("client through {addr}: {e}"),
    }
}

/// Sends each payload on `c` and checks its echo, one at a time.
pub fn echo_on(c: &mut RawSocketClient, payloads: &[Vec<u8>]) -> Result<(), String> {
    for p in payloads {
        c.send(p).map_err(|e| format!("send {} B: {e}", p.len()))?;
        let got = c
            .recv()
            .map_err(|e| format!("echo of {} B: {e}", p.len()))?;
        if got != *p {
            return Err(format!(
                "echo of {} B differs (got {} B)",
                p.len(),
                got.len()
            ));
        }
    }
    Ok(())
}

/// Opens a link through `addr`, echoes a few frames and closes it; Err says what failed.
pub fn try_link(addr: &LocalAddr, timeout: Duration) -> Result<(), String> {
    let (mut c, _) = RawSocketClient::connect(addr, hs(15), scaled(timeout))
        .map_err(|e| format!("connect: {e}"))?;
    let payloads = [pattern(0, 1), pattern(100, 2), pattern(70_000, 3)];
    echo_on(&mut c, &payloads)
}

/// Panics unless a new link through `addr` echoes.
pub fn assert_link_works(addr: &LocalAddr) {
    if let Err(e) = try_link(addr, IO_WAIT) {
        panic!("link through {addr} does not work: {e}");
    }
}

/// Retries [`try_link`] until it succeeds or `timeout` passes; returns the time it took.
pub fn link_works_within(addr: &LocalAddr, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut last = String::new();
    let timeout = scaled(timeout);
    while start.elapsed() < timeout {
        match try_link(addr, Duration::from_secs(5)) {
            Ok(()) => return Ok(start.elapsed()),
            Err(e) => last = e,
        }
        thread::sleep(Duration::from_millis(200));
    }
    Err(format!(
        "no working link through {addr} within {timeout:?}; last error: {last}"
    ))
}

/// How a connection ended, seen from a reader.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Orderly end of stream.
    Eof,
    /// Reset / broken pipe: also a close.
    Reset(io::ErrorKind),
}

/// A RawSocket client that works on raw octets, for byte-exact checks and malformed input.
pub struct RawConn {
    pub stream: LocalStream,
}

impl RawConn {
    /// Connects (not writing anything) with a 1 s read timeout per read call.
    pub fn connect(addr: &LocalAddr) -> RawConn {
        let stream = LocalStream::connect_timeout(addr, scaled(Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        RawConn { stream }
    }

    /// Whether connecting to `addr` fails (nothing listens there).
    pub fn connect_fails(addr: &LocalAddr) -> bool {
        LocalStream::connect_timeout(addr, Duration::from_secs(2)).is_err()
    }

    pub fn write(&self, bytes: &[u8]) -> io::Result<()> {
        (&self.stream).write_all(bytes)
    }

    /// Reads exactly `n` bytes within `timeout`.
    pub fn read_exact(&self, n: usize, timeout: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + scaled(timeout);
        let mut out = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match (&self.stream).read(&mut out[got..]) {
                Ok(0) => return Err(format!("closed after {got} of {n} bytes")),
                Ok(k) => got += k,
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {
                    if Instant::now() >= deadline {
                        return Err(format!("timed out after {got} of {n} bytes"));
                    }
                }
                Err(e) => return Err(format!("{e} after {got} of {n} bytes")),
            }
        }
        Ok(out)
    }

    /// Reads until the connection closes, within `timeout`: the bytes received before the close
    /// and how it ended. Err if it is still open at the deadline.
    pub fn read_until_closed(&self, timeout: Duration) -> Result<(Vec<u8>, Ended), String> {
        let timeout = scaled(timeout);
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match (&self.stream).read(&mut buf) {
                Ok(0) => return Ok((out, Ended::Eof)),
                Ok(k) => out.extend_from_slice(&buf[..k]),
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Ok((out, Ended::Reset(e.kind()))),
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "still open after {timeout:?} ({} bytes received: {:02x?})",
                    out.len(),
                    &out[..out.len().min(16)]
                ));
            }
        }
    }

    pub fn shutdown(&self) {
        self.stream.shutdown(Shutdown::Both).ok();
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Waits until a framed client sees its connection closed; Err if a message arrives or it is
/// still open after `timeout`.
pub fn expect_client_closed(
    c: &mut RawSocketClient,
    timeout: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let timeout = scaled(timeout);
    c.set_read_timeout(Some(Duration::from_millis(500))).ok();
    loop {
        match c.recv() {
            Ok(m) => {
                return Err(format!(
                    "received a {}-byte message instead of a close",
                    m.len()
                ))
            }
            Err(ClientError::Closed) => return Ok(start.elapsed()),
            Err(ClientError::Io(e)) => {
                return match e.kind() {
                    io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe => Ok(start.elapsed()),
                    _ => Err(format!("unexpected I/O error: {e}")),
                }
            }
            Err(ClientError::Timeout) => {
                if start.elapsed() >= timeout {
                    return Err(format!("still open after {timeout:?}"));
                }
            }
            Err(e) => return Err(format!("unexpected error: {e}")),
        }
    }
}

/// Whether a connect/handshake error means "rlinkd closed the connection".
pub fn is_close(e: &ClientError) -> bool {
    match e {
        ClientError::Closed => true,
        ClientError::Io(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// `rlinkd` run with `args`: (exit success, stdout, stderr). Bounded by `timeout`.
pub fn run_cli(args: &[&str], timeout: Duration) -> (bool, String, String) {
    let mut child = std::process::Command::new(exe())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn rlinkd");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait rlinkd") {
            let mut out = String::new();
            let mut err = String::new();
            if let Some(mut s) = child.stdout.take() {
                s.read_to_string(&mut out).ok();
            }
            if let Some(mut s) = child.stderr.take() {
                s.read_to_string(&mut err).ok();
            }
            return (status.success(), out, err);
        }
        if Instant::now() >= deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("rlinkd {args:?} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// How many links `node` holds open, from its metrics.
pub fn links_open(node: &NodeProcess) -> Option<u64> {
    node_metric(node, "rlinkd_links_open", &[]).map(|v| v as u64)
}

/// Route connects `node` has waiting for a retry, from its metrics.
pub fn routes_waiting(node: &NodeProcess) -> Option<u64> {
    node_metric(node, "rlinkd_route_connects_waiting", &[]).map(|v| v as u64)
}

/// Waits until `node`'s metrics say it holds no link (and no route connect
/// waits to become one).
pub fn expect_no_links(node: &NodeProcess, timeout: Duration) {
    let ok = wait_until(timeout, || {
        links_open(node) == Some(0) && routes_waiting(node) == Some(0)
    });
    assert!(
        ok,
        "node {} still holds links after {timeout:?} (last count {:?})",
        node.name,
        links_open(node)
    );
}

/// A RawSocket "router" on a Unix socket for misbehaviour tests: it accepts every connection
/// and hands it to `serve` on a thread of its own. Stopped (and its connections closed) on drop.
pub struct ScriptedRouter {
    pub addr: LocalAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl ScriptedRouter {
    pub fn start<F>(addr: LocalAddr, serve: F) -> ScriptedRouter
    where
        F: Fn(std::os::unix::net::UnixStream) + Send + Sync + 'static,
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let LocalAddr::Unix(path) = &addr else {
            panic!("ScriptedRouter needs a unix address");
        };
        let listener = std::os::unix::net::UnixListener::bind(path).expect("bind router");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let serve = Arc::new(serve);
        let s = Arc::clone(&stop);
        let accept = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        conn.set_nonblocking(false).ok();
                        let serve = Arc::clone(&serve);
                        thread::spawn(move || serve(conn));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ScriptedRouter {
            addr,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for ScriptedRouter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            h.join().ok();
        }
    }
}

/// An admin endpoint on loopback for `plan`, at a port the node picks (see [`admin_of`]).
pub fn with_admin(plan: &mut NodePlan) -> std::net::SocketAddr {
    *plan.admin.get_or_insert(rlinkd::cluster::ADMIN_ANY_PORT)
}

/// The node's admin endpoint (every node a test starts through [`Env`] has one).
pub fn admin_of(node: &NodeProcess) -> std::net::SocketAddr {
    node.admin_addr()
        .expect("the node was started without an admin endpoint")
}

/// The sum of metric `name`'s samples with `labels` on `node` (see [`rlinkd::cluster::metric`]).
pub fn node_metric(node: &NodeProcess, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metric(admin_of(node), name, labels)
}
