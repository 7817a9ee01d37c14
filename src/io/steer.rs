//! Packet steering for shards: one UDP socket per shard on the node's QUIC port (SO_REUSEPORT)
//! and a classic BPF program (SO_ATTACH_REUSEPORT_CBPF, no privilege needed) that picks the
//! socket from the shard byte of the datagram's destination connection ID
//! (layout: [`crate::quic::cid`]).
//!
//! **The program's answer is an index into the reuseport group, and the group's order is the
//! order its sockets were bound.** [`bind_group`] binds shard 0's socket first, so index `i` is
//! shard `i`. The kernel keeps the group as an array: when a socket of the group is closed, the
//! last socket moves into its slot, and a socket bound later is appended at the end; either
//! breaks "index = shard". So a node binds the group once, at start, keeps every socket open
//! until it stops, and never rebinds one shard's socket alone (to change the number of shards,
//! close them all and bind a new group). The program belongs to the group: attaching it through
//! any one socket applies it to all of them (the tests attach through the last one).
//!
//! What the kernel does with each datagram (RFC 8999 header invariants, offsets in
//! [`crate::quic::cid`]):
//! - short header with at least 2 bytes, or long header with at least 7 bytes and a non-empty
//!   DCID: socket `shard byte % shards`, the shard [`crate::quic::cid::owner`] names;
//! - anything shorter or with an empty DCID: the program returns [`NO_OWNER`], an index past the
//!   group's end, and the kernel falls back to its 4-tuple hash. Such a datagram is not a valid
//!   QUIC packet for any shard; whichever shard receives it counts it as unparsable. (An
//!   explicit length check comes first because a classic BPF load past the end ends the program
//!   with 0, which would send every runt to shard 0.)
//!
//! Without the program (attaching failed, or a datagram was coalesced by GRO behind one of
//! another connection), the kernel hashes the 4-tuple, so datagrams can reach any shard:
//! the receiver checks [`crate::quic::cid::owner`] per datagram and hands strays to their owner.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::quic::cid::{
    ShardCount, LONG_DCID_LEN_OFFSET, LONG_DCID_OFFSET, LONG_HEADER_BIT, SHARD_BYTE,
    SHORT_DCID_OFFSET,
};

/// What the program returns for a datagram without a readable shard byte: past the end of any
/// group (at most 256 sockets here), so the kernel uses its hash instead.
pub const NO_OWNER: u32 = u32::MAX;

/// SO_ATTACH_REUSEPORT_CBPF (asm-generic/socket.h; the same on x86, arm and riscv).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// The steering program for a group of `shards` sockets.
#[derive(Clone)]
pub struct SteeringProgram {
    shards: ShardCount,
    code: Vec<libc::sock_filter>,
}

/// Jump targets while the program is assembled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Label {
    Next,
    Short,
    Modulo,
    NoOwner,
}

/// One instruction before its jump offsets are resolved.
struct Insn {
    code: u32,
    k: u32,
    jt: Label,
    jf: Label,
    /// This instruction is the target of `label`.
    at: Option<Label>,
}

fn op(code: u32, k: u32) -> Insn {
    Insn {
        code,
        k,
        jt: Label::Next,
        jf: Label::Next,
        at: None,
    }
}

fn jump(code: u32, k: u32, jt: Label, jf: Label) -> Insn {
    Insn {
        code,
        k,
        jt,
        jf,
        at: None,
    }
}

fn at(label: Label, insn: Insn) -> Insn {
    Insn {
        at: Some(label),
        ..insn
    }
}

impl SteeringProgram {
    pub fn new(shards: ShardCount) -> SteeringProgram {
        use libc::{
            BPF_A, BPF_ABS, BPF_ALU, BPF_B, BPF_JA, BPF_JGE, BPF_JMP, BPF_JSET, BPF_K, BPF_LD,
            BPF_LEN, BPF_MISC, BPF_MOD, BPF_RET, BPF_TAX, BPF_TXA, BPF_W,
        };
        let byte = |offset: usize| op(BPF_LD | BPF_B | BPF_ABS, offset as u32);
        let at_least = |len: usize, otherwise: Label| {
            jump(
                BPF_JMP | BPF_JGE | BPF_K,
                len as u32,
                Label::Next,
                otherwise,
            )
        };
        let short_shard = SHORT_DCID_OFFSET + SHARD_BYTE;
        let long_shard = LONG_DCID_OFFSET + SHARD_BYTE;
        let program = [
            // A = X = payload length (the kernel has pulled the UDP header off).
            op(BPF_LD | BPF_W | BPF_LEN, 0),
            op(BPF_MISC | BPF_TAX, 0),
            // Every form needs at least the short header's shard byte.
            at_least(short_shard + 1, Label::NoOwner),
            byte(0),
            jump(
                BPF_JMP | BPF_JSET | BPF_K,
                u32::from(LONG_HEADER_BIT),
                Label::Next,
                Label::Short,
            ),
            // Long header: the length, then a DCID long enough to hold the shard byte.
            op(BPF_MISC | BPF_TXA, 0),
            at_least(long_shard + 1, Label::NoOwner),
            byte(LONG_DCID_LEN_OFFSET),
            at_least(SHARD_BYTE + 1, Label::NoOwner),
            byte(long_shard),
            jump(BPF_JMP | BPF_JA, 0, Label::Modulo, Label::Modulo),
            at(Label::Short, byte(short_shard)),
            at(
                Label::Modulo,
                op(BPF_ALU | BPF_MOD | BPF_K, shards.get() as u32),
            ),
            op(BPF_RET | BPF_A, 0),
            at(Label::NoOwner, op(BPF_RET | BPF_K, NO_OWNER)),
        ];
        SteeringProgram {
            shards,
            code: assemble(&program),
        }
    }

    pub fn shards(&self) -> ShardCount {
        self.shards
    }

    /// The classic BPF instructions, as the kernel runs them.
    pub fn instructions(&self) -> &[libc::sock_filter] {
        &self.code
    }

    /// Attaches the program to the reuseport group of `socket` (any socket of the group; it may
    /// be called before the socket is bound, when it applies to the group the socket founds).
    pub fn attach(&self, socket: &impl AsRawFd) -> io::Result<()> {
        let prog = libc::sock_fprog {
            len: self.code.len() as libc::c_ushort,
            filter: self.code.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points to `self.code`, alive and unchanged for the call, with its exact
        // length; the kernel copies the instructions and keeps no pointer to them.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_ATTACH_REUSEPORT_CBPF,
                &prog as *const libc::sock_fprog as *const libc::c_void,
                mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl std::fmt::Debug for SteeringProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SteeringProgram")
            .field("shards", &self.shards.get())
            .field("instructions", &self.code.len())
            .finish()
    }
}

/// Resolves labels into classic BPF's relative jump offsets (instructions to skip after the
/// jump; every jump in this program goes forward).
fn assemble(program: &[Insn]) -> Vec<libc::sock_filter> {
    let position = |label: Label| {
        program
            .iter()
            .position(|i| i.at == Some(label))
            .expect("every label used is placed")
    };
    program
        .iter()
        .enumerate()
        .map(|(pc, insn)| {
            let offset = |label: Label| match label {
                Label::Next => 0,
                l => u8::try_from(position(l) - pc - 1).expect("short forward jump"),
            };
            let (jt, jf) = if insn.code == libc::BPF_JMP | libc::BPF_JA {
                (0, 0)
            } else {
                (offset(insn.jt), offset(insn.jf))
            };
            let k = if insn.code == libc::BPF_JMP | libc::BPF_JA {
                u32::from(offset(insn.jt))
            } else {
                insn.k
            };
            libc::sock_filter {
                code: insn.code as u16,
                jt,
                jf,
                k,
            }
        })
        .collect()
}

/// Why a group of shard sockets could not be set up. Each names the address and the socket.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    /// Another socket holds the port: without this check a second rlinkd with the same config
    /// would silently join the group (SO_REUSEPORT allows it within one user) and take packets.
    #[error("UDP {addr} is in use (is another rlinkd running with this config?)")]
    InUse { addr: SocketAddr, source: io::Error },
    #[error("cannot set up UDP socket {index} of {count} on {addr}: {source}")]
    Socket {
        addr: SocketAddr,
        index: usize,
        count: usize,
        source: io::Error,
    },
}

/// Whether the kernel steers by connection ID.
#[derive(Debug)]
pub enum Steering {
    /// The program is attached: datagrams reach their owner's socket.
    Kernel,
    /// Attaching failed (the error says why): the kernel hashes the 4-tuple, and strays are
    /// handed over in user space. Worth one warning at start.
    UserSpace(io::Error),
}

/// The shards' sockets on one address: `sockets[i]` is shard `i`'s, in group order.
#[derive(Debug)]
pub struct ReuseportGroup {
    pub sockets: Vec<Socket>,
    /// The bound address (the port the first socket got when asked for port 0).
    pub local: SocketAddr,
    pub steering: Steering,
}

/// Binds one socket per shard on `addr` with the steering program attached. Sockets are left
/// blocking and otherwise unconfigured; `io::udp::UdpSocket::from_bound` makes each a datagram
/// backend. A failure to attach the program is not an error (see [`Steering::UserSpace`]).
///
/// The program goes on the first socket before it is bound, so the group has it from the
/// moment it exists: a peer dialing while the node starts never meets a group that spreads by
/// hash. Only a datagram for shard `i` arriving before socket `i` is bound (the program's
/// index is then past the group's end) falls back to the hash and is handed over. Where the
/// kernel refuses a program on an unbound socket, it is attached once all are bound.
pub fn bind_group(addr: SocketAddr, shards: ShardCount) -> Result<ReuseportGroup, SteerError> {
    let program = SteeringProgram::new(shards);
    let mut early = None;
    let (sockets, local) = bind_sockets(addr, shards.get(), |first| {
        early = Some(program.attach(first));
    })?;
    let attached = match early {
        Some(Ok(())) => Ok(()),
        _ => program.attach(&sockets[0]),
    };
    let steering = match attached {
        Ok(()) => Steering::Kernel,
        Err(e) => Steering::UserSpace(e),
    };
    Ok(ReuseportGroup {
        sockets,
        local,
        steering,
    })
}

/// Binds `count` UDP sockets with SO_REUSEPORT on `addr`, in order, without a steering program:
/// the first takes the port (any free one for port 0), the others join it. Refuses a port that
/// some other socket already holds.
pub fn bind_reuseport(
    addr: SocketAddr,
    count: usize,
) -> Result<(Vec<Socket>, SocketAddr), SteerError> {
    bind_sockets(addr, count, |_| {})
}

/// [`bind_reuseport`], calling `before_first_bind` with the first socket (SO_REUSEPORT set,
/// not yet bound).
fn bind_sockets(
    addr: SocketAddr,
    count: usize,
    mut before_first_bind: impl FnMut(&Socket),
) -> Result<(Vec<Socket>, SocketAddr), SteerError> {
    if addr.port() != 0 {
        port_is_free(addr).map_err(|source| SteerError::InUse { addr, source })?;
    }
    let mut local = addr;
    let mut sockets = Vec::with_capacity(count);
    for index in 0..count {
        let socket = new_socket(local)
            .and_then(|s| {
                s.set_reuse_port(true)?;
                if index == 0 {
                    before_first_bind(&s);
                }
                s.bind(&SockAddr::from(local))?;
                Ok(s)
            })
            .map_err(|source| SteerError::Socket {
                addr: local,
                index,
                count,
                source,
            })?;
        if index == 0 {
            local = socket
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .ok_or_else(|| SteerError::Socket {
                    addr,
                    index,
                    count,
                    source: io::Error::other("UDP socket has no IP address"),
                })?;
        }
        sockets.push(socket);
    }
    Ok((sockets, local))
}

/// How long [`port_is_free`] waits for a port held by a process that has already exited. A
/// process killed while its io_uring had a receive armed on the socket (SIGKILL, a crash) does
/// not release the port when it is reaped: the kernel tears the ring down in a work queue after
/// the exit, and the armed request holds the socket until then (measured here: 4 to 12 ms
/// after the parent reaped the process). A supervisor that restarts at once would otherwise
/// find the port "in use" by nobody.
pub const PORT_RELEASE_WAIT: Duration = Duration::from_secs(1);

/// Whether a plain bind of `addr` succeeds: it fails on a port held by anyone, reuseport group
/// or not. The probe socket is closed before the group binds; a process taking the port in
/// between makes the group's first bind fail, or joins (same user, SO_REUSEPORT): a race this
/// check narrows, not closes. `EADDRINUSE` is retried for [`PORT_RELEASE_WAIT`] (see there),
/// so a port that is really taken is refused that much later; other errors at once.
fn port_is_free(addr: SocketAddr) -> io::Result<()> {
    let deadline = Instant::now() + PORT_RELEASE_WAIT;
    loop {
        match new_socket(addr).and_then(|s| s.bind(&SockAddr::from(addr))) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    Ok(socket)
}

#[cfg(test)]
mod tests;
