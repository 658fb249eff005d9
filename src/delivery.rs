//! The atomic delivery step: publish, hold, journal, dead-letter and acknowledge a batch inside Redis.
//!
//! Publishing and acknowledging in two plain round trips leaves a window where a `kill -9` of the
//! relay duplicates an entry (published, not yet acknowledged). Acknowledging inside the publishing
//! script closes it but opens another: Redis persists the acknowledgement before it writes the packets
//! to the servers' sockets, so a Redis crash in between would lose them, and a server can die with them
//! unread. So one Lua script per batch (`lua/deliver.lua`) counts the servers of each namespace,
//! publishes what enough servers listen to, follows it with a confirmation request (see
//! [`crate::confirming`]), and records in a journal that this Redis process (by its `run_id`)
//! published it; [`Scripts::confirm`] (`lua/confirm.lua`) acknowledges the entries once the relay
//! knows the servers have them. Whoever finds a journaled entry still pending acknowledges it without
//! publishing again if Redis is the same process, and publishes it again if Redis restarted. A relay
//! crash therefore never loses nor duplicates; a Redis crash never loses, and may repeat only the
//! batch in flight when it crashed.
//!
//! The scripts, their keys and the delivery script's operations and outcomes are described in
//! docs/08-internals/lua-protocol.md.
//!
//! The script is all or nothing (see its header): when Redis refuses it, nothing happened, so the
//! relay can wait, or split the batch to find an entry at fault (`lua/isolate.lua`), without ever
//! publishing twice.

use redis::aio::MultiplexedConnection;
use redis::{FromRedisValue, RedisResult, Script, Value};

use crate::config::{Config, RedisMode};
use crate::entry::{EntryId, Ttl};
use crate::packet::{Packet, Target};
use crate::protocol::{Flag, LeaseOp, Lua, OpKind, OutcomeCode, ReasonCode};

/// The keys the relay keeps in Redis besides the stream itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    pub stream: String,
    pub dead_letter: String,
    /// Published, not yet confirmed entries, one field per delivery script call that published
    /// (`<consumer>:<session>:<call>` -> `<run_id> <id>,<id>,...`): `<stream>:published:<group>`.
    pub journal: String,
    /// Entries waiting for Socket.IO servers, with their delivery count: `<stream>:held:<group>`.
    pub held: String,
    /// Who runs as which consumer: `<stream>:leases:<group>`.
    pub leases: String,
    /// The results of entries clients acknowledged (see [`crate::config::Config::acks_stream`]).
    pub acks: String,
    /// The group's statistics, a hash: `<stream>:stats:<group>` (`reached_no_client`).
    pub stats: String,
}

impl Keys {
    pub fn new(cfg: &Config) -> Keys {
        let (stream, group) = (&cfg.source.stream, &cfg.source.group);
        Keys {
            stream: stream.clone(),
            dead_letter: cfg.dead_letter.stream.clone(),
            journal: format!("{stream}:published:{group}"),
            held: format!("{stream}:held:{group}"),
            leases: format!("{stream}:leases:{group}"),
            acks: cfg.acks_stream(),
            stats: format!("{stream}:stats:{group}"),
        }
    }
}

/// What the relay knows of an entry it is responsible for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub id: EntryId,
    /// Delivery attempts so far, this one included; time spent held does not count.
    pub deliveries: u64,
    /// Not a first read: it may have been published (and journaled) before.
    pub redelivery: bool,
    /// Recorded in the held hash: it waits for servers, and its count is the recorded one.
    pub recorded: bool,
    /// Held, and let out before older held entries of its namespace that still wait for their
    /// clients (see [`crate::held::releasable`]): not to be held behind them.
    pub released: bool,
    /// The entry's own lifetime, once its fields were read (see [`crate::entry::Ttl`]). Kept here
    /// because a held entry or one waiting for acknowledgements is only a claim between reads.
    /// Redis keeps nothing of it: a relay that takes the entry back (a restart, a reclaim) reads
    /// its fields again before anything else.
    pub ttl: Option<Ttl>,
}

impl Claim {
    /// An entry just read as new: its first delivery attempt, nothing recorded about it.
    pub fn first_read(id: EntryId) -> Claim {
        Claim {
            id,
            deliveries: 1,
            redelivery: false,
            recorded: false,
            released: false,
            ttl: None,
        }
    }

    /// What [`Claim::first_read`] makes, whatever its lifetime: the script's common case.
    fn is_first_read(&self) -> bool {
        self.deliveries == 1 && !self.redelivery && !self.recorded && !self.released
    }

    /// The delivery script's flags for this entry (see `lua/deliver.lua`): `-`, then its
    /// [`Flag`]s.
    fn flags(&self, behind: bool, external: bool) -> String {
        let mut flags = String::from("-");
        for (set, flag) in [
            (self.redelivery, Flag::Redelivery),
            (self.recorded, Flag::Recorded),
            (behind, Flag::Behind),
            (external, Flag::External),
        ] {
            if set {
                flags.push_str(flag.wire());
            }
        }
        flags
    }
}

/// A valid entry, encoded and ready to publish.
#[derive(Clone, Debug)]
pub struct Deliverable {
    pub claim: Claim,
    pub nsp: String,
    /// How many rooms it targets (none: every socket of the namespace), for its trace.
    pub rooms: usize,
    pub packet: Packet,
    /// Sent as a broadcast with acknowledgements under this request ID, whose answers say how many
    /// clients each server sent it to (`delivery.confirm = "clients"`, see [`crate::confirming`]).
    pub counted: Option<String>,
}

impl Deliverable {
    pub fn id(&self) -> EntryId {
        self.claim.id
    }

    /// What publishing it puts in a subscriber's output buffer, roughly.
    pub fn bytes(&self) -> usize {
        self.packet.payload.len() + self.packet.channel.len()
    }
}

/// One thing the delivery script does to one entry.
pub enum Op<'a> {
    /// Publishes the entry; `behind`: held unpublished, behind an older held entry of its namespace;
    /// `external`: its channel is on another node of the cluster, so the script only clears it for
    /// the relay to publish ([`Outcome::ToPublish`]).
    Publish {
        entry: &'a Deliverable,
        behind: bool,
        external: bool,
    },
    /// Moves the entry (its fields copied inside Redis) to the dead-letter stream.
    DeadLetter {
        claim: Claim,
        reason: ReasonCode,
        detail: String,
    },
    /// The entry was deleted from the stream before it could be delivered: acknowledge it.
    Gone(Claim),
    /// Sends one attempt of an entry that waits for its clients' acknowledgements (its packet, a
    /// broadcast with acknowledgements) while the entry is still this consumer's; `external` as
    /// for [`Op::Publish`]. Nothing is held, journaled nor acknowledged.
    Attempt {
        request: &'a Deliverable,
        external: bool,
    },
}

impl Op<'_> {
    pub fn claim(&self) -> Claim {
        match self {
            Op::Publish { entry, .. } => entry.claim,
            Op::Attempt { request, .. } => request.claim,
            Op::DeadLetter { claim, .. } | Op::Gone(claim) => *claim,
        }
    }

    /// Gives `push` its arguments to the delivery script, [`OpKind::arity`] of them, the first its
    /// kind, which it returns.
    fn encode(&self, mut push: impl FnMut(&[u8])) -> OpKind {
        let claim = self.claim();
        let (kind, behind, external) = match self {
            Op::Publish {
                behind, external, ..
            } => (OpKind::Publish, *behind, *external),
            Op::Attempt { external, .. } => (OpKind::Attempt, false, *external),
            Op::DeadLetter { .. } => (OpKind::DeadLetter, false, false),
            Op::Gone(_) => (OpKind::Gone, false, false),
        };
        let kind = if kind == OpKind::Publish && claim.is_first_read() && !behind && !external {
            // The common case in fewer arguments: what the script would make of its flags.
            push(OpKind::New.wire().as_bytes());
            push(claim.id.to_string().as_bytes());
            OpKind::New
        } else {
            push(kind.wire().as_bytes());
            push(claim.flags(behind, external).as_bytes());
            push(claim.id.to_string().as_bytes());
            push(claim.deliveries.to_string().as_bytes());
            kind
        };
        match self {
            Op::Publish { entry, .. } | Op::Attempt { request: entry, .. } => {
                push(entry.nsp.as_bytes());
                push(entry.packet.channel.as_bytes());
                push(&entry.packet.payload);
            }
            Op::DeadLetter { reason, detail, .. } => {
                push(reason.wire().as_bytes());
                push(detail.as_bytes());
            }
            Op::Gone(_) => {}
        }
        kind
    }
}

/// What became of one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Published to enough servers and journaled: to be acknowledged by [`Scripts::confirm`].
    Published { receivers: u64 },
    /// Not published: fewer than `delivery.min_receivers` servers listen on its namespace. Held.
    TooFewServers { servers: u64 },
    /// Not published because an earlier entry of its namespace is held. Held.
    HeldBehind,
    /// No longer pending for this consumer: another relay owns it now, or it is acknowledged.
    NotOwned,
    /// Moved to the dead-letter stream (or found deleted) and acknowledged.
    Acknowledged,
    /// Published earlier by this same Redis process (journaled), now acknowledged without
    /// publishing again.
    AlreadyPublished,
    /// Redis refused the PUBLISH (an ACL channel rule): not published. Held.
    PublishRefused { error: String },
    /// Published, but PUBLISH reached fewer servers than counted: not journaled. Held.
    TooFewReceivers { receivers: u64 },
    /// Enough servers listen on a channel of another cluster node: for the relay to publish, then
    /// confirm. Not journaled, so published again if the relay dies in between.
    ToPublish { servers: u64 },
    /// An attempt ([`Op::Attempt`]) went out to this many servers (none when none listens).
    AttemptSent { servers: u64 },
    /// Appended to the stream of the streams adapter's servers, this many of them reading it, and
    /// acknowledged in the same step: delivered.
    Appended { servers: u64 },
}

impl Outcome {
    /// The entry stays pending for this relay, waiting for servers.
    pub fn is_held(&self) -> bool {
        matches!(
            self,
            Outcome::TooFewServers { .. }
                | Outcome::HeldBehind
                | Outcome::PublishRefused { .. }
                | Outcome::TooFewReceivers { .. }
        )
    }
}

/// What the delivery script did with a batch.
#[derive(Debug)]
pub struct Report {
    /// One per operation, in order.
    pub outcomes: Vec<Outcome>,
    /// The Socket.IO servers counted on each namespace the batch published to.
    pub servers: Vec<(String, u64)>,
    /// The namespaces whose confirmation request went out after their entries.
    pub confirming: Vec<String>,
}

impl FromRedisValue for Report {
    fn from_redis_value(v: Value) -> Result<Self, redis::ParsingError> {
        type Parts = (
            Vec<u64>,
            Vec<(String, u64)>,
            Vec<(usize, String)>,
            Vec<String>,
        );
        let (results, servers, errors, confirming): Parts = FromRedisValue::from_redis_value(v)?;
        let mut outcomes = Vec::with_capacity(results.len());
        for (at, result) in results.into_iter().enumerate() {
            let (code, value) = OutcomeCode::split(result)
                .map_err(|other| format!("unknown delivery outcome {other}"))?;
            outcomes.push(match code {
                OutcomeCode::Published => Outcome::Published { receivers: value },
                OutcomeCode::TooFewServers => Outcome::TooFewServers { servers: value },
                OutcomeCode::HeldBehind => Outcome::HeldBehind,
                OutcomeCode::NotOwned => Outcome::NotOwned,
                OutcomeCode::Acknowledged => Outcome::Acknowledged,
                OutcomeCode::AlreadyPublished => Outcome::AlreadyPublished,
                OutcomeCode::PublishRefused => Outcome::PublishRefused {
                    error: errors
                        .iter()
                        .find(|(op, _)| *op == at + 1)
                        .map_or_else(String::new, |(_, error)| error.clone()),
                },
                OutcomeCode::TooFewReceivers => Outcome::TooFewReceivers { receivers: value },
                OutcomeCode::ToPublish => Outcome::ToPublish { servers: value },
                OutcomeCode::AttemptSent => Outcome::AttemptSent { servers: value },
                OutcomeCode::Appended => Outcome::Appended { servers: value },
            });
        }
        Ok(Report {
            outcomes,
            servers,
            confirming,
        })
    }
}

/// What a delivery script call does after publishing: it journals what it published under a field
/// of its own (see [`Keys::journal`]), and follows each namespace's entries with its confirmation
/// request, if any was published (see [`crate::confirming`]).
pub struct After<'a> {
    pub journal: &'a str,
    pub confirms: &'a [ConfirmRequest],
}

/// What the relay decided about entries it published, for [`Scripts::confirm`] to record.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Confirmation {
    /// To acknowledge.
    pub delivered: Vec<EntryId>,
    /// To publish again: out of the journal, still pending.
    pub again: Vec<EntryId>,
    /// Journal fields whose entries are all decided.
    pub drop: Vec<String>,
    /// Journal fields still partly undecided that hold entries of `again`.
    pub rewrite: Vec<String>,
    /// How many of `delivered` reached no client, for the group's statistics.
    pub reached_no_client: u64,
}

/// The request that follows a batch's entries of one namespace, for the servers to say they have
/// them (see [`crate::confirming`]).
#[derive(Clone, Debug)]
pub struct ConfirmRequest {
    pub nsp: String,
    pub request_id: String,
    pub packet: Packet,
}

/// Entries published to one namespace by one batch, awaiting confirmation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub nsp: String,
    /// Servers counted on the namespace when the batch was published.
    pub servers: u64,
    pub claims: Vec<Claim>,
}

/// The relay's Lua scripts, bound to its keys, group and consumer.
pub struct Scripts {
    deliver: Script,
    confirm: Script,
    prune: Script,
    keep: Script,
    forget: Script,
    isolate: Script,
    acked: Script,
    lease: Script,
    preflight: Script,
    keys: Keys,
    group: String,
    consumer: String,
    min_receivers: u32,
    dead_letter_max_len: u64,
    acks_max_len: u64,
    target: Target,
    /// Whether PUBLISH's reply counts every server that listens: not in a cluster, where it is one
    /// node's count.
    replies_count_servers: bool,
    /// `redis.wait_replicas` is on: the ACL user must be allowed WAIT.
    waits_for_replicas: bool,
    /// `delivery.confirm` is `"processed"` or `"clients"`: the ACL user must be allowed to ask and
    /// hear the servers.
    confirms_by_answers: bool,
    /// `delivery.confirm = "clients"`: the ACL user must be allowed to count in the statistics.
    counts_clients: bool,
}

impl Scripts {
    pub fn new(cfg: &Config) -> Scripts {
        Scripts {
            deliver: Lua::Deliver.script(),
            confirm: Lua::Confirm.script(),
            prune: Lua::Prune.script(),
            keep: Lua::Keep.script(),
            forget: Lua::Forget.script(),
            isolate: Lua::Isolate.script(),
            acked: Lua::Acked.script(),
            lease: Lua::Lease.script(),
            preflight: Lua::Preflight.script(),
            target: cfg.target(),
            keys: Keys::new(cfg),
            group: cfg.source.group.clone(),
            consumer: cfg.source.consumer.clone(),
            min_receivers: cfg.delivery.min_receivers,
            dead_letter_max_len: cfg.dead_letter.max_len,
            acks_max_len: cfg.acks.max_len,
            replies_count_servers: cfg.redis.mode != RedisMode::Cluster,
            waits_for_replicas: cfg.redis.wait_replicas > 0,
            confirms_by_answers: cfg.delivery.confirm != crate::config::Confirm::Published,
            counts_clients: cfg.delivery.confirm == crate::config::Confirm::Clients,
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Runs `ops` in one script call, followed by `after` (see [`After`]). `run_id` identifies the
    /// Redis process `con` is connected to; `also_pending` is how many other entries this consumer
    /// may have pending in the batch's ID range (held ones), so that one scan finds the batch's;
    /// `servers`, the servers the relay counted per namespace itself (in a cluster; the script
    /// counts the others).
    pub async fn deliver(
        &self,
        con: &mut MultiplexedConnection,
        run_id: &str,
        ops: &[Op<'_>],
        also_pending: usize,
        servers: &[(String, u64)],
        after: &After<'_>,
    ) -> RedisResult<Report> {
        let After {
            journal: journal_field,
            confirms,
        } = after;
        let ids = ops.iter().map(|op| op.claim().id);
        let (Some(first), Some(last)) = (ids.clone().min(), ids.max()) else {
            return Ok(Report {
                outcomes: Vec::new(),
                servers: Vec::new(),
                confirming: Vec::new(),
            });
        };
        let keys = &self.keys;
        let mut call = self.deliver.key(&keys.stream);
        call.key(&keys.dead_letter)
            .key(&keys.journal)
            .key(&keys.held)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(self.min_receivers)
            .arg(self.dead_letter_max_len)
            .arg(run_id)
            .arg(first.to_string())
            .arg(last.to_string())
            .arg(ops.len() + also_pending + 1)
            .arg(self.target.servers_command())
            .arg(self.target.servers_prefix())
            .arg(self.target.monitor_prefix())
            .arg(self.target.publish_command())
            .arg(if self.replies_count_servers { "1" } else { "0" })
            .arg(journal_field)
            .arg(per_namespace(&self.target))
            .arg(servers.len());
        for (nsp, count) in servers {
            call.arg(nsp).arg(count);
        }
        call.arg(confirms.len());
        for request in *confirms {
            call.arg(&request.nsp)
                .arg(&request.packet.channel)
                .arg(&request.packet.payload);
        }
        for op in ops {
            op.encode(|item| {
                call.arg(item);
            });
        }
        call.invoke_async(con).await
    }

    /// Records what the relay decided about entries it published (see [`crate::confirming`]):
    /// acknowledges the delivered ones, takes decided entries out of the journal, and counts those
    /// that reached no client in the group's statistics. Also counts the servers of `count`, for
    /// the relay's next decisions (one round trip for both), and returns them in order.
    pub async fn confirm(
        &self,
        con: &mut MultiplexedConnection,
        confirmation: &Confirmation,
        count: &[String],
    ) -> RedisResult<Vec<u64>> {
        let Confirmation {
            delivered,
            again,
            drop,
            rewrite,
            reached_no_client,
        } = confirmation;
        let mut call = self.confirm.key(&self.keys.stream);
        call.key(&self.keys.journal);
        if *reached_no_client > 0 {
            // Only then: an ACL user without `delivery.confirm = "clients"` need not reach it.
            call.key(&self.keys.stats);
        }
        call.arg(&self.group)
            .arg(reached_no_client)
            .arg(self.target.servers_command())
            .arg(self.target.servers_prefix())
            .arg(per_namespace(&self.target))
            .arg(self.target.monitor_prefix())
            .arg(count.len())
            .arg(count)
            .arg(delivered.len())
            .arg(drop.len())
            .arg(rewrite.len());
        for id in delivered {
            call.arg(id.to_string());
        }
        call.arg(drop).arg(rewrite);
        for id in again {
            call.arg(id.to_string());
        }
        call.invoke_async(con).await
    }

    /// Drops this consumer's journal fields of earlier sessions, those not starting with `current`
    /// (see `lua/prune.lua`); returns how many.
    pub async fn prune(&self, con: &mut MultiplexedConnection, current: &str) -> RedisResult<u64> {
        self.prune
            .key(&self.keys.journal)
            .arg(&self.consumer)
            .arg(current)
            .invoke_async(con)
            .await
    }

    /// Dead-letters one entry that Redis refused in every batch, with `error` as the reason.
    /// Returns false when it is no longer pending for this consumer.
    pub async fn isolate(
        &self,
        con: &mut MultiplexedConnection,
        claim: Claim,
        error: &str,
    ) -> RedisResult<bool> {
        self.isolate
            .key(&self.keys.stream)
            .key(&self.keys.dead_letter)
            .key(&self.keys.held)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(claim.id.to_string())
            .arg(claim.deliveries)
            .arg(error)
            .arg(self.dead_letter_max_len)
            .invoke_async(con)
            .await
    }

    /// Writes the result of an entry clients acknowledged (`fields`) to the results stream and
    /// acknowledges the entry, together. Returns false when it is no longer pending for this
    /// consumer, and then writes nothing.
    pub async fn acked(
        &self,
        con: &mut MultiplexedConnection,
        id: EntryId,
        fields: &[(&str, String)],
    ) -> RedisResult<bool> {
        let mut call = self.acked.key(&self.keys.stream);
        call.key(&self.keys.acks)
            .key(&self.keys.held)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(id.to_string())
            .arg(self.acks_max_len);
        for (name, value) in fields {
            call.arg(*name).arg(value);
        }
        call.invoke_async(con).await
    }

    /// Removes other consumers idle for longer than `idle` with nothing pending; returns their names.
    pub async fn forget_stale(
        &self,
        con: &mut MultiplexedConnection,
        idle: std::time::Duration,
    ) -> RedisResult<Vec<String>> {
        self.forget
            .key(&self.keys.stream)
            .key(&self.keys.journal)
            .key(&self.keys.leases)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(idle.as_millis() as u64)
            .invoke_async(con)
            .await
    }

    /// Resets the idle time of `ids` (ascending, at most a thousand) that are still this
    /// consumer's; returns those that are not, and those deleted from the stream.
    pub async fn keep(
        &self,
        con: &mut MultiplexedConnection,
        ids: &[EntryId],
    ) -> RedisResult<(Vec<EntryId>, Vec<EntryId>)> {
        if ids.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut call = self.keep.key(&self.keys.stream);
        call.key(&self.keys.held)
            .arg(&self.group)
            .arg(&self.consumer);
        for id in ids {
            call.arg(id.to_string());
        }
        let (lost, deleted): (Vec<String>, Vec<String>) = call.invoke_async(con).await?;
        let parse = |ids: Vec<String>| ids.iter().filter_map(|id| id.parse().ok()).collect();
        Ok((parse(lost), parse(deleted)))
    }

    /// What stops the relay from working here (ACL, key types), checked once at start; the first
    /// list is fatal, the second only degrades it.
    pub async fn preflight(
        &self,
        con: &mut MultiplexedConnection,
    ) -> RedisResult<(Vec<String>, Vec<String>)> {
        let keys = &self.keys;
        let answers = self.target.answers_subscription("/");
        let mut call = self.preflight.key(&keys.stream);
        call.key(&keys.dead_letter)
            .key(&keys.journal)
            .key(&keys.held)
            .key(&keys.leases);
        if self.counts_clients {
            // Only then: an ACL user without `delivery.confirm = "clients"` need not reach it.
            call.key(&keys.stats);
        }
        call.arg(&self.group)
            .arg(self.target.destination("/"))
            .arg(self.target.servers_channel("/"))
            .arg(self.target.publish_command())
            .arg(self.target.servers_command())
            .arg(if self.waits_for_replicas { "1" } else { "0" })
            .arg(if self.confirms_by_answers { "1" } else { "0" })
            .arg(self.target.servers_channel("/"))
            .arg(if self.counts_clients { "1" } else { "0" })
            .arg(answers.0)
            .arg(answers.1)
            .invoke_async(con)
            .await
    }

    /// Runs the lease script (`lua/lease.lua`) for this consumer.
    pub async fn lease(
        &self,
        con: &mut MultiplexedConnection,
        holder: &str,
        ttl: std::time::Duration,
        action: LeaseAction<'_>,
    ) -> RedisResult<LeaseReply> {
        let mut call = self.lease.key(&self.keys.leases);
        call.arg(&self.consumer)
            .arg(holder)
            .arg(ttl.as_millis() as u64);
        match action {
            LeaseAction::Take { dead_value } => {
                call.arg(LeaseOp::Take.wire()).arg(dead_value.unwrap_or(""));
            }
            LeaseAction::Renew => {
                call.arg(LeaseOp::Renew.wire());
            }
            LeaseAction::Release => {
                call.arg(LeaseOp::Release.wire());
            }
        }
        let reply: Vec<Value> = call.invoke_async(con).await?;
        let mut items = reply.into_iter();
        if items.next().map(i64::from_redis_value).transpose()? == Some(1) {
            return Ok(LeaseReply::Held);
        }
        Ok(LeaseReply::Taken {
            value: items
                .next()
                .map(String::from_redis_value)
                .transpose()?
                .unwrap_or_default(),
            left_ms: items
                .next()
                .map(i64::from_redis_value)
                .transpose()?
                .unwrap_or(0)
                .max(0) as u64,
        })
    }
}

/// What to do with the consumer-name lease.
pub enum LeaseAction<'a> {
    /// Take it if free or expired, or if it still holds `dead_value` (a holder known to be dead).
    Take {
        dead_value: Option<&'a str>,
    },
    Renew,
    Release,
}

/// The lease script's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaseReply {
    /// This relay holds the lease.
    Held,
    /// Someone else does: the lease's value and the milliseconds it has left.
    Taken { value: String, left_ms: u64 },
}

/// `lua/servers.lua`'s `per_namespace`: '1' when each namespace has a servers channel of its own.
fn per_namespace(target: &Target) -> &'static str {
    match target.servers_per_namespace() {
        true => "1",
        false => "0",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Rust gives the delivery script per operation is what the script reads: `OP_SIZE`,
    /// from the same [`OpKind::arity`].
    #[test]
    fn every_operation_is_as_long_as_its_kind_says() {
        let claim = Claim::first_read(EntryId { ms: 1, seq: 0 });
        let again = Claim {
            deliveries: 2,
            redelivery: true,
            ..claim
        };
        let entry = |claim| Deliverable {
            claim,
            nsp: "/".into(),
            rooms: 0,
            packet: Packet {
                channel: "c".into(),
                payload: vec![1, 2],
            },
            counted: None,
        };
        let (first, later) = (entry(claim), entry(again));
        let ops = [
            Op::Publish {
                entry: &first,
                behind: false,
                external: false,
            },
            Op::Publish {
                entry: &later,
                behind: false,
                external: false,
            },
            Op::DeadLetter {
                claim,
                reason: ReasonCode::Malformed,
                detail: "d".into(),
            },
            Op::Gone(again),
            Op::Attempt {
                request: &first,
                external: true,
            },
        ];
        let mut kinds = Vec::new();
        for op in &ops {
            let mut items = Vec::new();
            let kind = op.encode(|item| items.push(item.to_vec()));
            assert_eq!(items.len(), kind.arity(), "{kind:?}");
            assert_eq!(items[0], kind.wire().as_bytes());
            kinds.push(kind);
        }
        assert_eq!(kinds, OpKind::ALL);
    }
}
