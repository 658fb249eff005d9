//! Redis Sentinel: the relay finds the master through the sentinels and follows a failover, with a
//! real topology (primary, replica, three sentinels), a real Socket.IO server whose ioredis client
//! follows the sentinels too, and a real client. The per-entry ledger tells what a failover in the
//! middle of the flow costs: nothing lost; duplicates only for acknowledgements that had not
//! reached the replica, which `redis.wait_replicas` bounds to the batch in flight.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

const SECOND: Duration = Duration::from_secs(1);

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
        let sentinels = topology.urls();
        let producer =
            FailoverProducer::start(STREAM, total, move || master_connection(&sentinels));
        producer.wait_produced(total / 3, 20 * SECOND);
        topology.fail_over();
        producer.wait_done(60 * SECOND);

        // The new master's stream is what the relay is answerable for.
        let mut con = topology.master().connection();
        let ledger = producer.settle(&clients, &mut con, STREAM, DEAD, total);
        // Everything settled on the new master: the relay is back and says so.
        relay.assert_logged("Redis is back; relaying");
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
                reading(&metrics, "replicas_short_total").is_some_and(|n| n > 0.0),
                "{metrics}"
            );
            relay.assert_logged("fewer replicas than redis.wait_replicas");
        }
    }
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
