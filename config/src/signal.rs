//! Configuration of the `onair-signal` service (its own file, `onair-signal.toml`), with the
//! same rules as the daemon's: every key optional, every error with file, line and key.
//!
//! ```
//! use onair_config::SignalConfig;
//!
//! let config = SignalConfig::from_toml_str(
//!     "[[channels]]\nname = \"porch\"\ntoken = \"s3cret-porch-token\"\n",
//!     "<string>",
//! )?;
//! assert_eq!(config.channels[0].name, "porch");
//! assert_eq!(config.limits.max_sessions_per_channel, 100); // the default
//! # Ok::<(), onair_config::ConfigErrors>(())
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::path::KeyPath;
use crate::validate::{Violations, channel_name};
use crate::{ConfigErrors, parse};

/// Shortest secret accepted for tokens and the device key: 16 characters.
pub const MIN_SECRET_CHARS: usize = 16;

/// The whole `onair-signal` configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignalConfig {
    /// `[server]`: where to listen, and TLS.
    pub server: Server,
    /// `[auth]`: who may publish a channel, and who may watch.
    pub auth: Auth,
    /// `[[channels]]`: channels with their own device token.
    pub channels: Vec<ChannelSecret>,
    /// `[limits]`: protection against misbehaving or too many peers.
    pub limits: Limits,
    /// `[[webhooks]]`: URLs told about channels and viewers coming and going.
    pub webhooks: Vec<Webhook>,
    /// `[[ice_servers]]`: STUN/TURN servers handed to viewer pages (`GET /api/ice-servers`),
    /// as onaird's `webrtc.ice_servers`. Default none.
    pub ice_servers: Vec<crate::IceServer>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    /// Address and port to listen on. Default `"0.0.0.0:8443"` (the port GStreamer's
    /// signalling server uses).
    pub listen: SocketAddr,
    /// PEM certificate chain; with `tls_key`, the service speaks HTTPS and WSS. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8443),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `[auth]`.
///
/// A producer proves it may publish channel `c` with a device token: the token of `c` in
/// `[[channels]]`, or, with `device_key` set, the hex HMAC-SHA256 of `c` under that key
/// (`onair-signal token c` prints it). With neither configured anyone may publish any free
/// channel name (the service warns at start).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// Secret from which every channel's device token is derived. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_key: Option<String>,
    /// Tokens viewers must present (Bearer header or `?token=`) to list channels and join
    /// them. Default empty: viewers need no token.
    pub viewer_tokens: Vec<String>,
}

/// One `[[channels]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelSecret {
    /// Channel name, as in the camera's `device.channel`.
    pub name: String,
    /// The device token that channel's camera presents.
    pub token: String,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest WebSocket message accepted, in bytes, 1024 to 1048576; larger ones are
    /// answered with an `error` message. Default 65536 (SDP offers are a few kilobytes).
    pub max_message_bytes: u32,
    /// Viewers one channel may have at once, 1 to 10000. Default 100.
    pub max_sessions_per_channel: u32,
    /// HTTP connections served at once (WebSockets not counted), 16 to 65536; more wait
    /// until one closes. Default 1024.
    pub max_connections: u32,
    /// WebSocket connections (cameras and viewers) at once, 1 to 65536; more are answered
    /// `503`. Default 1000.
    pub max_websockets: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 65_536,
            max_sessions_per_channel: 100,
            max_connections: 1024,
            max_websockets: 1000,
        }
    }
}

/// One `[[webhooks]]` entry: events are POSTed to `url` as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Webhook {
    /// `http://` or `https://` URL.
    pub url: String,
    /// Which events to send. Default empty: all of them.
    pub events: Vec<WebhookEvent>,
}

/// What a webhook can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEvent {
    /// A camera registered its channel.
    ChannelUp,
    /// A channel's camera went away.
    ChannelDown,
    /// A viewer joined a channel.
    ViewerJoin,
    /// A viewer left a channel.
    ViewerLeave,
}

impl SignalConfig {
    /// Parses and validates TOML text; see [`crate::Config::from_toml_str`].
    pub fn from_toml_str(text: &str, origin: &str) -> Result<SignalConfig, ConfigErrors> {
        parse::from_toml_str(text, origin, check)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<SignalConfig, ConfigErrors> {
        crate::load_file(path, Self::from_toml_str)
    }

    /// Validates a config built in code.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        crate::without_position(check(self))
    }

    /// Whether producers must prove which channel they may publish.
    pub fn devices_need_tokens(&self) -> bool {
        self.auth.device_key.is_some() || !self.channels.is_empty()
    }
}

fn check(config: &SignalConfig) -> Vec<(KeyPath, String)> {
    let mut v = Violations::default();
    let root = KeyPath::default();

    let server = root.key("server");
    match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(_), None) => v.push(server.key("tls_key"), "needed with tls_cert".into()),
        (None, Some(_)) => v.push(server.key("tls_cert"), "needed with tls_key".into()),
        _ => {}
    }

    let auth = root.key("auth");
    if let Some(key) = &config.auth.device_key {
        secret(&mut v, auth.key("device_key"), key);
    }
    for (i, token) in config.auth.viewer_tokens.iter().enumerate() {
        secret(&mut v, auth.key("viewer_tokens").index(i), token);
    }

    let channels = root.key("channels");
    for (i, channel) in config.channels.iter().enumerate() {
        let at = channels.index(i);
        if let Some(message) = channel_name(&channel.name) {
            v.push(at.key("name"), message);
        } else if let Some(first) = config.channels[..i]
            .iter()
            .position(|c| c.name == channel.name)
        {
            v.push(
                at.key("name"),
                format!("channel {:?} is already in channels[{first}]", channel.name),
            );
        }
        secret(&mut v, at.key("token"), &channel.token);
    }

    let limits = root.key("limits");
    v.in_range(
        limits.key("max_message_bytes"),
        config.limits.max_message_bytes,
        1024,
        1 << 20,
    );
    v.in_range(
        limits.key("max_sessions_per_channel"),
        config.limits.max_sessions_per_channel,
        1,
        10_000,
    );
    v.in_range(
        limits.key("max_connections"),
        config.limits.max_connections,
        16,
        65_536,
    );
    v.in_range(
        limits.key("max_websockets"),
        config.limits.max_websockets,
        1,
        65_536,
    );

    crate::validate::ice_servers(&mut v, root.key("ice_servers"), &config.ice_servers);

    for (i, hook) in config.webhooks.iter().enumerate() {
        let url = &hook.url;
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        let host = url.split("://").nth(1).unwrap_or("");
        if !scheme_ok || host.is_empty() || url.chars().any(char::is_whitespace) {
            v.push(
                root.key("webhooks").index(i).key("url"),
                format!("must be an http:// or https:// URL, got {url:?}"),
            );
        }
    }
    v.0
}

/// Secrets must be long enough not to be guessed.
fn secret(v: &mut Violations, path: KeyPath, value: &str) {
    let chars = value.chars().count();
    if chars < MIN_SECRET_CHARS {
        v.push(
            path,
            format!("must be at least {MIN_SECRET_CHARS} characters, got {chars}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match SignalConfig::from_toml_str(text, "onair-signal.toml") {
            Ok(config) => panic!("accepted: {config:?}"),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn empty_file_is_the_default() {
        let config = SignalConfig::from_toml_str("", "x").unwrap();
        assert_eq!(config, SignalConfig::default());
        assert_eq!(config.server.listen.port(), 8443);
        assert!(!config.devices_need_tokens());
    }

    #[test]
    fn example_file_is_the_default() {
        let example = include_str!("../onair-signal.example.toml");
        let config = SignalConfig::from_toml_str(example, "onair-signal.example.toml").unwrap();
        assert_eq!(config, SignalConfig::default());
    }

    #[test]
    fn full_file_parses() {
        let config = SignalConfig::from_toml_str(
            r#"
[server]
listen = "127.0.0.1:9443"
tls_cert = "/etc/onair/cert.pem"
tls_key = "/etc/onair/key.pem"
[auth]
device_key = "0123456789abcdef0123"
viewer_tokens = ["viewer-token-0123456"]
[[channels]]
name = "porch"
token = "porch-token-0123456"
[limits]
max_message_bytes = 4096
max_sessions_per_channel = 5
max_connections = 64
max_websockets = 32
[[webhooks]]
url = "https://hooks.example.com/onair"
events = ["channel_up", "viewer_join"]
"#,
            "x",
        )
        .unwrap();
        assert!(config.devices_need_tokens());
        assert_eq!(config.limits.max_sessions_per_channel, 5);
        assert_eq!(
            (config.limits.max_connections, config.limits.max_websockets),
            (64, 32)
        );
        assert_eq!(
            config.webhooks[0].events,
            [WebhookEvent::ChannelUp, WebhookEvent::ViewerJoin]
        );
    }

    #[test]
    fn every_problem_is_named_with_its_line() {
        let found = errors(
            r#"[server]
tls_cert = "/c.pem"
[auth]
device_key = "short"
[[channels]]
name = "porch"
token = "porch-token-0123456"
[[channels]]
name = "porch"
token = "other-token-0123456"
[[channels]]
name = "front door"
token = "x"
[limits]
max_message_bytes = 10
[[webhooks]]
url = "ftp://x"
events = ["channel_gone"]
[[ice_servers]]
urls = ["turn:t"]
"#,
        );
        assert_eq!(
            found,
            [
                "onair-signal.toml:1:1: server.tls_key: needed with tls_cert",
                "onair-signal.toml:4:14: auth.device_key: must be at least 16 characters, got 5",
                "onair-signal.toml:9:8: channels[1].name: channel \"porch\" is already in channels[0]",
                "onair-signal.toml:12:8: channels[2].name: invalid character ' ' (allowed: A-Z a-z 0-9 _ . -)",
                "onair-signal.toml:13:9: channels[2].token: must be at least 16 characters, got 1",
                "onair-signal.toml:15:21: limits.max_message_bytes: must be between 1024 and 1048576, got 10",
                "onair-signal.toml:17:7: webhooks[0].url: must be an http:// or https:// URL, got \"ftp://x\"",
                "onair-signal.toml:18:11: webhooks[0].events[0]: unknown variant `channel_gone`, expected one of `channel_up`, `channel_down`, `viewer_join`, `viewer_leave`",
                "onair-signal.toml:19:1: ice_servers[0]: TURN servers need both username and credential",
            ]
        );
    }
}
