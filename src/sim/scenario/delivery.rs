//! `delivery` and `purge`: messages to recipients who are away, in a
//! network whose nodes come and go, measured against two baselines run on
//! the same churn and the same overlay.
//!
//! Every node but the recipients churns: online and offline periods drawn
//! from Weibull distributions (the shape Stutzbach and Rejaie measured for
//! session lengths in Kad, BitTorrent and Gnutella; see BENCHMARKS.md). A
//! node that goes offline stops hearing anything; when it comes back it is
//! a fresh process restored from its stored records (`Sim::relaunch`).
//! Each message goes from a random online node to a recipient who left just
//! before and comes back after an away time drawn uniformly from zero to
//! 24 hours (less if the run is shorter). In `purge`, messages live only
//! `hours / 2` and a tenth of the recipients never come back, so the run
//! also sees copies expire.
//!
//! The baselines are models evaluated on the same schedule and on the
//! routing tables the real nodes built (taken when the network has grown):
//! - *store once*: the k nodes closest to the recipient that are online at
//!   send time take a copy; nothing is relayed again; the recipient asks
//!   its k closest online nodes when it comes back.
//! - *flooding*: every node that gets the message sends it to every
//!   neighbour; a node that comes back online gets it from any online
//!   neighbour that has it (anti-entropy), and so does the recipient.

use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{grow, hms, mean, new_sim, quantile, run_table, Params, Progress, Ticker};
use crate::address::Address;
use crate::config::Config;
use crate::message::MessageId;
use crate::node::Event;
use crate::sim::report::{Chart, ChartKind, Report, Series, Table};
use crate::sim::Sim;

/// How nodes come and go.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Churn {
    /// Every node stays online.
    None,
    /// Online and offline periods from Weibull distributions.
    Weibull {
        /// Shape of both distributions (below 1: many short periods and a
        /// long tail).
        shape: f64,
        /// Scale of the online periods, minutes.
        session_min: f64,
        /// Scale of the offline periods, minutes.
        downtime_min: f64,
    },
}

impl Default for Churn {
    /// Shape 0.5, sessions scale 30 min (mean 60 min), downtimes scale
    /// 60 min (mean 2 h): inside the ranges measured for real networks,
    /// and harsh (a third of the nodes online at a time).
    fn default() -> Self {
        Churn::Weibull {
            shape: 0.5,
            session_min: 30.0,
            downtime_min: 60.0,
        }
    }
}

impl std::str::FromStr for Churn {
    type Err = String;

    /// `none`, `weibull`, or `weibull:SHAPE:SESSION_MIN:DOWNTIME_MIN`.
    fn from_str(s: &str) -> Result<Churn, String> {
        let bad = || {
            format!(
                "bad --churn {s:?}: use none, weibull or weibull:SHAPE:SESSION_MIN:DOWNTIME_MIN"
            )
        };
        if s == "none" {
            return Ok(Churn::None);
        }
        if s == "weibull" {
            return Ok(Churn::default());
        }
        let rest = s.strip_prefix("weibull:").ok_or_else(bad)?;
        let v: Vec<f64> = rest
            .split(':')
            .map(|x| x.parse::<f64>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        match v[..] {
            [shape, session_min, downtime_min]
                if shape > 0.05 && session_min > 0.0 && downtime_min > 0.0 =>
            {
                Ok(Churn::Weibull {
                    shape,
                    session_min,
                    downtime_min,
                })
            }
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Churn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Churn::None => write!(f, "none"),
            Churn::Weibull {
                shape,
                session_min,
                downtime_min,
            } => write!(
                f,
                "Weibull shape {shape}, session scale {session_min} min, downtime scale {downtime_min} min"
            ),
        }
    }
}

/// A Weibull draw with `shape` and `scale`, by inversion.
fn weibull(rng: &mut StdRng, shape: f64, scale: f64) -> f64 {
    let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    scale * (-u.ln()).powf(1.0 / shape)
}

/// Something that happens at a virtual time (ms from the workload start).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// A churning node goes offline.
    Down(usize),
    /// A churning node comes back.
    Up(usize),
    /// Message `j`'s recipient leaves.
    Leave(usize),
    /// Message `j` is sent.
    Send(usize),
    /// Message `j`'s recipient comes back.
    Return(usize),
}

/// One message of the workload.
struct Msg {
    recipient: usize,
    send_ms: u64,
    /// `None`: the recipient never comes back (purge only).
    return_ms: Option<u64>,
    sender: Option<usize>,
    id: Option<MessageId>,
    /// When its recipient showed it.
    received_ms: Option<u64>,
    /// When its recipient stored it and acknowledged it: before it is
    /// shown, by up to the catch-up window (protocol.md §12).
    stored_ms: Option<u64>,
    acked_ms: Option<u64>,
    /// When no online node held it any more after it was stored.
    purged_ms: Option<u64>,
    /// Copies on online nodes one minute after it was stored.
    online_after_ack: Option<usize>,
}

impl Msg {
    /// Whether its copies are watched at `now_ms`: stored (and acked) by
    /// its recipient less than an hour ago, and the purge or the
    /// one-minute count not yet taken.
    fn watched_at(&self, now_ms: u64) -> bool {
        self.stored_ms.is_some_and(|t| now_ms < t + 3_600_000)
            && (self.purged_ms.is_none() || self.online_after_ack.is_none())
    }
}

/// The churn and message schedule, fixed by the seed before the run.
struct Schedule {
    steps: Vec<(u64, Step)>,
    msgs: Vec<Msg>,
    churning: Vec<bool>,
}

/// `ttl_ms`: recipients who come back at all come back before it.
fn schedule(p: &Params, n: usize, purge: bool, ttl_ms: u64) -> Schedule {
    let mut rng = StdRng::seed_from_u64(p.seed ^ 0x6368_7572);
    let end_ms = (p.hours * 3_600_000.0) as u64;
    let m = p.messages.min(n / 4);
    // Recipients: distinct nodes that do not churn.
    let mut recipients = Vec::new();
    let mut taken = vec![false; n];
    while recipients.len() < m {
        let r = rng.gen_range(1..n);
        if !taken[r] {
            taken[r] = true;
            recipients.push(r);
        }
    }
    let churning: Vec<bool> = (0..n).map(|i| !taken[i] && i != 0).collect();
    let mut steps = Vec::new();
    if let Churn::Weibull {
        shape,
        session_min,
        downtime_min,
    } = p.churn
    {
        for (i, &c) in churning.iter().enumerate() {
            if !c {
                continue;
            }
            // Every node starts online (it just joined), part-way into a session.
            let mut t =
                (weibull(&mut rng, shape, session_min) * 60_000.0 * rng.gen::<f64>()) as u64;
            let mut up = true;
            while t < end_ms {
                steps.push((t, if up { Step::Down(i) } else { Step::Up(i) }));
                let scale = if up { downtime_min } else { session_min };
                t += (weibull(&mut rng, shape, scale) * 60_000.0).max(1000.0) as u64;
                up = !up;
            }
        }
    }
    // Messages are sent over the first hour (or tenth of the run).
    let window = (end_ms / 10).clamp(1, 3_600_000);
    let longest_away = end_ms
        .min(ttl_ms * 9 / 10 + window)
        .saturating_sub(window + 3_600_000)
        .min(24 * 3_600_000);
    let mut msgs = Vec::new();
    for (j, &r) in recipients.iter().enumerate() {
        let send_ms = 60_000 + rng.gen_range(0..window);
        let leave_ms = send_ms - 30_000;
        let never = purge && j % 10 == 9;
        let return_ms = (!never).then(|| send_ms + rng.gen_range(0..longest_away.max(1)));
        steps.push((leave_ms, Step::Leave(j)));
        steps.push((send_ms, Step::Send(j)));
        if let Some(t) = return_ms {
            steps.push((t, Step::Return(j)));
        }
        msgs.push(Msg {
            recipient: r,
            send_ms,
            return_ms,
            sender: None,
            id: None,
            received_ms: None,
            stored_ms: None,
            acked_ms: None,
            purged_ms: None,
            online_after_ack: None,
        });
    }
    steps.sort();
    Schedule {
        steps,
        msgs,
        churning,
    }
}

/// Copies of `id` anywhere (online or not) and on online nodes.
fn copies(sim: &Sim, id: &MessageId) -> (usize, usize) {
    let all = sim.all_holders(id);
    let online = all.iter().filter(|&&i| sim.is_online(i as usize)).count();
    (all.len(), online)
}

/// Run the scenario (`purge`: short TTL, some recipients never return, and
/// the time copies take to go after an ack).
pub(super) fn run(p: &Params, progress: Progress<'_>, purge: bool) -> Report {
    let mut config = Config::default();
    if purge {
        config.default_ttl =
            Duration::from_secs_f64(p.hours * 3600.0 / 2.0).max(Duration::from_secs(600));
    }
    let k = config.k.get();
    let mut sim = new_sim(p);
    let mut ticker = Ticker::new(progress);
    grow(&mut sim, p, &config, &mut ticker);
    let n = sim.len();
    let mut sched = schedule(p, n, purge, config.default_ttl.as_millis() as u64);
    let graph: Vec<Vec<usize>> = (0..n).map(|i| sim.neighbours(i)).collect();
    let base = sim.now();
    let start_events = sim.stats().events;
    let (stores0, acks0) = sim.transfers();
    let dup0 = sim.duplicate_stores();
    let offers0 = sim.offers();
    let end_ms = (p.hours * 3_600_000.0) as u64;
    // The copies-over-time series is sampled once a virtual minute; peak
    // copies are exact (the simulator counts holders as they change).
    let sample_every = 60_000;
    let mut next_sample = 0u64;
    let mut online_series = Vec::new();
    let mut delivered_series = Vec::new();
    let mut copies_series = Vec::new();
    let mut heap_series = Vec::new();
    let mut by_id: HashMap<MessageId, usize> = HashMap::new();
    let mut steps = sched.steps.iter().copied().peekable();
    let mut rng = StdRng::seed_from_u64(p.seed ^ 0x7365_6e64);
    let mut now_ms = 0u64;
    loop {
        // Copies are watched from when the recipient stored the message
        // (and sent its ack) for an hour: every 100 ms for ten seconds,
        // then every second. A message whose recipient is back but has not
        // stored it yet is waited for as finely (100 ms for a minute after
        // the return, then every second for an hour), so that the purge
        // clock starts at the store and not at the next churn step.
        let watched = |m: &Msg| m.watched_at(now_ms);
        let since_return = |m: &Msg| {
            m.return_ms
                .filter(|&r| m.id.is_some() && m.stored_ms.is_none() && r <= now_ms)
                .map(|r| now_ms - r)
        };
        let awaited: Vec<u64> = sched.msgs.iter().filter_map(since_return).collect();
        let fine = sched
            .msgs
            .iter()
            .any(|m| watched(m) && m.stored_ms.is_some_and(|t| now_ms < t + 10_000))
            || awaited.iter().any(|&d| d < 60_000);
        let watching = sched.msgs.iter().any(watched) || awaited.iter().any(|&d| d < 3_600_000);
        let mut next = end_ms.min(next_sample);
        if let Some(&(t, _)) = steps.peek() {
            next = next.min(t);
        }
        if watching {
            next = next.min(now_ms + if fine { 100 } else { 1000 });
        }
        sim.run_until(base + Duration::from_millis(next));
        now_ms = next;
        for (at, node, e) in sim.take_timed_events() {
            let at_ms = at.saturating_duration_since(base).as_millis() as u64;
            match e {
                Event::MessageReceived { id, .. } => {
                    if let Some(&j) = by_id.get(&id) {
                        if sched.msgs[j].recipient == node && sched.msgs[j].received_ms.is_none() {
                            sched.msgs[j].received_ms = Some(at_ms);
                        }
                    }
                }
                Event::Delivered { id, .. } => {
                    if let Some(&j) = by_id.get(&id) {
                        sched.msgs[j].acked_ms.get_or_insert(at_ms);
                    }
                }
                _ => {}
            }
        }
        for m in sched.msgs.iter_mut() {
            if let (None, Some(id)) = (m.stored_ms, m.id) {
                m.stored_ms = sim
                    .stored_at(&id)
                    .map(|at| at.saturating_duration_since(base).as_millis() as u64);
            }
        }
        let purging: Vec<usize> = (0..sched.msgs.len())
            .filter(|&j| sched.msgs[j].watched_at(now_ms))
            .collect();
        for &j in &purging {
            let Some(id) = sched.msgs[j].id else { continue };
            let Some(got) = sched.msgs[j].stored_ms else {
                continue;
            };
            let minute = now_ms >= got + 60_000 && sched.msgs[j].online_after_ack.is_none();
            let (_, online) = copies(&sim, &id);
            if minute {
                sched.msgs[j].online_after_ack = Some(online);
            }
            if online == 0 && sched.msgs[j].purged_ms.is_none() {
                sched.msgs[j].purged_ms = Some(now_ms);
            }
        }
        if now_ms >= next_sample {
            let mut total_copies = 0;
            for m in sched.msgs.iter_mut() {
                let Some(id) = m.id else { continue };
                total_copies += sim.all_holders(&id).len();
            }
            let t_h = now_ms as f64 / 3_600_000.0;
            let online = (0..n).filter(|&i| sim.is_online(i)).count();
            online_series.push((t_h, online as f64));
            let delivered = sched
                .msgs
                .iter()
                .filter(|m| m.received_ms.is_some())
                .count();
            delivered_series.push((t_h, delivered as f64));
            copies_series.push((t_h, total_copies as f64));
            if let Some(heap) = p.heap_in_use {
                heap_series.push((t_h, heap() as f64 / 1024.0 / n as f64));
            }
            next_sample += sample_every;
            ticker.tick(&sim, || {
                format!(
                    "{}: {}/{} delivered, {} online",
                    if purge { "purge" } else { "delivery" },
                    delivered,
                    sched.msgs.len(),
                    online
                )
            });
        }
        while let Some(&(t, step)) = steps.peek() {
            if t > now_ms {
                break;
            }
            steps.next();
            match step {
                Step::Down(i) => sim.set_online(i, false),
                Step::Up(i) => sim.relaunch(i),
                Step::Leave(j) => {
                    let r = sched.msgs[j].recipient;
                    sim.set_online(r, false);
                }
                Step::Send(j) => {
                    let r = sched.msgs[j].recipient;
                    let online: Vec<usize> = (0..n)
                        .filter(|&i| sim.is_online(i) && sched.churning[i])
                        .collect();
                    if online.is_empty() {
                        continue;
                    }
                    let s = online[rng.gen_range(0..online.len())];
                    if let Ok(id) = sim.send(s, r, b"comm-sim message") {
                        sched.msgs[j].sender = Some(s);
                        sched.msgs[j].id = Some(id);
                        by_id.insert(id, j);
                    }
                }
                Step::Return(j) => {
                    let r = sched.msgs[j].recipient;
                    sim.relaunch(r);
                }
            }
        }
        if now_ms >= end_ms {
            break;
        }
    }
    let (stores, acks) = sim.transfers();
    let (stores, acks) = (stores - stores0, acks - acks0);
    let duplicates = sim.duplicate_stores() - dup0;
    let offers = sim.offers() - offers0;
    let workload_events = sim.stats().events - start_events;

    // What comm did.
    let msgs = &sched.msgs;
    let sent = msgs.iter().filter(|m| m.id.is_some()).count();
    let returning: Vec<&Msg> = msgs
        .iter()
        .filter(|m| m.id.is_some() && m.return_ms.is_some())
        .collect();
    let delivered = returning.iter().filter(|m| m.received_ms.is_some()).count();
    let after_return: Vec<f64> = returning
        .iter()
        .filter_map(|m| Some((m.received_ms? - m.return_ms?) as f64 / 1000.0))
        .collect();
    let peak: Vec<f64> = msgs
        .iter()
        .filter(|m| m.id.is_some())
        .filter_map(|m| m.id.map(|id| sim.peak_copies(&id) as f64))
        .collect();
    let purge_s: Vec<f64> = msgs
        .iter()
        .filter_map(|m| Some((m.purged_ms? - m.stored_ms?) as f64 / 1000.0))
        .collect();
    let left_after: Vec<f64> = msgs
        .iter()
        .filter_map(|m| m.online_after_ack.map(|c| c as f64))
        .collect();
    let acked = msgs.iter().filter(|m| m.acked_ms.is_some()).count();

    // The baselines, on the same schedule and overlay.
    let (once, flood) = baselines(&sim, &sched, &graph, k);

    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.1}x", a / b)
        } else {
            "-".into()
        }
    };
    let per = |t: f64, d: usize| if d > 0 { t / d as f64 } else { f64::NAN };
    let comm_per = per(stores as f64, delivered);
    let mut t = Table::new(
        &format!(
            "Delivery to recipients away up to {} ({} messages, churn: {})",
            hms(Duration::from_millis(
                msgs.iter()
                    .filter_map(|m| Some(m.return_ms? - m.send_ms))
                    .max()
                    .unwrap_or(0)
            )),
            sent,
            p.churn
        ),
        &[
            "",
            "delivered",
            "transfers",
            "per delivered",
            "peak copies (max)",
            "peak copies (mean)",
        ],
    );
    t.row(vec![
        "comm".into(),
        format!(
            "{delivered}/{} ({:.2}%)",
            returning.len(),
            100.0 * delivered as f64 / returning.len().max(1) as f64
        ),
        stores.to_string(),
        format!("{comm_per:.1}"),
        format!("{:.0}", peak.iter().fold(0.0f64, |a, &b| a.max(b))),
        format!("{:.1}", mean(&peak)),
    ]);
    for b in [&once, &flood] {
        t.row(vec![
            b.name.to_string(),
            format!(
                "{}/{} ({:.2}%)",
                b.delivered,
                b.returning,
                100.0 * b.delivered as f64 / b.returning.max(1) as f64
            ),
            b.transfers.to_string(),
            format!("{:.1}", per(b.transfers as f64, b.delivered)),
            b.peak_max.to_string(),
            format!("{:.1}", b.peak_mean),
        ]);
    }
    let mut detail = Table::new("comm in detail", &["", "value"]);
    let rows: Vec<(&str, String)> = vec![
        (
            "delivery after the recipient returns, p50 / p95 / max",
            format!(
                "{:.1} s / {:.1} s / {:.1} s",
                quantile(&after_return, 0.5),
                quantile(&after_return, 0.95),
                quantile(&after_return, 1.0)
            ),
        ),
        ("senders told `delivered`", format!("{acked}/{delivered}")),
        (
            "transfers to a node that already held the copy",
            format!(
                "{duplicates} ({:.0}%)",
                100.0 * duplicates as f64 / stores.max(1) as f64
            ),
        ),
        (
            "offers (ids only, ~70 bytes; a `Store` follows only if wanted)",
            offers.to_string(),
        ),
        ("ack transfers", acks.to_string()),
        (
            "time until no online node holds a copy after the recipient stored it (and acked), p50 / p95 / max",
            format!(
                "{:.1} s / {:.1} s / {:.1} s ({} of {delivered})",
                quantile(&purge_s, 0.5),
                quantile(&purge_s, 0.95),
                quantile(&purge_s, 1.0),
                purge_s.len()
            ),
        ),
        (
            "online copies 1 min after the recipient stored it, mean / max",
            format!(
                "{:.2} / {:.0}",
                mean(&left_after),
                quantile(&left_after, 1.0)
            ),
        ),
        (
            "transfers per delivered: comm / store once / flooding",
            format!(
                "{:.1} / {:.1} / {:.1}; flooding costs {} comm's",
                comm_per,
                per(once.transfers as f64, once.delivered),
                per(flood.transfers as f64, flood.delivered),
                ratio(per(flood.transfers as f64, flood.delivered), comm_per)
            ),
        ),
        ("workload events", workload_events.to_string()),
    ];
    for (k, v) in rows {
        detail.row(vec![k.to_string(), v]);
    }
    let mut tables = vec![t, detail];
    if purge {
        let never: Vec<&Msg> = msgs
            .iter()
            .filter(|m| m.id.is_some() && m.return_ms.is_none())
            .collect();
        let ttl_ms = config.default_ttl.as_millis() as u64;
        let mut alive_online = 0;
        let mut alive_all = 0;
        for m in &never {
            if let Some(id) = m.id {
                let (all, online) = copies(&sim, &id);
                alive_all += all;
                alive_online += online;
            }
        }
        let mut pt = Table::new(
            &format!(
                "Copies at the TTL ({} messages whose recipient never returned; TTL {}, checked at {})",
                never.len(),
                hms(config.default_ttl),
                hms(Duration::from_millis(end_ms))
            ),
            &["", "value"],
        );
        pt.row(vec![
            "past the TTL at the check".into(),
            never
                .iter()
                .all(|m| m.send_ms + ttl_ms <= end_ms)
                .to_string(),
        ]);
        pt.row(vec![
            "copies on online nodes".into(),
            alive_online.to_string(),
        ]);
        pt.row(vec![
            "copies on offline nodes (dropped when they restart)".into(),
            alive_all.saturating_sub(alive_online).to_string(),
        ]);
        tables.push(pt);
    }
    if !heap_series.is_empty() {
        let mut ht = Table::new(
            "Heap in use per node over the run (everything the simulation holds, divided by the nodes)",
            &["virtual time", "KiB per node"],
        );
        let last = heap_series.len() - 1;
        for q in 0..=4 {
            let (t_h, kib) = heap_series[last * q / 4];
            ht.row(vec![
                hms(Duration::from_secs_f64(t_h * 3600.0)),
                format!("{kib:.1}"),
            ]);
        }
        tables.push(ht);
    }
    tables.push(run_table(&sim, p, &ticker));
    let mut charts = vec![
        Chart {
            title: "Messages delivered".into(),
            x_label: "virtual hours".into(),
            y_label: "delivered".into(),
            kind: ChartKind::Lines,
            series: vec![Series {
                name: "comm".into(),
                points: delivered_series,
            }],
        },
        Chart {
            title: "Copies alive (all messages, online and offline nodes)".into(),
            x_label: "virtual hours".into(),
            y_label: "copies".into(),
            kind: ChartKind::Lines,
            series: vec![Series {
                name: "comm".into(),
                points: copies_series,
            }],
        },
        Chart {
            title: "Nodes online".into(),
            x_label: "virtual hours".into(),
            y_label: "nodes".into(),
            kind: ChartKind::Lines,
            series: vec![Series {
                name: "online".into(),
                points: online_series,
            }],
        },
    ];
    if !heap_series.is_empty() {
        charts.push(Chart {
            title: "Heap in use per node".into(),
            x_label: "virtual hours".into(),
            y_label: "KiB".into(),
            kind: ChartKind::Lines,
            series: vec![Series {
                name: "heap / nodes".into(),
                points: heap_series,
            }],
        });
    }
    Report {
        heading: format!(
            "comm-sim {}: {} nodes, {} h, seed {}, churn {}",
            if purge { "purge" } else { "delivery" },
            p.nodes,
            p.hours,
            p.seed,
            p.churn
        ),
        tables,
        charts,
        notes: vec![
            "store once and flooding are models run on the same churn schedule and the routing tables comm built (see BENCHMARKS.md)".into(),
        ],
        trace_hash: sim.trace_hash(),
    }
}

/// A baseline's totals.
struct Baseline {
    name: &'static str,
    returning: usize,
    delivered: usize,
    transfers: u64,
    peak_max: usize,
    peak_mean: f64,
}

/// Replay the schedule for both baselines at once.
fn baselines(sim: &Sim, sched: &Schedule, graph: &[Vec<usize>], k: usize) -> (Baseline, Baseline) {
    let n = graph.len();
    let m = sched.msgs.len();
    let words = m.div_ceil(64).max(1);
    let addr: Vec<Address> = (0..n).map(|i| sim.node(i).address()).collect();
    let mut online = vec![true; n];
    // Flooding: which messages each node holds (a bit per message).
    let mut has = vec![0u64; n * words];
    let mut flood_transfers = 0u64;
    let mut flood_delivered = 0usize;
    let mut flood_holders = vec![0usize; m];
    // Store once: the holders of each message.
    let mut once_holders: Vec<Vec<usize>> = vec![Vec::new(); m];
    let mut once_transfers = 0u64;
    let mut once_delivered = 0usize;
    let mut returning = 0usize;
    let closest_online = |online: &[bool], target: &Address, except: usize| -> Vec<usize> {
        let mut heap: BinaryHeap<(crate::address::Distance, usize)> = BinaryHeap::new();
        for i in 0..n {
            if !online[i] || i == except {
                continue;
            }
            heap.push((addr[i].distance(target), i));
            if heap.len() > k {
                heap.pop();
            }
        }
        heap.into_iter().map(|(_, i)| i).collect()
    };
    for &(_, step) in &sched.steps {
        match step {
            Step::Down(i) => online[i] = false,
            Step::Leave(j) => online[sched.msgs[j].recipient] = false,
            Step::Up(i) => {
                online[i] = true;
                // Anti-entropy with every online neighbour.
                let mut got = vec![0u64; words];
                for &nb in &graph[i] {
                    if online[nb] {
                        for w in 0..words {
                            got[w] |= has[nb * words + w];
                        }
                    }
                }
                for w in 0..words {
                    let new = got[w] & !has[i * words + w];
                    if new != 0 {
                        flood_transfers += u64::from(new.count_ones());
                        has[i * words + w] |= new;
                        for b in 0..64 {
                            if new >> b & 1 == 1 {
                                flood_holders[w * 64 + b] += 1;
                            }
                        }
                    }
                }
            }
            Step::Send(j) => {
                let msg = &sched.msgs[j];
                let Some(s) = msg.sender else { continue };
                let target = addr[msg.recipient];
                // Store once at the k closest online.
                let holders = closest_online(&online, &target, msg.recipient);
                once_transfers += holders.len() as u64;
                once_holders[j] = holders;
                // Flood from the sender over online nodes.
                let (w, b) = (j / 64, j % 64);
                let mut queue = vec![s];
                has[s * words + w] |= 1 << b;
                flood_holders[j] += 1;
                while let Some(x) = queue.pop() {
                    for &nb in &graph[x] {
                        flood_transfers += 1;
                        if online[nb] && has[nb * words + w] >> b & 1 == 0 {
                            has[nb * words + w] |= 1 << b;
                            flood_holders[j] += 1;
                            queue.push(nb);
                        }
                    }
                }
            }
            Step::Return(j) => {
                returning += usize::from(sched.msgs[j].sender.is_some());
                let r = sched.msgs[j].recipient;
                online[r] = true;
                if sched.msgs[j].sender.is_none() {
                    continue;
                }
                let target = addr[r];
                let near = closest_online(&online, &target, r);
                if near.iter().any(|x| once_holders[j].contains(x)) {
                    once_delivered += 1;
                    once_transfers += 1;
                }
                let (w, b) = (j / 64, j % 64);
                if graph[r]
                    .iter()
                    .any(|&nb| online[nb] && has[nb * words + w] >> b & 1 == 1)
                {
                    flood_delivered += 1;
                    flood_transfers += 1;
                }
            }
        }
    }
    let sent: Vec<usize> = (0..m).filter(|&j| sched.msgs[j].sender.is_some()).collect();
    let once_peak: Vec<f64> = sent.iter().map(|&j| once_holders[j].len() as f64).collect();
    let flood_peak: Vec<f64> = sent.iter().map(|&j| flood_holders[j] as f64).collect();
    (
        Baseline {
            name: "store once at k closest",
            returning,
            delivered: once_delivered,
            transfers: once_transfers,
            peak_max: once_peak.iter().fold(0.0f64, |a, &b| a.max(b)) as usize,
            peak_mean: mean(&once_peak),
        },
        Baseline {
            name: "epidemic flooding",
            returning,
            delivered: flood_delivered,
            transfers: flood_transfers,
            peak_max: flood_peak.iter().fold(0.0f64, |a, &b| a.max(b)) as usize,
            peak_mean: mean(&flood_peak),
        },
    )
}
