//! What the chaos tests share, locally (`bookstore up`) and on Kubernetes: a
//! bounded, concurrent buy load with a ledger of every answer, and the
//! store's invariants checked against that ledger afterwards.
//!
//! Buyers retry a buy that got a 5xx or no answer with the same request id
//! (as a real client should) until it answers Success or Failed, so a buy is
//! never counted twice and never lost.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The shape and bounds of a buy load.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Items `first_item..first_item + items` are bought at random.
    pub first_item: u64,
    pub items: u64,
    /// The stock of each item...
    pub stock: u64,
    /// ...but the first `scarce_items` have only `scarce_stock`: they sell
    /// out early, so buyers race for the last copies while the others keep
    /// selling (and a crash's failover time can be measured).
    pub scarce_items: u64,
    pub scarce_stock: u64,
    pub buyers: usize,
    /// The load stops after this many buys, or once [`BuyLoad::finish`] is
    /// called and at least `min_buys` were made, whichever comes first.
    pub max_buys: u64,
    pub min_buys: u64,
    /// The whole load is bounded by this.
    pub limit: Duration,
    /// How long one buy may be retried before it counts as unresolved.
    pub buy_deadline: Duration,
    /// Each buyer waits this long between buys (zero: as fast as it can).
    pub pause: Duration,
    /// Request ids start with this, so two loads never share one.
    pub request_prefix: String,
}

impl LoadPlan {
    /// The inventory of the plan's items, in the
    /// `init,item,stock,cost,topic,title` format.
    pub fn inventory(&self) -> String {
        self.item_numbers()
            .map(|i| format!("init,{i},{},10,chaos,Chaos Book {i}\n", self.stock_of(i)))
            .collect()
    }

    /// The initial stock of `item`.
    pub fn stock_of(&self, item: u64) -> u64 {
        if item < self.first_item + self.scarce_items {
            self.scarce_stock
        } else {
            self.stock
        }
    }

    pub fn item_numbers(&self) -> std::ops::Range<u64> {
        self.first_item..self.first_item + self.items
    }
}

/// Every definite answer the load got.
#[derive(Debug, Default)]
pub struct Ledger {
    /// (item, order number) of every successful buy.
    pub successes: Vec<(u64, u64)>,
    /// (sent, answered) of every successful buy.
    pub success_times: Vec<(Instant, Instant)>,
    /// The request id of every successful buy, in the order of `successes`.
    pub success_requests: Vec<String>,
    /// Buys answered "Failed" (sold out).
    pub failed: u64,
    /// Buys that got a 5xx or no answer at least once before their answer.
    pub retried: u64,
    /// Buys without a definite answer within the deadline.
    pub unresolved: u64,
    /// The last answer (or error) of each unresolved buy, to say why.
    pub unresolved_answers: Vec<String>,
    /// Answers (of any attempt) that were a 503 with the store's JSON error
    /// body: the store saying "not now, retry".
    pub unavailable_answers: u64,
    /// Every other 5xx answer, as `status: body`: a store that keeps its
    /// promises answers a fault with a JSON 503 and nothing else.
    pub other_server_errors: Vec<String>,
}

impl Ledger {
    /// Records the outcome of the buy of `item` under `request_id`, sent at
    /// `sent`.
    pub fn record(&mut self, item: u64, request_id: &str, sent: Instant, outcome: &BuyOutcome) {
        if outcome.retried {
            self.retried += 1;
        }
        self.unavailable_answers += outcome.unavailable_answers;
        self.other_server_errors
            .extend(outcome.other_server_errors.iter().cloned());
        let Some(answer) = &outcome.answer else {
            self.unresolved += 1;
            self.unresolved_answers
                .push(format!("{request_id}: {}", outcome.last_error));
            return;
        };
        if answer["result"] == "Failed" {
            self.failed += 1;
            return;
        }
        let order = answer["order_number"]
            .as_u64()
            .unwrap_or_else(|| panic!("buy {request_id}: no order number in {answer}"));
        self.successes.push((item, order));
        self.success_times.push((sent, Instant::now()));
        self.success_requests.push(request_id.to_owned());
    }

    /// Adds the answers of a later load to this one's.
    pub fn absorb(&mut self, later: Ledger) {
        self.successes.extend(later.successes);
        self.success_times.extend(later.success_times);
        self.success_requests.extend(later.success_requests);
        self.failed += later.failed;
        self.retried += later.retried;
        self.unresolved += later.unresolved;
        self.unresolved_answers.extend(later.unresolved_answers);
        self.unavailable_answers += later.unavailable_answers;
        self.other_server_errors.extend(later.other_server_errors);
    }

    pub fn summary(&self) -> String {
        format!(
            "{} buys, {} succeeded, {} sold out, {} retried after a 5xx or no answer, {} unresolved; {} JSON 503 answers, {} other 5xx",
            self.successes.len() as u64 + self.failed + self.unresolved,
            self.successes.len(),
            self.failed,
            self.retried,
            self.unresolved,
            self.unavailable_answers,
            self.other_server_errors.len()
        )
    }
}

/// A running buy load against one frontend.
pub struct BuyLoad {
    ledger: Arc<Mutex<Ledger>>,
    /// JSON 503 answers so far, buys still retrying included.
    unavailable: Arc<AtomicU64>,
    enough: Arc<AtomicBool>,
    buyers: tokio::task::JoinSet<()>,
}

impl BuyLoad {
    /// Starts `plan.buyers` buyers against `frontend` (`http://host:port`).
    pub fn start(frontend: &str, plan: &LoadPlan) -> Self {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let unavailable = Arc::new(AtomicU64::new(0));
        let attempts = Arc::new(AtomicU64::new(0));
        let enough = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let mut buyers = tokio::task::JoinSet::new();
        for buyer in 0..plan.buyers {
            let buyer = Buyer {
                frontend: frontend.to_owned(),
                plan: plan.clone(),
                id: buyer,
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(15))
                    .build()
                    .expect("an HTTP client"),
                ledger: ledger.clone(),
                unavailable: unavailable.clone(),
            };
            let (attempts, enough) = (attempts.clone(), enough.clone());
            buyers.spawn(async move {
                loop {
                    let n = attempts.fetch_add(1, Ordering::Relaxed);
                    let done = n >= buyer.plan.min_buys && enough.load(Ordering::Relaxed);
                    if n >= buyer.plan.max_buys || done || started.elapsed() > buyer.plan.limit {
                        break;
                    }
                    buyer.buy_until_answered(n).await;
                    tokio::time::sleep(buyer.plan.pause).await;
                }
            });
        }
        Self {
            ledger,
            unavailable,
            enough,
            buyers,
        }
    }

    /// The time from `since` to the answer of the first successful buy sent
    /// after it: how long buyers saw the store unable to sell.
    pub async fn first_success_after(&self, since: Instant, limit: Duration) -> Duration {
        let deadline = Instant::now() + limit;
        loop {
            let first = lock(&self.ledger)
                .success_times
                .iter()
                .filter(|(sent, _)| *sent >= since)
                .map(|(_, answered)| *answered)
                .min();
            if let Some(answered) = first {
                return answered.duration_since(since);
            }
            assert!(
                Instant::now() < deadline,
                "no successful buy within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many successful buys were answered after `since`.
    pub fn successes_since(&self, since: Instant) -> usize {
        lock(&self.ledger)
            .success_times
            .iter()
            .filter(|(_, answered)| *answered >= since)
            .count()
    }

    /// How many JSON 503 answers the load has had so far, counting buys
    /// still being retried.
    pub fn unavailable_answers(&self) -> u64 {
        self.unavailable.load(Ordering::Relaxed)
    }

    /// The longest time between two successful answers (or from `since` to
    /// the first) among buys answered after `since`: how long buyers saw the
    /// store unable to sell around a crash.
    pub fn longest_gap_since(&self, since: Instant) -> Duration {
        let mut answered: Vec<Instant> = lock(&self.ledger)
            .success_times
            .iter()
            .map(|(_, answered)| *answered)
            .filter(|answered| *answered >= since)
            .collect();
        answered.sort_unstable();
        let mut previous = since;
        let mut longest = Duration::ZERO;
        for answer in answered {
            longest = longest.max(answer.duration_since(previous));
            previous = answer;
        }
        longest
    }

    /// Lets the load stop once it made its minimum, waits for it, and returns
    /// the ledger.
    pub async fn finish(mut self) -> Ledger {
        self.enough.store(true, Ordering::Relaxed);
        while let Some(buyer) = self.buyers.join_next().await {
            buyer.expect("a buyer task");
        }
        std::mem::take(&mut *lock(&self.ledger))
    }
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|p| p.into_inner())
}

struct Buyer {
    frontend: String,
    plan: LoadPlan,
    id: usize,
    http: reqwest::Client,
    ledger: Arc<Mutex<Ledger>>,
    unavailable: Arc<AtomicU64>,
}

impl Buyer {
    /// Buys once, retrying with the same request id through 5xx answers and
    /// lost connections, and records the definite answer.
    async fn buy_until_answered(&self, n: u64) {
        let item = fastrand::u64(self.plan.item_numbers());
        let request_id = format!("{}-{}-{n}", self.plan.request_prefix, self.id);
        let sent = Instant::now();
        let outcome = buy_counting_unavailable(
            &self.http,
            &self.frontend,
            item,
            &request_id,
            self.plan.buy_deadline,
            &self.unavailable,
        )
        .await;
        lock(&self.ledger).record(item, &request_id, sent, &outcome);
    }
}

/// How one buy ended after its retries.
#[derive(Debug, Clone, Default)]
pub struct BuyOutcome {
    /// The definite answer (`{"result": "Success", "order_number": N}` or
    /// `{"result": "Failed"}`), or `None` if none came within the deadline.
    pub answer: Option<Value>,
    /// It got a 5xx or no answer at least once.
    pub retried: bool,
    /// The last answer that was not definite (or the error), to say why.
    pub last_error: String,
    /// 503 answers with the store's JSON error body.
    pub unavailable_answers: u64,
    /// Every other 5xx answer, as `status: body`.
    pub other_server_errors: Vec<String>,
}

impl BuyOutcome {
    /// The outcome of an answer that is already definite, if `body` is one.
    pub fn definite(body: &Value) -> Option<Self> {
        matches!(body["result"].as_str(), Some("Success" | "Failed")).then(|| Self {
            answer: Some(body.clone()),
            ..Self::default()
        })
    }
}

/// Buys `item` under `request_id` through `frontend`, retrying with the same
/// request id through 5xx answers and lost connections until the answer is
/// definite or `deadline` has passed. A 4xx is a bug in the test: it panics.
pub async fn buy_until_definite(
    http: &reqwest::Client,
    frontend: &str,
    item: u64,
    request_id: &str,
    deadline: Duration,
) -> BuyOutcome {
    let unused = AtomicU64::new(0);
    buy_counting_unavailable(http, frontend, item, request_id, deadline, &unused).await
}

/// [`buy_until_definite`], also adding each JSON 503 to `unavailable` as it
/// comes (a load's live count: the buy's outcome is recorded only once it
/// is definite, which may be after the outage a test watches for).
pub async fn buy_counting_unavailable(
    http: &reqwest::Client,
    frontend: &str,
    item: u64,
    request_id: &str,
    deadline: Duration,
    unavailable: &AtomicU64,
) -> BuyOutcome {
    let url = format!("{frontend}/buy?item_number={item}&request_id={request_id}");
    let sent = Instant::now();
    let mut outcome = BuyOutcome::default();
    while sent.elapsed() < deadline {
        match http.get(&url).send().await {
            Ok(response) if response.status().is_success() => {
                let body = response.json::<Value>().await.unwrap_or_default();
                if let Some(definite) = BuyOutcome::definite(&body) {
                    return BuyOutcome {
                        answer: definite.answer,
                        ..outcome
                    };
                }
                outcome.last_error = format!("not a definite answer: {body}");
            }
            Ok(response) if response.status().is_client_error() => {
                panic!("buy {request_id} answered {}", response.status())
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                if status == 503 && is_json_error(&text) {
                    outcome.unavailable_answers += 1;
                    unavailable.fetch_add(1, Ordering::Relaxed);
                } else {
                    outcome
                        .other_server_errors
                        .push(format!("{status}: {text}"));
                }
                outcome.last_error = format!("{status}: {text}");
            }
            Err(error) => outcome.last_error = format!("{error:?}"),
        }
        outcome.retried = true;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    outcome
}

/// Whether `body` is the store's JSON error (`{"error": {"code", "message"}}`).
fn is_json_error(body: &str) -> bool {
    serde_json::from_str::<Value>(body)
        .is_ok_and(|b| b["error"]["code"].is_string() && b["error"]["message"].is_string())
}

/// No item sold more than its stock, and for every item the stock taken
/// equals the successful buys.
pub async fn check_stock_matches_successes(frontend: &str, plan: &LoadPlan, ledger: &Ledger) {
    let mut sold: BTreeMap<u64, u64> = BTreeMap::new();
    for (item, _) in &ledger.successes {
        *sold.entry(*item).or_default() += 1;
    }
    let http = reqwest::Client::new();
    for item in plan.item_numbers() {
        let body = get_json(&http, &format!("{frontend}/lookup?item_number={item}")).await;
        let left = body["result"]["stock"]
            .as_u64()
            .unwrap_or_else(|| panic!("lookup {item}: no stock in {body}"));
        let sold = sold.get(&item).copied().unwrap_or(0);
        let stock = plan.stock_of(item);
        assert!(
            sold <= stock,
            "item {item} sold {sold} times out of {stock}"
        );
        assert_eq!(
            stock - left,
            sold,
            "item {item}: stock taken differs from successful buys"
        );
    }
}

/// Every successful buy's order can be read back, and no two share a number.
pub async fn check_every_order_is_readable(frontend: &str, ledger: &Ledger) {
    let mut numbers: Vec<u64> = ledger.successes.iter().map(|(_, n)| *n).collect();
    numbers.sort_unstable();
    let before = numbers.len();
    numbers.dedup();
    assert_eq!(
        numbers.len(),
        before,
        "two successful buys share an order number"
    );
    let http = reqwest::Client::new();
    for (item, number) in &ledger.successes {
        let body = get_json(&http, &format!("{frontend}/orders/{number}")).await;
        assert_eq!(
            body["result"]["item_number"], *item,
            "order {number}: {body}"
        );
    }
}

/// Buying again with the request id of an acknowledged buy answers that
/// buy's order and takes no stock: checked for every `step`-th success.
pub async fn check_retries_answer_their_first_order(frontend: &str, ledger: &Ledger, step: usize) {
    let http = reqwest::Client::new();
    let sample = ledger
        .successes
        .iter()
        .zip(&ledger.success_requests)
        .step_by(step.max(1));
    for ((item, number), request_id) in sample {
        let url = format!("{frontend}/buy?item_number={item}&request_id={request_id}");
        let body = get_json(&http, &url).await;
        assert_eq!(
            body["order_number"], *number,
            "retry of {request_id} got another answer: {body}"
        );
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let response = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"));
    response
        .json()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: not JSON: {error}"))
}
