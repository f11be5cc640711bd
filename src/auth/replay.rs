//! Nonce-count tracking against replayed responses (RFC 7616 §3.4 `nc`, §5.5; RFC 3261
//! §22.4 leaves replay protection to the server).
//!
//! For every nonce that has produced a correct response we keep the highest nonce count
//! accepted and when the nonce expires. A response is accepted only if its nc is strictly
//! greater than the last one accepted for its nonce (phones reuse a nonce with nc
//! 00000002, 00000003, … on later requests; that is fine). The table is bounded: when it
//! is full, expired entries are pruned (at most once per earliest expiry, so a full table
//! of live entries is not rescanned on every request) and, if it is still full, a new
//! nonce is refused as [`NcCheck::Full`] — the caller answers with a fresh challenge.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// The outcome of [`NonceCounts::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NcCheck {
    /// nc is new for this nonce; it is now the last accepted one.
    Accepted,
    /// nc is not greater than the last accepted one: a replay (or a reordered request).
    Replay,
    /// The nonce is not tracked yet and the table has no room.
    Full,
}

/// A nonce as its 32 raw bytes (half the memory of its hex form).
pub(crate) type NonceId = [u8; 32];

#[derive(Debug, Clone, Copy)]
struct Entry {
    last_nc: u32,
    /// Unix seconds after which the nonce is stale and the entry may go.
    expires: u64,
}

#[derive(Debug)]
struct Inner {
    map: HashMap<NonceId, Entry>,
    /// The earliest `expires` in `map` (u64::MAX when empty): pruning before it frees
    /// nothing.
    earliest: u64,
}

/// The highest accepted nonce count per nonce, bounded.
#[derive(Debug)]
pub(crate) struct NonceCounts {
    inner: Mutex<Inner>,
    max: usize,
}

impl NonceCounts {
    pub(crate) fn new(max: usize) -> NonceCounts {
        NonceCounts {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                earliest: u64::MAX,
            }),
            max,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves the map consistent (every
        // update is a single insert/assign), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks `nc` for `nonce` (which must already be known valid and fresh) and records
    /// it when accepted. `expires` is when the nonce goes stale; `now` is unix seconds.
    pub(crate) fn check(&self, nonce: NonceId, nc: u32, expires: u64, now: u64) -> NcCheck {
        let mut inner = self.lock();
        if let Some(e) = inner.map.get_mut(&nonce) {
            if nc > e.last_nc {
                e.last_nc = nc;
                return NcCheck::Accepted;
            }
            return NcCheck::Replay;
        }
        if nc == 0 {
            // nc counts from 00000001 (RFC 7616 §3.4).
            return NcCheck::Replay;
        }
        if inner.map.len() >= self.max {
            if now > inner.earliest {
                inner.map.retain(|_, e| e.expires >= now);
                inner.earliest = inner
                    .map
                    .values()
                    .map(|e| e.expires)
                    .min()
                    .unwrap_or(u64::MAX);
            }
            if inner.map.len() >= self.max {
                return NcCheck::Full;
            }
        }
        inner.earliest = inner.earliest.min(expires);
        inner.map.insert(
            nonce,
            Entry {
                last_nc: nc,
                expires,
            },
        );
        NcCheck::Accepted
    }

    /// How many nonces are tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: u8) -> NonceId {
        [c; 32]
    }

    #[test]
    fn increasing_counts_accepted_replays_refused() {
        let t = NonceCounts::new(10);
        assert_eq!(t.check(id(b'n'), 1, 100, 0), NcCheck::Accepted);
        assert_eq!(t.check(id(b'n'), 1, 100, 0), NcCheck::Replay);
        assert_eq!(t.check(id(b'n'), 2, 100, 0), NcCheck::Accepted);
        assert_eq!(t.check(id(b'n'), 1, 100, 0), NcCheck::Replay);
        assert_eq!(
            t.check(id(b'n'), 5, 100, 0),
            NcCheck::Accepted,
            "gaps are fine"
        );
        assert_eq!(t.check(id(b'n'), 4, 100, 0), NcCheck::Replay);
        assert_eq!(t.check(id(b'm'), 1, 100, 0), NcCheck::Accepted, "per nonce");
        assert_eq!(t.check(id(b'k'), 0, 100, 0), NcCheck::Replay);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn bounded_with_pruning_of_expired() {
        let t = NonceCounts::new(2);
        assert_eq!(t.check(id(b'a'), 1, 10, 0), NcCheck::Accepted);
        assert_eq!(t.check(id(b'b'), 1, 20, 0), NcCheck::Accepted);
        assert_eq!(t.check(id(b'c'), 1, 30, 5), NcCheck::Full);
        // known nonces still work when full
        assert_eq!(t.check(id(b'a'), 2, 10, 5), NcCheck::Accepted);
        // "a" expired at 10: pruned, room for "c"
        assert_eq!(t.check(id(b'c'), 1, 30, 11), NcCheck::Accepted);
        assert_eq!(t.len(), 2);
        assert_eq!(t.check(id(b'd'), 1, 40, 12), NcCheck::Full);
        assert_eq!(t.check(id(b'd'), 1, 40, 31), NcCheck::Accepted);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn zero_capacity_is_always_full() {
        let t = NonceCounts::new(0);
        assert_eq!(t.check(id(b'a'), 1, 10, 0), NcCheck::Full);
    }
}
