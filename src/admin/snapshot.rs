//! What the admin endpoint reports: plain data, taken from each shard on request (a scrape asks
//! the shards; nothing is kept up to date on the hot path for it) and merged per node.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::io::syscalls::SyscallCounts;

/// One shard's figures at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShardSnapshot {
    pub shard: usize,
    pub peers: Vec<PeerSnapshot>,
    pub endpoints: Vec<EndpointSnapshot>,
    pub node: NodeCounters,
}

/// A configured peer as one shard sees it: the shard's connections to it and their totals.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeerSnapshot {
    pub name: String,
    /// Established connections to the peer on this shard (normally 0 or 1).
    pub connections: u64,
    /// Smoothed RTT of the shard's active connection.
    pub rtt: Option<Duration>,
    /// Congestion window of the shard's active connection, bytes.
    pub cwnd: Option<u64>,
    pub packets_sent: u64,
    pub packets_received: u64,
    pub packets_lost: u64,
    pub packets_retransmitted: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// Where links start: a link endpoint (`links[N]`, dialed by the local router) or a route (the
/// local router this node connects streams from peers to).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    Link { index: usize, listen: String },
    Route { name: String },
}

impl Endpoint {
    /// (kind, name) label values.
    pub fn labels(&self) -> (&'static str, String) {
        match self {
            Endpoint::Link { index, listen } => ("link", format!("links[{index}] {listen}")),
            Endpoint::Route { name } => ("route", name.clone()),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct EndpointSnapshot {
    pub endpoint: Endpoint,
    pub links_open: u64,
    pub links_opened: u64,
    /// Links closed, by the reason's short name (`clean`, `stalled`, `peer_lost`, ...).
    pub links_closed: BTreeMap<&'static str, u64>,
    /// Frames and their payload bytes (RawSocket headers not counted) towards the router (the one behind the
    /// route, or the peer's for a link endpoint) and towards the client.
    pub frames_to_router: u64,
    pub frames_to_client: u64,
    pub bytes_to_router: u64,
    pub bytes_to_client: u64,
}

impl EndpointSnapshot {
    pub fn new(endpoint: Endpoint) -> EndpointSnapshot {
        EndpointSnapshot {
            endpoint,
            links_open: 0,
            links_opened: 0,
            links_closed: BTreeMap::new(),
            frames_to_router: 0,
            frames_to_client: 0,
            bytes_to_router: 0,
            bytes_to_client: 0,
        }
    }
}

/// Node-wide counters of one shard.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeCounters {
    pub datagrams_sent: u64,
    pub send_calls: u64,
    pub datagrams_received: u64,
    pub receive_calls: u64,
    /// Datagrams dropped, by reason (`unparsable`, `unknown_connection`, ...).
    pub datagrams_dropped: BTreeMap<&'static str, u64>,
    /// Datagrams that reached the wrong shard and were handed to their owner.
    pub datagrams_handed_over: u64,
    /// Incoming connections refused, by reason (`unknown_peer`, `duplicate_identity`, ...).
    pub peers_refused: BTreeMap<&'static str, u64>,
    /// Incoming handshakes that failed or timed out.
    pub handshake_errors: u64,
    /// Initials without a token answered with a Retry (address validation).
    pub retries_sent: u64,
    /// Streams whose route connect waits for a retry (the router's backlog was full).
    pub routes_waiting: u64,
    /// Links whose local socket takes no byte while bytes wait for it.
    pub links_stalled: u64,
    /// Links holding flow-control credit (see `relay.stall_budget`).
    pub links_holding_credit: u64,
    /// Bytes of relay buffers this shard holds.
    pub buffer_bytes: u64,
    /// User-space copies of relayed bytes, by copy.
    pub copied: CopiedBytes,
    /// System calls the shard's backend made on the data path, by kind, since it started
    /// (`crate::io::syscalls`).
    pub syscalls: SyscallCounts,
}

/// Bytes copied in user space on the QUIC path, by copy, counted where each copy happens or by
/// the bytes that cross it (docs/ARCHITECTURE.md, "Copies per payload byte"). The kernel's copies
/// (socket buffers) and the AEAD pass (in place) are not copies here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopiedBytes {
    /// quiche writes queued stream bytes into packets: every byte the relay gave quiche (the
    /// relay's own copy into quiche is gone: it hands quiche shared blocks), plus the stream bytes
    /// quiche retransmitted.
    pub into_packets: u64,
    /// quiche copies a received STREAM frame's bytes out of the opened packet into its receive
    /// buffer: counted as the stream bytes the relay read (a duplicate frame quiche drops is not
    /// counted).
    pub out_of_packets: u64,
    /// `stream_recv_buf` copies received bytes from quiche's buffer into the relay's block.
    pub out_of_quiche: u64,
    /// The relay moves a block's unsent rest (a partial frame header, bytes a slow sink did not
    /// take, a dropped PING cut out) within or into a new block.
    pub compaction: u64,
    /// Datagrams that reached the wrong shard, copied into a message to their owner.
    pub handover: u64,
}

impl CopiedBytes {
    /// `(label, bytes)` for each copy, in path order.
    pub fn by_copy(&self) -> [(&'static str, u64); 5] {
        [
            ("into_packets", self.into_packets),
            ("out_of_packets", self.out_of_packets),
            ("out_of_quiche", self.out_of_quiche),
            ("compaction", self.compaction),
            ("handover", self.handover),
        ]
    }

    /// All copies' bytes.
    pub fn total(&self) -> u64 {
        self.by_copy().iter().map(|(_, n)| n).sum()
    }

    pub fn add(&mut self, o: &CopiedBytes) {
        self.into_packets += o.into_packets;
        self.out_of_packets += o.out_of_packets;
        self.out_of_quiche += o.out_of_quiche;
        self.compaction += o.compaction;
        self.handover += o.handover;
    }
}

/// Figures of the whole node: every shard's snapshot, in shard order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeSnapshot {
    pub node: String,
    pub shards: Vec<ShardSnapshot>,
    /// True once a drain (SIGTERM) started.
    pub draining: bool,
}

impl NodeSnapshot {
    /// Per-node sums of the shards' node counters.
    pub fn totals(&self) -> NodeCounters {
        let mut t = NodeCounters::default();
        for s in &self.shards {
            let n = &s.node;
            t.datagrams_sent += n.datagrams_sent;
            t.send_calls += n.send_calls;
            t.datagrams_received += n.datagrams_received;
            t.receive_calls += n.receive_calls;
            t.datagrams_handed_over += n.datagrams_handed_over;
            t.handshake_errors += n.handshake_errors;
            t.retries_sent += n.retries_sent;
            t.routes_waiting += n.routes_waiting;
            t.links_stalled += n.links_stalled;
            t.links_holding_credit += n.links_holding_credit;
            t.buffer_bytes += n.buffer_bytes;
            t.copied.add(&n.copied);
            add_all(&mut t.datagrams_dropped, &n.datagrams_dropped);
            add_all(&mut t.peers_refused, &n.peers_refused);
            t.syscalls.add(&n.syscalls);
        }
        t
    }

    /// Links open on the node, all endpoints and shards.
    pub fn links_open(&self) -> u64 {
        self.shards
            .iter()
            .flat_map(|s| &s.endpoints)
            .map(|e| e.links_open)
            .sum()
    }

    /// Peers with at least one established connection on some shard.
    pub fn peers_up(&self) -> BTreeMap<&str, bool> {
        let mut up = BTreeMap::new();
        for p in self.shards.iter().flat_map(|s| &s.peers) {
            *up.entry(p.name.as_str()).or_insert(false) |= p.connections > 0;
        }
        up
    }
}

fn add_all(into: &mut BTreeMap<&'static str, u64>, from: &BTreeMap<&'static str, u64>) {
    for (k, v) in from {
        *into.entry(k).or_insert(0) += v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::syscalls::Syscall;

    #[test]
    fn totals_add_the_shards_and_peers_are_up_when_any_shard_holds_a_connection() {
        let mut a = ShardSnapshot::default();
        a.node.datagrams_sent = 3;
        a.node.datagrams_dropped.insert("unparsable", 1);
        a.node.syscalls.set(Syscall::EpollWait, 10);
        a.peers.push(PeerSnapshot {
            name: "b".into(),
            connections: 0,
            ..Default::default()
        });
        let mut b = ShardSnapshot {
            shard: 1,
            ..Default::default()
        };
        b.node.datagrams_sent = 4;
        b.node.datagrams_dropped.insert("unparsable", 2);
        b.node.datagrams_dropped.insert("unknown_connection", 5);
        b.node.syscalls.set(Syscall::EpollWait, 2);
        b.node.syscalls.set(Syscall::IoUringEnter, 5);
        b.peers.push(PeerSnapshot {
            name: "b".into(),
            connections: 1,
            ..Default::default()
        });
        let mut e = EndpointSnapshot::new(Endpoint::Route { name: "r".into() });
        e.links_open = 7;
        b.endpoints.push(e);
        let n = NodeSnapshot {
            node: "a".into(),
            shards: vec![a, b],
            draining: false,
        };
        let t = n.totals();
        assert_eq!(t.datagrams_sent, 7);
        assert_eq!(t.syscalls.get(Syscall::EpollWait), 12);
        assert_eq!(t.syscalls.get(Syscall::IoUringEnter), 5);
        assert_eq!(t.syscalls.total(), 17);
        assert_eq!(t.datagrams_dropped["unparsable"], 3);
        assert_eq!(t.datagrams_dropped["unknown_connection"], 5);
        assert_eq!(n.links_open(), 7);
        assert!(n.peers_up()["b"]);
    }
}
