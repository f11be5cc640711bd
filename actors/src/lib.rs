//! softswitch-actors: the transaction-user (L4) actors of the softswitch.
//!
//! The actors the design names, one per file, each with its messages at the top:
//! [`registrar::Registrar`] per AOR and the [`location::Location`] service (RFC 3261 §10),
//! and, with the call issue, `CallController` per call with one `Leg` per call leg and one
//! `Dialog` per dialog (RFC 3261 §12–§15), and [`billing`]'s writer (one CDR per call
//! attempt, on disk before the attempt counts as ended). The two files the switch owns,
//! the CDR file and the binding [`journal`], are each locked against a second process
//! ([`lock`]). [`sdp`] reads SDP bodies (hold, origin version), the only user of sdp-rs.
//!
//! The vocabulary shared with the root crate is [`port`]: plain data, no SIP syntax. The
//! pure rules live beside the actors that execute them ([`binding`] for the registrar), so
//! unit tests drive them without actix. The direction is fixed: the root crate depends on
//! this one, never the reverse.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod billing;
pub mod binding;
pub mod call;
pub mod journal;
pub mod location;
pub mod lock;
pub mod port;
pub mod registrar;
pub mod sdp;
