//! How one held message or routed ack travels: towards a target address,
//! inside a distance bound, spending a budget, with exponential backoff,
//! remembering who holds a copy and whom it already tried.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::address::{Address, Distance};
use crate::wire::Contact;

/// The unlimited distance bound.
pub(crate) const ANYWHERE: Distance = Distance([0xff; 20]);

/// Unanswered transmissions to one peer after which it is not tried again
/// with this message (until it reappears or pulls).
pub(crate) const MAX_PEER_FAILURES: u8 = 2;

/// Route state of one held message (towards its recipient) or one routed
/// ack (towards the message's sender).
#[derive(Clone, Debug)]
pub(crate) struct Route {
    /// Where copies go.
    pub(crate) target: Address,
    /// Further hops the copies we send may travel.
    pub(crate) hops_left: u32,
    /// Transmissions left.
    pub(crate) budget: u32,
    /// Delay before the attempt after the next one is scheduled.
    pub(crate) backoff: Duration,
    /// When the next attempt is due.
    pub(crate) next_attempt: Option<Instant>,
    /// Peers that confirmed holding a copy (or sent us one), and where.
    pub(crate) holders: BTreeMap<Address, SocketAddr>,
    /// Peers sent a copy whose answer is pending, or that refused it, or
    /// that failed to answer too often.
    pub(crate) tried: BTreeMap<Address, SocketAddr>,
    /// Unanswered transmissions per peer: after `MAX_PEER_FAILURES` a peer
    /// is not tried again, so silent peers cannot drain the budget.
    pub(crate) failures: BTreeMap<Address, u8>,
    /// Copies go only to nodes nearer `target` than this (or to the target).
    pub(crate) bound: Distance,
}

impl Route {
    pub(crate) fn new(
        target: Address,
        hops_left: u32,
        budget: u32,
        backoff: Duration,
        bound: Distance,
    ) -> Route {
        Route {
            target,
            hops_left,
            budget,
            backoff,
            next_attempt: None,
            holders: BTreeMap::new(),
            tried: BTreeMap::new(),
            failures: BTreeMap::new(),
            bound,
        }
    }

    /// Whether `peer` holds a copy or was tried.
    pub(crate) fn knows(&self, peer: &Address) -> bool {
        self.holders.contains_key(peer) || self.tried.contains_key(peer)
    }

    /// Choose from `candidates` the peers to send a copy to now (protocol.md
    /// §16.3), spending one unit of budget on each (the target itself is
    /// free: handing over is the point) and marking it tried. Returns each
    /// with the `hops_left` its copy carries.
    pub(crate) fn pick(&mut self, me: &Address, candidates: &[Contact]) -> Vec<(Contact, u32)> {
        let mut out = Vec::new();
        for c in candidates {
            let is_target = c.id == self.target;
            let inside = is_target || c.id.distance(&self.target) < self.bound;
            if c.id == *me || self.knows(&c.id) || (self.hops_left == 0 && !is_target) || !inside {
                continue;
            }
            if !is_target {
                if self.budget == 0 {
                    continue;
                }
                self.budget -= 1;
            }
            self.tried.insert(c.id, c.addr);
            let hops = if is_target {
                0
            } else {
                self.hops_left.saturating_sub(1)
            };
            out.push((*c, hops));
        }
        out
    }

    /// Forget that `peer` was tried, so a later attempt may try it again;
    /// with `refund`, the transmission did not count against the budget.
    pub(crate) fn untry(&mut self, peer: &Address, refund: bool) {
        if self.tried.remove(peer).is_some() && refund && *peer != self.target {
            self.budget = self.budget.saturating_add(1);
        }
    }

    /// A transmission to `peer` went unanswered: try it again later, but
    /// not after `MAX_PEER_FAILURES` of them.
    pub(crate) fn failed(&mut self, peer: &Address) {
        let n = self.failures.entry(*peer).or_insert(0);
        *n = n.saturating_add(1);
        if *n < MAX_PEER_FAILURES {
            self.tried.remove(peer);
        }
    }

    /// Start over with `peer`: it reappeared (moved, or asked for its
    /// messages), so earlier attempts and failures no longer say anything.
    pub(crate) fn forget(&mut self, peer: &Address) {
        self.tried.remove(peer);
        self.failures.remove(peer);
    }

    /// Record `peer` as holding a copy, within `cap` tracked peers.
    pub(crate) fn add_holder(&mut self, peer: Contact, cap: usize) {
        if !self.holders.contains_key(&peer.id) && self.holders.len() + self.tried.len() >= cap {
            return;
        }
        self.tried.remove(&peer.id);
        self.holders.insert(peer.id, peer.addr);
    }

    /// Every peer known to hold or to have been sent a copy, with its endpoint.
    pub(crate) fn known_peers(&self) -> Vec<Contact> {
        self.holders
            .iter()
            .chain(self.tried.iter())
            .map(|(id, addr)| Contact {
                id: *id,
                addr: *addr,
            })
            .collect()
    }

    /// Known holders strictly closer to the target than `me`.
    pub(crate) fn closer_holders(&self, me: &Address) -> usize {
        let mine = me.distance(&self.target);
        self.holders
            .keys()
            .filter(|h| h.distance(&self.target) < mine)
            .count()
    }

    /// The farthest known holder's distance to the target.
    pub(crate) fn farthest_holder(&self) -> Option<Distance> {
        self.holders.keys().map(|h| h.distance(&self.target)).max()
    }

    /// Set the next attempt `factor` × backoff from `now` and double the
    /// backoff up to `cap`. Returns the time of the attempt.
    pub(crate) fn schedule(&mut self, now: Instant, factor: f64, cap: Duration) -> Instant {
        let at = now + self.backoff.mul_f64(factor);
        self.next_attempt = Some(at);
        self.backoff = (self.backoff * 2).min(cap);
        at
    }
}

/// The smallest distance greater than `d` (saturating), so that a strict
/// `<` bound includes `d` itself.
pub(crate) fn just_past(mut d: Distance) -> Distance {
    for byte in d.0.iter_mut().rev() {
        if *byte == 0xff {
            *byte = 0;
        } else {
            *byte += 1;
            return d;
        }
    }
    ANYWHERE
}
