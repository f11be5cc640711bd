//! Call forwarding and busy through the real binary over loopback (flows F9, F10,
//! unconditional forwarding, the busy side of F12): UDP phones registered with digest,
//! alice calling with digest, each phone checking what it sees on its own leg, each
//! call's CDR field by field (`callee`, `connected`, `forwarded_from`, `forward_reason`).

mod common;

use common::digest::{header_values, parse_challenge, Alg, Conn, DigestInput, RegClient};
use common::ua::{is_request, is_status, response_to, try_wait_for, wait_for, WAIT};
use common::*;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const SDP_OFFER: &str = "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
const SDP_ANSWER: &str = "v=0\r\no=carol 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// The users: bob forwards to carol on busy and (after 1 s) on no answer; dave forwards
/// every call to carol; kim and lee forward to each other on busy (a loop at run time);
/// erin and frank unconditionally (a loop before ringing); gina to hank, who never
/// registers; ivan has no rule; judy forwards to carol on busy; walt has call waiting.
const USERS: &str = r#"
[sip]
domain = "example.test"

[[users]]
user = "alice"
password = "alice-pw"

[[users]]
user = "bob"
password = "bob-pw"
forward_busy = "carol"
forward_no_answer = "sip:carol@example.test"
no_answer_timeout_s = 1

[[users]]
user = "carol"
password = "carol-pw"

[[users]]
user = "dave"
password = "dave-pw"
forward_unconditional = "carol"

[[users]]
user = "kim"
password = "kim-pw"
forward_busy = "lee"

[[users]]
user = "lee"
password = "lee-pw"
forward_busy = "kim"

[[users]]
user = "erin"
password = "erin-pw"
forward_unconditional = "frank"

[[users]]
user = "frank"
password = "frank-pw"
forward_unconditional = "erin"

[[users]]
user = "gina"
password = "gina-pw"
forward_unconditional = "hank"

[[users]]
user = "hank"
password = "hank-pw"

[[users]]
user = "ivan"
password = "ivan-pw"

[[users]]
user = "judy"
password = "judy-pw"
forward_busy = "carol"

[[users]]
user = "walt"
password = "walt-pw"
call_waiting = true
"#;

fn start() -> Switch {
    Switch::start_with_config("127.0.0.1", USERS, &[])
}

/// A registered phone of `user`.
struct Phone {
    reg: RegClient,
}

impl Phone {
    fn register(sw: &Switch, user: &str) -> Phone {
        let mut reg = RegClient::udp(sw.udp_addr(), user, &format!("{user}-pw"));
        let contact = reg.contact();
        let resp = reg.register(&[&contact], &[]);
        assert!(is_status(&resp, 200), "{resp}");
        Phone { reg }
    }

    fn sock(&self) -> &UdpSocket {
        match &self.reg.conn {
            Conn::Udp(s) => s,
            Conn::Tcp(..) => panic!("udp"),
        }
    }

    fn invite(&self) -> (String, SocketAddr) {
        wait_for(self.sock(), "an INVITE", |m| is_request(m, "INVITE"))
    }

    fn reply(&self, to: SocketAddr, req: &str, status: u16, reason: &str, tag: &str) {
        let extra = format!("Contact: <{}>\r\n", self.reg.contact_uri());
        let (extra, body) = if status == 200 {
            (
                format!("{extra}Content-Type: application/sdp\r\n"),
                SDP_ANSWER,
            )
        } else {
            (extra, "")
        };
        let m = response_to(req, status, reason, tag, &extra, body);
        self.sock().send_to(m.as_bytes(), to).unwrap();
    }
}

/// alice's phone, calling.
struct Caller {
    sock: UdpSocket,
    local: SocketAddr,
    switch: SocketAddr,
    call_id: String,
    tag: String,
    callee: String,
}

impl Caller {
    fn new(sw: &Switch, callee: &str) -> Caller {
        let sock = udp_client(sw.udp_addr());
        let local = sock.local_addr().unwrap();
        Caller {
            sock,
            local,
            switch: sw.udp_addr(),
            call_id: format!("{}@alice.test", common::digest::token()),
            tag: common::digest::token(),
            callee: callee.into(),
        }
    }

    fn invite(&self, cseq: u32, auth: &str) -> String {
        format!(
            "INVITE sip:{u}@example.test SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bKf{cseq}{t};rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag={t}\r\nTo: <sip:{u}@example.test>\r\nCall-ID: {c}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:alice@{l}>\r\n{auth}Content-Type: application/sdp\r\nContent-Length: {n}\r\n\r\n{o}",
            l = host_port(self.local),
            t = self.tag,
            c = self.call_id,
            n = SDP_OFFER.len(),
            o = SDP_OFFER,
            u = self.callee,
        )
    }

    fn send(&self, m: &str) {
        self.sock.send_to(m.as_bytes(), self.switch).unwrap();
    }

    /// INVITE → 407 → ACK → INVITE with credentials.
    fn call(&self) {
        self.send(&self.invite(1, ""));
        let (r407, _) = wait_for(&self.sock, "407", |m| is_status(m, 407));
        let ack = format!(
            "ACK sip:{u}@example.test SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bKf1{t};rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag={t}\r\nTo: {to}\r\nCall-ID: {c}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            l = host_port(self.local),
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
        let response = DigestInput {
            alg: Alg::Md5,
            user: "alice",
            realm: &ch.realm,
            password: "alice-pw",
            method: "INVITE",
            uri: &uri,
            nonce: &ch.nonce,
            nc: "00000001",
            cnonce: "cn1",
            qop: "auth",
        }
        .response();
        let auth = format!(
            "Proxy-Authorization: Digest username=\"alice\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"cn1\", opaque=\"{}\"\r\n",
            ch.realm,
            ch.nonce,
            ch.opaque.clone().unwrap_or_default()
        );
        self.send(&self.invite(2, &auth));
    }

    /// Every response to the INVITE up to its final one, which must be `status`.
    fn final_status(&self, status: u16) -> (String, Vec<String>) {
        let mut seen = Vec::new();
        let deadline = Instant::now() + WAIT;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no final response; saw {seen:?}");
            self.sock.set_read_timeout(Some(left)).unwrap();
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            let m = String::from_utf8_lossy(&buf[..n]).to_string();
            let Some(code) = status_of(&m) else { continue };
            if header(&m, "CSeq").is_none_or(|c| c != "2 INVITE") {
                continue;
            }
            if code >= 200 {
                assert_eq!(code, status, "final response:\n{m}\nafter {seen:?}");
                return (m, seen);
            }
            seen.push(m);
        }
    }

    fn in_dialog(&self, method: &str, ok200: &str, cseq: u32) -> String {
        let contact = header(ok200, "Contact").expect("Contact in the 2xx");
        let target = contact.trim_start_matches('<').split('>').next().unwrap();
        format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bKd{cseq}{method}{t};rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag={t}\r\nTo: {to}\r\nCall-ID: {c}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            l = host_port(self.local),
            t = self.tag,
            to = header(ok200, "To").unwrap(),
            c = self.call_id,
        )
    }

    /// A's side of an answered call: ACK, then BYE answered by `callee`, 200 back.
    fn ack_and_hang_up(&self, ok200: &str, callee: &Phone) {
        self.send(&self.in_dialog("ACK", ok200, 2));
        let (ack, _) = wait_for(callee.sock(), "ACK on the C-leg", |m| is_request(m, "ACK"));
        assert!(ack.contains("ACK "), "{ack}");
        self.send(&self.in_dialog("BYE", ok200, 3));
        let (bye, from) = wait_for(callee.sock(), "BYE on the C-leg", |m| is_request(m, "BYE"));
        callee
            .sock()
            .send_to(response_to(&bye, 200, "OK", "", "", "").as_bytes(), from)
            .unwrap();
        wait_for(&self.sock, "200 for the BYE", |m| {
            is_status(m, 200) && m.contains(" BYE")
        });
    }
}

/// The CDR of the call with A-leg Call-ID `call_id`, once it is on disk.
fn cdr_of(sw: &Switch, call_id: &str) -> serde_json::Value {
    let mut found = None;
    wait_until(WAIT, &format!("the CDR of {call_id}"), || {
        let text = std::fs::read_to_string(sw.dir.join("cdr.jsonl")).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|v: &serde_json::Value| v["call_id"] == call_id)
            .collect();
        assert!(lines.len() <= 1, "two CDRs for {call_id}:\n{text}");
        found = lines.into_iter().next();
        found.is_some()
    });
    found.unwrap_or_default()
}

fn assert_forwarding(
    cdr: &serde_json::Value,
    callee: &str,
    connected: Option<&str>,
    from: &str,
    reason: &str,
) {
    assert_eq!(cdr["caller"], "sip:alice@example.test", "{cdr}");
    assert_eq!(cdr["callee"], format!("sip:{callee}@example.test"), "{cdr}");
    match connected {
        Some(c) => assert_eq!(cdr["connected"], format!("sip:{c}@example.test"), "{cdr}"),
        None => assert!(cdr["connected"].is_null(), "{cdr}"),
    }
    assert_eq!(
        cdr["forwarded_from"],
        format!("sip:{from}@example.test"),
        "{cdr}"
    );
    assert_eq!(cdr["forward_reason"], reason, "{cdr}");
}

/// The C-leg INVITE names the forwarding user both ways (RFC 7044, RFC 5806).
fn assert_names_diverter(inv: &str, from: &str, to: &str, cause: u16, reason: &str) {
    let hi = header_values(inv, "History-Info", None);
    assert_eq!(
        hi,
        [
            format!("<sip:{from}@example.test>;index=1"),
            format!("<sip:{to}@example.test;cause={cause}>;index=1.1;mp=1")
        ],
        "{inv}"
    );
    assert_eq!(
        header(inv, "Diversion"),
        Some(format!("<sip:{from}@example.test>;reason={reason};counter=1").as_str()),
        "{inv}"
    );
    assert!(inv.ends_with(SDP_OFFER), "A's offer byte for byte:\n{inv}");
    assert!(
        header(inv, "To").is_some_and(|t| t.contains(&format!("sip:{to}@example.test"))),
        "{inv}"
    );
}

/// F9: bob answers 486; the switch ACKs it, alice never sees the 486 (181, then carol's
/// 180 and 200), carol's INVITE says the call was bob's, the call connects and ends
/// with BYE; the CDR: callee bob, connected carol, forwarded from bob, busy.
#[test]
fn f9_forward_on_busy() {
    let sw = start();
    let bob = Phone::register(&sw, "bob");
    let carol = Phone::register(&sw, "carol");
    let alice = Caller::new(&sw, "bob");
    alice.call();
    let (inv, from) = bob.invite();
    bob.reply(from, &inv, 486, "Busy Here", "b1");
    let (ack, _) = wait_for(bob.sock(), "ACK for the 486", |m| is_request(m, "ACK"));
    assert!(
        header(&ack, "CSeq").is_some_and(|c| c.ends_with("ACK")),
        "{ack}"
    );
    let (cinv, cfrom) = carol.invite();
    assert_names_diverter(&cinv, "bob", "carol", 486, "user-busy");
    // RFC 3261 §21.1.3 before carol's ringing; nothing of bob's 486.
    let (r181, _) = wait_for(&alice.sock, "181", |m| {
        status_of(m).is_some_and(|c| c > 100)
    });
    assert!(is_status(&r181, 181), "{r181}");
    assert!(r181.contains("Call Is Being Forwarded"), "{r181}");
    carol.reply(cfrom, &cinv, 180, "Ringing", "c1");
    let (r180, _) = wait_for(&alice.sock, "180 from carol", |m| {
        status_of(m).is_some_and(|c| c > 100)
    });
    assert!(is_status(&r180, 180), "{r180}");
    carol.reply(cfrom, &cinv, 200, "OK", "c1");
    let (ok, seen) = alice.final_status(200);
    assert!(!seen.iter().any(|m| is_status(m, 486)), "{seen:?}");
    assert!(ok.ends_with(SDP_ANSWER), "{ok}");
    alice.ack_and_hang_up(&ok, &carol);
    let cdr = cdr_of(&sw, &alice.call_id);
    assert_forwarding(&cdr, "bob", Some("carol"), "bob", "busy");
    assert_eq!(cdr["disposition"], "answered");
    assert_eq!(cdr["hangup_by"], "caller");
}

/// F10: bob rings past his own 1 s ring time: the switch CANCELs him (bob answers 487,
/// gets his ACK), carol rings and answers.
#[test]
fn f10_forward_on_no_answer() {
    let sw = start();
    let bob = Phone::register(&sw, "bob");
    let carol = Phone::register(&sw, "carol");
    let alice = Caller::new(&sw, "bob");
    alice.call();
    let (inv, from) = bob.invite();
    bob.reply(from, &inv, 180, "Ringing", "b2");
    let (cancel, cfrom) = wait_for(bob.sock(), "CANCEL after bob's ring time", |m| {
        is_request(m, "CANCEL")
    });
    bob.sock()
        .send_to(
            response_to(&cancel, 200, "OK", "b2", "", "").as_bytes(),
            cfrom,
        )
        .unwrap();
    bob.reply(from, &inv, 487, "Request Terminated", "b2");
    wait_for(bob.sock(), "ACK for the 487", |m| is_request(m, "ACK"));
    let (cinv, cf) = carol.invite();
    assert_names_diverter(&cinv, "bob", "carol", 408, "no-answer");
    carol.reply(cf, &cinv, 200, "OK", "c2");
    let (ok, seen) = alice.final_status(200);
    assert!(!seen.iter().any(|m| status_of(m).is_some_and(|c| c >= 300)));
    alice.ack_and_hang_up(&ok, &carol);
    let cdr = cdr_of(&sw, &alice.call_id);
    assert_forwarding(&cdr, "bob", Some("carol"), "bob", "no_answer");
    assert_eq!(cdr["disposition"], "answered");
}

/// Unconditional: dave's phone never sees an INVITE; carol rings with dave named.
#[test]
fn unconditional_forwarding_skips_the_callee() {
    let sw = start();
    let dave = Phone::register(&sw, "dave");
    let carol = Phone::register(&sw, "carol");
    let alice = Caller::new(&sw, "dave");
    alice.call();
    let (cinv, cf) = carol.invite();
    assert_names_diverter(&cinv, "dave", "carol", 302, "unconditional");
    carol.reply(cf, &cinv, 200, "OK", "c3");
    let (ok, _) = alice.final_status(200);
    alice.ack_and_hang_up(&ok, &carol);
    assert!(
        try_wait_for(dave.sock(), Duration::from_millis(300), |m| is_request(
            m, "INVITE"
        ))
        .is_none(),
        "dave was rung"
    );
    let cdr = cdr_of(&sw, &alice.call_id);
    assert_forwarding(&cdr, "dave", Some("carol"), "dave", "unconditional");
}

/// kim → lee → kim on busy: each phone gets exactly one INVITE, alice gets 482.
#[test]
fn a_forwarding_loop_ends_bounded() {
    let sw = start();
    let kim = Phone::register(&sw, "kim");
    let lee = Phone::register(&sw, "lee");
    let alice = Caller::new(&sw, "kim");
    alice.call();
    let (inv, from) = kim.invite();
    kim.reply(from, &inv, 486, "Busy Here", "k1");
    let (linv, lf) = lee.invite();
    lee.reply(lf, &linv, 486, "Busy Here", "l1");
    let (fin, _) = alice.final_status(482);
    assert!(fin.contains("Loop Detected"), "{fin}");
    for (p, what) in [(&kim, "kim"), (&lee, "lee")] {
        let again = try_wait_for(p.sock(), Duration::from_millis(300), |m| {
            is_request(m, "INVITE")
        });
        assert!(again.is_none(), "{what} got a second INVITE");
    }
    let cdr = cdr_of(&sw, &alice.call_id);
    assert_eq!(cdr["sip_status"], 482);
    assert_eq!(cdr["disposition"], "rejected");
    assert_forwarding(&cdr, "kim", None, "kim", "busy");
    // A loop of unconditional rules is refused before anyone rings: 482, billed.
    let erin = Phone::register(&sw, "erin");
    let alice = Caller::new(&sw, "erin");
    alice.call();
    alice.final_status(482);
    assert!(
        try_wait_for(erin.sock(), Duration::from_millis(300), |m| is_request(
            m, "INVITE"
        ))
        .is_none()
    );
    assert_eq!(cdr_of(&sw, &alice.call_id)["sip_status"], 482);
}

/// gina forwards to hank, who is not registered: 480.
#[test]
fn a_target_not_registered_is_480() {
    let sw = start();
    let _gina = Phone::register(&sw, "gina");
    let alice = Caller::new(&sw, "gina");
    alice.call();
    alice.final_status(480);
    let cdr = cdr_of(&sw, &alice.call_id);
    assert_eq!(cdr["callee"], "sip:gina@example.test");
    assert_eq!(cdr["disposition"], "no_answer");
    // At run time too: bob busy, carol not registered.
    let bob = Phone::register(&sw, "bob");
    let alice = Caller::new(&sw, "bob");
    alice.call();
    let (inv, from) = bob.invite();
    bob.reply(from, &inv, 486, "Busy Here", "b4");
    let (_, seen) = alice.final_status(480);
    assert!(!seen.iter().any(|m| is_status(m, 486)), "{seen:?}");
    let cdr = cdr_of(&sw, &alice.call_id);
    assert_forwarding(&cdr, "bob", None, "bob", "busy");
    assert_eq!(cdr["sip_status"], 480);
}

/// A user ringing in one call is busy for the next: without call waiting the switch
/// answers 486 itself (ivan's phone sees one INVITE); with `forward_busy` (judy) the
/// second call goes to carol; with call waiting (walt) it is offered to the phone.
#[test]
fn busy_without_call_waiting() {
    let sw = start();
    let ivan = Phone::register(&sw, "ivan");
    let first = Caller::new(&sw, "ivan");
    first.call();
    let (inv, from) = ivan.invite();
    ivan.reply(from, &inv, 180, "Ringing", "i1");
    wait_for(&first.sock, "180", |m| is_status(m, 180));
    let second = Caller::new(&sw, "ivan");
    second.call();
    let (r486, _) = second.final_status(486);
    assert!(r486.contains("Busy Here"), "{r486}");
    assert!(
        try_wait_for(ivan.sock(), Duration::from_millis(300), |m| is_request(
            m, "INVITE"
        ))
        .is_none()
    );
    let cdr = cdr_of(&sw, &second.call_id);
    assert_eq!(cdr["disposition"], "busy");
    assert_eq!(cdr["hangup_by"], "switch");
    assert_eq!(cdr["sip_status"], 486);

    let judy = Phone::register(&sw, "judy");
    let carol = Phone::register(&sw, "carol");
    let first = Caller::new(&sw, "judy");
    first.call();
    let (inv, from) = judy.invite();
    judy.reply(from, &inv, 180, "Ringing", "j1");
    wait_for(&first.sock, "180", |m| is_status(m, 180));
    let second = Caller::new(&sw, "judy");
    second.call();
    let (cinv, cf) = carol.invite();
    assert_names_diverter(&cinv, "judy", "carol", 486, "user-busy");
    carol.reply(cf, &cinv, 200, "OK", "c5");
    let (ok, _) = second.final_status(200);
    second.ack_and_hang_up(&ok, &carol);
    assert!(
        try_wait_for(judy.sock(), Duration::from_millis(300), |m| is_request(
            m, "INVITE"
        ))
        .is_none()
    );
    assert_forwarding(
        &cdr_of(&sw, &second.call_id),
        "judy",
        Some("carol"),
        "judy",
        "busy",
    );

    let walt = Phone::register(&sw, "walt");
    let first = Caller::new(&sw, "walt");
    first.call();
    let (inv, from) = walt.invite();
    walt.reply(from, &inv, 180, "Ringing", "w1");
    let second = Caller::new(&sw, "walt");
    second.call();
    let (inv2, _) = walt.invite();
    assert_ne!(
        header(&inv2, "Call-ID"),
        header(&inv, "Call-ID"),
        "a new dialog"
    );
}
