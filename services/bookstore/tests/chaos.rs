//! The chaos tests: `bookstore up` as real processes under a bounded,
//! concurrent buy load, while a tier's primary suffers a fault:
//! - SIGKILL of the catalog primary and then the order primary, several
//!   times over;
//! - a pause (issue 11): the primary is SIGSTOPped for longer than the
//!   failure-detection time, the tier fails over and takes buys on the new
//!   primary, then the old one gets SIGCONT and carries on as if no time had
//!   passed;
//! - a cut-off (issue 11): the primary plays dead (`/peer/shutdown`) while
//!   the tier fails over, then recovers (`/peer/recover`).
//!
//! Afterwards (and, for the pause and the cut-off, already while the fault
//! lasts) every invariant of the store must hold
//! ([`support::check_invariants`]): every buy got a definite answer; no
//! item sold more than its stock, and for every item the successful buys
//! equal the stock taken; every acknowledged order reads back and no two
//! share a number; a retried request id answers its first order; all
//! members of a tier have the same applied index and state digest.
//!
//! The paused and the cut-off primary are also sent requests of their own
//! while the fault lasts ("witnesses", with a timeout longer than any
//! fault): a paused member holds them until it wakes, when it still
//! believes it is the primary of its old epoch; a cut-off one must refuse
//! them. Whatever a witness was answered must be true of the store
//! afterwards: a buy acknowledged at a stale epoch would show as an order
//! that does not read back, a shared order number or a retry answered with
//! another order; a stock change acknowledged at a stale epoch as stock
//! that was never taken.
//!
//! A faulted catalog primary is also sent linearizable reads
//! (`consistency=linearizable`) of the witness book after the new primary
//! has taken one: when it wakes up (or recovers) it must refuse them or
//! answer with the stock that take left, never with its old stock.
//!
//! The tests print what they measure (failover time, buys during the fault,
//! the longest gap between two successful buys) and assert nothing on it.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bookstore_core::api::CatalogUpdate;
use bookstore_core::cluster::Role;
use bookstore_core::token::TOKEN_HEADER;
use bookstore_system_tests::{BuyLoad, BuyOutcome, Ledger, LoadPlan, buy_until_definite};
use serde_json::Value;
use support::{TempDir, UpProcess, check_invariants, local_cluster, on_blocking, wait_until};

/// One store at a time: each test runs a whole `bookstore up` under load,
/// and two at once on a small machine starve each other's heartbeats (the
/// fault tests need the failure detector to notice the fault, not the
/// neighbour).
static ONE_STORE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const KILL_CYCLES: usize = 3;

fn plan() -> LoadPlan {
    LoadPlan {
        first_item: 1,
        items: 20,
        stock: 3000,
        scarce_items: 10,
        scarce_stock: 50,
        buyers: 10,
        max_buys: 30000,
        min_buys: 2500,
        limit: Duration::from_secs(240),
        buy_deadline: Duration::from_secs(30),
        // Keeps the load going through every kill cycle.
        pause: Duration::from_millis(40),
        request_prefix: "chaos".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_survives_primaries_killed_under_load() {
    let _store = ONE_STORE_AT_A_TIME.lock().await;
    let plan = plan();
    let dir = TempDir::new("chaos");
    let inventory = dir.path().join("inventory.txt");
    std::fs::write(&inventory, plan.inventory()).expect("write inventory");
    let up = Arc::new(tokio::task::block_in_place(|| {
        UpProcess::start(dir.path(), local_cluster(2), &inventory, &[])
    }));
    let load = BuyLoad::start(&up.frontend(), &plan);

    let mut failover_times = Vec::new();
    for cycle in 1..=KILL_CYCLES {
        for tier in ["catalog", "order"] {
            let up_for_wait = up.clone();
            tokio::task::spawn_blocking(move || {
                wait_until(Duration::from_secs(60), || up_for_wait.all_healthy())
            })
            .await
            .expect("wait task")
            .unwrap_or_else(|()| panic!("the store did not recover before cycle {cycle}"));
            tokio::time::sleep(Duration::from_millis(500)).await;
            let up_for_kill = up.clone();
            let (victim, killed_at) = tokio::task::spawn_blocking(move || {
                let victim = up_for_kill.primary(tier).expect("a primary");
                up_for_kill.kill9(&victim);
                (victim, Instant::now())
            })
            .await
            .expect("kill task");
            let failover = load
                .first_success_after(killed_at, Duration::from_secs(60))
                .await;
            println!(
                "cycle {cycle}: killed {victim} (primary); first successful buy after {failover:?}"
            );
            failover_times.push((victim, failover));
        }
    }
    let ledger = load.finish().await;

    for (victim, time) in &failover_times {
        println!(
            "failover time after killing {victim}: {} ms",
            time.as_millis()
        );
    }
    check_invariants(&up, &plan, &ledger, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_catalog_primary_that_wakes_up_acknowledges_nothing_stale() {
    primary_fault_under_load(Role::Catalog, Fault::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_order_primary_that_wakes_up_acknowledges_nothing_stale() {
    primary_fault_under_load(Role::Order, Fault::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_catalog_primary_cut_off_by_shutdown_loses_no_acknowledged_buy() {
    primary_fault_under_load(Role::Catalog, Fault::CutOff).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_primary_cut_off_by_shutdown_loses_no_acknowledged_buy() {
    primary_fault_under_load(Role::Order, Fault::CutOff).await;
}

/// The failure detector of the fault tests' store: `up`'s defaults, passed
/// explicitly because the pause is derived from them.
const HEARTBEAT_MS: u64 = 1000;
const MISS_THRESHOLD: u32 = 3;

/// Silence longer than this marks a member down (heartbeat interval times
/// failure threshold): a pause shorter than this is no fault the tier sees.
fn detection_time() -> Duration {
    Duration::from_millis(HEARTBEAT_MS) * MISS_THRESHOLD
}

/// Members per tier in the fault tests: with three, the two left while the
/// primary is faulted are a new primary and a replica that must agree.
const FAULT_REPLICAS: u32 = 3;
/// How long the new primary takes buys before the fault is lifted.
const BUYS_ON_THE_NEW_PRIMARY: Duration = Duration::from_secs(2);
/// Requests sent straight to the faulted primary.
const WITNESSES: u64 = 32;
/// A witness waits this long for its answer: longer than any fault lasts.
const WITNESS_TIMEOUT: Duration = Duration::from_secs(90);
/// A book outside the buy load that the catalog witnesses take from.
const WITNESS_ITEM: u64 = 1000;
const WITNESS_STOCK: u64 = 100;
/// Bounds for the store to fail over, recover and settle.
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);

fn fault_plan(phase: &str) -> LoadPlan {
    LoadPlan {
        request_prefix: format!("fault-{phase}"),
        min_buys: 300,
        limit: Duration::from_secs(180),
        ..plan()
    }
}

/// What happens to the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGSTOP, then (after the tier failed over) SIGCONT.
    Pause,
    /// `/peer/shutdown` (it plays dead), then `/peer/recover`.
    CutOff,
}

impl Fault {
    fn inject(self, up: &UpProcess, victim: Victim) {
        match self {
            Self::Pause => {
                up.pause(&victim.name());
            }
            Self::CutOff => up.peer_post(victim.tier, victim.ordinal, "/peer/shutdown"),
        }
    }

    fn lift(self, up: &UpProcess, victim: Victim) {
        match self {
            Self::Pause => {
                up.resume(&victim.name());
            }
            Self::CutOff => up.peer_post(victim.tier, victim.ordinal, "/peer/recover"),
        }
    }
}

/// The faulted primary.
#[derive(Debug, Clone, Copy)]
struct Victim {
    tier: Role,
    ordinal: u32,
}

impl Victim {
    fn name(self) -> String {
        format!("{}-{}", self.tier, self.ordinal)
    }
}

/// The current primary of `tier` and its epoch.
fn current_primary(up: &UpProcess, tier: Role) -> (Victim, u64) {
    let status = up.tier_status(tier.as_str());
    let primary = status
        .iter()
        .find(|s| s["primary"] == true)
        .unwrap_or_else(|| panic!("{tier} has no primary: {status:#?}"));
    let victim = Victim {
        tier,
        ordinal: primary["ordinal"].as_u64().expect("an ordinal") as u32,
    };
    (victim, primary["epoch"].as_u64().expect("an epoch"))
}

/// What the buyers saw in the first `watched` of the fault (until the new
/// primary had taken buys for [`BUYS_ON_THE_NEW_PRIMARY`]).
#[derive(Debug)]
struct FaultFigures {
    watched: Duration,
    first_success: Duration,
    buys: usize,
    longest_gap: Duration,
}

/// One fault of `tier`'s primary under the buy load, checked while it lasts
/// and after the member has recovered.
async fn primary_fault_under_load(tier: Role, fault: Fault) {
    let _store = ONE_STORE_AT_A_TIME.lock().await;
    let plans = [fault_plan("during"), fault_plan("after")];
    let dir = TempDir::new("chaos-fault");
    let inventory = dir.path().join("inventory.txt");
    std::fs::write(
        &inventory,
        format!(
            "{}init,{WITNESS_ITEM},{WITNESS_STOCK},10,witness,Witness Book\n",
            plans[0].inventory()
        ),
    )
    .expect("write inventory");
    let up = Arc::new(tokio::task::block_in_place(|| {
        UpProcess::start(
            dir.path(),
            local_cluster(FAULT_REPLICAS),
            &inventory,
            &[
                "--heartbeat-ms",
                &HEARTBEAT_MS.to_string(),
                "--miss-threshold",
                &MISS_THRESHOLD.to_string(),
            ],
        )
    }));

    // 1. The fault, under load, until the new primary has taken buys.
    let load = BuyLoad::start(&up.frontend(), &plans[0]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (victim, epoch_before) = on_blocking(&up, move |up| current_primary(up, tier)).await;
    let faulted_at = Instant::now();
    on_blocking(&up, move |up| fault.inject(up, victim)).await;
    let witnesses = send_witnesses(&up, victim, &plans[0]);
    tokio::time::sleep(detection_time()).await;
    let new_primary = on_blocking(&up, move |up| {
        let mut seen = None;
        let _ = wait_until(FAILOVER_LIMIT, || {
            seen = up.primary(tier.as_str()).filter(|p| *p != victim.name());
            seen.is_some()
        });
        seen
    })
    .await
    .unwrap_or_else(|| panic!("no other member of {tier} took over from {}", victim.name()));
    let first_success = load.first_success_after(faulted_at, FAILOVER_LIMIT).await;
    let read_witnesses = match tier {
        Role::Catalog => Some(send_read_witnesses(&up, victim, plans[0].buy_deadline).await),
        _ => None,
    };
    tokio::time::sleep(BUYS_ON_THE_NEW_PRIMARY).await;
    let figures = FaultFigures {
        watched: faulted_at.elapsed(),
        first_success,
        buys: load.successes_since(faulted_at),
        longest_gap: load.longest_gap_since(faulted_at),
    };
    let mut ledger = load.finish().await;

    // 2. While the fault lasts, the rest of the store holds every invariant.
    println!(
        "{fault:?} of {} (epoch {epoch_before}): {new_primary} took over",
        victim.name()
    );
    check_invariants(&up, &plans[0], &ledger, Some(&victim.name())).await;

    // 3. The fault ends, under a second load; the witnesses get their answers.
    let load = BuyLoad::start(&up.frontend(), &plans[1]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    on_blocking(&up, move |up| fault.lift(up, victim)).await;
    let lasted = faulted_at.elapsed();
    let answers = collect_witnesses(witnesses).await;
    println!(
        "witnesses sent to {}: {}",
        victim.name(),
        describe(&answers)
    );
    if fault == Fault::CutOff {
        check_cut_off_refused_everything(victim, &answers);
    }
    let read_fence_take = match read_witnesses {
        Some(reads) => Some(check_no_stale_read(victim, reads).await),
        None => None,
    };
    let witness_outcome = resolve_witnesses(&up, &plans[1], answers).await;
    on_blocking(&up, |up| wait_until(FAILOVER_LIMIT, || up.all_healthy()))
        .await
        .unwrap_or_else(|()| panic!("{} did not rejoin the store", victim.name()));
    print_role_changes(&up, victim);
    tokio::time::sleep(Duration::from_secs(1)).await;
    ledger.absorb(load.finish().await);

    // 4. After recovery: every invariant, the witnesses' answers included,
    //    and the old primary back in sync at a newer epoch.
    let Witnessed { buys, mut takes } = witness_outcome;
    takes.extend(read_fence_take);
    ledger.absorb(buys);
    check_invariants(&up, &plans[0], &ledger, None).await;
    check_witness_takes(&up.frontend(), &takes).await;
    let epoch_after = on_blocking(&up, move |up| {
        up.tier_status(tier.as_str())
            .into_iter()
            .find(|s| s["ordinal"] == victim.ordinal)
            .and_then(|s| s["epoch"].as_u64())
    })
    .await
    .unwrap_or_else(|| panic!("{} reports no epoch", victim.name()));
    assert!(
        epoch_after > epoch_before,
        "{} is back at epoch {epoch_after}, not above its old epoch {epoch_before}",
        victim.name()
    );
    println!(
        "{fault:?} of {}: lasted {} ms until lifted (detection time {} ms); in its first {} ms: \
         first successful buy after {} ms, {} successful buys, longest gap between two \
         successful buys {} ms; back in sync at epoch {epoch_after}",
        victim.name(),
        lasted.as_millis(),
        detection_time().as_millis(),
        figures.watched.as_millis(),
        figures.first_success.as_millis(),
        figures.buys,
        figures.longest_gap.as_millis(),
    );
}

/// How the victim learned it was no longer the primary, from its log.
fn print_role_changes(up: &UpProcess, victim: Victim) {
    let log = up
        .data_dir
        .join("logs")
        .join(format!("{}.log", victim.name()));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let changes: Vec<&str> = text
        .lines()
        .filter(|line| {
            ["phase change", "fenced", "stepping down", "fault injection"]
                .iter()
                .any(|w| line.contains(w))
        })
        .collect();
    println!("{}'s role changes:", victim.name());
    for line in &changes[changes.len().saturating_sub(12)..] {
        println!("  {}", without_colours(line));
    }
}

/// `line` without its ANSI colour sequences (`ESC [ ... m`).
fn without_colours(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
}

/// A request sent straight to the faulted primary, and its first answer.
#[derive(Debug)]
struct Witness {
    item: u64,
    request_id: String,
    sent: Instant,
    /// The HTTP status, or `None` if no answer came.
    status: Option<u16>,
    body: Value,
}

impl Witness {
    /// Sends `request` and keeps its first answer (or that none came).
    async fn send(request: reqwest::RequestBuilder, item: u64, request_id: String) -> Self {
        let sent = Instant::now();
        let (status, body) = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (Some(status), response.json().await.unwrap_or_default())
            }
            Err(error) => (None, Value::String(format!("{error:?}"))),
        };
        Self {
            item,
            request_id,
            sent,
            status,
            body,
        }
    }
}

/// Sends [`WITNESSES`] requests to the victim: buys to an order primary's
/// public port (non-scarce items of the plan, so the ledger accounts for
/// them), stock takes of [`WITNESS_ITEM`] to a catalog primary's peer port.
fn send_witnesses(
    up: &UpProcess,
    victim: Victim,
    plan: &LoadPlan,
) -> tokio::task::JoinSet<Witness> {
    let member = up
        .cluster
        .member(victim.tier, victim.ordinal)
        .expect("the victim's member")
        .clone();
    let http = reqwest::Client::builder()
        .timeout(WITNESS_TIMEOUT)
        .build()
        .expect("an HTTP client");
    let token = up.peer_token();
    let mut witnesses = tokio::task::JoinSet::new();
    for n in 0..WITNESSES {
        let request_id = format!("witness-{}-{n}", victim.name());
        let (item, request) = match victim.tier {
            Role::Order => {
                let item =
                    plan.first_item + plan.scarce_items + n % (plan.items - plan.scarce_items);
                let url = format!("{}/buy", member.public_url().expect("a public address"));
                let body = serde_json::json!({"item_number": item, "request_id": request_id});
                (item, http.post(url).json(&body))
            }
            _ => {
                let url = format!("{}/peer/catalog/update", member.peer_url());
                (
                    WITNESS_ITEM,
                    http.post(url)
                        .header(TOKEN_HEADER, &token)
                        .json(&take(&request_id)),
                )
            }
        };
        witnesses.spawn(Witness::send(request, item, request_id));
    }
    witnesses
}

/// A catalog update that takes one [`WITNESS_ITEM`] under `request_id`.
fn take(request_id: &str) -> CatalogUpdate {
    CatalogUpdate {
        item_number: WITNESS_ITEM,
        stock_delta: Some(-1),
        cost: None,
        request_id: Some(request_id.to_owned()),
    }
}

async fn collect_witnesses(mut witnesses: tokio::task::JoinSet<Witness>) -> Vec<Witness> {
    let mut answers = Vec::new();
    while let Some(witness) = witnesses.join_next().await {
        answers.push(witness.expect("a witness task"));
    }
    answers
}

fn describe(answers: &[Witness]) -> String {
    answers
        .iter()
        .map(|w| match w.status {
            Some(status) => format!("{status} {}", w.body),
            None => format!("no answer ({})", w.body),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A member that plays dead answers every request "unavailable" and does
/// nothing.
fn check_cut_off_refused_everything(victim: Victim, answers: &[Witness]) {
    for witness in answers {
        assert_eq!(
            witness.status,
            Some(503),
            "{} answered {} while cut off: {}",
            victim.name(),
            witness.request_id,
            witness.body
        );
    }
}

/// What the witnesses were finally answered.
#[derive(Default)]
struct Witnessed {
    /// The buys sent to an order primary, each retried through the frontend
    /// with its request id until its answer was definite.
    buys: Ledger,
    /// The stock each take of [`WITNESS_ITEM`] reported, each retried with
    /// its request id until it was taken.
    takes: Vec<u64>,
}

/// Gives every witness a definite answer: a first answer that was one
/// stands; any other is retried with the same request id (through the
/// frontend for a buy; through every catalog member in turn, which forward
/// to the primary, for a take) until it is definite.
async fn resolve_witnesses(up: &UpProcess, plan: &LoadPlan, answers: Vec<Witness>) -> Witnessed {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("an HTTP client");
    let mut witnessed = Witnessed::default();
    for witness in answers {
        let first = (witness.status == Some(200)).then_some(&witness.body);
        match (witness.item, first) {
            (WITNESS_ITEM, Some(body)) if body["outcome"] == "adjusted" => {
                witnessed.takes.push(stock_after_take(body));
            }
            (WITNESS_ITEM, _) => {
                let urls = catalog_update_urls(up, None);
                let body =
                    take_until_taken(up, &http, &urls, &witness.request_id, plan.buy_deadline)
                        .await;
                witnessed.takes.push(stock_after_take(&body));
            }
            (item, first) => {
                let outcome = match first.and_then(BuyOutcome::definite) {
                    Some(outcome) => outcome,
                    None => {
                        let frontend = up.frontend();
                        let outcome = buy_until_definite(
                            &http,
                            &frontend,
                            item,
                            &witness.request_id,
                            plan.buy_deadline,
                        )
                        .await;
                        BuyOutcome {
                            retried: true,
                            ..outcome
                        }
                    }
                };
                witnessed
                    .buys
                    .record(item, &witness.request_id, witness.sent, &outcome);
            }
        }
    }
    witnessed
}

fn stock_after_take(body: &Value) -> u64 {
    body["stock"]
        .as_u64()
        .unwrap_or_else(|| panic!("a take answered without the stock: {body}"))
}

/// The update URL of every catalog member but `except`.
fn catalog_update_urls(up: &UpProcess, except: Option<Victim>) -> Vec<String> {
    up.cluster
        .members
        .iter()
        .filter(|m| m.role == Role::Catalog && except.is_none_or(|v| v.ordinal != m.ordinal))
        .map(|m| format!("{}/peer/catalog/update", m.peer_url()))
        .collect()
}

/// Retries the take under `request_id` at each of `urls` in turn until one
/// answers that it was taken.
async fn take_until_taken(
    up: &UpProcess,
    http: &reqwest::Client,
    urls: &[String],
    request_id: &str,
    deadline: Duration,
) -> Value {
    let token = up.peer_token();
    let started = Instant::now();
    let mut last = String::new();
    for url in urls.iter().cycle() {
        if started.elapsed() > deadline {
            break;
        }
        let answer = http
            .post(url)
            .header(TOKEN_HEADER, &token)
            .json(&take(request_id))
            .send()
            .await;
        match answer {
            Ok(response) if response.status().is_success() => {
                let body: Value = response.json().await.unwrap_or_default();
                if body["outcome"] == "adjusted" {
                    return body;
                }
                panic!("the take {request_id} answered {body}");
            }
            Ok(response) => last = format!("{}", response.status()),
            Err(error) => last = format!("{error:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the take {request_id} got no definite answer within {deadline:?}: {last}");
}

/// Linearizable reads of [`WITNESS_ITEM`] sent straight to the faulted
/// catalog primary, after the rest of the tier took one of it.
struct ReadWitnesses {
    /// The stock the take left: no later read may see more.
    stock_after_take: u64,
    reads: tokio::task::JoinSet<Witness>,
}

const READ_WITNESSES: u64 = 8;

/// Takes one [`WITNESS_ITEM`] through the members that took over (the
/// victim left out: a paused one would hold the request), then sends
/// [`READ_WITNESSES`] linearizable reads of it to the victim's public port.
async fn send_read_witnesses(up: &UpProcess, victim: Victim, deadline: Duration) -> ReadWitnesses {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("an HTTP client");
    let urls = catalog_update_urls(up, Some(victim));
    let request_id = format!("read-fence-{}", victim.name());
    let body = take_until_taken(up, &http, &urls, &request_id, deadline).await;
    let stock_after_take = stock_after_take(&body);
    let public = up
        .cluster
        .member(victim.tier, victim.ordinal)
        .and_then(|m| m.public_url())
        .expect("the victim's public address");
    let url = format!("{public}/query_by_item?item_number={WITNESS_ITEM}&consistency=linearizable");
    let http = reqwest::Client::builder()
        .timeout(WITNESS_TIMEOUT)
        .build()
        .expect("an HTTP client");
    let mut reads = tokio::task::JoinSet::new();
    for n in 0..READ_WITNESSES {
        reads.spawn(Witness::send(
            http.get(&url),
            WITNESS_ITEM,
            format!("read-{n}"),
        ));
    }
    ReadWitnesses {
        stock_after_take,
        reads,
    }
}

/// The woken (or recovered) victim refused every linearizable read, with a
/// typed reason, or answered it with at most the stock the take left.
/// Returns that stock, to account for the take.
async fn check_no_stale_read(victim: Victim, witnesses: ReadWitnesses) -> u64 {
    let ReadWitnesses {
        stock_after_take,
        reads,
    } = witnesses;
    let answers = collect_witnesses(reads).await;
    println!(
        "linearizable reads sent to {} after the take left {stock_after_take}: {}",
        victim.name(),
        describe(&answers)
    );
    for read in &answers {
        match read.status {
            Some(200) => {
                let stock = read.body["value"]["stock"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("a read answered without the stock: {}", read.body));
                assert!(
                    stock <= stock_after_take,
                    "{} served a stale linearizable read: stock {stock} after a take left \
                     {stock_after_take}",
                    victim.name()
                );
            }
            Some(409 | 503) => {
                let code = read.body["error"]["code"].as_str().unwrap_or_default();
                assert!(
                    ["not_primary", "unconfirmed", "shut_down"].contains(&code),
                    "{} refused a linearizable read without a typed reason: {}",
                    victim.name(),
                    read.body
                );
            }
            _ => panic!(
                "{} answered a linearizable read with {:?}: {}",
                victim.name(),
                read.status,
                read.body
            ),
        }
    }
    stock_after_take
}

/// Every witness took exactly one [`WITNESS_ITEM`], once: the stock is down
/// by their number, and no two takes reported the same stock (two takes
/// acknowledged at the same stock were made on two diverging copies).
async fn check_witness_takes(frontend: &str, takes: &[u64]) {
    let mut reported = takes.to_vec();
    reported.sort_unstable();
    reported.dedup();
    assert_eq!(
        reported.len(),
        takes.len(),
        "two takes reported the same stock: {takes:?}"
    );
    let url = format!("{frontend}/lookup?item_number={WITNESS_ITEM}");
    let body: Value = reqwest::get(&url)
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"))
        .json()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: not JSON: {error}"));
    let left = body["result"]["stock"]
        .as_u64()
        .unwrap_or_else(|| panic!("lookup {WITNESS_ITEM}: no stock in {body}"));
    assert_eq!(
        WITNESS_STOCK - left,
        takes.len() as u64,
        "the witnesses' takes ({takes:?}) are not the stock taken ({WITNESS_STOCK} -> {left})"
    );
}
