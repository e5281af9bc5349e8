//! `/api/workspaces/{ws}/…`: a workspace's message history (paged), sending a message from a
//! client that has no Socket.IO connection (SSE and poll clients), and who is online. Members
//! only; anyone on an open server. Also `/api/me`: the caller's name, role and workspaces.

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use crate::access::auth::{self, Identity};
use crate::app::{App, AppState};
use crate::collab::messages::{self, NotificationIn, Outgoing};
use crate::collab::presence;
use crate::http::{ApiError, ApiJson, number_param, ok, only_params};

/// The same per-second message limit Socket.IO connections have, per user over HTTP.
fn http_budget(app: &AppState, identity: &Identity) -> Result<(), ApiError> {
    let user = identity.user_name().unwrap_or(auth::LOCAL_USER);
    app.collab
        .take_http_budget(user, app.config.team_messages_per_s)
        .map_err(ApiError::from)
}

/// Largest page of history.
const MAX_PAGE: usize = 200;

/// `GET /api/workspaces/{ws}/messages?before=&limit=`: newest first; pass the last id as
/// `before` for the next page.
pub async fn history(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Path(ws): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    only_params(&q, &["before", "limit"])?;
    let before = number_param(&q, "before", 1i64)?;
    let limit = number_param(&q, "limit", 1i64)?.unwrap_or(50) as usize;
    if limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be from 1 to {MAX_PAGE}"
        )));
    }
    auth::check_access(&app.access, &identity, &ws)?;
    let page = app.collab.messages(&ws, before, limit)?;
    let next_before = (page.len() == limit)
        .then(|| page.last().map(|m| m.id))
        .flatten();
    Ok(ok(
        json!({"workspace": ws, "messages": page, "next_before": next_before}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Send {
    text: String,
    #[serde(default)]
    client_msg_id: Option<String>,
}

/// `POST /api/workspaces/{ws}/messages {text, client_msg_id?}`: 201 with the stored message,
/// or 200 with the earlier one when `client_msg_id` repeats.
pub async fn send(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Path(ws): Path<String>,
    ApiJson(b): ApiJson<Send>,
) -> Result<Response, ApiError> {
    http_budget(&app, &identity)?;
    let (msg, duplicate) = messages::send(
        &app.collab,
        &app.hub,
        &identity,
        Outgoing {
            workspace: &ws,
            text: &b.text,
            client_msg_id: b.client_msg_id.as_deref(),
        },
    )
    .await?;
    let mut r = ok(json!({"message": msg, "duplicate": duplicate}));
    if !duplicate {
        *r.status_mut() = StatusCode::CREATED;
    }
    Ok(r)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    level: Option<String>,
}

/// `POST /api/workspaces/{ws}/notifications {title, body?, level?}`: published as
/// `team_notification` to the workspace.
pub async fn notify(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Path(ws): Path<String>,
    ApiJson(b): ApiJson<Notify>,
) -> Result<Response, ApiError> {
    http_budget(&app, &identity)?;
    let note = messages::notify(
        &app.collab,
        &app.hub,
        &identity,
        NotificationIn {
            workspace: &ws,
            title: &b.title,
            body: &b.body,
            level: b.level.as_deref(),
        },
    )
    .await?;
    let mut r = ok(note);
    *r.status_mut() = StatusCode::CREATED;
    Ok(r)
}

/// `GET /api/notifications?after=&limit=`: notifications in the caller's workspaces with an id
/// above `after`, oldest first.
pub async fn notifications(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    only_params(&q, &["after", "limit"])?;
    let after = number_param(&q, "after", 0i64)?.unwrap_or(0);
    let limit = number_param(&q, "limit", 1i64)?.unwrap_or(50);
    if limit as usize > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be from 1 to {MAX_PAGE}"
        )));
    }
    // the memberships as they are now; a user removed since authentication reads nothing
    let member_of = match &identity {
        Identity::Open => None,
        Identity::User { user, .. } => Some(
            app.access
                .user(&user.name)?
                .map(|u| u.workspaces)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        format!("user `{}` no longer exists", user.name),
                    )
                })?,
        ),
    };
    let from = match &member_of {
        None => messages::Workspaces::Every,
        Some(ws) => messages::Workspaces::Only(ws),
    };
    let list = app.collab.notifications(from, after, limit as usize)?;
    Ok(ok(json!({"notifications": list})))
}

/// `GET /api/workspaces/{ws}/presence`: each online user once, with their connections.
pub async fn online(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Path(ws): Path<String>,
) -> Result<Response, ApiError> {
    auth::check_access(&app.access, &identity, &ws)?;
    Ok(ok(
        json!({"workspace": ws, "online": presence::online(&app.hub, &app.collab, &ws)}),
    ))
}

/// `GET /api/workspaces/{ws}/documents`: the workspace's shared documents, most recently
/// edited first. Members only.
pub async fn documents(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Path(ws): Path<String>,
) -> Result<Response, ApiError> {
    auth::check_access(&app.access, &identity, &ws)?;
    let teams = app.collab.clone();
    let w = ws.clone();
    let names = tokio::task::spawn_blocking(move || teams.doc_names(&w))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(ok(json!({"workspace": ws, "documents": names})))
}

/// `GET /api/me`: who the caller is, for a client deciding what to show: `{user, id, admin,
/// workspaces, open}` (`id`, the user's id, only for a user). On an open server (no users) the one local user may do everything:
/// `user` is null, `admin` true, and `workspaces` lists every workspace that exists.
pub async fn me(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
) -> Result<Response, ApiError> {
    Ok(ok(match &identity {
        Identity::Open => {
            let all: Vec<String> = app
                .access
                .workspaces()?
                .into_iter()
                .map(|w| w.name)
                .collect();
            json!({"user": null, "admin": true, "workspaces": all, "open": true})
        }
        Identity::User { user, .. } => json!({
            "user": user.name,
            "id": user.id,
            "admin": user.admin,
            "workspaces": user.workspaces,
            "open": false,
        }),
    }))
}
