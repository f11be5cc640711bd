//! The journal's durability contract, tested through its public API against real files:
//! round trips, torn and corrupt tails, compaction at open and while running, group
//! commit, and a `kill -9` of a child process mid-stream.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::hash::BuildHasher;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use softswitch_actors::journal::{Journal, JournalConfig, JournalError, Recovered, Tail, MAGIC};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let suffix = std::collections::hash_map::RandomState::new().hash_one(0u8);
        let dir = std::env::temp_dir().join(format!("ssjournal-{name}-{suffix:016x}"));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("sub").join("registrar.journal")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn open(path: &Path) -> (Journal, Recovered) {
    Journal::open(JournalConfig::new(path)).expect("open journal")
}

fn as_map(r: &Recovered) -> BTreeMap<String, Vec<u8>> {
    r.entries.iter().cloned().collect()
}

fn len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

#[tokio::test(flavor = "current_thread")]
async fn round_trip_last_write_wins_and_deletes_stay_deleted() {
    let dir = TempDir::new("roundtrip");
    let path = dir.file();
    {
        let (j, rec) = open(&path);
        assert!(rec.entries.is_empty());
        assert_eq!(rec.tail, Tail::Clean);
        j.put("sip:alice@x".into(), b"v1".to_vec()).await.unwrap();
        j.put("sip:bob@x".into(), b"b".to_vec()).await.unwrap();
        j.put("sip:alice@x".into(), b"v2".to_vec()).await.unwrap();
        j.put("sip:carol@x".into(), vec![0, 1, 2, 255])
            .await
            .unwrap();
        j.delete("sip:bob@x".into()).await.unwrap();
        j.put("sip:empty@x".into(), Vec::new()).await.unwrap();
        let s = j.stats();
        assert_eq!(s.live_keys, 3);
        assert_eq!(s.records, 6);
        assert_eq!(s.bytes_on_disk, len(&path));
    }
    let (j, rec) = open(&path);
    assert_eq!(rec.records_read, 6);
    assert_eq!(rec.torn_bytes, 0);
    assert!(
        rec.compacted,
        "superseded and deleted records are dropped at open"
    );
    let want: BTreeMap<String, Vec<u8>> = [
        ("sip:alice@x".to_string(), b"v2".to_vec()),
        ("sip:carol@x".to_string(), vec![0, 1, 2, 255]),
        ("sip:empty@x".to_string(), Vec::new()),
    ]
    .into_iter()
    .collect();
    assert_eq!(as_map(&rec), want);
    let keys: Vec<&str> = rec.entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["sip:alice@x", "sip:carol@x", "sip:empty@x"]);
    // Deleted stays deleted across a second reopen too, and the handle still works.
    j.delete("sip:alice@x".into()).await.unwrap();
    drop(j);
    let (_j, rec) = open(&path);
    assert!(!as_map(&rec).contains_key("sip:alice@x"));
    assert!(!as_map(&rec).contains_key("sip:bob@x"));
    assert_eq!(rec.entries.len(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn dropped_acks_are_still_written_and_drop_drains() {
    let dir = TempDir::new("drain");
    let path = dir.file();
    {
        let (j, _) = open(&path);
        let clone = j.clone();
        for i in 0..500 {
            drop(clone.put(format!("k{i}"), vec![i as u8; 10]));
        }
        drop(clone);
    }
    let (_j, rec) = open(&path);
    assert_eq!(rec.entries.len(), 500);
    assert_eq!(as_map(&rec)["k499"], vec![499u32 as u8; 10]);
}

#[tokio::test(flavor = "current_thread")]
async fn too_large_is_refused_without_queueing() {
    let dir = TempDir::new("large");
    let (j, _) = open(&dir.file());
    let key = "k".repeat(70_000);
    assert!(j.put(key.clone(), Vec::new()).await.is_err());
    assert!(j.delete(key).await.is_err());
    assert!(j.put("v".into(), vec![0; 17 << 20]).await.is_err());
    j.put("ok".into(), vec![0; 1 << 20]).await.unwrap();
    assert_eq!(j.stats().records, 1);
    // A batch stops taking records at about 8 MiB: three 5 MiB puts need two batches.
    let before = j.stats().batches;
    let acks: Vec<_> = (0..3)
        .map(|i| j.put(format!("big{i}"), vec![i; 5 << 20]))
        .collect();
    for a in acks {
        a.await.unwrap();
    }
    assert!(j.stats().batches - before >= 2);
}

/// Writes `n` records, one per batch, and returns the file offset after each one.
async fn write_records(path: &Path, n: usize) -> Vec<u64> {
    let (j, _) = open(path);
    let mut ends = vec![len(path)];
    for i in 0..n {
        j.put(
            format!("key-{i}"),
            format!("value-{i}-{}", "x".repeat(i)).into_bytes(),
        )
        .await
        .unwrap();
        ends.push(j.stats().bytes_on_disk);
    }
    ends
}

#[tokio::test(flavor = "current_thread")]
async fn torn_tail_at_every_cut_of_the_last_record() {
    const N: usize = 5;
    let dir = TempDir::new("torn");
    let path = dir.file();
    let ends = write_records(&path, N).await;
    let pristine = fs::read(&path).unwrap();
    assert_eq!(pristine.len() as u64, ends[N]);
    let last_start = ends[N - 1];
    for cut in last_start + 1..ends[N] {
        fs::write(&path, &pristine[..cut as usize]).unwrap();
        {
            let (j, rec) = open(&path);
            assert_eq!(rec.records_read, (N - 1) as u64, "cut at {cut}");
            assert_eq!(rec.torn_bytes, cut - last_start, "cut at {cut}");
            assert_eq!(rec.tail, Tail::Short { at: last_start });
            assert_eq!(rec.entries.len(), N - 1);
            assert_eq!(len(&path), last_start, "the torn tail is truncated away");
            j.put("after".into(), format!("cut {cut}").into_bytes())
                .await
                .unwrap();
        }
        let (_j, rec) = open(&path);
        assert_eq!(rec.torn_bytes, 0);
        let map = as_map(&rec);
        assert_eq!(map.len(), N);
        assert_eq!(map["after"], format!("cut {cut}").into_bytes());
        assert_eq!(map["key-0"], b"value-0-".to_vec());
        assert!(!map.contains_key(&format!("key-{}", N - 1)));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn corrupt_crc_in_the_middle_stops_recovery_there() {
    const N: usize = 6;
    let dir = TempDir::new("crc");
    let path = dir.file();
    let ends = write_records(&path, N).await;
    // Flip one bit in the value of record 3.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let at = ends[3] + 8 + 3 + 5;
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, at).unwrap();
    f.write_all_at(&[byte[0] ^ 0x10], at).unwrap();
    drop(f);
    let (_j, rec) = open(&path);
    assert_eq!(rec.records_read, 3);
    assert_eq!(rec.tail, Tail::BadCrc { at: ends[3] });
    assert_eq!(rec.torn_bytes, ends[N] - ends[3]);
    assert_eq!(rec.entries.len(), 3);
    let torn = fs::read(format!("{}.torn", path.display())).unwrap();
    assert_eq!(
        torn.len() as u64,
        ends[N] - ends[3],
        "the cut bytes are kept aside"
    );

    // An impossible length is a corrupt tail too.
    drop(_j);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&u32::MAX.to_le_bytes(), ends[1]).unwrap();
    drop(f);
    let (_j, rec) = open(&path);
    assert_eq!(rec.tail, Tail::BadLength { at: ends[1] });
    assert_eq!(rec.entries.len(), 1);
}

#[test]
fn bad_magic_is_refused_and_the_file_untouched() {
    let dir = TempDir::new("magic");
    let path = dir.file();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let foreign = b"SQLite format 3\0 and more bytes".to_vec();
    fs::write(&path, &foreign).unwrap();
    let err = Journal::open(JournalConfig::new(&path))
        .err()
        .expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(fs::read(&path).unwrap(), foreign);
    // A future version is refused too.
    fs::write(&path, b"SSJRNL02").unwrap();
    assert!(Journal::open(JournalConfig::new(&path)).is_err());
    // An empty file (created, never written) becomes a journal.
    fs::write(&path, b"").unwrap();
    let (_j, rec) = open(&path);
    assert!(rec.entries.is_empty());
    drop(_j);
    assert_eq!(fs::read(&path).unwrap(), MAGIC.to_vec());
}

#[tokio::test(flavor = "current_thread")]
async fn compaction_at_open_keeps_only_the_live_set() {
    let dir = TempDir::new("compact-open");
    let path = dir.file();
    {
        let (j, _) = open(&path);
        let mut acks = Vec::new();
        for round in 0..20 {
            for k in 0..50 {
                acks.push(j.put(format!("aor-{k}"), format!("r{round}").into_bytes()));
            }
        }
        for k in 0..10 {
            acks.push(j.delete(format!("aor-{k}")));
        }
        for a in acks {
            a.await.unwrap();
        }
        assert_eq!(j.stats().live_keys, 40);
    }
    let before = len(&path);
    let (j, rec) = open(&path);
    assert!(rec.compacted);
    assert_eq!(rec.entries.len(), 40);
    assert!(rec.entries.iter().all(|(_, v)| v == b"r19"));
    let live: u64 = rec
        .entries
        .iter()
        .map(|(k, v)| 11 + (k.len() + v.len()) as u64)
        .sum();
    assert_eq!(len(&path), 8 + live);
    assert!(len(&path) * 10 < before);
    assert_eq!(j.stats().compactions, 1);
    assert!(!Path::new(&format!("{}.compact", path.display())).exists());
    drop(j);
    // A clean, compact file is not rewritten again.
    let (j, rec) = open(&path);
    assert!(!rec.compacted);
    assert_eq!(j.stats().compactions, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn an_unfinished_compaction_is_discarded_at_open() {
    let dir = TempDir::new("stale-compact");
    let path = dir.file();
    write_records(&path, 3).await;
    let stale = PathBuf::from(format!("{}.compact", path.display()));
    // A crash mid-compaction leaves a partial new file beside the complete old one.
    fs::write(&stale, b"SSJRNL01\x05\x00\x00").unwrap();
    let (_j, rec) = open(&path);
    assert_eq!(rec.entries.len(), 3);
    assert_eq!(rec.torn_bytes, 0);
    assert!(!stale.exists());
}

#[tokio::test(flavor = "current_thread")]
async fn compaction_while_running_loses_nothing_acked() {
    let dir = TempDir::new("compact-run");
    let path = dir.file();
    let config = JournalConfig {
        compact_min_bytes: 4096,
        compact_ratio: 2,
        max_batch: 16,
        ..JournalConfig::new(&path)
    };
    let mut want = BTreeMap::new();
    {
        let (j, _) = Journal::open(config.clone()).unwrap();
        // Many small batches of overwrites: the file passes the thresholds again and again,
        // and puts keep arriving while each compaction runs.
        for round in 0..200u32 {
            let mut acks = Vec::new();
            for k in 0..32u32 {
                let key = format!("sip:user{k}@example.com");
                if (round + k) % 7 == 0 {
                    acks.push(j.delete(key.clone()));
                    want.remove(&key);
                } else {
                    let value = format!("{round}:{k}").into_bytes();
                    acks.push(j.put(key.clone(), value.clone()));
                    want.insert(key, value);
                }
            }
            if round == 100 {
                acks.push(j.compact());
            }
            for a in acks {
                a.await.unwrap();
            }
            assert!(j.stats().bytes_on_disk <= len(&path));
        }
        let s = j.stats();
        assert!(s.compactions >= 5, "{s:?}");
        assert_eq!(s.errors, 0, "{s:?}");
        assert_eq!(s.live_keys, want.len() as u64);
        assert!(s.bytes_on_disk < 4096 * 4, "{s:?}");
    }
    let (_j, rec) = Journal::open(config).unwrap();
    assert_eq!(rec.torn_bytes, 0);
    assert_eq!(as_map(&rec), want);
}

#[tokio::test(flavor = "current_thread")]
async fn group_commit_batches_concurrent_puts() {
    const N: usize = 10_000;
    let dir = TempDir::new("group");
    let path = dir.file();
    let (j, _) = open(&path);
    let value = vec![7u8; 200];

    // 10,000 puts queued at once, then awaited.
    let start = Instant::now();
    let acks: Vec<_> = (0..N)
        .map(|i| j.put(format!("sip:user{i}@example.com"), value.clone()))
        .collect();
    for a in acks {
        a.await.unwrap();
    }
    let elapsed = start.elapsed();
    let s = j.stats();
    assert_eq!(s.records, N as u64);
    assert!(s.batches < (N / 10) as u64, "{s:?}");
    println!(
        "journal group commit (sync on), all queued at once: {N} records in {} batches, {:.0} records/s",
        s.batches,
        N as f64 / elapsed.as_secs_f64()
    );

    // 200 concurrent tasks, each put-await in a loop: what a registrar under load does.
    let tasks = 200;
    let before = j.stats();
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let j = j.clone();
        let value = value.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..N / tasks {
                j.put(
                    format!("sip:user{}@example.com", t * 1000 + i),
                    value.clone(),
                )
                .await
                .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let elapsed = start.elapsed();
    let s = j.stats();
    let batches = s.batches - before.batches;
    assert_eq!(s.records - before.records, N as u64);
    assert!(batches < (N / 10) as u64, "{s:?}");
    println!(
        "journal group commit (sync on), {tasks} tasks put-await: {N} records in {batches} batches, {:.0} records/s",
        N as f64 / elapsed.as_secs_f64()
    );

    // One put-await at a time: one batch, one fdatasync per record (the disk's sync rate).
    let before = j.stats();
    let start = Instant::now();
    for i in 0..200 {
        j.put(format!("seq{i}"), value.clone()).await.unwrap();
    }
    let elapsed = start.elapsed();
    assert_eq!(j.stats().batches - before.batches, 200);
    println!(
        "journal (sync on), one put-await at a time: {:.0} records/s ({:.0} µs per batch)",
        200.0 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / 200.0
    );
}

const CHILD_DIR: &str = "SSJOURNAL_CRASH_CHILD_DIR";

/// The crash child's journal: small compaction thresholds, so kills land around
/// compactions too.
fn crash_config(dir: &Path) -> JournalConfig {
    JournalConfig {
        compact_min_bytes: 32 << 10,
        compact_ratio: 2,
        ..JournalConfig::new(dir.join("j"))
    }
}

/// Child mode of `kill_9_keeps_every_acked_record`: does nothing unless the parent set
/// the environment variable. Puts sequence number `n` under key `key-{n % 300}`, 32 at a
/// time, and prints `acked KEY N` once its Ack resolved; stops by itself after 5 s in
/// case the parent is gone.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let (j, _) = Journal::open(crash_config(Path::new(&dir))).unwrap();
    let start = Instant::now();
    let stdout = std::io::stdout();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(5) {
        let acks: Vec<_> = (n..n + 32)
            .map(|n| {
                let key = format!("key-{}", n % 300);
                let ack = j.put(key.clone(), n.to_string().into_bytes());
                (key, n, ack)
            })
            .collect();
        n += 32;
        for (key, n, ack) in acks {
            ack.wait().unwrap();
            let mut out = stdout.lock();
            writeln!(out, "acked {key} {n}").unwrap();
            out.flush().unwrap();
        }
    }
}

/// The keys a child printed as `acked KEY`, fed by a reader thread; `None` at EOF.
struct ChildLines {
    rx: mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
}

/// Runs this test binary's test `name` in a child process through `sh -c PREFIX exec …`
/// with the journal directory in `CHILD_DIR`.
fn spawn_child(name: &str, shell_prefix: &str, dir: &Path) -> (std::process::Child, ChildLines) {
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
            if let Some(at) = line.find("acked ") {
                if tx.send(line[at + 6..].to_string()).is_err() {
                    break;
                }
            }
        }
    });
    (child, ChildLines { rx, reader })
}

impl ChildLines {
    /// Every remaining line until EOF or `deadline`.
    fn rest(self, deadline: Instant, into: &mut Vec<String>) {
        while let Ok(key) = self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            into.push(key);
        }
        drop(self.rx);
        let _ = self.reader.join();
    }
}

#[test]
fn kill_9_keeps_every_acked_record() {
    let dir = TempDir::new("kill9");
    let (mut child, lines) = spawn_child("crash_child", "", &dir.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut acked = Vec::new();
    // Let it run until it has acked 20,000 records (or ~2 s of work), then SIGKILL it
    // mid-stream.
    let work = Instant::now() + Duration::from_secs(2);
    while acked.len() < 20_000 && Instant::now() < work {
        match lines
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(key) => acked.push(key),
            Err(_) => break,
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Lines printed before the kill are acked too.
    lines.rest(deadline, &mut acked);
    assert!(acked.len() >= 100, "the child acked only {}", acked.len());

    // Every key holds its last acked value or a later (written, not yet acked) one.
    let mut last_acked: BTreeMap<String, u64> = BTreeMap::new();
    for line in &acked {
        let (key, n) = line.split_once(' ').expect("KEY N");
        let n: u64 = n.parse().unwrap();
        let slot = last_acked.entry(key.to_string()).or_insert(n);
        *slot = (*slot).max(n);
    }
    // Each record is at least 17 bytes: a file under half of that ran compactions.
    let size = len(&dir.0.join("j"));
    assert!(
        size < acked.len() as u64 * 17 / 2,
        "no compaction ran in the child: {size} bytes"
    );
    let (_j, rec) = Journal::open(crash_config(&dir.0)).unwrap();
    let map = as_map(&rec);
    for (key, n) in &last_acked {
        let got: u64 = map
            .get(key)
            .map(|v| String::from_utf8_lossy(v).parse().unwrap())
            .unwrap_or_else(|| panic!("acked {key} lost"));
        assert!(got >= *n, "{key}: acked {n}, recovered {got}");
    }
    println!(
        "kill -9: {} acked, {} keys recovered, {} torn bytes, compacted at open: {}",
        acked.len(),
        map.len(),
        rec.torn_bytes,
        rec.compacted
    );
}

/// The soft RLIMIT_FSIZE of this process, in bytes.
fn file_size_limit() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max file size"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Child mode of `write_errors_roll_back_and_the_next_batch_retries`: runs under a file
/// size limit with SIGXFSZ ignored, so writes past it fail with EFBIG.
#[test]
fn io_error_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let limit = file_size_limit().expect("a file size limit");
    let path = PathBuf::from(dir).join("j");
    let (j, _) = Journal::open(JournalConfig::new(&path)).unwrap();
    let say = |key: &str| println!("acked {key}");
    let mut i = 0;
    let err = loop {
        let key = format!("big-{i}");
        match j.put(key.clone(), vec![b'x'; 1000]).wait() {
            Ok(()) => say(&key),
            Err(e) => break e,
        }
        i += 1;
        assert!(i < 1000, "the limit never hit");
    };
    assert!(matches!(err, JournalError::Io { .. }), "{err:?}");
    let s = j.stats();
    assert_eq!(s.errors, 1);
    assert!(s.last_error.is_some());
    assert_eq!(len(&path), s.bytes_on_disk, "the failed batch was cut off");
    // A smaller record that fits exactly is written at the last good offset.
    let room = limit - s.bytes_on_disk;
    assert!(room > 16, "room {room}");
    j.put("small".into(), vec![b's'; room as usize - 16])
        .wait()
        .unwrap();
    say("small");
    assert_eq!(len(&path), limit);
    assert!(j.put("over".into(), vec![1]).wait().is_err());
    assert_eq!(len(&path), limit);
    assert!(j.delete("big-0".into()).wait().is_err());
    j.flush().wait().unwrap();
    say("done");
}

#[test]
fn write_errors_roll_back_and_the_next_batch_retries() {
    let dir = TempDir::new("efbig");
    // 64 blocks: 32 KiB or 64 KiB depending on the shell's block size; the child reads it.
    let (mut child, lines) = spawn_child("io_error_child", "trap '' XFSZ; ulimit -f 64;", &dir.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut acked = Vec::new();
    lines.rest(deadline, &mut acked);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "child failed: {status:?}, acked {acked:?}"
    );
    assert_eq!(acked.last().map(String::as_str), Some("done"));
    acked.pop();
    assert!(acked.len() > 10);

    let (_j, rec) = Journal::open(JournalConfig::new(dir.0.join("j"))).unwrap();
    assert_eq!(rec.torn_bytes, 0);
    let map = as_map(&rec);
    assert_eq!(map.len(), acked.len(), "only acked records are on disk");
    for key in &acked {
        assert!(map.contains_key(key), "acked {key} lost");
    }
}

/// One writer per journal (invariant 7): a second open while the first runs is refused
/// with an error naming `<path>.lock` and touches nothing, the lock holds across a
/// compaction (which renames a new file over the journal), and once the first writer
/// is gone the journal opens again with everything in it.
#[tokio::test]
async fn a_journal_in_use_is_locked_across_compactions() {
    let dir = TempDir::new("lock");
    let path = dir.file();
    let (j, _) = open(&path);
    j.put("a".into(), b"1".to_vec()).await.unwrap();
    j.put("a".into(), b"2".to_vec()).await.unwrap();
    let refused = |what: &str| {
        let err = Journal::open(JournalConfig::new(&path))
            .err()
            .unwrap_or_else(|| panic!("a second writer opened the journal {what}"));
        assert_eq!(err.kind(), std::io::ErrorKind::ResourceBusy, "{err}");
        assert!(err.to_string().contains("registrar.journal.lock"), "{err}");
    };
    let before = fs::read(&path).unwrap();
    refused("in use");
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "the refused open touched it"
    );
    j.compact().await.unwrap();
    refused("after a compaction");
    drop(j);
    let (_j, rec) = open(&path);
    assert_eq!(as_map(&rec).get("a").map(Vec::as_slice), Some(&b"2"[..]));
}
