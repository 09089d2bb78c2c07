//! A small cache bounded by both age and size, for successful look-ups only.
//!
//! Why a cache at all: Nexio resends a ping it thinks failed (three attempts,
//! a minute apart), sends one ping per status change of the same object, and
//! the background retry of an event that was ACKed before its look-up
//! finished asks for the same object again. Each of those would otherwise be
//! another authenticated call to the vendor's API, which we do not want to
//! hammer.
//!
//! Why both bounds: the TTL keeps answers fresh (an object's status moves on;
//! the ping's own status is authoritative anyway, as vendors apply records); the
//! capacity keeps memory bounded whatever the vendor sends. Eviction is
//! least-recently-used, implemented with a `HashMap` plus a recency queue with
//! lazy deletion: every touch pushes a new `(key, stamp)` and stale pairs are
//! skipped when met, and the queue is compacted when it grows past twice the
//! capacity. No extra crate is needed for this.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// One cached answer.
struct Entry<V> {
    value: V,
    expires: Instant,
    /// The stamp of this entry's newest position in the recency queue.
    stamp: u64,
}

/// A TTL- and size-bounded LRU map. Not thread-safe: the owner wraps it in a
/// mutex and holds it only for the map operation itself, never across I/O.
pub(crate) struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: HashMap<K, Entry<V>>,
    /// Keys from least to most recently used; pairs whose stamp is not the
    /// entry's current stamp are stale and skipped.
    order: VecDeque<(K, u64)>,
    next_stamp: u64,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// A cache keeping at most `capacity` entries for at most `ttl` each;
    /// a zero capacity or TTL disables caching.
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_stamp: 0,
        }
    }

    /// The live value for `key`, marking it most recently used; an expired
    /// entry is dropped and reported as a miss.
    pub(crate) fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        let expired = match self.entries.get(key) {
            None => return None,
            Some(entry) => entry.expires <= now,
        };
        if expired {
            self.entries.remove(key);
            return None;
        }
        let stamp = self.bump();
        let entry = self.entries.get_mut(key)?;
        entry.stamp = stamp;
        let value = entry.value.clone();
        self.order.push_back((key.clone(), stamp));
        self.compact_if_needed();
        Some(value)
    }

    /// Stores `value` under `key` for the TTL, evicting the least recently
    /// used entries beyond the capacity.
    pub(crate) fn insert(&mut self, key: K, value: V, now: Instant) {
        if self.capacity == 0 || self.ttl.is_zero() {
            return;
        }
        let stamp = self.bump();
        let expires = now.checked_add(self.ttl).unwrap_or(now);
        self.order.push_back((key.clone(), stamp));
        self.entries.insert(
            key,
            Entry {
                value,
                expires,
                stamp,
            },
        );
        while self.entries.len() > self.capacity {
            self.evict_one();
        }
        self.compact_if_needed();
    }

    /// Number of entries held (live or expired but not yet noticed).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn bump(&mut self) -> u64 {
        self.next_stamp += 1;
        self.next_stamp
    }

    fn evict_one(&mut self) {
        while let Some((key, stamp)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|e| e.stamp == stamp) {
                self.entries.remove(&key);
                return;
            }
        }
    }

    fn compact_if_needed(&mut self) {
        if self.order.len() > 2 * self.capacity + 16 {
            let entries = &self.entries;
            self.order
                .retain(|(key, stamp)| entries.get(key).is_some_and(|e| e.stamp == *stamp));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_the_ttl() {
        let t0 = Instant::now();
        let mut cache = TtlCache::new(Duration::from_secs(10), 8);
        cache.insert("a", 1, t0);
        assert_eq!(cache.get(&"a", t0 + Duration::from_secs(9)), Some(1));
        assert_eq!(cache.get(&"a", t0 + Duration::from_secs(10)), None);
        assert_eq!(cache.len(), 0, "an expired entry is dropped when met");
    }

    #[test]
    fn the_least_recently_used_entry_is_evicted_first() {
        let t0 = Instant::now();
        let mut cache = TtlCache::new(Duration::from_secs(60), 2);
        cache.insert("a", 1, t0);
        cache.insert("b", 2, t0);
        assert_eq!(cache.get(&"a", t0), Some(1)); // "b" is now the LRU
        cache.insert("c", 3, t0);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&"b", t0), None);
        assert_eq!(cache.get(&"a", t0), Some(1));
        assert_eq!(cache.get(&"c", t0), Some(3));
    }

    #[test]
    fn re_inserting_refreshes_value_and_ttl() {
        let t0 = Instant::now();
        let mut cache = TtlCache::new(Duration::from_secs(10), 2);
        cache.insert("a", 1, t0);
        cache.insert("a", 2, t0 + Duration::from_secs(5));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&"a", t0 + Duration::from_secs(12)), Some(2));
    }

    #[test]
    fn the_recency_queue_stays_bounded_under_many_hits() {
        let t0 = Instant::now();
        let mut cache = TtlCache::new(Duration::from_secs(60), 4);
        for i in 0..4 {
            cache.insert(i, i, t0);
        }
        for n in 0..10_000 {
            assert_eq!(cache.get(&(n % 4), t0), Some(n % 4));
        }
        assert!(cache.order.len() <= 2 * 4 + 16 + 1, "{}", cache.order.len());
        cache.insert(9, 9, t0);
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn zero_capacity_or_ttl_disables_caching() {
        let t0 = Instant::now();
        let mut cache = TtlCache::new(Duration::from_secs(60), 0);
        cache.insert("a", 1, t0);
        assert_eq!(cache.get(&"a", t0), None);
        let mut cache = TtlCache::new(Duration::ZERO, 10);
        cache.insert("a", 1, t0);
        assert_eq!(cache.get(&"a", t0), None);
    }
}
