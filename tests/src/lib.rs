//! Helpers for the end-to-end tests: start `onaird` as a process, join it as a WHEP viewer
//! (webrtc-rs), and decode what arrives (openh264, Opus) to check what a person would see;
//! and the benchmark's parts (`bench`).

pub mod bench;
pub mod churn;
pub mod consumer;
pub mod daemon;
pub mod janus;
pub mod link;
pub mod metrics;
pub mod picture;
pub mod sfu;
pub mod signal;
pub mod turn;
pub mod viewer;
