//! Stream fields → validation → packet → decode, for every adapter format. Invariants: nothing
//! panics, and every entry that validation accepts encodes to a packet that decodes back to the
//! same operation, event, arguments, rooms, except, namespace and flags, on the channel the adapter
//! would use (or is refused for the one reason an accepted entry may be: bytes for a JSON parser).
//! An emit with `ack` also encodes to a broadcast with acknowledgements that decodes back the same,
//! with its request ID, on the channel of the namespace's servers.
//!
//! Input layout: fields separated by 0xff; a field's first byte picks its name (one of the known
//! fields, an `x-` field, or the raw bytes as an unknown name) and the rest is its value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sio_relay::entry::{binary, binary_bytes, Entry, Malformed, Operation, Room};
use sio_relay::packet::{
    decode, decode_request, hex, Adapter, Parser, Target, Unsendable, Unsupported,
};

const NAMES: [&str; 20] = [
    "event",
    "data",
    "args",
    "room",
    "rooms",
    "except",
    "nsp",
    "volatile",
    "compress",
    "x-meta",
    "join",
    "leave",
    "disconnect",
    "server_emit",
    "all",
    "close",
    "ack",
    "append_id",
    "ttl",
    "traceparent",
];

fuzz_target!(|input: &[u8]| {
    let fields: Vec<(Vec<u8>, Vec<u8>)> = input
        .split(|&b| b == 0xff)
        .filter_map(|chunk| {
            let (&selector, value) = chunk.split_first()?;
            let name = match NAMES.get(usize::from(selector) % (NAMES.len() + 1)) {
                Some(name) => name.as_bytes().to_vec(),
                None => value.iter().take(4).copied().collect(),
            };
            Some((name, value.to_vec()))
        })
        .collect();
    let Ok(entry) = Entry::parse(&fields) else {
        return;
    };
    let targets = Target::every_format("socket.io", "emitter");
    for target in &targets {
        let packet = match target.encode(&entry) {
            Ok(packet) => packet,
            Err(Unsendable::Malformed(Malformed::BinaryNeedsMsgpack)) => {
                assert_eq!(
                    (target.adapter, target.parser),
                    (Adapter::Classic, Parser::Json)
                );
                assert!(entry.message().is_some_and(|m| m.has_binary()));
                continue;
            }
            Err(other) => panic!("an accepted entry refused: {other}"),
        };
        // Every emit that may go out as a broadcast with acknowledgements: with its own `ack`, the
        // stream's `acks.default`, or `delivery.confirm = "clients"` (which, like the default,
        // leaves volatile emits as they are).
        let asks = entry.ack(Some(std::time::Duration::from_secs(1))).is_some();
        if asks && target.adapter == Adapter::Streams {
            // Refused: the relay cannot ask the streams adapter's servers for acknowledgements.
            assert!(matches!(
                target.ack_request(&entry, "sio-relay:f:1-0:1"),
                Err(Unsendable::Unsupported(Unsupported::StreamsAcks))
            ));
        } else if asks {
            let asked = target
                .ack_request(&entry, "sio-relay:f:1-0:1")
                .expect("what encodes also encodes with acknowledgements");
            assert_eq!(asked.channel, target.servers_channel(entry.nsp()));
            let decoded = match target.adapter {
                Adapter::Classic => decode_request(&asked.payload, target),
                Adapter::Sharded | Adapter::Streams | Adapter::PythonSocketio => {
                    decode(&asked.payload, target)
                }
            }
            .expect("a readable request");
            assert_eq!(decoded.request_id.as_deref(), Some("sio-relay:f:1-0:1"));
            let message = entry.message().expect("an emit");
            assert_eq!(decoded.event, message.event);
            assert!(same(
                &Value::from(decoded.args.clone()),
                &Value::from(message.args.clone())
            ));
            let rooms = serde_json::to_value(entry.rooms()).unwrap();
            assert!(same(&Value::from(decoded.rooms.clone()), &rooms));
        }
        let request = !matches!(entry.operation(), Operation::Emit { .. });
        let decoded = if request && target.adapter == Adapter::Classic {
            decode_request(&packet.payload, target)
        } else {
            decode(&packet.payload, target)
        }
        .expect("an accepted entry encodes to a readable packet");
        // Rooms compared as JavaScript sees them: a number is one whatever its spelling.
        let rooms = |rooms: &[Room]| serde_json::to_value(rooms).unwrap();
        let same_rooms =
            |got: &[Value], sent: &[Room]| same(&Value::from(got.to_vec()), &rooms(sent));
        assert!(same_rooms(&decoded.rooms, entry.rooms()));
        assert!(same_rooms(&decoded.except, entry.except()));
        if let Some(message) = entry.message() {
            assert_eq!(decoded.event, message.event);
            assert_eq!(decoded.args.len(), message.args.len());
            for (got, sent) in decoded.args.iter().zip(&message.args) {
                assert!(same(got, sent), "{got} != {sent}");
            }
        }
        match entry.operation() {
            Operation::Emit {
                volatile, compress, ..
            } => {
                assert_eq!(decoded.operation, "emit");
                assert_eq!(decoded.uid, "emitter");
                assert_eq!(decoded.nsp, entry.nsp());
                assert_eq!(decoded.flags.get("volatile").is_some(), *volatile);
                assert_eq!(
                    decoded.flags.get("compress").and_then(Value::as_bool),
                    *compress
                );
                let expected_channel = match (target.adapter, entry.rooms()) {
                    (Adapter::Streams, _) => target.streams.stream_of(entry.nsp()),
                    (Adapter::Classic, [Room::Name(one)]) => {
                        format!("socket.io#{}#{one}#", entry.nsp())
                    }
                    _ => format!("socket.io#{}#", entry.nsp()),
                };
                assert_eq!(packet.channel, expected_channel);
            }
            operation => {
                let expected_channel = match target.adapter {
                    Adapter::Streams => target.streams.stream_of(entry.nsp()),
                    Adapter::PythonSocketio => target.key.clone(),
                    Adapter::Classic | Adapter::Sharded => target.servers_channel(entry.nsp()),
                };
                assert_eq!(packet.channel, expected_channel);
                match operation {
                    Operation::Join(joined) | Operation::Leave(joined) => {
                        assert!(same_rooms(&decoded.target_rooms, joined));
                    }
                    Operation::Disconnect { close } => {
                        assert_eq!(decoded.operation, "disconnect");
                        assert_eq!(decoded.close, Some(*close));
                    }
                    _ => assert_eq!(decoded.operation, "server_emit"),
                }
            }
        }
    }
});

/// Equal as JavaScript sees them: numbers by value, whatever format carried them; bytes sent as
/// base64 and shown by the decoder in hex (they always travel as MessagePack).
fn same(a: &Value, b: &Value) -> bool {
    if let Some(base64) = binary(b) {
        return binary(a) == Some(&Value::from(hex(&binary_bytes(base64))));
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((k, p), (l, q))| k == l && same(p, q))
        }
        _ => a == b,
    }
}
