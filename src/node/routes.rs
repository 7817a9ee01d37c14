//! Streams a peer opens: the preamble names a route, the route's target is connected (a Unix
//! target whose accept queue is full is tried again until `connect_timeout`), and the link starts.

use super::*;

/// First wait before a Unix route connect refused with EAGAIN (full backlog) is tried again;
/// it doubles up to [`ROUTE_RETRY_MAX`], until `connect_timeout`.
const ROUTE_RETRY_MIN: Duration = Duration::from_millis(5);
const ROUTE_RETRY_MAX: Duration = Duration::from_millis(200);

/// A stream whose route target (a Unix socket) refused the connect with EAGAIN because its
/// accept backlog was full: tried again until `connect_timeout`. The stream's bytes wait in
/// quiche meanwhile.
pub(super) struct PendingRoute {
    pub(super) peer: String,
    pub(super) route: String,
    pub(super) target: LocalAddr,
    pub(super) deadline: Instant,
    pub(super) retry_at: Instant,
    pub(super) delay: Duration,
}

impl Node {
    /// Data on a stream with no link: a peer opening an rlink (read its preamble), or leftovers
    /// of a link already gone (refuse them).
    pub(super) fn on_stream_start(&mut self, cid: ConnId, sid: u64, now: Instant) {
        let Some(c) = self.driver.conn_mut(cid) else {
            return;
        };
        let ours = sid.is_multiple_of(2) == (c.direction == Direction::Outgoing);
        if ours {
            c.quic
                .stream_shutdown(sid, quiche::Shutdown::Read, StreamCode::LocalAbort as u64)
                .ok();
            return;
        }
        let peer = c.peer.clone().unwrap_or_default();
        let buf = self.preambles.entry((cid, sid)).or_default();
        let mut chunk = [0u8; preamble::MAX_LEN];
        loop {
            let want = preamble::bytes_wanted(buf);
            if want == 0 {
                break;
            }
            match c.quic.stream_recv(sid, &mut chunk[..want]) {
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
                reset_stream(c, sid, StreamCode::BadPreamble);
                return;
            }
        };
        let Some(target) = self.routes.get(&route).cloned() else {
            // The name came from the peer's preamble: any UTF-8, escaped before it is logged.
            tracing::warn!(peer = %peer, route = %escaped(&route), "refused stream: no such route on this node");
            reset_stream(c, sid, StreamCode::UnknownRoute);
            return;
        };
        if self.stopping.is_some() {
            tracing::info!(peer = %peer, route = %escaped(&route), "refused stream: node stopping");
            reset_stream(c, sid, StreamCode::Shutdown);
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

    /// Connects a stream's route target and makes the link. A Unix target whose accept backlog
    /// is full refuses with EAGAIN: that is "not yet", tried again until `connect_timeout`.
    pub(super) fn connect_route(
        &mut self,
        cid: ConnId,
        sid: u64,
        mut p: PendingRoute,
        now: Instant,
    ) {
        let sock = match LocalStream::connect(&p.target) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && now < p.deadline => {
                p.retry_at = now + p.delay;
                p.delay = (p.delay * 2).min(ROUTE_RETRY_MAX);
                self.stats.route_retries += 1;
                self.pending_routes.insert((cid, sid), p);
                return;
            }
            Err(e) => {
                let why = if e.kind() == io::ErrorKind::WouldBlock {
                    format!(
                        "its accept queue stayed full for {:?}",
                        self.cfg.quic.connect_timeout
                    )
                } else {
                    e.to_string()
                };
                tracing::warn!(peer = %p.peer, route = %p.route, target = %p.target, "route target unreachable: {why}");
                if let Some(c) = self.driver.conn_mut(cid) {
                    reset_stream(c, sid, StreamCode::RouteUnreachable);
                }
                self.driver.note_data_queued(cid);
                self.stats.route_failures += 1;
                return;
            }
        };
        let connecting = matches!(p.target, LocalAddr::Tcp(_));
        let mut link = Link::new(
            Role::Acceptor {
                peer: p.peer,
                route: p.route,
            },
            sock,
            self.cfg.relay.buffer_size,
            self.cfg.relay.max_frame,
            now,
        );
        link.stream = Some((cid, sid));
        link.connecting = connecting;
        // The same deadline as the connect's: connect_timeout from the stream's arrival covers
        // the connect (and its retries) and the router's handshake reply.
        match self.insert_link(link, p.deadline) {
            Some(key) => {
                // The link's deadline (from insert_link) covers the TCP connect and the router's
                // handshake reply: a target that accepts and never answers is closed.
                self.by_stream.insert((cid, sid), key);
                self.stats.links_opened += 1;
                self.dirty.push(key);
            }
            None => {
                if let Some(c) = self.driver.conn_mut(cid) {
                    reset_stream(c, sid, StreamCode::RouteUnreachable);
                }
                self.driver.note_data_queued(cid);
            }
        }
    }

    /// Route connects whose retry time has come.
    pub(super) fn retry_routes(&mut self, now: Instant) {
        if self.pending_routes.is_empty() {
            return;
        }
        let due: Vec<(ConnId, u64)> = self
            .pending_routes
            .iter()
            .filter(|(_, p)| p.retry_at <= now)
            .map(|(k, _)| *k)
            .collect();
        for (cid, sid) in due {
            let Some(p) = self.pending_routes.remove(&(cid, sid)) else {
                continue;
            };
            if self.driver.conn(cid).is_none() {
                continue;
            }
            self.connect_route(cid, sid, p, now);
        }
    }
}
