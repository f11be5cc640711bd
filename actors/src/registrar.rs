//! The `Registrar` actor: one per AOR with at least one binding (RFC 3261 §10.3).
//!
//! It owns the AOR's binding set and the one timer of its next expiry. A [`Register`]
//! message is applied by the pure rules of [`crate::binding::apply`]; a change is written
//! to the [`Store`](crate::port::Store) first and committed (made visible to lookups and
//! answered) only once the store has it, so a 200 OK is never sent for a binding a crash
//! could lose. Messages are handled one at a time ([`AtomicResponse`]): the next REGISTER
//! of the same AOR sees the committed result of the previous one.
//!
//! When its last binding goes, the actor takes itself out of the [`Location`] and stops.
//! A message that was queued behind that moment is not lost: dropping an unhandled
//! [`Register`] answers it with [`RegisterError::Retry`], and the caller sends it again
//! through the location service, which starts a fresh actor.

use crate::binding::{self, Applied, Binding};
use crate::location::Location;
use crate::port::{RegisterError, RegisterUpdate};
use actix::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The result of a REGISTER that did not fail.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The AOR's bindings after the request (what the 200 OK lists).
    pub bindings: Arc<Vec<Binding>>,
    /// Whether the request changed them.
    pub changed: bool,
}

type ReplyFn = Box<dyn FnOnce(Result<Registered, RegisterError>) + Send>;

/// Where the outcome of a [`Register`] goes. It is always called exactly once: if it is
/// dropped unused (an actor stopped mid-request), it reports a storage failure, so the
/// transaction waiting for it is answered rather than left hanging.
pub struct Reply(Option<ReplyFn>);

impl Reply {
    /// A reply that calls `f`.
    pub fn new(f: impl FnOnce(Result<Registered, RegisterError>) + Send + 'static) -> Reply {
        Reply(Some(Box::new(f)))
    }

    /// Delivers the outcome.
    pub fn send(mut self, outcome: Result<Registered, RegisterError>) {
        if let Some(f) = self.0.take() {
            f(outcome);
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Err(RegisterError::Storage("registrar stopped".into())));
        }
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reply")
    }
}

/// A REGISTER for this actor's AOR.
#[derive(Debug)]
pub struct Register {
    update: Option<RegisterUpdate>,
    reply: Option<Reply>,
    /// The AOR's count of queued messages, released when this one is handled or dropped.
    ticket: Option<Arc<AtomicUsize>>,
}

impl Register {
    /// The message for `update`, answered through `reply`.
    pub fn new(update: RegisterUpdate, reply: Reply) -> Register {
        Register {
            update: Some(update),
            reply: Some(reply),
            ticket: None,
        }
    }

    /// Counts this message in `queued` until it is handled or dropped; `false` (and no
    /// count) when `limit` messages are already queued.
    pub(crate) fn take_ticket(&mut self, queued: &Arc<AtomicUsize>, limit: usize) -> bool {
        if self.ticket.is_some() {
            return true;
        }
        if queued.fetch_add(1, Ordering::AcqRel) >= limit {
            queued.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        self.ticket = Some(queued.clone());
        true
    }

    pub(crate) fn release_ticket(&mut self) {
        if let Some(t) = self.ticket.take() {
            t.fetch_sub(1, Ordering::AcqRel);
        }
    }

    pub(crate) fn update_ref(&self) -> Option<&RegisterUpdate> {
        self.update.as_ref()
    }

    /// Takes the parts back (a refused send).
    pub fn into_parts(mut self) -> Option<(RegisterUpdate, Reply)> {
        self.release_ticket();
        Some((self.update.take()?, self.reply.take()?))
    }
}

impl Drop for Register {
    fn drop(&mut self) {
        self.release_ticket();
        if let (Some(update), Some(reply)) = (self.update.take(), self.reply.take()) {
            reply.send(Err(RegisterError::Retry(Box::new(update))));
        }
    }
}

impl Message for Register {
    type Result = ();
}

/// The registrar of one AOR.
pub struct Registrar {
    aor: Arc<str>,
    bindings: Arc<Vec<Binding>>,
    location: Location,
    expiry: Option<SpawnHandle>,
}

impl Registrar {
    /// Starts the actor for `aor` with `bindings` (restored, or empty for a new AOR).
    pub fn spawn(
        aor: Arc<str>,
        bindings: Arc<Vec<Binding>>,
        location: Location,
        mailbox: usize,
    ) -> Addr<Registrar> {
        Registrar::create(move |ctx| {
            ctx.set_mailbox_capacity(mailbox);
            Registrar {
                aor,
                bindings,
                location,
                expiry: None,
            }
        })
    }

    fn commit(&mut self, next: Arc<Vec<Binding>>, ctx: &mut Context<Self>) {
        let before = self.bindings.len();
        self.bindings = next;
        self.location
            .publish(&self.aor, &ctx.address(), &self.bindings, before);
        if self.bindings.is_empty() {
            self.location.retire(&self.aor, &ctx.address());
            ctx.stop();
        } else {
            self.arm_expiry(ctx);
        }
    }

    fn arm_expiry(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.expiry.take() {
            ctx.cancel_future(h);
        }
        let Some(at) = binding::next_expiry(&self.bindings) else {
            return;
        };
        let wait = Duration::from_millis(at.saturating_sub(now_ms()));
        self.expiry = Some(ctx.run_later(wait, |act, ctx| {
            act.expiry = None;
            act.on_expiry(ctx);
        }));
    }

    fn on_expiry(&mut self, ctx: &mut Context<Self>) {
        let Some(next) = binding::expire(&self.bindings, now_ms()) else {
            self.arm_expiry(ctx);
            return;
        };
        let persist = self.location.persist(&self.aor, &next);
        // Serialised with REGISTERs (ctx.wait), and committed whatever the store says: an
        // expired binding is gone at a restart anyway, because expiry times are absolute.
        ctx.wait(persist.into_actor(self).map(move |res, act, ctx| {
            if let Err(e) = res {
                tracing::error!(aor = %act.aor, error = %e, "could not persist an expiry");
            }
            act.commit(Arc::new(next), ctx);
        }));
    }
}

impl Actor for Registrar {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.arm_expiry(ctx);
    }
}

impl Handler<Register> for Registrar {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, mut msg: Register, ctx: &mut Self::Context) -> Self::Result {
        msg.release_ticket();
        let (Some(update), Some(reply)) = (msg.update.take(), msg.reply.take()) else {
            return done();
        };
        // An AOR with nothing to keep needs no actor (a refused first REGISTER, a query).
        let idle = |act: &mut Registrar, ctx: &mut Context<Registrar>| {
            if act.bindings.is_empty() {
                act.location.retire(&act.aor, &ctx.address());
                ctx.stop();
            }
        };
        match binding::apply(&self.bindings, &update, self.location.policy()) {
            Err(e) => {
                reply.send(Err(e));
                idle(self, ctx);
                done()
            }
            Ok(Applied::Unchanged) => {
                reply.send(Ok(Registered {
                    bindings: self.bindings.clone(),
                    changed: false,
                }));
                idle(self, ctx);
                done()
            }
            Ok(Applied::Changed(next)) => {
                let persist = self.location.persist(&self.aor, &next);
                AtomicResponse::new(Box::pin(persist.into_actor(self).map(
                    move |res, act, ctx| match res {
                        Ok(()) => {
                            act.commit(Arc::new(next), ctx);
                            reply.send(Ok(Registered {
                                bindings: act.bindings.clone(),
                                changed: true,
                            }));
                        }
                        Err(e) => {
                            tracing::error!(aor = %act.aor, error = %e, "could not persist a registration");
                            reply.send(Err(RegisterError::Storage(e)));
                        }
                    },
                )))
            }
        }
    }
}

fn done() -> AtomicResponse<Registrar, ()> {
    AtomicResponse::new(Box::pin(actix::fut::ready(())))
}

/// Wall-clock now, Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
