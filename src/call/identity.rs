//! The caller identity a callee sees: the From of every B-leg INVITE (RFC 3261 §8.1.1.3,
//! RFC 3323 §4.1.1.3, §5.1).
//!
//! A B2BUA originates the B-leg itself, so its From is the switch's word, not the
//! caller's: the authenticated user's AOR `sip:<user>@<domain>` (the user the CDR bills),
//! with the display name of the user's `[[users]] display_name`, else the one the
//! caller's phone put in its From (re-quoted, RFC 3261 §25.1). A caller that asks for
//! privacy (`Privacy: id`, `header` or `user`; RFC 3323 §4.2, RFC 3325 §9.3) is
//! `"Anonymous" <sip:anonymous@anonymous.invalid>` instead (RFC 3323 §4.1.1.3), and the
//! copied headers that could name them (User-Agent, Subject: RFC 3323 §5.1) stay off
//! the B-leg. The Privacy header itself is not passed on: the switch is the privacy
//! service and has done what it asks, and the callee has nothing left to apply.
//!
//! A From that names another user of our domain is refused ([`check_from`], 403): see
//! ARCHITECTURE.md, "Calls", for why a refusal and not a rewrite. Any other From (a name
//! that is no user of ours, another domain, a `tel:` URI) is allowed and rewritten.

use crate::directory::Directory;
use crate::endpoint::{Endpoint, Refusal};
use crate::wire::{NameAddr, Request, Uri};

/// What a B-leg says about its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The B-leg's From, without a tag (each B-leg adds its own).
    pub from: NameAddr,
    /// The caller asked for privacy: identifying headers stay off the B-leg.
    pub anonymous: bool,
}

/// The B-leg identity of `a`, an INVITE authenticated as `user` of `domain`;
/// `display_name` is the user's configured one.
pub fn of_caller(a: &Request, user: &str, domain: &str, display_name: Option<&str>) -> Identity {
    if wants_privacy(a) {
        return Identity {
            from: NameAddr {
                display: Some(quoted("Anonymous")),
                uri: anonymous_uri(),
                params: Vec::new(),
            },
            anonymous: true,
        };
    }
    let display = match display_name {
        Some(name) => Some(quoted(name)),
        None => a
            .common
            .from
            .display
            .as_deref()
            .and_then(display_text)
            .map(|t| quoted(&t)),
    };
    let uri = crate::wire::SipUri {
        secure: false,
        user: Some(user.to_string()),
        password: None,
        host: crate::wire::HostPort {
            host: host_of(domain),
            port: None,
        },
        params: Vec::new(),
        headers: None,
    };
    Identity {
        from: NameAddr {
            display,
            uri: Uri::Sip(uri),
            params: Vec::new(),
        },
        anonymous: false,
    }
}

/// Refuses (403, [`Refusal::FromAnotherUser`]) an INVITE authenticated as `user` whose
/// From names another user of our domain; any other From passes.
pub fn check_from(
    a: &Request,
    user: &str,
    endpoint: &Endpoint,
    directory: &Directory,
) -> Result<(), Refusal> {
    match &a.common.from.uri {
        Uri::Sip(u) if endpoint.is_local_host(&u.host.host) => match u.user.as_deref() {
            Some(named) if named != user && directory.contains(named) => {
                Err(Refusal::FromAnotherUser)
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// True when A's INVITE asks for its identity to be withheld: a `Privacy` value of
/// `id`, `header` or `user` (RFC 3323 §4.2, RFC 3325 §9.3). `session` and `critical`
/// alone do not concern the From; `none` asks for nothing, and beside one of those
/// (a contradiction) does not cancel it: privacy errs on the side of the request.
fn wants_privacy(a: &Request) -> bool {
    a.common
        .header_values("Privacy")
        .flat_map(|v| v.split([';', ',']))
        .map(str::trim)
        .any(|t| {
            ["id", "header", "user"]
                .iter()
                .any(|p| p.eq_ignore_ascii_case(t))
        })
}

/// `sip:anonymous@anonymous.invalid` (RFC 3323 §4.1.1.3).
fn anonymous_uri() -> Uri {
    Uri::Sip(crate::wire::SipUri {
        secure: false,
        user: Some("anonymous".into()),
        password: None,
        host: crate::wire::HostPort {
            host: crate::wire::Host::Name("anonymous.invalid".into()),
            port: None,
        },
        params: Vec::new(),
        headers: None,
    })
}

/// The served domain as a URI host (an IP literal when it is one).
fn host_of(domain: &str) -> crate::wire::Host {
    let bare = domain.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => crate::wire::Host::V4(a),
        Ok(std::net::IpAddr::V6(a)) => crate::wire::Host::V6(a),
        Err(_) => crate::wire::Host::Name(domain.to_string()),
    }
}

/// The text of a display name as written (a quoted-string, unescaped, or a run of
/// tokens as is); `None` when empty or when it holds a control character (a NUL or
/// CR that a quoted-pair let through, §25.1): such a name goes nowhere further.
fn display_text(written: &str) -> Option<String> {
    let w = written.trim();
    let text = match w.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    c => out.push(c),
                }
            }
            out
        }
        None => w.to_string(),
    };
    (!text.trim().is_empty() && !text.chars().any(char::is_control)).then_some(text)
}

/// `text` as a quoted-string (RFC 3261 §25.1): `"` and `\` as quoted-pairs, the rest as
/// qdtext (UTF-8 allowed). `text` holds no control character (config validation, or
/// [`display_text`]).
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UserConfig;
    use crate::wire::{parse_message, parse_name_addr, Message};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    fn invite(from: &str, extra: &str) -> Request {
        let head = format!(
            "INVITE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKi1\r\nFrom: {from};tag=a1\r\nTo: <sip:bob@example.test>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n{extra}"
        );
        match parse_message(head.as_bytes(), b"") {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn from_of(a: &Request, display_name: Option<&str>) -> String {
        of_caller(a, "alice", "example.test", display_name)
            .from
            .to_string()
    }

    #[test]
    fn the_aor_of_the_authenticated_user_with_our_display_name() {
        let a = invite("\"Boss\" <sip:ceo@elsewhere.example>", "");
        assert_eq!(
            from_of(&a, Some("Alice A.")),
            "\"Alice A.\" <sip:alice@example.test>"
        );
        // Quotes and backslashes become quoted-pairs; the result parses back.
        let f = from_of(&a, Some("Zoë \"Z\" \\ Sales"));
        assert_eq!(f, "\"Zoë \\\"Z\\\" \\\\ Sales\" <sip:alice@example.test>");
        let back = parse_name_addr(&f).unwrap();
        assert_eq!(
            back.display.as_deref().and_then(display_text).as_deref(),
            Some("Zoë \"Z\" \\ Sales")
        );
    }

    #[test]
    fn the_callers_own_display_name_when_the_user_has_none() {
        let a = invite("\"Al \\\"the\\\" Pal\" <sip:alice@example.test>", "");
        assert_eq!(
            from_of(&a, None),
            "\"Al \\\"the\\\" Pal\" <sip:alice@example.test>"
        );
        // Tokens are quoted; no display name stays none; a control character drops it.
        let a = invite("Alice Smith <sip:alice@example.test>", "");
        assert_eq!(
            from_of(&a, None),
            "\"Alice Smith\" <sip:alice@example.test>"
        );
        let a = invite("<sip:12345@example.test>", "");
        assert_eq!(from_of(&a, None), "<sip:alice@example.test>");
        let a = invite("\"nul\\\u{0}\" <sip:alice@example.test>", "");
        assert_eq!(from_of(&a, None), "<sip:alice@example.test>");
    }

    #[test]
    fn privacy_id_header_user_is_anonymous_none_and_session_are_not() {
        for p in [
            "id",
            "header",
            "user",
            "header;user",
            "ID",
            "none, id",
            "session; user",
        ] {
            let a = invite(
                "\"Alice\" <sip:alice@example.test>",
                &format!("Privacy: {p}\r\n"),
            );
            let id = of_caller(&a, "alice", "example.test", Some("Alice"));
            assert_eq!(
                id.from.to_string(),
                "\"Anonymous\" <sip:anonymous@anonymous.invalid>",
                "{p}"
            );
            assert!(id.anonymous);
        }
        for p in ["none", "session", "critical"] {
            let a = invite("<sip:alice@example.test>", &format!("Privacy: {p}\r\n"));
            let id = of_caller(&a, "alice", "example.test", None);
            assert!(!id.anonymous, "{p}");
            assert_eq!(id.from.to_string(), "<sip:alice@example.test>");
        }
    }

    #[test]
    fn a_from_naming_another_of_our_users_is_refused_any_other_passes() {
        let endpoint = Endpoint {
            domain: "example.test".into(),
            local: vec!["127.0.0.1:5060".parse().unwrap()],
            advertised: None,
            draining: Arc::new(AtomicBool::new(false)),
            tag_key: Default::default(),
        };
        let user = |n: &str| UserConfig {
            user: n.into(),
            password: Some("pw".into()),
            ..UserConfig::default()
        };
        let dir = Directory::new(&[user("alice"), user("bob")], "example.test").unwrap();
        let check = |from: &str| check_from(&invite(from, ""), "alice", &endpoint, &dir);
        assert_eq!(
            check("<sip:bob@example.test>"),
            Err(Refusal::FromAnotherUser)
        );
        assert_eq!(
            check("\"B\" <sip:bob@127.0.0.1>"),
            Err(Refusal::FromAnotherUser)
        );
        assert_eq!(check("<sip:alice@example.test>"), Ok(()));
        assert_eq!(check("<sip:nobody@example.test>"), Ok(()));
        assert_eq!(check("<sip:bob@elsewhere.example>"), Ok(()));
        assert_eq!(check("<tel:+15551234>"), Ok(()));
    }
}
