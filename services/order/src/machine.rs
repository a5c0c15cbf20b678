//! The order tier's replicated state: an append-only list of orders, each
//! with its number and the request id of the buy that made it (so a retried
//! buy records one order).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use bookstore_core::api::{ItemNumber, Order, OrderNumber};
use bookstore_replication::store::{StateDigest, StateMachine};
use rusqlite::{Connection, Transaction, params};
use serde::{Deserialize, Serialize};

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

/// What readers see.
#[derive(Debug, Default)]
pub struct OrderView {
    inner: RwLock<Orders>,
}

#[derive(Debug, Default)]
struct Orders {
    by_number: BTreeMap<OrderNumber, Order>,
    by_request: BTreeMap<String, OrderNumber>,
}

impl OrderView {
    pub fn get(&self, order_number: OrderNumber) -> Option<Order> {
        let orders = self.inner.read().unwrap_or_else(|p| p.into_inner());
        orders.by_number.get(&order_number).cloned()
    }

    pub fn by_request(&self, request_id: &str) -> Option<Order> {
        let orders = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let number = orders.by_request.get(request_id)?;
        orders.by_number.get(number).cloned()
    }

    pub fn count(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_number
            .len()
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

/// The order state machine.
#[derive(Default)]
pub struct OrderMachine {
    orders: BTreeMap<OrderNumber, Order>,
    by_request: BTreeMap<String, OrderNumber>,
    unpublished: BTreeSet<OrderNumber>,
    view: Arc<OrderView>,
}

impl OrderMachine {
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(&mut self, order: Order) {
        self.by_request
            .insert(order.request_id.clone(), order.order_number);
        self.unpublished.insert(order.order_number);
        self.orders.insert(order.order_number, order);
    }

    fn save(tx: &Transaction, order: &Order) -> rusqlite::Result<()> {
        tx.prepare_cached(
            "INSERT INTO orders (order_number, item_number, request_id) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![
            order.order_number as i64,
            order.item_number as i64,
            order.request_id
        ])?;
        Ok(())
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
        let mut statement =
            tx.prepare("SELECT order_number, item_number, request_id FROM orders")?;
        let orders = statement
            .query_map([], |row| {
                Ok(Order {
                    order_number: row.get::<_, i64>(0)? as u64,
                    item_number: row.get::<_, i64>(1)? as u64,
                    request_id: row.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        orders.into_iter().for_each(|order| self.insert(order));
        Ok(())
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
        if let Some(existing) = self
            .by_request
            .get(request_id)
            .and_then(|n| self.orders.get(n))
        {
            return Ok(existing.clone());
        }
        let order = Order {
            order_number: self.orders.last_key_value().map_or(1, |(n, _)| n + 1),
            item_number: *item_number,
            request_id: request_id.clone(),
        };
        Self::save(tx, &order)?;
        digest.add(ORDERS, &order);
        self.insert(order.clone());
        Ok(order)
    }

    fn snapshot(&self) -> OrderSnapshot {
        OrderSnapshot {
            orders: self.orders.values().cloned().collect(),
        }
    }

    fn restore(
        &mut self,
        tx: &Transaction,
        snapshot: OrderSnapshot,
        digest: &mut StateDigest,
    ) -> rusqlite::Result<()> {
        tx.execute_batch("DELETE FROM orders;")?;
        self.orders.clear();
        self.by_request.clear();
        *self.view.inner.write().unwrap_or_else(|p| p.into_inner()) = Orders::default();
        for order in snapshot.orders {
            Self::save(tx, &order)?;
            digest.add(ORDERS, &order);
            self.insert(order);
        }
        Ok(())
    }

    fn digest_rows(conn: &Connection) -> rusqlite::Result<StateDigest> {
        let mut orders =
            conn.prepare("SELECT order_number, item_number, request_id FROM orders")?;
        let rows = orders.query_map([], |row| {
            Ok(Order {
                order_number: row.get::<_, i64>(0)? as u64,
                item_number: row.get::<_, i64>(1)? as u64,
                request_id: row.get(2)?,
            })
        })?;
        StateDigest::of_rows(ORDERS, rows)
    }

    fn publish(&mut self) {
        if self.unpublished.is_empty() {
            return;
        }
        let mut view = self.view.inner.write().unwrap_or_else(|p| p.into_inner());
        for number in std::mem::take(&mut self.unpublished) {
            if let Some(order) = self.orders.get(&number) {
                view.by_request.insert(order.request_id.clone(), number);
                view.by_number.insert(number, order.clone());
            }
        }
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

    fn open() -> (OrderMachine, rusqlite::Connection) {
        let mut conn = rusqlite::Connection::open_in_memory().expect("db");
        let mut m = OrderMachine::new();
        let tx = conn.transaction().expect("tx");
        m.open(&tx).expect("open");
        tx.commit().expect("commit");
        (m, conn)
    }

    #[test]
    fn orders_are_numbered_in_sequence_and_retries_record_once() {
        let (mut m, mut conn) = open();
        assert_eq!(record(&mut m, &mut conn, "a", 1).order_number, 1);
        assert_eq!(record(&mut m, &mut conn, "b", 2).order_number, 2);
        assert_eq!(record(&mut m, &mut conn, "a", 1).order_number, 1);
        m.publish();
        assert_eq!(m.view().count(), 2);
        assert_eq!(m.view().by_request("b").expect("order").item_number, 2);
    }

    #[test]
    fn restore_replaces_the_log() {
        let (mut m, mut conn) = open();
        record(&mut m, &mut conn, "a", 1);
        let (mut other, mut other_conn) = open();
        record(&mut other, &mut other_conn, "divergent", 9);
        let tx = other_conn.transaction().expect("tx");
        let mut digest = StateDigest::default();
        other
            .restore(&tx, m.snapshot(), &mut digest)
            .expect("restore");
        tx.commit().expect("commit");
        assert_eq!(digest, OrderMachine::digest_rows(&conn).expect("digest"));
        other.publish();
        assert!(other.view().by_request("divergent").is_none());
        assert_eq!(other.view().get(1).expect("order").request_id, "a");
    }
}
