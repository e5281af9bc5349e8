//! The router: every endpoint and transport on one port, and the layers around them —
//! authentication, body limits and timeouts, CORS, and outermost the [`guard`](super::guard)
//! (Host and Origin). It sits beside the server, above the API and the transports, because it
//! is the one place that knows all of them.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use serde_json::json;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::{assets, guard};
use crate::access::auth;
use crate::api::{admin, config, diagnostics, events, search, system, workspaces};
use crate::app::App;
use crate::config::Transport;
use crate::http::{ApiError, ok};
use crate::transports;

async fn health(State(app): State<App>) -> Response {
    // a load balancer stops sending new clients to a node that is going away
    if app.hub.shutdown.is_cancelled() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        )
        .with_code(cmem_wire::Code::ServerShutdown)
        .into_response();
    }
    ok(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": app.hub.uptime_s(),
        "journal": { "epoch": app.hub.journal.epoch(), "head": app.hub.journal.head() },
    }))
}

async fn not_found(State(app): State<App>, req: Request) -> ApiError {
    let path = req.uri().path();
    let c = &app.config;
    let transport = match path {
        "/api/events/stream" if !c.transport_enabled(Transport::Sse) => Some("sse"),
        "/api/events/poll" if !c.transport_enabled(Transport::Poll) => Some("poll"),
        p if (p == "/socket.io" || p.starts_with("/socket.io/"))
            && !c.transport_enabled(Transport::Websocket)
            && !c.transport_enabled(Transport::Polling) =>
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
                app.config
                    .transports
                    .iter()
                    .map(|t| t.name())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no endpoint {} {path}", req.method()),
        ),
    }
}

/// A known path asked with a method it does not take: 405 in the JSON envelope, like every
/// other error (axum's own has an empty body).
async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("`{}` does not take {}", req.uri().path(), req.method()),
    )
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

/// Authentication for every HTTP route but `/health`, the app (`/`, `/app/`) and `/client/` (Socket.IO authenticates in its own
/// handshake). The identity goes into the request's extensions for handlers and transports;
/// a `?token=` is taken out of the query so no handler sees or echoes it.
async fn authenticate(
    State(app): State<App>,
    mut req: Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    // the app and the client library are public: the sign-in page needs them before it has
    // a token (they hold no data)
    if path == "/health"
        || path.starts_with("/socket.io")
        || path == "/"
        || path == "/favicon.ico"
        || path.starts_with("/app/")
        || path == "/client"
        || path.starts_with("/client/")
    {
        return next.run(req).await;
    }
    let query = req.uri().query().map(str::to_string);
    let token = auth::token_from(req.headers(), query.as_deref());
    let identity = match auth::identify(&app.access, token.as_deref(), app.config.open_allowed()) {
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
fn cors(app: &App) -> CorsLayer {
    let h = app.clone();
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
            axum::http::HeaderName::from_static("mcp-session-id"),
            axum::http::HeaderName::from_static("mcp-protocol-version"),
        ])
        .expose_headers([axum::http::HeaderName::from_static("mcp-session-id")])
}

async fn socketio(State(io): State<Arc<transports::socketio::IoEngine>>, req: Request) -> Response {
    io.handle(req).await
}

/// Every route on one port: API, SSE, poll and Socket.IO.
pub fn router(state: App, io: Option<Arc<transports::socketio::IoEngine>>) -> Router {
    let mut app = Router::new()
        .route(
            "/api/search",
            get(search::search_get).post(search::search_post),
        )
        .route("/search", get(search::search_get))
        .route("/search/suggestions", get(search::suggestions))
        .route("/api/document", get(search::document))
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
        .route("/api/workspaces/{ws}/documents", get(workspaces::documents))
        .route(
            "/api/workspaces/{ws}/notifications",
            post(workspaces::notify),
        )
        .route("/api/notifications", get(workspaces::notifications))
        .route("/api/me", get(workspaces::me))
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
        .route("/", get(assets::app_index))
        .route("/favicon.ico", get(assets::favicon))
        .route("/app/{file}", get(assets::app_file))
        .route("/client", get(assets::client_index))
        .route("/client/", get(assets::client_index))
        .route("/client/{file}", get(assets::client_file))
        .route("/api/events", post(events::publish))
        .route("/api/websocket/status", get(diagnostics::status))
        .route("/api/websocket/errors", get(diagnostics::errors))
        .route(
            "/api/websocket/clear-errors",
            post(diagnostics::clear_errors),
        );
    if state.config.mcp_enabled {
        let mcp = crate::mcp::http::McpHttp::new(state.clone());
        app = app.route(
            "/mcp",
            any(move |req: Request| {
                let mcp = mcp.clone();
                async move { mcp.handle(req).await }
            }),
        );
    }
    if state.config.transport_enabled(Transport::Sse) {
        app = app.route("/api/events/stream", get(transports::sse::stream));
    }
    if state.config.transport_enabled(Transport::Poll) {
        app = app.route("/api/events/poll", get(transports::poll::poll));
    }
    // The layers of a `Router` wrap each of its routes, and each wrapping is a boxed service
    // that is cloned, with everything inside it, on every request: five layers applied one by
    // one cost about 30 % of the allocations an HTTP worker makes for a single-event publish.
    // So the API's three layers go on as one stack, and the outer two wrap the whole router
    // once.
    let mut app = app
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(
            ServiceBuilder::new()
                .layer(DefaultBodyLimit::max(
                    state.config.max_payload_bytes as usize,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    authenticate,
                ))
                // a body that stops arriving (a `Content-Length` it never sends) ends the
                // request (innermost: it changes the body's type, and only handlers read it)
                .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
                    std::time::Duration::from_millis(state.config.request_read_timeout_ms),
                )),
        )
        .with_state(state.clone());
    if let Some(io) = io {
        // outside `authenticate`: Socket.IO authenticates at CONNECT, with `auth.token`
        let socketio = Router::new()
            .route("/socket.io/", any(socketio))
            .route("/socket.io", any(socketio))
            .with_state(io)
            .layer(
                ServiceBuilder::new()
                    .layer(axum::middleware::from_fn_with_state(
                        state.clone(),
                        transports::socketio::origin_check,
                    ))
                    .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
                        std::time::Duration::from_millis(state.config.request_read_timeout_ms),
                    )),
            );
        app = app.merge(socketio);
    }
    // the guard is the outermost layer: a refused Host or Origin gets no further
    Router::new().fallback_service(
        ServiceBuilder::new()
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                guard::check,
            ))
            .layer(cors(&state))
            .service(app),
    )
}
