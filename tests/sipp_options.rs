//! SIPp (Debian `sip-tester`) against the running switch: the OPTIONS scenario in
//! `scenarios/options_uac.xml`, bounded in count and time, over UDP and TCP. SIPp is
//! required: a missing binary fails the test loudly, it is never skipped.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn run_sipp(target: std::net::SocketAddr, transport: &str) -> (bool, String) {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/options_uac.xml");
    let dir = temp_dir("sipp");
    let out = Command::new("sipp")
        .current_dir(&dir)
        .args(["-sf", scenario.to_str().expect("utf-8 path")])
        .args(["-i", "127.0.0.1", "-p", "0"])
        .args(["-t", transport])
        .args(["-m", "500", "-r", "250", "-l", "50"])
        .args([
            "-timeout",
            "20s",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
        ])
        .arg(target.to_string())
        .output()
        .expect(
            "sipp must be installed (Debian package sip-tester); scripts/test-all.sh installs it",
        );
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    (out.status.success(), text)
}

#[test]
fn sipp_options_over_udp_all_answered() {
    let sw = Switch::start(&[]);
    let (ok, text) = run_sipp(sw.udp_addr(), "u1");
    assert!(ok, "sipp failed:\n{text}");
    let (_, metrics) = http_get(sw.http, "/metrics");
    let line = metrics
        .lines()
        .find(|l| l.starts_with("softswitch_sip_requests_received_total{method=\"OPTIONS\"}"))
        .expect("series");
    let n: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("value");
    assert!(n >= 500.0, "{line}");
}

#[test]
fn sipp_options_over_tcp_all_answered() {
    let sw = Switch::start(&[]);
    let (ok, text) = run_sipp(sw.tcp_addr(), "t1");
    assert!(ok, "sipp failed:\n{text}");
}
