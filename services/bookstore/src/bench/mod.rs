//! `bookstore bench`: a closed-loop load generator for a running store, and
//! the original's evaluation tables in one command.
//!
//! For each operation (`search`, `lookup`, `buy`) and each number of
//! concurrent clients it runs one measurement: every client holds its own
//! keep-alive HTTP/1.1 connection to the frontend and sends its next request
//! as soon as the previous answer arrived (a closed loop). A run stops after
//! `--requests` requests or `--duration` seconds, whichever comes first.
//!
//! It prints, per operation and client count: throughput, mean, p50, p99 and
//! max latency, errors (transport failures and non-200 answers) and failed
//! buys (the book was sold out). Then the per-tier breakdown: it scrapes
//! every service's `/metrics` just before and just after each run and
//! divides the growth of each histogram's `_sum` by the growth of its
//! `_count`, giving the mean time of every hop during that run alone
//! (client to frontend, frontend to cache, to catalog, to order, order to
//! catalog, primary to replica, ...). With the pids file of `bookstore up`
//! it also reports each service process's resident memory, idle and peak,
//! and the CPU time every store process spent per request of each run (the
//! figure that bounds throughput on a machine of few cores), beside the
//! bench's own.
//!
//! Buys need stock: `bookstore bench --write-inventory FILE` writes a large
//! generated inventory to start the store from (`bookstore up --inventory
//! FILE` on a fresh data directory), and the bench reads the same file to
//! choose item numbers and topics.

mod inventory;
mod load;
mod procs;
mod render;
mod scrape;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use bookstore_core::cluster::ClusterConfig;
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::settings::{DEFAULT_CLUSTER, DEFAULT_DATA_DIR, DEFAULT_INVENTORY};

pub use self::inventory::generated_inventory;
use self::inventory::write_inventory;
use self::load::{Target, Workload, connect_all, measure, run_clients, summarize};
use self::procs::{CpuReading, cpu_per_request, memory_of, read_pids, store_processes};
pub use self::render::render;
use self::scrape::{Scraper, tier_rows};

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The frontend's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub frontend: String,
    /// The operations to measure, in order (also `lookup-linearizable`).
    #[arg(long, value_delimiter = ',', default_value = "search,lookup,buy")]
    pub ops: Vec<Op>,
    /// The numbers of concurrent clients to measure each operation with.
    #[arg(long, value_delimiter = ',', default_value = "1,3,5,9,32")]
    pub clients: Vec<usize>,
    /// The most requests one run (one operation, one client count) sends.
    #[arg(long, default_value_t = 20_000)]
    pub requests: u64,
    /// The longest one run lasts, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Requests sent by one client before each operation's runs, unmeasured
    /// (they fill the cache).
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
    /// The inventory the store was started from: where item numbers and
    /// topics come from.
    #[arg(long, default_value = DEFAULT_INVENTORY)]
    pub inventory: PathBuf,
    /// The cluster file: every service's `/metrics` is scraped for the
    /// per-tier breakdown.
    #[arg(long, env = "BOOKSTORE_CLUSTER", default_value = DEFAULT_CLUSTER)]
    pub cluster: PathBuf,
    /// Skip the per-tier breakdown (no `/metrics` scrapes).
    #[arg(long)]
    pub no_tiers: bool,
    /// The data directory of `bookstore up`: its pids file gives the store's
    /// processes whose memory and CPU per request are reported (without it,
    /// no memory report and the store's CPU is n/a).
    #[arg(long, env = "BOOKSTORE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Print the results as one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Worker threads of the load generator (1 runs it on one thread).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Write a generated inventory for benchmarks to this file and exit
    /// (start the store with `bookstore up --inventory FILE`).
    #[arg(long, value_name = "FILE")]
    pub write_inventory: Option<PathBuf>,
    /// Books in a generated inventory.
    #[arg(long, default_value_t = 64)]
    pub books: u64,
    /// Stock of each book in a generated inventory.
    #[arg(long, default_value_t = 10_000_000)]
    pub stock: u64,
}

/// One operation of the public API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Search,
    Lookup,
    /// `lookup` with `consistency=linearizable`: past the cache, to the
    /// catalog primary, which confirms its leadership with a replica round
    /// trip per batch of reads.
    #[value(name = "lookup-linearizable")]
    #[serde(rename = "lookup-linearizable")]
    LookupLinearizable,
    Buy,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Search => "search",
            Op::Lookup => "lookup",
            Op::LookupLinearizable => "lookup-linearizable",
            Op::Buy => "buy",
        }
    }

    /// The frontend route the op is served by (its metrics label).
    fn route(self) -> &'static str {
        match self {
            Op::Search => "/search",
            Op::Lookup | Op::LookupLinearizable => "/lookup",
            Op::Buy => "/buy",
        }
    }
}

/// Runs the command on its own runtime: by default a single-threaded one,
/// so the load generator takes at most one core from the store it measures.
pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.write_inventory {
        return write_inventory(path, args.books, args.stock);
    }
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let report = runtime.block_on(run(&args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// Everything one bench command measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub frontend: String,
    pub requests_per_run: u64,
    pub duration_limit_s: f64,
    pub runs: Vec<RunResult>,
    /// Per-tier means of every run; empty with `--no-tiers`.
    pub tiers: Vec<TierRow>,
    /// Resident memory of each service process (from `bookstore up`'s pids).
    pub memory: Vec<MemoryRow>,
    /// Why something was left out (no metrics, no pids file).
    pub notes: Vec<String>,
}

/// One operation at one client count.
#[derive(Debug, Serialize)]
pub struct RunResult {
    pub op: Op,
    pub clients: usize,
    pub requests: u64,
    pub errors: u64,
    pub failed_buys: u64,
    pub elapsed_s: f64,
    pub throughput: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// CPU time per request during this run.
    pub cpu: RunCpu,
}

/// CPU time per request of one run, in µs, from /proc (user plus system).
/// `None` is "not known", never zero: the store's pids are not known (a
/// store elsewhere), or a process was gone or restarted during the run.
#[derive(Debug, Default, Serialize)]
pub struct RunCpu {
    /// Every store process together (the members and `bookstore up`).
    pub store_us_per_request: Option<f64>,
    /// The load generator itself, apart from the store.
    pub bench_us_per_request: Option<f64>,
    /// Each store process; empty when the pids are not known.
    pub processes: Vec<ProcessCpu>,
}

/// One store process's CPU time per request during a run.
#[derive(Debug, Serialize)]
pub struct ProcessCpu {
    pub member: String,
    pub pid: u32,
    pub us_per_request: Option<f64>,
}

/// The mean time of one hop during one run.
#[derive(Debug, Serialize)]
pub struct TierRow {
    pub op: Op,
    pub clients: usize,
    /// e.g. `frontend → cache (lookup)` or `catalog server /query_by_item`.
    pub tier: String,
    pub calls: u64,
    pub mean_ms: f64,
}

/// A service process's resident memory.
#[derive(Debug, Serialize)]
pub struct MemoryRow {
    pub member: String,
    pub pid: u32,
    pub idle_rss_mb: f64,
    pub after_rss_mb: f64,
    /// The peak resident memory over the process's life (VmHWM).
    pub peak_rss_mb: f64,
}

async fn run(args: &BenchArgs) -> anyhow::Result<Report> {
    ensure!(!args.ops.is_empty(), "--ops names no operation");
    ensure!(
        !args.clients.is_empty() && args.clients.iter().all(|&c| c > 0),
        "--clients must list positive numbers"
    );
    ensure!(args.requests > 0, "--requests must be at least 1");
    ensure!(
        args.duration.is_finite() && args.duration > 0.0,
        "--duration must be a positive number of seconds"
    );
    let target = Target::parse(&args.frontend)?;
    let books = bookstore_core::inventory::load(&args.inventory)
        .context("loading the inventory (--inventory)")?;
    let workload = Arc::new(Workload::new(&books));
    let mut notes = Vec::new();
    let scraper = if args.no_tiers {
        None
    } else {
        match ClusterConfig::load(&args.cluster) {
            Ok(cluster) => Some(Scraper::new(&cluster)?),
            Err(error) => {
                notes.push(format!("no per-tier breakdown: {error}"));
                None
            }
        }
    };
    let pids = read_pids(&args.data_dir);
    if pids.is_none() {
        notes.push(format!(
            "no memory report and no store CPU (n/a): no pids file in {} (pass --data-dir of `bookstore up`)",
            args.data_dir.display()
        ));
    }
    let members = pids.as_ref().map(|p| p.members.clone()).unwrap_or_default();
    let processes = pids.as_ref().map(store_processes).unwrap_or_default();
    let idle: BTreeMap<String, (f64, f64)> = members
        .iter()
        .filter_map(|(name, &pid)| Some((name.clone(), memory_of(pid)?)))
        .collect();

    let limit = Duration::from_secs_f64(args.duration);
    let mut runs = Vec::new();
    let mut tiers = Vec::new();
    for &op in &args.ops {
        if args.warmup > 0 {
            measure(&target, &workload, op, 1, args.warmup, limit)
                .await
                .with_context(|| format!("warming up {}", op.as_str()))?;
        }
        for &clients in &args.clients {
            let connections = connect_all(&target, clients).await?;
            let before = match &scraper {
                Some(scraper) => Some(scraper.scrape().await?),
                None => None,
            };
            let cpu_before = CpuReading::take(&processes);
            let (result, latencies) =
                run_clients(&target, &workload, op, connections, args.requests, limit).await;
            let cpu_after = CpuReading::take(&processes);
            let requests = latencies.len() as u64;
            let cpu = cpu_per_request(&cpu_before, &cpu_after, requests);
            let run = summarize(op, clients, &result, latencies, cpu);
            if let (Some(scraper), Some(before)) = (&scraper, before) {
                let after = scraper.scrape().await?;
                tiers.extend(tier_rows(op, clients, &run, &before, &after));
            }
            runs.push(run);
        }
    }
    if runs
        .iter()
        .any(|run| !run.cpu.processes.is_empty() && run.cpu.store_us_per_request.is_none())
    {
        notes.push(
            "store CPU n/a for some runs: a store process was gone or restarted during the run"
                .to_owned(),
        );
    }
    let memory = members
        .iter()
        .filter_map(|(name, &pid)| {
            let (after, peak) = memory_of(pid)?;
            let idle = idle.get(name).map_or(after, |(rss, _)| *rss);
            Some(MemoryRow {
                member: name.clone(),
                pid,
                idle_rss_mb: idle,
                after_rss_mb: after,
                peak_rss_mb: peak,
            })
        })
        .collect();
    Ok(Report {
        frontend: args.frontend.clone(),
        requests_per_run: args.requests,
        duration_limit_s: args.duration,
        runs,
        tiers,
        memory,
        notes,
    })
}
