//! Service tests: every service of the store started in-process on loopback
//! ports (the coordinator, a cache, two catalog and two order replicas, a
//! frontend), driven through the public API with real HTTP.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bookstore_core::cluster::{ClusterConfig, Role};
use bookstore_core::http::{Listeners, always_ready, serve, service_router};
use bookstore_core::inventory::{self, Book};
use bookstore_core::metrics::Metrics;
use bookstore_core::plan;
use bookstore_core::shutdown::{self, ShutdownTrigger};
use bookstore_core::token::PeerToken;
use bookstore_replication::coordinator::CoordinatorConfig;
use bookstore_replication::coordinator::durable::FileStore;
use bookstore_replication::coordinator_server::CoordinatorServer;
use bookstore_replication::node::NodeConfig;
use serde_json::Value;
use support::{TempDir, frontend_url, local_cluster};

/// Heartbeats in tests are faster than the default so the store settles fast.
const TEST_HEARTBEAT: Duration = Duration::from_millis(200);

struct Store {
    cluster: ClusterConfig,
    token: PeerToken,
    http: reqwest::Client,
    _stop: ShutdownTrigger,
    _dir: TempDir,
}

impl Store {
    async fn start(books: Vec<Book>) -> Self {
        let dir = TempDir::new("services");
        let cluster = local_cluster(2);
        let token = PeerToken::generate();
        let (stop, shutdown) = shutdown::channel();
        start_coordinator(&cluster, &token, dir.path()).await;
        let member =
            |role: Role, ordinal: u32| cluster.member(role, ordinal).expect("member").clone();
        let cache = member(Role::Cache, 0);
        let coordinator_url = member(Role::Coordinator, 0).peer_url();
        let listeners = |m: &bookstore_core::cluster::Member| {
            let public = m.public.clone().expect("public");
            let peer = m.peer.clone();
            async move { Listeners::bind(&public, &peer).await.expect("bind") }
        };
        tokio::spawn(bookstore_cache::run(
            Default::default(),
            listeners(&cache).await,
            token.clone(),
            shutdown.clone(),
        ));
        for ordinal in 0..2 {
            let catalog = member(Role::Catalog, ordinal);
            let settings = bookstore_catalog::CatalogSettings {
                node: node_config(&catalog, dir.path(), &coordinator_url),
                inventory: books.clone(),
                cache_peer: Some(cache.peer.clone()),
            };
            tokio::spawn(bookstore_catalog::run(
                settings,
                listeners(&catalog).await,
                token.clone(),
                shutdown.clone(),
            ));
            let order = member(Role::Order, ordinal);
            let settings = bookstore_order::OrderSettings {
                node: node_config(&order, dir.path(), &coordinator_url),
            };
            tokio::spawn(bookstore_order::run(
                settings,
                listeners(&order).await,
                token.clone(),
                shutdown.clone(),
            ));
        }
        let frontend = member(Role::Frontend, 0);
        let settings = bookstore_frontend::FrontendSettings {
            cache: Some((cache.public.clone().expect("public"), cache.peer.clone())),
            coordinator_url,
            refresh_interval: TEST_HEARTBEAT,
        };
        tokio::spawn(bookstore_frontend::run(
            settings,
            listeners(&frontend).await,
            token.clone(),
            shutdown,
        ));
        let store = Self {
            cluster,
            token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            _stop: stop,
            _dir: dir,
        };
        store.wait_until_serving(&books).await;
        store
    }

    fn frontend(&self) -> String {
        frontend_url(&self.cluster)
    }

    /// Waits until a lookup and a buy-path read work through the frontend.
    async fn wait_until_serving(&self, books: &[Book]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let item = books[0].item_number;
        while Instant::now() < deadline {
            let lookup = self.get(&format!("/lookup?item_number={item}")).await;
            let in_sync = self.both_tiers_fully_in_sync().await;
            if lookup.0 == 200 && in_sync {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the in-process store did not come up");
    }

    async fn both_tiers_fully_in_sync(&self) -> bool {
        let url = format!(
            "{}/coordinator/topology",
            self.cluster.first(Role::Coordinator).expect("c").peer_url()
        );
        let Ok(response) = self
            .http
            .get(url)
            .header("x-bookstore-peer-token", self.token.as_str())
            .send()
            .await
        else {
            return false;
        };
        let topologies: Vec<Value> = response.json().await.unwrap_or_default();
        topologies.len() == 2
            && topologies.iter().all(|t| {
                let members = t["members"].as_array().cloned().unwrap_or_default();
                members.len() == 2 && members.iter().all(|m| m["in_sync"] == true)
            })
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.frontend()))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn stock(&self, item: u64) -> u64 {
        let (status, body) = self.get(&format!("/lookup?item_number={item}")).await;
        assert_eq!(status, 200, "{body}");
        body["result"]["stock"].as_u64().expect("stock")
    }

    async fn buy(&self, item: u64) -> Value {
        let (status, body) = self.get(&format!("/buy?item_number={item}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

async fn start_coordinator(cluster: &ClusterConfig, token: &PeerToken, data_dir: &Path) {
    let config = CoordinatorConfig {
        heartbeat_interval: TEST_HEARTBEAT,
        ..Default::default()
    };
    let subscribers = plan::cluster_subscribers(cluster);
    let metrics = Metrics::new("coordinator");
    let server = CoordinatorServer::start_local(
        config,
        &plan::cluster_tiers(cluster),
        subscribers,
        Arc::new(FileStore::in_dir(data_dir)),
        token.clone(),
        &metrics,
    )
    .await
    .expect("the coordinator starts");
    let address = cluster
        .first(Role::Coordinator)
        .expect("coordinator")
        .peer
        .clone();
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .expect("bind coordinator");
    let router = service_router(server.routes(token.clone()), metrics, always_ready());
    tokio::spawn(server.run_ticks());
    tokio::spawn(serve(listener, router, std::future::pending()));
}

fn node_config(
    member: &bookstore_core::cluster::Member,
    dir: &Path,
    coordinator_url: &str,
) -> NodeConfig {
    NodeConfig {
        tier: member.role,
        ordinal: member.ordinal,
        data_dir: dir.to_path_buf(),
        public_addr: member.public.clone().expect("public"),
        peer_addr: member.peer.clone(),
        coordinator_url: coordinator_url.to_owned(),
        heartbeat_interval: TEST_HEARTBEAT,
    }
}

fn default_books() -> Vec<Book> {
    inventory::load(&support::default_inventory_path()).expect("default inventory")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_original_test_cases_pass() {
    let store = Store::start(default_books()).await;
    bookstore::client::run_test_cases(&store.frontend(), &default_books())
        .await
        .expect("test cases 1-4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_race_of_48_buyers_for_32_books_sells_exactly_32() {
    let books = inventory::parse("init,1,32,10,race,The Contended Book").expect("inventory");
    let store = Store::start(books).await;
    let mut buyers = tokio::task::JoinSet::new();
    for _ in 0..48 {
        let http = store.http.clone();
        let url = format!("{}/buy?item_number=1", store.frontend());
        buyers.spawn(async move {
            http.get(url)
                .send()
                .await
                .expect("buy")
                .json::<Value>()
                .await
                .expect("json")
        });
    }
    let mut orders = Vec::new();
    let mut failed = 0;
    while let Some(answer) = buyers.join_next().await {
        let answer = answer.expect("task");
        match answer["result"].as_str() {
            Some("Success") => orders.push(answer["order_number"].as_u64().expect("order number")),
            Some("Failed") => failed += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(orders.len(), 32);
    assert_eq!(failed, 16);
    orders.sort_unstable();
    orders.dedup();
    assert_eq!(orders.len(), 32, "every success has its own order");
    assert_eq!(store.stock(1).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lookups_never_show_stock_from_before_a_successful_buy() {
    let books = inventory::parse("init,1,400,10,cache,Cached Book").expect("inventory");
    let store = std::sync::Arc::new(Store::start(books).await);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            let mut bought = 0u64;
            for _ in 0..25 {
                let before = store.stock(1).await;
                let answer = store.buy(1).await;
                assert_eq!(answer["result"], "Success");
                let after = store.stock(1).await;
                assert!(
                    after < before,
                    "lookup after a buy showed {after}, before it {before}"
                );
                bought += 1;
            }
            bought
        });
    }
    for _ in 0..4 {
        let store = store.clone();
        tasks.spawn(async move {
            for _ in 0..100 {
                store.stock(1).await;
            }
            0
        });
    }
    let mut bought = 0;
    while let Some(result) = tasks.join_next().await {
        bought += result.expect("task");
    }
    assert_eq!(bought, 200);
    assert_eq!(store.stock(1).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_buy_with_the_same_request_id_buys_once() {
    let store = Store::start(default_books()).await;
    let before = store.stock(4).await;
    let first = store.get("/buy?item_number=4&request_id=retry-me").await.1;
    let again = store.get("/buy?item_number=4&request_id=retry-me").await.1;
    assert_eq!(first, again);
    assert_eq!(first["result"], "Success");
    let posted = store
        .http
        .post(format!("{}/buy", store.frontend()))
        .json(&serde_json::json!({"item_number": 4, "request_id": "retry-me"}))
        .send()
        .await
        .expect("post")
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(
        posted, first,
        "POST /buy with the same id is the same purchase"
    );
    assert_eq!(store.stock(4).await, before - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linearizable_lookups_are_served_by_the_catalog_primary_alone() {
    let store = Store::start(default_books()).await;
    let before = store.stock(2).await;
    store.buy(2).await;
    let (status, body) = store
        .get("/lookup?item_number=2&consistency=linearizable")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["stock"], before - 1, "{body}");
    let (_, default) = store.get("/lookup?item_number=2").await;
    assert_eq!(body, default, "the same answer as a default lookup at rest");

    // Straight to the catalog members: the primary serves it; the replica
    // refuses with the typed reason.
    let read = |ordinal: u32| {
        let public = store
            .cluster
            .member(Role::Catalog, ordinal)
            .and_then(|m| m.public_url())
            .expect("a catalog member");
        let http = store.http.clone();
        async move {
            let response = http
                .get(format!(
                    "{public}/query_by_item?item_number=2&consistency=linearizable"
                ))
                .send()
                .await
                .expect("request");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let answers = [read(0).await, read(1).await];
    let (served, refused): (Vec<_>, Vec<_>) =
        answers.iter().partition(|(status, _)| *status == 200);
    assert_eq!((served.len(), refused.len()), (1, 1), "{answers:?}");
    assert_eq!(served[0].1["value"]["stock"], before - 1, "{answers:?}");
    assert_eq!(refused[0].0, 409, "{answers:?}");
    assert_eq!(refused[0].1["error"]["code"], "not_primary", "{answers:?}");

    let (status, body) = store.get("/lookup?item_number=2&consistency=strong").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = store
        .get("/search?topic=distributed+systems&consistency=linearizable")
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_4xx_with_a_json_error() {
    let store = Store::start(default_books()).await;
    let long_topic = format!("/search?topic={}", "a".repeat(5000));
    let cases: Vec<(&str, String, u16)> = vec![
        ("GET", "/lookup".into(), 400),
        ("GET", "/lookup?item_number=".into(), 400),
        ("GET", "/lookup?item_number=-1".into(), 400),
        ("GET", "/lookup?item_number=abc".into(), 400),
        ("GET", "/lookup?item_number=1.5".into(), 400),
        ("GET", "/lookup?item_number=99999".into(), 404),
        ("GET", "/buy".into(), 400),
        ("GET", "/buy?item_number=-3".into(), 400),
        ("GET", "/buy?item_number=99999".into(), 404),
        ("GET", "/buy?item_number=1&request_id=bad%20id".into(), 400),
        ("GET", "/search".into(), 400),
        ("GET", "/search?topic=".into(), 400),
        ("GET", "/search?topic=a%23b".into(), 400),
        ("GET", "/search?topic=a%26b".into(), 400),
        ("GET", long_topic, 414),
        ("GET", "/orders/abc".into(), 400),
        ("GET", "/orders/%FF".into(), 400),
        ("GET", "/orders/424242".into(), 404),
        ("DELETE", "/lookup?item_number=1".into(), 405),
        ("PUT", "/buy".into(), 405),
        ("GET", "/no/such/path".into(), 404),
        ("GET", "/peer/cache/clear".into(), 404),
        ("POST", "/buy".into(), 400),
    ];
    for (method, path, expected) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = store
            .http
            .request(method.clone(), format!("{}{path}", store.frontend()))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, expected, "{method} {path}: {body}");
        assert!(
            body["error"]["code"].is_string(),
            "{method} {path}: no JSON error body: {body}"
        );
    }
    let malformed = store
        .http
        .post(format!("{}/buy", store.frontend()))
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(malformed.status().as_u16(), 400);

    // A body over the public port's limit, and the peer port's JSON
    // extractors: the same JSON errors, with their own statuses.
    let (status, body) =
        post_announcing_a_body_of(&store.frontend(), "/buy", 10 * 1024 * 1024).await;
    assert_eq!(status, 413, "{body}");
    let body: Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    let catalog = store
        .cluster
        .member(Role::Catalog, 0)
        .expect("catalog")
        .peer_url();
    let peer_cases = [
        ("text/plain", r#"{"item_number": 1, "cost": 1}"#, 415),
        ("application/json", r#"{"item_number": "one"}"#, 422),
        ("application/json", "{not json", 400),
    ];
    for (content_type, body, expected) in peer_cases {
        let response = store
            .http
            .post(format!("{catalog}/peer/catalog/update"))
            .header("x-bookstore-peer-token", store.token.as_str())
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status().as_u16(), expected, "{body}");
        let answer: Value = response.json().await.expect("a JSON error");
        assert!(answer["error"]["code"].is_string(), "{body}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_peer_api_requires_the_token() {
    let store = Store::start(default_books()).await;
    let catalog = store
        .cluster
        .member(Role::Catalog, 0)
        .expect("catalog")
        .peer_url();
    let url = format!("{catalog}/peer/catalog/update");
    let body = serde_json::json!({"item_number": 1, "cost": 1});
    let without = store
        .http
        .post(&url)
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(without.status().as_u16(), 401);
    let wrong = store
        .http
        .post(&url)
        .header("x-bookstore-peer-token", "wrong")
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(wrong.status().as_u16(), 401);
    let right = store
        .http
        .post(&url)
        .header("x-bookstore-peer-token", store.token.as_str())
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(right.status().as_u16(), 200);
    let (_, book) = store.get("/lookup?item_number=1").await;
    assert_eq!(
        book["result"]["cost"], 1,
        "a cost change invalidates the cache too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_exposes_health_and_metrics() {
    let store = Store::start(default_books()).await;
    store.get("/lookup?item_number=1").await;
    for member in store
        .cluster
        .members
        .iter()
        .filter(|m| m.role != Role::Coordinator)
    {
        let base = member.public_url().expect("public");
        for path in ["/healthz", "/readyz"] {
            let status = store
                .http
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("get")
                .status();
            assert_eq!(status.as_u16(), 200, "{} {path}", member.name());
        }
        let metrics = store
            .http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("text");
        assert!(
            metrics.contains("bookstore_http_request_duration_seconds"),
            "{}",
            member.name()
        );
        // The process's own CPU and memory, under the standard names, so a
        // scrape gives the CPU per request of each pod.
        for series in [
            "# TYPE process_cpu_seconds_total counter",
            "\nprocess_resident_memory_bytes ",
        ] {
            assert!(metrics.contains(series), "{}: no {series:?}", member.name());
        }
    }
    let frontend_metrics = store
        .http
        .get(format!("{}/metrics", store.frontend()))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(
        frontend_metrics.contains("bookstore_upstream_duration_seconds_count{from=\"frontend\"")
    );
}

/// Sends a POST whose headers announce a body of `length` bytes, sends none of
/// it, and reads the answer. A server that enforces its limit answers from the
/// headers alone. Uploading the body instead (as reqwest must) races the
/// server's early 413 and close: the client can fail with a broken pipe
/// before it reads the answer, which is what made this test flaky in CI.
async fn post_announcing_a_body_of(base: &str, path: &str, length: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\nconnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write the headers");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 10 s")
        .expect("read the answer");
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    (status, body.to_owned())
}
