//! Where a message came from or goes to: the transport, the remote socket address and,
//! for a stream transport, the connection it belongs to (RFC 3261 §18).

use std::fmt;
use std::net::SocketAddr;

/// A transport the switch listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// Datagrams (RFC 3261 §18.1.1, §18.2.1).
    Udp,
    /// A byte stream framed by Content-Length (RFC 3261 §18.3).
    Tcp,
}

impl Transport {
    /// True for a reliable transport: no retransmission timers (A, E, G) run over it and
    /// the wait timers (D, I, J, K) are zero (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp)
    }

    /// The token used in a Via header's sent-protocol (`SIP/2.0/UDP`).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    /// The label value used in metrics and config (`udp`, `tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one TCP connection for the lifetime of the process. Non-zero, so an
/// `Option<ConnId>` (every [`Peer`]: transactions, legs, bindings) costs no extra word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub std::num::NonZeroU64);

/// The remote end of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The transport the message travelled on.
    pub transport: Transport,
    /// The remote socket address (the packet's source for inbound messages).
    pub addr: SocketAddr,
    /// The TCP connection the message arrived on, or should leave on. `None` for UDP, and
    /// for an outbound TCP target with no open connection yet (the transport opens one).
    pub conn: Option<ConnId>,
}

impl Peer {
    /// A UDP peer.
    pub fn udp(addr: SocketAddr) -> Peer {
        Peer {
            transport: Transport::Udp,
            addr,
            conn: None,
        }
    }
}
