//! What a coordinator must never forget, and where it keeps it.
//!
//! A coordinator that forgets its tiers' epochs would publish epochs its
//! members have already seen (they would refuse them), and one that forgets
//! the in-sync set could elect a member that missed acknowledged writes. So
//! per tier it keeps a [`TierRecord`] (epoch, primary, in-sync set with each
//! member's incarnation), and the coordinator's driver saves the records
//! before it publishes any topology that depends on them: a restarted
//! coordinator continues from the last save, never from less.
//!
//! Two stores implement [`DurableStore`]: [`FileStore`] here (`bookstore up`
//! keeps a file in its data directory: write, fsync, rename, fsync the
//! directory) and the operator's ConfigMap, whose `resourceVersion` makes two
//! operator leaders unable to both advance the same state.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use bookstore_core::cluster::{Ordinal, Role};
use serde::{Deserialize, Serialize};

use crate::topology::Epoch;

/// The durable facts of one tier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierRecord {
    /// The highest epoch the coordinator may have published.
    pub epoch: Epoch,
    pub primary: Option<Ordinal>,
    /// The in-sync members, each with the incarnation it was in sync as: a
    /// member heard from under another incarnation has restarted since.
    pub in_sync: BTreeMap<Ordinal, u64>,
}

/// The durable facts of every tier of a store; a tier missing here has never
/// been bootstrapped (or its facts were lost).
pub type DurableState = BTreeMap<Role, TierRecord>;

/// Why the durable state could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    /// Another coordinator saved the state since this one last read it.
    #[error("another coordinator changed the durable state: {0}")]
    Conflict(String),
    #[error("the durable state at {location} is unreadable: {message}")]
    Corrupt { location: String, message: String },
    #[error("cannot {action} the durable state at {location}: {message}")]
    Io {
        action: &'static str,
        location: String,
        message: String,
    },
}

/// A boxed future of a store operation.
pub type DurableFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DurableError>> + Send + 'a>>;

/// Where a coordinator keeps its durable state.
pub trait DurableStore: Send + Sync + 'static {
    /// The last saved state (empty if none was ever saved).
    fn load(&self) -> DurableFuture<'_, DurableState>;
    /// Saves `state` durably; it must be readable by [`DurableStore::load`]
    /// from any later process before this returns.
    fn save(&self, state: &DurableState) -> DurableFuture<'_, ()>;
    /// Where the state lives, for logs and `status`.
    fn location(&self) -> String;
}

/// The file `bookstore up` keeps its coordinator's state in, in its data
/// directory.
pub const STATE_FILE: &str = "coordinator.json";

/// The state as one JSON file, replaced atomically.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            path: dir.join(STATE_FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl DurableStore for FileStore {
    fn load(&self) -> DurableFuture<'_, DurableState> {
        let path = self.path.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || read_state(&path))
                .await
                .map_err(|error| io_error("read", &self.path, error))?
        })
    }

    fn save(&self, state: &DurableState) -> DurableFuture<'_, ()> {
        let path = self.path.clone();
        let json = serde_json::to_vec_pretty(state);
        Box::pin(async move {
            let json = json.map_err(|error| io_error("encode", &self.path, error))?;
            tokio::task::spawn_blocking(move || write_atomically(&path, &json))
                .await
                .map_err(|error| io_error("write", &self.path, error))?
        })
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}

fn read_state(path: &Path) -> Result<DurableState, DurableError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| DurableError::Corrupt {
            location: path.display().to_string(),
            message: error.to_string(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(DurableState::new()),
        Err(error) => Err(io_error("read", path, error)),
    }
}

/// Write a temporary file, fsync it, rename it over the old one, fsync the
/// directory: after a crash at any point the file holds the old state or the
/// new one, never a torn mix, and once this returns the new one survives.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DurableError> {
    let temporary = path.with_extension("json.tmp");
    let written = std::fs::File::create(&temporary)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, path))
        .and_then(|()| match path.parent() {
            Some(dir) => std::fs::File::open(dir)?.sync_all(),
            None => Ok(()),
        });
    written.map_err(|error| {
        // A temporary file left on a full disk would hold space for nothing.
        let _ = std::fs::remove_file(&temporary);
        io_error("write", path, error)
    })
}

fn io_error(action: &'static str, path: &Path, error: impl std::fmt::Display) -> DurableError {
    DurableError::Io {
        action,
        location: path.display().to_string(),
        message: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bookstore-durable-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[tokio::test]
    async fn a_file_store_reads_back_what_it_saved() {
        let dir = temp_dir();
        let store = FileStore::in_dir(&dir);
        assert_eq!(store.load().await.expect("load"), DurableState::new());
        let state = DurableState::from([(
            Role::Catalog,
            TierRecord {
                epoch: 41,
                primary: Some(1),
                in_sync: BTreeMap::from([(1, 77)]),
            },
        )]);
        store.save(&state).await.expect("save");
        let reopened = FileStore::in_dir(&dir);
        assert_eq!(reopened.load().await.expect("load"), state);
        assert!(!dir.join("coordinator.json.tmp").exists());
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[tokio::test]
    async fn a_corrupt_state_file_is_an_error_not_an_empty_state() {
        let dir = temp_dir();
        std::fs::write(dir.join(STATE_FILE), b"{ torn").expect("write");
        let error = FileStore::in_dir(&dir).load().await.expect_err("corrupt");
        assert!(matches!(error, DurableError::Corrupt { .. }), "{error}");
        std::fs::remove_dir_all(dir).expect("cleanup");
    }
}
