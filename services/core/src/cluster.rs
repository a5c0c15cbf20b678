//! Where every member of a store listens: the cluster file.
//!
//! One line per member, `role,ordinal,public address,peer address`, like the
//! original's `config` file but with the internal peer port beside the public
//! one. The coordinator has only a peer address (`-` for the public one).
//! Locally `config/local-cluster.conf` lists loopback ports; in Kubernetes the
//! operator writes the same format with Service DNS names.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The ordinal of a member within its role (0, 1, ...), as in a StatefulSet.
pub type Ordinal = u32;

/// What a member does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Frontend,
    Cache,
    Catalog,
    Order,
    Coordinator,
}

impl Role {
    pub const SERVICES: [Role; 4] = [Role::Frontend, Role::Cache, Role::Catalog, Role::Order];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Frontend => "frontend",
            Role::Cache => "cache",
            Role::Catalog => "catalog",
            Role::Order => "order",
            Role::Coordinator => "coordinator",
        }
    }

    /// True for the tiers that keep replicated state.
    pub fn is_replicated(self) -> bool {
        matches!(self, Role::Catalog | Role::Order)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "frontend" => Ok(Role::Frontend),
            "cache" => Ok(Role::Cache),
            "catalog" => Ok(Role::Catalog),
            "order" => Ok(Role::Order),
            "coordinator" => Ok(Role::Coordinator),
            other => Err(format!("unknown role {other:?}")),
        }
    }
}

/// One member of the store and its two addresses (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub role: Role,
    pub ordinal: Ordinal,
    /// The public API address; `None` for the coordinator.
    pub public: Option<String>,
    /// The internal API address (replication, topology, fault injection).
    pub peer: String,
}

impl Member {
    pub fn public_url(&self) -> Option<String> {
        self.public.as_ref().map(|addr| format!("http://{addr}"))
    }

    pub fn peer_url(&self) -> String {
        format!("http://{}", self.peer)
    }

    /// A name for logs and metrics, e.g. `catalog-1`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.role, self.ordinal)
    }
}

/// Why a cluster file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read cluster file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cluster file line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("cluster file has no {0}")]
    Missing(String),
}

/// Every member of one store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub members: Vec<Member>,
}

impl ClusterConfig {
    pub fn load(path: &Path) -> Result<Self, ClusterError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses the file; every role but the coordinator must be present, and
    /// no (role, ordinal) pair may repeat.
    pub fn parse(text: &str) -> Result<Self, ClusterError> {
        let mut members: Vec<Member> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at_line = |reason: String| ClusterError::Line {
                line: index + 1,
                reason,
            };
            let member = parse_member(line).map_err(at_line)?;
            if members
                .iter()
                .any(|m| m.role == member.role && m.ordinal == member.ordinal)
            {
                return Err(at_line(format!("{} appears twice", member.name())));
            }
            members.push(member);
        }
        let config = Self { members };
        for role in Role::SERVICES {
            if config.of_role(role).next().is_none() {
                return Err(ClusterError::Missing(role.to_string()));
            }
        }
        Ok(config)
    }

    /// The members of `role`, lowest ordinal first.
    pub fn of_role(&self, role: Role) -> impl Iterator<Item = &Member> {
        let mut of_role: Vec<&Member> = self.members.iter().filter(|m| m.role == role).collect();
        of_role.sort_by_key(|m| m.ordinal);
        of_role.into_iter()
    }

    pub fn member(&self, role: Role, ordinal: Ordinal) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.role == role && m.ordinal == ordinal)
    }

    /// The first member of a role that runs once (frontend, cache, coordinator).
    pub fn first(&self, role: Role) -> Result<&Member, ClusterError> {
        self.of_role(role)
            .next()
            .ok_or_else(|| ClusterError::Missing(role.to_string()))
    }

    /// Renders the file format back (used by `bookstore up` and the tests).
    pub fn render(&self) -> String {
        let mut text = String::from("# role,ordinal,public address,peer address\n");
        for m in &self.members {
            let public = m.public.as_deref().unwrap_or("-");
            text.push_str(&format!("{},{},{},{}\n", m.role, m.ordinal, public, m.peer));
        }
        text
    }
}

fn parse_member(line: &str) -> Result<Member, String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let [role, ordinal, public, peer] = fields[..] else {
        return Err("expected role,ordinal,public address,peer address".to_owned());
    };
    let role: Role = role.parse()?;
    let ordinal = ordinal
        .parse()
        .map_err(|_| format!("ordinal {ordinal:?} is not a non-negative integer"))?;
    let public = match public {
        "-" => None,
        addr => Some(check_address(addr)?),
    };
    if public.is_none() && role != Role::Coordinator {
        return Err(format!("{role} needs a public address"));
    }
    Ok(Member {
        role,
        ordinal,
        public,
        peer: check_address(peer)?,
    })
}

fn check_address(addr: &str) -> Result<String, String> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(addr.to_owned())
        }
        _ => Err(format!("address {addr:?} is not host:port")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_local_cluster_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/local-cluster.conf");
        let config = ClusterConfig::load(&path).expect("config/local-cluster.conf is valid");
        let frontend = config.first(Role::Frontend).expect("frontend");
        assert_eq!(frontend.public.as_deref(), Some("127.0.0.1:8000"));
        assert_eq!(config.of_role(Role::Catalog).count(), 2);
        assert_eq!(config.of_role(Role::Order).count(), 2);
        assert_eq!(
            ClusterConfig::parse(&config.render()).expect("round trip"),
            config
        );
    }

    #[test]
    fn rejects_malformed_and_incomplete_files() {
        assert!(ClusterConfig::parse("frontend,0,127.0.0.1:8000").is_err());
        assert!(ClusterConfig::parse("frontend,x,127.0.0.1:8000,127.0.0.1:9000").is_err());
        assert!(ClusterConfig::parse("frontend,0,127.0.0.1,127.0.0.1:9000").is_err());
        assert!(ClusterConfig::parse("waiter,0,127.0.0.1:1,127.0.0.1:2").is_err());
        let missing = ClusterConfig::parse("frontend,0,127.0.0.1:8000,127.0.0.1:9000");
        assert!(matches!(missing, Err(ClusterError::Missing(_))));
    }
}
