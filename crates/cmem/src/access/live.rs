//! Keeps live connections in step with the teams database, whoever changed it.
//!
//! The admin HTTP API acts on connections as it changes the database, but the `cmem user |
//! token | workspace` commands are another process: they only write `teams.sqlite3` (and in a
//! cluster, another node's change arrives through the team log). So the
//! server watches the database (SQLite's `data_version`, which moves when another connection
//! commits, checked every [`WATCH_EVERY`]) and, after any change, checks every live connection
//! against it: a connection whose token was revoked or whose user was removed is closed, one
//! that holds the open identity is closed once users exist (it was opened before the first
//! user, with every right), and one whose user left a workspace stops receiving it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::Access;
use crate::hub::Hub;
use crate::teams::TokenHolder;

/// How often the database is checked for changes made by other processes.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// What a reconciliation did.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Reconciled {
    pub closed: usize,
    pub left: usize,
}

/// Checks every live connection against the teams database and acts on the differences.
/// A database that cannot answer closes nothing and is logged: the next change retries.
pub fn reconcile(teams: &Access, hub: &Hub) -> Reconciled {
    let mut done = Reconciled::default();
    let users_exist = teams.users_exist_now();
    let mut holders: HashMap<String, Option<TokenHolder>> = HashMap::new();
    for c in hub.registry.all() {
        let Some(token_id) = c.token_id.clone() else {
            if users_exist {
                hub.registry
                    .close(&c, cmem_wire::Code::AuthenticationRequired.as_str());
                done.closed += 1;
            }
            continue;
        };
        let holder = holders
            .entry(token_id.clone())
            .or_insert_with(|| match teams.token_holder(&token_id) {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot check connections against the teams database");
                    None
                }
            });
        match holder {
            None => {}
            Some(TokenHolder::Revoked) => {
                hub.registry
                    .close(&c, cmem_wire::Code::TokenRevoked.as_str());
                done.closed += 1;
            }
            Some(TokenHolder::Gone) => {
                hub.registry
                    .close(&c, cmem_wire::Code::UserRemoved.as_str());
                done.closed += 1;
            }
            Some(TokenHolder::Active(user)) => {
                for w in c.workspaces() {
                    if !user.workspaces.contains(&w) && c.leave(&w) {
                        done.left += 1;
                    }
                }
            }
        }
    }
    if done != Reconciled::default() {
        tracing::info!(
            closed = done.closed,
            left = done.left,
            "connections brought in line with the teams database"
        );
    }
    done
}

/// Watches the database until shutdown and reconciles after every change made elsewhere:
/// another process (SQLite's `data_version`, checked every [`WATCH_EVERY`]) or, in a cluster,
/// another node (applied from the team log, which wakes this at once).
pub async fn watch(teams: Arc<Access>, hub: Arc<Hub>) {
    let version = |t: &Access| {
        t.store()
            .data_version()
            .ok()
            .map(|v| (v, t.store().access_changes()))
    };
    let mut seen = version(&teams);
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = hub.shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = teams.store().access_changed() => {}
        }
        let Some(now) = version(&teams) else {
            tracing::warn!("cannot watch the teams database");
            continue;
        };
        if Some(now) != seen {
            seen = Some(now);
            let (t, h) = (teams.clone(), hub.clone());
            let _ = tokio::task::spawn_blocking(move || reconcile(&t, &h)).await;
        }
    }
}
