//! The INVITE client transaction (RFC 3261 §17.1.1, Figure 5, as updated by RFC 6026 §7.2
//! and Figure 5 there).
//!
//! ```text
//! Calling --1xx--> Proceeding --1xx--> Proceeding
//!    |  \______________|___ 300-699: send ACK --> Completed --Timer D--> Terminated
//!    |                 \___ 2xx -----------------> Accepted  --Timer M--> Terminated
//!    +-- Timer A: retransmit (UDP), Timer B: timeout
//! ```
//!
//! The ACK for a non-2xx final response is built here (§17.1.1.3) and re-sent for every
//! retransmission of that response. A 2xx is never ACKed by the transaction: the TU's
//! dialog does that (§13.2.2.4), and every 2xx seen in Accepted goes up to it.

use super::{Ctx, Timer, TimerTable, TxEvent};
use crate::transport::Peer;
use crate::wire::{CSeq, Common, Method, Request, Response};
use bytes::Bytes;
use std::time::Duration;

/// Calling: the INVITE is out, waiting for any response; Timer A retransmits it.
#[derive(Debug)]
pub struct ExpectResponse {
    /// The interval Timer A was last armed with (`None` over a reliable transport).
    a_interval: Option<Duration>,
}

/// Proceeding: a provisional response arrived, waiting for the final one. No timer runs
/// until the TU sends a CANCEL; then Timer B is re-armed for the 64·T1 wait of §9.1.
#[derive(Debug)]
pub struct ExpectFinal;

/// Completed: a 300–699 arrived and was ACKed; waiting for its retransmissions to absorb
/// (each is answered with the same ACK) until Timer D.
#[derive(Debug)]
pub struct AbsorbFinalRetransmissions {
    /// The ACK, serialised once.
    ack: Bytes,
}

/// Accepted (RFC 6026): a 2xx arrived; waiting for 2xx retransmissions and forked 2xx
/// responses to pass up until Timer M.
#[derive(Debug)]
pub struct Forward2xx;

/// The state of an INVITE client transaction.
#[derive(Debug)]
pub enum State {
    /// §17.1.1.2 Calling.
    Calling(ExpectResponse),
    /// §17.1.1.2 Proceeding.
    Proceeding(ExpectFinal),
    /// §17.1.1.2 Completed.
    Completed(AbsorbFinalRetransmissions),
    /// RFC 6026 §7.2 Accepted.
    Accepted(Forward2xx),
    /// Gone; the layer removes the transaction.
    Terminated,
}

/// What every state shares.
#[derive(Debug)]
struct Shared {
    peer: Peer,
    /// The INVITE, until the final response: the ACK for a non-2xx is built from it
    /// (then only that ACK's bytes are kept, for Timer D), a 2xx needs nothing of it.
    request: Option<Box<Request>>,
    /// The INVITE as sent (Timer A), until the first response.
    bytes: Bytes,
    timers: TimerTable,
}

/// An INVITE client transaction.
#[derive(Debug)]
pub struct Ict {
    shared: Shared,
    state: State,
}

/// Builds the ACK for a non-2xx final response (§17.1.1.3): the INVITE's Request-URI,
/// Call-ID, From and CSeq number with method ACK, the To of the response (with its tag),
/// one Via equal to the INVITE's top Via, the INVITE's Route headers, Max-Forwards 70.
pub fn build_ack(invite: &Request, response: &Response) -> Request {
    Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        common: Common {
            via: invite.common.via.iter().take(1).cloned().collect(),
            from: invite.common.from.clone(),
            to: response.common.to.clone(),
            call_id: invite.common.call_id.clone(),
            cseq: CSeq {
                seq: invite.common.cseq.seq,
                method: Method::Ack,
            },
            max_forwards: Some(70),
            headers: invite
                .common
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("Route"))
                .cloned()
                .collect(),
            body: Bytes::new(),
        },
    }
}

impl Shared {
    fn pass_up(&self, ctx: &mut Ctx<'_>, response: Response) {
        let tx = ctx.id;
        ctx.event(TxEvent::Response { tx, response });
    }

    /// A final response in Calling or Proceeding (§17.1.1.2; RFC 6026 §8.4).
    fn finalise(&mut self, ctx: &mut Ctx<'_>, response: Response) -> State {
        self.timers.stop(Timer::A);
        self.timers.stop(Timer::B);
        self.bytes = Bytes::new();
        let Some(request) = self.request.take() else {
            return State::Terminated;
        };
        if response.class() == 2 {
            ctx.arm(&mut self.timers, Timer::M, ctx.cfg.t1x64());
            self.pass_up(ctx, response);
            return State::Accepted(Forward2xx);
        }
        let ack = build_ack(&request, &response).to_bytes();
        ctx.transmit(self.peer, ack.clone());
        self.pass_up(ctx, response);
        let d = ctx.cfg.d(self.peer.transport.is_reliable());
        if d.is_zero() {
            return State::Terminated;
        }
        ctx.arm(&mut self.timers, Timer::D, d);
        State::Completed(AbsorbFinalRetransmissions { ack })
    }
}

impl ExpectResponse {
    fn on_response(self, sh: &mut Shared, ctx: &mut Ctx<'_>, response: Response) -> State {
        match response.class() {
            1 => {
                sh.timers.stop(Timer::A);
                sh.timers.stop(Timer::B);
                sh.bytes = Bytes::new();
                sh.pass_up(ctx, response);
                State::Proceeding(ExpectFinal)
            }
            2..=6 => sh.finalise(ctx, response),
            _ => State::Calling(self),
        }
    }

    fn on_timer(self, sh: &mut Shared, ctx: &mut Ctx<'_>, timer: Timer) -> State {
        match (timer, self.a_interval) {
            (Timer::A, Some(prev)) => {
                ctx.retransmit(sh.peer, sh.bytes.clone());
                let next = ctx.cfg.next_a(prev);
                ctx.arm(&mut sh.timers, Timer::A, next);
                State::Calling(ExpectResponse {
                    a_interval: Some(next),
                })
            }
            (Timer::B, _) => {
                ctx.timeout(Timer::B);
                State::Terminated
            }
            _ => State::Calling(self),
        }
    }
}

impl ExpectFinal {
    fn on_response(self, sh: &mut Shared, ctx: &mut Ctx<'_>, response: Response) -> State {
        match response.class() {
            1 => {
                sh.pass_up(ctx, response);
                State::Proceeding(self)
            }
            2..=6 => sh.finalise(ctx, response),
            _ => State::Proceeding(self),
        }
    }
}

impl ExpectFinal {
    fn on_timer(self, _sh: &mut Shared, ctx: &mut Ctx<'_>, timer: Timer) -> State {
        match timer {
            // §9.1: no final response 64·T1 after the CANCEL; the TU treats it as 408.
            Timer::B => {
                ctx.timeout(Timer::B);
                State::Terminated
            }
            _ => State::Proceeding(self),
        }
    }
}

impl AbsorbFinalRetransmissions {
    fn on_response(self, sh: &mut Shared, ctx: &mut Ctx<'_>, response: Response) -> State {
        if (3..=6).contains(&response.class()) {
            ctx.out.stats.retransmissions_received += 1;
            ctx.out.stats.resent_on_duplicate += 1;
            ctx.transmit(sh.peer, self.ack.clone());
        }
        State::Completed(self)
    }
}

impl Forward2xx {
    fn on_response(self, sh: &mut Shared, ctx: &mut Ctx<'_>, response: Response) -> State {
        // RFC 6026 §8.4: every 2xx goes up; anything else is discarded.
        if response.class() == 2 {
            sh.pass_up(ctx, response);
        }
        State::Accepted(self)
    }
}

impl Ict {
    /// Starts the transaction: sends the INVITE and arms Timers A (unreliable only) and B.
    pub(crate) fn start(ctx: &mut Ctx<'_>, peer: Peer, request: Request) -> Ict {
        let bytes = request.to_bytes();
        ctx.transmit(peer, bytes.clone());
        let mut timers = TimerTable::default();
        let a_interval = ctx.cfg.retransmit_start(peer.transport.is_reliable());
        if let Some(a) = a_interval {
            ctx.arm(&mut timers, Timer::A, a);
        }
        ctx.arm(&mut timers, Timer::B, ctx.cfg.t1x64());
        Ict {
            shared: Shared {
                peer,
                request: Some(Box::new(request)),
                bytes,
                timers,
            },
            state: State::Calling(ExpectResponse { a_interval }),
        }
    }

    /// The state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The peer the INVITE went to.
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

    /// A response matched this transaction (§17.1.3).
    pub(crate) fn on_response(&mut self, ctx: &mut Ctx<'_>, response: Response) {
        self.step(|state, sh| match state {
            State::Calling(s) => s.on_response(sh, ctx, response),
            State::Proceeding(s) => s.on_response(sh, ctx, response),
            State::Completed(s) => s.on_response(sh, ctx, response),
            State::Accepted(s) => s.on_response(sh, ctx, response),
            State::Terminated => State::Terminated,
        });
    }

    /// `timer` fired (its slot already cleared by the layer).
    pub(crate) fn on_timer(&mut self, ctx: &mut Ctx<'_>, timer: Timer) {
        self.step(|state, sh| match (state, timer) {
            (State::Calling(s), _) => s.on_timer(sh, ctx, timer),
            (State::Proceeding(s), _) => s.on_timer(sh, ctx, timer),
            (State::Completed(_), Timer::D) | (State::Accepted(_), Timer::M) => State::Terminated,
            (other, _) => other,
        });
    }

    /// The TU sent a CANCEL for this INVITE. §9.1: if no final response arrives within
    /// 64·T1 the client transaction is destroyed, or a peer that never sends the 487
    /// (an RFC 2543 UAS) would keep it in Proceeding for ever. Timer B measures that
    /// wait: it is re-armed in Proceeding and already running in Calling.
    pub(crate) fn on_cancel_sent(&mut self, ctx: &mut Ctx<'_>) {
        if let State::Proceeding(_) = self.state {
            ctx.arm(&mut self.shared.timers, Timer::B, ctx.cfg.t1x64());
        }
    }

    /// The transport failed to send the INVITE or the ACK (§17.1.4). In Accepted the
    /// layer sends nothing, so the TU is told and the transaction waits out Timer M.
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
    use super::*;
    use crate::txn::testutil::*;
    use crate::txn::{TxEvent, TxKind};

    #[test]
    fn ict_ack_for_non_2xx_per_17_1_1_3() {
        let mut invite = invite_request(&new_branch_for_test());
        invite
            .common
            .headers
            .push(crate::wire::Header::new("Route", "<sip:p1.example.com;lr>"));
        invite
            .common
            .headers
            .push(crate::wire::Header::new("Subject", "hi"));
        invite.common.via.push(via("10.0.0.9", "z9hG4bKlower"));
        let mut resp = invite.response(486, None, Some("callee"));
        resp.common.via.remove(1);
        let ack = build_ack(&invite, &resp);
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(ack.uri, invite.uri);
        assert_eq!(ack.common.call_id, invite.common.call_id);
        assert_eq!(ack.common.from, invite.common.from);
        assert_eq!(ack.common.to.tag(), Some("callee"));
        assert_eq!(ack.common.cseq.seq, invite.common.cseq.seq);
        assert_eq!(ack.common.cseq.method, Method::Ack);
        assert_eq!(ack.common.via, vec![invite.common.via[0].clone()]);
        assert_eq!(ack.common.max_forwards, Some(70));
        assert_eq!(ack.common.headers.len(), 1);
        assert_eq!(ack.common.headers[0].name, "Route");
        assert!(ack.common.body.is_empty());
    }

    #[test]
    fn ict_lost_final_response_recovered_by_retransmission() {
        // The 486 is lost once: Timer A keeps retransmitting the INVITE until it arrives.
        let mut h = Harness::udp();
        let invite = invite_request(&new_branch_for_test());
        let tx = h.layer.send_request(h.now, h.peer, invite.clone()).unwrap();
        let first = h.transmits();
        assert_eq!(first.len(), 1);
        h.advance_to_next();
        let retx = h.transmits();
        assert_eq!(retx.len(), 1);
        assert_eq!(
            retx[0].bytes, first[0].bytes,
            "retransmission reuses the bytes"
        );
        h.layer
            .handle_response(h.now, h.peer, invite.response(486, None, Some("b")));
        let out = h.transmits();
        assert_eq!(out.len(), 1, "the ACK");
        assert!(out[0].bytes.starts_with(b"ACK "));
        let ev = h.events();
        assert!(
            matches!(&ev[0], TxEvent::Response { tx: t, response } if *t == tx && response.status == 486)
        );
        h.run_until_idle();
        assert_eq!(h.layer.len(), 0);
    }

    #[test]
    fn ict_duplicated_final_response_resends_ack_and_is_passed_up_once() {
        let mut h = Harness::udp();
        let invite = invite_request(&new_branch_for_test());
        let tx = h.layer.send_request(h.now, h.peer, invite.clone()).unwrap();
        h.transmits();
        let resp = invite.response(503, None, Some("b"));
        h.layer.handle_response(h.now, h.peer, resp.clone());
        let ack1 = h.transmits();
        h.layer.handle_response(h.now, h.peer, resp.clone());
        let ack2 = h.transmits();
        assert_eq!(ack1.len(), 1);
        assert_eq!(ack2.len(), 1);
        assert_eq!(ack1[0].bytes, ack2[0].bytes);
        let responses = h
            .events()
            .into_iter()
            .filter(|e| matches!(e, TxEvent::Response { .. }))
            .count();
        assert_eq!(responses, 1);
        assert_eq!(h.layer.stats().retransmissions_received, 1);
        assert_eq!(h.layer.kind(tx), Some(TxKind::InviteClient));
        h.run_until_idle();
        assert_eq!(h.layer.len(), 0);
    }

    #[test]
    fn ict_lost_100_then_180_moves_to_proceeding_and_stops_timer_a() {
        let mut h = Harness::udp();
        let invite = invite_request(&new_branch_for_test());
        h.layer.send_request(h.now, h.peer, invite.clone()).unwrap();
        h.transmits();
        // The 100 is lost; the 180 arrives.
        h.layer
            .handle_response(h.now, h.peer, invite.response(180, None, Some("b")));
        assert_eq!(h.layer.poll_timeout(), None, "Proceeding runs no timer");
        h.layer
            .handle_response(h.now, h.peer, invite.response(180, None, Some("b")));
        let provisional = h
            .events()
            .into_iter()
            .filter(|e| matches!(e, TxEvent::Response { .. }))
            .count();
        assert_eq!(provisional, 2, "every provisional response goes up");
        h.layer
            .handle_response(h.now, h.peer, invite.response(200, None, Some("b")));
        h.run_until_idle();
        assert_eq!(h.layer.len(), 0);
    }

    #[test]
    fn ict_accepted_passes_2xx_retransmissions_up_and_never_acks() {
        let mut h = Harness::udp();
        let invite = invite_request(&new_branch_for_test());
        let tx = h.layer.send_request(h.now, h.peer, invite.clone()).unwrap();
        h.transmits();
        let ok = invite.response(200, None, Some("b"));
        h.layer.handle_response(h.now, h.peer, ok.clone());
        h.advance(Duration::from_secs(1));
        h.layer.handle_response(h.now, h.peer, ok.clone());
        // A forked 2xx from another UAS.
        h.layer
            .handle_response(h.now, h.peer, invite.response(200, None, Some("c")));
        // A late 486 in Accepted is discarded.
        h.layer
            .handle_response(h.now, h.peer, invite.response(486, None, Some("d")));
        assert!(
            h.transmits().is_empty(),
            "no ACK from the transaction for a 2xx"
        );
        let oks: Vec<_> = h
            .events()
            .into_iter()
            .filter_map(|e| match e {
                TxEvent::Response { tx: t, response } if t == tx => Some(response.status),
                _ => None,
            })
            .collect();
        assert_eq!(oks, vec![200, 200, 200]);
        // Timer M ends it at 64·T1 after the first 2xx; then a 2xx is stray.
        h.advance_to_next();
        assert_eq!(h.layer.len(), 0);
        assert!(h.events().contains(&TxEvent::Terminated { tx }));
        h.layer.handle_response(h.now, h.peer, ok);
        assert!(matches!(h.events()[..], [TxEvent::StrayResponse { .. }]));
    }

    #[test]
    fn ict_cancel_in_proceeding_destroys_invite_after_64_t1_without_final() {
        let mut h = Harness::udp();
        let invite = invite_request(&new_branch_for_test());
        let tx = h.layer.send_request(h.now, h.peer, invite.clone()).unwrap();
        h.layer
            .handle_response(h.now, h.peer, invite.response(180, None, Some("b")));
        h.advance(Duration::from_secs(60));
        assert_eq!(h.layer.poll_timeout(), None);
        let cancel = cancel_for(&invite);
        let ctx = h.layer.send_request(h.now, h.peer, cancel.clone()).unwrap();
        h.layer
            .handle_response(h.now, h.peer, cancel.response(200, None, Some("b")));
        h.events();
        // The UAS never sends the 487: Timer B, re-armed by the CANCEL, ends the INVITE.
        h.advance_to_next();
        assert_eq!(h.elapsed(), 60.0 + 5.0, "the CANCEL's Timer K");
        assert_eq!(h.events(), vec![TxEvent::Terminated { tx: ctx }]);
        h.advance_to_next();
        assert_eq!(h.elapsed(), 60.0 + 32.0);
        assert_eq!(
            h.events(),
            vec![
                TxEvent::Timeout {
                    tx,
                    timer: Timer::B
                },
                TxEvent::Terminated { tx }
            ]
        );
        assert_eq!(h.layer.len(), 0);
    }

    #[test]
    fn ict_transport_error_in_calling_terminates() {
        let mut h = Harness::udp();
        let invite = invite_request(&new_branch_for_test());
        let tx = h.layer.send_request(h.now, h.peer, invite).unwrap();
        let sent = h.transmits();
        assert_eq!(sent[0].tx, Some(tx));
        h.layer.handle_transport_error(h.now, tx);
        assert_eq!(
            h.events(),
            vec![TxEvent::TransportError { tx }, TxEvent::Terminated { tx }]
        );
        assert_eq!(h.layer.len(), 0);
        assert_eq!(h.layer.poll_timeout(), None);
    }
}
