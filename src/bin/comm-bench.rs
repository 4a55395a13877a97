//! comm-bench: measures real `comm` processes on loopback, as a user runs
//! them, and prints the figures BENCHMARKS.md keeps.
//!
//! ```text
//! cargo build --release
//! target/release/comm-bench burst     [--messages 1000] [--data-root DIR]
//! target/release/comm-bench comeback  [--messages 1000] [--data-root DIR]
//! target/release/comm-bench network   [--nodes 100] [--lookups 100] [--kill 30] [--data-root DIR]
//! target/release/comm-bench findnode  [--contacts 150] [--seconds 10] [--senders 1] [--window 64]
//!                                     [--threads 2] [--grind-secs 120] [--json] [--data-root DIR]
//! ```
//!
//! `findnode` floods one node with `FindNode` requests and reports replies
//! per CPU-second of that node (see `findnode.rs`).
//!
//! Every process is `comm --json` with its own data directory under
//! `--data-root` (default: a temporary directory on the machine's disk; give
//! a tmpfs path such as /dev/shm to take the disk out). The `comm` binary is
//! the one next to this one, or `$COMM_BIN`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

#[path = "comm-bench/findnode.rs"]
mod findnode;
#[path = "comm-bench/flood.rs"]
mod flood;

type Res<T> = Result<T, String>;

/// A line a child printed, with when it was read.
struct Line {
    proc: usize,
    at: Instant,
    value: Value,
}

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    address: String,
    listen: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// All running processes and the lines they print.
struct Net {
    bin: PathBuf,
    root: PathBuf,
    procs: Vec<Proc>,
    lines: mpsc::Receiver<Line>,
    tx: mpsc::Sender<Line>,
    /// Lines read while waiting for something else, per process.
    seen: Vec<Vec<Line>>,
}

impl Drop for Net {
    fn drop(&mut self) {
        self.procs.clear();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Net {
    fn new(data_root: Option<PathBuf>) -> Res<Net> {
        let bin = match std::env::var_os("COMM_BIN") {
            Some(b) => PathBuf::from(b),
            None => std::env::current_exe()
                .map_err(|e| e.to_string())?
                .with_file_name("comm"),
        };
        if !bin.exists() {
            return Err(format!(
                "{} not found: run `cargo build --release` first or set COMM_BIN",
                bin.display()
            ));
        }
        let base = data_root.unwrap_or_else(std::env::temp_dir);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let root = base.join(format!("comm-bench-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        let (tx, lines) = mpsc::channel();
        Ok(Net {
            bin,
            root,
            procs: Vec::new(),
            lines,
            tx,
            seen: Vec::new(),
        })
    }

    /// Start `comm --json` with a key file named `name` (so no Argon2 at
    /// start) on a free loopback port, joining through `bootstrap`.
    fn start(&mut self, name: &str, bootstrap: &[String]) -> Res<usize> {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let key = dir.join("key");
        let data = dir.join("data");
        let mut args: Vec<String> = vec![
            "--json".into(),
            "--data-dir".into(),
            data.to_string_lossy().into(),
            "--key-file".into(),
            key.to_string_lossy().into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(bootstrap.iter().cloned());
        let mut child = Command::new(&self.bin)
            .args(&args)
            .env("RUST_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.bin.display()))?;
        let i = self.procs.len();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let at = Instant::now();
                if let Ok(value) = serde_json::from_str(&line) {
                    if tx.send(Line { proc: i, at, value }).is_err() {
                        break;
                    }
                }
            }
        });
        let p = Proc {
            stdin: child.stdin.take(),
            child,
            address: String::new(),
            listen: String::new(),
        };
        self.procs.push(p);
        self.seen.push(Vec::new());
        let ready = self.wait(i, "ready", Duration::from_secs(30))?;
        self.procs[i].address = ready.value["address"].as_str().unwrap_or("").into();
        self.procs[i].listen = ready.value["listen"].as_str().unwrap_or("").into();
        Ok(i)
    }

    fn send(&mut self, i: usize, line: &str) -> Res<()> {
        let stdin = self.procs[i].stdin.as_mut().ok_or("stdin closed")?;
        writeln!(stdin, "{line}").map_err(|e| e.to_string())
    }

    fn flush(&mut self, i: usize) -> Res<()> {
        let stdin = self.procs[i].stdin.as_mut().ok_or("stdin closed")?;
        stdin.flush().map_err(|e| e.to_string())
    }

    /// The next event `event` from process `i` (earlier ones read while
    /// waiting for something else count).
    fn wait(&mut self, i: usize, event: &str, limit: Duration) -> Res<Line> {
        if let Some(pos) = self.seen[i].iter().position(|l| l.value["event"] == event) {
            return Ok(self.seen[i].remove(pos));
        }
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .map_err(|_| format!("process {i}: no {event} within {limit:?}"))?;
            if line.proc == i && line.value["event"] == event {
                return Ok(line);
            }
            let p = line.proc;
            if p < self.seen.len() {
                self.seen[p].push(line);
            }
        }
    }

    /// Ask process `i` for its counters.
    fn stats(&mut self, i: usize) -> Res<Value> {
        self.send(i, "/stats")?;
        self.flush(i)?;
        Ok(self.wait(i, "stats", Duration::from_secs(30))?.value)
    }

    fn kill(&mut self, i: usize) {
        let _ = self.procs[i].child.kill();
        let _ = self.procs[i].child.wait();
        self.procs[i].stdin = None;
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// One online node sends `n` messages to another as fast as it reads them.
fn burst(n: usize, root: Option<PathBuf>) -> Res<()> {
    let mut net = Net::new(root)?;
    let b = net.start("b", &[])?;
    let via = vec![net.procs[b].listen.clone()];
    let a = net.start("a", &via)?;
    net.wait(a, "joined", Duration::from_secs(30))?;
    let to = net.procs[b].address.clone();
    let start = Instant::now();
    for i in 0..n {
        net.send(a, &format!("{to} burst message {i}"))?;
    }
    net.flush(a)?;
    let mut shown = BTreeSet::new();
    let mut delivered = BTreeSet::new();
    let (mut last_shown, mut last_delivered) = (start, start);
    let end = start + Duration::from_secs(120);
    while shown.len() < n || delivered.len() < n {
        let left = end.saturating_duration_since(Instant::now());
        let line = net.lines.recv_timeout(left).map_err(|_| {
            format!(
                "timed out: {} shown, {} delivered of {n}",
                shown.len(),
                delivered.len()
            )
        })?;
        let id = line.value["id"].as_str().unwrap_or("").to_string();
        match (line.proc, line.value["event"].as_str()) {
            (p, Some("message")) if p == b => {
                if !shown.insert(id) {
                    return Err("a message was shown twice".into());
                }
                last_shown = line.at;
            }
            (p, Some("delivered")) if p == a => {
                delivered.insert(id);
                last_delivered = line.at;
            }
            _ => {}
        }
    }
    let (ts, td) = (last_shown - start, last_delivered - start);
    println!(
        "burst: {n} messages from one online node to another: all shown in {:.3} s ({:.0} msg/s), all reported delivered in {:.3} s ({:.0} msg/s)",
        ts.as_secs_f64(),
        rate(n, ts),
        td.as_secs_f64(),
        rate(n, td)
    );
    let s = net.stats(b)?;
    println!(
        "  recipient: {} write batches for {n} messages, {} datagrams in",
        s["write_batches"], s["datagrams_in"]
    );
    Ok(())
}

/// A recipient comes back to `n` messages held for it by a relay.
fn comeback(n: usize, root: Option<PathBuf>) -> Res<()> {
    let mut net = Net::new(root)?;
    let r = net.start("relay", &[])?;
    let via = vec![net.procs[r].listen.clone()];
    let a = net.start("sender", &via)?;
    net.wait(a, "joined", Duration::from_secs(30))?;
    // The recipient's identity exists (its key file) but it has never run;
    // the sender's user has its public key.
    let c_dir = net.root.join("recipient");
    std::fs::create_dir_all(&c_dir).map_err(|e| e.to_string())?;
    let c_key = comm::Identity::from_key_file(&c_dir.join("key")).map_err(|e| e.to_string())?;
    let to = hex::encode(c_key.public_key().as_bytes());
    for i in 0..n {
        net.send(a, &format!("{to} while you were away {i}"))?;
    }
    net.flush(a)?;
    for _ in 0..n {
        net.wait(a, "sent", Duration::from_secs(120))?;
    }
    // The sender leaves; only the relay holds the messages now.
    net.send(a, "/quit")?;
    net.flush(a)?;
    net.wait(a, "stopped", Duration::from_secs(30))?;
    let held = net.stats(r)?["held_messages"].as_u64().unwrap_or(0);
    let start = Instant::now();
    let c = net.start("recipient", &via)?;
    let ready = Instant::now();
    let joined = net.wait(c, "joined", Duration::from_secs(30))?.at;
    let mut shown = BTreeSet::new();
    let mut times = Vec::new();
    // Messages may come before the join lookup is over.
    for line in std::mem::take(&mut net.seen[c]) {
        if line.value["event"] == "message" {
            let id = line.value["id"].as_str().unwrap_or("").to_string();
            if !shown.insert(id) {
                return Err("a message was shown twice".into());
            }
            times.push(line.at - ready);
        }
    }
    let end = Instant::now() + Duration::from_secs(30);
    while shown.len() < n {
        let left = end.saturating_duration_since(Instant::now());
        let Ok(line) = net.lines.recv_timeout(left) else {
            let rs = net.stats(r)?;
            let cs = net.stats(c)?;
            return Err(format!(
                "timed out: {} of {n} shown (relay held {held}; relay now {rs}; recipient {cs})",
                shown.len()
            ));
        };
        if line.proc == c && line.value["event"] == "message" {
            let id = line.value["id"].as_str().unwrap_or("").to_string();
            if !shown.insert(id) {
                return Err("a message was shown twice".into());
            }
            times.push(line.at - ready);
        }
    }
    times.sort();
    let last = times.last().copied().unwrap_or_default();
    println!(
        "comeback: the relay held {held} messages; the recipient showed all {n} {:.3} s after it was ready (first {:.3} s, median {:.3} s; its process started {:.3} s before ready; `joined` came {:.3} s after ready)",
        last.as_secs_f64(),
        times.first().copied().unwrap_or_default().as_secs_f64(),
        percentile(&times, 50).as_secs_f64(),
        (ready - start).as_secs_f64(),
        joined.saturating_duration_since(ready).as_secs_f64(),
    );
    Ok(())
}

fn sum(net: &mut Net, alive: &[usize], field: &str) -> Res<u64> {
    let mut total = 0;
    for &i in alive {
        total += net.stats(i)?[field].as_u64().unwrap_or(0);
    }
    Ok(total)
}

fn xor_dist(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// Lookups one after another from random nodes; returns (latencies,
/// recall of the true 8 closest live nodes, lookups done).
fn lookups(
    net: &mut Net,
    alive: &[usize],
    count: usize,
    rng: &mut StdRng,
) -> Res<(Vec<Duration>, f64)> {
    let ids: BTreeMap<usize, Vec<u8>> = alive
        .iter()
        .map(|&i| (i, hex::decode(&net.procs[i].address).unwrap_or_default()))
        .collect();
    let mut times = Vec::new();
    let (mut found, mut wanted) = (0usize, 0usize);
    for _ in 0..count {
        let from = alive[rng.gen_range(0..alive.len())];
        let target: [u8; 20] = rng.gen();
        let t = Instant::now();
        net.send(from, &format!("/lookup {}", hex::encode(target)))?;
        net.flush(from)?;
        let line = net.wait(from, "lookup", Duration::from_secs(60))?;
        times.push(line.at - t);
        let mut truth: Vec<&Vec<u8>> = ids
            .iter()
            .filter(|(i, _)| **i != from)
            .map(|(_, id)| id)
            .collect();
        truth.sort_by_key(|id| xor_dist(id, &target));
        truth.truncate(8);
        let got: BTreeSet<Vec<u8>> = line.value["closest"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["address"].as_str().and_then(|a| hex::decode(a).ok()))
            .collect();
        found += truth.iter().filter(|t| got.contains(**t)).count();
        wanted += truth.len();
    }
    times.sort();
    Ok((times, found as f64 / wanted.max(1) as f64))
}

/// A network of `nodes` processes: datagrams and recall per lookup, then
/// latency of lookups and sends after `kill` percent are killed.
fn network(nodes: usize, count: usize, kill: usize, root: Option<PathBuf>) -> Res<()> {
    let mut net = Net::new(root)?;
    let mut rng = StdRng::seed_from_u64(7);
    let first = net.start("n0", &[])?;
    let mut all = vec![first];
    for i in 1..nodes {
        let via = all[rng.gen_range(0..all.len())];
        let b = vec![net.procs[via].listen.clone()];
        let p = net.start(&format!("n{i}"), &b)?;
        net.wait(p, "joined", Duration::from_secs(60))?;
        all.push(p);
    }
    // Let joins, refreshes and liveness checks settle.
    std::thread::sleep(Duration::from_secs(5));
    let before = sum(&mut net, &all, "datagrams_out")?;
    let (times, recall) = lookups(&mut net, &all, count, &mut rng)?;
    let after = sum(&mut net, &all, "datagrams_out")?;
    println!(
        "network: {nodes} nodes, {count} lookups: {:.1} datagrams per lookup (all nodes), recall of the true 8 closest {:.4}, p50 {:?}, p95 {:?}",
        (after - before) as f64 / count as f64,
        recall,
        percentile(&times, 50),
        percentile(&times, 95)
    );
    // Kill a share of the nodes without a word (never the first few, so
    // that the survivors stay connected through someone).
    let mut victims: Vec<usize> = all.clone();
    victims.retain(|&i| i != first);
    let n_kill = nodes * kill / 100;
    let mut killed = BTreeSet::new();
    while killed.len() < n_kill && !victims.is_empty() {
        let v = victims.swap_remove(rng.gen_range(0..victims.len()));
        net.kill(v);
        killed.insert(v);
    }
    let alive: Vec<usize> = all
        .iter()
        .copied()
        .filter(|i| !killed.contains(i))
        .collect();
    let (times, recall) = lookups(&mut net, &alive, count, &mut rng)?;
    println!(
        "network: {}% killed: /lookup p50 {:?}, p95 {:?}, max {:?}, recall {:.4}",
        kill,
        percentile(&times, 50),
        percentile(&times, 95),
        times.last().copied().unwrap_or_default(),
        recall
    );
    // First `sent` event of a send to a random live node.
    let mut sends = Vec::new();
    for k in 0..count {
        let from = alive[rng.gen_range(0..alive.len())];
        let mut to = alive[rng.gen_range(0..alive.len())];
        while to == from {
            to = alive[rng.gen_range(0..alive.len())];
        }
        let addr = net.procs[to].address.clone();
        let t = Instant::now();
        net.send(from, &format!("{addr} after the crash {k}"))?;
        net.flush(from)?;
        let line = net.wait(from, "sent", Duration::from_secs(60))?;
        sends.push(line.at - t);
    }
    sends.sort();
    println!(
        "network: {}% killed: first `sent` event of a send p50 {:?}, p95 {:?}, max {:?}",
        kill,
        percentile(&sends, 50),
        percentile(&sends, 95),
        sends.last().copied().unwrap_or_default()
    );
    Ok(())
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn number(args: &[String], name: &str, default: usize) -> Res<usize> {
    match flag(args, name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| format!("{name} {v:?} is not a number")),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = flag(&args, "--data-root").map(PathBuf::from);
    let result = match args.first().map(String::as_str) {
        Some("burst") => number(&args, "--messages", 1000).and_then(|n| burst(n, root)),
        Some("comeback") => number(&args, "--messages", 1000).and_then(|n| comeback(n, root)),
        Some("network") => (|| {
            let nodes = number(&args, "--nodes", 100)?;
            let count = number(&args, "--lookups", 100)?;
            let kill = number(&args, "--kill", 30)?;
            network(nodes, count, kill, root)
        })(),
        Some("findnode") => (|| {
            let o = findnode::Options {
                contacts: number(&args, "--contacts", 150)?,
                seconds: number(&args, "--seconds", 10)? as f64,
                senders: number(&args, "--senders", 1)?,
                window: number(&args, "--window", 64)?,
                threads: number(&args, "--threads", 2)?,
                grind_limit: Duration::from_secs(number(&args, "--grind-secs", 120)? as u64),
            };
            let row = findnode::run(&o, root)?;
            if args.iter().any(|a| a == "--json") {
                println!("{}", findnode::row_json(&row));
            } else {
                println!("{}\n{}", findnode::Row::header(), row.line());
            }
            Ok(())
        })(),
        _ => Err("usage: comm-bench burst|comeback|network|findnode [--messages N] [--nodes N] [--lookups N] [--kill PERCENT] [--contacts N] [--seconds N] [--senders N] [--window N] [--threads N] [--grind-secs N] [--json] [--data-root DIR]".into()),
    };
    if let Err(e) = result {
        eprintln!("comm-bench: {e}");
        std::process::exit(1);
    }
}
