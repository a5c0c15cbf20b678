//! The console's server: the page, one snapshot per tick over server-sent
//! events (`GET /events`, and the latest as JSON at `GET /snapshot` for
//! scripts and tests), and the page's actions (`POST /actions/NAME` and
//! `POST /actions/NAME/TARGET`), which the backend carries out. The backend
//! holds whatever credential the actions need (the peer token, the user's
//! kubeconfig); nothing of it reaches the browser.
//!
//! Two guards keep other web pages out, since the buttons break the store:
//! actions need a header that a cross-site form cannot send
//! ([`ACTION_HEADER`]), and every request must name this server by a
//! loopback host (`Host: 127.0.0.1:PORT`), so a DNS-rebinding page that
//! reaches the port under its own name is refused. The commands listen on
//! loopback ([`DEFAULT_LISTEN`]) unless told otherwise.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::{Backend, TICK};

/// The header every action must carry (see the module's docs).
pub const ACTION_HEADER: &str = "x-bookstore-console";
/// Where the console listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8090";

const PAGE: &str = include_str!("page.html");

/// What the handlers share.
struct Console<B> {
    backend: Arc<B>,
    snapshots: watch::Receiver<Arc<String>>,
    /// The `Host` values this server answers to.
    hosts: Vec<String>,
}

// Not derived: a derive would ask for `B: Clone`, and only the `Arc` is
// cloned.
impl<B> Clone for Console<B> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            snapshots: self.snapshots.clone(),
            hosts: self.hosts.clone(),
        }
    }
}

/// Why the console could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding the console to {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("serving the console: {0}")]
    Serve(#[from] std::io::Error),
}

/// What both commands do: binds `listen`, prints where the page is
/// (`about` names the store), and serves until Ctrl-C or SIGTERM.
pub async fn run<B: Backend>(
    listen: SocketAddr,
    backend: B,
    about: &str,
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            address: listen,
            source,
        })?;
    let address = listener.local_addr()?;
    println!("BookStore console{about}: http://{address}/ (Ctrl-C stops it)");
    let shutdown = bookstore_core::shutdown::Shutdown::on_signals();
    serve(listener, backend, shutdown.wait()).await?;
    Ok(())
}

/// Serves the console on `listener` until `shutdown` completes, sampling
/// `backend` every tick.
pub async fn serve<B: Backend>(
    listener: TcpListener,
    backend: B,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    let backend = Arc::new(backend);
    let (publish, snapshots) = watch::channel(Arc::new("{}".to_owned()));
    let sampler = tokio::spawn(sample(backend.clone(), publish));
    let console = Console {
        backend,
        snapshots,
        hosts: allowed_hosts(address),
    };
    let served = axum::serve(listener, router(console))
        .with_graceful_shutdown(shutdown)
        .await;
    sampler.abort();
    served
}

/// Publishes the backend's snapshot every tick until nobody can read them.
async fn sample<B: Backend>(backend: Arc<B>, publish: watch::Sender<Arc<String>>) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let snapshot = backend.snapshot().await;
        let json = match serde_json::to_string(&snapshot) {
            Ok(json) => json,
            Err(error) => {
                tracing::error!(%error, "cannot encode a snapshot");
                continue;
            }
        };
        if publish.send(Arc::new(json)).is_err() {
            return;
        }
    }
}

fn router<B: Backend>(console: Console<B>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/events", get(events::<B>))
        .route("/snapshot", get(latest::<B>))
        .route("/actions/{action}", post(act_on_store::<B>))
        .route("/actions/{action}/{target}", post(act_on_target::<B>))
        .layer(middleware::from_fn_with_state(
            console.clone(),
            only_our_host::<B>,
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

async fn only_our_host<B: Backend>(
    State(console): State<Console<B>>,
    request: Request,
    next: Next,
) -> Response {
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
async fn events<B: Backend>(
    State(console): State<Console<B>>,
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

/// The latest snapshot as JSON (`{}` before the first tick).
async fn latest<B: Backend>(State(console): State<Console<B>>) -> Response {
    let json = console.snapshots.borrow().clone();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json.as_str().to_owned(),
    )
        .into_response()
}

async fn act_on_store<B: Backend>(
    State(console): State<Console<B>>,
    Path(action): Path<String>,
    headers: HeaderMap,
) -> Response {
    act(&console, &action, None, &headers).await
}

async fn act_on_target<B: Backend>(
    State(console): State<Console<B>>,
    Path((action, target)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    act(&console, &action, Some(&target), &headers).await
}

async fn act<B: Backend>(
    console: &Console<B>,
    action: &str,
    target: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    if !from_the_page(headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "actions come from the console's page",
        );
    }
    if !is_offered(console.backend.actions(), action, target) {
        return refuse(StatusCode::NOT_FOUND, "no such action");
    }
    match console.backend.act(action, target).await {
        Ok(done) => Json(json!({"done": done})).into_response(),
        Err(error) => refuse(StatusCode::CONFLICT, &error.0),
    }
}

fn from_the_page(headers: &HeaderMap) -> bool {
    headers.get(ACTION_HEADER).is_some_and(|v| v == "1")
}

/// Whether `action` is one the backend offers, with a target when it acts
/// on one; a target is a member's name, letters, digits and dashes only.
fn is_offered(actions: &[crate::Action], action: &str, target: Option<&str>) -> bool {
    let Some(offered) = actions.iter().find(|a| a.name == action) else {
        return false;
    };
    match target {
        None => offered.scopes.contains(&crate::Scope::Store),
        Some(target) => {
            offered.scopes.iter().any(|s| *s != crate::Scope::Store) && is_a_member_name(target)
        }
    }
}

/// Letters, digits and dashes, as members' and pods' names are.
fn is_a_member_name(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, Scope};

    #[test]
    fn only_loopback_names_of_the_port_are_allowed_hosts() {
        let hosts = allowed_hosts("127.0.0.1:8090".parse().expect("an address"));
        assert_eq!(hosts, ["127.0.0.1:8090", "localhost:8090", "[::1]:8090"]);
        let told = allowed_hosts("10.0.0.5:9000".parse().expect("an address"));
        assert!(told.contains(&"10.0.0.5:9000".to_owned()));
        assert!(!told.contains(&"evil.example:9000".to_owned()));
    }

    #[test]
    fn only_offered_actions_on_plain_member_names_are_done() {
        const ACTIONS: &[Action] = &[
            Action {
                name: "kill",
                label: "Kill",
                explanation: "",
                scopes: &[Scope::Member],
            },
            Action {
                name: "load",
                label: "Load",
                explanation: "",
                scopes: &[Scope::Store],
            },
        ];
        assert!(is_offered(ACTIONS, "kill", Some("catalog-0")));
        assert!(is_offered(ACTIONS, "load", None));
        assert!(!is_offered(ACTIONS, "rm", Some("catalog-0")));
        assert!(!is_offered(ACTIONS, "kill", None));
        assert!(!is_offered(ACTIONS, "load", Some("catalog-0")));
        assert!(!is_offered(ACTIONS, "kill", Some("../etc")));
        assert!(!is_offered(ACTIONS, "kill", Some("")));
    }
}
