//! comm-sim: runs the real `Node` code for thousands of simulated nodes on
//! virtual time and reports what the network did.
//!
//! ```text
//! cargo run --release --bin comm-sim -- lookup   [--nodes 1000] [--dead 0.3] [--lookups 300]
//! cargo run --release --bin comm-sim -- delivery [--nodes 10000] [--hours 24] [--churn weibull]
//! cargo run --release --bin comm-sim -- purge    [--nodes 1000] [--hours 8]
//! ```
//!
//! The report goes to stdout and to `OUT/comm-sim-SCENARIO-NODES.txt`, the
//! plot to `OUT/comm-sim-SCENARIO-NODES.svg` (OUT is `--out`, default the
//! current directory); progress goes to stderr. The last line is the trace
//! hash: the same arguments give the same hash on any machine.

use std::alloc::{GlobalAlloc, Layout};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Parser;
use comm::sim::report::svg;
use comm::sim::scenario::{self, Churn, Params};

/// The system allocator, counting the bytes allocated and not yet freed,
/// so that the report can tell the nodes' memory from what the allocator
/// holds in reserve (resident size counts both).
struct Counting;

static IN_USE: AtomicU64 = AtomicU64::new(0);

/// Add `add` and take `sub` from the count. A load and a store rather
/// than a locked read-modify-write: the simulation runs on one thread,
/// and a locked instruction on every allocation and free cost about 2% of
/// a run. Were another thread to allocate at the same instant, one update
/// could be lost, which would skew a statistic and nothing else.
fn count(add: usize, sub: usize) {
    let n = IN_USE.load(Ordering::Relaxed);
    IN_USE.store(
        n.wrapping_add(add as u64).wrapping_sub(sub as u64),
        Ordering::Relaxed,
    );
}

// SAFETY: every call is passed unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counter is only arithmetic on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !p.is_null() {
            count(layout.size(), 0);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with `layout`.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        count(0, layout.size());
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size(), 0);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the rest
        // of the caller's contract is passed on.
        let p = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size, layout.size());
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn heap_in_use() -> u64 {
    IN_USE.load(Ordering::Relaxed)
}

/// Simulate a comm network on virtual time.
#[derive(Parser, Debug)]
#[command(name = "comm-sim", version)]
struct Args {
    /// lookup, delivery or purge.
    scenario: String,
    /// Nodes in the network.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Virtual hours of workload (delivery, purge).
    #[arg(long, default_value_t = 24.0)]
    hours: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Node sessions: none, weibull, or weibull:SHAPE:SESSION_MIN:DOWNTIME_MIN.
    #[arg(long, default_value = "weibull")]
    churn: Churn,
    /// Lookups per phase (lookup).
    #[arg(long, default_value_t = 300)]
    lookups: usize,
    /// Messages sent (delivery, purge).
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Fraction of nodes silently gone in the second phase (lookup).
    #[arg(long, default_value_t = 0.3)]
    dead: f64,
    /// Sign with Ed25519 instead of the simulator's stand-in (slower).
    #[arg(long)]
    real_crypto: bool,
    /// Directory for the report and the plot.
    #[arg(long, default_value = ".")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let params = Params {
        nodes: args.nodes,
        hours: args.hours,
        seed: args.seed,
        lookups: args.lookups,
        messages: args.messages,
        dead: args.dead,
        churn: args.churn,
        real_crypto: args.real_crypto,
        heap_in_use: Some(heap_in_use),
    };
    let mut progress = |line: &str| eprintln!("  {line}");
    let report = match scenario::run(&args.scenario, &params, &mut progress) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("comm-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let text = report.to_string();
    print!("{text}");
    let stem = format!("comm-sim-{}-{}", args.scenario, args.nodes);
    let txt = args.out.join(format!("{stem}.txt"));
    let plot = args.out.join(format!("{stem}.svg"));
    let written = std::fs::create_dir_all(&args.out)
        .and_then(|_| std::fs::write(&txt, &text))
        .and_then(|_| std::fs::write(&plot, svg(&report)));
    match written {
        Ok(()) => {
            eprintln!("wrote {} and {}", txt.display(), plot.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("comm-sim: cannot write to {}: {e}", args.out.display());
            ExitCode::FAILURE
        }
    }
}
