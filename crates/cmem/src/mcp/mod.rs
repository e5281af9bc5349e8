//! The MCP server: how AI assistants reach the team's memory, with the official Rust SDK
//! (`rmcp`). Assistants speak the Model Context Protocol; this module answers it with tools
//! (search, read, list, recent activity, workspaces, post a message, notify, similar searches),
//! documents as resources whose changes are pushed to subscribers, and two prompts.
//!
//! Why it looks like this:
//! - **One handler, two places.** [`Mcp`] serves streamable HTTP at `/mcp` inside the server
//!   ([`http`]) and stdio in `cmem mcp` ([`local`]). What differs is behind [`Backend`]: in the
//!   server every tool goes through the same functions as the HTTP API (a search is validated,
//!   published and recorded exactly as `/api/search` does it); in `cmem mcp` reads come from
//!   the data folder's index, journal and team database on disk (read-only, beside a running
//!   server), and whatever the team must see (searches, messages, notifications) goes through
//!   the running server's HTTP API.
//! - **Who asks** is decided per request: over HTTP the `authenticate` layer puts the caller's
//!   [`Identity`] into the request, which rmcp hands to the handler (a revoked token stops
//!   working at its next request); over stdio it is fixed when `cmem mcp` starts.
//! - **Errors an assistant can act on.** A tool whose arguments are wrong, or that is refused,
//!   answers a tool error (`isError`) whose text says what to change; protocol errors are kept
//!   for requests that cannot be routed at all.
//! - **Live resources.** `file_changed` events (the server's watcher, through the journal; or
//!   `cmem mcp`'s own watcher) become `notifications/resources/updated` for subscribed documents
//!   and `notifications/resources/list_changed` when a document appears or goes.

pub(crate) mod http;
pub mod local;
mod prompts;
mod tools;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResponse, ProtocolVersion};
use rmcp::model::{
    ErrorData as McpError, GetPromptRequestParams, GetPromptResponse, Implementation,
    ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities,
    ServerConfig, SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, Peer, RequestContext};
use rmcp::{RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::access::Access;
use crate::access::auth::Identity;
use crate::app::App;
use crate::memory::Memory;
use crate::memory::reader::{self, ReadError};
use crate::memory::search;
use crate::teams::TokenHolder;

/// Where resource URIs point: `cmem://doc/<path relative to the data folder>`.
pub const DOC_URI: &str = "cmem://doc/";

/// Most documents one session may subscribe to.
pub const MAX_SUBSCRIPTIONS: usize = 1000;

/// Documents in one page of `resources/list`.
const RESOURCE_PAGE: usize = 500;

/// A document that changed on disk.
#[derive(Debug, Clone)]
pub struct FileChange {
    /// Relative to the data folder, `/`-separated.
    pub path: String,
    /// `created`, `modified` or `deleted`.
    pub kind: String,
}

/// Where the work is done.
pub(crate) enum Backend {
    /// Inside the server: the same state every HTTP handler receives.
    Server(App),
    /// `cmem mcp`: the data folder on disk, and the running server if there is one.
    Local(local::Local),
}

/// What every session shares.
pub(crate) struct Shared {
    pub(crate) backend: Backend,
    pub(crate) memory: Arc<Memory>,
    pub(crate) access: Access,
    /// Largest document `read_document` returns (`index_max_file_bytes`).
    pub(crate) max_file_bytes: u64,
    /// Every change to the data folder, for resource notifications.
    pub(crate) changes: broadcast::Sender<FileChange>,
}

impl Shared {
    /// The shared part for the server: follows `file_changed` in the journal.
    pub(crate) fn for_server(app: App) -> Arc<Shared> {
        let (changes, _) = broadcast::channel(1024);
        let mut tap = app.hub.tap();
        let tx = changes.clone();
        let stop = app.hub.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = stop.cancelled() => return,
                    ev = tap.recv() => ev,
                };
                match ev {
                    Ok(ev) if ev.kind == "file_changed" => {
                        if let Some(change) = file_change(ev.json()) {
                            let _ = tx.send(change);
                        }
                    }
                    Ok(_) => {}
                    // something may have been missed: every subscriber re-reads
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(FileChange {
                            path: String::new(),
                            kind: "unknown".into(),
                        });
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Arc::new(Shared {
            memory: app.memory.clone(),
            access: app.access.clone(),
            max_file_bytes: app.config.index_max_file_bytes,
            changes,
            backend: Backend::Server(app),
        })
    }

    fn root(&self) -> &PathBuf {
        &self.memory.root
    }
}

/// `{path, kind}` out of a `file_changed` envelope.
fn file_change(envelope: &str) -> Option<FileChange> {
    let v: Value = serde_json::from_str(envelope).ok()?;
    Some(FileChange {
        path: v["data"]["path"].as_str()?.to_string(),
        kind: v["data"]["kind"].as_str()?.to_string(),
    })
}

/// One MCP session (a connection over stdio, or one `Mcp-Session-Id` over HTTP).
#[derive(Clone)]
pub struct Mcp {
    shared: Arc<Shared>,
    /// The caller when it is fixed (stdio); over HTTP it comes with each request.
    fixed: Option<Identity>,
    /// Documents this session subscribed to (relative paths).
    subscribed: Arc<Mutex<HashSet<String>>>,
}

impl Mcp {
    /// A session whose caller arrives with each HTTP request.
    pub(crate) fn new(shared: Arc<Shared>) -> Mcp {
        Mcp {
            shared,
            fixed: None,
            subscribed: Default::default(),
        }
    }

    /// A session whose caller is `identity` throughout (stdio).
    pub(crate) fn with_identity(shared: Arc<Shared>, identity: Identity) -> Mcp {
        Mcp {
            fixed: Some(identity),
            ..Mcp::new(shared)
        }
    }

    fn identity(&self, ext: &rmcp::model::Extensions) -> Result<Identity, McpError> {
        if let Some(i) = &self.fixed {
            // a token is looked at again on every request, as the HTTP side does
            let Some(id) = i.token_id() else {
                return Ok(i.clone());
            };
            return match self.shared.access.token_holder(id) {
                Ok(TokenHolder::Active(user)) => Ok(Identity::User {
                    user,
                    token_id: id.to_string(),
                }),
                Ok(_) => Err(McpError::invalid_request(
                    "the token cmem mcp was started with has been revoked (or its user removed); start it again with a valid one",
                    None,
                )),
                Err(e) => Err(McpError::internal_error(e.to_string(), None)),
            };
        }
        ext.get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Identity>())
            .cloned()
            .ok_or_else(|| McpError::internal_error("the request carries no caller", None))
    }
}

/// Builds an rmcp model value from its JSON form (the wire format is the stable interface;
/// the Rust structs are non-exhaustive).
fn wire<T: DeserializeOwned>(v: Value) -> Result<T, McpError> {
    serde_json::from_value(v).map_err(|e| McpError::internal_error(e.to_string(), None))
}

/// The relative path a `cmem://doc/…` URI names (percent-decoded), checked as every client
/// path is.
pub fn doc_path(uri: &str) -> Result<String, String> {
    let rest = uri.strip_prefix(DOC_URI).ok_or_else(|| {
        format!("`{uri}` is not a document URI; documents are {DOC_URI}<path relative to the data folder>")
    })?;
    let path = percent_decode(rest).ok_or_else(|| format!("`{uri}` is not a valid URI"))?;
    reader::check(&path).map_err(|e| e.to_string())?;
    Ok(path)
}

/// The URI of a document.
pub fn doc_uri(path: &str) -> String {
    let mut out = String::from(DOC_URI);
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A MIME type for a document, by extension.
fn mime(path: &str) -> &'static str {
    match path
        .rsplit('.')
        .next()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("md" | "markdown") => "text/markdown",
        Some("json") => "application/json",
        Some("html" | "htm") => "text/html",
        Some("csv") => "text/csv",
        _ => "text/plain",
    }
}

impl Mcp {
    /// Sends resource notifications to this session's peer until its transport closes or, for
    /// a token, until the token is revoked.
    fn follow_changes(&self, peer: Peer<RoleServer>, token_id: Option<String>) {
        let mut rx = self.shared.changes.subscribe();
        let subscribed = self.subscribed.clone();
        let access = self.shared.access.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(15));
            loop {
                let change = tokio::select! {
                    c = rx.recv() => Some(c),
                    _ = tick.tick() => None,
                };
                if peer.is_transport_closed() {
                    return;
                }
                if let Some(id) = &token_id
                    && !matches!(access.token_holder(id), Ok(TokenHolder::Active(_)))
                {
                    tracing::info!(
                        "an MCP session's token is no longer valid; its notifications stop"
                    );
                    return;
                }
                let Some(change) = change else { continue };
                let (updated, listed): (Vec<String>, bool) = match change {
                    Ok(c) if c.kind == "unknown" => (all(&subscribed), true),
                    Ok(c) => {
                        let hit = subscribed
                            .lock()
                            .map(|s| s.contains(&c.path))
                            .unwrap_or(false);
                        (
                            if hit { vec![c.path.clone()] } else { vec![] },
                            c.kind != "modified",
                        )
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => (all(&subscribed), true),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                for path in updated {
                    let param = rmcp::model::ResourceUpdatedNotificationParam::new(doc_uri(&path));
                    if peer.notify_resource_updated(param).await.is_err() {
                        return;
                    }
                }
                if listed && peer.notify_resource_list_changed().await.is_err() {
                    return;
                }
            }
        });
    }
}

fn all(subscribed: &Mutex<HashSet<String>>) -> Vec<String> {
    subscribed
        .lock()
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default()
}

impl ServerHandler for Mcp {
    fn get_info(&self) -> ServerConfig {
        let caps = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_resources_list_changed()
            .enable_prompts()
            .build();
        ServerConfig::new(caps)
            .with_server_info(Implementation::new("cmem", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Collective Memory: the team's shared documents, searchable, and what the team \
                 did (searches, messages, notifications, file changes) in one journal. Start \
                 with search_memory, then read_document on a result's path; recent_activity \
                 tells what changed. Documents are also resources (cmem://doc/<path>); \
                 subscribe to one to hear when it changes on disk.",
            )
    }

    /// Sessions begin with `initialize` (protocol versions up to 2025-11-25): resource
    /// subscriptions need a session to notify.
    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        std::borrow::Cow::Owned(vec![
            ProtocolVersion::V_2024_11_05,
            ProtocolVersion::V_2025_03_26,
            ProtocolVersion::V_2025_06_18,
            ProtocolVersion::V_2025_11_25,
        ])
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let token = self
            .identity(&context.extensions)
            .ok()
            .and_then(|i| i.token_id().map(str::to_string));
        self.follow_changes(context.peer, token);
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        wire(json!({ "tools": tools::definitions() }))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let identity = self.identity(&context.extensions)?;
        let args = request.arguments.unwrap_or_default();
        let result = tools::call(&self.shared, &identity, &request.name, args).await?;
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let after = request.and_then(|r| r.cursor);
        let memory = self.shared.memory.clone();
        let a = after.clone();
        let (page, _) = tokio::task::spawn_blocking(move || {
            search::list(&memory, "", a.as_deref(), RESOURCE_PAGE)
        })
        .await
        .map_err(|e| McpError::internal_error(e.to_string(), None))?
        .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        let next = (page.len() == RESOURCE_PAGE)
            .then(|| page.last().map(|d| d.path.clone()))
            .flatten();
        let resources: Vec<Value> = page
            .iter()
            .map(|d| {
                json!({
                    "uri": doc_uri(&d.path),
                    "name": d.path,
                    "mimeType": mime(&d.path),
                    "size": d.size,
                })
            })
            .collect();
        let mut out = json!({ "resources": resources });
        if let Some(n) = next {
            out["nextCursor"] = json!(n);
        }
        wire(out)
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        wire(json!({ "resourceTemplates": [{
            "uriTemplate": format!("{DOC_URI}{{path}}"),
            "name": "document",
            "title": "A document of the team's memory",
            "description": "A text file of the data folder, by its path relative to the folder \
                            (as search_memory and list_documents give it), e.g. cmem://doc/notes/plan.md",
        }]}))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let path = doc_path(&request.uri).map_err(|m| McpError::invalid_params(m, None))?;
        let root = self.shared.root().clone();
        let max = self.shared.max_file_bytes;
        let p = path.clone();
        let doc = tokio::task::spawn_blocking(move || reader::read(&root, &p, max))
            .await
            .map_err(|e| McpError::internal_error(e.to_string(), None))?
            .map_err(|e| match e {
                ReadError::NotFound(_) => McpError::resource_not_found(e.to_string(), None),
                ReadError::Io { .. } => McpError::internal_error(e.to_string(), None),
                _ => McpError::invalid_params(e.to_string(), None),
            })?;
        let result: rmcp::model::ReadResourceResult = wire(json!({ "contents": [{
            "uri": request.uri,
            "mimeType": mime(&path),
            "text": doc.text,
        }]}))?;
        Ok(result.into())
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let path = doc_path(&request.uri).map_err(|m| McpError::invalid_params(m, None))?;
        // only a document that exists: names of nothing would let a session pin memory
        let full = self.shared.root().join(&path);
        let is_file = tokio::task::spawn_blocking(move || {
            std::fs::symlink_metadata(full).is_ok_and(|m| m.is_file())
        })
        .await
        .unwrap_or(false);
        if !is_file {
            return Err(McpError::resource_not_found(
                format!("there is no document `{path}` to follow; list_documents names them"),
                None,
            ));
        }
        let mut subs = self
            .subscribed
            .lock()
            .map_err(|_| McpError::internal_error("subscriptions unavailable", None))?;
        if subs.len() >= MAX_SUBSCRIPTIONS && !subs.contains(&path) {
            return Err(McpError::invalid_params(
                format!(
                    "a session may follow at most {MAX_SUBSCRIPTIONS} documents; unsubscribe from some first"
                ),
                None,
            ));
        }
        subs.insert(path);
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let path = doc_path(&request.uri).map_err(|m| McpError::invalid_params(m, None))?;
        if let Ok(mut subs) = self.subscribed.lock() {
            subs.remove(&path);
        }
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        wire(json!({ "prompts": prompts::definitions() }))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let identity = self.identity(&context.extensions)?;
        let args = request.arguments.unwrap_or_default();
        let result = prompts::get(&self.shared, &identity, &request.name, args).await?;
        Ok(result.into())
    }
}

/// Every parser of this module a client reaches, for [`crate::fuzzing`]: a document URI, a
/// prompt's `since`, and a tool's arguments for each tool. An accepted URI names a checked
/// relative path that round-trips.
pub(crate) fn fuzz_input(text: &str) {
    if let Ok(path) = doc_path(text) {
        assert!(reader::check(&path).is_ok(), "accepted `{path}`");
        assert_eq!(doc_path(&doc_uri(&path)).as_deref(), Ok(path.as_str()));
    }
    let _ = prompts::since_time(text);
    if let Ok(Value::Object(args)) = serde_json::from_str::<Value>(text) {
        tools::parse_each(args);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_refuse_escapes() {
        for p in ["notes/plan.md", "a b/ü.txt", "x%y.md"] {
            assert_eq!(doc_path(&doc_uri(p)).as_deref(), Ok(p));
        }
        assert!(doc_path("cmem://doc/notes%2Fplan.md").is_ok());
        for bad in [
            "cmem://doc/../etc/passwd",
            "cmem://doc/%2E%2E/x",
            "cmem://doc//etc/passwd",
            "cmem://doc/.git/config",
            "cmem://doc/",
            "file:///etc/passwd",
            "cmem://doc/%zz",
        ] {
            assert!(doc_path(bad).is_err(), "{bad}");
        }
    }
}
