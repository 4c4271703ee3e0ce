//! Every packet parser, option iterator, flow key and `answer_local` on arbitrary bytes.
//! The body is `dataplane::packet::fuzz_entry`, which the stable proptest suite also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dataplane::packet::fuzz_entry(data);
});
