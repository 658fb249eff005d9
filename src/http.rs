//! The health and metrics listener: `GET /livez`, `/readyz` and `/metrics` on `http.listen`, and
//! the operator console at `/` when `http.console` is on (see [`crate::console`]).
//!
//! Plain HTTP/1 on hyper, bound at start so that a taken port stops the relay with a clear error
//! instead of leaving it unprobeable. It runs on a thread of its own, so that probes answer while
//! the relay works on a big batch, and nothing a client does there can slow the relay's Redis
//! work: at most [`MAX_CONNECTIONS`] at once (more wait in the kernel's queue), headers within
//! [`HEADER_TIMEOUT`], a connection closed after [`CONNECTION_LIFETIME`], and accept errors (out of
//! file descriptors) backed off instead of retried in a spin. It stops when the relay shuts down.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::console::Console;
use crate::health::{Loops, Readiness};
use crate::metrics::Metrics;

/// Connections served at once; probes and scrapes need a handful.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection may stay open, idle or not.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// What the endpoints read.
#[derive(Clone)]
pub struct Probes {
    pub health: Loops,
    pub metrics: Arc<Metrics>,
    /// `http.console = true`.
    pub console: Option<Arc<Console>>,
}

/// Binds `addr` at start; the error says which address could not be used.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, BindError> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|error| BindError { addr, error })?;
    Ok(listener)
}

/// The listener's address cannot be listened on.
#[derive(Debug, thiserror::Error)]
#[error("http.listen: cannot listen on {addr}: {error}")]
pub struct BindError {
    addr: SocketAddr,
    error: std::io::Error,
}

/// Serves the endpoints on a thread of its own until `shutdown` is cancelled.
pub fn spawn(
    listener: std::net::TcpListener,
    probes: Probes,
    shutdown: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("sio-relay-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, probes, shutdown).await,
                    Err(e) => warn!(error = %e, "cannot serve http.listen"),
                }
            })
        })
}

async fn serve(listener: TcpListener, probes: Probes, shutdown: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        match &probes.console {
            Some(_) => info!(%addr, "serving /livez, /readyz, /metrics and the console at /"),
            None => info!(%addr, "serving /livez, /readyz and /metrics"),
        }
    }
    if let Some(console) = &probes.console {
        tokio::spawn(console.clone().sample(shutdown.clone()));
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = Duration::ZERO;
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => return,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    backoff = Duration::ZERO;
                    stream
                }
                Err(e) => {
                    // Out of file descriptors, typically: retrying at once would spin.
                    if backoff.is_zero() {
                        warn!(error = %e, "HTTP accept failed; backing off");
                    }
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let probes = probes.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| {
                let probes = probes.clone();
                async move { Ok::<_, Infallible>(route(req, &probes).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Err(e)) => debug!(error = %e, "HTTP connection failed"),
                Err(_) => debug!("HTTP connection closed after its lifetime"),
                Ok(Ok(())) => {}
            }
        });
    }
}

async fn route(req: Request<Incoming>, probes: &Probes) -> Response<Full<Bytes>> {
    match &probes.console {
        Some(console) if Console::serves(req.uri().path()) => console.respond(req).await,
        _ => respond(&req, probes),
    }
}

fn respond<B>(req: &Request<B>, probes: &Probes) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match req.uri().path() {
        "/livez" if probes.health.is_live() => text(StatusCode::OK, "ok\n".into()),
        "/livez" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the relay loop is stuck\n".into(),
        ),
        "/readyz" => match probes.health.readiness() {
            Readiness::Ready => text(StatusCode::OK, "ok\n".into()),
            Readiness::NotReady(reason) => {
                text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n"))
            }
        },
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(probes.metrics.render())));
            response.headers_mut().insert(
                CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
                    .parse()
                    .expect("a valid header value"),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /livez, /readyz or /metrics\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        "text/plain; charset=utf-8"
            .parse()
            .expect("a valid header value"),
    );
    response
}
