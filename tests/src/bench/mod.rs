//! The side-by-side benchmark's sections (`onair-bench`, docs/PERFORMANCE.md).

pub mod latency;
