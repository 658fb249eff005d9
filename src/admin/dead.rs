//! Dead-letter operations the `dead` command and the console share: browsing (`lua/browse.lua`
//! cuts every value inside Redis, so a dead letter of many megabytes costs a bounded amount of
//! memory), replaying and dropping.
//!
//! Replay moves a dead letter back to the source stream atomically with its removal (one Lua script,
//! `lua/replay.lua`), so a replay interrupted at any point neither loses nor doubles an entry. `All`
//! walks a snapshot: the dead letters up to the last one present when the walk starts. A running
//! relay dead-letters malformed entries again as they are replayed; those new dead letters lie past
//! the snapshot, so the walk ends instead of chasing its own tail.

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use serde::Serialize;

use super::connect;
use crate::config::Config;
use crate::dead_letter;
use crate::exit::Failure;
use crate::protocol::{DeadField, Lua, Order};

/// Which dead letters a command acts on.
pub struct Selection {
    pub which: Which,
    /// Only dead letters with this `x-dead-reason`.
    pub reason: Option<String>,
}

pub enum Which {
    All,
    Ids(Vec<String>),
}

/// One dead letter, fields shown as text (invalid UTF-8 replaced), packed fields unpacked.
#[derive(Debug, serde::Serialize)]
pub struct DeadLetter {
    /// The dead-letter stream it is in (one per partition with `source.streams`).
    pub stream: String,
    pub id: String,
    pub fields: Vec<(String, String)>,
}

impl DeadLetter {
    /// As [`Letter`], nothing cut (`replay --dry-run` shows what it read whole, as it always did).
    pub fn whole(self) -> Letter {
        let field = |name: DeadField| self.field(name.wire()).to_owned();
        Letter {
            time_ms: self
                .id
                .split('-')
                .next()
                .and_then(|ms| ms.parse().ok())
                .unwrap_or(0),
            reason: field(DeadField::Reason),
            error: field(DeadField::Error),
            source_id: field(DeadField::Id),
            deliveries: field(DeadField::Deliveries),
            fields: self
                .fields
                .iter()
                .filter(|(f, _)| !f.starts_with(DeadField::PREFIX))
                .map(|(name, value)| Field {
                    name: name.clone(),
                    value: value.clone(),
                    bytes: value.len(),
                    truncated: false,
                })
                .collect(),
            fields_not_shown: 0,
            stream: self.stream,
            id: self.id,
        }
    }

    fn field(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(f, _)| f == name)
            .map_or("", |(_, v)| v.as_str())
    }

    fn from_raw(stream: &str, id: String, fields: &RawFields) -> DeadLetter {
        DeadLetter {
            stream: stream.to_owned(),
            id,
            fields: dead_letter::unpacked(fields)
                .into_iter()
                .map(|(f, v)| {
                    (
                        String::from_utf8_lossy(&f).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect(),
        }
    }
}

type RawFields = Vec<(Vec<u8>, Vec<u8>)>;

/// Dead letters read per round trip while walking the stream.
const PAGE: usize = 100;

/// Bytes shown of each field name and value.
pub const VALUE_BYTES: usize = 1024;
/// Packed fields (see [`DeadField::Packed`]) up to this size are unpacked and shown; longer ones are
/// shown cut, as any value.
pub const PACKED_BYTES: usize = 64 << 10;
/// Producer fields shown per dead letter.
pub const FIELDS_SHOWN: usize = 100;
/// Dead letters `list` asks for per round trip: a page costs Redis one short script and the
/// command at most this many cut letters in memory, whatever `--limit` says.
pub const LIST_PAGE: usize = 100;

/// A dead letter as shown by `dead list` and the console: the relay's fields by name, and the
/// producer's fields, each value cut to [`VALUE_BYTES`] and at most [`FIELDS_SHOWN`] of them.
#[derive(Debug, Serialize)]
pub struct Letter {
    pub stream: String,
    pub id: String,
    pub time_ms: u64,
    pub reason: String,
    pub error: String,
    pub source_id: String,
    pub deliveries: String,
    /// The producer's fields; the relay's `x-dead-*` ones are the fields above (packed fields too
    /// large to unpack are listed as `x-dead-fields`, cut).
    pub fields: Vec<Field>,
    /// Producer fields not shown (past [`FIELDS_SHOWN`]).
    pub fields_not_shown: usize,
}

#[derive(Debug, Serialize)]
pub struct Field {
    pub name: String,
    pub value: String,
    /// The value's whole size.
    pub bytes: usize,
    pub truncated: bool,
}

/// Where a [`browse`] starts, excluded.
pub enum Start {
    /// Newest first, before this: `+`, or `(<id>`.
    Newest(String),
    /// Oldest first, after this: `-`, or `(<id>`.
    Oldest(String),
}

/// What [`browse`] read.
pub struct Browsed {
    pub letters: Vec<Letter>,
    /// The last dead letter looked at (empty when none was): the next page starts after it.
    pub last: String,
    pub scanned: usize,
}

type Shown = (String, Vec<redis::Value>, usize);

/// Which dead letters a [`browse`] returns.
#[derive(Clone, Copy, Debug)]
pub enum Only<'a> {
    Every,
    /// Those dead-lettered for this reason.
    Reason(&'a str),
    /// Those of the source entry of this ID.
    Source(&'a str),
}

impl<'a> Only<'a> {
    /// A reason to filter by, or every letter when empty (as the console and `--reason` take it).
    pub fn reason(reason: &'a str) -> Only<'a> {
        match reason {
            "" => Only::Every,
            reason => Only::Reason(reason),
        }
    }

    /// The field and the value `lua/browse.lua` filters by.
    fn wire(self) -> (&'static str, &'a str) {
        match self {
            Only::Every => ("", ""),
            Only::Reason(reason) => (DeadField::Reason.wire(), reason),
            Only::Source(id) => (DeadField::Id.wire(), id),
        }
    }
}

/// Up to `limit` dead letters of `stream` from `from`, looking at `scan` of them at most, only
/// those `only` names, read by `lua/browse.lua`, which cuts every value inside Redis: what reaches
/// this process is bounded by `limit` whatever the dead letters hold. Any stream reads this way,
/// a source stream too (its entries have no `x-dead-*` fields).
pub async fn browse(
    con: &mut MultiplexedConnection,
    stream: &str,
    from: &Start,
    limit: usize,
    scan: usize,
    only: Only<'_>,
) -> Result<Browsed, Failure> {
    let (only_field, only_value) = only.wire();
    let (direction, start) = match from {
        Start::Newest(end) => (Order::Newest, end),
        Start::Oldest(start) => (Order::Oldest, start),
    };
    let (rows, last, scanned): (Vec<Shown>, String, usize) = Lua::Browse
        .script()
        .key(stream)
        .arg(direction.wire())
        .arg(start)
        .arg(limit)
        .arg(scan)
        .arg(only_field)
        .arg(only_value)
        .arg(VALUE_BYTES)
        .arg(PACKED_BYTES)
        .arg(FIELDS_SHOWN)
        .invoke_async(con)
        .await?;
    Ok(Browsed {
        letters: rows.into_iter().map(|row| letter(stream, row)).collect(),
        last,
        scanned,
    })
}

fn letter(stream: &str, (id, shown, total): Shown) -> Letter {
    // name, value, size of the value, ...
    let mut raw = Vec::new();
    let mut sizes = Vec::new();
    for triple in shown.chunks(3) {
        if let [name, value, redis::Value::Int(size)] = triple {
            let bytes = |v: &redis::Value| match v {
                redis::Value::BulkString(b) => b.clone(),
                _ => Vec::new(),
            };
            raw.push((bytes(name), bytes(value)));
            sizes.push(*size as usize);
        }
    }
    let packed = raw
        .iter()
        .zip(&sizes)
        .find(|((f, _), _)| f == DeadField::Packed.wire().as_bytes());
    let packed_whole = packed.is_some_and(|((_, v), size)| v.len() == *size);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let dead = |name: DeadField| {
        raw.iter()
            .find(|(f, _)| f == name.wire().as_bytes())
            .map_or(String::new(), |(_, v)| text(v))
    };
    let mut fields: Vec<Field> = if packed_whole {
        dead_letter::unpacked(&raw)
            .into_iter()
            .filter(|(f, _)| !f.starts_with(DeadField::PREFIX.as_bytes()))
            .map(|(f, v)| Field {
                name: text(&f[..f.len().min(VALUE_BYTES)]),
                value: text(&v[..v.len().min(VALUE_BYTES)]),
                bytes: v.len(),
                truncated: v.len() > VALUE_BYTES,
            })
            .collect()
    } else {
        raw.iter()
            .zip(&sizes)
            .filter(|((f, _), _)| !f.starts_with(DeadField::PREFIX.as_bytes()))
            .map(|((f, v), size)| Field {
                name: text(f),
                value: text(v),
                bytes: *size,
                truncated: v.len() < *size,
            })
            .collect()
    };
    // browse.lua kept FIELDS_SHOWN of the stored ones; unpacked fields are cut here.
    let relays = raw
        .iter()
        .filter(|(f, _)| f.starts_with(DeadField::PREFIX.as_bytes()))
        .count();
    let stored = if packed_whole {
        fields.len()
    } else {
        total - relays
    };
    let fields_not_shown = stored.saturating_sub(FIELDS_SHOWN);
    fields.truncate(FIELDS_SHOWN);
    // Packed fields too large to unpack here are what the dead letter holds: shown cut, with their
    // size, rather than not at all.
    if let (Some(((_, v), size)), false) = (packed, packed_whole) {
        fields.push(Field {
            name: DeadField::Packed.wire().into(),
            value: text(v),
            bytes: *size,
            truncated: true,
        });
    }
    Letter {
        stream: stream.to_owned(),
        time_ms: id
            .split('-')
            .next()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0),
        id,
        reason: dead(DeadField::Reason),
        error: dead(DeadField::Error),
        source_id: dead(DeadField::Id),
        deliveries: dead(DeadField::Deliveries),
        fields,
        fields_not_shown,
    }
}

/// A dead letter's ID and what became of it.
type IdPair = (String, String);

/// What `replay` did: moved (dead ID, new ID), and left in place (dead ID, why).
#[derive(Debug, Default, serde::Serialize)]
pub struct Replayed {
    pub moved: Vec<IdPair>,
    pub skipped: Vec<IdPair>,
}

/// Moves the selected dead letters back to the source stream.
pub async fn replay(cfg: &Config, selection: Selection) -> Result<Replayed, Failure> {
    let mut con = connect(cfg).await?;
    let script = Lua::Replay.script();
    let mut replayed = Replayed::default();
    let mut walk = Walk::new(selection);
    while let Some(page) = walk.next_page(cfg, &mut con).await? {
        if page.is_empty() {
            continue;
        }
        let mut call = script.key(&cfg.dead_letter.stream);
        call.key(&cfg.source.stream);
        for letter in &page {
            call.arg(&letter.id);
        }
        let (moved, skipped): (Vec<IdPair>, Vec<IdPair>) = call.invoke_async(&mut con).await?;
        replayed.moved.extend(moved);
        replayed.skipped.extend(skipped);
    }
    Ok(replayed)
}

/// The selected dead letters, without touching them (`replay --dry-run`).
pub async fn preview(cfg: &Config, selection: Selection) -> Result<Vec<DeadLetter>, Failure> {
    let mut con = connect(cfg).await?;
    let mut letters = Vec::new();
    let mut walk = Walk::new(selection);
    while let Some(page) = walk.next_page(cfg, &mut con).await? {
        letters.extend(page);
    }
    Ok(letters)
}

/// Deletes the selected dead letters; returns how many were deleted.
pub async fn drop(cfg: &Config, selection: Selection) -> Result<usize, Failure> {
    let mut con = connect(cfg).await?;
    let mut dropped = 0;
    let mut walk = Walk::new(selection);
    while let Some(page) = walk.next_page(cfg, &mut con).await? {
        if page.is_empty() {
            continue;
        }
        let ids: Vec<&str> = page.iter().map(|letter| letter.id.as_str()).collect();
        dropped += con
            .xdel::<_, _, usize>(&cfg.dead_letter.stream, &ids)
            .await?;
    }
    Ok(dropped)
}

/// A walk over the selected dead letters, a page at a time: the given IDs, or every dead letter up
/// to the last one present when the walk starts (the snapshot), keeping those with the selected
/// reason.
struct Walk {
    selection: Selection,
    /// The next page starts after this ID (`-`: at the beginning); `None` once done.
    after: Option<String>,
    /// The snapshot's last ID, read on the first page.
    last: Option<String>,
    /// How many of the given IDs were read.
    given: usize,
}

impl Walk {
    fn new(selection: Selection) -> Walk {
        Walk {
            selection,
            after: Some("-".into()),
            last: None,
            given: 0,
        }
    }

    async fn next_page(
        &mut self,
        cfg: &Config,
        con: &mut MultiplexedConnection,
    ) -> Result<Option<Vec<DeadLetter>>, Failure> {
        let stream = &cfg.dead_letter.stream;
        let rows: Vec<(String, RawFields)> = match &self.selection.which {
            Which::Ids(ids) => {
                let chunk = &ids[self.given.min(ids.len())..(self.given + PAGE).min(ids.len())];
                if chunk.is_empty() {
                    return Ok(None);
                }
                self.given += chunk.len();
                let mut pipe = redis::pipe();
                for id in chunk {
                    pipe.xrange(stream, id, id);
                }
                let found: Vec<Vec<(String, RawFields)>> = pipe.query_async(con).await?;
                found.into_iter().flatten().collect()
            }
            Which::All => {
                let Some(after) = self.after.take() else {
                    return Ok(None);
                };
                if self.last.is_none() {
                    let last: Vec<(String, redis::Value)> =
                        con.xrevrange_count(stream, "+", "-", 1).await?;
                    match last.into_iter().next() {
                        Some((id, _)) => self.last = Some(id),
                        None => return Ok(None),
                    }
                }
                let last = self.last.as_deref().unwrap_or("+");
                let page: Vec<(String, RawFields)> =
                    con.xrange_count(stream, &after, last, PAGE).await?;
                if page.len() == PAGE {
                    self.after = page.last().map(|(id, _)| format!("({id}"));
                }
                page
            }
        };
        let reason = self.selection.reason.as_deref();
        Ok(Some(
            rows.into_iter()
                .map(|(id, fields)| DeadLetter::from_raw(stream, id, &fields))
                .filter(|letter| reason.is_none_or(|r| letter.field(DeadField::Reason.wire()) == r))
                .collect(),
        ))
    }
}
