//! `lookup`: how many rounds and RPCs a lookup takes, and whether it finds
//! the true k closest nodes, in a healthy network and with a fraction of
//! the nodes silently gone.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{grow, mean, new_sim, quantile, run_table, Params, Progress, Ticker};
use crate::address::Address;
use crate::config::Config;
use crate::node::Event;
use crate::sim::report::{Chart, ChartKind, Report, Series, Table};
use crate::sim::Sim;

/// What one phase of lookups measured.
struct Phase {
    name: String,
    rounds: Vec<f64>,
    rpcs: Vec<f64>,
    times_ms: Vec<f64>,
    done: usize,
    exact: usize,
    recall_hits: usize,
    asked: usize,
    /// Requests of the main walk that were answered (late ones included).
    answered: Vec<f64>,
    /// Requests of the main walk that got no answer (dead or unreachable
    /// peers: the part of the cost no lookup can avoid without knowing
    /// who is gone before asking).
    unanswered: Vec<f64>,
    /// Side queries (`lookup_widen`).
    side: Vec<f64>,
}

fn phase(
    sim: &mut Sim,
    rng: &mut StdRng,
    name: String,
    lookups: usize,
    k: usize,
    ticker: &mut Ticker<'_>,
) -> Phase {
    let online: Vec<usize> = (0..sim.len()).filter(|&i| sim.is_online(i)).collect();
    let mut ph = Phase {
        name,
        rounds: Vec::new(),
        rpcs: Vec::new(),
        times_ms: Vec::new(),
        done: 0,
        exact: 0,
        recall_hits: 0,
        asked: 0,
        answered: Vec::new(),
        unanswered: Vec::new(),
        side: Vec::new(),
    };
    for j in 0..lookups {
        let from = online[rng.gen_range(0..online.len())];
        let target = Address::random(rng);
        let started = sim.elapsed();
        ph.asked += 1;
        let Ok(id) = sim.lookup(from, target) else {
            continue;
        };
        sim.run_while(Duration::from_secs(120), |s| {
            s.events().iter().any(|(n, e)| {
                *n == from && matches!(e, Event::LookupDone { id: got, .. } if *got == id)
            })
        });
        let took = sim.elapsed() - started;
        let mut result = None;
        for (node, e) in sim.take_events() {
            if let Event::LookupDone { id: got, result: r } = e {
                if node == from && got == id {
                    result = Some(r);
                }
            }
        }
        ticker.tick(sim, || {
            format!("{}: {}/{} lookups", ph.name, j + 1, lookups)
        });
        let Some(r) = result else { continue };
        ph.done += 1;
        let truth = sim.true_closest(&target, k, Some(from));
        let got: Vec<Address> = r.closest.iter().map(|c| c.id).collect();
        ph.recall_hits += got.iter().filter(|a| truth.contains(a)).count();
        if got == truth {
            ph.exact += 1;
        }
        ph.rounds.push(f64::from(r.rounds));
        ph.rpcs.push(f64::from(r.rpcs));
        ph.answered.push(f64::from(r.answered));
        ph.unanswered.push(f64::from(r.unanswered));
        ph.side.push(f64::from(r.side_queries));
        ph.times_ms.push(took.as_secs_f64() * 1000.0);
    }
    ph
}

/// Run the scenario.
pub(super) fn run(p: &Params, progress: Progress<'_>) -> Report {
    let config = Config::default();
    let k = config.k.get();
    let mut sim = new_sim(p);
    let mut ticker = Ticker::new(progress);
    grow(&mut sim, p, &config, &mut ticker);
    let mut rng = StdRng::seed_from_u64(p.seed ^ 0x6c6f_6f6b);
    let healthy = phase(
        &mut sim,
        &mut rng,
        "all online".into(),
        p.lookups,
        k,
        &mut ticker,
    );
    let mut phases = vec![healthy];
    if p.dead > 0.0 {
        let n = sim.len();
        let target = (n as f64 * p.dead).round() as usize;
        let mut gone = 0;
        while gone < target {
            let i = rng.gen_range(0..n);
            if sim.is_online(i) {
                sim.set_online(i, false);
                gone += 1;
            }
        }
        let name = format!("{:.0}% silently gone", p.dead * 100.0);
        phases.push(phase(&mut sim, &mut rng, name, p.lookups, k, &mut ticker));
    }

    let mut t = Table::new(
        &format!("Lookups ({} per phase, k = {k})", p.lookups),
        &[
            "phase",
            "done",
            "exact k",
            "recall",
            "rounds mean",
            "rounds p95",
            "RPCs mean",
            "RPCs p95",
            "answered / unanswered / side",
            "time p95",
        ],
    );
    for ph in &phases {
        t.row(vec![
            ph.name.clone(),
            format!("{}/{}", ph.done, ph.asked),
            format!("{}/{}", ph.exact, ph.asked),
            format!(
                "{:.3}",
                ph.recall_hits as f64 / (ph.asked * k).max(1) as f64
            ),
            format!("{:.2}", mean(&ph.rounds)),
            format!("{:.0}", quantile(&ph.rounds, 0.95)),
            format!("{:.1}", mean(&ph.rpcs)),
            format!("{:.0}", quantile(&ph.rpcs, 0.95)),
            format!(
                "{:.1} / {:.1} / {:.1}",
                mean(&ph.answered),
                mean(&ph.unanswered),
                mean(&ph.side)
            ),
            format!("{:.0} ms", quantile(&ph.times_ms, 0.95)),
        ]);
    }
    let mut notes = Vec::new();
    if phases.len() == 2 {
        notes.push(format!(
            "RPCs with {:.0}% gone / healthy: {:.2}x",
            p.dead * 100.0,
            mean(&phases[1].rpcs) / mean(&phases[0].rpcs).max(1e-9)
        ));
        notes.push(format!(
            "answered RPCs with {:.0}% gone / healthy RPCs: {:.2}x (the rest went to peers that were gone)",
            p.dead * 100.0,
            (mean(&phases[1].answered) + mean(&phases[1].side))
                / mean(&phases[0].rpcs).max(1e-9)
        ));
    }
    let histogram = |ph: &Phase| {
        let max = ph.rounds.iter().fold(0.0f64, |a, &b| a.max(b)) as usize;
        let mut counts = vec![0usize; max + 1];
        for &r in &ph.rounds {
            counts[r as usize] += 1;
        }
        Series {
            name: ph.name.clone(),
            points: counts
                .iter()
                .enumerate()
                .skip(1)
                .map(|(r, &c)| (r as f64, c as f64))
                .collect(),
        }
    };
    let charts = vec![Chart {
        title: "Lookup rounds".into(),
        x_label: "rounds (longest chain of sequential requests)".into(),
        y_label: "lookups".into(),
        kind: ChartKind::Bars,
        series: phases.iter().map(histogram).collect(),
    }];
    Report {
        heading: format!(
            "comm-sim lookup: {} nodes, seed {}, {} lookups per phase",
            p.nodes, p.seed, p.lookups
        ),
        tables: vec![t, run_table(&sim, p, &ticker)],
        charts,
        notes,
        trace_hash: sim.trace_hash(),
    }
}
