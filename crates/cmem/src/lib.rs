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
//! Start reading at `hub`: it owns `publish`, the fan-out channel and the resume algorithm that
//! every transport shares. `ARCHITECTURE.md` at the repository root is the map.

pub mod access;
pub(crate) mod api;
pub(crate) mod app;
pub(crate) mod clock;
pub mod collab;
pub mod config;
pub mod engine;
pub(crate) mod envelope;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod http;
pub(crate) mod hub;
pub(crate) mod journal;
pub mod mcp;
pub mod memory;
pub(crate) mod metrics;
pub(crate) mod monitor;
pub(crate) mod nats;
pub mod net;
pub mod ops;
pub mod server;
pub mod teams;
#[cfg(test)]
pub(crate) mod testing;
pub(crate) mod transports;

pub use app::open_teams;
