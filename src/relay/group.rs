//! The consumer group itself: creating it, and looking after it (lag and pending gauges, stale
//! consumers).

use redis::{AsyncCommands, RedisResult};
use tracing::info;

use super::Relay;

impl Relay {
    /// Creates the group (and the stream) unless it exists; an existing group is used as it is.
    pub(super) async fn create_group(&mut self) -> RedisResult<()> {
        let (src, writer) = self.writer();
        match writer
            .xgroup_create_mkstream::<_, _, _, ()>(&src.stream, &src.group, &src.start_id)
            .await
        {
            Ok(()) => {
                info!(stream = %src.stream, group = %src.group, start_id = %src.start_id, "created the consumer group");
                Ok(())
            }
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Refreshes the group gauges and removes stale consumers.
    pub(super) async fn check_group(&mut self) -> RedisResult<()> {
        let (src, writer) = self.writer();
        let groups: redis::streams::StreamInfoGroupsReply =
            writer.xinfo_groups(&src.stream).await?;
        if let Some(group) = groups
            .groups
            .iter()
            .find(|g| g.name == self.cfg.source.group)
        {
            self.metrics
                .group_lag
                .set(group.lag.map_or(f64::NAN, |lag| lag as f64));
            self.metrics.group_pending.set(group.pending as i64);
        }
        let stale_after = self.cfg.source.stale_consumer_idle;
        if !stale_after.is_zero() {
            let conns = self.conns.as_mut().expect("steps run only while connected");
            let removed = self
                .scripts
                .forget_stale(&mut conns.writer, stale_after)
                .await?;
            if !removed.is_empty() {
                info!(consumers = ?removed, "removed consumers idle for longer than source.stale_consumer_idle with nothing pending");
            }
        }
        Ok(())
    }
}
