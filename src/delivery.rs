//! The atomic delivery step: publish, journal, dead-letter and acknowledge a batch inside Redis.
//!
//! Publishing and acknowledging in two plain round trips leaves a window where a `kill -9` of the
//! relay duplicates an entry (published, not yet acknowledged). Acknowledging inside the publishing
//! script closes it but opens another: Redis persists the acknowledgement before it writes the packets
//! to the servers' sockets, so a Redis crash in between would lose them. So one Lua script per batch
//! (`lua/deliver.lua`) checks that each entry is still pending for this consumer, PUBLISHes it, and
//! records in a journal that this Redis process (by its `run_id`) published it; the next command,
//! [`Scripts::confirm`], acknowledges the batch once Redis has necessarily flushed it. Whoever finds a
//! journaled entry still pending acknowledges it without publishing again if Redis is the same process,
//! and publishes it again if Redis restarted. A relay crash therefore never loses nor duplicates; a
//! Redis crash never loses, and may repeat only the batch in flight when it crashed.

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Script};

use crate::config::Config;
use crate::entry::{EntryId, RawEntry};
use crate::packet::Packet;

/// A valid entry, encoded and ready to publish.
#[derive(Clone, Debug)]
pub struct Deliverable {
    /// Kept to dead-letter the entry unchanged if it expires while held.
    pub raw: RawEntry,
    pub deliveries: u64,
    pub nsp: String,
    pub packet: Packet,
}

impl Deliverable {
    pub fn id(&self) -> EntryId {
        self.raw.id
    }
}

/// One thing the delivery script does to one entry.
pub enum Op<'a> {
    Publish(&'a Deliverable),
    DeadLetter {
        id: EntryId,
        fields: Vec<(Vec<u8>, Vec<u8>)>,
    },
}

impl Op<'_> {
    fn id(&self) -> EntryId {
        match self {
            Op::Publish(entry) => entry.id(),
            Op::DeadLetter { id, .. } => *id,
        }
    }
}

/// What became of one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Published to enough servers and journaled: to be acknowledged by [`Scripts::confirm`].
    Published { receivers: u64 },
    /// Published earlier by this same Redis process (journaled), now acknowledged without
    /// publishing again.
    AlreadyPublished,
    /// Published, but fewer servers listened than required: still pending, to be held and retried.
    TooFewReceivers { receivers: u64 },
    /// Not published because an earlier entry of its namespace was held: still pending.
    HeldBehind,
    /// No longer pending for this consumer: another relay owns it now, or it is acknowledged.
    NotOwned,
    /// Moved to the dead-letter stream and acknowledged.
    DeadLettered,
}

/// The relay's Lua scripts, bound to its stream, group and consumer.
pub struct Scripts {
    deliver: Script,
    keep: Script,
    forget: Script,
    stream: String,
    dead_letter_stream: String,
    journal: String,
    group: String,
    consumer: String,
    min_receivers: u32,
    dead_letter_max_len: u64,
}

impl Scripts {
    pub fn new(cfg: &Config) -> Scripts {
        Scripts {
            deliver: Script::new(include_str!("lua/deliver.lua")),
            keep: Script::new(include_str!("lua/keep.lua")),
            forget: Script::new(include_str!("lua/forget.lua")),
            stream: cfg.source.stream.clone(),
            dead_letter_stream: cfg.dead_letter.stream.clone(),
            journal: journal_key(cfg),
            group: cfg.source.group.clone(),
            consumer: cfg.source.consumer.clone(),
            min_receivers: cfg.delivery.min_receivers,
            dead_letter_max_len: cfg.dead_letter.max_len,
        }
    }

    /// Runs `ops` in one script call and returns their outcomes, in order. `run_id` identifies the
    /// Redis process `con` is connected to; `also_pending` is how many other entries this consumer
    /// may have pending in the batch's ID range (held ones), so one scan finds the batch's.
    pub async fn deliver(
        &self,
        con: &mut MultiplexedConnection,
        run_id: &str,
        ops: &[Op<'_>],
        also_pending: usize,
    ) -> RedisResult<Vec<Outcome>> {
        let (Some(first), Some(last)) =
            (ops.iter().map(Op::id).min(), ops.iter().map(Op::id).max())
        else {
            return Ok(Vec::new());
        };
        let mut call = self.deliver.key(&self.stream);
        call.key(&self.dead_letter_stream)
            .key(&self.journal)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(self.min_receivers)
            .arg(self.dead_letter_max_len)
            .arg(run_id)
            .arg(first.to_string())
            .arg(last.to_string())
            .arg(ops.len() + also_pending + 1);
        for op in ops {
            match op {
                Op::Publish(entry) => {
                    // Only a redelivery can have been published (and journaled) before.
                    let kind = if entry.deliveries > 1 { "R" } else { "P" };
                    call.arg(kind)
                        .arg(entry.id().to_string())
                        .arg(&entry.nsp)
                        .arg(&entry.packet.channel)
                        .arg(&entry.packet.payload);
                }
                Op::DeadLetter { id, fields } => {
                    call.arg("D").arg(id.to_string()).arg(fields.len() * 2);
                    for (name, value) in fields {
                        call.arg(name).arg(value);
                    }
                }
            }
        }
        let codes: Vec<i64> = call.invoke_async(con).await?;
        if codes.len() != ops.len() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "delivery script returned the wrong number of results",
                format!("{} for {} operations", codes.len(), ops.len()),
            )));
        }
        let min = u64::from(self.min_receivers);
        Ok(codes
            .into_iter()
            .map(|code| match code {
                -1 => Outcome::NotOwned,
                -2 => Outcome::HeldBehind,
                -3 => Outcome::DeadLettered,
                -4 => Outcome::AlreadyPublished,
                n if n as u64 >= min => Outcome::Published {
                    receivers: n as u64,
                },
                n => Outcome::TooFewReceivers {
                    receivers: n.max(0) as u64,
                },
            })
            .collect())
    }

    /// Acknowledges published entries and clears this consumer's journal field. Sent after the
    /// reply to the scripts that published them: Redis reads it only after writing their packets
    /// out. `ids` must be everything published since the last confirmation.
    pub async fn confirm(
        &self,
        con: &mut MultiplexedConnection,
        ids: &[EntryId],
    ) -> RedisResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = ids.iter().map(EntryId::to_string).collect();
        redis::pipe()
            .atomic()
            .xack(&self.stream, &self.group, &ids)
            .ignore()
            .hdel(&self.journal, &self.consumer)
            .ignore()
            .exec_async(con)
            .await
    }

    /// Removes other consumers idle for longer than `idle` with nothing pending; returns their names.
    pub async fn forget_stale(
        &self,
        con: &mut MultiplexedConnection,
        idle: std::time::Duration,
    ) -> RedisResult<Vec<String>> {
        self.forget
            .key(&self.stream)
            .key(&self.journal)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(idle.as_millis() as u64)
            .invoke_async(con)
            .await
    }

    /// Resets the idle time of `ids` that are still this consumer's; returns those that are not.
    pub async fn keep(
        &self,
        con: &mut MultiplexedConnection,
        ids: &[EntryId],
    ) -> RedisResult<Vec<EntryId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = self.keep.key(&self.stream);
        call.arg(&self.group).arg(&self.consumer);
        for id in ids {
            call.arg(id.to_string());
        }
        let lost: Vec<String> = call.invoke_async(con).await?;
        Ok(lost.iter().filter_map(|id| id.parse().ok()).collect())
    }
}

/// The journal of published, not yet acknowledged entries, one field per consumer:
/// `<stream>:published:<group>`.
pub fn journal_key(cfg: &Config) -> String {
    format!("{}:published:{}", cfg.source.stream, cfg.source.group)
}
