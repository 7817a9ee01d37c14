//! The connection-ID layout: every connection ID rlinkd issues names the shard that owns the
//! connection, so the kernel (the steering program in `crate::io::steer`) and, where that is
//! missing, user space can deliver each datagram to its owner without a table lookup.
//!
//! ```text
//!  CID byte   0         1 .. 9                 9 .. 20
//!           +---------+----------------------+----------------------------+
//!           | shard   | instance (8 bytes)   | random: 11 bytes (CSPRNG)  |
//!           +---------+----------------------+----------------------------+
//! ```
//!
//! - Every CID rlinkd issues is [`CID_LEN`] (20) bytes: quiche parses short headers with the
//!   length the driver passes to `Header::from_slice`, so all of a node's CIDs have one length.
//! - Byte 0 is the issuing shard's index; a node has at most [`MAX_SHARDS`] shards. The receiving
//!   node maps the byte to a shard with `byte % shards` ([`ShardCount::owner`]), so a byte
//!   written by a node with more shards than the receiver still names a shard.
//! - Bytes 1..9 are the issuing process's *instance*: a random number drawn once per process,
//!   the same on all its shards. It tells a peer's other shards (same instance: each keeps its
//!   connection) from another process holding the same certificate (another instance: a
//!   restarted peer, whose old connections go once they fail a liveness probe, or a second live
//!   process, which is refused). It makes a node's connections linkable on the wire, which the
//!   fixed UDP 4-tuple between two nodes does anyway.
//! - The rest is random, so CIDs stay unpredictable (RFC 9000 section 7.2 asks this of the
//!   dialer's first destination CID) and collisions are negligible.
//!
//! Where the shard byte sits in a datagram (RFC 8999, the version-independent invariants, so it
//! holds for every QUIC version and for Version Negotiation too):
//!
//! | header | first byte | shard byte at | checked |
//! |---|---|---|---|
//! | short (1-RTT) | `0x80` clear | [`SHORT_DCID_OFFSET`] (1) | datagram is at least 2 bytes |
//! | long (Initial, Handshake, 0-RTT, Retry) | `0x80` set | [`LONG_DCID_OFFSET`] (6) | at least 7 bytes, DCID length (byte 5) not 0 |
//!
//! [`dcid_shard_byte`] is that rule as a pure function; the steering program is the same rule in
//! classic BPF, and a test runs both over the same bytes. A datagram the rule cannot read
//! (too short, empty DCID) has no owner: the kernel spreads those by its 4-tuple hash and the
//! shard that receives one handles it (quiche finds it unparsable and it is counted).
//!
//! # Who chooses which CID, and what the driver must call
//!
//! One QUIC connection per (peer, shard): the dialing node's shard `i` dials the accepting node's
//! shard `i mod n`. The dialer does not know the acceptor's `n`; it writes `i` into the DCID and
//! the acceptor's `% n` does the rest.
//!
//! - **Dialer** (shard `i`): [`DialCids::new(i)`](DialCids::new), then
//!   `quiche::connect_with_dcid(Some(peer), &cids.scid.to_connection_id(),
//!   &cids.dcid.to_connection_id(), local, peer_addr, &mut config)` (quiche feature
//!   `custom-client-dcid`) instead of `quiche::connect`. The DCID lands the Initial on the
//!   acceptor's shard `i mod n`; the SCID carries `i`, so every packet the acceptor sends back
//!   (short headers included) lands on the dialer's shard `i`. Register `cids.scid` in the
//!   driver's CID table as today.
//! - **Acceptor** (shard `s`), Retry: the Retry's new SCID must be
//!   [`ShardCid::random(s)`](ShardCid::random) (today `random_cid()` in `send_retry`): the
//!   dialer's second Initial is addressed to it and must land on `s` again.
//! - **Acceptor**, accept: the driver already accepts with `scid = hdr.dcid` (the Retry SCID it
//!   issued and the token binds), which carries `s` by the rule above; nothing else changes.
//! - **Additional CIDs**: the driver issues none today (no `Connection::new_scid` call). Any
//!   later `new_scid` (NEW_CONNECTION_ID) must pass a [`ShardCid::random`] of the owning shard,
//!   or the peer's packets to that CID are steered elsewhere and handed over.
//! - **Receiving**: a datagram for which [`owner`] names another shard goes to that shard
//!   (hand-off, counted); `None` or this shard: feed it to the driver. GRO may coalesce
//!   datagrams of *different* connections (all of a node pair's connections share one UDP
//!   4-tuple, since every shard sends from the shared port), and the kernel steers a coalesced
//!   buffer by its first datagram: check the owner per segment, not per receive.
//! - **The dialer's shard at the acceptor**: [`cid_shard`] of the connection's
//!   `destination_id()` (the dialer's SCID) is the dialer's shard `i`. Two dialer shards
//!   `i != j` with `i = j mod n` meet on one acceptor shard as two connections from one peer
//!   in one direction: the duplicate-identity rule must key on (peer, dialer shard), not peer.

use rand::{CryptoRng, RngCore};

/// Length of every connection ID rlinkd issues (quiche's maximum, RFC 9000's too).
pub const CID_LEN: usize = quiche::MAX_CONN_ID_LEN;
/// Index of the shard byte inside a connection ID.
pub const SHARD_BYTE: usize = 0;
/// Where the process instance starts (8 bytes, big-endian).
pub const INSTANCE_OFFSET: usize = 1;
/// Most shards a node can have: one shard byte.
pub const MAX_SHARDS: usize = 256;
/// Offset of the destination CID in a short-header datagram (after the first byte).
pub const SHORT_DCID_OFFSET: usize = 1;
/// Offset of the destination CID length byte in a long-header datagram (after the first byte
/// and the 4-byte version).
pub const LONG_DCID_LEN_OFFSET: usize = 5;
/// Offset of the destination CID in a long-header datagram.
pub const LONG_DCID_OFFSET: usize = 6;
/// The header form bit of the first byte: set for long headers.
pub const LONG_HEADER_BIT: u8 = 0x80;

/// How many shards a node runs: 1 ..= [`MAX_SHARDS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShardCount(u16);

impl ShardCount {
    pub const ONE: ShardCount = ShardCount(1);

    /// `None` outside 1 ..= [`MAX_SHARDS`].
    pub fn new(n: usize) -> Option<ShardCount> {
        if (1..=MAX_SHARDS).contains(&n) {
            u16::try_from(n).ok().map(ShardCount)
        } else {
            None
        }
    }

    pub fn get(self) -> usize {
        usize::from(self.0)
    }

    /// The shard a shard byte names on a node with this many shards.
    pub fn owner(self, shard_byte: u8) -> usize {
        usize::from(shard_byte) % self.get()
    }
}

/// A connection ID in rlinkd's layout: shard byte, then random bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardCid([u8; CID_LEN]);

impl ShardCid {
    /// A fresh CID for `shard` with the instance and the random part drawn from `rng`.
    pub fn generate<R: RngCore + CryptoRng>(shard: u8, rng: &mut R) -> ShardCid {
        let mut b = [0u8; CID_LEN];
        rng.fill_bytes(&mut b);
        b[SHARD_BYTE] = shard;
        ShardCid(b)
    }

    /// A fresh CID for `shard` from the thread's CSPRNG (a random instance: for tests).
    pub fn random(shard: u8) -> ShardCid {
        Self::generate(shard, &mut rand::thread_rng())
    }

    /// A fresh CID for `shard` of process `instance`.
    pub fn issue(shard: u8, instance: u64) -> ShardCid {
        let mut c = Self::random(shard);
        c.0[INSTANCE_OFFSET..INSTANCE_OFFSET + 8].copy_from_slice(&instance.to_be_bytes());
        c
    }

    /// The shard byte: the issuing shard's index.
    pub fn shard(&self) -> u8 {
        self.0[SHARD_BYTE]
    }

    pub fn as_bytes(&self) -> &[u8; CID_LEN] {
        &self.0
    }

    pub fn to_connection_id(&self) -> quiche::ConnectionId<'static> {
        quiche::ConnectionId::from_vec(self.0.to_vec())
    }
}

impl std::fmt::Debug for ShardCid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShardCid(shard {}, ", self.shard())?;
        for b in &self.0[SHARD_BYTE + 1..] {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// The connection IDs a dialer starts a connection with: both carry the dialing shard's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DialCids {
    /// The dialer's own CID: the acceptor's packets come back to the dialing shard.
    pub scid: ShardCid,
    /// The Initial's destination CID: steers it to the acceptor's shard `dialer_shard mod n`.
    pub dcid: ShardCid,
}

impl DialCids {
    pub fn new(dialer_shard: u8) -> DialCids {
        DialCids {
            scid: ShardCid::random(dialer_shard),
            dcid: ShardCid::random(dialer_shard),
        }
    }

    /// The dialer's CIDs as a process `instance` issues them (the DCID is the acceptor's to
    /// replace, so only the SCID carries the instance).
    pub fn issue(dialer_shard: u8, instance: u64) -> DialCids {
        DialCids {
            scid: ShardCid::issue(dialer_shard, instance),
            dcid: ShardCid::random(dialer_shard),
        }
    }
}

/// The process instance of a connection ID in rlinkd's layout (`None` when too short).
pub fn cid_instance(cid: &[u8]) -> Option<u64> {
    let b: [u8; 8] = cid
        .get(INSTANCE_OFFSET..INSTANCE_OFFSET + 8)?
        .try_into()
        .ok()?;
    Some(u64::from_be_bytes(b))
}

/// The shard byte of a connection ID in rlinkd's layout (`None` for an empty one). Used on the
/// peer's CID (quiche's `destination_id()`) to learn which of the peer's shards owns it.
pub fn cid_shard(cid: &[u8]) -> Option<u8> {
    cid.get(SHARD_BYTE).copied()
}

/// The shard byte of a datagram's destination CID, read where the steering program reads it
/// (see the table in the module doc). `None` when the datagram is too short or a long header
/// has an empty DCID. Never panics, whatever the bytes.
pub fn dcid_shard_byte(datagram: &[u8]) -> Option<u8> {
    let first = *datagram.first()?;
    if first & LONG_HEADER_BIT == 0 {
        return datagram.get(SHORT_DCID_OFFSET + SHARD_BYTE).copied();
    }
    // The DCID must reach the shard byte, or the byte read would be the SCID's length.
    let dcid_len = *datagram.get(LONG_DCID_LEN_OFFSET)?;
    if usize::from(dcid_len) < SHARD_BYTE + 1 {
        return None;
    }
    datagram.get(LONG_DCID_OFFSET + SHARD_BYTE).copied()
}

/// The shard that owns `datagram` on a node with `shards` shards: the one the steering program
/// delivers it to. `None`: no owner can be read; whoever received it handles it.
pub fn owner(datagram: &[u8], shards: ShardCount) -> Option<usize> {
    dcid_shard_byte(datagram).map(|b| shards.owner(b))
}

#[cfg(test)]
mod tests;
