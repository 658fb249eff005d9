//! Each kind of malformed entry, end to end through a real Redis: it is dead-lettered at once with
//! its reason and its original fields, never published, and the entries behind it keep flowing.

use std::time::Duration;

use crate::common::*;

const SECOND: Duration = Duration::from_secs(1);

/// XADDs `fields` then a valid entry, and checks that only the valid one was published and the
/// first was dead-lettered with an error containing `error`.
fn assert_dead_lettered(fields: &[(&str, &str)], error: &str) {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let _relay = Relay::start(&redis, "relay-1", &[]);
    let mut con = redis.connection();
    let bad = xadd(&mut con, fields);
    xadd(&mut con, &[("event", "after")]);
    let messages = sub.wait_count(1, 10 * SECOND);
    wait_until(5 * SECOND, "the dead letter is written", || {
        !dead_letters(&mut con).is_empty()
    });
    assert_eq!(sub.flush(&redis), 1, "only the valid entry is published");
    assert_eq!(messages[0].event(), "after");

    let dead = dead_letters(&mut con);
    assert_eq!(dead.len(), 1);
    let dead = &dead[0].1;
    assert_eq!(field(dead, "x-dead-reason"), Some("malformed"));
    let text = field(dead, "x-dead-error").unwrap();
    assert!(text.contains(error), "{text:?} should contain {error:?}");
    assert_eq!(field(dead, "x-dead-id"), Some(bad.as_str()));
    assert_eq!(field(dead, "x-dead-deliveries"), Some("1"));
    let original: Vec<(String, String)> = fields
        .iter()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        &dead[..original.len()],
        &original[..],
        "original fields kept, in order"
    );
    wait_until(5 * SECOND, "nothing left pending", || {
        pending(&mut con).is_empty()
    });
}

macro_rules! malformed {
    ($($name:ident: $fields:expr => $error:expr;)*) => {$(
        #[test]
        fn $name() {
            assert_dead_lettered($fields, $error);
        }
    )*};
}

malformed! {
    missing_event: &[("data", "1")] => "the `event` field is missing";
    empty_event: &[("event", "")] => "the `event` field is empty";
    reserved_connect: &[("event", "connect")] => "event `connect` is reserved";
    reserved_disconnect: &[("event", "disconnect")] => "event `disconnect` is reserved";
    reserved_new_listener: &[("event", "newListener")] => "event `newListener` is reserved";
    data_not_json: &[("event", "e"), ("data", "hello")] => "`data` is not valid JSON";
    args_not_json: &[("event", "e"), ("args", "[1,")] => "`args` is not valid JSON";
    args_not_array: &[("event", "e"), ("args", r#"{"a":1}"#)] => "`args` must be a JSON array";
    rooms_not_names: &[("event", "e"), ("rooms", "[true]")] => "`rooms` must be a JSON array of room names";
    except_not_array: &[("event", "e"), ("except", "vip")] => "`except` is not valid JSON";
    data_and_args: &[("event", "e"), ("data", "1"), ("args", "[2]")] => "`data` and `args` cannot both be present";
    room_and_rooms: &[("event", "e"), ("room", "a"), ("rooms", r#"["b"]"#)] => "`room` and `rooms` cannot both be present";
    namespace_normalised_then_checked: &[("event", "e"), ("nsp", "a#b")] => "namespace `/a#b` contains `#`";
    namespace_hash_first: &[("event", "e"), ("nsp", "/#b")] => "namespace `/#b` contains `#`";
    namespace_hash_inside: &[("event", "e"), ("nsp", "/a#x")] => "namespace `/a#x` contains `#`";
    namespace_hash_alone: &[("event", "e"), ("nsp", "/#")] => "namespace `/#` contains `#`";
    namespace_glob_bracket: &[("event", "e"), ("nsp", "/a[1]")] => "contains `[`, which is glob syntax";
    namespace_glob_backslash: &[("event", "e"), ("nsp", "/a\\b")] => "contains `\\`, which is glob syntax";
    integer_beyond_2_53: &[("event", "e"), ("data", r#"{"id": 9007199254740993}"#)] => "outside ±2^53";
    unknown_field_typo: &[("event", "e"), ("rom", "lobby")] => "unknown field `rom`";
    bad_flag: &[("event", "e"), ("volatile", "yes")] => "`volatile` must be `true` or `false`";
    ack_not_a_duration: &[("event", "e"), ("ack", "soon")] => "`ack` must be a duration between 1ms and 10m";
    ack_too_long: &[("event", "e"), ("ack", "1h")] => "`ack` must be a duration between 1ms and 10m, such as \"10s\", or `none`, not \"1h\"";
    ack_and_volatile: &[("event", "e"), ("ack", "5s"), ("volatile", "true")] => "`ack` and `volatile` cannot both be present";
    ack_on_a_join: &[("join", r#"["g"]"#), ("all", "true"), ("ack", "5s")] => "`ack` does not apply to `join` entries";
    ttl_too_long: &[("event", "e"), ("ttl", "8days")] => "`ttl` must be a duration between 1ms and 7days, such as \"30s\", not \"8days\"";
    append_id_not_a_flag: &[("event", "e"), ("append_id", "1")] => "`append_id` must be `true` or `false`";
    duplicate_field: &[("event", "e"), ("event", "f")] => "field `event` appears more than once";
    json_too_deep: &[("event", "e"), ("data", &"[".repeat(257))] => "`data` is nested deeper than limits.max_json_depth = 256 levels";
    disconnect_without_selection: &[("disconnect", "true")] => "a `disconnect` entry needs `room` or `rooms`, or `all` = `true`";
    join_without_selection: &[("join", r#"["g"]"#), ("except", r#"["a"]"#)] => "a `join` entry needs `room` or `rooms`";
    leave_rooms_not_json: &[("leave", "game:7"), ("room", "u")] => "`leave` is not valid JSON";
    two_operations: &[("event", "e"), ("disconnect", "true"), ("all", "true")] => "`event` and `disconnect` cannot both be present";
    data_on_a_join: &[("join", r#"["g"]"#), ("all", "true"), ("data", "1")] => "`data` does not apply to `join` entries";
    rooms_on_a_server_emit: &[("server_emit", "e"), ("room", "r")] => "`room` does not apply to `server_emit` entries";
    reserved_server_event: &[("server_emit", "connection")] => "`server_emit` event `connection` is reserved";
    binary_not_base64: &[("event", "e"), ("data", r#"{"$binary":"%%"}"#)] => "not base64 bytes";
    too_many_binaries: &[("event", "e"), ("args", &format!("[{}]", [r#"{"$binary":""}"#; 11].join(",")))] => "11 binary values, more than 10";
}

/// Past `limits.max_fields` (64) and `limits.max_rooms` (10,000) an entry is malformed, the limit
/// named.
#[test]
fn too_many_fields_or_rooms() {
    let names: Vec<String> = (0..70).map(|i| format!("x-meta-{i}")).collect();
    let mut fields: Vec<(&str, &str)> = vec![("event", "e")];
    fields.extend(names.iter().map(|n| (n.as_str(), "v")));
    assert_dead_lettered(
        &fields,
        "the entry has 71 fields, more than limits.max_fields = 64",
    );

    let rooms: Vec<String> = (0..10_001).map(|i| format!("r{i}")).collect();
    let rooms = serde_json::to_string(&rooms).unwrap();
    assert_dead_lettered(
        &[("event", "e"), ("rooms", &rooms)],
        "`rooms` names 10001 rooms, more than limits.max_rooms = 10000",
    );
}
