//! RFC 4475 and RFC 5118 torture corpus against the running switch, over UDP and (for the
//! framing cases) TCP. Each file gets the verdict `tests/data/torture/MANIFEST.tsv` names
//! where the core decides it; for the rest the answer must not be a parse error.

mod common;

use common::*;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// What the switch must do with one corpus file over UDP.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// A final response with one of these codes.
    Status(&'static [u16]),
    /// Silence: a response, or a message that must be dropped.
    Discard,
    /// Any final response that is not a parse error (400/505/513).
    NotParseError,
}

/// The verdicts this issue decides; everything else in the manifest is for the registrar
/// and call issues, and must here only not be taken for a parse error.
fn expectation(file: &str) -> Expect {
    use Expect::*;
    match file {
        "rfc4475/badinv01.dat"
        | "rfc4475/clerr.dat"
        | "rfc4475/ncl.dat"
        | "rfc4475/scalar02.dat"
        | "rfc4475/quotbal.dat"
        | "rfc4475/ltgtruri.dat"
        | "rfc4475/lwsruri.dat"
        | "rfc4475/lwsstart.dat"
        | "rfc4475/trws.dat"
        | "rfc4475/escruri.dat"
        | "rfc4475/regbadct.dat"
        | "rfc4475/badaspec.dat"
        | "rfc4475/baddn.dat"
        | "rfc4475/mismatch01.dat"
        | "rfc4475/insuf.dat"
        | "rfc4475/multi01.dat"
        | "rfc4475/mcl01.dat"
        | "rfc5118/ipv6-bad.dat" => Status(&[400]),
        "rfc4475/badvers.dat" => Status(&[505]),
        "rfc4475/mismatch02.dat" => Status(&[501]),
        "rfc4475/intmeth.dat" | "rfc4475/esc02.dat" => Status(&[501]),
        "rfc4475/unkscm.dat" => Status(&[416]),
        "rfc4475/novelsc.dat" => Status(&[416, 404]),
        "rfc4475/bext01.dat" => Status(&[420]),
        "rfc4475/invut.dat" => Status(&[415]),
        "rfc4475/sdp01.dat" => Status(&[406]),
        "rfc4475/zeromf.dat" => Status(&[483]),
        "rfc4475/baddate.dat" => Status(&[400, 403, 404, 480]),
        // No Via at all: nothing to route a response by (RFC 3261 §8.2.6.2), so dropped.
        "rfc4475/test.dat" => Discard,
        "rfc4475/scalarlg.dat"
        | "rfc4475/bigcode.dat"
        | "rfc4475/bcast.dat"
        | "rfc4475/unreason.dat"
        | "rfc4475/noreason.dat" => Discard,
        _ => NotParseError,
    }
}

fn manifest() -> Vec<(String, String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/torture");
    let text = std::fs::read_to_string(root.join("MANIFEST.tsv")).expect("manifest");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[4].to_string(), f[5].to_string())
        })
        .collect()
}

fn corpus_file(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/torture")
        .join(name);
    std::fs::read(p).expect("corpus file")
}

/// The server transaction key (§17.2.3) of a corpus request, when it parses.
fn txn_key(bytes: &[u8]) -> Option<String> {
    use softswitch::wire::{frame_datagram, parse_message, Limits, Message};
    let f = frame_datagram(bytes, &Limits::default()).ok()??;
    match parse_message(f.head, f.body).ok()? {
        Message::Request(r) => {
            let v = r.common.top_via()?;
            Some(format!("{:?} {} {}", v.branch(), v.sent_by, r.method))
        }
        Message::Response(_) => None,
    }
}

#[test]
fn torture_corpus_over_udp() {
    // Several corpus files reuse a branch, sent-by and method: to one switch those are
    // retransmissions of one transaction (answered to the first sender, correctly), so
    // each such file goes to the first switch that has not seen its key.
    let mut switches: Vec<(Switch, std::collections::HashSet<String>)> =
        vec![(Switch::start(&[]), Default::default())];
    let rows = manifest();
    assert_eq!(rows.len(), 62, "50 RFC 4475 + 12 RFC 5118 messages");
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for (file, verdict, _action) in &rows {
        let bytes = corpus_file(file);
        let expect = expectation(file);
        let key = txn_key(&bytes);
        let idx = match &key {
            None => 0,
            Some(k) => match switches.iter().position(|(_, seen)| !seen.contains(k)) {
                Some(i) => i,
                None => {
                    switches.push((Switch::start(&[]), Default::default()));
                    switches.len() - 1
                }
            },
        };
        if let Some(k) = key {
            switches[idx].1.insert(k);
        }
        let to = switches[idx].0.udp_addr();
        let s = udp_client(to);
        s.send_to(&bytes, to).expect("send");
        let wait = if expect == Expect::Discard {
            Duration::from_millis(300)
        } else {
            ANSWER_DEADLINE
        };
        let responses = udp_responses(&s, wait);
        let finals: Vec<&String> = responses
            .iter()
            .filter(|r| status_of(r).is_some_and(|c| c >= 200))
            .collect();
        let got = finals
            .first()
            .map(|r| format!("{} {}", status_of(r).unwrap_or(0), reason_of(r)));
        let ok = match expect {
            Expect::Status(codes) => {
                finals.len() == 1 && codes.contains(&status_of(finals[0]).unwrap_or(0))
            }
            Expect::Discard => responses.is_empty(),
            Expect::NotParseError => {
                finals.len() == 1 && !matches!(status_of(finals[0]), Some(400 | 505 | 513 | 413))
            }
        };
        report.push(format!(
            "{file}\t{verdict}\texpected {expect:?}\tgot {}",
            got.clone().unwrap_or_else(|| "nothing".into())
        ));
        if !ok {
            failures.push(format!(
                "{file}: expected {expect:?}, got {got:?} ({} responses)",
                responses.len()
            ));
        }
    }
    println!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "corpus failures:\n{}",
        failures.join("\n")
    );
    // After the whole corpus every switch still answers.
    for (sw, _) in &switches {
        let ok = udp_exchange(
            sw.udp_addr(),
            options_to(sw.udp_addr(), "UDP", "after").as_bytes(),
        )
        .expect("OPTIONS answer");
        assert_eq!(status_of(&ok), Some(200), "{ok}");
    }
}

#[test]
fn dblreq_trailing_octets_are_not_a_second_message() {
    let sw = Switch::start(&[]);
    let s = udp_client(sw.udp_addr());
    s.send_to(&corpus_file("rfc4475/dblreq.dat"), sw.udp_addr())
        .expect("send");
    let responses = udp_responses(&s, ANSWER_DEADLINE);
    assert_eq!(responses.len(), 1, "{responses:?}");
    // The answer is to the REGISTER (CSeq 8 REGISTER), not to the trailing INVITE.
    assert_eq!(
        header(&responses[0], "CSeq"),
        Some("8 REGISTER"),
        "{}",
        responses[0]
    );
    // Nothing more arrives: the trailing INVITE was dropped, not parsed.
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(udp_recv(&s).is_none());
}

#[test]
fn framing_cases_over_tcp() {
    let sw = Switch::start(&[("SOFTSWITCH_SIP_TCP_IDLE_TIMEOUT_S", "2")]);
    // Negative and multiple Content-Length: 400, then the connection closes.
    for file in ["rfc4475/ncl.dat", "rfc4475/mcl01.dat"] {
        let mut c = tcp_connect(sw.tcp_addr());
        c.write_all(&corpus_file(file)).unwrap();
        let r = tcp_read_responses(&mut c, 1, ANSWER_DEADLINE);
        assert_eq!(r.len(), 1, "{file}: no answer");
        assert_eq!(status_of(&r[0]), Some(400), "{file}: {}", r[0]);
        assert!(
            tcp_wait_closed(&mut c, ANSWER_DEADLINE),
            "{file}: connection stayed open"
        );
    }
    // Content-Length larger than what was sent: the switch waits for the rest, sends
    // nothing, and closes the idle connection.
    let mut c = tcp_connect(sw.tcp_addr());
    c.write_all(&corpus_file("rfc4475/clerr.dat")).unwrap();
    assert!(tcp_read_responses(&mut c, 1, Duration::from_millis(500)).is_empty());
    assert!(
        tcp_wait_closed(&mut c, Duration::from_secs(10)),
        "idle connection not closed"
    );
    // Well-formed corpus messages over TCP get the same answers as over UDP.
    for (file, code) in [
        ("rfc4475/badvers.dat", 505),
        ("rfc4475/bext01.dat", 420),
        ("rfc4475/intmeth.dat", 501),
    ] {
        let mut c = tcp_connect(sw.tcp_addr());
        c.write_all(&corpus_file(file)).unwrap();
        let r = tcp_read_responses(&mut c, 1, ANSWER_DEADLINE);
        assert_eq!(
            r.first().and_then(|r| status_of(r)),
            Some(code),
            "{file}: {r:?}"
        );
    }
}
