//! What members do together: messages and notifications (`messages.rs`), who is online
//! (`presence.rs`), shared documents (`docs.rs`, with `yjs_shape.rs` bounding what yrs
//! decodes), and the budgets that keep any one member from flooding the others (`rate.rs`).
//! Producers: each stores in the team store, then publishes through the hub. Who may do it is
//! asked of `access`.

pub mod docs;
pub mod messages;
pub mod presence;
pub mod rate;
pub mod yjs_shape;

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use crate::access::Access;
use crate::teams::TeamStore;

/// Messages, notifications, presence and documents, over the team store.
pub struct Collab {
    store: Arc<TeamStore>,
    access: Access,
    /// Message budgets of HTTP senders, by user (HTTP has no connection to hang them on).
    http_budgets: rate::Budgets,
    /// Journal events a member's HTTP and MCP requests may append, per user id.
    event_budgets: rate::Budgets,
    /// Longest message or notification body, in characters (`team_message_max_chars`).
    message_max_chars: AtomicU64,
    /// Messages being published by a send under way in this process (see `messages::send`).
    publishing: Mutex<HashSet<i64>>,
    /// Shared documents loaded in memory.
    docs: Arc<docs::Docs>,
    /// Who is online on each node of a cluster (empty on a single node).
    board: RwLock<presence::Board>,
}

impl Collab {
    /// Collaboration over `store`, asking `access` who may do what.
    pub fn new(store: Arc<TeamStore>, access: Access) -> Collab {
        let docs = Arc::new(docs::Docs::default());
        // a document another node changed is read again from storage when next asked for
        let loaded = docs.clone();
        store.on_doc_applied(Box::new(move |workspace, doc| {
            loaded.unload(workspace, doc)
        }));
        Collab {
            store,
            access,
            http_budgets: rate::Budgets::default(),
            event_budgets: rate::Budgets::default(),
            message_max_chars: AtomicU64::new(4000),
            publishing: Mutex::new(HashSet::new()),
            docs,
            board: RwLock::default(),
        }
    }

    /// Who may do what.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// The team store beneath.
    pub fn store(&self) -> &Arc<TeamStore> {
        &self.store
    }

    /// The live nodes of a cluster by name, as their presence announcements say (empty on a
    /// single node).
    pub fn cluster_nodes(&self) -> Vec<String> {
        self.board
            .read()
            .map(|b| b.node_names())
            .unwrap_or_default()
    }

    /// The cluster as this node sees it, for status pages (`None` on a single node).
    pub fn cluster_state(&self) -> Option<serde_json::Value> {
        let teams = self.store.engine_state()?;
        Some(serde_json::json!({"nodes": self.cluster_nodes(), "teams": teams}))
    }
}

/// Team state in `dir`, for tests: the store, who may do what, and collaboration over it.
#[cfg(test)]
pub(crate) fn for_tests(dir: &std::path::Path) -> Collab {
    let store = Arc::new(TeamStore::open(dir).expect("a team store in a temporary folder"));
    Collab::new(store.clone(), Access::new(store))
}

#[cfg(test)]
mod tests;
