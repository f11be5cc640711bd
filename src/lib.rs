//! softswitch: an actor-based SIP B2BUA.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod http;
pub mod metrics;
pub mod transport;
pub mod txn;
pub mod wire;
