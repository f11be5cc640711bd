//! A real phone against the real switch: baresip 1.0.0 (Debian `baresip-core`) registers
//! alice over UDP and over TCP, refreshes the registration, and de-registers when it
//! quits. Both sides are checked: baresip's own `reginfo` and events, and the switch's
//! `GET /api/registrations` and `/metrics`.
//!
//! The switch runs its default `[auth]`, whatever the User-Agent: libre 1.x gives up on a
//! 401 with ENOSYS as soon as one WWW-Authenticate names an algorithm other than MD5,
//! even next to an MD5 one, so these tests are what shows the default challenge (MD5
//! alone) is one it answers.
//!
//! baresip missing is a failure, never a skip: `scripts/test-all.sh` installs it.
//! Every wait is for a message or a state, bounded by a deadline.

mod common;

use common::baresip::{Baresip, BaresipOptions, RegInfo};
use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// baresip's `regint`: the expiry it asks for, and so its refresh interval (it refreshes
/// at 90% of the granted expiry).
/// Long enough that the binding outlives the de-registration check by seconds, short
/// enough that the refresh comes within the test (at 5.4 s).
const REGINT_S: u64 = 6;
/// How long the first registration may take (baresip needs about 0.4 s).
const REGISTER_DEADLINE: Duration = Duration::from_secs(10);
/// How long the switch's view may lag behind the phone's.
const SWITCH_DEADLINE: Duration = Duration::from_secs(5);
/// The interval between two polls of the switch's HTTP API.
const POLL: Duration = Duration::from_millis(50);

/// Writes the switch's configuration (alice, UDP+TCP on ephemeral loopback ports,
/// short registration expiries allowed: the default `min_expires_s` of 60 would answer
/// baresip's few seconds with 423) and returns its path.
fn switch_config(dir: &Path) -> String {
    phone_config(
        dir,
        r#"["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]"#,
        "default_expires_s = 60\nmin_expires_s = 1\nmax_expires_s = 3600\nmax_contacts = 10",
        "[[users]]\nuser = \"alice\"\npassword = \"alicepw\"",
    )
}

/// Starts the switch. `SOFTSWITCH_LOG_LEVEL` from the test's environment is passed on
/// (e.g. `trace` to see its traffic on stderr).
fn start_switch() -> Switch {
    let dir = temp_dir("phone");
    let cfg = switch_config(&dir);
    let level = std::env::var("SOFTSWITCH_LOG_LEVEL").ok();
    let env: Vec<(&str, &str)> = level
        .as_deref()
        .map(|l| vec![("SOFTSWITCH_LOG_LEVEL", l)])
        .unwrap_or_default();
    Switch::start_with_args(&["--config", &cfg], &env, dir)
}

/// `GET /api/registrations`, parsed.
fn registrations(sw: &Switch) -> Vec<Value> {
    let (status, body) = http_get(sw.http, "/api/registrations");
    assert_eq!(status, 200, "GET /api/registrations: {body}");
    let v: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("/api/registrations is not JSON ({e}): {body}"));
    v.as_array()
        .unwrap_or_else(|| panic!("/api/registrations is not an array: {body}"))
        .clone()
}

/// The `host:port` of a Contact URI (`<sip:u@h:p;params>` or `sip:u@h:p`).
fn contact_host_port(contact: &str) -> &str {
    let c = contact.trim().trim_start_matches('<');
    let after_user = c.split_once('@').map_or(c, |(_, h)| h);
    after_user
        .split([';', '>', '?'])
        .next()
        .unwrap_or(after_user)
}

/// alice's binding whose contact is the phone's SIP port, if the switch lists one.
fn phone_binding(sw: &Switch, phone: &Baresip) -> Option<Value> {
    let want = format!("127.0.0.1:{}", phone.ports.sip);
    registrations(sw).into_iter().find(|b| {
        b["aor"].as_str().is_some_and(|a| a.contains("alice@"))
            && b["contact"]
                .as_str()
                .is_some_and(|c| contact_host_port(c) == want)
    })
}

/// Polls `f` every [`POLL`] until it gives `Some`, for at most `deadline`.
fn poll<T>(deadline: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    let max_polls = deadline.as_millis() / POLL.as_millis() + 2;
    for _ in 0..max_polls {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            break;
        }
        std::thread::sleep(POLL);
    }
    None
}

/// The switch's count of REGISTER requests answered 2xx, if it exports one.
fn register_ok_count(sw: &Switch) -> Option<f64> {
    let (_, body) = http_get(sw.http, "/metrics");
    metric_value(&body, r#"softswitch_register_requests_total{result="ok"}"#)
}

/// The switch's REGISTER and auth-failure counters, for failure messages.
fn register_metrics(sw: &Switch) -> String {
    let (_, body) = http_get(sw.http, "/metrics");
    body.lines()
        .filter(|l| {
            l.starts_with("softswitch_register_requests_total")
                || l.starts_with("softswitch_auth_failures_total")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How many 200 responses to a REGISTER a baresip SIP trace (`-s`) shows.
fn traced_register_oks(log: &str) -> usize {
    // A response's CSeq line comes after its status line.
    let mut ok = 0;
    let mut in_200 = false;
    for l in log.lines() {
        if l.starts_with("SIP/2.0 ") {
            in_200 = l.starts_with("SIP/2.0 200");
        } else if in_200 && l.starts_with("CSeq:") && l.ends_with("REGISTER") {
            ok += 1;
            in_200 = false;
        }
    }
    ok
}

/// Register, refresh and de-register alice from baresip over `transport`.
fn register_refresh_deregister(transport: &str) {
    let sw = start_switch();
    let sw_addr = match transport {
        "udp" => sw.udp_addr(),
        "tcp" => sw.tcp_addr(),
        other => panic!("unknown transport {other}"),
    };
    let aor = format!("sip:alice@127.0.0.1:{}", sw_addr.port());
    let account = format!(
        "<{aor};transport={transport}>;auth_pass=alicepw;answermode=manual;regint={REGINT_S}"
    );
    let mut phone = Baresip::start(&BaresipOptions::account(&account));

    // 1. Registered, as baresip sees it.
    let info: RegInfo = phone
        .wait_registered(&aor, REGISTER_DEADLINE)
        .unwrap_or_else(|| {
            panic!(
                "baresip did not register {aor} over {transport} within {REGISTER_DEADLINE:?}; \
                 reginfo: {:?}\n{}",
                phone.reginfo(),
                phone.diagnostics()
            )
        });
    assert!(info.registered());
    // Everything before this point belongs to the first registration.
    phone.clear_backlog();

    // ... and as the switch sees it.
    let binding = poll(SWITCH_DEADLINE, || phone_binding(&sw, &phone)).unwrap_or_else(|| {
        panic!(
            "the switch lists no binding for alice with contact port {}: {:?}\n{}",
            phone.ports.sip,
            registrations(&sw),
            phone.diagnostics()
        )
    });
    let ua = binding["user_agent"].as_str().unwrap_or("");
    assert!(
        ua.contains("baresip"),
        "user_agent {ua:?} in binding {binding}"
    );
    let bt = binding["transport"].as_str().unwrap_or("");
    assert!(
        bt.eq_ignore_ascii_case(transport),
        "transport {bt:?} in binding {binding}, want {transport}"
    );
    let source = binding["source"].as_str().unwrap_or("");
    assert!(
        source.starts_with("127.0.0.1:"),
        "source {source:?} in binding {binding}"
    );
    if transport == "udp" {
        // Over UDP baresip sends from its listening port.
        assert_eq!(
            source,
            format!("127.0.0.1:{}", phone.ports.sip),
            "binding {binding}"
        );
    }
    let expires = binding["expires"].as_u64().unwrap_or(0);
    assert!(
        (1..=REGINT_S).contains(&expires),
        "expires {expires} in binding {binding}"
    );

    // 2. Re-registered: baresip refreshes before the expiry it was granted runs out.
    let ok_before = register_ok_count(&sw);
    let traced_ok_before = traced_register_oks(&phone.stdout_log());
    let refresh_deadline = Duration::from_secs(REGINT_S * 2 + 5);
    // A failed refresh ends the wait at once (baresip would retry only after 30 s).
    let ev = phone
        .wait_event(
            |e| e["type"] == "REGISTER_OK" || e["type"] == "REGISTER_FAIL",
            refresh_deadline,
        )
        .unwrap_or_else(|| {
            panic!(
                "no refreshing REGISTER_OK within {refresh_deadline:?}; switch: {:?}\n{}\n{}",
                registrations(&sw),
                register_metrics(&sw),
                phone.diagnostics()
            )
        });
    assert_eq!(
        ev["type"],
        "REGISTER_OK",
        "the refresh failed: {ev}; switch: {:?}\n{}\n{}",
        registrations(&sw),
        register_metrics(&sw),
        phone.diagnostics()
    );
    assert!(
        phone.wait_stdout(
            |log| traced_register_oks(log) > traced_ok_before,
            SWITCH_DEADLINE
        ),
        "REGISTER_OK without a traced 200 to a REGISTER\n{}",
        phone.diagnostics()
    );
    if let Some(before) = ok_before {
        let after = poll(SWITCH_DEADLINE, || {
            register_ok_count(&sw).filter(|&n| n > before)
        });
        assert!(
            after.is_some(),
            "softswitch_register_requests_total{{result=\"ok\"}} stayed at {before} across a \
             refresh"
        );
    }
    // The refresh is a new REGISTER in the same registration: same Call-ID, higher CSeq.
    let refreshed = poll(SWITCH_DEADLINE, || {
        phone_binding(&sw, &phone).filter(|b| b["cseq"].as_u64() > binding["cseq"].as_u64())
    });
    let refreshed = refreshed.unwrap_or_else(|| {
        panic!(
            "the binding's CSeq did not grow across the refresh (was {binding}): {:?}\n{}",
            registrations(&sw),
            phone.diagnostics()
        )
    });
    assert_eq!(refreshed["call_id"], binding["call_id"], "{refreshed}");

    // 3. De-registered on exit: `quit` sends REGISTER with expires=0 first. The binding
    // must go well before it would have expired by itself, or this proves nothing.
    let seen_at = Instant::now();
    let remaining = refreshed["expires"].as_u64().unwrap_or(0);
    assert!(
        remaining >= 3,
        "binding {refreshed} expires too soon to tell de-registration from expiry"
    );
    // `expires` is rounded; the binding is valid for at least `remaining - 1` s more.
    let expiry_floor = Duration::from_secs(remaining - 1);
    let traced_ok_before = traced_register_oks(&phone.stdout_log());
    let st = phone.quit(Duration::from_secs(10));
    assert!(
        st.is_some(),
        "baresip did not exit within 10 s of quit\n{}",
        phone.diagnostics()
    );
    let gone = poll(expiry_floor.saturating_sub(seen_at.elapsed()), || {
        phone_binding(&sw, &phone).is_none().then_some(())
    });
    assert!(
        gone.is_some(),
        "binding still listed {expiry_floor:?} after baresip quit: {:?}\n{}",
        registrations(&sw),
        phone.diagnostics()
    );
    assert!(
        seen_at.elapsed() < expiry_floor,
        "the binding went only when it could have expired by itself"
    );
    // baresip's side of it: a REGISTER with expires=0, answered 200 (waited for: the
    // reader of its stdout may still be draining the pipe after the exit).
    let deregistered = phone.wait_stdout(
        |log| {
            log.lines()
                .any(|l| l.starts_with("Contact:") && l.ends_with(";expires=0"))
                && traced_register_oks(log) > traced_ok_before
        },
        SWITCH_DEADLINE,
    );
    assert!(
        deregistered,
        "baresip's trace shows no REGISTER with Contact ...;expires=0 answered 200\n{}",
        phone.diagnostics()
    );
}

#[test]
fn baresip_registers_refreshes_and_deregisters_over_udp() {
    register_refresh_deregister("udp");
}

#[test]
fn baresip_registers_refreshes_and_deregisters_over_tcp() {
    register_refresh_deregister("tcp");
}

#[test]
fn reginfo_text_is_parsed_through_colour_codes() {
    let d = "\n--- User Agents (1) ---\n> sip:alice@127.0.0.1:55421                  \u{1b}[31mERR\u{1b}[;m  Expires 0s\n\n";
    let r = RegInfo::parse(d);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].aor, "sip:alice@127.0.0.1:55421");
    assert_eq!(r[0].state, "ERR");
    assert_eq!(r[0].expires_s, Some(0));
    assert!(!r[0].registered());
    let ok = "> sip:alice@127.0.0.1:5060 \u{1b}[32mOK \u{1b}[;m Expires 3s\n";
    assert!(RegInfo::parse(ok)[0].registered());
}

#[test]
fn contact_host_port_takes_the_uri_host_part() {
    assert_eq!(
        contact_host_port("<sip:alice-0x55@127.0.0.1:25000>;expires=60"),
        "127.0.0.1:25000"
    );
    assert_eq!(
        contact_host_port("sip:alice-0x55@127.0.0.1:25000;transport=tcp"),
        "127.0.0.1:25000"
    );
}
