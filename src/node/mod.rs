//! A node as `rlinkd run` starts it: one shard per CPU ([`crate::shard::runtime`]), each a
//! loop on the backend `io` selects ([`crate::shard::mio_loop`] or
//! [`crate::shard::uring_loop`]) around the sans-I/O core ([`crate::shard::core`]).

pub use crate::shard::core::Backoff;
pub use crate::shard::mio_loop::{raise_fd_limit, NodeError};
pub use crate::shard::runtime::Node;
