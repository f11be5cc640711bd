//! Loopback end-to-end tests of the SIP core: the real `softswitch` binary, started on
//! ephemeral 127.0.0.1 / [::1] ports, spoken to over UDP, TCP and HTTP sockets.
//!
//! Each test is named for the clause it pins (RFC 3261 section, RFC 3581, RFC 5626, or
//! `spec/interface.md`). Nothing sleeps to synchronise: every wait is for a message or a
//! condition, bounded by a deadline.

mod common;

use common::*;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------

/// Receives one datagram as text within `wait`.
fn recv_within(s: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
        .expect("timeout");
    udp_recv(s)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The header value of `name` in a request we built (first occurrence).
fn req_header<'a>(req: &'a str, name: &str) -> &'a str {
    header(req, name).unwrap_or_else(|| panic!("request has no {name}"))
}

/// Asserts the Allow header lists every method the switch serves.
fn assert_allow(resp: &str) {
    let allow = header(resp, "Allow").unwrap_or_else(|| panic!("no Allow in\n{resp}"));
    let methods: Vec<String> = allow
        .split(',')
        .map(|m| m.trim().to_ascii_uppercase())
        .collect();
    for m in ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER"] {
        assert!(methods.iter().any(|x| x == m), "Allow lacks {m}: {allow}");
    }
}

/// Asserts the dialog-identifying headers of `req` are echoed in `resp` (§8.2.6.2) and
/// To got a tag.
fn assert_echoed(req: &str, resp: &str) {
    for h in ["From", "Call-ID", "CSeq"] {
        assert_eq!(
            header(resp, h),
            Some(req_header(req, h)),
            "{h} not echoed in\n{resp}"
        );
    }
    let to = header(resp, "To").unwrap_or_else(|| panic!("no To in\n{resp}"));
    // Equal by the comparison rules (the URI scheme is case-insensitive, RFC 3986 §3.1).
    assert!(
        to.to_ascii_lowercase()
            .starts_with(&req_header(req, "To").to_ascii_lowercase()),
        "To changed: {to}"
    );
    assert!(to.contains(";tag="), "no To tag: {to}");
}

fn to_tag(resp: &str) -> String {
    let to = header(resp, "To").expect("To");
    to.split(";tag=")
        .nth(1)
        .expect("To tag")
        .split(';')
        .next()
        .unwrap_or("")
        .to_string()
}

fn metrics(sw: &Switch) -> String {
    let (status, body) = http_get(sw.http, "/metrics");
    assert_eq!(status, 200, "/metrics status");
    body
}

fn metric(body: &str, series: &str) -> f64 {
    metric_value(body, series).unwrap_or_else(|| panic!("series {series} missing from /metrics"))
}

/// An ACK for a non-2xx final response to `invite` (§17.1.1.3): same branch, Call-ID,
/// From, Request-URI; To from the response; CSeq number with method ACK.
fn ack_for(invite: &str, resp: &str) -> String {
    let start = invite.lines().next().unwrap();
    let ruri = start.split(' ').nth(1).unwrap();
    let via = req_header(invite, "Via");
    let cseq_n = req_header(invite, "CSeq").split(' ').next().unwrap();
    format!(
        "ACK {ruri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq_n} ACK\r\nContent-Length: 0\r\n\r\n",
        req_header(invite, "From"),
        header(resp, "To").unwrap(),
        req_header(invite, "Call-ID"),
    )
}

/// A tiny deterministic PRNG (xorshift64*), so a failing fuzz run is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

// ---------------------------------------------------------------------------------------
// 1. OPTIONS to the switch (RFC 3261 §11.2, §8.2.6.2, §18.2.1; RFC 3581 §4)
// ---------------------------------------------------------------------------------------

fn check_options_answer(req: &str, resp: &str, client: SocketAddr) {
    assert_eq!(status_of(resp), Some(200), "{resp}");
    assert_allow(resp);
    assert!(
        header(resp, "Accept").is_some_and(|a| a.contains("application/sdp")),
        "Accept: {resp}"
    );
    assert!(
        header(resp, "Supported").is_some(),
        "no Supported header: {resp}"
    );
    assert_echoed(req, resp);
    let via = header(resp, "Via").expect("Via");
    let branch = req_header(req, "Via")
        .split(";branch=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    assert!(
        via.contains(&format!("branch={branch}")),
        "branch not echoed: {via}"
    );
    assert!(
        via.contains(&format!(";received={}", client.ip())),
        "no received={}: {via}",
        client.ip()
    );
    assert!(
        via.contains(&format!(";rport={}", client.port())),
        "no rport={}: {via}",
        client.port()
    );
}

fn options_over_udp(host: &str) {
    let sw = Switch::start_on(host, &[]);
    let to = sw.udp_addr();
    let s = udp_client(to);
    let req = options_to(to, "UDP", &format!("opt-udp-{}", to.is_ipv6()));
    s.send_to(req.as_bytes(), to).unwrap();
    let resp = udp_responses(&s, ANSWER_DEADLINE);
    assert_eq!(resp.len(), 1, "exactly one response to OPTIONS: {resp:?}");
    check_options_answer(&req, &resp[0], s.local_addr().unwrap());
}

fn options_over_tcp(host: &str) {
    let sw = Switch::start_on(host, &[]);
    let to = sw.tcp_addr();
    let mut c = tcp_connect(to);
    let req = options_to(to, "TCP", &format!("opt-tcp-{}", to.is_ipv6()));
    c.write_all(req.as_bytes()).unwrap();
    let resp = tcp_read_responses(&mut c, 1, ANSWER_DEADLINE);
    assert_eq!(resp.len(), 1, "no OPTIONS answer over TCP");
    check_options_answer(&req, &resp[0], c.local_addr().unwrap());
}

#[test]
fn rfc3261_11_2_options_udp_ipv4_200_allow_accept_supported_via_received_rport() {
    options_over_udp("127.0.0.1");
}

#[test]
fn rfc3261_11_2_options_tcp_ipv4_200_allow_accept_supported_via_received_rport() {
    options_over_tcp("127.0.0.1");
}

#[test]
fn rfc5118_options_udp_ipv6_200_allow_accept_supported_via_received_rport() {
    options_over_udp("[::1]");
}

#[test]
fn rfc5118_options_tcp_ipv6_200_allow_accept_supported_via_received_rport() {
    options_over_tcp("[::1]");
}

// ---------------------------------------------------------------------------------------
// 2. A retransmitted request gets the same answer (RFC 3261 §8.2.7 for the stateless
//    OPTIONS answer; §17.2.1 for INVITE, tested in section 5)
// ---------------------------------------------------------------------------------------

#[test]
fn rfc3261_8_2_7_retransmitted_options_gets_identical_response() {
    let sw = Switch::start(&[]);
    let to = sw.udp_addr();
    let s = udp_client(to);
    let req = options_to(to, "UDP", "retrans-1");
    s.send_to(req.as_bytes(), to).unwrap();
    let first = recv_within(&s, ANSWER_DEADLINE).expect("first answer");
    s.send_to(req.as_bytes(), to).unwrap();
    let second = recv_within(&s, ANSWER_DEADLINE).expect("answer to the retransmission");
    assert_eq!(status_of(&text(&first)), Some(200));
    assert_eq!(
        to_tag(&text(&first)),
        to_tag(&text(&second)),
        "a new transaction answered the retransmission"
    );
    assert_eq!(
        first, second,
        "the retransmission must get the same response bytes"
    );
    // And nothing more: one response per request copy.
    assert!(
        recv_within(&s, Duration::from_millis(300)).is_none(),
        "extra datagram"
    );
    let m = metrics(&sw);
    assert!(
        metric(
            &m,
            r#"softswitch_sip_requests_received_total{method="OPTIONS"}"#
        ) >= 2.0
    );
}

// ---------------------------------------------------------------------------------------
// 3. TCP framing (RFC 3261 §18.3, §7.5; RFC 5626 §4.4.1)
// ---------------------------------------------------------------------------------------

#[test]
fn rfc3261_18_3_tcp_pipelined_requests_answered_in_order() {
    let sw = Switch::start(&[]);
    let to = sw.tcp_addr();
    let mut c = tcp_connect(to);
    let a = options_to(to, "TCP", "pipe-a");
    let b = options_to(to, "TCP", "pipe-b");
    c.write_all(format!("{a}{b}").as_bytes()).unwrap();
    let r = tcp_read_responses(&mut c, 2, ANSWER_DEADLINE);
    assert_eq!(r.len(), 2, "both pipelined requests answered: {r:?}");
    assert_eq!(header(&r[0], "Call-ID"), Some("pipe-a@client"));
    assert_eq!(header(&r[1], "Call-ID"), Some("pipe-b@client"));
    assert!(r.iter().all(|x| status_of(x) == Some(200)), "{r:?}");
}

#[test]
fn rfc3261_18_3_tcp_request_split_across_small_writes_is_answered() {
    let sw = Switch::start(&[]);
    let to = sw.tcp_addr();
    let mut c = tcp_connect(to);
    c.set_nodelay(true).unwrap();
    let req = options_to(to, "TCP", "split-1");
    for chunk in req.as_bytes().chunks(7) {
        c.write_all(chunk).unwrap();
        c.flush().unwrap();
    }
    let r = tcp_read_responses(&mut c, 1, ANSWER_DEADLINE);
    assert_eq!(r.len(), 1, "split request not answered");
    assert_eq!(status_of(&r[0]), Some(200));
    assert_eq!(header(&r[0], "Call-ID"), Some("split-1@client"));
}

#[test]
fn rfc5626_4_4_1_double_crlf_ping_gets_single_crlf_pong_and_connection_stays_usable() {
    let sw = Switch::start(&[]);
    let to = sw.tcp_addr();
    let mut c = tcp_connect(to);
    c.write_all(b"\r\n\r\n").unwrap();
    let pong = tcp_read_at_least(&mut c, 2, ANSWER_DEADLINE);
    assert_eq!(pong, b"\r\n", "pong must be exactly one CRLF");
    // The connection still carries SIP, and nothing else was queued before the answer
    // (a second CRLF would show as a response not starting with the status line).
    let req = options_to(to, "TCP", "after-ping");
    c.write_all(req.as_bytes()).unwrap();
    let r = tcp_read_responses(&mut c, 1, ANSWER_DEADLINE);
    assert_eq!(r.len(), 1, "no answer after the ping");
    assert!(
        r[0].starts_with("SIP/2.0 200"),
        "expected the OPTIONS answer right after the pong, got {:?}",
        r[0]
    );
    // A second ping on the same connection gets a second single pong.
    c.write_all(b"\r\n\r\n").unwrap();
    assert_eq!(tcp_read_at_least(&mut c, 2, ANSWER_DEADLINE), b"\r\n");
    assert!(
        tcp_read_at_least(&mut c, 1, Duration::from_millis(200)).is_empty(),
        "more than one CRLF"
    );
}

#[test]
fn rfc3261_7_5_tcp_bare_crlf_is_ignored() {
    let sw = Switch::start(&[]);
    let to = sw.tcp_addr();
    let mut c = tcp_connect(to);
    c.write_all(b"\r\n").unwrap();
    // No answer to a bare CRLF (a pong is not pinged back).
    assert!(
        tcp_read_at_least(&mut c, 1, Duration::from_millis(300)).is_empty(),
        "bare CRLF was answered"
    );
    let req = options_to(to, "TCP", "after-crlf");
    c.write_all(req.as_bytes()).unwrap();
    let raw = tcp_read_at_least(&mut c, 12, ANSWER_DEADLINE);
    assert!(raw.starts_with(b"SIP/2.0 200"), "got {:?}", text(&raw));
}

// ---------------------------------------------------------------------------------------
// 4. Size limits (RFC 3261 §21.5.14 513, §21.4.11 413; spec/interface.md `[limits]`)
// ---------------------------------------------------------------------------------------

const LIMITS_ENV: [(&str, &str); 4] = [
    ("SOFTSWITCH_LIMITS_MAX_MESSAGE_BYTES", "2048"),
    ("SOFTSWITCH_LIMITS_MAX_HEADERS", "20"),
    ("SOFTSWITCH_LIMITS_MAX_HEADER_LINE_BYTES", "256"),
    ("SOFTSWITCH_LIMITS_MAX_BODY_BYTES", "512"),
];

/// An OPTIONS to the switch with `extra` header lines and `body`.
fn options_with(
    to: SocketAddr,
    transport: &str,
    branch: &str,
    extra: &[&str],
    body: &str,
) -> String {
    let ruri = format!("sip:{}", host_port(to));
    sip_request(
        "OPTIONS",
        &ruri,
        transport,
        "client.invalid:5999",
        ";rport",
        branch,
        1,
        extra,
        body,
    )
}

fn pads(n: usize, len: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("X-Pad-{i}: {}", "a".repeat(len)))
        .collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn udp_final(sw: &Switch, msg: &str) -> String {
    udp_exchange(sw.udp_addr(), msg.as_bytes())
        .unwrap_or_else(|| panic!("no answer to\n{}", &msg[..msg.len().min(300)]))
}

#[test]
fn limits_oversize_513_too_many_headers_513_long_line_513_big_body_413_and_counted() {
    let sw = Switch::start(&LIMITS_ENV);
    let to = sw.udp_addr();
    // Whole message over max_message_bytes (2048): 12 lines of ~210 bytes.
    let big = pads(12, 200);
    let m = options_with(to, "UDP", "lim-big", &refs(&big), "");
    assert!(m.len() > 2048);
    let r = udp_final(&sw, &m);
    assert_eq!(status_of(&r), Some(513), "{r}");
    assert_eq!(
        header(&r, "Call-ID"),
        Some("lim-big@client"),
        "513 must echo the request's Call-ID"
    );
    // More header lines than max_headers (20).
    let many: Vec<String> = (0..30).map(|i| format!("X-H{i}: v")).collect();
    let r = udp_final(&sw, &options_with(to, "UDP", "lim-many", &refs(&many), ""));
    assert_eq!(status_of(&r), Some(513), "{r}");
    assert_eq!(header(&r, "Call-ID"), Some("lim-many@client"));
    // One header line over max_header_line_bytes (256).
    let long = [format!("X-Long: {}", "b".repeat(400))];
    let r = udp_final(&sw, &options_with(to, "UDP", "lim-line", &refs(&long), ""));
    assert_eq!(status_of(&r), Some(513), "{r}");
    // A body over max_body_bytes (512) in a message under max_message_bytes.
    let body = "v=0\r\n".to_string() + &"a=x\r\n".repeat(120);
    assert!(body.len() > 512);
    let r = udp_final(
        &sw,
        &options_with(
            to,
            "UDP",
            "lim-body",
            &["Content-Type: application/sdp"],
            &body,
        ),
    );
    assert_eq!(status_of(&r), Some(413), "{r}");
    assert_eq!(header(&r, "Call-ID"), Some("lim-body@client"));
    // Over TCP: 513, then the connection is closed (the next message's start is unknowable).
    let tto = sw.tcp_addr();
    let mut c = tcp_connect(tto);
    c.write_all(options_with(tto, "TCP", "lim-tcp", &refs(&big), "").as_bytes())
        .unwrap();
    let r = tcp_read_responses(&mut c, 1, ANSWER_DEADLINE);
    assert_eq!(r.first().and_then(|x| status_of(x)), Some(513), "{r:?}");
    assert!(
        tcp_wait_closed(&mut c, ANSWER_DEADLINE),
        "TCP connection left open after 513"
    );
    // Under the limits the same switch still answers 200.
    let r = udp_final(
        &sw,
        &options_with(to, "UDP", "lim-ok", &refs(&pads(3, 100)), ""),
    );
    assert_eq!(status_of(&r), Some(200), "{r}");
    let m = metrics(&sw);
    let rej = |reason: &str| {
        metric(
            &m,
            &format!("softswitch_sip_messages_rejected_total{{reason=\"{reason}\"}}"),
        )
    };
    assert!(rej("too_large") >= 2.0, "too_large: UDP + TCP\n{m}");
    assert!(rej("too_many_headers") >= 1.0);
    assert!(rej("line_too_long") >= 1.0);
    assert!(rej("body_too_large") >= 1.0);
    assert!(metric(&m, r#"softswitch_sip_responses_sent_total{class="5xx"}"#) >= 4.0);
    assert!(metric(&m, r#"softswitch_sip_responses_sent_total{class="4xx"}"#) >= 1.0);
}

#[test]
fn limits_tcp_body_over_max_body_bytes_is_413_and_closed() {
    let sw = Switch::start(&LIMITS_ENV);
    let to = sw.tcp_addr();
    let mut c = tcp_connect(to);
    let body = "x".repeat(600);
    c.write_all(
        options_with(
            to,
            "TCP",
            "lim-tcp-body",
            &["Content-Type: application/sdp"],
            &body,
        )
        .as_bytes(),
    )
    .unwrap();
    let r = tcp_read_responses(&mut c, 1, ANSWER_DEADLINE);
    assert_eq!(r.first().and_then(|x| status_of(x)), Some(413), "{r:?}");
    assert!(
        tcp_wait_closed(&mut c, ANSWER_DEADLINE),
        "TCP connection left open after 413"
    );
}

// ---------------------------------------------------------------------------------------
// 5. What the switch refuses (RFC 3261 §8.2.1–§8.2.3, §16.3, §9.2, §12.2.2) and the
//    INVITE server transaction around it (§17.2.1)
// ---------------------------------------------------------------------------------------

fn refused(
    sw: &Switch,
    method: &str,
    ruri: &str,
    branch: &str,
    extra: &[&str],
    body: &str,
    code: u16,
) -> String {
    let req = sip_request(
        method,
        ruri,
        "UDP",
        "client.invalid:5999",
        ";rport",
        branch,
        1,
        extra,
        body,
    );
    let r = udp_final(sw, &req);
    assert_eq!(status_of(&r), Some(code), "{method} {ruri}: {r}");
    assert_echoed(&req, &r);
    r
}

#[test]
fn rfc3261_8_2_1_extension_method_501_with_allow() {
    let sw = Switch::start(&[]);
    let ruri = format!("sip:{}", host_port(sw.udp_addr()));
    let r = refused(&sw, "FOOBAR", &ruri, "ext-1", &[], "", 501);
    assert_allow(&r);
}

#[test]
fn rfc3261_8_2_1_subscribe_message_405_with_allow() {
    let sw = Switch::start(&[]);
    for (i, m) in ["SUBSCRIBE", "MESSAGE"].iter().enumerate() {
        let r = refused(
            &sw,
            m,
            "sip:example.test",
            &format!("405-{i}"),
            &[],
            "",
            405,
        );
        assert_allow(&r);
    }
}

#[test]
fn rfc3261_8_2_2_1_unknown_request_uri_scheme_416() {
    let sw = Switch::start(&[]);
    refused(
        &sw,
        "OPTIONS",
        "nobodyKnowsThisScheme:totallyopaquecontent",
        "416-1",
        &[],
        "",
        416,
    );
}

#[test]
fn rfc3261_8_2_2_3_require_unknown_option_420_with_unsupported() {
    let sw = Switch::start(&[]);
    let ruri = format!("sip:{}", host_port(sw.udp_addr()));
    let r = refused(&sw, "OPTIONS", &ruri, "420-1", &["Require: foo"], "", 420);
    assert_eq!(header(&r, "Unsupported"), Some("foo"), "{r}");
}

#[test]
fn rfc3261_9_2_and_12_2_2_cancel_and_bye_matching_nothing_481() {
    let sw = Switch::start(&[]);
    refused(
        &sw,
        "CANCEL",
        "sip:alice@example.test",
        "481-cancel",
        &[],
        "",
        481,
    );
    let bye = sip_request(
        "BYE",
        "sip:alice@example.test",
        "UDP",
        "client.invalid:5999",
        ";rport",
        "481-bye",
        2,
        &[],
        "",
    )
    .replace(
        "To: <sip:alice@example.test>",
        "To: <sip:alice@example.test>;tag=nosuchdialog",
    );
    let r = udp_final(&sw, &bye);
    assert_eq!(status_of(&r), Some(481), "{r}");
    assert_eq!(
        header(&r, "To"),
        Some("<sip:alice@example.test>;tag=nosuchdialog"),
        "existing To tag kept"
    );
}

/// RFC 3261 §12.2.2: a request with a To tag that matches no dialog gets 481, whatever
/// its method: a re-INVITE, an OPTIONS keep-alive (to a user or to the switch), methods
/// the switch does not serve out of a dialog (INFO, UPDATE, MESSAGE, ...) and an
/// extension method alike. It is answered through its server transaction (the To tag
/// kept, a retransmission gets the same answer) and counted as a routing refusal.
#[test]
fn rfc3261_12_2_2_request_with_to_tag_matching_no_dialog_481_for_every_method() {
    let sw = Switch::start(&[]);
    let switch_uri = format!("sip:{}", host_port(sw.udp_addr()));
    let routing = r#"softswitch_sip_messages_rejected_total{reason="routing"}"#;
    let before = metric(&metrics(&sw), routing);
    let mut cases: Vec<(&str, &str)> = [
        "INVITE",
        "OPTIONS",
        "INFO",
        "UPDATE",
        "MESSAGE",
        "PRACK",
        "NOTIFY",
        "REFER",
        "SUBSCRIBE",
        "BYE",
        "FOO",
    ]
    .iter()
    .map(|m| (*m, "sip:alice@example.test"))
    .collect();
    cases.push(("OPTIONS", &switch_uri));
    cases.push(("INVITE", "sip:nobody@example.test"));
    for (i, (method, ruri)) in cases.iter().enumerate() {
        let branch = format!("nodialog-{i}");
        let req = sip_request(
            method,
            ruri,
            "UDP",
            "client.invalid:5999",
            ";rport",
            &branch,
            2,
            &["Contact: <sip:probe@client.invalid:5999>"],
            "",
        )
        .replacen(
            &format!("To: <{ruri}>"),
            &format!("To: <{ruri}>;tag=gone"),
            1,
        );
        let s = udp_client(sw.udp_addr());
        s.send_to(req.as_bytes(), sw.udp_addr()).expect("send");
        let r = udp_responses(&s, ANSWER_DEADLINE)
            .into_iter()
            .find(|r| status_of(r).is_some_and(|c| c >= 200))
            .unwrap_or_else(|| panic!("{method} {ruri}: no final answer"));
        assert_eq!(status_of(&r), Some(481), "{method} {ruri}: {r}");
        assert_eq!(
            reason_of(&r),
            "Call/Transaction Does Not Exist",
            "{method} {ruri}"
        );
        assert_eq!(
            header(&r, "To"),
            Some(format!("<{ruri}>;tag=gone").as_str()),
            "{method} {ruri}: the request's To tag is kept"
        );
        // The server transaction answers a retransmission with the same response.
        s.send_to(req.as_bytes(), sw.udp_addr()).expect("send");
        let again = udp_responses(&s, ANSWER_DEADLINE)
            .into_iter()
            .find(|r| status_of(r).is_some_and(|c| c >= 200))
            .unwrap_or_else(|| panic!("{method} {ruri}: retransmission not answered"));
        assert_eq!(status_of(&again), Some(481), "{method} {ruri}: {again}");
    }
    let after = metric(&metrics(&sw), routing);
    assert!(
        after - before >= cases.len() as f64,
        "each 481 counted as a routing refusal: {before} -> {after}"
    );
}

/// OPTIONS out of a dialog to an address of the served domain is answered by the switch
/// itself, 200 with its capabilities, whether the user exists or not (RFC 3261 §11.2; a
/// 404 or 480 would tell an unauthenticated sender which users exist); to another domain
/// it gets 403, as an INVITE there does.
#[test]
fn rfc3261_11_2_options_to_any_user_of_the_domain_200_to_another_domain_403() {
    let sw = Switch::start(&[]);
    for (branch, ruri) in [
        ("opt-alice", "sip:alice@example.test"),
        ("opt-nobody", "sip:nobody@example.test"),
    ] {
        let req = sip_request(
            "OPTIONS",
            ruri,
            "UDP",
            "client.invalid:5999",
            ";rport",
            branch,
            1,
            &[],
            "",
        );
        let r = udp_final(&sw, &req);
        assert_eq!(status_of(&r), Some(200), "OPTIONS {ruri}: {r}");
        assert_echoed(&req, &r);
        assert_allow(&r);
    }
    refused(
        &sw,
        "OPTIONS",
        "sip:bob@other.test",
        "opt-other",
        &[],
        "",
        403,
    );
}

/// A new INVITE the switch refuses outright is answered statelessly (RFC 3261 §8.2.7):
/// the final response comes first (no 100 Trying, no server transaction), its
/// retransmission gets the same answer with the same To tag, and the ACK is absorbed.
fn invite_refused_stateless(
    to: SocketAddr,
    ruri: &str,
    branch: &str,
    extra: &[&str],
    body: &str,
    code: u16,
) -> String {
    let s = udp_client(to);
    let invite = sip_request(
        "INVITE",
        ruri,
        "UDP",
        "client.invalid:5999",
        ";rport",
        branch,
        1,
        extra,
        body,
    );
    s.send_to(invite.as_bytes(), to).unwrap();
    let fin = recv_within(&s, ANSWER_DEADLINE).unwrap_or_else(|| panic!("{ruri}: no answer"));
    let fin_text = text(&fin);
    assert_eq!(status_of(&fin_text), Some(code), "{ruri}: {fin_text}");
    assert_echoed(&invite, &fin_text);
    // The client's retransmission (its Timer A): the same answer, the same To tag.
    s.send_to(invite.as_bytes(), to).unwrap();
    let again = text(
        &recv_within(&s, ANSWER_DEADLINE)
            .unwrap_or_else(|| panic!("{ruri}: retransmission not answered")),
    );
    assert_eq!(status_of(&again), Some(code), "{ruri}: {again}");
    assert_eq!(
        header(&again, "To"),
        header(&fin_text, "To"),
        "{ruri}: the To tag of a stateless answer is the same for a retransmission"
    );
    // ACK (same branch, CSeq 1 ACK): nothing answers it, nothing is retransmitted.
    s.send_to(ack_for(&invite, &fin_text).as_bytes(), to)
        .unwrap();
    if let Some(b) = recv_within(&s, Duration::from_millis(600)) {
        panic!("{ruri}: something after the ACK: {}", text(&b));
    }
    fin_text
}

#[test]
fn rfc3261_8_2_7_invite_refusals_are_stateless_same_answer_for_retransmissions() {
    let sw = Switch::start(&[("SOFTSWITCH_SIP_T1_MS", "100")]);
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    std::thread::scope(|scope| {
        let sw = sw.udp_addr();
        let cases = vec![
            // §8.2.3: unknown body type → 415 with Accept.
            scope.spawn(move || {
                let r = invite_refused_stateless(
                    sw,
                    "sip:alice@example.test",
                    "inv-415",
                    &["Content-Type: text/foo"],
                    "hello",
                    415,
                );
                assert!(
                    header(&r, "Accept").is_some_and(|a| a.contains("application/sdp")),
                    "415 without Accept: {r}"
                );
            }),
            // §16.3 step 3: Max-Forwards 0 on a request to a user → 483.
            scope.spawn(move || {
                invite_refused_stateless(
                    sw,
                    "sip:alice@example.test",
                    "inv-483",
                    &["Max-Forwards: 0", "Content-Type: application/sdp"],
                    sdp,
                    483,
                );
            }),
            // Another domain: no relaying → 403.
            scope.spawn(move || {
                invite_refused_stateless(
                    sw,
                    "sip:bob@other.test",
                    "inv-403",
                    &["Content-Type: application/sdp"],
                    sdp,
                    403,
                );
            }),
            // A user of the served domain, but no credentials: 407 (§22.3; who is
            // called, and whether they exist, is told only after authentication).
            scope.spawn(move || {
                let r = invite_refused_stateless(
                    sw,
                    "sip:nobody@example.test",
                    "inv-407",
                    &["Content-Type: application/sdp"],
                    sdp,
                    407,
                );
                assert!(header(&r, "Proxy-Authenticate").is_some(), "{r}");
            }),
        ];
        for c in cases {
            if let Err(e) = c.join() {
                std::panic::resume_unwind(e);
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// 6. Where UDP responses go (RFC 3261 §18.2.2, RFC 3581 §4, `sip.force_rport`)
// ---------------------------------------------------------------------------------------

#[test]
fn rfc3261_18_2_2_force_rport_off_response_goes_to_via_sent_by_port() {
    let sw = Switch::start(&[("SOFTSWITCH_SIP_FORCE_RPORT", "false")]);
    let to = sw.udp_addr();
    let src = udp_client(to);
    let other = udp_client(to);
    let other_port = other.local_addr().unwrap().port();
    let ruri = format!("sip:{}", host_port(to));
    let sent_by = format!("127.0.0.1:{other_port}");
    let req = sip_request(
        "OPTIONS",
        &ruri,
        "UDP",
        &sent_by,
        "",
        "sentby-1",
        1,
        &[],
        "",
    );
    src.send_to(req.as_bytes(), to).unwrap();
    let r = text(&recv_within(&other, ANSWER_DEADLINE).expect("response on the sent-by port"));
    assert_eq!(status_of(&r), Some(200), "{r}");
    let via = header(&r, "Via").unwrap();
    assert!(
        !via.contains("received="),
        "sent-by host equals the source: no received (§18.2.1): {via}"
    );
    assert!(!via.contains("rport"), "no rport asked, none added: {via}");
    assert!(
        recv_within(&src, Duration::from_millis(300)).is_none(),
        "response also went to the source port"
    );
    // With ;rport the response goes to the source port (RFC 3581 §4).
    let req = sip_request(
        "OPTIONS",
        &ruri,
        "UDP",
        &sent_by,
        ";rport",
        "sentby-2",
        1,
        &[],
        "",
    );
    src.send_to(req.as_bytes(), to).unwrap();
    let r = text(&recv_within(&src, ANSWER_DEADLINE).expect("response on the source port"));
    let src_port = src.local_addr().unwrap().port();
    assert!(
        header(&r, "Via")
            .unwrap()
            .contains(&format!(";rport={src_port}")),
        "{r}"
    );
    assert!(
        recv_within(&other, Duration::from_millis(300)).is_none(),
        "response went to the sent-by port despite rport"
    );
}

#[test]
fn force_rport_default_on_response_goes_to_source_port_without_rport() {
    let sw = Switch::start(&[]);
    let to = sw.udp_addr();
    let src = udp_client(to);
    let other = udp_client(to);
    let ruri = format!("sip:{}", host_port(to));
    let sent_by = format!("127.0.0.1:{}", other.local_addr().unwrap().port());
    let req = sip_request("OPTIONS", &ruri, "UDP", &sent_by, "", "force-1", 1, &[], "");
    src.send_to(req.as_bytes(), to).unwrap();
    let r = text(&recv_within(&src, ANSWER_DEADLINE).expect("response on the source port"));
    assert_eq!(status_of(&r), Some(200), "{r}");
    assert!(
        recv_within(&other, Duration::from_millis(300)).is_none(),
        "response went to the sent-by port"
    );
}

// ---------------------------------------------------------------------------------------
// 7. Malformed input never kills the switch (RFC 4475 §1: robustness)
// ---------------------------------------------------------------------------------------

const FUZZ_SEED: u64 = 0x5EED_F0F5_1092_0240;

fn fuzz_base() -> Vec<u8> {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    sip_request(
        "INVITE",
        "sip:alice@example.test",
        "UDP",
        "client.invalid:5999",
        ";rport",
        "fuzzbase",
        1,
        &[
            "Contact: <sip:probe@client.invalid:5999>",
            "Content-Type: application/sdp",
        ],
        sdp,
    )
    .into_bytes()
}

/// One malformed (or occasionally still valid) message derived from `base`.
fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut m = base.to_vec();
    // A fresh branch most of the time, so mutants are new transactions, not retransmissions.
    if rng.below(4) != 0 {
        let tag = format!("{:08x}", rng.next() as u32);
        let s = text(&m).replace("fuzzbase", &tag);
        m = s.into_bytes();
    }
    match rng.below(12) {
        0 => m.truncate(rng.below(m.len())),
        1 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(m.len());
                m[i] = rng.byte();
            }
        }
        2 => m = (0..1 + rng.below(1500)).map(|_| rng.byte()).collect(),
        3 => {
            // Huge header counts.
            let head_end = m
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or(m.len());
            let extra: Vec<u8> = b"X: y\r\n".repeat(100 + rng.below(3000));
            m.splice(head_end + 2..head_end + 2, extra);
        }
        4 => {
            for _ in 0..1 + rng.below(16) {
                let i = rng.below(m.len() + 1);
                m.insert(i, rng.byte());
            }
        }
        5 => {
            // A random line repeated many times (duplicate Via, CSeq, Content-Length, ...).
            let s = text(&m);
            let lines: Vec<&str> = s.split("\r\n").collect();
            let l = lines[1 + rng.below(lines.len() - 2)];
            let rep = format!("{l}\r\n").repeat(2 + rng.below(50));
            m = s.replacen(&format!("{l}\r\n"), &rep, 1).into_bytes();
        }
        6 => {
            let cl = [
                "-1",
                "99999999999",
                "abc",
                "0",
                "1",
                "100000",
                "",
                " 12 3",
                "0x10",
            ][rng.below(9)];
            let s = text(&m);
            if let Some(i) = s.find("Content-Length:") {
                let j = s[i..].find("\r\n").map_or(s.len(), |j| i + j);
                m = format!("{}Content-Length: {cl}{}", &s[..i], &s[j..]).into_bytes();
            }
        }
        7 => {
            let s = text(&m);
            let lines: Vec<&str> = s.split("\r\n").collect();
            let drop = rng.below(lines.len());
            m = lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != drop)
                .map(|(_, l)| *l)
                .collect::<Vec<_>>()
                .join("\r\n")
                .into_bytes();
        }
        8 => {
            for _ in 0..1 + rng.below(10) {
                let i = rng.below(m.len());
                m[i] = [
                    0u8, 0xff, b'\r', b'\n', b':', b';', b'<', b'>', b'"', b'\\', b' ', 0x7f,
                ][rng.below(12)];
            }
        }
        9 => {
            let head_end = m.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
            let long = format!("\r\nX-Long: {}", "z".repeat(1000 + rng.below(50_000)));
            m.splice(head_end..head_end, long.into_bytes());
        }
        10 => {
            // Looks like a response: must be dropped, never answered or forwarded.
            let s = text(&m);
            let first = s.find("\r\n").unwrap_or(0);
            m = format!("SIP/2.0 {} OK{}", 100 + rng.below(600), &s[first..]).into_bytes();
            if rng.below(2) == 0 {
                let i = rng.below(m.len());
                m[i] = rng.byte();
            }
        }
        _ => {
            // Folded lines, tabs and odd whitespace in the start line.
            let s = text(&m);
            m = s
                .replacen(
                    " ",
                    ["  ", "\t", "\r\n ", " \r\n\t"][rng.below(4)],
                    1 + rng.below(6),
                )
                .into_bytes();
        }
    }
    m.truncate(60_000);
    m
}

#[test]
fn rfc4475_malformed_input_over_udp_and_tcp_never_kills_the_switch() {
    let sw = Switch::start(&[("SOFTSWITCH_SIP_TCP_IDLE_TIMEOUT_S", "2")]);
    let started = Instant::now();
    let base = fuzz_base();
    let mut rng = Rng(FUZZ_SEED);
    let to = sw.udp_addr();
    let socks: Vec<UdpSocket> = (0..4).map(|_| udp_client(to)).collect();
    for i in 0..2000 {
        let m = mutate(&mut rng, &base);
        if !m.is_empty() {
            let _ = socks[i % socks.len()].send_to(&m, to);
        }
        // Keep our receive buffers drained a little so the switch's answers are cheap.
        if i % 100 == 99 {
            for s in &socks {
                s.set_nonblocking(true).unwrap();
                let mut buf = [0u8; 65_535];
                for _ in 0..1000 {
                    if s.recv_from(&mut buf).is_err() {
                        break;
                    }
                }
                s.set_nonblocking(false).unwrap();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "UDP fuzz too slow ({i} sent)"
        );
    }
    let tcp = sw.tcp_addr();
    for i in 0..300 {
        let m = mutate(&mut rng, &base);
        let Ok(mut c) = TcpStream::connect_timeout(&tcp, ANSWER_DEADLINE) else {
            panic!("TCP connect {i} refused: the listener died");
        };
        // In one write, or in a few pieces.
        let cuts = rng.below(3);
        let mut at = 0;
        for _ in 0..cuts {
            let end = at + rng.below(m.len().saturating_sub(at) + 1);
            let _ = c.write_all(&m[at..end]);
            at = end;
        }
        let _ = c.write_all(&m[at..]);
        let _ = c.shutdown(std::net::Shutdown::Write);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "TCP fuzz too slow ({i} sent)"
        );
    }
    println!(
        "fuzz: 2000 datagrams + 300 TCP connections in {:?}",
        started.elapsed()
    );
    // Still alive, and still answering on both transports.
    let mut sw = sw;
    assert!(sw.is_running(), "switch died under malformed input");
    let mut ok = None;
    for attempt in 0..3 {
        ok = udp_exchange(
            to,
            options_to(to, "UDP", &format!("after-fuzz-{attempt}")).as_bytes(),
        );
        if ok.is_some() {
            break;
        }
    }
    assert_eq!(
        ok.as_deref().and_then(status_of),
        Some(200),
        "no OPTIONS 200 after fuzz"
    );
    let mut c = tcp_connect(tcp);
    c.write_all(options_to(tcp, "TCP", "after-fuzz-tcp").as_bytes())
        .unwrap();
    let r = tcp_read_responses(&mut c, 1, ANSWER_DEADLINE);
    assert_eq!(
        r.first().and_then(|x| status_of(x)),
        Some(200),
        "no TCP OPTIONS 200 after fuzz"
    );
    assert_eq!(http_get(sw.http, "/healthz").0, 200);
    // The mutants reached the parser (they were not all lost on the way).
    let m = metrics(&sw);
    let parse = metric(
        &m,
        r#"softswitch_sip_messages_rejected_total{reason="parse"}"#,
    );
    assert!(
        parse >= 100.0,
        "only {parse} parse rejections counted (seed {FUZZ_SEED:#x})"
    );
    assert!(sw.is_running(), "switch died under malformed input");
}

/// RFC 3261 §25.1: a NUL octet in a header value (outside a quoted-pair) is refused with
/// 400 naming it, over UDP and on a TCP stream (whose framing it does not disturb: the
/// next request on the connection is answered), and counted as a parse rejection; a NUL
/// in a body is not refused (RFC 4475 §3.1.1.11: bodies are binary).
#[test]
fn rfc3261_25_1_nul_in_header_value_400_named_and_counted_nul_in_body_accepted() {
    let sw = Switch::start(&[]);
    let parse = r#"softswitch_sip_messages_rejected_total{reason="parse"}"#;
    let before = metric(&metrics(&sw), parse);
    let nul_reason = "Bad Request (NUL octet in a header value)";
    let udp = sw.udp_addr();
    let bad = options_with(udp, "UDP", "nul-udp", &["Subject: before\0after"], "");
    let r = udp_final(&sw, &bad);
    assert_eq!(status_of(&r), Some(400), "{r}");
    assert_eq!(reason_of(&r), nul_reason, "{r}");
    assert_eq!(header(&r, "Call-ID"), Some("nul-udp@client"), "{r}");
    // On a stream: 400, and the connection goes on with the next message.
    let tcp = sw.tcp_addr();
    let mut c = tcp_connect(tcp);
    let bad = options_with(tcp, "TCP", "nul-tcp", &["Subject: \0"], "");
    let good = options_with(tcp, "TCP", "nul-tcp-next", &[], "");
    c.write_all(format!("{bad}{good}").as_bytes()).unwrap();
    let rs = tcp_read_responses(&mut c, 2, ANSWER_DEADLINE);
    assert_eq!(rs.len(), 2, "{rs:?}");
    assert_eq!(status_of(&rs[0]), Some(400), "{}", rs[0]);
    assert_eq!(reason_of(&rs[0]), nul_reason, "{}", rs[0]);
    assert_eq!(header(&rs[0], "Call-ID"), Some("nul-tcp@client"));
    assert_eq!(status_of(&rs[1]), Some(200), "{}", rs[1]);
    assert_eq!(header(&rs[1], "Call-ID"), Some("nul-tcp-next@client"));
    // A NUL in a quoted-pair (RFC 4475 §3.1.1.2) and in a body are fine.
    let quoted = options_with(
        udp,
        "UDP",
        "nul-quoted",
        &["Contact: \"a\\\0b\" <sip:probe@client.invalid:5999>"],
        "",
    );
    let r = udp_final(&sw, &quoted);
    assert_eq!(status_of(&r), Some(200), "{r}");
    let body = options_with(
        udp,
        "UDP",
        "nul-body",
        &["Content-Type: application/sdp"],
        "v=0\0\0\r\n",
    );
    let r = udp_final(&sw, &body);
    assert_eq!(status_of(&r), Some(200), "{r}");
    let after = metric(&metrics(&sw), parse);
    assert_eq!(
        after - before,
        2.0,
        "both NUL refusals, and only they, counted"
    );
}

// ---------------------------------------------------------------------------------------
// 8. HTTP (spec/interface.md "HTTP")
// ---------------------------------------------------------------------------------------

#[test]
fn interface_metrics_lists_every_series_from_startup() {
    let sw = Switch::start(&[]);
    let m = metrics(&sw);
    for s in [
        "softswitch_registrations_active",
        "softswitch_calls_active",
        "softswitch_cdrs_written_total",
    ] {
        assert_eq!(metric(&m, s), 0.0, "{s}");
    }
    for d in [
        "answered",
        "busy",
        "no_answer",
        "cancelled",
        "rejected",
        "failed",
    ] {
        assert_eq!(
            metric(
                &m,
                &format!("softswitch_calls_total{{disposition=\"{d}\"}}")
            ),
            0.0,
            "{d}"
        );
    }
    for meth in ["INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS"] {
        assert_eq!(
            metric(
                &m,
                &format!("softswitch_sip_requests_received_total{{method=\"{meth}\"}}")
            ),
            0.0,
            "{meth}"
        );
    }
    for c in ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"] {
        assert_eq!(
            metric(
                &m,
                &format!("softswitch_sip_responses_sent_total{{class=\"{c}\"}}")
            ),
            0.0,
            "{c}"
        );
    }
    let buckets: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("softswitch_call_setup_duration_seconds_bucket{le="))
        .collect();
    assert!(buckets.len() >= 2, "histogram buckets missing:\n{m}");
    assert!(
        buckets.iter().any(|l| l.contains("le=\"+Inf\"")),
        "no +Inf bucket"
    );
    assert_eq!(
        metric(&m, "softswitch_call_setup_duration_seconds_count"),
        0.0
    );
    assert_eq!(
        metric(&m, "softswitch_call_setup_duration_seconds_sum"),
        0.0
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with("softswitch_build_info{version=\"") && l.ends_with(" 1")),
        "softswitch_build_info{{version}} 1 missing"
    );
}

#[test]
fn interface_metrics_counters_move_after_traffic() {
    let sw = Switch::start(&[]);
    let before = metrics(&sw);
    let to = sw.udp_addr();
    for i in 0..3 {
        let r = udp_exchange(to, options_to(to, "UDP", &format!("count-{i}")).as_bytes())
            .expect("answer");
        assert_eq!(status_of(&r), Some(200));
    }
    let after = metrics(&sw);
    let opt = r#"softswitch_sip_requests_received_total{method="OPTIONS"}"#;
    let ok = r#"softswitch_sip_responses_sent_total{class="2xx"}"#;
    assert_eq!(metric(&after, opt) - metric(&before, opt), 3.0);
    assert_eq!(metric(&after, ok) - metric(&before, ok), 3.0);
}

#[test]
fn interface_http_health_ready_api_arrays_and_unknown_404() {
    let sw = Switch::start(&[]);
    assert_eq!(http_get(sw.http, "/healthz").0, 200);
    assert_eq!(http_get(sw.http, "/readyz").0, 200);
    for p in ["/api/registrations", "/api/calls"] {
        let (st, body) = http_get(sw.http, p);
        assert_eq!(st, 200, "{p}");
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{p}: not JSON ({e}): {body}"));
        assert!(v.is_array(), "{p}: not an array: {body}");
    }
    assert_eq!(http_get(sw.http, "/no/such/path").0, 404);
}

// ---------------------------------------------------------------------------------------
// 9. SIGTERM drains and exits 0 (spec/interface.md "Command line")
// ---------------------------------------------------------------------------------------

/// An idle switch (no transaction, no traffic) must exit on SIGTERM at once.
///
/// FAILS against the current switch (bug): `Control::drain` only sets a flag, and the
/// driver, parked in `select!` on the inbound channel with no timer armed, never looks at
/// it until a SIP message arrives, so the process never exits.
#[test]
fn interface_sigterm_idle_switch_exits_zero_within_drain_deadline() {
    let sw = Switch::start(&[("SOFTSWITCH_SIP_DRAIN_TIMEOUT_S", "2")]);
    let st = sw
        .terminate(Duration::from_secs(6))
        .expect("no exit within drain deadline (2 s) + 4 s");
    assert!(st.success(), "exit status {st:?}");
}

/// A switch with one transaction pending (an OPTIONS server transaction in Completed,
/// Timer J = 64·T1 = 32 s) must exit by the drain deadline (2 s), not when the
/// transaction ends.
///
/// FAILS against the current switch (same bug): with no further traffic the driver
/// sleeps until Timer J and only then starts counting the drain deadline.
#[test]
fn interface_sigterm_pending_transaction_exits_zero_by_drain_deadline() {
    let mut sw = Switch::start(&[("SOFTSWITCH_SIP_DRAIN_TIMEOUT_S", "2")]);
    let to = sw.udp_addr();
    let r = udp_exchange(to, options_to(to, "UDP", "pending").as_bytes()).expect("answer");
    assert_eq!(status_of(&r), Some(200));
    sw.signal("TERM");
    let st = sw
        .wait_exit(Duration::from_secs(6))
        .expect("no exit within drain deadline (2 s) + 4 s");
    assert!(st.success(), "exit status {st:?}");
}

#[test]
fn interface_sigterm_drain_readyz_503_new_invite_503_retry_after_then_exit_zero() {
    let mut sw = Switch::start(&[("SOFTSWITCH_SIP_DRAIN_TIMEOUT_S", "3")]);
    let to = sw.udp_addr();
    // A re-INVITE for a dialog that does not exist is answered 481 by an INVITE server
    // transaction that, never ACKed, stays in Completed until Timer H (64·T1 = 32 s):
    // the drain cannot finish before its 3 s deadline.
    let pre = sip_request(
        "INVITE",
        "sip:nobody@example.test",
        "UDP",
        "client.invalid:5999",
        ";rport",
        "pre-drain",
        1,
        &[],
        "",
    )
    .replacen(
        "To: <sip:nobody@example.test>",
        "To: <sip:nobody@example.test>;tag=gone",
        1,
    );
    let r = udp_exchange(to, pre.as_bytes()).expect("answer");
    assert_eq!(status_of(&r), Some(481), "{r}");
    sw.signal("TERM");
    let signalled = Instant::now();
    let end = signalled + Duration::from_secs(2);
    let mut ready = http_get(sw.http, "/readyz").0;
    while ready != 503 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
        ready = http_get(sw.http, "/readyz").0;
    }
    assert_eq!(ready, 503, "/readyz not 503 while draining");
    assert_eq!(
        http_get(sw.http, "/healthz").0,
        200,
        "/healthz during drain"
    );
    // New calls are refused with 503 + Retry-After.
    let s = udp_client(to);
    let invite = sip_request(
        "INVITE",
        "sip:alice@example.test",
        "UDP",
        "client.invalid:5999",
        ";rport",
        "drain-inv",
        1,
        &[],
        "",
    );
    s.send_to(invite.as_bytes(), to).unwrap();
    let rs = udp_responses(&s, ANSWER_DEADLINE);
    let fin = rs
        .iter()
        .find(|r| status_of(r).is_some_and(|c| c >= 200))
        .expect("final to INVITE during drain");
    assert_eq!(status_of(fin), Some(503), "{fin}");
    assert!(
        header(fin, "Retry-After").is_some(),
        "503 without Retry-After: {fin}"
    );
    let st = sw
        .wait_exit(Duration::from_secs(8))
        .expect("no exit after the drain deadline");
    assert!(st.success(), "exit status {st:?}");
    assert!(signalled.elapsed() < Duration::from_secs(8));
}

// ---------------------------------------------------------------------------------------
// 10. Command line and configuration file (spec/interface.md "Command line")
// ---------------------------------------------------------------------------------------

fn check_config(toml_text: &str) -> (bool, String) {
    run_cli(toml_text, "--check-config", &[])
}

/// Runs `softswitch FLAG FILE` (FILE holding `toml_text`) to completion with `env`.
/// Only for invocations that exit by themselves.
fn run_cli(toml_text: &str, flag: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = temp_dir("cfg");
    let path = dir.join("c.toml");
    std::fs::write(&path, toml_text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_softswitch"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .arg(flag)
        .arg(&path)
        .current_dir(&dir)
        .output()
        .expect("run softswitch");
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const GOOD_TOML: &str = r#"
[sip]
listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
domain = "example.test"
t1_ms = 500
t2_ms = 4000

[http]
listen = "127.0.0.1:9090"

[billing]
cdr_path = "data/cdr.jsonl"

[[users]]
user = "alice"
password = "secret-a"
forward_busy = "bob"

[[users]]
user = "bob"
ha1 = "0123456789abcdef0123456789abcdef"
"#;

#[test]
fn interface_check_config_good_file_exits_zero() {
    let (ok, out) = check_config(GOOD_TOML);
    assert!(ok, "good config refused:\n{out}");
}

#[test]
fn interface_check_config_each_bad_file_exits_nonzero_naming_the_key() {
    for (toml_text, key) in [
        ("[sip]\nbogus_key = 1\n", "sip.bogus_key"),
        ("[sip]\nlisten = [\"udp:nohost\"]\n", "sip.listen"),
        ("[sip]\nt1_ms = 5000\nt2_ms = 4000\n", "sip.t1_ms"),
    ] {
        let (ok, out) = check_config(toml_text);
        assert!(!ok, "bad config accepted:\n{toml_text}");
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{key}:"))),
            "problem with {key} not reported:\n{out}"
        );
    }
}

#[test]
fn interface_check_config_reports_every_problem_of_one_file() {
    // "prints each problem with its key": one file with three mistakes, three lines.
    let (ok, out) = check_config(
        "[sip]\nbogus_key = 1\nlisten = [\"udp:nohost\"]\nt1_ms = 5000\nt2_ms = 4000\n",
    );
    assert!(!ok);
    for key in ["sip.bogus_key", "sip.listen", "sip.t1_ms"] {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{key}:"))),
            "problem with {key} not reported:\n{out}"
        );
    }
}

#[test]
fn interface_check_config_names_a_bad_environment_override() {
    let (ok, out) = run_cli(
        GOOD_TOML,
        "--check-config",
        &[("SOFTSWITCH_SIP_T1_MS", "soon")],
    );
    assert!(!ok, "bad env override accepted");
    assert!(
        out.contains("SOFTSWITCH_SIP_T1_MS"),
        "problem not named by its variable:\n{out}"
    );
}

#[test]
fn interface_config_unreadable_or_invalid_file_refuses_to_start() {
    // A file that does not validate: the switch prints the problem and exits non-zero
    // instead of starting (it would bind nothing: the listen list is empty).
    let (ok, out) = run_cli("[sip]\nlisten = []\n", "--config", &[]);
    assert!(!ok, "started with an invalid configuration");
    assert!(out.contains("sip.listen"), "{out}");
}

fn config_file_switch(extra_env: &[(&str, &str)]) -> Switch {
    let dir = temp_dir("cfgrun");
    let cdr = dir.join("cdr.jsonl");
    let toml_text = format!(
        "[sip]\nlisten = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]\ndomain = \"file.test\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[billing]\ncdr_path = {:?}\n\n[log]\nlevel = \"warn\"\n",
        cdr.display().to_string()
    );
    let path = dir.join("softswitch.toml");
    std::fs::write(&path, toml_text).unwrap();
    let p = path.display().to_string();
    Switch::start_with_args(&["--config", &p], extra_env, dir)
}

#[test]
fn interface_config_file_sets_listeners_and_domain() {
    let sw = config_file_switch(&[]);
    assert!(sw.udp_addr().ip().is_loopback() && sw.udp_addr().port() != 0);
    assert!(sw.tcp_addr().ip().is_loopback() && sw.tcp_addr().port() != 0);
    let to = sw.udp_addr();
    let r = udp_exchange(to, options_to(to, "UDP", "cfg-opt").as_bytes()).expect("answer");
    assert_eq!(status_of(&r), Some(200));
    // The file's domain is served: an INVITE there is challenged (407), not refused 403.
    let r = udp_final(
        &sw,
        &sip_request(
            "INVITE",
            "sip:nobody@file.test",
            "UDP",
            "client.invalid:5999",
            ";rport",
            "cfg-407",
            1,
            &[],
            "",
        ),
    );
    // Served domain: challenged (a foreign one would be 403).
    assert_eq!(status_of(&r), Some(407), "{r}");
    assert_eq!(http_get(sw.http, "/healthz").0, 200);
}

#[test]
fn interface_env_override_beats_config_file() {
    let sw = config_file_switch(&[("SOFTSWITCH_SIP_DOMAIN", "env.test")]);
    let r = udp_final(
        &sw,
        &sip_request(
            "INVITE",
            "sip:nobody@env.test",
            "UDP",
            "client.invalid:5999",
            ";rport",
            "env-407",
            1,
            &[],
            "",
        ),
    );
    assert_eq!(status_of(&r), Some(407), "{r}");
    let r = udp_final(
        &sw,
        &sip_request(
            "INVITE",
            "sip:nobody@file.test",
            "UDP",
            "client.invalid:5999",
            ";rport",
            "env-403",
            1,
            &[],
            "",
        ),
    );
    assert_eq!(status_of(&r), Some(403), "{r}");
}

// ---------------------------------------------------------------------------------------
// 11. TCP connection limit and idle timeout (`sip.tcp_max_connections`,
//     `sip.tcp_idle_timeout_s`)
// ---------------------------------------------------------------------------------------

fn tcp_options_ok(c: &mut TcpStream, to: SocketAddr, branch: &str) -> bool {
    if c.write_all(options_to(to, "TCP", branch).as_bytes())
        .is_err()
    {
        return false;
    }
    tcp_read_responses(c, 1, ANSWER_DEADLINE)
        .first()
        .and_then(|r| status_of(r))
        == Some(200)
}

#[test]
fn tcp_max_connections_third_connection_closed_first_two_still_work() {
    let sw = Switch::start(&[("SOFTSWITCH_SIP_TCP_MAX_CONNECTIONS", "2")]);
    let to = sw.tcp_addr();
    let mut c1 = tcp_connect(to);
    assert!(tcp_options_ok(&mut c1, to, "max-1"));
    let mut c2 = tcp_connect(to);
    assert!(tcp_options_ok(&mut c2, to, "max-2"));
    let mut c3 = tcp_connect(to);
    let _ = c3.write_all(options_to(to, "TCP", "max-3").as_bytes());
    assert!(
        tcp_wait_closed(&mut c3, ANSWER_DEADLINE),
        "third connection not closed"
    );
    assert!(
        tcp_options_ok(&mut c1, to, "max-1b"),
        "first connection broken"
    );
    assert!(
        tcp_options_ok(&mut c2, to, "max-2b"),
        "second connection broken"
    );
    let m = metrics(&sw);
    assert!(metric(&m, "softswitch_tcp_connections_rejected_total") >= 1.0);
    assert_eq!(metric(&m, "softswitch_tcp_connections_active"), 2.0);
    // Closing one frees its slot (HTTP state polled, bounded).
    drop(c1);
    let end = Instant::now() + ANSWER_DEADLINE;
    while metric(&metrics(&sw), "softswitch_tcp_connections_active") != 1.0 && Instant::now() < end
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c4 = tcp_connect(to);
    assert!(
        tcp_options_ok(&mut c4, to, "max-4"),
        "slot not released after close"
    );
}

#[test]
fn tcp_idle_timeout_closes_idle_connection() {
    let sw = Switch::start(&[("SOFTSWITCH_SIP_TCP_IDLE_TIMEOUT_S", "1")]);
    let to = sw.tcp_addr();
    let mut c = tcp_connect(to);
    assert!(tcp_options_ok(&mut c, to, "idle-1"));
    let idle_from = Instant::now();
    assert!(
        tcp_wait_closed(&mut c, Duration::from_secs(5)),
        "idle connection not closed within 5 s"
    );
    let took = idle_from.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "closed after {took:?}, before the 1 s idle timeout"
    );
    // The slot is released (HTTP state polled, bounded).
    let end = Instant::now() + ANSWER_DEADLINE;
    let mut active = metric(&metrics(&sw), "softswitch_tcp_connections_active");
    while active != 0.0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
        active = metric(&metrics(&sw), "softswitch_tcp_connections_active");
    }
    assert_eq!(active, 0.0, "closed idle connection still counted");
}

#[test]
fn rfc5626_keepalive_pings_keep_tcp_connection_past_idle_timeout() {
    let sw = Switch::start(&[("SOFTSWITCH_SIP_TCP_IDLE_TIMEOUT_S", "1")]);
    let to = sw.tcp_addr();
    let mut c = tcp_connect(to);
    let start = Instant::now();
    // Ping every ~600 ms for ~2.4 s: longer than the idle timeout in total, never idle
    // for it. Each wait is a read that must time out with the connection still open.
    for _ in 0..4 {
        c.write_all(b"\r\n\r\n").unwrap();
        assert_eq!(
            tcp_read_at_least(&mut c, 2, ANSWER_DEADLINE),
            b"\r\n",
            "no pong"
        );
        assert!(
            !tcp_wait_closed(&mut c, Duration::from_millis(600)),
            "closed despite keep-alives"
        );
    }
    assert!(start.elapsed() > Duration::from_millis(1500));
    assert!(tcp_options_ok(&mut c, to, "keepalive"));
}
