//! The consumer group itself: creating it (and saying what a new group will deliver), creating it
//! again where this relay stood when it vanishes, and looking after it (lag and pending gauges,
//! stale consumers).

use redis::{AsyncCommands, RedisResult};
use tracing::{error, info, warn};

use super::session::Session;
use super::Relay;
use crate::entry::EntryId;
use crate::fault::Fault;

/// Where this relay stood with its consumer group, to create a vanished group again without
/// skipping what it had not read nor repeating what it had.
#[derive(Debug, Default)]
pub(super) struct Standing {
    group: Known,
    /// The last entry this relay handed over after reading it as new.
    pub last_read: Option<EntryId>,
    /// The group's last delivered ID when this relay last looked.
    group_last_delivered: Option<EntryId>,
}

/// What this relay knows of its group's existence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Known {
    /// Not found nor created yet by this process.
    #[default]
    Unseen,
    /// It existed (or was created): if it vanishes now, that is news.
    Seen,
    /// It existed, then Redis said it does not (NOGROUP): finding it again means someone else
    /// created it meanwhile.
    Lost,
}

impl Standing {
    /// Redis said the group does not exist.
    pub fn lost(&mut self) {
        if self.group == Known::Seen {
            self.group = Known::Lost;
        }
    }

    fn known(&self) -> Option<EntryId> {
        self.last_read.max(self.group_last_delivered)
    }
}

impl Relay {
    /// Creates the group (and the stream) unless it exists; an existing group is used as it is. A
    /// group that existed and vanished (`XGROUP DESTROY`, the stream deleted) is created again at
    /// the last entry this relay knows the group had read, not at `source.start_id`: from `0` the
    /// whole history would be delivered again, from `$` the unread backlog skipped.
    pub(super) async fn create_group(&mut self, s: &mut Session) -> Result<(), Fault> {
        let seen = self.standing.group != Known::Unseen;
        let recreate_at = seen.then(|| self.standing.known()).flatten();
        let start =
            recreate_at.map_or_else(|| self.cfg.source.start_id.clone(), |id| id.to_string());
        let src = &self.cfg.source;
        let created = match s
            .writer
            .xgroup_create_mkstream::<_, _, _, ()>(&src.stream, &src.group, &start)
            .await
        {
            Ok(()) => true,
            Err(e) if e.code() == Some("BUSYGROUP") => false,
            Err(e) => return Err(e.into()),
        };
        match (seen, created) {
            (false, true) => self.created(s).await?,
            (true, true) => {
                self.metrics.group_recreated.inc();
                error!(
                    stream = %src.stream,
                    group = %src.group,
                    at = %start,
                    "the consumer group was deleted while the relay ran (XGROUP DESTROY, or the stream deleted); created it again at the last entry this relay knew read, so that nothing unread is skipped and nothing read is delivered again"
                );
                self.reown(s).await?;
            }
            (true, false) if self.standing.group == Known::Lost => {
                warn!(group = %src.group, "the consumer group was deleted and another relay created it again; taking back this relay's entries");
                self.reown(s).await?;
            }
            // Found again after a reconnection, as the relay knew it.
            (_, false) => {}
        }
        self.standing.group = Known::Seen;
        Ok(())
    }

    /// Says what a group created just now will do with the entries already in the stream.
    async fn created(&mut self, s: &mut Session) -> Result<(), Fault> {
        let src = &self.cfg.source;
        let length: u64 = s.writer.xlen(&src.stream).await?;
        let oldest: Vec<(String, redis::Value)> =
            s.writer.xrange_count(&src.stream, "-", "+", 1).await?;
        let since = oldest
            .first()
            .and_then(|(id, _)| id.parse::<EntryId>().ok())
            .map(|id| {
                humantime::format_rfc3339_millis(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(id.ms),
                )
                .to_string()
            })
            .unwrap_or_default();
        match (src.start_id.as_str(), length) {
            (_, 0) => {
                info!(stream = %src.stream, group = %src.group, start_id = %src.start_id, "created the consumer group")
            }
            ("$", _) => {
                warn!(stream = %src.stream, group = %src.group, entries = length, "created the consumer group at $: the entries already in the stream are skipped (source.start_id = \"0\" delivers them)")
            }
            _ => {
                info!(stream = %src.stream, group = %src.group, entries = length, oldest = %since, max_age = %humantime::format_duration(self.cfg.delivery.max_age), "created the consumer group at 0: it delivers the entries already in the stream (those older than delivery.max_age, when set, are dead-lettered as expired)")
            }
        }
        Ok(())
    }

    /// Makes the entries this relay holds or published unconfirmed pending for it again in a group
    /// created anew (a new group's pending list is empty), keeping their delivery counts.
    async fn reown(&mut self, s: &mut Session) -> Result<(), Fault> {
        let mut ids: Vec<String> = self
            .custody
            .held
            .claims()
            .iter()
            .map(|c| c.id.to_string())
            .collect();
        ids.extend(s.confirming.ids().map(|id| id.to_string()));
        self.claim_ids(s, &ids, &["FORCE"]).await
    }

    /// Refreshes the group gauges and what the relay knows of the group's position, and removes
    /// stale consumers.
    pub(super) async fn check_group(&mut self, s: &mut Session) -> Result<(), Fault> {
        let src = &self.cfg.source;
        let groups: RedisResult<redis::streams::StreamInfoGroupsReply> =
            s.writer.xinfo_groups(&src.stream).await;
        let groups = match groups {
            Ok(groups) => groups,
            // The stream itself is gone: the next read says NOGROUP and the group is created again.
            Err(e) if e.to_string().contains("no such key") => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if let Some(group) = groups.groups.iter().find(|g| g.name == src.group) {
            self.metrics
                .group_lag
                .set(group.lag.map_or(f64::NAN, |lag| lag as f64));
            self.metrics.group_pending.set(group.pending as i64);
            if let Ok(id) = group.last_delivered_id.parse::<EntryId>() {
                self.standing.group_last_delivered = Some(id);
            }
        }
        let stale_after = src.stale_consumer_idle;
        if !stale_after.is_zero() {
            let removed = self
                .scripts
                .forget_stale(&mut s.writer, stale_after)
                .await?;
            if !removed.is_empty() {
                info!(consumers = ?removed, "removed consumers idle for longer than source.stale_consumer_idle with nothing pending");
            }
        }
        Ok(())
    }
}
