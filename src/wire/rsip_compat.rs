//! The one place rsip 0.4 is used: conversion of our messages into rsip's model, for code
//! that wants rsip's typed header API. See the parent module doc for why parsing is ours.
//!
//! Our serialiser writes long header names, one Via value per line, no folding and a
//! computed Content-Length, which is the subset rsip parses correctly; the conversion
//! fails (never panics) on what rsip cannot represent (extension methods, IPv6 hosts).

use super::types::{Message, Method};

/// Converts a message into rsip's model.
pub fn to_rsip(m: &Message) -> Result<rsip::SipMessage, rsip::Error> {
    rsip::SipMessage::try_from(m.to_bytes().as_ref())
}

/// Our method as rsip's, `None` for methods rsip has no variant for.
pub fn method_to_rsip(m: &Method) -> Option<rsip::Method> {
    Some(match m {
        Method::Invite => rsip::Method::Invite,
        Method::Ack => rsip::Method::Ack,
        Method::Bye => rsip::Method::Bye,
        Method::Cancel => rsip::Method::Cancel,
        Method::Register => rsip::Method::Register,
        Method::Options => rsip::Method::Options,
        Method::Info => rsip::Method::Info,
        Method::Prack => rsip::Method::PRack,
        Method::Update => rsip::Method::Update,
        Method::Subscribe => rsip::Method::Subscribe,
        Method::Notify => rsip::Method::Notify,
        Method::Refer => rsip::Method::Refer,
        Method::Message => rsip::Method::Message,
        Method::Publish => rsip::Method::Publish,
        Method::Extension(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse_message;

    #[test]
    fn compact_form_becomes_rsip_readable() {
        let head = b"INVITE sip:bob@example.com SIP/2.0\r\nv: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nf: <sip:a@example.com>;tag=1\r\nt: <sip:bob@example.com>\r\ni: abc\r\nCSeq: 1 INVITE\r\nl: 0\r\n";
        let m = parse_message(head, b"").unwrap();
        let r = to_rsip(&m).unwrap();
        match r {
            rsip::SipMessage::Request(req) => {
                use rsip::prelude::*;
                assert_eq!(req.call_id_header().unwrap().value(), "abc");
                assert!(req.via_header().is_ok());
            }
            rsip::SipMessage::Response(_) => panic!("response"),
        }
        assert_eq!(method_to_rsip(&Method::Invite), Some(rsip::Method::Invite));
    }
}
