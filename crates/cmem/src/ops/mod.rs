//! Tools for the person running the server, not for its clients: `cmem firewall` (the
//! Windows firewall rule for the configured port), `cmem doctor` (what is wrong with this
//! machine or this network, and which transports get through) and `cmem backup` / `cmem
//! restore` (a consistent copy of the state while the server runs; a restore starts a new
//! epoch).

pub mod backup;
pub mod doctor;
pub mod firewall;
