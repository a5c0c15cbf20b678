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
//! it also reports each service process's resident memory, idle and peak.
//!
//! Buys need stock: `bookstore bench --write-inventory FILE` writes a large
//! generated inventory to start the store from (`bookstore up --inventory
//! FILE` on a fresh data directory), and the bench reads the same file to
//! choose item numbers and topics.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bookstore_core::cluster::{ClusterConfig, Role};
use bookstore_core::inventory::{self, Book};
use clap::{Args, ValueEnum};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::settings::{DEFAULT_CLUSTER, DEFAULT_DATA_DIR, DEFAULT_INVENTORY};
use crate::up::{PIDS_FILE, Pids};

/// How long one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a metrics scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Topics of a generated inventory (the original's two, and two more).
const TOPICS: [&str; 4] = [
    "distributed systems",
    "graduate school",
    "operating systems",
    "databases",
];
/// A tier row is shown when it saw at least this share of a run's requests;
/// rarer series are background traffic (heartbeats, topology polls).
const MIN_TIER_SHARE: f64 = 0.01;

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
    /// The data directory of `bookstore up`: its pids file gives the service
    /// processes whose memory is reported (skipped when absent).
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

/// Books `1..=count`, spread over [`TOPICS`], each with `stock` copies.
pub fn generated_inventory(count: u64, stock: u64) -> Vec<Book> {
    (1..=count)
        .map(|item_number| Book {
            item_number,
            stock,
            cost: 10 + item_number % 40,
            topic: TOPICS[(item_number as usize - 1) % TOPICS.len()].to_owned(),
            title: format!("Benchmark Book {item_number}"),
        })
        .collect()
}

fn write_inventory(path: &Path, count: u64, stock: u64) -> anyhow::Result<()> {
    ensure!(count > 0, "--books must be at least 1");
    let text = format!(
        "# A generated inventory for `bookstore bench`: {count} books, {stock} copies each.\n{}",
        inventory::render(&generated_inventory(count, stock))
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "Wrote {count} books with {stock} copies each to {}.",
        path.display()
    );
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
    let books = inventory::load(&args.inventory).context("loading the inventory (--inventory)")?;
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
    if pids.is_empty() {
        notes.push(format!(
            "no memory report: no pids file in {} (pass --data-dir of `bookstore up`)",
            args.data_dir.display()
        ));
    }
    let idle: BTreeMap<String, (f64, f64)> = pids
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
            let (result, latencies) =
                run_clients(&target, &workload, op, connections, args.requests, limit).await;
            let run = summarize(op, clients, &result, latencies);
            if let (Some(scraper), Some(before)) = (&scraper, before) {
                let after = scraper.scrape().await?;
                tiers.extend(tier_rows(op, clients, &run, &before, &after));
            }
            runs.push(run);
        }
    }
    let memory = pids
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

/// Where the frontend is.
#[derive(Debug, Clone)]
struct Target {
    /// `host:port`, to connect to and for the Host header.
    authority: String,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: hyper::Uri = url
            .parse()
            .with_context(|| format!("--frontend {url:?} is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("--frontend must be an http:// URL, not {url:?}");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("--frontend {url:?} has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        Ok(Self {
            authority: format!("{}:{port}", authority.host()),
        })
    }
}

/// What the requests ask for: random books and topics of the inventory.
struct Workload {
    items: Vec<u64>,
    topics: Vec<String>,
}

impl Workload {
    fn new(books: &[Book]) -> Self {
        let topics: BTreeSet<&str> = books.iter().map(|b| b.topic.as_str()).collect();
        Self {
            items: books.iter().map(|b| b.item_number).collect(),
            topics: topics.into_iter().map(encode_query_value).collect(),
        }
    }

    fn path(&self, op: Op, rng: &mut fastrand::Rng) -> String {
        match op {
            Op::Search => format!(
                "/search?topic={}",
                self.topics[rng.usize(..self.topics.len())]
            ),
            Op::Lookup => format!(
                "/lookup?item_number={}",
                self.items[rng.usize(..self.items.len())]
            ),
            Op::LookupLinearizable => format!(
                "/lookup?item_number={}&consistency=linearizable",
                self.items[rng.usize(..self.items.len())]
            ),
            Op::Buy => format!(
                "/buy?item_number={}",
                self.items[rng.usize(..self.items.len())]
            ),
        }
    }
}

/// Percent-encodes a query value (`+` for spaces, as forms do).
fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            other => {
                let _ = write!(out, "%{other:02X}");
            }
        }
    }
    out
}

/// One client's keep-alive connection.
struct Connection {
    sender: SendRequest<Empty<Bytes>>,
}

impl Connection {
    async fn open(target: &Target) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(&target.authority)
            .await
            .with_context(|| format!("connecting to the frontend at {}", target.authority))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake with the frontend")?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the peer closes.
            let _ = connection.await;
        });
        Ok(Self { sender })
    }

    /// Sends `GET path` and reads the whole answer: its status and body.
    async fn get(&mut self, target: &Target, path: &str) -> anyhow::Result<(u16, Bytes)> {
        self.sender.ready().await?;
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, &target.authority)
            .body(Empty::<Bytes>::new())?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

async fn connect_all(target: &Target, clients: usize) -> anyhow::Result<Vec<Connection>> {
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(Connection::open(target).await?);
    }
    Ok(connections)
}

/// Counts of one run.
#[derive(Debug, Default)]
struct Counts {
    errors: u64,
    failed_buys: u64,
    elapsed: Duration,
}

/// Opens `clients` connections and runs `op` on them (a warm-up).
async fn measure(
    target: &Target,
    workload: &Arc<Workload>,
    op: Op,
    clients: usize,
    requests: u64,
    limit: Duration,
) -> anyhow::Result<()> {
    let connections = connect_all(target, clients).await?;
    let (counts, latencies) = run_clients(target, workload, op, connections, requests, limit).await;
    ensure!(
        counts.errors < latencies.len() as u64 || latencies.is_empty(),
        "every request failed; is the store up at {}?",
        target.authority
    );
    Ok(())
}

/// Runs the closed loop: each connection sends its next request when the
/// previous one is answered, until `requests` were sent or `limit` passed.
async fn run_clients(
    target: &Target,
    workload: &Arc<Workload>,
    op: Op,
    connections: Vec<Connection>,
    requests: u64,
    limit: Duration,
) -> (Counts, Vec<u64>) {
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + limit;
    let mut tasks = tokio::task::JoinSet::new();
    for (index, connection) in connections.into_iter().enumerate() {
        let target = target.clone();
        let workload = workload.clone();
        let issued = issued.clone();
        tasks.spawn(async move {
            client_loop(
                target,
                workload,
                op,
                connection,
                issued,
                requests,
                deadline,
                index as u64,
            )
            .await
        });
    }
    let mut counts = Counts::default();
    let mut latencies = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((client_counts, client_latencies)) = joined {
            counts.errors += client_counts.errors;
            counts.failed_buys += client_counts.failed_buys;
            latencies.extend(client_latencies);
        }
    }
    counts.elapsed = started.elapsed();
    (counts, latencies)
}

/// One client: latencies in nanoseconds of every answered request.
#[allow(clippy::too_many_arguments)]
async fn client_loop(
    target: Target,
    workload: Arc<Workload>,
    op: Op,
    mut connection: Connection,
    issued: Arc<AtomicU64>,
    requests: u64,
    deadline: Instant,
    seed: u64,
) -> (Counts, Vec<u64>) {
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed);
    let mut counts = Counts::default();
    let mut latencies = Vec::with_capacity(4096);
    loop {
        if issued.fetch_add(1, Ordering::Relaxed) >= requests || Instant::now() >= deadline {
            break;
        }
        let path = workload.path(op, &mut rng);
        let sent = Instant::now();
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, connection.get(&target, &path)).await;
        let latency = sent.elapsed();
        latencies.push(latency.as_nanos() as u64);
        match answer {
            Ok(Ok((200, body))) => {
                if op == Op::Buy && !contains(&body, b"\"Success\"") {
                    counts.failed_buys += 1;
                }
            }
            Ok(Ok(_)) => counts.errors += 1,
            Ok(Err(_)) | Err(_) => {
                counts.errors += 1;
                // The connection may be broken: open a new one, once.
                match Connection::open(&target).await {
                    Ok(fresh) => connection = fresh,
                    Err(_) => break,
                }
            }
        }
    }
    (counts, latencies)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn summarize(op: Op, clients: usize, counts: &Counts, mut latencies: Vec<u64>) -> RunResult {
    latencies.sort_unstable();
    let n = latencies.len();
    let ms = |nanos: u64| nanos as f64 / 1e6;
    let percentile = |p: f64| -> f64 {
        if n == 0 {
            return 0.0;
        }
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        ms(latencies[rank - 1])
    };
    let elapsed = counts.elapsed.as_secs_f64();
    RunResult {
        op,
        clients,
        requests: n as u64,
        errors: counts.errors,
        failed_buys: counts.failed_buys,
        elapsed_s: elapsed,
        throughput: if elapsed > 0.0 {
            n as f64 / elapsed
        } else {
            0.0
        },
        mean_ms: if n == 0 {
            0.0
        } else {
            latencies.iter().map(|&l| ms(l)).sum::<f64>() / n as f64
        },
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        max_ms: latencies.last().map_or(0.0, |&l| ms(l)),
    }
}

/// Scrapes every service's `/metrics`.
struct Scraper {
    client: reqwest::Client,
    urls: Vec<String>,
}

/// A series: its name and its labels, sorted.
type SeriesKey = (String, Vec<(String, String)>);
/// Each series' value, summed over the scraped processes.
type Samples = BTreeMap<SeriesKey, f64>;

impl Scraper {
    fn new(cluster: &ClusterConfig) -> anyhow::Result<Self> {
        let urls = cluster
            .members
            .iter()
            .filter(|m| m.role != Role::Coordinator)
            .filter_map(|m| m.public_url())
            .map(|url| format!("{url}/metrics"))
            .collect();
        let client = reqwest::Client::builder()
            .timeout(SCRAPE_TIMEOUT)
            .build()
            .context("building the metrics client")?;
        Ok(Self { client, urls })
    }

    /// The `_sum` and `_count` series of the duration histograms, summed
    /// over processes (the two catalog members both label `catalog`). A
    /// member that does not answer (down, or not started with `--no-cache`)
    /// is left out.
    async fn scrape(&self) -> anyhow::Result<Samples> {
        let mut samples = Samples::new();
        for url in &self.urls {
            let Ok(response) = self.client.get(url).send().await else {
                continue;
            };
            let Ok(text) = response.text().await else {
                continue;
            };
            for (key, value) in parse_exposition(&text) {
                *samples.entry(key).or_default() += value;
            }
        }
        Ok(samples)
    }
}

/// The `_sum`/`_count` samples of the two duration histograms in a
/// Prometheus text exposition; other lines are skipped.
fn parse_exposition(text: &str) -> Vec<(SeriesKey, f64)> {
    text.lines()
        .filter(|line| {
            line.starts_with("bookstore_http_request_duration_seconds_")
                || line.starts_with("bookstore_upstream_duration_seconds_")
        })
        .filter_map(parse_sample)
        .filter(|((name, _), _)| name.ends_with("_sum") || name.ends_with("_count"))
        .collect()
}

/// Parses `name{a="x",b="y"} value` (or `name value`).
fn parse_sample(line: &str) -> Option<(SeriesKey, f64)> {
    let Some(open) = line.find('{') else {
        let (name, value) = line.split_once(' ')?;
        return Some(((name.to_owned(), Vec::new()), value.trim().parse().ok()?));
    };
    let name = &line[..open];
    let mut rest = &line[open + 1..];
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            rest = after;
            break;
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut close = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => {
                    close = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        labels.push((key.to_owned(), value));
        rest = &after[close? + 1..];
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    labels.sort();
    Some(((name.to_owned(), labels), value))
}

fn label<'a>(labels: &'a [(String, String)], key: &str) -> &'a str {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// The hops a run went through: every route and upstream call whose count
/// grew by at least [`MIN_TIER_SHARE`] of the run's requests, with its mean.
fn tier_rows(
    op: Op,
    clients: usize,
    run: &RunResult,
    before: &Samples,
    after: &Samples,
) -> Vec<TierRow> {
    // tier name -> (sum growth, count growth)
    let mut growth: BTreeMap<(u8, String), (f64, f64)> = BTreeMap::new();
    for ((name, labels), value) in after {
        let grown = value - before.get(&(name.clone(), labels.clone())).unwrap_or(&0.0);
        let Some(base) = name
            .strip_suffix("_sum")
            .or_else(|| name.strip_suffix("_count"))
        else {
            continue;
        };
        let (order, tier) = match base {
            "bookstore_http_request_duration_seconds" => {
                let service = label(labels, "service");
                let route = label(labels, "route");
                if service == "frontend" && route == op.route() {
                    (0, format!("client → frontend ({}, server time)", route))
                } else {
                    (
                        tier_order(service, "") + 1,
                        format!("{service} server {route}"),
                    )
                }
            }
            "bookstore_upstream_duration_seconds" => {
                let from = label(labels, "from");
                let to = label(labels, "to");
                let operation = label(labels, "operation");
                (tier_order(from, to), format!("{from} → {to} ({operation})"))
            }
            _ => continue,
        };
        let entry = growth.entry((order, tier)).or_default();
        if name.ends_with("_sum") {
            entry.0 += grown;
        } else {
            entry.1 += grown;
        }
    }
    let floor = (run.requests as f64 * MIN_TIER_SHARE).max(1.0);
    growth
        .into_iter()
        .filter(|(_, (_, count))| *count >= floor)
        .map(|((_, tier), (sum, count))| TierRow {
            op,
            clients,
            tier,
            calls: count.round() as u64,
            mean_ms: sum / count * 1e3,
        })
        .collect()
}

/// Orders hops as a request travels: frontend, cache, catalog, order, replicas.
fn tier_order(from: &str, to: &str) -> u8 {
    let rank = |role: &str| match role {
        "frontend" => 1,
        "cache" => 2,
        "catalog" => 3,
        "order" => 4,
        "catalog-replica" => 5,
        "order-replica" => 6,
        _ => 7,
    };
    rank(from) * 10 + rank(to)
}

fn read_pids(data_dir: &Path) -> BTreeMap<String, u32> {
    std::fs::read(data_dir.join(PIDS_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Pids>(&bytes).ok())
        .map(|pids| pids.members)
        .unwrap_or_default()
}

/// (resident, peak resident) memory of `pid` in MB, from /proc.
fn memory_of(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The report as text tables.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "bookstore bench: {} (each run: at most {} requests or {} s)",
        report.frontend, report.requests_per_run, report.duration_limit_s
    );
    let _ = writeln!(
        out,
        "\n{:<7} {:>7} {:>9} {:>7} {:>7} {:>12} {:>9} {:>9} {:>9} {:>9}",
        "op",
        "clients",
        "requests",
        "errors",
        "failed",
        "throughput/s",
        "mean ms",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    for run in &report.runs {
        let _ = writeln!(
            out,
            "{:<7} {:>7} {:>9} {:>7} {:>7} {:>12.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            run.op.as_str(),
            run.clients,
            run.requests,
            run.errors,
            run.failed_buys,
            run.throughput,
            run.mean_ms,
            run.p50_ms,
            run.p99_ms,
            run.max_ms
        );
    }
    let ops: BTreeSet<Op> = report.runs.iter().map(|r| r.op).collect();
    for op in ops {
        let rows: Vec<&TierRow> = report.tiers.iter().filter(|t| t.op == op).collect();
        if rows.is_empty() {
            continue;
        }
        let clients: Vec<usize> = report
            .runs
            .iter()
            .filter(|r| r.op == op)
            .map(|r| r.clients)
            .collect();
        let mut tiers: Vec<&str> = Vec::new();
        for row in &rows {
            if !tiers.contains(&row.tier.as_str()) {
                tiers.push(&row.tier);
            }
        }
        let _ = write!(
            out,
            "\nPer-tier mean latency of {} in ms, by concurrent clients\n{:<52}",
            op.as_str(),
            "tier"
        );
        for c in &clients {
            let _ = write!(out, " {:>8}", c);
        }
        let _ = write!(out, "\n{:<52}", "client → frontend (end to end, bench)");
        for run in report.runs.iter().filter(|r| r.op == op) {
            let _ = write!(out, " {:>8.3}", run.mean_ms);
        }
        out.push('\n');
        for tier in tiers {
            let _ = write!(out, "{tier:<52}");
            for c in &clients {
                match rows.iter().find(|r| r.tier == tier && r.clients == *c) {
                    Some(row) => {
                        let _ = write!(out, " {:>8.3}", row.mean_ms);
                    }
                    None => {
                        let _ = write!(out, " {:>8}", "-");
                    }
                }
            }
            out.push('\n');
        }
    }
    if !report.memory.is_empty() {
        let _ = writeln!(
            out,
            "\nMemory (MB resident)\n{:<12} {:>8} {:>8} {:>8} {:>8}",
            "member", "pid", "idle", "after", "peak"
        );
        for row in &report.memory {
            let _ = writeln!(
                out,
                "{:<12} {:>8} {:>8.1} {:>8.1} {:>8.1}",
                row.member, row.pid, row.idle_rss_mb, row.after_rss_mb, row.peak_rss_mb
            );
        }
    }
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_histogram_samples_with_labels() {
        let text = "# HELP x y\n\
            bookstore_upstream_duration_seconds_sum{from=\"frontend\",operation=\"lookup\",outcome=\"ok\",to=\"cache\"} 0.5\n\
            bookstore_upstream_duration_seconds_count{from=\"frontend\",operation=\"lookup\",outcome=\"ok\",to=\"cache\"} 10\n\
            bookstore_upstream_duration_seconds_bucket{from=\"frontend\",le=\"0.1\"} 3\n\
            bookstore_http_request_duration_seconds_count{method=\"GET\",route=\"/a \\\"b\\\"\",service=\"frontend\",status=\"200\"} 4\n";
        let samples = parse_exposition(text);
        assert_eq!(samples.len(), 3, "{samples:?}");
        let ((name, labels), value) = &samples[1];
        assert_eq!(name, "bookstore_upstream_duration_seconds_count");
        assert_eq!(label(labels, "to"), "cache");
        assert_eq!(*value, 10.0);
        assert_eq!(label(&samples[2].0.1, "route"), "/a \"b\"");
    }

    #[test]
    fn tier_means_come_from_the_growth_between_scrapes() {
        let parse = |text: &str| -> Samples { parse_exposition(text).into_iter().collect() };
        let before = parse(
            "bookstore_upstream_duration_seconds_sum{from=\"frontend\",operation=\"lookup\",outcome=\"ok\",to=\"cache\"} 1\n\
             bookstore_upstream_duration_seconds_count{from=\"frontend\",operation=\"lookup\",outcome=\"ok\",to=\"cache\"} 100\n",
        );
        let after = parse(
            "bookstore_upstream_duration_seconds_sum{from=\"frontend\",operation=\"lookup\",outcome=\"ok\",to=\"cache\"} 1.2\n\
             bookstore_upstream_duration_seconds_count{from=\"frontend\",operation=\"lookup\",outcome=\"ok\",to=\"cache\"} 300\n",
        );
        let run = summarize(Op::Lookup, 1, &Counts::default(), vec![1_000; 200]);
        let rows = tier_rows(Op::Lookup, 1, &run, &before, &after);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].tier, "frontend → cache (lookup)");
        assert_eq!(rows[0].calls, 200);
        assert!((rows[0].mean_ms - 1.0).abs() < 1e-9, "{}", rows[0].mean_ms);
    }

    #[test]
    fn percentiles_and_means() {
        let counts = Counts {
            elapsed: Duration::from_secs(1),
            ..Counts::default()
        };
        let latencies: Vec<u64> = (1..=100).map(|i| i * 1_000_000).collect();
        let run = summarize(Op::Buy, 3, &counts, latencies);
        assert_eq!(run.requests, 100);
        assert_eq!(run.p50_ms, 50.0);
        assert_eq!(run.p99_ms, 99.0);
        assert_eq!(run.max_ms, 100.0);
        assert!((run.mean_ms - 50.5).abs() < 1e-9);
        assert!((run.throughput - 100.0).abs() < 1e-9);
    }

    #[test]
    fn generated_inventories_parse_and_encode_topics() {
        let books = generated_inventory(10, 1000);
        let parsed = inventory::parse(&inventory::render(&books)).expect("valid inventory");
        assert_eq!(parsed, books);
        let workload = Workload::new(&books);
        assert!(workload.topics.contains(&"distributed+systems".to_owned()));
        assert_eq!(encode_query_value("a&b=c"), "a%26b%3Dc");
    }
}
