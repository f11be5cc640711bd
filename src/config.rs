//! L5: the switch's configuration — a TOML file, then `SOFTSWITCH_<SECTION>_<KEY>`
//! environment overrides, then semantic validation (`spec/interface.md`, "Configuration").
//!
//! Loading never stops at the first mistake: [`Config::load`] gathers every problem it
//! can find, each named by its key, so `softswitch --check-config FILE` can print them
//! all at once ([`check_config_main`]).
//!
//! The shape of every section is inferred from [`Config::default`] (serialised with every
//! optional key filled in), so the unknown-key check and the type of each environment
//! override cannot drift from the structs below.
//!
//! Secrets: [`UserConfig`]'s `Debug` hides passwords and HA1 values, and the demo
//! directory's generated passwords go to a 0600 file, never to a log
//! ([`Config::users_or_demo`]).

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::transport::Transport;

/// The prefix of every environment override.
pub const ENV_PREFIX: &str = "SOFTSWITCH_";

/// The demo directory's user names, used when the configuration has no `[[users]]`.
pub const DEMO_USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// The file, next to `billing.cdr_path`, that receives generated demo passwords.
pub const DEMO_USERS_FILE: &str = "demo-users.txt";

/// The whole configuration. Every section and key is optional; see the defaults below.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[sip]`: listeners, domain and protocol timers.
    pub sip: SipConfig,
    /// `[limits]`: bounds on what a peer may send.
    pub limits: LimitsConfig,
    /// `[http]`: the metrics, health and API listener.
    pub http: HttpConfig,
    /// `[billing]`: where CDRs go.
    pub billing: BillingConfig,
    /// `[registrar]`: binding bounds and the binding store.
    pub registrar: RegistrarConfig,
    /// `[auth]`: digest authentication.
    pub auth: AuthSection,
    /// `[log]`: the tracing filter.
    pub log: LogConfig,
    /// `[[users]]`: the directory. Empty means "use the demo directory".
    pub users: Vec<UserConfig>,
}

/// `[sip]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Sockets to listen on, as `transport:ip:port` (`udp:0.0.0.0:5060`, `tcp:[::1]:5060`).
    pub listen: Vec<ListenSpec>,
    /// The served domain; also the digest realm.
    pub domain: String,
    /// `host[:port]` to put in Via/Contact/Record-Route when behind NAT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_host: Option<String>,
    /// Ring time before call forwarding on no answer, or 480 (seconds).
    pub no_answer_timeout_s: u64,
    /// RFC 3261 T1, the round-trip estimate (milliseconds).
    pub t1_ms: u64,
    /// RFC 3261 T2, the cap on non-INVITE retransmission intervals (milliseconds).
    pub t2_ms: u64,
    /// RFC 3261 T4, the longest a message stays in the network (milliseconds).
    pub t4_ms: u64,
    /// Close a TCP connection idle this long (seconds).
    pub tcp_idle_timeout_s: u64,
    /// Refuse TCP connections beyond this many.
    pub tcp_max_connections: usize,
    /// UDP socket receive and send buffer size asked of the kernel (capped by
    /// `net.core.rmem_max`/`wmem_max`), bytes.
    pub udp_buffer_bytes: usize,
    /// On SIGTERM, wait at most this long for calls and transactions to end (seconds).
    pub drain_timeout_s: u64,
    /// Send UDP responses to the packet's source port even without `;rport` in the Via
    /// (RFC 3581 behaviour for every client, as Asterisk's `force_rport=yes`); when false,
    /// responses go to the Via's sent-by port as RFC 3261 §18.2.2 says.
    pub force_rport: bool,
    /// The session interval (RFC 4028) the switch asks for on every leg and caps a
    /// phone's request at (seconds).
    pub session_expires_s: u32,
    /// The shortest session interval the switch accepts, its `Min-SE` (seconds; RFC 4028
    /// §4 allows no less than 90 on the wire). Builds with debug assertions (the test
    /// profile) accept less, with a warning at start-up, so that loopback tests can
    /// run session timers of a few seconds; a release build refuses it.
    pub min_se_s: u32,
}

/// `[limits]`: what the wire layer refuses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest whole message (head and body), in bytes.
    pub max_message_bytes: usize,
    /// Most header fields in one message.
    pub max_headers: usize,
    /// Longest single header line, in bytes.
    pub max_header_line_bytes: usize,
    /// Largest body, in bytes; must be below `max_message_bytes`.
    pub max_body_bytes: usize,
    /// Most live transactions (the table's memory bound). Transactions that only wait
    /// out a timer yield their slots to new ones; a new INVITE gets 503 with
    /// Retry-After only when working transactions fill it. Default: derived from the
    /// memory the process may use ([`crate::mem::default_max_transactions`]).
    pub max_transactions: usize,
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// The address `/metrics`, `/healthz`, `/readyz` and `/api/*` listen on.
    pub listen: SocketAddr,
}

/// `[billing]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// The JSON-lines file CDRs are appended to.
    pub cdr_path: PathBuf,
}

/// `[registrar]` (RFC 3261 §10.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrarConfig {
    /// The binding journal (created with its directory).
    pub store_path: PathBuf,
    /// Expiry when neither the Contact nor the request gives one (seconds).
    pub default_expires_s: u32,
    /// Shortest accepted nonzero expiry; shorter requests get 423 with Min-Expires.
    pub min_expires_s: u32,
    /// Longest expiry; longer requests are shortened to it.
    pub max_expires_s: u32,
    /// Most bindings per AOR (beyond it the soonest-expiring older ones are dropped).
    pub max_contacts: usize,
    /// REGISTERs queued per AOR before further ones get 503 with Retry-After.
    pub mailbox_capacity: usize,
    /// fdatasync the journal before a 200 OK (off: survives kill -9, not power loss).
    pub store_sync: bool,
}

/// `[auth]`: digest authentication (RFC 3261 §22, RFC 7616, RFC 8760).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// The deployment's digest challenges, in this order (most preferred first, RFC 7616
    /// §3.7): any of `MD5`, `SHA-256`, `SHA-512-256`. Default MD5 alone, the one challenge
    /// every client answers (see README, "Digest authentication").
    pub algorithms: Vec<String>,
    /// A nonce older than this is stale (a new challenge with `stale=true`), seconds.
    pub nonce_lifetime_s: u64,
    /// Failed authentications from one source address within `failure_window_s` before
    /// it gets 403 and is blocked for `block_s`.
    pub max_failures: u32,
    /// The window failures are counted in (seconds).
    pub failure_window_s: u64,
    /// How long a source is refused after too many failures (seconds).
    pub block_s: u64,
    /// Nonces whose counts are tracked against replay (about 50 bytes each); beyond it
    /// the oldest go and reusing one of them gets a fresh challenge (`stale=true`).
    pub max_tracked_nonces: usize,
}

/// Keys that existed once and were removed, with what to do instead: loading a file or
/// an environment that still sets one names it with this message (not just "unknown").
const REMOVED_KEYS: [(&str, &str); 1] = [(
    "auth.md5_only_user_agents",
    "removed: the default challenge is MD5 alone, which every client answers; list \
     SHA-256 in auth.algorithms or in a user's algorithms where the phones handle it \
     (see README, \"Digest authentication\"); delete this key",
)];

/// The removal message for `section.key`, if it was removed.
fn removed_key(path: &str) -> Option<&'static str> {
    REMOVED_KEYS
        .iter()
        .find(|(k, _)| *k == path)
        .map(|(_, why)| *why)
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive string, e.g. `info,softswitch::txn=debug`.
    pub level: String,
}

/// The longest `[[users]] display_name`, in bytes: a phone's screen shows a few dozen
/// characters, and the name goes into every B-leg INVITE.
const MAX_DISPLAY_NAME: usize = 128;

/// One `[[users]]` entry. Exactly one of `password` and `ha1` must be set.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user part of the AOR `sip:<user>@<domain>`.
    pub user: String,
    /// The digest password in clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// MD5(user:realm:password) as 32 hex digits (RFC 2617 §3.2.2.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha1: Option<String>,
    /// SHA-256(user:realm:password) as 64 hex digits (RFC 7616), beside `ha1`, so a user
    /// without a clear password can also answer SHA-256 challenges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha1_sha256: Option<String>,
    /// This user's own digest challenges, in order, instead of `auth.algorithms`; each
    /// needs the user's credential for it (a password covers all). Its challenge then
    /// differs from the one a name that is not a user gets: it shows the user exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<String>>,
    /// Offer a second call to a busy user instead of busy treatment.
    #[serde(default)]
    pub call_waiting: bool,
    /// Forward every call to this user name or SIP URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_unconditional: Option<String>,
    /// Forward when busy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_busy: Option<String>,
    /// Forward when not answered in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_no_answer: Option<String>,
    /// This user's ring time, overriding `sip.no_answer_timeout_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_answer_timeout_s: Option<u64>,
    /// The display name callees see on this user's calls (the B-leg's From), instead
    /// of the one the caller's phone sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// A socket to listen on: `udp:127.0.0.1:5060`, `tcp:[::1]:5060`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenSpec {
    /// UDP or TCP.
    pub transport: Transport,
    /// The IP address and port (a host name is not accepted).
    pub addr: SocketAddr,
}

/// One thing wrong with a configuration, named by its key (`sip.t1_ms`, `users[2].ha1`,
/// or the environment variable it came from). Displays as `key: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where the problem is.
    pub key: String,
    /// What is wrong, as a sentence fragment.
    pub message: String,
}

impl Config {
    /// Loads the configuration: built-in defaults, overlaid by the TOML file at `path`
    /// (if any), overlaid by every `SOFTSWITCH_<SECTION>_<KEY>` variable in `env`, then
    /// validated. Returns every problem found, not just the first.
    ///
    /// An environment value takes the TOML type of its key: integers and booleans are
    /// parsed, lists are comma-separated (`SOFTSWITCH_SIP_LISTEN=udp:127.0.0.1:5070,tcp:127.0.0.1:5070`).
    /// `[[users]]` cannot be set from the environment.
    pub fn load(
        path: Option<&Path>,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let mut table = match path {
            Some(p) => read_table(p, &mut problems),
            None => toml::Table::new(),
        };
        let schema = schema();
        check_shape(&table, &schema, &mut problems);
        apply_env(&mut table, &schema, env, &mut problems);
        if !problems.is_empty() {
            // Still run the semantic checks on what is well-formed, so one run reports
            // every problem: drop each key already reported (defaults fill in) and add
            // the problems of keys not yet named.
            for p in &problems {
                remove_key(&mut table, &p.key);
            }
            if let Ok(config) = toml::Value::Table(table).try_into::<Config>() {
                let more: Vec<ConfigProblem> = config
                    .validate()
                    .into_iter()
                    .filter(|v| !problems.iter().any(|p| p.key == v.key))
                    .collect();
                problems.extend(more);
            }
            return Err(problems);
        }
        let config: Config = match toml::Value::Table(table).try_into() {
            Ok(c) => c,
            Err(e) => {
                return Err(vec![ConfigProblem::new(
                    "config",
                    e.message().trim().to_string(),
                )])
            }
        };
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// Parses a TOML document (no file, no environment) and validates it.
    pub fn from_toml_str(text: &str) -> Result<Config, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let table = parse_table(text, "config", &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        let schema = schema();
        check_shape(&table, &schema, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    vec![ConfigProblem::new("config", e.message().trim().to_string())]
                })?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// The semantic checks that types alone cannot express. Empty means valid.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let s = &self.sip;
        if s.listen.is_empty() {
            p.push(ConfigProblem::new(
                "sip.listen",
                "at least one listener is needed",
            ));
        }
        let mut seen = HashSet::new();
        for spec in &s.listen {
            if !seen.insert(*spec) {
                p.push(ConfigProblem::new(
                    "sip.listen",
                    format!("{spec} is listed twice"),
                ));
            }
        }
        if s.domain.is_empty() || s.domain.chars().any(|c| c.is_whitespace() || c == '@') {
            p.push(ConfigProblem::new(
                "sip.domain",
                "must be a non-empty host name without spaces or '@'",
            ));
        }
        if let Some(h) = &s.advertised_host {
            if h.is_empty() || h.chars().any(char::is_whitespace) {
                p.push(ConfigProblem::new(
                    "sip.advertised_host",
                    "must be a non-empty host[:port] without spaces",
                ));
            }
        }
        for (key, v) in [
            ("sip.no_answer_timeout_s", s.no_answer_timeout_s),
            ("sip.t1_ms", s.t1_ms),
            ("sip.t2_ms", s.t2_ms),
            ("sip.t4_ms", s.t4_ms),
            ("sip.tcp_idle_timeout_s", s.tcp_idle_timeout_s),
            ("sip.tcp_max_connections", s.tcp_max_connections as u64),
            ("sip.udp_buffer_bytes", s.udp_buffer_bytes as u64),
        ] {
            if v == 0 {
                p.push(ConfigProblem::new(key, "must be greater than 0"));
            }
        }
        if s.t1_ms > s.t2_ms {
            p.push(ConfigProblem::new(
                "sip.t1_ms",
                format!("T1 ({} ms) must not exceed T2 ({} ms)", s.t1_ms, s.t2_ms),
            ));
        }
        let rfc_min = crate::call::session_timer::RFC_MIN_SE;
        // Test builds (debug assertions) may run shorter timers: see `SipConfig::min_se_s`.
        let least = if cfg!(debug_assertions) { 1 } else { rfc_min };
        if s.min_se_s < least {
            p.push(ConfigProblem::new(
                "sip.min_se_s",
                format!("must be at least {rfc_min} (RFC 4028 §4)"),
            ));
        }
        if s.session_expires_s < s.min_se_s {
            p.push(ConfigProblem::new(
                "sip.session_expires_s",
                format!(
                    "must be at least sip.min_se_s ({} s), got {}",
                    s.min_se_s, s.session_expires_s
                ),
            ));
        }
        let l = &self.limits;
        for (key, v) in [
            ("limits.max_message_bytes", l.max_message_bytes),
            ("limits.max_headers", l.max_headers),
            ("limits.max_header_line_bytes", l.max_header_line_bytes),
            ("limits.max_body_bytes", l.max_body_bytes),
            ("limits.max_transactions", l.max_transactions),
        ] {
            if v == 0 {
                p.push(ConfigProblem::new(key, "must be greater than 0"));
            }
        }
        if l.max_body_bytes >= l.max_message_bytes {
            p.push(ConfigProblem::new(
                "limits.max_body_bytes",
                format!(
                    "must be less than limits.max_message_bytes ({})",
                    l.max_message_bytes
                ),
            ));
        }
        if l.max_header_line_bytes > l.max_message_bytes {
            p.push(ConfigProblem::new(
                "limits.max_header_line_bytes",
                "must not exceed limits.max_message_bytes",
            ));
        }
        if self.billing.cdr_path.as_os_str().is_empty() {
            p.push(ConfigProblem::new("billing.cdr_path", "must not be empty"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            p.push(ConfigProblem::new(
                "log.level",
                format!("not a valid filter directive: {e}"),
            ));
        }
        let r = &self.registrar;
        if r.store_path.as_os_str().is_empty() {
            p.push(ConfigProblem::new(
                "registrar.store_path",
                "must not be empty",
            ));
        }
        for (key, v) in [
            ("registrar.min_expires_s", r.min_expires_s as usize),
            ("registrar.max_contacts", r.max_contacts),
            ("registrar.mailbox_capacity", r.mailbox_capacity),
        ] {
            if v == 0 {
                p.push(ConfigProblem::new(key, "must be greater than 0"));
            }
        }
        if r.min_expires_s > r.max_expires_s {
            p.push(ConfigProblem::new(
                "registrar.min_expires_s",
                format!(
                    "must not exceed registrar.max_expires_s ({})",
                    r.max_expires_s
                ),
            ));
        }
        if r.default_expires_s < r.min_expires_s || r.default_expires_s > r.max_expires_s {
            p.push(ConfigProblem::new(
                "registrar.default_expires_s",
                "must lie between registrar.min_expires_s and registrar.max_expires_s",
            ));
        }
        let a = &self.auth;
        if a.algorithms.is_empty() {
            p.push(ConfigProblem::new(
                "auth.algorithms",
                "name at least one algorithm",
            ));
        }
        for alg in &a.algorithms {
            if !AUTH_ALGORITHMS.iter().any(|k| k.eq_ignore_ascii_case(alg)) {
                p.push(ConfigProblem::new(
                    "auth.algorithms",
                    format!("{alg:?} is not one of {}", AUTH_ALGORITHMS.join(", ")),
                ));
            }
        }
        for (key, v) in [
            ("auth.nonce_lifetime_s", a.nonce_lifetime_s),
            ("auth.max_failures", u64::from(a.max_failures)),
            ("auth.failure_window_s", a.failure_window_s),
            ("auth.max_tracked_nonces", a.max_tracked_nonces as u64),
        ] {
            if v == 0 {
                p.push(ConfigProblem::new(key, "must be greater than 0"));
            }
        }
        self.validate_users(&mut p);
        p
    }

    fn validate_users(&self, p: &mut Vec<ConfigProblem>) {
        let names: HashSet<&str> = self.users.iter().map(|u| u.user.as_str()).collect();
        let mut seen = HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            let key = |field: &str| format!("users[{i}].{field}");
            if !is_sip_user(&u.user) {
                p.push(ConfigProblem::new(
                    key("user"),
                    format!("{:?} is not a valid SIP user name", u.user),
                ));
            }
            if !seen.insert(u.user.as_str()) {
                p.push(ConfigProblem::new(
                    key("user"),
                    format!("user {:?} is defined twice", u.user),
                ));
            }
            match (&u.password, &u.ha1) {
                (Some(_), Some(_)) => p.push(ConfigProblem::new(
                    key("password"),
                    "set either password or ha1, not both",
                )),
                (None, None) => p.push(ConfigProblem::new(
                    key("password"),
                    "password or ha1 is required",
                )),
                (Some(pw), None) if pw.is_empty() => {
                    p.push(ConfigProblem::new(key("password"), "must not be empty"))
                }
                (None, Some(h)) if !(h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit())) => {
                    p.push(ConfigProblem::new(
                        key("ha1"),
                        "must be 32 hexadecimal digits",
                    ))
                }
                _ => {}
            }
            if let Some(algs) = &u.algorithms {
                if algs.is_empty() {
                    p.push(ConfigProblem::new(
                        key("algorithms"),
                        "name at least one algorithm, or leave the key out for auth.algorithms",
                    ));
                }
                for a in algs {
                    match a.parse::<crate::auth::Algorithm>() {
                        Err(_) => p.push(ConfigProblem::new(
                            key("algorithms"),
                            format!("{a:?} is not one of {}", AUTH_ALGORITHMS.join(", ")),
                        )),
                        Ok(alg) if !user_has_credential(u, alg) => p.push(ConfigProblem::new(
                            key("algorithms"),
                            format!(
                                "{a} needs the user's credential for it: a password{}",
                                match alg {
                                    crate::auth::Algorithm::Md5 => " or ha1",
                                    crate::auth::Algorithm::Sha256 => " or ha1_sha256",
                                    crate::auth::Algorithm::Sha512_256 => "",
                                }
                            ),
                        )),
                        Ok(_) => {}
                    }
                }
            }
            if let Some(h) = &u.ha1_sha256 {
                if u.ha1.is_none() {
                    p.push(ConfigProblem::new(
                        key("ha1_sha256"),
                        "goes with ha1 (a password gives every HA1 by itself)",
                    ));
                } else if !(h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())) {
                    p.push(ConfigProblem::new(
                        key("ha1_sha256"),
                        "must be 64 hexadecimal digits",
                    ));
                }
            }
            for (field, target) in [
                ("forward_unconditional", &u.forward_unconditional),
                ("forward_busy", &u.forward_busy),
                ("forward_no_answer", &u.forward_no_answer),
            ] {
                let Some(t) = target else { continue };
                let t = t.trim();
                let named = softswitch_actors::call::forward::target_user(t, &self.sip.domain);
                if t.is_empty() {
                    p.push(ConfigProblem::new(key(field), "must not be empty"));
                } else if is_sip_uri(t) && named.is_none() {
                    // Forwarding there would make the switch an open relay.
                    p.push(ConfigProblem::new(
                        key(field),
                        format!(
                            "{t:?} is not a SIP URI of a user of {:?} (sip.domain): the switch forwards only to its own users",
                            self.sip.domain
                        ),
                    ));
                } else if named == Some(u.user.as_str()) {
                    p.push(ConfigProblem::new(
                        key(field),
                        "a user cannot forward to themselves",
                    ));
                } else if !named.is_some_and(|n| names.contains(n)) {
                    p.push(ConfigProblem::new(
                        key(field),
                        format!("{t:?} is neither a user in [[users]] nor a sip:/sips: URI"),
                    ));
                }
            }
            if u.no_answer_timeout_s == Some(0) {
                p.push(ConfigProblem::new(
                    key("no_answer_timeout_s"),
                    "must be greater than 0",
                ));
            }
            if let Some(name) = &u.display_name {
                if name.trim().is_empty() {
                    p.push(ConfigProblem::new(
                        key("display_name"),
                        "must not be empty (leave the key out for the phone's own)",
                    ));
                } else if name.chars().any(char::is_control) {
                    // A CR or LF would end the From header inside the name.
                    p.push(ConfigProblem::new(
                        key("display_name"),
                        "must not contain control characters (CR, LF, tab, ...)",
                    ));
                } else if name.len() > MAX_DISPLAY_NAME {
                    p.push(ConfigProblem::new(
                        key("display_name"),
                        format!("must be at most {MAX_DISPLAY_NAME} bytes"),
                    ));
                }
            }
        }
    }

    /// True when every SIP listener and the HTTP listener are on loopback addresses, so
    /// nothing outside this host can reach the demo directory.
    pub fn is_loopback_only(&self) -> bool {
        self.sip.listen.iter().all(|l| l.addr.ip().is_loopback())
            && self.http.listen.ip().is_loopback()
    }

    /// The configured directory, or the demo directory (alice, bob, carol, dave, each
    /// with `call_waiting` and no forwarding) when `[[users]]` is empty.
    ///
    /// On a loopback-only configuration the demo passwords are fixed (`alice-demo`, …).
    /// Otherwise they live in [`DEMO_USERS_FILE`] beside `billing.cdr_path`, one
    /// `user password` pair a line: generated at random when the file does not exist
    /// (written atomically with mode 0600; the log names the file, never a password) and
    /// read back at every later start, so a phone set up from the file keeps working
    /// across restarts and container re-creations on the same volume. A file that exists
    /// but is malformed, or open to others than its owner, stops start-up with the reason
    /// instead of being replaced: new passwords would lock out, without a word, every
    /// phone set up from the old ones; deleting the file asks for new ones.
    pub fn users_or_demo(&self) -> io::Result<Vec<UserConfig>> {
        if !self.users.is_empty() {
            return Ok(self.users.clone());
        }
        let passwords = if self.is_loopback_only() {
            DEMO_USERS
                .iter()
                .map(|name| format!("{name}-demo"))
                .collect()
        } else {
            demo_passwords(&self.demo_users_path())?
        };
        Ok(DEMO_USERS
            .iter()
            .zip(passwords)
            .map(|(name, password)| UserConfig {
                user: (*name).to_string(),
                password: Some(password),
                // A demo phone is offered a second call rather than busy treatment:
                // the demo shows calls, not a PBX profile, and two phones calling one
                // demo user at once both ring it.
                call_waiting: true,
                ..UserConfig::default()
            })
            .collect())
    }

    /// Where [`Config::users_or_demo`] keeps generated demo passwords.
    pub fn demo_users_path(&self) -> PathBuf {
        match self.billing.cdr_path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join(DEMO_USERS_FILE),
            _ => PathBuf::from(DEMO_USERS_FILE),
        }
    }
}

impl SipConfig {
    /// T1 as a duration.
    pub fn t1(&self) -> Duration {
        Duration::from_millis(self.t1_ms)
    }
    /// T2 as a duration.
    pub fn t2(&self) -> Duration {
        Duration::from_millis(self.t2_ms)
    }
    /// T4 as a duration.
    pub fn t4(&self) -> Duration {
        Duration::from_millis(self.t4_ms)
    }
    /// The default ring time as a duration.
    pub fn no_answer_timeout(&self) -> Duration {
        Duration::from_secs(self.no_answer_timeout_s)
    }
    /// The TCP idle timeout as a duration.
    pub fn tcp_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.tcp_idle_timeout_s)
    }
    /// The shutdown drain deadline as a duration.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_s)
    }
    /// The switch's session-timer values (RFC 4028).
    pub fn session_policy(&self) -> crate::call::session_timer::Policy {
        crate::call::session_timer::Policy {
            session_expires: self.session_expires_s,
            min_se: self.min_se_s,
        }
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        let any = SocketAddr::from(([0, 0, 0, 0], 5060));
        SipConfig {
            listen: vec![
                ListenSpec {
                    transport: Transport::Udp,
                    addr: any,
                },
                ListenSpec {
                    transport: Transport::Tcp,
                    addr: any,
                },
            ],
            domain: "localhost".to_string(),
            advertised_host: None,
            no_answer_timeout_s: 20,
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            tcp_idle_timeout_s: 300,
            tcp_max_connections: 4096,
            udp_buffer_bytes: 4 << 20,
            drain_timeout_s: 30,
            force_rport: true,
            session_expires_s: 1800,
            min_se_s: crate::call::session_timer::RFC_MIN_SE,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_bytes: 65536,
            max_headers: 256,
            max_header_line_bytes: 8192,
            max_body_bytes: 32768,
            max_transactions: crate::mem::default_max_transactions(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
        }
    }
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            cdr_path: PathBuf::from("data/cdr.jsonl"),
        }
    }
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            store_path: PathBuf::from("data/registrations.journal"),
            default_expires_s: 3600,
            min_expires_s: 60,
            max_expires_s: 7200,
            max_contacts: 10,
            mailbox_capacity: 32,
            store_sync: true,
        }
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            algorithms: vec!["MD5".to_string()],
            nonce_lifetime_s: 300,
            max_failures: 10,
            failure_window_s: 60,
            block_s: 60,
            max_tracked_nonces: 1_000_000,
        }
    }
}

/// The digest algorithms `[auth] algorithms` and a user's `algorithms` may name.
pub const AUTH_ALGORITHMS: [&str; 3] = ["MD5", "SHA-256", "SHA-512-256"];

/// Whether `u` has a credential for `alg`: a password covers every algorithm, `ha1` MD5
/// and `ha1_sha256` SHA-256.
fn user_has_credential(u: &UserConfig, alg: crate::auth::Algorithm) -> bool {
    use crate::auth::Algorithm;
    u.password.is_some()
        || (alg == Algorithm::Md5 && u.ha1.is_some())
        || (alg == Algorithm::Sha256 && u.ha1_sha256.is_some())
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
        }
    }
}

impl UserConfig {
    /// This user's ring time: its own, else the switch-wide one.
    pub fn no_answer_timeout(&self, sip: &SipConfig) -> Duration {
        Duration::from_secs(self.no_answer_timeout_s.unwrap_or(sip.no_answer_timeout_s))
    }
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ha1", &self.ha1.as_ref().map(|_| "<redacted>"))
            .field(
                "ha1_sha256",
                &self.ha1_sha256.as_ref().map(|_| "<redacted>"),
            )
            .field("algorithms", &self.algorithms)
            .field("call_waiting", &self.call_waiting)
            .field("forward_unconditional", &self.forward_unconditional)
            .field("forward_busy", &self.forward_busy)
            .field("forward_no_answer", &self.forward_no_answer)
            .field("no_answer_timeout_s", &self.no_answer_timeout_s)
            .field("display_name", &self.display_name)
            .finish()
    }
}

impl FromStr for ListenSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (t, addr) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not transport:ip:port"))?;
        let transport = match t.to_ascii_lowercase().as_str() {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            _ => return Err(format!("{s:?}: transport must be udp or tcp")),
        };
        let addr = addr.parse::<SocketAddr>().map_err(|_| {
            format!("{s:?}: expected an IP address and port, such as udp:0.0.0.0:5060 or tcp:[::1]:5060")
        })?;
        Ok(ListenSpec { transport, addr })
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.addr)
    }
}

impl Serialize for ListenSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListenSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl ConfigProblem {
    /// A problem at `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigProblem {}

/// The process environment as UTF-8 pairs; entries that are not UTF-8 are skipped
/// (they cannot be `SOFTSWITCH_*` settings we understand anyway).
pub fn env_vars() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

/// `softswitch --check-config FILE`: loads `path` with the process environment applied
/// (as the switch would run), prints `ok` or one `key: message` line per problem to
/// stderr, and returns the exit code: 0 when valid, 2 otherwise.
pub fn check_config_main(path: &Path) -> i32 {
    match Config::load(Some(path), env_vars()) {
        Ok(_) => {
            eprintln!("ok");
            0
        }
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            2
        }
    }
}

/// RFC 3261 §25.1 `user`: unreserved / user-unreserved characters (no escapes).
/// RFC 3261 §25.1 `user`: unreserved, user-unreserved and `%HH` escapes, written as the
/// URI carries it (the registrar compares users in their escaped form, so
/// `null-%00-null` of RFC 4475 §3.1.1.10 is a user name too).
fn is_sip_user(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return false;
                }
                i += 3;
            }
            c if c.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&c) => i += 1,
            _ => return false,
        }
    }
    !s.is_empty()
}

fn is_sip_uri(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    (lower.starts_with("sip:") && s.len() > 4) || (lower.starts_with("sips:") && s.len() > 5)
}

fn random_password() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::rngs::OsRng, 20)
}

/// The demo passwords (in [`DEMO_USERS`] order) from the file at `path`, generated and
/// written there first when it does not exist.
fn demo_passwords(path: &Path) -> io::Result<Vec<String>> {
    match std::fs::File::open(path) {
        Ok(file) => read_demo_file(path, file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let passwords: Vec<String> = DEMO_USERS.iter().map(|_| random_password()).collect();
            write_demo_file(path, &passwords)?;
            tracing::info!(path = %path.display(), "demo directory: new passwords generated");
            Ok(passwords)
        }
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

/// Reads a demo-passwords file: `user password` lines for each of [`DEMO_USERS`], once,
/// and `#` comments. Errors name the file and the line, never a password.
fn read_demo_file(path: &Path, file: std::fs::File) -> io::Result<Vec<String>> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let refuse = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {why}", path.display()),
        )
    };
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(refuse(format!(
            "mode {:o} lets others than its owner read the demo passwords; \
             chmod 600 it, or delete it to have new passwords generated",
            mode & 0o777
        )));
    }
    let mut text = String::new();
    file.take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| refuse(e.to_string()))?;
    let malformed = |why: String| {
        refuse(format!(
            "{why} (expected one `user password` line for each of {}; delete the file to \
             have new passwords generated)",
            DEMO_USERS.join(", ")
        ))
    };
    let mut passwords: Vec<Option<String>> = vec![None; DEMO_USERS.len()];
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(user), Some(password), None) = (words.next(), words.next(), words.next()) else {
            return Err(malformed(format!("line {}: not `user password`", n + 1)));
        };
        let Some(i) = DEMO_USERS.iter().position(|u| *u == user) else {
            // The word is not echoed: it might be a password written first.
            return Err(malformed(format!(
                "line {}: not a demo user ([[users]] configures others)",
                n + 1
            )));
        };
        if passwords[i].replace(password.to_string()).is_some() {
            return Err(malformed(format!("line {}: {user} again", n + 1)));
        }
    }
    DEMO_USERS
        .iter()
        .zip(passwords)
        .map(|(user, p)| p.ok_or_else(|| malformed(format!("no line for {user}"))))
        .collect()
}

/// Writes the demo passwords to `path` atomically: a side file created with mode 0600
/// (so never readable by others, not even for a moment), synced, renamed over `path`,
/// and the directory synced. A crash leaves the whole file or none (and a stale side
/// file, replaced at the next start).
fn write_demo_file(path: &Path, passwords: &[String]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut side = path.as_os_str().to_owned();
    side.push(".new");
    let side = PathBuf::from(side);
    let mut text = String::from(
        "# softswitch demo directory: generated because no [[users]] are configured and a\n\
         # listener is not on loopback; kept across restarts. Delete this file to have new\n\
         # passwords generated at the next start. user password\n",
    );
    for (user, password) in DEMO_USERS.iter().zip(passwords) {
        text.push_str(user);
        text.push(' ');
        text.push_str(password);
        text.push('\n');
    }
    let result = (|| {
        std::fs::create_dir_all(dir)?;
        match std::fs::remove_file(&side) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&side)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&side, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&side);
    }
    result.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn read_table(path: &Path, problems: &mut Vec<ConfigProblem>) -> toml::Table {
    let key = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse_table(&text, &key, problems),
        Err(e) => {
            problems.push(ConfigProblem::new(key, format!("cannot read: {e}")));
            toml::Table::new()
        }
    }
}

fn parse_table(text: &str, key: &str, problems: &mut Vec<ConfigProblem>) -> toml::Table {
    match text.parse::<toml::Table>() {
        Ok(t) => t,
        Err(e) => {
            let at = e
                .span()
                .map(|sp| {
                    let before = &text[..sp.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("line {line}, column {col}: ")
                })
                .unwrap_or_default();
            problems.push(ConfigProblem::new(
                key,
                format!("{at}{}", e.message().trim()),
            ));
            toml::Table::new()
        }
    }
}

/// The expected shape: the defaults, with every optional key filled in, as TOML.
/// `users` maps to a one-element array holding a fully-populated user.
fn schema() -> toml::Table {
    let mut full = Config::default();
    full.sip.advertised_host = Some(String::new());
    full.users = vec![UserConfig {
        user: String::new(),
        password: Some(String::new()),
        ha1: Some(String::new()),
        ha1_sha256: Some(String::new()),
        algorithms: Some(vec![String::new()]),
        call_waiting: false,
        forward_unconditional: Some(String::new()),
        forward_busy: Some(String::new()),
        forward_no_answer: Some(String::new()),
        no_answer_timeout_s: Some(0),
        display_name: Some(String::new()),
    }];
    match toml::Value::try_from(&full) {
        Ok(toml::Value::Table(t)) => t,
        // Serialising our own plain structs cannot fail; an empty schema would only
        // make every key "unknown", which the unit tests would catch at once.
        _ => toml::Table::new(),
    }
}

fn kind(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// Removes `section.key` (as a [`ConfigProblem`] names it) from `table`, if present.
fn remove_key(table: &mut toml::Table, key: &str) {
    match key.split_once('.') {
        Some((section, k)) => {
            if let Some(toml::Value::Table(t)) = table.get_mut(section) {
                t.remove(k);
            }
        }
        None => {
            table.remove(key);
        }
    }
}

/// Reports unknown sections and keys, and values of the wrong TOML type.
fn check_shape(table: &toml::Table, schema: &toml::Table, problems: &mut Vec<ConfigProblem>) {
    for (section, value) in table {
        let Some(expected) = schema.get(section) else {
            problems.push(ConfigProblem::new(section.as_str(), "unknown section"));
            continue;
        };
        match (value, expected) {
            (toml::Value::Table(t), toml::Value::Table(e)) => {
                check_keys(section, t, e, problems);
            }
            (toml::Value::Array(items), toml::Value::Array(e)) if section == "users" => {
                let Some(toml::Value::Table(user_schema)) = e.first() else {
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    match item {
                        toml::Value::Table(t) => {
                            check_keys(&format!("users[{i}]"), t, user_schema, problems)
                        }
                        other => problems.push(ConfigProblem::new(
                            format!("users[{i}]"),
                            format!("expected a table ([[users]]), found {}", kind(other)),
                        )),
                    }
                }
            }
            (other, e) => problems.push(ConfigProblem::new(
                section.as_str(),
                format!("expected {}, found {}", kind(e), kind(other)),
            )),
        }
    }
}

fn check_keys(
    prefix: &str,
    table: &toml::Table,
    schema: &toml::Table,
    problems: &mut Vec<ConfigProblem>,
) {
    for (key, value) in table {
        let path = format!("{prefix}.{key}");
        match schema.get(key) {
            None => {
                let why = removed_key(&path).unwrap_or("unknown key");
                problems.push(ConfigProblem::new(path, why))
            }
            Some(expected) => {
                if let Err(msg) = check_value(&path, value, expected) {
                    problems.push(ConfigProblem::new(path, msg));
                }
            }
        }
    }
}

fn check_value(path: &str, value: &toml::Value, expected: &toml::Value) -> Result<(), String> {
    use toml::Value as V;
    match (value, expected) {
        (V::Integer(i), V::Integer(_)) if *i < 0 => Err("must not be negative".to_string()),
        (V::Array(items), V::Array(_)) => {
            for (i, item) in items.iter().enumerate() {
                let V::String(s) = item else {
                    return Err(format!("item {i}: expected a string, found {}", kind(item)));
                };
                if path == "sip.listen" {
                    s.parse::<ListenSpec>()?;
                }
            }
            Ok(())
        }
        (V::String(s), V::String(_)) if path == "http.listen" => s
            .parse::<SocketAddr>()
            .map(|_| ())
            .map_err(|_| format!("{s:?}: expected an IP address and port, such as 127.0.0.1:9090")),
        (v, e) if std::mem::discriminant(v) == std::mem::discriminant(e) => Ok(()),
        (v, e) => Err(format!("expected {}, found {}", kind(e), kind(v))),
    }
}

/// Applies `SOFTSWITCH_<SECTION>_<KEY>` overrides, typed after the schema.
fn apply_env(
    table: &mut toml::Table,
    schema: &toml::Table,
    env: impl Iterator<Item = (String, String)>,
    problems: &mut Vec<ConfigProblem>,
) {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let Some((section, key)) = rest.split_once('_') else {
            problems.push(ConfigProblem::new(
                name.as_str(),
                "expected SOFTSWITCH_<SECTION>_<KEY>",
            ));
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        if section == "users" {
            problems.push(ConfigProblem::new(
                name.as_str(),
                "[[users]] cannot be set from the environment; use the config file",
            ));
            continue;
        }
        let Some(toml::Value::Table(sec_schema)) = schema.get(&section) else {
            problems.push(ConfigProblem::new(name.as_str(), "unknown section"));
            continue;
        };
        let Some(expected) = sec_schema.get(&key) else {
            let why = removed_key(&format!("{section}.{key}")).unwrap_or("unknown key");
            problems.push(ConfigProblem::new(name.as_str(), why));
            continue;
        };
        let value = match env_value(&raw, expected) {
            Ok(v) => v,
            Err(msg) => {
                problems.push(ConfigProblem::new(name.as_str(), msg));
                continue;
            }
        };
        if let Err(msg) = check_value(&format!("{section}.{key}"), &value, expected) {
            problems.push(ConfigProblem::new(name.as_str(), msg));
            continue;
        }
        let entry = table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = entry {
            t.insert(key, value);
        }
        // A non-table section was already reported by check_shape.
    }
}

fn env_value(raw: &str, expected: &toml::Value) -> Result<toml::Value, String> {
    use toml::Value as V;
    let raw = raw.trim();
    Ok(match expected {
        V::Integer(_) => V::Integer(
            raw.parse::<i64>()
                .map_err(|_| format!("{raw:?} is not an integer"))?,
        ),
        V::Boolean(_) => V::Boolean(match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(format!("{raw:?} is not a boolean (true or false)")),
        }),
        V::Array(_) => V::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| V::String(s.to_string()))
                .collect(),
        ),
        _ => V::String(raw.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn problems_of(text: &str) -> Vec<String> {
        match Config::from_toml_str(text) {
            Ok(_) => Vec::new(),
            Err(ps) => ps.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn has(problems: &[String], key: &str) -> bool {
        problems.iter().any(|p| p.starts_with(&format!("{key}: ")))
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "softswitch-config-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&d).expect("temp dir is writable");
        d
    }

    #[test]
    fn defaults_match_interface_md() {
        let c = Config::load(None, env(&[])).expect("defaults are valid");
        let listen: Vec<String> = c.sip.listen.iter().map(|l| l.to_string()).collect();
        assert_eq!(listen, ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]);
        assert_eq!(c.sip.domain, "localhost");
        assert_eq!(c.sip.advertised_host, None);
        assert_eq!(
            (
                c.sip.no_answer_timeout_s,
                c.sip.t1_ms,
                c.sip.t2_ms,
                c.sip.t4_ms
            ),
            (20, 500, 4000, 5000)
        );
        assert_eq!(
            (
                c.sip.tcp_idle_timeout_s,
                c.sip.tcp_max_connections,
                c.sip.drain_timeout_s
            ),
            (300, 4096, 30)
        );
        assert_eq!(
            (
                c.limits.max_message_bytes,
                c.limits.max_headers,
                c.limits.max_header_line_bytes,
                c.limits.max_body_bytes
            ),
            (65536, 256, 8192, 32768)
        );
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.billing.cdr_path, PathBuf::from("data/cdr.jsonl"));
        assert_eq!(c.log.level, "info");
        assert!(c.users.is_empty());
        assert_eq!(c.sip.t1(), Duration::from_millis(500));
        assert_eq!((c.sip.session_expires_s, c.sip.min_se_s), (1800, 90));
    }

    #[test]
    fn session_timers_are_checked_against_rfc_4028_and_each_other() {
        let ps = problems_of("[sip]\nsession_expires_s = 60\nmin_se_s = 120\n");
        assert!(has(&ps, "sip.session_expires_s"), "{ps:?}");
        let ps = problems_of("[sip]\nmin_se_s = 0\n");
        assert!(has(&ps, "sip.min_se_s"), "{ps:?}");
        // Below RFC 4028's 90 s only where tests run (debug assertions), never in a
        // release build.
        let ps = problems_of("[sip]\nsession_expires_s = 6\nmin_se_s = 2\n");
        assert_eq!(has(&ps, "sip.min_se_s"), !cfg!(debug_assertions), "{ps:?}");
        assert!(problems_of("[sip]\nsession_expires_s = 90\nmin_se_s = 90\n").is_empty());
    }

    #[test]
    fn parses_the_interface_md_example() {
        let text = r#"
[sip]
listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
domain = "example.test"
advertised_host = "203.0.113.7"
no_answer_timeout_s = 20

[http]
listen = "127.0.0.1:9090"

[billing]
cdr_path = "data/cdr.jsonl"

[[users]]
user = "alice"
password = "secret-a"
call_waiting = true
forward_unconditional = "dave"
forward_busy = "carol"
forward_no_answer = "carol"
no_answer_timeout_s = 8

[[users]]
user = "carol"
ha1 = "0123456789abcdef0123456789ABCDEF"

[[users]]
user = "dave"
password = "d"
forward_busy = "sip:carol@example.test"
"#;
        let c = Config::from_toml_str(text).expect("example is valid");
        assert_eq!(c.sip.domain, "example.test");
        assert_eq!(c.sip.advertised_host.as_deref(), Some("203.0.113.7"));
        assert_eq!(c.users.len(), 3);
        let a = &c.users[0];
        assert!(a.call_waiting);
        assert_eq!(a.forward_unconditional.as_deref(), Some("dave"));
        assert_eq!(a.no_answer_timeout(&c.sip), Duration::from_secs(8));
        assert_eq!(
            c.users[1].no_answer_timeout(&c.sip),
            Duration::from_secs(20)
        );
        assert!(!c.users[1].call_waiting);
        assert!(c.is_loopback_only());
    }

    #[test]
    fn listen_specs_parse_and_print() {
        for (text, t, addr) in [
            ("udp:127.0.0.1:5060", Transport::Udp, "127.0.0.1:5060"),
            ("tcp:[::1]:5060", Transport::Tcp, "[::1]:5060"),
            ("udp:0.0.0.0:5060", Transport::Udp, "0.0.0.0:5060"),
            ("TCP:10.0.0.1:5080", Transport::Tcp, "10.0.0.1:5080"),
        ] {
            let spec: ListenSpec = text.parse().expect(text);
            assert_eq!(spec.transport, t);
            assert_eq!(spec.addr.to_string(), addr);
            assert_eq!(spec.to_string(), format!("{}:{}", t, addr));
        }
        for bad in [
            "",
            "udp",
            "sctp:127.0.0.1:5060",
            "udp:localhost:5060",
            "udp:127.0.0.1",
            "tcp:::1:5060",
        ] {
            assert!(
                bad.parse::<ListenSpec>().is_err(),
                "{bad:?} should not parse"
            );
        }
    }

    #[test]
    fn unknown_sections_and_keys_are_problems() {
        let ps = problems_of("[sip]\nlisten_on = []\n[nope]\nx = 1\n[[users]]\nuser = \"a\"\npassword = \"p\"\nvoicemail = true\n");
        assert!(has(&ps, "sip.listen_on"), "{ps:?}");
        assert!(has(&ps, "nope"), "{ps:?}");
        assert!(has(&ps, "users[0].voicemail"), "{ps:?}");
    }

    #[test]
    fn removed_md5_only_user_agents_says_so_from_file_and_environment() {
        let ps = problems_of("[auth]\nmd5_only_user_agents = [\"baresip v1.\"]\n");
        assert_eq!(ps.len(), 1, "{ps:?}");
        assert!(
            ps[0].starts_with("auth.md5_only_user_agents: removed:") && ps[0].contains("README"),
            "{ps:?}"
        );
        let Err(ps) = Config::load(
            None,
            env(&[("SOFTSWITCH_AUTH_MD5_ONLY_USER_AGENTS", "baresip v1.")]),
        ) else {
            panic!("a removed key is a problem");
        };
        assert_eq!(ps.len(), 1, "{ps:?}");
        assert_eq!(ps[0].key, "SOFTSWITCH_AUTH_MD5_ONLY_USER_AGENTS");
        assert!(ps[0].message.starts_with("removed:"), "{ps:?}");
    }

    #[test]
    fn auth_defaults_to_md5_alone_and_users_may_have_their_own_list() {
        assert_eq!(Config::default().auth.algorithms, ["MD5"]);
        let user = |extra: &str| {
            problems_of(&format!(
                "[[users]]\nuser = \"a\"\n{extra}\n[[users]]\nuser = \"b\"\npassword = \"p\"\n"
            ))
        };
        assert!(user("password = \"p\"\nalgorithms = [\"SHA-256\", \"MD5\"]").is_empty());
        let ha1 = format!("ha1 = \"{}\"", "0".repeat(32));
        assert!(user(&format!("{ha1}\nalgorithms = [\"MD5\"]")).is_empty());
        let ps = user(&format!("{ha1}\nalgorithms = [\"SHA-256\", \"MD5\"]"));
        assert!(has(&ps, "users[0].algorithms"), "no SHA-256 HA1: {ps:?}");
        let sha = format!("{ha1}\nha1_sha256 = \"{}\"", "0".repeat(64));
        assert!(user(&format!("{sha}\nalgorithms = [\"SHA-256\"]")).is_empty());
        let ps = user("password = \"p\"\nalgorithms = []");
        assert!(has(&ps, "users[0].algorithms"), "{ps:?}");
        let ps = user("password = \"p\"\nalgorithms = [\"SHA-1\"]");
        assert!(has(&ps, "users[0].algorithms"), "{ps:?}");
    }

    #[test]
    fn wrong_types_are_problems_with_their_key() {
        let ps = problems_of(
            "[sip]\nt1_ms = \"fast\"\nlisten = [\"udp:nowhere\"]\n[http]\nlisten = \"localhost\"\n[limits]\nmax_headers = -1\n",
        );
        assert!(has(&ps, "sip.t1_ms"), "{ps:?}");
        assert!(has(&ps, "sip.listen"), "{ps:?}");
        assert!(has(&ps, "http.listen"), "{ps:?}");
        assert!(has(&ps, "limits.max_headers"), "{ps:?}");
    }

    #[test]
    fn toml_syntax_error_names_line_and_column() {
        let ps = problems_of("[sip]\ndomain = \n");
        assert_eq!(ps.len(), 1, "{ps:?}");
        assert!(ps[0].starts_with("config: line 2, column"), "{ps:?}");
    }

    #[test]
    fn env_overrides_ints_strings_lists_and_paths() {
        let c = Config::load(
            None,
            env(&[
                ("SOFTSWITCH_SIP_T1_MS", "250"),
                (
                    "SOFTSWITCH_SIP_LISTEN",
                    "udp:127.0.0.1:5070, tcp:127.0.0.1:5070",
                ),
                ("SOFTSWITCH_SIP_NO_ANSWER_TIMEOUT_S", "9"),
                ("SOFTSWITCH_SIP_ADVERTISED_HOST", "198.51.100.1:5060"),
                ("SOFTSWITCH_HTTP_LISTEN", "0.0.0.0:9191"),
                (
                    "SOFTSWITCH_BILLING_CDR_PATH",
                    "/var/lib/softswitch/cdr.jsonl",
                ),
                ("SOFTSWITCH_LOG_LEVEL", "debug,softswitch::txn=trace"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .expect("overrides are valid");
        assert_eq!(c.sip.t1_ms, 250);
        assert_eq!(c.sip.no_answer_timeout_s, 9);
        assert_eq!(
            c.sip
                .listen
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>(),
            ["udp:127.0.0.1:5070", "tcp:127.0.0.1:5070"]
        );
        assert_eq!(c.sip.advertised_host.as_deref(), Some("198.51.100.1:5060"));
        assert_eq!(c.http.listen.to_string(), "0.0.0.0:9191");
        assert_eq!(
            c.billing.cdr_path,
            PathBuf::from("/var/lib/softswitch/cdr.jsonl")
        );
        assert_eq!(c.log.level, "debug,softswitch::txn=trace");
    }

    #[test]
    fn env_overrides_the_file() {
        let dir = temp_dir("file");
        let path = dir.join("softswitch.toml");
        std::fs::write(
            &path,
            "[sip]\nt1_ms = 100\nt2_ms = 2000\ndomain = \"a.test\"\n",
        )
        .expect("write");
        let c = Config::load(Some(&path), env(&[("SOFTSWITCH_SIP_T1_MS", "200")])).expect("valid");
        assert_eq!((c.sip.t1_ms, c.sip.t2_ms), (200, 2000));
        assert_eq!(c.sip.domain, "a.test");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn env_bool_parses_against_the_schema() {
        let schema = toml::Value::Boolean(false);
        assert_eq!(env_value("true", &schema), Ok(toml::Value::Boolean(true)));
        assert_eq!(env_value("0", &schema), Ok(toml::Value::Boolean(false)));
        assert!(env_value("maybe", &schema).is_err());
        let list = toml::Value::Array(vec![]);
        assert_eq!(env_value(" , ", &list), Ok(toml::Value::Array(vec![])));
    }

    #[test]
    fn bad_env_overrides_are_problems_named_by_variable() {
        let ps: Vec<String> = Config::load(
            None,
            env(&[
                ("SOFTSWITCH_SIP_T1_MS", "soon"),
                ("SOFTSWITCH_SIP_NOPE", "1"),
                ("SOFTSWITCH_BOGUS_KEY", "1"),
                ("SOFTSWITCH_USERS_ALICE", "x"),
                ("SOFTSWITCH_DEBUG", "1"),
                ("SOFTSWITCH_SIP_LISTEN", "udp:example.test:5060"),
                ("SOFTSWITCH_HTTP_LISTEN", "9090"),
            ]),
        )
        .expect_err("all bad")
        .iter()
        .map(|p| p.to_string())
        .collect();
        for key in [
            "SOFTSWITCH_SIP_T1_MS",
            "SOFTSWITCH_SIP_NOPE",
            "SOFTSWITCH_BOGUS_KEY",
            "SOFTSWITCH_USERS_ALICE",
            "SOFTSWITCH_DEBUG",
            "SOFTSWITCH_SIP_LISTEN",
            "SOFTSWITCH_HTTP_LISTEN",
        ] {
            assert!(has(&ps, key), "{key} missing from {ps:?}");
        }
    }

    #[test]
    fn empty_listen_list_is_a_problem() {
        let ps: Vec<String> = Config::load(None, env(&[("SOFTSWITCH_SIP_LISTEN", "")]))
            .expect_err("empty")
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert!(has(&ps, "sip.listen"), "{ps:?}");
    }

    #[test]
    fn validation_of_sip_and_limits() {
        let cases: &[(&str, &str)] = &[
            (
                "[sip]\nlisten = [\"udp:127.0.0.1:5060\", \"udp:127.0.0.1:5060\"]",
                "sip.listen",
            ),
            ("[sip]\ndomain = \"\"", "sip.domain"),
            ("[sip]\ndomain = \"a b\"", "sip.domain"),
            ("[sip]\nadvertised_host = \"\"", "sip.advertised_host"),
            ("[sip]\nt1_ms = 5000\nt2_ms = 4000", "sip.t1_ms"),
            ("[sip]\nt1_ms = 0", "sip.t1_ms"),
            ("[sip]\nt4_ms = 0", "sip.t4_ms"),
            ("[sip]\nno_answer_timeout_s = 0", "sip.no_answer_timeout_s"),
            ("[sip]\ntcp_max_connections = 0", "sip.tcp_max_connections"),
            ("[sip]\ntcp_idle_timeout_s = 0", "sip.tcp_idle_timeout_s"),
            ("[limits]\nmax_headers = 0", "limits.max_headers"),
            (
                "[limits]\nmax_message_bytes = 0",
                "limits.max_message_bytes",
            ),
            (
                "[limits]\nmax_header_line_bytes = 0",
                "limits.max_header_line_bytes",
            ),
            ("[limits]\nmax_body_bytes = 0", "limits.max_body_bytes"),
            ("[limits]\nmax_body_bytes = 65536", "limits.max_body_bytes"),
            (
                "[limits]\nmax_header_line_bytes = 70000",
                "limits.max_header_line_bytes",
            ),
            ("[billing]\ncdr_path = \"\"", "billing.cdr_path"),
            ("[log]\nlevel = \"softswitch=loud\"", "log.level"),
        ];
        for (text, key) in cases {
            let ps = problems_of(text);
            assert!(has(&ps, key), "{text:?}: expected {key}, got {ps:?}");
        }
        assert!(problems_of("[sip]\ndrain_timeout_s = 0").is_empty());
    }

    #[test]
    fn validation_of_users() {
        let user = |body: &str| {
            format!("[[users]]\nuser = \"alice\"\n{body}\n[[users]]\nuser = \"bob\"\npassword = \"b\"\n")
        };
        let cases: Vec<(String, &str)> = vec![
            (user(""), "users[0].password"),
            (user("password = \"a\"\nha1 = \"0123456789abcdef0123456789abcdef\""), "users[0].password"),
            (user("password = \"\""), "users[0].password"),
            (user("ha1 = \"0123\""), "users[0].ha1"),
            (user("ha1 = \"0123456789abcdef0123456789abcdeg\""), "users[0].ha1"),
            (user("password = \"a\"\nforward_busy = \"\""), "users[0].forward_busy"),
            (user("password = \"a\"\nforward_no_answer = \"zed\""), "users[0].forward_no_answer"),
            (user("password = \"a\"\nforward_unconditional = \"alice\""), "users[0].forward_unconditional"),
            (user("password = \"a\"\nforward_unconditional = \"sip:\""), "users[0].forward_unconditional"),
            (user("password = \"a\"\nforward_busy = \"sip:bob@elsewhere.example\""), "users[0].forward_busy"),
            (user("password = \"a\"\nforward_busy = \"sip:ghost@localhost\""), "users[0].forward_busy"),
            (user("password = \"a\"\nno_answer_timeout_s = 0"), "users[0].no_answer_timeout_s"),
            (user("password = \"a\"\ndisplay_name = \" \""), "users[0].display_name"),
            (user("password = \"a\"\ndisplay_name = \"Eve\\r\\nX-Evil: 1\""), "users[0].display_name"),
            (user("password = \"a\"\ndisplay_name = \"Tab\\there\""), "users[0].display_name"),
            (user(&format!("password = \"a\"\ndisplay_name = \"{}\"", "x".repeat(129))), "users[0].display_name"),
            ("[[users]]\nuser = \"al ice\"\npassword = \"a\"".to_string(), "users[0].user"),
            ("[[users]]\nuser = \"\"\npassword = \"a\"".to_string(), "users[0].user"),
            ("[[users]]\nuser = \"a@b\"\npassword = \"a\"".to_string(), "users[0].user"),
            (
                "[[users]]\nuser = \"a\"\npassword = \"a\"\n[[users]]\nuser = \"a\"\npassword = \"b\"".to_string(),
                "users[1].user",
            ),
            ("users = 3".to_string(), "users"),
        ];
        for (text, key) in &cases {
            let ps = problems_of(text);
            assert!(has(&ps, key), "{text:?}: expected {key}, got {ps:?}");
        }
        assert!(problems_of(&user(
            "password = \"a\"\nforward_busy = \"bob\"\nforward_no_answer = \"sips:bob@localhost:5061\""
        ))
        .is_empty());
        // Quotes, backslashes and non-ASCII are fine: the From quotes them (§25.1).
        assert!(problems_of(&user(
            "password = \"a\"\ndisplay_name = \"Zoë \\\"Z\\\" O'Neil \\\\ Sales\""
        ))
        .is_empty());
    }

    #[test]
    fn problems_display_as_key_colon_message() {
        assert_eq!(
            ConfigProblem::new("sip.t1_ms", "must be greater than 0").to_string(),
            "sip.t1_ms: must be greater than 0"
        );
    }

    #[test]
    fn user_debug_redacts_secrets() {
        let u = UserConfig {
            user: "alice".into(),
            password: Some("hunter2".into()),
            ..UserConfig::default()
        };
        let s = format!("{u:?}");
        assert!(!s.contains("hunter2") && s.contains("redacted"), "{s}");
    }

    #[test]
    fn demo_directory_on_loopback_is_fixed_and_writes_nothing() {
        let dir = temp_dir("demo-lo");
        let c = Config::load(
            None,
            env(&[
                ("SOFTSWITCH_SIP_LISTEN", "udp:127.0.0.1:5060,tcp:[::1]:5060"),
                (
                    "SOFTSWITCH_BILLING_CDR_PATH",
                    &dir.join("cdr.jsonl").to_string_lossy(),
                ),
            ]),
        )
        .expect("valid");
        let users = c.users_or_demo().expect("demo");
        let names: Vec<&str> = users.iter().map(|u| u.user.as_str()).collect();
        assert_eq!(names, DEMO_USERS);
        assert_eq!(users[0].password.as_deref(), Some("alice-demo"));
        assert!(!c.demo_users_path().exists());
        std::fs::remove_dir_all(&dir).ok();
    }

    fn off_loopback(dir: &Path) -> Config {
        let cdr = dir.join("sub").join("cdr.jsonl");
        let c = Config::load(
            None,
            env(&[("SOFTSWITCH_BILLING_CDR_PATH", &cdr.to_string_lossy())]),
        )
        .expect("valid");
        assert!(!c.is_loopback_only());
        c
    }

    #[test]
    fn demo_directory_off_loopback_is_random_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("demo-any");
        let c = off_loopback(&dir);
        let path = c.demo_users_path();
        assert_eq!(path, dir.join("sub").join(DEMO_USERS_FILE));
        let first = c.users_or_demo().expect("demo");
        let mode = std::fs::metadata(&path)
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).expect("readable");
        for u in &first {
            let pw = u.password.as_deref().expect("set");
            assert!(pw.len() >= 16 && !pw.contains("demo"));
            assert!(text.contains(&format!("\n{} {pw}\n", u.user)), "{text}");
        }
        assert_ne!(first[0].password, first[1].password);
        // The next start reads them back, and leaves the file as it was.
        assert_eq!(c.users_or_demo().expect("demo"), first);
        assert_eq!(std::fs::read_to_string(&path).expect("readable"), text);
        assert!(!dir.join("sub").join("demo-users.txt.new").exists());
        // An operator's own passwords (edited in place, comments and blank lines) count.
        std::fs::write(
            &path,
            "# mine\n\ndave d-pw\n  carol c-pw \nbob\tb-pw\nalice a-pw\n",
        )
        .expect("edit");
        let pws: Vec<_> = c
            .users_or_demo()
            .expect("edited")
            .into_iter()
            .map(|u| u.password.unwrap_or_default())
            .collect();
        assert_eq!(pws, ["a-pw", "b-pw", "c-pw", "d-pw"]);
        // Deleted: new ones, and a side file left by a crashed write is replaced.
        std::fs::remove_file(&path).expect("delete");
        std::fs::write(dir.join("sub").join("demo-users.txt.new"), "junk").expect("side");
        let again = c.users_or_demo().expect("regenerated");
        assert_ne!(again[0].password.as_deref(), Some("a-pw"));
        assert_ne!(again[0].password, first[0].password);
        assert!(!dir.join("sub").join("demo-users.txt.new").exists());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn demo_directory_file_malformed_or_open_to_others_stops_start_up_untouched() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("demo-bad");
        let c = off_loopback(&dir);
        let path = c.demo_users_path();
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        let full = "alice a-pw\nbob b-pw\ncarol c-pw\ndave d-pw\n";
        for (text, why) in [
            ("alice a-pw\nbob b-pw\ncarol c-pw\n", "no line for dave"),
            (
                "alice a-pw\nbob b-pw extra\n",
                "line 2: not `user password`",
            ),
            ("alice\n", "line 1: not `user password`"),
            (&format!("{full}erin e-pw\n"), "line 5: not a demo user"),
            (&format!("{full}bob pw-two\n"), "line 5: bob again"),
            ("", "no line for alice"),
        ] {
            std::fs::write(&path, text).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            let e = c.users_or_demo().expect_err(text);
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(why), "{text:?}: {msg}");
            assert!(msg.contains("delete the file"), "{msg}");
            assert!(!msg.contains("pw"), "a password in {msg}");
            assert_eq!(std::fs::read_to_string(&path).expect("kept"), text);
        }
        std::fs::write(&path, full).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let msg = c.users_or_demo().expect_err("group-readable").to_string();
        assert!(
            msg.contains("mode 640") && msg.contains("chmod 600"),
            "{msg}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(c.users_or_demo().expect("private again").len(), 4);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn configured_users_win_over_demo() {
        let c =
            Config::from_toml_str("[[users]]\nuser = \"zoe\"\npassword = \"z\"\n").expect("valid");
        let users = c.users_or_demo().expect("no io");
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].user, "zoe");
    }

    #[test]
    fn check_config_main_exit_codes() {
        let dir = temp_dir("check");
        let good = dir.join("good.toml");
        let bad = dir.join("bad.toml");
        std::fs::write(&good, "[sip]\ndomain = \"x.test\"\n").expect("write");
        std::fs::write(&bad, "[sip]\nt1_ms = 0\n").expect("write");
        assert_eq!(check_config_main(&good), 0);
        assert_eq!(check_config_main(&bad), 2);
        assert_eq!(check_config_main(&dir.join("missing.toml")), 2);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn user_names_may_be_escaped() {
        for ok in ["alice", "john.doe", "null-%00-null", "a%2Fb", "+1-555"] {
            assert!(is_sip_user(ok), "{ok}");
        }
        for bad in ["", "a b", "a@b", "a%", "a%0", "a%zz", "a:b"] {
            assert!(!is_sip_user(bad), "{bad}");
        }
    }

    #[test]
    fn schema_covers_every_field() {
        let s = schema();
        let sip = s.get("sip").and_then(|v| v.as_table()).expect("sip");
        assert!(sip.contains_key("advertised_host") && sip.contains_key("listen"));
        let users = s.get("users").and_then(|v| v.as_array()).expect("users");
        let u = users[0].as_table().expect("user table");
        assert_eq!(u.len(), 11);
        for section in ["limits", "http", "billing", "registrar", "auth", "log"] {
            assert!(s.contains_key(section), "{section}");
        }
    }
}
