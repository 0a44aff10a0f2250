//! ICE over WHEP/WHIP's HTTP: the ICE servers a response offers in `Link` headers
//! (RFC 9725 §4.4), and the trickled candidates a PATCH carries (an RFC 8840 SDP fragment,
//! `application/trickle-ice-sdpfrag`, RFC 9725 §4.3).

use axum::http::HeaderValue;
use onair_config::IceServer;

/// The media type of a trickle or ICE-restart PATCH body.
pub const TRICKLE_TYPE: &str = "application/trickle-ice-sdpfrag";
/// Largest PATCH body accepted.
pub const MAX_FRAGMENT: usize = 16 * 1024;
/// Candidates one PATCH may carry.
pub const MAX_FRAGMENT_CANDIDATES: usize = 50;

/// `Link` header values for `servers`, one per URL: `<stun:…>; rel="ice-server"`, with the
/// TURN credentials as `username`, `credential` and `credential-type="password"`. A URL that
/// cannot be written inside `<…>` is left out.
pub fn ice_server_links(servers: &[IceServer]) -> Vec<HeaderValue> {
    servers
        .iter()
        .flat_map(|server| server.urls.iter().map(move |url| (server, url)))
        .filter(|(_, url)| !url.contains(['<', '>', ' ', '"', '\\']) && !url.is_empty())
        .filter_map(|(server, url)| {
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(user), Some(pass)) = (&server.username, &server.credential) {
                link += &format!(
                    "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                    quoted(user),
                    quoted(pass)
                );
            }
            HeaderValue::from_str(&link).ok()
        })
        .collect()
}

/// The ICE servers named in `Link` header values (each may hold several comma-separated
/// links, RFC 8288): those with `rel="ice-server"`, one [`IceServer`] per URL, with their
/// `username` and `credential`. Links of other relations, and what cannot be parsed, are
/// skipped.
pub fn parse_ice_server_links<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<IceServer> {
    values
        .into_iter()
        .flat_map(split_links)
        .filter_map(|link| parse_link(&link))
        .collect()
}

/// Splits one header value at the commas between links (not those inside `<…>` or quotes).
fn split_links(value: &str) -> Vec<String> {
    let (mut links, mut current) = (Vec::new(), String::new());
    let (mut in_url, mut in_quotes, mut escaped) = (false, false, false);
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' if !in_url => in_quotes = !in_quotes,
            '<' if !in_quotes => in_url = true,
            '>' if !in_quotes => in_url = false,
            ',' if !in_url && !in_quotes => {
                links.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    links.push(current);
    links
}

/// One `<url>; rel="ice-server"; username="…"; credential="…"` link.
fn parse_link(link: &str) -> Option<IceServer> {
    let link = link.trim();
    let rest = link.strip_prefix('<')?;
    let (url, params) = rest.split_once('>')?;
    let mut server = IceServer {
        urls: vec![url.trim().to_owned()],
        username: None,
        credential: None,
    };
    let mut ice_server = false;
    for param in split_params(params) {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        let value = unquoted(value.trim());
        match name.trim().to_ascii_lowercase().as_str() {
            "rel" => ice_server = value.split_whitespace().any(|r| r == "ice-server"),
            "username" => server.username = Some(value),
            "credential" => server.credential = Some(value),
            _ => {}
        }
    }
    (ice_server && !url.trim().is_empty()).then_some(server)
}

/// The `;`-separated parameters after a link's URL (not the `;` inside quotes).
fn split_params(params: &str) -> Vec<String> {
    let (mut out, mut current) = (Vec::new(), String::new());
    let (mut in_quotes, mut escaped) = (false, false);
    for c in params.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current);
    out
}

/// A parameter value, its quotes and escapes removed.
fn unquoted(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_owned();
    };
    let (mut out, mut escaped) = (String::new(), false);
    for c in inner.chars() {
        if !escaped && c == '\\' {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(c);
    }
    out
}

/// `text` as the inside of an HTTP quoted-string.
fn quoted(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// What a trickle or ICE-restart PATCH says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IceFragment {
    /// `a=ice-ufrag` and `a=ice-pwd`: the peer's credentials (new ones mean an ICE restart).
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    /// The candidates (`candidate:…`, without `a=`), each with the index of the `m=`
    /// section it came in (0 before any).
    pub candidates: Vec<(String, u16)>,
    /// `a=end-of-candidates`: the peer has gathered everything.
    pub end_of_candidates: bool,
}

impl IceFragment {
    /// Reads a fragment. Lines other than ICE's (`a=group`, `a=mid`, …) are skipped; a
    /// candidate line that is not one, too many candidates, or text that is no fragment at
    /// all is an error naming the line.
    pub fn parse(text: &str) -> Result<IceFragment, String> {
        let mut fragment = IceFragment::default();
        let mut section: Option<u16> = None;
        for (n, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end())) {
            if line.is_empty() {
                continue;
            }
            if line.as_bytes().get(1).is_none_or(|b| *b != b'=') {
                return Err(format!("line {n}: not an SDP line: {:?}", short(line)));
            }
            if line.starts_with("m=") {
                section = Some(section.map_or(0, |s| s.saturating_add(1)));
            } else if let Some(value) = line.strip_prefix("a=ice-ufrag:") {
                fragment.ufrag = Some(value.trim().to_owned());
            } else if let Some(value) = line.strip_prefix("a=ice-pwd:") {
                fragment.pwd = Some(value.trim().to_owned());
            } else if let Some(candidate) = line.strip_prefix("a=") {
                if candidate == "end-of-candidates" {
                    fragment.end_of_candidates = true;
                } else if candidate.starts_with("candidate:") {
                    if candidate.split_whitespace().count() < 8 {
                        return Err(format!("line {n}: not a candidate: {:?}", short(line)));
                    }
                    if fragment.candidates.len() == MAX_FRAGMENT_CANDIDATES {
                        return Err(format!(
                            "more than {MAX_FRAGMENT_CANDIDATES} candidates in one PATCH"
                        ));
                    }
                    fragment
                        .candidates
                        .push((candidate.to_owned(), section.unwrap_or(0)));
                }
            }
        }
        Ok(fragment)
    }
}

/// At most 60 characters of `line`, for an error message.
fn short(line: &str) -> String {
    line.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_name_each_url_and_the_turn_credentials() {
        let servers = [
            IceServer {
                urls: vec!["stun:stun.example.net".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec![
                    "turn:turn.example.net?transport=udp".into(),
                    "turns:turn.example.net:5349".into(),
                    "turn:bad>url".into(),
                ],
                username: Some("cam".into()),
                credential: Some("se\"cret".into()),
            },
        ];
        let links: Vec<String> = ice_server_links(&servers)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            links,
            [
                "<stun:stun.example.net>; rel=\"ice-server\"",
                "<turn:turn.example.net?transport=udp>; rel=\"ice-server\"; username=\"cam\"; credential=\"se\\\"cret\"; credential-type=\"password\"",
                "<turns:turn.example.net:5349>; rel=\"ice-server\"; username=\"cam\"; credential=\"se\\\"cret\"; credential-type=\"password\"",
            ]
        );
    }

    #[test]
    fn links_parse_back_into_the_servers_they_name() {
        let servers = [
            IceServer {
                urls: vec!["stun:stun.example.net".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec!["turn:turn.example.net?transport=udp".into()],
                username: Some("cam".into()),
                credential: Some("se\"c;r,et".into()),
            },
        ];
        let links = ice_server_links(&servers);
        let parsed = parse_ice_server_links(links.iter().map(|v| v.to_str().unwrap()));
        assert_eq!(parsed, servers);
    }

    #[test]
    fn several_links_in_one_value_and_other_relations() {
        let value = "<https://example.net/x>; rel=\"next\", <stun:a.example:3478>; rel=ice-server, \
                     <turn:b.example>; REL=\"ice-server\"; username=u; credential=\"p,w\"";
        let parsed = parse_ice_server_links([value, "garbage", ""]);
        let urls: Vec<&str> = parsed.iter().map(|s| s.urls[0].as_str()).collect();
        assert_eq!(urls, ["stun:a.example:3478", "turn:b.example"]);
        assert_eq!(parsed[1].username.as_deref(), Some("u"));
        assert_eq!(parsed[1].credential.as_deref(), Some("p,w"));
    }

    #[test]
    fn a_fragment_gives_its_credentials_and_candidates_by_section() {
        let text = "a=group:BUNDLE 0 1\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 102\r\n\
            a=mid:0\r\n\
            a=ice-ufrag:EsAw\r\n\
            a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
            a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n\
            a=end-of-candidates\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
            a=mid:1\r\n\
            a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host\r\n";
        let fragment = IceFragment::parse(text).unwrap();
        assert_eq!(fragment.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(fragment.pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert!(fragment.end_of_candidates);
        assert_eq!(
            fragment.candidates,
            [
                (
                    "candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0"
                        .to_owned(),
                    0
                ),
                (
                    "candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host".to_owned(),
                    1
                ),
            ]
        );
    }

    #[test]
    fn what_is_no_fragment_is_refused_with_the_line() {
        assert_eq!(
            IceFragment::parse("hello\n").unwrap_err(),
            "line 1: not an SDP line: \"hello\""
        );
        assert_eq!(
            IceFragment::parse("a=ice-ufrag:x\na=candidate:1 1 udp\n").unwrap_err(),
            "line 2: not a candidate: \"a=candidate:1 1 udp\""
        );
        let many = "a=candidate:1 1 udp 1 192.0.2.1 1 typ host\n".repeat(51);
        assert!(
            IceFragment::parse(&many)
                .unwrap_err()
                .contains("more than 50")
        );
        assert_eq!(IceFragment::parse("").unwrap(), IceFragment::default());
    }
}
