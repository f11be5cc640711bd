//! CDRs through the real binary over loopback: every call attempt by an authenticated
//! user gets exactly one CDR, also when the switch refuses it before any call exists
//! (480 after a de-registration, 404, 482, 483, 503 while draining), field by field, and
//! is counted in `softswitch_calls_total{disposition}`; a challenge and an unauthenticated
//! refusal get none. A CDR that cannot be written (a real EFBIG: a file size limit set
//! with `prlimit(1)`) is kept and retried, its answer waits, `/readyz` says why, and
//! nothing is lost once the disk takes it. A second switch on the same files refuses to
//! start, naming the file.

mod common;

use common::digest::{header_values, parse_challenge, Alg, DigestInput, RegClient};
use common::*;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);

/// Every field interface.md names.
const FIELDS: [&str; 16] = [
    "call_id",
    "icid",
    "caller",
    "callee",
    "connected",
    "forwarded_from",
    "forward_reason",
    "start_time",
    "answer_time",
    "end_time",
    "duration_s",
    "billable_s",
    "disposition",
    "sip_status",
    "hangup_by",
    "held_s",
];

/// Reads datagrams until one satisfies `pred`, within `within`.
fn try_wait_for(sock: &UdpSocket, within: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        sock.set_read_timeout(Some(left)).unwrap();
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).to_string();
            if pred(&m) {
                return Some(m);
            }
        }
    }
}

fn wait_for(sock: &UdpSocket, what: &str, pred: impl Fn(&str) -> bool) -> String {
    try_wait_for(sock, WAIT, pred).unwrap_or_else(|| panic!("no {what} within {WAIT:?}"))
}

/// A final response to the INVITE with CSeq `cseq`.
fn is_final_for(m: &str, cseq: u32) -> bool {
    status_of(m).is_some_and(|c| c >= 200)
        && header(m, "CSeq").is_some_and(|c| c == format!("{cseq} INVITE"))
}

/// alice's phone: one call attempt (its own Call-ID and tag).
struct Caller {
    sock: UdpSocket,
    local: SocketAddr,
    switch: SocketAddr,
    call_id: String,
    tag: String,
}

impl Caller {
    fn new(switch: SocketAddr) -> Caller {
        let sock = udp_client(switch);
        let local = sock.local_addr().unwrap();
        Caller {
            sock,
            local,
            switch,
            call_id: format!("{}@alice.test", common::digest::token()),
            tag: common::digest::token(),
        }
    }

    /// An INVITE to `callee` with CSeq `cseq` and branch `branch`, `extra` header lines
    /// (each ending in CRLF) after the mandatory ones.
    fn invite(&self, callee: &str, cseq: u32, branch: &str, extra: &str) -> String {
        format!(
            "INVITE sip:{callee}@example.test SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK{branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag={t}\r\nTo: <sip:{callee}@example.test>\r\nCall-ID: {c}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:alice@{l}>\r\n{extra}Content-Length: 0\r\n\r\n",
            l = host_port(self.local),
            t = self.tag,
            c = self.call_id,
        )
    }

    fn send(&self, m: &str) {
        self.sock.send_to(m.as_bytes(), self.switch).unwrap();
    }

    /// INVITE without credentials → 407 (ACKed) → the `Proxy-Authorization` line (with
    /// CRLF) that answers its MD5 challenge for `callee` with `password`.
    fn credentials(&self, callee: &str, password: &str) -> String {
        self.send(&self.invite(callee, 1, "c1", ""));
        let r407 = wait_for(&self.sock, "407", |m| is_final_for(m, 1));
        assert_eq!(status_of(&r407), Some(407), "{r407}");
        let ack = format!(
            "ACK sip:{callee}@example.test SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bKc1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag={t}\r\nTo: {to}\r\nCall-ID: {c}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            l = host_port(self.local),
            t = self.tag,
            to = header(&r407, "To").unwrap(),
            c = self.call_id,
        );
        self.send(&ack);
        let ch = header_values(&r407, "Proxy-Authenticate", None)
            .into_iter()
            .filter_map(parse_challenge)
            .find(|c| c.alg() == Some(Alg::Md5))
            .expect("an MD5 challenge");
        let uri = format!("sip:{callee}@example.test");
        let response = DigestInput {
            alg: Alg::Md5,
            user: "alice",
            realm: &ch.realm,
            password,
            method: "INVITE",
            uri: &uri,
            nonce: &ch.nonce,
            nc: "00000001",
            cnonce: "cn1",
            qop: "auth",
        }
        .response();
        format!(
            "Proxy-Authorization: Digest username=\"alice\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"cn1\", opaque=\"{}\"\r\n",
            ch.realm,
            ch.nonce,
            ch.opaque.clone().unwrap_or_default()
        )
    }

    /// Sends `invite` (CSeq 2) and returns its final response.
    fn refused(&self, invite: &str) -> String {
        self.send(invite);
        wait_for(&self.sock, "the final response", |m| is_final_for(m, 2))
    }
}

/// Every line of the CDR file.
fn cdrs(sw: &Switch) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(sw.dir.join("cdr.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a CDR line is JSON"))
        .collect()
}

/// The CDRs with this Call-ID.
fn cdrs_of(sw: &Switch, call_id: &str) -> Vec<serde_json::Value> {
    cdrs(sw)
        .into_iter()
        .filter(|v| v["call_id"] == call_id)
        .collect()
}

/// The one CDR of a refused attempt, checked field by field: alice, the callee as
/// dialled, no answer, no forwarding, start = end, nothing billable, the status sent,
/// ended by the switch.
fn assert_refusal_cdr(sw: &Switch, call_id: &str, callee: &str, status: u16, disposition: &str) {
    let all = cdrs_of(sw, call_id);
    assert_eq!(all.len(), 1, "exactly one CDR for {call_id}: {all:?}");
    let cdr = &all[0];
    let keys: Vec<&str> = cdr
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = FIELDS.to_vec();
    want.sort_unstable();
    let mut got = keys.clone();
    got.sort_unstable();
    assert_eq!(got, want, "{cdr}");
    assert_eq!(cdr["call_id"], call_id, "{cdr}");
    assert_eq!(cdr["caller"], "sip:alice@example.test", "{cdr}");
    assert_eq!(cdr["callee"], format!("sip:{callee}@example.test"), "{cdr}");
    for absent in [
        "icid",
        "connected",
        "forwarded_from",
        "forward_reason",
        "answer_time",
    ] {
        assert!(cdr[absent].is_null(), "{absent}: {cdr}");
    }
    assert!(cdr["start_time"].is_string(), "{cdr}");
    assert_eq!(cdr["start_time"], cdr["end_time"], "{cdr}");
    assert_eq!(cdr["duration_s"], 0.0, "{cdr}");
    assert_eq!(cdr["billable_s"], 0, "{cdr}");
    assert_eq!(cdr["held_s"], 0.0, "{cdr}");
    assert_eq!(cdr["disposition"], disposition, "{cdr}");
    assert_eq!(cdr["sip_status"], status, "{cdr}");
    assert_eq!(cdr["hangup_by"], "switch", "{cdr}");
}

fn calls_total(sw: &Switch, disposition: &str) -> f64 {
    metric_now(
        sw,
        &format!("softswitch_calls_total{{disposition=\"{disposition}\"}}"),
    )
}

/// 480 after a de-registration (F2), 404, 482 (a loop), 483 (Max-Forwards 0) and 503
/// while draining, each from an authenticated caller: one CDR each, field by field,
/// counted by disposition, its answer sent once the CDR is on disk (the counter has
/// moved by then). A retransmission is answered again with the same To tag and no
/// second CDR; the 407 before each and the refusals of unauthenticated requests bill
/// nothing. (The switch answers 486 only as a callee's, relayed in a call: F6 in
/// `e2e_calls.rs` checks its CDR.)
#[test]
fn every_refused_attempt_gets_one_cdr_field_by_field() {
    let sw = Switch::start(&[]);
    let ours = host_port(sw.udp_addr());

    // F2: bob registers, then de-registers every binding; a call to him is 480.
    let mut bob = RegClient::udp(sw.udp_addr(), "bob", "bob-demo");
    let contact = bob.contact();
    assert_eq!(status_of(&bob.register(&[&contact], &[])), Some(200));
    let gone = bob.register(&["*"], &["Expires: 0"]);
    assert_eq!(status_of(&gone), Some(200), "{gone}");
    let a = Caller::new(sw.udp_addr());
    let creds = a.credentials("bob", "alice-demo");
    assert!(cdrs(&sw).is_empty(), "a 407 bills nothing");
    let r = a.refused(&a.invite("bob", 2, "a2", &creds));
    assert_eq!(status_of(&r), Some(480), "{r}");
    assert_eq!(
        calls_total(&sw, "no_answer"),
        1.0,
        "counted before the answer"
    );
    assert_refusal_cdr(&sw, &a.call_id, "bob", 480, "no_answer");
    let routing = r#"softswitch_sip_messages_rejected_total{reason="routing"}"#;
    assert_eq!(metric_now(&sw, routing), 1.0, "the 480 counted");

    // 404: no such user; its retransmission gets the same answer, no second CDR.
    let b = Caller::new(sw.udp_addr());
    let creds = b.credentials("nobody", "alice-demo");
    let inv = b.invite("nobody", 2, "b2", &creds);
    let r = b.refused(&inv);
    assert_eq!(status_of(&r), Some(404), "{r}");
    let again = b.refused(&inv);
    assert_eq!(status_of(&again), Some(404), "{again}");
    assert_eq!(
        header(&again, "To"),
        header(&r, "To"),
        "the same stateless answer"
    );
    assert_eq!(calls_total(&sw, "rejected"), 1.0);
    assert_refusal_cdr(&sw, &b.call_id, "nobody", 404, "rejected");
    assert_eq!(metric_now(&sw, routing), 3.0, "each 404 sent counted");

    // 482: our own Via in it (it went through us already), before authentication: the
    // credentials it carries are verified to bill it. Without credentials: no CDR.
    let c = Caller::new(sw.udp_addr());
    let creds = c.credentials("carol", "alice-demo");
    let looped = |caller: &Caller, creds: &str| {
        caller.invite("carol", 2, "c2", creds).replacen(
            "Max-Forwards:",
            &format!("Via: SIP/2.0/UDP {ours};branch=z9hG4bKours\r\nMax-Forwards:"),
            1,
        )
    };
    let r = c.refused(&looped(&c, &creds));
    assert_eq!(status_of(&r), Some(482), "{r}");
    assert_refusal_cdr(&sw, &c.call_id, "carol", 482, "rejected");
    let anonymous = Caller::new(sw.udp_addr());
    let r = anonymous.refused(&looped(&anonymous, ""));
    assert_eq!(status_of(&r), Some(482), "{r}");
    assert!(
        cdrs_of(&sw, &anonymous.call_id).is_empty(),
        "unauthenticated: no CDR"
    );

    // 483: Max-Forwards 0, refused by admission, before authentication.
    let d = Caller::new(sw.udp_addr());
    let creds = d.credentials("carol", "alice-demo");
    let inv = d
        .invite("carol", 2, "d2", &creds)
        .replacen("Max-Forwards: 70", "Max-Forwards: 0", 1);
    let r = d.refused(&inv);
    assert_eq!(status_of(&r), Some(483), "{r}");
    assert_refusal_cdr(&sw, &d.call_id, "carol", 483, "rejected");
    assert_eq!(calls_total(&sw, "rejected"), 3.0);

    // Wrong credentials on a refusal: the refusal stands, nobody is billed.
    let e = Caller::new(sw.udp_addr());
    let creds = e.credentials("carol", "not-alices");
    let inv = e
        .invite("carol", 2, "e2", &creds)
        .replacen("Max-Forwards: 70", "Max-Forwards: 0", 1);
    assert_eq!(status_of(&e.refused(&inv)), Some(483));
    assert!(
        cdrs_of(&sw, &e.call_id).is_empty(),
        "not authenticated: no CDR"
    );

    // 503 while draining: a ringing call keeps the switch draining (its transactions
    // are live); alice's next attempt, challenged before the drain, is refused 503.
    let mut bob = RegClient::udp(sw.udp_addr(), "bob", "bob-demo");
    let contact = bob.contact();
    assert_eq!(status_of(&bob.register(&[&contact], &[])), Some(200));
    let ringing = Caller::new(sw.udp_addr());
    let creds = ringing.credentials("bob", "alice-demo");
    ringing.send(&ringing.invite("bob", 2, "r2", &creds));
    wait_for(&ringing.sock, "100 Trying", |m| status_of(m) == Some(100));
    let f = Caller::new(sw.udp_addr());
    let creds = f.credentials("nobody", "alice-demo");
    sw.signal("TERM");
    wait_until(WAIT, "/readyz draining", || {
        http_get(sw.http, "/readyz") == (503, "draining\n".to_string())
    });
    let r = f.refused(&f.invite("nobody", 2, "f2", &creds));
    assert_eq!(status_of(&r), Some(503), "{r}");
    assert_refusal_cdr(&sw, &f.call_id, "nobody", 503, "failed");
    assert_eq!(calls_total(&sw, "failed"), 1.0);

    // Five attempts billed, five CDRs on disk: nothing else was written.
    assert_eq!(cdrs(&sw).len(), 5, "{:?}", cdrs(&sw));
    assert_eq!(metric_now(&sw, "softswitch_cdrs_written_total"), 5.0);
}

/// 503 for overload (`limits.max_transactions`: a ringing call's two transactions fill
/// a table of two) is billed as the draining 503 is: its credentials verified, one CDR,
/// `failed`, counted.
#[test]
fn an_overload_503_is_billed_too() {
    let sw = Switch::start(&[("SOFTSWITCH_LIMITS_MAX_TRANSACTIONS", "2")]);
    let mut bob = RegClient::udp(sw.udp_addr(), "bob", "bob-demo");
    let contact = bob.contact();
    assert_eq!(status_of(&bob.register(&[&contact], &[])), Some(200));
    let b = Caller::new(sw.udp_addr());
    let creds_b = b.credentials("bob", "alice-demo");
    let a = Caller::new(sw.udp_addr());
    let creds = a.credentials("nobody", "alice-demo");
    b.send(&b.invite("bob", 2, "r2", &creds_b));
    wait_for(&b.sock, "100 Trying", |m| status_of(m) == Some(100));
    let r = a.refused(&a.invite("nobody", 2, "a2", &creds));
    assert_eq!(status_of(&r), Some(503), "{r}");
    assert!(reason_of(&r).contains("overloaded"), "{r}");
    assert_refusal_cdr(&sw, &a.call_id, "nobody", 503, "failed");
    assert_eq!(calls_total(&sw, "failed"), 1.0);
}

/// A CDR that cannot be written: a real EFBIG (the CDR file's size limit lowered under
/// the running switch with `prlimit(1)`; the switch catches SIGXFSZ, so the write fails
/// as on a full disk instead of the signal killing the process, and its log file, on
/// the same "disk", fails too). The refused attempt's answer waits, a retransmission is absorbed, the
/// failures are counted, `softswitch_cdrs_pending` shows the CDR and `/readyz` is 503
/// with the reason; once the limit is lifted the retry stores it, the answer goes, the
/// switch is ready again, and the file holds it once.
#[test]
fn a_cdr_write_failure_is_retried_the_answer_waits_and_nothing_is_lost() {
    // The log goes to a file in the switch's directory, under the same size limit: the
    // line that reports the failure cannot be written either, and must not take the
    // writer (or the switch) down with it.
    let sw = Switch::start_logged(&[]);
    let prlimit = |limit: &str| {
        let st = Command::new("prlimit")
            .arg(format!("--pid={}", sw.pid()))
            .arg(format!("--fsize={limit}:"))
            .status()
            .expect("prlimit(1) (util-linux) must be installed");
        assert!(st.success(), "prlimit --fsize={limit}: {st:?}");
    };
    let a = Caller::new(sw.udp_addr());
    let creds = a.credentials("nobody", "alice-demo");
    // No file may grow past 64 bytes now: a CDR line is about 400.
    prlimit("64");
    let inv = a.invite("nobody", 2, "a2", &creds);
    a.send(&inv);
    wait_until(WAIT, "a failed CDR write", || {
        metric_now(&sw, "softswitch_cdr_write_failures_total") >= 1.0
    });
    let (code, why) = http_get(sw.http, "/readyz");
    assert_eq!(code, 503, "{why}");
    assert!(
        why.starts_with("cdr write failing: 1 CDRs not on disk yet") && why.contains("large"),
        "{why}"
    );
    assert_eq!(metric_now(&sw, "softswitch_cdrs_pending"), 1.0);
    assert_eq!(
        calls_total(&sw, "rejected"),
        0.0,
        "not counted before it is on disk"
    );
    // The retransmission is absorbed; and the answer is not sent while the CDR waits
    // (the failure count shows the writer tried again meanwhile).
    a.send(&inv);
    let tried = metric_now(&sw, "softswitch_cdr_write_failures_total");
    wait_until(WAIT, "another failed retry", || {
        metric_now(&sw, "softswitch_cdr_write_failures_total") > tried
    });
    assert_eq!(
        try_wait_for(&a.sock, Duration::from_millis(50), |m| is_final_for(m, 2)),
        None,
        "answered before its CDR was on disk"
    );
    assert_eq!(
        std::fs::metadata(sw.dir.join("cdr.jsonl")).unwrap().len(),
        0
    );

    // The disk takes writes again.
    prlimit("unlimited");
    let r = wait_for(&a.sock, "the 404 once its CDR is on disk", |m| {
        is_final_for(m, 2)
    });
    assert_eq!(status_of(&r), Some(404), "{r}");
    assert_refusal_cdr(&sw, &a.call_id, "nobody", 404, "rejected");
    assert_eq!(calls_total(&sw, "rejected"), 1.0);
    assert_eq!(metric_now(&sw, "softswitch_cdrs_pending"), 0.0);
    assert_eq!(metric_now(&sw, "softswitch_cdrs_written_total"), 1.0);
    assert!(metric_now(&sw, "softswitch_cdr_write_failures_total") >= 2.0);
    wait_until(WAIT, "/readyz ready again", || {
        http_get(sw.http, "/readyz") == (200, "ready\n".to_string())
    });
    // The retransmission that came meanwhile billed nothing more.
    assert_eq!(cdrs(&sw).len(), 1);
}

/// The headers a response copies from its request (§8.2.6.2), with To tag `to_tag`.
fn response_to(req: &str, status: u16, to_tag: &str, extra: &str, body: &str) -> String {
    let mut out = format!("SIP/2.0 {status} Whatever\r\n");
    for name in ["Via", "From", "Call-ID", "CSeq"] {
        for v in header_values(req, name, None) {
            out.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    let to = header(req, "To").expect("To");
    if to.contains(";tag=") {
        out.push_str(&format!("To: {to}\r\n"));
    } else {
        out.push_str(&format!("To: {to};tag={to_tag}\r\n"));
    }
    out.push_str(extra);
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out
}

const SDP: &str = "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";

/// A call's end while CDRs cannot be written: the callee answered the BYE, but the
/// caller's 200 for it waits until the call's CDR is on disk, and the call counts as
/// ended only then; once the disk takes writes again the 200 comes and the CDR is there
/// once.
#[test]
fn a_calls_end_waits_for_its_cdr_while_writes_fail() {
    let sw = Switch::start(&[]);
    let mut bob = RegClient::udp(sw.udp_addr(), "bob", "bob-demo");
    let contact = bob.contact();
    assert_eq!(status_of(&bob.register(&[&contact], &[])), Some(200));
    let bs = match &bob.conn {
        common::digest::Conn::Udp(s) => s,
        common::digest::Conn::Tcp(..) => unreachable!("a UDP client"),
    };
    let a = Caller::new(sw.udp_addr());
    let creds = a.credentials("bob", "alice-demo");
    let inv = a.invite("bob", 2, "a2", &creds).replacen(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
            SDP.len()
        ),
        1,
    );
    a.send(&inv);
    let b_inv = wait_for(bs, "the B-leg INVITE", |m| m.starts_with("INVITE "));
    let ok = response_to(
        &b_inv,
        200,
        "b1",
        &format!(
            "Contact: <sip:bob@{}>\r\nContent-Type: application/sdp\r\n",
            host_port(bob.local)
        ),
        SDP,
    );
    bs.send_to(ok.as_bytes(), sw.udp_addr()).unwrap();
    let a200 = wait_for(&a.sock, "the 200", |m| is_final_for(m, 2));
    assert_eq!(status_of(&a200), Some(200), "{a200}");
    let in_dialog = |method: &str, cseq: u32| {
        let target = header(&a200, "Contact")
            .and_then(|c| c.trim_start_matches('<').split('>').next())
            .expect("Contact in the 2xx")
            .to_string();
        format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK{method}{cseq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag={t}\r\nTo: {to}\r\nCall-ID: {c}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            l = host_port(a.local),
            t = a.tag,
            to = header(&a200, "To").unwrap(),
            c = a.call_id,
        )
    };
    a.send(&in_dialog("ACK", 2));
    wait_for(bs, "the B-leg ACK", |m| m.starts_with("ACK "));
    // The disk is full from now on; alice hangs up and bob answers the BYE.
    let st = Command::new("prlimit")
        .arg(format!("--pid={}", sw.pid()))
        .arg("--fsize=64:")
        .status()
        .expect("prlimit(1) (util-linux) must be installed");
    assert!(st.success(), "{st:?}");
    a.send(&in_dialog("BYE", 3));
    let b_bye = wait_for(bs, "the B-leg BYE", |m| m.starts_with("BYE "));
    bs.send_to(
        response_to(&b_bye, 200, "b1", "", "").as_bytes(),
        sw.udp_addr(),
    )
    .unwrap();
    wait_until(WAIT, "a failed CDR write", || {
        metric_now(&sw, "softswitch_cdr_write_failures_total") >= 1.0
    });
    let tried = metric_now(&sw, "softswitch_cdr_write_failures_total");
    wait_until(WAIT, "another failed retry", || {
        metric_now(&sw, "softswitch_cdr_write_failures_total") > tried
    });
    let bye_ok = |m: &str| status_of(m) == Some(200) && m.contains("3 BYE");
    assert_eq!(
        try_wait_for(&a.sock, Duration::from_millis(50), bye_ok),
        None,
        "the BYE answered before the call's CDR was on disk"
    );
    assert_eq!(http_get(sw.http, "/readyz").0, 503);
    assert_eq!(metric_now(&sw, "softswitch_calls_active"), 1.0);
    assert_eq!(calls_total(&sw, "answered"), 0.0);
    let st = Command::new("prlimit")
        .arg(format!("--pid={}", sw.pid()))
        .arg("--fsize=unlimited:")
        .status()
        .expect("prlimit");
    assert!(st.success(), "{st:?}");
    wait_for(&a.sock, "the 200 for the BYE", bye_ok);
    assert_eq!(calls_total(&sw, "answered"), 1.0);
    let all = cdrs_of(&sw, &a.call_id);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["disposition"], "answered");
    assert_eq!(all[0]["hangup_by"], "caller");
    wait_until(WAIT, "/readyz ready again", || {
        http_get(sw.http, "/readyz").0 == 200
    });
}

/// Runs a second switch in `dir` with `env` and returns its exit status and stderr; it
/// must exit on its own within the start deadline.
fn second_switch(
    dir: &std::path::Path,
    env: &[(String, String)],
) -> (std::process::ExitStatus, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_softswitch"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn softswitch");
    let deadline = Instant::now() + START_DEADLINE;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the second switch did not exit: it started on files in use");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    use std::io::Read;
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    (status, err)
}

/// A second switch started on the files of a running one exits non-zero at start-up
/// with an error naming the file: the binding journal (its lock file), and, given a
/// journal of its own, the CDR file. The first keeps serving.
#[test]
fn a_second_switch_on_the_same_files_refuses_to_start() {
    let sw = Switch::start(&[]);
    let env = Switch::env_for(&sw.dir);
    let (status, err) = second_switch(&sw.dir, &env);
    assert!(!status.success(), "{status:?}: {err}");
    assert!(
        err.contains("registrar.store_path")
            && err.contains("registrations.journal.lock")
            && err.contains("locked by another process"),
        "{err}"
    );
    let mut own_journal = env.clone();
    own_journal.push((
        "SOFTSWITCH_REGISTRAR_STORE_PATH".into(),
        "data/second.journal".into(),
    ));
    let (status, err) = second_switch(&sw.dir, &own_journal);
    assert!(!status.success(), "{status:?}: {err}");
    let cdr = sw.dir.join("cdr.jsonl");
    assert!(
        err.contains("billing.cdr_path")
            && err.contains(cdr.to_str().unwrap())
            && err.contains("locked by another process"),
        "{err}"
    );
    assert_eq!(
        http_get(sw.http, "/readyz").0,
        200,
        "the first still serves"
    );
}
