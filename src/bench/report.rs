//! How `rlinkd bench` shows its results: a table on stdout, JSON, SVG charts, and the project's
//! targets checked against ratios measured in the same run.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{RunResult, Transport, Workload};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub kernel: String,
}

impl Machine {
    pub fn read() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
                })
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu,
            kernel,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    pub required: String,
    pub measured: String,
    /// None when this run did not measure what the target needs.
    pub met: Option<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub date: String,
    pub command: String,
    pub machine: Machine,
    pub args: String,
    pub results: Vec<RunResult>,
    pub targets: Vec<Target>,
    pub failures: Vec<String>,
}

/// Today's date (UTC) as YYYY-MM-DD.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn find(rs: &[RunResult], w: Workload, t: Transport) -> Option<&RunResult> {
    rs.iter()
        .find(|r| r.workload == w && r.transport == t && r.verified)
}

/// The targets of the benchmark issue, as ratios within this run.
pub fn targets(rs: &[RunResult]) -> Vec<Target> {
    let mut v = Vec::new();
    let mut push = |name: &str, required: String, measured: Option<(String, bool)>| match measured {
        Some((m, met)) => v.push(Target {
            name: name.into(),
            required,
            measured: m,
            met: Some(met),
        }),
        None => v.push(Target {
            name: name.into(),
            required,
            measured: "not measured in this run".into(),
            met: None,
        }),
    };
    let q = |w| find(rs, w, Transport::Quic);
    push(
        "bulk goodput, quic vs tls",
        ">= 0.35 x".into(),
        q(Workload::Bulk)
            .zip(find(rs, Workload::Bulk, Transport::Tls))
            .map(|(q, t)| {
                let r = q.goodput_mb_s / t.goodput_mb_s;
                (
                    format!(
                        "{r:.2} x ({:.0} vs {:.0} MB/s)",
                        q.goodput_mb_s, t.goodput_mb_s
                    ),
                    r >= 0.35,
                )
            }),
    );
    push(
        "events frames/s, quic vs tcp",
        ">= 0.5 x".into(),
        q(Workload::Events)
            .zip(find(rs, Workload::Events, Transport::Tcp))
            .map(|(q, t)| {
                let r = q.frames_per_s / t.frames_per_s;
                (
                    format!(
                        "{r:.2} x ({:.0} vs {:.0} frames/s)",
                        q.frames_per_s, t.frames_per_s
                    ),
                    r >= 0.5,
                )
            }),
    );
    push(
        "rpc p99 (1 link), quic vs tcp",
        "<= tcp + 150 us".into(),
        q(Workload::Rpc)
            .zip(find(rs, Workload::Rpc, Transport::Tcp))
            .and_then(|(q, t)| {
                let (ql, tl) = (q.latency.as_ref()?.p99, t.latency.as_ref()?.p99);
                Some((
                    format!("{ql:.0} us vs {tl:.0} us (+{:.0} us)", ql - tl),
                    ql <= tl + 150.0,
                ))
            }),
    );
    push(
        "realms: open all links (quic)",
        "<= 3 s".into(),
        q(Workload::Realms).and_then(|r| {
            r.extra
                .get("open_all_s")
                .map(|s| (format!("{s:.2} s for {} links", r.links), *s <= 3.0))
        }),
    );
    push(
        "realms: RSS per idle link, each rlinkd",
        "<= 64 KiB".into(),
        q(Workload::Realms).map(|r| {
            let per: Vec<(String, f64)> = r
                .extra
                .iter()
                .filter(|(k, _)| k.starts_with("rss_kb_per_link_rlinkd"))
                .map(|(k, v)| (k.trim_start_matches("rss_kb_per_link_").to_string(), *v))
                .collect();
            let text = per
                .iter()
                .map(|(n, v)| format!("{n} {v:.1} KiB"))
                .collect::<Vec<_>>()
                .join(", ");
            (text, !per.is_empty() && per.iter().all(|(_, v)| *v <= 64.0))
        }),
    );
    push(
        "stall: other links' goodput kept (quic)",
        ">= 0.8 x".into(),
        q(Workload::Stall).and_then(|r| {
            r.extra
                .get("stall_ratio")
                .map(|s| (format!("{s:.2} x"), *s >= 0.8))
        }),
    );
    push(
        "open: new link to first echo, quic vs tls (median)",
        "<= 1 x".into(),
        q(Workload::Open)
            .zip(find(rs, Workload::Open, Transport::Tls))
            .and_then(|(q, t)| {
                let (ql, tl) = (q.latency.as_ref()?.p50, t.latency.as_ref()?.p50);
                Some((
                    format!("{:.2} x ({ql:.0} us vs {tl:.0} us)", ql / tl),
                    ql <= tl,
                ))
            }),
    );
    v
}

fn describe(w: Workload) -> &'static str {
    match w {
        Workload::Bulk => "bulk: 1 link, 64 KiB frames into a sink",
        Workload::Events => "events: 64 links, 256 B frames into a sink",
        Workload::Rpc => "rpc: 1 link, 128 B request/echo",
        Workload::Rpc64 => "rpc64: 64 links, 128 B request/echo",
        Workload::Realms => "realms: many links opened over one node pair, then one request each",
        Workload::Stall => "stall: 8 links, link 0's reader stops",
        Workload::Open => "open: new link on a connected pair, connect to first echo",
    }
}

/// The readable table.
pub fn table(rep: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nrlinkd bench, {} ({} cores, {}, kernel {})",
        rep.date, rep.machine.cores, rep.machine.cpu, rep.machine.kernel
    );
    let _ = writeln!(s, "command: {}", rep.command);
    let mut workloads: Vec<Workload> = rep.results.iter().map(|r| r.workload).collect();
    workloads.dedup();
    for w in workloads {
        let _ = writeln!(s, "\n{}", describe(w));
        let _ = writeln!(
            s,
            "  {:<5} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9}   {:<44} {:>9} {:>24}  datagrams/syscall",
            "",
            "MB/s",
            "frames/s",
            "p50 us",
            "p90 us",
            "p99 us",
            "p99.9 us",
            "max us",
            "CPU s/GB (process)",
            "RSS MB",
            "sockets (process)",
        );
        for r in rep.results.iter().filter(|r| r.workload == w) {
            let l = r.latency.clone().unwrap_or_default();
            let cpu = r
                .processes
                .iter()
                .map(|p| {
                    format!(
                        "{} {}",
                        p.name.trim_start_matches("rlinkd-"),
                        p.cpu_s_per_gb.map_or("-".into(), |v| format!("{v:.1}"))
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let rss = r
                .processes
                .iter()
                .filter(|p| p.name.starts_with("rlinkd"))
                .map(|p| format!("{:.0}", p.rss_mb))
                .collect::<Vec<_>>()
                .join("/");
            let sockets = r
                .processes
                .iter()
                .map(|p| p.sockets.to_string())
                .collect::<Vec<_>>()
                .join("/");
            let dg = if r.datagrams_per_send.is_empty() {
                String::new()
            } else {
                let tx = r
                    .datagrams_per_send
                    .values()
                    .map(|v| format!("{v:.1}"))
                    .collect::<Vec<_>>()
                    .join("/");
                let rx = r
                    .datagrams_per_receive
                    .values()
                    .map(|v| format!("{v:.1}"))
                    .collect::<Vec<_>>()
                    .join("/");
                format!("send {tx}, recv {rx}")
            };
            let _ = writeln!(
                s,
                "  {:<5} {:>10.1} {:>11.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0}   {:<44} {:>9} {:>24}  {}{}",
                r.transport.name(),
                r.goodput_mb_s,
                r.frames_per_s,
                l.p50,
                l.p90,
                l.p99,
                l.p999,
                l.max,
                cpu,
                if rss.is_empty() { "-".into() } else { rss },
                sockets,
                dg,
                if r.verified { "" } else { "  NOT VERIFIED" }
            );
            if let Some(k) = &r.tls_offload {
                let _ = writeln!(s, "        {k}");
            }
            if !r.extra.is_empty() {
                let extra = r
                    .extra
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let _ = writeln!(s, "        {extra}");
            }
        }
        if let Some(r) = rep.results.iter().find(|r| r.workload == w) {
            let _ = writeln!(
                s,
                "        latency: {}; check: {}",
                r.latency_kind, r.verification
            );
        }
    }
    let _ = writeln!(s, "\ntargets (ratios from this run):");
    for t in &rep.targets {
        let _ = writeln!(
            s,
            "  [{}] {:<48} required {:<16} measured {}",
            match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "n/a",
            },
            t.name,
            t.required,
            t.measured
        );
    }
    if !rep.failures.is_empty() {
        let _ = writeln!(s, "\nfailed runs:");
        for f in &rep.failures {
            let _ = writeln!(s, "  {f}");
        }
    }
    s
}

/// SVG charts: goodput per transport for each throughput workload, and latency percentiles.
pub fn plot(rep: &Report, dir: &Path) -> anyhow::Result<()> {
    super::plots::write_all(rep, dir)
}
