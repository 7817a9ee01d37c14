//! Shards: the per-core engine. [`core`] holds every decision of a shard and does no I/O (it is
//! driven by events and the time); [`mio_loop`] is the portable backend that owns the sockets
//! and drives it, with the local side ([`local`]) and the mailboxes between shards ([`inbox`])
//! in modules of their own, for any backend; [`placement`] decides which CPU each shard runs on
//! and pins its thread; [`runtime`] is the node: the shards' threads and their supervisor, which
//! checks a reload ([`reload`]). See
//! docs/ARCHITECTURE.md for the layers and the call order.

pub mod core;
pub mod inbox;
pub mod local;
pub mod mio_loop;
pub mod placement;
pub mod reload;
pub mod runtime;
