//! L1: UDP and TCP sockets (RFC 3261 §18, RFC 3581, RFC 5626 §4.4.1).
//!
//! Only this layer owns sockets. Readers frame and parse each message (calling L2) and
//! hand well-formed ones to the driver through one bounded channel; a malformed request
//! is answered here, from its salvaged headers, to the address it came from (on TCP over
//! its connection, which is then closed), and a malformed response is dropped. Both are
//! counted. Sending goes through [`Transports::send`]: UDP from the listening socket of
//! the peer's address family, TCP over the connection named by the peer or, failing that,
//! an open connection to the same address, or a new one.

pub mod peer;
pub mod tcp;
pub mod udp;

pub use peer::{ConnId, Peer, Transport};

use crate::metrics;
use crate::wire::{Message, Salvage, WireError};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A well-formed message handed to the driver.
#[derive(Debug)]
pub struct Inbound {
    /// Where it came from.
    pub peer: Peer,
    /// The local address it arrived on.
    pub local: SocketAddr,
    /// The message.
    pub message: Message,
}

/// The sending half of the inbound channel.
pub type InboundTx = mpsc::Sender<Inbound>;

/// Every bound listener, and the way out.
pub struct Transports {
    /// Each UDP socket with its bound address, read once at start-up.
    udp: Vec<(SocketAddr, Arc<tokio::net::UdpSocket>)>,
    tcp: Arc<tcp::TcpPool>,
    /// Where UDP destinations ICMP said are unreachable go (the driver).
    unreachable: tokio::sync::mpsc::Sender<udp::Unreachable>,
}

impl Transports {
    /// Groups bound UDP sockets and the TCP pool; ICMP "unreachable" destinations met
    /// while sending go to `unreachable`.
    pub fn new(
        udp: Vec<Arc<tokio::net::UdpSocket>>,
        tcp: Arc<tcp::TcpPool>,
        unreachable: tokio::sync::mpsc::Sender<udp::Unreachable>,
    ) -> Transports {
        let udp = udp
            .into_iter()
            .filter_map(|s| s.local_addr().ok().map(|a| (a, s)))
            .collect();
        Transports {
            udp,
            tcp,
            unreachable,
        }
    }

    /// Sends bytes to a peer; never blocks. Returns false when the message could not be
    /// handed to the operating system or a connection's queue.
    pub fn send(&self, peer: &Peer, bytes: Bytes) -> bool {
        self.send_for(peer, bytes, None)
    }

    /// [`Transports::send`] for transaction `tx`: a TCP connect that fails later is
    /// reported to the channel given to [`tcp::TcpPool::report_failures_to`].
    pub fn send_for(&self, peer: &Peer, bytes: Bytes, tx: Option<crate::txn::TxId>) -> bool {
        match peer.transport {
            Transport::Udp => {
                let Some(sock) = self.udp_for(peer.addr) else {
                    return false;
                };
                udp::send(sock, peer.addr, bytes, &self.unreachable)
            }
            Transport::Tcp => self.tcp.send_for(peer, bytes, tx),
        }
    }

    fn udp_for(&self, to: SocketAddr) -> Option<&Arc<tokio::net::UdpSocket>> {
        self.udp
            .iter()
            .find(|(local, _)| local.is_ipv4() == to.is_ipv4())
            .or_else(|| self.udp.first())
            .map(|(_, s)| s)
    }
}

/// Builds the answer to a request that failed framing or parsing, or `None` when the
/// message was a response (dropped, RFC 3261 §18.1.2) or cannot be answered. Counts it.
pub fn error_reply(error: &WireError, salvage: &Salvage) -> Option<Bytes> {
    if salvage.is_response {
        metrics::sip_response_dropped("parse");
        return None;
    }
    metrics::sip_message_rejected(error.metric_reason());
    if salvage.via.is_empty() {
        // Without a Via the response could not be matched or routed (§8.2.6.2).
        return None;
    }
    let status = error.status();
    metrics::sip_response_sent(status);
    Some(salvage.response(status, &error.reason(), &local_tag(), &[]))
}

/// A fresh tag for responses the switch generates (RFC 3261 §19.3: globally unique,
/// cryptographically random, at least 32 bits): 64 random bits from the thread's
/// CSPRNG, so a tag tells nothing about the next one.
pub fn local_tag() -> String {
    format!("{:016x}", rand::random::<u64>())
}
