//! Serving a router over HTTP or HTTPS with limits, for both binaries (onair-signal and
//! onaird): a client that stalls is closed and never holds a task or a slot for long.
//!
//! | limit | policy |
//! |---|---|
//! | [`Limits::max_connections`] | beyond it, new connections wait in the kernel's listen queue until one closes |
//! | [`HANDSHAKE_TIMEOUT`] | a TLS handshake that takes longer is dropped |
//! | [`Limits::header_timeout`] | a connection must send a request's headers this soon after it opens or after its previous response (so it is also the keep-alive idle limit), else it is closed |
//! | [`Limits::body_timeout`] | a request body must arrive whole within it, else `408` |
//! | [`Limits::max_body`] | a larger body is refused with `413` on every route |
//! | [`Limits::request_timeout`] | a request that takes longer, body to response, is answered `408` |
//!
//! WebSocket connections leave the count once upgraded; the signalling routes cap them
//! separately (see [`crate::server`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tower_http::timeout::TimeoutLayer;
use tracing::debug;

/// A TLS handshake that takes longer is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once (not counting upgraded WebSockets).
    pub max_connections: usize,
    /// Time to send a request's headers, from connecting or from the previous response.
    pub header_timeout: Duration,
    /// Longest time for a request body to arrive.
    pub body_timeout: Duration,
    /// Longest time for a whole request.
    pub request_timeout: Duration,
    /// Largest request body, in bytes.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_body: 64 * 1024,
        }
    }
}

/// Serves `app` on `listener` (HTTPS when `tls` is given) until `shutdown` completes, then
/// lets the requests in flight finish and returns once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let app = app
        .layer(middleware::from_fn_with_state(limits, whole_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop) = watch::channel(false);
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait and carry on.
                    debug!("accept: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = Connection {
            app: app.clone(),
            header_timeout: limits.header_timeout,
            stop: stop.clone(),
            _slot: slot,
        };
        connections.spawn(connection.run(stream, peer, tls.clone()));
    }
    let _ = stop_tx.send(true);
    connections.close();
    connections.wait().await;
}

/// Middleware: reads the request's body whole, at most [`Limits::max_body`] bytes within
/// [`Limits::body_timeout`], before any handler runs, so no handler waits on a client.
async fn whole_body(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let body = Limited::new(body, limits.max_body).collect();
    let refused = |status: StatusCode, why: String| (status, format!("{why}\n")).into_response();
    match tokio::time::timeout(limits.body_timeout, body).await {
        Ok(Ok(body)) => {
            next.run(Request::from_parts(parts, Body::from(body.to_bytes())))
                .await
        }
        Ok(Err(err)) if err.is::<LengthLimitError>() => refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body larger than the limit of {} bytes",
                limits.max_body
            ),
        ),
        Ok(Err(err)) => refused(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {err}"),
        ),
        Err(_) => refused(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                limits.body_timeout.as_secs()
            ),
        ),
    }
}

/// One accepted connection and what it needs; holds its slot until it ends.
struct Connection {
    app: Router,
    header_timeout: Duration,
    stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(self, stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>) {
        let Some(acceptor) = tls else {
            return self.serve(stream, peer).await;
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => self.serve(stream, peer).await,
            Ok(Err(err)) => debug!(%peer, "TLS handshake failed: {err}"),
            Err(_) => debug!(%peer, "TLS handshake timed out"),
        }
    }

    /// HTTP/1.1 (WebSocket upgrades included) until the client closes, stalls, or the server
    /// stops.
    async fn serve<S>(mut self, stream: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // Handlers that count by client address read it as axum's `ConnectInfo`.
        let service = TowerToHyperService::new(self.app.map_request(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        ));
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = stopped(&mut self.stop) => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(err) = result {
            debug!(%peer, "connection ended: {err}");
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
