//! One UDP port for every viewer: `[webrtc] port`.
//!
//! webrtc-rs 0.21 binds a UDP socket for each peer connection (`with_udp_addrs`) and leaves
//! "ICE single port" to the application. It does let the application wrap every socket it
//! binds (`Runtime::wrap_udp_socket`), and that is the seam used here: a peer connection's
//! freshly bound socket is closed at once and replaced by a [`VirtualSocket`], a view onto
//! the one real socket of the port ([`Shared`]), which serves everyone.
//!
//! - **Out**: a virtual socket sends through the real one, from the address its connection
//!   announces.
//! - **In**: one task per real socket reads every datagram and hands it to one connection's
//!   bounded [`Inbox`], as [`Routes`] says: a STUN request by the ICE username fragment it is
//!   addressed to (ours, as the connection's local description has it: [`Routes::answer_as`]); a STUN response by
//!   the transaction of the request it answers; anything else (DTLS, SRTP, RTCP) by the
//!   address it came from, learnt from the STUN before it. Datagrams for nobody are dropped.
//! - **Candidates**: webrtc-rs announces the address it bound, so the answer's host
//!   candidates are rewritten to the port's number ([`super::nat::announce`]).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::tcp::{TcpPort, VirtualListener};
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::{CLASS_REQUEST, Message};
use rtc::stun::textattrs::TextAttribute;
use tracing::{debug, warn};
use webrtc::runtime::{AsyncUdpSocket, RecvMeta, Transmit, UdpSockRef, UdpSocketState};

/// Datagrams waiting for one connection's driver. A viewer sends little (STUN, RTCP, DTLS
/// flights); a full inbox drops the newest, as a full socket buffer would.
const INBOX: usize = 256;
/// Remote addresses routed to one connection at most (a viewer uses one or two; more are
/// forgotten oldest first, so nobody can fill the table by spraying checks).
const REMOTES_PER_INBOX: usize = 8;
/// How long a STUN request of ours waits for its response to be routed back.
const TRANSACTION_TTL: Duration = Duration::from_secs(10);
/// STUN transactions remembered at most (ours: connectivity checks and STUN-server requests).
const MAX_TRANSACTIONS: usize = 4096;
/// Datagrams read per system call.
const BATCH: usize = 16;

/// One connection's datagrams, between the demux task and the connection's driver.
pub struct Inbox {
    /// The address webrtc-rs bound for this socket (and tags what it reads with).
    key: SocketAddr,
    /// The connection's name (fixed; its ICE username fragment changes with ICE restarts).
    conn: String,
    state: Mutex<InboxState>,
}

#[derive(Default)]
struct InboxState {
    datagrams: VecDeque<(SocketAddr, Vec<u8>)>,
    waker: Option<Waker>,
    dropped: u64,
}

impl Inbox {
    fn push(&self, from: SocketAddr, datagram: &[u8]) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.datagrams.len() >= INBOX {
            state.dropped += 1;
            if state.dropped.is_power_of_two() {
                debug!(conn = %self.conn, dropped = state.dropped, "UDP inbox full: datagram dropped");
            }
            return;
        }
        state.datagrams.push_back((from, datagram.to_vec()));
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }
}

/// A datagram's STUN facts, as far as routing needs them.
pub(super) struct Stun {
    pub(super) request: bool,
    /// A request's USERNAME's first part: the ufrag of the connection it is addressed to
    /// (USERNAME is "receiver's ufrag:sender's ufrag").
    pub(super) ufrag: Option<String>,
    transaction: [u8; 12],
}

/// `None` when the datagram is not STUN (DTLS, SRTP, RTCP).
pub(super) fn stun(datagram: &[u8]) -> Option<Stun> {
    // RFC 7983: STUN starts with 0..=3; the header is 20 bytes.
    if datagram.len() < 20 || datagram[0] > 3 {
        return None;
    }
    let mut m = Message::new();
    m.unmarshal_binary(datagram).ok()?;
    let request = m.typ.class == CLASS_REQUEST;
    let ufrag = request
        .then(|| TextAttribute::get_from_as(&m, ATTR_USERNAME).ok())
        .flatten()
        .and_then(|u| u.text.split_once(':').map(|(ours, _)| ours.to_owned()));
    Some(Stun {
        request,
        ufrag,
        transaction: m.transaction_id.0,
    })
}

/// Who gets which datagram. Pure apart from the weak references; time is an input.
#[derive(Default)]
pub struct Routes {
    /// Our current ICE username fragment of each connection → its name.
    conn_of_ufrag: HashMap<String, String>,
    by_conn: HashMap<String, Vec<Weak<Inbox>>>,
    /// (the local address it arrived at, the remote address) → connection.
    by_remote: HashMap<(IpAddr, SocketAddr), Weak<Inbox>>,
    /// Each connection's remotes, oldest first (to cap them).
    remotes_of: HashMap<String, VecDeque<(IpAddr, SocketAddr)>>,
    by_transaction: HashMap<[u8; 12], (Weak<Inbox>, Instant)>,
}

impl Routes {
    fn register(&mut self, inbox: &Arc<Inbox>) {
        self.by_conn
            .entry(inbox.conn.clone())
            .or_default()
            .push(Arc::downgrade(inbox));
    }

    /// Connection `conn` answers to `ufrag` from now on (its local description has it), and
    /// no longer to the one before (an ICE restart changes it).
    pub fn answer_as(&mut self, conn: &str, ufrag: &str) {
        self.conn_of_ufrag.retain(|_, c| c != conn);
        self.conn_of_ufrag.insert(ufrag.to_owned(), conn.to_owned());
    }

    /// Forgets everything that leads to the connection `conn`.
    fn forget(&mut self, conn: &str) {
        self.conn_of_ufrag.retain(|_, c| c != conn);
        self.by_conn.remove(conn);
        for key in self.remotes_of.remove(conn).unwrap_or_default() {
            self.by_remote.remove(&key);
        }
        self.by_transaction
            .retain(|_, (inbox, _)| inbox.strong_count() > 0);
    }

    /// The inbox of the connection answering to `ufrag`, for datagrams arriving at `local`
    /// (same address, or the same family when the address is not known).
    fn inbox_of(&self, ufrag: &str, local: Option<IpAddr>) -> Option<Arc<Inbox>> {
        let inboxes = self.by_conn.get(self.conn_of_ufrag.get(ufrag)?)?;
        let alive = || inboxes.iter().filter_map(Weak::upgrade);
        alive().find(|i| Some(i.key.ip()) == local).or_else(|| {
            alive().find(|i| local.is_none_or(|ip| ip.is_ipv4() == i.key.ip().is_ipv4()))
        })
    }

    fn learn_remote(&mut self, inbox: &Arc<Inbox>, local: IpAddr, remote: SocketAddr) {
        let key = (local, remote);
        if let Some(old) = self.by_remote.get(&key).and_then(Weak::upgrade) {
            if Arc::ptr_eq(&old, inbox) {
                return;
            }
            if let Some(list) = self.remotes_of.get_mut(&old.conn) {
                list.retain(|k| *k != key);
            }
        }
        self.by_remote.insert(key, Arc::downgrade(inbox));
        let list = self.remotes_of.entry(inbox.conn.clone()).or_default();
        list.push_back(key);
        if list.len() > REMOTES_PER_INBOX
            && let Some(oldest) = list.pop_front()
        {
            self.by_remote.remove(&oldest);
        }
    }

    /// The inbox for a datagram from `from` that arrived at `local`.
    pub fn route(
        &mut self,
        now: Instant,
        local: Option<IpAddr>,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Option<Arc<Inbox>> {
        let Some(stun) = stun(datagram) else {
            return self.by_address(local, from);
        };
        if let Some(ufrag) = stun.ufrag {
            let inbox = self.inbox_of(&ufrag, local)?;
            self.learn_remote(&inbox, local.unwrap_or(inbox.key.ip()), from);
            return Some(inbox);
        }
        let ours = (!stun.request)
            .then(|| self.by_transaction.get(&stun.transaction))
            .flatten()
            .filter(|(_, at)| now.saturating_duration_since(*at) < TRANSACTION_TTL)
            .and_then(|(inbox, _)| inbox.upgrade());
        ours.or_else(|| self.by_address(local, from))
    }

    fn by_address(&self, local: Option<IpAddr>, from: SocketAddr) -> Option<Arc<Inbox>> {
        match local {
            Some(ip) => self.by_remote.get(&(ip, from)).and_then(Weak::upgrade),
            None => self
                .by_remote
                .iter()
                .find(|((_, remote), _)| *remote == from)
                .and_then(|(_, inbox)| inbox.upgrade()),
        }
    }

    /// A connection sends `datagram` to `to` from `local`: replies come back to it.
    pub fn sent(
        &mut self,
        now: Instant,
        inbox: &Arc<Inbox>,
        local: IpAddr,
        to: SocketAddr,
        datagram: &[u8],
    ) {
        if let Some(Stun {
            request: true,
            transaction,
            ..
        }) = stun(datagram)
        {
            if self.by_transaction.len() >= MAX_TRANSACTIONS {
                self.by_transaction.retain(|_, (i, at)| {
                    i.strong_count() > 0 && now.saturating_duration_since(*at) < TRANSACTION_TTL
                });
            }
            if self.by_transaction.len() < MAX_TRANSACTIONS {
                self.by_transaction
                    .insert(transaction, (Arc::downgrade(inbox), now));
            }
        }
        if !self.by_remote.contains_key(&(local, to)) {
            self.learn_remote(inbox, local, to);
        }
    }
}

/// One real socket of the port: bound to a configured address, or to the wildcard of its
/// family (then the address a datagram arrived at comes with it, and replies leave from the
/// address the connection announced).
struct Shared {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
    wildcard: bool,
    routes: Arc<Mutex<Routes>>,
    /// Drivers waiting for room in the send buffer, and a nudge for the task that waits for
    /// it on their behalf (tokio keeps one send waker per socket; here there are many).
    blocked: Mutex<Vec<Waker>>,
    room: tokio::sync::Notify,
}

impl Shared {
    fn bind(addr: SocketAddr, routes: Arc<Mutex<Routes>>) -> io::Result<Arc<Shared>> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let io = tokio::net::UdpSocket::from_std(socket.into())?;
        let state = UdpSocketState::new(UdpSockRef::from(&io))?;
        Ok(Arc::new(Shared {
            io,
            state,
            wildcard: addr.ip().is_unspecified(),
            routes,
            blocked: Mutex::new(Vec::new()),
            room: tokio::sync::Notify::new(),
        }))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// Reads every datagram and hands it to its connection. Ends when the socket fails.
    async fn demux(self: Arc<Self>) {
        let mut bufs = vec![vec![0u8; 1500 * self.state.gro_segments().max(1)]; BATCH];
        let mut meta = vec![RecvMeta::default(); BATCH];
        let bound = self.local_addr().ok();
        loop {
            if let Err(err) = self.io.readable().await {
                warn!("webrtc.port {bound:?}: {err}; viewers can no longer be reached");
                return;
            }
            let mut slices: Vec<IoSliceMut<'_>> =
                bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let read = self.io.try_io(tokio::io::Interest::READABLE, || {
                self.state
                    .recv(UdpSockRef::from(&self.io), &mut slices, &mut meta)
            });
            let n = match read {
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                // ICMP errors from a viewer gone away, and the like: not the socket's end.
                Err(err) => {
                    debug!("webrtc.port {bound:?}: receive: {err}");
                    continue;
                }
            };
            let now = Instant::now();
            let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            for (buf, m) in bufs.iter().zip(&meta).take(n) {
                let local = if self.wildcard {
                    m.dst_ip
                } else {
                    bound.map(|b| b.ip())
                };
                for datagram in buf[..m.len].chunks(m.stride.max(1)) {
                    if let Some(inbox) = routes.route(now, local, m.addr, datagram) {
                        inbox.push(m.addr, datagram);
                    }
                }
            }
        }
    }

    /// Wakes the drivers that found the send buffer full, once it has room again.
    async fn wake_senders(self: Arc<Self>) {
        loop {
            self.room.notified().await;
            if self.io.writable().await.is_err() {
                return;
            }
            let blocked =
                std::mem::take(&mut *self.blocked.lock().unwrap_or_else(|e| e.into_inner()));
            blocked.into_iter().for_each(Waker::wake);
        }
    }
}

/// What a peer connection reads from and writes to instead of a socket of its own.
pub struct VirtualSocket {
    shared: Arc<Shared>,
    inbox: Arc<Inbox>,
}

impl fmt::Debug for VirtualSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtualSocket")
            .field("key", &self.inbox.key)
            .field("conn", &self.inbox.conn)
            .finish()
    }
}

impl Drop for VirtualSocket {
    fn drop(&mut self) {
        self.shared
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget(&self.inbox.conn);
    }
}

impl AsyncUdpSocket for VirtualSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.inbox.key)
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        let local = self.inbox.key.ip();
        self.shared
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sent(
                Instant::now(),
                &self.inbox,
                local,
                transmit.destination,
                transmit.contents,
            );
        let out = Transmit {
            destination: transmit.destination,
            ecn: transmit.ecn,
            contents: transmit.contents,
            segment_size: None,
            src_ip: self.shared.wildcard.then_some(local),
        };
        let sent = self.shared.io.try_io(tokio::io::Interest::WRITABLE, || {
            self.shared
                .state
                .try_send(UdpSockRef::from(&self.shared.io), &out)
        });
        match sent {
            Ok(()) => Poll::Ready(Ok(transmit.contents.len())),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                self.shared
                    .blocked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(cx.waker().clone());
                self.shared.room.notify_one();
                Poll::Pending
            }
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut state = self.inbox.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some((from, datagram)) = state.datagrams.pop_front() else {
            state.waker = Some(cx.waker().clone());
            return Poll::Pending;
        };
        let mut m = RecvMeta::default();
        m.addr = from;
        m.dst_ip = Some(self.inbox.key.ip());
        deliver(&datagram, m, bufs, meta)
    }
}

/// Hands one datagram (from `meta.addr`) to a reader: copied into its first buffer, its
/// length into `meta`.
pub(super) fn deliver(
    datagram: &[u8],
    mut meta: RecvMeta,
    bufs: &mut [IoSliceMut<'_>],
    metas: &mut [RecvMeta],
) -> Poll<io::Result<usize>> {
    let (Some(buf), Some(slot)) = (bufs.first_mut(), metas.first_mut()) else {
        return Poll::Ready(Ok(0));
    };
    let len = datagram.len().min(buf.len());
    buf[..len].copy_from_slice(&datagram[..len]);
    meta.len = len;
    meta.stride = len.max(1);
    *slot = meta;
    Poll::Ready(Ok(1))
}

/// The port: its real sockets (one per configured address), the routes between them and
/// the connections, and the TCP listeners on the same number ([`super::tcp`]).
pub struct Port {
    sockets: Vec<Arc<Shared>>,
    routes: Arc<Mutex<Routes>>,
    tcp: TcpPort,
    number: u16,
}

impl fmt::Debug for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Port")
            .field("number", &self.number)
            .finish()
    }
}

/// Tries at picking a free port number (`port = 0`) free for both UDP and TCP.
const PICKS: usize = 8;

impl Port {
    /// Binds `port` on every address of `ips` (the wildcard of a family serves all its
    /// addresses), for UDP and TCP, and starts reading. Port 0: any free port, the same
    /// number on every address and for both.
    pub fn bind(ips: &[IpAddr], port: u16) -> io::Result<Port> {
        let mut tries = if port == 0 { PICKS } else { 1 };
        loop {
            tries -= 1;
            match Self::try_bind(ips, port) {
                Err(err) if tries > 0 && err.kind() == io::ErrorKind::AddrInUse => continue,
                bound => return bound,
            }
        }
    }

    fn try_bind(ips: &[IpAddr], port: u16) -> io::Result<Port> {
        let routes = Arc::new(Mutex::new(Routes::default()));
        let mut sockets = Vec::new();
        let mut number = port;
        for ip in ips {
            let shared =
                Shared::bind(SocketAddr::new(*ip, number), routes.clone()).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("webrtc.port: binding {ip} port {number}: {e}"),
                    )
                })?;
            number = shared.local_addr()?.port();
            sockets.push(shared);
        }
        let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(*ip, number)).collect();
        let tcp = TcpPort::listen(&addrs)?;
        for shared in &sockets {
            tokio::spawn(shared.clone().demux());
            tokio::spawn(shared.clone().wake_senders());
        }
        Ok(Port {
            sockets,
            routes,
            tcp,
            number,
        })
    }

    /// The port's number (the one chosen when 0 was asked for).
    pub fn number(&self) -> u16 {
        self.number
    }

    /// A virtual socket in place of `bound` (a socket webrtc-rs bound for the connection
    /// `conn`), or `None` when no real socket of the port serves its address.
    pub(super) fn socket_for(&self, bound: SocketAddr, conn: &str) -> Option<VirtualSocket> {
        let shared = self.sockets.iter().find(|s| {
            s.local_addr().is_ok_and(|a| {
                a.ip() == bound.ip() || (s.wildcard && a.is_ipv4() == bound.is_ipv4())
            })
        })?;
        let inbox = Arc::new(Inbox {
            key: bound,
            conn: conn.to_owned(),
            state: Mutex::default(),
        });
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register(&inbox);
        Some(VirtualSocket {
            shared: shared.clone(),
            inbox,
        })
    }

    /// A listener in place of `bound` (a TCP listener webrtc-rs bound for the connection
    /// `conn`), or `None` when the port does not listen on its address.
    pub(super) fn listener_for(&self, bound: SocketAddr, conn: &str) -> Option<VirtualListener> {
        self.tcp.listener_for(bound, conn)
    }

    /// Checks addressed to `ufrag` go to connection `conn` from now on (see
    /// [`Routes::answer_as`]), over UDP and TCP.
    pub(super) fn answer_as(&self, conn: &str, ufrag: &str) {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .answer_as(conn, ufrag);
        self.tcp.answer_as(conn, ufrag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Setter};
    use rtc::stun::textattrs::Username;

    fn inbox(conn: &str, key: &str) -> Arc<Inbox> {
        Arc::new(Inbox {
            key: key.parse().unwrap(),
            conn: conn.to_owned(),
            state: Mutex::default(),
        })
    }

    fn check(to_ufrag: &str) -> Vec<u8> {
        let mut m = Message::new();
        m.set_type(BINDING_REQUEST);
        m.new_transaction_id().unwrap();
        Username::new(ATTR_USERNAME, format!("{to_ufrag}:theirs"))
            .add_to(&mut m)
            .unwrap();
        m.write_header();
        m.raw.clone()
    }

    fn response_to(request: &[u8]) -> Vec<u8> {
        let mut asked = Message::new();
        asked.unmarshal_binary(request).unwrap();
        let mut m = Message::new();
        m.set_type(BINDING_SUCCESS);
        m.transaction_id = asked.transaction_id;
        m.write_header();
        m.raw.clone()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const LOCAL: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    const SRTP: &[u8] = &[0x80, 0x60, 0, 1, 0, 0, 0, 0];

    fn same(a: Option<Arc<Inbox>>, b: &Arc<Inbox>) -> bool {
        a.is_some_and(|a| Arc::ptr_eq(&a, b))
    }

    #[test]
    fn checks_go_by_ufrag_and_media_follows_the_address_they_came_from() {
        let mut routes = Routes::default();
        let t = Instant::now();
        let (a, b) = (
            inbox("aaaa", "127.0.0.1:40001"),
            inbox("bbbb", "127.0.0.1:40002"),
        );
        routes.register(&a);
        routes.register(&b);
        routes.answer_as("aaaa", "aaaa");
        routes.answer_as("bbbb", "bbbb");
        let (va, vb) = (addr("127.0.0.1:5001"), addr("127.0.0.1:5002"));
        // Media before any check: nobody's.
        assert!(routes.route(t, LOCAL, va, SRTP).is_none());
        assert!(same(routes.route(t, LOCAL, va, &check("aaaa")), &a));
        assert!(same(routes.route(t, LOCAL, vb, &check("bbbb")), &b));
        assert!(same(routes.route(t, LOCAL, va, SRTP), &a));
        assert!(same(routes.route(t, LOCAL, vb, SRTP), &b));
        // A check for a connection that is not there, and media from a stranger: dropped.
        assert!(routes.route(t, LOCAL, va, &check("cccc")).is_none());
        assert!(
            routes
                .route(t, LOCAL, addr("127.0.0.1:5003"), SRTP)
                .is_none()
        );
    }

    #[test]
    fn responses_go_to_whoever_sent_the_request() {
        let mut routes = Routes::default();
        let t = Instant::now();
        let (a, b) = (
            inbox("aaaa", "127.0.0.1:40001"),
            inbox("bbbb", "127.0.0.1:40002"),
        );
        routes.register(&a);
        routes.register(&b);
        routes.answer_as("aaaa", "aaaa");
        routes.answer_as("bbbb", "bbbb");
        // Both ask the same STUN server; each gets its own answer.
        let server = addr("127.0.0.1:3478");
        let (ra, rb) = (check("x"), check("y"));
        routes.sent(t, &a, a.key.ip(), server, &ra);
        routes.sent(t, &b, b.key.ip(), server, &rb);
        assert!(same(routes.route(t, LOCAL, server, &response_to(&rb)), &b));
        assert!(same(routes.route(t, LOCAL, server, &response_to(&ra)), &a));
        // Too late: by address (the server's address was first learnt for `a`).
        let late = t + TRANSACTION_TTL;
        assert!(same(
            routes.route(late, LOCAL, server, &response_to(&rb)),
            &a
        ));
    }

    #[test]
    fn a_connection_keeps_a_few_remotes_and_forgetting_it_drops_them_all() {
        let mut routes = Routes::default();
        let t = Instant::now();
        let a = inbox("aaaa", "127.0.0.1:40001");
        routes.register(&a);
        routes.answer_as("aaaa", "aaaa");
        for port in 0..20 {
            routes.route(
                t,
                LOCAL,
                addr(&format!("127.0.0.1:{}", 6000 + port)),
                &check("aaaa"),
            );
        }
        assert_eq!(routes.by_remote.len(), REMOTES_PER_INBOX);
        assert!(
            routes
                .route(t, LOCAL, addr("127.0.0.1:6000"), SRTP)
                .is_none()
        );
        assert!(same(
            routes.route(t, LOCAL, addr("127.0.0.1:6019"), SRTP),
            &a
        ));
        routes.forget("aaaa");
        assert!(routes.by_remote.is_empty() && routes.by_conn.is_empty());
        assert!(routes.conn_of_ufrag.is_empty());
        assert!(
            routes
                .route(t, LOCAL, addr("127.0.0.1:6019"), SRTP)
                .is_none()
        );
    }

    #[test]
    fn a_full_inbox_drops_the_newest() {
        let a = inbox("aaaa", "127.0.0.1:40001");
        for _ in 0..INBOX + 10 {
            a.push(addr("127.0.0.1:5001"), SRTP);
        }
        let state = a.state.lock().unwrap();
        assert_eq!((state.datagrams.len(), state.dropped), (INBOX, 10));
    }
}
