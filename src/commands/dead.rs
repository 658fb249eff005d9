//! `sio-relay dead list | replay | drop`: look into the dead-letter stream and repair.
//!
//! Replay moves a dead letter back to the source stream atomically with its removal (one Lua script,
//! `lua/replay.lua`), so a replay interrupted at any point neither loses nor doubles an entry.

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Script};

use super::{connect, Failure};
use crate::config::Config;

/// Which dead letters a command acts on.
pub enum Selection {
    All,
    Ids(Vec<String>),
}

/// One dead letter, fields shown as text (invalid UTF-8 replaced).
#[derive(Debug, serde::Serialize)]
pub struct DeadLetter {
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
}

type RawFields = Vec<(Vec<u8>, Vec<u8>)>;

/// The oldest `limit` dead letters.
pub async fn list(cfg: &Config, limit: usize) -> Result<Vec<DeadLetter>, Failure> {
    let mut con = connect(cfg).await?;
    let rows: Vec<(String, RawFields)> = con
        .xrange_count(&cfg.dead_letter.stream, "-", "+", limit)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, fields)| DeadLetter {
            id,
            fields: fields
                .into_iter()
                .map(|(f, v)| {
                    (
                        String::from_utf8_lossy(&f).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect(),
        })
        .collect())
}

/// Text for `dead list`: one header line per dead letter, then its producer fields.
pub fn render(letters: &[DeadLetter]) -> String {
    let mut out = String::new();
    for letter in letters {
        out.push_str(&format!(
            "{}  {}  {}  (source entry {}, delivered {}x)\n",
            letter.id,
            letter.field("x-dead-reason"),
            letter.field("x-dead-error"),
            letter.field("x-dead-id"),
            letter.field("x-dead-deliveries"),
        ));
        let fields: Vec<String> = letter
            .fields
            .iter()
            .filter(|(f, _)| !f.starts_with(crate::dead_letter::FIELD_PREFIX))
            .map(|(f, v)| format!("{f}={v}"))
            .collect();
        out.push_str(&format!("    {}\n", fields.join(" ")));
    }
    out
}

/// Moves the selected dead letters back to the source stream; returns (dead ID, new ID) pairs.
pub async fn replay(cfg: &Config, selection: Selection) -> Result<Vec<(String, String)>, Failure> {
    let mut con = connect(cfg).await?;
    let script = Script::new(include_str!("../lua/replay.lua"));
    let mut moved = Vec::new();
    match selection {
        Selection::Ids(ids) => moved.extend(move_back(cfg, &script, &mut con, &ids).await?),
        Selection::All => loop {
            let page: Vec<(String, RawFields)> = con
                .xrange_count(&cfg.dead_letter.stream, "-", "+", 100)
                .await?;
            if page.is_empty() {
                break;
            }
            let ids: Vec<String> = page.into_iter().map(|(id, _)| id).collect();
            moved.extend(move_back(cfg, &script, &mut con, &ids).await?);
        },
    }
    Ok(moved)
}

async fn move_back(
    cfg: &Config,
    script: &Script,
    con: &mut MultiplexedConnection,
    ids: &[String],
) -> Result<Vec<(String, String)>, Failure> {
    let mut call = script.key(&cfg.dead_letter.stream);
    call.key(&cfg.source.stream);
    for id in ids {
        call.arg(id);
    }
    Ok(call.invoke_async(con).await?)
}

/// Deletes the selected dead letters; returns how many were deleted.
pub async fn drop(cfg: &Config, selection: Selection) -> Result<usize, Failure> {
    let mut con = connect(cfg).await?;
    let stream = &cfg.dead_letter.stream;
    Ok(match selection {
        Selection::Ids(ids) => con.xdel(stream, &ids).await?,
        Selection::All => {
            redis::cmd("XTRIM")
                .arg(stream)
                .arg("MAXLEN")
                .arg(0)
                .query_async(&mut con)
                .await?
        }
    })
}
