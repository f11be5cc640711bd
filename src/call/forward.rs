//! Call forwarding and busy at run time (flows F9, F10, unconditional forwarding; the
//! busy side of F12): what the switch knows of a callee, applied through the pure
//! rules of `softswitch_actors::call::forward`.
//!
//! [`Callees`] is shared by the router (which settles a new call's chain before any
//! phone rings: unconditional forwarding, busy without call waiting) and every call's
//! controller (which forwards on a callee's 486 or ring timeout, re-originating a C-leg
//! with A's INVITE).
//!
//! **Busy**: a user is busy while they are a party of a live call: its caller (the
//! authenticated user) or the callee being rung or talked to (after forwarding, the
//! target, no longer the user who forwarded). A call is live from the moment the switch
//! starts it (the A-leg INVITE routed) until its CDR is written; so a user whose phone
//! rings counts as busy, as Asterisk's device state counts ringing and in use. A refusal
//! is never a live call. A new call to a busy user without `call_waiting` gets 486 from
//! the switch, or goes to `forward_busy`; with `call_waiting` it is offered to the
//! user's phones as any call.
//!
//! What C's INVITE says of the forwarding: both RFC 7044 History-Info (with RFC 4458
//! `cause`, the standard) and RFC 5806 Diversion (what Asterisk, FreeSWITCH and most
//! PBXes and carriers' SBCs still read): sending both costs two header lines per
//! forwarded leg and lets either kind of C see whom the call was meant for.

use crate::directory::Directory;
use crate::wire::{Header, NameAddr, Request};
use softswitch_actors::binding::Binding;
use softswitch_actors::call::forward::{self, Chain, Reached, Stop};
use softswitch_actors::call::{CalleeRules, ForwardReason};
use softswitch_actors::location::Location;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The callees' side of routing: their forwarding rules, bindings and busy state.
pub struct Callees {
    directory: Arc<Directory>,
    location: Location,
    domain: String,
    /// `sip.no_answer_timeout_s`.
    default_ring: Duration,
    /// Live calls per user (see the module doc). Every call's actors and the driver run
    /// on one thread: the lock is never contended.
    busy: Mutex<HashMap<String, u32>>,
}

impl Callees {
    /// Over the switch's directory and location service, in `domain`.
    pub fn new(
        directory: Arc<Directory>,
        location: Location,
        domain: &str,
        default_ring: Duration,
    ) -> Callees {
        Callees {
            directory,
            location,
            domain: domain.to_string(),
            default_ring,
            busy: Mutex::new(HashMap::new()),
        }
    }

    fn target(&self, t: Option<&String>) -> Option<String> {
        t.and_then(|t| forward::target_user(t, &self.domain))
            .map(str::to_string)
    }

    /// Follows, from the chain's current user, the forwarding decided before anyone
    /// rings (unconditional; busy without call waiting).
    pub fn settle(&self, chain: &mut Chain) -> Result<(), Stop> {
        let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        chain.settle(|u| {
            let s = self.directory.get(u)?;
            Some(Reached {
                unconditional: s
                    .profile
                    .forward_unconditional
                    .as_deref()
                    .and_then(|t| forward::target_user(t, &self.domain)),
                busy_target: s
                    .profile
                    .forward_busy
                    .as_deref()
                    .and_then(|t| forward::target_user(t, &self.domain)),
                busy: busy.get(u).is_some_and(|n| *n > 0),
                call_waiting: s.profile.call_waiting,
            })
        })
    }

    /// The target of `user`'s rule for `reason` (a user name).
    pub fn target_of(&self, user: &str, reason: ForwardReason) -> Option<String> {
        let p = &self.directory.get(user)?.profile;
        self.target(match reason {
            ForwardReason::Busy => p.forward_busy.as_ref(),
            ForwardReason::NoAnswer => p.forward_no_answer.as_ref(),
            ForwardReason::Unconditional => p.forward_unconditional.as_ref(),
        })
    }

    /// What the call machine needs of `user` as the callee being rung.
    pub fn rules(&self, user: &str) -> CalleeRules {
        match self.directory.get(user) {
            Some(s) => CalleeRules {
                ring: s
                    .profile
                    .no_answer_timeout_s
                    .map_or(self.default_ring, Duration::from_secs),
                on_busy: self.target(s.profile.forward_busy.as_ref()).is_some(),
                on_no_answer: self.target(s.profile.forward_no_answer.as_ref()).is_some(),
            },
            None => CalleeRules {
                ring: self.default_ring,
                on_busy: false,
                on_no_answer: false,
            },
        }
    }

    /// `user`'s bindings (`None`: not registered).
    pub fn bindings(&self, user: &str) -> Option<Arc<Vec<Binding>>> {
        self.location.lookup(&format!("{user}@{}", self.domain))
    }

    /// `user`'s AOR as the To of a leg: `<sip:user@domain>`.
    pub fn to_of(&self, user: &str) -> Option<NameAddr> {
        crate::wire::parse_uri(&format!("sip:{user}@{}", self.domain))
            .ok()
            .map(NameAddr::new)
    }

    /// `user` is a party of one more live call.
    pub fn enter(&self, user: &str) {
        let mut b = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        *b.entry(user.to_string()).or_default() += 1;
    }

    /// `user` is a party of one live call less.
    pub fn leave(&self, user: &str) {
        let mut b = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = b.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                b.remove(user);
            }
        }
        crate::mem::shrink_sparse(&mut *b);
    }

    /// Adds to a B-leg INVITE what it tells its callee of `chain`'s forwarding:
    /// History-Info (RFC 7044) and Diversion (RFC 5806), nothing for a chain without
    /// hops.
    pub fn mark(&self, invite: &mut Request, chain: &Chain) {
        if chain.hops().is_empty() {
            return;
        }
        for v in forward::history_info(chain, &self.domain) {
            invite.common.headers.push(Header::new("History-Info", v));
        }
        for v in forward::diversion(chain, &self.domain) {
            invite.common.headers.push(Header::new("Diversion", v));
        }
    }

    /// The served domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }
}
