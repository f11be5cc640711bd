//! The Leg actor: one per call leg, supervised by its call's [`CallController`]. The
//! A-leg is the caller's dialog, where the switch is the UAS; each B-leg is a dialog the
//! switch opened as UAC towards one binding of the callee. Each leg is its own SIP dialog
//! with its own Call-ID, tags, CSeq and branches: nothing of one leg's identifiers is ever
//! put on another (a B2BUA hides the topology by construction).
//!
//! A leg turns the SIP of its dialog into the call machine's events (reported to its
//! controller) and the controller's [`LegCommand`]s into SIP (handed to the driver, which
//! owns the transaction layer). The dialogs themselves are [`Dialog`] values the leg owns,
//! early ones included: a B-leg keeps one per To tag its 1xx responses carried (§12.1.2),
//! the one a 2xx names is confirmed and its route set and remote target recomputed
//! (§13.2.2.4); the A-leg's is early from our first 1xx with a tag and confirmed by our
//! 2xx (§12.1.1). Why a Dialog is a value and not an actor of its own is in
//! ARCHITECTURE.md ("Calls").
//!
//! RFC 3261 duties done here: our tag and Contact on every 1xx/2xx to A, retransmitting
//! our 2xx to A until its ACK (§13.3.1.4: T1 doubling to T2), ACK for a B-leg 2xx and for
//! each retransmission of it (§13.2.2.4), CANCEL (§9.1), BYE (§15.1.1), the remote CSeq
//! check of in-dialog requests (§12.2.2) and 501 for in-dialog methods we do not carry.
//!
//! Session timers (RFC 4028, negotiated by [`super::session_timer`]): the leg's own
//! `Session-Expires`/`Min-SE` on the requests it sends, the answer to the party's on its
//! 2xx responses, 422 for too small an interval, a bodiless UPDATE answered here (a
//! refresh of this dialog alone), the switch's own refresh on [`LegCommand::Refresh`],
//! and every refresh of the dialog reported ([`LegReport::SessionRefreshed`]) to the
//! call machine, which keeps the clocks.

use super::controller::{CallController, CallSettings};
use super::session_timer::{self, Asked, Session};
use super::usage::{Admit, Resend, ResendStep, Usage};
use super::{CallInput, CallNo, CallOutput, Purpose};
use crate::call::dialog::{self, Dialog, DialogState};
use crate::endpoint::Refusal;
use crate::metrics;
use crate::transport::{Peer, Transport};
use crate::txn::{new_branch, TxId};
use crate::wire::{Header, HostPort, Method, NameAddr, Request, Response, SipUri, Uri};
use actix::prelude::*;
use actix::WeakAddr;
use softswitch_actors::call::{Event, Kind, LegFailure, LegId};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod session;

/// Leg actors alive in this process (the `softswitch_call_legs_active` gauge).
static LIVE_LEGS: AtomicUsize = AtomicUsize::new(0);

/// Controller → leg.
#[derive(Debug)]
pub enum LegCommand {
    /// B-leg: send the INVITE.
    Invite,
    /// B-leg: CANCEL the INVITE.
    Cancel,
    /// B-leg: ACK its 2xx, with the answer when the offer was late.
    Ack {
        /// The SDP answer for a late offer.
        sdp: Option<Vec<u8>>,
    },
    /// A-leg: a provisional response to the caller.
    Provisional {
        /// Its status.
        status: u16,
        /// Its SDP (an early answer).
        sdp: Option<Vec<u8>>,
    },
    /// A-leg: the final response to the caller's INVITE.
    Final {
        /// Its status.
        status: u16,
        /// Its SDP (the answer in a 2xx).
        sdp: Option<Vec<u8>>,
    },
    /// Answer the BYEs this leg received with 200 (§15.1.2).
    AnswerBye,
    /// Send BYE on this leg's confirmed dialog.
    Bye,
    /// The call failed inside the switch: release this leg as far as its SIP state
    /// allows (500 to an unanswered A, BYE on a confirmed dialog, CANCEL for a pending
    /// INVITE).
    Abort,
    /// Send, in this leg's dialog, the mid-call request the other party sent (its
    /// body and the headers that describe it, byte for byte).
    Relay {
        /// The other party's request.
        request: Box<Request>,
    },
    /// Answer the oldest unanswered mid-call request `method` of this leg's party.
    Answer {
        /// The request's method.
        method: Method,
        /// The other party's answer, or the switch's own refusal.
        reply: Reply,
    },
    /// ACK the 2xx of the re-INVITE relayed on this leg, with the body of the other
    /// party's ACK (a late offer's answer).
    AckRelayed {
        /// The other party's ACK.
        ack: Option<Box<Request>>,
    },
    /// Refresh this leg's session (RFC 4028): UPDATE, or a re-INVITE with the last SDP
    /// the switch sent on the leg.
    Refresh {
        /// The session interval to ask for, seconds.
        interval: u32,
    },
    /// The call is over: stop.
    Stop,
}

/// How a mid-call request of a leg's party is answered.
#[derive(Debug)]
pub enum Reply {
    /// With the other party's answer (status, reason, body and its description).
    Relayed(Box<Response>),
    /// With the switch's own refusal (glare, a pending offer, no answer, no call).
    Refused(Refusal),
}

impl Message for LegCommand {
    type Result = ();
}

/// Leg → controller.
#[derive(Debug)]
pub enum LegReport {
    /// A machine event from this leg's SIP.
    Event(Event),
    /// A BYE arrived and waits for [`LegCommand::AnswerBye`].
    ByeReceived(LegId),
    /// The leg's handler panicked: the call must end (the leg's state is not trusted).
    Panicked(LegId),
    /// The party sent a re-INVITE, UPDATE or INFO (admitted by the leg: no glare on it).
    Modify(LegId, Box<Request>),
    /// The final answer to the request relayed on this leg.
    Relayed(LegId, Box<Response>),
    /// The request relayed on this leg got no answer or could not be sent.
    RelayFailed(LegId, Kind),
    /// The party ACKed our 2xx to its re-INVITE (the ACK, with a late offer's answer).
    RelayAck(LegId, Box<Request>),
    /// The party never ACKed our 2xx to its re-INVITE (64·T1).
    AckTimeout(LegId),
    /// A 2xx set up or refreshed this leg's session (RFC 4028), as negotiated.
    SessionRefreshed(LegId, Session),
    /// The switch's refresh got 408 or 481, or no answer.
    RefreshFailed(LegId),
}

impl Message for LegReport {
    type Result = ();
}

/// What a leg is for.
pub enum Role {
    /// The caller's leg: the switch is the UAS of `tx`, answering with `tag`.
    Uas {
        /// The INVITE server transaction.
        tx: TxId,
        /// Our tag in the A-leg's dialog.
        tag: String,
    },
    /// A callee binding's leg: the switch is the UAC of this INVITE.
    Uac,
}

/// What a leg keeps only while its INVITE is pending, in one box dropped when that is
/// over: a held call keeps only its dialog (and the leg is a field of its call's task,
/// where every inline byte is paid for the call's whole life).
struct Setup {
    /// A: the caller's INVITE, until its final response went (on UDP, until A's ACK of
    /// our 2xx). B: our INVITE, until its final response came (CANCEL is built from it).
    invite: Request,
    /// A: the INVITE server transaction and our tag.
    role: Role,
    /// The early dialogs (B: one per To tag of the 1xx responses; A: ours once a 1xx
    /// with our tag went).
    early: Vec<Dialog>,
    /// A: our 2xx, retransmitted until A's ACK (UDP only).
    ok: Option<Response>,
    resend: Resend,
    retransmit: Option<SpawnHandle>,
}

/// The parts of a leg that only some calls, or only a call's last moments, use.
#[derive(Default)]
struct Rare {
    /// B: the late offer's answer an ACK carries (kept for 2xx retransmissions).
    ack_sdp: Option<Box<[u8]>>,
    /// BYEs received, answered on [`LegCommand::AnswerBye`].
    pending_byes: Vec<(TxId, Box<Request>)>,
    /// Mid-call requests in flight on this leg, both ways.
    usage: Usage,
    /// Our 2xx to the party's re-INVITE, retransmitted until its ACK.
    reok: Option<Box<Reok>>,
    /// The ACK we sent for the 2xx of the re-INVITE we relayed on this leg (sent again
    /// for each retransmission of that 2xx), or that re-INVITE's CSeq number until then.
    reack: Option<(u32, Option<Box<Request>>)>,
    /// The last SDP the switch sent on this leg, for its session refresh by re-INVITE
    /// (kept only when the peer's Allow did not list UPDATE; a copy of its own, never a
    /// slice pinning the datagram it came in).
    sdp: Option<bytes::Bytes>,
}

/// Our 2xx to the party's re-INVITE, until its ACK.
struct Reok {
    /// The re-INVITE's server transaction.
    tx: TxId,
    ok: Response,
    resend: Resend,
    timer: SpawnHandle,
}

/// The headers of a mid-call request or its answer that go across with its body: what
/// describes the body (RFC 3261 §20) and the INFO package (RFC 6086 §7).
const RELAYED_HEADERS: &[&str] = &[
    "Content-Type",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Info-Package",
    "Recv-Info",
];

/// The method of a mid-call request kind.
pub fn method_of(kind: Kind) -> Method {
    match kind {
        Kind::Reinvite => Method::Invite,
        Kind::Update => Method::Update,
        Kind::Info => Method::Info,
    }
}

/// The mid-call request kind of `method`, if it is one.
pub fn kind_of(method: &Method) -> Option<Kind> {
    match method {
        Method::Invite => Some(Kind::Reinvite),
        Method::Update => Some(Kind::Update),
        Method::Info => Some(Kind::Info),
        _ => None,
    }
}

/// One leg.
pub struct Leg {
    call: CallNo,
    id: LegId,
    /// The caller's leg (the switch is its UAS), else a callee binding's (UAC).
    uas: bool,
    /// Weak: the controller outlives its legs (it stops them), and a strong `Addr` is
    /// an allocation per clone that a held call would carry for its whole life.
    controller: WeakAddr<CallController>,
    settings: Arc<CallSettings>,
    peer: Peer,
    /// While the INVITE is pending.
    setup: Option<Box<Setup>>,
    /// The INVITE's CSeq number (an ACK for a 2xx carries it).
    invite_seq: u32,
    /// The confirmed dialog.
    dialog: Option<Dialog>,
    /// What few calls need (a late offer's answer, a BYE being answered), boxed so the
    /// leg of every other call does not carry room for it.
    rare: Option<Box<Rare>>,
    /// A: a final response went. B: one came.
    final_done: bool,
    /// The peer's Allow (its INVITE or its 2xx) listed UPDATE: the switch refreshes the
    /// session with UPDATE, else with a re-INVITE (RFC 4028 §7.4).
    update: bool,
    /// The call was aborted: only releases run.
    aborted: bool,
    /// Its controller said [`LegCommand::Stop`]: the actor may stop.
    stop: bool,
    /// Test builds: `X-Softswitch-Test-Fault: panic-leg` on the caller's INVITE makes
    /// the B-legs panic at their first response.
    #[cfg(debug_assertions)]
    fault: bool,
}

fn our(settings: &CallSettings, transport: Transport) -> HostPort {
    match transport {
        Transport::Udp => settings.udp.clone(),
        Transport::Tcp => settings.tcp.clone(),
    }
}

/// Our Contact on `transport` (the advertised address).
pub fn contact_for(settings: &CallSettings, transport: Transport) -> NameAddr {
    let mut uri = SipUri {
        secure: false,
        user: Some("switch".into()),
        password: None,
        host: our(settings, transport),
        params: Vec::new(),
        headers: None,
    };
    if transport == Transport::Tcp {
        uri.params.push(crate::wire::Param::new("transport", "tcp"));
    }
    NameAddr::new(Uri::Sip(uri))
}

/// Our Via for a new request on `transport`, with a fresh branch.
pub fn via_for(settings: &CallSettings, transport: Transport) -> crate::wire::Via {
    dialog::our_via(transport.as_str(), our(settings, transport), new_branch())
}

fn sdp_of(body: &bytes::Bytes) -> Option<Vec<u8>> {
    (!body.is_empty()).then(|| body.to_vec())
}

/// What a new leg is given.
pub struct NewLeg {
    /// Its call.
    pub call: CallNo,
    /// Its id (A = 0, B-legs from 1).
    pub id: LegId,
    /// UAS or UAC.
    pub role: Role,
    /// The INVITE (A: received; B: to send).
    pub invite: Request,
    /// The peer.
    pub peer: Peer,
    /// Test builds: panic at the first response.
    pub fault: bool,
}

impl Leg {
    /// A leg of `controller`'s call: its address and the future that runs it (polled by
    /// the call's [`super::task::CallTask`]).
    pub fn start(
        new: NewLeg,
        controller: WeakAddr<CallController>,
        settings: Arc<CallSettings>,
    ) -> (WeakAddr<Leg>, super::task::LegFuture) {
        #[cfg(not(debug_assertions))]
        let _ = new.fault;
        let t1 = settings.t1;
        let seq = new.invite.common.cseq.seq;
        let ctx = Context::new();
        // Weak: see `Actor::stopping` below.
        let addr = ctx.address().downgrade();
        let leg = Leg {
            call: new.call,
            id: new.id,
            uas: matches!(new.role, Role::Uas { .. }),
            controller,
            settings,
            peer: new.peer,
            invite_seq: new.invite.common.cseq.seq,
            setup: Some(Box::new(Setup {
                invite: new.invite,
                role: new.role,
                early: Vec::new(),
                ok: None,
                resend: Resend::new(seq, t1),
                retransmit: None,
            })),
            dialog: None,
            rare: None,
            final_done: false,
            update: false,
            aborted: false,
            stop: false,
            #[cfg(debug_assertions)]
            fault: new.fault,
        };
        (addr, ctx.into_future(leg))
    }

    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    fn send(&self, out: CallOutput) {
        // The driver outlives every call but at shutdown; nothing to do then.
        let _ = self.settings.out.send(out);
    }

    fn report(&self, r: LegReport) {
        // The controller lives until it stops its legs.
        if let Some(c) = self.controller.upgrade() {
            c.do_send(r);
        }
    }

    fn event(&self, ev: Event) {
        self.report(LegReport::Event(ev));
    }

    fn register_dialog(&self, call_id: String, local_tag: String) {
        self.send(CallOutput::Dialog {
            call: self.call,
            leg: self.id,
            call_id,
            local_tag,
        });
    }

    /// Runs `f`; should it panic, this leg reports it (its controller ends the call)
    /// instead of unwinding through the arbiter, which would take every call with it.
    fn guarded(&mut self, ctx: &mut Context<Self>, f: impl FnOnce(&mut Self, &mut Context<Self>)) {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self, ctx)));
        if run.is_err() {
            tracing::error!(
                call = self.call,
                leg = self.id.0,
                "call leg handler panicked: ending this call only"
            );
            metrics::call_panicked();
            self.report(LegReport::Panicked(self.id));
        }
    }

    // ---- commands ----

    fn command(&mut self, c: LegCommand, ctx: &mut Context<Self>) {
        if self.aborted && !matches!(c, LegCommand::AnswerBye | LegCommand::Stop) {
            return;
        }
        match c {
            LegCommand::Invite => self.send_invite(),
            LegCommand::Cancel => self.send_cancel(),
            LegCommand::Ack { sdp } => {
                if let Some(sdp) = sdp {
                    self.sent_sdp(&bytes::Bytes::copy_from_slice(&sdp));
                    self.rare().ack_sdp = Some(sdp.into_boxed_slice());
                }
                self.send_ack();
            }
            LegCommand::Provisional { status, sdp } => {
                if let Some((tx, r)) = self.to_a(status, sdp) {
                    if let Some(s) = self.setup.as_deref_mut() {
                        if let (true, Role::Uas { tag, .. }) = (s.early.is_empty(), &s.role) {
                            s.early.extend(Dialog::uas(&s.invite, tag).ok());
                        }
                    }
                    self.send(CallOutput::Respond { tx, response: r });
                }
            }
            LegCommand::Final { status, sdp } => self.final_to_a(status, sdp, ctx),
            LegCommand::AnswerBye => {
                self.terminate_pending();
                let byes = self
                    .rare
                    .as_mut()
                    .map(|r| std::mem::take(&mut r.pending_byes));
                for (tx, request) in byes.unwrap_or_default() {
                    let response = request.response(200, None, None);
                    self.send(CallOutput::Respond { tx, response });
                }
            }
            LegCommand::Bye => {
                self.stop_retransmit(ctx);
                self.terminate_pending();
                self.send_bye();
            }
            LegCommand::Relay { request } => self.relay(&request),
            LegCommand::Answer { method, reply } => self.answer_modify(&method, reply, ctx),
            LegCommand::AckRelayed { ack } => self.ack_relayed(ack.as_deref()),
            LegCommand::Refresh { interval } => self.send_refresh(interval),
            LegCommand::Abort => self.abort(ctx),
            LegCommand::Stop => {
                self.stop_retransmit(ctx);
                self.terminate_pending();
                if let Some(reok) = self.rare.as_mut().and_then(|r| r.reok.take()) {
                    ctx.cancel_future(reok.timer);
                }
                self.stop = true;
                ctx.stop();
            }
        }
    }

    fn send_invite(&mut self) {
        let Some(s) = &self.setup else { return };
        if self.uas {
            return;
        }
        let request = s.invite.clone();
        self.register_dialog(
            request.common.call_id.clone(),
            request.common.from.tag().unwrap_or_default().to_string(),
        );
        self.send(CallOutput::Send {
            call: self.call,
            leg: self.id,
            purpose: Purpose::Invite,
            to: self.peer,
            request,
        });
    }

    fn send_cancel(&mut self) {
        if self.final_done || self.uas {
            return;
        }
        let Some(s) = &self.setup else { return };
        let request = dialog::cancel_for(&s.invite);
        self.send(CallOutput::Send {
            call: self.call,
            leg: self.id,
            purpose: Purpose::Cancel,
            to: self.peer,
            request,
        });
    }

    fn send_ack(&mut self) {
        let Some(d) = &self.dialog else { return };
        let via = via_for(&self.settings, self.peer.transport);
        let body = self
            .rare
            .as_ref()
            .and_then(|r| r.ack_sdp.as_deref())
            .map(|s| (bytes::Bytes::copy_from_slice(s), "application/sdp"));
        let Some(request) = d.ack(self.invite_seq, via, body) else {
            tracing::error!(call = self.call, "dialog unusable: no ACK");
            return;
        };
        self.send(CallOutput::Ack {
            to: self.peer,
            request,
        });
    }

    /// The dialog ends (a BYE either way, or the call stops): the party's mid-call
    /// requests still waiting for the other party's answer get 487 (§15.1.2), so their
    /// server transactions end and the phone is not left waiting.
    fn terminate_pending(&mut self) {
        let pending = self
            .rare
            .as_mut()
            .map(|r| std::mem::take(&mut r.usage.incoming));
        for (tx, request) in pending.unwrap_or_default() {
            let response = Refusal::RequestTerminated.response(&request, "");
            self.send(CallOutput::Respond { tx, response });
        }
    }

    fn send_bye(&mut self) {
        let via = via_for(&self.settings, self.peer.transport);
        let Some(d) = self.dialog.as_mut() else {
            return;
        };
        let Some(request) = d.request(Method::Bye, via) else {
            tracing::error!(call = self.call, "dialog unusable: no BYE");
            return;
        };
        self.send(CallOutput::Send {
            call: self.call,
            leg: self.id,
            purpose: Purpose::Bye,
            to: self.peer,
            request,
        });
    }

    /// A response to A's INVITE: our tag, our Contact on 1xx/2xx (they create the
    /// dialog), our Allow on a 2xx (§13.3.1.4; B's is B's, the switch is A's peer), the
    /// SDP as received from B. `None` once the final response went.
    fn to_a(&self, status: u16, sdp: Option<Vec<u8>>) -> Option<(TxId, Response)> {
        let s = self.setup.as_deref()?;
        let Role::Uas { tx, tag } = &s.role else {
            return None;
        };
        if self.final_done {
            return None;
        }
        let mut r = s.invite.response(status, None, Some(tag));
        if status < 300 {
            r.common.headers.push(Header::new(
                "Contact",
                contact_for(&self.settings, self.peer.transport).to_string(),
            ));
            if status >= 200 {
                r.common
                    .headers
                    .push(Header::new("Allow", crate::endpoint::ALLOW));
            }
        }
        if let Some(s) = sdp {
            r.common
                .headers
                .push(Header::new("Content-Type", "application/sdp"));
            r.common.body = s.into();
        }
        Some((*tx, r))
    }

    fn final_to_a(&mut self, status: u16, sdp: Option<Vec<u8>>, ctx: &mut Context<Self>) {
        let Some((tx, mut r)) = self.to_a(status, sdp) else {
            return;
        };
        let session = if (200..300).contains(&status) {
            self.a_session(&mut r)
        } else {
            None
        };
        self.final_done = true;
        let udp_2xx = (200..300).contains(&status) && self.peer.transport == Transport::Udp;
        if let (true, Some(s)) = ((200..300).contains(&status), self.setup.as_deref_mut()) {
            let mut d = std::mem::take(&mut s.early)
                .pop()
                .or_else(|| match &s.role {
                    Role::Uas { tag, .. } => Dialog::uas(&s.invite, tag).ok(),
                    Role::Uac => None,
                });
            if let Some(d) = d.as_mut() {
                d.confirm(None);
                self.register_dialog(d.call_id().to_string(), d.local_tag().to_string());
            }
            self.dialog = d;
        }
        if udp_2xx {
            // §13.3.1.4: only over unreliable transports; the set-up stays until A's ACK.
            if let Some(s) = self.setup.as_deref_mut() {
                s.ok = Some(r.clone());
            }
            self.arm_retransmit(ctx);
        } else {
            self.setup = None;
        }
        self.send(CallOutput::Respond { tx, response: r });
        if let Some(session) = session {
            self.report(LegReport::SessionRefreshed(self.id, session));
        }
    }

    fn arm_retransmit(&mut self, ctx: &mut Context<Self>) {
        let Some(wait) = self.setup.as_ref().map(|s| s.resend.first_wait()) else {
            return;
        };
        self.retransmit_after(wait, ctx);
    }

    fn retransmit_after(&mut self, wait: Duration, ctx: &mut Context<Self>) {
        let h = ctx.run_later(wait, |act, ctx| {
            let (t1, t2) = (act.settings.t1, act.settings.t2);
            let Some(s) = act.setup.as_deref_mut() else {
                return;
            };
            let (Role::Uas { tx, .. }, Some(ok)) = (&s.role, &s.ok) else {
                return;
            };
            let out = CallOutput::Respond {
                tx: *tx,
                response: ok.clone(),
            };
            // Past 64·T1 the machine's AckWait ends the call (§13.3.1.4).
            if let ResendStep::Again(next) = s.resend.step(t1, t2) {
                act.send(out);
                act.retransmit_after(next, ctx);
            }
        });
        if let Some(s) = self.setup.as_deref_mut() {
            s.retransmit = Some(h);
        }
    }

    /// Stops retransmitting our 2xx (A's ACK came, or we release): that ends the set-up.
    fn stop_retransmit(&mut self, ctx: &mut Context<Self>) {
        let Some(s) = self.setup.as_deref_mut() else {
            return;
        };
        if let Some(h) = s.retransmit.take() {
            ctx.cancel_future(h);
        }
        if s.ok.is_some() {
            self.setup = None;
        }
    }

    fn abort(&mut self, ctx: &mut Context<Self>) {
        self.aborted = true;
        self.stop_retransmit(ctx);
        if self.uas {
            if !self.final_done {
                if let Some(Setup {
                    invite,
                    role: Role::Uas { tx, tag },
                    ..
                }) = self.setup.as_deref()
                {
                    let r = invite.response(500, Some("Server Internal Error"), Some(tag));
                    let tx = *tx;
                    self.final_done = true;
                    self.send(CallOutput::Respond { tx, response: r });
                }
            } else if self.dialog.is_some() {
                self.send_bye();
            }
        } else if self.dialog.is_some() {
            self.send_bye();
        } else if !self.final_done {
            self.send_cancel();
        }
    }

    /// Sends the other party's mid-call request in this leg's dialog: our Via, CSeq,
    /// tags and route set; its body and the headers describing it byte for byte; our
    /// Contact and Allow on a re-INVITE or UPDATE (a target refresh, §14.1, RFC 3311).
    fn relay(&mut self, from: &Request) {
        let via = via_for(&self.settings, self.peer.transport);
        let kind = kind_of(&from.method);
        let request = self
            .dialog
            .as_mut()
            .and_then(|d| d.request(from.method.clone(), via));
        let (Some(mut request), Some(kind)) = (request, kind) else {
            if let Some(kind) = kind {
                self.report(LegReport::RelayFailed(self.id, kind));
            }
            return;
        };
        for h in &from.common.headers {
            if RELAYED_HEADERS
                .iter()
                .any(|n| h.name.eq_ignore_ascii_case(n))
            {
                request.common.headers.push(h.clone());
            }
        }
        if kind != Kind::Info {
            request.common.headers.push(Header::new(
                "Contact",
                contact_for(&self.settings, self.peer.transport).to_string(),
            ));
            request
                .common
                .headers
                .push(Header::new("Allow", crate::endpoint::ALLOW));
            // This leg's own session timer (RFC 4028 §7.4), never the sender's: the far
            // UAS answers with the refresher, as to the INVITE that set the leg up.
            let policy = &self.settings.session;
            request
                .common
                .headers
                .extend(session_timer::request_headers(
                    policy.session_expires,
                    None,
                    policy,
                ));
            self.sent_sdp(&from.common.body);
        }
        request.common.body = from.common.body.clone();
        let seq = request.common.cseq.seq;
        let rare = self.rare();
        rare.usage.outgoing.push((request.method.clone(), seq));
        if kind == Kind::Reinvite {
            rare.reack = Some((seq, None));
        }
        self.send(CallOutput::Send {
            call: self.call,
            leg: self.id,
            purpose: Purpose::Relay(kind),
            to: self.peer,
            request,
        });
    }

    /// Answers the party's oldest unanswered `method` request: with the other party's
    /// `answer` (status, reason, body and its description), else with `status` alone.
    /// A 2xx to a re-INVITE or UPDATE carries our Contact and Allow; a 2xx to a
    /// re-INVITE is retransmitted until its ACK (UDP), and waited for 64·T1 (§13.3.1.4).
    fn answer_modify(&mut self, method: &Method, reply: Reply, ctx: &mut Context<Self>) {
        let Some((tx, request)) = self.rare().usage.take_incoming(method) else {
            return;
        };
        let a = match reply {
            Reply::Refused(refusal) => {
                let response = refusal.response(&request, "");
                self.send(CallOutput::Respond { tx, response });
                return;
            }
            Reply::Relayed(a) => a,
        };
        let status = a.status;
        let mut r = request.response(status, Some(&a.reason), None);
        for h in &a.common.headers {
            if RELAYED_HEADERS
                .iter()
                .any(|n| h.name.eq_ignore_ascii_case(n))
                || h.name.eq_ignore_ascii_case("Retry-After")
                || h.name.eq_ignore_ascii_case("Warning")
            {
                r.common.headers.push(h.clone());
            }
        }
        r.common.body = a.common.body.clone();
        let is_2xx = (200..300).contains(&status);
        let mut session = None;
        if is_2xx && *method != Method::Info {
            r.common.headers.push(Header::new(
                "Contact",
                contact_for(&self.settings, self.peer.transport).to_string(),
            ));
            r.common
                .headers
                .push(Header::new("Allow", crate::endpoint::ALLOW));
            // A refresh of this leg's session too (RFC 4028 §9: its interval was
            // checked when the request came, `on_modify`).
            let asked = Asked::of(&request.common);
            if let Ok(s) = session_timer::as_uas(&asked, &self.settings.session) {
                r.common
                    .headers
                    .extend(session_timer::answer_headers(&s, asked.timer));
                session = Some(s);
            }
            self.sent_sdp(&a.common.body);
        }
        if is_2xx && *method == Method::Invite {
            let resend = Resend::new(request.common.cseq.seq, self.settings.t1);
            let timer = self.reok_after(resend.first_wait(), ctx);
            let reok = Box::new(Reok {
                tx,
                ok: r.clone(),
                resend,
                timer,
            });
            if let Some(old) = self.rare().reok.replace(reok) {
                ctx.cancel_future(old.timer);
            }
        }
        self.send(CallOutput::Respond { tx, response: r });
        if let Some(session) = session {
            self.report(LegReport::SessionRefreshed(self.id, session));
        }
    }

    /// The retransmission of our 2xx to the party's re-INVITE (over UDP; over TCP only
    /// the 64·T1 wait for its ACK). The re-INVITE's server transaction is in Accepted
    /// and passes each retransmission on (RFC 6026).
    fn reok_after(&mut self, wait: Duration, ctx: &mut Context<Self>) -> SpawnHandle {
        ctx.run_later(wait, |act, ctx| {
            let (t1, t2) = (act.settings.t1, act.settings.t2);
            let Some(mut reok) = act.rare.as_mut().and_then(|r| r.reok.take()) else {
                return;
            };
            match reok.resend.step(t1, t2) {
                ResendStep::Again(next) => {
                    if act.peer.transport == Transport::Udp {
                        act.send(CallOutput::Respond {
                            tx: reok.tx,
                            response: reok.ok.clone(),
                        });
                    }
                    reok.timer = act.reok_after(next, ctx);
                    act.rare().reok = Some(reok);
                }
                ResendStep::GiveUp => act.report(LegReport::AckTimeout(act.id)),
            }
        })
    }

    /// ACKs the 2xx of the re-INVITE relayed on this leg (§13.2.2.4), with the body of
    /// the other party's ACK.
    fn ack_relayed(&mut self, from: Option<&Request>) {
        let Some(seq) = self
            .rare
            .as_ref()
            .and_then(|r| r.reack.as_ref())
            .map(|r| r.0)
        else {
            return;
        };
        let via = via_for(&self.settings, self.peer.transport);
        let body = from.filter(|a| !a.common.body.is_empty()).map(|a| {
            (
                a.common.body.clone(),
                a.common.header("Content-Type").unwrap_or("application/sdp"),
            )
        });
        let Some(ack) = self.dialog.as_ref().and_then(|d| d.ack(seq, via, body)) else {
            return;
        };
        self.sent_sdp(&ack.common.body);
        self.rare().reack = Some((seq, Some(Box::new(ack.clone()))));
        self.send(CallOutput::Ack {
            to: self.peer,
            request: ack,
        });
    }

    // ---- SIP from the driver ----

    fn input(&mut self, msg: CallInput, ctx: &mut Context<Self>) {
        #[cfg(debug_assertions)]
        if self.fault && matches!(msg, CallInput::Response { .. }) {
            panic!("test fault: X-Softswitch-Test-Fault: panic-leg");
        }
        match msg {
            CallInput::Response { purpose, response } => self.on_response(purpose, response),
            CallInput::Stray { response } => self.on_response(Purpose::Invite, response),
            CallInput::Failed {
                purpose,
                unreachable,
            } => match purpose {
                Purpose::Invite => {
                    self.final_done = true;
                    self.setup = None;
                    self.event(Event::LegFailed {
                        leg: self.id,
                        why: if unreachable {
                            LegFailure::Unreachable
                        } else {
                            LegFailure::Timeout
                        },
                    });
                }
                Purpose::Bye => self.event(Event::ByeDone { leg: self.id }),
                Purpose::Cancel => {}
                Purpose::Relay(kind) => {
                    if let Some(r) = self.rare.as_mut() {
                        let m = method_of(kind);
                        if let Some(i) = r.usage.outgoing.iter().position(|(o, _)| *o == m) {
                            r.usage.outgoing.remove(i);
                        }
                    }
                    self.report(LegReport::RelayFailed(self.id, kind));
                }
                Purpose::Refresh { kind, .. } => {
                    if let (Kind::Reinvite, Some(r)) = (kind, self.rare.as_mut()) {
                        r.usage.outgoing.retain(|(m, _)| *m != Method::Invite);
                    }
                    self.report(LegReport::RefreshFailed(self.id));
                }
            },
            CallInput::Request { tx, request } => self.on_request(tx, request),
            CallInput::Ack { request } => {
                let seq = request.common.cseq.seq;
                let reok = self
                    .rare
                    .as_ref()
                    .and_then(|r| r.reok.as_ref())
                    .is_some_and(|r| r.resend.acked_by(seq));
                if reok {
                    // The ACK of our 2xx to the party's re-INVITE.
                    if let Some(r) = self.rare.as_mut().and_then(|r| r.reok.take()) {
                        ctx.cancel_future(r.timer);
                    }
                    self.report(LegReport::RelayAck(self.id, Box::new(request)));
                } else if self.uas && seq == self.invite_seq {
                    self.stop_retransmit(ctx);
                    let sdp = sdp_of(&request.common.body);
                    self.event(Event::AckFromA { sdp });
                }
            }
            CallInput::Cancel => self.event(Event::CancelFromA),
        }
    }

    fn on_response(&mut self, purpose: Purpose, response: Response) {
        let leg = self.id;
        let relayed_2xx = purpose == Purpose::Invite
            && response.common.cseq.seq != self.invite_seq
            && response.common.cseq.method == Method::Invite;
        if relayed_2xx {
            // A 2xx retransmission of a re-INVITE we relayed, after its transaction.
            return self.on_relayed_response(Kind::Reinvite, response);
        }
        match purpose {
            Purpose::Relay(kind) => self.on_relayed_response(kind, response),
            Purpose::Refresh { kind, interval } => {
                self.on_refresh_response(kind, interval, response)
            }
            Purpose::Invite => {
                let status = response.status;
                let sdp = sdp_of(&response.common.body);
                if status < 200 {
                    self.early_dialog(&response);
                    self.event(Event::Provisional { leg, status, sdp });
                    return;
                }
                let mut session = None;
                if (200..300).contains(&status) && self.dialog.is_none() {
                    session = self.b_session(&response);
                }
                if (200..300).contains(&status) {
                    self.confirm(&response);
                }
                // The first final response ends the INVITE; a 2xx retransmission is fed
                // again so the machine ACKs it again.
                self.final_done = true;
                if status >= 300 {
                    self.setup = None;
                }
                self.event(Event::Final { leg, status, sdp });
                if let Some(session) = session {
                    self.report(LegReport::SessionRefreshed(leg, session));
                }
            }
            Purpose::Cancel => {}
            Purpose::Bye => {
                if response.status >= 200 {
                    self.event(Event::ByeDone { leg });
                }
            }
        }
    }

    /// A response to the request relayed on this leg: the final one goes to the
    /// controller (once: a retransmitted 2xx of a re-INVITE gets our ACK again, §13.2.2.4).
    fn on_relayed_response(&mut self, kind: Kind, response: Response) {
        if response.status < 200 {
            return;
        }
        let (method, seq) = (method_of(kind), response.common.cseq.seq);
        let first = self
            .rare
            .as_mut()
            .is_some_and(|r| r.usage.answered(&method, seq));
        if !first {
            let again = self
                .rare
                .as_ref()
                .and_then(|r| r.reack.as_ref())
                .filter(|(s, _)| *s == seq)
                .and_then(|(_, ack)| ack.clone());
            if let (Some(ack), true) = (again, (200..300).contains(&response.status)) {
                self.send(CallOutput::Ack {
                    to: self.peer,
                    request: *ack,
                });
            }
            return;
        }
        let mut session = None;
        if (200..300).contains(&response.status) && kind != Kind::Info {
            if let Some(d) = self.dialog.as_mut() {
                d.refresh_target(&response.common);
            }
            // It refreshed this leg's session (RFC 4028 §7.2).
            session = Some(session_timer::as_uac(
                &Asked::of(&response.common),
                self.settings.session.session_expires,
            ));
        }
        self.report(LegReport::Relayed(self.id, Box::new(response)));
        if let Some(session) = session {
            self.report(LegReport::SessionRefreshed(self.id, session));
        }
    }

    /// A 1xx with a To tag creates an early dialog (§12.1.2), one per tag.
    fn early_dialog(&mut self, response: &Response) {
        let Some(s) = self.setup.as_deref_mut() else {
            return;
        };
        let Some(tag) = response.common.to.tag() else {
            return;
        };
        if self.dialog.is_some() || s.early.iter().any(|d| d.remote_tag() == tag) {
            return;
        }
        if let Ok(d) = Dialog::uac(&s.invite, response) {
            s.early.push(d);
        }
    }

    /// A 2xx confirms the early dialog of its tag, or creates the confirmed dialog.
    fn confirm(&mut self, response: &Response) {
        if self.dialog.is_some() {
            return; // a retransmission
        }
        let Some(mut s) = self.setup.take() else {
            return;
        };
        let tag = response.common.to.tag().unwrap_or_default();
        let early = s.early.iter().position(|d| d.remote_tag() == tag);
        let d = match early {
            Some(i) => {
                let mut d = s.early.swap_remove(i);
                d.confirm(Some(response));
                Some(d)
            }
            None => Dialog::uac(&s.invite, response).ok(),
        };
        self.dialog = d.filter(|d| d.state == DialogState::Confirmed);
    }

    fn on_request(&mut self, tx: TxId, request: Request) {
        let ours = |d: &Dialog| {
            d.call_id() == request.common.call_id && request.common.to.tag() == Some(d.local_tag())
        };
        if self.dialog.as_ref().is_some_and(|d| !ours(d)) {
            // The driver's dialog key matched another dialog's (see `DialogKey`).
            let r = Refusal::CallDoesNotExist.response(&request, "");
            self.send(CallOutput::Respond { tx, response: r });
            return;
        }
        let seq_ok = self
            .dialog
            .as_mut()
            .is_none_or(|d| d.accept_remote_seq(request.common.cseq.seq));
        if !seq_ok {
            let r = Refusal::CSeqOutOfOrder.response(&request, "");
            self.send(CallOutput::Respond { tx, response: r });
            return;
        }
        match request.method {
            Method::Bye => {
                // Answered 200 (§15.1.2) on the controller's word: once the CDR is on
                // disk; the machine relays it to the other leg.
                self.rare().pending_byes.push((tx, Box::new(request)));
                self.report(LegReport::ByeReceived(self.id));
            }
            Method::Options => {
                // §11.2 in a dialog: the peer checking that its dialog is alive (a
                // keep-alive); the switch is the peer's UA on this leg and answers.
                let r = crate::endpoint::options_ok(&request, None);
                self.send(CallOutput::Respond { tx, response: r });
            }
            Method::Invite | Method::Update | Method::Info if self.dialog.is_some() => {
                self.on_modify(tx, request)
            }
            _ => {
                let r = Refusal::NotImplementedInDialog.response(&request, "");
                self.send(CallOutput::Respond { tx, response: r });
            }
        }
    }

    /// The party's re-INVITE, UPDATE or INFO: refused here when it crosses our own offer
    /// on this leg (491) or its own previous one (500), else reported for relaying.
    fn on_modify(&mut self, tx: TxId, request: Request) {
        if request.method != Method::Info {
            let asked = Asked::of(&request.common);
            match session_timer::as_uas(&asked, &self.settings.session) {
                Err(small) => {
                    // RFC 4028 §9: too small an interval, from a party that can retry.
                    let refusal = Refusal::SessionIntervalTooSmall {
                        min_se: small.min_se,
                    };
                    refusal.count();
                    let response = refusal.response(&request, "");
                    self.send(CallOutput::Respond { tx, response });
                    return;
                }
                Ok(session)
                    if request.method == Method::Update && request.common.body.is_empty() =>
                {
                    return self.refreshed_by_update(tx, &request, &asked, session);
                }
                Ok(_) => {}
            }
        }
        let admit = self.rare().usage.admit(&request.method);
        let refusal = match admit {
            Admit::Go => None,
            Admit::Glare => Some(Refusal::RequestPending),
            Admit::Pending => Some(Refusal::OfferPending),
        };
        if let Some(refusal) = refusal {
            let response = refusal.response(&request, "");
            self.send(CallOutput::Respond { tx, response });
            return;
        }
        if request.method != Method::Info {
            if let Some(d) = self.dialog.as_mut() {
                d.refresh_target(&request.common);
            }
        }
        let copy = Box::new(request.clone());
        self.rare().usage.incoming.push((tx, Box::new(request)));
        self.report(LegReport::Modify(self.id, copy));
    }
}

impl Actor for Leg {
    type Context = Context<Self>;

    /// Stops only on its controller's [`LegCommand::Stop`]. The driver and the
    /// controller hold weak addresses of the legs (a strong one is two allocations per
    /// holder, kept for the call's whole life), and actix would stop an actor with no
    /// strong address as soon as it is idle.
    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        if self.stop {
            Running::Stop
        } else {
            Running::Continue
        }
    }

    fn started(&mut self, _: &mut Self::Context) {
        let n = LIVE_LEGS.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::call_legs_active(n);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let n = LIVE_LEGS.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::call_legs_active(n);
    }
}

impl Handler<LegCommand> for Leg {
    type Result = ();

    fn handle(&mut self, c: LegCommand, ctx: &mut Self::Context) {
        self.guarded(ctx, move |act, ctx| act.command(c, ctx));
    }
}

impl Handler<CallInput> for Leg {
    type Result = ();

    fn handle(&mut self, msg: CallInput, ctx: &mut Self::Context) {
        if self.aborted {
            // Only the releases matter now: a BYE still waits for the CDR (the
            // controller answers it), nothing else goes to the machine.
            if let CallInput::Request { tx, request } = msg {
                self.on_request(tx, request);
            }
            return;
        }
        self.guarded(ctx, move |act, ctx| act.input(msg, ctx));
    }
}

#[cfg(test)]
mod tests {
    /// Every answered call's legs allocate their `Rare` box (RFC 4028: the SDP kept for
    /// a refresh), so it holds only pointers to what few calls need: a 2xx or ACK kept
    /// for retransmission is boxed again (inline they made it 1,400 B per leg, doubling
    /// the memory of a held call).
    #[test]
    fn the_rare_box_stays_small() {
        let size = std::mem::size_of::<super::Rare>();
        assert!(size <= 192, "Rare is {size} B, over 192 B");
    }
}
