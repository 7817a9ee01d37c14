//! Stopping a node: SIGTERM/SIGINT drain the links (nothing accepted is lost), a second signal
//! or `drain_timeout` ends them; SIGHUP and SIGUSR1 never stop it. See docs/PROTOCOL.md, "Drain".

use super::*;

/// A stopping node's phase.
#[derive(Clone, Copy, Debug)]
pub(super) enum Stopping {
    /// Listeners closed; links deliver what was accepted. Links left at `deadline` are reset.
    Draining { deadline: Instant },
    /// Connections closed; the loop ends when their CONNECTION_CLOSE has left or at `deadline`.
    Closing { deadline: Instant },
}

impl Node {
    pub(super) fn on_signal(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            match sig {
                SIGHUP => tracing::warn!(
                    signal = "SIGHUP",
                    "reload is not supported yet: the configuration in force is unchanged"
                ),
                SIGUSR1 => self.log_stats(),
                _ => self.on_stop_signal(Instant::now()),
            }
        }
    }

    /// SIGTERM or SIGINT. The first one drains: no new links, every link delivers what this node
    /// has read from either side, ends cleanly, and the node stops within `drain_timeout`. A
    /// second one stops at once.
    pub(super) fn on_stop_signal(&mut self, now: Instant) {
        match self.stopping {
            None => {
                let deadline = now + self.cfg.drain_timeout;
                tracing::info!(
                    node = %self.cfg.node,
                    links = self.links.len(),
                    "draining: no new links; open links deliver what was accepted (at most {:?}, a second signal stops at once)",
                    self.cfg.drain_timeout
                );
                self.stopping = Some(Stopping::Draining { deadline });
                self.begin_drain();
            }
            Some(Stopping::Draining { .. }) => {
                tracing::info!(node = %self.cfg.node, "second signal: stopping now");
                self.close_all(now, "node stopping (second signal)");
            }
            Some(Stopping::Closing { .. }) => {}
        }
    }

    pub(super) fn begin_drain(&mut self) {
        for (mut l, i) in self.listeners.drain(..) {
            self.poll.registry().deregister(&mut l).ok();
            if let LocalAddr::Unix(path) = &self.cfg.links[i].listen {
                std::fs::remove_file(path).ok();
            }
        }
        for p in &mut self.peers {
            p.redial_at = None;
        }
        for ((cid, sid), p) in std::mem::take(&mut self.pending_routes) {
            tracing::info!(peer = %p.peer, route = %p.route, "link refused: node stopping");
            if let Some(c) = self.driver.conn_mut(cid) {
                reset_stream(c, sid, StreamCode::Shutdown);
            }
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
                link.draining = true;
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
                }
                false
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
            // Stopped without a drain (not reachable from signals today, but keep the listeners'
            // clean-up in one place).
            self.begin_drain();
        }
        self.stopping = Some(Stopping::Closing {
            deadline: now + SHUTDOWN_GRACE,
        });
    }

    /// Forgets finished streams whose last bytes the peer has acknowledged: quiche collects a
    /// stream once both halves are complete, and then no longer knows its ID.
    pub(super) fn prune_finished_streams(&mut self) {
        let driver = &mut self.driver;
        self.finished_streams.retain(|(cid, sid)| {
            // Ok: the stream still exists. An error means collected (InvalidStreamState) or
            // stopped by the peer: nothing left to deliver either way.
            driver
                .conn_mut(*cid)
                .is_some_and(|c| !c.quic.is_closed() && c.quic.stream_capacity(*sid).is_ok())
        });
    }
}
