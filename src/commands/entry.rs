//! `sio-relay entry <ID>`: what became of one entry (see [`crate::admin::entry`]), said in words,
//! or as JSON with `--json`. Any answer exits 0: the state is the answer.

use std::time::Duration;

use super::{block_on, printable};
use crate::admin::entry::{find, Holder, State, Whereabouts, DEAD_SCAN};
use crate::config::Config;
use crate::exit::Failure;

pub fn run(cfg: &Config, id: &str, stream: Option<&str>, json: bool) -> Result<String, Failure> {
    let found = block_on(find(cfg, id, stream))?;
    Ok(match json {
        true => format!(
            "{}\n",
            serde_json::to_string(&found).expect("whereabouts serialize")
        ),
        false => render(cfg, &found),
    })
}

/// `found` in words, its fields after it.
pub fn render(cfg: &Config, found: &Whereabouts) -> String {
    // A group created at the stream's end (`source.start_id = "$"`) skipped what was there,
    // which Redis tells apart from what the group read by nothing.
    let skips = cfg.source.start_id == "$";
    let mut state = said(&found.state);
    if skips && matches!(found.state, State::Delivered) {
        state.push_str(
            " (or skipped: with source.start_id = \"$\" the group skipped the entries already there when it was created)",
        );
    }
    let mut out = format!(
        "{} in stream {} (group {}): {state}\n",
        printable(&found.id),
        printable(&found.stream),
        printable(&found.group),
    );
    for field in found.fields.iter().flatten() {
        let cut = match field.truncated {
            true => format!(" … ({} bytes)", field.bytes),
            false => String::new(),
        };
        out.push_str(&format!(
            "  {} = {}{cut}\n",
            printable(&field.name),
            printable(&field.value)
        ));
    }
    out
}

/// The state in words, with what the operator can do about it where there is something.
fn said(state: &State) -> String {
    let holder = |h: &Holder| {
        format!(
            "{}, {} deliveries, idle {}",
            printable(&h.consumer),
            h.deliveries,
            humantime::format_duration(Duration::from_millis(h.idle_ms))
        )
    };
    match state {
        State::NoGroup => "not read: no relay has read this stream yet (its group does not exist)".into(),
        State::Unread { last_read, lag } => format!(
            "not read yet: the group has read up to {last_read}{}",
            lag.map_or(String::new(), |lag| format!(", {lag} entries to go"))
        ),
        State::Held(h) => format!(
            "held ({}): no or too few Socket.IO servers listen on its namespace, or it waits behind an older held entry of it, or for its clients to come back (`sio-relay status` says which)",
            holder(h)
        ),
        State::InHand(h) => format!(
            "in a relay's hands ({}): being delivered, or waiting for the servers' confirmation or for its clients' acknowledgements",
            holder(h)
        ),
        State::DeadLettered {
            dead_letter: letter,
        } => format!(
            "dead-lettered as {}: {} (dead letter {} in {}; `sio-relay dead replay {}` sends it again)",
            printable(&letter.reason),
            printable(&letter.error),
            letter.id,
            printable(&letter.stream),
            letter.id
        ),
        State::Delivered => "delivered: acknowledged, and not dead-lettered".into(),
        State::Acknowledged => format!(
            "acknowledged; more than {DEAD_SCAN} dead letters were written after it, so whether it is one of them was not looked up (`sio-relay dead list`)"
        ),
        State::Gone => "no such entry: the stream does not hold it (trimmed or deleted, if it ever existed), and it is neither pending nor dead-lettered".into(),
    }
}
