//! A viewer's side of Janus's own HTTP API (the streaming plugin), so that the fan-out
//! benchmark joins Janus the way its users do (janus.js): create a session, attach
//! `janus.plugin.streaming`, ask to `watch` a mountpoint, take the JSEP offer Janus sends as
//! an event (long-poll GET on the session), and `start` with our answer.
//!
//! Janus's offer carries its candidates (half-trickle), and our answer carries ours with
//! `"trickle": false`, so no trickle messages are needed either way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::Notify;
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

use crate::daemon::agent;

/// The plugin whose mountpoints viewers watch.
const STREAMING: &str = "janus.plugin.streaming";

/// How long Janus may take to send its offer after `watch`.
const OFFER_WITHIN: Duration = Duration::from_secs(10);

/// A viewer's session on Janus; [`JanusSession::leave`] destroys it.
pub struct JanusSession {
    /// e.g. `http://127.0.0.1:8088/janus/123456`
    session_url: String,
}

/// Watches `mountpoint` on the Janus whose HTTP API is `api` (e.g.
/// `http://127.0.0.1:8088/janus`): applies Janus's offer to `pc` and sends `pc`'s answer
/// (with all its candidates: `gathered` fires when `pc` has them).
pub async fn watch(
    api: &str,
    mountpoint: u64,
    pc: &dyn PeerConnection,
    gathered: &Notify,
) -> anyhow::Result<JanusSession> {
    let api = api.trim_end_matches('/').to_owned();
    let (session_url, handle_url, offer) =
        tokio::task::spawn_blocking(move || ask_to_watch(&api, mountpoint)).await??;
    pc.set_remote_description(RTCSessionDescription::offer(offer)?)
        .await?;
    pc.set_local_description(pc.create_answer(None).await?)
        .await?;
    let _ = tokio::time::timeout(Duration::from_secs(2), gathered.notified()).await;
    let answer = pc.local_description().await.context("no local answer")?.sdp;
    let start = json!({
        "janus": "message",
        "body": { "request": "start" },
        "jsep": { "type": "answer", "sdp": answer, "trickle": false },
    });
    tokio::task::spawn_blocking(move || post(&handle_url, start)).await??;
    Ok(JanusSession { session_url })
}

impl JanusSession {
    /// Destroys the session (and so the viewer's handle and PeerConnection on Janus);
    /// returns the HTTP status, 0 if nothing answered.
    pub async fn leave(self) -> u16 {
        let url = self.session_url;
        tokio::task::spawn_blocking(move || {
            let destroy = json!({ "janus": "destroy", "transaction": transaction() });
            agent()
                .post(&url)
                .header("Content-Type", "application/json")
                .send(destroy.to_string().as_bytes())
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
        .await
        .unwrap_or(0)
    }
}

/// Create → attach → watch, then waits for Janus's offer. Returns the session URL, the
/// handle URL and the offer's SDP.
fn ask_to_watch(api: &str, mountpoint: u64) -> anyhow::Result<(String, String, String)> {
    let session = id_of(&post(api, json!({ "janus": "create" }))?)?;
    let session_url = format!("{api}/{session}");
    let attach = json!({ "janus": "attach", "plugin": STREAMING });
    let handle = id_of(&post(&session_url, attach)?)?;
    let handle_url = format!("{session_url}/{handle}");
    let watch = json!({
        "janus": "message",
        "body": { "request": "watch", "id": mountpoint },
    });
    post(&handle_url, watch)?;
    let offer = poll_for_offer(&session_url)?;
    Ok((session_url, handle_url, offer))
}

/// Long-polls the session's events until one carries a JSEP offer.
fn poll_for_offer(session_url: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + OFFER_WITHIN;
    while Instant::now() < deadline {
        let mut response = agent().get(session_url).call()?;
        let event: Value = serde_json::from_str(&response.body_mut().read_to_string()?)?;
        if let Some(error) = event.pointer("/plugindata/data/error") {
            bail!("Janus refused to stream: {error}");
        }
        if event.pointer("/jsep/type").and_then(Value::as_str) == Some("offer") {
            return event
                .pointer("/jsep/sdp")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .context("offer without SDP");
        }
    }
    bail!("Janus sent no offer within {OFFER_WITHIN:?}")
}

/// POSTs a Janus API request (adding its transaction) and returns the reply, which must be
/// `success` or `ack`.
fn post(url: &str, mut request: Value) -> anyhow::Result<Value> {
    request["transaction"] = Value::from(transaction());
    let mut response = agent()
        .post(url)
        .header("Content-Type", "application/json")
        .send(request.to_string().as_bytes())?;
    let reply: Value = serde_json::from_str(&response.body_mut().read_to_string()?)?;
    match reply["janus"].as_str() {
        Some("success" | "ack") => Ok(reply),
        _ => bail!("Janus answered {reply} to {request}"),
    }
}

/// The `data.id` of a `success` reply (a session or a handle).
fn id_of(reply: &Value) -> anyhow::Result<u64> {
    reply
        .pointer("/data/id")
        .and_then(Value::as_u64)
        .with_context(|| format!("no id in {reply}"))
}

/// A transaction id, unique within this process (Janus echoes it back).
fn transaction() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed))
}
