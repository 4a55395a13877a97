//! The Kademlia routing table: 160 k-buckets indexed by XOR distance.
//!
//! Only contacts that proved they own their address (a signed challenge) are
//! inserted; the node enforces that before calling [`RoutingTable::insert`].

mod bucket;
pub mod prefix;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use bucket::{Bucket, Entry, Pending};
pub use prefix::{prefix, LoopbackPrefixes, Prefix};

use crate::address::{Address, Distance, ADDRESS_BITS};
use crate::wire::Contact;

/// `a XOR b` as a number that compares like the distance (big-endian), in
/// three machine words instead of a 20-byte `memcmp`.
fn distance_key(a: &Address, b: &Address) -> (u64, u64, u32) {
    crate::address::be_words(&a.distance(b).0)
}

/// What happened to a contact offered to the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Insert {
    /// It took a free slot.
    Added,
    /// It was already there; now most recently seen.
    Updated {
        /// It proved itself at a different endpoint than recorded.
        moved: bool,
    },
    /// The bucket is full and its oldest entry has not been heard from
    /// recently: the caller must ping `oldest`, then report the result
    /// with [`RoutingTable::ping_result`].
    PingOldest {
        /// The least recently seen entry.
        oldest: Contact,
    },
    /// The bucket is full and its oldest entry is fresh, already being
    /// checked, or the check rate is spent: cached as a replacement.
    Cached,
    /// Refused: our own address, or too many contacts from its network prefix.
    Rejected,
}

/// The routing table's policy (from `Config`).
#[derive(Clone, Debug)]
pub struct TablePolicy {
    /// Contacts per bucket.
    pub k: usize,
    /// Replacement-cache entries per bucket.
    pub replacement_cache: usize,
    /// Contacts per network prefix in one bucket.
    pub max_per_prefix: usize,
    /// An oldest entry heard from within this long is not checked.
    pub contact_fresh: Duration,
    /// Liveness checks per second (and burst), table-wide.
    pub liveness_checks_per_sec: u32,
    /// How loopback endpoints count for the prefix limit.
    pub loopback: LoopbackPrefixes,
}

impl TablePolicy {
    /// The policy a node's `Config` asks for.
    pub fn from_config(c: &crate::config::Config) -> TablePolicy {
        TablePolicy {
            k: c.k.get(),
            replacement_cache: c.replacement_cache,
            max_per_prefix: c.max_per_prefix,
            contact_fresh: c.contact_fresh,
            liveness_checks_per_sec: c.liveness_checks_per_sec,
            loopback: c.loopback,
        }
    }
}

/// A token bucket bounding liveness checks.
#[derive(Clone, Debug)]
struct CheckRate {
    per_sec: u32,
    tokens: f64,
    at: Instant,
}

impl CheckRate {
    fn take(&mut self, now: Instant) -> bool {
        let cap = f64::from(self.per_sec);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * cap).min(cap);
        self.at = self.at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// 160 buckets of at most `k` contacts each.
#[derive(Clone, Debug)]
pub struct RoutingTable {
    me: Address,
    policy: TablePolicy,
    buckets: Buckets,
    /// Bit `i` set: bucket `i` holds at least one contact. Lets
    /// [`RoutingTable::closest`] skip empty buckets without touching them.
    occupied: BucketSet,
    /// A Bloom filter of the endpoints in the table (two bits each): a
    /// clear bit proves an endpoint absent without walking every entry.
    /// Bits are added as contacts arrive or move and rebuilt from the
    /// entries after an eviction, so it never misses an endpoint.
    endpoints: EndpointFilter,
    len: usize,
    checks: CheckRate,
}

/// A 1,024-bit Bloom filter of endpoints (128 bytes).
#[derive(Clone, Debug, Default)]
struct EndpointFilter([u64; 16]);

/// A fixed 64-bit mix of an endpoint (the same on every run and machine),
/// for filters and direct-mapped memories that only need to spread
/// endpoints, not to resist anyone: a collision costs a little work or
/// shares a timer estimate, never a wrong answer.
pub(crate) fn endpoint_hash(addr: &SocketAddr) -> u64 {
    let mut h = u64::from(addr.port()) ^ 0x9E37_79B9_7F4A_7C15;
    let octets = match addr.ip() {
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(a) => a.octets(),
    };
    for half in octets.chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(half);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 31;
    }
    h
}

impl EndpointFilter {
    fn bits(addr: &SocketAddr) -> [usize; 2] {
        let h = endpoint_hash(addr);
        [(h & 1023) as usize, ((h >> 10) & 1023) as usize]
    }

    fn add(&mut self, addr: &SocketAddr) {
        for b in Self::bits(addr) {
            self.0[b / 64] |= 1 << (b % 64);
        }
    }

    fn may_contain(&self, addr: &SocketAddr) -> bool {
        Self::bits(addr)
            .iter()
            .all(|&b| self.0[b / 64] >> (b % 64) & 1 == 1)
    }
}

/// The 160 buckets, stored only from the farthest (159) down to the
/// nearest one ever written: bucket `i` is nearer than every contact of a
/// network of fewer than `2^(160 - i)` nodes with probability near 1, so a
/// table holds about `log2(nodes)` of them plus a few, not 160 (72 bytes
/// each, the largest part of an idle node in a simulation of thousands).
/// Reading a bucket never stored gives an empty one created with the table,
/// as if every bucket had been there from the start.
#[derive(Clone, Debug)]
struct Buckets {
    created: Instant,
    /// What every bucket never written looks like.
    empty: Bucket,
    /// `far[j]` is bucket `159 - j`.
    far: Vec<Bucket>,
}

impl Buckets {
    fn new(now: Instant) -> Buckets {
        Buckets {
            created: now,
            empty: Bucket::new(now),
            far: Vec::new(),
        }
    }
}

impl std::ops::Index<usize> for Buckets {
    type Output = Bucket;

    fn index(&self, i: usize) -> &Bucket {
        (ADDRESS_BITS - 1)
            .checked_sub(i)
            .and_then(|j| self.far.get(j))
            .unwrap_or(&self.empty)
    }
}

impl std::ops::IndexMut<usize> for Buckets {
    /// Stores the buckets down to `i` if they were not yet.
    fn index_mut(&mut self, i: usize) -> &mut Bucket {
        let j = ADDRESS_BITS - 1 - i.min(ADDRESS_BITS - 1);
        while self.far.len() <= j {
            self.far.push(Bucket::new(self.created));
        }
        &mut self.far[j]
    }
}

/// A set of bucket indices (0..160) as three 64-bit words, bit `i` of the
/// set in bit `i % 64` of word `i / 64`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct BucketSet([u64; 3]);

impl BucketSet {
    fn set(&mut self, i: usize, on: bool) {
        let bit = 1u64 << (i % 64);
        if on {
            self.0[i / 64] |= bit;
        } else {
            self.0[i / 64] &= !bit;
        }
    }

    /// The bits of a distance: bit `i` is bit `i` of the 160-bit number
    /// (0 = least significant), the bucket index it selects.
    fn of_distance(d: &Distance) -> BucketSet {
        let b = &d.0;
        let word = |at: usize, len: usize| {
            b[at..at + len]
                .iter()
                .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
        };
        BucketSet([word(12, 8), word(4, 8), word(0, 4)])
    }

    fn and(self, other: BucketSet) -> BucketSet {
        BucketSet([
            self.0[0] & other.0[0],
            self.0[1] & other.0[1],
            self.0[2] & other.0[2],
        ])
    }

    fn and_not(self, other: BucketSet) -> BucketSet {
        BucketSet([
            self.0[0] & !other.0[0],
            self.0[1] & !other.0[1],
            self.0[2] & !other.0[2],
        ])
    }

    /// Remove and return the highest index in the set.
    fn pop_highest(&mut self) -> Option<usize> {
        for w in (0..3).rev() {
            let m = self.0[w];
            if m != 0 {
                let bit = 63 - m.leading_zeros() as usize;
                self.0[w] &= !(1u64 << bit);
                return Some(w * 64 + bit);
            }
        }
        None
    }

    /// Remove and return the lowest index in the set.
    fn pop_lowest(&mut self) -> Option<usize> {
        for w in 0..3 {
            let m = self.0[w];
            if m != 0 {
                let bit = m.trailing_zeros() as usize;
                self.0[w] &= m - 1;
                return Some(w * 64 + bit);
            }
        }
        None
    }
}

/// The non-empty buckets in order of XOR distance from a target, nearest
/// first, without looking at their contents (libp2p's
/// `ClosestBucketsIter`). With `d` = our address XOR the target, bucket
/// `i` holds the contacts `c` whose `c XOR me` has its highest set bit at
/// `i`, so `c XOR target = (c XOR me) XOR d`:
///
/// - if bit `i` of `d` is set, the distances in bucket `i` agree with `d`
///   above bit `i` and have bit `i` clear: every bucket `j < i` has bit `i`
///   set in its distances (it agrees with `d` there), every bucket above
///   `i` differs from `d` higher up. So the buckets at the set bits of `d`
///   come first, highest index first (the target's own bucket leads);
/// - if bit `i` of `d` is clear, bucket `i`'s distances have bit `i` set
///   where every bucket below agrees with `d` (clear): they are farther
///   than all lower buckets. So the buckets at the clear bits of `d` follow,
///   lowest index first.
///
/// The distance ranges of different buckets never overlap, so once whole
/// buckets have yielded `n` contacts, no later bucket holds a nearer one.
struct ClosestBuckets {
    set: BucketSet,
    clear: BucketSet,
}

impl ClosestBuckets {
    fn new(occupied: BucketSet, d: &Distance) -> ClosestBuckets {
        let bits = BucketSet::of_distance(d);
        ClosestBuckets {
            set: occupied.and(bits),
            clear: occupied.and_not(bits),
        }
    }
}

impl Iterator for ClosestBuckets {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        self.set.pop_highest().or_else(|| self.clear.pop_lowest())
    }
}

impl RoutingTable {
    /// An empty table for node `me`.
    pub fn new(me: Address, policy: TablePolicy, now: Instant) -> Self {
        RoutingTable {
            me,
            checks: CheckRate {
                per_sec: policy.liveness_checks_per_sec,
                tokens: f64::from(policy.liveness_checks_per_sec),
                at: now,
            },
            policy,
            buckets: Buckets::new(now),
            occupied: BucketSet::default(),
            endpoints: EndpointFilter::default(),
            len: 0,
        }
    }

    /// Bring the occupancy bit of bucket `index` up to date after a change
    /// to its entries.
    fn note(&mut self, index: usize) {
        let on = !self.buckets[index].entries.is_empty();
        self.occupied.set(index, on);
    }

    /// Rebuild the endpoint filter from the entries (after an eviction,
    /// which may also have promoted a replacement).
    fn refilter(&mut self) {
        let mut f = EndpointFilter::default();
        let mut occupied = self.occupied;
        while let Some(i) = occupied.pop_lowest() {
            for e in &self.buckets[i].entries {
                f.add(&e.contact.addr);
            }
        }
        self.endpoints = f;
    }

    fn prefix_full(&self, index: usize, addr: &SocketAddr, except: Option<&Address>) -> bool {
        let lo = self.policy.loopback;
        let Some(p) = prefix(addr, lo) else {
            return false;
        };
        let same = self.buckets[index]
            .entries
            .iter()
            .filter(|e| Some(&e.contact.id) != except && prefix(&e.contact.addr, lo) == Some(p))
            .count();
        same >= self.policy.max_per_prefix
    }

    /// Whether another identity than `id` is in the table at `addr`: one
    /// endpoint is one node, so a host cannot pose as many.
    fn endpoint_taken(&self, id: &Address, addr: &SocketAddr) -> bool {
        if !self.endpoints.may_contain(addr) {
            return false;
        }
        // Only the occupied buckets: a table has 160, most of them empty.
        let mut occupied = self.occupied;
        std::iter::from_fn(|| occupied.pop_lowest())
            .flat_map(|i| self.buckets[i].entries.iter())
            .any(|e| e.contact.addr == *addr && e.contact.id != *id)
    }

    /// Whether a verified `contact` would be placed or would set off a
    /// liveness check now: worth challenging an unknown requester for.
    /// A contact that would only wait in a replacement cache is not.
    pub fn worth_verifying(&self, contact: &Contact, now: Instant) -> bool {
        let Some(index) = self.me.bucket_index(&contact.id) else {
            return false;
        };
        let bucket = &self.buckets[index];
        if bucket.position(&contact.id).is_some() {
            // Known, at another endpoint: it may have moved.
            return true;
        }
        // The bucket's own state first: in a grown network most buckets
        // are full and fresh, and the endpoint check walks the whole table.
        let room = bucket.entries.len() < self.policy.k
            || (bucket.pending.is_none()
                && bucket.doubtful(now, self.policy.contact_fresh).is_some());
        room && !self.prefix_full(index, &contact.addr, None)
            && !self.endpoint_taken(&contact.id, &contact.addr)
    }

    /// Number of contacts in all buckets.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no contact.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Buckets with their index, nearest (0) first.
    pub fn buckets(&self) -> impl Iterator<Item = (usize, &Bucket)> {
        (0..ADDRESS_BITS).map(|i| (i, &self.buckets[i]))
    }

    /// The entry for `id`, if present.
    pub fn get(&self, id: &Address) -> Option<&Entry> {
        let b = &self.buckets[self.me.bucket_index(id)?];
        b.position(id).map(|i| &b.entries[i])
    }

    /// A request to `id` at `addr` was answered after `rtt`: fold it into
    /// the entry's smoothed round trip (nothing if it is not in the table
    /// there).
    pub fn record_rtt(&mut self, id: &Address, addr: &SocketAddr, rtt: Duration) {
        let Some(index) = self.me.bucket_index(id) else {
            return;
        };
        let bucket = &mut self.buckets[index];
        if let Some(i) = bucket.position(id) {
            let e = &mut bucket.entries[i];
            if e.contact.addr == *addr {
                e.sample_rtt(rtt);
            }
        }
    }

    /// Whether `id` is in the table at exactly `addr`.
    pub fn contains(&self, id: &Address, addr: &SocketAddr) -> bool {
        self.get(id).is_some_and(|e| e.contact.addr == *addr)
    }

    /// Offer a verified contact.
    pub fn insert(&mut self, contact: Contact, now: Instant) -> Insert {
        let Some(index) = self.me.bucket_index(&contact.id) else {
            return Insert::Rejected;
        };
        if let Some(i) = self.buckets[index].position(&contact.id) {
            // A fresh proof from a new endpoint means the node moved, but
            // the move must still respect the prefix limit.
            let bucket = &self.buckets[index];
            let old = bucket.entries[i].contact.addr;
            let moved = old != contact.addr;
            if moved
                && (self.prefix_full(index, &contact.addr, Some(&contact.id))
                    || self.endpoint_taken(&contact.id, &contact.addr))
            {
                return Insert::Rejected;
            }
            let bucket = &mut self.buckets[index];
            bucket.entries[i].contact.addr = contact.addr;
            bucket.touch_at(i, now);
            self.endpoints.add(&contact.addr);
            return Insert::Updated { moved };
        }
        if self.prefix_full(index, &contact.addr, None)
            || self.endpoint_taken(&contact.id, &contact.addr)
        {
            return Insert::Rejected;
        }
        let (k, cap, fresh) = (
            self.policy.k,
            self.policy.replacement_cache,
            self.policy.contact_fresh,
        );
        let bucket = &mut self.buckets[index];
        bucket.last_activity = now;
        if bucket.entries.len() < k {
            bucket.entries.push(Entry {
                contact,
                last_seen: now,
                failures: 0,
                rtt: None,
            });
            bucket.replacements.retain(|c| c.id != contact.id);
            self.len += 1;
            self.note(index);
            self.endpoints.add(&contact.addr);
            return Insert::Added;
        }
        let doubtful = bucket.doubtful(now, fresh);
        let Some(oldest) = doubtful.filter(|_| bucket.pending.is_none() && self.checks.take(now))
        else {
            let bucket = &mut self.buckets[index];
            bucket.cache(contact, cap);
            return Insert::Cached;
        };
        self.buckets[index].pending = Some(Box::new(Pending {
            candidate: contact,
            oldest: oldest.id,
        }));
        Insert::PingOldest { oldest }
    }

    /// Record that `id` at `addr` answered or sent us a request. Returns
    /// whether it is in the table (at that endpoint).
    pub fn touch(&mut self, id: &Address, addr: &SocketAddr, now: Instant) -> bool {
        let Some(index) = self.me.bucket_index(id) else {
            return false;
        };
        let bucket = &mut self.buckets[index];
        match bucket.position(id) {
            Some(i) if bucket.entries[i].contact.addr == *addr => {
                bucket.touch_at(i, now);
                true
            }
            _ => false,
        }
    }

    /// Report the outcome of the liveness ping sent for [`Insert::PingOldest`].
    /// Alive: the oldest stays (now most recent) and the candidate is cached.
    /// Dead: the oldest is evicted and the candidate takes its slot.
    pub fn ping_result(&mut self, oldest: &Address, alive: bool, now: Instant) {
        let Some(index) = self.me.bucket_index(oldest) else {
            return;
        };
        let cap = self.policy.replacement_cache;
        let max_prefix = self.policy.max_per_prefix;
        let bucket = &mut self.buckets[index];
        let Some(pending) = bucket.pending.take_if(|p| p.oldest == *oldest) else {
            return;
        };
        match bucket.position(oldest) {
            Some(i) if !alive => {
                bucket.pending = Some(pending);
                if !bucket.evict_at(i, now, max_prefix, self.policy.loopback) {
                    self.len -= 1;
                }
            }
            Some(i) => {
                bucket.touch_at(i, now);
                bucket.cache(pending.candidate, cap);
            }
            // The oldest left meanwhile: the slot is free for the candidate.
            None => {
                bucket.entries.push(Entry {
                    contact: pending.candidate,
                    last_seen: now,
                    failures: 0,
                    rtt: None,
                });
                self.len += 1;
            }
        }
        self.note(index);
        self.refilter();
    }

    /// Record a failed request to `id`. After `max_failures` in a row the
    /// contact is dropped and a replacement takes its place; returns the
    /// dropped contact.
    pub fn failed(&mut self, id: &Address, max_failures: u32, now: Instant) -> Option<Contact> {
        let index = self.me.bucket_index(id)?;
        let bucket = &mut self.buckets[index];
        let i = bucket.position(id)?;
        bucket.entries[i].failures += 1;
        if bucket.entries[i].failures < max_failures {
            return None;
        }
        if bucket.pending.as_ref().is_some_and(|p| p.oldest == *id) {
            // The liveness check will resolve the pending candidate.
            return None;
        }
        let removed = bucket.entries[i].contact;
        if !bucket.evict_at(i, now, self.policy.max_per_prefix, self.policy.loopback) {
            self.len -= 1;
        }
        self.note(index);
        self.refilter();
        Some(removed)
    }

    /// Up to `n` contacts closest to `target`, closest first.
    pub fn closest(&self, target: &Address, n: usize) -> Vec<Contact> {
        let mut out = Vec::with_capacity(n.min(self.len) + self.policy.k);
        self.closest_into(target, n, &mut out);
        out
    }

    /// [`RoutingTable::closest`] into a caller's buffer (cleared first), so
    /// that a caller answering many requests allocates nothing. Walks the
    /// buckets nearest first and stops after the bucket that brings the
    /// count to `n`: only the contacts of those few buckets are sorted,
    /// each bucket on its own.
    pub fn closest_into(&self, target: &Address, n: usize, out: &mut Vec<Contact>) {
        out.clear();
        if n == 0 {
            return;
        }
        for i in ClosestBuckets::new(self.occupied, &self.me.distance(target)) {
            // Buckets come nearest first and never overlap: only the
            // contacts within one bucket need sorting.
            let start = out.len();
            out.extend(self.buckets[i].entries.iter().map(|e| e.contact));
            out[start..].sort_unstable_by_key(|c| distance_key(&c.id, target));
            if out.len() >= n {
                break;
            }
        }
        out.truncate(n);
    }

    /// Buckets to refresh: idle for `age`, and no nearer than the nearest
    /// non-empty bucket (closer ones are empty by construction).
    pub fn stale_buckets(&self, now: Instant, age: Duration) -> Vec<usize> {
        let Some(nearest) = self.nearest_bucket() else {
            return Vec::new();
        };
        (nearest..ADDRESS_BITS)
            .filter(|&i| now.saturating_duration_since(self.buckets[i].last_activity) >= age)
            .collect()
    }

    /// Note activity in the bucket that `target` falls into (a lookup of it).
    pub fn mark_activity(&mut self, target: &Address, now: Instant) {
        if let Some(i) = self.me.bucket_index(target) {
            self.buckets[i].last_activity = now;
        }
    }

    /// Index of the nearest non-empty bucket.
    pub fn nearest_bucket(&self) -> Option<usize> {
        let mut occupied = self.occupied;
        occupied.pop_lowest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(first: u8, last: u8, host: u8) -> Contact {
        let mut id = [0u8; 20];
        id[0] = first;
        id[19] = last;
        Contact {
            id: Address(id),
            addr: SocketAddr::from(([10, host, 0, 1], 4000)),
        }
    }

    fn policy(k: usize, max_per_prefix: usize) -> TablePolicy {
        TablePolicy {
            k,
            replacement_cache: 2,
            max_per_prefix,
            contact_fresh: Duration::ZERO,
            liveness_checks_per_sec: 100,
            loopback: LoopbackPrefixes::Exempt,
        }
    }

    fn table(now: Instant) -> RoutingTable {
        RoutingTable::new(Address([0; 20]), policy(2, 2), now)
    }

    #[test]
    fn a_fresh_oldest_is_not_pinged_and_checks_are_rate_limited() {
        let now = Instant::now();
        let p = TablePolicy {
            contact_fresh: Duration::from_secs(60),
            liveness_checks_per_sec: 1,
            ..policy(1, 8)
        };
        let mut t = RoutingTable::new(Address([0; 20]), p, now);
        let a = contact(0x80, 1, 1);
        let b = contact(0x80, 2, 2);
        let c = contact(0x40, 1, 3);
        let d = contact(0x40, 2, 4);
        assert_eq!(t.insert(a, now), Insert::Added);
        assert_eq!(t.insert(c, now), Insert::Added);
        // Heard from just now: the newcomer only waits in the cache, and is
        // not worth a challenge.
        assert_eq!(t.insert(b, now), Insert::Cached);
        assert!(!t.worth_verifying(&b, now));
        let later = now + Duration::from_secs(61);
        assert!(t.worth_verifying(&b, later));
        assert_eq!(t.insert(b, later), Insert::PingOldest { oldest: a });
        // The one check this second is spent.
        assert_eq!(t.insert(d, later), Insert::Cached);
        assert_eq!(
            t.insert(d, later + Duration::from_secs(1)),
            Insert::PingOldest { oldest: c }
        );
    }

    #[test]
    fn a_moved_contact_is_reported_and_promotion_respects_the_prefix_limit() {
        let now = Instant::now();
        let mut t = table(now);
        let a = contact(0x80, 1, 1);
        let mut b = contact(0x80, 2, 2);
        assert_eq!(t.insert(a, now), Insert::Added);
        assert_eq!(t.insert(a, now), Insert::Updated { moved: false });
        let mut moved = a;
        moved.addr = SocketAddr::from(([10, 9, 0, 1], 4000));
        assert_eq!(t.insert(moved, now), Insert::Updated { moved: true });
        assert!(t.contains(&a.id, &moved.addr));
        // b shares a's /24; a third from that /24 waits in the cache, and is
        // not promoted over the limit when b fails.
        b.addr = SocketAddr::from(([10, 9, 0, 2], 4000));
        assert_eq!(t.insert(b, now), Insert::Added);
        let mut c = contact(0x80, 3, 3);
        c.addr = SocketAddr::from(([10, 9, 0, 3], 4000));
        assert_eq!(t.insert(c, now), Insert::Rejected);
        let e = contact(0x80, 4, 4);
        assert_eq!(t.insert(e, now), Insert::PingOldest { oldest: moved });
        t.ping_result(&moved.id, true, now);
        t.failed(&b.id, 1, now);
        assert!(t.get(&e.id).is_some());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn full_bucket_pings_oldest_and_evicts_only_on_failure() {
        let now = Instant::now();
        let mut t = table(now);
        let (a, b, c) = (
            contact(0x80, 1, 1),
            contact(0x80, 2, 2),
            contact(0x80, 3, 3),
        );
        assert_eq!(t.insert(a, now), Insert::Added);
        assert_eq!(t.insert(b, now), Insert::Added);
        assert_eq!(t.insert(c, now), Insert::PingOldest { oldest: a });
        // A second newcomer while the check runs goes to the cache.
        let d = contact(0x80, 4, 4);
        assert_eq!(t.insert(d, now), Insert::Cached);
        // Oldest answers: it stays, c waits in the cache.
        t.ping_result(&a.id, true, now);
        assert!(t.get(&a.id).is_some());
        assert!(t.get(&c.id).is_none());
        // b is now oldest; it fails the check and c... takes the slot.
        assert_eq!(t.insert(c, now), Insert::PingOldest { oldest: b });
        t.ping_result(&b.id, false, now);
        assert!(t.get(&b.id).is_none());
        assert!(t.get(&c.id).is_some());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn repeated_failures_drop_and_promote_replacement() {
        let now = Instant::now();
        let mut t = table(now);
        let (a, b, c) = (
            contact(0x80, 1, 1),
            contact(0x80, 2, 2),
            contact(0x80, 3, 3),
        );
        t.insert(a, now);
        t.insert(b, now);
        t.insert(c, now);
        t.ping_result(&a.id, true, now); // c cached
        assert_eq!(t.failed(&b.id, 3, now), None);
        assert_eq!(t.failed(&b.id, 3, now), None);
        assert_eq!(t.failed(&b.id, 3, now), Some(b));
        assert!(t.get(&c.id).is_some());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn success_resets_failures() {
        let now = Instant::now();
        let mut t = table(now);
        let a = contact(0x80, 1, 1);
        t.insert(a, now);
        t.failed(&a.id, 3, now);
        t.failed(&a.id, 3, now);
        assert!(t.touch(&a.id, &a.addr, now));
        assert_eq!(t.failed(&a.id, 3, now), None);
        assert_eq!(t.get(&a.id).map(|e| e.failures), Some(1));
    }

    #[test]
    fn prefix_limit_applies_except_loopback() {
        let now = Instant::now();
        let mut t = RoutingTable::new(Address([0; 20]), policy(8, 2), now);
        for i in 0..3u8 {
            let mut c = contact(0x80, i, 1);
            c.addr = SocketAddr::from(([10, 1, 0, 1 + i], 4000));
            let r = t.insert(c, now);
            assert_eq!(r == Insert::Rejected, i == 2);
        }
        for i in 0..5u8 {
            let mut c = contact(0x40, i, 1);
            c.addr = SocketAddr::from(([127, 0, 0, 1], 4000 + u16::from(i)));
            assert_eq!(t.insert(c, now), Insert::Added);
        }
    }

    #[test]
    fn one_endpoint_is_one_identity_and_loopback_can_be_strict() {
        let now = Instant::now();
        let mut t = RoutingTable::new(Address([0; 20]), policy(8, 2), now);
        let a = contact(0x80, 1, 1);
        let mut b = contact(0x40, 1, 1);
        b.addr = a.addr;
        assert_eq!(t.insert(a, now), Insert::Added);
        assert_eq!(t.insert(b, now), Insert::Rejected, "same endpoint");
        let strict = TablePolicy {
            loopback: LoopbackPrefixes::PerPort,
            ..policy(8, 1)
        };
        let mut t = RoutingTable::new(Address([0; 20]), strict, now);
        let on = |first: u8, port: u16| Contact {
            id: contact(first, port as u8, 0).id,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        assert_eq!(t.insert(on(0x80, 1), now), Insert::Added);
        assert_eq!(t.insert(on(0x81, 2), now), Insert::Added, "another port");
        let mut same_port = on(0x82, 3);
        same_port.addr = SocketAddr::from(([127, 0, 0, 2], 1));
        assert_eq!(
            t.insert(same_port, now),
            Insert::Rejected,
            "port 1's network"
        );
    }

    #[test]
    fn closest_sorts_by_xor_distance() {
        let now = Instant::now();
        let mut t = RoutingTable::new(Address([0; 20]), policy(8, 8), now);
        for i in 1..=20u8 {
            t.insert(contact(i, i, i), now);
        }
        let target = Address([0; 20]);
        let got = t.closest(&target, 3);
        let firsts: Vec<u8> = got.iter().map(|c| c.id.0[0]).collect();
        assert_eq!(firsts, vec![1, 2, 3]);
        assert!(
            t.insert(
                Contact {
                    id: Address([0; 20]),
                    addr: got[0].addr
                },
                now
            ) == Insert::Rejected
        );
    }

    /// Every contact in the table, sorted by distance to `target`.
    fn brute_force(t: &RoutingTable, target: &Address, n: usize) -> Vec<Contact> {
        let mut all: Vec<Contact> = t
            .buckets()
            .flat_map(|(_, b)| b.entries().iter().map(|e| e.contact))
            .collect();
        all.sort_by_key(|c| c.id.distance(target));
        all.truncate(n);
        all
    }

    #[test]
    fn closest_walks_buckets_in_distance_order_like_a_full_sort() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(5);
        let now = Instant::now();
        let mut buf = Vec::new();
        for round in 0..200 {
            let me = Address::random(&mut rng);
            let mut t = RoutingTable::new(me, policy(8, 8), now);
            // From empty to a few hundred contacts, spread over near and
            // far buckets (random ids alone would only fill the far ones).
            let offers = [0, 1, 3, 10, 40, 200, 600][round % 7];
            for j in 0..offers {
                let bucket = if rng.gen_bool(0.5) {
                    rng.gen_range(0..ADDRESS_BITS)
                } else {
                    rng.gen_range(130..ADDRESS_BITS)
                };
                let id = me.random_in_bucket(bucket, &mut rng);
                let addr = SocketAddr::from(([10, (j >> 8) as u8, j as u8, 1], 4000));
                t.insert(Contact { id, addr }, now);
            }
            // Some contacts fail (their slots go to replacements or stay
            // empty) and some liveness checks end, so buckets also empty.
            let ids: Vec<Address> = t
                .buckets()
                .flat_map(|(_, b)| b.entries().iter().map(|e| e.contact.id))
                .collect();
            for id in &ids {
                if rng.gen_bool(0.7) {
                    continue;
                }
                if rng.gen_bool(0.5) {
                    t.failed(id, 1, now);
                } else {
                    t.ping_result(id, rng.gen_bool(0.5), now);
                }
            }
            // Some move to a new endpoint.
            for id in ids.iter().take(3) {
                let addr = SocketAddr::from(([11, rng.gen(), rng.gen(), 1], 4000));
                t.insert(Contact { id: *id, addr }, now);
            }
            let mut occupied = BucketSet::default();
            for (i, b) in t.buckets() {
                occupied.set(i, !b.entries().is_empty());
            }
            assert_eq!(t.occupied, occupied);
            // The endpoint filter never misses an endpoint of the table.
            let stranger = Address::random(&mut rng);
            for (_, b) in t.buckets() {
                for e in b.entries() {
                    assert!(t.endpoints.may_contain(&e.contact.addr));
                    assert!(t.endpoint_taken(&stranger, &e.contact.addr));
                }
            }
            // Targets anywhere, next to us, in the table, and ourselves.
            let mut targets = vec![Address::random(&mut rng), me];
            targets.push(me.random_in_bucket(rng.gen_range(0..ADDRESS_BITS), &mut rng));
            if let Some((_, b)) = t.buckets().find(|(_, b)| !b.entries().is_empty()) {
                targets.push(b.entries()[0].contact.id);
            }
            for target in &targets {
                for n in [0, 1, 2, 8, 9, 16, t.len(), t.len() + 5] {
                    let want = brute_force(&t, target, n);
                    assert_eq!(t.closest(target, n), want, "n = {n}, {} contacts", t.len());
                    t.closest_into(target, n, &mut buf);
                    assert_eq!(buf, want);
                }
            }
        }
    }

    #[test]
    fn bucket_order_is_by_distance_from_the_target() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(6);
        for _ in 0..500 {
            let me = Address::random(&mut rng);
            let target = if rng.gen_bool(0.1) {
                me
            } else {
                me.random_in_bucket(rng.gen_range(0..ADDRESS_BITS), &mut rng)
            };
            let mut occupied = BucketSet::default();
            for i in 0..ADDRESS_BITS {
                occupied.set(i, rng.gen_bool(0.3));
            }
            let order: Vec<usize> = ClosestBuckets::new(occupied, &me.distance(&target)).collect();
            // One sample contact per occupied bucket: sorting them by
            // distance must give the same order.
            let mut samples: Vec<(Distance, usize)> = (0..ADDRESS_BITS)
                .filter(|&i| occupied.0[i / 64] >> (i % 64) & 1 == 1)
                .map(|i| (me.random_in_bucket(i, &mut rng).distance(&target), i))
                .collect();
            samples.sort();
            let sorted: Vec<usize> = samples.into_iter().map(|(_, i)| i).collect();
            assert_eq!(order, sorted);
        }
    }

    #[test]
    fn stale_buckets_start_at_nearest_nonempty() {
        let now = Instant::now();
        let mut t = table(now);
        assert!(t.stale_buckets(now, Duration::ZERO).is_empty());
        t.insert(contact(0x01, 0, 1), now); // bucket 152
        let later = now + Duration::from_secs(10);
        assert_eq!(t.stale_buckets(later, Duration::from_secs(5)).len(), 8);
        t.mark_activity(&contact(0x80, 0, 1).id, later);
        assert_eq!(t.stale_buckets(later, Duration::from_secs(5)).len(), 7);
    }
}
