//! Streams a peer opens: the preamble names a route, the route's target is connected (a Unix
//! target whose accept queue is full is tried again until `connect_timeout`), and the link starts.

use super::*;
use crate::quic::codes::StreamCode;
use crate::relay::link::Role;

/// First wait before a Unix route connect refused with EAGAIN (full backlog) is tried again;
/// it doubles up to [`ROUTE_RETRY_MAX`], until `connect_timeout`.
pub(super) const ROUTE_RETRY_MIN: Duration = Duration::from_millis(5);
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

impl<L: LocalIo> ShardCore<L> {
    /// Connects a stream's route target and makes the link. A Unix target whose accept backlog
    /// is full refuses with EAGAIN: that is "not yet", tried again until `connect_timeout`.
    pub(super) fn connect_route(
        &mut self,
        cid: ConnId,
        sid: u64,
        mut p: PendingRoute,
        now: Instant,
    ) {
        let sock = match self.io.connect(&p.target) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && now < p.deadline => {
                p.retry_at = now + p.delay;
                p.delay = (p.delay * 2).min(ROUTE_RETRY_MAX);
                self.stats.route_retries += 1;
                self.pending_routes.insert((cid, sid), p);
                return;
            }
            Err(e) => {
                let why = if e.kind() == std::io::ErrorKind::WouldBlock {
                    format!(
                        "its accept queue stayed full for {:?}",
                        self.cfg.quic.connect_timeout
                    )
                } else {
                    e.to_string()
                };
                tracing::warn!(peer = %p.peer, route = %p.route, target = %p.target, "route target unreachable: {why}");
                self.driver
                    .reset_stream(cid, sid, StreamCode::RouteUnreachable);
                self.driver.note_data_queued(cid);
                self.stats.route_failures += 1;
                self.totals
                    .refused(&p.route, StreamCode::RouteUnreachable.metric_name());
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
                self.driver
                    .reset_stream(cid, sid, StreamCode::RouteUnreachable);
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
