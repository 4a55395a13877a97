//! comm-sim's scenarios: a run is a pure function of its seed (the trace
//! hash says so), the scenarios measure what they claim on a small network,
//! and the cheap signature stand-in the simulator uses is refused by the
//! real `comm` binary.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use comm::identity::proof_message;
use comm::signing::SIM_SIGNATURES;
use comm::sim::scenario::{run, Churn, Params};
use comm::wire::{self, Body, Packet, Proof};
use comm::Identity;
use common::Proc;
use serde_json::Value;

fn small_lookup(seed: u64) -> Params {
    Params {
        nodes: 60,
        lookups: 20,
        seed,
        ..Params::default()
    }
}

#[test]
fn the_same_seed_gives_the_same_trace_hash_and_another_seed_another() {
    let mut quiet = |_: &str| {};
    let a = run("lookup", &small_lookup(7), &mut quiet).expect("runs");
    let b = run("lookup", &small_lookup(7), &mut quiet).expect("runs");
    let c = run("lookup", &small_lookup(8), &mut quiet).expect("runs");
    assert_eq!(a.trace_hash, b.trace_hash, "same seed, same run");
    assert_ne!(a.trace_hash, c.trace_hash, "another seed, another run");
    // The reports agree too, but for the wall-clock rows.
    assert_eq!(a.tables[0].to_string(), b.tables[0].to_string());
}

#[test]
fn a_small_delivery_run_delivers_everything_and_beats_flooding() {
    let p = Params {
        nodes: 120,
        hours: 3.0,
        messages: 12,
        seed: 3,
        churn: Churn::default(),
        ..Params::default()
    };
    let mut quiet = |_: &str| {};
    let r = run("delivery", &p, &mut quiet).expect("runs");
    let t = &r.tables[0];
    let cell = |row: usize, col: usize| t.rows[row][col].clone();
    // "d/n (p%)": every returning recipient got its message.
    let delivered = cell(0, 1);
    let (d, rest) = delivered.split_once('/').expect("d/n");
    let n = rest.split_whitespace().next().expect("n");
    assert_eq!(d, n, "comm delivered {delivered}");
    let per = |row: usize| cell(row, 3).parse::<f64>().expect("number");
    assert!(
        per(0) * 5.0 < per(2),
        "comm {} transfers per message, flooding {}",
        per(0),
        per(2)
    );
    let twice = run("delivery", &p, &mut quiet).expect("runs");
    assert_eq!(r.trace_hash, twice.trace_hash);
}

#[test]
fn unknown_scenarios_and_bad_parameters_are_refused() {
    let mut quiet = |_: &str| {};
    assert!(run("nope", &Params::default(), &mut quiet).is_err());
    let tiny = Params {
        nodes: 3,
        ..Params::default()
    };
    assert!(run("lookup", &tiny, &mut quiet).is_err());
    assert!("weibull:0.5:30:60".parse::<Churn>().is_ok());
    assert!("weibull:x".parse::<Churn>().is_err());
    assert_eq!("none".parse::<Churn>(), Ok(Churn::None));
}

/// Send a padded Ping as `id` and answer the node's challenge, signing
/// the way `id` signs.
fn prove(to: SocketAddr, id: &Identity) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let ping = wire::encode_padded(
        &Packet {
            sender: id.address(),
            txid: 1,
            challenge: None,
            proof: None,
            body: Body::Ping,
        },
        wire::PADDED_PING,
    );
    socket.send_to(&ping, to).expect("send");
    let end = Instant::now() + common::DEADLINE;
    let mut buf = [0u8; 2048];
    let (from, txid, c) = loop {
        assert!(Instant::now() < end, "no challenge came back");
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if let Ok(Packet {
            body: Body::Ping,
            challenge: Some(c),
            txid,
            ..
        }) = wire::decode(&buf[..n])
        {
            break (from, txid, c);
        }
    };
    let pong = wire::encode(&Packet {
        sender: id.address(),
        txid,
        challenge: None,
        proof: Some(Proof {
            key: id.public_key(),
            signature: id.sign(&proof_message(&c)),
        }),
        body: Body::Pong { observed: None },
    });
    socket.send_to(&pong, from).expect("send");
}

/// Ask the node `command` until `done` holds for its answer `event`.
fn poll(node: &mut Proc, command: &str, event: &str, done: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + common::DEADLINE;
    loop {
        node.send(command);
        let v = node.wait_event(event);
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < end, "{command}: still {v}");
    }
}

fn bad_signatures(stats: &Value) -> u64 {
    stats["dropped_by_reason"]["bad_signature"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn the_real_binary_refuses_the_simulators_signatures() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("key").to_string_lossy().to_string();
    let mut node = Proc::start(&[
        "--json",
        "--loopback-per-port",
        "--key-file",
        &key,
        "127.0.0.1:0",
    ]);
    let ready = node.wait_event("ready");
    let listen: SocketAddr = ready["listen"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("listen");
    // A proof made with the stand-in is a bad signature to a real node.
    let fake = Identity::from_seed([42; 32]).with_signatures(&SIM_SIGNATURES);
    prove(listen, &fake);
    poll(&mut node, "/stats", "stats", |s| bad_signatures(s) == 1);
    // The same exchange signed with Ed25519 makes a contact.
    let real = Identity::from_seed([43; 32]);
    prove(listen, &real);
    let peers = poll(&mut node, "/peers", "peers", |p| {
        p.to_string().contains(&real.address().to_string())
    });
    assert!(!peers.to_string().contains(&fake.address().to_string()));
    let stats = poll(&mut node, "/stats", "stats", |_| true);
    assert_eq!(bad_signatures(&stats), 1, "the Ed25519 proof was accepted");
}
