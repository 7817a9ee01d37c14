//! The project's targets, checked against ratios measured in the same run (medians over the
//! rounds): the engine's own targets and quic against the HAProxy pair users would deploy instead.

use super::report::{Skipped, Target};
use super::summary::{self, Row};
use super::{Transport, Workload, PAYLOAD_1500, PAYLOAD_9000};

/// The row of quic at a 1,500-byte MTU (or whatever quic ran at) and of another transport.
fn quic(rows: &[Row], w: Workload) -> Option<&Row> {
    summary::find(rows, w, Transport::Quic, None)
}

fn other(rows: &[Row], w: Workload, t: Transport) -> Option<&Row> {
    summary::find(rows, w, t, None)
}

fn mtu_name(payload: Option<usize>) -> String {
    match payload {
        Some(PAYLOAD_1500) | None => "MTU 1500".into(),
        Some(PAYLOAD_9000) => "MTU 9000".into(),
        Some(n) => format!("{n} B UDP payload"),
    }
}

/// The targets of the benchmark issues, as ratios within this run (medians over the rounds).
pub fn targets(rows: &[Row], skipped: &[Skipped]) -> Vec<Target> {
    let mut v = Vec::new();
    let not_measured = |t: Option<Transport>| {
        t.and_then(|t| {
            skipped
                .iter()
                .find(|s| s.transport == t && s.workload.is_none())
        })
        .map_or("not measured in this run".to_string(), |s| {
            format!("not measured in this run ({})", s.reason)
        })
    };
    let mut push = |name: String,
                    required: &str,
                    peer: Option<Transport>,
                    measured: Option<(String, bool)>| {
        let (measured, met) = match measured {
            Some((m, met)) => (m, Some(met)),
            None => (not_measured(peer), None),
        };
        v.push(Target {
            name,
            required: required.into(),
            measured,
            met,
        });
    };
    let q = |w| quic(rows, w);
    push(
        "bulk goodput, quic vs tls".into(),
        ">= 0.35 x",
        None,
        q(Workload::Bulk)
            .zip(other(rows, Workload::Bulk, Transport::Tls))
            .and_then(|(q, t)| {
                let (a, b) = (q.get("goodput")?, t.get("goodput")?);
                let r = a / b;
                Some((format!("{r:.2} x ({a:.0} vs {b:.0} MB/s)"), r >= 0.35))
            }),
    );
    push(
        "events frames/s, quic vs tcp".into(),
        ">= 0.5 x",
        None,
        q(Workload::Events)
            .zip(other(rows, Workload::Events, Transport::Tcp))
            .and_then(|(q, t)| {
                let (a, b) = (q.get("frames")?, t.get("frames")?);
                let r = a / b;
                Some((format!("{r:.2} x ({a:.0} vs {b:.0} frames/s)"), r >= 0.5))
            }),
    );
    push(
        "rpc p99 (1 link), quic vs tcp".into(),
        "<= tcp + 150 us",
        None,
        q(Workload::Rpc)
            .zip(other(rows, Workload::Rpc, Transport::Tcp))
            .and_then(|(q, t)| {
                let (ql, tl) = (q.get("p99")?, t.get("p99")?);
                Some((
                    format!("{ql:.0} us vs {tl:.0} us (+{:.0} us)", ql - tl),
                    ql <= tl + 150.0,
                ))
            }),
    );
    push(
        "realms: open all links (quic)".into(),
        "<= 3 s",
        None,
        q(Workload::Realms).and_then(|r| {
            r.median
                .extra
                .get("open_all_s")
                .map(|s| (format!("{s:.2} s for {} links", r.median.links), *s <= 3.0))
        }),
    );
    push(
        "realms: RSS per idle link, each rlinkd".into(),
        "<= 64 KiB",
        None,
        q(Workload::Realms).map(|r| {
            let per: Vec<(String, f64)> = r
                .median
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
        "stall: other links' goodput kept (quic)".into(),
        ">= 0.8 x",
        None,
        q(Workload::Stall).and_then(|r| {
            r.median
                .extra
                .get("stall_ratio")
                .map(|s| (format!("{s:.2} x"), *s >= 0.8))
        }),
    );
    push(
        "open: new link to first echo, quic vs tls (median)".into(),
        "<= 1 x",
        None,
        q(Workload::Open)
            .zip(other(rows, Workload::Open, Transport::Tls))
            .and_then(|(q, t)| {
                let (ql, tl) = (q.get("p50")?, t.get("p50")?);
                Some((
                    format!("{:.2} x ({ql:.0} us vs {tl:.0} us)", ql / tl),
                    ql <= tl,
                ))
            }),
    );

    // The peers users would deploy instead: rlinkd has to beat a HAProxy pair. One set per MTU
    // quic ran at (1,500 always listed).
    let hap = Transport::Haproxy;
    let mut payloads: Vec<Option<usize>> = rows
        .iter()
        .filter(|r| {
            r.variant.transport == Transport::Quic
                && matches!(r.workload, Workload::Bulk | Workload::Events)
        })
        .map(|r| r.variant.udp_payload)
        .collect();
    payloads.push(Some(PAYLOAD_1500));
    payloads.sort();
    payloads.dedup();
    for p in payloads {
        for w in [Workload::Bulk, Workload::Events] {
            let pair = summary::find(rows, w, Transport::Quic, p).zip(other(rows, w, hap));
            push(
                format!("{} goodput ({}), quic vs haproxy", w.name(), mtu_name(p)),
                ">= 1 x",
                Some(hap),
                pair.and_then(|(q, h)| {
                    let (a, b) = (q.get("goodput")?, h.get("goodput")?);
                    let r = a / b;
                    Some((format!("{r:.2} x ({a:.0} vs {b:.0} MB/s)"), r >= 1.0))
                }),
            );
            push(
                format!(
                    "{} pair CPU s/GB ({}), quic vs haproxy",
                    w.name(),
                    mtu_name(p)
                ),
                "<= 1 x",
                Some(hap),
                pair.and_then(|(q, h)| {
                    let (a, b) = (q.get("cpu_pair")?, h.get("cpu_pair")?);
                    let r = a / b;
                    Some((format!("{r:.2} x ({a:.2} vs {b:.2} s/GB)"), r <= 1.0))
                }),
            );
        }
    }
    let rpc64 = q(Workload::Rpc64).zip(other(rows, Workload::Rpc64, hap));
    push(
        "rpc64 round trips/s, quic vs haproxy".into(),
        ">= 1 x",
        Some(hap),
        rpc64.and_then(|(q, h)| {
            let (a, b) = (q.get("frames")?, h.get("frames")?);
            let r = a / b;
            Some((format!("{r:.2} x ({a:.0} vs {b:.0} /s)"), r >= 1.0))
        }),
    );
    push(
        "rpc64 p99, quic vs haproxy".into(),
        "<= 1 x",
        Some(hap),
        rpc64.and_then(|(q, h)| {
            let (a, b) = (q.get("p99")?, h.get("p99")?);
            let r = a / b;
            Some((format!("{r:.2} x ({a:.0} us vs {b:.0} us)"), r <= 1.0))
        }),
    );
    v.extend(super::targets_io::targets(rows));
    v
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::procs::ProcCost;
    use super::super::router::Percentiles;
    use super::super::RunResult;
    use super::*;

    pub(in crate::bench) fn run(
        w: Workload,
        t: Transport,
        goodput: f64,
        pair_cpu_s: f64,
        p99: f64,
    ) -> RunResult {
        let mut r = RunResult::new(w, t, 1, 256);
        r.udp_payload = (t == Transport::Quic).then_some(PAYLOAD_1500);
        r.seconds = 1.0;
        r.frames = 1000;
        r.payload_bytes = 1_000_000_000;
        r.goodput_mb_s = goodput;
        r.frames_per_s = goodput * 1000.0;
        r.latency = Some(Percentiles {
            p99,
            ..Percentiles::default()
        });
        let relay = if t == Transport::Quic {
            "rlinkd"
        } else {
            "haproxy"
        };
        r.processes = ["a", "b"]
            .iter()
            .map(|n| ProcCost {
                name: format!("{relay}-{n}"),
                cpu_s: pair_cpu_s / 2.0,
                cpu_s_per_gb: Some(pair_cpu_s / 2.0),
                rss_mb: 1.0,
                sockets: 1,
                threads: 1,
            })
            .collect();
        r.verified = true;
        r
    }

    pub(in crate::bench) fn find<'a>(ts: &'a [Target], name: &str) -> &'a Target {
        ts.iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no target {name}: {ts:#?}"))
    }

    /// quic is held to the HAProxy pair: at least its goodput and round trips, at most its pair
    /// CPU per GB and p99.
    #[test]
    fn quic_is_compared_with_the_haproxy_pair() {
        let mut rs = Vec::new();
        for w in [Workload::Bulk, Workload::Events, Workload::Rpc64] {
            rs.push(run(w, Transport::Quic, 600.0, 3.0, 900.0));
            rs.push(run(w, Transport::Haproxy, 800.0, 2.0, 1000.0));
        }
        let ts = targets(&summary::rows(&rs), &[]);
        let g = find(&ts, "bulk goodput (MTU 1500), quic vs haproxy");
        assert_eq!((g.required.as_str(), g.met), (">= 1 x", Some(false)));
        assert!(g.measured.starts_with("0.75 x (600 vs 800 MB/s)"), "{g:?}");
        let c = find(&ts, "events pair CPU s/GB (MTU 1500), quic vs haproxy");
        assert_eq!(c.met, Some(false));
        assert!(c.measured.starts_with("1.50 x"), "{c:?}");
        assert_eq!(
            find(&ts, "rpc64 round trips/s, quic vs haproxy").met,
            Some(false)
        );
        assert_eq!(find(&ts, "rpc64 p99, quic vs haproxy").met, Some(true));
    }

    #[test]
    fn a_skipped_peer_leaves_its_targets_unmeasured_with_the_reason() {
        let rs = vec![run(Workload::Bulk, Transport::Quic, 600.0, 3.0, 900.0)];
        let skipped = [Skipped {
            transport: Transport::Haproxy,
            workload: None,
            reason: "skipped: haproxy not installed".into(),
        }];
        let ts = targets(&summary::rows(&rs), &skipped);
        let g = find(&ts, "bulk goodput (MTU 1500), quic vs haproxy");
        assert_eq!(g.met, None);
        assert_eq!(
            g.measured,
            "not measured in this run (skipped: haproxy not installed)"
        );
    }
}
