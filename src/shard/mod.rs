//! Shards: the per-core engine. [`core`] holds every decision of a shard and does no I/O (it is
//! driven by events and the time); [`mio_loop`] (epoll) and [`uring_loop`] (the QUIC socket on
//! an io_uring ring) are the backends that own the sockets and drive it, sharing the local side
//! ([`local`], each link's connection a [`conn::LinkSocket`]) and the mailboxes between shards ([`inbox`]); [`backend`] picks one (`io` in the
//! configuration); [`placement`] decides which CPU each shard runs on and pins its thread;
//! [`runtime`] is the node: the shards' threads and their supervisor, which checks a reload
//! ([`reload`]). See docs/ARCHITECTURE.md for the layers and the call order.

pub mod backend;
pub mod conn;
pub mod core;
pub mod inbox;
pub mod local;
pub mod mio_loop;
pub mod placement;
pub mod reload;
pub mod runtime;
pub mod uring_loop;
