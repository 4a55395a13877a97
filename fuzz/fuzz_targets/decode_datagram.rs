//! Arbitrary bytes into `wire::decode`: it must never panic, and
//! whatever it accepts must survive an encode/decode round trip unchanged.
#![no_main]

use comm::wire::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = decode(data) {
        let again = encode(&packet);
        assert_eq!(decode(&again), Ok(packet));
    }
});
