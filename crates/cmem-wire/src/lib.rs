//! The wire format of Collective Memory, written once for everything that speaks it: the
//! server, the Rust client (`cmem-client`), the load generator (`cmem-bench`) and `cmem
//! doctor`. The JavaScript client mirrors the one part that is data, the table of codes, from
//! a file generated from [`codes`] (a test keeps it current).
//!
//! - [`eio`], [`sio`]: Engine.IO 4 and Socket.IO 5 packets, strict and bounded (the server
//!   fuzzes them); written for cmem rather than taken from a crate so that the server's
//!   transport owns its memory and control flow.
//! - [`cursor`], [`scope`]: where a client resumes, and who may see an event.
//! - [`transport`]: the four ways a client connects.
//! - [`sse`]: an incremental `text/event-stream` parser for clients.
//! - [`ws`]: WebSocket framing for the server, holding nothing between messages.
//! - [`codes`]: every refusal and close a client can get, with what it should do about it.
//!
//! Pure data and parsing: no I/O, no async runtime.

pub mod codes;
pub mod cursor;
pub mod eio;
pub mod scope;
pub mod sio;
pub mod sse;
pub mod transport;
pub mod ws;

pub use codes::{Action, Code, Refusal};
pub use cursor::Cursor;
pub use scope::{EVERY_USER, Scope, is_identifier};
pub use transport::Transport;
