//! The driver's part in connection-level notices (the control stream, [`crate::quic::control`])
//! and in a reload: the TLS and transport configuration for new connections, the peers allowed
//! in, the keepalive interval; and the peer certificate's fingerprint for the logs.

use std::collections::HashSet;
use std::time::Duration;

use super::{Conn, ConnId, Direction, QuicDriver, State};
use crate::quic::control::{self, ControlError, Notice};

/// Whether `sid` is a unidirectional stream (bit 1 of a QUIC stream ID): only the control
/// stream is; links are bidirectional.
pub fn is_unidirectional(sid: u64) -> bool {
    sid & 0x2 != 0
}

impl QuicDriver {
    /// Sends `notice` on a control stream of `conn`, and sends it without delay. False when the
    /// connection is not established, or its peer allows no unidirectional stream (a build from
    /// before the notice: it would not understand it), or a control stream was already used.
    pub fn send_notice(&mut self, conn: ConnId, notice: Notice) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        if c.state != State::Established || c.quic.peer_streams_left_uni() == 0 {
            return false;
        }
        // The first unidirectional stream of our side: 2 when we dialed, 3 when we accepted.
        // One control stream per connection is all the peer allows.
        let sid = if c.direction == Direction::Outgoing {
            2
        } else {
            3
        };
        let sent = c.quic.stream_send(sid, &notice.encode(), true) == Ok(control::LEN);
        if sent {
            c.data_queued = true;
        }
        sent
    }

    /// Reads the notice on the peer's control stream `sid` of `conn`: `None` while its bytes
    /// have not all arrived. A stream this build does not understand is an error; the caller
    /// ignores it (its read half is stopped here, so it holds nothing).
    pub fn read_notice(&mut self, conn: ConnId, sid: u64) -> Option<Result<Notice, ControlError>> {
        let c = self.conns.get_mut(&conn)?;
        let fin = c.quic.stream_finished(sid);
        if c.quic.stream_readable_len(sid, control::LEN) < control::LEN && !fin {
            return None;
        }
        let mut buf = [0u8; control::LEN];
        let n = match c.quic.stream_recv(sid, &mut buf) {
            Ok((n, _)) => n,
            Err(_) => 0,
        };
        let result = if n < control::LEN {
            Err(ControlError::BadMagic)
        } else {
            control::decode(&buf)
        };
        // Whatever follows (a newer peer's further notices) is not for this build.
        c.quic.stream_shutdown(sid, quiche::Shutdown::Read, 0).ok();
        Some(result)
    }

    /// The TLS and transport configuration of connections dialed or accepted from now on (a
    /// reload: a new certificate, key or CA). Established connections keep theirs: each holds
    /// its own TLS session.
    pub fn set_config(&mut self, config: quiche::Config) {
        self.config = config;
    }

    /// The names an incoming connection's certificate may carry from now on. Connections of a
    /// peer that is no longer allowed are the caller's to close.
    pub fn set_allowed_peers(&mut self, peers: impl IntoIterator<Item = String>) {
        self.allowed_peers = peers.into_iter().collect::<HashSet<_>>();
    }

    /// The keepalive interval of connections established from now on and of the next PING of
    /// every other.
    pub fn set_keepalive(&mut self, keepalive: Duration) {
        self.keepalive = keepalive;
    }

    /// The connections (in any state) that belong to `peer`.
    pub fn conns_of(&self, peer: &str) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| c.peer.as_deref() == Some(peer))
            .map(|(id, _)| *id)
            .collect()
    }
}

impl Conn {
    /// The first 8 bytes of the SHA-256 of the peer's certificate, in hex: which certificate a
    /// peer presented (after a rotation, the new one) shows in the logs.
    pub fn peer_cert_fingerprint(&self) -> Option<String> {
        self.quic.peer_cert().and_then(fingerprint)
    }
}

/// The first 8 bytes of the SHA-256 of a DER certificate, in hex (the form the logs use).
pub fn fingerprint(der: &[u8]) -> Option<String> {
    let digest = boring::hash::hash(boring::hash::MessageDigest::sha256(), der).ok()?;
    Some(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
}
