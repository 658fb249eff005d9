//! The integration tests, as one test binary: every module shares the harness in `common`, and the
//! crate is linked once instead of once per file (linking dominates a build on two cores).
//!
//! Each test starts its own `redis-server` on a free port in a temporary directory and never touches
//! a Redis on 6379. Knobs for the harness itself live outside the relay's `SIO_RELAY_` prefix (the
//! relays the tests start never inherit the caller's `SIO_RELAY_*` variables):
//! `RELAY_TEST_BINARY` runs another `sio-relay` binary (an older build, to see a regression test fail),
//! and `RELAY_TEST_SETTINGS="SECTION__KEY=value ..."` adds settings to every relay a test starts
//! (`SOURCE__START_ID=0` for a build whose default was `$`); a test's own settings win.

mod common;

mod chaos;
mod cli;
mod client_acks;
mod cluster;
mod console;
mod delivered;
mod delivery_script;
mod demo;
mod deploy;
mod e2e;
mod emitter_operations;
mod emitter_suite;
mod guarantee;
mod hostile;
mod layers;
mod lifetime;
mod malformed;
mod observability;
mod operator_cli;
mod ops;
mod packet_props;
mod partitions;
mod producers;
mod python_socketio;
mod relay;
mod secure;
mod sentinel;
mod sharded;
mod streams;
mod traces;
