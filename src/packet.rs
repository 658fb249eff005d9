//! Packet encoding: a validated [`Entry`] becomes the channel and bytes that
//! `@socket.io/redis-emitter` 5.x would publish for the same emit.
//!
//! The payload is MessagePack `[uid, {type: 2, data: [event, ...args], nsp}, {rooms, flags, except}]`
//! written with the same marker choices as notepack.io 3 (the adapter's codec), key for key in the
//! emitter's order, so the bytes match the emitter's (wire-format.md §1.3, §1.8, §3, §7). It is written
//! with `rmp` directly: one pass into one buffer, no intermediate value tree.

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

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
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
