//! Runs the deterministic simulation of a tier over many seeds and prints
//! the first failing seed with the trace of the events that led to it.
//!
//! ```sh
//! cargo run -p bookstore-replication --example simulate -- --seeds 100000
//! cargo run -p bookstore-replication --example simulate -- --seed 4242   # replay one, full trace
//! cargo run -p bookstore-replication --example simulate -- --seeds 100 --skip-read-confirmation
//! ```
//!
//! `--skip-read-confirmation` breaks the store on purpose: linearizable reads
//! are answered without the primary's confirming batch, and the checker
//! finds the stale reads of paused and cut-off members.

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
    let skip_read_confirmation = args.iter().any(|a| a == "--skip-read-confirmation");
    let started = Instant::now();
    if let Some(seed) = value("--seed") {
        return match sim::run(SimConfig {
            seed,
            full_trace: true,
            skip_read_confirmation,
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
    let (mut steps, mut faults, mut buys, mut reads) = (0, 0, 0, 0);
    for seed in first..first + seeds {
        match sim::run(SimConfig {
            seed,
            full_trace: false,
            skip_read_confirmation,
        }) {
            Ok(report) => {
                steps += report.steps;
                faults += report.faults;
                buys += report.acknowledged_buys;
                reads += report.linearizable_reads;
            }
            Err(failure) => {
                println!("{}", sim::describe(&failure));
                let broken = if skip_read_confirmation {
                    " --skip-read-confirmation"
                } else {
                    ""
                };
                println!(
                    "replay: cargo run -p bookstore-replication --example simulate -- --seed {seed}{broken}"
                );
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "{seeds} seeds from {first}: every invariant held ({} steps, {} faults, {} acknowledged buys and {} checked linearizable reads per run on average) in {:.1?}",
        steps / seeds.max(1),
        faults / seeds.max(1),
        buys / seeds.max(1),
        reads / seeds.max(1),
        started.elapsed()
    );
    ExitCode::SUCCESS
}
