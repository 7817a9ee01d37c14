//! The process's log: installed once at start with a filter that a reload may replace
//! (`log_level` takes effect on SIGHUP, like the rest of the file).

use std::sync::OnceLock;

use anyhow::Context;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

use crate::config::LogFormat;

/// The installed filter, for [`set_filter`].
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the log with filter `directives`, which the caller has validated
/// (`EnvFilter::new` would drop a bad directive silently, so `try_new` is used and a failure is
/// an error), writing `format` to stderr.
pub fn init(directives: &str, format: LogFormat) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let filter =
        EnvFilter::try_new(directives).with_context(|| format!("log filter {directives:?}"))?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let base = fmt::layer().with_writer(std::io::stderr).with_target(false);
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
    Ok(())
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
