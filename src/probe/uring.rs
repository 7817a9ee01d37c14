//! io_uring: can a ring be set up, which of the opcodes rlinkd's io_uring engine uses does the
//! kernel support (`IORING_REGISTER_PROBE`), can a provided-buffer ring be registered, and does a
//! multishot `RECVMSG` really deliver a datagram into a provided buffer.
//!
//! Multishot recvmsg is the `RECVMSG` opcode with `IORING_RECV_MULTISHOT` in `ioprio`, so the
//! opcode probe cannot see it; it is tested live on a loopback UDP socket.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::types::{BufRingEntry, Fd, RecvMsgOut};
use io_uring::{cqueue, opcode, IoUring, Probe};
use serde::Serialize;

use super::Support;

/// One opcode and what the engine wants it for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OpcodeSupport {
    pub name: &'static str,
    pub used_for: &'static str,
    pub required: bool,
    pub support: Support,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UringReport {
    /// `/proc/sys/kernel/io_uring_disabled`: 0 enabled, 1 only for `io_uring_group`, 2 off.
    pub disabled_sysctl: Option<u32>,
    /// `io_uring_setup` of an 8-entry ring.
    pub setup: Support,
    pub opcodes: Vec<OpcodeSupport>,
    /// `IORING_REGISTER_PBUF_RING` of an 8-entry ring (unregistered afterwards).
    pub buf_ring: Support,
    /// A multishot `RECVMSG` on a loopback UDP socket received a datagram into a provided buffer
    /// and stayed armed (`IORING_CQE_F_MORE`).
    pub multishot_recvmsg: Support,
}

impl UringReport {
    /// What the engine needs and is missing (empty: it could run here).
    pub fn missing_for_engine(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !self.setup.is_yes() {
            missing.push("io_uring_setup");
        }
        for op in &self.opcodes {
            if op.required && !op.support.is_yes() {
                missing.push(op.name);
            }
        }
        if !self.buf_ring.is_yes() {
            missing.push("provided buffer rings");
        }
        if !self.multishot_recvmsg.is_yes() {
            missing.push("multishot RecvMsg");
        }
        missing
    }
}

/// `(name, opcode, used for, required by the engine)`.
const OPCODES: &[(&str, u8, &str, bool)] = &[
    (
        "RecvMsg",
        opcode::RecvMsg::CODE,
        "receive (with RecvMsgMulti: multishot, GRO)",
        true,
    ),
    (
        "SendMsg",
        opcode::SendMsg::CODE,
        "send a GSO batch (UDP_SEGMENT cmsg)",
        true,
    ),
    (
        "SendMsgZc",
        opcode::SendMsgZc::CODE,
        "zero-copy GSO send, where it measures faster",
        false,
    ),
    (
        "SendZc",
        opcode::SendZc::CODE,
        "zero-copy send to a connected socket",
        false,
    ),
    (
        "Recv",
        opcode::Recv::CODE,
        "RecvMulti on local stream sockets",
        false,
    ),
    (
        "ProvideBuffers",
        opcode::ProvideBuffers::CODE,
        "legacy provided buffers (fallback when no buffer ring)",
        false,
    ),
];

const RING_ENTRIES: u16 = 8;
const BUF_LEN: usize = 2048;
const BGID: u16 = 0x7e57;
const MULTISHOT_TOKEN: u64 = 1;
const CANCEL_TOKEN: u64 = 2;

pub fn detect() -> UringReport {
    let disabled_sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let not_tested = || Support::Unknown("no ring".into());
    let mut report = UringReport {
        disabled_sysctl,
        setup: Support::Yes,
        opcodes: OPCODES
            .iter()
            .map(|&(name, _, used_for, required)| OpcodeSupport {
                name,
                used_for,
                required,
                support: not_tested(),
            })
            .collect(),
        buf_ring: not_tested(),
        multishot_recvmsg: not_tested(),
    };
    let mut ring = match IoUring::new(RING_ENTRIES as u32) {
        Ok(r) => r,
        Err(e) => {
            report.setup = Support::No(setup_error(&e, disabled_sysctl));
            return report;
        }
    };
    let mut probe = Probe::new();
    match ring.submitter().register_probe(&mut probe) {
        Ok(()) => {
            for (op, &(_, code, _, _)) in report.opcodes.iter_mut().zip(OPCODES) {
                op.support = if probe.is_supported(code) {
                    Support::Yes
                } else {
                    Support::No("not in IORING_REGISTER_PROBE".into())
                };
            }
        }
        Err(e) => {
            for op in &mut report.opcodes {
                op.support = Support::Unknown(format!("IORING_REGISTER_PROBE failed: {e}"));
            }
        }
    }
    let (buf_ring, multishot) = buf_ring_and_multishot(&mut ring);
    report.buf_ring = buf_ring;
    report.multishot_recvmsg = multishot;
    report
}

fn setup_error(e: &io::Error, disabled: Option<u32>) -> String {
    match (e.raw_os_error(), disabled) {
        (Some(libc::EPERM), Some(2)) => "disabled: kernel.io_uring_disabled = 2".into(),
        (Some(libc::EPERM), Some(1)) => {
            "disabled for this user: kernel.io_uring_disabled = 1 (io_uring_group only)".into()
        }
        (Some(libc::ENOSYS), _) => "kernel built without io_uring (ENOSYS)".into(),
        (Some(libc::EPERM), _) => "denied (EPERM: seccomp or container policy?)".into(),
        _ => format!("io_uring_setup: {e}"),
    }
}

/// One page of anonymous memory for the buffer ring (the kernel wants it page aligned).
struct Page {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Page {
    fn new() -> io::Result<Page> {
        let len = 4096;
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
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
            return Err(io::Error::last_os_error());
        }
        Ok(Page { ptr, len })
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new`; nothing refers to it any more
        // (the buffer ring is unregistered or the ring dropped before the page).
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

/// Registers a provided-buffer ring, then tests multishot recvmsg with it. The ring is
/// unregistered before returning; the multishot request is cancelled and its last completion
/// reaped first, so the kernel holds no pointer into `page` or `buffers` afterwards.
fn buf_ring_and_multishot(ring: &mut IoUring) -> (Support, Support) {
    let page = match Page::new() {
        Ok(p) => p,
        Err(e) => {
            return (
                Support::Unknown(format!("mmap: {e}")),
                Support::Unknown("no buffer ring".into()),
            )
        }
    };
    let mut buffers = vec![0u8; BUF_LEN * RING_ENTRIES as usize];
    let entries = page.ptr as *mut BufRingEntry;
    for i in 0..RING_ENTRIES {
        // SAFETY: entry `i` lies within the page (8 entries x 16 bytes); the kernel does not see
        // the ring before it is registered below.
        let entry = unsafe { &mut *entries.add(i as usize) };
        entry.set_addr(buffers[i as usize * BUF_LEN..].as_mut_ptr() as u64);
        entry.set_len(BUF_LEN as u32);
        entry.set_bid(i);
    }
    // SAFETY: `tail` computes the address of the ring's tail field inside entry 0 (in the page).
    let tail = unsafe { BufRingEntry::tail(entries) } as *const AtomicU16;
    // SAFETY: the tail is a naturally aligned u16 in the page, shared with the kernel; it is
    // published with Release so the entries written above are visible first.
    unsafe { (*tail).store(RING_ENTRIES, Ordering::Release) };

    // SAFETY: the page holds RING_ENTRIES entries and lives until after the unregister below.
    let reg = unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(page.ptr as u64, RING_ENTRIES, BGID, 0)
    };
    if let Err(e) = reg {
        let why = format!("IORING_REGISTER_PBUF_RING: {e}");
        return (Support::No(why), Support::Unknown("no buffer ring".into()));
    }
    let (multishot, quiesced) = multishot_recvmsg(ring, &buffers);
    let unreg = ring.submitter().unregister_buf_ring(BGID);
    let buf_ring = match unreg {
        Ok(()) => Support::Yes,
        Err(e) => Support::Unknown(format!("registered, but unregister failed: {e}")),
    };
    if !buf_ring.is_yes() || !quiesced {
        // The kernel may still reference the page and buffers: leak them rather than free memory
        // it might write to. Never expected.
        std::mem::forget(page);
        std::mem::forget(buffers);
    }
    (buf_ring, multishot)
}

/// The verdict, and whether the request is known to be finished (no kernel reference left to
/// `buffers`).
fn multishot_recvmsg(ring: &mut IoUring, buffers: &[u8]) -> (Support, bool) {
    let (rx, tx) = match (
        UdpSocket::bind("127.0.0.1:0"),
        UdpSocket::bind("127.0.0.1:0"),
    ) {
        (Ok(rx), Ok(tx)) => (rx, tx),
        (Err(e), _) | (_, Err(e)) => return (Support::Unknown(format!("UDP socket: {e}")), true),
    };
    let payload = b"rlinkd probe";
    if let Err(e) = rx.local_addr().and_then(|a| tx.send_to(payload, a)) {
        return (Support::Unknown(format!("loopback send: {e}")), true);
    }
    // SAFETY: msghdr is plain data, valid when zeroed. For a multishot recvmsg only namelen and
    // controllen matter: they size the header the kernel writes in front of each payload.
    let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
    let sqe = opcode::RecvMsgMulti::new(Fd(rx.as_raw_fd()), &*msg, BGID)
        .build()
        .user_data(MULTISHOT_TOKEN);
    // SAFETY: `msg` and the socket outlive the request: it is cancelled and its final
    // completion reaped below before either is dropped.
    if unsafe { ring.submission().push(&sqe) }.is_err() {
        return (Support::Unknown("submission queue full".into()), true);
    }
    if let Err(e) = ring.submit() {
        return (Support::Unknown(format!("io_uring_enter: {e}")), true);
    }
    let first = wait_cqe(ring, MULTISHOT_TOKEN, Duration::from_secs(1));
    let verdict = match first {
        None => Support::No("no completion within 1 s".into()),
        Some((res, _)) if res < 0 => Support::No(io::Error::from_raw_os_error(-res).to_string()),
        Some((res, flags)) => match cqueue::buffer_select(flags) {
            None => Support::No("completion without a provided buffer".into()),
            Some(bid) => {
                let start = bid as usize * BUF_LEN;
                let data = buffers.get(start..start + res as usize).unwrap_or_default();
                match RecvMsgOut::parse(data, &msg) {
                    Ok(out) if out.payload_data() == payload && cqueue::more(flags) => Support::Yes,
                    Ok(_) if !cqueue::more(flags) => {
                        Support::No("completed without IORING_CQE_F_MORE (not multishot)".into())
                    }
                    Ok(_) => Support::No("payload differs from what was sent".into()),
                    Err(()) => Support::No("unparsable io_uring_recvmsg_out".into()),
                }
            }
        },
    };
    // Cancel and reap the request's final completion (one without F_MORE) before `msg` goes.
    let still_armed = first.is_none_or(|(res, flags)| res >= 0 && cqueue::more(flags));
    if still_armed {
        let cancel = opcode::AsyncCancel::new(MULTISHOT_TOKEN)
            .build()
            .user_data(CANCEL_TOKEN);
        // SAFETY: the cancel request refers to no memory.
        let pushed = unsafe { ring.submission().push(&cancel) }.is_ok();
        if pushed && ring.submit().is_ok() {
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                match wait_cqe(ring, MULTISHOT_TOKEN, Duration::from_millis(100)) {
                    Some((_, flags)) if !cqueue::more(flags) => return (verdict, true),
                    _ => {}
                }
            }
        }
        // The request could not be confirmed gone: keep `msg` alive forever.
        Box::leak(msg);
        return (verdict, false);
    }
    (verdict, true)
}

/// Polls the completion queue for `token` (discarding others) until `limit` passes.
fn wait_cqe(ring: &mut IoUring, token: u64, limit: Duration) -> Option<(i32, u32)> {
    let deadline = Instant::now() + limit;
    loop {
        for cqe in ring.completion() {
            if cqe.user_data() == token {
                return Some((cqe.result(), cqe.flags()));
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
