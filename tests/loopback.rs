//! Real `comm` processes on 127.0.0.1, driven through `--json`.
//!
//! Every wait polls with a deadline; every child is killed when its handle
//! drops, so a failing test never leaves processes behind.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, rss_kib, Proc, DEADLINE};
use serde_json::Value;

#[test]
fn four_processes_join_and_the_last_finds_the_first() {
    let mut first = Proc::start(&["--json", "loopback-secret-0", "127.0.0.1:0"]);
    let ready = first.wait_event("ready");
    let first_address = ready["address"].as_str().expect("address").to_string();
    let first_listen = ready["listen"].as_str().expect("listen").to_string();
    assert_eq!(first_address.len(), 40);

    let mut others: Vec<Proc> = (1..4)
        .map(|i| {
            Proc::start(&[
                "--json",
                &format!("loopback-secret-{i}"),
                "127.0.0.1:0",
                &first_listen,
            ])
        })
        .collect();
    for p in &mut others {
        let joined = p.wait_event("joined");
        assert!(joined["contacts"].as_u64().unwrap_or(0) >= 1, "{joined}");
    }

    let last = others.last_mut().expect("last");
    last.send(&format!("/lookup {first_address}"));
    let lookup = last.wait_event("lookup");
    assert_eq!(lookup["target"], first_address.as_str());
    let closest = lookup["closest"].as_array().expect("closest");
    assert_eq!(closest[0]["address"], first_address.as_str(), "{lookup}");
    assert_eq!(closest[0]["addr"], first_listen.as_str());
    assert!(closest.len() >= 3, "all other nodes found: {lookup}");

    last.send("/peers");
    let peers = last.wait_event("peers");
    assert_eq!(peers["contacts"].as_array().map(Vec::len), Some(3));

    // A typing mistake gets an error line, not silence.
    last.send("/lookup not-an-address");
    let error = last.wait_event("error");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));

    for p in others.iter_mut().chain(std::iter::once(&mut first)) {
        p.send("/quit");
        assert!(p.wait_exit().success());
    }
}

#[test]
fn a_silent_bootstrap_is_reported_and_the_node_keeps_running() {
    // A bound socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr").to_string();

    let mut json = Proc::start(&["--json", "silent-json", "127.0.0.1:0", &silent_addr]);
    json.wait_event("ready");
    let failed = json.wait_event("bootstrap_failed");
    assert_eq!(failed["addrs"][0], silent_addr.as_str());
    assert_eq!(failed["tries"], 2);

    // The same in words, with stdin piped but without --json.
    let mut text = Proc::start(&["silent-text", "127.0.0.1:0", &silent_addr]);
    let line = text.wait_line("bootstrap message", |l| l.starts_with("bootstrap "));
    assert_eq!(
        line,
        format!(
            "bootstrap {silent_addr} did not answer after 2 tries; running alone, will retry in 15s"
        )
    );

    // End of input does not stop the node; /quit is no longer possible, a
    // signal is.
    json.stdin = None;
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        json.child.try_wait().expect("wait").is_none(),
        "exited on EOF"
    );
    let pid = json.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(killed.is_ok_and(|s| s.success()));
    assert!(json.wait_exit().success());
    json.wait_event("stopped");
}

#[test]
fn bad_arguments_give_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_comm"))
        .args(["secret", "not-an-address"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LISTEN"), "{err}");
}

#[test]
fn a_message_survives_sender_quitting_and_relay_crashing() {
    let dirs = tempfile::tempdir().expect("temp dir");
    let data = |name: &str| dirs.path().join(name).to_string_lossy().to_string();
    let b_listen = format!("127.0.0.1:{}", free_port());
    // C has never run: A's user has its public key (as from a contact
    // card), which is what lets A seal to it.
    let c = comm::Identity::from_secret("relay-test-c").expect("identity");
    let c_key = hex::encode(c.public_key().as_bytes());
    let c_address = c.address().to_string();

    // B is the relay everyone joins through; A joins and sends to C, who
    // has never run.
    let mut b = Proc::start_raw(&[
        "--json",
        "--data-dir",
        &data("b"),
        "relay-test-b",
        &b_listen,
    ]);
    b.wait_event("ready");
    let mut a = Proc::start_raw(&[
        "--json",
        "--data-dir",
        &data("a"),
        "relay-test-a",
        "127.0.0.1:0",
        &b_listen,
    ]);
    let a_address = a.wait_event("ready")["address"]
        .as_str()
        .expect("address")
        .to_string();
    a.wait_event("joined");
    a.send(&format!("{c_key} hello C, from A"));
    let sent = a.wait_event("sent");
    let id = sent["id"].as_str().expect("id").to_string();
    assert!(sent["relays"].as_u64().unwrap_or(0) >= 1, "{sent}");
    // Sent with the key given: no draft, so the wire id is the user's id.
    assert_eq!(sent["wire_id"], id.as_str(), "{sent}");

    // A quits; B dies without warning and comes back on the same port.
    a.send("/quit");
    assert!(a.wait_exit().success());
    b.child.kill().expect("SIGKILL");
    b.child.wait().expect("reaped");
    let mut b = Proc::start_raw(&[
        "--json",
        "--data-dir",
        &data("b"),
        "relay-test-b",
        &b_listen,
    ]);
    b.wait_event("ready");

    // C starts for the first time and gets the message from B.
    let mut c = Proc::start_raw(&[
        "--json",
        "--data-dir",
        &data("c"),
        "relay-test-c",
        "127.0.0.1:0",
        &b_listen,
    ]);
    let message = c.wait_event("message");
    assert_eq!(message["text"], "hello C, from A");
    assert_eq!(message["from"], a_address.as_str());
    assert_eq!(message["id"], id.as_str());

    // A comes back (no bootstrap argument: it rejoins through its saved
    // contacts) and learns that C got it.
    let mut a = Proc::start_raw(&[
        "--json",
        "--data-dir",
        &data("a"),
        "relay-test-a",
        "127.0.0.1:0",
    ]);
    let delivered = a.wait_event("delivered");
    assert_eq!(delivered["id"], id.as_str());
    assert_eq!(delivered["to"], c_address.as_str());

    // The relay holds nothing any more.
    let end = Instant::now() + DEADLINE;
    loop {
        b.send("/stats");
        let stats = b.wait_event("stats");
        if stats["held_messages"] == 0 {
            break;
        }
        assert!(Instant::now() < end, "B still holds: {stats}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for p in [&mut a, &mut b, &mut c] {
        p.send("/quit");
        assert!(p.wait_exit().success());
    }
}

#[test]
fn a_burst_of_1000_messages_is_delivered_exactly_once() {
    const N: usize = 1000;
    let mut b = Proc::start(&["--json", "burst-b", "127.0.0.1:0"]);
    let ready = b.wait_event("ready");
    // Sent by key, so each is sealed at once and keeps one id end to end.
    let b_key = ready["key"].as_str().expect("key").to_string();
    let b_listen = ready["listen"].as_str().expect("listen").to_string();
    let mut a = Proc::start(&["--json", "burst-a", "127.0.0.1:0", &b_listen]);
    a.wait_event("joined");
    for i in 0..N {
        a.send(&format!("{b_key} burst {i}"));
    }
    let mut seen = std::collections::HashSet::new();
    let mut texts = std::collections::HashSet::new();
    while seen.len() < N {
        let m = b.wait_event("message");
        let id = m["id"].as_str().expect("id").to_string();
        assert!(seen.insert(id), "shown twice: {m}");
        assert!(texts.insert(m["text"].as_str().expect("text").to_string()));
    }
    let mut delivered = std::collections::HashSet::new();
    while delivered.len() < N {
        let d = a.wait_event("delivered");
        assert!(delivered.insert(d["id"].as_str().expect("id").to_string()));
    }
    assert_eq!(delivered, seen);
    for i in 0..N {
        assert!(texts.contains(&format!("burst {i}")));
    }
    // Nothing more arrives: ask for stats and check no message came first.
    std::thread::sleep(Duration::from_millis(500));
    b.send("/stats");
    let line = b.wait_line("stats", |l| {
        l.contains("\"stats\"") || l.contains("\"message\"")
    });
    assert!(line.contains("\"stats\""), "a duplicate arrived: {line}");
    for p in [&mut a, &mut b] {
        p.send("/quit");
        assert!(p.wait_exit().success());
    }
}

/// Every `message` event `p` prints until its output ends, by id.
fn drain_messages(p: &mut Proc, counts: &mut std::collections::HashMap<String, usize>) {
    let end = Instant::now() + DEADLINE;
    while let Ok(line) = p
        .lines
        .recv_timeout(end.saturating_duration_since(Instant::now()))
    {
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if v["event"] == "message" {
                *counts
                    .entry(v["id"].as_str().unwrap_or("").to_string())
                    .or_insert(0) += 1;
            }
        }
    }
}

#[test]
fn a_recipient_killed_after_its_first_message_shows_each_of_20_exactly_once() {
    const N: usize = 20;
    let dirs = tempfile::tempdir().expect("temp dir");
    let data = |name: &str| dirs.path().join(name).to_string_lossy().to_string();
    let mut relay = Proc::start(&["--json", "kill-relay", "127.0.0.1:0"]);
    let relay_listen = relay.wait_event("ready")["listen"]
        .as_str()
        .expect("listen")
        .to_string();
    let mut a = Proc::start(&["--json", "kill-sender", "127.0.0.1:0", &relay_listen]);
    a.wait_event("joined");
    let c_key = hex::encode(
        comm::Identity::from_secret("kill-recipient")
            .expect("identity")
            .public_key()
            .as_bytes(),
    );
    for i in 0..N {
        a.send(&format!("{c_key} waiting {i}"));
    }
    for _ in 0..N {
        a.wait_event("sent");
    }
    a.send("/quit");
    assert!(a.wait_exit().success());

    let c_args = |data: &str| {
        vec![
            "--json".to_string(),
            "--data-dir".into(),
            data.to_string(),
            "kill-recipient".into(),
            "127.0.0.1:0".into(),
            relay_listen.clone(),
        ]
    };
    let args = c_args(&data("c"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = Proc::start_raw(&args);
    let first = c.wait_event("message");
    // Killed the moment its first message is seen.
    c.child.kill().expect("SIGKILL");
    c.child.wait().expect("reaped");
    let mut counts = std::collections::HashMap::new();
    *counts
        .entry(first["id"].as_str().expect("id").to_string())
        .or_insert(0) += 1;
    drain_messages(&mut c, &mut counts);
    println!("shown before the kill: {} of {N}", counts.len());

    // Restarted, it shows whatever it had not shown, and the relay hands
    // over whatever it had not delivered; nothing twice.
    let mut c = Proc::start_raw(&args);
    let end = Instant::now() + DEADLINE;
    let mut lines = Vec::new();
    while counts.len() < N {
        let left = end.saturating_duration_since(Instant::now());
        let Ok(line) = c.lines.recv_timeout(left) else {
            relay.send("/stats");
            let r = relay.wait_event("stats");
            c.send("/stats");
            let cs = c.wait_event("stats");
            panic!(
                "only {} of {N} messages shown: {counts:?}\nrestarted: {lines:#?}\nrelay: {r}\nrecipient: {cs}",
                counts.len()
            );
        };
        lines.push(line.clone());
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if v["event"] == "message" {
                *counts
                    .entry(v["id"].as_str().unwrap_or("").to_string())
                    .or_insert(0) += 1;
            }
        }
    }
    // Anything shown twice would show up within a moment.
    std::thread::sleep(Duration::from_millis(500));
    c.send("/quit");
    assert!(c.wait_exit().success());
    drain_messages(&mut c, &mut counts);
    assert_eq!(counts.len(), N);
    assert!(
        counts.values().all(|n| *n == 1),
        "shown more than once: {counts:?}"
    );
    relay.send("/quit");
    assert!(relay.wait_exit().success());
}

#[test]
fn a_recipient_whose_output_is_not_read_loses_nothing_and_stays_bounded() {
    const N: usize = 1600;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_string_lossy().to_string();
    // b's output is read only up to its `ready` line, then left alone.
    let mut b = Command::new(env!("CARGO_BIN_EXE_comm"))
        .args(["--json", "--data-dir", &data, "stall-b", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start comm");
    let mut b_in = b.stdin.take().expect("stdin");
    let mut b_out = BufReader::new(b.stdout.take().expect("stdout"));
    let mut first = String::new();
    b_out.read_line(&mut first).expect("ready line");
    let ready: Value = serde_json::from_str(&first).expect("json");
    let b_address = ready["address"].as_str().expect("address").to_string();
    let b_listen = ready["listen"].as_str().expect("listen").to_string();

    // Two senders (each may have 1024 undelivered messages), together more
    // than the recipient keeps waiting to be shown (`max_unshown`, 1024).
    let mut senders: Vec<Proc> = ["stall-a", "stall-c"]
        .iter()
        .map(|s| Proc::start(&["--json", s, "127.0.0.1:0", &b_listen]))
        .collect();
    let text = "x".repeat(200);
    for (k, a) in senders.iter_mut().enumerate() {
        a.wait_event("joined");
        for i in 0..N / 2 {
            a.send(&format!("{b_address} {k}/{i} {text}"));
        }
    }
    for a in &mut senders {
        for _ in 0..N / 2 {
            a.wait_event("sent");
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let rss = rss_kib(b.id());
    // The front end takes nothing: at most `max_unshown` (1024) messages
    // wait in memory, the rest stay with the sender, answered busy.
    assert!(rss > 0 && rss < 64 * 1024, "RSS {rss} KiB");

    // Now the output is read again: every message comes, once.
    let mut seen = std::collections::HashSet::new();
    let mut line = String::new();
    while seen.len() < N {
        line.clear();
        match b_out.read_line(&mut line) {
            Ok(0) | Err(_) => panic!("output ended after {} of {N}", seen.len()),
            Ok(_) => {}
        }
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if v["event"] == "message" {
            assert!(
                seen.insert(v["id"].as_str().unwrap_or("").to_string()),
                "twice: {v}"
            );
        }
    }
    println!("stalled recipient: RSS {rss} KiB with {N} messages sent to it");
    writeln!(b_in, "/quit").expect("quit");
    drop(b_in);
    for a in &mut senders {
        a.send("/quit");
        assert!(a.wait_exit().success());
    }
    let end = Instant::now() + DEADLINE;
    while b.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < end, "b did not exit");
        // Keep draining so that b can write its last lines.
        line.clear();
        let _ = b_out.read_line(&mut line);
    }
}
