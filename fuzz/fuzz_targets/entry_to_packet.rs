//! Stream fields → validation → packet → decode, for every adapter format. Invariants: nothing
//! panics, and every entry that validation accepts encodes to a packet that decodes back to the
//! same event, arguments, rooms, except, namespace and flags, on the channel the adapter would use.
//!
//! Input layout: fields separated by 0xff; a field's first byte picks its name (one of the known
//! fields, an `x-` field, or the raw bytes as an unknown name) and the rest is its value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sio_relay::entry::Entry;
use sio_relay::packet::{decode, Target};

const NAMES: [&str; 10] = [
    "event", "data", "args", "room", "rooms", "except", "nsp", "volatile", "compress", "x-meta",
];

fuzz_target!(|input: &[u8]| {
    let fields: Vec<(Vec<u8>, Vec<u8>)> = input
        .split(|&b| b == 0xff)
        .filter_map(|chunk| {
            let (&selector, value) = chunk.split_first()?;
            let name = match NAMES.get(usize::from(selector) % 11) {
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
        let packet = target.encode(&entry);
        let decoded = decode(&packet.payload, target)
            .expect("an accepted entry encodes to a readable packet");
        assert_eq!(decoded.uid, "emitter");
        assert_eq!(decoded.event, entry.event());
        assert_eq!(decoded.nsp, entry.nsp());
        assert_eq!(decoded.rooms, entry.rooms());
        assert_eq!(decoded.except, entry.except());
        assert_eq!(decoded.args.len(), entry.args().len());
        for (got, sent) in decoded.args.iter().zip(entry.args()) {
            assert!(same(got, sent), "{got} != {sent}");
        }
        assert_eq!(decoded.flags.get("volatile").is_some(), entry.volatile());
        assert_eq!(
            decoded.flags.get("compress").and_then(Value::as_bool),
            entry.compress()
        );
        let expected_channel = match entry.rooms() {
            [one] => format!("socket.io#{}#{one}#", entry.nsp()),
            _ => format!("socket.io#{}#", entry.nsp()),
        };
        assert_eq!(packet.channel, expected_channel);
    }
});

/// Equal as JavaScript sees them: numbers by value, whatever format carried them.
fn same(a: &Value, b: &Value) -> bool {
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
