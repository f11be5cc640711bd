//! Authentication-failure rate limit per source IP (RFC 7616 §5.13 and RFC 3261 §26.3.2
//! leave online guessing to the server; this is our answer to it).
//!
//! Failures are counted in a fixed window that opens at a source's first failure and
//! lasts `window`: the failure that brings the count to `max_failures` inside it blocks
//! the source for `block`. A success clears the source. The table holds at most
//! `max_sources` entries: when it is full, entries that neither block nor count inside an
//! open window go first, then the entry idle longest (not-blocked ones before blocked
//! ones). `max_failures == 0` disables the limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    window_start: u64,
    /// Blocked while `now < blocked_until`; 0 when never blocked.
    blocked_until: u64,
    /// Last failure, for eviction.
    last: u64,
}

impl Entry {
    fn blocked(&self, now: u64) -> bool {
        now < self.blocked_until
    }

    /// Whether the entry still means something at `now`.
    fn live(&self, now: u64, window: u64) -> bool {
        self.blocked(now) || (self.failures > 0 && now < self.window_start.saturating_add(window))
    }
}

/// Limits for [`FailureLimiter`], in seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LimiterConfig {
    pub max_failures: u32,
    pub window: u64,
    pub block: u64,
    pub max_sources: usize,
}

/// Failure counts and blocks per source IP, bounded.
#[derive(Debug)]
pub(crate) struct FailureLimiter {
    inner: Mutex<HashMap<IpAddr, Entry>>,
    cfg: LimiterConfig,
}

impl FailureLimiter {
    pub(crate) fn new(cfg: LimiterConfig) -> FailureLimiter {
        FailureLimiter {
            inner: Mutex::new(HashMap::new()),
            cfg,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, Entry>> {
        // Every update is a single assignment, so a poisoned map is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `ip` is blocked at `now`. An expired block is forgotten.
    pub(crate) fn is_blocked(&self, ip: IpAddr, now: u64) -> bool {
        let mut map = self.lock();
        match map.get(&ip) {
            Some(e) if e.blocked(now) => true,
            Some(e) if e.blocked_until != 0 => {
                map.remove(&ip);
                false
            }
            _ => false,
        }
    }

    /// Counts one failure for `ip`; true when this failure blocks it (or it already is).
    pub(crate) fn record_failure(&self, ip: IpAddr, now: u64) -> bool {
        if self.cfg.max_failures == 0 || self.cfg.max_sources == 0 {
            return false;
        }
        let mut map = self.lock();
        if !map.contains_key(&ip) && map.len() >= self.cfg.max_sources {
            self.evict(&mut map, now);
        }
        let e = map.entry(ip).or_insert(Entry {
            failures: 0,
            window_start: now,
            blocked_until: 0,
            last: now,
        });
        if e.blocked(now) {
            return true;
        }
        if e.failures == 0 || now >= e.window_start.saturating_add(self.cfg.window) {
            e.failures = 0;
            e.window_start = now;
            e.blocked_until = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last = now;
        if e.failures >= self.cfg.max_failures {
            e.failures = 0;
            e.blocked_until = now.saturating_add(self.cfg.block);
            return true;
        }
        false
    }

    /// Forgets `ip` (after a successful authentication).
    pub(crate) fn clear(&self, ip: IpAddr) {
        self.lock().remove(&ip);
    }

    fn evict(&self, map: &mut HashMap<IpAddr, Entry>, now: u64) {
        let window = self.cfg.window;
        map.retain(|_, e| e.live(now, window));
        while map.len() >= self.cfg.max_sources {
            let victim = map
                .iter()
                .min_by_key(|(_, e)| (e.blocked(now), e.last))
                .map(|(ip, _)| *ip);
            match victim {
                Some(ip) => {
                    map.remove(&ip);
                }
                None => break,
            }
        }
    }

    /// How many sources are tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    fn limiter(max_sources: usize) -> FailureLimiter {
        FailureLimiter::new(LimiterConfig {
            max_failures: 3,
            window: 60,
            block: 100,
            max_sources,
        })
    }

    #[test]
    fn blocks_at_the_limit_and_unblocks_after() {
        let l = limiter(10);
        assert!(!l.record_failure(ip(1), 0));
        assert!(!l.record_failure(ip(1), 10));
        assert!(!l.is_blocked(ip(1), 10));
        assert!(l.record_failure(ip(1), 20));
        assert!(l.is_blocked(ip(1), 20));
        assert!(l.is_blocked(ip(1), 119));
        assert!(!l.is_blocked(ip(2), 20), "per source");
        assert!(!l.is_blocked(ip(1), 120));
        assert_eq!(l.len(), 0, "expired block forgotten");
        assert!(!l.record_failure(ip(1), 121), "count starts again");
    }

    #[test]
    fn window_expiry_resets_count() {
        let l = limiter(10);
        assert!(!l.record_failure(ip(1), 0));
        assert!(!l.record_failure(ip(1), 1));
        assert!(
            !l.record_failure(ip(1), 60),
            "window over: this is failure 1"
        );
        assert!(!l.record_failure(ip(1), 61));
        assert!(l.record_failure(ip(1), 62));
    }

    #[test]
    fn clear_resets() {
        let l = limiter(10);
        l.record_failure(ip(1), 0);
        l.record_failure(ip(1), 0);
        l.clear(ip(1));
        assert!(!l.record_failure(ip(1), 0));
        assert!(!l.record_failure(ip(1), 0));
    }

    #[test]
    fn bounded_table_evicts_idle_first_and_keeps_blocks() {
        let l = limiter(3);
        for _ in 0..3 {
            l.record_failure(ip(1), 0);
        }
        assert!(l.is_blocked(ip(1), 1));
        l.record_failure(ip(2), 1);
        l.record_failure(ip(3), 2);
        assert_eq!(l.len(), 3);
        l.record_failure(ip(4), 3); // evicts ip(2), the oldest not blocked
        assert_eq!(l.len(), 3);
        assert!(l.is_blocked(ip(1), 3));
        // ip(2)'s count was forgotten: two more failures do not block it
        assert!(!l.record_failure(ip(2), 4));
        assert!(l.len() <= 3);
        // after the window, stale counters are pruned first
        for n in 10..20 {
            l.record_failure(ip(n), 70);
            assert!(l.len() <= 3);
        }
        assert!(l.is_blocked(ip(1), 70));
    }

    #[test]
    fn zero_disables() {
        let l = FailureLimiter::new(LimiterConfig {
            max_failures: 0,
            window: 60,
            block: 60,
            max_sources: 10,
        });
        for t in 0..100 {
            assert!(!l.record_failure(ip(1), t));
        }
        assert!(!l.is_blocked(ip(1), 100));
    }
}
