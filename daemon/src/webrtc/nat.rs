//! Our host candidates as viewers must see them: on `webrtc.port`, at `webrtc.nat_ips`.
//!
//! - **Port**: webrtc-rs announces the port of the socket (and TCP listener) it bound for
//!   the connection, which onaird closes at once: its traffic goes through the one port
//!   ([`super::port`], [`super::tcp`]). So every host candidate, UDP and passive TCP, is
//!   announced on the port's number. Active TCP candidates go: onaird never dials out.
//! - **NAT**: a device behind a 1:1 NAT or a port forward (a home router, QEMU's user
//!   network) binds its private address, but viewers must send to the public one. webrtc-rs
//!   0.21 keeps `SettingEngine::with_nat_1to1_ips` but its socket layer never applies it, so
//!   every host candidate is announced at each NAT address of its family instead (the
//!   forward keeps the port). Connectivity checks then arrive through the NAT at the port,
//!   and ICE learns the viewer's address from them.

use std::net::IpAddr;

use rtc::ice::candidate::candidate_host::CandidateHostConfig;
use rtc::ice::candidate::{CandidateConfig, CandidateType, unmarshal_candidate};
use rtc::ice::tcp_type::TcpType;
use rtc::sdp::description::common::Attribute;
use rtc::sdp::description::session::SessionDescription;

/// The candidates to announce instead of `candidate`: a host candidate on `port`, once per
/// NAT address of its family (or at its own address when none fits); none for an active
/// TCP one; anything else as it is.
fn announced(candidate: &str, nat_ips: &[IpAddr], port: u16) -> Vec<String> {
    let Ok(parsed) = unmarshal_candidate(candidate) else {
        return vec![candidate.to_owned()];
    };
    let Ok(bound) = parsed.address().parse::<IpAddr>() else {
        return vec![candidate.to_owned()];
    };
    if parsed.candidate_type() != CandidateType::Host {
        return vec![candidate.to_owned()];
    }
    if parsed.tcp_type() == TcpType::Active {
        return vec![];
    }
    let nat: Vec<IpAddr> = nat_ips
        .iter()
        .copied()
        .filter(|ip| ip.is_ipv4() == bound.is_ipv4())
        .collect();
    let rewritten: Vec<String> = if nat.is_empty() {
        host(&parsed, bound, port, 0, String::new())
            .into_iter()
            .collect()
    } else {
        nat.iter()
            .enumerate()
            .filter_map(|(i, ip)| host(&parsed, *ip, port, i as u32, i.to_string()))
            .collect()
    };
    if rewritten.is_empty() {
        vec![candidate.to_owned()]
    } else {
        rewritten
    }
}

/// `parsed` (a host candidate) at `ip` and `port`; its priority lowered by `rank`, its
/// foundation extended by `suffix`.
fn host(
    parsed: &rtc::ice::candidate::Candidate,
    ip: IpAddr,
    port: u16,
    rank: u32,
    suffix: String,
) -> Option<String> {
    let config = CandidateHostConfig {
        base_config: CandidateConfig {
            network: parsed.network_type().network_short(),
            address: ip.to_string(),
            port,
            component: parsed.component(),
            priority: parsed.priority().saturating_sub(rank),
            foundation: format!("{}{suffix}", parsed.foundation()),
            ..Default::default()
        },
        tcp_type: parsed.tcp_type(),
    };
    config.new_candidate_host().ok().map(|c| c.marshal())
}

/// Rewrites the host candidates of an SDP (our answer or offer) for `port` and `nat_ips`.
pub fn announce(sdp: &mut SessionDescription, nat_ips: &[IpAddr], port: u16) {
    for media in &mut sdp.media_descriptions {
        let mut attributes = Vec::with_capacity(media.attributes.len());
        for attribute in media.attributes.drain(..) {
            match (&*attribute.key, &attribute.value) {
                ("candidate", Some(value)) => {
                    attributes.extend(announced(value, nat_ips, port).into_iter().map(|value| {
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
        a=candidate:1 1 udp 2130706431 10.0.2.15 50000 typ host\r\n\
        a=candidate:2 1 udp 1694498815 198.51.100.9 61000 typ srflx raddr 10.0.2.15 rport 50000\r\n\
        a=candidate:3 1 udp 2130706430 fd00::15 50000 typ host\r\n\
        a=candidate:4 1 tcp 2124414975 10.0.2.15 41000 typ host tcptype passive\r\n\
        a=candidate:4 1 tcp 2128609279 10.0.2.15 9 typ host tcptype active\r\n\
        a=end-of-candidates\r\n";

    fn candidates(nat_ips: &[IpAddr]) -> Vec<String> {
        let mut sdp = SessionDescription::unmarshal(&mut std::io::Cursor::new(ANSWER)).unwrap();
        announce(&mut sdp, nat_ips, 8190);
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
        assert!(!got.iter().any(|c| c.contains("10.0.2.15 50000 typ host")));
        assert!(
            got[3].contains(" tcp ") && got[3].contains(" 127.0.0.1 8190 typ host tcptype passive"),
            "{got:?}"
        );
    }

    #[test]
    fn active_tcp_candidates_go_as_onaird_never_dials() {
        let got = candidates(&[]);
        assert!(!got.iter().any(|c| c.contains("tcptype active")), "{got:?}");
        assert!(
            got.iter()
                .any(|c| c.contains(" 10.0.2.15 8190 typ host tcptype passive"))
        );
    }

    #[test]
    fn every_nat_address_gets_a_candidate_and_without_nat_only_the_port_changes() {
        let two = candidates(&[
            "203.0.113.7".parse().unwrap(),
            "203.0.113.8".parse().unwrap(),
        ]);
        assert!(two.iter().any(|c| c.contains(" 203.0.113.7 8190 typ host")));
        assert!(two.iter().any(|c| c.contains(" 203.0.113.8 8190 typ host")));
        let none = candidates(&[]);
        assert!(none[0].contains(" 10.0.2.15 8190 typ host"), "{none:?}");
        assert!(none[1].contains("198.51.100.9 61000 typ srflx"), "{none:?}");
    }
}
