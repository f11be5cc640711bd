//! L2: framing, parsing and the message model (RFC 3261 §7, §18.3, §19, §20, §25).

pub mod types;

pub use types::*;
