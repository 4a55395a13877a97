//! The relay on its own: one test per rule of protocol.md §15–§16, driven on
//! a fixed clock with a fake routing table, no sockets and no `Node`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::wire::records::Op;

const NOW_MS: u64 = 1_700_000_000_000;

/// A routing table that is a plain list; every contact is verified unless
/// listed as unverified.
#[derive(Default)]
struct FakePeers {
    contacts: Vec<Contact>,
    unverified: BTreeSet<Address>,
}

impl Peers for FakePeers {
    fn closest(&self, target: &Address, n: usize) -> Vec<Contact> {
        let mut v = self.contacts.clone();
        v.sort_by_key(|c| c.id.distance(target));
        v.truncate(n);
        v
    }

    fn verified(&self, c: &Contact) -> bool {
        !self.unverified.contains(&c.id)
    }

    fn in_table(&self, c: &Contact) -> bool {
        self.contacts.contains(c)
    }
}

struct H {
    relay: Relay,
    peers: FakePeers,
    me: Identity,
    now: Instant,
    wall_ms: u64,
    actions: Vec<Action>,
}

/// `base` with its last byte replaced: a contact very near `base`.
fn near(base: Address, last: u8) -> Address {
    let mut a = base;
    a.0[19] = last;
    a
}

fn contact(id: Address, n: u8) -> Contact {
    Contact {
        id,
        addr: SocketAddr::from(([10, 1, 0, n], 4000)),
    }
}

/// A recipient far from the relay's own address (first bit flipped).
fn far_from(me: Address) -> Address {
    let mut a = me;
    a.0[0] ^= 0x80;
    a.0[19] = 0;
    a
}

fn author() -> Identity {
    Identity::from_seed([7; 32])
}

/// Identities of the tests (seeds 1 to 64); the relay knows their keys.
fn known(to: &Address) -> Option<Identity> {
    (1..=64u8)
        .map(|i| Identity::from_seed([i; 32]))
        .find(|i| i.address() == *to)
}

/// A known identity whose address differs from `me` in the first bit.
fn far_identity(me: Address) -> Identity {
    (2..=64u8)
        .map(|i| Identity::from_seed([i; 32]))
        .find(|i| (i.address().0[0] ^ me.0[0]) & 0x80 != 0)
        .expect("one of 63 differs in its first bit")
}

/// A message from `author()` to `to`, its body sealed when `to` is one of
/// the known identities (only the recipient opens it; relays never do).
fn envelope(to: Address, text: &'static str) -> Envelope {
    envelope_at(to, NOW_MS, text)
}

/// As [`envelope`], created at `created` (ms).
fn envelope_at(to: Address, created: u64, text: &str) -> Envelope {
    let (ttl, hops) = (3600, 4);
    let body = match known(&to) {
        Some(r) => {
            let aad = crypto::aad(&author().public_key(), &to, created, ttl, hops);
            let mut rng = rand::rngs::StdRng::from_seed([5; 32]);
            Bytes::from(crypto::seal(&mut rng, &r.public_key(), &aad, text.as_bytes()).unwrap())
        }
        None => Bytes::copy_from_slice(text.as_bytes()),
    };
    Envelope::sign(&author(), to, created, ttl, hops, body)
}

impl H {
    fn new(config: Config) -> H {
        let me = Identity::from_seed([1; 32]);
        let mut h = H {
            relay: Relay::new(&config, me.address(), [3; 32]),
            peers: FakePeers::default(),
            me,
            now: Instant::now(),
            wall_ms: NOW_MS,
            actions: Vec::new(),
        };
        for i in 2..=64u8 {
            let key = Identity::from_seed([i; 32]).public_key();
            h.run(|r, ctx| r.learn_key(ctx, key));
        }
        h
    }

    fn addr(&self) -> Address {
        self.me.address()
    }

    /// Add `n` contacts near `target`.
    fn neighbours(&mut self, target: Address, n: u8) -> Vec<Contact> {
        let added: Vec<Contact> = (1..=n).map(|i| contact(near(target, i), i)).collect();
        self.peers.contacts.extend(added.iter().copied());
        added
    }

    fn run<T>(&mut self, f: impl FnOnce(&mut Relay, &Ctx) -> T) -> T {
        let ctx = Ctx {
            now: self.now,
            wall_ms: self.wall_ms,
            peers: &self.peers,
            identity: &self.me,
        };
        let out = f(&mut self.relay, &ctx);
        while let Some(a) = self.relay.poll_action() {
            self.actions.push(a);
        }
        out
    }

    fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// As [`H::take`], every `Offer` answered "want" by its peer: the
    /// offer is replaced by the `Store` that follows it.
    fn take_accepting(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        for a in self.take() {
            match a {
                Action::Request {
                    to,
                    purpose: RelayRequest::Offer(id),
                    ..
                } => out.extend(self.run(|r, ctx| {
                    r.on_offered(ctx, to, id, true, false);
                    let mut v = Vec::new();
                    while let Some(a) = r.poll_action() {
                        v.push(a);
                    }
                    v
                })),
                a => out.push(a),
            }
        }
        out
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.wall_ms += d.as_millis() as u64;
    }

    fn store(&mut self, from: Contact, e: &Envelope, hops: u32) -> StoreStatus {
        let e = e.clone();
        self.run(|r, ctx| r.on_store(ctx, from, e, hops))
    }

    fn writes(&mut self) -> Vec<Op> {
        let mut ops = Vec::new();
        self.relay.take_writes(&mut ops);
        ops
    }
}

fn stores(actions: &[Action]) -> Vec<(Address, u32, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Request {
                to,
                body: Body::Store { hops_left, .. },
                challenge,
                ..
            } => Some((to.id, *hops_left, *challenge)),
            _ => None,
        })
        .collect()
}

fn offers(actions: &[Action]) -> Vec<(Address, Vec<MessageId>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Request {
                to,
                body: Body::Offer { ids },
                ..
            } => Some((to.id, ids.clone())),
            _ => None,
        })
        .collect()
}

fn acks(actions: &[Action]) -> Vec<(Address, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Request {
                to,
                body: Body::Acknowledge { hops_left, .. },
                ..
            } => Some((to.id, *hops_left)),
            _ => None,
        })
        .collect()
}

fn counted(actions: &[Action], reason: DropReason) -> usize {
    actions
        .iter()
        .filter(|a| **a == Action::Count(reason))
        .count()
}

fn schedules(actions: &[Action]) -> Vec<(RouteKey, Instant)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Schedule(k, at) => Some((*k, *at)),
            _ => None,
        })
        .collect()
}

fn events(actions: &[Action]) -> Vec<Event> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// A relay holding one message for a far recipient with `n` neighbours of
/// the recipient in its table.
fn holding(config: Config, n: u8) -> (H, Envelope, Vec<Contact>) {
    let mut h = H::new(config);
    let to = far_from(h.addr());
    let ns = h.neighbours(to, n);
    let e = envelope(to, "hello");
    let from = contact(near(h.addr(), 0xee), 200);
    assert_eq!(h.store(from, &e, 3), StoreStatus::Held);
    (h, e, ns)
}

#[test]
fn a_valid_store_is_held_and_relayed_at_once_only_inwards() {
    let mut h = H::new(Config::default());
    let to = far_from(h.addr());
    let inside = h.neighbours(to, 3);
    // A contact farther from the recipient than we are gets nothing.
    let mut far = h.addr();
    far.0[0] ^= 0x40;
    let outside = contact(far, 99);
    h.peers.contacts.push(outside);
    let e = envelope(to, "hi");
    let from = contact(near(h.addr(), 0xee), 200);
    assert_eq!(h.store(from, &e, 3), StoreStatus::Held);
    assert!(h.relay.holds(&e.id()));
    let sent = stores(&h.take_accepting());
    let ids: BTreeSet<Address> = sent.iter().map(|s| s.0).collect();
    assert_eq!(ids, inside.iter().map(|c| c.id).collect());
    assert!(
        sent.iter().all(|s| s.1 == 2 && !s.2),
        "hops 3 - 1, verified"
    );
    // The record is written.
    let ops = h.writes();
    assert!(ops
        .iter()
        .any(|o| matches!(o, Op::Put(Table::Held, k, _) if *k == e.id().0.to_vec())));
}

#[test]
fn invalid_stores_are_refused_and_counted_by_reason() {
    let mut h = H::new(Config::default());
    let to = far_from(h.addr());
    let from = contact(near(h.addr(), 0xee), 200);
    let a = author();
    let cases = [
        (
            Envelope::sign(&a, to, NOW_MS, 8 * 24 * 3600, 4, Bytes::new()),
            DropReason::TtlTooLong,
        ),
        (
            Envelope::sign(&a, to, NOW_MS + 600_000, 3600, 4, Bytes::new()),
            DropReason::FutureDated,
        ),
        (
            Envelope::sign(&a, to, NOW_MS - 7_200_000, 3600, 4, Bytes::new()),
            DropReason::Expired,
        ),
        (
            {
                let e = envelope(to, "x");
                Envelope::from_parts(
                    *e.sender_key(),
                    e.recipient(),
                    e.created_at_ms(),
                    e.ttl_secs(),
                    e.hop_limit(),
                    Bytes::from_static(b"y"),
                    *e.signature(),
                )
            },
            DropReason::BadMessageSignature,
        ),
    ];
    for (e, reason) in cases {
        assert_eq!(h.store(from, &e, 2), StoreStatus::Refused);
        assert_eq!(counted(&h.take(), reason), 1, "{reason}");
        assert!(!h.relay.holds(&e.id()));
    }
    assert_eq!(h.relay.held_count(), 0);
}

#[test]
fn attempts_back_off_exponentially_with_jitter_up_to_the_cap() {
    let (mut h, e, _) = holding(Config::default(), 2);
    let key = RouteKey {
        id: e.id(),
        ack: false,
    };
    let mut expected = Duration::from_secs(30);
    for _ in 0..10 {
        let sched = schedules(&h.take());
        let (k, at) = *sched.last().expect("an attempt is scheduled");
        assert_eq!(k, key);
        let delay = at - h.now;
        assert!(
            delay >= expected.mul_f64(0.75) && delay < expected.mul_f64(1.25),
            "{delay:?} for backoff {expected:?}"
        );
        h.now = at;
        h.wall_ms = NOW_MS; // keep the message alive
        h.run(|r, ctx| r.on_timer(ctx, key));
        expected = (expected * 2).min(Duration::from_secs(3600));
    }
}

#[test]
fn the_budget_caps_transmissions_but_a_spent_copy_still_reaches_its_recipient() {
    let config = Config {
        relay_budget: 3,
        ..Config::default()
    };
    let (mut h, e, _) = holding(config, 8);
    assert_eq!(
        stores(&h.take_accepting()).len(),
        3,
        "only the budget's worth"
    );
    let key = RouteKey {
        id: e.id(),
        ack: false,
    };
    assert_eq!(h.relay.route_of(key), Some((0, 3)));
    h.run(|r, ctx| r.on_timer(ctx, key));
    let actions = h.take();
    assert!(stores(&actions).is_empty(), "nothing more to others");
    assert!(schedules(&actions).is_empty(), "no more attempts");
    // Kept, not dropped: silent peers cannot make a relay give a copy up.
    assert!(h.relay.holds(&e.id()));
    let recipient = contact(e.recipient(), 61);
    h.peers.contacts.push(recipient);
    h.run(|r, ctx| r.contact_appeared(ctx, recipient, false));
    assert_eq!(
        stores(&h.take_accepting()),
        vec![(recipient.id, 0, true)],
        "free"
    );
}

#[test]
fn a_silent_peer_is_tried_twice_then_left_alone() {
    let (mut h, e, ns) = holding(Config::default(), 1);
    h.take();
    let id = e.id();
    let key = RouteKey { id, ack: false };
    for round in 0..4 {
        h.run(|r, _| r.store_failed(&ns[0].id, id, false));
        h.run(|r, ctx| r.on_timer(ctx, key));
        let again = stores(&h.take()).len();
        assert_eq!(again, usize::from(round == 0), "round {round}");
    }
    let budget = h.relay.route_of(key).unwrap().0;
    assert_eq!(budget, 32 - 2, "two transmissions to it in all");
}

#[test]
fn a_copy_with_no_hops_left_goes_only_to_the_recipient() {
    let mut h = H::new(Config::default());
    let to = far_from(h.addr());
    h.neighbours(to, 4);
    let recipient = contact(to, 50);
    let e = envelope(to, "last hop");
    let from = contact(near(h.addr(), 0xee), 200);
    assert_eq!(h.store(from, &e, 0), StoreStatus::Held);
    assert!(
        stores(&h.take()).is_empty(),
        "no hops: nobody but the recipient"
    );
    h.peers.contacts.push(recipient);
    h.run(|r, ctx| r.contact_appeared(ctx, recipient, false));
    assert_eq!(stores(&h.take()), vec![(to, 0, true)]);
}

#[test]
fn a_newcomer_gets_what_is_addressed_to_it_and_copies_it_is_closer_for() {
    let (mut h, e, _) = holding(Config::default(), 2);
    h.take();
    // Fewer than k holders: a contact inside the bound and among our k
    // closest to the recipient gets a copy.
    let newcomer = contact(near(e.recipient(), 0x40), 60);
    h.peers.contacts.push(newcomer);
    h.run(|r, ctx| r.contact_appeared(ctx, newcomer, false));
    assert_eq!(stores(&h.take_accepting()), vec![(newcomer.id, 2, false)]);
    // The recipient itself gets it with hops 0.
    let recipient = contact(e.recipient(), 61);
    h.peers.contacts.push(recipient);
    h.run(|r, ctx| r.contact_appeared(ctx, recipient, false));
    assert_eq!(stores(&h.take_accepting()), vec![(recipient.id, 0, true)]);
    // Offered again: already tried, nothing more.
    h.run(|r, ctx| r.contact_appeared(ctx, recipient, false));
    assert!(stores(&h.take_accepting()).is_empty());
}

#[test]
fn a_contact_that_moved_gets_its_messages_again() {
    let (mut h, e, _) = holding(Config::default(), 1);
    h.take();
    let recipient = contact(e.recipient(), 61);
    h.peers.contacts.push(recipient);
    h.run(|r, ctx| r.contact_appeared(ctx, recipient, false));
    assert_eq!(stores(&h.take()).len(), 1);
    let moved = Contact {
        addr: SocketAddr::from(([10, 9, 9, 9], 5000)),
        ..recipient
    };
    h.peers.contacts.retain(|c| c.id != moved.id);
    h.peers.contacts.push(moved);
    h.run(|r, ctx| r.contact_appeared(ctx, moved, true));
    let sent: Vec<Contact> = h
        .take()
        .into_iter()
        .filter_map(|a| match a {
            Action::Request { to, .. } => Some(to),
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![moved], "pushed to the new endpoint");
}

#[test]
fn pull_pushes_only_to_a_requester_in_the_table_at_that_endpoint() {
    let (mut h, e, _) = holding(Config::default(), 1);
    h.take();
    let recipient = contact(e.recipient(), 61);
    // Unproven: no count (who gets mail is nobody's business), no push,
    // but the node learns it should verify it.
    h.peers.unverified.insert(recipient.id);
    assert_eq!(h.run(|r, ctx| r.on_pull(ctx, recipient)), (0, true));
    assert!(stores(&h.take()).is_empty());
    h.peers.unverified.remove(&recipient.id);
    // Verified but not in the table: the count, nothing pushed yet.
    assert_eq!(h.run(|r, ctx| r.on_pull(ctx, recipient)), (1, true));
    assert!(stores(&h.take()).is_empty());
    h.peers.contacts.push(recipient);
    assert_eq!(h.run(|r, ctx| r.on_pull(ctx, recipient)), (1, true));
    assert_eq!(stores(&h.take()), vec![(recipient.id, 0, true)]);
    // Pulled again (say the first copy was lost): tried marks are cleared.
    assert_eq!(h.run(|r, ctx| r.on_pull(ctx, recipient)), (1, true));
    assert_eq!(stores(&h.take()).len(), 1);
}

#[test]
fn a_recipient_that_failed_before_gets_its_message_once_it_pulls_and_proves_its_key() {
    let (mut h, e, _) = holding(Config::default(), 1);
    h.take();
    let recipient = contact(e.recipient(), 61);
    // Tried twice, unanswered both times: given up on, and gone from the
    // table (three failures there, §7.4).
    h.peers.contacts.push(recipient);
    for _ in 0..2 {
        h.run(|r, ctx| r.contact_appeared(ctx, recipient, false));
        assert_eq!(stores(&h.take()), vec![(recipient.id, 0, true)]);
        h.run(|r, _| r.store_failed(&recipient.id, e.id(), false));
    }
    h.peers.contacts.retain(|c| c.id != recipient.id);
    h.run(|r, ctx| r.contact_appeared(ctx, recipient, false));
    assert!(stores(&h.take()).is_empty(), "given up on");
    // Back at the same endpoint, it asks before it has proven its key:
    // nothing yet...
    h.peers.unverified.insert(recipient.id);
    assert_eq!(h.run(|r, ctx| r.on_pull(ctx, recipient)), (0, true));
    assert!(stores(&h.take()).is_empty());
    // ...and once it proves it and enters the table (§16.8), it gets it.
    h.peers.unverified.remove(&recipient.id);
    h.peers.contacts.push(recipient);
    h.run(|r, ctx| r.contact_appeared(ctx, recipient, false));
    assert_eq!(stores(&h.take()), vec![(recipient.id, 0, true)]);
}

#[test]
fn a_forged_ack_changes_nothing() {
    let (mut h, e, _) = holding(Config::default(), 2);
    h.take();
    h.writes();
    let mallory = Identity::from_seed([66; 32]);
    let forged = Ack::sign(&mallory, &e);
    let peer = contact(near(h.addr(), 0x77), 77);
    assert!(!h.run(|r, ctx| r.on_ack(ctx, Some(peer), forged, 2)));
    let actions = h.take();
    assert_eq!(counted(&actions, DropReason::ForgedAck), 1);
    assert!(h.relay.holds(&e.id()));
    assert_eq!(h.relay.tombstone_count(), 0);
    assert!(acks(&actions).is_empty());
    assert!(h.writes().is_empty(), "no state written");
}

#[test]
fn a_genuine_ack_purges_the_copy_along_the_paths_it_took() {
    let mut h = H::new(Config::default());
    let recipient = Identity::from_seed([2; 32]);
    let to = recipient.address();
    let ns = h.neighbours(to, 3);
    let e = envelope(to, "real");
    let bearer = contact(near(h.addr(), 0xee), 200);
    assert_eq!(h.store(bearer, &e, 3), StoreStatus::Held);
    assert_eq!(stores(&h.take_accepting()).len(), 3);
    let ack = Ack::sign(&recipient, &e);
    assert!(h.run(|r, ctx| r.on_ack(ctx, Some(ns[0]), ack, 0)));
    let purged: BTreeSet<(Address, u32)> = acks(&h.take()).into_iter().collect();
    // Everyone tried or holding, except the one the ack came from.
    let want: BTreeSet<(Address, u32)> = ns[1..]
        .iter()
        .map(|c| (c.id, 0))
        .chain([(bearer.id, 0)])
        .collect();
    assert_eq!(purged, want);
    assert!(!h.relay.holds(&e.id()));
    assert_eq!(h.relay.tombstone_count(), 1);
}

#[test]
fn an_ack_with_hops_left_is_routed_towards_the_sender() {
    let mut h = H::new(Config::default());
    let recipient = Identity::from_seed([2; 32]);
    let e = envelope(recipient.address(), "x");
    let sender = e.sender();
    let toward: Vec<Contact> = h.neighbours(sender, 3);
    let ack = Ack::sign(&recipient, &e);
    let bearer = contact(near(h.addr(), 0xee), 200);
    // Without the message only the signature can be checked: accepted.
    assert!(h.run(|r, ctx| r.on_ack(ctx, Some(bearer), ack, 3)));
    let sent: BTreeSet<(Address, u32)> = acks(&h.take()).into_iter().collect();
    assert_eq!(sent, toward.iter().map(|c| (c.id, 2)).collect());
    assert_eq!(h.relay.routing_acks(), 1);
    // The sender answering ends the routing.
    let s = contact(sender, 90);
    h.run(|r, _| r.on_acknowledged(s, ack.id));
    assert_eq!(h.relay.routing_acks(), 0);
}

#[test]
fn a_routed_ack_goes_back_neither_to_its_bearer_nor_to_its_recipient() {
    let mut h = H::new(Config::default());
    let recipient = Identity::from_seed([2; 32]);
    let e = envelope(recipient.address(), "x");
    let sender = e.sender();
    let toward: Vec<Contact> = h.neighbours(sender, 3);
    // The bearer and the recipient are the relay's two contacts nearest
    // the sender (as when the recipient is itself close to the sender).
    let bearer = contact(near(sender, 0xf0), 200);
    let signer = contact(recipient.address(), 201);
    h.peers.contacts.extend([bearer, signer]);
    let ack = Ack::sign(&recipient, &e);
    assert!(h.run(|r, ctx| r.on_ack(ctx, Some(bearer), ack, 3)));
    let sent: BTreeSet<(Address, u32)> = acks(&h.take()).into_iter().collect();
    assert_eq!(sent, toward.iter().map(|c| (c.id, 2)).collect());
    // The same when the recipient is the bearer.
    let mut h = H::new(Config::default());
    let toward: Vec<Contact> = h.neighbours(sender, 3);
    h.peers.contacts.push(signer);
    assert!(h.run(|r, ctx| r.on_ack(ctx, Some(signer), ack, 3)));
    let sent: BTreeSet<(Address, u32)> = acks(&h.take()).into_iter().collect();
    assert_eq!(sent, toward.iter().map(|c| (c.id, 2)).collect());
}

#[test]
fn a_duplicate_ack_is_routed_only_if_never_routed_before() {
    let mut h = H::new(Config::default());
    let recipient = Identity::from_seed([2; 32]);
    let e = envelope(recipient.address(), "x");
    h.neighbours(e.sender(), 2);
    let ack = Ack::sign(&recipient, &e);
    let bearer = contact(near(h.addr(), 0xee), 200);
    // A purge brings it first: kept, not routed.
    assert!(h.run(|r, ctx| r.on_ack(ctx, Some(bearer), ack, 0)));
    assert!(acks(&h.take()).is_empty());
    // The routed copy follows: routed now.
    assert!(h.run(|r, ctx| r.on_ack(ctx, Some(bearer), ack, 2)));
    assert_eq!(acks(&h.take()).len(), 2);
    // Routing ends (the sender answers); a later duplicate is not routed again.
    h.run(|r, _| r.on_acknowledged(contact(e.sender(), 90), ack.id));
    assert!(h.run(|r, ctx| r.on_ack(ctx, Some(bearer), ack, 2)));
    assert!(acks(&h.take()).is_empty());
}

#[test]
fn a_late_copy_meets_the_tombstone() {
    let mut h = H::new(Config::default());
    let recipient = Identity::from_seed([2; 32]);
    let e = envelope(recipient.address(), "late");
    let from = contact(near(h.addr(), 0xee), 200);
    assert_eq!(h.store(from, &e, 3), StoreStatus::Held);
    let ack = Ack::sign(&recipient, &e);
    assert!(h.run(|r, ctx| r.on_ack(ctx, None, ack, 0)));
    assert!(!h.relay.holds(&e.id()));
    assert_eq!(
        h.store(from, &e, 3),
        StoreStatus::Acknowledged(Box::new(ack))
    );
    assert!(!h.relay.holds(&e.id()));
}

#[test]
fn a_forged_ack_for_a_message_not_yet_seen_cannot_block_it() {
    let mut h = H::new(Config::default());
    let to = far_from(h.addr());
    h.neighbours(to, 2);
    let e = envelope(to, "target");
    // Signed by someone who is not the recipient: valid on signature
    // alone, so answered, but it leaves nothing behind.
    let forged = Ack::sign(&Identity::from_seed([66; 32]), &e);
    assert!(h.run(|r, ctx| r.on_ack(ctx, None, forged, 0)));
    assert_eq!(h.relay.tombstone_count(), 0);
    let from = contact(near(h.addr(), 0xee), 200);
    assert_eq!(h.store(from, &e, 3), StoreStatus::Held);
}

/// A contact on network `net` (a /24 of its own).
fn on_net(id: Address, net: u8) -> Contact {
    Contact {
        id,
        addr: SocketAddr::from(([10, net, 0, 1], 4000)),
    }
}

#[test]
fn a_full_relay_makes_room_from_the_largest_source_and_never_its_own() {
    let config = Config {
        max_held: 3,
        ..Config::default()
    };
    let mut h = H::new(config);
    let me = h.addr();
    // Our own message, to the farthest possible recipient.
    let far = far_identity(me).address();
    h.run(|r, ctx| r.send(ctx, far, Bytes::from_static(b"mine")))
        .expect("send");
    let a = on_net(near(me, 0xee), 1);
    let b = on_net(near(me, 0xed), 2);
    let mut mid = me;
    mid.0[1] ^= 0x80;
    let mut close = me;
    close.0[10] ^= 0x01;
    let a_far = envelope(mid, "a far");
    let a_near = envelope(close, "a near");
    assert_eq!(h.store(a, &a_far, 2), StoreStatus::Held);
    assert_eq!(h.store(a, &a_near, 2), StoreStatus::Held);
    // Full. Network b's first message makes a give way: a's message for
    // the recipient farthest from us goes.
    let b_msg = envelope(close, "b");
    assert_eq!(h.store(b, &b_msg, 2), StoreStatus::Held);
    assert_eq!(counted(&h.take(), DropReason::EvictedHeld), 1);
    assert!(!h.relay.holds(&a_far.id()) && h.relay.holds(&a_near.id()));
    // Now a holds no more than b: a cannot push b out, however near.
    let a_again = envelope(close, "a again");
    assert_eq!(h.store(a, &a_again, 2), StoreStatus::Busy);
    assert_eq!(counted(&h.take(), DropReason::RelayFull), 1);
    assert!(h.relay.holds(&b_msg.id()));
    assert_eq!(h.relay.held_count(), 3, "own message kept");
}

#[test]
fn one_network_gets_its_share_and_no_more() {
    let mut h = H::new(Config {
        max_held_per_source: 2,
        ..Config::default()
    });
    let me = h.addr();
    let to = far_from(me);
    let net = |k: u8| on_net(near(me, k), 7);
    // Fresh keys do not help: the quota is per network.
    for (i, seed) in [11u8, 12].into_iter().enumerate() {
        let e = Envelope::sign(
            &Identity::from_seed([seed; 32]),
            to,
            NOW_MS,
            3600,
            4,
            Bytes::new(),
        );
        assert_eq!(h.store(net(i as u8), &e, 2), StoreStatus::Held);
    }
    let e = Envelope::sign(
        &Identity::from_seed([13; 32]),
        to,
        NOW_MS,
        3600,
        4,
        Bytes::new(),
    );
    assert_eq!(h.store(net(3), &e, 2), StoreStatus::Busy);
    assert_eq!(counted(&h.take(), DropReason::SourceQuota), 1);
    // Another network still fits.
    assert_eq!(h.store(on_net(near(me, 9), 8), &e, 2), StoreStatus::Held);
}

#[test]
fn the_per_sender_quota_answers_busy() {
    let config = Config {
        max_held_per_sender: 2,
        ..Config::default()
    };
    let mut h = H::new(config);
    let to = far_from(h.addr());
    let from = contact(near(h.addr(), 0xee), 200);
    for text in ["a", "b"] {
        assert_eq!(h.store(from, &envelope(to, text), 2), StoreStatus::Held);
    }
    assert_eq!(h.store(from, &envelope(to, "c"), 2), StoreStatus::Busy);
    assert_eq!(counted(&h.take(), DropReason::SenderQuota), 1);
    // Another sender still fits.
    let other = Envelope::sign(
        &Identity::from_seed([8; 32]),
        to,
        NOW_MS,
        3600,
        4,
        Bytes::from_static(b"d"),
    );
    assert_eq!(h.store(from, &other, 2), StoreStatus::Held);
}

#[test]
fn a_node_that_does_not_relay_refuses_others_messages() {
    let mut h = H::new(Config {
        relay: false,
        ..Config::default()
    });
    let to = far_from(h.addr());
    let from = contact(near(h.addr(), 0xee), 200);
    assert_eq!(h.store(from, &envelope(to, "x"), 2), StoreStatus::Refused);
    assert_eq!(counted(&h.take(), DropReason::NotRelaying), 1);
}

#[test]
fn delivery_stores_the_message_before_the_ack_and_shows_it_once_when_released() {
    let mut h = H::new(Config::default());
    let me = h.addr();
    let neighbours = h.neighbours(me, 3);
    let e = envelope(me, "for me");
    let relay_peer = neighbours[0];
    let status = h.store(relay_peer, &e, 0);
    let StoreStatus::Delivered(ack) = status else {
        panic!("{status:?}");
    };
    assert!(ack.matches(&e, &crate::signing::ED25519));
    let actions = h.take();
    // Not shown yet: it waits for the front end.
    assert!(events(&actions).is_empty());
    assert_eq!(h.relay.unshown_count(), 1);
    // The message itself (not only its id) is in the inbox record.
    let ops = h.writes();
    let inbox = ops.iter().find_map(|o| match o {
        Op::Put(Table::Inbox, k, v) => Some(InboxRecord::decode(k, v).unwrap()),
        _ => None,
    });
    assert!(inbox.is_some_and(|r| r.unshown && r.envelope == Some(e.clone())));
    // The ack goes to the sender (a lookup first) and a purge to our
    // neighbourhood, except the peer that brought it.
    assert!(actions.contains(&Action::Lookup(e.sender())));
    let purged: BTreeSet<Address> = acks(&actions).into_iter().map(|a| a.0).collect();
    assert_eq!(purged, neighbours[1..].iter().map(|c| c.id).collect());
    // A second copy: not stored again, answered with the ack.
    assert!(matches!(
        h.store(neighbours[1], &e, 0),
        StoreStatus::Acknowledged(_)
    ));
    // Released: shown once, marked shown.
    assert_eq!(h.run(|r, ctx| r.release_messages(ctx.identity, 10)), 1);
    let shown = events(&h.take());
    assert!(matches!(&shown[..], [Event::MessageReceived { id, .. }] if *id == e.id()));
    assert_eq!(h.run(|r, ctx| r.release_messages(ctx.identity, 10)), 0);
    // Recording it shown is the front end's (Table::Shown), just before it
    // shows it: the relay writes nothing more.
    assert!(h.writes().is_empty());
}

#[test]
fn a_message_from_its_own_sender_needs_no_routed_ack() {
    let mut h = H::new(Config::default());
    let me = h.addr();
    let e = envelope(me, "direct");
    let sender = contact(e.sender(), 9);
    assert!(matches!(h.store(sender, &e, 0), StoreStatus::Delivered(_)));
    let actions = h.take();
    assert!(!actions.iter().any(|a| matches!(a, Action::Lookup(_))));
    assert_eq!(h.relay.routing_acks(), 0);
}

#[test]
fn catch_up_is_shown_in_writing_order() {
    let mut h = H::new(Config::default());
    let me = h.addr();
    let from = contact(near(me, 0xee), 200);
    for (t, text) in [(3, "third"), (1, "first"), (2, "second")] {
        let e = envelope_at(me, NOW_MS + t, text);
        assert!(matches!(h.store(from, &e, 0), StoreStatus::Delivered(_)));
    }
    h.take();
    h.run(|r, ctx| r.release_messages(ctx.identity, usize::MAX));
    let texts: Vec<Bytes> = events(&h.take())
        .into_iter()
        .filter_map(|e| match e {
            Event::MessageReceived { body, .. } => Some(body),
            _ => None,
        })
        .collect();
    assert_eq!(
        texts,
        ["first", "second", "third"].map(|t| Bytes::from_static(t.as_bytes()))
    );
}

#[test]
fn too_many_unshown_messages_are_answered_busy_and_pulled_later() {
    let mut h = H::new(Config {
        max_unshown: 2,
        ..Config::default()
    });
    let me = h.addr();
    let from = contact(near(me, 0xee), 200);
    for text in ["a", "b"] {
        assert!(matches!(
            h.store(from, &envelope(me, text), 0),
            StoreStatus::Delivered(_)
        ));
    }
    let third = envelope(me, "c");
    assert_eq!(h.store(from, &third, 0), StoreStatus::Busy);
    assert_eq!(counted(&h.take(), DropReason::InboxFull), 1);
    assert!(!h.relay.wants_pull());
    h.run(|r, ctx| r.release_messages(ctx.identity, 2));
    assert!(h.relay.wants_pull(), "room again: ask the relays");
    assert!(!h.relay.wants_pull());
    assert!(matches!(
        h.store(from, &third, 0),
        StoreStatus::Delivered(_)
    ));
}

#[test]
fn sending_places_copies_after_one_lookup_and_reports_sent_then_delivered() {
    let mut h = H::new(Config::default());
    let recipient = Identity::from_seed([2; 32]);
    let to = recipient.address();
    let ns = h.neighbours(to, 8);
    let id1 = h
        .run(|r, ctx| r.send(ctx, to, Bytes::from_static(b"one")))
        .expect("send");
    let id2 = h
        .run(|r, ctx| r.send(ctx, to, Bytes::from_static(b"two")))
        .expect("send");
    let lookups = h
        .take()
        .into_iter()
        .filter(|a| matches!(a, Action::Lookup(_)))
        .count();
    assert_eq!(lookups, 1, "one lookup serves both");
    assert_eq!(h.relay.outbox_state(&id1), Some(OutboxState::Finding));
    h.run(|r, ctx| r.lookup_done(ctx, to, &ns));
    let sent = stores(&h.take());
    assert_eq!(sent.len(), 16, "k copies of each");
    assert!(sent.iter().all(|s| s.1 == 3));
    assert_eq!(h.relay.outbox_state(&id1), Some(OutboxState::Placing(8)));
    for c in &ns {
        h.run(|r, ctx| r.on_stored(ctx, *c, id1, StoreStatus::Held));
    }
    let ev = events(&h.take());
    assert_eq!(
        ev,
        vec![Event::MessageSent {
            id: id1,
            wire_id: id1,
            to,
            relays: 8,
            direct: false,
            no_contacts: false,
            expires_at_ms: NOW_MS + Config::default().default_ttl.as_millis() as u64,
        }]
    );
    // The ack arrives through a relay.
    let e = h
        .relay
        .outbox
        .get(&id1)
        .map(|o| o.envelope.clone())
        .unwrap();
    let ack = Ack::sign(&recipient, &e);
    assert!(h.run(|r, ctx| r.on_ack(ctx, Some(ns[0]), ack, 0)));
    assert_eq!(events(&h.take()), vec![Event::Delivered { id: id1, to }]);
    assert_eq!(h.relay.outbox_state(&id1), Some(OutboxState::Delivered));
    assert_eq!(h.relay.outbox_pending(), 1);
    assert!(h.relay.holds(&id2));
}

#[test]
fn a_slow_first_round_peer_does_not_hold_up_the_sent_report() {
    let mut h = H::new(Config::default());
    let to = Identity::from_seed([2; 32]).address();
    let ns = h.neighbours(to, 2);
    let id = h
        .run(|r, ctx| r.send(ctx, to, Bytes::from_static(b"x")))
        .expect("send");
    h.run(|r, ctx| r.lookup_done(ctx, to, &ns));
    h.take();
    h.run(|r, ctx| r.on_stored(ctx, ns[0], id, StoreStatus::Held));
    assert!(events(&h.take()).is_empty());
    h.run(|r, _| r.store_slow(&ns[1].id, id));
    assert!(matches!(
        &events(&h.take())[..],
        [Event::MessageSent { relays: 1, .. }]
    ));
    // Its late answer still makes it a holder.
    h.run(|r, ctx| r.on_stored(ctx, ns[1], id, StoreStatus::Held));
    assert!(events(&h.take()).is_empty());
}

#[test]
fn busy_and_failed_peers_are_tried_again_at_the_next_attempt() {
    let (mut h, e, ns) = holding(Config::default(), 2);
    h.take();
    let id = e.id();
    let budget = h.relay.route_of(RouteKey { id, ack: false }).unwrap().0;
    h.run(|r, ctx| r.on_stored(ctx, ns[0], id, StoreStatus::Busy));
    h.run(|r, _| r.store_failed(&ns[1].id, id, false));
    assert_eq!(
        h.relay.route_of(RouteKey { id, ack: false }).unwrap().0,
        budget + 1,
        "busy is free, a timeout is not"
    );
    h.run(|r, ctx| r.on_timer(ctx, RouteKey { id, ack: false }));
    let again: BTreeSet<Address> = stores(&h.take_accepting())
        .into_iter()
        .map(|s| s.0)
        .collect();
    assert_eq!(again, ns.iter().map(|c| c.id).collect());
    // A refusal is final.
    h.run(|r, ctx| r.on_stored(ctx, ns[0], id, StoreStatus::Refused));
    h.run(|r, ctx| r.on_stored(ctx, ns[1], id, StoreStatus::Held));
    h.run(|r, ctx| r.on_timer(ctx, RouteKey { id, ack: false }));
    assert!(stores(&h.take_accepting()).is_empty());
}

#[test]
fn an_expired_message_is_dropped_and_its_sender_told() {
    let mut h = H::new(Config {
        default_ttl: Duration::from_secs(60),
        ..Config::default()
    });
    let to = Identity::from_seed([2; 32]).address();
    let id = h
        .run(|r, ctx| r.send(ctx, to, Bytes::from_static(b"x")))
        .expect("send");
    h.run(|r, ctx| r.lookup_done(ctx, to, &[]));
    h.take();
    h.advance(Duration::from_secs(61));
    h.run(|r, ctx| r.on_timer(ctx, RouteKey { id, ack: false }));
    assert!(!h.relay.holds(&id));
    assert_eq!(events(&h.take()), vec![Event::MessageExpired { id }]);
    assert_eq!(h.relay.outbox_state(&id), Some(OutboxState::Expired));
    h.run(|r, ctx| r.sweep(ctx));
    assert!(events(&h.take()).is_empty(), "told once");
}

#[test]
fn the_sweep_forgets_tombstones_and_shown_messages_after_their_time() {
    let mut h = H::new(Config::default());
    let me = h.addr();
    let from = contact(near(me, 0xee), 200);
    let e = envelope(me, "x");
    assert!(matches!(h.store(from, &e, 0), StoreStatus::Delivered(_)));
    h.run(|r, ctx| r.release_messages(ctx.identity, 1));
    assert_eq!((h.relay.tombstone_count(), h.relay.inbox_count()), (1, 1));
    h.writes();
    // Message TTL 1 h plus the 1 h margin.
    h.advance(Duration::from_secs(2 * 3600 + 1));
    h.run(|r, ctx| r.sweep(ctx));
    assert_eq!((h.relay.tombstone_count(), h.relay.inbox_count()), (0, 0));
    let ops = h.writes();
    assert!(ops.contains(&Op::Delete(Table::Tombstones, e.id().0.to_vec())));
    assert!(ops.contains(&Op::Delete(Table::Inbox, e.id().0.to_vec())));
    assert!(ops.contains(&Op::Delete(Table::Shown, e.id().0.to_vec())));
}

#[test]
fn routed_acks_are_capped_soonest_expiry_first() {
    let mut h = H::new(Config {
        max_routed_acks: 2,
        ..Config::default()
    });
    let recipient = Identity::from_seed([2; 32]);
    let a = author();
    let bearer = contact(near(h.addr(), 0xee), 200);
    let mut ids = Vec::new();
    for ttl in [100, 300, 200] {
        let e = Envelope::sign(&a, recipient.address(), NOW_MS, ttl, 4, Bytes::new());
        ids.push(e.id());
        assert!(h.run(|r, ctx| r.on_ack(ctx, Some(bearer), Ack::sign(&recipient, &e), 2)));
    }
    assert_eq!(h.relay.routing_acks(), 2);
    assert_eq!(counted(&h.take(), DropReason::EvictedAck), 1);
    assert!(h
        .relay
        .route_of(RouteKey {
            id: ids[0],
            ack: true
        })
        .is_none());
    assert_eq!(h.relay.tombstone_count(), 0, "never ours: no tombstones");
}

#[test]
fn only_changed_records_are_written_and_restore_brings_everything_back() {
    let mut h = H::new(Config::default());
    let me = h.addr();
    let recipient = Identity::from_seed([2; 32]);
    h.neighbours(recipient.address(), 2);
    let from = contact(near(me, 0xee), 200);
    // Held, routed ack + tombstone, outbox, inbox (unshown).
    let held = envelope(far_from(me), "held");
    assert_eq!(h.store(from, &held, 2), StoreStatus::Held);
    let acked = envelope(recipient.address(), "acked");
    assert!(h.run(|r, ctx| r.on_ack(ctx, Some(from), Ack::sign(&recipient, &acked), 2)));
    let sent = h
        .run(|r, ctx| r.send(ctx, recipient.address(), Bytes::from_static(b"mine")))
        .expect("send");
    let inbound = envelope(me, "for me");
    assert!(matches!(
        h.store(from, &inbound, 0),
        StoreStatus::Delivered(_)
    ));
    let ops = h.writes();
    assert!(h.writes().is_empty(), "nothing changed since");
    // A duplicate changes nothing on disk.
    assert_eq!(h.store(from, &held, 2), StoreStatus::Held);
    assert!(h.writes().is_empty());

    let mut store = crate::store::MemoryStore::default();
    crate::store::Store::apply(&mut store, &crate::wire::records::WriteBatch { id: 1, ops })
        .unwrap();
    let snapshot = crate::store::Store::load(&store).unwrap();
    let mut again = H::new(Config::default());
    again.relay.restore(again.now, again.wall_ms, &snapshot);
    again.run(|_, _| ());
    assert!(again.relay.holds(&held.id()) && again.relay.holds(&sent));
    // The ack we route for another, and the one for our own delivery;
    // a tombstone only for our own delivery (the other message was never
    // ours to hold).
    assert_eq!(again.relay.routing_acks(), 2);
    assert_eq!(again.relay.tombstone_count(), 1);
    assert_eq!(again.relay.outbox_state(&sent), Some(OutboxState::Sent));
    assert_eq!(again.relay.unshown_count(), 1);
    // Every retry resumes at once.
    let now = again.now;
    let resumed: BTreeSet<RouteKey> = schedules(&again.take())
        .into_iter()
        .filter(|(_, at)| *at == now)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(resumed.len(), 4, "2 held (ours and another's) + 2 acks");
}

#[test]
fn unreadable_records_are_counted_and_kept_aside_on_restore() {
    let mut snapshot = Snapshot::new();
    snapshot.insert(Table::Held, vec![(vec![1; 20], vec![0xff, 0x01])]);
    snapshot.insert(Table::Tombstones, vec![(vec![2; 3], vec![])]);
    let mut h = H::new(Config::default());
    h.relay.restore(h.now, h.wall_ms, &snapshot);
    assert_eq!(
        counted(&h.take(), DropReason::StoreCorrupt),
        0,
        "not yet drained"
    );
    h.run(|_, _| ());
    assert_eq!(counted(&h.take(), DropReason::StoreCorrupt), 2);
    let ops = h.writes();
    assert!(ops.contains(&Op::Delete(Table::Held, vec![1; 20])));
    assert!(ops.contains(&Op::Delete(Table::Tombstones, vec![2; 3])));
    // Kept aside, not lost.
    assert!(ops.contains(&Op::Put(
        Table::Damaged,
        records::damaged_key(Table::Held, &[1; 20]),
        vec![0xff, 0x01]
    )));
    assert_eq!(h.relay.held_count(), 0);
}

#[test]
fn a_batch_that_failed_is_written_again() {
    let (mut h, e, _) = holding(Config::default(), 2);
    let first = h.writes();
    assert!(!first.is_empty());
    assert!(h.writes().is_empty());
    h.relay.rewrite(first.clone());
    let again = h.writes();
    let keys = |ops: &[Op]| -> BTreeSet<(Table, Vec<u8>)> {
        ops.iter()
            .map(|o| (o.key().0, o.key().1.to_vec()))
            .collect()
    };
    assert_eq!(keys(&again), keys(&first));
    assert!(again
        .iter()
        .any(|o| matches!(o, Op::Put(Table::Held, k, _) if *k == e.id().0.to_vec())));
}

#[test]
fn a_duplicate_store_records_only_verified_non_recipient_holders() {
    let (mut h, e, _) = holding(Config::default(), 1);
    h.take();
    let id = e.id();
    // The recipient's address claimed by someone: not recorded as holding,
    // so the copy still goes to the real recipient when it appears.
    let claimer = contact(e.recipient(), 66);
    assert_eq!(h.store(claimer, &e, 3), StoreStatus::Held);
    let unverified = contact(near(e.recipient(), 0x30), 67);
    h.peers.unverified.insert(unverified.id);
    assert_eq!(h.store(unverified, &e, 3), StoreStatus::Held);
    let real = contact(e.recipient(), 68);
    h.peers.contacts.push(real);
    h.run(|r, ctx| r.contact_appeared(ctx, real, false));
    assert_eq!(stores(&h.take()), vec![(real.id, 0, true)]);
    assert!(h.relay.holds(&id));
}

#[test]
fn an_ack_for_an_unknown_message_leaves_no_tombstone_and_is_routed_once_for_a_verified_bearer() {
    let mut h = H::new(Config::default());
    let recipient = Identity::from_seed([2; 32]);
    let e = envelope(recipient.address(), "never seen here");
    h.neighbours(e.sender(), 2);
    let ack = Ack::sign(&recipient, &e);
    let stranger = contact(near(h.addr(), 0xee), 200);
    h.peers.unverified.insert(stranger.id);
    assert!(h.run(|r, ctx| r.on_ack(ctx, Some(stranger), ack, 3)));
    assert!(acks(&h.take()).is_empty(), "not on a stranger's word");
    assert_eq!(
        h.relay.tombstone_count(),
        0,
        "strangers cannot fill tombstones"
    );
    let friend = contact(near(h.addr(), 0xef), 201);
    assert!(h.run(|r, ctx| r.on_ack(ctx, Some(friend), ack, 3)));
    assert_eq!(acks(&h.take()).len(), 2);
    assert_eq!(h.relay.tombstone_count(), 0);
    // The sender answers; the same ack again is not routed a second time.
    h.run(|r, _| r.on_acknowledged(contact(e.sender(), 90), ack.id));
    assert!(h.run(|r, ctx| r.on_ack(ctx, Some(friend), ack, 3)));
    assert!(acks(&h.take()).is_empty());
}

#[test]
fn an_ack_for_a_copy_we_no_longer_hold_is_still_checked_in_full() {
    let config = Config {
        relay_budget: 1,
        default_ttl: Duration::from_secs(60),
        ..Config::default()
    };
    let mut h = H::new(config);
    let recipient = Identity::from_seed([2; 32]);
    let to = recipient.address();
    h.neighbours(to, 1);
    let e = Envelope::sign(&author(), to, NOW_MS, 60, 4, Bytes::from_static(b"x"));
    let from = contact(near(h.addr(), 0xee), 200);
    assert_eq!(h.store(from, &e, 3), StoreStatus::Held);
    // It expires and is dropped.
    h.advance(Duration::from_secs(61));
    h.run(|r, ctx| r.sweep(ctx));
    assert!(!h.relay.holds(&e.id()));
    h.take();
    // A forgery signed by someone else is caught (the recipient is known)...
    let forged = Ack::sign(&Identity::from_seed([66; 32]), &e);
    assert!(!h.run(|r, ctx| r.on_ack(ctx, Some(from), forged, 0)));
    // ...and the genuine ack still becomes a tombstone.
    assert!(h.run(|r, ctx| r.on_ack(ctx, Some(from), Ack::sign(&recipient, &e), 0)));
    assert_eq!(h.relay.tombstone_count(), 1);
}

#[test]
fn a_message_older_than_forgotten_ids_is_shown_marked_never_acknowledged_and_dropped() {
    let mut h = H::new(Config {
        max_inbox: 2,
        ..Config::default()
    });
    let me = h.addr();
    let from = contact(near(me, 0xee), 200);
    let old = envelope_at(me, NOW_MS, "old");
    // Written before the junk below, still on its way.
    let late = envelope_at(me, NOW_MS - 60_000, "late");
    assert!(matches!(h.store(from, &old, 0), StoreStatus::Delivered(_)));
    h.run(|r, ctx| r.release_messages(ctx.identity, 10));
    // Junk (dated in the future, as an attacker may) pushes the old id out
    // of the inbox and raises the floor.
    for (i, t) in ["j1", "j2"].into_iter().enumerate() {
        let junk = envelope_at(me, NOW_MS + 100_000 + i as u64, t);
        assert!(matches!(h.store(from, &junk, 0), StoreStatus::Delivered(_)));
        h.run(|r, ctx| r.release_messages(ctx.identity, 10));
    }
    assert!(h.relay.replay_floor_ms >= NOW_MS);
    h.take();
    // A message never received, older than the floor, is not lost: it is
    // stored, acknowledged and shown, marked as a possible repeat.
    assert!(matches!(h.store(from, &late, 0), StoreStatus::Delivered(_)));
    h.take();
    assert_eq!(h.run(|r, ctx| r.release_messages(ctx.identity, 10)), 1);
    let shown = events(&h.take());
    assert!(
        matches!(&shown[..], [Event::MessageReceived { id, maybe_repeat: true, .. }] if *id == late.id()),
        "{shown:?}"
    );
    assert_eq!(h.relay.maybe_repeats(), 1);
    // A replay of the forgotten one is shown again, marked the same way
    // (the tombstone would catch it; take it away to test the floor).
    h.relay.tombstones.remove(&old.id());
    assert!(matches!(h.store(from, &old, 0), StoreStatus::Delivered(_)));
    h.run(|r, ctx| r.release_messages(ctx.identity, 10));
    let shown = events(&h.take());
    assert!(matches!(
        &shown[..],
        [Event::MessageReceived {
            maybe_repeat: true,
            ..
        }]
    ));
    // A message newer than the floor is not marked.
    let fresh = envelope_at(me, NOW_MS + 150_000, "fresh");
    assert!(matches!(
        h.store(from, &fresh, 0),
        StoreStatus::Delivered(_)
    ));
    h.run(|r, ctx| r.release_messages(ctx.identity, 10));
    let shown = events(&h.take());
    assert!(matches!(
        &shown[..],
        [Event::MessageReceived {
            maybe_repeat: false,
            ..
        }]
    ));
    // The floor and the mark survive a restart.
    let ops = h.writes();
    assert!(ops
        .iter()
        .any(|o| matches!(o, Op::Put(Table::Meta, k, _) if k == REPLAY_FLOOR_KEY)));
    assert!(ops.iter().any(|o| matches!(o, Op::Put(Table::Inbox, k, v)
        if *k == records::key(&late.id())
            && InboxRecord::decode(k, v).is_ok_and(|r| r.maybe_repeat))));
}

#[test]
fn a_key_of_small_order_is_not_learned_and_drafts_keep_waiting() {
    let mut h = H::new(Config::default());
    let mut bytes = [0u8; 32];
    bytes[0] = 1;
    let weak = VerifyingKey::from_bytes(&bytes).expect("the identity point decodes");
    let to = Address::of_key(weak.as_bytes());
    let id = h
        .run(|r, ctx| r.send(ctx, to, Bytes::from_static(b"to nobody")))
        .expect("send");
    h.take();
    h.run(|r, ctx| r.learn_key(ctx, weak));
    let actions = h.take();
    assert!(stores(&actions).is_empty());
    assert_eq!(counted(&actions, DropReason::CannotSeal), 1);
    assert_eq!(h.relay.wanted_keys(), vec![to], "the draft still waits");
    assert_eq!(h.relay.drafts_for(&to), 1);
    // Still the user's to withdraw.
    assert!(h.run(|r, _| r.cancel(id)).is_ok());
}

#[test]
fn without_the_key_a_message_waits_as_a_draft_and_is_sealed_once_it_is_learned() {
    let mut h = H::new(Config::default());
    // Seed 99 is not among the keys the relay knows.
    let stranger = Identity::from_seed([99; 32]);
    let to = stranger.address();
    let ns = h.neighbours(to, 2);
    let id = h
        .run(|r, ctx| r.send(ctx, to, Bytes::from_static(b"secret words")))
        .expect("send");
    let actions = h.take();
    assert_eq!(
        events(&actions),
        vec![Event::MessageQueued {
            id,
            to,
            expires_at_ms: NOW_MS + Config::default().default_ttl.as_millis() as u64
        }]
    );
    assert!(actions.contains(&Action::FindKey(to)));
    assert!(stores(&actions).is_empty(), "nothing leaves unsealed");
    assert_eq!(h.relay.wanted_keys(), vec![to]);
    // The draft is on disk, so a crash does not lose it.
    assert!(h
        .writes()
        .iter()
        .any(|o| matches!(o, Op::Put(Table::Drafts, ..))));
    // The key arrives (an identity record, a proof...): sealed and placed.
    let key = stranger.public_key();
    h.run(|r, ctx| r.learn_key(ctx, key));
    assert!(h.relay.wanted_keys().is_empty());
    h.run(|r, ctx| r.lookup_done(ctx, to, &ns));
    let actions = h.take();
    let bodies: Vec<Envelope> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Request {
                body: Body::Store { envelope, .. },
                ..
            } => Some((**envelope).clone()),
            _ => None,
        })
        .collect();
    assert_eq!(bodies.len(), 2);
    for e in &bodies {
        assert!(!e.body().windows(b"secret".len()).any(|w| w == b"secret"));
        assert_eq!(
            crypto::open_envelope(&stranger, e).unwrap(),
            b"secret words"
        );
    }
    // The user's id stays the draft's: it is what Sent and Delivered name;
    // Sent also gives the id on the wire, which the ack will carry.
    let wire_id = bodies[0].id();
    assert_ne!(wire_id, id);
    for c in &ns {
        h.run(|r, ctx| r.on_stored(ctx, *c, wire_id, StoreStatus::Held));
    }
    let sent: Vec<Event> = events(&h.take());
    assert!(
        matches!(
            sent.as_slice(),
            [Event::MessageSent { id: user, wire_id: wire, relays: 2, .. }]
                if *user == id && *wire == wire_id
        ),
        "{sent:?}"
    );
}

#[test]
fn a_body_not_sealed_to_us_is_refused_not_shown() {
    let mut h = H::new(Config::default());
    let me = h.addr();
    let from = contact(near(me, 0xee), 200);
    // Signed by its sender, but the body is plaintext.
    let plain = Envelope::sign(&author(), me, NOW_MS, 3600, 4, Bytes::from_static(b"hi"));
    assert_eq!(h.store(from, &plain, 0), StoreStatus::Refused);
    assert_eq!(counted(&h.take(), DropReason::Undecryptable), 1);
    // Sealed to someone else and moved into an envelope for us.
    let other = envelope(Identity::from_seed([2; 32]).address(), "not yours");
    let moved = Envelope::sign(&author(), me, NOW_MS, 3600, 4, other.body().clone());
    assert_eq!(h.store(from, &moved, 0), StoreStatus::Refused);
    assert_eq!(h.run(|r, ctx| r.release_messages(ctx.identity, 10)), 0);
}

/// Apply `ops` to `store` and restore a fresh relay from it.
fn restored(store: &mut crate::store::MemoryStore, ops: Vec<Op>, id: u64) -> H {
    crate::store::Store::apply(store, &crate::wire::records::WriteBatch { id, ops }).unwrap();
    let snapshot = crate::store::Store::load(store).unwrap();
    let mut again = H::new(Config::default());
    again.relay.restore(again.now, again.wall_ms, &snapshot);
    again.run(|_, _| ());
    again
}

#[test]
fn a_cancelled_message_is_forgotten_durably_and_reports_its_relays() {
    let mut h = H::new(Config::default());
    let recipient = Identity::from_seed([2; 32]);
    let to = recipient.address();
    let ns = h.neighbours(to, 8);
    let id = h
        .run(|r, ctx| r.send(ctx, to, Bytes::from_static(b"oops")))
        .expect("send");
    h.run(|r, ctx| r.lookup_done(ctx, to, &ns));
    for c in &ns[..3] {
        h.run(|r, ctx| r.on_stored(ctx, *c, id, StoreStatus::Held));
    }
    h.take();
    let mut store = crate::store::MemoryStore::default();
    let ops = h.writes();
    crate::store::Store::apply(&mut store, &crate::wire::records::WriteBatch { id: 1, ops })
        .unwrap();

    // The report shows it, ours, with the three holders.
    let rows = h.relay.held_report(h.now, h.wall_ms);
    assert_eq!(rows.len(), 1);
    assert!(rows[0].own && rows[0].id == id && rows[0].recipient == to);
    assert_eq!(rows[0].holders.len(), 3);
    assert_eq!(rows[0].budget_left, Config::default().relay_budget - 8);

    let report = h.run(|r, _| r.cancel(id)).expect("cancel");
    assert_eq!(
        (report.to, report.was_queued, report.relays_holding),
        (to, false, 3)
    );
    assert_eq!(report.sent_unconfirmed, 5);
    let actions = h.take();
    assert!(actions.contains(&Action::Cancel(RouteKey { id, ack: false })));
    assert!(!h.relay.holds(&id) && h.relay.outbox_state(&id).is_none());
    assert!(h.relay.held_report(h.now, h.wall_ms).is_empty());
    assert_eq!(h.relay.cancel(id), Err(CancelError::Unknown(id)));
    // The last answers and a timer change nothing and say nothing.
    h.run(|r, ctx| r.on_stored(ctx, ns[4], id, StoreStatus::Held));
    h.run(|r, ctx| r.on_timer(ctx, RouteKey { id, ack: false }));
    let actions = h.take();
    assert!(events(&actions).is_empty() && stores(&actions).is_empty());
    // Durable: a restart does not bring it back.
    let ops = h.writes();
    assert!(ops
        .iter()
        .any(|o| matches!(o, Op::Delete(Table::Outbox, _))));
    assert!(ops.iter().any(|o| matches!(o, Op::Delete(Table::Held, _))));
    let again = restored(&mut store, ops, 2);
    assert!(!again.relay.holds(&id));
    assert_eq!(again.relay.outbox_state(&id), None);
    assert_eq!(again.relay.outbox_pending(), 0);
}

#[test]
fn cancel_refuses_delivered_and_others_messages_and_drops_drafts() {
    let mut h = H::new(Config::default());
    let recipient = Identity::from_seed([2; 32]);
    let to = recipient.address();
    let ns = h.neighbours(to, 8);
    let id = h
        .run(|r, ctx| r.send(ctx, to, Bytes::from_static(b"hi")))
        .expect("send");
    h.run(|r, ctx| r.lookup_done(ctx, to, &ns));
    let e = h.relay.outbox.get(&id).map(|o| o.envelope.clone()).unwrap();
    assert!(h.run(|r, ctx| r.on_ack(ctx, Some(ns[0]), Ack::sign(&recipient, &e), 0)));
    assert_eq!(h.relay.cancel(id), Err(CancelError::AlreadyDelivered(id)));

    // Someone else's message we hold.
    let other = envelope(far_from(h.addr()), "theirs");
    let from = contact(near(h.addr(), 9), 9);
    assert_eq!(h.store(from, &other, 2), StoreStatus::Held);
    assert_eq!(
        h.relay.cancel(other.id()),
        Err(CancelError::NotOurs(other.id()))
    );

    // A draft waiting for a key: dropped, and deleted on disk.
    let stranger = Identity::from_seed([99; 32]).address();
    let draft = h
        .run(|r, ctx| r.send(ctx, stranger, Bytes::from_static(b"later")))
        .expect("send");
    h.writes();
    let report = h.relay.cancel(draft).expect("cancel draft");
    assert!(report.was_queued && report.to == stranger);
    assert_eq!(h.relay.drafts_count(), 0);
    assert!(h
        .writes()
        .iter()
        .any(|o| matches!(o, Op::Delete(Table::Drafts, _))));
    // Its key arriving later seals nothing.
    let key = Identity::from_seed([99; 32]).public_key();
    h.take();
    h.run(|r, ctx| r.learn_key(ctx, key));
    assert!(stores(&h.take()).is_empty());
}

#[test]
fn the_reports_list_held_copies_by_expiry_and_tombstones_by_keep_time() {
    let mut h = H::new(Config::default());
    let recipient = far_identity(h.addr());
    h.neighbours(recipient.address(), 3);
    let e = envelope(recipient.address(), "hello");
    let from = contact(near(h.addr(), 9), 9);
    assert_eq!(h.store(from, &e, 3), StoreStatus::Held);
    let later = envelope_at(e.recipient(), NOW_MS + 1000, "later");
    h.advance(Duration::from_secs(5));
    assert_eq!(h.store(from, &later, 2), StoreStatus::Held);
    let rows = h.relay.held_report(h.now, h.wall_ms);
    assert_eq!(
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![e.id(), later.id()]
    );
    assert_eq!(rows[0].age, Duration::from_secs(5));
    assert_eq!(rows[1].age, Duration::ZERO);
    assert!(!rows[0].own && rows[0].sender == Some(author().address()));
    assert_eq!(rows[0].expires_at_ms, e.expires_at_ms());
    assert!(rows[0].next_attempt.is_some());
    // An ack turns the first into a tombstone.
    assert!(h.run(|r, ctx| r.on_ack(ctx, Some(from), Ack::sign(&recipient, &e), 0)));
    let rows = h.relay.held_report(h.now, h.wall_ms);
    assert_eq!(rows.len(), 1);
    let t = h.relay.tombstones_report(h.wall_ms);
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].id, t[0].sender, t[0].recipient, t[0].routed),
        (e.id(), author().address(), e.recipient(), false)
    );
    assert!(t[0].keep_until_ms > e.expires_at_ms());
    assert!(h.relay.tombstones_report(t[0].keep_until_ms).is_empty());
}

#[test]
fn sent_with_no_contact_at_all_says_so() {
    let mut h = H::new(Config::default());
    let to = Identity::from_seed([2; 32]).address();
    let id = h
        .run(|r, ctx| r.send(ctx, to, Bytes::from_static(b"alone")))
        .expect("send");
    h.run(|r, ctx| r.lookup_done(ctx, to, &[]));
    assert_eq!(
        events(&h.take()),
        vec![Event::MessageSent {
            id,
            wire_id: id,
            to,
            relays: 0,
            direct: false,
            no_contacts: true,
            expires_at_ms: NOW_MS + Config::default().default_ttl.as_millis() as u64,
        }]
    );
    // With contacts that do not answer: offered, nobody has it yet.
    let ns = h.neighbours(to, 2);
    let id = h
        .run(|r, ctx| r.send(ctx, to, Bytes::from_static(b"later")))
        .expect("send");
    h.run(|r, ctx| r.lookup_done(ctx, to, &ns));
    for c in &ns {
        h.run(|r, _| r.store_failed(&c.id, id, false));
    }
    let ev = events(&h.take());
    assert!(
        matches!(
            ev.as_slice(),
            [Event::MessageSent {
                relays: 0,
                no_contacts: false,
                ..
            }]
        ),
        "{ev:?}"
    );
}

#[test]
fn relays_offer_ids_before_bodies_and_learn_holders_from_the_answers() {
    let (mut h, e, ns) = holding(Config::default(), 3);
    let id = e.id();
    // The instant fan-out of a relay: ids only, to each of the three.
    let actions = h.take();
    assert!(stores(&actions).is_empty(), "no body before an answer");
    let offered: Vec<Address> = offers(&actions).into_iter().map(|o| o.0).collect();
    assert_eq!(offered, ns.iter().map(|c| c.id).collect::<Vec<_>>());
    assert!(offers(&actions).iter().all(|o| o.1 == vec![id]));
    // One wants it: its Store follows, with the hops a Store would carry.
    h.run(|r, ctx| r.on_offered(ctx, ns[0], id, true, false));
    assert_eq!(stores(&h.take()), vec![(ns[0].id, 2, false)]);
    // One holds it already: a holder learned, no Store.
    h.run(|r, ctx| r.on_offered(ctx, ns[1], id, false, true));
    assert!(stores(&h.take()).is_empty());
    assert!(h.relay.held.get(&id).unwrap().route.is_holder(&ns[1].id));
    // One leaves the offer unanswered: the next attempt sends the Store
    // itself (it may be a node that does not know Offer).
    h.run(|r, _| r.store_failed(&ns[2].id, id, false));
    let key = RouteKey { id, ack: false };
    h.run(|r, ctx| r.on_timer(ctx, key));
    let actions = h.take();
    assert_eq!(stores(&actions), vec![(ns[2].id, 2, false)]);
    assert!(offers(&actions).is_empty(), "the others were answered");
    // A holder that appears again is offered nothing.
    h.run(|r, ctx| r.contact_appeared(ctx, ns[1], false));
    assert!(h.take().is_empty());
}

#[test]
fn the_sender_and_the_recipient_get_bodies_without_an_offer() {
    let mut h = H::new(Config::default());
    let to = far_identity(h.addr()).address();
    let ns = h.neighbours(to, 3);
    let id = h
        .run(|r, ctx| r.send(ctx, to, Bytes::from_static(b"first")))
        .unwrap();
    h.run(|r, ctx| r.lookup_done(ctx, to, &ns));
    let actions = h.take();
    assert_eq!(stores(&actions).len(), 3, "first round: bodies at once");
    assert!(offers(&actions).is_empty());
    let recipient = contact(to, 61);
    h.peers.contacts.push(recipient);
    h.run(|r, ctx| r.contact_appeared(ctx, recipient, false));
    let actions = h.take();
    assert_eq!(stores(&actions), vec![(to, 0, true)]);
    assert!(offers(&actions).is_empty());
    assert!(h.relay.holds(&id) || h.relay.outbox_state(&id).is_some());
}

#[test]
fn an_offer_is_answered_with_what_is_wanted_held_or_acknowledged() {
    let mut h = H::new(Config::default());
    let recipient = Identity::from_seed([2; 32]);
    let to = recipient.address();
    h.neighbours(to, 2);
    let bearer = contact(near(h.addr(), 0xee), 200);
    let (held, acked, fresh) = (
        envelope(to, "held"),
        envelope(to, "acked"),
        envelope(to, "fresh"),
    );
    assert_eq!(h.store(bearer, &held, 3), StoreStatus::Held);
    assert_eq!(h.store(bearer, &acked, 3), StoreStatus::Held);
    let ack = Ack::sign(&recipient, &acked);
    assert!(h.run(|r, ctx| r.on_ack(ctx, Some(bearer), ack, 0)));
    h.take();
    let offerer = contact(near(h.addr(), 0xaa), 150);
    let ids = [held.id(), acked.id(), fresh.id()];
    let (want, has) = h.run(|r, ctx| r.on_offer(ctx, offerer, &ids));
    assert_eq!(want, vec![fresh.id()]);
    assert_eq!(has, vec![held.id()]);
    assert_eq!(h.relay.duplicate_offers(), 1);
    // The offerer of a held copy is a holder now; the acknowledged one's
    // offerer gets the ack, purge only.
    let route = &h.relay.held.get(&held.id()).unwrap().route;
    assert!(route.is_holder(&offerer.id));
    assert_eq!(acks(&h.take()), vec![(offerer.id, 0)]);
    // An unverified offerer learns nothing it could not claim itself.
    h.peers.unverified.insert(offerer.id);
    let (_, has) = h.run(|r, ctx| r.on_offer(ctx, offerer, &ids));
    assert_eq!(has, vec![held.id()]);
    assert!(acks(&h.take()).is_empty());
}

#[test]
fn a_relay_drops_its_copy_once_enough_closer_holders_are_known() {
    let mut h = H::new(Config::default());
    let to = far_from(h.addr());
    // Each on a network of its own.
    let ns: Vec<Contact> = (1..=8u8)
        .map(|i| Contact {
            id: near(to, i),
            addr: SocketAddr::from(([10, 2, i, 1], 4000)),
        })
        .collect();
    h.peers.contacts.extend(ns.iter().copied());
    let e = envelope(to, "hello");
    let id = e.id();
    // The bearer is farther from the recipient than we are.
    let mut outer = h.addr();
    outer.0[0] ^= 0x40;
    assert_eq!(h.store(contact(outer, 200), &e, 3), StoreStatus::Held);
    h.take();
    for (i, c) in ns.iter().enumerate() {
        assert!(h.relay.holds(&id), "{i} closer holders known");
        h.run(|r, ctx| r.on_stored(ctx, *c, id, StoreStatus::Held));
    }
    assert!(!h.relay.holds(&id), "8 closer holders: ours is surplus");
    assert_eq!(h.relay.surplus_drops(), 1);
    assert!(h
        .take()
        .contains(&Action::Cancel(RouteKey { id, ack: false })));
    // Not taken back when offered again.
    let (want, held) = h.run(|r, ctx| r.on_offer(ctx, ns[0], &[id]));
    assert!(want.is_empty() && held.is_empty());
}

#[test]
fn closer_holders_of_one_network_count_once_for_the_surplus_rule() {
    let mut h = H::new(Config::default());
    let to = far_from(h.addr());
    // Ten identities closer to the recipient, all in 10.1.0.0/24, each
    // claiming a copy by offering it (no body needed).
    let ns = h.neighbours(to, 10);
    let e = envelope(to, "hello");
    let id = e.id();
    let mut outer = h.addr();
    outer.0[0] ^= 0x40;
    assert_eq!(h.store(contact(outer, 200), &e, 3), StoreStatus::Held);
    for c in &ns {
        let (_, held) = h.run(|r, ctx| r.on_offer(ctx, *c, &[id]));
        assert_eq!(held, vec![id]);
    }
    assert!(h.relay.holds(&id), "one network is one holder");
    assert_eq!(h.relay.surplus_drops(), 0);
    // Seven more networks make eight.
    for i in 1..=7u8 {
        let c = Contact {
            id: near(to, 20 + i),
            addr: SocketAddr::from(([10, 3, i, 1], 4000)),
        };
        h.run(|r, ctx| r.on_offer(ctx, c, &[id]));
    }
    assert!(!h.relay.holds(&id));
    assert_eq!(h.relay.surplus_drops(), 1);
}

#[test]
fn a_sender_keeps_its_own_copy_however_many_hold_it() {
    let mut h = H::new(Config::default());
    let to = far_identity(h.addr()).address();
    let ns = h.neighbours(to, 8);
    let id = h
        .run(|r, ctx| r.send(ctx, to, Bytes::from_static(b"mine")))
        .unwrap();
    h.run(|r, ctx| r.lookup_done(ctx, to, &ns));
    for c in &ns {
        h.run(|r, ctx| r.on_stored(ctx, *c, id, StoreStatus::Held));
    }
    assert!(h.relay.holds(&id));
    assert_eq!(h.relay.surplus_drops(), 0);
}

#[test]
fn a_short_lookup_answer_places_no_copy_past_it_and_the_next_attempt_looks_again() {
    let mut h = H::new(Config::default());
    let to = far_identity(h.addr()).address();
    // The table knows 8 contacts near the recipient, and the lookup found
    // only the 3 closest of them alive, nothing farther.
    let mut table: Vec<Contact> = h
        .neighbours(to, 9)
        .into_iter()
        .filter(|c| c.id != to)
        .take(8)
        .collect();
    table.sort_by_key(|c| c.id.distance(&to));
    let id = h
        .run(|r, ctx| r.send(ctx, to, Bytes::from_static(b"hi")))
        .expect("send");
    h.take();
    let found = [table[0], table[1], table[2]];
    h.run(|r, ctx| r.lookup_done(ctx, to, &found));
    let mut sent: Vec<Address> = stores(&h.take()).iter().map(|s| s.0).collect();
    sent.sort_by_key(|a| a.distance(&to));
    assert_eq!(sent, found.iter().map(|c| c.id).collect::<Vec<_>>());
    // Fewer than k placed: the bound is still open, so the next attempt
    // asks the network again instead of scattering copies from the table.
    h.advance(Duration::from_secs(60));
    h.run(|r, ctx| r.on_timer(ctx, RouteKey { id, ack: false }));
    let actions = h.take();
    assert!(stores(&actions).is_empty() && offers(&actions).is_empty());
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Lookup(t) if *t == to)));
    // The table alone (no answer at all) is still used: nothing better is known.
    h.run(|r, ctx| r.lookup_done(ctx, to, &[]));
    let again: Vec<Address> = stores(&h.take()).iter().map(|s| s.0).collect();
    assert!(!again.is_empty(), "from the table");
    assert!(
        again.iter().all(|a| !found.iter().any(|c| c.id == *a)),
        "not twice"
    );
}

#[test]
fn an_unplaced_message_of_ours_goes_to_no_appearing_contact_but_its_recipient() {
    let mut h = H::new(Config::default());
    let to = far_identity(h.addr()).address();
    let id = h
        .run(|r, ctx| r.send(ctx, to, Bytes::from_static(b"hi")))
        .expect("send");
    // Our table was empty: the lookup found nobody, nothing was placed.
    h.run(|r, ctx| r.lookup_done(ctx, to, &[]));
    h.take();
    // Contacts appear as our table fills (a join after a restart): each
    // would rank among our k closest, but none gets a copy.
    for i in 1..=5u8 {
        let c = contact(near(to, 0x40 + i), 70 + i);
        h.peers.contacts.push(c);
        h.run(|r, ctx| r.contact_appeared(ctx, c, false));
    }
    let actions = h.take_accepting();
    assert!(stores(&actions).is_empty(), "{:?}", stores(&actions));
    // The recipient itself still gets it at once.
    let recipient = contact(to, 90);
    h.peers.contacts.push(recipient);
    h.run(|r, ctx| r.contact_appeared(ctx, recipient, false));
    assert_eq!(stores(&h.take_accepting()), vec![(to, 0, true)]);
    assert!(h.relay.holds(&id));
}
