use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::*;

const EXAMPLE: &str = include_str!("../onair.example.toml");

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_toml_str(text, "onair.toml")
}

fn errors(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors.0,
    }
}

/// The errors of `text`, each rendered as a line.
fn messages(text: &str) -> Vec<String> {
    errors(text).iter().map(ToString::to_string).collect()
}

/// The single error of `text`, rendered.
fn single(text: &str) -> String {
    let all = messages(text);
    assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
    all.into_iter().next().unwrap_or_default()
}

#[test]
fn empty_text_gives_defaults() {
    let defaults = Config::default();
    assert_eq!(parse("").unwrap(), defaults);
    assert_eq!(parse("\n# only a comment\n\n").unwrap(), defaults);
    assert_eq!(
        parse("[device]\n[video]\n[audio]\n[http]\n[webrtc]\n").unwrap(),
        defaults
    );
    defaults.validate().unwrap();

    assert_eq!(defaults.device.channel, "onair");
    assert_eq!(defaults.device.name, "onair camera");
    assert_eq!(defaults.video.source, VideoSourceSetting::Test);
    assert_eq!(
        (
            defaults.video.width,
            defaults.video.height,
            defaults.video.fps
        ),
        (1280, 720, 30)
    );
    assert_eq!(defaults.video.bitrate_kbps, 2000);
    assert!(!defaults.record.enabled);
    assert_eq!(defaults.record.segment_seconds, 60);
    assert_eq!(
        defaults.record.max_age(),
        Some(std::time::Duration::from_secs(7 * 86_400))
    );
    assert_eq!(defaults.video.keyframe_interval_ms, 2000);
    assert!(defaults.audio.enabled);
    assert_eq!(defaults.audio.source, "test");
    assert_eq!(defaults.audio.bitrate_kbps, 64);
    assert_eq!(
        defaults.http.listen,
        "0.0.0.0:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(defaults.webrtc, WebRtc::default());
    assert!(defaults.webrtc.ice_servers.is_empty());
    assert_eq!(defaults.webrtc.port, 8190);
    assert_eq!(defaults.webrtc.udp_port_range, None);
    assert!(defaults.webrtc.nat_ips.is_empty() && defaults.webrtc.bind_ips.is_empty());
    assert_eq!(defaults.gpio, Gpio::default());
    assert!(!defaults.gpio.enabled(), "GPIO is off unless a pin is set");
    assert!(!defaults.gpio.active_low);
}

const FULL: &str = r#"
[device]
channel = "front-door.cam_1"
name = "Front door ✓"

[video]
source = "/dev/v4l/by-id/usb-Cam-video-index0"
camera = "1"
encoder = "passthrough"
encoder_device = "/dev/video11"
width = 640
height = 480
fps = 15
bitrate_kbps = 800
keyframe_interval_ms = 1000
layers = 1

[video.libcamera]
rotation = 180
hflip = true
vflip = true
autofocus = "manual"
lens_position = 0.5
exposure_us = 10000
white_balance = "daylight"
hdr = "night"

[audio]
enabled = false
source = "hw:1,0"
bitrate_kbps = 32
required = true

[http]
listen = "[::1]:9000"
cors_origins = ["https://home.example.com"]
hostnames = ["camera.example.com"]
tls_cert = "/etc/onair/cert.pem"
tls_key = "/etc/onair/key.pem"

[webrtc]
port = 50000
nat_ips = ["203.0.113.7", "2001:db8::7"]
bind_ips = ["127.0.0.1"]

[[webrtc.ice_servers]]
urls = ["stun:stun.example.com:3478"]

[[webrtc.ice_servers]]
urls = ["turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:5349"]
username = "onair"
credential = "secret"

[gpio]
on_air_led = 17
status_led = 27
privacy_button = 22
active_low = true

[signaling]
url = "wss://signal.example.com/ws"
token = "porch-token-0123456"

[access]
viewer_token = "viewer-token-0123456789"
operator_token = "operator-token-0123456789"
token_file = "/var/lib/onair/access.toml"

[record]
enabled = true
dir = "/media/usb/onair"
segment_seconds = 10
max_age = "36h"
max_bytes = 8000000000
min_free_mb = 200

[whip]
url = "https://sfu.example.com/whip/front-door"
token = "publish-token-0123"
allow_redirect_hosts = ["edge-1.sfu.example.com"]
"#;

fn full_config() -> Config {
    Config {
        device: Device {
            channel: "front-door.cam_1".into(),
            name: "Front door ✓".into(),
        },
        video: Video {
            source: VideoSourceSetting::Device("/dev/v4l/by-id/usb-Cam-video-index0".into()),
            camera: Some("1".into()),
            encoder: VideoEncoder::Passthrough,
            encoder_device: Some("/dev/video11".into()),
            width: 640,
            height: 480,
            fps: 15,
            bitrate_kbps: 800,
            keyframe_interval_ms: 1000,
            layers: 1,
            libcamera: LibcameraControls {
                rotation: 180,
                hflip: true,
                vflip: true,
                autofocus: Some(Autofocus::Manual),
                lens_position: Some(Dioptres(0.5)),
                exposure_us: Some(10_000),
                white_balance: Some(WhiteBalance::Daylight),
                hdr: Some(Hdr::Night),
            },
        },
        audio: Audio {
            enabled: false,
            source: "hw:1,0".into(),
            bitrate_kbps: 32,
            required: true,
        },
        http: Http {
            listen: "[::1]:9000".parse().unwrap(),
            cors_origins: vec!["https://home.example.com".into()],
            hostnames: vec!["camera.example.com".into()],
            tls_cert: Some("/etc/onair/cert.pem".into()),
            tls_key: Some("/etc/onair/key.pem".into()),
        },
        webrtc: WebRtc {
            ice_servers: vec![
                IceServer {
                    urls: vec!["stun:stun.example.com:3478".into()],
                    username: None,
                    credential: None,
                },
                IceServer {
                    urls: vec![
                        "turn:turn.example.com:3478?transport=udp".into(),
                        "turns:turn.example.com:5349".into(),
                    ],
                    username: Some("onair".into()),
                    credential: Some("secret".into()),
                },
            ],
            port: 50000,
            udp_port_range: None,
            nat_ips: vec![
                "203.0.113.7".parse().unwrap(),
                "2001:db8::7".parse().unwrap(),
            ],
            bind_ips: vec![IpAddr::from([127, 0, 0, 1])],
        },
        gpio: Gpio {
            on_air_led: Some(17),
            status_led: Some(27),
            privacy_button: Some(22),
            active_low: true,
        },
        signaling: Signaling {
            url: Some("wss://signal.example.com/ws".into()),
            token: Some("porch-token-0123456".into()),
        },
        access: Access {
            viewer_token: Some("viewer-token-0123456789".into()),
            operator_token: Some("operator-token-0123456789".into()),
            token_file: Some("/var/lib/onair/access.toml".into()),
        },
        record: Record {
            enabled: true,
            dir: Some("/media/usb/onair".into()),
            segment_seconds: 10,
            max_age: "36h".into(),
            max_bytes: 8_000_000_000,
            min_free_mb: 200,
        },
        whip: Whip {
            url: Some("https://sfu.example.com/whip/front-door".into()),
            token: Some("publish-token-0123".into()),
            allow_redirect_hosts: vec!["edge-1.sfu.example.com".into()],
        },
    }
}

#[test]
fn full_file_round_trip() {
    let config = parse(FULL).unwrap();
    assert_eq!(config, full_config());
    config.validate().unwrap();

    let text = toml::to_string(&config).unwrap();
    assert_eq!(parse(&text).unwrap(), config, "re-serialized:\n{text}");

    let text = toml::to_string(&Config::default()).unwrap();
    assert_eq!(parse(&text).unwrap(), Config::default());
}

#[test]
fn dotted_keys_and_inline_tables() {
    let config = parse("video.width = 640\naudio = { enabled = false }\n").unwrap();
    assert_eq!(config.video.width, 640);
    assert!(!config.audio.enabled);
    assert_eq!(
        single("video.width = 641\n"),
        "onair.toml:1:15: video.width: must be even, got 641"
    );
    assert_eq!(
        single("webrtc = { ice_servers = [{ urls = [\"stun:a\", \"http://b\"] }] }\n"),
        "onair.toml:1:47: webrtc.ice_servers[0].urls[1]: \
         must start with \"stun:\", \"turn:\" or \"turns:\", got \"http://b\""
    );
}

/// Each rule: (text, expected rendering of its single error).
const RULES: &[(&str, &str)] = &[
    (
        "[device]\nchannel = \"\"",
        "onair.toml:2:11: device.channel: must not be empty",
    ),
    (
        "[device]\nchannel = \"on air\"",
        "onair.toml:2:11: device.channel: invalid character ' ' (allowed: A-Z a-z 0-9 _ . -)",
    ),
    (
        "[device]\nchannel = \"caméra\"",
        "onair.toml:2:11: device.channel: invalid character 'é' (allowed: A-Z a-z 0-9 _ . -)",
    ),
    (
        "[device]\nname = \"\"",
        "onair.toml:2:8: device.name: must not be empty",
    ),
    (
        "[video]\nsource = \"video0\"",
        "onair.toml:2:10: video.source: expected \"test\", \"auto\", \"libcamera\" or a device path starting with \"/dev/\", got \"video0\"",
    ),
    (
        "[video]\nsource = \"/dev/\"",
        "onair.toml:2:10: video.source: expected \"test\", \"auto\", \"libcamera\" or a device path starting with \"/dev/\", got \"/dev/\"",
    ),
    (
        "[video]\nwidth = 1279",
        "onair.toml:2:9: video.width: must be even, got 1279",
    ),
    (
        "[video]\nwidth = 14",
        "onair.toml:2:9: video.width: must be between 16 and 4096, got 14",
    ),
    (
        "[video]\nwidth = 4098",
        "onair.toml:2:9: video.width: must be between 16 and 4096, got 4098",
    ),
    (
        "[video]\nheight = 721",
        "onair.toml:2:10: video.height: must be even, got 721",
    ),
    (
        "[video]\nheight = 0",
        "onair.toml:2:10: video.height: must be between 16 and 4096, got 0",
    ),
    (
        "[video]\nfps = 0",
        "onair.toml:2:7: video.fps: must be between 1 and 60, got 0",
    ),
    (
        "[video]\nfps = 61",
        "onair.toml:2:7: video.fps: must be between 1 and 60, got 61",
    ),
    (
        "[video]\nbitrate_kbps = 99",
        "onair.toml:2:16: video.bitrate_kbps: must be between 100 and 50000, got 99",
    ),
    (
        "[video]\nbitrate_kbps = 50001",
        "onair.toml:2:16: video.bitrate_kbps: must be between 100 and 50000, got 50001",
    ),
    (
        "[video]\nkeyframe_interval_ms = 199",
        "onair.toml:2:24: video.keyframe_interval_ms: must be between 200 and 60000, got 199",
    ),
    (
        "[video]\nkeyframe_interval_ms = 60001",
        "onair.toml:2:24: video.keyframe_interval_ms: must be between 200 and 60000, got 60001",
    ),
    (
        "[video]\nlayers = 3",
        "onair.toml:2:10: video.layers: must be between 1 and 2, got 3",
    ),
    (
        "[whip]\nurl = \"rtmp://sfu.example.com/live\"",
        "onair.toml:2:7: whip.url: must start with \"http://\" or \"https://\", not \"rtmp://\"",
    ),
    (
        "[whip]\ntoken = \"two words\"",
        "onair.toml:2:9: whip.token: must be one word of printable characters (it is sent as a Bearer token)",
    ),
    (
        "[whip]\nallow_redirect_hosts = [\"[::1]\", \"[::1]:443\"]",
        "onair.toml:2:34: whip.allow_redirect_hosts[1]: must be a host name or address without a scheme, port or path, got \"[::1]:443\"",
    ),
    (
        "[whip]\nallow_redirect_hosts = [\"https://edge.example.com\"]",
        "onair.toml:2:25: whip.allow_redirect_hosts[0]: must be a host name or address without a scheme, port or path, got \"https://edge.example.com\"",
    ),
    (
        "[record]\nsegment_seconds = 1",
        "onair.toml:2:19: record.segment_seconds: must be between 2 and 3600, got 1",
    ),
    (
        "[record]\nmax_age = \"7 days\"",
        "onair.toml:2:11: record.max_age: expected a whole number before 's', got \"7 days\"",
    ),
    (
        "[record]\nmax_age = \"week\"",
        "onair.toml:2:11: record.max_age: expected e.g. \"7d\", \"36h\", \"90m\" or \"0\", got \"week\"",
    ),
    (
        "[audio]\nsource = \"\"",
        "onair.toml:2:10: audio.source: must not be empty",
    ),
    (
        "[audio]\nbitrate_kbps = 5",
        "onair.toml:2:16: audio.bitrate_kbps: must be between 6 and 510, got 5",
    ),
    (
        "[audio]\nbitrate_kbps = 511",
        "onair.toml:2:16: audio.bitrate_kbps: must be between 6 and 510, got 511",
    ),
    (
        "[http]\nlisten = \"localhost:80\"",
        "onair.toml:2:10: http.listen: invalid socket address syntax",
    ),
    (
        "[http]\ncors_origins = [\"https://ok.example\", \"evil.example\"]",
        "onair.toml:2:39: http.cors_origins[1]: must start with \"http://\" or \"https://\", got \"evil.example\"",
    ),
    (
        "[http]\nhostnames = [\"camera.example\", \"camera.example:8080\"]",
        "onair.toml:2:32: http.hostnames[1]: must be a host name or address without a scheme, port or path, got \"camera.example:8080\"",
    ),
    (
        "[http]\ncors_origins = [\"https://ok.example/page\"]",
        "onair.toml:2:17: http.cors_origins[0]: must be scheme, host and port only, without a path (e.g. \"https://example.com\"), got \"https://ok.example/page\"",
    ),
    (
        "[http]\ntls_cert = \"/etc/onair/cert.pem\"",
        "onair.toml:1:1: http.tls_key: needed with tls_cert",
    ),
    (
        "[access]\nviewer_token = \"short\"",
        "onair.toml:2:16: access.viewer_token: must be 16 to 128 characters, got 5",
    ),
    (
        "[access]\noperator_token = \"0123456789abcdef 0\"",
        "onair.toml:2:18: access.operator_token: invalid character ' ' (allowed: A-Z a-z 0-9 - . _ ~)",
    ),
    (
        "[access]\nviewer_token = \"0123456789abcdef\"\noperator_token = \"0123456789abcdef\"",
        "onair.toml:3:18: access.operator_token: must differ from viewer_token (viewers would be operators)",
    ),
    (
        "[webrtc]\nudp_port_range = [50000, 50100]",
        "onair.toml:2:18: webrtc.udp_port_range: is gone: every viewer now shares one UDP port, webrtc.port (default 8190); replace udp_port_range = [50000, 50100] with e.g. port = 50000",
    ),
    (
        "[webrtc]\nport = 65536",
        "onair.toml:2:8: webrtc.port: invalid value: integer `65536`, expected u16",
    ),
    (
        "[webrtc]\nnat_ips = [\"1.2.3.4\", \"example.com\"]",
        "onair.toml:2:23: webrtc.nat_ips[1]: invalid IP address syntax",
    ),
    (
        "[webrtc]\nbind_ips = [\"127.0.0.300\"]",
        "onair.toml:2:13: webrtc.bind_ips[0]: invalid IP address syntax",
    ),
    (
        "[[webrtc.ice_servers]]\nurls = []",
        "onair.toml:2:8: webrtc.ice_servers[0].urls: must list at least one URL (stun:, turn: or turns:)",
    ),
    (
        "[[webrtc.ice_servers]]\nusername = \"u\"",
        "onair.toml:1:1: webrtc.ice_servers[0].urls: must list at least one URL (stun:, turn: or turns:)",
    ),
    (
        "[[webrtc.ice_servers]]\nurls = [\"http://stun.example.com\"]",
        "onair.toml:2:9: webrtc.ice_servers[0].urls[0]: must start with \"stun:\", \"turn:\" or \"turns:\", got \"http://stun.example.com\"",
    ),
    (
        "[[webrtc.ice_servers]]\nurls = [\"stun:\"]",
        "onair.toml:2:9: webrtc.ice_servers[0].urls[0]: no host after \"stun:\"",
    ),
    (
        "[[webrtc.ice_servers]]\nurls = [\"turn:t.example.com\"]\nusername = \"u\"",
        "onair.toml:1:1: webrtc.ice_servers[0]: TURN servers need both username and credential",
    ),
    (
        "[gpio]\non_air_led = 28",
        "onair.toml:2:14: gpio.on_air_led: must be between 0 and 27, got 28",
    ),
    (
        "[gpio]\nstatus_led = 40",
        "onair.toml:2:14: gpio.status_led: must be between 0 and 27, got 40",
    ),
    (
        "[gpio]\nprivacy_button = 255",
        "onair.toml:2:18: gpio.privacy_button: must be between 0 and 27, got 255",
    ),
    (
        "[gpio]\non_air_led = 17\nprivacy_button = 17",
        "onair.toml:3:18: gpio.privacy_button: pin 17 is already used by gpio.on_air_led",
    ),
    (
        "[gpio]\nstatus_led = -1",
        "onair.toml:2:14: gpio.status_led: invalid value: integer `-1`, expected u8",
    ),
    (
        "[gpio]\nbutton = 4",
        "onair.toml:2:1: gpio.button: unknown key (expected one of: on_air_led, status_led, privacy_button, active_low)",
    ),
];

#[test]
fn each_validation_rule() {
    for (text, expected) in RULES {
        assert_eq!(&single(text), expected, "for {text:?}");
    }
}

#[test]
fn validation_boundaries_are_accepted() {
    let text = r#"
        [device]
        channel = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        [video]
        source = "auto"
        width = 16
        height = 4096
        fps = 60
        bitrate_kbps = 100
        keyframe_interval_ms = 60000
        [audio]
        bitrate_kbps = 510
        [webrtc]
        port = 1
        [gpio]
        on_air_led = 0
        status_led = 27
    "#;
    let config = parse(text).unwrap();
    assert_eq!(
        config.gpio.pins().collect::<Vec<_>>(),
        [("on_air_led", 0), ("status_led", 27)]
    );
    assert!(config.gpio.enabled());
    assert_eq!(config.device.channel.len(), 64);
    assert_eq!(config.video.source, VideoSourceSetting::Auto);
    assert_eq!(config.webrtc.port, 1);

    let long_channel = format!("[device]\nchannel = \"{}\"", "a".repeat(65));
    assert_eq!(
        single(&long_channel),
        "onair.toml:2:11: device.channel: must be at most 64 characters, got 65"
    );
    // Characters, not bytes.
    assert!(parse(&format!("[device]\nname = \"{}\"", "é".repeat(128))).is_ok());
    assert_eq!(
        single(&format!("[device]\nname = \"{}\"", "é".repeat(129))),
        "onair.toml:2:8: device.name: must be at most 128 characters, got 129"
    );
}

#[test]
fn encoder_names_the_choices() {
    assert_eq!(
        single("[video]\nencoder = \"x264\"\n"),
        "onair.toml:2:11: video.encoder: unknown variant `x264`, expected one of `auto`, `openh264`, `v4l2m2m`, `passthrough`"
    );
    assert_eq!(
        single("[video]\nencoder = \"v4l2m2m\"\nencoder_device = \"video11\"\n"),
        "onair.toml:3:18: video.encoder_device: expected a device path starting with \"/dev/\", got \"video11\""
    );
    let parsed = Config::from_toml_str("[video]\nencoder = \"v4l2m2m\"\n", "t").unwrap();
    assert_eq!(parsed.video.encoder, VideoEncoder::V4l2m2m);
    assert_eq!(Config::default().video.encoder, VideoEncoder::Auto);
}

#[test]
fn unknown_key_names_key_and_line() {
    assert_eq!(
        single("# camera\n\n[video]\nwidht = 1280\n"),
        "onair.toml:4:1: video.widht: unknown key \
         (expected one of: source, camera, encoder, encoder_device, width, height, fps, bitrate_kbps, keyframe_interval_ms, layers, libcamera)"
    );
    assert_eq!(
        single("[vidoe]\nwidth = 1280\n"),
        "onair.toml:1:2: vidoe: unknown key (expected one of: device, video, audio, http, webrtc, gpio, signaling, access, record, whip)"
    );
    assert_eq!(
        single("[http]\n  \"listen address\" = \"0.0.0.0:80\"\n"),
        "onair.toml:2:3: http.\"listen address\": unknown key (expected one of: listen, cors_origins, hostnames, tls_cert, tls_key)"
    );
    assert_eq!(
        single(
            "[[webrtc.ice_servers]]\nurls = [\"stun:a\"]\n\n[[webrtc.ice_servers]]\nurls = [\"stun:b\"]\npassword = \"x\"\n"
        ),
        "onair.toml:6:1: webrtc.ice_servers[1].password: unknown key \
         (expected one of: urls, username, credential)"
    );
}

#[test]
fn wrong_type_names_key_and_line() {
    assert_eq!(
        single("[video]\nwidth = \"1280\"\n"),
        "onair.toml:2:9: video.width: invalid type: string \"1280\", expected u32"
    );
    assert_eq!(
        single("[video]\nfps = -5\n"),
        "onair.toml:2:7: video.fps: invalid value: integer `-5`, expected u32"
    );
    assert_eq!(
        single("[audio]\nenabled = \"yes\"\n"),
        "onair.toml:2:11: audio.enabled: invalid type: string \"yes\", expected a boolean"
    );
    assert_eq!(
        single("video = 5\n"),
        "onair.toml:1:9: video: invalid type: integer `5`, expected a table"
    );
    assert_eq!(
        single("[video]\nsource = 0\n"),
        "onair.toml:2:10: video.source: invalid type: integer `0`, expected a string"
    );
    // An ice server whose urls have the wrong type is not also reported as having no urls.
    assert_eq!(
        single("[[webrtc.ice_servers]]\nurls = \"stun:a\"\n"),
        "onair.toml:2:8: webrtc.ice_servers[0].urls: invalid type: string \"stun:a\", expected a sequence"
    );
}

#[test]
fn every_error_in_a_file_is_reported() {
    let text = r#"# A file with many mistakes.
[device]
channel = "has space"
colour = "red"

[video]
source = "webcam"
width = 1279
height = "720"
fps = 0
bitrate_kbps = 100
typo = 1

[audio]
bitrate_kbps = 1000

[webrtc]
udp_port_range = [2000, 1000]
nat_ips = ["1.2.3.4", "nope"]

[[webrtc.ice_servers]]
urls = ["stun:ok.example.com", "ftp://bad"]
secret = 1

[extra]
"#;
    let expected = [
        "onair.toml:3:11: device.channel: invalid character ' ' (allowed: A-Z a-z 0-9 _ . -)",
        "onair.toml:4:1: device.colour: unknown key (expected one of: channel, name)",
        "onair.toml:7:10: video.source: expected \"test\", \"auto\", \"libcamera\" or a device path starting with \"/dev/\", got \"webcam\"",
        "onair.toml:8:9: video.width: must be even, got 1279",
        "onair.toml:9:10: video.height: invalid type: string \"720\", expected u32",
        "onair.toml:10:7: video.fps: must be between 1 and 60, got 0",
        "onair.toml:12:1: video.typo: unknown key (expected one of: source, camera, encoder, encoder_device, width, height, fps, bitrate_kbps, keyframe_interval_ms, layers, libcamera)",
        "onair.toml:15:16: audio.bitrate_kbps: must be between 6 and 510, got 1000",
        "onair.toml:18:18: webrtc.udp_port_range: is gone: every viewer now shares one UDP port, webrtc.port (default 8190); replace udp_port_range = [2000, 1000] with e.g. port = 2000",
        "onair.toml:19:23: webrtc.nat_ips[1]: invalid IP address syntax",
        "onair.toml:22:32: webrtc.ice_servers[0].urls[1]: must start with \"stun:\", \"turn:\" or \"turns:\", got \"ftp://bad\"",
        "onair.toml:23:1: webrtc.ice_servers[0].secret: unknown key (expected one of: urls, username, credential)",
        "onair.toml:25:2: extra: unknown key (expected one of: device, video, audio, http, webrtc, gpio, signaling, access, record, whip)",
    ];
    assert_eq!(messages(text), expected);

    let errors = parse(text).unwrap_err();
    assert_eq!(errors.to_string(), expected.join("\n"));
    assert_eq!(errors.iter().count(), expected.len());
    assert_eq!((&errors).into_iter().count(), expected.len());
    let first = errors.into_iter().next().unwrap();
    assert_eq!(
        (
            first.origin.as_str(),
            first.line,
            first.column,
            first.key.as_str()
        ),
        ("onair.toml", Some(3), Some(11), "device.channel")
    );
}

#[test]
fn syntax_errors_have_line_and_column() {
    let all = errors("[video]\nwidth = 1280\nheight = = 720\n");
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!((all[0].line, all[0].column), (Some(3), Some(10)));
    assert_eq!(all[0].key, "");
    assert!(
        all[0].message.starts_with("TOML syntax error: "),
        "{all:#?}"
    );
    assert!(
        all[0]
            .to_string()
            .starts_with("onair.toml:3:10: TOML syntax error: "),
        "{}",
        all[0]
    );

    // Every syntax error is listed, and nothing else (the rest of the file is not checked).
    let all = errors("[video\nwidth = 1281\nfps = [1,\n");
    assert!(all.len() >= 2, "{all:#?}");
    assert!(all.iter().all(|e| e.line.is_some() && e.key.is_empty()));
    assert_eq!(all[0].line, Some(1));

    // Duplicate keys are syntax errors too.
    let all = errors("[video]\nwidth = 640\nwidth = 800\n");
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0].line, Some(3));
}

#[test]
fn load_reads_files_and_names_the_path() {
    let missing = Path::new("/nonexistent/onair/onair.toml");
    let errors = Config::load(missing).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].origin, "/nonexistent/onair/onair.toml");
    assert_eq!(errors.0[0].line, None);
    let text = errors.to_string();
    assert!(
        text.starts_with("/nonexistent/onair/onair.toml: cannot read file: "),
        "{text}"
    );

    let dir = TempDir::new("load");
    let path = dir.0.join("onair.toml");
    std::fs::write(&path, FULL).unwrap();
    assert_eq!(Config::load(&path).unwrap(), full_config());

    std::fs::write(&path, "[video]\n\nwidth = 7\n").unwrap();
    let message = Config::load(&path).unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "{}:3:9: video.width: must be between 16 and 4096, got 7",
            path.display()
        )
    );

    std::fs::write(&path, b"[device]\nname = \"caf\xe9\"\n").unwrap();
    let message = Config::load(&path).unwrap_err().to_string();
    assert_eq!(
        message,
        format!("{}:2:12: file is not valid UTF-8", path.display())
    );
}

#[test]
fn validate_reports_without_position() {
    let mut config = Config::default();
    config.validate().unwrap();
    config.video.width = 641;
    config.video.source = VideoSourceSetting::Device("video0".into());
    config.webrtc.udp_port_range = Some(PortRange { min: 0, max: 10 });
    let errors = config.validate().unwrap_err();
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "video.source: expected \"test\", \"auto\", \"libcamera\" or a device path starting with \"/dev/\", got \"video0\"",
            "video.width: must be even, got 641",
            "webrtc.udp_port_range: is gone: every viewer now shares one UDP port, webrtc.port (default 8190); replace udp_port_range = [0, 10] with e.g. port = 0",
        ]
    );
    assert!(
        errors
            .iter()
            .all(|e| e.origin.is_empty() && e.line.is_none() && e.column.is_none())
    );
}

#[test]
fn video_source_setting_parses_and_displays() {
    for (text, expected) in [
        ("test", VideoSourceSetting::Test),
        ("auto", VideoSourceSetting::Auto),
        ("libcamera", VideoSourceSetting::Libcamera),
        (
            "/dev/video0",
            VideoSourceSetting::Device(PathBuf::from("/dev/video0")),
        ),
        (
            "/dev/v4l/by-id/usb-x-video-index0",
            VideoSourceSetting::Device(PathBuf::from("/dev/v4l/by-id/usb-x-video-index0")),
        ),
    ] {
        let parsed: VideoSourceSetting = text.parse().unwrap();
        assert_eq!(parsed, expected);
        assert_eq!(parsed.to_string(), text);
    }
    for bad in [
        "",
        "Test",
        "AUTO",
        "video0",
        "/dev",
        "/dev/",
        "/devices/x",
        "dev/video0",
    ] {
        let error = bad.parse::<VideoSourceSetting>().unwrap_err();
        assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
    }
}

#[test]
fn display_leaves_out_unknown_parts() {
    let mut error = ConfigError {
        origin: "f.toml".into(),
        line: Some(3),
        column: Some(4),
        key: "a.b".into(),
        message: "bad".into(),
    };
    assert_eq!(error.to_string(), "f.toml:3:4: a.b: bad");
    error.column = None;
    assert_eq!(error.to_string(), "f.toml:3: a.b: bad");
    error.line = None;
    assert_eq!(error.to_string(), "f.toml: a.b: bad");
    error.origin.clear();
    assert_eq!(error.to_string(), "a.b: bad");
    error.key.clear();
    assert_eq!(error.to_string(), "bad");
}

/// Lines of the example that show a default: `#key = value`.
fn is_default_line(line: &str) -> bool {
    line.strip_prefix('#')
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_lowercase()))
}

/// Lines of the example that show an example: `#   key = value`, `#   [[table]]`.
fn is_example_line(line: &str) -> bool {
    line.strip_prefix("#   ")
        .is_some_and(|rest| !rest.starts_with(' '))
}

fn uncomment(text: &str, keep: impl Fn(&str) -> bool) -> String {
    text.lines()
        .map(|line| {
            if keep(line) {
                line.trim_start_matches('#').trim_start()
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every key path of `text`, array indices left out (`webrtc.ice_servers.urls`).
fn key_paths(text: &str) -> std::collections::BTreeSet<String> {
    fn walk(value: &toml::Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
        match value {
            toml::Value::Table(table) => {
                for (key, value) in table {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    out.insert(path.clone());
                    walk(value, &path, out);
                }
            }
            toml::Value::Array(array) => array.iter().for_each(|v| walk(v, prefix, out)),
            _ => {}
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk(&text.parse::<toml::Table>().unwrap().into(), "", &mut out);
    out
}

#[test]
fn example_file_shows_the_defaults() {
    // As shipped (everything commented out) and with every default uncommented.
    assert_eq!(
        Config::from_toml_str(EXAMPLE, "onair.example.toml").unwrap(),
        Config::default()
    );
    let defaults = uncomment(EXAMPLE, is_default_line);
    assert_ne!(defaults, EXAMPLE);
    assert_eq!(
        Config::from_toml_str(&defaults, "onair.example.toml").unwrap(),
        Config::default(),
        "uncommented example:\n{defaults}"
    );
}

#[test]
fn example_file_documents_every_key() {
    // Defaults and examples uncommented together give a valid file using every key.
    let everything = uncomment(EXAMPLE, |l| is_default_line(l) || is_example_line(l));
    let config = Config::from_toml_str(&everything, "onair.example.toml")
        .unwrap_or_else(|e| panic!("{e}\n{everything}"));
    assert_ne!(config, Config::default());
    let all_keys = key_paths(&toml::to_string(&full_config()).unwrap());
    assert_eq!(key_paths(&everything), all_keys);
}

/// A small deterministic generator, so the garbage test needs no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Parsing anything returns, without panicking, either a config or well-formed errors.
fn check_no_panic(text: &str) {
    if let Err(errors) = Config::from_toml_str(text, "fuzz") {
        assert!(!errors.0.is_empty());
        let lines = text.split('\n').count();
        for error in &errors {
            assert_eq!(error.origin, "fuzz");
            assert!(
                error.line.is_none_or(|l| (1..=lines).contains(&l)),
                "{error} in {text:?}"
            );
            assert!(error.column.is_none_or(|c| c >= 1));
            assert!(!error.to_string().is_empty());
        }
    }
}

#[test]
fn garbage_never_panics() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);

    // Random bytes.
    for _ in 0..300 {
        let bytes: Vec<u8> = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
        check_no_panic(&String::from_utf8_lossy(&bytes));
    }

    // Random TOML-ish token soup, which gets much further into the parser and the schema.
    const TOKENS: &[&str] = &[
        "[",
        "]",
        "[[",
        "]]",
        "=",
        " = ",
        "\n",
        ".",
        ",",
        "{",
        "}",
        "\"",
        "'",
        "#",
        "video",
        "width",
        "webrtc",
        "ice_servers",
        "urls",
        "port",
        "nat_ips",
        "device",
        "channel",
        "audio",
        "http",
        "listen",
        "source",
        "x",
        "0",
        "1280",
        "-1",
        "99999999999",
        "1e3",
        "true",
        "\"stun:a\"",
        "\"/dev/video0\"",
        "\"1.2.3.4\"",
        "[1, 2]",
        "1979-05-27",
        "é",
        "\u{0}",
        "\"\"\"",
        "\\",
        "\t",
    ];
    for _ in 0..3000 {
        let text: String = (0..rng.below(40))
            .map(|_| TOKENS[rng.below(TOKENS.len())])
            .collect();
        check_no_panic(&text);
    }

    // Mutations of real files: deleted, duplicated and replaced characters.
    let sources = [FULL.to_owned(), uncomment(EXAMPLE, is_default_line)];
    for i in 0..1500 {
        let mut chars: Vec<char> = sources[i % sources.len()].chars().collect();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(chars.len());
            match rng.below(3) {
                0 => {
                    chars.remove(at);
                }
                1 => chars.insert(at, chars[at]),
                _ => {
                    chars[at] = TOKENS[rng.below(TOKENS.len())]
                        .chars()
                        .next()
                        .unwrap_or('x')
                }
            }
        }
        check_no_panic(&chars.into_iter().collect::<String>());
    }

    // Deep nesting and very long keys.
    check_no_panic(&"[".repeat(100_000));
    check_no_panic(&format!("a = {}", "[".repeat(100_000)));
    check_no_panic(&format!("a = {}1{}", "[".repeat(1000), "]".repeat(1000)));
    check_no_panic(&format!("{} = 1", vec!["a"; 10_000].join(".")));
    check_no_panic(&format!("x = {}", "{ a = ".repeat(1000)));
    // Many errors: capped, still well-formed.
    check_no_panic(&"x = 1\n".repeat(10_000).replace("x = 1\n", "k = 1\n"));
    let many: String = (0..1000).map(|i| format!("k{i} = 1\n")).collect();
    check_no_panic(&many);
    check_no_panic(&"= = =\n".repeat(1000));
}

#[test]
fn many_errors_are_capped() {
    let syntax = "= = =\n".repeat(20_000);
    let urls: String = (0..20_000).map(|i| format!("\"bad{i}\", ")).collect();
    let validation = format!("[[webrtc.ice_servers]]\nurls = [{urls}]\n");
    let unknown: String = (0..20_000).map(|i| format!("k{i} = 1\n")).collect();
    for text in [syntax, validation, unknown] {
        let started = std::time::Instant::now();
        let errors = errors(&text);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        assert_eq!(errors.len(), 101);
        assert!(errors[..100].iter().all(|e| e.line.is_some()));
        assert_eq!(
            errors[100].to_string(),
            "onair.toml: too many errors, only the first 100 are shown"
        );
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("onair-config-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn signaling_url_must_be_a_websocket_url() {
    assert_eq!(
        single("[signaling]\nurl = \"http://signal.example.com\"\n"),
        "onair.toml:2:7: signaling.url: must start with \"ws://\" or \"wss://\", not \"http://\""
    );
    assert_eq!(
        single("[signaling]\nurl = \"wss:///ws\"\n"),
        "onair.toml:2:7: signaling.url: has no host"
    );
    assert_eq!(
        single("[signaling]\nurl = \"ws://127.0.0.1:8443\"\ntoken = \"\"\n"),
        "onair.toml:3:9: signaling.token: must not be empty"
    );
}

#[test]
fn video_camera_names_a_libcamera_camera() {
    let config = Config::from_toml_str(
        "[video]\nsource = \"libcamera\"\ncamera = \"/base/soc/i2c0mux/i2c@1/imx708@1a\"\n",
        "onair.toml",
    )
    .unwrap();
    assert_eq!(config.video.source, VideoSourceSetting::Libcamera);
    assert_eq!(
        config.video.camera.as_deref(),
        Some("/base/soc/i2c0mux/i2c@1/imx708@1a")
    );
    let default = Config::from_toml_str("[video]\nsource = \"libcamera\"\n", "x").unwrap();
    assert_eq!(default.video.camera, None);
    let message = Config::from_toml_str(
        "[video]\nsource = \"libcamera\"\ncamera = \" \"\n",
        "onair.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("video.camera: expected libcamera's id"),
        "{message}"
    );
}

#[test]
fn libcamera_controls_are_checked_and_named() {
    assert_eq!(
        single("[video.libcamera]\nrotation = 45\n"),
        "onair.toml:2:12: video.libcamera.rotation: must be 0, 90, 180 or 270, got 45"
    );
    assert_eq!(
        single("[video.libcamera]\nlens_position = 40.0\n"),
        "onair.toml:2:17: video.libcamera.lens_position: must be between 0 and 32 dioptres, got 40"
    );
    assert_eq!(
        single("[video.libcamera]\nexposure_us = 0\n"),
        "onair.toml:2:15: video.libcamera.exposure_us: must be between 1 and 10000000, got 0"
    );
    assert_eq!(
        single("[video.libcamera]\nautofocus = \"sometimes\"\n"),
        "onair.toml:2:13: video.libcamera.autofocus: unknown variant `sometimes`, expected one of `manual`, `auto`, `continuous`"
    );
}
