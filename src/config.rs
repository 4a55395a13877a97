//! Every policy constant of one node in one place, with its default and the
//! reason for it. protocol.md §12 mirrors these values; change both together.
//! Wire constants (sizes every node must agree on) live in [`crate::wire`].

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use crate::routing::LoopbackPrefixes;
use crate::wire::{MAX_CONTACTS, MAX_HOP_LIMIT};

/// Why a [`Config`] cannot run a node.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// k above the wire limit: our `Nodes` replies would be rejected.
    #[error("k = {0} is above the wire limit of {MAX_CONTACTS} contacts per reply")]
    KTooLarge(usize),
    /// Fewer lookup seeds than k, or more than the candidates.
    #[error("lookup_seeds ({0}) must be at least k ({1}) and at most lookup_candidates ({2})")]
    LookupSeeds(usize, usize, usize),
    /// Fewer lookup candidates than k.
    #[error("lookup_candidates ({0}) must be at least k ({1})")]
    TooFewCandidates(usize, usize),
    /// A hop limit above the wire limit: relays would reject our messages.
    #[error("hop_limit {0} is above the wire limit {MAX_HOP_LIMIT}")]
    HopLimit(u32),
    /// A lifetime we could not send or that relays would refuse.
    #[error("default_ttl must be between 1 s and max_ttl")]
    Ttl,
    /// A duration that must not be zero is zero.
    #[error("{0} must not be zero")]
    Zero(&'static str),
    /// `--set` named a setting that cannot be set that way.
    #[error("unknown setting {0:?}; settable: {keys}", keys = SETTABLE.join(", "))]
    UnknownKey(String),
    /// `--set` gave a value that does not parse.
    #[error("{0}: {1:?} is not a valid value")]
    BadValue(String, String),
}

/// Settings `Config::set` (the `--set KEY=VALUE` option) knows.
pub const SETTABLE: &[&str] = &[
    "max_held",
    "max_held_bytes",
    "max_held_per_sender",
    "max_held_per_source",
    "max_routed_acks",
    "max_tombstones",
    "max_outbox",
    "max_inbox",
    "max_unshown",
    "relay_budget",
    "hop_limit",
    "requests_per_sec",
    "requests_burst",
    "stored_bytes_per_sec",
    "default_ttl_secs",
    "refresh_check_secs",
    "key_retry_secs",
    "max_records",
    "max_keys",
    "relay",
    "catchup_quiet_ms",
    "catchup_max_ms",
];

/// Tunable protocol and resource limits of one node.
#[derive(Clone, Debug)]
pub struct Config {
    /// Bucket size and lookup width: how many contacts per bucket and how many
    /// closest nodes a lookup returns. Default 8, as in the Kademlia paper and
    /// the original comm; at most `MAX_CONTACTS` (8), since a `Nodes` reply
    /// carries k contacts and receivers reject more.
    pub k: NonZeroUsize,
    /// Parallel requests per lookup. Default 3 (Kademlia paper): hides one
    /// slow or dead peer without flooding.
    pub alpha: NonZeroUsize,
    /// How long to wait for a response before retrying. Default 1 s: well
    /// above internet round trips; a dead peer fails after 2 s in all, but
    /// lookups stop waiting for it much sooner (`soft_timeout_min`).
    pub rpc_timeout: Duration,
    /// How many times a request is re-sent after a timeout. Default 1: one
    /// lost datagram does not mark a live peer as failed.
    pub rpc_retries: u32,
    /// Floor of the soft timeout. A lookup stops counting a peer as in
    /// flight after twice that peer's last round trip, or for a peer never
    /// measured after 1.5 × the slowest of the last 64 round trips (half of
    /// `rpc_timeout` until 16 were seen), but never sooner than this; a
    /// late answer is still used. Default 25 ms: above scheduling noise on
    /// one host, far below internet round trips, where the estimates rule.
    pub soft_timeout_min: Duration,
    /// Requests a node may have in flight at once. Default 256. Bounds
    /// memory and fan-out bursts; further requests wait in a queue.
    pub max_inflight_rpcs: NonZeroUsize,
    /// Requests that may wait for a free slot. Default 4096; beyond it a
    /// request is not sent (`rpc_limit`) and counts as failed at once.
    pub rpc_queue: usize,
    /// Requests that failed but whose late answer is still accepted, and
    /// for how long. Default 256 for one `rpc_timeout`: a slow peer's answer
    /// still refreshes it and still helps a running lookup.
    pub late_answers: usize,
    /// Concurrent lookups. Default 32; user lookups beyond it are refused,
    /// relay lookups fall back on the routing table.
    pub max_lookups: NonZeroUsize,
    /// Candidates a lookup remembers. Default 64 (8k): far ones beyond this
    /// cannot enter the k closest unless many nearer ones fail.
    pub lookup_candidates: usize,
    /// Contacts of the routing table a lookup starts from. Default 16
    /// (2k); at least k, at most `lookup_candidates`. Only the k closest
    /// not known to be dead are asked, so the rest matter only when seeds
    /// fail: a node back from hours offline often finds its k closest
    /// contacts to a target all gone, and with k seeds its lookup then
    /// ended empty (comm-sim, 1,000 nodes with churn: 1 in 100 relay
    /// lookups, whose message was then placed far from its recipient).
    pub lookup_seeds: usize,
    /// Side queries a lookup may send. Default 2. When the k closest
    /// candidates not known to be dead have answered but dead ones were
    /// among the nearer candidates, every answer for the target spends
    /// places on those dead contacts and leaves out live ones just past
    /// them. A side query asks one answered candidate for the target with
    /// one bit flipped: the bit that starts the subtree (bucket of the
    /// distance to the target) of the k-th closest answered, then of the
    /// nearest subtree holding a dead candidate; within a subtree the order
    /// by distance is the same for both targets, so the answer lists that
    /// subtree's next contacts. Issue #9, 1,000 nodes with 30% silently
    /// gone: 0 gives recall 0.895 at 15.5 RPCs, 1 gives 0.953 at 17.3,
    /// 2 gives 0.988 at 18.6, 3 gives 0.992 at 19.3. Healthy lookups never
    /// send one; 0 turns them off.
    pub lookup_widen: usize,
    /// How long a finished relay lookup's result is reused for further
    /// messages to (or acks for) the same address. Default 30 s: a burst of
    /// messages to one person costs one lookup.
    pub lookup_cache_ttl: Duration,
    /// Lookup results remembered. Default 64; the oldest is forgotten first.
    pub lookup_cache: usize,
    /// Consecutive failed requests after which a contact is dropped from the
    /// routing table. Default 3.
    pub max_failures: NonZeroU32,
    /// Replacement-cache entries per bucket: verified contacts waiting for a
    /// slot. Default 4.
    pub replacement_cache: usize,
    /// A full bucket's oldest contact heard from within this long is kept
    /// without a check: a newcomer waits in the replacement cache. Default
    /// 15 minutes (BEP 5's "good" node). Older ones are pinged first.
    pub contact_fresh: Duration,
    /// Liveness checks of a bucket's oldest contact per second, node-wide.
    /// Default 4 (burst 4): newcomers cannot make a node ping its table.
    pub liveness_checks_per_sec: u32,
    /// A bucket with no activity for this long is refreshed by looking up a
    /// random id in its range. Default 1 hour (Kademlia paper).
    pub bucket_refresh: Duration,
    /// How often the node checks for stale buckets. Default 60 s.
    pub refresh_check: Duration,
    /// Shortest time between two snapshots of the routing table to disk
    /// (taken at a maintenance tick, when it changed). Default 10 minutes:
    /// under churn the table changes every minute, and a restart needs only
    /// a few of its contacts to answer.
    pub contacts_snapshot: Duration,
    /// First wait before retrying bootstrap while the routing table is
    /// empty. Default 15 s; doubles up to `bootstrap_retry_max`.
    pub bootstrap_retry: Duration,
    /// Cap on the bootstrap retry interval. Default 10 minutes.
    pub bootstrap_retry_max: Duration,
    /// Verified-but-unplaced contacts remembered so they are not challenged
    /// again. Default 256: the cache has 256 slots of 8 bytes, one per
    /// keyed digest of a pair; a later pair in the same slot replaces the
    /// earlier.
    pub verified_cache: usize,
    /// Contacts per /24 (IPv4) or /48 (IPv6) prefix in one bucket. Default 2:
    /// one host cannot fill a bucket with sybils. Loopback is exempt so
    /// local test networks work.
    pub max_per_prefix: usize,
    /// How loopback endpoints count for every prefix limit. Default
    /// `Exempt`, so that many nodes on one machine form a network; tests
    /// of the limits use `PerPort` (each port a network of its own).
    pub loopback: LoopbackPrefixes,
    /// Whether this node holds and relays messages for others. Default
    /// true. A node that does not answers their `Store`s refused (status 4).
    pub relay: bool,
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
    /// Held messages, our own undelivered ones included (those are never
    /// evicted). Default 4096; when full, the network holding the most here
    /// gives up its message whose recipient is farthest from us (if it holds
    /// more than the newcomer's network), or the newcomer is answered busy.
    pub max_held: usize,
    /// Total body bytes of held messages. Default 4 MiB; same eviction.
    pub max_held_bytes: usize,
    /// Held messages from one sender. Default 1024 (a quarter of
    /// `max_held`): one sender cannot fill a relay, and a long conversation
    /// with someone who is away still fits. Beyond it a `Store` is answered
    /// busy (status 5) and the sender offers it again later.
    pub max_held_per_sender: usize,
    /// Held messages that came from one network (/24, /48). Default 1024
    /// (a quarter of `max_held`): keys are free, networks are not, so this
    /// is the quota an attacker cannot multiply. Beyond it: busy.
    pub max_held_per_source: usize,
    /// Message body bytes one network may have a relay store per second.
    /// Default 64 KiB/s, with a burst of a quarter of `max_held_bytes`
    /// (1 MiB): a conversation's burst fits; a flood is paced. Beyond it:
    /// busy.
    pub stored_bytes_per_sec: usize,
    /// Requests one network may send per second, and the burst. Default
    /// 200/s, burst 2000; further requests are dropped unanswered
    /// (`rate_limited`). Loopback is exempt unless `loopback` says not.
    pub requests_per_sec: u32,
    /// See `requests_per_sec`.
    pub requests_burst: u32,
    /// Public keys remembered (to seal messages to their recipients).
    /// Default 4096; the earliest learned is forgotten first.
    pub max_keys: usize,
    /// How long our own identity record may be kept. Default 7 days (a key
    /// never changes for an address; expiry only lets stores forget).
    pub record_ttl: Duration,
    /// How often our record is published again at the k nodes closest to
    /// us (they change with churn). Default 1 hour; sooner while fewer
    /// than k nodes have confirmed keeping it and more are known.
    pub record_republish: Duration,
    /// Least time between two warnings that this identity runs twice (per
    /// endpoint it was seen at): the sign from datagrams can be forged, so
    /// it must not flood the user.
    pub twin_warning_interval: Duration,
    /// Longest lifetime a record we keep for others may claim. Default 8
    /// days (`record_ttl` plus a day of clock skew); longer ones are refused.
    pub max_record_ttl: Duration,
    /// Identity records kept for others. Default 4096; beyond it the record
    /// of the address farthest from ours gives way (if the newcomer is nearer).
    pub max_records: usize,
    /// How often the secret behind write tokens changes. Default 5 minutes;
    /// a token is good for this period and the next.
    pub token_rotation: Duration,
    /// First wait before looking again for a key that could not be found.
    /// Default 30 s, doubling up to `key_retry_max` (10 minutes).
    pub key_retry: Duration,
    /// See `key_retry`.
    pub key_retry_max: Duration,
    /// Acks being routed towards their senders. Default 4096; beyond it the
    /// one expiring soonest stops being routed (its tombstone stays).
    pub max_routed_acks: usize,
    /// Acks kept as tombstones. Default 16384; the one expiring soonest is
    /// evicted first.
    pub max_tombstones: usize,
    /// Extra time a tombstone is kept after the message's expiry, so late
    /// copies still meet the ack. Default 1 hour.
    pub tombstone_margin: Duration,
    /// Messages in our outbox (sent, not yet delivered or expired). Default
    /// 1024; further sends are refused until some are delivered or expire.
    pub max_outbox: usize,
    /// Received messages remembered to show each once. Default 16384; the
    /// shown one expiring soonest is forgotten first.
    pub max_inbox: usize,
    /// Received messages waiting to be shown (the front end is not taking
    /// them). Default 1024; beyond it new messages are answered busy and
    /// stay with their relays, so a stalled terminal costs bounded memory
    /// and loses nothing.
    pub max_unshown: usize,
    /// Peers remembered per held message as holding or having been sent a
    /// copy (for purging them when the ack comes). Default 64; further
    /// claims are not recorded.
    pub max_tracked_peers: usize,
    /// Steps a user lookup records for `/lookup`'s round-by-round path
    /// (`LookupResult::path`). Default 64; later steps are not recorded.
    /// The node's own lookups record none.
    pub lookup_path_max: usize,
    /// Catch-up window, quiet part: after a start or a rejoin, once every
    /// `Pull` is answered, received messages are kept back until none has
    /// arrived for this long (or the largest count a relay reported has
    /// arrived), then shown together in the order they were written.
    /// Default 1.5 s: copies pushed by different relays arrive within a
    /// few round trips of each other. Local behaviour, not on the wire.
    pub catchup_quiet: Duration,
    /// Catch-up window, longest: messages are never kept back longer than
    /// this after the window opened, whatever relays do. Default 15 s.
    pub catchup_max: Duration,
    /// A relay drops its copy of someone else's message once it knows this
    /// many other holders strictly closer to the recipient than itself
    /// (0: never). Default 8 (k): copies move inwards, and under churn the
    /// nodes that were ever online inside the first circle all end up with
    /// one; those farther out than k known holders add little (the
    /// recipient and the holders near it find each other first) and were
    /// most of the copies above 32 in `comm-sim`. The closest holders never
    /// drop theirs, so a message is never left with fewer than this many.
    pub surplus_holders: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            k: NonZeroUsize::new(8).unwrap_or(NonZeroUsize::MIN),
            alpha: NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
            rpc_timeout: Duration::from_secs(1),
            rpc_retries: 1,
            soft_timeout_min: Duration::from_millis(25),
            max_inflight_rpcs: NonZeroUsize::new(256).unwrap_or(NonZeroUsize::MIN),
            rpc_queue: 4096,
            late_answers: 256,
            max_lookups: NonZeroUsize::new(32).unwrap_or(NonZeroUsize::MIN),
            lookup_candidates: 64,
            lookup_seeds: 16,
            lookup_widen: 2,
            lookup_cache_ttl: Duration::from_secs(30),
            lookup_cache: 64,
            max_failures: NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN),
            replacement_cache: 4,
            contact_fresh: Duration::from_secs(15 * 60),
            liveness_checks_per_sec: 4,
            bucket_refresh: Duration::from_secs(3600),
            refresh_check: Duration::from_secs(60),
            contacts_snapshot: Duration::from_secs(600),
            bootstrap_retry: Duration::from_secs(15),
            bootstrap_retry_max: Duration::from_secs(600),
            verified_cache: 256,
            max_per_prefix: 2,
            loopback: LoopbackPrefixes::Exempt,
            relay: true,
            default_ttl: Duration::from_secs(3 * 24 * 3600),
            max_ttl: Duration::from_secs(7 * 24 * 3600),
            clock_skew: Duration::from_secs(300),
            hop_limit: 4,
            relay_budget: 32,
            relay_backoff: Duration::from_secs(30),
            relay_backoff_max: Duration::from_secs(3600),
            max_held: 4096,
            max_held_bytes: 4 << 20,
            max_held_per_sender: 1024,
            max_held_per_source: 1024,
            stored_bytes_per_sec: 64 << 10,
            requests_per_sec: 200,
            requests_burst: 2000,
            max_keys: 4096,
            record_ttl: Duration::from_secs(7 * 24 * 3600),
            record_republish: Duration::from_secs(3600),
            twin_warning_interval: Duration::from_secs(3600),
            max_record_ttl: Duration::from_secs(8 * 24 * 3600),
            max_records: 4096,
            token_rotation: Duration::from_secs(300),
            key_retry: Duration::from_secs(30),
            key_retry_max: Duration::from_secs(600),
            max_routed_acks: 4096,
            max_tombstones: 16384,
            tombstone_margin: Duration::from_secs(3600),
            max_outbox: 1024,
            max_inbox: 16384,
            max_unshown: 1024,
            max_tracked_peers: 64,
            lookup_path_max: 64,
            catchup_quiet: Duration::from_millis(1500),
            catchup_max: Duration::from_secs(15),
            surplus_holders: 8,
        }
    }
}

impl Config {
    /// Change one setting from text (`--set KEY=VALUE`); the result still
    /// has to pass [`Config::validate`].
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let bad = || ConfigError::BadValue(key.to_string(), value.to_string());
        let n = || value.parse::<usize>().map_err(|_| bad());
        let n32 = || value.parse::<u32>().map_err(|_| bad());
        match key {
            "max_held" => self.max_held = n()?,
            "max_held_bytes" => self.max_held_bytes = n()?,
            "max_held_per_sender" => self.max_held_per_sender = n()?,
            "max_held_per_source" => self.max_held_per_source = n()?,
            "max_routed_acks" => self.max_routed_acks = n()?,
            "max_tombstones" => self.max_tombstones = n()?,
            "max_outbox" => self.max_outbox = n()?,
            "max_inbox" => self.max_inbox = n()?,
            "max_unshown" => self.max_unshown = n()?,
            "relay_budget" => self.relay_budget = n32()?,
            "hop_limit" => self.hop_limit = n32()?,
            "requests_per_sec" => self.requests_per_sec = n32()?,
            "requests_burst" => self.requests_burst = n32()?,
            "stored_bytes_per_sec" => self.stored_bytes_per_sec = n()?,
            "default_ttl_secs" => self.default_ttl = Duration::from_secs(n32()?.into()),
            "refresh_check_secs" => self.refresh_check = Duration::from_secs(n32()?.into()),
            "key_retry_secs" => self.key_retry = Duration::from_secs(n32()?.into()),
            "max_records" => self.max_records = n()?,
            "max_keys" => self.max_keys = n()?,
            "relay" => self.relay = value.parse().map_err(|_| bad())?,
            "surplus_holders" => self.surplus_holders = n()?,
            "catchup_quiet_ms" => self.catchup_quiet = Duration::from_millis(n32()?.into()),
            "catchup_max_ms" => self.catchup_max = Duration::from_millis(n32()?.into()),
            _ => return Err(ConfigError::UnknownKey(key.to_string())),
        }
        Ok(())
    }

    /// Check that a node can run with this configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let k = self.k.get();
        if k > MAX_CONTACTS {
            return Err(ConfigError::KTooLarge(k));
        }
        if self.lookup_candidates < k {
            return Err(ConfigError::TooFewCandidates(self.lookup_candidates, k));
        }
        if self.lookup_seeds < k || self.lookup_seeds > self.lookup_candidates {
            return Err(ConfigError::LookupSeeds(
                self.lookup_seeds,
                k,
                self.lookup_candidates,
            ));
        }
        if self.hop_limit > MAX_HOP_LIMIT {
            return Err(ConfigError::HopLimit(self.hop_limit));
        }
        if self.default_ttl < Duration::from_secs(1) || self.default_ttl > self.max_ttl {
            return Err(ConfigError::Ttl);
        }
        for (name, d) in [
            ("rpc_timeout", self.rpc_timeout),
            ("refresh_check", self.refresh_check),
            ("bootstrap_retry", self.bootstrap_retry),
            ("relay_backoff", self.relay_backoff),
            ("soft_timeout_min", self.soft_timeout_min),
            ("record_ttl", self.record_ttl),
            ("record_republish", self.record_republish),
            ("token_rotation", self.token_rotation),
            ("key_retry", self.key_retry),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.max_unshown == 0 {
            return Err(ConfigError::Zero("max_unshown"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid_and_bad_values_are_named() {
        assert_eq!(Config::default().validate(), Ok(()));
        let c = Config {
            k: NonZeroUsize::new(9).unwrap(),
            ..Config::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::KTooLarge(9)));
        let c = Config {
            hop_limit: 17,
            ..Config::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::HopLimit(17)));
        let c = Config {
            rpc_timeout: Duration::ZERO,
            ..Config::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::Zero("rpc_timeout")));
        let c = Config {
            default_ttl: Duration::from_secs(8 * 24 * 3600),
            ..Config::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::Ttl));
    }

    #[test]
    fn settings_can_be_changed_by_name() {
        let mut c = Config::default();
        c.set("max_inbox", "16").unwrap();
        c.set("relay", "false").unwrap();
        assert_eq!((c.max_inbox, c.relay), (16, false));
        c.set("catchup_quiet_ms", "200").unwrap();
        c.set("catchup_max_ms", "3000").unwrap();
        assert_eq!(
            (c.catchup_quiet, c.catchup_max),
            (Duration::from_millis(200), Duration::from_secs(3))
        );
        assert!(matches!(c.set("k", "3"), Err(ConfigError::UnknownKey(_))));
        assert!(matches!(
            c.set("max_inbox", "x"),
            Err(ConfigError::BadValue(..))
        ));
    }
}
