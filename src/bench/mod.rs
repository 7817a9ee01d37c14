//! `rlinkd bench`: QUIC rlinks measured against the TCP, Unix-socket and TLS rlinks routers use
//! today, on one machine, in one run.
//!
//! Every (transport, workload) pair runs in a fresh environment: a router emulator process
//! ([`router`]), for `quic` two `rlinkd run` processes between it and the clients, and the clients
//! in this process ([`client`]). Each run verifies what arrived (sequence numbers and every payload
//! byte) and a failed verification fails the run. CPU, memory and sockets come from /proc for
//! every process ([`procs`]).

pub mod client;
pub mod env;
pub mod payload;
pub mod plots;
pub mod procs;
pub mod report;
pub mod router;
pub mod stream;
pub mod workloads;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use env::{Env, EnvOptions};
use procs::ProcCost;
use router::{Percentiles, RouterMode};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// RawSocket over TCP, client to router directly.
    Tcp,
    /// RawSocket over a Unix socket, directly.
    Uds,
    /// RawSocket over TLS 1.3 on TCP (BoringSSL), directly.
    Tls,
    /// client -> rlinkd a -> QUIC -> rlinkd b -> router.
    Quic,
}

impl Transport {
    pub const ALL: [Transport; 4] = [
        Transport::Tcp,
        Transport::Uds,
        Transport::Tls,
        Transport::Quic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Uds => "uds",
            Transport::Tls => "tls",
            Transport::Quic => "quic",
        }
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// 64 KiB frames on 1 link into a sink.
    Bulk,
    /// 256 B frames on 64 links into a sink.
    Events,
    /// 128 B request/echo on 1 link (latency).
    Rpc,
    /// 128 B request/echo on 64 links (latency under concurrency).
    #[value(name = "rpc64")]
    Rpc64,
    /// Many links opened over one node pair: time, memory per link, then one request on each.
    Realms,
    /// One link's reader stops; the others must keep their goodput.
    Stall,
    /// Time from connect to first echo for a new link on a connected node pair.
    Open,
}

impl Workload {
    pub const ALL: [Workload; 7] = [
        Workload::Bulk,
        Workload::Events,
        Workload::Rpc,
        Workload::Rpc64,
        Workload::Realms,
        Workload::Stall,
        Workload::Open,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Bulk => "bulk",
            Workload::Events => "events",
            Workload::Rpc => "rpc",
            Workload::Rpc64 => "rpc64",
            Workload::Realms => "realms",
            Workload::Stall => "stall",
            Workload::Open => "open",
        }
    }
}

/// `rlinkd bench` options.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Workloads to run (default: all): bulk, events, rpc, rpc64, realms, stall, open.
    #[arg(long, value_delimiter = ',')]
    pub workload: Vec<Workload>,
    /// Transports to compare (default: all): tcp, uds, tls, quic.
    #[arg(long, value_delimiter = ',')]
    pub transport: Vec<Transport>,
    /// Measured time of each throughput/latency run.
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Links opened by the realms workload.
    #[arg(long, default_value_t = 10_000)]
    pub realms_links: usize,
    /// New links opened one after another by the open workload.
    #[arg(long, default_value_t = 200)]
    pub open_rounds: usize,
    /// Local legs of the quic transport: unix or tcp.
    #[arg(long, default_value = "unix")]
    pub quic_leg: String,
    /// Largest UDP payload rlinkd sends (1452: a 1,500-byte path MTU; 65527 for loopback-size packets).
    #[arg(long, default_value_t = 1452)]
    pub udp_payload: usize,
    /// Run rlinkd without UDP GSO/GRO (one datagram per system call), to measure what they bring.
    #[arg(long)]
    pub no_gso: bool,
    /// Measure nothing: print the table (and, with --plot, the charts) of a run saved with --json.
    #[arg(long, value_name = "JSON")]
    pub report: Option<PathBuf>,
    /// Write all results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write SVG charts into this folder.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Working folder (certificates, configs, sockets, node logs).
    #[arg(long, default_value = "build/bench")]
    pub dir: PathBuf,
}

/// The figures of one (workload, transport) run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub workload: Workload,
    pub transport: Transport,
    pub links: usize,
    pub frame_bytes: usize,
    pub seconds: f64,
    pub frames: u64,
    pub payload_bytes: u64,
    pub goodput_mb_s: f64,
    pub frames_per_s: f64,
    pub latency: Option<Percentiles>,
    pub latency_kind: String,
    pub processes: Vec<ProcCost>,
    /// quic only: datagrams per sendmsg (GSO) and per recvmsg (GRO), per node.
    pub datagrams_per_send: BTreeMap<String, f64>,
    pub datagrams_per_receive: BTreeMap<String, f64>,
    /// quic only: user-space copies of each payload byte inside rlinkd (sending + receiving node).
    pub relay_copies_per_byte: Option<f64>,
    /// tls only: whether the record layer ran in the kernel (kTLS) or in user space, and why.
    pub tls_offload: Option<String>,
    pub extra: workloads::Extra,
    pub verified: bool,
    pub verification: String,
}

use std::collections::BTreeMap;

impl RunResult {
    fn new(
        workload: Workload,
        transport: Transport,
        links: usize,
        frame_bytes: usize,
    ) -> RunResult {
        RunResult {
            workload,
            transport,
            links,
            frame_bytes,
            seconds: 0.0,
            frames: 0,
            payload_bytes: 0,
            goodput_mb_s: 0.0,
            frames_per_s: 0.0,
            latency: None,
            latency_kind: String::new(),
            processes: Vec::new(),
            datagrams_per_send: BTreeMap::new(),
            datagrams_per_receive: BTreeMap::new(),
            relay_copies_per_byte: None,
            tls_offload: None,
            extra: BTreeMap::new(),
            verified: false,
            verification: String::new(),
        }
    }
}

/// Copies of a payload byte in user space inside rlinkd today, both nodes together (found in the
/// profile, perf/results/): on the sending node `stream_send` copies into quiche's send buffer and
/// packet assembly copies from it into the packet (then sealed in place); on the receiving node
/// the opened packet is copied into quiche's receive buffer and `stream_recv` copies it out. See
/// docs/ARCHITECTURE.md.
pub const RELAY_COPIES_PER_BYTE: f64 = 4.0;

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(path) = &args.report {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let saved: report::Report =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        print!("{}", report::table(&saved));
        if let Some(d) = &args.plot {
            report::plot(&saved, d)?;
            println!("charts written to {}", d.display());
        }
        return Ok(());
    }
    crate::node::raise_fd_limit();
    let workloads = if args.workload.is_empty() {
        Workload::ALL.to_vec()
    } else {
        args.workload.clone()
    };
    let transports = if args.transport.is_empty() {
        Transport::ALL.to_vec()
    } else {
        args.transport.clone()
    };
    let quic_leg_unix = match args.quic_leg.as_str() {
        "unix" => true,
        "tcp" => false,
        other => anyhow::bail!("--quic-leg must be unix or tcp, not {other}"),
    };
    std::fs::create_dir_all(&args.dir)?;
    let dir = args.dir.canonicalize()?;
    let certs = dir.join("certs");
    if !certs.join("router.pem").exists() {
        std::fs::remove_dir_all(&certs).ok();
        crate::cert::generate(&certs, &["a".into(), "b".into(), "router".into()])
            .context("certificates")?;
    }
    let exe = std::env::current_exe()?;
    let opts = EnvOptions {
        exe: &exe,
        dir: &dir,
        certs: &certs,
        quic_leg_unix,
        udp_payload: args.udp_payload,
        gso: !args.no_gso,
    };
    let machine = report::Machine::read();
    println!(
        "rlinkd bench: {} workloads x {} transports, {:?} each, quic legs {}, max UDP payload {} B",
        workloads.len(),
        transports.len(),
        args.duration,
        args.quic_leg,
        args.udp_payload
    );
    println!(
        "machine: {} cores, {}, kernel {}\n",
        machine.cores, machine.cpu, machine.kernel
    );

    let mut results = Vec::new();
    let mut failures = Vec::new();
    for &w in &workloads {
        for &t in &transports {
            eprint!("  {:<7} {:<5} ... ", w.name(), t.name());
            match run_one(w, t, &args, &opts) {
                Ok(r) => {
                    eprintln!(
                        "{}",
                        if r.verified {
                            "verified"
                        } else {
                            "VERIFICATION FAILED"
                        }
                    );
                    if !r.verified {
                        failures.push(format!("{} {}: {}", w.name(), t.name(), r.verification));
                    }
                    results.push(r);
                }
                Err(e) => {
                    eprintln!("FAILED: {e:#}");
                    failures.push(format!("{} {}: {e:#}", w.name(), t.name()));
                }
            }
        }
    }
    let targets = report::targets(&results);
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let full = report::Report {
        date: report::today(),
        command,
        machine,
        args: format!("{args:?}"),
        results,
        targets,
        failures: failures.clone(),
    };
    print!("{}", report::table(&full));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&full)?)?;
        println!("JSON written to {}", path.display());
    }
    if let Some(d) = &args.plot {
        report::plot(&full, d)?;
        println!("charts written to {}", d.display());
    }
    if !failures.is_empty() {
        anyhow::bail!(
            "{} run(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

fn run_one(
    w: Workload,
    t: Transport,
    args: &BenchArgs,
    opts: &EnvOptions<'_>,
) -> anyhow::Result<RunResult> {
    let mode = match w {
        Workload::Bulk | Workload::Events | Workload::Stall => RouterMode::Sink,
        _ => RouterMode::Echo,
    };
    let mut env = Env::start(t, mode, opts)?;
    let mut r = match w {
        Workload::Bulk | Workload::Events => workloads::streaming(&mut env, w, args.duration)?,
        Workload::Rpc => workloads::rpc(&mut env, 1, args.duration)?,
        Workload::Rpc64 => workloads::rpc(&mut env, 64, args.duration)?,
        Workload::Realms => workloads::realms(&mut env, args.realms_links)?,
        Workload::Stall => workloads::stall(&mut env, args.duration)?,
        Workload::Open => workloads::open(&mut env, args.open_rounds)?,
    };
    if t == Transport::Tls {
        r.tls_offload = Some(crate::ktls::status());
    }
    if t == Transport::Quic {
        r.relay_copies_per_byte = Some(RELAY_COPIES_PER_BYTE);
        for (node, [sent, sends, recvd, recvs]) in env.stop_nodes() {
            if sends > 0 {
                r.datagrams_per_send
                    .insert(node.clone(), sent as f64 / sends as f64);
            }
            if recvs > 0 {
                r.datagrams_per_receive
                    .insert(node, recvd as f64 / recvs as f64);
            }
        }
    }
    Ok(r)
}
