//! Calls through the real binary over loopback: two UDP phones, bob registered, alice
//! calling him with digest (407), each phone checking what it sees on its own leg.
//! F3 (setup), F4 (release from either side), F6 (busy), F7 (caller CANCEL).

mod common;

use common::digest::{Conn, RegClient};
use common::ua::*;
use common::*;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// F3 and F4: setup with 407, 180 and 200 relayed with SDP, ACK per leg, BYE from A.
#[test]
fn f3_f4_basic_call_caller_hangs_up() {
    // The switch's own session interval differs from alice's, to tell them apart.
    let sw = Switch::start(&[("SOFTSWITCH_SIP_SESSION_EXPIRES_S", "1200")]);
    let (bob, _) = registered_bob(&sw);
    let bs = bob_sock(&bob);
    let mut alice = Caller::new(sw.udp_addr());
    // A desk phone's INVITE: session timers (RFC 4028), 100rel (RFC 3262), its methods.
    alice.extra = "Supported: timer, 100rel, replaces\r\nSession-Expires: 1800\r\nMin-SE: 120\r\nAllow: INVITE, ACK, CANCEL, BYE, UPDATE, PRACK, REFER, INFO\r\n".into();
    alice.call();
    // B-leg INVITE: a fresh dialog, A's SDP byte for byte.
    let (inv, from_switch) = wait_for(bs, "B-leg INVITE", |m| is_request(m, "INVITE"));
    // The switch is the B-leg's UAC: bob learns the switch's abilities, not alice's (no
    // 100rel nobody PRACKs; the switch's own session timer, which it refreshes itself
    // where bob does not, never alice's).
    assert_eq!(header(&inv, "Supported"), Some("timer"), "{inv}");
    assert_eq!(header(&inv, "Session-Expires"), Some("1200"), "{inv}");
    assert_eq!(header(&inv, "Min-SE"), Some("90"), "{inv}");
    assert_eq!(header(&inv, "Require"), None, "{inv}");
    assert!(!inv.contains("100rel") && !inv.contains("1800"), "{inv}");
    assert_eq!(
        header(&inv, "Allow"),
        Some("INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE, INFO"),
        "{inv}"
    );
    assert_ne!(
        header(&inv, "Call-ID"),
        Some(alice.call_id.as_str()),
        "{inv}"
    );
    assert!(!inv.contains(&alice.tag), "A's tag leaked:\n{inv}");
    assert_eq!(header(&inv, "Max-Forwards"), Some("69"));
    assert!(inv.ends_with(SDP_OFFER), "{inv}");
    assert!(
        header(&inv, "Contact").is_some_and(|c| c.contains("switch@")),
        "{inv}"
    );
    // Ringing, then the answer.
    let ringing = response_to(
        &inv,
        180,
        "Ringing",
        "bt1",
        "Contact: <sip:bob@127.0.0.1>\r\n",
        "",
    );
    bs.send_to(ringing.as_bytes(), from_switch).unwrap();
    let (r180, _) = wait_for(&alice.sock, "180", |m| is_status(m, 180));
    let a_to = header(&r180, "To").unwrap().to_string();
    assert!(a_to.contains(";tag="), "{r180}");
    let ok = answer_200(&inv, "bt1", bob.local);
    bs.send_to(ok.as_bytes(), from_switch).unwrap();
    let (a200, _) = wait_for(&alice.sock, "200 for the INVITE", |m| {
        is_status(m, 200) && m.contains("INVITE")
    });
    assert!(a200.ends_with(SDP_ANSWER), "B's SDP relayed:\n{a200}");
    assert_eq!(
        header(&a200, "Allow"),
        Some("INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE, INFO"),
        "the switch's own methods (§13.3.1.4):\n{a200}"
    );
    // Alice's session (RFC 4028 §9): her interval capped at the switch's, and she, who
    // supports timers, refreshes it.
    assert_eq!(
        header(&a200, "Session-Expires"),
        Some("1200;refresher=uac"),
        "{a200}"
    );
    assert_eq!(header(&a200, "Require"), Some("timer"), "{a200}");
    assert_eq!(
        header(&a200, "To"),
        Some(a_to.as_str()),
        "same dialog as the 180"
    );
    // B gets its ACK from the switch (end to end on the B-leg).
    let (b_ack, _) = wait_for(bs, "ACK on the B-leg", |m| is_request(m, "ACK"));
    assert!(
        header(&b_ack, "CSeq").is_some_and(|c| c.starts_with("1 ACK")),
        "{b_ack}"
    );
    // A's ACK, then A hangs up.
    let ack = alice.in_dialog("ACK", &a200, "z9hG4bKack1", 2);
    alice.send(&ack);
    assert_eq!(metric_now(&sw, "softswitch_calls_active"), 1.0);
    // An in-dialog OPTIONS (a phone's keep-alive, §11.2) is answered by the switch, the
    // UA of alice's dialog: 200 in the dialog, with what the switch allows.
    let options = alice.in_dialog("OPTIONS", &a200, "z9hG4bKopt1", 3);
    alice.send(&options);
    let (opt_ok, _) = wait_for(&alice.sock, "the OPTIONS' answer", |m| {
        status_of(m).is_some() && m.contains("OPTIONS")
    });
    assert_eq!(status_of(&opt_ok), Some(200), "{opt_ok}");
    assert_eq!(header(&opt_ok, "To"), Some(a_to.as_str()), "{opt_ok}");
    assert_eq!(
        header(&opt_ok, "Allow"),
        Some("INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE, INFO"),
        "{opt_ok}"
    );
    // GET /api/calls: the call, its parties and both legs (connected once A's ACK is in).
    let deadline = Instant::now() + WAIT;
    let call = loop {
        let (code, body) = http_get(sw.http, "/api/calls");
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let c = v[0].clone();
        if c["state"] == "connected" {
            break c;
        }
        assert!(Instant::now() < deadline, "never connected: {body}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(call["call_id"], alice.call_id.as_str());
    assert_eq!(call["caller"], "sip:alice@example.test");
    assert_eq!(call["callee"], "sip:bob@example.test");
    assert_eq!(call["legs"][0]["leg"], "A");
    assert_eq!(call["legs"][1]["leg"], "B1");
    assert_eq!(call["legs"][1]["state"], "answered");
    assert!(call["start_time"].is_string());
    let bye = alice.in_dialog("BYE", &a200, "z9hG4bKbye1", 4);
    alice.send(&bye);
    let (b_bye, from_switch) = wait_for(bs, "BYE on the B-leg", |m| is_request(m, "BYE"));
    let b_ok = response_to(&b_bye, 200, "OK", "bt1", "", "");
    bs.send_to(b_ok.as_bytes(), from_switch).unwrap();
    let (bye_ok, _) = wait_for(&alice.sock, "200 for the BYE", |m| {
        is_status(m, 200) && m.contains("BYE")
    });
    assert!(bye_ok.contains(&alice.call_id));
    wait_metric(&sw, "softswitch_calls_active", 0.0);
    wait_metric(&sw, "softswitch_calls_total{disposition=\"answered\"}", 1.0);
    assert_eq!(
        http_get(sw.http, "/api/calls").1.trim(),
        "[]",
        "no call left"
    );
    let cdr = cdr_of(&sw, &alice.call_id);
    assert_eq!(cdr["caller"], "sip:alice@example.test");
    assert_eq!(cdr["callee"], "sip:bob@example.test");
    assert_eq!(cdr["connected"], "sip:bob@example.test");
    assert_eq!(cdr["disposition"], "answered");
    assert_eq!(cdr["sip_status"], 200);
    assert_eq!(cdr["hangup_by"], "caller");
    assert!(
        cdr["answer_time"].is_string() && cdr["end_time"].is_string(),
        "{cdr}"
    );
    assert_eq!(metric_now(&sw, "softswitch_cdrs_written_total"), 1.0);
}

/// F4 from the callee's side: bob hangs up, alice gets the BYE.
#[test]
fn f4_callee_hangs_up() {
    let sw = Switch::start(&[]);
    let (bob, _) = registered_bob(&sw);
    let bs = bob_sock(&bob);
    let mut alice = Caller::new(sw.udp_addr());
    alice.call();
    let (inv, from_switch) = wait_for(bs, "B-leg INVITE", |m| is_request(m, "INVITE"));
    let ok = answer_200(&inv, "bt2", bob.local);
    bs.send_to(ok.as_bytes(), from_switch).unwrap();
    let (a200, _) = wait_for(&alice.sock, "200", |m| {
        is_status(m, 200) && m.contains("INVITE")
    });
    let ack = alice.in_dialog("ACK", &a200, "z9hG4bKack2", 2);
    alice.send(&ack);
    // bob's BYE on the B-leg dialog: From bob (his tag), To the switch's tag.
    let b_call_id = header(&inv, "Call-ID").unwrap();
    let sw_tag = header(&inv, "From").unwrap().split("tag=").nth(1).unwrap();
    let bye = format!(
        "BYE sip:switch@{sw} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bKbbye;rport\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.test>;tag=bt2\r\nTo: <sip:bob@example.test>;tag={sw_tag}\r\nCall-ID: {b_call_id}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        sw = host_port(sw.udp_addr()),
        l = host_port(bob.local),
    );
    bs.send_to(bye.as_bytes(), sw.udp_addr()).unwrap();
    wait_for(bs, "200 for bob's BYE", |m| {
        is_status(m, 200) && m.contains("BYE")
    });
    let (a_bye, from) = wait_for(&alice.sock, "BYE on the A-leg", |m| is_request(m, "BYE"));
    assert!(a_bye.contains(&alice.call_id), "{a_bye}");
    alice
        .sock
        .send_to(response_to(&a_bye, 200, "OK", "x", "", "").as_bytes(), from)
        .unwrap();
    wait_metric(&sw, "softswitch_calls_active", 0.0);
}

/// F6: bob busy; 486 relayed to alice, who ACKs it.
#[test]
fn f6_busy() {
    let sw = Switch::start(&[]);
    let (bob, _) = registered_bob(&sw);
    let bs = bob_sock(&bob);
    let mut alice = Caller::new(sw.udp_addr());
    alice.call();
    let (inv, from_switch) = wait_for(bs, "B-leg INVITE", |m| is_request(m, "INVITE"));
    let busy = response_to(&inv, 486, "Busy Here", "bt3", "", "");
    bs.send_to(busy.as_bytes(), from_switch).unwrap();
    // The switch ACKs the 486 on the B-leg (hop by hop).
    wait_for(bs, "ACK for the 486", |m| is_request(m, "ACK"));
    let (r486, _) = wait_for(&alice.sock, "486", |m| is_status(m, 486));
    assert!(r486.contains(&alice.call_id));
    wait_metric(&sw, "softswitch_calls_total{disposition=\"busy\"}", 1.0);
    wait_metric(&sw, "softswitch_calls_active", 0.0);
    let cdr = cdr_of(&sw, &alice.call_id);
    assert_eq!(
        (cdr["disposition"].as_str(), cdr["sip_status"].as_u64()),
        (Some("busy"), Some(486))
    );
    assert!(
        cdr["answer_time"].is_null() && cdr["billable_s"] == 0,
        "{cdr}"
    );
}

/// Bounded state (`limits.max_transactions`): the transactions of a call being set up
/// work (the A-leg's INVITE server transaction, the B-leg's INVITE retransmitted to a
/// silent phone) and fill a table of two, so a new INVITE gets 503 with Retry-After,
/// statelessly, before routing. Once the call is answered both only wait out RFC 6026's
/// Timer L/M: they yield their slots, and the next caller gets through.
#[test]
fn max_transactions_only_working_transactions_refuse_new_calls() {
    let sw = Switch::start(&[("SOFTSWITCH_LIMITS_MAX_TRANSACTIONS", "2")]);
    let (bob, _) = registered_bob(&sw);
    let bs = bob_sock(&bob);
    let mut alice = Caller::new(sw.udp_addr());
    let invite = alice.call();
    let (inv, from_switch) = wait_for(bs, "B-leg INVITE", |m| is_request(m, "INVITE"));
    // Two working transactions: a retransmission of alice's INVITE still goes to its
    // own transaction (its provisional again, never a 503)...
    wait_for(&alice.sock, "100 Trying", |m| is_status(m, 100));
    alice.send(&invite);
    let again = try_wait_for(&alice.sock, WAIT, |m| status_of(m).is_some())
        .expect("an answer to the retransmission");
    assert!(is_status(&again, 100), "{again}");
    // ...and there is no room for a third caller's INVITE.
    let mut carol = Caller::new(sw.udp_addr());
    let first = carol.invite("z9hG4bKfull", None);
    carol.send(&first);
    let r503 = try_wait_for(&carol.sock, WAIT, |m| {
        status_of(m).is_some_and(|s| s >= 200)
    })
    .expect("an answer while the table is full");
    assert!(is_status(&r503, 503), "{r503}");
    assert!(header(&r503, "Retry-After").is_some(), "{r503}");
    assert!(
        metric_now(
            &sw,
            r#"softswitch_sip_messages_rejected_total{reason="overload"}"#
        ) >= 1.0
    );
    // bob answers: alice's call is up, its INVITE transactions linger.
    bs.send_to(answer_200(&inv, "btx", bob.local).as_bytes(), from_switch)
        .unwrap();
    let (a200, _) = wait_for(&alice.sock, "200 for the INVITE", |m| {
        is_status(m, 200) && m.contains("INVITE")
    });
    let cseq = alice.cseq;
    let ack = alice.in_dialog("ACK", &a200, "z9hG4bKack", cseq);
    alice.send(&ack);
    wait_metric(&sw, "softswitch_transactions_lingering", 2.0);
    // carol is let in now: challenged, then rung through to bob.
    carol.call();
    let (inv2, _) = wait_for(bs, "carol's B-leg INVITE", |m| {
        is_request(m, "INVITE") && header(m, "Call-ID") != header(&inv, "Call-ID")
    });
    assert!(inv2.ends_with(SDP_OFFER), "{inv2}");
    assert!(metric_now(&sw, "softswitch_transactions_retired_total") >= 1.0);
    assert_eq!(metric_now(&sw, "softswitch_transactions_capacity"), 2.0);
}

/// F7: alice cancels while bob rings: 200 for the CANCEL, 487 for the INVITE, CANCEL on
/// the B-leg.
#[test]
fn f7_caller_cancel() {
    let sw = Switch::start(&[]);
    let (bob, _) = registered_bob(&sw);
    let bs = bob_sock(&bob);
    let mut alice = Caller::new(sw.udp_addr());
    alice.call();
    let (inv, from_switch) = wait_for(bs, "B-leg INVITE", |m| is_request(m, "INVITE"));
    bs.send_to(
        response_to(&inv, 180, "Ringing", "bt4", "", "").as_bytes(),
        from_switch,
    )
    .unwrap();
    wait_for(&alice.sock, "180", |m| is_status(m, 180));
    let cancel = format!(
        "CANCEL sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bKinv2{t};rport\r\nMax-Forwards: 70\r\nFrom: {f};tag={t}\r\nTo: <sip:bob@example.test>\r\nCall-ID: {c}\r\nCSeq: {s} CANCEL\r\nContent-Length: 0\r\n\r\n",
        l = host_port(alice.local),
        t = alice.tag,
        f = alice.from,
        c = alice.call_id,
        s = alice.cseq,
    );
    alice.send(&cancel);
    wait_for(&alice.sock, "200 for the CANCEL", |m| {
        is_status(m, 200) && m.contains("CANCEL")
    });
    let (b_cancel, from) = wait_for(bs, "CANCEL on the B-leg", |m| is_request(m, "CANCEL"));
    bs.send_to(
        response_to(&b_cancel, 200, "OK", "bt4", "", "").as_bytes(),
        from,
    )
    .unwrap();
    bs.send_to(
        response_to(&inv, 487, "Request Terminated", "bt4", "", "").as_bytes(),
        from,
    )
    .unwrap();
    wait_for(&alice.sock, "487", |m| is_status(m, 487));
    wait_metric(
        &sw,
        "softswitch_calls_total{disposition=\"cancelled\"}",
        1.0,
    );
    wait_metric(&sw, "softswitch_calls_active", 0.0);
    let cdr = cdr_of(&sw, &alice.call_id);
    assert_eq!(cdr["disposition"], "cancelled");
    assert_eq!(cdr["sip_status"], 487);
    assert_eq!(cdr["hangup_by"], "caller");
}

/// After authentication: an unknown callee gets 404, a subscriber with no binding 480
/// (before it, both get the same 407: no user enumeration).
#[test]
fn authenticated_invite_unknown_404_unregistered_480() {
    let sw = Switch::start(&[]);
    for (callee, code) in [("nobody", 404), ("carol", 480)] {
        let mut alice = Caller::new(sw.udp_addr());
        alice.callee = callee.into();
        alice.call();
        let (r, _) = wait_for(&alice.sock, "the final response", |m| {
            status_of(m).is_some_and(|c| c >= 200) && m.contains("CSeq: 2 INVITE")
        });
        assert_eq!(status_of(&r), Some(code), "{callee}: {r}");
    }
    assert_eq!(metric_now(&sw, "softswitch_calls_active"), 0.0);
}

/// F8: bob rings and never answers; at the ring time the switch CANCELs the B-leg and
/// alice gets 480 (`sip.no_answer_timeout_s`).
#[test]
fn f8_no_answer_ring_timeout() {
    let sw = Switch::start(&[("SOFTSWITCH_SIP_NO_ANSWER_TIMEOUT_S", "1")]);
    let (bob, _) = registered_bob(&sw);
    let bs = bob_sock(&bob);
    let mut alice = Caller::new(sw.udp_addr());
    alice.call();
    let (inv, from_switch) = wait_for(bs, "B-leg INVITE", |m| is_request(m, "INVITE"));
    let rang = Instant::now();
    bs.send_to(
        response_to(&inv, 180, "Ringing", "bt5", "", "").as_bytes(),
        from_switch,
    )
    .unwrap();
    let (b_cancel, from) = wait_for(bs, "CANCEL at the ring time", |m| is_request(m, "CANCEL"));
    assert!(
        rang.elapsed() >= Duration::from_millis(900),
        "cancelled too early"
    );
    bs.send_to(
        response_to(&b_cancel, 200, "OK", "bt5", "", "").as_bytes(),
        from,
    )
    .unwrap();
    bs.send_to(
        response_to(&inv, 487, "Request Terminated", "bt5", "", "").as_bytes(),
        from,
    )
    .unwrap();
    let (r, _) = wait_for(&alice.sock, "480", |m| is_status(m, 480));
    assert!(r.contains(&alice.call_id));
    wait_metric(
        &sw,
        "softswitch_calls_total{disposition=\"no_answer\"}",
        1.0,
    );
    let cdr = cdr_of(&sw, &alice.call_id);
    assert_eq!(cdr["hangup_by"], "switch");
}

/// Two bindings ring in parallel; the first 2xx wins, the other gets CANCEL; its 2xx
/// crossing the CANCEL is ACKed and released with BYE.
#[test]
fn parallel_ringing_first_2xx_wins_late_2xx_released() {
    let sw = Switch::start(&[]);
    let (bob1, _) = registered_bob(&sw);
    let (bob2, _) = registered_bob(&sw);
    let (s1, s2) = (bob_sock(&bob1), bob_sock(&bob2));
    let mut alice = Caller::new(sw.udp_addr());
    alice.call();
    let (inv1, from1) = wait_for(s1, "INVITE to binding 1", |m| is_request(m, "INVITE"));
    let (inv2, from2) = wait_for(s2, "INVITE to binding 2", |m| is_request(m, "INVITE"));
    assert_ne!(
        header(&inv1, "Call-ID"),
        header(&inv2, "Call-ID"),
        "one dialog per leg"
    );
    for (s, inv, from, tag) in [(s1, &inv1, from1, "b1"), (s2, &inv2, from2, "b2")] {
        s.send_to(
            response_to(inv, 180, "Ringing", tag, "", "").as_bytes(),
            from,
        )
        .unwrap();
    }
    let ok2 = answer_200(&inv2, "b2", bob2.local);
    s2.send_to(ok2.as_bytes(), from2).unwrap();
    let (a200, _) = wait_for(&alice.sock, "200", |m| {
        is_status(m, 200) && m.contains("INVITE")
    });
    assert!(a200.ends_with(SDP_ANSWER));
    let (cancel, from) = wait_for(s1, "CANCEL to the losing binding", |m| {
        is_request(m, "CANCEL")
    });
    s1.send_to(
        response_to(&cancel, 200, "OK", "b1", "", "").as_bytes(),
        from,
    )
    .unwrap();
    // Its 2xx crossed the CANCEL: the switch takes the dialog up and releases it.
    let ok1 = answer_200(&inv1, "b1", bob1.local);
    s1.send_to(ok1.as_bytes(), from).unwrap();
    wait_for(s1, "ACK for the late 2xx", |m| is_request(m, "ACK"));
    let (bye1, from) = wait_for(s1, "BYE for the late 2xx", |m| is_request(m, "BYE"));
    s1.send_to(response_to(&bye1, 200, "OK", "b1", "", "").as_bytes(), from)
        .unwrap();
    // The winner's call goes on and ends normally.
    let ack = alice.in_dialog("ACK", &a200, "z9hG4bKpack", 2);
    alice.send(&ack);
    let bye = alice.in_dialog("BYE", &a200, "z9hG4bKpbye", 3);
    alice.send(&bye);
    let b_bye = wait_for(s2, "BYE to the winner", |m| is_request(m, "BYE"));
    bye_answered_call_billed(&sw, &alice, s2, b_bye, "b2");
}

/// B registered over TCP and gone (connection closed, nothing listening): the B-leg
/// cannot be reached and A gets 480 at once, not after Timer B.
#[test]
fn unreachable_callee_480() {
    let sw = Switch::start(&[]);
    {
        let mut bob = RegClient::tcp(sw.tcp_addr(), "bob", "bob-demo");
        let contact = bob.contact();
        let resp = bob.register(&[&contact], &[]);
        assert!(is_status(&resp, 200), "{resp}");
    } // bob's connection and its listening port are gone
    let mut alice = Caller::new(sw.udp_addr());
    let started = Instant::now();
    alice.call();
    let (r, _) = wait_for(&alice.sock, "a final response", |m| {
        status_of(m).is_some_and(|c| c >= 300) && m.contains("CSeq: 2 INVITE")
    });
    assert_eq!(status_of(&r), Some(480), "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited for a timer"
    );
    wait_metric(&sw, "softswitch_calls_total{disposition=\"failed\"}", 1.0);
}

/// B registered over UDP and gone (its port closed): the B-leg INVITE draws an ICMP port
/// unreachable, which the switch reads from the socket's error queue (RFC 3261 §18.4):
/// the caller gets 503 or 480 at once, not 408 after Timer B, and the switch keeps
/// reading (an ICMP error on its socket must not stop its UDP listener).
#[test]
fn unreachable_udp_callee_icmp() {
    let sw = Switch::start(&[]);
    {
        let mut bob = RegClient::udp(sw.udp_addr(), "bob", "bob-demo");
        let contact = bob.contact();
        let resp = bob.register(&[&contact], &[]);
        assert!(is_status(&resp, 200), "{resp}");
    } // bob's socket is closed: his port is unreachable now
    let mut alice = Caller::new(sw.udp_addr());
    let started = Instant::now();
    alice.call();
    let (r, _) = wait_for(&alice.sock, "a final response", |m| {
        status_of(m).is_some_and(|c| c >= 300) && m.contains("CSeq: 2 INVITE")
    });
    let status = status_of(&r);
    assert!(matches!(status, Some(480 | 503)), "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited for Timer B: {:?}",
        started.elapsed()
    );
    wait_metric(&sw, "softswitch_calls_total{disposition=\"failed\"}", 1.0);
    // Still serving UDP, and the next call reaches a live phone: the kernel reports a
    // pending ICMP error on whatever the socket does next (a send to another phone
    // too); the switch drains it and sends again.
    let (bob2, _) = registered_bob(&sw);
    let bs = bob_sock(&bob2);
    let mut carol = Caller::new(sw.udp_addr());
    carol.call();
    let (inv, from) = wait_for(bs, "the next call's INVITE", |m| is_request(m, "INVITE"));
    bs.send_to(
        response_to(&inv, 486, "Busy Here", "b2", "", "").as_bytes(),
        from,
    )
    .unwrap();
    let (r, _) = wait_for(&carol.sock, "486", |m| {
        status_of(m).is_some_and(|c| c >= 300) && m.contains("CSeq: 2 INVITE")
    });
    assert_eq!(status_of(&r), Some(486), "{r}");
}

/// Durability: calls run back to back, the switch is SIGKILLed in the middle of them
/// and restarted on the same directory; every call alice saw end (her BYE answered 200)
/// has exactly one CDR, and no call has two.
#[test]
fn kill_9_loses_no_cdr_of_a_call_that_ended() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    let sw = Switch::start(&[]);
    let (bob, _) = registered_bob(&sw);
    let Conn::Udp(bsock) = bob.conn else {
        panic!("udp")
    };
    let bob_local = bob.local;
    let stop = Arc::new(AtomicBool::new(false));
    // Bob answers every INVITE with 200 and every BYE with 200 (bounded by `stop`).
    let bob_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            bsock
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = bsock.recv_from(&mut buf) else {
                    continue;
                };
                let m = String::from_utf8_lossy(&buf[..n]).to_string();
                let reply = if is_request(&m, "INVITE") {
                    answer_200(&m, "bk", bob_local)
                } else if is_request(&m, "BYE") {
                    response_to(&m, 200, "OK", "bk", "", "")
                } else {
                    continue;
                };
                let _ = bsock.send_to(reply.as_bytes(), from);
            }
        })
    };
    // Alice calls and hangs up, over and over (at most 200 calls or 10 s), reporting
    // each call she saw end.
    let (ended_tx, ended_rx) = mpsc::channel::<String>();
    let switch = sw.udp_addr();
    let alice_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            for _ in 0..200 {
                if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(10) {
                    return;
                }
                let mut alice = Caller::new(switch);
                let w = Duration::from_secs(2);
                // Nothing here may panic: the kill ends the loop at any step.
                if alice.try_call(w).is_none() {
                    return;
                }
                let Some(ok) = try_wait_for(&alice.sock, w, |m| {
                    is_status(m, 200) && m.contains("INVITE")
                }) else {
                    return;
                };
                let ack = alice.in_dialog("ACK", &ok, "z9hG4bKkack", alice.cseq);
                alice.send(&ack);
                let bye = alice.in_dialog("BYE", &ok, "z9hG4bKkbye", alice.cseq + 1);
                alice.send(&bye);
                if try_wait_for(&alice.sock, w, |m| is_status(m, 200) && m.contains("BYE"))
                    .is_none()
                {
                    return;
                }
                if ended_tx.send(alice.call_id.clone()).is_err() {
                    return;
                }
            }
        })
    };
    // Kill once a dozen calls ended, while the next ones are under way.
    let mut ended = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ended.len() < 12 {
        let left = deadline.saturating_duration_since(Instant::now());
        ended.push(ended_rx.recv_timeout(left).expect("calls end"));
    }
    let (_, dir) = sw.stop_keeping_dir("KILL", Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    alice_thread.join().unwrap();
    bob_thread.join().unwrap();
    ended.extend(ended_rx.try_iter());
    // Restart on the same directory: the CDR file is recovered (a torn line cut off).
    let sw = Switch::start_in(dir, "127.0.0.1", &[]);
    let text = std::fs::read_to_string(sw.dir.join("cdr.jsonl")).unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("every line is a whole CDR");
            v["call_id"].as_str().unwrap().to_string()
        })
        .collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a duplicate CDR:\n{text}");
    for id in &ended {
        assert!(
            ids.contains(id),
            "call {id} ended but has no CDR ({} CDRs)",
            ids.len()
        );
    }
    assert!(ended.len() >= 12);
    // The restarted switch serves.
    let r = udp_exchange(
        sw.udp_addr(),
        options_to(sw.udp_addr(), "UDP", "z9hG4bKk9").as_bytes(),
    );
    assert!(r.is_some_and(|r| is_status(&r, 200)));
}

/// A panic in one call's handler (the test-only fault hook of debug-assertion builds)
/// ends that call alone: its caller gets 500, its callee a CANCEL, its CDR says failed by
/// the switch; a call already ringing is answered and ends normally.
#[test]
fn a_panic_in_one_call_ends_that_call_only() {
    panic_in_one_call("panic");
}

/// The same with the panic in one of the call's Leg actors (its B-leg, at its first
/// response) instead of its controller: the controller ends the call the same way.
#[test]
fn a_panic_in_one_leg_ends_that_call_only() {
    panic_in_one_call("panic-leg");
}

fn panic_in_one_call(fault: &str) {
    if !cfg!(debug_assertions) {
        panic!(
            "the fault hook exists only in builds with debug assertions: run the tests as \
             scripts/test-all.sh does (CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true), or in debug"
        );
    }
    let sw = Switch::start(&[]);
    let (bob, _) = registered_bob(&sw);
    let bs = bob_sock(&bob);
    let mut good = Caller::new(sw.udp_addr());
    good.call();
    let (inv1, from1) = wait_for(bs, "the good call's INVITE", |m| is_request(m, "INVITE"));
    bs.send_to(
        response_to(&inv1, 180, "Ringing", "g1", "", "").as_bytes(),
        from1,
    )
    .unwrap();
    wait_for(&good.sock, "180", |m| is_status(m, 180));
    let mut bad = Caller::new(sw.udp_addr());
    bad.extra = format!("X-Softswitch-Test-Fault: {fault}\r\n");
    bad.call();
    let good_cid = header(&inv1, "Call-ID").unwrap().to_string();
    let (inv2, from2) = wait_for(bs, "the faulty call's INVITE", |m| {
        is_request(m, "INVITE") && !m.contains(&good_cid)
    });
    assert!(!inv2.contains("X-Softswitch-Test-Fault"), "not forwarded");
    bs.send_to(
        response_to(&inv2, 180, "Ringing", "b1", "", "").as_bytes(),
        from2,
    )
    .unwrap();
    let (r, _) = wait_for(&bad.sock, "500 for the faulty call", |m| {
        status_of(m).is_some_and(|c| c >= 300)
    });
    assert_eq!(status_of(&r), Some(500), "{r}");
    let (cancel, from) = wait_for(bs, "CANCEL of the faulty call's B-leg", |m| {
        is_request(m, "CANCEL")
    });
    assert!(
        !cancel.contains(&good_cid),
        "only the faulty call's leg is cancelled"
    );
    bs.send_to(
        response_to(&cancel, 200, "OK", "b1", "", "").as_bytes(),
        from,
    )
    .unwrap();
    // The good call goes on.
    let ok = answer_200(&inv1, "g1", bob.local);
    bs.send_to(ok.as_bytes(), from1).unwrap();
    let (a200, _) = wait_for(&good.sock, "200", |m| {
        is_status(m, 200) && m.contains("INVITE")
    });
    let ack = good.in_dialog("ACK", &a200, "z9hG4bKgack", 2);
    good.send(&ack);
    let bye = good.in_dialog("BYE", &a200, "z9hG4bKgbye", 3);
    good.send(&bye);
    let b_bye = wait_for(bs, "BYE of the good call", |m| is_request(m, "BYE"));
    bye_answered_call_billed(&sw, &good, bs, b_bye, "g1");
    wait_metric(&sw, "softswitch_call_legs_active", 0.0);
    assert_eq!(metric_now(&sw, "softswitch_call_panics_total"), 1.0);
    let c = cdr_of(&sw, &bad.call_id);
    assert_eq!(
        (
            c["disposition"].as_str(),
            c["sip_status"].as_u64(),
            c["hangup_by"].as_str()
        ),
        (Some("failed"), Some(500), Some("switch"))
    );
}

/// No leftovers: a bounded burst of calls (8 callers × 25 calls), each hung up by the
/// caller or the callee at random; afterwards no call, leg or API entry is left, and the
/// callee saw a BYE (or sent one, answered) for every call it answered.
#[test]
fn burst_of_calls_leaves_nothing_behind() {
    use std::collections::{HashMap, HashSet};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    const CALLERS: usize = 8;
    const CALLS_EACH: usize = 25;
    // T1 = 50 ms: every transaction's lingering timer (64·T1) is 3.2 s, so the test can
    // also see the transaction table empty afterwards.
    let sw = Switch::start(&[("SOFTSWITCH_SIP_T1_MS", "50")]);
    let (bob, _) = registered_bob(&sw);
    let Conn::Udp(bsock) = bob.conn else {
        panic!("udp")
    };
    let bob_local = bob.local;
    let switch = sw.udp_addr();
    let stop = Arc::new(AtomicBool::new(false));
    // B-leg Call-IDs: answered, and those whose dialog bob saw end (a BYE in or out).
    let answered = Arc::new(Mutex::new(HashSet::<String>::new()));
    let ended = Arc::new(Mutex::new(HashSet::<String>::new()));
    let bob_thread = {
        let (stop, answered, ended) = (stop.clone(), answered.clone(), ended.clone());
        std::thread::spawn(move || {
            let mut invites: HashMap<String, (String, bool)> = HashMap::new();
            let mut byes = 0u32;
            let mut buf = vec![0u8; 65536];
            bsock
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((n, from)) = bsock.recv_from(&mut buf) else {
                    continue;
                };
                let m = String::from_utf8_lossy(&buf[..n]).to_string();
                let cid = header(&m, "Call-ID").unwrap_or_default().to_string();
                if is_request(&m, "INVITE") {
                    let callee_hangs_up = m.contains("s=callee-hangs-up");
                    invites.insert(cid.clone(), (m.clone(), callee_hangs_up));
                    let _ = bsock.send_to(
                        response_to(&m, 180, "Ringing", "bb", "", "").as_bytes(),
                        from,
                    );
                    let ok = answer_200(&m, "bb", bob_local);
                    let _ = bsock.send_to(ok.as_bytes(), from);
                    answered.lock().unwrap().insert(cid);
                } else if is_request(&m, "ACK") {
                    if let Some((inv, true)) = invites.get(&cid) {
                        byes += 1; // a fresh branch per BYE
                        let contact = header(inv, "Contact").unwrap_or_default();
                        let target = contact
                            .trim_start_matches('<')
                            .split('>')
                            .next()
                            .unwrap_or("");
                        let bye = format!(
                            "BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bKbb{byes};rport\r\nMax-Forwards: 70\r\nFrom: {to};tag=bb\r\nTo: {from_h}\r\nCall-ID: {cid}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
                            l = host_port(bob_local),
                            to = header(inv, "To").unwrap_or_default(),
                            from_h = header(inv, "From").unwrap_or_default(),
                        );
                        let _ = bsock.send_to(bye.as_bytes(), from);
                    }
                } else if is_request(&m, "BYE") {
                    let _ =
                        bsock.send_to(response_to(&m, 200, "OK", "bb", "", "").as_bytes(), from);
                    ended.lock().unwrap().insert(cid);
                } else if is_status(&m, 200) && m.contains("BYE") {
                    ended.lock().unwrap().insert(cid);
                }
            }
        })
    };
    let callers: Vec<_> = (0..CALLERS)
        .map(|t| {
            std::thread::spawn(move || {
                let mut done = 0;
                for i in 0..CALLS_EACH {
                    let callee_hangs_up = (t * 31 + i * 17) % 2 == 0;
                    let mut a = Caller::new(switch);
                    if callee_hangs_up {
                        a.offer = SDP_OFFER.replace("s=-", "s=callee-hangs-up");
                    }
                    let w = Duration::from_secs(5);
                    a.try_call(w).expect("407");
                    let ok =
                        try_wait_for(&a.sock, w, |m| is_status(m, 200) && m.contains("INVITE"))
                            .expect("200 for the INVITE");
                    let ack = a.in_dialog("ACK", &ok, "z9hG4bKback", a.cseq);
                    a.send(&ack);
                    if callee_hangs_up {
                        let bye = try_wait_for(&a.sock, w, |m| is_request(m, "BYE"))
                            .expect("BYE from the switch");
                        a.sock
                            .send_to(response_to(&bye, 200, "OK", "x", "", "").as_bytes(), switch)
                            .unwrap();
                    } else {
                        let bye = a.in_dialog("BYE", &ok, "z9hG4bKbbye", a.cseq + 1);
                        a.send(&bye);
                        try_wait_for(&a.sock, w, |m| is_status(m, 200) && m.contains("BYE"))
                            .expect("200 for the BYE");
                    }
                    done += 1;
                }
                done
            })
        })
        .collect();
    let total: usize = callers
        .into_iter()
        .map(|h| h.join().expect("a caller failed"))
        .sum();
    assert_eq!(total, CALLERS * CALLS_EACH);
    wait_metric(&sw, "softswitch_calls_active", 0.0);
    wait_metric(&sw, "softswitch_call_legs_active", 0.0);
    assert_eq!(http_get(sw.http, "/api/calls").1.trim(), "[]");
    wait_metric(
        &sw,
        "softswitch_calls_total{disposition=\"answered\"}",
        (CALLERS * CALLS_EACH) as f64,
    );
    // Every answered B-leg saw its dialog end (the last BYEs may still be in flight).
    let deadline = Instant::now() + WAIT;
    loop {
        let (a, e) = (
            answered.lock().unwrap().clone(),
            ended.lock().unwrap().clone(),
        );
        let missing: Vec<&String> = a.difference(&e).collect();
        if missing.is_empty() {
            assert_eq!(a.len(), CALLERS * CALLS_EACH);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "callee never saw a BYE for {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    bob_thread.join().unwrap();
    let cdrs = std::fs::read_to_string(sw.dir.join("cdr.jsonl")).unwrap();
    assert_eq!(
        cdrs.lines().count(),
        CALLERS * CALLS_EACH,
        "one CDR per call"
    );
    // And no transaction is left once their timers ran out.
    wait_until(Duration::from_secs(15), "no transaction left", || {
        live_transactions(&http_get(sw.http, "/metrics").1) == 0.0
    });
}

/// 482 (RFC 3261 §16.3 step 4): a request that already carries our own Via has been
/// through us. Two ways in: an INVITE from a phone with our Via in it, and the same call
/// arriving back, when the callee's registered Contact is the switch itself: the B-leg
/// INVITE reaches us again, is refused 482 there, and the caller gets that 482.
#[test]
fn loops_are_refused_482() {
    let sw = Switch::start(&[]);
    let ours = host_port(sw.udp_addr());
    // Our Via already in the request (before authentication: no 407 first).
    let mut a = Caller::new(sw.udp_addr());
    a.extra = String::new();
    let inv = a.invite("z9hG4bKloop1", None).replacen(
        "Via: ",
        &format!("Via: SIP/2.0/UDP {ours};branch=z9hG4bKourold\r\nVia: "),
        1,
    );
    a.send(&inv);
    let (r, _) = wait_for(&a.sock, "482", |m| status_of(m).is_some_and(|c| c >= 300));
    assert_eq!(status_of(&r), Some(482), "{r}");
    // The call comes back: bob's Contact is the switch.
    let mut bob = RegClient::udp(sw.udp_addr(), "bob", "bob-demo");
    let contact = format!("<sip:bob@{ours}>");
    let resp = bob.register(&[&contact], &[]);
    assert!(is_status(&resp, 200), "{resp}");
    let mut c = Caller::new(sw.udp_addr());
    c.call();
    let (r, _) = wait_for(&c.sock, "the looped call's final response", |m| {
        status_of(m).is_some_and(|c| c >= 300)
    });
    assert_eq!(status_of(&r), Some(482), "{r}");
    wait_metric(&sw, "softswitch_calls_active", 0.0);
    let cdr = cdr_of(&sw, &c.call_id);
    assert_eq!(cdr["sip_status"], 482, "{cdr}");
}

/// A merged request (RFC 3261 §8.2.2.2): the same INVITE reaching the switch by a second
/// path (same Call-ID, From tag and CSeq, another branch) while the first copy's server
/// transaction is live gets 482, before authentication; the callee is rung once, and the
/// first copy's call goes on to its 200 and BYE.
#[test]
fn merged_invite_482_callee_rung_once() {
    let sw = Switch::start(&[]);
    let (bob, _) = registered_bob(&sw);
    let bs = bob_sock(&bob);
    let mut alice = Caller::new(sw.udp_addr());
    let invite = alice.call();
    let (inv, from_switch) = wait_for(bs, "B-leg INVITE", |m| is_request(m, "INVITE"));
    let merged = invite.replacen("branch=z9hG4bKinv2", "branch=z9hG4bKpath2", 1);
    assert_ne!(merged, invite);
    alice.send(&merged);
    let (r482, _) = wait_for(&alice.sock, "482 for the merged copy", |m| {
        status_of(m).is_some_and(|c| c >= 300)
    });
    assert_eq!(status_of(&r482), Some(482), "{r482}");
    assert!(
        header(&r482, "Via").is_some_and(|v| v.contains("z9hG4bKpath2")),
        "the 482 answers the second copy: {r482}"
    );
    assert_eq!(
        metric_now(
            &sw,
            "softswitch_sip_messages_rejected_total{reason=\"loop\"}"
        ),
        1.0
    );
    // The first copy's call: bob answers, alice ACKs and hangs up.
    bs.send_to(answer_200(&inv, "bm", bob.local).as_bytes(), from_switch)
        .unwrap();
    let (a200, _) = wait_for(&alice.sock, "200 for the INVITE", |m| {
        is_status(m, 200) && m.contains("INVITE")
    });
    let ack = alice.in_dialog("ACK", &a200, "z9hG4bKmack", alice.cseq);
    alice.send(&ack);
    let bye = alice.in_dialog("BYE", &a200, "z9hG4bKmbye", alice.cseq + 1);
    alice.send(&bye);
    // Everything bob sees up to the BYE is this one call's: no second INVITE.
    let b_call_id = header(&inv, "Call-ID").unwrap().to_string();
    let b_bye = wait_for(bs, "BYE on the B-leg", |m| {
        assert!(
            header(m, "Call-ID") == Some(b_call_id.as_str()),
            "bob saw another call: {m}"
        );
        is_request(m, "BYE")
    });
    bye_answered_call_billed(&sw, &alice, bs, b_bye, "bm");
}

/// F3/F4 over IPv6 (RFC 5118): both phones and the switch on [::1]. The B-leg INVITE's
/// Via and Contact carry the switch's bracketed address, the 200 reaches alice, each leg's
/// ACK and BYE follow its dialog's remote target, and the call is billed.
#[test]
fn f3_f4_call_over_ipv6() {
    let sw = Switch::start_on("[::1]", &[]);
    let (bob, _) = registered_bob(&sw);
    assert!(bob.local.is_ipv6());
    let bs = bob_sock(&bob);
    let mut alice = Caller::new(sw.udp_addr());
    alice.call();
    let (inv, from_switch) = wait_for(bs, "B-leg INVITE", |m| is_request(m, "INVITE"));
    let ours = host_port(sw.udp_addr());
    assert!(ours.starts_with("[::1]:"), "{ours}");
    assert!(
        header(&inv, "Via").is_some_and(|v| v.contains(&ours)),
        "our Via on the B-leg:\n{inv}"
    );
    assert!(
        header(&inv, "Contact").is_some_and(|c| c.contains(&ours)),
        "our Contact on the B-leg:\n{inv}"
    );
    assert!(
        inv.starts_with(&format!("INVITE sip:bob@{}", host_port(bob.local))),
        "{inv}"
    );
    bs.send_to(answer_200(&inv, "b6", bob.local).as_bytes(), from_switch)
        .unwrap();
    let (a200, _) = wait_for(&alice.sock, "200 for the INVITE", |m| {
        is_status(m, 200) && m.contains("INVITE")
    });
    assert!(
        header(&a200, "Contact").is_some_and(|c| c.contains(&ours)),
        "{a200}"
    );
    wait_for(bs, "ACK on the B-leg", |m| is_request(m, "ACK"));
    let ack = alice.in_dialog("ACK", &a200, "z9hG4bK6ack", alice.cseq);
    alice.send(&ack);
    let bye = alice.in_dialog("BYE", &a200, "z9hG4bK6bye", alice.cseq + 1);
    alice.send(&bye);
    let b_bye = wait_for(bs, "BYE on the B-leg", |m| is_request(m, "BYE"));
    bye_answered_call_billed(&sw, &alice, bs, b_bye, "b6");
}

/// A config with the demo passwords for alice and bob, alice with a display name of our
/// own (quotes and a backslash in it: the From must quote it).
const ALICE_NAMED: &str = "[[users]]\nuser = \"alice\"\npassword = \"alice-demo\"\ndisplay_name = \"Alice \\\"A\\\" Example \\\\ Sales\"\n\n[[users]]\nuser = \"bob\"\npassword = \"bob-demo\"\n";

/// Ends a call bob is being rung for (busy) and waits until it is over.
fn busy_ends(sw: &Switch, bs: &UdpSocket, inv: &str, from_switch: SocketAddr, alice: &Caller) {
    let busy = response_to(inv, 486, "Busy Here", "bti", "", "");
    bs.send_to(busy.as_bytes(), from_switch).unwrap();
    wait_for(&alice.sock, "486", |m| is_status(m, 486));
    wait_metric(sw, "softswitch_calls_active", 0.0);
    let cdr = cdr_of(sw, &alice.call_id);
    assert_eq!(cdr["caller"], "sip:alice@example.test", "{cdr}");
}

/// Issue 17 point 6: the callee sees the identity the switch vouches for, not the one
/// the caller's phone claims: the authenticated user's AOR, with the display name of
/// the user's config (quoted-string escaped), and the switch's own From tag.
#[test]
fn caller_identity_callee_sees_the_aor_and_our_display_name() {
    let sw = Switch::start_with_config("127.0.0.1", ALICE_NAMED, &[]);
    let (bob, _) = registered_bob(&sw);
    let bs = bob_sock(&bob);
    let mut alice = Caller::new(sw.udp_addr());
    alice.from = "\"The Boss\" <sip:ceo@elsewhere.example>".into();
    alice.call();
    let (inv, from_switch) = wait_for(bs, "B-leg INVITE", |m| is_request(m, "INVITE"));
    let from = header(&inv, "From").unwrap();
    let (identity, tag) = from.split_once(";tag=").expect("our From tag");
    assert_eq!(
        identity, "\"Alice \\\"A\\\" Example \\\\ Sales\" <sip:alice@example.test>",
        "{inv}"
    );
    assert!(!tag.is_empty() && tag != alice.tag, "{inv}");
    assert!(!inv.contains("ceo") && !inv.contains("The Boss"), "{inv}");
    busy_ends(&sw, bs, &inv, from_switch, &alice);
}

/// A user without a display name of their own: the caller's display name (re-quoted),
/// on the AOR; a From of a name that is not one of our users (here ours, and another
/// domain) is rewritten and the call goes through to its BYE, billed to the caller.
#[test]
fn caller_identity_a_foreign_from_is_rewritten_with_the_callers_display_name() {
    let sw = Switch::start(&[]);
    let (bob, _) = registered_bob(&sw);
    let bs = bob_sock(&bob);
    for (i, (from, shown)) in [
        (
            "Front Desk <sip:reception@example.test>",
            "\"Front Desk\" <sip:alice@example.test>",
        ),
        (
            "<sip:alice@pbx.elsewhere.example>",
            "<sip:alice@example.test>",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut alice = Caller::new(sw.udp_addr());
        alice.from = from.into();
        alice.call();
        let (inv, from_switch) = wait_for(bs, "B-leg INVITE", |m| is_request(m, "INVITE"));
        let got = header(&inv, "From").unwrap();
        assert_eq!(got.split(";tag=").next(), Some(shown), "{from}:\n{inv}");
        let b_tag = format!("bf{i}");
        bs.send_to(answer_200(&inv, &b_tag, bob.local).as_bytes(), from_switch)
            .unwrap();
        let (a200, _) = wait_for(&alice.sock, "200 for the INVITE", |m| {
            is_status(m, 200) && m.contains("INVITE")
        });
        let ack = alice.in_dialog("ACK", &a200, &format!("z9hG4bKfa{i}"), 2);
        alice.send(&ack);
        wait_for(bs, "ACK on the B-leg", |m| is_request(m, "ACK"));
        let bye = alice.in_dialog("BYE", &a200, &format!("z9hG4bKfb{i}"), 3);
        alice.send(&bye);
        let b_bye = wait_for(bs, "BYE on the B-leg", |m| is_request(m, "BYE"));
        assert!(
            header(&b_bye.0, "From").is_some_and(|f| f.starts_with(shown)),
            "the B-leg dialog keeps the identity:\n{}",
            b_bye.0
        );
        bye_answered_call_billed(&sw, &alice, bs, b_bye, &b_tag);
        assert_eq!(
            cdr_of(&sw, &alice.call_id)["caller"],
            "sip:alice@example.test"
        );
    }
}

/// RFC 3323: a caller asking for privacy (`Privacy: id`, as RFC 3325 phones send it, or
/// `header`/`user`) is `"Anonymous" <sip:anonymous@anonymous.invalid>` to the callee
/// (§4.1.1.3), without the headers that could name them (§5.1); the CDR still bills
/// the authenticated user.
#[test]
fn caller_identity_privacy_is_anonymous() {
    let sw = Switch::start_with_config("127.0.0.1", ALICE_NAMED, &[]);
    let (bob, _) = registered_bob(&sw);
    let bs = bob_sock(&bob);
    for privacy in ["id", "header; user"] {
        let mut alice = Caller::new(sw.udp_addr());
        alice.from = "\"Alice\" <sip:alice@example.test>".into();
        alice.extra = format!("Privacy: {privacy}\r\nUser-Agent: Desk 1\r\nSubject: hello\r\n");
        alice.call();
        let (inv, from_switch) = wait_for(bs, "B-leg INVITE", |m| is_request(m, "INVITE"));
        let from = header(&inv, "From").unwrap();
        assert_eq!(
            from.split(";tag=").next(),
            Some("\"Anonymous\" <sip:anonymous@anonymous.invalid>"),
            "{privacy}:\n{inv}"
        );
        for h in ["Privacy", "User-Agent", "Subject"] {
            assert_eq!(header(&inv, h), None, "{h} on the B-leg:\n{inv}");
        }
        // The SDP goes byte for byte (`Privacy: session` is not the switch's to apply).
        let head = inv.split("\r\n\r\n").next().unwrap_or_default();
        assert!(!head.contains("alice") && !head.contains("Alice"), "{inv}");
        busy_ends(&sw, bs, &inv, from_switch, &alice);
    }
}

/// A From that names another user of ours than the authenticated one is refused 403
/// (a misconfigured or spoofing phone; see ARCHITECTURE.md "Calls"), after
/// authentication: the attempt is billed to the authenticated caller like the router's
/// other refusals, and counted; the user named is never rung.
#[test]
fn caller_identity_a_from_naming_another_user_is_403() {
    let sw = Switch::start(&[]);
    let (bob, _) = registered_bob(&sw);
    let bs = bob_sock(&bob);
    let routing = r#"softswitch_sip_messages_rejected_total{reason="routing"}"#;
    let before = metric_now(&sw, routing);
    let mut alice = Caller::new(sw.udp_addr());
    alice.from = "\"Carol\" <sip:carol@example.test>".into();
    alice.call();
    let (r, _) = wait_for(&alice.sock, "the final response", |m| {
        status_of(m).is_some_and(|c| c >= 200) && m.contains("CSeq: 2 INVITE")
    });
    assert!(
        r.starts_with("SIP/2.0 403 Forbidden (From is another user)\r\n"),
        "{r}"
    );
    wait_metric(&sw, "softswitch_calls_total{disposition=\"rejected\"}", 1.0);
    assert_eq!(metric_now(&sw, routing), before + 1.0);
    let cdr = cdr_of(&sw, &alice.call_id);
    assert_eq!(
        (
            cdr["caller"].as_str(),
            cdr["callee"].as_str(),
            cdr["sip_status"].as_u64(),
            cdr["disposition"].as_str(),
            cdr["hangup_by"].as_str(),
        ),
        (
            Some("sip:alice@example.test"),
            Some("sip:bob@example.test"),
            Some(403),
            Some("rejected"),
            Some("switch")
        ),
        "{cdr}"
    );
    // Nobody was rung: bob's next message is the INVITE of a call alice makes as
    // herself.
    let mut honest = Caller::new(sw.udp_addr());
    honest.extra = "Subject: honest\r\n".into();
    honest.call();
    let (inv, from_switch) = wait_for(bs, "an INVITE", |m| is_request(m, "INVITE"));
    assert_eq!(header(&inv, "Subject"), Some("honest"), "{inv}");
    busy_ends(&sw, bs, &inv, from_switch, &honest);
}
