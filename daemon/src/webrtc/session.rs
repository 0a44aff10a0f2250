//! The life of one viewer's session, as a state machine with time as an input.
//!
//! new → negotiating (awaiting the viewer's answer when we offered, then its first ICE check,
//! then ICE and DTLS) → connected (media flows) → closed. The I/O edge (`webrtc::peer`)
//! feeds it events from webrtc-rs and HTTP and acts on what it answers; everything about
//! *when* a session ends lives here and is tested without sockets.
//!
//! A session that does not connect is gone soon: an offer nobody follows up (no ICE check
//! within [`ICE_START_TIMEOUT`] of the answer) holds a viewer's slot for seconds, not for the
//! whole [`CONNECT_TIMEOUT`] a slow network may need once checks flow.

use std::time::{Duration, Instant};

/// How long a viewer has, from the start, to complete ICE and DTLS.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a viewer has, once both sides' descriptions are set, to send its first ICE check
/// (a viewer sends them at once; TURN relays are allocated before the offer).
pub const ICE_START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a viewer we offered to has to answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may stay `disconnected` (no ICE traffic) before it is given up.
/// ICE may recover on its own inside this window, e.g. after a Wi-Fi roam.
pub const DISCONNECTED_GRACE: Duration = Duration::from_secs(10);

/// A session's one id: random (a stranger cannot guess another viewer's), written as 32 hex
/// digits in WHEP resource URLs and signalling messages, and the key of everything the loop
/// keeps for the viewer (its [`super::viewer::Viewer`], its routes, its streams).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u128);

impl SessionId {
    /// A new random id.
    pub fn random() -> Self {
        SessionId(rand::random())
    }

    /// The id written as `text` (exactly as [`Display`](std::fmt::Display) writes it: 32
    /// lower-case hex digits); `None` if it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let digit = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        (text.len() == 32 && text.bytes().all(digit))
            .then(|| u128::from_str_radix(text, 16).ok().map(SessionId))
            .flatten()
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not connected yet: waiting for what `stage` says.
    Negotiating {
        /// Give up at this instant.
        deadline: Instant,
        /// What is awaited.
        stage: Stage,
    },
    /// Media flows.
    Connected,
    /// Connectivity lost; may recover.
    Disconnected {
        /// Give up at this instant.
        deadline: Instant,
    },
    /// Over; resources are released.
    Closed(CloseReason),
}

/// What a session that has not connected waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The viewer's answer to our offer.
    Answer,
    /// The viewer's first ICE check.
    Ice,
    /// ICE and DTLS to complete.
    Connection,
}

/// Why a session ended, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The viewer sent DELETE.
    Deleted,
    /// ICE or DTLS failed.
    Failed,
    /// The peer closed the connection.
    PeerClosed,
    /// ICE did not connect within [`CONNECT_TIMEOUT`].
    ConnectTimeout,
    /// The viewer we offered to did not answer within [`ANSWER_TIMEOUT`].
    NoAnswer,
    /// No ICE check came from the viewer within [`ICE_START_TIMEOUT`].
    NoIce,
    /// Connectivity was not regained within [`DISCONNECTED_GRACE`].
    Lost,
    /// The daemon is shutting down.
    Shutdown,
}

/// Something that happened to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The viewer's answer to our offer was applied.
    Answered,
    /// The viewer's first ICE check arrived.
    Heard,
    /// The peer connection reached `connected`.
    Connected,
    /// The peer connection went `disconnected`.
    Disconnected,
    /// The peer connection failed.
    Failed,
    /// The peer connection closed.
    Closed,
    /// The viewer asked to end the session.
    Delete,
    /// The daemon is stopping.
    Shutdown,
    /// Time passed; check deadlines.
    Tick,
}

/// What the I/O edge should do after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Start sending media to the viewer (first connect only).
    StartMedia,
    /// Tear everything down.
    Close(CloseReason),
}

/// One viewer's session state.
#[derive(Debug, Clone)]
pub struct Session {
    state: State,
    /// Media is started once; a reconnect after `disconnected` keeps the same forwarders.
    media_started: bool,
    /// [`CONNECT_TIMEOUT`] from the start.
    connect_by: Instant,
}

impl Session {
    /// A session whose answer (`answered`) or offer has just been sent.
    pub fn new(now: Instant, answered: bool) -> Self {
        let connect_by = now + CONNECT_TIMEOUT;
        let (stage, deadline) = match answered {
            true => (Stage::Ice, now + ICE_START_TIMEOUT),
            false => (Stage::Answer, now + ANSWER_TIMEOUT),
        };
        Session {
            state: State::Negotiating {
                deadline: deadline.min(connect_by),
                stage,
            },
            media_started: false,
            connect_by,
        }
    }

    /// Whether the session has not connected yet.
    pub fn pending(&self) -> bool {
        matches!(self.state, State::Negotiating { .. })
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether media was started (the viewer connected at least once).
    pub fn media_started(&self) -> bool {
        self.media_started
    }

    /// When the edge must call `handle(Event::Tick, …)` next, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Negotiating { deadline, .. } | State::Disconnected { deadline } => {
                Some(deadline)
            }
            State::Connected | State::Closed(_) => None,
        }
    }

    /// Advances the state machine.
    pub fn handle(&mut self, event: Event, now: Instant) -> Action {
        if let State::Closed(_) = self.state {
            return Action::None;
        }
        let close = match event {
            Event::Answered | Event::Heard => {
                self.waited(event, now);
                return Action::None;
            }
            Event::Connected => {
                self.state = State::Connected;
                if self.media_started {
                    return Action::None;
                }
                self.media_started = true;
                return Action::StartMedia;
            }
            Event::Disconnected => {
                if self.state == State::Connected {
                    self.state = State::Disconnected {
                        deadline: now + DISCONNECTED_GRACE,
                    };
                }
                return Action::None;
            }
            Event::Failed => CloseReason::Failed,
            Event::Closed => CloseReason::PeerClosed,
            Event::Delete => CloseReason::Deleted,
            Event::Shutdown => CloseReason::Shutdown,
            Event::Tick => match self.state {
                State::Negotiating { deadline, stage } if now >= deadline => match stage {
                    Stage::Answer => CloseReason::NoAnswer,
                    Stage::Ice => CloseReason::NoIce,
                    Stage::Connection => CloseReason::ConnectTimeout,
                },
                State::Disconnected { deadline } if now >= deadline => CloseReason::Lost,
                _ => return Action::None,
            },
        };
        self.state = State::Closed(close);
        Action::Close(close)
    }

    /// The answer came or ICE started: on to what comes next, with its deadline.
    fn waited(&mut self, event: Event, now: Instant) {
        let State::Negotiating { stage, .. } = self.state else {
            return;
        };
        let (stage, deadline) = match (event, stage) {
            (Event::Answered, Stage::Answer) => (Stage::Ice, now + ICE_START_TIMEOUT),
            (Event::Heard, Stage::Answer | Stage::Ice) => (Stage::Connection, self.connect_by),
            _ => return,
        };
        self.state = State::Negotiating {
            deadline: deadline.min(self.connect_by),
            stage,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_written_and_read_as_32_hex_digits() {
        let id = SessionId::random();
        assert_eq!(SessionId::parse(&id.to_string()), Some(id));
        assert_eq!(id.to_string().len(), 32);
        for bad in [
            "",
            "abc",
            &format!("{id}0"),
            &"g".repeat(32),
            &format!("+{}", &id.to_string()[1..]),
        ] {
            assert_eq!(SessionId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn connect_starts_media_once() {
        let t = Instant::now();
        let mut s = Session::new(t, true);
        assert_eq!(s.handle(Event::Connected, t), Action::StartMedia);
        assert_eq!(s.handle(Event::Disconnected, t), Action::None);
        assert_eq!(s.handle(Event::Connected, t), Action::None);
        assert_eq!(s.state(), State::Connected);
    }

    #[test]
    fn viewer_that_never_connects_times_out() {
        let t = Instant::now();
        let mut s = Session::new(t, true);
        assert_eq!(
            s.handle(Event::Heard, t + Duration::from_secs(1)),
            Action::None
        );
        assert_eq!(
            s.handle(Event::Tick, t + Duration::from_secs(19)),
            Action::None
        );
        assert_eq!(
            s.handle(Event::Tick, t + CONNECT_TIMEOUT),
            Action::Close(CloseReason::ConnectTimeout)
        );
    }

    #[test]
    fn an_offer_nobody_follows_up_is_gone_within_seconds() {
        let t = Instant::now();
        let mut s = Session::new(t, true);
        assert!(s.pending());
        assert_eq!(s.deadline(), Some(t + ICE_START_TIMEOUT));
        assert_eq!(
            s.handle(Event::Tick, t + ICE_START_TIMEOUT),
            Action::Close(CloseReason::NoIce)
        );
        // We offered: the answer first, then the first check, then the connection.
        let mut s = Session::new(t, false);
        assert_eq!(s.deadline(), Some(t + ANSWER_TIMEOUT));
        assert_eq!(
            s.handle(Event::Tick, t + ANSWER_TIMEOUT),
            Action::Close(CloseReason::NoAnswer)
        );
        let mut s = Session::new(t, false);
        let answered = t + Duration::from_secs(2);
        s.handle(Event::Answered, answered);
        assert_eq!(s.deadline(), Some(answered + ICE_START_TIMEOUT));
        s.handle(Event::Heard, answered);
        assert_eq!(s.deadline(), Some(t + CONNECT_TIMEOUT));
        // A late answer or a second check changes nothing.
        s.handle(Event::Answered, answered);
        s.handle(Event::Heard, answered);
        assert_eq!(s.deadline(), Some(t + CONNECT_TIMEOUT));
        assert_eq!(s.handle(Event::Connected, answered), Action::StartMedia);
        assert!(!s.pending());
    }

    #[test]
    fn disconnected_viewer_gets_a_grace_period() {
        let t = Instant::now();
        let mut s = Session::new(t, true);
        s.handle(Event::Connected, t);
        s.handle(Event::Disconnected, t);
        assert_eq!(s.deadline(), Some(t + DISCONNECTED_GRACE));
        assert_eq!(
            s.handle(Event::Tick, t + Duration::from_secs(5)),
            Action::None
        );
        assert_eq!(
            s.handle(Event::Tick, t + DISCONNECTED_GRACE),
            Action::Close(CloseReason::Lost)
        );
    }

    #[test]
    fn delete_failure_and_shutdown_close() {
        for (event, reason) in [
            (Event::Delete, CloseReason::Deleted),
            (Event::Failed, CloseReason::Failed),
            (Event::Closed, CloseReason::PeerClosed),
            (Event::Shutdown, CloseReason::Shutdown),
        ] {
            let t = Instant::now();
            let mut s = Session::new(t, true);
            s.handle(Event::Connected, t);
            assert_eq!(s.handle(event, t), Action::Close(reason));
            assert_eq!(s.deadline(), None);
            // Closed is final.
            assert_eq!(s.handle(Event::Connected, t), Action::None);
        }
    }
}
