//! Store-and-forward on the virtual network: delivery to a recipient that
//! comes online hours later, purge by ack, expiry, budget, forged acks and
//! duplicates.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use comm::message::{Ack, Envelope, MessageId};
use comm::node::Event;
use comm::sim::{Sim, SimConfig};
use comm::wire::{self, Body, Packet};
use comm::{Address, Config, Identity};

fn network(n: usize, seed: u64, config: &Config) -> Sim {
    let mut sim = Sim::new(SimConfig {
        seed,
        ..SimConfig::default()
    });
    sim.grow(
        n,
        config,
        Duration::from_millis(200),
        Duration::from_secs(60),
    );
    sim.take_events();
    sim
}

/// A node that exists (its address is known) but has never been online.
fn offline_node(sim: &mut Sim, config: &Config) -> usize {
    let r = sim.add_node(config.clone());
    sim.set_online(r, false);
    r
}

fn count_events(sim: &Sim, node: usize, pred: impl Fn(&Event) -> bool) -> usize {
    sim.events()
        .iter()
        .filter(|(n, e)| *n == node && pred(e))
        .count()
}

fn total_stores(sim: &Sim) -> u64 {
    (0..sim.len())
        .map(|i| sim.node(i).stats().stores_sent)
        .sum()
}

fn total_acks(sim: &Sim) -> u64 {
    (0..sim.len()).map(|i| sim.node(i).stats().acks_sent).sum()
}

#[test]
fn a_message_waits_12_hours_for_its_recipient_then_every_copy_is_purged() {
    let config = Config::default();
    let mut sim = network(500, 11, &config);
    let recipient = offline_node(&mut sim, &config);
    let sender = 17;
    let id = sim.send(sender, recipient, b"Hi there!").expect("send");

    // Twelve hours with the recipient away; count copies every 10 minutes.
    let mut peak = 0;
    for _ in 0..72 {
        sim.run_for(Duration::from_secs(600));
        peak = peak.max(sim.holders(&id).len());
    }
    let relays = sim.events().iter().find_map(|(n, e)| match e {
        Event::MessageSent {
            id: got, relays, ..
        } if *n == sender && *got == id => Some(*relays),
        _ => None,
    });
    assert!(relays.is_some_and(|r| r >= 4), "sent event: {relays:?}");
    assert!(sim.holders(&id).len() >= 4, "copies survive 12 hours");
    let stores_before = total_stores(&sim);

    // The recipient comes online and joins through a random node.
    sim.set_online(recipient, true);
    sim.bootstrap(recipient, &[123]);
    let delivered = sim.run_while(Duration::from_secs(600), |s| {
        count_events(
            s,
            sender,
            |e| matches!(e, Event::Delivered { id: got, .. } if *got == id),
        ) > 0
    });
    assert!(delivered, "sender saw the ack");
    // The recipient shows it once its catch-up window closes (the ack
    // does not wait for that: the message is stored first).
    let caught_up = sim.run_while(Duration::from_secs(30), |s| {
        !s.node(recipient).catching_up()
    });
    assert!(caught_up);
    let shown = count_events(
        &sim,
        recipient,
        |e| matches!(e, Event::MessageReceived { id: got, body, .. } if *got == id && body == &Bytes::from_static(b"Hi there!")),
    );
    assert_eq!(shown, 1, "shown exactly once");

    // Within one lookup plus a round trip, no online node holds a copy.
    let purge_start = sim.elapsed();
    let purged = sim.run_while(Duration::from_secs(10), |s| s.holders(&id).is_empty());
    let purge_time = sim.elapsed() - purge_start;
    assert!(purged, "still held by {:?}", sim.holders(&id));
    let transfers = total_stores(&sim);
    println!(
        "500 nodes, recipient offline 12 h: delivered; {} message transfers ({} before the recipient came back), {} ack transfers, peak {} copies, all copies gone {:?} after the sender's ack",
        transfers,
        stores_before,
        total_acks(&sim),
        peak,
        purge_time
    );
    // Flooding would cost at least one transfer per node (500); copies
    // gather at the k closest instead of spreading.
    assert!(transfers <= 100, "{transfers} transfers");
    assert!(peak <= 2 * config.k.get(), "peak {peak} copies");
}

#[test]
fn an_undeliverable_message_is_gone_after_its_ttl_and_within_budget() {
    let config = Config {
        default_ttl: Duration::from_secs(2 * 3600),
        ..Config::default()
    };
    let mut sim = network(120, 5, &config);
    let recipient = offline_node(&mut sim, &config);
    let sender = 3;
    let id = sim.send(sender, recipient, b"anyone?").expect("send");
    sim.run_for(Duration::from_secs(3600));
    assert!(!sim.holders(&id).is_empty(), "held while alive");
    // TTL plus one sweep interval.
    sim.run_for(Duration::from_secs(3600 + 120));
    assert!(
        sim.holders(&id).is_empty(),
        "held after TTL: {:?}",
        sim.holders(&id)
    );
    assert_eq!(
        count_events(
            &sim,
            sender,
            |e| matches!(e, Event::MessageExpired { id: got } if *got == id)
        ),
        1
    );
    for i in 0..sim.len() {
        let sent = sim.node(i).stats().stores_sent;
        assert!(
            sent <= u64::from(config.relay_budget),
            "node {i} sent {sent} stores, budget {}",
            config.relay_budget
        );
    }
}

fn store_packet(from: &Identity, envelope: &Envelope, hops_left: u32, txid: u64) -> Vec<u8> {
    wire::encode(&Packet {
        sender: from.address(),
        txid,
        challenge: None,
        proof: None,
        body: Body::Store {
            envelope: Box::new(envelope.clone()),
            hops_left,
        },
    })
    .to_vec()
}

fn ack_packet(from: Address, ack: Ack) -> Vec<u8> {
    wire::encode(&Packet {
        sender: from,
        txid: 77,
        challenge: None,
        proof: None,
        body: Body::Acknowledge {
            ack: Box::new(ack),
            hops_left: 2,
        },
    })
    .to_vec()
}

#[test]
fn forged_acks_purge_nothing() {
    let config = Config::default();
    let mut sim = network(100, 9, &config);
    let recipient = offline_node(&mut sim, &config);
    let to = sim.node(recipient).address();
    let sender = 4;
    let id = sim.send(sender, recipient, b"secret plans").expect("send");
    sim.run_for(Duration::from_secs(120));
    let holders = sim.holders(&id);
    assert!(holders.len() >= 4);

    // Rebuild the envelope's ack fields as a forger would see them.
    let mallory = Identity::from_seed([66; 32]);
    let wrong_key = {
        // Mallory signs an ack for the right message with her own key.
        let envelope_like = Envelope::sign(&mallory, to, 0, 1, 0, Bytes::new());
        let mut a = Ack::sign(&mallory, &envelope_like);
        a.id = id;
        a.sender = sim.node(sender).address();
        // Re-sign over the altered fields so only the key is wrong.
        let fake = Ack::sign(&mallory, &envelope_like);
        Ack {
            signature: fake.signature,
            ..a
        }
    };
    // A genuine recipient ack, but for a different message.
    let other = Envelope::sign(
        &mallory,
        to,
        1_700_000_000_000,
        3600,
        2,
        Bytes::from_static(b"x"),
    );
    let recipient_key = Identity::from_seed([1; 32]);
    let wrong_message = Ack::sign(&recipient_key, &other);
    let fake_from: SocketAddr = "10.250.0.1:4000".parse().unwrap();
    for &h in &holders {
        for ack in [
            wrong_key,
            Ack {
                id,
                ..wrong_message
            },
        ] {
            let bytes = ack_packet(mallory.address(), ack);
            sim.inject(h, fake_from, &bytes);
        }
    }
    sim.run_for(Duration::from_secs(60));
    assert_eq!(sim.holders(&id), holders, "forged acks purged copies");
    let forged: u64 = holders
        .iter()
        .map(|&h| {
            sim.node(h)
                .stats()
                .dropped(comm::drops::DropReason::ForgedAck)
        })
        .sum();
    assert_eq!(forged, 2 * holders.len() as u64);
    assert_eq!(
        count_events(&sim, sender, |e| matches!(e, Event::Delivered { .. })),
        0
    );
}

#[test]
fn twenty_copies_are_shown_once_and_relayed_once_per_peer() {
    let config = Config::default();
    let mut sim = network(60, 21, &config);
    let author = Identity::from_seed([42; 32]);
    let fake_from: SocketAddr = "10.251.0.1:4000".parse().unwrap();

    // At the recipient: twenty copies, one message shown.
    let recipient = 30;
    let to = sim.node(recipient).address();
    let envelope = sim.sealed(&author, recipient, 3600, b"once");
    assert_eq!(envelope.recipient(), to);
    let id: MessageId = envelope.id();
    for i in 0..20 {
        sim.inject(
            recipient,
            fake_from,
            &store_packet(&author, &envelope, 3, i),
        );
    }
    sim.run_for(Duration::from_secs(30));
    assert_eq!(
        count_events(
            &sim,
            recipient,
            |e| matches!(e, Event::MessageReceived { id: got, .. } if *got == id)
        ),
        1
    );

    // At a relay, for an offline recipient: each peer gets at most one copy.
    let away = offline_node(&mut sim, &config);
    let away_addr = sim.node(away).address();
    let envelope = sim.sealed(&author, away, 3600, b"later");
    assert_eq!(envelope.recipient(), away_addr);
    let relay = 12;
    let before = sim.node(relay).stats().stores_sent;
    for i in 0..20 {
        sim.inject(
            relay,
            fake_from,
            &store_packet(&author, &envelope, 3, 100 + i),
        );
    }
    // From an unproven source the first attempt waits for the backoff
    // (30 s, jittered) instead of fanning out at once.
    sim.run_for(Duration::from_secs(5));
    assert_eq!(
        sim.node(relay).stats().stores_sent,
        before,
        "no instant fan-out"
    );
    sim.run_for(Duration::from_secs(40));
    let sent = sim.node(relay).stats().stores_sent - before;
    assert!(sent >= 1, "relayed");
    assert!(
        sent <= config.k.get() as u64,
        "{sent} stores for 20 copies: more than one per peer"
    );
}

#[test]
fn a_false_claim_to_hold_a_copy_does_not_stop_delivery() {
    let config = Config::default();
    let mut sim = network(80, 13, &config);
    let recipient = offline_node(&mut sim, &config);
    let to = sim.node(recipient).address();
    let author = Identity::from_seed([43; 32]);
    let envelope = sim.sealed(&author, recipient, 3600, b"for you");
    assert_eq!(envelope.recipient(), to);
    let id = envelope.id();
    let relay = 5;
    let honest: SocketAddr = "10.252.0.1:4000".parse().unwrap();
    sim.inject(relay, honest, &store_packet(&author, &envelope, 3, 1));
    sim.run_for(Duration::from_secs(30));
    assert!(!sim.holders(&id).is_empty());
    // Someone who saw the message sends it to every holder claiming to be
    // the recipient, hoping they mark the recipient as served.
    let liar: SocketAddr = "10.253.0.1:4000".parse().unwrap();
    let claim = wire::encode(&Packet {
        sender: to,
        txid: 9,
        challenge: None,
        proof: None,
        body: Body::Store {
            envelope: Box::new(envelope.clone()),
            hops_left: 3,
        },
    });
    for h in sim.holders(&id) {
        sim.inject(h, liar, &claim);
    }
    sim.run_for(Duration::from_secs(30));
    sim.set_online(recipient, true);
    sim.bootstrap(recipient, &[40]);
    let got = sim.run_while(Duration::from_secs(300), |s| {
        count_events(
            s,
            recipient,
            |e| matches!(e, Event::MessageReceived { id: m, .. } if *m == id),
        ) == 1
    });
    assert!(got, "the recipient never got the message");
}

#[test]
fn messages_held_for_a_returning_recipient_are_shown_in_written_order_after_catch_up() {
    let config = Config::default();
    let mut sim = network(120, 23, &config);
    let recipient = offline_node(&mut sim, &config);
    let sender = 7;
    let texts: [&'static [u8]; 5] = [b"one", b"two", b"three", b"four", b"five"];
    let mut ids = Vec::new();
    for t in texts {
        ids.push(sim.send(sender, recipient, t).expect("send"));
        // Distinct creation times, a few seconds apart.
        sim.run_for(Duration::from_secs(7));
    }
    sim.run_for(Duration::from_secs(3600));
    for id in &ids {
        assert!(!sim.holders(id).is_empty(), "a copy waits");
    }
    sim.take_events();

    sim.set_online(recipient, true);
    sim.bootstrap(recipient, &[40]);
    let all = sim.run_while(Duration::from_secs(120), |s| {
        count_events(s, recipient, |e| matches!(e, Event::MessageReceived { .. })) == 5
    });
    assert!(all, "all five arrived");
    let seen: Vec<&Event> = sim
        .events()
        .iter()
        .filter(|(n, e)| {
            *n == recipient && matches!(e, Event::MessageReceived { .. } | Event::CatchUp { .. })
        })
        .map(|(_, e)| e)
        .collect();
    assert_eq!(
        seen.first(),
        Some(&&Event::CatchUp { count: 5 }),
        "{seen:?}"
    );
    let order: Vec<MessageId> = seen[1..]
        .iter()
        .filter_map(|e| match e {
            Event::MessageReceived { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(order, ids, "shown in the order written");
    let bodies: Vec<Bytes> = seen[1..]
        .iter()
        .filter_map(|e| match e {
            Event::MessageReceived { body, .. } => Some(body.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        bodies,
        texts
            .iter()
            .map(|t| Bytes::from_static(t))
            .collect::<Vec<_>>()
    );

    // Later messages are shown at once, with no catch-up batch.
    sim.take_events();
    sim.send(sender, recipient, b"six").expect("send");
    let shown = sim.run_while(Duration::from_secs(60), |s| {
        count_events(s, recipient, |e| matches!(e, Event::MessageReceived { .. })) == 1
    });
    assert!(shown);
    assert_eq!(
        count_events(&sim, recipient, |e| matches!(e, Event::CatchUp { .. })),
        0
    );
}

#[test]
fn a_cancelled_message_stays_cancelled_after_a_restart() {
    let config = Config::default();
    let mut sim = network(60, 5, &config);
    let recipient = offline_node(&mut sim, &config);
    let sender = 3;
    let id = sim.send(sender, recipient, b"never mind").expect("send");
    sim.run_for(Duration::from_secs(30));
    let held = sim.node(sender).held_report(sim.now(), sim.wall());
    assert!(held.iter().any(|r| r.id == id && r.own));
    let report = sim
        .with_node(sender, |n, now, wall| n.cancel(now, wall, id))
        .expect("cancel");
    assert!(report.relays_holding >= 1, "{report:?}");
    assert!(!sim.node(sender).holds(&id));
    sim.take_events();
    sim.restart(sender);
    sim.run_for(Duration::from_secs(600));
    assert_eq!(sim.node(sender).outbox_state(&id), None);
    assert!(!sim.node(sender).holds(&id));
    assert_eq!(
        count_events(&sim, sender, |e| matches!(
            e,
            Event::MessageSent { .. } | Event::Delivered { .. } | Event::MessageExpired { .. }
        )),
        0
    );
    let again = sim.with_node(sender, |n, now, wall| n.cancel(now, wall, id));
    assert_eq!(again, Err(comm::node::CancelError::Unknown(id)));
}

/// The same identity started twice: the first instance is warned at once
/// when the second bootstraps through it (a datagram from its own address
/// at another endpoint), and both learn it from each other's identity
/// records, signed by their key, within a republish interval.
#[test]
fn an_identity_running_twice_is_noticed_by_both_instances() {
    let config = Config::default();
    let mut sim = network(40, 31, &config);
    let first = 0;
    let twin = sim.add_twin(first, config.clone());
    sim.bootstrap(twin, &[first, 1]);
    sim.run_for(Duration::from_secs(30));
    let warned = |sim: &Sim, n: usize, by_endpoint: bool| {
        count_events(
            sim,
            n,
            |e| matches!(e, Event::SameIdentityElsewhere { endpoint } if endpoint.is_some() == by_endpoint),
        )
    };
    assert_eq!(warned(&sim, first, true), 1, "the bootstrap datagram");
    assert_eq!(warned(&sim, twin, true), 0);
    sim.run_for(config.record_republish + Duration::from_secs(600));
    assert!(
        warned(&sim, first, false) >= 1,
        "a record the first did not sign"
    );
    assert!(
        warned(&sim, twin, false) >= 1,
        "a record the twin did not sign"
    );
    // At most one warning per sign and interval.
    assert!(warned(&sim, first, true) + warned(&sim, first, false) <= 3);
    // An honest network raises none.
    for n in 1..40 {
        assert_eq!(
            warned(&sim, n, true) + warned(&sim, n, false),
            0,
            "node {n}"
        );
    }
}

/// The simulator counts copies from the nodes' durable writes instead of
/// asking every node; through churn, restarts, expiry and an ack, that
/// count agrees with asking every node.
#[test]
fn the_simulators_copy_count_agrees_with_asking_every_node() {
    let config = Config {
        default_ttl: Duration::from_secs(3 * 3600),
        ..Config::default()
    };
    let mut sim = network(120, 23, &config);
    let recipients: Vec<usize> = (0..3).map(|_| offline_node(&mut sim, &config)).collect();
    let ids: Vec<MessageId> = recipients
        .iter()
        .enumerate()
        .map(|(j, &r)| sim.send(5 + j, r, b"counted").expect("send"))
        .collect();
    let check = |sim: &Sim, when: &str| {
        for id in &ids {
            let mut indexed: Vec<usize> = sim.all_holders(id).iter().map(|&i| i as usize).collect();
            indexed.sort_unstable();
            assert_eq!(indexed, sim.scan_holders(id), "{when}");
            assert!(sim.peak_copies(id) >= indexed.len(), "{when}");
        }
    };
    let mut seen_copies = 0;
    for round in 0..40usize {
        sim.run_for(Duration::from_secs(300));
        // Some nodes go away; some come back as fresh processes; one
        // crashes and restarts at once.
        let down = 10 + (round * 7) % 100;
        sim.set_online(down, false);
        let up = 10 + (round * 13 + 50) % 100;
        if !sim.is_online(up) {
            sim.relaunch(up);
        }
        sim.restart(10 + (round * 29) % 100);
        if round == 20 {
            // The first recipient comes back: its message is acked and purged.
            sim.relaunch(recipients[0]);
            sim.bootstrap(recipients[0], &[1]);
        }
        check(&sim, &format!("round {round}"));
        seen_copies += ids
            .iter()
            .map(|id| sim.all_holders(id).len())
            .sum::<usize>();
    }
    assert!(seen_copies > 0, "the messages were held somewhere");
    // The first message was purged from online nodes; the others expired
    // (three-hour TTL, 3 h 20 min run).
    assert!(sim.holders(&ids[0]).is_empty());
    assert!(ids[1..].iter().all(|id| sim.holders(id).is_empty()));
}
