//! A benchmark environment: the router emulator process and, for `quic`, the two rlinkd nodes
//! between it and the clients (for `haproxy` and `stunnel`, the two relays), all on loopback.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use boring::ssl::SslConnector;

use super::load::SysSample;
use super::peers::{Relay, RelayInfo, RelayPlan, RelayProc};
use super::procs::{sample, ProcSample};
use super::router::{RouterMode, RouterReport};
use super::stream::{tls_connector, ROUTER_NAME};
use super::{Transport, Variant, PAYLOAD_1500};
use crate::addr::LocalAddr;
use crate::cluster::{free_tcp_port, free_udp_port, NodePlan, NodeProcess};

/// The router emulator child process.
pub struct RouterProc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl RouterProc {
    pub fn start(
        exe: &Path,
        listen: &LocalAddr,
        mode: RouterMode,
        tls: Option<(&Path, &Path)>,
    ) -> io::Result<RouterProc> {
        let mut cmd = Command::new(exe);
        cmd.arg("bench-router")
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--mode")
            .arg(match mode {
                RouterMode::Sink => "sink",
                RouterMode::Echo => "echo",
            });
        if let Some((c, k)) = tls {
            cmd.arg("--tls-cert").arg(c).arg("--tls-key").arg(k);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no stdin"))?;
        let stdout = BufReader::new(
            child
                .stdout
                .take()
                .ok_or_else(|| io::Error::other("no stdout"))?,
        );
        let mut r = RouterProc {
            child,
            stdin,
            stdout,
        };
        let mut line = String::new();
        r.stdout.read_line(&mut line)?;
        if line.trim() != "ready" {
            return Err(io::Error::other(format!(
                "router emulator did not start: {line:?}"
            )));
        }
        Ok(r)
    }

    pub fn command(&mut self, cmd: &str) -> io::Result<()> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()
    }

    pub fn stats(&mut self) -> io::Result<RouterReport> {
        self.command("stats")?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        serde_json::from_str(&line)
            .map_err(|e| io::Error::other(format!("router stats {line:?}: {e}")))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RouterProc {
    fn drop(&mut self) {
        self.command("quit").ok();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Everything one (transport, workload) run needs.
pub struct Env {
    pub transport: Transport,
    pub router: RouterProc,
    pub nodes: Vec<NodeProcess>,
    /// haproxy/stunnel: relay a (next to the clients), then b.
    pub relays: Vec<RelayProc>,
    /// Where clients connect.
    pub client_addr: LocalAddr,
    pub tls: Option<SslConnector>,
}

pub struct EnvOptions<'a> {
    pub exe: &'a Path,
    pub dir: &'a Path,
    pub certs: &'a Path,
    /// Local legs (client to relay a, relay b to router) over Unix sockets, else TCP.
    pub quic_leg_unix: bool,
    pub gso: bool,
    /// quic: `relay.buffer_size` of both nodes, in bytes (None: their default).
    pub relay_buffer: Option<u64>,
    /// The peer relays found on this machine.
    pub relays: &'a [RelayInfo],
}

/// Every process of a run and the machine, read at one moment.
pub struct Snapshot {
    pub procs: Vec<(String, ProcSample)>,
    pub sys: SysSample,
    pub at: std::time::Instant,
    /// quic: the system calls of both rlinkd nodes so far, by call ([`Env::node_syscalls`]).
    pub syscalls: Option<BTreeMap<String, u64>>,
}

impl Env {
    pub fn start(v: Variant, mode: RouterMode, o: &EnvOptions<'_>) -> io::Result<Env> {
        let t = v.transport;
        let unix = |name: &str| LocalAddr::Unix(o.dir.join(name));
        let tcp = || -> io::Result<LocalAddr> {
            Ok(LocalAddr::Tcp(
                format!("127.0.0.1:{}", free_tcp_port()?)
                    .parse()
                    .map_err(io::Error::other)?,
            ))
        };
        let cert = o.certs.join(format!("{ROUTER_NAME}.pem"));
        let key = o.certs.join(format!("{ROUTER_NAME}.key"));
        match t {
            Transport::Tcp | Transport::Uds | Transport::Tls => {
                let addr = if t == Transport::Uds {
                    unix("router.sock")
                } else {
                    tcp()?
                };
                let tls_files = (t == Transport::Tls).then_some((cert.as_path(), key.as_path()));
                let router = RouterProc::start(o.exe, &addr, mode, tls_files)?;
                let tls = if t == Transport::Tls {
                    Some(tls_connector(&o.certs.join("ca.pem"))?)
                } else {
                    None
                };
                Ok(Env {
                    transport: t,
                    router,
                    nodes: Vec::new(),
                    relays: Vec::new(),
                    client_addr: addr,
                    tls,
                })
            }
            Transport::Haproxy | Transport::Stunnel => {
                let relay = Relay::of(t).ok_or_else(|| io::Error::other("not a relay"))?;
                let bin = o
                    .relays
                    .iter()
                    .find(|r| r.transport == t)
                    .and_then(|r| r.binary.clone())
                    .ok_or_else(|| io::Error::other(format!("{} not installed", t.name())))?;
                let (router_addr, link_addr) = if o.quic_leg_unix {
                    (unix("router.sock"), unix("a-to-b.sock"))
                } else {
                    (tcp()?, tcp()?)
                };
                let between = tcp()?;
                let router = RouterProc::start(o.exe, &router_addr, mode, None)?;
                let peers_dir = o.dir.join("peers");
                std::fs::create_dir_all(&peers_dir)?;
                let plan = |node: &str, peer: &str, listen, connect, tls_in| RelayPlan {
                    node: node.into(),
                    peer: peer.into(),
                    listen,
                    connect,
                    tls_in,
                    ca: o.certs.join("ca.pem"),
                    cert: o.certs.join(format!("{node}.pem")),
                    key: o.certs.join(format!("{node}.key")),
                    cert_and_key: peers_dir.join(format!("{}-{node}.pem", relay.name())),
                    log: peers_dir.join(format!("{}-{node}.log", relay.name())),
                };
                // b first, so a's first connection finds it listening.
                let b = RelayProc::start(
                    relay,
                    bin.as_ref(),
                    &peers_dir,
                    &plan("b", "a", between.clone(), router_addr, true),
                )?;
                let a = RelayProc::start(
                    relay,
                    bin.as_ref(),
                    &peers_dir,
                    &plan("a", "b", link_addr.clone(), between, false),
                )?;
                Ok(Env {
                    transport: t,
                    router,
                    nodes: Vec::new(),
                    relays: vec![a, b],
                    client_addr: link_addr,
                    tls: None,
                })
            }
            Transport::Quic => {
                let (router_addr, link_addr) = if o.quic_leg_unix {
                    (unix("router.sock"), unix("a-to-b.sock"))
                } else {
                    (tcp()?, tcp()?)
                };
                let router = RouterProc::start(o.exe, &router_addr, mode, None)?;
                let (pa, pb) = (free_udp_port()?, free_udp_port()?);
                let payload = v.udp_payload.unwrap_or(PAYLOAD_1500);
                let mut extra = vec![format!("max_udp_payload = {payload}")];
                if !o.gso {
                    extra.push("gso = false".into());
                    extra.push("gro = false".into());
                }
                let mut a = NodePlan::new("a", pa);
                a.peers.push(("b".into(), Some(pb)));
                a.links
                    .push(("b".into(), link_addr.clone(), "router".into()));
                a.quic_extra = extra.clone();
                a.top_extra.push("stats_interval = \"0s\"".into());
                a.admin = Some(crate::cluster::ADMIN_ANY_PORT);
                let mut b = NodePlan::new("b", pb);
                b.peers.push(("a".into(), None));
                b.routes.push(("router".into(), router_addr));
                b.quic_extra = extra;
                if let Some(bytes) = o.relay_buffer {
                    for node in [&mut a, &mut b] {
                        node.relay_extra.push(format!("buffer_size = {bytes}"));
                    }
                }
                b.top_extra.push("stats_interval = \"0s\"".into());
                b.admin = Some(crate::cluster::ADMIN_ANY_PORT);
                if let Some(n) = v.shards {
                    // Both nodes share this machine: a on the first n CPUs of the mask, b on the
                    // last n, so that with fewer shards than CPUs they do not pile on one core
                    // (each pins its shards; on separate machines both would use CPU 0).
                    let cpus = crate::shard::placement::allowed_cpus()
                        .map(|c| c.as_slice().to_vec())
                        .unwrap_or_default();
                    a.top_extra.push(format!("shards = {n}"));
                    b.top_extra.push(format!("shards = {n}"));
                    if n <= cpus.len() {
                        let list = |c: &[usize]| {
                            c.iter()
                                .map(usize::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        };
                        a.top_extra.push(format!("cpus = [{}]", list(&cpus[..n])));
                        b.top_extra
                            .push(format!("cpus = [{}]", list(&cpus[cpus.len() - n..])));
                    }
                }
                if let Some(io) = v.io {
                    a.top_extra.push(format!("io = {:?}", io.name()));
                    b.top_extra.push(format!("io = {:?}", io.name()));
                }
                let node_b = NodeProcess::start(o.exe, o.dir, o.certs, &b)?;
                let node_a = NodeProcess::start(o.exe, o.dir, o.certs, &a)?;
                // Ready: a's shards are all connected to b (its /readyz says 200).
                if !wait_ready(node_a.admin_addr(), Duration::from_secs(10)) {
                    return Err(io::Error::other(format!(
                        "rlinkd a did not connect to b:\n{}",
                        node_a.log_text()
                    )));
                }
                Ok(Env {
                    transport: t,
                    router,
                    nodes: vec![node_a, node_b],
                    relays: Vec::new(),
                    client_addr: link_addr,
                    tls: None,
                })
            }
        }
    }

    /// (name, pid) of every process of this run: the bench process itself runs the clients.
    pub fn processes(&self) -> Vec<(String, u32)> {
        let mut v = vec![
            ("clients".to_string(), std::process::id()),
            ("router".to_string(), self.router.pid()),
        ];
        for n in &self.nodes {
            if let Some(pid) = n.pid() {
                v.push((format!("rlinkd-{}", n.name), pid));
            }
        }
        for r in &self.relays {
            if let Some(pid) = r.pid() {
                v.push((r.name.clone(), pid));
            }
        }
        v
    }

    pub fn sample_all(&self) -> Snapshot {
        let procs = self
            .processes()
            .into_iter()
            .map(|(n, pid)| (n, sample(pid).unwrap_or_default()))
            .collect();
        Snapshot {
            procs,
            sys: SysSample::read(),
            at: std::time::Instant::now(),
            syscalls: self.node_syscalls(),
        }
    }

    /// The system calls every rlinkd node's shards have made so far, by call
    /// (`rlinkd_syscalls_total`, counted by the backends), summed over the nodes; `None` without
    /// nodes or when one does not answer. One scrape per node: the shards answer between turns.
    pub fn node_syscalls(&self) -> Option<BTreeMap<String, u64>> {
        if self.nodes.is_empty() {
            return None;
        }
        let mut sum = BTreeMap::new();
        for n in &self.nodes {
            let (status, body) = crate::cluster::http_get(n.admin_addr()?, "/metrics")?;
            if status != 200 {
                return None;
            }
            add_syscalls(&body, &mut sum);
        }
        Some(sum)
    }

    /// Stops the relays (haproxy, stunnel) and returns the configs they ran with.
    pub fn stop_relays(&mut self) -> Vec<PathBuf> {
        let mut configs = Vec::new();
        for r in &mut self.relays {
            r.stop();
            configs.push(r.config.clone());
        }
        configs
    }

    /// Stops the nodes and returns their UDP counters parsed from the final stats line:
    /// (node, datagrams sent, send calls, datagrams received, receive calls).
    /// Each rlinkd node's UDP counters (datagrams sent, send calls, datagrams received, receive
    /// calls), read from its admin endpoint, then the nodes stopped.
    pub fn stop_nodes(&mut self) -> Vec<(String, NodeFigures)> {
        let mut out = Vec::new();
        for n in &mut self.nodes {
            if let Some(c) = n.admin_addr().and_then(NodeFigures::scrape) {
                out.push((n.name.clone(), c));
            }
            n.stop();
        }
        out
    }
}

/// Waits until the admin endpoint at `admin` says the node is ready.
fn wait_ready(admin: Option<std::net::SocketAddr>, timeout: Duration) -> bool {
    let Some(admin) = admin else { return false };
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if crate::cluster::http_get(admin, "/readyz").is_some_and(|(s, _)| s == 200) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A node's counters at the end of a run, from its admin endpoint.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeFigures {
    pub datagrams_sent: u64,
    pub send_calls: u64,
    pub datagrams_received: u64,
    pub receive_calls: u64,
    /// Bytes copied in user space, all copies (`rlinkd_copied_bytes_total`).
    pub copied_bytes: u64,
    /// RawSocket bytes the node relayed, both directions: the messages' payload
    /// (`rlinkd_link_bytes_total`) and their 4-byte frame headers (`rlinkd_link_frames_total`).
    pub link_bytes: u64,
}

impl NodeFigures {
    fn scrape(admin: std::net::SocketAddr) -> Option<NodeFigures> {
        let m = |name| crate::cluster::metric(admin, name, &[]).map(|v| v as u64);
        Some(NodeFigures {
            datagrams_sent: m("rlinkd_datagrams_sent_total")?,
            send_calls: m("rlinkd_udp_send_calls_total")?,
            datagrams_received: m("rlinkd_datagrams_received_total")?,
            receive_calls: m("rlinkd_udp_receive_calls_total")?,
            copied_bytes: m("rlinkd_copied_bytes_total")?,
            link_bytes: m("rlinkd_link_bytes_total").unwrap_or(0)
                + crate::rawsocket::HEADER_LEN as u64 * m("rlinkd_link_frames_total").unwrap_or(0),
        })
    }
}

/// Adds the `rlinkd_syscalls_total{...,call="x"} n` samples of an exposition to `into`, by call
/// (every shard's together).
fn add_syscalls(metrics: &str, into: &mut BTreeMap<String, u64>) {
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("rlinkd_syscalls_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let call = labels
            .split(',')
            .find_map(|kv| kv.strip_prefix("call=\""))
            .and_then(|v| v.strip_suffix('"'));
        if let (Some(call), Ok(v)) = (call, value.trim().parse::<u64>()) {
            *into.entry(call.to_string()).or_insert(0) += v;
        }
    }
}

/// Where benchmark files go unless `--dir` says otherwise.
pub fn default_dir() -> PathBuf {
    PathBuf::from("build/bench")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_samples_are_summed_by_call_over_shards() {
        let text = "# HELP rlinkd_syscalls System calls\n\
            rlinkd_syscalls_total{shard=\"0\",call=\"epoll_wait\"} 10\n\
            rlinkd_syscalls_total{shard=\"1\",call=\"epoll_wait\"} 5\n\
            rlinkd_syscalls_total{shard=\"1\",call=\"udp_sendmsg\"} 7\n\
            rlinkd_syscalls_created{shard=\"1\",call=\"udp_sendmsg\"} 1.0\n\
            rlinkd_udp_send_calls_total{shard=\"0\"} 99\n";
        let mut sum = BTreeMap::new();
        add_syscalls(text, &mut sum);
        add_syscalls(text, &mut sum);
        assert_eq!(sum.len(), 2);
        assert_eq!(sum["epoll_wait"], 30);
        assert_eq!(sum["udp_sendmsg"], 14);
    }
}
