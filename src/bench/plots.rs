//! SVG charts for `rlinkd bench --plot DIR`.
//!
//! Four files, each comparing the transports of one run (ratios within a run are what the
//! benchmark stands behind, see docs/DESIGN "Benchmark honesty"):
//! Each bar or line is a (transport, MTU) row of the table: the median over the verified rounds.
//! - `goodput.svg`: MB/s per transport, grouped by workload (bulk, events, stall);
//! - `frames.svg`: frames/s per transport (events, rpc64);
//! - `latency.svg`: one panel per workload that measured latency, p50/p90/p99/p99.9 on a log axis,
//!   one line per transport;
//! - `cpu.svg`: CPU seconds per GB of payload, stacked by process (clients, router, relay a/b:
//!   rlinkd, HAProxy or stunnel),
//!   one bar per transport, for bulk and events.
//!
//! plotters is built without `ttf`/`ab_glyph`: text is written as SVG `<text>` elements and sized
//! by plotters' naive estimate, so nothing here reads a font file or needs fontconfig. A chart
//! whose workloads were not in the run is still written, with a note saying so.

use std::path::Path;

use std::ops::Range;

use plotters::coord::combinators::IntoLogRange;
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::Report;
use super::{RunResult, Transport, Variant, Workload, PAYLOAD_1500, PAYLOAD_9000};

type DrawResult = anyhow::Result<()>;

const FONT: &str = "sans-serif";

fn transport_color(v: Variant) -> RGBColor {
    match (v.transport, v.udp_payload) {
        (Transport::Tcp, _) => RGBColor(31, 119, 180),
        (Transport::Uds, _) => RGBColor(44, 160, 44),
        (Transport::Tls, _) => RGBColor(255, 127, 14),
        (Transport::Haproxy, _) => RGBColor(140, 86, 75),
        (Transport::Stunnel, _) => RGBColor(227, 119, 194),
        (Transport::Quic, None | Some(PAYLOAD_1500)) => RGBColor(214, 39, 40),
        (Transport::Quic, Some(PAYLOAD_9000)) => RGBColor(120, 18, 20),
        (Transport::Quic, Some(_)) => RGBColor(255, 152, 150),
    }
}

/// The CPU chart stacks processes by their place in the path, whatever the relay is.
const ROLES: [&str; 4] = ["clients", "router", "relay a", "relay b"];

fn role(process: &str) -> &'static str {
    match process {
        "clients" => "clients",
        "router" => "router",
        p if p.ends_with("-a") => "relay a",
        _ => "relay b",
    }
}

fn process_color(name: &str, i: usize) -> RGBColor {
    match name {
        "clients" => RGBColor(127, 127, 127),
        "router" => RGBColor(188, 189, 34),
        "relay a" => RGBColor(148, 103, 189),
        "relay b" => RGBColor(23, 190, 207),
        _ => {
            let (r, g, b) = Palette99::pick(i).to_rgba().rgb();
            RGBColor(r, g, b)
        }
    }
}

/// A linear f64 axis whose only ticks are named points (workload groups, percentiles): plotters'
/// `WithKeyPoints` has no label formatter for f64, so the axis carries its own names.
struct NamedAxis {
    range: Range<f64>,
    ticks: Vec<(f64, String)>,
}

impl Ranged for NamedAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let span = self.range.end - self.range.start;
        let f = if span > 0.0 {
            (v - self.range.start) / span
        } else {
            0.0
        };
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        self.ticks.iter().map(|t| t.0).collect()
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

impl ValueFormatter<f64> for NamedAxis {
    fn format_ext(&self, v: &f64) -> String {
        self.ticks
            .iter()
            .find(|t| (t.0 - v).abs() < 1e-9)
            .map(|t| t.1.clone())
            .unwrap_or_default()
    }
}

/// Group i spans [i, i + 1) and is labelled at its centre.
fn group_axis(names: &[&str]) -> NamedAxis {
    NamedAxis {
        range: 0.0..names.len() as f64,
        ticks: names
            .iter()
            .enumerate()
            .map(|(i, n)| (i as f64 + 0.5, n.to_string()))
            .collect(),
    }
}

/// The medians of the workload's rows with at least one verified round, in variant order.
fn runs(rep: &Report, w: Workload) -> Vec<RunResult> {
    super::summary::rows(&rep.results)
        .into_iter()
        .filter(|r| r.workload == w && r.verified > 0)
        .map(|r| r.median)
        .collect()
}

fn transports_in(groups: &[(Workload, Vec<RunResult>)]) -> Vec<Variant> {
    let mut ts: Vec<Variant> = groups
        .iter()
        .flat_map(|(_, rs)| rs.iter().map(|r| r.variant()))
        .collect();
    ts.sort();
    ts.dedup();
    ts
}

fn subtitle(rep: &Report) -> String {
    let buffer = rep
        .relay_buffer
        .map(|b| format!(", relay buffer {}", crate::config::units::ByteSize(b)))
        .unwrap_or_default();
    format!(
        "rlinkd bench {}, {} cores, {}{buffer}; verified runs only",
        rep.date, rep.machine.cores, rep.machine.cpu
    )
}

fn short(v: f64) -> String {
    if v.fract() == 0.0 && v < 100_000.0 {
        format!("{v:.0}")
    } else if v >= 1e6 {
        format!("{}M", short(v / 1e6))
    } else if v >= 100_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn no_data(root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>, what: &str) -> DrawResult {
    let (w, h) = root.dim_in_pixel();
    root.draw(&Text::new(
        format!("no verified {what} results in this run"),
        (w as i32 / 2, h as i32 / 2),
        TextStyle::from((FONT, 16).into_font()).pos(Pos::new(HPos::Center, VPos::Center)),
    ))?;
    Ok(())
}

/// Grouped bars: one group per workload, one bar per transport, `value` on a linear y axis.
fn grouped_bars(
    path: &Path,
    rep: &Report,
    title: &str,
    y_desc: &str,
    workloads: &[Workload],
    value: fn(&RunResult) -> f64,
) -> DrawResult {
    let groups: Vec<(Workload, Vec<RunResult>)> = workloads
        .iter()
        .map(|&w| (w, runs(rep, w)))
        .filter(|(_, rs)| !rs.is_empty())
        .collect();
    // Room for each bar's value label: up to seven rows per workload (peers, two MTUs).
    let bars: usize = groups.iter().map(|(_, rs)| rs.len()).sum();
    let width = (200 + 48 * bars as u32).max(900);
    let root = SVGBackend::new(path, (width, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 22))?;
    if groups.is_empty() {
        no_data(&root, title)?;
        root.present()?;
        return Ok(());
    }
    let ts = transports_in(&groups);
    let ymax = groups
        .iter()
        .flat_map(|(_, rs)| rs.iter().map(value))
        .fold(0.0, f64::max)
        .max(1e-9)
        // Headroom for the value labels and the legend (up to seven rows).
        * 1.6;
    let names: Vec<&str> = groups.iter().map(|(w, _)| w.name()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(subtitle(rep), (FONT, 13))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(group_axis(&names), 0f64..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("workload")
        .y_desc(y_desc)
        .y_label_formatter(&|y| short(*y))
        .label_style((FONT, 14))
        .draw()?;
    // Bars fill 80 % of a group; each transport keeps its slot so colours line up across groups.
    let slot = 0.8 / ts.len() as f64;
    for (ti, &t) in ts.iter().enumerate() {
        let color = transport_color(t);
        let bars: Vec<(f64, f64)> = groups
            .iter()
            .enumerate()
            .filter_map(|(gi, (_, rs))| {
                let r = rs.iter().find(|r| r.variant() == t)?;
                Some((gi as f64 + 0.1 + ti as f64 * slot, value(r)))
            })
            .collect();
        chart
            .draw_series(bars.iter().map(|&(x, v)| {
                Rectangle::new(
                    [(x + slot * 0.05, 0.0), (x + slot * 0.95, v)],
                    color.filled(),
                )
            }))?
            .label(t.label())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        chart.draw_series(bars.iter().map(|&(x, v)| {
            Text::new(
                short(v),
                (x + slot / 2.0, v),
                TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()?;
    root.present()?;
    Ok(())
}

const PERCENTILES: [&str; 4] = ["p50", "p90", "p99", "p99.9"];

/// One panel per workload with latency: x = percentile, y = microseconds (log), line per transport.
fn latency(path: &Path, rep: &Report) -> DrawResult {
    let mut workloads: Vec<Workload> = Vec::new();
    for r in &rep.results {
        if r.verified && r.latency.is_some() && !workloads.contains(&r.workload) {
            workloads.push(r.workload);
        }
    }
    let cols = if workloads.len() > 1 { 2 } else { 1 };
    let rows = workloads.len().div_ceil(cols).max(1);
    let root =
        SVGBackend::new(path, (560 * cols as u32, 60 + 380 * rows as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = "Latency percentiles per workload (log scale, lower is better)";
    let root = root.titled(title, (FONT, 22))?;
    if workloads.is_empty() {
        no_data(&root, "latency")?;
        root.present()?;
        return Ok(());
    }
    let panels = root.split_evenly((rows, cols));
    for (w, panel) in workloads.iter().zip(panels.iter()) {
        let rs: Vec<RunResult> = runs(rep, *w)
            .into_iter()
            .filter(|r| r.latency.is_some())
            .collect();
        let points = |r: &RunResult| -> Vec<(f64, f64)> {
            let l = r.latency.clone().unwrap_or_default();
            [l.p50, l.p90, l.p99, l.p999]
                .iter()
                .enumerate()
                // A log axis cannot show 0; sub-microsecond values sit on its floor.
                .map(|(i, v)| (i as f64, v.max(0.1)))
                .collect()
        };
        let all: Vec<f64> = rs.iter().flat_map(&points).map(|p| p.1).collect();
        // Whole decades, so the log axis is labelled at powers of ten, plus one empty decade on
        // top for the legend.
        let lo = all.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = all.iter().cloned().fold(0.0, f64::max);
        let lo = 10f64.powf(lo.log10().floor());
        let hi = 10f64.powf((hi * 1.01).log10().ceil() + 1.0);
        let kind = rs.first().map(|r| r.latency_kind.as_str()).unwrap_or("");
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{} ({kind})", w.name()), (FONT, 14))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                NamedAxis {
                    range: -0.3..3.3,
                    ticks: PERCENTILES
                        .iter()
                        .enumerate()
                        .map(|(i, p)| (i as f64, p.to_string()))
                        .collect(),
                },
                (lo..hi).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (us, log)")
            .y_label_formatter(&|y| short(*y))
            .label_style((FONT, 12))
            .draw()?;
        for r in &rs {
            let color = transport_color(r.variant());
            let pts = points(r);
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(r.variant().label())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 12))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// CPU seconds per GB, one stacked bar per (workload, transport), one segment per process.
fn cpu(path: &Path, rep: &Report) -> DrawResult {
    let groups: Vec<(Workload, Vec<RunResult>)> = [Workload::Bulk, Workload::Events]
        .iter()
        .map(|&w| (w, runs(rep, w)))
        .filter(|(_, rs)| !rs.is_empty())
        .collect();
    // Each bar is labelled with its transport and total ("quic 9000 1.44").
    let nbars: usize = groups.iter().map(|(_, rs)| rs.len()).sum();
    let width = (200 + 100 * nbars as u32).max(900);
    let root = SVGBackend::new(path, (width, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = "CPU seconds per GB of payload, by process (lower is better)";
    let root = root.titled(title, (FONT, 22))?;
    if groups.is_empty() {
        no_data(&root, "bulk/events")?;
        root.present()?;
        return Ok(());
    }
    let mut procs: Vec<&str> = Vec::new();
    for (_, rs) in &groups {
        for r in rs {
            for p in &r.processes {
                let role = role(&p.name);
                if p.cpu_s_per_gb.is_some() && !procs.contains(&role) {
                    procs.push(role);
                }
            }
        }
    }
    procs.sort_by_key(|p| ROLES.iter().position(|r| r == p));
    let ts = transports_in(&groups);
    let slot = 0.8 / ts.len() as f64;
    // (x of the bar, run) for every bar.
    let bars: Vec<(f64, &RunResult)> = groups
        .iter()
        .enumerate()
        .flat_map(|(gi, (_, rs))| {
            let ts = &ts;
            rs.iter().map(move |r| {
                let ti = ts.iter().position(|t| *t == r.variant()).unwrap_or(0);
                (gi as f64 + 0.1 + ti as f64 * slot, r)
            })
        })
        .collect();
    let per_gb = |r: &RunResult, role_name: &str| -> f64 {
        r.processes
            .iter()
            .filter(|p| role(&p.name) == role_name)
            .filter_map(|p| p.cpu_s_per_gb)
            .sum()
    };
    let total = |r: &RunResult| procs.iter().map(|p| per_gb(r, p)).sum::<f64>();
    let ymax = bars
        .iter()
        .map(|(_, r)| total(r))
        .fold(0.0, f64::max)
        .max(1e-9)
        // Headroom for the bar labels and the legend (four processes).
        * 1.5;
    let names: Vec<&str> = groups.iter().map(|(w, _)| w.name()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{}; bar label: transport, total", subtitle(rep)),
            (FONT, 13),
        )
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(group_axis(&names), 0f64..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("workload")
        .y_desc("CPU s / GB of payload")
        .y_label_formatter(&|y| short(*y))
        .label_style((FONT, 14))
        .draw()?;
    for (pi, name) in procs.iter().enumerate() {
        let color = process_color(name, pi);
        let rects: Vec<Rectangle<(f64, f64)>> = bars
            .iter()
            .map(|&(x, r)| {
                let base: f64 = procs[..pi].iter().map(|p| per_gb(r, p)).sum();
                let v = per_gb(r, name);
                Rectangle::new(
                    [(x + slot * 0.05, base), (x + slot * 0.95, base + v)],
                    color.filled(),
                )
            })
            .collect();
        chart
            .draw_series(rects)?
            .label(name.to_string())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    chart.draw_series(bars.iter().map(|&(x, r)| {
        Text::new(
            format!("{} {}", r.variant().label(), short(total(r))),
            (x + slot / 2.0, total(r)),
            TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom)),
        )
    }))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Writes goodput.svg, frames.svg, latency.svg and cpu.svg into `dir`.
pub fn write_all(rep: &Report, dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let goodput = dir.join("goodput.svg");
    grouped_bars(
        &goodput,
        rep,
        "Goodput per transport (higher is better)",
        "goodput (MB/s of payload)",
        &[Workload::Bulk, Workload::Events, Workload::Stall],
        |r| r.goodput_mb_s,
    )
    .with_context(|| format!("draw {}", goodput.display()))?;
    let frames = dir.join("frames.svg");
    grouped_bars(
        &frames,
        rep,
        "Frames per second per transport (higher is better)",
        "frames/s",
        &[Workload::Events, Workload::Rpc64],
        |r| r.frames_per_s,
    )
    .with_context(|| format!("draw {}", frames.display()))?;
    let lat = dir.join("latency.svg");
    latency(&lat, rep).with_context(|| format!("draw {}", lat.display()))?;
    let c = dir.join("cpu.svg");
    cpu(&c, rep).with_context(|| format!("draw {}", c.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::procs::ProcCost;
    use super::super::report::{Machine, Report};
    use super::super::router::Percentiles;
    use super::super::{RunResult, Transport, Workload};

    fn result(w: Workload, t: Transport, scale: f64) -> RunResult {
        let mut r = RunResult::new(w, t, 1, 256);
        r.seconds = 1.0;
        r.frames = 1000;
        r.payload_bytes = 1_000_000;
        r.goodput_mb_s = 100.0 * scale;
        r.frames_per_s = 50_000.0 * scale;
        r.latency = Some(Percentiles {
            count: 1000,
            p50: 20.0 / scale,
            p90: 40.0 / scale,
            p99: 200.0 / scale,
            p999: 900.0 / scale,
            max: 2000.0,
        });
        r.latency_kind = "one-way".into();
        r.processes = ["clients", "router", "rlinkd-a", "rlinkd-b"]
            .iter()
            .map(|n| ProcCost {
                name: n.to_string(),
                cpu_s: 0.5,
                cpu_s_per_gb: Some(0.5 / scale),
                rss_mb: 10.0,
                sockets: 2,
                threads: 1,
            })
            .collect();
        r.verified = true;
        r
    }

    /// The contents of every `<text>` element, trimmed.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_string())
            })
            .collect()
    }

    /// `rlinkd bench --report`: a run saved as JSON reads back into the same table.
    #[test]
    fn a_saved_run_renders_the_same_table() {
        let results = vec![
            result(Workload::Bulk, Transport::Tcp, 2.0),
            result(Workload::Bulk, Transport::Quic, 1.0),
        ];
        let rep = Report {
            date: "2026-11-26".into(),
            command: "test".into(),
            relay_buffer: None,
            machine: Machine {
                cores: 2,
                cpu: "test CPU".into(),
                kernel: "6.18".into(),
            },
            args: String::new(),
            rounds: 1,
            relays: Vec::new(),
            peer_configs: None,
            skipped: Vec::new(),
            planned: Vec::new(),
            targets: super::super::report::targets(&super::super::summary::rows(&results), &[]),
            results,
            failures: Vec::new(),
        };
        let json = serde_json::to_string_pretty(&rep).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        let table = super::super::report::table(&back);
        assert_eq!(table, super::super::report::table(&rep));
        assert!(table.contains("quic") && table.contains("sockets 2/2/2/2"));
    }

    /// `rlinkd bench --report` on a run saved before rounds, MTUs and peers existed (the
    /// committed 2026-11-26 run) still renders every row.
    #[test]
    fn a_run_saved_before_rounds_and_peers_still_renders() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("perf/results/bench-2026-11-26/bench.json");
        let rep = Report::from_json(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(rep.rounds, 1);
        assert!(rep
            .results
            .iter()
            .filter(|r| r.transport == Transport::Quic)
            .all(|r| r.udp_payload == Some(1452)));
        let table = super::super::report::table(&rep);
        assert!(
            table.contains("1500      765.8"),
            "bulk quic goodput: {table}"
        );
        assert!(table.contains("ratios, quic / other"), "{table}");
        assert!(
            !table.contains("range over"),
            "one round has no range: {table}"
        );
        let dir = tempfile::tempdir().unwrap();
        super::write_all(&rep, dir.path()).unwrap();
    }

    #[test]
    fn writes_four_svgs_naming_the_transports() {
        let mut results = Vec::new();
        for w in [
            Workload::Bulk,
            Workload::Events,
            Workload::Rpc64,
            Workload::Stall,
        ] {
            for (t, s) in [(Transport::Tcp, 2.0), (Transport::Quic, 1.0)] {
                results.push(result(w, t, s));
            }
        }
        let rep = Report {
            date: "2026-11-26".into(),
            command: "test".into(),
            relay_buffer: None,
            machine: Machine {
                cores: 2,
                cpu: "test CPU".into(),
                kernel: "6.18".into(),
            },
            args: String::new(),
            rounds: 1,
            relays: Vec::new(),
            peer_configs: None,
            skipped: Vec::new(),
            planned: Vec::new(),
            results,
            targets: Vec::new(),
            failures: Vec::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        super::write_all(&rep, dir.path()).unwrap();
        // RLINKD_PLOT_TEST_DIR keeps a copy of the charts to look at (a dev-time aid).
        if let Some(keep) = std::env::var_os("RLINKD_PLOT_TEST_DIR") {
            super::write_all(&rep, std::path::Path::new(&keep)).unwrap();
        }
        for f in ["goodput.svg", "frames.svg", "latency.svg", "cpu.svg"] {
            let text = std::fs::read_to_string(dir.path().join(f)).unwrap();
            assert!(text.starts_with("<svg"), "{f} is not SVG");
            assert!(text.trim_end().ends_with("</svg>"), "{f} is not complete");
            let labels = texts(&text);
            for t in ["tcp", "quic"] {
                assert!(
                    labels
                        .iter()
                        .any(|l| l.split_whitespace().next() == Some(t)),
                    "{f} does not name {t}: {labels:?}"
                );
            }
        }
        let cpu = texts(&std::fs::read_to_string(dir.path().join("cpu.svg")).unwrap());
        for p in ["clients", "router", "relay a", "relay b"] {
            assert!(cpu.iter().any(|l| l == p), "cpu.svg has no legend for {p}");
        }
    }

    #[test]
    fn empty_report_still_writes_charts() {
        let rep = Report {
            date: "2026-11-26".into(),
            command: "test".into(),
            relay_buffer: None,
            machine: Machine {
                cores: 2,
                cpu: "test CPU".into(),
                kernel: "6.18".into(),
            },
            args: String::new(),
            rounds: 1,
            relays: Vec::new(),
            peer_configs: None,
            skipped: Vec::new(),
            planned: Vec::new(),
            results: Vec::new(),
            targets: Vec::new(),
            failures: Vec::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        super::write_all(&rep, dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join("latency.svg")).unwrap();
        assert!(text.contains("no verified latency results"));
    }
}
