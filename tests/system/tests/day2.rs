//! Day-2 operations on the real single-node cluster (issue 13), done the way
//! an operator of the store does them, on one 2+2 store (two operator
//! replicas) under a bounded buy load through the frontend Service:
//! 1. an image upgrade (`spec.image` to a new tag): the operator replaces
//!    replicas first and the primary last, after a switchover;
//! 2. a switchover of each tier by annotation, then the annotation removed
//!    (the plain rule takes the primary back to ordinal 0);
//! 3. scaling the catalog 2 → 3 → 2;
//! 4. a settings change (`failureThreshold` 3 → 5) taking effect on the
//!    running coordinator, with no pod restarted;
//! 5. the operator leader's pod and the catalog primary's pod deleted at the
//!    same moment, without grace (as a crash of their node would);
//! 6. a replica fenced (out of the in-sync set, its pod not Ready) and
//!    unfenced;
//! 7. hibernation: every pod gone, the volumes kept; resumed with the data
//!    and the primaries on ordinal 0.
//!
//! The switchover of the order tier, the fencing and the hibernation go
//! through the `kubectl bookstore` plugin (the release build of
//! `kubectl-bookstore`), as a user types them; `kubectl bookstore status`
//! must show every member answering, before and after.
//!
//! Each step prints what it measured (buys, retries, 503s, the longest time
//! without a successful buy, primary changes per tier from the coordinator's
//! history) and asserts what must hold: every buy gets a definite answer,
//! no 5xx other than the store's JSON 503, and for the planned operations
//! (upgrade, switchover, scaling, settings) not even a 503. At the end the
//! usual invariants: no oversell, stock taken equals successful buys, every
//! acknowledged order reads back, replicas identical.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bookstore_operator::crd::{BookStore, BookStoreStatus};
use bookstore_operator::names::SWITCHOVER_ANNOTATION;
use bookstore_system_tests::cluster::{Cluster, Mode, output, pod_is_ready, run};
use bookstore_system_tests::store::{self, condition, tier as tier_status};
use bookstore_system_tests::{
    BuyLoad, Ledger, LoadPlan, check_every_order_is_readable, check_stock_matches_successes,
    eventually,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

const OPERATOR_NAMESPACE: &str = "bookstore-system";
const NAMESPACE: &str = "bookstore-day2";
const STORE: &str = "day2";
const WAIT: Duration = Duration::from_secs(300);
/// The image every pod starts with, and the tag the upgrade moves to (the
/// same image under another name: the rollout is what is tested).
const IMAGE: &str = "localhost/bookstore:dev";
const UPGRADED_IMAGE: &str = "localhost/bookstore:day2";
/// The leader-election Lease's duration (`bookstore_operator::leader`).
const LEASE_DURATION: Duration = Duration::from_secs(15);

fn plan(step: &str) -> LoadPlan {
    LoadPlan {
        first_item: 201,
        items: 20,
        stock: 20_000,
        scarce_items: 0,
        scarce_stock: 0,
        buyers: 4,
        max_buys: 40_000,
        min_buys: 200,
        limit: Duration::from_secs(400),
        buy_deadline: Duration::from_secs(90),
        pause: Duration::from_millis(20),
        // Request ids allow letters, digits and dashes.
        request_prefix: format!(
            "day2-{}",
            step.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn day2_operations_under_load() {
    let cluster = Cluster::start(Mode::Full);
    cluster.import_images();
    let client = cluster.client().await;
    cluster.delete_namespace(NAMESPACE);
    cluster.uninstall_chart(OPERATOR_NAMESPACE);
    cluster
        .install_chart(OPERATOR_NAMESPACE, &["replicaCount=2"])
        .await;
    cluster.kubectl(&["create", "namespace", NAMESPACE]);
    cluster.kubectl_stdin(&["apply", "-n", NAMESPACE, "-f", "-"], &store_manifest());
    let mut day2 = Day2::new(&cluster, client).await;
    day2.wait_settled("the store is Ready with primaries on ordinal 0")
        .await;
    day2.check_plugin_status().await;

    day2.image_upgrade().await;
    day2.switchover(
        Ask::Annotation("catalog=1"),
        &[("catalog", 1), ("order", 0)],
    )
    .await;
    day2.switchover(Ask::Plugin("order", 1), &[("catalog", 1), ("order", 1)])
        .await;
    day2.end_switchover().await;
    day2.scale_catalog(3).await;
    day2.scale_catalog(2).await;
    day2.settings_change().await;
    day2.leader_and_primary_lost_together().await;
    day2.fence_and_unfence("catalog-1").await;
    day2.hibernate_and_resume().await;

    // The invariants over every step's buys.
    day2.wait_settled("the store is settled after every step")
        .await;
    day2.check_plugin_status().await;
    let frontend = day2.frontend.clone();
    let whole = plan("all");
    println!("all steps: {}", day2.ledger.summary());
    check_stock_matches_successes(&frontend, &whole, &day2.ledger).await;
    check_every_order_is_readable(&frontend, &day2.ledger).await;
    store::check_replicas_identical(&day2.client, NAMESPACE, STORE, WAIT).await;

    cluster.kubectl(&["delete", "bookstore", STORE, "-n", NAMESPACE, "--wait=true"]);
    cluster.delete_namespace(NAMESPACE);
    cluster.uninstall_chart(OPERATOR_NAMESPACE);
}

/// A 2+2 store with this test's inventory; its volumes go with it.
fn store_manifest() -> String {
    let text = std::fs::read_to_string(
        bookstore_system_tests::cluster::repo_root().join("k8s/bookstore.yaml"),
    )
    .expect("k8s/bookstore.yaml");
    let mut store: BookStore = serde_yaml::from_str(&text).expect("the sample is a BookStore");
    store.metadata.name = Some(STORE.to_owned());
    store.spec.image = IMAGE.to_owned();
    store.spec.storage.delete_with_store = true;
    store.spec.inventory = Some(bookstore_operator::crd::Inventory {
        lines: Some(plan("all").inventory()),
        config_map: None,
    });
    serde_yaml::to_string(&store).expect("a manifest")
}

/// The store under test and what every step adds to the ledger.
struct Day2<'a> {
    cluster: &'a Cluster,
    client: Client,
    stores: Api<BookStore>,
    pods: Api<Pod>,
    frontend: String,
    token: String,
    http: reqwest::Client,
    ledger: Ledger,
}

/// What a step's buy load saw.
struct StepFigures {
    ledger: Ledger,
    longest_gap: Duration,
    took: Duration,
}

impl<'a> Day2<'a> {
    async fn new(cluster: &'a Cluster, client: Client) -> Self {
        let stores = Api::<BookStore>::namespaced(client.clone(), NAMESPACE);
        let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE);
        store::wait_status(&stores, STORE, "the store is Ready", WAIT, |s| {
            condition(s, "Ready") == Some("True")
        })
        .await;
        let frontend = store::frontend_url(&client, NAMESPACE, STORE).await;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        eventually("the frontend Service answers", WAIT, || async {
            let answer = http.get(format!("{frontend}/healthz")).send().await.ok()?;
            answer.status().is_success().then_some(())
        })
        .await;
        let token = store::peer_token(&client, NAMESPACE, STORE, WAIT).await;
        Self {
            cluster,
            client,
            stores,
            pods,
            frontend,
            token,
            http,
            ledger: Ledger::default(),
        }
    }

    /// Waits until the store is Ready, every member of both tiers in sync
    /// and the primaries on ordinal 0.
    async fn wait_settled(&self, what: &str) -> BookStoreStatus {
        store::wait_status(&self.stores, STORE, what, WAIT, |s| {
            condition(s, "Ready") == Some("True")
                && ["catalog", "order"].iter().all(|tier| {
                    let t = tier_status(s, tier);
                    t.primary == Some(0) && t.in_sync_members == t.desired_members
                })
        })
        .await
    }

    /// Runs `operate` under a buy load; returns what the load saw from the
    /// moment the operation began until it had finished.
    async fn under_load<F, Fut>(&self, step: &str, operate: F) -> StepFigures
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let load = BuyLoad::start(&self.frontend, &plan(step));
        load.first_success_after(Instant::now(), WAIT).await;
        let began = Instant::now();
        operate().await;
        let took = began.elapsed();
        // A few buys after it, so a gap at the very end shows too.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let longest_gap = load.longest_gap_since(began);
        let ledger = load.finish().await;
        println!(
            "{step}: took {} ms; load: {}; longest time without a successful buy {} ms",
            took.as_millis(),
            ledger.summary(),
            longest_gap.as_millis()
        );
        assert_eq!(
            ledger.unresolved, 0,
            "{step}: every buy gets a definite answer: {:?}",
            ledger.unresolved_answers
        );
        assert!(
            ledger.other_server_errors.is_empty(),
            "{step}: a 5xx other than the store's JSON 503: {:?}",
            ledger.other_server_errors
        );
        StepFigures {
            ledger,
            longest_gap,
            took,
        }
    }

    /// A planned operation costs no 503 at all (the frontend's retries
    /// ride through a clean handover); keeps its buys for the invariants.
    fn planned(&mut self, step: &str, figures: StepFigures) {
        assert_eq!(
            figures.ledger.unavailable_answers, 0,
            "{step}: a planned operation answered a buy with 503"
        );
        self.ledger.absorb(figures.ledger);
    }

    async fn patch(&self, patch: Value) {
        let text = patch.to_string();
        self.cluster.kubectl(&[
            "patch",
            "bookstore",
            STORE,
            "-n",
            NAMESPACE,
            "--type",
            "merge",
            "-p",
            &text,
        ]);
    }

    /// The coordinator's topology changes since `since_ms` (Unix ms), from
    /// the leading operator (`/stores/{ns}/{name}/coordinator/history`).
    async fn history_since(&self, since_ms: u64) -> Vec<Value> {
        let history: Vec<Value> = eventually("the coordinator's history", WAIT, || {
            self.coordinator_get("history")
        })
        .await;
        history
            .into_iter()
            .filter(|t| t["at_ms"].as_u64().unwrap_or(0) >= since_ms)
            .collect()
    }

    /// How often each tier's primary changed since `since_ms`.
    async fn primary_changes_since(&self, since_ms: u64, before: &BookStoreStatus) -> Vec<usize> {
        let history = self.history_since(since_ms).await;
        ["catalog", "order"]
            .iter()
            .map(|tier| {
                let mut primary = tier_status(before, tier).primary.map(u64::from);
                let mut changes = 0;
                let mut transitions: Vec<&Value> =
                    history.iter().filter(|t| t["tier"] == *tier).collect();
                transitions.sort_by_key(|t| t["epoch"].as_u64());
                for transition in transitions {
                    let now = transition["primary"].as_u64();
                    if now != primary {
                        changes += 1;
                        primary = now;
                    }
                }
                changes
            })
            .collect()
    }

    /// 1. `spec.image` to a new tag: replicas first, the primary last after
    ///    a switchover, each member back in sync before the next.
    async fn image_upgrade(&mut self) {
        tag_image(IMAGE, UPGRADED_IMAGE);
        let before = self.wait_settled("settled before the upgrade").await;
        let since = unix_ms();
        let figures = self
            .under_load("image upgrade", || async {
                self.patch(serde_json::json!({"spec": {"image": UPGRADED_IMAGE}}))
                    .await;
                eventually("every member runs the new image", WAIT, || async {
                    let pods = self.member_pods().await?;
                    let updated = pods
                        .iter()
                        .all(|p| pod_image(p) == Some(UPGRADED_IMAGE) && pod_is_ready(p));
                    (pods.len() == 4 && updated).then_some(())
                })
                .await;
                self.wait_settled("settled after the upgrade").await;
            })
            .await;
        let changes = self.primary_changes_since(since, &before).await;
        let status = self.stores.get(STORE).await.expect("the store");
        println!(
            "image upgrade: primary changes catalog {}, order {}; rollout status {:?}; longest gap {} ms",
            changes[0],
            changes[1],
            status.status.map(|s| s.rollout),
            figures.longest_gap.as_millis()
        );
        assert!(
            changes.iter().all(|&c| c <= 2),
            "an upgrade moves each primary at most twice: {changes:?}"
        );
        store::wait_event(&self.client, NAMESPACE, STORE, "RolloutStep", "", WAIT).await;
        self.planned("image upgrade", figures);
    }

    /// 2. The switchover annotation moves the named primaries, each with
    ///    one change of primary.
    async fn switchover(&mut self, ask: Ask<'_>, expect: &[(&str, u32)]) {
        let before = self.status().await;
        let since = unix_ms();
        let step = format!("switchover {ask:?}");
        let figures = self
            .under_load(&step, || async {
                match ask {
                    Ask::Annotation(value) => {
                        self.patch(serde_json::json!({
                            "metadata": {"annotations": {SWITCHOVER_ANNOTATION: value}}
                        }))
                        .await
                    }
                    Ask::Plugin(tier, ordinal) => {
                        let ordinal = ordinal.to_string();
                        let said = self.plugin(&["switchover", STORE, tier, &ordinal]);
                        println!("kubectl bookstore switchover: {}", said.trim());
                    }
                }
                store::wait_status(&self.stores, STORE, &step, WAIT, |s| {
                    expect.iter().all(|(tier, ordinal)| {
                        let t = tier_status(s, tier);
                        t.primary == Some(*ordinal) && t.in_sync_members == t.desired_members
                    })
                })
                .await;
            })
            .await;
        let changes = self.primary_changes_since(since, &before).await;
        let moved: Vec<usize> = expect
            .iter()
            .map(|(tier, ordinal)| {
                usize::from(tier_status(&before, tier).primary != Some(*ordinal))
            })
            .collect();
        println!(
            "{step}: took {} ms, primary changes catalog {}, order {}",
            figures.took.as_millis(),
            changes[0],
            changes[1]
        );
        assert_eq!(changes, moved, "{step}: one clean handover per moved tier");
        store::wait_event(&self.client, NAMESPACE, STORE, "Switchover", "", WAIT).await;
        self.planned(&step, figures);
    }

    /// The annotation removed: the plain rule takes both primaries back.
    async fn end_switchover(&mut self) {
        let figures = self
            .under_load("switchover removed", || async {
                self.patch(serde_json::json!({
                    "metadata": {"annotations": {SWITCHOVER_ANNOTATION: null}}
                }))
                .await;
                self.wait_settled("both primaries back on ordinal 0").await;
            })
            .await;
        self.planned("switchover removed", figures);
    }

    /// 3. `spec.replicas.catalog` to `members`: a new member joins, resyncs
    ///    and counts as in sync; a removed one leaves the in-sync set and
    ///    the topology before its pod goes.
    async fn scale_catalog(&mut self, members: u32) {
        let step = format!("scale catalog to {members}");
        let figures = self
            .under_load(&step, || async {
                self.patch(serde_json::json!({"spec": {"replicas": {"catalog": members}}}))
                    .await;
                store::wait_status(&self.stores, STORE, &step, WAIT, |s| {
                    let t = tier_status(s, "catalog");
                    t.desired_members == members as i32
                        && t.in_sync_members == members as i32
                        && t.primary == Some(0)
                        && s.coordinator
                            .as_ref()
                            .is_some_and(|c| c.catalog_members == members)
                })
                .await;
                eventually(
                    &format!("{step}: the coordinator's topology"),
                    WAIT,
                    || async {
                        let topologies = self.topologies().await?;
                        let catalog = topologies.iter().find(|t| t["tier"] == "catalog")?;
                        let listed = catalog["members"].as_array()?.len();
                        (listed == members as usize).then_some(())
                    },
                )
                .await;
                eventually(&format!("{step}: the pods"), WAIT, || async {
                    let pods = self.tier_pods("catalog").await?;
                    (pods.len() == members as usize && pods.iter().all(pod_is_ready)).then_some(())
                })
                .await;
            })
            .await;
        self.planned(&step, figures);
    }

    /// 4. `failureThreshold` 3 → 5: in force on the running coordinator (its
    ///    status and the operator's metric), and no pod restarted for it.
    async fn settings_change(&mut self) {
        let pods_before = self.store_pods().await;
        let figures = self
            .under_load("failure threshold 3 to 5", || async {
                self.patch(serde_json::json!({"spec": {"heartbeat": {"failureThreshold": 5}}}))
                    .await;
                store::wait_status(&self.stores, STORE, "failure threshold 5 in force", WAIT, |s| {
                    s.coordinator.as_ref().is_some_and(|c| c.failure_threshold == 5)
                })
                .await;
                let metric = format!(
                    "bookstore_operator_coordinator_setting{{setting=\"failure_threshold\",store=\"{NAMESPACE}/{STORE}\"}} 5"
                );
                eventually("the operator's metric shows it", WAIT, || async {
                    let text = self.operator_metrics().await?;
                    text.lines().any(|l| l == metric).then_some(())
                })
                .await;
            })
            .await;
        let pods_after = self.store_pods().await;
        assert_eq!(
            pods_before, pods_after,
            "a settings change restarted or replaced a pod"
        );
        self.planned("failure threshold 3 to 5", figures);
    }

    /// 5. The operator leader's pod and the catalog primary's pod deleted
    ///    at the same moment without grace: the standby operator takes the
    ///    Lease once it expires and resumes from the durable coordinator
    ///    state, then fails the catalog over.
    async fn leader_and_primary_lost_together(&mut self) {
        let status = self.wait_settled("settled before the double fault").await;
        let epoch = tier_status(&status, "catalog").epoch;
        let leader = leader_pod(&self.client).await;
        let primary = format!("{STORE}-catalog-0");
        let figures = self
            .under_load("operator leader and catalog primary lost", || async {
                let lost_at = Instant::now();
                let (cluster, leader, primary) = (self.cluster, &leader, &primary);
                let forced = ["--grace-period=0", "--force", "--wait=false"];
                let mut args = vec!["delete", "pod", "-n", OPERATOR_NAMESPACE, leader];
                args.extend(forced);
                cluster.kubectl(&args);
                let mut args = vec!["delete", "pod", "-n", NAMESPACE, primary];
                args.extend(forced);
                cluster.kubectl(&args);
                store::wait_status(&self.stores, STORE, "the catalog failed over", WAIT, |s| {
                    let t = tier_status(s, "catalog");
                    t.primary.is_some() && t.epoch > epoch
                })
                .await;
                let new_leader = leader_pod(&self.client).await;
                println!(
                    "double fault: {new_leader} leads {} ms after the loss of {leader} and {primary}",
                    lost_at.elapsed().as_millis()
                );
                assert_ne!(&new_leader, leader, "a new operator pod leads");
                self.wait_settled("settled after the double fault").await;
            })
            .await;
        println!(
            "double fault: longest time without a successful buy {} ms (one Lease is {} ms); \
             {} JSON 503 answers",
            figures.longest_gap.as_millis(),
            LEASE_DURATION.as_millis(),
            figures.ledger.unavailable_answers
        );
        self.ledger.absorb(figures.ledger);
    }

    /// 6. A fenced replica leaves the in-sync set and serves nothing (its
    ///    pod is not Ready) until unfenced, when it resyncs and rejoins.
    async fn fence_and_unfence(&mut self, member: &str) {
        let (tier, ordinal) = member.rsplit_once('-').expect("tier-ordinal");
        let pod = format!("{STORE}-{member}");
        let step = format!("fence {member}");
        let figures = self
            .under_load(&step, || async {
                self.plugin(&["fence", STORE, member]);
                store::wait_status(&self.stores, STORE, &step, WAIT, |s| {
                    let t = tier_status(s, tier);
                    t.in_sync_members == t.desired_members - 1 && t.primary == Some(0)
                })
                .await;
                eventually(&format!("{pod} is not Ready"), WAIT, || async {
                    let pod = self.pods.get(&pod).await.ok()?;
                    (!pod_is_ready(&pod)).then_some(())
                })
                .await;
                let topologies = self.topologies().await.unwrap_or_default();
                let fenced_in_sync = topologies.iter().any(|t| {
                    t["tier"] == tier
                        && t["members"].as_array().is_some_and(|members| {
                            members.iter().any(|m| {
                                m["ordinal"].as_u64().map(|o| o.to_string()).as_deref()
                                    == Some(ordinal)
                                    && m["in_sync"] == true
                            })
                        })
                });
                assert!(
                    !fenced_in_sync,
                    "{member} is fenced but in sync: {topologies:?}"
                );
            })
            .await;
        self.ledger.absorb(figures.ledger);
        let step = format!("unfence {member}");
        let figures = self
            .under_load(&step, || async {
                self.plugin(&["unfence", STORE, member]);
                self.wait_settled(&format!("{member} back in sync")).await;
            })
            .await;
        self.planned(&step, figures);
    }

    /// 7. Hibernation scales every workload to zero and keeps the claims;
    ///    resumed, the store comes back with its data (the final checks
    ///    count every earlier buy) and its primaries on ordinal 0.
    async fn hibernate_and_resume(&mut self) {
        let claims = Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(
            self.client.clone(),
            NAMESPACE,
        );
        let claims_before = claim_names(&claims).await;
        let asked = Instant::now();
        self.plugin(&["hibernate", STORE]);
        eventually("every pod of the store is gone", WAIT, || async {
            let pods = self.pods.list(&ListParams::default()).await.ok()?;
            pods.items.is_empty().then_some(())
        })
        .await;
        store::wait_status(
            &self.stores,
            STORE,
            "the store says it hibernates",
            WAIT,
            |s| condition(s, "Hibernated") == Some("True"),
        )
        .await;
        let asleep = asked.elapsed();
        assert_eq!(
            claim_names(&claims).await,
            claims_before,
            "hibernation keeps every volume claim"
        );
        let resumed = Instant::now();
        self.plugin(&["resume", STORE]);
        self.wait_settled("the store resumed").await;
        println!(
            "hibernation: every pod gone {} ms after the annotation, {} claims kept; \
             resumed and settled {} ms after it was lifted",
            asleep.as_millis(),
            claims_before.len(),
            resumed.elapsed().as_millis()
        );
        // Buys work again, on the data from before.
        let figures = self.under_load("after resuming", || async {}).await;
        self.planned("after resuming", figures);
    }

    /// Runs `kubectl bookstore ARGS -n NAMESPACE` with the cluster's
    /// kubeconfig; panics with its output if it fails.
    fn plugin(&self, args: &[&str]) -> String {
        output(
            std::process::Command::new(self.cluster.release_binary("kubectl-bookstore"))
                .env("KUBECONFIG", &self.cluster.kubeconfig)
                .args(args)
                .args(["-n", NAMESPACE]),
        )
    }

    /// `kubectl bookstore status` reaches every catalog and order member
    /// through the API server, and each reports itself serving.
    async fn check_plugin_status(&self) {
        let status = self.status().await;
        let expected: usize = ["catalog", "order"]
            .iter()
            .map(|tier| tier_status(&status, tier).desired_members as usize)
            .sum();
        let table = self.plugin(&["status", STORE]);
        println!("kubectl bookstore status {STORE}:\n{table}");
        let lines = self.plugin(&["status", STORE, "--json"]);
        let members: Vec<Value> = lines
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["role"] == "catalog" || line["role"] == "order")
            .collect();
        let answering = members
            .iter()
            .filter(|m| m["healthy"] == true && m["digest"].is_string() && m["pod"].is_string())
            .count();
        assert_eq!(
            (members.len(), answering),
            (expected, expected),
            "kubectl bookstore status: every member answers and serves: {lines}"
        );
    }

    async fn status(&self) -> BookStoreStatus {
        self.stores
            .get(STORE)
            .await
            .expect("the store")
            .status
            .expect("a status")
    }

    async fn topologies(&self) -> Option<Vec<Value>> {
        self.coordinator_get("topology").await
    }

    /// `GET /stores/{ns}/{name}/coordinator/{what}` from the leading
    /// operator, with the store's token.
    async fn coordinator_get(&self, what: &str) -> Option<Vec<Value>> {
        let url = format!(
            "{}/stores/{NAMESPACE}/{STORE}/coordinator/{what}",
            operator_url(&self.client).await
        );
        self.http
            .get(&url)
            .header("x-bookstore-peer-token", &self.token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    async fn operator_metrics(&self) -> Option<String> {
        let service = operator_url(&self.client).await;
        let base = service.rsplit_once(':').map(|(host, _)| host)?;
        self.http
            .get(format!("{base}:8080/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    async fn tier_pods(&self, tier: &str) -> Option<Vec<Pod>> {
        let selector =
            format!("app.kubernetes.io/instance={STORE},app.kubernetes.io/component={tier}");
        let list = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?;
        Some(
            list.items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect(),
        )
    }

    async fn member_pods(&self) -> Option<Vec<Pod>> {
        let mut pods = self.tier_pods("catalog").await?;
        pods.extend(self.tier_pods("order").await?);
        Some(pods)
    }

    /// Every pod of the store: name, uid and container restarts.
    async fn store_pods(&self) -> Vec<(String, String, i32)> {
        let list = self
            .pods
            .list(&ListParams::default())
            .await
            .expect("the store's pods");
        let mut pods: Vec<(String, String, i32)> = list
            .items
            .iter()
            .map(|p| {
                let restarts = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .map_or(0, |c| c.iter().map(|c| c.restart_count).sum());
                (p.name_any(), p.uid().unwrap_or_default(), restarts)
            })
            .collect();
        pods.sort();
        pods
    }
}

/// The names of the namespace's volume claims, sorted.
async fn claim_names(
    claims: &Api<k8s_openapi::api::core::v1::PersistentVolumeClaim>,
) -> Vec<String> {
    let list = claims
        .list(&ListParams::default())
        .await
        .expect("the volume claims");
    let mut names: Vec<String> = list.items.iter().map(ResourceExt::name_any).collect();
    names.sort();
    names
}

/// How a switchover is asked for.
#[derive(Debug, Clone, Copy)]
enum Ask<'a> {
    /// The annotation set by hand (`kubectl annotate`).
    Annotation(&'a str),
    /// `kubectl bookstore switchover STORE TIER ORDINAL`.
    Plugin(&'a str, u32),
}

/// The first container's image.
fn pod_image(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.containers.first()?.image.as_deref()
}

/// The operator's Service as this node reaches it: its coordinator port.
async fn operator_url(client: &Client) -> String {
    let port = bookstore_operator::names::COORDINATOR_PORT;
    store::service_url(client, OPERATOR_NAMESPACE, "bookstore-operator", port).await
}

/// The pod holding the operator's leader Lease.
async fn leader_pod(client: &Client) -> String {
    let leases = Api::<Lease>::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let pods = Api::<Pod>::namespaced(client.clone(), OPERATOR_NAMESPACE);
    eventually("an operator pod holds the leader Lease", WAIT, || async {
        let lease = leases.get("bookstore-operator-leader").await.ok()?;
        let holder = lease.spec?.holder_identity?;
        let pod = pods.get_opt(&holder).await.ok()??;
        (pod.metadata.deletion_timestamp.is_none() && pod_is_ready(&pod)).then_some(holder)
    })
    .await
}

/// Tags `image` as `tag` in the cluster's containerd, so the upgrade has a
/// new image name to move to.
fn tag_image(image: &str, tag: &str) {
    let socket = "/run/bookstore-cluster/containerd.sock";
    run(std::process::Command::new("ctr").args([
        "--address",
        socket,
        "-n",
        "k8s.io",
        "images",
        "tag",
        "--force",
        image,
        tag,
    ]));
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
