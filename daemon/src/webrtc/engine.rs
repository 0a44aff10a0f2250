//! The one loop: every viewer, driven by one task over the one port.
//!
//! webrtc-rs's sans-IO core (`rtc::RTCPeerConnection`) does ICE, DTLS, SRTP, RTCP and the
//! interceptors (NACK, reports, TWCC, congestion control, the pacer) with time as an input
//! and no I/O. This task owns every [`Viewer`] (its core and everything else onaird keeps for
//! it) and the port's sockets, and is their only driver:
//!
//! - **Requests** ([`Request`], one bounded queue): offers, answers, trickled candidates,
//!   ICE restarts, figures; each answered once, by a reply channel. Ends
//!   (WHEP DELETE) come through a second queue that holds at most one per live session.
//! - **Media**: one subscription per layer that a viewer watches, and one to the audio
//!   ([`Feeds`]); each new picture goes to every viewer on its layer in one wake.
//! - **In**: datagrams and ICE-TCP frames from the port ([`Arrival`]) go to the viewer
//!   [`Routes`] names; answers to our STUN requests, to [`Reflexive`].
//! - **Out**: whatever a core has to send leaves through the port's socket serving its local
//!   address, at the end of the wake: a viewer's datagrams of one wake (a picture's packets
//!   that its pacer let out) leave in one system call where the kernel has UDP GSO
//!   ([`Net::send_outbox`]); a full socket buffer queues up to [`UNSENT`] datagrams. ICE-TCP
//!   frames go to the viewer's stream.
//! - **Time**: each viewer's next deadline (its core's timer, its session's, its catch-up's);
//!   every [`CHOOSE_EVERY`] each viewer's layer is reconsidered, every [`REPORT_LOSS_EVERY`]
//!   its loss goes to the audio encoder. The loop wakes for the earliest.
//!
//! The loop never waits on anyone: replies go into one-shot channels, media into the cores
//! (each viewer's pacer holds at most `congestion::PACER_QUEUE_PACKETS`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use rtc::ice::candidate::CandidateConfig;
use rtc::ice::candidate::candidate_host::CandidateHostConfig;
use rtc::ice::candidate::candidate_server_reflexive::CandidateServerReflexiveConfig;
use rtc::ice::tcp_type::TcpType;
use rtc::peer_connection::sdp::RTCSdpType;
use rtc::peer_connection::transport::{RTCIceCandidate, RTCIceCandidateInit};
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamMap;
use tokio_stream::wrappers::BroadcastStream;
use tracing::{debug, error, info, warn};

use super::ended::EndNotices;
use super::figures::{PeerFigures, Phase, SessionFigures, Traffic};
use super::peer::PeerFactory;
use super::port::{ARRIVALS, Arrival, Port, Routes, Socket, stun};
use super::reflexive::Reflexive;
use super::session::{Action, CloseReason, Event, SessionId};
use super::tcp::{StreamKey, TcpArrival};
use super::viewer::{Parts, Viewer};
use super::{IceCredentials, OfferError, Undelivered, negotiate};
use crate::lifecycle::{Lifecycle, Stop};
use crate::media::{AudioUnit, KeyframeReason, MediaHandle, VideoUnit};

/// Requests waiting for the loop, from everyone. Each takes the loop microseconds; offers
/// wait for room, candidates find it full only when the loop is overwhelmed, and are then
/// refused (`503`, try again).
const REQUESTS: usize = 256;
/// Datagrams waiting for room in a socket's send buffer; more drop the oldest.
const UNSENT: usize = 4096;
/// The most bytes one system call sends (UDP GSO's limit is 64 KiB).
const SEND_AT_ONCE: usize = 60_000;
/// Arrivals and pictures handled per wake before the loop looks at its timers again.
const BURST: usize = 64;
/// How often each viewer's layer is reconsidered.
pub const CHOOSE_EVERY: Duration = Duration::from_millis(100);
/// How often each viewer's loss is reported to the audio encoder.
pub const REPORT_LOSS_EVERY: Duration = Duration::from_secs(1);

/// A reply the loop owes.
pub type Reply<T> = oneshot::Sender<Result<T, OfferError>>;

/// What the front ends ask of the loop: one kind per request, one reply each.
pub enum Request {
    /// A new viewer, its core built and its offer applied (WHEP) or our tracks added
    /// (signalling, WHIP) by the caller, off the loop: the loop adds our candidates and
    /// replies with its id and our answer or offer.
    Offer(Box<Parts>, Reply<(SessionId, String)>),
    /// The viewer's answer to our offer.
    Answer(SessionId, String, Reply<()>),
    /// One of the viewer's ICE candidates (trickled).
    Candidate(SessionId, RTCIceCandidateInit),
    /// The viewer restarts ICE with these credentials; the reply is our ICE fragment.
    Restart(SessionId, IceCredentials, Reply<String>),
    /// The ICE session's number (its WHEP entity tag), if the session is live.
    IceGeneration(SessionId, oneshot::Sender<Option<u32>>),
    /// Where a session is, if it is live.
    Phase(SessionId, oneshot::Sender<Option<Phase>>),
    /// Every session's figures, for `/metrics`.
    Figures(oneshot::Sender<SessionFigures>),
    /// Each live session's figures, for `/api/status`.
    Peers(oneshot::Sender<Vec<PeerFigures>>),
    /// Ask these STUN servers for the port's public address from now on.
    StunServers(Vec<SocketAddr>),
}

/// What the front ends may read without asking the loop: which sessions are live, how many
/// viewers receive media, and who wants to hear of a session's end. Written by the loop only.
#[derive(Default)]
pub struct Directory {
    /// Live sessions, each with whether its end was asked for already.
    live: Mutex<HashMap<SessionId, bool>>,
    /// Sessions with media flowing.
    viewers: AtomicUsize,
    /// Ids of sessions that ended, for front ends that must tell someone (signalling).
    pub ended: EndNotices,
}

impl Directory {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, bool>> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether session `id` is live.
    pub fn contains(&self, id: SessionId) -> bool {
        self.live().contains_key(&id)
    }

    /// Live sessions, negotiating ones included.
    pub fn len(&self) -> usize {
        self.live().len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Viewers receiving media.
    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }
}

/// The way to the loop. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    requests: mpsc::Sender<Request>,
    /// Ends asked for (WHEP DELETE): at most one per live session waits (see
    /// [`Directory::live`]), so at most `MAX_SESSIONS`.
    ends: mpsc::UnboundedSender<SessionId>,
    directory: Arc<Directory>,
    number: u16,
}

impl Engine {
    /// Binds the port `factory` names and starts the loop, serving `media`, as part of
    /// `lifecycle`: at its stop the loop closes every session (their close alerts go out)
    /// and ends. Our host candidates are the bound addresses (a wildcard's: its family's on
    /// the machine's interfaces).
    pub fn start(
        factory: Arc<PeerFactory>,
        media: MediaHandle,
        lifecycle: &Lifecycle,
    ) -> std::io::Result<Engine> {
        let (arrivals_tx, arrivals) = mpsc::channel(ARRIVALS);
        let (ips, number) = factory.binding();
        let port = Port::bind(ips, number, &arrivals_tx, lifecycle)?;
        let (requests_tx, requests) = mpsc::channel(REQUESTS);
        let (ends_tx, ends) = mpsc::unbounded_channel();
        let number = port.number();
        let directory = Arc::new(Directory::default());
        let core = Core::new(
            Net::new(port),
            factory,
            media,
            directory.clone(),
            Instant::now(),
        );
        lifecycle.track(run(
            core,
            Inputs {
                requests,
                ends,
                arrivals,
                stop: lifecycle.stop_signal(),
            },
        ));
        Ok(Engine {
            requests: requests_tx,
            ends: ends_tx,
            directory,
            number,
        })
    }

    /// The port's number.
    pub fn number(&self) -> u16 {
        self.number
    }

    /// What may be read without asking the loop.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Hands `request` to the loop, waiting for room; `Err` once the loop has stopped.
    pub async fn ask(&self, request: Request) -> Result<(), OfferError> {
        self.requests
            .send(request)
            .await
            .map_err(|_| OfferError::ShuttingDown)
    }

    /// Whether the loop has stopped.
    pub fn stopped(&self) -> bool {
        self.requests.is_closed()
    }

    /// Hands `request` to the loop if there is room at once.
    pub fn try_ask(&self, request: Request) -> Result<(), Undelivered> {
        self.requests.try_send(request).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => Undelivered::Full,
            mpsc::error::TrySendError::Closed(_) => Undelivered::NoSession,
        })
    }

    /// Ask these STUN servers for the port's public address from now on.
    pub async fn set_stun_servers(&self, servers: Vec<SocketAddr>) -> Result<(), OfferError> {
        self.ask(Request::StunServers(servers)).await
    }

    /// Ends session `id` (WHEP DELETE): `false` if there is no such session. Never waits;
    /// asking twice sends one end.
    pub fn end(&self, id: SessionId) -> bool {
        let mut live = self.directory.live();
        match live.get_mut(&id) {
            Some(asked) => {
                if !*asked {
                    *asked = true;
                    let _ = self.ends.send(id);
                }
                true
            }
            None => false,
        }
    }
}

/// The addresses to announce for each socket of the port: its own, or for a wildcard the
/// addresses of its family on the machine's interfaces (not loopback, not link-local).
fn host_addresses(sockets: &[Arc<Socket>]) -> Vec<(usize, IpAddr)> {
    let interfaces: Vec<IpAddr> = rtc::shared::ifaces::ifaces()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.addr.map(|a| a.ip()))
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .filter(|ip| match ip {
            IpAddr::V6(v6) => !v6.is_unicast_link_local(),
            IpAddr::V4(v4) => !v4.is_link_local(),
        })
        .collect();
    let mut hosts = Vec::new();
    for (index, socket) in sockets.iter().enumerate() {
        let bound = socket.bound().ip();
        if bound.is_unspecified() {
            for ip in interfaces
                .iter()
                .filter(|ip| ip.is_ipv4() == bound.is_ipv4())
            {
                if !hosts.contains(&(index, *ip)) {
                    hosts.push((index, *ip));
                }
            }
        } else {
            hosts.push((index, bound));
        }
    }
    hosts
}

struct Inputs {
    stop: Stop,
    requests: mpsc::Receiver<Request>,
    ends: mpsc::UnboundedReceiver<SessionId>,
    arrivals: mpsc::Receiver<Arrival>,
}

/// The loop. Ends at the stop, or when every [`Engine`] is dropped, closing every session.
async fn run(mut core: Core, mut inputs: Inputs) {
    loop {
        let deadline = core.deadline();
        let flushing = !core.net.unsent.is_empty();
        tokio::select! {
            biased;
            () = inputs.stop.stopped() => break,
            Some(id) = inputs.ends.recv() => core.event(id, Event::Delete, Instant::now()),
            request = inputs.requests.recv() => match request {
                Some(request) => core.request(request, Instant::now()),
                None => break,
            },
            Some(arrival) = inputs.arrivals.recv() => {
                core.arrive(arrival, Instant::now());
                for _ in 0..BURST {
                    match inputs.arrivals.try_recv() {
                        Ok(arrival) => core.arrive(arrival, Instant::now()),
                        Err(_) => break,
                    }
                }
            }
            Some((feed, unit)) = core.feeds.next() => {
                core.publish(feed, unit, Instant::now());
            }
            _ = core.net.first_unsent_writable(), if flushing => core.net.flush(),
            () = sleep_until(deadline) => {}
        }
        core.on_time(Instant::now());
        core.net.send_outbox();
    }
    core.shutdown(Instant::now());
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Which published stream a subscription is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Feed {
    Video(usize),
    Audio,
}

/// One published unit, or the news that some were missed.
enum Unit {
    Video(Arc<VideoUnit>),
    Audio(Arc<AudioUnit>),
    /// The loop fell so far behind that the broadcast ring overwrote units.
    Lost,
}

type UnitStream = Pin<Box<dyn Stream<Item = Unit> + Send>>;

/// The loop's subscriptions to the encoded media: one per layer that a viewer is on or
/// moving to (subscribing is what makes a lower layer be encoded), one to the audio while a
/// viewer hears it.
#[derive(Default)]
struct Feeds {
    streams: StreamMap<Feed, UnitStream>,
}

impl Feeds {
    async fn next(&mut self) -> Option<(Feed, Unit)> {
        if self.streams.is_empty() {
            return std::future::pending().await;
        }
        self.streams.next().await
    }

    /// Subscribes to `feed` unless subscribed already.
    fn want(&mut self, feed: Feed, media: &MediaHandle) {
        if self.streams.contains_key(&feed) {
            return;
        }
        let stream: UnitStream = match feed {
            Feed::Video(layer) => match media.subscribe_layer(layer) {
                Some(live) => Box::pin(BroadcastStream::new(live).map(|unit| match unit {
                    Ok(unit) => Unit::Video(unit),
                    Err(_) => Unit::Lost,
                })),
                None => return,
            },
            Feed::Audio => match media.subscribe_audio() {
                Some(live) => Box::pin(BroadcastStream::new(live).map(|unit| match unit {
                    Ok(unit) => Unit::Audio(unit),
                    Err(_) => Unit::Lost,
                })),
                None => return,
            },
        };
        self.streams.insert(feed, stream);
    }

    /// Subscribes to `feed` afresh: from the next unit published.
    fn resubscribe(&mut self, feed: Feed, media: &MediaHandle) {
        self.streams.remove(&feed);
        self.want(feed, media);
    }

    /// Keeps only the subscriptions in `wanted`.
    fn keep(&mut self, wanted: &HashSet<Feed>) {
        let unwanted: Vec<Feed> = self
            .streams
            .keys()
            .filter(|feed| !wanted.contains(feed))
            .copied()
            .collect();
        for feed in unwanted {
            self.streams.remove(&feed);
        }
    }
}

/// What a viewer waits for before its SDP can be described: our candidates, which wait for
/// the port's public address (STUN) for a moment after the start.
enum Describing {
    /// A new session: our answer to its offer, or our offer.
    New(RTCSdpType, Reply<(SessionId, String)>),
    /// An ICE restart: our answer's ICE part.
    Restart(Reply<String>),
}

/// One datagram to send.
struct Datagram {
    /// The port's socket it leaves by.
    socket: usize,
    from: IpAddr,
    to: SocketAddr,
    data: BytesMut,
}

impl Datagram {
    /// Whether `next` may follow this one in one GSO send: same way, and this one full size.
    fn takes(&self, next: &Datagram, size: usize) -> bool {
        self.socket == next.socket
            && self.from == next.from
            && self.to == next.to
            && self.data.len() == size
            && next.data.len() <= size
    }
}

/// The port's side of the loop: sockets, routes, streams.
struct Net {
    sockets: Vec<Arc<Socket>>,
    /// (socket, address) of our host candidates.
    hosts: Vec<(usize, IpAddr)>,
    routes: Routes,
    streams: HashMap<StreamKey, (SessionId, mpsc::Sender<Bytes>)>,
    /// This wake's datagrams, in order, sent at its end ([`Net::send_outbox`]).
    outbox: Vec<Datagram>,
    /// Datagrams that found their socket's buffer full.
    unsent: VecDeque<Datagram>,
    dropped: u64,
    /// Where datagrams sent together are put end to end.
    joined: Vec<u8>,
}

struct Core {
    net: Net,
    viewers: HashMap<SessionId, Viewer>,
    /// What our SDP announces (`webrtc.nat_ips`).
    factory: Arc<PeerFactory>,
    feeds: Feeds,
    media: MediaHandle,
    reflexive: Reflexive,
    /// Viewers waiting for the port's public address before their SDP is described.
    waiting: Vec<(SessionId, Describing)>,
    directory: Arc<Directory>,
    /// What the sessions that ended had sent, so `/metrics` counters never go down.
    ended: Traffic,
    next_choice: Instant,
    next_loss_report: Instant,
    /// Ids, reused for each fan-out.
    scratch: Vec<SessionId>,
}

impl Core {
    fn new(
        net: Net,
        factory: Arc<PeerFactory>,
        media: MediaHandle,
        directory: Arc<Directory>,
        now: Instant,
    ) -> Self {
        Core {
            net,
            viewers: HashMap::new(),
            factory,
            feeds: Feeds::default(),
            media,
            reflexive: Reflexive::default(),
            waiting: Vec::new(),
            directory,
            ended: Traffic::default(),
            next_choice: now + CHOOSE_EVERY,
            next_loss_report: now + REPORT_LOSS_EVERY,
            scratch: Vec::new(),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let viewers = self.viewers.values().filter_map(Viewer::deadline);
        let stun = self.reflexive.deadline();
        let settle = (!self.waiting.is_empty())
            .then(|| self.reflexive.settles_by())
            .flatten();
        let watched = self.directory.viewers() > 0;
        let ticks = watched.then(|| self.next_choice.min(self.next_loss_report));
        viewers.chain(stun).chain(settle).chain(ticks).min()
    }

    fn request(&mut self, request: Request, now: Instant) {
        match request {
            Request::Offer(parts, reply) => self.offer(*parts, reply, now),
            Request::Answer(id, answer, reply) => {
                let taken = self.on_viewer(id, now, |viewer, _| viewer.take_answer(&answer, now));
                match taken {
                    Some(Ok(())) => {
                        let _ = reply.send(Ok(()));
                        self.event(id, Event::Answered, now);
                    }
                    Some(Err(err)) => {
                        warn!(session = %id, "{err}");
                        let _ = reply.send(Err(err));
                        self.end(id, CloseReason::Failed, now);
                    }
                    None => {
                        let _ = reply.send(Err(OfferError::NoSession));
                    }
                }
            }
            Request::Candidate(id, candidate) => {
                self.on_viewer(id, now, |viewer, _| viewer.add_remote_candidate(candidate));
            }
            Request::Restart(id, IceCredentials { ufrag, pwd }, reply) => {
                let restarted = self.on_viewer(id, now, |viewer, _| {
                    negotiate::restart(viewer.pc(), now, (&ufrag, &pwd))
                });
                match restarted {
                    Some(Ok(())) => {
                        self.waiting.push((id, Describing::Restart(reply)));
                        self.release_waiting(now);
                    }
                    Some(Err(err)) => {
                        warn!(session = %id, "ICE restart failed: {err}");
                        let _ = reply.send(Err(err));
                    }
                    None => {
                        let _ = reply.send(Err(OfferError::NoSession));
                    }
                }
            }
            Request::IceGeneration(id, reply) => {
                let _ = reply.send(self.viewers.get(&id).map(|v| v.ice_generation));
            }
            Request::Phase(id, reply) => {
                let _ = reply.send(self.viewers.get(&id).map(Viewer::phase));
            }
            Request::Figures(reply) => {
                let start = SessionFigures {
                    traffic: self.ended,
                    ..SessionFigures::default()
                };
                let readings = self.readings(now);
                let figures = readings
                    .into_iter()
                    .map(|(_, reading)| reading)
                    .fold(start, SessionFigures::count);
                let _ = reply.send(figures);
            }
            Request::Peers(reply) => {
                let mut peers: Vec<PeerFigures> = self
                    .readings(now)
                    .into_iter()
                    .map(|(id, reading)| PeerFigures::of(id.to_string(), reading))
                    .collect();
                peers.sort_by(|a, b| a.id.cmp(&b.id));
                let _ = reply.send(peers);
            }
            Request::StunServers(servers) => self.reflexive.set_servers(now, servers),
        }
    }

    fn readings(&mut self, now: Instant) -> Vec<(SessionId, super::figures::Reading)> {
        let mut readings = Vec::with_capacity(self.viewers.len());
        for (id, viewer) in &mut self.viewers {
            if let Ok(reading) = std::panic::catch_unwind(AssertUnwindSafe(|| viewer.reading(now)))
            {
                readings.push((*id, reading));
            }
        }
        readings
    }

    /// A new viewer (its core built, the offer applied or our tracks added): it waits for
    /// our candidates before its SDP is described.
    fn offer(&mut self, parts: Parts, reply: Reply<(SessionId, String)>, now: Instant) {
        let kind = match parts.answering {
            true => RTCSdpType::Answer,
            false => RTCSdpType::Offer,
        };
        let viewer = Viewer::new(SessionId::random(), parts, now);
        let id = viewer.id;
        self.directory.live().insert(id, false);
        self.viewers.insert(id, viewer);
        self.waiting.push((id, Describing::New(kind, reply)));
        self.release_waiting(now);
    }

    /// Describes the SDP of the viewers that wait for it, once STUN has answered or been
    /// waited for long enough.
    fn release_waiting(&mut self, now: Instant) {
        if self.waiting.is_empty() || !self.reflexive.settled(now) {
            return;
        }
        let candidates = self.candidates();
        for (id, describing) in std::mem::take(&mut self.waiting) {
            self.describe(id, describing, &candidates, now);
        }
    }

    fn describe(
        &mut self,
        id: SessionId,
        describing: Describing,
        candidates: &[RTCIceCandidateInit],
        now: Instant,
    ) {
        let kind = match &describing {
            Describing::New(kind, _) => *kind,
            Describing::Restart(_) => RTCSdpType::Answer,
        };
        let described = self.on_viewer(id, now, |viewer, _| {
            for candidate in candidates {
                if let Err(err) = viewer.pc().add_local_candidate(candidate.clone()) {
                    warn!(
                        "webrtc: our candidate {} refused: {err}",
                        candidate.candidate
                    );
                }
            }
            // Gathering is complete: the SDP says so.
            let _ = viewer
                .pc()
                .add_local_candidate(RTCIceCandidateInit::default());
            let (sdp, ufrag) = negotiate::describe(viewer.pc(), now, kind)?;
            if let Describing::New(RTCSdpType::Answer, _) = &describing {
                viewer.answered(&sdp)?;
            }
            Ok::<_, OfferError>((sdp, ufrag))
        });
        let described = described
            .unwrap_or(Err(OfferError::NoSession))
            .map(|(sdp, ufrag)| (negotiate::announced(&self.factory, sdp), ufrag));
        if let Ok((_, ufrag)) = &described {
            self.net.routes.answer_as(id, ufrag);
        }
        // Ended while being described (its core panicked, or timed out).
        let described = described.and_then(|done| match self.viewers.contains_key(&id) {
            true => Ok(done),
            false => Err(OfferError::NoSession),
        });
        match (describing, described) {
            (Describing::New(_, reply), Ok((sdp, _))) => {
                debug!(session = %id, "viewer negotiating");
                if let Some(viewer) = self.viewers.get_mut(&id) {
                    viewer.described(now);
                }
                let _ = reply.send(Ok((id, sdp)));
            }
            (Describing::Restart(reply), Ok((sdp, _))) => {
                if let Some(viewer) = self.viewers.get_mut(&id) {
                    viewer.restarted();
                }
                info!(session = %id, "ICE restarted");
                let _ = reply.send(Ok(negotiate::ice_fragment(&sdp)));
            }
            (Describing::New(_, reply), Err(err)) => {
                let _ = reply.send(Err(err));
                self.end(id, CloseReason::Failed, now);
            }
            (Describing::Restart(reply), Err(err)) => {
                warn!(session = %id, "ICE restart failed: {err}");
                let _ = reply.send(Err(err));
            }
        }
    }

    /// Our candidates: host UDP and passive TCP on each address, and server-reflexive.
    fn candidates(&self) -> Vec<RTCIceCandidateInit> {
        let port = self.net.sockets.first().map_or(0, |s| s.bound().port());
        let mut out = Vec::new();
        for (_, ip) in &self.net.hosts {
            for (network, tcp_type) in [("udp", TcpType::Unspecified), ("tcp", TcpType::Passive)] {
                let host = CandidateHostConfig {
                    base_config: config(network, *ip, port),
                    tcp_type,
                };
                out.extend(host.new_candidate_host().ok().and_then(|c| init(&c)));
            }
        }
        for (socket, public) in self.reflexive.found() {
            let Some((_, base)) = self.net.hosts.iter().find(|(s, _)| *s == socket) else {
                continue;
            };
            let srflx = CandidateServerReflexiveConfig {
                base_config: config("udp", public.ip(), public.port()),
                rel_addr: base.to_string(),
                rel_port: port,
                url: None,
            };
            out.extend(
                srflx
                    .new_candidate_server_reflexive()
                    .ok()
                    .and_then(|c| init(&c)),
            );
        }
        out
    }

    fn arrive(&mut self, arrival: Arrival, now: Instant) {
        match arrival {
            Arrival::Datagram { local, from, data } => {
                if self.reflexive.answer(&data) {
                    self.release_waiting(now);
                    return;
                }
                let Some(id) = self.net.routes.route(local.ip(), from, &data) else {
                    return;
                };
                let transport = transport(local, from, TransportProtocol::UDP);
                self.on_viewer(id, now, |viewer, _| viewer.read(now, transport, data));
            }
            Arrival::Tcp(TcpArrival::Opened { key, first, out }) => {
                let ufrag = stun(&first).filter(|s| s.request).and_then(|s| s.ufrag);
                let Some(id) = ufrag.and_then(|u| self.net.routes.conn_of(&u)) else {
                    debug!(peer = %key.1, "ICE-TCP: no connection has the check's ufrag; closed");
                    return;
                };
                self.net.streams.insert(key, (id, out));
                let transport = transport(key.0, key.1, TransportProtocol::TCP);
                self.on_viewer(id, now, |viewer, _| viewer.read(now, transport, first));
            }
            Arrival::Tcp(TcpArrival::Frame { key, data }) => {
                if let Some((id, _)) = self.net.streams.get(&key) {
                    let id = *id;
                    let transport = transport(key.0, key.1, TransportProtocol::TCP);
                    self.on_viewer(id, now, |viewer, _| viewer.read(now, transport, data));
                }
            }
            Arrival::Tcp(TcpArrival::Closed(key)) => {
                self.net.streams.remove(&key);
            }
        }
    }

    /// A published unit: to every viewer it is for.
    fn publish(&mut self, feed: Feed, unit: Unit, now: Instant) {
        if let Unit::Lost = unit {
            // The stream would go on from the oldest unit still in the ring, seconds old:
            // from the live end instead.
            self.feeds.resubscribe(feed, &self.media);
        }
        self.scratch.clear();
        self.scratch.extend(self.viewers.keys().copied());
        let ids = std::mem::take(&mut self.scratch);
        let keyframe = matches!(&unit, Unit::Video(u) if u.keyframe);
        for id in &ids {
            self.on_viewer(*id, now, |viewer, media| match (&unit, feed) {
                (Unit::Video(unit), Feed::Video(layer)) => viewer.video(layer, unit, now, media),
                (Unit::Audio(unit), _) => viewer.audio(unit, now),
                (Unit::Lost, Feed::Video(layer)) => viewer.lost_pictures(layer, media),
                _ => {}
            });
        }
        self.scratch = ids;
        // A viewer that moved to another layer at this IDR may have left a layer nobody
        // watches.
        if keyframe {
            self.keep_feeds();
        }
    }

    /// Runs `f` on viewer `id`, then sends what its core has to send and acts on what it
    /// says. A panic in it (a bug in the core, set off by what a peer sent) ends that viewer
    /// alone, never the loop and everyone else's.
    fn on_viewer<R>(
        &mut self,
        id: SessionId,
        now: Instant,
        f: impl FnOnce(&mut Viewer, &MediaHandle) -> R,
    ) -> Option<R> {
        let viewer = self.viewers.get_mut(&id)?;
        let (net, media) = (&mut self.net, &self.media);
        let done = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let done = f(viewer, media);
            net.send(viewer);
            (done, viewer.poll(now, media))
        }));
        match done {
            Ok((done, action)) => {
                self.act(id, action, now);
                Some(done)
            }
            Err(_) => {
                error!(session = %id, "webrtc: the connection's core panicked; it is ended");
                self.end(id, CloseReason::Failed, now);
                None
            }
        }
    }

    fn act(&mut self, id: SessionId, action: Action, now: Instant) {
        match action {
            Action::None => {}
            Action::StartMedia => self.start_media(id, now),
            Action::Close(reason) => self.end(id, reason, now),
        }
    }

    /// An event from outside for viewer `id`.
    fn event(&mut self, id: SessionId, event: Event, now: Instant) {
        if let Some(action) = self.on_viewer(id, now, |viewer, _| viewer.event(event, now)) {
            self.act(id, action, now);
        }
    }

    /// Viewer `id` connected: it joins the top layer from the kept GOP (taken after the
    /// subscription, so that nothing falls between the two), and the audio.
    fn start_media(&mut self, id: SessionId, now: Instant) {
        let Some(viewer) = self.viewers.get_mut(&id) else {
            return;
        };
        viewer.counted = true;
        let viewers = self.directory.viewers.fetch_add(1, Ordering::Relaxed) + 1;
        info!(session = %id, viewers, "viewer connected");
        self.feeds.want(Feed::Video(0), &self.media);
        self.feeds.want(Feed::Audio, &self.media);
        let gop = self.media.kept_gop();
        self.on_viewer(id, now, |viewer, media| {
            viewer.start_media(gop, media);
            viewer.on_time(now, media);
        });
        self.keep_feeds();
    }

    /// Ends viewer `id`: its close alert goes out, its figures join the ended sessions', and
    /// whoever watches its end is told.
    fn end(&mut self, id: SessionId, reason: CloseReason, now: Instant) {
        let Some(mut viewer) = self.viewers.remove(&id) else {
            return;
        };
        let closed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let sent = viewer.close(now);
            self.net.send(&mut viewer);
            sent
        }));
        // A close that panicked: the figures read before, which scrapes may have shown.
        let sent = closed.unwrap_or_else(|_| viewer.traffic());
        self.ended = self.ended.plus(sent);
        self.net.routes.forget(id);
        self.net.streams.retain(|_, (conn, _)| *conn != id);
        self.waiting.retain(|(conn, _)| *conn != id);
        self.directory.live().remove(&id);
        if viewer.counted {
            self.directory.viewers.fetch_sub(1, Ordering::Relaxed);
        }
        self.directory.ended.publish(&viewer.name);
        // Only viewers who watched are news: an offer that never connected is a stranger's
        // to repeat at will (debug).
        let viewers = self.directory.viewers();
        match viewer.counted {
            true => info!(session = %id, ?reason, viewers, "viewer gone"),
            false => debug!(session = %id, ?reason, viewers, "session that never connected gone"),
        }
        self.keep_feeds();
    }

    /// Keeps the subscriptions the viewers need, and only those.
    fn keep_feeds(&mut self) {
        let mut wanted = HashSet::new();
        for viewer in self.viewers.values() {
            let (on, moving_to) = viewer.layers();
            wanted.extend(on.into_iter().chain(moving_to).map(Feed::Video));
            if viewer.hears() {
                wanted.insert(Feed::Audio);
            }
        }
        self.feeds.keep(&wanted);
    }

    fn shutdown(&mut self, now: Instant) {
        let ids: Vec<SessionId> = self.viewers.keys().copied().collect();
        for id in ids {
            self.end(id, CloseReason::Shutdown, now);
        }
        self.net.send_outbox();
        self.net.flush();
    }

    fn on_time(&mut self, now: Instant) {
        let sockets: Vec<SocketAddr> = self.net.sockets.iter().map(|s| s.bound()).collect();
        for request in self.reflexive.poll(now, &sockets) {
            let datagram = BytesMut::from(&request.datagram[..]);
            self.net
                .send_from_socket(request.socket, None, request.server, datagram);
        }
        self.release_waiting(now);
        let due: Vec<SessionId> = self
            .viewers
            .iter()
            .filter(|(_, viewer)| viewer.deadline().is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.on_viewer(id, now, |viewer, media| viewer.on_time(now, media));
        }
        if now >= self.next_choice {
            self.next_choice = now + CHOOSE_EVERY;
            self.choose_layers(now);
        }
        if now >= self.next_loss_report {
            self.next_loss_report = now + REPORT_LOSS_EVERY;
            for viewer in self.viewers.values() {
                viewer.report_loss(&self.media);
            }
        }
    }

    /// Reconsiders every viewer's layer: a move starts by subscribing to the layer (which
    /// makes it encoded) and asking for its IDR.
    fn choose_layers(&mut self, now: Instant) {
        let mut moves = Vec::new();
        for viewer in self.viewers.values_mut() {
            if let Some(layer) = viewer.choose_layer(now) {
                moves.push((viewer.name.clone(), layer));
            }
        }
        for (name, layer) in moves {
            self.feeds.want(Feed::Video(layer), &self.media);
            self.media
                .request_keyframe(layer, KeyframeReason::Switch, &name);
        }
        self.keep_feeds();
    }
}

/// The loop's core driven by a simulation ([`super::sim`]): the calls [`run`] makes, with
/// the time given, and the datagrams handed over instead of sent. Its port is bound (on
/// loopback) but nothing is sent or read on it.
#[cfg(test)]
pub(super) struct Stepped(Core);

#[cfg(test)]
impl Stepped {
    pub(super) fn new(
        factory: Arc<PeerFactory>,
        media: MediaHandle,
        lifecycle: &Lifecycle,
        now: Instant,
    ) -> std::io::Result<Stepped> {
        let (arrivals, _) = mpsc::channel(1);
        let port = Port::bind(&[IpAddr::from([127, 0, 0, 1])], 0, &arrivals, lifecycle)?;
        let directory = Arc::new(Directory::default());
        Ok(Stepped(Core::new(
            Net::new(port),
            factory,
            media,
            directory,
            now,
        )))
    }

    /// A new viewer: its id and our answer.
    pub(super) fn offer(
        &mut self,
        parts: Parts,
        now: Instant,
    ) -> Result<(SessionId, String), OfferError> {
        let (reply, mut replied) = oneshot::channel();
        self.0.request(Request::Offer(Box::new(parts), reply), now);
        replied.try_recv().unwrap_or(Err(OfferError::NoSession))
    }

    pub(super) fn arrive(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        data: &[u8],
        now: Instant,
    ) {
        let data = BytesMut::from(data);
        self.0.arrive(Arrival::Datagram { local, from, data }, now);
    }

    /// Everything published by now, then the timers.
    pub(super) fn run(&mut self, now: Instant) {
        use futures_util::FutureExt;
        while let Some(Some((feed, unit))) = self.0.feeds.next().now_or_never() {
            self.0.publish(feed, unit, now);
        }
        self.0.on_time(now);
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        self.0.deadline()
    }

    /// What the loop sent since the last call: (from, to, datagram).
    pub(super) fn sent(&mut self) -> Vec<(SocketAddr, SocketAddr, BytesMut)> {
        let net = &mut self.0.net;
        let sockets = &net.sockets;
        net.outbox
            .drain(..)
            .map(|d| {
                let from = SocketAddr::new(d.from, sockets[d.socket].bound().port());
                (from, d.to, d.data)
            })
            .collect()
    }

    /// Every viewer's figures, as `/api/status` shows them.
    pub(super) fn peers(&mut self, now: Instant) -> Vec<PeerFigures> {
        let (reply, mut replied) = oneshot::channel();
        self.0.request(Request::Peers(reply), now);
        replied.try_recv().unwrap_or_default()
    }

    pub(super) fn directory(&self) -> &Directory {
        &self.0.directory
    }

    /// An ICE restart of viewer `id` (as a WHEP PATCH asks): our answer's ICE part.
    pub(super) fn restart(
        &mut self,
        id: SessionId,
        ufrag: &str,
        pwd: &str,
        now: Instant,
    ) -> Result<String, OfferError> {
        let (reply, mut replied) = oneshot::channel();
        let credentials = IceCredentials {
            ufrag: ufrag.to_owned(),
            pwd: pwd.to_owned(),
        };
        self.0
            .request(Request::Restart(id, credentials, reply), now);
        replied.try_recv().unwrap_or(Err(OfferError::NoSession))
    }

    /// Viewer `id`'s local description (our answer, as last described).
    pub(super) fn local_sdp(&mut self, id: SessionId) -> Option<String> {
        let viewer = self.0.viewers.get_mut(&id)?;
        viewer.pc().local_description().map(|d| d.sdp.clone())
    }
}

impl Net {
    fn new(port: Port) -> Self {
        Net {
            hosts: host_addresses(&port.sockets),
            sockets: port.sockets,
            routes: Routes::default(),
            streams: HashMap::new(),
            outbox: Vec::new(),
            unsent: VecDeque::new(),
            dropped: 0,
            joined: Vec::new(),
        }
    }

    /// Sends what the viewer's core has to send.
    fn send(&mut self, viewer: &mut Viewer) {
        while let Some(out) = viewer.transmit() {
            self.transmit(viewer.id, out);
        }
    }

    fn transmit(&mut self, id: SessionId, out: TaggedBytesMut) {
        let TransportContext {
            local_addr,
            peer_addr,
            transport_protocol,
            ..
        } = out.transport;
        match transport_protocol {
            TransportProtocol::UDP => {
                self.routes.sent(id, local_addr.ip(), peer_addr);
                let socket = self.sockets.iter().position(|s| s.serves(local_addr.ip()));
                match socket {
                    Some(socket) => {
                        self.send_from_socket(socket, Some(local_addr.ip()), peer_addr, out.message)
                    }
                    None => debug!(session = %id, %local_addr, "webrtc: no socket sends from here"),
                }
            }
            TransportProtocol::TCP => {
                if let Some((_, stream)) = self.streams.get(&(local_addr, peer_addr)) {
                    // A stalled viewer loses frames, as over UDP.
                    let _ = stream.try_send(out.message.freeze());
                }
            }
            _ => debug!(
                session = %id,
                "webrtc: no way to send over {transport_protocol:?}"
            ),
        }
    }

    /// Puts a datagram in this wake's outbox.
    fn send_from_socket(
        &mut self,
        socket: usize,
        from: Option<IpAddr>,
        to: SocketAddr,
        data: BytesMut,
    ) {
        let Some(s) = self.sockets.get(socket) else {
            return;
        };
        self.outbox.push(Datagram {
            socket,
            from: from.unwrap_or(s.bound().ip()),
            to,
            data,
        });
    }

    /// Sends this wake's datagrams: each run of them that goes the same way with the same
    /// size (the last may be shorter) in one system call, as many as the socket's GSO takes.
    /// Behind datagrams still unsent, they queue.
    fn send_outbox(&mut self) {
        let mut outbox = std::mem::take(&mut self.outbox);
        let mut datagrams = outbox.drain(..).peekable();
        while let Some(first) = datagrams.next() {
            let size = first.data.len().max(1);
            let most = self
                .sockets
                .get(first.socket)
                .map_or(1, |s| s.max_segments())
                .min(SEND_AT_ONCE / size)
                .max(1);
            let mut run = vec![first];
            while run.len() < most
                && let Some(next) = datagrams.next_if(|next| run[run.len() - 1].takes(next, size))
            {
                run.push(next);
            }
            self.send_run(run, size);
        }
        // Keep the allocation for the next wake.
        drop(datagrams);
        self.outbox = outbox;
    }

    /// Sends datagrams that go the same way, all of `size` but the last.
    fn send_run(&mut self, run: Vec<Datagram>, size: usize) {
        if !self.unsent.is_empty() {
            run.into_iter().for_each(|d| self.queue_unsent(d));
            return;
        }
        let Some(socket) = run.first().and_then(|d| self.sockets.get(d.socket)) else {
            return;
        };
        let (from, to) = (run[0].from, run[0].to);
        let sent = match run.len() {
            1 => socket.try_send(Some(from), to, &run[0].data, None),
            _ => {
                self.joined.clear();
                run.iter()
                    .for_each(|d| self.joined.extend_from_slice(&d.data));
                socket.try_send(Some(from), to, &self.joined, Some(size))
            }
        };
        match sent {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                run.into_iter().for_each(|d| self.queue_unsent(d));
            }
            // The kernel refused them together (no GSO on the way out after all: quinn-udp
            // then turns it off for the socket): one by one, so only a bad one is lost.
            Err(err) if run.len() > 1 => {
                debug!(%to, "webrtc.port: sending {} datagrams at once: {err}; one by one", run.len());
                run.into_iter().for_each(|d| self.send_run(vec![d], size));
            }
            // A viewer gone away (ICMP), a route missing: UDP loses it.
            Err(err) => debug!(%to, "webrtc.port: send: {err}"),
        }
    }

    fn queue_unsent(&mut self, datagram: Datagram) {
        if self.unsent.len() >= UNSENT {
            self.unsent.pop_front();
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                warn!(
                    dropped = self.dropped,
                    "webrtc.port: send buffer full; datagrams dropped"
                );
            }
        }
        self.unsent.push_back(datagram);
    }

    /// Waits until the socket of the oldest unsent datagram has room.
    async fn first_unsent_writable(&self) {
        let socket = self.unsent.front().and_then(|d| self.sockets.get(d.socket));
        match socket {
            Some(socket) => {
                if socket.writable().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            None => std::future::pending().await,
        }
    }

    /// Sends unsent datagrams until a socket buffer is full again.
    fn flush(&mut self) {
        while let Some(datagram) = self.unsent.pop_front() {
            let Some(s) = self.sockets.get(datagram.socket) else {
                continue;
            };
            match s.try_send(Some(datagram.from), datagram.to, &datagram.data, None) {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    self.unsent.push_front(datagram);
                    return;
                }
                Err(err) => debug!(to = %datagram.to, "webrtc.port: send: {err}"),
                Ok(()) => {}
            }
        }
    }
}

fn transport(local: SocketAddr, peer: SocketAddr, protocol: TransportProtocol) -> TransportContext {
    TransportContext {
        local_addr: local,
        peer_addr: peer,
        ecn: None,
        transport_protocol: protocol,
    }
}

fn config(network: &str, ip: IpAddr, port: u16) -> CandidateConfig {
    CandidateConfig {
        network: network.to_owned(),
        address: ip.to_string(),
        port,
        component: 1,
        ..Default::default()
    }
}

fn init(candidate: &rtc::ice::candidate::Candidate) -> Option<RTCIceCandidateInit> {
    RTCIceCandidate::from(candidate).to_json().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn receive(socket: &tokio::net::UdpSocket, count: usize) -> Vec<(u8, usize)> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 2000];
        for _ in 0..count {
            let read = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf));
            let len = read.await.expect("a datagram within 5 s").unwrap();
            got.push((buf[0], len));
        }
        got
    }

    #[tokio::test]
    async fn datagrams_sent_together_arrive_one_by_one_and_in_order() {
        let (to_engine, _arrivals) = mpsc::channel(16);
        let lifecycle = Lifecycle::default();
        let port = Port::bind(&[IpAddr::from([127, 0, 0, 1])], 0, &to_engine, &lifecycle).unwrap();
        let mut net = Net::new(port);
        let a = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (to_a, to_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        // The loop learns that a socket has room from the reactor; a new one has.
        net.sockets[0].writable().await.unwrap();
        // A picture's packets to one viewer (the last shorter), one to another viewer, then
        // the first one's again; more than one send takes, too.
        for n in 0..5 {
            net.send_from_socket(0, None, to_a, BytesMut::from(&[n; 1200][..]));
        }
        net.send_from_socket(0, None, to_a, BytesMut::from(&[5; 300][..]));
        net.send_from_socket(0, None, to_b, BytesMut::from(&[6; 1200][..]));
        net.send_from_socket(0, None, to_a, BytesMut::from(&[7; 1200][..]));
        for _ in 0..60 {
            net.send_from_socket(0, None, to_b, BytesMut::from(&[8; 1100][..]));
        }
        net.send_outbox();
        let mut expected: Vec<(u8, usize)> = (0..5).map(|n| (n, 1200)).collect();
        expected.extend([(5, 300), (7, 1200)]);
        assert_eq!(receive(&a, 7).await, expected);
        let mut expected = vec![(6, 1200)];
        expected.extend(std::iter::repeat_n((8, 1100), 60));
        assert_eq!(receive(&b, 61).await, expected);
        assert!(net.outbox.is_empty() && net.unsent.is_empty());
    }
}
