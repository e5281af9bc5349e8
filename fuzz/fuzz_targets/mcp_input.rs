//! Fuzz target: `cmem::fuzzing::mcp_input` (see that module for what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        cmem::fuzzing::mcp_input(s);
    }
});
