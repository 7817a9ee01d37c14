//! One connection's state as the driver keeps it, and what the shard core may read of it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quiche::ConnectionId;

use crate::quic::cid::{cid_instance, cid_shard};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// TLS in progress; dropped at `deadline`.
    Handshaking {
        deadline: Instant,
    },
    /// Identity checked, but the peer already has a connection in this direction: waiting for
    /// that one's answer to a liveness probe. Serves no streams meanwhile.
    Probing,
    Established,
    /// Refused after the handshake (unknown peer, duplicate identity); its close is under way.
    Refused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// This node dialed the peer.
    Outgoing,
    /// The peer dialed this node.
    Incoming,
}

/// One QUIC connection to a peer node.
pub struct Conn {
    /// Private: every quiche call goes through the driver (streams through [`StreamRef`]).
    pub(super) quic: crate::quic::bufs::QuicConn,
    pub peer_addr: SocketAddr,
    pub direction: Direction,
    /// The configured peer: known when dialing, learnt from the certificate when accepting.
    pub peer: Option<String>,
    pub(super) state: State,
    /// Holds an admission slot (an incoming handshake in progress) for `peer_addr`.
    pub(super) slot: bool,
    pub(super) next_keepalive: Option<Instant>,
    /// Datagrams received since this connection last sent (for delayed ACKs).
    pub(super) received_since_send: u32,
    /// The application queued stream data (or a FIN/reset) since the last send.
    pub(super) data_queued: bool,
    /// A held-back ACK must leave by then.
    pub(super) ack_deadline: Option<Instant>,
    pub(super) next_local_bidi: u64,
    pub(super) cids: Vec<ConnectionId<'static>>,
}

impl Conn {
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// The peer's shard, read from the connection ID it chose for its side
    /// (`crate::quic::cid`). One peer's connections from (or to) different shards of it are
    /// not duplicates of each other.
    pub fn remote_shard(&self) -> u8 {
        cid_shard(self.quic.destination_id().as_ref()).unwrap_or(0)
    }

    /// The peer process's instance, from the same connection ID: connections of one peer with
    /// different instances come from different processes.
    pub fn remote_instance(&self) -> u64 {
        cid_instance(self.quic.destination_id().as_ref()).unwrap_or(0)
    }

    /// Whether this connection and one from (`shard`, `instance`) of the same peer compete for
    /// one place: the same shard of it, or another process holding its certificate.
    pub fn competes_with(&self, shard: u8, instance: u64) -> bool {
        self.remote_shard() == shard || self.remote_instance() != instance
    }

    /// Not closing, closed or draining.
    pub fn is_live(&self) -> bool {
        !self.quic.is_closed() && !self.quic.is_draining() && self.quic.local_error().is_none()
    }

    /// The connection's transport figures (for the metrics).
    pub fn figures(&self) -> ConnFigures {
        let s = self.quic.stats();
        let path = self.quic.path_stats().next();
        ConnFigures {
            rtt: path.as_ref().map(|p| p.rtt),
            cwnd: path.as_ref().map(|p| p.cwnd as u64),
            packets_sent: s.sent as u64,
            packets_received: s.recv as u64,
            packets_lost: s.lost as u64,
            packets_retransmitted: s.retrans as u64,
            bytes_sent: s.sent_bytes,
            bytes_received: s.recv_bytes,
        }
    }
}

/// A connection's transport figures: its path's RTT and congestion window, and its totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnFigures {
    pub rtt: Option<Duration>,
    pub cwnd: Option<u64>,
    pub packets_sent: u64,
    pub packets_received: u64,
    pub packets_lost: u64,
    pub packets_retransmitted: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}
