//! The HTTP side of WHIP (RFC 9725): POST the offer, follow redirects, read the answer, the
//! session's `Location` and the ICE servers in `Link` headers; DELETE the session.
//!
//! Blocking (ureq), so each call runs on tokio's blocking pool; every call ends within
//! [`TIMEOUT`] per request, and bodies are read up to [`MAX_BODY`].

use std::time::{Duration, SystemTime};

use onair_config::IceServer;
use onair_signal::redact;
use url::Url;

/// How long one request may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Redirects followed for one POST.
pub const MAX_REDIRECTS: usize = 5;
/// Largest answer (or error body) read.
const MAX_BODY: u64 = 64 * 1024;
/// How much of an error body goes into the log and status.
const REASON_CHARS: usize = 200;

/// A published session, as the endpoint created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The session's URL (`Location`, resolved), for DELETE.
    pub resource: Url,
    /// The answer SDP.
    pub answer: String,
    /// The ICE servers the endpoint named (`Link: <…>; rel="ice-server"`).
    pub ice_servers: Vec<IceServer>,
}

/// Why a POST did not create a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// 401 or 403: the token is wrong or missing.
    #[error("HTTP {status}: the endpoint refused the token (whip.token){}", reason(.body))]
    Unauthorized { status: u16, body: String },
    /// 429 or 503, or any other status with `Retry-After`: come back later.
    #[error("HTTP {status}: busy, asked to retry in {} s{}", .after.as_secs(), reason(.body))]
    RetryAfter {
        status: u16,
        after: Duration,
        body: String,
    },
    /// Any other status that is not 201.
    #[error("HTTP {status}{}", reason(.body))]
    Status { status: u16, body: String },
    /// No HTTP answer: DNS, connection refused, a timeout, TLS.
    #[error("{0}")]
    Network(String),
    /// 201 but unusable: no `Location`, no SDP, a redirect loop or one to plain HTTP.
    #[error("{0}")]
    Protocol(String),
}

fn reason(body: &str) -> String {
    let text: String = body.trim().chars().take(REASON_CHARS).collect();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// One WHIP endpoint and its token.
#[derive(Clone)]
pub struct Endpoint {
    url: Url,
    token: Option<String>,
    /// Hosts besides the URL's own origin the token may go to (`whip.allow_redirect_hosts`).
    token_hosts: Vec<String>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Endpoint")
            .field("url", &self.url.as_str())
            .finish()
    }
}

impl Endpoint {
    /// The endpoint at `url` (`whip.url`, validated as `http(s)://host…`), sending `token` to
    /// its origin and to `token_hosts`.
    pub fn new(
        url: &str,
        token: Option<String>,
        token_hosts: &[String],
    ) -> Result<Self, url::ParseError> {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            // Followed here: ureq would turn a 307 POST into a GET without its body.
            .max_redirects(0)
            .build()
            .into();
        Ok(Endpoint {
            url: Url::parse(url)?,
            token,
            token_hosts: token_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            agent,
        })
    }

    /// The endpoint's URL (the token is never in it; its path may hold a stream key).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The endpoint's URL as logs show it ([`onair_signal::redact::url`]).
    pub fn shown(&self) -> String {
        onair_signal::redact::url(self.url.as_str())
    }

    /// The token, if `to` may have it: the configured URL's own origin (scheme, host and
    /// port), or a host of `whip.allow_redirect_hosts` over the same scheme.
    fn token_for(&self, to: &Url) -> Option<&str> {
        let same_origin = to.origin() == self.url.origin();
        let allowed = to.scheme() == self.url.scheme()
            && to
                .host_str()
                .is_some_and(|host| self.token_hosts.iter().any(|h| *h == host));
        self.token.as_deref().filter(|_| same_origin || allowed)
    }

    /// POSTs `offer`, following up to [`MAX_REDIRECTS`] 307/308 redirects (never from
    /// `https` to `http`, which would show the token to the network).
    pub fn publish(&self, offer: &str) -> Result<Created, Refused> {
        let mut url = self.url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self
                .agent
                .post(url.as_str())
                .header("Content-Type", "application/sdp")
                .header("Accept", "application/sdp");
            match self.token_for(&url) {
                Some(token) => {
                    request = request.header("Authorization", format!("Bearer {token}"));
                }
                None if self.token.is_some() => tracing::info!(
                    "whip: redirected to {}, which is not whip.url's origin nor in \
                     whip.allow_redirect_hosts: posting without the token",
                    onair_signal::redact::url(url.as_str())
                ),
                None => {}
            }
            let mut response = request
                .send(offer.as_bytes())
                .map_err(|err| Refused::Network(err.to_string()))?;
            let status = response.status().as_u16();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            match status {
                307 | 308 => {
                    let location = header("location").ok_or_else(|| {
                        Refused::Protocol(format!("HTTP {status} without a Location"))
                    })?;
                    url = redirect(&url, &location)?;
                    continue;
                }
                201 => {}
                _ => {
                    let retry_after = header("retry-after").and_then(|v| retry_after(&v));
                    let body = read_body(&mut response);
                    return Err(refusal(status, retry_after, body));
                }
            }
            let location = header("location")
                .ok_or_else(|| Refused::Protocol("201 Created without a Location".into()))?;
            let resource = url.join(&location).map_err(|err| {
                Refused::Protocol(format!("Location {}: {err}", redact::url(&location)))
            })?;
            let links: Vec<String> = response
                .headers()
                .get_all("link")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_owned)
                .collect();
            let ice_servers =
                onair_signal::ice_http::parse_ice_server_links(links.iter().map(String::as_str));
            let answer = read_body(&mut response);
            if !answer.starts_with("v=0") {
                return Err(Refused::Protocol(format!(
                    "201 Created, but the body is no SDP answer{}",
                    reason(&answer)
                )));
            }
            return Ok(Created {
                resource,
                answer,
                ice_servers,
            });
        }
        Err(Refused::Protocol(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// DELETEs a published session; the HTTP status, or why there was none.
    pub fn delete(&self, resource: &Url) -> Result<u16, String> {
        let mut request = self.agent.delete(resource.as_str());
        if let Some(token) = self.token_for(resource) {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        request
            .call()
            .map(|response| response.status().as_u16())
            .map_err(|err| err.to_string())
    }
}

/// Where a redirect from `from` to `location` goes, refusing `https` → `http`.
fn redirect(from: &Url, location: &str) -> Result<Url, Refused> {
    let to = from.join(location).map_err(|err| {
        Refused::Protocol(format!("redirect to {}: {err}", redact::url(location)))
    })?;
    if from.scheme() == "https" && to.scheme() != "https" {
        return Err(Refused::Protocol(format!(
            "refusing a redirect from https to {} (it would send the token unencrypted)",
            redact::url(to.as_str())
        )));
    }
    Ok(to)
}

fn refusal(status: u16, retry_after: Option<Duration>, body: String) -> Refused {
    match (status, retry_after) {
        (401 | 403, _) => Refused::Unauthorized { status, body },
        (_, Some(after)) => Refused::RetryAfter {
            status,
            after,
            body,
        },
        (429 | 503, None) => Refused::RetryAfter {
            status,
            after: Duration::ZERO,
            body,
        },
        _ => Refused::Status { status, body },
    }
}

/// `Retry-After`: delay seconds, or an HTTP date.
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

fn read_body(response: &mut ureq::http::Response<ureq::Body>) -> String {
    response
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_goes_to_the_configured_origin_and_the_allowed_hosts_only() {
        let endpoint = Endpoint::new(
            "https://sfu.example/whip/KEY",
            Some("t0ken".into()),
            &["Edge.SFU.example".into()],
        )
        .unwrap();
        let to = |url: &str| endpoint.token_for(&Url::parse(url).unwrap());
        assert_eq!(to("https://sfu.example/whip/other"), Some("t0ken"));
        assert_eq!(to("https://sfu.example:443/resource/1"), Some("t0ken"));
        assert_eq!(to("https://edge.sfu.example/whip/KEY"), Some("t0ken"));
        assert_eq!(to("https://evil.example/whip/KEY"), None);
        assert_eq!(
            to("https://sfu.example:8443/whip/KEY"),
            None,
            "another port"
        );
        assert_eq!(
            to("http://edge.sfu.example/whip/KEY"),
            None,
            "another scheme"
        );
        assert_eq!(to("https://sfu.example.evil.example/"), None);
    }

    #[test]
    fn statuses_become_refusals_a_person_can_act_on() {
        let unauthorized = refusal(401, None, "bad token".into());
        assert_eq!(
            unauthorized.to_string(),
            "HTTP 401: the endpoint refused the token (whip.token): bad token"
        );
        assert!(matches!(
            refusal(429, Some(Duration::from_secs(7)), String::new()),
            Refused::RetryAfter { after, .. } if after == Duration::from_secs(7)
        ));
        assert!(matches!(
            refusal(503, None, String::new()),
            Refused::RetryAfter {
                after: Duration::ZERO,
                ..
            }
        ));
        assert!(matches!(
            refusal(500, None, String::new()),
            Refused::Status { status: 500, .. }
        ));
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(retry_after(" 12 "), Some(Duration::from_secs(12)));
        let later = SystemTime::now() + Duration::from_secs(120);
        let date = httpdate::fmt_http_date(later);
        let wait = retry_after(&date).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn redirects_resolve_and_never_downgrade() {
        let from = Url::parse("https://sfu.example/whip/cam").unwrap();
        assert_eq!(
            redirect(&from, "/whip/edge2/cam").unwrap().as_str(),
            "https://sfu.example/whip/edge2/cam"
        );
        assert!(redirect(&from, "http://sfu.example/whip/cam").is_err());
        let plain = Url::parse("http://sfu.example/whip").unwrap();
        assert!(redirect(&plain, "https://sfu.example/whip").is_ok());
    }
}
