//! A bounded fuzz of every port of a store run by `bookstore up` as real
//! processes: the public and peer ports of the frontend, the cache, both
//! catalog and both order members, and the coordinator's port.
//!
//! From one fixed seed it sends a fixed number of requests per port, made by
//! mutating the port's real requests: random and mutated methods, paths
//! (percent-encoded bytes that are not UTF-8 among them), queries (too long
//! ones too), headers (content types, bytes beyond ASCII), and bodies
//! (truncated, wrongly typed, random bytes that are not UTF-8, chunked, and
//! 10 MB ones over every port's limit). Every request is well-formed HTTP,
//! so the store's own code answers each one, and:
//! - no answer is a 5xx, and every request is answered (none hangs);
//! - every error answer (4xx) has the JSON body `{"error": {"code", "message"}}`;
//! - afterwards no process has crashed, the store settles, and a lookup, a
//!   buy and the order's read-back answer correctly.
//!
//! Peer requests mostly carry the peer token, so they reach the routes'
//! JSON extractors. A peer is trusted with what it sends, so a request that
//! carries the token to a route that changes state only ever has a body that
//! cannot be a valid one (truncated, wrongly typed, random, wrong content
//! type, oversized), and the fault-injection routes (`/peer/shutdown`,
//! `/peer/recover`) are never called with the token: the fuzz tests input
//! handling, not the replication protocol.
//!
//! Finally it checks what the README says hyper answers itself, before the
//! store's code runs: a request it cannot parse (400) and a URI over 64 KiB
//! (414), both with an empty body.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bookstore_core::cluster::{Member, Role};
use serde_json::Value;
use support::{TempDir, UpProcess, local_cluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The fuzz's seed: a failure replays exactly.
const SEED: u64 = 0x5eed_b00c_f022;
/// Requests per port (13 ports).
const REQUESTS_PER_PORT: usize = 500;
/// One request in this many has a body over every port's limit.
const OVERSIZED_ONE_IN: u32 = 60;
/// An oversized body: above the peer ports' 4 MiB and the public ports' 16 KiB.
const OVERSIZED_BODY_BYTES: usize = 10 * 1024 * 1024;
/// How long one request may take to be answered: the services' own time
/// limit (30 s) plus a margin. A request without an answer by then hangs.
const ANSWER_LIMIT: Duration = Duration::from_secs(40);
/// The bound on the whole fuzz.
const FUZZ_LIMIT: Duration = Duration::from_secs(600);
/// Failures listed in full when the test fails.
const FAILURES_SHOWN: usize = 20;
/// Stock of every book: the fuzz's own buys never sell one out.
const STOCK: u64 = 1_000_000;
const BOOKS: u64 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fuzzed_requests_to_every_port_get_json_errors_never_a_5xx_and_leave_the_store_working() {
    let dir = TempDir::new("fuzz");
    let inventory = dir.path().join("inventory.txt");
    let books: String = (1..=BOOKS)
        .map(|i| format!("init,{i},{STOCK},10,fuzz,Fuzz Book {i}\n"))
        .collect();
    std::fs::write(&inventory, books).expect("write inventory");
    let up = tokio::task::block_in_place(|| {
        UpProcess::start(dir.path(), local_cluster(2), &inventory, &[])
    });
    let token = std::fs::read_to_string(up.data_dir.join("peer-token"))
        .expect("peer token")
        .trim()
        .to_owned();
    let pids_before = child_pids(&up);

    let mut rng = fastrand::Rng::with_seed(SEED);
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let deadline = Instant::now() + FUZZ_LIMIT;
    for port in ports(&up) {
        for n in 0..REQUESTS_PER_PORT {
            assert!(
                Instant::now() < deadline,
                "the fuzz did not finish within {FUZZ_LIMIT:?}"
            );
            let request = fuzzed_request(&mut rng, &port, &token);
            let described = format!("{} #{n}: {}", port.name, request.describe());
            match send(&port.address, &request).await {
                Ok(answer) => {
                    *statuses.entry(answer.status).or_default() += 1;
                    if let Err(problem) = check_answer(&request, &answer) {
                        failures.push(format!("{described}: {problem}"));
                    }
                }
                Err(problem) => failures.push(format!("{described}: {problem}")),
            }
        }
    }
    println!("answers by status: {statuses:?}");
    assert!(
        failures.is_empty(),
        "{} of the fuzzed requests failed; the first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(FAILURES_SHOWN)].join("\n")
    );

    assert_eq!(child_pids(&up), pids_before, "no process crashed");
    tokio::task::block_in_place(|| up.wait_until_settled(Duration::from_secs(60)));
    the_store_still_answers(&up.frontend()).await;
    hyper_answers_unparsable_requests_itself(&up).await;
}

/// One port under test: where it is and which requests it serves.
struct Port {
    name: String,
    address: String,
    kind: PortKind,
    routes: Vec<Route>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PortKind {
    Public,
    Peer,
}

/// A real request of a port, the seed of its mutations.
#[derive(Clone)]
struct Route {
    method: &'static str,
    path: &'static str,
    query: &'static str,
    body: &'static str,
}

const fn get(path: &'static str, query: &'static str) -> Route {
    Route {
        method: "GET",
        path,
        query,
        body: "",
    }
}

const fn post(path: &'static str, body: &'static str) -> Route {
    Route {
        method: "POST",
        path,
        query: "",
        body,
    }
}

/// Routes every port serves.
const SHARED_ROUTES: &[Route] = &[get("/healthz", ""), get("/readyz", ""), get("/metrics", "")];

const FRONTEND_PUBLIC: &[Route] = &[
    get("/search", "topic=fuzz"),
    get("/lookup", "item_number=2"),
    get("/buy", "item_number=3&request_id=fuzz-1"),
    post("/buy", r#"{"item_number": 4, "request_id": "fuzz-2"}"#),
    get("/orders/1", ""),
];
const CACHE_PUBLIC: &[Route] = &[
    get("/search", "topic=fuzz"),
    get("/lookup", "item_number=2"),
];
const CATALOG_PUBLIC: &[Route] = &[
    get("/query_by_topic", "topic=fuzz"),
    get("/query_by_item", "item_number=2"),
];
const ORDER_PUBLIC: &[Route] = &[
    post("/buy", r#"{"item_number": 5, "request_id": "fuzz-3"}"#),
    get("/orders/1", ""),
];
const TOPOLOGY: &str = r#"{"tier": "catalog", "epoch": 1, "primary": 0, "members": []}"#;
const DIRECTORY_PEER: &[Route] = &[post("/peer/directory", TOPOLOGY)];
const CACHE_PEER: &[Route] = &[
    post(
        "/peer/cache/put",
        r#"{"key": {"kind": "lookup", "key": 1}, "version": 1, "value": {"stock": 1}}"#,
    ),
    post(
        "/peer/cache/invalidate",
        r#"{"item_numbers": [1], "version": 1}"#,
    ),
    post("/peer/cache/clear", "{}"),
];
const MEMBER_PEER: &[Route] = &[
    post(
        "/peer/replicate",
        r#"{"epoch": 1, "leader": 0, "leader_incarnation": 1, "entries": []}"#,
    ),
    post(
        "/peer/snapshot",
        r#"{"ordinal": 1, "incarnation": 1, "peer": "127.0.0.1:1"}"#,
    ),
    post("/peer/join", r#"{"ordinal": 1, "incarnation": 1}"#),
    post("/peer/topology", TOPOLOGY),
    post("/peer/shutdown", ""),
    post("/peer/recover", ""),
    get("/peer/status", ""),
];
const CATALOG_PEER: &[Route] = &[
    post(
        "/peer/submit",
        r#"{"op": "set_cost", "item_number": 1, "cost": 10}"#,
    ),
    post(
        "/peer/catalog/update",
        r#"{"item_number": 1, "stock_delta": -1, "request_id": "fuzz-4"}"#,
    ),
];
const ORDER_PEER: &[Route] = &[post(
    "/peer/submit",
    r#"{"op": "record", "request_id": "fuzz-5", "item_number": 1}"#,
)];
const COORDINATOR_PEER: &[Route] = &[
    post(
        "/coordinator/heartbeat",
        r#"{"tier": "order", "ordinal": 0, "incarnation": 1, "peer": "127.0.0.1:1", "public": "127.0.0.1:2", "phase": "following", "epoch": 1, "applied": 0, "data_epoch": 1}"#,
    ),
    post(
        "/coordinator/in-sync",
        r#"{"tier": "order", "epoch": 1, "primary": 0, "in_sync": [0]}"#,
    ),
    get("/coordinator/topology", ""),
];

/// Peer routes that play dead or come back: never called with the token.
const FAULT_INJECTION: &[&str] = &["/peer/shutdown", "/peer/recover"];

/// Every port of the store, with the routes it serves.
fn ports(up: &UpProcess) -> Vec<Port> {
    let mut ports = Vec::new();
    for member in &up.cluster.members {
        let (public, peer): (&[Route], Vec<&[Route]>) = match member.role {
            Role::Frontend => (FRONTEND_PUBLIC, vec![DIRECTORY_PEER]),
            Role::Cache => (CACHE_PUBLIC, vec![CACHE_PEER]),
            Role::Catalog => (CATALOG_PUBLIC, vec![MEMBER_PEER, CATALOG_PEER]),
            Role::Order => (ORDER_PUBLIC, vec![MEMBER_PEER, ORDER_PEER, DIRECTORY_PEER]),
            Role::Coordinator => (&[], vec![COORDINATOR_PEER]),
        };
        if let Some(address) = &member.public {
            ports.push(port(member, "public", address, PortKind::Public, &[public]));
        }
        ports.push(port(member, "peer", &member.peer, PortKind::Peer, &peer));
    }
    ports
}

fn port(member: &Member, which: &str, address: &str, kind: PortKind, routes: &[&[Route]]) -> Port {
    let mut all: Vec<Route> = SHARED_ROUTES.to_vec();
    for routes in routes {
        all.extend_from_slice(routes);
    }
    Port {
        name: format!("{} {which}", member.name()),
        address: address.to_owned(),
        kind,
        routes: all,
    }
}

/// A request exactly as it goes on the wire.
struct FuzzRequest {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    chunked: bool,
}

impl FuzzRequest {
    fn describe(&self) -> String {
        let target: String = self.target.chars().take(120).collect();
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(80)]).into_owned();
        format!(
            "{} {target} ({} header(s), {} body bytes{}: {body:?})",
            self.method,
            self.headers.len(),
            self.body.len(),
            if self.chunked { ", chunked" } else { "" }
        )
    }

    fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

fn fuzzed_request(rng: &mut fastrand::Rng, port: &Port, token: &str) -> FuzzRequest {
    let route = port.routes[rng.usize(..port.routes.len())].clone();
    let method = fuzzed_method(rng, route.method);
    let path = if rng.u8(..4) == 0 {
        mutated_path(rng, route.path)
    } else {
        route.path.to_owned()
    };
    let query = fuzzed_query(rng, route.query);
    let target = if query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{query}")
    };
    let mut with_token = port.kind == PortKind::Peer && rng.u8(..10) < 8;
    if FAULT_INJECTION.contains(&path.as_str()) {
        with_token = false;
    }
    // A trusted request to a route that changes state gets only bodies that
    // cannot be valid (see the module comment).
    let changes_state = port.kind == PortKind::Peer
        && with_token
        && method == "POST"
        && port
            .routes
            .iter()
            .any(|r| r.method == "POST" && r.path == path);
    let (body, content_type) = fuzzed_body(rng, route.body, changes_state);
    let mut headers = Vec::new();
    if with_token {
        headers.push((
            "x-bookstore-peer-token".to_owned(),
            token.as_bytes().to_vec(),
        ));
    }
    if let Some(content_type) = content_type {
        headers.push(("content-type".to_owned(), content_type));
    }
    for _ in 0..rng.usize(..3) {
        headers.push(fuzzed_header(rng));
    }
    FuzzRequest {
        method,
        target,
        headers,
        chunked: !body.is_empty() && rng.u8(..4) == 0,
        body,
    }
}

fn fuzzed_method(rng: &mut fastrand::Rng, real: &str) -> String {
    const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
    match rng.u8(..10) {
        0..=5 => real.to_owned(),
        6..=8 => METHODS[rng.usize(..METHODS.len())].to_owned(),
        _ => (0..rng.usize(1..8))
            .map(|_| char::from(b'A' + rng.u8(..26)))
            .collect(),
    }
}

/// Characters a URI path may hold as they are (RFC 3986 pchar, and `/`).
const PATH_CHARS: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/";

fn random_path_piece(rng: &mut fastrand::Rng) -> String {
    match rng.u8(..6) {
        // A percent-encoded byte, often one that is not UTF-8 on its own.
        0 | 1 => format!("%{:02X}", rng.u8(..)),
        2 => "%FF%FE".to_owned(),
        3 => "/..".to_owned(),
        4 => rng.u64(..).to_string(),
        _ => char::from(PATH_CHARS[rng.usize(..PATH_CHARS.len())]).to_string(),
    }
}

fn mutated_path(rng: &mut fastrand::Rng, path: &str) -> String {
    let mut path = path.to_owned();
    for _ in 0..rng.usize(1..4) {
        let at = {
            let mut at = rng.usize(..=path.len());
            while !path.is_char_boundary(at) {
                at -= 1;
            }
            at
        };
        match rng.u8(..3) {
            0 => path.insert_str(at, &random_path_piece(rng)),
            1 if at < path.len() => {
                path.remove(at);
            }
            _ => path.push_str(&format!("/{}", random_path_piece(rng))),
        }
    }
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    path
}

/// Characters a query may hold as they are.
const QUERY_CHARS: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$'()*,;:@/?+";

fn fuzzed_query(rng: &mut fastrand::Rng, real: &str) -> String {
    const KEYS: &[&str] = &["item_number", "topic", "request_id", "x", ""];
    match rng.u8(..8) {
        0 | 1 => real.to_owned(),
        2 => String::new(),
        3 => format!("{real}&{}", real),
        4 => {
            // Longer than the 1 KiB query limit.
            let value: String = (0..rng.usize(1000..3000))
                .map(|_| char::from(QUERY_CHARS[rng.usize(..QUERY_CHARS.len())]))
                .collect();
            format!("topic={value}")
        }
        _ => {
            let pairs: Vec<String> = (0..rng.usize(1..4))
                .map(|_| {
                    let key = KEYS[rng.usize(..KEYS.len())];
                    let value: String = (0..rng.usize(..12))
                        .map(|_| match rng.u8(..4) {
                            0 => format!("%{:02X}", rng.u8(..)),
                            1 => ["-1", "1.5", "99999999999999999999", "1"][rng.usize(..4)]
                                .to_owned(),
                            _ => {
                                char::from(QUERY_CHARS[rng.usize(..QUERY_CHARS.len())]).to_string()
                            }
                        })
                        .collect();
                    match rng.u8(..5) {
                        0 => key.to_owned(),
                        _ => format!("{key}={value}"),
                    }
                })
                .collect();
            pairs.join(if rng.bool() { "&" } else { "&&" })
        }
    }
}

/// A body and its content type. With `must_be_invalid`, the body can never
/// be a valid request of the route.
fn fuzzed_body(
    rng: &mut fastrand::Rng,
    real: &str,
    must_be_invalid: bool,
) -> (Vec<u8>, Option<Vec<u8>>) {
    const JSON: &[u8] = b"application/json";
    const CONTENT_TYPES: &[&[u8]] = &[
        b"text/plain",
        b"application/x-www-form-urlencoded",
        b"application/json; charset=utf-8",
        b"application/jsonx",
        b"multipart/form-data",
        b"\xff\xfe/\x80",
    ];
    if rng.u32(..OVERSIZED_ONE_IN) == 0 {
        return (vec![b'{'; OVERSIZED_BODY_BYTES], Some(JSON.to_vec()));
    }
    let json = Some(JSON.to_vec());
    match rng.u8(..8) {
        0 if !must_be_invalid => (real.as_bytes().to_vec(), json),
        1 if !must_be_invalid => (flip_bytes(rng, real.as_bytes()), json),
        // The real body with a content type the route does not take.
        0 | 1 => {
            let content_type = CONTENT_TYPES[rng.usize(..2)].to_vec();
            let content_type = if rng.bool() { Some(content_type) } else { None };
            (real.as_bytes().to_vec(), content_type)
        }
        2 => (truncated(rng, real), json),
        3 => (wrongly_typed(real), json),
        4 => {
            let wrong = ["[]", "null", "\"text\"", "7", "true", "{}"];
            (wrong[rng.usize(..wrong.len())].as_bytes().to_vec(), json)
        }
        5 => (random_bytes(rng), json),
        6 => {
            let content_type = CONTENT_TYPES[rng.usize(..CONTENT_TYPES.len())].to_vec();
            (random_bytes(rng), Some(content_type))
        }
        _ => (Vec::new(), None),
    }
}

/// A strict prefix of a JSON object: never complete JSON.
fn truncated(rng: &mut fastrand::Rng, real: &str) -> Vec<u8> {
    let real = real.as_bytes();
    if real.len() < 2 {
        return b"{".to_vec();
    }
    real[..rng.usize(1..real.len())].to_vec()
}

/// The body with its first number replaced by a string: wrong in type.
fn wrongly_typed(real: &str) -> Vec<u8> {
    match real.find(|c: char| c.is_ascii_digit()) {
        Some(at) => {
            let end = real[at..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(real.len(), |n| at + n);
            format!("{}\"not a number\"{}", &real[..at], &real[end..]).into_bytes()
        }
        None => b"{\"op\": 1}".to_vec(),
    }
}

/// Random bytes, often not UTF-8, that cannot start a JSON object or array.
fn random_bytes(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..rng.usize(1..512)).map(|_| rng.u8(..)).collect();
    if matches!(bytes[0], b'{' | b'[' | b' ' | b'\t' | b'\r' | b'\n') {
        bytes[0] = 0xfe;
    }
    bytes
}

fn flip_bytes(rng: &mut fastrand::Rng, real: &[u8]) -> Vec<u8> {
    let mut bytes = real.to_vec();
    if bytes.is_empty() {
        return random_bytes(rng);
    }
    for _ in 0..rng.usize(1..4) {
        let at = rng.usize(..bytes.len());
        bytes[at] = rng.u8(..);
    }
    bytes
}

fn fuzzed_header(rng: &mut fastrand::Rng) -> (String, Vec<u8>) {
    const NAMES: &[&str] = &[
        "accept",
        "accept-encoding",
        "user-agent",
        "x-bookstore-peer-token",
        "x-forwarded-for",
        "cookie",
        "x-fuzz",
    ];
    let name = NAMES[rng.usize(..NAMES.len())].to_owned();
    // Visible ASCII, spaces and bytes beyond ASCII (obs-text), never CR or LF.
    let value: Vec<u8> = (0..rng.usize(..40))
        .map(|_| match rng.u8(..4) {
            0 => rng.u8(0x80..=0xff),
            _ => rng.u8(0x20..0x7f),
        })
        .collect();
    (name, value)
}

/// What came back.
struct Answer {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// Sends `request` on a fresh connection (`Connection: close`) and reads the
/// answer, writing and reading at once so that a server that answers before
/// it has read a large body is heard.
async fn send(address: &str, request: &FuzzRequest) -> Result<Answer, String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut reader, mut writer) = stream.into_split();
    let wire = encode(address, request);
    let writing = tokio::spawn(async move {
        // A server that refused the body closes early: the rest is not sent.
        let _ = writer.write_all(&wire).await;
        let _ = writer.flush().await;
        writer
    });
    let mut received = Vec::new();
    let read = tokio::time::timeout(ANSWER_LIMIT, reader.read_to_end(&mut received)).await;
    writing.abort();
    match read {
        Err(_) => return Err(format!("no answer within {ANSWER_LIMIT:?}")),
        Ok(Err(error)) if received.is_empty() => {
            return Err(format!("the connection failed without an answer: {error}"));
        }
        Ok(_) => {}
    }
    parse_answer(&received, request.is_head())
}

fn encode(address: &str, request: &FuzzRequest) -> Vec<u8> {
    let mut wire = format!(
        "{} {} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n",
        request.method, request.target
    )
    .into_bytes();
    for (name, value) in &request.headers {
        wire.extend_from_slice(name.as_bytes());
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(value);
        wire.extend_from_slice(b"\r\n");
    }
    if request.chunked {
        wire.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
        for chunk in request.body.chunks(64 * 1024) {
            wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            wire.extend_from_slice(chunk);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\n");
    } else {
        if !request.body.is_empty() {
            wire.extend_from_slice(
                format!("content-length: {}\r\n", request.body.len()).as_bytes(),
            );
        }
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(&request.body);
    }
    wire
}

fn parse_answer(received: &[u8], head_request: bool) -> Result<Answer, String> {
    let end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no complete answer head in {} bytes", received.len()))?;
    let head = String::from_utf8_lossy(&received[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))?;
    let mut headers = BTreeMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let raw = &received[end + 4..];
    let body = if head_request {
        Vec::new()
    } else if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        dechunk(raw)?
    } else {
        raw.to_vec()
    };
    Ok(Answer {
        status,
        content_type: headers.get("content-type").cloned(),
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk without its size line")?;
        let size = std::str::from_utf8(&raw[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .ok_or("a chunk size that is not hex")?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = raw.get(..size).ok_or("a chunk cut short")?;
        body.extend_from_slice(chunk);
        raw = raw.get(size + 2..).ok_or("a chunk without its end")?;
    }
}

/// No 5xx; an error answer is JSON of the shared shape.
fn check_answer(request: &FuzzRequest, answer: &Answer) -> Result<(), String> {
    if answer.status >= 500 {
        return Err(format!(
            "answered {} {:?}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ));
    }
    if answer.status < 400 {
        return Ok(());
    }
    let json_type = answer
        .content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("application/json"));
    if !json_type {
        return Err(format!(
            "{} with content type {:?}: {:?}",
            answer.status,
            answer.content_type,
            String::from_utf8_lossy(&answer.body)
        ));
    }
    if request.is_head() {
        return Ok(());
    }
    let body: Value = serde_json::from_slice(&answer.body).map_err(|e| {
        format!(
            "{} whose body is not JSON ({e}): {:?}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        )
    })?;
    let shaped = body["error"]["code"]
        .as_str()
        .is_some_and(|c| !c.is_empty())
        && body["error"]["message"].is_string();
    if !shaped {
        return Err(format!("{} without the error shape: {body}", answer.status));
    }
    Ok(())
}

fn child_pids(up: &UpProcess) -> BTreeMap<String, Option<u32>> {
    up.cluster
        .members
        .iter()
        .filter(|m| m.role != Role::Coordinator)
        .map(|m| (m.name(), up.pid(&m.name())))
        .collect()
}

/// A lookup, a buy and the order's read-back answer correctly.
async fn the_store_still_answers(frontend: &str) {
    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = http.clone();
        async move {
            let response = http
                .get(&url)
                .send()
                .await
                .expect("a request after the fuzz");
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("a JSON answer");
            assert_eq!(status, 200, "{url}: {body}");
            body
        }
    };
    let book = get(format!("{frontend}/lookup?item_number=1")).await;
    assert_eq!(book["result"]["title"], "Fuzz Book 1", "{book}");
    let stock = book["result"]["stock"].as_u64().expect("stock");
    let buy = get(format!(
        "{frontend}/buy?item_number=1&request_id=after-the-fuzz"
    ))
    .await;
    assert_eq!(buy["result"], "Success", "{buy}");
    let number = buy["order_number"].as_u64().expect("an order number");
    let order = get(format!("{frontend}/orders/{number}")).await;
    assert_eq!(order["result"]["item_number"], 1, "{order}");
    assert_eq!(order["result"]["request_id"], "after-the-fuzz", "{order}");
    let book = get(format!("{frontend}/lookup?item_number=1")).await;
    assert_eq!(book["result"]["stock"], stock - 1, "{book}");
}

/// What the README says hyper answers before the store's code runs, with an
/// empty body: a request it cannot parse, and a URI over 64 KiB.
async fn hyper_answers_unparsable_requests_itself(up: &UpProcess) {
    let frontend = up
        .cluster
        .first(Role::Frontend)
        .expect("a frontend")
        .public
        .clone()
        .expect("a public address");
    let cases: [(&str, Vec<u8>, u16); 2] = [
        (
            "a request line that is not HTTP",
            b"NOT HTTP AT ALL\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a URI over 64 KiB",
            format!(
                "GET /lookup?item_number={} HTTP/1.1\r\nhost: x\r\n\r\n",
                "1".repeat(70 * 1024)
            )
            .into_bytes(),
            414,
        ),
    ];
    for (what, wire, expected) in cases {
        let mut stream = TcpStream::connect(&frontend).await.expect("connect");
        stream.write_all(&wire).await.expect("send");
        let mut received = Vec::new();
        tokio::time::timeout(ANSWER_LIMIT, stream.read_to_end(&mut received))
            .await
            .expect("an answer in time")
            .expect("read the answer");
        let answer = parse_answer(&received, false).expect("an HTTP answer");
        assert_eq!(answer.status, expected, "{what}");
        assert!(answer.body.is_empty(), "{what}: {:?}", answer.body);
    }
    // And the store keeps answering.
    the_store_still_answers_a_lookup(&frontend).await;
}

async fn the_store_still_answers_a_lookup(frontend: &str) {
    let answer = reqwest::get(format!("http://{frontend}/lookup?item_number=2"))
        .await
        .expect("a lookup");
    assert_eq!(answer.status().as_u16(), 200);
}
