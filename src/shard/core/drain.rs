//! Stopping a node: SIGTERM/SIGINT drain the links (nothing accepted is lost), a second signal
//! or `drain_timeout` ends them; SIGHUP and SIGUSR1 never stop it. See docs/PROTOCOL.md, "Drain".
//!
//! A draining node tells each peer on every connection (the DRAINING notice of the control
//! stream, `quic::control`), so the peer opens no new link towards it and closes at once the
//! links that would wait for it: their routers redial (elsewhere, or here once restarted)
//! instead of timing out.

use super::*;
use crate::quic::codes::{ConnCode, StreamCode};
use crate::quic::control::Notice;

/// A stopping node's phase.
#[derive(Clone, Copy, Debug)]
pub(super) enum Stopping {
    /// Listeners closed; links deliver what was accepted. Links left at `deadline` are reset.
    Draining { deadline: Instant },
    /// Connections closed; the loop ends when their CONNECTION_CLOSE has left or at `deadline`.
    Closing { deadline: Instant },
}

impl<L: LocalIo> ShardCore<L> {
    /// SIGTERM or SIGINT. The first one drains ([`ShardCore::begin_drain`]); a second one stops
    /// at once ([`ShardCore::stop_now`]).
    pub fn stop(&mut self, now: Instant) {
        match self.stopping {
            None => self.begin_drain(now),
            Some(Stopping::Draining { .. }) => self.stop_now(now),
            Some(Stopping::Closing { .. }) => {}
        }
    }

    /// Drains: no new links, every link delivers what this node has read from either side,
    /// ends cleanly, and the shard stops within `drain_timeout`.
    pub fn begin_drain(&mut self, now: Instant) {
        if self.stopping.is_some() {
            return;
        }
        let deadline = now + self.cfg.drain_timeout;
        tracing::info!(
            node = %self.cfg.node,
            links = self.links.len(),
            "draining: no new links; open links deliver what was accepted (at most {:?}, a second signal stops at once)",
            self.cfg.drain_timeout
        );
        self.stopping = Some(Stopping::Draining { deadline });
        for cid in self.driver.conn_ids() {
            self.send_drain_notice(cid);
        }
        self.drain_links();
    }

    /// Tells the peer of `conn` that this node is draining (when the peer's build understands
    /// it: see `QuicDriver::send_notice`).
    pub(super) fn send_drain_notice(&mut self, conn: ConnId) {
        if self.driver.send_notice(conn, Notice::Draining) {
            tracing::debug!(conn, "drain announced to the peer");
        }
    }

    /// Data on the peer's control stream `sid` of `conn`.
    pub(super) fn on_control_stream(&mut self, cid: ConnId, sid: u64) {
        let notice = match self.driver.read_notice(cid, sid) {
            None => return,
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                // A newer peer's notice, or junk: ignored either way, links are not affected.
                tracing::debug!(conn = cid, stream = sid, "control stream ignored: {e}");
                return;
            }
        };
        let Notice::Draining = notice;
        let Some(peer) = self.driver.conn(cid).and_then(|c| c.peer.clone()) else {
            return;
        };
        let Some(&i) = self.peer_index.get(&peer) else {
            return;
        };
        let p = &mut self.peers[i];
        if !p.draining.contains(&cid) {
            p.draining.push(cid);
        }
        p.stopping = true;
        let usable = p.active().is_some();
        tracing::info!(peer = %peer, conn = cid, other_connection = usable, "peer announced its drain: no new links on this connection; its open links run to their end");
        if !usable {
            let waiting: Vec<usize> = p.waiting.iter().copied().collect();
            for key in waiting {
                self.fail_link(key, StreamCode::Shutdown, &peer_draining(&peer));
            }
        }
    }

    /// A link about to wait for a connection to `peer` (index): closed at once when the peer
    /// has announced its drain and no connection is left to use (true).
    pub(super) fn refuse_for_draining_peer(&mut self, key: usize, peer: usize) -> bool {
        let p = &self.peers[peer];
        if !p.stopping || p.active().is_some() {
            return false;
        }
        let why = peer_draining(&p.name);
        self.fail_link(key, StreamCode::Shutdown, &why);
        true
    }

    /// Stops at once: resets every link and closes every connection (a second stop signal, or a
    /// stop without a drain).
    pub fn stop_now(&mut self, now: Instant) {
        if matches!(self.stopping, Some(Stopping::Closing { .. })) {
            return;
        }
        if self.stopping.is_some() {
            tracing::info!(node = %self.cfg.node, "second signal: stopping now");
            self.close_all(now, "node stopping (second signal)");
        } else {
            tracing::info!(node = %self.cfg.node, "stopping now");
            self.close_all(now, "node stopping");
        }
    }

    /// Closes the endpoints, stops redialing, refuses the streams waiting for a route connect,
    /// closes the links that have no stream yet and marks the others draining.
    fn drain_links(&mut self) {
        if std::mem::take(&mut self.endpoints_open) {
            // Listeners close and their socket files go (the backend's job).
            self.io.close_endpoints();
        }
        for p in &mut self.peers {
            p.redial_at = None;
        }
        for ((cid, sid), p) in std::mem::take(&mut self.pending_routes) {
            tracing::info!(peer = %p.peer, route = %p.route, "link refused: node stopping");
            self.driver.reset_stream(cid, sid, StreamCode::Shutdown);
        }
        let keys: Vec<usize> = self.links.iter().map(|(k, _)| k).collect();
        for key in keys {
            let Some(link) = self.links.get_mut(key) else {
                continue;
            };
            if link.stream.is_none() {
                // Nothing crossed yet: the router redials (another node, or this one restarted).
                self.fail_link(
                    key,
                    StreamCode::Shutdown,
                    "node stopping before the link opened",
                );
            } else {
                link.begin_drain();
                self.dirty.push(key);
            }
        }
    }

    /// Moves a stopping node on; true when the loop may end.
    pub(super) fn advance_stop(&mut self, now: Instant) -> bool {
        match self.stopping {
            None => false,
            Some(Stopping::Draining { deadline }) => {
                self.prune_finished_streams();
                if self.links.is_empty() && self.finished_streams.is_empty() {
                    tracing::info!(node = %self.cfg.node, "drained: every link delivered what was accepted");
                    self.close_all(now, "node stopping");
                } else if now >= deadline {
                    tracing::warn!(
                        node = %self.cfg.node,
                        links = self.links.len(),
                        "drain_timeout reached: resetting the links left"
                    );
                    self.close_all(now, "node stopping: drain_timeout reached");
                } else {
                    return false;
                }
                // Closing now. Without a connection there is no close to send and nothing
                // would wake the loop before `SHUTDOWN_GRACE` ends: stop at once.
                self.driver.conn_ids().is_empty()
            }
            Some(Stopping::Closing { deadline }) => {
                self.driver.conn_ids().is_empty() || now >= deadline
            }
        }
    }

    /// Resets every link, closes every connection, and gives the closes `SHUTDOWN_GRACE` to leave.
    pub(super) fn close_all(&mut self, now: Instant, why: &str) {
        let keys: Vec<usize> = self.links.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.fail_link(key, StreamCode::Shutdown, why);
        }
        for cid in self.driver.conn_ids() {
            self.driver.close(cid, ConnCode::Shutdown, "node stopping");
        }
        if self.stopping.is_none() {
            // Stopped without a drain ([`ShardCore::stop_now`] first): keep the endpoints'
            // clean-up in one place.
            self.drain_links();
        }
        self.stopping = Some(Stopping::Closing {
            deadline: now + SHUTDOWN_GRACE,
        });
    }

    /// Forgets finished streams whose last bytes the peer has acknowledged: quiche collects a
    /// stream once both halves are complete, and then no longer knows its ID.
    pub(super) fn prune_finished_streams(&mut self) {
        let driver = &mut self.driver;
        self.finished_streams
            .retain(|(cid, sid)| driver.stream_in_use(*cid, *sid));
    }
}

fn peer_draining(peer: &str) -> String {
    format!("peer {peer} is draining (it announced its stop): link closed at once so the router can redial")
}
