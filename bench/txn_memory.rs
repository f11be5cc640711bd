//! Memory per live transaction, by kind and state: what the transaction table costs the
//! switch at a sustained call rate (printed, not asserted).
//!
//! Every call leaves transactions that only wait out a timer after their work is done
//! (RFC 6026 Accepted for both INVITE transactions, Timer J for the BYE's server
//! transaction, Timer K for its client transaction): at R calls/s about 100·R of them are
//! alive at steady state. This probe puts N transactions of one kind into the state a
//! call leaves them in, with messages shaped like a desk phone's, and prints the growth of
//! the process's resident set per transaction (mimalloc, as in the binary).
//!
//! Run: `cargo bench --bench txn_memory` (release profile; N=200000 by default, or
//! `TXN_PROBE_N`).

use bytes::Bytes;
use softswitch::transport::Peer;
use softswitch::txn::{TimerConfig, TxLayer};
use softswitch::wire::{frame_datagram, parse_message, Limits, Message, Request, Response};
use std::net::SocketAddr;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const INVITE: &str = "INVITE sip:bob@example.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-BRANCH;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@example.test>\r\n\
From: Alice <sip:alice@example.test>;tag=1928301774\r\n\
Call-ID: CALLID@pc33.example.test\r\n\
CSeq: 2 INVITE\r\n\
Contact: <sip:alice@192.0.2.10:5060;transport=udp>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO\r\n\
User-Agent: probe/1.0\r\n\
Content-Type: application/sdp\r\n\
Content-Length: LEN\r\n\
\r\n\
v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 101\r\n\
a=sendrecv\r\n";

const BYE: &str = "BYE sip:alice@192.0.2.10:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-BRANCH;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@example.test>;tag=b-7781\r\n\
From: Alice <sip:alice@example.test>;tag=1928301774\r\n\
Call-ID: CALLID@pc33.example.test\r\n\
CSeq: 3 BYE\r\n\
User-Agent: probe/1.0\r\n\
Content-Length: 0\r\n\
\r\n";

fn parse(text: &str) -> Message {
    let frame = frame_datagram(text.as_bytes(), &Limits::default())
        .expect("frames")
        .expect("a message");
    parse_message(frame.head, frame.body).expect("parses")
}

fn request(template: &str, i: usize) -> Request {
    let text = template
        .replace("BRANCH", &format!("{i:016x}"))
        .replace("CALLID", &format!("{i:024x}"));
    let body_len = text.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
    let text = text.replace("LEN", &body_len.to_string());
    match parse(&text) {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!("a request template"),
    }
}

/// The 200 a UAS sends for `req`, To tag added (what the switch or the far phone sends).
fn ok_for(req: &Request) -> Response {
    let mut common = req.common.clone();
    common.body = Bytes::new();
    common.headers.clear();
    common.max_forwards = None;
    if common.to.tag().is_none() {
        common.to.set_tag("b-7781");
    }
    Response {
        status: 200,
        reason: "OK".to_string(),
        common,
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn drain(layer: &mut TxLayer) {
    while layer.poll_transmit().is_some() {}
    while layer.poll_event().is_some() {}
}

/// Grows a layer by `n` transactions with `make`, prints the RSS growth per transaction.
fn probe(name: &str, n: usize, make: impl Fn(&mut TxLayer, Instant, Peer, usize)) {
    let mut layer = TxLayer::new(TimerConfig::default());
    let peer = Peer::udp(SocketAddr::from(([192, 0, 2, 10], 5060)));
    let now = Instant::now();
    // Warm the allocator and the tables' first growth steps out of the figure.
    for i in 0..1000 {
        make(&mut layer, now, peer, usize::MAX - i);
        drain(&mut layer);
    }
    let before = rss_bytes();
    for i in 0..n {
        make(&mut layer, now, peer, i);
        drain(&mut layer);
    }
    let after = rss_bytes();
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "{name:<46} {:>8} live  {per:>7.0} B per transaction",
        layer.len()
    );
}

/// The probes, by name: each runs in a process of its own (a freed table's pages stay
/// with the allocator and would hide the next probe's growth).
const PROBES: [&str; 5] = [
    "IST Accepted (A-leg INVITE, 200 sent)",
    "IST Proceeding (A-leg INVITE, ringing)",
    "ICT Accepted (B-leg INVITE, 200 received)",
    "NIST Completed (BYE from a phone, 200 sent)",
    "NICT Completed (BYE to a phone, 200 received)",
];

fn run(which: usize, n: usize) {
    let name = PROBES[which];
    match which {
        0 => probe(name, n, |l, now, p, i| {
            let inv = request(INVITE, i);
            let ok = ok_for(&inv);
            let tx = l.open_invite(now, p, &inv).expect("a new INVITE");
            l.send_response(now, tx, ok).expect("the 200");
        }),
        1 => probe(name, n, |l, now, p, i| {
            let inv = request(INVITE, i);
            l.open_invite(now, p, &inv).expect("a new INVITE");
        }),
        2 => probe(name, n, |l, now, p, i| {
            let inv = request(INVITE, i);
            let ok = ok_for(&inv);
            l.send_request(now, p, inv).expect("sent");
            l.handle_response(now, p, ok);
        }),
        3 => probe(name, n, |l, now, p, i| {
            let bye = request(BYE, i);
            let ok = ok_for(&bye);
            l.handle_request(now, p, bye);
            let tx = loop {
                match l.poll_event() {
                    Some(softswitch::txn::TxEvent::Request { tx, .. }) => break tx,
                    Some(_) => continue,
                    None => unreachable!("a BYE raises a request"),
                }
            };
            l.send_response(now, tx, ok).expect("the 200");
        }),
        _ => probe(name, n, |l, now, p, i| {
            let bye = request(BYE, i);
            let ok = ok_for(&bye);
            l.send_request(now, p, bye).expect("sent");
            l.handle_response(now, p, ok);
        }),
    }
}

fn main() {
    let n: usize = std::env::var("TXN_PROBE_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    if let Some(which) = std::env::var("TXN_PROBE_ONE")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
    {
        run(which, n);
        return;
    }
    println!("transactions in the state a call leaves them in, {n} of each (RSS growth / n):");
    let exe = std::env::current_exe().expect("own path");
    for which in 0..PROBES.len() {
        let out = std::process::Command::new(&exe)
            .env("TXN_PROBE_ONE", which.to_string())
            .env("TXN_PROBE_N", n.to_string())
            .output()
            .expect("run a probe");
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}
