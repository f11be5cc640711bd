//! The async driver: the one task that owns the transaction layer (L3) and its one
//! re-armed sleep, between the transport (L1) and the transaction user.
//!
//! Inbound messages arrive on one bounded channel. For a request the driver applies
//! RFC 3261 §18.2.1 and RFC 3581 (adds `received` and fills `rport` on the top Via) and
//! works out where responses go (§18.2.2: the connection it came on for TCP; for UDP the
//! source address, at the source port when `rport` was asked for, else at the sent-by
//! port). Then it feeds the layer, drains its transmits to the transport and its events
//! to the transaction user, and sleeps until the next message or `poll_timeout()`.
//!
//! On shutdown ([`Control::drain`]) new INVITEs are refused with 503 + Retry-After, and
//! the driver ends once every transaction has ended or the drain deadline has passed.

use crate::call::{CallHub, CallOutput, Todo};
use crate::endpoint::{Endpoint, Refusal};
use crate::metrics;
use crate::registrar::{Completion, Registrar};
use crate::transport::{local_tag, Inbound, Peer, Transport, Transports};
use crate::txn::{Timer, TxEvent, TxId, TxKind, TxLayer, TxStats};
use crate::wire::{Host, Message, Method, Request, Response};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Shutdown control shared with `main` and the HTTP readiness probe.
#[derive(Debug, Clone)]
pub struct Control {
    endpoint: Arc<Endpoint>,
    wake: Arc<tokio::sync::Notify>,
}

impl Control {
    /// Starts draining: refuse new calls, let transactions finish.
    pub fn drain(&self) {
        self.endpoint.draining.store(true, Ordering::Relaxed);
        // Wake an idle driver so it sees the flag (a stored permit if it is busy).
        self.wake.notify_one();
    }
}

/// What the driver is configured with.
#[derive(Debug, Clone, Copy)]
pub struct DriverSettings {
    /// How long a drain may take.
    pub drain_timeout: Duration,
    /// UDP responses to the source port even without `;rport`.
    pub force_rport: bool,
}

/// The transaction users the driver hands events to, with the channels their
/// asynchronous answers come back on.
pub struct TransactionUsers {
    /// REGISTER.
    pub registrar: Registrar,
    /// The registrar's answers.
    pub completions: mpsc::UnboundedReceiver<Completion>,
    /// INVITE and everything in a call's dialogs.
    pub calls: CallHub,
    /// The calls' intents.
    pub call_outputs: mpsc::UnboundedReceiver<CallOutput>,
    /// Transactions whose message a failed TCP connect dropped.
    pub transport_failures: mpsc::UnboundedReceiver<TxId>,
    /// UDP destinations ICMP said are unreachable (§18.4).
    pub udp_unreachable: mpsc::Receiver<crate::transport::udp::Unreachable>,
}

/// The driver.
pub struct Driver {
    layer: TxLayer,
    transports: Arc<Transports>,
    endpoint: Arc<Endpoint>,
    inbound: mpsc::Receiver<Inbound>,
    exported: TxStats,
    settings: DriverSettings,
    counters: metrics::SipCounters,
    wake: Arc<tokio::sync::Notify>,
    registrar: Registrar,
    completions: mpsc::UnboundedReceiver<Completion>,
    calls: CallHub,
    call_outputs: mpsc::UnboundedReceiver<CallOutput>,
    transport_failures: mpsc::UnboundedReceiver<TxId>,
    udp_unreachable: mpsc::Receiver<crate::transport::udp::Unreachable>,
}

impl Driver {
    /// A driver over a layer, the transports and the endpoint.
    /// The registrar's completions are bounded by its mailboxes
    /// (`registrar.mailbox_capacity` per AOR); both channels are drained at every wake-up.
    pub fn new(
        layer: TxLayer,
        transports: Arc<Transports>,
        endpoint: Arc<Endpoint>,
        inbound: mpsc::Receiver<Inbound>,
        settings: DriverSettings,
        tu: TransactionUsers,
    ) -> Driver {
        Driver {
            layer,
            transports,
            endpoint,
            inbound,
            exported: TxStats::default(),
            settings,
            counters: metrics::SipCounters::new(),
            wake: Arc::new(tokio::sync::Notify::new()),
            registrar: tu.registrar,
            completions: tu.completions,
            calls: tu.calls,
            call_outputs: tu.call_outputs,
            transport_failures: tu.transport_failures,
            udp_unreachable: tu.udp_unreachable,
        }
    }

    /// The control handle.
    pub fn control(&self) -> Control {
        Control {
            endpoint: self.endpoint.clone(),
            wake: self.wake.clone(),
        }
    }

    /// Runs until drained (after [`Control::drain`]) or until every transport is gone.
    pub async fn run(mut self) {
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut drain_deadline: Option<Instant> = None;
        loop {
            if self.endpoint.draining.load(Ordering::Relaxed) {
                let deadline = *drain_deadline
                    .get_or_insert_with(|| Instant::now() + self.settings.drain_timeout);
                // Settled: no transaction left, no refusal waiting for its CDR.
                let settled = self.layer.is_settled() && self.calls.held_refusals() == 0;
                if settled || Instant::now() >= deadline {
                    tracing::info!(left = self.layer.len(), "transaction layer drained");
                    return;
                }
            }
            let next = self.layer.poll_timeout();
            // While draining, wake at least every 100 ms to check the deadline.
            let wake = match (next, drain_deadline) {
                (Some(t), Some(_)) => Some(t.min(Instant::now() + Duration::from_millis(100))),
                (None, Some(_)) => Some(Instant::now() + Duration::from_millis(100)),
                (t, None) => t,
            };
            if let Some(t) = wake {
                sleep.as_mut().reset(tokio::time::Instant::from_std(t));
            }
            tokio::select! {
                msg = self.inbound.recv() => {
                    let Some(inbound) = msg else { return };
                    let now = Instant::now();
                    self.handle_inbound(now, inbound);
                    // Take whatever else is already queued before polling (batching).
                    for _ in 0..64 {
                        match self.inbound.try_recv() {
                            Ok(i) => self.handle_inbound(now, i),
                            Err(_) => break,
                        }
                    }
                }
                _ = &mut sleep, if wake.is_some() => {
                    self.layer.handle_timeout(Instant::now());
                }
                failed = self.transport_failures.recv() => {
                    if let Some(tx) = failed {
                        self.layer.handle_transport_error(Instant::now(), tx);
                    }
                }
                Some(u) = self.udp_unreachable.recv() => {
                    let peer = crate::transport::Peer::udp(u.to);
                    self.layer.handle_unreachable(Instant::now(), peer, u.request);
                }
                out = self.call_outputs.recv() => {
                    let now = Instant::now();
                    if let Some(o) = out {
                        self.call_output(now, o);
                    }
                    for _ in 0..256 {
                        match self.call_outputs.try_recv() {
                            Ok(o) => self.call_output(now, o),
                            Err(_) => break,
                        }
                    }
                }
                done = self.completions.recv() => {
                    if let Some(c) = done {
                        self.complete(c);
                    }
                    for _ in 0..64 {
                        match self.completions.try_recv() {
                            Ok(c) => self.complete(c),
                            Err(_) => break,
                        }
                    }
                }
                _ = self.wake.notified() => {}
            }
            self.drain_layer();
            self.export_stats();
        }
    }

    fn handle_inbound(&mut self, now: Instant, inbound: Inbound) {
        match inbound.message {
            Message::Request(mut req) => {
                self.counters.request_received(req.method.metric_label());
                let reply_to = stamp_via(&mut req, &inbound.peer, self.settings.force_rport);
                tracing::trace!(method = %req.method, call_id = %req.common.call_id, "request in");
                if req.method == Method::Register {
                    // The registrar answers statelessly (see `Registrar::handle`).
                    let tag = self.endpoint.stateless_tag(&req);
                    let resp = match self.endpoint.admit(&req) {
                        Err(refusal) => {
                            refusal.count();
                            Some(refusal.response(&req, &tag))
                        }
                        Ok(()) => self.registrar.handle(&reply_to, req, tag),
                    };
                    if let Some(resp) = resp {
                        self.counters.response_sent(resp.status);
                        self.layer
                            .send_stateless(reply_to, &Message::Response(resp));
                    }
                    return;
                }
                if self.endpoint.answers_statelessly(&req) {
                    let tag = self.endpoint.stateless_tag(&req);
                    let (resp, refused) = self.endpoint.answer(&req, &tag);
                    if let Some(reason) = refused {
                        metrics::sip_message_rejected(reason);
                    }
                    self.counters.response_sent(resp.status);
                    self.layer
                        .send_stateless(reply_to, &Message::Response(resp));
                    return;
                }
                if req.method == Method::Invite
                    && req.common.to.tag().is_none()
                    && !self.layer.has_server_transaction(&req)
                {
                    self.new_invite(now, reply_to, req);
                    return;
                }
                if req.method == Method::Invite
                    && !self.layer.has_room()
                    && !self.layer.has_server_transaction(&req)
                {
                    // Bounded state: a re-INVITE would open a transaction the table has
                    // no room for; refuse it statelessly rather than grow. (A
                    // retransmission goes to the transaction it belongs to.)
                    let refusal = Refusal::Overloaded;
                    refusal.count();
                    let resp = refusal.response(&req, &self.endpoint.stateless_tag(&req));
                    self.counters.response_sent(resp.status);
                    self.layer
                        .send_stateless(reply_to, &Message::Response(resp));
                    return;
                }
                self.layer.handle_request(now, reply_to, req);
            }
            Message::Response(resp) => {
                self.layer.handle_response(now, inbound.peer, resp);
            }
        }
    }

    /// A new INVITE (no To tag, no transaction yet). Refused outright (admission, no
    /// room, the router: 403/404/407/480/482/483, ...) it is answered statelessly
    /// (§8.2.7: its retransmissions get the same answer and To tag, its ACK is dropped),
    /// once its CDR is on disk when it bills an authenticated caller
    /// ([`CallHub::refused`]); routed, it gets its server transaction (with a 100 Trying
    /// at once) and a call.
    fn new_invite(&mut self, now: Instant, reply_to: Peer, req: Request) {
        if self.calls.refusals_full() {
            // CDR writes are failing and the refusals waiting for theirs are at their
            // bound: take nothing new (the phone retransmits), bill nothing unrecorded.
            metrics::sip_message_rejected("cdr_backlog");
            return;
        }
        let tag = self.endpoint.stateless_tag(&req);
        let refusal = if let Err(refusal) = self.endpoint.admit(&req) {
            Err(refusal)
        } else if !self.layer.has_room() {
            // Bounded state: working transactions fill the table (lingering ones would
            // have yielded their slots): refuse new INVITEs rather than grow.
            Err(Refusal::Overloaded)
        } else {
            Ok(())
        };
        let routed = match refusal {
            Err(refusal) => {
                refusal.count();
                let resp = refusal.response(&req, &tag);
                Err(crate::call::router::Refused::new(
                    resp,
                    crate::call::router::Bill::Unverified,
                ))
            }
            Ok(()) => self.calls.route(&reply_to, &req, &tag),
        };
        match routed {
            Err(refused) => {
                if let Some(resp) = self.calls.refused(reply_to, &req, refused) {
                    self.counters.response_sent(resp.status);
                    self.layer
                        .send_stateless(reply_to, &Message::Response(*resp));
                }
            }
            Ok(routed) => match self.layer.open_invite(now, reply_to, &req) {
                Some(tx) => self.calls.start(tx, reply_to, req, routed),
                None => self.layer.handle_request(now, reply_to, req),
            },
        }
    }

    fn drain_layer(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.layer.poll_transmit() {
                progressed = true;
                if !self.transports.send_for(&t.peer, t.bytes, t.tx) {
                    if let Some(tx) = t.tx {
                        self.layer.handle_transport_error(Instant::now(), tx);
                    }
                }
            }
            while let Some(ev) = self.layer.poll_event() {
                progressed = true;
                self.on_event(ev);
            }
            if !progressed {
                break;
            }
        }
    }

    fn on_event(&mut self, ev: TxEvent) {
        let now = Instant::now();
        match ev {
            TxEvent::Request { tx, request, .. } => {
                // Only an in-dialog request (To tag) gets here: every other one was
                // answered statelessly or routed as a new INVITE before any transaction
                // existed. One that matches no dialog gets 481 whatever its method
                // (§12.2.2): the peer's dialog is gone (a restart, a BYE that crossed),
                // and 481 is what makes it end its side (RFC 5057 §5.1), where a 405 or
                // 404 would leave it holding a dead dialog.
                if let Err(request) = self.calls.in_dialog(tx, request) {
                    let refusal = Refusal::CallDoesNotExist;
                    refusal.count();
                    self.respond(now, tx, refusal.response(&request, &local_tag()));
                }
            }
            TxEvent::Cancel {
                tx,
                request,
                target,
                ..
            } => {
                // §9.2: 200 for a CANCEL that matches an INVITE; the call answers the
                // INVITE with 487. An INVITE the endpoint answered at once is over.
                let resp = match target {
                    Some(t) => {
                        self.calls.cancel(t);
                        request.response(200, None, Some(&local_tag()))
                    }
                    None => Refusal::CallDoesNotExist.response(&request, &local_tag()),
                };
                self.respond(now, tx, resp);
            }
            TxEvent::Ack { request, .. } => {
                self.calls.ack(request);
            }
            TxEvent::StrayResponse { response, .. } => self.calls.stray(response),
            TxEvent::Response { tx, response } => self.calls.response(tx, response),
            TxEvent::Timeout { tx, timer } => {
                tracing::debug!(?tx, ?timer, "transaction timeout");
                self.calls.failed(tx, false);
            }
            TxEvent::TransportError { tx } => {
                tracing::debug!(?tx, "transport error");
                self.calls.failed(tx, true);
            }
            TxEvent::Terminated { tx } => self.calls.terminated(tx),
        }
    }

    fn call_output(&mut self, now: Instant, out: CallOutput) {
        match self.calls.output(out, &mut self.layer, now) {
            Todo::Respond(tx, response) => self.respond(now, tx, *response),
            Todo::Stateless(to, response) => {
                self.counters.response_sent(response.status);
                self.layer.send_stateless(to, &Message::Response(*response));
            }
            Todo::Nothing => {}
        }
    }

    fn complete(&mut self, c: Completion) {
        self.counters.response_sent(c.response.status);
        self.layer
            .send_stateless(c.to, &Message::Response(c.response));
    }

    fn respond(&mut self, now: Instant, tx: TxId, resp: Response) {
        let status = resp.status;
        match self.layer.send_response(now, tx, resp) {
            Ok(()) => self.counters.response_sent(status),
            Err(e) => tracing::error!(error = %e, ?tx, "response refused by the transaction layer"),
        }
    }

    fn export_stats(&mut self) {
        let s = self.layer.stats();
        let e = &self.exported;
        // Cached handles: this runs after every batch, so no registry lookups here.
        self.counters.retransmissions(
            s.retransmissions_sent - e.retransmissions_sent,
            s.retransmissions_received - e.retransmissions_received,
        );
        for (timer, now, before) in [
            (Timer::B, s.timeouts_b, e.timeouts_b),
            (Timer::F, s.timeouts_f, e.timeouts_f),
            (Timer::H, s.timeouts_h, e.timeouts_h),
        ] {
            for _ in before..now {
                metrics::transaction_timeout(timer_label(timer));
            }
        }
        if s.terminated != e.terminated || s.created != e.created {
            for kind in TxKind::ALL {
                self.counters
                    .transactions_active(kind.as_str(), self.layer.count(kind));
            }
        }
        // A transaction begins to linger without being created or terminated.
        self.counters
            .transactions_lingering(self.layer.lingering(), s.retired - e.retired);
        self.exported = s.clone();
    }
}

fn timer_label(t: Timer) -> &'static str {
    match t {
        Timer::B => "B",
        Timer::F => "F",
        Timer::H => "H",
        _ => "other",
    }
}

/// RFC 3261 §18.2.1 and RFC 3581 §4: records the source on the top Via and returns the
/// peer responses go to (§18.2.2, RFC 3581 §4). With `force_rport` (the default, as
/// Asterisk's `force_rport=yes`) UDP responses go to the source port even when the client
/// did not ask with `;rport`, which is what a phone behind NAT needs; without it the
/// sent-by port is used as §18.2.2 says. The host is always the packet's source address
/// (`received`), never the sent-by host, so a forged Via cannot aim responses elsewhere.
fn stamp_via(req: &mut Request, source: &Peer, force_rport: bool) -> Peer {
    let Some(via) = req.common.via.first_mut() else {
        return *source;
    };
    let src_ip = source.addr.ip();
    let sent_by_ip = match &via.sent_by.host {
        Host::V4(a) => Some(IpAddr::V4(*a)),
        Host::V6(a) => Some(IpAddr::V6(*a)),
        Host::Name(_) => None,
    };
    let rport_asked = via.rport().is_some();
    if sent_by_ip != Some(src_ip) || rport_asked {
        via.set_param("received", Some(src_ip.to_string()));
    }
    if rport_asked {
        via.set_param("rport", Some(source.addr.port().to_string()));
    }
    let sent_by_port = via.sent_by.port.unwrap_or(5060);
    match source.transport {
        // §18.2.2: over the connection the request came on; should it be gone by then,
        // a new connection to the received address at the sent-by port (the pool tries
        // `conn` first, then an open connection to `addr`, then opens one to `addr`).
        Transport::Tcp => Peer {
            transport: Transport::Tcp,
            addr: SocketAddr::new(src_ip, sent_by_port),
            conn: source.conn,
        },
        Transport::Udp if rport_asked || force_rport => *source,
        Transport::Udp => Peer::udp(SocketAddr::new(src_ip, sent_by_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::ConnId;
    use crate::wire::{parse_message, Message};

    fn request(via: &str) -> Request {
        let head = format!(
            "OPTIONS sip:example.test SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@example.test>;tag=1\r\nTo: <sip:example.test>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
        );
        match parse_message(head.as_bytes(), b"") {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn udp(addr: &str) -> Peer {
        Peer::udp(addr.parse().unwrap())
    }

    /// RFC 3581 §4: `received` and `rport` filled in, response to the source.
    #[test]
    fn rport_asked_answers_source_port() {
        let mut r = request("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport");
        let to = stamp_via(&mut r, &udp("127.0.0.1:40000"), false);
        assert_eq!(to, udp("127.0.0.1:40000"));
        let v = &r.common.via[0];
        assert_eq!(v.received(), Some("127.0.0.1"));
        assert_eq!(v.rport(), Some(Some(40000)));
    }

    /// RFC 3261 §18.2.1/§18.2.2 without rport: `received` added when the sent-by host
    /// differs, response to the received address at the sent-by port.
    #[test]
    fn no_rport_answers_sent_by_port_at_received_address() {
        let mut r = request("SIP/2.0/UDP host.example.test:5070;branch=z9hG4bK1");
        let to = stamp_via(&mut r, &udp("127.0.0.1:40000"), false);
        assert_eq!(to, udp("127.0.0.1:5070"));
        assert_eq!(r.common.via[0].received(), Some("127.0.0.1"));
        // No port in sent-by: 5060.
        let mut r = request("SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1");
        let to = stamp_via(&mut r, &udp("127.0.0.1:40000"), false);
        assert_eq!(to, udp("127.0.0.1:5060"));
        // sent-by equals the source: no received.
        assert_eq!(r.common.via[0].received(), None);
    }

    /// force_rport answers the source port even without `;rport`.
    #[test]
    fn force_rport_answers_source_port() {
        let mut r = request("SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK1");
        let to = stamp_via(&mut r, &udp("[::1]:40000"), true);
        assert_eq!(to, udp("[::1]:40000"));
        assert_eq!(r.common.via[0].received(), Some("::1"));
    }

    /// §18.2.2 over TCP: the same connection, with the sent-by port as the fallback.
    #[test]
    fn tcp_keeps_the_connection_and_falls_back_to_sent_by_port() {
        let mut r = request("SIP/2.0/TCP phone.example.test:5080;branch=z9hG4bK1");
        let source = Peer {
            transport: Transport::Tcp,
            addr: "127.0.0.1:40000".parse().unwrap(),
            conn: Some(ConnId(std::num::NonZeroU64::new(7).unwrap())),
        };
        let to = stamp_via(&mut r, &source, true);
        assert_eq!(to.conn, Some(ConnId(std::num::NonZeroU64::new(7).unwrap())));
        assert_eq!(to.addr, "127.0.0.1:5080".parse().unwrap());
    }
}
