//! The mio backend: one event loop that owns the QUIC UDP socket, the signals, the link
//! endpoints (listeners) and the local connections' registrations, and drives a
//! [`ShardCore`] with what they report. It decides nothing about links or connections: that is
//! the core's (see the call order in [`crate::shard::core`]).
//!
//! Each turn: wait for readiness or the core's next deadline; hand signals, local readiness and
//! accepts to the core; receive up to [`RECV_BURST`] GRO buffers and feed them as datagrams;
//! [`ShardCore::service`]; send the core's batches (a batch the socket refuses with WouldBlock
//! waits for the next writable turn); [`ShardCore::after_transmit`].

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Registry, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;

use super::core::{LocalEvent, ShardCore};
use crate::addr::LocalAddr;
use crate::config::NodeConfig;
use crate::io::local::{LocalListener, LocalStream};
use crate::io::udp::{UdpSocket, MAX_GSO_BYTES};
use crate::io::{DatagramIo, LocalConn, LocalIo, Transmit};
use crate::quic::driver::Batch;

const UDP: Token = Token(0);
const SIGNALS: Token = Token(1);
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
    /// By endpoint index (the configuration's `links`); `None` once closed.
    listeners: Vec<Option<LocalListener>>,
    /// Their addresses, for removing Unix socket files when they close.
    addrs: Vec<LocalAddr>,
}

impl LocalIo for MioLocal {
    type Conn = LocalStream;

    fn accept(&mut self, endpoint: usize) -> io::Result<LocalStream> {
        match self.listeners.get(endpoint) {
            Some(Some(l)) => l.accept(),
            _ => Err(io::ErrorKind::WouldBlock.into()),
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
    }
}

/// One shard on mio: the node as `rlinkd run` starts it today (`crate::node::Node`).
pub struct MioShard {
    poll: Poll,
    signals: Signals,
    udp: UdpSocket,
    core: ShardCore<MioLocal>,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    /// A batch in `tx_buf` the socket refused with WouldBlock.
    tx_pending: Option<Batch>,
    udp_readable: bool,
}

impl MioShard {
    /// Binds every socket the configuration names. Fails with the address that could not be used.
    pub fn bind(cfg: NodeConfig) -> Result<MioShard, NodeError> {
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

        let driver = ShardCore::<MioLocal>::driver_for(&cfg, udp.local_addr())?;
        let mut listeners = Vec::new();
        for (i, link) in cfg.links.iter().enumerate() {
            let mut l = LocalListener::bind(&link.listen).map_err(|source| NodeError::Listen {
                addr: link.listen.clone(),
                source,
            })?;
            poll.registry()
                .register(&mut l, Token(LISTENER_BASE + i), Interest::READABLE)
                .map_err(NodeError::Poll)?;
            listeners.push(Some(l));
        }
        let local = MioLocal {
            registry: poll.registry().try_clone().map_err(NodeError::Poll)?,
            listeners,
            addrs: cfg.links.iter().map(|l| l.listen.clone()).collect(),
        };
        let caps = udp.capabilities();
        tracing::info!(node = %cfg.node, quic = %udp.local_addr(), gso = caps.gso, gro = caps.gro, "node listening");
        let core = ShardCore::with_driver(cfg, driver, local, Instant::now());
        Ok(MioShard {
            poll,
            signals,
            udp,
            core,
            rx_buf: vec![0; 65_536],
            tx_buf: vec![0; MAX_GSO_BYTES],
            tx_pending: None,
            udp_readable: true,
        })
    }

    pub fn quic_addr(&self) -> SocketAddr {
        self.udp.local_addr()
    }

    /// Runs until SIGINT or SIGTERM (drained) or a second one.
    pub fn run(&mut self) -> Result<(), NodeError> {
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
                    SIGNALS => self.on_signal(),
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
            self.receive(now);
            self.core.service(now);
            self.flush(now);
            if self.core.after_transmit(now, &self.udp.stats()) {
                return Ok(());
            }
        }
    }

    fn on_signal(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            match sig {
                SIGHUP => tracing::warn!(
                    signal = "SIGHUP",
                    "reload is not supported yet: the configuration in force is unchanged"
                ),
                SIGUSR1 => self.core.log_stats(&self.udp.stats()),
                _ => self.core.stop(Instant::now()),
            }
        }
    }

    fn receive(&mut self, now: Instant) {
        if !self.udp_readable {
            return;
        }
        for _ in 0..RECV_BURST {
            match self.udp.recv(&mut self.rx_buf) {
                Ok(meta) => {
                    for datagram in self.rx_buf[..meta.len].chunks_mut(meta.segment_size) {
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
    /// is not running yet); the core ends its connection now rather than at the idle timeout.
    fn read_icmp_errors(&mut self) {
        for _ in 0..64 {
            match self.udp.recv_error() {
                Ok(Some(e)) if e.port_unreachable => {
                    tracing::debug!(to = %e.to, "ICMP port unreachable");
                    self.core.on_port_unreachable(e.to);
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

    /// Unix socket paths this node created, for cleanup by callers that stop it without a signal.
    pub fn unix_endpoints(&self) -> Vec<PathBuf> {
        self.core
            .config()
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
