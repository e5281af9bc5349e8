//! The one search service. Every front end — `/api/search` (the web app and scripts), MCP
//! (`/mcp`, and `cmem mcp` through the server or on the folder alone), `cmem search` — turns
//! what it was given into an [`Asked`], has it checked by [`Search::validate`] (one set of
//! rules, one set of messages), and runs it: with the server, [`run`] publishes the
//! `search_started` / `search_completed` events, keeps the search in the history and times it;
//! without one, [`search`] only answers. All of them get the same typed [`Answer`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::json;

use super::Memory;
use super::hybrid::Mode;
use super::search::{Answer, Filters, MAX_LIMIT, SearchError, check_shape};
use crate::envelope::{NewEvent, Scope};
use crate::hub::{Hub, PublishError};

/// Which front end asked; said in the search events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Api,
    Mcp,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Api => "api",
            Via::Mcp => "mcp",
        }
    }
}

/// A search as a front end received it, before it is checked.
#[derive(Debug, Clone, Default)]
pub struct Asked {
    pub query: String,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
    pub path_prefix: Option<String>,
    pub extensions: Option<Vec<String>>,
    /// Who searched, for the history (any short string the client chooses).
    pub session: Option<String>,
    /// `api` (the default) or `mcp`.
    pub via: Option<String>,
    /// The query is being typed: its last word also counts as the start of a word.
    pub typing: bool,
    /// `hybrid`, `keyword` or `semantic` ([`super::hybrid::Mode`]); unset, the server's best.
    pub mode: Option<String>,
}

/// A checked search.
#[derive(Debug, Clone)]
pub struct Search {
    pub query: String,
    pub limit: usize,
    pub offset: usize,
    pub filters: Filters,
    pub session: Option<String>,
    pub via: Via,
    pub typing: bool,
    pub mode: Option<Mode>,
}

/// Results a search returns when the front end does not say.
pub const DEFAULT_LIMIT: usize = 20;

/// Deepest page a search may ask for.
pub const MAX_OFFSET: usize = 100_000;

/// The query text, trimmed; empty, too long or nested too deep is refused. `name` is the
/// parameter the front end calls it (`q`, `query`).
pub fn query_text(q: &str, name: &str) -> Result<String, SearchError> {
    let q = q.trim();
    if q.is_empty() {
        return Err(SearchError::Invalid(format!(
            "{name} is required: the text to search for"
        )));
    }
    // length and nesting are bounded before anything parses the query (or announces it)
    check_shape(q).map_err(|e| SearchError::Invalid(format!("{name}: {e}")))?;
    Ok(q.to_string())
}

/// `path_prefix`: relative to the data folder, `/`-separated, no `..`.
pub fn path_prefix(p: Option<String>) -> Result<Option<String>, SearchError> {
    let Some(raw) = p else { return Ok(None) };
    let p = raw.replace('\\', "/");
    let p = p.trim_start_matches("./");
    if p.starts_with('/') || p.contains(':') {
        return Err(SearchError::Invalid(format!(
            "path_prefix `{raw}` must be relative to the data folder"
        )));
    }
    if p.split('/').any(|part| part == "..") {
        return Err(SearchError::Invalid(format!(
            "path_prefix `{raw}` may not contain `..`"
        )));
    }
    Ok(Some(p.to_string()).filter(|p| !p.is_empty()))
}

/// `extensions`: up to 50, letters and digits (a leading dot is dropped), lowercased.
pub fn extensions(list: Option<Vec<String>>) -> Result<Vec<String>, SearchError> {
    let list = list.unwrap_or_default();
    if list.len() > 50 {
        return Err(SearchError::Invalid("extensions: at most 50".into()));
    }
    list.into_iter()
        .map(|x| x.trim().trim_start_matches('.').to_lowercase())
        .filter(|x| !x.is_empty())
        .map(|x| {
            if x.len() <= 20 && x.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                Ok(x)
            } else {
                Err(SearchError::Invalid(format!(
                    "extension `{x}` is not a file extension (letters and digits, e.g. md)"
                )))
            }
        })
        .collect()
}

impl Search {
    /// Checks what was asked; `name` is what the front end calls the query.
    pub fn validate(a: Asked, name: &str) -> Result<Search, SearchError> {
        let limit = a.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(SearchError::Invalid(format!(
                "limit must be from 1 to {MAX_LIMIT}"
            )));
        }
        let offset = a.offset.unwrap_or(0);
        if offset > MAX_OFFSET {
            return Err(SearchError::Invalid(format!(
                "offset must be at most {MAX_OFFSET}"
            )));
        }
        let session = a.session.filter(|s| !s.is_empty());
        if session.as_ref().is_some_and(|s| s.len() > 128) {
            return Err(SearchError::Invalid(
                "session is longer than 128 bytes".into(),
            ));
        }
        let via = match a.via.as_deref() {
            None | Some("api") => Via::Api,
            Some("mcp") => Via::Mcp,
            Some(other) => {
                return Err(SearchError::Invalid(format!(
                    "via `{other}` is not api or mcp"
                )));
            }
        };
        let mode = a.mode.as_deref().map(Mode::parse).transpose()?;
        Ok(Search {
            mode,
            query: query_text(&a.query, name)?,
            limit,
            offset,
            filters: Filters {
                path_prefix: path_prefix(a.path_prefix)?,
                extensions: extensions(a.extensions)?,
            },
            session,
            via,
            typing: a.typing,
        })
    }
}

/// Why a search run by the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Search(#[from] SearchError),
    /// The journal could not take the search's events.
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("search failed: {0}")]
    Internal(String),
}

/// Answers a checked search on a blocking thread (no events, no history): `cmem search`, and
/// `cmem mcp` on a folder no server runs on.
pub async fn search(memory: &Arc<Memory>, s: Search) -> Result<Answer, ServiceError> {
    let memory = memory.clone();
    tokio::task::spawn_blocking(move || answer(&memory, &s))
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?
        .map_err(ServiceError::from)
}

/// The answer to a checked search; blocking.
pub fn answer(memory: &Memory, s: &Search) -> Result<Answer, SearchError> {
    super::hybrid::answer(
        memory, &s.query, &s.filters, s.limit, s.offset, s.typing, s.mode,
    )
}

/// Runs a checked search as the server does: publishes `search_started` while it searches and
/// records the search in the history on a blocking thread, then publishes `search_completed`
/// (after `search_started` is committed, so the two stay in order). Both say which front end
/// asked (`via`); `publish_query` (`search_publish_query`) decides whether they carry the text.
///
/// `user_id` is who asks. A user's search events go to that user's own scope (`user:<id>`:
/// their connections and admins), never to everyone: the text of a search is the searcher's.
/// Everyone sees only the count (`system_status.searches_total`). The local user of an open
/// server (`None`) is everyone there, so its searches stay global. The history is keyed by the
/// same id (`""` for the local user).
pub async fn run(
    memory: &Arc<Memory>,
    hub: &Hub,
    publish_query: bool,
    user_id: Option<&str>,
    s: Search,
) -> Result<Answer, ServiceError> {
    let via = s.via.as_str();
    let owner = user_id.unwrap_or_default().to_string();
    let scope = match user_id {
        Some(id) => Scope::User(id.to_string()),
        None => Scope::Global,
    };
    let shown = publish_query.then(|| s.query.clone());
    let started = hub.publish(vec![NewEvent::new(
        "search_started",
        scope.clone(),
        json!({"query": shown, "via": via}),
    )]);
    let m = memory.clone();
    let searching = tokio::task::spawn_blocking(move || {
        let answer = answer(&m, &s)?;
        let recorded = m.history.record_with(
            &s.query,
            answer.total as u64,
            answer.search_time,
            s.session.as_deref(),
            &owner,
            answer
                .question
                .as_ref()
                .map(|(model, v)| (model.as_str(), v.as_slice())),
        );
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "could not record the search in the history");
        }
        Ok::<_, SearchError>(answer)
    });
    let (started, answer) = tokio::join!(started, searching);
    started?;
    let answer = answer.map_err(|e| ServiceError::Internal(e.to_string()))??;
    memory.searches_total.fetch_add(1, Ordering::Relaxed);
    hub.publish(vec![NewEvent::new(
        "search_completed",
        scope,
        json!({"query": shown, "results_count": answer.total, "search_time_ms": answer.search_time, "via": via}),
    )])
    .await?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_set_of_rules_for_every_front_end() {
        let ok = |a: Asked| Search::validate(a, "q");
        let base = || Asked {
            query: " lumen ".into(),
            ..Asked::default()
        };
        let s = ok(base()).unwrap();
        assert_eq!(
            (s.query.as_str(), s.limit, s.via),
            ("lumen", DEFAULT_LIMIT, Via::Api)
        );
        let msg = |a: Asked| ok(a).unwrap_err().to_string();
        assert!(msg(Asked::default()).contains("q is required"));
        assert!(
            msg(Asked {
                limit: Some(0),
                ..base()
            })
            .contains("limit must be from 1")
        );
        assert!(
            msg(Asked {
                limit: Some(201),
                ..base()
            })
            .contains("limit must be from 1")
        );
        assert!(
            msg(Asked {
                offset: Some(100_001),
                ..base()
            })
            .contains("offset")
        );
        assert!(
            msg(Asked {
                via: Some("x".into()),
                ..base()
            })
            .contains("via")
        );
        assert!(
            msg(Asked {
                path_prefix: Some("../x".into()),
                ..base()
            })
            .contains("..")
        );
        assert!(
            msg(Asked {
                extensions: Some(vec!["m d".into()]),
                ..base()
            })
            .contains("extension")
        );
        assert_eq!(
            path_prefix(Some("./notes\\a".into())).unwrap().as_deref(),
            Some("notes/a")
        );
        assert!(path_prefix(Some("/etc".into())).is_err());
        assert!(path_prefix(Some("C:/x".into())).is_err());
        assert_eq!(path_prefix(Some("".into())).unwrap(), None);
        assert_eq!(
            extensions(Some(vec![".MD".into(), " txt".into()])).unwrap(),
            vec!["md", "txt"]
        );
    }
}
