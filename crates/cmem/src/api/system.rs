//! `/system/*` and `/metrics`: indexing state and re-index, the status the monitor publishes,
//! cache clearing, and the Prometheus scrape.

use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::access::auth::Identity;
use crate::app::App;
use crate::envelope::{NewEvent, Scope};
use crate::http::{ApiError, ok};
use crate::memory::{MemoryError, indexer};

/// `GET /system/indexing`
pub async fn indexing(State(app): State<App>) -> Response {
    let memory = &app.memory;
    let mut state = serde_json::to_value(memory.indexing_state()).unwrap_or_default();
    state["index_docs"] = json!(memory.doc_count());
    // the second phase: the passage vectors of meaning search, or why there are none
    state["vectors"] = match &memory.dense {
        Some(d) => serde_json::to_value(d.status()).unwrap_or_default(),
        None => json!({"model": null, "reason": memory.no_model}),
    };
    ok(state)
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReindexBody {
    #[serde(default)]
    path: Option<String>,
}

/// `POST /system/reindex {path?}`: starts a run in the background (202), 409 if one is going.
pub async fn reindex(State(app): State<App>, raw: axum::body::Bytes) -> Result<Response, ApiError> {
    let memory = app.memory.clone();
    let hub = app.hub.clone();
    let body: ReindexBody = if raw.iter().all(u8::is_ascii_whitespace) {
        ReindexBody::default()
    } else {
        serde_json::from_slice(&raw).map_err(|e| ApiError::bad_request(format!("body: {e}")))?
    };
    let from = match body.path.as_deref().filter(|p| !p.is_empty()) {
        None => None,
        Some(p) => Some(indexer::resolve_sub_path(&memory.root, p).map_err(ApiError::bad_request)?),
    };
    if memory.indexing_state().running {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "an indexing run is already in progress; watch GET /system/indexing",
        ));
    }
    tokio::spawn(async move {
        match indexer::run(memory, hub, from).await {
            Ok(()) | Err(MemoryError::Busy) => {}
            Err(e) => tracing::error!(error = %e, "indexing failed"),
        }
    });
    let mut resp = ok(json!({"started": true, "path": body.path.unwrap_or_default()}));
    *resp.status_mut() = StatusCode::ACCEPTED;
    Ok(resp)
}

/// `GET /system/status` and `GET /system/stats`: the status as the monitor samples it now.
pub async fn status(State(app): State<App>) -> Result<Response, ApiError> {
    let monitor = app.monitor.clone();
    let status = tokio::task::spawn_blocking(move || monitor.sample())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(ok(status))
}

/// `POST /system/status` (admins): samples and publishes a `system_status` to every client now.
pub async fn publish_status(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
) -> Result<Response, ApiError> {
    // every status goes to everyone: only an admin may add one on demand (a member asking
    // reads `GET /system/status`, which publishes nothing)
    identity.require_admin("POST /system/status (publishing a status to everyone)")?;
    Ok(ok(app.monitor.publish_now().await?))
}

/// `POST /system/cache/clear`: drops the in-memory event window (reads go to SQLite until it
/// fills again) and the index searchers' caches, then publishes `cache_cleared`.
pub async fn clear_cache(State(app): State<App>) -> Result<Response, ApiError> {
    let events = app.hub.journal.clear_cache();
    app.memory
        .clear_cache()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let data = json!({
        "caches": ["journal_window", "index_searchers"],
        "journal_window_events": events,
    });
    app.hub
        .publish(vec![NewEvent::new(
            "cache_cleared",
            Scope::Global,
            data.clone(),
        )])
        .await?;
    Ok(ok(data))
}

/// `GET /metrics`
pub async fn metrics(State(app): State<App>) -> Result<Response, ApiError> {
    let text = app.metrics.render().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not encode the metrics",
        )
    })?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}
