//! Parse throughput: messages framed and parsed per second on one core, for an INVITE
//! with SDP, a REGISTER and a 200 OK (printed, not asserted).
//!
//! Run: `cargo bench --bench parse` (release profile). Each case runs for about one
//! second after a warm-up, five rounds; the median round is printed.

use softswitch::wire::{frame_datagram, parse_message, Limits};
use std::hint::black_box;
use std::time::{Duration, Instant};

const INVITE: &str = "INVITE sip:bob@example.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@example.test>\r\n\
From: Alice <sip:alice@example.test>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.test\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@192.0.2.10:5060;transport=udp>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO\r\n\
Supported: replaces, timer\r\n\
Session-Expires: 1800\r\n\
P-Asserted-Identity: <sip:alice@example.test>\r\n\
User-Agent: bench/1.0\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 267\r\n\
\r\n\
v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 97 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:97 iLBC/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n\
a=x-bench:1234567\r\n";

const REGISTER: &str = "REGISTER sip:example.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnashds7;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:alice@example.test>\r\n\
From: <sip:alice@example.test>;tag=456248\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\n\
Contact: <sip:alice@192.0.2.10:5060;ob>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\";reg-id=1\r\n\
Authorization: Digest username=\"alice\", realm=\"example.test\", nonce=\"abc\", uri=\"sip:example.test\", response=\"0123456789abcdef0123456789abcdef\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"xyz\"\r\n\
Expires: 3600\r\n\
User-Agent: bench/1.0\r\n\
Content-Length: 0\r\n\
\r\n";

const OK200: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK4b43c2ff8.1;received=192.0.2.1\r\n\
Record-Route: <sip:192.0.2.1;lr>\r\n\
To: Bob <sip:bob@example.test>;tag=a6c85cf\r\n\
From: Alice <sip:alice@example.test>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.test\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:bob@192.0.2.4>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 131\r\n\
\r\n\
v=0\r\n\
o=bob 2808844564 2808844564 IN IP4 192.0.2.4\r\n\
s=-\r\n\
c=IN IP4 192.0.2.4\r\n\
t=0 0\r\n\
m=audio 3456 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=sendrecv\r\n";

fn rate(msg: &[u8], limits: &Limits) -> f64 {
    let round = |dur: Duration| {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < dur {
            for _ in 0..1000 {
                let f = frame_datagram(black_box(msg), limits)
                    .ok()
                    .flatten()
                    .expect("frames");
                let m = parse_message(f.head, f.body).expect("parses");
                black_box(m);
            }
            n += 1000;
        }
        n as f64 / start.elapsed().as_secs_f64()
    };
    round(Duration::from_millis(300));
    let mut rounds: Vec<f64> = (0..5).map(|_| round(Duration::from_secs(1))).collect();
    rounds.sort_by(|a, b| a.total_cmp(b));
    rounds[2]
}

fn main() {
    // `cargo test --benches` passes --bench-less args; run quickly then.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let limits = Limits::default();
    println!("parse throughput, one core, median of 5 one-second rounds (frame + parse + typed Via/From/To/CSeq/Call-ID/Contact)");
    for (name, msg) in [
        ("INVITE with SDP", INVITE),
        ("REGISTER", REGISTER),
        ("200 OK with SDP", OK200),
    ] {
        let r = rate(msg.as_bytes(), &limits);
        println!(
            "{name:>16} ({:>4} B): {:>10.0} msgs/s  ({:.2} µs/msg)",
            msg.len(),
            r,
            1e6 / r
        );
    }
}
