//! Wire types of the public API (compatible with the original's client: every
//! answer is `{"result": ...}`) and of the internal peer API.

use serde::{Deserialize, Serialize};

/// A book's item number, as the public API names it.
pub type ItemNumber = u64;
/// The number of an order, unique within a store.
pub type OrderNumber = u64;

/// The longest request id a client may send; a UUID is 36 characters.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// `{"result": ...}`, the envelope of every successful public answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub result: T,
}

/// One match of a search: what the original showed per book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchEntry {
    pub item_number: ItemNumber,
    pub title: String,
}

/// The details of one book, as `lookup` shows them (`type` is the topic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookDetails {
    pub item_number: ItemNumber,
    pub stock: u64,
    pub cost: u64,
    #[serde(rename = "type")]
    pub topic: String,
    pub title: String,
}

/// The outcome of a buy, as the original spelled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuyResult {
    Success,
    Failed,
}

/// The answer to `buy`: `{"result": "Success", "order_number": 7}` or
/// `{"result": "Failed"}` when the book is sold out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuyResponse {
    pub result: BuyResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_number: Option<OrderNumber>,
}

/// The body of `POST /buy` (the GET form takes the same fields as a query).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuyRequest {
    pub item_number: ItemNumber,
    /// Identifies one purchase across retries: the same id is applied once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// A recorded order, as `GET /orders/{order_number}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_number: OrderNumber,
    pub item_number: ItemNumber,
    pub request_id: String,
}

/// A read answer from a catalog member, with the log index of the state it
/// was read from. The cache keeps an entry only if no invalidation with a
/// higher index came first, so a slow read never overwrites a newer write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned<T> {
    pub version: u64,
    pub value: T,
}

/// Checks a client-supplied request id: short, and only characters that are
/// safe in logs and URLs.
pub fn validate_request_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_REQUEST_ID_LEN {
        return Err(format!(
            "request_id must be 1 to {MAX_REQUEST_ID_LEN} characters"
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err("request_id may contain only letters, digits, '-', '_' and '.'".to_owned());
    }
    Ok(())
}

/// A fresh request id for a buy whose client sent none: 32 hex digits, the
/// time in milliseconds (12) and then 80 random bits (20), so ids made later
/// sort later. The tiers index every id they keep (the catalog's outcomes,
/// the order tier's orders): an id that sorts last is appended at the edge
/// of the index, where a random one would land on a cold page of an index
/// that grows with every buy, and each batch would write one page per buy.
pub fn new_request_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    format!(
        "{:012x}{:04x}{:016x}",
        millis & 0xffff_ffff_ffff,
        fastrand::u16(..),
        fastrand::u64(..)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buy_answers_keep_the_original_shape() {
        let failed = BuyResponse {
            result: BuyResult::Failed,
            order_number: None,
        };
        assert_eq!(
            serde_json::to_string(&failed).expect("json"),
            r#"{"result":"Failed"}"#
        );
        let success = BuyResponse {
            result: BuyResult::Success,
            order_number: Some(7),
        };
        assert_eq!(
            serde_json::to_string(&success).expect("json"),
            r#"{"result":"Success","order_number":7}"#
        );
    }

    #[test]
    fn lookup_calls_the_topic_type() {
        let book = BookDetails {
            item_number: 1,
            stock: 3,
            cost: 10,
            topic: "distributed systems".into(),
            title: "t".into(),
        };
        let json = serde_json::to_value(&book).expect("json");
        assert_eq!(json["type"], "distributed systems");
    }

    #[test]
    fn request_ids_are_checked() {
        assert!(validate_request_id("abc-123_x.y").is_ok());
        assert!(validate_request_id("").is_err());
        assert!(validate_request_id("a b").is_err());
        assert!(validate_request_id(&"a".repeat(MAX_REQUEST_ID_LEN + 1)).is_err());
        assert!(validate_request_id(&new_request_id()).is_ok());
        assert_eq!(new_request_id().len(), 32);
    }

    #[test]
    fn request_ids_made_later_sort_later() {
        let earlier = new_request_id();
        std::thread::sleep(std::time::Duration::from_millis(3));
        let later = new_request_id();
        assert!(earlier < later, "{earlier} then {later}");
        assert_ne!(new_request_id(), new_request_id());
    }
}

/// The cache's keys: a lookup by item, or a search by topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "key", rename_all = "snake_case")]
pub enum CacheKey {
    Lookup(ItemNumber),
    Search(String),
}

/// A read result offered to the cache, with the catalog version it was read
/// at (see [`Versioned`]). `value` is the JSON of the answer's `result`,
/// kept as text: the cache stores and serves it verbatim, never re-encoding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachePut {
    pub key: CacheKey,
    pub version: u64,
    pub value: Box<serde_json::value::RawValue>,
}

/// The catalog primary's notice that these items changed at `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheInvalidate {
    pub item_numbers: Vec<ItemNumber>,
    pub version: u64,
}

/// How the cache answers a read it does not hold: `204 No Content`. A hit
/// is `200` with the cached JSON as the whole body.
pub const CACHE_MISS_STATUS: u16 = 204;

/// The body of the catalog's internal `update` (the original's
/// `update(item_number, cost, stock_update)`): one change at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogUpdate {
    pub item_number: ItemNumber,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock_delta: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<u64>,
    /// Makes a stock change idempotent across retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}
