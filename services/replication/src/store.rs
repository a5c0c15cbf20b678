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
//! with the applied log index, the epoch the data was last written in and
//! the digest of the rows (see [`StateDigest`]), all three written in the
//! transaction of the batch they describe.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use xxhash_rust::xxh3::xxh3_128;

use crate::topology::{Epoch, LogIndex};

/// The replicated state of one tier, applied command by command.
///
/// Commands must be deterministic: every member applies the same commands in
/// the same order to the same state and so reaches the same outputs. The
/// rows live in the database; readers read them through the machine's view,
/// which must not show a batch before [`StateMachine::publish`] (called once
/// the batch is durable on every in-sync member), so no reader ever sees a
/// write that could still be lost, though the primary has already committed
/// it to its own disk.
pub trait StateMachine: Send + 'static {
    type Command: Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static;
    type Output: Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static;
    type Snapshot: Serialize + DeserializeOwned + Send + 'static;
    /// What readers see.
    type View: Send + Sync + 'static;

    /// Creates the machine's tables if missing and binds its view to the
    /// database; a fresh database is seeded (for example with the initial
    /// inventory).
    fn open(&mut self, tx: &Transaction) -> rusqlite::Result<()>;
    /// Applies one command inside the batch's transaction, and accounts
    /// every row it adds, changes or removes in `digest`.
    fn apply(
        &mut self,
        tx: &Transaction,
        command: &Self::Command,
        digest: &mut StateDigest,
    ) -> rusqlite::Result<Self::Output>;
    /// The whole state, for a resync; `conn` is the writer's connection,
    /// between batches (so no batch is half applied).
    fn snapshot(&self, conn: &Connection) -> rusqlite::Result<Self::Snapshot>;
    /// Replaces the whole state with `snapshot`,
    /// adding every row it writes to `digest` (which starts empty).
    fn restore(
        &mut self,
        tx: &Transaction,
        snapshot: Self::Snapshot,
        digest: &mut StateDigest,
    ) -> rusqlite::Result<()>;
    /// The digest of the machine's rows as they are in the database, read
    /// row by row: what `apply` and `restore` keep up to date, computed from
    /// scratch (for a database that predates the digest, and to verify one).
    fn digest_rows(conn: &Connection) -> rusqlite::Result<StateDigest>
    where
        Self: Sized;
    /// Makes every batch applied so far visible to readers.
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

/// How often the checkpointer copies the WAL into the database file.
pub const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Copies the WAL into the database file on a thread of its own, so no
/// batch of the writer pays for it. SQLite would otherwise checkpoint inside
/// the commit that crosses 1000 pages of WAL, and that commit (and every
/// write waiting for it) would wait for the copy and a second fsync. Call
/// [`writer_without_checkpoints`] on the writer's connection.
///
/// PASSIVE checkpoints never block the writer or readers; once the whole
/// WAL is copied and no reader uses it, the writer starts it over from the
/// beginning, so it stays about as large as what the writer adds between
/// two checkpoints. `conn` is the thread's own connection to the database;
/// the thread lives as long as the process, like the member's writer.
pub fn spawn_checkpointer(conn: Connection) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("wal-checkpoint".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(CHECKPOINT_INTERVAL);
                if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                {
                    tracing::warn!(%error, "checkpointing the WAL failed; retrying");
                }
            }
        })
        .map(drop)
}

/// Turns off the checkpoints SQLite runs inside commits: the
/// [`spawn_checkpointer`] thread does them. The WAL file is cut back to
/// [`WAL_SIZE_LIMIT`] when it starts over, so a burst does not keep it large.
pub fn writer_without_checkpoints(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    Ok(())
}

/// The size (bytes) the WAL file is cut back to when it starts over.
pub const WAL_SIZE_LIMIT: i64 = 16 * 1024 * 1024;

/// Opens a read-only connection to the database at `path`, for reads off
/// the writer (WAL: its read transactions see one committed state and never
/// block the writer).
pub fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// Read-only connections to one database for readers on any thread (a
/// `Connection` serves one thread at a time): a read takes an idle one or
/// opens one, and gives it back. At most [`ReadPool::IDLE`] are kept, each
/// with SQLite's own bounded page cache, so readers' memory does not grow
/// with the data.
pub struct ReadPool {
    path: std::sync::OnceLock<std::path::PathBuf>,
    idle: std::sync::Mutex<Vec<Connection>>,
}

impl Default for ReadPool {
    fn default() -> Self {
        Self::new()
    }
}

impl ReadPool {
    /// Idle connections kept (about one per runtime thread that reads).
    const IDLE: usize = 4;

    /// A pool not yet bound to a database: reads fail until
    /// [`ReadPool::bind`] (a machine's view exists before its database is
    /// opened).
    pub fn new() -> Self {
        Self {
            path: std::sync::OnceLock::new(),
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Binds the pool to the database file of `conn`, once.
    pub fn bind(&self, conn: &Connection) -> rusqlite::Result<()> {
        let path = conn
            .path()
            .filter(|path| !path.is_empty())
            .ok_or_else(|| rusqlite::Error::InvalidPath("an in-memory database".into()))?;
        let _ = self.path.set(path.into());
        Ok(())
    }

    /// Runs `read` on a connection of the pool (each statement in it sees
    /// one committed state).
    pub fn read<R>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<R>,
    ) -> rusqlite::Result<R> {
        let taken = self.lock().pop();
        let conn = match taken {
            Some(conn) => conn,
            None => {
                let path = self
                    .path
                    .get()
                    .ok_or_else(|| rusqlite::Error::InvalidPath("no database opened yet".into()))?;
                open_reader(path)?
            }
        };
        let result = read(&conn);
        let mut idle = self.lock();
        if idle.len() < Self::IDLE {
            idle.push(conn);
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A read of a member's database that failed (its disk): a 500 with what
/// SQLite said.
pub fn read_failed(error: rusqlite::Error) -> bookstore_core::ApiError {
    bookstore_core::ApiError::Internal(format!("reading the database failed: {error}"))
}

/// Where the data stands: its applied index and the epoch it was written in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataPosition {
    pub applied: LogIndex,
    pub epoch: Epoch,
}

pub fn read_position(conn: &Connection) -> rusqlite::Result<DataPosition> {
    Ok(DataPosition {
        applied: read_meta(conn, "applied")?.map_or(0, |v| v as u64),
        epoch: read_meta(conn, "epoch")?.map_or(0, |v| v as u64),
    })
}

pub fn write_position(tx: &Transaction, position: DataPosition) -> rusqlite::Result<()> {
    write_meta(tx, "applied", position.applied as i64)?;
    write_meta(tx, "epoch", position.epoch as i64)
}

/// One value of `meta`, if it is there.
fn read_meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
        row.get(0)
    })
    .optional()
}

fn write_meta(tx: &Transaction, key: &str, value: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
        .execute(params![key, value])?;
    Ok(())
}

/// An order-independent digest of a set of rows, kept up to date per write:
/// the sum (mod 2^128) of a 128-bit hash (XXH3) of every row, each hashed
/// with the name of its table. Adding and removing rows in any order gives
/// the same sum, so a write costs the hashes of the rows it touches, never a
/// pass over the state, and `status` answers at once at any size. Two
/// members at the same index with the same digest hold the same rows (but
/// for a chance of 2^-128 per comparison; nothing here defends against rows
/// crafted to collide, which would need write access to both databases).
///
/// A row's hash is of its JSON, so the digest changes if a row's fields or
/// their encoding change between versions: compare members of one version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateDigest(u128);

impl StateDigest {
    /// Accounts a row that now exists.
    pub fn add(&mut self, table: &str, row: &impl Serialize) {
        self.0 = self.0.wrapping_add(row_hash(table, row));
    }

    /// Accounts a row that no longer exists (or before it changed).
    pub fn remove(&mut self, table: &str, row: &impl Serialize) {
        self.0 = self.0.wrapping_sub(row_hash(table, row));
    }

    /// The digest of every row `rows` yields, for [`StateMachine::digest_rows`].
    pub fn of_rows<R: Serialize>(
        table: &str,
        rows: impl IntoIterator<Item = rusqlite::Result<R>>,
    ) -> rusqlite::Result<Self> {
        let mut digest = Self::default();
        for row in rows {
            digest.add(table, &row?);
        }
        Ok(digest)
    }

    /// The digest of the union of two disjoint sets of rows (two tables).
    pub fn combine(self, other: Self) -> Self {
        Self(self.0.wrapping_add(other.0))
    }

    /// The two halves `meta` stores (its values are 64-bit integers).
    fn halves(self) -> (i64, i64) {
        ((self.0 >> 64) as u64 as i64, self.0 as u64 as i64)
    }

    fn from_halves(high: i64, low: i64) -> Self {
        Self(u128::from(high as u64) << 64 | u128::from(low as u64))
    }
}

/// As `bookstore status` shows it: 32 hex digits.
impl std::fmt::Display for StateDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

fn row_hash(table: &str, row: &impl Serialize) -> u128 {
    let mut bytes = Vec::with_capacity(128);
    bytes.extend_from_slice(table.as_bytes());
    // The separator keeps table "ab" + row "c" apart from "a" + "bc".
    bytes.push(0);
    // Serializing plain rows (numbers, strings, enums) into memory cannot
    // fail; were it ever to, the row would hash as its table name alone and
    // `status --verify` would show the difference, not hide it.
    let _ = serde_json::to_writer(&mut bytes, row);
    xxh3_128(&bytes)
}

/// The digest `meta` holds, or `None` for a database written before the
/// digest was kept.
pub fn read_digest(conn: &Connection) -> rusqlite::Result<Option<StateDigest>> {
    Ok(
        match (
            read_meta(conn, "digest_high")?,
            read_meta(conn, "digest_low")?,
        ) {
            (Some(high), Some(low)) => Some(StateDigest::from_halves(high, low)),
            _ => None,
        },
    )
}

pub fn write_digest(tx: &Transaction, digest: StateDigest) -> rusqlite::Result<()> {
    let (high, low) = digest.halves();
    write_meta(tx, "digest_high", high)?;
    write_meta(tx, "digest_low", low)
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

    fn digest_of(rows: &[(&str, u64)]) -> StateDigest {
        let mut digest = StateDigest::default();
        for (table, row) in rows {
            digest.add(table, row);
        }
        digest
    }

    #[test]
    fn the_digest_of_a_set_of_rows_does_not_depend_on_the_order_of_writes() {
        assert_eq!(
            digest_of(&[("books", 1), ("books", 2), ("orders", 3)]),
            digest_of(&[("orders", 3), ("books", 2), ("books", 1)])
        );
        let mut changed = digest_of(&[("books", 1), ("books", 2)]);
        changed.remove("books", &2);
        changed.add("books", &5);
        assert_eq!(changed, digest_of(&[("books", 5), ("books", 1)]));
        changed.remove("books", &5);
        changed.remove("books", &1);
        assert_eq!(changed, StateDigest::default());
    }

    #[test]
    fn digests_differ_for_different_rows_and_tables() {
        assert_ne!(digest_of(&[("books", 1)]), digest_of(&[("books", 2)]));
        assert_ne!(digest_of(&[("books", 1)]), digest_of(&[("orders", 1)]));
        // A row held twice is not the row held once (a sum, not an XOR).
        assert_ne!(
            digest_of(&[("books", 1), ("books", 1)]),
            StateDigest::default()
        );
        assert_eq!(digest_of(&[("books", 1)]).to_string().len(), 32);
    }

    #[test]
    fn the_checkpointer_copies_the_wal_into_the_database_file_off_the_writer() {
        let dir = std::env::temp_dir().join(format!("bookstore-wal-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("test.db");
        let mut conn = open(&path).expect("open");
        writer_without_checkpoints(&conn).expect("pragmas");
        conn.execute_batch("CREATE TABLE rows (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
            .expect("table");
        // 2,000 pages of rows: past SQLite's own checkpoint threshold (1,000
        // pages), which the writer must no longer act on.
        for id in 0..500 {
            let tx = conn.transaction().expect("tx");
            tx.execute(
                "INSERT INTO rows (id, data) VALUES (?1, zeroblob(16384))",
                [id],
            )
            .expect("insert");
            tx.commit().expect("commit");
        }
        let file_size = || std::fs::metadata(&path).map_or(0, |m| m.len());
        let written: u64 = 500 * 16384;
        assert!(
            file_size() < written,
            "the writer checkpointed by itself: {} bytes",
            file_size()
        );
        spawn_checkpointer(open(&path).expect("open")).expect("thread");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while file_size() < written && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(
            file_size() >= written,
            "the rows never reached the database file: {} bytes",
            file_size()
        );
        drop(conn);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_digest_round_trips_through_the_database() {
        let mut conn = open(Path::new(":memory:")).expect("open");
        assert_eq!(read_digest(&conn).expect("read"), None);
        let digest = digest_of(&[("books", 1), ("orders", 9)]);
        let tx = conn.transaction().expect("tx");
        write_digest(&tx, digest).expect("write");
        tx.commit().expect("commit");
        assert_eq!(read_digest(&conn).expect("read"), Some(digest));
    }
}
