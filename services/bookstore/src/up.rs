//! `bookstore up`: the whole store on one machine, no Kubernetes needed.
//!
//! It runs the coordinator itself, starts every service of the cluster file
//! as a child process on loopback, restarts a child that dies (after a short
//! backoff, as Kubernetes would recreate a pod), and on Ctrl-C or SIGTERM
//! stops them all. Each replicated member keeps its database in its own
//! directory, DATA_DIR/ROLE-ORDINAL/, so each can live on its own disk. Child
//! output goes to DATA_DIR/logs/ROLE-ORDINAL.log; the children's pids go to
//! DATA_DIR/up.json for `bookstore status`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bookstore_core::cluster::{ClusterConfig, Member, Role};
use bookstore_core::http::{always_ready, serve, service_router};
use bookstore_core::inventory;
use bookstore_core::metrics::Metrics;
use bookstore_core::plan::{self, MemberCommand, OrdinalSource};
use bookstore_core::shutdown::{self, Shutdown};
use bookstore_core::token::PeerToken;
use bookstore_replication::coordinator::durable::FileStore;
use bookstore_replication::coordinator::{CoordinatorConfig, DEFAULT_MISS_THRESHOLD};
use bookstore_replication::coordinator_server::CoordinatorServer;
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use crate::settings::{DEFAULT_INVENTORY, StoreArgs};

/// The first pause before restarting a child that died.
const RESTART_BACKOFF: Duration = Duration::from_millis(500);
/// The longest pause between restarts of a child that keeps dying.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(8);
/// A child that ran this long before dying restarts after the shortest pause.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
/// How long children get to finish after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The file `up` keeps its children's pids in, inside the data directory.
pub const PIDS_FILE: &str = "up.json";

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The initial inventory, in the original's init_bookstore format.
    #[arg(long, env = "BOOKSTORE_INVENTORY", default_value = DEFAULT_INVENTORY)]
    pub inventory: PathBuf,
    /// Run without the cache service (to measure what caching buys).
    #[arg(long)]
    pub no_cache: bool,
    /// Heartbeats a replica may miss before the coordinator counts it down.
    #[arg(long, default_value_t = DEFAULT_MISS_THRESHOLD)]
    pub miss_threshold: u32,
}

/// The children's pids, as `bookstore status` reads them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pids {
    pub supervisor: u32,
    pub members: BTreeMap<String, u32>,
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let cluster = args.store.cluster()?;
    let books = inventory::load(&args.inventory).context("loading the inventory (--inventory)")?;
    let data_dir = args.store.data_dir.clone();
    std::fs::create_dir_all(data_dir.join("logs"))
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let token = PeerToken::load_or_create(&args.store.token_path())?;
    let shutdown = Shutdown::on_signals();

    let coordinator = start_coordinator(&cluster, &args, token, shutdown.clone()).await?;
    let pids = Arc::new(Mutex::new(Pids {
        supervisor: std::process::id(),
        members: BTreeMap::new(),
    }));
    let mut supervisors = Vec::new();
    for member in children(&cluster, args.no_cache) {
        let member_dir = member_data_dir(&data_dir, &member);
        if member.role.is_replicated() {
            move_legacy_database(&data_dir, &member_dir, &member.name())?;
        }
        let child = ChildSpec::new(&member, &member_dir, &args)?;
        supervisors.push(tokio::spawn(supervise(
            child,
            coordinator.clone(),
            pids.clone(),
            data_dir.clone(),
            shutdown.clone(),
        )));
    }
    print_banner(&cluster, &args, books.len());
    for supervisor in supervisors {
        let _ = supervisor.await;
    }
    let _ = std::fs::remove_file(data_dir.join(PIDS_FILE));
    println!("BookStore stopped.");
    Ok(())
}

/// Where a child keeps its data: a replicated member in its own directory
/// (DATA_DIR/catalog-0/), so that each member's storage can be a disk of its
/// own (the full-disk test gives one a small tmpfs); the stateless services
/// in DATA_DIR.
fn member_data_dir(data_dir: &Path, member: &Member) -> PathBuf {
    if member.role.is_replicated() {
        data_dir.join(member.name())
    } else {
        data_dir.to_path_buf()
    }
}

/// Moves a member's database from where earlier versions of `up` kept it
/// (DATA_DIR/catalog-0.db, with its `-wal` and `-shm` files) into the
/// member's own directory, once, before the member starts. Skipping this
/// would start the member empty and lose what it held.
fn move_legacy_database(data_dir: &Path, member_dir: &Path, name: &str) -> anyhow::Result<()> {
    let file = format!("{name}.db");
    let legacy = data_dir.join(&file);
    if !legacy.exists() || member_dir.join(&file).exists() {
        return Ok(());
    }
    std::fs::create_dir_all(member_dir)
        .with_context(|| format!("creating {}", member_dir.display()))?;
    // The database first: the WAL and shared-memory files mean nothing
    // without it, and SQLite recreates a missing `-shm`.
    for suffix in ["", "-wal", "-shm"] {
        let from = data_dir.join(format!("{file}{suffix}"));
        let to = member_dir.join(format!("{file}{suffix}"));
        if from.exists() {
            std::fs::rename(&from, &to).with_context(|| {
                format!(
                    "moving {} to {} (DATA_DIR/ROLE-ORDINAL/ is where members keep their data now; move it by hand if they are on different disks)",
                    from.display(),
                    to.display()
                )
            })?;
        }
    }
    eprintln!("moved {} into {}", legacy.display(), member_dir.display());
    Ok(())
}

/// Every service member of the cluster file, cache first (the catalog
/// tells it about changes), then the replicated tiers, then the frontend.
fn children(cluster: &ClusterConfig, no_cache: bool) -> Vec<Member> {
    [Role::Cache, Role::Catalog, Role::Order, Role::Frontend]
        .into_iter()
        .filter(|role| !(no_cache && *role == Role::Cache))
        .flat_map(|role| cluster.of_role(role).cloned().collect::<Vec<_>>())
        .collect()
}

async fn start_coordinator(
    cluster: &ClusterConfig,
    args: &UpArgs,
    token: PeerToken,
    shutdown: Shutdown,
) -> anyhow::Result<CoordinatorServer> {
    let member = cluster
        .first(Role::Coordinator)
        .context("the cluster file lists no coordinator")?;
    let config = CoordinatorConfig {
        heartbeat_interval: args.store.heartbeat_interval(),
        miss_threshold: args.miss_threshold.max(1),
    };
    let tiers = plan::cluster_tiers(cluster);
    let subscribers = plan::cluster_subscribers(cluster);
    let metrics = Metrics::new("coordinator");
    // The coordinator's epochs and in-sync sets outlive `up`: a restarted
    // store continues from them and can never elect a stale member.
    let durable = FileStore::in_dir(&args.store.data_dir);
    let server = CoordinatorServer::start_local(
        config,
        &tiers,
        subscribers,
        Arc::new(durable.clone()),
        token.clone(),
        &metrics,
    )
    .await
    .with_context(|| {
        format!(
            "starting the coordinator; if {} is damaged, move it away and the coordinator bootstraps from the members once all are up",
            durable.path().display()
        )
    })?;
    let listener = TcpListener::bind(&member.peer)
        .await
        .with_context(|| format!("binding the coordinator to {}", member.peer))?;
    let router = service_router(server.routes(token), metrics, always_ready());
    tokio::spawn(server.clone().run_ticks());
    tokio::spawn(async move {
        if let Err(error) = serve(listener, router, shutdown.wait()).await {
            tracing::error!(%error, "the coordinator stopped serving");
        }
    });
    Ok(server)
}

/// How to start one child.
struct ChildSpec {
    member: Member,
    name: String,
    program: PathBuf,
    args: Vec<String>,
}

impl ChildSpec {
    fn new(member: &Member, data_dir: &Path, up: &UpArgs) -> anyhow::Result<Self> {
        let program = std::env::current_exe().context("finding the bookstore binary")?;
        let args = MemberCommand {
            role: member.role,
            ordinal: OrdinalSource::Given(member.ordinal),
            cluster: up.store.cluster.display().to_string(),
            inventory: up.inventory.display().to_string(),
            token_file: up.store.token_path().display().to_string(),
            data_dir: data_dir.display().to_string(),
            heartbeat_ms: up.store.heartbeat_ms,
            bind_host: None,
            advertise_host: None,
            coordinator_url: None,
            no_cache: up.no_cache,
        }
        .args();
        Ok(Self {
            member: member.clone(),
            name: member.name(),
            program,
            args,
        })
    }

    fn spawn(&self, log_dir: &Path) -> anyhow::Result<Child> {
        let log_path = log_dir.join(format!("{}.log", self.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        Ok(child)
    }
}

/// Keeps one child running until shutdown, restarting it when it dies.
async fn supervise(
    child: ChildSpec,
    coordinator: CoordinatorServer,
    pids: Arc<Mutex<Pids>>,
    data_dir: PathBuf,
    shutdown: Shutdown,
) {
    let (stop_trigger, stopped) = shutdown::channel();
    let watcher = tokio::spawn(async move {
        shutdown.wait().await;
        stop_trigger.fire();
    });
    let stop = stopped.clone().wait();
    tokio::pin!(stop);
    let mut backoff = RESTART_BACKOFF;
    loop {
        let started = Instant::now();
        let mut process = match child.spawn(&data_dir.join("logs")) {
            Ok(process) => process,
            Err(error) => {
                tracing::error!(child = %child.name, error = %format!("{error:#}"), "cannot start");
                tokio::select! {
                    _ = tokio::time::sleep(MAX_RESTART_BACKOFF) => continue,
                    _ = &mut stop => break,
                }
            }
        };
        let pid = process.id().unwrap_or_default();
        record_pid(&pids, &data_dir, &child.name, pid);
        tokio::select! {
            status = process.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                backoff = if started.elapsed() >= HEALTHY_RUN { RESTART_BACKOFF } else { (backoff * 2).min(MAX_RESTART_BACKOFF) };
                tracing::warn!(child = %child.name, pid, %status, ?backoff, "child exited; restarting");
                // A dead member is down now, not after missed heartbeats:
                // a primary that died fails over at once.
                if child.member.role.is_replicated() {
                    coordinator.mark_down(child.member.role, child.member.ordinal, "process exited", std::time::Instant::now()).await;
                }
                eprintln!("{} (pid {pid}) exited: {status}; restarting in {backoff:?}", child.name);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut stop => break,
                }
            }
            _ = &mut stop => {
                terminate(&mut process, &child.name).await;
                break;
            }
        }
    }
    watcher.abort();
}

/// SIGTERM, then SIGKILL after the grace period. Says how the child ended
/// (`catalog-0 (pid 123) stopped: exit status: 0`), so a child that had to
/// be killed is visible.
async fn terminate(process: &mut Child, name: &str) {
    let pid = process.id().unwrap_or_default();
    if pid != 0 {
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    match tokio::time::timeout(STOP_GRACE, process.wait()).await {
        Ok(status) => {
            let status = status
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            eprintln!("{name} (pid {pid}) stopped: {status}");
        }
        Err(_) => {
            tracing::warn!(child = name, "did not stop in time; killing");
            let _ = process.kill().await;
            eprintln!("{name} (pid {pid}) did not stop within {STOP_GRACE:?}; killed");
        }
    }
}

fn record_pid(pids: &Mutex<Pids>, data_dir: &Path, name: &str, pid: u32) {
    let mut pids = pids.lock().unwrap_or_else(|p| p.into_inner());
    pids.members.insert(name.to_owned(), pid);
    let path = data_dir.join(PIDS_FILE);
    let temporary = data_dir.join(format!("{PIDS_FILE}.tmp"));
    let written = serde_json::to_vec_pretty(&*pids)
        .map_err(std::io::Error::other)
        .and_then(|json| std::fs::write(&temporary, json))
        .and_then(|()| std::fs::rename(&temporary, &path));
    if let Err(error) = written {
        // A stale file would make `bookstore status` name dead processes:
        // better none (removing needs no space on a full disk).
        let _ = std::fs::remove_file(&temporary);
        let removed = std::fs::remove_file(&path);
        tracing::error!(%error, path = %path.display(), stale_removed = removed.is_ok(), "cannot record pids; `bookstore status` shows no pids until the next write succeeds");
    }
}

fn print_banner(cluster: &ClusterConfig, args: &UpArgs, books: usize) {
    println!(
        "BookStore is starting ({books} books from {}).",
        args.inventory.display()
    );
    println!("{:<14} {:<24} {:<24}", "member", "public", "peer");
    for member in &cluster.members {
        if args.no_cache && member.role == Role::Cache {
            continue;
        }
        let public = member.public_url().unwrap_or_else(|| "-".into());
        println!(
            "{:<14} {:<24} {:<24}",
            member.name(),
            public,
            member.peer_url()
        );
    }
    if let Ok(frontend) = cluster.first(Role::Frontend)
        && let Some(url) = frontend.public_url()
    {
        println!("Try: curl '{url}/search?topic=distributed+systems'");
    }
    println!(
        "Data, logs and the peer token are in {}. `bookstore status` shows every member. Ctrl-C stops the store.",
        args.store.data_dir.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "bookstore-up-{name}-{}-{:08x}",
                std::process::id(),
                fastrand::u32(..)
            ));
            std::fs::create_dir_all(&path).expect("scratch dir");
            Self(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_database_from_the_old_layout_moves_into_the_members_directory() {
        let scratch = Scratch::new("legacy");
        let data = &scratch.0;
        for suffix in ["", "-wal", "-shm"] {
            std::fs::write(data.join(format!("catalog-1.db{suffix}")), suffix).expect("write");
        }
        let member_dir = data.join("catalog-1");
        move_legacy_database(data, &member_dir, "catalog-1").expect("moved");
        for suffix in ["", "-wal", "-shm"] {
            let moved = std::fs::read_to_string(member_dir.join(format!("catalog-1.db{suffix}")));
            assert_eq!(moved.expect("moved file"), suffix);
            assert!(!data.join(format!("catalog-1.db{suffix}")).exists());
        }
    }

    #[test]
    fn a_member_that_already_has_its_directory_keeps_its_database() {
        let scratch = Scratch::new("current");
        let data = &scratch.0;
        let member_dir = data.join("order-0");
        std::fs::create_dir_all(&member_dir).expect("dir");
        std::fs::write(member_dir.join("order-0.db"), "current").expect("write");
        std::fs::write(data.join("order-0.db"), "legacy").expect("write");
        move_legacy_database(data, &member_dir, "order-0").expect("nothing to do");
        let kept = std::fs::read_to_string(member_dir.join("order-0.db")).expect("kept");
        assert_eq!(kept, "current");
        assert!(
            data.join("order-0.db").exists(),
            "the other file is left alone"
        );
    }

    #[test]
    fn only_replicated_members_get_their_own_directory() {
        let data = Path::new("/data");
        let member = |role, ordinal| Member {
            role,
            ordinal,
            peer: "127.0.0.1:1".into(),
            public: None,
        };
        assert_eq!(
            member_data_dir(data, &member(Role::Order, 1)),
            Path::new("/data/order-1")
        );
        assert_eq!(
            member_data_dir(data, &member(Role::Frontend, 0)),
            Path::new("/data")
        );
    }
}
