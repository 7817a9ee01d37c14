//! How shards talk, the same on both backends: a [`Mailbox`] (a channel and the waker of the
//! shard's mio `Poll`) per shard, the [`ShardMsg`]s it carries, and a shard's own end of them
//! ([`ShardInbox`]): taking its messages to the core (stop, figures, metrics, reload, hand-overs),
//! and handing what reached it for another shard (a stray datagram, an ICMP error) to that
//! shard.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use mio::{Poll, Token, Waker};

use super::core::{ReloadReport, ShardCore, ShardReport};
use super::local::MioLocal;
use crate::admin::snapshot::{NodeCounters, ShardSnapshot};
use crate::config::NodeConfig;
use crate::io::local::{LocalListener, LocalStream};
use crate::io::syscalls::{self, Syscall};
use crate::io::DatagramStats;
use crate::quic::cid::{self, ShardCount};

/// Another shard or the node has put a message in this shard's inbox.
pub(crate) const WAKER: Token = Token(1);

/// Hand-overs queued for one shard at most; past it strays are dropped (and counted): QUIC
/// recovers them, and a flood cannot grow a queue without bound.
const HANDOFF_LIMIT: usize = 4096;

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
    pub fn new(poll: &Poll) -> std::io::Result<(Mailbox, Receiver<ShardMsg>)> {
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        Ok((Mailbox { tx, waker }, rx))
    }

    /// False when the shard has gone. The waker's eventfd write is counted on the sending
    /// thread (`crate::io::syscalls`): a shard's when it hands something over.
    pub fn send(&self, msg: ShardMsg) -> bool {
        if self.tx.send(msg).is_err() {
            return false;
        }
        syscalls::count(Syscall::WakerWrite);
        self.waker.wake().is_ok()
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

/// A shard's end of the mailboxes: its inbox, every shard's mailbox, and the hand-over counts.
pub struct ShardInbox {
    index: usize,
    shards: ShardCount,
    inbox: Receiver<ShardMsg>,
    mailboxes: Vec<Mailbox>,
    /// Datagrams handed to their owner shard, and those dropped because its queue was full.
    handed_over: u64,
    /// Bytes of the datagrams handed over (each copied once into its message).
    handed_over_bytes: u64,
    handoff_dropped: u64,
}

impl ShardInbox {
    pub fn new(
        index: usize,
        shards: ShardCount,
        inbox: Receiver<ShardMsg>,
        mailboxes: Vec<Mailbox>,
    ) -> ShardInbox {
        ShardInbox {
            index,
            shards,
            inbox,
            mailboxes,
            handed_over: 0,
            handed_over_bytes: 0,
            handoff_dropped: 0,
        }
    }

    pub fn index(&self) -> usize {
        self.index
    }

    /// Takes every message waiting to the core (the waker fires once for many); `io` gives the
    /// backend's datagram counters, read only when the node asks for figures or metrics.
    pub fn read(
        &mut self,
        core: &mut ShardCore<MioLocal>,
        io: impl Fn() -> DatagramStats,
        now: Instant,
    ) {
        while let Ok(msg) = self.inbox.try_recv() {
            match msg {
                ShardMsg::Stop => core.stop(now),
                ShardMsg::Report(reply) => {
                    reply.send(self.report(core, &io())).ok();
                }
                ShardMsg::Snapshot(reply) => {
                    reply.send(self.snapshot(core, &io())).ok();
                }
                ShardMsg::Datagram { mut bytes, from } => core.on_datagram(&mut bytes, from, now),
                ShardMsg::PortUnreachable(addr) => core.on_port_unreachable(addr),
                ShardMsg::Accepted { endpoint, conn } => {
                    if core.is_stopping() {
                        continue; // dropped: the endpoints are closed
                    }
                    core.io_mut().take_over(endpoint, conn);
                    core.on_endpoint_readable(endpoint, now);
                }
                ShardMsg::Reload(r) => self.reload(core, *r, now),
            }
        }
    }

    /// This shard's metrics: the core's, the backend's datagram counters `io`, the hand-overs.
    fn snapshot(&self, core: &ShardCore<MioLocal>, io: &DatagramStats) -> ShardSnapshot {
        let mut node = NodeCounters {
            datagrams_sent: io.datagrams_sent,
            send_calls: io.send_calls,
            datagrams_received: io.datagrams_received,
            receive_calls: io.recv_calls,
            datagrams_handed_over: self.handed_over,
            // This thread is the shard's: its counts are the shard's.
            syscalls: syscalls::current(),
            ..Default::default()
        };
        node.copied.handover = self.handed_over_bytes;
        node.datagrams_dropped
            .insert("handoff_queue_full", self.handoff_dropped);
        core.snapshot(node)
    }

    /// Applies a reload: new TLS for new connections, the endpoints' listeners moved to the
    /// new configuration's indices, then the core's part (`ShardCore::reload`).
    fn reload(&self, core: &mut ShardCore<MioLocal>, r: ShardReload, now: Instant) {
        let ShardReload {
            cfg,
            listeners,
            done,
        } = r;
        if core.is_stopping() {
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
        core.io_mut().reconfigure(addrs, listeners);
        let report = core.reload(cfg, quic, now);
        let buffer = core.config().relay.buffer_size;
        core.io_mut().set_relay_buffer(buffer);
        // Connections may be queued on new endpoints already (edge-triggered: no event for
        // them): accept now.
        for i in 0..core.config().links.len() {
            core.on_endpoint_readable(i, now);
        }
        done.send(report).ok();
    }

    /// This shard's figures: the core's, the backend's datagram counters `io`, the hand-overs.
    pub fn report(&self, core: &ShardCore<MioLocal>, io: &DatagramStats) -> ShardReport {
        let mut r = core.report(io);
        r.handed_over = self.handed_over;
        r.handoff_dropped = self.handoff_dropped;
        r
    }

    /// Gives `datagram` (one GRO segment) to the core, or to the shard that owns its
    /// connection. Checked per datagram, not per buffer: GRO may merge datagrams of several
    /// connections (one 4-tuple carries every shard pair's).
    pub fn on_datagram(
        &mut self,
        core: &mut ShardCore<MioLocal>,
        datagram: &mut [u8],
        from: SocketAddr,
        now: Instant,
    ) {
        if self.shards.get() > 1 {
            if let Some(owner) = cid::owner(datagram, self.shards) {
                if owner != self.index {
                    self.hand_over(owner, datagram, from);
                    return;
                }
            }
        }
        core.on_datagram(datagram, from, now);
    }

    /// ICMP port unreachable for `addr`: the kernel queues the error on one socket of the
    /// group, whichever shard's connection it concerns, so every shard is told.
    pub fn on_port_unreachable(&self, core: &mut ShardCore<MioLocal>, addr: SocketAddr) {
        core.on_port_unreachable(addr);
        for (i, m) in self.mailboxes.iter().enumerate() {
            if i != self.index {
                m.send(ShardMsg::PortUnreachable(addr));
            }
        }
    }

    /// Hands a datagram to the shard that owns its connection. The copy is the price of a
    /// stray, which steering makes rare; a queue past [`HANDOFF_LIMIT`] drops it (counted).
    fn hand_over(&mut self, owner: usize, datagram: &[u8], from: SocketAddr) {
        let to = &self.mailboxes[owner];
        if to.tx.len() >= HANDOFF_LIMIT {
            self.handoff_dropped += 1;
            return;
        }
        if to.send(ShardMsg::Datagram {
            bytes: datagram.to_vec(),
            from,
        }) {
            self.handed_over += 1;
            self.handed_over_bytes += datagram.len() as u64;
        }
    }
}
