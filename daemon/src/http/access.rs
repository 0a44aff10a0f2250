//! Who may watch and who may operate: the tokens of `[access]`, checked on every route but
//! `/healthz` and the browser SDK.
//!
//! A request presents its token as `Authorization: Bearer …` (RFC 9725 for WHEP) or as
//! `?token=…` (a page link, a WebSocket from a browser). Without one that fits it gets `401`
//! with `WWW-Authenticate: Bearer`. Tokens are compared in constant time and never logged.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use onair_signal::auth::equal;
use onair_signal::server::{TokenQuery, token};
use serde::{Deserialize, Serialize};

/// What a bearer may do; an operator may do everything a viewer may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Watch: the page, WHEP, `/ws`, `/api/*`.
    Viewer,
    /// Watch, and what later features add (talkback, privacy, recordings management).
    Operator,
}

/// Routes anyone may use: health for monitoring, and the browser SDK (public code).
const OPEN_PATHS: [&str; 2] = ["/healthz", "/onair.js"];

/// The tokens in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tokens {
    /// Needed to watch; `None`: anyone may.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viewer_token: Option<String>,
    /// Makes its bearer an operator; `None`: nobody is one (unless no token is set at all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_token: Option<String>,
}

impl Tokens {
    /// Whether watching needs a token.
    pub fn protected(&self) -> bool {
        self.viewer_token.is_some()
    }

    /// The role of the bearer of `token`, `None` if it may do nothing. With no token
    /// configured everyone is an operator, as before access control existed; with only an
    /// operator token, everyone else is a viewer.
    pub fn role(&self, token: Option<&str>) -> Option<Role> {
        let presents = |expected: &Option<String>| {
            token
                .zip(expected.as_deref())
                .is_some_and(|(token, expected)| equal(token, expected))
        };
        match (&self.viewer_token, &self.operator_token) {
            (None, None) => Some(Role::Operator),
            _ if presents(&self.operator_token) => Some(Role::Operator),
            (None, Some(_)) => Some(Role::Viewer),
            (Some(_), _) if presents(&self.viewer_token) => Some(Role::Viewer),
            (Some(_), _) => None,
        }
    }

    /// The tokens `access` sets, and from its `token_file` those it does not, making the
    /// file with new random tokens when it does not exist and `make` is true.
    pub fn resolve(access: &onair_config::Access, make: bool) -> anyhow::Result<Tokens> {
        let mut tokens = Tokens {
            viewer_token: access.viewer_token.clone(),
            operator_token: access.operator_token.clone(),
        };
        if let Some(path) = &access.token_file {
            let file = if make {
                read_or_make(path)?
            } else {
                read(path)?
            };
            tokens.viewer_token = tokens.viewer_token.or(file.viewer_token);
            tokens.operator_token = tokens.operator_token.or(file.operator_token);
        }
        Ok(tokens)
    }
}

/// The token file, made with fresh tokens (mode 0600, never overwritten) if it is missing.
fn read_or_make(path: &Path) -> anyhow::Result<Tokens> {
    let fresh = Tokens {
        viewer_token: Some(random_token()),
        operator_token: Some(random_token()),
    };
    let text = toml::to_string(&fresh).expect("tokens serialise");
    let made = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        });
    match made {
        Ok(()) => {
            tracing::info!("access.token_file: made {} with new tokens", path.display());
            Ok(fresh)
        }
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => read(path),
        Err(err) => {
            Err(err).with_context(|| format!("access.token_file: cannot make {}", path.display()))
        }
    }
}

fn read(path: &Path) -> anyhow::Result<Tokens> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("access.token_file: cannot read {}", path.display()))?;
    let tokens: Tokens =
        toml::from_str(&text).with_context(|| format!("access.token_file {}", path.display()))?;
    for (key, token) in [
        ("viewer_token", &tokens.viewer_token),
        ("operator_token", &tokens.operator_token),
    ] {
        if let Some(problem) = token
            .as_deref()
            .and_then(onair_config::access_token_problem)
        {
            anyhow::bail!("access.token_file {}: {key}: {problem}", path.display());
        }
    }
    Ok(tokens)
}

/// 128 random bits as 32 hex digits.
fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Middleware: lets a request through if it is for an open path or its token makes its
/// bearer at least a viewer (then with its [`Role`] in the request's extensions); `401`
/// otherwise.
pub async fn viewers_only(
    State(tokens): State<Arc<Tokens>>,
    mut request: Request,
    next: Next,
) -> Response {
    if OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let query = Query::<TokenQuery>::try_from_uri(request.uri())
        .map(|Query(query)| query)
        .unwrap_or_default();
    // Handlers that need more than a viewer read the role from the request.
    if let Some(role) = tokens
        .role(token(request.headers(), &query).as_deref())
        .filter(|role| *role >= Role::Viewer)
    {
        request.extensions_mut().insert(role);
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a valid token is needed: Authorization: Bearer TOKEN, or ?token=TOKEN \
         (`sudo onaird --print-url` prints the viewer URL with its token)\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(viewer: Option<&str>, operator: Option<&str>) -> Tokens {
        Tokens {
            viewer_token: viewer.map(str::to_owned),
            operator_token: operator.map(str::to_owned),
        }
    }

    #[test]
    fn roles() {
        let open = tokens(None, None);
        assert_eq!(open.role(None), Some(Role::Operator));
        let both = tokens(Some("viewer-0123456789"), Some("operator-0123456789"));
        assert_eq!(both.role(None), None);
        assert_eq!(both.role(Some("viewer-012345678")), None);
        assert_eq!(both.role(Some("viewer-0123456789")), Some(Role::Viewer));
        assert_eq!(both.role(Some("operator-0123456789")), Some(Role::Operator));
        let operator_only = tokens(None, Some("operator-0123456789"));
        assert_eq!(operator_only.role(None), Some(Role::Viewer));
        assert_eq!(
            operator_only.role(Some("operator-0123456789")),
            Some(Role::Operator)
        );
        let viewer_only = tokens(Some("viewer-0123456789"), None);
        assert_eq!(viewer_only.role(Some("x")), None);
        assert_eq!(
            viewer_only.role(Some("viewer-0123456789")),
            Some(Role::Viewer)
        );
    }

    #[test]
    fn token_file_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("onair-access-{}", random_token()));
        std::fs::create_dir(&dir).unwrap();
        let access = onair_config::Access {
            viewer_token: None,
            operator_token: Some("operator-set-in-config".into()),
            token_file: Some(dir.join("access.toml")),
        };
        assert!(Tokens::resolve(&access, false).is_err(), "not made yet");
        let first = Tokens::resolve(&access, true).unwrap();
        let viewer = first.viewer_token.clone().unwrap();
        assert_eq!(viewer.len(), 32);
        assert_eq!(
            first.operator_token.as_deref(),
            Some("operator-set-in-config")
        );
        let mode = std::fs::metadata(dir.join("access.toml")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        assert_eq!(Tokens::resolve(&access, true).unwrap(), first);
        assert_eq!(Tokens::resolve(&access, false).unwrap(), first);

        std::fs::write(dir.join("access.toml"), "viewer_token = \"short\"\n").unwrap();
        let err = Tokens::resolve(&access, true).unwrap_err().to_string();
        assert!(err.contains("viewer_token: must be 16 to 128"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
