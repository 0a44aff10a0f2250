//! `GET /snapshot.jpg`: the current picture as a JPEG (see [`crate::media::snapshot`]).

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use crate::media::snapshot::SnapshotError;

/// Widths a snapshot may be asked at; wider than the picture gives the picture's width.
const WIDTHS: std::ops::RangeInclusive<u32> = 16..=4096;

#[derive(Debug, Deserialize)]
pub struct Asked {
    /// `?width=`: the JPEG's width in pixels (height in proportion).
    width: Option<String>,
}

/// 200 with `image/jpeg`; 400 for a bad `width`; 503 while there is no picture.
pub async fn snapshot(State(state): State<AppState>, Query(asked): Query<Asked>) -> Response {
    let width = match asked.width.as_deref().map(width) {
        Some(Err(message)) => return (StatusCode::BAD_REQUEST, message).into_response(),
        Some(Ok(width)) => Some(width),
        None => None,
    };
    match state.media.snapshot(width).await {
        Ok(jpeg) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            jpeg,
        )
            .into_response(),
        Err(err @ SnapshotError::NoPicture(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n")).into_response()
        }
        Err(err @ SnapshotError::Failed(_)) => {
            tracing::warn!("/snapshot.jpg: {err}");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response()
        }
    }
}

/// `?width=` read, or what is wrong with it.
fn width(text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|w| WIDTHS.contains(w))
        .ok_or_else(|| {
            format!(
                "width: must be a whole number of pixels from {} to {}, got {text:?}\n",
                WIDTHS.start(),
                WIDTHS.end()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_are_whole_numbers_within_reason() {
        assert_eq!(width("640"), Ok(640));
        assert_eq!(width("16"), Ok(16));
        for bad in ["0", "15", "4097", "-1", "12.5", "wide", ""] {
            let err = width(bad).unwrap_err();
            assert!(err.starts_with("width: "), "{err}");
        }
    }
}
