//! Send slots: each owns everything the kernel reads for one `SENDMSG` (the `msghdr`, its
//! `iovec`, the destination address, the `UDP_SEGMENT` control message and the payload) in one
//! heap allocation that never moves. A slot is free, or in flight from its submission until its
//! completion is reaped; nothing in it is written while it is in flight.

use std::net::SocketAddr;

use socket2::SockAddr;

use crate::io::cmsg::{self, CmsgBuf};
use crate::io::udp::MAX_GSO_BYTES;

/// One send's memory. Boxed by [`Slots`], so the pointers in `msg` stay valid.
pub struct Slot {
    msg: libc::msghdr,
    iov: libc::iovec,
    addr: SockAddr,
    control: CmsgBuf,
    payload: Box<[u8]>,
    /// What is in flight: destination, bytes, segment size (for the stats and a GSO resend).
    pub to: SocketAddr,
    pub len: usize,
    pub segment_size: usize,
    in_flight: bool,
    zero_copy: bool,
}

impl Slot {
    fn new() -> Box<Slot> {
        Box::new(Slot {
            // SAFETY: msghdr and iovec are plain data, valid when zeroed; every pointer is set
            // in `prepare` before the kernel sees them.
            msg: unsafe { std::mem::zeroed() },
            // SAFETY: as above.
            iov: unsafe { std::mem::zeroed() },
            addr: SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0))),
            control: CmsgBuf::default(),
            payload: vec![0; MAX_GSO_BYTES].into_boxed_slice(),
            to: SocketAddr::from(([0, 0, 0, 0], 0)),
            len: 0,
            segment_size: 0,
            in_flight: false,
            zero_copy: false,
        })
    }

    /// The payload buffer to fill (only while the slot is free).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        assert!(!self.in_flight, "a send slot's payload is the kernel's");
        &mut self.payload
    }

    /// The bytes of the send in flight or just completed.
    pub fn contents(&self) -> &[u8] {
        &self.payload[..self.len]
    }

    /// Points the `msghdr` at this slot's address, payload (`len` bytes) and, when
    /// `segment_size` is given, a `UDP_SEGMENT` control message; returns the `msghdr` for the
    /// submission and marks the slot in flight (`zero_copy`: until the notification).
    pub fn prepare(
        &mut self,
        to: SocketAddr,
        len: usize,
        gso_segment: Option<u16>,
        zero_copy: bool,
    ) -> *const libc::msghdr {
        assert!(!self.in_flight && len <= self.payload.len());
        self.to = to;
        self.len = len;
        self.segment_size = gso_segment.map_or(len, usize::from);
        self.addr = SockAddr::from(to);
        self.iov = libc::iovec {
            iov_base: self.payload.as_mut_ptr() as *mut libc::c_void,
            iov_len: len,
        };
        self.msg.msg_name = self.addr.as_ptr() as *mut libc::c_void;
        self.msg.msg_namelen = self.addr.len();
        self.msg.msg_iov = &mut self.iov;
        self.msg.msg_iovlen = 1;
        match gso_segment {
            Some(size) => {
                self.msg.msg_control = self.control.0.as_mut_ptr() as *mut libc::c_void;
                self.msg.msg_controllen = cmsg::encode_udp_segment(&mut self.control, size) as _;
            }
            None => {
                self.msg.msg_control = std::ptr::null_mut();
                self.msg.msg_controllen = 0;
            }
        }
        self.in_flight = true;
        self.zero_copy = zero_copy;
        &self.msg
    }

    /// Its completion was reaped: the kernel is done with every byte of the slot.
    pub fn complete(&mut self) {
        self.in_flight = false;
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// The send in flight (or just completed) went out with `SENDMSG_ZC`.
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }
}

/// A fixed set of send slots and the free list.
pub struct Slots {
    /// Boxed so a slot's address does not depend on the vector never growing: the kernel holds
    /// pointers into slots in flight.
    #[allow(clippy::vec_box)]
    slots: Vec<Box<Slot>>,
    free: Vec<u16>,
}

impl Slots {
    pub fn new(count: u16) -> Slots {
        Slots {
            slots: (0..count).map(|_| Slot::new()).collect(),
            free: (0..count).rev().collect(),
        }
    }

    /// A free slot's index, without taking it.
    pub fn peek_free(&self) -> Option<u16> {
        self.free.last().copied()
    }

    /// Takes slot `n` (from [`Slots::peek_free`]) for a send.
    pub fn take(&mut self, n: u16) {
        if self.free.last() == Some(&n) {
            self.free.pop();
        }
    }

    /// Returns slot `n` after its completion.
    pub fn release(&mut self, n: u16) {
        if let Some(s) = self.slots.get_mut(n as usize) {
            if s.in_flight {
                s.complete();
                self.free.push(n);
            }
        }
    }

    pub fn get(&self, n: u16) -> Option<&Slot> {
        self.slots.get(n as usize).map(|b| &**b)
    }

    pub fn get_mut(&mut self, n: u16) -> Option<&mut Slot> {
        self.slots.get_mut(n as usize).map(|b| &mut **b)
    }

    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Indices of the slots in flight (for cancelling at teardown).
    pub fn in_flight_ids(&self) -> Vec<u16> {
        (0..self.slots.len() as u16)
            .filter(|&n| self.slots[n as usize].in_flight)
            .collect()
    }
}
