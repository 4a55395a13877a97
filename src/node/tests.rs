//! The node as a coordinator: joining, proofs, lookups, and durability as
//! an output (replies wait for their write batch), on a fixed clock.

use std::time::UNIX_EPOCH;

use super::*;
use crate::message::{Envelope, IdentityRecord};
use crate::store::{self, MemoryStore, Store, StoreError};
use crate::wire::StoreStatus;

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(DEFAULT_EPOCH_MS)
}

fn node(seed: u8, now: Instant) -> Node {
    Node::new(
        Config::default(),
        Identity::from_seed([seed; 32]),
        [seed; 32],
        now,
    )
    .unwrap()
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, n, 0, 1], 4000))
}

/// Commit every batch to a throwaway store, as an instant disk would.
fn commit(n: &mut Node) {
    store::commit(n, &mut MemoryStore::default()).unwrap();
}

/// Deliver everything between two nodes until both are quiet.
fn pump(a: &mut Node, a_addr: SocketAddr, b: &mut Node, b_addr: SocketAddr, now: Instant) {
    for _ in 0..100 {
        let mut moved = false;
        commit(a);
        commit(b);
        while let Some(t) = a.poll_transmit() {
            if t.to == b_addr {
                b.handle_datagram(now, wall(), a_addr, &t.payload);
                moved = true;
            }
        }
        commit(b);
        while let Some(t) = b.poll_transmit() {
            if t.to == a_addr {
                a.handle_datagram(now, wall(), b_addr, &t.payload);
                moved = true;
            }
        }
        if !moved {
            return;
        }
    }
    panic!("nodes never went quiet");
}

/// A message from `author` to node `seed`, sealed to it.
fn sealed(author: &Identity, seed: u8, created: u64, text: &str) -> Envelope {
    let to = Identity::from_seed([seed; 32]).public_key();
    let mut rng = StdRng::from_seed([9; 32]);
    crate::crypto::sealed_envelope(&mut rng, author, &to, created, 3600, 4, text.as_bytes())
        .unwrap()
}

fn store_request(from: &Identity, txid: u64, e: &Envelope) -> Bytes {
    wire::encode(&Packet {
        sender: from.address(),
        txid,
        challenge: None,
        proof: None,
        body: Body::Store {
            envelope: Box::new(e.clone()),
            hops_left: 2,
        },
    })
}

fn stored_reply(n: &mut Node) -> Option<StoreStatus> {
    while let Some(t) = n.poll_transmit() {
        if let Ok(Packet {
            body: Body::Stored { status, .. },
            ..
        }) = wire::decode(&t.payload)
        {
            return Some(status);
        }
    }
    None
}

#[test]
fn bootstrap_verifies_and_joins_both_ways() {
    let now = Instant::now();
    let mut a = node(1, now);
    let mut b = node(2, now);
    b.bootstrap(now, wall(), vec![addr(1)]);
    pump(&mut b, addr(2), &mut a, addr(1), now);
    assert!(b.table().contains(&a.address(), &addr(1)));
    assert!(a.table().contains(&b.address(), &addr(2)));
    assert_eq!(b.poll_event(), Some(Event::Joined { contacts: 1 }));
}

#[test]
fn silent_bootstrap_reports_failure_and_retries() {
    let now = Instant::now();
    let mut b = node(2, now);
    b.bootstrap(now, wall(), vec![addr(1)]);
    assert_eq!(b.poll_transmit().map(|t| t.to), Some(addr(1)));
    let t1 = b.poll_timeout().unwrap();
    b.handle_timeout(t1, wall());
    assert_eq!(b.poll_transmit().map(|t| t.to), Some(addr(1)));
    let t2 = b.poll_timeout().unwrap();
    b.handle_timeout(t2, wall());
    match b.poll_event() {
        Some(Event::BootstrapFailed {
            tries, retry_in, ..
        }) => {
            assert_eq!(tries, 2);
            assert_eq!(retry_in, Config::default().bootstrap_retry);
        }
        other => panic!("unexpected {other:?}"),
    }
    let retry = b.poll_timeout().unwrap();
    assert!(retry >= t2 + Config::default().bootstrap_retry - Duration::from_secs(1));
    b.handle_timeout(t2 + Config::default().bootstrap_retry, wall());
    assert_eq!(b.poll_transmit().map(|t| t.to), Some(addr(1)));
}

#[test]
fn a_forged_proof_keeps_a_contact_out() {
    let now = Instant::now();
    let mut a = node(1, now);
    let mut b = node(2, now);
    let evil = Identity::from_seed([9; 32]);
    b.bootstrap(now, wall(), vec![addr(1)]);
    let ping = b.poll_transmit().unwrap();
    let req = wire::decode(&ping.payload).unwrap();
    // Answer with a's address but the wrong key.
    let forged = wire::encode(&Packet {
        sender: a.address(),
        txid: req.txid,
        challenge: None,
        proof: Some(Proof {
            key: evil.public_key(),
            signature: evil.sign(&proof_message(&req.challenge.unwrap())),
        }),
        body: Body::Pong { observed: None },
    });
    b.handle_datagram(now, wall(), addr(1), &forged);
    assert!(b.table().is_empty());
    assert_eq!(b.stats().dropped(DropReason::BadSignature), 1);
    // The genuine answer still counts.
    a.handle_datagram(now, wall(), addr(2), &ping.payload);
    let pong = a.poll_transmit().unwrap();
    b.handle_datagram(now, wall(), addr(1), &pong.payload);
    assert!(b.table().contains(&a.address(), &addr(1)));
}

#[test]
fn lookup_with_empty_table_finishes_at_once() {
    let now = Instant::now();
    let mut a = node(1, now);
    let id = a.lookup(now, wall(), Address([5; 20])).unwrap();
    match a.poll_event() {
        Some(Event::LookupDone { id: got, result }) => {
            assert_eq!(got, id);
            assert!(result.closest.is_empty());
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_stored_reply_waits_until_its_batch_is_durable() {
    let now = Instant::now();
    let mut relay = node(1, now);
    let author = Identity::from_seed([7; 32]);
    let e = Envelope::sign(
        &author,
        Address([0x42; 20]),
        DEFAULT_EPOCH_MS,
        3600,
        4,
        Bytes::from_static(b"keep me"),
    );
    relay.handle_datagram(now, wall(), addr(7), &store_request(&author, 1, &e));
    assert_eq!(stored_reply(&mut relay), None, "not confirmed before saved");
    // A duplicate in the same receive batch waits for the same batch.
    relay.handle_datagram(now, wall(), addr(7), &store_request(&author, 2, &e));
    assert_eq!(stored_reply(&mut relay), None);
    // A request that changes nothing is not held up... once nothing is
    // pending; while a batch is open it waits too.
    let batch = relay.poll_write().expect("a batch");
    assert!(batch
        .ops
        .iter()
        .any(|o| matches!(o, Op::Put(Table::Held, k, _) if *k == e.id().0.to_vec())));
    assert_eq!(stored_reply(&mut relay), None);
    relay.handle_written(batch.id);
    assert_eq!(stored_reply(&mut relay), Some(StoreStatus::Held));
    assert_eq!(stored_reply(&mut relay), Some(StoreStatus::Held));
    assert!(relay.poll_write().is_none());
    // Now an unchanged state answers at once.
    relay.handle_datagram(now, wall(), addr(7), &store_request(&author, 3, &e));
    assert_eq!(stored_reply(&mut relay), Some(StoreStatus::Held));
}

/// A store that fails while `failing` is set.
#[derive(Default)]
struct Flaky {
    inner: MemoryStore,
    failing: bool,
}

impl Store for Flaky {
    fn apply(&mut self, batch: &WriteBatch) -> Result<(), StoreError> {
        if self.failing {
            return Err(StoreError::Db("disk full".into()));
        }
        self.inner.apply(batch)
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }
}

#[test]
fn nothing_is_confirmed_while_the_store_fails_and_all_of_it_once_it_works() {
    let now = Instant::now();
    let mut me = node(1, now);
    let author = Identity::from_seed([7; 32]);
    let e = sealed(&author, 1, DEFAULT_EPOCH_MS, "for me");
    let mut disk = Flaky {
        failing: true,
        ..Flaky::default()
    };
    me.handle_datagram(now, wall(), addr(7), &store_request(&author, 1, &e));
    assert!(store::commit(&mut me, &mut disk).is_err());
    assert_eq!(me.stats().dropped(DropReason::StoreError), 1);
    assert_eq!(stored_reply(&mut me), None, "no ack for an unsaved message");
    assert_eq!(me.poll_event(), None, "not shown either");
    // The sender retransmits; still failing.
    me.handle_datagram(now, wall(), addr(7), &store_request(&author, 1, &e));
    assert!(store::commit(&mut me, &mut disk).is_err());
    assert_eq!(stored_reply(&mut me), None);
    disk.failing = false;
    assert!(store::commit(&mut me, &mut disk).unwrap() >= 1);
    assert!(matches!(
        stored_reply(&mut me),
        Some(StoreStatus::Delivered(_))
    ));
    assert!(matches!(
        me.poll_event(),
        Some(Event::MessageReceived { .. })
    ));
    // What was written is the message itself.
    let snap = disk.load().unwrap();
    let rows = &snap[&Table::Inbox];
    assert_eq!(rows.len(), 1);
    let r = records::InboxRecord::decode(&rows[0].0, &rows[0].1).unwrap();
    assert_eq!(r.envelope.as_ref(), Some(&e));
}

#[test]
fn messages_wait_for_the_front_end_and_unshown_ones_come_back_after_a_crash() {
    let now = Instant::now();
    let mut me = node(1, now);
    me.set_message_credit(1);
    let author = Identity::from_seed([7; 32]);
    let mut disk = MemoryStore::default();
    for (i, text) in ["one", "two", "three"].into_iter().enumerate() {
        let e = sealed(&author, 1, DEFAULT_EPOCH_MS + i as u64, text);
        me.handle_datagram(now, wall(), addr(7), &store_request(&author, i as u64, &e));
        store::commit(&mut me, &mut disk).unwrap();
    }
    let shown: Vec<Event> = std::iter::from_fn(|| me.poll_event()).collect();
    assert_eq!(shown.len(), 1, "credit for one");
    // The front end records the one it shows.
    if let [Event::MessageReceived { id, .. }] = &shown[..] {
        store::shown::ShownLog::showing(&mut disk, &[*id]).unwrap();
    }
    // Crash: the other two were acknowledged but never shown.
    drop(me);
    let mut again = node(1, now);
    again.restore(now, wall(), &disk.load().unwrap());
    store::commit(&mut again, &mut disk).unwrap();
    let bodies: Vec<Bytes> = std::iter::from_fn(|| again.poll_event())
        .filter_map(|e| match e {
            Event::MessageReceived { body, .. } => Some(body),
            _ => None,
        })
        .collect();
    assert_eq!(bodies, vec![Bytes::from("two"), Bytes::from("three")]);
}

#[test]
fn a_suspend_does_not_make_fresh_messages_look_future_dated() {
    let now = Instant::now();
    let mut relay = node(1, now);
    let author = Identity::from_seed([7; 32]);
    // The laptop slept for six hours: the monotonic clock did not move,
    // the wall clock did, and so did the sender's.
    let later = wall() + Duration::from_secs(6 * 3600);
    let e = Envelope::sign(
        &author,
        Address([0x42; 20]),
        unix_ms(later),
        3600,
        4,
        Bytes::from_static(b"fresh"),
    );
    relay.handle_datagram(now, later, addr(7), &store_request(&author, 1, &e));
    commit(&mut relay);
    assert_eq!(stored_reply(&mut relay), Some(StoreStatus::Held));
    assert_eq!(relay.stats().dropped(DropReason::FutureDated), 0);
}

#[test]
fn requests_past_the_in_flight_cap_wait_instead_of_failing() {
    let now = Instant::now();
    let config = Config {
        max_inflight_rpcs: std::num::NonZeroUsize::new(4).unwrap(),
        ..Config::default()
    };
    let mut a = Node::new(config, Identity::from_seed([1; 32]), [1; 32], now).unwrap();
    let addrs: Vec<SocketAddr> = (10..20).map(addr).collect();
    a.bootstrap(now, wall(), addrs);
    assert_eq!(a.requests(), (4, 6));
    assert_eq!(a.stats().dropped(DropReason::RpcLimit), 0);
    assert_eq!(std::iter::from_fn(|| a.poll_transmit()).count(), 4);
    // As the first ones fail, the rest go out.
    let t = a.poll_timeout().unwrap();
    a.handle_timeout(t, wall());
    a.handle_timeout(t + Duration::from_secs(1), wall());
    assert_eq!(a.requests(), (4, 2));
}

/// The answer `n` sent (challenges it sent along are dropped).
fn answer(n: &mut Node) -> Packet {
    std::iter::from_fn(|| n.poll_transmit())
        .filter_map(|t| wire::decode(&t.payload).ok())
        .find(|p| !p.body.is_request())
        .expect("an answer")
}

/// A request as a node sends it (padded, so that a node that has not
/// verified us may answer it in full).
fn request_from(from: &Identity, txid: u64, body: Body) -> Bytes {
    let packet = Packet {
        sender: from.address(),
        txid,
        challenge: None,
        proof: None,
        body,
    };
    wire::encode_padded(&packet, wire::PADDED_FIND_RECORD)
}

#[test]
fn a_record_is_kept_only_with_the_token_given_to_its_endpoint() {
    let now = Instant::now();
    let mut a = node(1, now);
    let x = Identity::from_seed([9; 32]);
    let record = IdentityRecord::sign(&x, 5, DEFAULT_EPOCH_MS + 3_600_000);
    // Ask first: the answer carries a token for this endpoint.
    let find = request_from(
        &x,
        1,
        Body::FindRecord {
            target: x.address(),
        },
    );
    a.handle_datagram(now, wall(), addr(9), &find);
    let Body::Record {
        record: None,
        token: Some(token),
        ..
    } = answer(&mut a).body
    else {
        panic!("a record answer with a token and no record");
    };
    // The token from another endpoint is refused.
    let put = |txid, token| {
        request_from(
            &x,
            txid,
            Body::PutRecord {
                record: Box::new(record),
                token,
            },
        )
    };
    a.handle_datagram(now, wall(), addr(10), &put(2, token));
    assert_eq!(answer(&mut a).body, Body::RecordStored { stored: false });
    assert_eq!(a.stats().dropped(DropReason::WrongToken), 1);
    assert_eq!(a.record_for(&x.address()), None);
    // From its own endpoint it is kept, and handed to whoever asks.
    a.handle_datagram(now, wall(), addr(9), &put(3, token));
    assert_eq!(answer(&mut a).body, Body::RecordStored { stored: true });
    assert_eq!(a.record_for(&x.address()), Some(record));
    let asker = Identity::from_seed([11; 32]);
    let find = request_from(
        &asker,
        4,
        Body::FindRecord {
            target: x.address(),
        },
    );
    a.handle_datagram(now, wall(), addr(11), &find);
    assert!(matches!(
        answer(&mut a).body,
        Body::Record { record: Some(r), .. } if *r == record
    ));
    // A record signed by someone else for x's key is refused.
    let mut forged = IdentityRecord::sign(&asker, 6, DEFAULT_EPOCH_MS + 3_600_000);
    forged.key = x.public_key();
    let find = request_from(
        &asker,
        5,
        Body::FindRecord {
            target: x.address(),
        },
    );
    a.handle_datagram(now, wall(), addr(11), &find);
    let Body::Record {
        token: Some(t11), ..
    } = answer(&mut a).body
    else {
        panic!("a token");
    };
    let put = request_from(
        &asker,
        6,
        Body::PutRecord {
            record: Box::new(forged),
            token: t11,
        },
    );
    a.handle_datagram(now, wall(), addr(11), &put);
    assert_eq!(answer(&mut a).body, Body::RecordStored { stored: false });
    assert_eq!(a.stats().dropped(DropReason::BadRecord), 1);
    assert_eq!(
        a.record_for(&x.address()),
        Some(record),
        "still the real one"
    );
}

#[test]
fn joining_publishes_the_record_at_the_bootstrap_node() {
    let now = Instant::now();
    let mut a = node(1, now);
    let mut b = node(2, now);
    b.bootstrap(now, wall(), vec![addr(1)]);
    pump(&mut b, addr(2), &mut a, addr(1), now);
    let r = a.record_for(&b.address()).expect("b's record at a");
    assert_eq!(r.key, b.public_key());
    assert!(r.verify(&crate::signing::ED25519));
    // A key seen in passing (b's proof, the record a keeps) is not kept:
    // a message to b waits as a draft until a key lookup finds the record.
    assert_eq!(
        a.send(now, wall(), b.address(), Bytes::from_static(b"x"))
            .map(|_| a.relay().drafts_count()),
        Ok(1)
    );
    pump(&mut a, addr(1), &mut b, addr(2), now);
    assert_eq!(
        a.relay().drafts_count(),
        0,
        "sealed once the record was found"
    );
}

#[test]
fn answered_requests_give_each_contact_a_round_trip_and_the_node_percentiles() {
    use crate::sim::{Sim, SimConfig};
    let mut sim = Sim::new(SimConfig {
        seed: 9,
        latency_min: Duration::from_millis(20),
        latency_max: Duration::from_millis(20),
        ..SimConfig::default()
    });
    sim.grow(
        12,
        &Config::default(),
        Duration::from_millis(100),
        Duration::from_secs(30),
    );
    let n = sim.node(5);
    let rows = n.peer_rows(sim.now());
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r.failures == 0 && r.bucket < 160));
    let timed: Vec<Duration> = rows.iter().filter_map(|r| r.rtt).collect();
    assert!(!timed.is_empty(), "{rows:?}");
    // 20 ms each way, plus the simulator's processing time.
    let (lo, hi) = (Duration::from_millis(40), Duration::from_millis(50));
    assert!(timed.iter().all(|r| *r >= lo && *r <= hi), "{timed:?}");
    let s = n.stats();
    assert!(s.rpc_answered() > 0);
    let p = s.rpc_latency_percentiles(&[50.0, 90.0, 99.0]);
    for q in p {
        let q = q.expect("answered requests");
        assert!(q >= lo && q <= hi.mul_f64(1.42), "{q:?}");
    }
}

#[test]
fn a_user_lookup_records_its_path_round_by_round() {
    use crate::lookup::StepOutcome;
    use crate::sim::{Sim, SimConfig};
    let mut sim = Sim::new(SimConfig {
        seed: 4,
        ..SimConfig::default()
    });
    sim.grow(
        40,
        &Config::default(),
        Duration::from_millis(100),
        Duration::from_secs(30),
    );
    sim.take_events();
    let target = sim.node(30).address();
    let id = sim.lookup(3, target).expect("lookup");
    sim.run_for(Duration::from_secs(10));
    let result = sim
        .events()
        .iter()
        .find_map(|(n, e)| match e {
            Event::LookupDone { id: got, result } if *n == 3 && *got == id => Some(result.clone()),
            _ => None,
        })
        .expect("lookup done");
    assert!(!result.path.is_empty());
    assert!(result.path.len() <= Config::default().lookup_path_max);
    assert_eq!(result.path[0].round, 1);
    assert!(result
        .path
        .iter()
        .any(|s| s.outcome == StepOutcome::Answered && s.rtt.is_some()));
    assert!(result.path.iter().all(|s| s.round <= result.rounds));
    assert_eq!(result.path.len() as u32, result.rpcs, "every request ended");
}

#[test]
fn a_message_after_the_catch_up_window_fell_due_is_shown_at_once() {
    let now = Instant::now();
    let mut a = node(1, now);
    let mut b = node(2, now);
    b.set_message_credit(10);
    b.bootstrap(now, wall(), vec![addr(1)]);
    // b joins through a and pulls from it; a holds nothing for b.
    pump(&mut b, addr(2), &mut a, addr(1), now);
    assert!(std::iter::from_fn(|| b.poll_event()).any(|e| matches!(e, Event::Joined { .. })));
    assert!(b.catching_up(), "the window waits for quiet");
    let author = Identity::from_seed([7; 32]);
    // Nothing arrives for longer than `catchup_quiet`, then a message (the
    // node's first input since, as on an idle network); later, one after
    // the 15-s cap. Each is shown as it arrives, with no catch-up batch.
    for (i, secs) in [3u64, 20].into_iter().enumerate() {
        let at = now + Duration::from_secs(secs);
        let e = sealed(&author, 2, DEFAULT_EPOCH_MS + secs * 1000, "later");
        b.handle_datagram(
            at,
            wall(),
            addr(7),
            &store_request(&author, 50 + i as u64, &e),
        );
        commit(&mut b);
        let events: Vec<Event> = std::iter::from_fn(|| b.poll_event()).collect();
        assert!(
            matches!(&events[..], [Event::MessageReceived { id, .. }] if *id == e.id()),
            "after {secs} s: {events:?}"
        );
        assert!(!b.catching_up());
    }
}

/// Deliver everything among `nodes` until all are quiet, one millisecond
/// per hop, except what `lost(from, to, packet)` drops. Returns the time.
fn exchange(
    nodes: &mut [(Node, SocketAddr)],
    mut now: Instant,
    lost: impl Fn(SocketAddr, SocketAddr, &Packet) -> bool,
) -> Instant {
    for _ in 0..200 {
        let mut wave = Vec::new();
        for (n, from) in nodes.iter_mut() {
            commit(n);
            while let Some(t) = n.poll_transmit() {
                wave.push((*from, t));
            }
        }
        if wave.is_empty() {
            return now;
        }
        now += Duration::from_millis(1);
        for (from, t) in wave {
            let packet = wire::decode(&t.payload);
            if packet.as_ref().is_ok_and(|p| lost(from, t.to, p)) {
                continue;
            }
            if let Some((n, _)) = nodes.iter_mut().find(|(_, a)| *a == t.to) {
                n.handle_datagram(now, wall(), from, &t.payload);
            }
        }
    }
    panic!("nodes never went quiet");
}

#[test]
fn a_publish_too_few_kept_is_repeated_at_every_next_tick() {
    let t0 = Instant::now();
    let mut nodes = vec![
        (node(1, t0), addr(1)),
        (node(2, t0), addr(2)),
        (node(3, t0), addr(3)),
    ];
    let b = nodes[1].0.address();
    // c joins through a, then b through a; b's records never reach c, so
    // fewer are kept than b's table holds contacts.
    nodes[2].0.bootstrap(t0, wall(), vec![addr(1)]);
    let now = exchange(&mut nodes, t0, |_, _, _| false);
    nodes[1].0.bootstrap(now, wall(), vec![addr(1)]);
    let lost = |from: SocketAddr, to: SocketAddr, p: &Packet| {
        from == addr(2) && to == addr(3) && matches!(p.body, Body::PutRecord { .. })
    };
    exchange(&mut nodes, now, lost);
    assert_eq!(nodes[1].0.table().len(), 2);
    // Ticks come every `refresh_check` (60 s) from b's start. The join
    // ended a few ms after t0, so the first tick is too early; from the
    // second on, each publish starts at a tick and ends a few ms after
    // it, and the next tick publishes again.
    let mut published = Vec::new();
    for tick in 1..=4u64 {
        let at = t0 + Duration::from_secs(60 * tick);
        nodes[1].0.handle_timeout(at, wall());
        commit(&mut nodes[1].0);
        let mut sent = Vec::new();
        while let Some(t) = nodes[1].0.poll_transmit() {
            sent.push(t);
        }
        let publishes = sent
            .iter()
            .filter(|t| {
                matches!(wire::decode(&t.payload),
                    Ok(Packet { body: Body::FindRecord { target, .. }, .. }) if target == b)
            })
            .count();
        if publishes > 0 {
            published.push(tick);
        }
        for t in sent {
            let packet = wire::decode(&t.payload);
            if packet.as_ref().is_ok_and(|p| lost(addr(2), t.to, p)) {
                continue;
            }
            if let Some((n, _)) = nodes.iter_mut().find(|(_, a)| *a == t.to) {
                n.handle_datagram(at + Duration::from_millis(1), wall(), addr(2), &t.payload);
            }
        }
        exchange(&mut nodes, at + Duration::from_millis(1), lost);
    }
    assert_eq!(published, vec![2, 3, 4]);
}
