//! L1: UDP and TCP sockets (RFC 3261 §18, RFC 3581, RFC 5626 §4.4.1).

pub mod peer;

pub use peer::{ConnId, Peer, Transport};
