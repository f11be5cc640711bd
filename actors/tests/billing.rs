//! The billing writer's contract, tested through its public API against real files: the
//! CDR line format and RFC 3339 times, torn tails at every cut, `kill -9` mid-stream,
//! group commit, write errors rolled back and retried until stored, the file lock, and
//! that writing never blocks the arbiter of its callers.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashSet};
use std::fs::{self, OpenOptions};
use std::future::Future;
use std::hash::BuildHasher;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use softswitch_actors::billing::{
    BillingHandle, Cdr, Disposition, ForwardReason, HangupBy, Recovered, Timestamp,
};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let suffix = std::collections::hash_map::RandomState::new().hash_one(0u8);
        let dir = std::env::temp_dir().join(format!("ssbilling-{name}-{suffix:016x}"));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("data").join("cdr.jsonl")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Every field interface.md names, in its order.
const FIELDS: [&str; 16] = [
    "call_id",
    "icid",
    "caller",
    "callee",
    "connected",
    "forwarded_from",
    "forward_reason",
    "start_time",
    "answer_time",
    "end_time",
    "duration_s",
    "billable_s",
    "disposition",
    "sip_status",
    "hangup_by",
    "held_s",
];

fn at(unix_ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(unix_ms)
}

/// 2026-12-01T22:13:40.123Z.
const T0: u64 = 1_796_163_220_123;

/// A plain answered call, numbered `i`.
fn cdr(i: u64) -> Cdr {
    Cdr::builder(
        format!("call-{i}@10.0.0.1"),
        "sip:alice@example.test",
        "sip:bob@example.test",
        at(T0),
    )
    .connected("sip:bob@example.test")
    .answered(at(T0 + 2_500))
    .end(
        at(T0 + 62_501),
        Disposition::Answered,
        200,
        HangupBy::Caller,
    )
}

fn open(path: &Path) -> (BillingHandle, Recovered) {
    BillingHandle::open(path).expect("open the CDR file")
}

/// The file's lines, each parsed; panics on a line that is not a whole CDR.
fn read_cdrs(path: &Path) -> Vec<Cdr> {
    let bytes = fs::read(path).unwrap();
    assert!(
        bytes.is_empty() || bytes.ends_with(b"\n"),
        "the file ends in a torn line"
    );
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(|line| serde_json::from_slice(line).expect("a whole CDR line"))
        .collect()
}

#[actix_rt::test]
async fn round_trip_every_field_on_every_line() {
    let dir = TempDir::new("roundtrip");
    let path = dir.file();
    let (handle, rec) = open(&path);
    assert_eq!(rec, Recovered::default());

    let full = Cdr::builder(
        "a84b4c76e66710@pc33.example.test",
        "sip:alice@example.test",
        "sip:bob@example.test",
        at(T0),
    )
    .icid("icid-1234")
    .connected("sip:carol@example.test")
    .forwarded("sip:bob@example.test", ForwardReason::NoAnswer)
    .answered(at(T0 + 8_000))
    .held(Duration::from_micros(12_345_678))
    .end(
        at(T0 + 70_001),
        Disposition::Answered,
        200,
        HangupBy::Callee,
    );
    let unanswered = Cdr::builder(
        "call-2",
        "sip:alice@example.test",
        "sip:dave@example.test",
        at(T0),
    )
    .end(at(T0 + 1_000), Disposition::Busy, 486, HangupBy::Callee);
    let busy_forward = Cdr::builder(
        "call-3",
        "sip:alice@example.test",
        "sip:bob@example.test",
        at(T0),
    )
    .forwarded("sip:bob@example.test", ForwardReason::Busy)
    .end(
        at(T0 + 20_000),
        Disposition::Cancelled,
        487,
        HangupBy::Caller,
    );
    let unconditional = Cdr::builder(
        "call-4",
        "sip:a\"\n\\b@example.test",
        "tel:+15551234",
        at(T0),
    )
    .forwarded("tel:+15551234", ForwardReason::Unconditional)
    .end(at(T0 + 5), Disposition::Failed, 503, HangupBy::Switch);
    let rejected = cdr(5);
    let mut sent = Vec::new();
    for c in [&full, &unanswered, &busy_forward, &unconditional] {
        handle.write(c.clone()).await.unwrap();
        sent.push(c.clone());
    }
    handle.write(rejected.clone()).await.unwrap();
    sent.push(rejected);
    let counters = handle.counters();
    assert_eq!(counters.written.load(Ordering::Relaxed), 5);
    assert_eq!(counters.errors.load(Ordering::Relaxed), 0);
    assert_eq!(
        counters.bytes.load(Ordering::Relaxed),
        fs::metadata(&path).unwrap().len()
    );

    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), sent.len());
    for (line, want) in lines.iter().zip(&sent) {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let keys: BTreeSet<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, FIELDS.iter().copied().collect(), "{line}");
        // In interface.md's order.
        let mut from = 0;
        for field in FIELDS {
            let pos = line[from..].find(&format!("\"{field}\":")).unwrap() + from;
            from = pos;
        }
        let got: Cdr = serde_json::from_str(line).unwrap();
        assert_eq!(&got, want);
    }
    assert_eq!(
        lines[0],
        concat!(
            r#"{"call_id":"a84b4c76e66710@pc33.example.test","icid":"icid-1234","#,
            r#""caller":"sip:alice@example.test","callee":"sip:bob@example.test","#,
            r#""connected":"sip:carol@example.test","forwarded_from":"sip:bob@example.test","#,
            r#""forward_reason":"no_answer","start_time":"2026-12-01T22:13:40.123Z","#,
            r#""answer_time":"2026-12-01T22:13:48.123Z","end_time":"2026-12-01T22:14:50.124Z","#,
            r#""duration_s":70.001,"billable_s":63,"disposition":"answered","sip_status":200,"#,
            r#""hangup_by":"callee","held_s":12.345}"#
        )
    );
    assert_eq!(
        lines[1],
        concat!(
            r#"{"call_id":"call-2","icid":null,"caller":"sip:alice@example.test","#,
            r#""callee":"sip:dave@example.test","connected":null,"forwarded_from":null,"#,
            r#""forward_reason":null,"start_time":"2026-12-01T22:13:40.123Z","answer_time":null,"#,
            r#""end_time":"2026-12-01T22:13:41.123Z","duration_s":1.0,"billable_s":0,"#,
            r#""disposition":"busy","sip_status":486,"hangup_by":"callee","held_s":0.0}"#
        )
    );
    println!("CDR line: {}", lines[0]);
}

#[test]
fn rfc3339_at_known_instants() {
    let cases: [(i64, &str); 9] = [
        (0, "1970-01-01T00:00:00.000Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (1_709_164_800_000 + 45_296_789, "2024-02-29T12:34:56.789Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (-2_203_891_200_000, "1900-03-01T00:00:00.000Z"),
        (T0 as i64, "2026-12-01T22:13:40.123Z"),
        (1_735_689_599_999, "2024-12-31T23:59:59.999Z"),
        (-62_167_219_200_000, "0000-01-01T00:00:00.000Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
    ];
    for (ms, text) in cases {
        let t = Timestamp::from_unix_ms(ms);
        assert_eq!(t.to_string(), text, "{ms}");
        assert_eq!(Timestamp::parse_rfc3339(text), Some(t), "{text}");
        assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{text}\""));
    }
    // From SystemTime: sub-millisecond parts are truncated towards the past.
    let t = |st: SystemTime| Timestamp::from(st).to_string();
    assert_eq!(
        t(UNIX_EPOCH + Duration::from_nanos(1_999_999_999)),
        "1970-01-01T00:00:01.999Z"
    );
    assert_eq!(
        t(UNIX_EPOCH - Duration::from_nanos(1)),
        "1969-12-31T23:59:59.999Z"
    );
    assert_eq!(
        t(UNIX_EPOCH - Duration::from_millis(1)),
        "1969-12-31T23:59:59.999Z"
    );
    assert_eq!(
        t(UNIX_EPOCH - Duration::from_nanos(1_000_001)),
        "1969-12-31T23:59:59.998Z"
    );
    // Clamped to RFC 3339's years.
    assert_eq!(Timestamp::from_unix_ms(i64::MAX), Timestamp::MAX);
    assert_eq!(Timestamp::from_unix_ms(i64::MIN), Timestamp::MIN);
    assert_eq!(
        t(UNIX_EPOCH + Duration::from_secs(400_000_000_000)),
        "9999-12-31T23:59:59.999Z"
    );
    // Only the exact form is accepted.
    for bad in [
        "2023-02-29T00:00:00.000Z",
        "2100-02-29T00:00:00.000Z",
        "2024-04-31T00:00:00.000Z",
        "2024-13-01T00:00:00.000Z",
        "2024-00-01T00:00:00.000Z",
        "2024-01-01T24:00:00.000Z",
        "2024-01-01T23:60:00.000Z",
        "2024-01-01T23:59:60.000Z",
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00.000+00:00",
        "2024-01-01 00:00:00.000Z",
        "+024-01-01T00:00:00.000Z",
        "",
    ] {
        assert_eq!(Timestamp::parse_rfc3339(bad), None, "{bad}");
    }
    assert!(serde_json::from_str::<Timestamp>("\"2024-01-01T00:00:00Z\"").is_err());
}

#[test]
fn durations_and_billable_seconds() {
    let start = at(T0);
    let call = |answer: Option<u64>, end: u64, held_ms: u64| {
        let b = Cdr::builder("c", "a", "b", start).held(Duration::from_millis(held_ms));
        let b = match answer {
            Some(a) => b.answered(at(T0 + a)),
            None => b,
        };
        b.end(at(T0 + end), Disposition::Answered, 200, HangupBy::Caller)
    };
    let c = call(Some(1_000), 3_001, 0);
    assert_eq!((c.duration_s, c.billable_s), (3.001, 3)); // 2.001 s rounds up
    let c = call(Some(1_000), 3_000, 0);
    assert_eq!((c.duration_s, c.billable_s), (3.0, 2)); // exactly 2 s
    let c = call(Some(1_000), 1_000, 0);
    assert_eq!(c.billable_s, 0); // answered and hung up at once
    let c = call(Some(999), 1_000, 0);
    assert_eq!(c.billable_s, 1);
    let c = call(None, 45_678, 1_234);
    assert_eq!((c.duration_s, c.billable_s, c.held_s), (45.678, 0, 1.234));
    // The clock went backwards: never negative.
    let c = Cdr::builder("c", "a", "b", at(T0 + 5_000))
        .answered(at(T0 + 6_000))
        .end(at(T0), Disposition::Answered, 200, HangupBy::Caller);
    assert_eq!((c.duration_s, c.billable_s), (0.0, 0));
    // Sub-millisecond precision never shows: times are truncated first.
    let c = Cdr::builder("c", "a", "b", UNIX_EPOCH + Duration::from_nanos(999_999))
        .answered(UNIX_EPOCH + Duration::from_nanos(1_000_001))
        .end(
            UNIX_EPOCH + Duration::from_nanos(1_001_000_000),
            Disposition::Answered,
            200,
            HangupBy::Caller,
        );
    assert_eq!((c.duration_s, c.billable_s), (1.001, 1));
    assert!(c
        .to_json()
        .contains(r#""duration_s":1.001,"billable_s":1,"#));
}

/// Writes `n` CDRs (numbered from `from`) through a fresh writer and closes it.
fn write_file(path: &Path, from: u64, n: u64) -> Recovered {
    let (h, rec) = open(path);
    for i in from..from + n {
        h.write(cdr(i)).wait().unwrap();
    }
    rec
}

fn torn_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".torn");
    PathBuf::from(name)
}

#[test]
fn torn_tail_at_every_cut_of_the_last_line() {
    let dir = TempDir::new("torn");
    let path = dir.file();
    write_file(&path, 0, 3);
    let whole = fs::read(&path).unwrap();
    let last_start = whole[..whole.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    let torn = torn_path(&path);
    // Every cut that leaves 1 ..= len-1 bytes of the last line (the last: all of its JSON
    // but not its `\n`, which is still torn).
    for cut in last_start + 1..whole.len() {
        fs::write(&path, &whole[..cut]).unwrap();
        let _ = fs::remove_file(&torn);
        let (billing, rec) = open(&path);
        let expect = Recovered {
            records: 2,
            torn_bytes: (cut - last_start) as u64,
            bytes: last_start as u64,
        };
        assert_eq!(rec, expect, "cut at {cut}");
        assert_eq!(
            fs::read(&path).unwrap(),
            &whole[..last_start],
            "cut at {cut}"
        );
        assert_eq!(
            fs::read(&torn).unwrap(),
            &whole[last_start..cut],
            "cut at {cut}"
        );
        // A new CDR after the reopen is a clean line of its own.
        billing.write(cdr(100)).wait().unwrap();
        drop(billing);
        let cdrs = read_cdrs(&path);
        assert_eq!(cdrs, vec![cdr(0), cdr(1), cdr(100)], "cut at {cut}");
    }
    println!(
        "torn tail: {} cuts of a {}-byte line recovered",
        whole.len() - last_start - 1,
        whole.len() - last_start
    );
}

#[test]
fn trailing_lines_that_are_not_json_are_cut_and_torn_bytes_accumulate() {
    let dir = TempDir::new("garbage");
    let path = dir.file();
    write_file(&path, 0, 2);
    let good = fs::read(&path).unwrap();
    // A torn line that happened to end in `\n`, zeros from a lost page, an empty line.
    let garbage = b"{\"call_id\":\"x\",\"cal\n\0\0\0\0\n\n[1,2]\n".to_vec();
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&garbage)
        .unwrap();
    let rec = write_file(&path, 2, 1);
    assert_eq!(rec.records, 2);
    assert_eq!(rec.torn_bytes, garbage.len() as u64);
    assert_eq!(fs::read(torn_path(&path)).unwrap(), garbage);
    assert_eq!(read_cdrs(&path), vec![cdr(0), cdr(1), cdr(2)]);
    // A second torn tail is appended to `.torn`, not written over it.
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"a\":")
        .unwrap();
    let rec = write_file(&path, 3, 0);
    assert_eq!((rec.records, rec.torn_bytes), (3, 5));
    let mut both = garbage.clone();
    both.extend_from_slice(b"{\"a\":");
    assert_eq!(fs::read(torn_path(&path)).unwrap(), both);
    // A clean file is left alone.
    let before = fs::read(&path).unwrap();
    let rec = write_file(&path, 3, 0);
    assert_eq!((rec.records, rec.torn_bytes), (3, 0));
    assert_eq!(fs::read(&path).unwrap(), before);
    assert!(before.starts_with(&good));
}

#[actix_rt::test]
async fn group_commit_batches_concurrent_cdrs() {
    const N: u64 = 10_000;
    let dir = TempDir::new("group");
    let (handle, _) = open(&dir.file());
    let counters = handle.counters();

    // 10,000 CDRs submitted at once, each awaited by its own task (a call controller per
    // call).
    let start = Instant::now();
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let h = handle.clone();
            actix_rt::spawn(async move { h.write(cdr(i)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let elapsed = start.elapsed();
    let batches = counters.batches.load(Ordering::Relaxed);
    assert_eq!(counters.written.load(Ordering::Relaxed), N);
    assert!(batches < N / 10, "{batches} fsyncs for {N} CDRs");
    println!(
        "billing group commit (fdatasync on), {N} CDRs at once: {batches} fsyncs, {:.0} CDRs/s",
        N as f64 / elapsed.as_secs_f64()
    );

    // 200 tasks, each write-await in a loop: calls ending steadily under load.
    let before = counters.batches.load(Ordering::Relaxed);
    let start = Instant::now();
    let tasks: Vec<_> = (0..200u64)
        .map(|t| {
            let h = handle.clone();
            actix_rt::spawn(async move {
                for i in 0..N / 200 {
                    h.write(cdr(N + t * N + i)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    let batches = counters.batches.load(Ordering::Relaxed) - before;
    assert_eq!(counters.written.load(Ordering::Relaxed), 2 * N);
    assert!(batches < N / 10, "{batches} fsyncs for {N} CDRs");
    println!(
        "billing group commit (fdatasync on), 200 tasks write-await: {N} CDRs in {batches} fsyncs, {:.0} CDRs/s",
        N as f64 / elapsed.as_secs_f64()
    );

    // One at a time: one fdatasync per CDR, the disk's sync rate.
    let before = counters.batches.load(Ordering::Relaxed);
    let start = Instant::now();
    for i in 0..200 {
        handle.write(cdr(100 * N + i)).await.unwrap();
    }
    let elapsed = start.elapsed();
    assert_eq!(counters.batches.load(Ordering::Relaxed) - before, 200);
    println!(
        "billing (fdatasync on), one write-await at a time: {:.0} CDRs/s ({:.0} µs per fsync)",
        200.0 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / 200.0
    );
    drop(handle);
}

// --- The arbiter is never blocked ------------------------------------------------------

#[derive(Message)]
#[rtype(result = "()")]
struct Ping;

struct Pinger;

impl Actor for Pinger {
    type Context = Context<Self>;
}

impl Handler<Ping> for Pinger {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

/// The control: an actor that writes and syncs inside its handler, as a naive billing
/// actor (or a `SyncArbiter` mistakenly started on the callers' arbiter) would.
struct BlockingWriter(std::fs::File);

impl Actor for BlockingWriter {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct WriteBlocking(Cdr);

impl Handler<WriteBlocking> for BlockingWriter {
    type Result = ();
    fn handle(&mut self, msg: WriteBlocking, _: &mut Context<Self>) {
        let mut line = serde_json::to_vec(&msg.0).unwrap();
        line.push(b'\n');
        self.0.write_all(&line).unwrap();
        self.0.sync_data().unwrap();
    }
}

/// Runs `work` on this arbiter while a task pings a `Pinger` on the same arbiter in a
/// loop; returns how long `work` took and when (since its start) each ping was answered.
async fn pings_during(work: impl Future<Output = ()>) -> (Duration, Vec<Duration>) {
    let pinger = Pinger.start();
    pinger.send(Ping).await.unwrap();
    let stop = Rc::new(Cell::new(false));
    let answered = Rc::new(RefCell::new(Vec::new()));
    let start = Instant::now();
    let pings = {
        let (stop, answered) = (Rc::clone(&stop), Rc::clone(&answered));
        actix_rt::spawn(async move {
            while !stop.get() {
                pinger.send(Ping).await.unwrap();
                answered.borrow_mut().push(start.elapsed());
            }
        })
    };
    work.await;
    let took = start.elapsed();
    stop.set(true);
    pings.await.unwrap();
    let answered = answered.borrow().clone();
    (took, answered)
}

/// Pings answered in the middle half of the work: none if the arbiter was blocked.
fn in_middle(took: Duration, answered: &[Duration]) -> usize {
    answered
        .iter()
        .filter(|&&t| t > took / 4 && t < took * 3 / 4)
        .count()
}

fn longest_gap(took: Duration, answered: &[Duration]) -> Duration {
    let mut last = Duration::ZERO;
    let mut gap = Duration::ZERO;
    for &t in answered.iter().filter(|&&t| t <= took).chain([took].iter()) {
        gap = gap.max(t - last);
        last = t;
    }
    gap
}

/// A CDR whose line is `mib` MiB: serialising, writing and syncing it takes a while.
fn big_cdr(id: &str, mib: usize) -> Cdr {
    let mut c = cdr(0);
    c.call_id = id.into();
    c.caller = "x".repeat(mib << 20);
    c
}

#[actix_rt::test]
async fn writing_never_blocks_the_callers_arbiter() {
    let dir = TempDir::new("arbiter");
    let (billing, _) = open(&dir.file());
    let counters = billing.counters();

    // The writing task and the pinger share this arbiter (one thread); the big CDR's
    // serialisation, write and fdatasync happen on the writer thread.
    let big = big_cdr("big", 16);
    let (took, answered) = pings_during(async {
        billing.write(big).await.unwrap();
    })
    .await;
    assert_eq!(counters.written.load(Ordering::Relaxed), 1);
    let middle = in_middle(took, &answered);
    let gap = longest_gap(took, &answered);
    println!(
        "billing: a 16 MiB CDR took {took:?}; {} pings answered meanwhile ({middle} in its middle half), longest ping gap {gap:?}",
        answered.iter().filter(|&&t| t <= took).count()
    );
    assert!(
        middle > 0,
        "no ping answered while the CDR was written: the arbiter was blocked"
    );

    // The control proves the measurement detects a blocked arbiter: the same work done
    // inside a handler on this arbiter answers no ping in the middle.
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.0.join("blocking.jsonl"))
        .unwrap();
    let blocking = BlockingWriter(file).start();
    let big = big_cdr("big", 16);
    let (took, answered) = pings_during(async {
        blocking.send(WriteBlocking(big)).await.unwrap();
    })
    .await;
    let gap = longest_gap(took, &answered);
    println!(
        "control, writing inside a handler: {took:?}, {} pings in its middle half, longest ping gap {gap:?}",
        in_middle(took, &answered)
    );
    assert_eq!(
        in_middle(took, &answered),
        0,
        "the control did not block: the test proves nothing"
    );
}

// --- kill -9 and write errors in a child process ----------------------------------------

const CHILD_DIR: &str = "SSBILLING_CHILD_DIR";

/// Runs this test binary's test `name` in a child process through `sh -c PREFIX exec …`
/// with the directory in `CHILD_DIR`; returns the child and a receiver of the call_ids it
/// prints as `written ID`, fed by a reader thread.
fn spawn_child(
    name: &str,
    shell_prefix: &str,
    dir: &Path,
) -> (
    std::process::Child,
    mpsc::Receiver<String>,
    std::thread::JoinHandle<()>,
) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{shell_prefix} exec \"$0\" --exact {name} --nocapture --test-threads=1"
        ))
        .arg(std::env::current_exe().unwrap())
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // The harness's "test NAME ... " may precede the first line.
            if let Some(at) = line.find("written ") {
                if tx.send(line[at + 8..].to_string()).is_err() {
                    break;
                }
            }
        }
    });
    (child, rx, reader)
}

/// Every remaining line until EOF or `deadline`.
fn rest(
    rx: mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
    deadline: Instant,
    into: &mut Vec<String>,
) {
    while let Ok(id) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        into.push(id);
    }
    drop(rx);
    let _ = reader.join();
}

fn say(id: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "written {id}").unwrap();
    out.flush().unwrap();
}

/// Child mode of `kill_9_keeps_every_written_cdr`: does nothing unless the parent set
/// the environment variable. 64 tasks (calls ending concurrently) each write a CDR, await
/// it and print its call_id, in a loop; stops by itself after 5 s in case the parent is
/// gone.
#[actix_rt::test]
async fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let (handle, _) = open(&Path::new(&dir).join("cdr.jsonl"));
    let start = Instant::now();
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let h = handle.clone();
            actix_rt::spawn(async move {
                let mut i = 0u64;
                while start.elapsed() < Duration::from_secs(5) {
                    let mut c = cdr(i);
                    c.call_id = format!("crash-{t}-{i}");
                    h.write(c.clone()).await.unwrap();
                    say(&c.call_id);
                    i += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[test]
fn kill_9_keeps_every_written_cdr() {
    let dir = TempDir::new("kill9");
    let path = dir.0.join("cdr.jsonl");
    let (mut child, rx, reader) = spawn_child("crash_child", "", &dir.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut written = Vec::new();
    // Let it run until it has written 20,000 CDRs (or ~1.5 s of work), then SIGKILL it
    // mid-stream.
    let work = Instant::now() + Duration::from_millis(1500);
    while written.len() < 20_000 && Instant::now() < work {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(id) => written.push(id),
            Err(_) => break,
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Lines printed before the kill were written too.
    rest(rx, reader, deadline, &mut written);
    assert!(
        written.len() >= 100,
        "the child wrote only {}",
        written.len()
    );

    // Before recovery: whole lines, then at most one torn line at the end.
    let raw = fs::read(&path).unwrap();
    let whole = raw.iter().rposition(|&b| b == b'\n').map_or(0, |at| at + 1);
    for line in raw[..whole].split_inclusive(|&b| b == b'\n') {
        serde_json::from_slice::<Cdr>(line).expect("a whole line before the tail");
    }
    let (billing, rec) = open(&path);
    drop(billing);
    assert_eq!(rec.torn_bytes, (raw.len() - whole) as u64);
    let cdrs = read_cdrs(&path);
    assert_eq!(rec.records, cdrs.len() as u64);
    let mut ids = HashSet::new();
    for c in &cdrs {
        assert!(ids.insert(c.call_id.as_str()), "{} twice", c.call_id);
    }
    for id in &written {
        assert!(ids.contains(id.as_str()), "written {id} lost");
    }
    println!(
        "kill -9: {} CDRs answered, {} in the file after recovery, {} torn bytes",
        written.len(),
        cdrs.len(),
        rec.torn_bytes
    );
}

/// The soft RLIMIT_FSIZE of this process, in bytes.
fn file_size_limit() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max file size"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Child mode of `write_errors_are_retried_until_stored_and_nothing_is_lost`: runs
/// under a soft file size limit with SIGXFSZ ignored, so writes past it fail with EFBIG
/// (as on a full disk), until it lifts its own limit with `prlimit(1)`.
#[test]
fn io_error_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let limit = file_size_limit().expect("a file size limit");
    let path = PathBuf::from(dir).join("cdr.jsonl");
    let (h, _) = open(&path);
    let counters = h.counters();
    let len = || fs::metadata(&path).unwrap().len();
    let padded = |id: &str, pad: usize| {
        let mut c = cdr(0);
        c.call_id = id.into();
        c.caller = "x".repeat(pad);
        c
    };
    // Each ack awaited on a thread of its own, so this one can watch the counters.
    let ack_of = |c: Cdr| {
        let ack = h.write(c);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(ack.wait());
        });
        rx
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    let held = loop {
        let id = format!("big-{i}");
        let ack = ack_of(padded(&id, 1000));
        let stored = loop {
            match ack.recv_timeout(Duration::from_millis(5)) {
                Ok(r) => break Some(r),
                Err(_) if counters.failing.load(Ordering::Relaxed) => break None,
                Err(_) => assert!(Instant::now() < deadline, "no answer, no failure"),
            }
        };
        match stored {
            Some(r) => {
                r.unwrap();
                say(&id);
            }
            None => break (id, ack),
        }
        i += 1;
        assert!(i < 1000, "the limit never hit");
    };
    // The failed CDR is held, not answered; the file was cut back to its last good line.
    assert!(counters.failed_batches.load(Ordering::Relaxed) >= 1);
    assert_eq!(counters.errors.load(Ordering::Relaxed), 0);
    assert_eq!(len(), counters.bytes.load(Ordering::Relaxed));
    assert!(len() <= limit);
    // A CDR that comes while failing queues behind it, in order; still nothing answered.
    let behind = ack_of(padded("behind", 0));
    while counters.pending.load(Ordering::Relaxed) < 2
        || counters.failed_batches.load(Ordering::Relaxed) < 2
    {
        assert!(Instant::now() < deadline, "the retry never came");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        held.1.try_recv().is_err() && behind.try_recv().is_err(),
        "answered unwritten"
    );
    assert!(counters.failing.load(Ordering::Relaxed));
    assert!(
        counters
            .last_error()
            .is_some_and(|e| e.contains("large") || e.contains("27")),
        "{:?}",
        counters.last_error()
    );
    // The disk has room again: the retry stores both, in order, and answers them.
    let lifted = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg("--fsize=unlimited:")
        .status()
        .expect("prlimit(1) (util-linux) must be installed");
    assert!(lifted.success(), "prlimit failed: {lifted:?}");
    held.1
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .unwrap();
    say(&held.0);
    behind
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .unwrap();
    say("behind");
    assert!(!counters.failing.load(Ordering::Relaxed));
    assert_eq!(counters.pending.load(Ordering::Relaxed), 0);
    assert_eq!(counters.written.load(Ordering::Relaxed), i + 2);
    assert_eq!(len(), counters.bytes.load(Ordering::Relaxed));
    say("done");
}

#[test]
fn write_errors_are_retried_until_stored_and_nothing_is_lost() {
    let dir = TempDir::new("efbig");
    // 64 blocks (soft limit only, so the child can lift it): 32 KiB or 64 KiB depending
    // on the shell's block size; the child reads it.
    let (mut child, rx, reader) =
        spawn_child("io_error_child", "trap '' XFSZ; ulimit -S -f 64;", &dir.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut written = Vec::new();
    rest(rx, reader, deadline, &mut written);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "child failed: {status:?}, wrote {written:?}"
    );
    assert_eq!(written.pop().as_deref(), Some("done"));
    assert!(written.len() > 10);

    let path = dir.0.join("cdr.jsonl");
    let (billing, rec) = open(&path);
    drop(billing);
    assert_eq!(rec.torn_bytes, 0);
    let ids: Vec<String> = read_cdrs(&path).into_iter().map(|c| c.call_id).collect();
    assert_eq!(
        ids, written,
        "exactly the CDRs answered Ok, each once, in order"
    );
}

/// One writer per file: a second open of a CDR file in use is refused with an error
/// (`ResourceBusy`) and leaves the file alone; once the first writer is gone it opens.
#[test]
fn a_cdr_file_in_use_is_locked() {
    let dir = TempDir::new("lock");
    let path = dir.file();
    let (first, _) = open(&path);
    first.write(cdr(1)).wait().unwrap();
    let before = fs::read(&path).unwrap();
    let err = BillingHandle::open(&path)
        .err()
        .expect("a second writer refused");
    assert_eq!(err.kind(), std::io::ErrorKind::ResourceBusy, "{err}");
    assert!(err.to_string().contains("another process"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), before);
    drop(first);
    let (again, rec) = open(&path);
    assert_eq!(rec.records, 1);
    drop(again);
}

#[test]
fn a_file_that_is_not_ours_is_refused_untouched() {
    let dir = TempDir::new("foreign");
    let path = dir.file();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let limit = softswitch_actors::billing::MAX_TORN_BYTES as usize;
    let mib_line = {
        let mut l = vec![b'x'; (1 << 20) - 1];
        l.push(b'\n');
        l
    };
    // More bad bytes at the end than a torn write can leave: without a newline, and as
    // lines that are not JSON.
    for body in [vec![b'x'; limit + 1], mib_line.repeat(limit >> 20 | 1)] {
        fs::write(&path, &body).unwrap();
        let err = BillingHandle::open(&path).err().expect("refused");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        assert_eq!(fs::metadata(&path).unwrap().len(), body.len() as u64);
        assert!(!torn_path(&path).exists());
    }
    // Just under the limit is cut, even when the good line before it starts outside the
    // last MAX_TORN_BYTES of the file.
    let good = format!("{}\n", cdr(0).to_json()).into_bytes();
    let mut body = good.clone();
    let bad = limit - 100;
    body.extend(mib_line.repeat(bad >> 20));
    body.extend(vec![b'y'; bad % (1 << 20) - 1]);
    body.push(b'\n');
    assert!(body.len() - limit < good.len());
    fs::write(&path, &body).unwrap();
    let (billing, rec) = open(&path);
    drop(billing);
    assert_eq!((rec.records, rec.torn_bytes), (1, bad as u64));
    assert_eq!(read_cdrs(&path), vec![cdr(0)]);
    assert_eq!(fs::metadata(torn_path(&path)).unwrap().len(), bad as u64);
}
