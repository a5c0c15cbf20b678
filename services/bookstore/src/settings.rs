//! Settings every command shares: where the cluster file, the inventory,
//! the data and the peer token are. Defaults suit a checkout of the repo.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bookstore_core::cluster::ClusterConfig;
use bookstore_core::token::PeerToken;
use clap::Args;

/// The local cluster file shipped in the repository.
pub const DEFAULT_CLUSTER: &str = "config/local-cluster.conf";
/// The initial inventory shipped in the repository.
pub const DEFAULT_INVENTORY: &str = "config/inventory.txt";
/// Where `bookstore up` keeps databases, logs and the peer token.
pub const DEFAULT_DATA_DIR: &str = "bookstore-data";
/// The peer token's file name inside the data directory.
pub const TOKEN_FILE: &str = "peer-token";

#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// The cluster file: every member's public and peer address.
    #[arg(long, env = "BOOKSTORE_CLUSTER", default_value = DEFAULT_CLUSTER)]
    pub cluster: PathBuf,
    /// Where databases, logs and the generated peer token live.
    #[arg(long, env = "BOOKSTORE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// The peer token file (default: DATA_DIR/peer-token).
    #[arg(long, env = "BOOKSTORE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// How often replicas heartbeat to the coordinator, in milliseconds.
    #[arg(long, env = "BOOKSTORE_HEARTBEAT_MS", default_value_t = 1000)]
    pub heartbeat_ms: u64,
}

impl StoreArgs {
    pub fn cluster(&self) -> anyhow::Result<ClusterConfig> {
        ClusterConfig::load(&self.cluster).with_context(|| "loading the cluster file (--cluster)")
    }

    pub fn token_path(&self) -> PathBuf {
        self.token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(TOKEN_FILE))
    }

    pub fn load_token(&self) -> anyhow::Result<PeerToken> {
        let path = self.token_path();
        PeerToken::load(&path).with_context(|| {
            format!(
                "reading the peer token {} (bookstore up creates it)",
                path.display()
            )
        })
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.max(50))
    }
}
