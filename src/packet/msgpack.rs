//! MessagePack written as notepack.io 3 writes it (the classic adapter's codec): the same marker
//! for each value, so that the relay's bytes are the emitter's (docs/08-internals/wire-format.md,
//! "MessagePack as notepack.io writes and reads it"), straight into one buffer with `rmp`.

use rmp::encode;
use serde_json::{Number, Value};

use super::{Opts, OptsFlags, EVENT};
use crate::entry::{self, Message, Room, MAX_SAFE_MAGNITUDE};

/// `{type: 2, data: [event, ...args], nsp}` in MessagePack; `nsp` left out where the sharded
/// adapter's own messages leave it out.
pub(super) fn write_packet(out: &mut Vec<u8>, message: &Message, nsp: Option<&str>) {
    map_len(out, 2 + usize::from(nsp.is_some()));
    str(out, "type");
    encode::write_pfix(out, EVENT).expect("writing to a Vec cannot fail");
    str(out, "data");
    write_event(out, message);
    if let Some(nsp) = nsp {
        str(out, "nsp");
        str(out, nsp);
    }
}

/// `[event, ...args]` in MessagePack.
pub(super) fn write_event(out: &mut Vec<u8>, message: &Message) {
    array_len(out, 1 + message.args.len());
    str(out, &message.event);
    for arg in &message.args {
        value(out, arg);
    }
}

/// `{rooms, flags, except}` in MessagePack, flags only when set, as the emitter writes them.
pub(super) fn write_opts(out: &mut Vec<u8>, opts: &Opts) {
    map_len(out, 3);
    str(out, "rooms");
    room_array(out, opts.rooms);
    str(out, "flags");
    let OptsFlags { volatile, compress } = opts.flags;
    map_len(
        out,
        usize::from(volatile.is_some()) + usize::from(compress.is_some()),
    );
    if volatile.is_some() {
        str(out, "volatile");
        encode::write_bool(out, true).expect("writing to a Vec cannot fail");
    }
    if let Some(compress) = compress {
        str(out, "compress");
        encode::write_bool(out, compress).expect("writing to a Vec cannot fail");
    }
    str(out, "except");
    room_array(out, opts.except);
}

/// Writes a JSON value as notepack writes the value `JSON.parse` would give for it.
pub(super) fn value(out: &mut Vec<u8>, v: &Value) {
    if let Some(base64) = entry::binary(v) {
        let bytes = entry::binary_bytes(base64);
        encode::write_bin(out, &bytes).expect("writing to a Vec cannot fail");
        return;
    }
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
pub(super) fn number(out: &mut Vec<u8>, n: &Number) {
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

pub(super) fn str(out: &mut Vec<u8>, s: &str) {
    encode::write_str(out, s).expect("writing to a Vec cannot fail");
}

pub(super) fn room_array(out: &mut Vec<u8>, rooms: &[Room]) {
    array_len(out, rooms.len());
    for room in rooms {
        match room {
            Room::Name(name) => str(out, name),
            Room::Number(n) => number(out, n),
        }
    }
}

pub(super) fn array_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("a stream entry cannot hold 2^32 items");
    encode::write_array_len(out, len).expect("writing to a Vec cannot fail");
}

pub(super) fn map_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("a stream entry cannot hold 2^32 items");
    encode::write_map_len(out, len).expect("writing to a Vec cannot fail");
}
