//! `sio-relay dead list | replay | drop`: look into the dead-letter stream and repair.
//!
//! Replay moves a dead letter back to the source stream atomically with its removal (one Lua script,
//! `lua/replay.lua`), so a replay interrupted at any point neither loses nor doubles an entry. `--all`
//! walks a snapshot: the dead letters up to the last one present when the command starts. A running
//! relay dead-letters malformed entries again as they are replayed; those new dead letters lie past
//! the snapshot, so the command ends instead of chasing its own tail.

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Script};

use super::{block_on, connect, printable, Failure};
use crate::config::Config;
use crate::dead_letter::{self, FIELD_PREFIX};

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

/// `sio-relay dead ...`.
pub enum Command {
    List { limit: usize, json: bool },
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
        Command::List { limit, json } => {
            let mut letters = Vec::new();
            for partition in &partitions {
                letters.extend(block_on(list(partition, limit))?);
            }
            Ok(if json {
                serde_json::to_string_pretty(&letters).expect("dead letters serialize") + "\n"
            } else {
                render(&letters)
            })
        }
        Command::Replay {
            chosen,
            dry_run: true,
        } => {
            let mut letters = Vec::new();
            for partition in &partitions {
                letters.extend(block_on(preview(partition, chosen.selection()))?);
            }
            let mut text = render(&letters);
            text.push_str(&format!(
                "would replay {} dead letter(s); nothing changed (--dry-run)\n",
                letters.len()
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

/// The oldest `limit` dead letters.
pub async fn list(cfg: &Config, limit: usize) -> Result<Vec<DeadLetter>, Failure> {
    let mut con = connect(cfg).await?;
    let rows: Vec<(String, RawFields)> = con
        .xrange_count(&cfg.dead_letter.stream, "-", "+", limit)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, fields)| DeadLetter::from_raw(&cfg.dead_letter.stream, id, &fields))
        .collect())
}

/// Text for `dead list`: one header line per dead letter, then its producer fields; with several
/// dead-letter streams (partitions), a line naming each before its dead letters.
pub fn render(letters: &[DeadLetter]) -> String {
    let mut out = String::new();
    let several = letters.iter().any(|l| l.stream != letters[0].stream);
    for (i, letter) in letters.iter().enumerate() {
        if several && (i == 0 || letters[i - 1].stream != letter.stream) {
            out.push_str(&format!("== {}\n", printable(&letter.stream)));
        }
        out.push_str(&format!(
            "{}  {}  {}  (source entry {}, delivered {}x)\n",
            letter.id,
            printable(letter.field("x-dead-reason")),
            printable(letter.field("x-dead-error")),
            printable(letter.field("x-dead-id")),
            printable(letter.field("x-dead-deliveries")),
        ));
        let fields: Vec<String> = letter
            .fields
            .iter()
            .filter(|(f, _)| !f.starts_with(FIELD_PREFIX))
            .map(|(f, v)| format!("{}={}", printable(f), printable(v)))
            .collect();
        out.push_str(&format!("    {}\n", fields.join(" ")));
    }
    out
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
    let script = Script::new(include_str!("../lua/replay.lua"));
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
                .filter(|letter| reason.is_none_or(|r| letter.field("x-dead-reason") == r))
                .collect(),
        ))
    }
}
