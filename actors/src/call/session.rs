//! The call's rules for session timers (RFC 4028 §10), per party: when the switch
//! refreshes a party's session, and when a session that is not refreshed ends the call.
//! What each leg negotiated (interval, refresher) is SIP and is decided by the root
//! crate (`src/call/session_timer.rs`); the machine only keeps each party's clock.
//!
//! Rules:
//! - A leg's dialog reports every refresh of its session ([`Event::SessionRefreshed`]):
//!   the 2xx of the INVITE that set it up, and every later 2xx to a re-INVITE or
//!   UPDATE on it, whichever side sent it (a relayed re-INVITE that succeeds refreshes
//!   both legs: its 2xx crosses both dialogs). Each refresh starts that party's clock
//!   again ([`CallTimer::Session`]); a leg that is not a party of the call (a forked
//!   B-leg that lost) keeps none.
//! - Where the switch is the refresher, it refreshes at half the interval
//!   ([`Command::Refresh`]), unless an offer is in flight between the parties (its 2xx
//!   refreshes).
//! - The session ends `SE - min(32 s, SE/3)` after its last refresh when no new one
//!   came (the party stopped refreshing, or left the switch's refresh unanswered), or
//!   at once when the switch's refresh got 408 or 481 or no answer at all
//!   ([`Event::RefreshFailed`]): BYE to both parties, `hangup_by = switch`.

use super::*;

/// Who refreshes a leg's session, as the switch sees the leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refresher {
    /// The switch sends the refreshes.
    Switch,
    /// The leg's party (the phone) sends them.
    Peer,
}

/// The session interval a leg's dialog runs with, and who refreshes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Session {
    /// The session interval, seconds.
    pub interval: u32,
    /// Who refreshes.
    pub refresher: Refresher,
}

/// What a party's session clock waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The switch's refresh (half the interval after the last refresh).
    Refresh,
    /// The end of the session (`SE - min(32, SE/3)` after the last refresh).
    Expiry,
}

/// A party's session clock, started at every refresh (§10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// The session it keeps.
    pub session: Session,
    /// What its current wait is for.
    pub due: Due,
}

/// When the refresher refreshes: half the interval (§10's recommendation).
pub fn refresh_after(interval: u32) -> Duration {
    Duration::from_secs(u64::from(interval)) / 2
}

/// When the session is given up: 32 s or a third of the interval, whichever is less,
/// before it would expire (§10).
pub fn expiry_after(interval: u32) -> Duration {
    let se = Duration::from_secs(u64::from(interval));
    se - (se / 3).min(Duration::from_secs(32))
}

impl Clock {
    /// The session was just negotiated or refreshed: the clock, and its first wait.
    pub fn start(session: Session) -> (Clock, Duration) {
        match session.refresher {
            Refresher::Switch => (
                Clock {
                    session,
                    due: Due::Refresh,
                },
                refresh_after(session.interval),
            ),
            Refresher::Peer => (
                Clock {
                    session,
                    due: Due::Expiry,
                },
                expiry_after(session.interval),
            ),
        }
    }

    /// The wait is over. At [`Due::Refresh`] the switch refreshes now and waits this
    /// long for the 2xx; at [`Due::Expiry`] (`None`) the session is over.
    pub fn fire(&mut self) -> Option<Duration> {
        match self.due {
            Due::Refresh => {
                self.due = Due::Expiry;
                let i = self.session.interval;
                Some(expiry_after(i).saturating_sub(refresh_after(i)))
            }
            Due::Expiry => None,
        }
    }
}

impl CallMachine {
    /// Whether `leg` is a party of a call that is (being) connected.
    fn session_party(&self, leg: LegId) -> bool {
        matches!(self.phase, Phase::Answered | Phase::Connected) && self.peer_of(leg).is_some()
    }

    /// `leg`'s session was set up or refreshed.
    pub(super) fn on_session_refreshed(&mut self, leg: LegId, session: Session) {
        if !self.session_party(leg) {
            return;
        }
        let side = usize::from(leg != LegId::A);
        let (clock, wait) = Clock::start(session);
        let mid = self
            .extra
            .get_or_insert_default()
            .mid
            .get_or_insert_default();
        if let Some(c) = mid.sessions.get_mut(side) {
            *c = Some(clock);
        }
        self.out
            .push(Command::StartTimer(CallTimer::Session(leg), wait));
    }

    /// `leg`'s session clock ran out.
    pub(super) fn on_session_due(&mut self, leg: LegId, now: SystemTime) {
        if !self.session_party(leg) {
            return;
        }
        let side = usize::from(leg != LegId::A);
        let Some(mid) = self.mid_mut() else {
            return;
        };
        let Some(clock) = mid.sessions.get_mut(side).and_then(Option::as_mut) else {
            return;
        };
        match clock.fire() {
            Some(wait) => {
                let interval = clock.session.interval;
                let busy = mid.offer_in_flight();
                if !busy && self.phase == Phase::Connected {
                    self.out.push(Command::Refresh { leg, interval });
                }
                self.out
                    .push(Command::StartTimer(CallTimer::Session(leg), wait));
            }
            None => self.release(leg, HangupBy::Switch, true, now),
        }
    }

    /// The switch's refresh on `leg` got 408 or 481, or no answer (RFC 4028 §10).
    pub(super) fn on_refresh_failed(&mut self, leg: LegId, now: SystemTime) {
        if self.phase == Phase::Connected && self.peer_of(leg).is_some() {
            self.release(leg, HangupBy::Switch, true, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::call::testing::*;

    fn refreshed(leg: LegId, interval: u32, refresher: Refresher) -> Event {
        Event::SessionRefreshed {
            leg,
            session: Session {
                interval,
                refresher,
            },
        }
    }

    fn timer(c: &[Command], leg: LegId) -> Option<Duration> {
        c.iter().find_map(|c| match c {
            Command::StartTimer(CallTimer::Session(l), d) if *l == leg => Some(*d),
            _ => None,
        })
    }

    #[test]
    fn the_clock_refreshes_at_half_and_gives_up_before_the_expiry() {
        let (mut c, first) = Clock::start(Session {
            interval: 1800,
            refresher: Refresher::Switch,
        });
        assert_eq!(first, Duration::from_secs(900));
        let wait = c.fire().expect("a refresh, then the wait for its 2xx");
        assert_eq!(first + wait, Duration::from_secs(1800 - 32));
        assert_eq!(c.fire(), None, "no 2xx: the session is over");
        let (mut c, first) = Clock::start(Session {
            interval: 90,
            refresher: Refresher::Peer,
        });
        assert_eq!((c.due, first), (Due::Expiry, Duration::from_secs(60)));
        assert_eq!(c.fire(), None);
        // Short test intervals keep the order: refresh, then give up, before SE.
        for se in 1..=200 {
            let (r, e) = (refresh_after(se), expiry_after(se));
            assert!(r < e && e < Duration::from_secs(u64::from(se)), "{se}");
        }
    }

    /// Virtual time: the switch refreshes B at SE/2, each 2xx starts the clock again,
    /// and the call runs on for as long as the refreshes are answered.
    #[test]
    fn the_switch_refreshes_its_party_and_each_2xx_starts_the_clock_again() {
        let mut m = connected();
        let c = m.handle(refreshed(B, 90, Refresher::Switch), at(0));
        assert_eq!(timer(&c, B), Some(Duration::from_secs(45)));
        let mut t = 0;
        for _ in 0..100 {
            t += 45;
            let c = m.handle(Event::Timer(CallTimer::Session(B)), at(t));
            assert!(c.contains(&Command::Refresh {
                leg: B,
                interval: 90
            }));
            assert_eq!(
                timer(&c, B),
                Some(Duration::from_secs(15)),
                "the 2xx's wait"
            );
            // Its 2xx, a second later, starts the clock again.
            t += 1;
            let c = m.handle(refreshed(B, 90, Refresher::Switch), at(t));
            assert_eq!(timer(&c, B), Some(Duration::from_secs(45)));
        }
        assert_eq!(m.phase, Phase::Connected);
    }

    #[test]
    fn a_party_that_stops_refreshing_ends_the_call_before_its_session_expires() {
        let mut m = connected();
        let c = m.handle(refreshed(LegId::A, 90, Refresher::Peer), at(0));
        assert_eq!(timer(&c, LegId::A), Some(Duration::from_secs(60)));
        // A refreshes once (its re-INVITE's 2xx), then goes silent.
        m.handle(refreshed(LegId::A, 90, Refresher::Peer), at(40));
        let c = m.handle(Event::Timer(CallTimer::Session(LegId::A)), at(100));
        assert!(c.contains(&Command::Bye { leg: LegId::A }));
        assert!(c.contains(&Command::Bye { leg: B }));
        assert_eq!(m.outcome().map(|o| o.hangup_by), Some(HangupBy::Switch));
    }

    #[test]
    fn an_unanswered_refresh_ends_the_call_and_a_408_or_481_at_once() {
        let mut m = connected();
        m.handle(refreshed(B, 90, Refresher::Switch), at(0));
        m.handle(Event::Timer(CallTimer::Session(B)), at(45));
        // No 2xx within 15 s more.
        let c = m.handle(Event::Timer(CallTimer::Session(B)), at(60));
        assert!(
            c.contains(&Command::Bye { leg: B }) && c.contains(&Command::Bye { leg: LegId::A })
        );
        let mut m = connected();
        m.handle(refreshed(B, 90, Refresher::Switch), at(0));
        m.handle(Event::Timer(CallTimer::Session(B)), at(45));
        let c = m.handle(Event::RefreshFailed { leg: B }, at(46));
        assert!(
            c.contains(&Command::Bye { leg: B }) && c.contains(&Command::Bye { leg: LegId::A })
        );
        assert_eq!(m.outcome().map(|o| o.hangup_by), Some(HangupBy::Switch));
    }

    #[test]
    fn no_refresh_crosses_an_offer_in_flight_and_a_losing_leg_keeps_no_clock() {
        let mut m = connected();
        m.handle(refreshed(B, 90, Refresher::Switch), at(0));
        m.handle(
            Event::Modify {
                leg: LegId::A,
                kind: Kind::Reinvite,
                offer: Offer::Active,
            },
            at(44),
        );
        let c = m.handle(Event::Timer(CallTimer::Session(B)), at(45));
        assert!(
            !c.iter().any(|c| matches!(c, Command::Refresh { .. })),
            "{c:?}"
        );
        assert_eq!(timer(&c, B), Some(Duration::from_secs(15)));
        // A forked leg that lost (LegId 2 of a one-target call is no party).
        assert!(m
            .handle(refreshed(LegId(2), 90, Refresher::Switch), at(46))
            .is_empty());
    }
}
