//! The life of one viewer's session, as a state machine with time as an input.
//!
//! new → negotiating (answer sent) → connected (media flows) → closed. The I/O edge
//! (`webrtc::peer`) feeds it events from webrtc-rs and HTTP and acts on what it answers;
//! everything about *when* a session ends lives here and is tested without sockets.

use std::time::{Duration, Instant};

/// How long a viewer has, from the answer, to complete ICE and DTLS.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a connection may stay `disconnected` (no ICE traffic) before it is given up.
/// ICE may recover on its own inside this window, e.g. after a Wi-Fi roam.
pub const DISCONNECTED_GRACE: Duration = Duration::from_secs(10);

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Answer sent; waiting for ICE + DTLS.
    Negotiating {
        /// Give up at this instant.
        deadline: Instant,
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
    /// Connectivity was not regained within [`DISCONNECTED_GRACE`].
    Lost,
    /// The daemon is shutting down.
    Shutdown,
}

/// Something that happened to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
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
}

impl Session {
    /// A session whose answer has just been sent.
    pub fn new(now: Instant) -> Self {
        Session {
            state: State::Negotiating {
                deadline: now + CONNECT_TIMEOUT,
            },
            media_started: false,
        }
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
            State::Negotiating { deadline } | State::Disconnected { deadline } => Some(deadline),
            State::Connected | State::Closed(_) => None,
        }
    }

    /// Advances the state machine.
    pub fn handle(&mut self, event: Event, now: Instant) -> Action {
        if let State::Closed(_) = self.state {
            return Action::None;
        }
        let close = match event {
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
                State::Negotiating { deadline } if now >= deadline => CloseReason::ConnectTimeout,
                State::Disconnected { deadline } if now >= deadline => CloseReason::Lost,
                _ => return Action::None,
            },
        };
        self.state = State::Closed(close);
        Action::Close(close)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_starts_media_once() {
        let t = Instant::now();
        let mut s = Session::new(t);
        assert_eq!(s.handle(Event::Connected, t), Action::StartMedia);
        assert_eq!(s.handle(Event::Disconnected, t), Action::None);
        assert_eq!(s.handle(Event::Connected, t), Action::None);
        assert_eq!(s.state(), State::Connected);
    }

    #[test]
    fn viewer_that_never_connects_times_out() {
        let t = Instant::now();
        let mut s = Session::new(t);
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
    fn disconnected_viewer_gets_a_grace_period() {
        let t = Instant::now();
        let mut s = Session::new(t);
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
            let mut s = Session::new(t);
            s.handle(Event::Connected, t);
            assert_eq!(s.handle(event, t), Action::Close(reason));
            assert_eq!(s.deadline(), None);
            // Closed is final.
            assert_eq!(s.handle(Event::Connected, t), Action::None);
        }
    }
}
