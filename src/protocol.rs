//! What the relay and its Lua scripts (`lua/*.lua`) must spell alike, defined once, here: the
//! dead-letter reasons ([`ReasonCode`]) and fields ([`DeadField`]), the delivery script's
//! operations ([`OpKind`], with their number of arguments) and flags ([`Flag`]), the outcomes it returns ([`OutcomeCode`],
//! [`OUTCOME_BASE`]), and what the lease and browse scripts are asked to do ([`LeaseOp`],
//! [`Order`]).
//!
//! Rust uses these enums; the scripts get the same values as Lua constants, `<PREFIX>_<VARIANT>`
//! (`REASON_REFUSED`, `OP_NEW`, `OUTCOME_NOT_OWNED`, ...), from a preamble generated from the enums
//! and put in front of every script when it is loaded ([`Lua::text`]). So no script spells a code of
//! its own: the tests below fail when a script uses a constant the preamble does not define,
//! declares one itself, or spells a code as a literal, and when a code is used by neither side (the
//! integration test `delivery_script::every_script_compiles_with_the_protocols_constants` loads
//! every script, preamble included, into Redis).

use std::fmt::Write as _;

use redis::Script;

/// Each result of the delivery script is `value * OUTCOME_BASE + code` (see [`OutcomeCode`]).
pub const OUTCOME_BASE: u64 = 16;

/// Lua cannot pass many more than 8000 values to one `redis.call`: a dead letter with more fields
/// than fit keeps them packed (MessagePack) in one field instead (`lua/deliver.lua`), and a replay
/// of one leaves it in place (`lua/replay.lua`).
const MAX_XADD_VALUES: u64 = 7800;

/// A value as a Lua literal.
trait Literal {
    fn literal(&self) -> String;
}

impl Literal for &str {
    fn literal(&self) -> String {
        format!("'{self}'")
    }
}

impl Literal for u64 {
    fn literal(&self) -> String {
        self.to_string()
    }
}

/// Declares a fieldless enum whose variants each have a value on the wire (in Redis, in a script's
/// arguments or reply) and a constant in the scripts' preamble, `<prefix>_<VARIANT IN CAPITALS>`.
macro_rules! codes {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $wire:ty, in Lua $prefix:literal {
            $($(#[$vmeta:meta])* $variant:ident = $value:expr,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every one, in order.
            pub const ALL: &[$name] = &[$($name::$variant),+];

            /// What Redis and the scripts see.
            pub const fn wire(self) -> $wire {
                match self {
                    $($name::$variant => $value,)+
                }
            }

            /// Its constant in the scripts' preamble.
            fn lua_name(self) -> String {
                let variant = match self {
                    $($name::$variant => stringify!($variant),)+
                };
                lua_name($prefix, variant)
            }

            /// Its constant in the scripts' preamble, with its value.
            fn constants() -> impl Iterator<Item = (String, String)> {
                Self::ALL.iter().map(|code| (code.lua_name(), code.wire().literal()))
            }
        }
    };
}

/// `MaxDeliveries` under `REASON`: `REASON_MAX_DELIVERIES`.
fn lua_name(prefix: &str, variant: &str) -> String {
    let mut name = String::from(prefix);
    for c in variant.chars() {
        if c.is_ascii_uppercase() {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

codes! {
    /// Why an entry was dead-lettered, as its `x-dead-reason` says, the metrics label it and the
    /// CLI and the console filter by it. [`crate::dead_letter::Reason`] gives the reasons the relay
    /// decides on; the scripts write the others.
    pub enum ReasonCode: &'static str, in Lua "REASON" {
        /// The entry breaks the producers' contract.
        Malformed = "malformed",
        /// Delivered more often than `delivery.max_deliveries`.
        MaxDeliveries = "max_deliveries",
        /// Older than `delivery.max_age`.
        Expired = "expired",
        /// Redis refused every batch holding it (`lua/isolate.lua`).
        Refused = "refused",
        /// No client acknowledged it before `acks.max_age`.
        Unacknowledged = "unacknowledged",
        /// Valid, but the servers' stack (`target.adapter`) has no message for it.
        Unsupported = "unsupported",
    }
}

impl ReasonCode {
    /// The reasons, for a help text: `malformed, max_deliveries, ...`.
    pub fn listed() -> String {
        let names: Vec<&str> = Self::ALL.iter().map(|code| code.wire()).collect();
        names.join(", ")
    }
}

impl serde::Serialize for ReasonCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.wire())
    }
}

impl prometheus_client::encoding::EncodeLabelValue for ReasonCode {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.wire())
    }
}

codes! {
    /// The fields the relay adds to a dead letter, after the entry's own (those of an earlier death
    /// replaced). Producers' `x-` fields are ignored by validation, so a dead letter's fields can be
    /// XADDed back to the source stream unchanged.
    pub enum DeadField: &'static str, in Lua "DEAD" {
        /// The entry's fields, packed, when there are more than one Redis call from a script can
        /// carry, or when Redis refused the entry itself: a MessagePack array of alternating names
        /// and values.
        Packed = "x-dead-fields",
        /// Its [`ReasonCode`].
        Reason = "x-dead-reason",
        /// What an operator reads to understand the reason.
        Error = "x-dead-error",
        /// The stream the entry came from.
        Stream = "x-dead-stream",
        /// Its ID there.
        Id = "x-dead-id",
        /// Its delivery count.
        Deliveries = "x-dead-deliveries",
    }
}

impl DeadField {
    /// What every one starts with.
    pub const PREFIX: &str = "x-dead-";
}

codes! {
    /// What the delivery script does to one entry: the first argument of each of its operations
    /// (see `lua/deliver.lua` for the arguments that follow).
    pub enum OpKind: &'static str, in Lua "OP" {
        /// Publish a new entry: first read, delivery count 1, no flags.
        New = "N",
        /// Publish any other entry.
        Publish = "P",
        /// Dead-letter.
        DeadLetter = "D",
        /// Deleted from the stream: acknowledge.
        Gone = "G",
        /// Send one attempt of an entry that waits for its clients' acknowledgements.
        Attempt = "A",
    }
}

impl OpKind {
    /// How many arguments an operation of this kind takes, its kind included (`OP_SIZE[kind]` in
    /// the scripts).
    pub const fn arity(self) -> usize {
        match self {
            OpKind::New => 5,
            OpKind::Publish | OpKind::Attempt => 7,
            OpKind::DeadLetter => 6,
            OpKind::Gone => 4,
        }
    }

    /// `OP_SIZE`: each kind's [`OpKind::arity`], by its letter.
    fn sizes() -> String {
        let sizes: Vec<String> = Self::ALL
            .iter()
            .map(|kind| format!("[{}] = {}", kind.wire().literal(), kind.arity()))
            .collect();
        format!("{{ {} }}", sizes.join(", "))
    }
}

codes! {
    /// What the delivery script is told about an entry: letters of an operation's flags argument
    /// (`-` when none).
    pub enum Flag: &'static str, in Lua "FLAG" {
        /// A redelivery, which may have been journaled.
        Redelivery = "r",
        /// Recorded in the held hash.
        Recorded = "h",
        /// Behind an older entry the relay holds for its namespace: to be held unpublished.
        Behind = "b",
        /// Published by the relay: its channel is on another node of the cluster.
        External = "x",
    }
}

codes! {
    /// What became of one operation of the delivery script: each result is `value * OUTCOME_BASE +
    /// code` (see [`crate::delivery::Outcome`] for the values).
    pub enum OutcomeCode: u64, in Lua "OUTCOME" {
        Published = 1,
        TooFewServers = 2,
        HeldBehind = 3,
        NotOwned = 4,
        Acknowledged = 5,
        AlreadyPublished = 6,
        PublishRefused = 7,
        TooFewReceivers = 8,
        ToPublish = 9,
        AttemptSent = 10,
        Appended = 11,
    }
}

impl OutcomeCode {
    /// The code of a result and its value; `Err` with the code when this relay does not know it.
    pub fn split(result: u64) -> Result<(OutcomeCode, u64), u64> {
        let code = result % OUTCOME_BASE;
        match Self::ALL.iter().find(|known| known.wire() == code) {
            Some(known) => Ok((*known, result / OUTCOME_BASE)),
            None => Err(code),
        }
    }
}

codes! {
    /// What the lease script does (`lua/lease.lua`).
    pub enum LeaseOp: &'static str, in Lua "LEASE" {
        /// Take the lease if it is free, expired, or still holds a holder known to be dead.
        Take = "take",
        /// Extend the lease this relay holds.
        Renew = "renew",
        /// Drop the lease this relay holds.
        Release = "release",
    }
}

codes! {
    /// In which order the browse script reads dead letters (`lua/browse.lua`).
    pub enum Order: &'static str, in Lua "ORDER" {
        /// Newest first: the console.
        Newest = "newest",
        /// Oldest first: `sio-relay dead list`.
        Oldest = "oldest",
    }
}

/// Every constant of the preamble, with its value as a Lua literal.
fn constants() -> impl Iterator<Item = (String, String)> {
    ReasonCode::constants()
        .chain(OpKind::constants())
        .chain(Flag::constants())
        .chain(OutcomeCode::constants())
        .chain(DeadField::constants())
        .chain(LeaseOp::constants())
        .chain(Order::constants())
        .chain([
            ("OP_SIZE".into(), OpKind::sizes()),
            ("DEAD_PREFIX".into(), DeadField::PREFIX.literal()),
            ("OUTCOME_BASE".into(), OUTCOME_BASE.literal()),
            ("MAX_XADD_VALUES".into(), MAX_XADD_VALUES.literal()),
        ])
}

/// What every script starts with: the constants, one `local` a line.
fn preamble() -> String {
    let mut out = String::from(
        "-- Generated from src/protocol.rs: what the relay and its scripts spell alike.\n",
    );
    for (name, value) in constants() {
        let _ = writeln!(out, "local {name} = {value}");
    }
    out
}

/// How servers are counted (`count_servers`).
const SERVERS: &str = include_str!("lua/servers.lua");
/// How entries leave the group (`acknowledge`), and commands over long lists (`call_in_chunks`).
const LEAVE: &str = include_str!("lua/leave.lua");
/// How an entry leaves the group with a record of it (`settle`).
const SETTLE: &str = include_str!("lua/settle.lua");

/// The relay's Lua scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lua {
    Deliver,
    Confirm,
    Prune,
    Keep,
    Forget,
    Isolate,
    Acked,
    Lease,
    Preflight,
    Browse,
    Replay,
}

impl Lua {
    pub const ALL: [Lua; 11] = [
        Lua::Deliver,
        Lua::Confirm,
        Lua::Prune,
        Lua::Keep,
        Lua::Forget,
        Lua::Isolate,
        Lua::Acked,
        Lua::Lease,
        Lua::Preflight,
        Lua::Browse,
        Lua::Replay,
    ];

    /// The script's own file.
    fn source(self) -> &'static str {
        match self {
            Lua::Deliver => include_str!("lua/deliver.lua"),
            Lua::Confirm => include_str!("lua/confirm.lua"),
            Lua::Prune => include_str!("lua/prune.lua"),
            Lua::Keep => include_str!("lua/keep.lua"),
            Lua::Forget => include_str!("lua/forget.lua"),
            Lua::Isolate => include_str!("lua/isolate.lua"),
            Lua::Acked => include_str!("lua/acked.lua"),
            Lua::Lease => include_str!("lua/lease.lua"),
            Lua::Preflight => include_str!("lua/preflight.lua"),
            Lua::Browse => include_str!("lua/browse.lua"),
            Lua::Replay => include_str!("lua/replay.lua"),
        }
    }

    /// The functions it shares with other scripts.
    fn libraries(self) -> &'static [&'static str] {
        match self {
            Lua::Deliver | Lua::Confirm => &[SERVERS, LEAVE],
            Lua::Isolate | Lua::Acked => &[LEAVE, SETTLE],
            _ => &[],
        }
    }

    /// The text Redis runs: its shebang (the first line, when it has one), the preamble, the
    /// libraries, then the rest of its file.
    pub fn text(self) -> String {
        let source = self.source();
        let (shebang, body) = match source.split_once('\n') {
            Some((first, rest)) if first.starts_with("#!") => (first, rest),
            _ => ("", source),
        };
        let mut text = String::new();
        if !shebang.is_empty() {
            text.push_str(shebang);
            text.push('\n');
        }
        text.push_str(&preamble());
        for library in self.libraries() {
            text.push_str(library);
        }
        text.push_str(body);
        text
    }

    pub fn script(self) -> Script {
        Script::new(&self.text())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `text` without its comments and string literals, which name nothing.
    fn code_only(text: &str) -> String {
        split(text).0
    }

    /// `text` without its comments and string literals, and the string literals.
    fn split(text: &str) -> (String, Vec<String>) {
        let mut out = String::new();
        let mut literals = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '-' if chars.peek() == Some(&'-') => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            out.push('\n');
                            break;
                        }
                    }
                }
                '\'' | '"' => {
                    let mut literal = String::new();
                    while let Some(inner) = chars.next() {
                        if inner == '\\' {
                            literal.extend(chars.next());
                        } else if inner == c {
                            break;
                        } else {
                            literal.push(inner);
                        }
                    }
                    literals.push(literal);
                    out.push_str("''");
                }
                _ => out.push(c),
            }
        }
        (out, literals)
    }

    /// The names of `code` written in capitals (constants by this code base's convention), and
    /// those it declares `local`.
    fn capitals(code: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut used = BTreeSet::new();
        let mut declared = BTreeSet::new();
        let is_constant = |w: &str| {
            w.len() > 1
                && w.starts_with(|c: char| c.is_ascii_uppercase())
                && w.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        };
        for line in code.lines() {
            let words = line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            used.extend(words.filter(|w| is_constant(w)).map(str::to_string));
            if let Some(names) = line.trim_start().strip_prefix("local ") {
                let names = names.split('=').next().unwrap_or_default();
                declared.extend(
                    names
                        .split(',')
                        .map(str::trim)
                        .filter(|w| is_constant(w))
                        .map(str::to_string),
                );
            }
        }
        (used, declared)
    }

    /// Every constant a script uses, from the preamble or its own.
    fn used_by_scripts() -> BTreeSet<String> {
        let mut all = BTreeSet::new();
        for lua in Lua::ALL {
            let mut own = String::new();
            for library in lua.libraries() {
                own.push_str(library);
            }
            own.push_str(lua.source());
            let (used, _) = capitals(&code_only(&own));
            all.extend(used);
        }
        all
    }

    #[test]
    fn every_constant_a_script_uses_is_defined() {
        let given: BTreeSet<String> = constants().map(|(name, _)| name).collect();
        for lua in Lua::ALL {
            let (used, declared) = capitals(&code_only(&lua.text()));
            let redis = BTreeSet::from(["KEYS".to_string(), "ARGV".to_string()]);
            let unknown: Vec<&String> = used
                .iter()
                .filter(|name| !declared.contains(*name) && !redis.contains(*name))
                .collect();
            assert!(
                unknown.is_empty(),
                "{lua:?} uses {unknown:?}, which neither src/protocol.rs nor the script defines"
            );
            let (_, own) = capitals(&code_only(lua.source()));
            let again: Vec<&String> = own.intersection(&given).collect();
            assert!(
                again.is_empty(),
                "{lua:?} declares {again:?} itself; they come from src/protocol.rs"
            );
        }
    }

    /// No script spells a value of its own instead of using the constant: no string literal is a
    /// code of several letters, nor, in a script that uses operations or flags, one of theirs.
    #[test]
    fn no_script_spells_a_code() {
        let words: Vec<&str> = ReasonCode::ALL
            .iter()
            .map(|c| c.wire())
            .chain(DeadField::ALL.iter().map(|c| c.wire()))
            .chain(LeaseOp::ALL.iter().map(|c| c.wire()))
            .chain(Order::ALL.iter().map(|c| c.wire()))
            .chain([DeadField::PREFIX])
            .collect();
        let letters: Vec<&str> = OpKind::ALL
            .iter()
            .map(|c| c.wire())
            .chain(Flag::ALL.iter().map(|c| c.wire()))
            .collect();
        for lua in Lua::ALL {
            let mut own = String::new();
            for library in lua.libraries() {
                own.push_str(library);
            }
            own.push_str(lua.source());
            let (code, literals) = split(&own);
            let (used, _) = capitals(&code);
            let reads_letters = used
                .iter()
                .any(|name| name.starts_with("OP_") || name.starts_with("FLAG_"));
            for literal in literals.iter().map(String::as_str) {
                let spelled =
                    words.contains(&literal) || (reads_letters && letters.contains(&literal));
                assert!(
                    !spelled,
                    "{lua:?} spells '{literal}'; use its constant from src/protocol.rs"
                );
            }
        }
    }

    #[test]
    fn every_code_the_scripts_read_or_write_is_used_by_them() {
        let used = used_by_scripts();
        let lua_side = OpKind::ALL
            .iter()
            .map(|c| c.lua_name())
            .chain(Flag::ALL.iter().map(|c| c.lua_name()))
            .chain(OutcomeCode::ALL.iter().map(|c| c.lua_name()))
            .chain(DeadField::ALL.iter().map(|c| c.lua_name()))
            .chain(LeaseOp::ALL.iter().map(|c| c.lua_name()))
            .chain(Order::ALL.iter().map(|c| c.lua_name()))
            .chain([
                "OP_SIZE".into(),
                "DEAD_PREFIX".into(),
                "OUTCOME_BASE".into(),
                "MAX_XADD_VALUES".into(),
            ]);
        for name in lua_side {
            assert!(used.contains(&name), "no script uses {name}");
        }
    }

    #[test]
    fn every_reason_is_written_by_the_relay_or_a_script() {
        let used = used_by_scripts();
        let by_relay: std::collections::HashSet<ReasonCode> = crate::dead_letter::one_of_each()
            .iter()
            .map(|reason| reason.code())
            .collect();
        for code in ReasonCode::ALL {
            let by_script = used.contains(&code.lua_name());
            assert!(
                by_relay.contains(code) || by_script,
                "{code:?} is written by neither the relay nor a script"
            );
        }
    }

    #[test]
    fn every_constant_is_distinct_and_quotes_plainly() {
        let mut names = BTreeSet::new();
        for (name, _) in constants() {
            assert!(names.insert(name.clone()), "{name} twice");
        }
        for codes in [
            ReasonCode::ALL.iter().map(|c| c.wire()).collect::<Vec<_>>(),
            OpKind::ALL.iter().map(|c| c.wire()).collect(),
            Flag::ALL.iter().map(|c| c.wire()).collect(),
            DeadField::ALL.iter().map(|c| c.wire()).collect(),
            LeaseOp::ALL.iter().map(|c| c.wire()).collect(),
            Order::ALL.iter().map(|c| c.wire()).collect(),
        ] {
            assert_eq!(
                codes.iter().collect::<BTreeSet<_>>().len(),
                codes.len(),
                "{codes:?}"
            );
            assert!(
                codes.iter().all(|code| code
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')),
                "{codes:?} would not stay as they are between quotes"
            );
        }
        let outcomes: BTreeSet<u64> = OutcomeCode::ALL.iter().map(|c| c.wire()).collect();
        assert_eq!(outcomes.len(), OutcomeCode::ALL.len());
        assert!(outcomes.iter().all(|&code| 0 < code && code < OUTCOME_BASE));
        assert!(Flag::ALL
            .iter()
            .all(|flag| flag.wire().len() == 1 && flag.wire() != "-"));
        assert!(DeadField::ALL
            .iter()
            .all(|field| field.wire().starts_with(DeadField::PREFIX)));
    }

    #[test]
    fn lua_names_spell_the_variant_in_capitals() {
        assert_eq!(
            ReasonCode::MaxDeliveries.lua_name(),
            "REASON_MAX_DELIVERIES"
        );
        assert_eq!(OpKind::New.lua_name(), "OP_NEW");
        assert_eq!(OutcomeCode::NotOwned.lua_name(), "OUTCOME_NOT_OWNED");
        assert!(preamble().contains("local REASON_REFUSED = 'refused'\n"));
        assert!(preamble().contains("local OUTCOME_ATTEMPT_SENT = 10\n"));
        assert!(preamble().contains(
            "local OP_SIZE = { ['N'] = 5, ['P'] = 7, ['D'] = 6, ['G'] = 4, ['A'] = 7 }\n"
        ));
    }

    #[test]
    fn outcomes_split_into_code_and_value() {
        assert_eq!(
            OutcomeCode::split(3 * OUTCOME_BASE + 1),
            Ok((OutcomeCode::Published, 3))
        );
        assert_eq!(
            OutcomeCode::split(2 * OUTCOME_BASE - 1),
            Err(OUTCOME_BASE - 1)
        );
    }

    #[test]
    fn entries_leave_the_group_only_through_acknowledge() {
        for lua in Lua::ALL {
            let scripts = std::iter::once(lua.source()).chain(lua.libraries().iter().copied());
            for source in scripts.filter(|source| *source != LEAVE) {
                for line in source.lines().filter(|line| line.contains("'XACK'")) {
                    // Elsewhere XACK is only named to the ACL check, never run.
                    assert!(
                        !["call(", "call_in_chunks"]
                            .iter()
                            .any(|runs| line.contains(runs)),
                        "{lua:?} acknowledges by itself instead of through `acknowledge`: {line}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_shebang_stays_first() {
        let text = Lua::Deliver.text();
        assert!(text.starts_with("#!lua\n-- Generated from src/protocol.rs"));
        assert!(Lua::Browse
            .text()
            .starts_with("-- Generated from src/protocol.rs"));
    }

    /// The operators' alerts explain every reason, and their tests name only reasons there are.
    #[test]
    fn the_alert_rules_know_every_reason() {
        let read = |path: &str| {
            std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
                .unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        let rules = read("deploy/prometheus/sio-relay-rules.yaml");
        let alert = rules
            .split("- alert: ")
            .find(|alert| alert.starts_with("SioRelayDeadLetters"))
            .expect("the dead-letter alert");
        let words: BTreeSet<&str> = alert
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .collect();
        for code in ReasonCode::ALL {
            assert!(
                words.contains(code.wire()),
                "SioRelayDeadLetters does not explain {code:?}"
            );
        }
        let known: BTreeSet<&str> = ReasonCode::ALL.iter().map(|c| c.wire()).collect();
        let tests = read("deploy/prometheus/sio-relay-rules.test.yaml");
        for label in tests.split("reason=\"").skip(1) {
            let reason = label.split('"').next().unwrap_or_default();
            assert!(
                known.contains(reason),
                "unknown reason {reason:?} in the rules' tests"
            );
        }
    }
}
