//! Dead letters: entries the relay will not deliver, and why.
//!
//! A dead letter keeps every original field, byte for byte, and adds `x-dead-*` fields with the reason,
//! the source entry and its delivery count. Producers' `x-` fields are ignored by validation, so an
//! operator can replay a dead letter by XADDing its fields back to the source stream unchanged. The
//! move itself (XADD to the dead-letter stream + XACK) happens atomically in the delivery script.

use std::time::Duration;

use crate::entry::{Malformed, RawEntry, Ttl};
use crate::packet::{Unsendable, Unsupported};
use crate::protocol::{DeadField, ReasonCode};

/// A dead letter's fields with packed original fields (see [`DeadField::Packed`]) unpacked in front
/// of the `x-dead-*` ones; a dead letter without them is returned as it is.
pub fn unpacked(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let packed_name = DeadField::Packed.wire().as_bytes();
    let Some((_, packed)) = fields.iter().find(|(f, _)| f == packed_name) else {
        return fields.to_vec();
    };
    let items = match rmpv::decode::read_value(&mut packed.as_slice()) {
        Ok(rmpv::Value::Array(items)) => items,
        _ => return fields.to_vec(),
    };
    let bytes = |item: rmpv::Value| match item {
        rmpv::Value::String(s) => s.into_bytes(),
        rmpv::Value::Binary(b) => b,
        other => other.to_string().into_bytes(),
    };
    let mut out = Vec::with_capacity(items.len() / 2 + fields.len());
    let mut items = items.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        out.push((bytes(name), bytes(value)));
    }
    out.extend(fields.iter().filter(|(f, _)| f != packed_name).cloned());
    out
}

/// Why the relay dead-lettered an entry (the scripts dead-letter others: see [`ReasonCode`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    /// The entry breaks the producers' contract.
    Malformed(Malformed),
    /// Delivered more often than `delivery.max_deliveries` (relays crashed or stalled on it).
    MaxDeliveries { deliveries: u64, limit: u32 },
    /// Older than its lifetime by its ID's timestamp.
    Expired { age: Duration, lifetime: Lifetime },
    /// Asked for acknowledgements, and no client gave one before `acks.max_age`.
    Unacknowledged {
        attempts: u32,
        /// Clients the last attempt reached (they received it and did not acknowledge).
        clients: u64,
        age: Duration,
        limit: Duration,
    },
    /// Valid, but the servers' stack cannot carry it.
    Unsupported(Unsupported),
}

/// How long an entry may live, by the time in its ID: its own `ttl` or the stream's
/// `delivery.max_age`, whichever ends first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    Ttl(Ttl),
    /// `delivery.max_age`, never zero (zero is no limit).
    MaxAge(Duration),
}

impl Lifetime {
    /// The shorter of `ttl` and `max_age` (zero: none); the entry's own on a tie, since the
    /// producer said it.
    pub fn of(ttl: Option<Ttl>, max_age: Duration) -> Option<Lifetime> {
        let max_age = (!max_age.is_zero()).then_some(Lifetime::MaxAge(max_age));
        match (ttl.map(Lifetime::Ttl), max_age) {
            (Some(own), Some(stream)) if stream.limit() < own.limit() => Some(stream),
            (own, stream) => own.or(stream),
        }
    }

    pub fn limit(self) -> Duration {
        match self {
            Lifetime::Ttl(ttl) => ttl.get(),
            Lifetime::MaxAge(limit) => limit,
        }
    }
}

impl std::fmt::Display for Lifetime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let limit = humantime::format_duration(self.limit());
        match self {
            Lifetime::Ttl(_) => write!(f, "its ttl {limit}"),
            Lifetime::MaxAge(_) => write!(f, "delivery.max_age = {limit}"),
        }
    }
}

impl From<Unsendable> for Reason {
    fn from(problem: Unsendable) -> Reason {
        match problem {
            Unsendable::Malformed(problem) => Reason::Malformed(problem),
            Unsendable::Unsupported(problem) => Reason::Unsupported(problem),
        }
    }
}

impl Reason {
    /// The stable, machine-readable reason.
    pub fn code(&self) -> ReasonCode {
        match self {
            Reason::Malformed(_) => ReasonCode::Malformed,
            Reason::MaxDeliveries { .. } => ReasonCode::MaxDeliveries,
            Reason::Expired { .. } => ReasonCode::Expired,
            Reason::Unacknowledged { .. } => ReasonCode::Unacknowledged,
            Reason::Unsupported(_) => ReasonCode::Unsupported,
        }
    }

    /// What an operator reads to understand the reason.
    pub fn detail(&self) -> String {
        match self {
            Reason::Malformed(problem) => problem.to_string(),
            Reason::Unsupported(problem) => problem.to_string(),
            Reason::MaxDeliveries { deliveries, limit } => {
                format!("delivered {deliveries} times, more than delivery.max_deliveries = {limit}")
            }
            Reason::Expired { age, lifetime } => format!(
                "{} old, older than {lifetime}",
                humantime::format_duration(Duration::from_millis(age.as_millis() as u64)),
            ),
            Reason::Unacknowledged {
                attempts,
                clients,
                age,
                limit,
            } => format!(
                "no client acknowledged it in {attempts} attempts over {} (acks.max_age = {}); the last attempt reached {clients} clients",
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                humantime::format_duration(*limit)
            ),
        }
    }
}

/// The fields of the dead letter for `entry`, which came from `stream`.
pub fn fields(
    entry: &RawEntry,
    stream: &str,
    deliveries: u64,
    reason: &Reason,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = entry
        .fields
        .iter()
        .filter(|(name, _)| !name.starts_with(DeadField::PREFIX.as_bytes()))
        .cloned()
        .collect();
    let mut add = |field: DeadField, value: String| {
        out.push((field.wire().as_bytes().to_vec(), value.into_bytes()));
    };
    add(DeadField::Reason, reason.code().wire().to_owned());
    add(DeadField::Error, reason.detail());
    add(DeadField::Stream, stream.to_owned());
    add(DeadField::Id, entry.id.to_string());
    add(DeadField::Deliveries, deliveries.to_string());
    out
}

/// One reason of each kind, for the tests.
#[cfg(test)]
pub(crate) fn one_of_each() -> [Reason; 5] {
    [
        Reason::Malformed(Malformed::MissingEvent),
        Reason::MaxDeliveries {
            deliveries: 6,
            limit: 5,
        },
        Reason::Expired {
            age: Duration::from_secs(2),
            lifetime: Lifetime::MaxAge(Duration::from_secs(1)),
        },
        Reason::Unacknowledged {
            attempts: 1,
            clients: 0,
            age: Duration::from_secs(2),
            limit: Duration::from_secs(1),
        },
        Reason::Unsupported(Unsupported::ServerEmit),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Entry, EntryId};

    #[test]
    fn dead_letters_keep_the_original_and_can_be_replayed() {
        let entry = RawEntry {
            id: EntryId { ms: 7, seq: 1 },
            fields: vec![
                (b"event".to_vec(), b"chat".to_vec()),
                (b"x-dead-reason".to_vec(), b"expired".to_vec()),
                (b"data".to_vec(), b"\xff".to_vec()),
            ],
        };
        let reason = Reason::Malformed(Malformed::ValueNotUtf8("data".into()));
        let dead = fields(&entry, "orders", 2, &reason);
        let text: Vec<(String, String)> = dead
            .iter()
            .map(|(f, v)| {
                (
                    String::from_utf8_lossy(f).into(),
                    String::from_utf8_lossy(v).into(),
                )
            })
            .collect();
        assert_eq!(dead[0], (b"event".to_vec(), b"chat".to_vec()));
        assert_eq!(
            dead[1],
            (b"data".to_vec(), b"\xff".to_vec()),
            "values kept byte for byte"
        );
        assert_eq!(
            &text[2..],
            &[
                ("x-dead-reason".into(), "malformed".into()),
                (
                    "x-dead-error".into(),
                    "the value of `data` is not valid UTF-8".into()
                ),
                ("x-dead-stream".into(), "orders".into()),
                ("x-dead-id".into(), "7-1".into()),
                ("x-dead-deliveries".into(), "2".into()),
            ]
        );

        let replayable = fields(
            &RawEntry {
                id: entry.id,
                fields: vec![(b"event".to_vec(), b"chat".to_vec())],
            },
            "orders",
            6,
            &Reason::MaxDeliveries {
                deliveries: 6,
                limit: 5,
            },
        );
        assert!(
            Entry::parse(&replayable).is_ok(),
            "x-dead-* fields are ignored on replay"
        );
    }

    #[test]
    fn packed_fields_unpack_in_front() {
        let mut packed = Vec::new();
        rmp::encode::write_array_len(&mut packed, 4).unwrap();
        for item in ["event", "e", "x-seq", "7"] {
            rmp::encode::write_str(&mut packed, item).unwrap();
        }
        let letter = vec![
            (DeadField::Packed.wire().as_bytes().to_vec(), packed),
            (
                b"x-dead-reason".to_vec(),
                ReasonCode::Refused.wire().as_bytes().to_vec(),
            ),
        ];
        let names: Vec<Vec<u8>> = unpacked(&letter).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            names,
            [
                b"event".to_vec(),
                b"x-seq".to_vec(),
                b"x-dead-reason".to_vec()
            ]
        );
    }

    #[test]
    fn details_name_the_limit() {
        let expired = Reason::Expired {
            age: Duration::from_millis(3_600_500),
            lifetime: Lifetime::MaxAge(Duration::from_secs(60)),
        };
        assert_eq!(expired.code().wire(), "expired");
        assert_eq!(
            expired.detail(),
            "1h 500ms old, older than delivery.max_age = 1m"
        );
        let ttl = Entry::of(&[("event", "e"), ("ttl", "30s")]).ttl();
        let own = Reason::Expired {
            age: Duration::from_millis(30_001),
            lifetime: Lifetime::Ttl(ttl.unwrap()),
        };
        assert_eq!(own.detail(), "30s 1ms old, older than its ttl 30s");
    }

    #[test]
    fn the_lifetime_that_ends_first_applies_and_a_tie_is_the_entrys_own() {
        let ttl = |text| Entry::of(&[("event", "e"), ("ttl", text)]).ttl();
        let minute = Duration::from_secs(60);
        assert_eq!(Lifetime::of(None, Duration::ZERO), None);
        assert_eq!(Lifetime::of(None, minute), Some(Lifetime::MaxAge(minute)));
        assert_eq!(
            Lifetime::of(ttl("30s"), Duration::ZERO),
            ttl("30s").map(Lifetime::Ttl)
        );
        assert_eq!(
            Lifetime::of(ttl("30s"), minute),
            ttl("30s").map(Lifetime::Ttl)
        );
        assert_eq!(
            Lifetime::of(ttl("2m"), minute),
            Some(Lifetime::MaxAge(minute))
        );
        assert_eq!(
            Lifetime::of(ttl("1m"), minute),
            ttl("1m").map(Lifetime::Ttl)
        );
    }
}
