//! The provided buffer ring a multishot receive fills: `count` buffers of `size` bytes in one
//! mapping that never moves, and the ring of entries (one page-aligned mapping) through which
//! they are lent to the kernel.
//!
//! A buffer is the kernel's from the moment its entry is published (the tail moves past it)
//! until a completion names it (`IORING_CQE_F_BUFFER` with its id); from then on it is ours
//! until [`BufRing::give_back`] publishes it again. The engine gives each buffer back as soon as
//! its datagrams have been handed to quiche, so a ring of [`BufRing::count`] buffers runs dry
//! only when that many completions wait unreaped; the receive then ends with ENOBUFS and is
//! re-armed after the turn has given them back.

use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

use super::{Mapping, Ring, UringError};

pub struct BufRing {
    bgid: u16,
    count: u16,
    size: usize,
    /// `count` entries of 16 bytes, shared with the kernel.
    entries: Mapping,
    /// `count` buffers of `size` bytes.
    buffers: Mapping,
    /// Our copy of the tail (the kernel only reads the shared one).
    tail: u16,
    registered: bool,
}

impl BufRing {
    /// Maps `count` (a power of two) buffers of `size` bytes and their ring, and lends every
    /// buffer to the kernel under group `bgid` of `ring`.
    pub fn new(ring: &Ring, bgid: u16, count: u16, size: usize) -> Result<BufRing, UringError> {
        assert!(count.is_power_of_two(), "a buffer ring holds 2^n entries");
        let page = 4096;
        let entries_len =
            (count as usize * std::mem::size_of::<BufRingEntry>()).div_ceil(page) * page;
        let entries = Mapping::new(entries_len)?;
        let buffers = Mapping::new(count as usize * size)?;
        let mut ring_bufs = BufRing {
            bgid,
            count,
            size,
            entries,
            buffers,
            tail: 0,
            registered: false,
        };
        for bid in 0..count {
            ring_bufs.write_entry(bid);
        }
        ring_bufs.publish();
        // SAFETY: `entries` holds `count` entries, is page aligned, and lives as long as `self`;
        // it is unregistered in `unregister` (or leaked with `self` when the engine cannot
        // confirm the kernel is done with it).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                ring_bufs.entries.as_ptr() as u64,
                count,
                bgid,
                0,
            )
        }
        .map_err(UringError::BufRing)?;
        ring_bufs.registered = true;
        Ok(ring_bufs)
    }

    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    pub fn count(&self) -> u16 {
        self.count
    }

    pub fn buffer_size(&self) -> usize {
        self.size
    }

    /// Buffer `bid`'s first `len` bytes, which a completion has just handed back to us.
    ///
    /// # Safety
    /// A completion carrying `bid` must have been reaped and the buffer not given back since:
    /// only then does the kernel neither write it nor lend it out.
    pub unsafe fn filled(&mut self, bid: u16, len: usize) -> &mut [u8] {
        assert!(bid < self.count && len <= self.size);
        // SAFETY: `bid < count` and `len <= size` keep the slice inside `buffers`; the caller
        // guarantees the kernel has finished with it, and `&mut self` makes the slice unique.
        unsafe {
            std::slice::from_raw_parts_mut(self.buffers.as_ptr().add(bid as usize * self.size), len)
        }
    }

    /// Lends buffer `bid` to the kernel again. The caller must no longer use a slice from
    /// [`BufRing::filled`] (the borrow checker sees to it: `filled` borrows `self` mutably).
    pub fn give_back(&mut self, bid: u16) {
        if bid >= self.count {
            return;
        }
        let slot = self.tail;
        self.write_entry_at(slot, bid);
        self.tail = self.tail.wrapping_add(1);
        self.publish();
    }

    fn write_entry(&mut self, bid: u16) {
        let slot = self.tail;
        self.write_entry_at(slot, bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn write_entry_at(&mut self, slot: u16, bid: u16) {
        let index = (slot & (self.count - 1)) as usize;
        let base = self.entries.as_ptr() as *mut BufRingEntry;
        // SAFETY: `index < count`, so the entry lies inside `entries`. The entry at the tail is
        // not visible to the kernel until `publish` moves the tail past it, so writing it races
        // with nothing. Entry 0's last field doubles as the tail: `set_*` leave it alone.
        let entry = unsafe { &mut *base.add(index) };
        // SAFETY: `bid < count`, so the buffer lies inside `buffers`.
        let addr = unsafe { self.buffers.as_ptr().add(bid as usize * self.size) };
        entry.set_addr(addr as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
    }

    /// Makes every entry written so far visible to the kernel.
    fn publish(&self) {
        let base = self.entries.as_ptr() as *const BufRingEntry;
        // SAFETY: `base` is the ring's first entry, initialised in `new`; `tail` only computes
        // the address of its tail field.
        let tail = unsafe { BufRingEntry::tail(base) } as *const AtomicU16;
        // SAFETY: the tail is a naturally aligned u16 inside `entries`, shared with the kernel,
        // which only reads it; Release orders the entry writes before it.
        unsafe { (*tail).store(self.tail, Ordering::Release) };
    }

    /// Takes the buffers back from the kernel. Only once no request that may pick a buffer from
    /// this group is in flight (the engine's teardown checks that first).
    pub fn unregister(&mut self, ring: &Ring) -> std::io::Result<()> {
        if self.registered {
            ring.submitter().unregister_buf_ring(self.bgid)?;
            self.registered = false;
        }
        Ok(())
    }
}
