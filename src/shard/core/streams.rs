//! Streams with news: links to pump, and streams a peer opens (their preamble names a route).

use super::*;
use crate::logsafe::escaped;
use crate::quic::codes::StreamCode;
use crate::quic::driver::{is_unidirectional, Direction};
use crate::quic::preamble;
use routes::{PendingRoute, ROUTE_RETRY_MIN};

impl<L: LocalIo> ShardCore<L> {
    pub(super) fn service_streams(&mut self, now: Instant) {
        for cid in self.driver.conn_ids() {
            let Some(c) = self.driver.conn_mut(cid) else {
                continue;
            };
            if !c.is_established() {
                // Handshaking, or refused by the peer check and closing: serve nothing.
                continue;
            }
            let mut readable = Vec::new();
            while let Some(sid) = c.next_readable_stream() {
                readable.push(sid);
            }
            while let Some(sid) = c.next_writable_stream() {
                if let Some(&key) = self.by_stream.get(&(cid, sid)) {
                    self.dirty.push(key);
                }
            }
            for sid in readable {
                match self.by_stream.get(&(cid, sid)) {
                    Some(&key) => self.dirty.push(key),
                    // Its route target is being connected: the bytes wait in quiche.
                    None if self.pending_routes.contains_key(&(cid, sid)) => {}
                    None => self.on_stream_start(cid, sid, now),
                }
            }
        }
    }

    /// Data on a stream with no link: a peer opening an rlink (read its preamble), or leftovers
    /// of a link already gone (refuse them).
    pub(super) fn on_stream_start(&mut self, cid: ConnId, sid: u64, now: Instant) {
        if is_unidirectional(sid) {
            // Links are bidirectional streams; a unidirectional one is the peer's control stream.
            self.on_control_stream(cid, sid);
            return;
        }
        let Some(c) = self.driver.conn_mut(cid) else {
            return;
        };
        let ours = sid.is_multiple_of(2) == (c.direction == Direction::Outgoing);
        if ours {
            c.stream(sid)
                .shutdown(quiche::Shutdown::Read, StreamCode::LocalAbort as u64)
                .ok();
            return;
        }
        let peer = c.peer.clone().unwrap_or_default();
        let buf = self.preambles.entry((cid, sid)).or_default();
        let mut chunk = [0u8; preamble::MAX_LEN];
        let mut stream = c.stream(sid);
        loop {
            let want = preamble::bytes_wanted(buf);
            if want == 0 {
                break;
            }
            match stream.recv(&mut chunk[..want]) {
                Ok((n, fin)) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if fin && preamble::bytes_wanted(buf) > 0 {
                        self.preambles.remove(&(cid, sid));
                        return;
                    }
                }
                Err(quiche::Error::Done) => return,
                Err(_) => {
                    self.preambles.remove(&(cid, sid));
                    return;
                }
            }
        }
        let decoded = preamble::decode(buf);
        self.preambles.remove(&(cid, sid));
        let route = match decoded {
            Ok(Some((route, _))) => route,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(peer = %peer, stream = sid, "refused stream: {e}");
                self.driver.reset_stream(cid, sid, StreamCode::BadPreamble);
                return;
            }
        };
        let Some(target) = self.routes.get(&route).cloned() else {
            // The name came from the peer's preamble: any UTF-8, escaped before it is logged.
            tracing::warn!(peer = %peer, route = %escaped(&route), "refused stream: no such route on this node");
            self.driver.reset_stream(cid, sid, StreamCode::UnknownRoute);
            return;
        };
        if self.stopping.is_some() {
            tracing::info!(peer = %peer, route = %escaped(&route), "refused stream: node stopping");
            self.driver.reset_stream(cid, sid, StreamCode::Shutdown);
            return;
        }
        let pending = PendingRoute {
            peer,
            route,
            target,
            deadline: now + self.cfg.quic.connect_timeout,
            retry_at: now,
            delay: ROUTE_RETRY_MIN,
        };
        self.connect_route(cid, sid, pending, now);
    }
}
