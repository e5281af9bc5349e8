//! `/mcp`: the MCP server over streamable HTTP, on the server's own port, behind the same
//! guard and `authenticate` layer as every route (bearer tokens; open on a loopback server
//! without users). rmcp's `StreamableHttpService` speaks the transport; this file bounds what a
//! client can make it hold: sessions are counted and refused above `mcp_max_sessions`, an idle
//! one is closed after [`IDLE`], and a request body is limited to `max_payload_bytes`. Host and
//! Origin are checked by the guard (with this server's allow-lists), so rmcp's own loopback-only
//! Host check is off.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};

use super::{Mcp, Shared};
use crate::app::App;
use crate::http::ApiError;

/// A session with no request for this long is closed (its client starts a new one).
pub const IDLE: Duration = Duration::from_secs(300);

/// The `/mcp` endpoint.
pub struct McpHttp {
    service: StreamableHttpService<Mcp, LocalSessionManager>,
    sessions: Arc<LocalSessionManager>,
    max_sessions: usize,
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
        Arc::new(McpHttp {
            service,
            sessions,
            max_sessions: app.config.mcp_max_sessions,
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
        self.service
            .handle(req)
            .await
            .map(axum::body::Body::new)
            .into_response()
    }
}
