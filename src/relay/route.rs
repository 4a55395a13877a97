//! How one held message or routed ack travels: towards a target address,
//! inside a distance bound, spending a budget, with exponential backoff,
//! remembering who holds a copy and whom it already tried.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::address::{Address, Distance};
use crate::routing::{prefix, LoopbackPrefixes, Prefix};
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
    /// What we know of each peer this route dealt with, sorted by address:
    /// holders, peers tried, and unanswered transmissions. One small
    /// vector instead of three ordered maps: a route deals with a few dozen
    /// peers at most, and every held copy and routed ack has a route.
    peers: Vec<Mark>,
    /// Copies go only to nodes nearer `target` than this (or to the target).
    pub(crate) bound: Distance,
}

/// One peer of a route.
#[derive(Clone, Copy, Debug)]
struct Mark {
    id: Address,
    /// Where it holds a copy, or where it was tried.
    addr: SocketAddr,
    /// It confirmed holding a copy (or sent us one).
    holder: bool,
    /// It was sent a copy whose answer is pending, or it refused it, or it
    /// failed to answer too often. Never together with `holder`.
    tried: bool,
    /// Unanswered transmissions: after `MAX_PEER_FAILURES` the peer is not
    /// tried again, so silent peers cannot drain the budget.
    failures: u8,
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
            peers: Vec::new(),
            bound,
        }
    }

    fn mark(&self, peer: &Address) -> Option<&Mark> {
        let i = self.peers.binary_search_by(|m| m.id.cmp(peer)).ok()?;
        Some(&self.peers[i])
    }

    /// Change what is known of `peer` (a new mark starts empty at `addr`)
    /// and drop the mark if nothing is left in it.
    fn update(&mut self, peer: &Address, addr: Option<SocketAddr>, f: impl FnOnce(&mut Mark)) {
        let i = match (self.peers.binary_search_by(|m| m.id.cmp(peer)), addr) {
            (Ok(i), _) => i,
            (Err(i), Some(addr)) => {
                self.peers.insert(
                    i,
                    Mark {
                        id: *peer,
                        addr,
                        holder: false,
                        tried: false,
                        failures: 0,
                    },
                );
                i
            }
            (Err(_), None) => return,
        };
        f(&mut self.peers[i]);
        let m = self.peers[i];
        if !m.holder && !m.tried && m.failures == 0 {
            self.peers.remove(i);
        }
    }

    /// Whether `peer` holds a copy or was tried.
    pub(crate) fn knows(&self, peer: &Address) -> bool {
        self.mark(peer).is_some_and(|m| m.holder || m.tried)
    }

    /// Whether `peer` confirmed holding a copy.
    pub(crate) fn is_holder(&self, peer: &Address) -> bool {
        self.mark(peer).is_some_and(|m| m.holder)
    }

    /// Whether `peer` was tried and has not answered or refused.
    pub(crate) fn is_tried(&self, peer: &Address) -> bool {
        self.mark(peer).is_some_and(|m| m.tried)
    }

    /// Whether a transmission to `peer` went unanswered.
    pub(crate) fn has_failed(&self, peer: &Address) -> bool {
        self.mark(peer).is_some_and(|m| m.failures > 0)
    }

    /// The peers known to hold a copy, by address, with their endpoints.
    pub(crate) fn holders(&self) -> impl Iterator<Item = (&Address, &SocketAddr)> {
        self.peers
            .iter()
            .filter(|m| m.holder)
            .map(|m| (&m.id, &m.addr))
    }

    /// How many peers are known to hold a copy.
    pub(crate) fn holder_count(&self) -> usize {
        self.peers.iter().filter(|m| m.holder).count()
    }

    /// How many peers were tried and have not answered or refused.
    pub(crate) fn tried_count(&self) -> usize {
        self.peers.iter().filter(|m| m.tried).count()
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
            self.update(&c.id, Some(c.addr), |m| {
                m.tried = true;
                m.addr = c.addr;
            });
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
        let mut was_tried = false;
        self.update(peer, None, |m| was_tried = std::mem::take(&mut m.tried));
        if was_tried && refund && *peer != self.target {
            self.budget = self.budget.saturating_add(1);
        }
    }

    /// A transmission to `peer` went unanswered: try it again later, but
    /// not after `MAX_PEER_FAILURES` of them.
    pub(crate) fn failed(&mut self, peer: &Address) {
        // A peer never tried nor holding starts a mark of its own; its
        // endpoint is never read (it is neither holder nor tried).
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        self.update(peer, Some(unspecified), |m| {
            m.failures = m.failures.saturating_add(1);
            if m.failures < MAX_PEER_FAILURES {
                m.tried = false;
            }
        });
    }

    /// Start over with `peer`: it reappeared (moved, or asked for its
    /// messages), so earlier attempts and failures no longer say anything.
    pub(crate) fn forget(&mut self, peer: &Address) {
        self.update(peer, None, |m| {
            m.tried = false;
            m.failures = 0;
        });
    }

    /// Record `peer` as holding a copy, within `cap` tracked peers.
    pub(crate) fn add_holder(&mut self, peer: Contact, cap: usize) {
        let counted = self.peers.iter().filter(|m| m.holder || m.tried).count();
        if !self.is_holder(&peer.id) && counted >= cap {
            return;
        }
        self.update(&peer.id, Some(peer.addr), |m| {
            m.tried = false;
            m.holder = true;
            m.addr = peer.addr;
        });
    }

    /// Every peer known to hold or to have been sent a copy, with its endpoint.
    pub(crate) fn known_peers(&self) -> Vec<Contact> {
        let holders = self.peers.iter().filter(|m| m.holder);
        holders
            .chain(self.peers.iter().filter(|m| m.tried))
            .map(|m| Contact {
                id: m.id,
                addr: m.addr,
            })
            .collect()
    }

    /// Networks (§7.6 prefixes; an exempt endpoint counts as its own)
    /// with a known holder strictly closer to the target than `me`: the
    /// count the surplus rule (§16.3) compares, so that identities of one
    /// network, however many, stand for one holder.
    pub(crate) fn closer_holder_networks(&self, me: &Address, loopback: LoopbackPrefixes) -> usize {
        let mine = me.distance(&self.target);
        let mut seen: Vec<Result<Prefix, SocketAddr>> = Vec::new();
        for (h, addr) in self.holders() {
            if h.distance(&self.target) < mine {
                let net = prefix(addr, loopback).ok_or(*addr);
                if !seen.contains(&net) {
                    seen.push(net);
                }
            }
        }
        seen.len()
    }

    /// The farthest known holder's distance to the target.
    pub(crate) fn farthest_holder(&self) -> Option<Distance> {
        self.holders().map(|(h, _)| h.distance(&self.target)).max()
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
