//! `sio-relay dead list | replay | drop`: look into the dead-letter stream and repair.
//!
//! `list` reads through `lua/browse.lua`, as the console's pages do ([`browse`]): every value is cut
//! to [`VALUE_BYTES`] inside Redis, and fields to [`FIELDS_SHOWN`], with what was cut counted, so a
//! dead letter of many megabytes costs the command (and the relay's console) a bounded amount of
//! memory, and the listing is written a page at a time.
//!
//! Replay moves a dead letter back to the source stream atomically with its removal (one Lua script,
//! `lua/replay.lua`), so a replay interrupted at any point neither loses nor doubles an entry. `--all`
//! walks a snapshot: the dead letters up to the last one present when the command starts. A running
//! relay dead-letters malformed entries again as they are replayed; those new dead letters lie past
//! the snapshot, so the command ends instead of chasing its own tail.

use std::io::Write;

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use serde::Serialize;

use super::{block_on, connect, printable};
use crate::config::Config;
use crate::dead_letter;
use crate::exit::{Failure, EXIT_FAILURE};
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
    fn whole(self) -> Letter {
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

/// `sio-relay dead replay | drop` (`list` is [`list`]).
pub enum Command {
    Replay { chosen: Chosen, dry_run: bool },
    Drop { chosen: Chosen },
}

/// What the command line chose: IDs, or `--all`, and `--reason`.
pub struct Chosen {
    pub ids: Vec<String>,
    pub all: bool,
    pub reason: Option<String>,
}

impl Chosen {
    fn selection(&self) -> Selection {
        Selection {
            which: if self.all {
                Which::All
            } else {
                Which::Ids(self.ids.clone())
            },
            reason: self.reason.clone(),
        }
    }
}

/// `dead ...` on the dead-letter stream of each partition in turn (one without `source.streams`);
/// the text to print.
pub fn run(cfg: &Config, command: Command) -> Result<String, Failure> {
    let partitions = cfg.partitions();
    match command {
        Command::Replay {
            chosen,
            dry_run: true,
        } => {
            let mut letters = Vec::new();
            for partition in &partitions {
                letters.extend(block_on(preview(partition, chosen.selection()))?);
            }
            let whole: Vec<Letter> = letters.into_iter().map(DeadLetter::whole).collect();
            let mut text = render(&whole);
            text.push_str(&format!(
                "would replay {} dead letter(s); nothing changed (--dry-run)\n",
                whole.len()
            ));
            Ok(text)
        }
        Command::Replay { chosen, .. } => {
            let (mut text, mut moved) = (String::new(), 0);
            for partition in &partitions {
                let replayed = block_on(replay(partition, chosen.selection()))?;
                for (dead, new) in &replayed.moved {
                    text.push_str(&format!("{dead} -> {} {new}\n", partition.source.stream));
                }
                for (dead, why) in &replayed.skipped {
                    text.push_str(&format!("{dead} left in place: {why}\n"));
                }
                moved += replayed.moved.len();
            }
            text.push_str(&format!("replayed {moved} dead letter(s)\n"));
            Ok(text)
        }
        Command::Drop { chosen } => {
            let mut dropped = 0;
            for partition in &partitions {
                dropped += block_on(drop(partition, chosen.selection()))?;
            }
            Ok(format!("dropped {dropped} dead letter(s)\n"))
        }
    }
}

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

/// Up to `limit` dead letters of `stream` from `from`, looking at `scan` of them at most, only
/// those of `reason` (empty: any), read by `lua/browse.lua`, which cuts every value inside Redis:
/// what reaches this process is bounded by `limit` whatever the dead letters hold.
pub async fn browse(
    con: &mut MultiplexedConnection,
    stream: &str,
    from: &Start,
    limit: usize,
    scan: usize,
    reason: &str,
) -> Result<Browsed, Failure> {
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
        .arg(reason)
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

/// `dead list`: the oldest `limit` dead letters of each partition's dead-letter stream, written to
/// `out` a page at a time ([`LIST_PAGE`] letters, each cut by [`browse`]), as text or as one JSON
/// array of [`Letter`]s. A closed pipe (`dead list | head`) ends it quietly.
pub fn list(cfg: &Config, limit: usize, json: bool, out: &mut impl Write) -> Result<(), Failure> {
    let partitions = cfg.partitions();
    let mut listing = Listing {
        out,
        json,
        several: partitions.len() > 1,
        written: 0,
    };
    let done = (|| {
        listing.write(if json { "[" } else { "" })?;
        for partition in &partitions {
            block_on(async { Ok(list_partition(partition, limit, &mut listing).await) })??;
        }
        listing.write(if json { "\n]\n" } else { "" })
    })();
    match done {
        Err(ListError::Closed) => Ok(()),
        Err(ListError::Failed(failure)) => Err(failure),
        Ok(()) => Ok(()),
    }
}

async fn list_partition(
    cfg: &Config,
    limit: usize,
    listing: &mut Listing<'_, impl Write>,
) -> Result<(), ListError> {
    let mut con = connect(cfg).await?;
    let stream = &cfg.dead_letter.stream;
    let mut from = Start::Oldest("-".into());
    let mut left = limit;
    let mut first = true;
    while left > 0 {
        let page = left.min(LIST_PAGE);
        let browsed = browse(&mut con, stream, &from, page, page, "").await?;
        for letter in &browsed.letters {
            if first && listing.several && !listing.json {
                listing.write(&format!("== {}\n", printable(stream)))?;
            }
            first = false;
            listing.letter(letter)?;
        }
        left -= browsed.letters.len();
        if browsed.letters.len() < page || browsed.last.is_empty() {
            break;
        }
        from = Start::Oldest(format!("({}", browsed.last));
    }
    Ok(())
}

/// Where `list` writes, and how.
struct Listing<'a, W: Write> {
    out: &'a mut W,
    json: bool,
    /// Several dead-letter streams (partitions): each one's letters after a line naming it.
    several: bool,
    written: usize,
}

enum ListError {
    /// The reader went away (`dead list | head`): nothing more to write.
    Closed,
    Failed(Failure),
}

impl From<Failure> for ListError {
    fn from(f: Failure) -> Self {
        ListError::Failed(f)
    }
}

impl<W: Write> Listing<'_, W> {
    fn write(&mut self, text: &str) -> Result<(), ListError> {
        self.out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::BrokenPipe => ListError::Closed,
                _ => ListError::Failed(Failure {
                    code: EXIT_FAILURE,
                    message: format!("cannot write the list: {e}"),
                }),
            })
    }

    fn letter(&mut self, letter: &Letter) -> Result<(), ListError> {
        let text = if self.json {
            let separator = if self.written == 0 { "\n" } else { ",\n" };
            let json = serde_json::to_string(letter).expect("a dead letter serializes");
            format!("{separator}{json}")
        } else {
            render_letter(letter)
        };
        self.written += 1;
        self.write(&text)
    }
}

/// Text for dead letters: one header line per dead letter, then its producer fields; with several
/// dead-letter streams (partitions), a line naming each before its dead letters.
pub fn render(letters: &[Letter]) -> String {
    let mut out = String::new();
    let several = letters.iter().any(|l| l.stream != letters[0].stream);
    for (i, letter) in letters.iter().enumerate() {
        if several && (i == 0 || letters[i - 1].stream != letter.stream) {
            out.push_str(&format!("== {}\n", printable(&letter.stream)));
        }
        out.push_str(&render_letter(letter));
    }
    out
}

/// One dead letter's header line and fields line. A value cut says so, with its whole size; fields
/// not shown are counted.
fn render_letter(letter: &Letter) -> String {
    let mut fields: Vec<String> = letter
        .fields
        .iter()
        .map(|f| {
            let cut = if f.truncated {
                format!("… (cut at {VALUE_BYTES} of {} bytes)", f.bytes)
            } else {
                String::new()
            };
            format!("{}={}{cut}", printable(&f.name), printable(&f.value))
        })
        .collect();
    if letter.fields_not_shown > 0 {
        fields.push(format!("… {} more fields", letter.fields_not_shown));
    }
    format!(
        "{}  {}  {}  (source entry {}, delivered {}x)\n    {}\n",
        letter.id,
        printable(&letter.reason),
        printable(&letter.error),
        printable(&letter.source_id),
        printable(&letter.deliveries),
        fields.join(" ")
    )
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
