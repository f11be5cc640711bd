//! SIP digest authentication done by the switch itself, sans-IO (RFC 3261 §22.1, §22.4;
//! RFC 7616 §3.3, §3.4, §3.7, §5; RFC 8760 §2 and §3).
//!
//! [`Authenticator::challenge`] builds the `WWW-Authenticate` / `Proxy-Authenticate`
//! values for a 401/407; [`Authenticator::verify`] judges the `Authorization` /
//! `Proxy-Authorization` values of the retried request and returns a [`Verdict`] that maps
//! onto one answer (200-path, 401/407, 403, 400). Nothing here does I/O, logs, records
//! metrics, spawns or reads the clock: time is an argument and the caller counts
//! [`FailReason::as_str`] labels. The type is `Send + Sync` and meant to be shared in an
//! `Arc`.
//!
//! * [`digest`]: algorithms, [`Credentials`] (HA1 per algorithm), the credentials
//!   parser and the response computation.
//! * `nonce`: stateless nonces, HMAC-authenticated, carrying their issue time.
//! * `replay`: the highest nonce count accepted per nonce (bounded).
//! * `limiter`: authentication failures per source IP and blocking (bounded).
//!
//! Policy (what RFC 7616 leaves to the server):
//! * what a challenge offers is a list in the operator's order, most preferred first
//!   (RFC 7616 §3.7, RFC 8760 §2.4): the deployment's `auth.algorithms` (default MD5
//!   alone), or a user's own `algorithms`. It never depends on which HA1s are stored, so
//!   a user whose credentials are only an MD5 HA1 is challenged exactly as a name that
//!   is not a user. (A user with a list of their own is distinguishable by it; that is
//!   the operator's choice, made per user.) MD5 alone is the default because many
//!   clients fail on any challenge but MD5 (libre/baresip 1.x refuses the whole 401 if
//!   one value names another algorithm; SIPp 3.6 and old PJSIP read the first value
//!   only); RFC 8760 clients pick the topmost one they support, so listing SHA-256 is an
//!   explicit choice for fleets that all handle it;
//! * an answer in an algorithm the user cannot use (no HA1 stored for it, or not in the
//!   user's list) is judged as an unknown user's answer: the same hashing, the same
//!   counted failure, the same re-challenge;
//! * a re-challenge after a failed answer (unknown user, wrong password, no credential
//!   for its algorithm) offers the list without the algorithm just answered, so a client
//!   that always picks its strongest algorithm falls back to one the user has instead of
//!   repeating it until blocked. It depends only on that algorithm, never on the user,
//!   and every such failure counts toward the source's limit alike (an uncounted kind
//!   would either leave guesses unlimited or show, by never blocking, which names exist);
//! * only `qop=auth`, and it is required (RFC 7616 §3.4; RFC 8760 §2.6); `auth-int`,
//!   `-sess` algorithms and RFC 2069 (qop-less) responses are refused;
//! * `stale=true` only when the response was right for an expired nonce or repeated a
//!   nonce count (RFC 7616 §3.3), so a phone re-registers silently; it offers the whole
//!   list again;
//! * an unknown user and a wrong password give the same answer (a fresh challenge);
//! * the `uri` parameter is hashed as the client sent it and not compared with the
//!   Request-URI (RFC 7616 §3.4.6 suggests it): the response binds it, and the nonce
//!   count stops a captured response from being used again;
//! * the nonce is checked before `lookup` runs, so requests with forged nonces never
//!   reach the user directory.

pub mod digest;
mod limiter;
mod nonce;
mod replay;

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use subtle::ConstantTimeEq;

pub use digest::{Algorithm, Algorithms, Credentials};

use digest::{compute_response, parse_credentials, DigestResponse, ParseError};
use limiter::{FailureLimiter, LimiterConfig};
use nonce::NonceKey;
use replay::{NcCheck, NonceCounts};

/// How far in the future a nonce's issue time may be (clock skew between the nodes that
/// share a secret) before it counts as stale.
const FUTURE_SKEW_SECS: u64 = 5;

/// Settings of an [`Authenticator`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// The deployment's challenge list, in this order (most preferred first); used for
    /// every user without a list of their own and for names that are not users.
    /// Duplicates are ignored; an empty list means the default (MD5 alone).
    pub algorithms: Vec<Algorithm>,
    /// How long a nonce is good for.
    pub nonce_lifetime: Duration,
    /// Failures (wrong password, unknown user, bad nonce) from one source IP within
    /// `failure_window` that block it; 0 disables the limit.
    pub max_failures: u32,
    /// The window in which failures are counted (it opens at the first failure).
    pub failure_window: Duration,
    /// How long a source stays blocked.
    pub block: Duration,
    /// The bound on nonces whose nonce count is tracked.
    pub max_tracked_nonces: usize,
    /// The bound on source IPs tracked by the failure limit.
    pub max_tracked_sources: usize,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            algorithms: vec![Algorithm::Md5],
            nonce_lifetime: Duration::from_secs(300),
            max_failures: 5,
            failure_window: Duration::from_secs(60),
            block: Duration::from_secs(60),
            max_tracked_nonces: 1_000_000,
            max_tracked_sources: 10_000,
        }
    }
}

/// Why a request was not authenticated: a closed set, usable as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// No Digest credentials at all (the normal first request).
    Missing,
    /// The credentials did not parse.
    Malformed,
    /// The username is not known.
    UnknownUser,
    /// The response did not match.
    WrongPassword,
    /// A right response for an expired nonce, or the nonce table was full.
    StaleNonce,
    /// A nonce or opaque value we did not issue.
    BadNonce,
    /// A nonce count not greater than the last one accepted for that nonce.
    NcReplay,
    /// An algorithm we do not implement (unknown, `-sess`).
    Algorithm,
    /// The user has no credential for the algorithm answered (no HA1 stored for it, or
    /// it is not in the user's list): judged as an unknown user is.
    NoCredential,
    /// No credentials for our realm.
    Realm,
    /// No qop, or a qop other than `auth`.
    Qop,
    /// This failure reached the limit; the source is now blocked.
    TooManyFailures,
    /// The source is blocked.
    Blocked,
}

impl FailReason {
    /// Every reason, for zero-initialising metric series.
    pub const ALL: [FailReason; 13] = [
        FailReason::Missing,
        FailReason::Malformed,
        FailReason::UnknownUser,
        FailReason::WrongPassword,
        FailReason::StaleNonce,
        FailReason::BadNonce,
        FailReason::NcReplay,
        FailReason::Algorithm,
        FailReason::NoCredential,
        FailReason::Realm,
        FailReason::Qop,
        FailReason::TooManyFailures,
        FailReason::Blocked,
    ];

    /// The snake_case metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailReason::Missing => "missing",
            FailReason::Malformed => "malformed",
            FailReason::UnknownUser => "unknown_user",
            FailReason::WrongPassword => "wrong_password",
            FailReason::StaleNonce => "stale_nonce",
            FailReason::BadNonce => "bad_nonce",
            FailReason::NcReplay => "nc_replay",
            FailReason::Algorithm => "algorithm",
            FailReason::NoCredential => "no_credential",
            FailReason::Realm => "realm",
            FailReason::Qop => "qop",
            FailReason::TooManyFailures => "too_many_failures",
            FailReason::Blocked => "blocked",
        }
    }

    /// Whether this reason counts against the source's failure limit.
    fn counts(self) -> bool {
        // Not BadNonce: after a restart (a new secret) every phone's nonce is one we no
        // longer recognise, and ten phones behind one NAT address must not get blocked
        // for that. A forged nonce gains nothing: it is refused before any lookup.
        matches!(
            self,
            FailReason::WrongPassword | FailReason::UnknownUser | FailReason::NoCredential
        )
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Proof that a request carried valid credentials for a user: only
/// [`Authenticator::verify`] makes one (its field is private to this module). What must
/// only ever act for an authenticated user (a call's caller, the owner of a
/// registration) takes this type, so it cannot be handed a name read from the request's
/// From or To by mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated(String);

impl Authenticated {
    /// The user name the credentials were verified for (as the client sent it).
    pub fn user(&self) -> &str {
        &self.0
    }
}

/// The outcome of [`Authenticator::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated.
    Ok {
        /// Whom for.
        user: Authenticated,
        /// The same request was authenticated before (a retransmission).
        retransmission: bool,
        /// The algorithm used.
        algorithm: Algorithm,
    },
    /// Answer 401 (REGISTER) / 407 (other requests) with fresh
    /// [`Authenticator::challenge`] values, passing `stale` and `failed` on.
    Challenge {
        /// Say `stale=true`: the credentials were right, only the nonce was not.
        stale: bool,
        /// Why.
        reason: FailReason,
        /// The algorithm of an answer that did not prove the password (unknown user,
        /// wrong password, no credential for it): the re-challenge leaves it out.
        failed: Option<Algorithm>,
    },
    /// Answer 403.
    Forbidden {
        /// [`FailReason::TooManyFailures`] or [`FailReason::Blocked`].
        reason: FailReason,
    },
    /// Answer 400: the credentials did not parse.
    Malformed {
        /// [`FailReason::Malformed`].
        reason: FailReason,
    },
}

impl Verdict {
    /// The failure reason, `None` for [`Verdict::Ok`].
    pub fn reason(&self) -> Option<FailReason> {
        match self {
            Verdict::Ok { .. } => None,
            Verdict::Challenge { reason, .. }
            | Verdict::Forbidden { reason }
            | Verdict::Malformed { reason } => Some(*reason),
        }
    }
}

/// Issues challenges and verifies digest credentials. `Send + Sync`; share it in an `Arc`.
/// `Debug` shows the configuration, never the secret.
pub struct Authenticator {
    config: AuthConfig,
    /// `config.algorithms`, deduplicated, in order.
    offered: Algorithms,
    nonces: NonceKey,
    opaque: String,
    counts: NonceCounts,
    limiter: FailureLimiter,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("config", &self.config)
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Unix seconds; a clock before 1970 reads as 0.
fn unix_secs(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Escapes `"` and `\` for a quoted-string (RFC 3261 §25.1 quoted-pair).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Authenticator {
    /// An authenticator whose nonces and opaque value derive from `secret` (32 random
    /// bytes; nodes that share it accept each other's nonces).
    pub fn new(config: AuthConfig, secret: [u8; 32]) -> Authenticator {
        let mut offered = Algorithms::new(config.algorithms.iter().copied());
        if offered.is_empty() {
            offered = Algorithms::new(AuthConfig::default().algorithms);
        }
        let nonces = NonceKey::new(secret);
        let limiter = FailureLimiter::new(LimiterConfig {
            max_failures: config.max_failures,
            window: config.failure_window.as_secs(),
            block: config.block.as_secs(),
            max_sources: config.max_tracked_sources,
        });
        Authenticator {
            opaque: nonces.opaque(),
            counts: NonceCounts::new(config.max_tracked_nonces),
            config,
            offered,
            nonces,
            limiter,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The list a challenge to the holder of `creds` offers: their own list, else the
    /// deployment's (also for `None`, a name that is not a user).
    fn offer_for(&self, creds: Option<&Credentials>) -> Algorithms {
        creds
            .and_then(Credentials::algorithms)
            .unwrap_or(self.offered)
    }

    /// The WWW-Authenticate / Proxy-Authenticate values for a 401/407, in the order of
    /// the list offered to `creds` (the user the request is for: their own list, else the
    /// deployment's; `None` when the name is not a user), all with one fresh nonce, e.g.
    /// `Digest realm="example.test", nonce="…", opaque="…", algorithm=MD5, qop="auth"`
    /// (then `, stale=true` when `stale`). `failed` is [`Verdict::Challenge`]'s: that
    /// algorithm is left out unless it is the only one. Which HA1s `creds` holds never
    /// matters, so the challenge tells nothing about how a user is stored.
    pub fn challenge(
        &self,
        realm: &str,
        creds: Option<&Credentials>,
        stale: bool,
        failed: Option<Algorithm>,
        now: SystemTime,
    ) -> Vec<String> {
        let nonce = self
            .nonces
            .issue(realm, unix_secs(now), rand::random::<[u8; 8]>());
        let offer = self.offer_for(creds);
        let offer = match failed {
            Some(a) => offer.without(a),
            None => offer,
        };
        let realm = quote(realm);
        let stale = if stale { ", stale=true" } else { "" };
        offer
            .iter()
            .map(|a| {
                format!(
                    "Digest realm=\"{realm}\", nonce=\"{nonce}\", opaque=\"{}\", \
                     algorithm={}, qop=\"auth\"{stale}",
                    self.opaque,
                    a.as_str()
                )
            })
            .collect()
    }

    /// Checks the request's credentials. `headers` are all values of Authorization
    /// (REGISTER) or Proxy-Authorization (other requests) in arrival order; the first
    /// Digest one whose realm equals `realm` is used (RFC 3261 §22.4). `lookup` maps a
    /// username to its credentials (None: unknown user) and is called at most once.
    /// A blocked `source` is refused before anything is parsed or hashed.
    pub fn verify<'a>(
        &self,
        method: &str,
        headers: impl Iterator<Item = &'a str>,
        realm: &str,
        lookup: impl FnOnce(&str) -> Option<Credentials>,
        source: IpAddr,
        now: SystemTime,
    ) -> Verdict {
        self.verify_request(method, headers, realm, lookup, source, now, None)
    }

    /// [`Authenticator::verify`] for a request identified by `request` (a hash of its
    /// branch, Call-ID and CSeq): the same credentials from the same request again are a
    /// retransmission (`Verdict::Ok { retransmission: true, .. }`), not a replay, so a
    /// stateless server can answer it again.
    #[allow(clippy::too_many_arguments)]
    pub fn verify_request<'a>(
        &self,
        method: &str,
        headers: impl Iterator<Item = &'a str>,
        realm: &str,
        lookup: impl FnOnce(&str) -> Option<Credentials>,
        source: IpAddr,
        now: SystemTime,
        request: Option<u64>,
    ) -> Verdict {
        let now = unix_secs(now);
        if self.limiter.is_blocked(source, now) {
            return Verdict::Forbidden {
                reason: FailReason::Blocked,
            };
        }
        let resp = match select(headers, realm) {
            Ok(r) => r,
            Err(v) => return v,
        };
        if resp.opaque.as_deref().is_some_and(|o| o != self.opaque) {
            return self.fail(FailReason::BadNonce, None, source, now);
        }
        let alg = match resp.algorithm.as_deref() {
            None => Algorithm::Md5, // RFC 7616 §3.4: absent means MD5
            Some(a) => match a.parse::<Algorithm>() {
                Ok(a) => a,
                Err(_) => return challenge(false, FailReason::Algorithm),
            },
        };
        let qop = match &resp.qop {
            Some(q) if q.qop.eq_ignore_ascii_case("auth") => q,
            _ => return challenge(false, FailReason::Qop),
        };
        let Some(issued) = self.nonces.check(realm, &resp.nonce) else {
            return self.fail(FailReason::BadNonce, None, source, now);
        };

        let creds = lookup(&resp.username);
        // The HA1 to check against, if this user may answer in `alg` at all.
        let usable = creds
            .as_ref()
            .filter(|c| self.offer_for(Some(c)).contains(alg))
            .and_then(|c| c.ha1(alg));
        let dummy;
        let ha1 = match usable {
            Some(h) => h,
            None => {
                // Hash anyway so an unknown user, or one without this credential, costs
                // what a known one does.
                dummy = "0".repeat(alg.hex_len());
                dummy.as_str()
            }
        };
        let expected = compute_response(
            alg,
            ha1,
            &resp.nonce,
            &qop.nc,
            &qop.cnonce,
            &qop.qop,
            method,
            &resp.uri,
        );
        let given = resp.response.to_ascii_lowercase();
        let matches = bool::from(expected.as_bytes().ct_eq(given.as_bytes()));
        if usable.is_none() {
            let reason = if creds.is_some() {
                FailReason::NoCredential
            } else {
                FailReason::UnknownUser
            };
            return self.fail(reason, Some(alg), source, now);
        }
        if !matches {
            return self.fail(FailReason::WrongPassword, Some(alg), source, now);
        }

        // Right credentials: from here on only the nonce can be wrong (stale).
        let lifetime = self.config.nonce_lifetime.as_secs();
        if issued > now.saturating_add(FUTURE_SKEW_SECS) || now.saturating_sub(issued) > lifetime {
            return challenge(true, FailReason::StaleNonce);
        }
        // The nonce passed its MAC check, so it is 64 hex digits; either case is one id:
        // 8 bytes of its MAC (bytes 16..24), which only the secret's holder can choose.
        let Some(raw) = digest::from_hex::<32>(&resp.nonce) else {
            return self.fail(FailReason::BadNonce, None, source, now);
        };
        let mut mac = [0u8; 8];
        mac.copy_from_slice(&raw[16..24]);
        let id = u64::from_be_bytes(mac);
        let retransmission =
            match self
                .counts
                .check(id, qop.nc_value, issued, request, now, lifetime)
            {
                NcCheck::Accepted => false,
                NcCheck::Retransmission => true,
                NcCheck::Replay => return challenge(true, FailReason::NcReplay),
                NcCheck::Stale => return challenge(true, FailReason::StaleNonce),
            };
        self.limiter.clear(source);
        Verdict::Ok {
            user: Authenticated(resp.username),
            algorithm: alg,
            retransmission,
        }
    }

    /// A challenge for `reason` after an answer in `failed`, counting it against
    /// `source` when it counts; the failure that reaches the limit is answered 403.
    fn fail(
        &self,
        reason: FailReason,
        failed: Option<Algorithm>,
        source: IpAddr,
        now: u64,
    ) -> Verdict {
        if reason.counts() && self.limiter.record_failure(source, now) {
            return Verdict::Forbidden {
                reason: FailReason::TooManyFailures,
            };
        }
        Verdict::Challenge {
            stale: false,
            reason,
            failed,
        }
    }
}

fn challenge(stale: bool, reason: FailReason) -> Verdict {
    Verdict::Challenge {
        stale,
        reason,
        failed: None,
    }
}

/// Picks the first parseable Digest credentials for `realm` (RFC 3261 §22.4: one
/// Authorization per realm; others are for other hops). Without one: a malformed Digest
/// value gives 400, Digest values for other realms only give Realm, nothing usable gives
/// Missing.
fn select<'a>(
    headers: impl Iterator<Item = &'a str>,
    realm: &str,
) -> Result<DigestResponse, Verdict> {
    let mut malformed = false;
    let mut foreign = false;
    for value in headers {
        match parse_credentials(value) {
            Ok(r) if r.realm == realm => return Ok(r),
            Ok(_) => foreign = true,
            Err(ParseError::NotDigest) => {}
            Err(ParseError::Malformed) => malformed = true,
        }
    }
    Err(if malformed {
        Verdict::Malformed {
            reason: FailReason::Malformed,
        }
    } else if foreign {
        challenge(false, FailReason::Realm)
    } else {
        challenge(false, FailReason::Missing)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REALM: &str = "example.test";
    const URI: &str = "sip:example.test";
    const SECRET: [u8; 32] = [42u8; 32];

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    const T0: u64 = 1_700_000_000;

    fn src(n: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, n])
    }

    fn auth() -> Authenticator {
        Authenticator::new(
            AuthConfig {
                algorithms: vec![Algorithm::Sha512_256, Algorithm::Sha256, Algorithm::Md5],
                ..AuthConfig::default()
            },
            SECRET,
        )
    }

    /// The value of auth-param `name` in a challenge we built.
    fn param(challenge: &str, name: &str) -> String {
        let quoted = format!("{name}=\"");
        if let Some(i) = challenge.find(&quoted) {
            let rest = &challenge[i + quoted.len()..];
            return rest[..rest.find('"').unwrap_or(rest.len())].to_string();
        }
        let plain = format!("{name}=");
        let i = challenge.find(&plain).map(|i| i + plain.len()).unwrap_or(0);
        let rest = &challenge[i..];
        rest[..rest.find(',').unwrap_or(rest.len())].to_string()
    }

    /// What a client answers; fields can be changed before [`Answer::header`].
    #[derive(Clone)]
    struct Answer {
        user: String,
        password: String,
        realm: String,
        nonce: String,
        opaque: Option<String>,
        algorithm: Option<String>,
        hash: Algorithm,
        qop: Option<String>,
        nc: String,
        cnonce: String,
        method: String,
        uri: String,
    }

    impl Answer {
        fn to(challenge: &str, user: &str, password: &str) -> Answer {
            let alg: Algorithm = param(challenge, "algorithm")
                .parse()
                .unwrap_or(Algorithm::Md5);
            Answer {
                user: user.into(),
                password: password.into(),
                realm: param(challenge, "realm"),
                nonce: param(challenge, "nonce"),
                opaque: Some(param(challenge, "opaque")),
                algorithm: Some(alg.as_str().into()),
                hash: alg,
                qop: Some("auth".into()),
                nc: "00000001".into(),
                cnonce: "0a4f113b".into(),
                method: "REGISTER".into(),
                uri: URI.into(),
            }
        }

        fn header(&self) -> String {
            let ha1 = self
                .hash
                .hash_hex(format!("{}:{}:{}", self.user, self.realm, self.password).as_bytes());
            let qop = self.qop.clone().unwrap_or_default();
            let response = if self.qop.is_some() {
                compute_response(
                    self.hash,
                    &ha1,
                    &self.nonce,
                    &self.nc,
                    &self.cnonce,
                    &qop,
                    &self.method,
                    &self.uri,
                )
            } else {
                // RFC 2069: H(HA1:nonce:HA2)
                let ha2 = self
                    .hash
                    .hash_hex(format!("{}:{}", self.method, self.uri).as_bytes());
                self.hash
                    .hash_hex(format!("{ha1}:{}:{ha2}", self.nonce).as_bytes())
            };
            let mut h = format!(
                "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\"",
                self.user, self.realm, self.nonce, self.uri, response
            );
            if let Some(a) = &self.algorithm {
                h.push_str(&format!(", algorithm={a}"));
            }
            if let Some(o) = &self.opaque {
                h.push_str(&format!(", opaque=\"{o}\""));
            }
            if let Some(q) = &self.qop {
                h.push_str(&format!(
                    ", qop={q}, nc={}, cnonce=\"{}\"",
                    self.nc, self.cnonce
                ));
            }
            h
        }
    }

    fn alice() -> Option<Credentials> {
        Some(Credentials::from_password("alice", REALM, "secret"))
    }

    /// [`Authenticator::verify`] for alice (the only user), with `failed` dropped from a
    /// challenge verdict: the tests of `failed` look at it through `verify_failed`.
    fn verify_at(a: &Authenticator, header: &str, now: u64, source: IpAddr) -> Verdict {
        match verify_failed(a, header, now, source, alice()) {
            Verdict::Challenge { stale, reason, .. } => ch(stale, reason),
            v => v,
        }
    }

    /// [`Authenticator::verify`] with `creds` as alice's credentials.
    fn verify_failed(
        a: &Authenticator,
        header: &str,
        now: u64,
        source: IpAddr,
        creds: Option<Credentials>,
    ) -> Verdict {
        a.verify(
            "REGISTER",
            std::iter::once(header),
            REALM,
            |u| if u == "alice" { creds } else { None },
            source,
            t(now),
        )
    }

    fn verify(a: &Authenticator, header: &str) -> Verdict {
        verify_at(a, header, T0 + 1, src(1))
    }

    fn first_challenge(a: &Authenticator, alg: Algorithm) -> String {
        a.challenge(REALM, alice().as_ref(), false, None, t(T0))
            .into_iter()
            .find(|c| c.contains(&format!("algorithm={},", alg.as_str())))
            .unwrap_or_default()
    }

    fn ok(alg: Algorithm) -> Verdict {
        Verdict::Ok {
            user: Authenticated("alice".into()),
            algorithm: alg,
            retransmission: false,
        }
    }

    /// SHA-256 then MD5, as a deployment of RFC 8760 phones would list them.
    fn sha256_md5() -> AuthConfig {
        AuthConfig {
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            ..AuthConfig::default()
        }
    }

    /// The challenge verdict after a failed answer in `alg`.
    fn chf(reason: FailReason, alg: Algorithm) -> Verdict {
        Verdict::Challenge {
            stale: false,
            reason,
            failed: Some(alg),
        }
    }

    fn ch(stale: bool, reason: FailReason) -> Verdict {
        Verdict::Challenge {
            stale,
            reason,
            failed: None,
        }
    }

    #[test]
    fn send_sync() {
        fn assert<T: Send + Sync>() {}
        assert::<Authenticator>();
    }

    #[test]
    fn shared_across_threads() {
        let a = std::sync::Arc::new(auth());
        let workers: Vec<_> = (0..4u8)
            .map(|n| {
                let a = std::sync::Arc::clone(&a);
                std::thread::spawn(move || {
                    let c = first_challenge(&a, Algorithm::Sha256);
                    let mut ans = Answer::to(&c, "alice", "secret");
                    (1..=50u32)
                        .filter(|nc| {
                            ans.nc = format!("{nc:08x}");
                            verify_at(&a, &ans.header(), T0 + 1, src(n)) == ok(Algorithm::Sha256)
                        })
                        .count()
                })
            })
            .collect();
        for w in workers {
            assert_eq!(w.join().ok(), Some(50));
        }
    }

    #[test]
    fn challenge_format_and_order() {
        let a = Authenticator::new(
            AuthConfig {
                algorithms: vec![Algorithm::Md5, Algorithm::Sha512_256, Algorithm::Md5],
                ..AuthConfig::default()
            },
            SECRET,
        );
        let cs = a.challenge(REALM, None, false, None, t(T0));
        assert_eq!(cs.len(), 2);
        let nonce = param(&cs[0], "nonce");
        let opaque = param(&cs[0], "opaque");
        assert_eq!(
            cs[0],
            format!(
                "Digest realm=\"example.test\", nonce=\"{nonce}\", opaque=\"{opaque}\", \
                 algorithm=MD5, qop=\"auth\""
            ),
            "the operator's order, not strongest first"
        );
        assert!(cs[1].contains("algorithm=SHA-512-256, qop=\"auth\""));
        assert_eq!(param(&cs[1], "nonce"), nonce, "one nonce per challenge");
        let stale = a.challenge(REALM, None, true, None, t(T0));
        assert!(stale.iter().all(|c| c.ends_with(", stale=true")));
        assert_ne!(param(&stale[0], "nonce"), nonce, "fresh nonce each time");
        // realm is escaped
        let odd = a.challenge("a\"b\\c", None, false, None, t(T0));
        assert!(odd[0].starts_with("Digest realm=\"a\\\"b\\\\c\","));
        // defaults: MD5 alone, the challenge every client answers
        let d = Authenticator::new(AuthConfig::default(), SECRET);
        let cs = d.challenge(REALM, None, false, None, t(T0));
        assert_eq!(cs.len(), 1);
        assert!(cs[0].contains("algorithm=MD5"));
    }

    #[test]
    fn round_trip_every_algorithm() {
        let a = auth();
        let cs = a.challenge(REALM, alice().as_ref(), false, None, t(T0));
        assert_eq!(cs.len(), 3);
        // One nonce serves every algorithm of a challenge, and nc is tracked per nonce.
        for (i, (c, alg)) in cs.iter().zip(Algorithm::ALL).enumerate() {
            assert!(c.contains(&format!("algorithm={}", alg.as_str())));
            let mut ans = Answer::to(c, "alice", "secret");
            ans.nc = format!("{:08x}", i + 1);
            let h = ans.header();
            assert_eq!(verify(&a, &h), ok(alg), "{alg}");
        }
    }

    #[test]
    fn md5_without_algorithm_param_and_upper_case_response() {
        let a = auth();
        let mut ans = Answer::to(&first_challenge(&a, Algorithm::Md5), "alice", "secret");
        ans.algorithm = None;
        assert_eq!(verify(&a, &ans.header()), ok(Algorithm::Md5));
        ans.nc = "00000002".into();
        let h = ans.header();
        let upper = {
            let r = param(&h, "response");
            h.replace(&r, &r.to_uppercase())
        };
        assert_eq!(verify(&a, &upper), ok(Algorithm::Md5));
    }

    #[test]
    fn wrong_password_and_unknown_user_look_alike() {
        let a = auth();
        let c = first_challenge(&a, Algorithm::Sha256);
        let wrong = verify(&a, &Answer::to(&c, "alice", "guess").header());
        assert_eq!(wrong, ch(false, FailReason::WrongPassword));
        let unknown = verify(&a, &Answer::to(&c, "mallory", "secret").header());
        assert_eq!(unknown, ch(false, FailReason::UnknownUser));
        // same external answer: a 401 with a fresh, non-stale challenge
        assert!(matches!(
            (wrong, unknown),
            (
                Verdict::Challenge { stale: false, .. },
                Verdict::Challenge { stale: false, .. }
            )
        ));
        assert_eq!(
            a.challenge(REALM, None, false, None, t(T0)).len(),
            a.challenge(REALM, alice().as_ref(), false, None, t(T0))
                .len()
        );
    }

    #[test]
    fn stale_nonce_only_with_right_credentials() {
        let a = auth();
        let c = first_challenge(&a, Algorithm::Sha256);
        let good = Answer::to(&c, "alice", "secret").header();
        let bad = Answer::to(&c, "alice", "guess").header();
        let late = T0 + 301;
        assert_eq!(
            verify_at(&a, &good, late, src(1)),
            ch(true, FailReason::StaleNonce)
        );
        assert_eq!(
            verify_at(&a, &bad, late, src(2)),
            ch(false, FailReason::WrongPassword)
        );
        // exactly at the lifetime still good
        assert_eq!(
            verify_at(&a, &good, T0 + 300, src(1)),
            ok(Algorithm::Sha256)
        );
        // from the future beyond the skew
        assert_eq!(
            verify_at(&a, &good, T0 - 10, src(1)),
            ch(true, FailReason::StaleNonce)
        );
    }

    #[test]
    fn tampered_nonce() {
        let a = auth();
        let c = first_challenge(&a, Algorithm::Sha256);
        let mut ans = Answer::to(&c, "alice", "secret");
        let mut n = ans.nonce.into_bytes();
        if let Some(b) = n.get_mut(3) {
            *b = if *b == b'a' { b'b' } else { b'a' };
        }
        ans.nonce = String::from_utf8(n).unwrap_or_default();
        assert_eq!(verify(&a, &ans.header()), ch(false, FailReason::BadNonce));
        ans.nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v".into();
        assert_eq!(verify(&a, &ans.header()), ch(false, FailReason::BadNonce));
        // another realm's nonce
        let other = a.challenge("other.test", None, false, None, t(T0));
        ans.nonce = param(&other[0], "nonce");
        assert_eq!(verify(&a, &ans.header()), ch(false, FailReason::BadNonce));
        // another secret's nonce
        let b = Authenticator::new(sha256_md5(), [1u8; 32]);
        let ans = Answer::to(&first_challenge(&b, Algorithm::Sha256), "alice", "secret");
        let mut ans2 = ans.clone();
        ans2.opaque = None;
        assert_eq!(verify(&a, &ans2.header()), ch(false, FailReason::BadNonce));
    }

    #[test]
    fn nonce_count_replay_and_increase() {
        let a = auth();
        let c = first_challenge(&a, Algorithm::Md5);
        let mut ans = Answer::to(&c, "alice", "secret");
        let nc1 = ans.header();
        assert_eq!(verify(&a, &nc1), ok(Algorithm::Md5));
        assert_eq!(verify(&a, &nc1), ch(true, FailReason::NcReplay), "replay");
        let upper = Answer {
            nonce: ans.nonce.to_uppercase(),
            ..ans.clone()
        };
        assert_eq!(
            verify(&a, &upper.header()),
            ch(true, FailReason::NcReplay),
            "hex case of the nonce does not make a new one"
        );
        ans.nc = "00000002".into();
        ans.cnonce = "later".into();
        // linphone: the same nonce much later with nc=2
        assert_eq!(
            verify_at(&a, &ans.header(), T0 + 200, src(1)),
            ok(Algorithm::Md5)
        );
        assert_eq!(
            verify(&a, &nc1),
            ch(true, FailReason::NcReplay),
            "1 after 2"
        );
        ans.nc = "00000000".into();
        let fresh = Answer {
            nonce: param(&first_challenge(&a, Algorithm::Md5), "nonce"),
            ..ans
        };
        assert_eq!(verify(&a, &fresh.header()), ch(true, FailReason::NcReplay));
    }

    #[test]
    fn full_nonce_table_gives_stale() {
        let a = Authenticator::new(
            AuthConfig {
                max_tracked_nonces: 1,
                ..AuthConfig::default()
            },
            SECRET,
        );
        let one = Answer::to(&first_challenge(&a, Algorithm::Md5), "alice", "secret");
        let two = Answer::to(&first_challenge(&a, Algorithm::Md5), "alice", "secret");
        assert_eq!(verify(&a, &one.header()), ok(Algorithm::Md5));
        assert_eq!(verify(&a, &two.header()), ch(true, FailReason::StaleNonce));
        // once the first nonce expired, its slot is reused
        let later = T0 + 400;
        let three = Answer {
            nonce: a
                .challenge(REALM, None, false, None, t(later))
                .first()
                .map(|c| param(c, "nonce"))
                .unwrap_or_default(),
            ..one
        };
        assert_eq!(
            verify_at(&a, &three.header(), later, src(1)),
            ok(Algorithm::Md5)
        );
    }

    #[test]
    fn qop_rules() {
        let a = auth();
        let c = first_challenge(&a, Algorithm::Sha256);
        let mut ans = Answer::to(&c, "alice", "secret");
        ans.qop = None;
        assert_eq!(verify(&a, &ans.header()), ch(false, FailReason::Qop));
        ans.qop = Some("auth-int".into());
        assert_eq!(verify(&a, &ans.header()), ch(false, FailReason::Qop));
        ans.qop = Some("\"auth\"".into());
        // a quoted qop is unquoted by the parser, but the client hashed the quotes:
        // wrong response; the point is that it is parsed and not refused as Qop.
        assert_eq!(
            verify(&a, &ans.header()),
            ch(false, FailReason::WrongPassword)
        );
    }

    #[test]
    fn algorithm_rules() {
        let a = Authenticator::new(sha256_md5(), SECRET);
        let c = first_challenge(&a, Algorithm::Md5);
        let mut ans = Answer::to(&c, "alice", "secret");
        ans.algorithm = Some("MD5-sess".into());
        assert_eq!(verify(&a, &ans.header()), ch(false, FailReason::Algorithm));
        ans.algorithm = Some("SHA-1".into());
        assert_eq!(verify(&a, &ans.header()), ch(false, FailReason::Algorithm));
        ans.algorithm = Some("SHA-512-256".into());
        ans.hash = Algorithm::Sha512_256;
        assert_eq!(
            verify(&a, &ans.header()),
            ch(false, FailReason::NoCredential),
            "not offered to alice: judged as an unknown user's answer"
        );
        ans.algorithm = Some("sha-256".into());
        ans.hash = Algorithm::Sha256;
        assert_eq!(verify(&a, &ans.header()), ok(Algorithm::Sha256));
    }

    #[test]
    fn realm_mismatch() {
        let a = auth();
        let c = first_challenge(&a, Algorithm::Sha256);
        let mut ans = Answer::to(&c, "alice", "secret");
        ans.realm = "EXAMPLE.TEST".into();
        assert_eq!(verify(&a, &ans.header()), ch(false, FailReason::Realm));
        assert_eq!(
            a.verify(
                "REGISTER",
                std::iter::empty(),
                REALM,
                |_| alice(),
                src(1),
                t(T0)
            ),
            ch(false, FailReason::Missing)
        );
        assert_eq!(
            verify(&a, "Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
            ch(false, FailReason::Missing)
        );
    }

    #[test]
    fn opaque_rules() {
        let a = auth();
        let c = first_challenge(&a, Algorithm::Sha256);
        let mut ans = Answer::to(&c, "alice", "secret");
        ans.opaque = Some("0000000000000000".into());
        assert_eq!(verify(&a, &ans.header()), ch(false, FailReason::BadNonce));
        ans.opaque = None;
        assert_eq!(
            verify(&a, &ans.header()),
            ok(Algorithm::Sha256),
            "absent is fine"
        );
    }

    #[test]
    fn picks_our_realm_among_several() {
        let a = auth();
        let c = first_challenge(&a, Algorithm::Sha256);
        let ours = Answer::to(&c, "alice", "secret").header();
        let mut theirs = Answer::to(&c, "alice", "other");
        theirs.realm = "upstream.test".into();
        let theirs = theirs.header();
        let headers = [
            "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
            theirs.as_str(),
            ours.as_str(),
        ];
        let v = a.verify(
            "INVITE",
            headers.iter().copied(),
            REALM,
            |u| if u == "alice" { alice() } else { None },
            src(1),
            t(T0),
        );
        // the answer was computed for REGISTER: a wrong method gives a wrong response
        assert_eq!(v, chf(FailReason::WrongPassword, Algorithm::Sha256));
        let mut ours = Answer::to(&c, "alice", "secret");
        ours.method = "INVITE".into();
        let ours = ours.header();
        let v = a.verify(
            "INVITE",
            [theirs.as_str(), "Digest garbage", ours.as_str()].into_iter(),
            REALM,
            |_| alice(),
            src(1),
            t(T0),
        );
        assert_eq!(v, ok(Algorithm::Sha256));
        // only foreign and malformed: 400
        let v = a.verify(
            "INVITE",
            [theirs.as_str(), "Digest garbage"].into_iter(),
            REALM,
            |_| alice(),
            src(1),
            t(T0),
        );
        assert_eq!(
            v,
            Verdict::Malformed {
                reason: FailReason::Malformed
            }
        );
    }

    /// Alice stored as an MD5 HA1 only.
    fn alice_md5_ha1() -> Option<Credentials> {
        alice()
            .and_then(|c| c.ha1(Algorithm::Md5).map(str::to_string))
            .and_then(|h| Credentials::from_ha1_md5(&h).ok())
    }

    /// The algorithms a challenge offers, in order, and that none is stale.
    fn offered(cs: &[String]) -> Vec<String> {
        cs.iter().map(|c| param(c, "algorithm")).collect()
    }

    #[test]
    fn ha1_only_user_is_challenged_as_an_unknown_name() {
        let a = Authenticator::new(sha256_md5(), SECRET);
        let md5_only = alice_md5_ha1();
        let full = alice();
        let first = |c: Option<&Credentials>| offered(&a.challenge(REALM, c, false, None, t(T0)));
        assert_eq!(first(None), ["SHA-256", "MD5"]);
        assert_eq!(first(md5_only.as_ref()), first(None), "HA1-only as unknown");
        assert_eq!(first(full.as_ref()), first(None));
        // An MD5 answer for the HA1-only user is fine.
        let c = a.challenge(REALM, md5_only.as_ref(), false, None, t(T0));
        let md5 = Answer::to(&c[1], "alice", "secret").header();
        assert_eq!(
            verify_failed(&a, &md5, T0 + 1, src(1), md5_only.clone()),
            ok(Algorithm::Md5)
        );
        // A SHA-256 answer (a client that picks the topmost or strongest) cannot be
        // checked: the same verdict as for a name that is not a user, failed=SHA-256.
        let sha = Answer::to(&c[0], "alice", "secret");
        let as_md5_only = verify_failed(&a, &sha.header(), T0 + 1, src(2), md5_only.clone());
        assert_eq!(
            as_md5_only,
            chf(FailReason::NoCredential, Algorithm::Sha256)
        );
        let ghost = Answer::to(&c[0], "ghost", "secret").header();
        let as_unknown = verify_failed(&a, &ghost, T0 + 1, src(3), md5_only.clone());
        assert_eq!(as_unknown, chf(FailReason::UnknownUser, Algorithm::Sha256));
        // ... and the same re-challenge: the list without SHA-256, for both, and for a
        // wrong password in SHA-256 too.
        let wrong = Answer::to(&c[0], "alice", "guess").header();
        let as_wrong = verify_failed(&a, &wrong, T0 + 1, src(4), full.clone());
        assert_eq!(as_wrong, chf(FailReason::WrongPassword, Algorithm::Sha256));
        let again = |c: Option<&Credentials>| {
            offered(&a.challenge(REALM, c, false, Some(Algorithm::Sha256), t(T0)))
        };
        assert_eq!(again(md5_only.as_ref()), ["MD5"]);
        assert_eq!(again(None), ["MD5"]);
        assert_eq!(again(full.as_ref()), ["MD5"]);
        // A failed MD5 answer leaves MD5 out; a list of one is offered whole.
        let md5_again = a.challenge(REALM, None, false, Some(Algorithm::Md5), t(T0));
        assert_eq!(offered(&md5_again), ["SHA-256"]);
        let d = Authenticator::new(AuthConfig::default(), SECRET);
        let only = d.challenge(REALM, None, false, Some(Algorithm::Md5), t(T0));
        assert_eq!(offered(&only), ["MD5"]);
        // The HA1-only user then registers with MD5 from the re-challenge.
        let c = a.challenge(
            REALM,
            md5_only.as_ref(),
            false,
            Some(Algorithm::Sha256),
            t(T0),
        );
        let md5 = Answer::to(&c[0], "alice", "secret").header();
        assert_eq!(
            verify_failed(&a, &md5, T0 + 1, src(2), md5_only),
            ok(Algorithm::Md5)
        );
    }

    #[test]
    fn no_credential_counts_as_an_unknown_user_and_a_success_clears_it() {
        // The failures of an HA1-only user answering SHA-256 and of a name that is not
        // a user reach the limit alike (the limiter shows nothing either); the HA1-only
        // user's MD5 answer in between clears the count, so it is never locked out.
        let a = limited();
        let md5_only = alice_md5_ha1();
        let c = a.challenge(REALM, None, false, None, t(T0));
        let sha = Answer::to(&c[0], "alice", "secret").header();
        let ghost = Answer::to(&c[0], "ghost", "secret").header();
        let run = |h: &str, s: IpAddr| -> Vec<Verdict> {
            (0..3)
                .map(
                    |_| match verify_failed(&a, h, T0 + 1, s, md5_only.clone()) {
                        Verdict::Challenge { stale, failed, .. } => Verdict::Challenge {
                            stale,
                            reason: FailReason::Missing,
                            failed,
                        },
                        v => v,
                    },
                )
                .collect()
        };
        let seen_md5_only = run(&sha, src(20));
        let seen_unknown = run(&ghost, src(21));
        assert_eq!(seen_md5_only, seen_unknown);
        assert_eq!(
            seen_unknown.last(),
            Some(&Verdict::Forbidden {
                reason: FailReason::TooManyFailures
            })
        );
        // SHA-256, then MD5 from the re-challenge, again and again: never blocked.
        let s = src(22);
        for round in 0..5u32 {
            let mut sha = Answer::to(&c[0], "alice", "secret");
            sha.cnonce = format!("sha{round}");
            assert_eq!(
                verify_failed(&a, &sha.header(), T0 + 1, s, md5_only.clone()),
                chf(FailReason::NoCredential, Algorithm::Sha256)
            );
            let again = a.challenge(REALM, None, false, Some(Algorithm::Sha256), t(T0));
            let md5 = Answer::to(&again[0], "alice", "secret").header();
            assert_eq!(
                verify_failed(&a, &md5, T0 + 1, s, md5_only.clone()),
                ok(Algorithm::Md5),
                "round {round}"
            );
        }
    }

    #[test]
    fn a_users_own_list_is_their_challenge_and_what_they_may_answer() {
        let a = Authenticator::new(AuthConfig::default(), SECRET); // MD5 alone
        let own = alice().and_then(|c| {
            c.with_algorithms(Algorithms::new([Algorithm::Sha256, Algorithm::Md5]))
                .ok()
        });
        let cs = a.challenge(REALM, own.as_ref(), false, None, t(T0));
        assert_eq!(offered(&cs), ["SHA-256", "MD5"]);
        assert_eq!(
            offered(&a.challenge(REALM, None, false, None, t(T0))),
            ["MD5"]
        );
        let sha = Answer::to(&cs[0], "alice", "secret").header();
        assert_eq!(
            verify_failed(&a, &sha, T0 + 1, src(1), own.clone()),
            ok(Algorithm::Sha256)
        );
        // Without the list, alice may not answer SHA-256 here: the deployment's is MD5.
        let mut sha = Answer::to(&cs[0], "alice", "secret");
        sha.nc = "00000002".into();
        assert_eq!(
            verify_failed(&a, &sha.header(), T0 + 1, src(1), alice()),
            chf(FailReason::NoCredential, Algorithm::Sha256)
        );
        // A list naming an algorithm the user has no HA1 for is refused.
        let md5_only = alice_md5_ha1();
        assert!(md5_only
            .clone()
            .and_then(|c| c.with_algorithms(Algorithms::new([Algorithm::Sha256])).ok())
            .is_none());
        assert!(md5_only
            .and_then(|c| c.with_algorithms(Algorithms::new([])).ok())
            .is_none());
    }

    #[test]
    fn algorithms_keep_order_and_drop_duplicates() {
        let l = Algorithms::new([Algorithm::Sha256, Algorithm::Md5, Algorithm::Sha256]);
        assert_eq!(
            l.iter().collect::<Vec<_>>(),
            [Algorithm::Sha256, Algorithm::Md5]
        );
        assert_eq!(
            l.without(Algorithm::Sha256).iter().collect::<Vec<_>>(),
            [Algorithm::Md5]
        );
        let one = Algorithms::new([Algorithm::Md5]);
        assert_eq!(one.without(Algorithm::Md5), one);
        assert_eq!(one.without(Algorithm::Sha256), one);
        assert!(Algorithms::new([]).is_empty());
    }

    fn limited() -> Authenticator {
        Authenticator::new(
            AuthConfig {
                max_failures: 3,
                failure_window: Duration::from_secs(60),
                block: Duration::from_secs(120),
                ..sha256_md5()
            },
            SECRET,
        )
    }

    #[test]
    fn failure_limit_blocks_then_unblocks() {
        let a = limited();
        let c = first_challenge(&a, Algorithm::Sha256);
        let bad = Answer::to(&c, "alice", "guess").header();
        let unknown = Answer::to(&c, "bob", "guess").header();
        let good = Answer::to(&c, "alice", "secret");
        let s = src(9);
        assert_eq!(
            verify_at(&a, &bad, T0, s),
            ch(false, FailReason::WrongPassword)
        );
        assert_eq!(
            verify_at(&a, &unknown, T0 + 1, s),
            ch(false, FailReason::UnknownUser)
        );
        assert_eq!(
            verify_at(&a, &bad, T0 + 2, s),
            Verdict::Forbidden {
                reason: FailReason::TooManyFailures
            }
        );
        let blocked = Verdict::Forbidden {
            reason: FailReason::Blocked,
        };
        assert_eq!(
            verify_at(&a, &good.header(), T0 + 3, s),
            blocked,
            "even when right"
        );
        assert_eq!(verify_at(&a, "garbage", T0 + 100, s), blocked);
        assert_eq!(
            verify_at(&a, &good.header(), T0 + 3, src(10)),
            ok(Algorithm::Sha256)
        );
        // unblocked after `block`
        let c = a.challenge(REALM, None, false, None, t(T0 + 122));
        let again = Answer::to(&c[0], "alice", "secret").header();
        assert_eq!(verify_at(&a, &again, T0 + 122, s), ok(Algorithm::Sha256));
    }

    #[test]
    fn bad_nonce_missing_and_malformed_do_not_count() {
        let a = limited();
        let s = src(3);
        for i in 0..10 {
            let v = a.verify(
                "REGISTER",
                std::iter::empty(),
                REALM,
                |_| alice(),
                s,
                t(T0 + i),
            );
            assert_eq!(v, ch(false, FailReason::Missing));
            let v = verify_at(&a, "Digest nonsense", T0 + i, s);
            assert_eq!(v.reason(), Some(FailReason::Malformed));
        }
        let mut ans = Answer::to(&first_challenge(&a, Algorithm::Sha256), "alice", "secret");
        ans.nonce = "00".repeat(32);
        let h = ans.header();
        // Nonces from before a restart (another secret) must not block a NAT address.
        for _ in 0..10 {
            assert_eq!(verify_at(&a, &h, T0, s), ch(false, FailReason::BadNonce));
        }
    }

    #[test]
    fn success_clears_the_count() {
        let a = limited();
        let c = first_challenge(&a, Algorithm::Sha256);
        let bad = Answer::to(&c, "alice", "guess").header();
        let mut good = Answer::to(&c, "alice", "secret");
        let s = src(4);
        for round in 0..3u32 {
            assert_eq!(
                verify_at(&a, &bad, T0, s),
                ch(false, FailReason::WrongPassword)
            );
            assert_eq!(
                verify_at(&a, &bad, T0, s),
                ch(false, FailReason::WrongPassword)
            );
            good.nc = format!("{:08x}", round + 1);
            assert_eq!(verify_at(&a, &good.header(), T0, s), ok(Algorithm::Sha256));
        }
    }

    #[test]
    fn garbage_never_panics() {
        let a = Authenticator::new(
            AuthConfig {
                max_failures: 0,
                ..sha256_md5()
            },
            SECRET,
        );
        let c = first_challenge(&a, Algorithm::Sha256);
        let valid = Answer::to(&c, "alice", "secret").header();
        let run = |h: &str| {
            let v = verify_at(&a, h, T0 + 1, src(1));
            if let Verdict::Forbidden { .. } = v {
                panic!("limiter is off: {v:?}");
            }
        };
        let bytes = valid.as_bytes();
        for end in 0..bytes.len() {
            run(&valid[..end]);
            run(&valid[end..]);
        }
        let specials = [b'"', b'\\', b',', b'=', b' ', b'\r', 0u8, 0xff, b'A', b'0'];
        for i in 0..bytes.len() {
            for &s in &specials {
                let mut m = bytes.to_vec();
                m[i] = s;
                run(&String::from_utf8_lossy(&m));
                let mut ins = bytes.to_vec();
                ins.insert(i, s);
                run(&String::from_utf8_lossy(&ins));
            }
        }
        for g in [
            "", " ", "Digest", "Digest ,", "Digest a", "Digest a=", "Digest a=\"", "\u{0}",
            "Digest username=\"\u{10FFFF}\",realm=\"example.test\",nonce=\"\",uri=\"\",response=\"\",qop=auth,nc=ffffffff,cnonce=\"\"",
        ] {
            run(g);
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let a = auth();
        let shown = format!("{a:?} {a:#?}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains("42, 42"));
        assert!(!shown.contains(&a.opaque));
        let creds = alice();
        assert_eq!(format!("{creds:?}"), "Some(Credentials(<redacted>))");
    }

    #[test]
    fn reason_labels() {
        let mut seen = std::collections::HashSet::new();
        for r in FailReason::ALL {
            let l = r.as_str();
            assert!(
                l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{l}"
            );
            assert!(seen.insert(l), "duplicate {l}");
            assert_eq!(r.to_string(), l);
        }
        assert_eq!(ch(false, FailReason::Qop).reason(), Some(FailReason::Qop));
        assert_eq!(ok(Algorithm::Md5).reason(), None);
    }
}
