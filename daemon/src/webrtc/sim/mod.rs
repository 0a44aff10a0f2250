//! The transport in simulated time: the loop's core ([`Stepped`]), the media it sends
//! ([`source`]), viewers that no one here wrote (str0m, [`watcher`]) and the network between
//! them ([`link`]), all stepped by one clock that jumps from one event to the next. Minutes
//! of a viewer's life take seconds, and runs differ only by what onaird draws at random (SSRCs,
//! sequence numbers): milliseconds.
//!
//! Only time is simulated: the cores are the ones onaird runs, with their real ICE, DTLS,
//! SRTP, RTCP, congestion control and pacer; what the source publishes goes through the
//! same feeds, kept GOPs and key frame mailboxes as the encoder thread's.
//!
//! The scenarios are in [`scenarios`]; each says what a viewer sees.

mod link;
mod scenarios;
mod source;
mod watcher;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::engine::Stepped;
use super::figures::PeerFigures;
use super::peer::PeerFactory;
use super::pending::PendingBudget;
use super::session::SessionId;
use crate::lifecycle::Lifecycle;
use crate::media::{LayerSpec, MediaHandle, layers};
use link::{Datagram, Link, Shape};
use source::Source;
use watcher::Watcher;

pub use link::Shape as LinkShape;
pub use watcher::Seen;

/// The default stream: 1280x720 at 2 Mbit/s and its 640x360 layer, 30 fps, an IDR every
/// 2 s, and Opus.
pub fn default_layers() -> Vec<LayerSpec> {
    layers::specs(1280, 720, 2000, 2)
}

/// One viewer and its path.
struct Place {
    watcher: Watcher,
    id: SessionId,
    down: Link,
    up: Link,
}

pub struct World {
    pub now: Instant,
    pub start: Instant,
    core: Stepped,
    factory: Arc<PeerFactory>,
    media: MediaHandle,
    source: Source,
    places: Vec<Place>,
    slots: Arc<Semaphore>,
    pending: PendingBudget,
    _lifecycle: Lifecycle,
    /// Where the port's sockets are registered. Never run: the world is stepped outside any
    /// task, where Tokio's cooperative budget (which would starve the feeds' polls) does
    /// not apply.
    _runtime: tokio::runtime::Runtime,
}

impl World {
    /// onaird sending `layers` (and audio), nobody watching yet.
    pub fn new(layers: &[LayerSpec]) -> World {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let entered = runtime.enter();
        let start = Instant::now();
        let media = MediaHandle::detached(layers, true, "42e01f");
        let config = onair_config::WebRtc {
            port: 0,
            bind_ips: vec![[127, 0, 0, 1].into()],
            ..Default::default()
        };
        let top = layers[0].bitrate_kbps;
        let lowest = layers[layers.len() - 1].bitrate_kbps;
        let factory = Arc::new(PeerFactory::new(&config, true, top, lowest));
        let lifecycle = Lifecycle::default();
        let core = Stepped::new(factory.clone(), media.clone(), &lifecycle, start).expect("bound");
        drop(entered);
        World {
            now: start,
            start,
            core,
            factory,
            source: Source::new(media.clone(), 30, Duration::from_secs(2), start),
            media,
            places: Vec::new(),
            slots: Arc::new(Semaphore::new(super::MAX_SESSIONS)),
            pending: PendingBudget::new(1000, 1000),
            _lifecycle: lifecycle,
            _runtime: runtime,
        }
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// A new viewer behind `down` (onaird to it) and `up`, offering now; its index.
    pub fn join(&mut self, down: Shape, up: Shape, twcc: bool) -> usize {
        self.join_offering(down, up, twcc, |offer| offer).0
    }

    /// [`World::join`] with the viewer's offer changed by `edit` on its way; its index and
    /// onaird's answer.
    pub fn join_offering(
        &mut self,
        down: Shape,
        up: Shape,
        twcc: bool,
        edit: impl FnOnce(String) -> String,
    ) -> (usize, String) {
        let index = self.places.len();
        let addr = SocketAddr::from(([127, 0, 0, 1], 40_000 + index as u16));
        let (mut watcher, offer) = Watcher::new(self.now, addr, twcc);
        let offer = rtc::peer_connection::sdp::RTCSessionDescription::offer(edit(offer)).unwrap();
        let places = (
            self.slots.clone().try_acquire_owned().expect("a slot"),
            self.pending.take(Some(addr.ip())).expect("a place"),
        );
        let parts = super::prepare(&self.factory, &self.media, Some(offer), places, self.now)
            .expect("onaird takes str0m's offer");
        let (id, answer) = self.core.offer(parts, self.now).expect("an answer");
        watcher.answer(self.now, &answer);
        let seed = index as u64 + 1;
        self.places.push(Place {
            watcher,
            id,
            down: Link::new(down, seed),
            up: Link::new(up, seed << 32),
        });
        (index, answer)
    }

    /// Changes viewer `index`'s path from onaird.
    pub fn set_down(&mut self, index: usize, shape: Shape) {
        self.places[index].down.set(shape);
    }

    /// What viewer `index` saw.
    pub fn seen(&self, index: usize) -> &Seen {
        &self.places[index].watcher.seen
    }

    /// Viewer `index`'s figures, as `/api/status` shows them.
    pub fn figures(&mut self, index: usize) -> Option<PeerFigures> {
        let id = self.places[index].id.to_string();
        self.core.peers(self.now).into_iter().find(|p| p.id == id)
    }

    /// Restarts viewer `index`'s ICE (new credentials, as a WHEP PATCH): onaird's answer as
    /// it then describes it whole.
    pub fn restart(&mut self, index: usize) -> String {
        let id = self.places[index].id;
        self.core
            .restart(id, "sim2", "aNewPasswordOf22OrMore+", self.now)
            .expect("onaird restarts ICE");
        self.core.local_sdp(id).expect("a local description")
    }

    /// Viewers that onaird counts as watching.
    pub fn viewers(&self) -> usize {
        self.core.directory().viewers()
    }

    /// Runs until `elapsed` is `until`.
    pub fn run_until(&mut self, until: Duration) {
        let end = self.start + until;
        // ONAIR_SIM_TRACE=250: the first viewers' figures every 250 ms of simulated time.
        let trace = std::env::var("ONAIR_SIM_TRACE")
            .ok()
            .and_then(|ms| ms.parse().ok());
        let mut next_trace = self.now;
        while self.now < end {
            self.step(end);
            if let Some(ms) = trace
                && self.now >= next_trace
            {
                next_trace += Duration::from_millis(ms);
                for index in 0..self.places.len().min(2) {
                    let figures = self.figures(index);
                    eprintln!("{:?} viewer {index}: {figures:?}", self.elapsed());
                }
            }
        }
    }

    /// Does everything due now, then moves the clock to the next thing due (at most `end`).
    fn step(&mut self, end: Instant) {
        let now = self.now;
        self.source.run(now);
        for place in &mut self.places {
            while let Some(d) = place.up.arrived(now) {
                self.core.arrive(d.to, d.from, &d.data, now);
            }
        }
        self.core.run(now);
        for (from, to, data) in self.core.sent() {
            let Some(place) = self.places.iter_mut().find(|p| p.watcher.addr() == to) else {
                continue;
            };
            let data = data.to_vec();
            place.down.send(now, Datagram { from, to, data });
        }
        for place in &mut self.places {
            while let Some(d) = place.down.arrived(now) {
                place.watcher.receive(now, &d);
            }
            if place.watcher.timeout() <= now {
                place.watcher.tick(now);
            }
            for d in place.watcher.outbox.drain(..) {
                place.up.send(now, d);
            }
        }
        let next = self.next_event().min(end);
        // Never stand still: whatever is due at `now` was done above.
        self.now = next.max(now + Duration::from_micros(100));
    }

    fn next_event(&self) -> Instant {
        let places = self.places.iter().flat_map(|p| {
            [
                Some(p.watcher.timeout()),
                p.down.next_arrival(),
                p.up.next_arrival(),
            ]
        });
        places
            .chain([Some(self.source.next()), self.core.deadline()])
            .flatten()
            .min()
            .unwrap_or(self.now)
    }
}

/// What one viewer saw, summed up.
#[derive(Debug)]
pub struct Summary {
    pub pictures: usize,
    pub fps: f64,
    /// The longest time without a new picture.
    pub longest_freeze: Duration,
    /// Capture to decodable.
    pub latency_p50: Duration,
    pub latency_p95: Duration,
    pub latency_max: Duration,
    /// Times the layer shown changed.
    pub layer_changes: usize,
    /// Share of pictures on each layer.
    pub on_layer: Vec<f64>,
    pub undecodable: u64,
    /// The longest freezes (over 300 ms): when they began, and how long they were.
    pub freezes: Vec<(Duration, Duration)>,
}

impl Seen {
    /// What was seen between `from` and `to` (from the start).
    pub fn summary(&self, start: Instant, from: Duration, to: Duration) -> Summary {
        let shown: Vec<_> = self
            .shown
            .iter()
            .filter(|s| s.at >= start + from && s.at < start + to)
            .collect();
        let mut latencies: Vec<Duration> = shown
            .iter()
            .map(|s| s.at - (start + s.stamp.captured))
            .collect();
        latencies.sort();
        let percentile = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or(Duration::MAX)
        };
        let mut times: Vec<Instant> = vec![start + from];
        times.extend(shown.iter().map(|s| s.at));
        times.push(start + to);
        let longest_freeze = times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        let layer_changes = shown
            .windows(2)
            .filter(|w| w[0].stamp.layer != w[1].stamp.layer)
            .count();
        let mut on_layer = vec![0.0; 2];
        for s in &shown {
            on_layer[s.stamp.layer.min(1)] += 1.0;
        }
        on_layer
            .iter_mut()
            .for_each(|n| *n /= shown.len().max(1) as f64);
        let mut freezes: Vec<(Duration, Duration)> = times
            .windows(2)
            .map(|w| (w[0] - start, w[1] - w[0]))
            .filter(|(_, long)| *long > Duration::from_millis(300))
            .collect();
        freezes.sort_by_key(|(_, long)| std::cmp::Reverse(*long));
        freezes.truncate(5);
        Summary {
            pictures: shown.len(),
            fps: shown.len() as f64 / (to - from).as_secs_f64(),
            longest_freeze,
            latency_p50: percentile(0.5),
            latency_p95: percentile(0.95),
            latency_max: latencies.last().copied().unwrap_or(Duration::MAX),
            layer_changes,
            on_layer,
            undecodable: self.undecodable,
            freezes,
        }
    }
}

impl World {
    /// What viewer `index` saw between `from` and `to`.
    pub fn summary(&self, index: usize, from: Duration, to: Duration) -> Summary {
        self.seen(index).summary(self.start, from, to)
    }
}
