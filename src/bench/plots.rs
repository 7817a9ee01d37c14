//! SVG charts for `rlinkd bench --plot DIR`.

use std::path::Path;

use super::report::Report;

pub fn write_all(_rep: &Report, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    anyhow::bail!("charts are not implemented yet")
}
