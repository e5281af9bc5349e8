//! Real-time diagnostics: what is configured, who is connected, how the journal stands, why
//! connections closed, and which transport errors happened (with OS error codes).

use axum::extract::State;
use axum::response::Response;
use serde_json::json;

use crate::app::App;
use crate::http::ok;

/// `GET /api/websocket/status`
pub async fn status(State(app): State<App>) -> Response {
    let j = app.hub.journal.info();
    let engine = app.hub.journal.state().await;
    let c = &app.config;
    let tokens = app.access.users_exist();
    let exposed = !c.bind.ip().is_loopback();
    // "closed" cannot be seen here (a closed server refuses this request too); it is named so
    // the three states are one list
    let mode = match (tokens, c.open_allowed()) {
        (true, _) => "tokens",
        (false, true) => "open",
        (false, false) => "closed",
    };
    ok(json!({
        "node": c.node(),
        "config": &**c,
        "platform": std::env::consts::OS,
        "auth": {
            "mode": mode,
            "insecure": c.insecure,
            "warning": (exposed && !tokens && c.insecure).then_some(
                "--insecure: no users exist and the server listens beyond loopback; anyone who can reach it can read and publish"
            ),
        },
        "connections": {
            "total": app.hub.registry.len(),
            "by_transport": app.hub.registry.by_transport(),
            "opened_since_start": app.hub.registry.opened_total(),
            "clients": app.hub.registry.view(),
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
            "engine": engine,
        },
        // the nodes seen alive and the team log (null on a single node)
        "cluster": app.collab.cluster_state(),
        "documents_loaded": app.collab.docs_loaded(),
        "events_published": app.hub.published_total(),
        "catch_ups_from_journal": app.hub.catch_ups_total(),
        "closes_by_reason": app.hub.registry.closes_by_reason(),
        "errors_total": app.hub.registry.errors_total(),
        "errors_by_class": app.hub.registry.errors_by_class(),
        "uptime_s": app.hub.uptime_s(),
    }))
}

/// `GET /api/websocket/errors`
pub async fn errors(State(app): State<App>) -> Response {
    let errors = app.hub.registry.errors();
    ok(json!({
        "count": errors.len(),
        "total_since_start": app.hub.registry.errors_total(),
        "by_class": app.hub.registry.errors_by_class(),
        "errors": errors,
    }))
}

/// `POST /api/websocket/clear-errors`
pub async fn clear_errors(State(app): State<App>) -> Response {
    let cleared = app.hub.registry.clear_errors();
    ok(json!({ "cleared": cleared }))
}
