//! Fuzz target: `cmem::fuzzing::yjs` (see that module for what it checks).
//!
//! cmem catches the panics yrs raises on some inputs (a debug assertion on client ids), as the
//! server must; libfuzzer-sys's panic hook would abort on those before they are caught, so this
//! target installs one that only prints. A panic nobody catches still aborts the run (the
//! harness checks for it after the call).
#![no_main]

static QUIET: std::sync::Once = std::sync::Once::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    QUIET.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("{info}"))));
    cmem::fuzzing::yjs(data);
});
