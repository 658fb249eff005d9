//! Stream entries: the producers' contract.
//!
//! A [`RawEntry`] is what Redis handed us: an ID and its field/value pairs, in the producer's order,
//! unchecked. [`Entry::parse`] is the only way to build an [`Entry`], so holding one proves that every
//! rule of the contract (README, "The stream entry") holds. Anything else is a [`Malformed`] that names
//! the field and the problem; the relay dead-letters it and never publishes it, because a single bad
//! packet on the adapter channels can crash or disconnect every Socket.IO server and client.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use crate::config::LimitsConfig;

/// The ID Redis gave a stream entry: `<milliseconds>-<sequence>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    /// Unix time in milliseconds at which the entry was added (unless the producer chose the ID).
    pub ms: u64,
    pub seq: u64,
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EntryId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = s
            .split_once('-')
            .ok_or_else(|| format!("`{s}` is not a stream entry ID (expected <ms>-<seq>)"))?;
        let number = |part: &str| {
            part.parse::<u64>()
                .map_err(|_| format!("`{s}` is not a stream entry ID (expected <ms>-<seq>)"))
        };
        Ok(EntryId {
            ms: number(ms)?,
            seq: number(seq)?,
        })
    }
}

/// An entry as read from the stream, before validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    pub id: EntryId,
    /// Field/value pairs in stream order; duplicates are kept so validation can refuse them.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl RawEntry {
    /// The bytes of its field names and values.
    pub fn byte_len(&self) -> usize {
        self.fields.iter().map(|(f, v)| f.len() + v.len()).sum()
    }
}

/// Event names that Socket.IO clients treat as protocol events: publishing one makes every
/// receiving client drop its connection (wire-format.md §0).
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Largest integer magnitude that JavaScript numbers (and so notepack's decoder) hold exactly.
pub const MAX_SAFE_MAGNITUDE: u64 = 1 << 53;

/// Why an entry cannot be published. The text is what operators read in the dead-letter stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("the `event` field is missing")]
    MissingEvent,
    #[error("the `event` field is empty")]
    EmptyEvent,
    #[error("event `{0}` is reserved by Socket.IO: publishing it would disconnect every receiving client")]
    ReservedEvent(String),
    #[error("field name {0:?} is not valid UTF-8")]
    FieldNameNotUtf8(String),
    #[error("the value of `{0}` is not valid UTF-8")]
    ValueNotUtf8(String),
    #[error("field `{0}` appears more than once")]
    DuplicateField(String),
    #[error("unknown field `{0}` (known: event, data, args, room, rooms, except, nsp, volatile, compress; prefix your own metadata with `x-`)")]
    UnknownField(String),
    #[error("`{field}` is not valid JSON: {error}")]
    InvalidJson { field: &'static str, error: String },
    #[error("`{field}` must be {expected}")]
    WrongShape {
        field: &'static str,
        expected: &'static str,
    },
    #[error("`data` and `args` cannot both be present: use `data` for one argument or `args` for several")]
    DataAndArgs,
    #[error("`room` and `rooms` cannot both be present: put every room in `rooms`")]
    RoomAndRooms,
    #[error("`{0}` contains an empty room name")]
    EmptyRoom(&'static str),
    #[error("namespace `{0}` must start with `/`")]
    BadNamespace(String),
    #[error("namespace `{nsp}` contains `{character}`, which {why}")]
    NamespaceCharacter {
        nsp: String,
        character: char,
        why: &'static str,
    },
    #[error("`{field}` holds the integer {literal}, outside ±2^53: JavaScript would round it; send it as a string")]
    UnsafeInteger {
        field: &'static str,
        literal: String,
    },
    #[error("`{field}` holds the number {literal}, which is not a finite double")]
    NumberOutOfRange {
        field: &'static str,
        literal: String,
    },
    #[error("`{field}` must be `true` or `false`, not {value:?}")]
    BadFlag { field: &'static str, value: String },
    #[error("the entry holds {bytes} bytes of field names and values, more than limits.max_entry_bytes = {limit}")]
    TooLarge { bytes: u64, limit: usize },
    #[error("the entry has {fields} fields, more than limits.max_fields = {limit}")]
    TooManyFields { fields: u64, limit: usize },
    #[error("`{field}` names {rooms} rooms, more than limits.max_rooms = {limit}")]
    TooManyRooms {
        field: &'static str,
        rooms: usize,
        limit: usize,
    },
}

/// A validated entry: everything needed to build the adapter packet, nothing that could hurt a server.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    event: String,
    args: Vec<Value>,
    rooms: Vec<String>,
    except: Vec<String>,
    nsp: String,
    volatile: bool,
    compress: Option<bool>,
}

impl Entry {
    /// Validates the fields of a stream entry against the producers' contract, with the default
    /// limits.
    pub fn parse(fields: &[(Vec<u8>, Vec<u8>)]) -> Result<Entry, Malformed> {
        Entry::parse_within(fields, &LimitsConfig::default())
    }

    /// Validates the fields of a stream entry against the producers' contract and `limits`.
    pub fn parse_within(
        fields: &[(Vec<u8>, Vec<u8>)],
        limits: &LimitsConfig,
    ) -> Result<Entry, Malformed> {
        if fields.len() > limits.max_fields {
            return Err(Malformed::TooManyFields {
                fields: fields.len() as u64,
                limit: limits.max_fields,
            });
        }
        let bytes: usize = fields.iter().map(|(f, v)| f.len() + v.len()).sum();
        if bytes > limits.max_entry_bytes {
            return Err(Malformed::TooLarge {
                bytes: bytes as u64,
                limit: limits.max_entry_bytes,
            });
        }
        let mut seen = Fields::default();
        for (name, value) in fields {
            let name = std::str::from_utf8(name)
                .map_err(|_| Malformed::FieldNameNotUtf8(String::from_utf8_lossy(name).into()))?;
            if name.starts_with("x-") {
                continue;
            }
            let slot = seen
                .slot(name)
                .ok_or_else(|| Malformed::UnknownField(name.to_owned()))?;
            if slot.is_some() {
                return Err(Malformed::DuplicateField(name.to_owned()));
            }
            let text =
                std::str::from_utf8(value).map_err(|_| Malformed::ValueNotUtf8(name.to_owned()))?;
            *slot = Some(text);
        }
        seen.validate(limits.max_rooms)
    }

    pub fn event(&self) -> &str {
        &self.event
    }

    pub fn args(&self) -> &[Value] {
        &self.args
    }

    pub fn rooms(&self) -> &[String] {
        &self.rooms
    }

    pub fn except(&self) -> &[String] {
        &self.except
    }

    pub fn nsp(&self) -> &str {
        &self.nsp
    }

    pub fn volatile(&self) -> bool {
        self.volatile
    }

    /// `None` when the producer did not say, so the servers keep their own default.
    pub fn compress(&self) -> Option<bool> {
        self.compress
    }
}

/// The known fields of one entry, as text, while they are being collected.
#[derive(Default)]
struct Fields<'a> {
    event: Option<&'a str>,
    data: Option<&'a str>,
    args: Option<&'a str>,
    room: Option<&'a str>,
    rooms: Option<&'a str>,
    except: Option<&'a str>,
    nsp: Option<&'a str>,
    volatile: Option<&'a str>,
    compress: Option<&'a str>,
}

impl<'a> Fields<'a> {
    fn slot(&mut self, name: &str) -> Option<&mut Option<&'a str>> {
        Some(match name {
            "event" => &mut self.event,
            "data" => &mut self.data,
            "args" => &mut self.args,
            "room" => &mut self.room,
            "rooms" => &mut self.rooms,
            "except" => &mut self.except,
            "nsp" => &mut self.nsp,
            "volatile" => &mut self.volatile,
            "compress" => &mut self.compress,
            _ => return None,
        })
    }

    fn validate(self, max_rooms: usize) -> Result<Entry, Malformed> {
        let event = match self.event {
            None => return Err(Malformed::MissingEvent),
            Some("") => return Err(Malformed::EmptyEvent),
            Some(name) if RESERVED_EVENTS.contains(&name) => {
                return Err(Malformed::ReservedEvent(name.to_owned()))
            }
            Some(name) => name.to_owned(),
        };
        let args = match (self.data, self.args) {
            (Some(_), Some(_)) => return Err(Malformed::DataAndArgs),
            (Some(data), None) => vec![json("data", data)?],
            (None, Some(args)) => match json("args", args)? {
                Value::Array(args) => args,
                _ => {
                    return Err(Malformed::WrongShape {
                        field: "args",
                        expected: "a JSON array of arguments",
                    })
                }
            },
            (None, None) => Vec::new(),
        };
        let rooms = match (self.room, self.rooms) {
            (Some(_), Some(_)) => return Err(Malformed::RoomAndRooms),
            (Some(""), None) => return Err(Malformed::EmptyRoom("room")),
            (Some(room), None) => vec![room.to_owned()],
            (None, Some(rooms)) => room_list("rooms", rooms, max_rooms)?,
            (None, None) => Vec::new(),
        };
        let except = match self.except {
            Some(except) => room_list("except", except, max_rooms)?,
            None => Vec::new(),
        };
        let nsp = match self.nsp {
            None => "/".to_owned(),
            Some(nsp) if nsp.starts_with('/') => namespace(nsp)?,
            Some(nsp) => return Err(Malformed::BadNamespace(nsp.to_owned())),
        };
        Ok(Entry {
            event,
            args,
            rooms,
            except,
            nsp,
            volatile: flag("volatile", self.volatile)?.unwrap_or(false),
            compress: flag("compress", self.compress)?,
        })
    }
}

/// Characters that change what a channel name means to the adapter: `#` ends the namespace part of
/// `<key>#<nsp>#<room>#`, so the channel of `/a#x` is read by the servers of `/a` as room `x` of
/// their own namespace (and dropped); `[` and `\` are glob syntax in each server's own
/// `<key>#<nsp>#*` pattern, so a server of `/a[1]` or `/a\b` never matches its own namespace's
/// channel. Either way Redis would count servers and the entry would reach no client.
const CHANNEL_CHARACTERS: [(char, &str); 3] = [
    (
        '#',
        "separates the namespace from the room in the adapter's channel names",
    ),
    (
        '[',
        "is glob syntax in the servers' channel pattern, so no server would receive it",
    ),
    (
        '\\',
        "is glob syntax in the servers' channel pattern, so no server would receive it",
    ),
];

fn namespace(nsp: &str) -> Result<String, Malformed> {
    for (character, why) in CHANNEL_CHARACTERS {
        if nsp.contains(character) {
            return Err(Malformed::NamespaceCharacter {
                nsp: nsp.to_owned(),
                character,
                why,
            });
        }
    }
    Ok(nsp.to_owned())
}

fn json(field: &'static str, text: &str) -> Result<Value, Malformed> {
    let value: Value = serde_json::from_str(text).map_err(|e| Malformed::InvalidJson {
        field,
        error: json_error(text, &e),
    })?;
    check_numbers(field, &value)?;
    Ok(value)
}

/// The parser's error in the producer's terms. serde_json reports a lone UTF-16 surrogate escape
/// (`"\ud800"`, half of an emoji's pair) as "unexpected end of hex escape", which sends people
/// looking for a typo in the hex digits.
fn json_error(text: &str, e: &serde_json::Error) -> String {
    let message = e.to_string();
    if !message.contains("hex escape") {
        return message;
    }
    match lone_surrogate(text) {
        Some(escape) => format!(
            "`{escape}` is half of a UTF-16 surrogate pair, not a character (line {} column {}): send the character itself, or both halves of the pair",
            e.line(),
            e.column()
        ),
        None => message,
    }
}

/// The first `\uD800`-`\uDFFF` escape in `text` that is not half of a proper pair.
fn lone_surrogate(text: &str) -> Option<String> {
    let escape_at = |i: usize| -> Option<u16> {
        let hex = text.get(i + 2..i + 6)?;
        (text.get(i..i + 2)? == "\\u")
            .then(|| u16::from_str_radix(hex, 16).ok())
            .flatten()
    };
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(unit) = escape_at(i) {
                match unit {
                    0xD800..=0xDBFF => match escape_at(i + 6) {
                        Some(0xDC00..=0xDFFF) => i += 12,
                        _ => return Some(text[i..i + 6].to_owned()),
                    },
                    0xDC00..=0xDFFF => return Some(text[i..i + 6].to_owned()),
                    _ => i += 6,
                }
                continue;
            }
            i += 2;
            continue;
        }
        i += 1;
    }
    None
}

/// Refuses numbers that would arrive in JavaScript as a different number than the producer wrote.
fn check_numbers(field: &'static str, value: &Value) -> Result<(), Malformed> {
    match value {
        Value::Number(number) => {
            let literal = number.to_string();
            let is_integer_literal = !literal.contains(['.', 'e', 'E']);
            if is_integer_literal {
                let safe = number
                    .as_i64()
                    .is_some_and(|n| n.unsigned_abs() <= MAX_SAFE_MAGNITUDE);
                if !safe {
                    return Err(Malformed::UnsafeInteger { field, literal });
                }
            } else if !number.as_f64().is_some_and(f64::is_finite) {
                return Err(Malformed::NumberOutOfRange { field, literal });
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|v| check_numbers(field, v)),
        Value::Object(map) => map.values().try_for_each(|v| check_numbers(field, v)),
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
    }
}

/// A JSON array of non-empty room names, without repeats (the emitter keeps rooms in a `Set`).
fn room_list(field: &'static str, text: &str, limit: usize) -> Result<Vec<String>, Malformed> {
    let shape = Malformed::WrongShape {
        field,
        expected: "a JSON array of strings",
    };
    let Value::Array(items) = json(field, text)? else {
        return Err(shape);
    };
    if items.len() > limit {
        return Err(Malformed::TooManyRooms {
            field,
            rooms: items.len(),
            limit,
        });
    }
    let mut rooms: Vec<String> = Vec::with_capacity(items.len());
    // Repeats dropped in linear time: 80,000 rooms must not take seconds.
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    for item in items {
        let Value::String(room) = item else {
            return Err(shape);
        };
        if room.is_empty() {
            return Err(Malformed::EmptyRoom(field));
        }
        if seen.insert(room.clone()) {
            rooms.push(room);
        }
    }
    Ok(rooms)
}

fn flag(field: &'static str, text: Option<&str>) -> Result<Option<bool>, Malformed> {
    match text {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(Malformed::BadFlag {
            field,
            value: other.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(pairs: &[(&str, &str)]) -> Result<Entry, Malformed> {
        let fields: Vec<_> = pairs
            .iter()
            .map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        Entry::parse(&fields)
    }

    #[test]
    fn minimal_entry_broadcasts_to_the_root_namespace() {
        let entry = parse(&[("event", "chat")]).unwrap();
        assert_eq!(entry.event(), "chat");
        assert!(entry.args().is_empty());
        assert!(entry.rooms().is_empty());
        assert_eq!(entry.nsp(), "/");
        assert!(!entry.volatile());
        assert_eq!(entry.compress(), None);
    }

    #[test]
    fn full_entry_keeps_every_field() {
        let entry = parse(&[
            ("event", "chat"),
            ("args", r#"[1, "two", {"three": 3.5}]"#),
            ("rooms", r#"["a", "b", "a"]"#),
            ("except", r#"["c"]"#),
            ("nsp", "/admin"),
            ("volatile", "true"),
            ("compress", "false"),
            ("x-trace-id", "abc"),
        ])
        .unwrap();
        assert_eq!(
            entry.args(),
            &[json!(1), json!("two"), json!({"three": 3.5})]
        );
        assert_eq!(entry.rooms(), &["a", "b"]);
        assert_eq!(entry.except(), &["c"]);
        assert_eq!(entry.nsp(), "/admin");
        assert!(entry.volatile());
        assert_eq!(entry.compress(), Some(false));
    }

    #[test]
    fn data_is_one_argument_even_when_it_is_an_array() {
        let entry = parse(&[("event", "e"), ("data", "[1,2]"), ("room", "r")]).unwrap();
        assert_eq!(entry.args(), &[json!([1, 2])]);
        assert_eq!(entry.rooms(), &["r"]);
    }

    #[test]
    fn every_rule_names_its_problem() {
        let cases: &[(&[(&str, &str)], Malformed)] = &[
            (&[("data", "1")], Malformed::MissingEvent),
            (&[("event", "")], Malformed::EmptyEvent),
            (
                &[("event", "connect")],
                Malformed::ReservedEvent("connect".into()),
            ),
            (
                &[("event", "e"), ("rom", "r")],
                Malformed::UnknownField("rom".into()),
            ),
            (
                &[("event", "e"), ("event", "f")],
                Malformed::DuplicateField("event".into()),
            ),
            (
                &[("event", "e"), ("data", "1"), ("args", "[]")],
                Malformed::DataAndArgs,
            ),
            (
                &[("event", "e"), ("room", "a"), ("rooms", "[]")],
                Malformed::RoomAndRooms,
            ),
            (
                &[("event", "e"), ("room", "")],
                Malformed::EmptyRoom("room"),
            ),
            (
                &[("event", "e"), ("rooms", r#"["a",""]"#)],
                Malformed::EmptyRoom("rooms"),
            ),
            (
                &[("event", "e"), ("nsp", "admin")],
                Malformed::BadNamespace("admin".into()),
            ),
            (
                &[("event", "e"), ("nsp", "/a#x")],
                Malformed::NamespaceCharacter {
                    nsp: "/a#x".into(),
                    character: '#',
                    why: CHANNEL_CHARACTERS[0].1,
                },
            ),
            (
                &[("event", "e"), ("nsp", "/a[1]")],
                Malformed::NamespaceCharacter {
                    nsp: "/a[1]".into(),
                    character: '[',
                    why: CHANNEL_CHARACTERS[1].1,
                },
            ),
            (
                &[("event", "e"), ("args", "{}")],
                Malformed::WrongShape {
                    field: "args",
                    expected: "a JSON array of arguments",
                },
            ),
            (
                &[("event", "e"), ("rooms", "[1]")],
                Malformed::WrongShape {
                    field: "rooms",
                    expected: "a JSON array of strings",
                },
            ),
            (
                &[("event", "e"), ("except", r#""a""#)],
                Malformed::WrongShape {
                    field: "except",
                    expected: "a JSON array of strings",
                },
            ),
            (
                &[("event", "e"), ("volatile", "yes")],
                Malformed::BadFlag {
                    field: "volatile",
                    value: "yes".into(),
                },
            ),
            (
                &[("event", "e"), ("data", "9007199254740993")],
                Malformed::UnsafeInteger {
                    field: "data",
                    literal: "9007199254740993".into(),
                },
            ),
            (
                &[
                    ("event", "e"),
                    ("args", r#"[{"n": -100000000000000000000}]"#),
                ],
                Malformed::UnsafeInteger {
                    field: "args",
                    literal: "-100000000000000000000".into(),
                },
            ),
            (
                &[("event", "e"), ("data", "1e400")],
                Malformed::NumberOutOfRange {
                    field: "data",
                    literal: "1e+400".into(),
                },
            ),
        ];
        for (fields, expected) in cases {
            assert_eq!(parse(fields).as_ref(), Err(expected), "{fields:?}");
        }
    }

    #[test]
    fn invalid_json_reports_the_parser_position() {
        let err = parse(&[("event", "e"), ("data", "{text: 1}")]).unwrap_err();
        assert!(
            matches!(err, Malformed::InvalidJson { field: "data", .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("line 1 column 2"), "{err}");
    }

    #[test]
    fn a_lone_surrogate_is_named_as_such() {
        for (rooms, escape) in [
            (r#"["\ud800"]"#, r"\ud800"),
            (r#"["a", "\udc00"]"#, r"\udc00"),
            (r#"["\\ud800", "\ud83dx"]"#, r"\ud83d"),
        ] {
            let err = parse(&[("event", "e"), ("rooms", rooms)]).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(&format!("`{escape}` is half of a UTF-16 surrogate pair")),
                "{rooms}: {text}"
            );
        }
        let pair = parse(&[("event", "e"), ("rooms", r#"["\ud83d\ude00"]"#)]).unwrap();
        assert_eq!(pair.rooms(), ["\u{1f600}"]);
    }

    #[test]
    fn integers_up_to_two_to_the_53_are_accepted() {
        let entry = parse(&[
            ("event", "e"),
            ("args", "[9007199254740992, -9007199254740992, 1e20]"),
        ]);
        assert!(entry.is_ok(), "{entry:?}");
    }

    #[test]
    fn non_utf8_is_refused_with_the_field_named() {
        let fields = vec![(b"event".to_vec(), b"\xff".to_vec())];
        assert_eq!(
            Entry::parse(&fields),
            Err(Malformed::ValueNotUtf8("event".into()))
        );
        let fields = vec![(b"ev\xffent".to_vec(), b"x".to_vec())];
        assert!(matches!(
            Entry::parse(&fields),
            Err(Malformed::FieldNameNotUtf8(_))
        ));
    }

    #[test]
    fn entry_ids_round_trip() {
        let id: EntryId = "1700000000000-7".parse().unwrap();
        assert_eq!(
            id,
            EntryId {
                ms: 1_700_000_000_000,
                seq: 7
            }
        );
        assert_eq!(id.to_string(), "1700000000000-7");
        assert!("17".parse::<EntryId>().is_err());
        assert!("a-1".parse::<EntryId>().is_err());
    }
}
