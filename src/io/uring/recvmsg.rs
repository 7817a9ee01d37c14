//! What a multishot `RECVMSG` writes into each provided buffer, and how the engine reads it:
//! the template the receive is armed with (its name and control lengths size the header the
//! kernel writes in front of each payload), the source address and the `UDP_GRO` segment size.

use std::net::SocketAddr;

use crate::io::cmsg::{self, CmsgBuf};
use crate::io::udp;

/// Space the kernel writes before the payload: the recvmsg_out header (16), the address (the
/// size of `sockaddr_storage`, a multiple of 8 so the control messages stay aligned) and the
/// control messages.
const NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_storage>();
const CONTROL_LEN: usize = 64;

/// The msghdr a multishot receive is armed with: the kernel reads only the name and control
/// lengths, which size the header it writes in front of each payload.
pub(super) fn recv_template() -> libc::msghdr {
    // SAFETY: msghdr is plain data, valid when zeroed.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_namelen = NAME_LEN as _;
    msg.msg_controllen = CONTROL_LEN as _;
    msg
}

/// The source address a multishot receive wrote (`name_data`, at most a `sockaddr_storage`).
pub(super) fn sockaddr_from_bytes(name: &[u8]) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data, valid when zeroed.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = name
        .len()
        .min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: copies `n` bytes, within both `name` and `storage`; they do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            name.as_ptr(),
            &mut storage as *mut libc::sockaddr_storage as *mut u8,
            n,
        )
    };
    udp::sockaddr_to_std(&storage)
}

/// The `UDP_GRO` segment size among the control messages a multishot receive wrote. They are
/// copied into an aligned buffer first: the libc CMSG_* walk dereferences headers in place.
pub(super) fn gro_segment(control: &[u8]) -> Option<usize> {
    let mut buf = CmsgBuf::default();
    let n = control.len().min(buf.0.len());
    buf.0[..n].copy_from_slice(&control[..n]);
    // SAFETY: msghdr is plain data, valid when zeroed.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_control = buf.0.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = n as _;
    // SAFETY: `msg` describes `buf`, alive and `n` bytes long, holding the control messages the
    // kernel wrote.
    unsafe { cmsg::decode_gro_segment(&msg) }
}
