//! Real phones calling through the switch: two baresip 1.0.0 (Debian `baresip-core`)
//! register as alice and bob, alice calls bob, bob answers, they talk for two seconds
//! (RTP flows phone to phone: the B2BUA relays the SDP byte for byte), alice hangs up;
//! and bob rejecting a call with 486. Both phones' events and the switch's CDRs are
//! checked. baresip missing is a failure, never a skip (`scripts/test-all.sh` installs it).

mod common;

use common::baresip::{Baresip, BaresipOptions};
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);

fn start_switch() -> Switch {
    let dir = temp_dir("phones");
    let path = dir.join("softswitch.toml");
    let toml = format!(
        r#"[sip]
listen = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]
domain = "127.0.0.1"

[http]
listen = "127.0.0.1:0"

[billing]
cdr_path = "{cdr}"

[registrar]
store_path = "{store}"

[log]
level = "warn"

[[users]]
user = "alice"
password = "alicepw"

[[users]]
user = "bob"
password = "bobpw"
"#,
        cdr = dir.join("cdr.jsonl").display(),
        store = dir.join("registrations.journal").display(),
    );
    std::fs::write(&path, toml).expect("write switch config");
    let cfg = path.to_str().expect("utf-8 path").to_string();
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
    // Two seconds of conversation (time passing is the point here, not a sync).
    std::thread::sleep(Duration::from_secs(2));
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
    // Media went phone to phone with the SDP the switch relayed: each side's trace shows
    // the other's RTP port in the SDP it received.
    let a_log = alice.stdout_log();
    // baresip rounds the start of its RTP range down to an even port (RTP even, RTCP odd).
    let b_rtp = (bob.ports.rtp & !1)..bob.ports.rtp + 20;
    assert!(
        a_log
            .split("m=audio ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next()?.parse::<u16>().ok())
            .any(|p| b_rtp.contains(&p)),
        "alice never saw bob's RTP port (range {b_rtp:?}) in an SDP"
    );
    let (_, body) = http_get(sw.http, "/metrics");
    assert_eq!(metric_value(&body, "softswitch_calls_active"), Some(0.0));
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
