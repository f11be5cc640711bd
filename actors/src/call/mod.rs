//! The pure rules of one call through the B2BUA: event in, commands out (flows F3, F4,
//! F6, F7, F8 of `spec/call-flows.md`; RFC 3261 §13–§16 as a B2BUA applies them).
//!
//! A [`CallMachine`] knows legs, not SIP: the A-leg (the caller; the switch is its UAS)
//! and one B-leg per callee binding (the switch is their UAC), forked in parallel. The
//! root crate turns SIP into [`Event`]s (a 180 on a B-leg's INVITE transaction becomes
//! [`Event::Provisional`]) and [`Command`]s into SIP (`InviteB` becomes a new INVITE with
//! its own Call-ID, tags, CSeq and branch, carrying the A-leg's SDP byte for byte). The
//! CallController actor only executes the commands. Unit tests drive the flows here.
//!
//! Rules:
//! - Start: INVITE every target in parallel, arm the ring timer.
//! - A provisional from any B-leg is relayed to A (183 with its SDP; the first 180 once).
//! - The first 2xx wins: relayed to A with its SDP; every other B-leg gets CANCEL while
//!   it rings and BYE if its own 2xx arrives later (RFC 3261 §16.7 step 10 for a B2BUA).
//!   The winner's 2xx is ACKed at once when A's INVITE carried the offer; with a late
//!   offer (no SDP from A) it is ACKed with A's ACK, which carries the answer.
//! - Every B-leg failed with a final response: A gets the best one (§16.7 step 6: a 6xx,
//!   else 486 busy, else the lowest class); every non-2xx is ACKed hop by hop by the
//!   transaction layer, not here.
//! - CANCEL from A before the answer: A gets 487, every ringing B-leg gets CANCEL (F7).
//! - Ring timer: every ringing B-leg gets CANCEL, A gets 480 (F8; `sip.no_answer_timeout_s`).
//!   A B-leg that never answered anything (Timer B) or could not be reached counts as a
//!   final 408 or 503 for it.
//! - Forwarding (F9, F10; [`forward`] has the chain rules): with the callee's
//!   `forward_busy`, a 486 from every binding of the callee being rung asks for a C-leg
//!   ([`Command::Forward`]) instead of relaying the 486; with `forward_no_answer`, the
//!   callee's ring timer CANCELs every ringing leg and asks for one. The controller
//!   answers with [`Event::Forwarded`] (A gets 181, the new legs are INVITEd, the ring
//!   timer is re-armed with the new callee's time) or [`Event::ForwardFailed`] (A gets
//!   that status). Only the legs of the callee being rung count for the outcome; a
//!   cancelled leg of the one before still settles before the call finishes.
//! - BYE from either side when connected: answered 200 and relayed to the other (F4).
//! - A never ACKs our 2xx (64·T1): BYE to both.
//! - The call ends (its CDR is written, then it counts as ended) once A has its final
//!   non-2xx and every B-leg is settled, or after the BYEs of a connected call.
//! - Session timers (RFC 4028, `session.rs`): each party's session is refreshed by its
//!   refresher (the switch at half the interval where the phone cannot); one not
//!   refreshed in time ends the call: BYE to both, hung up by the switch.

mod midcall;
mod session;
#[cfg(test)]
mod testing;

pub use midcall::{Kind, Offer, Refuse};
pub use session::{expiry_after, refresh_after, Clock, Due, Refresher, Session};
use std::time::{Duration, SystemTime};

pub mod forward;

pub use crate::billing::ForwardReason;

/// A leg of the call: 0 is the A-leg, B-legs count from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId(pub u32);

impl LegId {
    /// The caller's leg.
    pub const A: LegId = LegId(0);
}

/// A session description, opaque to the machine (relayed byte for byte).
pub type Sdp = Vec<u8>;

/// Why a B-leg failed without a final response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegFailure {
    /// Timer B: nothing answered the INVITE (counts as 408).
    Timeout,
    /// The transport could not reach it: TCP connect refused, ICMP (counts as 503).
    Unreachable,
}

/// The machine's timers, armed and cancelled by commands, fired as events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallTimer {
    /// The callee's ring time (`no_answer_timeout_s`).
    Ring,
    /// How long A may take to ACK our 2xx (64·T1).
    AckWait,
    /// How long a BYE we sent may go unanswered before the call ends anyway.
    ByeWait,
    /// A party's session clock (RFC 4028, `session.rs`): the switch's refresh, or the
    /// session's end.
    Session(LegId),
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The A-leg INVITE was authenticated and routed to `targets` bindings.
    Start {
        /// How many B-legs to fork to (≥ 1).
        targets: u32,
        /// The A-leg's offer, if its INVITE carried one.
        offer: Option<Sdp>,
    },
    /// A 1xx (other than 100) on a B-leg's INVITE.
    Provisional {
        /// The B-leg.
        leg: LegId,
        /// 180, 181, 182, 183.
        status: u16,
        /// Its SDP (an early answer).
        sdp: Option<Sdp>,
    },
    /// A final response on a B-leg's INVITE (a 2xx may repeat: retransmission or fork).
    Final {
        /// The B-leg.
        leg: LegId,
        /// The status.
        status: u16,
        /// Its SDP.
        sdp: Option<Sdp>,
    },
    /// A B-leg's INVITE failed without a final response.
    LegFailed {
        /// The B-leg.
        leg: LegId,
        /// Why.
        why: LegFailure,
    },
    /// A's ACK for our 2xx (with the answer for a late offer).
    AckFromA {
        /// Its SDP.
        sdp: Option<Sdp>,
    },
    /// CANCEL from A (already answered 200 by the root crate, §9.2).
    CancelFromA,
    /// BYE on a leg's dialog.
    Bye {
        /// Which leg sent it.
        leg: LegId,
    },
    /// The answer to a BYE we sent on `leg` (any final, or its timeout).
    ByeDone {
        /// The leg.
        leg: LegId,
    },
    /// A timer fired.
    Timer(CallTimer),
    /// The controller answered [`Command::Forward`] with `targets` new B-legs (numbered
    /// after the existing ones), ringing a callee with `rules`.
    Forwarded {
        /// How many B-legs to fork to (≥ 1).
        targets: u32,
        /// The new callee's ring time and forwarding.
        rules: CalleeRules,
    },
    /// The controller could not forward (480 target not registered, 482 loop, 483 too
    /// many hops, 486 target busy): A gets `status`.
    ForwardFailed {
        /// The final status for A.
        status: u16,
    },
    /// A re-INVITE, UPDATE or INFO from `leg`'s party, with what its SDP offers.
    Modify {
        /// The sender's leg.
        leg: LegId,
        /// Which request.
        kind: Kind,
        /// Its offer.
        offer: Offer,
    },
    /// The final answer to the mid-call request relayed on `leg`, with what its SDP
    /// offers (a late offer's 2xx).
    RelayAnswered {
        /// The leg it was relayed on.
        leg: LegId,
        /// Which request.
        kind: Kind,
        /// Its status.
        status: u16,
        /// Its SDP's offer.
        offer: Offer,
    },
    /// The mid-call request relayed on `leg` got no answer (Timer B/F) or could not
    /// be sent.
    RelayFailed {
        /// The leg it was relayed on.
        leg: LegId,
        /// Which request.
        kind: Kind,
    },
    /// `leg`'s ACK for the 2xx of its relayed re-INVITE.
    RelayAck {
        /// The leg.
        leg: LegId,
    },
    /// `leg`'s party never ACKed our 2xx for its re-INVITE (64·T1).
    AckTimeout {
        /// The leg.
        leg: LegId,
    },
    /// `leg`'s session (RFC 4028) was set up or refreshed: a 2xx to its INVITE,
    /// re-INVITE or UPDATE, sent or received.
    SessionRefreshed {
        /// The leg.
        leg: LegId,
        /// What its dialog negotiated.
        session: Session,
    },
    /// The switch's refresh on `leg` got 408 or 481, or no answer.
    RefreshFailed {
        /// The leg.
        leg: LegId,
    },
}

/// What the machine needs of the callee being rung: its ring time and which of its
/// forwarding rules the legs' outcome can trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalleeRules {
    /// `no_answer_timeout_s` (the user's, else `sip.no_answer_timeout_s`).
    pub ring: Duration,
    /// `forward_busy` is set.
    pub on_busy: bool,
    /// `forward_no_answer` is set.
    pub on_no_answer: bool,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send the B-leg INVITE to target `leg` (1-based, in the order of the bindings).
    InviteB {
        /// The B-leg.
        leg: LegId,
    },
    /// CANCEL the B-leg's INVITE.
    CancelB {
        /// The B-leg.
        leg: LegId,
    },
    /// ACK the B-leg's 2xx (end to end on that leg), with the answer for a late offer.
    AckB {
        /// The B-leg.
        leg: LegId,
        /// SDP for the ACK.
        sdp: Option<Sdp>,
    },
    /// Answer A's INVITE with a provisional response.
    ProvisionalToA {
        /// The status.
        status: u16,
        /// Its SDP.
        sdp: Option<Sdp>,
    },
    /// Answer A's INVITE with a final response.
    FinalToA {
        /// The status.
        status: u16,
        /// Its SDP (2xx only).
        sdp: Option<Sdp>,
    },
    /// Answer a BYE received on `leg` with 200.
    AnswerBye {
        /// The leg whose BYE it is.
        leg: LegId,
    },
    /// Send BYE on `leg`'s dialog.
    Bye {
        /// The leg.
        leg: LegId,
    },
    /// Arm a timer (re-arming replaces it).
    StartTimer(CallTimer, Duration),
    /// Disarm a timer.
    StopTimer(CallTimer),
    /// The call is over: write its CDR from these facts, then count it ended.
    Finish(Outcome),
    /// Forward the call for `reason` (the callee's rule): answer with
    /// [`Event::Forwarded`] or [`Event::ForwardFailed`], in the same turn.
    Forward {
        /// Which rule.
        reason: ForwardReason,
    },
    /// Relay the mid-call request `from`'s party sent on the leg `to`, in that leg's
    /// dialog.
    Relay {
        /// The sender's leg.
        from: LegId,
        /// The leg it goes on.
        to: LegId,
        /// Which request.
        kind: Kind,
    },
    /// Answer the mid-call request `leg`'s party sent with the other party's answer
    /// (its status and body).
    Answer {
        /// The sender's leg.
        leg: LegId,
        /// Which request.
        kind: Kind,
    },
    /// Answer the mid-call request `leg`'s party sent with the switch's own refusal.
    Refuse {
        /// The sender's leg.
        leg: LegId,
        /// Which request.
        kind: Kind,
        /// Why.
        why: Refuse,
    },
    /// ACK the 2xx of the re-INVITE relayed on `leg` (with the answer of a late offer,
    /// which the other party's ACK carried).
    AckRelayed {
        /// The leg.
        leg: LegId,
    },
    /// Refresh `leg`'s session (RFC 4028): the switch is its refresher.
    Refresh {
        /// The leg.
        leg: LegId,
        /// The session interval to ask for, seconds.
        interval: u32,
    },
}

/// How the call ended, for its CDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The CDR disposition.
    pub disposition: Disposition,
    /// The final status that ended the setup (200 for an answered call).
    pub sip_status: u16,
    /// Who hung up (for a call that never connected: who ended the attempt).
    pub hangup_by: HangupBy,
    /// When the call was answered, if it was.
    pub answered_at: Option<SystemTime>,
    /// The B-leg that answered.
    pub connected_leg: Option<LegId>,
    /// The time the call spent on hold, in milliseconds (49 days at most: 8 bytes less
    /// than a `Duration` in every held call's task, see `task.rs`'s size test).
    pub held_ms: u32,
}

/// CDR `disposition` (interface.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Connected.
    Answered,
    /// 486 or 600.
    Busy,
    /// Rang out (ring timer) or no response at all (408, 480).
    NoAnswer,
    /// The caller cancelled.
    Cancelled,
    /// Refused by the callee (another 4xx or a 6xx).
    Rejected,
    /// The switch or the network failed (5xx, unreachable).
    Failed,
}

impl Disposition {
    /// The disposition of an attempt that ended with final status `status` and no answer:
    /// 486/600 busy, 408/480 no answer, another 5xx failed, any other 4xx or 6xx
    /// rejected. One mapping for the best failure of the B-legs and for the refusals the
    /// switch sends itself (404, 480, 482, 483, 503, ...).
    pub fn of_status(status: u16) -> Disposition {
        match status {
            486 | 600 => Disposition::Busy,
            408 | 480 => Disposition::NoAnswer,
            500..=599 => Disposition::Failed,
            _ => Disposition::Rejected,
        }
    }
}

/// CDR `hangup_by` (interface.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangupBy {
    /// The caller.
    Caller,
    /// The callee.
    Callee,
    /// The switch (timers, failures).
    Switch,
}

/// Timer values the machine arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTimers {
    /// Ring time.
    pub ring: Duration,
    /// 64·T1.
    pub ack_wait: Duration,
    /// How long to wait for the answer to our BYE.
    pub bye_wait: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    /// INVITE sent, nothing final yet.
    Trying { rang: bool },
    /// CANCEL sent; waiting for its 487 (or a 2xx that crossed it).
    Cancelling,
    /// Final non-2xx (or failure) received.
    Failed(u16),
    /// 2xx received and this leg won.
    Answered,
    /// 2xx received after another leg won: BYE sent.
    Released,
    /// Our BYE answered, or theirs answered: the dialog is over.
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    /// Forking; A has at most provisionals.
    Setup,
    /// A has its 2xx, waiting for A's ACK.
    Answered,
    /// Both sides up.
    Connected,
    /// Tearing down: BYEs outstanding.
    Releasing,
    /// A has its final non-2xx; waiting for the B-legs to settle.
    Failing,
    /// Finished.
    Done,
}

/// Every name of a call's phase ([`CallMachine::phase_code`]) and of a B-leg's state
/// ([`CallMachine::leg_state_codes`]), each once: a view that keeps a state for every
/// call (`GET /api/calls`) keeps its index here, one byte, not a 16-byte `&str`.
pub const STATE_NAMES: [&str; 13] = [
    "idle",
    "setup",
    "answered",
    "connected",
    "releasing",
    "failing",
    "done",
    "trying",
    "ringing",
    "cancelling",
    "failed",
    "released",
    "ended",
];

/// The code of the phase `idle` (a call not started yet).
pub const STATE_IDLE: u8 = 0;
/// The code of the leg state `trying` (no response yet).
pub const STATE_TRYING: u8 = 7;

/// The name of a state code (`unknown` for a code no state has).
pub fn state_name(code: u8) -> &'static str {
    STATE_NAMES
        .get(usize::from(code))
        .copied()
        .unwrap_or("unknown")
}

/// One call's state.
#[derive(Debug, Clone)]
pub struct CallMachine {
    /// Shared by every call (one configuration): a pointer, not 48 bytes per call.
    timers: std::sync::Arc<CallTimers>,
    phase: Phase,
    legs: Vec<Leg>,
    offer_from_a: bool,
    a_rang: bool,
    winner: Option<LegId>,
    answered_at: Option<SystemTime>,
    outcome: Option<Outcome>,
    byes_out: Vec<LegId>,
    /// B released the call before A ACKed our 2xx: BYE A once it does (§15).
    bye_a_on_ack: bool,
    /// What few calls have (a box: this struct is in every held call's task): the
    /// callee's own ring time and forwarding, and re-INVITEs, UPDATEs, INFOs and hold
    /// (`midcall.rs`).
    extra: Option<Box<Extra>>,
    out: Vec<Command>,
}

/// The boxed part of a [`CallMachine`].
#[derive(Debug, Clone, Default)]
struct Extra {
    /// The callee's own ring time and forwarding, when it has any.
    callee: Option<Callee>,
    /// Re-INVITEs, UPDATEs, INFOs and hold, once the call has any.
    mid: Option<midcall::MidCall>,
}

/// The callee being rung, when its rules differ from the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Callee {
    rules: CalleeRules,
    /// Its first B-leg (0-based index into `legs`): only its legs decide the outcome.
    first: usize,
}

impl CallMachine {
    /// A call that has not started.
    pub fn new(timers: std::sync::Arc<CallTimers>) -> CallMachine {
        CallMachine {
            timers,
            phase: Phase::Idle,
            legs: Vec::new(),
            offer_from_a: false,
            a_rang: false,
            winner: None,
            answered_at: None,
            outcome: None,
            byes_out: Vec::new(),
            bye_a_on_ack: false,
            extra: None,
            out: Vec::new(),
        }
    }

    /// The callee's ring time and forwarding rules, before [`Event::Start`].
    pub fn set_callee(&mut self, rules: CalleeRules) {
        self.set_rules(rules, 0);
    }

    fn set_rules(&mut self, rules: CalleeRules, first: usize) {
        let plain = rules.ring == self.timers.ring && !rules.on_busy && !rules.on_no_answer;
        let callee = (!plain || first > 0).then_some(Callee { rules, first });
        if callee.is_some() || self.extra.is_some() {
            self.extra.get_or_insert_default().callee = callee;
        }
    }

    fn ring(&self) -> Duration {
        self.callee().map_or(self.timers.ring, |c| c.rules.ring)
    }

    fn callee(&self) -> Option<&Callee> {
        self.extra.as_ref().and_then(|e| e.callee.as_ref())
    }

    fn rules(&self) -> Option<CalleeRules> {
        self.callee().map(|c| c.rules)
    }

    /// The legs of the callee being rung (all of them unless the call was forwarded).
    fn current_legs(&self) -> impl Iterator<Item = (LegId, Leg)> + '_ {
        let first = self.callee().map_or(0, |c| c.first);
        self.b_legs().skip(first)
    }

    /// True once [`Command::Finish`] was emitted.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The B-leg that answered, if any.
    pub fn winner(&self) -> Option<LegId> {
        self.winner
    }

    /// How the call ends, once that is decided (before every leg has settled): the CDR
    /// can be written from then on.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// The call's phase, for operators, as its index in [`STATE_NAMES`]: `idle`,
    /// `setup`, `answered`, `connected`, `releasing`, `failing`, `done`.
    pub fn phase_code(&self) -> u8 {
        match self.phase {
            Phase::Idle => STATE_IDLE,
            Phase::Setup => 1,
            Phase::Answered => 2,
            Phase::Connected => 3,
            Phase::Releasing => 4,
            Phase::Failing => 5,
            Phase::Done => 6,
        }
    }

    /// Each B-leg's state, in leg order, as its index in [`STATE_NAMES`]: `trying`,
    /// `ringing`, `cancelling`, `failed`, `answered`, `released`, `ended`.
    pub fn leg_state_codes(&self) -> impl Iterator<Item = u8> + '_ {
        self.legs.iter().map(|l| match l {
            Leg::Trying { rang: false } => STATE_TRYING,
            Leg::Trying { rang: true } => 8,
            Leg::Cancelling => 9,
            Leg::Failed(_) => 10,
            Leg::Answered => 2,
            Leg::Released => 11,
            Leg::Ended => 12,
        })
    }

    /// Applies `ev` at `now` and returns what to do, in order.
    pub fn handle(&mut self, ev: Event, now: SystemTime) -> Vec<Command> {
        if self.phase != Phase::Done {
            self.step(ev, now);
        }
        std::mem::take(&mut self.out)
    }

    fn leg_mut(&mut self, leg: LegId) -> Option<&mut Leg> {
        let i = (leg.0 as usize).checked_sub(1)?;
        self.legs.get_mut(i)
    }

    fn b_legs(&self) -> impl Iterator<Item = (LegId, Leg)> + '_ {
        self.legs
            .iter()
            .enumerate()
            .map(|(i, l)| (LegId(i as u32 + 1), *l))
    }

    fn step(&mut self, ev: Event, now: SystemTime) {
        match ev {
            Event::Start { targets, offer } => {
                if self.phase != Phase::Idle {
                    return;
                }
                self.phase = Phase::Setup;
                self.offer_from_a = offer.is_some();
                let n = targets.max(1);
                self.legs = vec![Leg::Trying { rang: false }; n as usize];
                for i in 1..=n {
                    self.out.push(Command::InviteB { leg: LegId(i) });
                }
                self.out
                    .push(Command::StartTimer(CallTimer::Ring, self.ring()));
            }
            Event::Forwarded { targets, rules } => {
                if self.phase != Phase::Setup {
                    return;
                }
                let first = self.legs.len();
                self.set_rules(rules, first);
                // RFC 3261 §21.1.3; the new callee's 180 is relayed again.
                self.out.push(Command::ProvisionalToA {
                    status: 181,
                    sdp: None,
                });
                self.a_rang = false;
                let n = targets.max(1) as usize;
                self.legs
                    .extend(std::iter::repeat_n(Leg::Trying { rang: false }, n));
                for i in first..first + n {
                    self.out.push(Command::InviteB {
                        leg: LegId(i as u32 + 1),
                    });
                }
                self.out
                    .push(Command::StartTimer(CallTimer::Ring, rules.ring));
            }
            Event::ForwardFailed { status } => {
                if self.phase == Phase::Setup {
                    self.fail_a(status, Disposition::of_status(status), HangupBy::Switch);
                }
            }
            Event::Provisional { leg, status, sdp } => self.on_provisional(leg, status, sdp),
            Event::Final { leg, status, sdp } if (200..300).contains(&status) => {
                self.on_2xx(leg, sdp, now)
            }
            Event::Final { leg, status, .. } => self.on_failure(leg, status),
            Event::LegFailed { leg, why } => self.on_failure(
                leg,
                match why {
                    LegFailure::Timeout => 408,
                    LegFailure::Unreachable => 503,
                },
            ),
            Event::AckFromA { .. } if self.bye_a_on_ack => {
                self.bye_a_on_ack = false;
                self.out.push(Command::StopTimer(CallTimer::AckWait));
                self.out.push(Command::Bye { leg: LegId::A });
            }
            Event::AckFromA { sdp } => {
                if self.phase == Phase::Answered {
                    self.phase = Phase::Connected;
                    self.out.push(Command::StopTimer(CallTimer::AckWait));
                    if !self.offer_from_a {
                        if let Some(w) = self.winner {
                            self.out.push(Command::AckB { leg: w, sdp });
                        }
                    }
                }
            }
            Event::CancelFromA => {
                if self.phase == Phase::Setup {
                    self.out.push(Command::StopTimer(CallTimer::Ring));
                    self.cancel_ringing();
                    self.fail_a(487, Disposition::Cancelled, HangupBy::Caller);
                }
            }
            Event::Bye { leg } => self.on_bye(leg, now),
            Event::ByeDone { leg } => {
                self.byes_out.retain(|l| *l != leg);
                if let Some(l) = self.leg_mut(leg) {
                    if matches!(l, Leg::Released | Leg::Answered) {
                        *l = Leg::Ended;
                    }
                }
                self.maybe_finish();
            }
            Event::Timer(CallTimer::Ring) => {
                if self.phase == Phase::Setup && self.rules().is_some_and(|r| r.on_no_answer) {
                    // F10: the callee's own ring time is up; its target rings next.
                    self.cancel_ringing();
                    self.out.push(Command::Forward {
                        reason: ForwardReason::NoAnswer,
                    });
                } else if self.phase == Phase::Setup {
                    self.cancel_ringing();
                    self.fail_a(480, Disposition::NoAnswer, HangupBy::Switch);
                }
            }
            Event::Timer(CallTimer::AckWait) if self.bye_a_on_ack => {
                // A never ACKed: its server transaction has timed out, BYE it now.
                self.bye_a_on_ack = false;
                self.out.push(Command::Bye { leg: LegId::A });
            }
            Event::Timer(CallTimer::AckWait) => {
                if self.phase == Phase::Answered {
                    // A never confirmed: the call cannot go on (RFC 3261 §13.3.1.4).
                    self.release(LegId::A, HangupBy::Switch, true, now);
                }
            }
            Event::Modify { leg, kind, offer } => self.on_modify(leg, kind, offer),
            Event::RelayAnswered {
                leg,
                kind,
                status,
                offer,
            } => self.on_relay_answer(leg, kind, status, offer, now),
            Event::RelayFailed { leg, kind } => self.on_relay_failed(leg, kind),
            Event::RelayAck { leg } => self.on_relay_ack(leg, now),
            Event::AckTimeout { leg } => self.on_ack_timeout(leg, now),
            Event::SessionRefreshed { leg, session } => self.on_session_refreshed(leg, session),
            Event::Timer(CallTimer::Session(leg)) => self.on_session_due(leg, now),
            Event::RefreshFailed { leg } => self.on_refresh_failed(leg, now),
            Event::Timer(CallTimer::ByeWait) => {
                self.byes_out.clear();
                for l in self.legs.iter_mut() {
                    if matches!(l, Leg::Released | Leg::Answered) {
                        *l = Leg::Ended;
                    }
                }
                self.maybe_finish();
            }
        }
    }

    fn on_provisional(&mut self, leg: LegId, status: u16, sdp: Option<Sdp>) {
        if self.phase != Phase::Setup || status == 100 {
            return;
        }
        let Some(Leg::Trying { rang }) = self.leg_mut(leg) else {
            return;
        };
        *rang = true;
        // Relay early media always, a plain ringing indication once.
        if sdp.is_some() || !self.a_rang {
            self.a_rang = true;
            self.out.push(Command::ProvisionalToA { status, sdp });
        }
    }

    fn on_2xx(&mut self, leg: LegId, sdp: Option<Sdp>, now: SystemTime) {
        let Some(state) = self.leg_mut(leg).copied() else {
            return;
        };
        match state {
            Leg::Trying { .. } | Leg::Cancelling if self.phase == Phase::Setup => {
                // The first 2xx wins (a 2xx may cross our CANCEL: it still wins).
                self.winner = Some(leg);
                self.answered_at = Some(now);
                if let Some(l) = self.leg_mut(leg) {
                    *l = Leg::Answered;
                }
                self.phase = Phase::Answered;
                self.out.push(Command::StopTimer(CallTimer::Ring));
                if self.offer_from_a {
                    self.out.push(Command::AckB { leg, sdp: None });
                }
                self.out.push(Command::FinalToA { status: 200, sdp });
                self.out.push(Command::StartTimer(
                    CallTimer::AckWait,
                    self.timers.ack_wait,
                ));
                self.cancel_ringing();
            }
            Leg::Answered => {
                // A retransmitted 2xx: our ACK was lost; ACK again (§13.2.2.4).
                if self.offer_from_a || self.phase == Phase::Connected {
                    self.out.push(Command::AckB { leg, sdp: None });
                }
            }
            Leg::Trying { .. } | Leg::Cancelling | Leg::Failed(_) => {
                // A late 2xx from a leg that lost, or after the attempt failed: take
                // the dialog up (ACK) and release it at once (BYE).
                self.out.push(Command::AckB { leg, sdp: None });
                self.out.push(Command::Bye { leg });
                if let Some(l) = self.leg_mut(leg) {
                    *l = Leg::Released;
                }
                self.byes_out.push(leg);
            }
            Leg::Released | Leg::Ended => {
                self.out.push(Command::AckB { leg, sdp: None });
            }
        }
    }

    fn on_failure(&mut self, leg: LegId, status: u16) {
        let Some(l) = self.leg_mut(leg) else {
            return;
        };
        if !matches!(l, Leg::Trying { .. } | Leg::Cancelling) {
            return;
        }
        *l = Leg::Failed(status);
        if self.phase == Phase::Setup {
            let all_failed = self
                .current_legs()
                .all(|(_, l)| matches!(l, Leg::Failed(_)));
            if all_failed {
                self.out.push(Command::StopTimer(CallTimer::Ring));
                let best = self.best_failure();
                if best == 486 && self.rules().is_some_and(|r| r.on_busy) {
                    // F9: A never sees the 486; the callee's target rings next.
                    self.out.push(Command::Forward {
                        reason: ForwardReason::Busy,
                    });
                    return;
                }
                let (disposition, status) = classify(best);
                self.fail_a(status, disposition, HangupBy::Callee);
            }
        } else {
            self.maybe_finish();
        }
    }

    /// §16.7 step 6: a 6xx if any, else 486, else the lowest class's first.
    fn best_failure(&self) -> u16 {
        let codes: Vec<u16> = self
            .current_legs()
            .filter_map(|(_, l)| match l {
                Leg::Failed(c) => Some(c),
                _ => None,
            })
            .collect();
        if let Some(c) = codes.iter().find(|c| (600..700).contains(*c)) {
            return *c;
        }
        if codes.contains(&486) {
            return 486;
        }
        codes
            .iter()
            .copied()
            .min_by_key(|c| (c / 100, *c == 408 || *c == 503))
            .unwrap_or(500)
    }

    fn cancel_ringing(&mut self) {
        let ringing: Vec<LegId> = self
            .b_legs()
            .filter(|(_, l)| matches!(l, Leg::Trying { .. }))
            .map(|(id, _)| id)
            .collect();
        for leg in ringing {
            if let Some(l) = self.leg_mut(leg) {
                *l = Leg::Cancelling;
            }
            self.out.push(Command::CancelB { leg });
        }
    }

    fn fail_a(&mut self, status: u16, disposition: Disposition, hangup_by: HangupBy) {
        self.out.push(Command::FinalToA { status, sdp: None });
        self.phase = Phase::Failing;
        self.outcome = Some(Outcome {
            disposition,
            sip_status: status,
            hangup_by,
            answered_at: None,
            connected_leg: None,
            held_ms: 0,
        });
        self.maybe_finish();
    }

    fn on_bye(&mut self, leg: LegId, now: SystemTime) {
        match self.phase {
            Phase::Connected | Phase::Answered => {
                self.out.push(Command::AnswerBye { leg });
                let by = if leg == LegId::A {
                    HangupBy::Caller
                } else {
                    HangupBy::Callee
                };
                if leg != LegId::A && Some(leg) != self.winner {
                    return;
                }
                self.release(leg, by, false, now);
            }
            // A BYE crossing ours: answer it; our own BYE's answer ends the wait.
            _ => self.out.push(Command::AnswerBye { leg }),
        }
    }

    /// Ends a connected (or answered) call: BYE to the legs other than `from` (all when
    /// `both`).
    fn release(&mut self, from: LegId, by: HangupBy, both: bool, now: SystemTime) {
        // §15: no BYE to A before A's ACK for our 2xx (or the transaction's timeout): with
        // A still unconfirmed, A's BYE waits for the ACK or the AckWait timer.
        let defer_a = self.phase == Phase::Answered && !both;
        if !defer_a {
            self.out.push(Command::StopTimer(CallTimer::AckWait));
        }
        self.phase = Phase::Releasing;
        self.stop_hold_clock(now);
        self.outcome = Some(Outcome {
            disposition: Disposition::Answered,
            sip_status: 200,
            hangup_by: by,
            answered_at: self.answered_at,
            connected_leg: self.winner,
            held_ms: u32::try_from(self.held(now).as_millis()).unwrap_or(u32::MAX),
        });
        if both || from != LegId::A {
            if defer_a {
                self.bye_a_on_ack = true;
            } else {
                self.out.push(Command::Bye { leg: LegId::A });
            }
            self.byes_out.push(LegId::A);
        }
        if let Some(w) = self.winner {
            if both || from != w {
                self.out.push(Command::Bye { leg: w });
                self.byes_out.push(w);
            } else if let Some(l) = self.leg_mut(w) {
                *l = Leg::Ended;
            }
        }
        if !self.byes_out.is_empty() {
            self.out.push(Command::StartTimer(
                CallTimer::ByeWait,
                self.timers.bye_wait,
            ));
        }
        self.maybe_finish();
    }

    fn maybe_finish(&mut self) {
        let settled = match self.phase {
            Phase::Failing => self
                .b_legs()
                .all(|(_, l)| matches!(l, Leg::Failed(_) | Leg::Ended)),
            Phase::Releasing => self.byes_out.is_empty(),
            _ => false,
        } && self.byes_out.is_empty();
        if settled {
            if let Some(o) = self.outcome {
                self.phase = Phase::Done;
                self.out.push(Command::StopTimer(CallTimer::ByeWait));
                self.out.push(Command::Finish(o));
            }
        }
    }
}

/// The CDR disposition and the status A gets for the best failure of the B-legs.
fn classify(status: u16) -> (Disposition, u16) {
    // A callee's 503 is not the switch's: A gets 480 (RFC 3261 §16.7 step 6 says a proxy
    // should not forward a 503 either).
    let to_a = if status == 503 { 480 } else { status };
    (Disposition::of_status(status), to_a)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: CallTimers = CallTimers {
        ring: Duration::from_secs(20),
        ack_wait: Duration::from_secs(32),
        bye_wait: Duration::from_secs(32),
    };

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn b(i: u32) -> LegId {
        LegId(i)
    }

    /// The codes a view keeps name the states an operator reads: a call not started is
    /// `idle`, a started one `setup` with each B-leg `trying`.
    #[test]
    fn state_codes_name_the_phase_and_each_leg() {
        let m = CallMachine::new(std::sync::Arc::new(T));
        assert_eq!(m.phase_code(), STATE_IDLE);
        assert_eq!(state_name(m.phase_code()), "idle");
        let (m, _) = start(2);
        assert_eq!(state_name(m.phase_code()), "setup");
        let legs: Vec<&str> = m.leg_state_codes().map(state_name).collect();
        assert_eq!(legs, ["trying", "trying"]);
        assert_eq!(state_name(STATE_TRYING), "trying");
        assert_eq!(state_name(u8::MAX), "unknown");
    }

    fn start(targets: u32) -> (CallMachine, Vec<Command>) {
        let mut m = CallMachine::new(std::sync::Arc::new(T));
        let c = m.handle(
            Event::Start {
                targets,
                offer: Some(b"v=0".to_vec()),
            },
            now(),
        );
        (m, c)
    }

    pub(super) fn finish_of(cmds: &[Command]) -> Option<Outcome> {
        cmds.iter().find_map(|c| match c {
            Command::Finish(o) => Some(*o),
            _ => None,
        })
    }

    /// F3 + F4 (caller hangs up).
    #[test]
    fn basic_call_and_caller_release() {
        let (mut m, c) = start(1);
        assert_eq!(
            c,
            vec![
                Command::InviteB { leg: b(1) },
                Command::StartTimer(CallTimer::Ring, T.ring)
            ]
        );
        let c = m.handle(
            Event::Provisional {
                leg: b(1),
                status: 180,
                sdp: None,
            },
            now(),
        );
        assert_eq!(
            c,
            vec![Command::ProvisionalToA {
                status: 180,
                sdp: None
            }]
        );
        let c = m.handle(
            Event::Final {
                leg: b(1),
                status: 200,
                sdp: Some(b"answer".to_vec()),
            },
            now(),
        );
        assert!(c.contains(&Command::AckB {
            leg: b(1),
            sdp: None
        }));
        assert!(c.contains(&Command::FinalToA {
            status: 200,
            sdp: Some(b"answer".to_vec())
        }));
        let c = m.handle(Event::AckFromA { sdp: None }, now());
        assert_eq!(c, vec![Command::StopTimer(CallTimer::AckWait)]);
        // F4: BYE from A.
        let c = m.handle(Event::Bye { leg: LegId::A }, now());
        assert!(c.contains(&Command::AnswerBye { leg: LegId::A }));
        assert!(c.contains(&Command::Bye { leg: b(1) }));
        assert!(
            finish_of(&c).is_none(),
            "not ended before B answered the BYE"
        );
        let c = m.handle(Event::ByeDone { leg: b(1) }, now());
        let o = finish_of(&c).expect("finished");
        assert_eq!(o.disposition, Disposition::Answered);
        assert_eq!(o.hangup_by, HangupBy::Caller);
        assert_eq!(o.connected_leg, Some(b(1)));
        assert!(m.is_done());
    }

    /// F4 with the callee hanging up.
    #[test]
    fn callee_release() {
        let (mut m, _) = start(1);
        m.handle(
            Event::Final {
                leg: b(1),
                status: 200,
                sdp: None,
            },
            now(),
        );
        m.handle(Event::AckFromA { sdp: None }, now());
        let c = m.handle(Event::Bye { leg: b(1) }, now());
        assert!(c.contains(&Command::AnswerBye { leg: b(1) }));
        assert!(c.contains(&Command::Bye { leg: LegId::A }));
        let c = m.handle(Event::ByeDone { leg: LegId::A }, now());
        assert_eq!(finish_of(&c).map(|o| o.hangup_by), Some(HangupBy::Callee));
    }

    /// F6: 486 from B is relayed; disposition busy.
    #[test]
    fn busy() {
        let (mut m, _) = start(1);
        let c = m.handle(
            Event::Final {
                leg: b(1),
                status: 486,
                sdp: None,
            },
            now(),
        );
        assert!(c.contains(&Command::FinalToA {
            status: 486,
            sdp: None
        }));
        let o = finish_of(&c).expect("finished");
        assert_eq!((o.disposition, o.sip_status), (Disposition::Busy, 486));
    }

    /// F7: CANCEL from A while ringing.
    #[test]
    fn caller_cancel() {
        let (mut m, _) = start(1);
        m.handle(
            Event::Provisional {
                leg: b(1),
                status: 180,
                sdp: None,
            },
            now(),
        );
        let c = m.handle(Event::CancelFromA, now());
        assert!(c.contains(&Command::CancelB { leg: b(1) }));
        assert!(c.contains(&Command::FinalToA {
            status: 487,
            sdp: None
        }));
        assert!(finish_of(&c).is_none(), "B still has to answer 487");
        let c = m.handle(
            Event::Final {
                leg: b(1),
                status: 487,
                sdp: None,
            },
            now(),
        );
        let o = finish_of(&c).expect("finished");
        assert_eq!(o.disposition, Disposition::Cancelled);
        assert_eq!(o.hangup_by, HangupBy::Caller);
    }

    /// F8: the ring timer.
    #[test]
    fn no_answer() {
        let (mut m, _) = start(1);
        m.handle(
            Event::Provisional {
                leg: b(1),
                status: 180,
                sdp: None,
            },
            now(),
        );
        let c = m.handle(Event::Timer(CallTimer::Ring), now());
        assert!(c.contains(&Command::CancelB { leg: b(1) }));
        assert!(c.contains(&Command::FinalToA {
            status: 480,
            sdp: None
        }));
        let c = m.handle(
            Event::Final {
                leg: b(1),
                status: 487,
                sdp: None,
            },
            now(),
        );
        assert_eq!(
            finish_of(&c).map(|o| o.disposition),
            Some(Disposition::NoAnswer)
        );
    }

    /// Timer B on the only leg: 408 to A.
    #[test]
    fn unanswered_invite_times_out() {
        let (mut m, _) = start(1);
        let c = m.handle(
            Event::LegFailed {
                leg: b(1),
                why: LegFailure::Timeout,
            },
            now(),
        );
        assert!(c.contains(&Command::FinalToA {
            status: 408,
            sdp: None
        }));
        assert_eq!(
            finish_of(&c).map(|o| o.disposition),
            Some(Disposition::NoAnswer)
        );
    }

    /// B unreachable: 480 to A, disposition failed.
    #[test]
    fn unreachable() {
        let (mut m, _) = start(1);
        let c = m.handle(
            Event::LegFailed {
                leg: b(1),
                why: LegFailure::Unreachable,
            },
            now(),
        );
        assert!(c.contains(&Command::FinalToA {
            status: 480,
            sdp: None
        }));
        assert_eq!(
            finish_of(&c).map(|o| o.disposition),
            Some(Disposition::Failed)
        );
    }

    /// Parallel forking: the first 2xx wins, the other ringing leg is cancelled, and a
    /// late 2xx from it is ACKed and released with BYE.
    #[test]
    fn parallel_ringing_and_a_late_2xx() {
        let (mut m, c) = start(2);
        assert!(c.contains(&Command::InviteB { leg: b(1) }));
        assert!(c.contains(&Command::InviteB { leg: b(2) }));
        for leg in [b(1), b(2)] {
            m.handle(
                Event::Provisional {
                    leg,
                    status: 180,
                    sdp: None,
                },
                now(),
            );
        }
        let c = m.handle(
            Event::Final {
                leg: b(2),
                status: 200,
                sdp: None,
            },
            now(),
        );
        assert!(c.contains(&Command::CancelB { leg: b(1) }));
        assert_eq!(m.winner(), Some(b(2)));
        // Leg 1's 2xx crossed our CANCEL.
        let c = m.handle(
            Event::Final {
                leg: b(1),
                status: 200,
                sdp: None,
            },
            now(),
        );
        assert_eq!(
            c,
            vec![
                Command::AckB {
                    leg: b(1),
                    sdp: None
                },
                Command::Bye { leg: b(1) }
            ]
        );
        m.handle(Event::AckFromA { sdp: None }, now());
        m.handle(Event::ByeDone { leg: b(1) }, now());
        let c = m.handle(Event::Bye { leg: LegId::A }, now());
        assert!(c.contains(&Command::Bye { leg: b(2) }));
        let c = m.handle(Event::ByeDone { leg: b(2) }, now());
        assert!(finish_of(&c).is_some());
    }

    /// Only the first 180 of several legs is relayed; 183 with SDP always.
    #[test]
    fn provisionals_relayed_once_early_media_always() {
        let (mut m, _) = start(2);
        let r = |m: &mut CallMachine, leg, status, sdp: Option<&[u8]>| {
            m.handle(
                Event::Provisional {
                    leg,
                    status,
                    sdp: sdp.map(<[u8]>::to_vec),
                },
                now(),
            )
        };
        assert_eq!(r(&mut m, b(1), 180, None).len(), 1);
        assert!(r(&mut m, b(2), 180, None).is_empty());
        assert_eq!(r(&mut m, b(2), 183, Some(b"early")).len(), 1);
        assert!(r(&mut m, b(1), 100, None).is_empty());
    }

    /// The best of several failures: 486 over 404 over 408.
    #[test]
    fn best_failure() {
        let (mut m, _) = start(3);
        m.handle(
            Event::Final {
                leg: b(1),
                status: 404,
                sdp: None,
            },
            now(),
        );
        m.handle(
            Event::LegFailed {
                leg: b(2),
                why: LegFailure::Timeout,
            },
            now(),
        );
        let c = m.handle(
            Event::Final {
                leg: b(3),
                status: 486,
                sdp: None,
            },
            now(),
        );
        assert!(c.contains(&Command::FinalToA {
            status: 486,
            sdp: None
        }));
    }

    /// A retransmitted 2xx is ACKed again; A's missing ACK releases both legs.
    #[test]
    fn retransmitted_2xx_and_missing_ack() {
        let (mut m, _) = start(1);
        let ok = Event::Final {
            leg: b(1),
            status: 200,
            sdp: None,
        };
        m.handle(ok.clone(), now());
        let c = m.handle(ok, now());
        assert_eq!(
            c,
            vec![Command::AckB {
                leg: b(1),
                sdp: None
            }]
        );
        let c = m.handle(Event::Timer(CallTimer::AckWait), now());
        assert!(c.contains(&Command::Bye { leg: LegId::A }));
        assert!(c.contains(&Command::Bye { leg: b(1) }));
        m.handle(Event::ByeDone { leg: LegId::A }, now());
        let c = m.handle(Event::ByeDone { leg: b(1) }, now());
        assert_eq!(finish_of(&c).map(|o| o.hangup_by), Some(HangupBy::Switch));
    }

    /// Late offer: B's 2xx is ACKed with A's ACK and its answer.
    #[test]
    fn late_offer_acks_with_the_answer() {
        let mut m = CallMachine::new(std::sync::Arc::new(T));
        m.handle(
            Event::Start {
                targets: 1,
                offer: None,
            },
            now(),
        );
        let c = m.handle(
            Event::Final {
                leg: b(1),
                status: 200,
                sdp: Some(b"offer".to_vec()),
            },
            now(),
        );
        assert!(!c.iter().any(|c| matches!(c, Command::AckB { .. })));
        let c = m.handle(
            Event::AckFromA {
                sdp: Some(b"answer".to_vec()),
            },
            now(),
        );
        assert!(c.contains(&Command::AckB {
            leg: b(1),
            sdp: Some(b"answer".to_vec())
        }));
    }

    /// §15: B hangs up before A's ACK arrived: A's BYE waits for the ACK.
    #[test]
    fn no_bye_to_a_before_its_ack() {
        let (mut m, _) = start(1);
        m.handle(
            Event::Final {
                leg: b(1),
                status: 200,
                sdp: None,
            },
            now(),
        );
        let c = m.handle(Event::Bye { leg: b(1) }, now());
        assert!(c.contains(&Command::AnswerBye { leg: b(1) }));
        assert!(!c.contains(&Command::Bye { leg: LegId::A }), "{c:?}");
        let c = m.handle(Event::AckFromA { sdp: None }, now());
        assert!(c.contains(&Command::Bye { leg: LegId::A }), "{c:?}");
        let c = m.handle(Event::ByeDone { leg: LegId::A }, now());
        assert!(finish_of(&c).is_some());
        // Without an ACK ever, the AckWait timeout sends it.
        let (mut m, _) = start(1);
        m.handle(
            Event::Final {
                leg: b(1),
                status: 200,
                sdp: None,
            },
            now(),
        );
        m.handle(Event::Bye { leg: b(1) }, now());
        let c = m.handle(Event::Timer(CallTimer::AckWait), now());
        assert!(c.contains(&Command::Bye { leg: LegId::A }), "{c:?}");
    }

    /// A BYE whose answer never comes still ends the call (ByeWait).
    #[test]
    fn unanswered_bye_ends_the_call_anyway() {
        let (mut m, _) = start(1);
        m.handle(
            Event::Final {
                leg: b(1),
                status: 200,
                sdp: None,
            },
            now(),
        );
        m.handle(Event::AckFromA { sdp: None }, now());
        m.handle(Event::Bye { leg: LegId::A }, now());
        let c = m.handle(Event::Timer(CallTimer::ByeWait), now());
        assert!(finish_of(&c).is_some());
        // Nothing after the end.
        assert!(m.handle(Event::Bye { leg: b(1) }, now()).is_empty());
    }
}
