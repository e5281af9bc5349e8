//! `POST /api/events`: lets other services (and the benchmark) publish through the journal.
//!
//! Accepts one event `{type, scope?, data?}` or a batch `{events: [...]}` and answers the ids
//! assigned, in order. A batch is committed atomically: either every event gets an id or none.
//!
//! On a server with users, admins may publish to any scope; other users only to workspaces
//! they are members of. No one may publish a type the server produces itself (messages,
//! notifications, presence, document edits, search, indexing, status: `SERVER_ONLY`), and every
//! event published here carries `publisher` in its envelope, set from the authenticated
//! identity: `{"user": name}`, or `{"local": true}` on an open server.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access::auth::Identity;
use crate::app::App;
use crate::envelope::{NewEvent, SERVER_ONLY, Scope};
use crate::http::{ApiError, JsonValue, ok};

/// Largest batch accepted in one request.
pub const MAX_BATCH: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventIn {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    data: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchIn {
    events: Vec<Value>,
}

fn parse_one(v: Value, at: &str) -> Result<NewEvent, ApiError> {
    let e: EventIn =
        serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("{at}{e}")))?;
    if SERVER_ONLY.contains(&e.kind.as_str()) {
        return Err(ApiError::bad_request(format!(
            "{at}type `{}` is emitted by the server only",
            e.kind
        )));
    }
    let scope = match e.scope.as_deref() {
        None => Scope::Global,
        Some(s) => Scope::parse(s).map_err(|m| ApiError::bad_request(format!("{at}{m}")))?,
    };
    let ev = NewEvent::new(e.kind, scope, e.data);
    ev.validate()
        .map_err(|m| ApiError::bad_request(format!("{at}{m}")))?;
    Ok(ev)
}

/// Parses the body into events, with messages that point at the offending element.
pub(crate) fn parse_body(body: Value) -> Result<Vec<NewEvent>, ApiError> {
    let Value::Object(map) = &body else {
        return Err(ApiError::bad_request(
            "body must be a JSON object: {type, scope?, data?} or {events: [...]}",
        ));
    };
    if map.contains_key("events") {
        let batch: BatchIn = serde_json::from_value(body)
            .map_err(|e| ApiError::bad_request(format!("batch: {e}")))?;
        if batch.events.is_empty() {
            return Err(ApiError::bad_request("events: the batch is empty"));
        }
        if batch.events.len() > MAX_BATCH {
            return Err(ApiError::bad_request(format!(
                "events: {} events in one batch; at most {MAX_BATCH} are accepted",
                batch.events.len()
            )));
        }
        batch
            .events
            .into_iter()
            .enumerate()
            .map(|(i, v)| parse_one(v, &format!("events[{i}]: ")))
            .collect()
    } else {
        Ok(vec![parse_one(body, "")?])
    }
}

/// Refuses a batch holding any event its publisher may not send.
fn check_scopes(identity: &Identity, events: &[NewEvent]) -> Result<(), ApiError> {
    let Identity::User { user, .. } = identity else {
        return Ok(());
    };
    if user.admin {
        return Ok(());
    }
    for (i, e) in events.iter().enumerate() {
        let allowed = matches!(&e.scope, Scope::Workspace(w) if user.workspaces.contains(w));
        if !allowed {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "event {i}: `{}` may publish only to workspaces it is a member of ({}), not to `{}`; global and client scopes need an admin token",
                    user.name,
                    if user.workspaces.is_empty() {
                        "none".to_string()
                    } else {
                        user.workspaces.join(", ")
                    },
                    e.scope
                ),
            ));
        }
    }
    Ok(())
}

pub async fn publish(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    JsonValue(body): JsonValue,
) -> Result<Response, ApiError> {
    let publisher = match identity.user_name() {
        Some(name) => json!({ "user": name }),
        None => json!({ "local": true }),
    };
    let events: Vec<NewEvent> = parse_body(body)?
        .into_iter()
        .map(|e| e.published_by(publisher.clone()))
        .collect();
    check_scopes(&identity, &events)?;
    app.collab.take_event_budget(
        &identity,
        events.len() as u64,
        app.config.member_events_per_s,
    )?;
    let committed = app.hub.publish(events).await?;
    let ids: Vec<u64> = committed.iter().map(|e| e.id).collect();
    Ok(ok(Published {
        count: ids.len(),
        epoch: app.hub.journal.epoch(),
        ids,
    }))
}

/// What a publish answers (fields sorted by name, as `json!` gave them).
#[derive(serde::Serialize)]
struct Published<'a> {
    count: usize,
    epoch: &'a str,
    ids: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_point_at_the_problem() {
        let e =
            parse_body(json!({"events": [{"type": "a"}, {"type": "b", "bogus": 1}]})).unwrap_err();
        assert!(
            e.message.starts_with("events[1]: unknown field `bogus`"),
            "{}",
            e.message
        );
        let e = parse_body(json!({"type": 5})).unwrap_err();
        assert!(e.message.contains("invalid type"), "{}", e.message);
        let e = parse_body(json!({"type": "x", "scope": "room:1"})).unwrap_err();
        assert!(e.message.contains("room:1"), "{}", e.message);
        for forged in SERVER_ONLY {
            let e = parse_body(json!({"type": forged, "scope": "workspace:a"})).unwrap_err();
            assert!(e.message.contains("server only"), "{}", e.message);
        }
        let e = parse_body(json!([1, 2])).unwrap_err();
        assert!(e.message.contains("JSON object"), "{}", e.message);
        let ok =
            parse_body(json!({"type": "x", "scope": "workspace:a", "data": {"k": 1}})).unwrap();
        assert_eq!(ok[0].scope, Scope::Workspace("a".into()));
    }
}
