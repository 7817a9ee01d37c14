//! The sans-I/O QUIC driver: owns every quiche connection of a shard, is fed datagrams and the
//! current time, and hands back datagram batches to send and the next deadline. It never touches
//! a socket, so any I/O backend (mio, io_uring, an in-memory test network) can run it.
//!
//! Calls, in the order a backend makes them on each turn of its loop:
//! 1. input: [`QuicDriver::recv`] for each received datagram (a GRO buffer split by segment
//!    size), [`QuicDriver::on_timeout`] when [`QuicDriver::timeout`] has passed;
//! 2. events: [`QuicDriver::poll_event`] until `None` (connections established, refused, closed);
//! 3. commands: [`QuicDriver::connect`], [`QuicDriver::open_stream`], stream I/O through
//!    [`QuicDriver::stream`] (a [`StreamRef`]) and [`Conn::next_readable_stream`] /
//!    [`Conn::next_writable_stream`], [`QuicDriver::reset_stream`], [`QuicDriver::close`];
//! 4. output: [`QuicDriver::poll_stateless`] until `None` (Retry packets, which belong to no
//!    connection), [`QuicDriver::poll_transmit`] per connection until `None`, then sleep until
//!    [`QuicDriver::timeout`] or the next input.
//!
//! Incoming handshakes are admitted by [`super::admission`] (Retry, limits); a connection not
//! established within [`HANDSHAKE_TIMEOUT`] is dropped. A second connection that authenticates as
//! a peer already connected in the same direction is held until the older connection has answered
//! a liveness probe or not (see [`QuicDriver::timeout`] and `docs/PROTOCOL.md`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quiche::ConnectionId;
use rustc_hash::FxHashMap;

use super::bufs::QuicConn;
use super::cid::DialCids;

use super::admission::Admission;
use super::codes::ConnCode;

mod conn;
mod control;
mod duplicate;
mod identity;
mod incoming;
mod stream;
use conn::State;
pub use conn::{Conn, ConnFigures, Direction};
pub use control::{fingerprint, is_unidirectional};
use duplicate::Probe;
use identity::{close_reason, verify_identity};
pub use stream::StreamRef;

/// A connection's handle; never reused within a process.
pub type ConnId = u64;

/// Length of the connection IDs this node issues.
const CID_LEN: usize = quiche::MAX_CONN_ID_LEN;
/// Longest time an ACK is held back waiting for data to ride on (see `poll_transmit`).
pub const ACK_DELAY: Duration = Duration::from_micros(250);
/// A connection not established this long after it started is dropped, in both directions: a
/// half-open handshake must not hold a slot (or a dialer) for the idle timeout. Ten round trips of
/// a slow path, and enough for two lost flights at quiche's initial 333 ms RTT estimate.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Shortest time an older connection has to answer a liveness probe; the wait is 3 x its RTT
/// when that is longer.
pub const PROBE_MIN_WAIT: Duration = Duration::from_millis(300);
/// Retry packets waiting for [`QuicDriver::poll_stateless`]; a flood beyond that is dropped.
const MAX_STATELESS: usize = 256;

/// Where a connection is in its life, as far as the driver's decisions go.
/// What happened to connections since the last poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverEvent {
    /// Handshake done and the peer's identity checked.
    Established {
        conn: ConnId,
        peer: String,
        direction: Direction,
    },
    /// The connection is gone; every stream on it with it.
    Closed {
        conn: ConnId,
        peer: Option<String>,
        direction: Direction,
        addr: SocketAddr,
        reason: String,
        was_established: bool,
    },
}

/// Datagrams that did not belong to any connection, by reason, and what became of incoming
/// handshakes (reported in the stats line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    pub unparsable: u64,
    pub unknown_connection: u64,
    pub version_negotiations: u64,
    /// Initials without a token, answered with a Retry.
    pub retries_sent: u64,
    /// Initials whose token was forged, expired or from another address.
    pub invalid_tokens: u64,
    /// Initials dropped at a handshake limit (total, per IP, per source) or because too many
    /// Retry packets were waiting to be sent.
    pub handshakes_refused: u64,
    /// Incoming handshakes dropped by [`HANDSHAKE_TIMEOUT`].
    pub handshakes_timed_out: u64,
    /// Incoming handshakes that ended before completing (TLS alerts: unknown CA, no certificate).
    pub handshakes_failed: u64,
    /// Completed handshakes whose certificate names no configured peer (closed with 0x10).
    pub peers_refused: u64,
    /// Newcomers refused because the peer's connection answered the liveness probe (0x12).
    pub duplicates_refused: u64,
    /// Connections replaced by a newcomer after failing the liveness probe (0x11).
    pub superseded: u64,
    /// Stream bytes the connections this driver has forgotten retransmitted (the live ones' are
    /// in their figures; [`QuicDriver::stream_bytes_retransmitted`] adds both).
    pub closed_stream_retransmitted: u64,
}

/// A batch of equal-sized datagrams written into the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    pub len: usize,
    pub segment_size: usize,
    pub segments: usize,
    pub to: SocketAddr,
}

pub struct QuicDriver {
    config: quiche::Config,
    local_addr: SocketAddr,
    allowed_peers: HashSet<String>,
    keepalive: Duration,
    /// Keyed by this process's own counter, looked up several times per datagram: FxHash, not
    /// SipHash (no key here comes from the network). `by_cid`'s keys do, and keep SipHash.
    conns: FxHashMap<ConnId, Conn>,
    by_cid: HashMap<ConnectionId<'static>, ConnId>,
    next_id: ConnId,
    events: VecDeque<DriverEvent>,
    stats: DriverStats,
    admission: Admission,
    /// Retry packets to send: (datagram, destination).
    stateless: VecDeque<(Vec<u8>, SocketAddr)>,
    probes: Vec<Probe>,
    /// The shard this driver belongs to: every connection ID it issues carries it
    /// (`crate::quic::cid`), so the steering program brings the packets back here.
    shard: u8,
    /// The process's instance, in every connection ID it issues (`crate::quic::cid`).
    instance: u64,
}

impl QuicDriver {
    /// `allowed_peers`: names an incoming connection's certificate may carry.
    pub fn new(
        config: quiche::Config,
        local_addr: SocketAddr,
        allowed_peers: impl IntoIterator<Item = String>,
        keepalive: Duration,
    ) -> Self {
        QuicDriver {
            config,
            local_addr,
            allowed_peers: allowed_peers.into_iter().collect(),
            keepalive,
            conns: FxHashMap::default(),
            by_cid: HashMap::new(),
            next_id: 1,
            events: VecDeque::new(),
            stats: DriverStats::default(),
            admission: Admission::new(Instant::now()),
            stateless: VecDeque::new(),
            probes: Vec::new(),
            shard: 0,
            instance: rand::random(),
        }
    }

    /// The driver of shard `shard` (0 without shards): its connection IDs carry that shard.
    pub fn with_shard(mut self, shard: u8) -> Self {
        self.shard = shard;
        self
    }

    /// The driver of a process whose shards share `instance` (default: a random one, as if each
    /// driver were a process of its own).
    pub fn with_instance(mut self, instance: u64) -> Self {
        self.instance = instance;
        self
    }

    pub fn shard(&self) -> u8 {
        self.shard
    }

    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// Stream bytes quiche has written into packets a second time (or more), every connection
    /// this driver has had.
    pub fn stream_bytes_retransmitted(&self) -> u64 {
        self.stats.closed_stream_retransmitted
            + self
                .conns
                .values()
                .map(|c| c.quic.stats().stream_retrans_bytes)
                .sum::<u64>()
    }

    pub fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns.get(&id)
    }

    pub fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(&id)
    }

    pub fn conn_ids(&self) -> Vec<ConnId> {
        self.conns.keys().copied().collect()
    }

    /// [`QuicDriver::conn_ids`] into a vector the caller keeps (no allocation per call).
    pub fn conn_ids_into(&self, out: &mut Vec<ConnId>) {
        out.clear();
        out.extend(self.conns.keys().copied());
    }

    pub fn poll_event(&mut self) -> Option<DriverEvent> {
        self.events.pop_front()
    }

    /// Dials `peer` at `addr`; the certificate presented must name `peer`.
    pub fn connect(
        &mut self,
        peer: &str,
        addr: SocketAddr,
        now: Instant,
    ) -> Result<ConnId, quiche::Error> {
        // Both IDs carry this shard: the peer's steering sends the Initial to its shard
        // `shard mod n` (the same pairing whatever its shard count) and our packets come back here.
        let cids = DialCids::issue(self.shard, self.instance);
        let scid = cids.scid.to_connection_id();
        let quic = quiche::connect_with_dcid_and_buffer_factory(
            Some(peer),
            &scid,
            &cids.dcid.to_connection_id(),
            self.local_addr,
            addr,
            &mut self.config,
        )?;
        let id = self.insert(
            quic,
            addr,
            Direction::Outgoing,
            Some(peer.to_string()),
            vec![scid],
            now,
        );
        self.after_io(id, now);
        Ok(id)
    }

    /// Feeds one datagram. Returns the connection it belonged to, if any.
    pub fn recv(&mut self, datagram: &mut [u8], from: SocketAddr, now: Instant) -> Option<ConnId> {
        let hdr = match quiche::Header::from_slice(datagram, CID_LEN) {
            Ok(h) => h,
            Err(_) => {
                self.stats.unparsable += 1;
                return None;
            }
        };
        let (id, new) = match self.by_cid.get(&hdr.dcid) {
            Some(&id) => (id, false),
            None => (self.accept(&hdr, datagram, from, now)?, true),
        };
        let conn = self.conns.get_mut(&id)?;
        conn.received_since_send = conn.received_since_send.saturating_add(1);
        let info = quiche::RecvInfo {
            from,
            to: self.local_addr,
        };
        if let Err(e) = conn.quic.recv(datagram, info) {
            if e != quiche::Error::Done {
                tracing::debug!(conn = id, error = %e, "datagram refused by connection");
            }
        }
        if new && conn.quic.stats().recv == 0 {
            // An Initial that does not decrypt: junk, not a peer. Keep no state for it.
            self.forget(id);
            self.stats.unparsable += 1;
            return None;
        }
        self.after_io(id, now);
        self.check_probes(now);
        self.admission.log_summary(&self.stats, now);
        Some(id)
    }

    /// Writes the next packet that belongs to no connection (a Retry) into `out`.
    pub fn poll_stateless(&mut self, out: &mut [u8]) -> Option<Batch> {
        while let Some((d, to)) = self.stateless.pop_front() {
            if let Some(dst) = out.get_mut(..d.len()) {
                dst.copy_from_slice(&d);
                return Some(Batch {
                    len: d.len(),
                    segment_size: d.len(),
                    segments: 1,
                    to,
                });
            }
        }
        None
    }

    fn insert(
        &mut self,
        quic: QuicConn,
        addr: SocketAddr,
        direction: Direction,
        peer: Option<String>,
        cids: Vec<ConnectionId<'static>>,
        now: Instant,
    ) -> ConnId {
        let id = self.next_id;
        self.next_id += 1;
        for cid in &cids {
            self.by_cid.insert(cid.clone(), id);
        }
        let next_local_bidi = if direction == Direction::Outgoing {
            0
        } else {
            1
        };
        self.conns.insert(
            id,
            Conn {
                quic,
                peer_addr: addr,
                direction,
                peer,
                state: State::Handshaking {
                    deadline: now + HANDSHAKE_TIMEOUT,
                },
                slot: direction == Direction::Incoming,
                next_keepalive: None,
                received_since_send: 0,
                data_queued: false,
                ack_deadline: None,
                next_local_bidi,
                cids,
            },
        );
        id
    }

    /// Opens the next bidirectional stream on `conn`; `None` if the connection is not established
    /// or the peer's stream limit is reached (try again when the peer raises it).
    pub fn open_stream(&mut self, conn: ConnId) -> Option<u64> {
        let c = self.conns.get_mut(&conn)?;
        if c.state != State::Established || c.quic.peer_streams_left_bidi() == 0 {
            return None;
        }
        let id = c.next_local_bidi;
        // Create the stream now (an empty write sends nothing): quiche counts a stream against
        // the peer's limit only once it exists, so IDs handed out but not yet written to would
        // let a burst of links overshoot the limit.
        c.quic.stream_send(id, &[], false).ok()?;
        c.next_local_bidi += 4;
        Some(id)
    }

    /// The network says nothing listens at `addr` any more (ICMP port unreachable): the peer
    /// process is gone. Its connections end now instead of at the idle timeout; there is no one
    /// to send a CONNECTION_CLOSE to.
    pub fn on_port_unreachable(&mut self, addr: SocketAddr) {
        let gone: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer_addr == addr)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            let Some(c) = self.forget(id) else { continue };
            let reason = "peer unreachable: ICMP port unreachable (nothing listens there any more)";
            self.push_closed(id, &c, reason.to_string());
        }
    }

    /// The relay queued stream data, a FIN or a reset on `conn`: send without delay.
    pub fn note_data_queued(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.data_queued = true;
        }
    }

    /// Closes `conn` with an application error code; the Closed event follows once the close is
    /// sent.
    pub fn close(&mut self, conn: ConnId, code: ConnCode, reason: &str) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.quic.close(true, code as u64, reason.as_bytes()).ok();
        }
    }

    /// Writes the next batch of datagrams of `conn` into `out`: equal-sized packets back to back
    /// (a GSO batch), at most `max_segments`, ending early on a short packet or at the
    /// connection's send quantum.
    pub fn poll_transmit(
        &mut self,
        conn: ConnId,
        out: &mut [u8],
        max_segments: usize,
        now: Instant,
    ) -> Option<Batch> {
        let c = self.conns.get_mut(&conn)?;
        // Delayed ACK: quiche acknowledges every ack-eliciting packet in the next send. When one
        // packet came in and the relay queued nothing to go back yet, hold the ACK-only packet
        // briefly so it rides on the reply (a request/response then costs two packets, not
        // four, and the peer is not woken for a bare ACK). A burst of packets is acknowledged
        // at once, so bulk transfer keeps its ACK clock.
        if c.state == State::Established && !c.data_queued && c.received_since_send == 1 {
            let deadline = *c.ack_deadline.get_or_insert(now + ACK_DELAY);
            if now < deadline {
                return None;
            }
        }
        let mss = c.quic.max_send_udp_payload_size();
        let limit = out
            .len()
            .min(mss * max_segments.max(1))
            .min(c.quic.send_quantum().max(mss));
        let mut batch: Option<Batch> = None;
        loop {
            let off = batch.map_or(0, |b| b.len);
            let seg = batch.map_or(mss, |b| b.segment_size);
            // The kernel takes at most `max_segments` (UDP_MAX_SEGMENTS) per GSO send, whatever
            // their size: small packets must not make a longer batch.
            if off + seg > limit || batch.is_some_and(|b| b.segments >= max_segments.max(1)) {
                break;
            }
            match c.quic.send(&mut out[off..off + seg]) {
                Ok((n, info)) => {
                    let b = batch.get_or_insert(Batch {
                        len: 0,
                        segment_size: n,
                        segments: 0,
                        to: info.to,
                    });
                    b.len += n;
                    b.segments += 1;
                    if n < b.segment_size {
                        break;
                    }
                }
                Err(quiche::Error::Done) | Err(quiche::Error::BufferTooShort) => break,
                Err(e) => {
                    tracing::debug!(conn, error = %e, "send failed; closing");
                    c.quic.close(false, 0x1, b"internal error").ok();
                    break;
                }
            }
        }
        // Whatever went out (or nothing, when there was nothing to send), the ACK is no longer
        // held back.
        c.received_since_send = 0;
        c.data_queued = false;
        c.ack_deadline = None;
        if batch.is_none() {
            self.after_io(conn, now);
        }
        batch
    }

    /// The earliest time [`QuicDriver::on_timeout`] must be called: quiche's timers,
    /// keepalives, held-back ACKs, handshake deadlines, liveness probe verdicts and the next
    /// summary of refused handshakes.
    pub fn timeout(&self) -> Option<Instant> {
        let handshake = |c: &Conn| match c.state {
            State::Handshaking { deadline } => Some(deadline),
            _ => None,
        };
        self.conns
            .values()
            .flat_map(|c| {
                [
                    c.quic.timeout_instant(),
                    c.next_keepalive,
                    c.ack_deadline,
                    handshake(c),
                ]
            })
            .chain(self.probes.iter().map(|p| Some(p.deadline)))
            .chain([self.admission.summary_due(&self.stats)])
            .flatten()
            .min()
    }

    /// Runs expired timers: loss detection, idle timeouts, keepalives, handshake timeouts,
    /// liveness probes.
    pub fn on_timeout(&mut self, now: Instant) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            if matches!(c.state, State::Handshaking { deadline } if deadline <= now) {
                self.handshake_timed_out(id);
                continue;
            }
            if c.quic.timeout_instant().is_some_and(|t| t <= now) {
                c.quic.on_timeout();
            }
            if let Some(t) = c.next_keepalive {
                if t <= now {
                    c.quic.send_ack_eliciting().ok();
                    c.next_keepalive = Some(now + self.keepalive);
                }
            }
            self.after_io(id, now);
        }
        self.check_probes(now);
        self.admission.log_summary(&self.stats, now);
    }

    /// Drops a connection whose handshake did not complete in time, without a packet: there is
    /// no authenticated peer to tell, and a flood must not cost a send.
    /// A handshake that failed and is closing (its CONNECTION_CLOSE had the time to leave) ends
    /// as failed, not as timed out.
    fn handshake_timed_out(&mut self, id: ConnId) {
        if self.conns.get(&id).is_some_and(|c| !c.is_live()) {
            self.end(id);
            return;
        }
        let Some(c) = self.forget(id) else { return };
        let reason = format!("handshake not completed within {HANDSHAKE_TIMEOUT:?}");
        if c.direction == Direction::Incoming {
            self.stats.handshakes_timed_out += 1;
            self.admission.note_failure(c.peer_addr, reason.clone());
        }
        self.push_closed(id, &c, reason);
    }

    /// Forgets a connection that closed, with the reason quiche gives.
    fn end(&mut self, id: ConnId) {
        let Some(c) = self.forget(id) else {
            return;
        };
        let reason = close_reason(&c);
        if c.direction == Direction::Incoming && matches!(c.state, State::Handshaking { .. }) {
            self.stats.handshakes_failed += 1;
            self.admission.note_failure(c.peer_addr, reason.clone());
        }
        self.push_closed(id, &c, reason);
    }

    fn push_closed(&mut self, id: ConnId, c: &Conn, reason: String) {
        self.events.push_back(DriverEvent::Closed {
            conn: id,
            peer: c.peer.clone(),
            direction: c.direction,
            addr: c.peer_addr,
            reason,
            was_established: c.is_established(),
        });
    }

    /// Notices state changes after input: establishment (with the identity check) and close.
    fn after_io(&mut self, id: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if matches!(c.state, State::Handshaking { .. }) && c.quic.is_established() && c.is_live() {
            if std::mem::take(&mut c.slot) {
                self.admission.release(c.peer_addr);
            }
            match verify_identity(c, &self.allowed_peers) {
                Ok(peer) => {
                    c.peer = Some(peer.clone());
                    let direction = c.direction;
                    self.on_verified(id, peer, direction, now);
                }
                Err(why) => {
                    tracing::warn!(addr = %c.peer_addr, "refused peer: {why}");
                    self.stats.peers_refused += 1;
                    c.state = State::Refused;
                    c.quic
                        .close(true, ConnCode::UnknownPeer as u64, why.as_bytes())
                        .ok();
                }
            }
        }
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if matches!(c.state, State::Handshaking { .. }) && !c.is_live() {
            // A failed handshake no longer counts against the limits while it closes. One the
            // peer closed (draining) has nothing left to send: it ends now, not 3 PTOs later.
            if std::mem::take(&mut c.slot) {
                self.admission.release(c.peer_addr);
            }
            if c.quic.is_draining() {
                self.end(id);
                return;
            }
        }
        if c.quic.is_closed() {
            self.end(id);
        }
    }

    fn establish(&mut self, id: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(peer) = c.peer.clone() else { return };
        c.state = State::Established;
        c.next_keepalive = Some(now + self.keepalive);
        self.events.push_back(DriverEvent::Established {
            conn: id,
            peer,
            direction: c.direction,
        });
    }
}

impl QuicDriver {
    fn forget(&mut self, id: ConnId) -> Option<Conn> {
        let c = self.conns.remove(&id)?;
        self.stats.closed_stream_retransmitted += c.quic.stats().stream_retrans_bytes;
        for cid in &c.cids {
            self.by_cid.remove(cid);
        }
        if c.slot {
            self.admission.release(c.peer_addr);
        }
        Some(c)
    }
}
