//! Giving memory back after a burst, and sizing the transaction table from memory.
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

/// What one live transaction may cost, table slots, indexes and deadline included, for
/// sizing [`default_max_transactions`]: measured (`cargo bench --bench txn_memory`,
/// 200,000 of each) 440-800 B for the states a call leaves them in (RFC 6026 Accepted,
/// Timer J/K) and ~760 B for an IST while the callee rings; an ICT keeps its INVITE for
/// retransmission (a desk phone's is 1-1.5 KB). 2 KiB covers the largest with room for
/// what the TU keeps per transaction (the call hub's maps).
pub const TRANSACTION_BYTES: u64 = 2048;

/// The share of the memory the process may use that the transaction table may take.
const TRANSACTION_SHARE: u64 = 4;

/// `limits.max_transactions` when the configuration does not set it: a quarter of the
/// memory the process may use ([`memory_limit`]) at [`TRANSACTION_BYTES`] each, within
/// 4,096 and 16,777,216. On this project's 24 GiB machines that is about 3 million (a
/// sustained 5,000 calls/s keeps about 500,000 lingering); in a container limited to
/// 512 MiB, 65,536.
pub fn default_max_transactions() -> usize {
    max_transactions_for(memory_limit())
}

/// [`default_max_transactions`] for a memory limit of `bytes`.
pub fn max_transactions_for(bytes: u64) -> usize {
    let n = bytes / TRANSACTION_SHARE / TRANSACTION_BYTES;
    n.clamp(4096, 16 << 20) as usize
}

/// The memory this process may use, in bytes: the smaller of the machine's memory
/// (`MemTotal`) and its cgroup's limit (v2 `memory.max`, v1 `memory.limit_in_bytes`),
/// so a container's limit counts, not the host's. 1 GiB when none can be read.
pub fn memory_limit() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| meminfo_total(&m));
    let cgroup = cgroup_limit();
    match (total, cgroup) {
        (Some(t), Some(c)) => t.min(c),
        (Some(t), None) => t,
        (None, Some(c)) => c,
        (None, None) => 1 << 30,
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The memory limit of this process's cgroup, if it has one ("max" is none).
fn cgroup_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut candidates = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.is_empty() {
            candidates.push(format!("/sys/fs/cgroup{path}/memory.max"));
            candidates.push("/sys/fs/cgroup/memory.max".to_string());
        } else if controllers.split(',').any(|c| c == "memory") {
            candidates.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"));
            candidates.push("/sys/fs/cgroup/memory/memory.limit_in_bytes".to_string());
        }
    }
    candidates
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|v| v.trim().parse::<u64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transaction_bound_follows_memory() {
        assert_eq!(max_transactions_for(512 << 20), 65_536);
        assert_eq!(max_transactions_for(24 << 30), 3_145_728);
        assert_eq!(max_transactions_for(16 << 20), 4096, "a floor");
        assert_eq!(max_transactions_for(u64::MAX), 16 << 20, "a ceiling");
        assert!(memory_limit() > 0);
        assert_eq!(
            meminfo_total("MemTotal:       24555888 kB\nMemFree: 1 kB\n"),
            Some(24_555_888 * 1024)
        );
    }

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
