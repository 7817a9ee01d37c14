//! The `rlinkd` command: parses the command line, sets up logging and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use rlinkd::config::NodeConfig;

#[derive(Parser)]
#[command(
    name = "rlinkd",
    version,
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
    Bench(rlinkd::bench::BenchArgs),
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

/// Installs the log filter `filter`, which the caller has validated: `EnvFilter::new` would
/// drop a bad directive silently, so `try_new` is used and a failure is an error.
fn init_logging(filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("log filter {filter:?}"))?;
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
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
            init_logging(&cfg.log_filter()?)?;
            let mut node = rlinkd::node::Node::bind(cfg).context("cannot start node")?;
            node.run()?;
            Ok(())
        }
        Command::Check { config } => {
            let cfg = NodeConfig::load(&config)?;
            // What `run` would install (RUST_LOG included), so `check` refuses what `run` would.
            cfg.log_filter()?;
            print!("{}", cfg.summary());
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
            init_logging(&tool_filter("warn"))?;
            rlinkd::bench::run(args)
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
            init_logging(&tool_filter("warn"))?;
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
