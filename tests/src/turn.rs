//! Debian's coturn (`turnserver`) as a child process on loopback, for viewers (and cameras)
//! that may only reach each other through a TURN relay.
//!
//! It listens on UDP only (webrtc-rs's TURN client is UDP only), with long-term credentials
//! made up for this run, no TLS/DTLS listeners, no CLI, no config file and a user database
//! of its own in a temporary directory. Its relay ports come from a range above the
//! kernel's ephemeral ports, so an address in that range can only be one of its relays.
//! It logs verbosely to stdout; [`Coturn::log`] has the lines so far.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use crate::viewer::Turn;

/// The coturn binary (Debian package `coturn`).
const TURNSERVER: &str = "turnserver";
/// How long coturn may take to open its listener.
const START_WITHIN: Duration = Duration::from_secs(10);
/// Relay ports per server: one per allocation, and a test makes a handful.
const RELAY_PORTS: u16 = 32;
/// Where relay port ranges are looked for: above Linux's default ephemeral range
/// (32768–60999), so no socket bound to port 0 elsewhere sits inside one.
const RELAY_SPAN: RangeInclusive<u16> = 61000..=65400;
/// The realm of the long-term credentials.
pub const REALM: &str = "onair.test";

/// A running coturn; killed when dropped.
pub struct Coturn {
    child: Child,
    /// The server and the credentials to allocate with (`turn:127.0.0.1:PORT?transport=udp`).
    pub turn: Turn,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The UDP ports its relayed addresses are taken from.
    pub relay_ports: RangeInclusive<u16>,
    log: Arc<Mutex<Vec<String>>>,
    dir: PathBuf,
}

impl Coturn {
    /// Starts coturn on a free UDP port of 127.0.0.1 and waits until it listens.
    pub fn start() -> anyhow::Result<Coturn> {
        let port = free_udp_port()?;
        let relay_ports = free_relay_range()?;
        let nonce = unique();
        let dir = std::env::temp_dir().join(format!("onair-coturn-{nonce:x}"));
        std::fs::create_dir_all(&dir)?;
        let turn = Turn {
            url: format!("turn:127.0.0.1:{port}?transport=udp"),
            username: format!("viewer{:x}", nonce & 0xffff),
            credential: format!("pw-{nonce:016x}"),
        };
        let args = arguments(port, &relay_ports, &turn, &dir);
        let mut child = Command::new(TURNSERVER)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!("starting {TURNSERVER} (Debian package coturn: apt-get install coturn)")
            })?;
        let (log, ready) = collect(&mut child, port);
        let mut coturn = Coturn {
            child,
            turn,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            relay_ports,
            log,
            dir,
        };
        if ready.recv_timeout(START_WITHIN).is_err() {
            let _ = coturn.child.kill();
            bail!(
                "coturn did not listen on 127.0.0.1:{port} within {START_WITHIN:?}; it printed:\n{}",
                coturn.log().join("\n")
            );
        }
        Ok(coturn)
    }

    /// What coturn logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits (at most `within`) until coturn has closed an allocation of `username` and
    /// logged what went through it, and returns that. coturn closes an allocation when its
    /// client refreshes it with lifetime 0 (a webrtc-rs peer does when it closes).
    pub fn usage_of(&self, username: &str, within: Duration) -> Option<Usage> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(usage) = Usage::read(&self.log(), username) {
                return Some(usage);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// What went through the closed allocations of one user, as coturn logs it when it closes
/// a session (`usage: … rp=, rb=, sp=, sb=` for the client side, `peer usage: …` for the
/// peers' side).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes coturn sent to its client: what it relayed from the peers, with TURN framing.
    pub to_client_bytes: u64,
    /// Bytes coturn received from the peers on the relayed addresses.
    pub from_peers_bytes: u64,
}

impl Usage {
    /// Sums the usage lines of `username` in `log`; `None` if there are none yet.
    fn read(log: &[String], username: &str) -> Option<Usage> {
        let who = format!("username=<{username}>,");
        let mut total: Option<Usage> = None;
        for line in log.iter().filter(|l| l.contains(&who)) {
            let (client, peers) = if line.contains(": usage:") {
                (counter(line, "sb="), 0)
            } else if line.contains(": peer usage:") {
                (0, counter(line, "rb="))
            } else {
                continue;
            };
            let sum = total.get_or_insert_default();
            sum.to_client_bytes += client;
            sum.from_peers_bytes += peers;
        }
        total
    }
}

/// The number after `name` (e.g. `sb=`) in a coturn log line; 0 if absent.
fn counter(line: &str, name: &str) -> u64 {
    line.split([' ', ','])
        .find_map(|word| word.strip_prefix(name))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = crate::daemon::terminate(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// coturn's command line: everything on it, nothing read from /etc.
fn arguments(
    port: u16,
    relay_ports: &RangeInclusive<u16>,
    turn: &Turn,
    dir: &std::path::Path,
) -> Vec<String> {
    let path = |name: &str| dir.join(name).display().to_string();
    let mut args: Vec<String> = [
        // No configuration file: the command line is all there is.
        "-n",
        "--listening-ip=127.0.0.1",
        "--relay-ip=127.0.0.1",
        "--no-tcp",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--no-rfc5780",
        "--no-software-attribute",
        // Peers (the camera, the viewer) are on loopback, which coturn refuses by default.
        "--allow-loopback-peers",
        "--lt-cred-mech",
        "--fingerprint",
        "--verbose",
        "--log-file=stdout",
        "--simple-log",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend([
        format!("--listening-port={port}"),
        format!("--min-port={}", relay_ports.start()),
        format!("--max-port={}", relay_ports.end()),
        format!("--realm={REALM}"),
        format!("--user={}:{}", turn.username, turn.credential),
        // Its user database and pid file in our directory, not /var/lib/turn or /var/run.
        format!("--db={}", path("turndb")),
        format!("--pidfile={}", path("turnserver.pid")),
    ]);
    args
}

/// Collects the child's output lines; the receiver gets `()` once coturn says its UDP
/// listener on `port` is open.
fn collect(child: &mut Child, port: u16) -> (Arc<Mutex<Vec<String>>>, mpsc::Receiver<()>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (ready, is_ready) = mpsc::channel();
    let listening = format!("UDP listener opened on: 127.0.0.1:{port}");
    let streams = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ];
    for stream in streams.into_iter().flatten() {
        let (log, ready, listening) = (log.clone(), ready.clone(), listening.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if std::env::var_os("ONAIR_TEST_VERBOSE").is_some() {
                    eprintln!("turnserver| {line}");
                }
                if line.contains(&listening) {
                    let _ = ready.send(());
                }
                if let Ok(mut log) = log.lock() {
                    log.push(line);
                }
            }
        });
    }
    (log, is_ready)
}

/// A UDP port free right now on 127.0.0.1.
fn free_udp_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// [`RELAY_PORTS`] consecutive UDP ports in [`RELAY_SPAN`], all free on 127.0.0.1 right now.
/// The search starts at a place that depends on the process and the time, so tests running
/// at once rarely try the same range.
fn free_relay_range() -> anyhow::Result<RangeInclusive<u16>> {
    let slots = (RELAY_SPAN.end() - RELAY_SPAN.start() + 1) / RELAY_PORTS;
    let first = (unique() % u64::from(slots)) as u16;
    for i in 0..slots {
        let start = RELAY_SPAN.start() + ((first + i) % slots) * RELAY_PORTS;
        let range = start..=start + RELAY_PORTS - 1;
        if range
            .clone()
            .all(|p| UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).is_ok())
        {
            return Ok(range);
        }
    }
    bail!("no {RELAY_PORTS} free UDP ports in {RELAY_SPAN:?} on 127.0.0.1")
}

/// A number unlikely to repeat: the time and the process id.
fn unique() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_coturn_logs_when_it_closes_a_session() {
        let log = [
            "10: : session 001000000000000001: usage: realm=<onair.test>, username=<v1>, rp=54, rb=5320, sp=1313, sb=1131117",
            "10: : session 001000000000000001: peer usage: realm=<onair.test>, username=<v1>, rp=1308, rb=1125681, sp=47, sb=4307",
            "11: : session 001000000000000002: usage: realm=<onair.test>, username=<v10>, rp=1, rb=2, sp=3, sb=4",
        ]
        .map(str::to_owned);
        assert_eq!(
            Usage::read(&log, "v1"),
            Some(Usage {
                to_client_bytes: 1131117,
                from_peers_bytes: 1125681
            })
        );
        assert_eq!(Usage::read(&log[..2], "v10"), None);
    }
}
