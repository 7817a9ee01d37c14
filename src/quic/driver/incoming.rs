//! Incoming handshakes: an Initial for no known connection is answered with a Retry unless it
//! brings a valid token; with one, a new connection if the handshake limits allow (see
//! `quic::admission` and docs/ARCHITECTURE.md, "Handshakes").

use std::net::SocketAddr;
use std::time::Instant;

use super::{ConnId, Direction, QuicDriver, MAX_STATELESS};
use crate::quic::cid::ShardCid;

impl QuicDriver {
    /// An Initial for no known connection: answered with a Retry unless it brings a valid token;
    /// with one, a new connection if the handshake limits allow.
    pub(super) fn accept(
        &mut self,
        hdr: &quiche::Header<'_>,
        datagram: &mut [u8],
        from: SocketAddr,
        now: Instant,
    ) -> Option<ConnId> {
        if hdr.ty != quiche::Type::Initial {
            self.stats.unknown_connection += 1;
            return None;
        }
        if !quiche::version_is_supported(hdr.version) {
            // Not answered with a Version Negotiation packet: rlinkd nodes speak one version, so
            // a node of another one is misconfigured, and the count in the stats says so.
            self.stats.version_negotiations += 1;
            return None;
        }
        if datagram.len() < 1200 {
            self.stats.unparsable += 1;
            return None;
        }
        let token = hdr.token.as_deref().unwrap_or_default();
        if token.is_empty() {
            self.send_retry(hdr, from, now);
            return None;
        }
        let odcid = match self.admission.validate(token, from, &hdr.dcid, now) {
            Ok(odcid) => odcid,
            Err(e) => {
                self.stats.invalid_tokens += 1;
                self.admission.note_failure(from, e.to_string());
                return None;
            }
        };
        if let Err(limit) = self.admission.admit(from) {
            self.stats.handshakes_refused += 1;
            self.admission
                .note_failure(from, format!("{limit:?} handshake limit reached"));
            return None;
        }
        self.admission.consume(&hdr.dcid, now);
        // The client's DCID is the Retry's source connection ID: one this node issued, bound to
        // the token's tag, so it is safe to use as the connection's own ID.
        let scid = hdr.dcid.clone().into_owned();
        let quic = match quiche::accept_with_buf_factory(
            &scid,
            Some(&odcid),
            self.local_addr,
            from,
            &mut self.config,
        ) {
            Ok(q) => q,
            Err(e) => {
                self.admission.release(from);
                tracing::debug!(%from, error = %e, "cannot accept connection");
                return None;
            }
        };
        Some(self.insert(quic, from, Direction::Incoming, None, vec![scid], now))
    }

    fn send_retry(&mut self, hdr: &quiche::Header<'_>, from: SocketAddr, now: Instant) {
        if self.stateless.len() >= MAX_STATELESS {
            self.stats.handshakes_refused += 1;
            return;
        }
        // The client's next Initial goes to this ID: it carries this shard, so it comes back here.
        let new_scid = ShardCid::issue(self.shard, self.instance).to_connection_id();
        let Some(token) = self.admission.mint(from, &hdr.dcid, &new_scid, now) else {
            self.stats.unparsable += 1;
            return;
        };
        let mut out = [0u8; 512];
        match quiche::retry(
            &hdr.scid,
            &hdr.dcid,
            &new_scid,
            &token,
            hdr.version,
            &mut out,
        ) {
            Ok(n) => {
                self.stats.retries_sent += 1;
                self.stateless.push_back((out[..n].to_vec(), from));
            }
            Err(e) => tracing::debug!(%from, error = %e, "cannot write a Retry"),
        }
    }
}
