//! Loopback end-to-end tests of the registrar: flows F1 (registration with digest
//! authentication) and F2 (de-registration) against the real `softswitch` binary.
//!
//! The client ([`common::digest::RegClient`]) computes the digest response itself, so the
//! switch's `auth` module is checked against an independent implementation (pinned to
//! RFC 7616 §3.9.1 below). Every assertion is about what a phone sees on the wire, then
//! what `GET /api/registrations` and `/metrics` say. Nothing sleeps to synchronise; the
//! only waits are for a nonce or a binding to age, in the tests about time passing.

mod common;

use common::digest::*;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------

const ALICE: (&str, &str) = ("alice", "alice-demo");
const BOB: (&str, &str) = ("bob", "bob-demo");
const CAROL: (&str, &str) = ("carol", "carol-demo");
const DAVE: (&str, &str) = ("dave", "dave-demo");

/// `GET /api/registrations` as text and parsed.
fn api_text(sw: &Switch) -> (String, Vec<Value>) {
    let (status, body) = http_get(sw.http, "/api/registrations");
    assert_eq!(status, 200, "/api/registrations status; body {body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let arr = v
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("not an array: {body}"));
    (body, arr)
}

/// The API's bindings of one AOR (`sip:alice@example.test`).
fn api_bindings(sw: &Switch, aor: &str) -> Vec<Value> {
    api_text(sw)
        .1
        .into_iter()
        .filter(|b| b["aor"] == aor)
        .collect()
}

fn metrics(sw: &Switch) -> String {
    let (status, body) = http_get(sw.http, "/metrics");
    assert_eq!(status, 200, "/metrics status");
    body
}

fn metric(body: &str, series: &str) -> f64 {
    metric_value(body, series).unwrap_or_else(|| panic!("series {series} missing from /metrics"))
}

fn reg_result(body: &str, result: &str) -> f64 {
    metric(
        body,
        &format!("softswitch_register_requests_total{{result=\"{result}\"}}"),
    )
}

fn auth_failures(body: &str, reason: &str) -> f64 {
    metric(
        body,
        &format!("softswitch_auth_failures_total{{reason=\"{reason}\"}}"),
    )
}

fn active(sw: &Switch) -> f64 {
    metric(&metrics(sw), "softswitch_registrations_active")
}

fn assert_status(resp: &str, code: u16) {
    assert_eq!(status_of(resp), Some(code), "expected {code}, got\n{resp}");
}

/// Asserts a 200 to REGISTER: status, a Date header (§10.3 step 8, RFC 1123 form), the
/// dialog-less echo of Call-ID/CSeq, and returns its contacts.
fn assert_register_ok(req: &str, resp: &str) -> Vec<ContactOf> {
    assert_status(resp, 200);
    let date = header(resp, "Date").unwrap_or_else(|| panic!("no Date in\n{resp}"));
    assert!(
        date.ends_with(" GMT") && date.len() == "Sat, 13 Nov 2010 23:29:00 GMT".len(),
        "Date not RFC 1123: {date}"
    );
    for (long, short) in [("Call-ID", "i"), ("CSeq", "CSeq")] {
        let want = header_values(req, long, Some(short));
        assert_eq!(
            header_values(resp, long, Some(short)).first(),
            want.first(),
            "{long} not echoed in\n{resp}"
        );
    }
    let to = header_values(resp, "To", Some("t"));
    assert!(
        to.first().is_some_and(|t| t.contains(";tag=")),
        "To has no tag in\n{resp}"
    );
    contacts_of(resp)
}

/// The contact of `resp` whose URI is `uri`.
fn contact_in<'a>(cs: &'a [ContactOf], uri: &str, resp: &str) -> &'a ContactOf {
    cs.iter()
        .find(|c| c.uri == uri)
        .unwrap_or_else(|| panic!("no contact {uri} in\n{resp}"))
}

/// Asserts `e` is `want` or one less (a second may pass between the request and the
/// listing; the switch rounds the remaining time up).
fn assert_expires_about(e: Option<u64>, want: u64, what: &str) {
    let e = e.unwrap_or_else(|| panic!("{what}: no expires"));
    assert!(
        e <= want && e + 1 >= want,
        "{what}: expires {e}, wanted about {want}"
    );
}

/// `[auth] algorithms` of a deployment that lists SHA-256 first, in a `--config` file (no
/// test overrides the algorithms from the environment).
const SHA256_FIRST: &str = "[auth]\nalgorithms = [\"SHA-256\", \"MD5\"]\n";

/// The switch with the demo users and [`SHA256_FIRST`].
fn start_sha256_first(env: &[(&str, &str)]) -> Switch {
    Switch::start_with_config("127.0.0.1", SHA256_FIRST, env)
}

/// The first REGISTER on the defaults gets 401 with one challenge: MD5, the one every
/// client answers; realm is the domain, qop "auth", an opaque value.
fn assert_f1_challenge(resp: &str) -> Vec<Challenge> {
    assert_challenges(resp, &["MD5"])
}

/// A 401 with one challenge per algorithm of `want`, in that order, sharing one nonce;
/// realm is the domain, qop "auth", an opaque value.
fn assert_challenges(resp: &str, want: &[&str]) -> Vec<Challenge> {
    assert_status(resp, 401);
    let raw = header_values(resp, "WWW-Authenticate", None);
    assert_eq!(raw.len(), want.len(), "WWW-Authenticate headers in\n{resp}");
    let cs = challenges(resp);
    let algs: Vec<&str> = cs.iter().map(|c| c.algorithm.as_str()).collect();
    assert_eq!(algs, want, "every one parses as Digest, in order: {raw:?}");
    for c in &cs {
        assert_eq!(c.realm, "example.test");
        assert!(c.is_quoted("realm"), "realm quoted: {raw:?}");
        assert_eq!(c.qop.as_deref(), Some("auth"));
        assert!(c.is_quoted("qop"), "qop is a quoted list: {raw:?}");
        assert!(
            c.opaque.as_deref().is_some_and(|o| !o.is_empty()),
            "opaque: {raw:?}"
        );
        assert!(!c.stale, "a first challenge is not stale: {raw:?}");
        assert!(c.nonce.len() >= 16, "nonce: {raw:?}");
    }
    assert!(
        cs.iter()
            .all(|c| c.nonce == cs[0].nonce && c.opaque == cs[0].opaque),
        "one nonce and opaque for all: {raw:?}"
    );
    cs
}

/// No digest material or password in the API.
fn assert_api_has_no_secrets(api: &str, c: &RegClient) {
    let lower = api.to_ascii_lowercase();
    for word in [
        "password",
        "nonce",
        "response",
        "authorization",
        "ha1",
        "cnonce",
    ] {
        assert!(!lower.contains(word), "API mentions {word}: {api}");
    }
    assert!(!api.contains(&c.password), "API has the password: {api}");
    assert!(!api.contains(&c.cnonce), "API has the cnonce: {api}");
    if let Some(ch) = &c.challenge {
        assert!(!api.contains(&ch.nonce), "API has the nonce: {api}");
        if let Some(o) = &ch.opaque {
            assert!(!api.contains(o.as_str()), "API has the opaque: {api}");
        }
    }
    if let Some(auth) = header(&c.last_request, "Authorization") {
        let resp = auth
            .split("response=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("");
        assert!(
            resp.len() >= 32 && !api.contains(resp),
            "API has the response: {api}"
        );
    }
}

/// The whole F1 flow for `c` with its default contact: 401 (checked), then 200 whose
/// Contact lists our binding with `expires=want`. Returns the 200.
fn f1(c: &mut RegClient, extra: &[&str], want: u64) -> String {
    let contact = c.contact();
    let resp = c.register(&[&contact], extra);
    // A client answering SHA-256 runs against a deployment listing it first.
    let offer: &[&str] = match c.alg {
        Alg::Sha256 => &["SHA-256", "MD5"],
        Alg::Md5 => &["MD5"],
    };
    assert_challenges(
        c.last_challenge_response.as_deref().expect("a 401 first"),
        offer,
    );
    let cs = assert_register_ok(&c.last_request, &resp);
    let ours = contact_in(&cs, &c.contact_uri(), &resp);
    assert_eq!(
        ours.expires,
        Some(want),
        "expires of our binding in\n{resp}"
    );
    resp
}

/// Asserts the API lists exactly one binding for `c`'s AOR: its contact, expires,
/// source, transport, user agent.
fn assert_api_binding(sw: &Switch, c: &RegClient, want_expires: u64) -> Value {
    let (text, all) = api_text(sw);
    let aor = format!("sip:{}@example.test", c.aor_user);
    let mine: Vec<&Value> = all.iter().filter(|b| b["aor"] == aor.as_str()).collect();
    assert_eq!(mine.len(), 1, "one binding for {aor}: {text}");
    let b = mine[0];
    assert_eq!(b["contact"], c.contact().as_str(), "{text}");
    let e = b["expires"].as_u64();
    assert_expires_about(e, want_expires, "API expires");
    assert_eq!(b["source"], c.local.to_string().as_str(), "source: {text}");
    assert_eq!(
        b["transport"]
            .as_str()
            .map(str::to_ascii_uppercase)
            .as_deref(),
        Some(c.transport()),
        "transport: {text}"
    );
    assert_eq!(b["user_agent"], c.user_agent.as_str(), "{text}");
    assert_api_has_no_secrets(&text, c);
    b.clone()
}

// ---------------------------------------------------------------------------------------
// The helper itself
// ---------------------------------------------------------------------------------------

#[test]
fn rfc7616_3_9_1_digest_helper_matches_the_rfc_example_md5_and_sha256() {
    let input = |alg| DigestInput {
        alg,
        user: "Mufasa",
        realm: "http-auth@example.org",
        password: "Circle of Life",
        method: "GET",
        uri: "/dir/index.html",
        nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        nc: "00000001",
        cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        qop: "auth",
    };
    assert_eq!(
        input(Alg::Md5).response(),
        "8ca523f5e9506fed4657c9700eebdbec"
    );
    assert_eq!(
        input(Alg::Sha256).response(),
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    );
    // And the RFC's challenge parses.
    let ch = parse_challenge(
        "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=SHA-256, \
         nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
         opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
    )
    .expect("parses");
    assert_eq!(ch.alg(), Some(Alg::Sha256));
    assert_eq!(ch.realm, "http-auth@example.org");
    assert_eq!(ch.qop.as_deref(), Some("auth, auth-int"));
    assert_eq!(
        ch.opaque.as_deref(),
        Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
    );
    assert!(!ch.stale);
}

// ---------------------------------------------------------------------------------------
// F1: registration
// ---------------------------------------------------------------------------------------

fn f1_over_udp(alg: Alg) {
    let sw = match alg {
        Alg::Sha256 => start_sha256_first(&[]),
        Alg::Md5 => Switch::start(&[]),
    };
    let before = metrics(&sw);
    assert_eq!(metric(&before, "softswitch_registrations_active"), 0.0);
    let mut c = RegClient::udp(sw.udp_addr(), ALICE.0, ALICE.1);
    c.alg = alg;
    f1(&mut c, &[], 3600);
    assert!(
        c.last_request
            .contains(&format!("algorithm={}", alg.name())),
        "we answered {}",
        alg.name()
    );
    assert_api_binding(&sw, &c, 3600);
    let m = metrics(&sw);
    assert_eq!(metric(&m, "softswitch_registrations_active"), 1.0);
    assert_eq!(
        reg_result(&m, "challenged") - reg_result(&before, "challenged"),
        1.0
    );
    assert_eq!(reg_result(&m, "ok") - reg_result(&before, "ok"), 1.0);
    // The normal first request (no credentials) is not an authentication failure.
    assert_eq!(
        auth_failures(&m, "missing"),
        auth_failures(&before, "missing")
    );
}

#[test]
fn f1_udp_sha256_first_deployment_401_two_challenges_then_200_contact_expires_date_api_and_metrics()
{
    f1_over_udp(Alg::Sha256);
}

#[test]
fn f1_udp_md5_default_401_one_challenge_then_200_contact_expires_date_api_and_metrics() {
    f1_over_udp(Alg::Md5);
}

#[test]
fn f1_tcp_sha256_register_200_binding_has_transport_tcp_and_connection_source() {
    let sw = start_sha256_first(&[]);
    let mut c = RegClient::tcp(sw.tcp_addr(), BOB.0, BOB.1);
    c.alg = Alg::Sha256;
    let resp = f1(&mut c, &["Expires: 1800"], 1800);
    assert!(
        header_values(&resp, "Via", Some("v"))
            .first()
            .is_some_and(|v| v.starts_with("SIP/2.0/TCP")),
        "Via echoed: {resp}"
    );
    let b = assert_api_binding(&sw, &c, 1800);
    assert_eq!(
        b["transport"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("tcp")
    );
    assert_eq!(active(&sw), 1.0);
    // A refresh over the same connection keeps one binding.
    let contact = c.contact();
    let req = c.request(&[&contact], &["Expires: 1200"]);
    let resp = c.send(&req);
    let cs = assert_register_ok(&req, &resp);
    assert_eq!(contact_in(&cs, &c.contact_uri(), &resp).expires, Some(1200));
    assert_eq!(cs.len(), 1, "one binding: {resp}");
    assert_api_binding(&sw, &c, 1200);
}

// ---------------------------------------------------------------------------------------
// Digest: stale nonce, replayed nonce count, wrong password, blocking
// ---------------------------------------------------------------------------------------

#[test]
fn rfc7616_3_3_nonce_older_than_lifetime_401_stale_true_then_new_nonce_200() {
    let sw = Switch::start(&[("SOFTSWITCH_AUTH_NONCE_LIFETIME_S", "1")]);
    let mut c = RegClient::udp(sw.udp_addr(), ALICE.0, ALICE.1);
    let contact = c.contact();
    let req = c.request(&[&contact], &[]);
    let first = c.send(&req);
    assert_f1_challenge(&first);
    let old = c.take_challenge(&first);
    // The test is about time passing: let the nonce become older than its 1 s lifetime
    // (the switch counts whole seconds, so more than two must pass).
    std::thread::sleep(Duration::from_millis(2200));
    let before = metrics(&sw);
    let req = c.request(&[&contact], &[]);
    let resp = c.send(&req);
    assert_status(&resp, 401);
    let cs = challenges(&resp);
    assert_eq!(cs.len(), 1, "the whole (default) list again:\n{resp}");
    assert!(
        cs.iter().all(|ch| ch.stale),
        "stale=true on every challenge:\n{resp}"
    );
    assert_ne!(cs[0].nonce, old.nonce, "a fresh nonce");
    let m = metrics(&sw);
    assert_eq!(reg_result(&m, "stale") - reg_result(&before, "stale"), 1.0);
    assert_eq!(
        auth_failures(&m, "stale_nonce") - auth_failures(&before, "stale_nonce"),
        1.0
    );
    assert!(api_bindings(&sw, "sip:alice@example.test").is_empty());
    // Re-authenticate with the new nonce at once.
    c.take_challenge(&resp);
    let req = c.request(&[&contact], &[]);
    let resp = c.send(&req);
    let cs = assert_register_ok(&req, &resp);
    assert_eq!(contact_in(&cs, &c.contact_uri(), &resp).expires, Some(3600));
    assert_api_binding(&sw, &c, 3600);
}

#[test]
fn rfc7616_3_4_replayed_nonce_count_401_stale_true_then_incremented_nc_200() {
    let sw = Switch::start(&[]);
    let mut c = RegClient::udp(sw.udp_addr(), ALICE.0, ALICE.1);
    f1(&mut c, &[], 3600);
    assert_eq!(c.nc, 1);
    let before = metrics(&sw);
    // A new request (new branch, CSeq + 1) with the same nonce and the same nc.
    c.nc = 0;
    let contact = c.contact();
    let req = c.request(&[&contact], &["Expires: 600"]);
    assert!(req.contains("nc=00000001"));
    let resp = c.send(&req);
    assert_status(&resp, 401);
    let cs = challenges(&resp);
    assert!(
        !cs.is_empty() && cs.iter().all(|ch| ch.stale),
        "stale=true:\n{resp}"
    );
    let m = metrics(&sw);
    assert_eq!(
        auth_failures(&m, "nc_replay") - auth_failures(&before, "nc_replay"),
        1.0
    );
    assert_eq!(reg_result(&m, "stale") - reg_result(&before, "stale"), 1.0);
    // Not applied: the binding keeps its 3600.
    assert_api_binding(&sw, &c, 3600);
    // The same nonce with nc incremented is fine.
    c.nc = 1;
    let req = c.request(&[&contact], &["Expires: 600"]);
    assert!(req.contains("nc=00000002"));
    let resp = c.send(&req);
    let cs = assert_register_ok(&req, &resp);
    assert_eq!(contact_in(&cs, &c.contact_uri(), &resp).expires, Some(600));
    assert_api_binding(&sw, &c, 600);
}

#[test]
fn auth_wrong_password_401_counted_then_403_at_max_failures_and_source_stays_blocked() {
    let sw = Switch::start(&[
        ("SOFTSWITCH_AUTH_MAX_FAILURES", "3"),
        ("SOFTSWITCH_AUTH_BLOCK_S", "60"),
    ]);
    let m0 = metrics(&sw);
    let mut c = RegClient::udp(sw.udp_addr(), ALICE.0, "not-alices-password");
    let contact = c.contact();
    let req = c.request(&[&contact], &[]);
    let first = c.send(&req);
    assert_f1_challenge(&first);
    c.take_challenge(&first);
    // Failures 1 and 2: a fresh challenge each time, counted as wrong_password.
    for n in 1..=2 {
        let req = c.request(&[&contact], &[]);
        let resp = c.send(&req);
        assert_status(&resp, 401);
        let cs = challenges(&resp);
        assert_eq!(cs.len(), 1, "a fresh challenge after failure {n}:\n{resp}");
        assert!(
            cs.iter().all(|ch| !ch.stale),
            "wrong password is not stale:\n{resp}"
        );
        let m = metrics(&sw);
        assert_eq!(
            auth_failures(&m, "wrong_password") - auth_failures(&m0, "wrong_password"),
            f64::from(n)
        );
    }
    // Failure 3 reaches the limit: 403.
    let req = c.request(&[&contact], &[]);
    let resp = c.send(&req);
    assert_status(&resp, 403);
    assert!(
        header(&resp, "WWW-Authenticate").is_none(),
        "no challenge in 403:\n{resp}"
    );
    let m = metrics(&sw);
    assert_eq!(
        auth_failures(&m, "too_many_failures") - auth_failures(&m0, "too_many_failures"),
        1.0
    );
    // While blocked, even the right password, and even a request without credentials,
    // get 403 from this source.
    c.password = ALICE.1.to_string();
    let req = c.request(&[&contact], &[]);
    let resp = c.send(&req);
    assert_status(&resp, 403);
    let mut fresh = RegClient::udp(sw.udp_addr(), ALICE.0, ALICE.1);
    let contact2 = fresh.contact();
    let req = fresh.request(&[&contact2], &[]);
    let resp = fresh.send(&req);
    assert_status(&resp, 403);
    let m = metrics(&sw);
    assert_eq!(
        auth_failures(&m, "blocked") - auth_failures(&m0, "blocked"),
        2.0
    );
    assert!(reg_result(&m, "forbidden") - reg_result(&m0, "forbidden") >= 3.0);
    assert_eq!(
        auth_failures(&m, "wrong_password") - auth_failures(&m0, "wrong_password"),
        2.0
    );
    assert!(api_text(&sw).1.is_empty(), "nothing registered");
    assert_eq!(metric(&m, "softswitch_registrations_active"), 0.0);
}

// ---------------------------------------------------------------------------------------
// §10.3 refusals
// ---------------------------------------------------------------------------------------

#[test]
fn rfc3261_10_3_step_4_authenticated_as_alice_registering_bobs_aor_403() {
    let sw = Switch::start(&[]);
    let m0 = metrics(&sw);
    let mut c = RegClient::udp(sw.udp_addr(), ALICE.0, ALICE.1);
    c.aor_user = "bob".into();
    let contact = c.contact();
    let resp = c.register(&[&contact], &[]);
    assert_f1_challenge(c.last_challenge_response.as_deref().expect("401 first"));
    assert!(c.last_request.contains("username=\"alice\""));
    assert_status(&resp, 403);
    assert!(
        reason_of(&resp).contains("address-of-record"),
        "reason: {}",
        reason_of(&resp)
    );
    assert!(api_text(&sw).1.is_empty());
    let m = metrics(&sw);
    assert_eq!(
        reg_result(&m, "forbidden") - reg_result(&m0, "forbidden"),
        1.0
    );
    assert_eq!(metric(&m, "softswitch_registrations_active"), 0.0);
}

#[test]
fn rfc3261_10_3_unknown_user_401_never_404_and_to_in_another_domain_404_after_auth() {
    let sw = Switch::start(&[]);
    let m0 = metrics(&sw);
    // An unknown user is challenged exactly like a known one (no enumeration).
    let mut known = RegClient::udp(sw.udp_addr(), ALICE.0, ALICE.1);
    let kc = known.contact();
    let req = known.request(&[&kc], &[]);
    let known_401 = known.send(&req);
    let known_algs: Vec<String> = assert_f1_challenge(&known_401)
        .into_iter()
        .map(|c| c.algorithm)
        .collect();
    let mut zed = RegClient::udp(sw.udp_addr(), "zed", "zed-demo");
    let contact = zed.contact();
    let req = zed.request(&[&contact], &[]);
    let first = zed.send(&req);
    let zed_algs: Vec<String> = assert_f1_challenge(&first)
        .into_iter()
        .map(|c| c.algorithm)
        .collect();
    assert_eq!(
        zed_algs, known_algs,
        "same challenges for a user who does not exist"
    );
    assert_eq!(reason_of(&first), reason_of(&known_401));
    // Answering the challenge does not help: 401 again, never 404.
    zed.take_challenge(&first);
    for _ in 0..2 {
        let req = zed.request(&[&contact], &[]);
        let resp = zed.send(&req);
        assert_status(&resp, 401);
        assert_eq!(challenges(&resp).len(), 1, "{resp}");
    }
    let m = metrics(&sw);
    assert_eq!(
        auth_failures(&m, "unknown_user") - auth_failures(&m0, "unknown_user"),
        2.0
    );
    assert_eq!(reg_result(&m, "not_found"), reg_result(&m0, "not_found"));

    // To names another domain: challenged first (401), then, authenticated, 404 (the
    // registrar checks To after authentication, §10.3 steps 3 and 5).
    let mut foreign = RegClient::udp(sw.udp_addr(), ALICE.0, ALICE.1);
    foreign.aor_domain = "other.test".into();
    let contact = foreign.contact();
    let resp = foreign.register(&[&contact], &[]);
    assert_status(
        foreign.last_challenge_response.as_deref().expect("401"),
        401,
    );
    assert!(foreign.last_request.contains("To: <sip:alice@other.test>"));
    assert_status(&resp, 404);
    let m = metrics(&sw);
    assert_eq!(
        reg_result(&m, "not_found") - reg_result(&m0, "not_found"),
        1.0
    );

    // A Request-URI of another domain is not ours to register in: 403 before any
    // challenge (no relaying, §10.3 step 1).
    let s = udp_client(sw.udp_addr());
    let msg = sip_request(
        "REGISTER",
        "sip:other.test",
        "UDP",
        &host_port(s.local_addr().expect("local")),
        ";rport",
        &token(),
        1,
        &["Contact: <sip:alice@127.0.0.1:5070>"],
        "",
    );
    s.send_to(msg.as_bytes(), sw.udp_addr()).expect("send");
    let resp = udp_responses(&s, ANSWER_DEADLINE)
        .pop()
        .expect("an answer to the foreign Request-URI");
    assert_status(&resp, 403);
    assert!(header(&resp, "WWW-Authenticate").is_none(), "{resp}");
    assert!(api_text(&sw).1.is_empty());
}

/// What a prober sees of a 401/403: the status line and each WWW-Authenticate value with
/// its nonce blanked (a fresh one each time; the opaque value is one per process).
fn seen(resp: &str) -> (String, Vec<String>) {
    let status = resp.lines().next().unwrap_or_default().to_string();
    let values = header_values(resp, "WWW-Authenticate", None)
        .into_iter()
        .map(|v| {
            match challenges(&format!("SIP/2.0 401 x\r\nWWW-Authenticate: {v}\r\n\r\n")).first() {
                Some(c) => v.replace(&c.nonce, "NONCE"),
                None => v.to_string(),
            }
        })
        .collect();
    (status, values)
}

/// REGISTERs for `user` from its own source address `ip`: one without credentials, then
/// answers to the topmost challenge of each 401 (as RFC 8760 §2.3 clients do, and as
/// those that take their strongest), `rounds` of them or until a final answer other than
/// 401. Returns what each response showed.
fn probe(
    sw: &Switch,
    ip: &str,
    user: &str,
    password: &str,
    rounds: usize,
) -> Vec<(String, Vec<String>)> {
    let mut c = RegClient::udp_from(sw.udp_addr(), ip, user, password);
    let contact = c.contact();
    let req = c.request(&[&contact], &[]);
    let mut resp = c.send(&req);
    let mut out = vec![seen(&resp)];
    for _ in 0..rounds {
        if status_of(&resp) != Some(401) {
            break;
        }
        let top = challenges(&resp)
            .first()
            .and_then(|ch| ch.alg())
            .unwrap_or_else(|| panic!("a challenge we can answer in\n{resp}"));
        c.alg = top;
        c.take_challenge(&resp);
        let req = c.request(&[&contact], &[]);
        resp = c.send(&req);
        out.push(seen(&resp));
    }
    out
}

/// A name that is not a user, a user stored as an MD5 HA1 only, and a user with a
/// password, all answering with a wrong password (the MD5-only user's SHA-256 answer
/// cannot be right whatever its password), see the same challenges, re-challenges and
/// 403, on the defaults and on a deployment listing SHA-256 first; the MD5-only user
/// with its right password then registers through the same re-challenge (not locked out).
#[test]
fn auth_unknown_name_and_md5_ha1_only_user_see_the_same_challenges_re_challenges_and_block() {
    let ha1 = Alg::Md5.hash("md5only:example.test:md5only-pw");
    let users = format!(
        "[[users]]\nuser = \"md5only\"\nha1 = \"{ha1}\"\n\n\
         [[users]]\nuser = \"full\"\npassword = \"full-pw\"\n"
    );
    for (auth, first_offer, second_offer) in [
        ("", &["MD5"][..], &["MD5"][..]),
        (SHA256_FIRST, &["SHA-256", "MD5"][..], &["MD5"][..]),
    ] {
        let cfg = format!("{auth}max_failures = 3\n{users}");
        let cfg = if auth.is_empty() {
            format!("[auth]\n{cfg}")
        } else {
            cfg
        };
        let sw = Switch::start_with_config("127.0.0.1", &cfg, &[]);
        let ghost = probe(&sw, "127.0.0.2", "ghost", "guess", 4);
        let md5only = probe(&sw, "127.0.0.3", "md5only", "guess", 4);
        let full = probe(&sw, "127.0.0.4", "full", "guess", 4);
        assert_eq!(
            md5only, ghost,
            "[auth] {auth:?}: MD5-HA1-only user against no user"
        );
        assert_eq!(
            full, ghost,
            "[auth] {auth:?}: password user against no user"
        );
        // What that sequence is: the list, the list without the algorithm just answered,
        // and 403 at the third failure.
        let algs = |v: &[String]| -> Vec<String> {
            v.iter()
                .filter_map(|c| c.split("algorithm=").nth(1))
                .map(|r| r.split(',').next().unwrap_or_default().to_string())
                .collect()
        };
        assert_eq!(ghost.len(), 4, "{ghost:?}");
        assert!(ghost[0].0.starts_with("SIP/2.0 401"), "{ghost:?}");
        assert_eq!(algs(&ghost[0].1), first_offer, "{ghost:?}");
        assert_eq!(algs(&ghost[1].1), second_offer, "{ghost:?}");
        assert!(ghost[3].0.starts_with("SIP/2.0 403"), "{ghost:?}");
        assert!(ghost[3].1.is_empty(), "{ghost:?}");
        // The MD5-only user's right password: registered after the same first steps.
        let ok = probe(&sw, "127.0.0.5", "md5only", "md5only-pw", 3);
        let last = ok.last().map(|s| s.0.clone()).unwrap_or_default();
        assert!(last.starts_with("SIP/2.0 200"), "[auth] {auth:?}: {ok:?}");
        assert_eq!(ok[0], ghost[0], "the same first challenge");
        if second_offer != first_offer {
            assert_eq!(ok[1], ghost[1], "the same re-challenge after SHA-256");
        }
        let m = metrics(&sw);
        if !auth.is_empty() {
            assert!(auth_failures(&m, "no_credential") >= 1.0, "{m}");
        }
        // An INVITE's 407 is built the same way, for the From user.
        assert_eq!(
            invite_challenge(&sw, "md5only"),
            invite_challenge(&sw, "ghost"),
            "[auth] {auth:?}: 407 for an MD5-HA1-only caller against no user"
        );
    }
}

/// The Proxy-Authenticate values (nonce blanked) of the 407 to an INVITE from `from`.
fn invite_challenge(sw: &Switch, from: &str) -> Vec<String> {
    let s = udp_client(sw.udp_addr());
    let me = host_port(s.local_addr().expect("local"));
    let b = token();
    let msg = format!(
        "INVITE sip:full@example.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{b};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{from}@example.test>;tag={b}\r\nTo: <sip:full@example.test>\r\n\
         Call-ID: {b}@client\r\nCSeq: 1 INVITE\r\nContact: <sip:{from}@{me}>\r\nContent-Length: 0\r\n\r\n"
    );
    s.send_to(msg.as_bytes(), sw.udp_addr()).expect("send");
    let resp = udp_responses(&s, ANSWER_DEADLINE)
        .into_iter()
        .find(|r| status_of(r) == Some(407))
        .unwrap_or_else(|| panic!("a 407 to the INVITE from {from}"));
    let values: Vec<String> = header_values(&resp, "Proxy-Authenticate", None)
        .into_iter()
        .map(str::to_string)
        .collect();
    let nonce = values
        .first()
        .and_then(|v| v.split("nonce=\"").nth(1))
        .and_then(|r| r.split('"').next())
        .unwrap_or_default()
        .to_string();
    assert!(!nonce.is_empty(), "{resp}");
    values.iter().map(|v| v.replace(&nonce, "NONCE")).collect()
}

#[test]
fn rfc3261_10_3_step_7_expires_10_below_min_60_423_with_min_expires() {
    let sw = Switch::start(&[]);
    let m0 = metrics(&sw);
    let mut c = RegClient::udp(sw.udp_addr(), ALICE.0, ALICE.1);
    let contact = c.contact();
    let resp = c.register(&[&contact], &["Expires: 10"]);
    assert_status(&resp, 423);
    assert_eq!(header(&resp, "Min-Expires"), Some("60"), "{resp}");
    assert!(contacts_of(&resp).is_empty());
    // The contact parameter form too.
    let with_param = format!("{contact};expires=30");
    let req = c.request(&[&with_param], &[]);
    let resp = c.send(&req);
    assert_status(&resp, 423);
    assert_eq!(header(&resp, "Min-Expires"), Some("60"));
    let m = metrics(&sw);
    assert_eq!(
        reg_result(&m, "interval_too_brief") - reg_result(&m0, "interval_too_brief"),
        2.0
    );
    assert!(api_text(&sw).1.is_empty());
    // At the minimum it is accepted.
    let req = c.request(&[&contact], &["Expires: 60"]);
    let resp = c.send(&req);
    let cs = assert_register_ok(&req, &resp);
    assert_eq!(contact_in(&cs, &c.contact_uri(), &resp).expires, Some(60));
}

#[test]
fn rfc3261_10_3_step_6_wildcard_without_expires_0_400_with_expires_0_200_removes_all() {
    let sw = Switch::start(&[]);
    let mut c = RegClient::udp(sw.udp_addr(), ALICE.0, ALICE.1);
    let a = "<sip:alice@127.0.0.1:6001>";
    let b = "<sip:alice@127.0.0.1:6002>";
    let resp = c.register(&[a, b], &[]);
    let cs = assert_register_ok(&c.last_request, &resp);
    assert_eq!(cs.len(), 2, "{resp}");
    assert_eq!(active(&sw), 2.0);
    let m0 = metrics(&sw);
    for extra in [&[][..], &["Expires: 60"][..]] {
        let req = c.request(&["*"], extra);
        let resp = c.send(&req);
        assert_status(&resp, 400);
        assert!(
            reason_of(&resp).contains("Expires: 0"),
            "{}",
            reason_of(&resp)
        );
    }
    // `*` together with another contact is refused as well.
    let req = c.request(&["*", a], &["Expires: 0"]);
    assert_status(&c.send(&req), 400);
    let m = metrics(&sw);
    assert_eq!(
        reg_result(&m, "bad_request") - reg_result(&m0, "bad_request"),
        3.0
    );
    assert_eq!(api_bindings(&sw, "sip:alice@example.test").len(), 2);
    // With Expires: 0 every binding goes; the 200 has no Contact.
    let req = c.request(&["*"], &["Expires: 0"]);
    let resp = c.send(&req);
    let cs = assert_register_ok(&req, &resp);
    assert!(cs.is_empty(), "no Contact in\n{resp}");
    assert!(api_text(&sw).1.is_empty());
    assert_eq!(active(&sw), 0.0);
}

// ---------------------------------------------------------------------------------------
// F2: de-registration, each way
// ---------------------------------------------------------------------------------------

fn f2(way: &str) {
    let sw = Switch::start(&[]);
    let mut c = RegClient::udp(sw.udp_addr(), CAROL.0, CAROL.1);
    f1(&mut c, &[], 3600);
    assert_api_binding(&sw, &c, 3600);
    assert_eq!(active(&sw), 1.0);
    let contact = c.contact();
    let with_param = format!("{contact};expires=0");
    let req = match way {
        "expires_header" => c.request(&[&contact], &["Expires: 0"]),
        "contact_param" => c.request(&[&with_param], &[]),
        "wildcard" => c.request(&["*"], &["Expires: 0"]),
        other => panic!("unknown way {other}"),
    };
    let resp = c.send(&req);
    let cs = assert_register_ok(&req, &resp);
    assert!(cs.is_empty(), "no bindings left, so no Contact:\n{resp}");
    assert!(
        api_bindings(&sw, "sip:carol@example.test").is_empty(),
        "binding gone from the API"
    );
    assert_eq!(active(&sw), 0.0, "gauge dropped");
    // A query confirms it.
    let req = c.request(&[], &[]);
    let resp = c.send(&req);
    assert!(assert_register_ok(&req, &resp).is_empty(), "{resp}");
}

#[test]
fn f2_deregister_with_expires_header_0_binding_gone_gauge_0() {
    f2("expires_header");
}

#[test]
fn f2_deregister_with_contact_expires_param_0_binding_gone_gauge_0() {
    f2("contact_param");
}

#[test]
fn f2_deregister_with_wildcard_and_expires_0_binding_gone_gauge_0() {
    f2("wildcard");
}

// ---------------------------------------------------------------------------------------
// §10.3 binding rules
// ---------------------------------------------------------------------------------------

#[test]
fn rfc3261_10_2_3_query_without_contact_200_lists_bindings_unchanged() {
    let sw = Switch::start(&[]);
    let mut c = RegClient::udp(sw.udp_addr(), ALICE.0, ALICE.1);
    f1(&mut c, &["Expires: 900"], 900);
    let before = assert_api_binding(&sw, &c, 900);
    let m0 = metrics(&sw);
    let req = c.request(&[], &[]);
    assert!(header(&req, "Contact").is_none());
    let resp = c.send(&req);
    let cs = assert_register_ok(&req, &resp);
    assert_eq!(cs.len(), 1, "{resp}");
    assert_expires_about(
        contact_in(&cs, &c.contact_uri(), &resp).expires,
        900,
        "query",
    );
    let after = assert_api_binding(&sw, &c, 900);
    for k in ["contact", "call_id", "cseq", "source", "transport"] {
        assert_eq!(before[k], after[k], "{k} changed by a query");
    }
    let m = metrics(&sw);
    assert_eq!(reg_result(&m, "query") - reg_result(&m0, "query"), 1.0);
    assert_eq!(reg_result(&m, "ok"), reg_result(&m0, "ok"));
    assert_eq!(metric(&m, "softswitch_registrations_active"), 1.0);
}

#[test]
fn rfc3261_10_3_several_contacts_in_one_register_and_across_call_ids_all_listed() {
    let sw = Switch::start(&[]);
    let mut c = RegClient::udp(sw.udp_addr(), DAVE.0, DAVE.1);
    let two = "<sip:dave@127.0.0.1:6001>;expires=300, <sip:dave@127.0.0.1:6002>;expires=600";
    let three = "<sip:dave@127.0.0.1:6003>";
    let resp = c.register(&[two, three], &["Expires: 900"]);
    let cs = assert_register_ok(&c.last_request, &resp);
    assert_eq!(cs.len(), 3, "{resp}");
    for (port, e) in [(6001, 300), (6002, 600), (6003, 900)] {
        let uri = format!("sip:dave@127.0.0.1:{port}");
        assert_eq!(contact_in(&cs, &uri, &resp).expires, Some(e), "{uri}");
    }
    // A second phone of the same AOR (its own Call-ID).
    let mut other = RegClient::udp(sw.udp_addr(), DAVE.0, DAVE.1);
    assert_ne!(other.call_id, c.call_id);
    let four = "<sip:dave@127.0.0.1:6004>";
    let resp = other.register(&[four], &["Expires: 1200"]);
    let cs = assert_register_ok(&other.last_request, &resp);
    assert_eq!(cs.len(), 4, "every binding of the AOR:\n{resp}");
    for (port, e) in [(6001, 300), (6002, 600), (6003, 900), (6004, 1200)] {
        let uri = format!("sip:dave@127.0.0.1:{port}");
        assert_expires_about(contact_in(&cs, &uri, &resp).expires, e, &uri);
    }
    let api = api_bindings(&sw, "sip:dave@example.test");
    assert_eq!(api.len(), 4, "{api:?}");
    for (port, e) in [(6001, 300), (6002, 600), (6003, 900), (6004, 1200)] {
        let contact = format!("<sip:dave@127.0.0.1:{port}>");
        let b = api
            .iter()
            .find(|b| b["contact"] == contact.as_str())
            .unwrap_or_else(|| panic!("{contact} not in {api:?}"));
        assert_expires_about(b["expires"].as_u64(), e, &contact);
    }
    let call_ids: std::collections::HashSet<&str> =
        api.iter().filter_map(|b| b["call_id"].as_str()).collect();
    assert_eq!(call_ids.len(), 2);
    assert_eq!(active(&sw), 4.0);
}

#[test]
fn rfc5626_6_same_sip_instance_from_a_new_contact_and_call_id_replaces_the_binding() {
    let sw = Switch::start(&[]);
    let inst = ";+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"";
    let a = format!("<sip:alice@127.0.0.1:6001>{inst}");
    let b = format!("<sip:alice-b@127.0.0.1:6002;transport=udp>{inst}");
    let mut first = RegClient::udp(sw.udp_addr(), ALICE.0, ALICE.1);
    let resp = first.register(&[&a], &[]);
    let cs = assert_register_ok(&first.last_request, &resp);
    assert_eq!(cs.len(), 1);
    assert_eq!(cs[0].uri, "sip:alice@127.0.0.1:6001");
    assert!(cs[0].params.contains("+sip.instance"), "{resp}");
    // The same device after a reboot: new address, new Call-ID, CSeq from 1.
    let mut second = RegClient::udp(sw.udp_addr(), ALICE.0, ALICE.1);
    let resp = second.register(&[&b], &[]);
    let cs = assert_register_ok(&second.last_request, &resp);
    assert_eq!(cs.len(), 1, "only the new contact:\n{resp}");
    assert_eq!(cs[0].uri, "sip:alice-b@127.0.0.1:6002;transport=udp");
    assert_eq!(cs[0].expires, Some(3600));
    let api = api_bindings(&sw, "sip:alice@example.test");
    assert_eq!(api.len(), 1, "{api:?}");
    assert_eq!(api[0]["contact"], b.as_str());
    assert_eq!(api[0]["call_id"], second.call_id.as_str());
    assert_eq!(active(&sw), 1.0);
}

#[test]
fn rfc3261_10_3_lower_cseq_same_call_id_500_unchanged_and_retransmission_gets_the_same_200() {
    let sw = Switch::start(&[]);
    let mut c = RegClient::udp(sw.udp_addr(), ALICE.0, ALICE.1);
    c.cseq = 9;
    let ok = f1(&mut c, &["Expires: 1000"], 1000);
    assert_eq!(c.cseq, 11);
    let stored = assert_api_binding(&sw, &c, 1000);
    assert_eq!(stored["cseq"], 11);
    // The identical retransmission (same branch) is answered again, statelessly (RFC 3261
    // §8.2.7): the same credentials from the same request are a retransmission, not a
    // replay, and the same Call-ID and CSeq are already applied, so it gets the same
    // response (but for Date, which may have ticked) and changes nothing.
    let m0 = metrics(&sw);
    let again = c.last_request.clone();
    let resp = c.send(&again);
    let undated = |r: &str| {
        r.lines()
            .filter(|l| !l.starts_with("Date:"))
            .collect::<Vec<_>>()
            .join("\r\n")
    };
    assert_eq!(
        undated(&resp),
        undated(&ok),
        "a retransmission gets the same response"
    );
    let m = metrics(&sw);
    for r in ["ok", "challenged", "stale"] {
        assert_eq!(
            reg_result(&m, r),
            reg_result(&m0, r),
            "{r}: nothing applied"
        );
    }
    assert_eq!(reg_result(&m, "query") - reg_result(&m0, "query"), 1.0);
    let m0 = metrics(&sw);
    // A new request with the same Call-ID and a lower CSeq is out of order: 500.
    c.cseq = 4;
    let contact = c.contact();
    let req = c.request(&[&contact], &["Expires: 0"]);
    assert!(req.contains("CSeq: 5 REGISTER"));
    let resp = c.send(&req);
    assert_status(&resp, 500);
    assert!(contacts_of(&resp).is_empty());
    let after = assert_api_binding(&sw, &c, 1000);
    assert_eq!(after["cseq"], 11, "binding unchanged");
    let m = metrics(&sw);
    assert_eq!(
        reg_result(&m, "out_of_order") - reg_result(&m0, "out_of_order"),
        1.0
    );
    assert_eq!(metric(&m, "softswitch_registrations_active"), 1.0);
}

// ---------------------------------------------------------------------------------------
// Time and persistence
// ---------------------------------------------------------------------------------------

#[test]
fn rfc3261_10_3_binding_expires_2s_disappears_from_api_and_gauge_returns_to_0() {
    let sw = Switch::start(&[("SOFTSWITCH_REGISTRAR_MIN_EXPIRES_S", "1")]);
    let mut c = RegClient::udp(sw.udp_addr(), ALICE.0, ALICE.1);
    f1(&mut c, &["Expires: 2"], 2);
    assert_eq!(active(&sw), 1.0);
    let registered = Instant::now();
    wait_until(
        Duration::from_secs(6),
        "binding expired from the API",
        || api_text(&sw).1.is_empty(),
    );
    assert!(
        registered.elapsed() >= Duration::from_millis(1500),
        "expired too early: {:?}",
        registered.elapsed()
    );
    wait_until(Duration::from_secs(6), "gauge back to 0", || {
        active(&sw) == 0.0
    });
    // A query now lists nothing.
    let req = c.request(&[], &[]);
    let resp = c.send(&req);
    assert!(assert_register_ok(&req, &resp).is_empty(), "{resp}");
}

#[test]
fn journal_sigterm_then_restart_in_same_dir_restores_binding_with_smaller_expires() {
    // The REGISTER's UDP server transaction waits out Timer J (64*T1) after its 200, and
    // a draining switch waits for its transactions up to sip.drain_timeout_s (30 s).
    let drain = [("SOFTSWITCH_SIP_DRAIN_TIMEOUT_S", "1")];
    let sw = Switch::start(&drain);
    let mut c = RegClient::udp(sw.udp_addr(), ALICE.0, ALICE.1);
    f1(&mut c, &["Expires: 3600"], 3600);
    let before = assert_api_binding(&sw, &c, 3600);
    let (status, dir) = sw.stop_keeping_dir("TERM", Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM exit: {status:?}"
    );
    assert!(
        dir.join("data/registrations.journal").exists(),
        "journal left in {dir:?}"
    );
    let sw = Switch::start_in(dir, "127.0.0.1", &drain);
    let api = api_bindings(&sw, "sip:alice@example.test");
    assert_eq!(api.len(), 1, "restored: {api:?}");
    for k in [
        "contact",
        "source",
        "transport",
        "user_agent",
        "call_id",
        "cseq",
    ] {
        assert_eq!(api[0][k], before[k], "{k} restored as it was");
    }
    // Counting down from the original registration, not from the restart.
    wait_until(
        Duration::from_secs(5),
        "restored expires below 3600",
        || {
            api_bindings(&sw, "sip:alice@example.test")
                .first()
                .and_then(|b| b["expires"].as_u64())
                .is_some_and(|e| e < 3600 && e > 3590)
        },
    );
    assert_eq!(active(&sw), 1.0);
    // The restored binding answers a query from the same phone on the new switch.
    c.switch = sw.udp_addr();
    c.challenge = None;
    let resp = c.register(&[], &[]);
    let cs = assert_register_ok(&c.last_request, &resp);
    assert_eq!(cs.len(), 1);
    assert!(cs[0].expires.is_some_and(|e| e < 3600), "{resp}");
}

#[test]
fn journal_kill_9_right_after_the_200s_then_restart_restores_every_acknowledged_binding() {
    let sw = Switch::start(&[]);
    let users = [ALICE, BOB, CAROL, DAVE];
    let mut contacts = Vec::new();
    for (u, p) in users {
        let mut c = RegClient::udp(sw.udp_addr(), u, p);
        let contact = c.contact();
        let resp = c.register(&[&contact], &["Expires: 1800"]);
        assert_register_ok(&c.last_request, &resp);
        contacts.push((format!("sip:{u}@example.test"), contact));
    }
    // A second contact for alice in the last request before the crash.
    let mut last = RegClient::udp(sw.udp_addr(), ALICE.0, ALICE.1);
    let resp = last.register(&["<sip:alice@127.0.0.1:6009>"], &[]);
    assert_register_ok(&last.last_request, &resp);
    contacts.push((
        "sip:alice@example.test".to_string(),
        "<sip:alice@127.0.0.1:6009>".to_string(),
    ));
    let (status, dir) = sw.stop_keeping_dir("KILL", Duration::from_secs(10));
    assert!(status.is_some_and(|s| !s.success()), "killed: {status:?}");
    let sw = Switch::start_in(dir, "127.0.0.1", &[]);
    let (text, api) = api_text(&sw);
    assert_eq!(api.len(), contacts.len(), "{text}");
    for (aor, contact) in &contacts {
        assert!(
            api.iter()
                .any(|b| b["aor"] == aor.as_str() && b["contact"] == contact.as_str()),
            "{aor} → {contact} not restored: {text}"
        );
    }
    assert_eq!(active(&sw), contacts.len() as f64);
}

// ---------------------------------------------------------------------------------------
// The demo directory off loopback: passwords generated once, kept across restarts
// ---------------------------------------------------------------------------------------

/// The switch in `dir` with its UDP listener on 0.0.0.0, so not loopback-only: with no
/// `[[users]]` its demo passwords are generated into `demo-users.txt` beside the CDR
/// file (`dir/cdr.jsonl`). Returns it with the loopback address of that listener, the
/// only address the test sends to.
fn start_off_loopback(dir: std::path::PathBuf) -> (Switch, std::net::SocketAddr) {
    let sw = Switch::start_in(
        dir,
        "127.0.0.1",
        &[("SOFTSWITCH_SIP_LISTEN", "udp:0.0.0.0:0,tcp:127.0.0.1:0")],
    );
    assert!(sw.udp_addr().ip().is_unspecified(), "{:?}", sw.udp);
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], sw.udp_addr().port()));
    (sw, to)
}

/// The file's text and its `user password` lines.
fn demo_users(path: &std::path::Path) -> (String, Vec<(String, String)>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let users = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (u, p) = l.split_once(' ').unwrap_or_else(|| panic!("line {l:?}"));
            (u.to_string(), p.to_string())
        })
        .collect();
    (text, users)
}

/// Registers every demo user with the file's password (200), and alice with the
/// loopback demo password (401: it is not valid off loopback).
fn register_demo_users(to: std::net::SocketAddr, users: &[(String, String)]) {
    for (user, password) in users {
        let mut c = RegClient::udp(to, user, password);
        let resp = c.register(&[], &[]);
        assert_register_ok(&c.last_request, &resp);
    }
    let mut c = RegClient::udp(to, ALICE.0, ALICE.1);
    assert_status(&c.register(&[], &[]), 401);
}

#[test]
fn demo_directory_off_loopback_passwords_generated_once_0600_and_accepted_after_restart() {
    use std::os::unix::fs::PermissionsExt;
    let (sw, to) = start_off_loopback(temp_dir("demo"));
    let path = sw.dir.join("demo-users.txt");
    let (text, users) = demo_users(&path);
    let names: Vec<&str> = users.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(names, ["alice", "bob", "carol", "dave"], "{path:?}");
    for (user, password) in &users {
        assert!(
            password.len() >= 16 && !password.contains("demo"),
            "{user}: a generated password, not a published one"
        );
    }
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode();
    assert_eq!(mode(&path) & 0o777, 0o600, "{path:?}");
    register_demo_users(to, &users);
    // A restart (kill -9, as a container re-creation on the same volume): the same
    // passwords, the file as it was, and a phone set up from it still registers.
    let (_, dir) = sw.stop_keeping_dir("KILL", Duration::from_secs(10));
    let (sw, to) = start_off_loopback(dir);
    assert_eq!(demo_users(&path).0, text, "{path:?} rewritten at restart");
    assert_eq!(mode(&path) & 0o777, 0o600);
    register_demo_users(to, &users);
    // Deleted, it is generated anew at the next start.
    let (_, dir) = sw.stop_keeping_dir("KILL", Duration::from_secs(10));
    std::fs::remove_file(&path).expect("delete");
    let (_sw, to) = start_off_loopback(dir);
    let (_, fresh) = demo_users(&path);
    assert_ne!(fresh, users, "new passwords after the file was deleted");
    register_demo_users(to, &fresh);
}

#[test]
fn demo_directory_off_loopback_malformed_file_stops_start_up_and_is_kept() {
    let dir = temp_dir("demo-bad");
    let path = dir.join("demo-users.txt");
    let text = "alice only-alice-here\n";
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("write demo-users.txt");
    }
    let log = dir.join("stderr.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_softswitch"))
        .env_clear()
        .env("SOFTSWITCH_SIP_LISTEN", "udp:0.0.0.0:0")
        .env("SOFTSWITCH_HTTP_LISTEN", "127.0.0.1:0")
        .env("SOFTSWITCH_BILLING_CDR_PATH", dir.join("cdr.jsonl"))
        .current_dir(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn softswitch");
    let end = Instant::now() + START_DEADLINE;
    let status = loop {
        match child.try_wait().expect("wait") {
            Some(st) => break Some(st),
            None if Instant::now() >= end => break None,
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.is_some_and(|s| !s.success()),
        "{status:?}: still running or exit 0 with a malformed {path:?}"
    );
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains("no line for bob"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("only-alice-here"),
        "a password in the log: {stderr}"
    );
    assert_eq!(std::fs::read_to_string(&path).expect("kept"), text);
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------------------------------
// Forms: IPv6, compact headers, RFC 4475 torture REGISTERs
// ---------------------------------------------------------------------------------------

#[test]
fn rfc5118_register_over_ipv6_with_ipv6_contact_200_api_shows_contact_and_v6_source() {
    let sw = Switch::start_on("[::1]", &[]);
    assert!(sw.udp_addr().is_ipv6());
    let mut c = RegClient::udp(sw.udp_addr(), ALICE.0, ALICE.1);
    assert!(c.local.is_ipv6());
    let contact = "<sip:alice@[::1]:5070>";
    let resp = c.register(&[contact], &[]);
    assert_f1_challenge(c.last_challenge_response.as_deref().expect("401 first"));
    let cs = assert_register_ok(&c.last_request, &resp);
    assert_eq!(
        contact_in(&cs, "sip:alice@[::1]:5070", &resp).expires,
        Some(3600)
    );
    let api = api_bindings(&sw, "sip:alice@example.test");
    assert_eq!(api.len(), 1, "{api:?}");
    assert_eq!(api[0]["contact"], contact);
    let source = api[0]["source"].as_str().unwrap_or("");
    assert_eq!(source, format!("[::1]:{}", c.local.port()), "IPv6 source");
    assert_eq!(active(&sw), 1.0);
}

#[test]
fn rfc3261_7_3_3_compact_form_register_whole_f1_flow_200_echoes_contact() {
    let sw = Switch::start(&[]);
    let mut c = RegClient::udp(sw.udp_addr(), BOB.0, BOB.1);
    c.compact = true;
    f1(&mut c, &[], 3600);
    let req = &c.last_request;
    for h in ["v: ", "f: ", "t: ", "i: ", "m: ", "l: "] {
        assert!(req.contains(&format!("\r\n{h}")), "compact {h} in\n{req}");
    }
    for long in [
        "\r\nVia:",
        "\r\nFrom:",
        "\r\nTo:",
        "\r\nCall-ID:",
        "\r\nContact:",
        "\r\nContent-Length:",
    ] {
        assert!(!req.contains(long), "no long {long} in\n{req}");
    }
    assert_api_binding(&sw, &c, 3600);
    // De-registration in compact form too.
    let contact = c.contact();
    let req = c.request(&[&contact], &["Expires: 0"]);
    let resp = c.send(&req);
    assert!(assert_register_ok(&req, &resp).is_empty());
    assert!(api_text(&sw).1.is_empty());
}

/// Reads an RFC 4475 message from the corpus.
fn torture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/torture/rfc4475")
        .join(name);
    String::from_utf8(std::fs::read(&path).expect("torture file")).expect("utf-8")
}

/// Addresses a torture REGISTER to the switch: `example.com` becomes `example.test` in
/// the Request-URI, To and From only (Contact and Via stay as the RFC wrote them).
fn to_our_domain(msg: &str) -> String {
    let (head, body) = msg.split_once("\r\n\r\n").expect("a head");
    let lines: Vec<String> = head
        .split("\r\n")
        .enumerate()
        .map(|(i, l)| {
            let name = l
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if i == 0 || ["to", "t", "from", "f"].contains(&name.as_str()) {
                l.replace("@example.com", "@example.test")
                    .replace("sip:example.com", "sip:example.test")
            } else {
                l.to_string()
            }
        })
        .collect();
    format!("{}\r\n\r\n{body}", lines.join("\r\n"))
}

/// What authentication needs of a retry: a new branch (a new transaction), CSeq + 1 and
/// the Authorization header, added before the blank line.
fn with_authorization(msg: &str, auth: &str) -> String {
    let (head, body) = msg.split_once("\r\n\r\n").expect("a head");
    let lines: Vec<String> = head
        .split("\r\n")
        .map(|l| {
            let lower = l.to_ascii_lowercase();
            if lower.starts_with("via:") || lower.starts_with("v:") {
                l.replacen(";branch=z9hG4bK", ";branch=z9hG4bKauth.", 1)
            } else if lower.starts_with("cseq:") {
                let n: u32 = l[5..]
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("CSeq number");
                format!("CSeq: {} REGISTER", n + 1)
            } else {
                l.to_string()
            }
        })
        .collect();
    format!(
        "{}\r\nAuthorization: {auth}\r\n\r\n{body}",
        lines.join("\r\n")
    )
}

/// The torture REGISTER `file`, from user `user` (configured with `password`): first as
/// the RFC wrote it (to our domain) → 401, then with digest → 200. Returns the request
/// and the 200's contacts.
fn torture_register(
    sw: &Switch,
    file: &str,
    user: &str,
    password: &str,
) -> (String, Vec<ContactOf>) {
    let msg = to_our_domain(&torture(file));
    let mut c = RegClient::udp(sw.udp_addr(), user, password);
    let first = c.send(&msg);
    assert_f1_challenge(&first);
    let ch = c.take_challenge(&first);
    let retry = with_authorization(&msg, &c.authorization(&ch, 1));
    let resp = c.send(&retry);
    assert_status(&resp, 200);
    let cs = assert_register_ok(&retry, &resp);
    (resp, cs)
}

fn torture_config(users: &[(&str, &str)]) -> String {
    users
        .iter()
        .map(|(u, p)| format!("[[users]]\nuser = \"{u}\"\npassword = \"{p}\"\n\n"))
        .collect()
}

#[test]
fn rfc4475_3_1_1_4_escnull_register_for_escaped_user_null_00_null_200_two_contacts() {
    let cfg = torture_config(&[("null-%00-null", "escnull-pw")]);
    // The user name is a valid RFC 3261 user part (escaped octets are allowed); the
    // configuration must accept it for such an AOR to be registrable at all.
    let dir = temp_dir("escnull-cfg");
    let file = dir.join("softswitch.toml");
    std::fs::write(&file, &cfg).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_softswitch"))
        .arg("--check-config")
        .arg(&file)
        .env_clear()
        .output()
        .expect("run --check-config");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "config with user \"null-%00-null\" refused: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let sw = Switch::start_with_config("127.0.0.1", &cfg, &[]);
    let (resp, cs) = torture_register(&sw, "escnull.dat", "null-%00-null", "escnull-pw");
    assert_eq!(cs.len(), 2, "two distinct contacts:\n{resp}");
    contact_in(&cs, "sip:%00@host5.example.com", &resp);
    contact_in(&cs, "sip:%00%00@host5.example.com", &resp);
    let api = api_bindings(&sw, "sip:null-%00-null@example.test");
    assert_eq!(
        api.len(),
        2,
        "AOR not truncated at %00: {:?}",
        api_text(&sw).0
    );
}

#[test]
fn rfc4475_3_3_14_regescrt_contact_with_escaped_route_header_200_kept_in_binding() {
    let sw = Switch::start_with_config("127.0.0.1", &torture_config(&[("user", "user-pw")]), &[]);
    let (resp, cs) = torture_register(&sw, "regescrt.dat", "user", "user-pw");
    assert_eq!(cs.len(), 1, "{resp}");
    assert_eq!(
        cs[0].uri,
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E"
    );
    assert_eq!(cs[0].expires, Some(3600));
    let api = api_bindings(&sw, "sip:user@example.test");
    assert_eq!(api.len(), 1);
    assert_eq!(
        api[0]["contact"],
        "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>"
    );
}

#[test]
fn rfc4475_3_3_12_cparam01_contact_header_parameter_200_kept_as_contact_param() {
    let sw = Switch::start_with_config(
        "127.0.0.1",
        &torture_config(&[("watson", "watson-pw")]),
        &[],
    );
    let (resp, cs) = torture_register(&sw, "cparam01.dat", "watson", "watson-pw");
    assert_eq!(cs.len(), 1, "{resp}");
    assert_eq!(cs[0].uri, "sip:+19725552222@gw1.example.net");
    assert_eq!(
        cs[0].params, ";unknownparam",
        "a header parameter, outside <>:\n{resp}"
    );
    assert_eq!(cs[0].expires, Some(3600));
    let api = api_bindings(&sw, "sip:watson@example.test");
    assert_eq!(api.len(), 1);
    assert_eq!(
        api[0]["contact"],
        "<sip:+19725552222@gw1.example.net>;unknownparam"
    );
}

#[test]
fn rfc4475_3_3_13_cparam02_contact_uri_parameter_200_kept_inside_the_uri() {
    let sw = Switch::start_with_config(
        "127.0.0.1",
        &torture_config(&[("watson", "watson-pw")]),
        &[],
    );
    let (resp, cs) = torture_register(&sw, "cparam02.dat", "watson", "watson-pw");
    assert_eq!(cs.len(), 1, "{resp}");
    assert_eq!(cs[0].uri, "sip:+19725552222@gw1.example.net;unknownparam");
    assert_eq!(cs[0].params, "", "{resp}");
    assert_eq!(cs[0].expires, Some(3600));
    let api = api_bindings(&sw, "sip:watson@example.test");
    assert_eq!(api.len(), 1);
    assert_eq!(
        api[0]["contact"],
        "<sip:+19725552222@gw1.example.net;unknownparam>"
    );
}

/// RFC 3327 §5.3: the registrar stores Path and returns it in the 200 when the UA says
/// `Supported: path`; without that it stores it but does not echo it (Kamailio's "lazy").
#[test]
fn rfc3327_path_stored_and_echoed_only_with_supported_path() {
    let sw = Switch::start(&[]);
    let path = "<sip:edge.example.test;lr>";
    let mut c = RegClient::udp(sw.udp_addr(), ALICE.0, ALICE.1);
    let contact = c.contact();
    let path_h = format!("Path: {path}");
    let resp = c.register(&[&contact], &[&path_h, "Supported: path"]);
    assert_status(&resp, 200);
    assert_eq!(header(&resp, "Path"), Some(path), "{resp}");
    let api = api_bindings(&sw, "sip:alice@example.test");
    assert_eq!(api.len(), 1);
    assert_eq!(api[0]["path"], serde_json::json!([path]));

    let mut d = RegClient::udp(sw.udp_addr(), BOB.0, BOB.1);
    let contact = d.contact();
    let resp = d.register(&[&contact], &[&path_h]);
    assert_status(&resp, 200);
    assert_eq!(
        header(&resp, "Path"),
        None,
        "no Supported: path, no Path:\n{resp}"
    );
    let api = api_bindings(&sw, "sip:bob@example.test");
    assert_eq!(
        api[0]["path"],
        serde_json::json!([path]),
        "stored all the same"
    );
}

/// No password, HA1, nonce, cnonce or response value reaches the log, even at the most
/// verbose level, nor the API or the metrics (issue: "no secrets in logs, metrics, API").
#[test]
fn no_digest_material_in_trace_logs_api_or_metrics() {
    let sw = Switch::start_logged(&[("SOFTSWITCH_LOG_LEVEL", "trace")]);
    let mut c = RegClient::udp(sw.udp_addr(), ALICE.0, ALICE.1);
    let contact = c.contact();
    let resp = c.register(&[&contact], &[]);
    assert_status(&resp, 200);
    let auth = header(&c.last_request, "Authorization").expect("credentials sent");
    let secrets: Vec<String> = ["nonce", "cnonce", "response", "opaque"]
        .iter()
        .filter_map(|p| {
            let start = auth.find(&format!("{p}=\""))? + p.len() + 2;
            let end = auth[start..].find('"')? + start;
            Some(auth[start..end].to_string())
        })
        .chain([ALICE.1.to_string()])
        .collect();
    assert!(secrets.len() >= 4, "{auth}");
    let (api, _) = api_text(&sw);
    let m = metrics(&sw);
    let log = sw.log();
    assert!(
        log.contains("registrations restored"),
        "the log was captured:\n{log}"
    );
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "log holds {s}");
        assert!(!api.contains(s.as_str()), "API holds {s}");
        assert!(!m.contains(s.as_str()), "metrics hold {s}");
    }
}
