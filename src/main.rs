//! The `rlinkd` command: parses the command line, sets up logging and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use rlinkd::config::{LogFormat, NodeConfig};
use rlinkd::ops::notify;

/// mimalloc, not glibc's malloc: the relay frees a block (64 KiB by default) on every
/// acknowledgement and quiche allocates a buffer for every STREAM frame it receives, and with
/// glibc's allocator those sizes (above its 1 KiB thread cache) took the arena's locked paths
/// and, once freed, gave its top back to the kernel every few blocks. Measured (docs/ARCHITECTURE.md, "Allocator"): events
/// pair CPU per GB about 10 % lower on both backends, bulk unchanged, RSS per idle link 11 -> 13 KiB.
/// Off with `--no-default-features` (glibc's malloc), for valgrind runs: memcheck tracks glibc's
/// heap but not mimalloc's.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "rlinkd",
    version,
    long_version = rlinkd::ops::version::long_version(),
    about = "WAMP RawSocket rlinks carried over one QUIC connection per node pair"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node until SIGINT or SIGTERM.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration and print what the node would listen on and dial.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Write a CA (ca.pem, ca.key; reused if present) and a certificate + key per node.
    Cert {
        #[arg(long)]
        dir: PathBuf,
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Measure QUIC rlinks against TCP, Unix-socket and TLS rlinks and HAProxy and stunnel TLS
    /// sidecar pairs on this machine.
    Bench(Box<rlinkd::bench::BenchArgs>),
    /// The benchmark's router emulator (started by `rlinkd bench`).
    #[command(hide = true)]
    BenchRouter {
        #[arg(long)]
        listen: rlinkd::addr::LocalAddr,
        #[arg(long, value_enum)]
        mode: rlinkd::bench::router::RouterMode,
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long)]
        tls_key: Option<PathBuf>,
    },
    /// Start two nodes on loopback with a built-in RawSocket router and client, and show what
    /// crosses.
    Demo {
        /// Working folder for certificates, configs, sockets and logs (default: a temporary one).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Concurrent links opened at the end of the demo.
        #[arg(long, default_value_t = 50)]
        links: usize,
    },
    /// Show what this host offers rlinkd (io_uring, UDP GSO/GRO, kTLS, NIC offloads, CPU crypto
    /// features) and what rlinkd does with each.
    Probe {
        /// Interface whose offloads to read (default: the default route's, else lo).
        #[arg(long)]
        nic: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rlinkd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `rlinkd run`: bind every socket, tell systemd the node is ready, run until stopped.
fn run_node(cfg: NodeConfig) -> anyhow::Result<()> {
    rlinkd::ops::log::init(&cfg.log_filter()?, cfg.log_format)?;
    // `load` checked the certificate; this only fetches what it says, for the log.
    let report = cfg.certificate_report()?;
    tracing::info!(
        subject = %report.subject,
        issuer = %report.issuer,
        not_after = %report.not_after,
        days_left = report.days_left,
        "certificate"
    );
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    let links = cfg.links.clone();
    let mut node = {
        // Endpoint sockets start as mode 0600 and get their configured owner, group and mode
        // below, so none is ever open to more users than its final mode allows.
        let _umask = rlinkd::ops::endpoint::PrivateUmask::set();
        rlinkd::node::Node::bind(cfg).context("cannot start node")?
    };
    rlinkd::ops::endpoint::apply_all(&links)
        .map_err(anyhow::Error::msg)
        .context("cannot start node")?;
    notify::ready(&format!("listening on {} (QUIC)", node.quic_addr()));
    // STOPPING=1 and RELOADING=1 come from the node: it knows when a drain or reload starts.
    node.run()?;
    Ok(())
}

/// For the helper commands: `RUST_LOG` if it is a valid filter, else `default`.
fn tool_filter(default: &str) -> String {
    match std::env::var("RUST_LOG") {
        Ok(v) if rlinkd::config::validate_log_filter(&v).is_ok() => v,
        _ => default.to_string(),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            let cfg = NodeConfig::load(&config)?;
            run_node(cfg)
        }
        Command::Check { config } => {
            let cfg = NodeConfig::load(&config)?;
            // What `run` would install (RUST_LOG included), so `check` refuses what `run` would.
            cfg.log_filter()?;
            print!("{}", cfg.summary());
            let report = cfg.certificate_report()?;
            println!(
                "certificate: subject {}, issuer {}, valid {} .. {} ({} days left)",
                report.subject,
                report.issuer,
                report.not_before,
                report.not_after,
                report.days_left
            );
            for w in &report.warnings {
                println!("warning: {w}");
            }
            println!("configuration OK");
            Ok(())
        }
        Command::Cert { dir, nodes } => {
            for path in rlinkd::cert::generate(&dir, &nodes)? {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Bench(args) => {
            rlinkd::ops::log::init(&tool_filter("warn"), LogFormat::Text)?;
            rlinkd::bench::run(*args)
        }
        Command::BenchRouter {
            listen,
            mode,
            tls_cert,
            tls_key,
        } => {
            rlinkd::bench::router::run(&listen, mode, tls_cert.zip(tls_key))?;
            Ok(())
        }
        Command::Demo { dir, links } => {
            rlinkd::ops::log::init(&tool_filter("warn"), LogFormat::Text)?;
            rlinkd::demo::run(dir, links)
        }
        Command::Probe { nic, json } => {
            let report = rlinkd::probe::probe(nic.as_deref());
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{report}");
            }
            Ok(())
        }
    }
}
