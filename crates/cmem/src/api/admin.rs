//! `/api/admin/*`: users, tokens, workspaces and members over HTTP, the same operations as the
//! `cmem user|token|workspace` commands. Only admins get here (the authentication layer
//! checks the path); on an open server that is the local user, who may create the first admin
//! and its token in one request.
//!
//! Changes take effect on live connections at once: a revoked token or a removed user closes
//! their connections, and a removed member stops receiving that workspace's events.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::http::{ApiError, ApiJson, ok, only_params};

fn created(data: serde_json::Value) -> Response {
    let mut r = ok(data);
    *r.status_mut() = StatusCode::CREATED;
    r
}

/// `GET /api/admin/users`
pub async fn users(State(app): State<App>) -> Result<Response, ApiError> {
    Ok(ok(app.access.users()?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    #[serde(default)]
    admin: bool,
    /// Also create a token and return it (how the first admin gets one over HTTP).
    #[serde(default)]
    create_token: bool,
    #[serde(default)]
    label: Option<String>,
}

/// `POST /api/admin/users {name, admin?, create_token?, label?}`
pub async fn add_user(
    State(app): State<App>,
    ApiJson(b): ApiJson<NewUser>,
) -> Result<Response, ApiError> {
    let user = app.access.add_user(&b.name, b.admin)?;
    let token = if b.create_token {
        Some(app.access.create_token(&user.name, b.label.as_deref())?)
    } else {
        None
    };
    // the first user ends the open server: connections opened without a token (this one
    // included, if it is a stream) are closed now, not when the watcher next looks
    let closed = crate::access::live::reconcile(&app.access, &app.hub).closed;
    Ok(created(
        json!({"user": user, "token": token, "connections_closed": closed}),
    ))
}

/// `DELETE /api/admin/users/{name}`: also closes the user's connections. The last admin is
/// refused (409): only the command line may remove it, on purpose.
pub async fn remove_user(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let removed = app.access.remove_user(&name, false)?;
    // their searches go with them (a name given again later starts with none either way:
    // the history is keyed by the id)
    if let Err(e) = app.memory.history.forget(&removed.id) {
        tracing::warn!(error = %e, user = %name, "could not forget the removed user's searches");
    }
    let conns = app.hub.registry.of_user(&name);
    for c in &conns {
        app.hub.registry.close(c, "user_removed");
    }
    Ok(ok(
        json!({"removed": name, "connections_closed": conns.len()}),
    ))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    #[serde(default)]
    label: Option<String>,
}

/// `POST /api/admin/users/{name}/tokens {label?}`: the secret is in this answer only.
pub async fn create_token(
    State(app): State<App>,
    Path(name): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: NewToken = if raw.iter().all(u8::is_ascii_whitespace) {
        NewToken::default()
    } else {
        serde_json::from_slice(&raw).map_err(|e| ApiError::bad_request(format!("body: {e}")))?
    };
    let label = body.label;
    Ok(created(json!(
        app.access.create_token(&name, label.as_deref())?
    )))
}

/// `GET /api/admin/tokens?user=`
pub async fn tokens(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    only_params(&q, &["user"])?;
    Ok(ok(app.access.tokens(q.get("user").map(String::as_str))?))
}

/// `POST /api/admin/tokens/{id}/revoke`: also closes the connections opened with it.
pub async fn revoke_token(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    app.access.revoke_token(&id)?;
    let closed = app.hub.registry.close_token(&id, "token_revoked");
    Ok(ok(json!({"revoked": id, "connections_closed": closed})))
}

/// `GET /api/admin/workspaces`
pub async fn workspaces(State(app): State<App>) -> Result<Response, ApiError> {
    Ok(ok(app.access.workspaces()?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWorkspace {
    name: String,
}

/// `POST /api/admin/workspaces {name}`
pub async fn create_workspace(
    State(app): State<App>,
    ApiJson(b): ApiJson<NewWorkspace>,
) -> Result<Response, ApiError> {
    Ok(created(json!(app.access.create_workspace(&b.name)?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    user: String,
}

/// `POST /api/admin/workspaces/{ws}/members {user}`
pub async fn add_member(
    State(app): State<App>,
    Path(ws): Path<String>,
    ApiJson(b): ApiJson<NewMember>,
) -> Result<Response, ApiError> {
    app.access.add_member(&ws, &b.user)?;
    Ok(created(json!({"workspace": ws, "user": b.user})))
}

/// `DELETE /api/admin/workspaces/{ws}/members/{user}`: the user's live connections stop
/// receiving the workspace at once.
pub async fn remove_member(
    State(app): State<App>,
    Path((ws, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    app.access.remove_member(&ws, &user)?;
    let left = app
        .hub
        .registry
        .of_user(&user)
        .iter()
        .filter(|c| c.leave(&ws))
        .count();
    Ok(ok(
        json!({"workspace": ws, "user": user, "connections_left": left}),
    ))
}
