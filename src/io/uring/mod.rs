//! The io_uring datagram backend: one ring per shard that carries the QUIC socket's receives
//! (one multishot `RECVMSG` into a provided buffer ring), its sends (`SENDMSG` with
//! `UDP_SEGMENT` for GSO batches), a multishot poll on another descriptor (the mio `Poll` that
//! still watches the local sockets) and the wait for the core's deadline (the timeout of
//! `io_uring_enter`), so one system call per loop turn submits everything and waits for all of
//! it.
//!
//! Modules:
//! - [`ring`]: ring set-up with flag fallback (`SINGLE_ISSUER` + `DEFER_TASKRUN`, else
//!   `COOP_TASKRUN`, else none), the opcode probe, the counted `io_uring_enter`;
//! - [`bufring`]: the provided buffer ring the multishot receive fills;
//! - [`tx`]: send slots, each owning every byte the kernel reads for one `SENDMSG`;
//! - [`local_send`]: the links' writes to their local connections, as `SEND`s on the same ring;
//! - `recvmsg`: the receive's `msghdr` template and the decoding of what the kernel wrote in
//!   front of each payload (source address, `UDP_GRO` segment size);
//! - [`engine`]: [`UringIo`], which owns all of the above, arms and re-arms operations, turns
//!   completions into [`Completion`]s and tears down with operations in flight.
//!
//! Ownership, in one rule: memory the kernel may read or write (the receive `msghdr`, the
//! provided buffers and their ring, each send's `msghdr`, `iovec`, address, cmsg and payload) is
//! owned by [`UringIo`], allocated once, never moved, and not touched from the submission of the
//! operation that uses it until that operation's last completion has been reaped. Teardown
//! cancels what is in flight and waits for those completions; memory whose completion never came
//! is leaked, never freed.

pub mod bufring;
pub mod engine;
pub mod local_recv;
pub mod local_send;
mod recvmsg;
pub mod ring;
pub mod tx;

use std::io;

pub use engine::{Completion, RingSetup, UringIo};
pub use ring::{Ring, TaskRun};

/// Why the io_uring backend cannot run here. A shard that gets one runs on mio instead.
#[derive(Debug, thiserror::Error)]
pub enum UringError {
    #[error("io_uring_setup: {0}")]
    Setup(io::Error),
    #[error("the kernel lacks {0}")]
    Missing(&'static str),
    #[error("IORING_REGISTER_PROBE: {0}")]
    Probe(io::Error),
    #[error("registering the provided buffer ring: {0}")]
    BufRing(io::Error),
    #[error("mapping {bytes} bytes for io_uring buffers: {source}")]
    Memory { bytes: usize, source: io::Error },
}

/// What a completion belongs to: the `user_data` of every request, as a type. The kind is in the
/// top byte and the slot (send slots) in the low bits, so a completion is matched without a
/// lookup table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    /// The multishot receive on the QUIC socket.
    Recv,
    /// The send in slot `n`.
    Send(u16),
    /// The multishot poll on the watched descriptor (the mio `Poll`).
    Watch,
    /// A cancel request (its own completion carries nothing we need).
    Cancel,
    /// The local send in slot `n` ([`local_send`]).
    LocalSend(u32),
    /// The local read in slot `n` ([`local_recv`]).
    LocalRecv(u32),
}

const KIND_SHIFT: u32 = 56;

impl Token {
    pub fn to_user_data(self) -> u64 {
        let (kind, n) = match self {
            Token::Recv => (1u64, 0u64),
            Token::Send(n) => (2, n as u64),
            Token::Watch => (3, 0),
            Token::Cancel => (4, 0),
            Token::LocalSend(n) => (5, n as u64),
            Token::LocalRecv(n) => (6, n as u64),
        };
        kind << KIND_SHIFT | n
    }

    /// `None` for a value no request of ours carries.
    pub fn from_user_data(v: u64) -> Option<Token> {
        let n = v & ((1 << KIND_SHIFT) - 1);
        match v >> KIND_SHIFT {
            1 => Some(Token::Recv),
            2 => u16::try_from(n).ok().map(Token::Send),
            3 => Some(Token::Watch),
            4 => Some(Token::Cancel),
            5 => u32::try_from(n).ok().map(Token::LocalSend),
            6 => u32::try_from(n).ok().map(Token::LocalRecv),
            _ => None,
        }
    }
}

/// Anonymous memory that never moves: the kernel is given its address once (a buffer ring,
/// provided buffers) and may write it until it is told otherwise, so it must not live in a
/// `Vec` that could reallocate, and it is unmapped only by its owner's teardown.
pub(crate) struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// `len` bytes, page aligned, zeroed.
    pub(crate) fn new(len: usize) -> Result<Mapping, UringError> {
        // SAFETY: an anonymous private mapping with no address hint; the result is checked
        // before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(UringError::Memory {
                bytes: len,
                source: io::Error::last_os_error(),
            });
        }
        Ok(Mapping {
            ptr: ptr as *mut u8,
            len,
        })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are exactly the mapping made in `new`. Owners drop a mapping
        // only once the kernel holds no reference into it (see `UringIo`'s teardown, which leaks
        // the mapping instead when that cannot be confirmed).
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

#[cfg(test)]
mod tests;
