//! Test helpers: messages built from the wire structs and a virtual clock.

use super::{new_branch, Transmit, TxEvent, TxLayer};
use crate::transport::{ConnId, Peer, Transport};
use crate::wire::{
    CSeq, Common, Host, HostPort, Method, NameAddr, Param, Request, SipUri, Uri, Via,
};
use bytes::Bytes;
use std::time::{Duration, Instant};

pub(crate) fn new_branch_for_test() -> String {
    new_branch()
}

pub(crate) fn sip_uri(user: &str, host: &str) -> Uri {
    Uri::Sip(SipUri {
        secure: false,
        user: Some(user.to_string()),
        password: None,
        host: HostPort {
            host: Host::Name(host.to_string()),
            port: None,
        },
        params: Vec::new(),
        headers: None,
    })
}

pub(crate) fn via(host: &str, branch: &str) -> Via {
    Via {
        transport: "UDP".to_string(),
        sent_by: HostPort {
            host: Host::Name(host.to_string()),
            port: Some(5060),
        },
        params: vec![Param::new("branch", branch)],
    }
}

/// A request from alice to bob with the given method and top Via branch.
pub(crate) fn request(method: Method, branch: &str) -> Request {
    let mut from = NameAddr::new(sip_uri("alice", "a.example.com"));
    from.set_tag("alicetag");
    Request {
        method: method.clone(),
        uri: sip_uri("bob", "b.example.com"),
        common: Common {
            via: vec![via("pc33.a.example.com", branch)],
            from,
            to: NameAddr::new(sip_uri("bob", "b.example.com")),
            call_id: "a84b4c76e66710@pc33.a.example.com".to_string(),
            cseq: CSeq {
                seq: 314159,
                method,
            },
            max_forwards: Some(70),
            headers: Vec::new(),
            body: Bytes::new(),
        },
    }
}

pub(crate) fn invite_request(branch: &str) -> Request {
    request(Method::Invite, branch)
}

/// The CANCEL for `invite` (§9.1): same Request-URI, Call-ID, To, From, CSeq number and
/// top Via.
pub(crate) fn cancel_for(invite: &Request) -> Request {
    let mut c = invite.clone();
    c.method = Method::Cancel;
    c.common.cseq.method = Method::Cancel;
    c.common.via.truncate(1);
    c
}

/// The ACK a UAC sends for a non-2xx `response` to `invite` (same branch).
pub(crate) fn ack_for(invite: &Request, to_tag: &str) -> Request {
    let mut a = invite.clone();
    a.method = Method::Ack;
    a.common.cseq.method = Method::Ack;
    a.common.to.set_tag(to_tag);
    a
}

pub(crate) fn tcp_peer() -> Peer {
    Peer {
        transport: Transport::Tcp,
        addr: "192.0.2.20:5060".parse().unwrap_or_else(|_| unreachable!()),
        conn: Some(ConnId(std::num::NonZeroU64::new(7).unwrap())),
    }
}

pub(crate) fn udp_peer() -> Peer {
    Peer::udp("192.0.2.10:5060".parse().unwrap_or_else(|_| unreachable!()))
}

/// A layer, a peer and a virtual clock.
pub(crate) struct Harness {
    pub(crate) layer: TxLayer,
    pub(crate) now: Instant,
    pub(crate) start: Instant,
    pub(crate) peer: Peer,
}

impl Harness {
    pub(crate) fn new(peer: Peer) -> Harness {
        let start = Instant::now();
        Harness {
            layer: TxLayer::new(Default::default()),
            now: start,
            start,
            peer,
        }
    }

    pub(crate) fn udp() -> Harness {
        Harness::new(udp_peer())
    }

    pub(crate) fn tcp() -> Harness {
        Harness::new(tcp_peer())
    }

    /// Seconds since the start of the test.
    pub(crate) fn elapsed(&self) -> f64 {
        (self.now - self.start).as_secs_f64()
    }

    pub(crate) fn transmits(&mut self) -> Vec<Transmit> {
        std::iter::from_fn(|| self.layer.poll_transmit()).collect()
    }

    pub(crate) fn events(&mut self) -> Vec<TxEvent> {
        std::iter::from_fn(|| self.layer.poll_event()).collect()
    }

    /// Moves the clock forward and feeds the timeout.
    pub(crate) fn advance(&mut self, d: Duration) {
        self.now += d;
        self.layer.handle_timeout(self.now);
    }

    /// Jumps to the next deadline and fires it; false when nothing is armed.
    pub(crate) fn advance_to_next(&mut self) -> bool {
        match self.layer.poll_timeout() {
            Some(at) => {
                self.now = self.now.max(at);
                self.layer.handle_timeout(self.now);
                true
            }
            None => false,
        }
    }

    /// Fires every deadline in turn, draining the queues, until none is armed.
    pub(crate) fn run_until_idle(&mut self) {
        for _ in 0..10_000 {
            self.transmits();
            self.events();
            if !self.advance_to_next() {
                return;
            }
        }
        panic!("the layer never went idle");
    }
}
