//! `GET /snapshot.jpg`: the current picture as a JPEG (see [`crate::media::snapshot`]).

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use crate::media::snapshot::SnapshotError;

/// Widths a snapshot may be asked at; wider than the picture gives the picture's width.
const WIDTHS: std::ops::RangeInclusive<u32> = 16..=4096;

/// The widths snapshots are made at: one asked is rounded down to one of these (at least
/// the first), so that however many widths are asked a picture is encoded at most this many
/// times (and once more at its own width) — a client rotating `?width=` costs no more than
/// one asking the same.
pub const MADE_WIDTHS: [u32; 9] = [160, 320, 480, 640, 960, 1280, 1920, 2560, 3840];

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

/// `?width=` read and rounded down to one of [`MADE_WIDTHS`], or what is wrong with it.
fn width(text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|w| WIDTHS.contains(w))
        .map(|asked| {
            let below = MADE_WIDTHS.iter().rev().find(|made| **made <= asked);
            *below.unwrap_or(&MADE_WIDTHS[0])
        })
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
        assert_eq!(width("1279"), Ok(960));
        assert_eq!(width("16"), Ok(160));
        assert_eq!(width("4096"), Ok(3840));
        // Every width asked is one of a few.
        let made: std::collections::BTreeSet<u32> =
            WIDTHS.map(|w| width(&w.to_string()).unwrap()).collect();
        assert_eq!(made.len(), MADE_WIDTHS.len());
        for bad in ["0", "15", "4097", "-1", "12.5", "wide", ""] {
            let err = width(bad).unwrap_err();
            assert!(err.starts_with("width: "), "{err}");
        }
    }
}
