//! `sio-relay dead list | replay | drop`: look into the dead-letter stream and repair, through the
//! operations the console uses too ([`crate::admin::dead`]).
//!
//! `list` reads as the console's pages do ([`browse`]): every value is cut to [`VALUE_BYTES`] inside
//! Redis, and fields to [`FIELDS_SHOWN`], with what was cut counted, so a dead letter of many
//! megabytes costs the command a bounded amount of memory, and the listing is written a page at a
//! time. `--all` walks a snapshot (see [`crate::admin::dead`]).

use std::io::Write;

use super::{block_on, printable};
use crate::admin::connect;
#[cfg(doc)]
use crate::admin::dead::FIELDS_SHOWN;
use crate::admin::dead::{
    browse, drop, preview, replay, DeadLetter, Letter, Only, Selection, Start, Which, LIST_PAGE,
    VALUE_BYTES,
};
use crate::config::Config;
use crate::exit::{Failure, EXIT_FAILURE};

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
        let browsed = browse(&mut con, stream, &from, page, page, Only::Every).await?;
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
