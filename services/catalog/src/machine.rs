//! The catalog's replicated state: books with their stock and cost, and the
//! outcome of every stock change by request id (so a retried buy takes stock
//! once). Commands are atomic and deterministic.
//!
//! The books are held in memory (every lookup reads them); the outcomes,
//! one per buy ever made, live in SQLite only, so memory does not grow with
//! the number of buys.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use bookstore_core::api::{BookDetails, ItemNumber, SearchEntry};
use bookstore_core::inventory::Book;
use bookstore_replication::store::{StateDigest, StateMachine};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
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

/// What readers see: every book, and the books of each topic.
#[derive(Debug, Default)]
pub struct CatalogView {
    inner: RwLock<Books>,
}

#[derive(Debug, Default, Clone)]
struct Books {
    by_item: BTreeMap<ItemNumber, Book>,
    by_topic: BTreeMap<String, Vec<ItemNumber>>,
}

impl CatalogView {
    pub fn lookup(&self, item_number: ItemNumber) -> Option<BookDetails> {
        let books = self.inner.read().unwrap_or_else(|p| p.into_inner());
        books.by_item.get(&item_number).map(details)
    }

    /// The books of `topic` (exact match, as in the original), by item number.
    pub fn search(&self, topic: &str) -> Vec<SearchEntry> {
        let books = self.inner.read().unwrap_or_else(|p| p.into_inner());
        books
            .by_topic
            .get(topic)
            .into_iter()
            .flatten()
            .filter_map(|item| books.by_item.get(item))
            .map(|book| SearchEntry {
                item_number: book.item_number,
                title: book.title.clone(),
            })
            .collect()
    }

    /// Every book (for status and tests).
    pub fn all(&self) -> Vec<BookDetails> {
        let books = self.inner.read().unwrap_or_else(|p| p.into_inner());
        books.by_item.values().map(details).collect()
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
fn book_row(book: &Book) -> (ItemNumber, &str, &str, u64, u64) {
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
    requests
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, output_of_json(row, 1)?))
        })?
        .collect()
}

/// An outcome as `requests` stores it: JSON text.
fn output_of_json(row: &rusqlite::Row, column: usize) -> rusqlite::Result<CatalogOutput> {
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
    inventory: Vec<Book>,
    books: BTreeMap<ItemNumber, Book>,
    dirty: BTreeSet<ItemNumber>,
    view: Arc<CatalogView>,
}

impl CatalogMachine {
    /// A catalog seeded with `inventory` when its database is new.
    pub fn new(inventory: Vec<Book>) -> Self {
        Self {
            inventory,
            books: BTreeMap::new(),
            dirty: BTreeSet::new(),
            view: Arc::default(),
        }
    }

    fn save_book(tx: &Transaction, book: &Book) -> rusqlite::Result<()> {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO books (item_number, title, topic, cost, stock) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
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
    fn save_stock_and_cost(tx: &Transaction, book: &Book) -> rusqlite::Result<()> {
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

    fn adjust(&mut self, item_number: ItemNumber, delta: i64) -> CatalogOutput {
        let Some(book) = self.books.get_mut(&item_number) else {
            return CatalogOutput::UnknownItem { item_number };
        };
        match book.stock.checked_add_signed(delta) {
            Some(stock) => {
                book.stock = stock;
                self.dirty.insert(item_number);
                CatalogOutput::Adjusted { item_number, stock }
            }
            None => CatalogOutput::Insufficient {
                item_number,
                stock: book.stock,
            },
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
        if seeded.is_none() {
            // A new database: seed the initial inventory, once. A restarted
            // member keeps its (sold) stock.
            for book in &self.inventory {
                Self::save_book(tx, book)?;
            }
        }
        let mut books = tx.prepare("SELECT item_number, title, topic, cost, stock FROM books")?;
        self.books = books
            .query_map([], |row| {
                Ok(Book {
                    item_number: row.get::<_, i64>(0)? as u64,
                    title: row.get(1)?,
                    topic: row.get(2)?,
                    cost: row.get::<_, i64>(3)? as u64,
                    stock: row.get::<_, i64>(4)? as u64,
                })
            })?
            .map(|book| book.map(|b| (b.item_number, b)))
            .collect::<rusqlite::Result<_>>()?;
        self.dirty = self.books.keys().copied().collect();
        Ok(())
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
        let item = command.item_number();
        if let Some(book) = self.books.get(&item) {
            digest.remove(BOOKS, &book_row(book));
        }
        let output = match command {
            CatalogCommand::AdjustStock {
                item_number,
                delta,
                request_id,
            } => {
                let output = self.adjust(*item_number, *delta);
                Self::save_request(tx, request_id, &output)?;
                digest.add(REQUESTS, &(request_id, &output));
                output
            }
            CatalogCommand::SetCost { item_number, cost } => {
                match self.books.get_mut(item_number) {
                    Some(book) => {
                        book.cost = *cost;
                        self.dirty.insert(*item_number);
                        CatalogOutput::CostSet {
                            item_number: *item_number,
                            cost: *cost,
                        }
                    }
                    None => CatalogOutput::UnknownItem {
                        item_number: *item_number,
                    },
                }
            }
        };
        if let Some(book) = self.books.get(&item) {
            digest.add(BOOKS, &book_row(book));
            Self::save_stock_and_cost(tx, book)?;
        }
        Ok(output)
    }

    fn snapshot(&self, conn: &Connection) -> rusqlite::Result<CatalogSnapshot> {
        Ok(CatalogSnapshot {
            books: self.books.values().map(details).collect(),
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
        self.books = snapshot
            .books
            .into_iter()
            .map(|b| {
                let book = Book {
                    item_number: b.item_number,
                    stock: b.stock,
                    cost: b.cost,
                    topic: b.topic,
                    title: b.title,
                };
                (book.item_number, book)
            })
            .collect();
        for book in self.books.values() {
            Self::save_book(tx, book)?;
            digest.add(BOOKS, &book_row(book));
        }
        for (id, output) in &snapshot.requests {
            Self::save_request(tx, id, output)?;
            digest.add(REQUESTS, &(id, output));
        }
        // Books that vanished must vanish from the view too: rebuild it whole.
        *self.view.inner.write().unwrap_or_else(|p| p.into_inner()) = Books::default();
        self.dirty = self.books.keys().copied().collect();
        Ok(())
    }

    fn digest_rows(conn: &Connection) -> rusqlite::Result<StateDigest> {
        let mut books = conn.prepare("SELECT item_number, title, topic, cost, stock FROM books")?;
        let books = StateDigest::of_rows(
            BOOKS,
            books.query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)? as ItemNumber,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)? as u64,
                    row.get::<_, i64>(4)? as u64,
                ))
            })?,
        )?;
        let mut requests = conn.prepare("SELECT request_id, output FROM requests")?;
        let requests = StateDigest::of_rows(
            REQUESTS,
            requests.query_map([], |row| {
                Ok((row.get::<_, String>(0)?, output_of_json(row, 1)?))
            })?,
        )?;
        Ok(books.combine(requests))
    }

    fn publish(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let mut view = self.view.inner.write().unwrap_or_else(|p| p.into_inner());
        for item in std::mem::take(&mut self.dirty) {
            let Some(book) = self.books.get(&item) else {
                continue;
            };
            if !view.by_item.contains_key(&item) {
                let topic = view.by_topic.entry(book.topic.clone()).or_default();
                topic.push(item);
                topic.sort_unstable();
            }
            view.by_item.insert(item, book.clone());
        }
    }

    fn view(&self) -> Arc<CatalogView> {
        self.view.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bookstore_core::inventory;

    fn machine_with_db() -> (CatalogMachine, rusqlite::Connection) {
        let books =
            inventory::parse("init,1,3,10,ds,A\ninit,2,1,20,ds,B\ninit,3,5,5,gs,C").expect("valid");
        let mut conn = rusqlite::Connection::open_in_memory().expect("db");
        let mut machine = CatalogMachine::new(books);
        let tx = conn.transaction().expect("tx");
        machine.open(&tx).expect("open");
        tx.commit().expect("commit");
        machine.publish();
        (machine, conn)
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
        let (mut m, mut conn) = machine_with_db();
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
        let (mut m, mut conn) = machine_with_db();
        let first = apply(&mut m, &mut conn, buy(1, "same"));
        let again = apply(&mut m, &mut conn, buy(1, "same"));
        assert_eq!(first, again);
        assert_eq!(m.books[&1].stock, 2);
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
        let (mut m, mut conn) = machine_with_db();
        apply(&mut m, &mut conn, buy(1, "x"));
        assert_eq!(m.view().lookup(1).expect("book").stock, 3);
        m.publish();
        assert_eq!(m.view().lookup(1).expect("book").stock, 2);
    }

    #[test]
    fn search_is_by_exact_topic_in_item_order() {
        let (m, _conn) = machine_with_db();
        let found: Vec<_> = m
            .view()
            .search("ds")
            .into_iter()
            .map(|e| e.item_number)
            .collect();
        assert_eq!(found, vec![1, 2]);
        assert!(m.view().search("nothing").is_empty());
    }

    #[test]
    fn unknown_items_and_cost_changes() {
        let (mut m, mut conn) = machine_with_db();
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
        let (mut m, mut conn) = machine_with_db();
        apply(&mut m, &mut conn, buy(1, "r1"));
        let (mut other, mut other_conn) = machine_with_db();
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
        assert_eq!(other.view().lookup(1).expect("book").stock, 2);
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
