//! The Registrar actor and the location service under an actix System, with an in-memory
//! store: commit after store, lookups, expiry, restore, and the bounded mailbox.

use actix::prelude::*;
use softswitch_actors::location::Location;
use softswitch_actors::port::{
    ContactSet, ContactSpec, NoObserver, Policy, RegisterError, RegisterUpdate, Source, Store,
    StoreFuture, TransportKind,
};
use softswitch_actors::registrar::{now_ms, Registered, Reply};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};

#[derive(Default)]
struct MemStore {
    map: Mutex<HashMap<String, Vec<u8>>>,
    gate: Option<Arc<Semaphore>>,
}

impl Store for MemStore {
    fn put(&self, aor: &str, value: Vec<u8>) -> StoreFuture {
        self.map.lock().unwrap().insert(aor.to_string(), value);
        self.gated()
    }
    fn delete(&self, aor: &str) -> StoreFuture {
        self.map.lock().unwrap().remove(aor);
        self.gated()
    }
}

impl MemStore {
    fn gated(&self) -> StoreFuture {
        let gate = self.gate.clone();
        Box::pin(async move {
            if let Some(g) = gate {
                g.acquire().await.map_err(|e| e.to_string())?.forget();
            }
            Ok(())
        })
    }
}

fn update(aor: &str, expires: u32, cseq: u32) -> RegisterUpdate {
    RegisterUpdate {
        aor: aor.into(),
        contacts: ContactSet::List(vec![ContactSpec {
            uri: format!("sip:{aor}"),
            params: String::new(),
            expires: Some(expires),
            key: 1,
        }]),
        expires_header: None,
        call_id: "c".into(),
        cseq,
        source: Source {
            transport: TransportKind::Udp,
            addr: "127.0.0.1:5070".parse().unwrap(),
            conn: None,
        },
        path: Vec::new(),
        user_agent: None,
        now_ms: now_ms(),
    }
}

async fn register(loc: &Location, u: RegisterUpdate) -> Result<Registered, RegisterError> {
    let (tx, rx) = oneshot::channel();
    loc.register(u, Reply::new(move |r| drop(tx.send(r))));
    tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .unwrap()
        .unwrap()
}

fn policy() -> Policy {
    Policy {
        min_expires: 1,
        ..Policy::default()
    }
}

#[actix_rt::test]
async fn register_lookup_expire_and_stop() {
    let store = Arc::new(MemStore::default());
    let loc = Location::new(store.clone(), policy(), 8, Arc::new(NoObserver));
    loc.start_sweeper();
    let r = register(&loc, update("a@x", 1, 1)).await.unwrap();
    assert!(r.changed);
    assert_eq!(loc.lookup("a@x").unwrap().len(), 1);
    assert_eq!(loc.total(), 1);
    assert!(store.map.lock().unwrap().contains_key("a@x"));
    // Expiry after one second: binding, store record and actor go.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while loc.lookup("a@x").is_some() || loc.aors() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "binding never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(loc.total(), 0);
    assert!(!store.map.lock().unwrap().contains_key("a@x"));
    // A new REGISTER for the same AOR starts a fresh actor.
    assert!(register(&loc, update("a@x", 60, 2)).await.unwrap().changed);
    assert_eq!(loc.total(), 1);
}

#[actix_rt::test]
async fn a_refused_first_register_leaves_no_actor() {
    let loc = Location::new(
        Arc::new(MemStore::default()),
        Policy::default(),
        8,
        Arc::new(NoObserver),
    );
    let r = register(&loc, update("b@x", 5, 1)).await;
    assert_eq!(r.unwrap_err(), RegisterError::IntervalTooBrief { min: 60 });
    // The actor retires itself right after answering, and the AOR leaves the map.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while loc.aors() > 0 || loc.actors() > 0 {
        assert!(std::time::Instant::now() < deadline);
        tokio::task::yield_now().await;
    }
}

#[actix_rt::test]
async fn restore_rebuilds_and_drops_expired() {
    let store = Arc::new(MemStore::default());
    let loc = Location::new(store.clone(), policy(), 8, Arc::new(NoObserver));
    register(&loc, update("a@x", 3600, 1)).await.unwrap();
    let mut u = update("b@x", 3600, 1);
    u.now_ms -= 3_601_000; // registered over an hour ago: expired by now
    register(&loc, u).await.unwrap();
    let records: Vec<(String, Vec<u8>)> = store
        .map
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let fresh = Location::new(
        Arc::new(MemStore::default()),
        policy(),
        8,
        Arc::new(NoObserver),
    );
    let r = fresh.restore(records, now_ms());
    assert_eq!((r.aors, r.bindings, r.expired), (1, 1, 1));
    assert!(fresh.lookup("a@x").is_some());
    assert!(fresh.lookup("b@x").is_none());
    // The restored actor takes further REGISTERs (CSeq rules hold across the restart).
    let again = register(&fresh, update("a@x", 3600, 1)).await.unwrap();
    assert!(
        !again.changed,
        "same Call-ID and CSeq after a restart is a retransmission"
    );
}

#[actix_rt::test]
async fn commit_waits_for_the_store_and_a_full_mailbox_refuses() {
    let gate = Arc::new(Semaphore::new(0));
    let store = Arc::new(MemStore {
        map: Mutex::default(),
        gate: Some(gate.clone()),
    });
    let loc = Location::new(store, policy(), 2, Arc::new(NoObserver));
    let mut pending = Vec::new();
    let mut overloaded = 0;
    for cseq in 1..=20 {
        let (tx, rx) = oneshot::channel();
        loc.register(
            update("c@x", 60, cseq),
            Reply::new(move |r| drop(tx.send(r))),
        );
        pending.push(rx);
    }
    // Let the actor pick up its first message; it is now waiting on the store.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        loc.lookup("c@x").is_none(),
        "committed before the store acknowledged"
    );
    gate.add_permits(100);
    for rx in pending {
        match tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .unwrap()
            .unwrap()
        {
            Ok(_) => {}
            Err(RegisterError::Overloaded) => overloaded += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(overloaded > 0, "a mailbox of 2 took 20 messages");
    assert_eq!(loc.lookup("c@x").unwrap().len(), 1);
}

#[actix_rt::test]
async fn many_aors_in_parallel() {
    let loc = Location::new(
        Arc::new(MemStore::default()),
        policy(),
        8,
        Arc::new(NoObserver),
    );
    let mut rxs = Vec::new();
    for i in 0..2000 {
        let (tx, rx) = oneshot::channel();
        loc.register(
            update(&format!("u{i}@x"), 60, 1),
            Reply::new(move |r| drop(tx.send(r))),
        );
        rxs.push(rx);
    }
    for rx in rxs {
        assert!(rx.await.unwrap().unwrap().changed);
    }
    assert_eq!(loc.total(), 2000);
    assert_eq!(loc.snapshot().len(), 2000);
    // Idle AORs keep their bindings but no actor.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while loc.actors() > 0 {
        assert!(std::time::Instant::now() < deadline, "actors never stopped");
        tokio::task::yield_now().await;
    }
    assert_eq!(loc.aors(), 2000);
    let _ = System::current();
}

#[actix_rt::test]
async fn sweep_expires_only_what_is_due() {
    let loc = Location::new(
        Arc::new(MemStore::default()),
        policy(),
        8,
        Arc::new(NoObserver),
    );
    register(&loc, update("a@x", 60, 1)).await.unwrap();
    register(&loc, update("b@x", 3600, 1)).await.unwrap();
    assert_eq!(loc.sweep(now_ms()), 0);
    let due = loc.sweep(now_ms() + 61_000);
    assert_eq!(due, 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while loc.total() != 1 {
        assert!(std::time::Instant::now() < deadline, "a@x never expired");
        tokio::task::yield_now().await;
    }
    assert!(loc.lookup("a@x").is_none());
    assert!(loc.lookup("b@x").is_some());
}
