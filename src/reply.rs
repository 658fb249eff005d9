//! Typed replies of the stream commands the relay reads entries with.
//!
//! redis-rs's own `StreamId` keeps fields in a `HashMap<String, _>`: it loses their order, folds
//! duplicate fields into one and fails on a field name that is not UTF-8. The relay must see exactly
//! what the producer wrote, to dead-letter it faithfully, so these types keep the raw pairs.

use redis::{FromRedisValue, ParsingError, Value};

use crate::entry::{EntryId, RawEntry};

/// The entries of an XREADGROUP reply, in stream order.
#[derive(Debug, Default)]
pub struct Read(pub Vec<Delivered>);

/// The entries of an XCLAIM reply, in the order of the IDs asked for.
#[derive(Debug, Default)]
pub struct Claimed(pub Vec<Delivered>);

/// One element of an entries reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivered {
    Present(RawEntry),
    /// Still pending, but deleted from the stream (trimmed or XDEL'd): nothing left to deliver.
    Deleted(EntryId),
}

/// The reply of XAUTOCLAIM (Redis 7 form).
#[derive(Debug)]
pub struct AutoClaimed {
    /// Where the next call continues; `0-0` once the whole pending list has been scanned.
    pub cursor: String,
    pub entries: Vec<Delivered>,
    /// Pending entries that no longer existed in the stream; Redis removed them from the pending list.
    pub deleted: Vec<EntryId>,
}

impl FromRedisValue for Read {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let streams: Vec<(Value, Value)> = match v {
            // BLOCK expired.
            Value::Nil => return Ok(Read::default()),
            // RESP3: {stream: [entry, ...]}.
            Value::Map(streams) => streams,
            // RESP2: [[stream, [entry, ...]], ...].
            other => Vec::from_redis_value(other)?,
        };
        let mut all = Vec::new();
        for (_, entries) in streams {
            all.extend(entry_list(entries)?);
        }
        Ok(Read(all))
    }
}

impl FromRedisValue for Claimed {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        Ok(Claimed(entry_list(v)?))
    }
}

impl FromRedisValue for AutoClaimed {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let Value::Array(parts) = v else {
            return Err(unexpected("an XAUTOCLAIM reply", &v));
        };
        let mut parts = parts.into_iter();
        let cursor = String::from_redis_value(parts.next().unwrap_or(Value::Nil))?;
        let entries = entry_list(parts.next().unwrap_or(Value::Nil))?;
        let deleted = match parts.next() {
            Some(ids) => Vec::<String>::from_redis_value(ids)?
                .iter()
                .map(|id| id.parse().map_err(ParsingError::from))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        Ok(AutoClaimed {
            cursor,
            entries,
            deleted,
        })
    }
}

fn entry_list(v: Value) -> Result<Vec<Delivered>, ParsingError> {
    let items = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => return Err(unexpected("a list of stream entries", &other)),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            // Redis 6.2 answers a deleted entry with a bare nil and no ID; nothing to do with it.
            Value::Nil => {}
            Value::Array(pair) => out.push(entry(pair)?),
            other => return Err(unexpected("a stream entry", &other)),
        }
    }
    Ok(out)
}

fn entry(pair: Vec<Value>) -> Result<Delivered, ParsingError> {
    let mut pair = pair.into_iter();
    let id: EntryId = String::from_redis_value(pair.next().unwrap_or(Value::Nil))?
        .parse()
        .map_err(ParsingError::from)?;
    let fields = match pair.next() {
        None | Some(Value::Nil) => return Ok(Delivered::Deleted(id)),
        Some(Value::Array(flat)) => flat,
        Some(other) => return Err(unexpected("the fields of a stream entry", &other)),
    };
    if fields.len() % 2 != 0 {
        return Err(format!("entry {id} has an odd number of field items").into());
    }
    let mut pairs = Vec::with_capacity(fields.len() / 2);
    let mut flat = fields.into_iter();
    while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
        pairs.push((bytes(name)?, bytes(value)?));
    }
    Ok(Delivered::Present(RawEntry { id, fields: pairs }))
}

fn bytes(v: Value) -> Result<Vec<u8>, ParsingError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        other => Err(unexpected("a field name or value", &other)),
    }
}

fn unexpected(what: &str, got: &Value) -> ParsingError {
    format!("expected {what}, got {got:?}").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    fn entry_value(id: &str, fields: &[&[u8]]) -> Value {
        Value::Array(vec![
            bulk(id.as_bytes()),
            Value::Array(fields.iter().map(|f| bulk(f)).collect()),
        ])
    }

    #[test]
    fn xreadgroup_keeps_order_duplicates_and_binary() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk(b"sio-relay"),
            Value::Array(vec![
                entry_value("1-0", &[b"event", b"a", b"event", b"b"]),
                entry_value("2-5", &[b"\xff", b"\x00"]),
                Value::Array(vec![bulk(b"3-0"), Value::Nil]),
            ]),
        ])]);
        let Read(entries) = Read::from_redis_value(reply).unwrap();
        assert_eq!(
            entries,
            vec![
                Delivered::Present(RawEntry {
                    id: EntryId { ms: 1, seq: 0 },
                    fields: vec![
                        (b"event".to_vec(), b"a".to_vec()),
                        (b"event".to_vec(), b"b".to_vec())
                    ],
                }),
                Delivered::Present(RawEntry {
                    id: EntryId { ms: 2, seq: 5 },
                    fields: vec![(b"\xff".to_vec(), b"\x00".to_vec())],
                }),
                Delivered::Deleted(EntryId { ms: 3, seq: 0 }),
            ]
        );
    }

    #[test]
    fn block_timeout_is_no_entries() {
        assert!(Read::from_redis_value(Value::Nil).unwrap().0.is_empty());
        let empty = Value::Array(vec![Value::Array(vec![bulk(b"s"), Value::Array(vec![])])]);
        assert!(Read::from_redis_value(empty).unwrap().0.is_empty());
    }

    #[test]
    fn resp3_map_and_xclaim_list() {
        let map = Value::Map(vec![(
            bulk(b"s"),
            Value::Array(vec![entry_value("1-1", &[b"event", b"e"])]),
        )]);
        assert_eq!(Read::from_redis_value(map).unwrap().0.len(), 1);
        let list = Value::Array(vec![entry_value("1-1", &[b"event", b"e"])]);
        assert_eq!(Claimed::from_redis_value(list).unwrap().0.len(), 1);
    }

    #[test]
    fn xautoclaim_reports_deleted_ids() {
        let reply = Value::Array(vec![
            bulk(b"0-0"),
            Value::Array(vec![entry_value("5-0", &[b"event", b"e"])]),
            Value::Array(vec![bulk(b"4-0")]),
        ]);
        let claimed = AutoClaimed::from_redis_value(reply).unwrap();
        assert_eq!(claimed.cursor, "0-0");
        assert_eq!(claimed.entries.len(), 1);
        assert_eq!(claimed.deleted, vec![EntryId { ms: 4, seq: 0 }]);
    }
}
