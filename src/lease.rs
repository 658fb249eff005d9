//! One relay per consumer name.
//!
//! Two relays running as the same consumer of the group (two units on one host, host-network
//! containers, a copy-pasted config) share one pending list: each finishes the other's entries as
//! its own, and entries go out twice. So a relay holds a lease on its consumer name in Redis
//! (`lua/lease.lua`, deadlines in Redis's clock), renewed every [`RENEW_EVERY`] by a task of its own
//! so that a long batch never lets it lapse. At start, a lease held by someone else is watched: if
//! its holder renews it, a live twin runs and the relay refuses to start; if it runs out, or its
//! holder is provably dead (same host and PID namespace, and its process is gone), the relay takes it
//! over at once, so a restart under the same name still finishes its own pending entries without
//! waiting for `claim_idle`.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::delivery::{LeaseAction, LeaseReply, Scripts};
use crate::exit::EXIT_CONFIG;
use crate::fault::Fault;

/// How long a lease lasts without renewal.
pub const LEASE_TIME: Duration = Duration::from_secs(3);

/// How often the holder renews it.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);

/// This process as a lease holder: a random token, then what lets another relay on the same host
/// tell whether this process is still alive.
#[derive(Clone, Debug)]
pub struct Holder {
    text: String,
}

impl Holder {
    pub fn of_this_process() -> Holder {
        let host = gethostname::gethostname()
            .to_string_lossy()
            .replace(' ', "_");
        Holder {
            text: format!(
                "{:016x} host={host} pid={} pidns={} boot={}",
                fastrand::u64(..),
                std::process::id(),
                pid_namespace(),
                boot_id()
            ),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// This relay's hold on its consumer name: taken once at start, renewed for as long as the relay
/// runs, lost if another relay takes it over.
pub struct Lease {
    holder: Holder,
    /// Cancelled by the renewal when another relay took the name.
    lost: CancellationToken,
    taken: bool,
}

impl Default for Lease {
    fn default() -> Self {
        Lease::new()
    }
}

impl Lease {
    pub fn new() -> Lease {
        Lease {
            holder: Holder::of_this_process(),
            lost: CancellationToken::new(),
            taken: false,
        }
    }

    /// Takes the lease unless this relay already holds it (see [`acquire`]).
    pub async fn take(
        &mut self,
        scripts: &Scripts,
        con: &mut MultiplexedConnection,
        consumer: &str,
        shutdown: &CancellationToken,
    ) -> Result<(), Fault> {
        if !self.taken {
            acquire(scripts, con, &self.holder, consumer, shutdown).await?;
            self.taken = true;
        }
        Ok(())
    }

    /// The task that keeps it renewed on `con` (see [`keep_renewed`]).
    pub fn renewal(
        &self,
        scripts: std::sync::Arc<Scripts>,
        con: MultiplexedConnection,
    ) -> impl std::future::Future<Output = ()> + use<> {
        keep_renewed(scripts, con, self.holder.clone(), self.lost.clone())
    }

    /// [`Fault::Fatal`] once another relay took the name over.
    pub fn check(&self, consumer: &str) -> Result<(), Fault> {
        if !self.lost.is_cancelled() {
            return Ok(());
        }
        Err(Fault::Fatal {
            code: EXIT_CONFIG,
            message: format!(
                "another relay took over consumer `{consumer}` while this one could not renew its lease; stopping so that the two do not deliver the same entries"
            ),
        })
    }

    /// Gives the lease up on a clean stop, so that a restart takes it at once.
    pub async fn release(&self, scripts: &Scripts, con: &mut MultiplexedConnection) {
        let _ = scripts
            .lease(con, self.holder.as_str(), LEASE_TIME, LeaseAction::Release)
            .await;
    }
}

/// Takes the lease on this relay's consumer name, waiting while another holder's lease may still
/// be renewed. A live twin is [`Fault::Fatal`].
async fn acquire(
    scripts: &Scripts,
    con: &mut MultiplexedConnection,
    holder: &Holder,
    consumer: &str,
    shutdown: &CancellationToken,
) -> Result<(), Fault> {
    let mut first_seen: Option<String> = None;
    let mut dead_value: Option<String> = None;
    loop {
        let action = LeaseAction::Take {
            dead_value: dead_value.as_deref(),
        };
        match scripts
            .lease(con, holder.as_str(), LEASE_TIME, action)
            .await?
        {
            LeaseReply::Held => {
                if let Some(previous) = first_seen {
                    info!(consumer, previous = %holder_of(&previous), "took over the consumer name from a relay that is gone");
                }
                return Ok(());
            }
            LeaseReply::Taken { value, left_ms } => {
                match &first_seen {
                    Some(seen) if *seen != value => {
                        return Err(Fault::Fatal {
                            code: EXIT_CONFIG,
                            message: format!(
                                "another relay is running as consumer `{consumer}` of this group ({}); two relays with one name duplicate entries: give each its own source.consumer",
                                holder_of(&value)
                            ),
                        })
                    }
                    Some(_) => {}
                    None => {
                        if is_dead(holder_of(&value)) {
                            dead_value = Some(value.clone());
                        } else {
                            warn!(consumer, holder = %holder_of(&value), "another relay holds this consumer name; waiting to see whether it is alive");
                        }
                        first_seen = Some(value);
                        continue;
                    }
                }
                let pause = Duration::from_millis(left_ms.clamp(1, 100));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.cancelled() => return Err(Fault::Refused("shutting down".into())),
                }
            }
        }
    }
}

/// Renews the lease every [`RENEW_EVERY`] until the task is dropped; cancels `lost` if another
/// relay took it. Errors reaching Redis are left to the relay loop, which reconnects.
async fn keep_renewed(
    scripts: std::sync::Arc<Scripts>,
    mut con: MultiplexedConnection,
    holder: Holder,
    lost: CancellationToken,
) {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    loop {
        tick.tick().await;
        match scripts
            .lease(&mut con, holder.as_str(), LEASE_TIME, LeaseAction::Renew)
            .await
        {
            Ok(LeaseReply::Taken { value, .. }) => {
                warn!(holder = %holder_of(&value), "another relay took over this relay's consumer name while it could not renew its lease");
                lost.cancel();
                return;
            }
            Ok(LeaseReply::Held) | Err(_) => {}
        }
    }
}

/// The holder part of a lease value (`<deadline> <holder>`).
fn holder_of(value: &str) -> &str {
    value.split_once(' ').map_or(value, |(_, holder)| holder)
}

/// True when `holder` ran on this very host, boot and PID namespace, and its process is gone (or
/// its PID is this process's own, which only a process that ended can have had).
fn is_dead(holder: &str) -> bool {
    let this = Holder::of_this_process();
    let same = |name: &str| {
        let value = field(holder, name);
        !value.is_empty() && value != "-" && value == field(&this.text, name)
    };
    let gone = |pid: u32| {
        pid == std::process::id() || !std::path::Path::new(&format!("/proc/{pid}")).exists()
    };
    same("host")
        && same("pidns")
        && same("boot")
        && field(holder, "pid").parse::<u32>().is_ok_and(gone)
}

/// The value of `name=` in a holder text.
fn field<'a>(holder: &'a str, name: &str) -> &'a str {
    holder
        .split(' ')
        .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or("")
}

fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().replace(' ', "_"))
        .unwrap_or_else(|_| "-".into())
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_else(|_| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_gone_from_this_host_is_dead_and_a_live_one_is_not() {
        let me = Holder::of_this_process();
        let parent = me.as_str().replace(
            &format!("pid={}", std::process::id()),
            &format!("pid={}", std::os::unix::process::parent_id()),
        );
        assert!(!is_dead(&parent), "the test runner is alive");
        let gone = me
            .as_str()
            .replace(&format!("pid={}", std::process::id()), "pid=4000000");
        assert!(is_dead(&gone), "no process 4000000: {gone}");
        let elsewhere = gone.replace("host=", "host=other-");
        assert!(!is_dead(&elsewhere), "another host cannot be checked");
        assert_eq!(holder_of("1700 abc host=x"), "abc host=x");
    }
}
