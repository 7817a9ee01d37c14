//! The mio backend: one event loop that owns the QUIC UDP socket, the signals, the link
//! endpoints (listeners) and the local connections' registrations, and drives a
//! [`ShardCore`] with what they report. It decides nothing about links or connections: that is
//! the core's (see the call order in [`crate::shard::core`]).
//!
//! Each turn: wait for readiness or the core's next deadline; hand signals, local readiness and
//! accepts to the core; receive up to [`RECV_BURST`] GRO buffers and feed them as datagrams;
//! [`ShardCore::service`]; send the core's batches (a batch the socket refuses with WouldBlock
//! waits for the next writable turn); [`ShardCore::after_transmit`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use super::core::{LocalEvent, ReloadReport, ShardCore, ShardReport};
use crate::addr::LocalAddr;
use crate::admin::snapshot::{NodeCounters, ShardSnapshot};
use crate::config::NodeConfig;
use crate::io::local::{LocalListener, LocalStream};
use crate::io::udp::{UdpSocket, MAX_GSO_BYTES};
use crate::io::{DatagramIo, LocalConn, LocalIo, Transmit};
use crate::quic::cid::{self, ShardCount};
use crate::quic::driver::Batch;

const UDP: Token = Token(0);
/// Another shard or the node has put a message in this shard's inbox.
const WAKER: Token = Token(1);
const LISTENER_BASE: usize = 16;
const LINK_BASE: usize = 1 << 24;
/// Receive buffers handled per loop turn before local sockets get their turn.
const RECV_BURST: usize = 64;
/// A batch the socket refused waits at most this long before it is tried again without a
/// writable event.
const TX_RETRY: Duration = Duration::from_millis(1);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("QUIC socket {addr}: {source}")]
    Udp { addr: SocketAddr, source: io::Error },
    #[error("link endpoint {addr}: {source}")]
    Listen { addr: LocalAddr, source: io::Error },
    #[error(transparent)]
    Tls(#[from] crate::quic::tls::TlsSetupError),
    #[error("event loop: {0}")]
    Poll(io::Error),
    #[error(transparent)]
    Placement(#[from] crate::shard::placement::PlacementError),
    #[error(transparent)]
    Steer(#[from] crate::io::steer::SteerError),
    #[error("cannot start shard {shard}: {source}")]
    Thread { shard: usize, source: io::Error },
    #[error("admin endpoint {addr}: {source}")]
    Admin { addr: SocketAddr, source: io::Error },
    #[error("shard {shard} ended: {reason}")]
    ShardLost { shard: usize, reason: String },
}

impl LocalConn for LocalStream {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Read::read(self, buf)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        Write::write(self, bytes)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        LocalStream::shutdown_write(self)
    }

    fn finish_connect(&mut self) -> io::Result<bool> {
        LocalStream::finish_connect(self)
    }
}

/// The local side of the mio backend: the link endpoints and the registry the core's local
/// connections are watched with (token `LINK_BASE + link`).
pub struct MioLocal {
    registry: Registry,
    /// By endpoint index (the configuration's `links`); `None` once closed, or where another
    /// shard holds the endpoint's listener (a Unix endpoint's is shard 0's).
    listeners: Vec<Option<LocalListener>>,
    /// Their addresses, for removing Unix socket files when they close.
    addrs: Vec<LocalAddr>,
    /// Connections another shard accepted for this one, by endpoint.
    handed: Vec<VecDeque<LocalStream>>,
    /// Where Unix connections go in turn: this shard's index, every shard's mailbox.
    shard: usize,
    mailboxes: Vec<Mailbox>,
    next_turn: usize,
}

impl MioLocal {
    /// A connection another shard accepted on `endpoint` for this one.
    fn take_over(&mut self, endpoint: usize, conn: LocalStream) {
        if let Some(q) = self.handed.get_mut(endpoint) {
            q.push_back(conn);
        }
    }

    /// The endpoints of a reloaded configuration, `addrs` in its order: an endpoint whose
    /// address was there before keeps its listener (and the connections handed to it), a new
    /// one takes its listener from `fresh`, and a removed one's listener closes (its Unix socket
    /// file goes). Listeners are registered again under their new index.
    fn reconfigure(&mut self, addrs: Vec<LocalAddr>, fresh: Vec<Option<LocalListener>>) {
        let mut old_listeners = std::mem::take(&mut self.listeners);
        let mut old_handed = std::mem::take(&mut self.handed);
        let old_addrs = std::mem::replace(&mut self.addrs, addrs);
        let mut fresh = fresh.into_iter();
        for (i, addr) in self.addrs.iter().enumerate() {
            let new = fresh.next().flatten();
            let (listener, handed) = match old_addrs.iter().position(|a| a == addr) {
                Some(j) => (old_listeners[j].take(), std::mem::take(&mut old_handed[j])),
                None => (new, VecDeque::new()),
            };
            let listener = listener.and_then(|mut l| {
                let token = Token(LISTENER_BASE + i);
                // A kept listener is registered already (under its old index): move it.
                let moved = self
                    .registry
                    .reregister(&mut l, token, Interest::READABLE)
                    .or_else(|_| self.registry.register(&mut l, token, Interest::READABLE));
                match moved {
                    Ok(()) => Some(l),
                    Err(e) => {
                        tracing::warn!(endpoint = %addr, error = %e, "cannot watch the link endpoint; it accepts nothing");
                        None
                    }
                }
            });
            self.listeners.push(listener);
            self.handed.push(handed);
        }
        // What is left belongs to removed endpoints: deregistered and dropped (a Unix socket
        // file is removed by its listener's drop), their handed connections closed.
        for mut l in old_listeners.into_iter().flatten() {
            self.registry.deregister(&mut l).ok();
        }
    }
}

impl LocalIo for MioLocal {
    type Conn = LocalStream;

    fn accept(&mut self, endpoint: usize) -> io::Result<LocalStream> {
        if let Some(conn) = self.handed.get_mut(endpoint).and_then(VecDeque::pop_front) {
            return Ok(conn);
        }
        let Some(Some(l)) = self.listeners.get(endpoint) else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let shared = matches!(l, LocalListener::Unix(..)) && self.mailboxes.len() > 1;
        loop {
            let conn = l.accept()?;
            if !shared {
                return Ok(conn);
            }
            // A Unix endpoint has one listener: its connections go to the shards in turn.
            let to = self.next_turn % self.mailboxes.len();
            self.next_turn = self.next_turn.wrapping_add(1);
            if to == self.shard {
                return Ok(conn);
            }
            // A shard that has stopped drops it: the client sees the connection close.
            self.mailboxes[to].send(ShardMsg::Accepted { endpoint, conn });
        }
    }

    fn connect(&mut self, target: &LocalAddr) -> io::Result<LocalStream> {
        LocalStream::connect(target)
    }

    fn watch(&mut self, conn: &mut LocalStream, link: usize) -> io::Result<()> {
        conn.tune();
        self.registry.register(
            conn,
            Token(LINK_BASE + link),
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    fn unwatch(&mut self, conn: &mut LocalStream) {
        self.registry.deregister(conn).ok();
    }

    fn close_endpoints(&mut self) {
        for (slot, addr) in self.listeners.iter_mut().zip(&self.addrs) {
            if let Some(mut l) = slot.take() {
                self.registry.deregister(&mut l).ok();
                if let LocalAddr::Unix(path) = addr {
                    std::fs::remove_file(path).ok();
                }
            }
        }
        // Handed over but not yet taken on: they close with the endpoint.
        self.handed.iter_mut().for_each(VecDeque::clear);
    }
}

/// What a shard is told by another shard or by the node.
pub enum ShardMsg {
    /// A stop signal: the first drains, a second stops at once.
    Stop,
    /// Send this shard's figures back.
    Report(Sender<ShardReport>),
    /// Send this shard's metrics back (the admin endpoint).
    Snapshot(Sender<ShardSnapshot>),
    /// A datagram for this shard's connections that reached another shard's socket.
    Datagram { bytes: Vec<u8>, from: SocketAddr },
    /// ICMP port unreachable for `addr` reached another shard (the kernel picks the socket).
    PortUnreachable(SocketAddr),
    /// A connection another shard accepted on link endpoint `endpoint` for this one.
    Accepted { endpoint: usize, conn: LocalStream },
    /// Apply a new configuration (SIGHUP), checked by the node.
    Reload(Box<ShardReload>),
}

/// A reload as the node hands it to one shard.
pub struct ShardReload {
    /// The new configuration (this shard's share of the stall budget already taken).
    pub cfg: NodeConfig,
    /// By index in the new `cfg.links`: this shard's listener of each endpoint the node bound
    /// for the reload (new endpoints); `None` for endpoints that were already there (the shard
    /// keeps its listener) or whose listener is another shard's.
    pub listeners: Vec<Option<LocalListener>>,
    /// Where the shard says it is done, with what it changed.
    pub done: Sender<ReloadReport>,
}

/// How a shard is reached: its channel and the waker of its event loop.
#[derive(Clone)]
pub struct Mailbox {
    tx: Sender<ShardMsg>,
    waker: Arc<Waker>,
}

impl Mailbox {
    /// A mailbox for the loop whose `poll` will receive from the returned channel.
    pub fn new(poll: &Poll) -> io::Result<(Mailbox, Receiver<ShardMsg>)> {
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        Ok((Mailbox { tx, waker }, rx))
    }

    /// False when the shard has gone.
    pub fn send(&self, msg: ShardMsg) -> bool {
        self.tx.send(msg).is_ok() && self.waker.wake().is_ok()
    }
}

/// Everything a shard's thread is given by the node: its place, its loop and sockets (bound by
/// the node, so a failure is reported before any shard runs), its inbox and every mailbox.
pub struct ShardSetup {
    pub index: usize,
    /// The process's instance, the same on every shard (`crate::quic::cid`).
    pub instance: u64,
    pub shards: ShardCount,
    pub poll: Poll,
    pub inbox: Receiver<ShardMsg>,
    /// Every shard's, this one's included, by index.
    pub mailboxes: Vec<Mailbox>,
    /// The shard's UDP socket of the node's reuseport group, bound.
    pub udp: socket2::Socket,
    /// By link endpoint: this shard's listener, if it has one.
    pub listeners: Vec<Option<LocalListener>>,
}

/// Hand-overs queued for one shard at most; past it strays are dropped (and counted): QUIC
/// recovers them, and a flood cannot grow a queue without bound.
const HANDOFF_LIMIT: usize = 4096;

/// One shard on mio.
pub struct MioShard {
    poll: Poll,
    udp: UdpSocket,
    core: ShardCore<MioLocal>,
    index: usize,
    shards: ShardCount,
    inbox: Receiver<ShardMsg>,
    mailboxes: Vec<Mailbox>,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    /// A batch in `tx_buf` the socket refused with WouldBlock.
    tx_pending: Option<Batch>,
    udp_readable: bool,
    /// Datagrams handed to their owner shard, and those dropped because its queue was full.
    handed_over: u64,
    handoff_dropped: u64,
}

impl MioShard {
    /// The shard of `setup`, for the node of `cfg`.
    pub fn new(cfg: NodeConfig, setup: ShardSetup) -> Result<MioShard, NodeError> {
        let q = &cfg.quic;
        let addr = q.listen;
        let mut udp = UdpSocket::from_bound(setup.udp, q.gso, q.gro)
            .map_err(|source| NodeError::Udp { addr, source })?;
        let poll = setup.poll;
        poll.registry()
            .register(udp.source(), UDP, Interest::READABLE | Interest::WRITABLE)
            .map_err(NodeError::Poll)?;
        let mut listeners = setup.listeners;
        for (i, l) in listeners.iter_mut().enumerate() {
            if let Some(l) = l {
                poll.registry()
                    .register(l, Token(LISTENER_BASE + i), Interest::READABLE)
                    .map_err(NodeError::Poll)?;
            }
        }
        let shard = u8::try_from(setup.index).unwrap_or(u8::MAX);
        let driver = ShardCore::<MioLocal>::driver_for(&cfg, udp.local_addr())?
            .with_shard(shard)
            .with_instance(setup.instance);
        let local = MioLocal {
            registry: poll.registry().try_clone().map_err(NodeError::Poll)?,
            handed: listeners.iter().map(|_| VecDeque::new()).collect(),
            listeners,
            addrs: cfg.links.iter().map(|l| l.listen.clone()).collect(),
            shard: setup.index,
            mailboxes: setup.mailboxes.clone(),
            next_turn: 0,
        };
        let caps = udp.capabilities();
        tracing::info!(node = %cfg.node, shard = setup.index, quic = %udp.local_addr(), gso = caps.gso, gro = caps.gro, "shard listening");
        let core = ShardCore::with_driver(cfg, driver, local);
        Ok(MioShard {
            poll,
            udp,
            core,
            index: setup.index,
            shards: setup.shards,
            inbox: setup.inbox,
            mailboxes: setup.mailboxes,
            rx_buf: vec![0; 65_536],
            tx_buf: vec![0; MAX_GSO_BYTES],
            tx_pending: None,
            udp_readable: true,
            handed_over: 0,
            handoff_dropped: 0,
        })
    }

    /// Runs until told to stop (drained) or to stop at once; returns the shard's last figures.
    pub fn run(&mut self) -> Result<ShardReport, NodeError> {
        let mut events = Events::with_capacity(1024);
        self.core.start(Instant::now());
        loop {
            let now = Instant::now();
            let timeout = if self.udp_readable || self.core.has_work() {
                Some(Duration::ZERO)
            } else {
                let tx_retry = self.tx_pending.map(|_| now + TX_RETRY);
                [self.core.next_deadline(), tx_retry]
                    .into_iter()
                    .flatten()
                    .min()
                    .map(|t| t.saturating_duration_since(now))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NodeError::Poll(e));
            }
            for ev in events.iter() {
                match ev.token() {
                    UDP => {
                        if ev.is_readable() {
                            self.udp_readable = true;
                        }
                        if ev.is_error() {
                            self.read_icmp_errors();
                        }
                    }
                    WAKER => {}
                    Token(t) if t >= LINK_BASE => self.core.on_local_event(
                        t - LINK_BASE,
                        LocalEvent {
                            readable: ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                            read_closed: ev.is_read_closed() || ev.is_error(),
                            writable: ev.is_writable() || ev.is_error(),
                        },
                    ),
                    Token(t) if t >= LISTENER_BASE => self
                        .core
                        .on_endpoint_readable(t - LISTENER_BASE, Instant::now()),
                    _ => {}
                }
            }
            let now = Instant::now();
            self.read_inbox(now);
            self.receive(now);
            self.core.service(now);
            self.flush(now);
            if self.core.after_transmit(now) {
                return Ok(self.report());
            }
        }
    }

    /// This shard's figures.
    fn report(&self) -> ShardReport {
        let mut r = self.core.report(&self.udp.stats());
        r.handed_over = self.handed_over;
        r.handoff_dropped = self.handoff_dropped;
        r
    }

    /// This shard's metrics.
    fn snapshot(&self) -> ShardSnapshot {
        let io = self.udp.stats();
        let mut node = NodeCounters {
            datagrams_sent: io.datagrams_sent,
            send_calls: io.send_calls,
            datagrams_received: io.datagrams_received,
            receive_calls: io.recv_calls,
            datagrams_handed_over: self.handed_over,
            ..Default::default()
        };
        node.datagrams_dropped
            .insert("handoff_queue_full", self.handoff_dropped);
        self.core.snapshot(node)
    }

    /// Messages from the node and the other shards. Every one is taken each turn (the waker
    /// fires once for many).
    fn read_inbox(&mut self, now: Instant) {
        while let Ok(msg) = self.inbox.try_recv() {
            match msg {
                ShardMsg::Stop => self.core.stop(now),
                ShardMsg::Report(reply) => {
                    reply.send(self.report()).ok();
                }
                ShardMsg::Snapshot(reply) => {
                    reply.send(self.snapshot()).ok();
                }
                ShardMsg::Datagram { mut bytes, from } => {
                    self.core.on_datagram(&mut bytes, from, now);
                }
                ShardMsg::PortUnreachable(addr) => self.core.on_port_unreachable(addr),
                ShardMsg::Accepted { endpoint, conn } => {
                    if self.core.is_stopping() {
                        continue; // dropped: the endpoints are closed
                    }
                    self.core.io_mut().take_over(endpoint, conn);
                    self.core.on_endpoint_readable(endpoint, now);
                }
                ShardMsg::Reload(r) => self.reload(*r, now),
            }
        }
    }

    /// Applies a reload: new TLS for new connections, the endpoints' listeners moved to the
    /// new configuration's indices, then the core's part (`ShardCore::reload`).
    fn reload(&mut self, r: ShardReload, now: Instant) {
        let ShardReload {
            cfg,
            listeners,
            done,
        } = r;
        if self.core.is_stopping() {
            // The endpoints are closed and links are draining: nothing to reload into.
            done.send(ReloadReport::default()).ok();
            return;
        }
        let quic = match crate::quic::tls::quiche_config(&cfg.quic) {
            Ok(q) => Some(q),
            Err(e) => {
                // The node built one from the same files a moment ago: they changed since.
                tracing::error!(shard = self.index, error = %e, "reload: keeping the TLS configuration in force");
                None
            }
        };
        let addrs = cfg.links.iter().map(|l| l.listen.clone()).collect();
        self.core.io_mut().reconfigure(addrs, listeners);
        let report = self.core.reload(cfg, quic, now);
        // Connections may be queued on new endpoints already (edge-triggered: no event for
        // them): accept now.
        for i in 0..self.core.config().links.len() {
            self.core.on_endpoint_readable(i, now);
        }
        done.send(report).ok();
    }

    fn receive(&mut self, now: Instant) {
        if !self.udp_readable {
            return;
        }
        for _ in 0..RECV_BURST {
            match self.udp.recv(&mut self.rx_buf) {
                Ok(meta) => {
                    for datagram in self.rx_buf[..meta.len].chunks_mut(meta.segment_size) {
                        // Checked per datagram, not per buffer: GRO may merge datagrams of
                        // several connections (one 4-tuple carries every shard pair's).
                        if self.shards.get() > 1 {
                            if let Some(owner) = cid::owner(datagram, self.shards) {
                                if owner != self.index {
                                    hand_over(
                                        &self.mailboxes[owner],
                                        datagram,
                                        meta.from,
                                        &mut self.handed_over,
                                        &mut self.handoff_dropped,
                                    );
                                    continue;
                                }
                            }
                        }
                        self.core.on_datagram(datagram, meta.from, now);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.udp_readable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // ICMP errors surface here on some kernels; QUIC's timers handle the peer.
                    tracing::debug!(error = %e, "UDP receive error");
                }
            }
        }
    }

    /// ICMP errors queued on the QUIC socket: a peer whose port is unreachable has died (or
    /// is not running yet); its connections end now rather than at the idle timeout. The kernel
    /// queues the error on one socket of the group, whichever shard's connection it concerns,
    /// so every shard is told.
    fn read_icmp_errors(&mut self) {
        for _ in 0..64 {
            match self.udp.recv_error() {
                Ok(Some(e)) if e.port_unreachable => {
                    tracing::debug!(to = %e.to, "ICMP port unreachable");
                    self.core.on_port_unreachable(e.to);
                    for (i, m) in self.mailboxes.iter().enumerate() {
                        if i != self.index {
                            m.send(ShardMsg::PortUnreachable(e.to));
                        }
                    }
                }
                Ok(Some(e)) => tracing::debug!(to = %e.to, errno = e.errno, "ICMP error ignored"),
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "reading the socket error queue failed");
                    return;
                }
            }
        }
    }

    /// Sends the batch the socket refused last time, then the core's batches until it has none
    /// or the socket is full.
    fn flush(&mut self, now: Instant) {
        if let Some(b) = self.tx_pending.take() {
            if !self.send_batch(b) {
                return;
            }
        }
        let segments = self.udp.max_gso_segments();
        while let Some(b) = self.core.poll_transmit(&mut self.tx_buf, segments, now) {
            if !self.send_batch(b) {
                return;
            }
        }
    }

    /// Sends a batch written into `tx_buf`; false when the socket is full (the batch waits in
    /// `tx_pending` for the next writable turn). Other errors are the socket's to count: QUIC
    /// recovers the loss.
    fn send_batch(&mut self, b: Batch) -> bool {
        let t = Transmit {
            to: b.to,
            contents: &self.tx_buf[..b.len],
            segment_size: b.segment_size,
        };
        match self.udp.send(&t) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.tx_pending = Some(b);
                false
            }
            _ => true,
        }
    }
}

/// Hands a datagram to the shard that owns its connection. The copy is the price of a stray,
/// which steering makes rare; a queue past [`HANDOFF_LIMIT`] drops it (counted).
fn hand_over(to: &Mailbox, datagram: &[u8], from: SocketAddr, handed: &mut u64, dropped: &mut u64) {
    if to.tx.len() >= HANDOFF_LIMIT {
        *dropped += 1;
        return;
    }
    if to.send(ShardMsg::Datagram {
        bytes: datagram.to_vec(),
        from,
    }) {
        *handed += 1;
    }
}

/// Raises the soft open-files limit to the hard limit: every link holds a socket, and the
/// default soft limit (1,024) is far below the links a node pair can carry.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct that lives on this stack.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
