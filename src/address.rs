//! 160-bit overlay addresses: node ids, message targets and the XOR metric.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use sha1::{Digest, Sha1};

/// Length of an address in bytes (SHA-1 output).
pub const ADDRESS_LEN: usize = 20;

/// Number of bits in an address, and so the number of routing buckets.
pub const ADDRESS_BITS: usize = ADDRESS_LEN * 8;

/// A 160-bit overlay address: SHA-1 of a node's Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Address(pub [u8; ADDRESS_LEN]);

/// 20 bytes as three big-endian words, most significant first: they
/// compare as the bytes do, in three steps instead of a call to `memcmp`
/// (lookups, tables and relays compare addresses and distances constantly).
pub(crate) fn be_words(b: &[u8; ADDRESS_LEN]) -> (u64, u64, u32) {
    let w = |at: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[at..at + 8]);
        u64::from_be_bytes(x)
    };
    let mut lo = [0u8; 4];
    lo.copy_from_slice(&b[16..20]);
    (w(0), w(8), u32::from_be_bytes(lo))
}

/// Order a 20-byte newtype as a big-endian integer, by [`be_words`] (the
/// same order as its bytes', without a `memcmp` call).
macro_rules! big_endian_order {
    ($t:ty) => {
        impl Ord for $t {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                be_words(&self.0).cmp(&be_words(&other.0))
            }
        }

        impl PartialOrd for $t {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
    };
}

big_endian_order!(Address);

/// XOR distance between two addresses; compares as a big-endian integer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Distance(pub [u8; ADDRESS_LEN]);

big_endian_order!(Distance);

/// Why a text could not be read as an address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressError {
    /// The text is not 40 characters long.
    #[error("an address is 40 hex characters, got {0}")]
    Length(usize),
    /// The text holds a character outside 0-9, a-f, A-F.
    #[error("an address is 40 hex characters (0-9, a-f); found {0:?}")]
    NotHex(char),
}

impl Address {
    /// The address of a public key: SHA-1 over its 32 bytes.
    pub fn of_key(public_key: &[u8]) -> Address {
        let digest = Sha1::digest(public_key);
        let mut out = [0u8; ADDRESS_LEN];
        out.copy_from_slice(&digest);
        Address(out)
    }

    /// XOR distance to `other`.
    pub fn distance(&self, other: &Address) -> Distance {
        let mut out = [0u8; ADDRESS_LEN];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = self.0[i] ^ other.0[i];
        }
        Distance(out)
    }

    /// Index of the routing bucket `other` falls into, seen from `self`:
    /// `i` such that `2^i <= distance < 2^(i+1)`; `None` when they are equal.
    pub fn bucket_index(&self, other: &Address) -> Option<usize> {
        self.distance(other).bucket_index()
    }

    /// A uniformly random address in bucket `index` as seen from `self`.
    /// Used to refresh a bucket by looking up an id that falls into it.
    pub fn random_in_bucket<R: Rng + ?Sized>(&self, index: usize, rng: &mut R) -> Address {
        let index = index.min(ADDRESS_BITS - 1);
        let mut dist = [0u8; ADDRESS_LEN];
        rng.fill(&mut dist[..]);
        // Bit `index` (counting from the least significant) is set; all higher bits clear.
        let byte = ADDRESS_LEN - 1 - index / 8;
        let bit = index % 8;
        for b in dist.iter_mut().take(byte) {
            *b = 0;
        }
        let keep = (1u16 << bit) as u8;
        dist[byte] = (dist[byte] & keep.wrapping_sub(1)) | keep;
        let mut out = [0u8; ADDRESS_LEN];
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.0[i] ^ dist[i];
        }
        Address(out)
    }

    /// A uniformly random address.
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> Address {
        let mut out = [0u8; ADDRESS_LEN];
        rng.fill(&mut out[..]);
        Address(out)
    }

    /// Short form for display: first and last four hex digits.
    pub fn short(&self) -> String {
        let full = self.to_string();
        format!("{}…{}", &full[..4], &full[36..])
    }
}

impl Distance {
    /// Bucket index of this distance: position of its highest set bit.
    pub fn bucket_index(&self) -> Option<usize> {
        for (i, byte) in self.0.iter().enumerate() {
            if *byte != 0 {
                let bit = 7 - byte.leading_zeros() as usize;
                return Some((ADDRESS_LEN - 1 - i) * 8 + bit);
            }
        }
        None
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.short())
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(c) = s.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(AddressError::NotHex(c));
        }
        if s.len() != ADDRESS_LEN * 2 {
            return Err(AddressError::Length(s.chars().count()));
        }
        let mut out = [0u8; ADDRESS_LEN];
        hex::decode_to_slice(s, &mut out).map_err(|_| AddressError::Length(s.len()))?;
        Ok(Address(out))
    }
}

impl TryFrom<&[u8]> for Address {
    type Error = usize;

    /// Exactly 20 bytes, or the wrong length as the error.
    fn try_from(bytes: &[u8]) -> Result<Self, usize> {
        <[u8; ADDRESS_LEN]>::try_from(bytes)
            .map(Address)
            .map_err(|_| bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn parses_and_prints_hex() {
        let text = "44751799925b964a00bae3863cc4236f9bb8d519";
        let a: Address = text.parse().unwrap();
        assert_eq!(a.to_string(), text);
        assert_eq!(a.short(), "4475…d519");
        let upper: Address = text.to_uppercase().parse().unwrap();
        assert_eq!(upper, a);
    }

    #[test]
    fn rejects_bad_text() {
        assert_eq!("abc".parse::<Address>(), Err(AddressError::Length(3)));
        assert_eq!(
            "zz751799925b964a00bae3863cc4236f9bb8d519".parse::<Address>(),
            Err(AddressError::NotHex('z'))
        );
        assert!("44751799925b964a00bae3863cc4236f9bb8d5190"
            .parse::<Address>()
            .is_err());
    }

    #[test]
    fn distance_is_xor_and_symmetric() {
        let a = Address([0xff; 20]);
        let b = Address([0x0f; 20]);
        assert_eq!(a.distance(&b), Distance([0xf0; 20]));
        assert_eq!(a.distance(&b), b.distance(&a));
        assert_eq!(a.distance(&a), Distance([0; 20]));
    }

    #[test]
    fn addresses_and_distances_compare_as_their_bytes_do() {
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..10_000 {
            let mut a = [0u8; 20];
            let mut b = [0u8; 20];
            rng.fill(&mut a[..]);
            b.copy_from_slice(&a);
            // Differ from a random byte on, sometimes not at all.
            let from = rng.gen_range(0..21);
            rng.fill(&mut b[from.min(20)..]);
            assert_eq!(Distance(a).cmp(&Distance(b)), a.cmp(&b));
            assert_eq!(Address(a).cmp(&Address(b)), a.cmp(&b));
        }
    }

    #[test]
    fn bucket_index_is_highest_differing_bit() {
        let zero = Address([0; 20]);
        assert_eq!(zero.bucket_index(&zero), None);
        let mut one = [0u8; 20];
        one[19] = 1;
        assert_eq!(zero.bucket_index(&Address(one)), Some(0));
        let mut top = [0u8; 20];
        top[0] = 0x80;
        assert_eq!(zero.bucket_index(&Address(top)), Some(159));
        let mut mid = [0u8; 20];
        mid[10] = 0x04;
        assert_eq!(zero.bucket_index(&Address(mid)), Some(9 * 8 + 2));
    }

    #[test]
    fn random_in_bucket_lands_in_that_bucket() {
        let mut rng = StdRng::seed_from_u64(7);
        let me = Address::random(&mut rng);
        for index in 0..ADDRESS_BITS {
            for _ in 0..4 {
                let a = me.random_in_bucket(index, &mut rng);
                assert_eq!(me.bucket_index(&a), Some(index));
            }
        }
    }

    #[test]
    fn address_of_key_is_sha1() {
        // SHA-1("abc") from FIPS 180-1.
        let a = Address::of_key(b"abc");
        assert_eq!(a.to_string(), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }
}
