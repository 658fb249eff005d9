//! Redis Sentinel: the relay finds the master through the sentinels and follows a failover, with a
//! real topology (primary, replica, three sentinels), a real Socket.IO server whose ioredis client
//! follows the sentinels too, and a real client. The per-entry ledger tells what a failover in the
//! middle of the flow costs: nothing lost; duplicates only for acknowledgements that had not
//! reached the replica, which `redis.wait_replicas` bounds to the batch in flight.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::common::*;

const SECOND: Duration = Duration::from_secs(1);

/// A producer as a careful user writes one for Sentinel: it asks the sentinels for the master
/// again after any error, gives each entry an explicit ID (so that a retried XADD whose first
/// attempt did land is refused instead of added twice) and WAITs for the replica, recording
/// whether the entry was known to be replicated when the producer moved on.
struct Producer {
    produced: Arc<AtomicUsize>,
    /// Entries whose WAIT reached no replica: the ones a failover may take away.
    unreplicated: Arc<Mutex<HashSet<usize>>>,
    done: Arc<AtomicBool>,
}

impl Producer {
    fn start(topology: &Sentinels, total: usize) -> Producer {
        let produced = Arc::new(AtomicUsize::new(0));
        let unreplicated = Arc::new(Mutex::new(HashSet::new()));
        let done = Arc::new(AtomicBool::new(false));
        let sentinels = topology.urls();
        let base = sio_relay::connection::now_ms() as u64;
        let (p, u, d) = (produced.clone(), unreplicated.clone(), done.clone());
        std::thread::spawn(move || {
            let mut con = None;
            let mut replicated = false;
            let mut i = 0;
            while i < total {
                if con.is_none() {
                    con = master_connection(&sentinels);
                    let Some(c) = con.as_mut() else {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    // Once the old primary is gone the new one has no replica: nothing to wait
                    // for (and nothing a failover could promote).
                    let info: redis::InfoDict =
                        redis::cmd("INFO").arg("replication").query(c).unwrap();
                    replicated = info.get::<u32>("connected_slaves") > Some(0);
                }
                let c = con.as_mut().unwrap();
                let added: redis::RedisResult<String> = redis::cmd("XADD")
                    .arg(STREAM)
                    .arg(format!("{}-0", base + i as u64))
                    .arg(numbered(i))
                    .query(c);
                match added {
                    Ok(_) => {}
                    Err(e) if e.to_string().contains("equal or smaller") => {} // it did land
                    Err(_) => {
                        con = None;
                        continue;
                    }
                }
                if !replicated {
                    u.lock().unwrap().insert(i);
                } else {
                    match redis::cmd("WAIT").arg(1).arg(200).query::<u32>(c) {
                        Ok(reached) => {
                            if reached == 0 {
                                u.lock().unwrap().insert(i);
                            }
                        }
                        Err(_) => {
                            u.lock().unwrap().insert(i);
                            con = None;
                        }
                    }
                }
                i += 1;
                p.store(i, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
            d.store(true, Ordering::SeqCst);
        });
        Producer {
            produced,
            unreplicated,
            done,
        }
    }
}

/// A connection to the master that a sentinel of `sentinels` names, if one answers.
fn master_connection(sentinels: &str) -> Option<redis::Connection> {
    for url in sentinels.split(',') {
        let Ok(client) = redis::Client::open(url) else {
            continue;
        };
        let Ok(mut con) = client.get_connection_with_timeout(SECOND) else {
            continue;
        };
        let Ok((host, port)) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER_NAME)
            .query::<(String, u16)>(&mut con)
        else {
            continue;
        };
        let master = redis::Client::open(format!("redis://{host}:{port}")).ok()?;
        let mut con = master.get_connection_with_timeout(SECOND).ok()?;
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut con).ok()?;
        if role.first() == Some(&redis::Value::BulkString(b"master".to_vec())) {
            con.set_read_timeout(Some(2 * SECOND)).ok()?;
            return Some(con);
        }
    }
    None
}

/// The primary is SIGKILLed while entries flow; the sentinels promote the replica; the relay and
/// the Socket.IO server find it through the sentinels. Every entry that is in the new master's
/// stream reaches the client (lost 0); entries missing from it are only ones the producer never
/// saw replicated; and with `wait_replicas = 1`, duplicates stay within the batches in flight.
#[test]
fn a_sentinel_failover_mid_flow_loses_nothing() {
    for wait_replicas in ["0", "1"] {
        let mut topology = Sentinels::start();
        let server = SocketIoServer::start_options(
            &topology.urls(),
            &json!({"client": "ioredis", "sentinel": MASTER_NAME}),
        );
        wait_servers(topology.master(), 1);
        let clients = Clients::connect(&[("c", server.url("/"), &[])]);
        let mut settings = topology.settings();
        settings.push(("REDIS__WAIT_REPLICAS", wait_replicas.into()));
        // Without its replica the new master makes every WAIT time out: keep that short.
        settings.push(("REDIS__WAIT_TIMEOUT", "100ms".into()));
        settings.push(("SOURCE__BATCH_SIZE", "64".into()));
        settings.push(("DELIVERY__RETRY_INTERVAL", "100ms".into()));
        let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let relay = Relay::start(topology.master(), "relay-1", &settings);
        relay.wait_ready(20 * SECOND);

        let total = 3000;
        let producer = Producer::start(&topology, total);
        wait_until(20 * SECOND, "a third is produced", || {
            producer.produced.load(Ordering::SeqCst) >= total / 3
        });
        topology.fail_over();
        wait_until(60 * SECOND, "everything is produced", || {
            producer.done.load(Ordering::SeqCst)
        });
        relay.wait_log("Redis is back; relaying", 30 * SECOND);

        // The new master's stream is what the relay is answerable for.
        let mut con = topology.master().connection();
        let in_stream: HashSet<usize> = stream_seqs(&mut con).into_iter().collect();
        let settled = |con: &mut redis::Connection| {
            let got: HashSet<u64> = delivered(&clients).into_iter().collect();
            pending(con).is_empty()
                && in_stream
                    .iter()
                    .all(|&i| got.contains(&(i as u64)) || dead_seqs(con).contains(&i))
        };
        wait_until(
            60 * SECOND,
            "every entry of the stream is delivered",
            || settled(&mut con),
        );
        let mut ledger = Ledger {
            produced: total,
            delivered: vec![0; total],
            dead: vec![0; total],
            excused: vec![false; total],
        };
        for n in delivered(&clients) {
            ledger.delivered[n as usize] += 1;
        }
        for i in dead_seqs(&mut con) {
            ledger.dead[i] += 1;
        }
        // Producer-side losses of asynchronous replication: entries the producer never saw reach
        // the replica, gone with the old primary before anyone read them. Not the relay's to lose.
        let unreplicated = producer.unreplicated.lock().unwrap().clone();
        for i in 0..total {
            if ledger.reached(i) == 0 && !in_stream.contains(&i) {
                assert!(
                    unreplicated.contains(&i),
                    "entry {i} vanished although WAIT saw it replicated"
                );
                ledger.excused[i] = true;
            }
        }
        println!(
            "{} (wait_replicas = {wait_replicas})",
            ledger.summary("sentinel failover")
        );
        assert_eq!(ledger.lost(), 0, "{}", ledger.summary("sentinel failover"));
        if wait_replicas == "1" {
            assert!(
                ledger.duplicated() <= 2 * 64,
                "with wait_replicas, only the batches in flight may be delivered again: {}",
                ledger.summary("sentinel failover")
            );
        }
        if wait_replicas == "1" {
            // The new master has no replica until the old one returns: every WAIT falls short.
            let metrics = http_get(relay.http_port(), "/metrics").1;
            assert!(
                !metrics.contains("sio_relay_replicas_short_total 0\n"),
                "{metrics}"
            );
            relay.wait_log("fewer replicas than redis.wait_replicas", SECOND);
        }
    }
}

/// Each `n` the client received, in order.
fn delivered(clients: &Clients) -> Vec<u64> {
    clients
        .events_of("c")
        .iter()
        .filter(|(event, _)| event == "n")
        .map(|(_, args)| args[0].as_u64().unwrap())
        .collect()
}

fn stream_seqs(con: &mut redis::Connection) -> Vec<usize> {
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(STREAM)
        .arg("-")
        .arg("+")
        .query(con)
        .unwrap();
    entries
        .ids
        .iter()
        .filter_map(|e| e.get::<String>("x-seq")?.parse().ok())
        .collect()
}

fn dead_seqs(con: &mut redis::Connection) -> Vec<usize> {
    dead_letters(con)
        .iter()
        .filter_map(|(_, fields)| field(fields, "x-seq")?.parse().ok())
        .collect()
}

/// `status` and `send` reach the master through the sentinels as the daemon does, and say where
/// they looked.
#[test]
fn operator_commands_find_the_master_through_the_sentinels() {
    let topology = Sentinels::start();
    let run = |args: &[&str]| {
        let mut cmd = sio_relay();
        cmd.args(args).env("SIO_RELAY_SOURCE__CONSUMER", "cli");
        for (key, value) in topology.settings() {
            cmd.env(format!("SIO_RELAY_{key}"), value);
        }
        cmd.output().unwrap()
    };
    let sent = run(&["send", "hello", "1"]);
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let mut con = topology.master().connection();
    let len: usize = redis::cmd("XLEN").arg(STREAM).query(&mut con).unwrap();
    assert_eq!(len, 1, "the entry is on the master");
    let status = run(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["redis"]["reachable"], true, "{json}");
    assert!(
        json["redis"]["url"].as_str().unwrap().starts_with(&format!(
            "master \"{MASTER_NAME}\" of the sentinels redis://127.0.0.1:"
        )),
        "{json}"
    );
}
