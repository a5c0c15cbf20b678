//! The embedded database of a replicated member: SQLite in WAL mode.
//!
//! Why SQLite (through rusqlite) rather than redb: operators of the store can
//! open a member's database with the `sqlite3` shell to see what it holds,
//! which is the point of a project people learn from; WAL mode gives readers
//! that never block the writer; and `synchronous=FULL` makes every commit an
//! fsync of the WAL, so an acknowledged write survives `kill -9` and power
//! loss. Group commit (many writes, one transaction) keeps that affordable.
//!
//! Besides the state machine's own tables, every database has a `meta` table
//! with the applied log index and the epoch the data was last written in.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::topology::{Epoch, LogIndex};

/// The replicated state of one tier, applied command by command.
///
/// Commands must be deterministic: every member applies the same commands in
/// the same order to the same state and so reaches the same outputs. The
/// machine keeps a working copy that the writer mutates and a published view
/// that readers see; [`StateMachine::publish`] copies changes into the view
/// once a batch is durable on every in-sync member, so no reader ever sees a
/// write that could still be lost.
pub trait StateMachine: Send + 'static {
    type Command: Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static;
    type Output: Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static;
    type Snapshot: Serialize + DeserializeOwned + Send + 'static;
    /// What readers see.
    type View: Send + Sync + 'static;

    /// Creates the machine's tables if missing, and loads the working state;
    /// a fresh database is seeded (for example with the initial inventory).
    fn open(&mut self, tx: &Transaction) -> rusqlite::Result<()>;
    /// Applies one command inside the batch's transaction.
    fn apply(
        &mut self,
        tx: &Transaction,
        command: &Self::Command,
    ) -> rusqlite::Result<Self::Output>;
    /// The whole working state, for a resync.
    fn snapshot(&self) -> Self::Snapshot;
    /// Replaces the whole state (tables and working copy) with `snapshot`.
    fn restore(&mut self, tx: &Transaction, snapshot: Self::Snapshot) -> rusqlite::Result<()>;
    /// Makes the working state visible to readers.
    fn publish(&mut self);
    /// The shared read view.
    fn view(&self) -> std::sync::Arc<Self::View>;
}

/// Opens (or creates) the database at `path` for durable, concurrent use.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    )?;
    Ok(conn)
}

/// Where the data stands: its applied index and the epoch it was written in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataPosition {
    pub applied: LogIndex,
    pub epoch: Epoch,
}

pub fn read_position(conn: &Connection) -> rusqlite::Result<DataPosition> {
    let get = |key: &str| -> rusqlite::Result<u64> {
        let value: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()?;
        Ok(value.map_or(0, |v| v as u64))
    };
    Ok(DataPosition {
        applied: get("applied")?,
        epoch: get("epoch")?,
    })
}

pub fn write_position(tx: &Transaction, position: DataPosition) -> rusqlite::Result<()> {
    let mut statement =
        tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
    statement.execute(params!["applied", position.applied as i64])?;
    statement.execute(params!["epoch", position.epoch as i64])?;
    Ok(())
}

/// A stable 64-bit digest (FNV-1a) of any serializable state, so members can
/// be compared by `bookstore status` without shipping their state around.
pub fn digest<T: Serialize>(state: &T) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = serde_json::to_vec(state).unwrap_or_default();
    let hash = bytes.iter().fold(OFFSET, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    });
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_round_trips_through_the_database() {
        let dir = std::env::temp_dir().join(format!("bookstore-store-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut conn = open(&dir.join("test.db")).expect("open");
        assert_eq!(read_position(&conn).expect("read"), DataPosition::default());
        let tx = conn.transaction().expect("tx");
        let position = DataPosition {
            applied: 42,
            epoch: 7,
        };
        write_position(&tx, position).expect("write");
        tx.commit().expect("commit");
        drop(conn);
        let conn = open(&dir.join("test.db")).expect("reopen");
        assert_eq!(read_position(&conn).expect("read"), position);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .expect("pragma");
        assert_eq!(mode, "wal");
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn digests_differ_for_different_states() {
        assert_eq!(digest(&vec![1, 2]), digest(&vec![1, 2]));
        assert_ne!(digest(&vec![1, 2]), digest(&vec![2, 1]));
    }
}
