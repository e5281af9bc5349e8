//! Fuzz target: `cmem::fuzzing::socketio_auth` (see that module for what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cmem::fuzzing::socketio_auth(data);
});
