//! Every protocol constant in one place, with its default and the reason for it.
//! protocol.md mirrors these values; change both together.

use std::time::Duration;

/// Protocol version carried in every packet.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest UDP payload comm sends or accepts: the IPv6 minimum MTU (1280)
/// less the IPv6 (40) and UDP (8) headers, so a datagram never needs
/// fragmentation on any path that carries IPv6.
pub const MAX_DATAGRAM: usize = 1232;

/// Largest message body in bytes: a `Store` of this size, with a
/// challenge, still fits [`MAX_DATAGRAM`] (checked by a test in `wire`).
pub const MAX_BODY: usize = 1000;

/// Largest hop limit a message may carry.
pub const MAX_HOP_LIMIT: u32 = 16;

/// Length of a challenge nonce in bytes.
pub const CHALLENGE_LEN: usize = 16;

/// Tunable protocol and resource limits of one node.
#[derive(Clone, Debug)]
pub struct Config {
    /// Bucket size and lookup width: how many contacts per bucket and how many
    /// closest nodes a lookup returns. Default 8, as in the Kademlia paper and
    /// the original comm; enough redundancy for churn with small replies.
    pub k: usize,
    /// Parallel requests per lookup. Default 3 (Kademlia paper): hides one
    /// slow or dead peer without flooding.
    pub alpha: usize,
    /// How long to wait for a response before retrying. Default 1 s: well
    /// above internet round trips, short enough that a dead peer costs a
    /// lookup only two seconds.
    pub rpc_timeout: Duration,
    /// How many times a request is re-sent after a timeout. Default 1: one
    /// lost datagram does not mark a live peer as failed.
    pub rpc_retries: u32,
    /// Requests a node may have in flight at once; further ones are not
    /// sent (a lookup counts such a candidate as failed, a relay retries it
    /// at its next attempt). Default 256. Bounds memory and fan-out bursts.
    pub max_inflight_rpcs: usize,
    /// Concurrent lookups. Default 32; more are refused with an error.
    pub max_lookups: usize,
    /// Candidates a lookup remembers. Default 64 (8k): far ones beyond this
    /// cannot enter the k closest unless many nearer ones fail.
    pub lookup_candidates: usize,
    /// Consecutive failed requests after which a contact is dropped from the
    /// routing table. Default 3.
    pub max_failures: u32,
    /// Replacement-cache entries per bucket: verified contacts waiting for a
    /// slot. Default 4.
    pub replacement_cache: usize,
    /// A bucket with no activity for this long is refreshed by looking up a
    /// random id in its range. Default 1 hour (Kademlia paper).
    pub bucket_refresh: Duration,
    /// How often the node checks for stale buckets. Default 60 s.
    pub refresh_check: Duration,
    /// First wait before retrying bootstrap while the routing table is
    /// empty. Default 15 s; doubles up to `bootstrap_retry_max`.
    pub bootstrap_retry: Duration,
    /// Cap on the bootstrap retry interval. Default 10 minutes.
    pub bootstrap_retry_max: Duration,
    /// Verified-but-unplaced contacts remembered so they are not challenged
    /// again. Default 256; the earliest verified is evicted first.
    pub verified_cache: usize,
    /// Contacts per /24 (IPv4) or /48 (IPv6) prefix in one bucket. Default 2:
    /// one host cannot fill a bucket with sybils. Loopback is exempt so
    /// local test networks work.
    pub max_per_prefix: usize,
    /// Lifetime given to messages sent from this node. Default 3 days: a
    /// recipient who is away for a weekend still gets them.
    pub default_ttl: Duration,
    /// Longest lifetime a relay accepts. Default 7 days; bounds how long a
    /// relay's storage can be claimed by one message.
    pub max_ttl: Duration,
    /// How far in the future a creation time may be (clock skew between
    /// sender and relay). Default 5 minutes; later ones are refused.
    pub clock_skew: Duration,
    /// Hop limit given to messages sent from this node, and to acks routed
    /// to their sender. Default 4: the sender's lookup already reaches the
    /// recipient's neighbourhood, hops only absorb churn.
    pub hop_limit: u32,
    /// Transmissions of one message (or ack) a node makes before it stops
    /// relaying it. Default 32: four full rounds of k = 8.
    pub relay_budget: u32,
    /// First re-relay delay. Default 30 s; doubles per attempt.
    pub relay_backoff: Duration,
    /// Cap on the re-relay delay. Default 1 hour.
    pub relay_backoff_max: Duration,
    /// Held messages (not counting our own outbox). Default 4096; when full
    /// the message whose recipient is farthest from us is evicted first
    /// (we are the least responsible for it), or the new one is refused.
    pub max_held: usize,
    /// Total body bytes of held messages. Default 4 MiB; same eviction.
    pub max_held_bytes: usize,
    /// Held messages from one sender. Default 256; more are refused so one
    /// sender cannot fill a relay.
    pub max_held_per_sender: usize,
    /// Acks kept as tombstones. Default 16384; the one expiring soonest is
    /// evicted first.
    pub max_tombstones: usize,
    /// Extra time a tombstone is kept after the message's expiry, so late
    /// copies still meet the ack. Default 1 hour.
    pub tombstone_margin: Duration,
    /// Messages in our outbox (sent, not yet delivered or expired). Default
    /// 1024; further sends are refused until some are delivered or expire.
    pub max_outbox: usize,
    /// Ids of received messages remembered to show each once. Default
    /// 16384; the one expiring soonest is forgotten first.
    pub max_inbox: usize,
    /// Peers remembered per held message as holding or having been sent a
    /// copy (for purging them when the ack comes). Default 64; further
    /// claims are not recorded.
    pub max_tracked_peers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            k: 8,
            alpha: 3,
            rpc_timeout: Duration::from_secs(1),
            rpc_retries: 1,
            max_inflight_rpcs: 256,
            max_lookups: 32,
            lookup_candidates: 64,
            max_failures: 3,
            replacement_cache: 4,
            bucket_refresh: Duration::from_secs(3600),
            refresh_check: Duration::from_secs(60),
            bootstrap_retry: Duration::from_secs(15),
            bootstrap_retry_max: Duration::from_secs(600),
            verified_cache: 256,
            max_per_prefix: 2,
            default_ttl: Duration::from_secs(3 * 24 * 3600),
            max_ttl: Duration::from_secs(7 * 24 * 3600),
            clock_skew: Duration::from_secs(300),
            hop_limit: 4,
            relay_budget: 32,
            relay_backoff: Duration::from_secs(30),
            relay_backoff_max: Duration::from_secs(3600),
            max_held: 4096,
            max_held_bytes: 4 << 20,
            max_held_per_sender: 256,
            max_tombstones: 16384,
            tombstone_margin: Duration::from_secs(3600),
            max_outbox: 1024,
            max_inbox: 16384,
            max_tracked_peers: 64,
        }
    }
}
