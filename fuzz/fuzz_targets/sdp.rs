//! Feeds arbitrary bytes to the SDP reader (`softswitch_actors::sdp::read`, the one
//! module that reads SDP). The property is STYLE.md §1 invariant 5: nothing reachable
//! from network input panics. libfuzzer-sys aborts on any panic, also one the module's
//! own guard around sdp-rs would catch, so an input that gets past the pre-pass to an
//! sdp-rs panic is a crash here; the assertion says so in the summary too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use softswitch_actors::sdp;

fuzz_target!(|data: &[u8]| {
    let summary = sdp::read(data);
    assert!(summary.is_none_or(|s| s.hold.is_none() || s.streams > 0));
    assert_eq!(sdp::panics_caught(), 0, "sdp-rs panicked behind the guard");
});
