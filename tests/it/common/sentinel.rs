//! A Sentinel topology of the test's own: a primary, one replica and three sentinels monitoring it
//! as `mymaster` (quorum 2, down after 1 s, failover timeout 3 s), on free ports, so that a test
//! can kill the primary and watch the sentinels promote the replica.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, on_port, require, wait_until, RedisServer};

pub const MASTER_NAME: &str = "mymaster";

pub struct Sentinels {
    /// The data nodes, primary first; a killed one stays in place (not running).
    pub nodes: Vec<RedisServer>,
    sentinels: Vec<(u16, Child)>,
    /// Where the sentinels keep their configurations and logs.
    dir: tempfile::TempDir,
}

impl Sentinels {
    pub fn start() -> Sentinels {
        let primary = RedisServer::start();
        let replica = RedisServer::start_replica_of(&primary);
        let dir = tempfile::tempdir().expect("temp dir");
        let binary = require(
            "redis-server",
            "install Redis 7 (apt-get install redis-server)",
        );
        let sentinels = (0..3)
            .map(|i| spawn_sentinel(&binary, dir.path(), i, primary.port))
            .collect();
        let topology = Sentinels {
            nodes: vec![primary, replica],
            sentinels,
            dir,
        };
        // A failover needs every sentinel to know the replica and the other sentinels, which they
        // learn from the primary's INFO and from each other's hello messages.
        for &(port, _) in &topology.sentinels {
            wait_until(
                Duration::from_secs(60),
                "each sentinel knows the replica and the other sentinels",
                || {
                    let Ok(mut con) = sentinel_connection(port) else {
                        return false;
                    };
                    let count = |con: &mut redis::Connection, what: &str| {
                        redis::cmd("SENTINEL")
                            .arg(what)
                            .arg(MASTER_NAME)
                            .query::<Vec<redis::Value>>(con)
                            .map_or(0, |v| v.len())
                    };
                    count(&mut con, "REPLICAS") == 1 && count(&mut con, "SENTINELS") == 2
                },
            );
        }
        topology
    }

    /// The sentinels' URLs, comma-separated (as `redis.urls` reads them from the environment).
    pub fn urls(&self) -> String {
        self.sentinels
            .iter()
            .map(|(port, _)| format!("redis://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The relay settings for this topology.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("REDIS__MODE", "sentinel".into()),
            ("REDIS__URLS", self.urls()),
            ("REDIS__SENTINEL_MASTER", MASTER_NAME.into()),
        ]
    }

    /// The port of the master the sentinels name now.
    pub fn master_port(&self) -> u16 {
        for &(port, _) in &self.sentinels {
            let Ok(mut con) = sentinel_connection(port) else {
                continue;
            };
            let addr: redis::RedisResult<(String, u16)> = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(MASTER_NAME)
                .query(&mut con);
            if let Ok((_, port)) = addr {
                return port;
            }
        }
        panic!("no sentinel names a master");
    }

    /// The data node the sentinels name as master.
    pub fn master(&self) -> &RedisServer {
        let port = self.master_port();
        self.nodes.iter().find(|n| n.port == port).unwrap()
    }

    /// SIGKILLs the master and waits until the sentinels name the replica instead; returns the
    /// new master's port. A failover takes about 2 s here; a failed attempt (the sentinels split
    /// their votes, or a loaded machine made one of them take the replica for down too) is tried
    /// again after twice the failover timeout, so the wait allows for many. If it still times out,
    /// the sentinels' logs say why.
    pub fn fail_over(&mut self) -> u16 {
        let old = self.master_port();
        on_port(&mut self.nodes, old).kill();
        let deadline = Instant::now() + Duration::from_secs(90);
        while self.master_port() == old {
            if Instant::now() > deadline {
                let logs: Vec<String> = (0..self.sentinels.len())
                    .map(|i| {
                        let log = self.dir.path().join(format!("sentinel-{i}.log"));
                        std::fs::read_to_string(&log).unwrap_or_default()
                    })
                    .collect();
                panic!(
                    "the sentinels did not promote the replica within 90 s; their logs:\n{}",
                    logs.join("\n---\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.master_port()
    }
}

/// Sentinel `i` on a free port, answering: a port is only free until someone binds it, so a
/// sentinel that could not bind it (it exits), or a port answered by another test's process, is
/// tried again on another port.
fn spawn_sentinel(binary: &Path, dir: &Path, i: usize, primary: u16) -> (u16, Child) {
    for _ in 0..5 {
        let port = free_port();
        let conf: PathBuf = dir.join(format!("sentinel-{i}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel-{i}.log\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 3000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir = dir.display(),
            ),
        )
        .unwrap();
        let mut child = Command::new(binary)
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server --sentinel");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            let pid = sentinel_connection(port).ok().and_then(|mut con| {
                redis::cmd("INFO")
                    .arg("server")
                    .query::<redis::InfoDict>(&mut con)
                    .ok()
                    .and_then(|info| info.get::<u32>("process_id"))
            });
            if pid == Some(child.id()) {
                return (port, child);
            }
            if pid.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("sentinel {i} could not start on a free port");
}

fn sentinel_connection(port: u16) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))?
        .get_connection_with_timeout(Duration::from_secs(2))
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for (_, child) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
