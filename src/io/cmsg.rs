//! Control messages for UDP GSO/GRO: an encoder that writes into a caller-owned aligned buffer and
//! a decoder that walks what `recvmsg` returned. The only `unsafe` here is the kernel's cmsg
//! layout, walked with libc's CMSG_* macros.

use std::mem;

/// `SOL_UDP` options (linux/udp.h); libc does not export them for glibc targets.
pub const UDP_SEGMENT: libc::c_int = 103;
pub const UDP_GRO: libc::c_int = 104;

/// Room for a few control messages, aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct CmsgBuf(pub [u8; 128]);

impl Default for CmsgBuf {
    fn default() -> Self {
        CmsgBuf([0; 128])
    }
}

/// Writes one `u16` `UDP_SEGMENT` control message into `buf` and returns the length to put in
/// `msg_controllen`.
pub fn encode_udp_segment(buf: &mut CmsgBuf, segment_size: u16) -> usize {
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic on sizes.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(mem::size_of::<u16>() as u32) as usize,
            libc::CMSG_LEN(mem::size_of::<u16>() as u32) as usize,
        )
    };
    debug_assert!(space <= buf.0.len());
    buf.0[..space].fill(0);
    let hdr = libc::cmsghdr {
        cmsg_len: len as _,
        cmsg_level: libc::SOL_UDP,
        cmsg_type: UDP_SEGMENT,
    };
    let hdr_len = mem::size_of::<libc::cmsghdr>();
    // SAFETY: `buf` is 8-byte aligned and at least `space` bytes long, so a cmsghdr fits at its
    // start; the data follows the header at CMSG_DATA, which for Linux is `hdr_len` bytes in.
    unsafe {
        std::ptr::write_unaligned(buf.0.as_mut_ptr() as *mut libc::cmsghdr, hdr);
    }
    buf.0[hdr_len..hdr_len + 2].copy_from_slice(&segment_size.to_ne_bytes());
    space
}

/// Finds the GRO segment size in the control messages `recvmsg` filled in.
///
/// # Safety
/// `msg` must be a msghdr that `recvmsg` has just filled, whose `msg_control` still points to
/// a live buffer of `msg_controllen` bytes.
pub unsafe fn decode_gro_segment(msg: &libc::msghdr) -> Option<usize> {
    // SAFETY: the caller guarantees `msg` describes a valid control buffer; the CMSG_* macros
    // stay within `msg_controllen`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let hdr = std::ptr::read_unaligned(cmsg);
            if hdr.cmsg_level == libc::SOL_UDP && hdr.cmsg_type == UDP_GRO {
                let data = libc::CMSG_DATA(cmsg) as *const libc::c_int;
                let size = std::ptr::read_unaligned(data);
                return usize::try_from(size).ok().filter(|s| *s > 0);
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
        None
    }
}

/// Finds the `sock_extended_err` of an error-queue message (`IP_RECVERR` / `IPV6_RECVERR`).
///
/// # Safety
/// As for [`decode_gro_segment`]: `msg` was just filled by `recvmsg(MSG_ERRQUEUE)` and its
/// control buffer is alive.
pub unsafe fn decode_extended_err(msg: &libc::msghdr) -> Option<libc::sock_extended_err> {
    // SAFETY: the caller guarantees `msg` describes a valid control buffer; the CMSG_* macros
    // stay within `msg_controllen`, and the kernel puts a whole sock_extended_err in these
    // messages.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let hdr = std::ptr::read_unaligned(cmsg);
            let ip = hdr.cmsg_level == libc::SOL_IP && hdr.cmsg_type == libc::IP_RECVERR;
            let ip6 = hdr.cmsg_level == libc::SOL_IPV6 && hdr.cmsg_type == libc::IPV6_RECVERR;
            if ip || ip6 {
                let data = libc::CMSG_DATA(cmsg) as *const libc::sock_extended_err;
                return Some(std::ptr::read_unaligned(data));
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
        None
    }
}
