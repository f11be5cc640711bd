//! The call-flow SIPp pairs of `scenarios/` (F3, F4 both ways, F6, F7, F8) against the
//! real binary, over UDP and TCP: each phone checks its own leg (the same pairs pass
//! against Kamailio, `bench/validate-scenarios.sh`), and the switch's CDR of each call is
//! checked field by field. One switch per case; the case runner is the validation
//! script's `--case` mode, pointed at the switch with `SERVER_PORT`.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

/// (pair, CDR disposition, sip_status, hangup_by)
const PAIRS: [(&str, &str, u64, &str); 6] = [
    ("f03_basic_call", "answered", 200, "caller"),
    ("f04_release_caller_bye", "answered", 200, "caller"),
    ("f04_release_callee_bye", "answered", 200, "callee"),
    ("f06_busy", "busy", 486, "callee"),
    ("f07_cancel", "cancelled", 487, "caller"),
    ("f08_no_answer", "no_answer", 480, "switch"),
];

fn run_case(pair: &str, disposition: &str, status: u64, hangup_by: &str, transport: &str) {
    assert!(
        Command::new("sipp").arg("-v").output().is_ok(),
        "sipp is required (Debian package sip-tester; scripts/test-all.sh installs it)"
    );
    let sw = Switch::start_with_config(
        "127.0.0.1",
        SIPP_USERS,
        // The default [auth]: SIPp answers MD5 only, and the default challenge is MD5.
        &[("SOFTSWITCH_SIP_NO_ANSWER_TIMEOUT_S", "3")],
    );
    let port = if transport == "tcp" {
        sw.tcp_addr().port()
    } else {
        sw.udp_addr().port()
    };
    let work = sw.dir.join(format!("{pair}-{transport}"));
    std::fs::create_dir_all(&work).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/validate-scenarios.sh");
    let out = Command::new("timeout")
        .arg("120")
        .arg("bash")
        .arg(script)
        .args(["--case", pair, transport])
        .arg(&work)
        .env("SERVER_PORT", port.to_string())
        .output()
        .expect("run the case");
    let read = |f: &str| std::fs::read_to_string(work.join(f)).unwrap_or_default();
    assert!(
        out.status.success(),
        "{pair} over {transport}: exit codes (caller callee) {} {}\ncaller errors:\n{}\ncallee errors:\n{}",
        read("rc"),
        read("reason"),
        read("caller.err"),
        read("callee.err"),
    );
    // The CDR is on disk before the call counts as ended: wait for the counter, then
    // read the file.
    let series = format!("softswitch_calls_total{{disposition=\"{disposition}\"}}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = http_get(sw.http, "/metrics").1;
        if metric_value(&m, &series) == Some(1.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pair}: {series} not 1:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let cdrs = std::fs::read_to_string(sw.dir.join("cdr.jsonl")).unwrap_or_default();
    let lines: Vec<serde_json::Value> = cdrs
        .lines()
        .map(|l| serde_json::from_str(l).expect("CDR line is JSON"))
        .collect();
    assert_eq!(lines.len(), 1, "{pair}: one CDR:\n{cdrs}");
    let c = &lines[0];
    assert_eq!(c["caller"], "sip:u0001@example.test", "{c}");
    assert_eq!(c["callee"], "sip:u0002@example.test", "{c}");
    assert_eq!(c["disposition"], disposition, "{c}");
    assert_eq!(c["sip_status"], status, "{c}");
    assert_eq!(c["hangup_by"], hangup_by, "{c}");
    assert!(c["call_id"].as_str().is_some_and(|s| !s.is_empty()), "{c}");
    assert!(
        c["start_time"].is_string() && c["end_time"].is_string(),
        "{c}"
    );
    if disposition == "answered" {
        assert_eq!(c["connected"], "sip:u0002@example.test", "{c}");
        assert!(c["answer_time"].is_string(), "{c}");
    } else {
        assert!(c["answer_time"].is_null() && c["billable_s"] == 0, "{c}");
    }
}

/// One transport's six cases at a time (six switches and twelve SIPps are enough for two
/// cores; the F8 ring timer and the BYE ordering checks want the CPU they expect).
static ONE_SUITE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn all(transport: &str) {
    let _one = ONE_SUITE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    std::thread::scope(|s| {
        let handles: Vec<_> = PAIRS
            .iter()
            .map(|&(p, d, st, h)| s.spawn(move || run_case(p, d, st, h, transport)))
            .collect();
        for h in handles {
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
            }
        }
    });
}

#[test]
fn sipp_call_flows_over_udp() {
    all("udp");
}

#[test]
fn sipp_call_flows_over_tcp() {
    all("tcp");
}
