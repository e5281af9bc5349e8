//! Fuzz target: `cmem::fuzzing::websocket_frames` (see that module for what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cmem::fuzzing::websocket_frames(data);
});
