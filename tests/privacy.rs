//! End-to-end encryption as a user meets it, with real processes on
//! loopback: relays store only sealed bodies, a recipient known only by its
//! address is found through its identity record (also after it went
//! offline), and a message to an address nobody has a record for waits,
//! queued, until its owner appears.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Proc;
use serde_json::Value;

/// Every file under `dir`, read whole.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn field(v: &Value, name: &str) -> String {
    v[name].as_str().expect(name).to_string()
}

/// Start a node with its own data directory under `root`.
fn node(root: &Path, name: &str, extra: &[&str]) -> Proc {
    let data = root.join(name).to_string_lossy().to_string();
    let mut args = vec!["--json", "--data-dir", &data];
    let secret = format!("privacy-{name}");
    args.push(&secret);
    args.push("127.0.0.1:0");
    args.extend_from_slice(extra);
    Proc::start_raw(&args)
}

#[test]
fn a_relay_stores_no_plaintext() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut relay = node(root.path(), "relay", &[]);
    let via = field(&relay.wait_event("ready"), "listen");
    let mut a = node(root.path(), "a", &[&via]);
    a.wait_event("joined");
    // The recipient has never run; A's user has its key.
    let c = comm::Identity::from_secret("privacy-never-runs").expect("identity");
    let marker = format!("MARKER-{:016x}", rand::random::<u64>());
    a.send(&format!(
        "{} {marker}",
        hex::encode(c.public_key().as_bytes())
    ));
    let sent = a.wait_event("sent");
    assert!(sent["relays"].as_u64().unwrap_or(0) >= 1, "{sent}");
    relay.send("/stats");
    let held = relay.wait_event("stats")["held_messages"]
        .as_u64()
        .unwrap_or(0);
    assert!(held >= 1, "the relay holds the message");
    for p in [&mut relay, &mut a] {
        p.send("/quit");
        assert!(p.wait_exit().success());
    }
    let stored = files(&root.path().join("relay"));
    assert!(!stored.is_empty());
    for (path, bytes) in &stored {
        assert!(
            !contains(bytes, marker.as_bytes()),
            "{path} holds the plaintext"
        );
    }
    // The sender's own disk holds only the sealed message too.
    for (path, bytes) in files(&root.path().join("a")) {
        assert!(
            !contains(&bytes, marker.as_bytes()),
            "{path} holds the plaintext"
        );
    }
}

#[test]
fn an_address_is_enough_once_its_owner_has_been_online() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut relay = node(root.path(), "relay", &[]);
    let via = field(&relay.wait_event("ready"), "listen");
    // C joins (publishing its identity record) and leaves.
    let mut c = node(root.path(), "c", &[&via]);
    let c_address = field(&c.wait_event("ready"), "address");
    c.wait_event("joined");
    std::thread::sleep(Duration::from_millis(300));
    c.send("/quit");
    assert!(c.wait_exit().success());
    // A never met C; it has only the address.
    let mut a = node(root.path(), "a", &[&via]);
    a.wait_event("joined");
    a.send(&format!("{c_address} found you"));
    let sent = a.wait_event("sent");
    assert!(
        !a.seen.iter().any(|l| l.contains("key_not_found")),
        "the record was found: {:?}",
        a.seen
    );
    // C comes back and reads it.
    let mut c = node(root.path(), "c", &[&via]);
    let m = c.wait_event("message");
    assert_eq!(m["text"], "found you");
    let delivered = a.wait_event("delivered");
    assert_eq!(delivered["id"], sent["id"]);
    for p in [&mut a, &mut c, &mut relay] {
        p.send("/quit");
        assert!(p.wait_exit().success());
    }
}

#[test]
fn a_message_to_an_unknown_address_waits_until_its_owner_appears() {
    let root = tempfile::tempdir().expect("temp dir");
    let fast = ["--set", "refresh_check_secs=1", "--set", "key_retry_secs=1"];
    let mut relay = node(root.path(), "relay", &fast);
    let via = field(&relay.wait_event("ready"), "listen");
    let mut args = fast.to_vec();
    args.push(&via);
    let mut a = node(root.path(), "a", &args);
    a.wait_event("joined");
    let c_address = comm::Identity::from_secret("privacy-late")
        .expect("identity")
        .address()
        .to_string();
    a.send(&format!("{c_address} are you there?"));
    let queued = a.wait_event("queued");
    assert_eq!(queued["to"], c_address.as_str());
    let missing = a.wait_event("key_not_found");
    assert_eq!(missing["queued"], 1);
    // Its owner appears, publishes its record; A's next try finds it.
    let mut c = node(root.path(), "late", &[&via]);
    c.wait_event("joined");
    let m = c.wait_event("message");
    assert_eq!(m["text"], "are you there?");
    let delivered = a.wait_event("delivered");
    assert_eq!(delivered["id"], queued["id"], "known by its first id");
    for p in [&mut a, &mut c, &mut relay] {
        p.send("/quit");
        assert!(p.wait_exit().success());
    }
}
