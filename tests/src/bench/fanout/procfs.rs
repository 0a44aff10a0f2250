//! What a process costs, read from /proc: CPU as utime + stime of the whole process (every
//! thread: the process-level `stat` sums them), memory as VmRSS; and how busy the whole
//! machine was, so a reader can tell a saturated run from a quiet one.

use std::time::{Duration, Instant};

use anyhow::Context;

/// CPU time a process had used at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    /// utime + stime in clock ticks.
    ticks: u64,
    /// When it was read.
    at: Instant,
}

impl CpuMark {
    /// Reads `pid`'s utime + stime now.
    pub fn read(pid: u32) -> anyhow::Result<CpuMark> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("process {pid} is gone"))?;
        Ok(CpuMark {
            ticks: stat_ticks(&stat).context("unreadable /proc/PID/stat")?,
            at: Instant::now(),
        })
    }

    /// CPU used since `earlier`, in percent of one core (100 % = one core busy).
    pub fn percent_since(&self, earlier: &CpuMark) -> f64 {
        let seconds = self.ticks.saturating_sub(earlier.ticks) as f64 / ticks_per_second();
        100.0 * seconds / wall(earlier.at, self.at)
    }
}

/// Fields after the parenthesised command name (which may hold spaces); utime and stime
/// are fields 14 and 15 of the line, 12 and 13 after the name.
fn stat_ticks(stat: &str) -> Option<u64> {
    let (_, after) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux we know of).
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

fn wall(from: Instant, to: Instant) -> f64 {
    to.duration_since(from)
        .max(Duration::from_millis(1))
        .as_secs_f64()
}

/// `pid`'s resident memory (VmRSS) in MB.
pub fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .context("no VmRSS")
}

/// The whole machine's CPU counters at one instant (/proc/stat's `cpu` line).
#[derive(Debug, Clone, Copy)]
pub struct MachineMark {
    busy: u64,
    total: u64,
}

impl MachineMark {
    /// Reads /proc/stat now.
    pub fn read() -> anyhow::Result<MachineMark> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let line = stat.lines().next().context("empty /proc/stat")?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal …: idle and iowait are not busy.
        let total: u64 = ticks.iter().take(8).sum();
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        Ok(MachineMark {
            busy: total - idle,
            total,
        })
    }

    /// How busy all cores together were since `earlier`, in percent (100 % = every core).
    pub fn percent_since(&self, earlier: &MachineMark) -> f64 {
        let total = self.total.saturating_sub(earlier.total).max(1) as f64;
        100.0 * self.busy.saturating_sub(earlier.busy) as f64 / total
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_utime_and_stime_past_a_name_with_spaces() {
        let stat = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 5 0 9 1 2";
        assert_eq!(super::stat_ticks(stat), Some(280));
    }
}
