//! Real phones on hold through the switch (F11, F12 of `shared/spec/call-flows.md`):
//! baresip 1.0.0 (Debian `baresip-core`) holds and resumes a call, and a three-phone
//! call-waiting scenario where bob answers carol while holding alice. baresip missing is
//! a failure, never a skip (`scripts/test-all.sh` installs it).
//!
//! The switch relays the hold re-INVITE on the other leg's dialog, body byte for byte
//! (RFC 3261 §14), and tracks who holds (`/api/calls`: `held`, `held_by`) and for how long
//! (CDR `held_s`). Media goes phone to phone, so whether a hold really holds is seen in
//! the phones' own RTP counters (`audio_debug`, parsed by [`AudioStats`]):
//!
//! * baresip's `hold` offers `a=sendonly`; the held phone answers `a=recvonly`, as RFC
//!   3264 §6.1 requires for a sendonly offer. A recvonly party sends no RTP, so the
//!   holder's receive counter must stop. The holder itself *may* send (music on hold)
//!   under RFC 3264, but baresip 1.0.0 sends nothing while holding, so the held phone's
//!   receive counter stops too: both are asserted, and both phones' `audio dir` too.
//! * "Stopped" means: the counter is unchanged across two `audio_debug` reads at least
//!   [`QUIET_WINDOW`] apart, tried until [`RTP_DEADLINE`]. "Flowing" means: it grew by
//!   [`MIN_GROWTH`] packets (0.5 s of 20 ms packets) before [`RTP_DEADLINE`].
//!
//! Every wait is for an event, a state or a counter, bounded by a deadline; the only
//! timed pause is the quiet window itself, which is what is being measured. The RTP
//! figures are printed (`--nocapture` shows them).

mod common;

use common::baresip::{AudioStats, Baresip, BaresipOptions, ListedCall};
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Signalling deadline: registration, events, the switch's view.
const DEADLINE: Duration = Duration::from_secs(10);
/// How long RTP may take to stop or to grow by [`MIN_GROWTH`].
const RTP_DEADLINE: Duration = Duration::from_secs(10);
/// Two reads this far apart with the same count: the stream has stopped (25 packets of
/// 20 ms would have arrived meanwhile).
const QUIET_WINDOW: Duration = Duration::from_millis(500);
/// Packets a flowing stream must add: 25 x 20 ms = 0.5 s of audio.
const MIN_GROWTH: u64 = 25;
/// The interval between two reads while waiting for growth.
const POLL: Duration = Duration::from_millis(100);

/// The switch with alice, bob (call waiting on: without it a second call to bob in a
/// call is busy, 486) and carol, UDP on an ephemeral loopback port.
fn start_switch() -> Switch {
    let dir = temp_dir("phone-midcall");
    let cfg = phone_config(
        &dir,
        r#"["udp:127.0.0.1:0"]"#,
        "",
        "[[users]]\nuser = \"alice\"\npassword = \"alicepw\"\n\n\
         [[users]]\nuser = \"bob\"\npassword = \"bobpw\"\ncall_waiting = true\n\n\
         [[users]]\nuser = \"carol\"\npassword = \"carolpw\"",
    );
    Switch::start_with_args(&["--config", &cfg], &[], dir)
}

/// A registered baresip for `user`, answering by hand. `call_max_calls 2`: baresip
/// offers a second incoming call to the user (call waiting) only below this limit, and
/// answers 486 by itself at it (its default is 4; two is what these tests use).
fn phone(sw: &Switch, user: &str, pw: &str) -> Baresip {
    let port = sw.udp_addr().port();
    let aor = format!("sip:{user}@127.0.0.1:{port}");
    let account = format!("<{aor};transport=udp>;auth_pass={pw};answermode=manual;regint=600");
    let mut opts = BaresipOptions::account(&account);
    opts.extra_config.push("call_max_calls\t2".to_string());
    let mut p = Baresip::start(&opts);
    p.wait_registered(&aor, DEADLINE)
        .unwrap_or_else(|| panic!("{user} did not register\n{}", p.diagnostics()));
    p
}

fn bob_uri(sw: &Switch) -> String {
    format!("sip:bob@127.0.0.1:{}", sw.udp_addr().port())
}

/// `GET /api/calls`, parsed.
fn api_calls(sw: &Switch) -> Vec<Value> {
    let (status, body) = http_get(sw.http, "/api/calls");
    assert_eq!(status, 200, "GET /api/calls: {body}");
    let v: Value = serde_json::from_str(&body).expect("/api/calls is JSON");
    v.as_array().cloned().unwrap_or_default()
}

/// Waits until the switch lists the call `call_id` (its A-leg Call-ID) and `pred` holds
/// for it; returns it.
fn wait_call(sw: &Switch, call_id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + DEADLINE;
    loop {
        let last = api_calls(sw);
        if let Some(c) = last.iter().find(|c| c["call_id"] == call_id && pred(c)) {
            return c.clone();
        }
        assert!(
            Instant::now() < end,
            "not within {DEADLINE:?}: {what}; /api/calls: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every CDR written so far.
fn cdrs(sw: &Switch) -> Vec<Value> {
    std::fs::read_to_string(sw.dir.join("cdr.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("CDR line is JSON"))
        .collect()
}

/// Waits for the one CDR of `call_id`.
fn wait_cdr(sw: &Switch, call_id: &str) -> Value {
    let end = Instant::now() + DEADLINE;
    loop {
        let mine: Vec<Value> = cdrs(sw)
            .into_iter()
            .filter(|c| c["call_id"] == call_id)
            .collect();
        match mine.as_slice() {
            [c] => return c.clone(),
            [] => assert!(Instant::now() < end, "no CDR for {call_id}: {:?}", cdrs(sw)),
            _ => panic!("more than one CDR for {call_id}: {mine:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `audio_debug` of `p`'s current call.
fn stats(p: &mut Baresip, name: &str) -> AudioStats {
    p.audio_stats()
        .unwrap_or_else(|e| panic!("{name} audio_debug: {e}\n{}", p.diagnostics()))
}

/// The SSRC `p` sends with on its current call.
fn ssrc_of(p: &mut Baresip, name: &str) -> u32 {
    let st = stats(p, name);
    st.ssrc
        .unwrap_or_else(|| panic!("no SSRC in {name}'s audio_debug:\n{}", st.raw))
}

/// Waits until `rx` (its current call) has received at least [`MIN_GROWTH`] more RTP
/// packets from `ssrc` than `from`; returns the count.
fn wait_flowing(rx: &mut Baresip, rx_name: &str, ssrc: u32, from: u64, what: &str) -> u64 {
    let start = Instant::now();
    let mut last = stats(rx, rx_name);
    // Bounded by the deadline (and the count, at one read per POLL).
    for _ in 0..RTP_DEADLINE.as_millis() / POLL.as_millis() + 1 {
        let n = last.received_from(ssrc);
        if n >= from + MIN_GROWTH {
            println!(
                "RTP {what}: {rx_name} received {from} -> {n} packets from SSRC {ssrc:#010x} \
                 within {:.3} s (dir {:?}, sent {:?})",
                start.elapsed().as_secs_f64(),
                last.dir,
                last.tx_packets
            );
            return n;
        }
        if start.elapsed() >= RTP_DEADLINE {
            break;
        }
        std::thread::sleep(POLL);
        last = stats(rx, rx_name);
    }
    panic!(
        "{what}: {rx_name} received {} packets from SSRC {ssrc:#010x}, want >= {} within \
         {RTP_DEADLINE:?}\n{}\n{}",
        last.received_from(ssrc),
        from + MIN_GROWTH,
        last.raw,
        rx.diagnostics()
    )
}

/// Waits until `rx`'s counts of RTP received from `ssrc` and sent by itself on its
/// current call are both unchanged across two reads at least [`QUIET_WINDOW`] apart;
/// returns the received count.
fn wait_quiet(rx: &mut Baresip, rx_name: &str, ssrc: u32, what: &str) -> u64 {
    let start = Instant::now();
    let counts = |st: &AudioStats| (st.received_from(ssrc), st.tx_packets.unwrap_or(0));
    let mut before = stats(rx, rx_name);
    let mut at = Instant::now();
    let mut after = before.clone();
    // Bounded by the deadline (and the count, at one read per QUIET_WINDOW).
    for _ in 0..RTP_DEADLINE.as_millis() / QUIET_WINDOW.as_millis() + 1 {
        // The quiet window is the measurement itself, not a synchronisation.
        std::thread::sleep(QUIET_WINDOW);
        after = stats(rx, rx_name);
        let gap = at.elapsed();
        if counts(&after) == counts(&before) {
            let (n, sent) = counts(&after);
            println!(
                "RTP {what}: {rx_name} received {n} packets from SSRC {ssrc:#010x} and sent \
                 {sent}, both unchanged over {:.3} s (quiet after {:.3} s; dir {:?})",
                gap.as_secs_f64(),
                start.elapsed().as_secs_f64(),
                after.dir
            );
            return n;
        }
        if start.elapsed() >= RTP_DEADLINE {
            break;
        }
        before = after.clone();
        at = Instant::now();
    }
    panic!(
        "{what}: {rx_name}'s RTP did not stop within {RTP_DEADLINE:?}: (received, sent) \
         {:?} -> {:?}\n{}\n{}",
        counts(&before),
        counts(&after),
        after.raw,
        rx.diagnostics()
    )
}

/// Waits until `p`'s current call has the media direction `dir` (RFC 3264 §6.1).
fn wait_dir(p: &mut Baresip, name: &str, dir: &str) {
    let end = Instant::now() + DEADLINE;
    loop {
        let st = stats(p, name);
        if st.dir.as_deref() == Some(dir) {
            return;
        }
        assert!(
            Instant::now() < end,
            "{name}'s audio dir is {:?}, not {dir}, after {DEADLINE:?}\n{}",
            st.dir,
            st.raw
        );
        std::thread::sleep(POLL);
    }
}

/// Waits for event `ty` of the call `id` on `p`.
fn wait_call_event(p: &mut Baresip, name: &str, ty: &str, id: &str) -> Value {
    p.wait_event(|e| e["type"] == ty && e["id"] == id, DEADLINE)
        .unwrap_or_else(|| panic!("{name}: no {ty} for call {id}\n{}", p.diagnostics()))
}

/// `p`'s call with `peer` (a URI prefix) in `listcalls`.
fn listed(p: &mut Baresip, name: &str, peer: &str) -> ListedCall {
    let calls = p
        .listcalls()
        .unwrap_or_else(|e| panic!("{name} listcalls: {e}"));
    calls
        .iter()
        .find(|c| c.peer.starts_with(peer))
        .cloned()
        .unwrap_or_else(|| panic!("{name} has no call with {peer}: {calls:?}"))
}

/// Makes `p`'s call with `peer` the current one.
fn select(p: &mut Baresip, name: &str, peer: &str) {
    let line = listed(p, name, peer).line;
    let r = p.line(line).expect("line");
    assert!(r.ok, "{name} line {line}: {}", r.data);
    assert!(
        listed(p, name, peer).current,
        "{name} line {line} not current"
    );
}

/// alice calls bob, bob answers, both phones have received their first RTP packet.
/// Returns alice's call id (the switch's A-leg Call-ID) and bob's (the B-leg's).
fn alice_calls_bob(sw: &Switch, alice: &mut Baresip, bob: &mut Baresip) -> (String, String) {
    alice.dial(&bob_uri(sw)).expect("dial");
    let inc = bob
        .wait_event_type("CALL_INCOMING", DEADLINE)
        .unwrap_or_else(|| panic!("bob never rang\n{}", bob.diagnostics()));
    let b_id = inc["id"].as_str().unwrap_or_default().to_string();
    bob.accept().expect("accept");
    let est = alice
        .wait_event_type("CALL_ESTABLISHED", DEADLINE)
        .unwrap_or_else(|| panic!("alice: not established\n{}", alice.diagnostics()));
    let a_id = est["id"].as_str().unwrap_or_default().to_string();
    wait_call_event(bob, "bob", "CALL_ESTABLISHED", &b_id);
    wait_call_event(alice, "alice", "CALL_RTPESTAB", &a_id);
    wait_call_event(bob, "bob", "CALL_RTPESTAB", &b_id);
    (a_id, b_id)
}

/// F11 with real phones: alice holds bob and resumes. While held, neither phone
/// receives RTP (bob answered recvonly; baresip holding sends none); after the resume
/// both do again; the switch saw the hold (`held_by` A) and bills it in `held_s`.
#[test]
fn baresip_holds_and_resumes_through_the_switch() {
    let sw = start_switch();
    let mut alice = phone(&sw, "alice", "alicepw");
    let mut bob = phone(&sw, "bob", "bobpw");
    let (a_id, _) = alice_calls_bob(&sw, &mut alice, &mut bob);
    let call_start = Instant::now();
    let sa = ssrc_of(&mut alice, "alice");
    let sb = ssrc_of(&mut bob, "bob");
    let b_rx = wait_flowing(&mut bob, "bob", sa, 0, "alice -> bob before hold");
    let a_rx = wait_flowing(&mut alice, "alice", sb, 0, "bob -> alice before hold");
    let c = wait_call(&sw, &a_id, "connected, not held", |c| {
        c["state"] == "connected" && c["held"] == false
    });
    assert_eq!(c["held_by"], Value::Null, "{c}");

    // Hold: a re-INVITE with a=sendonly, relayed to bob, answered recvonly.
    let r = alice.hold().expect("hold");
    assert!(r.ok, "alice hold: {}", r.data);
    let c = wait_call(&sw, &a_id, "held by A", |c| c["held"] == true);
    assert_eq!(c["held_by"], "A", "{c}");
    wait_dir(&mut alice, "alice", "sendonly");
    wait_dir(&mut bob, "bob", "recvonly");
    let held_at = Instant::now();
    let b_held = wait_quiet(&mut bob, "bob", sa, "alice -> bob on hold");
    let a_held = wait_quiet(&mut alice, "alice", sb, "bob -> alice on hold");
    assert!(b_held >= b_rx && a_held >= a_rx, "counters went back");
    assert!(listed(&mut alice, "alice", "sip:bob@").on_hold);
    let held_for = held_at.elapsed();

    // Resume: a re-INVITE with a=sendrecv; RTP flows both ways again.
    let r = alice.resume().expect("resume");
    assert!(r.ok, "alice resume: {}", r.data);
    let c = wait_call(&sw, &a_id, "resumed", |c| c["held"] == false);
    assert_eq!(c["held_by"], Value::Null, "{c}");
    wait_dir(&mut alice, "alice", "sendrecv");
    wait_dir(&mut bob, "bob", "sendrecv");
    wait_flowing(&mut bob, "bob", sa, b_held, "alice -> bob resumed");
    wait_flowing(&mut alice, "alice", sb, a_held, "bob -> alice resumed");

    alice.hangup().expect("hangup");
    bob.wait_event_type("CALL_CLOSED", DEADLINE)
        .unwrap_or_else(|| panic!("bob's call never closed\n{}", bob.diagnostics()));
    alice
        .wait_event_type("CALL_CLOSED", DEADLINE)
        .unwrap_or_else(|| panic!("alice's call never closed\n{}", alice.diagnostics()));
    let call_len = call_start.elapsed();
    let cdr = wait_cdr(&sw, &a_id);
    assert_eq!(cdr["disposition"], "answered", "{cdr}");
    assert_eq!(cdr["caller"], "sip:alice@127.0.0.1", "{cdr}");
    assert_eq!(cdr["callee"], "sip:bob@127.0.0.1", "{cdr}");
    assert_eq!(cdr["hangup_by"], "caller", "{cdr}");
    let held_s = cdr["held_s"].as_f64().expect("held_s");
    let duration_s = cdr["duration_s"].as_f64().expect("duration_s");
    println!(
        "CDR held_s {held_s} of duration_s {duration_s}; the test saw the hold for at least \
         {:.3} s of a {:.3} s call",
        held_for.as_secs_f64(),
        call_len.as_secs_f64()
    );
    // The hold lasted at least the quiet windows measured inside it, and not the whole call.
    assert!(
        held_s >= QUIET_WINDOW.as_secs_f64() && held_s < duration_s,
        "{cdr}"
    );
    let (_, body) = http_get(sw.http, "/metrics");
    assert_eq!(metric_value(&body, "softswitch_calls_active"), Some(0.0));
}

/// F12 with real phones: alice is talking to bob; carol calls bob, whose phone rings
/// with a second call while carol hears 180; bob holds alice, answers carol, talks,
/// hangs up on carol, and is back with alice (baresip resumes the held call itself when
/// the current one ends). RTP is checked at every step; two CDRs.
#[test]
fn bob_holds_alice_answers_carol_and_returns_to_alice() {
    let sw = start_switch();
    let mut alice = phone(&sw, "alice", "alicepw");
    let mut bob = phone(&sw, "bob", "bobpw");
    let mut carol = phone(&sw, "carol", "carolpw");
    let (a_id, ab_id) = alice_calls_bob(&sw, &mut alice, &mut bob);
    let sa = ssrc_of(&mut alice, "alice");
    let sb_a = ssrc_of(&mut bob, "bob");
    wait_flowing(&mut bob, "bob", sa, 0, "alice -> bob");
    wait_flowing(&mut alice, "alice", sb_a, 0, "bob -> alice");
    wait_call(&sw, &a_id, "alice-bob connected", |c| {
        c["state"] == "connected"
    });

    // carol calls bob, who is in a call: a second incoming call on bob's phone.
    carol.dial(&bob_uri(&sw)).expect("carol dial");
    let inc = bob
        .wait_event(
            |e| {
                e["type"] == "CALL_INCOMING"
                    && e["peeruri"]
                        .as_str()
                        .is_some_and(|u| u.starts_with("sip:carol@"))
            },
            DEADLINE,
        )
        .unwrap_or_else(|| panic!("bob's phone never rang for carol\n{}", bob.diagnostics()));
    let cb_id = inc["id"].as_str().unwrap_or_default().to_string();
    let ringing = carol
        .wait_event_type("CALL_RINGING", DEADLINE)
        .unwrap_or_else(|| panic!("carol never heard ringing\n{}", carol.diagnostics()));
    let c_id = ringing["id"].as_str().unwrap_or_default().to_string();
    assert!(
        carol.wait_stdout(|log| log.contains("SIP/2.0 180 "), DEADLINE),
        "carol's SIP trace shows no 180\n{}",
        carol.diagnostics()
    );
    let cc = wait_call(&sw, &c_id, "carol's call ringing at bob", |c| {
        c["state"] == "setup"
    });
    assert_eq!(cc["held"], false, "{cc}");
    let ac = wait_call(&sw, &a_id, "alice's call still up", |c| {
        c["state"] == "connected"
    });
    assert_eq!(ac["held"], false, "{ac}");
    let lines = bob.listcalls().expect("listcalls");
    assert_eq!(lines.len(), 2, "bob's calls: {lines:?}");
    assert_eq!(listed(&mut bob, "bob", "sip:carol@").state, "INCOMING");
    assert_eq!(listed(&mut bob, "bob", "sip:alice@").state, "ESTABLISHED");

    // bob holds alice (select her line first: `hold` acts on the current call).
    select(&mut bob, "bob", "sip:alice@");
    let r = bob.hold().expect("hold");
    assert!(r.ok, "bob hold: {}", r.data);
    let ac = wait_call(&sw, &a_id, "alice held by B", |c| c["held"] == true);
    assert_eq!(ac["held_by"], "B", "{ac}");
    wait_dir(&mut bob, "bob", "sendonly");
    wait_dir(&mut alice, "alice", "recvonly");
    let a_held = wait_quiet(&mut alice, "alice", sb_a, "bob -> alice on hold");
    let b_held = wait_quiet(&mut bob, "bob", sa, "alice -> bob on hold");

    // bob answers carol: RTP bob <-> carol.
    select(&mut bob, "bob", "sip:carol@");
    let r = bob.accept().expect("accept carol");
    assert!(r.ok, "bob accept: {}", r.data);
    wait_call_event(&mut bob, "bob", "CALL_ESTABLISHED", &cb_id);
    wait_call_event(&mut carol, "carol", "CALL_ESTABLISHED", &c_id);
    wait_call_event(&mut bob, "bob", "CALL_RTPESTAB", &cb_id);
    wait_call_event(&mut carol, "carol", "CALL_RTPESTAB", &c_id);
    let sc = ssrc_of(&mut carol, "carol");
    let sb_c = ssrc_of(&mut bob, "bob");
    wait_flowing(&mut bob, "bob", sc, 0, "carol -> bob");
    wait_flowing(&mut carol, "carol", sb_c, 0, "bob -> carol");
    let cc = wait_call(&sw, &c_id, "carol's call connected", |c| {
        c["state"] == "connected"
    });
    assert_eq!(cc["held"], false, "{cc}");
    // alice stays on hold meanwhile: nothing reaches her and she sends nothing.
    let ac = wait_call(&sw, &a_id, "alice still held", |c| c["held"] == true);
    assert_eq!(ac["held_by"], "B", "{ac}");
    let a_still = wait_quiet(
        &mut alice,
        "alice",
        sb_a,
        "bob -> alice while bob talks to carol",
    );
    assert_eq!(a_still, a_held, "alice received RTP from bob while held");
    let bob_alice = listed(&mut bob, "bob", "sip:alice@");
    assert!(bob_alice.on_hold, "{bob_alice:?}");

    // bob hangs up on carol (the current call); baresip resumes alice by itself.
    let r = bob.hangup().expect("hangup carol");
    assert!(r.ok, "bob hangup: {}", r.data);
    wait_call_event(&mut carol, "carol", "CALL_CLOSED", &c_id);
    wait_call_event(&mut bob, "bob", "CALL_CLOSED", &cb_id);
    let ac = wait_call(&sw, &a_id, "alice resumed", |c| c["held"] == false);
    assert_eq!(ac["held_by"], Value::Null, "{ac}");
    let back = listed(&mut bob, "bob", "sip:alice@");
    assert!(back.current && !back.on_hold, "{back:?}");
    wait_dir(&mut bob, "bob", "sendrecv");
    wait_dir(&mut alice, "alice", "sendrecv");
    wait_flowing(&mut alice, "alice", sb_a, a_held, "bob -> alice resumed");
    wait_flowing(&mut bob, "bob", sa, b_held, "alice -> bob resumed");

    alice.hangup().expect("alice hangup");
    wait_call_event(&mut bob, "bob", "CALL_CLOSED", &ab_id);
    wait_call_event(&mut alice, "alice", "CALL_CLOSED", &a_id);

    // Two CDRs: carol's call answered by bob and hung up by him; alice's with the hold.
    let c_cdr = wait_cdr(&sw, &c_id);
    assert_eq!(c_cdr["disposition"], "answered", "{c_cdr}");
    assert_eq!(c_cdr["caller"], "sip:carol@127.0.0.1", "{c_cdr}");
    assert_eq!(c_cdr["callee"], "sip:bob@127.0.0.1", "{c_cdr}");
    assert_eq!(c_cdr["connected"], "sip:bob@127.0.0.1", "{c_cdr}");
    assert_eq!(c_cdr["hangup_by"], "callee", "{c_cdr}");
    assert_eq!(c_cdr["held_s"], 0.0, "{c_cdr}");
    let a_cdr = wait_cdr(&sw, &a_id);
    assert_eq!(a_cdr["disposition"], "answered", "{a_cdr}");
    assert_eq!(a_cdr["caller"], "sip:alice@127.0.0.1", "{a_cdr}");
    assert_eq!(a_cdr["callee"], "sip:bob@127.0.0.1", "{a_cdr}");
    assert_eq!(a_cdr["hangup_by"], "caller", "{a_cdr}");
    let held_s = a_cdr["held_s"].as_f64().expect("held_s");
    let duration_s = a_cdr["duration_s"].as_f64().expect("duration_s");
    let carol_s = c_cdr["duration_s"].as_f64().expect("duration_s");
    println!(
        "CDRs: alice-bob duration_s {duration_s} held_s {held_s}; carol-bob duration_s \
         {carol_s}"
    );
    // alice was held from before carol was answered until after carol hung up.
    assert!(
        held_s > 0.0 && held_s < duration_s,
        "alice's call: held_s {held_s}, duration_s {duration_s}"
    );
    assert_eq!(cdrs(&sw).len(), 2, "{:?}", cdrs(&sw));
    let (_, body) = http_get(sw.http, "/metrics");
    assert_eq!(metric_value(&body, "softswitch_calls_active"), Some(0.0));
}

/// `listcalls` as baresip 1.0.0 printed it for bob with alice established and carol
/// ringing, after a `hold` on the ringing line.
const LISTCALLS_SAMPLE: &str = "
--- Active calls (2) ---
  [line 1]  0:00:03  ESTABLISHED             sip:alice@127.0.0.1
> [line 2]  0:00:00   INCOMING  (on hold)  sip:carol@127.0.0.1

";

#[test]
fn listcalls_text_is_parsed() {
    let calls = ListedCall::parse(LISTCALLS_SAMPLE);
    assert_eq!(
        calls,
        vec![
            ListedCall {
                line: 1,
                current: false,
                state: "ESTABLISHED".into(),
                on_hold: false,
                peer: "sip:alice@127.0.0.1".into(),
            },
            ListedCall {
                line: 2,
                current: true,
                state: "INCOMING".into(),
                on_hold: true,
                peer: "sip:carol@127.0.0.1".into(),
            },
        ]
    );
    assert_eq!(ListedCall::parse("\n--- Active calls (0) ---\n\n"), vec![]);
    let st = AudioStats::parse(" audio dir=recvonly pt_enc=0\n");
    assert_eq!(st.dir.as_deref(), Some("recvonly"));
}
