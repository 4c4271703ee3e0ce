//! The splice's SYN options, routing rules and per-segment rewrite on arbitrary bytes.
//! The body is `dataplane::splice::fuzz::fuzz_entry`, which the stable proptest suite
//! also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dataplane::splice::fuzz::fuzz_entry(data);
});
