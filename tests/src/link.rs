//! A bad link for one viewer: a UDP relay on loopback whose camera-to-viewer direction is a
//! bottleneck of a given rate with a bounded queue (drop-tail, like `tc tbf`), and may lose
//! a share of the packets at random (like interference on a radio link).
//!
//! The kernel's `tbf` on `lo` (inside `unshare -rn`) shapes every flow on the machine alike;
//! netem, veth and tc classifiers are not available here (../shared/design/FACTS.md). To
//! limit one viewer while another runs free, the limited viewer reaches the camera through
//! this relay instead: its copy of the answer names the relay's address as the camera's only
//! candidate ([`through`]), and the camera learns the relay's upstream socket as the viewer's
//! (peer-reflexive) address from the viewer's own checks. Works for the webrtc-rs test
//! viewer, Chromium and aiortc; aiortc's offer must go without its candidates
//! (`whep_client.py --relay` does that), or it takes the camera's direct checks to it for a
//! better path and goes round the relay.
//!
//! The queue is a pure state machine ([`Bottleneck`]) with time as an input; the relay is
//! the I/O around it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A link's rate and how long its queue may get.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// Bits per second; `None` is no limit.
    pub rate_bps: Option<u64>,
    /// A packet that would wait longer than this in the queue is dropped (tbf's `latency`).
    pub queue: Duration,
    /// This share (0 to 1) of the packets arriving is lost at random, before the queue.
    pub loss: f64,
}

impl Shape {
    /// A bottleneck of `kbps` with tbf's queue of 400 ms.
    pub fn kbps(kbps: u64) -> Shape {
        Shape {
            rate_bps: Some(kbps * 1000),
            ..Shape::free()
        }
    }

    /// No rate limit, but `loss` (0 to 1) of the packets lost at random.
    pub fn lossy(loss: f64) -> Shape {
        Shape {
            loss,
            ..Shape::free()
        }
    }

    /// No limit.
    pub fn free() -> Shape {
        Shape {
            rate_bps: None,
            queue: Duration::from_millis(400),
            loss: 0.0,
        }
    }
}

/// A serialising link: each packet occupies it for `len × 8 / rate` seconds, in arrival
/// order; one that would have to wait longer than `queue` is dropped on arrival, and
/// `loss` of them are lost before that.
#[derive(Debug)]
pub struct Bottleneck {
    shape: Shape,
    /// When the packet last accepted has left.
    busy_until: Option<Instant>,
    queue: VecDeque<(Instant, Vec<u8>)>,
    /// The random losses' generator (xorshift64; the same losses every run).
    dice: u64,
}

/// Why a packet did not get onto the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Lost at random.
    Lost,
    /// The queue was full.
    Dropped,
}

impl Bottleneck {
    /// An empty link of `shape`.
    pub fn new(shape: Shape) -> Self {
        Bottleneck {
            shape,
            busy_until: None,
            queue: VecDeque::new(),
            dice: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// A uniform draw in 0..1.
    fn roll(&mut self) -> f64 {
        self.dice ^= self.dice << 13;
        self.dice ^= self.dice >> 7;
        self.dice ^= self.dice << 17;
        (self.dice >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Changes the rate from now on; what is queued keeps its departure times.
    pub fn reshape(&mut self, shape: Shape) {
        self.shape = shape;
    }

    /// A packet arrives at `now`: queued, or why not.
    pub fn push(&mut self, now: Instant, packet: Vec<u8>) -> Result<(), Refused> {
        if self.shape.loss > 0.0 && self.roll() < self.shape.loss {
            return Err(Refused::Lost);
        }
        let Some(rate) = self.shape.rate_bps.filter(|&r| r > 0) else {
            self.queue.push_back((now, packet));
            return Ok(());
        };
        let start = self.busy_until.map_or(now, |busy| busy.max(now));
        if start.duration_since(now) > self.shape.queue {
            return Err(Refused::Dropped);
        }
        let on_wire = Duration::from_secs_f64(packet.len() as f64 * 8.0 / rate as f64);
        let leaves = start + on_wire;
        self.busy_until = Some(leaves);
        self.queue.push_back((leaves, packet));
        Ok(())
    }

    /// The next packet whose time has come by `now`.
    pub fn pop(&mut self, now: Instant) -> Option<Vec<u8>> {
        match self.queue.front() {
            Some((leaves, _)) if *leaves <= now => self.queue.pop_front().map(|(_, p)| p),
            _ => None,
        }
    }

    /// When the next queued packet leaves.
    pub fn next_departure(&self) -> Option<Instant> {
        self.queue.front().map(|(leaves, _)| *leaves)
    }
}

/// What went through a link's bottleneck.
#[derive(Debug, Default)]
pub struct Counters {
    /// Packets delivered to the viewer.
    pub delivered: AtomicU64,
    /// Bytes delivered to the viewer.
    pub delivered_bytes: AtomicU64,
    /// Packets the full queue dropped.
    pub dropped: AtomicU64,
    /// Packets lost at random.
    pub lost: AtomicU64,
}

/// A running relay. Dropping it stops it.
pub struct Link {
    addr: SocketAddr,
    shape: watch::Sender<Shape>,
    counters: Arc<Counters>,
    _tasks: JoinSet<()>,
}

/// At most this many viewer addresses (host candidates) get an upstream socket.
const MAX_FLOWS: usize = 16;

impl Link {
    /// A relay on 127.0.0.1 in front of the camera's UDP port `camera`, shaping what the
    /// camera sends as `down`; the viewer-to-camera direction is not limited.
    pub async fn start(camera: SocketAddr, down: Shape) -> anyhow::Result<Link> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let (shape, shapes) = watch::channel(down);
        let counters = Arc::new(Counters::default());
        let mut tasks = JoinSet::new();
        tasks.spawn(relay(front, camera, shapes, counters.clone()));
        Ok(Link {
            addr,
            shape,
            counters,
            _tasks: tasks,
        })
    }

    /// The address the viewer is told is the camera's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the camera-to-viewer shape (e.g. lifts the limit).
    pub fn reshape(&self, down: Shape) {
        self.shape.send_replace(down);
    }

    /// What went through so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// Viewer to camera: forwarded as it comes, through an upstream socket per viewer address.
/// Camera to viewer: through that viewer address's bottleneck.
async fn relay(
    front: Arc<UdpSocket>,
    camera: SocketAddr,
    shapes: watch::Receiver<Shape>,
    counters: Arc<Counters>,
) {
    let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, viewer)) = front.recv_from(&mut buf).await else {
            return;
        };
        let back = match flows.get(&viewer) {
            Some(back) => back.clone(),
            None if flows.len() >= MAX_FLOWS => continue,
            None => {
                let Ok(back) = upstream(camera).await else {
                    continue;
                };
                flows.insert(viewer, back.clone());
                let down = Down {
                    back: back.clone(),
                    front: front.clone(),
                    viewer,
                    shapes: shapes.clone(),
                    counters: counters.clone(),
                };
                tasks.spawn(down.run());
                back
            }
        };
        let _ = back.send(&buf[..n]).await;
    }
}

async fn upstream(camera: SocketAddr) -> anyhow::Result<Arc<UdpSocket>> {
    let back = UdpSocket::bind("127.0.0.1:0").await?;
    back.connect(camera)
        .await
        .with_context(|| format!("connecting to {camera}"))?;
    Ok(Arc::new(back))
}

/// The camera-to-viewer half of one flow.
struct Down {
    back: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    viewer: SocketAddr,
    shapes: watch::Receiver<Shape>,
    counters: Arc<Counters>,
}

impl Down {
    async fn run(mut self) {
        let mut bottleneck = Bottleneck::new(*self.shapes.borrow());
        let mut buf = vec![0u8; 2048];
        loop {
            let next = bottleneck.next_departure();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = self.back.recv(&mut buf) => {
                    let Ok(n) = received else { return };
                    let counter = match bottleneck.push(Instant::now(), buf[..n].to_vec()) {
                        Ok(()) => None,
                        Err(Refused::Dropped) => Some(&self.counters.dropped),
                        Err(Refused::Lost) => Some(&self.counters.lost),
                    };
                    if let Some(counter) = counter {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
                changed = self.shapes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    bottleneck.reshape(*self.shapes.borrow_and_update());
                }
                () = sleep => {}
            }
            self.deliver(&mut bottleneck).await;
        }
    }

    async fn deliver(&self, bottleneck: &mut Bottleneck) {
        while let Some(packet) = bottleneck.pop(Instant::now()) {
            if self.front.send_to(&packet, self.viewer).await.is_ok() {
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .delivered_bytes
                    .fetch_add(packet.len() as u64, Ordering::Relaxed);
            }
        }
    }
}

/// `answer` with its UDP candidates replaced by one at `relay` (and no TCP ones), so that the
/// viewer it is given reaches the camera only through the relay.
pub fn through(answer: &str, relay: SocketAddr) -> String {
    let mut placed = false;
    let mut out = String::with_capacity(answer.len());
    for line in answer.split_inclusive('\n') {
        let Some(candidate) = line.trim_end().strip_prefix("a=candidate:") else {
            out.push_str(line);
            continue;
        };
        // foundation component transport priority address port typ type …
        let fields: Vec<&str> = candidate.split(' ').collect();
        if placed || fields.len() < 8 || !fields[2].eq_ignore_ascii_case("udp") {
            continue;
        }
        placed = true;
        out.push_str(&format!(
            "a=candidate:{} {} udp {} {} {} typ host\r\n",
            fields[0],
            fields[1],
            fields[3],
            relay.ip(),
            relay.port()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bottleneck_spaces_packets_by_their_time_on_the_wire_and_drops_what_waits_too_long() {
        let t = Instant::now();
        // 1000 bytes at 80 kb/s: 100 ms each; the queue holds 250 ms of waiting.
        let mut link = Bottleneck::new(Shape {
            rate_bps: Some(80_000),
            queue: Duration::from_millis(250),
            loss: 0.0,
        });
        for _ in 0..3 {
            assert_eq!(link.push(t, vec![0; 1000]), Ok(()));
        }
        // The fourth would start 300 ms from now.
        assert_eq!(link.push(t, vec![0; 1000]), Err(Refused::Dropped));
        assert_eq!(link.pop(t + Duration::from_millis(99)), None);
        assert!(link.pop(t + Duration::from_millis(100)).is_some());
        assert_eq!(link.pop(t + Duration::from_millis(100)), None);
        assert_eq!(link.next_departure(), Some(t + Duration::from_millis(200)));
        link.reshape(Shape::free());
        assert_eq!(link.push(t + Duration::from_millis(150), vec![1]), Ok(()));
    }

    #[test]
    fn a_lossy_link_loses_about_its_share_at_random() {
        let t = Instant::now();
        let mut link = Bottleneck::new(Shape::lossy(0.1));
        let pushes: Vec<_> = (0..10_000).map(|_| link.push(t, vec![0])).collect();
        let lost = pushes.iter().filter(|p| **p == Err(Refused::Lost)).count();
        assert!((900..=1100).contains(&lost), "{lost} of 10000 lost");
        // Not in a pattern: some losses come two in a row, most alone.
        let pairs = pushes
            .windows(2)
            .filter(|w| w[0].is_err() && w[1].is_err())
            .count();
        assert!((50..=150).contains(&pairs), "{pairs} losses in a row");
    }

    #[test]
    fn the_viewer_is_told_the_relay_is_the_cameras_only_candidate() {
        let answer = "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n\
                      a=candidate:2 1 udp 2130706431 10.0.0.2 50000 typ host\r\n\
                      a=candidate:3 1 tcp 1671430143 127.0.0.1 50000 typ host tcptype passive\r\n\
                      a=end-of-candidates\r\n";
        let relayed = through(answer, "127.0.0.1:41000".parse().unwrap());
        assert_eq!(
            relayed,
            "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 41000 typ host\r\n\
             a=end-of-candidates\r\n"
        );
    }
}
