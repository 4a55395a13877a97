//! Arbitrary bytes into every stored-record decoder, as a damaged or hostile
//! database would hand them over: none may panic, and whatever a decoder
//! accepts must encode and decode to the same record.
//!
//! Input: `kind:u8 key_len:u8 key[key_len] value[..]`; `kind` picks the
//! decoder (mod 7); missing bytes read as empty.
#![no_main]

use comm::wire::records::{
    decode_contacts, AckRecord, DraftRecord, HeldRecord, InboxRecord, OutboxRecord,
    TombstoneRecord,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (kind, rest) = data.split_first().unwrap_or((&0, &[]));
    let (len, rest) = rest.split_first().unwrap_or((&0, &[]));
    let n = usize::from(*len).min(rest.len());
    let (key, value) = rest.split_at(n);
    match kind % 7 {
        0 => {
            if let Ok(r) = HeldRecord::decode(key, value) {
                assert_eq!(HeldRecord::decode(key, &r.encode()), Ok(r));
            }
        }
        1 => {
            if let Ok(r) = AckRecord::decode(key, value) {
                assert_eq!(AckRecord::decode(key, &r.encode()), Ok(r));
            }
        }
        2 => {
            if let Ok(r) = TombstoneRecord::decode(key, value) {
                assert_eq!(TombstoneRecord::decode(key, &r.encode()), Ok(r));
            }
        }
        3 => {
            if let Ok(r) = OutboxRecord::decode(key, value) {
                assert_eq!(OutboxRecord::decode(key, &r.encode()), Ok(r));
            }
        }
        4 => {
            if let Ok(r) = InboxRecord::decode(key, value) {
                assert_eq!(InboxRecord::decode(key, &r.encode()), Ok(r));
            }
        }
        6 => {
            if let Ok(r) = DraftRecord::decode(key, value) {
                assert_eq!(DraftRecord::decode(key, &r.encode()), Ok(r));
            }
        }
        _ => {
            let _ = decode_contacts(value);
        }
    }
});
