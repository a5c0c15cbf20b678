//! `bookstore-operator`: `run` the operator, or print the `crd`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use bookstore_core::http::{ReadinessCheck, serve, service_router};
use bookstore_core::json_errors;
use bookstore_core::shutdown::{self, Shutdown};
use bookstore_operator::controller::{self, Context};
use bookstore_operator::coordination::Coordination;
use bookstore_operator::leader::{LeaderElection, LeaderLabel};
use bookstore_operator::metrics::OperatorMetrics;
use bookstore_operator::names::COORDINATOR_PORT;
use clap::{Parser, Subcommand};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client};

#[derive(Debug, Parser)]
#[command(
    name = "bookstore-operator",
    version,
    about = "The Kubernetes operator for BookStore."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the BookStore CustomResourceDefinition as YAML.
    Crd,
    /// Run the operator (kubeconfig from KUBECONFIG, or in-cluster).
    Run(RunArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    /// Where /healthz, /readyz and /metrics are served.
    #[arg(
        long,
        env = "BOOKSTORE_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    metrics_addr: SocketAddr,
    /// Where the stores' members reach their coordinators.
    #[arg(long, env = "BOOKSTORE_OPERATOR_COORDINATOR_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], COORDINATOR_PORT)))]
    coordinator_addr: SocketAddr,
    /// The coordinator base URL as the stores' pods reach it (the
    /// operator's Service); default derived from POD_NAMESPACE.
    #[arg(long, env = "BOOKSTORE_OPERATOR_URL")]
    operator_url: Option<String>,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Run only the stores of these namespaces (comma-separated), with Roles
    /// in them instead of a ClusterRole; every namespace when empty.
    #[arg(long, env = "BOOKSTORE_WATCH_NAMESPACES", value_delimiter = ',')]
    watch_namespaces: Vec<String>,
    /// The pod this process runs in (in --namespace): the leader labels it
    /// `mybookstore.dev/operator-leader=true`, which the chart's Service
    /// selects, and takes the label off the other replicas' pods. Without
    /// it (a process outside the cluster) nothing is labelled.
    #[arg(long, env = "BOOKSTORE_OPERATOR_OWN_POD")]
    own_pod: Option<String>,
}

fn main() -> anyhow::Result<()> {
    bookstore_core::telemetry::init();
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", bookstore_operator::crd_yaml());
            Ok(())
        }
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run(args)),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("bookstore-operator-{}", std::process::id()));
    let operator_url = args.operator_url.clone().unwrap_or_else(|| {
        format!(
            "http://bookstore-operator.{}.svc:{COORDINATOR_PORT}",
            args.namespace
        )
    });
    let metrics = OperatorMetrics::new();
    let leading = Arc::new(AtomicBool::new(false));
    let stop = Shutdown::on_signals();

    // Health and metrics first: the kubelet probes them while we wait for the Lease.
    let readiness: ReadinessCheck = {
        let leading = leading.clone();
        Arc::new(move || match leading.load(Ordering::Relaxed) {
            true => Ok(()),
            false => Err("waiting to become the leader".to_owned()),
        })
    };
    let health = service_router(Router::new(), metrics.registry.clone(), readiness);
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;
    tokio::spawn(serve(listener, health, stop.clone().wait()));

    let election = LeaderElection::new(
        Api::<Lease>::namespaced(client.clone(), &args.namespace),
        "bookstore-operator-leader",
        &identity,
    );
    let leader_label = args
        .own_pod
        .as_deref()
        .map(|own| LeaderLabel::new(Api::<Pod>::namespaced(client.clone(), &args.namespace), own));
    if let Some(label) = &leader_label
        && let Err(error) = label.stand_by().await
    {
        tracing::warn!(%error, "cannot take the leader label off this pod");
    }
    tokio::select! {
        acquired = election.acquire() => acquired.context("acquiring the leader Lease")?,
        _ = stop.clone().wait() => return Ok(()),
    }
    if let Some(label) = &leader_label {
        // Without the label the Service sends no member to this leader.
        if let Err(error) = label.lead().await {
            election.release().await;
            return Err(error).context("labelling the leader's pod for the operator's Service");
        }
    }
    leading.store(true, Ordering::Relaxed);
    metrics.leader.set(1);

    let reporter = Reporter {
        controller: "bookstore-operator.mybookstore.dev".to_owned(),
        instance: Some(identity.clone()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let coordination = Coordination::new(metrics.registry.clone(), Some(recorder.clone()));
    let coordinator_routes = Router::new()
        .merge(coordination.router())
        .route("/healthz", get(|| async { "ok" }))
        // The members' calls get the store's JSON errors here too.
        .layer(axum::middleware::from_fn(json_errors::rewrite));
    let listener = tokio::net::TcpListener::bind(args.coordinator_addr)
        .await
        .with_context(|| format!("binding {}", args.coordinator_addr))?;
    tokio::spawn(serve(listener, coordinator_routes, stop.clone().wait()));

    // Stop acting the moment leadership is lost or a signal arrives.
    let (trigger, controller_stop) = shutdown::channel();
    let election = Arc::new(election);
    let lost = {
        let election = election.clone();
        tokio::spawn(async move { election.keep().await })
    };
    let signals = stop.clone();
    let lost_leadership = Arc::new(AtomicBool::new(false));
    {
        let lost_leadership = lost_leadership.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = lost => lost_leadership.store(true, Ordering::Relaxed),
                _ = signals.wait() => {}
            }
            trigger.fire();
        });
    }
    let leader_gauge = metrics.leader.clone();
    let watch_namespaces: Vec<String> = args
        .watch_namespaces
        .iter()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    let context = Arc::new(Context {
        client,
        watch_namespaces,
        coordination,
        metrics,
        recorder,
        operator_url,
    });
    tracing::info!(%identity, namespaces = ?context.watch_namespaces, "reconciling BookStores (no namespaces: all)");
    controller::run(context, controller_stop.wait()).await;
    leading.store(false, Ordering::Relaxed);
    leader_gauge.set(0);
    if let Some(label) = &leader_label
        && let Err(error) = label.stand_by().await
    {
        tracing::warn!(%error, "cannot take the leader label off this pod (the next leader does)");
    }
    election.release().await;
    // Exit non-zero so the Deployment restarts this replica as a follower.
    anyhow::ensure!(
        !lost_leadership.load(Ordering::Relaxed),
        "lost the leader Lease; stopped acting"
    );
    tracing::info!("stopped");
    Ok(())
}
