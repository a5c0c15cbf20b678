//! Runs the deterministic simulation of a tier over many seeds and prints
//! the first failing seed with the trace of the events that led to it.
//!
//! ```sh
//! cargo run -p bookstore-replication --example simulate -- --seeds 100000
//! cargo run -p bookstore-replication --example simulate -- --seed 4242   # replay one, full trace
//! cargo run -p bookstore-replication --example simulate -- --seeds 100 --check-reads
//! ```
//!
//! `--check-reads` adds reads to the linearizability check (stale reads from
//! a paused or cut-off member are a known gap, see the README).

use std::process::ExitCode;
use std::time::Instant;

use bookstore_replication::sim::{self, SimConfig};

/// Seeds run when `--seeds` is not given.
const DEFAULT_SEEDS: u64 = 1000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let check_reads = args.iter().any(|a| a == "--check-reads");
    let started = Instant::now();
    if let Some(seed) = value("--seed") {
        return match sim::run(SimConfig {
            seed,
            full_trace: true,
            check_reads,
        }) {
            Ok(report) => {
                println!("seed {seed}: every invariant held: {report:?}");
                ExitCode::SUCCESS
            }
            Err(failure) => {
                println!("{}", sim::describe(&failure));
                ExitCode::FAILURE
            }
        };
    }
    let seeds = value("--seeds").unwrap_or(DEFAULT_SEEDS);
    let first = value("--from").unwrap_or(0);
    let (mut steps, mut faults) = (0, 0);
    for seed in first..first + seeds {
        match sim::run(SimConfig {
            seed,
            full_trace: false,
            check_reads,
        }) {
            Ok(report) => {
                steps += report.steps;
                faults += report.faults;
            }
            Err(failure) => {
                println!("{}", sim::describe(&failure));
                println!(
                    "replay: cargo run -p bookstore-replication --example simulate -- --seed {seed}"
                );
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "{seeds} seeds from {first}: every invariant held ({} steps and {} faults per run on average) in {:.1?}",
        steps / seeds.max(1),
        faults / seeds.max(1),
        started.elapsed()
    );
    ExitCode::SUCCESS
}
