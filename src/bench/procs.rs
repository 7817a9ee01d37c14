//! Per-process accounting from /proc: CPU time, resident memory, sockets.

use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

/// One reading of a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// user + system CPU time, in seconds.
    pub cpu_s: f64,
    pub rss_kb: u64,
    pub sockets: u64,
    pub threads: u64,
}

/// What one process cost during a measured phase.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcCost {
    pub name: String,
    pub cpu_s: f64,
    /// CPU seconds per GB of payload forwarded (None when nothing was forwarded).
    pub cpu_s_per_gb: Option<f64>,
    pub rss_mb: f64,
    pub sockets: u64,
    /// Threads at the end of the phase (0 in runs saved before it was recorded).
    #[serde(default)]
    pub threads: u64,
}

impl ProcCost {
    /// A relay of the path (rlinkd a/b, haproxy a/b, stunnel a/b), as opposed to an endpoint
    /// (the clients and the router emulator, present in every transport).
    pub fn is_relay(&self) -> bool {
        is_relay(&self.name)
    }
}

pub fn is_relay(name: &str) -> bool {
    name != "clients" && name != "router"
}

pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the ')' (0-based).
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cpu_s = (ticks(11) + ticks(12)) as f64 / ticks_per_second();
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let rss_kb = field("VmRSS:");
    let threads = field("Threads:");
    let sockets = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    fs::read_link(e.path())
                        .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
                })
                .count() as u64
        })
        .unwrap_or(0);
    Ok(ProcSample {
        cpu_s,
        rss_kb,
        sockets,
        threads,
    })
}

/// The cost of a phase from two samples; `payload_bytes` is what the phase forwarded.
pub fn cost(name: &str, before: ProcSample, after: ProcSample, payload_bytes: u64) -> ProcCost {
    let cpu_s = (after.cpu_s - before.cpu_s).max(0.0);
    let gb = payload_bytes as f64 / 1e9;
    ProcCost {
        name: name.to_string(),
        cpu_s,
        cpu_s_per_gb: (gb > 0.0).then(|| cpu_s / gb),
        rss_mb: after.rss_kb as f64 / 1024.0,
        sockets: after.sockets,
        threads: after.threads,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn samples_this_process() {
        let s = super::sample(std::process::id()).unwrap();
        assert!(s.rss_kb > 0);
        assert!(s.cpu_s >= 0.0);
        assert!(s.threads >= 1);
    }
}
