//! The scenarios `comm-sim` runs: whole networks of real [`crate::Node`]s
//! on virtual time, measured and reported (see BENCHMARKS.md).

mod delivery;
mod lookup;

use std::time::{Duration, Instant as WallInstant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::report::Report;
use super::{Sim, SimConfig};
use crate::config::Config;
use crate::signing::{Signatures, ED25519, SIM_SIGNATURES};

pub use delivery::Churn;

/// Why a scenario could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// No scenario has this name.
    #[error("unknown scenario {0:?}: try lookup, delivery or purge")]
    Unknown(String),
    /// A parameter is out of its range.
    #[error("{0}")]
    Parameter(String),
}

/// What a scenario is run with.
#[derive(Clone, Debug)]
pub struct Params {
    /// Nodes in the network.
    pub nodes: usize,
    /// Virtual hours the workload runs (delivery, purge).
    pub hours: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Lookups measured per phase (lookup).
    pub lookups: usize,
    /// Messages sent (delivery, purge).
    pub messages: usize,
    /// Fraction of nodes silently removed for the second phase (lookup).
    pub dead: f64,
    /// Session model of the nodes (delivery).
    pub churn: Churn,
    /// Sign with Ed25519 instead of the simulator's stand-in.
    pub real_crypto: bool,
    /// Bytes the process has allocated and not freed, if the caller counts
    /// them (the `comm-sim` binary installs a counting allocator): the
    /// nodes' own memory, without what the allocator keeps in reserve.
    pub heap_in_use: Option<fn() -> u64>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            nodes: 1000,
            hours: 24.0,
            seed: 1,
            lookups: 300,
            messages: 200,
            dead: 0.3,
            churn: Churn::default(),
            real_crypto: false,
            heap_in_use: None,
        }
    }
}

/// Progress reports for long runs: called with a short line now and then.
pub type Progress<'a> = &'a mut dyn FnMut(&str);

/// Run scenario `name`.
pub fn run(name: &str, p: &Params, progress: Progress<'_>) -> Result<Report, ScenarioError> {
    if p.nodes < 20 {
        return Err(ScenarioError::Parameter(
            "--nodes must be at least 20".into(),
        ));
    }
    if !(0.0..0.9).contains(&p.dead) {
        return Err(ScenarioError::Parameter(
            "--dead must be in 0.0..0.9".into(),
        ));
    }
    if !(p.hours > 0.0 && p.hours <= 24.0 * 30.0) {
        return Err(ScenarioError::Parameter(
            "--hours must be in (0, 720]".into(),
        ));
    }
    match name {
        "lookup" => Ok(lookup::run(p, progress)),
        "delivery" => Ok(delivery::run(p, progress, false)),
        "purge" => Ok(delivery::run(p, progress, true)),
        other => Err(ScenarioError::Unknown(other.to_string())),
    }
}

/// A fresh simulator for `p`.
fn new_sim(p: &Params) -> Sim {
    let signatures: &'static dyn Signatures = if p.real_crypto {
        &ED25519
    } else {
        &SIM_SIGNATURES
    };
    Sim::new(SimConfig {
        seed: p.seed,
        signatures,
        ..SimConfig::default()
    })
}

/// Reports progress at most every two seconds of wall time.
struct Ticker<'a> {
    progress: Progress<'a>,
    last: WallInstant,
    started: WallInstant,
}

impl<'a> Ticker<'a> {
    fn new(progress: Progress<'a>) -> Ticker<'a> {
        let now = WallInstant::now();
        Ticker {
            progress,
            last: now,
            started: now,
        }
    }

    fn tick(&mut self, sim: &Sim, what: impl FnOnce() -> String) {
        if self.last.elapsed() < Duration::from_secs(2) {
            return;
        }
        self.last = WallInstant::now();
        let secs = self.started.elapsed().as_secs_f64();
        let events = sim.stats().events;
        (self.progress)(&format!(
            "{} · virtual {} · {} events · {:.0}k events/s",
            what(),
            hms(sim.elapsed()),
            events,
            events as f64 / secs / 1000.0
        ));
    }

    fn wall(&self) -> Duration {
        self.started.elapsed()
    }
}

/// `d` as h:mm:ss.
fn hms(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Grow a network of `p.nodes`: each node joins through a random earlier
/// one, `spacing` apart, then it settles for a minute.
fn grow(sim: &mut Sim, p: &Params, config: &Config, ticker: &mut Ticker<'_>) {
    let mut rng = StdRng::seed_from_u64(p.seed ^ 0x6772_6f77);
    let spacing = Duration::from_millis(100);
    for j in 0..p.nodes {
        let i = sim.add_node(config.clone());
        if i > 0 {
            let via = rng.gen_range(0..i);
            sim.bootstrap(i, &[via]);
        }
        sim.run_for(spacing);
        ticker.tick(sim, || format!("growing: {}/{} nodes", j + 1, p.nodes));
    }
    sim.run_for(Duration::from_secs(60));
}

/// CPU time this process has used, user and system (Linux; zero elsewhere).
fn cpu_time() -> Duration {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which is in parentheses).
    let Some(rest) = s.rsplit_once(')').map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here;
    // in clock ticks, 100 per second on Linux.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// The resident memory of this process, in bytes (Linux; 0 elsewhere).
fn rss_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Mean of `v` (0 when empty).
fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The `q` quantile (0..=1) of `v`, nearest rank.
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let i = ((s.len() as f64 * q).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}

/// The "run" table every scenario ends with: size, work and speed.
fn run_table(sim: &Sim, p: &Params, ticker: &Ticker<'_>) -> super::report::Table {
    let mut t = super::report::Table::new("Run", &["", "value"]);
    let wall = ticker.wall().as_secs_f64();
    let cpu = cpu_time().as_secs_f64();
    let events = sim.stats().events;
    let rss = rss_bytes();
    let rows: Vec<(&str, String)> = vec![
        ("nodes", sim.len().to_string()),
        ("virtual time", hms(sim.elapsed())),
        ("events (datagrams in, timers fired)", events.to_string()),
        ("datagrams sent", sim.stats().sent.to_string()),
        ("wall time", format!("{wall:.1} s")),
        ("CPU time (one thread)", format!("{cpu:.1} s")),
        (
            "events per CPU second",
            format!("{:.0}", events as f64 / cpu.max(1e-9)),
        ),
        (
            "resident memory",
            format!("{:.1} MiB", rss as f64 / 1048576.0),
        ),
        (
            "memory per node",
            format!("{:.1} KiB", rss as f64 / 1024.0 / sim.len().max(1) as f64),
        ),
        (
            "heap in use per node",
            match p.heap_in_use {
                Some(f) => format!("{:.1} KiB", f() as f64 / 1024.0 / sim.len().max(1) as f64),
                None => "not counted".into(),
            },
        ),
        (
            "signatures",
            if p.real_crypto {
                "ed25519".into()
            } else {
                "stand-in (simulator only)".into()
            },
        ),
    ];
    for (k, v) in rows {
        t.row(vec![k.to_string(), v]);
    }
    t
}
