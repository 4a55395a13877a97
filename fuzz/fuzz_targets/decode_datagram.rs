//! Arbitrary bytes into `wire::decode`: it must never panic, it must give
//! exactly what prost alone gives (its fast path for the commonest bodies
//! only ever steps aside), and whatever it accepts must survive an
//! encode/decode round trip unchanged.
#![no_main]

use comm::wire::{decode, decode_with_prost, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let got = decode(data);
    assert_eq!(got, decode_with_prost(data));
    if let Ok(packet) = got {
        let again = encode(&packet);
        assert_eq!(decode(&again), Ok(packet));
    }
});
