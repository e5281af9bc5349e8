//! What Socket.IO clients may send: `join_workspace`, `leave_workspace`, `team_message`,
//! `team_notification`, and for shared documents `doc_sync` and `doc_update` (whose payloads
//! may carry binary, so they are read as `rmpv::Value`).
//! Each answers with an ack `{ok: true, …}` or `{ok: false, code, message}`; anything a client
//! should see as a consequence (the message itself, presence) goes through the journal like
//! every other event. Acks are the only thing written to a socket from here. The [`Socket`]
//! (one client in the namespace) is defined here, beneath the namespace that makes it.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::MAX_WORKSPACES_PER_CONN;
use crate::access::auth::Identity;
use crate::access::auth::check_access;
use crate::app::App;
use crate::collab::docs;
use crate::collab::messages::{self, Outgoing};
use crate::collab::rate::RateLimit;
use crate::hub::registry::Conn;
use crate::net::StallFlag;
use crate::teams::TeamsError;

/// One client in the namespace.
pub struct Socket {
    pub(crate) app: App,
    pub(crate) conn: Arc<Conn>,
    pub(crate) identity: Identity,
    pub(crate) stall: Option<StallFlag>,
    /// Message and document-operation budgets, made on first use.
    pub(crate) budgets: Mutex<Option<Box<(RateLimit, RateLimit)>>>,
}

/// Which of a socket's budgets an operation spends.
#[derive(Clone, Copy)]
enum Budget {
    Messages,
    Documents,
}

/// Spends one operation from the socket's budget (both budgets are made on first use: most
/// sockets never send anything).
fn spend(s: &Socket, which: Budget) -> Result<(), TeamsError> {
    let mut b = s
        .budgets
        .lock()
        .map_err(|_| TeamsError::Invalid("rate limit lock poisoned".into()))?;
    let c = &s.app.config;
    let (messages, documents) = &mut **b.get_or_insert_with(|| {
        Box::new((
            RateLimit::new(c.team_messages_per_s),
            RateLimit::new(c.doc_ops_per_s).named("document operations"),
        ))
    });
    match which {
        Budget::Messages => messages.take(),
        Budget::Documents => documents.take(),
    }
}

fn refuse(e: &TeamsError) -> Value {
    let message = e.to_string();
    json!({"ok": false, "code": e.code(), "message": message, "error": message})
}

/// `{workspace}` or a bare workspace name.
pub(crate) fn workspace_of(d: &Value) -> Result<String, TeamsError> {
    match d {
        Value::String(s) => Ok(s.clone()),
        Value::Object(o) => o
            .get("workspace")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| TeamsError::Invalid("workspace is missing: send {workspace}".into())),
        _ => Err(TeamsError::Invalid(
            "send {workspace} or the workspace name".into(),
        )),
    }
}

fn who(s: &Socket) -> &Identity {
    &s.identity
}

/// Keeps the socket's workspaces for connection state recovery.
fn remember_workspaces(s: &Socket) {
    if let Err(e) = s
        .app
        .access
        .save_socket_workspaces(&s.conn.id, &s.conn.workspaces())
    {
        tracing::warn!(error = %e, sid = %s.conn.id, "could not keep the socket's workspaces");
    }
}

fn join(s: &Socket, d: Value) -> Result<Value, TeamsError> {
    let ws = workspace_of(&d)?;
    check_access(&s.app.access, who(s), &ws)?;
    let conn = &s.conn;
    if conn.workspaces().len() >= MAX_WORKSPACES_PER_CONN && !conn.workspaces().contains(&ws) {
        return Err(TeamsError::Invalid(format!(
            "at most {MAX_WORKSPACES_PER_CONN} workspaces per connection; leave one first"
        )));
    }
    let joined = conn.join(&ws);
    if joined {
        remember_workspaces(s);
    }
    Ok(json!({"workspace": ws, "already_joined": !joined}))
}

fn leave(s: &Socket, d: Value) -> Result<Value, TeamsError> {
    let ws = workspace_of(&d)?;
    let left = s.conn.leave(&ws);
    if left {
        remember_workspaces(s);
    }
    Ok(json!({"workspace": ws, "was_joined": left}))
}

async fn message(s: &Socket, d: Value) -> Result<Value, TeamsError> {
    let field = |k: &str| d.get(k).and_then(Value::as_str);
    let workspace =
        field("workspace").ok_or_else(|| TeamsError::Invalid("workspace is missing".into()))?;
    let text = field("text").ok_or_else(|| TeamsError::Invalid("text is missing".into()))?;
    spend(s, Budget::Messages)?;
    let (msg, duplicate) = messages::send(
        &s.app.collab,
        &s.app.hub,
        who(s),
        Outgoing {
            workspace,
            text,
            client_msg_id: field("client_msg_id"),
        },
    )
    .await?;
    Ok(json!({"message": msg, "duplicate": duplicate}))
}

async fn notification(s: &Socket, d: Value) -> Result<Value, TeamsError> {
    let field = |k: &str| d.get(k).and_then(Value::as_str);
    let workspace =
        field("workspace").ok_or_else(|| TeamsError::Invalid("workspace is missing".into()))?;
    spend(s, Budget::Messages)?;
    let note = messages::notify(
        &s.app.collab,
        &s.app.hub,
        who(s),
        messages::NotificationIn {
            workspace,
            title: field("title").unwrap_or(""),
            body: field("body").unwrap_or(""),
            level: field("level"),
        },
    )
    .await?;
    Ok(json!({"notification": note}))
}

/// A string field of a (MessagePack-shaped) payload.
pub(crate) fn text_field<'a>(d: &'a rmpv::Value, key: &str) -> Result<&'a str, TeamsError> {
    field(d, key)
        .and_then(rmpv::Value::as_str)
        .ok_or_else(|| TeamsError::Invalid(format!("{key} is missing or not a string")))
}

pub(crate) fn field<'a>(d: &'a rmpv::Value, key: &str) -> Option<&'a rmpv::Value> {
    d.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

fn doc_sync(s: &Socket, d: rmpv::Value) -> Result<Value, TeamsError> {
    spend(s, Budget::Documents)?;
    let sv = match field(&d, "state_vector") {
        Some(v) => docs::bytes_of(v, "state_vector")?,
        None => Vec::new(),
    };
    docs::sync(
        &s.app.collab,
        who(s),
        text_field(&d, "workspace")?,
        text_field(&d, "doc")?,
        &sv,
    )
}

async fn doc_update(s: &Socket, d: rmpv::Value) -> Result<Value, TeamsError> {
    spend(s, Budget::Documents)?;
    let update = docs::bytes_of(
        field(&d, "update").ok_or_else(|| TeamsError::Invalid("update is missing".into()))?,
        "update",
    )?;
    let id = docs::update(
        &s.app.collab,
        &s.app.hub,
        who(s),
        text_field(&d, "workspace")?,
        text_field(&d, "doc")?,
        &update,
    )
    .await?;
    Ok(json!({"event_id": id}))
}

/// Runs one client event; `None` for an event this server does not know.
async fn dispatch(s: &Socket, event: &str, d: rmpv::Value) -> Option<Result<Value, TeamsError>> {
    // the JSON-shaped events read a serde_json value; the document ones keep binary
    let as_json = || {
        serde_json::to_value(&d)
            .map_err(|e| TeamsError::Invalid(format!("unreadable payload: {e}")))
    };
    Some(match event {
        "join_workspace" => as_json().and_then(|v| join(s, v)),
        "leave_workspace" => as_json().and_then(|v| leave(s, v)),
        "team_message" => match as_json() {
            Ok(v) => message(s, v).await,
            Err(e) => Err(e),
        },
        "team_notification" => match as_json() {
            Ok(v) => notification(s, v).await,
            Err(e) => Err(e),
        },
        "doc_sync" => doc_sync(s, d),
        "doc_update" => doc_update(s, d).await,
        _ => return None,
    })
}

/// The events a client may send.
pub const CLIENT_EVENTS: [&str; 6] = [
    "join_workspace",
    "leave_workspace",
    "team_message",
    "team_notification",
    "doc_sync",
    "doc_update",
];

/// Runs a client event and returns the ack's body: `{ok: true, …}` or `{ok: false, error,
/// code}`.
pub(crate) async fn handle(s: &Socket, event: &str, data: rmpv::Value) -> Value {
    let r = dispatch(s, event, data).await.unwrap_or_else(|| {
        Err(TeamsError::Invalid(format!(
            "unknown event `{event}`; clients may send {}",
            CLIENT_EVENTS.join(", ")
        )))
    });
    match r {
        Ok(mut v) => {
            v["ok"] = json!(true);
            v
        }
        Err(e) => refuse(&e),
    }
}
