//! [`UringIo`]: the QUIC socket on a ring. It owns the ring, the socket, the provided buffers and
//! the send slots, keeps one multishot receive and one multishot poll (on a watched descriptor)
//! armed, turns completions into [`Completion`]s, and tears down with operations in flight.
//!
//! Receive: one `RECVMSG` with `IORING_RECV_MULTISHOT` picks buffers from the [`BufRing`]; each
//! completion names its buffer, which holds an `io_uring_recvmsg_out` header, the source address,
//! the control messages (the `UDP_GRO` segment size, decoded by [`crate::io::cmsg`]) and the
//! payload. The payload is split by segment size, each datagram handed out in place, and the
//! buffer given back to the ring at once. A receive that ends (ENOBUFS when every buffer waits
//! in the completion queue, an error the socket reports, anything without `IORING_CQE_F_MORE`)
//! is re-armed at the end of the same reap.
//!
//! ICMP errors: with `IP_RECVERR` an ICMP error queues a report and sets the socket error, which
//! ends the armed receive (or fails the next send) with that error; the engine then reads the
//! error queue (`recvmsg(MSG_ERRQUEUE)`, not on the ring: it is rare and must not wait) and
//! reports each port unreachable, so a dead peer's connection still ends at once, and re-arms.
//!
//! Send: a GSO batch goes out as one `SENDMSG` with a `UDP_SEGMENT` cmsg from a [`Slot`]. A
//! kernel that refuses a segmented send (EIO, EINVAL) switches the socket to one datagram per
//! send, and the refused batch is resent datagram by datagram, as in [`crate::io::udp`]. Other
//! send errors are counted; QUIC recovers the loss.
//!
//! Local sends: the links' writes to their local connections, queued in a
//! [`LocalOutbox`] during the turn, go on the ring right before the turn's enter (`MSG_DONTWAIT`),
//! as a `SEND` for one buffer or a `SENDMSG` gathering a link's buffers of the turn; each
//! completion goes back to its link's writer ([`Completion::LocalSent`]). The links' reads are
//! `RECV`s parked on the ring into room their relay buffers lent ([`Completion::LocalReceived`]);
//! a parked request (a read, or a send waiting for room) whose link ends is cancelled.
//!
//! [`Slot`]: super::tx::Slot

use std::io;
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::types::{Fd, RecvMsgOut};
use io_uring::{cqueue, opcode};

use super::bufring::BufRing;
use super::local_recv::QueuedRecv;
use super::local_send::{QueuedSend, SendBufs, SharedOutbox};
use super::recvmsg::{gro_segment, recv_template, sockaddr_from_bytes};
use super::ring::Ring;
use super::tx::Slots;
use super::{Token, UringError};
use crate::io::udp::UdpSocket;
use crate::io::{DatagramIo, DatagramStats, Transmit};

/// Submission entries: a turn queues at most every send slot plus a few re-arms.
const SQ_ENTRIES: u32 = 256;
/// Completion entries: room for every provided buffer, every send and the polls.
const CQ_ENTRIES: u32 = 1024;
/// The buffer group of the receive buffers (one group per ring).
const BGID: u16 = 1;
/// Provided receive buffers (a power of two).
pub const RECV_BUFFERS: u16 = 64;
/// One provided buffer: the header space (`recvmsg`) plus a whole 64 KiB GRO buffer, rounded to
/// pages.
pub const RECV_BUFFER_SIZE: usize = 68 << 10;
/// Concurrent sends (each a GSO batch of up to 64 KiB).
const SEND_SLOTS: u16 = 32;
/// How long teardown lets queued sends complete before it cancels them.
const SEND_GRACE: Duration = Duration::from_millis(200);
/// How long teardown waits for cancelled operations to complete.
const TEARDOWN_WAIT: Duration = Duration::from_secs(2);

/// What a reap hands to the shard.
pub enum Completion<'a> {
    /// One datagram (a GRO buffer already split), in place: quiche decrypts it there.
    Datagram {
        data: &'a mut [u8],
        from: SocketAddr,
    },
    /// An ICMP port unreachable for a datagram sent to this address.
    PortUnreachable(SocketAddr),
    /// The watched descriptor is readable.
    Watched,
    /// Local send `id` of link `link` completed: `res` bytes went into the socket, or `-errno`.
    /// `bufs` are what it carried.
    LocalSent {
        link: usize,
        id: u64,
        res: i32,
        bufs: SendBufs,
    },
    /// Local read `id` of link `link` completed: `res` bytes are in `buf`, or `-errno`.
    LocalReceived {
        link: usize,
        id: u64,
        res: i32,
        buf: bytes::BytesMut,
    },
}

/// A ring with its receive buffers registered, before it is given a socket: everything that
/// fails where the kernel cannot run the engine, so a shard finds out before it commits its
/// sockets to this backend. Dropped unused, it takes the buffers back from the kernel first.
pub struct RingSetup {
    parts: Option<(Ring, BufRing)>,
}

impl RingSetup {
    pub fn new() -> Result<RingSetup, UringError> {
        let ring = Ring::new(SQ_ENTRIES, CQ_ENTRIES)?;
        let bufs = BufRing::new(&ring, BGID, RECV_BUFFERS, RECV_BUFFER_SIZE)?;
        Ok(RingSetup {
            parts: Some((ring, bufs)),
        })
    }

    fn take(mut self) -> (Ring, BufRing) {
        match self.parts.take() {
            Some(parts) => parts,
            // `parts` is only taken here, and `take` consumes the setup.
            None => unreachable!("a ring setup is started once"),
        }
    }
}

impl Drop for RingSetup {
    fn drop(&mut self) {
        if let Some((ring, mut bufs)) = self.parts.take() {
            // No request was ever submitted on this ring, so nothing can be picking a buffer.
            bufs.unregister(&ring).ok();
        }
    }
}

/// Everything the kernel may read or write while an operation is in flight. Freed only once
/// teardown has seen the last completion of every operation; leaked otherwise.
struct KernelMemory {
    /// The multishot receive's template: the kernel reads its name and control lengths.
    recv_msg: Box<libc::msghdr>,
    bufs: BufRing,
    slots: Slots,
    local: LocalSends,
    /// Local reads on the ring, by slot (`Token::LocalRecv`): each owns its room and a share of
    /// its connection until its completion is reaped.
    recvs: slab::Slab<QueuedRecv>,
}

/// Local sends on the ring, by slot (its `Token::LocalSend`): each owns its bytes, a share of its
/// connection (so the descriptor stays open) and, gathered, its message header until its
/// completion is reaped.
type LocalSends = slab::Slab<OnRing>;

/// A local send on the ring.
struct OnRing {
    send: QueuedSend,
    /// A gathered send's header and iovecs, which the kernel reads: boxed, so they stay put
    /// when the slab grows. Never read here: kept alive for the kernel.
    _gather: Option<Box<Gather>>,
}

struct Gather {
    msg: libc::msghdr,
    iov: Vec<libc::iovec>,
}

impl Gather {
    /// A `msghdr` (no address, no control) over `bufs`: one iovec each.
    fn new(bufs: &SendBufs) -> Box<Gather> {
        let iov: Vec<libc::iovec> = bufs
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: an all-zero `msghdr` is valid (null pointers, zero lengths).
        let mut g = Box::new(Gather {
            msg: unsafe { std::mem::zeroed() },
            iov,
        });
        g.msg.msg_iov = g.iov.as_mut_ptr();
        g.msg.msg_iovlen = g.iov.len() as _;
        g
    }
}

pub struct UringIo {
    ring: Ring,
    udp: UdpSocket,
    fd: RawFd,
    mem: ManuallyDrop<KernelMemory>,
    recv_armed: bool,
    /// The receive ended with an error: read the error queue before re-arming.
    recv_error: bool,
    watch_fd: Option<RawFd>,
    watch_armed: bool,
    gso_segments: usize,
    /// Sends of at least this many bytes use `SENDMSG_ZC` (`None`: none do).
    zero_copy_from: Option<usize>,
    zero_copy_sends: u64,
    stats: DatagramStats,
    /// Completions of one reap, copied out so handling them may queue new requests.
    cqes: Vec<(u64, i32, u32)>,
    /// Sends queued since the last enter (that enter carries them).
    sends_queued: bool,
    enobufs: u64,
    truncated: u64,
    closing: bool,
    /// Teardown saw every operation's last completion.
    quiesced: bool,
    last_error_log: Option<Instant>,
    /// Where the links queue their local sends (`None`: the local sockets are written directly).
    outbox: Option<SharedOutbox>,
    /// Local sends that could not be queued on the ring: handed back, as interrupted, next reap.
    local_unqueued: Vec<QueuedSend>,
    /// Local reads likewise.
    local_unreceived: Vec<QueuedRecv>,
    local_sends: u64,
    local_recvs: u64,
    /// Parked local requests (reads, sends waiting for room) by id: their user data, for a
    /// cancel when their link ends.
    parked: std::collections::HashMap<u64, u64>,
    /// See [`UringIo::zero_recv_room`].
    zero_recv_room: bool,
}

impl UringIo {
    /// Sets up the ring, registers the receive buffers and arms the receive on `udp` and a poll
    /// on `watch` (if given). Fails, before any request is submitted, if the kernel lacks what
    /// the engine needs.
    pub fn new(udp: UdpSocket, watch: Option<RawFd>) -> Result<UringIo, UringError> {
        Ok(UringIo::start(RingSetup::new()?, udp, watch))
    }

    /// The engine on a ring already set up: arms the receive on `udp` and a poll on `watch`.
    pub fn start(setup: RingSetup, udp: UdpSocket, watch: Option<RawFd>) -> UringIo {
        let (ring, bufs) = setup.take();
        let recv_msg = Box::new(recv_template());
        let mut udp = udp;
        let fd = udp.source().as_raw_fd();
        let gso_segments = udp.max_gso_segments();
        let mut io = UringIo {
            ring,
            udp,
            fd,
            mem: ManuallyDrop::new(KernelMemory {
                recv_msg,
                bufs,
                slots: Slots::new(SEND_SLOTS),
                local: LocalSends::new(),
                recvs: slab::Slab::new(),
            }),
            recv_armed: false,
            recv_error: false,
            watch_fd: watch,
            watch_armed: false,
            gso_segments,
            zero_copy_from: None,
            zero_copy_sends: 0,
            stats: DatagramStats::default(),
            cqes: Vec::with_capacity(CQ_ENTRIES as usize),
            sends_queued: false,
            enobufs: 0,
            truncated: 0,
            closing: false,
            quiesced: false,
            last_error_log: None,
            outbox: None,
            local_unqueued: Vec::new(),
            local_unreceived: Vec::new(),
            local_sends: 0,
            local_recvs: 0,
            parked: std::collections::HashMap::new(),
            zero_recv_room: false,
        };
        io.arm();
        io
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.udp.local_addr()
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    pub fn gro(&self) -> bool {
        self.udp.capabilities().gro
    }

    /// Sends of at least `bytes` go out with `SENDMSG_ZC` (the kernel sends from the slot's
    /// pages instead of copying them, and the slot stays the kernel's until the notification);
    /// `None`: every send copies. False (and nothing changes) where the kernel lacks the opcode.
    pub fn set_zero_copy_from(&mut self, bytes: Option<usize>) -> bool {
        if bytes.is_some() && !self.ring.supports_zero_copy() {
            return false;
        }
        self.zero_copy_from = bytes;
        true
    }

    /// Sends that went out zero-copy.
    pub fn zero_copy_sends(&self) -> u64 {
        self.zero_copy_sends
    }

    /// Largest number of datagrams one send may carry (1 without GSO or after a refusal).
    pub fn max_gso_segments(&self) -> usize {
        self.gso_segments
    }

    /// The ring's counters plus those of the direct system calls (error queue, GSO resends).
    /// `send_calls` and `recv_calls` count `io_uring_enter` calls that carried sends or brought
    /// receives (and the direct calls), so datagrams per call compare with the mio backend's.
    pub fn stats(&self) -> DatagramStats {
        let u = self.udp.stats();
        let s = self.stats;
        DatagramStats {
            send_calls: s.send_calls + u.send_calls,
            datagrams_sent: s.datagrams_sent + u.datagrams_sent,
            bytes_sent: s.bytes_sent + u.bytes_sent,
            recv_calls: s.recv_calls + u.recv_calls,
            datagrams_received: s.datagrams_received + u.datagrams_received,
            bytes_received: s.bytes_received + u.bytes_received,
            send_errors: s.send_errors + u.send_errors,
            gso_fallbacks: s.gso_fallbacks + u.gso_fallbacks,
        }
    }

    /// `io_uring_enter` calls so far; receives that ran out of buffers; datagrams dropped
    /// because they did not fit a buffer.
    pub fn ring_counters(&self) -> (u64, u64, u64) {
        (self.ring.enters(), self.enobufs, self.truncated)
    }

    /// Submits what is queued (the local sends the links queued included) and waits for a
    /// completion or `timeout` (one system call).
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if std::mem::take(&mut self.sends_queued) {
            self.stats.send_calls += 1;
        }
        // The wait ends at the first completion, even one of a request of this submission
        // (a `MSG_DONTWAIT` send, a read of bytes already there). Waiting past them instead
        // (tried: counting the `MSG_DONTWAIT` sends as complete at submission and waiting for
        // one completion more) made bulk transfer crawl at a few MB/s once the links' sockets
        // left the epoll set: the receiving shard slept through its datagrams until a timer,
        // about 40 turns a second. Why the count fell short was not pinned down; a turn more
        // is the cheaper risk.
        self.queue_local_sends();
        self.ring.enter(timeout)
    }

    // ---- local sends ----

    /// The links' writes to their local connections go through `outbox` onto this ring.
    pub fn set_local_outbox(&mut self, outbox: SharedOutbox) {
        self.outbox = Some(outbox);
    }

    /// Local sends put on the ring so far.
    pub fn local_sends(&self) -> u64 {
        self.local_sends
    }

    /// Zero the room of every local read before it goes on the ring (for valgrind, which does
    /// not see the kernel write it and would take the bytes read for uninitialised).
    pub fn zero_recv_room(&mut self) {
        self.zero_recv_room = true;
    }

    /// Local reads put on the ring so far.
    pub fn local_recvs(&self) -> u64 {
        self.local_recvs
    }

    /// Moves the sends and reads the links queued onto the ring, then the cancels of parked
    /// requests whose links ended.
    fn queue_local_sends(&mut self) {
        let Some(outbox) = self.outbox.clone() else {
            return;
        };
        let mut outbox = outbox.borrow_mut();
        for q in outbox.take() {
            self.queue_local_send(q);
        }
        for r in outbox.take_recvs() {
            self.queue_local_recv(r);
        }
        let mut again = Vec::new();
        for id in outbox.take_cancels() {
            let Some(target) = self.parked.get(&id) else {
                // Completed already.
                continue;
            };
            let sqe = opcode::AsyncCancel::new(*target)
                .build()
                .user_data(Token::Cancel.to_user_data());
            // SAFETY: a cancel request carries no pointer into our memory.
            if unsafe { self.ring.push(&sqe) }.is_err() {
                // A full queue that could not be submitted: nobody else will ask again (the
                // link is gone), and a parked request would hold its socket open.
                again.push(id);
            }
        }
        for id in again {
            outbox.cancel(id);
        }
    }

    /// Puts one local send on the ring.
    fn queue_local_send(&mut self, q: QueuedSend) {
        let (id, wait) = (q.id, q.wait);
        let fd = Fd(q.sock.as_raw_fd());
        let flags = if wait {
            libc::MSG_NOSIGNAL
        } else {
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL
        };
        let (sqe, gather) = match &q.bufs[..] {
            [one] => {
                let len = u32::try_from(one.len()).unwrap_or(u32::MAX);
                (
                    opcode::Send::new(fd, one.as_ptr(), len)
                        .flags(flags)
                        .build(),
                    None,
                )
            }
            _ => {
                let g = Gather::new(&q.bufs);
                let sqe = opcode::SendMsg::new(fd, &g.msg).flags(flags as u32).build();
                (sqe, Some(g))
            }
        };
        let slot = self.mem.local.insert(OnRing {
            send: q,
            _gather: gather,
        });
        let Ok(n) = u32::try_from(slot) else {
            // Four billion sends in flight cannot happen; never hand the kernel a wrong slot.
            self.local_unqueued.push(self.mem.local.remove(slot).send);
            return;
        };
        let user_data = Token::LocalSend(n).to_user_data();
        let sqe = sqe.user_data(user_data);
        // SAFETY: the bytes the request names (one buffer, or the iovecs of a gathered
        // send's header) lie in the `Bytes` of local send `n`, whose allocations cannot move
        // or be freed while those `Bytes` live; a gathered send's `msghdr` and iovecs are
        // boxed in the same entry (the slab moves the box, not what it points to). The entry
        // owns all of it (and a share of the connection, so `fd` stays open) in `mem` until
        // its completion is reaped, and teardown waits for that or leaks `mem`. The kernel
        // only reads them.
        match unsafe { self.ring.push(&sqe) } {
            Ok(()) => {
                self.local_sends += 1;
                if wait {
                    self.parked.insert(id, user_data);
                }
            }
            Err(e) => {
                // Not queued: the kernel never saw it. Its writer tries again.
                self.log_error("local send", &e);
                self.local_unqueued.push(self.mem.local.remove(slot).send);
            }
        }
    }

    /// Parks one local read on the ring.
    fn queue_local_recv(&mut self, mut r: QueuedRecv) {
        let fd = Fd(r.sock.as_raw_fd());
        let id = r.id;
        let len = r.len.min(r.buf.capacity());
        if self.zero_recv_room {
            r.buf.spare_capacity_mut()[..len].fill(std::mem::MaybeUninit::new(0));
        }
        let ptr = r.buf.spare_capacity_mut().as_mut_ptr().cast::<u8>();
        let slot = self.mem.recvs.insert(r);
        let Ok(n) = u32::try_from(slot) else {
            self.local_unreceived.push(self.mem.recvs.remove(slot));
            return;
        };
        let user_data = Token::LocalRecv(n).to_user_data();
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let sqe = opcode::Recv::new(fd, ptr, len).build().user_data(user_data);
        // SAFETY: `ptr..ptr + len` is spare capacity of the `BytesMut` of local read `n` (len
        // is at most its capacity), an allocation it shares with no one for that range (split
        // off the relay's block) and that cannot move or be freed while it lives; the entry
        // owns it (and a share of the connection, so `fd` stays open) in `mem` until its
        // completion is reaped, and teardown waits for that or leaks `mem`. Nothing reads or
        // writes that range meanwhile.
        match unsafe { self.ring.push(&sqe) } {
            Ok(()) => {
                self.local_recvs += 1;
                self.parked.insert(id, user_data);
            }
            Err(e) => {
                self.log_error("local read", &e);
                self.local_unreceived.push(self.mem.recvs.remove(slot));
            }
        }
    }

    // ---- send ----

    /// The payload buffer of a free send slot, to fill with one batch; `None` while every slot
    /// is in flight (the shard waits for completions, as it waits for a writable socket on mio).
    pub fn send_buffer(&mut self) -> Option<&mut [u8]> {
        let n = self.mem.slots.peek_free()?;
        self.mem.slots.get_mut(n).map(|s| s.payload_mut())
    }

    /// Queues the batch just written into [`UringIo::send_buffer`]: `len` bytes to `to` in
    /// datagrams of `segment_size`. It leaves with the next [`UringIo::wait`].
    pub fn send(&mut self, to: SocketAddr, len: usize, segment_size: usize) {
        let Some(n) = self.mem.slots.peek_free() else {
            return;
        };
        let segment_size = segment_size.max(1);
        let segments = len.div_ceil(segment_size);
        if segments > 1 && self.gso_segments == 1 {
            // GSO is off for this socket: the socket backend sends one datagram per call.
            let contents = self.mem.slots.get_mut(n).map(|s| &s.payload_mut()[..len]);
            if let Some(contents) = contents {
                let t = Transmit {
                    to,
                    contents,
                    segment_size,
                };
                self.udp.send(&t).ok();
            }
            return;
        }
        let gso = (segments > 1).then_some(segment_size as u16);
        let Some(slot) = self.mem.slots.get_mut(n) else {
            return;
        };
        let zero_copy = self.zero_copy_from.is_some_and(|min| len >= min);
        let msg = slot.prepare(to, len, gso, zero_copy);
        let user_data = Token::Send(n).to_user_data();
        let sqe = if zero_copy {
            opcode::SendMsgZc::new(Fd(self.fd), msg)
                .build()
                .user_data(user_data)
        } else {
            opcode::SendMsg::new(Fd(self.fd), msg)
                .build()
                .user_data(user_data)
        };
        // SAFETY: `msg` and everything it points to (address, iovec, payload, cmsg) live in the
        // boxed slot `n`, which is now in flight: nothing writes or frees it until the last
        // completion of `Token::Send(n)` is reaped (the result, and for a zero-copy send the
        // notification after it; see `on_send`), and teardown waits for that or leaks the slot.
        // The socket outlives the request likewise.
        let pushed = unsafe { self.ring.push(&sqe) };
        match pushed {
            Ok(()) => {
                self.mem.slots.take(n);
                self.sends_queued = true;
                self.zero_copy_sends += zero_copy as u64;
            }
            Err(e) => {
                // Not queued: the kernel never saw the slot.
                if let Some(slot) = self.mem.slots.get_mut(n) {
                    slot.complete();
                }
                self.stats.send_errors += 1;
                self.log_error("send", &e);
            }
        }
    }

    // ---- completions ----

    /// Hands every completion ready now to `on`, gives receive buffers back, and re-arms what
    /// ended.
    pub fn reap(&mut self, on: &mut impl FnMut(Completion<'_>)) {
        self.cqes.clear();
        self.cqes.extend(self.ring.completions());
        let mut received = false;
        for i in 0..self.cqes.len() {
            let (user_data, res, flags) = self.cqes[i];
            match Token::from_user_data(user_data) {
                Some(Token::Recv) => received |= self.on_recv(res, flags, on),
                Some(Token::Send(n)) => self.on_send(n, res, flags, on),
                Some(Token::Watch) => {
                    if res >= 0 {
                        on(Completion::Watched);
                    }
                    if !cqueue::more(flags) {
                        self.watch_armed = false;
                    }
                }
                Some(Token::LocalSend(n)) => {
                    if let Some(OnRing { send: q, .. }) = self.mem.local.try_remove(n as usize) {
                        self.parked.remove(&q.id);
                        on(Completion::LocalSent {
                            link: q.link,
                            id: q.id,
                            res,
                            bufs: q.bufs,
                        });
                    }
                }
                Some(Token::LocalRecv(n)) => {
                    if let Some(mut r) = self.mem.recvs.try_remove(n as usize) {
                        self.parked.remove(&r.id);
                        if res > 0 {
                            let got = (res as usize).min(r.len).min(r.buf.capacity());
                            // SAFETY: the kernel wrote `res` bytes at the start of the spare
                            // capacity it was given (at most `r.len`, at most the capacity).
                            unsafe { r.buf.set_len(got) };
                        }
                        on(Completion::LocalReceived {
                            link: r.link,
                            id: r.id,
                            res,
                            buf: r.buf,
                        });
                    }
                }
                Some(Token::Cancel) | None => {}
            }
        }
        for mut r in std::mem::take(&mut self.local_unreceived) {
            r.buf.clear();
            on(Completion::LocalReceived {
                link: r.link,
                id: r.id,
                res: -libc::EINTR,
                buf: r.buf,
            });
        }
        for q in std::mem::take(&mut self.local_unqueued) {
            on(Completion::LocalSent {
                link: q.link,
                id: q.id,
                res: -libc::EINTR,
                bufs: q.bufs,
            });
        }
        if received {
            self.stats.recv_calls += 1;
        }
        if !self.closing {
            if self.recv_error && !self.recv_armed {
                self.recv_error = false;
                self.read_error_queue(on);
            }
            self.arm();
        }
    }

    /// One receive completion; true if it carried data.
    fn on_recv(&mut self, res: i32, flags: u32, on: &mut impl FnMut(Completion<'_>)) -> bool {
        if !cqueue::more(flags) {
            self.recv_armed = false;
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            match -res {
                libc::ENOBUFS => self.enobufs += 1,
                libc::ECANCELED => {}
                _ if res < 0 => self.recv_error = true,
                _ => {}
            }
            return false;
        };
        let mut got = false;
        if res >= 0 && !self.closing {
            got = self.deliver(bid, res as usize, on);
        }
        self.mem.bufs.give_back(bid);
        got
    }

    /// Splits the datagrams in buffer `bid` (its first `len` bytes) and hands them out.
    fn deliver(&mut self, bid: u16, len: usize, on: &mut impl FnMut(Completion<'_>)) -> bool {
        // The lengths the receive was armed with, in a msghdr of our own: the armed one is
        // the kernel's until the receive ends.
        let msghdr = recv_template();
        // SAFETY: the completion naming `bid` has been reaped and the buffer is given back only
        // after this function returns, so the kernel neither writes nor lends it meanwhile.
        let buf = unsafe { self.mem.bufs.filled(bid, len) };
        let Ok(out) = RecvMsgOut::parse(buf, &msghdr) else {
            return false;
        };
        if out.is_payload_truncated() {
            self.truncated += 1;
            return false;
        }
        let from = sockaddr_from_bytes(out.name_data());
        let payload = out.payload_data();
        let segment = gro_segment(out.control_data()).unwrap_or(payload.len());
        let start = payload.as_ptr() as usize - buf.as_ptr() as usize;
        let plen = payload.len();
        let Some(from) = from else {
            return false;
        };
        let segment = segment.max(1);
        let datagrams = &mut buf[start..start + plen];
        let mut count = 0u64;
        for d in datagrams.chunks_mut(segment) {
            count += 1;
            on(Completion::Datagram { data: d, from });
        }
        self.stats.datagrams_received += count;
        self.stats.bytes_received += plen as u64;
        true
    }

    /// A send's completion. A zero-copy send completes twice: the result, then the notification
    /// (`IORING_CQE_F_NOTIF`) once the kernel no longer reads the payload. The slot is released
    /// only then, whatever the result's flags say: a zero-copy send that failed or was cancelled
    /// before it ran posts its result without `IORING_CQE_F_MORE` and still a notification.
    fn on_send(&mut self, n: u16, res: i32, flags: u32, on: &mut impl FnMut(Completion<'_>)) {
        if cqueue::notif(flags) {
            self.mem.slots.release(n);
            return;
        }
        let Some(slot) = self.mem.slots.get(n) else {
            return;
        };
        let (to, len, segment_size) = (slot.to, slot.len, slot.segment_size.max(1));
        let zero_copy = slot.zero_copy();
        let segments = len.div_ceil(segment_size);
        // Zero-copy: the notification releases the slot; the kernel may read it until then.
        let release = !zero_copy;
        if res >= 0 {
            self.stats.datagrams_sent += segments as u64;
            self.stats.bytes_sent += len as u64;
            if release {
                self.mem.slots.release(n);
            }
            return;
        }
        let err = io::Error::from_raw_os_error(-res);
        match -res {
            libc::ECANCELED => {}
            libc::EIO | libc::EINVAL if segments > 1 && self.gso_segments > 1 => {
                // The kernel refused a segmented send: this socket sends one datagram per call
                // from now on. The socket backend resends the batch (it finds GSO refused too,
                // logs it, counts the fallback and sends datagram by datagram). A zero-copy
                // batch is not resent (its payload is the kernel's until the notification):
                // counted, and QUIC recovers it.
                self.gso_segments = 1;
                if zero_copy {
                    self.stats.gso_fallbacks += 1;
                    self.stats.send_errors += 1;
                } else if let Some(slot) = self.mem.slots.get(n) {
                    let contents = slot.contents();
                    let t = Transmit {
                        to,
                        contents,
                        segment_size,
                    };
                    self.udp.send(&t).ok();
                }
            }
            _ => {
                self.stats.send_errors += 1;
                self.log_error("send", &err);
                // A failed send may carry an ICMP error (ECONNREFUSED after port unreachable):
                // read the reports now, the receive may never see them.
                self.read_error_queue(on);
            }
        }
        if release {
            self.mem.slots.release(n);
        }
    }

    /// Reports queued ICMP errors (port unreachable ends a dead peer's connection at once).
    fn read_error_queue(&mut self, on: &mut impl FnMut(Completion<'_>)) {
        for _ in 0..64 {
            match self.udp.recv_error() {
                Ok(Some(e)) if e.port_unreachable => {
                    tracing::debug!(to = %e.to, "ICMP port unreachable");
                    on(Completion::PortUnreachable(e.to));
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

    /// Arms the receive and the watch poll if they are not armed.
    fn arm(&mut self) {
        if !self.recv_armed {
            let sqe = opcode::RecvMsgMulti::new(Fd(self.fd), &*self.mem.recv_msg, BGID)
                .build()
                .user_data(Token::Recv.to_user_data());
            // SAFETY: `recv_msg` is boxed in `mem` and never written after `new`; the buffers it
            // selects belong to the registered ring in `mem`. Both stay until teardown has
            // reaped the receive's last completion (or are leaked).
            match unsafe { self.ring.push(&sqe) } {
                Ok(()) => self.recv_armed = true,
                Err(e) => self.log_error("arming the receive", &e),
            }
        }
        if let (Some(fd), false) = (self.watch_fd, self.watch_armed) {
            let sqe = opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32)
                .multi(true)
                .build()
                .user_data(Token::Watch.to_user_data());
            // SAFETY: a poll request carries no pointer into our memory.
            match unsafe { self.ring.push(&sqe) } {
                Ok(()) => self.watch_armed = true,
                Err(e) => self.log_error("arming the poll", &e),
            }
        }
    }

    /// Cancels every operation in flight and waits (bounded) for their last completions, then
    /// takes the receive buffers back from the kernel. True when nothing is left in flight;
    /// otherwise the memory the kernel may still use is leaked when `self` drops.
    pub fn shutdown(&mut self) -> bool {
        if self.closing {
            return self.quiesced;
        }
        self.closing = true;
        // Sends first: they are the node's last words (CONNECTION_CLOSE) and a UDP send
        // completes at once unless the socket buffer is full, so they get a moment before
        // whatever is left is cancelled.
        let deadline = Instant::now() + SEND_GRACE;
        while self.mem.slots.in_flight() > 0 && Instant::now() < deadline {
            if self.ring.enter(Some(Duration::from_millis(10))).is_err() {
                break;
            }
            self.reap(&mut |_| {});
        }
        let mut targets = Vec::new();
        if self.recv_armed {
            targets.push(Token::Recv);
        }
        if self.watch_armed {
            targets.push(Token::Watch);
        }
        targets.extend(self.mem.slots.in_flight_ids().into_iter().map(Token::Send));
        targets.extend(
            self.mem
                .local
                .iter()
                .map(|(slot, _)| Token::LocalSend(slot as u32)),
        );
        targets.extend(
            self.mem
                .recvs
                .iter()
                .map(|(slot, _)| Token::LocalRecv(slot as u32)),
        );
        for t in targets {
            let sqe = opcode::AsyncCancel::new(t.to_user_data())
                .build()
                .user_data(Token::Cancel.to_user_data());
            // SAFETY: a cancel request carries no pointer into our memory.
            unsafe { self.ring.push(&sqe) }.ok();
        }
        let deadline = Instant::now() + TEARDOWN_WAIT;
        while self.in_flight() > 0 && Instant::now() < deadline {
            if self.ring.enter(Some(Duration::from_millis(50))).is_err() {
                break;
            }
            self.reap(&mut |_| {});
        }
        self.quiesced = self.in_flight() == 0;
        if self.quiesced {
            if let Err(e) = self.mem.bufs.unregister(&self.ring) {
                tracing::warn!(error = %e, "unregistering the receive buffers failed");
                self.quiesced = false;
            }
        }
        self.quiesced
    }

    /// Operations whose last completion has not been reaped.
    pub fn in_flight(&self) -> usize {
        self.recv_armed as usize
            + self.watch_armed as usize
            + self.mem.slots.in_flight()
            + self.mem.local.len()
            + self.mem.recvs.len()
    }

    fn log_error(&mut self, what: &str, err: &io::Error) {
        let now = Instant::now();
        if self
            .last_error_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            self.last_error_log = Some(now);
            tracing::warn!(error = %err, "io_uring {what} failed (further errors counted, logged at most once a minute)");
        }
    }
}

impl Drop for UringIo {
    fn drop(&mut self) {
        if self.shutdown() {
            // SAFETY: `shutdown` saw the last completion of every operation and unregistered the
            // buffer ring, so the kernel holds no pointer into `mem`; it is dropped once, here.
            unsafe { ManuallyDrop::drop(&mut self.mem) };
        } else {
            tracing::error!(
                in_flight = self.in_flight(),
                "io_uring operations still in flight at teardown: their memory is leaked, not freed"
            );
        }
    }
}
