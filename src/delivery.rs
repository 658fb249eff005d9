//! The atomic delivery step: publish, dead-letter and acknowledge a batch inside Redis.
//!
//! Publishing and acknowledging in two round trips leaves a window where a `kill -9` duplicates (acked
//! after a re-publish) or loses (acked before publishing) an entry. Instead one Lua script per batch
//! checks that each entry is still pending for this consumer, PUBLISHes it, and XACKs exactly the
//! entries that reached `delivery.min_receivers` servers (`lua/deliver.lua`). Redis runs a script as a
//! single step, so a batch is delivered wholly or not at all, and an entry another relay has reclaimed
//! meanwhile is never published twice.

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

/// What became of one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Published to enough servers and acknowledged.
    Delivered { receivers: u64 },
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
    stream: String,
    dead_letter_stream: String,
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
            stream: cfg.source.stream.clone(),
            dead_letter_stream: cfg.dead_letter.stream.clone(),
            group: cfg.source.group.clone(),
            consumer: cfg.source.consumer.clone(),
            min_receivers: cfg.delivery.min_receivers,
            dead_letter_max_len: cfg.dead_letter.max_len,
        }
    }

    /// Runs `ops` in one script call and returns their outcomes, in order.
    pub async fn deliver(
        &self,
        con: &mut MultiplexedConnection,
        ops: &[Op<'_>],
    ) -> RedisResult<Vec<Outcome>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = self.deliver.key(&self.stream);
        call.key(&self.dead_letter_stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(self.min_receivers)
            .arg(self.dead_letter_max_len);
        for op in ops {
            match op {
                Op::Publish(entry) => {
                    call.arg("P")
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
                n if n as u64 >= min => Outcome::Delivered {
                    receivers: n as u64,
                },
                n => Outcome::TooFewReceivers {
                    receivers: n.max(0) as u64,
                },
            })
            .collect())
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
