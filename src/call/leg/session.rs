//! The Leg's session-timer duties (RFC 4028), beside its other SIP (`leg.rs`): the
//! session A's INVITE and a B-leg's 2xx set up (§9, §7.2), the SDP kept for a refresh
//! by re-INVITE, the switch's own refresh (UPDATE, or a re-INVITE with the same SDP,
//! §7.4) and its answer (§10: 408/481 end the call), and the party's bodiless UPDATE
//! answered here. The negotiation is [`crate::call::session_timer`]'s, the clocks the
//! call machine's.

use super::*;
use crate::call::session_timer::Refresher;

impl Leg {
    /// A's 2xx: the session A's INVITE negotiates (RFC 4028 §9; the router refused too
    /// small an interval with 422), and its headers on the 2xx `r`.
    pub(super) fn a_session(&mut self, r: &mut Response) -> Option<Session> {
        let invite = &self.setup.as_deref()?.invite;
        let asked = Asked::of(&invite.common);
        let update = session_timer::allows_update(&invite.common).unwrap_or(false);
        let policy = &self.settings.session;
        let session = session_timer::as_uas(&asked, policy).unwrap_or(Session {
            interval: policy.min_se,
            refresher: Refresher::Switch,
        });
        r.common
            .headers
            .extend(session_timer::answer_headers(&session, asked.timer));
        self.update = update;
        self.sent_sdp(&r.common.body.clone());
        Some(session)
    }

    /// Keeps `body`, an SDP the switch just sent on this leg, for its session refresh
    /// by re-INVITE (RFC 4028 §7.4: the same session, byte for byte, so the same `o=`
    /// version: no change); only where that refresh is needed (no UPDATE at the peer).
    pub(super) fn sent_sdp(&mut self, body: &bytes::Bytes) {
        if !self.update && !body.is_empty() {
            self.rare().sdp = Some(bytes::Bytes::copy_from_slice(body));
        }
    }

    /// The switch's own refresh of this leg's session (RFC 4028 §7.4, §10): UPDATE
    /// without a body where the peer takes UPDATE, else a re-INVITE with the last SDP the
    /// switch sent on this leg; `Session-Expires` with `refresher=uac` (the switch).
    pub(super) fn send_refresh(&mut self, interval: u32) {
        let sdp = if self.update {
            None
        } else {
            self.rare.as_ref().and_then(|r| r.sdp.clone())
        };
        let (method, kind) = match sdp {
            Some(_) => (Method::Invite, Kind::Reinvite),
            None => (Method::Update, Kind::Update),
        };
        let via = via_for(&self.settings, self.peer.transport);
        let Some(mut request) = self.dialog.as_mut().and_then(|d| d.request(method, via)) else {
            self.report(LegReport::RefreshFailed(self.id));
            return;
        };
        let h = &mut request.common.headers;
        h.push(Header::new(
            "Contact",
            contact_for(&self.settings, self.peer.transport).to_string(),
        ));
        h.push(Header::new("Allow", crate::endpoint::ALLOW));
        h.extend(session_timer::request_headers(
            interval,
            Some(Refresher::Switch),
            &self.settings.session,
        ));
        if let Some(body) = sdp {
            h.push(Header::new("Content-Type", "application/sdp"));
            request.common.body = body;
        }
        let seq = request.common.cseq.seq;
        if kind == Kind::Reinvite {
            // An offer (the same again): it meets the peer's crossing one as glare, and
            // its 2xx is ACKed again at each retransmission.
            let rare = self.rare();
            rare.usage.outgoing.push((Method::Invite, seq));
            rare.reack = Some((seq, None));
        }
        self.send(CallOutput::Send {
            call: self.call,
            leg: self.id,
            purpose: Purpose::Refresh { kind, interval },
            to: self.peer,
            request,
        });
    }

    /// The final answer to the switch's refresh: a 2xx refreshes (and a re-INVITE's is
    /// ACKed, again at each retransmission); 408 or 481 ends the call (RFC 4028 §10);
    /// another failure leaves the session unrefreshed, so its clock runs out.
    pub(super) fn on_refresh_response(&mut self, kind: Kind, interval: u32, response: Response) {
        if response.status < 200 {
            return;
        }
        let seq = response.common.cseq.seq;
        if kind == Kind::Reinvite {
            let first = self
                .rare
                .as_mut()
                .is_some_and(|r| r.usage.answered(&Method::Invite, seq));
            if !first {
                // A retransmitted 2xx: the same ACK again.
                return self.on_relayed_response(kind, response);
            }
        }
        if (200..300).contains(&response.status) {
            if kind == Kind::Reinvite {
                let via = via_for(&self.settings, self.peer.transport);
                if let Some(ack) = self.dialog.as_ref().and_then(|d| d.ack(seq, via, None)) {
                    self.rare().reack = Some((seq, Some(Box::new(ack.clone()))));
                    self.send(CallOutput::Ack {
                        to: self.peer,
                        request: ack,
                    });
                }
            }
            if let Some(d) = self.dialog.as_mut() {
                d.refresh_target(&response.common);
            }
            let session = session_timer::as_uac(&Asked::of(&response.common), interval);
            self.report(LegReport::SessionRefreshed(self.id, session));
        } else if matches!(response.status, 408 | 481) {
            self.report(LegReport::RefreshFailed(self.id));
        }
    }

    /// The first 2xx of a B-leg's INVITE: the session it sets up (RFC 4028 §7.2), and
    /// how the switch will refresh it.
    pub(super) fn b_session(&mut self, response: &Response) -> Option<Session> {
        let offer = self.setup.as_deref()?.invite.common.body.clone();
        self.update = session_timer::allows_update(&response.common).unwrap_or(false);
        self.sent_sdp(&offer);
        let asked = Asked::of(&response.common);
        Some(session_timer::as_uac(
            &asked,
            self.settings.session.session_expires,
        ))
    }

    /// The party's UPDATE without a body: no offer (RFC 3311 §5.2), so nothing for the
    /// other party; a refresh of this leg's session only (RFC 4028 §9), answered here
    /// with our Contact, Allow and the session it negotiated.
    pub(super) fn refreshed_by_update(
        &mut self,
        tx: TxId,
        request: &Request,
        asked: &Asked,
        s: Session,
    ) {
        if let Some(d) = self.dialog.as_mut() {
            d.refresh_target(&request.common);
        }
        let mut r = request.response(200, None, None);
        r.common.headers.push(Header::new(
            "Contact",
            contact_for(&self.settings, self.peer.transport).to_string(),
        ));
        r.common
            .headers
            .push(Header::new("Allow", crate::endpoint::ALLOW));
        r.common
            .headers
            .extend(session_timer::answer_headers(&s, asked.timer));
        self.send(CallOutput::Respond { tx, response: r });
        self.report(LegReport::SessionRefreshed(self.id, s));
    }
}
