//! The relay's blocks and glibc's allocator.
//!
//! A block whose bytes went to quiche is freed when the peer acknowledges its last slice, on the
//! shard's thread, into that thread's arena; the next read allocates a new one. By default glibc
//! gives an arena's free top back to the kernel once it exceeds 128 KiB (`madvise`), so a busy
//! link pays a system call for every few blocks freed and a page fault for every page of the
//! next ones: measured on a 3 s bulk run (MTU 1500, one shard per node), 141,000 page faults and
//! 832 `madvise` calls across the bench's processes, against 4,600 and 11 with the threshold
//! below. An arena now keeps up to that much free memory at its top for reuse.
//!
//! Setting the threshold also fixes glibc's mmap threshold at its default (128 KiB) instead of
//! letting it rise after large frees: an allocation of 128 KiB or more is then always its own
//! mapping. The relay's blocks are at most 64 KiB ([`crate::relay::pipe::MAX_BLOCK`]) unless a
//! slow sink has left more than that unsent, so the hot path never meets it.

/// Free memory an arena keeps before it gives its top back to the kernel.
pub const TRIM_THRESHOLD: usize = 16 << 20;

/// Raises glibc's trim threshold to [`TRIM_THRESHOLD`] unless the operator set one
/// (`MALLOC_TRIM_THRESHOLD_`, or `glibc.malloc.trim_threshold` in `GLIBC_TUNABLES`). Call before
/// the shards start. Returns whether it was set.
pub fn keep_freed_blocks() -> bool {
    let env = |v| std::env::var(v).unwrap_or_default();
    if !env("MALLOC_TRIM_THRESHOLD_").is_empty()
        || env("GLIBC_TUNABLES").contains("malloc.trim_threshold")
    {
        return false;
    }
    set_trim_threshold(TRIM_THRESHOLD)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_trim_threshold(bytes: usize) -> bool {
    let Ok(value) = libc::c_int::try_from(bytes) else {
        return false;
    };
    // SAFETY: mallopt takes no pointer: it sets one parameter of glibc's allocator under the
    // allocator's own lock, and is valid at any time (here before the shards start).
    unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, value) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_trim_threshold(_bytes: usize) -> bool {
    false
}
