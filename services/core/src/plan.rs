//! The store plan: how every member is started and how the coordinator is
//! wired, in one place.
//!
//! `bookstore up` (child processes on loopback), the operator (the pods'
//! container args and its coordinators) and the tests all build a member's
//! command line with [`MemberCommand::args`] and the coordinator's tiers and
//! topology subscribers from [`REPLICATED_TIERS`] and
//! [`TOPOLOGY_SUBSCRIBERS`], so a new flag or a new subscriber is added once.
//! The flags are those of `bookstore frontend|catalog|order|cache`
//! (`services/bookstore/src/roles.rs`); a test there parses what
//! [`MemberCommand::args`] builds with that very parser.

use crate::cluster::{ClusterConfig, Ordinal, Role};

/// The tiers that keep replicated state, each with a coordinator tier of
/// its own (epoch, primary, in-sync set), in the order they are reported.
pub const REPLICATED_TIERS: [Role; 2] = [Role::Catalog, Role::Order];

/// The roles whose members get every topology of every tier pushed to them
/// (besides each tier's own members): the frontend sends writes to the
/// primaries and the order primary calls the catalog primary.
pub const TOPOLOGY_SUBSCRIBERS: [Role; 2] = [Role::Frontend, Role::Order];

/// The coordinator's tiers, each with its member count.
pub fn coordinator_tiers(members: impl Fn(Role) -> usize) -> [(Role, usize); 2] {
    REPLICATED_TIERS.map(|role| (role, members(role)))
}

/// The coordinator's tiers of a cluster file: as many members as it lists.
pub fn cluster_tiers(cluster: &ClusterConfig) -> [(Role, usize); 2] {
    coordinator_tiers(|role| cluster.of_role(role).count())
}

/// The peer addresses of a cluster file's topology subscribers.
pub fn cluster_subscribers(cluster: &ClusterConfig) -> Vec<String> {
    TOPOLOGY_SUBSCRIBERS
        .into_iter()
        .flat_map(|role| cluster.of_role(role).map(|m| m.peer.clone()))
        .collect()
}

/// Where a member takes its ordinal from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrdinalSource {
    /// The role's first member (ordinal 0, the flag's default): the
    /// stateless tiers, whose pods are interchangeable.
    First,
    /// This ordinal (`--ordinal N`), as `bookstore up` starts each child.
    Given(Ordinal),
    /// The trailing `-N` of the host name (`--ordinal-from-hostname`), as a
    /// StatefulSet pod has it.
    FromHostname,
}

/// One member's command line: `bookstore ROLE --cluster ... `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberCommand {
    pub role: Role,
    pub ordinal: OrdinalSource,
    /// The cluster file.
    pub cluster: String,
    /// The initial inventory (used by a catalog whose database is new).
    pub inventory: String,
    pub token_file: String,
    pub data_dir: String,
    pub heartbeat_ms: u64,
    /// Listen on this host at the cluster file's ports (0.0.0.0 in a pod).
    pub bind_host: Option<String>,
    /// Advertise this host to the coordinator and the peers (the pod IP).
    pub advertise_host: Option<String>,
    /// The coordinator's base URL, when it is not the cluster file's.
    pub coordinator_url: Option<String>,
    pub no_cache: bool,
}

impl MemberCommand {
    /// The arguments after the program name, the role first.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![self.role.to_string()];
        if let OrdinalSource::Given(ordinal) = self.ordinal {
            args.extend(["--ordinal".to_owned(), ordinal.to_string()]);
        }
        let flag = |args: &mut Vec<String>, name: &str, value: &str| {
            args.extend([name.to_owned(), value.to_owned()]);
        };
        flag(&mut args, "--cluster", &self.cluster);
        flag(&mut args, "--inventory", &self.inventory);
        flag(&mut args, "--token-file", &self.token_file);
        flag(&mut args, "--data-dir", &self.data_dir);
        if let Some(host) = &self.bind_host {
            flag(&mut args, "--bind-host", host);
        }
        flag(&mut args, "--heartbeat-ms", &self.heartbeat_ms.to_string());
        if let Some(url) = &self.coordinator_url {
            flag(&mut args, "--coordinator-url", url);
        }
        if self.ordinal == OrdinalSource::FromHostname {
            args.push("--ordinal-from-hostname".to_owned());
        }
        if let Some(host) = &self.advertise_host {
            flag(&mut args, "--advertise-host", host);
        }
        if self.no_cache {
            args.push("--no-cache".to_owned());
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(role: Role, ordinal: OrdinalSource) -> MemberCommand {
        MemberCommand {
            role,
            ordinal,
            cluster: "c.conf".into(),
            inventory: "i.txt".into(),
            token_file: "t".into(),
            data_dir: "d".into(),
            heartbeat_ms: 250,
            bind_host: None,
            advertise_host: None,
            coordinator_url: None,
            no_cache: false,
        }
    }

    #[test]
    fn only_a_given_ordinal_is_a_flag_with_a_value() {
        let given = command(Role::Order, OrdinalSource::Given(3)).args();
        assert_eq!(given[..3], ["order", "--ordinal", "3"]);
        let first = command(Role::Frontend, OrdinalSource::First).args();
        assert!(!first.iter().any(|a| a.starts_with("--ordinal")));
        let hostname = command(Role::Catalog, OrdinalSource::FromHostname).args();
        assert!(hostname.contains(&"--ordinal-from-hostname".to_owned()));
        assert!(!hostname.contains(&"--ordinal".to_owned()));
    }

    #[test]
    fn the_subscribers_are_the_frontends_and_the_order_members() {
        let cluster = ClusterConfig::parse(
            "frontend,0,127.0.0.1:1,127.0.0.1:2\n\
             cache,0,127.0.0.1:10,127.0.0.1:11\n\
             catalog,0,127.0.0.1:3,127.0.0.1:4\n\
             order,0,127.0.0.1:5,127.0.0.1:6\n\
             order,1,127.0.0.1:7,127.0.0.1:8\n\
             coordinator,0,-,127.0.0.1:9\n",
        )
        .expect("cluster");
        assert_eq!(
            cluster_subscribers(&cluster),
            ["127.0.0.1:2", "127.0.0.1:6", "127.0.0.1:8"]
        );
        assert_eq!(
            cluster_tiers(&cluster),
            [(Role::Catalog, 1), (Role::Order, 2)]
        );
    }
}
