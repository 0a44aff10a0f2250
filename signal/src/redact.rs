//! URLs that may hold secrets (a stream key in an ingest URL's path, a token in its query,
//! credentials before the host), shown where anyone may read them: logs, and what
//! `/api/status` tells a viewer. What stays is what tells two services apart: the scheme, the
//! host and the port; the rest becomes a short hash, the same for the same URL, so that two
//! log lines can still be matched without showing it.

use sha2::{Digest, Sha256};

/// `url` as `scheme://host:port/…#1a2b3c4d` (the part after the host hashed); a URL with
/// nothing after the host, and without credentials, stays as it is.
pub fn url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let secret_free = host.len() == authority.len() && matches!(path, "" | "/");
    let shown = match scheme {
        "" => host.to_owned(),
        scheme => format!("{scheme}://{host}"),
    };
    if secret_free {
        return format!("{shown}{path}");
    }
    let digest = Sha256::digest(url.as_bytes());
    let tag: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{shown}/…#{tag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_follows_the_host_is_hashed() {
        let shown = url("https://sfu.example/whip/SECRETKEY");
        assert!(shown.starts_with("https://sfu.example/…#"), "{shown}");
        assert!(!shown.contains("SECRETKEY"));
        assert_eq!(shown, url("https://sfu.example/whip/SECRETKEY"), "stable");
        assert_ne!(shown, url("https://sfu.example/whip/OTHERKEY"));
        let query = url("wss://signal.example:8443/ws?token=SECRET");
        assert!(query.starts_with("wss://signal.example:8443/…#"), "{query}");
        assert!(!query.contains("SECRET"));
        let credentials = url("https://user:SECRET@sfu.example");
        assert!(
            credentials.starts_with("https://sfu.example/…#"),
            "{credentials}"
        );
        assert!(!credentials.contains("SECRET"));
    }

    #[test]
    fn a_url_with_nothing_after_the_host_stays() {
        assert_eq!(url("ws://127.0.0.1:8443"), "ws://127.0.0.1:8443");
        assert_eq!(url("wss://signal.example/"), "wss://signal.example/");
        assert_eq!(url("[::1]:80"), "[::1]:80");
    }
}
