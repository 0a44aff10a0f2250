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

use super::sites::{Refused, Sites};

/// What a bearer may do; an operator may do everything a viewer may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Watch: the page, WHEP, `/ws`, `/api/*`.
    Viewer,
    /// Watch, switch privacy, delete recordings (and what later features add).
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

    /// The role of the bearer of `token`, `None` if it may do nothing. Only the operator
    /// token makes an operator: with none configured nobody is one (everyone who may watch
    /// is a viewer); without a viewer token everyone may watch.
    pub fn role(&self, token: Option<&str>) -> Option<Role> {
        let presents = |expected: &Option<String>| {
            token
                .zip(expected.as_deref())
                .is_some_and(|(token, expected)| equal(token, expected))
        };
        match (&self.viewer_token, &self.operator_token) {
            _ if presents(&self.operator_token) => Some(Role::Operator),
            (None, _) => Some(Role::Viewer),
            (Some(_), _) if presents(&self.viewer_token) => Some(Role::Viewer),
            (Some(_), _) => None,
        }
    }

    /// Whether `token` is one of the tokens in force.
    pub fn recognises(&self, token: &str) -> bool {
        [&self.viewer_token, &self.operator_token]
            .into_iter()
            .flatten()
            .any(|expected| equal(token, expected))
    }

    /// The tokens `access` sets, and from its `token_file` those it does not, making the
    /// file with new random tokens when it does not exist and `make` is true. Whether the
    /// file was made now comes with them (the journal shows the new viewer URL only then).
    pub fn resolve(access: &onair_config::Access, make: bool) -> anyhow::Result<(Tokens, bool)> {
        let mut tokens = Tokens {
            viewer_token: access.viewer_token.clone(),
            operator_token: access.operator_token.clone(),
        };
        let mut made = false;
        if let Some(path) = &access.token_file {
            let file = if make {
                let (file, new) = read_or_make(path)?;
                made = new;
                file
            } else {
                read(path)?
            };
            tokens.viewer_token = tokens.viewer_token.or(file.viewer_token);
            tokens.operator_token = tokens.operator_token.or(file.operator_token);
        }
        Ok((tokens, made))
    }
}

/// The token file, made with fresh tokens (mode 0600, never overwritten) if it is missing;
/// whether it was made now.
fn read_or_make(path: &Path) -> anyhow::Result<(Tokens, bool)> {
    let fresh = Tokens {
        viewer_token: Some(random_token()),
        operator_token: Some(random_token()),
    };
    // An existing file is only read: nothing is written (a read-only directory, flash that
    // should not be worn at every start).
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok((read(path)?, false));
    }
    let text = toml::to_string(&fresh).expect("tokens serialise");
    match make_atomically(path, |file| file.write_all(text.as_bytes())) {
        Ok(()) => {
            tracing::info!("access.token_file: made {} with new tokens", path.display());
            Ok((fresh, true))
        }
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok((read(path)?, false)),
        Err(err) => {
            Err(err).with_context(|| format!("access.token_file: cannot make {}", path.display()))
        }
    }
}

/// Makes `path` (mode 0600) with what `write` puts in it, so that it exists whole or not at
/// all, whenever the process or the power stops: written to `path.new`, flushed to disk, then
/// linked to `path` (which fails if `path` exists: nothing is overwritten) and the directory
/// flushed. Whatever is at `path.new` (a crash's leftover, a link someone planted) is
/// removed first, and the new one is made exclusively, never through a link.
fn make_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut staged = path.as_os_str().to_owned();
    staged.push(".new");
    let staged = std::path::PathBuf::from(staged);
    let named = |err: std::io::Error| {
        std::io::Error::new(err.kind(), format!("{}: {err}", staged.display()))
    };
    match std::fs::remove_file(&staged) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(named(err)),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staged)
        .map_err(named)?;
    let linked = write(&mut file)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::hard_link(&staged, path));
    let _ = std::fs::remove_file(&staged);
    linked?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The token file as it is: one that cannot be read or parsed, or holds no token, is an
/// error naming it (onaird does not start rather than run open).
fn read(path: &Path) -> anyhow::Result<Tokens> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("access.token_file: cannot read {}", path.display()))?;
    let tokens: Tokens =
        toml::from_str(&text).with_context(|| format!("access.token_file {}", path.display()))?;
    if tokens.viewer_token.is_none() && tokens.operator_token.is_none() {
        anyhow::bail!(
            "access.token_file {}: holds no token (viewer_token, operator_token); \
             remove it and onaird makes a new one",
            path.display()
        );
    }
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

/// `403` naming the key for `what` (an operator action) unless `role` is an operator's.
pub fn operator_only(role: Role, what: &str) -> Option<Response> {
    (role < Role::Operator).then(|| {
        (
            StatusCode::FORBIDDEN,
            format!(
                "{what} needs the operator token (access.operator_token, or the token file's) \
                 as Authorization: Bearer TOKEN or ?token=TOKEN\n"
            ),
        )
            .into_response()
    })
}

/// `421` for a request that does not name the device, `403` for one from another site's page
/// without a token (but to an open path); `None` for the rest.
fn refuse_site(gate: &Gate, request: &Request, presented: Option<&str>) -> Option<Response> {
    let text = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
    let tokened = presented.is_some_and(|token| gate.tokens.recognises(token));
    match gate
        .sites
        .check(text(header::HOST), text(header::ORIGIN), tokened)
    {
        Ok(()) => None,
        Err(Refused::Host(host)) => Some(
            (
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this camera does not answer to host {host:?}; add the name to \
                     [http] hostnames (or use its address)\n"
                ),
            )
                .into_response(),
        ),
        Err(Refused::Origin(_)) if OPEN_PATHS.contains(&request.uri().path()) => None,
        Err(Refused::Origin(origin)) => Some(
            (
                StatusCode::FORBIDDEN,
                format!(
                    "requests from pages of {origin} need a token, or the origin listed in \
                     [http] cors_origins\n"
                ),
            )
                .into_response(),
        ),
    }
}

/// What [`viewers_only`] goes by: the tokens, and the device's names and its pages' origins.
pub struct Gate {
    /// The tokens in force.
    pub tokens: Arc<Tokens>,
    /// The names and origins requests may come with.
    pub sites: Sites,
}

/// Middleware: lets a request through if it names the device ([`Sites`]), and it is for an
/// open path or its token makes its bearer at least a viewer (then with its [`Role`] in the
/// request's extensions), and it does not come from another site's page without a token.
/// `421`, `401` or `403` otherwise.
pub async fn viewers_only(
    State(gate): State<Arc<Gate>>,
    mut request: Request,
    next: Next,
) -> Response {
    let query = Query::<TokenQuery>::try_from_uri(request.uri())
        .map(|Query(query)| query)
        .unwrap_or_default();
    let presented = token(request.headers(), &query);
    if let Some(refused) = refuse_site(&gate, &request, presented.as_deref()) {
        return refused;
    }
    if OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    // Handlers that need more than a viewer read the role from the request.
    if let Some(role) = gate
        .tokens
        .role(presented.as_deref())
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
        assert_eq!(
            open.role(None),
            Some(Role::Viewer),
            "nobody operates without a token"
        );
        assert_eq!(open.role(Some("anything-0123456789")), Some(Role::Viewer));
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
        let (first, made) = Tokens::resolve(&access, true).unwrap();
        assert!(made);
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
        assert_eq!(
            Tokens::resolve(&access, true).unwrap(),
            (first.clone(), false)
        );
        assert_eq!(Tokens::resolve(&access, false).unwrap(), (first, false));

        std::fs::write(dir.join("access.toml"), "viewer_token = \"short\"\n").unwrap();
        let err = Tokens::resolve(&access, true).unwrap_err().to_string();
        assert!(err.contains("viewer_token: must be 16 to 128"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_empty_or_garbled_token_file_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("onair-access-{}", random_token()));
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("access.toml");
        let access = onair_config::Access {
            viewer_token: None,
            operator_token: None,
            token_file: Some(file.clone()),
        };
        for text in [
            "",
            "\n",
            "# nothing\n",
            "viewer_token = ",
            "\u{0}\u{1}garbage",
            "[x]\n",
        ] {
            std::fs::write(&file, text).unwrap();
            for make in [true, false] {
                let err = format!("{:#}", Tokens::resolve(&access, make).unwrap_err());
                assert!(err.contains(&file.display().to_string()), "{text:?}: {err}");
            }
            assert_eq!(
                std::fs::read_to_string(&file).unwrap(),
                text,
                "left as it was"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_token_file_cut_short_while_being_made_is_never_left_behind() {
        let dir = std::env::temp_dir().join(format!("onair-access-{}", random_token()));
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("access.toml");
        // The write stops half-way (a crash, a full disk): no file, nothing half made.
        let cut = make_atomically(&file, |f| {
            f.write_all(b"viewer_token = ")?;
            Err(std::io::Error::other("power cut"))
        });
        assert!(cut.is_err());
        assert!(!file.exists());
        // A crash after the staging file was made leaves only that, which the next start
        // writes over: the tokens are then whole.
        std::fs::write(dir.join("access.toml.new"), "").unwrap();
        let access = onair_config::Access {
            viewer_token: None,
            operator_token: None,
            token_file: Some(file.clone()),
        };
        let (made, new) = Tokens::resolve(&access, true).unwrap();
        assert!(new && made.viewer_token.is_some() && made.operator_token.is_some());
        assert_eq!(Tokens::resolve(&access, false).unwrap(), (made, false));
        assert!(!dir.join("access.toml.new").exists());
        // An existing file is never written over.
        let kept = std::fs::read_to_string(&file).unwrap();
        let again = make_atomically(&file, |f| f.write_all(b"viewer_token = \"x\"\n"));
        assert_eq!(again.unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), kept);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
