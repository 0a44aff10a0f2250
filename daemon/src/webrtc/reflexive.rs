//! The port's public address, learnt from the STUN servers of `webrtc.ice_servers`.
//!
//! Every viewer is served from the one port, so its server-reflexive address is the same
//! for all of them: it is asked once from each socket of the port (and again every
//! [`REFRESH`], as a NAT may change it) instead of once per viewer. Answers come back to
//! the port like any datagram; the engine hands them here first ([`Reflexive::answer`]).
//! Pure: time is an input, and the datagrams to send are returned.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Getter, Message};
use rtc::stun::xoraddr::XorMappedAddress;

/// How often the address is asked again once known.
pub const REFRESH: Duration = Duration::from_secs(60);
/// The first retries when nobody answers: 1, 2, 4 … s, then every [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long a new viewer's answer waits, after the first request, for the address.
pub const FIRST_ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// Requests waiting for an answer at most (servers × sockets; old ones are dropped).
const MAX_ASKED: usize = 64;

/// A request to send: from the port's socket `socket`, to `server`.
#[derive(Debug)]
pub struct Request {
    /// Index of the port's socket.
    pub socket: usize,
    /// The STUN server.
    pub server: SocketAddr,
    /// The Binding request.
    pub datagram: Vec<u8>,
}

/// What the STUN servers said, and when to ask them again.
#[derive(Default)]
pub struct Reflexive {
    servers: Vec<SocketAddr>,
    /// Outstanding requests: transaction → (socket, when sent).
    asked: HashMap<[u8; 12], (usize, Instant)>,
    /// Each socket's public address, as the newest answer had it.
    found: HashMap<usize, SocketAddr>,
    next_ask: Option<Instant>,
    retry: Duration,
    first_ask: Option<Instant>,
}

impl Reflexive {
    /// Asks `servers` from now on (resolved from `webrtc.ice_servers`), at once.
    pub fn set_servers(&mut self, now: Instant, servers: Vec<SocketAddr>) {
        if servers == self.servers {
            return;
        }
        self.servers = servers;
        self.next_ask = (!self.servers.is_empty()).then_some(now);
        self.retry = FIRST_RETRY;
    }

    /// When [`Self::poll`] has something to send.
    pub fn deadline(&self) -> Option<Instant> {
        self.next_ask
    }

    /// The requests due at `now`, from the sockets bound at `sockets` (each asks the servers
    /// of its family).
    pub fn poll(&mut self, now: Instant, sockets: &[SocketAddr]) -> Vec<Request> {
        if self.next_ask.is_none_or(|at| at > now) {
            return Vec::new();
        }
        self.first_ask.get_or_insert(now);
        self.asked
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < MAX_RETRY);
        let mut requests = Vec::new();
        for (socket, bound) in sockets.iter().enumerate() {
            for server in self
                .servers
                .iter()
                .filter(|s| s.is_ipv4() == bound.is_ipv4())
            {
                let mut m = Message::new();
                m.set_type(BINDING_REQUEST);
                if m.new_transaction_id().is_err() {
                    continue;
                }
                m.write_header();
                if self.asked.len() < MAX_ASKED {
                    self.asked.insert(m.transaction_id.0, (socket, now));
                }
                requests.push(Request {
                    socket,
                    server: *server,
                    datagram: m.raw,
                });
            }
        }
        let wait = if self.found.is_empty() {
            let wait = self.retry;
            self.retry = (self.retry * 2).min(MAX_RETRY);
            wait
        } else {
            REFRESH
        };
        self.next_ask = Some(now + wait);
        requests
    }

    /// Takes `datagram` if it answers one of our requests (`true`), learning the address.
    pub fn answer(&mut self, datagram: &[u8]) -> bool {
        if datagram.len() < 20 || datagram[0] > 3 {
            return false;
        }
        let mut m = Message::new();
        if m.unmarshal_binary(datagram).is_err() || m.typ != BINDING_SUCCESS {
            return false;
        }
        let Some((socket, _)) = self.asked.remove(&m.transaction_id.0) else {
            return false;
        };
        let mut mapped = XorMappedAddress::default();
        if mapped.get_from(&m).is_ok() {
            let address = SocketAddr::new(mapped.ip, mapped.port);
            if self.found.insert(socket, address) != Some(address) {
                tracing::info!(socket, %address, "webrtc: public address from STUN");
            }
            self.retry = FIRST_RETRY;
        }
        true
    }

    /// Whether a new viewer's answer may go out: the address is known, or nobody is asked,
    /// or the first answer has been waited for long enough.
    pub fn settled(&self, now: Instant) -> bool {
        self.servers.is_empty()
            || !self.found.is_empty()
            || self
                .first_ask
                .is_some_and(|at| now.saturating_duration_since(at) >= FIRST_ANSWER_WITHIN)
    }

    /// When a viewer waiting for [`Self::settled`] stops waiting anyway.
    pub fn settles_by(&self) -> Option<Instant> {
        let at = self.first_ask? + FIRST_ANSWER_WITHIN;
        self.found.is_empty().then_some(at)
    }

    /// Each socket's public address, as far as known.
    pub fn found(&self) -> impl Iterator<Item = (usize, SocketAddr)> + '_ {
        self.found.iter().map(|(s, a)| (*s, *a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::message::{Setter, TransactionId};

    fn success_for(request: &[u8], mapped: SocketAddr) -> Vec<u8> {
        let mut asked = Message::new();
        asked.unmarshal_binary(request).unwrap();
        let mut m = Message::new();
        m.set_type(BINDING_SUCCESS);
        m.transaction_id = TransactionId(asked.transaction_id.0);
        XorMappedAddress {
            ip: mapped.ip(),
            port: mapped.port(),
        }
        .add_to(&mut m)
        .unwrap();
        m.write_header();
        m.raw
    }

    #[test]
    fn asks_each_server_of_the_socket_family_and_learns_the_address() {
        let mut r = Reflexive::default();
        let t = Instant::now();
        let stun4: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let stun6: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
        r.set_servers(t, vec![stun4, stun6]);
        assert!(!r.settled(t));
        let requests = r.poll(t, &["0.0.0.0:8189".parse().unwrap()]);
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].server, stun4);
        // Nothing more until the retry.
        assert!(r.poll(t, &["0.0.0.0:8189".parse().unwrap()]).is_empty());
        let public: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        assert!(r.answer(&success_for(&requests[0].datagram, public)));
        // The same answer twice, or an answer to nobody's request: not ours.
        assert!(!r.answer(&success_for(&requests[0].datagram, public)));
        assert!(r.settled(t));
        assert_eq!(r.found().collect::<Vec<_>>(), [(0, public)]);
        assert_eq!(r.deadline(), Some(t + FIRST_RETRY));
    }

    #[test]
    fn without_an_answer_retries_back_off_and_viewers_stop_waiting() {
        let mut r = Reflexive::default();
        let t = Instant::now();
        r.set_servers(t, vec!["192.0.2.1:3478".parse().unwrap()]);
        let socket = ["0.0.0.0:8189".parse().unwrap()];
        assert_eq!(r.poll(t, &socket).len(), 1);
        assert_eq!(r.deadline(), Some(t + Duration::from_secs(1)));
        assert_eq!(r.poll(t + Duration::from_secs(1), &socket).len(), 1);
        assert_eq!(r.deadline(), Some(t + Duration::from_secs(3)));
        assert!(!r.settled(t + Duration::from_secs(1)));
        assert_eq!(r.settles_by(), Some(t + FIRST_ANSWER_WITHIN));
        assert!(r.settled(t + FIRST_ANSWER_WITHIN));
    }

    #[test]
    fn no_servers_nothing_to_wait_for() {
        let mut r = Reflexive::default();
        let t = Instant::now();
        assert!(r.settled(t));
        assert!(r.poll(t, &["0.0.0.0:8189".parse().unwrap()]).is_empty());
        assert!(!r.answer(&[0u8; 20]));
        assert_eq!(r.deadline(), None);
    }
}
