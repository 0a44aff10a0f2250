//! Our host candidates as viewers must see them: at `webrtc.nat_ips`.
//!
//! A device behind a 1:1 NAT or a port forward (a home router, QEMU's user network) binds
//! its private address, but viewers must send to the public one. The connection's ICE agent
//! keeps its candidates at the bound addresses (datagrams arrive there), and the SDP we send
//! announces every host candidate, UDP and passive TCP, at each NAT address of its family
//! instead (the forward keeps the port). Connectivity checks then arrive through the NAT at
//! the port, and ICE learns the viewer's address from them.

use std::net::IpAddr;

use rtc::ice::candidate::candidate_host::CandidateHostConfig;
use rtc::ice::candidate::{CandidateConfig, CandidateType, unmarshal_candidate};
use rtc::sdp::description::common::Attribute;
use rtc::sdp::description::session::SessionDescription;

/// The candidates to announce instead of `candidate`: a host candidate once per NAT address
/// of its family (or as it is when none fits); anything else as it is.
fn announced(candidate: &str, nat_ips: &[IpAddr]) -> Vec<String> {
    let Ok(parsed) = unmarshal_candidate(candidate) else {
        return vec![candidate.to_owned()];
    };
    let Ok(bound) = parsed.address().parse::<IpAddr>() else {
        return vec![candidate.to_owned()];
    };
    if parsed.candidate_type() != CandidateType::Host {
        return vec![candidate.to_owned()];
    }
    let rewritten: Vec<String> = nat_ips
        .iter()
        .filter(|ip| ip.is_ipv4() == bound.is_ipv4())
        .enumerate()
        .filter_map(|(i, ip)| host(&parsed, *ip, i as u32, i.to_string()))
        .collect();
    if rewritten.is_empty() {
        vec![candidate.to_owned()]
    } else {
        rewritten
    }
}

/// `parsed` (a host candidate) at `ip`; its priority lowered by `rank`, its foundation
/// extended by `suffix`.
fn host(
    parsed: &rtc::ice::candidate::Candidate,
    ip: IpAddr,
    rank: u32,
    suffix: String,
) -> Option<String> {
    let config = CandidateHostConfig {
        base_config: CandidateConfig {
            network: parsed.network_type().network_short(),
            address: ip.to_string(),
            port: parsed.port(),
            component: parsed.component(),
            priority: parsed.priority().saturating_sub(rank),
            foundation: format!("{}{suffix}", parsed.foundation()),
            ..Default::default()
        },
        tcp_type: parsed.tcp_type(),
    };
    config.new_candidate_host().ok().map(|c| c.marshal())
}

/// Rewrites the host candidates of an SDP (our answer or offer) for `nat_ips`.
pub fn announce(sdp: &mut SessionDescription, nat_ips: &[IpAddr]) {
    for media in &mut sdp.media_descriptions {
        let mut attributes = Vec::with_capacity(media.attributes.len());
        for attribute in media.attributes.drain(..) {
            match (&*attribute.key, &attribute.value) {
                ("candidate", Some(value)) => {
                    attributes.extend(announced(value, nat_ips).into_iter().map(|value| {
                        Attribute {
                            key: "candidate".into(),
                            value: Some(value),
                        }
                    }))
                }
                _ => attributes.push(attribute),
            }
        }
        media.attributes = attributes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 106\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
        a=candidate:1 1 udp 2130706431 10.0.2.15 8190 typ host\r\n\
        a=candidate:2 1 udp 1694498815 198.51.100.9 61000 typ srflx raddr 10.0.2.15 rport 8190\r\n\
        a=candidate:3 1 udp 2130706430 fd00::15 8190 typ host\r\n\
        a=candidate:4 1 tcp 2124414975 10.0.2.15 8190 typ host tcptype passive\r\n\
        a=end-of-candidates\r\n";

    fn candidates(nat_ips: &[IpAddr]) -> Vec<String> {
        let mut sdp = SessionDescription::unmarshal(&mut std::io::Cursor::new(ANSWER)).unwrap();
        announce(&mut sdp, nat_ips);
        let text = sdp.marshal();
        text.lines()
            .filter(|l| l.starts_with("a=candidate:"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn host_candidates_are_announced_at_the_nat_address_of_their_family() {
        let got = candidates(&["127.0.0.1".parse().unwrap()]);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[0].contains(" 127.0.0.1 8190 typ host"), "{got:?}");
        assert!(
            got[1].contains("198.51.100.9 61000 typ srflx"),
            "srflx untouched: {got:?}"
        );
        assert!(
            got[2].contains(" fd00::15 8190 typ host"),
            "no IPv6 NAT address: kept: {got:?}"
        );
        assert!(!got.iter().any(|c| c.contains("10.0.2.15 8190 typ host")));
        assert!(
            got[3].contains(" tcp ") && got[3].contains(" 127.0.0.1 8190 typ host tcptype passive"),
            "{got:?}"
        );
    }

    #[test]
    fn every_nat_address_gets_a_candidate_and_without_nat_nothing_changes() {
        let two = candidates(&[
            "203.0.113.7".parse().unwrap(),
            "203.0.113.8".parse().unwrap(),
        ]);
        assert!(two.iter().any(|c| c.contains(" 203.0.113.7 8190 typ host")));
        assert!(two.iter().any(|c| c.contains(" 203.0.113.8 8190 typ host")));
        let none = candidates(&[]);
        assert_eq!(none.len(), 4, "{none:?}");
        assert!(none[0].contains(" 10.0.2.15 8190 typ host"), "{none:?}");
        assert!(none[1].contains("198.51.100.9 61000 typ srflx"), "{none:?}");
    }
}
