//! Arbitrary bytes as seen by `sio-relay monitor`: decoding and describing a payload never panics,
//! whatever was published on the adapter's channels.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sio_relay::commands::monitor::describe;
use sio_relay::packet::{decode, Target};

fuzz_target!(|payload: &[u8]| {
    let targets = Target::every_format("socket.io", "emitter");
    for target in &targets {
        let _ = decode(payload, target);
        let _ = describe(target, "socket.io#/#", payload, false);
        let _ = describe(target, "socket.io#/#", payload, true);
        let _ = describe(target, "socket.io-request#/#", payload, false);
    }
});
