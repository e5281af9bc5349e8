//! Plain HTTP polling at `GET /api/events/poll?client_id=&after=&wait=&limit=`.
//!
//! For clients behind proxies that break both WebSocket and streaming responses. Each request
//! reads the journal after the cursor; with `wait`, an empty answer is held until an event
//! arrives (long poll, capped at `poll_max_wait_s`). The server also remembers each client's
//! cursor, so `after` may be omitted on later requests — but a client that sends `after`
//! always gets exactly what follows it, which is what makes retries after a lost response safe.
//! `next_cursor` is `<epoch>:<id>`, so a client that stores it and sends it back as `after`
//! notices a recreated or restored journal (`resync`); a bare id is accepted but cannot.
//!
//! A poll client counts as connected while it keeps polling; one not seen for
//! `poll_client_ttl_s` is dropped from the registry by [`sweep`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use cmem_wire::Transport;
use serde::Serialize;
use serde_json::value::RawValue;

use super::{conn_meta, workspaces_for};
use crate::access::auth::Identity;
use crate::app::App;
use crate::clock::now_rfc3339;
use crate::envelope::Cursor;
use crate::http::{ApiError, number_param, parse_cursor, query_params};
use crate::hub::Hub;
use crate::hub::registry::Conn;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Serialize)]
struct PollAnswer<'a> {
    success: bool,
    client_id: &'a str,
    events: Vec<&'a RawValue>,
    /// `<epoch>:<id>`: send it back as `after` and a new journal is noticed (`resync`).
    next_cursor: String,
    /// The bare id of `next_cursor`.
    next_id: u64,
    epoch: &'a str,
    timestamp: String,
    polling_interval_ms: u64,
}

fn valid_client_id(id: &str) -> bool {
    crate::envelope::is_identifier(id, 128)
}

/// `GET /api/events/poll`
pub async fn poll(
    State(app): State<App>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let q = query_params(
        uri.query(),
        &["client_id", "after", "epoch", "wait", "limit", "workspaces"],
    )?;
    let client_id = q
        .get("client_id")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(
                "client_id is required: pick a stable id per client, e.g. ?client_id=dashboard-1",
            )
        })?;
    if !valid_client_id(client_id) {
        return Err(ApiError::bad_request(
            "client_id must be 1-128 characters of letters, digits, _ - . :",
        ));
    }
    let after = parse_cursor(
        "after",
        q.get("after").map(String::as_str),
        q.get("epoch").map(String::as_str),
    )?;
    let wait_s: u64 = number_param(&q, "wait", 0)?.unwrap_or(0);
    let wait = Duration::from_secs(wait_s.min(app.config.poll_max_wait_s));
    let limit: usize = number_param(&q, "limit", 1)?.unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be from 1 to {MAX_LIMIT}"
        )));
    }
    let workspaces = workspaces_for(&identity, q.get("workspaces").map(String::as_str))?;

    // Find or create this client's registry entry. A client id belongs to the identity that
    // made it: a user's ids live under their user id, so nobody can take (or block) another
    // user's client id, however well they know it.
    let key = match identity.user_id() {
        Some(uid) => format!("{uid}:{client_id}"),
        None => client_id.to_string(),
    };
    let (conn, is_new) = match app.hub.registry.get(&key) {
        // a client id belongs to the user who first used it: nobody else may read its cursor
        Some(c)
            if c.transport() == Transport::Poll && c.user.as_deref() != identity.user_name() =>
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("client_id `{client_id}` belongs to another user; pick another"),
            ));
        }
        Some(c) if c.transport() == Transport::Poll => (c, false),
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("client_id `{client_id}` is in use by another transport's connection"),
            ));
        }
        None => {
            let meta = conn_meta(&headers, Some(remote), workspaces, &identity);
            match app
                .hub
                .registry
                .register(key.clone(), Transport::Poll, meta)
            {
                Some(c) => (c, true),
                // lost a race with a concurrent first request of the same client
                None => (
                    app.hub.registry.get(&key).ok_or_else(|| {
                        ApiError::new(StatusCode::CONFLICT, "client_id registration raced; retry")
                    })?,
                    false,
                ),
            }
        }
    };
    conn.touch();

    // The same resume path every transport takes: a subscription from the cursor (a
    // `resync` if the journal cannot honour it), filled with one page or waited on.
    let mut sub = if is_new {
        app.hub.subscribe(conn.clone(), after).await?
    } else {
        let cursor = after.unwrap_or(Cursor {
            id: conn.cursor(),
            epoch: None,
        });
        app.hub.resume(conn.clone(), cursor).await?
    };
    let until = tokio::time::Instant::now() + wait;
    /// Marks the connection as waiting while the request is held (also when it is dropped).
    struct Waiting<'a>(&'a Conn);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.0.set_waiting(false);
        }
    }
    conn.set_waiting(!wait.is_zero());
    let held = Waiting(&conn);
    let events = sub
        .fill(limit, until)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    drop(held);
    let next_cursor = sub.position();
    drop(sub);
    conn.set_cursor(next_cursor);
    conn.touch();
    let answer = PollAnswer {
        success: true,
        client_id,
        events: events.iter().map(|e| &*e.body).collect(),
        next_cursor: app.hub.cursor_text(next_cursor),
        next_id: next_cursor,
        epoch: app.hub.journal.epoch(),
        timestamp: now_rfc3339(),
        polling_interval_ms: app.config.poll_interval_ms,
    };
    let body = serde_json::to_string(&answer)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

/// Drops poll clients that stopped polling. Runs until shutdown.
pub async fn sweep(hub: Arc<Hub>, ttl_s: u64) {
    let ttl_ms = (ttl_s * 1000) as i64;
    let mut tick = tokio::time::interval(
        Duration::from_secs(1).max(Duration::from_millis(ttl_ms as u64 / 10)),
    );
    loop {
        tokio::select! {
            _ = hub.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = chrono::Utc::now().timestamp_millis();
        for c in hub.registry.all() {
            if c.transport() == Transport::Poll && now - c.last_activity_ms() > ttl_ms {
                hub.registry.remove(&c.id, "poll_timeout");
            }
        }
    }
}
