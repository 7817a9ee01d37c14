//! The local side of a shard, the same on both backends: the link endpoints' listeners and the
//! local connections, watched by the shard's mio `Poll` (on the io_uring backend that `Poll`'s
//! epoll descriptor is itself watched by the ring), and how their readiness reaches the core.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;

use mio::event::Event;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::conn::LinkSocket;

use super::core::{LocalEvent, ShardCore};
use super::inbox::{Mailbox, ShardMsg};
use crate::addr::LocalAddr;
use crate::io::local::{LocalListener, LocalStream};
use crate::io::syscalls::{self, Syscall};
use crate::io::uring::local_send::SharedOutbox;
use crate::io::LocalIo;

/// Link endpoint `i`'s listener is registered as `LISTENER_BASE + i`.
pub(crate) const LISTENER_BASE: usize = 16;
/// Link `n`'s local connection is registered as `LINK_BASE + n`.
pub(crate) const LINK_BASE: usize = 1 << 24;

/// The local side of a shard: the link endpoints and the registry the core's local connections
/// are watched with (token `LINK_BASE + link`).
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
    /// The io_uring backend's queue of local requests: the links' reads and writes go through
    /// it.
    ring: Option<SharedOutbox>,
}

impl MioLocal {
    /// Registers this shard's `listeners` (by endpoint index, at `addrs`) with `registry`.
    pub fn new(
        registry: Registry,
        mut listeners: Vec<Option<LocalListener>>,
        addrs: Vec<LocalAddr>,
        shard: usize,
        mailboxes: Vec<Mailbox>,
    ) -> io::Result<MioLocal> {
        for (i, l) in listeners.iter_mut().enumerate() {
            if let Some(l) = l {
                registry.register(l, Token(LISTENER_BASE + i), Interest::READABLE)?;
            }
        }
        Ok(MioLocal {
            registry,
            handed: listeners.iter().map(|_| VecDeque::new()).collect(),
            listeners,
            addrs,
            shard,
            mailboxes,
            next_turn: 0,
            ring: None,
        })
    }

    /// The links' reads and writes go onto the ring through `outbox` (the io_uring backend).
    pub fn use_ring(&mut self, outbox: SharedOutbox) {
        self.ring = Some(outbox);
    }

    /// A reload's `relay.buffer_size`: on the io_uring backend, the most bytes one local send
    /// gathers from now on (new links' relay buffers take it from the configuration).
    pub(crate) fn set_relay_buffer(&mut self, bytes: usize) {
        if let Some(outbox) = &self.ring {
            outbox.borrow_mut().set_gather_limit(bytes);
        }
    }

    /// Watches `fd` for its first writable event only (`EPOLLONESHOT`), as `token`: a link on
    /// the ring needs readiness only for a route connect's completion (an accepted connection's
    /// comes at once). Left in the set, a socket would wake the ring's poll each time its
    /// reader takes bytes.
    fn watch_once(&self, fd: i32, token: usize, op: libc::c_int) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLOUT | libc::EPOLLET | libc::EPOLLONESHOT) as u32,
            u64: token as u64,
        };
        // SAFETY: `ev` is a valid epoll_event for the call's duration; the registry's
        // descriptor is the Poll's epoll instance, which reports `u64` as the mio token.
        let r = unsafe { libc::epoll_ctl(self.registry.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The endpoints of a reloaded configuration, `addrs` in its order: an endpoint whose
    /// address was there before keeps its listener (and the connections handed to it), a new
    /// one takes its listener from `fresh`, and a removed one's listener closes (its Unix socket
    /// file goes). Listeners are registered again under their new index.
    pub(crate) fn reconfigure(&mut self, addrs: Vec<LocalAddr>, fresh: Vec<Option<LocalListener>>) {
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

    /// One connection from endpoint `endpoint`: one another shard handed over, else one from its
    /// listener (a Unix endpoint's go to the shards in turn).
    fn accept_stream(&mut self, endpoint: usize) -> io::Result<LocalStream> {
        if let Some(conn) = self.handed.get_mut(endpoint).and_then(VecDeque::pop_front) {
            return Ok(conn);
        }
        let Some(Some(l)) = self.listeners.get(endpoint) else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let shared = matches!(l, LocalListener::Unix(..)) && self.mailboxes.len() > 1;
        loop {
            syscalls::count(Syscall::LocalAccept);
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

    /// A connection another shard accepted on `endpoint` for this one.
    pub(crate) fn take_over(&mut self, endpoint: usize, conn: LocalStream) {
        if let Some(q) = self.handed.get_mut(endpoint) {
            q.push_back(conn);
        }
    }
}

impl LocalIo for MioLocal {
    type Conn = LinkSocket;

    fn accept(&mut self, endpoint: usize) -> io::Result<LinkSocket> {
        self.accept_stream(endpoint).map(LinkSocket::new)
    }

    fn connect(&mut self, target: &LocalAddr) -> io::Result<LinkSocket> {
        syscalls::count(Syscall::LocalSocket);
        syscalls::count(Syscall::LocalConnect);
        LocalStream::connect(target).map(LinkSocket::new)
    }

    fn watch(&mut self, conn: &mut LinkSocket, link: usize) -> io::Result<()> {
        if matches!(conn.stream(), LocalStream::Tcp(_)) {
            syscalls::count(Syscall::LocalSetsockopt);
        }
        conn.stream().tune();
        syscalls::count(Syscall::EpollCtl);
        let fd = conn.stream().as_raw_fd();
        if let Some(outbox) = &self.ring {
            self.watch_once(fd, LINK_BASE + link, libc::EPOLL_CTL_ADD)?;
            conn.use_ring(outbox.clone(), link);
            return Ok(());
        }
        self.registry.register(
            &mut SourceFd(&fd),
            Token(LINK_BASE + link),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        Ok(())
    }

    fn watch_again(&mut self, conn: &mut LinkSocket, link: usize) {
        if self.ring.is_some() {
            // Armed for one event only: arm it for the connect's real completion.
            syscalls::count(Syscall::EpollCtl);
            let fd = conn.stream().as_raw_fd();
            if let Err(e) = self.watch_once(fd, LINK_BASE + link, libc::EPOLL_CTL_MOD) {
                tracing::warn!(link, error = %e, "cannot watch a connecting link socket again; its connect times out");
            }
        }
    }

    fn unwatch(&mut self, conn: &mut LinkSocket) {
        // The core drops the connection right after: its `close` is counted here too.
        syscalls::count(Syscall::EpollCtl);
        syscalls::count(Syscall::LocalClose);
        self.registry
            .deregister(&mut SourceFd(&conn.stream().as_raw_fd()))
            .ok();
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

/// Hands `ev` to the core if it is a link's or a link endpoint's; false for other tokens (the
/// backend's own).
pub fn on_local_event(core: &mut ShardCore<MioLocal>, ev: &Event) -> bool {
    match ev.token() {
        Token(t) if t >= LINK_BASE => core.on_local_event(
            t - LINK_BASE,
            LocalEvent {
                readable: ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                read_closed: ev.is_read_closed() || ev.is_error(),
                writable: ev.is_writable() || ev.is_error(),
            },
        ),
        Token(t) if t >= LISTENER_BASE => {
            core.on_endpoint_readable(t - LISTENER_BASE, std::time::Instant::now())
        }
        _ => return false,
    }
    true
}
