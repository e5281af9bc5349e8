//! What Socket.IO clients may send: `join_workspace`, `leave_workspace`, `team_message`,
//! `team_notification`, and for shared documents `doc_sync` and `doc_update` (whose payloads
//! may carry binary, so they are read as `rmpv::Value`).
//! Each answers with an ack `{ok: true, …}` or `{ok: false, error, code}`; anything a client
//! should see as a consequence (the message itself, presence) goes through the journal like
//! every other event. Acks are the only thing written to a socket from here.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use socketioxide::extract::{AckSender, Event, SocketRef, State as IoState, TryData};

use super::MAX_WORKSPACES_PER_CONN;
use crate::app::{App, AppState};
use crate::hub::registry::Conn;
use crate::teams::TeamsError;
use crate::teams::auth::Identity;
use crate::teams::docs;
use crate::teams::messages::{self, Outgoing, RateLimit};

/// Per-socket message budget (socketioxide extensions hold clones, hence the shared cell).
#[derive(Clone)]
struct Budget(Arc<Mutex<RateLimit>>);

/// Per-socket budget of document operations (`doc_sync`, `doc_update`).
#[derive(Clone)]
struct DocBudget(Arc<Mutex<RateLimit>>);

/// Spends one message from the socket's budget, made on first use.
fn take_budget(app: &AppState, s: &SocketRef) -> Result<(), TeamsError> {
    let Budget(b) = s.extensions.get::<Budget>().unwrap_or_else(|| {
        let b = Budget(Arc::new(Mutex::new(RateLimit::new(
            app.config.team_messages_per_s,
        ))));
        s.extensions.insert(b.clone());
        b
    });
    spend(&b)
}

/// Spends one document operation from the socket's budget, made on first use.
fn take_doc_budget(app: &AppState, s: &SocketRef) -> Result<(), TeamsError> {
    let DocBudget(b) = s.extensions.get::<DocBudget>().unwrap_or_else(|| {
        let b = DocBudget(Arc::new(Mutex::new(
            RateLimit::new(app.config.doc_ops_per_s).named("document operations"),
        )));
        s.extensions.insert(b.clone());
        b
    });
    spend(&b)
}

fn spend(b: &Mutex<RateLimit>) -> Result<(), TeamsError> {
    b.lock()
        .map_err(|_| TeamsError::Invalid("rate limit lock poisoned".into()))?
        .take()
}

fn refuse(e: &TeamsError) -> Value {
    let code = match e {
        TeamsError::Invalid(_) => "invalid",
        TeamsError::Forbidden(_) => "forbidden",
        TeamsError::NotFound(_) => "not_found",
        TeamsError::Exists(_) => "exists",
        TeamsError::TooFast(_) => "rate_limited",
        TeamsError::TooMany(_) => "limit_reached",
        TeamsError::Db(_) | TeamsError::Random(_) => "internal",
        TeamsError::Unavailable(_) => "unavailable",
    };
    json!({"ok": false, "error": e.to_string(), "code": code})
}

fn reply(ack: AckSender, answer: Result<Value, TeamsError>) {
    let body = match answer {
        Ok(mut v) => {
            v["ok"] = json!(true);
            v
        }
        Err(e) => refuse(&e),
    };
    let _ = ack.send(&body);
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

/// Who the socket is, as the handshake decided. Without that record nothing is allowed (fail
/// closed), though the handshake always leaves one.
fn who(s: &SocketRef) -> Result<Identity, TeamsError> {
    s.extensions
        .get::<super::socketio::Who>()
        .map(|w| w.0)
        .ok_or_else(|| TeamsError::Forbidden("this connection has no identity".into()))
}

/// This socket's registry entry. A client may emit right after it is told it is connected,
/// a moment before the connect handler has registered it, so wait briefly for that.
async fn conn_of(app: &AppState, s: &SocketRef) -> Result<Arc<Conn>, TeamsError> {
    let id = s.id.to_string();
    for _ in 0..100 {
        if let Some(c) = app.hub.registry.get(&id) {
            return Ok(c);
        }
        if !s.connected() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Err(TeamsError::Invalid("the connection is closing".into()))
}

async fn join(app: &AppState, s: &SocketRef, d: Value) -> Result<Value, TeamsError> {
    let ws = workspace_of(&d)?;
    messages::check_access(&app.teams, &who(s)?, &ws)?;
    let conn = conn_of(app, s).await?;
    if conn.workspaces().len() >= MAX_WORKSPACES_PER_CONN && !conn.workspaces().contains(&ws) {
        return Err(TeamsError::Invalid(format!(
            "at most {MAX_WORKSPACES_PER_CONN} workspaces per connection; leave one first"
        )));
    }
    let joined = conn.join(&ws);
    Ok(json!({"workspace": ws, "already_joined": !joined}))
}

async fn leave(app: &AppState, s: &SocketRef, d: Value) -> Result<Value, TeamsError> {
    let ws = workspace_of(&d)?;
    let conn = conn_of(app, s).await?;
    let left = conn.leave(&ws);
    Ok(json!({"workspace": ws, "was_joined": left}))
}

async fn message(app: &AppState, s: &SocketRef, d: Value) -> Result<Value, TeamsError> {
    let field = |k: &str| d.get(k).and_then(Value::as_str);
    let workspace =
        field("workspace").ok_or_else(|| TeamsError::Invalid("workspace is missing".into()))?;
    let text = field("text").ok_or_else(|| TeamsError::Invalid("text is missing".into()))?;
    take_budget(app, s)?;
    let (msg, duplicate) = messages::send(
        &app.teams,
        &app.hub,
        &who(s)?,
        Outgoing {
            workspace,
            text,
            client_msg_id: field("client_msg_id"),
        },
    )
    .await?;
    Ok(json!({"message": msg, "duplicate": duplicate}))
}

async fn notification(app: &AppState, s: &SocketRef, d: Value) -> Result<Value, TeamsError> {
    let field = |k: &str| d.get(k).and_then(Value::as_str);
    let workspace =
        field("workspace").ok_or_else(|| TeamsError::Invalid("workspace is missing".into()))?;
    take_budget(app, s)?;
    let note = messages::notify(
        &app.teams,
        &app.hub,
        &who(s)?,
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

async fn doc_sync(app: App, s: SocketRef, d: rmpv::Value) -> Result<Value, TeamsError> {
    take_doc_budget(&app, &s)?;
    let sv = match field(&d, "state_vector") {
        Some(v) => docs::bytes_of(v, "state_vector")?,
        None => Vec::new(),
    };
    docs::sync(
        &app.teams,
        &who(&s)?,
        text_field(&d, "workspace")?,
        text_field(&d, "doc")?,
        &sv,
    )
}

async fn doc_update(app: App, s: SocketRef, d: rmpv::Value) -> Result<Value, TeamsError> {
    take_doc_budget(&app, &s)?;
    let update = docs::bytes_of(
        field(&d, "update").ok_or_else(|| TeamsError::Invalid("update is missing".into()))?,
        "update",
    )?;
    let id = docs::update(
        &app.teams,
        &app.hub,
        &who(&s)?,
        text_field(&d, "workspace")?,
        text_field(&d, "doc")?,
        &update,
    )
    .await?;
    Ok(json!({"event_id": id}))
}

/// Runs one client event; `None` for an event this server does not know.
async fn dispatch(
    app: App,
    s: SocketRef,
    event: &str,
    d: rmpv::Value,
) -> Option<Result<Value, TeamsError>> {
    // the JSON-shaped events read a serde_json value; the document ones keep binary
    let as_json = || {
        serde_json::to_value(&d)
            .map_err(|e| TeamsError::Invalid(format!("unreadable payload: {e}")))
    };
    Some(match event {
        "join_workspace" => match as_json() {
            Ok(v) => join(&app, &s, v).await,
            Err(e) => Err(e),
        },
        "leave_workspace" => match as_json() {
            Ok(v) => leave(&app, &s, v).await,
            Err(e) => Err(e),
        },
        "team_message" => match as_json() {
            Ok(v) => message(&app, &s, v).await,
            Err(e) => Err(e),
        },
        "team_notification" => match as_json() {
            Ok(v) => notification(&app, &s, v).await,
            Err(e) => Err(e),
        },
        "doc_sync" => doc_sync(app, s, d).await,
        "doc_update" => doc_update(app, s, d).await,
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

/// Installs one handler for every client event on a newly connected socket. One fallback
/// handler rather than one per event: each registered handler is a boxed closure kept per
/// socket, and idle sockets are what the server holds most of.
pub fn install(s: &SocketRef) {
    s.on_fallback(
        async |s: SocketRef,
               Event(event): Event,
               TryData(d): TryData<rmpv::Value>,
               ack: AckSender,
               IoState(app): IoState<App>| {
            let r = match d {
                Ok(d) => dispatch(app, s, &event, d).await,
                Err(e) => Some(Err(TeamsError::Invalid(format!("unreadable payload: {e}")))),
            };
            let r = r.unwrap_or_else(|| {
                Err(TeamsError::Invalid(format!(
                    "unknown event `{event}`; clients may send {}",
                    CLIENT_EVENTS.join(", ")
                )))
            });
            reply(ack, r);
        },
    );
}
