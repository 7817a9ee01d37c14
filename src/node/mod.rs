//! A node as `rlinkd run` starts it: today one shard on the mio backend. The decisions live in
//! [`crate::shard::core`], the sockets in [`crate::shard::mio_loop`].

pub use crate::shard::core::Backoff;
pub use crate::shard::mio_loop::{raise_fd_limit, MioShard as Node, NodeError};
