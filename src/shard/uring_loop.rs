//! The io_uring backend: one ring per shard carries the QUIC socket ([`UringIo`]: multishot
//! receive into provided buffers, GSO sends) and drives the same [`ShardCore`] as
//! [`crate::shard::mio_loop`], in the call order of [`crate::shard::core`], from the same
//! [`ShardSetup`].
//!
//! The links' local connections are on the ring too: each link's
//! [`crate::shard::conn::LinkSocket`] queues a `SEND` of the bytes it is given (a share of the
//! relay's block, one send per connection at a time, gathering the turn's writes) and keeps a
//! `RECV` parked into room its relay buffer lends, in the shard's
//! [`crate::io::uring::local_send::LocalOutbox`]; the turn's enter carries them all, and their
//! completions come back as [`Completion::LocalSent`] and [`Completion::LocalReceived`].
//!
//! The rest of the local readiness (link endpoints' accepts, a route connect's completion: a
//! link's socket is in the epoll set only until its first writable event) and the shard's
//! mailbox stay on the mio `Poll` the node gave the shard: that `Poll`'s epoll descriptor is
//! itself watched by a multishot poll on the ring, so one `io_uring_enter` per turn submits the
//! requests and waits for datagrams, local completions, local readiness, messages from the node
//! or other shards (the mailbox's waker) and the core's deadline (the enter's timeout)
//! together. Local readiness is then collected with a zero-timeout `epoll_wait` and handled as
//! on mio ([`MioLocal`]), and the inbox and the hand-overs are [`ShardInbox`]'s, as on mio.
//!
//! A `UringShard` is built and run on its shard's thread: its ring is `SINGLE_ISSUER` where the
//! kernel has it, and the type is not `Send`.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use super::core::{ShardCore, ShardReport};
use super::inbox::{ShardInbox, ShardSetup};
use super::local::{on_local_event, MioLocal};
use super::mio_loop::NodeError;
use crate::config::NodeConfig;
use crate::io::syscalls::{self, Syscall};
use crate::io::udp::UdpSocket;
use crate::io::uring::local_send::LocalOutbox;
use crate::io::uring::{Completion, RingSetup, UringError, UringIo};
use crate::io::DatagramIo;

/// Local events taken per zero-timeout `epoll_wait`; a full batch means more may be ready, so
/// the next turn does not sleep.
const LOCAL_EVENTS: usize = 1024;

/// Why a shard did not start on io_uring.
pub enum UringShardError {
    /// The kernel cannot set this ring up (after the node's probe passed: a memory limit, say).
    /// Nothing of `setup` was used: the shard runs on mio with it.
    Unsupported {
        error: UringError,
        setup: Box<ShardSetup>,
    },
    /// What would fail on mio too (the socket's options, TLS files).
    Node(NodeError),
}

impl From<NodeError> for UringShardError {
    fn from(e: NodeError) -> Self {
        UringShardError::Node(e)
    }
}

pub struct UringShard {
    io: UringIo,
    poll: Poll,
    events: Events,
    core: ShardCore<MioLocal>,
    inbox: ShardInbox,
    /// The epoll descriptor signalled readiness (or the last batch was full): collect it.
    local_ready: bool,
    /// Longest wait per enter, and a yield between turns (`RLINKD_URING_WAIT_CAP`, for valgrind:
    /// see [`NodeConfig::uring_wait_cap`]). `None` in production.
    wait_cap: Option<Duration>,
}

impl UringShard {
    /// The shard of `setup` on a ring, for the node of `cfg`. The ring is set up first, so a
    /// kernel that cannot run it gives the setup back untouched.
    pub fn new(cfg: NodeConfig, setup: ShardSetup) -> Result<UringShard, UringShardError> {
        let ring = match RingSetup::new() {
            Ok(r) => r,
            Err(error) => {
                return Err(UringShardError::Unsupported {
                    error,
                    setup: Box::new(setup),
                })
            }
        };
        let q = &cfg.quic;
        let addr = q.listen;
        let udp = UdpSocket::from_bound(setup.udp, q.gso, q.gro)
            .map_err(|source| NodeError::Udp { addr, source })?;
        let shard = u8::try_from(setup.index).unwrap_or(u8::MAX);
        let driver = ShardCore::<MioLocal>::driver_for(&cfg, udp.local_addr())
            .map_err(NodeError::from)?
            .with_shard(shard)
            .with_instance(setup.instance);
        let poll = setup.poll;
        let mut local = MioLocal::new(
            poll.registry().try_clone().map_err(NodeError::Poll)?,
            setup.listeners,
            cfg.links.iter().map(|l| l.listen.clone()).collect(),
            setup.index,
            setup.mailboxes.clone(),
        )
        .map_err(NodeError::Poll)?;
        let local_addr = udp.local_addr();
        let gso = udp.capabilities().gso;
        let mut io = UringIo::start(ring, udp, Some(poll.as_raw_fd()));
        let outbox = LocalOutbox::shared(cfg.relay.buffer_size);
        local.use_ring(outbox.clone());
        io.set_local_outbox(outbox);
        tracing::info!(
            node = %cfg.node,
            shard = setup.index,
            quic = %local_addr,
            gso,
            gro = io.gro(),
            io = "io_uring",
            taskrun = %io.ring().taskrun(),
            "shard listening"
        );
        let wait_cap = cfg.uring_wait_cap();
        if let Some(cap) = wait_cap {
            tracing::warn!(shard = setup.index, ?cap, "io_uring waits capped and read room zeroed (RLINKD_URING_WAIT_CAP): a setting for valgrind runs, not for production");
            io.zero_recv_room();
        }
        let core = ShardCore::with_driver(cfg, driver, local);
        Ok(UringShard {
            io,
            poll,
            events: Events::with_capacity(LOCAL_EVENTS),
            core,
            inbox: ShardInbox::new(setup.index, setup.shards, setup.inbox, setup.mailboxes),
            local_ready: true,
            wait_cap,
        })
    }

    /// Runs until told to stop (drained) or to stop at once, then cancels what is in flight on
    /// the ring and waits for it; returns the shard's last figures.
    pub fn run(&mut self) -> Result<ShardReport, NodeError> {
        self.core.start(Instant::now());
        loop {
            let now = Instant::now();
            let timeout = if self.local_ready || self.core.has_work() {
                Some(Duration::ZERO)
            } else {
                self.core
                    .next_deadline()
                    .map(|t| t.saturating_duration_since(now))
            };
            let timeout = match self.wait_cap {
                Some(cap) => {
                    // Under valgrind: a system call it treats as blocking, so other threads
                    // get its global lock between turns.
                    std::thread::yield_now();
                    Some(timeout.map_or(cap, |t| t.min(cap)))
                }
                None => timeout,
            };
            self.io.wait(timeout).map_err(NodeError::Poll)?;
            let now = Instant::now();
            let (core, inbox, local_ready) =
                (&mut self.core, &mut self.inbox, &mut self.local_ready);
            self.io.reap(&mut |c| match c {
                Completion::Datagram { data, from } => inbox.on_datagram(core, data, from, now),
                Completion::PortUnreachable(addr) => inbox.on_port_unreachable(core, addr),
                Completion::Watched => *local_ready = true,
                Completion::LocalSent {
                    link,
                    id,
                    res,
                    bufs,
                } => core.on_local_sent(link, id, res, bufs),
                Completion::LocalReceived { link, id, res, buf } => {
                    core.on_local_received(link, id, res, buf)
                }
            });
            if self.local_ready {
                self.poll_local()?;
            }
            let now = Instant::now();
            let io = &self.io;
            self.inbox.read(&mut self.core, || io.stats(), now);
            self.core.service(now);
            self.flush(now);
            if self.core.after_transmit(now) {
                break;
            }
        }
        let quiet = self.io.shutdown();
        let (enters, enobufs, truncated) = self.io.ring_counters();
        tracing::info!(
            shard = self.inbox.index(),
            enters,
            local_sends = self.io.local_sends(),
            local_recvs = self.io.local_recvs(),
            enobufs,
            truncated,
            in_flight = self.io.in_flight(),
            "io_uring shard stopped{}",
            if quiet {
                ": every operation completed"
            } else {
                ""
            }
        );
        Ok(self.inbox.report(&self.core, &self.io.stats()))
    }

    /// Takes the local readiness mio has collected (without waiting) to the core. The
    /// mailbox's waker is among them: the inbox is read every turn anyway.
    fn poll_local(&mut self) -> Result<(), NodeError> {
        self.local_ready = false;
        syscalls::count(Syscall::EpollWait);
        if let Err(e) = self.poll.poll(&mut self.events, Some(Duration::ZERO)) {
            if e.kind() == io::ErrorKind::Interrupted {
                self.local_ready = true;
                return Ok(());
            }
            return Err(NodeError::Poll(e));
        }
        let mut count = 0;
        for ev in self.events.iter() {
            count += 1;
            on_local_event(&mut self.core, ev);
        }
        // The epoll descriptor only signals new readiness: a full batch may have left some.
        self.local_ready = count >= LOCAL_EVENTS;
        Ok(())
    }

    /// Writes the core's batches into free send slots and queues them; they leave with the next
    /// turn's `io_uring_enter`. With every slot in flight the round goes on next turn.
    fn flush(&mut self, now: Instant) {
        let segments = self.io.max_gso_segments();
        loop {
            let Some(buf) = self.io.send_buffer() else {
                return;
            };
            let Some(b) = self.core.poll_transmit(buf, segments, now) else {
                return;
            };
            self.io.send(b.to, b.len, b.segment_size);
        }
    }
}
