//! Transports: the ways a client receives the journal. All three pull from a
//! [`Subscription`](crate::hub::Subscription) (or, for poll, from the journal directly) and carry
//! the same envelope with the same id. None of them decides *what* a client sees — the hub does.

pub mod client_events;
pub mod poll;
pub mod socketio;
pub mod sse;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::HeaderMap;

use crate::access::auth::Identity;
use crate::envelope::Scope;
use crate::http::ApiError;
use crate::hub::registry::ConnMeta;

/// The workspaces a connection subscribes to: parsed from the request, then checked against
/// the identity's memberships (403 for a workspace the user is not in).
pub(crate) fn workspaces_for(
    identity: &Identity,
    raw: Option<&str>,
) -> Result<Vec<String>, ApiError> {
    let requested = parse_workspaces(raw).map_err(ApiError::bad_request)?;
    identity.workspaces_for(requested).map_err(ApiError::from)
}

/// A connection id that is unique within this process and hard to guess.
pub(crate) fn new_conn_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{n:x}{nanos:08x}")
}

/// Who is connecting, from the request and its identity.
pub(crate) fn conn_meta(
    headers: &HeaderMap,
    remote: Option<SocketAddr>,
    workspaces: Vec<String>,
    identity: &Identity,
) -> ConnMeta {
    ConnMeta {
        user: identity.user_name().map(str::to_string),
        token_id: identity.token_id().map(str::to_string),
        user_id: identity.user_id().map(str::to_string),
        // an open server's local user is not an admin of anyone's scope: no user scopes exist
        admin: matches!(identity, Identity::User { user, .. } if user.admin),
        user_agent: headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .chars()
            .take(256)
            .collect(),
        remote_addr: remote.map(|a| a.to_string()).unwrap_or_default(),
        workspaces,
    }
}

/// Most workspaces one connection may subscribe to.
pub const MAX_WORKSPACES_PER_CONN: usize = 64;

/// Parses a comma-separated workspace list, checking each name.
pub(crate) fn parse_workspaces(raw: Option<&str>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for w in raw
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
    {
        match Scope::parse(&format!("workspace:{w}"))? {
            Scope::Workspace(name) => out.push(name),
            _ => return Err(format!("workspace `{w}` is not a valid name")),
        }
    }
    if out.len() > MAX_WORKSPACES_PER_CONN {
        return Err(format!(
            "at most {MAX_WORKSPACES_PER_CONN} workspaces per connection"
        ));
    }
    Ok(out)
}
