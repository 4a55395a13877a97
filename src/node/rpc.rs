//! The request layer: open transactions, the queue of requests waiting for
//! a slot, retransmission, the round-trip estimate behind soft timeouts, and
//! a short memory of failed requests so that a late answer still counts.
//!
//! It owns no socket and no clock: the node hands it prepared requests, the
//! current time, the timer table and a sink for datagrams.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::timers::{Timer, TimerTable};
use crate::address::Address;
use crate::config::Config;
use crate::limits::{trim, FastMap};
use crate::lookup::LookupId;
use crate::relay::RelayRequest;
use crate::wire::CHALLENGE_LEN;

/// A request's transaction id.
pub(crate) type TxId = u64;

/// Why a request was sent, so its answer or failure reaches the right part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Challenge ping to a bootstrap endpoint whose address we do not know.
    Bootstrap,
    /// Challenge ping to a node that contacted us, before it may enter the table.
    Verify,
    /// Liveness ping of a full bucket's oldest entry.
    CheckOldest,
    /// One step of a lookup.
    FindNode(LookupId),
    /// One step of a lookup that also asks for the target's identity record
    /// (and a write token).
    FindRecord(LookupId),
    /// Publishing our identity record.
    PutRecord,
    /// A request of the relay, and whether it serves our own messages.
    Relay(RelayRequest, bool),
}

impl Purpose {
    /// Whether the request serves this node's own user (its lookups, its
    /// messages, its join) rather than the network (relaying for others,
    /// checking contacts): such requests may use every slot, the others
    /// leave `RESERVED_SHARE` of the slots free, so that peers that never
    /// answer cannot starve the node's own traffic.
    pub(crate) fn own(self) -> bool {
        matches!(
            self,
            Purpose::Bootstrap
                | Purpose::FindNode(_)
                | Purpose::FindRecord(_)
                | Purpose::PutRecord
                | Purpose::Relay(_, true)
        )
    }

    /// Whether a soft timeout matters to whoever sent it.
    fn wants_soft_timeout(self) -> bool {
        matches!(
            self,
            Purpose::FindNode(_)
                | Purpose::FindRecord(_)
                | Purpose::Relay(RelayRequest::Store(_), _)
        )
    }
}

/// Share of the in-flight slots (1/4) that requests for others may not
/// take: kept for the node's own traffic.
const RESERVED_SHARE: usize = 4;

/// One request.
#[derive(Clone, Debug)]
pub(crate) struct Rpc {
    pub(crate) to: SocketAddr,
    pub(crate) expect: Option<Address>,
    pub(crate) challenge: Option<[u8; CHALLENGE_LEN]>,
    pub(crate) payload: Bytes,
    pub(crate) purpose: Purpose,
    sent_at: Option<Instant>,
    retries_left: u32,
    retransmitted: bool,
    /// Its soft timeout passed before it was answered.
    pub(crate) slow: bool,
    /// Its timer is set for the soft timeout; the retransmission deadline
    /// (`hard_at`) comes after. One timer per request, moved from one to
    /// the other, instead of two: most requests are answered before
    /// either, and each timer costs a heap push and a map entry.
    soft_pending: bool,
    /// When to retransmit or fail it.
    hard_at: Option<Instant>,
    /// It serves this node's own user (see [`Purpose::own`]).
    pub(crate) own: bool,
    /// Its round trip, once answered without a retransmission (Karn: a
    /// retransmitted request's answer cannot be timed).
    pub(crate) rtt: Option<Duration>,
}

impl Rpc {
    pub(crate) fn new(
        to: SocketAddr,
        expect: Option<Address>,
        challenge: Option<[u8; CHALLENGE_LEN]>,
        payload: Bytes,
        purpose: Purpose,
    ) -> Rpc {
        Rpc {
            to,
            expect,
            challenge,
            payload,
            purpose,
            sent_at: None,
            retries_left: 0,
            retransmitted: false,
            slow: false,
            soft_pending: false,
            hard_at: None,
            own: purpose.own(),
            rtt: None,
        }
    }
}

/// Smoothed round trip and its variation (RFC 6298, without the clock
/// granularity term).
#[derive(Clone, Copy, Debug, Default)]
struct Rtt {
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl Rtt {
    fn sample(&mut self, r: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(s) => {
                let diff = if s > r { s - r } else { r - s };
                self.rttvar = self.rttvar * 3 / 4 + diff / 4;
                self.srtt = Some(s * 7 / 8 + r / 8);
            }
        }
    }
}

/// Round trips seen recently: the slowest of them bounds how long an
/// unknown peer may take; each peer's own last round trip bounds its own.
#[derive(Clone, Debug, Default)]
struct RecentRtts {
    ring: VecDeque<Duration>,
    /// Last round trip per endpoint, direct-mapped: slot `hash % RTT_SLOTS`
    /// holds `(tag, microseconds)` of the endpoint measured there last, a
    /// newer endpoint in the same slot replacing it. 8 bytes a slot,
    /// allocated on the first sample: a node simulated ten thousand times
    /// over cannot afford a map of every peer it ever timed.
    per_peer: Option<Box<[(u32, u32); RTT_SLOTS]>>,
}

/// Round trips kept for the "slowest recent" estimate.
const RTT_RING: usize = 64;
/// Samples needed before 1.5 × the slowest of them stands for an unknown
/// peer; until then it gets 4 × the slowest, at most half the request
/// timeout (and half the request timeout before any sample).
const RTT_TRUSTED: usize = 16;
/// Slots of the per-endpoint round-trip memory.
const RTT_SLOTS: usize = 256;

/// The slot and the tag of endpoint `peer` in the per-endpoint memory; the
/// tag is never 0, so an empty slot matches nothing. Two endpoints sharing
/// slot and tag (one chance in 2^32 per pair) share an estimate, which
/// only shapes a timer.
fn rtt_slot(peer: &SocketAddr) -> (usize, u32) {
    let h = crate::routing::endpoint_hash(peer);
    ((h as usize) % RTT_SLOTS, ((h >> 32) as u32).max(1))
}

impl RecentRtts {
    fn sample(&mut self, peer: SocketAddr, r: Duration) {
        if self.ring.len() >= RTT_RING {
            self.ring.pop_front();
        }
        self.ring.push_back(r);
        let (slot, tag) = rtt_slot(&peer);
        let micros = u32::try_from(r.as_micros()).unwrap_or(u32::MAX);
        self.per_peer
            .get_or_insert_with(|| Box::new([(0, 0); RTT_SLOTS]))[slot] = (tag, micros);
    }

    /// The last round trip measured to `peer`, if it is still remembered.
    fn of(&self, peer: &SocketAddr) -> Option<Duration> {
        let (slot, tag) = rtt_slot(peer);
        let (t, micros) = self.per_peer.as_ref()?[slot];
        (t == tag).then(|| Duration::from_micros(u64::from(micros)))
    }

    /// The slowest recent round trip, and whether there are enough
    /// samples to trust it.
    fn slowest(&self) -> Option<(Duration, bool)> {
        let max = self.ring.iter().max().copied()?;
        Some((max, self.ring.len() >= RTT_TRUSTED))
    }
}

/// What a request's deadline led to.
pub(crate) enum Deadline {
    /// Its soft timeout passed: whoever waits on it may stop waiting.
    Soft,
    /// Sent again.
    Retransmitted,
    /// No answer after every retry: the request failed.
    Failed(Rpc),
}

/// The request layer.
#[derive(Debug)]
pub(crate) struct Rpcs {
    open: FastMap<TxId, Rpc>,
    waiting: FastMap<TxId, Rpc>,
    /// Waiting requests of the node's own user, then the others'.
    queue: VecDeque<TxId>,
    queue_others: VecDeque<TxId>,
    /// Open requests that serve others.
    open_others: usize,
    per_endpoint: FastMap<SocketAddr, u32>,
    late: FastMap<TxId, (Rpc, Instant)>,
    late_order: VecDeque<TxId>,
    rtt: Rtt,
    recent: RecentRtts,
    cap: usize,
    queue_cap: usize,
    late_cap: usize,
    timeout: Duration,
    retries: u32,
    soft_min: Duration,
}

impl Rpcs {
    pub(crate) fn new(c: &Config) -> Rpcs {
        Rpcs {
            open: FastMap::default(),
            waiting: FastMap::default(),
            queue: VecDeque::new(),
            queue_others: VecDeque::new(),
            open_others: 0,
            per_endpoint: FastMap::default(),
            late: FastMap::default(),
            late_order: VecDeque::new(),
            rtt: Rtt::default(),
            recent: RecentRtts::default(),
            cap: c.max_inflight_rpcs.get(),
            queue_cap: c.rpc_queue,
            late_cap: c.late_answers,
            timeout: c.rpc_timeout,
            retries: c.rpc_retries,
            soft_min: c.soft_timeout_min,
        }
    }

    /// Whether `txid` is in use (open, queued or remembered as failed).
    pub(crate) fn contains(&self, txid: TxId) -> bool {
        self.open.contains_key(&txid)
            || self.waiting.contains_key(&txid)
            || self.late.contains_key(&txid)
    }

    /// Requests sent and not yet answered or failed.
    pub(crate) fn open_len(&self) -> usize {
        self.open.len()
    }

    /// Requests waiting for a free slot.
    pub(crate) fn queued_len(&self) -> usize {
        self.queue.len() + self.queue_others.len()
    }

    /// Whether a request of this kind may take a slot now.
    fn slot_free(&self, own: bool) -> bool {
        self.open.len() < self.cap
            && (own || self.open_others < self.cap - self.cap / RESERVED_SHARE)
    }

    /// Whether a request to `addr` is open or queued.
    pub(crate) fn has_request_to(&self, addr: &SocketAddr) -> bool {
        self.per_endpoint.contains_key(addr)
    }

    /// The soft timeout for a request to `peer`: how long a lookup waits
    /// for it before it stops counting it as in flight. Twice the peer's
    /// last round trip if we know it; otherwise one and a half times the
    /// slowest recent round trip (a node-wide mean would write off every
    /// peer slower than average), or, until 16 round trips were seen, four
    /// times the slowest but at most half the request timeout; never below
    /// `soft_timeout_min`, never past the request timeout.
    pub(crate) fn soft_timeout(&self, peer: &SocketAddr) -> Duration {
        let guess = match (self.recent.of(peer), self.recent.slowest()) {
            (Some(own), _) => {
                (own * 2).max(self.rtt.srtt.unwrap_or_default() + self.rtt.rttvar * 4)
            }
            (None, Some((slowest, true))) => {
                (slowest * 3 / 2).max(self.rtt.srtt.unwrap_or_default() + self.rtt.rttvar * 4)
            }
            // Few samples say little about peers not yet measured (the
            // first ones are often a nearby bootstrap's): half the request
            // timeout, so a far peer is not written off for being far.
            (None, Some((_, false))) | (None, None) => self.timeout / 2,
        };
        guess.clamp(self.soft_min, self.timeout)
    }

    /// Send `rpc` as `txid` now if a slot is free, else queue it. Returns
    /// false (and drops it) if the queue is full too.
    pub(crate) fn submit(
        &mut self,
        now: Instant,
        txid: TxId,
        rpc: Rpc,
        timers: &mut TimerTable<Timer>,
        sink: &mut Vec<(SocketAddr, Bytes)>,
    ) -> bool {
        if !self.slot_free(rpc.own) {
            if self.queued_len() >= self.queue_cap {
                return false;
            }
            *self.per_endpoint.entry(rpc.to).or_insert(0) += 1;
            if rpc.own {
                self.queue.push_back(txid);
            } else {
                self.queue_others.push_back(txid);
            }
            self.waiting.insert(txid, rpc);
            return true;
        }
        *self.per_endpoint.entry(rpc.to).or_insert(0) += 1;
        self.send(now, txid, rpc, timers, sink);
        true
    }

    fn send(
        &mut self,
        now: Instant,
        txid: TxId,
        mut rpc: Rpc,
        timers: &mut TimerTable<Timer>,
        sink: &mut Vec<(SocketAddr, Bytes)>,
    ) {
        rpc.sent_at = Some(now);
        // A challenge to an unproven requester is sent once: retrying it
        // would double what a spoofed source makes us send.
        rpc.retries_left = if rpc.purpose == Purpose::Verify {
            0
        } else {
            self.retries
        };
        if !rpc.own {
            self.open_others += 1;
        }
        sink.push((rpc.to, rpc.payload.clone()));
        let hard = now + self.timeout;
        rpc.hard_at = Some(hard);
        rpc.soft_pending = false;
        let mut first = hard;
        if rpc.purpose.wants_soft_timeout() {
            let soft = self.soft_timeout(&rpc.to);
            if soft < self.timeout {
                rpc.soft_pending = true;
                first = now + soft;
            }
        }
        timers.set(Timer::Rpc(txid), first);
        self.open.insert(txid, rpc);
    }

    /// Fill free slots from the queue.
    fn promote(
        &mut self,
        now: Instant,
        timers: &mut TimerTable<Timer>,
        sink: &mut Vec<(SocketAddr, Bytes)>,
    ) {
        loop {
            let txid = if !self.queue.is_empty() && self.slot_free(true) {
                self.queue.pop_front()
            } else if self.slot_free(false) {
                self.queue_others.pop_front()
            } else {
                None
            };
            let Some(txid) = txid else {
                return;
            };
            if let Some(rpc) = self.waiting.remove(&txid) {
                trim(&mut self.waiting);
                self.send(now, txid, rpc, timers, sink);
            }
        }
    }

    fn release_endpoint(&mut self, addr: &SocketAddr) {
        if let Some(n) = self.per_endpoint.get_mut(addr) {
            *n -= 1;
            if *n == 0 {
                self.per_endpoint.remove(addr);
                trim(&mut self.per_endpoint);
            }
        }
    }

    /// The open (or recently failed) request an answer with `txid` would
    /// close, and whether it already failed.
    pub(crate) fn peek(&self, now: Instant, txid: TxId) -> Option<(&Rpc, bool)> {
        if let Some(r) = self.open.get(&txid) {
            return Some((r, false));
        }
        match self.late.get(&txid) {
            Some((r, until)) if *until > now => Some((r, true)),
            _ => None,
        }
    }

    /// Close `txid` on an accepted answer: learn from its round trip (if it
    /// was not retransmitted), cancel its timers and fill the freed slot.
    pub(crate) fn answered(
        &mut self,
        now: Instant,
        txid: TxId,
        timers: &mut TimerTable<Timer>,
        sink: &mut Vec<(SocketAddr, Bytes)>,
    ) -> Option<Rpc> {
        if let Some((rpc, _)) = self.late.remove(&txid) {
            return Some(rpc);
        }
        let mut rpc = self.open.remove(&txid)?;
        trim(&mut self.open);
        if !rpc.own {
            self.open_others -= 1;
        }
        timers.cancel(&Timer::Rpc(txid));
        if let (false, Some(at)) = (rpc.retransmitted, rpc.sent_at) {
            let r = now.saturating_duration_since(at);
            self.rtt.sample(r);
            self.recent.sample(rpc.to, r);
            rpc.rtt = Some(r);
        }
        self.release_endpoint(&rpc.to);
        self.promote(now, timers, sink);
        Some(rpc)
    }

    /// `txid`'s timer fired: its soft timeout passed (mark it slow and
    /// wait on for the retransmission deadline), or that deadline passed
    /// (send it again, or fail it).
    pub(crate) fn deadline(
        &mut self,
        now: Instant,
        txid: TxId,
        timers: &mut TimerTable<Timer>,
        sink: &mut Vec<(SocketAddr, Bytes)>,
    ) -> Option<Deadline> {
        let rpc = self.open.get_mut(&txid)?;
        if rpc.soft_pending {
            rpc.soft_pending = false;
            rpc.slow = true;
            timers.set(Timer::Rpc(txid), rpc.hard_at.unwrap_or(now).max(now));
            return Some(Deadline::Soft);
        }
        if rpc.retries_left > 0 {
            rpc.retries_left -= 1;
            rpc.retransmitted = true;
            sink.push((rpc.to, rpc.payload.clone()));
            let hard = now + self.timeout;
            rpc.hard_at = Some(hard);
            timers.set(Timer::Rpc(txid), hard);
            return Some(Deadline::Retransmitted);
        }
        let rpc = self.open.remove(&txid)?;
        trim(&mut self.open);
        if !rpc.own {
            self.open_others -= 1;
        }
        self.release_endpoint(&rpc.to);
        if self.late_cap > 0 {
            // Entries go in deadline order: forget those past theirs, then
            // the oldest while full.
            while let Some(old) = self.late_order.front().copied() {
                let expired = self.late.get(&old).map_or(true, |(_, until)| *until <= now);
                if !expired && self.late.len() < self.late_cap {
                    break;
                }
                self.late_order.pop_front();
                self.late.remove(&old);
            }
            trim(&mut self.late);
            // The payload is not sent again: keep only what matches an answer.
            let mut kept = rpc.clone();
            kept.payload = Bytes::new();
            self.late.insert(txid, (kept, now + self.timeout));
            self.late_order.push_back(txid);
        }
        self.promote(now, timers, sink);
        Some(Deadline::Failed(rpc))
    }

    /// The open request `txid`, if it is still open.
    pub(crate) fn open_rpc(&self, txid: TxId) -> Option<&Rpc> {
        self.open.get(&txid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc(port: u16) -> Rpc {
        Rpc::new(
            SocketAddr::from(([10, 0, 0, 1], port)),
            None,
            None,
            Bytes::from_static(b"x"),
            Purpose::FindNode(1),
        )
    }

    fn layer(cap: usize, queue: usize) -> Rpcs {
        Rpcs::new(&Config {
            max_inflight_rpcs: std::num::NonZeroUsize::new(cap).unwrap(),
            rpc_queue: queue,
            ..Config::default()
        })
    }

    #[test]
    fn requests_past_the_cap_wait_and_go_out_as_slots_free() {
        let now = Instant::now();
        let mut r = layer(2, 2);
        let mut timers = TimerTable::default();
        let mut sink = Vec::new();
        for t in 1..=4 {
            assert!(r.submit(now, t, rpc(t as u16), &mut timers, &mut sink));
        }
        assert!(!r.submit(now, 5, rpc(5), &mut timers, &mut sink));
        assert_eq!(sink.len(), 2);
        assert_eq!((r.open_len(), r.queued_len()), (2, 2));
        assert!(r.has_request_to(&rpc(4).to));
        r.answered(now, 1, &mut timers, &mut sink);
        assert_eq!(sink.len(), 3);
        assert_eq!(sink[2].0, rpc(3).to);
        // A failure frees a slot too, after its soft timeout and its
        // retransmission (one timer, moved from each to the next).
        let later = now + Duration::from_secs(1);
        assert!(matches!(
            r.deadline(later, 2, &mut timers, &mut sink),
            Some(Deadline::Soft)
        ));
        assert!(r.open_rpc(2).is_some_and(|rpc| rpc.slow));
        assert!(matches!(
            r.deadline(later, 2, &mut timers, &mut sink),
            Some(Deadline::Retransmitted)
        ));
        assert!(matches!(
            r.deadline(later, 2, &mut timers, &mut sink),
            Some(Deadline::Failed(_))
        ));
        assert_eq!(sink.last().map(|s| s.0), Some(rpc(4).to));
        // Its late answer is still recognised for a while.
        assert!(r.peek(later, 2).is_some_and(|(_, late)| late));
        assert!(r.peek(later + Duration::from_secs(2), 2).is_none());
    }

    #[test]
    fn requests_for_others_leave_a_quarter_of_the_slots_to_the_node_itself() {
        let now = Instant::now();
        let mut r = layer(8, 64);
        let mut timers = TimerTable::default();
        let mut sink = Vec::new();
        let others = |port| {
            let mut x = rpc(port);
            x.purpose = Purpose::Relay(RelayRequest::Pull, false);
            x.own = false;
            x
        };
        for t in 1..=10 {
            r.submit(now, t, others(t as u16), &mut timers, &mut sink);
        }
        assert_eq!((r.open_len(), r.queued_len()), (6, 4), "2 of 8 kept free");
        // The node's own lookup still goes out at once, ahead of the queue.
        r.submit(now, 100, rpc(100), &mut timers, &mut sink);
        r.submit(now, 101, rpc(101), &mut timers, &mut sink);
        assert_eq!(r.open_len(), 8);
        r.submit(now, 102, rpc(102), &mut timers, &mut sink);
        r.answered(now, 1, &mut timers, &mut sink);
        assert_eq!(sink.last().map(|s| s.0), Some(rpc(102).to), "own first");
        // A challenge to a requester is not retransmitted.
        let mut v = rpc(200);
        v.purpose = Purpose::Verify;
        v.own = false;
        let mut big = layer(8, 8);
        big.submit(now, 7, v, &mut timers, &mut sink);
        assert!(matches!(
            big.deadline(now, 7, &mut timers, &mut sink),
            Some(Deadline::Failed(_))
        ));
    }

    #[test]
    fn the_soft_timeout_follows_the_round_trips_within_bounds() {
        let now = Instant::now();
        let mut r = layer(8, 8);
        let mut timers = TimerTable::default();
        let mut sink = Vec::new();
        let unknown = SocketAddr::from(([10, 0, 0, 9], 1));
        assert_eq!(r.soft_timeout(&unknown), Duration::from_millis(500));
        // Two fast samples (a nearby bootstrap, say) do not shorten the
        // wait for peers never measured: until 16, half the timeout.
        for (t, rtt) in [(998, 45), (999, 1)] {
            r.submit(now, t, rpc(3), &mut timers, &mut sink);
            r.answered(now + Duration::from_millis(rtt), t, &mut timers, &mut sink);
        }
        assert_eq!(
            r.soft_timeout(&unknown),
            Duration::from_millis(500),
            "few samples: half the timeout"
        );
        // One slow peer (300 ms) among fast ones (10 ms).
        let ms = Duration::from_millis;
        for t in 1..=20u64 {
            let (port, rtt) = if t == 1 { (2, ms(300)) } else { (1, ms(10)) };
            r.submit(now, t, rpc(port), &mut timers, &mut sink);
            r.answered(now + rtt, t, &mut timers, &mut sink);
        }
        let (fast, slow, unknown_soft) = (
            r.soft_timeout(&rpc(1).to),
            r.soft_timeout(&rpc(2).to),
            r.soft_timeout(&unknown),
        );
        assert_eq!(slow, ms(600), "own 300 ms, twice");
        assert_eq!(unknown_soft, ms(450), "slowest recent, 1.5x");
        assert!(fast < unknown_soft && fast >= ms(25), "{fast:?}");
        for t in 21..=100u64 {
            r.submit(now, t, rpc(1), &mut timers, &mut sink);
            r.answered(now + ms(10), t, &mut timers, &mut sink);
        }
        assert_eq!(r.soft_timeout(&unknown), ms(25), "the slow one aged out");
        assert_eq!(r.soft_timeout(&rpc(1).to), ms(25), "own 10 ms, floor 25");
    }
}
