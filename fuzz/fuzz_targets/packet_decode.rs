//! Arbitrary bytes as seen by `sio-relay monitor`: decoding and describing a payload never panics,
//! whatever was published on the adapter's channels.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sio_relay::commands::monitor::describe;
use sio_relay::packet::decode;

fuzz_target!(|payload: &[u8]| {
    let _ = decode(payload);
    let _ = describe("socket.io#/#", payload, false);
    let _ = describe("socket.io#/#", payload, true);
});
