//! `GET /api/privacy` and `PUT /api/privacy`: privacy switched by an operator, as the GPIO
//! button does (see [`crate::media::Privacy`]).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::access::{Role, operator_only};

/// The body of both: whether privacy is on.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Switch {
    /// Black pictures and silence while true.
    pub on: bool,
}

/// `GET /api/privacy`: `{"on": …}`.
pub async fn get(State(state): State<AppState>) -> Json<Switch> {
    Json(Switch {
        on: state.media.privacy(),
    })
}

/// `PUT /api/privacy` with `{"on": true}` or `{"on": false}`: `200` and the state once every
/// layer is cut (nobody who joins after the answer sees a picture from before); `403`
/// without the operator token, `400` for another body.
pub async fn put(
    State(state): State<AppState>,
    Extension(role): Extension<Role>,
    body: Result<Json<Switch>, JsonRejection>,
) -> Response {
    if let Some(refused) = operator_only(role, "switching privacy") {
        return refused;
    }
    let Json(switch) = match body {
        Ok(body) => body,
        Err(err) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("the body must be {{\"on\": true}} or {{\"on\": false}}: {err}\n"),
            )
                .into_response();
        }
    };
    state.media.privacy_switch().set(switch.on);
    Json(Switch {
        on: state.media.privacy(),
    })
    .into_response()
}
