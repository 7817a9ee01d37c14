//! Which backend the shards run on (`io` in the configuration), decided once by the node, and a
//! shard's loop on it, built on the shard's thread from its [`ShardSetup`].
//!
//! `auto` and `uring` run the io_uring probe (`crate::probe::uring`: ring set-up, opcodes, a
//! provided buffer ring, a live multishot receive) once. `uring` runs the shards on io_uring
//! when it passes, on mio otherwise (a warning says why). `auto` runs them on mio either way for
//! now: on the benchmark the io_uring backend cost more CPU per byte than mio in three of four
//! cells (docs/ARCHITECTURE.md, "The io_uring backend"). A shard whose ring cannot be set up
//! although the probe passed runs on mio too: never a failed start for lack of io_uring.

use super::core::ShardReport;
use super::inbox::ShardSetup;
use super::mio_loop::{MioShard, NodeError};
use super::uring_loop::{UringShard, UringShardError};
use crate::config::{IoMode, NodeConfig};

/// The backend the node's shards run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Mio,
    Uring,
}

/// Decides the backend for `mode` (probing io_uring unless `mode` is mio) and logs the choice
/// with its reason, once per node: `I/O backend: ...`.
pub fn choose(mode: IoMode) -> Backend {
    let (backend, why) = decide(mode, || {
        crate::probe::uring::detect()
            .missing_for_engine()
            .into_iter()
            .map(str::to_string)
            .collect()
    });
    match backend {
        Backend::Uring => tracing::info!(backend = "io_uring", "I/O backend: io_uring ({why})"),
        Backend::Mio if mode == IoMode::Uring => {
            tracing::warn!(backend = "mio", "I/O backend: mio ({why})")
        }
        Backend::Mio => tracing::info!(backend = "mio", "I/O backend: mio ({why})"),
    }
    backend
}

/// The policy: the backend for `mode` and why, given what the probe finds missing (`missing`
/// runs only when it matters).
fn decide(mode: IoMode, missing: impl FnOnce() -> Vec<String>) -> (Backend, String) {
    if mode == IoMode::Mio {
        return (Backend::Mio, "io = \"mio\"".into());
    }
    let missing = missing();
    let name = mode.name();
    if !missing.is_empty() {
        let why = format!("io = \"{name}\", but io_uring lacks {}", missing.join(", "));
        return (Backend::Mio, why);
    }
    match mode {
        IoMode::Uring => (
            Backend::Uring,
            "io = \"uring\": the probe found every io_uring operation the backend uses".into(),
        ),
        _ => (
            Backend::Mio,
            format!(
                "io = \"{name}\": io_uring available; mio chosen: faster in measurements, see \
                 docs/ARCHITECTURE.md; set io = \"uring\" to use it"
            ),
        ),
    }
}

/// One shard's event loop, on the node's backend.
pub enum ShardLoop {
    Mio(Box<MioShard>),
    Uring(Box<UringShard>),
}

impl ShardLoop {
    /// Builds the shard of `setup` on `backend`; a ring that cannot be set up sends this shard
    /// to mio (with a warning).
    pub fn new(backend: Backend, cfg: NodeConfig, setup: ShardSetup) -> Result<Self, NodeError> {
        let setup = match backend {
            Backend::Mio => setup,
            Backend::Uring => match UringShard::new(cfg.clone(), setup) {
                Ok(s) => return Ok(ShardLoop::Uring(Box::new(s))),
                Err(UringShardError::Node(e)) => return Err(e),
                Err(UringShardError::Unsupported { error, setup }) => {
                    tracing::warn!(shard = setup.index, error = %error, "the io_uring ring cannot be set up: this shard runs on mio");
                    *setup
                }
            },
        };
        MioShard::new(cfg, setup).map(|s| ShardLoop::Mio(Box::new(s)))
    }

    /// Runs until told to stop; the shard's last figures.
    pub fn run(&mut self) -> Result<ShardReport, NodeError> {
        match self {
            ShardLoop::Mio(s) => s.run(),
            ShardLoop::Uring(s) => s.run(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lacks(what: &[&str]) -> impl FnOnce() -> Vec<String> {
        let v: Vec<String> = what.iter().map(|s| s.to_string()).collect();
        move || v
    }

    #[test]
    fn auto_runs_on_mio_and_says_how_to_get_io_uring() {
        let (b, why) = decide(IoMode::Auto, lacks(&[]));
        assert_eq!(b, Backend::Mio);
        assert!(why.contains("io_uring available; mio chosen"), "{why}");
        assert!(why.contains("set io = \"uring\""), "{why}");
        let (b, why) = decide(IoMode::Auto, lacks(&["RECVMSG"]));
        assert_eq!(b, Backend::Mio);
        assert!(why.contains("lacks RECVMSG"), "{why}");
    }

    #[test]
    fn uring_runs_on_io_uring_only_where_the_probe_passes() {
        assert_eq!(decide(IoMode::Uring, lacks(&[])).0, Backend::Uring);
        let (b, why) = decide(IoMode::Uring, lacks(&["buffer rings"]));
        assert_eq!(b, Backend::Mio);
        assert!(why.contains("lacks buffer rings"), "{why}");
    }

    #[test]
    fn mio_does_not_probe() {
        let (b, _) = decide(IoMode::Mio, || panic!("probed"));
        assert_eq!(b, Backend::Mio);
    }
}
