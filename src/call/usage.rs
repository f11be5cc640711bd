//! A leg's dialog duties as a pure core (sans-IO: time is an argument, nothing here
//! sends or sleeps): what the Leg actor ([`super::leg`]) asks before it answers or
//! sends a request in its dialog. RFC 3261 §12.2.2 (the remote CSeq, in
//! [`super::dialog::Dialog::accept_remote_seq`]), §13.3.1.4 and §14.2 (a 2xx to an INVITE
//! or re-INVITE retransmitted at T1 doubling to T2 until its ACK, given up at 64·T1),
//! §14.1/§14.2 and RFC 3311 §5.2 (one offer at a time in each direction: a re-INVITE
//! or UPDATE that crosses ours is answered 491, one that comes while the peer's previous
//! one is unanswered 500 with Retry-After).
//!
//! The Leg keeps these values only while they matter (a held call keeps none): the
//! [`Resend`] of a 2xx until its ACK, the [`Usage`] while a mid-call request is in
//! flight on the leg.

use crate::txn::TxId;
use crate::wire::{Method, Request};
use std::time::Duration;

/// The retransmission schedule of one 2xx to an INVITE (§13.3.1.4): first after T1,
/// then doubling up to T2, given up 64·T1 after the 2xx was first sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resend {
    /// The CSeq number of the INVITE it answers (its ACK carries the same).
    pub seq: u32,
    interval: Duration,
    elapsed: Duration,
}

/// What to do when a [`Resend`]'s wait is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResendStep {
    /// Send the 2xx again, and wait this long before the next step.
    Again(Duration),
    /// 64·T1 without an ACK: stop; the session should end (§13.3.1.4).
    GiveUp,
}

impl Resend {
    /// The schedule of a 2xx just sent for the INVITE with CSeq `seq`.
    pub fn new(seq: u32, t1: Duration) -> Resend {
        Resend {
            seq,
            interval: t1,
            elapsed: Duration::ZERO,
        }
    }

    /// How long to wait before the first step.
    pub fn first_wait(&self) -> Duration {
        self.interval
    }

    /// The wait just taken is over.
    pub fn step(&mut self, t1: Duration, t2: Duration) -> ResendStep {
        self.elapsed += self.interval;
        if self.elapsed >= t1 * 64 {
            return ResendStep::GiveUp;
        }
        self.interval = (self.interval * 2).min(t2);
        // The last wait ends at 64·T1 exactly.
        let left = t1 * 64 - self.elapsed;
        ResendStep::Again(self.interval.min(left))
    }

    /// True for the ACK of this 2xx (its CSeq number, §17.1.1.3).
    pub fn acked_by(&self, ack_seq: u32) -> bool {
        ack_seq == self.seq
    }
}

/// Mid-call requests in flight on one leg: the peer's, waiting for the answer the
/// other party gives (the switch relays it), and ours, sent on the other party's behalf.
#[derive(Debug, Default)]
pub struct Usage {
    /// The peer's requests not answered yet, oldest first, with their transaction.
    pub incoming: Vec<(TxId, Box<Request>)>,
    /// Our requests (method, CSeq number) not answered yet.
    pub outgoing: Vec<(Method, u32)>,
}

/// Whether a mid-call request the peer sent may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Relay it.
    Go,
    /// Our own offer crosses it on this leg (glare, §14.2): 491.
    Glare,
    /// The peer's previous offer is unanswered (§14.2): 500 with Retry-After.
    Pending,
}

fn carries_offer(m: &Method) -> bool {
    matches!(m, Method::Invite | Method::Update)
}

impl Usage {
    /// Whether the peer's `method` request may go on now (INFO always may).
    pub fn admit(&self, method: &Method) -> Admit {
        if !carries_offer(method) {
            return Admit::Go;
        }
        if self.outgoing.iter().any(|(m, _)| carries_offer(m)) {
            return Admit::Glare;
        }
        if self.incoming.iter().any(|(_, r)| carries_offer(&r.method)) {
            return Admit::Pending;
        }
        Admit::Go
    }

    /// Takes the oldest of the peer's unanswered `method` requests.
    pub fn take_incoming(&mut self, method: &Method) -> Option<(TxId, Box<Request>)> {
        let i = self
            .incoming
            .iter()
            .position(|(_, r)| &r.method == method)?;
        Some(self.incoming.remove(i))
    }

    /// Our request with CSeq `seq` and `method` got its final answer: true when it was
    /// in flight (false for a retransmitted answer).
    pub fn answered(&mut self, method: &Method, seq: u32) -> bool {
        match self
            .outgoing
            .iter()
            .position(|(m, s)| m == method && *s == seq)
        {
            Some(i) => {
                self.outgoing.remove(i);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: Duration = Duration::from_millis(500);
    const T2: Duration = Duration::from_secs(4);

    #[test]
    fn a_2xx_is_resent_at_t1_doubling_to_t2_and_given_up_at_64_t1() {
        let mut r = Resend::new(7, T1);
        let mut at = r.first_wait();
        let mut sends = vec![at];
        while let ResendStep::Again(wait) = r.step(T1, T2) {
            at += wait;
            sends.push(at);
        }
        let ms: Vec<u128> = sends.iter().map(|d| d.as_millis()).collect();
        // 0.5, 1.5, 3.5, 7.5, then every 4 s, and the give-up at 32 s exactly.
        assert_eq!(&ms[..5], &[500, 1500, 3500, 7500, 11500]);
        assert_eq!(*ms.last().unwrap(), 32_000);
        assert!(ms.windows(2).all(|w| w[1] - w[0] <= 4000));
    }

    #[test]
    fn only_the_ack_of_its_invite_stops_a_resend() {
        let r = Resend::new(7, T1);
        assert!(r.acked_by(7));
        assert!(!r.acked_by(6));
    }

    fn req(method: Method) -> Box<Request> {
        let text = format!(
            "{m} sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n\
             From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 2 {m}\r\n",
            m = method.as_str()
        );
        match crate::wire::parse_message(text.as_bytes(), b"") {
            Ok(crate::wire::Message::Request(r)) => Box::new(r),
            _ => panic!("test request does not parse"),
        }
    }

    #[test]
    fn an_offer_crossing_ours_is_glare_and_a_second_one_of_the_peer_is_pending() {
        let mut u = Usage::default();
        assert_eq!(u.admit(&Method::Invite), Admit::Go);
        u.outgoing.push((Method::Invite, 3));
        assert_eq!(u.admit(&Method::Invite), Admit::Glare);
        assert_eq!(u.admit(&Method::Update), Admit::Glare);
        assert_eq!(u.admit(&Method::Info), Admit::Go);
        assert!(u.answered(&Method::Invite, 3));
        assert!(!u.answered(&Method::Invite, 3), "a retransmitted answer");
        u.incoming.push((TxId(1), req(Method::Update)));
        assert_eq!(u.admit(&Method::Invite), Admit::Pending);
        assert!(u.take_incoming(&Method::Update).is_some());
        assert!(u.incoming.is_empty() && u.outgoing.is_empty());
    }
}
