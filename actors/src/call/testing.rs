//! Fixtures of the call machine's unit tests (`midcall.rs`, `session.rs`).

use super::*;

pub(super) const T: CallTimers = CallTimers {
    ring: Duration::from_secs(20),
    ack_wait: Duration::from_secs(32),
    bye_wait: Duration::from_secs(32),
};
pub(super) const B: LegId = LegId(1);

pub(super) fn at(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
}

/// A connected call: A offered, B answered, A ACKed.
pub(super) fn connected() -> CallMachine {
    let mut m = CallMachine::new(std::sync::Arc::new(T));
    let t = at(0);
    m.handle(
        Event::Start {
            targets: 1,
            offer: Some(b"v=0".to_vec()),
        },
        t,
    );
    m.handle(
        Event::Final {
            leg: B,
            status: 200,
            sdp: Some(b"v=0".to_vec()),
        },
        t,
    );
    m.handle(Event::AckFromA { sdp: None }, t);
    assert_eq!(m.phase, Phase::Connected);
    m
}
