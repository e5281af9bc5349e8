//! Search and indexing endpoints. Each search publishes `search_started` and
//! `search_completed`; a re-index publishes its progress (see `memory::indexer`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiJson, ok};
use crate::hub::Hub;
use crate::hub::envelope::{NewEvent, Scope};
use crate::memory::search::{MAX_LIMIT, SearchError};
use crate::memory::{Memory, MemoryError, indexer};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    q: String,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    offset: Option<usize>,
}

fn number(q: &HashMap<String, String>, key: &str) -> Result<Option<usize>, ApiError> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!("{key} `{v}` is not a non-negative whole number"))
        }),
    }
}

async fn run_search(
    hub: &Hub,
    memory: Arc<Memory>,
    q: String,
    limit: Option<usize>,
    offset: Option<usize>,
) -> Result<Response, ApiError> {
    let q = q.trim().to_string();
    if q.is_empty() {
        return Err(ApiError::bad_request(
            "q is required: the text to search for",
        ));
    }
    if q.len() > 1000 {
        return Err(ApiError::bad_request("q is longer than 1000 characters"));
    }
    let limit = limit.unwrap_or(20);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be from 1 to {MAX_LIMIT}"
        )));
    }
    let offset = offset.unwrap_or(0);
    if offset > 100_000 {
        return Err(ApiError::bad_request("offset must be at most 100000"));
    }
    hub.publish(vec![NewEvent::new(
        "search_started",
        Scope::Global,
        json!({"query": q}),
    )])
    .await?;
    let query = q.clone();
    let answer = tokio::task::spawn_blocking(move || {
        crate::memory::search::search(&memory, &query, limit, offset)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| match e {
        SearchError::Syntax(_) => ApiError::bad_request(e.to_string()),
        SearchError::Index(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    })?;
    hub.publish(vec![NewEvent::new(
        "search_completed",
        Scope::Global,
        json!({"query": q, "results_count": answer.total, "search_time_ms": answer.search_time}),
    )])
    .await?;
    Ok(ok(answer))
}

/// `GET /api/search?q=&limit=&offset=` and `GET /search`
pub async fn search_get(
    State(hub): State<Arc<Hub>>,
    Extension(memory): Extension<Arc<Memory>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    for k in q.keys() {
        if !["q", "limit", "offset", "_"].contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter `{k}`; allowed: q, limit, offset"
            )));
        }
    }
    let text = q.get("q").cloned().unwrap_or_default();
    run_search(
        &hub,
        memory,
        text,
        number(&q, "limit")?,
        number(&q, "offset")?,
    )
    .await
}

/// `POST /api/search {q, limit?, offset?}`
pub async fn search_post(
    State(hub): State<Arc<Hub>>,
    Extension(memory): Extension<Arc<Memory>>,
    ApiJson(body): ApiJson<SearchBody>,
) -> Result<Response, ApiError> {
    run_search(&hub, memory, body.q, body.limit, body.offset).await
}

/// `GET /system/indexing`
pub async fn indexing(Extension(memory): Extension<Arc<Memory>>) -> Response {
    let mut state = serde_json::to_value(memory.indexing_state()).unwrap_or_default();
    state["index_docs"] = json!(memory.doc_count());
    ok(state)
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReindexBody {
    #[serde(default)]
    path: Option<String>,
}

/// `POST /system/reindex {path?}`: starts a run in the background (202), 409 if one is going.
pub async fn reindex(
    State(hub): State<Arc<Hub>>,
    Extension(memory): Extension<Arc<Memory>>,
    raw: axum::body::Bytes,
) -> Result<Response, ApiError> {
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
    let m = memory.clone();
    tokio::spawn(async move {
        match indexer::run(m, hub, from).await {
            Ok(()) | Err(MemoryError::Busy) => {}
            Err(e) => tracing::error!(error = %e, "indexing failed"),
        }
    });
    let mut resp = ok(json!({"started": true, "path": body.path.unwrap_or_default()}));
    *resp.status_mut() = StatusCode::ACCEPTED;
    Ok(resp)
}
