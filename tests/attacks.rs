//! The attacks of issue #8, each against real `comm` processes on loopback,
//! each showing it no longer works. The nodes run with
//! `--loopback-per-port`, so every port counts as a network of its own and
//! the per-network limits apply as they would between hosts; the attacker
//! is a plain UDP socket (one port: one network) speaking the wire format
//! through `comm::wire`.

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use comm::identity::proof_message;
use comm::message::{Ack, Envelope};
use comm::node::unix_ms;
use comm::wire::{self, Body, Packet, Proof, StoreStatus};
use comm::{Address, Identity};
use common::{free_port, rss_kib, Proc, DEADLINE};
use ed25519_dalek::VerifyingKey;
use rand::Rng;
use serde_json::Value;

/// A node with a key file (no Argon2 at start) and the sybil limits on.
fn node(name: &str, extra: &[&str]) -> (Proc, Address, SocketAddr) {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join(format!("{name}.key"));
    let data = dir.path().join("data");
    let (key, data) = (
        key.to_string_lossy().to_string(),
        data.to_string_lossy().to_string(),
    );
    let mut args = vec![
        "--json",
        "--loopback-per-port",
        "--data-dir",
        &data,
        "--key-file",
        &key,
    ];
    args.push("127.0.0.1:0");
    args.extend_from_slice(extra);
    let mut p = Proc::start_raw(&args);
    p._dir = Some(dir);
    let ready = p.wait_event("ready");
    let address: Address = ready["address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("address");
    let listen: SocketAddr = ready["listen"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("listen");
    (p, address, listen)
}

fn stats(p: &mut Proc) -> Value {
    p.send("/stats");
    p.wait_event("stats")
}

fn dropped(stats: &Value, reason: &str) -> u64 {
    stats["dropped_by_reason"][reason].as_u64().unwrap_or(0)
}

fn quit(p: &mut Proc) {
    p.send("/quit");
    assert!(p.wait_exit().success());
}

fn now_ms() -> u64 {
    unix_ms(std::time::SystemTime::now())
}

/// One attacker: a socket (one network) that can speak as any identity.
struct Attacker {
    socket: UdpSocket,
    sent: usize,
    received: usize,
}

impl Attacker {
    fn new() -> Attacker {
        Attacker::at(0)
    }

    fn at(port: u16) -> Attacker {
        let socket = UdpSocket::bind(("127.0.0.1", port)).expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        Attacker {
            socket,
            sent: 0,
            received: 0,
        }
    }

    fn send(&mut self, to: SocketAddr, bytes: &[u8]) {
        self.sent += bytes.len();
        let _ = self.socket.send_to(bytes, to);
    }

    fn request(&mut self, to: SocketAddr, from: Address, txid: u64, body: Body) {
        let bytes = wire::encode(&Packet {
            sender: from,
            txid,
            challenge: None,
            proof: None,
            body,
        });
        self.send(to, &bytes);
    }

    /// Get `id` verified by the node at `to`: a padded ping, then the
    /// answer to the challenge that comes back.
    fn prove(&mut self, to: SocketAddr, id: &Identity, txid: u64) {
        let ping = wire::encode_padded(
            &Packet {
                sender: id.address(),
                txid,
                challenge: None,
                proof: None,
                body: Body::Ping,
            },
            wire::PADDED_PING,
        );
        self.send(to, &ping);
        for (from, p) in self.receive(Duration::from_millis(300)) {
            if let (Body::Ping, Some(c)) = (&p.body, p.challenge) {
                let pong = wire::encode(&Packet {
                    sender: id.address(),
                    txid: p.txid,
                    challenge: None,
                    proof: Some(Proof {
                        key: id.public_key(),
                        signature: id.sign(&proof_message(&c)),
                    }),
                    body: Body::Pong { observed: None },
                });
                self.send(from, &pong);
            }
        }
    }

    /// Every packet that arrives within `wait`.
    fn receive(&mut self, wait: Duration) -> Vec<(SocketAddr, Packet)> {
        let end = Instant::now() + wait;
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while Instant::now() < end {
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    self.received += n;
                    if let Ok(p) = wire::decode(&buf[..n]) {
                        out.push((from, p));
                    }
                }
                Err(_) => continue,
            }
        }
        out
    }
}

/// A message sealed to `to`, as a real sender would build it.
fn sealed(from: &Identity, to: &VerifyingKey, text: &str) -> Envelope {
    comm::crypto::sealed_envelope(
        &mut rand::thread_rng(),
        from,
        to,
        now_ms(),
        3600,
        4,
        text.as_bytes(),
    )
    .expect("seal")
}

/// The public key a node printed when it started.
fn key_of(p: &Proc) -> VerifyingKey {
    p.seen
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "ready")
        .and_then(|v| v["key"].as_str().map(str::to_string))
        .and_then(|k| {
            let mut b = [0u8; 32];
            hex::decode_to_slice(k, &mut b).ok()?;
            VerifyingKey::from_bytes(&b).ok()
        })
        .expect("ready event with a key")
}

/// How a user types a recipient by its key.
fn key_hex(id: &Identity) -> String {
    hex::encode(id.public_key().as_bytes())
}

/// A message whose body is not sealed (relays cannot tell; only its
/// recipient could, and it never gets it).
fn envelope(from: &Identity, to: Address, text: &str) -> Envelope {
    Envelope::sign(
        from,
        to,
        now_ms(),
        3600,
        4,
        Bytes::copy_from_slice(text.as_bytes()),
    )
}

/// An address near `a` (same first 19 bytes).
fn near(a: Address, last: u8) -> Address {
    let mut x = a;
    x.0[19] = last;
    x
}

fn random_identity() -> Identity {
    Identity::from_seed(rand::thread_rng().gen())
}

/// Attack 1: Self-signed acks naming a live contact as their sender must not make
/// the node route them to it, nor cost that contact its place.
#[test]
fn acks_from_a_stranger_cannot_evict_a_contact() {
    let (mut n, _, n_listen) = node("n", &[]);
    let (mut v, v_address, _) = node("v", &[&n_listen.to_string()]);
    v.wait_event("joined");
    let mut attacker = Attacker::new();
    let mallory = random_identity();
    for i in 0..50u64 {
        let fake = envelope(&mallory, Address::random(&mut rand::thread_rng()), "x");
        let mut ack = Ack::sign(&mallory, &fake);
        // Re-aim it at the victim: sign over the changed sender field.
        ack.sender = v_address;
        let signed = mallory.sign(&ack.signed_bytes());
        ack.signature = signed;
        attacker.request(
            n_listen,
            mallory.address(),
            i,
            Body::Acknowledge {
                ack: Box::new(ack),
                hops_left: 4,
            },
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    let s = stats(&mut n);
    assert_eq!(s["acks_sent"], 0, "a stranger's ack was routed: {s}");
    n.send("/peers");
    let peers = n.wait_event("peers");
    let ids: Vec<&str> = peers["contacts"]
        .as_array()
        .expect("contacts")
        .iter()
        .filter_map(|c| c["address"].as_str())
        .collect();
    assert!(ids.contains(&v_address.to_string().as_str()), "{peers}");
    quit(&mut v);
    quit(&mut n);
}

/// Attack 2: A Store flood with a fresh key every few messages, for recipients
/// near the relay, must not push out honest held messages.
#[test]
fn a_store_flood_with_fresh_keys_evicts_no_honest_message() {
    const HONEST: usize = 50;
    // A small relay, so that the flood fills it.
    let (mut r, r_address, r_listen) = node("r", &["--set", "max_held=600"]);
    let via = r_listen.to_string();
    let (mut a, _, _) = node("a", &[&via]);
    a.wait_event("joined");
    let c_seed: [u8; 32] = rand::thread_rng().gen();
    let c = Identity::from_seed(c_seed);
    for i in 0..HONEST {
        a.send(&format!("{} honest {i}", key_hex(&c)));
    }
    for _ in 0..HONEST {
        a.wait_event("sent");
    }
    let before = stats(&mut r)["held_messages"].as_u64().unwrap_or(0);
    assert!(before >= HONEST as u64, "relay holds {before}");
    let mut attacker = Attacker::new();
    let mut key = random_identity();
    for i in 0..1500u64 {
        if i % 200 == 0 {
            key = random_identity();
        }
        let e = envelope(&key, near(r_address, i as u8), "flood");
        attacker.request(
            r_listen,
            key.address(),
            i,
            Body::Store {
                envelope: Box::new(e),
                hops_left: 3,
            },
        );
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let s = stats(&mut r);
    assert_eq!(dropped(&s, "evicted_held"), 0, "{s}");
    assert!(
        dropped(&s, "relay_full") + dropped(&s, "source_quota") + dropped(&s, "source_rate") > 0,
        "{s}"
    );
    assert!(s["held_messages"].as_u64().unwrap_or(0) <= 600);
    // Every honest message is still there for its recipient.
    let c_dir = tempfile::tempdir().expect("dir");
    let c_key = c_dir.path().join("c.key");
    std::fs::write(&c_key, format!("{}\n", hex::encode(c_seed))).expect("key");
    let c_data = c_dir.path().join("data").to_string_lossy().to_string();
    let c_key = c_key.to_string_lossy().to_string();
    let mut cp = Proc::start_raw(&[
        "--json",
        "--loopback-per-port",
        "--data-dir",
        &c_data,
        "--key-file",
        &c_key,
        "127.0.0.1:0",
        &via,
    ]);
    let mut got = HashSet::new();
    while got.len() < HONEST {
        let m = cp.wait_event("message");
        got.insert(m["text"].as_str().unwrap_or("").to_string());
    }
    quit(&mut cp);
    quit(&mut a);
    quit(&mut r);
}

/// Attack 3: Self-signed acks for ids nobody knows must not grow a node's memory.
#[test]
fn acks_for_unknown_messages_do_not_grow_memory() {
    let (mut r, _, r_listen) = node("r", &[]);
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = rss_kib(r.child.id());
    let mut attacker = Attacker::new();
    let mallory = random_identity();
    for i in 0..20_000u64 {
        let fake = envelope(&mallory, Address::random(&mut rand::thread_rng()), "");
        attacker.request(
            r_listen,
            mallory.address(),
            i,
            Body::Acknowledge {
                ack: Box::new(Ack::sign(&mallory, &fake)),
                hops_left: 4,
            },
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    let s = stats(&mut r);
    let rss_after = rss_kib(r.child.id());
    assert_eq!(s["routed_acks"], 0, "{s}");
    assert_eq!(s["held_acks"], 0, "no tombstones from strangers: {s}");
    assert!(
        rss_after < rss_before + 8 * 1024,
        "RSS {rss_before} -> {rss_after} KiB"
    );
    quit(&mut r);
}

/// Attack 4: Junk acks must not push out a real tombstone: a late copy of a
/// delivered message still meets its ack.
#[test]
fn junk_acks_cannot_push_out_a_real_tombstone() {
    // Few tombstones, so that junk would fill them quickly.
    let (mut r, _, r_listen) = node("r", &["--set", "max_tombstones=64"]);
    let via = r_listen.to_string();
    let (mut c, c_address, _) = node("c", &[&via]);
    c.wait_event("joined");
    let mut attacker = Attacker::new();
    let mallory = random_identity();
    // A proven sender: its Store is relayed at once.
    attacker.prove(r_listen, &mallory, 0);
    // The attacker's own message to c, through the relay.
    let m = sealed(&mallory, &key_of(&c), "first and last");
    assert_eq!(m.recipient(), c_address);
    attacker.request(
        r_listen,
        mallory.address(),
        1,
        Body::Store {
            envelope: Box::new(m.clone()),
            hops_left: 3,
        },
    );
    let shown = c.wait_event("message");
    assert_eq!(shown["id"], m.id().to_string());
    // Wait until the relay no longer holds it (the ack purged it).
    let end = Instant::now() + DEADLINE;
    while stats(&mut r)["held_messages"] != 0 {
        assert!(Instant::now() < end, "relay still holds the message");
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 0..1_000u64 {
        let fake = envelope(&mallory, Address::random(&mut rand::thread_rng()), "");
        attacker.request(
            r_listen,
            mallory.address(),
            100 + i,
            Body::Acknowledge {
                ack: Box::new(Ack::sign(&mallory, &fake)),
                hops_left: 0,
            },
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    attacker.receive(Duration::from_millis(300));
    attacker.request(
        r_listen,
        mallory.address(),
        99_999,
        Body::Store {
            envelope: Box::new(m.clone()),
            hops_left: 3,
        },
    );
    let replies = attacker.receive(Duration::from_secs(2));
    let status = replies.iter().find_map(|(_, p)| match &p.body {
        Body::Stored { status, .. } if p.txid == 99_999 => Some(status.clone()),
        _ => None,
    });
    assert!(
        matches!(status, Some(StoreStatus::Acknowledged(_))),
        "{status:?}"
    );
    quit(&mut c);
    quit(&mut r);
}

/// Attack 5: Filling a recipient's inbox memory with junk (which raises its
/// replay floor) must neither make it drop a real message written before
/// the junk nor show a replay of an old one unmarked.
#[test]
fn a_full_inbox_loses_no_real_message_and_marks_a_replay() {
    let (mut v, v_address, v_listen) =
        node("v", &["--set", "max_inbox=8", "--set", "max_tombstones=8"]);
    let mut attacker = Attacker::new();
    let mallory = random_identity();
    let alice = random_identity();
    let v_key = key_of(&v);
    let old = sealed(&mallory, &v_key, "seen once");
    assert_eq!(old.recipient(), v_address);
    let store = |e: &Envelope| Body::Store {
        envelope: Box::new(e.clone()),
        hops_left: 0,
    };
    attacker.request(v_listen, mallory.address(), 1, store(&old));
    let first = v.wait_event("message");
    assert_eq!(first["id"], old.id().to_string());
    assert_eq!(first["maybe_repeat"], false);
    // Written now, still on its way while the junk arrives.
    std::thread::sleep(Duration::from_millis(5));
    let late = sealed(&alice, &v_key, "written before the junk");
    for i in 0..16u64 {
        std::thread::sleep(Duration::from_millis(5));
        let junk = sealed(&mallory, &v_key, &format!("junk {i}"));
        attacker.request(v_listen, mallory.address(), 10 + i, store(&junk));
        v.wait_event("message");
    }
    attacker.request(v_listen, mallory.address(), 100, store(&old));
    let again = v.wait_event("message");
    assert_eq!(again["id"], old.id().to_string());
    assert_eq!(again["maybe_repeat"], true, "a replay is shown marked");
    attacker.request(v_listen, alice.address(), 101, store(&late));
    let shown = v.wait_event("message");
    assert_eq!(shown["id"], late.id().to_string(), "not lost");
    assert_eq!(shown["maybe_repeat"], true);
    let s = stats(&mut v);
    assert_eq!(s["maybe_repeats"], 2, "{s}");
    assert!(s["inbox"].as_u64().unwrap_or(0) <= 8, "{s}");
    quit(&mut v);
}

/// Attack 6: A relay whose budget for a message is spent keeps the copy instead of
/// dropping it (and so cannot be made to take it again with a fresh one).
#[test]
fn a_spent_budget_stays_spent() {
    let (mut r, _, r_listen) = node("r", &["--set", "relay_budget=1"]);
    let via = r_listen.to_string();
    let (mut n1, _, _) = node("n1", &[&via]);
    n1.wait_event("joined");
    let mut attacker = Attacker::new();
    let mallory = random_identity();
    let far = Address::random(&mut rand::thread_rng());
    let m = envelope(&mallory, far, "spend me");
    attacker.request(
        r_listen,
        mallory.address(),
        1,
        Body::Store {
            envelope: Box::new(m.clone()),
            hops_left: 3,
        },
    );
    // The first attempt (deferred: the attacker is unproven) comes within
    // 22.5-37.5 s and spends the budget of 1.
    std::thread::sleep(Duration::from_secs(40));
    attacker.request(
        r_listen,
        mallory.address(),
        2,
        Body::Store {
            envelope: Box::new(m),
            hops_left: 3,
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let s = stats(&mut r);
    assert_eq!(s["held_messages"], 1, "dropped after spending: {s}");
    assert!(s["stores_sent"].as_u64().unwrap_or(0) <= 1, "{s}");
    quit(&mut n1);
    quit(&mut r);
}

/// Attack 7: Whoever binds an offline recipient's old port must not be taken for
/// it: the real recipient, back on a new port, gets its message.
#[test]
fn an_old_port_is_not_the_recipient() {
    let (mut r, _, r_listen) = node("r", &[]);
    let via = r_listen.to_string();
    let c_port = free_port();
    let c_dir = tempfile::tempdir().expect("dir");
    let c_key = c_dir.path().join("c.key").to_string_lossy().to_string();
    let c_data = c_dir.path().join("data").to_string_lossy().to_string();
    let c_args = |listen: &str| {
        vec![
            "--json".to_string(),
            "--loopback-per-port".into(),
            "--data-dir".into(),
            c_data.clone(),
            "--key-file".into(),
            c_key.clone(),
            listen.to_string(),
            via.clone(),
        ]
    };
    let args = c_args(&format!("127.0.0.1:{c_port}"));
    let mut c = Proc::start_raw(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let c_address = c.wait_event("ready")["address"]
        .as_str()
        .expect("address")
        .to_string();
    c.wait_event("joined");
    quit(&mut c);
    // The attacker takes the port and answers every Store as the recipient.
    let mut attacker = Attacker::at(c_port);
    let (mut a, _, _) = node("a", &[&via]);
    a.wait_event("joined");
    a.send(&format!("{c_address} only for c"));
    let fake: Address = c_address.parse().expect("address");
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        for (from, p) in attacker.receive(Duration::from_millis(300)) {
            if let Body::Store { envelope, .. } = p.body {
                let reply = wire::encode(&Packet {
                    sender: fake,
                    txid: p.txid,
                    challenge: None,
                    proof: None,
                    body: Body::Stored {
                        id: envelope.id(),
                        status: StoreStatus::Held,
                    },
                });
                attacker.send(from, &reply);
            }
        }
    }
    drop(attacker);
    // The real recipient comes back elsewhere and gets it.
    let args = c_args("127.0.0.1:0");
    let mut c = Proc::start_raw(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let m = c.wait_event("message");
    assert_eq!(m["text"], "only for c");
    quit(&mut c);
    quit(&mut a);
    quit(&mut r);
}

/// Attack 8: An unproven source gets at most 3 times the bytes it sent, and one
/// `Store` from it makes no instant fan-out to third parties.
#[test]
fn an_unproven_source_gets_no_amplification() {
    let (mut r, r_address, r_listen) = node("r", &[]);
    let via = r_listen.to_string();
    let mut others: Vec<Proc> = (0..4).map(|i| node(&format!("o{i}"), &[&via]).0).collect();
    for o in &mut others {
        o.wait_event("joined");
    }
    let mut attacker = Attacker::new();
    let mallory = random_identity();
    for i in 0..100u64 {
        let target = Address::random(&mut rand::thread_rng());
        attacker.request(r_listen, mallory.address(), i, Body::FindNode { target });
        let ping = wire::encode(&Packet {
            sender: mallory.address(),
            txid: 1000 + i,
            challenge: Some([7; 16]),
            proof: None,
            body: Body::Ping,
        });
        attacker.send(r_listen, &ping);
    }
    attacker.receive(Duration::from_secs(3));
    assert!(
        attacker.received <= 3 * attacker.sent,
        "sent {} bytes, got {}",
        attacker.sent,
        attacker.received
    );
    let before = stats(&mut r)["stores_sent"].as_u64().unwrap_or(0);
    let m = envelope(&mallory, near(r_address, 0x42), "fan out?");
    attacker.request(
        r_listen,
        mallory.address(),
        5000,
        Body::Store {
            envelope: Box::new(m),
            hops_left: 4,
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let after = stats(&mut r)["stores_sent"].as_u64().unwrap_or(0);
    assert_eq!(after, before, "instant fan-out for an unproven source");
    for o in &mut others {
        quit(o);
    }
    quit(&mut r);
}

/// A Sybil: its own endpoint (a network of its own under
/// `--loopback-per-port`), an identity it proves whenever challenged, and
/// silence to everything else, so that requests to it hold a slot until
/// they time out. It pings the victim every second to get back into its
/// table after its silence got it dropped.
fn sybil(victim: SocketAddr, stop: Arc<AtomicBool>) -> (Address, std::thread::JoinHandle<()>) {
    let id = random_identity();
    let address = id.address();
    let handle = std::thread::spawn(move || {
        let mut me = Attacker::new();
        let mut last_ping = Instant::now() - Duration::from_secs(2);
        let mut txid = 1u64;
        while !stop.load(Ordering::Relaxed) {
            if last_ping.elapsed() >= Duration::from_secs(1) {
                let ping = wire::encode_padded(
                    &Packet {
                        sender: address,
                        txid,
                        challenge: None,
                        proof: None,
                        body: Body::Ping,
                    },
                    wire::PADDED_PING,
                );
                txid += 1;
                me.send(victim, &ping);
                last_ping = Instant::now();
            }
            for (from, p) in me.receive(Duration::from_millis(100)) {
                if let (Body::Ping, Some(c)) = (&p.body, p.challenge) {
                    let pong = wire::encode(&Packet {
                        sender: address,
                        txid: p.txid,
                        challenge: None,
                        proof: Some(Proof {
                            key: id.public_key(),
                            signature: id.sign(&proof_message(&c)),
                        }),
                        body: Body::Pong { observed: None },
                    });
                    me.send(from, &pong);
                }
            }
        }
    });
    (address, handle)
}

/// Attack 9: Silent Sybils in the table, and a flood of messages for
/// recipients next to them, must not hold up the node's own messages: the
/// requests for others fill at most three quarters of the slots.
#[test]
fn silent_sybils_cannot_starve_a_nodes_own_messages() {
    const SYBILS: usize = 48;
    let (mut v, _, v_listen) = node("v", &["--set", "max_held=4096"]);
    let via = v_listen.to_string();
    let (mut r, _, _) = node("r", &[&via]);
    r.wait_event("joined");
    let r_key = key_of(&r);
    // The flooder proves its address first, while the table has room for
    // it: its Stores are then relayed at once.
    let mut attacker = Attacker::new();
    let mallory = random_identity();
    attacker.prove(v_listen, &mallory, 0);
    let stop = Arc::new(AtomicBool::new(false));
    let sybils: Vec<(Address, std::thread::JoinHandle<()>)> =
        (0..SYBILS).map(|_| sybil(v_listen, stop.clone())).collect();
    std::thread::sleep(Duration::from_secs(2));
    // Without the flood: how long the user's message takes to be placed
    // with silent Sybils among the recipient's neighbours.
    let t = Instant::now();
    v.send(&format!("{} before", hex::encode(r_key.as_bytes())));
    v.wait_event("sent");
    let quiet = t.elapsed();
    // The flooder hands over messages for recipients right next to the
    // Sybils, so that the victim relays them at once, to the Sybils.
    let mut most_open = 0;
    let mut waited = None;
    let mut txid = 10u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(12) {
        for (i, (a, _)) in sybils.iter().enumerate() {
            if i % 4 != (txid as usize) % 4 {
                continue;
            }
            let e = envelope(&mallory, near(*a, (txid % 251) as u8), "hold a slot");
            attacker.request(
                v_listen,
                mallory.address(),
                txid,
                Body::Store {
                    envelope: Box::new(e),
                    hops_left: 2,
                },
            );
            txid += 1;
        }
        attacker.receive(Duration::from_millis(50));
        let open = stats(&mut v)["requests_open"].as_u64().unwrap_or(0);
        most_open = most_open.max(open);
        // Once the slots for others are full, the user sends a message.
        if waited.is_none() && open >= 150 {
            let t = Instant::now();
            v.send(&format!("{} mine", hex::encode(r_key.as_bytes())));
            v.wait_event("sent");
            waited = Some(t.elapsed());
        }
    }
    stop.store(true, Ordering::Relaxed);
    for (_, h) in sybils {
        let _ = h.join();
    }
    let waited = waited.unwrap_or_else(|| panic!("the flood opened at most {most_open} requests"));
    let texts: Vec<String> = (0..2)
        .map(|_| {
            r.wait_event("message")["text"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(texts, ["before", "mine"]);
    println!(
        "requests open at most {most_open}; own message sent after {waited:?} (without the flood {quiet:?})"
    );
    assert!(most_open <= 256);
    assert!(
        waited < quiet + Duration::from_secs(1),
        "own message waited {waited:?}, {quiet:?} without the flood"
    );
    quit(&mut r);
    quit(&mut v);
}

/// Attack 10: One endpoint is one identity: identities sharing an attacker's
/// port cannot pack a routing table.
#[test]
fn many_identities_on_one_endpoint_get_one_place() {
    let (mut r, _, r_listen) = node("r", &[]);
    let mut attacker = Attacker::new();
    let me = attacker.socket.local_addr().expect("addr");
    let sybils: Vec<Identity> = (0..10).map(|_| random_identity()).collect();
    for (i, s) in sybils.iter().enumerate() {
        // A padded ping earns the challenge back under the 3x limit.
        attacker.prove(r_listen, s, i as u64);
    }
    std::thread::sleep(Duration::from_millis(500));
    r.send("/peers");
    let peers = r.wait_event("peers");
    let here = peers["contacts"]
        .as_array()
        .expect("contacts")
        .iter()
        .filter(|c| c["addr"] == me.to_string())
        .count();
    assert!(here <= 1, "{here} identities at one endpoint: {peers}");
    quit(&mut r);
}

/// Attack 11: A damaged database stops the node with a clear message, never a
/// panic; a damaged record is counted and kept aside.
#[test]
fn a_damaged_database_is_reported_not_a_panic() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().to_string_lossy().to_string();
    let key = dir.path().join("k").to_string_lossy().to_string();
    let args = [
        "--json",
        "--data-dir",
        &data,
        "--key-file",
        &key,
        "127.0.0.1:0",
    ];
    // A relay that holds a message with a marker we can find on disk.
    let mut r = Proc::start_raw(&args);
    let ready = r.wait_event("ready");
    let r_listen: SocketAddr = ready["listen"]
        .as_str()
        .and_then(|l| l.parse().ok())
        .expect("listen");
    let mut attacker = Attacker::new();
    let mallory = random_identity();
    let m = envelope(
        &mallory,
        Address::random(&mut rand::thread_rng()),
        "FIND-THIS-MARKER-IN-THE-FILE",
    );
    attacker.request(
        r_listen,
        mallory.address(),
        1,
        Body::Store {
            envelope: Box::new(m),
            hops_left: 2,
        },
    );
    attacker.receive(Duration::from_millis(500));
    quit(&mut r);
    let db = dir.path().join("comm.redb");
    let mut bytes = std::fs::read(&db).expect("db");
    let marker = b"FIND-THIS-MARKER-IN-THE-FILE";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("marker on disk");
    bytes[at] ^= 0x20;
    std::fs::write(&db, &bytes).expect("write");
    let mut r = Proc::start_raw(&args);
    r.wait_event("ready");
    let s = stats(&mut r);
    assert_eq!(dropped(&s, "store_corrupt"), 1, "{s}");
    assert_eq!(s["held_messages"], 0);
    quit(&mut r);
    // Truncated: a clear error and a non-zero exit, not a panic.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .expect("open");
    f.set_len(4096).expect("truncate");
    drop(f);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_comm"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("damaged"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Attack 12: `Pull` from an unproven endpoint says nothing about who gets mail;
/// a key file others can read is warned about.
#[test]
fn a_pull_from_a_stranger_learns_nothing() {
    let (mut r, _, r_listen) = node("r", &[]);
    let via = r_listen.to_string();
    let (mut a, _, _) = node("a", &[&via]);
    a.wait_event("joined");
    let c = random_identity();
    a.send(&format!("{} waiting", key_hex(&c)));
    a.wait_event("sent");
    let mut attacker = Attacker::new();
    attacker.request(r_listen, c.address(), 7, Body::Pull);
    let replies = attacker.receive(Duration::from_secs(1));
    let counts: HashSet<u32> = replies
        .iter()
        .filter_map(|(_, p)| match p.body {
            Body::Pulled { count } => Some(count),
            _ => None,
        })
        .collect();
    assert_eq!(counts, HashSet::from([0]), "{replies:?}");
    quit(&mut a);
    quit(&mut r);

    let dir = tempfile::tempdir().expect("dir");
    let key = dir.path().join("k");
    std::fs::write(&key, format!("{}\n", "11".repeat(32))).expect("key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let data = dir.path().join("d").to_string_lossy().to_string();
        let mut p = std::process::Command::new(env!("CARGO_BIN_EXE_comm"))
            .args([
                "--json",
                "--data-dir",
                &data,
                "--key-file",
                &key.to_string_lossy(),
                "127.0.0.1:0",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start");
        std::thread::sleep(Duration::from_millis(500));
        let _ = p.kill();
        let out = p.wait_with_output().expect("output");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("can be read by others"), "{err}");
    }
}
