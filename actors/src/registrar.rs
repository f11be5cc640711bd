//! The `Registrar` actor: one per AOR with at least one binding (RFC 3261 §10.3).
//!
//! It holds the AOR's binding set while it works. A [`Register`]
//! message is applied by the pure rules of [`crate::binding::apply`]; a change is written
//! to the [`Store`](crate::port::Store) first and committed (made visible to lookups and
//! answered) only once the store has it, so a 200 OK is never sent for a binding a crash
//! could lose. Messages are handled one at a time ([`AtomicResponse`]): the next REGISTER
//! of the same AOR sees the committed result of the previous one.
//!
//! When its mailbox is empty it detaches from the [`Location`] (which keeps the committed
//! set) and stops; the next message starts a fresh actor. Expiry is a query
//! ([`RegisterUpdate::expiry`]) the location's sweeper sends when the AOR's earliest
//! binding is due. A message queued behind a stop is not lost: dropping an unhandled
//! [`Register`] answers it with [`RegisterError::Retry`], and the caller sends it again
//! through the location service.

use crate::binding::{self, Applied, Binding};
use crate::location::Location;
use crate::port::{RegisterError, RegisterUpdate};
use actix::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

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

/// The registrar of one AOR, alive while it has work: started for a message, stopped
/// when its mailbox is empty after one (so 100,000 registered phones cost 100,000 binding
/// sets, not 100,000 idle actors and timers).
pub struct Registrar {
    aor: Arc<str>,
    bindings: Arc<Vec<Binding>>,
    location: Location,
    queued: Arc<AtomicUsize>,
}

impl Registrar {
    /// Starts the actor for `aor` with its committed `bindings`; `queued` counts the
    /// messages waiting for it.
    pub fn spawn(
        aor: Arc<str>,
        bindings: Arc<Vec<Binding>>,
        location: Location,
        queued: Arc<AtomicUsize>,
        mailbox: usize,
    ) -> Addr<Registrar> {
        Registrar::create(move |ctx| {
            // The bound is kept by `queued` (see `Location`), below actix's own, which is
            // per sender and so no bound at all with many senders.
            ctx.set_mailbox_capacity(mailbox + 1);
            Registrar {
                aor,
                bindings,
                location,
                queued,
            }
        })
    }

    fn commit(&mut self, next: Vec<Binding>) {
        let before = std::mem::replace(&mut self.bindings, Arc::new(next));
        self.location.publish(&self.aor, &before, &self.bindings);
    }

    /// Stops once nothing waits: the committed state lives on in the location service.
    fn idle(&mut self, ctx: &mut Context<Self>) {
        if self.queued.load(Ordering::Acquire) == 0 {
            self.location.detach(&self.aor, &ctx.address());
            ctx.stop();
        }
    }
}

impl Actor for Registrar {
    type Context = Context<Self>;
}

impl Handler<Register> for Registrar {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, mut msg: Register, ctx: &mut Self::Context) -> Self::Result {
        msg.release_ticket();
        let (Some(update), Some(reply)) = (msg.update.take(), msg.reply.take()) else {
            self.idle(ctx);
            return done();
        };
        let expiry_only = update.call_id.is_empty();
        match binding::apply(&self.bindings, &update, self.location.policy()) {
            Err(e) => {
                reply.send(Err(e));
                self.idle(ctx);
                done()
            }
            Ok(Applied::Unchanged) => {
                // Keeps the expiry index right even when nothing changed.
                self.location
                    .reindex(&self.aor, &self.bindings, &self.bindings);
                reply.send(Ok(Registered {
                    bindings: self.bindings.clone(),
                    changed: false,
                }));
                self.idle(ctx);
                done()
            }
            Ok(Applied::Changed(next)) => {
                let persist = self.location.persist(&self.aor, &next);
                AtomicResponse::new(Box::pin(persist.into_actor(self).map(
                    move |res, act, ctx| {
                        match res {
                            Ok(()) => {
                                act.commit(next);
                                reply.send(Ok(Registered {
                                    bindings: act.bindings.clone(),
                                    changed: true,
                                }));
                            }
                            // An expiry is committed whatever the store says: expiry
                            // times are absolute, so a restart drops it anyway.
                            Err(e) if expiry_only => {
                                tracing::error!(aor = %act.aor, error = %e, "could not persist an expiry");
                                act.commit(next);
                                reply.send(Err(RegisterError::Storage(e)));
                            }
                            Err(e) => {
                                tracing::error!(aor = %act.aor, error = %e, "could not persist a registration");
                                reply.send(Err(RegisterError::Storage(e)));
                            }
                        }
                        act.idle(ctx);
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
