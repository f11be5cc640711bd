//! The CallController actor: one per call, supervising the call's [`Leg`] actors (the
//! A-leg, where the switch is the caller's UAS, and one B-leg per callee binding, where
//! it is the UAC) and bridging them. Thin: the decisions are the pure `CallMachine`'s;
//! this actor feeds it the legs' reports and hands its commands to the legs, which turn
//! them into SIP. It owns what is the call's and not a leg's: the machine's timers, the
//! CDR (written before the call counts as ended and before the caller sees its end), the
//! setup-time metric, the `/api/calls` entry, and the supervision of its legs: a panic in
//! the controller or in any leg ends this call only (every leg released as far as its SIP
//! state allows, CDR `failed`/500/`hangup_by = switch`), never the process.

use super::forward::Callees;
use super::leg::{self, Leg, LegCommand, LegReport, NewLeg, Role};
use super::task::CallTask;
use super::{CallNo, CallOutput, CallView};
use crate::call::dialog::{self, BLeg};
use crate::endpoint::Refusal;
use crate::metrics;
use crate::transport::{local_tag, Peer, Transport};
use crate::txn::TxId;
use crate::wire::{HostPort, NameAddr, Request, Response, Uri};
use actix::prelude::*;
use actix::WeakAddr;
use softswitch_actors::billing::{self, BillingHandle, Cdr};
use softswitch_actors::binding::Binding;
use softswitch_actors::call::forward::{Chain, Stop};
use softswitch_actors::call::{
    CallMachine, CallTimer, CallTimers, Command, Event, ForwardReason, HangupBy, LegId, Offer,
    Outcome, Refuse,
};
use softswitch_actors::port::TransportKind;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// What every call needs to know of the switch.
pub struct CallSettings {
    /// Our sent-by (and Contact host) for UDP.
    pub udp: HostPort,
    /// Our sent-by (and Contact host) for TCP.
    pub tcp: HostPort,
    /// Machine timers.
    pub timers: Arc<CallTimers>,
    /// RFC 3261 T1 and T2, for 2xx retransmission.
    pub t1: Duration,
    /// T2.
    pub t2: Duration,
    /// Session timers (RFC 4028): what the switch asks for and accepts on each leg.
    pub session: super::session_timer::Policy,
    /// Where CDRs go.
    pub billing: BillingHandle,
    /// The served domain (CDR parties are `sip:user@domain`).
    pub domain: String,
    /// What `GET /api/calls` lists: every call's current view, kept by the call.
    pub registry: Arc<dashmap::DashMap<CallNo, Box<CallView>>>,
    /// Where every call's actors send their [`CallOutput`]s: the driver's receiver
    /// (unbounded: a call sends a handful per SIP message it receives, and the driver
    /// drains it at every wake-up). One sender for all, not one per actor.
    pub out: mpsc::UnboundedSender<CallOutput>,
    /// The callees' forwarding rules, bindings and busy state (shared with the router).
    pub callees: Arc<Callees>,
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
    /// The authenticated caller.
    pub caller: crate::auth::Authenticated,
    /// The callee as dialled (user name).
    pub callee: String,
    /// The forwarding the router followed before ringing anyone: `targets` are the
    /// bindings of its current user.
    pub chain: Chain,
    /// What the B-legs say about the caller.
    pub identity: super::identity::Identity,
}

/// The controller.
pub struct CallController {
    call: CallNo,
    machine: CallMachine,
    settings: Arc<CallSettings>,
    /// The legs, by `LegId` (0 is A); the driver's hub keeps its own list of them.
    legs: Vec<WeakAddr<Leg>>,
    /// A's offer, given to the machine when it starts. A thin box on purpose: a `Vec`
    /// is three words inline, the box one, and this struct is in every held call's task.
    #[allow(clippy::box_collection)]
    offer: Option<Box<Vec<u8>>>,
    timers: Vec<(CallTimer, SpawnHandle)>,
    /// For the setup-duration histogram. The CDR's parties, Call-ID and start time are
    /// in this call's `/api/calls` entry ([`CallView`]), its one copy of them.
    started: Instant,
    setup_recorded: bool,
    cdr: CdrState,
    /// What a phone must not see before the CDR is on disk (the final response that ends
    /// A's attempt, the 200 for a BYE): given to the legs when the write completes.
    /// Boxed (thin, as `offer`), and made only at a call's end.
    #[allow(clippy::box_collection)]
    after_cdr: Option<Box<Vec<(LegId, LegCommand)>>>,
    /// The machine's last commands queued an answer for a BYE.
    bye_answer_queued: bool,
    /// A hash of what the `/api/calls` entry shows (phase, leg states): the entry is
    /// locked and written only when that changes, not at every event.
    published: u64,
    /// A handler panicked: the call is being torn down, nothing else runs.
    aborted: bool,
    /// [`CallController::done`] ran: the actor may stop.
    finished: bool,
    /// A call that was or can be forwarded: its chain and what a C-leg needs. `None`
    /// for most calls (a box: this struct is in every held call's task).
    forwarding: Option<Box<Forwarding>>,
    /// Test builds: `X-Softswitch-Test-Fault: panic` on the caller's INVITE makes this
    /// controller panic at the first report from a B-leg.
    #[cfg(debug_assertions)]
    fault: bool,
}

/// What a forwarded (or forwardable) call keeps.
struct Forwarding {
    chain: Chain,
    /// A's INVITE, the C-legs' INVITEs are built from it; dropped once A has its final
    /// response.
    invite: Option<Request>,
    /// The users rung, each with its first B-leg (leg ids grow with each forward).
    rung: Vec<(LegId, String)>,
    /// What the C-legs say about the caller, as the B-legs did.
    identity: super::identity::Identity,
}

/// The user part of a CDR party `sip:user@domain`.
fn user_part(aor: &str) -> &str {
    let a = aor.strip_prefix("sip:").unwrap_or(aor);
    a.split_once('@').map_or(a, |(u, _)| u)
}

/// What came with a leg's report for the machine's command to pass on.
enum Parcel {
    None,
    Request(Box<Request>),
    Response(Box<Response>),
}

impl Parcel {
    fn request(&mut self) -> Option<Box<Request>> {
        match std::mem::replace(self, Parcel::None) {
            Parcel::Request(r) => Some(r),
            other => {
                *self = other;
                None
            }
        }
    }

    fn response(&mut self) -> Option<Box<Response>> {
        match std::mem::replace(self, Parcel::None) {
            Parcel::Response(r) => Some(r),
            other => {
                *self = other;
                None
            }
        }
    }
}

/// The switch's own answer to a mid-call request, for the machine's reason.
fn refusal_of(why: Refuse) -> Refusal {
    match why {
        Refuse::Glare => Refusal::RequestPending,
        Refuse::Pending => Refusal::OfferPending,
        Refuse::NotConnected => Refusal::CallDoesNotExist,
        Refuse::Unanswered => Refusal::NoAnswerFromPeer,
    }
}

/// What a mid-call request's or answer's body offers, as far as hold goes (RFC 3264
/// §8.4; the SDP is read by `softswitch_actors::sdp`).
fn offer_of(common: &crate::wire::Common) -> Offer {
    // Only an SDP body offers (RFC 3264 §5): an INFO's DTMF or a body of another type
    // is never read as one.
    let sdp = common.header("Content-Type").is_none_or(|t| {
        t.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/sdp"))
    });
    if common.body.is_empty() || !sdp {
        return Offer::None;
    }
    match softswitch_actors::sdp::read(&common.body) {
        None => Offer::None,
        Some(s) if s.hold.is_some() => Offer::Hold,
        Some(_) => Offer::Active,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CdrState {
    Pending,
    Writing,
    Written,
}

fn our(settings: &CallSettings, transport: Transport) -> HostPort {
    match transport {
        Transport::Udp => settings.udp.clone(),
        Transport::Tcp => settings.tcp.clone(),
    }
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
        conn: b
            .source
            .conn
            .and_then(std::num::NonZeroU64::new)
            .map(crate::transport::ConnId),
    }
}

fn fault_header(invite: &Request) -> Option<String> {
    invite
        .common
        .header("X-Softswitch-Test-Fault")
        .map(|v| v.trim().to_ascii_lowercase())
}

impl CallController {
    /// The INVITE of a B-leg towards binding `binding`, built from A's `invite` (its SDP
    /// byte for byte, our Call-ID, tag, Via and Contact; To the callee as dialled), and
    /// where it goes; `None` when the binding's contact is not a usable URI.
    pub fn b_leg_invite(
        settings: &CallSettings,
        invite: &Request,
        callee_to: &NameAddr,
        identity: &super::identity::Identity,
        binding: &Binding,
    ) -> Option<(Peer, Request)> {
        let peer = peer_of(binding);
        let target = crate::wire::parse_uri(&binding.uri).ok()?;
        let call_id = format!("{}@{}", local_tag(), our(settings, peer.transport).host);
        let from_tag = local_tag();
        let b = BLeg {
            target,
            via: leg::via_for(settings, peer.transport),
            contact: leg::contact_for(settings, peer.transport),
            call_id: &call_id,
            from_tag: &from_tag,
            to: callee_to.clone(),
            path: &binding.path,
            identity,
        };
        let mut request = dialog::b_leg_invite(invite, &b)?;
        // The switch's own session timer on this leg (RFC 4028 §7.1), never A's.
        let policy = &settings.session;
        request
            .common
            .headers
            .extend(super::session_timer::request_headers(
                policy.session_expires,
                None,
                policy,
            ));
        Some((peer, request))
    }

    /// Starts the actor for `new` and its legs, answering through `settings.out`; gives
    /// back the legs' addresses (by `LegId`), to which the driver delivers each leg's SIP.
    pub fn start(new: NewCall, settings: Arc<CallSettings>) -> Vec<WeakAddr<Leg>> {
        // The test fault hook exists in builds with debug assertions only; release builds
        // do not even look for its header.
        let fault = if cfg!(debug_assertions) {
            fault_header(&new.invite)
        } else {
            None
        };
        let callees = settings.callees.clone();
        let current = new.chain.current().to_string();
        // A call forwarded before ringing goes To its current user's AOR.
        let callee_to = match new.chain.last() {
            Some(_) => callees.to_of(&current).unwrap_or(new.callee_to),
            None => new.callee_to,
        };
        let b_legs: Vec<(Peer, Request)> = new
            .targets
            .iter()
            .filter_map(|b| {
                Self::b_leg_invite(&settings, &new.invite, &callee_to, &new.identity, b)
            })
            .map(|(peer, mut invite)| {
                callees.mark(&mut invite, &new.chain);
                (peer, invite)
            })
            .collect();
        // Busy (forward.rs): both parties are in a live call from now until `done`.
        callees.enter(new.caller.user());
        callees.enter(&current);
        let rules = callees.rules(&current);
        let forwarding =
            (new.chain.last().is_some() || rules.on_busy || rules.on_no_answer).then(|| {
                Box::new(Forwarding {
                    invite: (rules.on_busy || rules.on_no_answer).then(|| new.invite.clone()),
                    rung: vec![(LegId(1), current.clone())],
                    chain: new.chain.clone(),
                    identity: new.identity.clone(),
                })
            });
        let domain = &settings.domain;
        let view = CallView::new(
            new.invite.common.call_id.as_str(),
            &format!("sip:{}@{domain}", new.caller.user()),
            &format!("sip:{}@{domain}", new.callee),
            std::iter::once((new.invite.common.call_id.as_str(), &new.a_peer)).chain(
                b_legs
                    .iter()
                    .map(|(p, inv)| (inv.common.call_id.as_str(), p)),
            ),
        );
        settings.registry.insert(new.call, Box::new(view));
        let timers = settings.timers.clone();
        let ctx = Context::<CallController>::new();
        // Weak, like every address of a call's actors (see `Actor::stopping` below).
        let me = ctx.address().downgrade();
        let mut legs = Vec::with_capacity(1 + b_legs.len());
        let mut futures = Vec::with_capacity(1 + b_legs.len());
        let call = new.call;
        let offer =
            (!new.invite.common.body.is_empty()).then(|| Box::new(new.invite.common.body.to_vec()));
        let (addr, fut) = Leg::start(
            NewLeg {
                call,
                id: LegId::A,
                role: Role::Uas {
                    tx: new.tx,
                    tag: local_tag(),
                },
                invite: new.invite,
                peer: new.a_peer,
                fault: false,
            },
            me.clone(),
            settings.clone(),
        );
        legs.push(addr);
        futures.push(fut);
        for (i, (peer, invite)) in b_legs.into_iter().enumerate() {
            let (addr, fut) = Leg::start(
                NewLeg {
                    call,
                    id: LegId(i as u32 + 1),
                    role: Role::Uac,
                    invite,
                    peer,
                    fault: fault.as_deref() == Some("panic-leg"),
                },
                me.clone(),
                settings.clone(),
            );
            legs.push(addr);
            futures.push(fut);
        }
        let mut machine = CallMachine::new(timers);
        machine.set_callee(rules);
        let controller = CallController {
            call,
            machine,
            settings,
            legs: legs.clone(),
            offer,
            timers: Vec::new(),
            started: Instant::now(),
            setup_recorded: false,
            cdr: CdrState::Pending,
            after_cdr: None,
            bye_answer_queued: false,
            published: 0,
            aborted: false,
            finished: false,
            forwarding,
            #[cfg(debug_assertions)]
            fault: fault.as_deref() == Some("panic"),
        };
        // One task for the call's actors (task.rs says why).
        actix::spawn(CallTask::new(ctx.into_future(controller), futures));
        legs
    }

    /// Adds a B-leg to this live call (a forwarded call's C-leg): its INVITE to `peer`
    /// is sent on `LegCommand::Invite`. The leg runs in the call's task
    /// ([`super::task::adopt`]), the driver learns where its SIP goes
    /// ([`CallOutput::Leg`]) and `/api/calls` shows it. Its id is the next after the
    /// call's last leg.
    pub fn add_leg(&mut self, peer: Peer, invite: Request, ctx: &mut Context<Self>) -> LegId {
        let id = LegId(self.legs.len() as u32);
        if let Some(mut v) = self.settings.registry.get_mut(&self.call) {
            v.push_leg(invite.common.call_id.as_str(), &peer);
        }
        let (addr, fut) = Leg::start(
            NewLeg {
                call: self.call,
                id,
                role: Role::Uac,
                invite,
                peer,
                fault: false,
            },
            ctx.address().downgrade(),
            self.settings.clone(),
        );
        super::task::adopt(fut);
        self.legs.push(addr.clone());
        self.send(CallOutput::Leg {
            call: self.call,
            leg: id,
            addr,
        });
        self.published = 0; // the view has a row more: publish the states again
        id
    }

    fn send(&self, out: CallOutput) {
        // The driver outlives every call but at shutdown; nothing to do then.
        let _ = self.settings.out.send(out);
    }

    fn tell(&self, leg: LegId, c: LegCommand) {
        // A leg lives until this controller stops it.
        if let Some(l) = self.legs.get(leg.0 as usize).and_then(WeakAddr::upgrade) {
            l.do_send(c);
        }
    }

    fn feed(&mut self, ev: Event, ctx: &mut Context<Self>) {
        self.feed_with(ev, Parcel::None, ctx);
    }

    /// Feeds `ev` to the machine; the mid-call request, answer or ACK that came with it
    /// (`parcel`) goes to the leg the machine's command names.
    fn feed_with(&mut self, ev: Event, mut parcel: Parcel, ctx: &mut Context<Self>) {
        let cmds = self.machine.handle(ev, SystemTime::now());
        for c in cmds {
            match c {
                Command::Relay { to, .. } => {
                    if let Some(request) = parcel.request() {
                        self.tell(to, LegCommand::Relay { request });
                    }
                }
                Command::Answer { leg, kind } => {
                    if let Some(answer) = parcel.response() {
                        let method = leg::method_of(kind);
                        let reply = leg::Reply::Relayed(answer);
                        self.tell(leg, LegCommand::Answer { method, reply });
                    }
                }
                Command::Refuse { leg, kind, why } => {
                    let method = leg::method_of(kind);
                    let reply = leg::Reply::Refused(refusal_of(why));
                    self.tell(leg, LegCommand::Answer { method, reply });
                }
                Command::AckRelayed { leg } => {
                    let ack = parcel.request();
                    self.tell(leg, LegCommand::AckRelayed { ack });
                }
                c => self.execute(c, ctx),
            }
        }
        self.publish();
    }

    /// Refreshes this call's entry of `GET /api/calls` (its phase and its legs' states).
    fn publish(&mut self) {
        if self.machine.is_done() {
            return;
        }
        let phase = self.machine.phase_code();
        let states: smallvec::SmallVec<[u8; 4]> = self.machine.leg_state_codes().collect();
        let (a, b) = self.machine.holding();
        let holding = u8::from(a) | (u8::from(b) << 1);
        let seen = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (phase, &states, holding).hash(&mut h);
            h.finish()
        };
        if seen == self.published {
            return;
        }
        self.published = seen;
        if let Some(mut v) = self.settings.registry.get_mut(&self.call) {
            v.state = phase;
            v.holding = holding;
            for (i, l) in v.legs.iter_mut().enumerate() {
                l.state = match i {
                    0 => phase,
                    i => states
                        .get(i - 1)
                        .copied()
                        .unwrap_or(softswitch_actors::call::STATE_TRYING),
                };
            }
        }
    }

    fn execute(&mut self, c: Command, ctx: &mut Context<Self>) {
        match c {
            Command::InviteB { leg } => self.tell(leg, LegCommand::Invite),
            Command::CancelB { leg } => self.tell(leg, LegCommand::Cancel),
            Command::AckB { leg, sdp } => self.tell(leg, LegCommand::Ack { sdp }),
            Command::ProvisionalToA { status, sdp } => {
                self.tell(LegId::A, LegCommand::Provisional { status, sdp })
            }
            Command::FinalToA { status, sdp } => {
                self.record_setup();
                if let Some(f) = self.forwarding.as_mut() {
                    f.invite = None; // no C-leg after A's final response
                }
                let c = LegCommand::Final { status, sdp };
                if (200..300).contains(&status) {
                    self.tell(LegId::A, c);
                } else {
                    // The end of A's attempt: the caller sees it only once the CDR is on
                    // disk (a kill -9 after this response loses no record).
                    self.after_cdr(LegId::A, c, ctx);
                }
            }
            Command::AnswerBye { leg } => {
                self.bye_answer_queued = true;
                self.after_cdr(leg, LegCommand::AnswerBye, ctx);
            }
            Command::Bye { leg } => self.tell(leg, LegCommand::Bye),
            Command::Refresh { leg, interval } => self.tell(leg, LegCommand::Refresh { interval }),
            Command::StartTimer(t, d) => {
                self.stop_timer(t, ctx);
                let h = ctx.run_later(d, move |act, ctx| {
                    act.timers.retain(|(k, _)| *k != t);
                    act.guarded(ctx, move |act, ctx| act.feed(Event::Timer(t), ctx));
                });
                self.timers.push((t, h));
            }
            // The A-leg stops retransmitting our 2xx itself, at the ACK or our BYE.
            Command::StopTimer(t) => self.stop_timer(t, ctx),
            Command::Finish(outcome) => self.finish(outcome, ctx),
            Command::Forward { reason } => {
                let ev = self.forward(reason, ctx);
                self.feed(ev, ctx);
            }
            // Carried out by `feed_with`, with the request or answer they pass on.
            Command::Relay { .. }
            | Command::Answer { .. }
            | Command::Refuse { .. }
            | Command::AckRelayed { .. } => {}
        }
    }

    /// The machine asks for a C-leg (F9, F10): the current user's target for `reason`,
    /// the chain's rules (loop 482, bound 483), the forwarding decided before ringing at
    /// the target, its bindings (480 without), one leg per binding with A's offer and
    /// History-Info/Diversion naming who forwarded. The answer is the machine's next
    /// event.
    fn forward(&mut self, reason: ForwardReason, ctx: &mut Context<Self>) -> Event {
        let failed = |status| Event::ForwardFailed { status };
        let Some(mut f) = self.forwarding.take() else {
            return failed(500); // the machine asks only for a callee with rules
        };
        let callees = self.settings.callees.clone();
        let from = f.chain.current().to_string();
        let mut chain = f.chain.clone();
        let settled = match callees.target_of(&from, reason) {
            Some(to) => chain
                .forward(&to, reason)
                .and_then(|()| callees.settle(&mut chain)),
            None => Err(Stop::NotFound),
        };
        let current = chain.current().to_string();
        let legs = match (settled, f.invite.as_ref(), callees.to_of(&current)) {
            (Err(stop), ..) => Err(stop.status()),
            (Ok(()), Some(invite), Some(to)) => match callees.bindings(&current) {
                None => Err(480),
                Some(bindings) => {
                    let built: Vec<(Peer, Request)> = bindings
                        .iter()
                        .filter_map(|b| {
                            Self::b_leg_invite(&self.settings, invite, &to, &f.identity, b)
                        })
                        .map(|(peer, mut invite)| {
                            callees.mark(&mut invite, &chain);
                            (peer, invite)
                        })
                        .collect();
                    if built.is_empty() {
                        Err(480)
                    } else {
                        Ok(built)
                    }
                }
            },
            (Ok(()), ..) => Err(500),
        };
        // The CDR names the last hop taken, also when its target could not be rung.
        f.chain = chain;
        let ev = match legs {
            Err(status) => failed(status),
            Ok(built) => {
                callees.leave(&from);
                callees.enter(&current);
                f.rung
                    .push((LegId(self.legs.len() as u32), current.clone()));
                let targets = built.len() as u32;
                for (peer, invite) in built {
                    self.add_leg(peer, invite, ctx);
                }
                Event::Forwarded {
                    targets,
                    rules: callees.rules(&current),
                }
            }
        };
        self.forwarding = Some(f);
        ev
    }

    /// The user rung on B-leg `leg`, as a CDR party.
    fn party_of(&self, leg: LegId, callee: &str) -> String {
        match self
            .forwarding
            .as_ref()
            .and_then(|f| f.rung.iter().rev().find(|(first, _)| *first <= leg))
        {
            Some((_, user)) => format!("sip:{user}@{}", self.settings.domain),
            None => callee.to_string(),
        }
    }

    fn stop_timer(&mut self, t: CallTimer, ctx: &mut Context<Self>) {
        if let Some(i) = self.timers.iter().position(|(k, _)| *k == t) {
            let (_, h) = self.timers.swap_remove(i);
            ctx.cancel_future(h);
        }
        if self.timers.is_empty() {
            self.timers = Vec::new(); // a held call runs no timer: keep no buffer either
        }
    }

    fn record_setup(&mut self) {
        if !self.setup_recorded {
            self.setup_recorded = true;
            metrics::call_setup_duration(self.started.elapsed().as_secs_f64());
        }
    }

    /// `c` for `leg` once the CDR is on disk; starts writing it when the outcome is known.
    fn after_cdr(&mut self, leg: LegId, c: LegCommand, ctx: &mut Context<Self>) {
        if self.cdr == CdrState::Written {
            self.tell(leg, c);
            return;
        }
        self.after_cdr.get_or_insert_default().push((leg, c));
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
        if let Some((_, v)) = self.settings.registry.remove(&self.call) {
            // Both parties are out of this live call (busy, forward.rs).
            let callees = &self.settings.callees;
            callees.leave(user_part(v.caller()));
            match self.forwarding.as_ref() {
                Some(f) => callees.leave(f.chain.current()),
                None => callees.leave(user_part(v.callee())),
            }
        }
        crate::mem::shrink_sparse_dashmap(&self.settings.registry);
        for l in self.legs.iter().filter_map(WeakAddr::upgrade) {
            l.do_send(LegCommand::Stop);
        }
        self.send(CallOutput::Done { call: self.call });
        self.finished = true;
        ctx.stop();
    }

    /// Writes the CDR; only once it is on disk does the call count as ended (the
    /// counters move, the held responses go out).
    fn write_cdr(&mut self, outcome: Outcome, ctx: &mut Context<Self>) {
        self.cdr = CdrState::Writing;
        let (call_id, caller, callee, start_time) = match self.settings.registry.get(&self.call) {
            Some(v) => (
                v.call_id().to_string(),
                v.caller().to_string(),
                v.callee().to_string(),
                v.start_time,
            ),
            None => {
                // Inserted at the start, removed once this CDR is written: never here.
                tracing::error!(call = self.call, "call entry missing: CDR without parties");
                let start = SystemTime::now() - self.started.elapsed();
                (String::new(), String::new(), String::new(), start)
            }
        };
        let mut b = Cdr::builder(call_id, caller, callee.clone(), start_time);
        if let Some(h) = self.forwarding.as_ref().and_then(|f| f.chain.last()) {
            b = b.forwarded(format!("sip:{}@{}", h.from, self.settings.domain), h.reason);
        }
        if let Some(at) = outcome.answered_at {
            let connected = match outcome.connected_leg {
                Some(leg) => self.party_of(leg, &callee),
                None => callee,
            };
            b = b.answered(at).connected(connected);
        }
        let cdr = b
            .held(Duration::from_millis(u64::from(outcome.held_ms)))
            .end(
                SystemTime::now(),
                cdr_disposition(outcome.disposition),
                outcome.sip_status,
                match outcome.hangup_by {
                    HangupBy::Caller => billing::HangupBy::Caller,
                    HangupBy::Callee => billing::HangupBy::Callee,
                    HangupBy::Switch => billing::HangupBy::Switch,
                },
            );
        let label = disposition_name(outcome.disposition);
        let write = self.settings.billing.write(cdr);
        // ctx.wait: nothing else of this call happens until the record is on disk.
        ctx.wait(write.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(()) => metrics::cdr_written(),
                Err(e) => tracing::error!(call = act.call, error = %e, "CDR not written"),
            }
            act.cdr = CdrState::Written;
            metrics::call_ended(label);
            for (leg, c) in act.after_cdr.take().map(|b| *b).unwrap_or_default() {
                act.tell(leg, c);
            }
            if act.machine.is_done() || act.aborted {
                act.done(ctx);
            }
        }));
    }

    fn report(&mut self, r: LegReport, ctx: &mut Context<Self>) {
        match r {
            LegReport::Event(ev) => {
                #[cfg(debug_assertions)]
                if self.fault
                    && matches!(
                        ev,
                        Event::Provisional { .. } | Event::Final { .. } | Event::LegFailed { .. }
                    )
                {
                    panic!("test fault: X-Softswitch-Test-Fault: panic");
                }
                self.feed(ev, ctx)
            }
            LegReport::ByeReceived(leg) => {
                // (An aborted call gets here no more: `abort` queued an answer for every
                // leg's BYEs, sent once the CDR is on disk.)
                self.bye_answer_queued = false;
                self.feed(Event::Bye { leg }, ctx);
                if !self.bye_answer_queued
                    && (self.machine.is_done() || self.machine.outcome().is_none())
                {
                    // A BYE the machine had nothing to do with (crossing ours, or before
                    // the call was up): answer it now.
                    self.tell(leg, LegCommand::AnswerBye);
                }
            }
            LegReport::Panicked(_) => self.abort(ctx),
            LegReport::Modify(leg, request) => {
                let Some(kind) = leg::kind_of(&request.method) else {
                    return;
                };
                let offer = offer_of(&request.common);
                let ev = Event::Modify { leg, kind, offer };
                self.feed_with(ev, Parcel::Request(request), ctx);
            }
            LegReport::Relayed(leg, response) => {
                let Some(kind) = leg::kind_of(&response.common.cseq.method) else {
                    return;
                };
                let ev = Event::RelayAnswered {
                    leg,
                    kind,
                    status: response.status,
                    offer: offer_of(&response.common),
                };
                self.feed_with(ev, Parcel::Response(response), ctx);
            }
            LegReport::RelayFailed(leg, kind) => self.feed(Event::RelayFailed { leg, kind }, ctx),
            LegReport::RelayAck(leg, ack) => {
                self.feed_with(Event::RelayAck { leg }, Parcel::Request(ack), ctx)
            }
            LegReport::AckTimeout(leg) => self.feed(Event::AckTimeout { leg }, ctx),
            LegReport::SessionRefreshed(leg, session) => {
                self.feed(Event::SessionRefreshed { leg, session }, ctx)
            }
            LegReport::RefreshFailed(leg) => self.feed(Event::RefreshFailed { leg }, ctx),
        }
    }
}

/// The CDR's disposition for the machine's.
pub(crate) fn cdr_disposition(d: softswitch_actors::call::Disposition) -> billing::Disposition {
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

/// The disposition's name in the CDR and the `calls_total` label.
pub(crate) fn disposition_name(d: softswitch_actors::call::Disposition) -> &'static str {
    use softswitch_actors::call::Disposition::*;
    match d {
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

    /// Stops only once [`CallController::done`] said so. Nobody holds a strong address
    /// of a call's actors (each is two allocations per holder, kept for the call's whole
    /// life), and actix would stop an actor that has none as soon as it is idle.
    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        if self.finished {
            Running::Stop
        } else {
            Running::Continue
        }
    }

    fn started(&mut self, ctx: &mut Self::Context) {
        let targets = self.legs.len().saturating_sub(1) as u32;
        if targets == 0 {
            // No binding had a usable contact URI: refused as a callee without bindings
            // is (480, `no_answer`), and billed like every attempt, its 480 held until
            // the CDR is on disk. Nothing else of this call runs (`aborted`): the
            // write's completion ends it.
            self.aborted = true;
            let c = LegCommand::Final {
                status: 480,
                sdp: None,
            };
            self.after_cdr.get_or_insert_default().push((LegId::A, c));
            let outcome = Outcome {
                disposition: softswitch_actors::call::Disposition::of_status(480),
                sip_status: 480,
                hangup_by: HangupBy::Switch,
                answered_at: None,
                connected_leg: None,
                held_ms: 0,
            };
            self.write_cdr(outcome, ctx);
            return;
        }
        let offer = self.offer.take();
        self.guarded(ctx, move |act, ctx| {
            act.feed(
                Event::Start {
                    targets,
                    offer: offer.map(|b| *b),
                },
                ctx,
            )
        });
    }
}

impl CallController {
    /// Runs `f`, and ends this call only should it panic (actix catches no panics: one
    /// unwinding through the arbiter would take every call with it).
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

    /// The call's state is not trusted any more (a handler of it panicked): every leg is
    /// released as far as its SIP state allows (500 to A's INVITE if unanswered, BYE on
    /// each confirmed dialog, CANCEL for each pending B-leg INVITE), the BYEs received
    /// are answered once the CDR (`failed`, 500, `hangup_by = switch`) is on disk.
    fn abort(&mut self, ctx: &mut Context<Self>) {
        if self.aborted {
            return;
        }
        self.aborted = true;
        for (_, h) in std::mem::take(&mut self.timers) {
            ctx.cancel_future(h);
        }
        for i in 0..self.legs.len() {
            self.tell(LegId(i as u32), LegCommand::Abort);
            self.after_cdr
                .get_or_insert_default()
                .push((LegId(i as u32), LegCommand::AnswerBye));
        }
        let outcome = Outcome {
            disposition: softswitch_actors::call::Disposition::Failed,
            sip_status: 500,
            hangup_by: HangupBy::Switch,
            answered_at: None,
            connected_leg: None,
            held_ms: 0,
        };
        // The write's completion ends an aborted call; an already written CDR ends it now.
        match self.cdr {
            CdrState::Pending => self.write_cdr(outcome, ctx),
            CdrState::Writing => {}
            CdrState::Written => {
                for (leg, c) in self.after_cdr.take().map(|b| *b).unwrap_or_default() {
                    self.tell(leg, c);
                }
                self.done(ctx);
            }
        }
    }
}

impl Handler<LegReport> for CallController {
    type Result = ();

    fn handle(&mut self, r: LegReport, ctx: &mut Self::Context) {
        self.guarded(ctx, move |act, ctx| act.report(r, ctx));
    }
}
