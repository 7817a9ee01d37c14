//! The relays users deploy instead of rlinkd: a pair of TLS sidecars, HAProxy or stunnel, one
//! beside each router, one TLS connection per rlink between them.
//!
//! ```text
//! client --plain (unix|tcp)--> relay a ==TLS 1.3 over TCP==> relay b --plain (unix|tcp)--> router
//! ```
//!
//! Each relay runs with its defaults except what makes the set-up equal to rlinkd's: TLS 1.3
//! only, TLS_AES_128_GCM_SHA256, mutual authentication with the CA and node certificates
//! `rlinkd cert` makes, and the peer's name checked on both ends (a checks that b's certificate
//! names `b`, b that a's names `a`). Nothing is tuned: no thread count, buffer size or TLS
//! session setting is written, so HAProxy runs one thread per usable core and a reuses TLS
//! sessions to b, and stunnel runs one thread per connection, as each does out of the box. The
//! configs are generated per run ([`haproxy_config`], [`stunnel_config`]).

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Transport;
use crate::addr::LocalAddr;

/// The one TLS 1.3 cipher suite both ends allow (rlinkd's QUIC uses AES-128-GCM on AES-NI hosts).
pub const CIPHERSUITE: &str = "TLS_AES_128_GCM_SHA256";
/// How long a relay may take to listen on its address.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a relay may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Open files the bench asks for, for itself and the processes it starts. Each link holds two
/// sockets in each peer relay (one per leg), where rlinkd holds one per link plus one UDP
/// socket; with a limit of 20,000 a relay cannot carry the realms workload's 10,000 links.
const RELAY_NOFILE: libc::rlim_t = 1 << 16;

/// Raises this process's open-file limit (inherited by every process it starts) to
/// [`RELAY_NOFILE`] where it may (CAP_SYS_RESOURCE), else soft to hard; returns the soft limit.
pub fn raise_nofile() -> u64 {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write rlimit structs that live on this stack.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) != 0 {
            return 1024;
        }
        if cur.rlim_max < RELAY_NOFILE {
            let want = libc::rlimit {
                rlim_cur: RELAY_NOFILE,
                rlim_max: RELAY_NOFILE,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return RELAY_NOFILE;
            }
        }
        if cur.rlim_cur < cur.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: cur.rlim_max,
                rlim_max: cur.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return cur.rlim_max;
            }
        }
        cur.rlim_cur
    }
}

/// How many links a relay admits with `nofile` open files when nothing is configured: HAProxy
/// derives maxconn from the limit (2 sockets per connection, less a few for listeners: 9,991 at
/// 20,000 here), stunnel admits `nofile * 125 / 256` clients (9,765 at 20,000).
pub fn capacity(relay: Relay, nofile: u64) -> u64 {
    match relay {
        Relay::Haproxy => nofile.saturating_sub(64) / 2,
        Relay::Stunnel => nofile * 125 / 256,
    }
}

/// A relay program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Relay {
    Haproxy,
    Stunnel,
}

impl Relay {
    pub fn of(t: Transport) -> Option<Relay> {
        match t {
            Transport::Haproxy => Some(Relay::Haproxy),
            Transport::Stunnel => Some(Relay::Stunnel),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Relay::Haproxy => "haproxy",
            Relay::Stunnel => "stunnel",
        }
    }

    /// Executable names, in the order tried (Debian's stunnel4 installs both names).
    fn binaries(self) -> &'static [&'static str] {
        match self {
            Relay::Haproxy => &["haproxy"],
            Relay::Stunnel => &["stunnel", "stunnel4"],
        }
    }

    fn config_ext(self) -> &'static str {
        match self {
            Relay::Haproxy => "cfg",
            Relay::Stunnel => "conf",
        }
    }
}

/// What the report says about one relay program.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RelayInfo {
    pub transport: Transport,
    /// Path of the executable, or None when it is not installed.
    pub binary: Option<String>,
    /// Its own version lines (program and TLS library).
    pub version: String,
    /// The thread model it ran with, stated because it decides how a pair uses the cores.
    pub threads: String,
}

/// Finds `name` in the folders of `path` (PATH's format).
fn which(path: &std::ffi::OsStr, name: &str) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file()))
}

/// What this machine has of `relay`: the binary, its version, and its thread model.
pub fn detect(relay: Relay, cores: usize) -> RelayInfo {
    detect_in(relay, cores, &std::env::var_os("PATH").unwrap_or_default())
}

impl RelayInfo {
    /// The row text when the relay cannot run here.
    pub fn skipped(&self) -> Option<String> {
        self.binary
            .is_none()
            .then(|| format!("skipped: {} not installed", self.transport.name()))
    }
}

fn detect_in(relay: Relay, cores: usize, path: &std::ffi::OsStr) -> RelayInfo {
    let transport = match relay {
        Relay::Haproxy => Transport::Haproxy,
        Relay::Stunnel => Transport::Stunnel,
    };
    let binary = relay.binaries().iter().find_map(|b| which(path, b));
    let version = binary
        .as_ref()
        .map(|b| version_of(relay, b))
        .unwrap_or_default();
    let threads = match relay {
        Relay::Haproxy => format!(
            "1 process per relay, nbthread not set: HAProxy's default, one thread per usable core \
             ({cores} here); TCP mode, 16 KiB buffers (tune.bufsize default), a reuses TLS \
             sessions to b (HAProxy's default on server lines)"
        ),
        Relay::Stunnel => "1 process per relay, one thread per connection (stunnel's pthread \
                           model; 64 KiB thread stacks, the default), TLS session cache at \
                           stunnel's defaults"
            .to_string(),
    };
    RelayInfo {
        transport,
        binary: binary.map(|b| b.display().to_string()),
        version,
        threads,
    }
}

/// `haproxy -v` / `stunnel -version`, reduced to the lines naming the program and OpenSSL.
fn version_of(relay: Relay, bin: &Path) -> String {
    let arg = match relay {
        Relay::Haproxy => "-v",
        Relay::Stunnel => "-version",
    };
    let Ok(out) = Command::new(bin).arg(arg).stdin(Stdio::null()).output() else {
        return String::new();
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            // stunnel prefixes a timestamp and level on some builds; keep the message.
            let l = l.rsplit_once("]: ").map_or(l, |(_, m)| m);
            l.trim().to_string()
        })
        .filter(|l| {
            l.starts_with("HAProxy version")
                || l.starts_with("stunnel ")
                || l.starts_with("Running with OpenSSL")
                || l.starts_with("Running  with OpenSSL")
                || l.starts_with("Running on OpenSSL")
        })
        .map(|l| {
            // "HAProxy version 2.6.12-1 2026/10/17 - https://haproxy.org/" -> up to the date.
            l.split(" - ").next().unwrap_or(&l).to_string()
        })
        .collect();
    lines.join("; ").replace("  ", " ")
}

/// One relay of a pair, as its config describes it.
#[derive(Clone, Debug)]
pub struct RelayPlan {
    /// `a` (plain in, TLS out: next to the clients) or `b` (TLS in, plain out: next to the router).
    pub node: String,
    /// The other relay's certificate name, checked on every connection.
    pub peer: String,
    pub listen: LocalAddr,
    pub connect: LocalAddr,
    /// True on `b`: it accepts TLS. False on `a`: it connects with TLS.
    pub tls_in: bool,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// HAProxy wants certificate and key in one file; written next to the config, mode 0600.
    pub cert_and_key: PathBuf,
    pub log: PathBuf,
}

/// An address as HAProxy writes it.
fn haproxy_addr(a: &LocalAddr) -> String {
    match a {
        LocalAddr::Unix(p) => format!("unix@{}", p.display()),
        LocalAddr::Tcp(s) => s.to_string(),
    }
}

/// An address as stunnel writes it.
fn stunnel_addr(a: &LocalAddr) -> String {
    match a {
        LocalAddr::Unix(p) => p.display().to_string(),
        LocalAddr::Tcp(s) => s.to_string(),
    }
}

/// The HAProxy configuration of one relay.
pub fn haproxy_config(p: &RelayPlan) -> String {
    let tls = format!(
        "ca-file {} ssl-min-ver TLSv1.3 ssl-max-ver TLSv1.3 ciphersuites {CIPHERSUITE}",
        p.ca.display()
    );
    let (bind, server) = if p.tls_in {
        (
            format!(
                "{} ssl crt {} verify required {tls}",
                haproxy_addr(&p.listen),
                p.cert_and_key.display()
            ),
            haproxy_addr(&p.connect),
        )
    } else {
        (
            haproxy_addr(&p.listen),
            format!(
                "{} ssl verify required verifyhost {} crt {} {tls}",
                haproxy_addr(&p.connect),
                p.peer,
                p.cert_and_key.display()
            ),
        )
    };
    // The client certificate's name: verify required checks its chain, this checks who it is.
    let check_client = if p.tls_in {
        format!(
            "    tcp-request session reject unless {{ ssl_c_s_dn(CN) -m str {} }}\n",
            p.peer
        )
    } else {
        String::new()
    };
    format!(
        "# rlinkd bench: HAProxy relay {node} ({role}), generated for one run.\n\
         # Defaults except what makes the set-up equal to rlinkd's: TLS 1.3 only, {CIPHERSUITE},\n\
         # mutual authentication with the `rlinkd cert` CA, the peer's name checked. No nbthread,\n\
         # maxconn, buffer or TLS session setting: HAProxy's defaults. Timeouts are required\n\
         # settings in HAProxy; they are long so no link of the bench is ever timed out.\n\
         global\n\
         \n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   timeout connect 10s\n\
         \x20   timeout client 10m\n\
         \x20   timeout server 10m\n\
         \n\
         frontend links\n\
         \x20   bind {bind}\n\
         {check_client}\
         \x20   default_backend next\n\
         \n\
         backend next\n\
         \x20   server {next} {server}\n",
        node = p.node,
        role = if p.tls_in {
            "TLS in, plain out"
        } else {
            "plain in, TLS out"
        },
        next = if p.tls_in { "router" } else { p.peer.as_str() },
    )
}

/// The stunnel configuration of one relay.
pub fn stunnel_config(p: &RelayPlan) -> String {
    format!(
        "; rlinkd bench: stunnel relay {node} ({role}), generated for one run.\n\
         ; Defaults except what makes the set-up equal to rlinkd's: TLS 1.3 only, {CIPHERSUITE},\n\
         ; mutual authentication with the `rlinkd cert` CA, the peer's name checked. Foreground,\n\
         ; no pid file, log to a file: how the bench runs a child process.\n\
         foreground = yes\n\
         pid =\n\
         syslog = no\n\
         output = {log}\n\
         \n\
         [link]\n\
         client = {client}\n\
         accept = {accept}\n\
         connect = {connect}\n\
         cert = {cert}\n\
         key = {key}\n\
         CAfile = {ca}\n\
         verifyChain = yes\n\
         checkHost = {peer}\n\
         sslVersionMin = TLSv1.3\n\
         sslVersionMax = TLSv1.3\n\
         ciphersuites = {CIPHERSUITE}\n",
        node = p.node,
        role = if p.tls_in {
            "TLS in, plain out"
        } else {
            "plain in, TLS out"
        },
        log = p.log.display(),
        client = if p.tls_in { "no" } else { "yes" },
        accept = stunnel_addr(&p.listen),
        connect = stunnel_addr(&p.connect),
        cert = p.cert.display(),
        key = p.key.display(),
        ca = p.ca.display(),
        peer = p.peer,
    )
}

/// A running relay process. Dropping it kills it.
pub struct RelayProc {
    pub name: String,
    pub config: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl RelayProc {
    /// Writes the config of `plan` into `dir`, starts `relay` on it and waits (bounded) until it
    /// listens on `plan.listen`.
    pub fn start(relay: Relay, bin: &Path, dir: &Path, plan: &RelayPlan) -> io::Result<RelayProc> {
        let name = format!("{}-{}", relay.name(), plan.node);
        let config = dir.join(format!("{name}.{}", relay.config_ext()));
        let text = match relay {
            Relay::Haproxy => {
                let mut pem = fs::read(&plan.cert)?;
                pem.extend_from_slice(&fs::read(&plan.key)?);
                write_private(&plan.cert_and_key, &pem)?;
                haproxy_config(plan)
            }
            Relay::Stunnel => stunnel_config(plan),
        };
        fs::write(&config, text)?;
        if let LocalAddr::Unix(p) = &plan.listen {
            fs::remove_file(p).ok();
        }
        fs::write(&plan.log, b"")?;
        let log = fs::OpenOptions::new().append(true).open(&plan.log)?;
        let mut cmd = Command::new(bin);
        match relay {
            // -db: foreground, no daemon: one process whose PID and CPU the bench reads.
            Relay::Haproxy => cmd.arg("-f").arg(&config).arg("-db"),
            Relay::Stunnel => cmd.arg(&config),
        };
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: the closure runs in the forked child before exec and makes one system call
        // (prctl) on constants; it allocates nothing and takes no lock.
        unsafe {
            cmd.pre_exec(|| {
                // Killed with the bench, so a relay never outlives an aborted run.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let mut r = RelayProc {
            name,
            config,
            child: Some(child),
            log: plan.log.clone(),
        };
        r.wait_listening(&plan.listen)?;
        Ok(r)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_listening(&mut self, addr: &LocalAddr) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if listening(addr) {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(io::Error::other(format!(
                        "{} exited ({status}) before listening on {addr}:\n{}",
                        self.name,
                        self.log_text()
                    )));
                }
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "{} not listening on {addr} after {START_TIMEOUT:?}:\n{}",
                    self.name,
                    self.log_text()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]; always reaps.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().ok();
        child.wait().ok();
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    fs::remove_file(path).ok();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

/// Whether something listens on `addr`, read from /proc/net (no probe connection, which a relay
/// would forward to its peer and count).
pub fn listening(addr: &LocalAddr) -> bool {
    match addr {
        LocalAddr::Tcp(a) => {
            let file = if a.is_ipv4() {
                "/proc/net/tcp"
            } else {
                "/proc/net/tcp6"
            };
            fs::read_to_string(file).is_ok_and(|t| tcp_listening(&t, a.port()))
        }
        LocalAddr::Unix(p) => {
            fs::read_to_string("/proc/net/unix").is_ok_and(|t| unix_listening(&t, p))
        }
    }
}

/// A /proc/net/tcp table has a socket in state LISTEN (0A) on local `port`.
pub fn tcp_listening(table: &str, port: u16) -> bool {
    let want = format!(":{port:04X}");
    table.lines().skip(1).any(|l| {
        let mut f = l.split_whitespace();
        let local = f.nth(1).unwrap_or("");
        let state = f.nth(1).unwrap_or("");
        local.ends_with(&want) && state == "0A"
    })
}

/// A /proc/net/unix table has a listening socket (flag __SO_ACCEPTCON, 0x10000) bound to `path`.
/// The table keeps the name a socket was bound to: HAProxy binds `PATH.PID.tmp` and renames it
/// to PATH, so that name counts too once PATH exists.
pub fn unix_listening(table: &str, path: &Path) -> bool {
    let want = path.display().to_string();
    let renamed = format!("{want}.");
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 8
            && (f[7] == want
                || (f[7].starts_with(&renamed) && f[7].ends_with(".tmp") && path.exists()))
            && u32::from_str_radix(f[3], 16).is_ok_and(|flags| flags & 0x10000 != 0)
    })
}

/// Copies the configs of a run into `dir` (the results folder), so a committed run shows exactly
/// what the peers ran with. Keys and combined PEM files are not copied.
pub fn save_configs(configs: &[PathBuf], dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    for c in configs {
        if let Some(name) = c.file_name() {
            fs::copy(c, dir.join(name))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(tls_in: bool, unix: bool) -> RelayPlan {
        let leg = if unix {
            LocalAddr::Unix("/run/x/links.sock".into())
        } else {
            LocalAddr::Tcp("127.0.0.1:4000".parse().unwrap())
        };
        let tls: LocalAddr = LocalAddr::Tcp("127.0.0.1:5000".parse().unwrap());
        let (node, peer, listen, connect) = if tls_in {
            ("b", "a", tls, leg)
        } else {
            ("a", "b", leg, tls)
        };
        RelayPlan {
            node: node.into(),
            peer: peer.into(),
            listen,
            connect,
            tls_in,
            ca: "/c/ca.pem".into(),
            cert: format!("/c/{node}.pem").into(),
            key: format!("/c/{node}.key").into(),
            cert_and_key: format!("/p/{node}.pem").into(),
            log: format!("/p/{node}.log").into(),
        }
    }

    /// What makes the comparison fair is in the configs: TLS 1.3 only, one AES-128-GCM suite,
    /// the chain verified and the peer's name checked on both ends; and nothing is tuned.
    #[test]
    fn haproxy_pair_is_mutual_tls13_aes128_with_names_checked() {
        let a = haproxy_config(&plan(false, true));
        let b = haproxy_config(&plan(true, true));
        for c in [&a, &b] {
            assert!(c.contains("ssl-min-ver TLSv1.3 ssl-max-ver TLSv1.3"), "{c}");
            assert!(c.contains("ciphersuites TLS_AES_128_GCM_SHA256"), "{c}");
            assert!(c.contains("verify required"), "{c}");
            assert!(c.contains("ca-file /c/ca.pem"), "{c}");
            assert!(c.contains("mode tcp"), "{c}");
            let settings: Vec<&str> = c.lines().filter(|l| !l.starts_with('#')).collect();
            for tuned in ["nbthread", "maxconn", "tune.", "no-ssl-reuse", "cpu-map"] {
                assert!(
                    !settings.iter().any(|l| l.contains(tuned)),
                    "{tuned} in {c}"
                );
            }
        }
        assert!(a.contains("bind unix@/run/x/links.sock\n"), "{a}");
        assert!(
            a.contains("server b 127.0.0.1:5000 ssl verify required verifyhost b crt /p/a.pem"),
            "{a}"
        );
        assert!(
            b.contains("bind 127.0.0.1:5000 ssl crt /p/b.pem verify required"),
            "{b}"
        );
        assert!(
            b.contains("tcp-request session reject unless { ssl_c_s_dn(CN) -m str a }"),
            "{b}"
        );
        assert!(b.contains("server router unix@/run/x/links.sock\n"), "{b}");
    }

    #[test]
    fn stunnel_pair_is_mutual_tls13_aes128_with_names_checked() {
        let a = stunnel_config(&plan(false, false));
        let b = stunnel_config(&plan(true, false));
        for c in [&a, &b] {
            assert!(c.contains("sslVersionMin = TLSv1.3\nsslVersionMax = TLSv1.3"));
            assert!(c.contains("ciphersuites = TLS_AES_128_GCM_SHA256"));
            assert!(c.contains("verifyChain = yes"));
            assert!(c.contains("CAfile = /c/ca.pem"));
            let settings: Vec<&str> = c.lines().filter(|l| !l.starts_with(';')).collect();
            for tuned in ["stack", "socket", "sessionCache", "TIMEOUT"] {
                assert!(
                    !settings.iter().any(|l| l.contains(tuned)),
                    "{tuned} in {c}"
                );
            }
        }
        assert!(a.contains("client = yes\naccept = 127.0.0.1:4000\nconnect = 127.0.0.1:5000"));
        assert!(a.contains("checkHost = b") && a.contains("cert = /c/a.pem"));
        assert!(b.contains("client = no\naccept = 127.0.0.1:5000\nconnect = 127.0.0.1:4000"));
        assert!(b.contains("checkHost = a") && b.contains("key = /c/b.key"));
    }

    /// At this machine's 20,000-file limit neither relay admits 10,000 links (HAProxy stopped at
    /// 9,991, stunnel at 9,765); at 65,536 both do.
    #[test]
    fn relay_capacity_follows_the_file_limit() {
        for r in [Relay::Haproxy, Relay::Stunnel] {
            assert!(capacity(r, 20_000) < 10_000, "{r:?}");
            assert!(capacity(r, 20_000) > 9_000, "{r:?}");
            assert!(capacity(r, 1 << 16) > 30_000, "{r:?}");
        }
    }

    #[test]
    fn reads_listening_sockets_from_proc_tables() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1F91 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0\n";
        assert!(tcp_listening(tcp, 8080));
        assert!(
            !tcp_listening(tcp, 8081),
            "an established socket is not a listener"
        );
        let unix = "Num       RefCount Protocol Flags    Type St Inode Path\n0000000000000000: 00000002 00000000 00010000 0001 01 100 /run/x/links.sock\n0000000000000000: 00000003 00000000 00000000 0001 03 101 /run/x/other.sock\n";
        assert!(unix_listening(unix, Path::new("/run/x/links.sock")));
        assert!(!unix_listening(unix, Path::new("/run/x/other.sock")));
        assert!(!unix_listening(unix, Path::new("/run/x/none.sock")));
        // HAProxy's bind-then-rename: listed under the temporary name, live at the real one.
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("links.sock");
        let table = format!(
            "Num RefCount Protocol Flags Type St Inode Path\n0: 00000002 00000000 00010000 0001 01 100 {}.4242.tmp\n",
            real.display()
        );
        assert!(!unix_listening(&table, &real), "not renamed yet");
        std::fs::write(&real, b"").unwrap();
        assert!(unix_listening(&table, &real));
    }

    /// A relay that is not installed is reported as such, never silently left out.
    #[test]
    fn a_missing_relay_is_reported_as_skipped() {
        let empty = tempfile::tempdir().unwrap();
        let info = detect_in(Relay::Haproxy, 2, empty.path().as_os_str());
        assert_eq!(info.binary, None);
        assert_eq!(
            info.skipped().as_deref(),
            Some("skipped: haproxy not installed")
        );
        let fake = empty.path().join("stunnel4");
        std::fs::write(&fake, b"").unwrap();
        let info = detect_in(Relay::Stunnel, 2, empty.path().as_os_str());
        assert_eq!(info.binary.as_deref(), fake.to_str());
        assert_eq!(info.skipped(), None);
    }
}
