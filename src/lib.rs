//! softswitch: an actor-based SIP B2BUA.
//!
//! Layers (bytes flow up, intents flow down; see ARCHITECTURE.md):
//! * L1 [`transport`]: UDP and TCP sockets.
//! * L2 [`wire`]: framing, limits, parsing, the message model.
//! * L3 [`txn`]: the RFC 3261 §17 transaction layer, sans-IO.
//! * [`driver`]: the one task that owns L3 and its timer; [`endpoint`]: admission checks
//!   and what the switch answers itself.
//! * [`registrar`]: the SIP side of REGISTER (RFC 3261 §10.3); its actors, the location
//!   service and the binding journal are in the `softswitch-actors` crate. [`directory`]:
//!   the subscribers and their credentials.
//! * [`auth`]: SIP digest authentication (RFC 3261 §22, RFC 7616, RFC 8760), sans-IO.
//! * L5 [`config`], [`metrics`], [`http`], [`server`]: the switch's outside.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod call;
pub mod config;
pub mod directory;
pub mod driver;
pub mod endpoint;
pub mod http;
pub mod mem;
pub mod metrics;
pub mod registrar;
pub mod server;
pub mod transport;
pub mod txn;
pub mod wire;
