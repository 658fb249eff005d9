//! `sio-relay send`: appends one entry to the relay's stream, validated first so that a typo never
//! reaches the stream; with `--direct`, publishes it straight through the adapter protocol instead
//! (no durability) and reports how many Socket.IO servers received it. The work is
//! [`crate::admin::send`]'s, which the console's send form shares.

pub use crate::admin::send::Request;
use crate::admin::send::{direct, to_stream};
use crate::config::Config;
use crate::exit::Failure;

use super::block_on;

/// What `send` prints: the new entry's ID, or how many servers a direct publish reached.
pub fn run(cfg: &Config, request: &Request, direct_publish: bool) -> Result<String, Failure> {
    if direct_publish {
        block_on(direct(cfg, request)).map(|n| format!("published to {n} Socket.IO server(s)\n"))
    } else {
        block_on(to_stream(cfg, request)).map(|appended| format!("{}\n", appended.id))
    }
}
