//! L3: the RFC 3261 §17 transaction layer, sans-IO.
//!
//! Four state machines, one file each: the INVITE client ([`ict`], §17.1.1), the
//! non-INVITE client ([`nict`], §17.1.2), the INVITE server ([`ist`], §17.2.1) and the
//! non-INVITE server ([`nist`], §17.2.2), both INVITE machines with the Accepted state of
//! RFC 6026 §7. [`key`] holds the matching rules (§17.1.3, §17.2.3, §9.2), [`timers`]
//! the timers by RFC letter, and [`layer`] the [`TxLayer`] that owns every transaction
//! and one ordered set of deadlines.
//!
//! The layer is deterministic and does no I/O: it never awaits, never reads the clock
//! and never spawns. Time is an argument of every input and output is polled; see
//! [`TxLayer`] for the calling order.

pub mod ict;
pub mod ist;
pub mod key;
pub mod layer;
pub mod nict;
pub mod nist;
pub mod timers;

use crate::transport::Peer;
use crate::wire::{Request, Response};
use bytes::Bytes;
use rand::distributions::Alphanumeric;
use rand::Rng;
use std::collections::VecDeque;
use std::fmt;
use std::time::Instant;

pub use key::{ClientKey, Rfc2543Key, ServerKey};
pub use layer::TxLayer;
pub use timers::{Timer, TimerConfig, TimerTable};

/// Identifies one transaction for the lifetime of the layer; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(pub u64);

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tx{}", self.0)
    }
}

/// The four transaction kinds of RFC 3261 §17.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxKind {
    /// INVITE client transaction (§17.1.1).
    InviteClient,
    /// Non-INVITE client transaction (§17.1.2).
    NonInviteClient,
    /// INVITE server transaction (§17.2.1).
    InviteServer,
    /// Non-INVITE server transaction (§17.2.2).
    NonInviteServer,
}

impl TxKind {
    /// Every kind.
    pub const ALL: [TxKind; 4] = [
        TxKind::InviteClient,
        TxKind::NonInviteClient,
        TxKind::InviteServer,
        TxKind::NonInviteServer,
    ];

    /// A closed label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            TxKind::InviteClient => "invite_client",
            TxKind::NonInviteClient => "non_invite_client",
            TxKind::InviteServer => "invite_server",
            TxKind::NonInviteServer => "non_invite_server",
        }
    }

    pub(crate) fn slot(self) -> usize {
        self as usize
    }
}

/// A datagram or stream write for the transport. A message is serialised once;
/// retransmissions reuse the same [`Bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub peer: Peer,
    /// The serialised message.
    pub bytes: Bytes,
    /// The transaction that sent it, `None` for [`TxLayer::send_stateless`]. The driver
    /// passes it back to [`TxLayer::handle_transport_error`] when the send fails.
    pub tx: Option<TxId>,
}

/// What the layer tells the transaction user (TU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxEvent {
    /// A new server transaction was created for this request (never ACK, never CANCEL).
    /// For INVITE a 100 Trying is already queued.
    Request {
        /// The new server transaction.
        tx: TxId,
        /// Where the request came from; responses go back there.
        from: Peer,
        /// The request.
        request: Request,
    },
    /// A CANCEL created its own non-INVITE server transaction `tx`. The layer has not
    /// answered it: the TU sends the 200 (or 481) on `tx` and, when `target` is `Some`,
    /// a 487 on the INVITE server transaction it cancels (matched per §9.2). Kept apart
    /// from [`TxEvent::Request`] so a TU cannot treat a CANCEL as a new request by
    /// forgetting to look at a field.
    Cancel {
        /// The CANCEL's own server transaction.
        tx: TxId,
        /// Where the CANCEL came from.
        from: Peer,
        /// The CANCEL.
        request: Request,
        /// The INVITE server transaction it cancels, if one exists (in any state).
        target: Option<TxId>,
    },
    /// An ACK that matched no INVITE server transaction in Completed or Confirmed: the
    /// ACK for a 2xx (the dialog's business, including an ACK matched to a transaction
    /// in RFC 6026 Accepted) or a stray.
    Ack {
        /// Where the ACK came from.
        from: Peer,
        /// The ACK.
        request: Request,
    },
    /// A response for a client transaction: provisional, final, and in Accepted every
    /// further 2xx (retransmissions and forked answers).
    Response {
        /// The client transaction.
        tx: TxId,
        /// The response.
        response: Response,
    },
    /// A response matching no client transaction (e.g. a 2xx retransmission after Timer
    /// M): for the TU or dialog to handle or drop (RFC 6026 §7.2).
    StrayResponse {
        /// Where it came from.
        from: Peer,
        /// The response.
        response: Response,
    },
    /// Timer B or F (client: the TU treats it as a 408, §8.1.3.1) or Timer H (INVITE
    /// server: the ACK never came) fired. The transaction terminates.
    Timeout {
        /// The transaction.
        tx: TxId,
        /// B, F or H.
        timer: Timer,
    },
    /// The transport reported a failure for this transaction (§17.1.4, §17.2.4). The
    /// TU treats a client failure as a 503 (§8.1.3.1). The transaction terminates,
    /// except in RFC 6026 Accepted, where it stays until Timer L or M.
    TransportError {
        /// The transaction.
        tx: TxId,
    },
    /// The transaction is gone; its id will not appear again.
    Terminated {
        /// The transaction.
        tx: TxId,
    },
}

/// Why the layer refused a TU request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxError {
    /// No live transaction has this id (it never existed or has terminated).
    UnknownTransaction,
    /// The transaction's state does not allow this (e.g. a response after the final
    /// one, or a non-2xx in Accepted).
    InvalidState,
    /// A response was sent on a client transaction.
    NotServerTransaction,
    /// The status code is outside 100–699.
    InvalidStatus(u16),
    /// An ACK is never a client transaction: the ACK for a non-2xx is built by the INVITE
    /// client transaction, the ACK for a 2xx goes through [`TxLayer::send_stateless`].
    AckIsNotATransaction,
    /// The request's top Via has no RFC 3261 branch (`z9hG4bK…`, see [`new_branch`]).
    MissingBranch,
    /// A client transaction with the same branch and method already exists.
    DuplicateTransaction,
}

impl fmt::Display for TxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxError::UnknownTransaction => f.write_str("unknown transaction"),
            TxError::InvalidState => f.write_str("not allowed in the transaction's state"),
            TxError::NotServerTransaction => f.write_str("not a server transaction"),
            TxError::InvalidStatus(s) => write!(f, "invalid status code {s}"),
            TxError::AckIsNotATransaction => f.write_str("ACK does not start a transaction"),
            TxError::MissingBranch => f.write_str("top Via has no RFC 3261 branch"),
            TxError::DuplicateTransaction => f.write_str("duplicate client transaction"),
        }
    }
}

impl std::error::Error for TxError {}

/// Cumulative counters, for the driver to export as metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxStats {
    /// Transactions created, per [`TxKind`] slot (`TxKind::ALL` order).
    pub created: [u64; 4],
    /// Transactions terminated.
    pub terminated: u64,
    /// Timer-driven retransmissions sent (Timers A, E, G).
    pub retransmissions_sent: u64,
    /// Duplicates received and absorbed: retransmitted requests at a server transaction,
    /// retransmitted final responses at a client transaction in Completed, ACK
    /// retransmissions in Confirmed.
    pub retransmissions_received: u64,
    /// Messages re-sent because a duplicate arrived: the last response of a server
    /// transaction, the ACK of an INVITE client transaction in Completed.
    pub resent_on_duplicate: u64,
    /// Timer B fired (INVITE client gave up).
    pub timeouts_b: u64,
    /// Timer F fired (non-INVITE client gave up).
    pub timeouts_f: u64,
    /// Timer H fired (INVITE server never got the ACK).
    pub timeouts_h: u64,
    /// Transport errors reported for a live transaction.
    pub transport_errors: u64,
    /// Responses that matched no client transaction.
    pub stray_responses: u64,
    /// Requests dropped because they carry no Via (nothing to match or answer).
    pub dropped_requests: u64,
    /// Lingering transactions retired before their timer to make room at the layer's
    /// capacity ([`TxLayer::set_capacity`]).
    pub retired: u64,
}

impl TxStats {
    /// Transactions created of one kind.
    pub fn created(&self, kind: TxKind) -> u64 {
        self.created[kind.slot()]
    }
}

/// A fresh RFC 3261 branch: the magic cookie `z9hG4bK` and 24 random alphanumerics
/// (about 142 bits, §8.1.1.7: unique across space and time).
pub fn new_branch() -> String {
    let mut rng = rand::thread_rng();
    let mut s = String::with_capacity(31);
    s.push_str(crate::wire::BRANCH_MAGIC);
    s.extend((0..24).map(|_| char::from(rng.sample(Alphanumeric))));
    s
}

/// The layer's output queues, shared by the machines while one input is processed.
#[derive(Debug, Default)]
pub(crate) struct Out {
    pub(crate) transmits: VecDeque<Transmit>,
    pub(crate) events: VecDeque<TxEvent>,
    pub(crate) stats: TxStats,
}

/// What a machine needs while it handles one input.
pub(crate) struct Ctx<'a> {
    /// The transaction being driven.
    pub(crate) id: TxId,
    /// The time of the input.
    pub(crate) now: Instant,
    /// The timer constants.
    pub(crate) cfg: TimerConfig,
    /// Output queues and counters.
    pub(crate) out: &'a mut Out,
}

impl Ctx<'_> {
    /// Queues bytes for the transaction's peer.
    pub(crate) fn transmit(&mut self, peer: Peer, bytes: Bytes) {
        self.out.transmits.push_back(Transmit {
            peer,
            bytes,
            tx: Some(self.id),
        });
    }

    /// A timer-driven retransmission (Timers A, E, G): queued and counted.
    pub(crate) fn retransmit(&mut self, peer: Peer, bytes: Bytes) {
        self.transmit(peer, bytes);
        self.out.stats.retransmissions_sent += 1;
    }

    /// Queues an event for the TU.
    pub(crate) fn event(&mut self, event: TxEvent) {
        self.out.events.push_back(event);
    }

    /// Counts a timeout and tells the TU.
    pub(crate) fn timeout(&mut self, timer: Timer) {
        match timer {
            Timer::B => self.out.stats.timeouts_b += 1,
            Timer::F => self.out.stats.timeouts_f += 1,
            Timer::H => self.out.stats.timeouts_h += 1,
            _ => {}
        }
        let tx = self.id;
        self.event(TxEvent::Timeout { tx, timer });
    }

    /// Counts a transport error and tells the TU.
    pub(crate) fn transport_error(&mut self) {
        self.out.stats.transport_errors += 1;
        let tx = self.id;
        self.event(TxEvent::TransportError { tx });
    }

    /// Arms `timer` in `table` to fire `after` from now.
    pub(crate) fn arm(&self, table: &mut TimerTable, timer: Timer, after: std::time::Duration) {
        table.set(timer, self.now + after);
    }
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn new_branch_has_magic_cookie_and_is_unique() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let b = new_branch();
            assert!(b.starts_with("z9hG4bK"));
            assert_eq!(b.len(), 31);
            assert!(seen.insert(b));
        }
    }
}
