//! The command line: --check-config, --help, --version, bad input.

use std::process::Command;

use onair_tests::daemon::binary;

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("onair-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_config_names_the_bad_key_and_its_line() {
    let path = write(
        "bad.toml",
        "[device]\nchannel = \"x\"\n\n[video]\nwidth = 1279\nfsp = 30\n",
    );
    let out = Command::new(binary())
        .arg("--check-config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(":5:") && stderr.contains("video.width"),
        "{stderr}"
    );
    assert!(
        stderr.contains(":6:") && stderr.contains("video.fsp"),
        "{stderr}"
    );
    std::fs::remove_file(path).unwrap();
}

#[test]
fn check_config_accepts_the_shipped_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/onair.example.toml");
    let out = Command::new(binary())
        .arg("--check-config")
        .arg(example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}

#[test]
fn a_missing_config_file_is_named() {
    let out = Command::new(binary())
        .args(["--config", "/nonexistent/onair.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/onair.toml"));
}

#[test]
fn bad_overrides_are_refused() {
    let out = Command::new(binary())
        .args(["--video-source", "webcam"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("webcam"));
}

#[test]
fn help_and_version() {
    let help = Command::new(binary()).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in ["--config", "--check-config", "--listen", "--video-source"] {
        assert!(text.contains(flag), "{text}");
    }
    let version = Command::new(binary()).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn unknown_and_conflicting_options_are_named() {
    let out = Command::new(binary()).arg("--colour").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--colour"));
    let out = Command::new(binary())
        .args(["--config", "a.toml", "--check-config", "b.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--check-config"));
    let out = Command::new(binary())
        .args(["--listen", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere"));
}
