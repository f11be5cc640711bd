//! The non-INVITE server transaction (RFC 3261 §17.2.2, Figure 8).
//!
//! ```text
//! request --> Trying --1xx from TU--> Proceeding --1xx from TU--> Proceeding
//!               \__________________________|___ 200-699 from TU --> Completed --Timer J--> Terminated
//! ```
//!
//! A retransmitted request is absorbed silently in Trying and answered with the last
//! response in Proceeding and Completed. A CANCEL gets this machine too (§9.2).

use super::{Ctx, Timer, TimerTable, TxError};
use crate::transport::Peer;
use crate::wire::Response;
use bytes::Bytes;

/// Trying: waiting for the TU's first response; retransmissions are absorbed.
#[derive(Debug)]
pub struct ExpectTuResponse;

/// Proceeding: a provisional was sent, waiting for the TU's final response.
#[derive(Debug)]
pub struct ExpectTuFinal;

/// Completed: the final response was sent; answering retransmissions with it until
/// Timer J.
#[derive(Debug)]
pub struct AnswerRetransmissions;

/// The state of a non-INVITE server transaction.
#[derive(Debug)]
pub enum State {
    /// §17.2.2 Trying.
    Trying(ExpectTuResponse),
    /// §17.2.2 Proceeding.
    Proceeding(ExpectTuFinal),
    /// §17.2.2 Completed.
    Completed(AnswerRetransmissions),
    /// Gone; the layer removes the transaction.
    Terminated,
}

#[derive(Debug)]
struct Shared {
    peer: Peer,
    last: Bytes,
    timers: TimerTable,
}

/// A non-INVITE server transaction.
#[derive(Debug)]
pub struct Nist {
    shared: Shared,
    state: State,
}

impl Shared {
    /// Sends the TU's response and moves on (§17.2.2): 1xx to Proceeding, a final to
    /// Completed with Timer J (zero over a reliable transport: straight to Terminated).
    fn respond(&mut self, ctx: &mut Ctx<'_>, response: &Response) -> State {
        self.last = response.to_bytes();
        ctx.transmit(self.peer, self.last.clone());
        if response.class() == 1 {
            return State::Proceeding(ExpectTuFinal);
        }
        let j = ctx.cfg.j(self.peer.transport.is_reliable());
        if j.is_zero() {
            return State::Terminated;
        }
        ctx.arm(&mut self.timers, Timer::J, j);
        State::Completed(AnswerRetransmissions)
    }
}

impl ExpectTuResponse {
    fn on_tu_response(self, sh: &mut Shared, ctx: &mut Ctx<'_>, response: &Response) -> State {
        sh.respond(ctx, response)
    }
}

impl ExpectTuFinal {
    fn on_tu_response(self, sh: &mut Shared, ctx: &mut Ctx<'_>, response: &Response) -> State {
        sh.respond(ctx, response)
    }
}

impl Nist {
    /// Creates the transaction for a new request; nothing is sent until the TU answers.
    /// It keeps no copy of the request: matching is by key, and a retransmission is
    /// answered with the last response's bytes (a REGISTER flood holds every transaction
    /// for Timer J, 32 s over UDP, so the copy would be most of its memory).
    pub(crate) fn start(peer: Peer) -> Nist {
        Nist {
            shared: Shared {
                peer,
                last: Bytes::new(),
                timers: TimerTable::default(),
            },
            state: State::Trying(ExpectTuResponse),
        }
    }

    /// The state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The peer the request came from.
    pub fn peer(&self) -> Peer {
        self.shared.peer
    }

    pub(crate) fn timers(&self) -> &TimerTable {
        &self.shared.timers
    }

    pub(crate) fn timers_mut(&mut self) -> &mut TimerTable {
        &mut self.shared.timers
    }

    pub(crate) fn is_terminated(&self) -> bool {
        matches!(self.state, State::Terminated)
    }

    fn step(&mut self, f: impl FnOnce(State, &mut Shared) -> State) {
        let state = std::mem::replace(&mut self.state, State::Terminated);
        self.state = f(state, &mut self.shared);
        if self.is_terminated() {
            self.shared.timers.stop_all();
        }
    }

    /// A retransmission of the request arrived.
    pub(crate) fn on_retransmission(&mut self, ctx: &mut Ctx<'_>) {
        ctx.out.stats.retransmissions_received += 1;
        match self.state {
            State::Proceeding(_) | State::Completed(_) => {
                ctx.out.stats.resent_on_duplicate += 1;
                ctx.transmit(self.shared.peer, self.shared.last.clone());
            }
            State::Trying(_) | State::Terminated => {}
        }
    }

    /// The TU's response.
    pub(crate) fn send_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        response: &Response,
    ) -> Result<(), TxError> {
        if !matches!(self.state, State::Trying(_) | State::Proceeding(_)) {
            return Err(TxError::InvalidState);
        }
        self.step(|state, sh| match state {
            State::Trying(s) => s.on_tu_response(sh, ctx, response),
            State::Proceeding(s) => s.on_tu_response(sh, ctx, response),
            other => other,
        });
        Ok(())
    }

    /// `timer` fired (its slot already cleared by the layer).
    pub(crate) fn on_timer(&mut self, _ctx: &mut Ctx<'_>, timer: Timer) {
        self.step(|state, _| match (state, timer) {
            (State::Completed(_), Timer::J) => State::Terminated,
            (other, _) => other,
        });
    }

    /// The transport failed to send a response (§17.2.4).
    pub(crate) fn on_transport_error(&mut self, ctx: &mut Ctx<'_>) {
        self.step(|_, _| {
            ctx.transport_error();
            State::Terminated
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::txn::testutil::*;
    use crate::txn::{TxError, TxEvent, TxKind};
    use crate::wire::Method;

    #[test]
    fn nist_retransmission_in_trying_is_absorbed_silently() {
        let mut h = Harness::udp();
        let reg = request(Method::Register, &new_branch_for_test());
        h.layer.handle_request(h.now, h.peer, reg.clone());
        let ev = h.events();
        assert!(matches!(&ev[..], [TxEvent::Request { .. }]));
        h.layer.handle_request(h.now, h.peer, reg);
        assert!(h.transmits().is_empty());
        assert!(h.events().is_empty());
        assert_eq!(h.layer.stats().retransmissions_received, 1);
        assert_eq!(h.layer.count(TxKind::NonInviteServer), 1);
    }

    #[test]
    fn nist_retransmission_in_proceeding_and_completed_resends_last_response() {
        let mut h = Harness::udp();
        let reg = request(Method::Register, &new_branch_for_test());
        h.layer.handle_request(h.now, h.peer, reg.clone());
        let tx = match h.events()[..] {
            [TxEvent::Request { tx, .. }] => tx,
            _ => panic!("no Request event"),
        };
        let trying = reg.response(100, None, None);
        h.layer.send_response(h.now, tx, trying.clone()).unwrap();
        h.transmits();
        h.layer.handle_request(h.now, h.peer, reg.clone());
        assert_eq!(h.transmits()[0].bytes, trying.to_bytes());
        let ok = reg.response(200, None, Some("reg"));
        h.layer.send_response(h.now, tx, ok.clone()).unwrap();
        h.transmits();
        h.layer.handle_request(h.now, h.peer, reg.clone());
        assert_eq!(h.transmits()[0].bytes, ok.to_bytes());
        assert!(h.events().is_empty());
        assert_eq!(
            h.layer.send_response(h.now, tx, ok),
            Err(TxError::InvalidState)
        );
        // Timer J = 64·T1 on UDP.
        h.advance_to_next();
        assert_eq!(h.elapsed(), 32.0);
        assert_eq!(h.events(), vec![TxEvent::Terminated { tx }]);
        assert_eq!(h.layer.len(), 0);
    }

    #[test]
    fn nist_tcp_timer_j_is_zero() {
        let mut h = Harness::tcp();
        let bye = request(Method::Bye, &new_branch_for_test());
        h.layer.handle_request(h.now, h.peer, bye.clone());
        let tx = match h.events()[..] {
            [TxEvent::Request { tx, .. }] => tx,
            _ => panic!("no Request event"),
        };
        h.layer
            .send_response(h.now, tx, bye.response(200, None, None))
            .unwrap();
        assert_eq!(h.layer.len(), 0);
        assert_eq!(h.events(), vec![TxEvent::Terminated { tx }]);
        assert_eq!(h.transmits().len(), 1);
    }
}
