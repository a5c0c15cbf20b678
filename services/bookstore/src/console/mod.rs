//! `bookstore console`: a live page of a local store (one that `bookstore up`
//! runs), served on loopback, for watching it fail over while breaking it.
//!
//! A sampler asks every member, the coordinator and the frontend's metrics
//! what they are doing every [`TICK`], and the page gets each snapshot over
//! server-sent events: the tiers' members (role, phase, epoch, applied index,
//! lag, in sync), buy and lookup rates and latencies over the last minute,
//! and the coordinator's recent topology changes with their causes. The
//! page's buttons call this server, which holds the peer token: the token
//! never reaches the browser.
//!
//! Two guards keep other web pages out, since the buttons kill processes:
//! actions need a header that a cross-site form cannot send
//! (`x-bookstore-console`), and every request must name this server by a
//! loopback host (`Host: 127.0.0.1:PORT`), so a DNS-rebinding page that
//! reaches the port under its own name is refused.

pub mod load;
pub mod rates;
pub mod snapshot;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use futures::Stream;
use serde_json::json;
use tokio::sync::watch;

use crate::fault::{self, FaultAction};
use crate::settings::StoreArgs;
use load::{LoadPlan, LoadRun};
use snapshot::Sampler;

/// How often the page is updated.
pub const TICK: Duration = Duration::from_millis(500);
/// The header every action must carry (see the module's docs).
pub const ACTION_HEADER: &str = "x-bookstore-console";
/// Where the console listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8090";

const PAGE: &str = include_str!("page.html");

#[derive(Debug, Clone, Args)]
pub struct ConsoleArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Where the console's page is served. Keep it on loopback: its buttons
    /// kill and pause the store's processes.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
}

/// What the handlers share.
#[derive(Clone)]
struct Console {
    store: StoreArgs,
    snapshots: watch::Receiver<Arc<String>>,
    load: LoadRun,
    /// The `Host` values this server answers to.
    hosts: Arc<[String]>,
}

pub async fn run(args: ConsoleArgs) -> anyhow::Result<()> {
    let cluster = args.store.cluster()?;
    args.store
        .load_token()
        .context("the console acts on a local store; start it with `bookstore up` first")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the console to {}", args.listen))?;
    let address = listener.local_addr()?;
    let load = LoadRun::default();
    let (publish, snapshots) = watch::channel(Arc::new("{}".to_owned()));
    let sampler = Sampler::new(args.store.clone(), &cluster, load.clone())?;
    tokio::spawn(sampler.run(publish));
    let console = Console {
        store: args.store,
        snapshots,
        load,
        hosts: allowed_hosts(address).into(),
    };
    println!("BookStore console: http://{address}/ (Ctrl-C stops it)");
    let shutdown = bookstore_core::shutdown::Shutdown::on_signals();
    axum::serve(listener, router(console))
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
        .context("serving the console")
}

fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/events", get(events))
        .route("/actions/load", post(start_load))
        .route("/actions/{action}/{member}", post(act))
        .layer(middleware::from_fn_with_state(
            console.clone(),
            only_our_host,
        ))
        .with_state(console)
}

/// `127.0.0.1:PORT`, `localhost:PORT` and `[::1]:PORT` (and the address
/// itself when it is not loopback, because the user asked for it).
fn allowed_hosts(address: SocketAddr) -> Vec<String> {
    let port = address.port();
    let mut hosts = vec![
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ];
    if !address.ip().is_loopback() {
        hosts.push(address.to_string());
    }
    hosts
}

async fn only_our_host(State(console): State<Console>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if console.hosts.iter().any(|allowed| allowed == host) {
        next.run(request).await
    } else {
        refuse(
            StatusCode::FORBIDDEN,
            "this console answers only to its loopback address",
        )
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": "refused", "message": message}})),
    )
        .into_response()
}

async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE))
}

/// One `snapshot` event per tick, the latest first.
async fn events(
    State(console): State<Console>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let snapshots = console.snapshots.clone();
    let stream = futures::stream::unfold((snapshots, true), |(mut snapshots, first)| async move {
        if !first && snapshots.changed().await.is_err() {
            return None;
        }
        let data = snapshots.borrow_and_update().clone();
        let event = Event::default().event("snapshot").data(data.as_str());
        Some((Ok(event), (snapshots, false)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn from_the_page(headers: &HeaderMap) -> bool {
    headers.get(ACTION_HEADER).is_some_and(|v| v == "1")
}

async fn act(
    State(console): State<Console>,
    Path((action, member)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !from_the_page(&headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "actions come from the console's page",
        );
    }
    let Some(action) = parse_action(&action) else {
        return refuse(StatusCode::NOT_FOUND, "no such action");
    };
    match fault::apply(&console.store, action, &member).await {
        Ok(done) => Json(json!({"done": done})).into_response(),
        Err(error) => refuse(StatusCode::CONFLICT, &format!("{error:#}")),
    }
}

fn parse_action(name: &str) -> Option<FaultAction> {
    match name {
        "kill" => Some(FaultAction::Kill),
        "pause" => Some(FaultAction::Pause),
        "resume" => Some(FaultAction::Resume),
        "shutdown" => Some(FaultAction::Shutdown),
        "recover" => Some(FaultAction::Recover),
        _ => None,
    }
}

async fn start_load(State(console): State<Console>, headers: HeaderMap) -> Response {
    if !from_the_page(&headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "actions come from the console's page",
        );
    }
    let cluster = match console.store.cluster() {
        Ok(cluster) => cluster,
        Err(error) => return refuse(StatusCode::CONFLICT, &format!("{error:#}")),
    };
    let Some(frontend) = snapshot::frontend_url(&cluster) else {
        return refuse(StatusCode::CONFLICT, "the cluster file has no frontend");
    };
    let plan = LoadPlan::default();
    match console.load.start(frontend, plan) {
        Ok(()) => Json(json!({"done": plan.describe()})).into_response(),
        Err(busy) => refuse(StatusCode::CONFLICT, &busy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_of_the_port_are_allowed_hosts() {
        let hosts = allowed_hosts("127.0.0.1:8090".parse().expect("an address"));
        assert_eq!(hosts, ["127.0.0.1:8090", "localhost:8090", "[::1]:8090"]);
        let told = allowed_hosts("10.0.0.5:9000".parse().expect("an address"));
        assert!(told.contains(&"10.0.0.5:9000".to_owned()));
        assert!(!told.contains(&"evil.example:9000".to_owned()));
    }

    #[test]
    fn every_button_names_an_action_and_nothing_else_is_one() {
        for name in ["kill", "pause", "resume", "shutdown", "recover"] {
            assert!(parse_action(name).is_some(), "{name}");
        }
        assert!(parse_action("rm").is_none());
    }
}
