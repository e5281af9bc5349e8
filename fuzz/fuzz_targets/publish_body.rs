//! Fuzz target: `cmem::fuzzing::publish_body` (see that module for what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cmem::fuzzing::publish_body(data);
});
