//! Transaction matching keys (RFC 3261 §17.1.3, §17.2.3, §9.2).
//!
//! A client transaction is identified by the branch of the top Via it sent and the CSeq
//! method (§17.1.3): a CANCEL shares its INVITE's branch but not its method.
//!
//! A server transaction is identified, when the top Via branch carries the magic cookie
//! `z9hG4bK`, by that branch, the sent-by and the method, an ACK matching the INVITE
//! (§17.2.3). For an RFC 2543 peer (no cookie) the key is the Request-URI, the From tag,
//! the Call-ID, the CSeq number and method and the whole top Via, plus the To tag of the
//! request. An ACK matches an INVITE transaction on the same fields with the method
//! INVITE, when its To tag equals the tag of the response the server sent; the layer
//! checks that last condition against the transaction. Fields are compared by value:
//! a retransmission is a copy of the original, so the §19.1.4 URI equivalence rules are
//! not needed to recognise one; host names in sent-by are compared case-insensitively.

use crate::wire::{Host, HostPort, Method, Request, Response, Uri, Via};

/// Identifies a client transaction (§17.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    /// The branch of the top Via of the request sent.
    pub branch: String,
    /// The request's method, as carried in the CSeq of its responses.
    pub method: Method,
}

impl ClientKey {
    /// The key of a request about to be sent: `None` when its top Via has no RFC 3261
    /// branch (the layer only originates RFC 3261 transactions).
    pub fn for_request(request: &Request) -> Option<ClientKey> {
        let via = request.common.top_via()?;
        if !via.has_rfc3261_branch() {
            return None;
        }
        Some(ClientKey {
            branch: via.branch()?.to_string(),
            method: request.method.clone(),
        })
    }

    /// The key a response matches: top Via branch and CSeq method.
    pub fn for_response(response: &Response) -> Option<ClientKey> {
        let branch = response.common.top_via()?.branch()?;
        Some(ClientKey {
            branch: branch.to_string(),
            method: response.common.cseq.method.clone(),
        })
    }
}

/// Identifies a server transaction (§17.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerKey {
    /// The request's top Via carries an RFC 3261 branch.
    Rfc3261 {
        /// The branch, compared exactly.
        branch: String,
        /// The sent-by, host name lower-cased.
        sent_by: HostPort,
        /// The method; INVITE for an ACK.
        method: Method,
    },
    /// RFC 2543 fallback for a top Via without the magic cookie (boxed: it is large and
    /// rare).
    Rfc2543(Box<Rfc2543Key>),
}

/// The RFC 2543 matching fields of §17.2.3.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rfc2543Key {
    /// The Request-URI.
    pub uri: Uri,
    /// The To tag of the request (for an ACK lookup: a candidate tag, see
    /// [`ServerKey::ack_candidates`]).
    pub to_tag: Option<String>,
    /// The From tag.
    pub from_tag: Option<String>,
    /// The Call-ID.
    pub call_id: String,
    /// The CSeq number.
    pub cseq: u32,
    /// The CSeq method; INVITE for an ACK.
    pub method: Method,
    /// The whole top Via.
    pub top_via: Via,
}

fn normalise(hp: &HostPort) -> HostPort {
    match &hp.host {
        Host::Name(n) => HostPort {
            host: Host::Name(n.to_ascii_lowercase()),
            port: hp.port,
        },
        _ => hp.clone(),
    }
}

impl ServerKey {
    /// The key of the transaction `request` belongs to, as if its method were `method`
    /// (the request's own method, INVITE for an ACK or for a CANCEL's §9.2 target).
    /// `None` when the request has no Via.
    fn with_method(request: &Request, method: Method, to_tag: Option<&str>) -> Option<ServerKey> {
        let via = request.common.top_via()?;
        if via.has_rfc3261_branch() {
            return Some(ServerKey::Rfc3261 {
                branch: via.branch()?.to_string(),
                sent_by: normalise(&via.sent_by),
                method,
            });
        }
        Some(ServerKey::Rfc2543(Box::new(Rfc2543Key {
            uri: request.uri.clone(),
            to_tag: to_tag.map(str::to_string),
            from_tag: request.common.from.tag().map(str::to_string),
            call_id: request.common.call_id.clone(),
            cseq: request.common.cseq.seq,
            method,
            top_via: via.clone(),
        })))
    }

    /// The key of a request that creates or retransmits a transaction (any method but
    /// ACK; a CANCEL is its own transaction).
    pub fn for_request(request: &Request) -> Option<ServerKey> {
        ServerKey::with_method(request, request.method.clone(), request.common.to.tag())
    }

    /// The INVITE transaction keys an ACK may belong to, most specific first. With an
    /// RFC 3261 branch there is one. Under RFC 2543 the ACK's To tag is the tag of the
    /// response, and the INVITE carried either that tag (a re-INVITE) or none (an
    /// initial INVITE answered with a new tag), so both are candidates; the caller
    /// confirms the match against the tag the transaction sent.
    pub fn ack_candidates(ack: &Request) -> Vec<ServerKey> {
        let tag = ack.common.to.tag();
        let mut keys: Vec<ServerKey> = ServerKey::with_method(ack, Method::Invite, tag)
            .into_iter()
            .collect();
        if tag.is_some() {
            if let Some(k @ ServerKey::Rfc2543(_)) =
                ServerKey::with_method(ack, Method::Invite, None)
            {
                keys.push(k);
            }
        }
        keys
    }

    /// The key of the INVITE transaction a CANCEL targets (§9.2: the matching procedure
    /// of §17.2.3 applied as if the CANCEL were the INVITE; §9.1 makes the CANCEL's
    /// Request-URI, Call-ID, From, To, CSeq number and top Via equal to the INVITE's).
    pub fn cancel_target(cancel: &Request) -> Option<ServerKey> {
        ServerKey::with_method(cancel, Method::Invite, cancel.common.to.tag())
    }

    /// True for an RFC 2543 key, where an ACK's To tag must be checked.
    pub fn is_rfc2543(&self) -> bool {
        matches!(self, ServerKey::Rfc2543(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::testutil::*;
    use crate::wire::Host;

    #[test]
    fn client_key_is_branch_and_method() {
        let invite = invite_request("z9hG4bK-one");
        let key = ClientKey::for_request(&invite).unwrap();
        assert_eq!(key.branch, "z9hG4bK-one");
        assert_eq!(
            key,
            ClientKey {
                branch: "z9hG4bK-one".into(),
                method: Method::Invite
            }
        );
        assert_ne!(
            key,
            ClientKey {
                branch: "z9hG4bK-one".into(),
                method: Method::Cancel
            }
        );
        assert_ne!(
            key,
            ClientKey {
                branch: "z9hG4bK-two".into(),
                method: Method::Invite
            }
        );
        let ok = invite.response(200, None, Some("b"));
        assert_eq!(ClientKey::for_response(&ok), Some(key));
        // An extension method is kept as written (methods are case-sensitive).
        let ext = Method::Extension("Frob".into());
        assert_ne!(
            ClientKey {
                branch: "z9hG4bK-x".into(),
                method: ext
            },
            ClientKey {
                branch: "z9hG4bK-x".into(),
                method: Method::Extension("FROB".into())
            }
        );
    }

    #[test]
    fn server_key_compares_sent_by_by_value_and_host_names_without_case() {
        let invite = invite_request("z9hG4bK-one");
        let key = ServerKey::for_request(&invite).unwrap();
        assert!(!key.is_rfc2543());
        let mut upper = invite.clone();
        upper.common.via[0].sent_by.host = Host::Name("PC33.A.Example.COM".into());
        assert_eq!(ServerKey::for_request(&upper).unwrap(), key);
        let mut no_port = invite.clone();
        no_port.common.via[0].sent_by.port = None;
        assert_ne!(ServerKey::for_request(&no_port).unwrap(), key);
        let mut v4 = invite.clone();
        v4.common.via[0].sent_by.host = Host::V4("192.0.2.1".parse().unwrap());
        let mut v4_name = invite.clone();
        v4_name.common.via[0].sent_by.host = Host::Name("192.0.2.1".into());
        assert_ne!(
            ServerKey::for_request(&v4).unwrap(),
            ServerKey::for_request(&v4_name).unwrap()
        );
        // An ACK and a CANCEL find the INVITE's transaction; the CANCEL has its own.
        let ack = ack_for(&invite, "b");
        assert_eq!(ServerKey::ack_candidates(&ack), vec![key.clone()]);
        let cancel = cancel_for(&invite);
        assert_eq!(ServerKey::cancel_target(&cancel), Some(key.clone()));
        assert_ne!(ServerKey::for_request(&cancel), Some(key));
    }
}
