//! Running one service: the process `bookstore up` starts per member, and
//! what each Kubernetes pod runs.

use std::path::PathBuf;

use anyhow::Context;
use bookstore_core::cluster::{ClusterConfig, Member, Ordinal, Role};
use bookstore_core::http::Listeners;
use bookstore_core::inventory;
use bookstore_core::shutdown::Shutdown;
use bookstore_replication::node::NodeConfig;
use clap::{Args, Subcommand};

use crate::settings::{DEFAULT_INVENTORY, StoreArgs};

/// `bookstore frontend|catalog|order|cache`: one service, with its settings.
#[derive(Debug, Clone, Subcommand)]
pub enum RoleCommand {
    /// Run the frontend service.
    Frontend(RoleArgs),
    /// Run a catalog replica.
    Catalog(RoleArgs),
    /// Run an order replica.
    Order(RoleArgs),
    /// Run the cache service.
    Cache(RoleArgs),
}

impl RoleCommand {
    pub fn role(&self) -> Role {
        match self {
            RoleCommand::Frontend(_) => Role::Frontend,
            RoleCommand::Catalog(_) => Role::Catalog,
            RoleCommand::Order(_) => Role::Order,
            RoleCommand::Cache(_) => Role::Cache,
        }
    }

    pub fn into_parts(self) -> (Role, RoleArgs) {
        let role = self.role();
        match self {
            RoleCommand::Frontend(args)
            | RoleCommand::Catalog(args)
            | RoleCommand::Order(args)
            | RoleCommand::Cache(args) => (role, args),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RoleArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Which member of the role this process is.
    #[arg(long, env = "BOOKSTORE_ORDINAL", default_value_t = 0)]
    pub ordinal: Ordinal,
    /// Take the ordinal from the trailing `-N` of the host name, as a
    /// StatefulSet pod (`mystore-catalog-1`) has it. Overrides --ordinal.
    #[arg(long, env = "BOOKSTORE_ORDINAL_FROM_HOSTNAME")]
    pub ordinal_from_hostname: bool,
    /// Listen on this host (e.g. 0.0.0.0 in a pod) at the cluster file's
    /// ports, instead of on the cluster file's address itself.
    #[arg(long, env = "BOOKSTORE_BIND_HOST")]
    pub bind_host: Option<String>,
    /// Advertise this host (e.g. the pod's IP) to the coordinator and the
    /// other members, at the cluster file's ports. In Kubernetes a new pod
    /// of a member gets a new IP that DNS caches may not know yet; its IP is
    /// reachable at once.
    #[arg(long, env = "BOOKSTORE_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,
    /// The coordinator's base URL (default: from the cluster file). The
    /// operator serves one coordinator per store under a path prefix.
    #[arg(long, env = "BOOKSTORE_COORDINATOR_URL")]
    pub coordinator_url: Option<String>,
    /// The initial inventory (catalog only; used when its database is new).
    #[arg(long, env = "BOOKSTORE_INVENTORY", default_value = DEFAULT_INVENTORY)]
    pub inventory: PathBuf,
    /// Run without the cache (frontend and catalog).
    #[arg(long)]
    pub no_cache: bool,
}

/// Runs `role` until SIGINT or SIGTERM.
pub async fn run(role: Role, mut args: RoleArgs) -> anyhow::Result<()> {
    if args.ordinal_from_hostname {
        args.ordinal = ordinal_from_hostname()?;
    }
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
    let (public_bind, peer_bind) = match &args.bind_host {
        Some(host) => (rebind(&public, host)?, rebind(&me.peer, host)?),
        None => (public.clone(), me.peer.clone()),
    };
    let listeners = Listeners::bind(&public_bind, &peer_bind)
        .await
        .with_context(|| format!("binding {public_bind} and {peer_bind}"))?;
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
                coordinator_url: coordinator_url(&cluster, &args)?,
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

fn coordinator_url(cluster: &ClusterConfig, args: &RoleArgs) -> anyhow::Result<String> {
    if let Some(url) = &args.coordinator_url {
        return Ok(url.trim_end_matches('/').to_owned());
    }
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
    let public = me.public.clone().unwrap_or_default();
    let (public_addr, peer_addr) = match &args.advertise_host {
        Some(host) => (rebind(&public, host)?, rebind(&me.peer, host)?),
        None => (public, me.peer.clone()),
    };
    Ok(NodeConfig {
        tier: me.role,
        ordinal: me.ordinal,
        data_dir: args.store.data_dir.clone(),
        public_addr,
        peer_addr,
        coordinator_url: coordinator_url(cluster, args)?,
        heartbeat_interval: args.store.heartbeat_interval(),
    })
}

/// The ordinal at the end of this host's name (`mystore-catalog-1` → 1).
fn ordinal_from_hostname() -> anyhow::Result<Ordinal> {
    let hostname = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .context("HOSTNAME is not set")?;
    parse_trailing_ordinal(hostname.trim())
}

fn parse_trailing_ordinal(name: &str) -> anyhow::Result<Ordinal> {
    name.rsplit_once('-')
        .and_then(|(_, ordinal)| ordinal.parse().ok())
        .with_context(|| format!("host name {name:?} does not end in -ORDINAL"))
}

/// `host:port` with the host replaced by `bind_host`.
fn rebind(address: &str, bind_host: &str) -> anyhow::Result<String> {
    let (_, port) = address
        .rsplit_once(':')
        .with_context(|| format!("address {address:?} has no port"))?;
    Ok(format!("{bind_host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bookstore_core::plan::{MemberCommand, OrdinalSource};
    use clap::Parser;
    use std::path::Path;

    /// `bookstore ROLE ...` as the binary parses it.
    #[derive(Debug, Parser)]
    struct Member {
        #[command(subcommand)]
        command: RoleCommand,
    }

    fn parse(plan: &MemberCommand) -> (Role, RoleArgs) {
        let args = std::iter::once("bookstore".to_owned()).chain(plan.args());
        Member::try_parse_from(args)
            .expect("the plan's command line parses")
            .command
            .into_parts()
    }

    #[test]
    fn the_plans_command_line_parses_into_the_members_settings() {
        let pod = MemberCommand {
            role: Role::Catalog,
            ordinal: OrdinalSource::FromHostname,
            cluster: "/etc/bookstore/cluster.conf".into(),
            inventory: "/etc/bookstore/inventory.txt".into(),
            token_file: "/var/run/bookstore/peer-token".into(),
            data_dir: "/data".into(),
            heartbeat_ms: 250,
            bind_host: Some("0.0.0.0".into()),
            advertise_host: Some("10.0.0.7".into()),
            coordinator_url: Some("http://operator:9100/stores/ns/shop".into()),
            no_cache: true,
        };
        let (role, args) = parse(&pod);
        assert_eq!(role, Role::Catalog);
        assert!(args.ordinal_from_hostname);
        assert_eq!(args.store.cluster, Path::new("/etc/bookstore/cluster.conf"));
        assert_eq!(args.inventory, Path::new("/etc/bookstore/inventory.txt"));
        assert_eq!(
            args.store.token_path(),
            Path::new("/var/run/bookstore/peer-token")
        );
        assert_eq!(args.store.data_dir, Path::new("/data"));
        assert_eq!(args.store.heartbeat_ms, 250);
        assert_eq!(args.bind_host.as_deref(), Some("0.0.0.0"));
        assert_eq!(args.advertise_host.as_deref(), Some("10.0.0.7"));
        assert_eq!(
            args.coordinator_url.as_deref(),
            Some("http://operator:9100/stores/ns/shop")
        );
        assert!(args.no_cache);

        let child = MemberCommand {
            role: Role::Order,
            ordinal: OrdinalSource::Given(1),
            bind_host: None,
            advertise_host: None,
            coordinator_url: None,
            no_cache: false,
            ..pod.clone()
        };
        let (role, args) = parse(&child);
        assert_eq!(role, Role::Order);
        assert_eq!(args.ordinal, 1);
        assert!(!args.ordinal_from_hostname);
        assert_eq!(args.bind_host, None);
        assert_eq!(args.coordinator_url, None);
        assert!(!args.no_cache);

        let frontend = MemberCommand {
            role: Role::Frontend,
            ordinal: OrdinalSource::First,
            ..child
        };
        let (role, args) = parse(&frontend);
        assert_eq!((role, args.ordinal), (Role::Frontend, 0));
    }

    #[test]
    fn ordinals_come_from_statefulset_pod_names() {
        assert_eq!(
            parse_trailing_ordinal("mystore-catalog-12").expect("ordinal"),
            12
        );
        assert!(parse_trailing_ordinal("catalog").is_err());
        assert!(parse_trailing_ordinal("catalog-x").is_err());
    }

    #[test]
    fn rebinding_keeps_the_port() {
        assert_eq!(
            rebind("store-catalog-0.store-catalog:9000", "0.0.0.0").expect("ok"),
            "0.0.0.0:9000"
        );
        assert!(rebind("nohost", "0.0.0.0").is_err());
    }
}
