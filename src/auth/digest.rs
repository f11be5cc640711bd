//! Digest algorithms, stored credentials, the credentials-header parser and the response
//! computation (RFC 3261 §22.4 and §25.1 `credentials`; RFC 7616 §3.4, §3.4.1, §3.4.2;
//! RFC 8760 §2 for SHA-256 and SHA-512/256 in SIP).
//!
//! Only `qop=auth` and the non-`-sess` algorithms are implemented: we never offer
//! `auth-int` or a `-sess` variant, so a client that answers with one is refused by the
//! caller ([`super::Authenticator::verify`]). The parser is total: any input yields a
//! value or a `ParseError`, never a panic.

use std::fmt;
use std::str::FromStr;

use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};

/// A digest hash algorithm (RFC 7616 §3.2; RFC 8760 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5` (RFC 2617 compatibility; still what most phones use).
    Md5,
    /// `SHA-256`.
    Sha256,
    /// `SHA-512-256`: SHA-512/256 (FIPS 180-4).
    Sha512_256,
}

impl Algorithm {
    /// Every algorithm, strongest first.
    pub const ALL: [Algorithm; 3] = [Algorithm::Sha512_256, Algorithm::Sha256, Algorithm::Md5];

    /// The token used in the `algorithm` auth-param.
    pub fn as_str(&self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha512_256 => "SHA-512-256",
        }
    }

    /// The length of a hash in hex digits.
    pub(crate) fn hex_len(self) -> usize {
        match self {
            Algorithm::Md5 => 32,
            Algorithm::Sha256 | Algorithm::Sha512_256 => 64,
        }
    }

    /// `H(data)` as lower-case hex (RFC 7616 §3.4.1 writes every hash in hex).
    pub(crate) fn hash_hex(self, data: &[u8]) -> String {
        match self {
            Algorithm::Md5 => to_hex(&Md5::digest(data)),
            Algorithm::Sha256 => to_hex(&Sha256::digest(data)),
            Algorithm::Sha512_256 => to_hex(&Sha512_256::digest(data)),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = String;

    /// Parses `MD5`, `SHA-256`, `SHA-512-256` case-insensitively. The `-sess` variants
    /// are not supported and are an error.
    fn from_str(s: &str) -> Result<Algorithm, String> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| "unsupported digest algorithm".to_string())
    }
}

/// An ordered list of algorithms, each at most once, most preferred first: what a
/// challenge offers, one `WWW-Authenticate` / `Proxy-Authenticate` value each, in this
/// order (RFC 7616 §3.7, RFC 8760 §2.4). `Copy`, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Algorithms {
    list: [Algorithm; 3],
    len: usize,
}

impl Algorithms {
    /// `algs` in their order, later duplicates dropped.
    pub fn new(algs: impl IntoIterator<Item = Algorithm>) -> Algorithms {
        let mut out = Algorithms {
            list: [Algorithm::Md5; 3],
            len: 0,
        };
        for a in algs {
            if !out.contains(a) && out.len < out.list.len() {
                out.list[out.len] = a;
                out.len += 1;
            }
        }
        out
    }

    /// The algorithms in order.
    pub fn iter(&self) -> impl Iterator<Item = Algorithm> + '_ {
        self.list.iter().take(self.len).copied()
    }

    /// Whether `alg` is in the list.
    pub fn contains(&self, alg: Algorithm) -> bool {
        self.iter().any(|a| a == alg)
    }

    /// True when the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The list without `alg`; the whole list when `alg` is all it holds.
    pub fn without(&self, alg: Algorithm) -> Algorithms {
        let rest = Algorithms::new(self.iter().filter(|a| *a != alg));
        if rest.is_empty() {
            *self
        } else {
            rest
        }
    }
}

/// What we store for a user: HA1 = H(username ":" realm ":" password) per algorithm
/// (RFC 7616 §3.4.2), lower-case hex, and optionally the user's own challenge list.
/// HA1 is bound to one username and realm; the caller keeps it with the right ones.
/// `Debug` never prints the values.
#[derive(Clone)]
pub struct Credentials {
    md5: Option<String>,
    sha256: Option<String>,
    sha512_256: Option<String>,
    /// The user's own challenge list (`[[users]] algorithms`), instead of the
    /// deployment's; `None` for the deployment's.
    offer: Option<Algorithms>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

impl Credentials {
    /// HA1 for all three algorithms from a clear-text password.
    pub fn from_password(user: &str, realm: &str, password: &str) -> Credentials {
        let a1 = format!("{user}:{realm}:{password}");
        Credentials {
            md5: Some(Algorithm::Md5.hash_hex(a1.as_bytes())),
            sha256: Some(Algorithm::Sha256.hash_hex(a1.as_bytes())),
            sha512_256: Some(Algorithm::Sha512_256.hash_hex(a1.as_bytes())),
            offer: None,
        }
    }

    /// A stored MD5 HA1 (32 hex digits, any case): supports MD5 only.
    pub fn from_ha1_md5(hex: &str) -> Result<Credentials, String> {
        Ok(Credentials {
            md5: Some(check_ha1(hex, Algorithm::Md5)?),
            sha256: None,
            sha512_256: None,
            offer: None,
        })
    }

    /// Adds a stored SHA-256 HA1 (64 hex digits).
    pub fn with_ha1_sha256(self, hex: &str) -> Result<Credentials, String> {
        Ok(Credentials {
            sha256: Some(check_ha1(hex, Algorithm::Sha256)?),
            ..self
        })
    }

    /// Adds a stored SHA-512-256 HA1 (64 hex digits).
    pub fn with_ha1_sha512_256(self, hex: &str) -> Result<Credentials, String> {
        Ok(Credentials {
            sha512_256: Some(check_ha1(hex, Algorithm::Sha512_256)?),
            ..self
        })
    }

    /// Gives the user a challenge list of their own, used instead of the deployment's.
    /// Every algorithm in it needs a stored HA1, and it may not be empty.
    pub fn with_algorithms(self, offer: Algorithms) -> Result<Credentials, String> {
        if offer.is_empty() {
            return Err("name at least one algorithm".to_string());
        }
        if let Some(a) = offer.iter().find(|a| !self.supports(*a)) {
            return Err(format!(
                "{} needs a password{}",
                a.as_str(),
                match a {
                    Algorithm::Md5 => " or ha1",
                    Algorithm::Sha256 => " or ha1_sha256",
                    Algorithm::Sha512_256 => "",
                }
            ));
        }
        Ok(Credentials {
            offer: Some(offer),
            ..self
        })
    }

    /// The user's own challenge list, if they have one.
    pub fn algorithms(&self) -> Option<Algorithms> {
        self.offer
    }

    /// Whether an HA1 for `alg` is stored.
    pub fn supports(&self, alg: Algorithm) -> bool {
        self.ha1(alg).is_some()
    }

    /// The HA1 for `alg`, lower-case hex.
    pub(crate) fn ha1(&self, alg: Algorithm) -> Option<&str> {
        match alg {
            Algorithm::Md5 => self.md5.as_deref(),
            Algorithm::Sha256 => self.sha256.as_deref(),
            Algorithm::Sha512_256 => self.sha512_256.as_deref(),
        }
    }
}

/// Validates and lower-cases a stored HA1. The error never contains the value.
fn check_ha1(hex: &str, alg: Algorithm) -> Result<String, String> {
    let want = alg.hex_len();
    if hex.len() == want && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(format!("{} HA1 must be {want} hex digits", alg.as_str()))
    }
}

/// The response of RFC 7616 §3.4.1 with `qop=auth`:
/// `H(HA1 ":" nonce ":" nc ":" cnonce ":" qop ":" H(method ":" uri))`, lower-case hex.
/// Every string is used as the client sent it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn compute_response(
    alg: Algorithm,
    ha1: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
    qop: &str,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = alg.hash_hex(format!("{method}:{uri}").as_bytes());
    alg.hash_hex(format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}").as_bytes())
}

/// Lower-case hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Decodes hex (either case) into exactly `N` bytes.
pub(crate) fn from_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (slot, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        let (hi, lo) = match pair {
            [hi, lo] => (nibble(*hi)?, nibble(*lo)?),
            _ => return None,
        };
        *slot = hi << 4 | lo;
    }
    Some(out)
}

/// The `qop`, `cnonce` and `nc` of a response that named a qop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QopParams {
    /// The qop value as sent (we accept only `auth`, compared case-insensitively).
    pub qop: String,
    /// The client nonce.
    pub cnonce: String,
    /// The nonce count as sent: exactly 8 hex digits.
    pub nc: String,
    /// `nc` as a number.
    pub nc_value: u32,
}

/// A parsed `Digest` credentials value (RFC 3261 §25.1 `digest-response`,
/// RFC 7616 §3.4) with the required parameters present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DigestResponse {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    /// The `algorithm` value as sent; `None` means MD5 (RFC 7616 §3.4).
    pub algorithm: Option<String>,
    pub opaque: Option<String>,
    /// `None` when the client sent no `qop` (RFC 2069 style).
    pub qop: Option<QopParams>,
}

/// Why a credentials value was not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// Another scheme (e.g. `Basic`): not ours to judge, skip it.
    NotDigest,
    /// A `Digest` value that breaks the grammar, repeats a parameter, or lacks a
    /// required one.
    Malformed,
}

/// Parses one Authorization / Proxy-Authorization value.
///
/// Grammar (RFC 3261 §25.1): `"Digest" LWS dig-resp *(COMMA dig-resp)`, each `dig-resp`
/// a `name EQUAL (token / quoted-string)`. Names are case-insensitive; unknown parameters
/// are ignored; a repeated known parameter is malformed. Empty list elements (`,,`) are
/// tolerated. Required: username, realm, nonce, uri, response; with qop also cnonce and
/// an 8-hex-digit nc.
pub(crate) fn parse_credentials(value: &str) -> Result<DigestResponse, ParseError> {
    let mut cur = Cursor::new(value);
    cur.skip_lws();
    let scheme = cur.token().ok_or(ParseError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(ParseError::NotDigest);
    }
    if !cur.skip_lws() {
        // "Digest" must be followed by LWS and at least one parameter.
        return Err(ParseError::Malformed);
    }
    let mut raw = RawParams::default();
    loop {
        cur.skip_lws();
        match cur.peek() {
            None => break,
            Some(b',') => {
                cur.bump();
                continue;
            }
            Some(_) => {}
        }
        let name = cur.token().ok_or(ParseError::Malformed)?;
        cur.skip_lws();
        if cur.peek() != Some(b'=') {
            return Err(ParseError::Malformed);
        }
        cur.bump();
        cur.skip_lws();
        let val = if cur.peek() == Some(b'"') {
            cur.quoted_string().ok_or(ParseError::Malformed)?
        } else {
            cur.token().ok_or(ParseError::Malformed)?.to_string()
        };
        raw.set(name, val)?;
        cur.skip_lws();
        match cur.peek() {
            None => break,
            Some(b',') => cur.bump(),
            Some(_) => return Err(ParseError::Malformed),
        }
    }
    raw.finish()
}

/// The parameters as found, before the required ones are checked.
#[derive(Default)]
struct RawParams {
    username: Option<String>,
    realm: Option<String>,
    nonce: Option<String>,
    uri: Option<String>,
    response: Option<String>,
    algorithm: Option<String>,
    cnonce: Option<String>,
    opaque: Option<String>,
    qop: Option<String>,
    nc: Option<String>,
}

impl RawParams {
    fn set(&mut self, name: &str, value: String) -> Result<(), ParseError> {
        const NAMES: [&str; 10] = [
            "username",
            "realm",
            "nonce",
            "uri",
            "response",
            "algorithm",
            "cnonce",
            "opaque",
            "qop",
            "nc",
        ];
        let Some(idx) = NAMES.iter().position(|n| n.eq_ignore_ascii_case(name)) else {
            return Ok(()); // an extension parameter: ignored (RFC 7616 §3.4)
        };
        let slot = match idx {
            0 => &mut self.username,
            1 => &mut self.realm,
            2 => &mut self.nonce,
            3 => &mut self.uri,
            4 => &mut self.response,
            5 => &mut self.algorithm,
            6 => &mut self.cnonce,
            7 => &mut self.opaque,
            8 => &mut self.qop,
            _ => &mut self.nc,
        };
        if slot.is_some() {
            return Err(ParseError::Malformed);
        }
        *slot = Some(value);
        Ok(())
    }

    fn finish(self) -> Result<DigestResponse, ParseError> {
        let need = |v: Option<String>| v.ok_or(ParseError::Malformed);
        let qop = match self.qop {
            None => None,
            Some(qop) => {
                let cnonce = need(self.cnonce)?;
                let nc = need(self.nc)?;
                if nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ParseError::Malformed);
                }
                let nc_value = u32::from_str_radix(&nc, 16).map_err(|_| ParseError::Malformed)?;
                Some(QopParams {
                    qop,
                    cnonce,
                    nc,
                    nc_value,
                })
            }
        };
        Ok(DigestResponse {
            username: need(self.username)?,
            realm: need(self.realm)?,
            nonce: need(self.nonce)?,
            uri: need(self.uri)?,
            response: need(self.response)?,
            algorithm: self.algorithm,
            opaque: self.opaque,
            qop,
        })
    }
}

/// A byte cursor over the header value; every access is bounds-checked.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Cursor<'a> {
        Cursor { text, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn bump(&mut self) {
        self.pos += 1;
    }

    /// Skips LWS (SP, HTAB and the CR/LF of folding); true if anything was skipped.
    fn skip_lws(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.bump();
        }
        self.pos > start
    }

    /// A `token` (RFC 3261 §25.1): one or more of alphanum and `-.!%*_+`'~`.
    fn token(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while matches!(self.peek(), Some(b) if b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
        {
            self.bump();
        }
        if self.pos == start {
            return None;
        }
        self.text.get(start..self.pos)
    }

    /// A `quoted-string` starting at its opening `"`, unescaped. Control characters
    /// other than HTAB and the CR/LF of folding are refused, as is a missing closing quote.
    fn quoted_string(&mut self) -> Option<String> {
        if self.peek() != Some(b'"') {
            return None;
        }
        self.bump();
        let mut out = String::new();
        let rest = self.text.get(self.pos..)?;
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Some(out);
                }
                '\\' => {
                    // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
                    let (_, e) = chars.next()?;
                    if !e.is_ascii() || e == '\r' || e == '\n' {
                        return None;
                    }
                    out.push(e);
                }
                '\t' | '\r' | '\n' => out.push(c),
                c if c.is_ascii_control() => return None,
                c => out.push(c),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    fn rfc7616_response(alg: Algorithm) -> String {
        let creds = Credentials::from_password("Mufasa", "http-auth@example.org", "Circle of Life");
        let ha1 = creds.ha1(alg).unwrap_or_default().to_string();
        compute_response(
            alg,
            &ha1,
            NONCE,
            "00000001",
            CNONCE,
            "auth",
            "GET",
            "/dir/index.html",
        )
    }

    #[test]
    fn rfc7616_example_md5() {
        // RFC 7616 §3.9.1
        assert_eq!(
            rfc7616_response(Algorithm::Md5),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
    }

    #[test]
    fn rfc7616_example_sha256() {
        // RFC 7616 §3.9.1
        assert_eq!(
            rfc7616_response(Algorithm::Sha256),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn sha512_256_is_the_fips_truncated_variant() {
        // FIPS 180-4 / NIST example: SHA-512/256("abc").
        assert_eq!(
            Algorithm::Sha512_256.hash_hex(b"abc"),
            "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
        );
        assert_eq!(rfc7616_response(Algorithm::Sha512_256).len(), 64);
    }

    #[test]
    fn algorithm_names() {
        for a in Algorithm::ALL {
            assert_eq!(a.as_str().parse::<Algorithm>(), Ok(a));
            assert_eq!(a.as_str().to_lowercase().parse::<Algorithm>(), Ok(a));
        }
        assert!("MD5-sess".parse::<Algorithm>().is_err());
        assert!("SHA-256-sess".parse::<Algorithm>().is_err());
        assert!("".parse::<Algorithm>().is_err());
    }

    #[test]
    fn ha1_import() {
        let pw = Credentials::from_password("alice", "example.test", "secret");
        let md5 = pw.ha1(Algorithm::Md5).unwrap_or_default().to_uppercase();
        let c = Credentials::from_ha1_md5(&md5).expect("valid hex");
        assert!(c.supports(Algorithm::Md5));
        assert!(!c.supports(Algorithm::Sha256));
        assert_eq!(c.ha1(Algorithm::Md5), pw.ha1(Algorithm::Md5));
        let sha = pw.ha1(Algorithm::Sha256).unwrap_or_default();
        let c = c.with_ha1_sha256(sha).expect("valid hex");
        assert!(c.supports(Algorithm::Sha256));
        assert!(!c.supports(Algorithm::Sha512_256));

        let bad = "zz".repeat(16);
        let err = Credentials::from_ha1_md5(&bad).expect_err("not hex");
        assert!(!err.contains(&bad));
        assert!(Credentials::from_ha1_md5(&md5[..31]).is_err());
        assert!(Credentials::from_ha1_md5("").is_err());
        assert!(Credentials::from_ha1_md5(&"é".repeat(16)).is_err());
        assert!(Credentials::from_ha1_md5(&md5)
            .and_then(|c| c.with_ha1_sha256(&md5))
            .is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let c = Credentials::from_password("alice", "example.test", "hunter2");
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("hunter2"));
        for a in Algorithm::ALL {
            let ha1 = c.ha1(a).unwrap_or_default();
            assert!(!shown.contains(ha1));
        }
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn hex_round_trip() {
        let bytes = [0u8, 1, 0x7f, 0x80, 0xfe, 0xff];
        let hex = to_hex(&bytes);
        assert_eq!(hex, "00017f80feff");
        assert_eq!(from_hex::<6>(&hex), Some(bytes));
        assert_eq!(from_hex::<6>(&hex.to_uppercase()), Some(bytes));
        assert_eq!(from_hex::<6>("00017f80fef"), None);
        assert_eq!(from_hex::<6>("00017f80fefg"), None);
        assert_eq!(from_hex::<2>("ééé"), None);
    }

    const FULL: &str = "Digest username=\"alice\", realm=\"example.test\", \
        nonce=\"abc\", uri=\"sip:example.test\", response=\"0123\", algorithm=SHA-256, \
        cnonce=\"xyz\", opaque=\"op\", qop=auth, nc=00000001";

    #[test]
    fn parses_a_full_response() {
        let r = parse_credentials(FULL).expect("valid");
        assert_eq!(r.username, "alice");
        assert_eq!(r.realm, "example.test");
        assert_eq!(r.nonce, "abc");
        assert_eq!(r.uri, "sip:example.test");
        assert_eq!(r.response, "0123");
        assert_eq!(r.algorithm.as_deref(), Some("SHA-256"));
        assert_eq!(r.opaque.as_deref(), Some("op"));
        let q = r.qop.expect("qop");
        assert_eq!(
            (q.qop.as_str(), q.cnonce.as_str(), q.nc_value),
            ("auth", "xyz", 1)
        );
    }

    #[test]
    fn parser_syntax_variants() {
        // scheme and names case-insensitive, LWS around '=' and ',', folding, escapes,
        // commas inside quotes, unknown params ignored, quoted qop/nc accepted.
        let v = "  dIGEST\r\n USERNAME = \"a\\\"l,ice\" ,REALM=\"r\",\tnonce=\"n\",uri=\"u\",\
                 response=\"x\",qop=\"auth\",nc=\"0000000A\",cnonce=c,foo=bar,baz=\"q\" ";
        let r = parse_credentials(v).expect("valid");
        assert_eq!(r.username, "a\"l,ice");
        assert_eq!(r.realm, "r");
        assert_eq!(r.qop.map(|q| q.nc_value), Some(10));
        // no qop: cnonce/nc not required
        let r =
            parse_credentials("Digest username=a,realm=r,nonce=n,uri=u,response=x").expect("valid");
        assert_eq!(r.qop, None);
        assert_eq!(r.algorithm, None);
    }

    #[test]
    fn parser_refusals() {
        use ParseError::*;
        let cases: &[(&str, ParseError)] = &[
            ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", NotDigest),
            ("", Malformed),
            ("Digest", Malformed),
            ("Digest ", Malformed),
            ("\"Digest\" username=a", Malformed),
            ("Digest username=\"a\"", Malformed),
            (
                "Digest username=\"a\", username=\"b\", realm=r,nonce=n,uri=u,response=x",
                Malformed,
            ),
            (
                "Digest username=a realm=r,nonce=n,uri=u,response=x",
                Malformed,
            ),
            (
                "Digest username=\"a,realm=r,nonce=n,uri=u,response=x",
                Malformed,
            ),
            (
                "Digest username=,realm=r,nonce=n,uri=u,response=x",
                Malformed,
            ),
            ("Digest =a,realm=r,nonce=n,uri=u,response=x", Malformed),
            (
                "Digest username=a,realm=r,nonce=n,uri=u,response=x,qop=auth",
                Malformed,
            ),
            (
                "Digest username=a,realm=r,nonce=n,uri=u,response=x,qop=auth,cnonce=c,nc=1",
                Malformed,
            ),
            (
                "Digest username=a,realm=r,nonce=n,uri=u,response=x,qop=auth,cnonce=c,nc=0000000g",
                Malformed,
            ),
            (
                "Digest username=a,realm=r,nonce=n,uri=u,response=x,qop=auth,cnonce=c,nc=+0000001",
                Malformed,
            ),
            (
                "Digest username=\"a\u{1}\",realm=r,nonce=n,uri=u,response=x",
                Malformed,
            ),
            ("Digest username=\"a\\", Malformed),
            (
                "Digest username=\"a\\é\",realm=r,nonce=n,uri=u,response=x",
                Malformed,
            ),
            (
                "Digest username=a;realm=r,nonce=n,uri=u,response=x",
                Malformed,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_credentials(input), Err(*want), "{input:?}");
        }
    }

    #[test]
    fn parser_never_panics_on_truncation_or_mutation() {
        let full = format!("{FULL}, extra=\"é ünïcode \\\" x\"");
        let bytes = full.as_bytes();
        for end in 0..=bytes.len() {
            if let Some(prefix) = full.get(..end) {
                let _ = parse_credentials(prefix);
            }
            if let Some(suffix) = full.get(end..) {
                let _ = parse_credentials(suffix);
            }
        }
        let specials = [
            b'"', b'\\', b',', b'=', b' ', b'\r', b'\n', 0, 0x7f, b'\t', b'a',
        ];
        for i in 0..bytes.len() {
            for &s in &specials {
                let mut m = bytes.to_vec();
                if let Some(slot) = m.get_mut(i) {
                    *slot = s;
                }
                if let Ok(text) = std::str::from_utf8(&m) {
                    let _ = parse_credentials(text);
                }
                let mut ins = bytes.to_vec();
                ins.insert(i, s);
                if let Ok(text) = std::str::from_utf8(&ins) {
                    let _ = parse_credentials(text);
                }
            }
            let mut del = bytes.to_vec();
            del.remove(i);
            if let Ok(text) = std::str::from_utf8(&del) {
                let _ = parse_credentials(text);
            }
        }
        // pathological sizes
        let _ = parse_credentials(&"Digest ".repeat(10_000));
        let _ = parse_credentials(&format!("Digest a=\"{}", "\\".repeat(10_001)));
        let _ = parse_credentials(&format!("Digest {}", ",".repeat(10_000)));
    }
}
