//! Packet encoding: a validated [`Entry`] becomes the channel and bytes that
//! `@socket.io/redis-emitter` 5.x would publish for the same emit.
//!
//! The payload is MessagePack `[uid, {type: 2, data: [event, ...args], nsp}, {rooms, flags, except}]`
//! written with the same marker choices as notepack.io 3 (the adapter's codec), key for key in the
//! emitter's order, so the bytes match the emitter's (wire-format.md §1.3, §1.8, §3, §7). It is written
//! with `rmp` directly: one pass into one buffer, no intermediate value tree. [`decode`] reads such
//! packets back, for `sio-relay monitor`, and says why when a payload is not one a server can read.

use rmp::encode;
use serde_json::{Number, Value};

use crate::entry::{Entry, MAX_SAFE_MAGNITUDE};

/// Socket.IO's EVENT packet type. Always 2, even for binary arguments: the receiving server converts.
const EVENT: u8 = 2;

/// Where and how packets are published: must match the servers' `createAdapter(pub, sub, { key })`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Channel prefix, `socket.io` unless the servers set another `key`.
    pub key: String,
    /// Sender id in the packet; servers drop packets carrying their own uid, so it must never be a
    /// server's (those are 6 characters long).
    pub uid: String,
}

/// One encoded Socket.IO broadcast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub channel: String,
    pub payload: Vec<u8>,
}

impl Target {
    /// The channel every server of `nsp` listens on (through its `<key>#<nsp>#*` pattern).
    pub fn namespace_channel(&self, nsp: &str) -> String {
        format!("{}#{}#", self.key, nsp)
    }

    /// The start of `<key>-request#<nsp>#`, the channel each server's adapter subscribes to for
    /// its namespace: only Socket.IO servers subscribe to it, so its subscriber count is the number
    /// of servers (the adapter's own `serverCount()`), unlike PUBLISH's reply, which also counts
    /// anything pattern-subscribed (`monitor`, `redis-cli PSUBSCRIBE '*'`).
    pub fn request_prefix(&self) -> String {
        format!("{}-request#", self.key)
    }

    /// `<key>-request#<nsp>#`: subscribed to by every server of `nsp`, and by nothing else.
    pub fn request_channel(&self, nsp: &str) -> String {
        format!("{}{nsp}#", self.request_prefix())
    }

    /// Encodes `entry` as the emitter would. The room channel is used only when exactly one room is
    /// targeted: it is a pre-filter that lets servers without that room skip decoding, and with several
    /// rooms it would lose the servers that hold only the others (wire-format.md §1.4).
    pub fn encode(&self, entry: &Entry) -> Packet {
        let mut channel = self.namespace_channel(entry.nsp());
        if let [room] = entry.rooms() {
            channel.push_str(room);
            channel.push('#');
        }
        let mut payload = Vec::with_capacity(64 + entry.event().len());
        self.write_payload(&mut payload, entry);
        Packet { channel, payload }
    }

    fn write_payload(&self, out: &mut Vec<u8>, entry: &Entry) {
        array_len(out, 3);
        str(out, &self.uid);

        map_len(out, 3);
        str(out, "type");
        encode::write_pfix(out, EVENT).expect("writing to a Vec cannot fail");
        str(out, "data");
        array_len(out, 1 + entry.args().len());
        str(out, entry.event());
        for arg in entry.args() {
            value(out, arg);
        }
        str(out, "nsp");
        str(out, entry.nsp());

        map_len(out, 3);
        str(out, "rooms");
        str_array(out, entry.rooms());
        str(out, "flags");
        let volatile = entry.volatile();
        map_len(
            out,
            usize::from(volatile) + usize::from(entry.compress().is_some()),
        );
        if volatile {
            str(out, "volatile");
            encode::write_bool(out, true).expect("writing to a Vec cannot fail");
        }
        if let Some(compress) = entry.compress() {
            str(out, "compress");
            encode::write_bool(out, compress).expect("writing to a Vec cannot fail");
        }
        str(out, "except");
        str_array(out, entry.except());
    }
}

/// A packet as a Socket.IO server's adapter reads it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Decoded {
    pub uid: String,
    pub nsp: String,
    pub event: String,
    pub args: Vec<Value>,
    pub rooms: Vec<String>,
    pub except: Vec<String>,
    pub flags: serde_json::Map<String, Value>,
}

/// Reads a payload as `@socket.io/redis-adapter` does; `Err` says why a server could not.
pub fn decode(payload: &[u8]) -> Result<Decoded, String> {
    let mut reader = payload;
    let value =
        rmpv::decode::read_value(&mut reader).map_err(|e| format!("not MessagePack: {e}"))?;
    if !reader.is_empty() {
        return Err(format!(
            "{} trailing bytes after the packet (notepack throws on them)",
            reader.len()
        ));
    }
    let rmpv::Value::Array(parts) = value else {
        return Err("not an array [uid, packet, opts]".into());
    };
    let [uid, packet, opts] = parts.as_slice() else {
        return Err(format!(
            "an array of {} items, not [uid, packet, opts]",
            parts.len()
        ));
    };
    let field = |map: &rmpv::Value, key: &str| -> Option<rmpv::Value> {
        map.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v.clone())
    };
    if packet.as_map().is_none() {
        return Err("the packet is not a map".into());
    }
    if opts.as_map().is_none() {
        return Err("opts is not a map (servers crash on it)".into());
    }
    let data = match field(packet, "data") {
        Some(rmpv::Value::Array(data)) if !data.is_empty() => data,
        _ => return Err("packet.data is not a non-empty array".into()),
    };
    let event = match &data[0] {
        rmpv::Value::String(s) => s.as_str().unwrap_or_default().to_owned(),
        rmpv::Value::Integer(i) => i.to_string(),
        other => return Err(format!("the event name is {other}, not a string")),
    };
    let strings = |key: &str| -> Vec<String> {
        match field(opts, key) {
            Some(rmpv::Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    };
    let flags = match field(opts, "flags").map(|f| to_json(&f)) {
        Some(Value::Object(flags)) => flags,
        _ => serde_json::Map::new(),
    };
    Ok(Decoded {
        uid: uid.as_str().map_or_else(|| uid.to_string(), str::to_owned),
        nsp: field(packet, "nsp")
            .and_then(|n| n.as_str().map(str::to_owned))
            .unwrap_or_else(|| "/".into()),
        event,
        args: data[1..].iter().map(to_json).collect(),
        rooms: strings("rooms"),
        except: strings("except"),
        flags,
    })
}

/// MessagePack to JSON for display; binary becomes `{"$binary": "<hex>"}`.
fn to_json(v: &rmpv::Value) -> Value {
    match v {
        rmpv::Value::Nil => Value::Null,
        rmpv::Value::Boolean(b) => Value::Bool(*b),
        rmpv::Value::Integer(i) => i
            .as_i64()
            .map(Value::from)
            .or_else(|| i.as_u64().map(Value::from))
            .unwrap_or(Value::Null),
        rmpv::Value::F32(f) => Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        rmpv::Value::F64(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        rmpv::Value::String(s) => Value::String(s.as_str().unwrap_or_default().to_owned()),
        rmpv::Value::Binary(b) => serde_json::json!({ "$binary": hex(b) }),
        rmpv::Value::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        rmpv::Value::Map(pairs) => Value::Object(
            pairs
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().map_or_else(|| k.to_string(), str::to_owned),
                        to_json(v),
                    )
                })
                .collect(),
        ),
        rmpv::Value::Ext(kind, data) => serde_json::json!({ "$ext": kind, "data": hex(data) }),
    }
}

/// Lowercase hex, for bytes shown to people.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a JSON value as notepack writes the value `JSON.parse` would give for it.
fn value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => encode::write_nil(out).expect("writing to a Vec cannot fail"),
        Value::Bool(b) => encode::write_bool(out, *b).expect("writing to a Vec cannot fail"),
        Value::Number(n) => number(out, n),
        Value::String(s) => str(out, s),
        Value::Array(items) => {
            array_len(out, items.len());
            items.iter().for_each(|item| value(out, item));
        }
        Value::Object(map) => {
            map_len(out, map.len());
            for (k, item) in map {
                str(out, k);
                value(out, item);
            }
        }
    }
}

/// JavaScript has one number type; notepack writes integral values as the smallest integer format
/// and everything else as float64. So `1.0` and `1e3` travel as integers, exactly as from Node.
fn number(out: &mut Vec<u8>, n: &Number) {
    if let Some(i) = n.as_i64() {
        encode::write_sint(out, i).expect("writing to a Vec cannot fail");
        return;
    }
    // Validation guarantees a finite double for everything that is not an i64.
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.fract() == 0.0 && f.abs() <= MAX_SAFE_MAGNITUDE as f64 {
        encode::write_sint(out, f as i64).expect("writing to a Vec cannot fail");
    } else {
        encode::write_f64(out, f).expect("writing to a Vec cannot fail");
    }
}

fn str(out: &mut Vec<u8>, s: &str) {
    encode::write_str(out, s).expect("writing to a Vec cannot fail");
}

fn str_array(out: &mut Vec<u8>, items: &[String]) {
    array_len(out, items.len());
    items.iter().for_each(|s| str(out, s));
}

fn array_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("a stream entry cannot hold 2^32 items");
    encode::write_array_len(out, len).expect("writing to a Vec cannot fail");
}

fn map_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("a stream entry cannot hold 2^32 items");
    encode::write_map_len(out, len).expect("writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            key: "socket.io".into(),
            uid: "emitter".into(),
        }
    }

    fn encode(pairs: &[(&str, &str)]) -> Packet {
        let fields: Vec<_> = pairs
            .iter()
            .map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        target().encode(&Entry::parse(&fields).unwrap())
    }

    /// wire-format.md §1.8 A, as captured from `@socket.io/redis-emitter` 5.1.0.
    #[test]
    fn broadcast_matches_the_emitter_bytes() {
        let packet = encode(&[("event", "hello"), ("data", r#""world""#)]);
        assert_eq!(packet.channel, "socket.io#/#");
        assert_eq!(
            hex(&packet.payload),
            "93a7656d697474657283a47479706502a46461746192a568656c6c6fa5776f726c64a36e7370a12f83a5726f6f6d7390a5666c61677380a665786365707490"
        );
    }

    /// wire-format.md §3: `io.to(['a','b']).except('c').volatile.emit('multi',{k:true})`.
    #[test]
    fn rooms_except_and_flags_match_the_emitter_bytes() {
        let packet = encode(&[
            ("event", "multi"),
            ("data", r#"{"k":true}"#),
            ("rooms", r#"["a","b"]"#),
            ("except", r#"["c"]"#),
            ("volatile", "true"),
        ]);
        assert_eq!(
            packet.channel, "socket.io#/#",
            "two rooms go to the namespace channel"
        );
        assert_eq!(
            hex(&packet.payload),
            "93a7656d697474657283a47479706502a46461746192a56d756c746981a16bc3a36e7370a12f83a5726f6f6d7392a161a162a5666c61677381a8766f6c6174696c65c3a665786365707491a163"
        );
    }

    /// wire-format.md §1.8 B content (`io.to("room1").emit("hello", 1)`), in the emitter's key order.
    #[test]
    fn one_room_uses_the_room_channel() {
        let packet = encode(&[("event", "hello"), ("data", "1"), ("room", "room1")]);
        assert_eq!(packet.channel, "socket.io#/#room1#");
        assert_eq!(
            hex(&packet.payload),
            "93a7656d697474657283a47479706502a46461746192a568656c6c6f01a36e7370a12f83a5726f6f6d7391a5726f6f6d31a5666c61677380a665786365707490"
        );
    }

    /// wire-format.md §1.8 D content (`/admin`, volatile), in the emitter's key order.
    #[test]
    fn namespace_and_volatile() {
        let packet = encode(&[
            ("event", "hello"),
            ("data", r#""world""#),
            ("nsp", "/admin"),
            ("volatile", "true"),
        ]);
        assert_eq!(packet.channel, "socket.io#/admin#");
        assert_eq!(
            hex(&packet.payload),
            "93a7656d697474657283a47479706502a46461746192a568656c6c6fa5776f726c64a36e7370a62f61646d696e83a5726f6f6d7390a5666c61677381a8766f6c6174696c65c3a665786365707490"
        );
    }

    #[test]
    fn numbers_use_notepacks_formats() {
        let cases = [
            ("1", "01"),
            ("1.0", "01"),
            ("1e3", "cd03e8"),
            ("-1", "ff"),
            ("-33", "d0df"),
            ("200", "ccc8"),
            ("4294967296", "cf0000000100000000"),
            ("-2147483649", "d3ffffffff7fffffff"),
            ("0.5", "cb3fe0000000000000"),
            ("1e20", "cb4415af1d78b58c40"),
        ];
        for (json, expected) in cases {
            let mut out = Vec::new();
            value(&mut out, &serde_json::from_str(json).unwrap());
            assert_eq!(hex(&out), expected, "{json}");
        }
    }

    #[test]
    fn object_keys_keep_the_producers_order() {
        let mut out = Vec::new();
        value(
            &mut out,
            &serde_json::from_str(r#"{"b":1,"a":null}"#).unwrap(),
        );
        assert_eq!(hex(&out), "82a16201a161c0");
    }

    #[test]
    fn compress_false_is_passed_on() {
        let packet = encode(&[("event", "e"), ("compress", "false")]);
        assert!(
            hex(&packet.payload).ends_with("a5666c61677381a8636f6d7072657373c2a665786365707490")
        );
    }

    #[test]
    fn decode_reads_back_what_encode_wrote() {
        let packet = encode(&[
            ("event", "multi"),
            ("args", r#"[{"k":true}, 2]"#),
            ("rooms", r#"["a","b"]"#),
            ("except", r#"["c"]"#),
            ("nsp", "/admin"),
            ("volatile", "true"),
        ]);
        let decoded = decode(&packet.payload).unwrap();
        assert_eq!(decoded.uid, "emitter");
        assert_eq!(decoded.nsp, "/admin");
        assert_eq!(decoded.event, "multi");
        assert_eq!(
            decoded.args,
            [serde_json::json!({"k": true}), serde_json::json!(2)]
        );
        assert_eq!(decoded.rooms, ["a", "b"]);
        assert_eq!(decoded.except, ["c"]);
        assert_eq!(decoded.flags["volatile"], true);
    }

    #[test]
    fn decode_names_what_would_crash_a_server() {
        assert!(decode(b"[\"json\"]")
            .unwrap_err()
            .contains("trailing bytes"));
        assert!(decode(&[0xc1]).is_err());
        assert!(decode(&[0x93, 0xc1])
            .unwrap_err()
            .contains("not MessagePack"));
        let no_opts = [0x92, 0xa1, b'u', 0x80];
        assert!(decode(&no_opts)
            .unwrap_err()
            .contains("[uid, packet, opts]"));
        let nil_opts = [
            0x93, 0xa1, b'u', 0x81, 0xa4, b'd', b'a', b't', b'a', 0x91, 0xa1, b'e', 0xc0,
        ];
        assert!(decode(&nil_opts).unwrap_err().contains("opts is not a map"));
    }

    #[test]
    fn key_and_uid_come_from_the_target() {
        let target = Target {
            key: "app".into(),
            uid: "relay-1".into(),
        };
        let entry = Entry::parse(&[(b"event".to_vec(), b"e".to_vec())]).unwrap();
        let packet = target.encode(&entry);
        assert_eq!(packet.channel, "app#/#");
        assert_eq!(&packet.payload[..9], b"\x93\xa7relay-1");
    }
}
