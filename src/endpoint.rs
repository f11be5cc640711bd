//! What the switch itself answers, and the checks every request passes before a
//! transaction user sees it (RFC 3261 §8.2.1–§8.2.3, §11, §16.3; RFC 4475 §3.3).
//!
//! [`Refusal`] is the one mapping from "why not" to the status, reason phrase and headers
//! that say it. [`Endpoint::admit`] applies the checks in the order of RFC 3261 §8.2:
//! method (405/501 with Allow), Request-URI scheme (416), Require and Proxy-Require
//! (420 with Unsupported), body type (415 with Accept), Accept (406), then the routing
//! checks a forwarding element makes (483 for Max-Forwards 0, 403 for another domain).
//! [`Endpoint::answer`] answers the out-of-dialog requests the switch serves itself
//! (§8.2.7, statelessly): OPTIONS (§11.2: 200 with Allow, Accept, Supported, for the
//! switch and for any address of its domain alike, so that the answer tells nobody which
//! users exist; 403 for another domain) and a BYE without a To tag (481, §15.1.2). An
//! in-dialog request that matches no dialog gets 481 whatever its method (§12.2.2, in the
//! driver). INVITE and REGISTER belong to the call router and the registrar.

use crate::wire::{Header, Host, Method, Request, Response, Uri};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Methods the switch serves (the Allow header).
/// UPDATE (RFC 3311) and INFO (RFC 6086) are served in dialogs only (relayed to the
/// other party); out of a dialog they get 481 like a BYE without a To tag.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE, INFO";
/// Body types the switch understands (the Accept header).
pub const ACCEPT: &str = "application/sdp";
/// Option tags the switch supports (the Supported header): `path` (RFC 3327, the
/// registrar stores and echoes Path).
pub const SUPPORTED: &[&str] = &["path"];
/// Body types accepted on requests that carry a session description.
const ACCEPTED_BODIES: &[&str] = &[
    "application/sdp",
    "multipart/mixed",
    "multipart/alternative",
];

/// The 200 answer to OPTIONS addressed to the switch (§11.2), out of a dialog or in one
/// (a keep-alive of the peer, answered by the switch: it is the peer's UA). `to_tag` is
/// added when To has none.
pub fn options_ok(req: &Request, to_tag: Option<&str>) -> Response {
    let mut r = req.response(200, None, to_tag);
    r.common.headers = vec![
        Header::new("Allow", ALLOW),
        Header::new("Accept", ACCEPT),
        Header::new("Accept-Encoding", "identity"),
        Header::new("Accept-Language", "en"),
        Header::new("Supported", SUPPORTED.join(", ")),
        Header::new("Server", concat!("softswitch/", env!("CARGO_PKG_VERSION"))),
    ];
    r
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An extension method the switch does not implement (§8.2.1).
    NotImplemented,
    /// A known method the switch does not serve (§8.2.1).
    MethodNotAllowed,
    /// A Request-URI scheme other than sip, sips, tel (§8.2.2.1).
    UnsupportedUriScheme,
    /// Option tags in Require/Proxy-Require the switch does not support (§8.2.2.3).
    BadExtension(Vec<String>),
    /// A body type the switch does not understand (§8.2.3).
    UnsupportedMediaType,
    /// The request's Accept excludes every type the answer would carry (§8.2.3).
    NotAcceptable,
    /// Max-Forwards is 0 on a request the switch would forward (§16.3 step 3).
    TooManyHops,
    /// The request already passed through the switch (our Via is in it, §16.3 step 4).
    LoopDetected,
    /// A new INVITE with the Call-ID, From tag and CSeq of one whose transaction is not
    /// over, on another branch: the same request by a second path (§8.2.2.2).
    MergedRequest,
    /// The Request-URI is in a domain the switch does not serve: no relaying.
    NotOurDomain,
    /// No such user.
    NotFound,
    /// A known user with no reachable contact.
    TemporarilyUnavailable,
    /// An in-dialog request or CANCEL that matches nothing (§12.2.2, §9.2).
    CallDoesNotExist,
    /// The switch is draining for shutdown.
    ShuttingDown,
    /// The transaction table is full (`limits.max_transactions`).
    Overloaded,
}

impl Refusal {
    /// The status code.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::NotImplemented => 501,
            Refusal::MethodNotAllowed => 405,
            Refusal::UnsupportedUriScheme => 416,
            Refusal::BadExtension(_) => 420,
            Refusal::UnsupportedMediaType => 415,
            Refusal::NotAcceptable => 406,
            Refusal::TooManyHops => 483,
            Refusal::LoopDetected | Refusal::MergedRequest => 482,
            Refusal::NotOurDomain => 403,
            Refusal::NotFound => 404,
            Refusal::TemporarilyUnavailable => 480,
            Refusal::CallDoesNotExist => 481,
            Refusal::ShuttingDown | Refusal::Overloaded => 503,
        }
    }

    /// The reason phrase.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NotImplemented => "Not Implemented",
            Refusal::MethodNotAllowed => "Method Not Allowed",
            Refusal::UnsupportedUriScheme => "Unsupported URI Scheme",
            Refusal::BadExtension(_) => "Bad Extension",
            Refusal::UnsupportedMediaType => "Unsupported Media Type",
            Refusal::NotAcceptable => "Not Acceptable",
            Refusal::TooManyHops => "Too Many Hops",
            Refusal::LoopDetected => "Loop Detected",
            Refusal::MergedRequest => "Loop Detected (merged request)",
            Refusal::NotOurDomain => "Forbidden (relaying denied)",
            Refusal::NotFound => "Not Found",
            Refusal::TemporarilyUnavailable => "Temporarily Unavailable",
            Refusal::CallDoesNotExist => "Call/Transaction Does Not Exist",
            Refusal::ShuttingDown => "Service Unavailable (shutting down)",
            Refusal::Overloaded => "Service Unavailable (overloaded)",
        }
    }

    /// The headers that explain the refusal.
    pub fn headers(&self) -> Vec<Header> {
        match self {
            Refusal::NotImplemented | Refusal::MethodNotAllowed => {
                vec![Header::new("Allow", ALLOW)]
            }
            Refusal::BadExtension(tags) => vec![Header::new("Unsupported", tags.join(", "))],
            Refusal::UnsupportedMediaType | Refusal::NotAcceptable => {
                vec![Header::new("Accept", ACCEPT)]
            }
            Refusal::ShuttingDown | Refusal::Overloaded => vec![Header::new("Retry-After", "5")],
            _ => Vec::new(),
        }
    }

    /// The metrics label (closed set).
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Refusal::NotImplemented | Refusal::MethodNotAllowed => "method",
            Refusal::UnsupportedUriScheme => "scheme",
            Refusal::BadExtension(_) => "extension",
            Refusal::UnsupportedMediaType | Refusal::NotAcceptable => "media_type",
            Refusal::TooManyHops => "max_forwards",
            Refusal::LoopDetected | Refusal::MergedRequest => "loop",
            Refusal::Overloaded => "overload",
            _ => "routing",
        }
    }

    /// The response to `req` that carries this refusal.
    pub fn response(&self, req: &Request, to_tag: &str) -> Response {
        let mut r = req.response(self.status(), Some(self.reason()), Some(to_tag));
        r.common.headers = self.headers();
        r
    }
}

/// The switch's own identity and directory, as far as admission needs them.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The served domain.
    pub domain: String,
    /// Addresses the listeners are bound to.
    pub local: Vec<SocketAddr>,
    /// The advertised host, if configured.
    pub advertised: Option<String>,
    /// Set while draining for shutdown.
    pub draining: Arc<AtomicBool>,
    /// Keys the To tags of stateless responses (random per process).
    pub tag_key: std::collections::hash_map::RandomState,
}

impl Endpoint {
    /// Whether `host` names the switch: the domain, the advertised host, or an address
    /// it listens on (any address when it listens on an unspecified one).
    pub fn is_local_host(&self, host: &Host) -> bool {
        match host {
            Host::Name(n) => {
                n.eq_ignore_ascii_case(&self.domain)
                    || self.advertised.as_deref().is_some_and(|a| {
                        a.split(':')
                            .next()
                            .is_some_and(|h| h.eq_ignore_ascii_case(n))
                    })
                    || n.eq_ignore_ascii_case("localhost")
            }
            Host::V4(a) => self.is_local_ip(IpAddr::V4(*a)),
            Host::V6(a) => self.is_local_ip(IpAddr::V6(*a)),
        }
    }

    fn is_local_ip(&self, ip: IpAddr) -> bool {
        self.local
            .iter()
            .any(|l| l.ip() == ip || (l.ip().is_unspecified() && l.is_ipv4() == ip.is_ipv4()))
            || self
                .advertised
                .as_deref()
                .is_some_and(|a| a.trim_matches(['[', ']']).starts_with(&ip.to_string()))
    }

    /// Whether the endpoint answers this request without a transaction (RFC 3261 §8.2.7):
    /// every non-INVITE request it answers itself. INVITE needs its server transaction
    /// (final responses are retransmitted until the ACK), CANCEL must find its INVITE's,
    /// ACK belongs to the INVITE's, REGISTER is the registrar's (it answers statelessly
    /// too, asynchronously: `Registrar::handle`), and an in-dialog request (To tag) is its
    /// call's, answered through its own server transaction.
    pub fn answers_statelessly(&self, req: &Request) -> bool {
        !matches!(
            req.method,
            Method::Invite | Method::Ack | Method::Cancel | Method::Register
        ) && req.common.to.tag().is_none()
    }

    /// The To tag of a stateless response: the same for every retransmission of a request
    /// (§8.2.7), unpredictable to others (keyed by a per-process random key).
    pub fn stateless_tag(&self, req: &Request) -> String {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = self.tag_key.build_hasher();
        req.common.call_id.hash(&mut h);
        req.common.from.tag().hash(&mut h);
        req.common.cseq.seq.hash(&mut h);
        req.common.top_via().and_then(|v| v.branch()).hash(&mut h);
        format!("{:016x}", h.finish())
    }

    /// The answer to an out-of-dialog request the endpoint serves itself (those for which
    /// [`Endpoint::answers_statelessly`] holds): its refusal with the metrics label that
    /// counts it, or its own response.
    pub fn answer(&self, req: &Request, to_tag: &str) -> (Response, Option<&'static str>) {
        match self.admit(req).and_then(|()| self.respond(req, to_tag)) {
            Ok(r) => (r, None),
            Err(refusal) => (refusal.response(req, to_tag), Some(refusal.metric_reason())),
        }
    }

    /// The checks of RFC 3261 §8.2.1–§8.2.3 and §16.3, in that order. ACK is never
    /// refused (it has no response).
    pub fn admit(&self, req: &Request) -> Result<(), Refusal> {
        if req.method == Method::Ack {
            return Ok(());
        }
        match req.method {
            Method::Invite
            | Method::Cancel
            | Method::Bye
            | Method::Options
            | Method::Register
            | Method::Update
            | Method::Info => {}
            Method::Extension(_) => return Err(Refusal::NotImplemented),
            _ => return Err(Refusal::MethodNotAllowed),
        }
        if !matches!(req.uri, Uri::Sip(_) | Uri::Tel(_)) {
            return Err(Refusal::UnsupportedUriScheme);
        }
        if req.method != Method::Cancel {
            let unsupported: Vec<String> = req
                .common
                .tokens("Require")
                .chain(req.common.tokens("Proxy-Require"))
                .filter(|t| !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
                .map(str::to_string)
                .collect();
            if !unsupported.is_empty() {
                return Err(Refusal::BadExtension(unsupported));
            }
        }
        if !req.common.body.is_empty() && matches!(req.method, Method::Invite | Method::Options) {
            let ct = req
                .common
                .header("Content-Type")
                .unwrap_or("application/sdp");
            let mt = ct.split(';').next().unwrap_or("").trim();
            if !ACCEPTED_BODIES.iter().any(|a| a.eq_ignore_ascii_case(mt)) {
                return Err(Refusal::UnsupportedMediaType);
            }
        }
        if req.method == Method::Invite && req.common.header("Accept").is_some() {
            let ok = req.common.tokens("Accept").any(|t| {
                let mt = t.split(';').next().unwrap_or("").trim();
                ["application/sdp", "application/*", "*/*"]
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(mt))
            });
            if !ok {
                return Err(Refusal::NotAcceptable);
            }
        }
        if req.method == Method::Invite && self.draining.load(Ordering::Relaxed) {
            return Err(Refusal::ShuttingDown);
        }
        if !self.addressed_to_switch(req) && req.common.max_forwards == Some(0) {
            return Err(Refusal::TooManyHops);
        }
        Ok(())
    }

    /// True for a request the switch answers itself rather than routing to a user: a
    /// SIP URI with no user part naming the switch.
    pub fn addressed_to_switch(&self, req: &Request) -> bool {
        match &req.uri {
            Uri::Sip(u) => u.user.is_none() && self.is_local_host(&u.host.host),
            _ => false,
        }
    }

    /// The switch's own answer to an admitted out-of-dialog request: the 200 to OPTIONS
    /// for the switch or an address of its domain (as the B2BUA it is the UAS for all of
    /// them, and a 404 or 480 would tell an unauthenticated sender which users exist,
    /// which neither the registrar nor the call router does), 403 for an OPTIONS to
    /// another domain (as an INVITE there gets), and 481 for a BYE, UPDATE or INFO, which
    /// without a To tag can match no dialog (§15.1.2, RFC 3311 §5.2, RFC 6086 §4.2.1).
    fn respond(&self, req: &Request, to_tag: &str) -> Result<Response, Refusal> {
        match (&req.method, &req.uri) {
            (Method::Options, Uri::Sip(u)) if !self.is_local_host(&u.host.host) => {
                Err(Refusal::NotOurDomain)
            }
            (Method::Options, _) => Ok(options_ok(req, Some(to_tag))),
            _ => Err(Refusal::CallDoesNotExist),
        }
    }
}
