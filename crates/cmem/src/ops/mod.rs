//! Tools for the person running the server, not for its clients: `cmem firewall` (the
//! Windows firewall rule for the configured port), `cmem doctor` (what is wrong with this
//! machine or this network, and which transports get through) and `cmem backup` / `cmem
//! restore` (a consistent copy of the state while the server runs; a restore starts a new
//! epoch), and `running`, where a folder's server records its address for those tools.

pub mod backup;
pub mod doctor;
pub mod firewall;
pub mod running;
