//! Calls at run time: the CallController actor per call ([`controller`]), supervising one
//! Leg actor per call leg ([`leg`]), and what they exchange with the driver, which owns
//! the transaction layer.
//!
//! The controller's logic is `softswitch_actors::call::CallMachine` (pure). The driver
//! delivers each leg's SIP to that leg ([`CallInput`]); the leg reports machine events to
//! its controller, which runs the machine and hands its commands back to the legs; the
//! legs turn them into SIP ([`CallOutput`]), with [`dialog`] building every request.
//! The driver routes transaction events to legs by the maps of [`Table`]. An INVITE
//! refused before any call exists is billed here ([`CallHub::refused`]): its CDR is on
//! disk before its stateless answer goes.
//!
//! Why these actors live in the root crate and not in `softswitch-actors`: they handle
//! typed SIP (`Request`, `Response`, `Dialog`), which lives here, and the root crate
//! depends on `softswitch-actors`, not the reverse. The pure machine stays there.

pub mod controller;
pub mod dialog;
pub mod forward;
pub mod identity;
pub mod leg;
pub mod router;
pub mod session_timer;
pub mod task;
pub mod usage;

use crate::transport::Peer;
use crate::txn::TxId;
use crate::wire::{Request, Response};
use softswitch_actors::call::LegId;
use std::collections::{HashMap, HashSet};

/// A call's number within this process.
pub type CallNo = u64;

/// What a request the controller asks the driver to send is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A B-leg's INVITE.
    Invite,
    /// A B-leg's CANCEL.
    Cancel,
    /// A BYE on a leg.
    Bye,
    /// A mid-call request relayed on the leg (re-INVITE, UPDATE, INFO).
    Relay(softswitch_actors::call::Kind),
    /// The switch's own session refresh on the leg (RFC 4028: UPDATE or re-INVITE),
    /// asking for `interval` seconds.
    Refresh {
        /// UPDATE or re-INVITE.
        kind: softswitch_actors::call::Kind,
        /// The `Session-Expires` it carries.
        interval: u32,
    },
}

/// Driver → the leg it is for.
#[derive(Debug)]
pub enum CallInput {
    /// A response on a client transaction of the leg.
    Response {
        /// What the request was for.
        purpose: Purpose,
        /// The response.
        response: Response,
    },
    /// A client transaction of the leg timed out (Timer B/F) or could not be sent.
    Failed {
        /// What the request was for.
        purpose: Purpose,
        /// True for a transport error (unreachable), false for a timeout.
        unreachable: bool,
    },
    /// An in-dialog request on the leg's dialog with its server transaction.
    Request {
        /// Its server transaction.
        tx: TxId,
        /// The request.
        request: Request,
    },
    /// An ACK on the leg's dialog (A's ACK for our 2xx).
    Ack {
        /// The ACK.
        request: Request,
    },
    /// A 2xx retransmission for the leg that no transaction holds any more.
    Stray {
        /// The response.
        response: Response,
    },
    /// CANCEL for the A-leg INVITE (the driver answered it 200).
    Cancel,
}

impl actix::Message for CallInput {
    type Result = ();
}

/// Legs → driver.
#[derive(Debug)]
pub enum CallOutput {
    /// Send `request` to `to` in a new client transaction of `leg`.
    Send {
        /// The call.
        call: CallNo,
        /// The leg.
        leg: LegId,
        /// What it is for.
        purpose: Purpose,
        /// Where.
        to: Peer,
        /// The request (its Via carries a fresh branch).
        request: Request,
    },
    /// Send `response` on server transaction `tx`.
    Respond {
        /// The transaction.
        tx: TxId,
        /// The response.
        response: Response,
    },
    /// Send an ACK for a 2xx (no transaction, §13.2.2.4).
    Ack {
        /// Where.
        to: Peer,
        /// The ACK.
        request: Request,
    },
    /// In-dialog requests with this Call-ID and our tag belong to (`call`, `leg`).
    Dialog {
        /// The call.
        call: CallNo,
        /// The leg.
        leg: LegId,
        /// The dialog's Call-ID.
        call_id: String,
        /// Our tag in it.
        local_tag: String,
    },
    /// A leg added to a live call ([`controller::CallController::add_leg`]): its SIP
    /// goes to `addr`.
    Leg {
        /// The call.
        call: CallNo,
        /// The new leg's id.
        leg: LegId,
        /// Its address.
        addr: WeakAddr<Leg>,
    },
    /// The call is over: forget it.
    Done {
        /// The call.
        call: CallNo,
    },
    /// The CDR of an INVITE refused before any call existed is on disk: send its
    /// answer (statelessly) now.
    Refused {
        /// The attempt's key ([`Table::attempt_key`]).
        attempt: AttemptKey,
        /// Where the answer goes.
        to: Peer,
        /// The answer.
        response: Box<Response>,
        /// The CDR's disposition (a `calls_total` label).
        disposition: &'static str,
        /// The writer stored the CDR (false only for a CDR it could not take at all).
        written: bool,
    },
}

/// An initial INVITE's identity as RFC 3261 §8.2.7 and §17.2.3 see a retransmission of
/// it: a keyed hash of its Call-ID, From tag, CSeq number and top Via branch (what the
/// stateless To tag is made of). A refusal whose CDR is being written is held by it.
pub type AttemptKey = u64;
/// A dialog's key: a keyed hash (SipHash with this process's random key) of its Call-ID
/// and our tag in it. Looking a dialog up then allocates nothing, and a held call keeps
/// 8 bytes per dialog here instead of two copies of both strings. Two live dialogs with
/// the same 64-bit key are as likely as guessing the random key; should it happen, the
/// leg a request reaches checks the Call-ID and tag against its own dialog (481).
pub type DialogKey = u64;
/// What RFC 3261 §8.2.2.2 compares to find a merged request: a keyed hash (the same
/// random key as [`DialogKey`]s) of an INVITE's Call-ID, From tag and CSeq number.
pub type MergeKey = u64;
/// The driver's routing maps for calls (what reaches a call other than by its number).
#[derive(Debug, Default)]
pub struct Table {
    /// A-leg INVITE server transaction → (call, the INVITE's [`MergeKey`]).
    pub by_invite: HashMap<TxId, (CallNo, MergeKey)>,
    /// The [`MergeKey`]s of the A-leg INVITEs whose server transaction is not over: a
    /// new INVITE (no To tag, no transaction of its own) with one of these keys is a
    /// merged request (§8.2.2.2), the same request reaching us by a second path. Like
    /// `by_invite`, it keeps nothing for an established call once its INVITE's
    /// transaction ends (64·T1 after the 2xx, RFC 6026).
    pub merging: HashSet<MergeKey>,
    /// Client transaction → (call, leg, purpose).
    pub by_client_tx: HashMap<TxId, (CallNo, LegId, Purpose)>,
    /// Dialog key (of its Call-ID and our tag) → (call, leg).
    pub by_dialog: HashMap<DialogKey, (CallNo, LegId)>,
    /// The key of [`DialogKey`]s.
    pub hasher: std::hash::RandomState,
}

impl Table {
    /// The key of the dialog with this Call-ID and our tag.
    pub fn dialog_key(&self, call_id: &str, local_tag: &str) -> DialogKey {
        use std::hash::BuildHasher;
        self.hasher.hash_one((call_id, local_tag))
    }

    /// The [`AttemptKey`] of an INVITE.
    pub fn attempt_key(&self, invite: &Request) -> AttemptKey {
        use std::hash::BuildHasher;
        let c = &invite.common;
        self.hasher.hash_one((
            &*c.call_id,
            c.from.tag().unwrap_or_default(),
            c.cseq.seq,
            c.top_via().and_then(|v| v.branch()).unwrap_or_default(),
        ))
    }

    /// The [`MergeKey`] of an INVITE.
    pub fn merge_key(&self, invite: &Request) -> MergeKey {
        use std::hash::BuildHasher;
        let c = &invite.common;
        self.hasher
            .hash_one((&*c.call_id, c.from.tag().unwrap_or_default(), c.cseq.seq))
    }

    /// Forgets what `call` registered (its client transactions go as they end).
    fn forget(&mut self, call: &LiveCall) {
        for k in &call.dialogs {
            self.by_dialog.remove(k);
        }
        self.forget_invite(call.invite);
        crate::mem::shrink_sparse(&mut self.by_dialog);
    }

    /// Forgets A-leg INVITE server transaction `tx` (when it ends, or its call does);
    /// false when it was none.
    fn forget_invite(&mut self, tx: TxId) -> bool {
        let Some((_, merge)) = self.by_invite.remove(&tx) else {
            return false;
        };
        self.merging.remove(&merge);
        crate::mem::shrink_sparse(&mut self.by_invite);
        crate::mem::shrink_sparse_set(&mut self.merging);
        true
    }
}

/// A live call as the hub keeps it: its legs and what it registered in the [`Table`].
struct LiveCall {
    /// The legs, by `LegId` (the controller keeps its own list; a leg it adds later
    /// comes as [`CallOutput::Leg`]). Weak: a leg lives until its controller stops it
    /// (`leg.rs`, `Actor::stopping`).
    legs: Vec<WeakAddr<Leg>>,
    /// Its A-leg INVITE server transaction.
    invite: TxId,
    /// Its dialogs' keys (A's, and each B-leg's once it has one): inline for the usual
    /// A + one B, no allocation of their own.
    dialogs: smallvec::SmallVec<[DialogKey; 2]>,
}

use crate::call::router::{Bill, CallRouter, Refused};
use crate::endpoint::Refusal;
use crate::metrics;
use crate::txn::TxLayer;
use actix::WeakAddr;
use controller::{CallController, CallSettings, NewCall};
use leg::Leg;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// A call as `GET /api/calls` shows it: kept in the registry by its controller, boxed
/// (the map's slot is a pointer), compact, turned into JSON only when asked. It is also
/// where the controller reads the CDR's parties and start time when the call ends: one
/// copy of each per call, in one allocation.
#[derive(Debug, Clone)]
pub struct CallView {
    /// The A-leg's Call-ID, `sip:caller@domain`, `sip:callee@domain`, then each B-leg's
    /// Call-ID, back to back.
    text: Box<str>,
    /// Where the A-leg's Call-ID, the caller and the callee end in `text`.
    ends: [u32; 3],
    /// The call's phase, as its index in `STATE_NAMES` (see [`CallView::state`]).
    pub state: u8,
    /// Who holds the other party (RFC 3264 §8.4): bit 0 A, bit 1 the B-leg.
    pub holding: u8,
    /// When the INVITE arrived.
    pub start_time: SystemTime,
    /// A, then the B-legs (by `LegId`).
    pub legs: Box<[LegView]>,
}

/// A leg in a [`CallView`]; its name (`A`, `B1`, ...) and role follow from its place.
#[derive(Debug, Clone)]
pub struct LegView {
    /// Where its Call-ID is in the call's text.
    call_id: (u32, u32),
    /// Its peer.
    pub peer: std::net::SocketAddr,
    /// UDP or TCP.
    pub transport: crate::transport::Transport,
    /// Its state, as its index in `STATE_NAMES` (see [`LegView::state`]).
    pub state: u8,
}

impl LegView {
    /// Its state's name (`trying`, `ringing`, ...; A's is the call's phase).
    pub fn state(&self) -> &'static str {
        softswitch_actors::call::state_name(self.state)
    }
}

impl CallView {
    /// The view of a call that starts now: the A-leg's Call-ID, the parties as URIs, and
    /// each leg's own Call-ID and peer (A first).
    pub fn new<'a>(
        call_id: &str,
        caller: &str,
        callee: &str,
        legs: impl IntoIterator<Item = (&'a str, &'a Peer)>,
    ) -> CallView {
        // A message is at most a few tens of KiB (the transport's limit).
        let at = |t: &String| u32::try_from(t.len()).unwrap_or(u32::MAX);
        let mut text = String::new();
        let mut ends = [0u32; 3];
        for (i, part) in [call_id, caller, callee].into_iter().enumerate() {
            text.push_str(part);
            ends[i] = at(&text);
        }
        let mut views = Vec::new();
        for (i, (leg_call_id, peer)) in legs.into_iter().enumerate() {
            let range = if i == 0 {
                (0, ends[0])
            } else {
                let from = at(&text);
                text.push_str(leg_call_id);
                (from, at(&text))
            };
            views.push(LegView {
                call_id: range,
                peer: peer.addr,
                transport: peer.transport,
                state: softswitch_actors::call::STATE_TRYING,
            });
        }
        CallView {
            text: text.into_boxed_str(),
            ends,
            state: softswitch_actors::call::STATE_IDLE,
            holding: 0,
            start_time: SystemTime::now(),
            legs: views.into_boxed_slice(),
        }
    }

    /// Adds the row of a leg the call gained (its own Call-ID and peer).
    pub fn push_leg(&mut self, call_id: &str, peer: &Peer) {
        let mut text = String::with_capacity(self.text.len() + call_id.len());
        text.push_str(&self.text);
        let from = u32::try_from(text.len()).unwrap_or(u32::MAX);
        text.push_str(call_id);
        let to = u32::try_from(text.len()).unwrap_or(u32::MAX);
        self.text = text.into_boxed_str();
        let mut legs = std::mem::take(&mut self.legs).into_vec();
        legs.push(LegView {
            call_id: (from, to),
            peer: peer.addr,
            transport: peer.transport,
            state: softswitch_actors::call::STATE_TRYING,
        });
        self.legs = legs.into_boxed_slice();
    }

    /// The call's phase's name (`setup`, `connected`, ...).
    pub fn state(&self) -> &'static str {
        softswitch_actors::call::state_name(self.state)
    }

    fn part(&self, from: u32, to: u32) -> &str {
        self.text
            .get(from as usize..to as usize)
            .unwrap_or_default()
    }

    /// The A-leg's Call-ID (the CDR's `call_id`).
    pub fn call_id(&self) -> &str {
        self.part(0, self.ends[0])
    }

    /// `sip:caller@domain`.
    pub fn caller(&self) -> &str {
        self.part(self.ends[0], self.ends[1])
    }

    /// `sip:callee@domain`.
    pub fn callee(&self) -> &str {
        self.part(self.ends[1], self.ends[2])
    }

    /// The Call-ID of `leg`'s own dialog.
    pub fn leg_call_id(&self, leg: &LegView) -> &str {
        self.part(leg.call_id.0, leg.call_id.1)
    }
}

/// The JSON of `GET /api/calls` (no secrets: parties, states, addresses, times), written
/// straight into the response body: no `serde_json::Value` tree per call (with 10,000
/// calls up that tree was about 2 KB per call of garbage at every request).
impl serde::Serialize for CallView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Legs<'a>(&'a CallView);
        struct LegJson<'a>(usize, &'a LegView, &'a CallView);
        impl serde::Serialize for Legs<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let v = self.0;
                s.collect_seq(v.legs.iter().enumerate().map(|(i, l)| LegJson(i, l, v)))
            }
        }
        impl serde::Serialize for LegJson<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let (i, l, v) = (self.0, self.1, self.2);
                let mut m = s.serialize_struct("Leg", 6)?;
                if i == 0 {
                    m.serialize_field("leg", "A")?;
                } else {
                    m.serialize_field("leg", &format_args!("B{i}"))?;
                }
                m.serialize_field("role", if i == 0 { "uas" } else { "uac" })?;
                m.serialize_field("call_id", v.leg_call_id(l))?;
                m.serialize_field("peer", &format_args!("{}", l.peer))?;
                m.serialize_field("transport", l.transport.as_str())?;
                m.serialize_field("state", l.state())?;
                m.end()
            }
        }
        let start = softswitch_actors::billing::Timestamp::from(self.start_time);
        let mut m = s.serialize_struct("Call", 8)?;
        m.serialize_field("call_id", self.call_id())?;
        m.serialize_field("caller", self.caller())?;
        m.serialize_field("callee", self.callee())?;
        m.serialize_field("state", self.state())?;
        m.serialize_field("held", &(self.holding != 0))?;
        let held_by = match self.holding {
            1 => Some("A"),
            2 => Some("B"),
            3 => Some("both"),
            _ => None,
        };
        m.serialize_field("held_by", &held_by)?;
        m.serialize_field("start_time", &format_args!("{start}"))?;
        m.serialize_field("legs", &Legs(self))?;
        m.end()
    }
}

/// The most refusals whose answer may wait for its CDR at once. A write takes a few
/// milliseconds (group commit), so under any load only tens wait; this many wait only
/// when CDR writes fail, and then new INVITEs are dropped (the phone retransmits) rather
/// than grow the wait without bound.
pub const MAX_HELD_REFUSALS: usize = 4096;

/// The driver's side of calls: routing new INVITEs, delivering transaction events to the
/// call they belong to, billing the INVITEs it refuses, and carrying out the calls'
/// [`CallOutput`]s on the layer.
pub struct CallHub {
    router: CallRouter,
    settings: Arc<CallSettings>,
    table: Table,
    /// Each live call.
    calls: HashMap<CallNo, LiveCall>,
    next: CallNo,
    /// The refused attempts whose answer waits for its CDR: a retransmission of one is
    /// absorbed (its answer is on its way). At most [`MAX_HELD_REFUSALS`].
    held: HashSet<AttemptKey>,
}

/// What the driver must do after [`CallHub::output`].
pub enum Todo {
    /// Nothing more.
    Nothing,
    /// Send this response on this server transaction.
    Respond(TxId, Box<Response>),
    /// Send this response statelessly to this peer (a refusal whose CDR is on disk).
    Stateless(Peer, Box<Response>),
}

impl CallHub {
    /// A hub; its calls send their outputs through `settings.out`.
    pub fn new(router: CallRouter, settings: CallSettings) -> CallHub {
        CallHub {
            router,
            settings: Arc::new(settings),
            table: Table::default(),
            calls: HashMap::new(),
            next: 1,
            held: HashSet::new(),
        }
    }

    /// Refusals whose answer waits for its CDR.
    pub fn held_refusals(&self) -> usize {
        self.held.len()
    }

    /// No more refusals can wait for their CDR ([`MAX_HELD_REFUSALS`]): CDR writes are
    /// failing (`/readyz` says so). A new INVITE is dropped unanswered then, before
    /// anything of it is verified or billed: its retransmission may find room.
    pub fn refusals_full(&self) -> bool {
        self.held.len() >= MAX_HELD_REFUSALS
    }

    /// Calls in progress.
    pub fn active(&self) -> usize {
        self.calls.len()
    }

    /// Routes a new INVITE (no To tag): where the call goes, with the INVITE's
    /// [`MergeKey`] for [`CallHub::start`], or the refusal to send, through
    /// [`CallHub::refused`]. The refusal goes statelessly (RFC 3261 §8.2.7, with the tag
    /// `tag` that every retransmission of this request gets again): no server
    /// transaction, no 100, as a challenge is answered for nearly every call, and as the
    /// registrar answers.
    pub fn route(
        &self,
        from: &Peer,
        request: &Request,
        tag: &str,
    ) -> Result<(crate::call::router::Routed, MergeKey), Refused> {
        let merge = self.table.merge_key(request);
        if self.table.merging.contains(&merge) {
            // §8.2.2.2: checked before authentication, as the first copy's credentials
            // (its nonce count used) would draw a stale challenge instead. Not billed:
            // it is the same attempt as the first copy, whose call writes its CDR.
            let refusal = Refusal::MergedRequest;
            refusal.count();
            return Err(Refused::new(refusal.response(request, tag), Bill::Nobody));
        }
        let attempt = self.table.attempt_key(request);
        let routed = self
            .router
            .route(request, from, SystemTime::now(), attempt)
            .map_err(|(rej, bill)| {
                // Every refusal of the router counts here, once (a challenge or an
                // authentication failure counts elsewhere: `Refusal::metric_reason`).
                rej.count();
                Refused::new(rej.response(request, tag), bill)
            })?;
        if request.common.header("Contact").is_none() {
            // §12.1.1: the dialog's remote target; without it no in-dialog request can
            // reach the caller.
            let bill = if routed.retransmission {
                Bill::Again
            } else {
                Bill::Caller(routed.caller)
            };
            let resp = Refusal::MissingContact.response(request, tag);
            return Err(Refused::new(resp, bill));
        }
        Ok((routed, merge))
    }

    /// A new INVITE from `to` refused before any call existed: the answer to send now,
    /// or `None` when it goes later. An attempt billed to an authenticated caller
    /// ([`Bill`]; a refusal decided before authentication verifies the credentials the
    /// request carries, [`CallRouter::caller`]) gets its CDR (`call_id`, the caller, the
    /// callee as dialled, `start_time` = `end_time`, `disposition` by the status, the
    /// status sent, `hangup_by` = `switch`), and its answer waits until the CDR is on
    /// disk ([`CallOutput::Refused`]): as for a call, a `kill -9` after the phone saw the
    /// refusal loses no record, and `calls_total` moves only then. A retransmission of a
    /// held attempt is absorbed; one of an attempt already answered is answered again,
    /// with no second CDR (the authenticator knows its credentials for this attempt's).
    pub fn refused(&mut self, to: Peer, request: &Request, r: Refused) -> Option<Box<Response>> {
        if matches!(r.bill, Bill::Nobody) {
            // The 407 that starts nearly every call, and every unauthenticated refusal:
            // nothing to bill, and no retransmission of a held attempt is ever one (it
            // carries the credentials that got it billed).
            return Some(r.response);
        }
        let attempt = self.table.attempt_key(request);
        if self.held.contains(&attempt) {
            return None;
        }
        let now = SystemTime::now();
        let caller = match r.bill {
            Bill::Caller(c) => c,
            Bill::Unverified => match self.router.caller(request, &to, now, attempt) {
                Bill::Caller(c) => c,
                _ => return Some(r.response),
            },
            Bill::Again | Bill::Nobody => return Some(r.response),
        };
        let status = r.response.status;
        let disposition = softswitch_actors::call::Disposition::of_status(status);
        let domain = self.router.domain();
        let cdr = softswitch_actors::billing::Cdr::builder(
            request.common.call_id.as_str(),
            format!("sip:{}@{domain}", caller.user()),
            self.router.dialled(request),
            now,
        )
        .end(
            now,
            controller::cdr_disposition(disposition),
            status,
            softswitch_actors::billing::HangupBy::Switch,
        );
        let ack = self.settings.billing.write(cdr);
        self.held.insert(attempt);
        let out = self.settings.out.clone();
        let response = r.response;
        let disposition = controller::disposition_name(disposition);
        actix::spawn(async move {
            let written = match ack.await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "CDR of a refused call attempt not stored");
                    false
                }
            };
            // The driver outlives every held refusal but at shutdown; nothing to do then.
            let _ = out.send(CallOutput::Refused {
                attempt,
                to,
                response,
                disposition,
                written,
            });
        });
        None
    }

    /// Starts the call of a routed INVITE on its server transaction `tx`; `merge` is
    /// the INVITE's [`MergeKey`], as [`CallHub::route`] gave it.
    pub fn start(
        &mut self,
        tx: TxId,
        from: Peer,
        request: Request,
        (routed, merge): (crate::call::router::Routed, MergeKey),
    ) {
        let call = self.next;
        self.next += 1;
        let callee_to = request.common.to.clone();
        let (caller, callee) = (routed.caller, routed.callee);
        let legs = CallController::start(
            NewCall {
                call,
                tx,
                invite: request,
                a_peer: from,
                targets: routed.targets,
                callee_to,
                caller,
                callee,
                chain: routed.chain,
                identity: routed.identity,
            },
            self.settings.clone(),
        );
        self.calls.insert(
            call,
            LiveCall {
                legs,
                invite: tx,
                dialogs: smallvec::SmallVec::new(),
            },
        );
        self.table.by_invite.insert(tx, (call, merge));
        self.table.merging.insert(merge);
        metrics::calls_active(self.calls.len());
    }

    /// Hands `input` to a leg. Its mailbox has no bound of its own (an address made
    /// for one message is never parked): what bounds it is that the driver and every
    /// call run on one thread, so a leg runs before the driver's next turn, which hands
    /// over at most one batch of datagrams (`driver.rs`); and every input but an ACK or
    /// a stray 2xx came through a transaction, whose number is bounded
    /// (`sip.max_transactions`).
    fn deliver(&self, call: CallNo, leg: LegId, input: CallInput) {
        if let Some(l) = self
            .calls
            .get(&call)
            .and_then(|c| c.legs.get(leg.0 as usize))
            .and_then(WeakAddr::upgrade)
        {
            l.do_send(input);
        }
    }

    /// An in-dialog request on server transaction `tx`; given back when it belongs to
    /// no call.
    pub fn in_dialog(&self, tx: TxId, request: Request) -> Result<(), Box<Request>> {
        let key = self.table.dialog_key(
            &request.common.call_id,
            request.common.to.tag().unwrap_or_default(),
        );
        match self.table.by_dialog.get(&key) {
            Some(&(call, leg)) => {
                self.deliver(call, leg, CallInput::Request { tx, request });
                Ok(())
            }
            None => Err(Box::new(request)),
        }
    }

    /// An ACK outside any transaction (for a 2xx); false when it belongs to no call.
    pub fn ack(&self, request: Request) -> bool {
        let key = self.table.dialog_key(
            &request.common.call_id,
            request.common.to.tag().unwrap_or_default(),
        );
        match self.table.by_dialog.get(&key) {
            Some(&(call, leg)) => {
                self.deliver(call, leg, CallInput::Ack { request });
                true
            }
            None => false,
        }
    }

    /// CANCEL for INVITE server transaction `target`: true when it is a call's.
    pub fn cancel(&self, target: TxId) -> bool {
        match self.table.by_invite.get(&target) {
            Some(&(call, _)) => {
                self.deliver(call, LegId::A, CallInput::Cancel);
                true
            }
            None => false,
        }
    }

    /// A response on client transaction `tx`.
    pub fn response(&self, tx: TxId, response: Response) {
        if let Some(&(call, leg, purpose)) = self.table.by_client_tx.get(&tx) {
            self.deliver(call, leg, CallInput::Response { purpose, response });
        }
    }

    /// A response no transaction holds (a B-leg's 2xx retransmission after Timer M):
    /// our tag is its From tag.
    pub fn stray(&self, response: Response) {
        let key = self.table.dialog_key(
            &response.common.call_id,
            response.common.from.tag().unwrap_or_default(),
        );
        if let Some(&(call, leg)) = self.table.by_dialog.get(&key) {
            self.deliver(call, leg, CallInput::Stray { response });
        }
    }

    /// Client transaction `tx` timed out or hit a transport error.
    pub fn failed(&self, tx: TxId, unreachable: bool) {
        if let Some(&(call, leg, purpose)) = self.table.by_client_tx.get(&tx) {
            self.deliver(
                call,
                leg,
                CallInput::Failed {
                    purpose,
                    unreachable,
                },
            );
        }
    }

    /// Transaction `tx` ended. An A-leg INVITE's goes from `by_invite` too: a CANCEL
    /// matches no transaction once it is over (§9.2), and a held call keeps no entry.
    pub fn terminated(&mut self, tx: TxId) {
        if self.table.by_client_tx.remove(&tx).is_some() {
            crate::mem::shrink_sparse(&mut self.table.by_client_tx);
        } else {
            self.table.forget_invite(tx);
        }
    }

    /// Carries out one call output on the layer.
    pub fn output(&mut self, out: CallOutput, layer: &mut TxLayer, now: Instant) -> Todo {
        match out {
            CallOutput::Send {
                call,
                leg,
                purpose,
                to,
                request,
            } => match layer.send_request(now, to, request) {
                Ok(tx) => {
                    self.table.by_client_tx.insert(tx, (call, leg, purpose));
                }
                Err(e) => {
                    tracing::error!(call, error = %e, "call request refused by the transaction layer");
                    self.deliver(
                        call,
                        leg,
                        CallInput::Failed {
                            purpose,
                            unreachable: true,
                        },
                    );
                }
            },
            CallOutput::Respond { tx, response } => return Todo::Respond(tx, Box::new(response)),
            CallOutput::Ack { to, request } => {
                layer.send_stateless(to, &crate::wire::Message::Request(request));
            }
            CallOutput::Dialog {
                call,
                leg,
                call_id,
                local_tag,
            } => {
                let key = self.table.dialog_key(&call_id, &local_tag);
                if let Some(c) = self.calls.get_mut(&call) {
                    self.table.by_dialog.insert(key, (call, leg));
                    c.dialogs.push(key);
                }
            }
            CallOutput::Leg { call, leg, addr } => {
                if let Some(c) = self.calls.get_mut(&call) {
                    // The controller numbers its legs in order and reports each as it
                    // adds it, so the new one is always the next.
                    debug_assert_eq!(c.legs.len(), leg.0 as usize);
                    c.legs.push(addr);
                }
            }
            CallOutput::Done { call } => {
                if let Some(c) = self.calls.remove(&call) {
                    self.table.forget(&c);
                }
                crate::mem::shrink_sparse(&mut self.calls);
                metrics::calls_active(self.calls.len());
            }
            CallOutput::Refused {
                attempt,
                to,
                response,
                disposition,
                written,
            } => {
                self.held.remove(&attempt);
                crate::mem::shrink_sparse_set(&mut self.held);
                if written {
                    metrics::cdr_written();
                }
                metrics::call_ended(disposition);
                return Todo::Stateless(to, response);
            }
        }
        Todo::Nothing
    }
}
