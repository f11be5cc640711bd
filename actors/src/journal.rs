//! The registrar's embedded durable store: an append-only, checksummed key → value journal.
//!
//! The registrar actors persist each AOR's binding set here so that a restart, including
//! `kill -9` at any instant, brings back every binding whose REGISTER got its 200 OK. The
//! journal knows nothing about SIP: keys are strings (≤ 65,535 bytes), values are opaque
//! bytes. [`Journal::open`] recovers the last value of every key; [`Journal::put`] and
//! [`Journal::delete`] return an [`Ack`] that resolves once the record is on disk.
//!
//! # Threads and queues
//!
//! One writer thread (named `journal`) owns the file. Every [`Journal`] handle is a sender
//! on one FIFO channel to it. The writer takes everything queued (up to
//! [`JournalConfig::max_batch`] records, and about 8 MiB), writes the batch with one
//! `write`, calls `fdatasync` once when [`JournalConfig::sync`] is on, then resolves every
//! [`Ack`] of the batch (group commit). The channel is unbounded on purpose: every producer
//! awaits its `Ack` before answering its peer, so the records in flight are bounded by the
//! number of callers (the registrar's own admission bounds those), and a bounded channel
//! would only add a second place to block.
//!
//! # File format (version 01)
//!
//! ```text
//! file    = magic record*
//! magic   = "SSJRNL01"                                  (8 bytes)
//! record  = len:u32le crc:u32le payload                 (len = payload length ≤ 16 MiB)
//! payload = kind:u8 key_len:u16le key value             (kind 1 = put, 2 = delete;
//!                                                       a delete has no value bytes)
//! ```
//!
//! `crc` is the CRC-32 (IEEE, as zlib) of `payload`. The key is UTF-8.
//!
//! # Invariants
//!
//! 1. An `Ack` resolves `Ok` only after its record was written (and `fdatasync`ed when
//!    `sync` is on). `Err` means "not stored": the writer truncates the file back to the
//!    last good batch. (After a crash between a failed write and that truncation such a
//!    record can reappear; callers must treat `Err` as "unknown, retry", which is what an
//!    idempotent REGISTER refresh needs anyway.)
//! 2. Records of one key are applied in the order `put`/`delete` were called: one FIFO
//!    channel, one writer, batches written in order.
//! 3. The file is always `magic` followed by whole, checksummed records. Recovery stops at
//!    the first record that is short, fails its CRC, has an impossible length or payload,
//!    and truncates the file there (that torn tail is reported in
//!    [`Recovered::torn_bytes`]), so no append ever lands after garbage. A tail that is
//!    not merely short (a bad CRC or length: corruption rather than a torn write) is also
//!    copied to `<path>.torn` before the truncation, for forensics. A file whose magic is
//!    not ours is refused: the journal never rewrites a file it did not write.
//! 4. Compaction writes the live set to `<path>.compact`, `fsync`s it, renames it over
//!    `<path>` and `fsync`s the directory: at every instant one of the two names holds a
//!    complete journal, so a crash during compaction loses nothing acked. A stale
//!    `<path>.compact` at open is an unfinished compaction and is removed. Compaction always
//!    syncs, even with `sync` off. Records queued during a compaction wait in the channel.
//! 5. Steady-state memory is small per key: the writer keeps only a map from a keyed 64-bit
//!    hash of each live key to its record size (about 20–40 bytes per key), used for the
//!    live-byte count that triggers compaction. A hash collision can only skew that count;
//!    compaction itself re-reads the file with exact keys (temporary memory: the live keys
//!    and their offsets).
//! 6. Dropping the last `Journal` handle drains the queue, syncs, and joins the writer, so
//!    once the drop returns the file is closed and may be reopened.
//!
//! 7. One process at a time: [`Journal::open`] first takes an exclusive advisory lock
//!    ([`crate::lock`]) on `<path>.lock`, held by the writer for as long as it runs; a
//!    second opener (another switch on the same journal) gets an error naming that file.
//!    The lock is on a file of its own because compaction renames a new file over
//!    `<path>`: a lock on the journal's own file would stay on the unlinked old one.
//!
//! Unix only: it uses positioned writes and `fsync` on the directory.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

/// The first eight bytes of every journal file: format name and version.
pub const MAGIC: &[u8; 8] = b"SSJRNL01";
/// The largest payload (kind + key length + key + value) a record may hold.
pub const MAX_PAYLOAD: usize = 16 << 20;
/// The longest key: its length is stored as a `u16`.
pub const MAX_KEY: usize = u16::MAX as usize;

const HEADER_LEN: u64 = MAGIC.len() as u64;
const RECORD_HEAD: usize = 8;
const PAYLOAD_HEAD: usize = 3;
const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;
/// A batch stops taking records once its encoded size reaches this.
const MAX_BATCH_BYTES: usize = 8 << 20;

/// How to open a journal.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// The journal file. Its parent directories are created. `<path>.compact` and
    /// `<path>.torn` are used beside it.
    pub path: PathBuf,
    /// `fdatasync` after every batch before resolving its acks (default `true`). With
    /// `false`, an `Ack` means "written to the OS": it survives `kill -9`, not power loss;
    /// [`Journal::flush`] still syncs.
    pub sync: bool,
    /// The file is compacted while running only once it exceeds this (default 16 MiB).
    pub compact_min_bytes: u64,
    /// … and exceeds this many times the live bytes (default 4; 0 or 1 means "whenever
    /// anything can be dropped").
    pub compact_ratio: u64,
    /// The most records one batch (one write, one sync) takes (default 1024).
    pub max_batch: usize,
}

impl JournalConfig {
    /// The defaults for a journal at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JournalConfig {
            path: path.into(),
            sync: true,
            compact_min_bytes: 16 << 20,
            compact_ratio: 4,
            max_batch: 1024,
        }
    }
}

/// What [`Journal::open`] found on disk.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The last value of every key that was not deleted afterwards, in key order.
    pub entries: Vec<(String, Vec<u8>)>,
    /// Whole, valid records read (before the start-up compaction).
    pub records_read: u64,
    /// Bytes cut off a torn or corrupt tail (0 for a clean file).
    pub torn_bytes: u64,
    /// Why recovery stopped before the end of the file, if it did.
    pub tail: Tail,
    /// Whether the start-up compaction rewrote the file.
    pub compacted: bool,
}

/// How the recovered file ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tail {
    /// At a record boundary: nothing was cut.
    #[default]
    Clean,
    /// A record (or its 8-byte head) runs past the end of the file: a torn write.
    Short {
        /// Offset of the record that was cut.
        at: u64,
    },
    /// A record's length is impossible (> [`MAX_PAYLOAD`] or shorter than its own head).
    BadLength {
        /// Offset of the bad record.
        at: u64,
    },
    /// A record fails its CRC.
    BadCrc {
        /// Offset of the bad record.
        at: u64,
    },
    /// A record passes its CRC but its payload is malformed (kind, key length, UTF-8).
    BadPayload {
        /// Offset of the bad record.
        at: u64,
    },
}

/// Why a record was not stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalError {
    /// Writing or syncing failed; the batch was rolled back.
    Io {
        /// The error's kind.
        kind: io::ErrorKind,
        /// The error's text.
        message: String,
    },
    /// The key or the value is larger than the format allows; nothing was queued.
    TooLarge,
    /// The writer thread is gone (it panicked, or is shutting down).
    Closed,
}

impl JournalError {
    fn io(e: &io::Error) -> Self {
        JournalError::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Io { message, .. } => write!(f, "journal I/O error: {message}"),
            JournalError::TooLarge => write!(
                f,
                "journal record too large (key ≤ {MAX_KEY} bytes, record ≤ {MAX_PAYLOAD} bytes)"
            ),
            JournalError::Closed => write!(f, "journal writer is gone"),
        }
    }
}

impl std::error::Error for JournalError {}

/// A snapshot of the journal's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Length of the journal file after the last batch or compaction; never more than
    /// the file's length at any moment (a compaction publishes its shorter length
    /// before it renames the new file in).
    pub bytes_on_disk: u64,
    /// Keys with a live value.
    pub live_keys: u64,
    /// Bytes the live keys' records take (what a compaction would keep, less the magic).
    pub live_bytes: u64,
    /// Batches written (each one write and at most one sync).
    pub batches: u64,
    /// Records (puts and deletes) written successfully.
    pub records: u64,
    /// Compactions done, at open and while running.
    pub compactions: u64,
    /// Batches and compactions that failed.
    pub errors: u64,
    /// The text of the last failure, if any.
    pub last_error: Option<String>,
}

/// Resolves when a record is durable (see the module's invariant 1). Dropping it is fine:
/// the record is still written.
#[must_use = "an Ack tells whether the record is durable"]
pub struct Ack(oneshot::Receiver<Result<(), JournalError>>);

impl Ack {
    fn ready(result: Result<(), JournalError>) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(result);
        Ack(rx)
    }

    /// Blocks the current thread until the record is durable. For non-async callers
    /// (tools, tests); it panics if called from inside an async runtime.
    pub fn wait(self) -> Result<(), JournalError> {
        self.0.blocking_recv().unwrap_or(Err(JournalError::Closed))
    }
}

impl Future for Ack {
    type Output = Result<(), JournalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(JournalError::Closed)))
    }
}

type AckTx = oneshot::Sender<Result<(), JournalError>>;

enum Cmd {
    Put {
        key: String,
        value: Vec<u8>,
        ack: AckTx,
    },
    Delete {
        key: String,
        ack: AckTx,
    },
    Flush {
        ack: AckTx,
    },
    Compact {
        ack: AckTx,
    },
}

/// A handle on the journal: cheap to clone, `Send + Sync`. The writer stops when the last
/// handle is dropped (invariant 6).
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Option<mpsc::Sender<Cmd>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Default)]
struct Shared {
    bytes_on_disk: AtomicU64,
    live_keys: AtomicU64,
    live_bytes: AtomicU64,
    batches: AtomicU64,
    records: AtomicU64,
    compactions: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, what: &str, e: &io::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let text = format!("{what}: {e}");
        tracing::error!(error = %text, "journal");
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(text);
        }
    }
}

impl Journal {
    /// Opens (or creates) the journal at `config.path`: creates the parent directories,
    /// recovers every live key, truncates a torn tail, compacts when anything can be
    /// dropped, and starts the writer thread.
    ///
    /// Fails on a file that does not start with [`MAGIC`], and on any I/O error.
    pub fn open(config: JournalConfig) -> io::Result<(Journal, Recovered)> {
        if config.max_batch == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "journal max_batch must be at least 1",
            ));
        }
        let path = config.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        // Invariant 7: first of all, before anything is read, removed or renamed.
        let lock_path = side_path(&path, "lock");
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)?;
        crate::lock::exclusive(&lock)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", lock_path.display())))?;
        match fs::remove_file(side_path(&path, "compact")) {
            Ok(()) => tracing::warn!(path = %path.display(), "removed an unfinished compaction"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (file, dir_synced) = write_file_atomically(&path, |_| Ok(()))?;
                dir_synced?;
                file
            }
            Err(e) => return Err(e),
        };
        check_magic(&mut file, &path)?;

        let mut recovered = Recovered::default();
        let mut live: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let file_len = file.metadata()?.len();
        file.seek(SeekFrom::Start(HEADER_LEN))?;
        let mut reader = RecordReader::new(BufReader::new(&file), HEADER_LEN);
        loop {
            match reader.next()? {
                Step::Record(kind) => {
                    recovered.records_read += 1;
                    let key = reader.key().to_owned();
                    if kind == KIND_PUT {
                        live.insert(key, reader.value().to_vec());
                    } else {
                        live.remove(&key);
                    }
                }
                Step::End => break,
                Step::Bad(tail) => {
                    recovered.tail = tail;
                    break;
                }
            }
        }
        let good_len = reader.offset;
        drop(reader);
        if good_len < file_len {
            recovered.torn_bytes = file_len - good_len;
            tracing::warn!(
                path = %path.display(),
                tail = ?recovered.tail,
                torn_bytes = recovered.torn_bytes,
                "journal tail cut"
            );
            if !matches!(recovered.tail, Tail::Short { .. }) {
                save_tail(&file, &path, good_len, file_len)?;
            }
            file.set_len(good_len)?;
            file.sync_all()?;
        }

        let live_bytes: u64 = live.iter().map(|(k, v)| record_len(k.len(), v.len())).sum();
        let shared = Arc::new(Shared::default());
        let mut file_len = good_len;
        if good_len > HEADER_LEN + live_bytes {
            let (compacted, dir_synced) = write_file_atomically(&path, |w| {
                let mut buf = Vec::new();
                for (key, value) in &live {
                    buf.clear();
                    encode(&mut buf, KIND_PUT, key.as_bytes(), value);
                    w.write_all(&buf)?;
                }
                Ok(())
            })?;
            file = compacted;
            dir_synced?;
            file_len = HEADER_LEN + live_bytes;
            recovered.compacted = true;
            shared.compactions.fetch_add(1, Ordering::Relaxed);
        }

        let hasher = RandomState::new();
        let mut index = Index::default();
        index.reserve(live.len());
        for (key, value) in &live {
            index.insert(
                hasher.hash_one(key.as_str()),
                record_len(key.len(), value.len()) as u32,
            );
        }
        recovered.entries = live.into_iter().collect();

        let writer = Writer {
            config,
            _lock: lock,
            file,
            good_len: file_len,
            dirty: false,
            unsynced: false,
            hasher,
            index,
            live_bytes,
            compact_retry_at: 0,
            shared: Arc::clone(&shared),
        };
        writer.publish();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || writer.run(rx))?;
        let journal = Journal {
            inner: Arc::new(Inner {
                tx: Some(tx),
                thread: Some(thread),
                shared,
            }),
        };
        Ok((journal, recovered))
    }

    /// Queues `key` → `value`; the `Ack` resolves when it is durable.
    pub fn put(&self, key: String, value: Vec<u8>) -> Ack {
        if key.len() > MAX_KEY || PAYLOAD_HEAD + key.len() + value.len() > MAX_PAYLOAD {
            return Ack::ready(Err(JournalError::TooLarge));
        }
        self.send(|ack| Cmd::Put { key, value, ack })
    }

    /// Queues the deletion of `key`; the `Ack` resolves when it is durable.
    pub fn delete(&self, key: String) -> Ack {
        if key.len() > MAX_KEY {
            return Ack::ready(Err(JournalError::TooLarge));
        }
        self.send(|ack| Cmd::Delete { key, ack })
    }

    /// Resolves when everything queued before it is durable (it syncs even when
    /// [`JournalConfig::sync`] is off).
    pub fn flush(&self) -> Ack {
        self.send(|ack| Cmd::Flush { ack })
    }

    /// Compacts now (if anything can be dropped), after everything queued before it; for
    /// operators and tests. Records queued meanwhile wait.
    pub fn compact(&self) -> Ack {
        self.send(|ack| Cmd::Compact { ack })
    }

    /// The current counters.
    pub fn stats(&self) -> JournalStats {
        let s = &self.inner.shared;
        JournalStats {
            bytes_on_disk: s.bytes_on_disk.load(Ordering::Relaxed),
            live_keys: s.live_keys.load(Ordering::Relaxed),
            live_bytes: s.live_bytes.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            records: s.records.load(Ordering::Relaxed),
            compactions: s.compactions.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            last_error: s.last_error.lock().ok().and_then(|l| l.clone()),
        }
    }

    fn send(&self, cmd: impl FnOnce(AckTx) -> Cmd) -> Ack {
        let (tx, rx) = oneshot::channel();
        match &self.inner.tx {
            Some(sender) => match sender.send(cmd(tx)) {
                Ok(()) => Ack(rx),
                Err(_) => Ack::ready(Err(JournalError::Closed)),
            },
            None => Ack::ready(Err(JournalError::Closed)),
        }
    }
}

/// Live-key hash → record size. The hash is already keyed (RandomState), so the map does
/// not hash it again.
type Index = HashMap<u64, u32, BuildHasherDefault<IdentityHasher>>;

#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The writer thread's state: the file, the end of its last good batch, the live index.
struct Writer {
    config: JournalConfig,
    /// `<path>.lock`, locked (invariant 7): held for as long as the writer runs.
    _lock: File,
    file: File,
    /// Everything before this offset is whole records that were acked.
    good_len: u64,
    /// A failed batch may have left bytes after `good_len`.
    dirty: bool,
    /// Bytes were written since the last sync.
    unsynced: bool,
    hasher: RandomState,
    index: Index,
    live_bytes: u64,
    /// After a failed compaction, do not retry before the file reaches this length.
    compact_retry_at: u64,
    shared: Arc<Shared>,
}

/// What a batch will change in the index once it is written.
enum Change {
    Put(u64, u32),
    Delete(u64),
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        let mut buf: Vec<u8> = Vec::new();
        let mut changes: Vec<Change> = Vec::new();
        let mut acks: Vec<AckTx> = Vec::new();
        let mut compact_acks: Vec<AckTx> = Vec::new();
        while let Ok(first) = rx.recv() {
            // Take what is queued, encoding as we go so the byte cap sees the batch.
            let mut next = Some(first);
            let mut taken = 0;
            let mut flush = false;
            while let Some(cmd) = next.take() {
                taken += 1;
                match cmd {
                    Cmd::Put { key, value, ack } => {
                        let len = encode(&mut buf, KIND_PUT, key.as_bytes(), &value);
                        changes.push(Change::Put(self.hasher.hash_one(key.as_str()), len));
                        acks.push(ack);
                    }
                    Cmd::Delete { key, ack } => {
                        encode(&mut buf, KIND_DELETE, key.as_bytes(), &[]);
                        changes.push(Change::Delete(self.hasher.hash_one(key.as_str())));
                        acks.push(ack);
                    }
                    Cmd::Flush { ack } => {
                        flush = true;
                        acks.push(ack);
                    }
                    Cmd::Compact { ack } => compact_acks.push(ack),
                }
                if taken < self.config.max_batch && buf.len() < MAX_BATCH_BYTES {
                    next = rx.try_recv().ok();
                }
            }
            let result = self.commit(&buf, flush);
            let records = changes.len() as u64;
            if result.is_ok() {
                for change in changes.drain(..) {
                    self.apply(change);
                }
                self.shared.records.fetch_add(records, Ordering::Relaxed);
            }
            changes.clear();
            buf.clear();
            if buf.capacity() > MAX_BATCH_BYTES * 2 {
                buf.shrink_to(MAX_BATCH_BYTES);
            }
            self.shared.batches.fetch_add(1, Ordering::Relaxed);
            self.publish();
            for ack in acks.drain(..) {
                let _ = ack.send(result.clone());
            }
            if !compact_acks.is_empty() || self.wants_compaction() {
                let result = self.compact();
                for ack in compact_acks.drain(..) {
                    let _ = ack.send(result.clone());
                }
            }
        }
        if self.unsynced {
            if let Err(e) = self.file.sync_data() {
                self.shared.fail("journal final sync", &e);
            }
        }
    }

    /// Writes one batch at `good_len` and syncs it; rolls back on failure.
    fn commit(&mut self, buf: &[u8], flush: bool) -> Result<(), JournalError> {
        let sync = self.config.sync || (flush && (self.unsynced || !buf.is_empty()));
        if buf.is_empty() && !sync && !self.dirty {
            return Ok(());
        }
        let attempt = (|| -> io::Result<()> {
            if self.dirty {
                self.file.set_len(self.good_len)?;
                self.dirty = false;
            }
            if !buf.is_empty() {
                self.dirty = true;
                self.file.write_all_at(buf, self.good_len)?;
                self.unsynced = true;
            }
            if sync && self.unsynced {
                self.file.sync_data()?;
                self.unsynced = false;
            }
            Ok(())
        })();
        match attempt {
            Ok(()) => {
                self.good_len += buf.len() as u64;
                self.dirty = false;
                Ok(())
            }
            Err(e) => {
                self.shared.fail("journal write", &e);
                if self.dirty && self.file.set_len(self.good_len).is_ok() {
                    self.dirty = false;
                }
                Err(JournalError::io(&e))
            }
        }
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Put(hash, len) => {
                let old = self.index.insert(hash, len).unwrap_or(0);
                self.live_bytes = self.live_bytes + u64::from(len) - u64::from(old);
            }
            Change::Delete(hash) => {
                if let Some(old) = self.index.remove(&hash) {
                    self.live_bytes -= u64::from(old);
                }
            }
        }
    }

    fn publish(&self) {
        let s = &self.shared;
        s.bytes_on_disk.store(self.good_len, Ordering::Relaxed);
        s.live_keys
            .store(self.index.len() as u64, Ordering::Relaxed);
        s.live_bytes.store(self.live_bytes, Ordering::Relaxed);
    }

    fn wants_compaction(&self) -> bool {
        let c = &self.config;
        self.good_len > c.compact_min_bytes
            && self.good_len > c.compact_ratio.saturating_mul(HEADER_LEN + self.live_bytes)
            && self.good_len >= self.compact_retry_at
    }

    /// Rewrites the live records of the file, in file order, and switches to the new file.
    fn compact(&mut self) -> Result<(), JournalError> {
        // A failed batch's bytes may still be after good_len: compaction reads only up to
        // good_len, and a new file starts clean (compact_inner clears `dirty`).
        match self.compact_inner() {
            Ok(false) => {
                self.shared.compactions.fetch_add(1, Ordering::Relaxed);
                self.compact_retry_at = 0;
                if self.index.capacity() > 2 * self.index.len() + 1024 {
                    self.index.shrink_to_fit();
                }
                self.publish();
                Ok(())
            }
            Ok(true) => {
                // Nothing to drop: the live count was off (a hash collision) or the ratio
                // is ≤ 1. Do not re-read the file after every batch.
                self.compact_retry_at = self.backoff();
                Ok(())
            }
            Err(e) => {
                self.shared.fail("journal compaction", &e);
                self.compact_retry_at = self.backoff();
                self.publish();
                Err(JournalError::io(&e))
            }
        }
    }

    fn backoff(&self) -> u64 {
        self.good_len
            .saturating_add(self.config.compact_min_bytes.max(4096))
    }

    /// Returns whether there was nothing to drop.
    fn compact_inner(&mut self) -> io::Result<bool> {
        let end = self.good_len;
        // Pass 1: the offset and size of the last put of every live key.
        let mut last: HashMap<String, (u64, u64)> = HashMap::new();
        let mut reader = self.reader_to(end)?;
        loop {
            match reader.next()? {
                Step::Record(kind) => {
                    let len = reader.record_len();
                    let at = reader.offset - len;
                    let key = reader.key();
                    if kind == KIND_DELETE {
                        last.remove(key);
                    } else if let Some(slot) = last.get_mut(key) {
                        *slot = (at, len);
                    } else {
                        last.insert(key.to_owned(), (at, len));
                    }
                }
                Step::End => break,
                Step::Bad(tail) => return Err(changed_under_us(tail)),
            }
        }
        let kept_bytes: u64 = last.values().map(|&(_, len)| len).sum();
        if HEADER_LEN + kept_bytes == end {
            return Ok(true);
        }
        // `bytes_on_disk` never overstates the file: the shorter length is published
        // while the longer file is still in place, before the rename (a failed
        // compaction publishes `good_len` again).
        self.shared
            .bytes_on_disk
            .store(HEADER_LEN + kept_bytes, Ordering::Relaxed);
        let mut keep: Vec<u64> = last.into_values().map(|(at, _)| at).collect();
        drop(reader);
        keep.sort_unstable();
        // Pass 2: copy those records, in file order.
        let mut reader = self.reader_to(end)?;
        let (file, dir_synced) = write_file_atomically(&self.config.path, |w| {
            let mut keep = keep.iter().copied().peekable();
            loop {
                match reader.next()? {
                    Step::Record(_) => {}
                    Step::End => break,
                    Step::Bad(tail) => return Err(changed_under_us(tail)),
                }
                let at = reader.offset - reader.record_len();
                if keep.peek() == Some(&at) {
                    keep.next();
                    w.write_all(&reader.head)?;
                    w.write_all(&reader.payload)?;
                }
            }
            if keep.next().is_some() {
                return Err(changed_under_us(Tail::Clean));
            }
            Ok(())
        })?;
        // The rename is done: the new file is the journal now, whatever the directory's
        // sync said (writing on to the old, unlinked one would lose every later record).
        self.file = file;
        self.good_len = HEADER_LEN + kept_bytes;
        self.dirty = false;
        self.unsynced = false;
        if let Err(e) = dir_synced {
            self.shared
                .fail("journal directory sync after compaction", &e);
        }
        Ok(false)
    }

    fn reader_to(&self, end: u64) -> io::Result<RecordReader<io::Take<BufReader<File>>>> {
        let mut src = OpenOptions::new().read(true).open(&self.config.path)?;
        src.seek(SeekFrom::Start(HEADER_LEN))?;
        Ok(RecordReader::new(
            BufReader::with_capacity(1 << 16, src).take(end - HEADER_LEN),
            HEADER_LEN,
        ))
    }
}

fn changed_under_us(tail: Tail) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("journal file changed under the writer ({tail:?}); compaction abandoned"),
    )
}

/// The size of a record on disk.
fn record_len(key: usize, value: usize) -> u64 {
    (RECORD_HEAD + PAYLOAD_HEAD + key + value) as u64
}

/// Appends one record to `buf`; returns its size. Sizes are checked by the caller.
fn encode(buf: &mut Vec<u8>, kind: u8, key: &[u8], value: &[u8]) -> u32 {
    debug_assert!(key.len() <= MAX_KEY);
    let payload_len = PAYLOAD_HEAD + key.len() + value.len();
    debug_assert!(payload_len <= MAX_PAYLOAD);
    let start = buf.len();
    buf.reserve(RECORD_HEAD + payload_len);
    buf.extend_from_slice(&(payload_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.push(kind);
    buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(value);
    let crc = crc32(&buf[start + RECORD_HEAD..]);
    buf[start + 4..start + RECORD_HEAD].copy_from_slice(&crc.to_le_bytes());
    (RECORD_HEAD + payload_len) as u32
}

enum Step {
    /// A valid record of this kind; its parts are in the reader.
    Record(u8),
    /// The end of the input, at a record boundary.
    End,
    /// The first invalid record; `offset` stays at its start.
    Bad(Tail),
}

/// Reads records one by one, validating each.
struct RecordReader<R> {
    input: R,
    /// Offset just after the last valid record.
    offset: u64,
    head: [u8; RECORD_HEAD],
    payload: Vec<u8>,
    key_end: usize,
}

impl<R: Read> RecordReader<R> {
    fn new(input: R, offset: u64) -> Self {
        RecordReader {
            input,
            offset,
            head: [0; RECORD_HEAD],
            payload: Vec::new(),
            key_end: PAYLOAD_HEAD,
        }
    }

    fn next(&mut self) -> io::Result<Step> {
        let at = self.offset;
        let got = read_full(&mut self.input, &mut self.head)?;
        if got == 0 {
            return Ok(Step::End);
        }
        if got < RECORD_HEAD {
            return Ok(Step::Bad(Tail::Short { at }));
        }
        let len =
            u32::from_le_bytes([self.head[0], self.head[1], self.head[2], self.head[3]]) as usize;
        let crc = u32::from_le_bytes([self.head[4], self.head[5], self.head[6], self.head[7]]);
        if !(PAYLOAD_HEAD..=MAX_PAYLOAD).contains(&len) {
            return Ok(Step::Bad(Tail::BadLength { at }));
        }
        self.payload.resize(len, 0);
        if read_full(&mut self.input, &mut self.payload)? < len {
            return Ok(Step::Bad(Tail::Short { at }));
        }
        if self.payload.capacity() > 4 * len.max(1 << 16) {
            self.payload.shrink_to(len.max(1 << 16));
        }
        if crc32(&self.payload) != crc {
            return Ok(Step::Bad(Tail::BadCrc { at }));
        }
        let kind = self.payload[0];
        let key_len = usize::from(u16::from_le_bytes([self.payload[1], self.payload[2]]));
        let key_end = PAYLOAD_HEAD + key_len;
        let well_formed = match kind {
            KIND_PUT => key_end <= len,
            KIND_DELETE => key_end == len,
            _ => false,
        } && std::str::from_utf8(&self.payload[PAYLOAD_HEAD..key_end]).is_ok();
        if !well_formed {
            return Ok(Step::Bad(Tail::BadPayload { at }));
        }
        self.key_end = key_end;
        self.offset += (RECORD_HEAD + len) as u64;
        Ok(Step::Record(kind))
    }

    fn record_len(&self) -> u64 {
        (RECORD_HEAD + self.payload.len()) as u64
    }

    fn key(&self) -> &str {
        // Checked in `next`; an empty key is the only fallback and cannot happen.
        std::str::from_utf8(&self.payload[PAYLOAD_HEAD..self.key_end]).unwrap_or_default()
    }

    fn value(&self) -> &[u8] {
        &self.payload[self.key_end..]
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Refuses a foreign file; completes a header torn at creation.
fn check_magic(file: &mut File, path: &Path) -> io::Result<()> {
    let mut magic = [0u8; 8];
    file.seek(SeekFrom::Start(0))?;
    let got = read_full(file, &mut magic)?;
    if got == MAGIC.len() && &magic == MAGIC {
        return Ok(());
    }
    if got < MAGIC.len() && magic[..got] == MAGIC[..got] && file.metadata()?.len() < HEADER_LEN {
        // Only a crash while an older version created the file can leave this; the
        // current one creates files atomically.
        file.write_all_at(MAGIC, 0)?;
        file.sync_all()?;
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{} is not a journal of this version (magic {:?}, expected {:?}); refusing to touch it",
            path.display(),
            String::from_utf8_lossy(&magic[..got]),
            String::from_utf8_lossy(MAGIC),
        ),
    ))
}

/// Copies the cut bytes to `<path>.torn` before they are truncated away.
fn save_tail(file: &File, path: &Path, from: u64, to: u64) -> io::Result<()> {
    let torn = side_path(path, "torn");
    let mut out = File::create(&torn)?;
    let mut input = file;
    input.seek(SeekFrom::Start(from))?;
    let copied = io::copy(&mut input.take(to - from), &mut out)?;
    out.sync_all()?;
    tracing::warn!(path = %torn.display(), bytes = copied, "saved a corrupt journal tail");
    Ok(())
}

fn side_path(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes `<path>.compact` (magic, then whatever `fill` writes), syncs it, renames it over
/// `path`, syncs the directory, and returns the new file open for writing with the
/// directory sync's result apart: once the rename is done the new file is at `path`
/// whatever that sync says, so a caller that keeps running must switch to it.
fn write_file_atomically(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> io::Result<(File, io::Result<()>)> {
    let tmp = side_path(path, "compact");
    let result = (|| {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 16, file);
        w.write_all(MAGIC)?;
        fill(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        Ok((file, File::open(dir).and_then(|d| d.sync_all())))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// CRC-32 (IEEE 802.3, reflected, as zlib and PNG), table-driven.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = CRC_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn journal_is_send_sync_and_ack_is_send() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Journal>();
        send::<Ack>();
    }

    #[test]
    fn encode_then_read_back() {
        let mut buf = Vec::new();
        let n = encode(&mut buf, KIND_PUT, b"sip:a@b", b"value");
        assert_eq!(n as usize, buf.len());
        assert_eq!(u64::from(n), record_len(7, 5));
        encode(&mut buf, KIND_DELETE, b"sip:a@b", b"");
        let mut r = RecordReader::new(&buf[..], 0);
        assert!(matches!(r.next().unwrap(), Step::Record(KIND_PUT)));
        assert_eq!((r.key(), r.value()), ("sip:a@b", &b"value"[..]));
        assert!(matches!(r.next().unwrap(), Step::Record(KIND_DELETE)));
        assert!(matches!(r.next().unwrap(), Step::End));
    }
}
