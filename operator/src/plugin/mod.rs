//! `kubectl bookstore`: the kubectl plugin for BookStores in a cluster (the
//! `kubectl-bookstore` binary; kubectl runs any `kubectl-NAME` on the PATH
//! as `kubectl NAME`).
//!
//! - `status NAME`: every member as it reports itself (through the API
//!   server's pod proxy) and the coordinator's view of each tier;
//! - `switchover NAME TIER ORDINAL`: asks for a planned switchover (the
//!   `mybookstore.dev/switchover` annotation) and waits for its outcome;
//! - `hibernate NAME` / `resume NAME`: `mybookstore.dev/hibernation`;
//! - `fence NAME MEMBER` / `unfence NAME MEMBER`:
//!   `mybookstore.dev/fenced-members`;
//! - `console NAME`: a live web page of the store on loopback ([`console`]),
//!   whose buttons delete a member's pod or switch a tier over.
//!
//! The plugin only reads through the API server and sets or clears
//! annotations (JSON merge patches); the operator does the rest. Every edit
//! is a pure function in [`edit`]; [`api`] is the thin layer of I/O.

pub mod api;
pub mod console;
pub mod edit;
pub mod status;

use std::net::SocketAddr;

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bookstore_core::cluster::Role;
use bookstore_replication::status_table::{Columns, render_table};
use clap::{Parser, Subcommand};
use kube::Client;

use crate::names::{FENCED_MEMBERS_ANNOTATION, HIBERNATION_ANNOTATION};
use crate::switchover;
use api::{Edited, StoreApi};
use edit::{MemberName, SwitchoverOutcome};

/// How long `switchover` waits for its outcome unless told otherwise.
pub const DEFAULT_SWITCHOVER_TIMEOUT_S: u64 = 60;
/// How often `switchover` reads the store while it waits.
const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Parser, PartialEq, Eq)]
#[command(
    name = "kubectl-bookstore",
    bin_name = "kubectl bookstore",
    version,
    about = "Day-2 operations on BookStores: status, switchover, hibernation, fencing, a live console."
)]
pub struct Cli {
    /// The store's namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// Every member as it reports itself (role, phase, epoch, applied index,
    /// lag, digest, in sync), then the coordinator's view of each tier.
    Status {
        /// The BookStore.
        name: String,
        /// One JSON object per line instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Move a tier's primary to an in-sync member by a clean handover, and
    /// hold it there; waits until it moved or was refused.
    Switchover {
        name: String,
        /// `catalog` or `order`.
        tier: String,
        /// The member to lead the tier (`1` for catalog-1).
        ordinal: u32,
        /// Seconds to wait for the outcome.
        #[arg(long, default_value_t = DEFAULT_SWITCHOVER_TIMEOUT_S)]
        timeout: u64,
    },
    /// Scale every tier to zero and keep the volumes.
    Hibernate { name: String },
    /// Bring a hibernated store back, with its data.
    Resume { name: String },
    /// Take a member out of the in-sync set; it serves nothing until
    /// unfenced.
    Fence {
        name: String,
        /// `catalog-1`, or its pod's name.
        member: String,
    },
    /// Let a fenced member rejoin (it resyncs first).
    Unfence { name: String, member: String },
    /// A live web page of the store (members, rates, topology changes) with
    /// buttons that delete a member's pod or switch a tier over.
    Console {
        name: String,
        /// Where the page is served. Keep it on loopback: its buttons
        /// delete pods with your credentials.
        #[arg(long, default_value = bookstore_console::DEFAULT_LISTEN)]
        listen: SocketAddr,
    },
}

impl Command {
    /// The BookStore every command names.
    pub fn store(&self) -> &str {
        match self {
            Command::Status { name, .. }
            | Command::Switchover { name, .. }
            | Command::Hibernate { name }
            | Command::Resume { name }
            | Command::Fence { name, .. }
            | Command::Unfence { name, .. }
            | Command::Console { name, .. } => name,
        }
    }
}

/// The binary's `main`.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(cli))
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG or ~/.kube/config)")?;
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let api = StoreApi::new(client, cli.command.store(), &namespace);
    match cli.command {
        Command::Status { json, .. } => {
            let lines = status::collect(&api, status::STATUS_TIMEOUT).await?;
            if json {
                for line in lines {
                    println!("{line}");
                }
            } else {
                print!("{}", render_table(&lines, Columns::Cluster));
            }
            Ok(())
        }
        Command::Switchover {
            tier,
            ordinal,
            timeout,
            ..
        } => switchover(&api, &tier, ordinal, Duration::from_secs(timeout)).await,
        Command::Hibernate { .. } => hibernation(&api, true).await,
        Command::Resume { .. } => hibernation(&api, false).await,
        Command::Fence { member, .. } => fencing(&api, &member, true).await,
        Command::Unfence { member, .. } => fencing(&api, &member, false).await,
        Command::Console { listen, .. } => console::run(api, listen).await,
    }
}

/// A switchover the plugin asked for, and the tier as it was before.
pub struct SwitchoverRequest {
    pub tier: Role,
    pub target: MemberName,
    pub pod: String,
    pub primary_before: Option<u32>,
    pub epoch_before: u64,
    /// Why it stays where it is asked to be, for the person who asked.
    pub hold: String,
}

impl SwitchoverRequest {
    /// Whether the target led the tier already when it was asked.
    pub fn already_there(&self) -> bool {
        self.primary_before == Some(self.target.ordinal)
    }
}

/// Asks for a switchover of `tier` to `ordinal` (the annotation) and
/// returns at once; the operator carries it out. `kubectl bookstore
/// switchover` waits for the outcome, the console's timeline shows it.
pub async fn request_switchover(
    api: &StoreApi,
    tier: Role,
    ordinal: u32,
) -> anyhow::Result<SwitchoverRequest> {
    let store = api.get().await?;
    let target = edit::check_member(&store, MemberName { tier, ordinal })?;
    let (primary_before, epoch_before) = tier_primary(store.status.as_ref(), tier);
    api.edit_annotation(switchover::ANNOTATION, |store| {
        let current = edit::annotation(store, switchover::ANNOTATION);
        let value = edit::switchover_value(current, tier, ordinal)?;
        Ok((current != Some(value.as_str())).then_some(Some(value)))
    })
    .await?;
    let hold = format!(
        "held there while {} asks (`kubectl annotate bs {} {}-` lets the rule choose again)",
        switchover::ANNOTATION,
        api.names.name,
        switchover::ANNOTATION
    );
    Ok(SwitchoverRequest {
        tier,
        target,
        pod: api.names.pod(tier, ordinal),
        primary_before,
        epoch_before,
        hold,
    })
}

async fn switchover(
    api: &StoreApi,
    tier: &str,
    ordinal: u32,
    timeout: Duration,
) -> anyhow::Result<()> {
    let tier = edit::parse_tier(tier)?;
    let request = request_switchover(api, tier, ordinal).await?;
    let already_there = request.already_there();
    let SwitchoverRequest {
        target,
        pod,
        primary_before,
        epoch_before,
        hold,
        ..
    } = request;
    if already_there {
        println!("{target} ({pod}) already leads {tier} at epoch {epoch_before}; {hold}");
        return Ok(());
    }
    let started = Instant::now();
    loop {
        let store = api.get().await?;
        let outcome = store
            .status
            .as_ref()
            .and_then(|s| edit::switchover_outcome(s, tier, ordinal, epoch_before));
        match outcome {
            Some(SwitchoverOutcome::Moved { epoch }) => {
                let from = primary_before
                    .map_or_else(|| "no primary".to_owned(), |o| api.names.pod(tier, o));
                println!(
                    "{tier} primary moved from {from} to {pod} at epoch {epoch} (in {:.1} s); {hold}",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            Some(SwitchoverOutcome::Refused(reason)) => bail!(
                "{reason}. The request stays in {} and is tried again at every reconcile; \
                 `kubectl annotate bs {} {}-` withdraws it",
                switchover::ANNOTATION,
                api.names.name,
                switchover::ANNOTATION
            ),
            None if started.elapsed() >= timeout => bail!(
                "{tier} primary did not move to {pod} within {} s, nor was it refused; the request \
                 stays in {} (`kubectl describe bs {}` shows the Switchover condition)",
                timeout.as_secs(),
                switchover::ANNOTATION,
                api.names.name
            ),
            None => tokio::time::sleep(POLL).await,
        }
    }
}

/// A tier's primary and epoch as the store's status shows them.
fn tier_primary(status: Option<&crate::crd::BookStoreStatus>, tier: Role) -> (Option<u32>, u64) {
    let tier = status.and_then(|s| match tier {
        Role::Catalog => s.catalog.as_ref(),
        _ => s.order.as_ref(),
    });
    tier.map_or((None, 0), |t| (t.primary, t.epoch))
}

async fn hibernation(api: &StoreApi, on: bool) -> anyhow::Result<()> {
    let value = edit::hibernation_value(on);
    let edited = api
        .edit_annotation(HIBERNATION_ANNOTATION, |store| {
            let hibernated = edit::is_hibernated(store);
            Ok((hibernated != on).then(|| Some(value.to_owned())))
        })
        .await?;
    let name = &api.names.name;
    match (edited, on) {
        (Edited::Unchanged, true) => {
            println!("{name} is hibernated already ({HIBERNATION_ANNOTATION}=on)")
        }
        (Edited::Unchanged, false) => println!("{name} is not hibernated"),
        (Edited::Set(_), true) => println!(
            "{name}: {HIBERNATION_ANNOTATION}=on; the operator scales every tier to zero and keeps \
             the volumes (`kubectl get bs {name} -w` to watch, `kubectl bookstore resume {name}` \
             brings it back)"
        ),
        (Edited::Set(_), false) => println!(
            "{name}: {HIBERNATION_ANNOTATION}=off; the operator brings every tier back with its \
             data (`kubectl get bs {name} -w` until Ready)"
        ),
    }
    Ok(())
}

async fn fencing(api: &StoreApi, member: &str, fence: bool) -> anyhow::Result<()> {
    let store = api.get().await?;
    let member = edit::parse_member(&store, member)?;
    let edited = api
        .edit_annotation(FENCED_MEMBERS_ANNOTATION, |store| {
            let current = edit::annotation(store, FENCED_MEMBERS_ANNOTATION);
            Ok(if fence {
                edit::with_fenced(current, member).map(Some)
            } else {
                edit::without_fenced(current, member)
            })
        })
        .await?;
    let name = &api.names.name;
    match (edited, fence) {
        (Edited::Unchanged, true) => println!("{member} of {name} is fenced already"),
        (Edited::Unchanged, false) => println!("{member} of {name} is not fenced"),
        (Edited::Set(value), _) => println!(
            "{name}: {FENCED_MEMBERS_ANNOTATION}={}; {member} {}",
            value.as_deref().unwrap_or("(none)"),
            if fence {
                "leaves the in-sync set and serves nothing until unfenced"
            } else {
                "may rejoin: it resyncs, then counts as in sync"
            }
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kubectl-bookstore").chain(args.iter().copied()))
    }

    #[test]
    fn every_command_names_its_store_and_the_namespace_goes_anywhere() {
        let cli = parse(&["switchover", "shop", "catalog", "1", "-n", "books"]).expect("parses");
        assert_eq!(cli.namespace.as_deref(), Some("books"));
        assert_eq!(
            cli.command,
            Command::Switchover {
                name: "shop".into(),
                tier: "catalog".into(),
                ordinal: 1,
                timeout: DEFAULT_SWITCHOVER_TIMEOUT_S,
            }
        );
        let cli = parse(&["--namespace", "books", "fence", "shop", "order-0"]).expect("parses");
        assert_eq!(cli.command.store(), "shop");
        assert_eq!(cli.namespace.as_deref(), Some("books"));
        for args in [
            &["status", "shop", "--json"][..],
            &["hibernate", "shop"],
            &["resume", "shop"],
            &["unfence", "shop", "catalog-1"],
            &["console", "shop", "--listen", "127.0.0.1:9999"],
        ] {
            assert_eq!(parse(args).expect("parses").command.store(), "shop");
        }
    }

    #[test]
    fn a_command_without_its_arguments_is_refused() {
        for args in [
            &["status"][..],
            &["switchover", "shop", "catalog"],
            &["switchover", "shop", "catalog", "one"],
            &["fence", "shop"],
            &["promote", "shop"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }
}
