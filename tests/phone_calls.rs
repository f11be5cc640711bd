//! Real phones calling through the switch: two baresip 1.0.0 (Debian `baresip-core`)
//! register as alice and bob, alice calls bob, bob answers, they talk for two seconds,
//! alice hangs up; and bob rejecting a call with 486. Both phones' events and the
//! switch's CDRs are checked. baresip missing is a failure, never a skip
//! (`scripts/test-all.sh` installs it).
//!
//! Media is proven, not assumed. RTP goes phone to phone (the B2BUA relays the SDP byte
//! for byte and does not anchor media), and each phone sends a 440 Hz `ausine` tone as
//! PCMU in 20 ms packets. The test waits for `CALL_RTPESTAB` on both phones (the first
//! RTP packet arrived), holds the call for [`TALK`], and then asks each phone for
//! `audio_debug`, which prints the counters of its own RTP/RTCP session. For each
//! direction it asserts that the receiver counted at least [`MIN_PACKETS`] RTP packets
//! (about one second) and decoded at least [`MIN_RX_SECONDS`] of audio, from the
//! sender's SSRC, coming from the sender's own RTP socket (not from the switch), and
//! that the address each phone sends to is the other phone's socket (i.e. the relayed
//! SDP was right). The figures are printed (`--nocapture` shows them).

mod common;

use common::baresip::{AudioStats, Baresip, BaresipOptions};
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);
/// How long the phones talk (a deliberate hold, not a synchronisation).
const TALK: Duration = Duration::from_secs(2);
/// RTP packets each direction must have delivered after [`TALK`]: 50 x 20 ms = 1 s,
/// half of what two seconds should bring, so a slow start cannot make it flaky.
const MIN_PACKETS: u64 = 50;
/// Seconds of received audio each receiver must have decoded (its `rx: time` figure,
/// which trails the packet count by the jitter buffer's ~100 ms).
const MIN_RX_SECONDS: f64 = 1.0;

fn start_switch() -> Switch {
    let dir = temp_dir("phones");
    let cfg = phone_config(
        &dir,
        r#"["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]"#,
        "",
        "[[users]]\nuser = \"alice\"\npassword = \"alicepw\"\n\n[[users]]\nuser = \"bob\"\npassword = \"bobpw\"",
    );
    Switch::start_with_args(&["--config", &cfg], &[], dir)
}

fn phone(sw: &Switch, user: &str, pw: &str) -> (Baresip, String) {
    let port = sw.udp_addr().port();
    let aor = format!("sip:{user}@127.0.0.1:{port}");
    let account = format!("<{aor};transport=udp>;auth_pass={pw};answermode=manual;regint=600");
    let mut p = Baresip::start(&BaresipOptions::account(&account));
    p.wait_registered(&aor, DEADLINE)
        .unwrap_or_else(|| panic!("{user} did not register\n{}", p.diagnostics()));
    (p, aor)
}

fn cdrs(sw: &Switch) -> Vec<Value> {
    std::fs::read_to_string(sw.dir.join("cdr.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("CDR line is JSON"))
        .collect()
}

fn wait_cdr(sw: &Switch) -> Value {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(c) = cdrs(sw).pop() {
            return c;
        }
        assert!(Instant::now() < end, "no CDR written");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_baresips_call_talk_two_seconds_and_hang_up() {
    let sw = start_switch();
    let (mut alice, _) = phone(&sw, "alice", "alicepw");
    let (mut bob, _) = phone(&sw, "bob", "bobpw");
    let port = sw.udp_addr().port();
    alice
        .dial(&format!("sip:bob@127.0.0.1:{port}"))
        .expect("dial");
    bob.wait_event_type("CALL_INCOMING", DEADLINE)
        .unwrap_or_else(|| panic!("bob never rang\n{}", bob.diagnostics()));
    bob.accept().expect("accept");
    let est_a = alice.wait_event_type("CALL_ESTABLISHED", DEADLINE);
    let est_b = bob.wait_event_type("CALL_ESTABLISHED", DEADLINE);
    assert!(
        est_a.is_some() && est_b.is_some(),
        "not established\nalice:\n{}\nbob:\n{}",
        alice.diagnostics(),
        bob.diagnostics()
    );
    // Both phones have received their first RTP packet.
    for (name, p) in [("alice", &mut alice), ("bob", &mut bob)] {
        p.wait_event_type("CALL_RTPESTAB", DEADLINE)
            .unwrap_or_else(|| panic!("{name} never received RTP\n{}", p.diagnostics()));
    }
    // Two seconds of conversation (time passing is the point here, not a sync).
    let talk_start = Instant::now();
    std::thread::sleep(TALK);
    let a = alice.audio_stats().expect("alice audio_debug");
    let b = bob.audio_stats().expect("bob audio_debug");
    let held = talk_start.elapsed();
    alice.hangup().expect("hangup");
    bob.wait_event_type("CALL_CLOSED", DEADLINE)
        .unwrap_or_else(|| panic!("bob's call never closed\n{}", bob.diagnostics()));
    alice
        .wait_event_type("CALL_CLOSED", DEADLINE)
        .unwrap_or_else(|| panic!("alice's call never closed\n{}", alice.diagnostics()));
    let c = wait_cdr(&sw);
    assert_eq!(c["disposition"], "answered", "{c}");
    assert_eq!(c["caller"], "sip:alice@127.0.0.1", "{c}");
    assert_eq!(c["callee"], "sip:bob@127.0.0.1", "{c}");
    assert_eq!(c["hangup_by"], "caller", "{c}");
    assert!(c["billable_s"].as_u64().is_some_and(|s| s >= 2), "{c}");
    println!(
        "call held {:.3} s after RTP started both ways",
        held.as_secs_f64()
    );
    check_direction("bob", &b, &bob, "alice", &a, &alice);
    check_direction("alice", &a, &alice, "bob", &b, &bob);
    let (_, body) = http_get(sw.http, "/metrics");
    assert_eq!(metric_value(&body, "softswitch_calls_active"), Some(0.0));
}

/// Checks that `rx` (phone `rx_name`, stats `rs`) received RTP from `tx` (stats `ts`)
/// directly: from the sender's SSRC, from the sender's own RTP socket, enough of it; and
/// that `tx` sent to `rx`'s socket.
fn check_direction(
    tx_name: &str,
    ts: &AudioStats,
    tx: &Baresip,
    rx_name: &str,
    rs: &AudioStats,
    rx: &Baresip,
) {
    let ctx = || {
        format!(
            "{tx_name} audio_debug:\n{}\n{rx_name} audio_debug:\n{}",
            ts.raw, rs.raw
        )
    };
    // baresip rounds the start of its RTP range down to an even port (RTP even, RTCP odd).
    let range = |p: &Baresip| (p.ports.rtp & !1)..p.ports.rtp + 20;
    let tx_ssrc = ts
        .ssrc
        .unwrap_or_else(|| panic!("no SSRC for {tx_name}\n{}", ctx()));
    let tx_sock = ts
        .local
        .unwrap_or_else(|| panic!("no local RTP socket for {tx_name}\n{}", ctx()));
    let rx_sock = rs
        .local
        .unwrap_or_else(|| panic!("no local RTP socket for {rx_name}\n{}", ctx()));
    let src = rs.source(tx_ssrc).unwrap_or_else(|| {
        panic!(
            "{rx_name} never heard {tx_name}'s SSRC {tx_ssrc:#010x}\n{}",
            ctx()
        )
    });
    println!(
        "RTP {tx_name} -> {rx_name}: {rx_name} received {} packets ({:.3} s of audio, \
         lost {}) from SSRC {tx_ssrc:#010x} at {:?}; {tx_name} sent {:?} packets \
         ({:?} s) to {:?}",
        src.received,
        rs.rx_seconds.unwrap_or(f64::NAN),
        src.lost,
        src.addr,
        ts.tx_packets,
        ts.tx_seconds,
        ts.remote,
    );
    assert!(
        src.received >= MIN_PACKETS,
        "{rx_name} received only {} RTP packets from {tx_name} (want >= {MIN_PACKETS})\n{}",
        src.received,
        ctx()
    );
    assert!(
        rs.rx_seconds.is_some_and(|s| s >= MIN_RX_SECONDS),
        "{rx_name} received {:?} s of audio from {tx_name} (want >= {MIN_RX_SECONDS})\n{}",
        rs.rx_seconds,
        ctx()
    );
    // Phone to phone: the packets came from the sender's RTP socket, in its range.
    let from = src
        .addr
        .unwrap_or_else(|| panic!("no source address for {tx_name}'s RTP\n{}", ctx()));
    assert!(
        from.ip().is_loopback()
            && from.port() == tx_sock.port()
            && range(tx).contains(&from.port()),
        "{rx_name} got {tx_name}'s RTP from {from}, not from {tx_name}'s socket {tx_sock} \
         (range {:?})\n{}",
        range(tx),
        ctx()
    );
    // And the sender aimed at the receiver's socket: the SDP the switch relayed was right.
    let to = ts
        .remote
        .unwrap_or_else(|| panic!("no remote RTP address for {tx_name}\n{}", ctx()));
    assert!(
        to.ip().is_loopback() && to.port() == rx_sock.port() && range(rx).contains(&to.port()),
        "{tx_name} sends RTP to {to}, not to {rx_name}'s socket {rx_sock} (range {:?})\n{}",
        range(rx),
        ctx()
    );
}

/// `audio_debug` as baresip 1.0.0 printed it for alice in a direct call (2.8 s in).
const AUDIO_DEBUG_SAMPLE: &str = "
--- Audio stream ---
 tx:   encode: PCMU 8000Hz/1ch ptime=20ms S16LE
       aubuf: wish_sz=3840 cur_sz=0 filling=0 (cur 0.00ms, max 600.00ms, or 0, ur 0)
       source: ausine,440 S16LE
       time = 2.819 sec
 rx:   decode: PCMU 8000Hz/1ch S16LE
       aubuf: wish_sz=1920 cur_sz=15360 filling=1 (cur 160.00ms, max 160.00ms, or 128, ur 0)
       player: aubridge,nil S16LE
       n_discard:0
       time = 2.700 sec
 audio tx pipeline:      ausine ---> PCMU
 audio rx pipeline:    aubridge <--- PCMU
 audio dir=sendrecv pt_enc=0
 local: 0.0.0.0:41108, remote: 127.0.0.1:42102/127.0.0.1:42103
 mnat: (none) (connected=no)
 menc: (none) (secure=no)
RTP debug:
 Encode: seq=3331 ssrc=0xcde485c2
----- RTCP Session: -----
  cname=sip:alice@127.0.0.1:41000 SSRC=0xcde485c2/3454305730 rx=8000Hz
  member 0x68e9ea43: lost=0 Jitter=0.0ms RTT=0.0ms
                 IP=127.0.0.1:42102 psent=0 rcvd=141
  TX: packets=141, octets=22560
--- jitter buffer debug---
 running=1 min=5 cur=5 max=10 [frames]
 seq_put=12512
";

#[test]
fn audio_debug_text_is_parsed() {
    let st = AudioStats::parse(AUDIO_DEBUG_SAMPLE);
    assert_eq!(st.ssrc, Some(0xcde4_85c2));
    assert_eq!(st.local, Some("0.0.0.0:41108".parse().unwrap()));
    assert_eq!(st.remote, Some("127.0.0.1:42102".parse().unwrap()));
    assert_eq!(st.tx_packets, Some(141));
    assert_eq!(st.tx_seconds, Some(2.819));
    assert_eq!(st.rx_seconds, Some(2.7));
    assert_eq!(st.sources.len(), 1);
    let src = st.source(0x68e9_ea43).expect("member parsed");
    assert_eq!(src.addr, Some("127.0.0.1:42102".parse().unwrap()));
    assert_eq!((src.received, src.lost), (141, 0));
    assert!(st.source(0xcde4_85c2).is_none());
    assert_eq!(AudioStats::parse("").sources, vec![]);
}

#[test]
fn callee_rejects_with_486() {
    let sw = start_switch();
    let (mut alice, _) = phone(&sw, "alice", "alicepw");
    let (mut bob, _) = phone(&sw, "bob", "bobpw");
    let port = sw.udp_addr().port();
    alice
        .dial(&format!("sip:bob@127.0.0.1:{port}"))
        .expect("dial");
    bob.wait_event_type("CALL_INCOMING", DEADLINE)
        .unwrap_or_else(|| panic!("bob never rang\n{}", bob.diagnostics()));
    bob.hangup().expect("reject"); // on a ringing incoming call baresip answers 486
    let closed = alice
        .wait_event_type("CALL_CLOSED", DEADLINE)
        .unwrap_or_else(|| panic!("alice's call never closed\n{}", alice.diagnostics()));
    let why = closed["param"].as_str().unwrap_or_default().to_string();
    assert!(why.contains("486"), "alice's call closed with {closed}");
    let c = wait_cdr(&sw);
    assert_eq!(
        (c["disposition"].as_str(), c["sip_status"].as_u64()),
        (Some("busy"), Some(486)),
        "{c}"
    );
}
