//! The vocabulary between the root crate (SIP parsing, transactions) and the actors.
//!
//! The root crate translates a parsed REGISTER into a [`RegisterUpdate`] (its contacts
//! already validated and their comparison keys computed, because URI comparison needs our
//! parser, RFC 3261 §19.1.4) and turns a [`Registered`] or [`RegisterError`] back into a
//! SIP response. Nothing here knows SIP syntax; everything here is plain data.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The transport a binding was registered over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

impl TransportKind {
    /// `udp` or `tcp`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TransportKind::Udp => "udp",
            TransportKind::Tcp => "tcp",
        }
    }
}

/// Where a REGISTER came from: the packet's source (RFC 3581 `received`/`rport`), so a
/// phone behind NAT is reached at the address its requests come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Source {
    /// UDP or TCP.
    pub transport: TransportKind,
    /// The source address and port of the packet.
    pub addr: SocketAddr,
    /// The TCP connection it came on (meaningless after a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<u64>,
}

/// One Contact of a REGISTER, validated by the root crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactSpec {
    /// The contact URI as written.
    pub uri: String,
    /// The header parameters as written, `expires` removed (`;+sip.instance="<urn:…>";reg-id=1;q=0.5`).
    pub params: String,
    /// The `expires` parameter, saturated to `u32`.
    pub expires: Option<u32>,
    /// What makes two contacts the same binding: a hash of `+sip.instance` and `reg-id`
    /// when the contact has an instance (RFC 5626 §6: the same instance replaces the old
    /// binding), else of the URI normalised per RFC 3261 §19.1.4.
    pub key: u64,
}

/// The Contact header field values of a REGISTER (RFC 3261 §10.3 step 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactSet {
    /// No Contact: a query for the current bindings.
    Query,
    /// `Contact: *` with `Expires: 0` (validated by the root crate): remove every binding.
    Wildcard,
    /// One or more contacts to add, refresh or remove.
    List(Vec<ContactSpec>),
}

/// A REGISTER, as the registrar of one AOR sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterUpdate {
    /// The address-of-record, `user@domain`.
    pub aor: String,
    /// The contacts.
    pub contacts: ContactSet,
    /// The Expires header, saturated to `u32`.
    pub expires_header: Option<u32>,
    /// The Call-ID.
    pub call_id: String,
    /// The CSeq number.
    pub cseq: u32,
    /// The packet's source.
    pub source: Source,
    /// Path header values to store (RFC 3327), empty when the UA did not ask.
    pub path: Vec<String>,
    /// The User-Agent header.
    pub user_agent: Option<String>,
    /// Wall-clock time of the request, Unix milliseconds.
    pub now_ms: u64,
}

impl RegisterUpdate {
    /// The internal query that drops `aor`'s expired bindings (an empty Call-ID marks it).
    pub fn expiry(aor: &str, now_ms: u64) -> RegisterUpdate {
        RegisterUpdate {
            aor: aor.to_string(),
            contacts: ContactSet::Query,
            expires_header: None,
            call_id: String::new(),
            cseq: 0,
            source: Source {
                transport: TransportKind::Udp,
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                conn: None,
            },
            path: Vec::new(),
            user_agent: None,
            now_ms,
        }
    }
}

/// The registrar's bounds (config `[registrar]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Expiry when neither the contact nor the request gives one, seconds.
    pub default_expires: u32,
    /// Shortest accepted nonzero expiry (423 with Min-Expires below it), seconds.
    pub min_expires: u32,
    /// Longest expiry; longer requests are shortened to it, seconds.
    pub max_expires: u32,
    /// Most bindings per AOR.
    pub max_contacts: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            default_expires: 3600,
            min_expires: 60,
            max_expires: 7200,
            max_contacts: 10,
        }
    }
}

/// Why a REGISTER was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterError {
    /// A nonzero expiry below the minimum: 423 with `Min-Expires` (§10.3 step 7).
    IntervalTooBrief {
        /// The minimum, seconds.
        min: u32,
    },
    /// More contacts in one request than an AOR may hold.
    TooManyContacts {
        /// The maximum.
        max: usize,
    },
    /// Same Call-ID and a lower CSeq than a stored binding: an old request (§10.3 step 7).
    OutOfOrder,
    /// The store could not persist the change; nothing was applied.
    Storage(String),
    /// The AOR's actor stopped with the request queued; the caller may send it again.
    Retry(Box<RegisterUpdate>),
    /// The AOR's mailbox is full: 503 with Retry-After.
    Overloaded,
}

/// Tells the root crate that the number of bindings changed (the registrations gauge).
pub trait Observer: Send + Sync {
    /// The registrar now holds `total` bindings in all.
    fn bindings_changed(&self, total: usize);
}

/// An [`Observer`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn bindings_changed(&self, _total: usize) {}
}

/// A boxed store operation: resolves once the change is durable.
pub type StoreFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// Where the registrar persists each AOR's binding set (the journal in production).
pub trait Store: Send + Sync + 'static {
    /// Stores `value` as the binding set of `aor`.
    fn put(&self, aor: &str, value: Vec<u8>) -> StoreFuture;
    /// Forgets `aor`.
    fn delete(&self, aor: &str) -> StoreFuture;
}

/// A [`Store`] that keeps nothing (tests, and a switch run without persistence).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoStore;

impl Store for NoStore {
    fn put(&self, _aor: &str, _value: Vec<u8>) -> StoreFuture {
        Box::pin(std::future::ready(Ok(())))
    }
    fn delete(&self, _aor: &str) -> StoreFuture {
        Box::pin(std::future::ready(Ok(())))
    }
}
