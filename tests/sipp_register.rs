//! SIPp (Debian `sip-tester`) registers against the running switch: F1 (REGISTER → 401 →
//! authenticated REGISTER → 200 listing our Contact) and the three F2 de-registrations
//! (`Expires: 0`, `Contact: …;expires=0`, `Contact: *`), each scenario in `scenarios/`,
//! over UDP and TCP, with distinct users from SIPp's injection file. The switch gets the
//! same users from a generated `--config` file, and afterwards its registration view
//! (`GET /api/registrations`, `softswitch_registrations_active`) must agree with SIPp.
//!
//! The switch runs its default `[auth]`: SIPp 3.6 answers only MD5 digest challenges (it
//! reads the first `algorithm=` of the joined WWW-Authenticate headers and stops with
//! `createAuthHeader: authentication must use MD5 or AKAv1-MD5` otherwise), so these
//! tests are what shows the default challenge is one every MD5 client answers. SIPp is
//! required: a missing binary fails the test loudly, it is never skipped. Every run is
//! bounded: `-m`, `-timeout`.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Registrations per scenario run.
const USERS: usize = 100;
/// The switch's domain (and digest realm) in these tests.
const DOMAIN: &str = "example.test";

/// Writes a `--config` TOML with `n` users (`u0001`/`p0001` …) and loopback listeners on
/// ephemeral ports, and SIPp's injection file for the same users (SEQUENTIAL, field0 the
/// user, field1 SIPp's `[authentication]` keyword with the credentials). Returns the
/// paths (config, injection file).
fn write_users(dir: &Path, n: usize) -> (PathBuf, PathBuf) {
    let mut toml_text = format!(
        "[sip]\nlisten = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]\ndomain = {DOMAIN:?}\n\n\
         [http]\nlisten = \"127.0.0.1:0\"\n\n\
         [billing]\ncdr_path = {:?}\n\n\
         [registrar]\nstore_path = {:?}\nstore_sync = false\n\n\
         [log]\nlevel = \"warn\"\n",
        dir.join("cdr.jsonl").display().to_string(),
        dir.join("registrations.journal").display().to_string(),
    );
    let mut csv = String::from("SEQUENTIAL\n");
    for i in 1..=n {
        let (user, password) = (format!("u{i:04}"), format!("p{i:04}"));
        toml_text.push_str(&format!(
            "\n[[users]]\nuser = \"{user}\"\npassword = \"{password}\"\n"
        ));
        csv.push_str(&format!(
            "{user};[authentication username={user} password={password}]\n"
        ));
    }
    let config = dir.join("softswitch.toml");
    let inf = dir.join("users.csv");
    std::fs::write(&config, toml_text).expect("write config");
    std::fs::write(&inf, csv).expect("write injection file");
    (config, inf)
}

/// The switch with `USERS` users and the default `[auth]` (see the module doc).
fn start_switch() -> (Switch, PathBuf) {
    let dir = temp_dir("sipp-reg");
    let (config, inf) = write_users(&dir, USERS);
    let config = config.to_str().expect("utf-8 path").to_string();
    let sw = Switch::start_with_args(&["--config", &config], &[], dir);
    (sw, inf)
}

/// What SIPp reported.
struct SippRun {
    ok: bool,
    successful: u64,
    failed: u64,
    text: String,
}

/// The cumulative count of a final-screen statistics line (`  Failed call | 0 | 3`).
fn cumulative(text: &str, label: &str) -> Option<u64> {
    text.lines()
        .rev()
        .find(|l| l.trim_start().starts_with(label))
        .and_then(|l| l.rsplit('|').next())
        .and_then(|v| v.trim().parse().ok())
}

fn run_sipp(scenario: &str, target: std::net::SocketAddr, transport: &str, inf: &Path) -> SippRun {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(scenario);
    let dir = temp_dir("sipp");
    let calls = USERS.to_string();
    let out = Command::new("sipp")
        .current_dir(&dir)
        .args(["-sf", scenario.to_str().expect("utf-8 path")])
        .args(["-inf", inf.to_str().expect("utf-8 path")])
        .args(["-key", "domain", DOMAIN])
        .args(["-i", "127.0.0.1", "-p", "0"])
        .args(["-t", transport])
        .args(["-m", &calls, "-r", "200", "-l", "50"])
        .args([
            "-timeout",
            "30s",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
        ])
        .arg(target.to_string())
        .output()
        .expect(
            "sipp must be installed (Debian package sip-tester); scripts/test-all.sh installs it",
        );
    let mut text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The error log names each failed call's reason; keep it in the failure message.
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with("_errors.log") {
                text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    SippRun {
        ok: out.status.success(),
        successful: cumulative(&text, "Successful call").unwrap_or(0),
        failed: cumulative(&text, "Failed call").unwrap_or(u64::MAX),
        text,
    }
}

/// The switch's bindings: `/api/registrations` and the gauge, which must agree.
fn bindings(sw: &Switch) -> Vec<serde_json::Value> {
    let (status, body) = http_get(sw.http, "/api/registrations");
    assert_eq!(status, 200, "{body}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).expect("a JSON array");
    let (_, metrics) = http_get(sw.http, "/metrics");
    let gauge = metric_value(&metrics, "softswitch_registrations_active").expect("the gauge");
    assert_eq!(
        gauge as usize,
        list.len(),
        "gauge against /api/registrations"
    );
    list
}

fn scenario_ok(sw: &Switch, scenario: &str, transport: &str, inf: &Path) {
    let target = if transport == "t1" {
        sw.tcp_addr()
    } else {
        sw.udp_addr()
    };
    let run = run_sipp(scenario, target, transport, inf);
    assert!(
        run.ok && run.failed == 0 && run.successful == USERS as u64,
        "{scenario} over {transport}: exit ok {}, {} successful, {} failed\n{}",
        run.ok,
        run.successful,
        run.failed,
        run.text
    );
}

fn f1(transport: &str, sip_transport: &str) {
    let (sw, inf) = start_switch();
    scenario_ok(&sw, "register_f1.xml", transport, &inf);
    let list = bindings(&sw);
    assert_eq!(list.len(), USERS, "{list:?}");
    let mut aors: Vec<&str> = list.iter().filter_map(|b| b["aor"].as_str()).collect();
    aors.sort_unstable();
    aors.dedup();
    assert_eq!(aors.len(), USERS, "one binding per distinct user: {list:?}");
    for b in &list {
        let aor = b["aor"].as_str().expect("aor");
        let user = aor
            .strip_prefix("sip:")
            .and_then(|a| a.strip_suffix(&format!("@{DOMAIN}")))
            .expect("an AOR of our domain");
        let contact = b["contact"].as_str().expect("contact");
        assert!(
            contact.starts_with(&format!("<sip:{user}@127.0.0.1:")),
            "{b}"
        );
        assert_eq!(b["transport"].as_str(), Some(sip_transport), "{b}");
        let expires = b["expires"].as_u64().expect("expires");
        assert!((3500..=3600).contains(&expires), "{b}");
    }
}

fn f2(scenario: &str, transport: &str) {
    let (sw, inf) = start_switch();
    scenario_ok(&sw, scenario, transport, &inf);
    let list = bindings(&sw);
    assert!(list.is_empty(), "bindings left after {scenario}: {list:?}");
    // Every user did register (and was then removed): USERS accepted changes each way.
    let (_, metrics) = http_get(sw.http, "/metrics");
    let ok = metric_value(
        &metrics,
        "softswitch_register_requests_total{result=\"ok\"}",
    );
    assert_eq!(ok, Some((2 * USERS) as f64), "register results:\n{metrics}");
}

#[test]
fn sipp_f1_register_over_udp() {
    f1("u1", "udp");
}

#[test]
fn sipp_f1_register_over_tcp() {
    f1("t1", "tcp");
}

#[test]
fn sipp_f2_deregister_expires_header_over_udp() {
    f2("deregister_expires0.xml", "u1");
}

#[test]
fn sipp_f2_deregister_expires_header_over_tcp() {
    f2("deregister_expires0.xml", "t1");
}

#[test]
fn sipp_f2_deregister_contact_expires_over_udp() {
    f2("deregister_contact_expires0.xml", "u1");
}

#[test]
fn sipp_f2_deregister_contact_expires_over_tcp() {
    f2("deregister_contact_expires0.xml", "t1");
}

#[test]
fn sipp_f2_deregister_wildcard_over_udp() {
    f2("deregister_wildcard.xml", "u1");
}

#[test]
fn sipp_f2_deregister_wildcard_over_tcp() {
    f2("deregister_wildcard.xml", "t1");
}
