//! Load on the machine from outside a run: steal time (the hypervisor gave our CPUs to someone
//! else) and CPU that processes other than the run's used, from /proc/stat and the run's own
//! process CPU. On a shared 2-core machine either one moves the figures; a run where they were
//! large is flagged, not hidden.

use serde::{Deserialize, Serialize};

/// A run is flagged when others (steal + busy CPU outside the run) took this share of the
/// machine's CPU time during its measured phase.
pub const OUTSIDE_LOAD_FLAG: f64 = 0.10;

/// One reading of the machine-wide line of /proc/stat, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SysSample {
    /// user + nice + system + irq + softirq of all CPUs (guest time is inside user).
    pub busy_s: f64,
    pub steal_s: f64,
}

impl SysSample {
    pub fn read() -> SysSample {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_stat(&t, super::procs::ticks_per_second()))
            .unwrap_or_default()
    }
}

/// Parses the `cpu` line of /proc/stat (`ticks` per second).
pub fn parse_stat(text: &str, ticks: f64) -> Option<SysSample> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|w| w.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0) as f64 / ticks;
    // user nice system idle iowait irq softirq steal guest guest_nice
    Some(SysSample {
        busy_s: at(0) + at(1) + at(2) + at(5) + at(6),
        steal_s: at(7),
    })
}

/// What the machine did during one measured phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    pub wall_s: f64,
    pub cores: usize,
    /// Busy CPU time of the whole machine.
    pub machine_busy_s: f64,
    /// CPU time of the run's own processes (clients, router, relays).
    pub run_cpu_s: f64,
    pub steal_s: f64,
}

impl Load {
    pub fn between(
        before: SysSample,
        after: SysSample,
        wall_s: f64,
        cores: usize,
        run_cpu_s: f64,
    ) -> Load {
        Load {
            wall_s,
            cores,
            machine_busy_s: (after.busy_s - before.busy_s).max(0.0),
            run_cpu_s,
            steal_s: (after.steal_s - before.steal_s).max(0.0),
        }
    }

    fn capacity(&self) -> f64 {
        self.wall_s * self.cores.max(1) as f64
    }

    /// Busy CPU outside the run's processes. It also holds kernel threads working for the run
    /// (ksoftirqd) and interrupt time, so it is an upper bound of what others took.
    pub fn outside_busy_s(&self) -> f64 {
        (self.machine_busy_s - self.run_cpu_s).max(0.0)
    }

    /// Share of the machine's CPU time busy outside the run.
    pub fn outside_share(&self) -> f64 {
        let c = self.capacity();
        if c > 0.0 {
            self.outside_busy_s() / c
        } else {
            0.0
        }
    }

    pub fn steal_share(&self) -> f64 {
        let c = self.capacity();
        if c > 0.0 {
            self.steal_s / c
        } else {
            0.0
        }
    }

    /// Share of the machine others had: busy outside the run plus steal, at most all of it
    /// (clock-tick rounding of short phases can push the sum past 1).
    pub fn others_share(&self) -> f64 {
        (self.outside_share() + self.steal_share()).min(1.0)
    }

    pub fn flagged(&self) -> bool {
        self.others_share() >= OUTSIDE_LOAD_FLAG
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_busy_and_steal_from_proc_stat() {
        let text = "cpu  100 20 30 1000 5 7 3 40 0 0\ncpu0 50 10 15 500 2 3 1 20 0 0\nintr 1\n";
        let s = parse_stat(text, 100.0).unwrap();
        assert!((s.busy_s - 1.6).abs() < 1e-9, "{s:?}");
        assert!((s.steal_s - 0.4).abs() < 1e-9, "{s:?}");
        assert!(parse_stat("intr 1\n", 100.0).is_none());
    }

    /// Others' share is what the machine did beyond the run's own processes, plus steal; a run
    /// at or above the threshold is flagged.
    #[test]
    fn flags_a_run_where_others_took_the_machine() {
        let before = SysSample {
            busy_s: 10.0,
            steal_s: 1.0,
        };
        let quiet = Load::between(
            before,
            SysSample {
                busy_s: 11.9,
                steal_s: 1.02,
            },
            1.0,
            2,
            1.8,
        );
        assert!((quiet.outside_share() - 0.05).abs() < 1e-9);
        assert!((quiet.steal_share() - 0.01).abs() < 1e-9);
        assert!(!quiet.flagged());
        let loaded = Load::between(
            before,
            SysSample {
                busy_s: 12.0,
                steal_s: 1.1,
            },
            1.0,
            2,
            1.7,
        );
        assert!((loaded.others_share() - 0.2).abs() < 1e-9);
        assert!(loaded.flagged());
        // The run's own CPU is never counted as outside load, even when the clock ticks of the
        // two readings disagree a little.
        let own = Load::between(before, before, 1.0, 2, 0.5);
        assert_eq!(own.outside_busy_s(), 0.0);
    }
}
