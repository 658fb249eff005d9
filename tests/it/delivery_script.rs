//! The delivery scripts' guarantees, driven directly against a real Redis: servers counted the way
//! the adapter counts them before anything is published, no publish for entries another relay
//! owns, no second publish for journaled entries while Redis is the same process, a new publish once
//! it is not, dead-lettering together with the acknowledgement, nothing at all done by a batch Redis
//! refuses, and no confirmation for entries whose servers vanished.

use std::time::Duration;

use crate::common::*;
use redis::Commands;
use sio_relay::config::Config;
use sio_relay::delivery::{
    After, Claim, ConfirmRequest, Confirmation, Deliverable, Keys, Op, Outcome, Scripts,
};
use sio_relay::entry::Entry;
use sio_relay::protocol::{Lua, ReasonCode};

const SECOND: Duration = Duration::from_secs(1);

fn config(consumer: &str) -> Config {
    let mut cfg = Config::default();
    cfg.source.consumer = consumer.into();
    cfg
}

fn claim(id: &str, deliveries: u64) -> Claim {
    Claim {
        deliveries,
        redelivery: deliveries > 1,
        ..Claim::first_read(id.parse().unwrap())
    }
}

fn deliverable(id: &str) -> Deliverable {
    let fields = vec![(b"event".to_vec(), b"e".to_vec())];
    let entry = Entry::parse(&fields).unwrap();
    Deliverable {
        claim: claim(id, 1),
        nsp: "/".into(),
        rooms: 0,
        packet: Config::default().target().encode(&entry).unwrap(),
        counted: None,
    }
}

/// A call journaled under `journal`, with no confirmation request.
fn after(journal: &str) -> After<'_> {
    After {
        journal,
        confirms: &[],
    }
}

fn publish(entry: &Deliverable) -> Op<'_> {
    Op::Publish {
        entry,
        behind: false,
        external: false,
    }
}

fn outcomes(report: sio_relay::delivery::Report) -> Vec<Outcome> {
    report.outcomes
}

fn keys() -> Keys {
    Keys::new(&config("x"))
}

/// One entry read by relay-a and not yet acknowledged, with what it takes to deliver it.
struct Setup {
    con: redis::Connection,
    entry: Deliverable,
    scripts: Scripts,
    writer: redis::aio::MultiplexedConnection,
}

async fn one_entry_read_by_relay_a(redis: &RedisServer) -> Setup {
    let mut con = redis.connection();
    let id = xadd(&mut con, &[("event", "e")]);
    read_as(&mut con, "relay-a", 1);
    Setup {
        con,
        entry: deliverable(&id),
        scripts: Scripts::new(&config("relay-a")),
        writer: writer(redis).await,
    }
}

/// As [`one_entry_read_by_relay_a`], then published (in Redis process "p") and not yet confirmed.
async fn one_entry_published_by_relay_a(redis: &RedisServer) -> Setup {
    let mut setup = one_entry_read_by_relay_a(redis).await;
    let report = setup
        .scripts
        .deliver(
            &mut setup.writer,
            "p",
            &[publish(&setup.entry)],
            0,
            &[],
            &after("relay-a:t:1"),
        )
        .await
        .unwrap();
    assert_eq!(report.outcomes, [Outcome::Published { receivers: 1 }]);
    assert_eq!(report.servers, [("/".to_owned(), 1)]);
    setup
}

async fn writer(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn an_entry_reclaimed_by_another_relay_is_not_published_again() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let mut con = redis.connection();
    let id = xadd(&mut con, &[("event", "e")]);
    read_as(&mut con, "relay-a", 1);
    // relay-a stalls; relay-b reclaims the entry.
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(STREAM)
        .arg(GROUP)
        .arg("relay-b")
        .arg(0)
        .arg(&id)
        .query(&mut con)
        .unwrap();
    let entry = deliverable(&id);
    let report = Scripts::new(&config("relay-a"))
        .deliver(
            &mut writer(&redis).await,
            "run",
            &[publish(&entry)],
            0,
            &[],
            &after("relay-a:t:1"),
        )
        .await
        .unwrap();
    assert_eq!(report.outcomes, [Outcome::NotOwned]);
    assert_eq!(sub.flush(&redis), 0, "nothing was published");
    assert_eq!(pending(&mut con), [(id, "relay-b".to_owned(), 2)]);
}

#[tokio::test(flavor = "current_thread")]
async fn journaled_entries_are_published_once_per_redis_process() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let Setup {
        mut con,
        entry,
        scripts,
        mut writer,
    } = one_entry_read_by_relay_a(&redis).await;
    let id = entry.id().to_string();

    // Published, journaled, not yet confirmed: the relay dies here.
    let report = scripts
        .deliver(
            &mut writer,
            "process-1",
            &[publish(&entry)],
            0,
            &[],
            &after("relay-a:t:1"),
        )
        .await
        .unwrap();
    assert_eq!(report.outcomes, [Outcome::Published { receivers: 1 }]);
    let journal: Option<String> = con.hget(keys().journal, "relay-a:t:1").unwrap();
    assert_eq!(journal, Some(format!("process-1 {id}")));
    assert_eq!(
        pending(&mut con).len(),
        1,
        "not acknowledged before the confirmation"
    );

    // Redis restarted (another run_id): the packets may never have left it, so publish again.
    let mut entry = entry;
    entry.claim = claim(&id, 2);
    let report = scripts
        .deliver(
            &mut writer,
            "process-2",
            &[publish(&entry)],
            0,
            &[],
            &after("relay-a:t:2"),
        )
        .await
        .unwrap();
    assert_eq!(report.outcomes, [Outcome::Published { receivers: 1 }]);
    assert_eq!(sub.wait_count(2, 5 * SECOND).len(), 2);
    let journal: Option<String> = con.hget(keys().journal, "relay-a:t:2").unwrap();
    assert_eq!(journal, Some(format!("process-2 {id}")), "a field per call");

    // Same process: acknowledged without a second publish.
    let report = scripts
        .deliver(
            &mut writer,
            "process-2",
            &[publish(&entry)],
            0,
            &[],
            &after("relay-a:t:3"),
        )
        .await
        .unwrap();
    assert_eq!(report.outcomes, [Outcome::AlreadyPublished]);
    assert_eq!(sub.flush(&redis), 2);
    assert!(
        pending(&mut con).is_empty(),
        "acknowledged without a confirmation"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn confirm_acknowledges_and_clears_the_journal() {
    let redis = RedisServer::start();
    let _sub = Subscriber::start(&redis, "/");
    let Setup {
        mut con,
        entry,
        scripts,
        mut writer,
    } = one_entry_published_by_relay_a(&redis).await;
    let confirmation = Confirmation {
        delivered: vec![entry.id()],
        drop: vec!["relay-a:t:1".into()],
        ..Default::default()
    };
    scripts
        .confirm(&mut writer, &confirmation, &[])
        .await
        .unwrap();
    assert!(pending(&mut con).is_empty());
    let journaled: bool = con.hexists(keys().journal, "relay-a:t:1").unwrap();
    assert!(
        !journaled,
        "the confirmation drops the call's journal field"
    );
}

/// Entries the relay will publish again (a server left without saying it had them, see
/// `confirming.rs`) stay pending and leave the journal at once, so that they are not taken for
/// published, while the rest of their call's field stays until it is decided.
#[tokio::test(flavor = "current_thread")]
async fn entries_to_publish_again_stay_pending_out_of_the_journal() {
    let redis = RedisServer::start();
    let _sub = Subscriber::start(&redis, "/");
    let mut con = redis.connection();
    let first = xadd(&mut con, &[("event", "e")]);
    let second = xadd(&mut con, &[("event", "e")]);
    read_as(&mut con, "relay-a", 2);
    let (a, b) = (deliverable(&first), deliverable(&second));
    let scripts = Scripts::new(&config("relay-a"));
    let mut writer = writer(&redis).await;
    let report = scripts
        .deliver(
            &mut writer,
            "p",
            &[publish(&a), publish(&b)],
            0,
            &[],
            &after("relay-a:t:1"),
        )
        .await
        .unwrap();
    assert_eq!(report.outcomes.len(), 2);
    let again = Confirmation {
        again: vec![a.id()],
        rewrite: vec!["relay-a:t:1".into()],
        ..Default::default()
    };
    scripts.confirm(&mut writer, &again, &[]).await.unwrap();
    assert_eq!(pending(&mut con).len(), 2, "still pending");
    let journal: Option<String> = con.hget(keys().journal, "relay-a:t:1").unwrap();
    assert_eq!(
        journal,
        Some(format!("p {second}")),
        "only the other one is left"
    );
    let rest = Confirmation {
        delivered: vec![b.id()],
        drop: vec!["relay-a:t:1".into()],
        ..Default::default()
    };
    let counts = scripts
        .confirm(&mut writer, &rest, &["/".into(), "/none".into()])
        .await
        .unwrap();
    assert_eq!(
        counts,
        [1, 0],
        "the servers of each namespace asked, counted by the way"
    );
    assert_eq!(pending(&mut con).len(), 1, "the one to publish again");
    let journaled: bool = con.hexists(keys().journal, "relay-a:t:1").unwrap();
    assert!(!journaled);
}

/// A relay's journal fields of its earlier sessions go once it has taken its pending entries back;
/// its current session's fields and other relays' stay.
#[tokio::test(flavor = "current_thread")]
async fn a_relay_prunes_only_its_own_earlier_sessions_journal_fields() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    for field in [
        "relay-a:old:1",
        "relay-a:cur:1",
        "relay-b:x:1",
        "relay-a",
        "relay-ab:y:1",
    ] {
        let _: () = con.hset(keys().journal, field, "p 1-0").unwrap();
    }
    let dropped = Scripts::new(&config("relay-a"))
        .prune(&mut writer(&redis).await, "relay-a:cur:")
        .await
        .unwrap();
    assert_eq!(dropped, 2);
    let mut left: Vec<String> = con.hkeys(keys().journal).unwrap();
    left.sort();
    assert_eq!(left, ["relay-a:cur:1", "relay-ab:y:1", "relay-b:x:1"]);
}

#[tokio::test(flavor = "current_thread")]
async fn too_few_servers_hold_the_rest_of_the_namespace_and_record_it() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    let ids: Vec<String> = (0..3).map(|_| xadd(&mut con, &[("event", "e")])).collect();
    read_as(&mut con, "relay-a", 3);
    let entries: Vec<Deliverable> = ids.iter().map(|id| deliverable(id)).collect();
    let ops: Vec<Op> = entries.iter().map(publish).collect();
    let report = Scripts::new(&config("relay-a"))
        .deliver(
            &mut writer(&redis).await,
            "p",
            &ops,
            0,
            &[],
            &after("relay-a:t:1"),
        )
        .await
        .unwrap();
    assert_eq!(
        report.outcomes,
        [
            Outcome::TooFewServers { servers: 0 },
            Outcome::HeldBehind,
            Outcome::HeldBehind
        ]
    );
    assert_eq!(pending(&mut con).len(), 3);
    let recorded: std::collections::HashMap<String, u64> = con.hgetall(keys().held).unwrap();
    assert_eq!(recorded.len(), 3, "each held entry's count is recorded");
    assert!(recorded.values().all(|&n| n == 1));
}

/// Anything pattern-subscribed (`sio-relay monitor`, `redis-cli PSUBSCRIBE '*'`) is counted by
/// PUBLISH but is no Socket.IO server: nothing is published to it, and nothing is acknowledged.
#[tokio::test(flavor = "current_thread")]
async fn a_pattern_subscriber_is_not_a_server() {
    let redis = RedisServer::start();
    let monitor = Subscriber::pattern_only(&redis, "*");
    let Setup {
        mut con,
        entry,
        scripts,
        mut writer,
    } = one_entry_read_by_relay_a(&redis).await;
    let report = scripts
        .deliver(
            &mut writer,
            "p",
            &[publish(&entry)],
            0,
            &[],
            &after("relay-a:t:1"),
        )
        .await
        .unwrap();
    assert_eq!(report.outcomes, [Outcome::TooFewServers { servers: 0 }]);
    assert_eq!(pending(&mut con).len(), 1);
    assert_eq!(monitor.flush(&redis), 0, "the entry was not published");
}

/// With `min_receivers = 2` and one server, the entry is not published at all (it would reach that
/// server again at every retry).
#[tokio::test(flavor = "current_thread")]
async fn below_min_receivers_nothing_is_published() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let mut con = redis.connection();
    let id = xadd(&mut con, &[("event", "e")]);
    read_as(&mut con, "relay-a", 1);
    let mut cfg = config("relay-a");
    cfg.delivery.min_receivers = 2;
    let entry = deliverable(&id);
    let report = Scripts::new(&cfg)
        .deliver(
            &mut writer(&redis).await,
            "p",
            &[publish(&entry)],
            0,
            &[],
            &after("relay-a:t:1"),
        )
        .await
        .unwrap();
    assert_eq!(report.outcomes, [Outcome::TooFewServers { servers: 1 }]);
    assert_eq!(sub.flush(&redis), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn dead_letters_are_copied_inside_redis_and_acknowledged_together() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    let id = xadd(
        &mut con,
        &[
            ("event", "connect"),
            ("x-dead-reason", "old"),
            ("x-trace", "t"),
        ],
    );
    read_as(&mut con, "relay-a", 1);
    let mut cfg = config("relay-a");
    cfg.dead_letter.max_len = 1000;
    let report = Scripts::new(&cfg)
        .deliver(
            &mut writer(&redis).await,
            "p",
            &[Op::DeadLetter {
                claim: claim(&id, 1),
                reason: ReasonCode::Malformed,
                detail: "event `connect` is reserved".into(),
            }],
            0,
            &[],
            &after("relay-a:t:1"),
        )
        .await
        .unwrap();
    assert_eq!(report.outcomes, [Outcome::Acknowledged]);
    assert!(pending(&mut con).is_empty());
    let dead = dead_letters(&mut con);
    assert_eq!(dead.len(), 1);
    let names: Vec<&str> = dead[0].1.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        names,
        [
            "event",
            "x-trace",
            "x-dead-reason",
            "x-dead-error",
            "x-dead-stream",
            "x-dead-id",
            "x-dead-deliveries"
        ],
        "the original fields, an earlier death's x-dead-* fields replaced"
    );
    assert_eq!(field(&dead[0].1, "x-dead-id"), Some(id.as_str()));
}

/// An entry with more fields than one Redis call can carry from Lua (about 4,000) is dead-lettered
/// in one piece, its fields packed, instead of failing the script for ever.
#[tokio::test(flavor = "current_thread")]
async fn an_entry_with_thousands_of_fields_is_dead_lettered_packed() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    let names: Vec<String> = (0..5000).map(|i| format!("x-f{i}")).collect();
    let mut fields: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    fields.push(("evnt", "typo"));
    let id = xadd(&mut con, &fields);
    read_as(&mut con, "relay-a", 1);
    let report = Scripts::new(&config("relay-a"))
        .deliver(
            &mut writer(&redis).await,
            "p",
            &[Op::DeadLetter {
                claim: claim(&id, 1),
                reason: ReasonCode::Malformed,
                detail: "unknown field `evnt`".into(),
            }],
            0,
            &[],
            &after("relay-a:t:1"),
        )
        .await
        .unwrap();
    assert_eq!(report.outcomes, [Outcome::Acknowledged]);
    let stored = stored_dead_letters(&mut con);
    assert_eq!(stored.len(), 1);
    assert!(
        stored[0].1.iter().any(|(f, _)| f == b"x-dead-fields"),
        "the fields are packed"
    );
    let dead = dead_letters(&mut con);
    assert_eq!(field(&dead[0].1, "x-f4999"), Some("v"), "and unpack whole");
    assert_eq!(field(&dead[0].1, "evnt"), Some("typo"));
    assert!(pending(&mut con).is_empty());
}

/// A batch Redis refuses has no effect at all: nothing published, nothing acknowledged, nothing
/// dead-lettered. Here the dead-letter key holds a string.
#[tokio::test(flavor = "current_thread")]
async fn a_refused_batch_publishes_nothing() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let mut con = redis.connection();
    let valid = xadd(&mut con, &[("event", "e")]);
    let bad = xadd(&mut con, &[("event", "connect")]);
    read_as(&mut con, "relay-a", 2);
    let _: () = con.set(DEAD, "not a stream").unwrap();
    let entry = deliverable(&valid);
    let ops = [
        publish(&entry),
        Op::DeadLetter {
            claim: claim(&bad, 1),
            reason: ReasonCode::Malformed,
            detail: "reserved".into(),
        },
    ];
    let scripts = Scripts::new(&config("relay-a"));
    let err = scripts
        .deliver(
            &mut writer(&redis).await,
            "p",
            &ops,
            0,
            &[],
            &after("relay-a:t:1"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("SIORELAY"), "{err}");
    assert!(err.to_string().contains("dead-letter stream"), "{err}");
    assert_eq!(sub.flush(&redis), 0, "nothing published");
    assert_eq!(pending(&mut con).len(), 2, "nothing acknowledged");
    let journaled: bool = con.hexists(keys().journal, "relay-a:t:1").unwrap();
    assert!(!journaled);
}

/// Out of memory (`maxmemory` with `noeviction`), Redis refuses the script before it runs.
#[tokio::test(flavor = "current_thread")]
async fn out_of_memory_the_script_does_not_run_at_all() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let Setup {
        mut con,
        entry,
        scripts,
        mut writer,
    } = one_entry_read_by_relay_a(&redis).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(1)
        .query(&mut con)
        .unwrap();
    let err = scripts
        .deliver(
            &mut writer,
            "p",
            &[publish(&entry)],
            0,
            &[],
            &after("relay-a:t:1"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("OOM"), "{err}");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query(&mut con)
        .unwrap();
    assert_eq!(sub.flush(&redis), 0);
    assert_eq!(pending(&mut con).len(), 1);
}

/// A command the ACL user may no longer run is found before the first PUBLISH.
#[tokio::test(flavor = "current_thread")]
async fn a_revoked_command_refuses_the_batch_before_publishing() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let mut con = redis.connection();
    let id = xadd(&mut con, &[("event", "e")]);
    read_as(&mut con, "relay-a", 1);
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("relay")
        .arg("on")
        .arg(">pw")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-xack")
        .query(&mut con)
        .unwrap();
    let mut relay_con = redis::Client::open(format!("redis://relay:pw@127.0.0.1:{}", redis.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let entry = deliverable(&id);
    let err = Scripts::new(&config("relay-a"))
        .deliver(
            &mut relay_con,
            "p",
            &[publish(&entry)],
            0,
            &[],
            &after("relay-a:t:1"),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("XACK"), "{err}");
    assert_eq!(sub.flush(&redis), 0);
    assert_eq!(pending(&mut con).len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_published_entry_is_not_dead_lettered_while_awaiting_confirmation() {
    let redis = RedisServer::start();
    let _sub = Subscriber::start(&redis, "/");
    let Setup {
        mut con,
        entry,
        scripts,
        mut writer,
    } = one_entry_published_by_relay_a(&redis).await;
    // The relay died before confirming; on its return the entry has expired.
    let dead_letter = Op::DeadLetter {
        claim: claim(&entry.id().to_string(), 2),
        reason: ReasonCode::Expired,
        detail: "too old".into(),
    };
    let report = scripts
        .deliver(
            &mut writer,
            "p",
            &[dead_letter],
            0,
            &[],
            &after("relay-a:t:1"),
        )
        .await
        .unwrap();
    assert_eq!(outcomes(report), [Outcome::AlreadyPublished]);
    assert!(dead_letters(&mut con).is_empty());
    assert!(pending(&mut con).is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn the_one_entry_redis_refuses_is_dead_lettered_packed_on_its_own() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    let id = xadd(&mut con, &[("event", "e"), ("x-bin", "\u{1}")]);
    read_as(&mut con, "relay-a", 1);
    let scripts = Scripts::new(&config("relay-a"));
    let mut writer = writer(&redis).await;
    let moved = scripts
        .isolate(&mut writer, claim(&id, 1), "ERR something in this entry")
        .await
        .unwrap();
    assert!(moved);
    assert!(pending(&mut con).is_empty());
    let dead = dead_letters(&mut con);
    assert_eq!(field(&dead[0].1, "x-dead-reason"), Some("refused"));
    let packed: Vec<Vec<u8>> = {
        let raw = stored_dead_letters(&mut con);
        let value = raw[0]
            .1
            .iter()
            .find(|(f, _)| f == b"x-dead-fields")
            .unwrap()
            .1
            .clone();
        let rmpv::Value::Array(items) = rmpv::decode::read_value(&mut value.as_slice()).unwrap()
        else {
            panic!("not an array")
        };
        items
            .into_iter()
            .map(|i| match i {
                rmpv::Value::String(s) => s.into_bytes(),
                rmpv::Value::Binary(b) => b,
                other => panic!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(
        packed,
        [
            b"event".to_vec(),
            b"e".to_vec(),
            b"x-bin".to_vec(),
            b"\x01".to_vec()
        ]
    );
}

/// An attempt of an entry that waits for its clients' acknowledgements is sent only while the entry
/// is still this consumer's: a relay that was frozen while another reclaimed it (and finished it)
/// never sends it again. It is neither journaled nor acknowledged.
#[tokio::test(flavor = "current_thread")]
async fn an_attempt_goes_out_only_while_the_entry_is_this_consumers() {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let Setup {
        mut con,
        entry,
        scripts,
        mut writer,
    } = one_entry_read_by_relay_a(&redis).await;
    let attempt = Op::Attempt {
        request: &entry,
        external: false,
    };
    let report = scripts
        .deliver(&mut writer, "p", &[attempt], 0, &[], &after("relay-a:t:1"))
        .await
        .unwrap();
    assert_eq!(report.outcomes, [Outcome::AttemptSent { servers: 1 }]);
    assert_eq!(sub.flush(&redis), 1, "sent once");
    let journal: Option<String> = con.hget(keys().journal, "relay-a").unwrap();
    assert_eq!(journal, None, "an attempt is not journaled");
    assert_eq!(pending(&mut con).len(), 1, "nor acknowledged");

    // relay-a freezes; relay-b reclaims the entry.
    let id = entry.id().to_string();
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(STREAM)
        .arg(GROUP)
        .arg("relay-b")
        .arg(0)
        .arg(&id)
        .query(&mut con)
        .unwrap();
    let again = Op::Attempt {
        request: &entry,
        external: false,
    };
    let report = scripts
        .deliver(&mut writer, "p", &[again], 0, &[], &after("relay-a:t:1"))
        .await
        .unwrap();
    assert_eq!(report.outcomes, [Outcome::NotOwned]);
    assert_eq!(sub.flush(&redis), 1, "not sent again");
}

/// The entries a batch published to a namespace are followed, in the same script, by that
/// namespace's confirmation request, which its servers answer once they have read what came before
/// it; a namespace that published nothing (held here) gets none.
#[tokio::test(flavor = "current_thread")]
async fn published_entries_are_followed_by_their_confirmation_request() {
    let redis = RedisServer::start();
    let _server = Subscriber::start(&redis, "/");
    let watch = Subscriber::pattern_only(&redis, "socket.io*");
    let mut con = redis.connection();
    let id = xadd(&mut con, &[("event", "e")]);
    let admin_id = xadd(&mut con, &[("event", "e"), ("nsp", "/admin")]);
    read_as(&mut con, "relay-a", 2);
    let entry = deliverable(&id);
    let admin_fields = vec![
        (b"event".to_vec(), b"e".to_vec()),
        (b"nsp".to_vec(), b"/admin".to_vec()),
    ];
    let admin = Deliverable {
        claim: claim(&admin_id, 1),
        nsp: "/admin".into(),
        rooms: 0,
        packet: Config::default()
            .target()
            .encode(&Entry::parse(&admin_fields).unwrap())
            .unwrap(),
        counted: None,
    };
    let target = Config::default().target();
    let confirms: Vec<ConfirmRequest> = ["/", "/admin"]
        .iter()
        .map(|nsp| ConfirmRequest {
            nsp: nsp.to_string(),
            request_id: format!("c{nsp}"),
            packet: target
                .confirm_request(nsp, &format!("c{nsp}"))
                .expect("classic servers answer"),
        })
        .collect();
    let report = Scripts::new(&config("relay-a"))
        .deliver(
            &mut writer(&redis).await,
            "p",
            &[publish(&entry), publish(&admin)],
            0,
            &[],
            &After {
                journal: "relay-a:t:1",
                confirms: &confirms,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        report.outcomes,
        [
            // The server and the watching pattern.
            Outcome::Published { receivers: 2 },
            Outcome::TooFewServers { servers: 0 }
        ]
    );
    assert_eq!(report.confirming, ["/"]);
    wait_until(5 * SECOND, "the server answers", || {
        watch.messages().len() >= 3
    });
    let seen: Vec<String> = watch.messages().iter().map(|m| m.channel.clone()).collect();
    assert_eq!(
        seen,
        [
            "socket.io#/#",
            "socket.io-request#/#",
            "socket.io-response#/#"
        ],
        "the entry, then its confirmation request, on the channels the server reads in order, then its answer"
    );
    let request: serde_json::Value = serde_json::from_slice(&watch.messages()[1].payload).unwrap();
    assert_eq!(request["requestId"], "c/");
    assert_eq!(
        request["opts"]["rooms"],
        serde_json::json!(["sio-relay:confirm"])
    );
}

/// Every script compiles in Redis as the relay loads it: its shebang, the constants of
/// `src/protocol.rs`, the functions it shares, then its own text.
#[test]
fn every_script_compiles_with_the_protocols_constants() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    for lua in Lua::ALL {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(lua.text())
            .query(&mut con)
            .unwrap_or_else(|e| panic!("{lua:?}: {e}"));
        assert_eq!(sha, lua.script().get_hash(), "{lua:?}");
    }
}
