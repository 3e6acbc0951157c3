//! What is read from /proc about a task, kept for a while: a machine-wide trace or `top`
//! may see thousands of long waits a second from the same few tasks, and each read is a few
//! syscalls.

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

/// Values read per key, reused for `ttl` (plus `stagger(key)`), at most `max` keys: beyond, the
/// cache starts over (bounded memory).
pub struct TtlCache<K, V> {
    entries: HashMap<K, (Instant, V)>,
    ttl: Duration,
    max: usize,
}

impl<K: Hash + Eq + Copy, V> TtlCache<K, V> {
    #[must_use]
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            entries: HashMap::new(),
            ttl,
            max,
        }
    }

    /// The value of `key`: the cached one while younger than the TTL plus `extra`, else
    /// `read()` (cached). When full, aged values go first; if none has aged, all go.
    pub fn get_or_read(&mut self, key: K, extra: Duration, read: impl FnOnce() -> V) -> &V {
        let now = Instant::now();
        let fresh = self
            .entries
            .get(&key)
            .is_some_and(|(read_at, _)| now.duration_since(*read_at) < self.ttl + extra);
        if !fresh {
            if self.entries.len() >= self.max {
                let ttl = self.ttl;
                self.entries
                    .retain(|_, (read_at, _)| now.duration_since(*read_at) < ttl);
                if self.entries.len() >= self.max {
                    self.entries.clear();
                }
            }
            self.entries.insert(key, (now, read()));
        }
        &self.entries[&key].1
    }

    pub fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_reused_until_they_age_and_the_cache_is_bounded() {
        let mut cache = TtlCache::new(Duration::from_secs(30), 2);
        let mut reads = 0;
        let mut read = |v: u32| {
            reads += 1;
            v
        };
        assert_eq!(*cache.get_or_read(1, Duration::ZERO, || read(10)), 10);
        assert_eq!(
            *cache.get_or_read(1, Duration::ZERO, || read(11)),
            10,
            "cached"
        );
        assert_eq!(*cache.get_or_read(2, Duration::ZERO, || read(20)), 20);
        // A third key while none has aged: the cache starts over, key 1 is read again.
        assert_eq!(*cache.get_or_read(3, Duration::ZERO, || read(30)), 30);
        assert_eq!(*cache.get_or_read(1, Duration::ZERO, || read(12)), 12);
        assert_eq!(reads, 4);
        let mut aged = TtlCache::new(Duration::ZERO, 10);
        assert_eq!(*aged.get_or_read(1, Duration::ZERO, || 1), 1);
        assert_eq!(
            *aged.get_or_read(1, Duration::ZERO, || 2),
            2,
            "a zero TTL reads again"
        );
    }
}
