//! A small SIP REGISTER client for the tests: builds REGISTER requests, parses
//! `WWW-Authenticate` challenges and computes the digest response itself (RFC 7616 §3.4.1,
//! RFC 3261 §22.4), independently of the switch's `auth` module:
//!
//! HA1 = H(user:realm:password), HA2 = H(method:uri),
//! response = H(HA1:nonce:nc:cnonce:qop:HA2), lower-case hex.

use super::{host_port, status_of, tcp_connect, udp_client, ANSWER_DEADLINE};
use md5::Md5;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// A digest algorithm the client can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// `MD5` (RFC 2617, RFC 7616).
    Md5,
    /// `SHA-256` (RFC 7616, RFC 8760).
    Sha256,
}

impl Alg {
    /// The token of the `algorithm` parameter.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Md5 => "MD5",
            Alg::Sha256 => "SHA-256",
        }
    }

    /// `H(data)` as lower-case hex.
    pub fn hash(self, data: &str) -> String {
        match self {
            Alg::Md5 => hex(&Md5::digest(data.as_bytes())),
            Alg::Sha256 => hex(&Sha256::digest(data.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Everything a digest response is computed from.
#[derive(Debug, Clone)]
pub struct DigestInput<'a> {
    /// The hash.
    pub alg: Alg,
    /// username.
    pub user: &'a str,
    /// realm.
    pub realm: &'a str,
    /// The password in clear.
    pub password: &'a str,
    /// The request method.
    pub method: &'a str,
    /// The `uri` parameter (digest-uri).
    pub uri: &'a str,
    /// nonce.
    pub nonce: &'a str,
    /// nc, 8 hex digits.
    pub nc: &'a str,
    /// cnonce.
    pub cnonce: &'a str,
    /// qop (`auth`).
    pub qop: &'a str,
}

impl DigestInput<'_> {
    /// The `response` value.
    pub fn response(&self) -> String {
        let h = |s: String| self.alg.hash(&s);
        let ha1 = h(format!("{}:{}:{}", self.user, self.realm, self.password));
        let ha2 = h(format!("{}:{}", self.method, self.uri));
        h(format!(
            "{ha1}:{}:{}:{}:{}:{ha2}",
            self.nonce, self.nc, self.cnonce, self.qop
        ))
    }
}

/// One parsed `WWW-Authenticate: Digest …` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// realm.
    pub realm: String,
    /// nonce.
    pub nonce: String,
    /// opaque, when present.
    pub opaque: Option<String>,
    /// The algorithm token as written (`MD5` when absent).
    pub algorithm: String,
    /// qop as written (quoted list content), when present.
    pub qop: Option<String>,
    /// `stale=true`.
    pub stale: bool,
    /// Every auth-param, name lower-cased, value unquoted.
    pub params: Vec<(String, String)>,
    /// Whether each parameter was quoted (same order as `params`).
    pub quoted: Vec<bool>,
}

impl Challenge {
    /// The algorithm, if the client knows it.
    pub fn alg(&self) -> Option<Alg> {
        match self.algorithm.to_ascii_uppercase().as_str() {
            "MD5" => Some(Alg::Md5),
            "SHA-256" => Some(Alg::Sha256),
            _ => None,
        }
    }

    /// The value of auth-param `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether auth-param `name` was a quoted-string.
    pub fn is_quoted(&self, name: &str) -> bool {
        self.params
            .iter()
            .zip(&self.quoted)
            .any(|((n, _), q)| n.eq_ignore_ascii_case(name) && *q)
    }
}

/// Parses a `Digest` challenge (RFC 7616 §3.3); `None` for another scheme or bad syntax.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let v = value.trim();
    let (scheme, rest) = v.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let mut params = Vec::new();
    let mut quoted = Vec::new();
    let bytes = rest.as_bytes();
    let mut i = 0;
    // Each iteration consumes one `name=value` and its comma; bounded by the length.
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t' || bytes[i] == b',') {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' {
            i += 1;
        }
        let name = rest.get(start..i)?.trim().to_ascii_lowercase();
        i += 1; // '='
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'"' {
            i += 1;
            let mut val = String::new();
            let mut closed = false;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' if i + 1 < bytes.len() => {
                        val.push(char::from(bytes[i + 1]));
                        i += 2;
                    }
                    b'"' => {
                        i += 1;
                        closed = true;
                        break;
                    }
                    b => {
                        val.push(char::from(b));
                        i += 1;
                    }
                }
            }
            if !closed {
                return None;
            }
            params.push((name, val));
            quoted.push(true);
        } else {
            let start = i;
            while i < bytes.len() && bytes[i] != b',' {
                i += 1;
            }
            params.push((name, rest.get(start..i)?.trim().to_string()));
            quoted.push(false);
        }
    }
    let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    Some(Challenge {
        realm: get("realm")?,
        nonce: get("nonce")?,
        opaque: get("opaque"),
        algorithm: get("algorithm").unwrap_or_else(|| "MD5".into()),
        qop: get("qop"),
        stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        params,
        quoted,
    })
}

/// Every value of header `name` (or its compact form `compact`) in a message's head, in
/// order; comma-separated values in one line stay one value.
pub fn header_values<'a>(msg: &'a str, name: &str, compact: Option<&str>) -> Vec<&'a str> {
    msg.lines()
        .take_while(|l| !l.is_empty())
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| {
            let n = n.trim();
            n.eq_ignore_ascii_case(name) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c))
        })
        .map(|(_, v)| v.trim())
        .collect()
}

/// The Digest challenges of a 401, in header order.
pub fn challenges(resp: &str) -> Vec<Challenge> {
    header_values(resp, "WWW-Authenticate", None)
        .into_iter()
        .filter_map(parse_challenge)
        .collect()
}

/// One contact of a response: the URI inside `<>`, the header parameters after it
/// (without `expires`), and `expires`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactOf {
    /// The URI.
    pub uri: String,
    /// `;name=value` parameters other than expires, as written.
    pub params: String,
    /// The expires parameter.
    pub expires: Option<u64>,
}

/// Splits `s` at `sep` outside double quotes and angle brackets.
fn split_outside(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut start) = (false, false, 0);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            c if c == sep && !quoted && !angle => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// The Contact values of a response (long or compact `m`), each split into URI,
/// parameters and expires.
pub fn contacts_of(resp: &str) -> Vec<ContactOf> {
    let mut out = Vec::new();
    for line in header_values(resp, "Contact", Some("m")) {
        for v in split_outside(line, ',') {
            let v = v.trim();
            let (uri, rest) = match (v.find('<'), v.find('>')) {
                (Some(a), Some(b)) if a < b => (&v[a + 1..b], &v[b + 1..]),
                _ => match v.split_once(';') {
                    Some((u, r)) => (u, &v[u.len()..][..r.len() + 1]),
                    None => (v, ""),
                },
            };
            let mut params = String::new();
            let mut expires = None;
            for p in split_outside(rest, ';').into_iter().skip(1) {
                let p = p.trim();
                match p.split_once('=') {
                    Some((n, e)) if n.trim().eq_ignore_ascii_case("expires") => {
                        expires = e.trim().parse().ok();
                    }
                    _ => {
                        params.push(';');
                        params.push_str(p);
                    }
                }
            }
            out.push(ContactOf {
                uri: uri.to_string(),
                params,
                expires,
            });
        }
    }
    out
}

/// How the client reaches the switch.
pub enum Conn {
    /// A UDP socket (responses come back to it, RFC 3581).
    Udp(UdpSocket),
    /// A TCP connection and the bytes read but not yet framed.
    Tcp(TcpStream, Vec<u8>),
}

/// A phone that registers: its AOR, credentials, dialog-less REGISTER state (Call-ID,
/// CSeq, §10.2.4) and digest state (the challenge answered, the nonce count).
pub struct RegClient {
    /// The connection.
    pub conn: Conn,
    /// The switch's listener.
    pub switch: SocketAddr,
    /// Our local address (Via sent-by, default Contact).
    pub local: SocketAddr,
    /// The digest username.
    pub user: String,
    /// The digest password.
    pub password: String,
    /// The user part of the To/From AOR.
    pub aor_user: String,
    /// The AOR's domain.
    pub aor_domain: String,
    /// The domain (Request-URI host, realm).
    pub domain: String,
    /// The Call-ID of every REGISTER (§10.2.4: the same for all of them).
    pub call_id: String,
    /// The From tag.
    pub from_tag: String,
    /// The CSeq number of the last request built.
    pub cseq: u32,
    /// The algorithm answered.
    pub alg: Alg,
    /// The challenge being answered.
    pub challenge: Option<Challenge>,
    /// The nonce count of the last Authorization built for `challenge`.
    pub nc: u32,
    /// Our cnonce.
    pub cnonce: String,
    /// Write header names in compact form (RFC 3261 §7.3.3).
    pub compact: bool,
    /// User-Agent.
    pub user_agent: String,
    /// The last request built.
    pub last_request: String,
    /// The last 401 seen by [`RegClient::register`].
    pub last_challenge_response: Option<String>,
}

/// A random token of 16 hex digits.
pub fn token() -> String {
    use std::hash::BuildHasher;
    let n = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    format!("{n:016x}")
}

impl RegClient {
    fn new(conn: Conn, switch: SocketAddr, local: SocketAddr, user: &str, pw: &str) -> Self {
        RegClient {
            conn,
            switch,
            local,
            user: user.into(),
            password: pw.into(),
            aor_user: user.into(),
            aor_domain: "example.test".into(),
            domain: "example.test".into(),
            call_id: format!("{}@client.test", token()),
            from_tag: token(),
            cseq: 0,
            // The switch's default challenge is MD5 alone.
            alg: Alg::Md5,
            challenge: None,
            nc: 0,
            cnonce: token(),
            compact: false,
            user_agent: "e2e-registrar/1.0".into(),
            last_request: String::new(),
            last_challenge_response: None,
        }
    }

    /// A client over UDP to `switch`.
    pub fn udp(switch: SocketAddr, user: &str, password: &str) -> RegClient {
        let s = udp_client(switch);
        let local = s.local_addr().expect("local addr");
        RegClient::new(Conn::Udp(s), switch, local, user, password)
    }

    /// A client over UDP to `switch` from `ip` (any 127.0.0.0/8 address: the switch's
    /// failure limit counts per source address).
    pub fn udp_from(switch: SocketAddr, ip: &str, user: &str, password: &str) -> RegClient {
        let s = UdpSocket::bind((ip, 0)).expect("bind a loopback address");
        let local = s.local_addr().expect("local addr");
        RegClient::new(Conn::Udp(s), switch, local, user, password)
    }

    /// A client over a TCP connection to `switch`.
    pub fn tcp(switch: SocketAddr, user: &str, password: &str) -> RegClient {
        let s = tcp_connect(switch);
        let local = s.local_addr().expect("local addr");
        RegClient::new(Conn::Tcp(s, Vec::new()), switch, local, user, password)
    }

    /// `UDP` or `TCP`.
    pub fn transport(&self) -> &'static str {
        match self.conn {
            Conn::Udp(_) => "UDP",
            Conn::Tcp(..) => "TCP",
        }
    }

    /// The Request-URI (and digest-uri).
    pub fn ruri(&self) -> String {
        format!("sip:{}", self.domain)
    }

    /// The default contact URI: `sip:<aor user>@<local address>` (plus `transport=tcp`).
    pub fn contact_uri(&self) -> String {
        let t = match self.conn {
            Conn::Udp(_) => "",
            Conn::Tcp(..) => ";transport=tcp",
        };
        format!("sip:{}@{}{t}", self.aor_user, host_port(self.local))
    }

    /// The default Contact header value.
    pub fn contact(&self) -> String {
        format!("<{}>", self.contact_uri())
    }

    /// The Authorization value answering `ch` with nonce count `nc`.
    pub fn authorization(&self, ch: &Challenge, nc: u32) -> String {
        let alg = ch.alg().unwrap_or(self.alg);
        let nc = format!("{nc:08x}");
        let uri = self.ruri();
        let response = DigestInput {
            alg,
            user: &self.user,
            realm: &ch.realm,
            password: &self.password,
            method: "REGISTER",
            uri: &uri,
            nonce: &ch.nonce,
            nc: &nc,
            cnonce: &self.cnonce,
            qop: "auth",
        }
        .response();
        let mut v = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}",
            self.user,
            ch.realm,
            ch.nonce,
            alg.name()
        );
        if let Some(o) = &ch.opaque {
            v.push_str(&format!(", opaque=\"{o}\""));
        }
        v.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{}\"", self.cnonce));
        v
    }

    /// Takes the challenge for our algorithm from a 401 and restarts the nonce count.
    /// Panics when the 401 has none.
    pub fn take_challenge(&mut self, resp: &str) -> Challenge {
        let ch = challenges(resp)
            .into_iter()
            .find(|c| c.alg() == Some(self.alg))
            .unwrap_or_else(|| panic!("no {} challenge in\n{resp}", self.alg.name()));
        self.challenge = Some(ch.clone());
        self.nc = 0;
        ch
    }

    /// Builds the next REGISTER: CSeq + 1, a fresh branch, the given Contact values and
    /// extra header lines, and an Authorization for the current challenge (nonce count
    /// + 1) when there is one.
    pub fn request(&mut self, contacts: &[&str], extra: &[&str]) -> String {
        self.cseq += 1;
        let auth = match self.challenge.clone() {
            Some(ch) => {
                self.nc += 1;
                Some(self.authorization(&ch, self.nc))
            }
            None => None,
        };
        let c = self.compact;
        let n = |long: &'static str, short: &'static str| if c { short } else { long };
        let aor = format!("sip:{}@{}", self.aor_user, self.aor_domain);
        let mut s = format!(
            "REGISTER {} SIP/2.0\r\n{}: SIP/2.0/{} {};branch=z9hG4bK{};rport\r\nMax-Forwards: 70\r\n{}: <{aor}>;tag={}\r\n{}: <{aor}>\r\n{}: {}\r\nCSeq: {} REGISTER\r\nUser-Agent: {}\r\n",
            self.ruri(),
            n("Via", "v"),
            self.transport(),
            host_port(self.local),
            token(),
            n("From", "f"),
            self.from_tag,
            n("To", "t"),
            n("Call-ID", "i"),
            self.call_id,
            self.cseq,
            self.user_agent,
        );
        for ct in contacts {
            s.push_str(&format!("{}: {ct}\r\n", n("Contact", "m")));
        }
        for h in extra {
            s.push_str(h);
            s.push_str("\r\n");
        }
        if let Some(a) = auth {
            s.push_str(&format!("Authorization: {a}\r\n"));
        }
        s.push_str(&format!("{}: 0\r\n\r\n", n("Content-Length", "l")));
        self.last_request = s.clone();
        s
    }

    /// Sends raw bytes and returns the final response (panics without one within
    /// [`ANSWER_DEADLINE`]).
    pub fn send(&mut self, msg: &str) -> String {
        self.send_within(msg, ANSWER_DEADLINE)
            .unwrap_or_else(|| panic!("no final response within {ANSWER_DEADLINE:?} to\n{msg}"))
    }

    /// Sends raw bytes and waits up to `deadline` for a final response.
    pub fn send_within(&mut self, msg: &str, deadline: Duration) -> Option<String> {
        match &mut self.conn {
            Conn::Udp(s) => {
                s.send_to(msg.as_bytes(), self.switch).expect("udp send");
            }
            Conn::Tcp(s, _) => s.write_all(msg.as_bytes()).expect("tcp send"),
        }
        self.recv_final(deadline)
    }

    /// Waits up to `deadline` for the next final response.
    pub fn recv_final(&mut self, deadline: Duration) -> Option<String> {
        let end = Instant::now() + deadline;
        // Each pass reads one datagram or one TCP chunk; bounded by the deadline.
        while Instant::now() < end {
            let left = end
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let msg = match &mut self.conn {
                Conn::Udp(s) => {
                    s.set_read_timeout(Some(left)).expect("timeout");
                    let mut buf = vec![0u8; 65_535];
                    match s.recv_from(&mut buf) {
                        Ok((n, _)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
                        Err(_) => return None,
                    }
                }
                Conn::Tcp(s, buf) => match take_message(buf) {
                    Some(m) => Some(m),
                    None => {
                        s.set_read_timeout(Some(left)).expect("timeout");
                        let mut chunk = [0u8; 8192];
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return None,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        take_message(buf)
                    }
                },
            };
            if let Some(m) = msg {
                if status_of(&m).is_some_and(|c| c >= 200) {
                    return Some(m);
                }
            }
        }
        None
    }

    /// Sends [`RegClient::request`] and, on a 401, answers the challenge once (keeping
    /// the 401 in `last_challenge_response`). Returns the final response.
    pub fn register(&mut self, contacts: &[&str], extra: &[&str]) -> String {
        let req = self.request(contacts, extra);
        let resp = self.send(&req);
        if status_of(&resp) != Some(401) {
            return resp;
        }
        self.take_challenge(&resp);
        self.last_challenge_response = Some(resp);
        let req = self.request(contacts, extra);
        self.send(&req)
    }
}

/// Takes one complete message (by Content-Length, long or compact) off the front of a
/// TCP buffer; leading CRLFs (keep-alive pongs) are skipped.
fn take_message(buf: &mut Vec<u8>) -> Option<String> {
    let lead = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    buf.drain(..lead);
    let end_head = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end_head]).into_owned();
    let cl: usize = header_values(&head, "Content-Length", Some("l"))
        .first()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let total = end_head + 4 + cl;
    if buf.len() < total {
        return None;
    }
    let msg = String::from_utf8_lossy(&buf[..total]).into_owned();
    buf.drain(..total);
    Some(msg)
}
