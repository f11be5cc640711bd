//! Giving memory back after a burst.
//!
//! A `HashMap` keeps the capacity of its largest moment. The switch's per-message and
//! per-call tables (transactions, their keys, the calls' routing maps) peak during a
//! ramp of new calls, when every call's INVITE transactions are still in RFC 6026's
//! Accepted state (64*T1 = 32 s); once those are gone the tables are mostly empty but
//! still hold their peak's buckets: measured at 10,000 held calls, about 900 bytes per
//! call of empty transaction buckets. [`shrink_sparse`] halves such a table back when
//! it is at most a quarter full, so memory follows the load down as it followed it up.
//! Amortised: a shrink costs O(len) and at least `len` removals happen between two of
//! them (the table is rebuilt at twice its length, and grows again only past that).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash};

/// Tables at or below this capacity are left alone (small, and rebuilt often otherwise).
const MIN_CAPACITY: usize = 1024;

/// True when a table of this capacity and length is due a shrink: past
/// [`MIN_CAPACITY`] and a quarter full or less.
pub fn is_sparse(capacity: usize, len: usize) -> bool {
    capacity > MIN_CAPACITY && len <= capacity / 4
}

/// Shrinks `map` to twice its length when it is a quarter full or less.
pub fn shrink_sparse<K: Eq + Hash, V, S: BuildHasher>(map: &mut HashMap<K, V, S>) {
    if is_sparse(map.capacity(), map.len()) {
        map.shrink_to(map.len() * 2);
    }
}

/// [`shrink_sparse`] for a `HashSet`.
pub fn shrink_sparse_set<K: Eq + Hash, S: BuildHasher>(set: &mut HashSet<K, S>) {
    if is_sparse(set.capacity(), set.len()) {
        set.shrink_to(set.len() * 2);
    }
}

/// [`shrink_sparse`] for a `DashMap` (each shard is locked in turn, only when shrinking).
pub fn shrink_sparse_dashmap<K: Eq + Hash + Clone, V, S: BuildHasher + Clone>(
    map: &dashmap::DashMap<K, V, S>,
) {
    if is_sparse(map.capacity(), map.len()) {
        map.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_given_back_and_a_steady_table_is_left_alone() {
        let mut m: HashMap<u64, u64> = HashMap::new();
        for i in 0..100_000 {
            m.insert(i, i);
        }
        let peak = m.capacity();
        for i in 0..99_000 {
            m.remove(&i);
            shrink_sparse(&mut m);
        }
        assert_eq!(m.len(), 1_000);
        assert!(m.capacity() < peak / 16, "{} of {peak}", m.capacity());
        assert!(m.capacity() >= m.len());
        // Steady at half full: no rebuilds.
        let cap = m.capacity();
        shrink_sparse(&mut m);
        assert_eq!(m.capacity(), cap);
        assert!((99_000..100_000).all(|i| m.get(&i) == Some(&i)));
    }
}
