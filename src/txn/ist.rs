//! The INVITE server transaction (RFC 3261 §17.2.1, Figure 7, as updated by RFC 6026
//! §7.1 and §8.5–§8.7, Figure 7 there).
//!
//! ```text
//! INVITE: send 100 --> Proceeding --1xx from TU--> Proceeding
//!                         |  \___ 300-699 from TU --> Completed --ACK--> Confirmed --Timer I--> Terminated
//!                         |                            |  Timer G: retransmit (UDP)
//!                         |                            \__ Timer H: timeout --> Terminated
//!                         \___ 2xx from TU --> Accepted --Timer L--> Terminated
//! ```
//!
//! A retransmitted INVITE re-sends the last response (Proceeding, Completed); in
//! Accepted it is absorbed, never passed to the TU, and every ACK goes up to the TU,
//! which also retransmits its 2xx through the transaction (RFC 6026 §8.5, §8.6).

use super::{Ctx, Timer, TimerTable, TxError, TxEvent};
use crate::transport::Peer;
use crate::wire::{Request, Response};
use bytes::Bytes;
use std::time::Duration;

/// Proceeding: waiting for the TU's final response; INVITE retransmissions get the
/// last provisional response again.
#[derive(Debug)]
pub struct ExpectFinalFromTu;

/// Completed: a 300–699 was sent, waiting for the ACK; Timer G retransmits the
/// response, Timer H gives up.
#[derive(Debug)]
pub struct ExpectAck {
    /// The interval Timer G was last armed with (`None` over a reliable transport).
    g_interval: Option<Duration>,
}

/// Confirmed: the ACK arrived; absorbing ACK retransmissions until Timer I.
#[derive(Debug)]
pub struct AbsorbAckRetransmissions;

/// Accepted (RFC 6026): a 2xx was sent; absorbing INVITE retransmissions, passing ACKs
/// and sending the TU's 2xx retransmissions until Timer L.
#[derive(Debug)]
pub struct Forward2xxAcks;

/// The state of an INVITE server transaction.
#[derive(Debug)]
pub enum State {
    /// §17.2.1 Proceeding.
    Proceeding(ExpectFinalFromTu),
    /// §17.2.1 Completed.
    Completed(ExpectAck),
    /// §17.2.1 Confirmed.
    Confirmed(AbsorbAckRetransmissions),
    /// RFC 6026 §7.1 Accepted.
    Accepted(Forward2xxAcks),
    /// Gone; the layer removes the transaction.
    Terminated,
}

#[derive(Debug)]
struct Shared {
    peer: Peer,
    /// The last response sent, serialised once; kept only while a retransmitted INVITE
    /// or Timer G may need it again (Proceeding, Completed), released in Accepted and
    /// Confirmed, where nothing resends it (the machine lingers 64·T1 there).
    last: Bytes,
    /// The To tag of the final response sent, for RFC 2543 ACK matching (§17.2.3).
    final_to_tag: Option<String>,
    timers: TimerTable,
}

/// An INVITE server transaction.
#[derive(Debug)]
pub struct Ist {
    shared: Shared,
    state: State,
}

impl Shared {
    fn send(&mut self, ctx: &mut Ctx<'_>, response: &Response) {
        self.last = response.to_bytes();
        ctx.transmit(self.peer, self.last.clone());
    }

    fn resend_last(&self, ctx: &mut Ctx<'_>) {
        ctx.out.stats.resent_on_duplicate += 1;
        ctx.transmit(self.peer, self.last.clone());
    }
}

impl ExpectFinalFromTu {
    fn on_tu_response(self, sh: &mut Shared, ctx: &mut Ctx<'_>, response: &Response) -> State {
        sh.send(ctx, response);
        match response.class() {
            1 => State::Proceeding(self),
            2 => {
                sh.final_to_tag = response.common.to.tag().map(str::to_string);
                sh.last = Bytes::new();
                ctx.arm(&mut sh.timers, Timer::L, ctx.cfg.t1x64());
                State::Accepted(Forward2xxAcks)
            }
            _ => {
                sh.final_to_tag = response.common.to.tag().map(str::to_string);
                let g_interval = ctx.cfg.retransmit_start(sh.peer.transport.is_reliable());
                if let Some(g) = g_interval {
                    ctx.arm(&mut sh.timers, Timer::G, g);
                }
                ctx.arm(&mut sh.timers, Timer::H, ctx.cfg.t1x64());
                State::Completed(ExpectAck { g_interval })
            }
        }
    }
}

impl ExpectAck {
    fn on_ack(self, sh: &mut Shared, ctx: &mut Ctx<'_>) -> State {
        sh.timers.stop(Timer::G);
        sh.timers.stop(Timer::H);
        sh.last = Bytes::new();
        let i = ctx.cfg.t4_or_zero(sh.peer.transport.is_reliable());
        if i.is_zero() {
            return State::Terminated;
        }
        ctx.arm(&mut sh.timers, Timer::I, i);
        State::Confirmed(AbsorbAckRetransmissions)
    }

    fn on_timer(self, sh: &mut Shared, ctx: &mut Ctx<'_>, timer: Timer) -> State {
        match (timer, self.g_interval) {
            (Timer::G, Some(prev)) => {
                ctx.retransmit(sh.peer, sh.last.clone());
                let next = ctx.cfg.next_capped(prev);
                ctx.arm(&mut sh.timers, Timer::G, next);
                State::Completed(ExpectAck {
                    g_interval: Some(next),
                })
            }
            (Timer::H, _) => {
                ctx.timeout(Timer::H);
                State::Terminated
            }
            _ => State::Completed(self),
        }
    }
}

impl Ist {
    /// Creates the transaction for a new INVITE and queues the 100 Trying at once
    /// (§17.2.1 allows waiting 200 ms for the TU; answering at once stops the client's
    /// Timer A sooner and costs one datagram).
    pub(crate) fn start(ctx: &mut Ctx<'_>, peer: Peer, request: &Request) -> Ist {
        let trying = request.response(100, None, None);
        let mut shared = Shared {
            peer,
            last: Bytes::new(),
            final_to_tag: None,
            timers: TimerTable::default(),
        };
        shared.send(ctx, &trying);
        Ist {
            shared,
            state: State::Proceeding(ExpectFinalFromTu),
        }
    }

    /// The state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The peer the INVITE came from.
    pub fn peer(&self) -> Peer {
        self.shared.peer
    }

    /// The To tag of the final response sent, if one was.
    pub fn final_to_tag(&self) -> Option<&str> {
        self.shared.final_to_tag.as_deref()
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

    /// A retransmission of the INVITE arrived.
    pub(crate) fn on_retransmission(&mut self, ctx: &mut Ctx<'_>) {
        ctx.out.stats.retransmissions_received += 1;
        match self.state {
            State::Proceeding(_) | State::Completed(_) => self.shared.resend_last(ctx),
            // Confirmed: §17.2.1 absorbs; Accepted: RFC 6026 §8.7 absorbs, the TU
            // retransmits its 2xx on its own schedule.
            State::Confirmed(_) | State::Accepted(_) | State::Terminated => {}
        }
    }

    /// An ACK matched this transaction (§17.2.3).
    pub(crate) fn on_ack(&mut self, ctx: &mut Ctx<'_>, from: Peer, ack: Request) {
        self.step(|state, sh| match state {
            State::Completed(s) => s.on_ack(sh, ctx),
            State::Confirmed(s) => {
                ctx.out.stats.retransmissions_received += 1;
                State::Confirmed(s)
            }
            // RFC 6026 §8.6: in Accepted the ACK (for the 2xx) goes to the TU. One in
            // Proceeding answers nothing the layer sent; the TU may judge it.
            other => {
                ctx.event(TxEvent::Ack { from, request: ack });
                other
            }
        });
    }

    /// The TU's response; a 2xx in Accepted is the TU's retransmission.
    pub(crate) fn send_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        response: &Response,
    ) -> Result<(), TxError> {
        match (&self.state, response.class()) {
            (State::Proceeding(_), _) => {}
            (State::Accepted(_), 2) => {
                // The TU's 2xx retransmission: sent, not kept (nothing resends it here).
                ctx.transmit(self.shared.peer, response.to_bytes());
                return Ok(());
            }
            _ => return Err(TxError::InvalidState),
        }
        self.step(|state, sh| match state {
            State::Proceeding(s) => s.on_tu_response(sh, ctx, response),
            other => other,
        });
        Ok(())
    }

    /// `timer` fired (its slot already cleared by the layer).
    pub(crate) fn on_timer(&mut self, ctx: &mut Ctx<'_>, timer: Timer) {
        self.step(|state, sh| match (state, timer) {
            (State::Completed(s), _) => s.on_timer(sh, ctx, timer),
            (State::Confirmed(_), Timer::I) | (State::Accepted(_), Timer::L) => State::Terminated,
            (other, _) => other,
        });
    }

    /// The transport failed to send a response (§17.2.4). In Accepted the TU is told
    /// and the transaction stays until Timer L (RFC 6026 Figure 7 has no transport
    /// error exit from Accepted), so late INVITE retransmissions are still absorbed.
    pub(crate) fn on_transport_error(&mut self, ctx: &mut Ctx<'_>) {
        self.step(|state, _| {
            ctx.transport_error();
            match state {
                State::Accepted(s) => State::Accepted(s),
                _ => State::Terminated,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::txn::testutil::*;
    use crate::txn::{Timer, TxError, TxEvent, TxId, TxKind};
    use crate::wire::Method;
    use std::time::Duration;

    fn new_invite(h: &mut Harness, branch: &str) -> (TxId, crate::wire::Request) {
        let invite = invite_request(branch);
        h.layer.handle_request(h.now, h.peer, invite.clone());
        let ev = h.events();
        let tx = match &ev[..] {
            [TxEvent::Request { tx, request, .. }] => {
                assert_eq!(request.method, Method::Invite);
                *tx
            }
            other => panic!("expected one Request event, got {other:?}"),
        };
        (tx, invite)
    }

    #[test]
    fn ist_sends_100_trying_at_once() {
        let mut h = Harness::udp();
        let (tx, invite) = new_invite(&mut h, &new_branch_for_test());
        let out = h.transmits();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bytes, invite.response(100, None, None).to_bytes());
        assert_eq!(out[0].peer, h.peer);
        assert_eq!(h.layer.kind(tx), Some(TxKind::InviteServer));
        assert_eq!(h.layer.count(TxKind::InviteServer), 1);
    }

    #[test]
    fn ist_retransmitted_invite_resends_last_response() {
        let mut h = Harness::udp();
        let branch = new_branch_for_test();
        let (tx, invite) = new_invite(&mut h, &branch);
        let trying = h.transmits();
        // Duplicated INVITE before the TU answered: the 100 again, nothing for the TU.
        h.layer.handle_request(h.now, h.peer, invite.clone());
        assert_eq!(h.transmits(), trying);
        assert!(h.events().is_empty());
        let ringing = invite.response(180, None, Some("uas"));
        h.layer.send_response(h.now, tx, ringing.clone()).unwrap();
        let sent = h.transmits();
        h.layer.handle_request(h.now, h.peer, invite);
        let again = h.transmits();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].bytes, sent[0].bytes);
        assert_eq!(again[0].bytes, ringing.to_bytes());
        assert_eq!(h.layer.stats().retransmissions_received, 2);
        assert_eq!(h.layer.stats().resent_on_duplicate, 2);
    }

    #[test]
    fn ist_lost_ack_final_retransmitted_by_timer_g_until_ack() {
        let mut h = Harness::udp();
        let branch = new_branch_for_test();
        let (tx, invite) = new_invite(&mut h, &branch);
        h.transmits();
        let busy = invite.response(486, None, Some("uas"));
        h.layer.send_response(h.now, tx, busy.clone()).unwrap();
        h.transmits();
        // The first ACK is lost: Timer G fires at 0.5 and 1.5 s.
        h.advance_to_next();
        h.advance_to_next();
        let retx = h.transmits();
        assert_eq!(retx.len(), 2);
        assert!(retx.iter().all(|t| t.bytes == busy.to_bytes()));
        assert_eq!(h.elapsed(), 1.5);
        // The retransmitted ACK arrives: Confirmed, Timer I = T4, nothing for the TU.
        h.layer
            .handle_request(h.now, h.peer, ack_for(&invite, "uas"));
        assert!(h.events().is_empty());
        // A duplicate ACK in Confirmed is absorbed.
        h.layer
            .handle_request(h.now, h.peer, ack_for(&invite, "uas"));
        assert!(h.events().is_empty());
        assert!(h.transmits().is_empty());
        h.advance_to_next();
        assert_eq!(h.elapsed(), 1.5 + 5.0);
        assert_eq!(h.events(), vec![TxEvent::Terminated { tx }]);
        assert_eq!(h.layer.len(), 0);
    }

    #[test]
    fn ist_retransmitted_invite_in_completed_resends_final_response() {
        let mut h = Harness::tcp();
        let (tx, invite) = new_invite(&mut h, &new_branch_for_test());
        h.transmits();
        let busy = invite.response(486, None, Some("uas"));
        h.layer.send_response(h.now, tx, busy.clone()).unwrap();
        h.transmits();
        h.layer.handle_request(h.now, h.peer, invite.clone());
        let again = h.transmits();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].bytes, busy.to_bytes());
        assert_eq!(again[0].peer, h.peer, "same TCP connection");
        assert_eq!(again[0].tx, Some(tx));
        assert!(h.events().is_empty());
    }

    #[test]
    fn timer_h_without_ack() {
        let mut h = Harness::udp();
        let (tx, invite) = new_invite(&mut h, &new_branch_for_test());
        h.layer
            .send_response(h.now, tx, invite.response(603, None, Some("uas")))
            .unwrap();
        h.run_until_idle();
        assert_eq!(h.elapsed(), 32.0);
        assert_eq!(h.layer.stats().timeouts_h, 1);
        assert_eq!(h.layer.len(), 0);
    }

    #[test]
    fn timer_h_without_ack_emits_timeout_then_terminated() {
        let mut h = Harness::tcp();
        let (tx, invite) = new_invite(&mut h, &new_branch_for_test());
        h.layer
            .send_response(h.now, tx, invite.response(603, None, Some("uas")))
            .unwrap();
        h.transmits();
        // Over TCP no Timer G: the next deadline is H.
        assert_eq!(
            h.layer.poll_timeout(),
            Some(h.now + Duration::from_secs(32))
        );
        h.advance_to_next();
        assert!(h.transmits().is_empty());
        assert_eq!(
            h.events(),
            vec![
                TxEvent::Timeout {
                    tx,
                    timer: Timer::H
                },
                TxEvent::Terminated { tx }
            ]
        );
    }

    #[test]
    fn ist_tcp_ack_terminates_at_once_timer_i_zero() {
        let mut h = Harness::tcp();
        let (tx, invite) = new_invite(&mut h, &new_branch_for_test());
        h.layer
            .send_response(h.now, tx, invite.response(486, None, Some("uas")))
            .unwrap();
        h.layer
            .handle_request(h.now, h.peer, ack_for(&invite, "uas"));
        assert_eq!(h.layer.len(), 0);
        assert_eq!(h.events(), vec![TxEvent::Terminated { tx }]);
    }

    #[test]
    fn ist_accepted_absorbs_invites_passes_acks_and_sends_tu_2xx_retransmissions() {
        let mut h = Harness::udp();
        let (tx, invite) = new_invite(&mut h, &new_branch_for_test());
        h.transmits();
        let ok = invite.response(200, None, Some("uas"));
        h.layer.send_response(h.now, tx, ok.clone()).unwrap();
        assert_eq!(h.transmits().len(), 1);
        // INVITE retransmission: absorbed, no response, nothing for the TU.
        h.layer.handle_request(h.now, h.peer, invite.clone());
        assert!(h.transmits().is_empty());
        assert!(h.events().is_empty());
        // The TU retransmits its 2xx (§13.3.1.4) through the transaction.
        h.advance(Duration::from_millis(500));
        h.layer.send_response(h.now, tx, ok.clone()).unwrap();
        let retx = h.transmits();
        assert_eq!(retx.len(), 1);
        assert_eq!(retx[0].bytes, ok.to_bytes());
        // A non-2xx in Accepted is refused.
        assert_eq!(
            h.layer
                .send_response(h.now, tx, invite.response(500, None, Some("uas"))),
            Err(TxError::InvalidState)
        );
        // The ACK for the 2xx with the INVITE's branch goes to the TU.
        let ack = ack_for(&invite, "uas");
        h.layer.handle_request(h.now, h.peer, ack.clone());
        assert_eq!(
            h.events(),
            vec![TxEvent::Ack {
                from: h.peer,
                request: ack
            }]
        );
        // Timer L = 64·T1 after the 2xx.
        h.advance_to_next();
        assert_eq!(h.elapsed(), 32.0);
        assert_eq!(h.events(), vec![TxEvent::Terminated { tx }]);
        assert_eq!(h.layer.len(), 0);
        assert_eq!(
            h.layer.send_response(h.now, tx, ok),
            Err(TxError::UnknownTransaction)
        );
    }

    #[test]
    fn ist_response_after_final_is_invalid_state() {
        let mut h = Harness::udp();
        let (tx, invite) = new_invite(&mut h, &new_branch_for_test());
        h.layer
            .send_response(h.now, tx, invite.response(404, None, Some("uas")))
            .unwrap();
        assert_eq!(
            h.layer
                .send_response(h.now, tx, invite.response(180, None, Some("uas"))),
            Err(TxError::InvalidState)
        );
        assert_eq!(
            h.layer
                .send_response(h.now, tx, invite.response(99, None, Some("uas"))),
            Err(TxError::InvalidStatus(99))
        );
    }

    #[test]
    fn ist_transport_error_in_proceeding_terminates() {
        let mut h = Harness::udp();
        let (tx, _) = new_invite(&mut h, &new_branch_for_test());
        h.layer.handle_transport_error(h.now, tx);
        assert_eq!(
            h.events(),
            vec![TxEvent::TransportError { tx }, TxEvent::Terminated { tx }]
        );
        assert_eq!(h.layer.len(), 0);
        assert_eq!(h.layer.stats().transport_errors, 1);
    }
}
