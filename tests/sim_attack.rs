//! Delivery with 10% of the network attacking (simulator): attackers take
//! copies and never pass them on, answer lookups with each other only,
//! answer every copy handed to them with a forged ack, and replay what they
//! took. Honest messages still arrive, once, and no forged ack purges one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use comm::drops::DropReason;
use comm::message::MessageId;
use comm::node::Event;
use comm::sim::{Behaviour, Sim, SimConfig};
use comm::Config;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NODES: usize = 300;
const MESSAGES: usize = 100;

#[test]
fn honest_messages_arrive_with_a_tenth_of_the_network_attacking() {
    let config = Config::default();
    let mut sim = Sim::new(SimConfig {
        seed: 8,
        ..SimConfig::default()
    });
    sim.grow(
        NODES,
        &config,
        Duration::from_millis(200),
        Duration::from_secs(60),
    );
    sim.take_events();
    let mut rng = StdRng::seed_from_u64(3);
    // A tenth of the nodes turn.
    let mut attackers = BTreeSet::new();
    while attackers.len() < NODES / 10 {
        let i = rng.gen_range(1..NODES);
        if attackers.insert(i) {
            sim.set_behaviour(i, Behaviour::Attacker);
        }
    }
    let honest: Vec<usize> = (0..NODES).filter(|i| !attackers.contains(i)).collect();
    // Half the recipients are away when their message is sent.
    // By text: the sender knows a message by the id it got when it wrote
    // it (a draft's, while it looked up the recipient's key), the
    // recipient by the envelope's.
    let mut sent: BTreeMap<MessageId, (usize, usize, Bytes)> = BTreeMap::new();
    let mut away = BTreeSet::new();
    for k in 0..MESSAGES {
        let from = honest[rng.gen_range(0..honest.len())];
        let mut to = honest[rng.gen_range(0..honest.len())];
        while to == from {
            to = honest[rng.gen_range(0..honest.len())];
        }
        if rng.gen_bool(0.5) && !away.contains(&from) {
            away.insert(to);
            sim.set_online(to, false);
        }
        let address = sim.node(to).address();
        let text = Bytes::from(format!("hello {k}"));
        let body = text.clone();
        let id = sim
            .with_node(from, |n, now, wall| n.send(now, wall, address, body))
            .expect("send");
        sent.insert(id, (from, to, text));
        sim.run_for(Duration::from_secs(10));
    }
    // An hour later those who were away come back, joining through a
    // random honest node.
    sim.run_for(Duration::from_secs(3600));
    // The attackers (each on a network of its own) flood the honest relay
    // holding the most: 4,500 Stores of fresh messages from fresh keys for
    // its own neighbourhood, more than it may hold, and self-signed acks
    // for ids nobody sent. What it held before must still be there
    // afterwards (the recipients are still away).
    let mut by_load: Vec<usize> = honest
        .iter()
        .copied()
        .filter(|&i| sim.is_online(i))
        .collect();
    by_load.sort_by_key(|&i| std::cmp::Reverse(sim.node(i).relay().held_count()));
    let victims: Vec<usize> = by_load.into_iter().take(1).collect();
    let before: Vec<(usize, Vec<MessageId>)> = victims
        .iter()
        .map(|&v| (v, sim.node(v).relay().held_ids()))
        .collect();
    let held_before: usize = before.iter().map(|(_, ids)| ids.len()).sum();
    let mut flooded = 0;
    for (n, &a) in attackers.iter().enumerate() {
        flooded += sim.flood(
            a,
            victims[n % victims.len()],
            150,
            30,
            Duration::from_secs(60),
        );
    }
    sim.run_for(Duration::from_secs(300));
    let mut evicted = 0;
    for (v, ids) in &before {
        evicted += ids.iter().filter(|id| !sim.node(*v).holds(id)).count();
    }
    let flood_evictions: u64 = victims
        .iter()
        .map(|&v| sim.node(v).stats().dropped(DropReason::EvictedHeld))
        .sum();
    println!(
        "flood: {flooded} datagrams at {victims:?}, which held {held_before} honest copies; {evicted} of those gone after it, {flood_evictions} copies evicted in all"
    );
    for &v in &victims {
        let st = sim.node(v).stats();
        println!(
            "victim {v}: holds {} after the flood; refused {:?}",
            sim.node(v).relay().held_count(),
            st.dropped
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(r, n)| format!("{} {n}", r.as_str()))
                .collect::<Vec<_>>()
        );
    }
    assert!(held_before > 0, "the victims held honest copies");
    assert_eq!(evicted, 0, "attacker traffic evicted honest copies");
    for i in 0..NODES {
        let r = sim.node(i).relay();
        assert!(r.held_count() <= config.max_held);
        assert!(r.tombstone_count() <= config.max_tombstones);
        assert!(r.routing_acks() <= config.max_routed_acks);
    }
    for &r in &away {
        sim.set_online(r, true);
        let via = honest[rng.gen_range(0..honest.len())];
        sim.bootstrap(r, &[via]);
    }
    sim.run_for(Duration::from_secs(2 * 3600));
    // Then the attackers replay everything they took.
    let replays = sim.replay_loot();
    sim.run_for(Duration::from_secs(600));

    let events = sim.take_events();
    let mut shown: BTreeMap<(usize, Bytes), usize> = BTreeMap::new();
    let mut delivered = BTreeSet::new();
    for (n, e) in &events {
        match e {
            Event::MessageReceived { body, .. } => {
                *shown.entry((*n, body.clone())).or_insert(0) += 1
            }
            Event::Delivered { id, .. } => {
                delivered.insert(*id);
            }
            _ => {}
        }
    }
    let arrived = sent
        .iter()
        .filter(|(_, (_, to, text))| shown.contains_key(&(*to, text.clone())))
        .count();
    let twice = shown.values().filter(|n| **n > 1).count();
    let forged: u64 = honest
        .iter()
        .map(|&i| sim.node(i).stats().dropped(DropReason::ForgedAck))
        .sum();
    let most_held = (0..NODES).map(|i| sim.node(i).relay().held_count()).max();
    println!(
        "{NODES} nodes, {} attackers: {arrived}/{MESSAGES} arrived ({} of them to a recipient that was away), {}/{MESSAGES} reported delivered, {twice} shown twice, {forged} forged acks refused, {replays} replays sent, most held by one node {most_held:?}",
        attackers.len(),
        sent.values().filter(|(_, to, _)| away.contains(to)).count(),
        delivered.len()
    );
    assert!(
        arrived * 100 >= MESSAGES * 99,
        "{arrived}/{MESSAGES} arrived"
    );
    assert_eq!(twice, 0, "a message was shown twice");
    assert!(forged > 0, "the attackers did forge acks");
    assert!(most_held.is_some_and(|m| m <= config.max_held));
}
