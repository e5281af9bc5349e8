//! The network edge, below HTTP: how the listening socket is made and every accepted socket
//! tuned (`socket`), how many sockets one address may hold (`limit`), cutting clients that stop reading (`stall`), and turning OS error codes
//! into a class, a cause in plain words and a fix (`classify`), the same on Windows and
//! elsewhere.

pub mod classify;
pub mod limit;
pub mod socket;
pub mod stall;

pub use stall::{StallFlag, StallGuard};
