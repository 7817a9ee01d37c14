//! How links end: cleanly (both halves done), reset with a code, or with their connection; and
//! the stall rules that reset links holding the connection's credit (see `stall.rs`).

use super::*;
use crate::logsafe::escaped;
use crate::quic::codes::StreamCode;
use crate::relay::link::Role;
use stall::StallVerdict;

/// The link-closed event: fields (peer, route, realm, shard, frames and bytes each way, reason),
/// so text and JSON logs carry the same facts.
fn log_link_end<S: LocalConn>(link: &Link<S>, shard: u8, why: &str, failed: bool) {
    let c = link.counters();
    // The realm is the client's (from its HELLO): escaped, so it cannot forge a log line.
    let realm = link
        .realm()
        .map_or("-".to_string(), |r| escaped(r).to_string());
    let secs = (link.opened.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    macro_rules! event {
        ($level:ident, $msg:literal) => {
            tracing::$level!(
                peer = %link.role.peer(),
                route = %link.role.route(),
                realm = %realm,
                shard,
                to_router_frames = c.to_router_frames,
                to_router_bytes = c.to_router_bytes,
                to_client_frames = c.to_client_frames,
                to_client_bytes = c.to_client_bytes,
                secs,
                dropped_after_stop = link.discarded,
                reason = %why,
                $msg
            )
        };
    }
    match (&link.role, failed) {
        (Role::Dialer { .. }, false) => event!(info, "link out closed"),
        (Role::Dialer { .. }, true) => event!(warn, "link out failed"),
        (Role::Acceptor { .. }, false) => event!(info, "link in closed"),
        (Role::Acceptor { .. }, true) => event!(warn, "link in failed"),
    }
}

impl<L: LocalIo> ShardCore<L> {
    /// The connection's credit a link holds: the bytes for its local socket still unread in
    /// quiche. Its relay buffer's bytes are not counted: reading them from quiche gave their
    /// credit back, and `relay.buffer_size` bounds them per link (when they were counted, a slow
    /// reader behind a 16 MiB buffer alone went over a shard's share of the default budget).
    pub(super) fn held_bytes(&self, key: usize) -> u64 {
        self.links
            .get(key)
            .and_then(|link| link.stream)
            .map_or(0, |(cid, sid)| {
                self.driver.stream_readable_len(cid, sid) as u64
            })
    }

    /// Resets the links the stall rules say are due (see `stall.rs`).
    pub(super) fn reset_stalled(&mut self, now: Instant) {
        self.next_stall_check = None;
        self.stalls.expire(now);
        for key in self.stalls.stalled_links() {
            if let Some(link) = self.links.get_mut(key) {
                if link.recheck_stall(now) {
                    self.stalls
                        .update(key, link.stalled_since(), link.holding_since(), now);
                }
            }
        }
        let due = self.stalls.due(now, |k| self.held_bytes(k));
        for (key, verdict) in due {
            let Some(link) = self.links.get(key) else {
                self.stalls.remove(key);
                continue;
            };
            let age =
                |t: Option<Instant>| t.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            let why = match verdict {
                StallVerdict::Timeout => format!(
                    "stalled: the local socket took no byte for {:.1?} (relay.stall_timeout)",
                    age(link.stalled_since())
                ),
                StallVerdict::OverBudget => format!(
                    "stalled: {} bytes held unread for {:.1?} while the {} links holding credit exceed relay.stall_budget",
                    self.held_bytes(key),
                    age(self.stalls.holding_since(key)),
                    self.stalls.holding()
                ),
            };
            self.stats.links_stalled += 1;
            self.fail_link(key, StreamCode::Stalled, &why);
        }
        if !self.stalls.is_empty() {
            self.next_stall_check = Some(now + stall::CHECK_EVERY);
        }
    }

    pub(super) fn remove_link(&mut self, key: usize) -> Option<Link<L::Conn>> {
        let mut link = self.links.try_remove(key)?;
        self.stalls.remove(key);
        self.io.unwatch(&mut link.sock);
        if let Some(s) = link.stream {
            self.by_stream.remove(&s);
        }
        if let Some(i) = self.peer_index.get(link.role.peer()) {
            self.peers[*i].waiting.retain(|k| *k != key);
        }
        Some(link)
    }

    pub(super) fn finish_link(&mut self, key: usize) {
        if let Some(link) = self.remove_link(key) {
            self.stats.links_closed += 1;
            if let Some(s) = link.stream {
                self.finished_streams.push(s);
                if self.finished_streams.len() >= self.prune_finished_at {
                    // Most are collected within a round trip: pruning now and then keeps the
                    // list short at a constant cost per link.
                    self.prune_finished_streams();
                    self.prune_finished_at = (self.finished_streams.len() * 2).max(1024);
                }
            }
            self.totals.closed(&link, "clean");
            let shard = self.driver.shard();
            match link.peer_ending() {
                Some(why) => log_link_end(&link, shard, &why, false),
                None => log_link_end(&link, shard, "closed by both ends", false),
            }
        }
    }

    /// Ends a link abnormally: resets its stream with `code` and closes the local connection.
    pub(super) fn fail_link(&mut self, key: usize, code: StreamCode, why: &str) {
        let Some(link) = self.remove_link(key) else {
            return;
        };
        self.stats.links_closed += 1;
        self.stats.links_failed += 1;
        if let Some((cid, sid)) = link.stream {
            self.driver.reset_stream(cid, sid, code);
            self.driver.note_data_queued(cid);
        }
        self.totals.closed(&link, code.metric_name());
        log_link_end(&link, self.driver.shard(), why, true);
    }

    /// The connection under a link is gone: close the local side so the router reconnects.
    pub(super) fn close_link_quietly(&mut self, key: usize) {
        if let Some(link) = self.remove_link(key) {
            self.stats.links_closed += 1;
            self.totals.closed(&link, "peer_lost");
            log_link_end(&link, self.driver.shard(), "peer connection lost", false);
        }
    }
}
