//! The iterative Kademlia lookup as a plain state machine.
//!
//! It never sends anything itself: [`Lookup::next_queries`] says whom to ask,
//! the node reports back with [`Lookup::on_response`],
//! [`Lookup::on_unresponsive`] and [`Lookup::on_failure`]. It finishes when
//! the k closest candidates not known to have failed or to be slow have all
//! answered, or when nobody is left to ask.
//!
//! A peer that has not answered within the soft timeout is *unresponsive*
//! (as in libp2p-kad): it no longer counts towards the α requests in flight
//! or towards termination, so one dead peer does not hold a lookup for the
//! full request timeout, but its answer is still used if it comes late.
//!
//! When dead candidates were among the nearer ones, the lookup may send up
//! to `lookup_widen` *side queries* before it finishes: each asks an
//! answered candidate for the target with one bit flipped, so that the
//! answer lists one subtree's contacts past the places the dead ones took
//! (see [`Lookup::query_target`]).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::address::{Address, Distance};
use crate::wire::Contact;

/// Identifies a lookup started on a node.
pub type LookupId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    NotContacted,
    Waiting,
    /// Asked, no answer within the soft timeout; still open.
    Unresponsive,
    Succeeded,
    Failed,
}

#[derive(Clone, Debug)]
struct Candidate {
    contact: Contact,
    state: State,
    /// Sequential step at which we learned of it: seeds are round 1, a
    /// contact revealed by a round-r answer is round r + 1.
    round: u32,
}

/// How one request of a lookup ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepOutcome {
    /// It answered (perhaps late).
    Answered,
    /// No answer within its soft timeout (it may still answer later,
    /// which adds an `Answered` step), or after every retry.
    TimedOut,
    /// It could not be sent (the request queue was full).
    Failed,
}

/// One request of a lookup, for showing its path round by round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupStep {
    /// Sequential round the contact was learned in (seeds are round 1).
    pub round: u32,
    /// Whom it asked.
    pub contact: Contact,
    /// How it ended.
    pub outcome: StepOutcome,
    /// Contacts it returned that were new to the lookup and closer to the
    /// target than itself.
    pub new_closer: usize,
    /// Its round trip, when it answered without a retransmission.
    pub rtt: Option<Duration>,
}

/// One iterative lookup of a target address.
#[derive(Clone, Debug)]
pub struct Lookup {
    target: Address,
    k: usize,
    alpha: usize,
    max_candidates: usize,
    candidates: BTreeMap<Distance, Candidate>,
    in_flight: usize,
    rpcs: u32,
    rounds: u32,
    /// Steps recorded, and the most kept (`None`: not recording).
    path: Option<(Vec<LookupStep>, usize)>,
    /// Most side queries this lookup may send (`lookup_widen`).
    widen_max: usize,
    /// Subtrees (by bucket index of their distance to the target) asked
    /// about in side queries so far.
    widened: Vec<usize>,
    /// The side query in flight: whom, for which target, at which round.
    side: Option<(Address, Address, u32)>,
}

/// Outcome of a finished lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupResult {
    /// The looked-up address.
    pub target: Address,
    /// Up to k contacts that answered, closest first.
    pub closest: Vec<Contact>,
    /// Longest chain of sequential requests (the lookup's latency in round trips).
    pub rounds: u32,
    /// Requests sent (retransmissions not counted).
    pub rpcs: u32,
    /// Of those, the ones to candidates that answered (late answers too).
    pub answered: u32,
    /// Of those, the ones to candidates that never answered before the
    /// lookup ended (gone, unreachable, or too slow).
    pub unanswered: u32,
    /// Of those, side queries (§9 step 5), answered or not.
    pub side_queries: u32,
    /// Each request in the order it ended, for lookups the user started
    /// (empty for the node's own lookups, to keep them cheap); at most
    /// `lookup_path_max` steps.
    pub path: Vec<LookupStep>,
}

impl Lookup {
    /// Start a lookup of `target` from `seeds` (our closest known contacts).
    /// `me` is excluded from candidates.
    pub fn new(
        target: Address,
        me: Address,
        seeds: impl IntoIterator<Item = Contact>,
        k: usize,
        alpha: usize,
        max_candidates: usize,
    ) -> Lookup {
        let mut lookup = Lookup {
            target,
            k: k.max(1),
            alpha: alpha.max(1),
            max_candidates: max_candidates.max(k),
            candidates: BTreeMap::new(),
            in_flight: 0,
            rpcs: 0,
            rounds: 0,
            path: None,
            widen_max: 0,
            widened: Vec::new(),
            side: None,
        };
        for c in seeds {
            if c.id != me {
                lookup.add(c, 1);
            }
        }
        lookup
    }

    /// The address being looked up.
    pub fn target(&self) -> Address {
        self.target
    }

    /// Allow up to `n` side queries (see [`Lookup::query_target`]).
    pub fn widen(&mut self, n: usize) {
        self.widen_max = n;
    }

    /// The target to put in the request to `to`: the looked-up address,
    /// or for a side query the target with the bit flipped that starts the
    /// subtree holding the k-th closest answered candidate. Among the
    /// contacts of that subtree the order by distance to either target is
    /// the same, so the answer lists the responder's best contacts just
    /// past the k-th, which an answer for the target itself leaves out
    /// when dead contacts fill its k places.
    pub fn query_target(&self, to: &Address) -> Address {
        match self.side {
            Some((peer, t, _)) if peer == *to => t,
            _ => self.target,
        }
    }

    /// A side query to send now, if one is due: the k closest candidates
    /// not known to be dead have all answered, but some closer ones failed
    /// or went unresponsive, and the lookup has side queries left.
    fn side_query(&self) -> Option<(Contact, Address, u32)> {
        if self.side.is_some() || self.widened.len() >= self.widen_max {
            return None;
        }
        let mut live = 0;
        let mut dead = Vec::new();
        let mut kth = None;
        for (d, c) in &self.candidates {
            match c.state {
                State::Failed | State::Unresponsive => dead.extend(d.bucket_index()),
                State::Succeeded => {
                    live += 1;
                    if live >= self.k {
                        kth = Some(*d);
                        break;
                    }
                }
                State::Waiting | State::NotContacted => return None,
            }
        }
        if dead.is_empty() {
            return None;
        }
        // The subtrees that lost places to dead contacts, and the k-th's
        // own, nearest the k-th first.
        dead.extend(kth?.bucket_index());
        let bucket = dead
            .into_iter()
            .filter(|b| !self.widened.contains(b))
            .max()?;
        let mut side_target = self.target;
        let byte = crate::address::ADDRESS_LEN - 1 - bucket / 8;
        side_target.0[byte] ^= 1 << (bucket % 8);
        // The answered candidate nearest the side target: inside the
        // subtree it knows that subtree best.
        let asked = self
            .candidates
            .values()
            .filter(|c| c.state == State::Succeeded)
            .min_by_key(|c| c.contact.id.distance(&side_target))?;
        Some((asked.contact, side_target, asked.round + 1))
    }

    /// The side query to `from` ended (answered or not): free its slot.
    fn end_side(&mut self, from: &Address) -> Option<u32> {
        match self.side {
            Some((peer, _, round)) if peer == *from => {
                self.side = None;
                self.in_flight -= 1;
                Some(round)
            }
            _ => None,
        }
    }

    /// Record each request's step, keeping at most `cap` of them.
    pub fn record_path(&mut self, cap: usize) {
        self.path = Some((Vec::new(), cap));
    }

    fn step(&mut self, round: u32, contact: Contact, outcome: StepOutcome, new_closer: usize) {
        if let Some((path, cap)) = &mut self.path {
            if path.len() < *cap {
                path.push(LookupStep {
                    round,
                    contact,
                    outcome,
                    new_closer,
                    rtt: None,
                });
            }
        }
    }

    /// The answer from `from` took `rtt`: note it on its last step.
    pub fn note_rtt(&mut self, from: &Address, rtt: Duration) {
        if let Some((path, _)) = &mut self.path {
            if let Some(s) = path.iter_mut().rev().find(|s| s.contact.id == *from) {
                s.rtt = Some(rtt);
            }
        }
    }

    /// The request to `from` could not be sent: as a failure.
    pub fn on_refused(&mut self, from: &Address) {
        if self.end_side(from).is_some() {
            return;
        }
        if let Some(c) = self.find_mut(from).map(|c| (c.round, c.contact)) {
            self.step(c.0, c.1, StepOutcome::Failed, 0);
        }
        self.fail(from);
    }

    fn add(&mut self, contact: Contact, round: u32) {
        let d = contact.id.distance(&self.target);
        if self.candidates.contains_key(&d) {
            return;
        }
        if self.candidates.len() >= self.max_candidates {
            // Drop the farthest not-yet-contacted candidate if the newcomer is closer.
            let farthest = self
                .candidates
                .iter()
                .rev()
                .find(|(_, c)| c.state == State::NotContacted)
                .map(|(d, _)| *d);
            match farthest {
                Some(f) if f > d => {
                    self.candidates.remove(&f);
                }
                _ => return,
            }
        }
        self.candidates.insert(
            d,
            Candidate {
                contact,
                state: State::NotContacted,
                round,
            },
        );
    }

    /// Contacts to query now (marked as in flight); empty when the lookup
    /// waits for answers or is finished.
    pub fn next_queries(&mut self) -> Vec<Contact> {
        let mut out = Vec::new();
        if self.is_finished() {
            return out;
        }
        // Only the k closest non-failed candidates are worth asking.
        let mut live_seen = 0;
        for c in self.candidates.values_mut() {
            if self.in_flight >= self.alpha || live_seen >= self.k {
                break;
            }
            match c.state {
                State::Failed | State::Unresponsive => continue,
                State::NotContacted => {
                    c.state = State::Waiting;
                    self.in_flight += 1;
                    self.rpcs += 1;
                    self.rounds = self.rounds.max(c.round);
                    out.push(c.contact);
                }
                State::Waiting | State::Succeeded => {}
            }
            live_seen += 1;
        }
        if out.is_empty() {
            if let Some((c, t, round)) = self.side_query() {
                self.side = Some((c.id, t, round));
                self.widened.extend(t.distance(&self.target).bucket_index());
                self.in_flight += 1;
                self.rpcs += 1;
                self.rounds = self.rounds.max(round);
                out.push(c);
            }
        }
        out
    }

    fn find_mut(&mut self, id: &Address) -> Option<&mut Candidate> {
        let d = id.distance(&self.target);
        self.candidates.get_mut(&d)
    }

    /// `from` answered with `contacts` (possibly late: after the soft
    /// timeout, or even after its request failed).
    pub fn on_response(&mut self, from: &Address, contacts: &[Contact], me: &Address) {
        if let Some(round) = self.end_side(from) {
            for c in contacts.iter().filter(|c| c.id != *me) {
                self.add(*c, round + 1);
            }
            return;
        }
        let (round, was_waiting, asked) = match self.find_mut(from) {
            Some(c)
                if matches!(
                    c.state,
                    State::Waiting | State::Unresponsive | State::Failed
                ) =>
            {
                let was_waiting = c.state == State::Waiting;
                c.state = State::Succeeded;
                (c.round, was_waiting, c.contact)
            }
            _ => return,
        };
        if was_waiting {
            self.in_flight -= 1;
        }
        let own = from.distance(&self.target);
        let mut new_closer = 0;
        for c in contacts {
            if c.id != *me {
                let d = c.id.distance(&self.target);
                let new = !self.candidates.contains_key(&d);
                self.add(*c, round + 1);
                if new && d < own && self.candidates.contains_key(&d) {
                    new_closer += 1;
                }
            }
        }
        self.step(round, asked, StepOutcome::Answered, new_closer);
    }

    /// The request to `from` has not been answered within the soft timeout:
    /// stop waiting for it, but keep its answer if it still comes.
    pub fn on_unresponsive(&mut self, from: &Address) {
        if self.end_side(from).is_some() {
            return;
        }
        let mut stopped = None;
        if let Some(c) = self.find_mut(from) {
            if c.state == State::Waiting {
                c.state = State::Unresponsive;
                stopped = Some((c.round, c.contact));
            }
        }
        if let Some((round, contact)) = stopped {
            self.in_flight -= 1;
            // On the path now: the lookup may end before the request fails.
            self.step(round, contact, StepOutcome::TimedOut, 0);
        }
    }

    /// The request to `from` failed (timed out after retries, or refused).
    pub fn on_failure(&mut self, from: &Address) {
        if self.end_side(from).is_some() {
            return;
        }
        // One that passed its soft timeout is on the path already.
        let asked = self
            .find_mut(from)
            .filter(|c| c.state == State::Waiting)
            .map(|c| (c.round, c.contact));
        if let Some((round, contact)) = asked {
            self.step(round, contact, StepOutcome::TimedOut, 0);
        }
        self.fail(from);
    }

    fn fail(&mut self, from: &Address) {
        if let Some(c) = self.find_mut(from) {
            match c.state {
                State::Waiting => {
                    c.state = State::Failed;
                    self.in_flight -= 1;
                }
                State::Unresponsive => c.state = State::Failed,
                _ => {}
            }
        }
    }

    /// Finished: the k closest candidates that have neither failed nor
    /// gone unresponsive have all answered, or no candidate is left to ask
    /// and none is in flight.
    pub fn is_finished(&self) -> bool {
        let mut live = 0;
        for c in self.candidates.values() {
            match c.state {
                State::Failed | State::Unresponsive => continue,
                State::Succeeded => {}
                State::Waiting | State::NotContacted => return false,
            }
            live += 1;
            if live >= self.k {
                return self.side.is_none() && self.side_query().is_none();
            }
        }
        self.in_flight == 0
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn count(&self, pred: impl Fn(State) -> bool) -> u32 {
        self.candidates.values().filter(|c| pred(c.state)).count() as u32
    }

    /// The result so far: up to k answered contacts, closest first.
    pub fn result(&self) -> LookupResult {
        LookupResult {
            target: self.target,
            closest: self
                .candidates
                .values()
                .filter(|c| c.state == State::Succeeded)
                .take(self.k)
                .map(|c| c.contact)
                .collect(),
            rounds: self.rounds,
            rpcs: self.rpcs,
            answered: self.count(|s| s == State::Succeeded),
            unanswered: self
                .count(|s| matches!(s, State::Waiting | State::Unresponsive | State::Failed)),
            side_queries: self.widened.len() as u32,
            path: self
                .path
                .as_ref()
                .map(|(p, _)| p.clone())
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::SocketAddr;

    fn c(n: u8) -> Contact {
        let mut id = [0u8; 20];
        id[0] = n;
        Contact {
            id: Address(id),
            addr: SocketAddr::from(([10, 0, 0, n], 1)),
        }
    }

    const ME: Address = Address([0xff; 20]);

    #[test]
    fn converges_on_a_static_network() {
        // 64 nodes; each knows at most 2 nodes per bucket, like a small routing table.
        let nodes: Vec<Contact> = (1..=64).map(c).collect();
        let knows: HashMap<Address, Vec<Contact>> = nodes
            .iter()
            .map(|n| {
                let mut per_bucket: HashMap<usize, Vec<Contact>> = HashMap::new();
                for o in nodes.iter().filter(|o| o.id != n.id) {
                    if let Some(b) = n.id.bucket_index(&o.id) {
                        let slot = per_bucket.entry(b).or_default();
                        if slot.len() < 2 {
                            slot.push(*o);
                        }
                    }
                }
                (n.id, per_bucket.into_values().flatten().collect())
            })
            .collect();
        let target = c(3).id;
        let mut lookup = Lookup::new(target, ME, vec![c(60), c(50)], 4, 2, 32);
        let mut steps = 0;
        while !lookup.is_finished() {
            let qs = lookup.next_queries();
            assert!(!qs.is_empty() || lookup.in_flight() > 0);
            assert!(lookup.in_flight() <= 2);
            for q in qs {
                let mut reply = knows[&q.id].clone();
                reply.sort_by_key(|o| o.id.distance(&target));
                reply.truncate(4);
                lookup.on_response(&q.id, &reply, &ME);
            }
            steps += 1;
            assert!(steps < 100);
        }
        let r = lookup.result();
        let mut want: Vec<Contact> = nodes.clone();
        want.sort_by_key(|o| o.id.distance(&target));
        want.truncate(4);
        assert_eq!(r.closest, want);
        assert!(r.rounds >= 2);
        assert!(r.rpcs as usize >= 4);
    }

    #[test]
    fn failures_are_skipped_and_lookup_ends() {
        let mut lookup = Lookup::new(c(1).id, ME, vec![c(1), c(2), c(3)], 3, 3, 16);
        let qs = lookup.next_queries();
        assert_eq!(qs.len(), 3);
        lookup.on_failure(&c(1).id);
        lookup.on_failure(&c(2).id);
        assert!(!lookup.is_finished());
        lookup.on_response(&c(3).id, &[], &ME);
        assert!(lookup.is_finished());
        assert_eq!(lookup.result().closest, vec![c(3)]);
    }

    #[test]
    fn an_unresponsive_peer_frees_its_slot_and_a_late_answer_still_counts() {
        let mut lookup = Lookup::new(c(1).id, ME, vec![c(1), c(2), c(3), c(4)], 3, 1, 16);
        assert_eq!(lookup.next_queries(), vec![c(1)]);
        // c(1) is slow: the lookup moves on to c(2) without waiting for it.
        lookup.on_unresponsive(&c(1).id);
        assert_eq!(lookup.in_flight(), 0);
        // Closest first by XOR distance to c(1): c(3), c(2), c(4).
        assert_eq!(lookup.next_queries(), vec![c(3)]);
        lookup.on_response(&c(3).id, &[], &ME);
        assert_eq!(lookup.next_queries(), vec![c(2)]);
        lookup.on_response(&c(2).id, &[], &ME);
        assert_eq!(lookup.next_queries(), vec![c(4)]);
        lookup.on_response(&c(4).id, &[], &ME);
        assert!(lookup.is_finished());
        // The late answer is used (the node may still call before removal).
        lookup.on_response(&c(1).id, &[], &ME);
        assert_eq!(lookup.result().closest, vec![c(1), c(3), c(2)]);
        assert_eq!(lookup.in_flight(), 0);
    }

    #[test]
    fn side_queries_follow_dead_candidates_only() {
        // Distances to the target are the first byte: c(1) is in subtree
        // (bucket) 152, c(3) in 153, c(4) to c(7) in 154.
        let target = Address([0; 20]);
        let mut healthy = Lookup::new(target, ME, vec![c(4), c(5)], 2, 3, 16);
        healthy.widen(2);
        assert_eq!(healthy.next_queries(), vec![c(4), c(5)]);
        healthy.on_response(&c(4).id, &[], &ME);
        healthy.on_response(&c(5).id, &[], &ME);
        assert!(healthy.is_finished(), "no failure, no side query");

        let mut lookup = Lookup::new(target, ME, vec![c(1), c(4), c(5)], 2, 3, 16);
        lookup.widen(2);
        assert_eq!(lookup.next_queries(), vec![c(1), c(4)]);
        lookup.on_failure(&c(1).id);
        assert_eq!(lookup.next_queries(), vec![c(5)]);
        lookup.on_response(&c(4).id, &[], &ME);
        lookup.on_response(&c(5).id, &[], &ME);
        assert!(!lookup.is_finished());
        // First the k-th's subtree (154): asked of the answered candidate
        // nearest the side target 0x04...
        assert_eq!(lookup.next_queries(), vec![c(4)]);
        let mut side = [0u8; 20];
        side[0] = 4;
        assert_eq!(lookup.query_target(&c(4).id), Address(side));
        assert_eq!(lookup.query_target(&c(5).id), target);
        assert!(!lookup.is_finished());
        lookup.on_response(&c(4).id, &[c(6), c(7)], &ME);
        // ...then the subtree of the dead c(1) (152), target 0x01...
        assert_eq!(lookup.next_queries(), vec![c(5)]);
        side[0] = 1;
        assert_eq!(lookup.query_target(&c(5).id), Address(side));
        lookup.on_response(&c(5).id, &[c(3)], &ME);
        // ...whose answer brings c(3), asked as usual; then no side query is left.
        assert_eq!(lookup.next_queries(), vec![c(3)]);
        assert_eq!(lookup.query_target(&c(3).id), target);
        lookup.on_response(&c(3).id, &[], &ME);
        assert!(lookup.is_finished());
        assert_eq!(lookup.result().closest, vec![c(3), c(4)]);
        assert_eq!(lookup.result().rpcs, 6);
        assert_eq!(lookup.in_flight(), 0);
    }

    #[test]
    fn a_request_past_its_soft_timeout_is_on_the_path_once() {
        let target = Address([0; 20]);
        let mut lookup = Lookup::new(target, ME, vec![c(1), c(4)], 2, 2, 16);
        lookup.record_path(16);
        assert_eq!(lookup.next_queries(), vec![c(1), c(4)]);
        lookup.on_unresponsive(&c(1).id);
        lookup.on_response(&c(4).id, &[], &ME);
        assert!(lookup.is_finished(), "not waiting for c(1) any more");
        let outcomes = |l: &Lookup| {
            l.result()
                .path
                .iter()
                .map(|s| (s.contact, s.outcome))
                .collect::<Vec<_>>()
        };
        let want = vec![(c(1), StepOutcome::TimedOut), (c(4), StepOutcome::Answered)];
        assert_eq!(outcomes(&lookup), want);
        // Its failure later adds nothing.
        lookup.on_failure(&c(1).id);
        assert_eq!(outcomes(&lookup), want);
    }

    #[test]
    fn a_silent_side_query_frees_its_slot() {
        let target = Address([0; 20]);
        let mut lookup = Lookup::new(target, ME, vec![c(1), c(4), c(5)], 2, 3, 16);
        lookup.widen(1);
        let _ = lookup.next_queries();
        lookup.on_failure(&c(1).id);
        assert_eq!(lookup.next_queries(), vec![c(5)]);
        lookup.on_response(&c(4).id, &[], &ME);
        lookup.on_response(&c(5).id, &[], &ME);
        assert_eq!(lookup.next_queries(), vec![c(4)]);
        assert_eq!(lookup.in_flight(), 1);
        lookup.on_unresponsive(&c(4).id);
        assert_eq!(lookup.in_flight(), 0);
        assert!(lookup.is_finished());
        lookup.on_failure(&c(4).id);
        assert_eq!(lookup.result().closest, vec![c(4), c(5)]);
    }

    #[test]
    fn empty_seed_finishes_at_once_and_ignores_self() {
        let lookup = Lookup::new(c(1).id, ME, vec![], 8, 3, 16);
        assert!(lookup.is_finished());
        let me = Contact {
            id: ME,
            addr: c(1).addr,
        };
        let mut lookup = Lookup::new(c(1).id, ME, vec![me], 8, 3, 16);
        assert!(lookup.next_queries().is_empty());
        assert!(lookup.is_finished());
    }

    #[test]
    fn unsolicited_answers_are_ignored() {
        let mut lookup = Lookup::new(c(1).id, ME, vec![c(2)], 8, 3, 16);
        lookup.on_response(&c(2).id, &[c(1)], &ME); // not yet asked
        assert_eq!(lookup.result().closest, vec![]);
        let _ = lookup.next_queries();
        lookup.on_response(&c(2).id, &[c(1)], &ME);
        lookup.on_response(&c(2).id, &[c(1)], &ME); // duplicate
        assert_eq!(lookup.in_flight(), 0);
    }

    #[test]
    fn candidate_list_is_bounded() {
        let seeds: Vec<Contact> = (1..=100).map(c).collect();
        let lookup = Lookup::new(c(1).id, ME, seeds, 8, 3, 20);
        assert_eq!(lookup.candidates.len(), 20);
        assert!(lookup.candidates.values().any(|x| x.contact.id == c(1).id));
    }
}
