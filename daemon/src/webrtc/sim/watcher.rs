//! A viewer of a simulation: str0m (a sans-IO WebRTC stack no one here wrote) receiving
//! onaird's video and audio, asking for a key frame (PLI) while it cannot decode, as a
//! browser does, and writing down every picture it could have decoded and when.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, KeyframeRequestKind, MediaData, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, Event, Input, Output, Rtc};

use super::link::Datagram;
use super::source::Stamp;

/// How often a viewer that cannot decode asks again.
const ASK_AGAIN: Duration = Duration::from_millis(500);
/// How long a picture waits for a packet before it (or one before it) was lost for good.
/// str0m's default, 2 s, holds even a key frame behind an older gap; a browser decodes a
/// key frame as soon as it is whole, and waits for resends a round trip or two.
const GIVE_UP_AFTER: Duration = Duration::from_millis(500);

/// A picture the viewer could decode.
#[derive(Debug, Clone, Copy)]
pub struct Shown {
    /// When its last packet arrived.
    pub at: Instant,
    pub stamp: Stamp,
}

/// Everything the viewer saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub connected: Option<Instant>,
    pub shown: Vec<Shown>,
    /// Whole pictures that could not be decoded (their predecessor was missing).
    pub undecodable: u64,
    pub audio_frames: u64,
    pub keyframes_asked: u64,
}

pub struct Watcher {
    rtc: Rtc,
    addr: SocketAddr,
    pending: Option<SdpPendingOffer>,
    video: Option<Mid>,
    /// The last picture decoded: a picture is decodable if it is an IDR or follows this
    /// one on its layer.
    last: Option<Stamp>,
    last_ask: Option<Instant>,
    timeout: Instant,
    pub outbox: Vec<Datagram>,
    pub seen: Seen,
}

impl Watcher {
    /// A viewer at `addr` (sending TWCC feedback if `twcc`), and its offer.
    pub fn new(now: Instant, addr: SocketAddr, twcc: bool) -> (Watcher, String) {
        let mut extensions = ExtensionMap::standard();
        if !twcc {
            extensions = ExtensionMap::empty();
            extensions.set(2, Extension::AbsoluteSendTime);
            extensions.set(4, Extension::RtpMid);
        }
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_h264(true)
            .enable_opus(true, false)
            .set_extension_map(extensions)
            .set_reordering_timeout_video(Some(GIVE_UP_AFTER))
            // Receiver reports every second, as browsers and aiortc send them (str0m's
            // default is 5 s while it sends no audio).
            .set_rtcp_report_interval_audio(Duration::from_secs(1))
            .build(now);
        let candidate = Candidate::host(addr, "udp").expect("a host candidate");
        rtc.add_local_candidate(candidate);
        let mut change = rtc.sdp_api();
        let video = change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = change.apply().expect("an offer");
        let mut watcher = Watcher {
            rtc,
            addr,
            pending: Some(pending),
            video: Some(video),
            last: None,
            last_ask: None,
            timeout: now,
            outbox: Vec::new(),
            seen: Seen::default(),
        };
        watcher.drain(now);
        (watcher, offer.to_sdp_string())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// onaird's answer.
    pub fn answer(&mut self, now: Instant, sdp: &str) {
        let answer = SdpAnswer::from_sdp_string(sdp).expect("onaird's answer parses");
        let pending = self.pending.take().expect("an offer was made");
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("str0m takes onaird's answer");
        self.drain(now);
        // onaird retransmits on the stream itself (no RTX), as browsers accept; str0m asks
        // for lost packets without RTX only when told to.
        if let Some(video) = self.video {
            let mut api = self.rtc.direct_api();
            let stream = api.stream_rx_by_mid(video, None);
            stream.expect("onaird's video stream").suppress_nack(false);
            self.drain(now);
        }
    }

    /// When it next wants [`Self::tick`].
    pub fn timeout(&self) -> Instant {
        self.timeout
    }

    pub fn tick(&mut self, now: Instant) {
        if self.rtc.handle_input(Input::Timeout(now)).is_ok() {
            self.drain(now);
        }
    }

    pub fn receive(&mut self, now: Instant, datagram: &Datagram) {
        let Ok(receive) = Receive::new(Protocol::Udp, datagram.from, datagram.to, &datagram.data)
        else {
            return;
        };
        if self.rtc.handle_input(Input::Receive(now, receive)).is_ok() {
            self.drain(now);
        }
    }

    fn drain(&mut self, now: Instant) {
        while self.rtc.is_alive() {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    self.timeout = at;
                    return;
                }
                Ok(Output::Transmit(t)) => self.outbox.push(Datagram {
                    from: t.source,
                    to: t.destination,
                    data: t.contents.to_vec(),
                }),
                Ok(Output::Event(Event::Connected)) => self.seen.connected = Some(now),
                Ok(Output::Event(Event::MediaData(data))) => self.media(now, data),
                Ok(Output::Event(_)) => {}
                Err(_) => return,
            }
        }
        self.timeout = now + Duration::from_secs(3600);
    }

    fn media(&mut self, now: Instant, data: MediaData) {
        if Some(data.mid) != self.video {
            self.seen.audio_frames += 1;
            return;
        }
        let decodable = Stamp::read(&data.data).filter(|stamp| {
            stamp.keyframe
                || self.last.is_some_and(|last| {
                    last.layer == stamp.layer && last.number + 1 == stamp.number
                })
        });
        match decodable {
            Some(stamp) => {
                self.last = Some(stamp);
                self.seen.shown.push(Shown { at: now, stamp });
            }
            None => {
                self.seen.undecodable += 1;
                self.last = None;
                self.ask_for_keyframe(now);
            }
        }
    }

    /// Asks for an IDR (PLI), at most every [`ASK_AGAIN`].
    fn ask_for_keyframe(&mut self, now: Instant) {
        if self.last_ask.is_some_and(|at| now - at < ASK_AGAIN) {
            return;
        }
        let Some(mut writer) = self.video.and_then(|mid| self.rtc.writer(mid)) else {
            return;
        };
        if writer
            .request_keyframe(None, KeyframeRequestKind::Pli)
            .is_ok()
        {
            self.last_ask = Some(now);
            self.seen.keyframes_asked += 1;
        }
    }
}
