//! The process's log: installed once at start with a filter that a reload may replace
//! (`log_level` takes effect on SIGHUP, like the rest of the file).
//!
//! Lines are written to stderr by a thread of their own, never by the shards: a reader of
//! stderr that falls behind (a pipe nobody drains, a journal under load) would otherwise block
//! a shard in `write` mid-turn, stalling its links and a drain past `drain_timeout`. Past
//! [`QUEUED_LINES`] waiting lines, new ones are dropped and counted
//! (`rlinkd_log_lines_dropped_total`).

use std::sync::OnceLock;

use anyhow::Context;
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

use crate::config::LogFormat;

/// Lines that may wait for stderr before new ones are dropped (a few seconds of a node at
/// `trace` under load; a few MB of memory at most).
pub const QUEUED_LINES: usize = 64 * 1024;

/// The installed filter, for [`set_filter`].
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
/// Lines dropped because stderr did not keep up, for [`dropped_lines`].
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Keeps the log's writer thread; dropping it writes the lines still queued (waiting at most
/// a second for stderr). Hold it until the process is done logging.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[allow(dead_code)] WorkerGuard);

/// Installs the log with filter `directives`, which the caller has validated
/// (`EnvFilter::new` would drop a bad directive silently, so `try_new` is used and a failure is
/// an error), writing `format` to stderr.
pub fn init(directives: &str, format: LogFormat) -> anyhow::Result<LogGuard> {
    use std::io::IsTerminal;
    let filter =
        EnvFilter::try_new(directives).with_context(|| format!("log filter {directives:?}"))?;
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("rlinkd-log")
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let base = fmt::layer().with_writer(writer).with_target(false);
    match format {
        LogFormat::Text => registry
            .with(base.with_ansi(std::io::stderr().is_terminal()))
            .try_init()?,
        // One object per line; the event's fields at the top level next to "message", so a
        // collector can index `peer` or `node` without parsing the text.
        LogFormat::Json => registry
            .with(base.json().flatten_event(true).with_ansi(false))
            .try_init()?,
    }
    FILTER.set(handle).ok();
    DROPPED.set(dropped).ok();
    Ok(LogGuard(guard))
}

/// Log lines dropped so far because stderr did not take them fast enough.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Replaces the filter [`init`] installed with `directives` (validated by the caller); an
/// error when the log was not installed by [`init`] or the directives do not parse. The reload
/// also sets the `log` crate's maximum level, which quiche's lines pass through (tracing-subscriber's
/// default `tracing-log` feature; `tests/reload.rs` checks quiche's lines follow a raised level).
pub fn set_filter(directives: &str) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(directives).with_context(|| format!("log filter {directives:?}"))?;
    FILTER
        .get()
        .context("the log was not installed with a reloadable filter")?
        .reload(filter)
        .context("replacing the log filter")
}
