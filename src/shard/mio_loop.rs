//! The mio backend: one event loop that owns the QUIC UDP socket, the link endpoints
//! (listeners) and the local connections' registrations, and drives a [`ShardCore`] with what
//! they report. It decides nothing about links or connections: that is the core's (see the call
//! order in [`crate::shard::core`]). The local side ([`MioLocal`]) and the mailboxes
//! ([`ShardInbox`]) are shared with the io_uring backend.
//!
//! Each turn: wait for readiness or the core's next deadline; hand local readiness and accepts
//! to the core; take the inbox's messages; receive up to [`RECV_BURST`] GRO buffers and feed
//! them as datagrams (or hand them to their shard); [`ShardCore::service`]; send the core's
//! batches (a batch the socket refuses with WouldBlock waits for the next writable turn);
//! [`ShardCore::after_transmit`].

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use super::core::{ShardCore, ShardReport};
use super::inbox::{ShardInbox, ShardSetup, WAKER};
use super::local::{on_local_event, MioLocal};
use crate::addr::LocalAddr;
use crate::config::NodeConfig;
use crate::io::syscalls::{self, Syscall};
use crate::io::udp::{UdpSocket, MAX_GSO_BYTES};
use crate::io::{DatagramIo, Transmit};
use crate::quic::driver::Batch;

const UDP: Token = Token(0);
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

/// One shard on mio.
pub struct MioShard {
    poll: Poll,
    udp: UdpSocket,
    core: ShardCore<MioLocal>,
    inbox: ShardInbox,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    /// A batch in `tx_buf` the socket refused with WouldBlock.
    tx_pending: Option<Batch>,
    udp_readable: bool,
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
        let shard = u8::try_from(setup.index).unwrap_or(u8::MAX);
        let driver = ShardCore::<MioLocal>::driver_for(&cfg, udp.local_addr())?
            .with_shard(shard)
            .with_instance(setup.instance);
        let local = MioLocal::new(
            poll.registry().try_clone().map_err(NodeError::Poll)?,
            setup.listeners,
            cfg.links.iter().map(|l| l.listen.clone()).collect(),
            setup.index,
            setup.mailboxes.clone(),
        )
        .map_err(NodeError::Poll)?;
        let caps = udp.capabilities();
        tracing::info!(node = %cfg.node, shard = setup.index, quic = %udp.local_addr(), gso = caps.gso, gro = caps.gro, io = "mio", "shard listening");
        let core = ShardCore::with_driver(cfg, driver, local);
        Ok(MioShard {
            poll,
            udp,
            core,
            inbox: ShardInbox::new(setup.index, setup.shards, setup.inbox, setup.mailboxes),
            rx_buf: vec![0; 65_536],
            tx_buf: vec![0; MAX_GSO_BYTES],
            tx_pending: None,
            udp_readable: true,
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
            syscalls::count(Syscall::EpollWait);
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
                    // Messages are read every turn, whatever woke the loop.
                    WAKER => {}
                    _ => {
                        on_local_event(&mut self.core, ev);
                    }
                }
            }
            let now = Instant::now();
            let udp = &self.udp;
            self.inbox.read(&mut self.core, || udp.stats(), now);
            self.receive(now);
            self.core.service(now);
            self.flush(now);
            if self.core.after_transmit(now) {
                return Ok(self.inbox.report(&self.core, &self.udp.stats()));
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
                        self.inbox
                            .on_datagram(&mut self.core, datagram, meta.from, now);
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
                    self.inbox.on_port_unreachable(&mut self.core, e.to);
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
