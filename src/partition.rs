//! Partitioned streams: one logical stream spread over several (`source.streams`), so that a
//! cluster's shards share the work, each stream in a slot of its own.
//!
//! Producers must pick the partition the same way, or entries that must stay in order (those for
//! one user) would race each other on different streams. The rule uses what every Redis client
//! library already has, the Cluster key hash: the entry goes to
//! `streams[KEYSLOT(routing key) % streams.len()]`, where the routing key is its first room (or, for
//! a broadcast to the whole namespace, the namespace). Order holds per routing key.

use std::borrow::Cow;

use crate::entry::{Entry, Room};

/// Redis Cluster's hash slots.
const SLOTS: u16 = 16384;

/// The part of `key` Redis Cluster hashes when there is one: between the first `{` and the next
/// `}`, if not empty (the cluster specification's hash tags).
pub fn hash_tag(key: &str) -> Option<&str> {
    let (_, after) = key.split_once('{')?;
    let (tag, _) = after.split_once('}')?;
    (!tag.is_empty()).then_some(tag)
}

/// `CLUSTER KEYSLOT key`: CRC16 (XMODEM) of its hash tag, or of the whole key, modulo 16384.
pub fn key_slot(key: &str) -> u16 {
    let hashed = hash_tag(key).unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(hashed.as_bytes()) % SLOTS
}

/// What orders an entry among the others: its first room (a number as written), else its
/// namespace.
pub fn routing_key(entry: &Entry) -> Cow<'_, str> {
    entry.rooms().first().map_or(entry.nsp().into(), Room::text)
}

/// The index, among `partitions`, of the stream `entry` goes to.
pub fn of(entry: &Entry, partitions: usize) -> usize {
    usize::from(key_slot(&routing_key(entry))) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slots the Redis documentation and docs/08-internals/loop.md ("Redis Cluster") give for
    /// `CLUSTER KEYSLOT`.
    #[test]
    fn key_slots_are_redis_clusters() {
        assert_eq!(key_slot("somekey"), 11058);
        assert_eq!(key_slot("foo{hash_tag}"), 2515);
        assert_eq!(key_slot("socket.io#/#"), 13868);
        assert_eq!(key_slot("sio-relay:{socket.io#/#}"), 13868);
        assert_eq!(key_slot("socket.io#/admin#"), 4375);
        // As node-redis' `cluster-key-slot` and redis-py's `redis.crc.key_slot` compute it.
        assert_eq!(key_slot("user:42"), 15880);
        assert_eq!(key_slot("a{}b"), key_slot("a{}b"));
        assert_ne!(
            key_slot("a{}b"),
            key_slot("{}"),
            "an empty tag hashes the whole key"
        );
    }

    #[test]
    fn entries_follow_their_first_room_else_their_namespace() {
        let entry = |fields: &[(&str, &str)]| {
            let raw: Vec<(Vec<u8>, Vec<u8>)> = fields
                .iter()
                .map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect();
            Entry::parse(&raw).unwrap()
        };
        let user = entry(&[("event", "e"), ("room", "user:42")]);
        let rooms = entry(&[("event", "e"), ("rooms", r#"["user:42","user:7"]"#)]);
        let admin = entry(&[("event", "e"), ("nsp", "/admin")]);
        assert_eq!(routing_key(&user), "user:42");
        assert_eq!(routing_key(&rooms), "user:42");
        assert_eq!(routing_key(&admin), "/admin");
        assert_eq!(of(&user, 3), usize::from(key_slot("user:42")) % 3);
        assert_eq!(of(&user, 3), of(&rooms, 3));
        assert_eq!(of(&admin, 1), 0);
    }
}
