//! Dialogs and the requests a B2BUA sends, sans-IO (RFC 3261 §12, §9.1, §13.2.2.4, §8.1.1).
//!
//! A [`Dialog`] is one leg's dialog state: Call-ID, local and remote tags and URIs, the
//! local and remote sequence numbers, the remote target and the route set. The switch is
//! the UAS of the A-leg ([`Dialog::uas`], §12.1.1) and the UAC of every B-leg
//! ([`Dialog::uac`], §12.1.2). In-dialog requests ([`Dialog::request`], §12.2.1.1) follow
//! the route set and the remote target, loose or strict routing alike; the ACK for a 2xx
//! is built by [`Dialog::ack`] (§13.2.2.4: a new transaction-less request with the
//! INVITE's CSeq number). [`cancel_for`] builds the CANCEL of a pending INVITE (§9.1), and
//! [`b_leg_invite`] the B-leg INVITE from the A-leg's: nothing of the A-leg's dialog
//! identifiers goes onto the B-leg (a new Call-ID, From tag, CSeq, branch; our Contact), the
//! body goes across byte for byte, Max-Forwards is decremented.
//!
//! Time, randomness for tags and branches, and our own address are arguments: these
//! functions never touch a socket or the clock.

use super::identity::Identity;
use crate::wire::{
    parse_name_addr, split_list, CSeq, Common, Header, HostPort, Method, NameAddr, Param, Request,
    Response, Uri, Via,
};
use bytes::Bytes;

/// Headers of an initial INVITE copied onto the B-leg (end-to-end information the callee
/// needs); everything else, dialog and routing state above all, stays on the A-leg.
///
/// What describes the UAC's own abilities is not copied: on the B-leg the switch is the
/// UAC, so the callee must learn the switch's, not the caller's. `Allow` is ours
/// ([`crate::endpoint::ALLOW`]). `Supported` is left out: A's `100rel` would let the
/// callee send reliable provisional responses nobody PRACKs (RFC 3262 §3: it then
/// rejects the INVITE with a 5xx after 64·T1 of ringing), and A's `timer` with its
/// `Session-Expires`/`Min-SE` (RFC 4028 §7.1) would make the switch the refresher of a
/// session it never refreshes, so the callee would end every call at the interval's
/// expiry (typically 30 minutes).
const COPIED_TO_B_LEG: &[&str] = &[
    "Content-Type",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Accept",
    "Subject",
    "Priority",
    "User-Agent",
];

/// Of [`COPIED_TO_B_LEG`], the headers that can name the caller, left off when the caller
/// asks for privacy (RFC 3323 §5.1).
const NAMES_THE_CALLER: &[&str] = &["Subject", "User-Agent"];

/// One leg's dialog (RFC 3261 §12).
///
/// A dialog lives as long as its call, so it is kept compact: its seven texts (Call-ID,
/// both tags, both URIs without tag, the remote target, the route set) back to back in
/// one allocation, parsed again only for the rare request it sends. Measured at 10,000
/// held calls, that is about 200 bytes per dialog less than a field per text (eight
/// allocations, and 150 bytes inline in its leg).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// [`Part`]s in order; the route set's values separated by `\n` (no header value
    /// holds one).
    text: Box<str>,
    /// Where each part but the last ends in `text`.
    ends: [u32; 6],
    /// The last CSeq number we used.
    pub local_seq: u32,
    /// The last CSeq number the peer used, once it sent a request.
    pub remote_seq: Option<u32>,
    /// Early (a 1xx with a To tag made it) or confirmed (a 2xx did), §12.
    pub state: DialogState,
}

/// The texts of a [`Dialog`], in their order in it.
#[derive(Debug, Clone, Copy)]
enum Part {
    CallId,
    LocalTag,
    RemoteTag,
    /// Our URI (From of our requests), without tag, as header text.
    LocalUri,
    /// The peer's URI (To of our requests), without tag, as header text.
    RemoteUri,
    /// Where in-dialog requests go (the peer's Contact), as URI text.
    RemoteTarget,
    /// Route values for in-dialog requests, in the order they are sent.
    RouteSet,
}

/// Packs the parts (all but the route set) and the route set's values.
fn pack(parts: [&str; 6], routes: &[Box<str>]) -> (Box<str>, [u32; 6]) {
    let len = parts.iter().map(|p| p.len()).sum::<usize>()
        + routes.iter().map(|r| r.len() + 1).sum::<usize>();
    let mut text = String::with_capacity(len);
    let mut ends = [0u32; 6];
    for (i, p) in parts.iter().enumerate() {
        text.push_str(p);
        // A message is at most a few tens of KiB (the transport's limit).
        ends[i] = u32::try_from(text.len()).unwrap_or(u32::MAX);
    }
    for (i, r) in routes.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        text.push_str(r);
    }
    (text.into_boxed_str(), ends)
}

/// A dialog's state (RFC 3261 §12): a provisional response with a To tag creates an
/// early dialog, a 2xx a confirmed one (or confirms the early dialog of the same tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// From a 1xx: only CANCEL ends it from the caller's side; its 2xx confirms it.
    Early,
    /// From a 2xx: in-dialog requests (BYE) may go.
    Confirmed,
}

/// Why a dialog could not be formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogError {
    /// The message has no usable Contact (§12.1.1, §12.1.2: the remote target).
    NoContact,
    /// The peer's tag is missing.
    NoTag,
    /// A Record-Route value does not parse.
    BadRecordRoute,
}

fn without_tag(na: &NameAddr) -> NameAddr {
    let mut na = na.clone();
    na.params.retain(|p| !p.name.eq_ignore_ascii_case("tag"));
    na
}

fn text_without_tag(na: &NameAddr) -> Box<str> {
    without_tag(na).to_string().into_boxed_str()
}

fn texts(routes: &[NameAddr]) -> Box<[Box<str>]> {
    routes
        .iter()
        .map(|r| r.to_string().into_boxed_str())
        .collect()
}

fn contact_uri(common: &Common) -> Result<Uri, DialogError> {
    let v = common.header("Contact").ok_or(DialogError::NoContact)?;
    let first = split_list(v)
        .ok()
        .and_then(|l| l.into_iter().next())
        .ok_or(DialogError::NoContact)?;
    let na = parse_name_addr(first).map_err(|_| DialogError::NoContact)?;
    Ok(na.uri)
}

fn record_route(common: &Common) -> Result<Vec<NameAddr>, DialogError> {
    let mut out = Vec::new();
    for v in common.header_values("Record-Route") {
        for part in split_list(v).map_err(|_| DialogError::BadRecordRoute)? {
            out.push(parse_name_addr(part).map_err(|_| DialogError::BadRecordRoute)?);
        }
    }
    Ok(out)
}

impl Dialog {
    /// The dialog of a request we answer with a 2xx (or 1xx with a tag) as UAS
    /// (§12.1.1): route set = Record-Route in order, remote target = Contact, remote
    /// sequence = the request's CSeq, our tag as given.
    pub fn uas(request: &Request, local_tag: &str) -> Result<Dialog, DialogError> {
        let c = &request.common;
        let remote_tag = c.from.tag().ok_or(DialogError::NoTag)?;
        let target = contact_uri(c)?.to_string();
        let routes = texts(&record_route(c)?);
        let (text, ends) = pack(
            [
                &c.call_id,
                local_tag,
                remote_tag,
                &text_without_tag(&c.to),
                &text_without_tag(&c.from),
                &target,
            ],
            &routes,
        );
        Ok(Dialog {
            text,
            ends,
            local_seq: 0,
            remote_seq: Some(c.cseq.seq),
            state: DialogState::Early,
        })
    }

    /// The dialog a response to our INVITE creates as UAC (§12.1.2): route set =
    /// Record-Route reversed, remote target = the response's Contact, local sequence =
    /// the INVITE's CSeq.
    pub fn uac(invite: &Request, response: &Response) -> Result<Dialog, DialogError> {
        let c = &response.common;
        let mut route_set = record_route(c)?;
        route_set.reverse();
        let local_tag = invite.common.from.tag().ok_or(DialogError::NoTag)?;
        let remote_tag = c.to.tag().ok_or(DialogError::NoTag)?;
        let target = contact_uri(c)?.to_string();
        let (text, ends) = pack(
            [
                &invite.common.call_id,
                local_tag,
                remote_tag,
                &text_without_tag(&invite.common.from),
                &text_without_tag(&invite.common.to),
                &target,
            ],
            &texts(&route_set),
        );
        Ok(Dialog {
            text,
            ends,
            local_seq: invite.common.cseq.seq,
            remote_seq: None,
            state: if response.status >= 200 {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
        })
    }

    fn part(&self, p: Part) -> &str {
        let i = p as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends.get(i).map_or(self.text.len(), |&e| e as usize);
        self.text.get(start..end).unwrap_or_default()
    }

    /// The Call-ID.
    pub fn call_id(&self) -> &str {
        self.part(Part::CallId)
    }

    /// Our tag.
    pub fn local_tag(&self) -> &str {
        self.part(Part::LocalTag)
    }

    /// The peer's tag.
    pub fn remote_tag(&self) -> &str {
        self.part(Part::RemoteTag)
    }

    /// The 2xx (ours to the peer, or the peer's to us) confirms the dialog; its remote
    /// target and route set are the 2xx's (§12.1.2: a 2xx may change the Contact an
    /// early 1xx gave).
    pub fn confirm(&mut self, by: Option<&Response>) {
        self.state = DialogState::Confirmed;
        let Some(r) = by else {
            return;
        };
        // Either may be missing or bad in the 2xx: then the dialog keeps its own.
        let target = contact_uri(&r.common)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| self.part(Part::RemoteTarget).to_string());
        let routes: Box<[Box<str>]> = match record_route(&r.common) {
            Ok(mut rs) => {
                rs.reverse();
                texts(&rs)
            }
            Err(_) => self.route_texts().map(Into::into).collect(),
        };
        self.repack(&target, &routes);
    }

    /// A target refresh (§12.2: a re-INVITE or UPDATE, or its 2xx, with a Contact): the
    /// remote target becomes that Contact; the route set stays (it is fixed when the
    /// dialog is made). A missing or bad Contact changes nothing.
    pub fn refresh_target(&mut self, by: &Common) {
        let Ok(target) = contact_uri(by).map(|t| t.to_string()) else {
            return;
        };
        if target == self.part(Part::RemoteTarget) {
            return;
        }
        let routes: Box<[Box<str>]> = self.route_texts().map(Into::into).collect();
        self.repack(&target, &routes);
    }

    /// The same dialog with a new remote target and route set.
    fn repack(&mut self, target: &str, routes: &[Box<str>]) {
        let (text, ends) = pack(
            [
                self.part(Part::CallId),
                self.part(Part::LocalTag),
                self.part(Part::RemoteTag),
                self.part(Part::LocalUri),
                self.part(Part::RemoteUri),
                target,
            ],
            routes,
        );
        self.text = text;
        self.ends = ends;
    }

    fn route_texts(&self) -> impl Iterator<Item = &str> {
        let r = self.part(Part::RouteSet);
        r.split('\n').filter(|v| !v.is_empty())
    }

    /// True when `req` belongs to this dialog: same Call-ID, its From tag is the peer's
    /// and its To tag ours (§12.2.2).
    pub fn matches(&self, req: &Request) -> bool {
        req.common.call_id == self.call_id()
            && req.common.from.tag() == Some(self.remote_tag())
            && req.common.to.tag() == Some(self.local_tag())
    }

    /// Checks and records the peer's CSeq of an in-dialog request (§12.2.2): `false`
    /// for a lower number than the last (answer 500).
    pub fn accept_remote_seq(&mut self, seq: u32) -> bool {
        match self.remote_seq {
            Some(last) if seq < last => false,
            _ => {
                self.remote_seq = Some(seq);
                true
            }
        }
    }

    /// A new in-dialog request (§12.2.1.1) with the next CSeq, Via `via` (its branch
    /// set by the caller), Max-Forwards 70.
    pub fn request(&mut self, method: Method, via: Via) -> Option<Request> {
        self.local_seq = self.local_seq.wrapping_add(1).max(1);
        let seq = self.local_seq;
        self.build(method, seq, via)
    }

    /// The ACK for the 2xx of the INVITE with CSeq `invite_seq` (§13.2.2.4), with `body`
    /// (the answer for a late offer) typed `content_type`.
    pub fn ack(&self, invite_seq: u32, via: Via, body: Option<(Bytes, &str)>) -> Option<Request> {
        let mut r = self.build(Method::Ack, invite_seq, via)?;
        if let Some((b, ct)) = body {
            r.common
                .headers
                .push(Header::new("Content-Type", ct.to_string()));
            r.common.body = b;
        }
        Some(r)
    }

    /// Where in-dialog requests go (§12.2.1.1: the remote target).
    pub fn remote_target(&self) -> Option<Uri> {
        crate::wire::parse_uri(self.part(Part::RemoteTarget)).ok()
    }

    /// The route set, in the order the Route headers go.
    pub fn route_set(&self) -> Vec<NameAddr> {
        self.route_texts()
            .filter_map(|r| parse_name_addr(r).ok())
            .collect()
    }

    /// `None` only if the dialog's own text no longer parses (it was printed from parsed
    /// values, so that would be a bug of ours: the request is not sent).
    fn build(&self, method: Method, seq: u32, via: Via) -> Option<Request> {
        let mut from = parse_name_addr(self.part(Part::LocalUri)).ok()?;
        from.set_tag(self.local_tag().to_string());
        let mut to = parse_name_addr(self.part(Part::RemoteUri)).ok()?;
        to.set_tag(self.remote_tag().to_string());
        let target = self.remote_target()?;
        let route_set = self.route_set();
        // §12.2.1.1: loose routing when the first route has `lr`; strict otherwise (the
        // first route becomes the Request-URI, the remote target the last Route).
        let (uri, routes) = match route_set.first() {
            None => (target, Vec::new()),
            Some(first) if is_loose(first) => (target, route_set.clone()),
            Some(first) => {
                let mut rest: Vec<NameAddr> = route_set[1..].to_vec();
                rest.push(NameAddr::new(target));
                let mut uri = first.uri.clone();
                if let Uri::Sip(u) = &mut uri {
                    u.headers = None;
                }
                (uri, rest)
            }
        };
        let headers = routes
            .iter()
            .map(|r| Header::new("Route", r.to_string()))
            .collect();
        Some(Request {
            method: method.clone(),
            uri,
            common: Common {
                via: vec![via],
                from,
                to,
                call_id: self.call_id().to_string(),
                cseq: CSeq { seq, method },
                max_forwards: Some(70),
                headers,
                body: Bytes::new(),
            },
        })
    }
}

fn is_loose(route: &NameAddr) -> bool {
    match &route.uri {
        Uri::Sip(u) => u.has_param("lr"),
        _ => false,
    }
}

/// The CANCEL of a pending INVITE we sent (§9.1): its Request-URI, Call-ID, From, To
/// and CSeq number, method CANCEL, its top Via (same branch), its Route headers.
pub fn cancel_for(invite: &Request) -> Request {
    Request {
        method: Method::Cancel,
        uri: invite.uri.clone(),
        common: Common {
            via: invite.common.via.iter().take(1).cloned().collect(),
            from: invite.common.from.clone(),
            to: invite.common.to.clone(),
            call_id: invite.common.call_id.clone(),
            cseq: CSeq {
                seq: invite.common.cseq.seq,
                method: Method::Cancel,
            },
            max_forwards: Some(70),
            headers: invite
                .common
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("Route"))
                .cloned()
                .collect(),
            body: Bytes::new(),
        },
    }
}

/// Our own Via for a request we send: `SIP/2.0/<transport> <sent_by>;branch=<branch>;rport`.
pub fn our_via(transport: &str, sent_by: HostPort, branch: String) -> Via {
    Via {
        transport: transport.to_ascii_uppercase(),
        sent_by,
        params: vec![Param::new("branch", branch), Param::flag("rport")],
    }
}

/// What the B-leg INVITE needs besides the A-leg's INVITE.
#[derive(Debug, Clone)]
pub struct BLeg<'a> {
    /// The callee binding's contact URI (the Request-URI).
    pub target: Uri,
    /// Our Via (fresh branch).
    pub via: Via,
    /// Our Contact (the advertised address).
    pub contact: NameAddr,
    /// The new dialog's Call-ID.
    pub call_id: &'a str,
    /// Our From tag on the B-leg.
    pub from_tag: &'a str,
    /// To: the callee as dialled (the AOR), no tag.
    pub to: NameAddr,
    /// Path of the binding (RFC 3327): sent as Route headers.
    pub path: &'a [String],
    /// Who calls, as the switch vouches for it (`call::identity`): the From, tagged here.
    pub identity: &'a Identity,
}

/// The B-leg INVITE for A-leg INVITE `a` (a B2BUA's new request, RFC 3261 §8.1.1): From is
/// the caller's identity as the switch vouches for it (`b.identity`) with our tag, CSeq 1, Max-Forwards one less than A's (70 when A had
/// none), the body byte for byte with its Content-* headers, the end-to-end headers of
/// [`COPIED_TO_B_LEG`] and our own `Allow`. `None` when A's Max-Forwards is 0 (the
/// caller answers 483).
pub fn b_leg_invite(a: &Request, b: &BLeg<'_>) -> Option<Request> {
    let mf = match a.common.max_forwards {
        Some(0) => return None,
        Some(n) => n - 1,
        None => 69,
    };
    let mut from = b.identity.from.clone();
    from.set_tag(b.from_tag.to_string());
    let mut headers: Vec<Header> = b
        .path
        .iter()
        .map(|p| Header::new("Route", p.clone()))
        .collect();
    headers.push(Header::new("Contact", b.contact.to_string()));
    headers.push(Header::new("Allow", crate::endpoint::ALLOW));
    headers.extend(
        a.common
            .headers
            .iter()
            .filter(|h| {
                COPIED_TO_B_LEG
                    .iter()
                    .any(|n| h.name.eq_ignore_ascii_case(n))
                    && !(b.identity.anonymous
                        && NAMES_THE_CALLER
                            .iter()
                            .any(|n| h.name.eq_ignore_ascii_case(n)))
            })
            .cloned(),
    );
    Some(Request {
        method: Method::Invite,
        uri: b.target.clone(),
        common: Common {
            via: vec![b.via.clone()],
            from,
            to: without_tag(&b.to),
            call_id: b.call_id.to_string(),
            cseq: CSeq {
                seq: 1,
                method: Method::Invite,
            },
            max_forwards: Some(mf),
            headers,
            body: a.common.body.clone(),
        },
    })
}

/// True when our own Via (sent-by `ours`) is already in the request: it has looped back
/// to us (RFC 3261 §16.3 step 4, applied by a B2BUA: 482). Only the switch puts its
/// sent-by in a Via, so the address alone identifies our requests.
pub fn is_loop(req: &Request, ours: &HostPort) -> bool {
    req.common.via.iter().any(|v| v.sent_by == *ours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{parse_message, Host, Message};

    fn req(text: &str) -> Request {
        let text = text.replace('\n', "\r\n");
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let head = format!("{head}\r\n");
        match parse_message(head.as_bytes(), body.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn resp(text: &str) -> Response {
        let text = text.replace('\n', "\r\n");
        let head = format!("{}\r\n", text.trim_end());
        match parse_message(head.as_bytes(), b"") {
            Ok(Message::Response(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    const INVITE: &str = "INVITE sip:bob@example.test SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa1
Max-Forwards: 70
From: \"Alice\" <sip:alice@example.test>;tag=at1
To: <sip:bob@example.test>
Call-ID: a-call@10.0.0.1
CSeq: 7 INVITE
Contact: <sip:alice@10.0.0.1:5070>
Record-Route: <sip:p1.example.test;lr>, <sip:p2.example.test;lr>
Content-Type: application/sdp
Supported: timer, 100rel, replaces
Session-Expires: 1800;refresher=uac
Min-SE: 90
Allow: INVITE, ACK, CANCEL, BYE, UPDATE, PRACK, REFER, INFO
Accept: application/sdp
X-Secret: do-not-forward
Content-Length: 3

v=0";

    fn sent_by() -> HostPort {
        HostPort {
            host: Host::V4([127, 0, 0, 1].into()),
            port: Some(5060),
        }
    }

    #[test]
    fn uas_dialog_from_invite() {
        let r = req(INVITE);
        let d = Dialog::uas(&r, "ours").unwrap();
        assert_eq!(d.remote_tag(), "at1");
        assert_eq!(d.remote_seq, Some(7));
        assert_eq!(
            d.remote_target().unwrap().to_string(),
            "sip:alice@10.0.0.1:5070"
        );
        assert_eq!(d.route_set().len(), 2);
        assert_eq!(d.route_set()[0].uri.to_string(), "sip:p1.example.test;lr");
        assert!(d.matches(&req(&INVITE.replace(
            "To: <sip:bob@example.test>",
            "To: <sip:bob@example.test>;tag=ours"
        ))));
    }

    #[test]
    fn in_dialog_bye_loose_routing() {
        let mut d = Dialog::uas(&req(INVITE), "ours").unwrap();
        let bye = d
            .request(Method::Bye, our_via("udp", sent_by(), "z9hG4bKb1".into()))
            .unwrap();
        let text = String::from_utf8(bye.to_bytes().to_vec()).unwrap();
        assert!(
            text.starts_with("BYE sip:alice@10.0.0.1:5070 SIP/2.0\r\n"),
            "{text}"
        );
        assert!(
            text.contains("From: <sip:bob@example.test>;tag=ours"),
            "{text}"
        );
        assert!(
            text.contains("To: \"Alice\" <sip:alice@example.test>;tag=at1"),
            "{text}"
        );
        assert!(text.contains("CSeq: 1 BYE"), "{text}");
        assert!(
            text.contains("Route: <sip:p1.example.test;lr>\r\nRoute: <sip:p2.example.test;lr>"),
            "{text}"
        );
        assert!(
            text.contains("Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKb1;rport"),
            "{text}"
        );
        // The next request counts on.
        let again = d
            .request(Method::Bye, our_via("udp", sent_by(), "z9hG4bKb2".into()))
            .unwrap();
        assert_eq!(again.common.cseq.seq, 2);
    }

    #[test]
    fn strict_routing_puts_the_first_route_in_the_request_uri() {
        let r = req(&INVITE.replace(
            "Record-Route: <sip:p1.example.test;lr>, <sip:p2.example.test;lr>",
            "Record-Route: <sip:strict.example.test>",
        ));
        let mut d = Dialog::uas(&r, "ours").unwrap();
        let bye = d
            .request(Method::Bye, our_via("udp", sent_by(), "z9hG4bKb1".into()))
            .unwrap();
        assert_eq!(bye.uri.to_string(), "sip:strict.example.test");
        let routes: Vec<&str> = bye.common.header_values("Route").collect();
        assert_eq!(routes, vec!["<sip:alice@10.0.0.1:5070>"]);
    }

    #[test]
    fn uac_dialog_from_response_reverses_record_route() {
        let inv = req(INVITE);
        let ok = resp(
            "SIP/2.0 200 OK
Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa1
From: \"Alice\" <sip:alice@example.test>;tag=at1
To: <sip:bob@example.test>;tag=bt1
Call-ID: a-call@10.0.0.1
CSeq: 7 INVITE
Contact: <sip:bob@10.0.0.2:5080;transport=tcp>
Record-Route: <sip:p2.example.test;lr>, <sip:p1.example.test;lr>
Content-Length: 0",
        );
        let d = Dialog::uac(&inv, &ok).unwrap();
        assert_eq!(d.local_tag(), "at1");
        assert_eq!(d.remote_tag(), "bt1");
        assert_eq!(d.local_seq, 7);
        assert_eq!(d.route_set()[0].uri.to_string(), "sip:p1.example.test;lr");
        assert_eq!(
            d.remote_target().unwrap().to_string(),
            "sip:bob@10.0.0.2:5080;transport=tcp"
        );
        // The ACK for the 2xx: the INVITE's CSeq number, method ACK, no CSeq increment.
        let ack = d
            .ack(7, our_via("udp", sent_by(), "z9hG4bKack".into()), None)
            .unwrap();
        assert_eq!(ack.common.cseq.to_string(), "7 ACK");
        assert_eq!(ack.uri.to_string(), "sip:bob@10.0.0.2:5080;transport=tcp");
        assert_eq!(ack.common.to.tag(), Some("bt1"));
        assert_eq!(d.local_seq, 7);
        // A response without Contact makes no dialog.
        let no_contact = resp(
            "SIP/2.0 200 OK
Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa1
From: <sip:alice@example.test>;tag=at1
To: <sip:bob@example.test>;tag=bt1
Call-ID: a-call@10.0.0.1
CSeq: 7 INVITE
Content-Length: 0",
        );
        assert_eq!(Dialog::uac(&inv, &no_contact), Err(DialogError::NoContact));
    }

    #[test]
    fn remote_cseq_must_not_go_down() {
        let mut d = Dialog::uas(&req(INVITE), "ours").unwrap();
        assert!(d.accept_remote_seq(8));
        assert!(
            d.accept_remote_seq(8),
            "equal is a retransmission's business"
        );
        assert!(!d.accept_remote_seq(3));
    }

    #[test]
    fn cancel_matches_the_invite() {
        let inv = req(INVITE);
        let c = cancel_for(&inv);
        assert_eq!(c.method, Method::Cancel);
        assert_eq!(c.common.cseq.to_string(), "7 CANCEL");
        assert_eq!(c.common.via, inv.common.via[..1].to_vec());
        assert_eq!(c.uri, inv.uri);
        assert_eq!(c.common.to, inv.common.to);
    }

    #[test]
    fn b_leg_invite_shares_nothing_of_the_a_leg_dialog() {
        let a = req(INVITE);
        let contact = NameAddr::new(Uri::Sip(crate::wire::SipUri {
            secure: false,
            user: Some("switch".into()),
            password: None,
            host: sent_by(),
            params: Vec::new(),
            headers: None,
        }));
        let target = crate::wire::parse_uri("sip:bob-x@10.0.0.2:5080").unwrap();
        let identity = super::super::identity::of_caller(&a, "alice", "example.test", None);
        let leg = BLeg {
            target: target.clone(),
            via: our_via("udp", sent_by(), "z9hG4bKbleg".into()),
            contact,
            call_id: "b-call@127.0.0.1",
            from_tag: "bt-ours",
            to: a.common.to.clone(),
            path: &[],
            identity: &identity,
        };
        let b = b_leg_invite(&a, &leg).unwrap();
        assert_eq!(b.uri, target);
        assert_eq!(b.common.call_id, "b-call@127.0.0.1");
        assert_eq!(b.common.from.tag(), Some("bt-ours"));
        assert_eq!(
            b.common.from.to_string(),
            "\"Alice\" <sip:alice@example.test>;tag=bt-ours",
            "the identity the switch vouches for"
        );
        assert_eq!(b.common.to.tag(), None);
        assert_eq!(b.common.cseq.to_string(), "1 INVITE");
        assert_eq!(b.common.max_forwards, Some(69));
        assert_eq!(b.common.via.len(), 1);
        assert_eq!(b.common.body, a.common.body, "SDP byte for byte");
        assert_eq!(b.common.header("Content-Type"), Some("application/sdp"));
        assert_eq!(b.common.header("Accept"), Some("application/sdp"));
        // The switch is the B-leg's UAC: its own abilities, not the caller's.
        assert_eq!(b.common.header("Allow"), Some(crate::endpoint::ALLOW));
        assert_eq!(
            b.common
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("Allow"))
                .count(),
            1
        );
        for h in ["Supported", "Session-Expires", "Min-SE", "Require"] {
            assert!(b.common.header(h).is_none(), "{h} on the B-leg");
        }
        assert_eq!(
            b.common.header("Contact"),
            Some("<sip:switch@127.0.0.1:5060>")
        );
        assert!(b.common.header("Record-Route").is_none());
        assert!(b.common.header("X-Secret").is_none());
        let text = String::from_utf8(b.to_bytes().to_vec()).unwrap();
        assert!(
            !text.contains("a-call@10.0.0.1")
                && !text.contains("at1")
                && !text.contains("z9hG4bKa1"),
            "{text}"
        );
        // A caller asking for privacy: anonymous, and the headers that could name them
        // stay behind.
        let anonymous = Identity {
            anonymous: true,
            ..identity.clone()
        };
        let named = req(&INVITE.replace(
            "Accept: application/sdp",
            "Accept: application/sdp\nUser-Agent: Desk 1\nSubject: hello",
        ));
        let public = b_leg_invite(&named, &leg).unwrap();
        assert_eq!(public.common.header("User-Agent"), Some("Desk 1"));
        assert_eq!(public.common.header("Subject"), Some("hello"));
        let private = b_leg_invite(
            &named,
            &BLeg {
                identity: &anonymous,
                ..leg.clone()
            },
        )
        .unwrap();
        assert!(private.common.header("User-Agent").is_none());
        assert!(private.common.header("Subject").is_none());
        assert!(private.common.header("Accept").is_some());
        // Max-Forwards 0 cannot be forwarded.
        let zero = req(&INVITE.replace("Max-Forwards: 70", "Max-Forwards: 0"));
        assert!(b_leg_invite(&zero, &leg).is_none());
    }

    #[test]
    fn loops_are_our_own_via() {
        let a = req(INVITE);
        assert!(!is_loop(&a, &sent_by()));
        let looped = req(&INVITE.replace(
            "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa1",
            "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa1\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKss1",
        ));
        assert!(is_loop(&looped, &sent_by()));
    }
}
