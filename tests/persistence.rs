//! A node that crashes (is dropped without shutdown) keeps every message it
//! confirmed and every ack it accepted, and resumes relaying on restart.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use comm::message::{Ack, Envelope};
use comm::node::DEFAULT_EPOCH_MS;
use comm::store::RedbStore;
use comm::wire::{self, Body, Packet, StoreStatus};
use comm::{Config, Identity, Node};

fn node(now: Instant, path: &std::path::Path) -> Node {
    let mut n = Node::new(
        Config::default(),
        Identity::from_seed([1; 32]),
        [2; 32],
        now,
    );
    let store = RedbStore::open(path).expect("open store");
    n.attach_store(now, Box::new(store)).expect("restore");
    n
}

fn request(from: &Identity, txid: u64, body: Body) -> Vec<u8> {
    wire::encode(&Packet {
        sender: from.address(),
        txid,
        challenge: None,
        proof: None,
        body,
    })
    .to_vec()
}

fn reply_status(n: &mut Node) -> StoreStatus {
    while let Some(t) = n.poll_transmit() {
        if let Ok(Packet {
            body: Body::Stored { status, .. },
            ..
        }) = wire::decode(&t.payload, 8)
        {
            return status;
        }
    }
    panic!("no Stored reply");
}

#[test]
fn confirmed_messages_and_accepted_acks_survive_a_crash() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("comm.redb");
    let now = Instant::now();
    let author = Identity::from_seed([7; 32]);
    let reader = Identity::from_seed([8; 32]);
    let peer: SocketAddr = "10.1.2.3:4000".parse().unwrap();
    let envelope = |text: &'static str| {
        Envelope::sign(
            &author,
            reader.address(),
            DEFAULT_EPOCH_MS,
            3600,
            4,
            Bytes::from_static(text.as_bytes()),
        )
    };
    let (kept, acked) = (envelope("kept"), envelope("acked"));

    let mut first = node(now, &path);
    for (txid, e) in [(1, &kept), (2, &acked)] {
        let store = Body::Store {
            envelope: Box::new(e.clone()),
            hops_left: 2,
        };
        first.handle_datagram(now, peer, &request(&author, txid, store));
        assert_eq!(reply_status(&mut first), StoreStatus::Held);
    }
    let ack = Ack::sign(&reader, &acked);
    let body = Body::Acknowledge {
        ack: Box::new(ack),
        hops_left: 0,
    };
    first.handle_datagram(now, peer, &request(&reader, 3, body));
    assert!(first.holds(&kept.id()) && !first.holds(&acked.id()));
    drop(first); // a crash: no shutdown, nothing flushed on the way out

    let later = now + Duration::from_secs(5);
    let mut second = node(later, &path);
    assert!(second.holds(&kept.id()), "confirmed message lost");
    assert!(!second.holds(&acked.id()), "acknowledged message came back");
    assert_eq!(second.tombstone_count(), 1, "accepted ack lost");
    // A late copy of the acknowledged message meets the ack.
    let late = Body::Store {
        envelope: Box::new(acked.clone()),
        hops_left: 2,
    };
    second.handle_datagram(later, peer, &request(&author, 4, late));
    assert!(matches!(reply_status(&mut second), StoreStatus::Acknowledged(a) if *a == ack));
    // The restored message's retries are scheduled at once.
    assert!(second.poll_timeout().is_some_and(|t| t <= later));
}
