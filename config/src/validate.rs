//! Validation rules: everything the types alone do not enforce.

use crate::path::KeyPath;
use crate::{Config, GPIO_MAX_PIN, VideoSourceSetting};

const CHANNEL_MAX_CHARS: usize = 64;
const NAME_MAX_CHARS: usize = 128;
const ICE_URL_SCHEMES: [&str; 3] = ["stun:", "turn:", "turns:"];

/// Check every rule and return every violation as (key path, message).
pub(crate) fn check(config: &Config) -> Vec<(KeyPath, String)> {
    let mut v = Violations::default();
    let root = KeyPath::default();

    let device = root.key("device");
    if let Some(message) = channel_name(&config.device.channel) {
        v.push(device.key("channel"), message);
    }
    if let Some(message) = text_length(&config.device.name, NAME_MAX_CHARS) {
        v.push(device.key("name"), message);
    }

    let video = root.key("video");
    if let VideoSourceSetting::Device(path) = &config.video.source {
        // Only reachable for configs built in code: parsing already enforces this.
        if !VideoSourceSetting::is_device_path(path) {
            v.push(
                video.key("source"),
                format!(
                    "expected \"test\", \"auto\", \"libcamera\" or a device path starting with \"/dev/\", got {:?}",
                    path.display().to_string()
                ),
            );
        }
    }
    if let Some(path) = &config.video.encoder_device
        && !VideoSourceSetting::is_device_path(path)
    {
        v.push(
            video.key("encoder_device"),
            format!(
                "expected a device path starting with \"/dev/\", got {:?}",
                path.display().to_string()
            ),
        );
    }
    // Only libcamera reads it; other sources ignore it (so the example file, uncommented as a
    // whole, stays valid).
    if let Some(camera) = &config.video.camera
        && (camera.trim().is_empty()
            || camera.chars().count() > 256
            || camera.chars().any(char::is_control))
    {
        v.push(
            video.key("camera"),
            "expected libcamera's id of the camera or its index (\"0\"), 1 to 256 characters without control characters".to_owned(),
        );
    }
    let libcamera = video.key("libcamera");
    let controls = &config.video.libcamera;
    if ![0, 90, 180, 270].contains(&controls.rotation) {
        v.push(
            libcamera.key("rotation"),
            format!("must be 0, 90, 180 or 270, got {}", controls.rotation),
        );
    }
    if let Some(crate::Dioptres(d)) = controls.lens_position
        && !(0.0..=32.0).contains(&d)
    {
        v.push(
            libcamera.key("lens_position"),
            format!("must be between 0 and 32 dioptres, got {d}"),
        );
    }
    if let Some(us) = controls.exposure_us {
        v.in_range(libcamera.key("exposure_us"), us, 1, 10_000_000);
    }
    v.even_in_range(video.key("width"), config.video.width, 16, 4096);
    v.even_in_range(video.key("height"), config.video.height, 16, 4096);
    v.in_range(video.key("fps"), config.video.fps, 1, 60);
    v.in_range(
        video.key("bitrate_kbps"),
        config.video.bitrate_kbps,
        100,
        50_000,
    );
    v.in_range(
        video.key("keyframe_interval_ms"),
        config.video.keyframe_interval_ms,
        200,
        60_000,
    );
    v.in_range(video.key("layers"), config.video.layers, 1, 2);

    let audio = root.key("audio");
    if config.audio.source.is_empty() {
        v.push(audio.key("source"), "must not be empty".to_owned());
    }
    v.in_range(audio.key("bitrate_kbps"), config.audio.bitrate_kbps, 6, 510);

    let record = root.key("record");
    v.in_range(
        record.key("segment_seconds"),
        config.record.segment_seconds,
        2,
        3600,
    );
    if let Err(message) = crate::parse_age(&config.record.max_age) {
        v.push(record.key("max_age"), message);
    }

    let webrtc = root.key("webrtc");
    ice_servers(
        &mut v,
        webrtc.key("ice_servers"),
        &config.webrtc.ice_servers,
    );
    if let Some(range) = config.webrtc.udp_port_range {
        v.push(
            webrtc.key("udp_port_range"),
            format!(
                "is gone: every viewer now shares one UDP port, webrtc.port (default {}); \
                 replace udp_port_range = [{}, {}] with e.g. port = {}",
                crate::DEFAULT_WEBRTC_PORT,
                range.min,
                range.max,
                range.min
            ),
        );
    }

    let signaling = root.key("signaling");
    if let Some(url) = &config.signaling.url
        && let Some(message) = websocket_url(url)
    {
        v.push(signaling.key("url"), message);
    }
    if config.signaling.token.as_deref() == Some("") {
        v.push(signaling.key("token"), "must not be empty".to_owned());
    }

    let whip = root.key("whip");
    if let Some(url) = &config.whip.url
        && let Some(message) = http_url(url)
    {
        v.push(whip.key("url"), message);
    }
    if let Some(token) = &config.whip.token
        && (token.is_empty() || token.chars().any(|c| c.is_control() || c == ' '))
    {
        v.push(
            whip.key("token"),
            "must be one word of printable characters (it is sent as a Bearer token)".into(),
        );
    }
    for (i, host) in config.whip.allow_redirect_hosts.iter().enumerate() {
        if let Some(message) = host_name(host) {
            v.push(whip.key("allow_redirect_hosts").index(i), message);
        }
    }

    let http = root.key("http");
    for (i, host) in config.http.hostnames.iter().enumerate() {
        if let Some(message) = host_name(host) {
            v.push(http.key("hostnames").index(i), message);
        }
    }
    for (i, origin) in config.http.cors_origins.iter().enumerate() {
        if let Some(message) = web_origin(origin) {
            v.push(http.key("cors_origins").index(i), message);
        }
    }
    match (&config.http.tls_cert, &config.http.tls_key) {
        (Some(_), None) => v.push(http.key("tls_key"), "needed with tls_cert".into()),
        (None, Some(_)) => v.push(http.key("tls_cert"), "needed with tls_key".into()),
        _ => {}
    }

    let access = root.key("access");
    for (key, token) in [
        ("viewer_token", &config.access.viewer_token),
        ("operator_token", &config.access.operator_token),
    ] {
        if let Some(message) = token.as_deref().and_then(access_token) {
            v.push(access.key(key), message);
        }
    }
    if let (Some(viewer), Some(operator)) =
        (&config.access.viewer_token, &config.access.operator_token)
        && viewer == operator
    {
        v.push(
            access.key("operator_token"),
            "must differ from viewer_token (viewers would be operators)".into(),
        );
    }

    let gpio = root.key("gpio");
    let mut used: Vec<(&str, u8)> = Vec::new();
    for (key, pin) in config.gpio.pins() {
        if !v.in_range(gpio.key(key), u32::from(pin), 0, u32::from(GPIO_MAX_PIN)) {
            continue;
        }
        if let Some((other, _)) = used.iter().find(|(_, p)| *p == pin) {
            v.push(
                gpio.key(key),
                format!("pin {pin} is already used by gpio.{other}"),
            );
        }
        used.push((key, pin));
    }

    v.0
}

/// `[[…ice_servers]]` tables at `at`: each lists stun:/turn:/turns: URLs with a host, and
/// TURN ones have a username and a credential.
pub fn ice_servers(v: &mut Violations, at: KeyPath, servers: &[crate::IceServer]) {
    for (i, server) in servers.iter().enumerate() {
        let server_path = at.index(i);
        let urls_path = server_path.key("urls");
        if server.urls.is_empty() {
            v.push(
                urls_path.clone(),
                "must list at least one URL (stun:, turn: or turns:)".to_owned(),
            );
        }
        for (j, url) in server.urls.iter().enumerate() {
            match ICE_URL_SCHEMES.iter().find(|s| url.starts_with(*s)) {
                None => v.push(
                    urls_path.index(j),
                    format!("must start with \"stun:\", \"turn:\" or \"turns:\", got {url:?}"),
                ),
                Some(scheme) if url.len() == scheme.len() => {
                    v.push(urls_path.index(j), format!("no host after {scheme:?}"))
                }
                Some(_) => {}
            }
        }
        let is_turn = server.urls.iter().any(|u| u.starts_with("turn"));
        if is_turn && (server.username.is_none() || server.credential.is_none()) {
            v.push(
                server_path,
                "TURN servers need both username and credential".to_owned(),
            );
        }
    }
}

/// A message if `url` is not a `ws://` or `wss://` URL with a host.
fn websocket_url(url: &str) -> Option<String> {
    url_with_host(url, ["ws://", "wss://"])
}

/// A message if `url` is not an `http://` or `https://` URL with a host.
fn http_url(url: &str) -> Option<String> {
    url_with_host(url, ["http://", "https://"])
}

/// A message if `url` does not start with one of `schemes`, has no host, or has spaces or
/// control characters.
fn url_with_host(url: &str, schemes: [&str; 2]) -> Option<String> {
    // The URL is not repeated: its path or query may be a key, and the message is logged.
    let Some(rest) = schemes.iter().find_map(|s| url.strip_prefix(s)) else {
        let found = match url.split_once("://") {
            Some((scheme, _)) => format!(", not \"{}://\"", scheme.escape_debug()),
            None => String::new(),
        };
        return Some(format!(
            "must start with \"{}\" or \"{}\"{found}",
            schemes[0], schemes[1]
        ));
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Some("has no host".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must not contain spaces or control characters".into());
    }
    None
}

/// A message if `host` is not a bare host name or address (no scheme, port or path).
fn host_name(host: &str) -> Option<String> {
    let bracketed = host.starts_with('[') && host.ends_with(']');
    let bad = |c: char| "/?#@ \\".contains(c) || c.is_control() || (c == ':' && !bracketed);
    (host.is_empty() || host.contains(bad)).then(|| {
        format!("must be a host name or address without a scheme, port or path, got {host:?}")
    })
}

/// A message if `origin` is not a web origin: `http://` or `https://`, a host, an optional
/// port, and nothing else (browsers send exactly that in `Origin`).
fn web_origin(origin: &str) -> Option<String> {
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    let problem = match rest {
        None => "must start with \"http://\" or \"https://\"",
        Some("") => "no host",
        Some(host) if host.contains(['/', '?', '#', ' ']) => {
            "must be scheme, host and port only, without a path (e.g. \"https://example.com\")"
        }
        Some(_) => return None,
    };
    Some(format!("{problem}, got {origin:?}"))
}

/// Shortest and longest access token.
const TOKEN_CHARS: std::ops::RangeInclusive<usize> = 16..=128;

/// A message if `token` is too short, too long, or has a character that would need escaping
/// in a URL.
pub fn access_token(token: &str) -> Option<String> {
    let len = token.chars().count();
    if !TOKEN_CHARS.contains(&len) {
        return Some(format!(
            "must be {} to {} characters, got {len}",
            TOKEN_CHARS.start(),
            TOKEN_CHARS.end()
        ));
    }
    token
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')))
        .map(|c| format!("invalid character {c:?} (allowed: A-Z a-z 0-9 - . _ ~)"))
}

/// A channel name's problem: empty, too long, or a character that does not belong in a URL
/// path segment.
pub fn channel_name(channel: &str) -> Option<String> {
    if let Some(message) = text_length(channel, CHANNEL_MAX_CHARS) {
        return Some(message);
    }
    channel
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        .map(|c| format!("invalid character {c:?} (allowed: A-Z a-z 0-9 _ . -)"))
}

/// A message if `text` is empty or longer than `max` characters.
fn text_length(text: &str, max: usize) -> Option<String> {
    let chars = text.chars().count();
    if chars == 0 {
        Some("must not be empty".to_owned())
    } else if chars > max {
        Some(format!("must be at most {max} characters, got {chars}"))
    } else {
        None
    }
}

#[derive(Default)]
pub(crate) struct Violations(pub(crate) Vec<(KeyPath, String)>);

impl Violations {
    pub(crate) fn push(&mut self, path: KeyPath, message: String) {
        self.0.push((path, message));
    }

    pub(crate) fn in_range(&mut self, path: KeyPath, value: u32, min: u32, max: u32) -> bool {
        if (min..=max).contains(&value) {
            true
        } else {
            self.push(
                path,
                format!("must be between {min} and {max}, got {value}"),
            );
            false
        }
    }

    fn even_in_range(&mut self, path: KeyPath, value: u32, min: u32, max: u32) {
        if self.in_range(path.clone(), value, min, max) && !value.is_multiple_of(2) {
            self.push(path, format!("must be even, got {value}"));
        }
    }
}
