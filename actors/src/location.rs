//! The location service (RFC 3261 §10.2, §16.5): AOR → the binding set its registrar last
//! committed, the AOR's [`Registrar`] actor while it has work, and the expiry index.
//!
//! Lookups for calls read the committed snapshot straight from the map (an `Arc`: no
//! copy, no message round trip). Changes go through the AOR's actor:
//! [`Location::register`] finds or starts it and hands it the request with `try_send`.
//! The mailbox bound is ours (a count of queued messages per AOR): a full mailbox answers
//! [`RegisterError::Overloaded`] at once (the caller sends 503 with Retry-After), so a
//! REGISTER flood queues nothing unbounded. An actor stops when its mailbox is empty, so
//! an idle AOR costs its bindings and one map entry, not an actor.
//!
//! Expiry: the index holds each AOR's earliest binding expiry. A sweeper task wakes every
//! [`SWEEP_INTERVAL`] and sends each due AOR an expiry query
//! ([`RegisterUpdate::expiry`]) through the same actor path, so an expiry is serialised
//! with that AOR's REGISTERs and journaled like them.
//!
//! At start-up [`Location::restore`] rebuilds every AOR from the store's recovered
//! records, dropping what expired while the switch was down; no actor is started.

use crate::binding::{self, Binding};
use crate::port::{Observer, Policy, RegisterError, RegisterUpdate, Store, StoreFuture};
use crate::registrar::{now_ms, Register, Registrar, Reply};
use actix::prelude::*;
use dashmap::DashMap;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

/// How often the sweeper looks for expired bindings (expiry is accurate to this).
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(500);
/// The most AORs one sweep hands expiry queries to (the rest wait for the next sweep).
const SWEEP_BATCH: usize = 10_000;

#[derive(Clone)]
struct ActorRef {
    addr: Addr<Registrar>,
    queued: Arc<AtomicUsize>,
}

struct Entry {
    bindings: Arc<Vec<Binding>>,
    actor: Option<ActorRef>,
}

struct Inner {
    aors: DashMap<Arc<str>, Entry>,
    /// (earliest expiry in Unix ms, AOR) for every AOR with bindings.
    expiries: Mutex<BTreeSet<(u64, Arc<str>)>>,
    store: Arc<dyn Store>,
    policy: Policy,
    mailbox: usize,
    total: AtomicUsize,
    observer: Arc<dyn Observer>,
}

/// The location service. Cheap to clone; shared by the driver, the actors and the API.
#[derive(Clone)]
pub struct Location {
    inner: Arc<Inner>,
}

/// What [`Location::restore`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// AORs with live bindings.
    pub aors: usize,
    /// Live bindings.
    pub bindings: usize,
    /// Bindings that expired while the switch was down.
    pub expired: usize,
    /// Records that could not be decoded (skipped, logged).
    pub undecodable: usize,
}

impl Location {
    /// An empty location service. Call [`Location::start_sweeper`] inside the actix
    /// System for bindings to expire.
    pub fn new(
        store: Arc<dyn Store>,
        policy: Policy,
        mailbox: usize,
        observer: Arc<dyn Observer>,
    ) -> Location {
        Location {
            inner: Arc::new(Inner {
                aors: DashMap::new(),
                expiries: Mutex::new(BTreeSet::new()),
                store,
                policy,
                mailbox: mailbox.max(1),
                total: AtomicUsize::new(0),
                observer,
            }),
        }
    }

    /// The registrar's bounds.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Starts the expiry sweeper on the current actix arbiter. It ends when the last
    /// handle to this location service is dropped.
    pub fn start_sweeper(&self) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        actix::spawn(async move {
            loop {
                actix::clock::sleep(SWEEP_INTERVAL).await;
                let Some(inner) = weak.upgrade() else { return };
                Location { inner }.sweep(now_ms());
            }
        });
    }

    /// Sends every AOR whose earliest binding is due at `now_ms` its expiry query.
    pub fn sweep(&self, now_ms: u64) -> usize {
        let due: Vec<Arc<str>> = {
            let set = self
                .inner
                .expiries
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            set.iter()
                .take_while(|(at, _)| *at <= now_ms)
                .take(SWEEP_BATCH)
                .map(|(_, aor)| aor.clone())
                .collect()
        };
        for aor in &due {
            // The outcome needs no answer; a refused or dropped query is simply sent
            // again by the next sweep (the index entry stays until the commit).
            self.register(RegisterUpdate::expiry(aor, now_ms), Reply::new(|_| {}));
        }
        due.len()
    }

    /// Rebuilds the AORs from recovered store records (`aor`, encoded binding set).
    /// Expired bindings are dropped and their AORs rewritten.
    pub fn restore(
        &self,
        records: impl IntoIterator<Item = (String, Vec<u8>)>,
        now_ms: u64,
    ) -> Restored {
        let mut r = Restored::default();
        for (aor, value) in records {
            let Ok(all) = serde_json::from_slice::<Vec<Binding>>(&value) else {
                tracing::error!(%aor, "undecodable registration record skipped");
                r.undecodable += 1;
                continue;
            };
            let live: Vec<Binding> = all
                .iter()
                .filter(|b| !b.is_expired(now_ms))
                .cloned()
                .collect();
            r.expired += all.len() - live.len();
            if live.len() != all.len() {
                // Fire and forget: expiry is absolute, a lost rewrite changes nothing.
                drop(self.persist(&aor, &live));
            }
            if live.is_empty() {
                continue;
            }
            r.aors += 1;
            r.bindings += live.len();
            let aor: Arc<str> = Arc::from(aor);
            let bindings = Arc::new(live);
            self.inner
                .total
                .fetch_add(bindings.len(), Ordering::Relaxed);
            self.reindex(&aor, &[], &bindings);
            self.inner.aors.insert(
                aor,
                Entry {
                    bindings,
                    actor: None,
                },
            );
        }
        self.inner
            .observer
            .bindings_changed(self.inner.total.load(Ordering::Relaxed));
        r
    }

    /// Hands a REGISTER to its AOR's actor, starting one if needed. Must run inside an
    /// actix System. The outcome always arrives through `reply` (at once for
    /// [`RegisterError::Overloaded`]).
    pub fn register(&self, update: RegisterUpdate, reply: Reply) {
        let mut msg = Register::new(update, reply);
        // Two attempts: the second after replacing an actor found stopped.
        for _ in 0..2 {
            let (aor, actor) = self.actor_for(msg.aor());
            if !msg.take_ticket(&actor.queued, self.inner.mailbox) {
                break;
            }
            match actor.addr.try_send(msg) {
                Ok(()) => return,
                Err(SendError::Full(m)) => {
                    msg = m;
                    break;
                }
                Err(SendError::Closed(mut m)) => {
                    m.release_ticket();
                    self.detach(&aor, &actor.addr);
                    msg = m;
                }
            }
        }
        if let Some((_, reply)) = msg.into_parts() {
            reply.send(Err(RegisterError::Overloaded));
        }
    }

    /// The AOR's running actor, or a new one started from its committed bindings.
    fn actor_for(&self, aor: &str) -> (Arc<str>, ActorRef) {
        if let Some(mut e) = self.inner.aors.get_mut(aor) {
            let key = e.key().clone();
            if let Some(a) = e.actor.as_ref().filter(|a| a.addr.connected()) {
                return (key, a.clone());
            }
            let a = self.spawn(&key, e.bindings.clone());
            e.actor = Some(a.clone());
            return (key, a);
        }
        let key: Arc<str> = Arc::from(aor);
        let mut e = self.inner.aors.entry(key.clone()).or_insert_with(|| Entry {
            bindings: Arc::new(Vec::new()),
            actor: None,
        });
        if let Some(a) = e.actor.as_ref().filter(|a| a.addr.connected()) {
            return (key, a.clone());
        }
        let a = self.spawn(&key, e.bindings.clone());
        e.actor = Some(a.clone());
        (key, a)
    }

    fn spawn(&self, aor: &Arc<str>, bindings: Arc<Vec<Binding>>) -> ActorRef {
        let queued = Arc::new(AtomicUsize::new(0));
        ActorRef {
            addr: Registrar::spawn(
                aor.clone(),
                bindings,
                self.clone(),
                queued.clone(),
                self.inner.mailbox,
            ),
            queued,
        }
    }

    /// The committed bindings of `aor` (an AOR without bindings is absent).
    pub fn lookup(&self, aor: &str) -> Option<Arc<Vec<Binding>>> {
        self.inner
            .aors
            .get(aor)
            .map(|e| e.bindings.clone())
            .filter(|b| !b.is_empty())
    }

    /// Every AOR with its bindings, sorted by AOR (for the API).
    pub fn snapshot(&self) -> Vec<(Arc<str>, Arc<Vec<Binding>>)> {
        let mut v: Vec<_> = self
            .inner
            .aors
            .iter()
            .filter(|e| !e.bindings.is_empty())
            .map(|e| (e.key().clone(), e.bindings.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Bindings held in all.
    pub fn total(&self) -> usize {
        self.inner.total.load(Ordering::Relaxed)
    }

    /// AORs in the map (with bindings, or with an actor at work).
    pub fn aors(&self) -> usize {
        self.inner.aors.len()
    }

    /// Registrar actors currently running.
    pub fn actors(&self) -> usize {
        self.inner
            .aors
            .iter()
            .filter(|e| e.actor.as_ref().is_some_and(|a| a.addr.connected()))
            .count()
    }

    /// Writes an AOR's binding set to the store (deletes it when empty).
    pub(crate) fn persist(&self, aor: &str, bindings: &[Binding]) -> StoreFuture {
        if bindings.is_empty() {
            return self.inner.store.delete(aor);
        }
        match serde_json::to_vec(bindings) {
            Ok(v) => self.inner.store.put(aor, v),
            Err(e) => Box::pin(std::future::ready(Err(e.to_string()))),
        }
    }

    /// An actor committed `after` (replacing `before`) for `aor`.
    pub(crate) fn publish(&self, aor: &Arc<str>, before: &[Binding], after: &Arc<Vec<Binding>>) {
        match self.inner.aors.get_mut(&**aor) {
            Some(mut e) => e.bindings = after.clone(),
            None => {
                self.inner.aors.insert(
                    aor.clone(),
                    Entry {
                        bindings: after.clone(),
                        actor: None,
                    },
                );
            }
        }
        self.reindex(aor, before, after);
        if after.len() != before.len() {
            let total = if after.len() > before.len() {
                let d = after.len() - before.len();
                self.inner.total.fetch_add(d, Ordering::Relaxed) + d
            } else {
                let d = before.len() - after.len();
                self.inner
                    .total
                    .fetch_sub(d, Ordering::Relaxed)
                    .saturating_sub(d)
            };
            self.inner.observer.bindings_changed(total);
        }
    }

    /// Moves `aor` in the expiry index from `before`'s earliest expiry to `after`'s.
    pub(crate) fn reindex(&self, aor: &Arc<str>, before: &[Binding], after: &[Binding]) {
        let (old, new) = (binding::next_expiry(before), binding::next_expiry(after));
        if old == new {
            return;
        }
        let mut set = self
            .inner
            .expiries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = old {
            set.remove(&(t, aor.clone()));
        }
        if let Some(t) = new {
            set.insert((t, aor.clone()));
        }
    }

    /// The actor at `addr` stops: forget it, and the AOR too when it has no bindings.
    pub(crate) fn detach(&self, aor: &str, addr: &Addr<Registrar>) {
        let empty = match self.inner.aors.get_mut(aor) {
            Some(mut e) => {
                if e.actor.as_ref().is_some_and(|a| a.addr == *addr) {
                    e.actor = None;
                }
                e.actor.is_none() && e.bindings.is_empty()
            }
            None => false,
        };
        if empty {
            self.inner
                .aors
                .remove_if(aor, |_, e| e.actor.is_none() && e.bindings.is_empty());
        }
    }
}

impl Register {
    fn aor(&self) -> &str {
        self.update_ref().map_or("", |u| u.aor.as_str())
    }
}

/// The journal is the location service's store in production: one record per AOR, its
/// whole binding set, so the last record of a key is the AOR's state.
impl Store for crate::journal::Journal {
    fn put(&self, aor: &str, value: Vec<u8>) -> StoreFuture {
        let ack = crate::journal::Journal::put(self, aor.to_string(), value);
        Box::pin(async move { ack.await.map_err(|e| e.to_string()) })
    }
    fn delete(&self, aor: &str) -> StoreFuture {
        let ack = crate::journal::Journal::delete(self, aor.to_string());
        Box::pin(async move { ack.await.map_err(|e| e.to_string()) })
    }
}
