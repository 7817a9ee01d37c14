//! The sans-I/O QUIC driver: owns every quiche connection of a shard, is fed datagrams and the
//! current time, and hands back datagram batches to send and the next deadline. It never touches
//! a socket, so any I/O backend (mio, io_uring, an in-memory test network) can run it.
//!
//! Calls, in the order a backend makes them on each turn of its loop:
//! 1. input: [`QuicDriver::recv`] for each received datagram (a GRO buffer split by segment
//!    size), [`QuicDriver::on_timeout`] when [`QuicDriver::timeout`] has passed;
//! 2. events: [`QuicDriver::poll_event`] until `None` (connections established, refused, closed);
//! 3. commands: [`QuicDriver::connect`], [`QuicDriver::open_stream`], stream I/O through
//!    [`QuicDriver::conn_mut`], [`QuicDriver::close`];
//! 4. output: [`QuicDriver::poll_transmit`] per connection until `None`, then sleep until
//!    [`QuicDriver::timeout`] or the next input.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quiche::ConnectionId;
use rand::RngCore;

use super::codes::{describe_close, ConnCode};
use super::tls::certificate_names;

/// A connection's handle; never reused within a process.
pub type ConnId = u64;

/// Length of the connection IDs this node issues.
const CID_LEN: usize = quiche::MAX_CONN_ID_LEN;
/// Longest time an ACK is held back waiting for data to ride on (see `poll_transmit`).
pub const ACK_DELAY: Duration = Duration::from_micros(250);
/// Incoming handshakes in progress at once; more Initials are dropped (a flood cannot take all
/// memory, and peers retry).
const MAX_HANDSHAKING: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// This node dialed the peer.
    Outgoing,
    /// The peer dialed this node.
    Incoming,
}

/// One QUIC connection to a peer node.
pub struct Conn {
    pub quic: quiche::Connection,
    pub peer_addr: SocketAddr,
    pub direction: Direction,
    /// The configured peer: known when dialing, learnt from the certificate when accepting.
    pub peer: Option<String>,
    established: bool,
    next_keepalive: Option<Instant>,
    /// Datagrams received since this connection last sent (for delayed ACKs).
    received_since_send: u32,
    /// The application queued stream data (or a FIN/reset) since the last send.
    data_queued: bool,
    /// A held-back ACK must leave by then.
    ack_deadline: Option<Instant>,
    next_local_bidi: u64,
    cids: Vec<ConnectionId<'static>>,
}

impl Conn {
    pub fn is_established(&self) -> bool {
        self.established
    }
}

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

/// Datagrams that did not belong to any connection, by reason (reported in the stats line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    pub unparsable: u64,
    pub unknown_connection: u64,
    pub version_negotiations: u64,
    pub handshakes_refused: u64,
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
    conns: HashMap<ConnId, Conn>,
    by_cid: HashMap<ConnectionId<'static>, ConnId>,
    next_id: ConnId,
    events: VecDeque<DriverEvent>,
    stats: DriverStats,
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
            conns: HashMap::new(),
            by_cid: HashMap::new(),
            next_id: 1,
            events: VecDeque::new(),
            stats: DriverStats::default(),
        }
    }

    pub fn stats(&self) -> DriverStats {
        self.stats
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
        let scid = random_cid();
        let quic = quiche::connect(Some(peer), &scid, self.local_addr, addr, &mut self.config)?;
        let id = self.insert(
            quic,
            addr,
            Direction::Outgoing,
            Some(peer.to_string()),
            vec![scid],
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
            None => (self.accept(&hdr, datagram, from)?, true),
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
        Some(id)
    }

    fn accept(
        &mut self,
        hdr: &quiche::Header<'_>,
        datagram: &mut [u8],
        from: SocketAddr,
    ) -> Option<ConnId> {
        if hdr.ty != quiche::Type::Initial {
            self.stats.unknown_connection += 1;
            return None;
        }
        if !quiche::version_is_supported(hdr.version) {
            // Version negotiation is answered by the caller's next send; rlinkd nodes speak one
            // version, so just count it.
            self.stats.version_negotiations += 1;
            return None;
        }
        if datagram.len() < 1200 {
            self.stats.unparsable += 1;
            return None;
        }
        let handshaking = self.conns.values().filter(|c| !c.established).count();
        if handshaking >= MAX_HANDSHAKING {
            self.stats.handshakes_refused += 1;
            return None;
        }
        let scid = random_cid();
        let odcid = hdr.dcid.clone().into_owned();
        let quic = match quiche::accept(&scid, None, self.local_addr, from, &mut self.config) {
            Ok(q) => q,
            Err(e) => {
                tracing::debug!(%from, error = %e, "cannot accept connection");
                return None;
            }
        };
        Some(self.insert(quic, from, Direction::Incoming, None, vec![scid, odcid]))
    }

    fn insert(
        &mut self,
        quic: quiche::Connection,
        addr: SocketAddr,
        direction: Direction,
        peer: Option<String>,
        cids: Vec<ConnectionId<'static>>,
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
                established: false,
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
        if !c.established || c.quic.peer_streams_left_bidi() == 0 {
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
            self.events.push_back(DriverEvent::Closed {
                conn: id,
                peer: c.peer.clone(),
                direction: c.direction,
                addr,
                reason: "peer unreachable: ICMP port unreachable (nothing listens there any more)"
                    .to_string(),
                was_established: c.established,
            });
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
        if c.established && !c.data_queued && c.received_since_send == 1 {
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

    /// The earliest time [`QuicDriver::on_timeout`] must be called.
    pub fn timeout(&self) -> Option<Instant> {
        self.conns
            .values()
            .flat_map(|c| [c.quic.timeout_instant(), c.next_keepalive, c.ack_deadline])
            .flatten()
            .min()
    }

    /// Runs expired timers: loss detection, idle timeouts, keepalives.
    pub fn on_timeout(&mut self, now: Instant) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
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
    }

    /// Notices state changes after input: establishment (with the identity check) and close.
    fn after_io(&mut self, id: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if !c.established && c.quic.is_established() && !c.quic.is_closed() && !c.quic.is_draining()
        {
            match verify_identity(c, &self.allowed_peers) {
                Ok(peer) => {
                    c.established = true;
                    c.peer = Some(peer.clone());
                    c.next_keepalive = Some(now + self.keepalive);
                    self.events.push_back(DriverEvent::Established {
                        conn: id,
                        peer,
                        direction: c.direction,
                    });
                }
                Err(why) => {
                    tracing::warn!(addr = %c.peer_addr, "refused peer: {why}");
                    self.stats.handshakes_refused += 1;
                    c.quic
                        .close(true, ConnCode::UnknownPeer as u64, why.as_bytes())
                        .ok();
                }
            }
        }
        if c.quic.is_closed() {
            let Some(c) = self.forget(id) else {
                return;
            };
            let reason = close_reason(&c);
            self.events.push_back(DriverEvent::Closed {
                conn: id,
                peer: c.peer.clone(),
                direction: c.direction,
                addr: c.peer_addr,
                reason,
                was_established: c.established,
            });
        }
    }
}

impl QuicDriver {
    fn forget(&mut self, id: ConnId) -> Option<Conn> {
        let c = self.conns.remove(&id)?;
        for cid in &c.cids {
            self.by_cid.remove(cid);
        }
        Some(c)
    }
}

fn verify_identity(c: &Conn, allowed: &HashSet<String>) -> Result<String, String> {
    let Some(der) = c.quic.peer_cert() else {
        return Err("no certificate presented".to_string());
    };
    let names = certificate_names(der);
    match (&c.peer, c.direction) {
        (Some(expected), Direction::Outgoing) => {
            if names.iter().any(|n| n == expected) {
                Ok(expected.clone())
            } else {
                Err(format!(
                    "dialed peer {expected:?} but its certificate names {names:?}"
                ))
            }
        }
        _ => names
            .iter()
            .find(|n| allowed.contains(*n))
            .cloned()
            .ok_or_else(|| {
                format!("certificate names {names:?}, none of which is a configured peer")
            }),
    }
}

fn close_reason(c: &Conn) -> String {
    if let Some(e) = c.quic.peer_error() {
        format!("closed by peer: {}", describe_close(e))
    } else if let Some(e) = c.quic.local_error() {
        format!("closed here: {}", describe_close(e))
    } else if c.quic.is_timed_out() {
        if c.established {
            "idle timeout: no packets from the peer".to_string()
        } else {
            "handshake timed out: no answer from the peer".to_string()
        }
    } else {
        "closed".to_string()
    }
}

fn random_cid() -> ConnectionId<'static> {
    let mut b = [0u8; CID_LEN];
    rand::thread_rng().fill_bytes(&mut b);
    ConnectionId::from_vec(b.to_vec())
}
