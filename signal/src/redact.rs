//! URLs that may hold secrets (a stream key in an ingest URL's path, a token in its query,
//! credentials before the host), shown where anyone may read them: logs, and what
//! `/api/status` tells a viewer. What stays is what tells two services apart: the scheme, the
//! host and the port; the rest becomes a short hash, the same for the same URL, so that two
//! log lines can still be matched without showing it.

use sha2::{Digest, Sha256};

/// `url` as `scheme://host:port/…#1a2b3c4d` (the part after the host hashed); a URL with
/// nothing after the host, and without credentials, stays as it is.
pub fn url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) if is_scheme(scheme) => (scheme, rest),
        _ => ("", url),
    };
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
    // Keyed with a secret of this process's: the tag matches the log lines of one run, and
    // cannot be checked against guesses of the hidden part.
    let mut hash = Sha256::new();
    hash.update(key());
    hash.update(url.as_bytes());
    let tag: String = hash.finalize()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{shown}/…#{tag}")
}

/// RFC 3986's `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

/// 32 random bytes, made once per process.
fn key() -> &'static [u8; 32] {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        getrandom(&mut key);
        key
    })
}

/// Fills `buf` from the kernel's random source (a fixed key where there is none: the tag is
/// then only as good as an unkeyed hash).
fn getrandom(buf: &mut [u8]) {
    use std::io::Read as _;
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(buf));
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
        let scheme_less = url("sfu.example/whip/KEY?r=http://x");
        assert!(scheme_less.starts_with("sfu.example/…#"), "{scheme_less}");
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
