//! Rounds into rows: the median and min..max of each figure over the rounds of a cell, and the
//! ratios between quic and every other transport of the same workload.

use std::collections::BTreeMap;

use super::load::Load;
use super::{RunResult, Transport, Variant, Workload};

/// Median, smallest and largest value of one figure over a cell's rounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    /// None for no values. The median of an even count is the mean of the middle two.
    pub fn of(values: &[f64]) -> Option<Stat> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// The figures a row shows with their spread.
pub const FIGURES: [&str; 11] = [
    "goodput", "frames", "p50", "p90", "p99", "p999", "max", "cpu_all", "cpu_pair", "cpu_ends",
    "pair_us",
];

fn figure(r: &RunResult, name: &str) -> Option<f64> {
    let l = r.latency.as_ref();
    match name {
        "goodput" => Some(r.goodput_mb_s),
        "frames" => Some(r.frames_per_s),
        "p50" => l.map(|l| l.p50),
        "p90" => l.map(|l| l.p90),
        "p99" => l.map(|l| l.p99),
        "p999" => l.map(|l| l.p999),
        "max" => l.map(|l| l.max),
        "cpu_all" => r.all_cpu_s_per_gb(),
        "cpu_pair" => r.pair_cpu_s_per_gb(),
        "cpu_ends" => r.endpoints_cpu_s_per_gb(),
        "pair_us" => r.pair_cpu_us_per_frame(),
        _ => None,
    }
}

/// One (workload, variant) cell over its rounds.
#[derive(Clone, Debug)]
pub struct Row {
    pub workload: Workload,
    pub variant: Variant,
    /// A round of the cell whose figures are replaced by the medians over the rounds counted
    /// (the verified ones, or all when none verified): what the charts draw.
    pub median: RunResult,
    /// Each of [`FIGURES`] that this cell measured.
    pub figures: BTreeMap<&'static str, Stat>,
    pub rounds: usize,
    pub verified: usize,
    /// (round, load) of every round that measured it.
    pub loads: Vec<(usize, Load)>,
}

impl Row {
    pub fn get(&self, figure: &str) -> Option<f64> {
        self.figures.get(figure).map(|s| s.median)
    }
}

/// Rows in workload order of first appearance, variants in transport order.
pub fn rows(results: &[RunResult]) -> Vec<Row> {
    let mut order: Vec<Workload> = Vec::new();
    for r in results {
        if !order.contains(&r.workload) {
            order.push(r.workload);
        }
    }
    let mut out = Vec::new();
    for w in order {
        let mut variants: Vec<Variant> = results
            .iter()
            .filter(|r| r.workload == w)
            .map(|r| r.variant())
            .collect();
        variants.sort();
        variants.dedup();
        for v in variants {
            let all: Vec<&RunResult> = results
                .iter()
                .filter(|r| r.workload == w && r.variant() == v)
                .collect();
            let verified: Vec<&RunResult> = all.iter().copied().filter(|r| r.verified).collect();
            let counted = if verified.is_empty() { &all } else { &verified };
            out.push(row(w, v, counted, all.len(), verified.len(), &all));
        }
    }
    out
}

fn row(
    w: Workload,
    v: Variant,
    counted: &[&RunResult],
    rounds: usize,
    verified: usize,
    all: &[&RunResult],
) -> Row {
    let stat = |f: &dyn Fn(&RunResult) -> Option<f64>| -> Option<Stat> {
        Stat::of(&counted.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
    };
    let med = |f: &dyn Fn(&RunResult) -> Option<f64>| stat(f).map(|s| s.median);
    let mut figures = BTreeMap::new();
    for name in FIGURES {
        if let Some(s) = stat(&|r| figure(r, name)) {
            figures.insert(name, s);
        }
    }
    let mut median = counted[0].clone();
    median.goodput_mb_s = med(&|r| Some(r.goodput_mb_s)).unwrap_or(0.0);
    median.frames_per_s = med(&|r| Some(r.frames_per_s)).unwrap_or(0.0);
    median.seconds = med(&|r| Some(r.seconds)).unwrap_or(0.0);
    if let Some(l) = median.latency.as_mut() {
        l.count = counted
            .iter()
            .filter_map(|r| r.latency.as_ref().map(|l| l.count))
            .sum();
        for (field, name) in [
            (&mut l.p50, "p50"),
            (&mut l.p90, "p90"),
            (&mut l.p99, "p99"),
            (&mut l.p999, "p999"),
            (&mut l.max, "max"),
        ] {
            if let Some(s) = figures.get(name) {
                *field = s.median;
            }
        }
    }
    for p in &mut median.processes {
        let name = p.name.clone();
        let of = |r: &RunResult| r.processes.iter().find(|q| q.name == name).cloned();
        p.cpu_s = med(&|r| of(r).map(|q| q.cpu_s)).unwrap_or(p.cpu_s);
        p.cpu_s_per_gb = med(&|r| of(r).and_then(|q| q.cpu_s_per_gb));
        p.rss_mb = med(&|r| of(r).map(|q| q.rss_mb)).unwrap_or(p.rss_mb);
        p.sockets = med(&|r| of(r).map(|q| q.sockets as f64)).map_or(p.sockets, |v| v as u64);
        p.threads = med(&|r| of(r).map(|q| q.threads as f64)).map_or(p.threads, |v| v as u64);
    }
    for (k, val) in median.extra.iter_mut() {
        *val = med(&|r| r.extra.get(k).copied()).unwrap_or(*val);
    }
    median.relay_copies_per_byte = med(&|r| r.relay_copies_per_byte);
    for (k, val) in median.datagrams_per_send.iter_mut() {
        *val = med(&|r| r.datagrams_per_send.get(k).copied()).unwrap_or(*val);
    }
    for (k, val) in median.datagrams_per_receive.iter_mut() {
        *val = med(&|r| r.datagrams_per_receive.get(k).copied()).unwrap_or(*val);
    }
    median.syscalls_per_gb = med(&|r| r.syscalls_per_gb);
    for (k, val) in median.syscalls_per_gb_by_call.iter_mut() {
        *val = med(&|r| r.syscalls_per_gb_by_call.get(k).copied()).unwrap_or(*val);
    }
    median.verified = verified == rounds && rounds > 0;
    Row {
        workload: w,
        variant: v,
        median,
        figures,
        rounds,
        verified,
        loads: all
            .iter()
            .filter_map(|r| r.load.clone().map(|l| (r.round, l)))
            .collect(),
    }
}

/// quic against one other transport in one workload: quic's median / the other's median.
#[derive(Clone, Debug, PartialEq)]
pub struct Ratio {
    pub workload: Workload,
    pub quic: Variant,
    pub other: Variant,
    pub goodput: Option<f64>,
    pub frames: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    /// Relay pair against relay pair (peers only: direct transports have no relays).
    pub pair_cpu: Option<f64>,
    /// Every process of the path against every process of the other path.
    pub all_cpu: Option<f64>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Every quic row against every other row of its workload: peers first, then direct transports.
pub fn ratios(rows: &[Row]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for q in rows
        .iter()
        .filter(|r| r.variant.transport == Transport::Quic)
    {
        let mut others: Vec<&Row> = rows
            .iter()
            .filter(|o| o.workload == q.workload && o.variant.transport != Transport::Quic)
            .collect();
        others.sort_by_key(|o| (!o.variant.transport.is_peer(), o.variant));
        for o in others {
            let r = |f: &str| ratio(q.get(f), o.get(f));
            out.push(Ratio {
                workload: q.workload,
                quic: q.variant,
                other: o.variant,
                goodput: r("goodput"),
                frames: r("frames"),
                p50: r("p50"),
                p99: r("p99"),
                pair_cpu: r("cpu_pair"),
                all_cpu: r("cpu_all"),
            });
        }
    }
    out
}

/// The row of (workload, transport); for quic the one at `payload` if given, else the 1,500-byte
/// one, else any.
pub fn find(rows: &[Row], w: Workload, t: Transport, payload: Option<usize>) -> Option<&Row> {
    let mut it = rows
        .iter()
        .filter(|r| r.workload == w && r.variant.transport == t && r.verified > 0);
    match payload {
        Some(p) => it.find(|r| r.variant.udp_payload == Some(p)),
        None => {
            let all: Vec<&Row> = it.collect();
            all.iter()
                .find(|r| {
                    r.variant.udp_payload.is_none()
                        || r.variant.udp_payload == Some(super::PAYLOAD_1500)
                })
                .or(all.first())
                .copied()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::procs::ProcCost;
    use super::super::router::Percentiles;
    use super::*;

    fn run(t: Transport, round: usize, goodput: f64, relay_cpu: f64) -> RunResult {
        let mut r = RunResult::new(Workload::Bulk, t, 1, 65536);
        r.round = round;
        r.udp_payload = (t == Transport::Quic).then_some(1452);
        r.seconds = 1.0;
        r.frames = 1000;
        r.payload_bytes = 2_000_000_000;
        r.goodput_mb_s = goodput;
        r.frames_per_s = goodput * 10.0;
        r.latency = Some(Percentiles {
            count: 10,
            p50: 1000.0 / goodput,
            p90: 0.0,
            p99: 5000.0 / goodput,
            p999: 0.0,
            max: 0.0,
        });
        let proc = |name: &str, cpu_s: f64| ProcCost {
            name: name.into(),
            cpu_s,
            cpu_s_per_gb: Some(cpu_s / 2.0),
            rss_mb: 10.0,
            sockets: 2,
            threads: 1,
        };
        r.processes = vec![proc("clients", 0.4), proc("router", 0.2)];
        let relay = match t {
            Transport::Quic => Some("rlinkd"),
            Transport::Haproxy => Some("haproxy"),
            _ => None,
        };
        if let Some(n) = relay {
            r.processes.push(proc(&format!("{n}-a"), relay_cpu / 2.0));
            r.processes.push(proc(&format!("{n}-b"), relay_cpu / 2.0));
        }
        r.verified = true;
        r
    }

    #[test]
    fn median_and_range_of_odd_and_even_counts() {
        let s = Stat::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Stat::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert_eq!(Stat::of(&[]), None);
    }

    /// Pair CPU counts the relays only, endpoints the clients and router; per frame is the
    /// pair's CPU over the frames delivered.
    #[test]
    fn pair_and_endpoint_cpu_are_split() {
        let q = run(Transport::Quic, 0, 500.0, 2.0);
        assert!((q.pair_cpu_s_per_gb().unwrap() - 1.0).abs() < 1e-9);
        assert!((q.endpoints_cpu_s_per_gb().unwrap() - 0.3).abs() < 1e-9);
        assert!((q.all_cpu_s_per_gb().unwrap() - 1.3).abs() < 1e-9);
        assert!((q.pair_cpu_us_per_frame().unwrap() - 2000.0).abs() < 1e-6);
        let t = run(Transport::Tcp, 0, 500.0, 0.0);
        assert_eq!(t.pair_cpu_s_per_gb(), None);
        assert_eq!(t.pair_cpu_us_per_frame(), None);
    }

    /// Three rounds become one row with the median and the spread; a round that failed
    /// verification does not count toward the figures but is reported.
    #[test]
    fn rounds_become_medians_with_ranges() {
        let mut results = vec![
            run(Transport::Quic, 0, 400.0, 2.0),
            run(Transport::Quic, 1, 600.0, 3.0),
            run(Transport::Quic, 2, 500.0, 2.4),
            run(Transport::Haproxy, 0, 1000.0, 1.0),
            run(Transport::Haproxy, 1, 900.0, 1.2),
        ];
        let mut bad = run(Transport::Haproxy, 2, 5.0, 9.0);
        bad.verified = false;
        results.push(bad);
        let rows = rows(&results);
        assert_eq!(rows.len(), 2);
        let h = &rows[0];
        assert_eq!(h.variant.transport, Transport::Haproxy);
        assert_eq!((h.rounds, h.verified), (3, 2));
        assert!(!h.median.verified);
        assert_eq!(h.figures["goodput"].median, 950.0);
        let q = &rows[1];
        let g = q.figures["goodput"];
        assert_eq!((g.median, g.min, g.max), (500.0, 400.0, 600.0));
        assert_eq!(q.median.goodput_mb_s, 500.0);
        let pair = q.figures["cpu_pair"];
        assert!((pair.median - 1.2).abs() < 1e-9 && (pair.max - 1.5).abs() < 1e-9);

        let r = ratios(&rows);
        assert_eq!(r.len(), 1);
        assert!((r[0].goodput.unwrap() - 500.0 / 950.0).abs() < 1e-9);
        // quic's pair 1.2 s/GB against haproxy's median of 0.5 and 0.6.
        assert!((r[0].pair_cpu.unwrap() - 1.2 / 0.55).abs() < 1e-9);
        assert!(r[0].p99.unwrap() > 1.0, "quic's p99 is higher here");
    }
}
