//! `GET /config` and `PUT /config`: the configuration in force with where each value came
//! from, and changes to the config file, checked exactly as start-up checks them (unknown keys
//! and bad values are a 400 naming the key, the value and what is allowed; nothing is written
//! then). A change takes effect at the next start; values the environment sets keep winning.

use axum::extract::State;
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::config::{KEYS, update_file};
use crate::http::{ApiError, ApiJson, ok};

/// `GET /config`
pub async fn get(State(app): State<App>) -> Response {
    let sources: Map<String, Value> = KEYS
        .iter()
        .map(|k| (k.to_string(), json!(app.startup.sources.source_of(k))))
        .collect();
    ok(json!({
        "config": &*app.config,
        "sources": sources,
        "profile": app.startup.profile.name(),
        "config_file": app.config.state_dir().join("config").join("cmem.toml"),
    }))
}

/// `PUT /config {key: value, …}`
pub async fn put(
    State(app): State<App>,
    ApiJson(changes): ApiJson<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let data_dir = app.config.data_dir.clone();
    let update =
        tokio::task::spawn_blocking(move || update_file(&data_dir, &changes).map(|u| (u, changes)))
            .await
            .map_err(|e| {
                ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            })?
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (update, changes) = update;
    let next = serde_json::to_value(&update.next.config).unwrap_or_default();
    let changed: Map<String, Value> = changes
        .keys()
        .map(|k| (k.clone(), next.get(k).cloned().unwrap_or(Value::Null)))
        .collect();
    Ok(ok(json!({
        "written": update.path,
        "next_start": changed,
        "takes_effect": "at the next start",
        "shadowed_by_env": update.shadowed_by_env,
    })))
}
