//! Properties of validation and encoding: every valid entry encodes to a packet that a MessagePack
//! decoder reads back to the same event, arguments, rooms, namespace and flags, on the channel the
//! emitter would use; and no input, however broken, makes validation or encoding panic.

use proptest::prelude::*;
use serde_json::{Map, Number, Value};
use sio_relay::entry::{Entry, RESERVED_EVENTS};
use sio_relay::packet::Target;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-(1i64 << 53)..=(1i64 << 53)).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| Value::Number(Number::from_f64(f).unwrap())),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((".{0,12}", inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn room() -> impl Strategy<Value = String> {
    ".{1,20}"
}

#[derive(Debug, Clone)]
struct Produced {
    event: String,
    args: Vec<Value>,
    as_data: bool,
    rooms: Vec<String>,
    except: Vec<String>,
    nsp: Option<String>,
    volatile: Option<bool>,
    compress: Option<bool>,
}

fn produced() -> impl Strategy<Value = Produced> {
    (
        ".{1,30}".prop_filter("not reserved", |e| !RESERVED_EVENTS.contains(&e.as_str())),
        prop::collection::vec(json_value(), 0..4),
        any::<bool>(),
        prop::collection::vec(room(), 0..4),
        prop::collection::vec(room(), 0..3),
        prop::option::of("/[a-z0-9/_-]{0,12}"),
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
    )
        .prop_map(
            |(event, args, as_data, rooms, except, nsp, volatile, compress)| Produced {
                as_data: as_data && args.len() == 1,
                event,
                args,
                rooms,
                except,
                nsp,
                volatile,
                compress,
            },
        )
}

impl Produced {
    /// The stream fields a producer would XADD for this emit.
    fn fields(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut fields = vec![("event".to_owned(), self.event.clone())];
        if self.as_data {
            fields.push(("data".into(), self.args[0].to_string()));
        } else if !self.args.is_empty() {
            fields.push(("args".into(), Value::Array(self.args.clone()).to_string()));
        }
        match self.rooms.as_slice() {
            [] => {}
            [one] => fields.push(("room".into(), one.clone())),
            many => fields.push(("rooms".into(), serde_json::to_string(many).unwrap())),
        }
        if !self.except.is_empty() {
            fields.push((
                "except".into(),
                serde_json::to_string(&self.except).unwrap(),
            ));
        }
        if let Some(nsp) = &self.nsp {
            fields.push(("nsp".into(), nsp.clone()));
        }
        if let Some(v) = self.volatile {
            fields.push(("volatile".into(), v.to_string()));
        }
        if let Some(c) = self.compress {
            fields.push(("compress".into(), c.to_string()));
        }
        fields.push(("x-producer".into(), "props".into()));
        fields
            .into_iter()
            .map(|(f, v)| (f.into_bytes(), v.into_bytes()))
            .collect()
    }
}

fn unique(items: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if !out.contains(item) {
            out.push(item.clone());
        }
    }
    out
}

fn decode(payload: &[u8]) -> rmpv::Value {
    let mut reader = payload;
    let value = rmpv::decode::read_value(&mut reader).expect("valid msgpack");
    assert!(reader.is_empty(), "trailing bytes crash notepack's decoder");
    value
}

fn get<'a>(map: &'a rmpv::Value, key: &str) -> &'a rmpv::Value {
    map.as_map()
        .expect("a map")
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("key {key} missing"))
}

fn strings(v: &rmpv::Value) -> Vec<String> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// Compares a decoded msgpack value with the JSON the producer sent, as JavaScript would see
/// them: numbers by value, whatever MessagePack format carried them.
fn same(decoded: &rmpv::Value, sent: &Value) -> bool {
    match (decoded, sent) {
        (rmpv::Value::Nil, Value::Null) => true,
        (rmpv::Value::Boolean(a), Value::Bool(b)) => a == b,
        (rmpv::Value::Integer(i), Value::Number(n)) => {
            i.as_f64() == n.as_f64() && n.as_f64().is_some()
        }
        (rmpv::Value::F64(f), Value::Number(n)) => Some(*f) == n.as_f64(),
        (rmpv::Value::String(s), Value::String(t)) => s.as_str() == Some(t.as_str()),
        (rmpv::Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (rmpv::Value::Map(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|((k, v), (bk, bv))| k.as_str() == Some(bk.as_str()) && same(v, bv))
        }
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_entries_round_trip(p in produced()) {
        let entry = Entry::parse(&p.fields()).expect("a valid entry");
        let target = Target::classic("socket.io", "emitter");
        let packet = target.encode(&entry).unwrap();
        let nsp = p.nsp.clone().unwrap_or_else(|| "/".into());
        let rooms = unique(&p.rooms);

        let expected_channel = match rooms.as_slice() {
            [one] => format!("socket.io#{nsp}#{one}#"),
            _ => format!("socket.io#{nsp}#"),
        };
        prop_assert_eq!(&packet.channel, &expected_channel);

        let top = decode(&packet.payload);
        let top = top.as_array().expect("[uid, packet, opts]");
        prop_assert_eq!(top.len(), 3);
        prop_assert_eq!(top[0].as_str(), Some("emitter"));

        let body = &top[1];
        prop_assert_eq!(get(body, "type").as_u64(), Some(2));
        prop_assert_eq!(get(body, "nsp").as_str(), Some(nsp.as_str()));
        let data = get(body, "data").as_array().expect("data array");
        prop_assert_eq!(data[0].as_str(), Some(p.event.as_str()));
        prop_assert_eq!(data.len(), 1 + p.args.len());
        for (decoded, sent) in data[1..].iter().zip(&p.args) {
            prop_assert!(same(decoded, sent), "{:?} != {:?}", decoded, sent);
        }

        let opts = &top[2];
        prop_assert_eq!(strings(get(opts, "rooms")), rooms);
        prop_assert_eq!(strings(get(opts, "except")), unique(&p.except));
        let flags = get(opts, "flags").as_map().expect("flags map");
        let flag = |name: &str| flags.iter().find(|(k, _)| k.as_str() == Some(name)).map(|(_, v)| v.as_bool());
        prop_assert_eq!(flag("volatile"), (p.volatile == Some(true)).then_some(Some(true)));
        prop_assert_eq!(flag("compress"), p.compress.map(Some));
        prop_assert!(flags.iter().all(|(_, v)| !v.is_nil()), "no nil flags");
    }

    #[test]
    fn arbitrary_fields_never_panic(
        fields in prop::collection::vec(
            (
                prop_oneof![
                    Just(b"event".to_vec()), Just(b"data".to_vec()), Just(b"args".to_vec()),
                    Just(b"room".to_vec()), Just(b"rooms".to_vec()), Just(b"except".to_vec()),
                    Just(b"nsp".to_vec()), Just(b"volatile".to_vec()),
                    Just(b"join".to_vec()), Just(b"leave".to_vec()), Just(b"all".to_vec()),
                    Just(b"disconnect".to_vec()), Just(b"server_emit".to_vec()),
                    prop::collection::vec(any::<u8>(), 0..8),
                ],
                prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..24),
                    json_value().prop_map(|v| v.to_string().into_bytes()),
                ],
            ),
            0..6,
        )
    ) {
        if let Ok(entry) = Entry::parse(&fields) {
            let target = Target::classic("socket.io", "emitter");
            let packet = target.encode(&entry).unwrap();
            // Requests are JSON (the adapter parses a leading `{` as JSON); broadcasts MessagePack.
            if packet.payload.first() == Some(&b'{') {
                sio_relay::packet::decode_request(&packet.payload, &target).unwrap();
            } else {
                decode(&packet.payload);
            }
        }
    }
}
