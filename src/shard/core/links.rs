//! Links: accepting them at the endpoints, watching their local connections, pumping them,
//! opening their streams, and their deadlines.

use super::*;
use crate::quic::codes::StreamCode;
use crate::quic::preamble;
use crate::rawsocket::error_reply;
use crate::relay::link::{LinkEnd, Role};

impl<L: LocalIo> ShardCore<L> {
    pub(super) fn accept_local(&mut self, endpoint: usize, now: Instant) {
        for _ in 0..ACCEPT_BURST {
            if !self.endpoints_open {
                return;
            }
            let Some(cfg) = self.cfg.links.get(endpoint) else {
                return;
            };
            let sock = match self.io.accept(endpoint) {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if is_resource_limit(&e) => {
                    // Out of descriptors or memory. Readiness is edge-triggered: the clients
                    // queued now bring no new event, so try again on a timer.
                    self.stats.accept_limited += 1;
                    self.accept_retry_at = Some(now + ACCEPT_RETRY);
                    if self
                        .last_accept_warning
                        .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
                    {
                        self.last_accept_warning = Some(now);
                        tracing::warn!(error = %e, endpoint = %cfg.listen, links = self.links.len(), times = self.stats.accept_limited, "cannot accept: retrying every {ACCEPT_RETRY:?} (raise the open-files limit?)");
                    }
                    return;
                }
                Err(e) => {
                    // One client's failure (it reset before accept, say): the queue goes on.
                    tracing::debug!(error = %e, endpoint = %cfg.listen, "accept failed");
                    continue;
                }
            };
            let role = Role::Dialer {
                peer: cfg.peer.clone(),
                route: cfg.route.clone(),
            };
            let mut link = Link::new(
                role,
                sock,
                self.cfg.relay.buffer_size,
                self.cfg.relay.max_frame,
                now,
            );
            link.endpoint = Some(endpoint);
            if let Some(key) = self.insert_link(link, now + self.cfg.quic.connect_timeout) {
                self.stats.links_opened += 1;
                self.dirty.push(key);
            }
        }
        // More may be queued, and no new event will say so: go on next turn.
        self.accept_retry_at.get_or_insert(now);
    }

    /// Registers a new link; it gives up at `deadline` unless the router's handshake reply has
    /// crossed by then.
    pub(super) fn insert_link(
        &mut self,
        mut link: Link<L::Conn>,
        deadline: Instant,
    ) -> Option<usize> {
        let key = self.links.vacant_key();
        if let Err(e) = self.io.watch(&mut link.sock, key) {
            tracing::warn!(error = %e, "cannot watch local connection");
            return None;
        }
        link.deadline = Some(deadline);
        self.deadlines.push(Reverse((deadline, key)));
        self.totals.opened(&link);
        Some(self.links.insert(link))
    }

    pub(super) fn link_event(&mut self, key: usize, ev: LocalEvent) {
        let Some(link) = self.links.get_mut(key) else {
            return;
        };
        if ev.readable {
            link.local_readable = true;
        }
        if ev.read_closed {
            // No further readable event will come: read until EOF whatever the read sizes.
            link.local_read_closed = true;
        }
        if ev.writable {
            link.sock.on_writable();
        }
        if link.connecting && ev.writable {
            match link.sock.finish_connect() {
                // The deadline stays until the router's handshake reply has crossed.
                Ok(true) => link.connecting = false,
                Ok(false) => {
                    self.io.watch_again(&mut link.sock, key);
                    return;
                }
                Err(e) => {
                    let why = format!("route {} target unreachable: {e}", link.role.route());
                    self.fail_link(key, StreamCode::RouteUnreachable, &why);
                    return;
                }
            }
        }
        self.dirty.push(key);
    }

    /// A completion backend's local send `id` for link `key` ended (see [`LocalConn::on_sent`]):
    /// the link runs again if it was its send.
    pub fn on_local_sent(&mut self, key: usize, id: u64, res: i32, bufs: Vec<bytes::Bytes>) {
        if let Some(link) = self.links.get_mut(key) {
            if link.sock.on_sent(id, res, bufs) {
                self.dirty.push(key);
            }
        }
    }

    /// A completion backend's local read `id` for link `key` ended (see
    /// [`LocalConn::on_received`]): the link runs again if it was its read.
    pub fn on_local_received(&mut self, key: usize, id: u64, res: i32, buf: bytes::BytesMut) {
        if let Some(link) = self.links.get_mut(key) {
            if link.sock.on_received(id, res, buf) {
                self.dirty.push(key);
            }
        }
    }

    pub(super) fn pump_dirty(&mut self, now: Instant) {
        while !self.dirty.is_empty() {
            let mut dirty = std::mem::take(&mut self.dirty);
            dirty.sort_unstable();
            dirty.dedup();
            for key in dirty.drain(..) {
                self.pump_link(key, now);
            }
            // Keep the allocation for the next round when nothing new came in meanwhile.
            if self.dirty.is_empty() {
                self.dirty = dirty;
            }
        }
    }

    fn pump_link(&mut self, key: usize, now: Instant) {
        let Some(link) = self.links.get_mut(key) else {
            return;
        };
        let stream = link
            .stream
            .and_then(|(cid, sid)| self.driver.stream(cid, sid));
        let had_stream = link.stream.is_some();
        let result = link.pump(stream, now);
        if std::mem::take(&mut link.wrote_stream) {
            if let Some((cid, _)) = link.stream {
                self.driver.note_data_queued(cid);
            }
        }
        if link.router_replied() {
            // Open end to end: nothing left to time out.
            link.deadline = None;
        }
        match (link.stalled_since(), link.holding_since()) {
            (None, None) => {
                // The common case (nothing stalled anywhere) costs no map lookup.
                if !self.stalls.is_empty() {
                    self.stalls.update(key, None, None, now);
                }
            }
            (stalled, holding) => {
                self.stalls.update(key, stalled, holding, now);
                if self.next_stall_check.is_none() {
                    self.next_stall_check = Some(now + stall::CHECK_EVERY);
                }
            }
        }
        match result {
            Ok(true) => self.finish_link(key),
            Ok(false) => {
                if !had_stream && link.client_ready() && matches!(link.role, Role::Dialer { .. }) {
                    self.open_or_wait(key);
                }
            }
            Err(LinkEnd::ClientHandshake(e)) => {
                if let Some(code) = e.reply_code() {
                    if let Some(link) = self.links.get_mut(key) {
                        write_all(&mut link.sock, &error_reply(code));
                    }
                }
                self.fail_link(
                    key,
                    StreamCode::RawSocketViolation,
                    &format!("client sent a bad handshake: {e}"),
                );
            }
            Err(end) => {
                let code = match &end {
                    LinkEnd::Protocol(_) | LinkEnd::ClientHandshake(_) => {
                        StreamCode::RawSocketViolation
                    }
                    _ => StreamCode::LocalAbort,
                };
                self.fail_link(key, code, &end.to_string());
            }
        }
    }

    /// A dialer whose client handshake is in: open its stream on the peer's connection, or wait
    /// for one (bounded by the link's deadline).
    fn open_or_wait(&mut self, key: usize) {
        let Some(link) = self.links.get(key) else {
            return;
        };
        let Some(&i) = self.peer_index.get(link.role.peer()) else {
            return;
        };
        if self.try_open(key, i) || self.refuse_for_draining_peer(key, i) {
            return;
        }
        if !self.peers[i].waiting.contains(&key) {
            self.peers[i].waiting.push_back(key);
        }
    }

    fn try_open(&mut self, key: usize, peer: usize) -> bool {
        let Some(cid) = self.peers[peer].active() else {
            return false;
        };
        let Some(link) = self.links.get_mut(key) else {
            return true;
        };
        if link.stream.is_some() {
            return true;
        }
        let Ok(pre) = preamble::encode(link.role.route()) else {
            return true;
        };
        let Some(sid) = self.driver.open_stream(cid) else {
            return false;
        };
        link.from_local.set_prefix(pre);
        link.stream = Some((cid, sid));
        // Open: from here the acceptor, next to the router, times the connect and the router's
        // handshake reply; loss on the path between the nodes must not close a healthy link.
        link.deadline = None;
        self.by_stream.insert((cid, sid), key);
        self.dirty.push(key);
        true
    }

    pub(super) fn open_waiting(&mut self, peer: usize) {
        while let Some(&key) = self.peers[peer].waiting.front() {
            if !self.try_open(key, peer) {
                return;
            }
            self.peers[peer].waiting.pop_front();
        }
    }

    /// Link deadlines, then the timers: route connect retries, accept retries, stall checks,
    /// redials, links waiting for a stream.
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((t, key))) = self.deadlines.peek() {
            if t > now {
                break;
            }
            self.deadlines.pop();
            let Some(link) = self.links.get(key) else {
                continue;
            };
            if link.deadline != Some(t) {
                continue;
            }
            let timeout = self.cfg.quic.connect_timeout;
            let why = match (&link.role, link.stream, link.client_ready()) {
                (Role::Dialer { peer, .. }, None, true) => {
                    format!("peer {peer} not reachable within {timeout:?}")
                }
                (Role::Dialer { .. }, None, false) => {
                    format!("no RawSocket handshake from the client within {timeout:?}")
                }
                // Cleared when the stream opens; kept for completeness.
                (Role::Dialer { peer, route }, Some(_), _) => format!(
                    "no handshake reply from route {route} on peer {peer} within {timeout:?}"
                ),
                (Role::Acceptor { route, .. }, _, _) if link.connecting => {
                    format!("route {route} target did not accept within {timeout:?}")
                }
                (Role::Acceptor { route, .. }, _, _) => {
                    format!("route {route} target did not answer the handshake within {timeout:?}")
                }
            };
            let code = if matches!(link.role, Role::Acceptor { .. }) {
                StreamCode::RouteUnreachable
            } else {
                StreamCode::LocalAbort
            };
            self.fail_link(key, code, &why);
        }
        self.retry_routes(now);
        if self.accept_retry_at.is_some_and(|t| t <= now) {
            self.accept_retry_at = None;
            if self.endpoints_open {
                for i in 0..self.cfg.links.len() {
                    self.accept_local(i, now);
                }
            }
        }
        if self.next_stall_check.is_some_and(|t| t <= now) {
            self.reset_stalled(now);
        }
        for i in 0..self.peers.len() {
            if self.peers[i].redial_at.is_some_and(|t| t <= now) && self.stopping.is_none() {
                self.dial(i, now);
            }
            if !self.peers[i].waiting.is_empty() {
                self.open_waiting(i);
            }
        }
    }
}
