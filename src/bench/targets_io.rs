//! The I/O engine's targets (io_uring and zero-copy buffers), checked against ratios measured in
//! the same run: io_uring against mio, each backend's quic rows against the HAProxy pair, and
//! the counted user-space copies. A run with `--io mio,uring --shards 1` measures them all.

use super::report::Target;
use super::summary::Row;
use super::{Transport, Workload, PAYLOAD_1500, PAYLOAD_9000};
use crate::config::IoMode;

/// The verified quic row of `w` at `payload` run on backend `io`.
fn quic(rows: &[Row], w: Workload, payload: usize, io: IoMode) -> Option<&Row> {
    rows.iter().find(|r| {
        r.workload == w
            && r.variant.transport == Transport::Quic
            && r.variant.udp_payload.unwrap_or(PAYLOAD_1500) == payload
            && r.variant.io == Some(io)
            && r.verified > 0
    })
}

fn haproxy(rows: &[Row], w: Workload) -> Option<&Row> {
    rows.iter()
        .find(|r| r.workload == w && r.variant.transport == Transport::Haproxy && r.verified > 0)
}

fn mtu(payload: usize) -> &'static str {
    if payload == PAYLOAD_9000 {
        "MTU 9000"
    } else {
        "MTU 1500"
    }
}

/// `a / b` of one figure of two rows, shown as `0.80 x (a vs b unit)`, and whether it meets
/// `ok`. None when a row or the figure is missing.
fn ratio(
    a: Option<&Row>,
    b: Option<&Row>,
    figure: &str,
    unit: &str,
    ok: impl Fn(f64) -> bool,
) -> Option<(String, bool)> {
    let (x, y) = (a?.get(figure)?, b?.get(figure)?);
    let r = x / y;
    // Figures of 100 and more read as whole numbers (frames/s, us); smaller ones keep 2 places.
    let shown = |v: f64| {
        if v.abs() >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        }
    };
    Some((
        format!("{r:.2} x ({} vs {} {unit})", shown(x), shown(y)),
        ok(r),
    ))
}

/// The targets; rows that were not run leave theirs out (one line says which `--io` to run).
pub fn targets(rows: &[Row]) -> Vec<Target> {
    let mut v = Vec::new();
    let mut push = |name: String, required: &str, measured: Option<(String, bool)>| {
        if let Some((measured, met)) = measured {
            v.push(Target {
                name,
                required: required.into(),
                measured,
                met: Some(met),
            });
        }
    };
    let streaming = [Workload::Bulk, Workload::Events];
    for payload in [PAYLOAD_1500, PAYLOAD_9000] {
        for w in streaming {
            push(
                format!(
                    "{} pair CPU s/GB ({}), uring vs mio",
                    w.name(),
                    mtu(payload)
                ),
                "<= 0.75 x",
                ratio(
                    quic(rows, w, payload, IoMode::Uring),
                    quic(rows, w, payload, IoMode::Mio),
                    "cpu_pair",
                    "s/GB",
                    |r| r <= 0.75,
                ),
            );
        }
    }
    for w in streaming {
        let per_gb = |io| {
            quic(rows, w, PAYLOAD_1500, io)
                .and_then(|r| r.median.syscalls_per_gb)
                .filter(|v| *v > 0.0)
        };
        push(
            format!("{} system calls per GB (MTU 1500), uring vs mio", w.name()),
            "<= 0.1 x",
            per_gb(IoMode::Uring)
                .zip(per_gb(IoMode::Mio))
                .map(|(u, m)| {
                    let r = u / m;
                    (format!("{r:.2} x ({u:.0} vs {m:.0} /GB)"), r <= 0.1)
                }),
        );
    }
    for io in [IoMode::Mio, IoMode::Uring] {
        let name = io.name();
        for (payload, bound) in [(PAYLOAD_1500, 1.2), (PAYLOAD_9000, 0.6)] {
            for w in streaming {
                push(
                    format!(
                        "{} pair CPU s/GB ({}), quic {name} vs haproxy",
                        w.name(),
                        mtu(payload)
                    ),
                    &format!("<= {bound} x"),
                    ratio(
                        quic(rows, w, payload, io),
                        haproxy(rows, w),
                        "cpu_pair",
                        "s/GB",
                        |r| r <= bound,
                    ),
                );
            }
        }
        push(
            format!("events frames/s (MTU 1500), quic {name} vs haproxy"),
            ">= 0.9 x",
            ratio(
                quic(rows, Workload::Events, PAYLOAD_1500, io),
                haproxy(rows, Workload::Events),
                "frames",
                "/s",
                |r| r >= 0.9,
            ),
        );
        let rpc64 = quic(rows, Workload::Rpc64, PAYLOAD_1500, io);
        let hap = haproxy(rows, Workload::Rpc64);
        push(
            format!("rpc64 round trips/s, quic {name} vs haproxy"),
            ">= 1.2 x",
            ratio(rpc64, hap, "frames", "/s", |r| r >= 1.2),
        );
        push(
            format!("rpc64 p99, quic {name} vs haproxy"),
            "<= 1 x",
            ratio(rpc64, hap, "p99", "us", |r| r <= 1.0),
        );
        for w in streaming {
            let copies =
                quic(rows, w, PAYLOAD_1500, io).and_then(|r| r.median.relay_copies_per_byte);
            push(
                format!(
                    "{} user-space copies per payload byte, quic {name}",
                    w.name()
                ),
                "<= 3 (counted)",
                copies.map(|c| (format!("{c:.3}"), c <= 3.0)),
            );
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::super::summary;
    use super::super::targets::tests::find;
    use super::*;

    fn run(
        w: Workload,
        t: Transport,
        io: Option<IoMode>,
        pair_cpu_s: f64,
    ) -> super::super::RunResult {
        let mut r = super::super::targets::tests::run(w, t, 1.0, pair_cpu_s, 1.0);
        r.io = io;
        r.relay_copies_per_byte = (t == Transport::Quic).then_some(3.04);
        r.syscalls_per_gb = io.map(|io| if io == IoMode::Uring { 600.0 } else { 1000.0 });
        r
    }

    #[test]
    fn each_backend_is_held_to_mio_haproxy_and_the_copy_count() {
        let rs = vec![
            run(Workload::Bulk, Transport::Quic, Some(IoMode::Mio), 2.0),
            run(Workload::Bulk, Transport::Quic, Some(IoMode::Uring), 1.4),
            run(Workload::Bulk, Transport::Haproxy, None, 1.25),
        ];
        let ts = targets(&summary::rows(&rs));
        let u = find(&ts, "bulk pair CPU s/GB (MTU 1500), uring vs mio");
        assert_eq!(u.met, Some(true));
        assert!(u.measured.starts_with("0.70 x (1.40 vs 2.00"), "{u:?}");
        let h = find(&ts, "bulk pair CPU s/GB (MTU 1500), quic uring vs haproxy");
        assert_eq!(h.met, Some(true), "{h:?}");
        let h = find(&ts, "bulk pair CPU s/GB (MTU 1500), quic mio vs haproxy");
        assert!(h.measured.starts_with("1.60 x"), "{h:?}");
        assert_eq!(h.met, Some(false));
        let s = find(&ts, "bulk system calls per GB (MTU 1500), uring vs mio");
        assert_eq!(
            (s.measured.as_str(), s.met),
            ("0.60 x (600 vs 1000 /GB)", Some(false))
        );
        let c = find(&ts, "bulk user-space copies per payload byte, quic mio");
        assert_eq!((c.measured.as_str(), c.met), ("3.040", Some(false)));
        // Cells not run leave no line.
        assert!(ts.iter().all(|t| !t.name.contains("MTU 9000")), "{ts:#?}");
        assert!(ts.iter().all(|t| !t.name.starts_with("events")), "{ts:#?}");
    }
}
