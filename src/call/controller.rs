//! The CallController actor: one per call, bridging the A-leg (the switch is its UAS) and
//! one B-leg per callee binding (the switch is their UAC). Thin: the decisions are the
//! pure `CallMachine`'s; this file turns SIP into its events and its commands into SIP.
//!
//! RFC 3261 duties that are SIP, not call logic, are done here: the A-leg's dialog
//! (§12.1.1, our tag and Contact on every 1xx/2xx to A), retransmitting our 2xx to A until
//! its ACK (§13.3.1.4: T1 doubling to T2, through the transaction in RFC 6026 Accepted),
//! each B-leg's dialog from its 2xx (§12.1.2), ACK for a B-leg 2xx (§13.2.2.4), CANCEL
//! (§9.1), BYE (§15.1.1) and the remote CSeq check of in-dialog requests (§12.2.2).

use super::{CallInput, CallNo, CallOutput, Purpose};
use crate::dialog::{self, BLeg, Dialog};
use crate::metrics;
use crate::transport::{local_tag, Peer, Transport};
use crate::txn::{new_branch, TxId};
use crate::wire::{Header, HostPort, NameAddr, Request, Response, SipUri, Uri};
use actix::prelude::*;
use softswitch_actors::billing::{self, BillingHandle, Cdr};
use softswitch_actors::binding::Binding;
use softswitch_actors::call::{
    CallMachine, CallTimer, CallTimers, Command, Event, HangupBy, LegFailure, LegId, Outcome,
};
use softswitch_actors::port::TransportKind;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// What every call needs to know of the switch.
#[derive(Clone)]
pub struct CallSettings {
    /// Our sent-by (and Contact host) for UDP.
    pub udp: HostPort,
    /// Our sent-by (and Contact host) for TCP.
    pub tcp: HostPort,
    /// Machine timers.
    pub timers: CallTimers,
    /// RFC 3261 T1 and T2, for 2xx retransmission.
    pub t1: Duration,
    /// T2.
    pub t2: Duration,
    /// Where CDRs go.
    pub billing: BillingHandle,
    /// The served domain (CDR parties are `sip:user@domain`).
    pub domain: String,
    /// What `GET /api/calls` lists: every call's current view, kept by the call.
    pub registry: Arc<dashmap::DashMap<CallNo, serde_json::Value>>,
}

/// A new call.
pub struct NewCall {
    /// Its number.
    pub call: CallNo,
    /// The A-leg INVITE's server transaction.
    pub tx: TxId,
    /// The A-leg INVITE.
    pub invite: Request,
    /// Where A's responses and requests go.
    pub a_peer: Peer,
    /// The callee's bindings.
    pub targets: Arc<Vec<Binding>>,
    /// The callee's AOR as dialled (To of the B-legs).
    pub callee_to: NameAddr,
    /// The authenticated caller (user name).
    pub caller: String,
    /// The callee as dialled (user name).
    pub callee: String,
}

struct ALeg {
    tx: TxId,
    invite: Request,
    peer: Peer,
    tag: String,
    dialog: Option<Dialog>,
    /// Our 2xx, kept for retransmission until A's ACK.
    ok: Option<Response>,
    ok_interval: Duration,
}

struct BLegState {
    peer: Peer,
    invite: Request,
    dialog: Option<Dialog>,
}

/// The controller.
pub struct CallController {
    call: CallNo,
    machine: CallMachine,
    settings: Arc<CallSettings>,
    out: mpsc::UnboundedSender<CallOutput>,
    a: ALeg,
    b: Vec<BLegState>,
    timers: HashMap<CallTimer, SpawnHandle>,
    retransmit: Option<SpawnHandle>,
    started: Instant,
    start_time: SystemTime,
    caller: String,
    callee: String,
    setup_recorded: bool,
    /// BYEs received, answered once the CDR is on disk.
    pending_byes: Vec<(LegId, TxId, Request)>,
    cdr: CdrState,
    /// What a phone must not see before the CDR is on disk (the final response that ends
    /// A's attempt, the 200 for a BYE): sent when the write completes.
    after_cdr: Vec<CallOutput>,
    /// A final response went to A's INVITE.
    a_final_sent: bool,
    /// A handler panicked: the call is being torn down, nothing else runs.
    aborted: bool,
    /// What `publish` last put in the API registry (phase, leg states).
    published: Option<(&'static str, Vec<&'static str>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CdrState {
    Pending,
    Writing,
    Written,
}

impl Message for CallInput {
    type Result = ();
}

fn our(settings: &CallSettings, transport: Transport) -> HostPort {
    match transport {
        Transport::Udp => settings.udp.clone(),
        Transport::Tcp => settings.tcp.clone(),
    }
}

fn contact_for(host: HostPort, transport: Transport) -> NameAddr {
    let mut uri = SipUri {
        secure: false,
        user: Some("switch".into()),
        password: None,
        host,
        params: Vec::new(),
        headers: None,
    };
    if transport == Transport::Tcp {
        uri.params.push(crate::wire::Param::new("transport", "tcp"));
    }
    NameAddr::new(Uri::Sip(uri))
}

/// Where a B-leg INVITE goes for binding `b`: the Contact's address when it names the
/// host the REGISTER came from (a phone listening on another port than it sent from, or
/// registering a contact of another process on its host), else the REGISTER's source
/// (`received`/`rport`: a phone behind NAT whose Contact names its private address). Over
/// TCP the registering connection is reused while it lasts (RFC 5626's flow, loosely).
fn peer_of(b: &Binding) -> Peer {
    let transport = match b.source.transport {
        TransportKind::Udp => Transport::Udp,
        TransportKind::Tcp => Transport::Tcp,
    };
    let mut addr = b.source.addr;
    if let Ok(Uri::Sip(u)) = crate::wire::parse_uri(&b.uri) {
        let ip = match &u.host.host {
            crate::wire::Host::V4(a) => Some(std::net::IpAddr::V4(*a)),
            crate::wire::Host::V6(a) => Some(std::net::IpAddr::V6(*a)),
            crate::wire::Host::Name(_) => None,
        };
        if ip == Some(b.source.addr.ip()) {
            addr = std::net::SocketAddr::new(b.source.addr.ip(), u.host.port.unwrap_or(5060));
        }
    }
    Peer {
        transport,
        addr,
        conn: b.source.conn.map(crate::transport::ConnId),
    }
}

fn sdp_of(body: &bytes::Bytes) -> Option<Vec<u8>> {
    (!body.is_empty()).then(|| body.to_vec())
}

impl CallController {
    /// Starts the actor for `new`, answering through `out`.
    pub fn start(
        new: NewCall,
        settings: Arc<CallSettings>,
        out: mpsc::UnboundedSender<CallOutput>,
    ) -> Addr<CallController> {
        let mut b = Vec::new();
        let a_tag = local_tag();
        for binding in new.targets.iter() {
            let peer = peer_of(binding);
            let Ok(target) = crate::wire::parse_uri(&binding.uri) else {
                continue;
            };
            let via = dialog::our_via(
                peer.transport.as_str(),
                our(&settings, peer.transport),
                new_branch(),
            );
            let call_id = format!("{}@{}", local_tag(), our(&settings, peer.transport).host);
            let from_tag = local_tag();
            let leg = BLeg {
                target,
                via,
                contact: contact_for(our(&settings, peer.transport), peer.transport),
                call_id: &call_id,
                from_tag: &from_tag,
                to: new.callee_to.clone(),
                path: &binding.path,
            };
            if let Some(invite) = dialog::b_leg_invite(&new.invite, &leg) {
                b.push(BLegState {
                    peer,
                    invite,
                    dialog: None,
                });
            }
        }
        let timers = settings.timers;
        let t1 = settings.t1;
        CallController::create(move |ctx| {
            ctx.set_mailbox_capacity(64);
            CallController {
                call: new.call,
                machine: CallMachine::new(timers),
                settings,
                out,
                a: ALeg {
                    tx: new.tx,
                    invite: new.invite,
                    peer: new.a_peer,
                    tag: a_tag,
                    dialog: None,
                    ok: None,
                    ok_interval: t1,
                },
                b,
                timers: HashMap::new(),
                retransmit: None,
                started: Instant::now(),
                start_time: SystemTime::now(),
                caller: new.caller,
                callee: new.callee,
                setup_recorded: false,
                pending_byes: Vec::new(),
                cdr: CdrState::Pending,
                after_cdr: Vec::new(),
                a_final_sent: false,
                aborted: false,
                published: None,
            }
        })
    }

    fn send(&self, out: CallOutput) {
        // The driver outlives every call but at shutdown; nothing to do then.
        let _ = self.out.send(out);
    }

    fn b(&mut self, leg: LegId) -> Option<&mut BLegState> {
        let i = (leg.0 as usize).checked_sub(1)?;
        self.b.get_mut(i)
    }

    fn feed(&mut self, ev: Event, ctx: &mut Context<Self>) {
        let cmds = self.machine.handle(ev, SystemTime::now());
        for c in cmds {
            self.execute(c, ctx);
        }
        self.publish();
    }

    /// Refreshes this call's entry of `GET /api/calls` (no secrets: parties, states,
    /// addresses, times) when its phase or a leg's state changed, not at every event.
    fn publish(&mut self) {
        if self.machine.is_done() {
            return;
        }
        let states = self.machine.leg_states();
        let view = (self.machine.phase(), states.clone());
        if self.published.as_ref() == Some(&view) {
            return;
        }
        self.published = Some(view);
        let domain = &self.settings.domain;
        let mut legs = vec![serde_json::json!({
            "leg": "A",
            "role": "uas",
            "call_id": self.a.invite.common.call_id,
            "peer": self.a.peer.addr.to_string(),
            "transport": self.a.peer.transport.as_str(),
            "state": self.machine.phase(),
        })];
        for (i, b) in self.b.iter().enumerate() {
            legs.push(serde_json::json!({
                "leg": format!("B{}", i + 1),
                "role": "uac",
                "call_id": b.invite.common.call_id,
                "peer": b.peer.addr.to_string(),
                "transport": b.peer.transport.as_str(),
                "state": states.get(i).copied().unwrap_or("trying"),
            }));
        }
        let start = softswitch_actors::billing::Timestamp::from(self.start_time).to_string();
        self.settings.registry.insert(
            self.call,
            serde_json::json!({
                "call_id": self.a.invite.common.call_id,
                "caller": format!("sip:{}@{domain}", self.caller),
                "callee": format!("sip:{}@{domain}", self.callee),
                "state": self.machine.phase(),
                "start_time": start,
                "legs": legs,
            }),
        );
    }

    fn execute(&mut self, c: Command, ctx: &mut Context<Self>) {
        match c {
            Command::InviteB { leg } => {
                let call = self.call;
                let Some(b) = self.b(leg) else { return };
                let (to, request) = (b.peer, b.invite.clone());
                let key = (
                    request.common.call_id.clone(),
                    request.common.from.tag().unwrap_or_default().to_string(),
                );
                self.send(CallOutput::Dialog {
                    call,
                    leg,
                    call_id: key.0,
                    local_tag: key.1,
                });
                self.send(CallOutput::Send {
                    call,
                    leg,
                    purpose: Purpose::Invite,
                    to,
                    request,
                });
            }
            Command::CancelB { leg } => {
                let call = self.call;
                let Some(b) = self.b(leg) else { return };
                let (to, request) = (b.peer, dialog::cancel_for(&b.invite));
                self.send(CallOutput::Send {
                    call,
                    leg,
                    purpose: Purpose::Cancel,
                    to,
                    request,
                });
            }
            Command::AckB { leg, sdp } => {
                let settings = self.settings.clone();
                let Some(b) = self.b(leg) else { return };
                let Some(d) = &b.dialog else { return };
                let via = dialog::our_via(
                    b.peer.transport.as_str(),
                    our(&settings, b.peer.transport),
                    new_branch(),
                );
                let body = sdp.map(|s| (bytes::Bytes::from(s), "application/sdp"));
                let ack = d.ack(b.invite.common.cseq.seq, via, body);
                let to = b.peer;
                self.send(CallOutput::Ack { to, request: ack });
            }
            Command::ProvisionalToA { status, sdp } => {
                let r = self.to_a(status, sdp);
                self.send(CallOutput::Respond {
                    tx: self.a.tx,
                    response: r,
                });
            }
            Command::FinalToA { status, sdp } => {
                let r = self.to_a(status, sdp);
                self.record_setup();
                self.a_final_sent = true;
                let out = CallOutput::Respond {
                    tx: self.a.tx,
                    response: r.clone(),
                };
                if (200..300).contains(&status) {
                    self.a.dialog = Dialog::uas(&self.a.invite, &self.a.tag).ok();
                    if self.a.dialog.is_some() {
                        self.send(CallOutput::Dialog {
                            call: self.call,
                            leg: LegId::A,
                            call_id: self.a.invite.common.call_id.clone(),
                            local_tag: self.a.tag.clone(),
                        });
                    }
                    self.a.ok = Some(r);
                    self.arm_retransmit(ctx);
                    self.send(out);
                } else {
                    // The end of A's attempt: the caller sees it only once the CDR is on
                    // disk (a kill -9 after this response loses no record).
                    self.send_after_cdr(out, ctx);
                }
            }
            Command::AnswerBye { leg } => {
                let (answer, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_byes)
                    .into_iter()
                    .partition(|(l, _, _)| *l == leg);
                self.pending_byes = keep;
                for (_, tx, request) in answer {
                    let response = request.response(200, None, None);
                    self.send_after_cdr(CallOutput::Respond { tx, response }, ctx);
                }
            }
            Command::Bye { leg } => self.send_bye(leg),
            Command::StartTimer(t, d) => {
                if let Some(h) = self.timers.remove(&t) {
                    ctx.cancel_future(h);
                }
                let h = ctx.run_later(d, move |act, ctx| {
                    act.timers.remove(&t);
                    act.guarded(ctx, move |act, ctx| act.feed(Event::Timer(t), ctx));
                });
                self.timers.insert(t, h);
            }
            Command::StopTimer(t) => {
                if let Some(h) = self.timers.remove(&t) {
                    ctx.cancel_future(h);
                }
                if t == CallTimer::AckWait {
                    self.stop_retransmit(ctx);
                }
            }
            Command::Finish(outcome) => self.finish(outcome, ctx),
        }
    }

    /// A response to A's INVITE: our tag, our Contact on 1xx/2xx (they create the
    /// dialog), the SDP as received from B.
    fn to_a(&self, status: u16, sdp: Option<Vec<u8>>) -> Response {
        let mut r = self.a.invite.response(status, None, Some(&self.a.tag));
        if status < 300 {
            let host = our(&self.settings, self.a.peer.transport);
            r.common.headers.push(Header::new(
                "Contact",
                contact_for(host, self.a.peer.transport).to_string(),
            ));
        }
        if let Some(s) = sdp {
            r.common
                .headers
                .push(Header::new("Content-Type", "application/sdp"));
            r.common.body = s.into();
        }
        r
    }

    fn send_bye(&mut self, leg: LegId) {
        let call = self.call;
        let settings = self.settings.clone();
        let (peer, dialog) = if leg == LegId::A {
            (self.a.peer, self.a.dialog.as_mut())
        } else {
            match self.b.get_mut((leg.0 as usize).wrapping_sub(1)) {
                Some(b) => (b.peer, b.dialog.as_mut()),
                None => return,
            }
        };
        let Some(d) = dialog else { return };
        let via = dialog::our_via(
            peer.transport.as_str(),
            our(&settings, peer.transport),
            new_branch(),
        );
        let request = d.request(crate::wire::Method::Bye, via);
        self.send(CallOutput::Send {
            call,
            leg,
            purpose: Purpose::Bye,
            to: peer,
            request,
        });
    }

    fn arm_retransmit(&mut self, ctx: &mut Context<Self>) {
        if self.a.peer.transport != Transport::Udp {
            return; // §13.3.1.4: only over unreliable transports
        }
        let wait = self.a.ok_interval;
        self.retransmit = Some(ctx.run_later(wait, |act, ctx| {
            if let Some(ok) = act.a.ok.clone() {
                act.send(CallOutput::Respond {
                    tx: act.a.tx,
                    response: ok,
                });
                act.a.ok_interval = (act.a.ok_interval * 2).min(act.settings.t2);
                act.arm_retransmit(ctx);
            }
        }));
    }

    fn stop_retransmit(&mut self, ctx: &mut Context<Self>) {
        self.a.ok = None;
        if let Some(h) = self.retransmit.take() {
            ctx.cancel_future(h);
        }
    }

    fn record_setup(&mut self) {
        if !self.setup_recorded {
            self.setup_recorded = true;
            metrics::call_setup_duration(self.started.elapsed().as_secs_f64());
        }
    }

    /// `out` once the CDR is on disk; starts writing it when the outcome is known.
    fn send_after_cdr(&mut self, out: CallOutput, ctx: &mut Context<Self>) {
        if self.cdr == CdrState::Written {
            self.send(out);
            return;
        }
        self.after_cdr.push(out);
        if self.cdr == CdrState::Pending {
            if let Some(outcome) = self.machine.outcome() {
                self.write_cdr(outcome, ctx);
            }
        }
    }

    /// The machine is done: every leg settled. The call goes once its CDR is on disk.
    fn finish(&mut self, outcome: Outcome, ctx: &mut Context<Self>) {
        match self.cdr {
            CdrState::Pending => self.write_cdr(outcome, ctx),
            CdrState::Writing => {} // the write's completion ends the call
            CdrState::Written => self.done(ctx),
        }
    }

    fn done(&mut self, ctx: &mut Context<Self>) {
        self.settings.registry.remove(&self.call);
        self.send(CallOutput::Done { call: self.call });
        ctx.stop();
    }

    /// Writes the CDR; only once it is on disk does the call count as ended (the
    /// counters move, the held responses go out).
    fn write_cdr(&mut self, outcome: Outcome, ctx: &mut Context<Self>) {
        self.cdr = CdrState::Writing;
        let domain = &self.settings.domain;
        let party = |u: &str| format!("sip:{u}@{domain}");
        let mut b = Cdr::builder(
            self.a.invite.common.call_id.clone(),
            party(&self.caller),
            party(&self.callee),
            self.start_time,
        );
        if let Some(at) = outcome.answered_at {
            b = b.answered(at).connected(party(&self.callee));
        }
        let cdr = b.end(
            SystemTime::now(),
            cdr_disposition(outcome.disposition),
            outcome.sip_status,
            match outcome.hangup_by {
                HangupBy::Caller => billing::HangupBy::Caller,
                HangupBy::Callee => billing::HangupBy::Callee,
                HangupBy::Switch => billing::HangupBy::Switch,
            },
        );
        let label = disposition_label(&outcome);
        let write = self.settings.billing.write(cdr);
        // ctx.wait: nothing else of this call happens until the record is on disk.
        ctx.wait(write.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(()) => metrics::cdr_written(),
                Err(e) => tracing::error!(call = act.call, error = %e, "CDR not written"),
            }
            act.cdr = CdrState::Written;
            metrics::call_ended(label);
            for out in std::mem::take(&mut act.after_cdr) {
                act.send(out);
            }
            if act.machine.is_done() || act.aborted {
                act.done(ctx);
            }
        }));
    }

    fn on_response(
        &mut self,
        leg: LegId,
        purpose: Purpose,
        response: Response,
        ctx: &mut Context<Self>,
    ) {
        match purpose {
            Purpose::Invite => {
                let status = response.status;
                let sdp = sdp_of(&response.common.body);
                if (200..300).contains(&status) {
                    if let Some(b) = self.b(leg) {
                        if b.dialog.is_none() {
                            b.dialog = Dialog::uac(&b.invite, &response).ok();
                        }
                    }
                    self.feed(Event::Final { leg, status, sdp }, ctx);
                } else if status >= 300 {
                    self.feed(Event::Final { leg, status, sdp }, ctx);
                } else {
                    self.feed(Event::Provisional { leg, status, sdp }, ctx);
                }
            }
            Purpose::Cancel => {}
            Purpose::Bye => {
                if response.status >= 200 {
                    self.feed(Event::ByeDone { leg }, ctx);
                }
            }
        }
    }

    fn on_request(&mut self, leg: LegId, tx: TxId, request: Request, ctx: &mut Context<Self>) {
        let dialog = if leg == LegId::A {
            self.a.dialog.as_mut()
        } else {
            self.b(leg).and_then(|b| b.dialog.as_mut())
        };
        let seq_ok = dialog.is_none_or(|d| d.accept_remote_seq(request.common.cseq.seq));
        if !seq_ok {
            let r = request.response(500, Some("Server Internal Error (CSeq out of order)"), None);
            self.send(CallOutput::Respond { tx, response: r });
            return;
        }
        match request.method {
            crate::wire::Method::Bye => {
                // Answered 200 (§15.1.2) once the CDR is on disk; the machine relays it to
                // the other leg.
                self.pending_byes.push((leg, tx, request));
                self.feed(Event::Bye { leg }, ctx);
                if self.machine.is_done() || self.machine.outcome().is_none() {
                    // A BYE the machine had nothing to do with (crossing ours, or before
                    // the call was up): answer it now.
                    for (_, tx, request) in std::mem::take(&mut self.pending_byes) {
                        let response = request.response(200, None, None);
                        self.send(CallOutput::Respond { tx, response });
                    }
                }
            }
            _ => {
                let r = request.response(501, Some("Not Implemented (in-dialog)"), None);
                self.send(CallOutput::Respond { tx, response: r });
            }
        }
    }
}

fn cdr_disposition(d: softswitch_actors::call::Disposition) -> billing::Disposition {
    use softswitch_actors::call::Disposition as D;
    match d {
        D::Answered => billing::Disposition::Answered,
        D::Busy => billing::Disposition::Busy,
        D::NoAnswer => billing::Disposition::NoAnswer,
        D::Cancelled => billing::Disposition::Cancelled,
        D::Rejected => billing::Disposition::Rejected,
        D::Failed => billing::Disposition::Failed,
    }
}

fn disposition_label(o: &Outcome) -> &'static str {
    use softswitch_actors::call::Disposition::*;
    match o.disposition {
        Answered => "answered",
        Busy => "busy",
        NoAnswer => "no_answer",
        Cancelled => "cancelled",
        Rejected => "rejected",
        Failed => "failed",
    }
}

impl Actor for CallController {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let targets = self.b.len() as u32;
        if targets == 0 {
            // No binding had a usable contact URI.
            let r = self.a.invite.response(480, None, Some(&self.a.tag));
            self.send(CallOutput::Respond {
                tx: self.a.tx,
                response: r,
            });
            metrics::call_ended("failed");
            self.settings.registry.remove(&self.call);
            self.send(CallOutput::Done { call: self.call });
            ctx.stop();
            return;
        }
        let offer = sdp_of(&self.a.invite.common.body);
        self.guarded(ctx, move |act, ctx| {
            act.feed(Event::Start { targets, offer }, ctx)
        });
    }
}

impl CallController {
    /// Runs `f`, and ends this call only should it panic (actix catches no panics: one
    /// unwinding through the arbiter would take every call with it). The call's state
    /// is not trusted after that: every leg is released as far as its SIP state allows
    /// (500 to A's INVITE if unanswered, BYE on each established dialog, CANCEL for each
    /// pending B-leg INVITE) and its CDR says `failed`, 500, `hangup_by = switch`.
    fn guarded(&mut self, ctx: &mut Context<Self>, f: impl FnOnce(&mut Self, &mut Context<Self>)) {
        if self.aborted {
            return;
        }
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self, ctx)));
        if run.is_err() {
            tracing::error!(
                call = self.call,
                "call handler panicked: ending this call only"
            );
            metrics::call_panicked();
            self.abort(ctx);
        }
    }

    fn abort(&mut self, ctx: &mut Context<Self>) {
        self.aborted = true;
        for t in self.timers.drain().map(|(_, h)| h).collect::<Vec<_>>() {
            ctx.cancel_future(t);
        }
        self.stop_retransmit(ctx);
        if self.a.dialog.is_none() && !self.a_final_sent {
            let r = self
                .a
                .invite
                .response(500, Some("Server Internal Error"), Some(&self.a.tag));
            self.send(CallOutput::Respond {
                tx: self.a.tx,
                response: r,
            });
        }
        if self.a.dialog.is_some() {
            self.send_bye(LegId::A);
        }
        for i in 0..self.b.len() {
            let leg = LegId(i as u32 + 1);
            if self.b[i].dialog.is_some() {
                self.send_bye(leg);
            } else {
                let (to, request) = (self.b[i].peer, dialog::cancel_for(&self.b[i].invite));
                self.send(CallOutput::Send {
                    call: self.call,
                    leg,
                    purpose: Purpose::Cancel,
                    to,
                    request,
                });
            }
        }
        for (_, tx, request) in std::mem::take(&mut self.pending_byes) {
            let response = request.response(200, None, None);
            self.after_cdr.push(CallOutput::Respond { tx, response });
        }
        let outcome = Outcome {
            disposition: softswitch_actors::call::Disposition::Failed,
            sip_status: 500,
            hangup_by: HangupBy::Switch,
            answered_at: None,
            connected_leg: None,
        };
        // The write's completion ends an aborted call; an already written CDR ends it now.
        match self.cdr {
            CdrState::Pending => self.write_cdr(outcome, ctx),
            CdrState::Writing => {}
            CdrState::Written => {
                for out in std::mem::take(&mut self.after_cdr) {
                    self.send(out);
                }
                self.done(ctx);
            }
        }
    }

    /// Test builds only (compiled out of release builds, which have no debug assertions):
    /// an INVITE with `X-Softswitch-Test-Fault: panic` makes its call panic at the first
    /// response from a B-leg, so tests can prove one call's panic harms no other.
    #[cfg(debug_assertions)]
    fn fault_hook(&self, msg: &CallInput) {
        let armed = self
            .a
            .invite
            .common
            .header("X-Softswitch-Test-Fault")
            .is_some_and(|v| v.trim() == "panic");
        if armed && matches!(msg, CallInput::Response { .. }) {
            panic!("test fault: X-Softswitch-Test-Fault: panic");
        }
    }
}

impl Handler<CallInput> for CallController {
    type Result = ();

    fn handle(&mut self, msg: CallInput, ctx: &mut Self::Context) {
        self.guarded(ctx, move |act, ctx| act.handle_input(msg, ctx));
    }
}

impl CallController {
    fn handle_input(&mut self, msg: CallInput, ctx: &mut Context<Self>) {
        #[cfg(debug_assertions)]
        self.fault_hook(&msg);
        match msg {
            CallInput::Response {
                leg,
                purpose,
                response,
            } => self.on_response(leg, purpose, response, ctx),
            CallInput::Stray { leg, response } => {
                self.on_response(leg, Purpose::Invite, response, ctx)
            }
            CallInput::Failed {
                leg,
                purpose,
                unreachable,
            } => match purpose {
                Purpose::Invite => self.feed(
                    Event::LegFailed {
                        leg,
                        why: if unreachable {
                            LegFailure::Unreachable
                        } else {
                            LegFailure::Timeout
                        },
                    },
                    ctx,
                ),
                Purpose::Bye => self.feed(Event::ByeDone { leg }, ctx),
                Purpose::Cancel => {}
            },
            CallInput::Request { leg, tx, request } => self.on_request(leg, tx, request, ctx),
            CallInput::Ack { leg, request } => {
                if leg == LegId::A {
                    let sdp = sdp_of(&request.common.body);
                    self.stop_retransmit(ctx);
                    self.feed(Event::AckFromA { sdp }, ctx);
                }
            }
            CallInput::Cancel => self.feed(Event::CancelFromA, ctx),
        }
    }
}
