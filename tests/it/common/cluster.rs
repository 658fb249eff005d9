//! A Redis Cluster of the test's own: six `redis-server --cluster-enabled yes` nodes on free ports,
//! joined by `redis-cli --cluster create --cluster-replicas 1` (three primaries, three replicas,
//! `cluster-node-timeout` 2 s), so that a test can kill a primary or migrate a slot mid-flow. The
//! benchmark starts one of primaries only ([`Cluster::start_with`]).

use std::process::Command;
use std::time::Duration;

use super::{free_port, on_port, require, wait_until, RedisServer};

pub struct Cluster {
    /// Every node, in start order; a killed one stays in place (not running).
    pub nodes: Vec<RedisServer>,
}

impl Cluster {
    pub fn start() -> Cluster {
        Cluster::start_with(3, 1)
    }

    /// A cluster of `primaries`, each with `replicas` replicas.
    pub fn start_with(primaries: usize, replicas: usize) -> Cluster {
        let nodes: Vec<RedisServer> = (0..primaries * (1 + replicas)).map(node).collect();
        let cli = require(
            "redis-cli",
            "install Redis 7 (apt-get install redis-server)",
        );
        let output = Command::new(cli)
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = Cluster { nodes };
        cluster.wait_healthy();
        cluster
    }

    /// A cluster of one node serving every slot. `redis-cli --cluster create` wants three
    /// primaries, so the slots are assigned by hand. A node that never met another does not know
    /// its own address: CLUSTER SLOTS gives its endpoint as the empty string, meaning "the host
    /// you asked" (the CLUSTER SLOTS and CLUSTER SHARDS reference pages).
    pub fn start_one_node() -> Cluster {
        let cluster = Cluster {
            nodes: vec![node(0)],
        };
        let _: () = redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(0)
            .arg(16383)
            .query(&mut cluster.nodes[0].connection())
            .expect("CLUSTER ADDSLOTSRANGE");
        cluster.wait_healthy();
        cluster
    }

    /// Until every running node sees every slot served, and every replica is in sync.
    pub fn wait_healthy(&self) {
        wait_until(Duration::from_secs(60), "the cluster is healthy", || {
            self.running().all(|node| {
                let Ok(mut con) = node.try_connection() else {
                    return false;
                };
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut con)
                    .unwrap_or_default();
                let Ok(replication) = redis::cmd("INFO")
                    .arg("replication")
                    .query::<redis::InfoDict>(&mut con)
                else {
                    return false;
                };
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && (replication.get::<String>("role").as_deref() != Some("slave")
                        || replication.get::<String>("master_link_status").as_deref() == Some("up"))
            })
        });
    }

    fn running(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.is_running())
    }

    /// The nodes' URLs, comma-separated (as `redis.urls` reads them from the environment).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The relay settings for this cluster, with `stream` and its dead-letter stream.
    pub fn settings(&self, stream: &str) -> Vec<(&'static str, String)> {
        vec![
            ("REDIS__MODE", "cluster".into()),
            ("REDIS__URLS", self.urls()),
            ("SOURCE__STREAM", stream.into()),
            ("DEAD_LETTER__STREAM", format!("{stream}:dead")),
        ]
    }

    /// A connection to any running node.
    fn any(&self) -> redis::Connection {
        self.running()
            .find_map(|n| n.try_connection().ok())
            .expect("a running node")
    }

    pub fn keyslot(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.any())
            .unwrap()
    }

    /// Each primary's slot ranges, by port, as CLUSTER SLOTS tells them now.
    fn ranges(&self) -> Vec<(u16, u16, u16)> {
        ranges(&mut self.any()).expect("CLUSTER SLOTS")
    }

    /// The ports of every node, for [`owner_connection`].
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The subscribers of `channel` (NUMSUB) summed over the running nodes.
    pub fn subscribers(&self, channel: &str) -> u64 {
        self.running()
            .filter_map(|n| n.try_connection().ok())
            .map(|mut con| {
                redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(channel)
                    .query::<(String, u64)>(&mut con)
                    .map_or(0, |(_, n)| n)
            })
            .sum()
    }

    /// Until `n` classic-adapter servers listen on `/`, wherever they subscribed.
    pub fn wait_servers(&self, n: u64) {
        wait_until(
            Duration::from_secs(20),
            &format!("{n} servers listen"),
            || self.subscribers("socket.io-request#/#") == n,
        );
    }

    /// The primary that serves `key`'s slot now.
    pub fn owner(&self, key: &str) -> &RedisServer {
        let slot = self.keyslot(key);
        let (_, _, port) = self
            .ranges()
            .into_iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .expect("a served slot");
        self.nodes.iter().find(|n| n.port == port).unwrap()
    }

    /// A hash tag whose slot is among the first few of a primary's range, so that a reshard that
    /// moves the lowest slots of that primary moves it within seconds.
    pub fn tag_near_a_range_start(&self) -> String {
        let starts: Vec<u16> = self.ranges().iter().map(|(start, _, _)| *start).collect();
        (0..100_000)
            .map(|i| format!("t{i}"))
            .find(|tag| {
                let slot = self.keyslot(&format!("{{{tag}}}"));
                starts.iter().any(|&s| s > 0 && (s..s + 8).contains(&slot))
            })
            .expect("some tag lands near a range start")
    }

    /// One hash tag per primary, in the order of their slot ranges: streams tagged with them
    /// live on different shards.
    pub fn tag_on_each_primary(&self) -> Vec<String> {
        let mut tags = Vec::new();
        for (start, end, _) in self.ranges() {
            let tag = (0..100_000)
                .map(|i| format!("p{i}"))
                .find(|tag| {
                    let slot = sio_relay::partition::key_slot(&format!("{{{tag}}}"));
                    (start..=end).contains(&slot)
                })
                .expect("some tag lands in the range");
            tags.push(tag);
        }
        tags
    }

    /// SIGKILLs the primary of `key`'s slot and waits until its replica serves the slot; returns
    /// the new primary's port.
    pub fn fail_over(&mut self, key: &str) -> u16 {
        let old = self.owner(key).port;
        on_port(&mut self.nodes, old).kill();
        wait_until(
            Duration::from_secs(30),
            "a replica takes over the slot",
            || self.owner(key).port != old,
        );
        self.wait_healthy();
        self.owner(key).port
    }

    /// Migrates `key`'s slot to another primary with `redis-cli --cluster reshard`, which moves a
    /// primary's lowest slots first: every slot of the owner's range up to `key`'s goes. Returns
    /// the new owner's port.
    pub fn reshard(&self, key: &str) -> u16 {
        let slot = self.keyslot(key);
        let ranges = self.ranges();
        let (start, _, from) = ranges
            .iter()
            .copied()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .unwrap();
        let to = ranges.iter().map(|r| r.2).find(|p| *p != from).unwrap();
        let id = |port: u16| -> String {
            let node = self.nodes.iter().find(|n| n.port == port).unwrap();
            redis::cmd("CLUSTER")
                .arg("MYID")
                .query(&mut node.connection())
                .unwrap()
        };
        let cli = require(
            "redis-cli",
            "install Redis 7 (apt-get install redis-server)",
        );
        let output = Command::new(cli)
            .args(["--cluster", "reshard", &format!("127.0.0.1:{from}")])
            .args(["--cluster-from", &id(from), "--cluster-to", &id(to)])
            .args(["--cluster-slots", &(slot - start + 1).to_string()])
            .arg("--cluster-yes")
            .output()
            .expect("run redis-cli --cluster reshard");
        assert!(
            output.status.success(),
            "redis-cli --cluster reshard failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        assert_eq!(self.owner(key).port, to, "the slot moved");
        to
    }
}

/// The `i`th node of a cluster, started and not yet joined.
fn node(i: usize) -> RedisServer {
    RedisServer::start_with(&[
        "--cluster-enabled".into(),
        "yes".into(),
        "--cluster-config-file".into(),
        format!("nodes-{i}.conf"),
        "--cluster-node-timeout".into(),
        "2000".into(),
        // Not port + 10000, which may be taken or past 65535.
        "--cluster-port".into(),
        free_port().to_string(),
    ])
}

/// Each primary's slot ranges (start, end, port), as CLUSTER SLOTS on `con` tells them now.
fn ranges(con: &mut redis::Connection) -> redis::RedisResult<Vec<(u16, u16, u16)>> {
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(con)?;
    Ok(slots
        .into_iter()
        .filter_map(|range| {
            let redis::Value::Array(items) = range else {
                return None;
            };
            let redis::Value::Array(primary) = items.get(2)? else {
                return None;
            };
            Some((
                redis::from_redis_value_ref(&items[0]).ok()?,
                redis::from_redis_value_ref(&items[1]).ok()?,
                redis::from_redis_value_ref(primary.get(1)?).ok()?,
            ))
        })
        .collect())
}

/// A connection to the primary that serves `key`'s slot, as the first of the nodes at `ports`
/// that answers says, if it answers as a primary: how a producer that must survive failovers and
/// migrations finds where to XADD.
pub fn owner_connection(ports: &[u16], key: &str) -> Option<redis::Connection> {
    let connect = |port: u16| {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .ok()?
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()
    };
    for &port in ports {
        let Some(mut con) = connect(port) else {
            continue;
        };
        let Ok(slot) = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query::<u16>(&mut con)
        else {
            continue;
        };
        let Ok(ranges) = ranges(&mut con) else {
            continue;
        };
        let Some(&(_, _, owner)) = ranges.iter().find(|(s, e, _)| (*s..=*e).contains(&slot)) else {
            continue;
        };
        let mut owner = connect(owner)?;
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut owner).ok()?;
        if role.first() == Some(&redis::Value::BulkString(b"master".to_vec())) {
            owner.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            return Some(owner);
        }
    }
    None
}
