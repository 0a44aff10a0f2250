//! The side-by-side benchmark's sections (`onair-bench`, docs/PERFORMANCE.md).

pub mod badlink;
pub mod fanout;
pub mod latency;

use std::path::PathBuf;

use anyhow::Context;

/// Where a section's JSON goes: `$CARGO_TARGET_DIR/bench`, else the workspace's
/// `target/bench`, named `<section>-YYYYMMDD-HHMMSSZ.json` (UTC).
pub fn output_path(section: &str) -> anyhow::Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let now = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]-[hour][minute][second]"
        ))
        .context("formatting the date")?;
    Ok(target.join("bench").join(format!("{section}-{now}Z.json")))
}
