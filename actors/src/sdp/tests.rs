//! Unit tests of `sdp`: every hold form per m-line and at session level, resume, the
//! sdp-rs gaps of `shared/notes/rsip-sdp-gaps.md` §3 one by one, the RFC 4475/5118
//! torture bodies, and a deterministic property run over arbitrary and mutated bodies.

use super::*;
use std::time::Instant;

macro_rules! seed {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/sdp/",
            $name
        ))
        .as_slice()
    };
}

/// Every seed of `tests/data/sdp/` (also the fuzz target's seed corpus).
const SEEDS: &[&[u8]] = &[
    seed!("audio-offer.sdp"),
    seed!("audio-video.sdp"),
    seed!("connection-fqdn.sdp"),
    seed!("hold-inactive.sdp"),
    seed!("hold-sendonly.sdp"),
    seed!("hold-session-inactive.sdp"),
    seed!("hold-zero-address.sdp"),
    seed!("lf-only.sdp"),
    seed!("malformed-rtpmap.sdp"),
    seed!("origin-fqdn.sdp"),
    seed!("repeat-panic.sdp"),
    seed!("truncated-by-sdp-rs.sdp"),
    seed!("zone-panic.sdp"),
];

/// A body from lines, CRLF after each.
fn sdp(lines: &[&str]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| [*l, "\r\n"])
        .collect::<String>()
        .into_bytes()
}

const HEAD: [&str; 5] = [
    "v=0",
    "o=alice 2890844526 2890844527 IN IP4 192.0.2.10",
    "s=-",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
];

/// HEAD then `rest`.
fn body(rest: &[&str]) -> Vec<u8> {
    let lines: Vec<&str> = HEAD.iter().chain(rest).copied().collect();
    sdp(&lines)
}

fn hold(b: &[u8]) -> Option<HoldForm> {
    read(b).expect("an SDP").hold
}

/// Whether sdp-rs read the body whole (else our reader did).
fn sdp_rs_reads(b: &[u8]) -> bool {
    via_sdp_rs(&prepare(b).expect("an SDP")).is_some()
}

#[test]
fn sdp_audio_offer_is_active_media() {
    let s = read(seed!("audio-offer.sdp")).expect("an SDP");
    assert_eq!(
        s,
        Summary {
            hold: None,
            origin: Some(Origin {
                session_id: "2890844526".into(),
                version: 2890844526
            }),
            streams: 1
        }
    );
    assert!(sdp_rs_reads(seed!("audio-offer.sdp")));
}

#[test]
fn sdp_hold_forms_per_m_line() {
    let cases: [(&[&str], Option<HoldForm>); 7] = [
        (
            &["m=audio 49170 RTP/AVP 0", "a=sendonly"],
            Some(HoldForm::SendOnly),
        ),
        (
            &["m=audio 49170 RTP/AVP 0", "a=inactive"],
            Some(HoldForm::Inactive),
        ),
        (
            &["m=audio 49170 RTP/AVP 0", "c=IN IP4 0.0.0.0"],
            Some(HoldForm::ZeroAddress),
        ),
        // Both: the zero address is reported (it forbids even RTCP).
        (
            &["m=audio 49170 RTP/AVP 0", "c=IN IP4 0.0.0.0", "a=sendonly"],
            Some(HoldForm::ZeroAddress),
        ),
        (
            &["m=audio 49170 RTP/AVP 0", "c=IN IP4 0.0.0.0", "a=inactive"],
            Some(HoldForm::ZeroAddress),
        ),
        // recvonly is not hold: its writer still receives (RFC 3264 §8.4).
        (&["m=audio 49170 RTP/AVP 0", "a=recvonly"], None),
        (&["m=audio 49170 RTP/AVP 0", "a=sendrecv"], None),
    ];
    for (rest, want) in cases {
        let b = body(rest);
        assert_eq!(hold(&b), want, "{rest:?}");
        assert!(sdp_rs_reads(&b), "{rest:?}");
    }
}

#[test]
fn sdp_hold_forms_at_session_level() {
    let session = |attr: &str, c: &str| {
        sdp(&[
            "v=0",
            "o=a 1 2 IN IP4 192.0.2.1",
            "s=-",
            c,
            "t=0 0",
            attr,
            "m=audio 49170 RTP/AVP 0",
            "m=video 51372 RTP/AVP 31",
        ])
    };
    let real = "c=IN IP4 192.0.2.1";
    let zero = "c=IN IP4 0.0.0.0";
    assert_eq!(hold(&session("a=sendonly", real)), Some(HoldForm::SendOnly));
    assert_eq!(hold(&session("a=inactive", real)), Some(HoldForm::Inactive));
    assert_eq!(hold(&session("a=recvonly", real)), None);
    assert_eq!(hold(&session("a=sendrecv", real)), None);
    assert_eq!(
        hold(&session("a=sendrecv", zero)),
        Some(HoldForm::ZeroAddress)
    );
    assert_eq!(
        hold(&session("a=sendonly", zero)),
        Some(HoldForm::ZeroAddress)
    );
    assert_eq!(
        hold(seed!("hold-session-inactive.sdp")),
        Some(HoldForm::Inactive)
    );
    assert_eq!(
        read(seed!("hold-session-inactive.sdp")).map(|s| s.streams),
        Some(2)
    );
}

#[test]
fn sdp_media_level_overrides_session_level() {
    // Session sendonly, but the one stream says sendrecv: not held.
    let b = sdp(&[
        "v=0",
        "o=a 1 2 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 0.0.0.0",
        "t=0 0",
        "a=sendonly",
        "m=audio 49170 RTP/AVP 0",
        "c=IN IP4 192.0.2.1",
        "a=sendrecv",
        "m=video 51372 RTP/AVP 31",
    ]);
    let m = media(&b).expect("an SDP");
    assert_eq!(
        m,
        vec![
            Media {
                port: 49170,
                direction: Direction::SendRecv,
                hold: None
            },
            Media {
                port: 51372,
                direction: Direction::SendOnly,
                hold: Some(HoldForm::ZeroAddress)
            },
        ]
    );
    assert_eq!(hold(&b), None);
}

#[test]
fn sdp_mixed_audio_video() {
    // Audio on hold, video still flowing: the call is not held.
    assert_eq!(hold(seed!("audio-video.sdp")), None);
    let s = read(seed!("audio-video.sdp")).expect("an SDP");
    assert_eq!(s.streams, 2, "the port-0 application stream is not active");
    let cases: [(&str, &str, Option<HoldForm>); 4] = [
        ("a=sendonly", "a=inactive", Some(HoldForm::Inactive)),
        ("a=inactive", "a=sendonly", Some(HoldForm::Inactive)),
        ("a=sendonly", "a=sendonly", Some(HoldForm::SendOnly)),
        (
            "c=IN IP4 0.0.0.0",
            "a=sendonly",
            Some(HoldForm::ZeroAddress),
        ),
    ];
    for (audio, video, want) in cases {
        let b = body(&[
            "m=audio 49170 RTP/AVP 0",
            audio,
            "m=video 51372 RTP/AVP 31",
            video,
        ]);
        assert_eq!(hold(&b), want, "{audio} / {video}");
    }
    // A rejected video stream does not stop an audio hold.
    let b = body(&[
        "m=audio 49170 RTP/AVP 0",
        "a=sendonly",
        "m=video 0 RTP/AVP 31",
        "a=sendrecv",
    ]);
    assert_eq!(
        read(&b),
        Some(Summary {
            hold: Some(HoldForm::SendOnly),
            origin: Some(Origin {
                session_id: "2890844526".into(),
                version: 2890844527
            }),
            streams: 1
        })
    );
}

#[test]
fn sdp_resume() {
    for rest in [
        &["m=audio 49170 RTP/AVP 0", "a=sendrecv"][..],
        &["m=audio 49170 RTP/AVP 0"][..],
        &["m=audio 49170 RTP/AVP 0", "a=rtpmap:0 PCMU/8000"][..],
    ] {
        assert_eq!(hold(&body(rest)), None, "{rest:?}");
    }
}

#[test]
fn sdp_no_active_stream_is_not_hold() {
    let none = body(&[]);
    let rejected = body(&["m=audio 0 RTP/AVP 0", "a=inactive"]);
    let session_inactive = body(&["a=inactive"]);
    for b in [none, rejected, session_inactive] {
        let s = read(&b).expect("an SDP");
        assert_eq!((s.hold, s.streams), (None, 0));
    }
}

#[test]
fn sdp_inactive_read_although_sdp_rs_misses_it() {
    // Gap 2: sdp-rs accepts the body but files `inactive` under `Attribute::Other`.
    let b = seed!("hold-inactive.sdp");
    assert!(sdp_rs_reads(b));
    let parsed = sdp_rs::SessionDescription::try_from(std::str::from_utf8(b).unwrap()).unwrap();
    assert!(parsed.media_descriptions[0]
        .attributes
        .iter()
        .all(|a| *a != sdp_rs::lines::Attribute::Inactive));
    assert_eq!(hold(b), Some(HoldForm::Inactive));
    assert_eq!(hold(seed!("lf-only.sdp")), Some(HoldForm::Inactive));
    // Spelled in upper case, or with a trailing blank.
    assert_eq!(
        hold(&body(&["m=audio 1 RTP/AVP 0", "a=INACTIVE "])),
        Some(HoldForm::Inactive)
    );
    // With a value it is some other attribute.
    assert_eq!(hold(&body(&["m=audio 1 RTP/AVP 0", "a=inactive:x"])), None);
}

#[test]
fn sdp_fqdn_in_origin_and_connection() {
    // Gap 4: RFC 5118 §4.8's o= line; sdp-rs rejects the body, our reader reads it.
    let b = seed!("origin-fqdn.sdp");
    assert!(!sdp_rs_reads(b));
    assert_eq!(
        read(b),
        Some(Summary {
            hold: Some(HoldForm::Inactive),
            origin: Some(Origin {
                session_id: "280744730".into(),
                version: 28977631
            }),
            streams: 1
        })
    );
    let b = seed!("connection-fqdn.sdp");
    assert!(!sdp_rs_reads(b));
    assert_eq!(hold(b), Some(HoldForm::SendOnly));
    let fqdn_zero = body(&["m=audio 1 RTP/AVP 0", "c=IN IP4 zero.example.com"]);
    assert_eq!(hold(&fqdn_zero), None, "an FQDN is not 0.0.0.0");
}

#[test]
fn sdp_repeat_and_zone_values_that_panic_sdp_rs() {
    // Gap 1: these bodies panic inside sdp-rs (chrono overflow) when it sees r=/z=.
    for raw in [seed!("repeat-panic.sdp"), seed!("zone-panic.sdp")] {
        let text = std::str::from_utf8(raw).unwrap();
        let outcome = guarded(|| sdp_rs::SessionDescription::try_from(text).is_ok());
        assert!(
            outcome.is_err(),
            "sdp-rs no longer panics: the pre-pass may go"
        );
    }
    let before = panics_caught();
    assert_eq!(hold(seed!("repeat-panic.sdp")), Some(HoldForm::SendOnly));
    assert_eq!(hold(seed!("zone-panic.sdp")), Some(HoldForm::Inactive));
    assert!(
        sdp_rs_reads(seed!("repeat-panic.sdp")),
        "read by sdp-rs once r= is gone"
    );
    assert_eq!(
        panics_caught(),
        before,
        "the pre-pass, not the guard, covered them"
    );
    // The same lines in every place and unit.
    for line in [
        "r=9999999999999999 1 0",
        "r=1 99999999999999h 0",
        "r=1 1 9999999999999999m",
        "r=604800s 3600 -9999999999999999d",
        "z=1 -28734046962844526",
        "z=1 -999999999999999h 2 0",
    ] {
        let b = sdp(&[
            "v=0",
            "o=a 1 2 IN IP4 192.0.2.1",
            "s=-",
            "t=0 0",
            line,
            "m=audio 49170 RTP/AVP 0",
            line,
            "a=sendonly",
        ]);
        assert_eq!(hold(&b), Some(HoldForm::SendOnly), "{line}");
    }
    assert_eq!(panics_caught(), before);
}

#[test]
fn sdp_lines_sdp_rs_would_drop() {
    // Gap 3: sdp-rs stops at `c=` after `a=` (session level) and at `x=`, returning Ok.
    let b = seed!("truncated-by-sdp-rs.sdp");
    let parsed = sdp_rs::SessionDescription::try_from(std::str::from_utf8(b).unwrap()).unwrap();
    assert_eq!(
        parsed.media_descriptions.len(),
        0,
        "sdp-rs lost both m-lines"
    );
    assert!(!sdp_rs_reads(b));
    let m = media(b).expect("an SDP");
    assert_eq!(
        m,
        vec![
            Media {
                port: 49170,
                direction: Direction::SendOnly,
                hold: Some(HoldForm::SendOnly)
            },
            Media {
                port: 51372,
                direction: Direction::SendRecv,
                hold: None
            },
        ]
    );
    // A last line without its line end: sdp-rs drops it.
    let mut b = body(&["m=audio 49170 RTP/AVP 0", "a=sendonly"]);
    b.truncate(b.len() - 2);
    assert_eq!(hold(&b), Some(HoldForm::SendOnly));
}

#[test]
fn sdp_one_malformed_attribute_does_not_lose_the_body() {
    // Gap 5: `a=rtpmap:31 LPC` (RFC 4475's bodies) makes sdp-rs reject the whole SDP.
    let b = seed!("malformed-rtpmap.sdp");
    assert!(!sdp_rs_reads(b));
    let m = media(b).expect("an SDP");
    assert_eq!(m[0].hold, None);
    assert_eq!(m[1].hold, Some(HoldForm::SendOnly));
    assert_eq!(read(b).map(|s| (s.hold, s.streams)), Some((None, 2)));
}

#[test]
fn sdp_line_endings_and_bytes() {
    let crlf = body(&["m=audio 49170 RTP/AVP 0", "a=sendonly"]);
    let lf: Vec<u8> = String::from_utf8(crlf.clone())
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes();
    assert_eq!(read(&lf), read(&crlf));
    assert!(sdp_rs_reads(&lf));
    // Mixed endings, blank lines, a lone CR inside a value.
    let mixed = b"v=0\r\no=a 1 2 IN IP4 192.0.2.1\ns=x\ry\r\n\r\nt=0 0\nm=audio 1 RTP/AVP 0\r\na=sendonly\n\n";
    assert_eq!(hold(mixed), Some(HoldForm::SendOnly));
    // Not UTF-8: our reader still reads it.
    let latin1 = b"v=0\r\no=a 1 2 IN IP4 192.0.2.1\r\ns=caf\xe9\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\na=inactive\r\n";
    assert_eq!(hold(latin1), Some(HoldForm::Inactive));
}

#[test]
fn sdp_not_an_sdp() {
    for b in [
        &b""[..],
        b"\r\n",
        b"hello",
        b"v=1\r\no=a 1 2 IN IP4 192.0.2.1\r\n",
        b"o=a 1 2 IN IP4 192.0.2.1\r\nv=0\r\n",
        b"--boundary42\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n",
    ] {
        assert_eq!(read(b), None, "{:?}", String::from_utf8_lossy(b));
        assert_eq!(media(b), None);
    }
    // The smallest SDP: v=0 alone.
    assert_eq!(
        read(b"v=0"),
        Some(Summary {
            hold: None,
            origin: None,
            streams: 0
        })
    );
}

#[test]
fn sdp_origin() {
    let o = |line: &str| {
        read(&sdp(&["v=0", line, "s=-", "t=0 0"]))
            .expect("an SDP")
            .origin
    };
    assert_eq!(
        o("o=- 0 0 IN IP4 192.0.2.1"),
        Some(Origin {
            session_id: "0".into(),
            version: 0
        })
    );
    assert_eq!(
        o("o=- 42 18446744073709551615 IN IP6 2001:db8::1"),
        Some(Origin {
            session_id: "42".into(),
            version: u64::MAX
        })
    );
    assert_eq!(o("o=- 42 18446744073709551616 IN IP4 192.0.2.1"), None);
    assert_eq!(o("o=- 42 abc IN IP4 192.0.2.1"), None);
    assert_eq!(o("o=- 42 7 IN IP4"), None);
}

/// The request's body: what follows the first empty line.
fn body_of(message: &[u8]) -> &[u8] {
    message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(&[][..], |i| &message[i + 4..])
}

#[test]
fn sdp_torture_bodies() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/torture");
    let mut sdps = 0;
    for sub in ["rfc4475", "rfc5118"] {
        let entries = std::fs::read_dir(format!("{dir}/{sub}")).expect("the torture corpus");
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let message = std::fs::read(&path).expect("a torture message");
            let b = body_of(&message);
            let Some(s) = read(b) else {
                assert!(!b.starts_with(b"v=0\r\n"), "{path:?}");
                continue;
            };
            sdps += 1;
            // None of these bodies holds; each m-line has a port, so each is active.
            let m_lines = b.windows(3).filter(|w| w == b"\nm=").count();
            assert_eq!(s.hold, None, "{path:?}");
            assert_eq!(usize::from(s.streams), m_lines, "{path:?}");
            if s.streams > 0 {
                assert!(s.origin.is_some(), "{path:?}");
            }
        }
    }
    assert!(sdps >= 20, "{sdps} SDP bodies");
    // RFC 5118 §4.8: the FQDN in o=.
    let b = std::fs::read(format!("{dir}/rfc5118/mult-ip-in-sdp.dat")).unwrap();
    assert_eq!(
        read(body_of(&b)).and_then(|s| s.origin),
        Some(Origin {
            session_id: "280744730".into(),
            version: 28977631
        })
    );
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Lines a mutation may insert: direction and hold forms, the panicking r=/z= values,
/// FQDNs, truncation triggers, and malformed versions of each kind.
const LINES: &[&str] = &[
    "a=sendonly",
    "a=recvonly",
    "a=inactive",
    "a=sendrecv",
    "a=inactive:1",
    "c=IN IP4 0.0.0.0",
    "c=IN IP4 0.0.0.0/127/2",
    "c=IN IP4 host.example.com",
    "c=IN IP6 ::",
    "c=IN",
    "m=audio 0 RTP/AVP 0",
    "m=video 51372 RTP/AVP 31",
    "m=audio 70000 RTP/AVP 0",
    "m=audio 5/2 RTP/AVP 0",
    "m=",
    "o=- 1 2 IN IP4 a.example.com",
    "o=- 1",
    "r=9999999999999999d 1h 0",
    "r=604800 3600 0 90000",
    "z=2882844526 28734046962844526",
    "z=2882844526 -1h 2898848070 0h",
    "t=0 0",
    "t=99999999999999999999 0",
    "x=unknown",
    "a=rtpmap:31 LPC",
    "a=rtpmap:97 AMR-WB/16000/1",
    "a=ptime:x",
    "b=AS:99999999999",
    "k=prompt",
    "i=info",
    "v=0",
    "",
    "=",
    "a=",
    "a=:",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(6) {
        let at = rng.below(b.len() + 1);
        match rng.below(8) {
            0 => {
                if let Some(x) = b.get_mut(at) {
                    *x = rng.next() as u8;
                }
            }
            1 => b.insert(at.min(b.len()), b"0123456789 :/=\r\n"[rng.below(16)]),
            2 => b.truncate(at),
            3 | 4 => {
                // Insert a whole line after a line end.
                let at = b[..at]
                    .iter()
                    .rposition(|&x| x == b'\n')
                    .map_or(0, |i| i + 1);
                let line = LINES[rng.below(LINES.len())];
                let mut ins = line.as_bytes().to_vec();
                ins.extend_from_slice(if rng.below(4) == 0 { b"\n" } else { b"\r\n" });
                b.splice(at..at, ins);
            }
            5 => {
                // Delete from here to the next line end.
                let end = b[at.min(b.len())..]
                    .iter()
                    .position(|&x| x == b'\n')
                    .map_or(b.len(), |i| at + i + 1);
                b.drain(at.min(end)..end);
            }
            6 => {
                // A digit run: overflow bait.
                let digits = "9".repeat(1 + rng.below(25));
                b.splice(at..at, digits.into_bytes());
            }
            _ => b.retain(|&x| x != b'\r'),
        }
    }
    b
}

fn arbitrary(rng: &mut Rng) -> Vec<u8> {
    const ALPHABET: &[u8] = b"v=0\r\nmocatrzsi 1234567890:/.-IN IP4 sendonlyinactive";
    let len = rng.below(200);
    let mut b = if rng.below(2) == 0 {
        b"v=0\r\n".to_vec()
    } else {
        Vec::new()
    };
    for _ in 0..len {
        b.push(if rng.below(8) == 0 {
            rng.next() as u8
        } else {
            ALPHABET[rng.below(ALPHABET.len())]
        });
    }
    b
}

/// 200,000 inputs: none panics, none reaches the panic guard, and wherever sdp-rs reads
/// a body whole, our reader gives the same description.
#[test]
fn sdp_property_no_panic_and_readers_agree() {
    let mut rng = Rng(0x5d9_0bad_cafe_f00d);
    let before = panics_caught();
    let started = Instant::now();
    let (mut by_sdp_rs, mut by_us, mut held) = (0u32, 0u32, 0u32);
    for i in 0..200_000u32 {
        let input = if i % 4 == 0 {
            arbitrary(&mut rng)
        } else {
            let seed = SEEDS[rng.below(SEEDS.len())];
            mutate(&mut rng, seed)
        };
        let Some(prepared) = prepare(&input) else {
            assert_eq!(read(&input), None);
            continue;
        };
        let ours = via_lines(&prepared);
        match via_sdp_rs(&prepared) {
            Some(theirs) => {
                by_sdp_rs += 1;
                assert_eq!(
                    theirs,
                    ours,
                    "readers disagree on {:?}",
                    String::from_utf8_lossy(&input)
                );
            }
            None => by_us += 1,
        }
        let s = read(&input).expect("an SDP");
        held += u32::from(s.hold.is_some());
        assert!(s.hold.is_none() || s.streams > 0);
        let m = media(&input).expect("an SDP");
        assert_eq!(
            usize::from(s.streams),
            m.iter().filter(|m| m.port != 0).count()
        );
    }
    assert_eq!(panics_caught(), before, "an input reached the panic guard");
    println!(
        "sdp property: 200000 inputs in {:?}: {by_sdp_rs} read by sdp-rs, {by_us} by our reader, {held} held",
        started.elapsed()
    );
    assert!(by_sdp_rs > 10_000 && by_us > 10_000 && held > 10_000);
}

/// The figure in the module doc: µs per typical 300-byte audio offer, each way.
#[test]
fn sdp_cost_per_body() {
    let b = seed!("audio-offer.sdp");
    assert_eq!(b.len(), 301);
    let prepared = prepare(b).expect("an SDP");
    let rounds = 20_000u32;
    let time = |f: &dyn Fn() -> bool| {
        let t = Instant::now();
        for _ in 0..rounds {
            assert!(std::hint::black_box(f()));
        }
        t.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
    };
    let whole = time(&|| read(std::hint::black_box(b)).is_some());
    let sdp_rs = time(&|| via_sdp_rs(&prepared).is_some());
    let ours = time(&|| via_lines(&prepared).media.len() == 1);
    println!("sdp cost per 301-byte offer: read {whole:.2} µs, sdp-rs path {sdp_rs:.2} µs, our reader {ours:.2} µs");
    assert!(whole < 1_000.0, "{whole} µs per body");
}
