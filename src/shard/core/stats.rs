//! The periodic stats line of `rlinkd run`.

use super::{LocalIo, ShardCore};
use crate::io::DatagramStats;

/// Links listed one per line under the summary; the rest are counted.
const LINKS_LISTED: usize = 20;

#[derive(Clone, Copy, Debug, Default)]
pub struct NodeStats {
    pub links_opened: u64,
    pub links_closed: u64,
    pub links_failed: u64,
    pub route_failures: u64,
    /// Unix route connects refused with EAGAIN (full backlog) and tried again.
    pub route_retries: u64,
    /// Accepts that hit the open-files (or memory) limit.
    pub accept_limited: u64,
    /// Links reset because their local socket stalled.
    pub links_stalled: u64,
}

pub(super) fn log<L: LocalIo>(node: &ShardCore<L>, io: &DatagramStats) {
    let up = node.peers.iter().filter(|p| p.active().is_some()).count();
    let d = node.driver.stats();
    let per = |n: u64, calls: u64| {
        if calls == 0 {
            0.0
        } else {
            n as f64 / calls as f64
        }
    };
    tracing::info!(
        "stats: peers {up}/{} up, links {} open ({} opened, {} closed, {} failed, {} stalled now, {} holding credit, {} reset stalled), route retries {} ({} waiting), accepts limited {}, udp tx {} datagrams in {} sends ({:.1}/send), rx {} datagrams in {} receives ({:.1}/receive), dropped datagrams: {} unparsable, {} unknown connection; incoming handshakes: {} retries sent, {} invalid tokens, {} refused at limits, {} timed out, {} failed, {} unknown peers, {} duplicate identities refused, {} connections superseded",
        node.peers.len(),
        node.links.len(),
        node.stats.links_opened,
        node.stats.links_closed,
        node.stats.links_failed,
        node.stalls.stalled(),
        node.stalls.holding(),
        node.stats.links_stalled,
        node.stats.route_retries,
        node.pending_routes.len(),
        node.stats.accept_limited,
        io.datagrams_sent,
        io.send_calls,
        per(io.datagrams_sent, io.send_calls),
        io.datagrams_received,
        io.recv_calls,
        per(io.datagrams_received, io.recv_calls),
        d.unparsable,
        d.unknown_connection,
        d.retries_sent,
        d.invalid_tokens,
        d.handshakes_refused,
        d.handshakes_timed_out,
        d.handshakes_failed,
        d.peers_refused,
        d.duplicates_refused,
        d.superseded,
    );
    for (_, link) in node.links.iter().take(LINKS_LISTED) {
        let c = link.counters();
        tracing::info!(
            "  link peer={} route={} realm={} to_router={}f/{}B to_client={}f/{}B",
            link.role.peer(),
            link.role.route(),
            link.realm()
                .map_or("-".to_string(), |r| crate::logsafe::escaped(r).to_string()),
            c.to_router_frames,
            c.to_router_bytes,
            c.to_client_frames,
            c.to_client_bytes
        );
    }
    if node.links.len() > LINKS_LISTED {
        tracing::info!("  ... and {} more links", node.links.len() - LINKS_LISTED);
    }
}
