//! Session timers (RFC 4028) through the real binary over loopback, each leg its own
//! negotiation: 422 with our Min-SE and the retry; a caller that refreshes its own
//! session (re-INVITE relayed, bodiless UPDATE answered by the switch) and a callee
//! that refreshes its leg, the call going on past the interval; phones without timers
//! refreshed by the switch (re-INVITE with the SDP it last sent, UPDATE where Allow has
//! it); a caller whose refreshes stop, and one that leaves the switch's refresh
//! unanswered, both ending the call with BYEs before the session expires
//! (`hangup_by = switch`).
//!
//! Short timers: `sip.session_expires_s = 6`, `sip.min_se_s = 3` (a test build takes a
//! Min-SE below RFC 4028's 90 s, see `SipConfig::min_se_s`). With SE = 6 s the
//! refresher refreshes at 3 s and the session is given up at 6 - min(32, 6/3) = 4 s.

mod common;

use common::digest::RegClient;
use common::ua::*;
use common::*;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const ENV: &[(&str, &str)] = &[
    ("SOFTSWITCH_SIP_SESSION_EXPIRES_S", "6"),
    ("SOFTSWITCH_SIP_MIN_SE_S", "3"),
];
/// The session interval of the test config.
const SE: Duration = Duration::from_secs(6);
const B_TAG: &str = "bobtag";
/// A desk phone that insists on timers and refreshes its own session.
const TIMER_PHONE: &str = "Supported: timer\r\nSession-Expires: 6;refresher=uac\r\nMin-SE: 3\r\nAllow: INVITE, ACK, CANCEL, BYE, UPDATE, INFO\r\n";

/// A connected call: alice (A) and bob (B), each with its leg's dialog.
struct Call {
    sw: Switch,
    alice: Caller,
    /// The 200 alice got (the A-leg's dialog: its To tag, the switch's Contact).
    a200: String,
    bob: RegClient,
    /// The B-leg INVITE bob got, and where the switch sends from.
    b_inv: String,
    b_from: SocketAddr,
    b_cseq: u32,
    /// When alice got the 200 (the sessions started).
    at: Instant,
}

/// Alice calls with `alice_extra` headers; bob answers with `bob_extra` in his 200.
fn connected(alice_extra: &str, bob_extra: &str) -> Call {
    let sw = Switch::start(ENV);
    let (bob, _) = registered_bob(&sw);
    let mut alice = Caller::new(sw.udp_addr());
    alice.extra = alice_extra.into();
    alice.call();
    let bs = bob_sock(&bob);
    let (b_inv, b_from) = wait_for(bs, "B-leg INVITE", |m| is_request(m, "INVITE"));
    let ok = response_to(
        &b_inv,
        200,
        "OK",
        B_TAG,
        &format!(
            "Contact: <sip:bob@{}>\r\n{bob_extra}Content-Type: application/sdp\r\n",
            host_port(bob.local)
        ),
        SDP_ANSWER,
    );
    bs.send_to(ok.as_bytes(), b_from).unwrap();
    let (a200, _) = wait_for(&alice.sock, "200 for the INVITE", |m| {
        is_status(m, 200) && m.contains("INVITE")
    });
    let at = Instant::now();
    wait_for(bs, "ACK on the B-leg", |m| is_request(m, "ACK"));
    let ack = alice.in_dialog("ACK", &a200, "z9hG4bKack", alice.cseq);
    alice.send(&ack);
    wait_until(WAIT, "the call connected", || {
        http_get(sw.http, "/api/calls").1.contains("\"connected\"")
    });
    Call {
        sw,
        alice,
        a200,
        bob,
        b_inv,
        b_from,
        b_cseq: 0,
        at,
    }
}

/// `base` (a request ending in `Content-Length: 0` and no body) with `extra` header
/// lines and an SDP `body`.
fn with(base: &str, extra: &str, body: &str) -> String {
    let head = base.trim_end_matches("Content-Length: 0\r\n\r\n");
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{head}{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn body_of(m: &str) -> &str {
    m.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn is_final_for(m: &str, method: &str) -> bool {
    status_of(m).is_some_and(|c| c >= 200) && header(m, "CSeq").is_some_and(|c| c.ends_with(method))
}

impl Call {
    fn bs(&self) -> &UdpSocket {
        bob_sock(&self.bob)
    }

    /// Alice's in-dialog request with her Contact, `extra` and `body`.
    fn a_request(&mut self, method: &str, branch: &str, extra: &str, body: &str) -> String {
        self.alice.cseq += 1;
        let cseq = self.alice.cseq;
        let base = self.alice.in_dialog(method, &self.a200, branch, cseq);
        let contact = format!("Contact: <sip:alice@{}>\r\n", host_port(self.alice.local));
        with(&base, &format!("{contact}{extra}"), body)
    }

    /// Bob's in-dialog request in the B-leg dialog.
    fn b_request(&mut self, method: &str, branch: &str, extra: &str) -> String {
        self.b_cseq += 1;
        let inv = &self.b_inv;
        let contact = header(inv, "Contact").expect("Contact in the B-leg INVITE");
        let target = contact.trim_start_matches('<').split('>').next().unwrap();
        format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: {to};tag={B_TAG}\r\nTo: {from}\r\nCall-ID: {c}\r\nCSeq: {s} {method}\r\nContact: <sip:bob@{l}>\r\n{extra}Content-Length: 0\r\n\r\n",
            l = host_port(self.bob.local),
            to = header(inv, "To").unwrap(),
            from = header(inv, "From").unwrap(),
            c = header(inv, "Call-ID").unwrap(),
            s = self.b_cseq,
        )
    }

    fn b_send(&self, m: &str) {
        self.bs().send_to(m.as_bytes(), self.b_from).unwrap();
    }

    /// Alice hangs up; bob answers the BYE; the call's CDR.
    fn hang_up(mut self) -> serde_json::Value {
        let bye = self.a_request("BYE", "z9hG4bKbye", "", "");
        self.alice.send(&bye);
        let (b_bye, from) = wait_for(self.bs(), "BYE on the B-leg", |m| is_request(m, "BYE"));
        self.bs()
            .send_to(
                response_to(&b_bye, 200, "OK", B_TAG, "", "").as_bytes(),
                from,
            )
            .unwrap();
        wait_for(&self.alice.sock, "200 for the BYE", |m| {
            is_final_for(m, "BYE")
        });
        wait_metric(&self.sw, "softswitch_calls_active", 0.0);
        cdr_of(&self.sw, &self.alice.call_id)
    }

    /// Bob (no timer support, Allow: UPDATE) gets the switch's refresh of his leg and
    /// answers it.
    fn bob_refreshed(&self) {
        let (up, from) = wait_for(self.bs(), "the switch's UPDATE to bob", |m| {
            is_request(m, "UPDATE")
        });
        assert_eq!(
            header(&up, "Session-Expires"),
            Some("6;refresher=uac"),
            "{up}"
        );
        self.bs()
            .send_to(response_to(&up, 200, "OK", B_TAG, "", "").as_bytes(), from)
            .unwrap();
    }

    /// The switch ended the call: each phone gets a BYE (answered 200), the call is
    /// billed as answered and hung up by the switch. Bob's refreshes crossing the end
    /// are answered.
    fn ended_by_switch(&self) -> serde_json::Value {
        let (a_bye, from) = wait_for(&self.alice.sock, "BYE to alice", |m| is_request(m, "BYE"));
        assert!(
            self.at.elapsed() < SE,
            "the BYE comes before the session expires ({:?})",
            self.at.elapsed()
        );
        self.alice
            .sock
            .send_to(response_to(&a_bye, 200, "OK", "", "", "").as_bytes(), from)
            .unwrap();
        let (b_bye, from) = wait_for(self.bs(), "BYE to bob", |m| {
            if is_request(m, "UPDATE") {
                // The switch's refresh of bob's leg, crossing the end: answered.
                let ok = response_to(m, 200, "OK", B_TAG, "", "");
                self.bs().send_to(ok.as_bytes(), self.b_from).unwrap();
            }
            is_request(m, "BYE")
        });
        self.bs()
            .send_to(
                response_to(&b_bye, 200, "OK", B_TAG, "", "").as_bytes(),
                from,
            )
            .unwrap();
        wait_metric(&self.sw, "softswitch_calls_active", 0.0);
        let cdr = cdr_of(&self.sw, &self.alice.call_id);
        assert_eq!(cdr["hangup_by"], "switch", "{cdr}");
        assert_eq!(cdr["disposition"], "answered", "{cdr}");
        cdr
    }
}

/// §6, §9: Session-Expires below our Min-SE from a phone that supports timers gets 422
/// with our Min-SE (before any challenge, billed to nobody); the retry with that
/// minimum connects, and the switch answers it with the interval and `Require: timer`.
/// The B-leg gets the switch's own Session-Expires and Min-SE, never alice's.
#[test]
fn below_min_se_is_refused_422_with_our_min_se_and_the_retry_connects() {
    let sw = Switch::start(ENV);
    let (bob, _) = registered_bob(&sw);
    let mut alice = Caller::new(sw.udp_addr());
    alice.extra = "Supported: timer\r\nSession-Expires: 2\r\n".into();
    let first = alice.invite("z9hG4bK422", None);
    alice.send(&first);
    let (r422, _) = wait_for(&alice.sock, "422", |m| {
        status_of(m).is_some_and(|s| s >= 200)
    });
    assert_eq!(status_of(&r422), Some(422), "{r422}");
    assert_eq!(reason_of(&r422), "Session Interval Too Small");
    assert_eq!(header(&r422, "Min-SE"), Some("3"), "{r422}");
    assert_eq!(
        metric_now(
            &sw,
            "softswitch_sip_messages_rejected_total{reason=\"extension\"}"
        ),
        1.0
    );
    // The retry asks for our minimum (Min-SE: the 422's, §7.1).
    alice.extra = "Supported: timer\r\nSession-Expires: 3\r\nMin-SE: 3\r\n".into();
    alice.call();
    let bs = bob_sock(&bob);
    let (inv, from) = wait_for(bs, "B-leg INVITE", |m| is_request(m, "INVITE"));
    assert_eq!(header(&inv, "Supported"), Some("timer"), "{inv}");
    assert_eq!(
        header(&inv, "Session-Expires"),
        Some("6"),
        "the switch's own:\n{inv}"
    );
    assert_eq!(header(&inv, "Min-SE"), Some("3"), "{inv}");
    bs.send_to(answer_200(&inv, B_TAG, bob.local).as_bytes(), from)
        .unwrap();
    let (a200, _) = wait_for(&alice.sock, "200 for the INVITE", |m| {
        is_status(m, 200) && m.contains("INVITE")
    });
    assert_eq!(
        header(&a200, "Session-Expires"),
        Some("3;refresher=uac"),
        "{a200}"
    );
    assert_eq!(header(&a200, "Require"), Some("timer"), "{a200}");
    let ack = alice.in_dialog("ACK", &a200, "z9hG4bKack", alice.cseq);
    alice.send(&ack);
    let bye = alice.in_dialog("BYE", &a200, "z9hG4bKbye", alice.cseq + 1);
    alice.send(&bye);
    let b_bye = wait_for(bs, "BYE on the B-leg", |m| is_request(m, "BYE"));
    bye_answered_call_billed(&sw, &alice, bs, b_bye, B_TAG);
    // One CDR: the 422 billed nobody, as a 407 does.
    let text = std::fs::read_to_string(sw.dir.join("cdr.jsonl")).unwrap_or_default();
    assert_eq!(text.lines().count(), 1, "{text}");
}

/// Both phones do timers: alice refreshes the A-leg (a re-INVITE relayed to bob and
/// answered with her leg's session; a bodiless UPDATE answered by the switch itself),
/// bob refreshes the B-leg (a bodiless UPDATE, answered by the switch). The switch
/// sends neither a refresh, and the call lives on past twice the interval.
#[test]
fn phones_that_refresh_their_own_legs_keep_the_call_past_the_interval() {
    let mut c = connected(
        TIMER_PHONE,
        "Require: timer\r\nSession-Expires: 6;refresher=uas\r\nAllow: INVITE, ACK, BYE, UPDATE\r\n",
    );
    assert_eq!(
        header(&c.a200, "Session-Expires"),
        Some("6;refresher=uac"),
        "{}",
        c.a200
    );
    assert_eq!(header(&c.a200, "Require"), Some("timer"), "{}", c.a200);
    let start = Instant::now();
    let mut round = 0;
    while start.elapsed() < SE * 2 {
        round += 1;
        assert!(round <= 8, "bounded");
        // 2.5 s of quiet on both legs (bob's socket holds what came meanwhile): the
        // switch refreshes neither (the phones do).
        let request = |m: &str| !m.starts_with("SIP/");
        let quiet = Duration::from_millis(2500);
        let a = try_wait_for(&c.alice.sock, quiet, request);
        assert_eq!(a, None, "the switch sent alice a request");
        let b = try_wait_for(c.bs(), Duration::from_millis(20), request);
        assert_eq!(b, None, "the switch sent bob a request");
        // Alice's refresh: a re-INVITE (her SDP again) or a bodiless UPDATE.
        if round % 2 == 1 {
            let branch = format!("z9hG4bKre{round}");
            let re = c.a_request("INVITE", &branch, TIMER_PHONE, SDP_OFFER);
            c.alice.send(&re);
            let (b_re, from) = wait_for(c.bs(), "the re-INVITE on the B-leg", |m| {
                is_request(m, "INVITE")
            });
            assert_eq!(body_of(&b_re), SDP_OFFER);
            assert_eq!(
                header(&b_re, "Session-Expires"),
                Some("6"),
                "B-leg's own:\n{b_re}"
            );
            let ok = response_to(
                &b_re,
                200,
                "OK",
                B_TAG,
                "Require: timer\r\nSession-Expires: 6;refresher=uas\r\nContent-Type: application/sdp\r\n",
                SDP_ANSWER,
            );
            c.bs().send_to(ok.as_bytes(), from).unwrap();
            wait_for(c.bs(), "ACK of the re-INVITE", |m| is_request(m, "ACK"));
            let (a_ok, _) = wait_for(&c.alice.sock, "200 for the re-INVITE", |m| {
                is_final_for(m, "INVITE")
            });
            assert_eq!(status_of(&a_ok), Some(200), "{a_ok}");
            assert_eq!(
                header(&a_ok, "Session-Expires"),
                Some("6;refresher=uac"),
                "{a_ok}"
            );
            assert_eq!(header(&a_ok, "Require"), Some("timer"), "{a_ok}");
            let ack = c
                .alice
                .in_dialog("ACK", &c.a200, &format!("z9hG4bKak{round}"), c.alice.cseq);
            c.alice.send(&ack);
        } else {
            let up = c.a_request("UPDATE", &format!("z9hG4bKup{round}"), TIMER_PHONE, "");
            c.alice.send(&up);
            let (a_ok, _) = wait_for(&c.alice.sock, "200 for the UPDATE", |m| {
                is_final_for(m, "UPDATE")
            });
            assert_eq!(status_of(&a_ok), Some(200), "{a_ok}");
            assert_eq!(
                header(&a_ok, "Session-Expires"),
                Some("6;refresher=uac"),
                "{a_ok}"
            );
        }
        // Bob refreshes his leg: a bodiless UPDATE, answered by the switch.
        let up = c.b_request(
            "UPDATE",
            &format!("z9hG4bKbu{round}"),
            "Supported: timer\r\nSession-Expires: 6;refresher=uac\r\n",
        );
        c.b_send(&up);
        let (b_ok, _) = wait_for(c.bs(), "200 for bob's UPDATE", |m| {
            is_final_for(m, "UPDATE")
        });
        assert_eq!(status_of(&b_ok), Some(200), "{b_ok}");
        assert_eq!(
            header(&b_ok, "Session-Expires"),
            Some("6;refresher=uac"),
            "{b_ok}"
        );
    }
    assert!(c.at.elapsed() > SE * 2);
    let cdr = c.hang_up();
    assert_eq!(cdr["hangup_by"], "caller", "{cdr}");
}

/// Phones without timer support: the switch is the refresher of both legs and refreshes
/// each at half the interval: alice (no Allow) with a re-INVITE carrying the SDP the
/// switch last sent her (bob's answer, byte for byte: no change of session), ACKed at
/// her 2xx; bob (Allow: UPDATE) with a bodiless UPDATE. Twice, and the call goes on.
#[test]
fn the_switch_refreshes_phones_that_cannot() {
    let c = connected("", "Allow: INVITE, ACK, BYE, UPDATE\r\n");
    assert_eq!(
        header(&c.a200, "Session-Expires"),
        Some("6;refresher=uas"),
        "{}",
        c.a200
    );
    assert_eq!(
        header(&c.a200, "Require"),
        None,
        "alice does not support timer"
    );
    let mut since = c.at;
    for round in 0..2 {
        let (re, from) = wait_for(&c.alice.sock, "the switch's re-INVITE", |m| {
            is_request(m, "INVITE")
        });
        let gap = since.elapsed();
        assert!(
            gap > Duration::from_secs(2) && gap < Duration::from_secs(4),
            "refreshed at SE/2: {gap:?}"
        );
        assert_eq!(
            body_of(&re),
            SDP_ANSWER,
            "the last SDP alice got, as it was"
        );
        assert_eq!(
            header(&re, "Session-Expires"),
            Some("6;refresher=uac"),
            "{re}"
        );
        assert_eq!(header(&re, "Supported"), Some("timer"), "{re}");
        let ok = response_to(
            &re,
            200,
            "OK",
            "",
            "Content-Type: application/sdp\r\n",
            SDP_OFFER,
        );
        c.alice.sock.send_to(ok.as_bytes(), from).unwrap();
        let (ack, _) = wait_for(&c.alice.sock, "ACK of the refresh", |m| {
            is_request(m, "ACK")
        });
        assert_eq!(
            header(&ack, "CSeq").and_then(|s| s.split_whitespace().next()),
            header(&re, "CSeq").and_then(|s| s.split_whitespace().next()),
            "{ack}"
        );
        let (up, from) = wait_for(c.bs(), "the switch's UPDATE", |m| is_request(m, "UPDATE"));
        assert_eq!(body_of(&up), "", "no offer in a refresh UPDATE");
        assert_eq!(
            header(&up, "Session-Expires"),
            Some("6;refresher=uac"),
            "{up}"
        );
        c.bs()
            .send_to(response_to(&up, 200, "OK", B_TAG, "", "").as_bytes(), from)
            .unwrap();
        since = Instant::now();
        assert!(round < 2);
    }
    assert!(c.at.elapsed() > SE, "past the interval");
    let cdr = c.hang_up();
    assert_eq!(cdr["hangup_by"], "caller", "{cdr}");
}

/// §10: alice is her session's refresher and goes silent: before the session expires
/// (SE - min(32, SE/3) = 4 s) the switch sends BYE to both (bob's leg is refreshed by
/// the switch meanwhile), and the CDR says the switch hung up.
#[test]
fn a_caller_whose_refreshes_stop_is_released_before_the_session_expires() {
    let c = connected(TIMER_PHONE, "Allow: INVITE, ACK, BYE, UPDATE\r\n");
    assert_eq!(header(&c.a200, "Session-Expires"), Some("6;refresher=uac"));
    c.bob_refreshed();
    c.ended_by_switch();
    assert!(
        c.at.elapsed() > Duration::from_secs(3),
        "not before the session's end: {:?}",
        c.at.elapsed()
    );
}

/// §10: the switch refreshes alice (no timer support, Allow: UPDATE) and gets no
/// answer: the call ends with BYEs to both, hung up by the switch.
#[test]
fn a_refresh_left_unanswered_ends_the_call() {
    let c = connected(
        "Allow: INVITE, ACK, CANCEL, BYE, UPDATE\r\n",
        "Allow: INVITE, ACK, BYE, UPDATE\r\n",
    );
    let (up, _) = wait_for(&c.alice.sock, "the switch's UPDATE", |m| {
        is_request(m, "UPDATE")
    });
    assert_eq!(
        header(&up, "Session-Expires"),
        Some("6;refresher=uac"),
        "{up}"
    );
    // Alice never answers it; bob answers his.
    c.bob_refreshed();
    c.ended_by_switch();
}
