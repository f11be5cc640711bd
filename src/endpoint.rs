//! What the switch itself answers, and the checks every request passes before a
//! transaction user sees it (RFC 3261 §8.2.1–§8.2.3, §11, §16.3; RFC 4475 §3.3).
//!
//! [`Refusal`] is the one vocabulary of "why not", for every refusal the switch sends
//! (admission here, the registrar's, the call router's, a call leg's): each variant's
//! status, reason phrase, the headers that say it, and the metric labels that count it. [`Endpoint::admit`] applies the checks in the order of RFC 3261 §8.2:
//! method (405/501 with Allow), Request-URI scheme (416), Require and Proxy-Require
//! (420 with Unsupported), body type (415 with Accept), Accept (406), then the routing
//! checks a forwarding element makes (483 for Max-Forwards 0, 403 for another domain).
//! [`Endpoint::answer`] answers the out-of-dialog requests the switch serves itself
//! (§8.2.7, statelessly): OPTIONS (§11.2: 200 with Allow, Accept, Supported, for the
//! switch and for any address of its domain alike, so that the answer tells nobody which
//! users exist; 403 for another domain) and a BYE without a To tag (481, §15.1.2). An
//! in-dialog request that matches no dialog gets 481 whatever its method (§12.2.2, in the
//! driver). INVITE and REGISTER belong to the call router and the registrar.

use crate::auth::{Algorithm, Authenticated, FailReason, Verdict};
use crate::metrics;
use crate::wire::{Header, Host, Method, Request, Response, Uri};
use softswitch_actors::port::RegisterError;
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
/// registrar stores and echoes Path) and `timer` (RFC 4028 session timers, per call leg:
/// `call/session_timer.rs`).
pub const SUPPORTED: &[&str] = &["path", crate::call::session_timer::OPTION_TAG];
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

/// Who asks for credentials (RFC 3261 §22): the registrar as a UAS (401,
/// `WWW-Authenticate`, answered in `Authorization`, §22.2) or the call router as a proxy
/// would (407, `Proxy-Authenticate`, answered in `Proxy-Authorization`, §22.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenger {
    /// 401 / `WWW-Authenticate` / `Authorization`.
    Registrar,
    /// 407 / `Proxy-Authenticate` / `Proxy-Authorization`.
    Proxy,
}

/// Why a request is refused: every refusal the switch sends, whoever decides it (the
/// endpoint's admission, the registrar, the call router, a call's leg). Each variant has
/// one status, one reason phrase, the headers that explain it, and the labels it is
/// counted under ([`Refusal::metric_reason`], [`Refusal::register_result`]).
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
    /// The callee is busy (a party of a live call) without call waiting or a
    /// `forward_busy` target: the switch answers 486 itself (RFC 3261 §21.4.24).
    BusyHere,
    /// An in-dialog request or CANCEL that matches nothing (§12.2.2, §9.2).
    CallDoesNotExist,
    /// The switch is draining for shutdown.
    ShuttingDown,
    /// The transaction table is full (`limits.max_transactions`).
    Overloaded,
    /// No valid credentials yet: 401/407 with these challenge values, one per algorithm
    /// offered (RFC 7616 §3.3, RFC 8760 §2.4); `stale` when only the nonce was old.
    Challenge {
        /// Who asks.
        by: Challenger,
        /// The `WWW-Authenticate` / `Proxy-Authenticate` values.
        values: Vec<String>,
        /// The nonce was stale (`stale=true` in the values).
        stale: bool,
    },
    /// Authentication failed for good: too many failures, or the source is blocked.
    AuthFailed,
    /// Credentials that do not parse (in the header `by` reads).
    BadCredentials(Challenger),
    /// A REGISTER for an AOR that is not the authenticated user's (§10.3 step 4).
    NotYourAor,
    /// An INVITE whose From names another user of our domain than the authenticated
    /// one: the phone is misconfigured or spoofing (see ARCHITECTURE.md, "Calls").
    FromAnotherUser,
    /// A new INVITE without Contact: no in-dialog request could reach the caller
    /// (§12.1.1).
    MissingContact,
    /// An `Expires` header that is not delta-seconds (§20.19).
    MalformedExpires,
    /// A Contact value that does not parse as a name-addr (§20.10).
    MalformedContact,
    /// A Contact `expires` parameter that is not delta-seconds (§20.10).
    MalformedContactExpires,
    /// `Contact: *` with other contacts (§10.3 step 6).
    WildcardNotAlone,
    /// `Contact: *` without `Expires: 0` (§10.3 step 6).
    WildcardWithoutExpiresZero,
    /// A contact in a scheme the switch cannot call (it only calls SIP, §10.2.1).
    UnsupportedContactScheme,
    /// A nonzero expiry below the minimum (§10.3 step 7): 423 with `Min-Expires`.
    IntervalTooBrief {
        /// The minimum, seconds.
        min: u32,
    },
    /// More contacts in one REGISTER than an AOR may hold.
    TooManyContacts,
    /// Same Call-ID and a lower CSeq than a stored binding (§10.3 step 7).
    BindingOutOfOrder,
    /// The binding store could not persist the change; nothing was applied.
    StoreFailed,
    /// The AOR's mailbox is full (`registrar.mailbox_capacity`).
    MailboxFull,
    /// An in-dialog request whose CSeq is not above the last one (§12.2.2).
    CSeqOutOfOrder,
    /// An in-dialog method the leg does not carry.
    NotImplementedInDialog,
    /// A re-INVITE or UPDATE crossing another offer in flight (glare, RFC 3261 §14.2,
    /// RFC 3311 §5.2): the sender retries after a random wait.
    RequestPending,
    /// A re-INVITE or UPDATE while the same party's earlier one is unanswered (§14.2):
    /// 500 with a random Retry-After of 0–10 s.
    OfferPending,
    /// A mid-call request relayed to the other party got no answer at all (Timer B/F).
    NoAnswerFromPeer,
    /// A mid-call request still unanswered when its dialog ends (a BYE either way):
    /// 487, as §15.1.2 recommends.
    RequestTerminated,
    /// An INVITE, re-INVITE or UPDATE from a sender that supports session timers asks
    /// for a session interval below the switch's minimum (RFC 4028 §6): 422 with our
    /// `Min-SE`, and the sender retries with at least that.
    SessionIntervalTooSmall {
        /// Our `Min-SE`, seconds.
        min_se: u32,
    },
}

impl Refusal {
    /// The status code.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::NotImplemented | Refusal::NotImplementedInDialog => 501,
            Refusal::MethodNotAllowed => 405,
            Refusal::UnsupportedUriScheme | Refusal::UnsupportedContactScheme => 416,
            Refusal::BadExtension(_) => 420,
            Refusal::UnsupportedMediaType => 415,
            Refusal::NotAcceptable => 406,
            Refusal::TooManyHops => 483,
            Refusal::LoopDetected | Refusal::MergedRequest => 482,
            Refusal::NotOurDomain
            | Refusal::AuthFailed
            | Refusal::NotYourAor
            | Refusal::FromAnotherUser
            | Refusal::TooManyContacts => 403,
            Refusal::NotFound => 404,
            Refusal::TemporarilyUnavailable => 480,
            Refusal::BusyHere => 486,
            Refusal::CallDoesNotExist => 481,
            Refusal::ShuttingDown | Refusal::Overloaded | Refusal::MailboxFull => 503,
            Refusal::Challenge {
                by: Challenger::Registrar,
                ..
            } => 401,
            Refusal::Challenge {
                by: Challenger::Proxy,
                ..
            } => 407,
            Refusal::BadCredentials(_)
            | Refusal::MissingContact
            | Refusal::MalformedExpires
            | Refusal::MalformedContact
            | Refusal::MalformedContactExpires
            | Refusal::WildcardNotAlone
            | Refusal::WildcardWithoutExpiresZero => 400,
            Refusal::IntervalTooBrief { .. } => 423,
            Refusal::BindingOutOfOrder
            | Refusal::StoreFailed
            | Refusal::CSeqOutOfOrder
            | Refusal::OfferPending => 500,
            Refusal::RequestPending => 491,
            Refusal::RequestTerminated => 487,
            Refusal::NoAnswerFromPeer => 504,
            Refusal::SessionIntervalTooSmall { .. } => 422,
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
            Refusal::BusyHere => "Busy Here",
            Refusal::CallDoesNotExist => "Call/Transaction Does Not Exist",
            Refusal::ShuttingDown => "Service Unavailable (shutting down)",
            Refusal::Overloaded | Refusal::MailboxFull => "Service Unavailable (overloaded)",
            Refusal::Challenge {
                by: Challenger::Registrar,
                ..
            } => "Unauthorized",
            Refusal::Challenge {
                by: Challenger::Proxy,
                ..
            } => "Proxy Authentication Required",
            Refusal::AuthFailed => "Forbidden",
            Refusal::BadCredentials(Challenger::Registrar) => {
                "Bad Request (malformed Authorization)"
            }
            Refusal::BadCredentials(Challenger::Proxy) => {
                "Bad Request (malformed Proxy-Authorization)"
            }
            Refusal::NotYourAor => "Forbidden (not your address-of-record)",
            Refusal::FromAnotherUser => "Forbidden (From is another user)",
            Refusal::MissingContact => "Bad Request (missing Contact)",
            Refusal::MalformedExpires => "Bad Request (malformed Expires)",
            Refusal::MalformedContact => "Bad Request (malformed Contact)",
            Refusal::MalformedContactExpires => "Bad Request (malformed Contact expires)",
            Refusal::WildcardNotAlone => "Bad Request (Contact * must be the only contact)",
            Refusal::WildcardWithoutExpiresZero => "Bad Request (Contact * requires Expires: 0)",
            Refusal::UnsupportedContactScheme => "Unsupported URI Scheme (contact)",
            Refusal::IntervalTooBrief { .. } => "Interval Too Brief",
            Refusal::TooManyContacts => "Forbidden (too many contacts)",
            Refusal::BindingOutOfOrder => "Server Internal Error (out-of-order CSeq)",
            Refusal::StoreFailed => "Server Internal Error (binding store)",
            Refusal::CSeqOutOfOrder => "Server Internal Error (CSeq out of order)",
            Refusal::NotImplementedInDialog => "Not Implemented (in-dialog)",
            Refusal::RequestPending => "Request Pending",
            Refusal::RequestTerminated => "Request Terminated",
            Refusal::OfferPending => "Server Internal Error (offer pending)",
            Refusal::NoAnswerFromPeer => "Server Time-out (no answer from the other party)",
            Refusal::SessionIntervalTooSmall { .. } => "Session Interval Too Small",
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
            Refusal::ShuttingDown | Refusal::Overloaded | Refusal::StoreFailed => {
                vec![Header::new("Retry-After", "5")]
            }
            Refusal::MailboxFull => vec![Header::new("Retry-After", "1")],
            Refusal::OfferPending => {
                let secs = rand::random::<u8>() % 11;
                vec![Header::new("Retry-After", secs.to_string())]
            }
            Refusal::Challenge { by, values, .. } => {
                let name = match by {
                    Challenger::Registrar => "WWW-Authenticate",
                    Challenger::Proxy => "Proxy-Authenticate",
                };
                values
                    .iter()
                    .map(|v| Header::new(name, v.clone()))
                    .collect()
            }
            Refusal::IntervalTooBrief { min } => vec![Header::new("Min-Expires", min.to_string())],
            Refusal::SessionIntervalTooSmall { min_se } => {
                vec![Header::new("Min-SE", min_se.to_string())]
            }
            _ => Vec::new(),
        }
    }

    /// The reason label (closed set: `metrics::REJECT_REASONS`) under which the refusal
    /// counts in `softswitch_sip_messages_rejected_total`, or `None` for the refusals
    /// counted elsewhere: authentication's (a challenge is the first step of nearly
    /// every call, not a rejection; failures count in `softswitch_auth_failures_total`
    /// by reason) and the registrar's own (every REGISTER counts in
    /// `softswitch_register_requests_total`, [`Refusal::register_result`]).
    pub fn metric_reason(&self) -> Option<&'static str> {
        Some(match self {
            Refusal::NotImplemented | Refusal::MethodNotAllowed => "method",
            Refusal::NotImplementedInDialog => "method",
            Refusal::UnsupportedUriScheme => "scheme",
            // The session-timer extension's own refusal (RFC 4028 §6): the label set
            // stays at its 15.
            Refusal::BadExtension(_) | Refusal::SessionIntervalTooSmall { .. } => "extension",
            Refusal::UnsupportedMediaType | Refusal::NotAcceptable => "media_type",
            Refusal::TooManyHops => "max_forwards",
            Refusal::LoopDetected | Refusal::MergedRequest => "loop",
            Refusal::Overloaded => "overload",
            Refusal::NotOurDomain
            | Refusal::NotFound
            | Refusal::TemporarilyUnavailable
            | Refusal::BusyHere
            | Refusal::CallDoesNotExist
            | Refusal::ShuttingDown
            | Refusal::MissingContact
            | Refusal::FromAnotherUser
            | Refusal::CSeqOutOfOrder => "routing",
            Refusal::Challenge { .. } | Refusal::AuthFailed | Refusal::BadCredentials(_) => {
                return None
            }
            Refusal::NotYourAor
            | Refusal::MalformedExpires
            | Refusal::MalformedContact
            | Refusal::MalformedContactExpires
            | Refusal::WildcardNotAlone
            | Refusal::WildcardWithoutExpiresZero
            | Refusal::UnsupportedContactScheme
            | Refusal::IntervalTooBrief { .. }
            | Refusal::TooManyContacts
            | Refusal::BindingOutOfOrder
            | Refusal::StoreFailed
            | Refusal::MailboxFull => return None,
            // The ordinary race of offer and answer, a far party's silence, a call's
            // end: no message of the sender was at fault.
            Refusal::RequestPending
            | Refusal::OfferPending
            | Refusal::NoAnswerFromPeer
            | Refusal::RequestTerminated => return None,
        })
    }

    /// The result label (closed set: `metrics::REGISTER_RESULTS`) of a REGISTER answered
    /// with this refusal, in `softswitch_register_requests_total`.
    pub fn register_result(&self) -> &'static str {
        match self {
            Refusal::Challenge { stale: true, .. } => "stale",
            Refusal::Challenge { stale: false, .. } => "challenged",
            Refusal::IntervalTooBrief { .. } => "interval_too_brief",
            Refusal::TooManyContacts => "too_many_contacts",
            Refusal::BindingOutOfOrder => "out_of_order",
            Refusal::StoreFailed => "storage",
            Refusal::MailboxFull | Refusal::Overloaded | Refusal::ShuttingDown => "overloaded",
            Refusal::NotFound => "not_found",
            r if r.status() == 403 => "forbidden",
            _ => "bad_request",
        }
    }

    /// The response to `req` that carries this refusal; `to_tag` goes on To when it
    /// has none. An in-dialog request keeps its own: its refusals pass `""`.
    pub fn response(&self, req: &Request, to_tag: &str) -> Response {
        let tag = Some(to_tag).filter(|t| !t.is_empty());
        let mut r = req.response(self.status(), Some(self.reason()), tag);
        r.common.headers = self.headers();
        r
    }

    /// Counts the refusal in `softswitch_sip_messages_rejected_total` by its
    /// [`Refusal::metric_reason`] (nothing for one counted elsewhere).
    pub fn count(&self) {
        if let Some(reason) = self.metric_reason() {
            metrics::sip_message_rejected(reason);
        }
    }

    /// The digest verdict ([`crate::auth::Authenticator::verify_request`]) as a refusal, counting a
    /// failure (anything but missing credentials) in `softswitch_auth_failures_total`:
    /// the authenticated user (and whether the same request was authenticated before:
    /// a retransmission), or 401/407 with the values `challenge(stale, failed)` gives
    /// (`Authenticator::challenge` over the credentials the caller picks), 403 after
    /// repeated failures, 400 for credentials that do not parse.
    pub fn from_verdict(
        verdict: Verdict,
        by: Challenger,
        challenge: impl FnOnce(bool, Option<Algorithm>) -> Vec<String>,
    ) -> Result<(Authenticated, bool), Refusal> {
        if let Some(reason) = verdict.reason().filter(|r| *r != FailReason::Missing) {
            metrics::auth_failure(reason.as_str());
        }
        match verdict {
            Verdict::Ok {
                user,
                retransmission,
                ..
            } => Ok((user, retransmission)),
            Verdict::Challenge { stale, failed, .. } => Err(Refusal::Challenge {
                by,
                values: challenge(stale, failed),
                stale,
            }),
            Verdict::Forbidden { .. } => Err(Refusal::AuthFailed),
            Verdict::Malformed { .. } => Err(Refusal::BadCredentials(by)),
        }
    }
}

impl From<&RegisterError> for Refusal {
    /// The binding rules' refusals (§10.3 steps 7–8) and the actor path's; a request the
    /// actor could not take after its retries ([`RegisterError::Retry`]) is overloaded.
    fn from(e: &RegisterError) -> Refusal {
        match e {
            RegisterError::IntervalTooBrief { min } => Refusal::IntervalTooBrief { min: *min },
            RegisterError::TooManyContacts { .. } => Refusal::TooManyContacts,
            RegisterError::OutOfOrder => Refusal::BindingOutOfOrder,
            RegisterError::Storage(_) => Refusal::StoreFailed,
            RegisterError::Retry(_) | RegisterError::Overloaded => Refusal::MailboxFull,
        }
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
            Err(refusal) => (refusal.response(req, to_tag), refusal.metric_reason()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{parse_message, Message};

    /// One of every refusal.
    fn every() -> Vec<Refusal> {
        use Refusal::*;
        let mut all = vec![
            NotImplemented,
            MethodNotAllowed,
            UnsupportedUriScheme,
            BadExtension(vec!["foo".into()]),
            UnsupportedMediaType,
            NotAcceptable,
            TooManyHops,
            LoopDetected,
            MergedRequest,
            NotOurDomain,
            NotFound,
            TemporarilyUnavailable,
            CallDoesNotExist,
            ShuttingDown,
            Overloaded,
            AuthFailed,
            NotYourAor,
            FromAnotherUser,
            MissingContact,
            MalformedExpires,
            MalformedContact,
            MalformedContactExpires,
            WildcardNotAlone,
            WildcardWithoutExpiresZero,
            UnsupportedContactScheme,
            IntervalTooBrief { min: 60 },
            SessionIntervalTooSmall { min_se: 90 },
            TooManyContacts,
            BindingOutOfOrder,
            StoreFailed,
            MailboxFull,
            CSeqOutOfOrder,
            NotImplementedInDialog,
            RequestPending,
            OfferPending,
            NoAnswerFromPeer,
            RequestTerminated,
        ];
        for by in [Challenger::Registrar, Challenger::Proxy] {
            all.push(BadCredentials(by));
            for stale in [false, true] {
                all.push(Challenge {
                    by,
                    values: vec!["Digest realm=\"x\"".into()],
                    stale,
                });
            }
        }
        all
    }

    /// Every label a refusal is counted under is in its metric's closed set, so none
    /// falls into `other`.
    #[test]
    fn every_refusal_labels_within_the_closed_sets() {
        for r in every() {
            if let Some(reason) = r.metric_reason() {
                assert!(metrics::REJECT_REASONS.contains(&reason), "{r:?}: {reason}");
            }
            let result = r.register_result();
            assert!(
                metrics::REGISTER_RESULTS.contains(&result),
                "{r:?}: {result}"
            );
            assert!((400..700).contains(&r.status()), "{r:?}");
        }
    }

    #[test]
    fn challenges_and_their_headers() {
        let head = "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nFrom: <sip:alice@example.test>;tag=1\r\nTo: <sip:alice@example.test>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n";
        let Ok(Message::Request(req)) = parse_message(head.as_bytes(), b"") else {
            panic!()
        };
        let r = Refusal::Challenge {
            by: Challenger::Registrar,
            values: vec!["a".into(), "b".into()],
            stale: true,
        }
        .response(&req, "t");
        assert_eq!((r.status, r.reason.as_str()), (401, "Unauthorized"));
        assert_eq!(r.common.header_values("WWW-Authenticate").count(), 2);
        assert_eq!(r.common.to.tag(), Some("t"));
        let r = Refusal::IntervalTooBrief { min: 60 }.response(&req, "t");
        assert_eq!(r.common.header("Min-Expires"), Some("60"));
        let r = Refusal::SessionIntervalTooSmall { min_se: 90 }.response(&req, "t");
        assert_eq!((r.status, r.common.header("Min-SE")), (422, Some("90")));
        let r = Refusal::MailboxFull.response(&req, "t");
        assert_eq!(r.common.header("Retry-After"), Some("1"));
        // An in-dialog refusal keeps the request's To as it is.
        let r = Refusal::CSeqOutOfOrder.response(&req, "");
        assert_eq!(r.common.to.tag(), None);
    }
}
