//! The transaction layer: every live transaction, the matching tables and one ordered
//! set of deadlines (RFC 3261 §17, §17.1.3, §17.2.3; RFC 6026).

use super::ict::Ict;
use super::ist::Ist;
use super::nict::Nict;
use super::nist::Nist;
use super::{
    ClientKey, Ctx, Out, ServerKey, Timer, TimerConfig, TimerTable, Transmit, TxError, TxEvent,
    TxId, TxKind, TxStats,
};
use crate::transport::Peer;
use crate::wire::{Message, Method, Request, Response};
use hashbrown::HashTable;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hash};
use std::time::Instant;

#[derive(Debug)]
// Boxed: the machines differ in size (an INVITE transaction keeps its request, about
// 1 KB; a finished NIST about 300 bytes), and the transaction table's slots would all be
// as large as the largest one. A REGISTER load keeps hundreds of thousands of NISTs alive
// for Timer J, so the slot size is most of the switch's memory under such a load.
enum Machine {
    Ict(Box<Ict>),
    Nict(Box<Nict>),
    Ist(Box<Ist>),
    Nist(Box<Nist>),
}

impl Machine {
    fn kind(&self) -> TxKind {
        match self {
            Machine::Ict(_) => TxKind::InviteClient,
            Machine::Nict(_) => TxKind::NonInviteClient,
            Machine::Ist(_) => TxKind::InviteServer,
            Machine::Nist(_) => TxKind::NonInviteServer,
        }
    }

    fn peer(&self) -> Peer {
        match self {
            Machine::Ict(m) => m.peer(),
            Machine::Nict(m) => m.peer(),
            Machine::Ist(m) => m.peer(),
            Machine::Nist(m) => m.peer(),
        }
    }

    fn timers(&self) -> &TimerTable {
        match self {
            Machine::Ict(m) => m.timers(),
            Machine::Nict(m) => m.timers(),
            Machine::Ist(m) => m.timers(),
            Machine::Nist(m) => m.timers(),
        }
    }

    fn timers_mut(&mut self) -> &mut TimerTable {
        match self {
            Machine::Ict(m) => m.timers_mut(),
            Machine::Nict(m) => m.timers_mut(),
            Machine::Ist(m) => m.timers_mut(),
            Machine::Nist(m) => m.timers_mut(),
        }
    }

    fn is_terminated(&self) -> bool {
        match self {
            Machine::Ict(m) => m.is_terminated(),
            Machine::Nict(m) => m.is_terminated(),
            Machine::Ist(m) => m.is_terminated(),
            Machine::Nist(m) => m.is_terminated(),
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, timer: Timer) {
        match self {
            Machine::Ict(m) => m.on_timer(ctx, timer),
            Machine::Nict(m) => m.on_timer(ctx, timer),
            Machine::Ist(m) => m.on_timer(ctx, timer),
            Machine::Nist(m) => m.on_timer(ctx, timer),
        }
    }

    fn on_transport_error(&mut self, ctx: &mut Ctx<'_>) {
        match self {
            Machine::Ict(m) => m.on_transport_error(ctx),
            Machine::Nict(m) => m.on_transport_error(ctx),
            Machine::Ist(m) => m.on_transport_error(ctx),
            Machine::Nist(m) => m.on_transport_error(ctx),
        }
    }

    /// True when the transaction's work is done and it only waits out a timer to absorb
    /// retransmissions: ICT Completed (Timer D) and Accepted (Timer M), NICT Completed
    /// (Timer K), IST Confirmed (Timer I) and Accepted (Timer L), NIST Completed
    /// (Timer J). No state leads back from these to one that does work.
    fn is_lingering(&self) -> bool {
        use super::{ict, ist, nict, nist};
        match self {
            Machine::Ict(m) => matches!(
                m.state(),
                ict::State::Completed(_) | ict::State::Accepted(_)
            ),
            Machine::Nict(m) => matches!(m.state(), nict::State::Completed(_)),
            Machine::Ist(m) => matches!(
                m.state(),
                ist::State::Confirmed(_) | ist::State::Accepted(_)
            ),
            Machine::Nist(m) => matches!(m.state(), nist::State::Completed(_)),
        }
    }
}

#[derive(Debug)]
enum Key {
    Client(ClientKey),
    Server(ServerKey),
}

#[derive(Debug)]
struct Entry {
    key: Key,
    machine: Machine,
    /// The machine has reached a lingering state ([`Machine::is_lingering`]) and its id
    /// is in [`TxLayer::lingering`].
    lingering: bool,
}

impl Entry {
    fn client_key(&self) -> Option<&ClientKey> {
        match &self.key {
            Key::Client(k) => Some(k),
            Key::Server(_) => None,
        }
    }

    fn server_key(&self) -> Option<&ServerKey> {
        match &self.key {
            Key::Server(k) => Some(k),
            Key::Client(_) => None,
        }
    }
}

/// Finds a transaction by its matching key. It holds only [`TxId`]s, hashed by the key
/// the transaction's [`Entry`] holds and compared against that key: one copy of each key
/// (a key is 48–80 bytes plus its branch string, and a call keeps two or three
/// transactions for 64·T1 after its setup; RFC 6026's Accepted state).
#[derive(Debug)]
struct KeyIndex<K> {
    table: HashTable<TxId>,
    hasher: RandomState,
    key_of: fn(&Entry) -> Option<&K>,
}

impl<K: Hash + Eq> KeyIndex<K> {
    fn new(key_of: fn(&Entry) -> Option<&K>) -> KeyIndex<K> {
        KeyIndex {
            table: HashTable::new(),
            hasher: RandomState::new(),
            key_of,
        }
    }

    fn key<'a>(&self, txs: &'a HashMap<TxId, Entry>, id: &TxId) -> Option<&'a K> {
        txs.get(id).and_then(self.key_of)
    }

    fn get(&self, txs: &HashMap<TxId, Entry>, key: &K) -> Option<TxId> {
        let hash = self.hasher.hash_one(key);
        self.table
            .find(hash, |id| self.key(txs, id) == Some(key))
            .copied()
    }

    fn contains(&self, txs: &HashMap<TxId, Entry>, key: &K) -> bool {
        self.get(txs, key).is_some()
    }

    /// Indexes `id`, whose entry (holding `key`) is already in `txs`.
    fn insert(&mut self, txs: &HashMap<TxId, Entry>, key: &K, id: TxId) {
        let hash = self.hasher.hash_one(key);
        let (hasher, key_of) = (&self.hasher, self.key_of);
        self.table
            .insert_unique(hash, id, |id| rehash(hasher, key_of, txs, id));
    }

    /// Drops `id` (indexed under `key`), if indexed.
    fn remove(&mut self, key: &K, id: TxId) {
        let hash = self.hasher.hash_one(key);
        if let Ok(found) = self.table.find_entry(hash, |x| *x == id) {
            found.remove();
        }
    }

    /// [`crate::mem::shrink_sparse`] for the index (`txs` still holds every indexed entry).
    fn shrink_sparse(&mut self, txs: &HashMap<TxId, Entry>) {
        let (cap, len) = (self.table.capacity(), self.table.len());
        if crate::mem::is_sparse(cap, len) {
            let (hasher, key_of) = (&self.hasher, self.key_of);
            self.table
                .shrink_to(len * 2, |id| rehash(hasher, key_of, txs, id));
        }
    }
}

/// The hash of the key `id`'s entry holds, for a [`KeyIndex`] that grows or shrinks
/// (every indexed id has its entry in `txs`).
fn rehash<K: Hash>(
    hasher: &RandomState,
    key_of: fn(&Entry) -> Option<&K>,
    txs: &HashMap<TxId, Entry>,
    id: &TxId,
) -> u64 {
    txs.get(id)
        .and_then(key_of)
        .map_or(0, |k| hasher.hash_one(k))
}

/// How many recent UDP client transactions an ICMP error is matched against.
const RECENT_CLIENTS: usize = 4096;

/// The RFC 3261 §17 transaction layer: sans-IO, deterministic, single-threaded.
///
/// # Calling order
///
/// 1. Feed one input: [`handle_request`](Self::handle_request) or
///    [`handle_response`](Self::handle_response) for a parsed message from the
///    transport, [`handle_timeout`](Self::handle_timeout) when the sleep armed in step 3
///    expires, [`handle_transport_error`](Self::handle_transport_error) when a
///    [`Transmit`] failed, or a TU call: [`send_request`](Self::send_request),
///    [`send_response`](Self::send_response), [`send_stateless`](Self::send_stateless).
///    Each takes `now`; the layer never reads the clock.
/// 2. Drain [`poll_transmit`](Self::poll_transmit) (hand each to the transport) and
///    [`poll_event`](Self::poll_event) (hand each to the TU) until both return `None`.
///    TU calls made while handling an event are inputs too: loop back to step 2.
/// 3. Re-arm the driver's one sleep to [`poll_timeout`](Self::poll_timeout) (none
///    when it returns `None`), then wait for the next input.
///
/// A transaction is removed the instant it terminates (§17.1.1.2) and a
/// [`TxEvent::Terminated`] is queued; after every flow completes [`len`](Self::len)
/// is back to 0.
///
/// # Capacity
///
/// The table holds at most [`capacity`](Self::capacity) transactions. A transaction
/// that only waits out its timer (lingering: RFC 6026 Accepted, Timer D/I/J/K) yields
/// its slot: when a new transaction finds the table full, the oldest lingering one is
/// retired (removed as if its timer had fired, counted in [`TxStats::retired`]). What
/// the TU should refuse new work on is [`has_room`](Self::has_room): the working
/// transactions alone fill the table. So a sustained call rate, which keeps about 100
/// transaction-seconds per call lingering, never turns into refusals while the table
/// has lingering slots to give, and the bound still caps the table's memory.
#[derive(Debug)]
pub struct TxLayer {
    cfg: TimerConfig,
    next_id: u64,
    txs: HashMap<TxId, Entry>,
    clients: KeyIndex<ClientKey>,
    servers: KeyIndex<ServerKey>,
    /// The last [`RECENT_CLIENTS`] client transactions sent over UDP, for ICMP errors:
    /// one comes back within a round trip of the datagram, so a bounded window of recent
    /// sends finds its transaction without scanning the whole table (an ICMP a peer can
    /// provoke at will must not cost a scan of hundreds of thousands of entries).
    recent_clients: std::collections::VecDeque<(Peer, TxId)>,
    /// Every armed deadline of every transaction; kept equal to the union of the
    /// transactions' timer tables, so the first entry is the next deadline.
    deadlines: BTreeSet<(Instant, TxId, Timer)>,
    counts: [usize; 4],
    /// At most this many live transactions (see the type's doc, Capacity).
    capacity: usize,
    /// Lingering transactions in the order they began to linger, oldest first: the
    /// order they are retired in. Ids of transactions that have since terminated are
    /// skipped and dropped when they reach the front.
    lingering: std::collections::VecDeque<TxId>,
    /// How many live transactions linger (the live ids in `lingering`).
    lingering_live: usize,
    out: Out,
}

/// Brings the layer's deadline set in line with one transaction's table.
fn sync_deadlines(
    set: &mut BTreeSet<(Instant, TxId, Timer)>,
    id: TxId,
    before: &TimerTable,
    after: &TimerTable,
) {
    for (at, t) in before.armed() {
        if after.get(t) != Some(at) {
            set.remove(&(at, id, t));
        }
    }
    for (at, t) in after.armed() {
        if before.get(t) != Some(at) {
            set.insert((at, id, t));
        }
    }
}

impl TxLayer {
    /// An empty layer with these timer constants.
    pub fn new(cfg: TimerConfig) -> TxLayer {
        TxLayer {
            cfg,
            next_id: 1,
            txs: HashMap::new(),
            clients: KeyIndex::new(Entry::client_key),
            servers: KeyIndex::new(Entry::server_key),
            recent_clients: std::collections::VecDeque::new(),
            deadlines: BTreeSet::new(),
            counts: [0; 4],
            capacity: usize::MAX,
            lingering: std::collections::VecDeque::new(),
            lingering_live: 0,
            out: Out::default(),
        }
    }

    /// Bounds the table to `capacity` live transactions (at least 1; see the type's
    /// doc, Capacity). Unbounded until set.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    /// The bound set by [`set_capacity`](Self::set_capacity).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// True when a new transaction can be taken on without exceeding the capacity by
    /// working transactions: lingering ones make room by retiring.
    pub fn has_room(&self) -> bool {
        self.working() < self.capacity
    }

    /// Live transactions that still do work (not lingering).
    pub fn working(&self) -> usize {
        self.txs.len() - self.lingering_live
    }

    /// Live transactions that only wait out a timer.
    pub fn lingering(&self) -> usize {
        self.lingering_live
    }

    /// Retires the oldest lingering transaction to make room; false when none lingers.
    fn retire_oldest(&mut self) -> bool {
        while let Some(id) = self.lingering.pop_front() {
            if self.txs.get(&id).is_some_and(|e| e.lingering) {
                self.out.stats.retired += 1;
                self.remove(id);
                return true;
            }
        }
        false
    }

    /// The timer constants.
    pub fn config(&self) -> &TimerConfig {
        &self.cfg
    }

    fn alloc(&mut self) -> TxId {
        let id = TxId(self.next_id);
        self.next_id += 1;
        id
    }

    fn insert(&mut self, id: TxId, key: Key, machine: Machine) {
        while self.txs.len() >= self.capacity && self.retire_oldest() {}
        sync_deadlines(
            &mut self.deadlines,
            id,
            &TimerTable::default(),
            machine.timers(),
        );
        let kind = machine.kind();
        self.counts[kind.slot()] += 1;
        self.out.stats.created[kind.slot()] += 1;
        self.txs.insert(
            id,
            Entry {
                key,
                machine,
                lingering: false,
            },
        );
        let entry = &self.txs[&id];
        match &entry.key {
            Key::Client(k) => self.clients.insert(&self.txs, k, id),
            Key::Server(k) => self.servers.insert(&self.txs, k, id),
        }
    }

    fn remove(&mut self, id: TxId) {
        let Some(entry) = self.txs.remove(&id) else {
            return;
        };
        sync_deadlines(
            &mut self.deadlines,
            id,
            entry.machine.timers(),
            &TimerTable::default(),
        );
        match &entry.key {
            Key::Client(k) => self.clients.remove(k, id),
            Key::Server(k) => self.servers.remove(k, id),
        }
        if entry.lingering {
            self.lingering_live -= 1;
        }
        // Drop the ids of transactions gone since they began to linger (amortised O(1):
        // each id is pushed and popped once).
        while let Some(front) = self.lingering.front() {
            if self.txs.get(front).is_some_and(|e| e.lingering) {
                break;
            }
            self.lingering.pop_front();
        }
        if crate::mem::is_sparse(self.lingering.capacity(), self.lingering.len()) {
            self.lingering.shrink_to(self.lingering.len() * 2);
        }
        crate::mem::shrink_sparse(&mut self.txs);
        self.clients.shrink_sparse(&self.txs);
        self.servers.shrink_sparse(&self.txs);
        self.counts[entry.machine.kind().slot()] -= 1;
        self.out.stats.terminated += 1;
        self.out.events.push_back(TxEvent::Terminated { tx: id });
    }

    /// Runs one input through transaction `id`, then re-syncs its deadlines and removes
    /// it if it terminated. `None` when `id` is not live.
    fn drive<R>(
        &mut self,
        now: Instant,
        id: TxId,
        f: impl FnOnce(&mut Machine, &mut Ctx<'_>) -> R,
    ) -> Option<R> {
        let entry = self.txs.get_mut(&id)?;
        let before = entry.machine.timers().clone();
        let mut ctx = Ctx {
            id,
            now,
            cfg: self.cfg,
            out: &mut self.out,
        };
        let r = f(&mut entry.machine, &mut ctx);
        let after = entry.machine.timers();
        let done = entry.machine.is_terminated();
        sync_deadlines(&mut self.deadlines, id, &before, after);
        if done {
            self.remove(id);
        } else if !entry.lingering && entry.machine.is_lingering() {
            entry.lingering = true;
            self.lingering_live += 1;
            self.lingering.push_back(id);
        }
        Some(r)
    }

    /// True when `request` belongs to a server transaction we hold (a retransmission):
    /// [`handle_request`](Self::handle_request) must have it.
    pub fn has_server_transaction(&self, request: &Request) -> bool {
        ServerKey::for_request(request).is_some_and(|k| self.servers.contains(&self.txs, &k))
    }

    /// Opens the INVITE server transaction for a new INVITE the TU has already taken (a
    /// call): queues the 100 Trying at once and raises no [`TxEvent::Request`]. `None`
    /// when the request has no usable Via, or is a retransmission
    /// ([`has_server_transaction`](Self::has_server_transaction)).
    pub fn open_invite(&mut self, now: Instant, from: Peer, request: &Request) -> Option<TxId> {
        let key = ServerKey::for_request(request)?;
        if request.method != Method::Invite || self.servers.contains(&self.txs, &key) {
            return None;
        }
        let id = self.alloc();
        let mut ctx = Ctx {
            id,
            now,
            cfg: self.cfg,
            out: &mut self.out,
        };
        let ist = Ist::start(&mut ctx, from, request);
        self.insert(id, Key::Server(key), Machine::Ist(Box::new(ist)));
        Some(id)
    }

    /// A request from the transport (§17.2.3). A retransmission goes to its server
    /// transaction; a new request creates one and raises [`TxEvent::Request`] (or
    /// [`TxEvent::Cancel`]); an ACK goes to its INVITE server transaction or up as
    /// [`TxEvent::Ack`]. A request without a Via is dropped (L2 should have refused it).
    pub fn handle_request(&mut self, now: Instant, from: Peer, request: Request) {
        if request.method == Method::Ack {
            self.handle_ack(now, from, request);
            return;
        }
        let Some(key) = ServerKey::for_request(&request) else {
            self.out.stats.dropped_requests += 1;
            return;
        };
        if let Some(id) = self.servers.get(&self.txs, &key) {
            self.drive(now, id, |m, ctx| match m {
                Machine::Ist(t) => t.on_retransmission(ctx),
                Machine::Nist(t) => t.on_retransmission(ctx),
                Machine::Ict(_) | Machine::Nict(_) => {}
            });
            return;
        }
        let id = self.alloc();
        if request.method == Method::Invite {
            let mut ctx = Ctx {
                id,
                now,
                cfg: self.cfg,
                out: &mut self.out,
            };
            let ist = Ist::start(&mut ctx, from, &request);
            self.insert(id, Key::Server(key), Machine::Ist(Box::new(ist)));
            self.out.events.push_back(TxEvent::Request {
                tx: id,
                from,
                request,
            });
            return;
        }
        let target = if request.method == Method::Cancel {
            self.cancel_target(&request)
        } else {
            None
        };
        let is_cancel = request.method == Method::Cancel;
        let nist = Nist::start(from);
        self.insert(id, Key::Server(key), Machine::Nist(Box::new(nist)));
        self.out.events.push_back(if is_cancel {
            TxEvent::Cancel {
                tx: id,
                from,
                request,
                target,
            }
        } else {
            TxEvent::Request {
                tx: id,
                from,
                request,
            }
        });
    }

    /// The INVITE server transaction a CANCEL targets (§9.2).
    fn cancel_target(&self, cancel: &Request) -> Option<TxId> {
        let key = ServerKey::cancel_target(cancel)?;
        let id = self.servers.get(&self.txs, &key)?;
        match self.txs.get(&id)?.machine {
            Machine::Ist(_) => Some(id),
            _ => None,
        }
    }

    /// The INVITE server transaction an ACK belongs to (§17.2.3).
    fn ack_target(&self, ack: &Request) -> Option<TxId> {
        ServerKey::ack_candidates(ack).into_iter().find_map(|key| {
            let id = self.servers.get(&self.txs, &key)?;
            match &self.txs.get(&id)?.machine {
                // RFC 2543: the ACK's To tag must be the tag of the response sent.
                Machine::Ist(ist)
                    if !key.is_rfc2543() || ist.final_to_tag() == ack.common.to.tag() =>
                {
                    Some(id)
                }
                _ => None,
            }
        })
    }

    fn handle_ack(&mut self, now: Instant, from: Peer, ack: Request) {
        match self.ack_target(&ack) {
            Some(id) => {
                self.drive(now, id, move |m, ctx| {
                    if let Machine::Ist(t) = m {
                        t.on_ack(ctx, from, ack);
                    }
                });
            }
            None => self
                .out
                .events
                .push_back(TxEvent::Ack { from, request: ack }),
        }
    }

    /// A response from the transport (§17.1.3): to its client transaction, or up as
    /// [`TxEvent::StrayResponse`].
    pub fn handle_response(&mut self, now: Instant, from: Peer, response: Response) {
        let id = ClientKey::for_response(&response).and_then(|k| self.clients.get(&self.txs, &k));
        match id {
            Some(id) => {
                self.drive(now, id, |m, ctx| match m {
                    Machine::Ict(t) => t.on_response(ctx, response),
                    Machine::Nict(t) => t.on_response(ctx, response),
                    Machine::Ist(_) | Machine::Nist(_) => {}
                });
            }
            None => {
                self.out.stats.stray_responses += 1;
                self.out
                    .events
                    .push_back(TxEvent::StrayResponse { from, response });
            }
        }
    }

    /// Fires every deadline at or before `now`. Deadlines a handler arms at or before
    /// `now` wait for the next call, so a zero interval cannot spin here.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        while let Some(&first) = self.deadlines.first() {
            if first.0 > now {
                break;
            }
            self.deadlines.remove(&first);
            due.push(first);
        }
        for (at, id, timer) in due {
            // Skip a stale entry: the transaction is gone or re-armed the timer.
            let live = self
                .txs
                .get(&id)
                .is_some_and(|e| e.machine.timers().get(timer) == Some(at));
            if !live {
                continue;
            }
            self.drive(now, id, |m, ctx| {
                m.timers_mut().stop(timer);
                m.on_timer(ctx, timer);
            });
        }
    }

    /// TU: starts a client transaction for `request` (INVITE or non-INVITE, not ACK)
    /// towards `to` and queues the request. Its top Via must carry an RFC 3261 branch
    /// ([`super::new_branch`]); the Via, like every other header, is the TU's.
    pub fn send_request(
        &mut self,
        now: Instant,
        to: Peer,
        request: Request,
    ) -> Result<TxId, TxError> {
        if request.method == Method::Ack {
            return Err(TxError::AckIsNotATransaction);
        }
        let key = ClientKey::for_request(&request).ok_or(TxError::MissingBranch)?;
        if self.clients.contains(&self.txs, &key) {
            return Err(TxError::DuplicateTransaction);
        }
        let id = self.alloc();
        if to.transport == crate::transport::Transport::Udp {
            if self.recent_clients.len() == RECENT_CLIENTS {
                self.recent_clients.pop_front();
            }
            self.recent_clients.push_back((to, id));
        }
        let mut ctx = Ctx {
            id,
            now,
            cfg: self.cfg,
            out: &mut self.out,
        };
        // §9.1: a CANCEL bounds its INVITE's wait for a final response.
        let cancelled = (request.method == Method::Cancel)
            .then(|| {
                self.clients.get(
                    &self.txs,
                    &ClientKey {
                        branch: key.branch.clone(),
                        method: Method::Invite,
                    },
                )
            })
            .flatten();
        let machine = if request.method == Method::Invite {
            Machine::Ict(Box::new(Ict::start(&mut ctx, to, request)))
        } else {
            Machine::Nict(Box::new(Nict::start(&mut ctx, to, &request)))
        };
        self.insert(id, Key::Client(key), machine);
        if let Some(invite) = cancelled {
            self.drive(now, invite, |m, ctx| {
                if let Machine::Ict(t) = m {
                    t.on_cancel_sent(ctx);
                }
            });
        }
        Ok(id)
    }

    /// TU: answers server transaction `tx` (provisional or final). Responses go to the
    /// peer the request came from. In RFC 6026 Accepted only a 2xx is allowed: the TU's
    /// retransmission of its 2xx (§13.3.1.4).
    pub fn send_response(
        &mut self,
        now: Instant,
        tx: TxId,
        response: Response,
    ) -> Result<(), TxError> {
        let entry = self.txs.get(&tx).ok_or(TxError::UnknownTransaction)?;
        if matches!(entry.machine, Machine::Ict(_) | Machine::Nict(_)) {
            return Err(TxError::NotServerTransaction);
        }
        if !(100..=699).contains(&response.status) {
            return Err(TxError::InvalidStatus(response.status));
        }
        self.drive(now, tx, |m, ctx| match m {
            Machine::Ist(t) => t.send_response(ctx, &response),
            Machine::Nist(t) => t.send_response(ctx, &response),
            Machine::Ict(_) | Machine::Nict(_) => Err(TxError::NotServerTransaction),
        })
        .unwrap_or(Err(TxError::UnknownTransaction))
    }

    /// TU: sends a message outside any transaction: the ACK for a 2xx (§13.2.2.4), a
    /// stateless response, a 2xx retransmission after Timer L. Serialised once, queued
    /// with `tx: None`.
    pub fn send_stateless(&mut self, to: Peer, message: &Message) {
        self.out.transmits.push_back(Transmit {
            peer: to,
            bytes: message.to_bytes(),
            tx: None,
        });
    }

    /// The transport failed to send a [`Transmit`] of `tx` (§17.1.4, §17.2.4): the TU
    /// gets [`TxEvent::TransportError`] and the transaction terminates (except in
    /// RFC 6026 Accepted). Unknown ids are ignored: the transaction may already be gone.
    pub fn handle_transport_error(&mut self, now: Instant, tx: TxId) {
        self.drive(now, tx, |m, ctx| m.on_transport_error(ctx));
    }

    /// ICMP said a UDP datagram we sent to `peer` could not be delivered (port or host
    /// unreachable, RFC 3261 §18.4): the client transaction that sent it fails as if its
    /// send had failed (§17.1.4), so the TU learns now, not at Timer B/F, if it has had
    /// no response yet (a late ICMP for a retransmission says nothing about a peer that
    /// has answered). `request` is the method and top Via branch of the datagram when
    /// the error quoted it: that transaction only (an ACK, a response, or a transaction
    /// gone or answered: none). Without it, every recent client transaction to `peer`
    /// with no response yet (rare, so a scan of the recent window).
    pub fn handle_unreachable(
        &mut self,
        now: Instant,
        peer: Peer,
        request: Option<(Method, String)>,
    ) {
        let candidates: Vec<TxId> = match request {
            Some((method, branch)) => self
                .clients
                .get(&self.txs, &ClientKey { branch, method })
                .filter(|id| self.txs.get(id).is_some_and(|e| e.machine.peer() == peer))
                .into_iter()
                .collect(),
            None => self
                .recent_clients
                .iter()
                .filter(|(p, _)| *p == peer)
                .map(|(_, id)| *id)
                .collect(),
        };
        let hit: Vec<TxId> = candidates
            .into_iter()
            .filter(|id| match self.txs.get(id).map(|e| &e.machine) {
                Some(Machine::Ict(t)) => matches!(t.state(), super::ict::State::Calling(_)),
                Some(Machine::Nict(t)) => matches!(t.state(), super::nict::State::Trying(_)),
                _ => false,
            })
            .collect();
        for tx in hit {
            self.handle_transport_error(now, tx);
        }
    }

    /// The next datagram or stream write, in the order queued.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    /// The next event for the TU, in the order raised.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.out.events.pop_front()
    }

    /// The earliest armed deadline of any transaction, O(log n).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(at, _, _)| at)
    }

    /// Cumulative counters.
    pub fn stats(&self) -> &TxStats {
        &self.out.stats
    }

    /// Live transactions.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// True when no transaction is live.
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// True when every live transaction is a non-INVITE server transaction that has
    /// sent its final response and only waits out Timer J to absorb retransmissions:
    /// nothing a shutdown drain needs to wait for (RFC 3261 §17.2.2).
    pub fn is_settled(&self) -> bool {
        self.txs.values().all(|e| {
            matches!(&e.machine, Machine::Nist(n) if matches!(n.state(), crate::txn::nist::State::Completed(_)))
        })
    }

    /// Live transactions of one kind.
    pub fn count(&self, kind: TxKind) -> usize {
        self.counts[kind.slot()]
    }

    /// The kind of a live transaction.
    pub fn kind(&self, tx: TxId) -> Option<TxKind> {
        self.txs.get(&tx).map(|e| e.machine.kind())
    }

    /// The peer of a live transaction: where the request went (client) or came from
    /// (server).
    pub fn peer(&self, tx: TxId) -> Option<Peer> {
        self.txs.get(&tx).map(|e| e.machine.peer())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Transport;
    use crate::txn::testutil::*;
    use crate::wire::Param;

    /// One row of the timer table: a flow started at t = 0, the times (in seconds) at
    /// which the layer retransmits on its own, and when and how the transaction ends.
    struct Row {
        name: &'static str,
        transport: Transport,
        start: fn(&mut Harness),
        retransmits_at: &'static [f64],
        ends_at: f64,
        timeout: Option<Timer>,
    }

    fn ict_silent(h: &mut Harness) {
        let invite = invite_request(&new_branch_for_test());
        h.layer.send_request(h.now, h.peer, invite).unwrap();
    }

    fn ict_rejected(h: &mut Harness) {
        let invite = invite_request(&new_branch_for_test());
        h.layer.send_request(h.now, h.peer, invite.clone()).unwrap();
        h.layer
            .handle_response(h.now, h.peer, invite.response(486, None, Some("b")));
    }

    fn ict_accepted(h: &mut Harness) {
        let invite = invite_request(&new_branch_for_test());
        h.layer.send_request(h.now, h.peer, invite.clone()).unwrap();
        h.layer
            .handle_response(h.now, h.peer, invite.response(200, None, Some("b")));
    }

    fn nict_silent(h: &mut Harness) {
        let req = request(Method::Options, &new_branch_for_test());
        h.layer.send_request(h.now, h.peer, req).unwrap();
    }

    fn nict_answered(h: &mut Harness) {
        let req = request(Method::Options, &new_branch_for_test());
        h.layer.send_request(h.now, h.peer, req.clone()).unwrap();
        h.layer
            .handle_response(h.now, h.peer, req.response(200, None, Some("b")));
    }

    /// An ICMP error that quotes its datagram fails that datagram's transaction only: a
    /// late one for an ACK or an answered transaction fails nothing; one without a quote
    /// fails every unanswered recent transaction to the peer (RFC 3261 §18.4).
    #[test]
    fn an_icmp_error_fails_the_transaction_it_quotes() {
        let mut h = Harness::udp();
        let (one, two) = (new_branch_for_test(), new_branch_for_test());
        let a = h
            .layer
            .send_request(h.now, h.peer, invite_request(&one))
            .unwrap();
        let b = h
            .layer
            .send_request(h.now, h.peer, invite_request(&two))
            .unwrap();
        h.events();
        let failed = |h: &mut Harness| -> Vec<TxId> {
            h.events()
                .into_iter()
                .filter_map(|e| match e {
                    TxEvent::TransportError { tx } => Some(tx),
                    _ => None,
                })
                .collect()
        };
        h.layer
            .handle_unreachable(h.now, h.peer, Some((Method::Ack, one.clone())));
        assert_eq!(failed(&mut h), vec![]);
        let elsewhere = Peer::udp("192.0.2.99:5060".parse().unwrap());
        h.layer
            .handle_unreachable(h.now, elsewhere, Some((Method::Invite, one.clone())));
        assert_eq!(failed(&mut h), vec![]);
        h.layer
            .handle_unreachable(h.now, h.peer, Some((Method::Invite, one)));
        assert_eq!(failed(&mut h), vec![a]);
        let c = h
            .layer
            .send_request(h.now, h.peer, invite_request(&new_branch_for_test()))
            .unwrap();
        h.layer.handle_unreachable(h.now, h.peer, None);
        assert_eq!(failed(&mut h), vec![b, c]);
    }

    /// The key indexes keep finding every transaction while they grow past their first
    /// capacities and shrink back (both rehash from the keys the entries hold).
    #[test]
    fn key_indexes_match_through_growth_and_shrink() {
        let mut h = Harness::tcp();
        let reqs: Vec<Request> = (0..5000)
            .map(|_| request(Method::Options, &new_branch_for_test()))
            .collect();
        let ids: Vec<TxId> = reqs
            .iter()
            .map(|r| h.layer.send_request(h.now, h.peer, r.clone()).unwrap())
            .collect();
        let servers: Vec<Request> = (0..5000)
            .map(|_| request(Method::Options, &new_branch_for_test()))
            .collect();
        let server_ids: Vec<TxId> = servers.iter().map(|r| server_tx(&mut h, r)).collect();
        h.events();
        assert_eq!(h.layer.len(), 10_000);
        // Answer all but the last 100 clients; over TCP each terminates at once (Timer K
        // is zero), and the tables shrink as they empty.
        for r in &reqs[..4900] {
            h.layer
                .handle_response(h.now, h.peer, r.response(200, None, Some("b")));
        }
        h.advance(std::time::Duration::from_millis(1));
        assert_eq!(h.layer.out.stats.stray_responses, 0);
        for (r, id) in servers.iter().zip(&server_ids) {
            assert!(h.layer.has_server_transaction(r));
            h.layer
                .send_response(h.now, *id, r.response(200, None, Some("b")))
                .unwrap();
        }
        h.advance(std::time::Duration::from_millis(1));
        assert_eq!(h.layer.len(), 100);
        assert!(servers.iter().all(|r| !h.layer.has_server_transaction(r)));
        // The survivors are still found by their keys; a retransmitted response of an
        // ended one is stray.
        for (r, id) in reqs[4900..].iter().zip(&ids[4900..]) {
            assert!(h
                .layer
                .clients
                .contains(&h.layer.txs, &ClientKey::for_request(r).unwrap()));
            assert_eq!(h.layer.kind(*id), Some(TxKind::NonInviteClient));
        }
        h.layer
            .handle_response(h.now, h.peer, reqs[0].response(200, None, Some("b")));
        assert_eq!(h.layer.out.stats.stray_responses, 1);
        assert!(h.layer.clients.table.capacity() < 5000);
        assert!(h.layer.servers.table.capacity() < 5000);
    }

    fn server_tx(h: &mut Harness, req: &Request) -> TxId {
        h.layer.handle_request(h.now, h.peer, req.clone());
        h.events()
            .into_iter()
            .find_map(|e| match e {
                TxEvent::Request { tx, .. } => Some(tx),
                _ => None,
            })
            .unwrap()
    }

    fn ist_rejected_no_ack(h: &mut Harness) {
        let invite = invite_request(&new_branch_for_test());
        let tx = server_tx(h, &invite);
        let r = invite.response(486, None, Some("a"));
        h.layer.send_response(h.now, tx, r).unwrap();
    }

    fn ist_rejected_acked(h: &mut Harness) {
        let invite = invite_request(&new_branch_for_test());
        let tx = server_tx(h, &invite);
        let r = invite.response(486, None, Some("a"));
        h.layer.send_response(h.now, tx, r).unwrap();
        h.layer.handle_request(h.now, h.peer, ack_for(&invite, "a"));
    }

    fn ist_accepted(h: &mut Harness) {
        let invite = invite_request(&new_branch_for_test());
        let tx = server_tx(h, &invite);
        let r = invite.response(200, None, Some("a"));
        h.layer.send_response(h.now, tx, r).unwrap();
    }

    fn nist_answered(h: &mut Harness) {
        let req = request(Method::Register, &new_branch_for_test());
        let tx = server_tx(h, &req);
        let r = req.response(200, None, Some("a"));
        h.layer.send_response(h.now, tx, r).unwrap();
    }

    const A_FIRES: &[f64] = &[0.5, 1.5, 3.5, 7.5, 15.5, 31.5];
    const E_G_FIRES: &[f64] = &[0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5];

    const TABLE: &[Row] = &[
        // Timer A: T1 doubling without cap; Timer B = 64·T1.
        Row {
            name: "A+B udp",
            transport: Transport::Udp,
            start: ict_silent,
            retransmits_at: A_FIRES,
            ends_at: 32.0,
            timeout: Some(Timer::B),
        },
        Row {
            name: "B tcp",
            transport: Transport::Tcp,
            start: ict_silent,
            retransmits_at: &[],
            ends_at: 32.0,
            timeout: Some(Timer::B),
        },
        // Timer D = max(32 s, 64·T1) on UDP, 0 on TCP.
        Row {
            name: "D udp",
            transport: Transport::Udp,
            start: ict_rejected,
            retransmits_at: &[],
            ends_at: 32.0,
            timeout: None,
        },
        Row {
            name: "D tcp",
            transport: Transport::Tcp,
            start: ict_rejected,
            retransmits_at: &[],
            ends_at: 0.0,
            timeout: None,
        },
        // Timer M = 64·T1 on both.
        Row {
            name: "M udp",
            transport: Transport::Udp,
            start: ict_accepted,
            retransmits_at: &[],
            ends_at: 32.0,
            timeout: None,
        },
        Row {
            name: "M tcp",
            transport: Transport::Tcp,
            start: ict_accepted,
            retransmits_at: &[],
            ends_at: 32.0,
            timeout: None,
        },
        // Timer E: T1 doubling capped at T2; Timer F = 64·T1.
        Row {
            name: "E+F udp",
            transport: Transport::Udp,
            start: nict_silent,
            retransmits_at: E_G_FIRES,
            ends_at: 32.0,
            timeout: Some(Timer::F),
        },
        Row {
            name: "F tcp",
            transport: Transport::Tcp,
            start: nict_silent,
            retransmits_at: &[],
            ends_at: 32.0,
            timeout: Some(Timer::F),
        },
        // Timer K = T4 on UDP, 0 on TCP.
        Row {
            name: "K udp",
            transport: Transport::Udp,
            start: nict_answered,
            retransmits_at: &[],
            ends_at: 5.0,
            timeout: None,
        },
        Row {
            name: "K tcp",
            transport: Transport::Tcp,
            start: nict_answered,
            retransmits_at: &[],
            ends_at: 0.0,
            timeout: None,
        },
        // Timer G: T1 doubling capped at T2; Timer H = 64·T1.
        Row {
            name: "G+H udp",
            transport: Transport::Udp,
            start: ist_rejected_no_ack,
            retransmits_at: E_G_FIRES,
            ends_at: 32.0,
            timeout: Some(Timer::H),
        },
        Row {
            name: "H tcp",
            transport: Transport::Tcp,
            start: ist_rejected_no_ack,
            retransmits_at: &[],
            ends_at: 32.0,
            timeout: Some(Timer::H),
        },
        // Timer I = T4 on UDP, 0 on TCP.
        Row {
            name: "I udp",
            transport: Transport::Udp,
            start: ist_rejected_acked,
            retransmits_at: &[],
            ends_at: 5.0,
            timeout: None,
        },
        Row {
            name: "I tcp",
            transport: Transport::Tcp,
            start: ist_rejected_acked,
            retransmits_at: &[],
            ends_at: 0.0,
            timeout: None,
        },
        // Timer L = 64·T1 on both.
        Row {
            name: "L udp",
            transport: Transport::Udp,
            start: ist_accepted,
            retransmits_at: &[],
            ends_at: 32.0,
            timeout: None,
        },
        Row {
            name: "L tcp",
            transport: Transport::Tcp,
            start: ist_accepted,
            retransmits_at: &[],
            ends_at: 32.0,
            timeout: None,
        },
        // Timer J = 64·T1 on UDP, 0 on TCP.
        Row {
            name: "J udp",
            transport: Transport::Udp,
            start: nist_answered,
            retransmits_at: &[],
            ends_at: 32.0,
            timeout: None,
        },
        Row {
            name: "J tcp",
            transport: Transport::Tcp,
            start: nist_answered,
            retransmits_at: &[],
            ends_at: 0.0,
            timeout: None,
        },
    ];

    #[test]
    fn timer_table_start_values_doubling_and_caps() {
        for row in TABLE {
            let mut h = match row.transport {
                Transport::Udp => Harness::udp(),
                Transport::Tcp => Harness::tcp(),
            };
            (row.start)(&mut h);
            h.transmits();
            let mut retransmits = Vec::new();
            let mut timeout = None;
            let mut ended = None;
            loop {
                for ev in h.events() {
                    match ev {
                        TxEvent::Timeout { timer, .. } => timeout = Some(timer),
                        TxEvent::Terminated { .. } => ended = Some(h.elapsed()),
                        _ => {}
                    }
                }
                if ended.is_some() {
                    break;
                }
                assert!(
                    h.advance_to_next(),
                    "{}: nothing armed before the end",
                    row.name
                );
                retransmits.extend(h.transmits().iter().map(|_| h.elapsed()));
            }
            assert_eq!(
                retransmits, row.retransmits_at,
                "{}: retransmissions",
                row.name
            );
            assert_eq!(ended, Some(row.ends_at), "{}: end", row.name);
            assert_eq!(timeout, row.timeout, "{}: timeout", row.name);
            assert_eq!(h.layer.len(), 0, "{}: len", row.name);
            assert_eq!(h.layer.poll_timeout(), None, "{}: deadlines left", row.name);
            assert_eq!(
                h.layer.stats().retransmissions_sent,
                row.retransmits_at.len() as u64,
                "{}: stats",
                row.name
            );
        }
    }

    #[test]
    fn timer_config_t1_scales_every_timer() {
        let cfg = TimerConfig {
            t1: std::time::Duration::from_millis(100),
            t2: std::time::Duration::from_millis(400),
            t4: std::time::Duration::from_secs(5),
        };
        let mut h = Harness::udp();
        h.layer = TxLayer::new(cfg);
        let req = request(Method::Options, &new_branch_for_test());
        h.layer.send_request(h.now, h.peer, req).unwrap();
        h.transmits();
        let mut fires = Vec::new();
        while h.advance_to_next() {
            if !h.transmits().is_empty() {
                fires.push((h.elapsed() * 1000.0).round() as u64);
            }
        }
        // E: 100, +200, +400 (T2), +400 ...; F = 64·T1 = 6.4 s.
        assert_eq!(&fires[..5], &[100, 300, 700, 1100, 1500]);
        assert_eq!((h.elapsed() * 1000.0).round() as u64, 6400);
        assert_eq!(h.layer.stats().timeouts_f, 1);
    }

    fn rfc2543_invite() -> Request {
        let mut invite = invite_request("unused");
        // An RFC 2543 peer: a top Via without the magic cookie.
        invite.common.via[0].params = vec![Param::new("branch", "1a2b3c")];
        invite
    }

    #[test]
    fn rfc2543_invite_retransmission_and_ack_matched_by_fields() {
        let mut h = Harness::udp();
        let invite = rfc2543_invite();
        assert!(!invite.common.via[0].has_rfc3261_branch());
        let tx = server_tx(&mut h, &invite);
        let trying = h.transmits();
        h.layer.handle_request(h.now, h.peer, invite.clone());
        assert_eq!(
            h.transmits(),
            trying,
            "retransmission answered with the 100"
        );
        assert!(h.events().is_empty());
        // Same fields but another CSeq number: a new transaction.
        let mut next = invite.clone();
        next.common.cseq.seq += 1;
        let tx2 = server_tx(&mut h, &next);
        assert_ne!(tx, tx2);
        h.layer
            .send_response(h.now, tx, invite.response(486, None, Some("t486")))
            .unwrap();
        h.transmits();
        // An ACK whose To tag is not the tag sent does not match: up to the TU.
        h.layer
            .handle_request(h.now, h.peer, ack_for(&invite, "other"));
        assert!(matches!(h.events()[..], [TxEvent::Ack { .. }]));
        // The ACK with the response's tag matches (CSeq method ACK, no branch check).
        let mut ack = ack_for(&invite, "t486");
        ack.common.via[0].params.clear();
        ack.common.via[0]
            .params
            .push(Param::new("branch", "1a2b3c"));
        h.layer.handle_request(h.now, h.peer, ack);
        assert!(h.events().is_empty(), "absorbed by the transaction");
        h.advance(std::time::Duration::from_secs(5));
        assert!(h.events().contains(&TxEvent::Terminated { tx }));
        assert_eq!(h.layer.kind(tx), None);
        assert_eq!(h.layer.count(TxKind::InviteServer), 1);
    }

    #[test]
    fn rfc2543_reinvite_with_to_tag_ack_matched() {
        let mut h = Harness::udp();
        let mut invite = rfc2543_invite();
        invite.common.to.set_tag("dialog");
        let tx = server_tx(&mut h, &invite);
        h.layer
            .send_response(h.now, tx, invite.response(488, None, None))
            .unwrap();
        h.layer
            .handle_request(h.now, h.peer, ack_for(&invite, "dialog"));
        assert!(h.events().is_empty());
        assert!(h.layer.poll_timeout() > Some(h.now + std::time::Duration::from_secs(4)));
        h.run_until_idle();
        assert_eq!(h.layer.len(), 0);
        assert_eq!(h.layer.stats().timeouts_h, 0, "Confirmed, not timed out");
    }

    #[test]
    fn server_match_17_2_3_branch_sent_by_and_method() {
        let mut h = Harness::udp();
        let branch = new_branch_for_test();
        let invite = invite_request(&branch);
        let tx = server_tx(&mut h, &invite);
        // Sent-by host compared case-insensitively: a retransmission.
        let mut upper = invite.clone();
        if let crate::wire::Host::Name(n) = &mut upper.common.via[0].sent_by.host {
            *n = n.to_ascii_uppercase();
        }
        h.layer.handle_request(h.now, h.peer, upper);
        assert!(h.events().is_empty());
        // Same branch, another sent-by: another transaction.
        let mut other = invite.clone();
        other.common.via[0].sent_by.port = Some(5070);
        let tx2 = server_tx(&mut h, &other);
        assert_ne!(tx, tx2);
        // Same branch and sent-by, another method: another transaction.
        let mut opt = invite.clone();
        opt.method = Method::Options;
        opt.common.cseq.method = Method::Options;
        let tx3 = server_tx(&mut h, &opt);
        assert_ne!(tx, tx3);
        assert_eq!(h.layer.count(TxKind::InviteServer), 2);
        assert_eq!(h.layer.count(TxKind::NonInviteServer), 1);
    }

    #[test]
    fn cancel_matched_to_invite_server_transaction_9_2() {
        let mut h = Harness::udp();
        let invite = invite_request(&new_branch_for_test());
        let inv_tx = server_tx(&mut h, &invite);
        h.transmits();
        let cancel = cancel_for(&invite);
        h.layer.handle_request(h.now, h.peer, cancel.clone());
        let ctx = match &h.events()[..] {
            [TxEvent::Cancel { tx, target, .. }] => {
                assert_eq!(*target, Some(inv_tx));
                *tx
            }
            other => panic!("expected Cancel, got {other:?}"),
        };
        assert_ne!(ctx, inv_tx);
        assert!(
            h.transmits().is_empty(),
            "the layer does not answer a CANCEL"
        );
        assert_eq!(h.layer.kind(ctx), Some(TxKind::NonInviteServer));
        // A retransmitted CANCEL is the CANCEL's own transaction's retransmission.
        h.layer.handle_request(h.now, h.peer, cancel.clone());
        assert!(h.events().is_empty());
        // The TU: 200 to the CANCEL, 487 to the INVITE; the ACK closes it.
        h.layer
            .send_response(h.now, ctx, cancel.response(200, None, Some("uas")))
            .unwrap();
        h.layer
            .send_response(h.now, inv_tx, invite.response(487, None, Some("uas")))
            .unwrap();
        h.layer
            .handle_request(h.now, h.peer, ack_for(&invite, "uas"));
        h.run_until_idle();
        assert_eq!(h.layer.len(), 0);
    }

    #[test]
    fn cancel_without_invite_has_no_target() {
        let mut h = Harness::udp();
        let invite = invite_request(&new_branch_for_test());
        h.layer.handle_request(h.now, h.peer, cancel_for(&invite));
        assert!(matches!(
            h.events()[..],
            [TxEvent::Cancel { target: None, .. }]
        ));
        // An RFC 2543 CANCEL matched by fields.
        let old = rfc2543_invite();
        let inv_tx = server_tx(&mut h, &old);
        h.layer.handle_request(h.now, h.peer, cancel_for(&old));
        assert!(matches!(
            h.events()[..],
            [TxEvent::Cancel { target: Some(t), .. }] if t == inv_tx
        ));
    }

    #[test]
    fn client_match_17_1_3_branch_and_cseq_method() {
        let mut h = Harness::udp();
        let branch = new_branch_for_test();
        let invite = invite_request(&branch);
        let inv = h.layer.send_request(h.now, h.peer, invite.clone()).unwrap();
        // The CANCEL shares the INVITE's branch (§9.1) but is its own transaction.
        let cancel = cancel_for(&invite);
        let can = h.layer.send_request(h.now, h.peer, cancel.clone()).unwrap();
        assert_ne!(inv, can);
        h.transmits();
        h.layer
            .handle_response(h.now, h.peer, cancel.response(200, None, Some("b")));
        assert!(matches!(
            h.events()[..],
            [TxEvent::Response { tx, .. }] if tx == can
        ));
        h.layer
            .handle_response(h.now, h.peer, invite.response(487, None, Some("b")));
        assert!(matches!(
            h.events()[..],
            [TxEvent::Response { tx, .. }] if tx == inv
        ));
        // An unknown branch: stray.
        let stray = invite_request(&new_branch_for_test()).response(200, None, Some("x"));
        h.layer.handle_response(h.now, h.peer, stray.clone());
        assert_eq!(
            h.events(),
            vec![TxEvent::StrayResponse {
                from: h.peer,
                response: stray
            }]
        );
        assert_eq!(h.layer.stats().stray_responses, 1);
        h.run_until_idle();
        assert_eq!(h.layer.len(), 0);
    }

    #[test]
    fn ack_for_2xx_with_new_branch_goes_to_tu() {
        let mut h = Harness::udp();
        let invite = invite_request(&new_branch_for_test());
        let tx = server_tx(&mut h, &invite);
        h.layer
            .send_response(h.now, tx, invite.response(200, None, Some("uas")))
            .unwrap();
        let mut ack = ack_for(&invite, "uas");
        ack.common.via[0].set_param("branch", Some(new_branch_for_test()));
        h.layer.handle_request(h.now, h.peer, ack.clone());
        assert_eq!(
            h.events(),
            vec![TxEvent::Ack {
                from: h.peer,
                request: ack
            }]
        );
    }

    #[test]
    fn send_request_refuses_ack_missing_branch_and_duplicates() {
        let mut h = Harness::udp();
        let branch = new_branch_for_test();
        let ack = request(Method::Ack, &branch);
        assert_eq!(
            h.layer.send_request(h.now, h.peer, ack),
            Err(TxError::AckIsNotATransaction)
        );
        let old = request(Method::Options, "1234");
        assert_eq!(
            h.layer.send_request(h.now, h.peer, old),
            Err(TxError::MissingBranch)
        );
        let mut no_via = request(Method::Options, &branch);
        no_via.common.via.clear();
        assert_eq!(
            h.layer.send_request(h.now, h.peer, no_via),
            Err(TxError::MissingBranch)
        );
        let opt = request(Method::Options, &branch);
        let tx = h.layer.send_request(h.now, h.peer, opt.clone()).unwrap();
        assert_eq!(
            h.layer.send_request(h.now, h.peer, opt),
            Err(TxError::DuplicateTransaction)
        );
        assert_eq!(
            h.layer.send_response(
                h.now,
                tx,
                request(Method::Options, &branch).response(200, None, None)
            ),
            Err(TxError::NotServerTransaction)
        );
        assert_eq!(h.layer.peer(tx), Some(h.peer));
        assert_eq!(h.layer.len(), 1);
    }

    #[test]
    fn request_without_via_is_dropped() {
        let mut h = Harness::udp();
        let mut req = request(Method::Options, "x");
        req.common.via.clear();
        h.layer.handle_request(h.now, h.peer, req);
        assert!(h.events().is_empty());
        assert!(h.transmits().is_empty());
        assert!(h.layer.is_empty());
        assert_eq!(h.layer.stats().dropped_requests, 1);
    }

    #[test]
    fn send_stateless_queues_bytes_without_transaction() {
        let mut h = Harness::udp();
        let ack = request(Method::Ack, &new_branch_for_test());
        let msg = Message::Request(ack);
        h.layer.send_stateless(h.peer, &msg);
        let out = h.transmits();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].tx, None);
        assert_eq!(out[0].bytes, msg.to_bytes());
        assert!(h.layer.is_empty());
        assert_eq!(h.layer.poll_timeout(), None);
    }

    #[test]
    fn stale_deadline_entries_are_skipped() {
        let mut h = Harness::udp();
        let invite = invite_request(&new_branch_for_test());
        let tx = h.layer.send_request(h.now, h.peer, invite.clone()).unwrap();
        h.transmits();
        // Terminated by transport error before A fires: its deadlines go with it.
        h.layer.handle_transport_error(h.now, tx);
        assert_eq!(h.layer.poll_timeout(), None);
        h.advance(std::time::Duration::from_secs(40));
        assert!(h.transmits().is_empty());
        assert_eq!(h.layer.stats().timeouts_b, 0);
        // A transport error for a gone transaction is ignored.
        h.layer.handle_transport_error(h.now, tx);
        assert_eq!(h.layer.stats().transport_errors, 1);
    }

    #[test]
    fn b2bua_call_both_sides_transaction_count_back_to_zero() {
        // A calls the switch (server side), the switch calls B (client side), B answers
        // 200, the switch relays it; A's ACK and the switch's ACK to B are the dialogs'.
        let mut h = Harness::udp();
        let b = tcp_peer();
        let a_invite = invite_request(&new_branch_for_test());
        let a_tx = server_tx(&mut h, &a_invite);
        let b_invite = invite_request(&new_branch_for_test());
        let b_tx = h.layer.send_request(h.now, b, b_invite.clone()).unwrap();
        assert_eq!(h.layer.count(TxKind::InviteClient), 1);
        assert_eq!(h.layer.count(TxKind::InviteServer), 1);
        h.layer
            .handle_response(h.now, b, b_invite.response(180, None, Some("b")));
        h.layer
            .send_response(h.now, a_tx, a_invite.response(180, None, Some("sw")))
            .unwrap();
        h.layer
            .handle_response(h.now, b, b_invite.response(200, None, Some("b")));
        h.layer
            .send_response(h.now, a_tx, a_invite.response(200, None, Some("sw")))
            .unwrap();
        let ack_b = request(Method::Ack, &new_branch_for_test());
        h.layer.send_stateless(b, &Message::Request(ack_b));
        let ev = h.events();
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, TxEvent::Response { tx, .. } if *tx == b_tx))
                .count(),
            2
        );
        let mut ack_a = ack_for(&a_invite, "sw");
        ack_a.common.via[0].set_param("branch", Some(new_branch_for_test()));
        h.layer.handle_request(h.now, h.peer, ack_a);
        assert!(matches!(h.events()[..], [TxEvent::Ack { .. }]));
        h.run_until_idle();
        assert_eq!(h.layer.len(), 0);
        assert!(h.layer.is_empty());
        assert_eq!(h.layer.stats().terminated, 2);
        assert_eq!(h.layer.stats().created(TxKind::InviteClient), 1);
        assert_eq!(h.layer.stats().created(TxKind::InviteServer), 1);
    }

    #[test]
    fn layer_is_deterministic_for_identical_inputs() {
        fn run() -> (Vec<Transmit>, Vec<TxEvent>) {
            let mut h = Harness::udp();
            let invite = invite_request("z9hG4bKfixedbranch");
            h.layer.send_request(h.now, h.peer, invite.clone()).unwrap();
            let mut tr = h.transmits();
            let mut ev = Vec::new();
            h.advance_to_next();
            h.layer
                .handle_response(h.now, h.peer, invite.response(404, None, Some("b")));
            h.layer
                .handle_response(h.now, h.peer, invite.response(404, None, Some("b")));
            while h.advance_to_next() {}
            tr.extend(h.transmits());
            ev.extend(h.events());
            (tr, ev)
        }
        assert_eq!(run(), run());
    }

    /// A sustained call rate leaves about 100 transaction-seconds per call lingering
    /// (RFC 6026 Accepted, Timer J/K): at the table's capacity those yield their slots,
    /// oldest first, and only working transactions can make a new one wait.
    #[test]
    fn lingering_transactions_yield_their_slots_at_capacity() {
        let mut h = Harness::udp();
        h.layer.set_capacity(3);
        // Three answered requests: each NIST lingers for Timer J (64·T1 over UDP).
        let mut answered = Vec::new();
        for _ in 0..3 {
            let req = request(Method::Bye, &new_branch_for_test());
            let tx = server_tx(&mut h, &req);
            h.layer
                .send_response(h.now, tx, req.response(200, None, Some("a")))
                .unwrap();
            answered.push((tx, req));
        }
        h.transmits();
        assert_eq!(
            (h.layer.len(), h.layer.lingering(), h.layer.working()),
            (3, 3, 0)
        );
        assert!(h.layer.has_room(), "lingering transactions do not count");
        // A fourth retires the oldest, which says so to the TU like any termination.
        let invite = invite_request(&new_branch_for_test());
        let working = server_tx(&mut h, &invite);
        h.transmits();
        assert_eq!(h.layer.len(), 3);
        assert_eq!(h.layer.stats().retired, 1);
        assert_eq!(h.layer.kind(answered[0].0), None, "the oldest went");
        assert!(h.layer.kind(answered[1].0).is_some());
        // The retired one's retransmission is a new request now; the others still
        // absorb theirs with the same answer.
        h.layer.handle_request(h.now, h.peer, answered[2].1.clone());
        assert_eq!(h.transmits().len(), 1, "the 200 again");
        assert!(h.events().is_empty());
        // Working transactions fill the table: no room, whatever lingers.
        let mut ringing = vec![working];
        for _ in 0..2 {
            ringing.push(server_tx(&mut h, &invite_request(&new_branch_for_test())));
        }
        assert_eq!((h.layer.working(), h.layer.lingering()), (3, 0));
        assert!(!h.layer.has_room());
        // Answered, the INVITEs linger (Accepted) and make room again; Timer L ends them.
        for tx in ringing {
            let r = invite.response(200, None, Some("a"));
            h.layer.send_response(h.now, tx, r).unwrap();
        }
        assert!(h.layer.has_room());
        assert_eq!(h.layer.lingering(), 3);
        h.run_until_idle();
        assert_eq!((h.layer.len(), h.layer.lingering()), (0, 0));
        assert_eq!(h.layer.stats().retired, 3);
    }

    /// Every state a call leaves a transaction in counts as lingering, and none before.
    #[test]
    fn the_states_that_linger() {
        let mut h = Harness::udp();
        let invite = invite_request(&new_branch_for_test());
        h.layer.send_request(h.now, h.peer, invite.clone()).unwrap();
        let bye = request(Method::Bye, &new_branch_for_test());
        h.layer.send_request(h.now, h.peer, bye.clone()).unwrap();
        let from_a = invite_request(&new_branch_for_test());
        let ist = server_tx(&mut h, &from_a);
        assert_eq!(h.layer.lingering(), 0);
        h.layer
            .handle_response(h.now, h.peer, invite.response(180, None, Some("b")));
        assert_eq!(h.layer.lingering(), 0, "ICT Proceeding works");
        h.layer
            .handle_response(h.now, h.peer, invite.response(200, None, Some("b")));
        assert_eq!(h.layer.lingering(), 1, "ICT Accepted (Timer M)");
        h.layer
            .handle_response(h.now, h.peer, bye.response(200, None, Some("b")));
        assert_eq!(h.layer.lingering(), 2, "NICT Completed (Timer K)");
        h.layer
            .send_response(h.now, ist, from_a.response(486, None, Some("a")))
            .unwrap();
        assert_eq!(
            h.layer.lingering(),
            2,
            "IST Completed retransmits until the ACK"
        );
        h.layer.handle_request(h.now, h.peer, ack_for(&from_a, "a"));
        assert_eq!(h.layer.lingering(), 3, "IST Confirmed (Timer I)");
        h.run_until_idle();
        assert_eq!((h.layer.len(), h.layer.lingering()), (0, 0));
    }
}
