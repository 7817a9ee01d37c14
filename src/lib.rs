//! # rlinkd
//!
//! A data plane for WAMP router-to-router links ("rlinks", as in Crossbar.io clusters): every
//! RawSocket connection a router opens to a local rlinkd endpoint becomes one bidirectional QUIC
//! stream on the single QUIC connection to the peer node, where rlinkd connects to the peer router
//! and relays the RawSocket handshake and frames verbatim.
//!
//! ```text
//!  router A --RawSocket (unix/tcp)--> rlinkd A ==QUIC, 1 stream per rlink==> rlinkd B --RawSocket--> router B
//! ```
//!
//! Layout: [`rawsocket`] is the pure wire codec; [`quic`] the sans-I/O QUIC driver, stream
//! preamble and TLS; [`io`] the sockets (UDP with GSO/GRO, local Unix/TCP) and the seams to them;
//! [`relay`] moves bytes between a local connection and a stream; [`shard`] holds the sans-I/O
//! shard core that makes every decision, the mio backend that drives it, and the placement of
//! shards on CPUs; [`node`] is what `rlinkd run` starts;
//! [`config`] and [`cert`] are the user-facing set-up, [`ops`] what running as a service needs
//! (systemd notifications, endpoint permissions); [`endpoints`] holds built-in RawSocket
//! routers and clients for the demo, tests and benchmarks.

pub mod addr;
pub mod admin;
pub mod bench;
pub mod cert;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod endpoints;
pub mod fuzzing;
pub mod io;
pub mod ktls;
pub mod logsafe;
pub mod node;
pub mod ops;
pub mod probe;
pub mod quic;
pub mod rawsocket;
pub mod relay;
pub mod shard;
