//! A map bounded by its number of entries, the least recently used one
//! dropped first: the per-process caches of things that never change once
//! written (open table files, opened indexes of a table version).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// An [`Lru`] shared between threads. A cache that a panic left poisoned
/// is passed over: nothing is found in it and nothing kept.
pub(crate) struct SharedLru<K, V>(Mutex<Lru<K, V>>);

impl<K: Hash + Eq + Clone, V: Clone> SharedLru<K, V> {
    pub(crate) fn new(capacity: usize) -> SharedLru<K, V> {
        SharedLru(Mutex::new(Lru::new(capacity)))
    }

    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.0.lock().ok()?.get(key)
    }

    pub(crate) fn insert(&self, key: K, value: V) {
        if let Ok(mut lru) = self.0.lock() {
            lru.insert(key, value);
        }
    }
}

pub(crate) struct Lru<K, V> {
    entries: HashMap<K, (V, u64)>,
    capacity: usize,
    tick: u64,
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    pub(crate) fn new(capacity: usize) -> Lru<K, V> {
        Lru {
            entries: HashMap::new(),
            capacity,
            tick: 0,
        }
    }

    /// The value of `key`, now the most recently used.
    pub(crate) fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(key).map(|(v, used)| {
            *used = tick;
            v.clone()
        })
    }

    /// Keep `value` under `key`, dropping the least recently used entry
    /// when full.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        if self.entries.len() >= self.capacity
            && !self.entries.contains_key(&key)
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            self.entries.remove(&oldest);
        }
        self.tick += 1;
        self.entries.insert(key, (value, self.tick));
    }
}

#[cfg(test)]
mod tests {
    use super::Lru;

    #[test]
    fn the_least_recently_used_entry_goes_first() {
        let mut lru = Lru::new(2);
        lru.insert("a", 1);
        lru.insert("b", 2);
        assert_eq!(lru.get(&"a"), Some(1));
        lru.insert("c", 3);
        assert_eq!(
            (lru.get(&"a"), lru.get(&"b"), lru.get(&"c")),
            (Some(1), None, Some(3))
        );
        // Replacing a value evicts nothing.
        lru.insert("c", 4);
        assert_eq!((lru.get(&"a"), lru.get(&"c")), (Some(1), Some(4)));
    }
}
