//! Debian's coturn (`turnserver`) as a child process on loopback, for viewers (and cameras)
//! that may only reach each other through a TURN relay.
//!
//! It listens on UDP only (webrtc-rs's TURN client is UDP only), with long-term credentials
//! made up for this run, no TLS/DTLS listeners, no CLI, no config file and a user database
//! of its own in a temporary directory. Its relay ports come from a range above the
//! kernel's ephemeral ports, so an address in that range can only be one of its relays.
//! It logs verbosely to stdout; [`Coturn::log`] has the lines so far.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, UdpSocket};
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
/// Where coturn's listening ports are looked for: below the ephemeral range.
const LISTEN_SPAN: RangeInclusive<u16> = 20000..=29999;
/// The realm of the long-term credentials.
pub const REALM: &str = "onair.test";

/// Where coturn relays from, whom it will not relay to, and who may use it.
#[derive(Debug, Clone)]
pub struct Relaying {
    /// The address of its relayed transport addresses (any of 127.0.0.0/8 works on `lo`).
    pub relay_ip: Ipv4Addr,
    /// Peers it refuses permissions to (`--denied-peer-ip`): to make a camera's host
    /// candidate unreachable through the relay, so that only its relay candidate is left.
    pub denied_peers: Vec<Ipv4Addr>,
    /// Its accounts (long-term credentials, passwords made up per run): one per party, so
    /// that the log tells whose allocation carried what.
    pub users: Vec<&'static str>,
}

impl Default for Relaying {
    fn default() -> Self {
        Relaying {
            relay_ip: Ipv4Addr::LOCALHOST,
            denied_peers: Vec::new(),
            users: vec![VIEWER],
        }
    }
}

/// The account [`Coturn::start`] makes.
pub const VIEWER: &str = "viewer";

/// A running coturn; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Coturn {
    child: Child,
    /// e.g. `turn:127.0.0.1:PORT?transport=udp`
    pub url: String,
    /// Its relayed addresses: this IP, ports from `relay_ports`.
    pub relay_ip: Ipv4Addr,
    /// The UDP ports its relayed addresses are taken from.
    pub relay_ports: RangeInclusive<u16>,
    /// (username, password) of each account.
    accounts: Vec<(String, String)>,
    log: Arc<Mutex<Vec<String>>>,
    dir: PathBuf,
}

impl Coturn {
    /// Starts coturn on a free UDP port of 127.0.0.1, relaying from 127.0.0.1 to anyone for
    /// the account [`VIEWER`], and waits until it listens.
    pub fn start() -> anyhow::Result<Coturn> {
        Self::start_with(Relaying::default())
    }

    /// [`Coturn::start`], relaying as `relaying` says.
    pub fn start_with(relaying: Relaying) -> anyhow::Result<Coturn> {
        let port = free_udp_port()?;
        let relay_ports = free_relay_range(relaying.relay_ip)?;
        let nonce = unique();
        let dir = std::env::temp_dir().join(format!("onair-coturn-{nonce:x}"));
        std::fs::create_dir_all(&dir)?;
        let accounts: Vec<(String, String)> = (relaying.users.iter())
            .map(|user| (user.to_string(), format!("{user}-{nonce:016x}")))
            .collect();
        let mut coturn = Coturn {
            child: spawn(&arguments(port, (&relaying, &relay_ports), &accounts, &dir))?,
            url: format!("turn:127.0.0.1:{port}?transport=udp"),
            relay_ip: relaying.relay_ip,
            relay_ports,
            accounts,
            log: Arc::default(),
            dir,
        };
        let ready = collect(&mut coturn.child, port, &coturn.log);
        if ready.recv_timeout(START_WITHIN).is_err() {
            bail!(
                "coturn did not listen on 127.0.0.1:{port} within {START_WITHIN:?}; it printed:\n{}",
                coturn.log().join("\n")
            );
        }
        Ok(coturn)
    }

    /// The server and the credentials of account `user`.
    ///
    /// # Panics
    /// If coturn has no such account.
    pub fn turn(&self, user: &str) -> Turn {
        let (username, credential) = (self.accounts.iter())
            .find(|(name, _)| name == user)
            .unwrap_or_else(|| panic!("coturn has no account {user}"))
            .clone();
        Turn {
            url: self.url.clone(),
            username,
            credential,
        }
    }

    /// What coturn logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits (at most `within`) until coturn has closed every allocation of `user` (at least
    /// one), and returns what went through them. coturn closes an allocation when its client
    /// refreshes it with lifetime 0, as a webrtc-rs peer does when it closes.
    pub fn usage_of(&self, user: &str, within: Duration) -> Option<Usage> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let log = self.log();
            if let Some(usage) = Usage::closed(&log, user) {
                return Some(usage);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Bytes through one user's allocations, as coturn logs them: every few seconds while an
/// allocation lives and once when it closes, each line what passed since the one before
/// (`usage: rp=, rb=, sp=, sb=` for the client's side, `peer usage: …` for the peers').
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes coturn received from its client (what the client sent to be relayed).
    pub from_client: u64,
    /// Bytes coturn sent to its client (what it relayed from the peers, with TURN framing).
    pub to_client: u64,
    /// Bytes coturn received from the peers on the relayed addresses.
    pub from_peers: u64,
    /// Bytes coturn sent to the peers from the relayed addresses.
    pub to_peers: u64,
}

impl Usage {
    /// The sum of `user`'s usage lines in `log`, once every allocation of `user` it made
    /// is closed; `None` before (or if it made none).
    fn closed(log: &[String], user: &str) -> Option<Usage> {
        let who = format!(", username=<{user}>, ");
        let closed = format!(": closed (2nd stage), user <{user}> ");
        let made = (log.iter())
            .filter(|l| l.contains(": new, realm=") && l.contains(&who))
            .count();
        let closed = log.iter().filter(|l| l.contains(&closed)).count();
        if made == 0 || closed < made {
            return None;
        }
        let mut sum = Usage::default();
        for line in log.iter().filter(|l| l.contains(&who)) {
            let (rb, sb) = (counter(line, "rb="), counter(line, "sb="));
            if line.contains(": usage:") {
                sum.from_client += rb;
                sum.to_client += sb;
            } else if line.contains(": peer usage:") {
                sum.from_peers += rb;
                sum.to_peers += sb;
            }
        }
        Some(sum)
    }
}

/// The number after `name` (e.g. `sb=`) in a coturn log line; 0 if absent.
fn counter(line: &str, name: &str) -> u64 {
    line.split([' ', ','])
        .find_map(|word| word.strip_prefix(name))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Starts `turnserver` with `args`, its output piped.
fn spawn(args: &[String]) -> anyhow::Result<Child> {
    Command::new(TURNSERVER)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {TURNSERVER} (Debian package coturn)"))
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
    (relaying, relay_ports): (&Relaying, &RangeInclusive<u16>),
    accounts: &[(String, String)],
    dir: &std::path::Path,
) -> Vec<String> {
    let path = |name: &str| dir.join(name).display().to_string();
    let mut args: Vec<String> = [
        // No configuration file: the command line is all there is.
        "-n",
        "--listening-ip=127.0.0.1",
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
        format!("--relay-ip={}", relaying.relay_ip),
        format!("--min-port={}", relay_ports.start()),
        format!("--max-port={}", relay_ports.end()),
        format!("--realm={REALM}"),
        // Its user database and pid file in our directory, not /var/lib/turn or /var/run.
        format!("--db={}", path("turndb")),
        format!("--pidfile={}", path("turnserver.pid")),
    ]);
    args.extend(
        relaying
            .denied_peers
            .iter()
            .map(|ip| format!("--denied-peer-ip={ip}")),
    );
    args.extend(accounts.iter().map(|(u, p)| format!("--user={u}:{p}")));
    args
}

/// Collects the child's output lines into `log`; the receiver gets `()` once coturn says
/// its UDP listener on `port` is open.
fn collect(child: &mut Child, port: u16, log: &Arc<Mutex<Vec<String>>>) -> mpsc::Receiver<()> {
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
    is_ready
}

/// A UDP port free right now on 127.0.0.1 for coturn to listen on (coturn cannot pick one
/// itself). Taken below Linux's default ephemeral range (32768–60999), where no socket
/// bound to port 0 and no outgoing connection lands between this check and coturn's bind;
/// the search starts at a place that depends on the process and the time, and a port once
/// handed out in this process is not handed out again.
fn free_udp_port() -> anyhow::Result<u16> {
    static FIRST: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let span = LISTEN_SPAN.end() - LISTEN_SPAN.start() + 1;
    let first = *FIRST.get_or_init(|| (unique() % u64::from(span)) as u16);
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % span;
        let port = LISTEN_SPAN.start() + (first + offset) % span;
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free UDP port in {LISTEN_SPAN:?} on 127.0.0.1")
}

/// [`RELAY_PORTS`] consecutive UDP ports in [`RELAY_SPAN`], all free on `ip` right now.
/// The search starts at a place that depends on the process and the time, so tests running
/// at once rarely try the same range.
fn free_relay_range(ip: Ipv4Addr) -> anyhow::Result<RangeInclusive<u16>> {
    let slots = (RELAY_SPAN.end() - RELAY_SPAN.start() + 1) / RELAY_PORTS;
    let first = (unique() % u64::from(slots)) as u16;
    for i in 0..slots {
        let start = RELAY_SPAN.start() + ((first + i) % slots) * RELAY_PORTS;
        let range = start..=start + RELAY_PORTS - 1;
        if range.clone().all(|p| UdpSocket::bind((ip, p)).is_ok()) {
            return Ok(range);
        }
    }
    bail!("no {RELAY_PORTS} free UDP ports in {RELAY_SPAN:?} on {ip}")
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

    /// Lines as coturn 4.6.1 prints them: a periodic usage line, then the close.
    const LOG: &[&str] = &[
        "0: : session 001000000000000001: new, realm=<onair.test>, username=<viewer>, lifetime=600",
        "0: : session 001000000000000002: new, realm=<onair.test>, username=<camera>, lifetime=600",
        "9: : session 001000000000000001: refreshed, realm=<onair.test>, username=<viewer>, lifetime=0",
        "15: : session 001000000000000001: usage: realm=<onair.test>, username=<viewer>, rp=71, rb=6696, sp=1986, sb=1668905",
        "15: : session 001000000000000001: peer usage: realm=<onair.test>, username=<viewer>, rp=1982, rb=1661185, sp=57, sb=4827",
        "20: : session 001000000000000001: usage: realm=<onair.test>, username=<viewer>, rp=22, rb=1540, sp=1011, sb=854136",
        "20: : session 001000000000000001: peer usage: realm=<onair.test>, username=<viewer>, rp=1010, rb=850036, sp=21, sb=1344",
        "20: : session 001000000000000001: closed (2nd stage), user <viewer> realm <onair.test> origin <>, local 127.0.0.1:3478, remote 127.0.0.1:40000, reason: allocation timeout",
    ];

    #[test]
    fn sums_the_usage_of_closed_allocations() {
        let log: Vec<String> = LOG.iter().map(|l| l.to_string()).collect();
        let usage = Usage {
            from_client: 6696 + 1540,
            to_client: 1668905 + 854136,
            from_peers: 1661185 + 850036,
            to_peers: 4827 + 1344,
        };
        assert_eq!(Usage::closed(&log, "viewer"), Some(usage));
        assert_eq!(Usage::closed(&log[..7], "viewer"), None, "not closed yet");
        assert_eq!(Usage::closed(&log, "camera"), None, "not closed yet");
        assert_eq!(Usage::closed(&log, "nobody"), None, "no allocation");
    }
}
