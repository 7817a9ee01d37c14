//! Duplicate identities: on a shard, at most one established connection per (peer, direction,
//! the peer's shard), all from one process of the peer (with shards, a peer holds a connection
//! per pair of shards; the connection IDs name the peer's shard and process instance). A newcomer
//! replaces the incumbent only if the incumbent does not answer a liveness probe: a restarted
//! peer's old connection cannot answer, a second live process holding the same certificate can.
//! The policy and its codes are in `docs/PROTOCOL.md`.

use std::time::{Duration, Instant};

use super::{Conn, ConnId, Direction, QuicDriver, State, PROBE_MIN_WAIT};
use crate::quic::codes::ConnCode;

/// A newcomer waiting for the verdict on the connections it would replace.
pub(super) struct Probe {
    newcomer: ConnId,
    peer: String,
    direction: Direction,
    remote_shard: u8,
    remote_instance: u64,
    /// (connection, packets it had received when probed)
    incumbents: Vec<(ConnId, usize)>,
    pub(super) deadline: Instant,
    wait: Duration,
}

impl QuicDriver {
    pub(super) fn on_verified(
        &mut self,
        id: ConnId,
        peer: String,
        direction: Direction,
        now: Instant,
    ) {
        let (remote_shard, remote_instance) = self
            .conns
            .get(&id)
            .map_or((0, 0), |c| (c.remote_shard(), c.remote_instance()));
        // Checked first: even if the incumbent has just gone, the earlier newcomer gets the place.
        if let Some(p) = self.probes.iter().find(|p| {
            p.peer == peer
                && p.direction == direction
                && (p.remote_shard == remote_shard || p.remote_instance != remote_instance)
        }) {
            let old = p.incumbents.first().map(|(o, _)| *o);
            self.refuse_duplicate(id, old, "a liveness probe of its connection is under way");
            return;
        }
        let incumbents: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(k, c)| {
                **k != id
                    && c.state == State::Established
                    && c.direction == direction
                    && c.peer.as_deref() == Some(peer.as_str())
                    && c.competes_with(remote_shard, remote_instance)
                    && c.is_live()
            })
            .map(|(k, _)| *k)
            .collect();
        if incumbents.is_empty() {
            self.establish(id, now);
            return;
        }
        let mut wait = PROBE_MIN_WAIT;
        let mut probed = Vec::with_capacity(incumbents.len());
        for o in incumbents {
            let Some(c) = self.conns.get_mut(&o) else {
                continue;
            };
            c.quic.send_ack_eliciting().ok();
            c.data_queued = true;
            if let Some(path) = c.quic.path_stats().next() {
                wait = wait.max(path.rtt * 3);
            }
            probed.push((o, c.quic.stats().recv));
        }
        if let Some(c) = self.conns.get_mut(&id) {
            c.state = State::Probing;
        }
        self.probes.push(Probe {
            newcomer: id,
            peer,
            direction,
            remote_shard,
            remote_instance,
            incumbents: probed,
            deadline: now + wait,
            wait,
        });
    }

    /// Decides the probes that can be decided: an incumbent that received any packet since it
    /// was probed is alive (the newcomer is refused); when none did by the deadline, or all are
    /// gone, the newcomer replaces them.
    pub(super) fn check_probes(&mut self, now: Instant) {
        let mut i = 0;
        while let Some(p) = self.probes.get(i) {
            let waiting = self
                .conns
                .get(&p.newcomer)
                .is_some_and(|c| c.state == State::Probing && c.is_live());
            if !waiting {
                self.probes.swap_remove(i);
                continue;
            }
            let answered = p.incumbents.iter().find_map(|(o, recv)| {
                let c = self.conns.get(o)?;
                (c.is_live() && c.quic.stats().recv > *recv).then_some(*o)
            });
            let remaining: Vec<ConnId> = p
                .incumbents
                .iter()
                .map(|(o, _)| *o)
                .filter(|o| self.conns.get(o).is_some_and(Conn::is_live))
                .collect();
            if answered.is_none() && !remaining.is_empty() && now < p.deadline {
                i += 1;
                continue;
            }
            let p = self.probes.swap_remove(i);
            if answered.is_some() {
                self.refuse_duplicate(p.newcomer, answered, "it answered a liveness probe");
                continue;
            }
            let new_addr = self
                .conns
                .get(&p.newcomer)
                .map(|c| c.peer_addr.to_string())
                .unwrap_or_default();
            for o in remaining {
                let Some(c) = self.conns.get_mut(&o) else {
                    continue;
                };
                tracing::info!(
                    peer = %p.peer,
                    old = %c.peer_addr,
                    new = %new_addr,
                    "closing an older connection replaced by the new one: it did not answer a liveness probe within {:?}",
                    p.wait
                );
                self.stats.superseded += 1;
                c.quic
                    .close(
                        true,
                        ConnCode::Superseded as u64,
                        b"replaced by a newer connection",
                    )
                    .ok();
            }
            self.establish(p.newcomer, now);
        }
    }

    /// Closes `newcomer` with DuplicateIdentity: its peer is connected through `incumbent`.
    fn refuse_duplicate(&mut self, newcomer: ConnId, incumbent: Option<ConnId>, why: &str) {
        let old = incumbent
            .and_then(|o| self.conns.get(&o))
            .map(|c| c.peer_addr.to_string())
            .unwrap_or_else(|| "?".to_string());
        let Some(c) = self.conns.get_mut(&newcomer) else {
            return;
        };
        let peer = c.peer.as_deref().unwrap_or("?");
        tracing::warn!(
            peer = %peer,
            new = %c.peer_addr,
            connected = %old,
            "refused a second connection for peer {peer:?} from {}: {peer:?} is connected from {old} and {why} (duplicate identity: do two processes hold its certificate?)",
            c.peer_addr
        );
        self.stats.duplicates_refused += 1;
        c.state = State::Refused;
        c.quic
            .close(
                true,
                ConnCode::DuplicateIdentity as u64,
                b"this peer is already connected",
            )
            .ok();
    }
}
