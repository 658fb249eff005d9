//! The operator console: a page at `/` of the HTTP listener (`http.console = true`) with the live
//! flow, the dead letters, which it can replay and drop, and a form that sends an entry and follows
//! what becomes of it.
//!
//! The page and its script are embedded in the binary (`assets/`, no build step) and read JSON:
//! `GET /console/state` (what `sio-relay status` shows, the relay's own counters and the last
//! minutes of them, see [`history`]), `GET /console/dead` (a page of dead letters, see [`dead`])
//! and `GET /console/entry` (what became of one entry, see [`crate::admin::entry`]);
//! `POST /console/dead/replay | drop` and `POST /console/send` (an entry appended to the stream,
//! as `sio-relay send` appends it: see [`crate::admin::send`]) change things, behind [`guard`].
//! It runs on the HTTP thread, with Redis connections of its own, kept from one look to the next
//! (those of the status; the dead letters and the entries are looked at on one-off ones): a
//! console left open costs the relay's loop nothing.

pub mod dead;
pub mod guard;
pub mod history;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::admin::{
    self,
    status::{self, Status},
};
use crate::config::Config;
use crate::metrics::Metrics;
use guard::Token;
use history::{History, Sample};

/// How often the page asks for the state.
pub const REFRESH: Duration = Duration::from_secs(2);

/// How long one look at Redis (`status`) serves every open page: many pages cost one.
const STATUS_TTL: Duration = Duration::from_secs(1);

/// The largest body a mutation may send (a selection of [`dead::MAX_IDS`] IDs fits).
const MAX_BODY: usize = 64 << 10;

/// The paths of the requests that change things: `POST` only, behind [`guard::check`].
const CHANGES: [&str; 3] = [
    "/console/dead/replay",
    "/console/dead/drop",
    "/console/send",
];

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// Scripts and styles only from the console itself, requests only to it, never in a frame.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub struct Console {
    cfg: Config,
    metrics: Arc<Metrics>,
    token: Token,
    history: History,
    status: tokio::sync::Mutex<Looks>,
    /// Held while an entry is looked up: one at a time, however many are asked for (a look may
    /// read up to [`admin::entry::DEAD_SCAN`] dead letters inside Redis).
    entry_looks: tokio::sync::Mutex<()>,
}

/// The last look at Redis, and the connections the next one uses.
#[derive(Default)]
struct Looks {
    last: Option<(Instant, Arc<Status>)>,
    links: Option<status::Links>,
}

/// What `GET /console/state` answers.
#[derive(Serialize)]
struct State<'a> {
    version: &'static str,
    /// A token is configured: replay, drop and send are possible.
    writable: bool,
    refresh_ms: u64,
    status: &'a Status,
    relay: RelayState,
    history: Vec<Sample>,
}

/// What only this relay process knows.
#[derive(Serialize)]
struct RelayState {
    consumer: String,
    redis_connected: bool,
    redis_refusing: bool,
    held_entries: i64,
    parked_entries: i64,
    acks_waiting: i64,
    held_by_namespace: Vec<HeldNamespace>,
    held_namespaces_not_shown: usize,
}

#[derive(Serialize)]
struct HeldNamespace {
    nsp: String,
    held: usize,
}

impl Console {
    pub fn new(cfg: Config, metrics: Arc<Metrics>) -> Console {
        Console {
            token: Token::of(&cfg.http),
            cfg,
            metrics,
            history: History::default(),
            status: tokio::sync::Mutex::default(),
            entry_looks: tokio::sync::Mutex::default(),
        }
    }

    /// True for the paths the console answers.
    pub fn serves(path: &str) -> bool {
        matches!(path, "/" | "/console.js" | "/console.css") || path.starts_with("/console/")
    }

    /// Samples the counters every [`history::INTERVAL`] until `shutdown`.
    pub async fn sample(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(history::INTERVAL);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.history.record(Sample::take(&self.metrics)),
                _ = shutdown.cancelled() => return,
            }
        }
    }

    pub async fn respond(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if let Err(refused) = guard::check_host(req.headers(), &self.cfg.http.console_hosts) {
            return error(refused.status, &refused.error);
        }
        let path = req.uri().path().to_owned();
        let get = req.method() == Method::GET || req.method() == Method::HEAD;
        match (get, path.as_str()) {
            (true, "/") => asset(INDEX, "text/html; charset=utf-8"),
            (true, "/console.js") => asset(SCRIPT, "text/javascript; charset=utf-8"),
            (true, "/console.css") => asset(STYLE, "text/css; charset=utf-8"),
            (true, "/console/state") => self.state().await,
            (true, "/console/dead") => self.dead_page(req.uri().query().unwrap_or("")).await,
            (true, "/console/entry") => self.entry(req.uri().query().unwrap_or("")).await,
            (_, change) if CHANGES.contains(&change) => {
                if req.method() == Method::POST {
                    self.mutate(req).await
                } else {
                    error(StatusCode::METHOD_NOT_ALLOWED, "only POST changes things")
                }
            }
            (false, _) => error(StatusCode::METHOD_NOT_ALLOWED, "only GET"),
            _ => error(StatusCode::NOT_FOUND, "not found"),
        }
    }

    async fn state(&self) -> Response<Full<Bytes>> {
        let status = self.status().await;
        let m = &self.metrics;
        let censuses: Vec<_> = m.streams().iter().map(|s| s.census()).collect();
        let streams = m.streams().iter();
        let state = State {
            version: env!("CARGO_PKG_VERSION"),
            writable: self.token.is_configured(),
            refresh_ms: REFRESH.as_millis() as u64,
            status: &status,
            relay: RelayState {
                consumer: self.cfg.source.consumer.clone(),
                redis_connected: streams.clone().all(|s| s.is_connected()),
                redis_refusing: streams.clone().any(|s| s.redis_refusing.get() == 1),
                held_entries: m.sum(|s| s.held_now.get()),
                parked_entries: m.sum(|s| s.parked.get()),
                acks_waiting: m.sum(|s| s.acks_waiting.get()),
                held_namespaces_not_shown: censuses.iter().map(|c| c.not_shown).sum(),
                held_by_namespace: censuses
                    .into_iter()
                    .flat_map(|c| c.shown)
                    .map(|(nsp, held)| HeldNamespace { nsp, held })
                    .collect(),
            },
            history: self.history.samples(),
        };
        json(StatusCode::OK, &state)
    }

    /// `status` of the relay's Redis, looked at once per [`STATUS_TTL`] whatever the pages open,
    /// over connections kept from one look to the next.
    async fn status(&self) -> Arc<Status> {
        let mut looks = self.status.lock().await;
        if let Some((at, status)) = looks.last.as_ref() {
            if at.elapsed() < STATUS_TTL {
                return status.clone();
            }
        }
        let status = Arc::new(status::gather_over(&self.cfg, &mut looks.links).await);
        looks.last = Some((Instant::now(), status.clone()));
        status
    }

    async fn dead_page(&self, query: &str) -> Response<Full<Bytes>> {
        let mut page = dead::PageQuery::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "stream" => page.stream = value.into_owned(),
                "reason" => page.reason = value.into_owned(),
                "before" => page.before = value.into_owned(),
                "limit" => match value.parse() {
                    Ok(limit) => page.limit = Some(limit),
                    Err(_) => return error(StatusCode::BAD_REQUEST, "limit: not a number"),
                },
                other => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("unknown parameter {other:?} (stream, reason, before, limit)"),
                    )
                }
            }
        }
        match dead::page(&self.cfg, &page).await {
            Ok(page) => json(StatusCode::OK, &page),
            Err(f) => failed(&f),
        }
    }

    async fn mutate(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if let Err(refused) = guard::check(req.headers(), &self.token) {
            tracing::warn!(path = req.uri().path(), error = %refused.error, "console: refused a change");
            return error(refused.status, &refused.error);
        }
        let path = req.uri().path().to_owned();
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the body could not be read within {MAX_BODY} bytes: {e}"),
                )
            }
        };
        if path == "/console/send" {
            return self.send(&body).await;
        }
        let action: dead::Action = match serde_json::from_slice(&body) {
            Ok(action) => action,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("the body: {e}")),
        };
        let outcome = if path == "/console/dead/replay" {
            dead::replay(&self.cfg, &action).await.map(|replayed| {
                tracing::info!(
                    moved = replayed.moved.len(),
                    skipped = replayed.skipped.len(),
                    "console: replayed dead letters"
                );
                json(StatusCode::OK, &replayed)
            })
        } else {
            dead::drop(&self.cfg, &action).await.map(|dropped| {
                tracing::info!(dropped, "console: dropped dead letters");
                json(StatusCode::OK, &serde_json::json!({ "dropped": dropped }))
            })
        };
        outcome.unwrap_or_else(|e| match e {
            dead::ActionError::Request(problem) => {
                error(StatusCode::BAD_REQUEST, &problem.to_string())
            }
            dead::ActionError::Work(f) => error(StatusCode::BAD_GATEWAY, &f.message),
        })
    }
}

impl Console {
    /// What became of an entry (`?id=<ID>&stream=<stream>`, the stream optional), as `sio-relay
    /// entry` says: the page follows the entries it sent with it.
    async fn entry(&self, query: &str) -> Response<Full<Bytes>> {
        let (mut id, mut stream) = (None, None);
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "id" => id = Some(value.into_owned()),
                "stream" if !value.is_empty() => stream = Some(value.into_owned()),
                "stream" => {}
                other => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("unknown parameter {other:?} (id, stream)"),
                    )
                }
            }
        }
        let Some(id) = id else {
            return error(StatusCode::BAD_REQUEST, "id: which entry?");
        };
        let _one_at_a_time = self.entry_looks.lock().await;
        match admin::entry::find(&self.cfg, &id, stream.as_deref()).await {
            Ok(found) => json(StatusCode::OK, &found),
            Err(f) => failed(&f),
        }
    }

    /// Appends the entry the body describes (an [`admin::send::Request`] in JSON) to the stream,
    /// validated against the configured limits first: 400 names what the relay would dead-letter.
    async fn send(&self, body: &[u8]) -> Response<Full<Bytes>> {
        let request: admin::send::Request = match serde_json::from_slice(body) {
            Ok(request) => request,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("the body: {e}")),
        };
        match admin::send::to_stream(&self.cfg, &request).await {
            Ok(appended) => {
                tracing::info!(id = %appended.id, stream = %appended.stream, "console: appended an entry");
                json(StatusCode::OK, &appended)
            }
            Err(f) => failed(&f),
        }
    }
}

/// A response with the headers every console response carries.
fn response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

fn asset(text: &'static str, content_type: &'static str) -> Response<Full<Bytes>> {
    response(
        StatusCode::OK,
        content_type,
        Bytes::from_static(text.as_bytes()),
    )
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).expect("the console's replies serialize");
    response(status, "application/json", Bytes::from(body))
}

/// A command's failure as the page reads it: 400 for what the request got wrong, 502 for Redis.
fn failed(f: &crate::exit::Failure) -> Response<Full<Bytes>> {
    let status = match f.code {
        crate::exit::EXIT_DATA => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    };
    error(status, &f.message)
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message }))
}
