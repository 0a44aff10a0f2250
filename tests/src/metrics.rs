//! Reading onaird's `/metrics` as a monitoring system would: fetched over HTTP and parsed by
//! the Prometheus project's own parser (`prometheus_client` for Python, in the venv `./dev`
//! makes from tests/whep/requirements.txt), not by anything of ours.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

use crate::daemon::agent;

/// One sample of a scrape.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The family's name (without `_total` for counters, as the parser gives it).
    pub family: String,
    /// counter, gauge, histogram…
    pub kind: String,
    /// The sample's own name (`…_total`, `…_bucket`).
    pub name: String,
    /// Its labels as `name=value`, sorted.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug, Clone)]
pub struct Scrape(pub Vec<Sample>);

impl Scrape {
    /// The value of the sample `name` with exactly `labels`, if there is one.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
    }

    /// Every sample named `name`.
    pub fn samples(&self, name: &str) -> impl Iterator<Item = &Sample> {
        self.0.iter().filter(move |s| s.name == name)
    }

    /// The type the exposition declares for family `family`.
    pub fn kind(&self, family: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|s| s.family == family)
            .map(|s| s.kind.as_str())
    }
}

/// `GET {base}/metrics` with `token` as a bearer → (HTTP status, body).
pub fn fetch(base: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    let mut request = agent().get(&format!("{base}/metrics"));
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request.call()?;
    let body = response.body_mut().read_to_string().unwrap_or_default();
    Ok((response.status().as_u16(), body))
}

/// Fetches `/metrics` (200 expected) and parses it.
pub fn scrape(base: &str, token: Option<&str>) -> anyhow::Result<Scrape> {
    let (status, body) = fetch(base, token)?;
    ensure!(status == 200, "GET /metrics: {status} {body}");
    parse(&body).with_context(|| format!("the exposition was:\n{body}"))
}

/// Parses an exposition with Python's `prometheus_client` parser.
pub fn parse(exposition: &str) -> anyhow::Result<Scrape> {
    let python = whep_python()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("whep/parse_metrics.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", python.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(exposition.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "the Prometheus parser rejected it: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    samples(&serde_json::from_slice(&out.stdout)?)
}

fn samples(families: &Value) -> anyhow::Result<Scrape> {
    let mut all = Vec::new();
    for family in families.as_array().context("a list of families")? {
        let text = |key: &str| family[key].as_str().unwrap_or_default().to_owned();
        for sample in family["samples"].as_array().context("samples")? {
            let mut labels: Vec<(String, String)> = sample["labels"]
                .as_object()
                .context("labels")?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            labels.sort();
            all.push(Sample {
                family: text("name"),
                kind: text("type"),
                name: sample["name"].as_str().unwrap_or_default().to_owned(),
                labels,
                value: sample["value"].as_f64().context("a numeric value")?,
            });
        }
    }
    Ok(Scrape(all))
}

/// The Python of the test venv: `$ONAIR_WHEP_PYTHON`, else the venv `./dev` makes for the
/// current tests/whep/requirements.txt (under `$ONAIR_CACHE`, default ~/.cache/onair).
pub fn whep_python() -> anyhow::Result<PathBuf> {
    if let Some(python) = std::env::var_os("ONAIR_WHEP_PYTHON") {
        return Ok(python.into());
    }
    let requirements = Path::new(env!("CARGO_MANIFEST_DIR")).join("whep/requirements.txt");
    let sum = Command::new("sha256sum").arg(&requirements).output()?;
    let key: String = String::from_utf8_lossy(&sum.stdout)
        .chars()
        .take(12)
        .collect();
    let cache = std::env::var_os("ONAIR_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/onair")))
        .context("neither ONAIR_CACHE nor HOME is set")?;
    let python = cache.join(format!("venv-whep-{key}/bin/python"));
    ensure!(
        python.exists(),
        "{} is missing: `./dev test` makes it (or set ONAIR_WHEP_PYTHON)",
        python.display()
    );
    Ok(python)
}
