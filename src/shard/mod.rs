//! The thread-per-core engine's pieces: [`placement`] decides which CPU each shard runs on and
//! pins its thread.

pub mod placement;
