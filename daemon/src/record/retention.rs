//! Which recorded segments go: too old, over the byte budget, or in the way of the disk's
//! free-space floor, oldest first. Pure: the directory listing, the time and the free space
//! are inputs, the names to delete the output.

use std::time::{Duration, SystemTime};

/// One finished segment on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// When it began.
    pub start: SystemTime,
}

/// What `[record]` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Segments older than this go; `None`: no age limit.
    pub max_age: Option<Duration>,
    /// All segments together stay under this; 0: no limit.
    pub max_bytes: u64,
    /// At least this much stays free on the file system.
    pub min_free: u64,
}

/// The segments (any order) to delete at `now` with `free` bytes free, oldest first.
/// `keep` (the one being written) is never among them and counts toward the bytes.
pub fn to_delete(
    segments: &[Segment],
    keep: Option<&str>,
    now: SystemTime,
    free: u64,
    limits: Limits,
) -> Vec<String> {
    let mut oldest_first: Vec<&Segment> = segments.iter().collect();
    oldest_first.sort_by_key(|s| (s.start, s.name.clone()));
    let mut total: u64 = oldest_first.iter().map(|s| s.bytes).sum();
    let mut free = free;
    let mut gone = Vec::new();
    for segment in oldest_first {
        if keep == Some(segment.name.as_str()) {
            continue;
        }
        let too_old = limits
            .max_age
            .is_some_and(|age| now.duration_since(segment.start).unwrap_or_default() > age);
        let too_many = limits.max_bytes > 0 && total > limits.max_bytes;
        let too_full = free < limits.min_free;
        if !(too_old || too_many || too_full) {
            // Oldest first: what follows is newer, so only the byte and space limits could
            // still want it, and they were met.
            break;
        }
        total -= segment.bytes;
        free = free.saturating_add(segment.bytes);
        gone.push(segment.name.clone());
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn segments(t: SystemTime, sizes: &[u64]) -> Vec<Segment> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &bytes)| Segment {
                name: format!("s{i}.mp4"),
                bytes,
                start: t + HOUR * i as u32,
            })
            .collect()
    }

    fn limits() -> Limits {
        Limits {
            max_age: None,
            max_bytes: 0,
            min_free: 0,
        }
    }

    #[test]
    fn nothing_goes_without_a_reason() {
        let t = SystemTime::UNIX_EPOCH;
        let all = segments(t, &[10, 10, 10]);
        assert!(to_delete(&all, None, t + HOUR * 10, 1000, limits()).is_empty());
    }

    #[test]
    fn too_old_ones_go() {
        let t = SystemTime::UNIX_EPOCH;
        let all = segments(t, &[10, 10, 10]);
        let aged = Limits {
            max_age: Some(HOUR * 2),
            ..limits()
        };
        // At 3.5 h: s0 (3.5 h old) and s1 (2.5 h) are past 2 h, s2 (1.5 h) is not.
        let now = t + HOUR * 7 / 2;
        assert_eq!(to_delete(&all, None, now, 1000, aged), ["s0.mp4", "s1.mp4"]);
    }

    #[test]
    fn the_oldest_go_until_the_rest_fit_the_byte_budget() {
        let t = SystemTime::UNIX_EPOCH;
        let all = segments(t, &[40, 30, 20, 10]);
        let budget = Limits {
            max_bytes: 35,
            ..limits()
        };
        assert_eq!(
            to_delete(&all, None, t, 1000, budget),
            ["s0.mp4", "s1.mp4"],
            "100 → 30 bytes"
        );
    }

    #[test]
    fn the_free_space_floor_is_kept_and_the_one_being_written_never_goes() {
        let t = SystemTime::UNIX_EPOCH;
        let all = segments(t, &[40, 30, 20]);
        let floor = Limits {
            min_free: 100,
            ..limits()
        };
        // 50 free: deleting s0 (40) and s1 (30) makes 120.
        assert_eq!(to_delete(&all, None, t, 50, floor), ["s0.mp4", "s1.mp4"]);
        // Nothing to make room with but the one being written: it stays.
        assert_eq!(
            to_delete(&all, Some("s2.mp4"), t, 0, floor),
            ["s0.mp4", "s1.mp4"]
        );
    }
}
