//! Loopback clusters of real `rlinkd run` processes: write node configs, start nodes as child
//! processes, stop them by PID. Used by `rlinkd demo`, the integration tests and `rlinkd bench`
//! (nodes run as separate processes, as in production).

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::addr::LocalAddr;

/// What one node of a test or demo cluster does.
#[derive(Clone, Debug)]
pub struct NodePlan {
    pub name: String,
    pub quic_port: u16,
    /// (peer name, its QUIC port if this node dials it)
    pub peers: Vec<(String, Option<u16>)>,
    /// (peer, local endpoint, route on the peer)
    pub links: Vec<(String, LocalAddr, String)>,
    /// (route name, target)
    pub routes: Vec<(String, LocalAddr)>,
    /// Extra `key = value` lines for the `[quic]` table.
    pub quic_extra: Vec<String>,
    /// Extra top-level `key = value` lines.
    pub top_extra: Vec<String>,
    /// Extra `key = value` lines for the `[relay]` table.
    pub relay_extra: Vec<String>,
    /// Start the process with this open-files limit (soft and hard), through `prlimit`.
    pub fd_limit: Option<u64>,
    /// `[admin] listen`: where tests and the bench read the node's figures.
    pub admin: Option<std::net::SocketAddr>,
    /// A command the node runs under (e.g. `valgrind --tool=memcheck ...`): the process is
    /// `wrapper... rlinkd run ...` (inside `prlimit` when `fd_limit` is set). The wrapper must
    /// run rlinkd in its own process (as valgrind does), so that signals sent to the PID reach
    /// rlinkd. Empty: none.
    pub wrapper: Vec<String>,
}

impl NodePlan {
    pub fn new(name: &str, quic_port: u16) -> NodePlan {
        NodePlan {
            name: name.to_string(),
            quic_port,
            peers: Vec::new(),
            links: Vec::new(),
            routes: Vec::new(),
            quic_extra: Vec::new(),
            top_extra: Vec::new(),
            relay_extra: Vec::new(),
            fd_limit: None,
            admin: None,
            wrapper: Vec::new(),
        }
    }

    /// The TOML configuration, with certificates from `certs`.
    pub fn to_toml(&self, certs: &Path) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "node = {:?}", self.name);
        for l in &self.top_extra {
            let _ = writeln!(t, "{l}");
        }
        if let Some(a) = self.admin {
            let _ = writeln!(t, "admin = {{ listen = \"{a}\" }}");
        }
        let _ = writeln!(t, "\n[quic]\nlisten = \"127.0.0.1:{}\"", self.quic_port);
        for (k, f) in [
            ("cert", format!("{}.pem", self.name)),
            ("key", format!("{}.key", self.name)),
            ("ca", "ca.pem".to_string()),
        ] {
            let _ = writeln!(t, "{k} = {:?}", certs.join(f).display().to_string());
        }
        for l in &self.quic_extra {
            let _ = writeln!(t, "{l}");
        }
        if !self.relay_extra.is_empty() {
            let _ = writeln!(t, "\n[relay]");
            for l in &self.relay_extra {
                let _ = writeln!(t, "{l}");
            }
        }
        for (name, port) in &self.peers {
            let _ = writeln!(t, "\n[[peers]]\nname = {name:?}");
            if let Some(p) = port {
                let _ = writeln!(t, "connect = \"127.0.0.1:{p}\"");
            }
        }
        for (peer, listen, route) in &self.links {
            let _ = writeln!(
                t,
                "\n[[links]]\npeer = {peer:?}\nlisten = {:?}\nroute = {route:?}",
                listen.to_string()
            );
        }
        for (name, target) in &self.routes {
            let _ = writeln!(
                t,
                "\n[[routes]]\nname = {name:?}\nconnect = {:?}",
                target.to_string()
            );
        }
        t
    }
}

/// A UDP port that was free a moment ago on 127.0.0.1.
pub fn free_udp_port() -> io::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_tcp_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// An admin endpoint on loopback at a port the node picks ([`NodeProcess::admin_addr`] finds
/// it), so that concurrent tests never race for one.
pub const ADMIN_ANY_PORT: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0),
);

/// `GET path` on an admin endpoint: (status, body); `None` when it does not answer.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: rlinkd\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// The sum of the samples of metric `name` (as exposed, e.g. `rlinkd_links_open` or
/// `rlinkd_link_frames_total`) whose labels include every pair of `labels`, from one scrape of
/// the admin endpoint at `addr`; `None` when it does not answer or has no such sample.
pub fn metric(addr: std::net::SocketAddr, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let (status, body) = http_get(addr, "/metrics")?;
    if status != 200 {
        return None;
    }
    let mut found = None;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels_text, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some(lv) => lv,
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        if labels
            .iter()
            .all(|(k, v)| labels_text.contains(&format!("{k}=\"{v}\"")))
        {
            let v: f64 = value.trim().parse().ok()?;
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// A running `rlinkd run` child process. Dropping it kills it.
pub struct NodeProcess {
    pub name: String,
    pub config: PathBuf,
    pub log: PathBuf,
    /// The admin endpoint as the plan gave it (port 0: the node picks one, see
    /// [`NodeProcess::admin_addr`]).
    pub admin: Option<std::net::SocketAddr>,
    /// "admin endpoint listening" lines in the log before the current process started.
    admin_lines_before: usize,
    admin_found: std::sync::Mutex<Option<std::net::SocketAddr>>,
    exe: PathBuf,
    fd_limit: Option<u64>,
    wrapper: Vec<String>,
    child: Option<Child>,
}

impl NodeProcess {
    /// Writes `plan`'s config into `dir` and starts `exe run --config` with its log in `dir`.
    pub fn start(exe: &Path, dir: &Path, certs: &Path, plan: &NodePlan) -> io::Result<NodeProcess> {
        let config = dir.join(format!("{}.toml", plan.name));
        fs::write(&config, plan.to_toml(certs))?;
        let log = dir.join(format!("{}.log", plan.name));
        // A fresh log per start; restarts of the same process append to it.
        fs::write(&log, b"")?;
        let mut node = NodeProcess {
            name: plan.name.clone(),
            log,
            config,
            admin: plan.admin,
            admin_lines_before: 0,
            admin_found: std::sync::Mutex::new(None),
            exe: exe.to_path_buf(),
            fd_limit: plan.fd_limit,
            wrapper: plan.wrapper.clone(),
            child: None,
        };
        node.spawn()?;
        Ok(node)
    }

    fn spawn(&mut self) -> io::Result<()> {
        self.admin_lines_before = self.admin_lines().len();
        *self.admin_found.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        // prlimit, then the wrapper, then rlinkd: each execs the next in the same process.
        let mut words: Vec<std::ffi::OsString> = Vec::new();
        if let Some(n) = self.fd_limit {
            words.extend([
                "prlimit".into(),
                format!("--nofile={n}:{n}").into(),
                "--".into(),
            ]);
        }
        words.extend(self.wrapper.iter().map(Into::into));
        words.push(self.exe.clone().into());
        let mut cmd = Command::new(&words[0]);
        cmd.args(&words[1..]);
        let child = cmd
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stops with SIGTERM (the node drains), waiting up to 15 s before SIGKILL.
    pub fn stop(&mut self) {
        self.signal_and_wait(libc::SIGTERM, Duration::from_secs(15));
    }

    /// Sends `sig` and returns at once.
    pub fn signal(&self, sig: libc::c_int) {
        let Some(child) = self.child.as_ref() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped yet.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// Waits up to `timeout` for the process to exit; its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Open file descriptors of the process (from /proc), if it runs.
    pub fn fd_count(&self) -> Option<usize> {
        let pid = self.pid()?;
        Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
    }

    /// Kills with SIGKILL: the peer sees no close, as when a host dies.
    pub fn kill(&mut self) {
        self.signal_and_wait(libc::SIGKILL, Duration::from_secs(5));
    }

    /// Starts the same node again.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.spawn()
    }

    /// Starts the node again after a `kill`/`stop`.
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Err(io::Error::other("node is still running"));
        }
        self.spawn()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn admin_lines(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("admin endpoint listening"))
            .map(str::to_string)
            .collect()
    }

    /// Where the admin endpoint of the running process listens: the configured address, or,
    /// for port 0 (no two tests can race for a port), the one the process logged at start
    /// (waiting up to 10 s for it). `None` without an admin endpoint.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        let configured = self.admin?;
        if configured.port() != 0 {
            return Some(configured);
        }
        let mut found = self.admin_found.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = *found {
            return Some(a);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let line = self.admin_lines().into_iter().nth(self.admin_lines_before);
            let addr = line.as_deref().and_then(|l| {
                // Text logs: `addr=127.0.0.1:41234`; JSON logs: `"addr":"127.0.0.1:41234"`.
                let rest = l
                    .split("addr=")
                    .nth(1)
                    .or_else(|| l.split("\"addr\":\"").nth(1))?;
                rest.split([' ', '"']).next()?.parse().ok()
            });
            if let Some(a) = addr {
                *found = Some(a);
                return Some(a);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal_and_wait(&mut self, sig: libc::c_int, patience: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped yet.
            unsafe {
                libc::kill(pid, sig);
            }
        }
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().ok();
        child.wait().ok();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.signal_and_wait(libc::SIGKILL, Duration::from_secs(2));
    }
}

/// Waits until `log` contains `needle` (true) or `timeout` passes (false).
pub fn wait_for_log(node: &NodeProcess, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if node.log_text().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
