//! Mid-call requests through the real binary over loopback (F5, F11): re-INVITE, UPDATE
//! and INFO relayed on the other leg in that leg's own dialog, the answer and the ACK
//! back; late offers; 491 relayed and glare at the switch; a failed re-INVITE leaving the
//! call as it was; 481 from the far side ending the call; hold and resume in every form,
//! seen in `/api/calls` and in the CDR's `held_s`. Each phone checks its own leg.

mod common;

use common::digest::{Conn, RegClient};
use common::ua::*;
use common::*;
use std::net::{SocketAddr, UdpSocket};

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
    /// Bob's CSeq in the B-leg dialog.
    b_cseq: u32,
}

const B_TAG: &str = "bobtag";

fn hold_sdp(who: &str, version: u32, how: &str) -> String {
    let (c, dir) = match how {
        "zero" => ("0.0.0.0", ""),
        "sendonly" => ("127.0.0.1", "a=sendonly\r\n"),
        "inactive" => ("127.0.0.1", "a=inactive\r\n"),
        "session-sendonly" => ("127.0.0.1", ""),
        _ => ("127.0.0.1", "a=sendrecv\r\n"),
    };
    let session_attr = if how == "session-sendonly" {
        "a=sendonly\r\n"
    } else {
        ""
    };
    format!(
        "v=0\r\no={who} 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 {c}\r\nt=0 0\r\n{session_attr}m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n{dir}"
    )
}

fn connected(env: &[(&str, &str)]) -> Call {
    let sw = Switch::start(env);
    let mut bob = RegClient::udp(sw.udp_addr(), "bob", "bob-demo");
    let contact = bob.contact();
    let resp = bob.register(&[&contact], &[]);
    assert_eq!(status_of(&resp), Some(200), "{resp}");
    let mut alice = Caller::new(sw.udp_addr());
    alice.call();
    let bs = sock(&bob);
    let (b_inv, b_from) = wait_for(bs, "B-leg INVITE", |m| m.starts_with("INVITE "));
    bs.send_to(answer_200(&b_inv, B_TAG, bob.local).as_bytes(), b_from)
        .unwrap();
    let (a200, _) = wait_for(&alice.sock, "200 for the INVITE", |m| {
        status_of(m) == Some(200) && m.contains("INVITE")
    });
    wait_for(bs, "ACK on the B-leg", |m| m.starts_with("ACK "));
    let ack = alice.in_dialog("ACK", &a200, "z9hG4bKack", alice.cseq);
    alice.send(&ack);
    wait_until(WAIT, "the call connected", || {
        let (_, body) = http_get(sw.http, "/api/calls");
        body.contains("\"connected\"")
    });
    Call {
        sw,
        alice,
        a200,
        bob,
        b_inv,
        b_from,
        b_cseq: 0,
    }
}

fn sock(bob: &RegClient) -> &UdpSocket {
    match &bob.conn {
        Conn::Udp(s) => s,
        Conn::Tcp(..) => panic!("udp"),
    }
}

impl Call {
    fn bs(&self) -> &UdpSocket {
        sock(&self.bob)
    }

    /// Alice's in-dialog request `method` with `body` (SDP unless `ctype` says).
    fn a_request(&mut self, method: &str, branch: &str, body: &str, ctype: &str) -> String {
        self.alice.cseq += 1;
        let cseq = self.alice.cseq;
        let base = self.alice.in_dialog(method, &self.a200, branch, cseq);
        let contact = format!("Contact: <sip:alice@{}>\r\n", host_port(self.alice.local));
        with_body(&base, &contact, body, ctype)
    }

    /// Bob's in-dialog request in the B-leg dialog (to the switch's Contact in the
    /// B-leg INVITE, with the B-leg's tags reversed).
    fn b_request(&mut self, method: &str, branch: &str, body: &str, ctype: &str) -> String {
        self.b_cseq += 1;
        let inv = &self.b_inv;
        let contact = header(inv, "Contact").expect("Contact in the B-leg INVITE");
        let target = contact.trim_start_matches('<').split('>').next().unwrap();
        let base = format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: {to};tag={B_TAG}\r\nTo: {from}\r\nCall-ID: {c}\r\nCSeq: {s} {method}\r\nContent-Length: 0\r\n\r\n",
            l = host_port(self.bob.local),
            to = header(inv, "To").unwrap(),
            from = header(inv, "From").unwrap(),
            c = header(inv, "Call-ID").unwrap(),
            s = self.b_cseq,
        );
        let contact = format!("Contact: <sip:bob@{}>\r\n", host_port(self.bob.local));
        with_body(&base, &contact, body, ctype)
    }

    fn b_send(&self, m: &str) {
        self.bs().send_to(m.as_bytes(), self.b_from).unwrap();
    }

    fn calls_json(&self) -> serde_json::Value {
        let (_, body) = http_get(self.sw.http, "/api/calls");
        serde_json::from_str(&body).expect("/api/calls is JSON")
    }

    /// Alice hangs up; bob answers the BYE; the call's CDR.
    fn hang_up(mut self) -> serde_json::Value {
        let bye = self.a_request("BYE", "z9hG4bKbye", "", "");
        self.alice.send(&bye);
        let (b_bye, from) = wait_for(self.bs(), "BYE on the B-leg", |m| m.starts_with("BYE "));
        self.bs()
            .send_to(
                response_to(&b_bye, 200, "OK", B_TAG, "", "").as_bytes(),
                from,
            )
            .unwrap();
        wait_for(&self.alice.sock, "200 for the BYE", |m| {
            status_of(m) == Some(200) && m.contains("BYE")
        });
        wait_until(WAIT, "the call ended", || {
            metric_now(&self.sw, "softswitch_calls_active") == 0.0
        });
        cdr_of(&self.sw, &self.alice.call_id)
    }
}

/// `base` (a request with `Content-Length: 0` and no body) with `contact` and `body`.
fn with_body(base: &str, contact: &str, body: &str, ctype: &str) -> String {
    let head = base.trim_end_matches("Content-Length: 0\r\n\r\n");
    let ct = if body.is_empty() {
        String::new()
    } else {
        format!(
            "Content-Type: {}\r\n",
            if ctype.is_empty() {
                "application/sdp"
            } else {
                ctype
            }
        )
    };
    let contact = if base.starts_with("INVITE ") || base.starts_with("UPDATE ") {
        contact
    } else {
        ""
    };
    format!(
        "{head}{contact}{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn body_of(m: &str) -> &str {
    m.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn cseq_num(m: &str) -> u32 {
    header(m, "CSeq")
        .and_then(|c| c.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("CSeq")
}

fn is_final_for(m: &str, method: &str) -> bool {
    status_of(m).is_some_and(|c| c >= 200) && header(m, "CSeq").is_some_and(|c| c.ends_with(method))
}

/// F5 from A, early offer: bob gets the re-INVITE in the B-leg's dialog (its Call-ID
/// and tags, the next CSeq of the switch's side, the offer byte for byte); alice gets
/// bob's answer byte for byte; bob is ACKed for the re-INVITE's CSeq; the call goes on.
#[test]
fn f5_reinvite_from_caller_relayed_in_the_callee_leg_dialog() {
    let mut c = connected(&[]);
    let offer = hold_sdp("alice", 2, "sendrecv");
    let reinv = c.a_request("INVITE", "z9hG4bKre1", &offer, "");
    c.alice.send(&reinv);
    let (b_re, from) = wait_for(c.bs(), "re-INVITE on the B-leg", |m| {
        m.starts_with("INVITE ")
    });
    assert_eq!(
        header(&b_re, "Call-ID"),
        header(&c.b_inv, "Call-ID"),
        "B-leg Call-ID"
    );
    assert!(header(&b_re, "To")
        .unwrap()
        .contains(&format!("tag={B_TAG}")));
    assert_eq!(
        header(&b_re, "From").and_then(|f| f.split("tag=").nth(1)),
        header(&c.b_inv, "From").and_then(|f| f.split("tag=").nth(1)),
        "the switch's tag of the B-leg"
    );
    assert!(cseq_num(&b_re) > cseq_num(&c.b_inv), "the B-leg's own CSeq");
    assert_eq!(body_of(&b_re), offer, "offer byte for byte");
    assert!(
        header(&b_re, "Contact").is_some(),
        "a re-INVITE carries Contact"
    );
    let answer = hold_sdp("bob", 3, "sendrecv");
    let ok = response_to(
        &b_re,
        200,
        "OK",
        B_TAG,
        &format!(
            "Contact: <sip:bob@{}>\r\nContent-Type: application/sdp\r\n",
            host_port(c.bob.local)
        ),
        &answer,
    );
    c.bs().send_to(ok.as_bytes(), from).unwrap();
    let (b_ack, _) = wait_for(c.bs(), "ACK for the re-INVITE", |m| m.starts_with("ACK "));
    assert_eq!(
        cseq_num(&b_ack),
        cseq_num(&b_re),
        "ACK carries the re-INVITE's CSeq"
    );
    let (a_ok, _) = wait_for(&c.alice.sock, "200 for the re-INVITE", |m| {
        is_final_for(m, "INVITE") && cseq_num(m) == c.alice.cseq
    });
    assert_eq!(status_of(&a_ok), Some(200));
    assert_eq!(body_of(&a_ok), answer, "answer byte for byte");
    assert!(header(&a_ok, "Contact").is_some());
    let ack = c
        .alice
        .in_dialog("ACK", &c.a200, "z9hG4bKreack", c.alice.cseq);
    c.alice.send(&ack);
    assert_eq!(c.calls_json()[0]["held"], false);
    let cdr = c.hang_up();
    assert_eq!(cdr["disposition"], "answered");
    assert_eq!(cdr["held_s"], 0.0);
}

/// F5 late offer: alice's re-INVITE has no SDP; bob's 200 offers; alice's ACK answers,
/// and the switch's ACK to bob carries that answer.
#[test]
fn f5_late_offer_reinvite_answer_goes_in_the_ack() {
    let mut c = connected(&[]);
    let reinv = c.a_request("INVITE", "z9hG4bKlate", "", "");
    c.alice.send(&reinv);
    let (b_re, from) = wait_for(c.bs(), "re-INVITE on the B-leg", |m| {
        m.starts_with("INVITE ")
    });
    assert_eq!(body_of(&b_re), "", "no offer");
    let offer = hold_sdp("bob", 3, "sendrecv");
    let ok = response_to(
        &b_re,
        200,
        "OK",
        B_TAG,
        "Content-Type: application/sdp\r\n",
        &offer,
    );
    c.bs().send_to(ok.as_bytes(), from).unwrap();
    let (a_ok, _) = wait_for(&c.alice.sock, "200 for the re-INVITE", |m| {
        is_final_for(m, "INVITE") && cseq_num(m) == c.alice.cseq
    });
    assert_eq!(body_of(&a_ok), offer);
    let answer = hold_sdp("alice", 2, "sendrecv");
    let ack = c
        .alice
        .in_dialog("ACK", &c.a200, "z9hG4bKlateack", c.alice.cseq);
    c.alice.send(&with_body(&ack, "", &answer, ""));
    let (b_ack, _) = wait_for(c.bs(), "ACK with the answer", |m| m.starts_with("ACK "));
    assert_eq!(body_of(&b_ack), answer, "the answer byte for byte");
    assert_eq!(cseq_num(&b_ack), cseq_num(&b_re));
    c.hang_up();
}

/// F11: bob holds alice in each form (c=0.0.0.0, a=sendonly, a=inactive, session-level
/// sendonly) and resumes; `/api/calls` shows who holds; the CDR's `held_s` counts it.
#[test]
fn f11_hold_and_resume_every_form_from_the_callee() {
    let mut c = connected(&[]);
    let mut version = 3;
    for how in ["zero", "sendonly", "inactive", "session-sendonly"] {
        for hold in [true, false] {
            version += 1;
            let sdp = hold_sdp("bob", version, if hold { how } else { "sendrecv" });
            let branch = format!("z9hG4bKh{version}");
            let re = c.b_request("INVITE", &branch, &sdp, "");
            c.b_send(&re);
            let (a_re, from) = wait_for(&c.alice.sock, "re-INVITE on the A-leg", |m| {
                m.starts_with("INVITE ")
            });
            assert_eq!(body_of(&a_re), sdp, "{how}: relayed unchanged");
            let answer = hold_sdp("alice", version, if hold { "inactive" } else { "sendrecv" });
            let ok = response_to(
                &a_re,
                200,
                "OK",
                "unused",
                &format!(
                    "Contact: <sip:alice@{}>\r\nContent-Type: application/sdp\r\n",
                    host_port(c.alice.local)
                ),
                &answer,
            );
            c.alice.sock.send_to(ok.as_bytes(), from).unwrap();
            wait_for(&c.alice.sock, "ACK on the A-leg", |m| m.starts_with("ACK "));
            let (b_ok, _) = wait_for(c.bs(), "200 for bob's re-INVITE", |m| {
                is_final_for(m, "INVITE") && cseq_num(m) == c.b_cseq
            });
            assert_eq!(body_of(&b_ok), answer);
            let ack = {
                let base = c.b_request("ACK", &format!("{branch}a"), "", "");
                // An ACK carries its INVITE's CSeq.
                c.b_cseq -= 1;
                base.replace(
                    &format!("CSeq: {} ACK", c.b_cseq + 1),
                    &format!("CSeq: {} ACK", c.b_cseq),
                )
            };
            c.b_send(&ack);
            let calls = c.calls_json();
            assert_eq!(calls[0]["held"], hold, "{how} hold={hold}: {calls}");
            if hold {
                assert_eq!(calls[0]["held_by"], "B", "{how}: {calls}");
                // Held for a moment the CDR can see (a wait for a clock, not a message).
                std::thread::sleep(std::time::Duration::from_millis(60));
            }
        }
    }
    let cdr = c.hang_up();
    let held = cdr["held_s"].as_f64().expect("held_s");
    assert!(held >= 0.2, "held_s {held}");
}

/// A 491 from the far side is relayed; the call survives and the retry succeeds.
#[test]
fn f5_491_from_the_far_side_is_relayed_and_the_retry_succeeds() {
    let mut c = connected(&[]);
    for attempt in 0..2 {
        let offer = hold_sdp("alice", 2 + attempt, "sendonly");
        let reinv = c.a_request("INVITE", &format!("z9hG4bK491{attempt}"), &offer, "");
        c.alice.send(&reinv);
        let (b_re, from) = wait_for(c.bs(), "re-INVITE on the B-leg", |m| {
            m.starts_with("INVITE ")
        });
        let (status, reason, body, extra) = if attempt == 0 {
            (491, "Request Pending", String::new(), String::new())
        } else {
            (
                200,
                "OK",
                hold_sdp("bob", 3, "recvonly"),
                "Content-Type: application/sdp\r\n".to_string(),
            )
        };
        c.bs()
            .send_to(
                response_to(&b_re, status, reason, B_TAG, &extra, &body).as_bytes(),
                from,
            )
            .unwrap();
        let (a_r, _) = wait_for(&c.alice.sock, "the final answer", |m| {
            is_final_for(m, "INVITE") && cseq_num(m) == c.alice.cseq
        });
        assert_eq!(status_of(&a_r), Some(status), "{a_r}");
        let ack = c.alice.in_dialog(
            "ACK",
            &c.a200,
            &format!("z9hG4bK491a{attempt}"),
            c.alice.cseq,
        );
        if status == 200 {
            c.alice.send(&ack);
        }
    }
    assert_eq!(c.calls_json()[0]["held_by"], "A");
    let cdr = c.hang_up();
    assert_eq!(cdr["disposition"], "answered");
}

/// Glare at the switch: alice's re-INVITE is on its way to bob when bob sends his own:
/// bob's loses (491 from the switch), alice's completes, bob's retry then succeeds.
#[test]
fn glare_at_the_switch_the_second_offer_gets_491_and_its_retry_succeeds() {
    let mut c = connected(&[]);
    let reinv = c.a_request("INVITE", "z9hG4bKg1", &hold_sdp("alice", 2, "sendonly"), "");
    c.alice.send(&reinv);
    let (b_re, from) = wait_for(c.bs(), "alice's re-INVITE on the B-leg", |m| {
        m.starts_with("INVITE ")
    });
    let bob_re = c.b_request("INVITE", "z9hG4bKg2", &hold_sdp("bob", 4, "sendonly"), "");
    c.b_send(&bob_re);
    let (r, _) = wait_for(c.bs(), "491 for bob's crossing re-INVITE", |m| {
        is_final_for(m, "INVITE") && cseq_num(m) == c.b_cseq
    });
    assert_eq!(status_of(&r), Some(491), "{r}");
    // Alice's completes.
    let ok = response_to(
        &b_re,
        200,
        "OK",
        B_TAG,
        "Content-Type: application/sdp\r\n",
        &hold_sdp("bob", 4, "recvonly"),
    );
    c.bs().send_to(ok.as_bytes(), from).unwrap();
    wait_for(&c.alice.sock, "200 for alice's re-INVITE", |m| {
        is_final_for(m, "INVITE") && status_of(m) == Some(200)
    });
    let ack = c
        .alice
        .in_dialog("ACK", &c.a200, "z9hG4bKg1a", c.alice.cseq);
    c.alice.send(&ack);
    // Bob retries (a new CSeq) and now gets through to alice.
    let retry = c.b_request("INVITE", "z9hG4bKg3", &hold_sdp("bob", 5, "sendrecv"), "");
    c.b_send(&retry);
    let (a_re, from) = wait_for(&c.alice.sock, "bob's retry on the A-leg", |m| {
        m.starts_with("INVITE ")
    });
    let ok = response_to(
        &a_re,
        200,
        "OK",
        "unused",
        "Content-Type: application/sdp\r\n",
        &hold_sdp("alice", 3, "sendonly"),
    );
    c.alice.sock.send_to(ok.as_bytes(), from).unwrap();
    let (b_ok, _) = wait_for(c.bs(), "200 for bob's retry", |m| {
        is_final_for(m, "INVITE") && cseq_num(m) == c.b_cseq
    });
    assert_eq!(status_of(&b_ok), Some(200));
    c.hang_up();
}

/// A re-INVITE the far side refuses (488) leaves the call as it was: the sender gets
/// 488, the call stays connected and not held, and ends normally.
#[test]
fn failed_reinvite_leaves_the_call_as_it_was() {
    let mut c = connected(&[]);
    let reinv = c.a_request("INVITE", "z9hG4bKf1", &hold_sdp("alice", 2, "sendonly"), "");
    c.alice.send(&reinv);
    let (b_re, from) = wait_for(c.bs(), "re-INVITE on the B-leg", |m| {
        m.starts_with("INVITE ")
    });
    c.bs()
        .send_to(
            response_to(&b_re, 488, "Not Acceptable Here", B_TAG, "", "").as_bytes(),
            from,
        )
        .unwrap();
    let (r, _) = wait_for(&c.alice.sock, "488", |m| is_final_for(m, "INVITE"));
    assert_eq!(status_of(&r), Some(488));
    let calls = c.calls_json();
    assert_eq!(calls[0]["state"], "connected", "{calls}");
    assert_eq!(calls[0]["held"], false, "a failed hold is no hold");
    let cdr = c.hang_up();
    assert_eq!(cdr["held_s"], 0.0);
    assert_eq!(cdr["hangup_by"], "caller");
}

/// A 481 from the far side (its dialog is gone) ends the call: alice gets the status,
/// then a BYE; the CDR says the switch hung up.
#[test]
fn reinvite_481_from_the_far_side_ends_the_call_with_byes() {
    let mut c = connected(&[]);
    let reinv = c.a_request(
        "INVITE",
        "z9hG4bK481",
        &hold_sdp("alice", 2, "sendrecv"),
        "",
    );
    c.alice.send(&reinv);
    let (b_re, from) = wait_for(c.bs(), "re-INVITE on the B-leg", |m| {
        m.starts_with("INVITE ")
    });
    c.bs()
        .send_to(
            response_to(&b_re, 481, "Call/Transaction Does Not Exist", B_TAG, "", "").as_bytes(),
            from,
        )
        .unwrap();
    wait_for(&c.alice.sock, "481 relayed", |m| {
        is_final_for(m, "INVITE") && status_of(m) == Some(481)
    });
    let (bye, bye_from) = wait_for(&c.alice.sock, "BYE to alice", |m| m.starts_with("BYE "));
    c.alice
        .sock
        .send_to(
            response_to(&bye, 200, "OK", "x", "", "").as_bytes(),
            bye_from,
        )
        .unwrap();
    let (b_bye, bf) = wait_for(c.bs(), "BYE to bob", |m| m.starts_with("BYE "));
    c.bs()
        .send_to(response_to(&b_bye, 200, "OK", B_TAG, "", "").as_bytes(), bf)
        .unwrap();
    wait_until(WAIT, "the call ended", || {
        metric_now(&c.sw, "softswitch_calls_active") == 0.0
    });
    let cdr = cdr_of(&c.sw, &c.alice.call_id);
    assert_eq!(cdr["hangup_by"], "switch");
    assert_eq!(cdr["disposition"], "answered");
}

/// UPDATE (RFC 3311) and INFO (RFC 6086, DTMF) are relayed the same way, bodies and
/// their description byte for byte.
#[test]
fn update_and_info_are_relayed() {
    let mut c = connected(&[]);
    let offer = hold_sdp("alice", 2, "inactive");
    let update = c.a_request("UPDATE", "z9hG4bKu1", &offer, "");
    c.alice.send(&update);
    let (b_up, from) = wait_for(c.bs(), "UPDATE on the B-leg", |m| m.starts_with("UPDATE "));
    assert_eq!(body_of(&b_up), offer);
    let answer = hold_sdp("bob", 3, "inactive");
    c.bs()
        .send_to(
            response_to(
                &b_up,
                200,
                "OK",
                B_TAG,
                "Content-Type: application/sdp\r\n",
                &answer,
            )
            .as_bytes(),
            from,
        )
        .unwrap();
    let (a_ok, _) = wait_for(&c.alice.sock, "200 for the UPDATE", |m| {
        is_final_for(m, "UPDATE")
    });
    assert_eq!(body_of(&a_ok), answer);
    assert_eq!(c.calls_json()[0]["held_by"], "A");
    let dtmf = "Signal=5\r\nDuration=160\r\n";
    let info = c.b_request("INFO", "z9hG4bKi1", dtmf, "application/dtmf-relay");
    c.b_send(&info);
    let (a_info, from) = wait_for(&c.alice.sock, "INFO on the A-leg", |m| {
        m.starts_with("INFO ")
    });
    assert_eq!(body_of(&a_info), dtmf);
    assert_eq!(
        header(&a_info, "Content-Type"),
        Some("application/dtmf-relay")
    );
    c.alice
        .sock
        .send_to(
            response_to(&a_info, 200, "OK", "x", "", "").as_bytes(),
            from,
        )
        .unwrap();
    let (b_ok, _) = wait_for(c.bs(), "200 for the INFO", |m| is_final_for(m, "INFO"));
    assert_eq!(status_of(&b_ok), Some(200));
    let cdr = c.hang_up();
    assert_eq!(cdr["disposition"], "answered");
}

/// A BYE while the sender's re-INVITE waits for the far party's answer (§15.1.2): the
/// re-INVITE gets 487, the BYE 200; the far party gets its BYE and the call ends as a
/// caller's hang-up. No server transaction is left waiting for an answer that never comes.
#[test]
fn bye_during_a_pending_reinvite_answers_it_487() {
    let mut c = connected(&[]);
    let reinv = c.a_request("INVITE", "z9hG4bKp1", &hold_sdp("alice", 2, "sendonly"), "");
    c.alice.send(&reinv);
    wait_for(c.bs(), "re-INVITE on the B-leg", |m| {
        m.starts_with("INVITE ")
    });
    // Bob never answers it; alice gives up and hangs up.
    let bye = c.a_request("BYE", "z9hG4bKp2", "", "");
    c.alice.send(&bye);
    let (b_bye, from) = wait_for(c.bs(), "BYE on the B-leg", |m| m.starts_with("BYE "));
    c.bs()
        .send_to(
            response_to(&b_bye, 200, "OK", B_TAG, "", "").as_bytes(),
            from,
        )
        .unwrap();
    let (r, _) = wait_for(&c.alice.sock, "the re-INVITE's final answer", |m| {
        is_final_for(m, "INVITE")
    });
    assert_eq!(status_of(&r), Some(487), "{r}");
    assert_eq!(
        cseq_num(&r),
        c.alice.cseq - 1,
        "it answers the re-INVITE: {r}"
    );
    wait_for(&c.alice.sock, "200 for the BYE", |m| {
        status_of(m) == Some(200) && m.contains("BYE")
    });
    wait_until(WAIT, "the call ended", || {
        metric_now(&c.sw, "softswitch_calls_active") == 0.0
    });
    let cdr = cdr_of(&c.sw, &c.alice.call_id);
    assert_eq!(cdr["hangup_by"], "caller");
}
