//! A relayed rlink: a local socket (a router or an rlink client on this host) and the QUIC stream
//! that carries it to the peer node.

use std::io;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::pipe::{Fill, Handshake, Opening, Pipe, PipeError};
use crate::admin::snapshot::CopiedBytes;
use crate::io::LocalConn;
use crate::quic::driver::{ConnId, StreamRef};
use crate::rawsocket::{realm_from_hello, HandshakeError, RouterReply, Serializer};

/// Which end of the rlink this node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// A router dialed one of this node's link endpoints; this node opens the stream.
    Dialer { peer: String, route: String },
    /// A stream arrived from a peer; this node dialed the route's target.
    Acceptor { peer: String, route: String },
}

impl Role {
    pub fn peer(&self) -> &str {
        match self {
            Role::Dialer { peer, .. } | Role::Acceptor { peer, .. } => peer,
        }
    }

    pub fn route(&self) -> &str {
        match self {
            Role::Dialer { route, .. } | Role::Acceptor { route, .. } => route,
        }
    }
}

/// Why a link ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkEnd {
    #[error("closed by both ends")]
    Finished,
    #[error("local connection failed: {0}")]
    Local(io::Error),
    #[error("client sent a bad handshake: {0}")]
    ClientHandshake(HandshakeError),
    #[error("{0}")]
    Protocol(PipeError),
    #[error("stream reset by peer: {}", crate::quic::codes::StreamCode::describe(*.0))]
    PeerReset(u64),
    #[error("peer stopped reading: {}", crate::quic::codes::StreamCode::describe(*.0))]
    PeerStopped(u64),
    #[error("QUIC stream error: {0}")]
    Quic(quiche::Error),
}

/// `S` is the local connection: a socket of the mio backend, an in-memory pipe in tests (see
/// [`LocalConn`]). Generic rather than a trait object: `pump` is the hot path.
pub struct Link<S> {
    pub role: Role,
    pub sock: S,
    /// Connection and stream, once the stream is open.
    pub stream: Option<(ConnId, u64)>,
    /// Local -> stream.
    pub from_local: Pipe,
    /// Stream -> local.
    pub to_local: Pipe,
    /// A TCP connect to the route's target is in progress (acceptor side).
    pub connecting: bool,
    /// When a link that waits (for its peer, its handshake, its route connect) gives up.
    pub deadline: Option<Instant>,
    pub opened: Instant,
    /// The link endpoint (index in the configuration's `links`) a dialer link was accepted on.
    pub endpoint: Option<usize>,
    /// The stream's send half is over: our FIN is queued, or the peer stopped reading.
    fin_sent: bool,
    /// The peer sent STOP_SENDING (or the stream was collected before our FIN): its code.
    stopped_by_peer: Option<u64>,
    /// The peer reset its send half: its code. Bytes still unread were dropped.
    reset_by_peer: Option<u64>,
    /// The node is draining: the local socket is read up to the next frame boundary, then no
    /// more (a client that already half-closed is read to its end). Set by
    /// [`Link::begin_drain`] only.
    draining: bool,
    /// Since when bytes for the local socket wait and it takes none (see [`Link::stalled_since`]).
    sink_blocked_since: Option<Instant>,
    /// The router's handshake reply has passed: the link is open end to end.
    router_replied: bool,
    /// Local bytes are read and dropped: this side will relay no more of them (drain done, peer
    /// stopped reading, router refused). Reading on keeps a TCP close from turning into a reset
    /// that would discard what is still queued towards the local end.
    discard_local: bool,
    /// Bytes dropped that way (logged at the link's end).
    pub discarded: u64,
    /// Reads on the ring: the local socket's end (or failure) has been read; no more reads.
    ring_read_ended: bool,
    /// The socket's count of bytes it has put into the kernel (a ring writer's), when last seen.
    sock_sent: u64,
    /// While stalled: the kernel's send queue of the socket at the last look (see
    /// [`Link::recheck_stall`]).
    stall_queue: Option<u64>,
    /// Since when the bytes for the local socket have filled the relay buffer, so the rest stays
    /// unread in quiche and holds connection credit (see `shard/core/stall.rs`).
    holding_since: Option<Instant>,
    /// A STOP_SENDING to send on the stream (this side will read no more of it), and whether it
    /// has been sent.
    stop_reading_stream: Option<u64>,
    stream_read_stopped: bool,
    /// The last pump queued stream data or a FIN (the node sends without delaying the ACK).
    pub wrote_stream: bool,
    /// The local socket may have bytes to read. Cleared by a read that returned less than it
    /// asked for (the socket was empty: with edge-triggered readiness, new bytes bring a new
    /// event), set again by the node on a readable event.
    pub local_readable: bool,
    /// The peer of the local socket has shut down its side (an event said so): read until EOF
    /// whatever the read sizes, since no further event will come.
    pub local_read_closed: bool,
    local_write_closed: bool,
    max_frame: u32,
    serializer: Option<Serializer>,
    realm: Option<String>,
    /// The first message towards the router has been looked at for a realm.
    realm_checked: bool,
    /// A client handshake was checked and the link may open its stream.
    client_ready: bool,
}

/// Counters of one link, for logs and the stats line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub to_router_frames: u64,
    pub to_router_bytes: u64,
    pub to_client_frames: u64,
    pub to_client_bytes: u64,
}

impl<S: LocalConn> Link<S> {
    pub fn new(role: Role, sock: S, buffer: usize, max_frame: u32, now: Instant) -> Link<S> {
        let (from_local, to_local) = match role {
            Role::Dialer { .. } => (Opening::ClientRequest, Opening::RouterReply),
            Role::Acceptor { .. } => (Opening::RouterReply, Opening::ClientRequest),
        };
        let mut to_local = Pipe::new(buffer, to_local, max_frame);
        if matches!(role, Role::Acceptor { .. }) {
            // This node delivers to the router: frames the client pipelined with its handshake
            // wait for the router's limit.
            to_local.hold_frames_until_limit();
        }
        Link {
            role,
            sock,
            stream: None,
            from_local: Pipe::new(buffer, from_local, max_frame),
            to_local,
            connecting: false,
            deadline: None,
            opened: now,
            endpoint: None,
            fin_sent: false,
            stopped_by_peer: None,
            reset_by_peer: None,
            draining: false,
            sink_blocked_since: None,
            router_replied: false,
            discard_local: false,
            discarded: 0,
            ring_read_ended: false,
            sock_sent: 0,
            stall_queue: None,
            holding_since: None,
            stop_reading_stream: None,
            stream_read_stopped: false,
            wrote_stream: false,
            local_readable: true,
            local_read_closed: false,
            local_write_closed: false,
            max_frame,
            serializer: None,
            realm: None,
            realm_checked: false,
            client_ready: false,
        }
    }

    /// The client's handshake has been checked: a dialer may open its stream.
    pub fn client_ready(&self) -> bool {
        self.client_ready
    }

    /// The router's handshake reply has crossed: nothing is left to wait for.
    pub fn router_replied(&self) -> bool {
        self.router_replied
    }

    /// Since when bytes wait for the local socket while it accepts none: a router (or client)
    /// that does not read. `None` while it keeps up or nothing waits.
    pub fn stalled_since(&self) -> Option<Instant> {
        self.sink_blocked_since
    }

    /// A stalled link's second look, before the stall timeout applies: if its reader has taken
    /// bytes from the socket since the last look (the kernel's send queue shrank), the stall
    /// starts again from `now`, and true. A writer (a `write(2)` retried on writable readiness,
    /// or a parked send on the ring) hears of room only once a Unix socket has drained to a
    /// quarter of its buffer: a reader slower than that would look stalled without this.
    pub fn recheck_stall(&mut self, now: Instant) -> bool {
        if self.sink_blocked_since.is_none() {
            self.stall_queue = None;
            return false;
        }
        let Some(queued) = self.sock.queued_in_kernel() else {
            return false;
        };
        let drained = self.stall_queue.is_some_and(|last| queued < last);
        self.stall_queue = Some(queued);
        if drained {
            self.sink_blocked_since = Some(now);
        }
        drained
    }

    /// Since when bytes for the local socket fill the relay buffer, leaving more unread in quiche.
    pub fn holding_since(&self) -> Option<Instant> {
        self.holding_since
    }

    /// Bytes of memory the link's two relay buffers hold.
    pub fn buffer_memory(&self) -> usize {
        self.from_local.memory() + self.to_local.memory()
    }

    /// Why the link ended, when the peer ended a half of it (for the log line).
    pub fn peer_ending(&self) -> Option<String> {
        use crate::quic::codes::StreamCode;
        match (self.stopped_by_peer, self.reset_by_peer) {
            (None, None) => None,
            (Some(STREAM_COLLECTED), None) => Some("stream closed by peer".to_string()),
            (Some(s), None) => Some(format!("peer stopped reading: {}", StreamCode::describe(s))),
            (None, Some(r)) => Some(format!("stream reset by peer: {}", StreamCode::describe(r))),
            (Some(s), Some(r)) if s == r => {
                Some(format!("stream reset by peer: {}", StreamCode::describe(r)))
            }
            (Some(s), Some(r)) => Some(format!(
                "stream reset by peer: {}; peer stopped reading: {}",
                StreamCode::describe(r),
                StreamCode::describe(s)
            )),
        }
    }

    pub fn realm(&self) -> Option<&str> {
        self.realm.as_deref()
    }

    pub fn counters(&self) -> LinkCounters {
        let (to_router, to_client) = self.directions();
        LinkCounters {
            to_router_frames: to_router.scanner().messages(),
            to_router_bytes: to_router.scanner().message_bytes(),
            to_client_frames: to_client.scanner().messages(),
            to_client_bytes: to_client.scanner().message_bytes(),
        }
    }

    /// The bytes this link copied, or had quiche copy, in user space: everything it gave quiche
    /// goes into packets once (retransmissions are counted per connection), everything it read
    /// from the stream was copied out of a packet and out of quiche's buffer, and each pipe counts
    /// its compaction.
    pub fn copies(&self) -> CopiedBytes {
        let received = self.to_local.bytes_in();
        CopiedBytes {
            into_packets: self.from_local.bytes_out(),
            out_of_packets: received,
            out_of_quiche: received,
            compaction: self.from_local.bytes_copied() + self.to_local.bytes_copied(),
            handover: 0,
        }
    }

    fn directions(&self) -> (&Pipe, &Pipe) {
        match self.role {
            Role::Dialer { .. } => (&self.from_local, &self.to_local),
            Role::Acceptor { .. } => (&self.to_local, &self.from_local),
        }
    }

    fn to_router_mut(&mut self) -> &mut Pipe {
        match self.role {
            Role::Dialer { .. } => &mut self.from_local,
            Role::Acceptor { .. } => &mut self.to_local,
        }
    }

    fn to_client_mut(&mut self) -> &mut Pipe {
        match self.role {
            Role::Dialer { .. } => &mut self.to_local,
            Role::Acceptor { .. } => &mut self.from_local,
        }
    }

    fn on_handshake(&mut self, hs: Handshake) {
        match hs {
            Handshake::Client(c) => {
                // The client's limit bounds what travels towards it.
                self.serializer = Some(c.serializer);
                let limit = c.max_len.bytes().min(self.max_frame);
                self.to_client_mut().set_limit(limit);
                self.client_ready = true;
            }
            Handshake::Router(RouterReply::Accepted { max_len, .. }) => {
                let limit = max_len.bytes().min(self.max_frame);
                self.to_router_mut().set_limit(limit);
                self.router_replied = true;
            }
            // The router refused: nothing more goes to it. The reply still reaches the client.
            Handshake::Router(RouterReply::Rejected { .. }) => {
                self.router_replied = true;
                match self.role {
                    // Frames held for the router are dropped and the rest of the stream is not
                    // read (STOP_SENDING returns its credit).
                    Role::Acceptor { .. } => self.end_local_write_half(),
                    // The client's frames after its handshake would go nowhere.
                    Role::Dialer { .. } => {
                        self.from_local.abort();
                        self.discard_local = true;
                    }
                }
            }
        }
    }

    fn note_realm(&mut self) {
        if self.realm_checked {
            return;
        }
        let Some(ser) = self.serializer else { return };
        let (to_router, _) = self.directions();
        if let Some(hello) = to_router.first_message() {
            self.realm = realm_from_hello(ser, hello);
            self.realm_checked = true;
        }
    }

    /// Moves bytes both ways until neither side can make progress. `stream` is `None` while the
    /// stream is not open (only the local side is read then). `Ok(true)` when the link is done.
    ///
    /// Every state of the stream ends the matching half of the link: a FIN from the peer ends
    /// the local socket's write side once the bytes before it are delivered; a RESET_STREAM
    /// drops what is unread and ends it at once; a STOP_SENDING (or a stream quiche has already
    /// collected) ends reading from the local socket. The link is done when both halves are.
    pub fn pump(
        &mut self,
        mut stream: Option<StreamRef<'_>>,
        now: Instant,
    ) -> Result<bool, LinkEnd> {
        if self.connecting {
            return Ok(false);
        }
        if let Some(s) = stream.as_mut() {
            // A STOP_SENDING may arrive while this side has nothing to send: look for it now, or
            // the link would wait on a local socket whose bytes can go nowhere. Asked on every
            // pump, not only after `stream_writable_next`: quiche queues a stopped stream as
            // writable only if it had no send capacity before, so an idle link that had credit
            // would never hear of it (tried; links_lifecycle's silent-router test caught it).
            if !self.fin_sent {
                match s.capacity() {
                    Err(quiche::Error::StreamStopped(code)) => self.end_send_half(Some(code)),
                    Err(quiche::Error::InvalidStreamState(_)) => self.end_send_half(None),
                    _ => {}
                }
            }
        }
        loop {
            let mut progress = false;

            // Local -> stream.
            let mut max_read = usize::MAX;
            if self.cuts_at_frame_end() && !self.from_local.source_ended() {
                // The node is stopping: read only to the end of the frame in progress, then no
                // more. What was read (whole frames) still goes out, then the FIN.
                match self.from_local.bytes_to_frame_end() {
                    Some(0) => {
                        self.from_local.end_source();
                        self.discard_local = true;
                        progress = true;
                    }
                    Some(n) => max_read = n,
                    None => {}
                }
            }
            if self.sock.reads_on_ring() {
                progress |= self.take_ring_read()?;
            } else if self.local_readable && self.discard_local {
                self.discard_local_input()?;
            } else if self.local_readable {
                let (sock, readable) = (&mut self.sock, &mut self.local_readable);
                let closing = self.local_read_closed;
                progress |= self
                    .from_local
                    .fill_at_most(max_read, |buf, room| {
                        let fill = read_local(sock, buf, room)?;
                        let short = !matches!(fill, Fill::Data(n) if n == room);
                        // A read cut short by `max_read` says nothing about the socket.
                        if short && !(closing && matches!(fill, Fill::Data(_))) {
                            *readable = false;
                        }
                        Ok(fill)
                    })
                    .map_err(LinkEnd::Local)?;
            }
            self.check_from_local()?;

            let Some(s) = stream.as_mut() else {
                // No stream yet: a client that leaves before it opens is simply done.
                if self.from_local.source_ended() {
                    return Ok(true);
                }
                self.arm_ring_read(max_read);
                return Ok(false);
            };
            if !self.fin_sent {
                match self.from_local.drain_shared(|b| stream_write_shared(s, b)) {
                    Ok(taken) => {
                        progress |= taken > 0;
                        self.wrote_stream |= taken > 0;
                    }
                    Err(SendEnd::Stopped(code)) => {
                        self.end_send_half(code);
                        progress = true;
                    }
                    Err(SendEnd::Error(e)) => return Err(stream_error(e)),
                }
            }
            if self.from_local.is_finished() && !self.fin_sent {
                match stream_write(s, &[], true) {
                    Ok(_) => {
                        self.fin_sent = true;
                        self.wrote_stream = true;
                        progress = true;
                    }
                    Err(SendEnd::Stopped(code)) => {
                        self.end_send_half(code);
                        progress = true;
                    }
                    Err(SendEnd::Error(e)) => return Err(stream_error(e)),
                }
            }

            // Stream -> local.
            if let (Some(code), false) = (self.stop_reading_stream, self.stream_read_stopped) {
                // STOP_SENDING: the peer stops, and the unread bytes' credit comes back.
                s.shutdown(quiche::Shutdown::Read, code).ok();
                self.stream_read_stopped = true;
                self.wrote_stream = true;
            }
            if !self.stream_read_stopped {
                match self.to_local.fill(|buf, room| stream_recv(s, buf, room)) {
                    Ok(p) => progress |= p,
                    Err(LinkEnd::PeerReset(code)) => {
                        // The peer abandoned what it was sending: nothing more will come, and a
                        // partly delivered frame cannot be completed. End the local write side.
                        self.reset_by_peer = Some(code);
                        self.to_local.abort();
                        progress = true;
                    }
                    Err(e) => return Err(e),
                }
            }
            match self.to_local.check() {
                Ok(Some(hs)) => self.on_handshake(hs),
                Ok(None) => {}
                Err(e) => return Err(LinkEnd::Protocol(e)),
            }
            let sock = &mut self.sock;
            let drained = if sock.shares_writes() {
                self.to_local.drain_shared(|b| write_local_shared(sock, b))
            } else {
                self.to_local.drain(|b| write_local(sock, b))
            };
            let written = match drained {
                Ok(n) => n,
                // The local end closed (or reset) while bytes were on their way to it: that half
                // is over. The other half goes on: what the local end sent before it closed is
                // still relayed, then the FIN.
                Err(e) if is_gone(&e) => {
                    self.end_local_write_half();
                    progress = true;
                    0
                }
                Err(e) => return Err(LinkEnd::Local(e)),
            };
            progress |= written > 0;
            // Bytes the socket took but has not sent yet (a ring's writer) wait like the pipe's,
            // and the writer getting some of them into the kernel is the reader making progress.
            let waiting = self.to_local.has_pending() || !self.sock.flushed();
            let sent = self.sock.bytes_sent();
            let moved = sent != std::mem::replace(&mut self.sock_sent, sent);
            if written > 0 || moved || !waiting {
                self.sink_blocked_since = None;
                self.stall_queue = None;
            } else if self.sink_blocked_since.is_none() {
                self.sink_blocked_since = Some(now);
            }
            if self.to_local.is_finished() && !self.local_write_closed {
                self.local_write_closed = true;
                // The peer side finished: pass the half-close on. A socket already gone is fine.
                self.sock.shutdown_write().ok();
            }

            self.note_realm();
            if self.fin_sent && self.local_write_closed && self.sock.flushed() {
                return Ok(true);
            }
            if !progress {
                // The next read goes on the ring once the pipe has given the sink what it could.
                self.arm_ring_read(max_read);
                if !self.to_local.takes_no_more() {
                    self.holding_since = None;
                } else if self.holding_since.is_none() {
                    self.holding_since = Some(now);
                }
                return Ok(false);
            }
        }
    }

    /// The node starts draining: from now on the local socket is read only to the end of the
    /// frame in progress, unless its client has already half-closed, in which case everything
    /// it wrote is read to its end and relayed (nothing it sent before the signal is lost). On
    /// mio a readiness event has said so already (`local_read_closed`); reads on the ring bring
    /// no such event, so the kernel is asked once, here.
    pub fn begin_drain(&mut self) {
        self.draining = true;
        if self.sock.reads_on_ring()
            && !self.local_read_closed
            && !self.ring_read_ended
            && self.sock.peer_shut_down()
        {
            self.local_read_closed = true;
        }
    }

    /// The local socket is read only to the end of the frame in progress: the node is draining
    /// and the client has not half-closed.
    fn cuts_at_frame_end(&self) -> bool {
        self.draining && !self.local_read_closed
    }

    /// Reads on the ring: takes what the last read brought into the room this pipe lent (a
    /// completion wakes the link: [`LocalConn::on_received`]; no readiness event is involved).
    /// True if bytes (or the end) arrived.
    fn take_ring_read(&mut self) -> Result<bool, LinkEnd> {
        use crate::io::uring::local_recv::Received;
        let mut progress = false;
        match self.sock.take_received() {
            None => {}
            Some(Received::Data(chunk, _)) if self.discard_local => {
                // Read into scratch room (or into a block an abort has let go of).
                self.discarded += chunk.len() as u64;
            }
            Some(Received::Data(chunk, lent)) if !self.cuts_at_frame_end() => {
                progress |= !chunk.is_empty();
                self.from_local.give_back(chunk, lent);
            }
            Some(Received::Data(mut chunk, lent)) => {
                // The node is draining, and this read may have been parked before it began: only
                // the bytes up to the end of the frame in progress go in, the rest is dropped, as
                // if it had stayed unread. Taken piece by piece, each checked before the next is
                // measured: a header this read completes tells how long its payload is.
                while !chunk.is_empty() {
                    let n = match self.from_local.bytes_to_frame_end() {
                        Some(0) => break,
                        Some(n) => n.min(chunk.len()),
                        None => chunk.len(),
                    };
                    progress = true;
                    self.from_local.give_back(chunk.split_to(n), lent);
                    self.check_from_local()?;
                }
                self.discarded += chunk.len() as u64;
            }
            Some(Received::End) => {
                self.ring_read_ended = true;
                if !self.from_local.source_ended() {
                    self.from_local.end_source();
                    progress = true;
                }
            }
            Some(Received::Failed(e)) => {
                self.ring_read_ended = true;
                if !self.discard_local {
                    return Err(LinkEnd::Local(e));
                }
            }
        }
        Ok(progress)
    }

    /// Checks what the local socket's bytes added (the client's handshake, frame headers).
    fn check_from_local(&mut self) -> Result<(), LinkEnd> {
        match self.from_local.check() {
            Ok(Some(hs)) => self.on_handshake(hs),
            Ok(None) => {}
            Err(PipeError::Handshake(e)) if matches!(self.role, Role::Dialer { .. }) => {
                return Err(LinkEnd::ClientHandshake(e))
            }
            Err(e) => return Err(LinkEnd::Protocol(e)),
        }
        Ok(())
    }

    /// Reads on the ring: lends room for the next read (at most `max_read` bytes), when none is
    /// on its way and the pipe has room worth a request.
    fn arm_ring_read(&mut self, max_read: usize) {
        const DISCARD_ROOM: usize = 16 << 10;
        if !self.sock.reads_on_ring() || self.ring_read_ended || self.sock.recv_busy() {
            return;
        }
        if self.discard_local {
            self.sock
                .recv_into(BytesMut::with_capacity(DISCARD_ROOM), DISCARD_ROOM);
        } else if let Some((room, len)) = self.from_local.lend(max_read) {
            self.sock.recv_into(room, len);
        }
    }

    /// Reads and drops what the local socket has (see `discard_local`).
    fn discard_local_input(&mut self) -> Result<(), LinkEnd> {
        let mut scratch = [0u8; 16 << 10];
        for _ in 0..64 {
            match as_fill(|| self.sock.read(&mut scratch)) {
                Ok(Fill::Data(n)) => {
                    self.discarded += n as u64;
                    if n < scratch.len() && !self.local_read_closed {
                        self.local_readable = false;
                        return Ok(());
                    }
                }
                Ok(_) => {
                    self.local_readable = false;
                    return Ok(());
                }
                // The local end is gone: nothing left to drop.
                Err(_) => {
                    self.local_readable = false;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Nothing more can be written to the local socket: drop what waits for it, end its write
    /// side, and tell the peer to stop sending (STOP_SENDING `LocalAbort`).
    fn end_local_write_half(&mut self) {
        self.to_local.abort();
        self.local_write_closed = true;
        self.sock.shutdown_write().ok();
        self.stop_reading_stream = Some(crate::quic::codes::StreamCode::LocalAbort as u64);
    }

    /// The peer will not read what this side sends (STOP_SENDING with `code`, or `None`: the
    /// stream is already collected). Stop reading the local socket; the other half goes on.
    fn end_send_half(&mut self, code: Option<u64>) {
        self.fin_sent = true;
        self.stopped_by_peer = Some(code.unwrap_or(STREAM_COLLECTED));
        self.from_local.abort();
        self.discard_local = true;
    }
}

/// Stand-in code for a stream quiche collected before this side learnt how it ended.
const STREAM_COLLECTED: u64 = u64::MAX;

/// What a quiche stream error means for the link.
fn stream_error(e: quiche::Error) -> LinkEnd {
    match e {
        quiche::Error::StreamStopped(code) => LinkEnd::PeerStopped(code),
        quiche::Error::StreamReset(code) => LinkEnd::PeerReset(code),
        e => LinkEnd::Quic(e),
    }
}

/// Why the send half cannot take bytes.
enum SendEnd {
    /// The peer stopped reading (its code), or the stream is gone (`None`).
    Stopped(Option<u64>),
    Error(quiche::Error),
}

/// Queues bytes (or the FIN) on the stream; `Ok(0)` when flow control allows nothing now.
fn stream_write(s: &mut StreamRef<'_>, bytes: &[u8], fin: bool) -> Result<usize, SendEnd> {
    send_result(s, |s| s.send(bytes, fin))
}

/// Queues bytes read from the local socket without copying them (quiche keeps a share of the
/// block they sit in); `Ok(0)` when flow control allows nothing now.
fn stream_write_shared(s: &mut StreamRef<'_>, bytes: &Bytes) -> Result<usize, SendEnd> {
    send_result(s, |s| s.send_shared(bytes, false))
}

fn send_result(
    s: &mut StreamRef<'_>,
    send: impl FnOnce(&mut StreamRef<'_>) -> Result<usize, quiche::Error>,
) -> Result<usize, SendEnd> {
    match send(s) {
        Ok(n) => Ok(n),
        // `Done` means "no capacity now" on a live stream, but also "no such stream" on one
        // quiche has collected (both halves ended by the peer): tell them apart.
        Err(quiche::Error::Done) => match s.capacity() {
            Err(quiche::Error::StreamStopped(code)) => Err(SendEnd::Stopped(Some(code))),
            Err(quiche::Error::InvalidStreamState(_)) => Err(SendEnd::Stopped(None)),
            _ => Ok(0),
        },
        Err(quiche::Error::StreamStopped(code)) => Err(SendEnd::Stopped(Some(code))),
        Err(e) => Err(SendEnd::Error(e)),
    }
}

fn stream_recv(s: &mut StreamRef<'_>, buf: &mut BytesMut, max: usize) -> Result<Fill, LinkEnd> {
    match s.recv_buf(buf, max) {
        Ok((n, true)) => Ok(Fill::Last(n)),
        Ok((n, false)) => Ok(Fill::Data(n)),
        Err(quiche::Error::Done) => Ok(Fill::Blocked),
        // The stream was collected: both directions finished earlier.
        Err(quiche::Error::InvalidStreamState(_)) => Ok(Fill::End),
        Err(e) => Err(stream_error(e)),
    }
}

/// A write error that means the local end has closed (or reset) its side.
fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::NotConnected
    )
}

/// Reads at most `max` bytes from the local socket, appended to `buf`.
fn read_local<S: LocalConn>(sock: &mut S, buf: &mut BytesMut, max: usize) -> io::Result<Fill> {
    as_fill(|| sock.read_buf(buf, max))
}

/// A read's result as a [`Fill`] (retried when interrupted).
fn as_fill(mut read: impl FnMut() -> io::Result<usize>) -> io::Result<Fill> {
    loop {
        return match read() {
            Ok(0) => Ok(Fill::End),
            Ok(n) => Ok(Fill::Data(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Fill::Blocked),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

fn write_local<S: LocalConn>(sock: &mut S, bytes: &[u8]) -> io::Result<usize> {
    retry_write(|| sock.write(bytes))
}

/// [`write_local`] for a socket that keeps a share of the block ([`LocalConn::shares_writes`]).
fn write_local_shared<S: LocalConn>(sock: &mut S, bytes: &Bytes) -> io::Result<usize> {
    retry_write(|| sock.write_shared(bytes))
}

/// A write's result: `Ok(0)` when the socket is full (retried when interrupted).
fn retry_write(mut write: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    loop {
        return match write() {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}
