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

use crate::access::auth::Identity;
use crate::app::{App, AppState};
use crate::http::{ApiError, ApiJson, number_param, ok, only_params};
use crate::memory::Memory;
use crate::memory::history::Whose;
use crate::memory::search::{Answer, snippet_text};
use crate::memory::service;

/// A search as the endpoints receive it, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    /// Missing is the same as empty: [`service::Search::validate`] says it is required.
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
    /// `hybrid` (the default with the embedding model), `keyword` or `semantic`.
    #[serde(default)]
    mode: Option<String>,
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

/// The query text, trimmed; empty or too long is a 400 (the service's rule).
pub(crate) fn query_text(q: &str, name: &str) -> Result<String, ApiError> {
    Ok(service::query_text(q, name)?)
}

/// `path_prefix`, checked as the service checks it.
pub(crate) fn path_prefix(p: Option<String>) -> Result<Option<String>, ApiError> {
    Ok(service::path_prefix(p)?)
}

impl SearchBody {
    /// What the body asks, for the service to check.
    fn asked(self) -> service::Asked {
        service::Asked {
            query: self.q,
            limit: self.limit,
            offset: self.offset,
            path_prefix: self.path_prefix,
            extensions: self.extensions.map(Extensions::into_vec),
            session: self.session,
            via: self.via,
            typing: self.typing.unwrap_or(false),
            mode: self.mode,
        }
    }

    fn from_query(q: HashMap<String, String>) -> Result<SearchBody, ApiError> {
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
                "mode",
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
        Ok(SearchBody {
            typing,
            limit: number_param(&q, "limit", 0usize)?,
            offset: number_param(&q, "offset", 0usize)?,
            q: q.get("q").cloned().unwrap_or_default(),
            path_prefix: q.get("path_prefix").cloned(),
            extensions: q.get("extensions").cloned().map(Extensions::Joined),
            session: q.get("session").cloned(),
            via: q.get("via").cloned(),
            mode: q.get("mode").cloned(),
        })
    }
}

/// Runs a checked search through the service, as the caller: a member's searches draw on
/// their journal budget (two events each); timed for `GET /metrics`.
async fn execute(
    app: &AppState,
    identity: &Identity,
    search: service::Search,
) -> Result<Answer, ApiError> {
    app.collab
        .take_event_budget(identity, 2, app.config.member_events_per_s)?;
    let ran = service::run(
        &app.memory,
        &app.hub,
        app.config.search_publish_query,
        identity.user_id(),
        search,
    )
    .await;
    match ran {
        Ok(answer) => {
            app.metrics
                .search_seconds
                .observe(answer.search_time / 1000.0);
            Ok(answer)
        }
        Err(e) => {
            if matches!(e, service::ServiceError::Search(_)) {
                app.metrics.search_errors.inc();
            }
            Err(e.into())
        }
    }
}

/// What another front end (the MCP server) asks for: a search validated and run exactly as
/// the endpoints run one, published with `via` set to `mcp`.
pub struct Asked {
    pub query: String,
    pub limit: Option<usize>,
    pub path_prefix: Option<String>,
    pub extensions: Option<Vec<String>>,
    /// `hybrid`, `keyword` or `semantic` (unset: the server's default).
    pub mode: Option<String>,
}

/// Runs an [`Asked`] search (`query` is the parameter named in errors).
pub async fn run_for_mcp(
    app: &AppState,
    identity: &Identity,
    asked: Asked,
) -> Result<Answer, ApiError> {
    let search = service::Search::validate(
        service::Asked {
            query: asked.query,
            limit: asked.limit,
            path_prefix: asked.path_prefix,
            extensions: asked.extensions,
            mode: asked.mode,
            session: Some("mcp".into()),
            via: Some("mcp".into()),
            ..service::Asked::default()
        },
        "query",
    )?;
    execute(app, identity, search).await
}

/// An answer with the keys of the release before as well (`searchTime`, each result's
/// `lastModified`), which that release's clients read. Deprecated (README says so): removed in
/// the next release; the keys are snake_case like every other.
fn with_old_keys(answer: Answer) -> serde_json::Value {
    let mut v = serde_json::to_value(&answer).unwrap_or_default();
    v["searchTime"] = v["search_time_ms"].clone();
    if let Some(results) = v["results"].as_array_mut() {
        for r in results {
            r["lastModified"] = r["last_modified"].clone();
        }
    }
    v
}

/// `GET /api/search?q=&limit=&offset=&path_prefix=&extensions=md,txt` and `GET /search`
pub async fn search_get(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let search = service::Search::validate(SearchBody::from_query(q)?.asked(), "q")?;
    Ok(ok(with_old_keys(execute(&app, &identity, search).await?)))
}

/// `POST /api/search {q, limit?, offset?, path_prefix?, extensions?, session?, via?}`
pub async fn search_post(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    ApiJson(body): ApiJson<SearchBody>,
) -> Result<Response, ApiError> {
    let search = service::Search::validate(body.asked(), "q")?;
    Ok(ok(with_old_keys(execute(&app, &identity, search).await?)))
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
    let req = service::Search::validate(search.asked(), "query")?;
    let q = req.query.clone();
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
        // by meaning too, when there is a model (a question costs it about 10 ms)
        let vector = history
            .dense
            .as_ref()
            .and_then(|d| d.query_vector(&t).ok().map(|v| (d.embedder.id(), v)));
        let meaning = vector.as_ref().map(|(id, v)| (*id, v.as_slice()));
        history.history.similar_to(&t, limit, whose, meaning)
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
    // when the document's keyword entry and its vectors were last made (null: not yet)
    let memory = app.memory.clone();
    let at_path = doc.path.clone();
    let updated = tokio::task::spawn_blocking(move || {
        let when = crate::clock::rfc3339_ms;
        let keyword = crate::memory::indexer::indexed_at(&memory, &at_path)
            .ok()
            .flatten()
            .filter(|ms| *ms > 0)
            .and_then(when);
        let vectors = memory
            .dense
            .as_ref()
            .and_then(|d| d.embedded_at(&at_path))
            .and_then(when);
        serde_json::json!({"keyword_indexed_at": keyword, "vectors_embedded_at": vectors})
    })
    .await
    .unwrap_or_default();
    if start.is_none() && end.is_none() {
        let mut v = serde_json::to_value(&doc).unwrap_or_default();
        v["index"] = updated;
        // the release before's key, deprecated (see `with_old_keys`)
        v["lastModified"] = v["last_modified"].clone();
        return Ok(ok(v));
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
        "last_modified": doc.last_modified,
        // the release before's key, deprecated (see `with_old_keys`)
        "lastModified": doc.last_modified,
        "start_line": from,
        "end_line": to,
        "total_lines": total,
        "index": updated,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_string_list_of_extensions_reads_as_a_list() {
        assert_eq!(
            Extensions::Joined(".MD, txt".into()).into_vec(),
            vec![".MD", " txt"]
        );
        let body = SearchBody::from_query(HashMap::from([
            ("q".to_string(), "x".to_string()),
            ("extensions".to_string(), "md,txt".to_string()),
        ]))
        .unwrap();
        let s = service::Search::validate(body.asked(), "q").unwrap();
        assert_eq!(s.filters.extensions, vec!["md", "txt"]);
        assert!(SearchBody::from_query(HashMap::from([("typo".into(), "1".into())])).is_err());
    }
}
