//! `cmem mcp`: the MCP server over stdio, for assistants that start a local process. It reads
//! the data folder's own files — the index (read-only: it takes no writer lock), the journal
//! and the team database (SQLite readers, safe beside a writer) — so it answers whether or not
//! a server runs. What the team must see goes through the running server's HTTP API, because
//! only the server may write the journal (it owns the id counter and the fan-out): searches
//! (published and recorded there, as from any client), messages and notifications. Without a
//! server, searches still answer from the index on disk and messages are refused with a
//! message that says to start one. Resource notifications come from a watcher of its own, which
//! also keeps the index current while no server does ([`Upkeep`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{FileChange, Shared};
use crate::access::auth::{self, AuthError, Identity};
use crate::api::search::Asked;
use crate::config::{Config, STATE_DIR};
use crate::journal::{self, ActivityQuery};
use crate::memory::service;
use crate::memory::{Memory, MemoryError, OpenOptions, indexer, watcher};

/// Why `cmem mcp` cannot start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{0}")]
    Memory(#[from] crate::memory::MemoryError),
    #[error("{0}")]
    Teams(#[from] crate::teams::TeamsError),
    #[error(
        "this data folder has users, so cmem mcp needs one's token: pass --token or set CM_TOKEN (`cmem token create USER` makes one)"
    )]
    TokenNeeded,
    #[error("the token was refused: {0}")]
    Refused(AuthError),
    #[error("cannot make an HTTP client: {0}")]
    Http(String),
    #[error("MCP session: {0}")]
    Session(String),
}

/// How long a finding about the server (running or not) is trusted.
const SERVER_CHECK_EVERY: Duration = Duration::from_secs(5);

/// The stdio backend: the data folder on disk, and the running server when there is one.
pub(crate) struct Local {
    data_dir: PathBuf,
    journal: PathBuf,
    /// `search_history_shared` in the folder's configuration.
    pub(super) history_shared: bool,
    /// Where this folder's server would listen (`--url`, else the configured `bind`).
    server_url: Option<String>,
    token: Option<String>,
    http: reqwest::Client,
    /// When the server was last looked for, and whether it was found.
    checked: Mutex<Option<(Instant, bool)>>,
    /// Stops the watcher when dropped with the process.
    _stop: CancellationToken,
}

/// What `cmem mcp` was given.
pub struct LocalOptions {
    pub data_dir: PathBuf,
    pub config: Config,
    pub token: Option<String>,
    pub url: Option<String>,
}

/// `cmem mcp`: opens the data folder and serves one MCP session on stdin/stdout until the
/// assistant closes it.
pub async fn serve_stdio(opts: LocalOptions) -> Result<(), LocalError> {
    use rmcp::ServiceExt;
    let (shared, identity) = open(opts)?;
    let running = super::Mcp::with_identity(shared, identity)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| LocalError::Session(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| LocalError::Session(e.to_string()))?;
    Ok(())
}

/// Opens the data folder for `cmem mcp`: the shared part every session uses, and who the
/// caller is (the token's user, or the local user when no users exist).
fn open(opts: LocalOptions) -> Result<(Arc<Shared>, Identity), LocalError> {
    let state = opts.data_dir.join(STATE_DIR);
    let read_only = OpenOptions {
        max_file_bytes: opts.config.index_max_file_bytes,
        history_max: opts.config.search_history_max,
        threads: 1,
        read_only: true,
        skip_extensions: opts.config.index_skip_extensions.clone(),
        language: opts.config.search_language.clone(),
        model: crate::memory::embed::ModelChoice::parse(&opts.config.embedding_model),
    };
    let memory = match Memory::open(&opts.data_dir, &read_only) {
        // an index of an earlier version: a writer makes it anew (or says another process
        // holds it), and the catch-up below fills it from the folder
        Err(MemoryError::Outdated(_)) => {
            let writer = OpenOptions {
                read_only: false,
                model: crate::memory::embed::ModelChoice::Off,
                ..read_only.clone()
            };
            drop(Memory::open(&opts.data_dir, &writer)?);
            Memory::open(&opts.data_dir, &read_only)?
        }
        other => other?,
    };
    let access = crate::access::Access::new(Arc::new(crate::app::open_teams(&opts.config)?));
    // a process on this machine that reads the folder itself: open when no users exist, whatever
    // the server's bind (its writes go through the server, which decides for itself)
    let identity = auth::identify(&access, opts.token.as_deref(), true).map_err(|e| match e {
        AuthError::Missing => LocalError::TokenNeeded,
        e => LocalError::Refused(e),
    })?;
    let (changes, _) = broadcast::channel(1024);
    let stop = CancellationToken::new();
    let upkeep = Upkeep {
        data_dir: opts.data_dir.clone(),
        options: OpenOptions {
            read_only: false,
            // the upkeep keeps the keyword index; the vectors are the server's to make
            model: crate::memory::embed::ModelChoice::Off,
            ..read_only.clone()
        },
    };
    let first = upkeep.clone();
    tokio::task::spawn_blocking(move || first.catch_up());
    if let Some(mut batches) = watcher::watch(&memory.root, stop.clone()) {
        let tx = changes.clone();
        tokio::spawn(async move {
            while let Some(batch) = batches.recv().await {
                let files = batch.clone();
                let u = upkeep.clone();
                let touched = tokio::task::spawn_blocking(move || u.update(&files))
                    .await
                    .unwrap_or_default();
                // the reported paths, then the documents found or gone under reported folders
                let all = batch
                    .into_iter()
                    .map(|c| (c.rel, c.kind))
                    .chain(touched.into_iter().map(|t| (t.rel, t.kind)));
                for (path, kind) in all {
                    let _ = tx.send(FileChange {
                        path,
                        kind: kind.to_string(),
                    });
                }
            }
        });
    }
    let server_url = opts.url.clone().or_else(|| {
        let bind = opts.config.bind;
        (bind.port() != 0).then(|| {
            let ip = if bind.ip().is_unspecified() {
                if bind.is_ipv6() {
                    "[::1]".to_string()
                } else {
                    "127.0.0.1".to_string()
                }
            } else if bind.is_ipv6() {
                format!("[{}]", bind.ip())
            } else {
                bind.ip().to_string()
            };
            format!("http://{ip}:{}", bind.port())
        })
    });
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| LocalError::Http(e.to_string()))?;
    let local = Local {
        data_dir: opts.data_dir.clone(),
        journal: state.join("journal.sqlite3"),
        history_shared: opts.config.search_history_shared,
        server_url: server_url.map(|u| u.trim_end_matches('/').to_string()),
        token: opts.token,
        http,
        checked: Mutex::new(None),
        _stop: stop,
    };
    let shared = Arc::new(Shared {
        memory,
        access,
        max_file_bytes: opts.config.index_max_file_bytes,
        changes,
        backend: super::Backend::Local(local),
    });
    Ok((shared, identity))
}

/// Keeps the folder's index current while no server does: the index's writer is taken only for
/// a catch-up run at start and for each batch of changes, and given back at once, so a server
/// started later gets it (it waits a few seconds for it, `server::Server::bind`). While a
/// server (or `cmem index`) holds it, that one indexes and this does nothing.
#[derive(Clone)]
struct Upkeep {
    data_dir: PathBuf,
    options: OpenOptions,
}

impl Upkeep {
    fn with_writer<T: Default>(
        &self,
        what: &str,
        f: impl FnOnce(&Memory) -> Result<T, MemoryError>,
    ) -> T {
        match Memory::open(&self.data_dir, &self.options) {
            Ok(m) => match f(&m) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "cmem mcp could not {what}");
                    T::default()
                }
            },
            Err(MemoryError::Locked(_)) => {
                tracing::debug!("the index is kept by another process; it indexes");
                T::default()
            }
            Err(e) => {
                tracing::warn!(error = %e, "cmem mcp could not {what}");
                T::default()
            }
        }
    }

    /// An incremental run over the folder (only what changed since the last one).
    fn catch_up(&self) {
        self.with_writer("index the folder", |m| {
            indexer::run_blocking(m, None, &mut |_: &str, _: Value| {})
        });
    }

    /// The files the watcher reported; returns the documents changed under reported folders
    /// (none when another process keeps the index: that one publishes them).
    fn update(&self, files: &[watcher::Change]) -> Vec<indexer::Touched> {
        self.with_writer("update the index", |m| indexer::update_files(m, files))
    }
}

impl Local {
    /// The URL of this folder's running server, if one answers there with this folder's
    /// journal (same epoch); looked for at most every few seconds.
    async fn server(&self) -> Option<&str> {
        let url = self.server_url.as_deref()?;
        if let Ok(c) = self.checked.lock()
            && let Some((at, found)) = *c
            && at.elapsed() < SERVER_CHECK_EVERY
        {
            return found.then_some(url);
        }
        let found = self.same_journal(url).await;
        if let Ok(mut c) = self.checked.lock() {
            *c = Some((Instant::now(), found));
        }
        found.then_some(url)
    }

    async fn same_journal(&self, url: &str) -> bool {
        let Ok(r) = self
            .http
            .get(format!("{url}/health"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        else {
            return false;
        };
        let Ok(v) = r.json::<Value>().await else {
            return false;
        };
        let theirs = v["data"]["journal"]["epoch"].as_str().unwrap_or_default();
        let path = self.journal.clone();
        let ours = tokio::task::spawn_blocking(move || journal::describe(&path))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|(epoch, _)| epoch);
        !theirs.is_empty() && ours.as_deref() == Some(theirs)
    }

    /// `POST path` on the running server; its answer's `data`, or its error.
    pub async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        self.post_to_server(path, body).await.map_err(|(_, e)| e)
    }

    /// As [`Local::post`]; the error says whether the server could not be reached at all
    /// (then it is looked for again before the next request).
    async fn post_to_server(&self, path: &str, body: Value) -> Result<Value, (bool, String)> {
        let url = self.server().await.ok_or_else(|| {
            format!(
                "no cmem server is running for {} ({}); messages and notifications are delivered by the server: start it with `cmem serve --data {}`, or pass --url",
                self.data_dir.display(),
                self.server_url
                    .as_deref()
                    .map(|u| format!("looked at {u}"))
                    .unwrap_or_else(|| "its configured port is 0".into()),
                self.data_dir.display()
            )
        }).map_err(|e| (true, e))?;
        let mut req = self.http.post(format!("{url}{path}")).json(&body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                if let Ok(mut c) = self.checked.lock() {
                    *c = None;
                }
                return Err((true, format!("the server at {url} did not answer: {e}")));
            }
        };
        let status = resp.status();
        let v: Value = resp.json().await.map_err(|e| {
            (
                false,
                format!("the server at {url} answered {status} without JSON: {e}"),
            )
        })?;
        if v["success"] == json!(true) {
            Ok(v["data"].clone())
        } else {
            Err((
                false,
                v["error"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("the server refused it ({status})")),
            ))
        }
    }

    /// A search: through the running server when there is one (so it is published and
    /// recorded), else on the index on disk.
    pub async fn search(&self, shared: &Shared, asked: Asked) -> Result<Value, String> {
        if self.server().await.is_some() {
            let through = self
                .post_to_server(
                    "/api/search",
                    json!({
                        "q": asked.query,
                        "limit": asked.limit,
                        "path_prefix": asked.path_prefix,
                        "extensions": asked.extensions,
                        "mode": asked.mode,
                        "session": "mcp",
                        "via": "mcp",
                    }),
                )
                .await;
            match through {
                Ok(answer) => return Ok(answer),
                Err((false, refused)) => return Err(refused),
                // gone since it was last seen: the index on disk answers
                Err((true, _)) => {}
            }
        }
        // no server: the folder's index answers, checked and run by the same service
        let search = service::Search::validate(
            service::Asked {
                query: asked.query,
                limit: Some(asked.limit.unwrap_or(10)),
                path_prefix: asked.path_prefix,
                extensions: asked.extensions,
                mode: asked.mode,
                via: Some("mcp".into()),
                ..service::Asked::default()
            },
            "query",
        )
        .map_err(|e| e.to_string())?;
        let answer = service::search(&shared.memory, search)
            .await
            .map_err(|e| e.to_string())?;
        serde_json::to_value(answer).map_err(|e| e.to_string())
    }

    /// Events from the journal file (none before the server ever ran).
    pub async fn activity(
        &self,
        q: ActivityQuery,
    ) -> Result<Vec<Arc<crate::envelope::Event>>, String> {
        let path = self.journal.clone();
        tokio::task::spawn_blocking(move || {
            if !Path::new(&path).exists() {
                return Ok(Vec::new());
            }
            journal::activity_in(&path, &q).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }
}
