//! Where shards run: which CPU each shard's thread is pinned to.
//!
//! The CPUs a node may use are the process's affinity mask when it starts (`taskset`, a cgroup
//! cpuset, systemd's `CPUAffinity=`), read with [`allowed_cpus`] before any thread is pinned.
//! [`Placement::plan`] turns the config's `shards` and `cpus` into one CPU per shard:
//!
//! - `cpus` given: shard `i` runs on `cpus[i]`; every one must be in the mask (the error names
//!   the CPU), and `shards`, if given too, must equal their number.
//! - otherwise the mask's CPUs in ascending order: shard `i` on the `i`-th. `shards` defaults to
//!   the number of CPUs in the mask. More shards than CPUs are allowed (a test box, a container
//!   with a CPU quota): they wrap around and share CPUs, and [`Placement::warning`] says so,
//!   since shards sharing a core compete for it instead of scaling.
//!
//! Each shard's thread calls [`pin_current_thread`] first thing; it logs which CPU the shard
//! is pinned to.

use std::fmt;
use std::io;
use std::mem;

use crate::quic::cid::{ShardCount, MAX_SHARDS};

/// CPU ids rlinkd can pin to: those a `cpu_set_t` holds (0 ..= 1023).
pub const MAX_CPUS: usize = libc::CPU_SETSIZE as usize;

/// Why shards could not be placed. Each names the CPU or the value at fault.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error("cannot read this process's CPU affinity mask: {0}")]
    ReadMask(#[source] io::Error),
    #[error("CPU {cpu} is not in this process's CPU affinity mask ({allowed})")]
    NotAllowed { cpu: usize, allowed: CpuList },
    #[error("CPU {cpu} is beyond the {MAX_CPUS} CPUs rlinkd can pin to")]
    OutOfRange { cpu: usize },
    #[error("CPU {cpu} is listed twice in `cpus`")]
    Duplicate { cpu: usize },
    #[error("shards = {shards} but `cpus` lists {cpus} CPUs; give one CPU per shard")]
    CountMismatch { shards: usize, cpus: usize },
    #[error("shards = {0} is outside 1..={MAX_SHARDS}")]
    ShardCount(usize),
    #[error("the CPU affinity mask is empty")]
    NoCpus,
    #[error("cannot pin shard {shard} to CPU {cpu}: {source}")]
    Pin {
        shard: usize,
        cpu: usize,
        source: io::Error,
    },
}

/// A set of CPU ids in ascending order; shown as the kernel shows them ("0-3,6").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList(Vec<usize>);

impl CpuList {
    /// The distinct ids of `cpus`, sorted.
    pub fn new(cpus: impl IntoIterator<Item = usize>) -> CpuList {
        let mut v: Vec<usize> = cpus.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        CpuList(v)
    }

    pub fn contains(&self, cpu: usize) -> bool {
        self.0.binary_search(&cpu).is_ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[usize] {
        &self.0
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "none");
        }
        let mut i = 0;
        let mut first = true;
        while i < self.0.len() {
            let start = self.0[i];
            let mut end = start;
            while i + 1 < self.0.len() && self.0[i + 1] == end + 1 {
                i += 1;
                end = self.0[i];
            }
            if !first {
                write!(f, ",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

/// The CPUs the calling thread may run on. Called once at start, before any thread is pinned,
/// it is the process's affinity mask (threads inherit it).
pub fn allowed_cpus() -> Result<CpuList, PlacementError> {
    // SAFETY: cpu_set_t is a plain bit array, valid when zeroed.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: passes a live cpu_set_t and its exact size; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_getaffinity(0, mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(PlacementError::ReadMask(io::Error::last_os_error()));
    }
    // SAFETY: CPU_ISSET reads bit `cpu` of `set`, and every `cpu` is below CPU_SETSIZE.
    Ok(CpuList::new(
        (0..MAX_CPUS).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }),
    ))
}

/// One CPU per shard, decided from the config and the affinity mask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// `cpus[i]` is shard `i`'s CPU.
    cpus: Vec<usize>,
    /// More shards than CPUs: some share one.
    shared: bool,
    allowed: CpuList,
}

impl Placement {
    /// `shards` and `cpus` as the config gives them (`None`: not set); `allowed` from
    /// [`allowed_cpus`]. The rules are in the module doc.
    pub fn plan(
        shards: Option<usize>,
        cpus: Option<&[usize]>,
        allowed: &CpuList,
    ) -> Result<Placement, PlacementError> {
        if allowed.is_empty() {
            return Err(PlacementError::NoCpus);
        }
        if let Some(n) = shards {
            if ShardCount::new(n).is_none() {
                return Err(PlacementError::ShardCount(n));
            }
        }
        let chosen = match cpus {
            Some(list) => {
                if let Some(n) = shards.filter(|&n| n != list.len()) {
                    return Err(PlacementError::CountMismatch {
                        shards: n,
                        cpus: list.len(),
                    });
                }
                if ShardCount::new(list.len()).is_none() {
                    return Err(PlacementError::ShardCount(list.len()));
                }
                for (i, &cpu) in list.iter().enumerate() {
                    if cpu >= MAX_CPUS {
                        return Err(PlacementError::OutOfRange { cpu });
                    }
                    if list[..i].contains(&cpu) {
                        return Err(PlacementError::Duplicate { cpu });
                    }
                    if !allowed.contains(cpu) {
                        return Err(PlacementError::NotAllowed {
                            cpu,
                            allowed: allowed.clone(),
                        });
                    }
                }
                list.to_vec()
            }
            None => {
                // Bounded: more than MAX_SHARDS CPUs in the mask give MAX_SHARDS shards.
                let n = shards.unwrap_or(allowed.len().min(MAX_SHARDS));
                let mask = allowed.as_slice();
                (0..n).map(|i| mask[i % mask.len()]).collect()
            }
        };
        let shared = CpuList::new(chosen.iter().copied()).len() < chosen.len();
        Ok(Placement {
            cpus: chosen,
            shared,
            allowed: allowed.clone(),
        })
    }

    pub fn shards(&self) -> ShardCount {
        // `plan` keeps the count within 1..=MAX_SHARDS.
        ShardCount::new(self.cpus.len()).unwrap_or(ShardCount::ONE)
    }

    /// Shard `i`'s CPU, for `i` below [`Placement::shards`].
    pub fn cpu(&self, shard: usize) -> Option<usize> {
        self.cpus.get(shard).copied()
    }

    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// A line for the log when shards must share CPUs.
    pub fn warning(&self) -> Option<String> {
        self.shared.then(|| {
            format!(
                "{} shards on {} CPUs (affinity mask {}): shards share CPUs and compete for them",
                self.cpus.len(),
                CpuList::new(self.cpus.iter().copied()).len(),
                self.allowed
            )
        })
    }
}

/// Pins the calling thread to `cpu` and logs it as shard `shard`'s CPU.
pub fn pin_current_thread(shard: usize, cpu: usize) -> Result<(), PlacementError> {
    if cpu >= MAX_CPUS {
        return Err(PlacementError::OutOfRange { cpu });
    }
    // SAFETY: cpu_set_t is a plain bit array, valid when zeroed.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE, so CPU_SET writes inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: passes a live cpu_set_t and its exact size; pid 0 is the calling thread only.
    let rc = unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(PlacementError::Pin {
            shard,
            cpu,
            source: io::Error::last_os_error(),
        });
    }
    tracing::info!(shard, cpu, "shard {shard} pinned to CPU {cpu}");
    Ok(())
}

/// The CPU the calling thread is running on right now.
pub fn current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu takes no arguments and only returns a number.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}

#[cfg(test)]
mod tests;
