//! Tools for the person running the server, not for its clients: `cmem firewall` (the
//! Windows firewall rule for the configured port) and `cmem doctor` (what is wrong with this
//! machine or this network, and which transports get through).

pub mod doctor;
pub mod firewall;
