//! `bookstore fault ACTION MEMBER`: break a member of a local store (one
//! that `bookstore up` runs) on purpose, the way the chaos tests do.
//!
//! - `kill`: SIGKILL, a crash; `up` restarts the member after a short backoff.
//! - `pause` / `resume`: SIGSTOP / SIGCONT, a process that stops for a while
//!   (a long GC pause, a frozen VM) and then carries on as if nothing happened.
//! - `shutdown` / `recover`: the original's fault injection on the member's
//!   peer port: it plays dead (answers nothing, heartbeats nothing) until
//!   recovered, then resyncs.
//!
//! Pids come from `DATA_DIR/up.json`, the peer token from the data dir, so
//! no step of the README's "break it" walkthrough needs to find either.

use anyhow::Context;
use bookstore_core::cluster::{ClusterConfig, Member};
use bookstore_core::metrics::Metrics;
use bookstore_core::peer::PeerClient;
use bookstore_replication::node::messages::Done;
use clap::{Args, ValueEnum};

use crate::settings::StoreArgs;
use crate::up::{PIDS_FILE, Pids};

#[derive(Debug, Clone, Args)]
pub struct FaultArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// What to do to the member.
    #[arg(value_enum)]
    pub action: FaultAction,
    /// The member, as `bookstore status` names it (`catalog-0`).
    pub member: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FaultAction {
    /// SIGKILL: a crash; `up` restarts it.
    Kill,
    /// SIGSTOP: the process stops until `resume`.
    Pause,
    /// SIGCONT: a paused process carries on.
    Resume,
    /// The member plays dead until `recover` (replicated members only).
    Shutdown,
    /// A shut-down member comes back and resyncs.
    Recover,
}

impl FaultAction {
    /// The signal this action sends, if it is one.
    fn signal(self) -> Option<(libc::c_int, &'static str)> {
        match self {
            Self::Kill => Some((libc::SIGKILL, "SIGKILL")),
            Self::Pause => Some((libc::SIGSTOP, "SIGSTOP")),
            Self::Resume => Some((libc::SIGCONT, "SIGCONT")),
            Self::Shutdown | Self::Recover => None,
        }
    }

    /// What happens next, for the person who asked.
    fn consequence(self) -> &'static str {
        match self {
            Self::Kill => "`bookstore up` restarts it after a short backoff",
            Self::Pause => "it is frozen until `bookstore fault resume`",
            Self::Resume => "it carries on from where it stopped",
            Self::Shutdown => "it plays dead until `bookstore fault recover`",
            Self::Recover => "it resyncs from the primary and rejoins",
        }
    }
}

pub async fn run(args: FaultArgs) -> anyhow::Result<()> {
    println!("{}", apply(&args.store, args.action, &args.member).await?);
    Ok(())
}

/// Does `action` to `member` of the local store; says what was done and
/// what happens next. The console's buttons call this too.
pub async fn apply(store: &StoreArgs, action: FaultAction, member: &str) -> anyhow::Result<String> {
    let cluster = store.cluster()?;
    let found = find_member(&cluster, member)?;
    let done = match action.signal() {
        Some((signal, name)) => {
            let pid = member_pid(store, member)?;
            send_signal(pid, signal)
                .with_context(|| format!("sending {name} to {member} (pid {pid})"))?;
            format!("{member} (pid {pid}): {name} sent")
        }
        None => {
            let path = match action {
                FaultAction::Shutdown => "/peer/shutdown",
                _ => "/peer/recover",
            };
            fault_injection(store, found, path).await?;
            format!("{member}: POST {path} done")
        }
    };
    Ok(format!("{done}; {}", action.consequence()))
}

/// The member named `name` (`catalog-0`) in the cluster file.
fn find_member<'a>(cluster: &'a ClusterConfig, name: &str) -> anyhow::Result<&'a Member> {
    cluster
        .members
        .iter()
        .find(|m| m.name() == name)
        .with_context(|| {
            let names: Vec<String> = cluster.members.iter().map(Member::name).collect();
            format!("no member {name:?} in the cluster file; its members are {names:?}")
        })
}

/// The member's pid as `bookstore up` recorded it.
fn member_pid(store: &StoreArgs, name: &str) -> anyhow::Result<u32> {
    let path = store.data_dir.join(PIDS_FILE);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "reading {} (is `bookstore up` running with --data-dir {}?)",
            path.display(),
            store.data_dir.display()
        )
    })?;
    let pids: Pids = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not what `bookstore up` writes", path.display()))?;
    pids.members
        .get(name)
        .copied()
        .filter(|&pid| pid != 0)
        .with_context(|| format!("{} records no pid for {name}", path.display()))
}

fn send_signal(pid: u32, signal: libc::c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: kill(2) with a pid and a valid signal number has no memory
    // effects in this process; an error is reported through errno.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// POSTs the original's fault injection to a replicated member's peer port.
async fn fault_injection(store: &StoreArgs, member: &Member, path: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        member.role.is_replicated(),
        "{} has no fault injection: only catalog and order members play dead (use kill or pause)",
        member.name()
    );
    let client = PeerClient::new(store.load_token()?, Metrics::new("fault"));
    let url = format!("{}{path}", member.peer_url());
    client
        .post::<_, Done>("member", "fault", &url, &())
        .await
        .with_context(|| format!("POST {url}"))?;
    Ok(())
}
