//! What Socket.IO clients may send: `join_workspace`, `leave_workspace`, `team_message`,
//! `team_notification`, and for shared documents `doc_sync` and `doc_update` (whose payloads
//! may carry binary, so they are read as `rmpv::Value`).
//! Each answers with an ack `{ok: true, …}` or `{ok: false, error, code}`; anything a client
//! should see as a consequence (the message itself, presence) goes through the journal like
//! every other event. Acks are the only thing written to a socket from here.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use socketioxide::extract::{AckSender, SocketRef, State as IoState, TryData};

use super::MAX_WORKSPACES_PER_CONN;
use crate::hub::Hub;
use crate::teams::TeamsError;
use crate::teams::auth::Identity;
use crate::teams::docs;
use crate::teams::messages::{self, Outgoing, RateLimit};

/// Per-socket message budget (socketioxide extensions hold clones, hence the shared cell).
#[derive(Clone)]
struct Budget(Arc<Mutex<RateLimit>>);

fn refuse(e: &TeamsError) -> Value {
    let code = match e {
        TeamsError::Invalid(_) => "invalid",
        TeamsError::Forbidden(_) => "forbidden",
        TeamsError::NotFound(_) => "not_found",
        TeamsError::Exists(_) => "exists",
        TeamsError::TooFast(_) => "rate_limited",
        TeamsError::Db(_) | TeamsError::Random(_) => "internal",
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
fn workspace_of(d: &Value) -> Result<String, TeamsError> {
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

fn who(s: &SocketRef) -> Identity {
    s.extensions
        .get::<super::socketio::Who>()
        .map(|w| w.0)
        .unwrap_or(Identity::Open)
}

async fn join(hub: &Hub, s: &SocketRef, d: Value) -> Result<Value, TeamsError> {
    let ws = workspace_of(&d)?;
    messages::check_access(&hub.teams, &who(s), &ws)?;
    let conn = hub
        .registry
        .get(&s.id.to_string())
        .ok_or_else(|| TeamsError::Invalid("connection is closing".into()))?;
    if conn.workspaces().len() >= MAX_WORKSPACES_PER_CONN && !conn.workspaces().contains(&ws) {
        return Err(TeamsError::Invalid(format!(
            "at most {MAX_WORKSPACES_PER_CONN} workspaces per connection; leave one first"
        )));
    }
    let joined = conn.join(&ws);
    Ok(json!({"workspace": ws, "already_joined": !joined}))
}

async fn leave(hub: &Hub, s: &SocketRef, d: Value) -> Result<Value, TeamsError> {
    let ws = workspace_of(&d)?;
    let conn = hub
        .registry
        .get(&s.id.to_string())
        .ok_or_else(|| TeamsError::Invalid("connection is closing".into()))?;
    let left = conn.leave(&ws);
    Ok(json!({"workspace": ws, "was_joined": left}))
}

async fn message(hub: &Hub, s: &SocketRef, d: Value) -> Result<Value, TeamsError> {
    let field = |k: &str| d.get(k).and_then(Value::as_str);
    let workspace =
        field("workspace").ok_or_else(|| TeamsError::Invalid("workspace is missing".into()))?;
    let text = field("text").ok_or_else(|| TeamsError::Invalid("text is missing".into()))?;
    if let Some(Budget(b)) = s.extensions.get::<Budget>()
        && let Ok(mut b) = b.lock()
    {
        b.take()?;
    }
    let (msg, duplicate) = messages::send(
        hub,
        &who(s),
        Outgoing {
            workspace,
            text,
            client_msg_id: field("client_msg_id"),
        },
    )
    .await?;
    Ok(json!({"message": msg, "duplicate": duplicate}))
}

async fn notification(hub: &Hub, s: &SocketRef, d: Value) -> Result<Value, TeamsError> {
    let field = |k: &str| d.get(k).and_then(Value::as_str);
    let workspace =
        field("workspace").ok_or_else(|| TeamsError::Invalid("workspace is missing".into()))?;
    if let Some(Budget(b)) = s.extensions.get::<Budget>()
        && let Ok(mut b) = b.lock()
    {
        b.take()?;
    }
    let note = messages::notify(
        hub,
        &who(s),
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
fn text_field<'a>(d: &'a rmpv::Value, key: &str) -> Result<&'a str, TeamsError> {
    field(d, key)
        .and_then(rmpv::Value::as_str)
        .ok_or_else(|| TeamsError::Invalid(format!("{key} is missing or not a string")))
}

fn field<'a>(d: &'a rmpv::Value, key: &str) -> Option<&'a rmpv::Value> {
    d.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

async fn doc_sync(hub: Arc<Hub>, s: SocketRef, d: rmpv::Value) -> Result<Value, TeamsError> {
    let sv = match field(&d, "state_vector") {
        Some(v) => docs::bytes_of(v, "state_vector")?,
        None => Vec::new(),
    };
    docs::sync(
        &hub,
        &who(&s),
        text_field(&d, "workspace")?,
        text_field(&d, "doc")?,
        &sv,
    )
}

async fn doc_update(hub: Arc<Hub>, s: SocketRef, d: rmpv::Value) -> Result<Value, TeamsError> {
    let update = docs::bytes_of(
        field(&d, "update").ok_or_else(|| TeamsError::Invalid("update is missing".into()))?,
        "update",
    )?;
    let id = docs::update(
        &hub,
        &who(&s),
        text_field(&d, "workspace")?,
        text_field(&d, "doc")?,
        &update,
    )
    .await?;
    Ok(json!({"event_id": id}))
}

/// Registers a document event, whose payload may hold binary.
fn on_binary<F, Fut>(s: &SocketRef, event: &'static str, f: F)
where
    F: Fn(Arc<Hub>, SocketRef, rmpv::Value) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, TeamsError>> + Send + 'static,
{
    s.on(
        event,
        async move |s: SocketRef,
                    TryData(d): TryData<rmpv::Value>,
                    ack: AckSender,
                    IoState(hub): IoState<Arc<Hub>>| {
            let r = match d {
                Ok(d) => f(hub, s, d).await,
                Err(e) => Err(TeamsError::Invalid(format!("unreadable payload: {e}"))),
            };
            reply(ack, r);
        },
    );
}

/// Registers one event: decodes the payload, runs `f`, answers with the ack.
fn on<F, Fut>(s: &SocketRef, event: &'static str, f: F)
where
    F: Fn(Arc<Hub>, SocketRef, Value) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, TeamsError>> + Send + 'static,
{
    s.on(
        event,
        async move |s: SocketRef,
                    TryData(d): TryData<Value>,
                    ack: AckSender,
                    IoState(hub): IoState<Arc<Hub>>| {
            let r = match d {
                Ok(d) => f(hub, s, d).await,
                Err(e) => Err(TeamsError::Invalid(format!("not JSON: {e}"))),
            };
            reply(ack, r);
        },
    );
}

/// Installs the handlers on a newly connected socket.
pub fn install(s: &SocketRef, hub: &Hub) {
    s.extensions
        .insert(Budget(Arc::new(Mutex::new(RateLimit::new(
            hub.config.team_messages_per_s,
        )))));
    on(s, "join_workspace", async |h, s, d| join(&h, &s, d).await);
    on(s, "leave_workspace", async |h, s, d| leave(&h, &s, d).await);
    on(s, "team_message", async |h, s, d| message(&h, &s, d).await);
    on(s, "team_notification", async |h, s, d| {
        notification(&h, &s, d).await
    });
    on_binary(s, "doc_sync", doc_sync);
    on_binary(s, "doc_update", doc_update);
}
