//! A real PJSIP phone against the real switch: pjsua2 2.15 (PyPI `pjsua2-python`, driven
//! by `tests/pjsua2_register.py`) registers and de-registers over UDP on loopback.
//!
//! PJSIP 2.15 handles several challenges (RFC 8760) and answers SHA-256 when it is
//! offered first. The cases: the default `[auth]` (MD5 alone: it answers MD5); a user with
//! their own list `["SHA-256", "MD5"]` (it answers SHA-256); and a deployment listing
//! SHA-256 first with a user stored as an MD5 HA1 only: its SHA-256 answer cannot be
//! checked, the re-challenge leaves SHA-256 out, and it registers with MD5 instead of
//! being re-challenged with SHA-256 until blocked.
//!
//! Python 3 with `pjsua2` missing is a failure, never a skip: `scripts/test-all.sh`
//! installs `pjsua2-python`. The phone bounds its own waits and is killed at a deadline.

mod common;

use common::digest::Alg;
use common::*;
use std::process::Command;

/// How long the phone may take to register (it needs about 0.1 s).
const PHONE_DEADLINE_S: u64 = 10;

fn start(auth: &str, users: &str) -> Switch {
    let dir = temp_dir("pjsua2");
    // UDP on an ephemeral loopback port, the `[auth]` lines given and the users given.
    let cfg = phone_config(
        &dir,
        r#"["udp:127.0.0.1:0"]"#,
        "",
        &format!("[auth]\n{auth}\n\n{users}"),
    );
    Switch::start_with_args(&["--config", &cfg], &[], dir)
}

/// What the phone did.
struct Phone {
    /// The algorithm of each Authorization it sent, in order.
    answered: Vec<String>,
    /// Its whole output, for failure messages.
    text: String,
    ok: bool,
}

/// Runs the phone for `user` against `sw`: register, then de-register.
fn phone(sw: &Switch, user: &str, password: &str) -> Phone {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pjsua2_register.py");
    let out = Command::new("timeout")
        .arg((PHONE_DEADLINE_S * 3).to_string())
        .arg("python3")
        .arg(script)
        .arg(sw.udp_addr().port().to_string())
        .args(["127.0.0.1", user, password])
        .arg(PHONE_DEADLINE_S.to_string())
        .output()
        .expect("python3 is required to drive pjsua2");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !text.contains("No module named 'pjsua2'"),
        "pjsua2 is required (PyPI pjsua2-python; scripts/test-all.sh installs it):\n{text}"
    );
    let answered = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("AUTH "))
        .map(str::to_string)
        .collect();
    Phone {
        answered,
        ok: out.status.success()
            && stdout.contains("RESULT registered")
            && stdout.contains("RESULT deregistered"),
        text,
    }
}

fn metrics(sw: &Switch) -> String {
    http_get(sw.http, "/metrics").1
}

/// The REGISTERs the switch accepted.
fn register_oks(sw: &Switch) -> f64 {
    metric_value(
        &metrics(sw),
        "softswitch_register_requests_total{result=\"ok\"}",
    )
    .unwrap_or(0.0)
}

#[test]
fn pjsua2_registers_on_the_defaults_with_md5() {
    let sw = start("", "[[users]]\nuser = \"alice\"\npassword = \"alicepw\"\n");
    let p = phone(&sw, "alice", "alicepw");
    assert!(p.ok, "registered and de-registered:\n{}", p.text);
    assert!(
        !p.answered.is_empty() && p.answered.iter().all(|a| a == "MD5"),
        "the default challenge is MD5 alone: {:?}\n{}",
        p.answered,
        p.text
    );
    assert_eq!(register_oks(&sw), 2.0, "REGISTER and de-REGISTER");
    let (_, api) = http_get(sw.http, "/api/registrations");
    assert_eq!(api.trim(), "[]", "de-registered");
}

#[test]
fn pjsua2_answers_sha256_for_a_user_whose_own_list_puts_it_first() {
    let sw = start(
        "",
        "[[users]]\nuser = \"alice\"\npassword = \"alicepw\"\nalgorithms = [\"SHA-256\", \"MD5\"]\n",
    );
    let p = phone(&sw, "alice", "alicepw");
    assert!(p.ok, "registered and de-registered:\n{}", p.text);
    assert!(
        !p.answered.is_empty() && p.answered.iter().all(|a| a == "SHA-256"),
        "SHA-256 offered first: {:?}\n{}",
        p.answered,
        p.text
    );
    assert_eq!(register_oks(&sw), 2.0);
}

#[test]
fn pjsua2_md5_ha1_user_falls_back_to_md5_where_sha256_is_listed_first() {
    let ha1 = Alg::Md5.hash("bob:127.0.0.1:bobpw");
    let sw = start(
        "algorithms = [\"SHA-256\", \"MD5\"]\nmax_failures = 3\n",
        &format!("[[users]]\nuser = \"bob\"\nha1 = \"{ha1}\"\n"),
    );
    let p = phone(&sw, "bob", "bobpw");
    assert!(p.ok, "registered and de-registered:\n{}", p.text);
    assert_eq!(
        p.answered.first().map(String::as_str),
        Some("SHA-256"),
        "it picks SHA-256 first: {:?}\n{}",
        p.answered,
        p.text
    );
    assert!(
        p.answered.iter().any(|a| a == "MD5"),
        "then MD5 from the re-challenge: {:?}\n{}",
        p.answered,
        p.text
    );
    assert_eq!(register_oks(&sw), 2.0);
    let m = metrics(&sw);
    let no_credential = metric_value(
        &m,
        "softswitch_auth_failures_total{reason=\"no_credential\"}",
    );
    assert!(
        no_credential.is_some_and(|n| n >= 1.0),
        "the SHA-256 answer was judged as an unknown user's:\n{m}"
    );
    // It was never blocked: each MD5 success cleared the count.
    assert_eq!(
        metric_value(
            &m,
            "softswitch_auth_failures_total{reason=\"too_many_failures\"}"
        ),
        Some(0.0)
    );
}
