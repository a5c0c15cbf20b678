//! The cache's memory: a bounded LRU map of versioned entries.
//!
//! Versions make it safe against the classic race of read-through caches: a
//! lookup reads stock at version 7, a buy changes it at version 8 and
//! invalidates the entry, and only then does the slow lookup offer its
//! (stale) result. The invalidation leaves a tombstone with version 8, and
//! the put of version 7 is refused. A tombstone pushed out of the LRU raises
//! a floor below which every put is refused, so forgetting a tombstone never
//! lets a stale value in.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use bookstore_core::api::{CacheKey, ItemNumber};
use lru::LruCache;

/// Default number of entries (values and tombstones) kept.
pub const DEFAULT_CAPACITY: usize = 10_000;
/// Default age after which an entry is dropped even without invalidation: a
/// safety net for an invalidation lost while the cache was unreachable.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
enum Slot {
    Value {
        version: u64,
        /// The JSON of the answer, served as it is (a clone is a reference count).
        value: Bytes,
        stored: Instant,
    },
    Tombstone {
        version: u64,
    },
}

impl Slot {
    fn version(&self) -> u64 {
        match self {
            Slot::Value { version, .. } | Slot::Tombstone { version } => *version,
        }
    }
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Stored,
    /// A newer invalidation or value was already there.
    Stale,
}

/// The versioned LRU map.
#[derive(Debug)]
pub struct Entries {
    slots: LruCache<CacheKey, Slot>,
    floor: u64,
    max_age: Duration,
}

impl Entries {
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            slots: LruCache::new(capacity),
            floor: 0,
            max_age,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The cached value of `key`, if it is there and young enough.
    pub fn get(&mut self, key: &CacheKey, now: Instant) -> Option<Bytes> {
        match self.slots.get(key)? {
            Slot::Value { value, stored, .. } if now.duration_since(*stored) <= self.max_age => {
                Some(value.clone())
            }
            _ => None,
        }
    }

    /// Stores a value read at `version`, unless something newer is known.
    pub fn put(&mut self, key: CacheKey, version: u64, value: Bytes, now: Instant) -> PutOutcome {
        let newer_known = self
            .slots
            .peek(&key)
            .is_some_and(|slot| slot.version() > version);
        if version < self.floor || newer_known {
            return PutOutcome::Stale;
        }
        let slot = Slot::Value {
            version,
            value,
            stored: now,
        };
        self.insert(key, slot);
        PutOutcome::Stored
    }

    /// Drops the lookups of `items`, remembering that they changed at `version`.
    pub fn invalidate(&mut self, items: &[ItemNumber], version: u64) {
        for &item in items {
            let key = CacheKey::Lookup(item);
            let version = self
                .slots
                .peek(&key)
                .map_or(version, |slot| slot.version().max(version));
            self.insert(key, Slot::Tombstone { version });
        }
    }

    /// Forgets everything (a new catalog primary starts a new history).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.floor = 0;
    }

    fn insert(&mut self, key: CacheKey, slot: Slot) {
        if let Some((evicted_key, evicted)) = self.slots.push(key.clone(), slot)
            && evicted_key != key
            && let Slot::Tombstone { version } = evicted
        {
            self.floor = self.floor.max(version);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(value: serde_json::Value) -> Bytes {
        Bytes::from(value.to_string())
    }

    fn lookup(item: u64) -> CacheKey {
        CacheKey::Lookup(item)
    }

    #[test]
    fn a_read_older_than_an_invalidation_is_refused() {
        let now = Instant::now();
        let mut entries = Entries::new(10, DEFAULT_MAX_AGE);
        entries.invalidate(&[1], 8);
        assert_eq!(
            entries.put(lookup(1), 7, json(serde_json::json!({"stock": 3})), now),
            PutOutcome::Stale
        );
        assert_eq!(entries.get(&lookup(1), now), None);
        assert_eq!(
            entries.put(lookup(1), 8, json(serde_json::json!({"stock": 2})), now),
            PutOutcome::Stored
        );
        assert_eq!(
            entries.get(&lookup(1), now),
            Some(json(serde_json::json!({"stock": 2})))
        );
    }

    #[test]
    fn invalidation_drops_the_value() {
        let now = Instant::now();
        let mut entries = Entries::new(10, DEFAULT_MAX_AGE);
        entries.put(lookup(1), 3, json(serde_json::json!(1)), now);
        entries.invalidate(&[1], 4);
        assert_eq!(entries.get(&lookup(1), now), None);
    }

    #[test]
    fn memory_is_bounded_and_evicted_tombstones_raise_the_floor() {
        let now = Instant::now();
        let mut entries = Entries::new(2, DEFAULT_MAX_AGE);
        entries.invalidate(&[1], 50);
        entries.put(lookup(2), 60, json(serde_json::json!(2)), now);
        entries.put(lookup(3), 60, json(serde_json::json!(3)), now);
        assert_eq!(entries.len(), 2);
        // The tombstone of item 1 is gone, but its version still guards.
        assert_eq!(
            entries.put(lookup(1), 49, json(serde_json::json!("stale")), now),
            PutOutcome::Stale
        );
    }

    #[test]
    fn entries_expire_by_age() {
        let now = Instant::now();
        let mut entries = Entries::new(10, Duration::from_secs(1));
        entries.put(lookup(1), 1, json(serde_json::json!(1)), now);
        assert!(
            entries
                .get(&lookup(1), now + Duration::from_secs(2))
                .is_none()
        );
    }

    #[test]
    fn clear_forgets_everything() {
        let now = Instant::now();
        let mut entries = Entries::new(10, DEFAULT_MAX_AGE);
        entries.put(
            CacheKey::Search("ds".into()),
            1,
            json(serde_json::json!([])),
            now,
        );
        entries.clear();
        assert!(entries.is_empty());
    }
}
