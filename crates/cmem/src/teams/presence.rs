//! Presence: a producer that turns connections joining and leaving workspaces into
//! `member_joined` / `member_left` events. A user counts once per workspace however many tabs
//! and transports they use: the first connection publishes `member_joined`, the last one to go
//! (closed, dropped, timed out as a poll client) publishes `member_left`.
//!
//! The registry reports each change on a channel; this task is the only owner of the counts,
//! so concurrent connects and disconnects cannot race each other.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::envelope::{NewEvent, Scope};
use crate::hub::Hub;
use crate::hub::registry::PresenceChange;

/// Runs until shutdown, publishing presence changes in the order they happened.
pub async fn run(hub: Arc<Hub>, mut changes: UnboundedReceiver<PresenceChange>) {
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    loop {
        let change = tokio::select! {
            _ = hub.shutdown.cancelled() => return,
            c = changes.recv() => match c { Some(c) => c, None => return },
        };
        let (kind, user, workspace) = match change {
            PresenceChange::Joined { user, workspace } => {
                let n = counts.entry((workspace.clone(), user.clone())).or_insert(0);
                *n += 1;
                if *n != 1 {
                    continue;
                }
                ("member_joined", user, workspace)
            }
            PresenceChange::Left { user, workspace } => {
                let key = (workspace.clone(), user.clone());
                match counts.get_mut(&key) {
                    Some(n) if *n > 1 => {
                        *n -= 1;
                        continue;
                    }
                    Some(_) => {
                        counts.remove(&key);
                    }
                    None => continue,
                }
                ("member_left", user, workspace)
            }
        };
        let event = NewEvent::new(
            kind,
            Scope::Workspace(workspace.clone()),
            json!({"workspace": workspace, "user": user}),
        );
        if let Err(e) = hub.publish(vec![event]).await {
            tracing::warn!(error = %e, kind, "could not publish presence");
        }
    }
}

/// Who is online in a workspace, from the registry: each user once, with their connections.
pub fn online(hub: &Hub, workspace: &str) -> Vec<serde_json::Value> {
    let mut by_user: std::collections::BTreeMap<String, Vec<&'static str>> = Default::default();
    for c in hub.registry.all() {
        if let Some(u) = &c.user
            && c.workspaces().iter().any(|w| w == workspace)
        {
            by_user
                .entry(u.clone())
                .or_default()
                .push(c.transport().name());
        }
    }
    by_user
        .into_iter()
        .map(|(user, transports)| {
            json!({"user": user, "connections": transports.len(), "transports": transports})
        })
        .collect()
}
