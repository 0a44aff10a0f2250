//! The side-by-side benchmark's parts (`onair-bench`, docs/PERFORMANCE.md).

pub mod fanout;
