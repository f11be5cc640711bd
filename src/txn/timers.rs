//! Transaction timers by RFC letter (RFC 3261 §17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2,
//! Table 4 in §A; RFC 6026 §8.4 and §8.7 for Timers L and M).
//!
//! Every value here derives from the three configured constants T1 (RTT estimate), T2
//! (the cap on non-INVITE and response retransmit intervals) and T4 (the maximum time a
//! message stays in the network). Each transaction owns one [`TimerTable`], its armed
//! timers with their deadlines; the layer keeps one ordered set of
//! `(deadline, TxId, Timer)` over all tables.

use smallvec::SmallVec;
use std::time::{Duration, Instant};

/// The protocol constants of RFC 3261 §17.1.1.1 and Table 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// T1, the round-trip estimate: 500 ms by default.
    pub t1: Duration,
    /// T2, the maximum retransmit interval for non-INVITE requests and INVITE
    /// responses: 4 s by default.
    pub t2: Duration,
    /// T4, the maximum duration a message remains in the network: 5 s by default.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> TimerConfig {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64·T1: Timers B, F, H, J (unreliable), L and M.
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }

    /// The first interval of a retransmission timer (A, E, G): T1, or `None` over a
    /// reliable transport, where no retransmission timer runs.
    pub fn retransmit_start(&self, reliable: bool) -> Option<Duration> {
        (!reliable).then_some(self.t1)
    }

    /// The interval after `prev` for Timer A: doubled, without a cap (§17.1.1.2).
    pub fn next_a(&self, prev: Duration) -> Duration {
        prev * 2
    }

    /// The interval after `prev` for Timers E (in Trying) and G: doubled, capped at T2
    /// (§17.1.2.2, §17.2.1).
    pub fn next_capped(&self, prev: Duration) -> Duration {
        (prev * 2).min(self.t2)
    }

    /// Timer D: at least 32 s on an unreliable transport (max(32 s, 64·T1)), zero on a
    /// reliable one (§17.1.1.2).
    pub fn d(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t1x64().max(Duration::from_secs(32))
        }
    }

    /// Timer I (§17.2.1) and Timer K (§17.1.2.2): T4 unreliable, zero reliable.
    pub fn t4_or_zero(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t4
        }
    }

    /// Timer J: 64·T1 unreliable, zero reliable (§17.2.2).
    pub fn j(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t1x64()
        }
    }
}

/// A transaction timer, named by its RFC letter. Timer C belongs to proxies (§16.6) and
/// is not part of the transaction layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// INVITE client: request retransmit, T1 doubling, unreliable only (§17.1.1.2).
    A,
    /// INVITE client: transaction timeout, 64·T1 (§17.1.1.2).
    B,
    /// INVITE client: wait for response retransmissions in Completed (§17.1.1.2).
    D,
    /// Non-INVITE client: request retransmit, T1 doubling capped at T2 (§17.1.2.2).
    E,
    /// Non-INVITE client: transaction timeout, 64·T1 (§17.1.2.2).
    F,
    /// INVITE server: final response retransmit, T1 doubling capped at T2 (§17.2.1).
    G,
    /// INVITE server: wait for ACK, 64·T1 (§17.2.1).
    H,
    /// INVITE server: wait for ACK retransmissions in Confirmed, T4 (§17.2.1).
    I,
    /// Non-INVITE server: wait for request retransmissions, 64·T1 (§17.2.2).
    J,
    /// Non-INVITE client: wait for response retransmissions, T4 (§17.1.2.2).
    K,
    /// INVITE server: wait in Accepted for INVITE retransmissions, 64·T1 (RFC 6026 §8.7).
    L,
    /// INVITE client: wait in Accepted for 2xx retransmissions, 64·T1 (RFC 6026 §8.4).
    M,
}

/// One transaction's timers: the armed ones, each with its deadline.
///
/// A transaction arms at most two or three at once (A and B, E and F, G and H, then one
/// of D, I, J, K, L, M), so the armed set is kept inline, not as a slot per letter: a
/// slot per letter was 12 × 16 bytes in every transaction, most of a lingering
/// Accepted-state machine's size (RFC 6026 keeps one per call for 64·T1). More than
/// three armed at once still works (it spills to the heap).
#[derive(Debug, Clone, Default)]
pub struct TimerTable {
    armed: SmallVec<[(Instant, Timer); 3]>,
}

impl TimerTable {
    /// Arms `timer` to fire at `at`, replacing any earlier deadline.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        match self.armed.iter_mut().find(|(_, t)| *t == timer) {
            Some(slot) => slot.0 = at,
            None => self.armed.push((at, timer)),
        }
    }

    /// Stops `timer`.
    pub fn stop(&mut self, timer: Timer) {
        self.armed.retain(|(_, t)| *t != timer);
    }

    /// Stops every timer.
    pub fn stop_all(&mut self) {
        self.armed.clear();
    }

    /// The deadline of `timer`, if armed.
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.armed
            .iter()
            .find(|(_, t)| *t == timer)
            .map(|&(at, _)| at)
    }

    /// The earliest armed deadline and its timer.
    pub fn next_timeout(&self) -> Option<(Instant, Timer)> {
        self.armed.iter().copied().min()
    }

    /// Every armed timer and its deadline, in no particular order.
    pub fn armed(&self) -> impl Iterator<Item = (Instant, Timer)> + '_ {
        self.armed.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_config_defaults_are_rfc3261_table_4() {
        let c = TimerConfig::default();
        assert_eq!(c.t1, Duration::from_millis(500));
        assert_eq!(c.t2, Duration::from_secs(4));
        assert_eq!(c.t4, Duration::from_secs(5));
        assert_eq!(c.t1x64(), Duration::from_secs(32));
    }

    #[test]
    fn timer_d_is_at_least_32_seconds_on_udp() {
        let fast = TimerConfig {
            t1: Duration::from_millis(100),
            ..TimerConfig::default()
        };
        assert_eq!(fast.d(false), Duration::from_secs(32));
        assert_eq!(fast.d(true), Duration::ZERO);
        let slow = TimerConfig {
            t1: Duration::from_secs(1),
            ..TimerConfig::default()
        };
        assert_eq!(slow.d(false), Duration::from_secs(64));
    }

    #[test]
    fn timer_table_next_timeout_is_earliest_slot() {
        let base = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.next_timeout(), None);
        t.set(Timer::B, base + Duration::from_secs(32));
        t.set(Timer::A, base + Duration::from_millis(500));
        assert_eq!(
            t.next_timeout(),
            Some((base + Duration::from_millis(500), Timer::A))
        );
        t.stop(Timer::A);
        assert_eq!(
            t.next_timeout(),
            Some((base + Duration::from_secs(32), Timer::B))
        );
        t.stop_all();
        assert_eq!(t.next_timeout(), None);
    }
}
