//! Real-time diagnostics: what is configured, who is connected, how the journal stands, why
//! connections closed, and which transport errors happened (with OS error codes).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use serde_json::json;

use super::ok;
use crate::hub::Hub;

/// `GET /api/websocket/status`
pub async fn status(State(hub): State<Arc<Hub>>) -> Response {
    let j = hub.journal.info();
    let c = &hub.config;
    let tokens = hub.teams.users_exist();
    let exposed = !c.bind.ip().is_loopback();
    ok(json!({
        "config": &**c,
        "platform": std::env::consts::OS,
        "auth": {
            "mode": if tokens { "tokens" } else { "open" },
            "warning": (exposed && !tokens).then_some(
                "--insecure: no users exist and the server listens beyond loopback; anyone who can reach it can read and publish"
            ),
        },
        "connections": {
            "total": hub.registry.len(),
            "by_transport": hub.registry.by_transport(),
            "opened_since_start": hub.registry.opened_total(),
            "clients": hub.registry.view(),
        },
        "journal": {
            "epoch": j.epoch,
            "head": j.head,
            "oldest_retained_id": j.oldest,
            "retained": j.head + 1 - j.oldest,
            "appended_since_start": j.appended_since_start,
            "commits_since_start": j.commits_since_start,
            "retention": {
                "max_events": c.retention_max_events,
                "max_age_s": c.retention_max_age_s,
            },
            "path": j.path,
        },
        "documents_loaded": hub.teams.docs_loaded(),
        "events_published": hub.published_total(),
        "catch_ups_from_journal": hub.catch_ups_total(),
        "closes_by_reason": hub.registry.closes_by_reason(),
        "errors_total": hub.registry.errors_total(),
        "errors_by_class": hub.registry.errors_by_class(),
        "uptime_s": hub.uptime_s(),
    }))
}

/// `GET /api/websocket/errors`
pub async fn errors(State(hub): State<Arc<Hub>>) -> Response {
    let errors = hub.registry.errors();
    ok(json!({
        "count": errors.len(),
        "total_since_start": hub.registry.errors_total(),
        "by_class": hub.registry.errors_by_class(),
        "errors": errors,
    }))
}

/// `POST /api/websocket/clear-errors`
pub async fn clear_errors(State(hub): State<Arc<Hub>>) -> Response {
    let cleared = hub.registry.clear_errors();
    ok(json!({ "cleared": cleared }))
}
