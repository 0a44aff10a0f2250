//! Janus 1.1.2 (Debian's `janus`) as the fan-out anchor: its streaming plugin fed one RTP
//! H.264 stream of the stamped test pattern (`onair-pattern | ffmpeg libx264 → RTP`), which
//! it forwards to every viewer without re-encoding.
//!
//! Everything of this side runs in a network namespace of its own that holds only `lo` and
//! an `ifb` device with a private address. Janus never gathers candidates on a loopback
//! interface (its ICE setup skips `IFF_LOOPBACK` ones, whatever `ice_enforce_list` says) and
//! libnice then falls back to every other interface of the machine; in the namespace the
//! only one is the `ifb` device, whose address is local, so its traffic goes through `lo`
//! and nothing outside the namespace can reach Janus at all.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::daemon::{built, terminate};

/// Janus's HTTP API inside the namespace (the crowd joins from inside it too).
pub const API: &str = "http://127.0.0.1:8088/janus";
/// The one mountpoint.
pub const MOUNTPOINT: u64 = 1;
/// Where ffmpeg sends RTP and Janus listens, inside the namespace.
const RTP_PORT: u16 = 5004;
/// The address Janus gathers its ICE candidates on (the `ifb` device's).
pub const ICE_ADDRESS: &str = "10.200.0.1";

/// What the stream is: the same as onaird's in the benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Stream {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    pub keyframe_interval_ms: u32,
}

/// A child process that is stopped (SIGTERM, then SIGKILL after 5 s) when dropped.
pub struct Guard(pub Child);

impl Guard {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Fails if the process has exited.
    pub fn check_running(&mut self, what: &str) -> anyhow::Result<()> {
        match self.0.try_wait()? {
            Some(status) => bail!("{what} exited: {status}"),
            None => Ok(()),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = terminate(&mut self.0);
    }
}

/// A directory under the system's temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `$TMPDIR/<prefix>-<pid>`, emptied.
    pub fn new(prefix: &str) -> anyhow::Result<TempDir> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A private network namespace, kept alive by a `sleep` in it; it goes away with that
/// process and the last one that entered it.
pub struct Namespace {
    holder: Guard,
    /// Without root, the namespace belongs to a user namespace that must be entered too.
    rootless: bool,
}

impl Namespace {
    /// Makes the namespace with `lo` up, an `ifb` device at [`ICE_ADDRESS`], and a multicast
    /// route (webrtc-rs's mDNS wants one).
    pub fn new() -> anyhow::Result<Namespace> {
        let rootless = !is_root();
        let mut unshare = Command::new("unshare");
        if rootless {
            unshare.arg("--map-root-user");
        }
        let child = unshare
            .args(["--net", "sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .context("starting unshare (util-linux)")?;
        let namespace = Namespace {
            holder: Guard(child),
            rootless,
        };
        namespace.wait_entered()?;
        for args in [
            "link set lo up",
            "link add onair0 type ifb",
            &format!("addr add {ICE_ADDRESS}/24 dev onair0"),
            "link set onair0 up",
            "route add 224.0.0.0/4 dev lo",
        ] {
            let status = namespace
                .command("ip")
                .args(args.split(' '))
                .status()
                .context("running ip (iproute2)")?;
            ensure!(status.success(), "ip {args} failed in the namespace");
        }
        Ok(namespace)
    }

    /// `program` to be run inside the namespace (through `nsenter`, which execs it: the
    /// child's pid is the program's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command.arg(format!("--target={}", self.holder.pid()));
        if self.rootless {
            command.args(["--user", "--preserve-credentials"]);
        }
        command.args(["--net", "--"]).arg(program);
        command
    }

    /// Moves the calling thread (and the processes it starts from now on) into the
    /// namespace. Needs root: see [`crate::sfu::Sfu::enter`].
    pub fn enter(&self) -> anyhow::Result<()> {
        ensure!(
            !self.rootless,
            "entering the namespace from a test thread needs root (setns with CAP_SYS_ADMIN)"
        );
        let file = fs::File::open(format!("/proc/{}/ns/net", self.holder.pid()))?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .context("setns into the namespace")?;
        Ok(())
    }

    /// Waits (5 s at most) until the holder has left our namespace for its own.
    fn wait_entered(&self) -> anyhow::Result<()> {
        let ours = fs::read_link("/proc/self/ns/net")?;
        let path = format!("/proc/{}/ns/net", self.holder.pid());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if fs::read_link(&path).is_ok_and(|theirs| theirs != ours) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("unshare made no network namespace within 5 s")
    }
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Janus forwarding the pattern, with its feed; everything stops when dropped.
pub struct JanusPeer {
    // Dropped in this order: the feed, then Janus, then the namespace, then the files.
    ffmpeg: Guard,
    pattern: Guard,
    janus: Guard,
    namespace: Namespace,
    dir: TempDir,
}

impl JanusPeer {
    /// Starts Janus in a new namespace and feeds it `stream`; returns once Janus's HTTP API
    /// is up and the feed runs.
    pub fn start(stream: Stream) -> anyhow::Result<JanusPeer> {
        let dir = TempDir::new("onair-fanout-janus")?;
        write_configs(&dir.0)?;
        let namespace = Namespace::new()?;
        let janus = start_janus(&namespace, &dir.0, "Streaming plugin initialized")?;
        let (pattern, ffmpeg) = start_feed(&namespace, &dir.0, stream)?;
        let mut peer = JanusPeer {
            ffmpeg,
            pattern,
            janus,
            namespace,
            dir,
        };
        // A feed that cannot start (no libx264, a bad option) ends within a moment.
        std::thread::sleep(Duration::from_secs(1));
        peer.check_running()?;
        Ok(peer)
    }

    /// Janus's process id (its CPU and RSS are the figures).
    pub fn janus_pid(&self) -> u32 {
        self.janus.pid()
    }

    /// The feed's process ids (onair-pattern, ffmpeg): measured, but not Janus's cost.
    pub fn feed_pids(&self) -> [u32; 2] {
        [self.pattern.pid(), self.ffmpeg.pid()]
    }

    /// An `onair-crowd` of `viewers` joining the mountpoint, inside the namespace.
    pub fn crowd(&self, viewers: usize) -> Command {
        let mut command = self
            .namespace
            .command(built("onair-crowd", "ONAIR_CROWD_BIN"));
        command.args([
            "--viewers",
            &viewers.to_string(),
            "--janus",
            API,
            "--mountpoint",
            &MOUNTPOINT.to_string(),
            "--bind",
            ICE_ADDRESS,
        ]);
        command
    }

    /// Fails (with the logs) if Janus or its feed has stopped.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for (guard, what) in [
            (&mut self.janus, "janus"),
            (&mut self.pattern, "onair-pattern"),
            (&mut self.ffmpeg, "ffmpeg"),
        ] {
            guard
                .check_running(what)
                .with_context(|| log_tails(&self.dir.0))?;
        }
        Ok(())
    }
}

/// The last lines of Janus's and ffmpeg's logs, to say why one stopped.
fn log_tails(dir: &Path) -> String {
    let mut text = String::new();
    for name in ["janus.log", "ffmpeg.log"] {
        let log = fs::read_to_string(dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(15)..];
        text += &format!("--- {name}:\n{}\n", tail.join("\n"));
    }
    text
}

/// Starts Janus with the configs in `dir`, logging to `dir/janus.log`, and waits (20 s at
/// most) until its HTTP API listens and its log says `plugin_ready` (e.g. "Streaming plugin
/// initialized").
pub fn start_janus(namespace: &Namespace, dir: &Path, plugin_ready: &str) -> anyhow::Result<Guard> {
    let log = fs::File::create(dir.join("janus.log"))?;
    let child = namespace
        .command("janus")
        .arg(format!("--configs-folder={}", dir.display()))
        .arg(format!("--config={}", dir.join("janus.jcfg").display()))
        .arg("--disable-colors")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting janus (Debian package janus)")?;
    let mut janus = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = fs::read_to_string(dir.join("janus.log")).unwrap_or_default();
        if text.contains("HTTP webserver started") && text.contains(plugin_ready) {
            return Ok(janus);
        }
        janus.check_running("janus").with_context(|| text.clone())?;
        if Instant::now() > deadline {
            bail!("Janus did not start its HTTP API within 20 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `onair-pattern | ffmpeg` → RTP H.264 to Janus's mountpoint. ffmpeg's libx264 is set up
/// like onaird's encoder where it matters to a forwarder: baseline, no B-frames and no
/// lookahead (zerolatency), the same bitrate and key-frame period, RTP packets of at most
/// 1200 bytes. The fastest preset: ffmpeg's CPU is not Janus's, and it shares the cores.
fn start_feed(namespace: &Namespace, dir: &Path, s: Stream) -> anyhow::Result<(Guard, Guard)> {
    let mut pattern = Command::new(built("onair-pattern", "ONAIR_PATTERN_BIN"))
        .args(["--width", &s.width.to_string()])
        .args(["--height", &s.height.to_string()])
        .args(["--fps", &s.fps.to_string()])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .context("starting onair-pattern (cargo build --release -p onair-tests)")?;
    let frames = pattern.stdout.take().context("no pattern output")?;
    let pattern = Guard(pattern);
    let keyint = (s.fps * s.keyframe_interval_ms / 1000).max(1).to_string();
    let kbps = format!("{}k", s.bitrate_kbps);
    let ffmpeg = namespace
        .command("ffmpeg")
        .args(["-hide_banner", "-nostats", "-loglevel", "warning"])
        .args(["-f", "rawvideo", "-pix_fmt", "yuv420p"])
        .args(["-video_size", &format!("{}x{}", s.width, s.height)])
        .args(["-framerate", &s.fps.to_string(), "-i", "-", "-an"])
        .args(["-c:v", "libx264", "-profile:v", "baseline"])
        .args(["-preset", "ultrafast"])
        .args(["-tune", "zerolatency", "-b:v", &kbps, "-maxrate", &kbps])
        .args(["-bufsize", &kbps, "-g", &keyint, "-keyint_min", &keyint])
        .args(["-sc_threshold", "0", "-payload_type", "96", "-f", "rtp"])
        .arg(format!("rtp://127.0.0.1:{RTP_PORT}?pkt_size=1200"))
        .stdin(Stdio::from(frames))
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("ffmpeg.log"))?)
        .spawn()
        .context("starting ffmpeg (Debian package ffmpeg)")?;
    Ok((pattern, Guard(ffmpeg)))
}

/// The configs of [`write_janus_configs`] for the streaming plugin, and one RTP mountpoint
/// for H.264 on [`RTP_PORT`].
fn write_configs(dir: &Path) -> anyhow::Result<()> {
    write_janus_configs(dir, "libjanus_streaming.so")?;
    let streaming = format!(
        r#"general: {{
	events = false
}}
pattern: {{
	type = "rtp"
	id = {MOUNTPOINT}
	description = "onair stamped test pattern"
	audio = false
	video = true
	videoport = {RTP_PORT}
	videoiface = "127.0.0.1"
	videopt = 96
	videocodec = "h264"
	videofmtp = "profile-level-id=42e01f;packetization-mode=1"
}}
"#
    );
    fs::write(dir.join("janus.plugin.streaming.jcfg"), streaming)?;
    Ok(())
}

/// janus.jcfg (only `plugin`, e.g. `libjanus_streaming.so`, and the HTTP transport; ICE on
/// [`ICE_ADDRESS`] only; no session timeout, so viewers need not poll once watching) and
/// the HTTP transport on 127.0.0.1:8088.
pub fn write_janus_configs(dir: &Path, plugin: &str) -> anyhow::Result<()> {
    let lib = janus_lib_dir().context("no /usr/lib/*/janus/plugins: install Debian's janus")?;
    let lib = lib.display();
    let others = |kind: &str, keep: &str| -> anyhow::Result<String> {
        let mut names: Vec<String> = fs::read_dir(format!("{lib}/{kind}"))
            .with_context(|| format!("reading {lib}/{kind}"))?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".so") && name != keep)
            .collect();
        names.sort();
        Ok(names.join(","))
    };
    let janus = format!(
        r#"general: {{
	configs_folder = "{dir}"
	plugins_folder = "{lib}/plugins"
	transports_folder = "{lib}/transports"
	events_folder = "{lib}/events"
	loggers_folder = "{lib}/loggers"
	interface = "{ICE_ADDRESS}"
	debug_level = 4
	session_timeout = 0
}}
media: {{
	rtp_port_range = "20000-40000"
}}
nat: {{
	ice_enforce_list = "{ICE_ADDRESS}"
}}
plugins: {{
	disable = "{plugins}"
}}
transports: {{
	disable = "{transports}"
}}
loggers: {{
	disable = "{loggers}"
}}
events: {{
	broadcast = false
}}
"#,
        dir = dir.display(),
        plugins = others("plugins", plugin)?,
        transports = others("transports", "libjanus_http.so")?,
        loggers = others("loggers", "")?,
    );
    let http = r#"general: {
	json = "compact"
	base_path = "/janus"
	http = true
	port = 8088
	ip = "127.0.0.1"
	https = false
}
admin: {
	admin_http = false
}
"#;
    fs::write(dir.join("janus.jcfg"), janus)?;
    fs::write(dir.join("janus.transport.http.jcfg"), http)?;
    Ok(())
}

/// Where Debian put Janus's plugins on this architecture (`/usr/lib/<triplet>/janus`).
pub fn janus_lib_dir() -> Option<PathBuf> {
    fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(|entry| Some(entry.ok()?.path().join("janus")))
        .find(|path| path.join("plugins/libjanus_streaming.so").exists())
}
