//! One UDP port for every viewer: `[webrtc] port`.
//!
//! The port is one real UDP socket per configured address (the wildcard of a family serves
//! all its addresses) and a TCP listener on the same number ([`super::tcp`]). It owns no
//! connection: one task per socket reads every datagram and hands it, with the address it
//! arrived at, to the engine's bounded queue ([`Arrival`]); the engine ([`super::engine`])
//! decides whose it is ([`Routes`]) and sends through the sockets itself.
//!
//! - **Routes**: a STUN request goes by the ICE username fragment it is addressed to (ours,
//!   as the connection's local description has it: [`Routes::answer_as`]); anything else
//!   (STUN responses, DTLS, SRTP, RTCP) by the address it came from, learnt from the checks
//!   before it and from what the connection sent. Datagrams for nobody are dropped.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::BytesMut;
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::{CLASS_REQUEST, Message};
use rtc::stun::textattrs::TextAttribute;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::tcp::{self, TcpArrival};
use crate::lifecycle::Lifecycle;

/// A connection's number in the engine.
pub type ConnId = super::session::SessionId;

/// Remote addresses routed to one connection at most (a viewer uses one or two; more are
/// forgotten oldest first, so nobody can fill the table by spraying checks).
const REMOTES_PER_CONN: usize = 8;
/// Datagrams read per system call.
const BATCH: usize = 16;
/// Datagrams (and TCP frames) waiting for the engine. Viewers send little (STUN, RTCP,
/// DTLS flights); when the engine is this far behind, the newest are dropped, as a full
/// socket buffer would drop them.
pub const ARRIVALS: usize = 2048;

/// What reaches the engine from the network.
pub enum Arrival {
    /// A UDP datagram that arrived at `local` (the address, even on a wildcard socket).
    Datagram {
        /// The address it was sent to.
        local: SocketAddr,
        /// Who sent it.
        from: SocketAddr,
        /// The datagram.
        data: BytesMut,
    },
    /// Something on an ICE-TCP connection.
    Tcp(TcpArrival),
}

/// A datagram's STUN facts, as far as routing needs them.
pub(super) struct Stun {
    pub(super) request: bool,
    /// A request's USERNAME's first part: the ufrag of the connection it is addressed to
    /// (USERNAME is "receiver's ufrag:sender's ufrag").
    pub(super) ufrag: Option<String>,
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
    Some(Stun { request, ufrag })
}

/// Who gets which datagram. Pure.
#[derive(Default)]
pub struct Routes {
    /// Our current ICE username fragment of each connection → the connection.
    conn_of_ufrag: HashMap<String, ConnId>,
    /// (the local address it arrived at, the remote address) → connection.
    by_remote: HashMap<(IpAddr, SocketAddr), ConnId>,
    /// Each connection's remotes, oldest first (to cap them).
    remotes_of: HashMap<ConnId, VecDeque<(IpAddr, SocketAddr)>>,
}

impl Routes {
    /// Connection `conn` answers to `ufrag` from now on (its local description has it), and
    /// no longer to the one before (an ICE restart changes it).
    pub fn answer_as(&mut self, conn: ConnId, ufrag: &str) {
        self.conn_of_ufrag.retain(|_, c| *c != conn);
        self.conn_of_ufrag.insert(ufrag.to_owned(), conn);
    }

    /// The connection answering to `ufrag`.
    pub fn conn_of(&self, ufrag: &str) -> Option<ConnId> {
        self.conn_of_ufrag.get(ufrag).copied()
    }

    /// Forgets everything that leads to the connection `conn`.
    pub fn forget(&mut self, conn: ConnId) {
        self.conn_of_ufrag.retain(|_, c| *c != conn);
        for key in self.remotes_of.remove(&conn).unwrap_or_default() {
            self.by_remote.remove(&key);
        }
    }

    fn learn_remote(&mut self, conn: ConnId, local: IpAddr, remote: SocketAddr) {
        let key = (local, remote);
        if let Some(old) = self.by_remote.get(&key).copied() {
            if old == conn {
                return;
            }
            if let Some(list) = self.remotes_of.get_mut(&old) {
                list.retain(|k| *k != key);
            }
        }
        self.by_remote.insert(key, conn);
        let list = self.remotes_of.entry(conn).or_default();
        list.push_back(key);
        if list.len() > REMOTES_PER_CONN
            && let Some(oldest) = list.pop_front()
        {
            self.by_remote.remove(&oldest);
        }
    }

    /// The connection for a datagram from `from` that arrived at `local`.
    pub fn route(&mut self, local: IpAddr, from: SocketAddr, datagram: &[u8]) -> Option<ConnId> {
        if let Some(Stun {
            request: true,
            ufrag: Some(ufrag),
        }) = stun(datagram)
        {
            let conn = self.conn_of(&ufrag)?;
            self.learn_remote(conn, local, from);
            return Some(conn);
        }
        self.by_remote.get(&(local, from)).copied()
    }

    /// Connection `conn` sends to `to` from `local`: replies come back to it.
    pub fn sent(&mut self, conn: ConnId, local: IpAddr, to: SocketAddr) {
        if !self.by_remote.contains_key(&(local, to)) {
            self.learn_remote(conn, local, to);
        }
    }
}

/// One real socket of the port: bound to a configured address, or to the wildcard of its
/// family (then the address a datagram arrived at comes with it, and replies leave from the
/// address the connection announced).
pub struct Socket {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
    bound: SocketAddr,
}

impl Socket {
    fn bind(addr: SocketAddr) -> io::Result<Arc<Socket>> {
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
        let bound = io.local_addr()?;
        Ok(Arc::new(Socket { io, state, bound }))
    }

    /// The address it is bound to (an unspecified IP for a wildcard).
    pub fn bound(&self) -> SocketAddr {
        self.bound
    }

    /// Whether this socket can send from `local`.
    pub fn serves(&self, local: IpAddr) -> bool {
        self.bound.ip() == local
            || (self.bound.ip().is_unspecified() && self.bound.is_ipv4() == local.is_ipv4())
    }

    /// Sends `contents` to `to` (from `from`, on a wildcard socket) without waiting: one
    /// datagram, or with `segment_size` several of that size (the last may be shorter) in
    /// one system call (UDP GSO; see [`Self::max_segments`]).
    pub fn try_send(
        &self,
        from: Option<IpAddr>,
        to: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) -> io::Result<()> {
        let wildcard = self.bound.ip().is_unspecified();
        let out = Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size,
            src_ip: from.filter(|ip| wildcard && !ip.is_unspecified()),
        };
        self.io.try_io(tokio::io::Interest::WRITABLE, || {
            self.state.try_send(UdpSockRef::from(&self.io), &out)
        })
    }

    /// How many datagrams one [`Self::try_send`] may carry (1 where the kernel has no UDP
    /// GSO, or after it refused it once).
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    pub async fn writable(&self) -> io::Result<()> {
        self.io.writable().await
    }

    /// Reads every datagram and hands it to the engine. Ends when the socket fails or the
    /// engine is gone.
    async fn read(self: Arc<Self>, to: mpsc::Sender<Arrival>) {
        let mut bufs = vec![vec![0u8; 1500 * self.state.gro_segments().max(1)]; BATCH];
        let mut meta = vec![RecvMeta::default(); BATCH];
        let mut dropped = 0u64;
        loop {
            if let Err(err) = self.io.readable().await {
                warn!(
                    "webrtc.port {}: {err}; viewers can no longer be reached",
                    self.bound
                );
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
                    debug!("webrtc.port {}: receive: {err}", self.bound);
                    continue;
                }
            };
            for (buf, m) in bufs.iter().zip(&meta).take(n) {
                let local = SocketAddr::new(m.dst_ip.unwrap_or(self.bound.ip()), self.bound.port());
                for datagram in buf[..m.len].chunks(m.stride.max(1)) {
                    let arrival = Arrival::Datagram {
                        local,
                        from: m.addr,
                        data: BytesMut::from(datagram),
                    };
                    match to.try_send(arrival) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            dropped += 1;
                            if dropped.is_power_of_two() {
                                debug!(
                                    dropped,
                                    "webrtc.port: the engine is behind; datagram dropped"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The port: its real sockets (one per configured address) and the TCP listeners on the
/// same number.
pub struct Port {
    /// The UDP sockets, in the order of `webrtc.bind_ips`.
    pub sockets: Vec<Arc<Socket>>,
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
    /// addresses), for UDP and TCP, and starts reading into `to`. Port 0: any free port, the
    /// same number on every address and for both.
    pub fn bind(
        ips: &[IpAddr],
        port: u16,
        to: &mpsc::Sender<Arrival>,
        lifecycle: &Lifecycle,
    ) -> io::Result<Port> {
        let mut tries = if port == 0 { PICKS } else { 1 };
        loop {
            tries -= 1;
            match Self::try_bind(ips, port, to, lifecycle) {
                Err(err) if tries > 0 && err.kind() == io::ErrorKind::AddrInUse => continue,
                bound => return bound,
            }
        }
    }

    fn try_bind(
        ips: &[IpAddr],
        port: u16,
        to: &mpsc::Sender<Arrival>,
        lifecycle: &Lifecycle,
    ) -> io::Result<Port> {
        let mut sockets = Vec::new();
        let mut number = port;
        for ip in ips {
            let socket = Socket::bind(SocketAddr::new(*ip, number)).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("webrtc.port: binding {ip} port {number}: {e}"),
                )
            })?;
            number = socket.bound().port();
            sockets.push(socket);
        }
        let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(*ip, number)).collect();
        tcp::listen(&addrs, to, lifecycle)?;
        for socket in &sockets {
            lifecycle.spawn(socket.clone().read(to.clone()));
        }
        Ok(Port { sockets, number })
    }

    /// The port's number (the one chosen when 0 was asked for).
    pub fn number(&self) -> u16 {
        self.number
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Setter};
    use rtc::stun::textattrs::Username;

    /// Connection `n`'s id.
    fn id(n: u8) -> ConnId {
        super::super::session::SessionId::parse(&format!("{n:032x}")).unwrap()
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

    fn response() -> Vec<u8> {
        let mut m = Message::new();
        m.set_type(BINDING_SUCCESS);
        m.new_transaction_id().unwrap();
        m.write_header();
        m.raw.clone()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const SRTP: &[u8] = &[0x80, 0x60, 0, 1, 0, 0, 0, 0];

    #[test]
    fn checks_go_by_ufrag_and_media_follows_the_address_they_came_from() {
        let mut routes = Routes::default();
        routes.answer_as(id(1), "aaaa");
        routes.answer_as(id(2), "bbbb");
        let (va, vb) = (addr("127.0.0.1:5001"), addr("127.0.0.1:5002"));
        // Media before any check: nobody's.
        assert_eq!(routes.route(LOCAL, va, SRTP), None);
        assert_eq!(routes.route(LOCAL, va, &check("aaaa")), Some(id(1)));
        assert_eq!(routes.route(LOCAL, vb, &check("bbbb")), Some(id(2)));
        assert_eq!(routes.route(LOCAL, va, SRTP), Some(id(1)));
        assert_eq!(routes.route(LOCAL, vb, SRTP), Some(id(2)));
        // A check for a connection that is not there, and media from a stranger: dropped.
        assert_eq!(routes.route(LOCAL, va, &check("cccc")), None);
        assert_eq!(routes.route(LOCAL, addr("127.0.0.1:5003"), SRTP), None);
    }

    #[test]
    fn answers_to_our_checks_go_to_whoever_sent_them() {
        let mut routes = Routes::default();
        routes.answer_as(id(1), "aaaa");
        let viewer = addr("127.0.0.1:5001");
        assert_eq!(routes.route(LOCAL, viewer, &response()), None);
        routes.sent(id(1), LOCAL, viewer);
        assert_eq!(routes.route(LOCAL, viewer, &response()), Some(id(1)));
    }

    #[test]
    fn an_ice_restart_moves_the_ufrag() {
        let mut routes = Routes::default();
        routes.answer_as(id(1), "old");
        routes.answer_as(id(1), "new");
        assert_eq!(routes.conn_of("old"), None);
        assert_eq!(routes.conn_of("new"), Some(id(1)));
    }

    #[test]
    fn a_connection_keeps_a_few_remotes_and_forgetting_it_drops_them_all() {
        let mut routes = Routes::default();
        routes.answer_as(id(1), "aaaa");
        for port in 0..20 {
            routes.route(
                LOCAL,
                addr(&format!("127.0.0.1:{}", 6000 + port)),
                &check("aaaa"),
            );
        }
        assert_eq!(routes.by_remote.len(), REMOTES_PER_CONN);
        assert_eq!(routes.route(LOCAL, addr("127.0.0.1:6000"), SRTP), None);
        assert_eq!(
            routes.route(LOCAL, addr("127.0.0.1:6019"), SRTP),
            Some(id(1))
        );
        routes.forget(id(1));
        assert!(routes.by_remote.is_empty() && routes.conn_of_ufrag.is_empty());
        assert_eq!(routes.route(LOCAL, addr("127.0.0.1:6019"), SRTP), None);
    }
}
