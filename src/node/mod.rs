//! A node: one event loop (a shard) that owns the QUIC UDP socket, the QUIC driver, the link
//! endpoints routers dial, and every relayed link.
//!
//! Each turn: wait for readiness or the next deadline; receive datagrams and feed the driver;
//! handle connection events; service readable/writable streams and local sockets; expire
//! deadlines; flush the driver's datagrams in GSO batches.

mod drain;
mod ends;
mod peers;
mod routes;
mod stall;
mod stats;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::addr::LocalAddr;
use crate::config::NodeConfig;
use crate::io::local::{LocalListener, LocalStream};
use crate::io::udp::{UdpSocket, MAX_GSO_BYTES};
use crate::io::{DatagramIo, Transmit};
use crate::logsafe::escaped;
use crate::quic::codes::{ConnCode, StreamCode};
use crate::quic::driver::{Batch, ConnId, Direction, DriverEvent, QuicDriver};
use crate::quic::preamble;
use crate::rawsocket::error_reply;
use crate::relay::link::{Link, LinkEnd, Role, StreamRef};

use drain::Stopping;
pub use peers::Backoff;
use peers::Peer;

use routes::PendingRoute;
use stall::{StallTracker, StallVerdict};
use stats::NodeStats;

const UDP: Token = Token(0);
const SIGNALS: Token = Token(1);
const LISTENER_BASE: usize = 16;
const LINK_BASE: usize = 1 << 24;
/// Receive buffers handled per loop turn before local sockets get their turn.
const RECV_BURST: usize = 64;
/// How long a stopping node waits for its CONNECTION_CLOSE frames to leave.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);
/// Connections accepted per listener per turn; a longer queue is taken up again on a timer, so
/// neither a flood of clients nor an accept error that repeats can hold the loop.
const ACCEPT_BURST: usize = 256;
/// A listener that ran out of descriptors (or memory) tries again after this.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// Conditions that could repeat on every loop turn are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(1);

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
}

pub struct Node {
    cfg: NodeConfig,
    poll: Poll,
    signals: Signals,
    udp: UdpSocket,
    driver: QuicDriver,
    peers: Vec<Peer>,
    peer_index: HashMap<String, usize>,
    listeners: Vec<(LocalListener, usize)>,
    routes: HashMap<String, LocalAddr>,
    links: Slab<Link>,
    by_stream: HashMap<(ConnId, u64), usize>,
    preambles: HashMap<(ConnId, u64), Vec<u8>>,
    /// (deadline, link) in deadline order (every deadline is now + a fixed timeout).
    deadlines: BinaryHeap<Reverse<(Instant, usize)>>,
    dirty: Vec<usize>,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    tx_pending: Option<Batch>,
    udp_readable: bool,
    stats: NodeStats,
    next_stats: Option<Instant>,
    stopping: Option<Stopping>,
    stalls: StallTracker,
    next_stall_check: Option<Instant>,
    pending_routes: HashMap<(ConnId, u64), PendingRoute>,
    /// A listener hit a descriptor or memory limit: accept again then.
    accept_retry_at: Option<Instant>,
    last_accept_warning: Option<Instant>,
    /// Streams of links that ended cleanly whose last bytes may not be acknowledged yet; a
    /// draining node waits for them before it closes the connection.
    finished_streams: Vec<(ConnId, u64)>,
    prune_finished_at: usize,
}

impl Node {
    /// Binds every socket the configuration names. Fails with the address that could not be used.
    pub fn bind(cfg: NodeConfig) -> Result<Node, NodeError> {
        raise_fd_limit();
        let poll = Poll::new().map_err(NodeError::Poll)?;
        let q = &cfg.quic;
        let mut udp = UdpSocket::bind(q.listen, q.gso, q.gro).map_err(|source| NodeError::Udp {
            addr: q.listen,
            source,
        })?;
        poll.registry()
            .register(udp.source(), UDP, Interest::READABLE | Interest::WRITABLE)
            .map_err(NodeError::Poll)?;
        let mut signals =
            Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1]).map_err(NodeError::Poll)?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(NodeError::Poll)?;

        let quiche_config = crate::quic::tls::quiche_config(q)?;
        let driver = QuicDriver::new(
            quiche_config,
            udp.local_addr(),
            cfg.peers.iter().map(|p| p.name.clone()),
            q.keepalive_interval,
        );

        let mut listeners = Vec::new();
        for (i, link) in cfg.links.iter().enumerate() {
            let mut l = LocalListener::bind(&link.listen).map_err(|source| NodeError::Listen {
                addr: link.listen.clone(),
                source,
            })?;
            poll.registry()
                .register(&mut l, Token(LISTENER_BASE + i), Interest::READABLE)
                .map_err(NodeError::Poll)?;
            listeners.push((l, i));
        }
        let peers: Vec<Peer> = cfg
            .peers
            .iter()
            .map(|p| {
                Peer::new(
                    p.name.clone(),
                    p.connect,
                    Backoff::new(q.redial_min, q.redial_max),
                )
            })
            .collect();
        let peer_index = peers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i))
            .collect();
        let routes = cfg
            .routes
            .iter()
            .map(|r| (r.name.clone(), r.connect.clone()))
            .collect();
        let caps = udp.capabilities();
        tracing::info!(node = %cfg.node, quic = %udp.local_addr(), gso = caps.gso, gro = caps.gro, "node listening");
        let stalls = StallTracker::new(cfg.relay.stall_timeout, cfg.relay.stall_budget);
        Ok(Node {
            next_stats: cfg.stats_interval.map(|d| Instant::now() + d),
            stalls,
            next_stall_check: None,
            pending_routes: HashMap::new(),
            accept_retry_at: None,
            last_accept_warning: None,
            finished_streams: Vec::new(),
            prune_finished_at: 1024,
            cfg,
            poll,
            signals,
            udp,
            driver,
            peers,
            peer_index,
            listeners,
            routes,
            links: Slab::new(),
            by_stream: HashMap::new(),
            preambles: HashMap::new(),
            deadlines: BinaryHeap::new(),
            dirty: Vec::new(),
            rx_buf: vec![0; 65_536],
            tx_buf: vec![0; MAX_GSO_BYTES],
            tx_pending: None,
            udp_readable: true,
            stats: NodeStats::default(),
            stopping: None,
        })
    }

    pub fn quic_addr(&self) -> SocketAddr {
        self.udp.local_addr()
    }

    /// Runs until SIGINT or SIGTERM.
    pub fn run(&mut self) -> Result<(), NodeError> {
        let mut events = Events::with_capacity(1024);
        let now = Instant::now();
        for i in 0..self.peers.len() {
            if self.peers[i].connect.is_some() {
                self.dial(i, now);
            }
        }
        loop {
            let now = Instant::now();
            let timeout = if self.udp_readable || !self.dirty.is_empty() {
                Some(Duration::ZERO)
            } else {
                self.next_deadline()
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
                    SIGNALS => self.on_signal(),
                    Token(t) if t >= LINK_BASE => self.on_link_event(
                        t - LINK_BASE,
                        ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                        ev.is_read_closed() || ev.is_error(),
                        ev.is_writable() || ev.is_error(),
                    ),
                    Token(t) if t >= LISTENER_BASE => self.accept_local(t - LISTENER_BASE),
                    _ => {}
                }
            }
            let now = Instant::now();
            self.receive(now);
            if self.driver.timeout().is_some_and(|t| t <= now) {
                self.driver.on_timeout(now);
            }
            self.service(now);
            self.flush(now);
            // Sending can close connections (a CONNECTION_CLOSE went out): handle that now.
            self.handle_driver_events(now);
            if let Some(t) = self.next_stats {
                if t <= now {
                    self.log_stats();
                    self.next_stats = self.cfg.stats_interval.map(|d| now + d);
                }
            }
            if self.stopping.is_some() && self.advance_stop(now) {
                self.log_stats();
                tracing::info!(node = %self.cfg.node, "stopped");
                return Ok(());
            }
        }
    }

    /// Everything between input and output: connection events, streams, local sockets,
    /// deadlines.
    fn service(&mut self, now: Instant) {
        self.handle_driver_events(now);
        self.service_streams(now);
        self.pump_dirty(now);
        self.expire(now);
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.driver.timeout(),
            self.deadlines.peek().map(|Reverse((t, _))| *t),
            self.peers.iter().filter_map(|p| p.redial_at).min(),
            self.next_stats,
            self.stopping.map(|s| match s {
                Stopping::Draining { deadline } | Stopping::Closing { deadline } => deadline,
            }),
            self.next_stall_check,
            self.accept_retry_at,
            self.pending_routes.values().map(|p| p.retry_at).min(),
            self.tx_pending
                .map(|_| Instant::now() + Duration::from_millis(1)),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- input ----

    fn receive(&mut self, now: Instant) {
        if !self.udp_readable {
            return;
        }
        for _ in 0..RECV_BURST {
            match self.udp.recv(&mut self.rx_buf) {
                Ok(meta) => {
                    for datagram in self.rx_buf[..meta.len].chunks_mut(meta.segment_size) {
                        self.driver.recv(datagram, meta.from, now);
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
    /// is not running yet); its connection ends now rather than at the idle timeout.
    fn read_icmp_errors(&mut self) {
        for _ in 0..64 {
            match self.udp.recv_error() {
                Ok(Some(e)) if e.port_unreachable => {
                    tracing::debug!(to = %e.to, "ICMP port unreachable");
                    self.driver.on_port_unreachable(e.to);
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

    fn accept_local(&mut self, listener: usize) {
        let now = Instant::now();
        for _ in 0..ACCEPT_BURST {
            let Some((l, link_idx)) = self.listeners.get(listener) else {
                return;
            };
            let link_idx = *link_idx;
            let sock = match l.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_resource_limit(&e) => {
                    // Out of descriptors or memory. Readiness is edge-triggered: the clients
                    // queued now bring no new event, so try again on a timer.
                    self.stats.accept_limited += 1;
                    self.accept_retry_at = Some(now + ACCEPT_RETRY);
                    if self
                        .last_accept_warning
                        .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
                    {
                        self.last_accept_warning = Some(now);
                        tracing::warn!(error = %e, endpoint = %self.cfg.links[link_idx].listen, links = self.links.len(), times = self.stats.accept_limited, "cannot accept: retrying every {ACCEPT_RETRY:?} (raise the open-files limit?)");
                    }
                    return;
                }
                Err(e) => {
                    // One client's failure (it reset before accept, say): the queue goes on.
                    tracing::debug!(error = %e, endpoint = %self.cfg.links[link_idx].listen, "accept failed");
                    continue;
                }
            };
            let cfg = &self.cfg.links[link_idx];
            let role = Role::Dialer {
                peer: cfg.peer.clone(),
                route: cfg.route.clone(),
            };
            let link = Link::new(
                role,
                sock,
                self.cfg.relay.buffer_size,
                self.cfg.relay.max_frame,
                now,
            );
            if let Some(key) = self.insert_link(link, now + self.cfg.quic.connect_timeout) {
                self.stats.links_opened += 1;
                self.dirty.push(key);
            }
        }
        // More may be queued, and no new event will say so: go on next turn.
        self.accept_retry_at.get_or_insert(now);
    }

    /// Registers a new link; it gives up at `deadline` unless the router's handshake reply has
    /// crossed by then.
    fn insert_link(&mut self, mut link: Link, deadline: Instant) -> Option<usize> {
        let key = self.links.vacant_key();
        link.sock.tune();
        if let Err(e) = self.poll.registry().register(
            &mut link.sock,
            Token(LINK_BASE + key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(error = %e, "cannot watch local connection");
            return None;
        }
        link.deadline = Some(deadline);
        self.deadlines.push(Reverse((deadline, key)));
        Some(self.links.insert(link))
    }

    fn on_link_event(&mut self, key: usize, readable: bool, read_closed: bool, writable: bool) {
        let Some(link) = self.links.get_mut(key) else {
            return;
        };
        if readable {
            link.local_readable = true;
        }
        if read_closed {
            // No further readable event will come: read until EOF whatever the read sizes.
            link.local_read_closed = true;
        }
        if link.connecting && writable {
            match link.sock.finish_connect() {
                // The deadline stays until the router's handshake reply has crossed.
                Ok(true) => link.connecting = false,
                Ok(false) => return,
                Err(e) => {
                    let why = format!("route {} target unreachable: {e}", link.role.route());
                    self.fail_link(key, StreamCode::RouteUnreachable, &why);
                    return;
                }
            }
        }
        self.dirty.push(key);
    }

    // ---- connections ----

    fn dial(&mut self, i: usize, now: Instant) {
        let p = &mut self.peers[i];
        let Some(addr) = p.connect else { return };
        p.redial_at = None;
        match self.driver.connect(&p.name, addr, now) {
            Ok(cid) => p.dialing = Some(cid),
            Err(e) => {
                let delay = p.backoff.next_delay();
                tracing::warn!(peer = %p.name, %addr, error = %e, "cannot dial; retrying in {delay:.1?}");
                p.redial_at = Some(now + delay);
            }
        }
    }

    fn handle_driver_events(&mut self, now: Instant) {
        while let Some(ev) = self.driver.poll_event() {
            match ev {
                DriverEvent::Established {
                    conn,
                    peer,
                    direction,
                } => {
                    let Some(&i) = self.peer_index.get(&peer) else {
                        continue;
                    };
                    let addr = self
                        .driver
                        .conn(conn)
                        .map(|c| c.peer_addr.to_string())
                        .unwrap_or_default();
                    tracing::info!(peer = %peer, ?direction, %addr, "peer connected");
                    let p = &mut self.peers[i];
                    if direction == Direction::Outgoing {
                        // Not a success yet: in TLS 1.3 the acceptor checks our certificate after
                        // our side of the handshake is done. The backoff restarts once the
                        // connection has lasted (see on_conn_closed).
                        p.dialing = None;
                        p.dial_established = Some((conn, now));
                    }
                    // The driver has closed them (they failed its liveness probe) or they were
                    // closing already; their links end with their Closed events.
                    let old = p.superseded_by(conn, direction);
                    p.conns.retain(|(c, _)| !old.contains(c));
                    p.conns.push((conn, direction));
                    self.open_waiting(i, now);
                }
                DriverEvent::Closed {
                    conn,
                    peer,
                    direction,
                    addr,
                    reason,
                    was_established,
                } => {
                    self.on_conn_closed(conn, peer, direction, addr, &reason, was_established, now);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_conn_closed(
        &mut self,
        conn: ConnId,
        peer: Option<String>,
        direction: Direction,
        addr: SocketAddr,
        reason: &str,
        was_established: bool,
        now: Instant,
    ) {
        let carried: Vec<usize> = self
            .links
            .iter()
            .filter(|(_, l)| l.stream.is_some_and(|(c, _)| c == conn))
            .map(|(k, _)| k)
            .collect();
        let n = carried.len();
        for key in carried {
            self.close_link_quietly(key);
        }
        self.preambles.retain(|(c, _), _| *c != conn);
        self.finished_streams.retain(|(c, _)| *c != conn);
        self.pending_routes.retain(|(c, _), _| *c != conn);
        let i = peer.as_ref().and_then(|p| self.peer_index.get(p)).copied();
        let stopping = self.stopping.is_some();
        // No peer: an incoming handshake that failed. Anyone can cause these, so the driver counts
        // them and logs a summary at most once per second instead of a line each.
        let Some(i) = i else {
            return;
        };
        let p = &mut self.peers[i];
        p.conns.retain(|(c, _)| *c != conn);
        let ours = direction == Direction::Outgoing;
        if ours && p.dialing == Some(conn) {
            p.dialing = None;
        }
        if was_established {
            tracing::warn!(peer = %p.name, %addr, links_closed = n, "peer connection lost: {reason}");
        }
        if let Some((_, since)) = p.dial_established.filter(|(c, _)| ours && *c == conn) {
            p.dial_established = None;
            if now.duration_since(since) >= peers::STABLE_CONNECTION {
                p.backoff.reset();
                p.failures = 0;
            }
        }
        if ours
            && !stopping
            && p.dialing.is_none()
            && !p.conns.iter().any(|(_, d)| *d == Direction::Outgoing)
        {
            p.failures += 1;
            let delay = p.backoff.next_delay();
            if !was_established {
                if p.failures <= 3 || p.failures.is_multiple_of(10) {
                    tracing::warn!(peer = %p.name, %addr, attempt = p.failures, "cannot reach peer: {reason}; retrying in {delay:.1?}");
                } else {
                    tracing::debug!(peer = %p.name, %addr, "cannot reach peer: {reason}; retrying in {delay:.1?}");
                }
            }
            p.redial_at = Some(now + delay);
        }
    }

    // ---- streams ----

    fn service_streams(&mut self, now: Instant) {
        for cid in self.driver.conn_ids() {
            let Some(c) = self.driver.conn_mut(cid) else {
                continue;
            };
            if !c.is_established() {
                // Handshaking, or refused by the peer check and closing: serve nothing.
                continue;
            }
            let mut readable = Vec::new();
            while let Some(sid) = c.quic.stream_readable_next() {
                readable.push(sid);
            }
            while let Some(sid) = c.quic.stream_writable_next() {
                if let Some(&key) = self.by_stream.get(&(cid, sid)) {
                    self.dirty.push(key);
                }
            }
            for sid in readable {
                match self.by_stream.get(&(cid, sid)) {
                    Some(&key) => self.dirty.push(key),
                    // Its route target is being connected: the bytes wait in quiche.
                    None if self.pending_routes.contains_key(&(cid, sid)) => {}
                    None => self.on_stream_start(cid, sid, now),
                }
            }
        }
    }

    fn pump_dirty(&mut self, now: Instant) {
        while !self.dirty.is_empty() {
            let mut dirty = std::mem::take(&mut self.dirty);
            dirty.sort_unstable();
            dirty.dedup();
            for key in dirty {
                self.pump_link(key, now);
            }
        }
    }

    fn pump_link(&mut self, key: usize, now: Instant) {
        let Some(link) = self.links.get_mut(key) else {
            return;
        };
        let stream = link.stream.and_then(|(cid, sid)| {
            self.driver.conn_mut(cid).map(|c| StreamRef {
                quic: &mut c.quic,
                id: sid,
            })
        });
        let had_stream = link.stream.is_some();
        let result = link.pump(stream, now);
        if std::mem::take(&mut link.wrote_stream) {
            if let Some((cid, _)) = link.stream {
                self.driver.note_data_queued(cid);
            }
        }
        if link.router_replied() {
            // Open end to end: nothing left to time out.
            link.deadline = None;
        }
        match (link.stalled_since(), link.holding_since()) {
            (None, None) => {
                // The common case (nothing stalled anywhere) costs no map lookup.
                if !self.stalls.is_empty() {
                    self.stalls.remove(key);
                }
            }
            (stalled, holding) => {
                self.stalls.update(key, stalled, holding);
                if self.next_stall_check.is_none() {
                    self.next_stall_check = Some(now + stall::CHECK_EVERY);
                }
            }
        }
        match result {
            Ok(true) => self.finish_link(key),
            Ok(false) => {
                if !had_stream && link.client_ready() && matches!(link.role, Role::Dialer { .. }) {
                    self.open_or_wait(key, now);
                }
            }
            Err(LinkEnd::ClientHandshake(e)) => {
                if let Some(code) = e.reply_code() {
                    if let Some(link) = self.links.get_mut(key) {
                        link.sock.write_all(&error_reply(code)).ok();
                    }
                }
                self.fail_link(
                    key,
                    StreamCode::RawSocketViolation,
                    &format!("client sent a bad handshake: {e}"),
                );
            }
            Err(end) => {
                let code = match &end {
                    LinkEnd::Protocol(_) | LinkEnd::ClientHandshake(_) => {
                        StreamCode::RawSocketViolation
                    }
                    _ => StreamCode::LocalAbort,
                };
                self.fail_link(key, code, &end.to_string());
            }
        }
    }

    /// A dialer whose client handshake is in: open its stream on the peer's connection, or wait
    /// for one (bounded by the link's deadline).
    fn open_or_wait(&mut self, key: usize, _now: Instant) {
        let Some(link) = self.links.get(key) else {
            return;
        };
        let Some(&i) = self.peer_index.get(link.role.peer()) else {
            return;
        };
        if !self.try_open(key, i) && !self.peers[i].waiting.contains(&key) {
            self.peers[i].waiting.push_back(key);
        }
    }

    fn try_open(&mut self, key: usize, peer: usize) -> bool {
        let Some(cid) = self.peers[peer].active() else {
            return false;
        };
        let Some(link) = self.links.get_mut(key) else {
            return true;
        };
        if link.stream.is_some() {
            return true;
        }
        let Ok(pre) = preamble::encode(link.role.route()) else {
            return true;
        };
        let Some(sid) = self.driver.open_stream(cid) else {
            return false;
        };
        link.from_local.set_prefix(pre);
        link.stream = Some((cid, sid));
        // Open: from here the acceptor, next to the router, times the connect and the router's
        // handshake reply; loss on the path between the nodes must not close a healthy link.
        link.deadline = None;
        self.by_stream.insert((cid, sid), key);
        self.dirty.push(key);
        true
    }

    fn open_waiting(&mut self, peer: usize, _now: Instant) {
        while let Some(&key) = self.peers[peer].waiting.front() {
            if !self.try_open(key, peer) {
                return;
            }
            self.peers[peer].waiting.pop_front();
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((t, key))) = self.deadlines.peek() {
            if t > now {
                break;
            }
            self.deadlines.pop();
            let Some(link) = self.links.get(key) else {
                continue;
            };
            if link.deadline != Some(t) {
                continue;
            }
            let timeout = self.cfg.quic.connect_timeout;
            let why = match (&link.role, link.stream, link.client_ready()) {
                (Role::Dialer { peer, .. }, None, true) => {
                    format!("peer {peer} not reachable within {timeout:?}")
                }
                (Role::Dialer { .. }, None, false) => {
                    format!("no RawSocket handshake from the client within {timeout:?}")
                }
                // Cleared when the stream opens; kept for completeness.
                (Role::Dialer { peer, route }, Some(_), _) => format!(
                    "no handshake reply from route {route} on peer {peer} within {timeout:?}"
                ),
                (Role::Acceptor { route, .. }, _, _) if link.connecting => {
                    format!("route {route} target did not accept within {timeout:?}")
                }
                (Role::Acceptor { route, .. }, _, _) => {
                    format!("route {route} target did not answer the handshake within {timeout:?}")
                }
            };
            let code = if matches!(link.role, Role::Acceptor { .. }) {
                StreamCode::RouteUnreachable
            } else {
                StreamCode::LocalAbort
            };
            self.fail_link(key, code, &why);
        }
        self.retry_routes(now);
        if self.accept_retry_at.is_some_and(|t| t <= now) {
            self.accept_retry_at = None;
            for i in 0..self.listeners.len() {
                self.accept_local(i);
            }
        }
        if self.next_stall_check.is_some_and(|t| t <= now) {
            self.reset_stalled(now);
        }
        for i in 0..self.peers.len() {
            if self.peers[i].redial_at.is_some_and(|t| t <= now) && self.stopping.is_none() {
                self.dial(i, now);
            }
            if !self.peers[i].waiting.is_empty() {
                self.open_waiting(i, now);
            }
        }
    }

    // ---- link endings ----

    // ---- output ----

    fn flush(&mut self, now: Instant) {
        if let Some(b) = self.tx_pending {
            let t = Transmit {
                to: b.to,
                contents: &self.tx_buf[..b.len],
                segment_size: b.segment_size,
            };
            match self.udp.send(&t) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                _ => self.tx_pending = None,
            }
        }
        while let Some(b) = self.driver.poll_stateless(&mut self.tx_buf) {
            if !self.send_batch(b) {
                return;
            }
        }
        let segments = self.udp.max_gso_segments();
        for cid in self.driver.conn_ids() {
            while let Some(b) = self
                .driver
                .poll_transmit(cid, &mut self.tx_buf, segments, now)
            {
                if !self.send_batch(b) {
                    return;
                }
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

    fn log_stats(&self) {
        stats::log(self);
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

/// Accept errors that say "not now" rather than "this client failed".
fn is_resource_limit(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

fn reset_stream(c: &mut crate::quic::driver::Conn, sid: u64, code: StreamCode) {
    c.quic
        .stream_shutdown(sid, quiche::Shutdown::Read, code as u64)
        .ok();
    c.quic
        .stream_shutdown(sid, quiche::Shutdown::Write, code as u64)
        .ok();
}
