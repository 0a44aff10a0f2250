//! onaird under systemd's notify protocol, played by the test: READY=1 after the first
//! picture, STATUS= lines, watchdog pings while the pipeline moves, STOPPING=1 on SIGTERM,
//! and journal-friendly log lines.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use onair_tests::daemon::Daemon;

#[test]
fn notifies_ready_status_and_watchdog_like_systemd_expects() {
    let dir = std::env::temp_dir().join(format!("onair-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket_path = dir.join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let daemon = Daemon::start_with_env(
        "[video]\nwidth = 320\nheight = 240\n",
        &[
            ("NOTIFY_SOCKET", socket_path.as_os_str()),
            ("WATCHDOG_USEC", "1000000".as_ref()),
            ("JOURNAL_STREAM", "8:12345".as_ref()),
        ],
    )
    .unwrap();

    let started = Instant::now();
    let mut messages: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(6) {
        if let Ok(n) = socket.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let count = |prefix: &str| messages.iter().filter(|m| m.starts_with(prefix)).count();
    assert_eq!(count("READY=1"), 1, "{messages:?}");
    assert!(count("STATUS=") >= 1, "{messages:?}");
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("STATUS=0 viewers, ") && m.contains(" fps")),
        "{messages:?}"
    );
    // A quarter of the 1 s watchdog period: several pings in 6 s.
    assert!(count("WATCHDOG=1") >= 5, "{messages:?}");

    // The journal stamps lines itself: onaird's own lines carry no timestamp.
    let lines: Vec<String> = daemon.log.try_iter().collect();
    let ready = lines
        .iter()
        .find(|l| l.contains("ready: notified systemd"))
        .cloned()
        .unwrap_or_default();
    assert!(
        ready.trim_start().starts_with("INFO"),
        "{ready:?} in {lines:?}"
    );

    daemon.stop().unwrap();
    let mut stopping = false;
    while let Ok(n) = socket.recv(&mut buf) {
        stopping |= buf[..n].starts_with(b"STOPPING=1");
    }
    assert!(stopping, "no STOPPING=1 on SIGTERM");
    let _ = std::fs::remove_dir_all(&dir);
}
