//! Starting the real binary: where the secret comes from, a data directory
//! that refuses another identity, and a dual-stack `[::]` node talking to
//! an IPv4 one. Loopback only; every wait has a deadline.

mod common;

use std::process::{Command, Stdio};

use common::{free_port, Proc};

fn address_of(secret: &str) -> String {
    comm::Identity::from_secret(secret)
        .expect("identity")
        .address()
        .to_string()
}

#[test]
fn the_secret_can_come_from_the_environment_or_stdin() {
    let want = address_of("startup-secret");

    // COMM_SECRET, with no SECRET argument.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_comm"));
    cmd.args(["--json", "--data-dir"])
        .arg(dir.path())
        .arg(format!("127.0.0.1:{}", free_port()))
        .env("COMM_SECRET", "startup-secret");
    let mut p = Proc::spawn(cmd);
    assert_eq!(p.wait_event("ready")["address"], want.as_str());
    p.send("/quit");
    assert!(p.wait_exit().success());

    // `-`: read from stdin when it is not a terminal (a terminal gets a
    // prompt that does not echo).
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_comm"));
    cmd.args(["--json", "--data-dir"])
        .arg(dir.path())
        .args(["-", &format!("127.0.0.1:{}", free_port())])
        .env_remove("COMM_SECRET");
    let mut p = Proc::spawn(cmd);
    p.send("startup-secret");
    assert_eq!(p.wait_event("ready")["address"], want.as_str());
    p.send("/quit");
    assert!(p.wait_exit().success());

    // Neither: a clear error.
    let out = Command::new(env!("CARGO_BIN_EXE_comm"))
        .arg("127.0.0.1:0")
        .env_remove("COMM_SECRET")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing SECRET"), "{err}");
}

#[test]
fn a_data_directory_refuses_another_identity() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_string_lossy().to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut a = Proc::start_raw(&["--json", "--data-dir", &data, "owner-secret", &listen]);
    a.wait_event("ready");
    a.send("/quit");
    a.wait_event("stopped");
    assert!(a.wait_exit().success());

    // A typo in the secret is another identity: refused, nothing touched.
    let before = std::fs::read(dir.path().join("comm.redb")).expect("db");
    let out = Command::new(env!("CARGO_BIN_EXE_comm"))
        .args(["--json", "--data-dir", &data, "owner-secert", &listen])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "belongs to identity {}",
            address_of("owner-secret")
        )),
        "{err}"
    );
    assert!(err.contains("mistyped secret"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("comm.redb")).expect("db"),
        before
    );

    // The right secret still starts.
    let mut a = Proc::start_raw(&["--json", "--data-dir", &data, "owner-secret", &listen]);
    a.wait_event("ready");
}

#[test]
fn a_dual_stack_node_answers_ipv4_peers() {
    let port = free_port();
    let any6 = format!("[::]:{port}");
    let Ok(probe) = std::net::UdpSocket::bind(&any6) else {
        eprintln!("no IPv6 on this machine: skipped");
        return;
    };
    drop(probe);
    let mut a = Proc::start(&["--json", "dual-stack-a", &any6]);
    let a_addr = a.wait_event("ready")["address"]
        .as_str()
        .expect("address")
        .to_string();
    let b_listen = format!("127.0.0.1:{}", free_port());
    let mut b = Proc::start(&[
        "--json",
        "dual-stack-b",
        &b_listen,
        &format!("127.0.0.1:{port}"),
    ]);
    let b_addr = b.wait_event("ready")["address"]
        .as_str()
        .expect("address")
        .to_string();
    b.wait_event("joined");
    b.send(&format!("{a_addr} over ipv4 to a dual-stack socket"));
    assert_eq!(
        a.wait_event("message")["text"],
        "over ipv4 to a dual-stack socket"
    );
    // A's ack and answer go from its IPv6 socket to B's IPv4 endpoint.
    assert_eq!(b.wait_event("delivered")["to"], a_addr.as_str());
    a.send(&format!("{b_addr} and back"));
    assert_eq!(b.wait_event("message")["text"], "and back");
}
