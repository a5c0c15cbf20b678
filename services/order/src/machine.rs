//! The order tier's replicated state: an append-only list of orders, each
//! with its number and the request id of the buy that made it (so a retried
//! buy records one order).
//!
//! The orders live in SQLite only: the machine keeps the next order number,
//! and readers query the database through a pool of read connections. So a
//! member's memory does not grow with the number of orders, however long
//! the store sells.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bookstore_core::api::{ItemNumber, Order, OrderNumber};
use bookstore_replication::store::{ReadPool, StateDigest, StateMachine};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use serde::{Deserialize, Serialize};

/// The columns of an order, in the order [`order_of_row`] reads them; a
/// macro so the statements are literals.
macro_rules! order_columns {
    () => {
        "order_number, item_number, request_id"
    };
}

/// A write to the order log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OrderCommand {
    /// Records the order of a successful buy; a request id that already has
    /// an order returns that order.
    Record {
        request_id: String,
        item_number: ItemNumber,
    },
}

/// What readers see: the orders on disk up to the last published one. The
/// primary commits a batch before its replicas have it, so a reader must
/// not see an order above that bound (it could still be lost); orders are
/// numbered in sequence, so one number is the whole overlay.
#[derive(Default)]
pub struct OrderView {
    reads: ReadPool,
    published: AtomicU64,
}

impl OrderView {
    pub fn get(&self, order_number: OrderNumber) -> rusqlite::Result<Option<Order>> {
        self.query(
            concat!(
                "SELECT ",
                order_columns!(),
                " FROM orders WHERE order_number = ?1 AND order_number <= ?2"
            ),
            order_number as i64,
        )
    }

    pub fn by_request(&self, request_id: &str) -> rusqlite::Result<Option<Order>> {
        self.query(
            concat!(
                "SELECT ",
                order_columns!(),
                " FROM orders WHERE request_id = ?1 AND order_number <= ?2"
            ),
            request_id,
        )
    }

    fn query(&self, sql: &str, key: impl rusqlite::ToSql) -> rusqlite::Result<Option<Order>> {
        let published = self.published.load(Ordering::Acquire) as i64;
        self.reads.read(|conn| {
            conn.prepare_cached(sql)?
                .query_row(params![key, published], order_of_row)
                .optional()
        })
    }
}

/// The order log, for a resync.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderSnapshot {
    pub orders: Vec<Order>,
}

/// The table the digest accounts (see [`StateDigest`]); an order's row is
/// the [`Order`] itself.
const ORDERS: &str = "orders";

fn order_of_row(row: &Row) -> rusqlite::Result<Order> {
    Ok(Order {
        order_number: row.get::<_, i64>(0)? as u64,
        item_number: row.get::<_, i64>(1)? as u64,
        request_id: row.get(2)?,
    })
}

/// The order state machine.
#[derive(Default)]
pub struct OrderMachine {
    /// The number of the last order written (0: none yet).
    last: OrderNumber,
    view: Arc<OrderView>,
}

impl OrderMachine {
    pub fn new() -> Self {
        Self::default()
    }

    fn save(tx: &Transaction, order: &Order) -> rusqlite::Result<()> {
        tx.prepare_cached(concat!(
            "INSERT INTO orders (",
            order_columns!(),
            ") VALUES (?1, ?2, ?3)"
        ))?
        .execute(params![
            order.order_number as i64,
            order.item_number as i64,
            order.request_id
        ])?;
        Ok(())
    }

    fn last_order(conn: &Connection) -> rusqlite::Result<OrderNumber> {
        conn.query_row(
            "SELECT COALESCE(MAX(order_number), 0) FROM orders",
            [],
            |row| row.get::<_, i64>(0),
        )
        .map(|n| n as u64)
    }
}

impl StateMachine for OrderMachine {
    type Command = OrderCommand;
    type Output = Order;
    type Snapshot = OrderSnapshot;
    type View = OrderView;

    fn open(&mut self, tx: &Transaction) -> rusqlite::Result<()> {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS orders (
                order_number INTEGER PRIMARY KEY,
                item_number INTEGER NOT NULL,
                request_id TEXT NOT NULL UNIQUE
             );",
        )?;
        self.last = Self::last_order(tx)?;
        self.view.reads.bind(tx)
    }

    fn apply(
        &mut self,
        tx: &Transaction,
        command: &OrderCommand,
        digest: &mut StateDigest,
    ) -> rusqlite::Result<Order> {
        let OrderCommand::Record {
            request_id,
            item_number,
        } = command;
        let existing = tx
            .prepare_cached(concat!(
                "SELECT ",
                order_columns!(),
                " FROM orders WHERE request_id = ?1"
            ))?
            .query_row([request_id], order_of_row)
            .optional()?;
        if let Some(existing) = existing {
            return Ok(existing);
        }
        let order = Order {
            order_number: self.last + 1,
            item_number: *item_number,
            request_id: request_id.clone(),
        };
        Self::save(tx, &order)?;
        digest.add(ORDERS, &order);
        self.last = order.order_number;
        Ok(order)
    }

    fn snapshot(&self, conn: &Connection) -> rusqlite::Result<OrderSnapshot> {
        let mut statement = conn.prepare(concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders ORDER BY order_number"
        ))?;
        let orders = statement
            .query_map([], order_of_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(OrderSnapshot { orders })
    }

    fn restore(
        &mut self,
        tx: &Transaction,
        snapshot: OrderSnapshot,
        digest: &mut StateDigest,
    ) -> rusqlite::Result<()> {
        tx.execute_batch("DELETE FROM orders;")?;
        for order in &snapshot.orders {
            Self::save(tx, order)?;
            digest.add(ORDERS, order);
        }
        self.last = Self::last_order(tx)?;
        Ok(())
    }

    fn digest_rows(conn: &Connection) -> rusqlite::Result<StateDigest> {
        let mut orders = conn.prepare(concat!("SELECT ", order_columns!(), " FROM orders"))?;
        let rows = orders.query_map([], order_of_row)?;
        StateDigest::of_rows(ORDERS, rows)
    }

    fn publish(&mut self) {
        self.view.published.store(self.last, Ordering::Release);
    }

    fn view(&self) -> Arc<OrderView> {
        self.view.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(m: &mut OrderMachine, conn: &mut rusqlite::Connection, id: &str, item: u64) -> Order {
        let command = OrderCommand::Record {
            request_id: id.to_owned(),
            item_number: item,
        };
        // Every write a test makes also checks that the digest kept per
        // write is the digest of the rows it leaves.
        let mut digest = OrderMachine::digest_rows(conn).expect("digest");
        let tx = conn.transaction().expect("tx");
        let order = m.apply(&tx, &command, &mut digest).expect("apply");
        tx.commit().expect("commit");
        assert_eq!(digest, OrderMachine::digest_rows(conn).expect("digest"));
        order
    }

    /// A machine on a database file of its own (readers need a file),
    /// removed when the test ends.
    struct Opened {
        machine: OrderMachine,
        conn: rusqlite::Connection,
        dir: std::path::PathBuf,
    }

    impl Drop for Opened {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn open() -> Opened {
        let dir = std::env::temp_dir().join(format!("bookstore-orders-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut conn = bookstore_replication::store::open(&dir.join("order.db")).expect("db");
        let mut machine = OrderMachine::new();
        let tx = conn.transaction().expect("tx");
        machine.open(&tx).expect("open");
        tx.commit().expect("commit");
        Opened { machine, conn, dir }
    }

    fn read(view: &OrderView, order_number: OrderNumber) -> Option<Order> {
        view.get(order_number).expect("read")
    }

    #[test]
    fn orders_are_numbered_in_sequence_and_retries_record_once() {
        let Opened {
            machine: ref mut m,
            ref mut conn,
            ..
        } = open();
        assert_eq!(record(m, conn, "a", 1).order_number, 1);
        assert_eq!(record(m, conn, "b", 2).order_number, 2);
        assert_eq!(record(m, conn, "a", 1).order_number, 1);
        m.publish();
        assert_eq!(read(&m.view(), 2).expect("order 2").request_id, "b");
        assert!(read(&m.view(), 3).is_none());
        let by_request = m.view().by_request("b").expect("read");
        assert_eq!(by_request.expect("order").item_number, 2);
    }

    #[test]
    fn readers_see_no_order_until_it_is_published() {
        let Opened {
            machine: ref mut m,
            ref mut conn,
            ..
        } = open();
        record(m, conn, "a", 1);
        assert!(read(&m.view(), 1).is_none(), "committed, not yet published");
        assert!(m.view().by_request("a").expect("read").is_none());
        m.publish();
        assert_eq!(read(&m.view(), 1).expect("order").request_id, "a");
    }

    #[test]
    fn a_reopened_machine_numbers_on_from_the_last_order() {
        let Opened {
            machine: ref mut m,
            ref mut conn,
            ref dir,
        } = open();
        record(m, conn, "a", 1);
        record(m, conn, "b", 1);
        let mut again = bookstore_replication::store::open(&dir.join("order.db")).expect("db");
        let mut reopened = OrderMachine::new();
        let tx = again.transaction().expect("tx");
        reopened.open(&tx).expect("open");
        tx.commit().expect("commit");
        assert_eq!(record(&mut reopened, &mut again, "c", 1).order_number, 3);
    }

    #[test]
    fn restore_replaces_the_log() {
        let mut source = open();
        record(&mut source.machine, &mut source.conn, "a", 1);
        let mut target = open();
        record(&mut target.machine, &mut target.conn, "divergent", 9);
        let snapshot = source.machine.snapshot(&source.conn).expect("snapshot");
        let tx = target.conn.transaction().expect("tx");
        let mut digest = StateDigest::default();
        target
            .machine
            .restore(&tx, snapshot, &mut digest)
            .expect("restore");
        tx.commit().expect("commit");
        assert_eq!(
            digest,
            OrderMachine::digest_rows(&source.conn).expect("digest")
        );
        target.machine.publish();
        let view = target.machine.view();
        assert!(view.by_request("divergent").expect("read").is_none());
        assert_eq!(read(&view, 1).expect("order").request_id, "a");
        assert_eq!(
            record(&mut target.machine, &mut target.conn, "b", 1).order_number,
            2
        );
    }
}
