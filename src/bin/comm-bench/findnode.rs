//! `comm-bench findnode`: one real `comm` process answering a flood of
//! `FindNode` requests on loopback, measured in replies per CPU-second of
//! that process (utime + stime from /proc, not wall time).
//!
//! 1. Start `comm --json` on 127.0.0.1.
//! 2. Fill its routing table: identities are generated until enough of
//!    them fall into buckets of the node's table that still have room (a
//!    table of 150 contacts is what a node has in a network of millions,
//!    so the deep buckets take a few million keys); each gets its own
//!    loopback socket and joins the way the protocol admits a stranger
//!    (protocol.md §7.5): a padded `Ping`, the node's challenge `Ping`
//!    back, a `Pong` with a proof of key. The table size is then read
//!    with `/stats`.
//! 3. Flood: a few of those identities, now proven at their endpoints (so
//!    the anti-amplification limit of §13.2 never shortens an answer),
//!    each keep a window of unpadded `FindNode`s for random targets in
//!    flight for a fixed time. Loopback sources have no network prefix
//!    under the default `loopback = Exempt` policy, so the per-network
//!    request rate of §13.1 does not apply; the node's drop counters are
//!    read before and after to show that nothing was dropped by policy.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use comm::address::ADDRESS_BITS;
use comm::identity::proof_message;
use comm::wire::{self, Body, Packet, Proof};
use comm::{Address, Identity};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

pub use super::flood::Row;
use super::flood::{cpu_seconds, flood, Counts};
use super::{Net, Res};

/// Contacts per bucket in the node's table (its default k).
const K: usize = 8;

/// What `comm-bench findnode` is asked to do.
pub struct Options {
    /// Contacts to put in the node's routing table (at least).
    pub contacts: usize,
    /// How long the flood lasts.
    pub seconds: f64,
    /// Identities (sockets) sending requests, one thread each.
    pub senders: usize,
    /// Requests each sender keeps in flight.
    pub window: usize,
    /// Threads generating identities while the table is filled.
    pub threads: usize,
    /// Give up filling the table after this long.
    pub grind_limit: Duration,
}

/// Seeds of identities whose addresses fall into buckets of `node`'s table
/// with room, at most k per bucket, until `want` are found or `limit`
/// passes. Deterministic for a given node and thread count.
fn grind(node: Address, want: usize, threads: usize, limit: Duration) -> Vec<[u8; 32]> {
    let counts: Vec<AtomicUsize> = (0..ADDRESS_BITS).map(|_| AtomicUsize::new(0)).collect();
    let found = Mutex::new(Vec::new());
    let total = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let end = Instant::now() + limit;
    std::thread::scope(|s| {
        for t in 0..threads.max(1) {
            let (counts, found, total, stop) = (&counts, &found, &total, &stop);
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(0x5eed + t as u64);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let seed: [u8; 32] = rng.gen();
                    let id = Identity::from_seed(seed);
                    n += 1;
                    if n % 4096 == 0 && Instant::now() > end {
                        stop.store(true, Ordering::Relaxed);
                    }
                    let Some(b) = node.bucket_index(&id.address()) else {
                        continue;
                    };
                    if counts[b].load(Ordering::Relaxed) >= K
                        || counts[b].fetch_add(1, Ordering::Relaxed) >= K
                    {
                        continue;
                    }
                    if let Ok(mut f) = found.lock() {
                        f.push(seed);
                    }
                    if total.fetch_add(1, Ordering::Relaxed) + 1 >= want {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let mut out = found.into_inner().unwrap_or_default();
    out.truncate(want);
    out
}

/// The identities to fill `node`'s table with: read from `cache` if it
/// holds enough for this node, else generated (which takes a while for
/// the deep buckets) and written there for the next run.
fn identities(
    node: Address,
    want: usize,
    threads: usize,
    limit: Duration,
    cache: &std::path::Path,
) -> Vec<Identity> {
    let cached: Vec<[u8; 32]> = std::fs::read_to_string(cache)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut seed = [0u8; 32];
            hex::decode_to_slice(l.trim(), &mut seed)
                .ok()
                .map(|()| seed)
        })
        .collect();
    let t = Instant::now();
    let seeds = if cached.len() >= want {
        cached
    } else {
        let seeds = grind(node, want, threads, limit);
        eprintln!(
            "findnode: {} identities generated in {:.1} s; kept in {}",
            seeds.len(),
            t.elapsed().as_secs_f64(),
            cache.display()
        );
        let text: String = seeds.iter().map(|s| hex::encode(s) + "\n").collect();
        let _ = std::fs::write(cache, text);
        seeds
    };
    seeds
        .into_iter()
        .take(want)
        .map(Identity::from_seed)
        .collect()
}

/// Join `node` (at `to`) as `id` from `socket`: a padded `Ping`, then answer
/// the challenge the node sends back with a proof. Returns whether a
/// challenge came.
fn prove(socket: &UdpSocket, id: &Identity, to: SocketAddr, rng: &mut StdRng) -> Res<bool> {
    let ping = Packet {
        sender: id.address(),
        txid: rng.gen(),
        challenge: None,
        proof: None,
        body: Body::Ping,
    };
    socket
        .send_to(&wire::encode_padded(&ping, wire::PADDED_PING), to)
        .map_err(|e| e.to_string())?;
    let end = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if from != to {
            continue;
        }
        let Ok(p) = wire::decode(&buf[..n]) else {
            continue;
        };
        if let (Body::Ping, Some(c)) = (&p.body, p.challenge) {
            let pong = Packet {
                sender: id.address(),
                txid: p.txid,
                challenge: None,
                proof: Some(Proof {
                    key: id.public_key(),
                    signature: id.sign(&proof_message(&c)),
                }),
                body: Body::Pong { observed: Some(to) },
            };
            socket
                .send_to(&wire::encode(&pong), to)
                .map_err(|e| e.to_string())?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// The number of contacts in a `Nodes` reply.
fn contacts_in(bytes: &[u8]) -> Option<u64> {
    match wire::decode(bytes) {
        Ok(Packet {
            body: Body::Nodes { contacts },
            ..
        }) => Some(contacts.len() as u64),
        _ => None,
    }
}

fn dropped(stats: &Value) -> Vec<(String, u64)> {
    stats["dropped"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| Some((d[0].as_str()?.to_string(), d[1].as_u64()?)))
        .collect()
}

/// Run the whole measurement against the `comm` binary `Net` starts.
pub fn run(o: &Options, root: Option<std::path::PathBuf>) -> Res<Row> {
    let mut net = Net::new(root)?;
    let bin = net.bin.display().to_string();
    // A fixed key for the node, so that every run (and every binary
    // compared) fills the same table, and the identities that fill it are
    // generated once.
    let node_seed = [0x42u8; 32];
    let dir = net.root.join("target");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("key"), hex::encode(node_seed) + "\n").map_err(|e| e.to_string())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir.join("key"), std::fs::Permissions::from_mode(0o600));
    }
    let n = net.start("target", &[])?;
    let address = Identity::from_seed(node_seed).address();
    if net.procs[n].address != address.to_string() {
        return Err(format!(
            "the node runs as {}, not {address}",
            net.procs[n].address
        ));
    }
    let to: SocketAddr = net.procs[n]
        .listen
        .parse()
        .map_err(|e| format!("node endpoint: {e}"))?;
    let pid = net.procs[n].child.id();

    let cache = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name(format!(
            "comm-bench-findnode-{}.seeds",
            address.short().replace('…', "-")
        ));
    let ids = identities(address, o.contacts, o.threads, o.grind_limit, &cache);
    let mut rng = StdRng::seed_from_u64(11);
    let mut sockets = Vec::with_capacity(ids.len());
    let mut challenged = 0;
    for id in &ids {
        let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| e.to_string())?;
        if prove(&s, id, to, &mut rng)? {
            challenged += 1;
        }
        sockets.push(s);
    }
    // Let the node verify the last proofs.
    std::thread::sleep(Duration::from_millis(300));
    let before = net.stats(n)?;
    let contacts = before["contacts"].as_u64().unwrap_or(0);
    eprintln!(
        "findnode: {challenged} of {} identities challenged and answered; the node's table holds {contacts} contacts",
        ids.len()
    );
    if (contacts as usize) < o.contacts.min(ids.len()) {
        return Err(format!(
            "only {contacts} contacts in the table (wanted {}); /stats: {before}",
            o.contacts
        ));
    }

    // Senders: identities spread over the table, each proven at its socket.
    let step = (ids.len() / o.senders.max(1)).max(1);
    let senders: Vec<usize> = (0..o.senders.min(ids.len())).map(|i| i * step).collect();
    let mut work = Vec::new();
    for &i in &senders {
        let packets: Vec<Vec<u8>> = (0..1024u64)
            .map(|j| {
                wire::encode(&Packet {
                    sender: ids[i].address(),
                    txid: j,
                    challenge: None,
                    proof: None,
                    body: Body::FindNode {
                        target: Address::random(&mut rng),
                    },
                })
                .to_vec()
            })
            .collect();
        work.push((i, packets));
    }
    let cpu0 = cpu_seconds(pid)?;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(o.seconds);
    let drain = Duration::from_millis(200);
    let counts: Vec<Counts> = std::thread::scope(|s| {
        let handles: Vec<_> = work
            .iter()
            .map(|(i, packets)| {
                let socket = &sockets[*i];
                s.spawn(move || flood(socket, to, packets, o.window, end, drain, &contacts_in))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu0;
    let after = net.stats(n)?;
    let sent: u64 = counts.iter().map(|c| c.sent).sum();
    let replies: u64 = counts.iter().map(|c| c.replies).sum();
    let sampled: u64 = counts.iter().map(|c| c.sampled).sum();
    let sampled_contacts: u64 = counts.iter().map(|c| c.sampled_value).sum();
    let (d0, d1) = (dropped(&before), dropped(&after));
    let new_drops: Vec<String> = d1
        .iter()
        .filter_map(|(k, v)| {
            let was = d0.iter().find(|(k0, _)| k0 == k).map_or(0, |(_, v0)| *v0);
            (*v > was).then(|| format!("{k} {}", v - was))
        })
        .collect();
    eprintln!(
        "findnode: {} senders (proven table contacts, loopback: no per-network rate limit under the default `loopback = Exempt`) x {} in flight; {:.1} contacts per sampled reply ({sampled} decoded); node drops during the flood: {}; table after: {} contacts",
        senders.len(),
        o.window,
        sampled_contacts as f64 / sampled.max(1) as f64,
        if new_drops.is_empty() {
            "none".to_string()
        } else {
            new_drops.join(", ")
        },
        after["contacts"]
    );
    Ok(Row {
        name: format!("comm ({bin})"),
        contacts,
        sent,
        replies,
        cpu,
        wall,
    })
}

/// `row` as one JSON object.
pub fn row_json(row: &Row) -> Value {
    serde_json::json!({
        "node": row.name,
        "contacts": row.contacts,
        "sent": row.sent,
        "replies": row.replies,
        "cpu_s": row.cpu,
        "replies_per_cpu_s": row.replies as f64 / row.cpu.max(1e-9),
        "wall_s": row.wall,
    })
}
