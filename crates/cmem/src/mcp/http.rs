//! `/mcp`: the MCP server over streamable HTTP, on the server's own port, behind the same
//! guard and `authenticate` layer as every route (bearer tokens; open on a loopback server
//! without users). rmcp's `StreamableHttpService` speaks the transport; this file bounds what a
//! client can make it hold: sessions are counted and refused above `mcp_max_sessions`, an idle
//! one is closed after [`IDLE`], and a request body is limited to `max_payload_bytes`. Host and
//! Origin are checked by the guard (with this server's allow-lists), so rmcp's own loopback-only
//! Host check is off.
//!
//! A session remembers the token it was opened with; once that token is revoked (or its user
//! removed) the session is closed within a second, its open GET stream included, instead of
//! lingering until the idle timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};

use super::{Mcp, Shared};
use crate::access::auth::Identity;
use crate::app::App;
use crate::http::ApiError;
use crate::teams::TokenHolder;

/// A session with no request for this long is closed (its client starts a new one).
pub const IDLE: Duration = Duration::from_secs(300);

/// The `/mcp` endpoint.
pub struct McpHttp {
    service: StreamableHttpService<Mcp, LocalSessionManager>,
    sessions: Arc<LocalSessionManager>,
    max_sessions: usize,
    /// Session id → the id of the token that opened it.
    opened_with: Arc<Mutex<HashMap<String, String>>>,
}

impl McpHttp {
    pub fn new(app: App) -> Arc<McpHttp> {
        let shared = Shared::for_server(app.clone());
        let mut sessions = LocalSessionManager::default();
        sessions.session_config.keep_alive = Some(IDLE);
        let sessions = Arc::new(sessions);
        let config = StreamableHttpServerConfig::default()
            .disable_allowed_hosts()
            .disable_allowed_origins()
            .with_max_request_body_bytes(app.config.max_payload_bytes as usize)
            .with_sse_keep_alive(Some(Duration::from_secs(app.config.sse_heartbeat_s)))
            .with_cancellation_token(app.hub.shutdown.child_token());
        let service = StreamableHttpService::new(
            move || Ok(Mcp::new(shared.clone())),
            sessions.clone(),
            config,
        );
        let opened_with: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        tokio::spawn(close_revoked(
            app.clone(),
            sessions.clone(),
            opened_with.clone(),
        ));
        Arc::new(McpHttp {
            service,
            sessions,
            max_sessions: app.config.mcp_max_sessions,
            opened_with,
        })
    }

    /// Sessions open now.
    pub async fn session_count(&self) -> usize {
        self.sessions.sessions.read().await.len()
    }

    /// One request to `/mcp`.
    pub async fn handle(&self, req: Request) -> Response {
        // a POST without a session id starts a session
        if req.method() == Method::POST
            && !req.headers().contains_key("mcp-session-id")
            && self.session_count().await >= self.max_sessions
        {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many MCP sessions are open (mcp_max_sessions = {}); end unused ones (DELETE /mcp with their Mcp-Session-Id) or wait: idle ones close after {} s",
                    self.max_sessions,
                    IDLE.as_secs()
                ),
            )
            .into_response();
        }
        let opens = req.method() == Method::POST && !req.headers().contains_key("mcp-session-id");
        let token = req
            .extensions()
            .get::<Identity>()
            .and_then(Identity::token_id)
            .map(str::to_string);
        let resp = self
            .service
            .handle(req)
            .await
            .map(axum::body::Body::new)
            .into_response();
        if opens
            && let Some(token) = token
            && let Some(sid) = resp
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
            && let Ok(mut map) = self.opened_with.lock()
        {
            map.insert(sid.to_string(), token);
        }
        resp
    }
}

/// Every second until shutdown: closes the sessions whose token no longer stands, and forgets
/// the ones that ended.
async fn close_revoked(
    app: App,
    sessions: Arc<LocalSessionManager>,
    opened_with: Arc<Mutex<HashMap<String, String>>>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = app.hub.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let bound: Vec<(String, String)> = match opened_with.lock() {
            Ok(map) if !map.is_empty() => map.iter().map(|(s, t)| (s.clone(), t.clone())).collect(),
            _ => continue,
        };
        let live: std::collections::HashSet<String> = sessions
            .sessions
            .read()
            .await
            .keys()
            .map(|k| k.to_string())
            .collect();
        for (sid, token) in bound {
            // a database that cannot answer now is asked again next second
            let standing = live.contains(&sid)
                && !matches!(
                    app.access.token_holder(&token),
                    Ok(TokenHolder::Revoked | TokenHolder::Gone)
                );
            if standing {
                continue;
            }
            if live.contains(&sid) {
                let id: rmcp::transport::common::server_side_http::SessionId = sid.as_str().into();
                if let Err(e) = sessions.close_session(&id).await {
                    tracing::debug!(error = %e, "closing a revoked MCP session");
                }
                tracing::info!(session = %sid, "MCP session closed: its token no longer stands");
            }
            if let Ok(mut map) = opened_with.lock() {
                map.remove(&sid);
            }
        }
    }
}
