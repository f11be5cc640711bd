//! UDP listeners (RFC 3261 §18.1.1, §18.2.1, §18.3): one datagram, one message; and
//! ICMP errors for what we sent (§18.4): with `IP_RECVERR` the kernel queues "port /
//! host / network unreachable" for a datagram on the socket's error queue, with the
//! datagram's destination; the reader drains it and reports those destinations, so a
//! B-leg to a phone that is gone fails at once instead of at Timer B.

use super::{error_reply, Inbound, InboundTx, Peer};
use crate::wire::{
    frame_datagram, framing::salvage_head, parse_message, Limits, Message, Method, Salvage,
    WireError,
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

/// ICMP said a datagram we sent could not be delivered (RFC 3261 §18.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// Where the datagram went.
    pub to: SocketAddr,
    /// The method and top Via branch of the request it carried, read from the datagram
    /// the error queue hands back: the one client transaction the error is about.
    /// `None` when the datagram was not a request or its top Via did not survive the
    /// quote whole.
    pub request: Option<(Method, String)>,
}

/// The method and top Via branch of a SIP request datagram (as the error queue quotes
/// it, possibly cut short): `None` for a response, or when the top Via's line is not
/// there whole (a cut branch would match the wrong transaction). The header lines are
/// read as an error reply salvages them ([`Salvage`]: folding, compact names), the Via
/// as the parser reads one.
pub fn quoted_request(data: &[u8]) -> Option<(Method, String)> {
    // Only the lines that ended in a line break: the quote may stop inside one.
    let whole = &data[..memchr::memrchr(b'\n', data)? + 1];
    let salvage = Salvage::from_head(whole);
    if salvage.is_response {
        return None;
    }
    let method = whole.split(|&b| b == b' ').next()?;
    let method = std::str::from_utf8(method).ok().filter(|m| !m.is_empty())?;
    let top = *crate::wire::split_list(salvage.via.first()?)
        .ok()?
        .first()?;
    let via = crate::wire::parse_via(top).ok()?;
    Some((Method::from_token(method), via.branch()?.to_string()))
}

/// Drains the socket's error queue into `to` (dropped when it is full: rare, and the
/// transactions' timers still end them).
fn report_unreachable(sock: &UdpSocket, to: &tokio::sync::mpsc::Sender<Unreachable>) {
    for u in unreachable_destinations(sock) {
        tracing::debug!(to = %u.to, request = ?u.request, "ICMP: destination unreachable");
        let _ = to.try_send(u);
    }
}

/// Drains the socket's error queue: the datagrams ICMP said could not be delivered.
fn unreachable_destinations(sock: &UdpSocket) -> Vec<Unreachable> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
    use std::os::fd::AsRawFd;
    let mut out = Vec::new();
    // Bounded: the queue is bounded by the socket's buffer; 64 per wake-up is plenty.
    for _ in 0..64 {
        // The datagram comes back with the error (as much of it as the ICMP quoted):
        // enough for its request line and top Via.
        let mut data = [0u8; 1024];
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
        let n = msg.bytes.min(data.len());
        if let (true, Some(to)) = (unreachable, to) {
            out.push(Unreachable {
                to,
                request: quoted_request(&data[..n]),
            });
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
    unreachable: tokio::sync::mpsc::Sender<Unreachable>,
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
    unreachable: &tokio::sync::mpsc::Sender<Unreachable>,
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

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bK-one, SIP/2.0/UDP 10.0.0.1\r\n\
        Max-Forwards: 70\r\n\
        Call-ID: x\r\n\r\n";

    #[test]
    fn a_quoted_request_names_its_method_and_top_branch() {
        assert_eq!(
            quoted_request(INVITE.as_bytes()),
            Some((Method::Invite, "z9hG4bK-one".to_string()))
        );
        let compact = "BYE sip:a@h SIP/2.0\r\nv : SIP/2.0/UDP h;BRANCH=z9hG4bK-2\r\n";
        assert_eq!(
            quoted_request(compact.as_bytes()),
            Some((Method::Bye, "z9hG4bK-2".to_string()))
        );
    }

    #[test]
    fn a_response_or_a_cut_top_via_names_nothing() {
        let response = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK-1\r\n\r\n";
        assert_eq!(quoted_request(response.as_bytes()), None);
        // The quote ends inside the Via line: its branch may be cut short.
        let cut = &INVITE[..INVITE.find("-one").unwrap() + 2];
        assert_eq!(quoted_request(cut.as_bytes()), None);
        // Cut inside the request line.
        assert_eq!(quoted_request(b"INVITE sip:bob@127"), None);
        assert_eq!(quoted_request(b""), None);
        assert_eq!(quoted_request(&[0xff, 0xfe, b'\r', b'\n']), None);
    }
}
