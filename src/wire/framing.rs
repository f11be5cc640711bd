//! Framing and size limits (RFC 3261 §7.5, §18.3, §20.14; RFC 5626 §4.4.1).
//!
//! Check, then parse: a cheap pass over the header section proves that a whole message is
//! present, counts its header lines, measures each line, and reads Content-Length (long
//! or compact `l:`), all before the parser sees a byte. Every limit is enforced here, so
//! nothing is buffered or parsed without bound.
//!
//! * UDP: one datagram is one message; bytes after Content-Length are dropped (§18.3),
//!   and a missing Content-Length means "the rest of the datagram".
//! * TCP: the header section up to the blank line, then exactly Content-Length bytes
//!   (mandatory on a stream). [`StreamFramer`] resumes its scan where it stopped, so a
//!   message arriving one byte at a time costs linear time. A double CRLF between
//!   messages is an RFC 5626 keep-alive ping; a single CRLF is a pong and is ignored.

use bytes::{Buf, Bytes, BytesMut};

/// Limits checked before any parse. Defaults follow common practice: 64 KiB per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, header section plus body (→ 513).
    pub max_message_bytes: usize,
    /// Most header lines, continuation lines included (→ 513).
    pub max_headers: usize,
    /// Longest physical header line (→ 513).
    pub max_header_line_bytes: usize,
    /// Largest body (→ 413).
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_bytes: 64 * 1024,
            max_headers: 256,
            max_header_line_bytes: 8 * 1024,
            max_body_bytes: 32 * 1024,
        }
    }
}

/// Why a byte sequence is not a frameable message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The message exceeds `max_message_bytes`.
    TooLarge,
    /// Content-Length exceeds `max_body_bytes`.
    BodyTooLarge,
    /// More header lines than `max_headers`.
    TooManyHeaders,
    /// A header line longer than `max_header_line_bytes`.
    LineTooLong,
    /// Content-Length is not a decimal number (negative, garbage, overflow).
    BadContentLength,
    /// More than one Content-Length header.
    MultipleContentLength,
    /// Content-Length announces more bytes than the datagram holds.
    ContentLengthTooBig,
    /// A stream message without Content-Length (mandatory on TCP, §20.14).
    MissingContentLength,
    /// The header section has no terminating blank line.
    MissingBlankLine,
}

/// One framed message: the header section (start line and headers, without the blank
/// line) and the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Start line and header lines, each ending in CRLF (or LF), without the blank line.
    pub head: &'a [u8],
    /// The body: exactly Content-Length bytes.
    pub body: &'a [u8],
}

/// The result of scanning a header section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HeadScan {
    /// Offset of the first byte after the blank line.
    body_start: usize,
    /// Offset where the head ends (the blank line's first byte).
    head_end: usize,
    /// The Content-Length value, if present.
    content_length: Option<usize>,
}

/// Incremental state of a header-section scan.
#[derive(Debug, Clone, Default)]
struct Scanner {
    /// Offset of the next line to look at.
    pos: usize,
    /// Header lines seen.
    lines: usize,
    /// Content-Length seen so far.
    content_length: Option<usize>,
}

enum Scan {
    Done(HeadScan),
    Incomplete,
}

impl Scanner {
    /// Scans complete lines of `buf` from `self.pos`. `start` is where the message starts.
    fn scan(&mut self, buf: &[u8], start: usize, limits: &Limits) -> Result<Scan, FrameError> {
        loop {
            let rest = &buf[self.pos..];
            let Some(nl) = memchr(b'\n', rest) else {
                if rest.len() > limits.max_header_line_bytes {
                    return Err(FrameError::LineTooLong);
                }
                if buf.len() - start > limits.max_message_bytes {
                    return Err(FrameError::TooLarge);
                }
                return Ok(Scan::Incomplete);
            };
            let line_start = self.pos;
            let mut line = &rest[..nl];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            self.pos += nl + 1;
            if line.len() > limits.max_header_line_bytes {
                return Err(FrameError::LineTooLong);
            }
            if self.pos - start > limits.max_message_bytes {
                return Err(FrameError::TooLarge);
            }
            if line.is_empty() {
                if line_start == start {
                    // A blank line before the start line is skipped by the caller; here
                    // it can only mean an empty message.
                    continue;
                }
                return Ok(Scan::Done(HeadScan {
                    body_start: self.pos,
                    head_end: line_start,
                    content_length: self.content_length,
                }));
            }
            self.lines += 1;
            if self.lines > limits.max_headers + 1 {
                return Err(FrameError::TooManyHeaders);
            }
            if line_start != start {
                self.check_content_length(line)?;
            }
        }
    }

    fn check_content_length(&mut self, line: &[u8]) -> Result<(), FrameError> {
        // Only `Content-Length` and `l` qualify: look no further at any other line.
        if !matches!(line.first(), Some(b'c' | b'C' | b'l' | b'L')) {
            return Ok(());
        }
        let Some(colon) = memchr(b':', line) else {
            return Ok(());
        };
        let name = trim(&line[..colon]);
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            return Ok(());
        }
        let value = trim(&line[colon + 1..]);
        if self.content_length.is_some() {
            return Err(FrameError::MultipleContentLength);
        }
        if value.is_empty() || value.len() > 10 || !value.iter().all(u8::is_ascii_digit) {
            return Err(FrameError::BadContentLength);
        }
        let n = value
            .iter()
            .fold(0usize, |acc, d| acc * 10 + usize::from(d - b'0'));
        self.content_length = Some(n);
        Ok(())
    }
}

/// Frames one UDP datagram. `Ok(None)` is a keep-alive (only CR, LF or spaces).
pub fn frame_datagram<'a>(buf: &'a [u8], limits: &Limits) -> Result<Option<Frame<'a>>, FrameError> {
    let start = buf
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0))
        .unwrap_or(buf.len());
    if start == buf.len() {
        return Ok(None);
    }
    if buf.len() - start > limits.max_message_bytes {
        return Err(FrameError::TooLarge);
    }
    let mut scanner = Scanner {
        pos: start,
        ..Scanner::default()
    };
    let scan = match scanner.scan(buf, start, limits)? {
        Scan::Done(s) => s,
        Scan::Incomplete => return Err(FrameError::MissingBlankLine),
    };
    let available = buf.len() - scan.body_start;
    let body_len = match scan.content_length {
        Some(n) if n > limits.max_body_bytes => return Err(FrameError::BodyTooLarge),
        Some(n) if n > available => return Err(FrameError::ContentLengthTooBig),
        Some(n) => n,
        None if available > limits.max_body_bytes => return Err(FrameError::BodyTooLarge),
        None => available,
    };
    Ok(Some(Frame {
        head: &buf[start..scan.head_end],
        body: &buf[scan.body_start..scan.body_start + body_len],
    }))
}

/// The best-effort header section of a message that failed framing, so an error response
/// can still echo its Via, From, To, Call-ID and CSeq. Bounded by the limits.
pub fn salvage_head<'a>(buf: &'a [u8], limits: &Limits) -> &'a [u8] {
    let cap = buf.len().min(limits.max_message_bytes);
    let buf = &buf[..cap];
    let end = find_blank_line(buf).unwrap_or(buf.len());
    &buf[..end]
}

fn find_blank_line(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(nl) = memchr(b'\n', &buf[i..]) {
        let at = i + nl;
        let next = &buf[at + 1..];
        if next.starts_with(b"\r\n") || next.starts_with(b"\n") {
            return Some(at + 1);
        }
        i = at + 1;
    }
    None
}

/// An item produced by [`StreamFramer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// A complete message: header section and body.
    Message {
        /// The header section without the blank line.
        head: Bytes,
        /// The body.
        body: Bytes,
    },
    /// A double CRLF keep-alive ping: answer with a single CRLF (RFC 5626 §4.4.1).
    Ping,
}

/// Resumable framer for one TCP connection.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: BytesMut,
    scanner: Scanner,
    /// A scanned head waiting for its body.
    pending: Option<HeadScan>,
}

impl StreamFramer {
    /// A new framer.
    pub fn new() -> StreamFramer {
        StreamFramer::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The buffered bytes (to salvage a head after a framing error).
    pub fn buffer(&self) -> &[u8] {
        &self.buf
    }

    /// The next complete item, `Ok(None)` when more bytes are needed.
    pub fn next_item(&mut self, limits: &Limits) -> Result<Option<StreamItem>, FrameError> {
        if self.pending.is_none() && self.scanner.pos == 0 {
            // Between messages: CRLF keep-alives (RFC 5626 §4.4.1), and stray CRLFs that
            // RFC 3261 §7.5 says to ignore before a start line.
            loop {
                if self.buf.starts_with(b"\r\n\r\n") {
                    self.buf.advance(4);
                    return Ok(Some(StreamItem::Ping));
                }
                if !self.buf.is_empty() && b"\r\n\r\n".starts_with(&self.buf) {
                    // Could still become a ping: wait for more bytes.
                    return Ok(None);
                }
                if self.buf.starts_with(b"\r\n") {
                    self.buf.advance(2);
                    continue;
                }
                if self.buf.first() == Some(&b'\n') {
                    self.buf.advance(1);
                    continue;
                }
                break;
            }
            if self.buf.is_empty() {
                return Ok(None);
            }
        }
        let scan = match self.pending {
            Some(s) => s,
            None => match self.scanner.scan(&self.buf, 0, limits)? {
                Scan::Incomplete => return Ok(None),
                Scan::Done(s) => {
                    let Some(cl) = s.content_length else {
                        return Err(FrameError::MissingContentLength);
                    };
                    if cl > limits.max_body_bytes {
                        return Err(FrameError::BodyTooLarge);
                    }
                    if s.body_start + cl > limits.max_message_bytes {
                        return Err(FrameError::TooLarge);
                    }
                    self.pending = Some(s);
                    s
                }
            },
        };
        let cl = scan.content_length.unwrap_or(0);
        if self.buf.len() < scan.body_start + cl {
            return Ok(None);
        }
        let mut msg = self.buf.split_to(scan.body_start + cl).freeze();
        let body = msg.split_off(scan.body_start);
        msg.truncate(scan.head_end);
        self.pending = None;
        self.scanner = Scanner::default();
        Ok(Some(StreamItem::Message { head: msg, body }))
    }
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

/// Position of the first `needle` byte (SIMD search from the `memchr` crate).
pub(crate) fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_message_bytes: 1024,
        max_headers: 8,
        max_header_line_bytes: 100,
        max_body_bytes: 200,
    };

    #[test]
    fn datagram_drops_bytes_after_content_length() {
        let f = frame_datagram(b"OPTIONS sip:a SIP/2.0\r\nl: 3\r\n\r\nabcdef", &L)
            .unwrap()
            .unwrap();
        assert_eq!(f.body, b"abc");
        assert_eq!(f.head, b"OPTIONS sip:a SIP/2.0\r\nl: 3\r\n");
    }

    #[test]
    fn datagram_without_content_length_takes_the_rest() {
        let f = frame_datagram(b"OPTIONS sip:a SIP/2.0\r\nX: y\r\n\r\nabc", &L)
            .unwrap()
            .unwrap();
        assert_eq!(f.body, b"abc");
    }

    #[test]
    fn datagram_errors() {
        let check = |m: &[u8], e| {
            assert_eq!(
                frame_datagram(m, &L),
                Err(e),
                "{}",
                String::from_utf8_lossy(m)
            )
        };
        check(
            b"A sip:a SIP/2.0\r\nContent-Length: 9\r\n\r\nab",
            FrameError::ContentLengthTooBig,
        );
        check(
            b"A sip:a SIP/2.0\r\nContent-Length: -9\r\n\r\nab",
            FrameError::BadContentLength,
        );
        check(
            b"A sip:a SIP/2.0\r\nl: 1\r\nContent-Length: 1\r\n\r\na",
            FrameError::MultipleContentLength,
        );
        check(
            b"A sip:a SIP/2.0\r\nl: 300\r\n\r\na",
            FrameError::BodyTooLarge,
        );
        check(b"A sip:a SIP/2.0\r\nl: 0\r\n", FrameError::MissingBlankLine);
        let long = format!("A sip:a SIP/2.0\r\nX: {}\r\n\r\n", "x".repeat(200));
        check(long.as_bytes(), FrameError::LineTooLong);
        let many = format!("A sip:a SIP/2.0\r\n{}\r\n", "X: y\r\n".repeat(20));
        check(many.as_bytes(), FrameError::TooManyHeaders);
        let big = vec![b'a'; 2000];
        check(&big, FrameError::TooLarge);
    }

    #[test]
    fn datagram_keepalive() {
        assert_eq!(frame_datagram(b"\r\n\r\n", &L), Ok(None));
    }

    #[test]
    fn stream_pipelined_and_split() {
        let two = b"OPTIONS sip:a SIP/2.0\r\nl: 2\r\n\r\nabOPTIONS sip:b SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        // Byte by byte: the scan resumes and yields both messages.
        let mut f = StreamFramer::new();
        let mut got = Vec::new();
        for b in two.iter() {
            f.push(&[*b]);
            while let Some(item) = f.next_item(&L).unwrap() {
                got.push(item);
            }
        }
        assert_eq!(got.len(), 2);
        match &got[0] {
            StreamItem::Message { body, .. } => assert_eq!(&body[..], b"ab"),
            other => panic!("{other:?}"),
        }
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn stream_ping_and_pong() {
        let mut f = StreamFramer::new();
        f.push(b"\r\n\r\n");
        assert_eq!(f.next_item(&L).unwrap(), Some(StreamItem::Ping));
        f.push(b"\r\n");
        assert_eq!(f.next_item(&L).unwrap(), None);
        f.push(b"OPTIONS sip:a SIP/2.0\r\nl: 0\r\n\r\n");
        assert!(matches!(
            f.next_item(&L).unwrap(),
            Some(StreamItem::Message { .. })
        ));
    }

    #[test]
    fn stream_requires_content_length() {
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a SIP/2.0\r\nX: y\r\n\r\n");
        assert_eq!(f.next_item(&L), Err(FrameError::MissingContentLength));
    }

    #[test]
    fn stream_bounds_an_unterminated_head() {
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a SIP/2.0\r\n");
        for _ in 0..100 {
            f.push(b"X: yyyyyyyyyyyyyy\r\n");
        }
        assert!(f.next_item(&L).is_err());
    }
}
