//! Search endpoints: search (GET and POST), suggestions, export, similar earlier queries, and
//! reading one document (`/api/document`).
//! Each search publishes `search_started` and `search_completed` through the hub, is timed for
//! `GET /metrics` and is kept in the searches history.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::app::{App, AppState};
use crate::envelope::{NewEvent, Scope};
use crate::http::{ApiError, ApiJson, number_param, ok, only_params};
use crate::memory::Memory;
use crate::memory::history::Whose;
use crate::memory::search::{Answer, Filters, MAX_LIMIT, SearchError, check_shape, snippet_text};
use crate::teams::auth::Identity;

/// A search as the endpoints receive it, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    /// Missing is the same as empty: [`Request::validate`] says it is required.
    #[serde(alias = "query", default)]
    q: String,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    offset: Option<usize>,
    #[serde(default)]
    path_prefix: Option<String>,
    #[serde(default)]
    extensions: Option<Extensions>,
    /// Who searched, for the history (any short string the client chooses).
    #[serde(default)]
    session: Option<String>,
    /// Which front end asked: `api` (the default) or `mcp` (`cmem mcp` searching through the
    /// server says so); published in the search events.
    #[serde(default)]
    via: Option<String>,
    /// The query is being typed (a search box searching as the keys come): its last word also
    /// counts as the start of a word.
    #[serde(default)]
    typing: Option<bool>,
}

/// `["md", "txt"]` in JSON, `md,txt` in a query string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Extensions {
    List(Vec<String>),
    Joined(String),
}

impl Extensions {
    fn into_vec(self) -> Vec<String> {
        match self {
            Extensions::List(v) => v,
            Extensions::Joined(s) => s.split(',').map(str::to_string).collect(),
        }
    }
}

/// A validated search.
struct Request {
    q: String,
    limit: usize,
    offset: usize,
    filters: Filters,
    session: Option<String>,
    via: &'static str,
    typing: bool,
}

/// The query text, trimmed; empty or too long is a 400.
pub(crate) fn query_text(q: &str, name: &str) -> Result<String, ApiError> {
    let q = q.trim();
    if q.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{name} is required: the text to search for"
        )));
    }
    // length and nesting are bounded before anything parses the query (or announces it)
    check_shape(q).map_err(|e| ApiError::bad_request(format!("{name}: {e}")))?;
    Ok(q.to_string())
}

/// `path_prefix`: relative to the data folder, `/`-separated, no `..`.
pub(crate) fn path_prefix(p: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(raw) = p else { return Ok(None) };
    let p = raw.replace('\\', "/");
    let p = p.trim_start_matches("./");
    if p.starts_with('/') || p.contains(':') {
        return Err(ApiError::bad_request(format!(
            "path_prefix `{raw}` must be relative to the data folder"
        )));
    }
    if p.split('/').any(|part| part == "..") {
        return Err(ApiError::bad_request(format!(
            "path_prefix `{raw}` may not contain `..`"
        )));
    }
    Ok(Some(p.to_string()).filter(|p| !p.is_empty()))
}

/// `extensions` as a list, checked as [`extensions`] does.
pub(crate) fn extension_list(e: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    extensions(e.map(Extensions::List))
}

/// `extensions`: up to 50, letters and digits (a leading dot is dropped), lowercased.
fn extensions(e: Option<Extensions>) -> Result<Vec<String>, ApiError> {
    let list = e.map(Extensions::into_vec).unwrap_or_default();
    if list.len() > 50 {
        return Err(ApiError::bad_request("extensions: at most 50"));
    }
    list.into_iter()
        .map(|x| x.trim().trim_start_matches('.').to_lowercase())
        .filter(|x| !x.is_empty())
        .map(|x| {
            if x.len() <= 20 && x.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                Ok(x)
            } else {
                Err(ApiError::bad_request(format!(
                    "extension `{x}` is not a file extension (letters and digits, e.g. md)"
                )))
            }
        })
        .collect()
}

impl Request {
    fn validate(body: SearchBody, name: &str) -> Result<Request, ApiError> {
        let limit = body.limit.unwrap_or(20);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::bad_request(format!(
                "limit must be from 1 to {MAX_LIMIT}"
            )));
        }
        let offset = body.offset.unwrap_or(0);
        if offset > 100_000 {
            return Err(ApiError::bad_request("offset must be at most 100000"));
        }
        let session = body.session.filter(|s| !s.is_empty());
        if session.as_ref().is_some_and(|s| s.len() > 128) {
            return Err(ApiError::bad_request("session is longer than 128 bytes"));
        }
        let via = match body.via.as_deref() {
            None | Some("api") => "api",
            Some("mcp") => "mcp",
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "via `{other}` is not api or mcp"
                )));
            }
        };
        Ok(Request {
            via,
            typing: body.typing.unwrap_or(false),
            q: query_text(&body.q, name)?,
            limit,
            offset,
            filters: Filters {
                path_prefix: path_prefix(body.path_prefix)?,
                extensions: extensions(body.extensions)?,
            },
            session,
        })
    }

    fn from_query(q: HashMap<String, String>) -> Result<Request, ApiError> {
        only_params(
            &q,
            &[
                "q",
                "limit",
                "offset",
                "path_prefix",
                "extensions",
                "session",
                "via",
                "typing",
            ],
        )?;
        let typing = match q.get("typing").map(String::as_str) {
            None => None,
            Some("true" | "1") => Some(true),
            Some("false" | "0") => Some(false),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "typing `{other}` is not true or false"
                )));
            }
        };
        let body = SearchBody {
            typing,
            limit: number_param(&q, "limit", 0usize)?,
            offset: number_param(&q, "offset", 0usize)?,
            q: q.get("q").cloned().unwrap_or_default(),
            path_prefix: q.get("path_prefix").cloned(),
            extensions: q.get("extensions").cloned().map(Extensions::Joined),
            session: q.get("session").cloned(),
            via: q.get("via").cloned(),
        };
        Request::validate(body, "q")
    }
}

/// Runs a validated search: publishes `search_started` while it searches and records the
/// search in the history on a blocking thread, times it, then publishes `search_completed`
/// (after `search_started` is committed, so the two stay in order).
/// Both events say which front end asked (`via`).
///
/// A user's search events go to that user's own scope (`user:<id>`: their connections and
/// admins), never to everyone: the text of a search is the searcher's. Everyone sees only the
/// count (`system_status.searches_total`). The local user of an open server is everyone there,
/// so its searches stay global.
async fn execute(app: &AppState, identity: &Identity, req: Request) -> Result<Answer, ApiError> {
    // two journal events: a member's searches draw on their budget
    app.teams
        .take_event_budget(identity, 2, app.config.member_events_per_s)?;
    let via = req.via;
    let owner = identity.user_id().unwrap_or_default().to_string();
    let scope = match identity.user_id() {
        Some(id) => Scope::User(id.to_string()),
        None => Scope::Global,
    };
    let shown = app.config.search_publish_query.then(|| req.q.clone());
    let started = app.hub.publish(vec![NewEvent::new(
        "search_started",
        scope.clone(),
        json!({"query": shown, "via": via}),
    )]);
    let memory = app.memory.clone();
    let searching = tokio::task::spawn_blocking(move || {
        let answer = crate::memory::search::search_typed(
            &memory,
            &req.q,
            &req.filters,
            req.limit,
            req.offset,
            req.typing,
        )?;
        let recorded = memory.history.record(
            &req.q,
            answer.total as u64,
            answer.search_time,
            req.session.as_deref(),
            &owner,
        );
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "could not record the search in the history");
        }
        Ok(answer)
    });
    let (started, answer) = tokio::join!(started, searching);
    started?;
    let answer = answer
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e: SearchError| {
            app.metrics.search_errors.inc();
            ApiError::from(e)
        })?;
    app.metrics
        .search_seconds
        .observe(answer.search_time / 1000.0);
    app.memory
        .searches_total
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    app.hub.publish(vec![NewEvent::new(
        "search_completed",
        scope,
        json!({"query": shown, "results_count": answer.total, "search_time_ms": answer.search_time, "via": via}),
    )])
    .await?;
    Ok(answer)
}

/// What another front end (the MCP server) asks for: a search validated and run exactly as
/// the endpoints run one, published with `via` set to `mcp`.
pub struct Asked {
    pub query: String,
    pub limit: Option<usize>,
    pub path_prefix: Option<String>,
    pub extensions: Option<Vec<String>>,
}

/// Runs an [`Asked`] search (`query` is the parameter named in errors).
pub async fn run_for_mcp(
    app: &AppState,
    identity: &Identity,
    asked: Asked,
) -> Result<Answer, ApiError> {
    let body = SearchBody {
        q: asked.query,
        limit: asked.limit,
        offset: None,
        path_prefix: asked.path_prefix,
        extensions: asked.extensions.map(Extensions::List),
        session: Some("mcp".into()),
        via: Some("mcp".into()),
        typing: None,
    };
    let req = Request::validate(body, "query")?;
    execute(app, identity, req).await
}

/// `GET /api/search?q=&limit=&offset=&path_prefix=&extensions=md,txt` and `GET /search`
pub async fn search_get(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let req = Request::from_query(q)?;
    Ok(ok(execute(&app, &identity, req).await?))
}

/// `POST /api/search {q, limit?, offset?, path_prefix?, extensions?, session?, via?}`
pub async fn search_post(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    ApiJson(body): ApiJson<SearchBody>,
) -> Result<Response, ApiError> {
    let req = Request::validate(body, "q")?;
    Ok(ok(execute(&app, &identity, req).await?))
}

/// `GET /search/suggestions?q=&limit=`: index terms that start with `q`.
pub async fn suggestions(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    only_params(&q, &["q", "limit"])?;
    let prefix = q.get("q").map(|s| s.trim().to_string()).unwrap_or_default();
    if prefix.is_empty() {
        return Err(ApiError::bad_request(
            "q is required: the beginning of a word",
        ));
    }
    if prefix.chars().count() > 100 {
        return Err(ApiError::bad_request("q is longer than 100 characters"));
    }
    let limit = number_param(&q, "limit", 0usize)?.unwrap_or(10);
    if limit == 0 || limit > 100 {
        return Err(ApiError::bad_request("limit must be from 1 to 100"));
    }
    let memory = app.memory.clone();
    let p = prefix.clone();
    let found =
        tokio::task::spawn_blocking(move || crate::memory::search::suggestions(&memory, &p, limit))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(ok(json!({"query": prefix, "suggestions": found})))
}

fn render_export(q: &str, a: &Answer, markdown: bool) -> String {
    let now = crate::clock::now_rfc3339();
    let (total, shown) = (a.total, a.results.len());
    let mut out = if markdown {
        format!(
            "# Search results for `{q}`\n\n{total} matching documents, {shown} listed from {}; exported {now}.\n",
            a.offset + 1
        )
    } else {
        format!(
            "Search results for: {q}\n{total} matching documents, {shown} listed; exported {now}\n"
        )
    };
    for (i, h) in a.results.iter().enumerate() {
        let (n, title, path, modified) = (a.offset + i + 1, &h.title, &h.path, &h.last_modified);
        let facts = format!("{} bytes, score {:.2}", h.size, h.score);
        let snippet = snippet_text(&h.snippet, if markdown { "**" } else { "" });
        if markdown {
            out.push_str(&format!(
                "\n## {n}. {title}\n\n`{path}` · modified {modified} · {facts}\n"
            ));
            if !snippet.is_empty() {
                out.push_str(&format!("\n> {snippet}\n"));
            }
        } else {
            out.push_str(&format!(
                "\n{n}. {title}\n   {path}  (modified {modified}, {facts})\n"
            ));
            if !snippet.is_empty() {
                out.push_str(&format!("   {snippet}\n"));
            }
        }
    }
    out
}

/// `POST /search/export {query, format: markdown|text, limit?, offset?, path_prefix?,
/// extensions?}`: the results as a document to save. Everything but `format` is a search body.
pub async fn export(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    ApiJson(mut body): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<Response, ApiError> {
    let format = match body.remove("format") {
        None | Some(serde_json::Value::Null) => "markdown".to_string(),
        Some(serde_json::Value::String(f)) => f,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format must be a string (markdown or text), not {other}"
            )));
        }
    };
    let (markdown, ext, mime) = match format.as_str() {
        "markdown" | "md" => (true, "md", "text/markdown; charset=utf-8"),
        "text" | "txt" => (false, "txt", "text/plain; charset=utf-8"),
        other => {
            return Err(ApiError::bad_request(format!(
                "format `{other}` is not supported; use markdown or text"
            )));
        }
    };
    let search: SearchBody = serde_json::from_value(serde_json::Value::Object(body))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let req = Request::validate(search, "query")?;
    let q = req.q.clone();
    let answer = execute(&app, &identity, req).await?;
    Ok((
        [
            (header::CONTENT_TYPE, mime.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"search-results.{ext}\""),
            ),
        ],
        render_export(&q, &answer, markdown),
    )
        .into_response())
}

/// `GET /prompts/similar?q=&limit=`: earlier searches that resemble `q` — the caller's own,
/// unless `search_history_shared` is on.
pub async fn similar(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    only_params(&q, &["q", "limit"])?;
    let text = query_text(q.get("q").map(String::as_str).unwrap_or(""), "q")?;
    let limit = number_param(&q, "limit", 0usize)?.unwrap_or(10);
    if limit == 0 || limit > 100 {
        return Err(ApiError::bad_request("limit must be from 1 to 100"));
    }
    let shared = app.config.search_history_shared;
    Ok(ok(
        similar_to(&app.memory, shared, &identity, text, limit).await?
    ))
}

/// Earlier searches resembling `text` that `identity` may be offered, as `GET /prompts/similar`
/// answers them (`limit` already checked); `shared` is `search_history_shared`.
pub async fn similar_to(
    memory: &Arc<Memory>,
    shared: bool,
    identity: &Identity,
    text: String,
    limit: usize,
) -> Result<serde_json::Value, ApiError> {
    let history = memory.clone();
    let t = text.clone();
    let owner = identity.user_id().unwrap_or_default().to_string();
    let found = tokio::task::spawn_blocking(move || {
        let whose = if shared {
            Whose::Everyone
        } else {
            Whose::Owner(&owner)
        };
        history.history.similar(&t, limit, whose)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(json!({
        "query": text,
        "history_enabled": memory.history.enabled(),
        "history_shared": shared,
        "similar": found,
    }))
}

/// `GET /api/document?path=&start_line=&end_line=`: one text file of the data folder (confined
/// as the index is: no `..`, no absolute path, nothing hidden, no symbolic link at any level),
/// or a range of its lines (1-based, inclusive; a search result's passage gives one).
pub async fn document(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    use crate::memory::reader::{self, ReadError};
    only_params(&q, &["path", "start_line", "end_line"])?;
    let start: Option<usize> = number_param(&q, "start_line", 1usize)?;
    let end: Option<usize> = number_param(&q, "end_line", 1usize)?;
    if let (Some(s), Some(e)) = (start, end)
        && e < s
    {
        return Err(ApiError::bad_request(format!(
            "end_line ({e}) is before start_line ({s})"
        )));
    }
    let rel = q.get("path").cloned().unwrap_or_default();
    let root = app.memory.root.clone();
    let max = app.memory.max_file_bytes;
    let doc = tokio::task::spawn_blocking(move || reader::read(&root, &rel, max))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| {
            let status = match &e {
                ReadError::BadPath(_) => StatusCode::BAD_REQUEST,
                ReadError::NotFound(_) => StatusCode::NOT_FOUND,
                ReadError::Linked(_) => StatusCode::FORBIDDEN,
                ReadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                ReadError::NotText(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ReadError::NotAFile(_) => StatusCode::UNPROCESSABLE_ENTITY,
                ReadError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            };
            ApiError::new(status, e.to_string())
        })?;
    if start.is_none() && end.is_none() {
        return Ok(ok(doc));
    }
    let lines: Vec<&str> = doc.text.lines().collect();
    let total = lines.len();
    let from = start.unwrap_or(1);
    if from > total.max(1) {
        return Err(ApiError::bad_request(format!(
            "{} has {total} lines; start_line {from} is past its end",
            doc.path
        )));
    }
    let to = end.unwrap_or(total).min(total);
    let text = lines[(from - 1).min(total)..to].join("\n");
    Ok(ok(serde_json::json!({
        "path": doc.path,
        "text": text,
        "size": doc.size,
        "lastModified": doc.last_modified,
        "start_line": from,
        "end_line": to,
        "total_lines": total,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked() {
        assert_eq!(
            path_prefix(Some("./notes\\a".into())).unwrap().as_deref(),
            Some("notes/a")
        );
        assert!(path_prefix(Some("../x".into())).is_err());
        assert!(path_prefix(Some("/etc".into())).is_err());
        assert!(path_prefix(Some("C:/x".into())).is_err());
        assert_eq!(path_prefix(Some("".into())).unwrap(), None);
        assert_eq!(
            extensions(Some(Extensions::Joined(".MD, txt".into()))).unwrap(),
            vec!["md", "txt"]
        );
        assert!(extensions(Some(Extensions::List(vec!["m d".into()]))).is_err());
    }
}
