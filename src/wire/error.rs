//! L2 errors and the one mapping from a wire error to the status that answers it
//! (RFC 3261 §8.2.2, §16.3, §21; RFC 4475 §3.1.2, §3.3).
//!
//! A malformed request is answered from what could be salvaged of its header section
//! ([`Salvage`]): its Via, From, To, Call-ID and CSeq lines echoed as written, so the
//! sender can match the error to its transaction even when one of them is the broken part.

use super::framing::FrameError;
use bytes::Bytes;
use std::fmt::Write as _;

/// Why a message was rejected at L2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Framing or a size limit.
    Frame(FrameError),
    /// The header section is not UTF-8.
    NotUtf8,
    /// The start line is malformed.
    BadStartLine(&'static str),
    /// The Request-URI is malformed.
    BadRequestUri(&'static str),
    /// A SIP version other than 2.0 (→ 505).
    VersionNotSupported,
    /// A header line without a colon, or a name that is not a token.
    MalformedHeaderLine,
    /// A NUL octet in a header value outside a quoted-pair (§25.1).
    NulInHeader,
    /// A header's value is malformed: (header, what).
    BadHeader(&'static str, &'static str),
    /// A mandatory header is missing.
    Missing(&'static str),
    /// A header that must appear once appears again.
    Duplicate(&'static str),
    /// CSeq's method differs from the request's method (§8.1.1.5).
    CSeqMethodMismatch,
}

impl WireError {
    /// The status code that answers a request rejected for this reason.
    pub fn status(&self) -> u16 {
        match self {
            WireError::Frame(
                FrameError::TooLarge | FrameError::TooManyHeaders | FrameError::LineTooLong,
            ) => 513,
            WireError::Frame(FrameError::BodyTooLarge) => 413,
            WireError::VersionNotSupported => 505,
            _ => 400,
        }
    }

    /// A reason phrase naming the problem.
    pub fn reason(&self) -> String {
        match self {
            WireError::Frame(f) => match f {
                FrameError::TooLarge => "Message Too Large".into(),
                FrameError::TooManyHeaders => "Message Too Large (too many headers)".into(),
                FrameError::LineTooLong => "Message Too Large (header line too long)".into(),
                FrameError::BodyTooLarge => "Request Entity Too Large".into(),
                FrameError::BadContentLength => "Bad Request (malformed Content-Length)".into(),
                FrameError::MultipleContentLength => {
                    "Bad Request (multiple Content-Length headers)".into()
                }
                FrameError::ContentLengthTooBig => {
                    "Bad Request (Content-Length larger than message)".into()
                }
                FrameError::MissingContentLength => {
                    "Bad Request (missing Content-Length on a stream)".into()
                }
                FrameError::MissingBlankLine => "Bad Request (no blank line after headers)".into(),
            },
            WireError::NotUtf8 => "Bad Request (header section is not UTF-8)".into(),
            WireError::BadStartLine(w) => format!("Bad Request ({w})"),
            WireError::BadRequestUri(w) => format!("Bad Request (malformed Request-URI: {w})"),
            WireError::VersionNotSupported => "Version Not Supported".into(),
            WireError::MalformedHeaderLine => "Bad Request (malformed header line)".into(),
            WireError::NulInHeader => "Bad Request (NUL octet in a header value)".into(),
            WireError::BadHeader(h, w) => format!("Bad Request (malformed {h}: {w})"),
            WireError::Missing(h) => format!("Bad Request (missing {h})"),
            WireError::Duplicate(h) => format!("Bad Request (more than one {h})"),
            WireError::CSeqMethodMismatch => {
                "Bad Request (CSeq method does not match the request method)".into()
            }
        }
    }

    /// The metrics label (closed set) for a request rejected for this reason.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            WireError::Frame(FrameError::TooLarge) => "too_large",
            WireError::Frame(FrameError::TooManyHeaders) => "too_many_headers",
            WireError::Frame(FrameError::LineTooLong) => "line_too_long",
            WireError::Frame(FrameError::BodyTooLarge) => "body_too_large",
            WireError::VersionNotSupported => "version",
            _ => "parse",
        }
    }
}

/// The header lines needed to answer a request, as written (compact names recognised,
/// continuation lines unfolded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Salvage {
    /// True when the start line looks like a response (`SIP/…`): never answered.
    pub is_response: bool,
    /// Every Via header value, top first.
    pub via: Vec<String>,
    /// From.
    pub from: Option<String>,
    /// To.
    pub to: Option<String>,
    /// Call-ID.
    pub call_id: Option<String>,
    /// CSeq.
    pub cseq: Option<String>,
}

impl Salvage {
    /// Salvages from a header section, bounded by its size (already limited by framing).
    pub fn from_head(head: &[u8]) -> Salvage {
        let text = String::from_utf8_lossy(head);
        let mut s = Salvage {
            is_response: text.starts_with("SIP/"),
            ..Salvage::default()
        };
        let mut logical: Vec<String> = Vec::new();
        for line in text.split('\n').skip(1) {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.starts_with([' ', '\t']) {
                if let Some(last) = logical.last_mut() {
                    last.push(' ');
                    last.push_str(line.trim());
                }
            } else {
                logical.push(line.to_string());
            }
        }
        for l in logical {
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let value = value.trim().to_string();
            // Values are echoed only if they cannot break the response's framing.
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) || value.len() > 4096 {
                continue;
            }
            match super::compact::canonical_name(name.trim()).as_ref() {
                "Via" if s.via.len() < 64 => s.via.push(value),
                "From" if s.from.is_none() => s.from = Some(value),
                "To" if s.to.is_none() => s.to = Some(value),
                "Call-ID" if s.call_id.is_none() => s.call_id = Some(value),
                "CSeq" if s.cseq.is_none() => s.cseq = Some(value),
                _ => {}
            }
        }
        s
    }

    /// Builds an error response from the salvaged lines (RFC 3261 §8.2.6), with a To tag
    /// added when To has none, and any extra header lines.
    pub fn response(
        &self,
        status: u16,
        reason: &str,
        to_tag: &str,
        extra: &[(&str, &str)],
    ) -> Bytes {
        let mut out = String::with_capacity(512);
        let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
        let _ = write!(out, "SIP/2.0 {status} {reason}\r\n");
        for v in &self.via {
            let _ = write!(out, "Via: {v}\r\n");
        }
        if let Some(f) = &self.from {
            let _ = write!(out, "From: {f}\r\n");
        }
        if let Some(t) = &self.to {
            if t.contains(";tag=") || t.contains("; tag") {
                let _ = write!(out, "To: {t}\r\n");
            } else {
                let _ = write!(out, "To: {t};tag={to_tag}\r\n");
            }
        }
        if let Some(c) = &self.call_id {
            let _ = write!(out, "Call-ID: {c}\r\n");
        }
        if let Some(c) = &self.cseq {
            let _ = write!(out, "CSeq: {c}\r\n");
        }
        for (n, v) in extra {
            let _ = write!(out, "{n}: {v}\r\n");
        }
        out.push_str("Content-Length: 0\r\n\r\n");
        Bytes::from(out)
    }
}
