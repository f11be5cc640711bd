//! URI, host and parameter parsing (RFC 3261 §19.1, §25.1; RFC 3966; RFC 5118).
//!
//! Written here rather than through rsip 0.4: rsip fails on IPv6 references in URIs
//! (`[2001:db8::10]:5070`), on `tel:` URIs and on URI headers, and it has no model for
//! non-SIP schemes. User parts are kept escaped as written (`john.doe`, `null-%00-null`,
//! `user;par=u%40example.net`), and the first `@` ends the userinfo: `@` is not allowed
//! unescaped in URI parameters or headers, so that split is unambiguous.

use super::types::{Host, HostPort, Param, SipUri, TelUri, Uri};
use std::net::{Ipv4Addr, Ipv6Addr};

/// A URI that cannot be parsed; the message names the part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UriError(pub &'static str);

/// Parses a URI as written in a Request-URI or between `<` and `>`.
pub fn parse_uri(s: &str) -> Result<Uri, UriError> {
    if s.is_empty() {
        return Err(UriError("empty URI"));
    }
    if s.bytes()
        .any(|b| b <= b' ' || b == 0x7f || b == b'<' || b == b'>' || b == b'"')
    {
        return Err(UriError("illegal character in URI"));
    }
    let colon = s.find(':').ok_or(UriError("URI without scheme"))?;
    let scheme = &s[..colon];
    let rest = &s[colon + 1..];
    if !is_scheme(scheme) {
        return Err(UriError("bad URI scheme"));
    }
    if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
        parse_sip(scheme.eq_ignore_ascii_case("sips"), rest).map(Uri::Sip)
    } else if scheme.eq_ignore_ascii_case("tel") {
        parse_tel(rest).map(Uri::Tel)
    } else {
        if rest.is_empty() {
            return Err(UriError("empty URI after scheme"));
        }
        Ok(Uri::Other {
            scheme: scheme.to_ascii_lowercase(),
            rest: rest.to_string(),
        })
    }
}

fn is_scheme(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

fn parse_sip(secure: bool, rest: &str) -> Result<SipUri, UriError> {
    let (userinfo, hostpart) = match rest.find('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some("") => return Err(UriError("empty user part")),
        Some(ui) => match ui.find(':') {
            // A ':' after a ';' belongs to a user-part parameter, not a password.
            Some(c) if !ui[..c].contains(';') => {
                (Some(ui[..c].to_string()), Some(ui[c + 1..].to_string()))
            }
            _ => (Some(ui.to_string()), None),
        },
    };
    let (before_headers, headers) = match hostpart.find('?') {
        Some(q) => (&hostpart[..q], Some(hostpart[q + 1..].to_string())),
        None => (hostpart, None),
    };
    if headers.as_deref() == Some("") {
        return Err(UriError("empty URI headers"));
    }
    let (hp, params) = match split_host_params(before_headers) {
        Some(i) => (&before_headers[..i], &before_headers[i + 1..]),
        None => (before_headers, ""),
    };
    let host = parse_hostport(hp)?;
    let params = if before_headers.len() > hp.len() {
        parse_uri_params(params)?
    } else {
        Vec::new()
    };
    Ok(SipUri {
        secure,
        user,
        password,
        host,
        params,
        headers,
    })
}

/// Index of the `;` that ends host:port (after an IPv6 reference's `]`).
fn split_host_params(s: &str) -> Option<usize> {
    let from = if s.starts_with('[') {
        s.find(']').unwrap_or(0)
    } else {
        0
    };
    s[from..].find(';').map(|i| i + from)
}

fn parse_uri_params(s: &str) -> Result<Vec<Param>, UriError> {
    let mut out = Vec::new();
    for p in s.split(';') {
        if p.is_empty() {
            return Err(UriError("empty URI parameter"));
        }
        match p.find('=') {
            Some(eq) => {
                let (n, v) = (&p[..eq], &p[eq + 1..]);
                if n.is_empty() || v.is_empty() {
                    return Err(UriError("malformed URI parameter"));
                }
                out.push(Param::new(n, v));
            }
            None => out.push(Param::flag(p)),
        }
    }
    Ok(out)
}

fn parse_tel(rest: &str) -> Result<TelUri, UriError> {
    let (number, params) = match rest.find(';') {
        Some(i) => (&rest[..i], parse_uri_params(&rest[i + 1..])?),
        None => (rest, Vec::new()),
    };
    let digits = number.strip_prefix('+').unwrap_or(number);
    if digits.is_empty()
        || !digits
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b'*' | b'#' | b'-' | b'.' | b'(' | b')'))
    {
        return Err(UriError("bad tel number"));
    }
    Ok(TelUri {
        number: number.to_string(),
        params,
    })
}

/// Parses `host[:port]`, where host is a name, IPv4 address or `[IPv6]` reference.
pub fn parse_hostport(s: &str) -> Result<HostPort, UriError> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let close = v6
            .find(']')
            .ok_or(UriError("unterminated IPv6 reference"))?;
        let addr = parse_v6(&v6[..close])?;
        let after = &v6[close + 1..];
        let port = match after {
            "" => None,
            p => Some(parse_port(
                p.strip_prefix(':')
                    .ok_or(UriError("garbage after IPv6 reference"))?,
            )?),
        };
        (Host::V6(addr), port)
    } else {
        let (h, port) = match s.find(':') {
            Some(c) => (&s[..c], Some(parse_port(&s[c + 1..])?)),
            None => (s, None),
        };
        (parse_host(h)?, port)
    };
    Ok(HostPort { host, port })
}

fn parse_v6(s: &str) -> Result<Ipv6Addr, UriError> {
    if let Ok(a) = s.parse::<Ipv6Addr>() {
        return Ok(a);
    }
    // RFC 5118 §4.10: RFC 3261's ABNF allowed a third colon before an embedded IPv4
    // address (`2001:db8:::192.0.2.1`); tolerate it as the two-colon form it means.
    if s.contains(":::") {
        if let Ok(a) = s.replacen(":::", "::", 1).parse::<Ipv6Addr>() {
            return Ok(a);
        }
    }
    Err(UriError("bad IPv6 address"))
}

fn parse_port(s: &str) -> Result<u16, UriError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UriError("bad port"));
    }
    s.parse().map_err(|_| UriError("bad port"))
}

/// Parses a host name or IPv4 address (not bracketed).
pub fn parse_host(h: &str) -> Result<Host, UriError> {
    if h.is_empty() {
        return Err(UriError("empty host"));
    }
    if h.bytes().all(|b| b.is_ascii_digit() || b == b'.') && h.bytes().any(|b| b == b'.') {
        return h
            .parse::<Ipv4Addr>()
            .map(Host::V4)
            .map_err(|_| UriError("bad IPv4 address"));
    }
    if !h
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(UriError("bad host name"));
    }
    Ok(Host::Name(h.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri {
        match parse_uri(s).unwrap() {
            Uri::Sip(u) => u,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dotted_user() {
        let u = sip("sip:john.doe@example.com");
        assert_eq!(u.user.as_deref(), Some("john.doe"));
        assert_eq!(u.host.host, Host::Name("example.com".into()));
    }

    #[test]
    fn ipv6_host_and_port() {
        let u = sip("sip:[2001:db8::10]:5070");
        assert_eq!(u.host.host, Host::V6("2001:db8::10".parse().unwrap()));
        assert_eq!(u.host.port, Some(5070));
        // RFC 5118 §4.3: inside the brackets it is all address.
        let u = sip("sip:[2001:db8::10:5070]");
        assert_eq!(u.host.host, Host::V6("2001:db8::10:5070".parse().unwrap()));
        assert_eq!(u.host.port, None);
        // RFC 5118 §4.2: an unbracketed IPv6 literal is invalid.
        assert!(parse_uri("sip:2001:db8::10").is_err());
        // RFC 5118 §4.10 three colons tolerated.
        let u = sip("sip:user@[2001:db8:::192.0.2.1]");
        assert_eq!(
            u.host.host,
            Host::V6("2001:db8::192.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn tel_uri() {
        match parse_uri("tel:+1-201-555-0123;phone-context=example.com").unwrap() {
            Uri::Tel(t) => {
                assert_eq!(t.number, "+1-201-555-0123");
                assert_eq!(t.digits(), "+12015550123");
                assert_eq!(t.params[0].name, "phone-context");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn escaped_user_kept_as_written() {
        let u = sip("sip:null-%00-null@example.com");
        assert_eq!(u.user.as_deref(), Some("null-%00-null"));
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
        let u = sip("sip:sips%3Auser%40example.com@example.net");
        assert_eq!(u.user.as_deref(), Some("sips%3Auser%40example.com"));
    }

    #[test]
    fn params_and_headers() {
        let u = sip("sip:alice@192.0.2.1:5060;transport=tcp;lr?Route=%3Csip:x%3E");
        assert_eq!(u.host.host, Host::V4("192.0.2.1".parse().unwrap()));
        assert_eq!(u.param("transport"), Some("tcp"));
        assert!(u.has_param("lr"));
        assert_eq!(u.headers.as_deref(), Some("Route=%3Csip:x%3E"));
        assert_eq!(
            parse_uri("sip:alice@192.0.2.1:5060;transport=tcp;lr?Route=%3Csip:x%3E")
                .unwrap()
                .to_string(),
            "sip:alice@192.0.2.1:5060;transport=tcp;lr?Route=%3Csip:x%3E"
        );
    }

    #[test]
    fn other_schemes_and_errors() {
        assert_eq!(parse_uri("isbn:2983792873").unwrap().scheme(), "isbn");
        assert_eq!(
            parse_uri("soap.beep://192.0.2.103:3002").unwrap().scheme(),
            "soap.beep"
        );
        assert!(parse_uri("sip:user@example.com:99999").is_err());
        assert!(parse_uri("sip:exa mple.com").is_err());
        assert!(parse_uri("<sip:a@b>").is_err());
        assert!(parse_uri("sip:a@b;;x").is_err());
    }
}
