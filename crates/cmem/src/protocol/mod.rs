//! The wire protocols of the Socket.IO transport, as data: Engine.IO 4 packets and payloads
//! (`eio`) and Socket.IO 5 packets with binary attachments (`sio`). Pure encoding and decoding,
//! no I/O, so every rule is tested here packet by packet and fuzzed; the transport that speaks
//! them sits above. Written for this server rather than taken from a general library so that
//! the transport can own its memory and its control flow (see issue 12 in the project's notes:
//! the per-connection cost and the protocol details the Socket.IO transport must get right).
//!
//! Both parsers follow the reference implementations (engine.io-parser 5, socket.io-parser 4)
//! in what they accept and refuse, and bound what a client can make them hold.

pub mod eio;
pub mod sio;
