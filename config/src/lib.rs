//! Configuration of the `onaird` daemon: a typed TOML schema, a default for every key, strict
//! validation, and error messages that name the file, line, column and dotted key.
//!
//! Every section and every key is optional, so an empty (or absent) file is a valid
//! configuration: [`Config::default()`] is what the daemon runs with when nothing is configured.
//! `onair.example.toml`, next to this crate's `Cargo.toml`, documents every key with its default
//! and is meant to be copied to `/etc/onair/onair.toml`.
//!
//! Loading reports as many problems as it can find in one pass, so `onaird --check-config` can
//! print them all at once:
//!
//! * TOML syntax errors (all of them the parser can recover from);
//! * unknown keys and values of the wrong type (one per key);
//! * values out of range or otherwise invalid (every rule is checked).
//!
//! Each [`ConfigError`] displays as `{origin}:{line}:{column}: {key}: {message}`, for example
//! `onair.toml:7:9: video.width: must be even, got 1279`.
//!
//! ```
//! use onair_config::{Config, VideoSourceSetting};
//!
//! let config = Config::from_toml_str("[video]\nsource = \"auto\"\nwidth = 640\nheight = 480\n", "<string>")?;
//! assert_eq!(config.video.source, VideoSourceSetting::Auto);
//! assert_eq!(config.video.width, 640);
//! assert_eq!(config.video.fps, 30); // not in the text: the default
//!
//! let errors = Config::from_toml_str("[video]\nwidth = 641\n", "onair.toml").unwrap_err();
//! assert_eq!(errors.to_string(), "onair.toml:2:9: video.width: must be even, got 641");
//! # Ok::<(), onair_config::ConfigErrors>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod errors;
mod parse;
mod path;
pub mod signal;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use errors::{ConfigError, ConfigErrors};
pub use signal::SignalConfig;
pub use validate::access_token as access_token_problem;
pub use validate::channel_name as channel_name_problem;

/// The whole daemon configuration. Every section may be left out of the file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[device]`: how this camera identifies itself to viewers.
    pub device: Device,
    /// `[video]`: which camera to capture and how to encode it.
    pub video: Video,
    /// `[audio]`: the optional audio track.
    pub audio: Audio,
    /// `[http]`: the HTTP server carrying the viewer page and WebRTC signalling.
    pub http: Http,
    /// `[webrtc]`: ICE servers, ports and addresses used for the media connections.
    pub webrtc: WebRtc,
    /// `[gpio]`: on-air LED, status LED and privacy button on a Raspberry Pi's header.
    pub gpio: Gpio,
    /// `[signaling]`: the signalling service this camera registers its channel with.
    pub signaling: Signaling,
    /// `[access]`: who may watch and who may operate the camera.
    pub access: Access,
    /// `[record]`: recording to disk, with retention.
    pub record: Record,
    /// `[whip]`: publishing the stream once to a media server (an SFU) over WHIP.
    pub whip: Whip,
}

/// `[whip]`: onaird publishes its stream once to a WHIP endpoint (RFC 9725: Janus behind a
/// WHIP front, LiveKit, MediaMTX, a CDN's ingest), which fans it out to any number of
/// viewers; local viewers keep watching as before.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Whip {
    /// The endpoint's URL (`http://…` or `https://…`). Default `None`: no publishing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Sent as `Authorization: Bearer …` with every request to the URL's own origin (scheme,
    /// host and port), and to the hosts of `allow_redirect_hosts`. Default `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Hosts (names or addresses, without a port) a redirect may take the token to, besides
    /// the URL's own. Default empty: a redirect elsewhere is followed without the token.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_redirect_hosts: Vec<String>,
}

/// `[record]`: the stream recorded to disk as fragmented MP4 segments (H.264 and Opus, as
/// sent: nothing is encoded again), the oldest deleted first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Record {
    /// Record. Default `false`.
    pub enabled: bool,
    /// Where segments go. Default `None`: `recordings` in the state directory
    /// (`$STATE_DIRECTORY`, which systemd sets to `/var/lib/onair`; else `/var/lib/onair`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// A segment is closed at the first key frame this many seconds after it began, 2 to
    /// 3600. Default 60.
    pub segment_seconds: u32,
    /// Segments older than this are deleted: a number and a unit, `s`, `m`, `h` or `d`
    /// (e.g. `"36h"`, `"7d"`), or `"0"` for no age limit. Default `"7d"`.
    pub max_age: String,
    /// The segments together stay under this many bytes (the oldest go first); 0 for no
    /// limit. Default 0.
    pub max_bytes: u64,
    /// Recording keeps at least this many megabytes (10^6 bytes) free on its file system,
    /// deleting the oldest segments, and pauses when only the newest is left. Default 500.
    pub min_free_mb: u64,
}

impl Default for Record {
    fn default() -> Self {
        Record {
            enabled: false,
            dir: None,
            segment_seconds: 60,
            max_age: "7d".to_owned(),
            max_bytes: 0,
            min_free_mb: 500,
        }
    }
}

impl Record {
    /// `max_age` as a duration; `None` for no limit (or a value validation rejects).
    pub fn max_age(&self) -> Option<std::time::Duration> {
        parse_age(&self.max_age).ok().flatten()
    }
}

/// A retention age: `"0"` is none, else digits and one of `s`, `m`, `h`, `d`.
pub(crate) fn parse_age(text: &str) -> Result<Option<std::time::Duration>, String> {
    if text == "0" {
        return Ok(None);
    }
    let unit = text.chars().last().unwrap_or(' ');
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => {
            return Err(format!(
                "expected e.g. \"7d\", \"36h\", \"90m\" or \"0\", got {text:?}"
            ));
        }
    };
    let number: u64 = text[..text.len() - 1]
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("expected a whole number before {unit:?}, got {text:?}"))?;
    Ok(Some(std::time::Duration::from_secs(
        number.saturating_mul(seconds),
    )))
}

/// `[access]`: tokens that viewers and operators present (`Authorization: Bearer …`, or
/// `?token=…` in a URL). With no viewer token, anyone who reaches the HTTP port may watch.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Access {
    /// The token viewers need for the page, WHEP, `/ws`, and `/api/*`. 16 to 128 characters
    /// of `A-Z a-z 0-9 - . _ ~` (it goes into URLs as it is). Default `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viewer_token: Option<String>,
    /// The token for everything a viewer may do plus what operators do (talkback, privacy,
    /// recordings). Same characters as `viewer_token`. Default `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_token: Option<String>,
    /// A file holding the tokens not set above (TOML: `viewer_token`, `operator_token`). If it
    /// does not exist, onaird makes it with new random tokens on its first start, readable by
    /// its owner only. Default `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

/// `[signaling]`: where the camera registers its channel so viewers can join it by name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Signaling {
    /// WebSocket URL of the signalling service (`ws://…` or `wss://…`; onair-signal, or
    /// GStreamer's `gst-webrtc-signalling-server`). The camera connects out to it, so it works
    /// behind NAT. Default `None`: the service runs inside onaird, on its HTTP port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// This camera's token for the service (onair-signal checks it against the channel).
    /// Default `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `[device]`: identity of this camera.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Device {
    /// Channel name viewers use to reach this camera (it appears in URLs, so it is limited to
    /// 1 to 64 characters of `A-Z a-z 0-9 _ . -`). Default `"onair"`.
    pub channel: String,
    /// Human-readable name shown to viewers, 1 to 128 characters. Default `"onair camera"`.
    pub name: String,
}

impl Default for Device {
    fn default() -> Self {
        Self {
            channel: "onair".to_owned(),
            name: "onair camera".to_owned(),
        }
    }
}

/// `[video]`: capture and encoding of the video track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Video {
    /// Where frames come from: `"test"` (a generated test pattern, so the daemon works without a
    /// camera), `"auto"` (the first usable V4L2 camera), a device path such as `"/dev/video0"`,
    /// or `"libcamera"` (a camera through libcamera: Raspberry Pi camera modules and other
    /// cameras behind an ISP; needs Debian's libcamera0.0.3 or libcamera0.4). Default `"test"`.
    pub source: VideoSourceSetting,
    /// With `source = "libcamera"`: which camera, by libcamera's id (as `onair-camera --list`
    /// shows it, e.g. `"/base/soc/i2c0mux/i2c@1/imx708@1a"`) or by its index in libcamera's
    /// list (`"0"`, `"1"`). Unset: the first camera. Other sources ignore it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub camera: Option<String>,
    /// Who encodes the H.264: `"auto"` (a V4L2 memory-to-memory H.264 encoder where the board
    /// has one, such as the Raspberry Pi's bcm2835-codec, otherwise openh264), `"v4l2m2m"` (that
    /// encoder, `encoder_device` or the first found; openh264 if there is none), `"openh264"`
    /// (onair, in software, from the camera's raw or MJPEG pictures) or `"passthrough"` (the
    /// camera itself: its H.264 is sent as it comes, which costs no CPU but means a viewer that
    /// joins or loses a packet waits for the camera's next key frame, as nobody can force
    /// one). Default `"auto"`.
    pub encoder: VideoEncoder,
    /// The V4L2 memory-to-memory encoder's device node for `encoder = "v4l2m2m"` or `"auto"`,
    /// a path starting with `/dev/` (e.g. `"/dev/video11"`); unset: the first device that
    /// encodes H.264.
    pub encoder_device: Option<PathBuf>,
    /// Frame width in pixels; even (the encoder works on 2x2 chroma blocks), 16 to 4096.
    /// Default 1280.
    pub width: u32,
    /// Frame height in pixels; even, 16 to 4096. Default 720.
    pub height: u32,
    /// Frames per second asked of the source and the encoder, 1 to 60. Default 30.
    pub fps: u32,
    /// Target encoder bitrate in kbit/s, 100 to 50000. Default 2000.
    pub bitrate_kbps: u32,
    /// Longest time between key frames in milliseconds, 200 to 60000. A new viewer waits up to
    /// this long for a first picture (unless it asks for a key frame). Default 2000.
    pub keyframe_interval_ms: u32,
    /// Quality layers, 1 or 2. With 2 (the default), a viewer whose link cannot carry the
    /// stream gets a second one at half the width and height and a fifth of the bitrate
    /// (at least 100 kb/s), encoded only while someone watches it. A passthrough camera's
    /// stream has one layer whatever this says.
    pub layers: u32,
    /// `[video.libcamera]`: how a libcamera camera is set up (`source = "libcamera"`).
    pub libcamera: LibcameraControls,
}

/// `[video.libcamera]`: what a libcamera camera is asked for. A control the camera does not
/// have (a fixed-focus lens has no autofocus; HDR needs libcamera 0.2 or later and a sensor
/// that has it) is logged once at start, not an error. Other sources ignore this table.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LibcameraControls {
    /// Rotation in degrees, 0 or 180 (90 and 270 where the pipeline can transpose). Default 0.
    pub rotation: u32,
    /// Mirror left to right. Default false.
    pub hflip: bool,
    /// Mirror top to bottom. Default false.
    pub vflip: bool,
    /// Autofocus (`AfMode`): `"manual"` (with `lens_position`), `"auto"` (focus once) or
    /// `"continuous"`. Unset: the camera's default.
    pub autofocus: Option<Autofocus>,
    /// With `autofocus = "manual"`: the lens position in dioptres (1 / distance in metres;
    /// 0 = infinity), 0 to 32.
    pub lens_position: Option<Dioptres>,
    /// Exposure time in microseconds (`ExposureTime`, automatic exposure off), 1 to 10000000.
    /// Unset: automatic.
    pub exposure_us: Option<u32>,
    /// White balance (`AwbMode`): `"auto"`, `"incandescent"`, `"tungsten"`, `"fluorescent"`,
    /// `"indoor"`, `"daylight"` or `"cloudy"`. Unset: the camera's default.
    pub white_balance: Option<WhiteBalance>,
    /// HDR (`HdrMode`): `"off"`, `"single"` (single-exposure), `"multi"` (multi-exposure) or
    /// `"night"`. Unset: the camera's default.
    pub hdr: Option<Hdr>,
}

/// `video.libcamera.autofocus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Autofocus {
    /// The lens stays at `lens_position`.
    Manual,
    /// Focus once, at start.
    Auto,
    /// Keep focusing.
    Continuous,
}

/// `video.libcamera.white_balance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhiteBalance {
    #[allow(missing_docs)]
    Auto,
    #[allow(missing_docs)]
    Incandescent,
    #[allow(missing_docs)]
    Tungsten,
    #[allow(missing_docs)]
    Fluorescent,
    #[allow(missing_docs)]
    Indoor,
    #[allow(missing_docs)]
    Daylight,
    #[allow(missing_docs)]
    Cloudy,
}

/// `video.libcamera.hdr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hdr {
    #[allow(missing_docs)]
    Off,
    /// Single-exposure HDR.
    Single,
    /// Multi-exposure HDR.
    Multi,
    /// Night mode.
    Night,
}

/// A lens position in dioptres. Validation refuses anything outside 0 to 32 (NaN included),
/// so equality is total.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Dioptres(pub f32);

impl Eq for Dioptres {}

impl Default for Video {
    fn default() -> Self {
        Self {
            source: VideoSourceSetting::Test,
            camera: None,
            encoder: VideoEncoder::Auto,
            encoder_device: None,
            width: 1280,
            height: 720,
            fps: 30,
            bitrate_kbps: 2000,
            keyframe_interval_ms: 2000,
            layers: 2,
            libcamera: LibcameraControls::default(),
        }
    }
}

/// Who encodes the video (`video.encoder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoEncoder {
    /// A V4L2 memory-to-memory H.264 encoder where the board has one, openh264 elsewhere.
    #[default]
    Auto,
    /// onair encodes the camera's pictures with openh264: constrained baseline, key frames
    /// on demand.
    Openh264,
    /// A V4L2 memory-to-memory H.264 encoder (the Raspberry Pi's bcm2835-codec): the same
    /// stream as openh264 (constrained baseline, key frames on demand) for a fraction of the
    /// CPU. Falls back to openh264 if there is none, or if it fails.
    V4l2m2m,
    /// The camera delivers H.264 and onair forwards it unchanged; with `source = "test"` the
    /// test pattern is encoded the way such a camera would (fixed key-frame period).
    Passthrough,
}

/// Where video frames come from (`video.source`), written in TOML as a string.
///
/// Parsed with [`FromStr`] (also used for command-line overrides) and printed with
/// [`Display`](fmt::Display) in the same spelling, so the two round-trip.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum VideoSourceSetting {
    /// `"test"`: a generated test pattern; needs no hardware.
    #[default]
    Test,
    /// `"auto"`: the first camera found that can deliver the configured format.
    Auto,
    /// `"libcamera"`: a camera through libcamera (which one: `video.camera`).
    Libcamera,
    /// A V4L2 device node, written as a path starting with `/dev/` (`"/dev/video0"`,
    /// `"/dev/v4l/by-id/usb-..."`).
    Device(PathBuf),
}

impl VideoSourceSetting {
    /// Whether `path` is acceptable as [`VideoSourceSetting::Device`]: it starts with `/dev/`
    /// and names something below it.
    pub(crate) fn is_device_path(path: &Path) -> bool {
        path.as_os_str()
            .as_encoded_bytes()
            .strip_prefix(b"/dev/")
            .is_some_and(|rest| !rest.is_empty())
    }
}

/// Error returned when a string is not a valid [`VideoSourceSetting`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseVideoSourceError {
    input: String,
}

impl fmt::Display for ParseVideoSourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "expected \"test\", \"auto\", \"libcamera\" or a device path starting with \"/dev/\", got {:?}",
            self.input
        )
    }
}

impl std::error::Error for ParseVideoSourceError {}

impl FromStr for VideoSourceSetting {
    type Err = ParseVideoSourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "test" => Ok(Self::Test),
            "auto" => Ok(Self::Auto),
            "libcamera" => Ok(Self::Libcamera),
            _ if Self::is_device_path(Path::new(s)) => Ok(Self::Device(PathBuf::from(s))),
            _ => Err(ParseVideoSourceError {
                input: s.to_owned(),
            }),
        }
    }
}

impl fmt::Display for VideoSourceSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Test => f.write_str("test"),
            Self::Auto => f.write_str("auto"),
            Self::Libcamera => f.write_str("libcamera"),
            Self::Device(path) => write!(f, "{}", path.display()),
        }
    }
}

impl Serialize for VideoSourceSetting {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for VideoSourceSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `[audio]`: the audio track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Audio {
    /// Whether to send an audio track at all. Default `true`.
    pub enabled: bool,
    /// Where sound comes from: `"test"` (a 440 Hz tone, needs no hardware) or an ALSA device
    /// name such as `"default"`, `"hw:1,0"` or `"plughw:CARD=Device"`. Must not be empty.
    /// Default `"test"`.
    pub source: String,
    /// Target Opus bitrate in kbit/s, 6 to 510 (the range Opus supports). Default 64.
    pub bitrate_kbps: u32,
    /// Whether the daemon refuses to start without its microphone. Default `false`: a
    /// missing microphone turns audio off with a warning, and the camera still broadcasts.
    pub required: bool,
}

impl Default for Audio {
    fn default() -> Self {
        Self {
            enabled: true,
            source: "test".to_owned(),
            bitrate_kbps: 64,
            required: false,
        }
    }
}

/// `[http]`: the HTTP server (viewer page and WebRTC signalling).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http {
    /// Address and port to listen on, e.g. `"0.0.0.0:8080"`, `"[::]:8080"` or
    /// `"127.0.0.1:0"` (port 0 picks a free port). Default `"0.0.0.0:8080"`.
    pub listen: SocketAddr,
    /// Web origins (`"https://example.com"`) whose pages may use the API from a browser
    /// (CORS). With a viewer token set, pages of any origin may (the token guards the
    /// stream); without one, only these. Default none.
    pub cors_origins: Vec<String>,
    /// Host names the device answers to besides its addresses, `localhost`, its own host
    /// name alone, under `.local` and under the DNS domains of `/etc/resolv.conf` (a request
    /// naming another host gets `421`, which is what keeps a DNS-rebinding page out). E.g.
    /// `["camera.example.com"]` behind a reverse proxy or a DNS name of your own. Default
    /// none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// PEM certificate chain; with `tls_key`, the server speaks HTTPS only. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080),
            cors_origins: Vec::new(),
            hostnames: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `[webrtc]`: how media connections are established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebRtc {
    /// STUN/TURN servers offered to ICE (`[[webrtc.ice_servers]]` tables). Default none: only
    /// host candidates, enough on a LAN.
    pub ice_servers: Vec<IceServer>,
    /// The one UDP port every viewer's media goes through (ICE, DTLS, SRTP, RTCP), on every
    /// address of `bind_ips`, and the TCP port of the same number for ICE-TCP. Default
    /// [`DEFAULT_WEBRTC_PORT`]; 0 = any free port (free for both).
    pub port: u16,
    /// Gone: every viewer now shares `port`. Still read, so that a config that has it gets
    /// an error naming the replacement rather than "unknown field".
    #[serde(skip_serializing)]
    pub udp_port_range: Option<PortRange>,
    /// Public addresses (1:1 NAT) announced in ICE candidates in place of the host's own.
    /// Default none.
    pub nat_ips: Vec<IpAddr>,
    /// Local addresses to gather host candidates on (e.g. `["127.0.0.1"]` in tests).
    /// Default none, meaning every interface.
    pub bind_ips: Vec<IpAddr>,
}

/// One STUN or TURN server (`[[webrtc.ice_servers]]`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IceServer {
    /// Server URLs, at least one, each starting with `stun:`, `turn:` or `turns:`
    /// (e.g. `"stun:stun.example.com:3478"`, `"turn:turn.example.com:3478?transport=udp"`).
    pub urls: Vec<String>,
    /// User name for TURN servers (required when a URL is `turn:` or `turns:`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password for TURN servers (required when a URL is `turn:` or `turns:`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `[gpio]`: indicator LEDs and a privacy button wired to a Raspberry Pi's GPIO header.
///
/// Pins are BCM GPIO numbers (`GPIO17` is 17, physical pin 11), 0 to 27, each used once. With
/// no pin set (the default) the daemon does not touch GPIO at all.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gpio {
    /// LED lit while at least one viewer watches. Default `None`: no on-air LED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_air_led: Option<u8>,
    /// LED showing health: steady on when all is well, blink codes otherwise.
    /// Default `None`: no status LED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_led: Option<u8>,
    /// Push button between the pin and ground (the internal pull-up is enabled); each press
    /// toggles privacy (black picture, silence). Default `None`: no button.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privacy_button: Option<u8>,
    /// LEDs wired from 3.3 V to the pin (lit when the pin is low) rather than from the pin to
    /// ground. Default `false`.
    pub active_low: bool,
}

impl Gpio {
    /// Whether any pin is configured, i.e. whether the daemon should open GPIO at all.
    pub fn enabled(&self) -> bool {
        self.on_air_led.is_some() || self.status_led.is_some() || self.privacy_button.is_some()
    }

    /// The configured pins with their key names, in file order.
    pub fn pins(&self) -> impl Iterator<Item = (&'static str, u8)> {
        [
            ("on_air_led", self.on_air_led),
            ("status_led", self.status_led),
            ("privacy_button", self.privacy_button),
        ]
        .into_iter()
        .filter_map(|(key, pin)| pin.map(|pin| (key, pin)))
    }
}

/// `webrtc.port`'s default: next to MediaMTX's 8189 and far from go2rtc's 8555, so that
/// onair runs beside either.
pub const DEFAULT_WEBRTC_PORT: u16 = 8190;

impl Default for WebRtc {
    fn default() -> Self {
        WebRtc {
            ice_servers: Vec::new(),
            port: DEFAULT_WEBRTC_PORT,
            udp_port_range: None,
            nat_ips: Vec::new(),
            bind_ips: Vec::new(),
        }
    }
}

/// Highest BCM GPIO number on the 40-pin header of every Raspberry Pi since the B+.
pub const GPIO_MAX_PIN: u8 = 27;

/// An inclusive range of UDP ports, written in TOML as `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// Lowest port, at least 1.
    pub min: u16,
    /// Highest port, at least `min`.
    pub max: u16,
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        [self.min, self.max].serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let ports = Vec::<u16>::deserialize(deserializer)?;
        match ports[..] {
            [min, max] => Ok(Self { min, max }),
            _ => Err(serde::de::Error::custom(format_args!(
                "expected two ports [min, max], got {} value{}",
                ports.len(),
                if ports.len() == 1 { "" } else { "s" }
            ))),
        }
    }
}

impl Config {
    /// Parse and validate TOML text. `origin` names the source in messages (a file path, or
    /// `"<string>"`). Keys missing from the text take their defaults.
    ///
    /// On failure every problem found is returned, sorted by position.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
        parse::from_toml_str(text, origin, validate::check)
    }

    /// Read and parse a file; a read failure is a [`ConfigErrors`] with one error naming the
    /// path.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        load_file(path, Self::from_toml_str)
    }

    /// Validate an already-built config (used after command-line overrides). The errors carry
    /// no origin and no line.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        without_position(validate::check(self))
    }
}

/// Reads `path` as UTF-8 text and hands it to `parse` with the path as origin.
fn load_file<T>(
    path: &Path,
    parse: impl Fn(&str, &str) -> Result<T, ConfigErrors>,
) -> Result<T, ConfigErrors> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| {
        ConfigErrors(vec![ConfigError {
            origin: origin.clone(),
            line: None,
            column: None,
            key: String::new(),
            message: format!("cannot read file: {error}"),
        }])
    })?;
    match std::str::from_utf8(&bytes) {
        Ok(text) => parse(text, &origin),
        Err(error) => {
            // Report where the bad byte is; the valid prefix is enough to count lines.
            let valid = std::str::from_utf8(&bytes[..error.valid_up_to()]).unwrap_or("");
            let (line, column) = errors::LineIndex::new(valid).position(valid.len());
            Err(ConfigErrors(vec![ConfigError {
                origin,
                line: Some(line),
                column: Some(column),
                key: String::new(),
                message: "file is not valid UTF-8".to_owned(),
            }]))
        }
    }
}

/// Violations as errors without origin or line (for configs built in code).
fn without_position(violations: Vec<(path::KeyPath, String)>) -> Result<(), ConfigErrors> {
    let errors: Vec<ConfigError> = violations
        .into_iter()
        .map(|(key, message)| ConfigError {
            origin: String::new(),
            line: None,
            column: None,
            key: key.to_string(),
            message,
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}
