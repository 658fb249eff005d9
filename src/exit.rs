//! How the process ends: a failure, with the exit status that says why to scripts and service
//! managers. The relay, the operator commands and the console speak it alike.

use std::fmt;

/// Why the relay or a command failed, with the exit status that says so.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Exit status of a command that could not do its job (Redis unreachable, unhealthy, ...).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for input that is not a valid entry (EX_DATAERR).
pub const EXIT_DATA: u8 = 65;
/// Exit status for a configuration or setup the relay refuses to run with (EX_CONFIG): a bad
/// config file, Redis keys or ACL rules it cannot work with, another relay under its consumer name.
pub const EXIT_CONFIG: u8 = 78;
/// Exit status for a bug of the relay's own (EX_SOFTWARE): an invariant broken, a task that
/// panicked. Said as such, never taken for an outage.
pub const EXIT_SOFTWARE: u8 = 70;

impl From<redis::RedisError> for Failure {
    fn from(e: redis::RedisError) -> Self {
        Failure {
            code: EXIT_FAILURE,
            message: format!("Redis: {e}"),
        }
    }
}
