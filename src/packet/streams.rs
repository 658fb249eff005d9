//! The streams adapter's entries (`@socket.io/redis-streams-adapter` 0.3): what the relay appends
//! to the servers' stream, and how a monitor reads an entry back as the servers would.
//!
//! An entry is `uid <uid> nsp <nsp> type <n> data <data>`, fields in that order, `type` the
//! decimal `ClusterMessage` type (3 broadcast, 4 join, 5 leave, 6 disconnect, 9 server-side emit)
//! and `data` the same `data` the sharded adapter's servers send each other: JSON, or, when it
//! carries bytes, base64 of its MessagePack (docs/08-internals/wire-format.md, "The streams
//! adapter"). The servers read with XREAD from the moment they start and appending trims the
//! stream to about `maxLen` entries, as their own appends do.
//!
//! A [`Packet`] for this adapter holds the servers' stream as its channel, and as its payload the
//! arguments of the XADD after the key (trimming, `*`, the fields), as a MessagePack array of
//! strings: the delivery script unpacks them into its XADD (`cmsgpack.unpack`), and
//! [`Target::send`] into the relay's own.

use base64::Engine;
use serde_json::Value;

use super::decode::{json, msgpack, sharded};
use super::{array_len, str, Decoded, Packet, Target, Unreadable};

/// The servers' default `streamName`.
pub const STREAM: &str = "socket.io";
/// The servers' default `maxLen`: every append trims the stream to about this many entries.
pub const MAX_LEN: u64 = 10_000;
/// The most streams `target.stream_count` may name: each is one more XREAD connection per server.
pub const MAX_STREAM_COUNT: u32 = 1024;

/// The servers' options that decide where the relay appends, and how their servers are counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamsOptions {
    /// `streamName`.
    pub name: String,
    /// `streamCount`, 1 to [`MAX_STREAM_COUNT`].
    pub count: u32,
    /// `maxLen`: about how many entries each append leaves in the stream (`MAXLEN ~`; 0: not
    /// trimmed).
    pub max_len: u64,
    /// `useShardedPubSub`: the servers SSUBSCRIBE their namespace's channel, so they are counted
    /// with SHARDNUMSUB.
    pub sharded_pubsub: bool,
}

impl Default for StreamsOptions {
    fn default() -> Self {
        StreamsOptions {
            name: STREAM.to_owned(),
            count: 1,
            max_len: MAX_LEN,
            sharded_pubsub: false,
        }
    }
}

impl StreamsOptions {
    /// The stream `nsp`'s entries go to: `streamName`, or with `streamCount` > 1 the servers' own
    /// pick, `<streamName>-<hashCode(nsp) % streamCount>` (`computeStreamName`, a Java-style
    /// string hash). Where that is negative, JavaScript's `%` keeps the sign and the servers' own
    /// appends go to `<streamName>--<i>`, which no server reads; the relay takes the remainder's
    /// positive counterpart, a stream they read (they take any namespace's entries from any of
    /// their streams).
    pub fn stream_of(&self, nsp: &str) -> String {
        if self.count <= 1 {
            return self.name.clone();
        }
        let hash = nsp.encode_utf16().fold(0i32, |hash, unit| {
            hash.wrapping_mul(31).wrapping_add(i32::from(unit))
        });
        format!("{}-{}", self.name, hash.rem_euclid(self.count as i32))
    }

    /// Every stream the servers read.
    pub fn names(&self) -> Vec<String> {
        if self.count <= 1 {
            return vec![self.name.clone()];
        }
        (0..self.count)
            .map(|i| format!("{}-{i}", self.name))
            .collect()
    }
}

/// The packet that appends `data`, of type `kind`, for `nsp` to `target`'s stream.
pub(super) fn entry(target: &Target, nsp: &str, kind: u8, data: &[u8], binary: bool) -> Packet {
    let data = if binary {
        base64::engine::general_purpose::STANDARD.encode(data)
    } else {
        String::from_utf8(data.to_vec()).expect("serde_json writes UTF-8")
    };
    let trim = target.streams.max_len > 0;
    let mut out = Vec::with_capacity(data.len() + nsp.len() + 64);
    array_len(&mut out, if trim { 12 } else { 9 });
    if trim {
        str(&mut out, "MAXLEN");
        str(&mut out, "~");
        str(&mut out, &target.streams.max_len.to_string());
    }
    for item in [
        "*",
        "uid",
        &target.uid,
        "nsp",
        nsp,
        "type",
        &kind.to_string(),
    ] {
        str(&mut out, item);
    }
    str(&mut out, "data");
    str(&mut out, &data);
    Packet {
        channel: target.streams.stream_of(nsp),
        payload: out,
    }
}

/// The XADD arguments after the key that a packet's payload holds (see the module's doc).
pub(super) fn xadd_args(payload: &[u8]) -> Vec<Vec<u8>> {
    let mut reader = payload;
    match rmpv::decode::read_value(&mut reader) {
        Ok(rmpv::Value::Array(items)) => items
            .into_iter()
            .filter_map(|item| match item {
                rmpv::Value::String(s) => Some(s.into_bytes()),
                rmpv::Value::Binary(bytes) => Some(bytes),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The fields of an entry of the servers' stream (`xadd_args` of a packet, or what XREAD gave),
/// as the servers read it: `Err` says why they could not.
pub fn decode_entry(fields: &[(Vec<u8>, Vec<u8>)]) -> Result<Decoded, Unreadable> {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(key, _)| key == name.as_bytes())
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
    };
    let nsp = field("nsp").filter(|nsp| !nsp.is_empty());
    let Some(nsp) = nsp else {
        return Err(Unreadable::NoNsp);
    };
    let kind = field("type").unwrap_or_default();
    let Ok(kind) = kind.parse::<u8>() else {
        return Err(Unreadable::TypeNotANumber(kind));
    };
    let Some(data) = field("data") else {
        return Err(Unreadable::NoData);
    };
    // As the servers do: JSON when it starts with `{`, else base64 of MessagePack.
    let data = if data.starts_with('{') {
        json(data.as_bytes())?
    } else {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.as_bytes())
            .map_err(|e| Unreadable::NotMsgpack(format!("not base64: {e}")))?;
        msgpack(&bytes)?
    };
    let uid = field("uid").map_or(Value::Null, Value::String);
    sharded(&serde_json::json!({"uid": uid, "nsp": nsp, "type": kind, "data": data}))
}

/// The payload of a packet that appends an entry with `fields` (as a monitor read them): what
/// [`super::decode`] reads.
pub fn stream_payload(fields: impl ExactSizeIterator<Item = (Vec<u8>, Vec<u8>)>) -> Vec<u8> {
    let mut out = Vec::new();
    array_len(&mut out, 1 + 2 * fields.len());
    str(&mut out, "*");
    for (name, value) in fields {
        for item in [name, value] {
            rmp::encode::write_bin(&mut out, &item).expect("writing to a Vec cannot fail");
        }
    }
    out
}

/// [`decode_entry`] of a packet's payload.
pub(super) fn decode_payload(payload: &[u8]) -> Result<Decoded, Unreadable> {
    let args = xadd_args(payload);
    let after_id = args
        .iter()
        .position(|arg| arg == b"*")
        .map_or(args.len(), |star| star + 1);
    let fields: Vec<(Vec<u8>, Vec<u8>)> = args[after_id..]
        .chunks_exact(2)
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .collect();
    decode_entry(&fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Entry;
    use crate::packet::Adapter;

    fn streams() -> Target {
        Target {
            adapter: Adapter::Streams,
            ..Target::classic("socket.io", "emitter")
        }
    }

    /// The servers' own pick (`hashCode(nsp) % streamCount`, values from the adapter's
    /// `hashCode` run under Node), where it is a stream they read; `/notifications` hashes to
    /// -1014064871, whose remainder the servers keep negative (`socket.io--3`, read by none).
    #[test]
    fn each_namespace_goes_to_the_stream_its_servers_pick() {
        let four = StreamsOptions {
            count: 4,
            ..StreamsOptions::default()
        };
        for (nsp, stream) in [
            ("/", "socket.io-3"),
            ("/admin", "socket.io-0"),
            ("/chat", "socket.io-3"),
            ("/notifications", "socket.io-1"),
        ] {
            assert_eq!(four.stream_of(nsp), stream, "{nsp}");
        }
        assert_eq!(
            four.names(),
            ["socket.io-0", "socket.io-1", "socket.io-2", "socket.io-3"]
        );
        let one = StreamsOptions::default();
        assert_eq!(one.stream_of("/notifications"), "socket.io");
        assert_eq!(one.names(), ["socket.io"]);
        // UTF-16 code units, as JavaScript's charCodeAt: an astral character is two.
        let many = StreamsOptions {
            count: 1024,
            ..StreamsOptions::default()
        };
        // `hashCode("/🙂")` is 1818132 under Node.
        assert_eq!(many.stream_of("/🙂"), "socket.io-532");
    }

    fn encode(fields: &[(&str, &str)]) -> Packet {
        streams().encode(&Entry::of(fields)).unwrap()
    }

    fn args(packet: &Packet) -> Vec<String> {
        xadd_args(&packet.payload)
            .into_iter()
            .map(|arg| String::from_utf8(arg).unwrap())
            .collect()
    }

    /// The layout of wire-format.md's "External broadcast that works" example.
    #[test]
    fn an_emit_is_appended_as_the_servers_write_it() {
        let packet = encode(&[("event", "hello"), ("data", "\"world\"")]);
        assert_eq!(packet.channel, "socket.io");
        assert_eq!(
            args(&packet),
            [
                "MAXLEN",
                "~",
                "10000",
                "*",
                "uid",
                "emitter",
                "nsp",
                "/",
                "type",
                "3",
                "data",
                r#"{"packet":{"type":2,"data":["hello","world"],"nsp":"/"},"opts":{"rooms":[],"flags":{},"except":[]}}"#
            ]
        );
    }

    /// Bytes go as base64 of MessagePack, which the servers decode when `data` does not start
    /// with `{`; untrimmed when `maxLen` is 0.
    #[test]
    fn bytes_go_as_base64_of_messagepack() {
        let mut target = streams();
        target.streams.max_len = 0;
        let entry = Entry::of(&[("event", "file"), ("data", r#"{"$binary":"3q2+7w=="}"#)]);
        let packet = target.encode(&entry).unwrap();
        let args = args(&packet);
        assert_eq!(&args[..7], ["*", "uid", "emitter", "nsp", "/", "type", "3"]);
        assert!(!args[8].starts_with('{'));
        let decoded = decode_payload(&packet.payload).unwrap();
        assert_eq!(decoded.args, [serde_json::json!({"$binary": "deadbeef"})]);
    }

    #[test]
    fn the_other_operations_carry_their_cluster_types() {
        for (fields, kind) in [
            (&[("join", r#"["a"]"#), ("room", "r")][..], "4"),
            (&[("leave", r#"["a"]"#), ("room", "r")][..], "5"),
            (&[("disconnect", "true"), ("room", "r")][..], "6"),
            (&[("server_emit", "sse")][..], "9"),
        ] {
            let packet = encode(fields);
            assert_eq!(args(&packet)[9], kind, "{fields:?}");
            decode_payload(&packet.payload).unwrap();
        }
    }

    #[test]
    fn entries_servers_cannot_read_say_why() {
        let field = |k: &str, v: &str| (k.as_bytes().to_vec(), v.as_bytes().to_vec());
        let no_nsp = [field("type", "3"), field("data", "{}")];
        assert_eq!(decode_entry(&no_nsp), Err(Unreadable::NoNsp));
        let no_packet = [field("nsp", "/"), field("type", "3"), field("data", "{}")];
        assert_eq!(
            decode_entry(&no_packet),
            Err(Unreadable::DataPacketNotAnObject)
        );
        assert!(decode_payload(b"\xc1").is_err(), "not MessagePack");
    }
}
