//! A viewer's first nominating ICE check, answered at once instead of 50 ms later.
//!
//! Chromium, as the controlling agent, puts USE-CANDIDATE on its very first connectivity
//! check. RFC 8445 §7.3.1 says the controlled agent answers every valid check, and §7.3.1.5
//! that a nomination on a pair whose own check has not succeeded yet takes effect once the
//! triggered check it causes succeeds. webrtc-rs's controlled agent (rtc-ice 0.21.1) sends the
//! triggered check but neither answers the request nor remembers the nomination. Chromium
//! then hears nothing for its first check and repeats it ~50 ms later, and a browser's first
//! picture is 50 ms late (docs/PERFORMANCE.md, "Where the time to first frame goes").
//!
//! The fix sits where the engine hands datagrams to the core: [`Nominations`] keeps the newest
//! USE-CANDIDATE request from each address, and when the agent's own check to that address
//! is answered (its pair has succeeded), hands the agent the kept request once more, right
//! after the answer. The agent now finds a succeeded pair, selects it and answers the request
//! (same transaction: the browser takes it as the answer to its check). Nothing is forged:
//! the request is the browser's own, with its integrity intact.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtc::stun::attributes::ATTR_USE_CANDIDATE;
use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message};

/// How long a kept nomination waits for the agent's own check to succeed. Chromium repeats
/// an unanswered check every ~50 ms, so a newer copy replaces an old one long before this.
const KEEP_FOR: Duration = Duration::from_secs(2);
/// At most this many addresses' nominations are kept (a viewer nominates from one or two).
const MAX_KEPT: usize = 4;

/// The STUN messages that matter here.
#[derive(Debug, PartialEq, Eq)]
enum Stun {
    /// A Binding request with USE-CANDIDATE: the peer nominates the pair it came on.
    Nomination,
    /// A Binding success response: one of our checks was answered.
    Answer,
    /// Anything else (media, DTLS, other STUN).
    Other,
}

fn classify(datagram: &[u8]) -> Stun {
    // RFC 7983: STUN starts with 0..=3; and a header is 20 bytes.
    if datagram.len() < 20 || datagram[0] > 3 {
        return Stun::Other;
    }
    let mut message = Message::new();
    if message.unmarshal_binary(datagram).is_err() {
        return Stun::Other;
    }
    if message.typ == BINDING_REQUEST && message.contains(ATTR_USE_CANDIDATE) {
        Stun::Nomination
    } else if message.typ == BINDING_SUCCESS {
        Stun::Answer
    } else {
        Stun::Other
    }
}

/// One kept nomination.
struct Kept {
    from: SocketAddr,
    at: Instant,
    datagram: Vec<u8>,
}

/// The pure part: which datagram to hand the agent again, and when. Time is an input.
#[derive(Default)]
pub struct Nominations {
    kept: VecDeque<Kept>,
}

impl Nominations {
    /// Looks at `datagram` from `from`, which the agent reads next. Returns a datagram to
    /// give the agent right after it: the nomination kept from `from`, when `datagram` is
    /// the answer to the agent's own check there.
    pub fn inspect(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
        self.kept
            .retain(|k| now.saturating_duration_since(k.at) < KEEP_FOR);
        match classify(datagram) {
            Stun::Nomination => {
                self.kept.retain(|k| k.from != from);
                if self.kept.len() == MAX_KEPT {
                    self.kept.pop_front();
                }
                self.kept.push_back(Kept {
                    from,
                    at: now,
                    datagram: datagram.to_vec(),
                });
                None
            }
            Stun::Answer => {
                let index = self.kept.iter().position(|k| k.from == from)?;
                self.kept.remove(index).map(|k| k.datagram)
            }
            Stun::Other => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn message(typ: rtc::stun::message::MessageType, use_candidate: bool) -> Vec<u8> {
        let mut m = Message::new();
        m.set_type(typ);
        m.new_transaction_id().unwrap();
        if use_candidate {
            m.add(ATTR_USE_CANDIDATE, &[]);
        }
        m.write_header();
        m.raw.clone()
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_nomination_is_given_again_after_our_check_to_that_address_succeeds() {
        let mut n = Nominations::default();
        let t = Instant::now();
        let nomination = message(BINDING_REQUEST, true);
        assert_eq!(n.inspect(t, addr(1), &nomination), None);
        // An answer from somewhere else, a plain check, media: nothing.
        assert_eq!(
            n.inspect(t, addr(2), &message(BINDING_SUCCESS, false)),
            None
        );
        assert_eq!(
            n.inspect(t, addr(1), &message(BINDING_REQUEST, false)),
            None
        );
        assert_eq!(n.inspect(t, addr(1), &[0x80, 0x60, 0, 1]), None);
        // Our check to addr(1) answered: the nomination, once.
        let answer = message(BINDING_SUCCESS, false);
        assert_eq!(n.inspect(t, addr(1), &answer), Some(nomination));
        assert_eq!(n.inspect(t, addr(1), &answer), None);
    }

    #[test]
    fn the_newest_nomination_wins_and_old_ones_expire() {
        let mut n = Nominations::default();
        let t = Instant::now();
        let first = message(BINDING_REQUEST, true);
        let second = message(BINDING_REQUEST, true);
        n.inspect(t, addr(1), &first);
        n.inspect(t, addr(1), &second);
        let answer = message(BINDING_SUCCESS, false);
        assert_eq!(n.inspect(t, addr(1), &answer), Some(second));

        n.inspect(t, addr(1), &first);
        assert_eq!(n.inspect(t + KEEP_FOR, addr(1), &answer), None);
    }

    #[test]
    fn at_most_a_few_addresses_are_kept() {
        let mut n = Nominations::default();
        let t = Instant::now();
        for port in 0..10 {
            n.inspect(t, addr(port), &message(BINDING_REQUEST, true));
        }
        assert_eq!(n.kept.len(), MAX_KEPT);
        let answer = message(BINDING_SUCCESS, false);
        assert_eq!(n.inspect(t, addr(0), &answer), None);
        assert!(n.inspect(t, addr(9), &answer).is_some());
    }

    #[test]
    fn what_is_not_stun_is_left_alone() {
        let mut n = Nominations::default();
        let t = Instant::now();
        assert_eq!(classify(&[]), Stun::Other);
        assert_eq!(classify(&[0u8; 19]), Stun::Other);
        assert_eq!(classify(&[22; 40]), Stun::Other); // DTLS
        let mut bad = message(BINDING_REQUEST, true);
        bad.truncate(bad.len() - 2);
        assert_eq!(classify(&bad), Stun::Other);
        assert_eq!(n.inspect(t, addr(1), &bad), None);
    }
}
