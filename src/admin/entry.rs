//! What became of one stream entry, read from Redis alone: the stream, its group's last read ID and
//! pending list, the held record and the dead-letter stream. For `sio-relay entry <ID>` and the
//! console, which follows the entries it sends: an operator asked "did 1733-0 reach anyone?" gets
//! an answer without reading logs.
//!
//! Every look is bounded whatever the entries hold: the entry's fields come through
//! `lua/browse.lua` (each value cut to [`VALUE_BYTES`]), and its dead letter is looked for among
//! at most [`DEAD_SCAN`] dead letters written after it, a page at a time.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamInfoGroupsReply, StreamPendingCountReply};
use redis::AsyncCommands;
use serde::Serialize;

use super::connect;
#[cfg(doc)]
use super::dead::VALUE_BYTES;
use super::dead::{browse, Field, Letter, Only, Start};
use crate::config::Config;
use crate::delivery::Keys;
use crate::entry::EntryId;
use crate::exit::{Failure, EXIT_DATA};

/// Dead letters looked at, after the entry's time, for its own.
pub const DEAD_SCAN: usize = 10_000;
/// Dead letters a page of that search looks at: `lua/browse.lua` reads a page whole inside Redis
/// before it cuts the values, and a dead letter can be as large as an entry may be.
const DEAD_PAGE: usize = 100;

/// What became of an entry.
#[derive(Debug, Serialize)]
pub struct Whereabouts {
    pub id: String,
    /// The relay's stream (the partition) it was looked for in.
    pub stream: String,
    pub group: String,
    /// Its fields, each value cut to [`VALUE_BYTES`]; `None` when the stream does not hold it.
    pub fields: Option<Vec<Field>>,
    #[serde(flatten)]
    pub state: State,
}

/// Where the entry stands, as Redis tells it.
#[derive(Debug, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// The group does not exist: no relay has read the stream yet.
    NoGroup,
    /// The group has not read it yet.
    Unread {
        /// The last entry the group read.
        last_read: String,
        /// Entries the group has yet to read; `None` when Redis cannot tell.
        lag: Option<u64>,
    },
    /// Pending, recorded as held: no (or too few) Socket.IO servers listen on its namespace, or it
    /// waits behind an older held entry of its namespace, or for its clients to come back.
    Held(Holder),
    /// Pending otherwise: being delivered, or waiting for the servers' confirmation or for its
    /// clients' acknowledgements.
    InHand(Holder),
    /// Acknowledged and dead-lettered.
    DeadLettered { dead_letter: Box<Letter> },
    /// Acknowledged and not dead-lettered: delivered.
    Delivered,
    /// Acknowledged; whether it was dead-lettered is not known, since more dead letters than
    /// [`DEAD_SCAN`] were written after it.
    Acknowledged,
    /// The stream does not hold it (any more: trimmed or deleted, if it ever was), and neither
    /// the pending list nor the dead letters know it.
    Gone,
}

/// The consumer an entry is pending for, as XPENDING says.
#[derive(Debug, PartialEq, Serialize)]
pub struct Holder {
    pub consumer: String,
    pub idle_ms: u64,
    pub deliveries: u64,
}

impl State {
    /// Whether it will stay so: the entry left the relay's hands (or the stream).
    pub fn is_settled(&self) -> bool {
        match self {
            State::DeadLettered { .. } | State::Delivered | State::Acknowledged | State::Gone => {
                true
            }
            State::NoGroup | State::Unread { .. } | State::Held(_) | State::InHand(_) => false,
        }
    }

    /// Whether Redis said anything of the entry beyond the group's position.
    fn knows_it(&self) -> bool {
        matches!(
            self,
            State::Held(_) | State::InHand(_) | State::DeadLettered { .. }
        )
    }
}

/// How often [`settled`] looks.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// What became of entry `id` of `stream` once it settled ([`State::is_settled`]), or where it
/// stands after `wait`.
pub async fn settled(
    cfg: &Config,
    id: &str,
    stream: &str,
    wait: Duration,
) -> Result<Whereabouts, Failure> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let found = find(cfg, id, Some(stream)).await?;
        if found.state.is_settled() || tokio::time::Instant::now() >= deadline {
            return Ok(found);
        }
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + LOOK_EVERY)).await;
    }
}

/// What became of entry `id`: looked for in each of the relay's streams (`source.streams`), or in
/// `stream` alone when given.
pub async fn find(cfg: &Config, id: &str, stream: Option<&str>) -> Result<Whereabouts, Failure> {
    let bad = |message: String| Failure {
        code: EXIT_DATA,
        message,
    };
    let parsed: EntryId = id.parse().map_err(bad)?;
    let partitions = cfg.partitions();
    let candidates: Vec<&Config> = match stream {
        None => partitions.iter().collect(),
        Some(stream) => {
            let found: Vec<&Config> = partitions
                .iter()
                .filter(|p| p.source.stream == stream)
                .collect();
            if found.is_empty() {
                return Err(bad(format!("{stream:?} is not a stream of this relay")));
            }
            found
        }
    };
    let mut first = None;
    for partition in candidates {
        let mut con = connect(partition).await?;
        let whereabouts = look(partition, &mut con, parsed).await?;
        if whereabouts.fields.is_some() || whereabouts.state.knows_it() {
            return Ok(whereabouts);
        }
        first.get_or_insert(whereabouts);
    }
    Ok(first.expect("a relay has a stream"))
}

/// What `partition`'s stream, group and dead letters say of `id`.
async fn look(
    partition: &Config,
    con: &mut MultiplexedConnection,
    id: EntryId,
) -> Result<Whereabouts, Failure> {
    let (stream, group) = (&partition.source.stream, &partition.source.group);
    let text = id.to_string();
    let read = browse(con, stream, &Start::Oldest(text.clone()), 1, 1, Only::Every).await?;
    let fields = read
        .letters
        .into_iter()
        .find(|entry| entry.id == text)
        .map(|entry| entry.fields);
    let in_stream = fields.is_some();
    let whereabouts = |state| Whereabouts {
        id: text.clone(),
        stream: stream.clone(),
        group: group.clone(),
        fields,
        state,
    };
    // XINFO GROUPS refuses a stream that does not exist, which has no group either.
    let exists: bool = con.exists(stream).await?;
    let groups: StreamInfoGroupsReply = match exists {
        true => con.xinfo_groups(stream).await?,
        false => StreamInfoGroupsReply::default(),
    };
    let Some(info) = groups.groups.into_iter().find(|g| &g.name == group) else {
        return Ok(whereabouts(State::NoGroup));
    };
    let last_read: EntryId = info.last_delivered_id.parse().map_err(|problem| Failure {
        code: crate::exit::EXIT_FAILURE,
        message: format!("Redis gave the group a last read ID that does not parse: {problem}"),
    })?;
    if id > last_read {
        return Ok(whereabouts(match in_stream {
            true => State::Unread {
                last_read: info.last_delivered_id,
                lag: info.lag.map(|lag| lag as u64),
            },
            false => State::Gone,
        }));
    }
    let pending: StreamPendingCountReply =
        con.xpending_count(stream, group, &text, &text, 1).await?;
    if let Some(p) = pending.ids.into_iter().next() {
        let held: bool = con.hexists(Keys::new(partition).held, &text).await?;
        let holder = Holder {
            consumer: p.consumer,
            idle_ms: p.last_delivered_ms as u64,
            deliveries: p.times_delivered as u64,
        };
        return Ok(whereabouts(match held {
            true => State::Held(holder),
            false => State::InHand(holder),
        }));
    }
    let dead = &partition.dead_letter.stream;
    // A dead letter is written after its entry: from the entry's millisecond on.
    let mut from = Start::Oldest(format!("{}-0", id.ms));
    let mut scanned = 0;
    while scanned < DEAD_SCAN {
        let page = browse(con, dead, &from, 1, DEAD_PAGE, Only::Source(&text)).await?;
        if let Some(letter) = page.letters.into_iter().next() {
            return Ok(whereabouts(State::DeadLettered {
                dead_letter: Box::new(letter),
            }));
        }
        scanned += page.scanned;
        if page.scanned < DEAD_PAGE {
            return Ok(whereabouts(match in_stream {
                true => State::Delivered,
                false => State::Gone,
            }));
        }
        from = Start::Oldest(format!("({}", page.last));
    }
    Ok(whereabouts(State::Acknowledged))
}
