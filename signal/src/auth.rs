//! Who may publish which channel, and who may watch.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use onair_config::SignalConfig;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The rules from `[auth]` and `[[channels]]`.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    device_key: Option<String>,
    channel_tokens: HashMap<String, String>,
    viewer_tokens: Vec<String>,
}

impl Policy {
    /// The policy a configuration describes.
    pub fn new(config: &SignalConfig) -> Self {
        Policy {
            device_key: config.auth.device_key.clone(),
            channel_tokens: config
                .channels
                .iter()
                .map(|c| (c.name.clone(), c.token.clone()))
                .collect(),
            viewer_tokens: config.auth.viewer_tokens.clone(),
        }
    }

    /// Anyone may publish any free channel and watch any channel (the embedded service of a
    /// camera that has no signaling URL).
    pub fn open() -> Self {
        Policy::default()
    }

    /// Only the bearer of `token` may publish, and only `channel`; anyone may watch. The
    /// service built into a camera: nobody else registers a channel on its port, or takes
    /// the camera's own.
    pub fn one_camera(channel: &str, token: String) -> Self {
        Policy {
            device_key: None,
            channel_tokens: HashMap::from([(channel.to_owned(), token)]),
            viewer_tokens: Vec::new(),
        }
    }

    /// Whether producers must present a device token.
    pub fn devices_need_tokens(&self) -> bool {
        self.device_key.is_some() || !self.channel_tokens.is_empty()
    }

    /// Whether `token` proves its bearer is `channel`'s camera. Without device tokens
    /// configured, nothing can be proven: `false`.
    pub fn is_device_of(&self, token: Option<&str>, channel: &str) -> bool {
        let Some(token) = token else {
            return false;
        };
        if let Some(expected) = self.channel_tokens.get(channel) {
            return equal(token, expected);
        }
        match &self.device_key {
            Some(key) => equal(token, &device_token(key, channel)),
            None => false,
        }
    }

    /// Whether the bearer of `token` may publish `channel`.
    pub fn may_publish(&self, token: Option<&str>, channel: &str) -> bool {
        !self.devices_need_tokens() || self.is_device_of(token, channel)
    }

    /// Whether the bearer of `token` may list channels and join them.
    pub fn may_watch(&self, token: Option<&str>) -> bool {
        self.viewer_tokens.is_empty()
            || token.is_some_and(|token| self.viewer_tokens.iter().any(|t| equal(token, t)))
    }
}

/// What a connection may turn out to be, judged by the token it presents when it connects
/// (the signalling protocol has no later way to present one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It may be a camera: devices need tokens and it presents one that is a channel's (with
    /// a device key: one that is not a viewer token, as which channel it is for is not known
    /// yet). Such connections have room of their own, so strangers never keep cameras out,
    /// and must publish their channel soon.
    Device,
    /// A viewer, or anyone where anyone may watch.
    Other,
    /// One that can do nothing: watching needs a viewer token and publishing a device token,
    /// and it presents neither.
    Refused,
}

impl Policy {
    /// See [`Admission`].
    pub fn admission(&self, token: Option<&str>) -> Admission {
        let viewer = token.is_some_and(|t| self.viewer_tokens.iter().any(|v| equal(t, v)));
        let device = token.is_some_and(|t| {
            self.devices_need_tokens()
                && (self.device_key.is_some() || self.channel_tokens.values().any(|c| equal(t, c)))
        });
        match (viewer, device) {
            (false, true) => Admission::Device,
            _ if self.may_watch(token) || !self.devices_need_tokens() => Admission::Other,
            _ => Admission::Refused,
        }
    }
}

/// The device token of `channel` under `key`: hex HMAC-SHA256 of the channel name.
pub fn device_token(key: &str, channel: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(channel.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Compares secrets in constant time.
pub fn equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> SignalConfig {
        SignalConfig::from_toml_str(text, "test").unwrap()
    }

    #[test]
    fn open_policy_lets_everyone_in() {
        let policy = Policy::open();
        assert!(policy.may_publish(None, "porch"));
        assert!(policy.may_watch(None));
        assert!(!policy.is_device_of(Some("x"), "porch"));
    }

    #[test]
    fn channel_tokens_and_the_device_key() {
        let policy = Policy::new(&config(
            "[auth]\ndevice_key = \"0123456789abcdef0123\"\n\
             [[channels]]\nname = \"porch\"\ntoken = \"porch-token-0123456\"\n",
        ));
        assert!(policy.may_publish(Some("porch-token-0123456"), "porch"));
        assert!(!policy.may_publish(Some("porch-token-0123457"), "porch"));
        assert!(!policy.may_publish(None, "porch"));
        // A channel with its own token does not take the derived one.
        let derived = device_token("0123456789abcdef0123", "porch");
        assert!(!policy.may_publish(Some(&derived), "porch"));
        let garden = device_token("0123456789abcdef0123", "garden");
        assert!(policy.may_publish(Some(&garden), "garden"));
        assert!(!policy.may_publish(Some(&garden), "garage"));
        assert!(policy.may_watch(None));
    }

    #[test]
    fn one_camera_publishes_its_channel_and_nothing_else() {
        let policy = Policy::one_camera("porch", "run-token-0123456789".into());
        assert!(policy.may_publish(Some("run-token-0123456789"), "porch"));
        assert!(policy.is_device_of(Some("run-token-0123456789"), "porch"));
        assert!(!policy.may_publish(None, "porch"));
        assert!(!policy.may_publish(Some("run-token-0123456789"), "garden"));
        assert!(!policy.may_publish(None, "garden"));
        assert!(policy.may_watch(None));
    }

    #[test]
    fn connections_are_admitted_by_what_their_token_could_make_them() {
        use Admission::*;
        let open = Policy::open();
        assert_eq!(open.admission(None), Other);
        assert_eq!(open.admission(Some("anything")), Other);
        let camera = Policy::one_camera("porch", "run-token-0123456789".into());
        assert_eq!(camera.admission(Some("run-token-0123456789")), Device);
        assert_eq!(camera.admission(Some("onaird-viewer-token")), Other);
        assert_eq!(camera.admission(None), Other);
        let closed = Policy::new(&config(
            "[auth]\nviewer_tokens = [\"viewer-token-0123456\"]\n\
             device_key = \"0123456789abcdef0123\"\n",
        ));
        assert_eq!(closed.admission(Some("viewer-token-0123456")), Other);
        assert_eq!(closed.admission(Some("some-camera's-token")), Device);
        assert_eq!(closed.admission(None), Refused);
        let listed = Policy::new(&config(
            "[auth]\nviewer_tokens = [\"viewer-token-0123456\"]\n\
             [[channels]]\nname = \"porch\"\ntoken = \"porch-token-0123456\"\n",
        ));
        assert_eq!(listed.admission(Some("porch-token-0123456")), Device);
        assert_eq!(listed.admission(Some("porch-token-0123457")), Refused);
        // Watching needs a token, publishing none: anyone may still publish.
        let viewers_only = Policy::new(&config(
            "[auth]\nviewer_tokens = [\"viewer-token-0123456\"]\n",
        ));
        assert_eq!(viewers_only.admission(None), Other);
    }

    #[test]
    fn device_token_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            device_token("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn viewer_tokens_close_the_door() {
        let policy = Policy::new(&config(
            "[auth]\nviewer_tokens = [\"viewer-token-0123456\"]\n",
        ));
        assert!(policy.may_watch(Some("viewer-token-0123456")));
        assert!(!policy.may_watch(Some("viewer-token-0123457")));
        assert!(!policy.may_watch(None));
        assert!(policy.may_publish(None, "porch"));
    }
}
