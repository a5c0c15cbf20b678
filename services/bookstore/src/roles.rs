//! Running one service: the process `bookstore up` starts per member, and
//! what each Kubernetes pod runs.

use std::path::PathBuf;

use anyhow::Context;
use bookstore_core::cluster::{ClusterConfig, Member, Ordinal, Role};
use bookstore_core::http::Listeners;
use bookstore_core::inventory;
use bookstore_core::shutdown::Shutdown;
use bookstore_replication::node::NodeConfig;
use clap::Args;

use crate::settings::{DEFAULT_INVENTORY, StoreArgs};

#[derive(Debug, Clone, Args)]
pub struct RoleArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Which member of the role this process is.
    #[arg(long, env = "BOOKSTORE_ORDINAL", default_value_t = 0)]
    pub ordinal: Ordinal,
    /// The initial inventory (catalog only; used when its database is new).
    #[arg(long, env = "BOOKSTORE_INVENTORY", default_value = DEFAULT_INVENTORY)]
    pub inventory: PathBuf,
    /// Run without the cache (frontend and catalog).
    #[arg(long)]
    pub no_cache: bool,
}

/// Runs `role` until SIGINT or SIGTERM.
pub async fn run(role: Role, args: RoleArgs) -> anyhow::Result<()> {
    let cluster = args.store.cluster()?;
    let me = cluster
        .member(role, args.ordinal)
        .with_context(|| {
            format!(
                "the cluster file lists no {role} with ordinal {}",
                args.ordinal
            )
        })?
        .clone();
    let token = args.store.load_token()?;
    let public = me
        .public
        .clone()
        .context("a service needs a public address")?;
    let listeners = Listeners::bind(&public, &me.peer)
        .await
        .with_context(|| format!("binding {public} and {}", me.peer))?;
    tracing::info!(%role, ordinal = args.ordinal, %public, peer = %me.peer, pid = std::process::id(), "starting");
    let shutdown = Shutdown::on_signals();
    let cache = (!args.no_cache)
        .then(|| cluster.first(Role::Cache).ok())
        .flatten()
        .map(|c| (c.public.clone().unwrap_or_default(), c.peer.clone()));
    match role {
        Role::Frontend => {
            let settings = bookstore_frontend::FrontendSettings {
                cache,
                coordinator_url: coordinator_url(&cluster)?,
                refresh_interval: args.store.heartbeat_interval(),
            };
            bookstore_frontend::run(settings, listeners, token, shutdown).await?;
        }
        Role::Cache => {
            let settings = bookstore_cache::CacheSettings::default();
            bookstore_cache::run(settings, listeners, token, shutdown).await?;
        }
        Role::Catalog => {
            let books = inventory::load(&args.inventory)
                .with_context(|| "loading the inventory (--inventory)")?;
            let settings = bookstore_catalog::CatalogSettings {
                node: node_config(&cluster, &me, &args)?,
                inventory: books,
                cache_peer: cache.map(|(_, peer)| peer),
            };
            bookstore_catalog::run(settings, listeners, token, shutdown).await?;
        }
        Role::Order => {
            let settings = bookstore_order::OrderSettings {
                node: node_config(&cluster, &me, &args)?,
            };
            bookstore_order::run(settings, listeners, token, shutdown).await?;
        }
        Role::Coordinator => {
            anyhow::bail!("the coordinator runs inside `bookstore up` (or the operator)")
        }
    }
    tracing::info!(%role, ordinal = args.ordinal, "stopped");
    Ok(())
}

fn coordinator_url(cluster: &ClusterConfig) -> anyhow::Result<String> {
    let coordinator = cluster
        .first(Role::Coordinator)
        .context("the cluster file lists no coordinator")?;
    Ok(coordinator.peer_url())
}

fn node_config(
    cluster: &ClusterConfig,
    me: &Member,
    args: &RoleArgs,
) -> anyhow::Result<NodeConfig> {
    Ok(NodeConfig {
        tier: me.role,
        ordinal: me.ordinal,
        data_dir: args.store.data_dir.clone(),
        public_addr: me.public.clone().unwrap_or_default(),
        peer_addr: me.peer.clone(),
        coordinator_url: coordinator_url(cluster)?,
        heartbeat_interval: args.store.heartbeat_interval(),
    })
}
