//! The message model: requests, responses and the typed header values every layer
//! above L2 needs (RFC 3261 §7, §8.1.1, §19, §20; RFC 3966 for `tel:`; RFC 5118 for IPv6).
//!
//! A parsed message keeps the headers the stack works with on every message (Via, From,
//! To, Call-ID, CSeq, Max-Forwards) as typed fields, converted once at parse time, and
//! every other header as a raw `(name, value)` pair in arrival order. Serialising writes
//! the typed fields first and the raw headers after them; RFC 3261 §7.3.1 lets header
//! fields of different names appear in any order. The body is kept as bytes, never
//! re-encoded, so binary bodies are forwarded byte-exact.

use bytes::{BufMut, Bytes, BytesMut};
use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr};

/// A SIP method (RFC 3261 §7.1; extension methods are any token, RFC 3261 §25.1).
/// Method names are case-sensitive: `invite` is an extension method, not INVITE.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// RFC 3261.
    Invite,
    /// RFC 3261.
    Ack,
    /// RFC 3261.
    Bye,
    /// RFC 3261.
    Cancel,
    /// RFC 3261.
    Register,
    /// RFC 3261.
    Options,
    /// RFC 6086.
    Info,
    /// RFC 3262.
    Prack,
    /// RFC 3311.
    Update,
    /// RFC 6665.
    Subscribe,
    /// RFC 6665.
    Notify,
    /// RFC 3515.
    Refer,
    /// RFC 3428.
    Message,
    /// RFC 3903.
    Publish,
    /// Any other token.
    Extension(String),
}

impl Method {
    /// Parses a method token (already checked to be a token).
    pub fn from_token(s: &str) -> Method {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "PRACK" => Method::Prack,
            "UPDATE" => Method::Update,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Extension(other.to_string()),
        }
    }

    /// The method's token as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Extension(s) => s,
        }
    }

    /// The label used for this method in metrics: the method name for known methods,
    /// `other` for extensions (a closed label set).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Extension(_) => "other",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host: a name, an IPv4 address, or an IPv6 reference (RFC 3261 §25.1, RFC 5118).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name, kept as written (compare with `eq_ignore_ascii_case`).
    Name(String),
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 address; written in brackets.
    V6(Ipv6Addr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

/// `host [":" port]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// The host.
    pub host: Host,
    /// The port, when one is written.
    pub port: Option<u16>,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// A `;name[=value]` parameter. Names compare case-insensitively; the value is kept as
/// written (quoted strings keep their quotes, so `+sip.instance="<urn:…>"` round-trips).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Param {
    /// The parameter name.
    pub name: String,
    /// The value as written, or `None` for a flag parameter such as `;lr` or `;rport`.
    pub value: Option<String>,
}

impl Param {
    /// A parameter with a value.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Param {
        Param {
            name: name.into(),
            value: Some(value.into()),
        }
    }

    /// A flag parameter.
    pub fn flag(name: impl Into<String>) -> Param {
        Param {
            name: name.into(),
            value: None,
        }
    }
}

/// Finds a parameter by (case-insensitive) name.
pub fn find_param<'a>(params: &'a [Param], name: &str) -> Option<&'a Param> {
    params.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// The value of a parameter, with surrounding quotes removed.
pub fn param_value<'a>(params: &'a [Param], name: &str) -> Option<&'a str> {
    find_param(params, name)
        .and_then(|p| p.value.as_deref())
        .map(unquote)
}

/// Removes one pair of surrounding double quotes, if present.
pub fn unquote(s: &str) -> &str {
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

fn write_params(f: &mut impl fmt::Write, params: &[Param]) -> fmt::Result {
    for p in params {
        f.write_char(';')?;
        f.write_str(&p.name)?;
        if let Some(v) = &p.value {
            f.write_char('=')?;
            f.write_str(v)?;
        }
    }
    Ok(())
}

/// A `sip:` or `sips:` URI (RFC 3261 §19.1). User and password are kept escaped, as
/// written, so `sip:john.doe@example.com` has user `john.doe` and `%00` stays `%00`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SipUri {
    /// True for `sips:`.
    pub secure: bool,
    /// The user part, escaped as written (may contain `;` per RFC 4475 §3.1.1.9).
    pub user: Option<String>,
    /// The password part, escaped as written.
    pub password: Option<String>,
    /// Host and port.
    pub host: HostPort,
    /// URI parameters (`;transport=tcp;lr`).
    pub params: Vec<Param>,
    /// URI headers after `?`, as written (`Route=%3Csip:…%3E`), joined by `&`.
    pub headers: Option<String>,
}

impl SipUri {
    /// The value of a URI parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        param_value(&self.params, name)
    }

    /// True when the URI carries the flag or parameter `name`.
    pub fn has_param(&self, name: &str) -> bool {
        find_param(&self.params, name).is_some()
    }
}

/// A `tel:` URI (RFC 3966): the number (global `+…` or local) and its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TelUri {
    /// The number as written, visual separators included (`+1-201-555-0123`).
    pub number: String,
    /// Parameters (`;phone-context=…`).
    pub params: Vec<Param>,
}

impl TelUri {
    /// The number with visual separators (`-`, `.`, `(`, `)`) removed.
    pub fn digits(&self) -> String {
        self.number
            .chars()
            .filter(|c| !matches!(c, '-' | '.' | '(' | ')'))
            .collect()
    }
}

/// Any URI a SIP message may carry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Uri {
    /// `sip:` / `sips:`.
    Sip(SipUri),
    /// `tel:`.
    Tel(TelUri),
    /// Any other absolute URI (`http:`, `isbn:`, `urn:`), kept as written.
    Other {
        /// The scheme, lower-cased.
        scheme: String,
        /// Everything after the first `:`.
        rest: String,
    },
}

impl Uri {
    /// The scheme in lower case.
    pub fn scheme(&self) -> &str {
        match self {
            Uri::Sip(u) if u.secure => "sips",
            Uri::Sip(_) => "sip",
            Uri::Tel(_) => "tel",
            Uri::Other { scheme, .. } => scheme,
        }
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => {
                f.write_str(if u.secure { "sips:" } else { "sip:" })?;
                if let Some(user) = &u.user {
                    f.write_str(user)?;
                    if let Some(pw) = &u.password {
                        f.write_char(':')?;
                        f.write_str(pw)?;
                    }
                    f.write_char('@')?;
                }
                write!(f, "{}", u.host)?;
                write_params(f, &u.params)?;
                if let Some(h) = &u.headers {
                    f.write_char('?')?;
                    f.write_str(h)?;
                }
                Ok(())
            }
            Uri::Tel(t) => {
                f.write_str("tel:")?;
                f.write_str(&t.number)?;
                write_params(f, &t.params)
            }
            Uri::Other { scheme, rest } => write!(f, "{scheme}:{rest}"),
        }
    }
}

/// `[display-name] <uri> *(;param)` or `addr-spec *(;param)` (RFC 3261 §20.10, §20.20,
/// §20.39): From, To, Contact, Route, Record-Route values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NameAddr {
    /// The display name as written (quoted strings keep their quotes).
    pub display: Option<String>,
    /// The URI.
    pub uri: Uri,
    /// Header parameters (`;tag=…`, `;expires=…`, `;q=…`).
    pub params: Vec<Param>,
}

impl NameAddr {
    /// A bare `<uri>` with no display name and no parameters.
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display: None,
            uri,
            params: Vec::new(),
        }
    }

    /// The `tag` parameter (RFC 3261 §19.3).
    pub fn tag(&self) -> Option<&str> {
        param_value(&self.params, "tag")
    }

    /// Sets or replaces the `tag` parameter.
    pub fn set_tag(&mut self, tag: impl Into<String>) {
        let tag = tag.into();
        match self
            .params
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case("tag"))
        {
            Some(p) => p.value = Some(tag),
            None => self.params.push(Param::new("tag", tag)),
        }
    }

    /// The value of a header parameter, unquoted.
    pub fn param(&self, name: &str) -> Option<&str> {
        param_value(&self.params, name)
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            f.write_str(d)?;
            f.write_char(' ')?;
        }
        write!(f, "<{}>", self.uri)?;
        write_params(f, &self.params)
    }
}

/// One Via value (RFC 3261 §20.42, §18.2.1; RFC 3581).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Via {
    /// The transport token in upper case (`UDP`, `TCP`, `TLS`, or any extension).
    pub transport: String,
    /// The sent-by host and port.
    pub sent_by: HostPort,
    /// Via parameters (`branch`, `received`, `rport`, `maddr`, `ttl`, extensions).
    pub params: Vec<Param>,
}

/// The magic cookie that starts an RFC 3261 branch (§8.1.1.7).
pub const BRANCH_MAGIC: &str = "z9hG4bK";

impl Via {
    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&str> {
        param_value(&self.params, "branch")
    }

    /// True when the branch starts with the RFC 3261 magic cookie (and has more after it),
    /// so §17.1.3/§17.2.3 matching applies; otherwise RFC 2543 matching is used.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.len() > BRANCH_MAGIC.len() && b.starts_with(BRANCH_MAGIC))
    }

    /// The `received` parameter, brackets removed for IPv6 (RFC 5118 §4.5).
    pub fn received(&self) -> Option<&str> {
        param_value(&self.params, "received")
            .map(|v| v.trim_start_matches('[').trim_end_matches(']'))
    }

    /// `Some(None)` for a bare `;rport` flag, `Some(Some(n))` for `rport=n`.
    pub fn rport(&self) -> Option<Option<u16>> {
        find_param(&self.params, "rport").map(|p| p.value.as_deref().and_then(|v| v.parse().ok()))
    }

    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<&str> {
        param_value(&self.params, "maddr")
    }

    /// Sets (or replaces) a parameter.
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        match self
            .params
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(name))
        {
            Some(p) => p.value = value,
            None => self.params.push(Param {
                name: name.to_string(),
                value,
            }),
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.sent_by)?;
        write_params(f, &self.params)
    }
}

/// The CSeq header: sequence number and method (RFC 3261 §20.16). The number is below
/// 2^31 (§8.1.1.5); the parser refuses larger ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CSeq {
    /// The sequence number.
    pub seq: u32,
    /// The method.
    pub method: Method,
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// A header kept untyped: its name in canonical long form (compact names expanded) and
/// its value with line folding replaced by a single space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Canonical header name (`Contact`, not `m`); borrowed for well-known names.
    pub name: std::borrow::Cow<'static, str>,
    /// The value, trimmed.
    pub value: String,
}

impl Header {
    /// A header.
    pub fn new(
        name: impl Into<std::borrow::Cow<'static, str>>,
        value: impl Into<String>,
    ) -> Header {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// Headers typed at parse time and present on every valid request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    /// Via values, top-most first (each comma-separated value is its own entry).
    pub via: Vec<Via>,
    /// From.
    pub from: NameAddr,
    /// To.
    pub to: NameAddr,
    /// Call-ID.
    pub call_id: String,
    /// CSeq.
    pub cseq: CSeq,
    /// Max-Forwards, when present.
    pub max_forwards: Option<u32>,
    /// Every other header, in arrival order.
    pub headers: Vec<Header>,
    /// The body, exactly `Content-Length` bytes.
    pub body: Bytes,
}

impl Common {
    /// The values of every header with this (canonical, case-insensitive) name.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Every comma-separated token of a list header such as Require, Supported, Allow.
    pub fn tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.header_values(name)
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    /// The top Via.
    pub fn top_via(&self) -> Option<&Via> {
        self.via.first()
    }
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The Request-URI.
    pub uri: Uri,
    /// Headers and body.
    pub common: Common,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, 100–699.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// Headers and body.
    pub common: Common,
}

/// A request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl Message {
    /// Headers and body.
    pub fn common(&self) -> &Common {
        match self {
            Message::Request(r) => &r.common,
            Message::Response(r) => &r.common,
        }
    }

    /// Serialises the message (RFC 3261 §7), Content-Length computed from the body.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }
}

/// The standard reason phrase for a status code (RFC 3261 §21 and extensions).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        493 => "Undecipherable",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "Unknown",
    }
}

impl Request {
    /// Builds a response to this request (RFC 3261 §8.2.6.2): Via, From, To, Call-ID and
    /// CSeq copied, no body. A To tag is added only when `to_tag` is given and To has none.
    pub fn response(&self, status: u16, reason: Option<&str>, to_tag: Option<&str>) -> Response {
        let mut to = self.common.to.clone();
        if let Some(tag) = to_tag {
            if to.tag().is_none() {
                to.set_tag(tag);
            }
        }
        Response {
            status,
            reason: reason.unwrap_or_else(|| reason_phrase(status)).to_string(),
            common: Common {
                via: self.common.via.clone(),
                from: self.common.from.clone(),
                to,
                call_id: self.common.call_id.clone(),
                cseq: self.common.cseq.clone(),
                max_forwards: None,
                headers: Vec::new(),
                body: Bytes::new(),
            },
        }
    }

    /// Serialises the request.
    pub fn to_bytes(&self) -> Bytes {
        let mut line = String::with_capacity(64);
        let _ = write!(line, "{} {} SIP/2.0\r\n", self.method, self.uri);
        write_message(&line, &self.common)
    }
}

impl Response {
    /// Serialises the response.
    pub fn to_bytes(&self) -> Bytes {
        let mut line = String::with_capacity(32);
        let _ = write!(line, "SIP/2.0 {} {}\r\n", self.status, self.reason);
        write_message(&line, &self.common)
    }

    /// The status class digit (1–6).
    pub fn class(&self) -> u16 {
        self.status / 100
    }
}

fn write_message(start: &str, c: &Common) -> Bytes {
    let mut s = String::with_capacity(512);
    s.push_str(start);
    for v in &c.via {
        let _ = write!(s, "Via: {v}\r\n");
    }
    if let Some(mf) = c.max_forwards {
        let _ = write!(s, "Max-Forwards: {mf}\r\n");
    }
    let _ = write!(
        s,
        "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\n",
        c.from, c.to, c.call_id, c.cseq
    );
    for h in &c.headers {
        let _ = write!(s, "{}: {}\r\n", h.name, h.value);
    }
    let _ = write!(s, "Content-Length: {}\r\n\r\n", c.body.len());
    let mut out = BytesMut::with_capacity(s.len() + c.body.len());
    out.put_slice(s.as_bytes());
    out.put_slice(&c.body);
    out.freeze()
}
