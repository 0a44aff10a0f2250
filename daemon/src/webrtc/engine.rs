//! The one loop: every viewer's peer connection, driven by one task over the one port.
//!
//! webrtc-rs's sans-IO core (`rtc::RTCPeerConnection`) does ICE, DTLS, SRTP, RTCP and the
//! interceptors (NACK, reports, TWCC, congestion control) with time as an input and no I/O.
//! This task owns every connection's core and the port's sockets, and is their only driver:
//!
//! - **In**: datagrams and ICE-TCP frames from the port ([`Arrival`]) go to the connection
//!   [`Routes`] names (a browser's first nomination is handed to it again once its pair
//!   works: [`Nominations`]); answers to our STUN requests, to [`Reflexive`].
//! - **Out**: whatever a core has to send leaves through the port's socket serving its
//!   local address (a full socket buffer queues up to [`UNSENT`] datagrams) or the
//!   connection's ICE-TCP stream.
//! - **Time**: each core's next timer; the loop wakes for the earliest.
//! - **From the sessions**: orders ([`Conn::with`] runs a closure on the core: negotiation,
//!   stats) and RTP packets ([`RtpOut`]), through bounded queues; a connection's state
//!   changes and its viewer's key frame requests go back through a one-slot watch and a
//!   small queue. The loop never waits on a session.
//!
//! A connection costs its core and a few table entries: no socket, no task (an ICE-TCP
//! viewer's stream has one task reading and writing it, see [`super::tcp`]).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::ice::candidate::CandidateConfig;
use rtc::ice::candidate::candidate_host::CandidateHostConfig;
use rtc::ice::candidate::candidate_server_reflexive::CandidateServerReflexiveConfig;
use rtc::ice::tcp_type::TcpType;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{RTCIceCandidate, RTCIceCandidateInit};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, warn};

use super::nomination::Nominations;
use super::port::{ARRIVALS, Arrival, ConnId, Port, Routes, Socket, stun};
use super::reflexive::Reflexive;
use super::session::Event;
use super::tcp::{StreamKey, TcpArrival};
use crate::media::KeyframeReason;

/// Orders waiting for the loop (negotiations, stats): a few per session at most.
const ORDERS: usize = 256;
/// RTP packets waiting for the loop, from every session. A full queue makes the sessions'
/// senders wait (they wait for their encoder anyway); the loop never does.
const RTP_QUEUE: usize = 4096;
/// Datagrams waiting for room in a socket's send buffer; more drop the oldest.
const UNSENT: usize = 4096;
/// Key frame requests waiting for a session (it takes them at once; a flood is dropped).
const FEEDBACK: usize = 16;
/// Arrivals and RTP packets handled per wake before the loop looks at its timers again.
const BURST: usize = 64;

/// The connection is gone (closed, or the loop stopped).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the peer connection is gone")]
pub struct Gone;

type Work = Box<dyn FnOnce(&mut RTCPeerConnection, Instant) + Send>;

enum Order {
    Add {
        pc: Box<RTCPeerConnection>,
        events: watch::Sender<Option<Event>>,
        feedback: mpsc::Sender<KeyframeReason>,
        reply: oneshot::Sender<ConnId>,
    },
    With(ConnId, Work),
    AnswerAs(ConnId, String),
    Candidates(ConnId, oneshot::Sender<()>),
    StunServers(Vec<SocketAddr>),
}

struct Rtp {
    conn: ConnId,
    sender: RTCRtpSenderId,
    packet: rtp::Packet,
}

/// The way to the loop. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    orders: mpsc::Sender<Order>,
    rtp: mpsc::Sender<Rtp>,
    /// Unbounded, but each connection sends one or two (its close, then its drop): at most
    /// twice `MAX_SESSIONS` wait. With whom to tell once it is closed.
    closes: mpsc::UnboundedSender<(ConnId, Option<oneshot::Sender<()>>)>,
    number: u16,
}

/// What comes with a new connection.
pub struct Added {
    /// The connection.
    pub conn: Conn,
    /// Its newest state change (`None` before the first).
    pub events: watch::Receiver<Option<Event>>,
    /// Its viewer's key frame requests (PLI, FIR).
    pub feedback: mpsc::Receiver<KeyframeReason>,
}

impl Engine {
    /// Binds `port` on `ips` and starts the loop. Our host candidates are the bound
    /// addresses (a wildcard's: its family's on the machine's interfaces).
    pub fn start(ips: &[IpAddr], port: u16) -> std::io::Result<Engine> {
        let (arrivals_tx, arrivals) = mpsc::channel(ARRIVALS);
        let port = Port::bind(ips, port, &arrivals_tx)?;
        let (orders_tx, orders) = mpsc::channel(ORDERS);
        let (rtp_tx, rtp) = mpsc::channel(RTP_QUEUE);
        let (closes_tx, closes) = mpsc::unbounded_channel();
        let number = port.number();
        let core = Core {
            net: Net {
                hosts: host_addresses(&port.sockets),
                sockets: port.sockets,
                routes: Routes::default(),
                streams: HashMap::new(),
                unsent: VecDeque::new(),
                dropped: 0,
            },
            conns: HashMap::new(),
            reflexive: Reflexive::default(),
            waiting: Vec::new(),
            next_id: 1,
        };
        tokio::spawn(run(
            core,
            Inputs {
                orders,
                rtp,
                closes,
                arrivals,
            },
        ));
        Ok(Engine {
            orders: orders_tx,
            rtp: rtp_tx,
            closes: closes_tx,
            number,
        })
    }

    /// The port's number.
    pub fn number(&self) -> u16 {
        self.number
    }

    /// Ask these STUN servers for the port's public address from now on.
    pub async fn set_stun_servers(&self, servers: Vec<SocketAddr>) {
        let _ = self.orders.send(Order::StunServers(servers)).await;
    }

    /// Hands a new connection to the loop.
    pub async fn add(&self, pc: RTCPeerConnection) -> Result<Added, Gone> {
        let (events_tx, events) = watch::channel(None);
        let (feedback_tx, feedback) = mpsc::channel(FEEDBACK);
        let (reply, id) = oneshot::channel();
        let order = Order::Add {
            pc: Box::new(pc),
            events: events_tx,
            feedback: feedback_tx,
            reply,
        };
        self.orders.send(order).await.map_err(|_| Gone)?;
        let id = id.await.map_err(|_| Gone)?;
        Ok(Added {
            conn: Conn {
                id,
                engine: self.clone(),
            },
            events,
            feedback,
        })
    }
}

/// One connection in the loop. Dropping it closes the connection.
pub struct Conn {
    id: ConnId,
    engine: Engine,
}

impl Conn {
    /// Runs `work` on the connection's core, in the loop, and returns what it returned.
    pub async fn with<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut RTCPeerConnection, Instant) -> R + Send + 'static,
    ) -> Result<R, Gone> {
        let (reply, result) = oneshot::channel();
        let work: Work = Box::new(move |pc, now| {
            let _ = reply.send(work(pc, now));
        });
        self.engine
            .orders
            .send(Order::With(self.id, work))
            .await
            .map_err(|_| Gone)?;
        result.await.map_err(|_| Gone)
    }

    /// Checks addressed to `ufrag` reach this connection from now on (its local
    /// description has it), and no longer those to the one before.
    pub async fn answer_as(&self, ufrag: String) -> Result<(), Gone> {
        self.engine
            .orders
            .send(Order::AnswerAs(self.id, ufrag))
            .await
            .map_err(|_| Gone)
    }

    /// Gives the connection our candidates: host (UDP and passive TCP) on the port, and the
    /// port's public address once STUN has told it (waiting for that at most
    /// [`super::reflexive::FIRST_ANSWER_WITHIN`] after the first request).
    pub async fn add_our_candidates(&self) -> Result<(), Gone> {
        let (reply, done) = oneshot::channel();
        self.engine
            .orders
            .send(Order::Candidates(self.id, reply))
            .await
            .map_err(|_| Gone)?;
        done.await.map_err(|_| Gone)
    }

    /// Closes the connection (its DTLS close alert goes out, telling the viewer at once)
    /// and returns once that is done. Dropping it does the same without waiting.
    pub async fn close(&self) -> Result<(), Gone> {
        let (closed, done) = oneshot::channel();
        self.engine
            .closes
            .send((self.id, Some(closed)))
            .map_err(|_| Gone)?;
        done.await.map_err(|_| Gone)
    }

    /// Where to write the RTP of the connection's sender `sender`.
    pub fn rtp_out(&self, sender: RTCRtpSenderId) -> RtpOut {
        RtpOut {
            conn: self.id,
            sender,
            rtp: self.engine.rtp.clone(),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.engine.closes.send((self.id, None));
    }
}

/// One sender of one connection, for RTP.
#[derive(Clone)]
pub struct RtpOut {
    conn: ConnId,
    sender: RTCRtpSenderId,
    rtp: mpsc::Sender<Rtp>,
}

impl RtpOut {
    /// Queues `packet` for sending (waiting for room in the loop's queue).
    pub async fn write_rtp(&self, packet: rtp::Packet) -> Result<(), Gone> {
        let rtp = Rtp {
            conn: self.conn,
            sender: self.sender,
            packet,
        };
        self.rtp.send(rtp).await.map_err(|_| Gone)
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
    orders: mpsc::Receiver<Order>,
    rtp: mpsc::Receiver<Rtp>,
    closes: mpsc::UnboundedReceiver<(ConnId, Option<oneshot::Sender<()>>)>,
    arrivals: mpsc::Receiver<Arrival>,
}

/// The loop. Ends when every [`Engine`] is dropped.
async fn run(mut core: Core, mut inputs: Inputs) {
    loop {
        let deadline = core.deadline();
        let flushing = !core.net.unsent.is_empty();
        tokio::select! {
            biased;
            Some((id, closed)) = inputs.closes.recv() => {
                core.remove(id);
                if let Some(closed) = closed {
                    let _ = closed.send(());
                }
            }
            order = inputs.orders.recv() => match order {
                Some(order) => core.order(order),
                None => break,
            },
            Some(arrival) = inputs.arrivals.recv() => {
                core.arrive(arrival);
                for _ in 0..BURST {
                    match inputs.arrivals.try_recv() {
                        Ok(arrival) => core.arrive(arrival),
                        Err(_) => break,
                    }
                }
            }
            Some(rtp) = inputs.rtp.recv() => {
                let now = Instant::now();
                let mut touched = vec![core.write_rtp(rtp, now)];
                for _ in 0..BURST {
                    let Ok(rtp) = inputs.rtp.try_recv() else {
                        break;
                    };
                    let conn = core.write_rtp(rtp, now);
                    if !touched.contains(&conn) {
                        touched.push(conn);
                    }
                }
                // Each connection's packets leave together.
                for conn in touched {
                    core.drain(conn);
                }
            }
            _ = core.net.first_unsent_writable(), if flushing => core.net.flush(),
            () = sleep_until(deadline) => {}
        }
        core.on_time(Instant::now());
    }
    for id in core.conns.keys().copied().collect::<Vec<_>>() {
        core.remove(id);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// One connection's core and where its news go.
struct Slot {
    pc: Box<RTCPeerConnection>,
    events: watch::Sender<Option<Event>>,
    feedback: mpsc::Sender<KeyframeReason>,
    nominations: Nominations,
    /// The core's next timer.
    due: Option<Instant>,
    /// Something from the viewer has reached the core (its first ICE check): told once.
    heard: bool,
}

/// The port's side of the loop: sockets, routes, streams.
struct Net {
    sockets: Vec<Arc<Socket>>,
    /// (socket, address) of our host candidates.
    hosts: Vec<(usize, IpAddr)>,
    routes: Routes,
    streams: HashMap<StreamKey, (ConnId, mpsc::Sender<Bytes>)>,
    /// Datagrams that found their socket's buffer full: (socket, from, to, datagram).
    unsent: VecDeque<(usize, IpAddr, SocketAddr, BytesMut)>,
    dropped: u64,
}

struct Core {
    net: Net,
    conns: HashMap<ConnId, Slot>,
    reflexive: Reflexive,
    /// Connections waiting for the port's public address before their candidates are added.
    waiting: Vec<(ConnId, oneshot::Sender<()>)>,
    next_id: ConnId,
}

impl Core {
    fn deadline(&self) -> Option<Instant> {
        let timers = self.conns.values().filter_map(|s| s.due);
        let stun = self.reflexive.deadline();
        let settle = (!self.waiting.is_empty())
            .then(|| self.reflexive.settles_by())
            .flatten();
        timers.chain(stun).chain(settle).min()
    }

    fn order(&mut self, order: Order) {
        let now = Instant::now();
        match order {
            Order::Add {
                pc,
                events,
                feedback,
                reply,
            } => {
                let id = self.next_id;
                self.next_id += 1;
                let slot = Slot {
                    pc,
                    events,
                    feedback,
                    nominations: Nominations::default(),
                    due: None,
                    heard: false,
                };
                self.conns.insert(id, slot);
                if reply.send(id).is_err() {
                    self.remove(id);
                }
            }
            Order::With(id, work) => {
                self.on_slot(id, |net, slot| {
                    work(&mut slot.pc, now);
                    net.drain(id, slot);
                });
            }
            Order::AnswerAs(id, ufrag) => self.net.routes.answer_as(id, &ufrag),
            Order::Candidates(id, reply) => {
                self.waiting.push((id, reply));
                self.release_waiting(now);
            }
            Order::StunServers(servers) => self.reflexive.set_servers(now, servers),
        }
    }

    /// Adds our candidates to the connections that wait for them, once STUN has answered
    /// or been waited for long enough.
    fn release_waiting(&mut self, now: Instant) {
        if !self.reflexive.settled(now) {
            return;
        }
        let candidates = self.candidates();
        for (id, reply) in std::mem::take(&mut self.waiting) {
            self.on_slot(id, |net, slot| {
                for candidate in &candidates {
                    if let Err(err) = slot.pc.add_local_candidate(candidate.clone()) {
                        warn!(
                            "webrtc: our candidate {} refused: {err}",
                            candidate.candidate
                        );
                    }
                }
                // Gathering is complete: the answer says so.
                let _ = slot.pc.add_local_candidate(RTCIceCandidateInit::default());
                net.drain(id, slot);
                let _ = reply.send(());
            });
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

    fn arrive(&mut self, arrival: Arrival) {
        let now = Instant::now();
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
                self.feed(id, now, transport, data);
            }
            Arrival::Tcp(TcpArrival::Opened { key, first, out }) => {
                let ufrag = stun(&first).filter(|s| s.request).and_then(|s| s.ufrag);
                let Some(id) = ufrag.and_then(|u| self.net.routes.conn_of(&u)) else {
                    debug!(peer = %key.1, "ICE-TCP: no connection has the check's ufrag; closed");
                    return;
                };
                self.net.streams.insert(key, (id, out));
                self.feed(
                    id,
                    now,
                    transport(key.0, key.1, TransportProtocol::TCP),
                    first,
                );
            }
            Arrival::Tcp(TcpArrival::Frame { key, data }) => {
                if let Some((id, _)) = self.net.streams.get(&key) {
                    let id = *id;
                    self.feed(
                        id,
                        now,
                        transport(key.0, key.1, TransportProtocol::TCP),
                        data,
                    );
                }
            }
            Arrival::Tcp(TcpArrival::Closed(key)) => {
                self.net.streams.remove(&key);
            }
        }
    }

    /// [`feed`]s connection `id`.
    fn feed(&mut self, id: ConnId, now: Instant, transport: TransportContext, data: BytesMut) {
        self.on_slot(id, |net, slot| feed(net, id, slot, now, transport, data));
    }

    /// Hands an RTP packet to its connection's core (sent by [`Self::drain`]); returns the
    /// connection.
    fn write_rtp(&mut self, rtp: Rtp, now: Instant) -> ConnId {
        let Rtp {
            conn,
            sender,
            packet,
        } = rtp;
        self.on_slot(conn, |_, slot| {
            if let Some(mut sender) = slot.pc.rtp_sender(sender)
                && let Err(err) = sender.write_rtp(now, packet)
            {
                debug!(conn, "webrtc: RTP not sent: {err}");
            }
        });
        conn
    }

    fn drain(&mut self, id: ConnId) {
        self.on_slot(id, |net, slot| net.drain(id, slot));
    }

    /// Runs `f` on connection `id`. A panic in it (a bug in the core, set off by what a
    /// peer sent) ends that connection alone, never the loop and everyone else's.
    fn on_slot<R>(&mut self, id: ConnId, f: impl FnOnce(&mut Net, &mut Slot) -> R) -> Option<R> {
        let slot = self.conns.get_mut(&id)?;
        let net = &mut self.net;
        match std::panic::catch_unwind(AssertUnwindSafe(|| f(net, slot))) {
            Ok(done) => Some(done),
            Err(_) => {
                error!(
                    conn = id,
                    "webrtc: the connection's core panicked; it is ended"
                );
                if let Some(slot) = self.conns.remove(&id) {
                    slot.events.send_replace(Some(Event::Failed));
                }
                self.forget(id);
                None
            }
        }
    }

    fn on_time(&mut self, now: Instant) {
        let sockets: Vec<SocketAddr> = self.net.sockets.iter().map(|s| s.bound()).collect();
        for request in self.reflexive.poll(now, &sockets) {
            self.net
                .send_from_socket(request.socket, None, request.server, &request.datagram);
        }
        if !self.waiting.is_empty() {
            self.release_waiting(now);
        }
        let due: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, slot)| slot.due.is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.on_slot(id, |net, slot| {
                if let Err(err) = slot.pc.handle_timeout(now) {
                    debug!(conn = id, "webrtc: timer: {err}");
                }
                net.drain(id, slot);
            });
        }
    }

    /// Closes connection `id` (its DTLS close alert goes out) and forgets it.
    fn remove(&mut self, id: ConnId) {
        self.on_slot(id, |net, slot| {
            let _ = slot.pc.close();
            net.drain(id, slot);
        });
        self.conns.remove(&id);
        self.forget(id);
    }

    fn forget(&mut self, id: ConnId) {
        self.net.routes.forget(id);
        self.net.streams.retain(|_, (conn, _)| *conn != id);
        self.waiting.retain(|(conn, _)| *conn != id);
    }
}

impl Net {
    /// Sends what the core has to send, passes on its events and key frame requests, and
    /// notes its next timer.
    fn drain(&mut self, id: ConnId, slot: &mut Slot) {
        while let Some(out) = slot.pc.poll_write() {
            self.transmit(id, out);
        }
        while let Some(event) = slot.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                let event = match state {
                    RTCPeerConnectionState::Connected => Event::Connected,
                    RTCPeerConnectionState::Disconnected => Event::Disconnected,
                    RTCPeerConnectionState::Failed => Event::Failed,
                    RTCPeerConnectionState::Closed => Event::Closed,
                    _ => continue,
                };
                slot.events.send_replace(Some(event));
            }
        }
        while let Some(message) = slot.pc.poll_read() {
            // Only PLI and FIR come this far (see `keyframe_requests`); what the viewer
            // sends us (it sends no media) is dropped.
            if let RTCMessage::RtcpPacket(_, packets) = message.message {
                let fir = packets.iter().any(|p| p.as_any().is::<FullIntraRequest>());
                let reason = if fir {
                    KeyframeReason::Fir
                } else {
                    KeyframeReason::Pli
                };
                let _ = slot.feedback.try_send(reason);
            }
        }
        slot.due = slot.pc.poll_timeout();
    }

    fn transmit(&mut self, id: ConnId, out: TaggedBytesMut) {
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
                    Some(socket) => self.send_from_socket(
                        socket,
                        Some(local_addr.ip()),
                        peer_addr,
                        &out.message,
                    ),
                    None => debug!(conn = id, %local_addr, "webrtc: no socket sends from here"),
                }
            }
            TransportProtocol::TCP => {
                if let Some((_, stream)) = self.streams.get(&(local_addr, peer_addr)) {
                    // A stalled viewer loses frames, as over UDP.
                    let _ = stream.try_send(out.message.freeze());
                }
            }
            _ => debug!(
                conn = id,
                "webrtc: no way to send over {transport_protocol:?}"
            ),
        }
    }

    fn send_from_socket(
        &mut self,
        socket: usize,
        from: Option<IpAddr>,
        to: SocketAddr,
        data: &[u8],
    ) {
        let Some(s) = self.sockets.get(socket) else {
            return;
        };
        if self.unsent.is_empty() {
            match s.try_send(from, to, data) {
                Ok(()) => return,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                // A viewer gone away (ICMP), a route missing: UDP loses it.
                Err(err) => {
                    debug!(%to, "webrtc.port: send: {err}");
                    return;
                }
            }
        }
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
        let from = from.unwrap_or(s.bound().ip());
        self.unsent
            .push_back((socket, from, to, BytesMut::from(data)));
    }

    /// Waits until the socket of the oldest unsent datagram has room.
    async fn first_unsent_writable(&self) {
        let socket = self.unsent.front().and_then(|(s, ..)| self.sockets.get(*s));
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
        while let Some((socket, from, to, data)) = self.unsent.pop_front() {
            let Some(s) = self.sockets.get(socket) else {
                continue;
            };
            match s.try_send(Some(from), to, &data) {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    self.unsent.push_front((socket, from, to, data));
                    return;
                }
                Err(err) => debug!(%to, "webrtc.port: send: {err}"),
                Ok(()) => {}
            }
        }
    }
}

/// Hands `data` to the connection's core (and a kept nomination after it, see
/// [`Nominations`]).
fn feed(
    net: &mut Net,
    id: ConnId,
    slot: &mut Slot,
    now: Instant,
    transport: TransportContext,
    data: BytesMut,
) {
    if !slot.heard {
        // Before anything the core may say: a later state (connected) overrides this one.
        slot.heard = true;
        slot.events.send_replace(Some(Event::Heard));
    }
    let again = slot.nominations.inspect(now, transport.peer_addr, &data);
    let mut read = |message: BytesMut| {
        let tagged = TaggedBytesMut {
            now,
            transport,
            message,
        };
        if let Err(err) = slot.pc.handle_read(tagged) {
            debug!(conn = id, "webrtc: {err}");
        }
    };
    read(data);
    if let Some(again) = again {
        debug!(peer = %transport.peer_addr, "ICE: the peer's nomination given again once our check to it succeeded");
        read(BytesMut::from(&again[..]));
    }
    net.drain(id, slot);
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
    use rtc::peer_connection::RTCPeerConnectionBuilder;

    fn core() -> RTCPeerConnection {
        RTCPeerConnectionBuilder::new()
            .build(Instant::now())
            .unwrap()
    }

    #[tokio::test]
    async fn a_panic_in_one_connection_ends_it_alone() {
        let engine = Engine::start(&[IpAddr::from([127, 0, 0, 1])], 0).unwrap();
        let first = engine.add(core()).await.unwrap();
        let mut events = first.events;
        let second = engine.add(core()).await.unwrap();
        let panicked = first
            .conn
            .with(|_, _| panic!("a bug set off by a peer"))
            .await;
        assert!(panicked.is_err());
        events.changed().await.unwrap();
        assert_eq!(*events.borrow(), Some(Event::Failed));
        // The loop goes on: the other connection, and new ones, still work.
        let ok = second
            .conn
            .with(|pc, _| pc.local_description().is_none())
            .await;
        assert_eq!(ok.ok(), Some(true));
        let third = engine.add(core()).await.unwrap();
        assert!(third.conn.with(|_, _| ()).await.is_ok());
        assert!(first.conn.with(|_, _| ()).await.is_err());
    }
}
