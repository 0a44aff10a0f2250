//! The names the device answers to and the web pages it takes requests from.
//!
//! - **Host.** A request must name the device: an IP address, `localhost`, the device's host
//!   name or that name under `.local`, or one of `[http] hostnames`; any other `Host` gets
//!   `421`. A web page whose DNS name its owner pointed at the camera (DNS rebinding) names
//!   its own host, so it reaches nothing — not even with the visitor's browser on the
//!   camera's network.
//! - **Origin.** A browser names the page a request comes from. One from a page of another
//!   site (not the camera's own origin, not in `[http] cors_origins`) is refused (`403`)
//!   unless it presents a token: browsers apply no CORS to WebSockets, so without this any
//!   page on the web could join `/ws` through a visitor's browser, or act, when no token is
//!   set. Requests without `Origin` (players, scripts) are not browsers' cross-site ones.

use std::net::IpAddr;

/// What [`Sites::check`] refused, and the status it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The `Host` is not one of the device's (`421 Misdirected Request`).
    Host(String),
    /// The `Origin` is another site's and no token came with it (`403`).
    Origin(String),
}

/// The device's own names and the origins of `[http] cors_origins`.
#[derive(Debug, Clone)]
pub struct Sites {
    /// Lower case, without a trailing dot.
    names: Vec<String>,
    /// Lower case, as `scheme://host[:port]`.
    origins: Vec<String>,
}

impl Sites {
    /// `localhost`, `own_name` (the host name, if known) under `.local` and each of the
    /// local network's DNS `domains` and alone, `hostnames` and the `cors_origins`.
    pub fn new(
        own_name: Option<&str>,
        domains: &[String],
        hostnames: &[String],
        cors_origins: &[String],
    ) -> Self {
        let mut names = vec!["localhost".to_owned()];
        if let Some(own) = own_name.map(normal).filter(|own| !own.is_empty()) {
            names.push(format!("{own}.local"));
            names.extend(
                domains
                    .iter()
                    .map(|domain| format!("{own}.{}", normal(domain))),
            );
            names.push(own);
        }
        names.extend(hostnames.iter().map(|name| normal(name)));
        let origins = cors_origins
            .iter()
            .map(|origin| origin.trim_end_matches('/').to_ascii_lowercase())
            .collect();
        Sites { names, origins }
    }

    /// [`Self::new`] with this machine's host name and the DNS domains of its network (the
    /// `search` and `domain` lines of `/etc/resolv.conf`: a home router's `lan`, `home`,
    /// `fritz.box`…).
    pub fn of_this_machine(hostnames: &[String], cors_origins: &[String]) -> Self {
        let own = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        Sites::new(
            own.as_deref(),
            &search_domains(&resolv),
            hostnames,
            cors_origins,
        )
    }

    /// Whether a request with this `Host` and `Origin` (`tokened`: it presented a token that
    /// fits) is let through.
    pub fn check(
        &self,
        host: Option<&str>,
        origin: Option<&str>,
        tokened: bool,
    ) -> Result<(), Refused> {
        if let Some(host) = host.filter(|host| !self.answers(host)) {
            return Err(Refused::Host(host.to_owned()));
        }
        match origin {
            Some(origin) if !tokened && !self.same_site(origin, host) => {
                Err(Refused::Origin(origin.to_owned()))
            }
            _ => Ok(()),
        }
    }

    /// Whether `host` (a `Host` header: a name or an address, with a port or not) names the
    /// device.
    fn answers(&self, host: &str) -> bool {
        let name = without_port(host.trim());
        let address = name
            .strip_prefix('[')
            .and_then(|v6| v6.strip_suffix(']'))
            .unwrap_or(name);
        address.parse::<IpAddr>().is_ok() || self.names.contains(&normal(name))
    }

    /// Whether `origin` is the page's own (the same host and port as the request's `host`)
    /// or one of `cors_origins`.
    fn same_site(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim().to_ascii_lowercase();
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        let own = authority
            .zip(host)
            .is_some_and(|(authority, host)| authority == host.trim().to_ascii_lowercase());
        own || self.origins.contains(&origin)
    }
}

/// The domains of `resolv.conf`'s `search` and `domain` lines.
fn search_domains(resolv: &str) -> Vec<String> {
    resolv
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            matches!(words.next(), Some("search" | "domain")).then_some(words)
        })
        .flatten()
        .filter(|domain| *domain != ".")
        .map(str::to_owned)
        .collect()
}

/// `name` in lower case without surrounding space or a trailing dot.
fn normal(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// `host` without its `:port`, if it has one (`[::1]:80` → `[::1]`, `a:80` → `a`).
fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port))
            if port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']')) =>
        {
            name
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites() -> Sites {
        Sites::new(
            Some("porchcam\n"),
            &search_domains("# router\nnameserver 192.168.1.1\nsearch fritz.box Lan.\n"),
            &["Camera.Example.com".into()],
            &["https://home.example".into()],
        )
    }

    #[test]
    fn the_device_answers_to_its_addresses_and_names_only() {
        let sites = sites();
        for host in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "192.168.1.20:8080",
            "[::1]:8080",
            "[fe80::1]",
            "::1",
            "localhost:8080",
            "LOCALHOST",
            "porchcam",
            "porchcam.local:8080",
            "porchcam.local.",
            "porchcam.fritz.box:8080",
            "porchcam.lan",
            "camera.example.com",
            "camera.example.com:443",
        ] {
            assert_eq!(sites.check(Some(host), None, false), Ok(()), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "porchcam.evil",
            "fritz.box",
            "porchcam.fritz.box.evil.example",
            "",
            "[::1",
        ] {
            assert_eq!(
                sites.check(Some(host), None, true),
                Err(Refused::Host(host.into())),
                "{host:?}"
            );
        }
        // HTTP/1.0 without a Host: nothing to go by (browsers always send one).
        assert_eq!(sites.check(None, None, false), Ok(()));
    }

    #[test]
    fn pages_of_other_sites_need_a_token_or_a_listing() {
        let sites = sites();
        let host = Some("192.168.1.20:8080");
        for own in ["http://192.168.1.20:8080", "https://192.168.1.20:8080"] {
            assert_eq!(sites.check(host, Some(own), false), Ok(()), "{own}");
        }
        assert_eq!(
            sites.check(host, Some("https://HOME.example"), false),
            Ok(())
        );
        for foreign in [
            "http://evil.example",
            "http://192.168.1.20",
            "http://192.168.1.20:8081",
            "null",
            "https://home.example:444",
        ] {
            assert_eq!(
                sites.check(host, Some(foreign), false),
                Err(Refused::Origin(foreign.into())),
                "{foreign}"
            );
            assert_eq!(sites.check(host, Some(foreign), true), Ok(()), "{foreign}");
        }
        assert_eq!(sites.check(host, None, false), Ok(()));
    }

    #[test]
    fn without_a_host_name_only_addresses_and_localhost() {
        let sites = Sites::new(None, &["lan".into()], &[], &[]);
        assert!(sites.answers("10.0.0.1"));
        assert!(sites.answers("localhost"));
        assert!(!sites.answers(".local"));
        assert!(!sites.answers("camera"));
    }
}
