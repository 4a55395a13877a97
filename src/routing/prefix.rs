//! Network prefixes: the unit of the sybil limits (contacts per bucket,
//! held messages and request rates per source). One host or small network
//! is one prefix: a /24 for IPv4, a /48 for IPv6.

use std::net::{IpAddr, SocketAddr};

/// A network prefix, comparable and hashable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix([u8; 8]);

impl Prefix {
    /// Its 8 bytes, as stored.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0
    }

    /// A prefix from its 8 stored bytes.
    pub fn from_bytes(b: [u8; 8]) -> Prefix {
        Prefix(b)
    }
}

/// How loopback endpoints are grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LoopbackPrefixes {
    /// Loopback is exempt from every prefix limit, so that many nodes on
    /// one machine form a network (the default).
    #[default]
    Exempt,
    /// Each loopback port counts as a network of its own, so that the
    /// limits can be tested with processes on one machine.
    PerPort,
}

/// The prefix of `addr`, or `None` if it is exempt from prefix limits.
pub fn prefix(addr: &SocketAddr, loopback: LoopbackPrefixes) -> Option<Prefix> {
    let ip = addr.ip().to_canonical();
    if ip.is_loopback() {
        return match loopback {
            LoopbackPrefixes::Exempt => None,
            LoopbackPrefixes::PerPort => {
                let p = addr.port().to_be_bytes();
                Some(Prefix([0x7f, 0, 0, 0, 0, 0, p[0], p[1]]))
            }
        };
    }
    Some(match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            Prefix([4, o[0], o[1], o[2], 0, 0, 0, 0])
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            Prefix([6, o[0], o[1], o[2], o[3], o[4], o[5], 0])
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_prefix_per_24_or_48_and_loopback_by_policy() {
        let a: SocketAddr = "10.1.2.3:1".parse().unwrap();
        let b: SocketAddr = "10.1.2.200:2".parse().unwrap();
        let c: SocketAddr = "10.1.3.3:1".parse().unwrap();
        let ex = LoopbackPrefixes::Exempt;
        assert_eq!(prefix(&a, ex), prefix(&b, ex));
        assert_ne!(prefix(&a, ex), prefix(&c, ex));
        let mapped: SocketAddr = "[::ffff:10.1.2.9]:5".parse().unwrap();
        assert_eq!(prefix(&mapped, ex), prefix(&a, ex));
        let l1: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let l2: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        assert_eq!(prefix(&l1, ex), None);
        let pp = LoopbackPrefixes::PerPort;
        assert!(prefix(&l1, pp).is_some());
        assert_ne!(prefix(&l1, pp), prefix(&l2, pp));
    }
}
