//! Recordings over HTTP: `GET /api/recordings` lists them, `GET /recordings/{name}` serves
//! one (with range requests, so players can seek), `DELETE /recordings/{name}` removes one
//! (operators only). All `404` while `record.enabled` is false.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tower::ServiceExt as _;
use tower_http::services::ServeFile;

use super::AppState;
use super::access::{Role, operator_only};

/// One recording, as `/api/recordings` lists it.
#[derive(Debug, Serialize)]
pub struct Listed {
    /// File name: `/recordings/{name}`.
    name: String,
    /// When it began (UTC, RFC 3339).
    start: String,
    /// Seconds from its start (named to the second) to its last write.
    duration_s: f64,
    /// Size in bytes.
    bytes: u64,
}

fn off() -> Response {
    (
        StatusCode::NOT_FOUND,
        "recording is off (record.enabled = false)\n",
    )
        .into_response()
}

/// `GET /api/recordings`: newest first.
pub async fn list(State(state): State<AppState>) -> Response {
    let Some(dir) = state.recordings.clone() else {
        return off();
    };
    match tokio::task::spawn_blocking(move || listing(&dir)).await {
        Ok(Ok(listed)) => Json(listed).into_response(),
        Ok(Err(err)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot list the recordings: {err}\n"),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn listing(dir: &Path) -> std::io::Result<Vec<Listed>> {
    let mut listed = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(start) = started(&name) else {
            continue;
        };
        let meta = entry.metadata()?;
        let end = meta.modified().unwrap_or(start);
        listed.push(Listed {
            start: humantime::format_rfc3339_seconds(start).to_string(),
            duration_s: end.duration_since(start).unwrap_or_default().as_secs_f64(),
            bytes: meta.len(),
            name,
        });
    }
    listed.sort_by(|a, b| b.name.cmp(&a.name));
    Ok(listed)
}

/// The start time in a segment's name (`2026-12-02T05-50-12Z.mp4`, maybe `…Z-1.mp4`);
/// `None` for any other name.
fn started(name: &str) -> Option<SystemTime> {
    let stem = name.strip_suffix(".mp4")?;
    let (time, _) = stem.split_once('Z')?;
    let (date, clock) = time.split_once('T')?;
    humantime::parse_rfc3339(&format!("{date}T{}Z", clock.replace('-', ":"))).ok()
}

/// The file `name` names in the recordings directory, if it is a recording's name.
fn file(state: &AppState, name: &str) -> Result<PathBuf, Box<Response>> {
    let dir = state.recordings.as_deref().ok_or_else(|| Box::new(off()))?;
    if started(name).is_none() || name.contains('/') {
        let missing = (StatusCode::NOT_FOUND, format!("no recording {name:?}\n"));
        return Err(Box::new(missing.into_response()));
    }
    Ok(dir.join(name))
}

/// `GET /recordings/{name}`: `video/mp4`, ranges honoured.
pub async fn get(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    request: Request,
) -> Response {
    let path = match file(&state, &name) {
        Ok(path) => path,
        Err(response) => return *response,
    };
    if !path.is_file() {
        return (StatusCode::NOT_FOUND, format!("no recording {name:?}\n")).into_response();
    }
    let serve = ServeFile::new_with_mime(&path, &mp4());
    match serve.oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response(),
    }
}

fn mp4() -> mime::Mime {
    "video/mp4"
        .parse()
        .unwrap_or(mime::APPLICATION_OCTET_STREAM)
}

/// `DELETE /recordings/{name}`: `204`; `403` for a viewer; `404` if there is none.
pub async fn delete(
    State(state): State<AppState>,
    Extension(role): Extension<Role>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    if let Some(refused) = operator_only(role, "deleting recordings") {
        return refused;
    }
    let path = match file(&state, &name) {
        Ok(path) => path,
        Err(response) => return *response,
    };
    match tokio::fs::remove_file(&path).await {
        Ok(()) => {
            tracing::info!(recording = %name, "recording deleted over HTTP");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            (StatusCode::NOT_FOUND, format!("no recording {name:?}\n")).into_response()
        }
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot delete {name:?}: {err}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_start_times() {
        let t = started("2026-12-02T05-50-12Z.mp4").unwrap();
        assert_eq!(
            humantime::format_rfc3339_seconds(t).to_string(),
            "2026-12-02T05:50:12Z"
        );
        assert!(started("2026-12-02T05-50-12Z-1.mp4").is_some());
        for other in [
            "notes.txt",
            "../etc/passwd",
            "2026-12-02.mp4",
            ".onair-write-test",
        ] {
            assert!(started(other).is_none(), "{other}");
        }
    }
}
