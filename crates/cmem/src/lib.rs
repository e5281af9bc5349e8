//! Collective Memory: a local-first team memory server whose real-time layer never loses an
//! event silently.
//!
//! The crate follows one shape, visible in its module tree:
//!
//! ```text
//! producers (api, memory, monitor) ------------publish--> hub --append--> journal
//!                                                          hub <--committed events-- journal
//!                                                          hub --fan-out--> transports (socketio, sse, poll)
//! ```
//!
//! Start reading at [`hub`]: it owns `publish`, the fan-out channel and the resume algorithm that
//! every transport shares. `ARCHITECTURE.md` at the repository root is the map.

pub mod api;
pub mod app;
pub mod clock;
pub mod config;
pub mod envelope;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod hub;
pub mod journal;
pub mod memory;
pub mod metrics;
pub mod monitor;
pub mod net;
pub mod ops;
pub mod server;
pub mod teams;
pub mod transports;
