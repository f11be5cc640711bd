//! The location service (RFC 3261 §10.2, §16.5): AOR → its [`Registrar`] actor and the
//! binding set it last committed.
//!
//! Lookups for calls read the committed snapshot straight from the map (an `Arc`, shared
//! with the actor: no copy, no message round trip). Changes go through the AOR's actor:
//! [`Location::register`] finds or starts it and hands it the request with `try_send`
//! into its bounded mailbox. A full mailbox answers [`RegisterError::Overloaded`] at once
//! (the caller sends 503 with Retry-After), so a REGISTER flood queues nothing unbounded.
//!
//! At start-up [`Location::restore`] rebuilds every AOR from the store's recovered
//! records, dropping what expired while the switch was down.

use crate::binding::Binding;
use crate::port::{Observer, Policy, RegisterError, RegisterUpdate, Store, StoreFuture};
use crate::registrar::{Register, Registrar, Reply};
use actix::prelude::*;
use dashmap::DashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Clone)]
struct Entry {
    addr: Addr<Registrar>,
    bindings: Arc<Vec<Binding>>,
    /// Messages queued for the actor. actix's own mailbox bound is per sender (each
    /// `Addr` clone may always add one more), so the bound is kept here.
    queued: Arc<AtomicUsize>,
}

struct Inner {
    aors: DashMap<Arc<str>, Entry>,
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
    /// An empty location service.
    pub fn new(
        store: Arc<dyn Store>,
        policy: Policy,
        mailbox: usize,
        observer: Arc<dyn Observer>,
    ) -> Location {
        Location {
            inner: Arc::new(Inner {
                aors: DashMap::new(),
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

    /// Rebuilds the AORs from recovered store records (`aor`, encoded binding set). Must
    /// run inside an actix System. Expired bindings are dropped and their AORs rewritten.
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
                // Fire and forget: the expiry is absolute, a lost rewrite changes nothing.
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
            let addr = Registrar::spawn(
                aor.clone(),
                bindings.clone(),
                self.clone(),
                self.inner.mailbox,
            );
            self.inner.aors.insert(
                aor,
                Entry {
                    addr,
                    bindings,
                    queued: Arc::default(),
                },
            );
        }
        self.inner
            .observer
            .bindings_changed(self.inner.total.load(Ordering::Relaxed));
        r
    }

    /// Hands a REGISTER to its AOR's actor, starting one if needed. The outcome always
    /// arrives through `reply` (at once for [`RegisterError::Overloaded`]).
    pub fn register(&self, update: RegisterUpdate, reply: Reply) {
        let mut msg = Register::new(update, reply);
        // Two attempts: the second after replacing an actor found stopped.
        for _ in 0..2 {
            let (aor, entry) = self.entry_for(&msg);
            if !msg.take_ticket(&entry.queued, self.inner.mailbox) {
                if let Some((_, reply)) = msg.into_parts() {
                    reply.send(Err(RegisterError::Overloaded));
                }
                return;
            }
            match entry.addr.try_send(msg) {
                Ok(()) => return,
                Err(SendError::Full(m)) => {
                    if let Some((_, reply)) = m.into_parts() {
                        reply.send(Err(RegisterError::Overloaded));
                    }
                    return;
                }
                Err(SendError::Closed(mut m)) => {
                    // The actor stopped. Retired (its AOR emptied): the entry is gone and a
                    // fresh actor starts empty. Died: it restarts from its last committed
                    // snapshot.
                    m.release_ticket();
                    match self.inner.aors.entry(aor.clone()) {
                        dashmap::Entry::Occupied(mut o) => {
                            if o.get().addr == entry.addr {
                                o.insert(self.fresh(&aor, entry.bindings.clone()));
                            }
                        }
                        dashmap::Entry::Vacant(v) => {
                            v.insert(self.fresh(&aor, Arc::new(Vec::new())));
                        }
                    }
                    msg = m;
                }
            }
        }
        if let Some((_, reply)) = msg.into_parts() {
            reply.send(Err(RegisterError::Overloaded));
        }
    }

    fn entry_for(&self, msg: &Register) -> (Arc<str>, Entry) {
        let aor = msg.aor().unwrap_or_default();
        if let Some(e) = self.inner.aors.get(aor) {
            return (e.key().clone(), e.value().clone());
        }
        let key: Arc<str> = Arc::from(aor);
        let entry = self
            .inner
            .aors
            .entry(key.clone())
            .or_insert_with(|| self.fresh(&key, Arc::new(Vec::new())))
            .clone();
        (key, entry)
    }

    fn fresh(&self, aor: &Arc<str>, bindings: Arc<Vec<Binding>>) -> Entry {
        Entry {
            addr: Registrar::spawn(
                aor.clone(),
                bindings.clone(),
                self.clone(),
                self.inner.mailbox,
            ),
            bindings,
            queued: Arc::default(),
        }
    }

    /// The committed bindings of `aor` (empty bindings are never listed).
    pub fn lookup(&self, aor: &str) -> Option<Arc<Vec<Binding>>> {
        self.inner
            .aors
            .get(aor)
            .map(|e| e.bindings.clone())
            .filter(|b| !b.is_empty())
    }

    /// Every AOR with its bindings (for the API).
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

    /// AORs with a live actor.
    pub fn aors(&self) -> usize {
        self.inner.aors.len()
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

    /// An actor committed `bindings` (it held `before` until now).
    pub(crate) fn publish(
        &self,
        aor: &str,
        addr: &Addr<Registrar>,
        bindings: &Arc<Vec<Binding>>,
        before: usize,
    ) {
        if let Some(mut e) = self.inner.aors.get_mut(aor) {
            if e.addr == *addr {
                e.bindings = bindings.clone();
            }
        }
        let total = if bindings.len() >= before {
            self.inner
                .total
                .fetch_add(bindings.len() - before, Ordering::Relaxed)
                + (bindings.len() - before)
        } else {
            self.inner
                .total
                .fetch_sub(before - bindings.len(), Ordering::Relaxed)
                - (before - bindings.len())
        };
        if bindings.len() != before {
            self.inner.observer.bindings_changed(total);
        }
    }

    /// An actor whose AOR has no binding left leaves the map.
    pub(crate) fn retire(&self, aor: &str, addr: &Addr<Registrar>) {
        self.inner.aors.remove_if(aor, |_, e| e.addr == *addr);
    }
}

impl Register {
    fn aor(&self) -> Option<&str> {
        self.update_ref().map(|u| u.aor.as_str())
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
