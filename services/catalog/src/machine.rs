//! The catalog's replicated state: books with their stock and cost, and the
//! outcome of every stock change by request id (so a retried buy takes stock
//! once). Commands are atomic and deterministic.
//!
//! Everything lives in SQLite only; readers query it through a pool of read
//! connections, so a member's memory depends on neither the size of the
//! catalog nor the number of buys. One thing needs care: the primary commits
//! a batch to its disk before its replicas have it, and readers must not see
//! it until it is durable on every in-sync member (it could still be lost).
//! So before a batch changes a book, the machine puts the book's current
//! row, as readers may see it, in the view's *pending* map; `publish` empties
//! it. A reader reads the row from disk first and then looks in the pending
//! map, which wins: if its disk read saw the batch, the batch's before-image
//! was already pending (it is added before the commit), so it never returns
//! a row of an unpublished batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use bookstore_core::api::{BookDetails, ItemNumber, SearchEntry};
use bookstore_core::inventory::Book;
use bookstore_replication::store::{ReadPool, StateDigest, StateMachine};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use serde::{Deserialize, Serialize};

/// A write to the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CatalogCommand {
    /// Adds `delta` to the stock if the result stays at or above zero. A
    /// request id that was already applied returns its first outcome.
    AdjustStock {
        item_number: ItemNumber,
        delta: i64,
        request_id: String,
    },
    /// Sets the cost of a book.
    SetCost { item_number: ItemNumber, cost: u64 },
}

impl CatalogCommand {
    pub fn item_number(&self) -> ItemNumber {
        match self {
            Self::AdjustStock { item_number, .. } | Self::SetCost { item_number, .. } => {
                *item_number
            }
        }
    }
}

/// The outcome of a catalog write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CatalogOutput {
    /// The stock changed; `stock` is the new stock.
    Adjusted { item_number: ItemNumber, stock: u64 },
    /// The change would take the stock below zero; nothing changed.
    Insufficient { item_number: ItemNumber, stock: u64 },
    /// The cost changed.
    CostSet { item_number: ItemNumber, cost: u64 },
    /// No such book.
    UnknownItem { item_number: ItemNumber },
}

/// What readers see: the books on disk, but for the books of a batch not
/// yet published, which they see as they were before it.
#[derive(Default)]
pub struct CatalogView {
    reads: ReadPool,
    pending: Mutex<HashMap<ItemNumber, BookDetails>>,
}

impl CatalogView {
    pub fn lookup(&self, item_number: ItemNumber) -> rusqlite::Result<Option<BookDetails>> {
        let on_disk = self.reads.read(|conn| select_book(conn, item_number))?;
        // After the disk read, never before it (see the module comment).
        if let Some(before) = self.pending().get(&item_number) {
            return Ok(Some(before.clone()));
        }
        Ok(on_disk)
    }

    /// The books of `topic` (exact match, as in the original), by item
    /// number. Titles and topics never change, so no batch hides them.
    pub fn search(&self, topic: &str) -> rusqlite::Result<Vec<SearchEntry>> {
        self.reads.read(|conn| {
            conn.prepare_cached(
                "SELECT item_number, title FROM books WHERE topic = ?1 ORDER BY item_number",
            )?
            .query_map([topic], |row| {
                Ok(SearchEntry {
                    item_number: row.get::<_, i64>(0)? as ItemNumber,
                    title: row.get(1)?,
                })
            })?
            .collect()
        })
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<ItemNumber, BookDetails>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The columns of a book, in the order [`book_of_row`] reads them; a macro
/// so the statements below are literals (no string built per lookup).
macro_rules! book_columns {
    () => {
        "item_number, title, topic, cost, stock"
    };
}

fn book_of_row(row: &Row) -> rusqlite::Result<BookDetails> {
    Ok(BookDetails {
        item_number: row.get::<_, i64>(0)? as ItemNumber,
        title: row.get(1)?,
        topic: row.get(2)?,
        cost: row.get::<_, i64>(3)? as u64,
        stock: row.get::<_, i64>(4)? as u64,
    })
}

fn select_book(
    conn: &Connection,
    item_number: ItemNumber,
) -> rusqlite::Result<Option<BookDetails>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        book_columns!(),
        " FROM books WHERE item_number = ?1"
    ))?
    .query_row([item_number as i64], book_of_row)
    .optional()
}

/// The whole catalog, for a resync.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogSnapshot {
    pub books: Vec<BookDetails>,
    pub requests: BTreeMap<String, CatalogOutput>,
}

/// The tables the digest accounts (see [`StateDigest`]).
const BOOKS: &str = "books";
const REQUESTS: &str = "requests";

/// A book as its row, for the digest: every column.
fn book_row(book: &BookDetails) -> (ItemNumber, &str, &str, u64, u64) {
    (
        book.item_number,
        &book.title,
        &book.topic,
        book.cost,
        book.stock,
    )
}

/// Every request outcome on disk, by request id.
fn read_requests(conn: &Connection) -> rusqlite::Result<Vec<(String, CatalogOutput)>> {
    let mut requests =
        conn.prepare("SELECT request_id, output FROM requests ORDER BY request_id")?;
    requests.query_map([], request_of_row)?.collect()
}

/// A `requests` row read as `request_id, output`.
fn request_of_row(row: &Row) -> rusqlite::Result<(String, CatalogOutput)> {
    Ok((row.get(0)?, output_of_json(row, 1)?))
}

/// An outcome as `requests` stores it: JSON text.
fn output_of_json(row: &Row, column: usize) -> rusqlite::Result<CatalogOutput> {
    let json: String = row.get(column)?;
    serde_json::from_str(&json).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Text,
            Box::new(error),
        )
    })
}

/// The catalog state machine.
pub struct CatalogMachine {
    /// The books a new database is seeded with; let go once it is open.
    inventory: Vec<Book>,
    view: Arc<CatalogView>,
}

impl CatalogMachine {
    /// A catalog seeded with `inventory` when its database is new.
    pub fn new(inventory: Vec<Book>) -> Self {
        Self {
            inventory,
            view: Arc::default(),
        }
    }

    fn save_book(tx: &Transaction, book: &BookDetails) -> rusqlite::Result<()> {
        tx.prepare_cached(concat!(
            "INSERT OR REPLACE INTO books (",
            book_columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5)"
        ))?
        .execute(params![
            book.item_number as i64,
            book.title,
            book.topic,
            book.cost as i64,
            book.stock as i64
        ])?;
        Ok(())
    }

    /// A command changes only stock and cost: update those two in place
    /// (cheaper than replacing the whole row and its text).
    fn save_stock_and_cost(tx: &Transaction, book: &BookDetails) -> rusqlite::Result<()> {
        tx.prepare_cached("UPDATE books SET stock = ?2, cost = ?3 WHERE item_number = ?1")?
            .execute(params![
                book.item_number as i64,
                book.stock as i64,
                book.cost as i64
            ])?;
        Ok(())
    }

    fn save_request(
        tx: &Transaction,
        request_id: &str,
        output: &CatalogOutput,
    ) -> rusqlite::Result<()> {
        let json = serde_json::to_string(output)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        tx.prepare_cached("INSERT OR REPLACE INTO requests (request_id, output) VALUES (?1, ?2)")?
            .execute(params![request_id, json])?;
        Ok(())
    }

    /// The first outcome of `request_id`, if it was applied before.
    fn outcome_of(tx: &Transaction, request_id: &str) -> rusqlite::Result<Option<CatalogOutput>> {
        tx.prepare_cached("SELECT output FROM requests WHERE request_id = ?1")?
            .query_row([request_id], |row| output_of_json(row, 0))
            .optional()
    }

    /// What `command` does to `book` (`None`: no such book): the outcome, and
    /// the book's new row if it changed.
    fn decide(
        command: &CatalogCommand,
        book: Option<&BookDetails>,
    ) -> (CatalogOutput, Option<BookDetails>) {
        let item_number = command.item_number();
        let Some(book) = book else {
            return (CatalogOutput::UnknownItem { item_number }, None);
        };
        match command {
            CatalogCommand::AdjustStock { delta, .. } => {
                match book.stock.checked_add_signed(*delta) {
                    Some(stock) => (
                        CatalogOutput::Adjusted { item_number, stock },
                        Some(BookDetails {
                            stock,
                            ..book.clone()
                        }),
                    ),
                    None => (
                        CatalogOutput::Insufficient {
                            item_number,
                            stock: book.stock,
                        },
                        None,
                    ),
                }
            }
            CatalogCommand::SetCost { cost, .. } => (
                CatalogOutput::CostSet {
                    item_number,
                    cost: *cost,
                },
                Some(BookDetails {
                    cost: *cost,
                    ..book.clone()
                }),
            ),
        }
    }
}

impl StateMachine for CatalogMachine {
    type Command = CatalogCommand;
    type Output = CatalogOutput;
    type Snapshot = CatalogSnapshot;
    type View = CatalogView;

    fn open(&mut self, tx: &Transaction) -> rusqlite::Result<()> {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS books (
                item_number INTEGER PRIMARY KEY,
                title TEXT NOT NULL,
                topic TEXT NOT NULL,
                cost INTEGER NOT NULL,
                stock INTEGER NOT NULL CHECK (stock >= 0)
             );
             CREATE INDEX IF NOT EXISTS books_by_topic ON books (topic, item_number);
             CREATE TABLE IF NOT EXISTS requests (
                request_id TEXT PRIMARY KEY,
                output TEXT NOT NULL
             );",
        )?;
        let seeded: Option<i64> = tx
            .query_row("SELECT item_number FROM books LIMIT 1", [], |row| {
                row.get(0)
            })
            .optional()?;
        // A new database is seeded with the initial inventory, once; a
        // restarted member keeps its (sold) stock. Either way the inventory
        // is not needed again.
        let inventory = std::mem::take(&mut self.inventory);
        if seeded.is_none() {
            for book in &inventory {
                Self::save_book(tx, &details(book))?;
            }
        }
        self.view.reads.bind(tx)
    }

    fn apply(
        &mut self,
        tx: &Transaction,
        command: &CatalogCommand,
        digest: &mut StateDigest,
    ) -> rusqlite::Result<CatalogOutput> {
        if let CatalogCommand::AdjustStock { request_id, .. } = command
            && let Some(first) = Self::outcome_of(tx, request_id)?
        {
            return Ok(first);
        }
        let before = select_book(tx, command.item_number())?;
        let (output, after) = Self::decide(command, before.as_ref());
        if let (Some(before), Some(after)) = (before, after) {
            digest.remove(BOOKS, &book_row(&before));
            digest.add(BOOKS, &book_row(&after));
            Self::save_stock_and_cost(tx, &after)?;
            // Hidden from readers until published; the first image of a
            // batch is the one readers may see.
            self.view
                .pending()
                .entry(before.item_number)
                .or_insert(before);
        }
        if let CatalogCommand::AdjustStock { request_id, .. } = command {
            Self::save_request(tx, request_id, &output)?;
            digest.add(REQUESTS, &(request_id, &output));
        }
        Ok(output)
    }

    fn snapshot(&self, conn: &Connection) -> rusqlite::Result<CatalogSnapshot> {
        let mut books = conn.prepare(concat!(
            "SELECT ",
            book_columns!(),
            " FROM books ORDER BY item_number"
        ))?;
        let books = books
            .query_map([], book_of_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(CatalogSnapshot {
            books,
            requests: read_requests(conn)?.into_iter().collect(),
        })
    }

    fn restore(
        &mut self,
        tx: &Transaction,
        snapshot: CatalogSnapshot,
        digest: &mut StateDigest,
    ) -> rusqlite::Result<()> {
        tx.execute_batch("DELETE FROM books; DELETE FROM requests;")?;
        for book in &snapshot.books {
            Self::save_book(tx, book)?;
            digest.add(BOOKS, &book_row(book));
        }
        for (id, output) in &snapshot.requests {
            Self::save_request(tx, id, output)?;
            digest.add(REQUESTS, &(id, output));
        }
        Ok(())
    }

    fn digest_rows(conn: &Connection) -> rusqlite::Result<StateDigest> {
        let mut books = StateDigest::default();
        let mut rows = conn.prepare(concat!("SELECT ", book_columns!(), " FROM books"))?;
        for book in rows.query_map([], book_of_row)? {
            books.add(BOOKS, &book_row(&book?));
        }
        let mut requests = conn.prepare("SELECT request_id, output FROM requests")?;
        let requests = StateDigest::of_rows(REQUESTS, requests.query_map([], request_of_row)?)?;
        Ok(books.combine(requests))
    }

    fn publish(&mut self) {
        self.view.pending().clear();
    }

    fn view(&self) -> Arc<CatalogView> {
        self.view.clone()
    }
}

fn details(book: &Book) -> BookDetails {
    BookDetails {
        item_number: book.item_number,
        stock: book.stock,
        cost: book.cost,
        topic: book.topic.clone(),
        title: book.title.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bookstore_core::inventory;

    /// A directory for one test's database (readers need a file), removed
    /// when the test ends.
    struct TempDb(std::path::PathBuf);

    impl TempDb {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("bookstore-catalog-{}", fastrand::u64(..)));
            std::fs::create_dir_all(&dir).expect("dir");
            Self(dir)
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn machine_with_db() -> (CatalogMachine, rusqlite::Connection, TempDb) {
        let books =
            inventory::parse("init,1,3,10,ds,A\ninit,2,1,20,ds,B\ninit,3,5,5,gs,C").expect("valid");
        let dir = TempDb::new();
        let mut conn = bookstore_replication::store::open(&dir.0.join("catalog.db")).expect("db");
        let mut machine = CatalogMachine::new(books);
        let tx = conn.transaction().expect("tx");
        machine.open(&tx).expect("open");
        tx.commit().expect("commit");
        machine.publish();
        (machine, conn, dir)
    }

    fn stock(machine: &CatalogMachine, item_number: ItemNumber) -> u64 {
        machine
            .view()
            .lookup(item_number)
            .expect("read")
            .expect("a book")
            .stock
    }

    fn apply(
        machine: &mut CatalogMachine,
        conn: &mut rusqlite::Connection,
        command: CatalogCommand,
    ) -> CatalogOutput {
        // Every write a test makes also checks that the digest kept per
        // write is the digest of the rows it leaves.
        let mut digest = CatalogMachine::digest_rows(conn).expect("digest");
        let tx = conn.transaction().expect("tx");
        let output = machine.apply(&tx, &command, &mut digest).expect("apply");
        tx.commit().expect("commit");
        assert_eq!(
            digest,
            CatalogMachine::digest_rows(conn).expect("digest"),
            "after {command:?}"
        );
        output
    }

    fn buy(item_number: ItemNumber, request_id: &str) -> CatalogCommand {
        CatalogCommand::AdjustStock {
            item_number,
            delta: -1,
            request_id: request_id.to_owned(),
        }
    }

    #[test]
    fn stock_never_goes_below_zero() {
        let (mut m, mut conn, _db) = machine_with_db();
        assert_eq!(
            apply(&mut m, &mut conn, buy(2, "a")),
            CatalogOutput::Adjusted {
                item_number: 2,
                stock: 0
            }
        );
        assert_eq!(
            apply(&mut m, &mut conn, buy(2, "b")),
            CatalogOutput::Insufficient {
                item_number: 2,
                stock: 0
            }
        );
    }

    #[test]
    fn a_retried_request_is_applied_once() {
        let (mut m, mut conn, _db) = machine_with_db();
        let first = apply(&mut m, &mut conn, buy(1, "same"));
        let again = apply(&mut m, &mut conn, buy(1, "same"));
        assert_eq!(first, again);
        m.publish();
        assert_eq!(stock(&m, 1), 2);
    }

    #[test]
    fn a_request_applied_before_a_restart_is_still_applied_once() {
        // The outcomes live on disk only: a reopened machine still knows them.
        let dir = std::env::temp_dir().join(format!("bookstore-catalog-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("catalog.db");
        let books = inventory::parse("init,1,3,10,ds,A").expect("valid");
        let mut outputs = Vec::new();
        for _ in 0..2 {
            let mut conn = bookstore_replication::store::open(&path).expect("open");
            let mut m = CatalogMachine::new(books.clone());
            let tx = conn.transaction().expect("tx");
            m.open(&tx).expect("open");
            tx.commit().expect("commit");
            outputs.push(apply(&mut m, &mut conn, buy(1, "once")));
        }
        assert_eq!(outputs[0], outputs[1]);
        assert_eq!(
            outputs[1],
            CatalogOutput::Adjusted {
                item_number: 1,
                stock: 2
            }
        );
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn writes_are_visible_to_readers_only_after_publish() {
        let (mut m, mut conn, _db) = machine_with_db();
        apply(&mut m, &mut conn, buy(1, "x"));
        assert_eq!(stock(&m, 1), 3, "committed, not yet published");
        m.publish();
        assert_eq!(stock(&m, 1), 2);
    }

    #[test]
    fn readers_see_a_book_as_before_the_batch_until_it_is_published() {
        // A batch of two buys of one book and a cost change, in one
        // transaction as the writer applies it, then committed.
        let (mut m, mut conn, _db) = machine_with_db();
        let tx = conn.transaction().expect("tx");
        let mut digest = StateDigest::default();
        for command in [
            buy(1, "x"),
            buy(1, "y"),
            CatalogCommand::SetCost {
                item_number: 1,
                cost: 99,
            },
        ] {
            m.apply(&tx, &command, &mut digest).expect("apply");
        }
        tx.commit().expect("commit");
        let seen = m.view().lookup(1).expect("read").expect("book");
        assert_eq!((seen.stock, seen.cost), (3, 10), "the published book");
        assert_eq!(stock(&m, 2), 1, "an untouched book reads from disk");
        m.publish();
        let seen = m.view().lookup(1).expect("read").expect("book");
        assert_eq!((seen.stock, seen.cost), (1, 99));
    }

    #[test]
    fn search_is_by_exact_topic_in_item_order() {
        let (m, _conn, _db) = machine_with_db();
        let found: Vec<_> = m
            .view()
            .search("ds")
            .expect("read")
            .into_iter()
            .map(|e| e.item_number)
            .collect();
        assert_eq!(found, vec![1, 2]);
        assert!(m.view().search("nothing").expect("read").is_empty());
    }

    #[test]
    fn unknown_items_and_cost_changes() {
        let (mut m, mut conn, _db) = machine_with_db();
        assert_eq!(
            apply(&mut m, &mut conn, buy(99, "u")),
            CatalogOutput::UnknownItem { item_number: 99 }
        );
        let set = CatalogCommand::SetCost {
            item_number: 3,
            cost: 7,
        };
        assert_eq!(
            apply(&mut m, &mut conn, set),
            CatalogOutput::CostSet {
                item_number: 3,
                cost: 7
            }
        );
    }

    #[test]
    fn a_snapshot_restores_an_identical_machine() {
        let (mut m, mut conn, _db) = machine_with_db();
        apply(&mut m, &mut conn, buy(1, "r1"));
        let (mut other, mut other_conn, _other_db) = machine_with_db();
        apply(&mut other, &mut other_conn, buy(3, "divergent"));
        let snapshot = m.snapshot(&conn).expect("snapshot");
        let tx = other_conn.transaction().expect("tx");
        let mut digest = StateDigest::default();
        other.restore(&tx, snapshot, &mut digest).expect("restore");
        tx.commit().expect("commit");
        other.publish();
        let rows = CatalogMachine::digest_rows(&conn).expect("digest");
        assert_eq!(digest, rows, "restore accounts every row it writes");
        assert_eq!(
            CatalogMachine::digest_rows(&other_conn).expect("digest"),
            rows
        );
        assert_eq!(stock(&other, 1), 2);
        // The restored request table still deduplicates.
        assert_eq!(
            apply(&mut other, &mut other_conn, buy(1, "r1")).clone(),
            CatalogOutput::Adjusted {
                item_number: 1,
                stock: 2
            }
        );
    }

    #[test]
    fn a_reopened_database_keeps_sold_stock() {
        let dir = std::env::temp_dir().join(format!("bookstore-catalog-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("catalog.db");
        let books = inventory::parse("init,1,3,10,ds,A").expect("valid");
        for round in 0..2 {
            let mut conn = bookstore_replication::store::open(&path).expect("open");
            let mut m = CatalogMachine::new(books.clone());
            let tx = conn.transaction().expect("tx");
            m.open(&tx).expect("open");
            let output = m
                .apply(
                    &tx,
                    &buy(1, &format!("round{round}")),
                    &mut StateDigest::default(),
                )
                .expect("apply");
            tx.commit().expect("commit");
            assert_eq!(
                output,
                CatalogOutput::Adjusted {
                    item_number: 1,
                    stock: 2 - round
                }
            );
        }
        std::fs::remove_dir_all(dir).expect("cleanup");
    }
}
