//! Nonce-count tracking against replayed responses (RFC 7616 §3.4 `nc`, §5.5; RFC 3261
//! §22.4 leaves replay protection to the server).
//!
//! For every nonce that has produced a correct response we keep the highest nonce count
//! accepted and a hash of the request that used it. A response is accepted when its nc is
//! strictly greater than the last one for its nonce (phones reuse a nonce with nc
//! 00000002, 00000003, … on later requests). The same nc from the same request (same
//! branch, Call-ID and CSeq) is a retransmission, reported as such so that a stateless
//! registrar answers it again; any other reuse is a replay.
//!
//! The table is bounded without ever refusing a fresh nonce: entries are kept in
//! first-use order, and when the table is full the oldest is evicted and the *watermark*
//! rises to its issue time. An untracked nonce issued at or before the watermark may have
//! been used and evicted, so it is answered as stale (the client re-authenticates with a
//! fresh nonce, one round trip); an untracked nonce issued after it has never been used.
//! Under a flood the window of reusable nonces shrinks (1,000,000 entries hold 50 s of
//! 20,000 registrations/s); at ordinary rates it is the whole nonce lifetime. An entry
//! costs about 50 bytes: the nonce is identified by 8 bytes of its MAC, which nobody
//! without the server secret can choose.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NcCheck {
    /// A new nonce, or a higher count: accepted.
    Accepted,
    /// The count last accepted, from the same request again.
    Retransmission,
    /// A count already used by another request.
    Replay,
    /// Too old to tell: answer with a fresh challenge (`stale=true`).
    Stale,
}

/// What identifies a nonce in the table (8 bytes of its MAC).
pub(crate) type NonceId = u64;

#[derive(Debug, Clone, Copy)]
struct Entry {
    last_nc: u32,
    issued: u64,
    request: Option<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<NonceId, Entry>,
    order: VecDeque<NonceId>,
    watermark: u64,
}

#[derive(Debug)]
pub(crate) struct NonceCounts {
    inner: Mutex<Inner>,
    max: usize,
}

impl NonceCounts {
    pub(crate) fn new(max: usize) -> NonceCounts {
        NonceCounts {
            inner: Mutex::new(Inner::default()),
            max,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update below leaves the table consistent, so a poisoned lock (a panic
        // elsewhere while holding it) is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks count `nc` of the nonce `id` issued at `issued` (Unix seconds) and valid
    /// until `expires`, used by the request `request` (`None`: never a retransmission).
    pub(crate) fn check(
        &self,
        id: NonceId,
        nc: u32,
        issued: u64,
        request: Option<u64>,
        now: u64,
        lifetime: u64,
    ) -> NcCheck {
        let mut inner = self.lock();
        if let Some(e) = inner.map.get_mut(&id) {
            if nc > e.last_nc {
                e.last_nc = nc;
                e.request = request;
                return NcCheck::Accepted;
            }
            if nc == e.last_nc && request.is_some() && e.request == request {
                return NcCheck::Retransmission;
            }
            return NcCheck::Replay;
        }
        if nc == 0 {
            // nc counts from 00000001 (RFC 7616 §3.4).
            return NcCheck::Replay;
        }
        if issued <= inner.watermark || self.max == 0 {
            return NcCheck::Stale;
        }
        // Expired entries at the front go without raising the watermark: their nonces
        // are refused as stale by their age anyway.
        while let Some(front) = inner.order.front().copied() {
            let expired = match inner.map.get(&front) {
                Some(e) => e.issued.saturating_add(lifetime) < now,
                None => true,
            };
            if !expired {
                break;
            }
            inner.order.pop_front();
            inner.map.remove(&front);
        }
        while inner.map.len() >= self.max {
            let Some(front) = inner.order.pop_front() else {
                break;
            };
            if let Some(e) = inner.map.remove(&front) {
                inner.watermark = inner.watermark.max(e.issued);
            }
        }
        if issued <= inner.watermark {
            return NcCheck::Stale;
        }
        inner.map.insert(
            id,
            Entry {
                last_nc: nc,
                issued,
                request,
            },
        );
        inner.order.push_back(id);
        NcCheck::Accepted
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFE: u64 = 300;

    #[test]
    fn increasing_counts_accepted_replays_refused() {
        let t = NonceCounts::new(10);
        let c = |id, nc, req| t.check(id, nc, 100, req, 100, LIFE);
        assert_eq!(c(1, 1, None), NcCheck::Accepted);
        assert_eq!(c(1, 1, None), NcCheck::Replay);
        assert_eq!(c(1, 2, None), NcCheck::Accepted);
        assert_eq!(c(1, 1, None), NcCheck::Replay);
        assert_eq!(c(1, 5, None), NcCheck::Accepted, "gaps are fine");
        assert_eq!(c(1, 4, None), NcCheck::Replay);
        assert_eq!(c(2, 1, None), NcCheck::Accepted, "per nonce");
        assert_eq!(c(3, 0, None), NcCheck::Replay);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn the_same_request_again_is_a_retransmission() {
        let t = NonceCounts::new(10);
        let c = |nc, req| t.check(7, nc, 100, req, 100, LIFE);
        assert_eq!(c(1, Some(42)), NcCheck::Accepted);
        assert_eq!(c(1, Some(42)), NcCheck::Retransmission);
        assert_eq!(c(1, Some(43)), NcCheck::Replay, "another request, same nc");
        assert_eq!(c(2, Some(43)), NcCheck::Accepted);
        assert_eq!(c(1, Some(42)), NcCheck::Replay, "older count");
        assert_eq!(c(2, None), NcCheck::Replay);
    }

    #[test]
    fn full_table_evicts_oldest_and_raises_the_watermark() {
        let t = NonceCounts::new(2);
        assert_eq!(t.check(1, 1, 10, None, 20, LIFE), NcCheck::Accepted);
        assert_eq!(t.check(2, 1, 11, None, 20, LIFE), NcCheck::Accepted);
        // A third nonce evicts nonce 1 (issued at 10): watermark 10.
        assert_eq!(t.check(3, 1, 12, None, 20, LIFE), NcCheck::Accepted);
        assert_eq!(t.len(), 2);
        // Nonce 1 is no longer known and was issued at the watermark: stale, never a
        // replay accepted as new.
        assert_eq!(t.check(1, 1, 10, None, 21, LIFE), NcCheck::Stale);
        // An unused nonce issued after the watermark is fresh.
        assert_eq!(t.check(4, 1, 13, None, 21, LIFE), NcCheck::Accepted);
        // Tracked nonces keep their counts.
        assert_eq!(t.check(4, 1, 13, None, 21, LIFE), NcCheck::Replay);
    }

    #[test]
    fn expired_entries_make_room_without_raising_the_watermark() {
        let t = NonceCounts::new(2);
        assert_eq!(t.check(1, 1, 10, None, 10, 5), NcCheck::Accepted);
        assert_eq!(t.check(2, 1, 11, None, 11, 5), NcCheck::Accepted);
        // At 100 both expired: dropped, and an old-but-unused nonce issued at 9 is not
        // stale by the watermark (its age makes the caller refuse it anyway).
        assert_eq!(t.check(3, 1, 99, None, 100, 5), NcCheck::Accepted);
        assert_eq!(t.len(), 1);
        assert_eq!(t.check(4, 1, 9, None, 100, 5), NcCheck::Accepted);
    }

    #[test]
    fn zero_capacity_is_always_stale() {
        let t = NonceCounts::new(0);
        assert_eq!(t.check(1, 1, 10, None, 10, LIFE), NcCheck::Stale);
    }
}
