//! Reading SDP (RFC 8866, which obsoletes RFC 4566): the one module through which the
//! switch looks into a session description, and the only user of sdp-rs (ARCHITECTURE.md
//! invariant 7).
//!
//! The switch never writes SDP: an offer or answer is relayed byte for byte, so this
//! module only *reads*, and only what the call rules need: whether a body puts its peer
//! on hold and in which form, the `o=` line's session id and version (RFC 3264 §8: a
//! re-offer that changes nothing repeats the version; one that changes something
//! increments it), and how many streams are active. [`read`] gives the [`Summary`],
//! [`media`] the verdict per media description.
//!
//! # Direction and hold (RFC 3264 §5.1, §6.1, §8.4)
//!
//! A stream's direction is its media-level `a=sendrecv`/`sendonly`/`recvonly`/`inactive`,
//! else the session-level one, else `sendrecv` (RFC 3264 §5.1: the default). Its
//! connection address is its media-level `c=`, else the session-level `c=`. A stream is
//! *active* when its `m=` port is not 0 (port 0 rejects or disables it, RFC 3264 §6,
//! §8.2: nothing to hold). An active stream is on hold when:
//! - its connection address is IPv4 `0.0.0.0` ([`HoldForm::ZeroAddress`]): the RFC 2543
//!   form (RFC 2543 §B.1), which RFC 3264 §8.4 still makes every agent understand:
//!   "neither RTP nor RTCP is to be sent to the peer";
//! - or its direction is `sendonly` ([`HoldForm::SendOnly`]: RFC 3264 §8.4's hold; the
//!   holder may still send, e.g. music on hold) or `inactive` ([`HoldForm::Inactive`]: a
//!   stream that was recvonly is held by marking it inactive, §8.4).
//!
//! `recvonly` is not hold: the side that writes it still receives the other party's
//! media, so it is listening, not holding (§8.4 names only sendonly and inactive; a
//! recvonly stream put on hold becomes inactive). It is what an answerer writes when it
//! *is* held (§6.1 mirrors sendonly into recvonly). `sendrecv`, or no direction attribute
//! at all, is active media: a re-offer with it resumes.
//!
//! A body holds ([`Summary::hold`] is `Some`) when it has at least one active stream and
//! every active stream is on hold; one stream still sendrecv means the call is not held
//! (an audio hold that leaves video running is not a hold of the call). A body with no
//! active stream (no `m=` line, or every port 0) has `hold: None`: removing or
//! rejecting every stream is not putting a peer on hold (§8.2), and "all streams held"
//! over no streams would mark such a call held for ever; `streams == 0` tells the case
//! apart. The form reported is the one that lets the held party the least: per stream,
//! `ZeroAddress` beats the attribute (a `c=0.0.0.0` with `a=sendonly`, a common RFC 2543
//! era pairing, forbids even RTCP to the holder, which sendonly does not); across
//! streams, `ZeroAddress` (the held party may send nothing at all), then `Inactive` (it
//! receives no RTP), then `SendOnly` (it may still receive RTP). One body is judged on its
//! own: an answer mirrors its offer, so an `inactive` answer reads as a hold too, and an
//! initial offer may use `0.0.0.0` for "address not known yet" (§8.4); whose hold it is,
//! and whether an initial offer's counts, is for the call rules that know which side
//! offered. RFC 4028 (session timers) does not bear on any of this.
//!
//! # Why sdp-rs plus a line reader of our own
//!
//! sdp-rs 0.2.1 (measured in `shared/notes/rsip-sdp-gaps.md` §3) reads most bodies
//! correctly into a typed model, and it is what this module reads with first. Its gaps,
//! and how each is covered here:
//! 1. It panics (chrono overflow) on large `r=`/`z=` values. A pre-pass removes every
//!    `r=` and `z=` line before sdp-rs sees the text (the switch needs neither: they are
//!    repeat times and time zones), which removes the only chrono path; the call is also
//!    run under `catch_unwind`, so a panic we did not foresee falls back instead of
//!    reaching a call, and is counted ([`panics_caught`]) and logged as our bug.
//! 2. `a=inactive` lands in `Attribute::Other` (its match arm reads `inacive`): the
//!    direction is recognised here, by name, from `Other` as from the typed variants.
//! 3. It stops silently at the first line it does not expect and returns `Ok` without
//!    the rest (an `x=` line, a session-level `c=` after `a=`, a last line without a line
//!    end). The pre-pass hands sdp-rs the body as exactly one CRLF-terminated line per
//!    line of ours, and a parse counts only when sdp-rs's model accounts for every one of
//!    those lines; otherwise our reader reads the body.
//! 4. It rejects FQDNs in `o=` and `c=` (legal per RFC 4566/8866 `unicast-address`,
//!    `connection-address`; RFC 5118 §4.8 sends one), and 5. it rejects a whole body for
//!    one malformed attribute (`a=rtpmap:31 LPC`, 17 bodies of RFC 4475). For those our
//!    reader reads the few fields we need, line by line, skipping a line it cannot read.
//! 6. Its `rtpmap` serialiser is wrong: this module has no way to write SDP, so it cannot
//!    bite.
//!
//! Our reader is the fallback, not a second opinion: a property test over 200,000
//! arbitrary and mutated bodies checks that wherever sdp-rs accepts a body whole, both
//! readers give the same verdict, and that no input reaches the panic guard.
//!
//! Lines end in CRLF or a bare LF (RFC 8866 §5 asks parsers to accept LF); empty lines
//! are skipped; a body is an SDP when its first line is `v=0`. Attribute names are
//! compared ignoring ASCII case, and trailing blanks after a direction attribute are
//! ignored.
//!
//! Cost (release with the tests' overflow checks, this 2-core machine; the test
//! `sdp_cost_per_body` prints it): [`read`] of a typical 301-byte audio offer takes about
//! 4.5 µs, nearly all of it sdp-rs (its typed model allocates per line); our reader alone
//! takes about 0.25 µs. A call reads a handful of bodies in its life.

use std::net::{IpAddr, Ipv4Addr};
use std::panic;
use std::sync::atomic::{AtomicU64, Ordering};

/// The media direction one side's offer or answer asks for (RFC 3264 §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv`, or no direction attribute (the default, RFC 3264 §5.1).
    SendRecv,
    /// `a=sendonly`: the writer sends, does not want to receive.
    SendOnly,
    /// `a=recvonly`: the writer receives, does not send.
    RecvOnly,
    /// `a=inactive`: neither.
    Inactive,
}

/// How an SDP puts its peer on hold, if it does (see the module doc for the ranking).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldForm {
    /// The connection address is IPv4 `0.0.0.0` (RFC 2543 §B.1; RFC 3264 §8.4).
    ZeroAddress,
    /// `a=sendonly` (RFC 3264 §8.4).
    SendOnly,
    /// `a=inactive` (RFC 3264 §8.4).
    Inactive,
}

impl HoldForm {
    /// Higher is less media for the held party.
    fn rank(self) -> u8 {
        match self {
            HoldForm::SendOnly => 0,
            HoldForm::Inactive => 1,
            HoldForm::ZeroAddress => 2,
        }
    }
}

/// The `o=` line's session identity (RFC 8866 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `sess-id`, as written.
    pub session_id: String,
    /// `sess-version`: a re-offer repeats it when nothing changed (RFC 3264 §8).
    pub version: u64,
}

/// What one SDP body says, as far as the switch needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `Some` when every active stream is on hold (and there is at least one).
    pub hold: Option<HoldForm>,
    /// The session-level `o=` line, when it has all six fields and a numeric version.
    pub origin: Option<Origin>,
    /// Active streams: `m=` lines with a port other than 0.
    pub streams: u16,
}

/// One media description's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Media {
    /// The `m=` port; 0 for a rejected or disabled stream, and for a port we cannot read.
    pub port: u16,
    /// The stream's direction: media level, else session level, else sendrecv.
    pub direction: Direction,
    /// How this stream is on hold, if it is active and on hold.
    pub hold: Option<HoldForm>,
}

/// Reads one SDP body. `None` when the body is not an SDP at all (its first line is not
/// `v=0`); never panics, whatever the bytes.
pub fn read(body: &[u8]) -> Option<Summary> {
    describe(body).map(|d| d.summary())
}

/// Each media description's verdict, in order; `None` when the body is not an SDP.
pub fn media(body: &[u8]) -> Option<Vec<Media>> {
    describe(body).map(|d| d.media())
}

/// How many times sdp-rs panicked inside [`read`] or [`media`] since the process started.
/// The pre-pass is meant to keep this at 0; anything else is a gap we have not covered.
pub fn panics_caught() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

static PANICS: AtomicU64 = AtomicU64::new(0);

/// One level's (session or media) first direction attribute and first `c=` line
/// (`Some(true)` when its address is IPv4 0.0.0.0).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Level {
    direction: Option<Direction>,
    zero: Option<bool>,
}

impl Level {
    fn direction(&mut self, d: Option<Direction>) {
        if self.direction.is_none() {
            self.direction = d;
        }
    }

    fn connection(&mut self, zero: bool) {
        self.zero.get_or_insert(zero);
    }
}

/// What either reader extracts: the few fields the verdicts need.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Description {
    origin: Option<Origin>,
    session: Level,
    /// Per `m=` line: its port (0 when unreadable) and its own level.
    media: Vec<(u16, Level)>,
}

impl Description {
    fn media(&self) -> Vec<Media> {
        self.media
            .iter()
            .map(|&(port, level)| {
                let direction = level
                    .direction
                    .or(self.session.direction)
                    .unwrap_or(Direction::SendRecv);
                let zero = level.zero.or(self.session.zero).unwrap_or(false);
                let hold = if port == 0 {
                    None
                } else if zero {
                    Some(HoldForm::ZeroAddress)
                } else {
                    match direction {
                        Direction::SendOnly => Some(HoldForm::SendOnly),
                        Direction::Inactive => Some(HoldForm::Inactive),
                        Direction::SendRecv | Direction::RecvOnly => None,
                    }
                };
                Media {
                    port,
                    direction,
                    hold,
                }
            })
            .collect()
    }

    fn summary(&self) -> Summary {
        let mut streams: u16 = 0;
        let mut all_held = true;
        let mut form: Option<HoldForm> = None;
        for m in self.media().into_iter().filter(|m| m.port != 0) {
            streams = streams.saturating_add(1);
            match m.hold {
                None => all_held = false,
                Some(f) => {
                    form = Some(match form {
                        Some(g) if g.rank() >= f.rank() => g,
                        _ => f,
                    });
                }
            }
        }
        Summary {
            hold: if all_held { form } else { None },
            origin: self.origin.clone(),
            streams,
        }
    }
}

/// The body as lines (CR before LF dropped, empty lines skipped), when it is an SDP.
struct Prepared<'a> {
    lines: Vec<&'a [u8]>,
}

fn prepare(body: &[u8]) -> Option<Prepared<'_>> {
    let lines: Vec<&[u8]> = body
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
        .collect();
    if lines.first() != Some(&&b"v=0"[..]) {
        return None;
    }
    Some(Prepared { lines })
}

fn describe(body: &[u8]) -> Option<Description> {
    let prepared = prepare(body)?;
    Some(via_sdp_rs(&prepared).unwrap_or_else(|| via_lines(&prepared)))
}

/// Gap 1: the lines sdp-rs must not see. `r=` and `z=` are the only lines sdp-rs reads
/// with chrono, whose `Duration` constructors panic on overflow.
fn hidden_from_sdp_rs(line: &[u8]) -> bool {
    line.starts_with(b"r=") || line.starts_with(b"z=")
}

/// sdp-rs's reading, when it accounts for every line (gap 3) and did not panic (gap 1).
fn via_sdp_rs(prepared: &Prepared<'_>) -> Option<Description> {
    let mut text = String::with_capacity(prepared.lines.iter().map(|l| l.len() + 2).sum());
    let mut lines = 0usize;
    for line in prepared.lines.iter().filter(|l| !hidden_from_sdp_rs(l)) {
        text.push_str(std::str::from_utf8(line).ok()?);
        text.push_str("\r\n");
        lines += 1;
    }
    let parsed = match guarded(|| sdp_rs::SessionDescription::try_from(text.as_str()).ok()) {
        Ok(parsed) => parsed?,
        Err(()) => {
            PANICS.fetch_add(1, Ordering::Relaxed);
            tracing::error!("sdp-rs panicked on a body the pre-pass let through");
            return None;
        }
    };
    (lines_read(&parsed) == lines).then(|| from_sdp_rs(&parsed))
}

/// Runs `f`, turning a panic into `Err` (gap 1's last line of defence).
fn guarded<T>(f: impl FnOnce() -> T + panic::UnwindSafe) -> Result<T, ()> {
    panic::catch_unwind(f).map_err(|_| ())
}

/// How many lines sdp-rs's model holds: each field of it is one line of the input.
fn lines_read(sd: &sdp_rs::SessionDescription) -> usize {
    let flag = |b: bool| usize::from(b);
    let session = 3 // v= o= s=
        + flag(sd.session_info.is_some())
        + flag(sd.uri.is_some())
        + sd.emails.len()
        + sd.phones.len()
        + flag(sd.connection.is_some())
        + sd.bandwidths.len()
        + sd
            .times
            .iter()
            .map(|t| 1 + t.repeat.len() + flag(t.zone.is_some()))
            .sum::<usize>()
        + flag(sd.key.is_some())
        + sd.attributes.len();
    let media: usize = sd
        .media_descriptions
        .iter()
        .map(|m| {
            1 + flag(m.info.is_some())
                + m.connections.len()
                + m.bandwidths.len()
                + flag(m.key.is_some())
                + m.attributes.len()
        })
        .sum();
    session + media
}

fn from_sdp_rs(sd: &sdp_rs::SessionDescription) -> Description {
    use sdp_rs::lines::{Attribute, Connection};
    let direction = |a: &Attribute| match a {
        Attribute::Sendrecv => Some(Direction::SendRecv),
        Attribute::Sendonly => Some(Direction::SendOnly),
        Attribute::Recvonly => Some(Direction::RecvOnly),
        Attribute::Inactive => Some(Direction::Inactive),
        // Gap 2: `a=inactive` arrives here.
        Attribute::Other(key, value) => direction_of(key.as_bytes(), value.is_some()),
        _ => None,
    };
    let zero = |c: &Connection| is_zero(c.connection_address.base);
    let level = |attributes: &[Attribute], connections: &[Connection]| Level {
        direction: attributes.iter().find_map(direction),
        zero: connections.first().map(zero),
    };
    Description {
        origin: sd.origin.sess_version.parse().ok().map(|version| Origin {
            session_id: sd.origin.sess_id.clone(),
            version,
        }),
        session: level(&sd.attributes, sd.connection.as_slice()),
        media: sd
            .media_descriptions
            .iter()
            .map(|m| (m.media.port, level(&m.attributes, &m.connections)))
            .collect(),
    }
}

/// Our reader (gaps 3, 4, 5): each line on its own, in any order; a line it cannot read
/// is skipped. Lines before the first `m=` are session level.
fn via_lines(prepared: &Prepared<'_>) -> Description {
    let mut d = Description::default();
    let mut origin_seen = false;
    for line in prepared.lines.iter().skip(1) {
        let Some((&kind, value)) = line.split_first() else {
            continue;
        };
        let Some(value) = value.strip_prefix(b"=") else {
            continue;
        };
        match kind {
            b'm' => d.media.push((port_of(value), Level::default())),
            b'o' if d.media.is_empty() && !origin_seen => {
                origin_seen = true;
                d.origin = origin_of(value);
            }
            b'c' | b'a' => {
                let level = match d.media.last_mut() {
                    Some((_, level)) => level,
                    None => &mut d.session,
                };
                if kind == b'c' {
                    level.connection(connection_is_zero(value));
                } else {
                    let (key, attr_value) = match value.iter().position(|&b| b == b':') {
                        Some(i) => (&value[..i], &value[i + 1..]),
                        None => (value, &b""[..]),
                    };
                    level.direction(direction_of(key, !attr_value.is_empty()));
                }
            }
            _ => {}
        }
    }
    d
}

/// A direction attribute's name (RFC 3264 §5.1); with a value it is some other attribute.
fn direction_of(key: &[u8], has_value: bool) -> Option<Direction> {
    if has_value {
        return None;
    }
    let key = key.trim_ascii_end();
    [
        (&b"sendrecv"[..], Direction::SendRecv),
        (b"sendonly", Direction::SendOnly),
        (b"recvonly", Direction::RecvOnly),
        (b"inactive", Direction::Inactive),
    ]
    .into_iter()
    .find(|(name, _)| key.eq_ignore_ascii_case(name))
    .map(|(_, d)| d)
}

/// `m=<media> <port>[/<count>] <proto> <fmt> …`: the port, 0 when unreadable.
fn port_of(value: &[u8]) -> u16 {
    value
        .split(|&b| b == b' ')
        .nth(1)
        .and_then(|p| p.split(|&b| b == b'/').next())
        .and_then(|p| std::str::from_utf8(p).ok())
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`; the
/// address may be an FQDN (gap 4), so only its presence is checked.
fn origin_of(value: &[u8]) -> Option<Origin> {
    let fields: Vec<&[u8]> = value.splitn(6, |&b| b == b' ').collect();
    let [_, id, version, _, _, _] = fields.as_slice() else {
        return None;
    };
    Some(Origin {
        session_id: String::from_utf8_lossy(id).into_owned(),
        version: std::str::from_utf8(version).ok()?.parse().ok()?,
    })
}

/// `c=<nettype> <addrtype> <connection-address>[/ttl][/n]`: whether the address is IPv4
/// 0.0.0.0. An FQDN (gap 4) or anything unreadable is not.
fn connection_is_zero(value: &[u8]) -> bool {
    value
        .splitn(3, |&b| b == b' ')
        .nth(2)
        .and_then(|a| a.split(|&b| b == b'/').next())
        .and_then(|a| std::str::from_utf8(a).ok())
        .and_then(|a| a.parse::<IpAddr>().ok())
        .is_some_and(is_zero)
}

fn is_zero(address: IpAddr) -> bool {
    address == IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}

#[cfg(test)]
mod tests;
