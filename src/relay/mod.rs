//! The consumer loop: the state machine that moves entries from the stream to the Socket.IO servers.
//!
//! One task, one step at a time, so entries of a consumer keep stream order and there is never more
//! than one batch in flight. A [`Session`] exists while connected; each step: set up the group if
//! needed; recover this consumer's own pending entries after a (re)connect; keep held entries alive
//! and deliver them once servers listen; reclaim idle entries of dead consumers; then read new
//! entries with a bounded BLOCK. A step that fails ends with a [`Fault`], and the fault decides what
//! follows: a lost link drops the session and reconnects after a backoff delay; a group that vanished
//! is created again where this relay stood; Redis refusing work (memory, ACL, key types) is waited
//! out on the same connection; a fatal condition stops the relay. Each change of state is logged once.
//! Entries are acknowledged only by the delivery script (dead letters, entries already published) and
//! by the confirmation that follows it (see [`crate::delivery`]).
//!
//! The stages, a module each: `read.rs` reads new entries (with the confirmation of what was
//! published travelling beside the read); `plan.rs` decides what to do with each entry, without
//! Redis; `deliver.rs` runs the plans through the delivery script (splitting batches Redis refuses)
//! and records what it did; `confirm.rs` hears the servers' answers and confirms; `acks.rs` follows
//! entries that wait for their clients' acknowledgements; `expire.rs` dead-letters those in hand
//! whose lifetime ended; `pending.rs` takes entries the relay did
//! not just read (its own after a reconnection, other consumers' idle ones, the held ones) and
//! `release.rs` lets held ones out; what the relay does about each entry once the delivery script
//! answered is derived in `effect.rs`, from the plan and the outcome alone; whichever way an entry
//! leaves, `depart.rs` records it. The held entries and those waiting for acknowledgements are the
//! one state the stages share (`custody.rs`). Around them: `duties.rs` says when each periodic duty is due; `group.rs` creates and looks after the
//! consumer group; `session.rs` is the connected state and how far its setup got; `link.rs` tells
//! operators how the link to Redis is doing.

mod acks;
mod confirm;
mod custody;
mod deliver;
mod depart;
mod duties;
mod effect;
mod expire;
mod group;
mod link;
mod pending;
mod plan;
mod read;
mod release;
mod session;
mod spans;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::awaiting::Awaiting;
use crate::config::{Config, RedisMode};
use crate::confirming::Confirming;
use crate::connection;
use crate::delivery::Scripts;
use crate::entry::EntryId;
use crate::exit::{Failure, EXIT_CONFIG};
use crate::fault::Fault;
use crate::health::Health;
use crate::held::Held;
use crate::lease::Lease;
use crate::metrics::StreamMetrics;
use crate::packet::Target;
use crate::replies::Listener;
use crate::systemd::Notifier;
use confirm::ConfirmState;
use custody::Custody;
use duties::{Duties, Duty};
use group::Standing;
use link::Link;
use pending::PendingState;
use read::ReadState;
use session::{Replicas, Session, Setup};
use spans::Spans;

/// XAUTOCLAIM pages per reclaim round, so that a huge pending list cannot starve new entries.
const CLAIM_PAGES_PER_ROUND: usize = 10;

/// How often the group's lag and pending gauges are refreshed, stale consumers looked for, and a
/// cluster's list of nodes compared with the one servers are counted on.
const GROUP_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// What tells this process's broadcasts with acknowledgements from an earlier one's: its process
/// ID and start time, mixed.
fn nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "{:08x}",
        (nanos ^ u64::from(std::process::id()) << 32) as u32 ^ (nanos >> 32) as u32
    )
}

/// How often the held census is taken: it walks every held namespace.
const CENSUS_INTERVAL: Duration = Duration::from_secs(1);

pub struct Relay {
    cfg: Config,
    target: Target,
    scripts: Arc<Scripts>,
    lease: Lease,
    /// The held entries and those waiting for their clients' acknowledgements.
    custody: Custody,
    duties: Duties,
    link: Link,
    standing: Standing,
    /// The pending stage's own state: this process's takeover, the reclaim cursor.
    pending: PendingState,
    /// The read stage's own state: entries asked for per read, and whether reading is paused.
    read: ReadState,
    /// Redis's clock minus this host's, in milliseconds: entry IDs are Redis time.
    clock_offset_ms: i64,
    /// Tells this process's requests and journal fields from an earlier one's.
    nonce: String,
    /// Sessions opened, to tell one session's confirmation requests and journal fields from
    /// another's.
    sessions: u64,
    /// The confirm stage's own state: the namespaces whose servers were said not to answer.
    confirms: ConfirmState,
    /// In a cluster, the slot of the stream and of every key of the relay (see the config check).
    stream_slot: Option<redis::cluster_routing::Slot>,
    shutdown: CancellationToken,
    health: Arc<Health>,
    /// This stream's series.
    metrics: StreamMetrics,
    notifier: Notifier,
    /// The spans of the entries in hand (`[telemetry]`).
    spans: Spans,
}

impl Relay {
    pub fn new(
        cfg: Config,
        shutdown: CancellationToken,
        health: Arc<Health>,
        metrics: StreamMetrics,
    ) -> Relay {
        let nonce = nonce();
        Relay {
            target: cfg.target(),
            scripts: Arc::new(Scripts::new(&cfg)),
            lease: Lease::new(),
            link: Link::new(&cfg, health.clone(), metrics.clone()),
            custody: Custody {
                held: Held::new(cfg.delivery.max_held),
                awaiting: Awaiting::new(cfg.acks.max_waiting, cfg.acks.retry_interval, &nonce),
            },
            nonce,
            duties: Duties::new(),
            standing: Standing::default(),
            pending: PendingState::new(),
            read: ReadState::new(cfg.source.batch_size),
            clock_offset_ms: 0,
            sessions: 0,
            confirms: ConfirmState::default(),
            stream_slot: (cfg.redis.mode == RedisMode::Cluster)
                .then(|| redis::cluster_routing::Slot::for_key(&cfg.source.stream)),
            shutdown,
            health,
            metrics,
            notifier: Notifier::new(),
            spans: Spans::off(),
            cfg,
        }
    }

    /// Traces its entries through `exporter`, counting what it does not export in `dropped`.
    pub fn traced(
        mut self,
        exporter: &crate::traces::Exporter,
        dropped: &prometheus_client::metrics::family::Family<
            crate::metrics::SpanDropLabels,
            prometheus_client::metrics::counter::Counter,
        >,
    ) -> Relay {
        self.spans = Spans::new(exporter, &self.cfg, dropped.clone());
        self
    }

    /// Relays until the shutdown token is cancelled, then delivers what it already read,
    /// acknowledges it, and returns. Held entries stay pending (and recorded) for the next relay.
    pub async fn run(mut self) -> Result<(), Failure> {
        let mut session: Option<Session> = None;
        let outcome = loop {
            if self.shutdown.is_cancelled() {
                break Ok(());
            }
            self.health.beat();
            self.notifier.alive();
            let result = match session.as_mut() {
                Some(s) => match self.step(s).await {
                    Ok(()) => self.replicate(s).await,
                    failed => failed,
                },
                None => match self.open().await {
                    Ok(s) => {
                        session = Some(s);
                        Ok(())
                    }
                    Err(fault) => Err(fault),
                },
            };
            self.metrics.held_now.set(self.custody.held.len() as i64);
            let now = tokio::time::Instant::now();
            if self.duties.is_due(Duty::Census, now) {
                self.duties.done(Duty::Census, now, CENSUS_INTERVAL);
                self.metrics.held_census(self.custody.held.counts());
            }
            if let Err(fault) = result {
                if let Some(failure) = self.handle(fault, &mut session).await {
                    break Err(failure);
                }
            }
        };
        if let Some(mut s) = session.take() {
            if outcome.is_ok() {
                self.finish(&mut s).await;
            }
        }
        self.spans.stop();
        outcome
    }

    /// Connects, and takes this consumer name's lease the first time.
    async fn open(&mut self) -> Result<Session, Fault> {
        let conns = connection::connect(&self.cfg).await?;
        self.clock_offset_ms = conns.clock_offset_ms;
        let listener = Listener::new(
            self.target.clone(),
            self.custody.awaiting.prefix().to_owned(),
        );
        self.sessions += 1;
        let confirming = Confirming::new(
            self.cfg.delivery.confirm,
            self.cfg.delivery.confirm_timeout,
            &format!("{}{}-", self.custody.awaiting.prefix(), self.sessions),
            &format!(
                "{}:{}.{}:",
                self.cfg.source.consumer, self.nonce, self.sessions
            ),
        );
        let mut s = Session::new(conns, listener, confirming).await;
        if !self.pending.taken_over() {
            // Once per process: a setup error later (an ACL rule changed while Redis was away)
            // is waited out like any refusal, not a reason to stop.
            self.preflight(&mut s).await?;
        }
        let consumer = &self.cfg.source.consumer;
        self.lease
            .take(&self.scripts, &mut s.writer, consumer, &self.shutdown)
            .await?;
        s.renew(&self.lease, self.scripts.clone());
        Ok(s)
    }

    /// Stops the relay at start, with every reason, when Redis is set up so that it cannot work:
    /// commands its ACL user may not run, keys of the wrong type.
    async fn preflight(&mut self, s: &mut Session) -> Result<(), Fault> {
        let setup_error = |problems: Vec<String>| Fault::Fatal {
            code: EXIT_CONFIG,
            message: format!("Redis is not set up for the relay: {}", problems.join("; ")),
        };
        let problems = match self.scripts.preflight(&mut s.writer).await {
            Ok((problems, _)) => problems,
            Err(e) if e.code() == Some("NOPERM") || e.to_string().contains("EVALSHA") => {
                vec![format!("the ACL user may not run scripts ({e})")]
            }
            Err(e) => return Err(e.into()),
        };
        if problems.is_empty() {
            Ok(())
        } else {
            Err(setup_error(problems))
        }
    }

    /// With `redis.wait_replicas`, waits until what this step wrote (acknowledgements, dead
    /// letters, the journal) reached that many replicas, so that a failover right after it does
    /// not undo it (and deliver it again). WAIT is not consensus: a shortfall is logged and
    /// counted, and the relay goes on.
    async fn replicate(&mut self, s: &mut Session) -> Result<(), Fault> {
        let (wanted, timeout) = (self.cfg.redis.wait_replicas, self.cfg.redis.wait_timeout);
        if wanted == 0 {
            return Ok(());
        }
        let reached: u32 = redis::cmd("WAIT")
            .arg(wanted)
            .arg(timeout.as_millis() as u64)
            .query_async(&mut s.writer)
            .await?;
        if reached < wanted {
            self.metrics.replicas_short.inc();
            if s.replicas == Replicas::Enough {
                warn!(reached, wanted, ?timeout, "fewer replicas than redis.wait_replicas confirmed the relay's writes; going on (a failover now may deliver entries again)");
            }
        } else if s.replicas == Replicas::Short {
            info!(reached, "the replicas confirm the relay's writes again");
        }
        s.replicas = if reached < wanted {
            Replicas::Short
        } else {
            Replicas::Enough
        };
        Ok(())
    }

    async fn step(&mut self, s: &mut Session) -> Result<(), Fault> {
        self.lease.check(&self.cfg.source.consumer)?;
        if s.setup == Setup::Group {
            self.create_group(s).await?;
            s.setup = Setup::Recovery;
        }
        if s.setup == Setup::Recovery {
            self.recover_own_pending(s).await?;
            // What earlier sessions journaled told the recovery what they published; no more use.
            let current = s.confirming.journal_prefix().to_owned();
            self.scripts.prune(&mut s.writer, &current).await?;
            s.setup = Setup::Done;
            self.link_up();
        }

        if !self.custody.awaiting.is_empty() {
            self.follow_acks(s).await?;
        }
        let now = tokio::time::Instant::now();
        if !self.custody.is_empty() && self.duties.is_due(Duty::Expire, now) {
            self.expire(s).await?;
        }
        if !self.custody.is_empty() && self.duties.is_due(Duty::Keep, now) {
            self.keep_held(s).await?;
            let every = self.cfg.delivery.claim_idle / 3;
            self.duties.done(Duty::Keep, now, every);
        }
        if !self.custody.held.is_empty() && self.duties.is_due(Duty::Retry, now) {
            self.retry_held(s).await?;
        }
        if !self.custody.is_full() && self.duties.is_due(Duty::Reclaim, now) {
            self.reclaim(s).await?;
            let every = self.cfg.delivery.claim_interval;
            self.duties.done(Duty::Reclaim, now, every);
        }
        if self.duties.is_due(Duty::GroupCheck, now) {
            self.check_group(s).await?;
            if s.all_nodes.follow(&self.cfg).await? {
                info!("the cluster lists other nodes than before; counting Socket.IO servers on those it lists now");
            }
            self.duties
                .done(Duty::GroupCheck, now, GROUP_CHECK_INTERVAL);
        }

        if self.custody.is_full() || s.confirming.is_full() {
            if self.custody.is_full() {
                self.pause_reading();
            }
            self.confirm(s).await?;
            let pause = self.rest(s);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = s.listener.heard() => {}
                _ = self.shutdown.cancelled() => {}
            }
            return Ok(());
        }
        self.resume_reading();
        self.read_new(s).await
    }

    /// Handles the fault that ended a step, then waits before the next attempt; `Some` to stop.
    async fn handle(&mut self, fault: Fault, session: &mut Option<Session>) -> Option<Failure> {
        match fault {
            Fault::Fatal { code, message } => {
                error!(reason = %message, "stopping");
                self.health.set_not_ready(message.clone());
                return Some(Failure { code, message });
            }
            Fault::NoGroup => {
                self.standing.lost();
                if let Some(s) = session.as_mut() {
                    s.setup = Setup::Group;
                }
                // Created again at once: every moment without it is a moment producers' entries
                // are not read.
                return None;
            }
            fault @ (Fault::Refused(_) | Fault::Batch(_)) => {
                // Whatever the failed step had in hand is pending for this consumer: the next step
                // takes it back (without counting a delivery) before reading anything new.
                if let Some(s) = session.as_mut() {
                    s.setup = s.setup.min(Setup::Recovery);
                }
                let reason = match fault {
                    Fault::Refused(reason) => reason,
                    other => other.to_string(),
                };
                self.link.refused(reason);
            }
            Fault::Link(err) => {
                *session = None;
                let custody = &self.custody;
                self.spans.interrupted(|id| custody.contains(id));
                self.link.down(&err);
            }
        }
        let delay = self.link.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = self.shutdown.cancelled() => {}
        }
        None
    }

    /// How long the loop may rest (a read's BLOCK, a pause while full): `source.block`, or less
    /// when a retry, an expiry or an attempt is due sooner.
    fn rest(&self, s: &Session) -> Duration {
        let watched: &[Duty] = match (self.custody.held.is_empty(), self.custody.is_empty()) {
            (false, _) => &[Duty::Retry, Duty::Expire],
            (true, false) => &[Duty::Expire],
            (true, true) => &[],
        };
        self.duties
            .rest(self.cfg.source.block, watched, self.wake(s))
    }

    /// Redis's clock now, in milliseconds since the epoch: entry IDs are Redis time.
    fn redis_now_ms(&self) -> u64 {
        (connection::now_ms() + self.clock_offset_ms).max(0) as u64
    }

    /// How old an entry is, by the time in its ID and Redis's clock.
    fn age(&self, id: EntryId) -> Duration {
        plan::age(id, self.redis_now_ms())
    }

    /// The plan stage's rules, now.
    fn planner(&self) -> plan::Planner<'_> {
        plan::Planner {
            cfg: &self.cfg,
            target: &self.target,
            now_ms: self.redis_now_ms(),
        }
    }

    /// The relay works again (or for the first time).
    fn link_up(&mut self) {
        self.link.up(&self.cfg);
        self.notifier.ready(&format!(
            "relaying stream {} as consumer {} of group {}",
            self.cfg.source.stream, self.cfg.source.consumer, self.cfg.source.group
        ));
    }

    /// The clean stop: delivers the batch already read (a read in flight returns within
    /// `source.block`), confirms, delivers anything else still pending for this consumer that is
    /// not held, and gives up the consumer name's lease.
    async fn finish(&mut self, s: &mut Session) {
        let finished: Result<(), Fault> = async {
            if let Some(read) = s.finish_read().await {
                let read = read?;
                self.deliver_read(s, read).await?;
            }
            self.confirm_all(s).await?;
            self.recover_own_pending(s).await?;
            self.confirm_all(s).await
        }
        .await;
        if let Err(fault) = finished {
            warn!(error = %fault, "could not finish the entries in hand; they stay pending for the next relay, which will not publish them twice");
        }
        self.lease.release(&self.scripts, &mut s.writer).await;
        if !self.custody.held.is_empty() {
            info!(
                held = self.custody.held.len(),
                "entries waiting for Socket.IO servers stay pending (and recorded as held) for the next relay"
            );
        }
    }
}

/// Redis gave an entry ID that does not parse: nothing an outage explains.
fn parse_error(problem: String) -> Fault {
    Fault::bug(format!(
        "Redis gave an entry ID that does not parse: {problem}"
    ))
}
