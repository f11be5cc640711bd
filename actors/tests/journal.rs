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

use softswitch_actors::journal::{Journal, JournalConfig, Recovered, Tail, MAGIC};

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

/// Child mode of `kill_9_keeps_every_acked_record`: does nothing unless the parent set
/// the environment variable. Puts records 32 at a time and prints each key once its Ack
/// resolved; stops by itself after 5 s in case the parent is gone.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let (j, _) = Journal::open(JournalConfig::new(PathBuf::from(dir).join("j"))).unwrap();
    let start = Instant::now();
    let stdout = std::io::stdout();
    let mut i = 0u64;
    while start.elapsed() < Duration::from_secs(5) {
        let acks: Vec<_> = (0..32)
            .map(|n| {
                let key = format!("key-{}", i + n);
                let ack = j.put(key.clone(), key.clone().into_bytes());
                (key, ack)
            })
            .collect();
        i += 32;
        for (key, ack) in acks {
            ack.wait().unwrap();
            let mut out = stdout.lock();
            writeln!(out, "acked {key}").unwrap();
            out.flush().unwrap();
        }
    }
}

#[test]
fn kill_9_keeps_every_acked_record() {
    let dir = TempDir::new("kill9");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, &dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(key) = line.strip_prefix("acked ") {
                if tx.send(key.to_string()).is_err() {
                    break;
                }
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut acked = Vec::new();
    // Let it run until it has acked 2,000 records (or ~2 s of work), then SIGKILL it
    // mid-stream.
    let work = Instant::now() + Duration::from_secs(2);
    while acked.len() < 2000 && Instant::now() < work {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(key) => acked.push(key),
            Err(_) => break,
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Lines printed before the kill are acked too.
    while let Ok(key) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        acked.push(key);
    }
    reader.join().unwrap();
    assert!(acked.len() >= 100, "the child acked only {}", acked.len());

    let (_j, rec) = Journal::open(JournalConfig::new(dir.0.join("j"))).unwrap();
    let map = as_map(&rec);
    for key in &acked {
        assert_eq!(
            map.get(key),
            Some(&key.clone().into_bytes()),
            "acked {key} lost"
        );
    }
    println!(
        "kill -9: {} acked, {} recovered, {} torn bytes",
        acked.len(),
        map.len(),
        rec.torn_bytes
    );
}
