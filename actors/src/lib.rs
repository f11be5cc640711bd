//! softswitch-actors: the transaction-user (L4) actors of the softswitch.
//!
//! This crate will hold the actors the design names, one per file, each with its messages
//! at the top: `Registrar` per AOR and `Location` (RFC 3261 §10), `CallController` per
//! call with one `Leg` per call leg and one `Dialog` per dialog (RFC 3261 §12–§15), and
//! `Billing` (one CDR per call). `sdp.rs` will be the only user of sdp-rs. Its vocabulary
//! with the root crate (inbound events, outbound intents) goes in `port.rs`; the root
//! crate's `bridge.rs` alone translates.
//!
//! Today the SIP core answers every request itself (`softswitch::endpoint`); the
//! registrar and call issues move REGISTER and INVITE handling here. The direction is
//! fixed: the root crate depends on this one, never the reverse.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod journal;
