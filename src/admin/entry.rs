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
/// stands after `wait`; looked at over one connection.
pub async fn settled(
    cfg: &Config,
    id: &str,
    stream: &str,
    wait: Duration,
) -> Result<Whereabouts, Failure> {
    let id = parse(id)?;
    let partition = candidates(cfg, Some(stream))?.remove(0);
    let mut con = connect(&partition).await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let found = look(&partition, &mut con, id).await?;
        if found.state.is_settled() || tokio::time::Instant::now() >= deadline {
            return Ok(found);
        }
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + LOOK_EVERY)).await;
    }
}

/// What became of entry `id`: looked for in each of the relay's streams (`source.streams`), or in
/// `stream` alone when given.
pub async fn find(cfg: &Config, id: &str, stream: Option<&str>) -> Result<Whereabouts, Failure> {
    let id = parse(id)?;
    let mut first = None;
    for partition in candidates(cfg, stream)? {
        let mut con = connect(&partition).await?;
        let whereabouts = look(&partition, &mut con, id).await?;
        if whereabouts.fields.is_some() || whereabouts.state.knows_it() {
            return Ok(whereabouts);
        }
        first.get_or_insert(whereabouts);
    }
    Ok(first.expect("a relay has a stream"))
}

fn bad(message: String) -> Failure {
    Failure {
        code: EXIT_DATA,
        message,
    }
}

fn parse(id: &str) -> Result<EntryId, Failure> {
    id.parse().map_err(bad)
}

/// The partitions to look in: every one, or the one of `stream` (which must be the relay's).
fn candidates(cfg: &Config, stream: Option<&str>) -> Result<Vec<Config>, Failure> {
    let partitions = cfg.partitions();
    let Some(stream) = stream else {
        return Ok(partitions);
    };
    let named: Vec<Config> = partitions
        .into_iter()
        .filter(|p| p.source.stream == stream)
        .collect();
    match named.is_empty() {
        true => Err(bad(format!("{stream:?} is not a stream of this relay"))),
        false => Ok(named),
    }
}

/// What `partition`'s stream, group and dead letters say of `id`, asked in that order, each only
/// when what came before left the answer open.
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
    if let Some(state) = unread(id, in_stream, position(con, stream, group).await?) {
        return Ok(whereabouts(state));
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
    let search = dead_letter_of(con, &partition.dead_letter.stream, id).await?;
    Ok(whereabouts(acknowledged(in_stream, search)))
}

/// How far the group has read.
struct Position {
    last_read: EntryId,
    /// Entries it has yet to read; `None` when Redis cannot tell.
    lag: Option<u64>,
}

/// `group`'s position on `stream`; `None` when there is no such group.
async fn position(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> Result<Option<Position>, Failure> {
    // XINFO GROUPS refuses a stream that does not exist, which has no group either.
    let exists: bool = con.exists(stream).await?;
    if !exists {
        return Ok(None);
    }
    let groups: StreamInfoGroupsReply = con.xinfo_groups(stream).await?;
    let Some(info) = groups.groups.into_iter().find(|g| g.name == group) else {
        return Ok(None);
    };
    let last_read = info.last_delivered_id.parse().map_err(|problem| Failure {
        code: crate::exit::EXIT_FAILURE,
        message: format!("Redis gave the group a last read ID that does not parse: {problem}"),
    })?;
    Ok(Some(Position {
        last_read,
        lag: info.lag.map(|lag| lag as u64),
    }))
}

/// The state when the group has not read `id`: there is no group, or it has not read that far
/// (an entry the stream does not hold is then one that never was). `None` when it read it.
fn unread(id: EntryId, in_stream: bool, group: Option<Position>) -> Option<State> {
    let Some(group) = group else {
        return Some(State::NoGroup);
    };
    if id <= group.last_read {
        return None;
    }
    Some(match in_stream {
        true => State::Unread {
            last_read: group.last_read.to_string(),
            lag: group.lag,
        },
        false => State::Gone,
    })
}

/// What the dead letters written after an entry hold of it.
enum DeadSearch {
    Found(Letter),
    NotThere,
    /// [`DEAD_SCAN`] dead letters were looked at, and there are more.
    Unfinished,
}

/// The dead letter of entry `id` in `dead`, looked for from the entry's millisecond on (a dead
/// letter is written after its entry), [`DEAD_PAGE`] at a time, [`DEAD_SCAN`] at most.
async fn dead_letter_of(
    con: &mut MultiplexedConnection,
    dead: &str,
    id: EntryId,
) -> Result<DeadSearch, Failure> {
    let text = id.to_string();
    let mut from = Start::Oldest(format!("{}-0", id.ms));
    let mut scanned = 0;
    while scanned < DEAD_SCAN {
        let page = browse(con, dead, &from, 1, DEAD_PAGE, Only::Source(&text)).await?;
        if let Some(letter) = page.letters.into_iter().next() {
            return Ok(DeadSearch::Found(letter));
        }
        if page.scanned < DEAD_PAGE {
            return Ok(DeadSearch::NotThere);
        }
        scanned += page.scanned;
        from = Start::Oldest(format!("({}", page.last));
    }
    Ok(DeadSearch::Unfinished)
}

/// What an entry the group read, and no consumer holds any more, became: acknowledged, and
/// dead-lettered or delivered as its dead letters tell; one the stream no longer holds and no dead
/// letter names may never have been.
fn acknowledged(in_stream: bool, search: DeadSearch) -> State {
    match (search, in_stream) {
        (DeadSearch::Found(letter), _) => State::DeadLettered {
            dead_letter: Box::new(letter),
        },
        (DeadSearch::NotThere, true) => State::Delivered,
        (DeadSearch::NotThere, false) => State::Gone,
        (DeadSearch::Unfinished, _) => State::Acknowledged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> EntryId {
        text.parse().unwrap()
    }

    fn read_up_to(last: &str) -> Option<Position> {
        Some(Position {
            last_read: id(last),
            lag: Some(3),
        })
    }

    #[test]
    fn what_the_group_has_not_read_is_unread_or_never_was() {
        assert!(matches!(
            unread(id("5-0"), true, None),
            Some(State::NoGroup)
        ));
        let Some(State::Unread { last_read, lag }) = unread(id("5-1"), true, read_up_to("5-0"))
        else {
            panic!("past the group's last read ID, held by the stream: unread")
        };
        assert_eq!((last_read.as_str(), lag), ("5-0", Some(3)));
        assert!(matches!(
            unread(id("5-1"), false, read_up_to("5-0")),
            Some(State::Gone)
        ));
        for (entry, in_stream) in [("5-0", true), ("4-9", false)] {
            assert!(unread(id(entry), in_stream, read_up_to("5-0")).is_none());
        }
    }

    #[test]
    fn what_was_read_and_left_is_what_its_dead_letters_say() {
        assert!(matches!(
            acknowledged(true, DeadSearch::NotThere),
            State::Delivered
        ));
        assert!(matches!(
            acknowledged(false, DeadSearch::NotThere),
            State::Gone
        ));
        for in_stream in [true, false] {
            assert!(matches!(
                acknowledged(in_stream, DeadSearch::Unfinished),
                State::Acknowledged
            ));
        }
        // Found wins, whether the stream still holds the entry or not.
        for in_stream in [true, false] {
            let letter = Letter {
                id: "6-0".into(),
                stream: "sio-relay:dead".into(),
                time_ms: 6,
                reason: "expired".into(),
                error: "older than its ttl of 1s".into(),
                source_id: "5-0".into(),
                deliveries: "1".into(),
                fields: Vec::new(),
                fields_not_shown: 0,
            };
            let State::DeadLettered { dead_letter } =
                acknowledged(in_stream, DeadSearch::Found(letter))
            else {
                panic!("a dead letter names it: dead-lettered")
            };
            assert_eq!(dead_letter.reason, "expired");
        }
    }
}
