//! The operator commands of the `sio-relay` binary besides `run`: each module is one subcommand.
//!
//! They share the daemon's configuration (same file, same `SIO_RELAY_*` variables) and its
//! validation and encoding, so what a command writes is exactly what the relay would accept.

pub mod check_config;
