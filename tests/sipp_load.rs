//! A sustained call rate held longer than 64·T1 (the longest timer that keeps a
//! transaction: RFC 6026 Timer L/M, Timer J), so the transactions every call leaves
//! lingering reach their steady state: about 100 transaction-seconds per call, five
//! thousand at 50 calls/s. With `limits.max_transactions` far below that and far above
//! what the calls in setup need at once, no call may be refused 503: lingering
//! transactions yield their slots, and the table never exceeds its bound.
//!
//! SIPp (`scenarios/load_*.xml`, the bench's call) on the defaults but the bound.
//! Bounded: RATE × SECONDS calls, SIPp under `timeout`, about 45 s in all.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Calls per second, and for how long: 40 s > 64·T1 = 32 s on the default T1.
const RATE: u32 = 50;
const SECONDS: u32 = 40;
/// The bound: a fifth of the steady state's ~5,000 lingering transactions, and some ten
/// times what the calls in setup hold at once (each works for a few milliseconds).
const MAX_TRANSACTIONS: &str = "1000";

#[test]
fn sustained_call_rate_past_64_t1_gets_no_503() {
    assert!(
        Command::new("sipp").arg("-v").output().is_ok(),
        "sipp is required (Debian package sip-tester; scripts/test-all.sh installs it)"
    );
    let sw = Switch::start_with_config(
        "127.0.0.1",
        SIPP_USERS,
        &[("SOFTSWITCH_LIMITS_MAX_TRANSACTIONS", MAX_TRANSACTIONS)],
    );
    let scen = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
    let work = sw.dir.join("load");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        work.join("callee.csv"),
        "SEQUENTIAL\nu0002;[authentication username=u0002 password=p0002]\n",
    )
    .unwrap();
    std::fs::write(
        work.join("caller.csv"),
        "SEQUENTIAL\nu0001;[authentication username=u0001 password=p0001]\n",
    )
    .unwrap();
    let server = sw.udp_addr().to_string();
    // The UAS's SIP port and both SIPps' media ports (RTP/RTCP, audio and video: +0..+3),
    // free now and below the ephemeral range.
    let ports = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/free-ports.py"))
        .args(["20000", "32000", "0,1,2,3,4,10,11,12,13", "0,4,10"])
        .output()
        .expect("python3");
    let ports: Vec<String> = String::from_utf8_lossy(&ports.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(ports.len(), 3, "free ports for SIPp");
    let (uas_port, mp_uas, mp_uac) = (ports[0].clone(), ports[1].clone(), ports[2].clone());

    let reg = Command::new("timeout")
        .args(["30", "sipp", "-sf"])
        .arg(format!("{scen}/load_register_callee.xml"))
        .args(["-inf", "callee.csv", "-key", "domain", "example.test"])
        .args(["-key", "contact_port", &uas_port])
        .args(["-m", "1", "-timeout", "10s", "-timeout_error", "-nostdin"])
        .args(["-i", "127.0.0.1", &server])
        .current_dir(&work)
        .output()
        .expect("run sipp");
    assert!(
        reg.status.success(),
        "registering the callee: {}",
        String::from_utf8_lossy(&reg.stdout)
    );

    let mut uas = Command::new("timeout")
        .args(["120", "sipp", "-sf"])
        .arg(format!("{scen}/load_call_uas.xml"))
        .args([
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            &uas_port,
            "-mp",
            &mp_uas,
        ])
        .args(["-timeout", "90s", "-nostdin", "-trace_err"])
        .arg(&server)
        .current_dir(&work)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the UAS");
    let calls = (RATE * SECONDS).to_string();
    let started = Instant::now();
    let uac = Command::new("timeout")
        .args(["120", "sipp", "-sf"])
        .arg(format!("{scen}/load_call_uac_auth.xml"))
        .args([
            "-inf",
            "caller.csv",
            "-s",
            "u0002",
            "-key",
            "domain",
            "example.test",
        ])
        .args(["-r", &RATE.to_string(), "-m", &calls, "-l", "500"])
        .args([
            "-timeout",
            "90s",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
        ])
        .args(["-trace_stat", "-stf", "uac.csv", "-fd", "1"])
        .args([
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-mp",
            &mp_uac,
            &server,
        ])
        .current_dir(&work)
        .output()
        .expect("run the UAC");
    let took = started.elapsed();
    let _ = uas.kill();
    let _ = uas.wait();
    let errors = std::fs::read_dir(&work)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("error"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let m = http_get(sw.http, "/metrics").1;
    assert!(
        uac.status.success(),
        "every call completes (sipp exit {:?}) in {took:?}:\n{}\nerrors:\n{}",
        uac.status.code(),
        String::from_utf8_lossy(&uac.stdout)
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n"),
        errors.chars().take(3000).collect::<String>()
    );
    assert!(
        took > Duration::from_secs(u64::from(SECONDS) - 2),
        "the rate was held for {took:?}"
    );
    let series = |s: &str| metric_value(&m, s).unwrap_or(f64::NAN);
    assert_eq!(
        series(r#"softswitch_sip_messages_rejected_total{reason="overload"}"#),
        0.0,
        "no INVITE refused for want of room:\n{m}"
    );
    assert_eq!(
        series(r#"softswitch_sip_responses_sent_total{class="5xx"}"#),
        0.0,
        "{m}"
    );
    // The table reached its bound and its lingering transactions made room...
    assert!(
        series("softswitch_transactions_retired_total") > 0.0,
        "the steady state exceeded the bound:\n{m}"
    );
    // ...and never held more than it.
    let live = live_transactions(&m);
    assert!(live <= 1000.0, "{live} live transactions:\n{m}");
    wait_until(
        Duration::from_secs(10),
        "every call answered and billed",
        || {
            metric_now(&sw, r#"softswitch_calls_total{disposition="answered"}"#)
                == f64::from(RATE * SECONDS)
        },
    );
}
