//! Billing: one call detail record (CDR) per call attempt, appended to a JSON-lines file
//! and on disk before the attempt counts as ended.
//!
//! The call controller (and the hub, for an attempt refused before any call exists)
//! builds a [`Cdr`] with [`Cdr::builder`] from the attempt's `SystemTime`s (it never
//! formats a time itself) and hands it to [`BillingHandle::write`]. The [`CdrAck`] resolves
//! once the CDR's line is written **and** `fdatasync`ed; only then does the attempt count
//! as ended (gauges and counters move, the held response goes out). The file format is
//! interface.md's "CDRs": one JSON object per line, every field present on every line
//! (`null` when absent), times in RFC 3339 UTC with milliseconds.
//!
//! # Threads and queues
//!
//! One writer thread (named `billing`) owns the file; [`BillingHandle::write`] only sends
//! the CDR to it over a channel, so it never blocks the arbiter the call actors run on:
//! serialising, writing and syncing all happen on the writer thread. The writer takes
//! every queued CDR (up to [`MAX_BATCH`] and about 8 MiB), serialises them into one
//! buffer, writes it with one `write`, calls `fdatasync` once and answers them all
//! (group commit). Under load it gathers for up to [`COMMIT_WINDOW`] first: when the
//! previous batch shared its sync or ended less than that ago, it waits that long for
//! more CDRs before syncing, so thousands of calls a second cost hundreds of syncs, not
//! thousands; an idle switch syncs a lone CDR at once. The channel is unbounded, as the
//! registrar journal's: every producer awaits its answer before the attempt ends, so the
//! CDRs in flight are bounded by the calls in progress (call admission bounds those) and
//! the refusals whose answer waits for its CDR (the hub bounds those).
//!
//! # A write that fails
//!
//! A batch whose `write` or `fdatasync` fails (a full disk, an I/O error, a file size
//! limit) is not answered: the writer cuts the file back to the end of the last good batch
//! and keeps the batch, already serialised, and retries it with a backoff from
//! [`RETRY_MIN`] doubling to [`RETRY_MAX`], adding the CDRs that arrive meanwhile behind it
//! (up to the batch limits). Nothing is acknowledged before it is on disk, so every
//! caller keeps waiting: a call's end stays held, a refusal stays unanswered. The
//! counters say so ([`BillingCounters::failed_batches`] counts every failed attempt,
//! [`BillingCounters::failing`] is set until a retry succeeds, `pending` counts the CDRs
//! handed over and not yet answered), and the switch's `/readyz` is 503 while it lasts.
//! Only once every handle is gone (shutdown) does the writer give up, after retrying for
//! [`SHUTDOWN_RETRY`]: it logs each CDR it could not store, whole, at error level and
//! answers it `Err`, so even then no record disappears without a trace.
//!
//! # Invariants
//!
//! 1. An answer is `Ok` only after the CDR's line was written and `fdatasync`ed. A
//!    failed write is retried, not answered; `Err` means "not stored" and comes only for a
//!    CDR that cannot be serialised or at shutdown after [`SHUTDOWN_RETRY`]. The writer
//!    truncates the file back to the end of the last good batch after each failure (and
//!    syncs the truncation). A crash between a failed write and that truncation can leave
//!    such a CDR whole in the file, and the retry writes it again; readers should treat
//!    `call_id` (with `start_time`) as the key.
//! 2. The file is always whole lines: every byte is part of a line that ends in `\n`
//!    and holds one JSON object. [`BillingHandle::open`] restores this after a crash (the
//!    torn bytes go to `<path>.torn`; a bad tail longer than a torn write can be,
//!    [`MAX_TORN_BYTES`], is refused, not cut); the writer restores it after a failed
//!    write and never appends after bytes it could not remove. A torn line therefore
//!    never glues onto the next record. Lines never contain a raw `\n`: JSON escapes it
//!    inside strings.
//! 3. Lines are written in the order CDRs reached the writer (one FIFO channel; a retried
//!    batch keeps its place ahead of everything that came after it).
//! 4. A failed batch does not stop the writer: it is retried until it is stored.
//! 5. Dropping the last handle lets the writer finish what is queued and joins it, so
//!    the file is closed once the drop returns.
//! 6. One process at a time: [`BillingHandle::open`] takes an exclusive advisory lock
//!    (`flock`) on the CDR file, held by the writer for as long as it runs; a second
//!    opener (another switch on the same file) gets an error naming the file.
//!
//! Rotation, when it comes, must be rename-and-reopen, not copy-and-truncate (the writer
//! tracks the file's length). Unix only.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::oneshot;

/// How long a loaded writer gathers CDRs before it syncs (see the module doc): a bound
/// on what group commit adds to the end of a call (the 200 for a BYE waits for the sync).
pub const COMMIT_WINDOW: Duration = Duration::from_millis(2);

/// The first wait before a failed batch is retried; it doubles after every failure.
pub const RETRY_MIN: Duration = Duration::from_millis(10);
/// The longest wait between two retries of a failed batch.
pub const RETRY_MAX: Duration = Duration::from_secs(1);
/// How long the writer keeps retrying a failed batch once every handle is gone
/// (shutdown) before it logs the CDRs it could not store and gives up.
pub const SHUTDOWN_RETRY: Duration = Duration::from_secs(5);

/// The most CDRs one batch (one write, one `fdatasync`) takes.
pub const MAX_BATCH: usize = 4096;
/// A batch stops taking CDRs once its serialised size reaches this.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// The most bytes recovery cuts off the end. A torn write is at most one batch (about
/// 8 MiB plus one CDR); a longer bad tail means the file is not a CDR file (a
/// misconfigured path), and [`Billing::open`] refuses it rather than cut it.
pub const MAX_TORN_BYTES: u64 = 64 << 20;

// ---------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------

/// An instant in UTC with millisecond resolution, serialised as RFC 3339
/// (`2026-12-01T22:13:40.123Z`).
///
/// It always lies within the years 0000–9999 (RFC 3339's range): conversions clamp to
/// [`Timestamp::MIN`] and [`Timestamp::MAX`]. Sub-millisecond parts are truncated
/// (rounded towards the past), so a time shown in a CDR is never later than the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    unix_ms: i64,
}

const MS_PER_DAY: i64 = 86_400_000;

impl Timestamp {
    /// `0000-01-01T00:00:00.000Z`.
    pub const MIN: Timestamp = Timestamp {
        unix_ms: days_from_civil(0, 1, 1) * MS_PER_DAY,
    };
    /// `9999-12-31T23:59:59.999Z`.
    pub const MAX: Timestamp = Timestamp {
        unix_ms: days_from_civil(10_000, 1, 1) * MS_PER_DAY - 1,
    };
    /// `1970-01-01T00:00:00.000Z`.
    pub const UNIX_EPOCH: Timestamp = Timestamp { unix_ms: 0 };

    /// The instant `ms` milliseconds after (negative: before) the Unix epoch, clamped.
    pub fn from_unix_ms(ms: i64) -> Timestamp {
        Timestamp {
            unix_ms: ms.clamp(Self::MIN.unix_ms, Self::MAX.unix_ms),
        }
    }

    /// Milliseconds since the Unix epoch (negative before it).
    pub fn unix_ms(self) -> i64 {
        self.unix_ms
    }

    /// `t`, truncated to the millisecond and clamped.
    pub fn from_system_time(t: SystemTime) -> Timestamp {
        let ms = match t.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
            Err(e) => {
                let before = e.duration();
                let whole = i64::try_from(before.as_millis()).unwrap_or(i64::MAX);
                // Floor: 0.5 ms before the epoch is -1 ms, not 0.
                let partial = i64::from(before.as_nanos() % 1_000_000 != 0);
                whole.saturating_neg().saturating_sub(partial)
            }
        };
        Timestamp::from_unix_ms(ms)
    }

    /// Parses exactly the form [`Display`](fmt::Display) writes:
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` (no other offsets, no leap second 60).
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let b = s.as_bytes();
        if b.len() != 24 {
            return None;
        }
        let punct = [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
            (23, b'Z'),
        ];
        if punct.iter().any(|&(i, c)| b[i] != c) {
            return None;
        }
        let num = |from: usize, to: usize| -> Option<i64> {
            b[from..to].iter().try_fold(0i64, |acc, &d| {
                d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
            })
        };
        let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
        let (hour, minute, second, milli) =
            (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let days = days_from_civil(year, month, day);
        Some(Timestamp {
            unix_ms: days * MS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 1000 + milli,
        })
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Timestamp {
        Timestamp::from_system_time(t)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 UTC with milliseconds: `2026-12-01T22:13:40.123Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.unix_ms.div_euclid(MS_PER_DAY);
        let in_day = self.unix_ms.rem_euclid(MS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let (secs, milli) = (in_day / 1000, in_day % 1000);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{milli:03}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "not an RFC 3339 time of the form YYYY-MM-DDTHH:MM:SS.mmmZ: {s:?}"
            ))
        })
    }
}

/// Days since 1970-01-01 of the proleptic Gregorian date `year-month-day` (H. Hinnant's
/// `days_from_civil`). `month` is 1–12.
const fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = (month + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + day - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date (year, month 1–12, day 1–31) `days` after 1970-01-01
/// (H. Hinnant's `civil_from_days`). Also the registrar's `Date` header uses it.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// ---------------------------------------------------------------------------------------
// The record
// ---------------------------------------------------------------------------------------

/// Why a call was forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardReason {
    /// Call forwarding on busy.
    Busy,
    /// Call forwarding on no answer.
    NoAnswer,
    /// Unconditional call forwarding.
    Unconditional,
}

/// How the call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Answered (a 2xx), then hung up.
    Answered,
    /// The callee was busy (486/600).
    Busy,
    /// Nobody answered before the ring timeout (480/408).
    NoAnswer,
    /// The caller gave up before an answer (CANCEL).
    Cancelled,
    /// The callee or the switch refused the call (another 4xx–6xx).
    Rejected,
    /// The switch could not complete the call (5xx of its own, timeouts, errors).
    Failed,
}

/// Who ended the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HangupBy {
    /// The calling party (BYE or CANCEL from the A leg).
    Caller,
    /// The called party (BYE or a final error response from the B leg).
    Callee,
    /// The switch itself (timeouts, shutdown, errors).
    Switch,
}

/// One call detail record: exactly the fields of interface.md's "CDRs", in that order.
///
/// Serialised as one JSON object with every field present (`null` for an absent
/// option). Build it with [`Cdr::builder`]; the derived numbers (`duration_s`,
/// `billable_s`) are computed from the millisecond times the record shows, so a reader
/// can recompute them from the line itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cdr {
    /// The A-leg Call-ID.
    pub call_id: String,
    /// The IMS charging identifier, when one exists.
    pub icid: Option<String>,
    /// The calling party.
    pub caller: String,
    /// The called party as dialled.
    pub callee: String,
    /// Who answered, after any forwarding.
    pub connected: Option<String>,
    /// The party whose forwarding rule sent the call on.
    pub forwarded_from: Option<String>,
    /// Why the call was forwarded.
    pub forward_reason: Option<ForwardReason>,
    /// When the INVITE arrived.
    pub start_time: Timestamp,
    /// When the call was answered (the 2xx), if it was.
    pub answer_time: Option<Timestamp>,
    /// When the call ended (BYE, CANCEL, final error response, or the switch's decision).
    pub end_time: Timestamp,
    /// `end_time − start_time` in seconds, millisecond precision (0 if the clock went
    /// backwards).
    pub duration_s: f64,
    /// `end_time − answer_time` rounded **up** to whole seconds; 0 when not answered.
    pub billable_s: u64,
    /// How the call ended.
    pub disposition: Disposition,
    /// The final status that ended the setup or the call.
    pub sip_status: u16,
    /// Who ended the call.
    pub hangup_by: HangupBy,
    /// Time spent on hold, in seconds, millisecond precision.
    pub held_s: f64,
}

impl Cdr {
    /// Starts a CDR for the call `call_id` from `caller` to `callee` (as dialled) whose
    /// INVITE arrived at `start`.
    pub fn builder(
        call_id: impl Into<String>,
        caller: impl Into<String>,
        callee: impl Into<String>,
        start: SystemTime,
    ) -> CdrBuilder {
        CdrBuilder {
            call_id: call_id.into(),
            icid: None,
            caller: caller.into(),
            callee: callee.into(),
            connected: None,
            forwarding: None,
            start: Timestamp::from(start),
            answer: None,
            held: Duration::ZERO,
        }
    }

    /// This CDR as its line in the file, without the trailing `\n`.
    pub fn to_json(&self) -> String {
        // Infallible for this type: string keys, plain fields (a non-finite f64 becomes
        // null; ours are always finite).
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A [`Cdr`] under construction; [`CdrBuilder::end`] completes it.
#[derive(Clone, Debug)]
pub struct CdrBuilder {
    call_id: String,
    icid: Option<String>,
    caller: String,
    callee: String,
    connected: Option<String>,
    forwarding: Option<(String, ForwardReason)>,
    start: Timestamp,
    answer: Option<Timestamp>,
    held: Duration,
}

impl CdrBuilder {
    /// The IMS charging identifier.
    pub fn icid(mut self, icid: impl Into<String>) -> Self {
        self.icid = Some(icid.into());
        self
    }

    /// Who answered, after any forwarding.
    pub fn connected(mut self, party: impl Into<String>) -> Self {
        self.connected = Some(party.into());
        self
    }

    /// The call was forwarded by `from`'s rule for `reason`.
    pub fn forwarded(mut self, from: impl Into<String>, reason: ForwardReason) -> Self {
        self.forwarding = Some((from.into(), reason));
        self
    }

    /// The call was answered at `at`.
    pub fn answered(mut self, at: SystemTime) -> Self {
        self.answer = Some(Timestamp::from(at));
        self
    }

    /// The call spent `held` on hold in total.
    pub fn held(mut self, held: Duration) -> Self {
        self.held = held;
        self
    }

    /// The call ended at `end` with `disposition`, the final `sip_status`, ended by
    /// `hangup_by`. Computes `duration_s` and `billable_s` (see [`Cdr`]).
    pub fn end(
        self,
        end: SystemTime,
        disposition: Disposition,
        sip_status: u16,
        hangup_by: HangupBy,
    ) -> Cdr {
        let end = Timestamp::from(end);
        let elapsed_ms = |from: Timestamp| (end.unix_ms - from.unix_ms).max(0);
        let (forwarded_from, forward_reason) = match self.forwarding {
            Some((from, reason)) => (Some(from), Some(reason)),
            None => (None, None),
        };
        Cdr {
            call_id: self.call_id,
            icid: self.icid,
            caller: self.caller,
            callee: self.callee,
            connected: self.connected,
            forwarded_from,
            forward_reason,
            start_time: self.start,
            answer_time: self.answer,
            end_time: end,
            duration_s: elapsed_ms(self.start) as f64 / 1000.0,
            billable_s: self
                .answer
                .map_or(0, |answer| (elapsed_ms(answer) as u64).div_ceil(1000)),
            disposition,
            sip_status,
            hangup_by,
            held_s: (self.held.as_millis().min(u128::from(u64::MAX)) as f64) / 1000.0,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Errors, answers, counters
// ---------------------------------------------------------------------------------------

/// Why a CDR was not stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BillingError {
    /// Writing or syncing failed and kept failing until shutdown ([`SHUTDOWN_RETRY`]);
    /// the CDR was logged whole at error level instead.
    Io {
        /// The error's kind.
        kind: io::ErrorKind,
        /// The error's text.
        message: String,
    },
    /// The CDR could not be serialised (not expected for [`Cdr`]).
    Encode(String),
    /// The writer thread is gone.
    Closed,
}

impl BillingError {
    fn io(e: &io::Error) -> Self {
        BillingError::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl fmt::Display for BillingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BillingError::Io { message, .. } => write!(f, "CDR write failed: {message}"),
            BillingError::Encode(e) => write!(f, "CDR could not be serialised: {e}"),
            BillingError::Closed => write!(f, "the billing writer is gone"),
        }
    }
}

impl std::error::Error for BillingError {}

/// The writer's counters, for the metrics layer (`softswitch_cdrs_written_total`,
/// `softswitch_cdr_write_failures_total`, `softswitch_cdrs_pending`) and the readiness
/// probe. Updated by the writer thread after each attempt; read them with
/// `Ordering::Relaxed`.
#[derive(Debug, Default)]
pub struct BillingCounters {
    /// CDRs written and synced (answered `Ok`).
    pub written: AtomicU64,
    /// CDRs answered `Err` (not serialisable, or given up at shutdown).
    pub errors: AtomicU64,
    /// Batches written and synced: one `write` and one `fdatasync` each.
    pub batches: AtomicU64,
    /// Attempts to store a batch that failed (each failed retry counts again); the
    /// batch was cut off the file and is retried.
    pub failed_batches: AtomicU64,
    /// CDRs handed to the writer and not answered yet.
    pub pending: AtomicU64,
    /// Set by a failed attempt, cleared by the next one that succeeds: CDRs are waiting
    /// for a retry.
    pub failing: AtomicBool,
    /// Length of the file after the last good batch.
    pub bytes: AtomicU64,
    /// The last write error's text (kept after recovery, for the log and `/readyz`).
    last_error: Mutex<Option<String>>,
}

impl BillingCounters {
    /// The text of the last write error, if any write failed yet.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_last_error(&self, text: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
    }
}

/// Resolves once the CDR is on disk (see the module's invariant 1). Dropping it does not
/// cancel the write.
#[must_use = "a CdrAck tells whether the CDR is on disk"]
pub struct CdrAck(oneshot::Receiver<Result<(), BillingError>>);

impl CdrAck {
    fn ready(result: Result<(), BillingError>) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(result);
        CdrAck(rx)
    }

    /// Blocks the current thread until the CDR is on disk. For non-async callers (tools,
    /// tests); it panics if called from inside an async runtime.
    pub fn wait(self) -> Result<(), BillingError> {
        self.0.blocking_recv().unwrap_or(Err(BillingError::Closed))
    }
}

impl Future for CdrAck {
    type Output = Result<(), BillingError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(BillingError::Closed)))
    }
}

type AckTx = oneshot::Sender<Result<(), BillingError>>;

// ---------------------------------------------------------------------------------------
// Handle
// ---------------------------------------------------------------------------------------

/// What [`BillingHandle::open`] found in the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Complete lines (CDRs) kept in the file.
    pub records: u64,
    /// Bytes cut off the end: a line without its `\n`, and complete trailing lines that
    /// are not a JSON object. They were appended to `<path>.torn` first.
    pub torn_bytes: u64,
    /// The file's length after recovery: where the next line goes.
    pub bytes: u64,
}

/// A handle on the billing writer: cheap to clone, `Send + Sync`, usable from plain async
/// code. The writer stops when the last handle is dropped (invariant 5).
#[derive(Clone)]
pub struct BillingHandle {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Option<mpsc::Sender<(Cdr, AckTx)>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<BillingCounters>,
    path: PathBuf,
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl BillingHandle {
    /// Opens (or creates) the CDR file at `path`: creates the parent directories, locks
    /// the file (invariant 6), recovers a torn tail (see [`Recovered`]), syncs the
    /// directory, and starts the writer thread.
    ///
    /// Recovery reads the whole file once (it counts the lines). It fails, leaving the
    /// file untouched, when more than [`MAX_TORN_BYTES`] at its end are not whole CDR
    /// lines: that is not a torn write but a file that is not ours. It fails with
    /// [`io::ErrorKind::ResourceBusy`] when another process holds the file's lock.
    pub fn open(path: impl AsRef<Path>) -> io::Result<(BillingHandle, Recovered)> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        crate::lock::exclusive(&file)?;
        let recovered = recover(&mut file, &path)?;
        // The file (and `.torn`) may be new: make their names durable too, or a power
        // loss could lose a file whose CDRs were all synced.
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()?;
        let counters = Arc::new(BillingCounters::default());
        counters.bytes.store(recovered.bytes, Ordering::Relaxed);
        let writer = Writer {
            file,
            good_len: recovered.bytes,
            dirty: false,
            counters: Arc::clone(&counters),
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("billing".into())
            .spawn(move || writer.run(rx))?;
        let handle = BillingHandle {
            inner: Arc::new(Inner {
                tx: Some(tx),
                thread: Some(thread),
                counters,
                path,
            }),
        };
        Ok((handle, recovered))
    }

    /// Queues `cdr`; the [`CdrAck`] resolves once its line is written and synced. Never
    /// blocks: the work happens on the writer thread.
    pub fn write(&self, cdr: Cdr) -> CdrAck {
        let (tx, rx) = oneshot::channel();
        let counters = &self.inner.counters;
        counters.pending.fetch_add(1, Ordering::Relaxed);
        match &self.inner.tx {
            Some(sender) if sender.send((cdr, tx)).is_ok() => CdrAck(rx),
            _ => {
                counters.pending.fetch_sub(1, Ordering::Relaxed);
                CdrAck::ready(Err(BillingError::Closed))
            }
        }
    }

    /// The writer's counters (shared, live).
    pub fn counters(&self) -> Arc<BillingCounters> {
        Arc::clone(&self.inner.counters)
    }

    /// The CDR file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

// ---------------------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------------------

/// Finds the end of the last good line, saves and cuts what follows it, and counts the
/// lines kept. Reads the whole file once (newline counting, about a second per GB cold).
fn recover(file: &mut File, path: &Path) -> io::Result<Recovered> {
    // Pass 1: count the lines and find the end of the last one.
    let mut records = 0u64;
    let mut good_len = 0u64;
    let mut offset = 0u64;
    let mut chunk = vec![0u8; 1 << 20];
    file.seek(SeekFrom::Start(0))?;
    loop {
        let n = match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let part = &chunk[..n];
        records += part.iter().filter(|&&b| b == b'\n').count() as u64;
        if let Some(last) = part.iter().rposition(|&b| b == b'\n') {
            good_len = offset + last as u64 + 1;
        }
        offset += n as u64;
    }
    // Nothing else writes the file: what was read is all of it.
    let len = offset;
    let refuse = |from: u64| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: the {} bytes from offset {from} on are not whole CDR lines, more than a torn \
                 write can leave ({MAX_TORN_BYTES}); not a CDR file? refusing to cut it",
                path.display(),
                len - from
            ),
        )
    };
    if len - good_len > MAX_TORN_BYTES {
        return Err(refuse(good_len));
    }
    // Pass 2: drop trailing complete lines that are not a JSON object (a torn write that
    // happened to leave a `\n`, or zeros from a power loss), last first.
    match last_good_end(file, good_len, len)? {
        Some((end, dropped)) => {
            good_len = end;
            records -= dropped;
        }
        None => return Err(refuse(good_len)),
    }
    let mut recovered = Recovered {
        records,
        torn_bytes: len - good_len,
        bytes: good_len,
    };
    if recovered.torn_bytes > 0 {
        save_torn(file, path, good_len, len)?;
        file.set_len(good_len)?;
        file.sync_all()?;
        tracing::warn!(
            path = %path.display(),
            torn_bytes = recovered.torn_bytes,
            kept = recovered.records,
            "CDR file ended in a torn line; cut it and saved it to .torn"
        );
    }
    recovered.bytes = file.metadata()?.len();
    Ok(recovered)
}

/// Walks back from `end` (just after a `\n`) over complete lines that are not a JSON
/// object. Returns the end of the last good line and how many lines come after it, or
/// `None` when those lines and the rest of the file, up to `len`, would exceed
/// [`MAX_TORN_BYTES`].
fn last_good_end(file: &mut File, end: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    if end == 0 {
        return Ok(Some((0, 0)));
    }
    // The usual case: the last complete line is good.
    let start = line_start(file, end)?;
    if is_json_object(&read_at(file, start, end - 1 - start)?) {
        return Ok(Some((end, 0)));
    }
    // A damaged file: walk back in memory, over at most MAX_TORN_BYTES.
    let from = len.saturating_sub(MAX_TORN_BYTES);
    if start < from {
        return Ok(None);
    }
    let buf = read_at(file, from, start - from)?;
    let mut cur = buf.len(); // buf[..cur] ends in the `\n` of the line to check next
    let mut dropped = 1;
    loop {
        if cur == 0 {
            return Ok((from == 0).then_some((0, dropped)));
        }
        let begin = buf[..cur - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |at| at + 1);
        let end = from + cur as u64;
        if begin == 0 && from > 0 {
            // The line starts at or before the window: if it is bad too, the bad tail is
            // longer than the window.
            let at = line_start(file, end)?;
            let good = is_json_object(&read_at(file, at, end - 1 - at)?);
            return Ok(good.then_some((end, dropped)));
        }
        if is_json_object(&buf[begin..cur - 1]) {
            return Ok(Some((end, dropped)));
        }
        dropped += 1;
        cur = begin;
    }
}

/// The offset where the line ending at `end` (just after its `\n`) starts.
fn line_start(file: &mut File, end: u64) -> io::Result<u64> {
    let mut chunk = vec![0u8; 64 << 10];
    let mut to = end - 1; // the line's own `\n`
    while to > 0 {
        let from = to.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(to - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(part)?;
        if let Some(at) = part.iter().rposition(|&b| b == b'\n') {
            return Ok(from + at as u64 + 1);
        }
        to = from;
    }
    Ok(0)
}

fn read_at(file: &mut File, from: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    file.seek(SeekFrom::Start(from))?;
    file.read_exact(&mut buf)?;
    Ok(buf)
}

fn is_json_object(line: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(line).is_ok()
}

/// Appends the bytes `[from, to)` of `file` to `<path>.torn` and syncs it.
fn save_torn(file: &mut File, path: &Path, from: u64, to: u64) -> io::Result<()> {
    let mut name = path.as_os_str().to_owned();
    name.push(".torn");
    let mut out = OpenOptions::new().create(true).append(true).open(&name)?;
    file.seek(SeekFrom::Start(from))?;
    io::copy(&mut Read::by_ref(file).take(to - from), &mut out)?;
    out.sync_all()
}

// ---------------------------------------------------------------------------------------
// The writer thread
// ---------------------------------------------------------------------------------------

struct Writer {
    /// Opened for appending: every write lands at the current end of the file.
    file: File,
    /// Everything before this offset is whole lines that were answered `Ok`.
    good_len: u64,
    /// A failed batch may have left bytes after `good_len` (or their removal was not
    /// synced); they are cut before the next write.
    dirty: bool,
    counters: Arc<BillingCounters>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<(Cdr, AckTx)>) {
        let mut buf: Vec<u8> = Vec::new();
        let mut acks: Vec<AckTx> = Vec::new();
        let mut last_batch = 0usize;
        let mut last_end: Option<Instant> = None;
        let mut backoff = RETRY_MIN;
        // Set once every handle is gone while a failed batch is held: the retry deadline.
        let mut give_up_at: Option<Instant> = None;
        loop {
            if acks.is_empty() {
                let Ok(first) = rx.recv() else { return };
                let loaded =
                    last_batch > 1 || last_end.is_some_and(|t| t.elapsed() < COMMIT_WINDOW);
                let gather_until = loaded.then(|| Instant::now() + COMMIT_WINDOW);
                last_batch = self
                    .take(&rx, Some(first), gather_until, &mut buf, &mut acks)
                    .0;
            } else if give_up_at.is_none() {
                // A failed batch is held: wait out the backoff, taking what arrives behind
                // it meanwhile (up to the batch limits).
                let until = Instant::now() + backoff;
                let (_, closed) = self.take(&rx, None, Some(until), &mut buf, &mut acks);
                if closed {
                    give_up_at = Some(Instant::now() + SHUTDOWN_RETRY);
                }
                if let Some(wait) = until.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            } else {
                std::thread::sleep(backoff);
            }
            if acks.is_empty() {
                continue;
            }
            let result = self.commit(&buf);
            last_end = Some(Instant::now());
            let c = &self.counters;
            let n = acks.len() as u64;
            c.bytes.store(self.good_len, Ordering::Relaxed);
            match result {
                Ok(()) => {
                    c.written.fetch_add(n, Ordering::Relaxed);
                    c.batches.fetch_add(1, Ordering::Relaxed);
                    if c.failing.swap(false, Ordering::Relaxed) {
                        tracing::warn!(cdrs = n, "CDR writes recovered: the held CDRs are on disk");
                    }
                    backoff = RETRY_MIN;
                    self.answer(&mut acks, Ok(()));
                    buf.clear();
                    if buf.capacity() > 2 * MAX_BATCH_BYTES {
                        buf.shrink_to(MAX_BATCH_BYTES);
                    }
                }
                Err(e) => {
                    c.failed_batches.fetch_add(1, Ordering::Relaxed);
                    c.failing.store(true, Ordering::Relaxed);
                    c.set_last_error(e.to_string());
                    backoff = (backoff * 2).min(RETRY_MAX);
                    if give_up_at.is_some_and(|t| Instant::now() >= t) {
                        // Shutting down and the disk still refuses: the log keeps them.
                        for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                            tracing::error!(
                                cdr = %String::from_utf8_lossy(line),
                                "CDR not stored at shutdown: {e}"
                            );
                        }
                        c.errors.fetch_add(n, Ordering::Relaxed);
                        self.answer(&mut acks, Err(e));
                        buf.clear();
                    }
                }
            }
        }
    }

    /// Serialises `first` and then whatever the channel holds, into `buf` (up to the
    /// batch limits); waits for more until `until` when it is given. Returns how many
    /// CDRs it took, and whether the channel is closed (every handle gone).
    fn take(
        &mut self,
        rx: &mpsc::Receiver<(Cdr, AckTx)>,
        first: Option<(Cdr, AckTx)>,
        until: Option<Instant>,
        buf: &mut Vec<u8>,
        acks: &mut Vec<AckTx>,
    ) -> (usize, bool) {
        let mut next = first;
        let mut taken = 0;
        let mut closed = false;
        loop {
            if next.is_none() && !closed && acks.len() < MAX_BATCH && buf.len() < MAX_BATCH_BYTES {
                next = match rx.try_recv() {
                    Ok(x) => Some(x),
                    Err(mpsc::TryRecvError::Disconnected) => {
                        closed = true;
                        None
                    }
                    Err(mpsc::TryRecvError::Empty) => {
                        let left = until.map(|u| u.saturating_duration_since(Instant::now()));
                        match left.filter(|l| !l.is_zero()).map(|l| rx.recv_timeout(l)) {
                            Some(Ok(x)) => Some(x),
                            Some(Err(mpsc::RecvTimeoutError::Disconnected)) => {
                                closed = true;
                                None
                            }
                            _ => None,
                        }
                    }
                };
            }
            let Some((cdr, ack)) = next.take() else {
                return (taken, closed);
            };
            taken += 1;
            let start = buf.len();
            match serde_json::to_writer(&mut *buf, &cdr) {
                Ok(()) => {
                    buf.push(b'\n');
                    acks.push(ack);
                }
                Err(e) => {
                    buf.truncate(start);
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    self.counters.pending.fetch_sub(1, Ordering::Relaxed);
                    let _ = ack.send(Err(BillingError::Encode(e.to_string())));
                }
            }
        }
    }

    fn answer(&self, acks: &mut Vec<AckTx>, result: Result<(), BillingError>) {
        self.counters
            .pending
            .fetch_sub(acks.len() as u64, Ordering::Relaxed);
        for ack in acks.drain(..) {
            let _ = ack.send(result.clone());
        }
    }

    /// Appends one batch and syncs it; on failure cuts the file back to `good_len`.
    fn commit(&mut self, buf: &[u8]) -> Result<(), BillingError> {
        let attempt = (|| -> io::Result<()> {
            if self.dirty {
                self.rollback()?;
            }
            self.dirty = true;
            self.file.write_all(buf)?;
            self.file.sync_data()
        })();
        match attempt {
            Ok(()) => {
                self.dirty = false;
                self.good_len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, path_bytes = self.good_len, "CDR batch not stored: kept, retried with backoff");
                if let Err(e) = self.rollback() {
                    tracing::error!(error = %e, "CDR file could not be cut back; retrying before the next write");
                }
                Err(BillingError::io(&e))
            }
        }
    }

    /// Cuts the file back to `good_len` and syncs the cut; clears `dirty` only then.
    fn rollback(&mut self) -> io::Result<()> {
        self.file.set_len(self.good_len)?;
        self.file.sync_data()?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip_over_the_whole_range() {
        let first = Timestamp::MIN.unix_ms.div_euclid(MS_PER_DAY);
        let last = Timestamp::MAX.unix_ms.div_euclid(MS_PER_DAY);
        assert_eq!(civil_from_days(first), (0, 1, 1));
        assert_eq!(civil_from_days(last), (9999, 12, 31));
        let mut expected = (0, 1, 1);
        for days in first..=last {
            let got = civil_from_days(days);
            assert_eq!(got, expected, "day {days}");
            assert_eq!(days_from_civil(got.0, got.1, got.2), days);
            let (y, m, d) = expected;
            expected = if d < days_in_month(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    #[test]
    fn handle_is_send_sync_and_ack_is_send() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<BillingHandle>();
        send::<CdrAck>();
        send::<Cdr>();
    }
}
