//! The closed-loop load: one keep-alive HTTP/1.1 connection per client,
//! each sending its next request as soon as the previous answer arrived, and
//! the latency summary of a run.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bookstore_core::inventory::Book;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{Op, RunCpu, RunResult};

/// How long one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the frontend is.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// `host:port`, to connect to and for the Host header.
    authority: String,
}

impl Target {
    pub(super) fn parse(url: &str) -> anyhow::Result<Self> {
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
pub(super) struct Workload {
    items: Vec<u64>,
    topics: Vec<String>,
}

impl Workload {
    pub(super) fn new(books: &[Book]) -> Self {
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
pub(super) struct Connection {
    sender: SendRequest<Empty<Bytes>>,
}

impl Connection {
    pub(super) async fn open(target: &Target) -> anyhow::Result<Self> {
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
    pub(super) async fn get(
        &mut self,
        target: &Target,
        path: &str,
    ) -> anyhow::Result<(u16, Bytes)> {
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

pub(super) async fn connect_all(
    target: &Target,
    clients: usize,
) -> anyhow::Result<Vec<Connection>> {
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(Connection::open(target).await?);
    }
    Ok(connections)
}

/// Counts of one run.
#[derive(Debug, Default)]
pub(super) struct Counts {
    errors: u64,
    failed_buys: u64,
    elapsed: Duration,
}

/// Opens `clients` connections and runs `op` on them (a warm-up).
pub(super) async fn measure(
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
pub(super) async fn run_clients(
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

pub(super) fn summarize(
    op: Op,
    clients: usize,
    counts: &Counts,
    mut latencies: Vec<u64>,
    cpu: RunCpu,
) -> RunResult {
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
        cpu,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::generated_inventory;
    use bookstore_core::inventory;

    #[test]
    fn percentiles_and_means() {
        let counts = Counts {
            elapsed: Duration::from_secs(1),
            ..Counts::default()
        };
        let latencies: Vec<u64> = (1..=100).map(|i| i * 1_000_000).collect();
        let run = summarize(Op::Buy, 3, &counts, latencies, RunCpu::default());
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
