//! `bookstore`: one binary for every part of the store.
//!
//! - `bookstore up`: the whole store on this machine, as child processes.
//! - `bookstore status`: a table of every member (`--json` for scripts).
//! - `bookstore fault kill|pause|resume|shutdown|recover MEMBER`: break a
//!   member of a local store on purpose.
//! - `bookstore console`: a live web page of a local store, on loopback.
//! - `bookstore client`: the original's test cases 1-4 against a frontend.
//! - `bookstore bench`: the load generator and the per-tier latency tables.
//! - `bookstore frontend|catalog|order|cache`: run one service (what `up`
//!   and the Kubernetes pods run).

use bookstore::{bench, client, console, fault, roles, status, up};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "bookstore", version, about = "A replicated online bookstore.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole store locally: frontend, cache, two catalog and two
    /// order replicas, and the coordinator. Ctrl-C stops it.
    Up(up::UpArgs),
    /// Show every member: role, phase, epoch, applied index, lag, in sync,
    /// pid; then the coordinator's view of each tier. `--json` prints one
    /// JSON object per line instead (with addresses and state digests).
    Status(status::StatusArgs),
    /// Break a member of a local store on purpose: kill (SIGKILL), pause
    /// (SIGSTOP) and resume (SIGCONT), shutdown and recover (it plays dead).
    Fault(fault::FaultArgs),
    /// Serve a live page of the local store on 127.0.0.1:8090: each tier's
    /// members, buy and lookup rates, the failover timeline, and buttons to
    /// break members.
    Console(console::ConsoleArgs),
    /// Run the original's test cases 1-4 against a frontend.
    Client(client::ClientArgs),
    /// Measure throughput and latency of search, lookup and buy at several
    /// client counts, with the per-tier breakdown from the services' metrics.
    Bench(bench::BenchArgs),
    /// Run one service: frontend, catalog, order or cache (what `up` and
    /// the Kubernetes pods run).
    #[command(flatten)]
    Role(roles::RoleCommand),
}

fn main() -> anyhow::Result<()> {
    bookstore_core::telemetry::init();
    let cli = Cli::parse();
    let cli = match cli.command {
        // The load generator builds its own (smaller) runtime.
        Command::Bench(args) => return bench::main(args),
        command => Cli { command },
    };
    let runtime = runtime_for(&cli.command)?;
    runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Fault(args) => fault::run(args).await,
            Command::Console(args) => console::run(args).await,
            Command::Client(args) => client::run(args).await,
            Command::Bench(_) => anyhow::bail!("bench runs on its own runtime"),
            Command::Role(command) => {
                let (role, args) = command.into_parts();
                roles::run(role, args).await
            }
        }
    })
}

/// The default worker threads of a service process (see [`runtime_for`]):
/// none, so each service runs on its main thread alone (a current-thread
/// runtime; SQLite work still goes to the blocking pool).
const DEFAULT_SERVICE_WORKERS: usize = 0;

/// Worker threads of a service process's runtime (`BOOKSTORE_WORKER_THREADS`;
/// 0 runs it on the main thread alone).
const WORKER_THREADS_VAR: &str = "BOOKSTORE_WORKER_THREADS";

/// The runtime a command runs on. A service process gets a small one: six of
/// them share the machine, and each extra worker thread costs memory (its
/// stack and malloc arena) and cross-thread wake-ups on every request. On the
/// two-core machine of the README's Performance section a current-thread
/// runtime spent about a quarter less CPU per lookup and per buy than two
/// workers did, and left every process one core to use.
fn runtime_for(command: &Command) -> anyhow::Result<tokio::runtime::Runtime> {
    let service = matches!(command, Command::Role(_));
    let workers = match std::env::var(WORKER_THREADS_VAR) {
        Ok(value) => Some(value.trim().parse::<usize>().map_err(|_| {
            anyhow::anyhow!("{WORKER_THREADS_VAR} must be a number of threads, not {value:?}")
        })?),
        Err(_) => None,
    };
    let workers = if service {
        workers.or(Some(DEFAULT_SERVICE_WORKERS))
    } else {
        workers
    };
    let runtime = match workers {
        Some(0) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    Ok(runtime)
}
