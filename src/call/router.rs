//! The SIP side of a new call: who calls whom, or why not (RFC 3261 §16.3 and §22.3 as a
//! B2BUA applies them; flows F3–F8 start here).
//!
//! [`CallRouter::route`] takes an initial INVITE that passed [`Endpoint::admit`] and
//! decides, in this order:
//! 1. the Request-URI names our domain (else 403: the switch is no open relay);
//! 2. it has not passed through us already: our own Via in it means a loop (482);
//!    a `Session-Expires` below our `Min-SE` from a phone that supports session timers
//!    gets 422 with our `Min-SE` (RFC 4028 §6, [`session_timer::as_uas`]). Like a 407 it
//!    bills nobody: the phone retries at once, and the retry is the attempt;
//! 3. the caller is one of our users, authenticated by digest (RFC 3261 §22.3): without
//!    valid `Proxy-Authorization` it gets 407 with one `Proxy-Authenticate` per algorithm
//!    of the From user's challenge list (the deployment's unless they have one), `stale`
//!    for an expired nonce, 403 after repeated failures from one source; a From that
//!    names another of our users is 403 ([`identity::check_from`]);
//! 4. the callee, the Request-URI's user (a `tel:` number as a user name), is a
//!    subscriber (else 404); the forwarding decided before anyone rings is followed
//!    (`forward_unconditional`; busy without `call_waiting`: `forward_busy`, else 486
//!    from the switch; a loop 482, more than `MAX_FORWARD_HOPS` 483: see
//!    [`super::forward`]); the user it ends at has at least one binding (else 480).
//!
//! The caller's identity is the authenticated user, whatever the From says: it is what
//! the CDR bills, and what the callee sees ([`identity::of_caller`]: the B-legs' From). Max-Forwards 0 (483) is refused earlier, by the endpoint.
//!
//! Every refusal says whom it bills ([`Bill`]): an authenticated caller's attempt gets
//! one CDR (`CallHub::refused` writes it before the answer goes), a challenge or failed
//! credentials get none, and a refusal decided before step 3 leaves the credentials
//! unread ([`Bill::Unverified`]): [`CallRouter::caller`] verifies them only then, so an
//! INVITE without credentials (nearly every call's first) costs nothing more.

use super::forward::Callees;
use crate::auth::{Authenticated, Authenticator};
use crate::call::identity::{self, Identity};
use crate::call::session_timer::{self, Policy};
use crate::directory::Directory;
use crate::endpoint::{Challenger, Endpoint, Refusal};
use crate::transport::Peer;
use crate::wire::{HostPort, Request, Response, Uri};
use softswitch_actors::binding::Binding;
use softswitch_actors::call::forward::{Chain, Stop};
use softswitch_actors::location::Location;
use std::sync::Arc;
use std::time::SystemTime;

/// A call the switch will set up.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The authenticated caller: what the CDR bills.
    pub caller: Authenticated,
    /// What the B-legs say about the caller (their From).
    pub identity: Identity,
    /// The callee as dialled (the Request-URI's user).
    pub callee: String,
    /// The callee's AOR, `user@domain`.
    pub aor: String,
    /// The bindings of the user the call goes to (the callee, or where its forwarding
    /// sent it: `chain`), to ring in parallel.
    pub targets: Arc<Vec<Binding>>,
    /// The forwarding followed before ringing anyone (no hops for most calls).
    pub chain: Chain,
    /// The credentials were this request's again: a retransmission of an attempt the
    /// switch already answered.
    pub retransmission: bool,
}

/// Whom a refused INVITE bills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bill {
    /// A new attempt by this authenticated caller: its CDR is written before the answer.
    Caller(Authenticated),
    /// A retransmission of an attempt already answered: its CDR exists, none more.
    Again,
    /// Refused before authentication: the request's credentials, if it carries any, are
    /// still to be verified ([`CallRouter::caller`]) to bill the attempt.
    Unverified,
    /// Nobody: no verified caller (a challenge, failed credentials), or the attempt is
    /// another request's (a merged copy, billed by its call).
    Nobody,
}

/// A refused INVITE: what to answer, and whom the attempt bills.
#[derive(Debug)]
pub struct Refused {
    /// The answer (sent statelessly).
    pub response: Box<Response>,
    /// Whom it bills.
    pub bill: Bill,
}

impl Refused {
    /// `response`, billing `bill`.
    pub fn new(response: Response, bill: Bill) -> Refused {
        Refused {
            response: Box::new(response),
            bill,
        }
    }
}

/// Decides where new calls go.
pub struct CallRouter {
    endpoint: Arc<Endpoint>,
    directory: Arc<Directory>,
    auth: Arc<Authenticator>,
    location: Location,
    /// Our own Via sent-by values (every listener, and the advertised address).
    ours: Vec<HostPort>,
    /// The callees' forwarding and busy state.
    callees: Arc<Callees>,
    /// The switch's session-timer values (`Min-SE`: the 422).
    session: Policy,
}

impl CallRouter {
    /// A router over the switch's directory, authenticator and location service; `ours`
    /// are the sent-by values the switch puts in its own Vias.
    pub fn new(
        endpoint: Arc<Endpoint>,
        directory: Arc<Directory>,
        auth: Arc<Authenticator>,
        location: Location,
        ours: Vec<HostPort>,
        callees: Arc<Callees>,
        session: Policy,
    ) -> CallRouter {
        CallRouter {
            endpoint,
            directory,
            auth,
            location,
            ours,
            callees,
            session,
        }
    }

    /// Routes an initial INVITE from `from` (see the module doc for the order);
    /// `attempt` identifies the request (a hash of its Call-ID, From tag, CSeq and
    /// branch), so its retransmission's credentials verify again as a retransmission.
    pub fn route(
        &self,
        req: &Request,
        from: &Peer,
        now: SystemTime,
        attempt: u64,
    ) -> Result<Routed, (Refusal, Bill)> {
        let domain = &self.endpoint.domain;
        let before_auth = |r: Refusal| (r, Bill::Unverified);
        // 1. Our domain, and a callee.
        let callee = match &req.uri {
            Uri::Sip(u) if self.endpoint.is_local_host(&u.host.host) => u.user.clone(),
            Uri::Sip(_) => return Err(before_auth(Refusal::NotOurDomain)),
            Uri::Tel(t) => Some(t.digits()),
            Uri::Other { .. } => return Err(before_auth(Refusal::UnsupportedUriScheme)),
        };
        // 2. Loops.
        if self
            .ours
            .iter()
            .any(|o| crate::call::dialog::is_loop(req, o))
        {
            return Err(before_auth(Refusal::LoopDetected));
        }
        // 2b. A session interval too small for us (RFC 4028 §6, §9).
        let asked = session_timer::Asked::of(&req.common);
        if let Err(small) = session_timer::as_uas(&asked, &self.session) {
            let r = Refusal::SessionIntervalTooSmall {
                min_se: small.min_se,
            };
            return Err((r, Bill::Nobody));
        }
        // 3. The caller.
        let from_user = match &req.common.from.uri {
            Uri::Sip(u) => u.user.clone(),
            _ => None,
        };
        let verdict = self.auth.verify_request(
            "INVITE",
            req.common.header_values("Proxy-Authorization"),
            domain,
            |user| self.directory.get(user).map(|s| s.credentials.clone()),
            from.addr.ip(),
            now,
            Some(attempt),
        );
        let challenge = |stale, failed| {
            let creds = from_user
                .as_deref()
                .and_then(|u| self.directory.get(u))
                .map(|s| &s.credentials);
            self.auth.challenge(domain, creds, stale, failed, now)
        };
        let (caller, retransmission) = Refusal::from_verdict(verdict, Challenger::Proxy, challenge)
            .map_err(|r| (r, Bill::Nobody))?;
        let after_auth = |r: Refusal| {
            let bill = if retransmission {
                Bill::Again
            } else {
                Bill::Caller(caller.clone())
            };
            (r, bill)
        };
        // 3b. The caller's identity: a From naming another of our users is refused.
        if let Err(r) = identity::check_from(req, caller.user(), &self.endpoint, &self.directory) {
            return Err(after_auth(r));
        }
        // 4. The callee.
        let Some(callee) = callee.filter(|c| self.directory.contains(c)) else {
            return Err(after_auth(Refusal::NotFound));
        };
        let mut chain = Chain::new(&callee);
        if let Err(stop) = self.callees.settle(&mut chain) {
            return Err(after_auth(match stop {
                Stop::Loop => Refusal::LoopDetected,
                Stop::TooManyHops => Refusal::TooManyHops,
                Stop::Busy => Refusal::BusyHere,
                Stop::NotFound => Refusal::NotFound,
            }));
        }
        let aor = format!("{}@{domain}", chain.current());
        let Some(targets) = self.location.lookup(&aor) else {
            return Err(after_auth(Refusal::TemporarilyUnavailable));
        };
        let display_name = self
            .directory
            .get(caller.user())
            .and_then(|s| s.profile.display_name.as_deref());
        let identity = identity::of_caller(req, caller.user(), domain, display_name);
        Ok(Routed {
            identity,
            caller,
            callee,
            aor,
            targets,
            chain,
            retransmission,
        })
    }

    /// Whom an INVITE refused before authentication ([`Bill::Unverified`]) bills: its
    /// credentials verified as in step 3, when it carries any (`None` without, so a
    /// request without credentials costs no hashing). A retransmission of an attempt
    /// already billed is [`Bill::Again`]; credentials that do not verify bill nobody (the
    /// refusal stands: no challenge is sent instead of it).
    pub fn caller(&self, req: &Request, from: &Peer, now: SystemTime, attempt: u64) -> Bill {
        if req.common.header("Proxy-Authorization").is_none() {
            return Bill::Nobody;
        }
        let verdict = self.auth.verify_request(
            "INVITE",
            req.common.header_values("Proxy-Authorization"),
            &self.endpoint.domain,
            |user| self.directory.get(user).map(|s| s.credentials.clone()),
            from.addr.ip(),
            now,
            Some(attempt),
        );
        // No challenge is sent instead of the refusal: its values are never made.
        match Refusal::from_verdict(verdict, Challenger::Proxy, |_, _| Vec::new()) {
            Ok((_, true)) => Bill::Again,
            Ok((user, false)) => Bill::Caller(user),
            Err(_) => Bill::Nobody,
        }
    }

    /// The callee of an INVITE as dialled, in the form a call's CDR gives it: a user at
    /// one of our hosts (or a `tel:` number) as `sip:user@domain`, any other
    /// Request-URI as written.
    pub fn dialled(&self, req: &Request) -> String {
        let domain = &self.endpoint.domain;
        match &req.uri {
            Uri::Sip(u) if self.endpoint.is_local_host(&u.host.host) && u.user.is_some() => {
                format!("sip:{}@{domain}", u.user.as_deref().unwrap_or_default())
            }
            Uri::Tel(t) => format!("sip:{}@{domain}", t.digits()),
            other => other.to_string(),
        }
    }

    /// The served domain (the CDR's parties are `sip:user@domain`).
    pub fn domain(&self) -> &str {
        &self.endpoint.domain
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthConfig;
    use crate::config::UserConfig;
    use crate::transport::Transport;
    use crate::wire::{parse_message, Host, Message};
    use softswitch_actors::port::{NoObserver, NoStore, Policy};
    use std::sync::atomic::AtomicBool;

    const DOMAIN: &str = "example.test";

    fn user(name: &str) -> UserConfig {
        UserConfig {
            user: name.into(),
            password: Some(format!("{name}-pw")),
            ..UserConfig::default()
        }
    }

    fn router() -> CallRouter {
        let endpoint = Arc::new(Endpoint {
            domain: DOMAIN.into(),
            local: vec!["127.0.0.1:5060".parse().unwrap()],
            advertised: None,
            draining: Arc::new(AtomicBool::new(false)),
            tag_key: Default::default(),
        });
        let directory =
            Arc::new(Directory::new(&[user("alice"), user("bob"), user("carol")], DOMAIN).unwrap());
        let auth = Arc::new(Authenticator::new(AuthConfig::default(), [7; 32]));
        let location = Location::new(
            Arc::new(NoStore),
            Policy::default(),
            8,
            Arc::new(NoObserver),
        );
        // bob is registered; carol is a subscriber without bindings.
        let bob = serde_json::json!([{
            "uri": "sip:bob@127.0.0.1:5070", "key": 1, "expires_at_ms": u64::MAX / 2,
            "call_id": "c", "cseq": 1,
            "source": {"transport": "udp", "addr": "127.0.0.1:5070"}
        }]);
        location.restore(
            vec![("bob@example.test".to_string(), bob.to_string().into_bytes())],
            0,
        );
        let ours = vec![HostPort {
            host: Host::V4([127, 0, 0, 1].into()),
            port: Some(5060),
        }];
        let callees = Arc::new(Callees::new(
            directory.clone(),
            location.clone(),
            DOMAIN,
            std::time::Duration::from_secs(20),
        ));
        let session = crate::call::session_timer::Policy {
            session_expires: 1800,
            min_se: 90,
        };
        CallRouter::new(endpoint, directory, auth, location, ours, callees, session)
    }

    fn invite(ruri: &str, extra: &str) -> Request {
        let head = format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKi1\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag=a1\r\nTo: <{ruri}>\r\nCall-ID: call-1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5090>\r\n{extra}"
        );
        match parse_message(head.as_bytes(), b"") {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn peer() -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: "127.0.0.1:5090".parse().unwrap(),
            conn: None,
        }
    }

    /// Answers a 407 as alice would (MD5, qop=auth, nc=1).
    fn credentials(challenge: &str, ruri: &str, password: &str) -> String {
        use md5::{Digest, Md5};
        let p = |name: &str| {
            let start = challenge.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            let end = challenge[start..].find('"').unwrap() + start;
            challenge[start..end].to_string()
        };
        let h = |s: String| format!("{:x}", Md5::digest(s.as_bytes()));
        let (nonce, opaque) = (p("nonce"), p("opaque"));
        let ha1 = h(format!("alice:{DOMAIN}:{password}"));
        let ha2 = h(format!("INVITE:{ruri}"));
        let resp = h(format!("{ha1}:{nonce}:00000001:cn:auth:{ha2}"));
        format!(
            "Proxy-Authorization: Digest username=\"alice\", realm=\"{DOMAIN}\", nonce=\"{nonce}\", uri=\"{ruri}\", response=\"{resp}\", algorithm=MD5, cnonce=\"cn\", nc=00000001, qop=auth, opaque=\"{opaque}\"\r\n"
        )
    }

    fn authorised(r: &CallRouter, ruri: &str) -> Result<Routed, (Refusal, Bill)> {
        let now = SystemTime::now();
        let Err((Refusal::Challenge { values: ch, .. }, Bill::Nobody)) =
            r.route(&invite(ruri, ""), &peer(), now, 1)
        else {
            panic!("no 407 first")
        };
        let md5 = ch.iter().find(|c| c.contains("algorithm=MD5")).unwrap();
        r.route(
            &invite(ruri, &credentials(md5, ruri, "alice-pw")),
            &peer(),
            now,
            2,
        )
    }

    #[test]
    fn unauthenticated_invite_gets_407_with_proxy_authenticate() {
        let r = router();
        let req = invite("sip:bob@example.test", "");
        let (rej, bill) = r.route(&req, &peer(), SystemTime::now(), 1).unwrap_err();
        assert_eq!(bill, Bill::Nobody, "a challenge bills nobody");
        let resp = rej.response(&req, "t");
        assert_eq!(resp.status, 407);
        let values: Vec<&str> = resp.common.header_values("Proxy-Authenticate").collect();
        assert_eq!(values.len(), 1, "the default: MD5 alone");
        assert!(values[0].contains("algorithm=MD5"));
    }

    #[test]
    fn authenticated_call_to_a_registered_user_is_routed() {
        let r = router();
        let routed = authorised(&r, "sip:bob@example.test").unwrap();
        assert_eq!(routed.caller.user(), "alice");
        assert_eq!(routed.callee, "bob");
        assert_eq!(routed.targets.len(), 1);
        assert!(!routed.retransmission);
    }

    /// Refused after authentication: billed to the authenticated caller, once; the same
    /// request again (a retransmission: same credentials, same attempt) bills nobody new.
    #[test]
    fn unknown_404_unregistered_480_billed_to_the_caller_once() {
        let r = router();
        for (ruri, refusal) in [
            ("sip:nobody@example.test", Refusal::NotFound),
            ("sip:carol@example.test", Refusal::TemporarilyUnavailable),
        ] {
            let now = SystemTime::now();
            let Err((Refusal::Challenge { values: ch, .. }, _)) =
                r.route(&invite(ruri, ""), &peer(), now, 1)
            else {
                panic!("no 407 first")
            };
            let md5 = ch.iter().find(|c| c.contains("algorithm=MD5")).unwrap();
            let req = invite(ruri, &credentials(md5, ruri, "alice-pw"));
            let (rej, bill) = r.route(&req, &peer(), now, 2).unwrap_err();
            assert_eq!(rej, refusal);
            assert!(matches!(bill, Bill::Caller(c) if c.user() == "alice"));
            let (rej_again, again) = r.route(&req, &peer(), now, 2).unwrap_err();
            assert_eq!((rej_again, again), (rej, Bill::Again), "{ruri}");
        }
    }

    /// A refusal before authentication (403, 416, 482) leaves the credentials unread;
    /// [`CallRouter::caller`] verifies them then: the caller once, `Again` for the same
    /// attempt, nobody without credentials or with wrong ones.
    #[test]
    fn a_refusal_before_authentication_is_billed_by_verifying_then() {
        let r = router();
        let now = SystemTime::now();
        let ruri = "sip:bob@example.test";
        let loop_via = "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKus\r\n";
        let bare = invite(ruri, loop_via);
        assert_eq!(
            r.route(&bare, &peer(), now, 1).unwrap_err().1,
            Bill::Unverified
        );
        assert_eq!(r.caller(&bare, &peer(), now, 1), Bill::Nobody);
        let Err((Refusal::Challenge { values: ch, .. }, _)) =
            r.route(&invite(ruri, ""), &peer(), now, 2)
        else {
            panic!("no 407")
        };
        let md5 = ch.iter().find(|c| c.contains("algorithm=MD5")).unwrap();
        let creds = credentials(md5, ruri, "alice-pw");
        let looped = invite(ruri, &format!("{creds}{loop_via}"));
        let (rej, bill) = r.route(&looped, &peer(), now, 3).unwrap_err();
        assert_eq!((rej.status(), bill), (482, Bill::Unverified));
        assert!(
            matches!(r.caller(&looped, &peer(), now, 3), Bill::Caller(c) if c.user() == "alice")
        );
        assert_eq!(r.caller(&looped, &peer(), now, 3), Bill::Again);
        let wrong = invite(
            ruri,
            &format!("{}{loop_via}", credentials(md5, ruri, "wrong")),
        );
        assert_eq!(r.caller(&wrong, &peer(), now, 4), Bill::Nobody);
    }

    #[test]
    fn another_domain_is_refused_before_any_challenge() {
        let r = router();
        let rej = r
            .route(
                &invite("sip:bob@elsewhere.example", ""),
                &peer(),
                SystemTime::now(),
                1,
            )
            .unwrap_err()
            .0;
        assert_eq!(rej, Refusal::NotOurDomain);
        assert_eq!(rej.status(), 403);
    }

    #[test]
    fn our_own_via_is_a_loop() {
        let r = router();
        let req = invite(
            "sip:bob@example.test",
            "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKus\r\n",
        );
        let rej = r.route(&req, &peer(), SystemTime::now(), 1).unwrap_err().0;
        assert_eq!(rej.status(), 482);
    }

    #[test]
    fn wrong_password_is_challenged_again() {
        let r = router();
        let now = SystemTime::now();
        let ruri = "sip:bob@example.test";
        let Err((Refusal::Challenge { values: ch, .. }, _)) =
            r.route(&invite(ruri, ""), &peer(), now, 1)
        else {
            panic!()
        };
        let md5 = ch.iter().find(|c| c.contains("algorithm=MD5")).unwrap();
        let bad = invite(ruri, &credentials(md5, ruri, "wrong"));
        assert!(matches!(
            r.route(&bad, &peer(), now, 2),
            Err((Refusal::Challenge { .. }, Bill::Nobody))
        ));
    }
}
