//! UDP listeners (RFC 3261 §18.1.1, §18.2.1, §18.3): one datagram, one message.

use super::{error_reply, Inbound, InboundTx, Peer};
use crate::wire::{
    frame_datagram, framing::salvage_head, parse_message, Limits, Message, Salvage, WireError,
};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;

/// Largest datagram read (the IPv4/IPv6 UDP maximum); the message limit applies after.
const RECV_BUF: usize = 65_535;

/// Reads datagrams until the socket fails or the driver is gone.
pub async fn run(sock: Arc<UdpSocket>, limits: Limits, tx: InboundTx) {
    let local = match sock.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            // ICMP port unreachable surfaces as an error on some systems: keep reading.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => continue,
            Err(e) => {
                tracing::error!(error = %e, %local, "UDP receive failed");
                return;
            }
        };
        let data = &buf[..n];
        tracing::trace!(%from, bytes = n, "udp in");
        let peer = Peer::udp(from);
        match classify(data, &limits) {
            Ok(None) => {}
            Ok(Some(message)) => {
                if tx
                    .send(Inbound {
                        peer,
                        local,
                        message,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(error) => {
                let salvage = Salvage::from_head(salvage_head(data, &limits));
                if let Some(reply) = error_reply(&error, &salvage) {
                    send(&sock, from, reply);
                }
            }
        }
    }
}

/// Frames and parses one datagram: `Ok(None)` for a keep-alive.
pub fn classify(data: &[u8], limits: &Limits) -> Result<Option<Message>, WireError> {
    match frame_datagram(data, limits) {
        Ok(None) => Ok(None),
        Ok(Some(f)) => parse_message(f.head, f.body).map(Some),
        Err(e) => Err(WireError::Frame(e)),
    }
}

/// Sends without waiting: the socket is non-blocking, and a full send buffer drops the
/// datagram (UDP may lose it anyway; retransmission timers cover it).
pub fn send(sock: &UdpSocket, to: SocketAddr, bytes: Bytes) -> bool {
    if to.ip().is_unspecified() || to.port() == 0 || is_broadcast(to) {
        return false;
    }
    match sock.try_send_to(&bytes, to) {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(error = %e, %to, "UDP send failed");
            false
        }
    }
}

fn is_broadcast(to: SocketAddr) -> bool {
    match to {
        SocketAddr::V4(a) => a.ip().is_broadcast() || a.ip().is_multicast(),
        SocketAddr::V6(a) => a.ip().is_multicast(),
    }
}
