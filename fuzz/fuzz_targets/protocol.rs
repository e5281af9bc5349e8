//! Fuzz target: `cmem::fuzzing::protocol` (see that module for what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cmem::fuzzing::protocol(data);
});
