//! The consumer loop: the state machine that moves entries from the stream to the Socket.IO servers.
//!
//! One task, one step at a time, so entries of a consumer keep stream order and there is never more
//! than one batch in flight. Each step: (re)connect and set up the group if needed; recover this
//! consumer's own pending entries after a (re)connect; keep held entries alive and retry them; reclaim
//! idle entries of dead consumers; then read new entries with a bounded BLOCK. Every Redis error ends
//! the step; the loop drops its connections, waits a [`Backoff`] delay and starts over, logging only
//! when the link changes state. Entries are acknowledged only by the delivery script (dead letters,
//! entries already published) and by the confirmation that follows it (see [`crate::delivery`]).
//!
//! `pending.rs` handles the entries the relay did not just read (its own after a reconnection, other
//! consumers' idle ones, the held ones); `group.rs` creates and looks after the consumer group.

mod group;
mod pending;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::streams::StreamReadOptions;
use redis::{AsyncCommands, RedisError, RedisResult};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Config, SourceConfig};
use crate::connection::{self, Backoff, Connections};
use crate::dead_letter::{self, Reason};
use crate::delivery::{Deliverable, Op, Outcome, Scripts};
use crate::entry::{Entry, EntryId, RawEntry};
use crate::health::Health;
use crate::held::Held;
use crate::metrics::{Metrics, Source};
use crate::packet::Target;
use crate::reply::{Delivered, Read};
use crate::systemd::Notifier;

/// XAUTOCLAIM pages per reclaim round, so that a huge pending list cannot starve new entries.
const CLAIM_PAGES_PER_ROUND: usize = 10;

/// How often the group's lag and pending gauges are refreshed, and stale consumers looked for.
const GROUP_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// What the relay decided to do with one entry.
enum Plan {
    Publish(Deliverable),
    DeadLetter {
        raw: RawEntry,
        deliveries: u64,
        reason: Reason,
    },
}

impl Plan {
    fn id(&self) -> EntryId {
        match self {
            Plan::Publish(d) => d.id(),
            Plan::DeadLetter { raw, .. } => raw.id,
        }
    }
}

/// The state of the link to Redis, tracked so that each change is logged once.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Link {
    Starting,
    Up,
    Down { since: Instant, attempts: u32 },
}

pub struct Relay {
    cfg: Config,
    target: Target,
    /// `redis.url` with any password masked, for logs.
    redis_url: String,
    scripts: Scripts,
    held: Held,
    /// Published and journaled by the last script, acknowledged by the next command.
    unconfirmed: Vec<EntryId>,
    /// The next batch's read, already on its way while this batch is delivered.
    prefetch: Option<tokio::task::JoinHandle<RedisResult<Read>>>,
    conns: Option<Connections>,
    group_ready: bool,
    own_pending_recovered: bool,
    link: Link,
    backoff: Backoff,
    claim_cursor: String,
    next_claim: Instant,
    next_retry: Instant,
    next_keep: Instant,
    next_group_check: Instant,
    reading_paused: bool,
    shutdown: CancellationToken,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    notifier: Notifier,
}

impl Relay {
    pub fn new(
        cfg: Config,
        shutdown: CancellationToken,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
    ) -> Relay {
        let now = Instant::now();
        Relay {
            target: cfg.target(),
            redis_url: crate::config::mask_password(&cfg.redis.url),
            scripts: Scripts::new(&cfg),
            held: Held::new(cfg.delivery.max_held),
            unconfirmed: Vec::new(),
            prefetch: None,
            conns: None,
            group_ready: false,
            own_pending_recovered: false,
            link: Link::Starting,
            backoff: Backoff::new(cfg.redis.backoff_min, cfg.redis.backoff_max),
            claim_cursor: "0-0".into(),
            next_claim: now,
            next_retry: now,
            next_keep: now,
            next_group_check: now,
            reading_paused: false,
            shutdown,
            health,
            metrics,
            notifier: Notifier::new(),
            cfg,
        }
    }

    /// Relays until the shutdown token is cancelled, then returns once the batch in flight is
    /// delivered and acknowledged. Held entries stay pending in Redis for the next relay.
    pub async fn run(mut self) {
        while !self.shutdown.is_cancelled() {
            self.health.beat();
            self.notifier.alive();
            if let Err(err) = self.step().await {
                self.recover(err).await;
            }
            self.metrics.held_now.set(self.held.len() as i64);
        }
        if self.conns.is_some() {
            if let Err(err) = self.confirm().await {
                warn!(error = %err, "could not acknowledge the last batch; the next relay will, without publishing it again");
            }
        }
        if !self.held.is_empty() {
            info!(
                held = self.held.len(),
                "entries waiting for Socket.IO servers stay pending for the next relay"
            );
        }
    }

    async fn step(&mut self) -> RedisResult<()> {
        if self.conns.is_none() {
            self.conns = Some(connection::connect(&self.cfg).await?);
            self.own_pending_recovered = false;
        }
        if !self.group_ready {
            self.create_group().await?;
            self.group_ready = true;
            self.own_pending_recovered = false;
        }
        if !self.own_pending_recovered {
            self.recover_own_pending().await?;
            self.own_pending_recovered = true;
            self.link_up();
        }

        let now = Instant::now();
        if !self.held.is_empty() && now >= self.next_keep {
            self.keep_held().await?;
            self.next_keep = now + self.cfg.delivery.claim_idle / 3;
        }
        if !self.held.is_empty() && now >= self.next_retry {
            self.retry_held().await?;
            self.next_retry = now + self.cfg.delivery.retry_interval;
        }
        if !self.held.is_full() && now >= self.next_claim {
            self.reclaim().await?;
            self.next_claim = now + self.cfg.delivery.claim_interval;
        }
        if now >= self.next_group_check {
            self.check_group().await?;
            self.next_group_check = now + GROUP_CHECK_INTERVAL;
        }

        if self.held.is_full() {
            if !self.reading_paused {
                warn!(
                    held = self.held.len(),
                    "delivery.max_held entries are waiting for Socket.IO servers; reading paused until they drain"
                );
                self.reading_paused = true;
            }
            self.confirm().await?;
            let pause = self.cfg.delivery.retry_interval;
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.shutdown.cancelled() => {}
            }
            return Ok(());
        }
        if self.reading_paused {
            info!(held = self.held.len(), "reading resumed");
            self.reading_paused = false;
        }
        self.read_new().await
    }

    /// Handles the error that ended a step, then waits before the next attempt.
    async fn recover(&mut self, err: RedisError) {
        if let Some(read) = self.prefetch.take() {
            read.abort();
        }
        self.health.set_not_ready(format!("Redis: {err}"));
        self.metrics.connected(false);
        if err.code() == Some("NOGROUP") {
            warn!(
                stream = %self.cfg.source.stream,
                group = %self.cfg.source.group,
                "the consumer group is gone (stream deleted, or Redis restarted without persistence); creating it again"
            );
            self.group_ready = false;
        } else {
            self.conns = None;
            // Only the Redis process that published them may confirm them: after a reconnect the
            // recovery of own pending entries decides, by the journal's run_id.
            self.unconfirmed.clear();
            self.link = match self.link {
                Link::Starting | Link::Up => {
                    warn!(redis = %self.redis_url, error = %err,
                        "Redis is unavailable; reconnecting with backoff");
                    Link::Down {
                        since: Instant::now(),
                        attempts: 1,
                    }
                }
                Link::Down { since, attempts } => {
                    debug!(error = %err, attempts, "Redis still unavailable");
                    Link::Down {
                        since,
                        attempts: attempts + 1,
                    }
                }
            };
        }
        let delay = self.backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    fn link_up(&mut self) {
        match self.link {
            Link::Starting => info!(
                redis = %self.redis_url,
                stream = %self.cfg.source.stream,
                group = %self.cfg.source.group,
                consumer = %self.cfg.source.consumer,
                "relaying"
            ),
            Link::Down { since, attempts } => info!(
                down_for = %humantime::format_duration(Duration::from_millis(since.elapsed().as_millis() as u64)),
                attempts,
                "Redis is back; relaying again"
            ),
            Link::Up => {}
        }
        self.link = Link::Up;
        self.backoff.reset();
        self.health.set_ready();
        self.metrics.connected(true);
        self.notifier.ready(&format!(
            "relaying stream {} as consumer {} of group {}",
            self.cfg.source.stream, self.cfg.source.consumer, self.cfg.source.group
        ));
    }

    /// The writer connection, with the source settings borrowed alongside it.
    fn writer(&mut self) -> (&SourceConfig, &mut redis::aio::MultiplexedConnection) {
        let conns = self.conns.as_mut().expect("steps run only while connected");
        (&self.cfg.source, &mut conns.writer)
    }

    /// Acknowledges what the last delivery script published.
    async fn confirm(&mut self) -> RedisResult<()> {
        if self.unconfirmed.is_empty() {
            return Ok(());
        }
        let conns = self.conns.as_mut().expect("steps run only while connected");
        self.scripts
            .confirm(&mut conns.writer, &self.unconfirmed)
            .await?;
        self.confirmed();
        Ok(())
    }

    /// Records that the entries of the last script are acknowledged.
    fn confirmed(&mut self) {
        for id in self.unconfirmed.drain(..) {
            self.metrics.acknowledged.inc();
            self.metrics.end_to_end.observe(age(id).as_secs_f64());
        }
    }

    /// Reads and delivers one batch of new entries, waiting up to `source.block` for them. The
    /// confirmation of the last batch travels on the writer while the read waits on the reader; and
    /// while entries keep coming, the next read is sent before this batch is delivered, so Redis
    /// always has work queued instead of waiting for the relay.
    async fn read_new(&mut self) -> RedisResult<()> {
        let read = match self.prefetch.take() {
            Some(read) => read,
            None => self.start_read(),
        };
        let writer = &mut self
            .conns
            .as_mut()
            .expect("steps run only while connected")
            .writer;
        let confirm = async {
            if self.unconfirmed.is_empty() {
                return Ok(());
            }
            self.scripts.confirm(writer, &self.unconfirmed).await
        };
        let (confirmed, read) = tokio::select! {
            both = async { tokio::join!(confirm, read) } => both,
            // A read left behind delivers its entries to this consumer's pending list, where the
            // next start recovers them; an unconfirmed batch is confirmed on the way out.
            _ = self.shutdown.cancelled() => return Ok(()),
        };
        confirmed?;
        self.confirmed();
        let Read(entries) = read.map_err(|e| {
            RedisError::from((
                redis::ErrorKind::Client,
                "the read task failed",
                e.to_string(),
            ))
        })??;
        if !entries.is_empty() && self.held.is_empty() && !self.shutdown.is_cancelled() {
            self.prefetch = Some(self.start_read());
        }
        let batch: Vec<(RawEntry, u64)> = entries
            .into_iter()
            .filter_map(|d| match d {
                Delivered::Present(raw) => Some((raw, 1)),
                Delivered::Deleted(_) => None,
            })
            .collect();
        self.metrics.read(Source::new, batch.len());
        self.deliver(batch).await
    }

    /// Sends XREADGROUP `>` on the reader, as a task of its own so that it goes out at once.
    fn start_read(&self) -> tokio::task::JoinHandle<RedisResult<Read>> {
        let mut block = self.cfg.source.block;
        if !self.held.is_empty() {
            block = block.min(self.next_retry.saturating_duration_since(Instant::now()));
        }
        let block = block.max(Duration::from_millis(1));
        let options = StreamReadOptions::default()
            .group(&self.cfg.source.group, &self.cfg.source.consumer)
            .count(self.cfg.source.batch_size)
            .block(block.as_millis() as usize);
        let stream = self.cfg.source.stream.clone();
        let mut reader = self
            .conns
            .as_ref()
            .expect("steps run only while connected")
            .reader
            .clone();
        tokio::spawn(async move {
            reader
                .xread_options::<_, _, Read>(&[stream], &[">"], &options)
                .await
        })
    }

    /// Decides what to do with each entry, runs the delivery script, and holds what found no
    /// listener. Entries of a namespace that already holds entries queue behind them unpublished.
    async fn deliver(&mut self, batch: Vec<(RawEntry, u64)>) -> RedisResult<()> {
        let mut plans = Vec::with_capacity(batch.len());
        for (raw, deliveries) in batch {
            if self.held.contains(raw.id) {
                continue;
            }
            match self.plan(raw, deliveries) {
                Plan::Publish(entry) if self.held.is_holding(&entry.nsp) => self.hold(entry),
                plan => plans.push(plan),
            }
        }
        let outcomes = self.execute(&plans).await?;
        for (plan, outcome) in plans.into_iter().zip(outcomes) {
            if let (Plan::Publish(entry), Outcome::TooFewReceivers { .. } | Outcome::HeldBehind) =
                (plan, outcome)
            {
                self.hold(entry);
            }
        }
        Ok(())
    }

    fn hold(&mut self, entry: Deliverable) {
        self.metrics.held.inc();
        self.held.push(entry);
    }

    fn plan(&self, raw: RawEntry, deliveries: u64) -> Plan {
        let limit = self.cfg.delivery.max_deliveries;
        if deliveries > u64::from(limit) {
            let reason = Reason::MaxDeliveries { deliveries, limit };
            return Plan::DeadLetter {
                raw,
                deliveries,
                reason,
            };
        }
        let entry = match Entry::parse(&raw.fields) {
            Ok(entry) => entry,
            Err(problem) => {
                return Plan::DeadLetter {
                    raw,
                    deliveries,
                    reason: Reason::Malformed(problem),
                }
            }
        };
        if let Some(reason) = self.expiry(raw.id) {
            return Plan::DeadLetter {
                raw,
                deliveries,
                reason,
            };
        }
        Plan::Publish(Deliverable {
            packet: self.target.encode(&entry),
            nsp: entry.nsp().to_owned(),
            raw,
            deliveries,
        })
    }

    /// `Some` when `delivery.max_age` is set and the entry's ID says it is older.
    fn expiry(&self, id: EntryId) -> Option<Reason> {
        let limit = self.cfg.delivery.max_age;
        if limit.is_zero() {
            return None;
        }
        let age = age(id);
        (age > limit).then_some(Reason::Expired { age, limit })
    }

    /// Runs the delivery script for `plans` and logs what happened to each entry.
    async fn execute(&mut self, plans: &[Plan]) -> RedisResult<Vec<Outcome>> {
        if plans.is_empty() {
            return Ok(Vec::new());
        }
        let stream = &self.cfg.source.stream;
        let ops: Vec<Op> = plans
            .iter()
            .map(|plan| match plan {
                Plan::Publish(entry) => Op::Publish(entry),
                Plan::DeadLetter {
                    raw,
                    deliveries,
                    reason,
                } => Op::DeadLetter {
                    id: raw.id,
                    fields: dead_letter::fields(raw, stream, *deliveries, reason),
                },
            })
            .collect();
        let conns = self.conns.as_mut().expect("steps run only while connected");
        let started = Instant::now();
        let outcomes = self
            .scripts
            .deliver(&mut conns.writer, &conns.run_id, &ops, self.held.len())
            .await?;
        self.metrics
            .publish_duration
            .observe(started.elapsed().as_secs_f64());
        let mut delivered = 0usize;
        for (plan, outcome) in plans.iter().zip(&outcomes) {
            match outcome {
                Outcome::Published { receivers } | Outcome::TooFewReceivers { receivers } => {
                    self.metrics.publish_receivers.observe(*receivers as f64)
                }
                Outcome::AlreadyPublished | Outcome::DeadLettered => {
                    self.metrics.acknowledged.inc();
                }
                Outcome::HeldBehind | Outcome::NotOwned => {}
            }
            match (plan, outcome) {
                (_, Outcome::Published { .. }) => {
                    self.unconfirmed.push(plan.id());
                    self.metrics.published.inc();
                    delivered += 1;
                }
                (_, Outcome::AlreadyPublished) => delivered += 1,
                (Plan::DeadLetter { reason, .. }, Outcome::DeadLettered) => {
                    self.metrics.dead_lettered(reason.code());
                    warn!(
                        id = %plan.id(),
                        reason = reason.code(),
                        error = %reason.detail(),
                        dead_letter_stream = %self.cfg.dead_letter.stream,
                        "dead-lettered an entry"
                    )
                }
                (Plan::Publish(entry), Outcome::TooFewReceivers { receivers })
                    if !self.held.is_holding(&entry.nsp) =>
                {
                    warn!(
                        nsp = %entry.nsp,
                        receivers,
                        min_receivers = self.cfg.delivery.min_receivers,
                        "too few Socket.IO servers listen on this namespace; holding its entries until enough do"
                    )
                }
                (_, Outcome::NotOwned) => debug!(
                    id = %plan.id(),
                    "entry is no longer pending for this consumer (reclaimed by another relay); skipped"
                ),
                _ => {}
            }
        }
        debug!(entries = plans.len(), delivered, "batch done");
        Ok(outcomes)
    }
}

/// How old an entry is, by the time in its ID.
fn age(id: EntryId) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    Duration::from_millis(now.saturating_sub(id.ms))
}

fn parse_error(problem: String) -> RedisError {
    RedisError::from((
        redis::ErrorKind::Parse,
        "unexpected entry ID from Redis",
        problem,
    ))
}
