//! The HTTP API: the JSON envelope `{success, data, error, timestamp}`, its error type, and the
//! router that puts every endpoint and transport on one port.
//!
//! Handlers here are producers (they call [`Hub::publish`](crate::hub::Hub::publish)) or
//! read-only views; none of them writes to a client socket.

pub mod admin;
pub mod config;
pub mod diagnostics;
pub mod events;
pub mod guard;
pub mod search;
pub mod system;
pub mod workspaces;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::PublishError;
use crate::hub::Hub;
use crate::memory::Memory;
use crate::metrics::Metrics;
use crate::monitor::Monitor;
use crate::teams::auth;
use crate::transports;

/// What handlers need besides the hub (which is the router state); one axum `Extension`.
#[derive(Clone)]
pub struct Services {
    pub memory: Arc<Memory>,
    pub monitor: Arc<Monitor>,
    pub metrics: Arc<Metrics>,
    pub startup: Arc<Startup>,
}

/// How the configuration in force was assembled at start.
#[derive(Debug)]
pub struct Startup {
    pub sources: crate::config::Sources,
    pub profile: crate::config::PlatformProfile,
}

pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Refuses query parameters other than `allowed` (and the `_` cache-buster), naming them, so a
/// typo is not silently ignored.
pub(crate) fn only_params(
    q: &std::collections::HashMap<String, String>,
    allowed: &[&str],
) -> Result<(), ApiError> {
    match q
        .keys()
        .find(|k| !allowed.contains(&k.as_str()) && *k != "_")
    {
        Some(k) => Err(ApiError::bad_request(format!(
            "unknown query parameter `{k}`; allowed: {}",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

/// A whole-number query parameter of at least `min`, if given.
pub(crate) fn int_param(
    q: &std::collections::HashMap<String, String>,
    key: &str,
    min: i64,
) -> Result<Option<i64>, ApiError> {
    q.get(key)
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= min)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{key} `{v}` is not a whole number of at least {min}"
                    ))
                })
        })
        .transpose()
}

/// A successful answer in the JSON envelope.
pub fn ok<T: Serialize>(data: T) -> Response {
    Json(json!({
        "success": true,
        "data": data,
        "error": null,
        "timestamp": now_rfc3339(),
    }))
    .into_response()
}

/// An error answer: a status and a message that says what was wrong.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({
                "success": false,
                "data": null,
                "error": self.message,
                "timestamp": now_rfc3339(),
            })),
        )
            .into_response()
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Invalid(m) => ApiError::bad_request(m),
            PublishError::Journal(j) => {
                tracing::error!(error = %j, "publish failed");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, j.to_string())
            }
        }
    }
}

/// `Json<T>` whose rejections use the envelope and a 4xx that names the problem.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rej) => {
                let status = match &rej {
                    JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    JsonRejection::BytesRejection(_) => rej.status(),
                    _ => StatusCode::BAD_REQUEST,
                };
                let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "request body is larger than max_payload_bytes".to_string()
                } else {
                    rej.body_text()
                };
                Err(ApiError::new(status, message))
            }
        }
    }
}

async fn health(axum::extract::State(hub): axum::extract::State<Arc<Hub>>) -> Response {
    ok(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": hub.uptime_s(),
        "journal": { "epoch": hub.journal.epoch(), "head": hub.journal.head() },
    }))
}

async fn not_found(
    axum::extract::State(hub): axum::extract::State<Arc<Hub>>,
    req: Request,
) -> ApiError {
    let path = req.uri().path();
    let c = &hub.config;
    let transport = match path {
        "/api/events/stream" if !c.transport_enabled("sse") => Some("sse"),
        "/api/events/poll" if !c.transport_enabled("poll") => Some("poll"),
        p if (p == "/socket.io" || p.starts_with("/socket.io/"))
            && !c.transport_enabled("websocket")
            && !c.transport_enabled("polling") =>
        {
            Some("websocket and polling")
        }
        _ => None,
    };
    match transport {
        Some(t) => ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "the {t} transport is disabled on this server (transports = {})",
                hub.config.transports.join(",")
            ),
        ),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no endpoint {} {path}", req.method()),
        ),
    }
}

/// Paths (prefixes) only an admin may use, whatever the method. The connection diagnostics
/// are here because they show every client's address, user agent and user.
const ADMIN_PATHS: [&str; 5] = [
    "/api/admin/",
    "/system/reindex",
    "/system/cache/clear",
    "/api/websocket/",
    "/config",
];

/// Authentication for every HTTP route but `/health` (Socket.IO authenticates in its own
/// handshake). The identity goes into the request's extensions for handlers and transports;
/// a `?token=` is taken out of the query so no handler sees or echoes it.
async fn authenticate(
    axum::extract::State(hub): axum::extract::State<Arc<Hub>>,
    mut req: Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    if path == "/health" || path.starts_with("/socket.io") {
        return next.run(req).await;
    }
    let query = req.uri().query().map(str::to_string);
    let token = auth::token_from(req.headers(), query.as_deref());
    let identity = match auth::identify(&hub.teams, token.as_deref()) {
        Ok(i) => i,
        Err(e) => {
            let mut resp = ApiError::from(e).into_response();
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
            return resp;
        }
    };
    if ADMIN_PATHS.iter().any(|p| path.starts_with(p))
        && let Err(e) = identity.require_admin(path)
    {
        return ApiError::from(e).into_response();
    }
    if let Some(q) = query.filter(|q| q.split('&').any(|p| p.starts_with("token=")))
        && let Ok(uri) = format!("{}?{}", req.uri().path(), auth::strip_token(&q))
            .trim_end_matches('?')
            .parse::<axum::http::Uri>()
    {
        *req.uri_mut() = uri;
    }
    req.extensions_mut().insert(identity);
    next.run(req).await
}

/// CORS for the HTTP API, from the same allow-list the WebSocket `Origin` check uses.
fn cors(hub: &Arc<Hub>) -> CorsLayer {
    let h = hub.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin
                .to_str()
                .map(|o| h.config.origin_allowed(o))
                .unwrap_or(false)
        }))
        .allow_methods([
            axum::http::Method::GET,
            axum::http::Method::POST,
            axum::http::Method::PUT,
            axum::http::Method::DELETE,
            axum::http::Method::OPTIONS,
        ])
        .allow_headers([
            axum::http::header::CONTENT_TYPE,
            axum::http::header::AUTHORIZATION,
            axum::http::HeaderName::from_static("last-event-id"),
        ])
}

/// Every route on one port: API, SSE, poll and Socket.IO.
pub fn router(
    hub: Arc<Hub>,
    io_layer: Option<transports::socketio::Layer>,
    services: Services,
) -> Router {
    let mut app = Router::new()
        .route(
            "/api/search",
            get(search::search_get).post(search::search_post),
        )
        .route("/search", get(search::search_get))
        .route("/search/suggestions", get(search::suggestions))
        .route("/search/export", post(search::export))
        .route("/prompts/similar", get(search::similar))
        .route("/system/indexing", get(system::indexing))
        .route("/system/reindex", post(system::reindex))
        .route(
            "/system/status",
            get(system::status).post(system::publish_status),
        )
        .route("/system/stats", get(system::status))
        .route("/system/cache/clear", post(system::clear_cache))
        .route("/metrics", get(system::metrics))
        .route("/config", get(config::get).put(config::put))
        .route(
            "/api/workspaces/{ws}/messages",
            get(workspaces::history).post(workspaces::send),
        )
        .route("/api/workspaces/{ws}/presence", get(workspaces::online))
        .route(
            "/api/workspaces/{ws}/notifications",
            post(workspaces::notify),
        )
        .route("/api/notifications", get(workspaces::notifications))
        .route("/api/admin/users", get(admin::users).post(admin::add_user))
        .route("/api/admin/users/{name}", delete(admin::remove_user))
        .route("/api/admin/users/{name}/tokens", post(admin::create_token))
        .route("/api/admin/tokens", get(admin::tokens))
        .route("/api/admin/tokens/{id}/revoke", post(admin::revoke_token))
        .route(
            "/api/admin/workspaces",
            get(admin::workspaces).post(admin::create_workspace),
        )
        .route(
            "/api/admin/workspaces/{ws}/members",
            post(admin::add_member),
        )
        .route(
            "/api/admin/workspaces/{ws}/members/{user}",
            delete(admin::remove_member),
        )
        .route("/health", get(health))
        .route("/api/events", post(events::publish))
        .route("/api/websocket/status", get(diagnostics::status))
        .route("/api/websocket/errors", get(diagnostics::errors))
        .route(
            "/api/websocket/clear-errors",
            post(diagnostics::clear_errors),
        );
    if hub.config.transport_enabled("sse") {
        app = app.route("/api/events/stream", get(transports::sse::stream));
    }
    if hub.config.transport_enabled("poll") {
        app = app.route("/api/events/poll", get(transports::poll::poll));
    }
    let mut app = app
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            hub.clone(),
            authenticate,
        ))
        .layer(DefaultBodyLimit::max(hub.config.max_payload_bytes as usize))
        // a body that stops arriving (a `Content-Length` it never sends) ends the request
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            std::time::Duration::from_millis(hub.config.request_read_timeout_ms),
        ))
        .layer(axum::Extension(services))
        .with_state(hub.clone());
    if let Some(layer) = io_layer {
        app = layer.apply(app, hub.clone());
    }
    // the guard is the outermost layer: a refused Host or Origin gets no further
    app.layer(cors(&hub))
        .layer(axum::middleware::from_fn_with_state(hub, guard::check))
}
