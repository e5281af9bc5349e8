//! The HTTP API: search, system, configuration, events, team and admin endpoints.
//!
//! Handlers here are producers (they call [`Hub::publish`](crate::hub::Hub::publish) or a
//! feature that does) or read-only views; none of them writes to a client socket. They answer
//! through [`http`](crate::http) and receive the [`AppState`](crate::app::AppState); the router
//! that mounts them is in [`server`](crate::server).

pub mod admin;
pub mod config;
pub mod diagnostics;
pub mod events;
pub mod search;
pub mod system;
pub mod workspaces;
