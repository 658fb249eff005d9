//! The delivery script's guarantees, driven directly against a real Redis: no publish for entries
//! another relay owns, no second publish for journaled entries while Redis is the same process, a
//! new publish once it is not, and dead-lettering together with the acknowledgement.

use std::time::Duration;

use crate::common::*;
use redis::Commands;
use sio_relay::config::Config;
use sio_relay::delivery::{journal_key, Deliverable, Op, Outcome, Scripts};
use sio_relay::entry::{Entry, RawEntry};

fn config(consumer: &str) -> Config {
    let mut cfg = Config::default();
    cfg.source.consumer = consumer.into();
    cfg
}

fn deliverable(id: &str) -> Deliverable {
    let fields = vec![(b"event".to_vec(), b"e".to_vec())];
    let entry = Entry::parse(&fields).unwrap();
    Deliverable {
        raw: RawEntry {
            id: id.parse().unwrap(),
            fields,
        },
        deliveries: 1,
        nsp: "/".into(),
        packet: Config::default().target().encode(&entry),
    }
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
    let outcomes = setup
        .scripts
        .deliver(&mut setup.writer, "p", &[Op::Publish(&setup.entry)], 0)
        .await
        .unwrap();
    assert_eq!(outcomes, [Outcome::Published { receivers: 1 }]);
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
    let outcomes = Scripts::new(&config("relay-a"))
        .deliver(&mut writer(&redis).await, "run", &[Op::Publish(&entry)], 0)
        .await
        .unwrap();
    assert_eq!(outcomes, [Outcome::NotOwned]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(sub.messages().is_empty());
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
    let outcomes = scripts
        .deliver(&mut writer, "process-1", &[Op::Publish(&entry)], 0)
        .await
        .unwrap();
    assert_eq!(outcomes, [Outcome::Published { receivers: 1 }]);
    let journal: Option<String> = con.hget(journal_key(&config("x")), "relay-a").unwrap();
    assert_eq!(journal, Some(format!("process-1 {id}")));
    assert_eq!(
        pending(&mut con).len(),
        1,
        "not acknowledged before the confirmation"
    );

    // Redis restarted (another run_id): the packets may never have left it, so publish again.
    let mut entry = entry;
    entry.deliveries = 2;
    let outcomes = scripts
        .deliver(&mut writer, "process-2", &[Op::Publish(&entry)], 0)
        .await
        .unwrap();
    assert_eq!(outcomes, [Outcome::Published { receivers: 1 }]);
    assert_eq!(sub.wait_count(2, Duration::from_secs(5)).len(), 2);
    let journal: Option<String> = con.hget(journal_key(&config("x")), "relay-a").unwrap();
    assert_eq!(
        journal,
        Some(format!("process-2 {id}")),
        "the old process's record is replaced"
    );

    // Same process: acknowledged without a second publish.
    let outcomes = scripts
        .deliver(&mut writer, "process-2", &[Op::Publish(&entry)], 0)
        .await
        .unwrap();
    assert_eq!(outcomes, [Outcome::AlreadyPublished]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(sub.messages().len(), 2);
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
    scripts.confirm(&mut writer, &[entry.id()]).await.unwrap();
    assert!(pending(&mut con).is_empty());
    let journaled: bool = con.hexists(journal_key(&config("x")), "relay-a").unwrap();
    assert!(
        !journaled,
        "the confirmation clears the consumer's journal field"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn too_few_receivers_hold_the_rest_of_the_namespace() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    let ids: Vec<String> = (0..3).map(|_| xadd(&mut con, &[("event", "e")])).collect();
    read_as(&mut con, "relay-a", 3);
    let entries: Vec<Deliverable> = ids.iter().map(|id| deliverable(id)).collect();
    let ops: Vec<Op> = entries.iter().map(Op::Publish).collect();
    let outcomes = Scripts::new(&config("relay-a"))
        .deliver(&mut writer(&redis).await, "p", &ops, 0)
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [
            Outcome::TooFewReceivers { receivers: 0 },
            Outcome::HeldBehind,
            Outcome::HeldBehind
        ]
    );
    assert_eq!(pending(&mut con).len(), 3);
}

#[tokio::test(flavor = "current_thread")]
async fn dead_lettering_appends_and_acknowledges_together() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    let id = xadd(&mut con, &[("event", "connect")]);
    read_as(&mut con, "relay-a", 1);
    let mut cfg = config("relay-a");
    cfg.dead_letter.max_len = 1000;
    let outcomes = Scripts::new(&cfg)
        .deliver(
            &mut writer(&redis).await,
            "p",
            &[Op::DeadLetter {
                id: id.parse().unwrap(),
                fields: vec![(b"event".to_vec(), b"connect".to_vec())],
            }],
            0,
        )
        .await
        .unwrap();
    assert_eq!(outcomes, [Outcome::DeadLettered]);
    assert!(pending(&mut con).is_empty());
    assert_eq!(dead_letters(&mut con).len(), 1);
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
        id: entry.id(),
        fields: entry.raw.fields.clone(),
    };
    let outcomes = scripts
        .deliver(&mut writer, "p", &[dead_letter], 0)
        .await
        .unwrap();
    assert_eq!(outcomes, [Outcome::AlreadyPublished]);
    assert!(dead_letters(&mut con).is_empty());
    assert!(pending(&mut con).is_empty());
}
