//! The MCP tools: their arguments (a JSON schema each, derived from the same structs that parse
//! them, so the two cannot disagree), what each does on either [`Backend`], and how answers
//! read. An answer is text written for an assistant; a refusal is a tool error whose text says
//! what to change.

use rmcp::model::{CallToolResult, ContentBlock, ErrorData as McpError, JsonObject};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{Backend, Shared};
use crate::access::auth::{self, Identity};
use crate::api::search::{self as api_search, Asked};
use crate::collab::messages::{self, NotificationIn, Outgoing};
use crate::journal::ActivityQuery;
use crate::memory::reader;
use crate::memory::search::{self, snippet_text};

/// `search_memory`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchMemory {
    /// What to look for: a question in plain words ("how do we deploy?"), or words,
    /// "an exact phrase", AND / OR, -excluded, title:word.
    pub query: String,
    /// `hybrid` (words and meaning, the default when the server has its embedding model),
    /// `keyword` (words only) or `semantic` (meaning only).
    pub mode: Option<String>,
    /// How many results (1-200, default 10).
    pub limit: Option<usize>,
    /// Only documents whose path starts with this (relative to the data folder, e.g. `docs/`).
    pub path_prefix: Option<String>,
    /// Only these file extensions, e.g. ["md", "txt"].
    pub extensions: Option<Vec<String>>,
}

/// `read_document`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadDocument {
    /// The document's path relative to the data folder, as search_memory or list_documents
    /// give it.
    pub path: String,
    /// First line to return (1-based, default 1).
    pub start_line: Option<u64>,
    /// Last line to return (inclusive; default: 2000 lines from start_line, or the end).
    pub end_line: Option<u64>,
}

/// `related_documents`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RelatedDocuments {
    /// The document to start from (relative to the data folder, as search results give it).
    pub path: String,
    /// How many (1-50, default 10).
    pub limit: Option<usize>,
}

/// `list_documents`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListDocuments {
    /// Only paths starting with this (relative to the data folder).
    pub path_prefix: Option<String>,
    /// How many (1-1000, default 100).
    pub limit: Option<usize>,
    /// Continue after this path (the last one of the previous page).
    pub after: Option<String>,
}

/// `recent_activity`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecentActivity {
    /// Only events after this id (the `since_id` the previous answer suggested). Without it,
    /// the newest events.
    pub since_id: Option<u64>,
    /// Only these event types, e.g. ["file_changed", "team_message"]. Without it, every type
    /// but the periodic system_status and search_started.
    pub types: Option<Vec<String>>,
    /// Only this workspace's events (you must be a member).
    pub workspace: Option<String>,
    /// How many (1-500, default 50).
    pub limit: Option<usize>,
}

/// `list_workspaces`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListWorkspaces {}

/// `post_message`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    /// The workspace to post in (list_workspaces names yours).
    pub workspace: String,
    /// The message.
    pub text: String,
}

/// `notify`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// The workspace whose members are notified.
    pub workspace: String,
    /// A short title.
    pub title: String,
    /// Details (optional).
    pub body: Option<String>,
    /// info (default), success, warning or error.
    pub level: Option<String>,
}

/// `similar_searches`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimilarSearches {
    /// A query; earlier searches resembling it are returned.
    pub query: String,
    /// How many (1-100, default 10).
    pub limit: Option<usize>,
}

/// Lines `read_document` returns when no range is asked for.
const DEFAULT_LINES: u64 = 2000;

/// Types `recent_activity` leaves out unless asked for by name.
const QUIET_TYPES: [&str; 2] = ["system_status", "search_started"];

fn schema<T: JsonSchema + 'static>() -> Value {
    Value::Object(
        rmcp::handler::server::tool::schema_for_type::<T>()
            .as_ref()
            .clone(),
    )
}

/// Every tool as `tools/list` gives it.
pub fn definitions() -> Vec<Value> {
    let read_only = json!({"readOnlyHint": true, "openWorldHint": false});
    let writes = json!({"readOnlyHint": false, "destructiveHint": false, "idempotentHint": false, "openWorldHint": false});
    vec![
        json!({
            "name": "search_memory",
            "title": "Search the team's memory",
            "description": "Searches the team's documents (the data folder) by words and by meaning: ask a question in plain words. Returns ranked passages: each with its document's path and title, the heading and line range of the passage that answers, a snippet (matching words in **bold**) and what found it (words, meaning, or both). Read a passage with read_document and its start_line/end_line. The search is shown to the team as a search event, like any other.",
            "inputSchema": schema::<SearchMemory>(),
            "annotations": read_only,
        }),
        json!({
            "name": "read_document",
            "title": "Read a document",
            "description": "Returns a document's text, or a range of its lines. The path is relative to the data folder, as search_memory and list_documents give it; absolute paths, `..`, hidden files and anything reached through a symbolic link are refused.",
            "inputSchema": schema::<ReadDocument>(),
            "annotations": read_only,
        }),
        json!({
            "name": "related_documents",
            "title": "Documents related to one",
            "description": "The documents nearest to the one at `path`, by the distinctive words they share with it and by meaning, best first: to build context around a file. Read one with read_document.",
            "inputSchema": schema::<RelatedDocuments>(),
            "annotations": read_only,
        }),
        json!({
            "name": "list_documents",
            "title": "List documents",
            "description": "Lists the indexed documents in path order, with size and last modification, optionally under a path prefix. Page with `after`.",
            "inputSchema": schema::<ListDocuments>(),
            "annotations": read_only,
        }),
        json!({
            "name": "recent_activity",
            "title": "What happened recently",
            "description": "Events from the team's journal that you may see: files changed, searches, team messages, notifications, shared document edits. Each line is `#id time type [scope] data`. Pass the suggested since_id next time to get only what is new.",
            "inputSchema": schema::<RecentActivity>(),
            "annotations": read_only,
        }),
        json!({
            "name": "list_workspaces",
            "title": "List your workspaces",
            "description": "The workspaces you may read and post in, with their members.",
            "inputSchema": schema::<ListWorkspaces>(),
            "annotations": read_only,
        }),
        json!({
            "name": "post_message",
            "title": "Post a message to a workspace",
            "description": "Posts a message to a workspace's team room; every member connected sees it at once, the others when they come back. Posted under your name.",
            "inputSchema": schema::<PostMessage>(),
            "annotations": writes,
        }),
        json!({
            "name": "notify",
            "title": "Notify a workspace",
            "description": "Sends a notification (title, optional body and level) to a workspace's members.",
            "inputSchema": schema::<Notify>(),
            "annotations": writes,
        }),
        json!({
            "name": "similar_searches",
            "title": "Earlier similar searches",
            "description": "Earlier searches that resemble a query (yours, or everyone's where the server shares the history), with how many results each found: what was already looked for.",
            "inputSchema": schema::<SimilarSearches>(),
            "annotations": read_only,
        }),
    ]
}

/// A tool's arguments, or the error an assistant reads.
fn parse<T: DeserializeOwned>(tool: &str, args: JsonObject) -> Result<T, String> {
    serde_json::from_value(Value::Object(args))
        .map_err(|e| format!("{tool}: {e} (tools/list gives each tool's arguments)"))
}

/// Parses `args` as each tool's arguments (for the fuzzers).
pub(super) fn parse_each(args: JsonObject) {
    let _ = parse::<SearchMemory>("", args.clone());
    let _ = parse::<ReadDocument>("", args.clone());
    let _ = parse::<ListDocuments>("", args.clone());
    let _ = parse::<RecentActivity>("", args.clone());
    let _ = parse::<ListWorkspaces>("", args.clone());
    let _ = parse::<PostMessage>("", args.clone());
    let _ = parse::<Notify>("", args.clone());
    let _ = parse::<SimilarSearches>("", args.clone());
    let _ = parse::<RelatedDocuments>("", args);
}

/// Runs a tool: `Err` only for a tool that does not exist.
pub async fn call(
    shared: &Shared,
    who: &Identity,
    name: &str,
    args: JsonObject,
) -> Result<CallToolResult, McpError> {
    let out = match name {
        "search_memory" => search_memory(shared, who, args).await,
        "read_document" => read_document(shared, args).await,
        "list_documents" => list_documents(shared, args).await,
        "related_documents" => related_documents(shared, args).await,
        "recent_activity" => recent_activity(shared, who, args).await,
        "list_workspaces" => list_workspaces(shared, who, args),
        "post_message" => post_message(shared, who, args).await,
        "notify" => notify(shared, who, args).await,
        "similar_searches" => similar_searches(shared, who, args).await,
        other => {
            return Err(McpError::invalid_params(
                format!("there is no tool `{other}`; tools/list names the tools"),
                None,
            ));
        }
    };
    Ok(match out {
        Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
        Err(why) => CallToolResult::error(vec![ContentBlock::text(why)]),
    })
}

/// Runs a search on the backend; the answer as `/api/search` gives it.
pub(super) async fn search(shared: &Shared, who: &Identity, asked: Asked) -> Result<Value, String> {
    match &shared.backend {
        Backend::Server(app) => api_search::run_for_mcp(app, who, asked)
            .await
            .map_err(|e| e.message)
            .and_then(|a| serde_json::to_value(a).map_err(|e| e.to_string())),
        Backend::Local(local) => local.search(shared, asked).await,
    }
}

async fn search_memory(
    shared: &Shared,
    who: &Identity,
    args: JsonObject,
) -> Result<String, String> {
    let a: SearchMemory = parse("search_memory", args)?;
    let query = a.query.trim().to_string();
    let answer = search(
        shared,
        who,
        Asked {
            query: query.clone(),
            limit: Some(a.limit.unwrap_or(10)),
            path_prefix: a.path_prefix,
            extensions: a.extensions,
            mode: a.mode,
        },
    )
    .await?;
    if answer["total"] == json!(0) && shared.memory.doc_count() == 0 {
        return Ok(
            "Nothing is indexed in this folder yet: `cmem serve` indexes it at start (or run `cmem index DIR`)."
                .into(),
        );
    }
    Ok(format_answer(&query, &answer))
}

/// A search answer as text.
pub(super) fn format_answer(query: &str, answer: &Value) -> String {
    let results = answer["results"].as_array().cloned().unwrap_or_default();
    let total = answer["total"].as_u64().unwrap_or(0);
    if results.is_empty() {
        return format!(
            "No document matches `{query}`. Try other words, fewer words, or a word's beginning; list_documents shows what there is."
        );
    }
    let mut out = format!(
        "{total} {} `{query}`; the best {}:\n",
        if total == 1 {
            "document matches"
        } else {
            "documents match"
        },
        results.len()
    );
    for (i, r) in results.iter().enumerate() {
        let path = r["path"].as_str().unwrap_or("");
        let title = r["title"].as_str().unwrap_or("");
        out.push_str(&format!("\n{}. {path}", i + 1));
        if !title.is_empty() && title != path {
            out.push_str(&format!(" — {title}"));
        }
        // why it matched: which searches found it
        let signals: Vec<&str> = r["signals"]
            .as_array()
            .map(|s| s.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let why = match (signals.contains(&"keyword"), signals.contains(&"semantic")) {
            (true, true) => "words and meaning",
            (false, true) => "meaning",
            _ => "words",
        };
        out.push_str(&format!(
            " (found by {why}, score {:.3}, modified {})\n",
            r["score"].as_f64().unwrap_or(0.0),
            r["last_modified"].as_str().unwrap_or("?")
        ));
        // the passage that answers: its headings and lines, for read_document
        let p = &r["passage"];
        if let (Some(start), Some(end)) = (p["start_line"].as_u64(), p["end_line"].as_u64()) {
            let heading = p["heading"].as_str().unwrap_or("");
            out.push_str(&format!(
                "   {}lines {start}-{end} (read_document with start_line {start}, end_line {end})\n",
                if heading.is_empty() {
                    String::new()
                } else {
                    format!("§ {heading}, ")
                }
            ));
        }
        let snippet = snippet_text(r["snippet"].as_str().unwrap_or(""), "**");
        if !snippet.is_empty() {
            out.push_str(&format!("   {snippet}\n"));
        }
    }
    out
}

async fn related_documents(shared: &Shared, args: JsonObject) -> Result<String, String> {
    let a: RelatedDocuments = parse("related_documents", args)?;
    let limit = a.limit.unwrap_or(10);
    if !(1..=50).contains(&limit) {
        return Err("limit must be from 1 to 50".into());
    }
    crate::memory::reader::check(&a.path).map_err(|e| e.to_string())?;
    let memory = shared.memory.clone();
    let path = a.path.clone();
    let near =
        tokio::task::spawn_blocking(move || crate::memory::hybrid::related(&memory, &path, limit))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    if near.is_empty() {
        return Ok(format!(
            "No other document shares enough distinctive words with `{}`.",
            a.path
        ));
    }
    let mut out = format!("The documents nearest to `{}`, best first:\n", a.path);
    for (i, r) in near.iter().enumerate() {
        out.push_str(&format!("\n{}. {}", i + 1, r.path));
        if !r.title.is_empty() && r.title != r.path {
            out.push_str(&format!(" — {}", r.title));
        }
        out.push_str(&format!(" (score {:.2})", r.score));
    }
    out.push('\n');
    Ok(out)
}

async fn read_document(shared: &Shared, args: JsonObject) -> Result<String, String> {
    let a: ReadDocument = parse("read_document", args)?;
    let start = a.start_line.unwrap_or(1);
    if start == 0 {
        return Err("start_line counts from 1".into());
    }
    if let Some(end) = a.end_line
        && end < start
    {
        return Err(format!("end_line ({end}) is before start_line ({start})"));
    }
    let root = shared.memory.root.clone();
    let max = shared.max_file_bytes;
    let path = a.path.replace('\\', "/");
    let p = path.clone();
    let doc = tokio::task::spawn_blocking(move || reader::read(&root, &p, max))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let lines: Vec<&str> = doc.text.lines().collect();
    let count = lines.len() as u64;
    if count == 0 {
        return Ok(format!("{path} is empty."));
    }
    if start > count {
        return Err(format!(
            "{path} has {count} line{}; start_line {start} is past its end",
            if count == 1 { "" } else { "s" }
        ));
    }
    let end = a
        .end_line
        .unwrap_or(start.saturating_add(DEFAULT_LINES - 1))
        .min(count);
    let mut out = format!(
        "{path} (lines {start}-{end} of {count}, modified {}):\n",
        doc.last_modified.as_deref().unwrap_or("?")
    );
    for l in &lines[(start - 1) as usize..end as usize] {
        out.push_str(l);
        out.push('\n');
    }
    if end < count && a.end_line.is_none() {
        out.push_str(&format!(
            "[{} more lines: read_document with start_line {}]\n",
            count - end,
            end + 1
        ));
    }
    Ok(out)
}

async fn list_documents(shared: &Shared, args: JsonObject) -> Result<String, String> {
    let a: ListDocuments = parse("list_documents", args)?;
    let limit = a.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err("limit must be from 1 to 1000".into());
    }
    let prefix = api_search::path_prefix(a.path_prefix)
        .map_err(|e| e.message)?
        .unwrap_or_default();
    let memory = shared.memory.clone();
    let p = prefix.clone();
    let (page, total) =
        tokio::task::spawn_blocking(move || search::list(&memory, &p, a.after.as_deref(), limit))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    if page.is_empty() {
        return Ok(if total == 0 {
            format!(
                "No indexed document{}.",
                if prefix.is_empty() {
                    String::new()
                } else {
                    format!(" under `{prefix}`")
                }
            )
        } else {
            format!("No more documents ({total} in all).")
        });
    }
    let mut out = format!(
        "{total} document{}{}; {} here:\n",
        if total == 1 { "" } else { "s" },
        if prefix.is_empty() {
            String::new()
        } else {
            format!(" under `{prefix}`")
        },
        page.len()
    );
    for d in &page {
        out.push_str(&format!(
            "{}  ({} bytes, modified {})\n",
            d.path, d.size, d.last_modified
        ));
    }
    if page.len() == limit
        && let Some(last) = page.last()
    {
        out.push_str(&format!(
            "[more: list_documents with after `{}`]\n",
            last.path
        ));
    }
    Ok(out)
}

/// The workspaces `who` belongs to now (every workspace on an open server).
pub(super) fn member_of(shared: &Shared, who: &Identity) -> Result<Vec<String>, String> {
    match who {
        Identity::Open => Ok(shared
            .access
            .workspaces()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|w| w.name)
            .collect()),
        Identity::User { user, .. } => shared
            .access
            .user(&user.name)
            .map_err(|e| e.to_string())?
            .map(|u| u.workspaces)
            .ok_or_else(|| format!("user `{}` no longer exists", user.name)),
    }
}

/// Events `who` may see, as `recent_activity` reads them.
pub(super) async fn activity(
    shared: &Shared,
    who: &Identity,
    workspace: Option<String>,
    mut q: ActivityQuery,
) -> Result<Vec<Value>, String> {
    let member = member_of(shared, who)?;
    q.scopes = match workspace {
        Some(ws) => {
            if !member.contains(&ws) {
                return Err(format!(
                    "`{}` is not a member of workspace `{ws}`; list_workspaces names yours",
                    who.user_name().unwrap_or(auth::LOCAL_USER)
                ));
            }
            vec![format!("workspace:{ws}")]
        }
        None => std::iter::once("global".to_string())
            .chain(member.iter().map(|w| format!("workspace:{w}")))
            // the caller's own searches; an admin's, everyone's (as on the live transports)
            .chain(match who {
                Identity::User { user, .. } if user.admin => {
                    Some(crate::envelope::EVERY_USER.to_string())
                }
                Identity::User { user, .. } => Some(format!("user:{}", user.id)),
                Identity::Open => None,
            })
            .collect(),
    };
    let events = match &shared.backend {
        Backend::Server(app) => app
            .hub
            .journal
            .activity(q)
            .await
            .map_err(|e| e.to_string())?,
        Backend::Local(local) => local.activity(q).await?,
    };
    Ok(events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e.json()).ok())
        .collect())
}

async fn recent_activity(
    shared: &Shared,
    who: &Identity,
    args: JsonObject,
) -> Result<String, String> {
    let a: RecentActivity = parse("recent_activity", args)?;
    let limit = a.limit.unwrap_or(50);
    if limit == 0 || limit > 500 {
        return Err("limit must be from 1 to 500".into());
    }
    if let Some(types) = &a.types {
        if types.len() > 50 {
            return Err("types: at most 50".into());
        }
        if let Some(t) = types
            .iter()
            .find(|t| !crate::envelope::is_identifier(t, 64))
        {
            return Err(format!(
                "types: `{t}` is not an event type (letters, digits, _ - . :)"
            ));
        }
    }
    let events = activity(
        shared,
        who,
        a.workspace.clone(),
        ActivityQuery {
            after: a.since_id,
            scopes: Vec::new(),
            types: a.types,
            exclude: QUIET_TYPES.iter().map(|t| t.to_string()).collect(),
            limit,
        },
    )
    .await?;
    if events.is_empty() {
        return Ok(match a.since_id {
            Some(id) => format!("Nothing new after #{id}."),
            None => "Nothing has happened yet that you may see.".into(),
        });
    }
    let mut out = format!(
        "{} event{}:\n",
        events.len(),
        if events.len() == 1 { "" } else { "s" }
    );
    for e in &events {
        out.push_str(&event_line(e));
        out.push('\n');
    }
    if let Some(last) = events.last().and_then(|e| e["id"].as_u64()) {
        out.push_str(&format!(
            "[newer ones: recent_activity with since_id {last}]\n"
        ));
    }
    Ok(out)
}

/// One event as a line: `#id time type [scope] data`, the data cut at 300 characters.
pub(super) fn event_line(e: &Value) -> String {
    let mut data = e["data"].to_string();
    if let Some(p) = e.get("publisher") {
        data = format!("{data} by {p}");
    }
    if data.chars().count() > 300 {
        data = data.chars().take(300).collect::<String>() + "…";
    }
    format!(
        "#{} {} {} [{}] {}",
        e["id"],
        e["ts"].as_str().unwrap_or("?"),
        e["type"].as_str().unwrap_or("?"),
        e["scope"].as_str().unwrap_or("?"),
        data
    )
}

fn list_workspaces(shared: &Shared, who: &Identity, args: JsonObject) -> Result<String, String> {
    let _: ListWorkspaces = parse("list_workspaces", args)?;
    let mine = member_of(shared, who)?;
    let all = shared.access.workspaces().map_err(|e| e.to_string())?;
    let me = match who {
        Identity::Open => "the local user of an open server (no users exist)".to_string(),
        Identity::User { user, .. } => format!(
            "`{}`{}",
            user.name,
            if user.admin { " (admin)" } else { "" }
        ),
    };
    if mine.is_empty() && *who == Identity::Open {
        return Ok(
            "No workspace exists yet; `cmem workspace create NAME` makes one (on an open server every workspace is yours)."
                .into(),
        );
    }
    if mine.is_empty() {
        return Ok(format!(
            "You are {me}, and a member of no workspace. An admin adds members with `cmem workspace add-member`."
        ));
    }
    let mut out = format!("You are {me}. Your workspaces:\n");
    for w in all.iter().filter(|w| mine.contains(&w.name)) {
        out.push_str(&format!(
            "{}  (members: {})\n",
            w.name,
            w.members.join(", ")
        ));
    }
    Ok(out)
}

async fn post_message(shared: &Shared, who: &Identity, args: JsonObject) -> Result<String, String> {
    let a: PostMessage = parse("post_message", args)?;
    let msg = match &shared.backend {
        Backend::Server(app) => {
            let user = who.user_name().unwrap_or(auth::LOCAL_USER);
            app.collab
                .take_http_budget(user, app.config.team_messages_per_s)
                .map_err(|e| e.to_string())?;
            let (m, _) = messages::send(
                &app.collab,
                &app.hub,
                who,
                Outgoing {
                    workspace: &a.workspace,
                    text: &a.text,
                    client_msg_id: None,
                },
            )
            .await
            .map_err(|e| e.to_string())?;
            serde_json::to_value(m).map_err(|e| e.to_string())?
        }
        Backend::Local(local) => local
            .post(
                &format!("/api/workspaces/{}/messages", url_part(&a.workspace)),
                json!({"text": a.text}),
            )
            .await?["message"]
            .take(),
    };
    Ok(format!(
        "Posted to `{}` as `{}` (message {}, {}).",
        a.workspace,
        msg["user"].as_str().unwrap_or("?"),
        msg["id"],
        msg["ts"].as_str().unwrap_or("?")
    ))
}

async fn notify(shared: &Shared, who: &Identity, args: JsonObject) -> Result<String, String> {
    let a: Notify = parse("notify", args)?;
    let body = a.body.unwrap_or_default();
    let note = match &shared.backend {
        Backend::Server(app) => {
            let user = who.user_name().unwrap_or(auth::LOCAL_USER);
            app.collab
                .take_http_budget(user, app.config.team_messages_per_s)
                .map_err(|e| e.to_string())?;
            let n = messages::notify(
                &app.collab,
                &app.hub,
                who,
                NotificationIn {
                    workspace: &a.workspace,
                    title: &a.title,
                    body: &body,
                    level: a.level.as_deref(),
                },
            )
            .await
            .map_err(|e| e.to_string())?;
            serde_json::to_value(n).map_err(|e| e.to_string())?
        }
        Backend::Local(local) => {
            let mut b = json!({"title": a.title, "body": body});
            if let Some(l) = &a.level {
                b["level"] = json!(l);
            }
            local
                .post(
                    &format!("/api/workspaces/{}/notifications", url_part(&a.workspace)),
                    b,
                )
                .await?
        }
    };
    Ok(format!(
        "Notified `{}` ({}): {} (notification {}).",
        a.workspace,
        note["level"].as_str().unwrap_or("info"),
        note["title"].as_str().unwrap_or(""),
        note["id"]
    ))
}

/// A workspace name in a URL path: names are identifiers, anything else is refused by the
/// server with a message; encoded here so it cannot change the path.
fn url_part(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn similar_searches(
    shared: &Shared,
    who: &Identity,
    args: JsonObject,
) -> Result<String, String> {
    let a: SimilarSearches = parse("similar_searches", args)?;
    let limit = a.limit.unwrap_or(10);
    if limit == 0 || limit > 100 {
        return Err("limit must be from 1 to 100".into());
    }
    let text = api_search::query_text(&a.query, "query").map_err(|e| e.message)?;
    let history_shared = match &shared.backend {
        Backend::Server(app) => app.config.search_history_shared,
        Backend::Local(local) => local.history_shared,
    };
    let found = api_search::similar_to(&shared.memory, history_shared, who, text.clone(), limit)
        .await
        .map_err(|e| e.message)?;
    let list = found["similar"].as_array().cloned().unwrap_or_default();
    if found["history_enabled"] == json!(false) {
        return Ok("The searches history is off on this server (search_history_max = 0).".into());
    }
    if list.is_empty() {
        return Ok(format!(
            "Nobody searched for anything like `{text}` before."
        ));
    }
    let mut out = format!("Earlier searches like `{text}`:\n");
    for s in &list {
        out.push_str(&format!(
            "`{}` — {} result{}, searched {} time{}, last {} (similar in {}, {:.2})\n",
            s["query"].as_str().unwrap_or(""),
            s["results"],
            if s["results"] == json!(1) { "" } else { "s" },
            s["times"],
            if s["times"] == json!(1) { "" } else { "s" },
            s["last_searched"].as_str().unwrap_or("?"),
            s["by"].as_str().unwrap_or("words"),
            s["similarity"].as_f64().unwrap_or(0.0)
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_an_object_schema_and_a_description() {
        let defs = definitions();
        assert_eq!(defs.len(), 9);
        for d in defs {
            assert_eq!(d["inputSchema"]["type"], "object", "{d}");
            assert!(d["description"].as_str().is_some_and(|s| s.len() > 40));
        }
    }

    #[test]
    fn unknown_arguments_are_named() {
        let mut args = JsonObject::new();
        args.insert("query".into(), json!("x"));
        args.insert("limt".into(), json!(3));
        let e = parse::<SearchMemory>("search_memory", args).unwrap_err();
        assert!(e.contains("limt"), "{e}");
    }

    #[test]
    fn event_lines_are_bounded() {
        let long = "x".repeat(5000);
        let line = event_line(
            &json!({"id": 7, "ts": "t", "type": "note", "scope": "global", "data": {"text": long}}),
        );
        assert!(line.starts_with("#7 t note [global] "));
        assert!(line.chars().count() < 400);
    }
}
