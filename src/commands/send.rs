//! `sio-relay send`: appends one entry to the relay's stream, validated first so that a typo never
//! reaches the stream; with `--direct`, publishes it straight through the adapter protocol instead
//! (no durability) and reports how many Socket.IO servers received it; with `--wait`, waits for
//! what becomes of the entry and says it. The work is [`crate::admin::send`]'s, which the
//! console's send form shares, and [`crate::admin::entry`]'s.

use std::time::Duration;

use crate::admin::entry::{settled, State};
pub use crate::admin::send::Request;
use crate::admin::send::{direct, to_stream};
use crate::config::Config;
use crate::exit::{Failure, EXIT_FAILURE};

use super::block_on;
use super::entry::render;

/// How `send` goes about it.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Append it, print its ID.
    Append,
    /// Append it, then wait up to this long for what becomes of it and say it: delivered, or
    /// why not (as `sio-relay entry` does).
    AppendAndWait(Duration),
    /// Publish it straight to the servers, without the stream.
    Direct,
}

/// What `send` prints: the new entry's ID (and, waiting, what became of it), or how many servers a
/// direct publish reached. Waiting, an entry not delivered within the wait is a failure, with
/// what was printed.
pub fn run(cfg: &Config, request: &Request, mode: Mode) -> Result<String, (String, Failure)> {
    let alone = |failure| (String::new(), failure);
    let wait = match mode {
        Mode::Direct => {
            return block_on(direct(cfg, request))
                .map(|n| format!("published to {n} Socket.IO server(s)\n"))
                .map_err(alone)
        }
        Mode::Append => None,
        Mode::AppendAndWait(wait) => Some(wait),
    };
    let appended = block_on(to_stream(cfg, request)).map_err(alone)?;
    let Some(wait) = wait else {
        return Ok(format!("{}\n", appended.id));
    };
    let found = block_on(settled(cfg, &appended.id, &appended.stream, wait))
        .map_err(|failure| (format!("{}\n", appended.id), failure))?;
    let said = render(cfg, &found);
    match found.state {
        State::Delivered => Ok(said),
        _ => Err((
            said,
            Failure {
                code: EXIT_FAILURE,
                message: format!(
                    "{} was appended but not delivered within {}",
                    appended.id,
                    humantime::format_duration(wait)
                ),
            },
        )),
    }
}
