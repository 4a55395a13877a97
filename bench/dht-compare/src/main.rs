//! dht-compare: comm and the BitTorrent Mainline DHT side by side, each one
//! node on loopback answering a flood of FIND_NODE requests, measured in
//! replies per CPU-second of that node's process (utime + stime from
//! /proc/PID/stat, not wall time).
//!
//! ```text
//! cargo build --release
//! cargo run --release -p dht-compare -- --comm target/release/comm [--comm OTHER_COMM]...
//!     [--comm-bench target/release/comm-bench] [--seconds 10] [--senders 1] [--window 64]
//! ```
//!
//! comm's rows come from `comm-bench findnode --json` (run once per
//! `--comm` binary, with `COMM_BIN` set). Mainline's row: this program
//! starts itself again as `dht-compare serve-mainline`, a process running
//! one `mainline::Dht` in server mode on 127.0.0.1, so that /proc counts
//! its CPU alone. Its routing table is filled the way a mainline node fills
//! it in a real network, from the answers to its own lookups: 160 small
//! KRPC responders here (one socket each, ids chosen so that 8 buckets of
//! 20 fill up) answer `ping` and `find_node`; the node bootstraps through
//! one of them and then looks up one target in each of those 8 buckets.
//! Then a few sockets keep a window of BEP 5 `find_node` queries (bencoded
//! by hand) in flight for a fixed time, exactly as comm-bench does for comm.
//!
//! The two protocols answer differently: comm sends the k = 8 closest
//! contacts (protobuf), mainline the 20 closest (bencode, 26 bytes each).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The same flood comm-bench uses, from its source.
#[path = "../../../src/bin/comm-bench/flood.rs"]
mod flood;
use flood::Row;

use flood::{flood, Counts};

type Res<T> = Result<T, String>;

/// Mainline's bucket size, and so the contacts per bucket we fill.
const MAINLINE_K: usize = 20;

/// Buckets of the mainline node's table we fill.
const MAINLINE_BUCKETS: usize = 8;

/// A small deterministic generator for ids and targets (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn id(&mut self) -> [u8; 20] {
        let mut out = [0u8; 20];
        for chunk in out.chunks_mut(8) {
            let v = self.next().to_be_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        out
    }
}

// ---- KRPC (BEP 5), bencoded by hand --------------------------------------

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

/// A `find_node` query. Mainline wants 4-byte transaction ids.
fn find_node(id: &[u8; 20], target: &[u8; 20], tid: [u8; 4]) -> Vec<u8> {
    let mut m = b"d1:ad2:id".to_vec();
    bytes(&mut m, id);
    m.extend_from_slice(b"6:target");
    bytes(&mut m, target);
    m.extend_from_slice(b"e1:q9:find_node1:t");
    bytes(&mut m, &tid);
    m.extend_from_slice(b"1:y1:qe");
    m
}

/// A response with our `id` and, for `find_node`, compact `nodes`.
fn response(id: &[u8; 20], nodes: Option<&[u8]>, tid: &[u8]) -> Vec<u8> {
    let mut m = b"d1:rd2:id".to_vec();
    bytes(&mut m, id);
    if let Some(nodes) = nodes {
        m.extend_from_slice(b"5:nodes");
        bytes(&mut m, nodes);
    }
    m.extend_from_slice(b"e1:t");
    bytes(&mut m, tid);
    m.extend_from_slice(b"1:y1:re");
    m
}

/// The bencoded byte string that follows `key` in `msg`, if any.
fn field<'a>(msg: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = msg.windows(key.len()).position(|w| w == key)? + key.len();
    let colon = at + msg[at..].iter().position(|&b| b == b':')?;
    let len: usize = std::str::from_utf8(&msg[at..colon]).ok()?.parse().ok()?;
    msg.get(colon + 1..colon + 1 + len)
}

fn compact(id: &[u8; 20], addr: SocketAddrV4) -> [u8; 26] {
    let mut c = [0u8; 26];
    c[..20].copy_from_slice(id);
    c[20..24].copy_from_slice(&addr.ip().octets());
    c[24..].copy_from_slice(&addr.port().to_be_bytes());
    c
}

fn xor(a: &[u8; 20], b: &[u8; 20]) -> [u8; 20] {
    let mut d = [0u8; 20];
    for i in 0..20 {
        d[i] = a[i] ^ b[i];
    }
    d
}

/// An id whose XOR distance from `node` has its highest bit at `lead`
/// leading zeros (mainline's bucket `160 - lead`).
fn id_in_bucket(node: &[u8; 20], lead: usize, rng: &mut Rng) -> [u8; 20] {
    let mut d = rng.id();
    for (i, byte) in d.iter_mut().enumerate() {
        let (lo, hi) = (i * 8, i * 8 + 8);
        if hi <= lead {
            *byte = 0;
        } else if lo <= lead {
            let bit = lead - lo;
            *byte = (*byte & (0xffu8 >> bit)) | (0x80u8 >> bit);
        }
    }
    xor(node, &d)
}

/// The responders' ids and endpoints, given out once the node's id is known.
type Book = Arc<Mutex<Vec<([u8; 20], SocketAddrV4)>>>;

/// The responders that fill the mainline node's table: each answers
/// `ping` and `find_node` (with the 20 responders closest to the target,
/// as mainline answers)
/// until `stop`.
struct Fillers {
    stop: Arc<AtomicBool>,
    ids: Book,
    threads: Vec<std::thread::JoinHandle<()>>,
    addrs: Vec<SocketAddrV4>,
}

impl Fillers {
    fn start(n: usize) -> Res<Fillers> {
        let stop = Arc::new(AtomicBool::new(false));
        let ids: Book = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        let mut addrs = Vec::new();
        for i in 0..n {
            let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_millis(50)))
                .map_err(|e| e.to_string())?;
            let addr = match s.local_addr().map_err(|e| e.to_string())? {
                SocketAddr::V4(a) => a,
                SocketAddr::V6(_) => return Err("bound IPv6".into()),
            };
            addrs.push(addr);
            let (stop, ids) = (stop.clone(), ids.clone());
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((len, from)) = s.recv_from(&mut buf) else {
                        continue;
                    };
                    let msg = &buf[..len];
                    let Some(tid) = field(msg, b"1:t") else {
                        continue;
                    };
                    // Ids are given out once the node says its own.
                    let all = loop {
                        let all = ids.lock().map(|g| g.clone()).unwrap_or_default();
                        if !all.is_empty() || stop.load(Ordering::Relaxed) {
                            break all;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    };
                    let Some(&(me, _)) = all.get(i) else {
                        continue;
                    };
                    let reply = if msg.windows(6).any(|w| w == b"4:ping") {
                        response(&me, None, tid)
                    } else if let Some(target) = field(msg, b"6:target") {
                        let Ok(target) = <[u8; 20]>::try_from(target) else {
                            continue;
                        };
                        let mut near = all.clone();
                        near.sort_by_key(|(id, _)| xor(id, &target));
                        let nodes: Vec<u8> = near
                            .iter()
                            .take(MAINLINE_K)
                            .flat_map(|(id, a)| compact(id, *a))
                            .collect();
                        response(&me, Some(&nodes), tid)
                    } else {
                        continue;
                    };
                    let _ = s.send_to(&reply, from);
                }
            }));
        }
        Ok(Fillers {
            stop,
            ids,
            threads,
            addrs,
        })
    }
}

impl Drop for Fillers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The child process: one mainline node in server mode on 127.0.0.1,
/// bootstrapping through `bootstrap`. Prints `ready ID PORT`, then answers
/// stdin lines: `size` (routing-table entries), `lookup HEX` (a blocking
/// find_node lookup), anything else or end of input stops it. (mainline 8
/// marks its blocking API deprecated in favour of the async one; a
/// blocking call is all this needs.)
#[allow(deprecated)]
fn serve_mainline(bootstrap: &str) -> Res<()> {
    let dht = mainline::Dht::builder()
        .server_mode()
        .bootstrap(&[bootstrap])
        .bind_address(std::net::Ipv4Addr::LOCALHOST)
        .port(0)
        .build()
        .map_err(|e| e.to_string())?;
    let info = dht.info();
    let mut out = std::io::stdout();
    writeln!(out, "ready {} {}", info.id(), info.local_addr().port()).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("size"), _) => writeln!(out, "{}", dht.to_bootstrap().len()),
            (Some("lookup"), Some(hex)) => {
                let target = mainline::Id::from_str(hex).map_err(|e| e.to_string())?;
                let found = dht.find_node(target);
                writeln!(out, "{}", found.len())
            }
            _ => break,
        }
        .map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 20]> {
    let mut out = [0u8; 20];
    if s.len() != 40 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Measure a mainline node as described at the top.
fn mainline_row(seconds: f64, senders: usize, window: usize) -> Res<Row> {
    let fillers = Fillers::start(MAINLINE_K * MAINLINE_BUCKETS)?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["serve-mainline", &fillers.addrs[0].to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start serve-mainline: {e}"))?;
    let pid = child.id();
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let mut read = || -> Res<String> {
        lines
            .next()
            .ok_or("serve-mainline stopped")?
            .map_err(|e| e.to_string())
    };
    let ready = read()?;
    let words: Vec<&str> = ready.split_whitespace().collect();
    let (node, port) = match words.as_slice() {
        ["ready", id, port] => (
            unhex(id).ok_or("bad id")?,
            port.parse::<u16>().map_err(|e| e.to_string())?,
        ),
        _ => return Err(format!("serve-mainline said {ready:?}")),
    };
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    // Ids for the responders: 20 in each of the 8 farthest buckets.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let assigned: Vec<([u8; 20], SocketAddrV4)> = fillers
        .addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (id_in_bucket(&node, i / MAINLINE_K, &mut rng), *a))
        .collect();
    if let Ok(mut ids) = fillers.ids.lock() {
        *ids = assigned;
    }
    // One lookup into each filled bucket: its 20 responders answer and are
    // added, as a lookup adds every node that answers it.
    for b in 0..MAINLINE_BUCKETS {
        let target = id_in_bucket(&node, b, &mut rng);
        writeln!(stdin, "lookup {}", hex(&target)).map_err(|e| e.to_string())?;
        stdin.flush().map_err(|e| e.to_string())?;
        read()?;
    }
    writeln!(stdin, "size").map_err(|e| e.to_string())?;
    stdin.flush().map_err(|e| e.to_string())?;
    let contacts: u64 = read()?.trim().parse().map_err(|_| "bad size")?;
    eprintln!("mainline: routing table holds {contacts} nodes");
    if contacts < 100 {
        return Err(format!("only {contacts} nodes in mainline's table"));
    }

    let sockets: Vec<UdpSocket> = (0..senders)
        .map(|_| UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string()))
        .collect::<Res<_>>()?;
    let work: Vec<Vec<Vec<u8>>> = (0..senders)
        .map(|_| {
            let me = rng.id();
            (0..1024u32)
                .map(|t| find_node(&me, &rng.id(), t.to_be_bytes()))
                .collect()
        })
        .collect();
    let cpu0 = flood::cpu_seconds(pid)?;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let drain = Duration::from_millis(200);
    let counts: Vec<Counts> = std::thread::scope(|s| {
        let handles: Vec<_> = sockets
            .iter()
            .zip(&work)
            .map(|(socket, packets)| {
                s.spawn(move || flood(socket, to, packets, window, end, drain, &|_| None))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let cpu = flood::cpu_seconds(pid)? - cpu0;
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    drop(fillers);
    Ok(Row {
        name: "mainline 8.0.1 (20 nodes per reply)".into(),
        contacts,
        sent: counts.iter().map(|c| c.sent).sum(),
        replies: counts.iter().map(|c| c.replies).sum(),
        cpu,
        wall,
    })
}

/// comm's row, from `comm-bench findnode --json` against `comm`.
fn comm_row(
    bench: &PathBuf,
    comm: &PathBuf,
    seconds: f64,
    senders: usize,
    window: usize,
) -> Res<Row> {
    let out = Command::new(bench)
        .args([
            "findnode",
            "--json",
            "--seconds",
            &seconds.to_string(),
            "--senders",
            &senders.to_string(),
            "--window",
            &window.to_string(),
        ])
        .env("COMM_BIN", comm)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{}: {e}", bench.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed", bench.display()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim()).map_err(|e| e.to_string())?;
    let num = |k: &str| v[k].as_f64().unwrap_or(0.0);
    Ok(Row {
        name: format!("comm ({})", comm.display()),
        contacts: num("contacts") as u64,
        sent: num("sent") as u64,
        replies: num("replies") as u64,
        cpu: num("cpu_s"),
        wall: num("wall_s"),
    })
}

fn run(args: &[String]) -> Res<()> {
    if args.first().map(String::as_str) == Some("serve-mainline") {
        return serve_mainline(args.get(1).ok_or("serve-mainline BOOTSTRAP")?);
    }
    let value = |name: &str| -> Vec<String> {
        args.windows(2)
            .filter(|w| w[0] == name)
            .map(|w| w[1].clone())
            .collect()
    };
    let number = |name: &str, default: f64| -> Res<f64> {
        match value(name).last() {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("{name} {v:?} is not a number")),
        }
    };
    let seconds = number("--seconds", 10.0)?;
    let senders = number("--senders", 1.0)? as usize;
    let window = number("--window", 64.0)? as usize;
    let comms: Vec<PathBuf> = value("--comm").into_iter().map(PathBuf::from).collect();
    let bench = value("--comm-bench")
        .last()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/comm-bench"));
    let mut rows = Vec::new();
    for comm in &comms {
        rows.push(comm_row(&bench, comm, seconds, senders, window)?);
    }
    rows.push(mainline_row(seconds, senders, window)?);
    println!(
        "FIND_NODE flood on loopback, {seconds} s, {senders} senders x {window} in flight each"
    );
    println!("{}", Row::header());
    for r in &rows {
        println!("{}", r.line());
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("dht-compare: {e}");
        std::process::exit(1);
    }
}
