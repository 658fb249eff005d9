//! The console's dead letters: pages of them, newest first, and the replay and drop requests.
//!
//! A page is read as `sio-relay dead list` reads ([`operations::browse`], `lua/browse.lua`), which
//! cuts every value to [`operations::VALUE_BYTES`] inside Redis, so a page costs the relay a
//! bounded amount of memory whatever the dead letters hold. Replay and drop are those of `sio-relay
//! dead replay | drop` ([`crate::admin::dead`]): the same atomic move and the same snapshot of "all
//! of a reason".

use serde::{Deserialize, Serialize};

pub use crate::admin::dead::Letter;
use crate::admin::{self, dead as operations};
use crate::config::Config;
use crate::exit::Failure;
use crate::protocol::ReasonCode;

/// Dead letters per page at most (the default: [`DEFAULT_LIMIT`]).
pub const MAX_LIMIT: usize = 100;
pub const DEFAULT_LIMIT: usize = 50;
/// Dead letters looked at per page when filtering by reason.
pub const SCAN: usize = 1000;
/// IDs one request may name.
pub const MAX_IDS: usize = 1000;

/// What a page asks for (the query string of `GET /console/dead`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PageQuery {
    /// The dead-letter stream; empty: the first.
    pub stream: String,
    pub reason: String,
    /// Only dead letters older than this ID (or a millisecond time, which is an ID's first part).
    pub before: String,
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct Page {
    /// Every reason the relay writes, for the page's filter.
    pub reasons: &'static [ReasonCode],
    /// The dead-letter streams (one per partition).
    pub streams: Vec<String>,
    pub letters: Vec<Letter>,
    /// Pass as `before` for the next, older page; `None` at the end.
    pub next_before: Option<String>,
    pub scanned: usize,
}

/// The partitions' dead-letter streams.
pub fn streams(cfg: &Config) -> Vec<String> {
    cfg.partitions()
        .iter()
        .map(|p| p.dead_letter.stream.clone())
        .collect()
}

/// What is wrong with a request, said to the page (400).
#[derive(Debug, thiserror::Error)]
pub enum BadRequest {
    #[error("{0:?} is not a dead-letter stream of this relay")]
    UnknownStream(String),
    #[error("before: {0:?} is neither an entry ID nor a time in milliseconds")]
    Before(String),
    #[error("all needs a reason: the console acts on every dead letter of one reason")]
    AllWithoutReason,
    #[error("at most {MAX_IDS} ids per request")]
    TooManyIds,
    #[error("nothing selected: give ids, or all and a reason")]
    NothingSelected,
    #[error("give ids or all, not both")]
    IdsAndAll,
}

/// The partition whose dead-letter stream is `stream` (the first one when empty).
fn partition(cfg: &Config, stream: &str) -> Result<Config, BadRequest> {
    let partitions = cfg.partitions();
    if stream.is_empty() {
        return Ok(partitions
            .into_iter()
            .next()
            .expect("at least one partition"));
    }
    partitions
        .into_iter()
        .find(|p| p.dead_letter.stream == stream)
        .ok_or_else(|| BadRequest::UnknownStream(stream.to_owned()))
}

/// An exclusive end for XREVRANGE: `(<id>`, or `+`.
fn end_of(before: &str) -> Result<String, BadRequest> {
    if before.is_empty() {
        return Ok("+".into());
    }
    let (ms, seq) = before.split_once('-').unwrap_or((before, "0"));
    match (ms.parse::<u64>(), seq.parse::<u64>()) {
        (Ok(ms), Ok(seq)) => Ok(format!("({ms}-{seq}")),
        _ => Err(BadRequest::Before(before.to_owned())),
    }
}

pub async fn page(cfg: &Config, query: &PageQuery) -> Result<Page, Failure> {
    let bad = |problem: BadRequest| Failure {
        code: crate::exit::EXIT_DATA,
        message: problem.to_string(),
    };
    let partition = partition(cfg, &query.stream).map_err(bad)?;
    let end = end_of(&query.before).map_err(bad)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let scan = if query.reason.is_empty() { limit } else { SCAN };
    let stream = &partition.dead_letter.stream;
    let mut con = admin::connect(&partition).await?;
    let browsed = operations::browse(
        &mut con,
        stream,
        &operations::Start::Newest(end),
        limit,
        scan,
        operations::Only::reason(&query.reason),
    )
    .await?;
    // More may lie before the last one looked at when the page or the scan was filled.
    let next_before = (browsed.letters.len() == limit || browsed.scanned == scan)
        .then_some(browsed.last)
        .filter(|last| !last.is_empty());
    Ok(Page {
        reasons: ReasonCode::ALL,
        streams: streams(cfg),
        letters: browsed.letters,
        next_before,
        scanned: browsed.scanned,
    })
}

/// What a replay or drop acts on (the body of `POST /console/dead/replay | drop`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// With `ids`: the dead-letter stream they are in (the first one when absent).
    #[serde(default)]
    pub stream: String,
    #[serde(default)]
    pub ids: Vec<String>,
    /// Every dead letter of `reason`, in every dead-letter stream, up to the last one present when
    /// the request came.
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub reason: String,
}

/// The partitions an action applies to, and what it selects in each.
fn targets(
    cfg: &Config,
    action: &Action,
) -> Result<Vec<(Config, operations::Selection)>, BadRequest> {
    match (action.all, action.ids.is_empty()) {
        (true, true) if !action.reason.is_empty() => Ok(cfg
            .partitions()
            .into_iter()
            .map(|p| {
                let selection = operations::Selection {
                    which: operations::Which::All,
                    reason: Some(action.reason.clone()),
                };
                (p, selection)
            })
            .collect()),
        (true, true) => Err(BadRequest::AllWithoutReason),
        (false, false) if action.ids.len() <= MAX_IDS => {
            let selection = operations::Selection {
                which: operations::Which::Ids(action.ids.clone()),
                reason: None,
            };
            Ok(vec![(partition(cfg, &action.stream)?, selection)])
        }
        (false, false) => Err(BadRequest::TooManyIds),
        (false, true) => Err(BadRequest::NothingSelected),
        (true, false) => Err(BadRequest::IdsAndAll),
    }
}

/// A failure of the request itself (400) or of the work (Redis, 502).
pub enum ActionError {
    Request(BadRequest),
    Work(Failure),
}

impl From<Failure> for ActionError {
    fn from(f: Failure) -> Self {
        ActionError::Work(f)
    }
}

pub async fn replay(cfg: &Config, action: &Action) -> Result<operations::Replayed, ActionError> {
    let mut replayed = operations::Replayed::default();
    for (partition, selection) in targets(cfg, action).map_err(ActionError::Request)? {
        let done = operations::replay(&partition, selection).await?;
        replayed.moved.extend(done.moved);
        replayed.skipped.extend(done.skipped);
    }
    Ok(replayed)
}

/// How many were dropped.
pub async fn drop(cfg: &Config, action: &Action) -> Result<usize, ActionError> {
    let mut dropped = 0;
    for (partition, selection) in targets(cfg, action).map_err(ActionError::Request)? {
        dropped += operations::drop(&partition, selection).await?;
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_is_an_exclusive_end() {
        assert_eq!(end_of("").unwrap(), "+");
        assert_eq!(end_of("17-3").unwrap(), "(17-3");
        assert_eq!(end_of("1764750000000").unwrap(), "(1764750000000-0");
        assert!(end_of("yesterday")
            .unwrap_err()
            .to_string()
            .contains("before"));
    }

    #[test]
    fn an_action_selects_ids_of_one_stream_or_all_of_a_reason() {
        let cfg = Config::default();
        let action = |json: &str| serde_json::from_str::<Action>(json).unwrap();
        let ids = targets(&cfg, &action(r#"{"ids":["1-0"]}"#)).unwrap();
        assert_eq!(ids.len(), 1);
        assert!(targets(&cfg, &action(r#"{"all":true,"reason":"malformed"}"#)).is_ok());
        for bad in [
            r#"{"all":true}"#,
            r#"{}"#,
            r#"{"all":true,"reason":"malformed","ids":["1-0"]}"#,
            r#"{"stream":"elsewhere","ids":["1-0"]}"#,
        ] {
            assert!(targets(&cfg, &action(bad)).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Action>(r#"{"id":"1-0"}"#).is_err());
    }
}
