//! The node: one shard per CPU, each a thread pinned to its CPU that runs a shard loop on the
//! node's I/O backend ([`super::backend`]: a `MioShard` or a `UringShard`, built from the same
//! [`ShardSetup`]), and a supervisor on the calling thread that owns the signals, the stats line
//! and the shards' ends.
//!
//! Shared nothing on the hot path: each shard owns its UDP socket of the node's reuseport group
//! (steered by connection ID, `crate::io::steer`), its QUIC connections, its link endpoints'
//! listeners and its links. Shards talk only through [`Mailbox`]es (a channel and a waker) to
//! hand over a stray datagram, an ICMP error or a Unix connection; the supervisor uses the same
//! mailboxes to stop them and to ask for their figures.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mio::Poll;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use super::backend::{self, Backend, ShardLoop};
use super::core::ShardReport;
use super::inbox::{Mailbox, ShardMsg, ShardReload, ShardSetup};
use super::mio_loop::{raise_fd_limit, NodeError};
use super::placement::{allowed_cpus, pin_current_thread, Placement};
use crate::addr::LocalAddr;
use crate::admin::snapshot::ShardSnapshot;
use crate::admin::{AdminServer, AdminSource, NodeSnapshot, Readiness};
use crate::config::NodeConfig;
use crate::io::local::bind_for_shards;
use crate::io::steer::{self, Steering};
use crate::ops::notify;
use crate::shard::reload::{self, ReloadError};

/// How long the supervisor waits for a shard's figures.
const REPORT_WAIT: Duration = Duration::from_secs(1);

/// What the supervisor hears about.
enum Event {
    Signal(i32),
    /// Shard `shard` has stopped, with its last figures or the error that ended it.
    Exited {
        shard: usize,
        result: Box<Result<ShardReport, NodeError>>,
    },
}

struct ShardHandle {
    mailbox: Mailbox,
    thread: Option<JoinHandle<()>>,
}

/// A running node: its shards are up once [`Node::bind`] returns.
pub struct Node {
    cfg: NodeConfig,
    quic_addr: SocketAddr,
    shards: Vec<ShardHandle>,
    events: Receiver<Event>,
    signals: signal_hook::iterator::Handle,
    /// Set when the first stop signal starts the drain.
    draining: Arc<AtomicBool>,
    admin: Option<AdminServer>,
}

impl Node {
    /// Decides the shards and their CPUs, binds every socket the configuration names (failing
    /// with the address that could not be used), and starts the shards.
    pub fn bind(cfg: NodeConfig) -> Result<Node, NodeError> {
        raise_fd_limit();
        let placement = Placement::plan(
            cfg.shards.count,
            cfg.shards.cpus.as_deref(),
            &allowed_cpus()?,
        )?;
        if let Some(w) = placement.warning() {
            tracing::warn!("{w}");
        }
        let n = placement.shards();
        let io = backend::choose(cfg.io);
        let group = if cfg.quic.steering {
            steer::bind_group(cfg.quic.listen, n)?
        } else {
            let (sockets, local) = steer::bind_reuseport(cfg.quic.listen, n.get())?;
            steer::ReuseportGroup {
                sockets,
                local,
                steering: Steering::UserSpace(std::io::Error::other("quic.steering = false")),
            }
        };
        if let Steering::UserSpace(e) = &group.steering {
            if n.get() > 1 {
                tracing::warn!(error = %e, "cannot attach the connection-ID steering program: the kernel spreads datagrams by address, and shards hand strays to their owner");
            }
        }
        let quic_addr = group.local;
        let mut listeners: Vec<Vec<Option<_>>> = (0..n.get()).map(|_| Vec::new()).collect();
        for link in &cfg.links {
            let per_shard =
                bind_for_shards(&link.listen, n.get()).map_err(|source| NodeError::Listen {
                    addr: link.listen.clone(),
                    source,
                })?;
            for (i, l) in per_shard.into_iter().enumerate() {
                listeners[i].push(l);
            }
        }
        let mut polls = Vec::new();
        let mut mailboxes = Vec::new();
        let mut inboxes = Vec::new();
        for _ in 0..n.get() {
            let poll = Poll::new().map_err(NodeError::Poll)?;
            let (mailbox, inbox) = Mailbox::new(&poll).map_err(NodeError::Poll)?;
            polls.push(poll);
            mailboxes.push(mailbox);
            inboxes.push(inbox);
        }
        let (events_tx, events) = crossbeam_channel::unbounded();
        let mut signals =
            Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1]).map_err(NodeError::Poll)?;
        let handle = signals.handle();
        let tx = events_tx.clone();
        std::thread::Builder::new()
            .name("rlinkd-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if tx.send(Event::Signal(sig)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|source| NodeError::Thread { shard: 0, source })?;

        // Each shard builds its loop on its own thread (after pinning, so its memory is local)
        // and says whether it could; the node is up when all have.
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(n.get());
        // One per process, in every connection ID its shards issue: peers tell this process's
        // shards from another process with the same certificate.
        let instance: u64 = rand::random();
        let mut shards = Vec::new();
        let sockets = group.sockets.into_iter();
        for (index, ((socket, (poll, inbox)), listeners)) in sockets
            .zip(polls.into_iter().zip(inboxes))
            .zip(listeners)
            .enumerate()
        {
            let setup = ShardSetup {
                index,
                instance,
                shards: n,
                poll,
                inbox,
                mailboxes: mailboxes.clone(),
                udp: socket,
                listeners,
            };
            let cpu = placement.cpu(index);
            let cfg = shard_config(&cfg, n.get());
            let ready = ready_tx.clone();
            let exited = events_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("rlinkd-shard-{index}"))
                .spawn(move || shard_main(cfg, io, setup, cpu, ready, exited))
                .map_err(|source| NodeError::Thread {
                    shard: index,
                    source,
                })?;
            shards.push(ShardHandle {
                mailbox: mailboxes[index].clone(),
                thread: Some(thread),
            });
        }
        drop(ready_tx);
        let mut node = Node {
            cfg,
            quic_addr,
            shards,
            events,
            signals: handle,
            draining: Arc::new(AtomicBool::new(false)),
            admin: None,
        };
        let mut failure = None;
        for _ in 0..n.get() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failure.get_or_insert(e);
                }
                Err(_) => {
                    failure.get_or_insert(NodeError::ShardLost {
                        shard: 0,
                        reason: "a shard thread ended while starting".into(),
                    });
                }
            }
        }
        if let Some(e) = failure {
            node.stop_all_now();
            return Err(e);
        }
        if let Some(a) = node.cfg.admin.clone() {
            let source = Arc::new(NodeAdmin {
                node: node.cfg.node.clone(),
                mailboxes: node.shards.iter().map(|s| s.mailbox.clone()).collect(),
                draining: Arc::clone(&node.draining),
                dialed: node
                    .cfg
                    .peers
                    .iter()
                    .filter(|p| p.connect.is_some())
                    .map(|p| p.name.clone())
                    .collect(),
            });
            match AdminServer::start(a.listen, source) {
                Ok(server) => {
                    tracing::info!(addr = %server.local_addr(), "admin endpoint listening: /metrics, /healthz, /readyz");
                    node.admin = Some(server);
                }
                Err(source) => {
                    node.stop_all_now();
                    return Err(NodeError::Admin {
                        addr: a.listen,
                        source,
                    });
                }
            }
        }
        tracing::info!(node = %node.cfg.node, quic = %quic_addr, shards = n.get(), cpus = ?placement.cpus(), steering = matches!(group.steering, Steering::Kernel), "node listening");
        Ok(node)
    }

    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }

    /// Runs until SIGINT or SIGTERM (every shard drained) or a second one (at once).
    pub fn run(&mut self) -> Result<(), NodeError> {
        let mut next_stats = self.cfg.stats_interval.map(|d| Instant::now() + d);
        let mut running = self.shards.len();
        let mut last = vec![None; self.shards.len()];
        let mut failure = None;
        while running > 0 {
            let wait = next_stats.map(|t| t.saturating_duration_since(Instant::now()));
            let event = match wait {
                Some(w) => self.events.recv_timeout(w),
                None => self
                    .events
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match event {
                Ok(Event::Signal(SIGHUP)) => {
                    self.reload();
                    next_stats = self.cfg.stats_interval.map(|d| Instant::now() + d);
                }
                Ok(Event::Signal(SIGUSR1)) => self.log_stats(),
                Ok(Event::Signal(_)) => self.stop_shards(),
                Ok(Event::Exited { shard, result }) => {
                    running -= 1;
                    if let Some(t) = self.shards[shard].thread.take() {
                        t.join().ok();
                    }
                    match *result {
                        Ok(r) => last[shard] = Some(r),
                        Err(e) => {
                            tracing::error!(shard, error = %e, "shard failed: stopping the node");
                            failure.get_or_insert(e);
                            self.stop_shards();
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.log_stats();
                    next_stats = self.cfg.stats_interval.map(|d| Instant::now() + d);
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        ShardReport::total(last.iter().flatten()).log();
        self.signals.close();
        tracing::info!(node = %self.cfg.node, "stopped");
        failure.map_or(Ok(()), Err)
    }

    /// The admin endpoint's address, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::local_addr)
    }

    /// Whether the node is draining or stopping: true from the first SIGTERM or SIGINT (or a
    /// shard's failure) on. Readiness checks report a draining node as not ready.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The flag behind [`Node::is_draining`], for a thread that outlives a borrow of the node
    /// (the admin endpoint).
    pub fn draining_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.draining)
    }

    /// A stop signal for every shard: the first drains (and tells systemd), a second one stops
    /// at once.
    fn stop_shards(&self) {
        if !self.draining.swap(true, Ordering::Relaxed) {
            notify::stopping();
        }
        self.tell_all(|| ShardMsg::Stop);
    }

    /// SIGHUP: reads the configuration file again and applies it, or logs why not and keeps the
    /// configuration in force (`shard::reload`). Never stops the node.
    fn reload(&mut self) {
        notify::reloading();
        tracing::info!(node = %self.cfg.node, file = %self.cfg.source.display(), "reloading the configuration");
        let plan = if self.is_draining() {
            Err(ReloadError::Stopping)
        } else {
            reload::plan(&self.cfg, self.shards.len())
        };
        let plan = match plan {
            Ok(p) => p,
            Err(e) => {
                // One line (a TOML error spans several), so it stays one log record.
                let e: Vec<String> = e
                    .to_string()
                    .lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty() && l != "|")
                    .collect();
                let e = e.join(" ");
                tracing::error!(node = %self.cfg.node, "reload refused, the configuration in force is unchanged: {e}");
                notify::ready("reload refused; running with the configuration in force");
                return;
            }
        };
        if plan.cfg.log_level != self.cfg.log_level {
            apply_log_level(&plan.cfg.log_level);
        }
        match plan.cfg.certificate_report() {
            Ok(r) => {
                let fingerprint =
                    crate::quic::tls::certificate_file_fingerprint(&plan.cfg.quic.cert)
                        .unwrap_or_default();
                tracing::info!(subject = %r.subject, not_after = %r.not_after, days_left = r.days_left, cert = %fingerprint, "certificate for new connections");
                for w in &r.warnings {
                    tracing::warn!("{w}");
                }
            }
            Err(e) => tracing::warn!("{e}"),
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        // Last shard first: shard 0 hands Unix connections to the others by endpoint index, so
        // every other shard must have the new indices queued before shard 0 can use them.
        let n = self.shards.len();
        let mut asked = 0;
        for (i, listeners) in plan.listeners.into_iter().enumerate().rev() {
            let msg = ShardReload {
                cfg: shard_config(&plan.cfg, n),
                listeners,
                done: tx.clone(),
            };
            if self.shards[i].mailbox.send(ShardMsg::Reload(Box::new(msg))) {
                asked += 1;
            }
        }
        drop(tx);
        let deadline = Instant::now() + REPORT_WAIT;
        let (mut links, mut conns, mut answered) = (0, 0, 0);
        while answered < asked {
            match rx.recv_deadline(deadline) {
                Ok(r) => {
                    links += r.links_closed;
                    conns += r.conns_closed;
                    answered += 1;
                }
                Err(_) => break,
            }
        }
        self.cfg = plan.cfg;
        tracing::info!(node = %self.cfg.node, links_closed = links, connections_closed = conns, shards = answered, "reloaded: {}", plan.summary);
        // Also in the service's status: a `log_level` of `warn` or quieter hides the line above.
        notify::ready(&format!("reloaded: {}", plan.summary));
    }

    fn tell_all(&self, msg: impl Fn() -> ShardMsg) {
        for s in &self.shards {
            s.mailbox.send(msg());
        }
    }

    /// Asks every shard for its figures and logs their sum.
    fn log_stats(&self) {
        let (asked, reports) = ask_shards(self.shards.iter().map(|s| &s.mailbox), ShardMsg::Report);
        if reports.len() < asked {
            tracing::warn!(
                answered = reports.len(),
                shards = asked,
                "stats: some shards did not answer within {REPORT_WAIT:?}"
            );
        }
        ShardReport::total(&reports).log();
    }

    /// Stops every shard at once and waits for their threads (a failed start).
    fn stop_all_now(&mut self) {
        // Two stops: the first begins a drain, the second ends it.
        self.tell_all(|| ShardMsg::Stop);
        self.tell_all(|| ShardMsg::Stop);
        for s in &mut self.shards {
            if let Some(t) = s.thread.take() {
                t.join().ok();
            }
        }
        self.signals.close();
    }

    /// Unix socket paths this node created, for cleanup by callers that stop it without a signal.
    pub fn unix_endpoints(&self) -> Vec<PathBuf> {
        self.cfg
            .links
            .iter()
            .filter_map(|l| match &l.listen {
                LocalAddr::Unix(p) => Some(p.clone()),
                LocalAddr::Tcp(_) => None,
            })
            .collect()
    }
}

/// Sends every mailbox the message `ask` wraps around one reply channel and collects the
/// answers that arrive within [`REPORT_WAIT`]: (shards asked, answers). A shard that has stopped
/// is not asked; one that does not answer in time is left out.
fn ask_shards<'a, T>(
    mailboxes: impl Iterator<Item = &'a Mailbox>,
    ask: impl Fn(Sender<T>) -> ShardMsg,
) -> (usize, Vec<T>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let asked = mailboxes.filter(|m| m.send(ask(tx.clone()))).count();
    drop(tx);
    let deadline = Instant::now() + REPORT_WAIT;
    let mut out = Vec::with_capacity(asked);
    while out.len() < asked {
        match rx.recv_deadline(deadline) {
            Ok(r) => out.push(r),
            Err(_) => break,
        }
    }
    (asked, out)
}

/// What the admin endpoint reads: the shards, asked per request through their mailboxes.
struct NodeAdmin {
    node: String,
    mailboxes: Vec<Mailbox>,
    draining: Arc<AtomicBool>,
    /// Peers this node dials (they must be connected for the node to be ready).
    dialed: Vec<String>,
}

impl NodeAdmin {
    fn shards(&self) -> Vec<ShardSnapshot> {
        let (_, mut out) = ask_shards(self.mailboxes.iter(), ShardMsg::Snapshot);
        out.sort_by_key(|s| s.shard);
        out
    }
}

impl AdminSource for NodeAdmin {
    fn snapshot(&self) -> NodeSnapshot {
        NodeSnapshot {
            node: self.node.clone(),
            shards: self.shards(),
            draining: self.draining.load(Ordering::Relaxed),
        }
    }

    /// Ready when every shard answers and has a connection to every peer this node dials (a
    /// link accepted on any shard can then go out at once), and the node is not draining. The
    /// listeners are bound before the endpoint starts.
    fn readiness(&self) -> Readiness {
        let shards = self.shards();
        let mut missing = Vec::new();
        if shards.len() < self.mailboxes.len() {
            missing.push(format!(
                "{} of {} shards did not answer",
                self.mailboxes.len() - shards.len(),
                self.mailboxes.len()
            ));
        }
        for peer in &self.dialed {
            let up = shards
                .iter()
                .filter(|s| s.peers.iter().any(|p| &p.name == peer && p.connections > 0))
                .count();
            if up < self.mailboxes.len() {
                missing.push(format!(
                    "{peer} ({up} of {} shards connected)",
                    self.mailboxes.len()
                ));
            }
        }
        Readiness::new(self.draining.load(Ordering::Relaxed), Vec::new(), missing)
    }
}

/// The configuration a shard of an `n`-shard node runs. The stall budget is the node's: each
/// shard enforces its share over the links it carries (links spread evenly: TCP by the kernel's
/// hash, Unix in turn).
fn shard_config(cfg: &NodeConfig, n: usize) -> NodeConfig {
    let mut cfg = cfg.clone();
    cfg.relay.stall_budget /= n.max(1) as u64;
    cfg
}

/// A shard's thread: pin, build the loop, say so, run, report the end.
fn shard_main(
    cfg: NodeConfig,
    io: Backend,
    setup: ShardSetup,
    cpu: Option<usize>,
    ready: Sender<Result<(), NodeError>>,
    exited: Sender<Event>,
) {
    let index = setup.index;
    if let Some(cpu) = cpu {
        if let Err(e) = pin_current_thread(index, cpu) {
            // Running unpinned is slower, not wrong.
            tracing::warn!(shard = index, error = %e, "cannot pin the shard to its CPU");
        }
    }
    let mut shard = match ShardLoop::new(io, cfg, setup) {
        Ok(s) => {
            ready.send(Ok(())).ok();
            s
        }
        Err(e) => {
            ready.send(Err(e)).ok();
            return;
        }
    };
    let result = shard.run();
    exited
        .send(Event::Exited {
            shard: index,
            result: Box::new(result),
        })
        .ok();
}

/// A reload's new `log_level`, in force from now on (the reload's own lines included), unless
/// `RUST_LOG` overrides the file, as it did at start.
fn apply_log_level(level: &str) {
    match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            tracing::warn!(log_level = level, rust_log = %v, "log_level changed in the file; RUST_LOG is set and stays in force");
        }
        _ => {
            if let Err(e) = crate::ops::log::set_filter(level) {
                tracing::warn!("log_level not applied, the filter in force stays: {e:#}");
            }
        }
    }
}
