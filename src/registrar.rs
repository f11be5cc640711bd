//! The registrar's SIP side (RFC 3261 §10.3, RFC 3327, RFC 5626 §6, RFC 7616): turns a
//! REGISTER into a [`RegisterUpdate`] for the AOR's actor, and the actor's outcome into
//! the response.
//!
//! The steps of §10.3 in order:
//! 1. the Request-URI must name our domain (else 403, no relaying; 416 for other schemes
//!    is the endpoint's);
//! 2. Require is checked by [`crate::endpoint::Endpoint::admit`];
//! 3. digest authentication ([`crate::auth`]): 401 with one challenge per algorithm of
//!    the To user's challenge list (the deployment's unless they have one; a name that is
//!    not a user gets the deployment's), `stale=true` for an expired nonce, 403 after
//!    repeated failures, 400 for unparseable credentials;
//! 4. the authenticated user may only register their own AOR (403 otherwise);
//! 5. To must be a SIP/SIPS AOR of our domain (404 otherwise);
//! 6. Contact: `*` only alone and with `Expires: 0` (400 otherwise); every other value a
//!    valid name-addr (400); its `expires` an integer;
//! 7. the binding rules run in the AOR's actor (`softswitch_actors::binding`);
//! 8. the 200 OK lists every binding with its remaining `expires` and a Date header. It
//!    comes back asynchronously, once the binding store has the change, as a
//!    [`Completion`] the driver sends statelessly (§8.2.7; see [`Registrar::handle`]).
//!
//! A contact's comparison key ([`contact_key`]) is its `+sip.instance` (with `reg-id`) when
//! it has one, so a phone that re-registers from a new address replaces its own binding
//! (RFC 5626 §6); else the URI by the rules of §19.1.4. Path (RFC 3327) is stored, and
//! echoed in the 200 when the UA says `Supported: path`.

use crate::auth::Authenticator;
use crate::directory::Directory;
use crate::endpoint::{Challenger, Endpoint, Refusal};
use crate::metrics;
use crate::transport::{Peer, Transport};
use crate::wire::{parse_name_addr, split_list, Header, Host, Request, Response, Uri};
use softswitch_actors::binding::Binding;
use softswitch_actors::location::Location;
use softswitch_actors::port::{
    ContactSet, ContactSpec, RegisterError, RegisterUpdate, Source, TransportKind,
};
use softswitch_actors::registrar::{Registered, Reply};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// A response produced asynchronously, to send statelessly.
#[derive(Debug)]
pub struct Completion {
    /// Where it goes (the request's response target, RFC 3261 §18.2.2).
    pub to: Peer,
    /// The final response.
    pub response: Response,
}

/// A REGISTER on its way through the AOR's actor.
struct Job {
    shared: Arc<Shared>,
    to: Peer,
    req: Request,
    to_tag: String,
}

/// The registrar front.
#[derive(Clone)]
pub struct Registrar {
    shared: Arc<Shared>,
}

struct Shared {
    domain: String,
    endpoint: Arc<Endpoint>,
    directory: Arc<Directory>,
    auth: Arc<Authenticator>,
    location: Location,
    completions: mpsc::UnboundedSender<Completion>,
}

/// How many times a request is handed again to a fresh actor (one that stopped with it
/// queued) before it gets 503.
const MAX_RETRIES: u8 = 3;

impl Registrar {
    /// The registrar of `endpoint.domain`; completions go to `completions`.
    pub fn new(
        endpoint: Arc<Endpoint>,
        directory: Arc<Directory>,
        auth: Arc<Authenticator>,
        location: Location,
        completions: mpsc::UnboundedSender<Completion>,
    ) -> Registrar {
        Registrar {
            shared: Arc::new(Shared {
                domain: endpoint.domain.clone(),
                endpoint,
                directory,
                auth,
                location,
                completions,
            }),
        }
    }

    /// The location service.
    pub fn location(&self) -> &Location {
        &self.shared.location
    }

    /// Handles a REGISTER, statelessly (RFC 3261 §8.2.7): the response now, or `None`
    /// when it will arrive as a [`Completion`] (after the binding store). `to_tag` is the
    /// driver's keyed hash of the request, so a retransmission gets the same tag, and,
    /// answered again through the same steps, the same response: the authenticator
    /// recognises the same request's credentials as a retransmission, not a replay, and
    /// the binding rules treat the same Call-ID and CSeq as already applied. No
    /// transaction is kept, so a registration leaves nothing behind for Timer J (32 s
    /// per REGISTER over UDP, most of the switch's memory under a registration storm).
    pub fn handle(&self, from: &Peer, req: Request, to_tag: String) -> Option<Response> {
        let now = SystemTime::now();
        match self.prepare(&req, from, now) {
            Err(r) => Some(refusal_response(&req, &r, &to_tag)),
            Ok(update) => {
                let job = Job {
                    shared: self.shared.clone(),
                    to: *from,
                    req,
                    to_tag,
                };
                dispatch(Arc::new(job), update, 0);
                None
            }
        }
    }

    fn prepare(
        &self,
        req: &Request,
        from: &Peer,
        now: SystemTime,
    ) -> Result<RegisterUpdate, Refusal> {
        let s = &self.shared;
        // Step 1: the Request-URI names our domain.
        match &req.uri {
            Uri::Sip(u) if s.endpoint.is_local_host(&u.host.host) => {}
            Uri::Sip(_) => return Err(Refusal::NotOurDomain),
            _ => return Err(Refusal::UnsupportedUriScheme),
        }
        // Step 5 needs the To user already to pick the challenges (step 3).
        let to_user = match &req.common.to.uri {
            Uri::Sip(u) if s.endpoint.is_local_host(&u.host.host) => u.user.clone(),
            _ => None,
        };
        // Step 3: authentication.
        let creds_of_to = to_user
            .as_deref()
            .and_then(|u| s.directory.get(u))
            .map(|sub| &sub.credentials);
        let verdict = s.auth.verify_request(
            "REGISTER",
            req.common.header_values("Authorization"),
            &s.domain,
            |user| s.directory.get(user).map(|sub| sub.credentials.clone()),
            from.addr.ip(),
            now,
            Some(request_identity(req)),
        );
        let challenge =
            |stale, failed| s.auth.challenge(&s.domain, creds_of_to, stale, failed, now);
        let (user, _) = Refusal::from_verdict(verdict, Challenger::Registrar, challenge)?;
        // Step 5, then step 4: a SIP AOR of our domain, and the user's own.
        let Some(to_user) = to_user.filter(|u| s.directory.contains(u)) else {
            return Err(Refusal::NotFound);
        };
        if to_user != user.user() {
            return Err(Refusal::NotYourAor);
        }
        // Step 6: the contacts.
        let expires_header = match req.common.header("Expires") {
            None => None,
            Some(v) => Some(parse_delta(v).ok_or(Refusal::MalformedExpires)?),
        };
        let contacts = parse_contacts(req, expires_header)?;
        let path: Vec<String> = req
            .common
            .header_values("Path")
            .flat_map(|v| split_list(v).unwrap_or_default())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        Ok(RegisterUpdate {
            aor: format!("{to_user}@{}", s.domain),
            contacts,
            expires_header,
            call_id: req.common.call_id.clone(),
            cseq: req.common.cseq.seq,
            source: Source {
                transport: match from.transport {
                    Transport::Udp => TransportKind::Udp,
                    Transport::Tcp => TransportKind::Tcp,
                },
                // Where responses go: the packet's source (RFC 3581) over UDP, the
                // received address at the sent-by port over TCP (used only when the
                // connection is gone).
                addr: from.addr,
                conn: from.conn.map(|c| c.0.get()),
            },
            path,
            user_agent: req.common.header("User-Agent").map(str::to_string),
            now_ms: unix_ms(now),
        })
    }
}

/// `GET /api/registrations`: one object per binding (no secrets, no digest material).
pub fn api_registrations(location: &Location, now: SystemTime) -> serde_json::Value {
    let now_ms = unix_ms(now);
    let mut out = Vec::new();
    for (aor, bindings) in location.snapshot() {
        for b in bindings.iter().filter(|b| !b.is_expired(now_ms)) {
            out.push(serde_json::json!({
                "aor": format!("sip:{aor}"),
                "contact": format!("<{}>{}", b.uri, b.params),
                "expires": b.remaining_s(now_ms),
                "source": b.source.addr.to_string(),
                "transport": b.source.transport.as_str(),
                "user_agent": b.user_agent,
                "call_id": b.call_id,
                "cseq": b.cseq,
                "q": f64::from(b.q_millis()) / 1000.0,
                "path": b.path,
            }));
        }
    }
    serde_json::Value::Array(out)
}

/// Feeds the registrations gauge.
#[derive(Debug, Default, Clone, Copy)]
pub struct GaugeObserver;

impl softswitch_actors::port::Observer for GaugeObserver {
    fn bindings_changed(&self, total: usize) {
        metrics::registrations_active(total);
    }
}

fn dispatch(job: Arc<Job>, update: RegisterUpdate, attempt: u8) {
    let location = job.shared.location.clone();
    let reply = Reply::new(move |outcome: Result<Registered, RegisterError>| {
        let response = match outcome {
            Err(RegisterError::Retry(update)) if attempt < MAX_RETRIES => {
                dispatch(job, *update, attempt + 1);
                return;
            }
            Ok(r) => {
                metrics::register_result(if r.changed { "ok" } else { "query" });
                ok_response(&job.req, &r.bindings, &job.to_tag, SystemTime::now())
            }
            Err(e) => {
                if matches!(e, RegisterError::Overloaded) {
                    metrics::mailbox_rejected("registrar");
                }
                refusal_response(&job.req, &Refusal::from(&e), &job.to_tag)
            }
        };
        // The driver may be gone during shutdown; nothing is left to answer then.
        let _ = job.shared.completions.send(Completion {
            to: job.to,
            response,
        });
    });
    location.register(update, reply);
}

/// What makes two REGISTERs the same request (a retransmission): branch, Call-ID, CSeq
/// and From tag.
fn request_identity(req: &Request) -> u64 {
    let mut h = Fnv::default();
    req.common.top_via().and_then(|v| v.branch()).hash(&mut h);
    req.common.call_id.hash(&mut h);
    req.common.cseq.seq.hash(&mut h);
    req.common.from.tag().hash(&mut h);
    h.finish()
}

fn refusal_response(req: &Request, r: &Refusal, to_tag: &str) -> Response {
    metrics::register_result(r.register_result());
    r.response(req, to_tag)
}

/// The 200 OK: every current binding with its remaining expires (§10.3 step 8), a Date,
/// and the Path when the UA supports it (RFC 3327 §5.3).
fn ok_response(req: &Request, bindings: &[Binding], to_tag: &str, now: SystemTime) -> Response {
    let now_ms = unix_ms(now);
    let mut resp = req.response(200, None, Some(to_tag));
    let mut headers = Vec::with_capacity(bindings.len() + 2);
    for b in bindings.iter().filter(|b| !b.is_expired(now_ms)) {
        headers.push(Header::new(
            "Contact",
            format!("<{}>{};expires={}", b.uri, b.params, b.remaining_s(now_ms)),
        ));
    }
    if req
        .common
        .tokens("Supported")
        .any(|t| t.eq_ignore_ascii_case("path"))
    {
        for p in req.common.header_values("Path") {
            headers.push(Header::new("Path", p.to_string()));
        }
    }
    headers.push(Header::new("Date", http_date(now)));
    resp.common.headers = headers;
    resp
}

/// Parses the Contact header fields (§10.3 step 6, §20.10).
fn parse_contacts(req: &Request, expires_header: Option<u32>) -> Result<ContactSet, Refusal> {
    let mut values = Vec::new();
    for v in req.common.header_values("Contact") {
        let parts = split_list(v).map_err(|_| Refusal::MalformedContact)?;
        values.extend(parts.into_iter().map(str::trim).filter(|p| !p.is_empty()));
    }
    if values.is_empty() {
        return Ok(ContactSet::Query);
    }
    if values.contains(&"*") {
        if values.len() != 1 {
            return Err(Refusal::WildcardNotAlone);
        }
        if expires_header != Some(0) {
            return Err(Refusal::WildcardWithoutExpiresZero);
        }
        return Ok(ContactSet::Wildcard);
    }
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        let na = parse_name_addr(v).map_err(|_| Refusal::MalformedContact)?;
        if !matches!(na.uri, Uri::Sip(_)) && !matches!(na.uri, Uri::Tel(_)) {
            // A registrar may bind any URI scheme (§10.2.1), but we can only call SIP.
            return Err(Refusal::UnsupportedContactScheme);
        }
        let mut expires = None;
        let mut params = String::new();
        for p in &na.params {
            if p.name.eq_ignore_ascii_case("expires") {
                let v = p.value.as_deref().unwrap_or("");
                expires = Some(
                    parse_delta(crate::wire::unquote(v)).ok_or(Refusal::MalformedContactExpires)?,
                );
                continue;
            }
            params.push(';');
            params.push_str(&p.name);
            if let Some(v) = &p.value {
                params.push('=');
                params.push_str(v);
            }
        }
        let key = contact_key(&na.uri, &na.params);
        out.push(ContactSpec {
            uri: na.uri.to_string(),
            params,
            expires,
            key,
        });
    }
    Ok(ContactSet::List(out))
}

/// delta-seconds (§20.19, §20.10): digits, saturated to `u32` (an over-large value means
/// "as long as allowed", which the policy then bounds).
fn parse_delta(v: &str) -> Option<u32> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        v.parse::<u64>()
            .map_or(u32::MAX, |n| n.min(u64::from(u32::MAX)) as u32),
    )
}

/// What makes two contacts the same binding: `+sip.instance` (and `reg-id`) when present
/// (RFC 5626 §6), else the URI per RFC 3261 §19.1.4 (scheme and host case-insensitive,
/// user and password case-sensitive, port as written, and the parameters that must match:
/// transport, user, ttl, method, maddr).
pub fn contact_key(uri: &Uri, header_params: &[crate::wire::Param]) -> u64 {
    let mut h = Fnv::default();
    let instance = crate::wire::param_value(header_params, "+sip.instance");
    if let Some(inst) = instance {
        "instance".hash(&mut h);
        inst.trim_matches(['<', '>'])
            .to_ascii_lowercase()
            .hash(&mut h);
        crate::wire::param_value(header_params, "reg-id").hash(&mut h);
        return h.finish();
    }
    match uri {
        Uri::Sip(u) => {
            u.secure.hash(&mut h);
            u.user.hash(&mut h);
            u.password.hash(&mut h);
            match &u.host.host {
                Host::Name(n) => n.to_ascii_lowercase().hash(&mut h),
                Host::V4(a) => a.hash(&mut h),
                Host::V6(a) => a.hash(&mut h),
            }
            u.host.port.hash(&mut h);
            for name in ["transport", "user", "ttl", "method", "maddr"] {
                u.param(name).map(str::to_ascii_lowercase).hash(&mut h);
            }
        }
        other => other.to_string().hash(&mut h),
    }
    h.finish()
}

/// FNV-1a: a stable hash (the key is persisted, so it must not change between runs).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An RFC 1123 date in GMT (RFC 3261 §20.17): `Sat, 13 Nov 2010 23:29:00 GMT`.
pub fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let (year, month, day) = softswitch_actors::billing::civil_from_days(days);
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!("{weekday}, {day:02} {mon} {year} {h:02}:{m:02}:{s:02} GMT")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{parse_message, Message};
    use std::time::Duration;

    fn req(extra: &str) -> Request {
        let head = format!(
            "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nFrom: <sip:alice@example.test>;tag=1\r\nTo: <sip:alice@example.test>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n{extra}"
        );
        match parse_message(head.as_bytes(), b"") {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn date_format() {
        // RFC 3261 §20.17's example instant.
        let t = UNIX_EPOCH + Duration::from_secs(1_289_690_940);
        assert_eq!(http_date(t), "Sat, 13 Nov 2010 23:29:00 GMT");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(http_date(t), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn contacts_wildcard_rules() {
        assert!(matches!(
            parse_contacts(&req(""), None),
            Ok(ContactSet::Query)
        ));
        assert!(matches!(
            parse_contacts(&req("Contact: *\r\n"), Some(0)),
            Ok(ContactSet::Wildcard)
        ));
        assert_eq!(
            parse_contacts(&req("Contact: *\r\n"), None)
                .err()
                .map(|r| r.status()),
            Some(400)
        );
    }

    #[test]
    fn contacts_params_and_keys() {
        let r = req("Contact: <sip:a@H:5070;transport=UDP>;expires=60;q=0.5, <sip:b@h>;+sip.instance=\"<urn:uuid:1>\";reg-id=1\r\nm: <sip:a@h:5070;transport=udp>\r\n");
        let Ok(ContactSet::List(c)) = parse_contacts(&r, None) else {
            panic!()
        };
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].expires, Some(60));
        assert_eq!(c[0].params, ";q=0.5");
        // Host and transport compare case-insensitively.
        assert_eq!(c[0].key, c[2].key);
        assert_ne!(c[0].key, c[1].key);
        // The same instance from another address is the same binding.
        let r2 = req("Contact: <sip:b@10.0.0.9:7000>;+sip.instance=\"<urn:uuid:1>\";reg-id=1\r\n");
        let Ok(ContactSet::List(c2)) = parse_contacts(&r2, None) else {
            panic!()
        };
        assert_eq!(c2[0].key, c[1].key);
        // Bad expires.
        let r3 = req("Contact: <sip:a@h>;expires=soon\r\n");
        assert_eq!(
            parse_contacts(&r3, None).err().map(|r| r.status()),
            Some(400)
        );
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(parse_delta("0"), Some(0));
        assert_eq!(parse_delta(" 3600 "), Some(3600));
        assert_eq!(parse_delta("99999999999999999999"), Some(u32::MAX));
        assert_eq!(parse_delta("-1"), None);
        assert_eq!(parse_delta(""), None);
    }
}
