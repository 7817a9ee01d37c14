//! How `rlinkd bench` shows its results: a table on stdout, JSON, SVG charts, and the project's
//! targets checked against ratios measured in the same run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::load::OUTSIDE_LOAD_FLAG;
use super::peers::RelayInfo;
use super::summary::{self, Row, Stat};
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

/// A transport that was asked for but could not run here, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub transport: Transport,
    /// The one workload it could not run (None: every workload).
    #[serde(default)]
    pub workload: Option<Workload>,
    /// `skipped: haproxy not installed`
    pub reason: String,
}

fn one() -> usize {
    1
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub date: String,
    pub command: String,
    pub machine: Machine,
    pub args: String,
    /// Rounds per (workload, transport) cell (runs saved before rounds existed had one).
    #[serde(default = "one")]
    pub rounds: usize,
    /// `relay.buffer_size` of both rlinkd nodes when `--relay-buffer` set it (else the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_buffer: Option<u64>,
    /// The peer relays: binary, version, thread model.
    #[serde(default)]
    pub relays: Vec<RelayInfo>,
    /// Where the peers' configs of this run were written.
    #[serde(default)]
    pub peer_configs: Option<String>,
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    /// Workloads and the transports each was to run on (to show skipped rows in place).
    #[serde(default)]
    pub planned: Vec<(Workload, Vec<Transport>)>,
    /// Every run, every round.
    pub results: Vec<RunResult>,
    pub targets: Vec<Target>,
    pub failures: Vec<String>,
}

impl Report {
    /// Reads a run saved with `--json`, also one saved by an earlier version of the bench.
    pub fn from_json(text: &str) -> serde_json::Result<Report> {
        let mut rep: Report = serde_json::from_str(text)?;
        // Runs saved before the UDP payload was recorded per result had one for the whole run,
        // in the arguments (`udp_payload: 1452`).
        let payload = rep
            .args
            .split("udp_payload: ")
            .nth(1)
            .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<usize>().ok());
        for r in &mut rep.results {
            if r.transport == Transport::Quic && r.udp_payload.is_none() {
                r.udp_payload = payload;
            }
        }
        Ok(rep)
    }
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

pub use super::targets::targets;

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

/// A figure in at most about 6 characters, for ranges and ratios.
pub fn compact(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

fn range(s: &Stat) -> String {
    format!("{}..{}", compact(s.min), compact(s.max))
}

/// The short name of a process in a row: `a`, `b` for rlinkd, `haproxy-a` for a peer.
fn short_name(name: &str) -> &str {
    name.trim_start_matches("rlinkd-")
}

/// What the rlinkd nodes' `relay.buffer_size` was, when `--relay-buffer` changed it.
pub fn relay_buffer_line(bytes: Option<u64>) -> Option<String> {
    bytes.map(|b| {
        format!(
            "rlinkd relay.buffer_size: {} on both nodes (default {})",
            crate::config::units::ByteSize(b),
            crate::config::units::ByteSize(
                crate::config::RelaySettings::default().buffer_size as u64
            )
        )
    })
}

fn header(s: &mut String, rep: &Report) {
    let _ = writeln!(
        s,
        "\nrlinkd bench, {} ({} cores, {}, kernel {})",
        rep.date, rep.machine.cores, rep.machine.cpu, rep.machine.kernel
    );
    let _ = writeln!(s, "command: {}", rep.command);
    if let Some(line) = relay_buffer_line(rep.relay_buffer) {
        let _ = writeln!(s, "{line}");
    }
    if rep.rounds > 1 {
        let _ = writeln!(
            s,
            "{} rounds per (workload, transport), transports interleaved (forward, reverse, forward \
             order); each figure is the median of the verified rounds, `range` its min..max",
            rep.rounds
        );
    }
    let _ = writeln!(
        s,
        "MTU column: quic at a 1500-byte path MTU (1452 B UDP payload) or 9000 (8952 B); `lo`: \
         TCP or Unix sockets on loopback, which --mtu does not change (a TCP sender hands the \
         kernel up to 64 KiB at a time at any MTU); `*`: loopback-size UDP, loopback only, not a \
         network path"
    );
    for r in &rep.relays {
        match &r.binary {
            Some(b) => {
                let _ = writeln!(
                    s,
                    "{}: {} ({b}); {}",
                    r.transport.name(),
                    r.version,
                    r.threads
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "{}: {}",
                    r.transport.name(),
                    r.skipped().unwrap_or_default()
                );
            }
        }
    }
    if !rep.relays.is_empty() {
        let _ = writeln!(
            s,
            "peers: TLS 1.3 only, {}, mutual authentication with the rlinkd cert CA, peer name \
             checked (HAProxy: verify required + verifyhost / client CN; stunnel: verifyChain + \
             checkHost); otherwise defaults{}",
            super::peers::CIPHERSUITE,
            rep.peer_configs
                .as_ref()
                .map(|d| format!("; configs in {d}"))
                .unwrap_or_default()
        );
    }
    let loads: Vec<&super::load::Load> =
        rep.results.iter().filter_map(|r| r.load.as_ref()).collect();
    if !loads.is_empty() {
        let shares: Vec<f64> = loads.iter().map(|l| l.others_share() * 100.0).collect();
        let steal: Vec<f64> = loads.iter().map(|l| l.steal_share() * 100.0).collect();
        let (o, st) = (Stat::of(&shares), Stat::of(&steal));
        let flagged = loads.iter().filter(|l| l.flagged()).count();
        let _ = writeln!(
            s,
            "outside load (others' busy CPU + steal, share of the machine during each measured \
             phase, from /proc/stat less the run's own processes): median {:.0} %, max {:.0} % \
             (steal median {:.1} %); {flagged} of {} runs flagged (>= {:.0} %){}",
            o.map_or(0.0, |s| s.median),
            o.map_or(0.0, |s| s.max),
            st.map_or(0.0, |s| s.median),
            loads.len(),
            OUTSIDE_LOAD_FLAG * 100.0,
            if flagged > 0 {
                ": see `outside load` under the rows"
            } else {
                ""
            }
        );
    }
}

fn row_lines(s: &mut String, row: &Row, rounds: usize) {
    let r = &row.median;
    let l = r.latency.clone().unwrap_or_default();
    let _ = writeln!(
        s,
        "  {:<8} {:>8} {:>10.1} {:>11.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0}  {:>8} {:>7} {:>7} {:>9}{}",
        row.variant.name(),
        row.variant.path_label(),
        r.goodput_mb_s,
        r.frames_per_s,
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.max,
        opt(row.get("cpu_all"), 2),
        opt(row.get("cpu_pair"), 2),
        opt(row.get("cpu_ends"), 2),
        opt(row.get("pair_us"), 1),
        if row.verified == row.rounds {
            String::new()
        } else {
            format!("  NOT VERIFIED in {} of {} rounds", row.rounds - row.verified, row.rounds)
        }
    );
    if rounds > 1 || row.rounds > 1 {
        let names = [
            ("MB/s", "goodput"),
            ("frames/s", "frames"),
            ("p50", "p50"),
            ("p99", "p99"),
            ("CPU s/GB", "cpu_all"),
            ("pair", "cpu_pair"),
            ("pair us/frame", "pair_us"),
        ];
        let parts: Vec<String> = names
            .iter()
            .filter_map(|(label, f)| {
                row.figures
                    .get(f)
                    .map(|st| format!("{label} {}", range(st)))
            })
            .collect();
        let _ = writeln!(
            s,
            "           range over {} rounds: {}",
            row.verified.max(1),
            parts.join(", ")
        );
    }
    let cpu = r
        .processes
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                short_name(&p.name),
                p.cpu_s_per_gb.map_or("-".into(), |v| format!("{v:.2}"))
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let relays: Vec<_> = r.processes.iter().filter(|p| p.is_relay()).collect();
    let rss = relays
        .iter()
        .map(|p| format!("{} {:.0}", short_name(&p.name), p.rss_mb))
        .collect::<Vec<_>>()
        .join(", ");
    let threads = relays
        .iter()
        .map(|p| format!("{} {}", short_name(&p.name), p.threads))
        .collect::<Vec<_>>()
        .join(", ");
    let sockets = r
        .processes
        .iter()
        .map(|p| p.sockets.to_string())
        .collect::<Vec<_>>()
        .join("/");
    let mut detail = format!("CPU s/GB by process: {cpu}; sockets {sockets}");
    if !relays.is_empty() {
        let _ = write!(detail, "; relay RSS MB: {rss}");
        // 0: a run saved before threads were recorded.
        if relays.iter().any(|p| p.threads > 0) {
            let _ = write!(detail, "; relay threads: {threads}");
        }
    }
    if !r.datagrams_per_send.is_empty() {
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
        let _ = write!(detail, "; datagrams/syscall send {tx}, recv {rx}");
    }
    if let Some(c) = r.relay_copies_per_byte {
        let _ = write!(detail, "; user-space copies/byte {c:.3} (counted)");
    }
    if let Some(total) = r.syscalls_per_gb {
        let _ = write!(
            detail,
            "; syscalls/GB {}",
            syscalls_per_gb(total, &r.syscalls_per_gb_by_call)
        );
    }
    let _ = writeln!(s, "           {detail}");
    if let Some(k) = &r.tls_offload {
        let _ = writeln!(s, "           {k}");
    }
    if !r.extra.is_empty() {
        let extra = r
            .extra
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(s, "           {extra}");
    }
    let flagged: Vec<String> = row
        .loads
        .iter()
        .filter(|(_, l)| l.flagged())
        .map(|(round, l)| {
            format!(
                "round {} {:.0} % (steal {:.0} %)",
                round + 1,
                l.others_share() * 100.0,
                l.steal_share() * 100.0
            )
        })
        .collect();
    if !flagged.is_empty() {
        let _ = writeln!(s, "           outside load FLAGGED: {}", flagged.join(", "));
    }
}

/// System calls per GB, both nodes: the total and its four largest calls, e.g.
/// `52.1k (udp_sendmsg 20.4k, epoll_wait 12.0k, local_read 9.9k, udp_recvmsg 8.1k)`.
fn syscalls_per_gb(total: f64, by_call: &BTreeMap<String, f64>) -> String {
    let k = |v: f64| {
        if v >= 1e3 {
            format!("{:.1}k", v / 1e3)
        } else {
            format!("{v:.0}")
        }
    };
    let mut calls: Vec<(&String, &f64)> = by_call.iter().collect();
    calls.sort_by(|a, b| b.1.total_cmp(a.1));
    let top: Vec<String> = calls
        .iter()
        .take(4)
        .map(|(c, v)| format!("{c} {}", k(**v)))
        .collect();
    if top.is_empty() {
        k(total)
    } else {
        format!("{} ({})", k(total), top.join(", "))
    }
}

/// The readable table.
pub fn table(rep: &Report) -> String {
    let mut s = String::new();
    header(&mut s, rep);
    let rows = summary::rows(&rep.results);
    let mut workloads: Vec<Workload> = rep.planned.iter().map(|(w, _)| *w).collect();
    for r in &rows {
        if !workloads.contains(&r.workload) {
            workloads.push(r.workload);
        }
    }
    for w in workloads {
        let _ = writeln!(s, "\n{}", describe(w));
        let _ = writeln!(
            s,
            "  {:<8} {:>8} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9}  {:>8} {:>7} {:>7} {:>9}",
            "",
            "MTU",
            "MB/s",
            "frames/s",
            "p50 us",
            "p90 us",
            "p99 us",
            "p99.9 us",
            "max us",
            "CPU s/GB",
            "pair",
            "ends",
            "pair us/f",
        );
        let planned: Vec<Transport> = rep
            .planned
            .iter()
            .find(|(pw, _)| *pw == w)
            .map(|(_, ts)| ts.clone())
            .unwrap_or_default();
        let mut shown: Vec<Transport> = Vec::new();
        for row in rows.iter().filter(|r| r.workload == w) {
            row_lines(&mut s, row, rep.rounds);
            shown.push(row.variant.transport);
        }
        for sk in &rep.skipped {
            if planned.contains(&sk.transport)
                && !shown.contains(&sk.transport)
                && sk.workload.is_none_or(|sw| sw == w)
            {
                let _ = writeln!(s, "  {:<8} {:>8} {}", sk.transport.name(), "", sk.reason);
            }
        }
        if let Some(r) = rows.iter().find(|r| r.workload == w) {
            let _ = writeln!(
                s,
                "        latency: {}; check (first row, first verified round; every round of every row is checked): {}",
                r.median.latency_kind, r.median.verification
            );
        }
    }
    let _ = writeln!(
        s,
        "\nCPU s/GB: every process of the path; pair: the two relays (rlinkd, HAProxy or stunnel \
         a + b); ends: clients + router; pair us/f: the pair's CPU microseconds per frame (per \
         round trip for rpc, per link for realms and open)."
    );
    ratios_section(&mut s, &rows, &rep.skipped);
    let _ = writeln!(s, "\ntargets (ratios from this run):");
    for t in &rep.targets {
        let _ = writeln!(
            s,
            "  [{}] {:<52} required {:<16} measured {}",
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

fn ratios_section(s: &mut String, rows: &[Row], skipped: &[Skipped]) {
    let ratios = summary::ratios(rows);
    if ratios.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\nratios, quic / other (medians): goodput and frames/s above 1 x and p50, p99, CPU \
         below 1 x favour quic"
    );
    let _ = writeln!(
        s,
        "  {:<8} {:>8}  {:<9} {:>9} {:>9} {:>8} {:>8} {:>12} {:>11}",
        "", "quic", "vs", "goodput", "frames/s", "p50", "p99", "pair CPU/GB", "all CPU/GB"
    );
    let x = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2} x"));
    let mut last: Option<Workload> = None;
    for r in &ratios {
        let w = if last == Some(r.workload) {
            ""
        } else {
            r.workload.name()
        };
        last = Some(r.workload);
        let _ = writeln!(
            s,
            "  {:<8} {:>8}  {:<9} {:>9} {:>9} {:>8} {:>8} {:>12} {:>11}",
            w,
            {
                let mut path = r.quic.path_label();
                if let Some(n) = r.quic.shards {
                    path.push_str(&format!(" {n}sh"));
                }
                if let Some(io) = r.quic.io {
                    path.push_str(&format!(" {}", io.name()));
                }
                path
            },
            r.other.transport.name(),
            x(r.goodput),
            x(r.frames),
            x(r.p50),
            x(r.p99),
            x(r.pair_cpu),
            x(r.all_cpu)
        );
    }
    for sk in skipped {
        let _ = writeln!(
            s,
            "  vs {}{}: {}",
            sk.transport.name(),
            sk.workload
                .map(|w| format!(" ({})", w.name()))
                .unwrap_or_default(),
            sk.reason
        );
    }
}

/// SVG charts: goodput per transport for each throughput workload, and latency percentiles.
pub fn plot(rep: &Report, dir: &Path) -> anyhow::Result<()> {
    super::plots::write_all(rep, dir)
}

#[cfg(test)]
mod syscall_tests {
    use super::*;

    #[test]
    fn syscalls_per_gb_show_the_total_and_the_largest_calls() {
        let by: BTreeMap<String, f64> = [
            ("epoll_wait", 12_000.0),
            ("udp_sendmsg", 20_400.0),
            ("local_read", 9_900.0),
            ("udp_recvmsg", 8_100.0),
            ("waker_write", 3.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(
            syscalls_per_gb(50_403.0, &by),
            "50.4k (udp_sendmsg 20.4k, epoll_wait 12.0k, local_read 9.9k, udp_recvmsg 8.1k)"
        );
        assert_eq!(syscalls_per_gb(950.0, &BTreeMap::new()), "950");
    }
}

#[cfg(test)]
mod header_tests {
    use super::*;

    #[test]
    fn a_run_with_another_relay_buffer_says_so_and_older_runs_read_as_the_default() {
        assert_eq!(
            relay_buffer_line(Some(256 << 10)).as_deref(),
            Some("rlinkd relay.buffer_size: 256 KiB on both nodes (default 64 KiB)")
        );
        assert_eq!(relay_buffer_line(None), None);
        let old = r#"{"date":"2026-12-01","command":"rlinkd bench","args":"",
            "machine":{"cores":2,"cpu":"x","kernel":"6"},
            "results":[],"targets":[],"failures":[]}"#;
        let rep = Report::from_json(old).expect("a run saved without the field");
        assert_eq!(rep.relay_buffer, None);
        let mut s = String::new();
        header(
            &mut s,
            &Report {
                relay_buffer: Some(1 << 20),
                ..rep
            },
        );
        assert!(s.contains("relay.buffer_size: 1 MiB on both nodes"), "{s}");
    }
}
