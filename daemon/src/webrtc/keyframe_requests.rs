//! Lets PLI and FIR from viewers reach the application.
//!
//! webrtc-rs stops inbound RTCP at the end of its interceptor chain unless an interceptor
//! marks a packet for the application. Only the encoder can answer a keyframe request, so
//! this interceptor, placed last, marks PLI and FIR and drops the rest of the RTCP (which
//! the NACK responder and report interceptors before it have already used), after counting
//! NACKs and receiver reports for `/metrics` ([`RtcpSeen`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

use super::figures::RtcpSeen;

/// Slot after every built-in interceptor (they sit at multiples of 1000 below 14000).
pub const SLOT: usize = 14_000;

/// Forwards PLI and FIR to the application; see the module docs.
#[derive(Default)]
pub struct KeyframeRequests {
    inbound: VecDeque<TaggedPacket>,
    outbound: VecDeque<TaggedPacket>,
    /// Where the viewer's RTCP is counted.
    seen: Arc<RtcpSeen>,
}

impl KeyframeRequests {
    /// Counts the viewer's RTCP in `seen` too.
    pub fn counting(seen: Arc<RtcpSeen>) -> Self {
        KeyframeRequests {
            seen,
            ..KeyframeRequests::default()
        }
    }
}

fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for packet in packets {
                self.seen.record(packet.as_ref());
            }
            let requests: Vec<_> = packets
                .iter()
                .filter(|p| is_keyframe_request(p.as_ref()))
                .cloned()
                .collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.inbound.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.inbound.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.outbound.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.outbound.pop_front()
    }
}

impl Interceptor for KeyframeRequests {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
