//! Arbitrary bytes into the identity-record decoder, as a hostile `Record`
//! answer or `PutRecord` would carry them: it may not panic, whatever it
//! accepts must encode and decode to the same record, and checking the
//! signature of any accepted record may not panic either.
#![no_main]

use comm::wire::{decode_identity_record, encode_identity_record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = decode_identity_record(data) {
        let again = decode_identity_record(&encode_identity_record(&r));
        assert_eq!(again, Ok(r));
        let _ = r.verify(&comm::signing::ED25519);
        let _ = r.address();
    }
});
