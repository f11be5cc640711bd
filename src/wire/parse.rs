//! The message parser (RFC 3261 §7, §20, §25.1; RFC 4475; RFC 5118).
//!
//! Input is one framed message ([`super::framing`]): its header section and its body.
//! One pass over the header lines unfolds continuation lines (§7.3.1), tolerates LWS
//! before the colon, expands compact names ([`super::compact`]), types the headers every
//! layer needs (Via — each comma-separated value its own entry — From, To, Call-ID,
//! CSeq, Max-Forwards) and checks the syntax of the other structured ones (Contact,
//! Route, Record-Route, Content-Type), then applies the semantic checks of §8.2.2 and
//! §16.3: exactly one From/To/Call-ID/CSeq/Max-Forwards/Content-Length, CSeq method =
//! request method, CSeq below 2^31, Max-Forwards 0–255.
//!
//! A NUL octet (%x00) in a header section is refused (400) unless it is the escaped octet
//! of a quoted-pair in a quoted string, the only place §25.1 allows it (RFC 4475 §3.1.1.2
//! sends one); a quoted-pair in a comment (User-Agent, Server) is not told apart, so a
//! NUL there is refused too. Bodies may hold any octet (RFC 4475 §3.1.1.11).

use super::compact::canonical_name;
use super::error::WireError;
use super::types::{
    CSeq, Common, Header, Message, Method, NameAddr, Param, Request, Response, Via,
};
use super::uri::{parse_hostport, parse_uri};
use bytes::Bytes;
use std::borrow::Cow;

/// Parses a framed message. `head` is the header section without the blank line. On an
/// error, [`super::Salvage::from_head`] recovers what is needed to answer it (a cold
/// path, so the happy path copies nothing for it).
pub fn parse_message(head: &[u8], body: &[u8]) -> Result<Message, WireError> {
    let head = std::str::from_utf8(head).map_err(|_| WireError::NotUtf8)?;
    let mut lines = Lines::new(head);
    let start = lines
        .next_physical()
        .ok_or(WireError::BadStartLine("empty message"))?;
    let start = Start::parse(start)?;

    let mut via = Vec::new();
    let mut from = None;
    let mut to = None;
    let mut call_id: Option<String> = None;
    let mut cseq = None;
    let mut max_forwards = None;
    let mut content_length_seen = false;
    let mut headers = Vec::with_capacity(16);

    while let Some((name, value)) = lines.next_header()? {
        let name = canonical_name(name);
        let v: &str = &value;
        match &*name {
            "Via" => {
                for item in split_list(v).map_err(|r| WireError::BadHeader("Via", r))? {
                    via.push(parse_via(item).map_err(|r| WireError::BadHeader("Via", r))?);
                }
            }
            "From" => {
                if from.is_some() {
                    return Err(WireError::Duplicate("From"));
                }
                from = Some(parse_name_addr(v).map_err(|r| WireError::BadHeader("From", r))?);
            }
            "To" => {
                if to.is_some() {
                    return Err(WireError::Duplicate("To"));
                }
                to = Some(parse_name_addr(v).map_err(|r| WireError::BadHeader("To", r))?);
            }
            "Call-ID" => {
                if call_id.is_some() {
                    return Err(WireError::Duplicate("Call-ID"));
                }
                if v.is_empty() || v.bytes().any(|b| b.is_ascii_whitespace()) {
                    return Err(WireError::BadHeader("Call-ID", "not a single word"));
                }
                call_id = Some(v.to_string());
            }
            "CSeq" => {
                if cseq.is_some() {
                    return Err(WireError::Duplicate("CSeq"));
                }
                cseq = Some(parse_cseq(v).map_err(|r| WireError::BadHeader("CSeq", r))?);
            }
            "Max-Forwards" => {
                if max_forwards.is_some() {
                    return Err(WireError::Duplicate("Max-Forwards"));
                }
                max_forwards = Some(
                    parse_max_forwards(v).map_err(|r| WireError::BadHeader("Max-Forwards", r))?,
                );
            }
            "Content-Length" => {
                // Framing already read and bounded it; here only its uniqueness matters.
                if content_length_seen {
                    return Err(WireError::Duplicate("Content-Length"));
                }
                content_length_seen = true;
            }
            other => {
                check_structured(other, v)?;
                headers.push(Header {
                    name,
                    value: value.into_owned(),
                });
            }
        }
    }

    let from = from.ok_or(WireError::Missing("From"))?;
    let to = to.ok_or(WireError::Missing("To"))?;
    let call_id = call_id.ok_or(WireError::Missing("Call-ID"))?;
    let cseq = cseq.ok_or(WireError::Missing("CSeq"))?;
    if via.is_empty() {
        return Err(WireError::Missing("Via"));
    }
    let common = Common {
        via,
        from,
        to,
        call_id,
        cseq,
        max_forwards,
        headers,
        body: Bytes::copy_from_slice(body),
    };
    match start {
        Start::Request { method, uri } => {
            // An extension method is refused with 501 whatever its CSeq says, which
            // RFC 4475 §3.1.2.18 prefers to 400; known methods must match (§8.1.1.5).
            if common.cseq.method != method && !matches!(method, Method::Extension(_)) {
                return Err(WireError::CSeqMethodMismatch);
            }
            let uri = parse_uri(uri).map_err(|e| WireError::BadRequestUri(e.0))?;
            // RFC 3261 §19.1.1 (table 1): headers are not allowed in a Request-URI, and
            // turning them into headers would let a peer inject Route (RFC 4475 §3.1.2.11).
            if matches!(&uri, super::types::Uri::Sip(u) if u.headers.is_some()) {
                return Err(WireError::BadRequestUri(
                    "headers not allowed in Request-URI",
                ));
            }
            Ok(Message::Request(Request {
                method,
                uri,
                common,
            }))
        }
        Start::Response { status, reason } => Ok(Message::Response(Response {
            status,
            reason: reason.to_string(),
            common,
        })),
    }
}

enum Start<'a> {
    Request { method: Method, uri: &'a str },
    Response { status: u16, reason: &'a str },
}

impl<'a> Start<'a> {
    fn parse(line: &'a str) -> Result<Start<'a>, WireError> {
        if let Some(rest) = line.strip_prefix("SIP/") {
            // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase (§7.2).
            let (version, rest) = rest
                .split_once(' ')
                .ok_or(WireError::BadStartLine("malformed status line"))?;
            if version != "2.0" {
                return Err(WireError::VersionNotSupported);
            }
            let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(WireError::BadStartLine("bad status code"));
            }
            let status: u16 = code
                .parse()
                .map_err(|_| WireError::BadStartLine("bad status code"))?;
            if !(100..=699).contains(&status) {
                return Err(WireError::BadStartLine("status code out of range"));
            }
            return Ok(Start::Response { status, reason });
        }
        // Request-Line = Method SP Request-URI SP SIP-Version CRLF (§7.1): exactly two
        // single spaces; anything else is 400 (RFC 4475 §3.1.2.8–10).
        let (method, rest) = line
            .split_once(' ')
            .ok_or(WireError::BadStartLine("malformed request line"))?;
        let (uri, version) = rest
            .rsplit_once(' ')
            .ok_or(WireError::BadStartLine("missing SIP version"))?;
        if !is_token(method) {
            return Err(WireError::BadStartLine("bad method"));
        }
        if uri.is_empty() || uri.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(WireError::BadRequestUri("whitespace in Request-URI"));
        }
        if version != "SIP/2.0" {
            return Err(if is_sip_version(version) {
                WireError::VersionNotSupported
            } else {
                WireError::BadStartLine("bad SIP version")
            });
        }
        Ok(Start::Request {
            method: Method::from_token(method),
            uri,
        })
    }
}

fn is_sip_version(v: &str) -> bool {
    v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
        && v[4..].split_once('.').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        })
}

/// Iterates the lines of a header section, unfolding continuation lines.
struct Lines<'a> {
    rest: &'a str,
    /// The section holds a NUL somewhere: each header value is checked for one.
    nul: bool,
}

impl<'a> Lines<'a> {
    fn new(s: &'a str) -> Lines<'a> {
        Lines {
            rest: s,
            nul: memchr::memchr(0, s.as_bytes()).is_some(),
        }
    }

    fn next_physical(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let (line, rest) = match memchr::memchr(b'\n', self.rest.as_bytes()) {
            Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
            None => (self.rest, ""),
        };
        self.rest = rest;
        Some(line.strip_suffix('\r').unwrap_or(line))
    }

    /// The next header as (name, unfolded trimmed value).
    fn next_header(&mut self) -> Result<Option<(&'a str, Cow<'a, str>)>, WireError> {
        let Some(line) = self.next_physical() else {
            return Ok(None);
        };
        if line.starts_with([' ', '\t']) {
            return Err(WireError::BadStartLine(
                "continuation line before any header",
            ));
        }
        let colon = line.find(':').ok_or(WireError::MalformedHeaderLine)?;
        let name = line[..colon].trim_end_matches([' ', '\t']);
        if !is_token(name) {
            return Err(WireError::MalformedHeaderLine);
        }
        let mut value: Cow<'a, str> = Cow::Borrowed(line[colon + 1..].trim_matches([' ', '\t']));
        while self.rest.starts_with([' ', '\t']) {
            let cont = self.next_physical().unwrap_or("").trim_matches([' ', '\t']);
            if cont.is_empty() {
                continue;
            }
            let v = value.to_mut();
            if !v.is_empty() {
                v.push(' ');
            }
            v.push_str(cont);
        }
        if self.nul && !nul_only_quoted(&value) {
            return Err(WireError::NulInHeader);
        }
        Ok(Some((name, value)))
    }
}

/// True when every NUL octet of a header value is the escaped octet of a quoted-pair in a
/// quoted string (§25.1: `quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)`). Anywhere
/// else — TEXT-UTF8char, token, qdtext, a URI — §25.1 allows no %x00, and a NUL carried on
/// into a CDR, a log or a C library would cut the value short there.
fn nul_only_quoted(v: &str) -> bool {
    let b = v.as_bytes();
    let (mut i, mut quoted) = (0, false);
    while i < b.len() {
        match b[i] {
            0 => return false,
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            _ => {}
        }
        i += 1;
    }
    true
}

/// RFC 3261 §25.1 token characters.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
                )
        })
}

/// Index just past the closing quote of a quoted string starting at `s[0] == '"'`.
fn quoted_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Splits a header value on commas outside quoted strings and angle brackets. An empty
/// element (`,,`) is an error (RFC 4475 §3.1.2.1).
pub fn split_list(v: &str) -> Result<Vec<&str>, &'static str> {
    let mut out = Vec::new();
    let b = v.as_bytes();
    let (mut i, mut start, mut angle) = (0, 0, false);
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += quoted_end(&v[i..]).ok_or("unterminated quoted string")?;
                continue;
            }
            b'<' => angle = true,
            b'>' => angle = false,
            b',' if !angle => {
                let item = v[start..i].trim();
                if item.is_empty() {
                    return Err("empty list element");
                }
                out.push(item);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    let item = v[start..].trim();
    if item.is_empty() {
        return Err("empty list element");
    }
    out.push(item);
    Ok(out)
}

/// Parses `*(SEMI generic-param)` (the part after a URI or sent-by), LWS allowed around
/// `;` and `=`.
pub fn parse_params(s: &str) -> Result<Vec<Param>, &'static str> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let s = s.strip_prefix(';').ok_or("garbage before parameters")?;
    let mut out = Vec::new();
    let b = s.as_bytes();
    let (mut i, mut start) = (0, 0);
    loop {
        if i == b.len() || b[i] == b';' {
            out.push(parse_param(&s[start..i])?);
            if i == b.len() {
                break;
            }
            start = i + 1;
        } else if b[i] == b'"' {
            i += quoted_end(&s[i..]).ok_or("unterminated quoted string")?;
            continue;
        }
        i += 1;
    }
    Ok(out)
}

fn parse_param(p: &str) -> Result<Param, &'static str> {
    let p = p.trim();
    if p.is_empty() {
        return Err("empty parameter");
    }
    match p.split_once('=') {
        None => {
            if !is_token(p) {
                return Err("bad parameter name");
            }
            Ok(Param::flag(p))
        }
        Some((n, v)) => {
            let (n, v) = (n.trim(), v.trim());
            if !is_token(n) {
                return Err("bad parameter name");
            }
            if v.is_empty() {
                return Err("empty parameter value");
            }
            if v.starts_with('"') {
                if quoted_end(v) != Some(v.len()) {
                    return Err("bad quoted parameter value");
                }
            } else if v
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b == b'"' || b == b',')
            {
                return Err("bad parameter value");
            }
            Ok(Param::new(n, v))
        }
    }
}

/// Parses a name-addr or addr-spec with header parameters (From, To, Contact, Route).
pub fn parse_name_addr(v: &str) -> Result<NameAddr, &'static str> {
    let v = v.trim();
    if let Some(lt) = find_unquoted(v, b'<') {
        let display = v[..lt].trim();
        let display = if display.is_empty() {
            None
        } else if display.starts_with('"') {
            if quoted_end(display) != Some(display.len()) {
                return Err("bad quoted display name");
            }
            Some(display.to_string())
        } else {
            if !display
                .split([' ', '\t'])
                .filter(|w| !w.is_empty())
                .all(is_token)
            {
                return Err("bad display name");
            }
            Some(display.to_string())
        };
        let after = &v[lt + 1..];
        let gt = after.find('>').ok_or("unterminated <")?;
        let uri = parse_uri(&after[..gt]).map_err(|e| e.0)?;
        let params = parse_params(&after[gt + 1..])?;
        Ok(NameAddr {
            display,
            uri,
            params,
        })
    } else {
        if v.starts_with('"') {
            return Err("display name without <uri>");
        }
        // addr-spec: every ';' parameter belongs to the header (§20.10); a URI with
        // headers or commas must be enclosed in <> (RFC 4475 §3.1.2.13).
        let (uri, params) = match v.find(';') {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, ""),
        };
        if uri.contains('?') {
            return Err("URI with headers must be enclosed in <>");
        }
        let uri = parse_uri(uri.trim()).map_err(|e| e.0)?;
        let params = parse_params(params)?;
        Ok(NameAddr {
            display: None,
            uri,
            params,
        })
    }
}

fn find_unquoted(v: &str, c: u8) -> Option<usize> {
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' {
            i += quoted_end(&v[i..])?;
            continue;
        }
        if b[i] == c {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Parses one Via value: `SIP / 2.0 / transport LWS sent-by *(; via-param)`, LWS allowed
/// around the slashes (RFC 4475 §3.1.1.1) and IPv6 sent-by/received (RFC 5118 §4.5).
pub fn parse_via(v: &str) -> Result<Via, &'static str> {
    let mut parts = v.splitn(3, '/');
    let (Some(name), Some(version), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("malformed sent-protocol");
    };
    if !name.trim().eq_ignore_ascii_case("SIP") || version.trim() != "2.0" {
        return Err("unsupported protocol");
    }
    let rest = rest.trim_start();
    let t_end = rest.find([' ', '\t']).ok_or("missing sent-by")?;
    let transport = &rest[..t_end];
    if !is_token(transport) {
        return Err("bad transport");
    }
    let rest = rest[t_end..].trim_start();
    let semi = rest.find(';').unwrap_or(rest.len());
    let raw = rest[..semi].trim_end();
    let sent_by = if raw.bytes().any(|b| b.is_ascii_whitespace()) {
        // LWS around the port colon (RFC 4475 §3.1.1.1 style): squeeze it out.
        let squeezed: String = raw.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        parse_hostport(&squeezed)
    } else {
        parse_hostport(raw)
    }
    .map_err(|e| e.0)?;
    let params = parse_params(&rest[semi..])?;
    Ok(Via {
        transport: transport.to_ascii_uppercase(),
        sent_by,
        params,
    })
}

fn parse_cseq(v: &str) -> Result<CSeq, &'static str> {
    let (num, method) = v.split_once([' ', '\t']).ok_or("missing method")?;
    let method = method.trim();
    if num.is_empty() || num.len() > 10 || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err("bad sequence number");
    }
    let seq: u64 = num.parse().map_err(|_| "bad sequence number")?;
    if seq >= 1 << 31 {
        return Err("sequence number not below 2^31");
    }
    if !is_token(method) {
        return Err("bad method");
    }
    Ok(CSeq {
        seq: seq as u32,
        method: Method::from_token(method),
    })
}

fn parse_max_forwards(v: &str) -> Result<u32, &'static str> {
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a number");
    }
    let n: u32 = v.parse().map_err(|_| "not a number")?;
    if n > 255 {
        return Err("above 255");
    }
    Ok(n)
}

/// Syntax checks of structured headers the stack relies on later.
fn check_structured(name: &str, v: &str) -> Result<(), WireError> {
    match name {
        "Contact" if v != "*" => {
            for item in split_list(v).map_err(|r| WireError::BadHeader("Contact", r))? {
                parse_name_addr(item).map_err(|r| WireError::BadHeader("Contact", r))?;
            }
        }
        "Route" | "Record-Route" => {
            let n = if name == "Route" {
                "Route"
            } else {
                "Record-Route"
            };
            for item in split_list(v).map_err(|r| WireError::BadHeader(n, r))? {
                parse_name_addr(item).map_err(|r| WireError::BadHeader(n, r))?;
            }
        }
        "Content-Type" => {
            let mt = v.split(';').next().unwrap_or("").trim();
            let ok = mt
                .split_once('/')
                .is_some_and(|(t, s)| is_token(t.trim()) && is_token(s.trim()));
            if !ok {
                return Err(WireError::BadHeader("Content-Type", "not a media type"));
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::types::{Host, Uri};

    fn req(s: &str) -> Request {
        let (head, body) = s.split_once("\r\n\r\n").unwrap();
        match parse_message(format!("{head}\r\n").as_bytes(), body.as_bytes()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => panic!("response"),
        }
    }

    fn err(s: &str) -> WireError {
        let (head, body) = s.split_once("\r\n\r\n").unwrap();
        parse_message(format!("{head}\r\n").as_bytes(), body.as_bytes()).unwrap_err()
    }

    const BASE: &str = "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c1\r\n";

    #[test]
    fn compact_equals_long_form() {
        let long = req(
            "INVITE sip:bob@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:a@h>\r\nContent-Type: application/sdp\r\nSupported: timer\r\nContent-Length: 0\r\n\r\n",
        );
        let compact = req(
            "INVITE sip:bob@x SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bKa\r\nf: <sip:a@x>;tag=1\r\nt: <sip:b@x>\r\ni: c\r\nCSeq: 1 INVITE\r\nm: <sip:a@h>\r\nc: application/sdp\r\nk: timer\r\nl: 0\r\n\r\n",
        );
        assert_eq!(long, compact);
    }

    #[test]
    fn folded_and_lws_before_colon() {
        let r = req("OPTIONS sip:x SIP/2.0\r\nTO :\r\n sip:b@x ;   tag    = 19\r\nfrom   : \"J \\\"\"  <sip:a@x>\r\n  ;\r\n  tag = 98\r\nCall-ID: c\r\ncseq: 0009\r\n  OPTIONS\r\nVia  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw\r\n\r\n");
        assert_eq!(r.common.to.tag(), Some("19"));
        assert_eq!(r.common.from.tag(), Some("98"));
        assert_eq!(r.common.cseq.seq, 9);
        assert_eq!(r.common.via[0].transport, "UDP");
        assert_eq!(r.common.via[0].branch(), Some("390skdjuw"));
    }

    #[test]
    fn multiple_via_values_in_one_line() {
        let r = req("OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1 , SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bK2;received=[2001:db8::9:255]\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\r\n");
        assert_eq!(r.common.via.len(), 2);
        let v = &r.common.via[1];
        assert_eq!(v.sent_by.host, Host::V6("2001:db8::9:1".parse().unwrap()));
        assert_eq!(v.sent_by.port, Some(6050));
        assert_eq!(v.received(), Some("2001:db8::9:255"));
    }

    #[test]
    fn sip_instance_and_tel() {
        let r = req(&format!("REGISTER sip:x SIP/2.0\r\n{BASE}CSeq: 1 REGISTER\r\nContact: <sip:a@192.0.2.1;ob>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\";reg-id=1, <tel:+1-201-555-0123>\r\n\r\n"));
        let contacts = split_list(r.common.header("Contact").unwrap()).unwrap();
        let c = parse_name_addr(contacts[0]).unwrap();
        assert_eq!(
            c.param("+sip.instance"),
            Some("<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>")
        );
        assert_eq!(c.param("reg-id"), Some("1"));
        let t = parse_name_addr(contacts[1]).unwrap();
        assert!(matches!(t.uri, Uri::Tel(ref t) if t.number == "+1-201-555-0123"));
    }

    #[test]
    fn semantic_errors() {
        assert_eq!(
            err(&format!(
                "INVITE sip:x SIP/2.0\r\n{BASE}CSeq: 1 OPTIONS\r\n\r\n"
            )),
            WireError::CSeqMethodMismatch
        );
        assert_eq!(
            err(&format!(
                "INVITE sip:x SIP/2.0\r\n{BASE}CSeq: 2147483648 INVITE\r\n\r\n"
            )),
            WireError::BadHeader("CSeq", "sequence number not below 2^31")
        );
        assert_eq!(
            err(&format!(
                "INVITE sip:x SIP/2.0\r\n{BASE}CSeq: 1 INVITE\r\nMax-Forwards: 256\r\n\r\n"
            )),
            WireError::BadHeader("Max-Forwards", "above 255")
        );
        assert_eq!(
            err(&format!(
                "INVITE sip:x SIP/2.0\r\n{BASE}CSeq: 1 INVITE\r\nCall-ID: d\r\n\r\n"
            )),
            WireError::Duplicate("Call-ID")
        );
        assert_eq!(
            err("INVITE sip:x SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n"),
            WireError::Missing("From")
        );
        assert_eq!(
            err(&format!(
                "INVITE sip:x SIP/7.0\r\n{BASE}CSeq: 1 INVITE\r\n\r\n"
            )),
            WireError::VersionNotSupported
        );
        assert!(matches!(
            err(&format!(
                "INVITE  sip:x SIP/2.0\r\n{BASE}CSeq: 1 INVITE\r\n\r\n"
            )),
            WireError::BadRequestUri(_)
        ));
        assert!(matches!(
            err(&format!(
                "INVITE <sip:x> SIP/2.0\r\n{BASE}CSeq: 1 INVITE\r\n\r\n"
            )),
            WireError::BadRequestUri(_)
        ));
    }

    #[test]
    fn extension_method_and_case() {
        let r = req(&format!(
            "invite sip:x SIP/2.0\r\n{BASE}CSeq: 1 invite\r\n\r\n"
        ));
        assert_eq!(r.method, Method::Extension("invite".into()));
    }

    /// §25.1: no %x00 in header text (400, named), except as a quoted-pair's escaped octet
    /// in a quoted string (RFC 4475 §3.1.1.2); a body may hold any octet.
    #[test]
    fn nul_in_header_value_refused_unless_escaped_in_quoted_string() {
        let with =
            |h: &str| format!("OPTIONS sip:x SIP/2.0\r\n{BASE}CSeq: 1 OPTIONS\r\n{h}\r\n\r\n");
        for h in [
            "Subject: a\0b",
            "Subject: \0",
            "User-Agent: phone (a\\\0)",
            "Contact: <sip:a\0@h>",
            "X-Folded: a\r\n \0b",
            "Contact: \"quoted \\\0\" <sip:a@h>, \0",
        ] {
            let e = err(&with(h));
            assert_eq!(e, WireError::NulInHeader, "{h:?}");
            assert_eq!(e.status(), 400);
            assert_eq!(e.reason(), "Bad Request (NUL octet in a header value)");
            assert_eq!(e.metric_reason(), "parse");
        }
        // NUL in To (a typed header) and in a header name.
        assert_eq!(
            err("OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: \"b\0\" <sip:b@x>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\r\n"),
            WireError::NulInHeader
        );
        assert_eq!(err(&with("X-A\0: v")), WireError::MalformedHeaderLine);
        // The quoted-pair `\<NUL>` in a quoted string is allowed, and survives a round trip.
        let r = req(&with("Contact: \"BEL:\\\u{7} NUL:\\\0\" <sip:a@h>"));
        assert_eq!(
            r.common.header("Contact"),
            Some("\"BEL:\\\u{7} NUL:\\\0\" <sip:a@h>")
        );
        let bytes = Message::Request(r.clone()).to_bytes();
        assert_eq!(req(std::str::from_utf8(&bytes).unwrap()), r);
        // A NUL in the body is no concern of the header section.
        let head = format!(
            "OPTIONS sip:x SIP/2.0\r\n{BASE}CSeq: 1 OPTIONS\r\nContent-Type: application/sdp\r\n"
        );
        let m = parse_message(head.as_bytes(), b"v=0\0\0").unwrap();
        assert_eq!(&m.common().body[..], b"v=0\0\0");
    }

    #[test]
    fn binary_body_is_byte_exact() {
        let head = format!("MESSAGE sip:x SIP/2.0\r\n{BASE}CSeq: 1 MESSAGE\r\nContent-Type: application/octet-stream\r\n");
        let body = [0u8, 0xff, 0xfe, 0x80, b'\r', b'\n'];
        let m = parse_message(head.as_bytes(), &body).unwrap();
        assert_eq!(&m.common().body[..], &body);
        let out = m.to_bytes();
        assert!(out.ends_with(&body));
    }

    #[test]
    fn round_trip() {
        let src = format!("INVITE sip:bob@example.com;transport=udp SIP/2.0\r\n{BASE}CSeq: 7 INVITE\r\nMax-Forwards: 70\r\nContact: \"A\" <sip:a@[::1]:5070>;expires=60\r\nContent-Length: 3\r\n\r\nabc");
        let a = req(&src);
        let bytes = Message::Request(a.clone()).to_bytes();
        let s = std::str::from_utf8(&bytes).unwrap();
        assert_eq!(req(s), a);
    }
}
