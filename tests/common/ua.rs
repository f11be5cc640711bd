//! A small test UA for calls through the switch: the caller (`Caller`: INVITE, the 407
//! and the digest retry, in-dialog requests), the callee's answers (`response_to`,
//! `answer_200`), waiting for a message with a deadline, and the CDR of a call.

use super::digest::{header_values, parse_challenge, Alg, Conn, DigestInput, RegClient};
use super::*;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

pub const SDP_OFFER: &str = "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
pub const SDP_ANSWER: &str = "v=0\r\no=bob 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
pub const WAIT: Duration = Duration::from_secs(5);

/// Reads datagrams until one satisfies `pred`, within `WAIT`.
pub fn wait_for(sock: &UdpSocket, what: &str, pred: impl Fn(&str) -> bool) -> (String, SocketAddr) {
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {what} within {WAIT:?}");
        sock.set_read_timeout(Some(left)).unwrap();
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).to_string();
            if pred(&m) {
                return (m, from);
            }
        }
    }
}

pub fn is_status(m: &str, code: u16) -> bool {
    status_of(m) == Some(code)
}

pub fn is_request(m: &str, method: &str) -> bool {
    m.starts_with(&format!("{method} "))
}

/// The headers a response copies from its request (§8.2.6.2).
pub fn response_to(
    req: &str,
    status: u16,
    reason: &str,
    to_tag: &str,
    extra: &str,
    body: &str,
) -> String {
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
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

/// The callee's 200 with its Contact at `local` and the SDP answer.
pub fn answer_200(inv: &str, to_tag: &str, local: SocketAddr) -> String {
    response_to(
        inv,
        200,
        "OK",
        to_tag,
        &format!(
            "Contact: <sip:bob@{}>\r\nContent-Type: application/sdp\r\n",
            host_port(local)
        ),
        SDP_ANSWER,
    )
}

pub struct Caller {
    pub sock: UdpSocket,
    pub local: SocketAddr,
    pub switch: SocketAddr,
    pub call_id: String,
    pub tag: String,
    pub cseq: u32,
    pub callee: String,
    /// Extra header lines for the INVITE.
    pub extra: String,
    /// The SDP offer.
    pub offer: String,
    /// The From of its requests, without the tag (its phone's own idea of who it is).
    pub from: String,
}

impl Caller {
    pub fn new(switch: SocketAddr) -> Caller {
        let sock = udp_client(switch);
        let local = sock.local_addr().unwrap();
        Caller {
            sock,
            local,
            switch,
            call_id: format!("{}@alice.test", digest_token()),
            tag: digest_token(),
            cseq: 0,
            callee: "bob".into(),
            extra: String::new(),
            offer: SDP_OFFER.into(),
            from: "<sip:alice@example.test>".into(),
        }
    }

    pub fn invite(&mut self, branch: &str, auth: Option<String>) -> String {
        self.cseq += 1;
        let auth = auth
            .map(|a| format!("Proxy-Authorization: {a}\r\n"))
            .unwrap_or_default();
        format!(
            "INVITE sip:{u}@example.test SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch={branch}{t};rport\r\nMax-Forwards: 70\r\nFrom: {f};tag={t}\r\nTo: <sip:{u}@example.test>\r\nCall-ID: {c}\r\nCSeq: {s} INVITE\r\nContact: <sip:alice@{l}>\r\n{auth}{x}Content-Type: application/sdp\r\nContent-Length: {n}\r\n\r\n{o}",
            l = host_port(self.local),
            f = self.from,
            t = self.tag,
            c = self.call_id,
            s = self.cseq,
            n = self.offer.len(),
            o = self.offer,
            u = self.callee,
            x = self.extra,
        )
    }

    pub fn send(&self, m: &str) {
        self.sock.send_to(m.as_bytes(), self.switch).unwrap();
    }

    /// INVITE → 407 → ACK → INVITE with credentials; returns the authenticated INVITE.
    pub fn call(&mut self) -> String {
        self.try_call(WAIT).expect("no 407 within the deadline")
    }

    /// [`Caller::call`], `None` when no 407 comes within `within`.
    pub fn try_call(&mut self, within: Duration) -> Option<String> {
        let first = self.invite("z9hG4bKinv1", None);
        self.send(&first);
        let r407 = try_wait_for(&self.sock, within, |m| is_status(m, 407))?;
        // ACK for the 407 (hop by hop: same branch, the 407's To).
        let ack = format!(
            "ACK sip:{u}@example.test SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bKinv1{t};rport\r\nMax-Forwards: 70\r\nFrom: {f};tag={t}\r\nTo: {to}\r\nCall-ID: {c}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            l = host_port(self.local),
            f = self.from,
            t = self.tag,
            to = header(&r407, "To").unwrap(),
            c = self.call_id,
            u = self.callee,
        );
        self.send(&ack);
        let ch = header_values(&r407, "Proxy-Authenticate", None)
            .into_iter()
            .filter_map(parse_challenge)
            .find(|c| c.alg() == Some(Alg::Md5))
            .expect("an MD5 challenge");
        let uri = format!("sip:{}@example.test", self.callee);
        let uri = uri.as_str();
        let response = DigestInput {
            alg: Alg::Md5,
            user: "alice",
            realm: &ch.realm,
            password: "alice-demo",
            method: "INVITE",
            uri,
            nonce: &ch.nonce,
            nc: "00000001",
            cnonce: "cn1",
            qop: "auth",
        }
        .response();
        let auth = format!(
            "Digest username=\"alice\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"cn1\", opaque=\"{}\"",
            ch.realm,
            ch.nonce,
            ch.opaque.clone().unwrap_or_default()
        );
        let second = self.invite("z9hG4bKinv2", Some(auth));
        self.send(&second);
        Some(second)
    }

    /// An in-dialog request to the switch's Contact with the dialog's tags.
    pub fn in_dialog(&mut self, method: &str, ok200: &str, branch: &str, cseq: u32) -> String {
        let contact = header(ok200, "Contact").expect("Contact in the 2xx");
        let target = contact.trim_start_matches('<').split('>').next().unwrap();
        format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch={branch}{t};rport\r\nMax-Forwards: 70\r\nFrom: {f};tag={t}\r\nTo: {to}\r\nCall-ID: {c}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            l = host_port(self.local),
            f = self.from,
            t = self.tag,
            to = header(ok200, "To").unwrap(),
            c = self.call_id,
        )
    }
}

pub fn digest_token() -> String {
    super::digest::token()
}

pub fn registered_bob(sw: &Switch) -> (RegClient, SocketAddr) {
    let mut bob = RegClient::udp(sw.udp_addr(), "bob", "bob-demo");
    let contact = bob.contact();
    let resp = bob.register(&[&contact], &[]);
    assert!(is_status(&resp, 200), "{resp}");
    let local = bob.local;
    (bob, local)
}

pub fn bob_sock(bob: &RegClient) -> &UdpSocket {
    match &bob.conn {
        Conn::Udp(s) => s,
        Conn::Tcp(..) => panic!("udp"),
    }
}

/// The CDR of the call with A-leg Call-ID `call_id` (it is on disk before the call counts
/// as ended, so a test that waited for the counters finds it).
pub fn cdr_of(sw: &Switch, call_id: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(sw.dir.join("cdr.jsonl")).unwrap_or_default();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a CDR line is JSON"))
        .filter(|v: &serde_json::Value| v["call_id"] == call_id)
        .collect();
    assert_eq!(lines.len(), 1, "exactly one CDR for {call_id}:\n{text}");
    lines.into_iter().next().unwrap()
}

/// The end of an answered call hung up by its caller: the callee on `b` answers the BYE
/// it got (`b_bye`, from `from`) with To tag `b_tag`; the caller gets its 200 for the BYE,
/// the call is over and billed as answered.
pub fn bye_answered_call_billed(
    sw: &Switch,
    caller: &Caller,
    b: &UdpSocket,
    (b_bye, from): (String, SocketAddr),
    b_tag: &str,
) {
    b.send_to(
        response_to(&b_bye, 200, "OK", b_tag, "", "").as_bytes(),
        from,
    )
    .unwrap();
    wait_for(&caller.sock, "200 for the BYE", |m| {
        is_status(m, 200) && m.contains("BYE")
    });
    wait_metric(sw, "softswitch_calls_active", 0.0);
    assert_eq!(cdr_of(sw, &caller.call_id)["disposition"], "answered");
}

pub fn wait_metric(sw: &Switch, series: &str, want: f64) {
    wait_until(WAIT, &format!("{series} = {want}"), || {
        metric_now(sw, series) == want
    });
}

/// Reads datagrams until one satisfies `pred`, `None` after `within`.
pub fn try_wait_for(
    sock: &UdpSocket,
    within: Duration,
    pred: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        sock.set_read_timeout(Some(left)).ok()?;
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).to_string();
            if pred(&m) {
                return Some(m);
            }
        }
    }
}
