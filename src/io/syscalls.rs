//! The system calls a shard makes on the data path, counted by kind where the backends make
//! them, so "system calls per GB" compares the two backends without strace.
//!
//! Where the counts live: in plain `u64` cells of the calling thread (`thread_local!`, no
//! atomics). A shard runs on one thread of its own (`crate::shard::runtime`), so that thread's
//! counts are the shard's, and the shard reads them when it answers a snapshot
//! ([`current`]). Per thread rather than in a struct the backend owns because the local
//! connections' reads and writes happen inside the core's relay (`Link::pump` calling
//! [`crate::io::LocalConn`]), where no backend state is in reach; threading a counter through
//! that seam would change every signature of the hot path for a figure. Calls made on other
//! threads (the supervisor waking a shard, the admin endpoint) land in those threads' cells,
//! which nothing reads: they are not a shard's data path.
//!
//! What is counted, one per attempt (WouldBlock and errors included, since the kernel was
//! entered either way):
//! - both backends: `epoll_wait` (mio `Poll::poll`; on io_uring the zero-timeout one that
//!   collects local readiness), `epoll_ctl` (watching and unwatching link connections), the
//!   local connections' `read`, `write`, `shutdown`, `accept`, `socket` +
//!   `connect` (route connects), `setsockopt` (TCP_NODELAY), `getsockopt` + `getpeername`
//!   (finishing a connect), `close` (a link's connection, counted when the core lets it go),
//!   `waker_write` (the eventfd write that wakes another shard for a hand-over), and the UDP
//!   error queue's `recvmsg(MSG_ERRQUEUE)`;
//! - mio: the UDP socket's `sendmsg` and `recvmsg`;
//! - io_uring: `io_uring_enter` (the turn's wait and a full submission queue's submit), plus
//!   `sendmsg` when a batch is resent datagram by datagram after GSO was refused. The links'
//!   writes to their local connections are `SEND`s on the ring there, carried by the enters:
//!   `write` counts only the rare direct write (a handshake error reply).
//!
//! Not counted: set-up (binding, ring set-up, buffer registration, the first registrations),
//! the allocator's `mmap`/`munmap`/`madvise`, log lines written to stderr, crossbeam's `futex`
//! wake-ups when a shard answers the supervisor, and vDSO calls (`clock_gettime`), which never
//! enter the kernel.

use std::cell::Cell;

/// One kind of system call, named as the `call` label of `rlinkd_syscalls_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Syscall {
    /// `epoll_wait`: mio's `Poll::poll` (the mio loop's wait; io_uring's zero-timeout look).
    EpollWait,
    /// `epoll_ctl`: registering or deregistering a local connection or endpoint.
    EpollCtl,
    /// `io_uring_enter`: the io_uring loop's submit-and-wait, or a full queue's submit.
    IoUringEnter,
    /// `sendmsg` on the QUIC socket.
    UdpSendmsg,
    /// `recvmsg` on the QUIC socket.
    UdpRecvmsg,
    /// `recvmsg(MSG_ERRQUEUE)` on the QUIC socket: ICMP errors.
    UdpErrqueue,
    /// `read`/`recv` on a link's local connection.
    LocalRead,
    /// `write`/`send` on a link's local connection (on io_uring, only writes made off the ring).
    LocalWrite,
    /// `accept4` on a link endpoint.
    LocalAccept,
    /// `socket` for a route connect.
    LocalSocket,
    /// `connect` for a route connect.
    LocalConnect,
    /// `shutdown(SHUT_WR)` on a local connection.
    LocalShutdown,
    /// `close` of a local connection the core let go.
    LocalClose,
    /// `setsockopt` on a local connection (TCP_NODELAY).
    LocalSetsockopt,
    /// `getsockopt(SO_ERROR)` finishing a connect.
    LocalGetsockopt,
    /// `getpeername` finishing a connect.
    LocalGetpeername,
    /// The eventfd `write` of another shard's waker (a hand-over from this shard).
    WakerWrite,
    /// `ioctl(SIOCOUTQ)` on a stalled link's connection (io_uring: has its reader taken bytes?).
    LocalIoctl,
    /// `poll(POLLRDHUP)` on a link's connection read on the ring, once when the node starts
    /// draining: has its client already half-closed?
    LocalPoll,
}

/// Number of [`Syscall`] kinds.
pub const KINDS: usize = 19;

impl Syscall {
    pub const ALL: [Syscall; KINDS] = [
        Syscall::EpollWait,
        Syscall::EpollCtl,
        Syscall::IoUringEnter,
        Syscall::UdpSendmsg,
        Syscall::UdpRecvmsg,
        Syscall::UdpErrqueue,
        Syscall::LocalRead,
        Syscall::LocalWrite,
        Syscall::LocalAccept,
        Syscall::LocalSocket,
        Syscall::LocalConnect,
        Syscall::LocalShutdown,
        Syscall::LocalClose,
        Syscall::LocalSetsockopt,
        Syscall::LocalGetsockopt,
        Syscall::LocalGetpeername,
        Syscall::WakerWrite,
        Syscall::LocalIoctl,
        Syscall::LocalPoll,
    ];

    /// The `call` label value.
    pub fn name(self) -> &'static str {
        match self {
            Syscall::EpollWait => "epoll_wait",
            Syscall::EpollCtl => "epoll_ctl",
            Syscall::IoUringEnter => "io_uring_enter",
            Syscall::UdpSendmsg => "udp_sendmsg",
            Syscall::UdpRecvmsg => "udp_recvmsg",
            Syscall::UdpErrqueue => "udp_recvmsg_errqueue",
            Syscall::LocalRead => "local_read",
            Syscall::LocalWrite => "local_write",
            Syscall::LocalAccept => "local_accept",
            Syscall::LocalSocket => "local_socket",
            Syscall::LocalConnect => "local_connect",
            Syscall::LocalShutdown => "local_shutdown",
            Syscall::LocalClose => "local_close",
            Syscall::LocalSetsockopt => "local_setsockopt",
            Syscall::LocalGetsockopt => "local_getsockopt",
            Syscall::LocalGetpeername => "local_getpeername",
            Syscall::WakerWrite => "waker_write",
            Syscall::LocalIoctl => "local_ioctl",
            Syscall::LocalPoll => "local_poll",
        }
    }
}

/// Counts by kind: one thread's (a shard's), or a sum of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallCounts {
    calls: [u64; KINDS],
}

impl SyscallCounts {
    pub fn get(&self, call: Syscall) -> u64 {
        self.calls[call as usize]
    }

    pub fn set(&mut self, call: Syscall, n: u64) {
        self.calls[call as usize] = n;
    }

    /// Every kind together.
    pub fn total(&self) -> u64 {
        self.calls.iter().sum()
    }

    /// Adds `other`'s counts kind by kind.
    pub fn add(&mut self, other: &SyscallCounts) {
        for (a, b) in self.calls.iter_mut().zip(other.calls) {
            *a += b;
        }
    }

    /// (kind, count) of every kind, in [`Syscall::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Syscall, u64)> + '_ {
        Syscall::ALL.into_iter().map(|c| (c, self.get(c)))
    }
}

thread_local! {
    static COUNTS: [Cell<u64>; KINDS] = const { [const { Cell::new(0) }; KINDS] };
}

/// Counts one `call` made by this thread.
#[inline]
pub fn count(call: Syscall) {
    COUNTS.with(|c| {
        let cell = &c[call as usize];
        cell.set(cell.get().wrapping_add(1));
    });
}

/// This thread's counts since it started.
pub fn current() -> SyscallCounts {
    COUNTS.with(|c| {
        let mut out = SyscallCounts::default();
        for (o, cell) in out.calls.iter_mut().zip(c) {
            *o = cell.get();
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_listed_once_in_index_order_with_distinct_names() {
        for (i, c) in Syscall::ALL.into_iter().enumerate() {
            assert_eq!(c as usize, i, "{c:?}");
        }
        let mut names: Vec<_> = Syscall::ALL.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KINDS);
    }

    /// Each thread counts its own calls (a shard is a thread), and sums add kind by kind.
    #[test]
    fn counts_are_per_thread_and_add_by_kind() {
        let before = current();
        count(Syscall::EpollWait);
        count(Syscall::EpollWait);
        count(Syscall::LocalRead);
        let other = std::thread::spawn(|| {
            count(Syscall::IoUringEnter);
            current()
        })
        .join()
        .unwrap();
        let mine = current();
        assert_eq!(
            mine.get(Syscall::EpollWait) - before.get(Syscall::EpollWait),
            2
        );
        assert_eq!(
            mine.get(Syscall::LocalRead) - before.get(Syscall::LocalRead),
            1
        );
        assert_eq!(
            mine.get(Syscall::IoUringEnter),
            before.get(Syscall::IoUringEnter)
        );
        assert_eq!(other.get(Syscall::IoUringEnter), 1);
        assert_eq!(other.total(), 1);
        let mut sum = mine;
        sum.add(&other);
        assert_eq!(sum.total(), mine.total() + 1);
        assert_eq!(sum.iter().count(), KINDS);
    }
}
