//! The rules of a connected call's mid-call requests (flows F5 and F11 of
//! `spec/call-flows.md`; RFC 3261 §14, RFC 3311 UPDATE, RFC 6086 INFO, RFC 3264 §8.4
//! hold): which requests are relayed to the other party, which are refused and with
//! what, when the relayed request's answer and ACK go back, when a failure ends the
//! call, and whether the call is on hold, and by whom.
//!
//! Rules:
//! - Once A has ACKed our 2xx (the call is connected), a re-INVITE, UPDATE or INFO from
//!   either party is relayed to the other ([`Command::Relay`]); the answer goes back to
//!   the sender ([`Command::Answer`]) whatever its status; the sender's ACK for a
//!   relayed 2xx goes to the other leg ([`Command::AckRelayed`]): at once when the
//!   re-INVITE carried the offer, with the sender's ACK (and its answer) for a late
//!   offer (a re-INVITE without SDP: the offer is in the 2xx, RFC 3261 §14.1).
//! - One offer at a time (RFC 3261 §14.2, RFC 3311 §5.2): while a re-INVITE or UPDATE
//!   is in flight between the parties, another from the other party is answered 491
//!   (glare: that party retries after a random wait, §14.1) and another from the same
//!   party 500 with Retry-After. Before the call is connected such requests get 491
//!   too (A's INVITE transaction is not over). INFO is never blocked.
//! - A relayed request that fails (a non-2xx, a 491 included) leaves the call as it
//!   was: the sender gets the status and the session is unchanged (§14.1). A relayed
//!   request that finds no dialog on the other side (481) or a 408 ends the call (the
//!   other party's dialog is gone, §12.2.1.2): BYE to both. A relayed request that got
//!   no answer at all (Timer B/F) or could not be sent is answered 504 and leaves the
//!   call as it was: the far party is not proven gone (its refreshes or its BYE tell).
//!   The switch's own answers are [`Refuse`] reasons, never bare statuses.
//! - A's or B's 2xx for a relayed re-INVITE not ACKed within 64·T1 ends the call
//!   ([`Event::AckTimeout`], §13.3.1.4).
//! - Hold: an accepted offer (a 2xx to a re-INVITE or UPDATE that carried one, or the
//!   offer of a late-offer re-INVITE's 2xx once its ACK came) sets whether its offerer
//!   holds the other party ([`Offer::Hold`]: `sendonly`, `inactive` or `c=0.0.0.0`) or
//!   not ([`Offer::Active`]: `sendrecv` or no direction, a resume). A failed offer
//!   changes nothing. The call is held while either party holds; the time it is held is
//!   the CDR's `held_s`.

use super::*;

/// Which mid-call request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A re-INVITE (RFC 3261 §14).
    Reinvite,
    /// UPDATE (RFC 3311).
    Update,
    /// INFO (RFC 6086).
    Info,
}

/// Why the switch answers a mid-call request itself ([`Command::Refuse`]); the root
/// crate maps each to its status and reason (`endpoint::Refusal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refuse {
    /// Another offer is in flight between the parties (glare, §14.2): 491.
    Glare,
    /// The same party's earlier offer is unanswered (§14.2): 500 with Retry-After.
    Pending,
    /// The call is not connected (an INFO before or after it): 481.
    NotConnected,
    /// The other party never answered the relayed request (Timer B/F): 504.
    Unanswered,
}

/// What a request's (or a 2xx's) SDP offers, as far as hold goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// No SDP.
    None,
    /// Media flowing (a resume).
    Active,
    /// The offerer holds the other party.
    Hold,
}

/// A relayed offer in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    from: LegId,
    kind: Kind,
    offer: Offer,
}

/// The mid-call state: made at the first mid-call request (a box: most calls never
/// have one).
#[derive(Debug, Clone, Default)]
pub(super) struct MidCall {
    /// The re-INVITE or UPDATE being relayed.
    in_flight: Option<InFlight>,
    /// A relayed re-INVITE's 2xx went to this leg: its ACK is awaited.
    awaiting_ack: Option<Awaiting>,
    /// Whether A and the B-leg each hold the other party.
    holding: [bool; 2],
    /// Since when the call is held, while it is.
    held_since: Option<SystemTime>,
    /// The time on hold before `held_since`.
    held: Duration,
    /// Each party's session clock (RFC 4028, `session.rs`): A, then the B-leg.
    pub(super) sessions: [Option<super::session::Clock>; 2],
}

/// The ACK awaited for a relayed re-INVITE's 2xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Awaiting {
    /// The leg the 2xx went to (the re-INVITE's sender).
    from: LegId,
    /// A late offer: the ACK carries the answer and goes on to the other leg (for an
    /// early offer the other leg was ACKed at the 2xx).
    late: bool,
    /// The late offer (its offerer, hold or not), applied once the ACK answers it.
    commit: Option<(LegId, Offer)>,
}

impl MidCall {
    /// A re-INVITE or UPDATE is in flight between the parties, or a relayed
    /// re-INVITE's ACK is awaited.
    pub(super) fn offer_in_flight(&self) -> bool {
        self.in_flight.is_some() || self.awaiting_ack.is_some()
    }

    fn is_held(&self) -> bool {
        self.holding.iter().any(|h| *h)
    }

    fn set_holding(&mut self, side: usize, on: bool, now: SystemTime) {
        let was = self.is_held();
        if let Some(h) = self.holding.get_mut(side) {
            *h = on;
        }
        match (was, self.is_held()) {
            (false, true) => self.held_since = Some(now),
            (true, false) => self.stop_clock(now),
            _ => {}
        }
    }

    fn stop_clock(&mut self, now: SystemTime) {
        if let Some(since) = self.held_since.take() {
            self.held += now.duration_since(since).unwrap_or_default();
        }
    }

    /// The time on hold until `now`.
    pub(super) fn held_until(&self, now: SystemTime) -> Duration {
        self.held
            + self
                .held_since
                .map(|s| now.duration_since(s).unwrap_or_default())
                .unwrap_or_default()
    }
}

impl CallMachine {
    /// The other party of `leg` in the connected call.
    pub(super) fn peer_of(&self, leg: LegId) -> Option<LegId> {
        let w = self.winner?;
        if leg == LegId::A {
            Some(w)
        } else if leg == w {
            Some(LegId::A)
        } else {
            None
        }
    }

    fn side(&self, leg: LegId) -> usize {
        usize::from(leg != LegId::A)
    }

    pub(super) fn mid(&self) -> Option<&MidCall> {
        self.extra.as_ref().and_then(|e| e.mid.as_ref())
    }

    pub(super) fn mid_mut(&mut self) -> Option<&mut MidCall> {
        self.extra.as_mut().and_then(|e| e.mid.as_mut())
    }

    /// Who holds whom: (A holds B, B holds A).
    pub fn holding(&self) -> (bool, bool) {
        self.mid()
            .map_or((false, false), |m| (m.holding[0], m.holding[1]))
    }

    /// The time the call spent on hold until `now`.
    pub fn held(&self, now: SystemTime) -> Duration {
        self.mid().map_or(Duration::ZERO, |m| m.held_until(now))
    }

    /// Stops the hold clock (the call is ending).
    pub(super) fn stop_hold_clock(&mut self, now: SystemTime) {
        if let Some(m) = self.mid_mut() {
            m.stop_clock(now);
        }
    }

    pub(super) fn on_modify(&mut self, leg: LegId, kind: Kind, offer: Offer) {
        let Some(to) = self.peer_of(leg).filter(|_| self.phase == Phase::Connected) else {
            // Not (or no longer) a connected call: an offer cannot be taken now.
            self.out.push(Command::Refuse {
                leg,
                kind,
                why: if kind == Kind::Info {
                    Refuse::NotConnected
                } else {
                    Refuse::Glare
                },
            });
            return;
        };
        let mid = self
            .extra
            .get_or_insert_default()
            .mid
            .get_or_insert_default();
        if kind != Kind::Info {
            if let Some(f) = mid.in_flight {
                // §14.2: the other party's crossing offer loses (491); the same party's
                // second one is 500 with Retry-After.
                let why = if f.from == leg {
                    Refuse::Pending
                } else {
                    Refuse::Glare
                };
                self.out.push(Command::Refuse { leg, kind, why });
                return;
            }
            if mid.awaiting_ack.is_some() {
                self.out.push(Command::Refuse {
                    leg,
                    kind,
                    why: Refuse::Glare,
                });
                return;
            }
            mid.in_flight = Some(InFlight {
                from: leg,
                kind,
                offer,
            });
        }
        self.out.push(Command::Relay {
            from: leg,
            to,
            kind,
        });
    }

    /// The final answer of the relayed request on `leg` (the far side).
    pub(super) fn on_relay_answer(
        &mut self,
        leg: LegId,
        kind: Kind,
        status: u16,
        offer: Offer,
        now: SystemTime,
    ) {
        let Some(from) = self.peer_of(leg) else {
            return;
        };
        self.out.push(Command::Answer { leg: from, kind });
        if kind == Kind::Info {
            if matches!(status, 481 | 408) {
                self.release(from, HangupBy::Switch, true, now);
            }
            return;
        }
        let side = self.side(from);
        let mid = self
            .extra
            .get_or_insert_default()
            .mid
            .get_or_insert_default();
        let flight = mid.in_flight.take();
        if (200..300).contains(&status) {
            let sent = flight.map_or(Offer::None, |f| f.offer);
            if kind == Kind::Reinvite {
                if sent == Offer::None {
                    // Late offer: the 2xx offers; the sender's ACK answers it.
                    mid.awaiting_ack = Some(Awaiting {
                        from,
                        late: true,
                        commit: (offer != Offer::None).then_some((leg, offer)),
                    });
                } else {
                    self.out.push(Command::AckRelayed { leg });
                    mid.awaiting_ack = Some(Awaiting {
                        from,
                        late: false,
                        commit: None,
                    });
                    mid.set_holding(side, sent == Offer::Hold, now);
                }
            } else if sent != Offer::None {
                mid.set_holding(side, sent == Offer::Hold, now);
            }
        } else if matches!(status, 481 | 408) {
            self.release(from, HangupBy::Switch, true, now);
        }
    }

    /// The relayed request on `leg` got no answer (Timer B/F) or could not be sent.
    pub(super) fn on_relay_failed(&mut self, leg: LegId, kind: Kind) {
        let Some(from) = self.peer_of(leg) else {
            return;
        };
        if kind != Kind::Info {
            if let Some(m) = self.mid_mut() {
                m.in_flight = None;
            }
        }
        self.out.push(Command::Refuse {
            leg: from,
            kind,
            why: Refuse::Unanswered,
        });
    }

    /// `leg`'s ACK for the relayed 2xx it got.
    pub(super) fn on_relay_ack(&mut self, leg: LegId, now: SystemTime) {
        let Some(m) = self.mid_mut() else {
            return;
        };
        let Some(a) = m.awaiting_ack.filter(|a| a.from == leg) else {
            return;
        };
        m.awaiting_ack = None;
        if let Some((offerer, offer)) = a.commit {
            let side = usize::from(offerer != LegId::A);
            m.set_holding(side, offer == Offer::Hold, now);
        }
        if a.late {
            // The answer is in this ACK: the far leg's ACK carries it.
            if let Some(to) = self.peer_of(leg) {
                self.out.push(Command::AckRelayed { leg: to });
            }
        }
    }

    /// Our 2xx for a relayed re-INVITE went unacknowledged for 64·T1 (§13.3.1.4).
    pub(super) fn on_ack_timeout(&mut self, leg: LegId, now: SystemTime) {
        if let Some(m) = self.mid_mut() {
            m.awaiting_ack = None;
        }
        if self.phase == Phase::Connected {
            self.release(leg, HangupBy::Switch, true, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::call::testing::*;

    fn modify(leg: LegId, offer: Offer) -> Event {
        Event::Modify {
            leg,
            kind: Kind::Reinvite,
            offer,
        }
    }

    fn answered(leg: LegId, status: u16, offer: Offer) -> Event {
        Event::RelayAnswered {
            leg,
            kind: Kind::Reinvite,
            status,
            offer,
        }
    }

    #[test]
    fn an_early_offer_is_relayed_answered_and_the_far_leg_acked_at_the_2xx() {
        let mut m = connected();
        let c = m.handle(modify(LegId::A, Offer::Active), at(1));
        assert_eq!(
            c,
            [Command::Relay {
                from: LegId::A,
                to: B,
                kind: Kind::Reinvite
            }]
        );
        let c = m.handle(answered(B, 200, Offer::Active), at(1));
        assert!(c.contains(&Command::Answer {
            leg: LegId::A,
            kind: Kind::Reinvite,
        }));
        assert!(c.contains(&Command::AckRelayed { leg: B }));
        // A's ACK is absorbed: B has its ACK already.
        assert!(m
            .handle(Event::RelayAck { leg: LegId::A }, at(1))
            .is_empty());
    }

    #[test]
    fn a_late_offer_acks_the_far_leg_with_the_senders_ack() {
        let mut m = connected();
        m.handle(modify(B, Offer::None), at(1));
        let c = m.handle(
            Event::RelayAnswered {
                leg: LegId::A,
                kind: Kind::Reinvite,
                status: 200,
                offer: Offer::Hold,
            },
            at(1),
        );
        assert!(!c.contains(&Command::AckRelayed { leg: LegId::A }));
        let c = m.handle(Event::RelayAck { leg: B }, at(2));
        assert_eq!(c, [Command::AckRelayed { leg: LegId::A }]);
        // The 2xx's offer was A's: A holds B.
        assert_eq!(m.holding(), (true, false));
    }

    #[test]
    fn a_crossing_offer_gets_491_and_a_second_one_of_the_same_party_500() {
        let mut m = connected();
        m.handle(modify(LegId::A, Offer::Hold), at(1));
        let refuse = |leg, why| Command::Refuse {
            leg,
            kind: Kind::Reinvite,
            why,
        };
        assert_eq!(
            m.handle(modify(B, Offer::Hold), at(1)),
            [refuse(B, Refuse::Glare)]
        );
        assert_eq!(
            m.handle(modify(LegId::A, Offer::Hold), at(1)),
            [refuse(LegId::A, Refuse::Pending)]
        );
        // INFO is never blocked.
        let info = Event::Modify {
            leg: B,
            kind: Kind::Info,
            offer: Offer::None,
        };
        assert!(matches!(m.handle(info, at(1))[..], [Command::Relay { .. }]));
        // The first completes; then B's retry goes through.
        m.handle(answered(B, 200, Offer::Active), at(1));
        m.handle(Event::RelayAck { leg: LegId::A }, at(1));
        assert!(matches!(
            m.handle(modify(B, Offer::Active), at(2))[..],
            [Command::Relay { .. }]
        ));
    }

    #[test]
    fn a_failed_offer_changes_nothing_and_481_ends_the_call() {
        let mut m = connected();
        m.handle(modify(LegId::A, Offer::Hold), at(1));
        m.handle(answered(B, 488, Offer::None), at(1));
        assert_eq!(m.holding(), (false, false));
        assert_eq!(m.phase, Phase::Connected);
        m.handle(modify(LegId::A, Offer::Hold), at(2));
        let c = m.handle(answered(B, 481, Offer::None), at(2));
        assert!(c.contains(&Command::Bye { leg: LegId::A }));
        assert!(c.contains(&Command::Bye { leg: B }));
        assert_eq!(m.outcome().map(|o| o.hangup_by), Some(HangupBy::Switch));
    }

    #[test]
    fn the_hold_clock_counts_while_either_party_holds() {
        let mut m = connected();
        m.handle(modify(B, Offer::Hold), at(10));
        m.handle(answered(LegId::A, 200, Offer::Active), at(10));
        m.handle(Event::RelayAck { leg: B }, at(10));
        assert_eq!(m.holding(), (false, true));
        m.handle(modify(B, Offer::Active), at(25));
        m.handle(answered(LegId::A, 200, Offer::Active), at(25));
        m.handle(Event::RelayAck { leg: B }, at(25));
        assert_eq!(m.holding(), (false, false));
        m.handle(modify(LegId::A, Offer::Hold), at(30));
        m.handle(answered(B, 200, Offer::Active), at(30));
        let c = m.handle(Event::Bye { leg: LegId::A }, at(34));
        assert!(c.contains(&Command::AnswerBye { leg: LegId::A }));
        let c = m.handle(Event::ByeDone { leg: B }, at(35));
        let out = super::super::tests::finish_of(&c);
        assert_eq!(out.map(|o| o.held_ms), Some((15 + 4) * 1000));
    }
}
