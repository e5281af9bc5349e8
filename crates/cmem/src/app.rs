//! The application state: one value that holds every feature, handed to every HTTP handler and
//! transport (the axum router's state). Features do not know it: each gets only what it uses
//! (the hub to publish through, its own options), so they stay below it and testable alone.
//!
//! Built once by [`server`](crate::server) at start; everything in it is shared (`Arc`).

use std::sync::Arc;

use crate::access::Access;
use crate::collab::Collab;
use crate::config::{Config, JournalSync, PlatformProfile, Sources};
use crate::hub::{Hub, HubOptions};
use crate::journal::JournalOptions;
use crate::journal::jetstream::JetStreamOptions;
use crate::memory::Memory;
use crate::metrics::Metrics;
use crate::monitor::Monitor;
use crate::teams::TeamStore;
use crate::teams::cluster::ClusterOptions;

/// Everything a request may need.
pub struct AppState {
    /// The configuration in force (with the port actually bound).
    pub config: Arc<Config>,
    /// Journal, connections, fan-out, shutdown.
    pub hub: Arc<Hub>,
    /// Users, tokens, workspaces and members: who may connect and see what.
    pub access: Access,
    /// Messages, notifications, presence, shared documents (and the team store beneath).
    pub collab: Arc<Collab>,
    /// The index of the data folder, search and its history.
    pub memory: Arc<Memory>,
    /// System status (CPU, memory, disk), published on a timer.
    pub monitor: Arc<Monitor>,
    /// The Prometheus registry behind `/metrics`.
    pub metrics: Arc<Metrics>,
    /// How the configuration was assembled at start.
    pub startup: Arc<Startup>,
}

/// The shared handle handlers receive.
pub type App = Arc<AppState>;

/// How the configuration in force was assembled at start.
#[derive(Debug)]
pub struct Startup {
    pub sources: Sources,
    pub profile: PlatformProfile,
}

/// The hub's part of the configuration.
pub fn hub_options(config: &Config) -> HubOptions {
    HubOptions {
        state_dir: config.state_dir(),
        queue_bound: config.queue_bound,
        journal: JournalOptions {
            full_sync: config.journal_sync == JournalSync::Full,
            batch_max: config.journal_batch_max,
            retention_max_events: config.retention_max_events,
            retention_max_age_s: config.retention_max_age_s,
        },
        cluster: cluster_on(config).then(|| JetStreamOptions {
            url: config.cluster_nats_url.trim().to_string(),
            stream: config.cluster_stream.clone(),
            replicas: config.cluster_replicas,
            retention_max_events: config.retention_max_events,
            retention_max_age_s: config.retention_max_age_s,
        }),
    }
}

fn cluster_on(config: &Config) -> bool {
    !config.cluster_nats_url.trim().is_empty()
}

/// Where a cluster keeps its team state (`None` on a single node).
fn teams_cluster(config: &Config) -> Option<ClusterOptions> {
    cluster_on(config).then(|| ClusterOptions {
        url: config.cluster_nats_url.trim().to_string(),
        stream: config.cluster_stream.clone(),
        replicas: config.cluster_replicas,
    })
}

/// Opens the team store as configured: `teams.sqlite3`, or a cluster's team log.
pub fn open_teams(config: &Config) -> Result<TeamStore, crate::teams::TeamsError> {
    TeamStore::open_with(&config.state_dir(), teams_cluster(config).as_ref())
}

/// Team state over `store`: who may do what, and collaboration.
pub fn team_parts(store: TeamStore) -> (Access, Arc<Collab>) {
    let store = Arc::new(store);
    let access = Access::new(store.clone());
    let collab = Arc::new(Collab::new(store, access.clone()));
    (access, collab)
}
