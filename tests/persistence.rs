//! A node that crashes (is dropped without shutdown) keeps every message it
//! confirmed, every ack it accepted and every message it received, with
//! redb as the disk, and resumes relaying on restart.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use comm::message::{Ack, Envelope};
use comm::node::DEFAULT_EPOCH_MS;
use comm::store::{self, RedbStore, Store};
use comm::wire::{self, Body, Packet, StoreStatus};
use comm::{Config, Event, Identity, Node};

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(DEFAULT_EPOCH_MS)
}

/// A node with seed `seed` started from the database at `path`.
fn start(seed: u8, now: Instant, path: &std::path::Path) -> (Node, RedbStore) {
    let mut n = Node::new(
        Config::default(),
        Identity::from_seed([seed; 32]),
        [2; 32],
        now,
    )
    .expect("config");
    let mut disk = RedbStore::open(path).expect("open store");
    let snapshot = disk.load().expect("load");
    n.restore(now, wall(), &snapshot);
    store::commit(&mut n, &mut disk).expect("commit");
    (n, disk)
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

/// Feed a datagram and commit, as the runtime does per receive batch.
fn feed(n: &mut Node, disk: &mut RedbStore, now: Instant, from: SocketAddr, bytes: &[u8]) {
    n.handle_datagram(now, wall(), from, bytes);
    store::commit(n, disk).expect("commit");
}

fn reply_status(n: &mut Node) -> StoreStatus {
    while let Some(t) = n.poll_transmit() {
        if let Ok(Packet {
            body: Body::Stored { status, .. },
            ..
        }) = wire::decode(&t.payload)
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

    let (mut first, mut disk) = start(1, now, &path);
    for (txid, e) in [(1, &kept), (2, &acked)] {
        let store = Body::Store {
            envelope: Box::new(e.clone()),
            hops_left: 2,
        };
        feed(
            &mut first,
            &mut disk,
            now,
            peer,
            &request(&author, txid, store),
        );
        assert_eq!(reply_status(&mut first), StoreStatus::Held);
    }
    let ack = Ack::sign(&reader, &acked);
    let body = Body::Acknowledge {
        ack: Box::new(ack),
        hops_left: 0,
    };
    feed(&mut first, &mut disk, now, peer, &request(&reader, 3, body));
    assert!(first.holds(&kept.id()) && !first.holds(&acked.id()));
    // A crash: no shutdown, nothing flushed on the way out.
    drop(first);
    drop(disk);

    let later = now + Duration::from_secs(5);
    let (mut second, mut disk) = start(1, later, &path);
    assert!(second.holds(&kept.id()), "confirmed message lost");
    assert!(!second.holds(&acked.id()), "acknowledged message came back");
    assert_eq!(second.relay().tombstone_count(), 1, "accepted ack lost");
    // A late copy of the acknowledged message meets the ack.
    let late = Body::Store {
        envelope: Box::new(acked.clone()),
        hops_left: 2,
    };
    feed(
        &mut second,
        &mut disk,
        later,
        peer,
        &request(&author, 4, late),
    );
    assert!(matches!(reply_status(&mut second), StoreStatus::Acknowledged(a) if *a == ack));
    // The restored message's retries are scheduled at once.
    assert!(second.poll_timeout().is_some_and(|t| t <= later));
}

#[test]
fn a_recipient_that_crashes_before_showing_shows_on_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("comm.redb");
    let now = Instant::now();
    let author = Identity::from_seed([7; 32]);
    let peer: SocketAddr = "10.1.2.3:4000".parse().unwrap();
    let (mut me, mut disk) = start(1, now, &path);
    // The front end takes nothing (a stalled terminal).
    me.set_message_credit(0);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    let e = comm::crypto::sealed_envelope(
        &mut rng,
        &author,
        &me.public_key(),
        DEFAULT_EPOCH_MS,
        3600,
        4,
        b"do not lose me",
    )
    .expect("seal");
    let store = Body::Store {
        envelope: Box::new(e.clone()),
        hops_left: 0,
    };
    feed(&mut me, &mut disk, now, peer, &request(&author, 1, store));
    assert!(matches!(reply_status(&mut me), StoreStatus::Delivered(_)));
    assert_eq!(me.poll_event(), None);
    drop(me);
    drop(disk);

    let (mut again, _disk) = start(1, now, &path);
    let shown: Vec<Event> = std::iter::from_fn(|| again.poll_event()).collect();
    assert!(
        matches!(&shown[..], [Event::MessageReceived { id, body, .. }]
            if *id == e.id() && body[..] == b"do not lose me"[..]),
        "{shown:?}"
    );
}
