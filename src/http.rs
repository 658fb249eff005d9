//! The health and metrics listener: `GET /livez`, `/readyz` and `/metrics` on `http.listen`.
//!
//! Plain HTTP/1 on hyper, bound at start so that a taken port stops the relay with a clear error
//! instead of leaving it unprobeable. It stops accepting when the relay shuts down.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::health::Health;
use crate::metrics::Metrics;

/// What the endpoints read.
#[derive(Clone)]
pub struct Probes {
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
}

/// Binds `addr`; the error says which address could not be used.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("http.listen: cannot listen on {addr}: {e}"))
}

/// Serves the endpoints until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, probes: Probes, shutdown: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving /livez, /readyz and /metrics");
    }
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    debug!(error = %e, "HTTP accept failed");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let probes = probes.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = respond(&req, &probes);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(error = %e, "HTTP connection failed");
            }
        });
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
            Ok(()) => text(StatusCode::OK, "ok\n".into()),
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
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
