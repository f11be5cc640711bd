//! The non-INVITE client transaction (RFC 3261 §17.1.2, Figure 6).
//!
//! ```text
//! Trying --1xx--> Proceeding --1xx--> Proceeding
//!    \_____________|___ 200-699 --> Completed --Timer K--> Terminated
//!  Timer E: retransmit (UDP; T1 doubling capped at T2, T2 in Proceeding)
//!  Timer F: timeout (64·T1)
//! ```

use super::{Ctx, Timer, TimerTable, TxEvent};
use crate::transport::Peer;
use crate::wire::{Request, Response};
use bytes::Bytes;
use std::time::Duration;

/// Trying: the request is out, waiting for any response; Timer E retransmits it.
#[derive(Debug)]
pub struct ExpectResponse {
    /// The interval Timer E was last armed with (`None` over a reliable transport).
    e_interval: Option<Duration>,
}

/// Proceeding: a provisional arrived, waiting for the final response; Timer E keeps
/// retransmitting at T2.
#[derive(Debug)]
pub struct ExpectFinal;

/// Completed: the final response arrived; absorbing its retransmissions until Timer K.
#[derive(Debug)]
pub struct AbsorbResponseRetransmissions;

/// The state of a non-INVITE client transaction.
#[derive(Debug)]
pub enum State {
    /// §17.1.2.2 Trying.
    Trying(ExpectResponse),
    /// §17.1.2.2 Proceeding.
    Proceeding(ExpectFinal),
    /// §17.1.2.2 Completed.
    Completed(AbsorbResponseRetransmissions),
    /// Gone; the layer removes the transaction.
    Terminated,
}

#[derive(Debug)]
struct Shared {
    peer: Peer,
    bytes: Bytes,
    timers: TimerTable,
}

/// A non-INVITE client transaction.
#[derive(Debug)]
pub struct Nict {
    shared: Shared,
    state: State,
}

impl Shared {
    fn pass_up(&self, ctx: &mut Ctx<'_>, response: Response) {
        let tx = ctx.id;
        ctx.event(TxEvent::Response { tx, response });
    }

    fn retransmit(&self, ctx: &mut Ctx<'_>) {
        ctx.retransmit(self.peer, self.bytes.clone());
    }

    /// A final response in Trying or Proceeding (§17.1.2.2).
    fn finalise(&mut self, ctx: &mut Ctx<'_>, response: Response) -> State {
        self.timers.stop(Timer::E);
        self.timers.stop(Timer::F);
        // Completed resends nothing: the request's bytes go (Timer K lingers T4).
        self.bytes = Bytes::new();
        self.pass_up(ctx, response);
        let k = ctx.cfg.t4_or_zero(self.peer.transport.is_reliable());
        if k.is_zero() {
            return State::Terminated;
        }
        ctx.arm(&mut self.timers, Timer::K, k);
        State::Completed(AbsorbResponseRetransmissions)
    }

    fn on_timeout_f(&self, ctx: &mut Ctx<'_>) -> State {
        ctx.timeout(Timer::F);
        State::Terminated
    }
}

impl ExpectResponse {
    fn on_response(self, sh: &mut Shared, ctx: &mut Ctx<'_>, response: Response) -> State {
        match response.class() {
            1 => {
                sh.pass_up(ctx, response);
                State::Proceeding(ExpectFinal)
            }
            2..=6 => sh.finalise(ctx, response),
            _ => State::Trying(self),
        }
    }

    fn on_timer(self, sh: &mut Shared, ctx: &mut Ctx<'_>, timer: Timer) -> State {
        match (timer, self.e_interval) {
            (Timer::E, Some(prev)) => {
                sh.retransmit(ctx);
                let next = ctx.cfg.next_capped(prev);
                ctx.arm(&mut sh.timers, Timer::E, next);
                State::Trying(ExpectResponse {
                    e_interval: Some(next),
                })
            }
            (Timer::F, _) => sh.on_timeout_f(ctx),
            _ => State::Trying(self),
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

    fn on_timer(self, sh: &mut Shared, ctx: &mut Ctx<'_>, timer: Timer) -> State {
        match timer {
            // §17.1.2.2: in Proceeding Timer E is reset to T2 each time it fires.
            Timer::E => {
                sh.retransmit(ctx);
                ctx.arm(&mut sh.timers, Timer::E, ctx.cfg.t2);
                State::Proceeding(self)
            }
            Timer::F => sh.on_timeout_f(ctx),
            _ => State::Proceeding(self),
        }
    }
}

impl Nict {
    /// Starts the transaction: sends the request, arms Timers E (unreliable only) and F.
    pub(crate) fn start(ctx: &mut Ctx<'_>, peer: Peer, request: &Request) -> Nict {
        let bytes = request.to_bytes();
        ctx.transmit(peer, bytes.clone());
        let mut timers = TimerTable::default();
        let e_interval = ctx.cfg.retransmit_start(peer.transport.is_reliable());
        if let Some(e) = e_interval {
            ctx.arm(&mut timers, Timer::E, e);
        }
        ctx.arm(&mut timers, Timer::F, ctx.cfg.t1x64());
        Nict {
            shared: Shared {
                peer,
                bytes,
                timers,
            },
            state: State::Trying(ExpectResponse { e_interval }),
        }
    }

    /// The state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The peer the request went to.
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
            State::Trying(s) => s.on_response(sh, ctx, response),
            State::Proceeding(s) => s.on_response(sh, ctx, response),
            State::Completed(s) => {
                ctx.out.stats.retransmissions_received += 1;
                State::Completed(s)
            }
            State::Terminated => State::Terminated,
        });
    }

    /// `timer` fired (its slot already cleared by the layer).
    pub(crate) fn on_timer(&mut self, ctx: &mut Ctx<'_>, timer: Timer) {
        self.step(|state, sh| match (state, timer) {
            (State::Trying(s), _) => s.on_timer(sh, ctx, timer),
            (State::Proceeding(s), _) => s.on_timer(sh, ctx, timer),
            (State::Completed(_), Timer::K) => State::Terminated,
            (other, _) => other,
        });
    }

    /// The transport failed to send the request (§17.1.4).
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
    use crate::txn::TxEvent;
    use crate::wire::Method;
    use std::time::Duration;

    #[test]
    fn nict_timer_e_in_proceeding_is_t2() {
        let mut h = Harness::udp();
        let bye = request(Method::Bye, &new_branch_for_test());
        h.layer.send_request(h.now, h.peer, bye.clone()).unwrap();
        h.transmits();
        h.layer
            .handle_response(h.now, h.peer, bye.response(100, None, None));
        // E was armed at T1 in Trying; after it fires in Proceeding it is T2.
        let mut fires = Vec::new();
        for _ in 0..4 {
            h.advance_to_next();
            if !h.transmits().is_empty() {
                fires.push(h.elapsed());
            }
        }
        assert_eq!(fires, vec![0.5, 4.5, 8.5, 12.5]);
    }

    #[test]
    fn nict_lost_final_response_times_out_with_timer_f() {
        let mut h = Harness::udp();
        let opt = request(Method::Options, &new_branch_for_test());
        h.layer.send_request(h.now, h.peer, opt).unwrap();
        h.run_until_idle();
        assert_eq!(h.elapsed(), 32.0);
        assert_eq!(h.layer.stats().timeouts_f, 1);
        assert_eq!(h.layer.len(), 0);
    }

    #[test]
    fn nict_duplicated_final_response_absorbed_in_completed() {
        let mut h = Harness::udp();
        let bye = request(Method::Bye, &new_branch_for_test());
        let tx = h.layer.send_request(h.now, h.peer, bye.clone()).unwrap();
        h.transmits();
        let ok = bye.response(200, None, None);
        h.layer.handle_response(h.now, h.peer, ok.clone());
        h.layer.handle_response(h.now, h.peer, ok);
        let ev = h.events();
        assert_eq!(ev.len(), 1);
        assert!(matches!(&ev[0], TxEvent::Response { tx: t, .. } if *t == tx));
        assert!(h.transmits().is_empty());
        assert_eq!(h.layer.stats().retransmissions_received, 1);
        // Timer K = T4 ends it.
        h.advance_to_next();
        assert_eq!(h.elapsed(), 5.0);
        assert_eq!(h.events(), vec![TxEvent::Terminated { tx }]);
        assert_eq!(h.layer.len(), 0);
    }

    #[test]
    fn nict_tcp_runs_no_timer_e_and_timer_k_is_zero() {
        let mut h = Harness::tcp();
        let bye = request(Method::Bye, &new_branch_for_test());
        let tx = h.layer.send_request(h.now, h.peer, bye.clone()).unwrap();
        h.transmits();
        assert_eq!(
            h.layer.poll_timeout(),
            Some(h.now + Duration::from_secs(32))
        );
        h.layer
            .handle_response(h.now, h.peer, bye.response(200, None, None));
        assert_eq!(h.layer.len(), 0);
        assert_eq!(h.layer.poll_timeout(), None);
        let ev = h.events();
        assert!(
            matches!(ev[..], [TxEvent::Response { .. }, TxEvent::Terminated { tx: t }] if t == tx)
        );
    }
}
