//! Feeds arbitrary bytes to the wire layer's entry point (framing, compact-name
//! normalising, parsing, and whatever round trip `fuzz_entry` checks). The property is
//! STYLE.md §1 invariant 5: nothing reachable from network input panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    softswitch::wire::fuzz_entry(data);
});
