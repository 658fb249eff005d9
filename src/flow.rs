//! Flow control towards the Socket.IO servers' Pub/Sub connections.
//!
//! Redis queues every published packet in each subscriber's output buffer and writes it out as fast
//! as the subscriber reads. A Socket.IO server that reads slower than the relay publishes (a backlog
//! drained after an outage, big entries) sees its buffer grow, and Redis disconnects it once the
//! buffer passes `client-output-buffer-limit pubsub` (32 MiB at once, or 8 MiB for 60 s, by
//! default), dropping every packet still queued: packets the relay already counted as received.
//! So before publishing more, the relay looks at the buffers (`CLIENT LIST TYPE pubsub`) whenever it
//! may have filled them, and waits while the fullest one would pass half the limit. A subscriber
//! that stops reading altogether (a frozen process) is waited for only [`STALL_AFTER`], then left to
//! Redis's own limit. Without permission to run `CLIENT LIST` or `CONFIG GET`, the relay says so once
//! and falls back to Redis's default limits or to not watching.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::RedisResult;
use tracing::{info, warn};

use crate::servers::MONITOR_CLIENT_NAME;

/// How long a subscriber may keep a full buffer before the relay stops waiting for it.
pub const STALL_AFTER: Duration = Duration::from_secs(10);

/// How often buffers are looked at again while waiting for them to drain.
const POLL: Duration = Duration::from_millis(5);

/// Redis's default `client-output-buffer-limit pubsub 32mb 8mb 60`: hard and soft limits.
const DEFAULT_LIMITS: (u64, u64) = (32 << 20, 8 << 20);

/// What the relay knows of the subscribers' output buffers.
#[derive(Debug)]
pub struct Flow {
    /// The most a subscriber's buffer may hold before the relay waits; `None`: not watched.
    high_water: Option<u64>,
    /// Packet bytes published since the buffers were last seen, on top of what they held then:
    /// the most any subscriber can hold now.
    queued_at_most: u64,
    /// Subscribers (by client id) seen with a full buffer: since when, and whether the relay said
    /// it stopped waiting for them.
    full_since: HashMap<u64, (Instant, bool)>,
}

/// One Pub/Sub client as `CLIENT LIST` shows it.
#[derive(Debug, PartialEq, Eq)]
pub struct Subscriber {
    pub id: u64,
    pub addr: String,
    pub name: String,
    /// Channel subscriptions: an adapter subscribes to its request and response channels.
    pub sub: u64,
    /// Pattern subscriptions: a classic adapter's broadcast subscription is one.
    pub psub: u64,
    /// Shard channel subscriptions: a sharded adapter's namespace and room channels.
    pub ssub: u64,
    /// Bytes queued in its output buffer.
    pub omem: u64,
}

impl Subscriber {
    /// Looks like a Socket.IO server's adapter: channels and patterns both (classic), or shard
    /// channels (sharded). A monitor (`sio-relay monitor`, which names itself, `redis-cli
    /// PSUBSCRIBE`) never slows the relay.
    fn is_adapter(&self) -> bool {
        (self.sub > 0 && self.psub > 0) || (self.ssub > 0 && self.name != MONITOR_CLIENT_NAME)
    }
}

impl Flow {
    /// Reads the Pub/Sub buffer limits and checks that the buffers can be seen.
    pub async fn setup(con: &mut MultiplexedConnection) -> Flow {
        let limits = match redis::cmd("CONFIG")
            .arg("GET")
            .arg("client-output-buffer-limit")
            .query_async::<Vec<String>>(con)
            .await
        {
            Ok(reply) => reply
                .get(1)
                .and_then(|value| pubsub_limits(value))
                .unwrap_or(DEFAULT_LIMITS),
            Err(e) => {
                info!(error = %e, "cannot read client-output-buffer-limit; assuming Redis's defaults (pubsub 32mb 8mb 60)");
                DEFAULT_LIMITS
            }
        };
        let high_water = match limits {
            (0, 0) => None,
            (0, soft) | (soft, 0) => Some(soft / 2),
            (hard, soft) => Some(hard.min(soft) / 2),
        };
        let mut flow = Flow {
            high_water,
            queued_at_most: 0,
            full_since: HashMap::new(),
        };
        if flow.high_water.is_some() {
            if let Err(e) = subscribers(con).await {
                warn!(error = %e, "cannot run CLIENT LIST: Socket.IO servers' Pub/Sub output buffers are not watched, and a server that reads slower than the relay publishes may be disconnected by Redis and miss entries (allow +client|list to the relay's ACL user)");
                flow.high_water = None;
            }
        }
        flow
    }

    /// The most packet bytes one batch may publish: `limit`, but never more than half of what a
    /// subscriber's buffer may hold.
    pub fn batch_bytes(&self, limit: usize) -> usize {
        match self.high_water {
            Some(high) => limit.min((high / 2).max(1) as usize),
            None => limit,
        }
    }

    /// Waits until `bytes` more can be published without any subscriber's buffer passing the high
    /// water mark. Looks at the buffers only when what was published since the last look could
    /// have filled one.
    pub async fn make_room(
        &mut self,
        con: &mut MultiplexedConnection,
        bytes: usize,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> RedisResult<()> {
        let Some(high) = self.high_water else {
            return Ok(());
        };
        let bytes = bytes as u64;
        while self.queued_at_most + bytes > high {
            let fullest = self.fullest(&subscribers(con).await?, high);
            // A batch bigger than the mark on its own (one huge entry) goes once the buffers are
            // empty.
            if fullest + bytes <= high || fullest == 0 || shutdown.is_cancelled() {
                self.queued_at_most = fullest;
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        self.queued_at_most += bytes;
        Ok(())
    }

    /// The fullest buffer among the servers' subscribers, leaving out those that have not read for
    /// [`STALL_AFTER`].
    fn fullest(&mut self, subscribers: &[Subscriber], high: u64) -> u64 {
        let now = Instant::now();
        let mut fullest = 0;
        let mut still_full = HashMap::new();
        for sub in subscribers.iter().filter(|s| s.is_adapter()) {
            if sub.omem > high {
                let (since, told) = self
                    .full_since
                    .get(&sub.id)
                    .copied()
                    .unwrap_or((now, false));
                if now.duration_since(since) >= STALL_AFTER {
                    if !told {
                        warn!(
                            client = sub.id,
                            addr = %sub.addr,
                            name = %sub.name,
                            queued_bytes = sub.omem,
                            "a Pub/Sub subscriber has not read its messages for 10s; publishing without waiting for it (Redis disconnects it at its client-output-buffer-limit)"
                        );
                    }
                    still_full.insert(sub.id, (since, true));
                    continue;
                }
                still_full.insert(sub.id, (since, told));
            }
            fullest = fullest.max(sub.omem);
        }
        self.full_since = still_full;
        fullest
    }
}

/// The pubsub class of a `client-output-buffer-limit` value: (hard, soft) in bytes.
fn pubsub_limits(value: &str) -> Option<(u64, u64)> {
    let words: Vec<&str> = value.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "pubsub")?;
    let bytes = |word: &str| -> Option<u64> {
        let lower = word.to_ascii_lowercase();
        let (digits, unit) = lower
            .find(|c: char| !c.is_ascii_digit())
            .map_or((lower.as_str(), ""), |i| lower.split_at(i));
        let n: u64 = digits.parse().ok()?;
        Some(match unit {
            "" | "b" => n,
            "k" => n * 1000,
            "kb" => n << 10,
            "m" => n * 1_000_000,
            "mb" => n << 20,
            "g" => n * 1_000_000_000,
            "gb" => n << 30,
            _ => return None,
        })
    };
    Some((bytes(words.get(at + 1)?)?, bytes(words.get(at + 2)?)?))
}

/// Every Pub/Sub client of the Redis server.
pub async fn subscribers(con: &mut MultiplexedConnection) -> RedisResult<Vec<Subscriber>> {
    let text: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(con)
        .await?;
    Ok(text.lines().filter_map(parse_client).collect())
}

fn parse_client(line: &str) -> Option<Subscriber> {
    let mut sub = Subscriber {
        id: 0,
        addr: String::new(),
        name: String::new(),
        sub: 0,
        psub: 0,
        ssub: 0,
        omem: 0,
    };
    for pair in line.split(' ') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        match key {
            "id" => sub.id = value.parse().ok()?,
            "addr" => sub.addr = value.to_owned(),
            "name" => sub.name = value.to_owned(),
            "sub" => sub.sub = value.parse().ok()?,
            "psub" => sub.psub = value.parse().ok()?,
            "ssub" => sub.ssub = value.parse().ok()?,
            "omem" => sub.omem = value.parse().ok()?,
            _ => {}
        }
    }
    Some(sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_read_in_redis_units() {
        let value = "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60";
        assert_eq!(pubsub_limits(value), Some((32 << 20, 8 << 20)));
        assert_eq!(
            pubsub_limits("pubsub 64mb 16mb 90 normal 0 0 0"),
            Some((64 << 20, 16 << 20))
        );
        assert_eq!(pubsub_limits("normal 0 0 0"), None);
    }

    #[test]
    fn client_lines_give_ids_patterns_and_queued_bytes() {
        let line = "id=7 addr=127.0.0.1:5000 laddr=127.0.0.1:6379 fd=9 name= age=3 idle=0 flags=P db=0 sub=3 psub=1 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=2 omem=40960 tot-mem=42000 events=r cmd=psubscribe user=default redir=-1 resp=2";
        assert_eq!(
            parse_client(line),
            Some(Subscriber {
                id: 7,
                addr: "127.0.0.1:5000".into(),
                name: String::new(),
                sub: 3,
                psub: 1,
                ssub: 0,
                omem: 40960,
            })
        );
    }

    #[test]
    fn stalled_subscribers_are_waited_for_a_while_then_not() {
        let mut flow = Flow {
            high_water: Some(100),
            queued_at_most: 0,
            full_since: HashMap::new(),
        };
        let subs = |omem| {
            vec![
                Subscriber {
                    id: 1,
                    addr: String::new(),
                    name: String::new(),
                    sub: 2,
                    psub: 1,
                    ssub: 0,
                    omem,
                },
                Subscriber {
                    id: 2,
                    addr: String::new(),
                    name: "a monitor: patterns only".into(),
                    sub: 0,
                    psub: 1,
                    ssub: 0,
                    omem: 10_000,
                },
                Subscriber {
                    id: 3,
                    addr: String::new(),
                    name: MONITOR_CLIENT_NAME.into(),
                    sub: 0,
                    psub: 0,
                    ssub: 2,
                    omem: 10_000,
                },
            ]
        };
        assert_eq!(flow.fullest(&subs(50), 100), 50);
        assert_eq!(flow.fullest(&subs(500), 100), 500);
        flow.full_since
            .insert(1, (Instant::now() - STALL_AFTER, false));
        assert_eq!(flow.fullest(&subs(500), 100), 0, "stalled: not waited for");
        assert_eq!(flow.fullest(&subs(20), 100), 20, "reading again: watched");
        assert!(flow.full_since.is_empty());
    }
}
