//! UDP listeners (RFC 3261 §18.1.1, §18.2.1, §18.3): one datagram, one message; and
//! ICMP errors for what we sent (§18.4): with `IP_RECVERR` the kernel queues "port /
//! host / network unreachable" for a datagram on the socket's error queue, with the
//! datagram's destination; the reader drains it and reports those destinations, so a
//! B-leg to a phone that is gone fails at once instead of at Timer B.

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

/// Asks the kernel to queue ICMP errors for this socket (`IP_RECVERR`/`IPV6_RECVERR`).
pub fn enable_icmp_errors(sock: &UdpSocket) -> std::io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    match sock.local_addr()? {
        SocketAddr::V4(_) => setsockopt(sock, sockopt::Ipv4RecvErr, &true)?,
        SocketAddr::V6(_) => setsockopt(sock, sockopt::Ipv6RecvErr, &true)?,
    }
    Ok(())
}

/// Drains the socket's error queue into `to` (dropped when it is full: rare, and the
/// transactions' timers still end them).
fn report_unreachable(sock: &UdpSocket, to: &tokio::sync::mpsc::Sender<SocketAddr>) {
    for dest in unreachable_destinations(sock) {
        tracing::debug!(to = %dest, "ICMP: destination unreachable");
        let _ = to.try_send(dest);
    }
}

/// Drains the socket's error queue: the destinations ICMP said are unreachable.
fn unreachable_destinations(sock: &UdpSocket) -> Vec<SocketAddr> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
    use std::os::fd::AsRawFd;
    let mut out = Vec::new();
    // Bounded: the queue is bounded by the socket's buffer; 64 per wake-up is plenty.
    for _ in 0..64 {
        let mut data = [0u8; 64];
        let mut iov = [std::io::IoSliceMut::new(&mut data)];
        let mut cmsg = nix::cmsg_space!(nix::libc::sock_extended_err, nix::libc::sockaddr_in6);
        let flags = MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT;
        let Ok(msg) =
            recvmsg::<SockaddrStorage>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), flags)
        else {
            break; // EAGAIN: drained
        };
        let unreachable = msg.cmsgs().into_iter().flatten().any(|c| {
            let e = match c {
                ControlMessageOwned::Ipv4RecvErr(e, _) | ControlMessageOwned::Ipv6RecvErr(e, _) => {
                    e
                }
                _ => return false,
            };
            matches!(
                e.ee_errno as i32,
                nix::libc::ECONNREFUSED | nix::libc::EHOSTUNREACH | nix::libc::ENETUNREACH
            )
        });
        let to = msg.address.and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::V4((*v4).into()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into())))
        });
        if let (true, Some(to)) = (unreachable, to) {
            out.push(to);
        }
    }
    out
}

/// Reads datagrams until the socket fails or the driver is gone; destinations ICMP says
/// are unreachable go to `unreachable`.
pub async fn run(
    sock: Arc<UdpSocket>,
    limits: Limits,
    tx: InboundTx,
    unreachable: tokio::sync::mpsc::Sender<SocketAddr>,
) {
    let local = match sock.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            // An ICMP error for something we sent surfaces as an error here (and, with
            // IP_RECVERR, on the error queue): never a reason to stop reading.
            Err(e) if is_icmp_error(&e) => {
                report_unreachable(&sock, &unreachable);
                continue;
            }
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
                    send(&sock, from, reply, &unreachable);
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

/// An error a socket operation returns because of an earlier ICMP error (the kernel
/// reports a pending one on whatever operation comes next).
pub fn is_icmp_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::HostUnreachable
            | std::io::ErrorKind::NetworkUnreachable
    )
}

/// Sends without waiting: the socket is non-blocking, and a full send buffer drops the
/// datagram (UDP may lose it anyway; retransmission timers cover it), which is not a
/// failure of the destination: `false` only for a destination we never send to. A
/// pending ICMP error for an earlier datagram (to another destination, most likely)
/// makes the kernel fail this send: its destinations are drained from the error queue
/// into `unreachable` and the datagram is sent again.
pub fn send(
    sock: &UdpSocket,
    to: SocketAddr,
    bytes: Bytes,
    unreachable: &tokio::sync::mpsc::Sender<SocketAddr>,
) -> bool {
    if to.ip().is_unspecified() || to.port() == 0 || is_broadcast(to) {
        return false;
    }
    let mut sent = sock.try_send_to(&bytes, to);
    if sent.as_ref().is_err_and(is_icmp_error) {
        report_unreachable(sock, unreachable);
        sent = sock.try_send_to(&bytes, to);
    }
    if let Err(e) = sent {
        tracing::debug!(error = %e, %to, "UDP send failed: datagram dropped");
    }
    true
}

fn is_broadcast(to: SocketAddr) -> bool {
    match to {
        SocketAddr::V4(a) => a.ip().is_broadcast() || a.ip().is_multicast(),
        SocketAddr::V6(a) => a.ip().is_multicast(),
    }
}
