//! The shard core: every decision of one shard (stream servicing, preambles, link lifecycle,
//! connection replacement, redial, deadlines, drain, stall budgets, route connect and accept
//! retries), driven by events and never touching a socket. Like [`QuicDriver`], which it owns,
//! it is given the time (`now`) and hands back datagram batches and its next deadline, so the mio
//! backend ([`crate::shard::mio_loop`]), a later io_uring backend and the in-memory tests
//! (`tests/shard_core.rs`) all drive the same code.
//!
//! Local connections reach it through the [`LocalIo`] seam (`L`): the backend owns listeners and
//! descriptors, the core owns the [`LocalConn`]s of its links and tells the backend which to watch
//! ([`LocalIo::watch`], [`LocalIo::unwatch`]).
//!
//! Calls, in the order a backend makes them on each turn of its loop:
//! 0. once: [`ShardCore::new`], then [`ShardCore::start`] (dials the configured peers);
//! 1. input, as it comes: [`ShardCore::on_datagram`] for each datagram (a GRO buffer split by
//!    segment size), [`ShardCore::on_port_unreachable`] (ICMP), [`ShardCore::on_local_event`] (a
//!    watched local connection's readiness), [`ShardCore::on_endpoint_readable`] (a link endpoint
//!    has connections to accept); commands: [`ShardCore::stop`] (a stop signal: the first drains,
//!    the second stops at once), [`ShardCore::begin_drain`], [`ShardCore::stop_now`],
//!    [`ShardCore::reload`] (a new configuration, SIGHUP), [`ShardCore::report`] (the figures
//!    for the stats line and the metrics);
//! 2. [`ShardCore::service`]: expired QUIC timers, connection events (peer up: open the links
//!    waiting for it; connection closed: close the links it carried, schedule a redial), streams
//!    with news, local connections with news, link deadlines, route and accept retries, stall
//!    rules, redials;
//! 3. output: [`ShardCore::poll_transmit`] until `None` (Retry packets first, then each
//!    connection's GSO batches); a backend whose socket is full stops and calls again when it is
//!    writable;
//! 4. [`ShardCore::after_transmit`]: connections that closed by sending,
//!    the stop's progress; `true` once the shard has stopped;
//! 5. wait for input until [`ShardCore::next_deadline`], or not at all while
//!    [`ShardCore::has_work`].

mod drain;
mod ends;
mod links;
mod metrics;
mod peers;
mod reload;
mod routes;
mod stall;
mod stats;
mod streams;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::addr::LocalAddr;
use crate::config::NodeConfig;
use crate::io::{DatagramStats, LocalConn, LocalIo};
use crate::quic::driver::{Batch, ConnId, QuicDriver};
use crate::relay::link::Link;

use drain::Stopping;
pub use peers::Backoff;
use peers::Peer;
pub use reload::ReloadReport;
use routes::PendingRoute;
use stall::StallTracker;
pub use stats::{NodeStats, ShardReport};

/// How long a stopping node waits for its CONNECTION_CLOSE frames to leave.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);
/// Connections accepted per endpoint per turn; a longer queue is taken up again on a timer, so
/// neither a flood of clients nor an accept error that repeats can hold the loop.
const ACCEPT_BURST: usize = 256;
/// An endpoint that ran out of descriptors (or memory) tries again after this.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// Batches one connection gives per transmit round; the round then moves on and the next turn
/// comes without sleep. A connection's congestion window ends its batches long before this;
/// the cap is for one that never says "done" (a quiche closing state did: vendor/README.md,
/// patch 3), which would otherwise hold the shard's loop (no timers, no drain, no signals).
const MAX_BATCHES_PER_ROUND: usize = 256;
/// Conditions that could repeat on every loop turn are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// What a backend saw on a watched local connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalEvent {
    /// Bytes (or the end) may be there to read.
    pub readable: bool,
    /// The other end has shut down its side (or the connection failed): no further readable
    /// event will come, so the link reads until EOF whatever the read sizes.
    pub read_closed: bool,
    /// Room to write, or a connect in progress has finished.
    pub writable: bool,
}

pub struct ShardCore<L: LocalIo> {
    cfg: NodeConfig,
    io: L,
    driver: QuicDriver,
    peers: Vec<Peer>,
    peer_index: HashMap<String, usize>,
    /// Link endpoints accept connections until the drain closes them.
    endpoints_open: bool,
    routes: HashMap<String, LocalAddr>,
    links: Slab<Link<L::Conn>>,
    by_stream: HashMap<(ConnId, u64), usize>,
    preambles: HashMap<(ConnId, u64), Vec<u8>>,
    /// (deadline, link) in deadline order (every deadline is now + a fixed timeout).
    deadlines: BinaryHeap<Reverse<(Instant, usize)>>,
    dirty: Vec<usize>,
    stats: NodeStats,
    stopping: Option<Stopping>,
    stalls: StallTracker,
    next_stall_check: Option<Instant>,
    pending_routes: HashMap<(ConnId, u64), PendingRoute>,
    /// An endpoint hit a descriptor or memory limit (or had more queued): accept again then.
    accept_retry_at: Option<Instant>,
    last_accept_warning: Option<Instant>,
    /// Streams of links that ended cleanly whose last bytes may not be acknowledged yet; a
    /// draining node waits for them before it closes the connection.
    finished_streams: Vec<(ConnId, u64)>,
    prune_finished_at: usize,
    /// The connections of the transmit round in progress ([`ShardCore::poll_transmit`]), kept
    /// between turns so the list is not allocated per flush.
    tx_conns: Vec<ConnId>,
    tx_next: usize,
    tx_round: bool,
    /// Batches the round has taken from `tx_conns[tx_next]` ([`MAX_BATCHES_PER_ROUND`]).
    tx_batches: usize,
    /// A connection reached [`MAX_BATCHES_PER_ROUND`]: it may have more, so do not sleep.
    tx_capped: bool,
    /// Closed links' totals per link endpoint and route (for the metrics).
    totals: metrics::Totals,
}

impl<L: LocalIo> ShardCore<L> {
    /// A core for `cfg` whose QUIC datagrams leave from `local_addr` (the backend's UDP socket).
    pub fn new(
        cfg: NodeConfig,
        local_addr: SocketAddr,
        io: L,
    ) -> Result<ShardCore<L>, crate::quic::tls::TlsSetupError> {
        let driver = Self::driver_for(&cfg, local_addr)?;
        Ok(Self::with_driver(cfg, driver, io))
    }

    /// The QUIC driver [`ShardCore::new`] makes: TLS from `cfg.quic`, the configured peers
    /// allowed in. Separate so a backend can fail on TLS before it binds anything else.
    pub fn driver_for(
        cfg: &NodeConfig,
        local_addr: SocketAddr,
    ) -> Result<QuicDriver, crate::quic::tls::TlsSetupError> {
        let q = &cfg.quic;
        let quiche_config = crate::quic::tls::quiche_config(q)?;
        Ok(QuicDriver::new(
            quiche_config,
            local_addr,
            cfg.peers.iter().map(|p| p.name.clone()),
            q.keepalive_interval,
        ))
    }

    /// A core around `driver` (from [`ShardCore::driver_for`]).
    pub fn with_driver(cfg: NodeConfig, driver: QuicDriver, io: L) -> ShardCore<L> {
        let q = &cfg.quic;
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
        let stalls = StallTracker::new(cfg.relay.stall_timeout, cfg.relay.stall_budget);
        let totals = metrics::Totals::new(&cfg);
        ShardCore {
            stalls,
            next_stall_check: None,
            pending_routes: HashMap::new(),
            accept_retry_at: None,
            last_accept_warning: None,
            finished_streams: Vec::new(),
            prune_finished_at: 1024,
            cfg,
            io,
            driver,
            peers,
            peer_index,
            endpoints_open: true,
            routes,
            links: Slab::new(),
            by_stream: HashMap::new(),
            preambles: HashMap::new(),
            deadlines: BinaryHeap::new(),
            dirty: Vec::new(),
            stats: NodeStats::default(),
            stopping: None,
            tx_conns: Vec::new(),
            tx_next: 0,
            tx_round: false,
            tx_batches: 0,
            tx_capped: false,
            totals,
        }
    }

    /// Dials every peer the configuration gives an address for.
    pub fn start(&mut self, now: Instant) {
        for i in 0..self.peers.len() {
            if self.peers[i].connect.is_some() {
                self.dial(i, now);
            }
        }
    }

    // ---- input ----

    /// One received datagram (a GRO buffer is split by segment size first).
    #[inline]
    pub fn on_datagram(&mut self, datagram: &mut [u8], from: SocketAddr, now: Instant) {
        self.driver.recv(datagram, from, now);
    }

    /// An ICMP port unreachable for a datagram sent to `addr`: a peer whose port is unreachable
    /// has died (or is not running yet); its connection ends now rather than at the idle timeout.
    pub fn on_port_unreachable(&mut self, addr: SocketAddr) {
        self.driver.on_port_unreachable(addr);
    }

    /// Readiness of the local connection of `link` (the key given to [`LocalIo::watch`]).
    pub fn on_local_event(&mut self, link: usize, ev: LocalEvent) {
        self.link_event(link, ev);
    }

    /// Link endpoint `endpoint` (its index in the configuration's `links`) has connections to
    /// accept.
    pub fn on_endpoint_readable(&mut self, endpoint: usize, now: Instant) {
        self.accept_local(endpoint, now);
    }

    // ---- the turn ----

    /// Everything between input and output: QUIC timers, connection events, streams, local
    /// connections, deadlines and retries.
    pub fn service(&mut self, now: Instant) {
        if self.driver.timeout().is_some_and(|t| t <= now) {
            self.driver.on_timeout(now);
        }
        self.handle_driver_events(now);
        self.service_streams(now);
        self.pump_dirty(now);
        self.expire(now);
    }

    /// Writes the next batch of datagrams to send into `out`: Retry packets first, then each
    /// connection's GSO batches (at most `max_segments` datagrams each). `None` ends the round;
    /// a backend that stops early (its socket is full) goes on with the next call.
    pub fn poll_transmit(
        &mut self,
        out: &mut [u8],
        max_segments: usize,
        now: Instant,
    ) -> Option<Batch> {
        if let Some(b) = self.driver.poll_stateless(out) {
            return Some(b);
        }
        loop {
            if !self.tx_round {
                self.driver.conn_ids_into(&mut self.tx_conns);
                self.tx_next = 0;
                self.tx_batches = 0;
                self.tx_round = true;
                self.tx_capped = false;
            }
            let Some(&cid) = self.tx_conns.get(self.tx_next) else {
                self.tx_round = false;
                return None;
            };
            if self.tx_batches < MAX_BATCHES_PER_ROUND {
                if let Some(b) = self.driver.poll_transmit(cid, out, max_segments, now) {
                    self.tx_batches += 1;
                    return Some(b);
                }
            } else {
                self.tx_capped = true;
            }
            self.tx_next += 1;
            self.tx_batches = 0;
        }
    }

    /// After the output: sending can close connections (a CONNECTION_CLOSE went out), a stopping
    /// shard moves on. True when the shard has stopped: the backend ends its loop.
    pub fn after_transmit(&mut self, now: Instant) -> bool {
        self.handle_driver_events(now);
        if self.stopping.is_some() && self.advance_stop(now) {
            tracing::info!(node = %self.cfg.node, shard = self.driver.shard(), "shard stopped");
            return true;
        }
        false
    }

    /// Links with news to pump, or a connection with more to send than a round takes: the
    /// backend must not sleep.
    pub fn has_work(&self) -> bool {
        !self.dirty.is_empty() || self.tx_capped
    }

    /// The earliest time [`ShardCore::service`] has something to do without new input.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.driver.timeout(),
            self.deadlines.peek().map(|Reverse((t, _))| *t),
            self.peers.iter().filter_map(|p| p.redial_at).min(),
            self.stopping.map(|s| match s {
                Stopping::Draining { deadline } | Stopping::Closing { deadline } => deadline,
            }),
            self.next_stall_check,
            self.accept_retry_at,
            self.pending_routes.values().map(|p| p.retry_at).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// This shard's figures for the stats line (which the node logs, summed over its shards) and
    /// the metrics; `io` are the backend's datagram counters.
    pub fn report(&self, io: &DatagramStats) -> ShardReport {
        stats::report(self, io)
    }

    // ---- getters (logs, tests) ----

    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    pub fn driver(&self) -> &QuicDriver {
        &self.driver
    }

    pub fn io(&self) -> &L {
        &self.io
    }

    pub fn io_mut(&mut self) -> &mut L {
        &mut self.io
    }

    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    /// Links open now (accepted or connected and not ended).
    pub fn links_open(&self) -> usize {
        self.links.len()
    }

    /// Streams whose route connect is being retried.
    pub fn routes_waiting(&self) -> usize {
        self.pending_routes.len()
    }

    /// The connection new links to `peer` would use, if it is up.
    pub fn peer_conn(&self, peer: &str) -> Option<ConnId> {
        self.peer_index
            .get(peer)
            .and_then(|&i| self.peers[i].active())
    }

    /// A stop has begun ([`ShardCore::stop`], [`ShardCore::begin_drain`]).
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_some()
    }
}

/// Writes all of `bytes` if the connection takes them now (a 4-byte handshake error reply);
/// best effort: the link ends right after.
fn write_all<S: LocalConn>(sock: &mut S, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match sock.write(bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Accept errors that say "not now" rather than "this client failed".
fn is_resource_limit(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
