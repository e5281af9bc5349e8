//! Socket.IO v4 (Engine.IO 4) at `/socket.io/`, on socketioxide: WebSocket, long-polling and
//! the upgrade between them.
//!
//! The event name is the envelope `type`, the payload the envelope. The handshake
//! `auth: {last_event_id, epoch?, workspaces?}` resumes from a cursor. socketioxide has no
//! connection-state recovery of its own; resume comes from the journal through
//! [`Hub::subscribe`].
//!
//! One task per socket pulls from its subscription and emits. When socketioxide's per-socket
//! send buffer (`queue_bound` packets) is full the task waits: the journal keeps the events, so
//! waiting costs nothing. If the buffer stays full for `slow_consumer_timeout_ms` — the client
//! has stopped reading — it is told why (`cmem_close`) and disconnected, and it resumes from
//! its cursor on reconnect.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::extract::{SocketRef, State as IoState, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::DisconnectReason;
use socketioxide::{SocketIo, TransportType};

use super::{conn_meta, parse_workspaces};
use crate::app::App;
use crate::config::Transport;
use crate::envelope::Cursor;
use crate::http::ApiError;
use crate::hub::StreamEnd;
use crate::hub::registry::Conn;
use crate::net::StallFlag;
use crate::teams::auth::{Identity, identify, token_from};

/// The Socket.IO service, ready to be put in front of the router.
pub struct Layer {
    pub layer: SocketIoLayer,
    pub io: SocketIo,
}

impl Layer {
    /// Wraps `app` with the Socket.IO layer and the `Origin` check that shares the CORS list.
    pub fn apply(self, router: Router, app: App) -> Router {
        router
            .layer(self.layer)
            .layer(axum::middleware::from_fn_with_state(app, origin_check))
    }
}

/// Browsers send `Origin` on WebSocket upgrades and cross-origin polling; refuse origins that
/// are not on the allow-list. Non-browser clients send none and are not affected.
async fn origin_check(State(app): State<App>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/socket.io")
        && let Some(origin) = req.headers().get(axum::http::header::ORIGIN)
    {
        let allowed = origin
            .to_str()
            .map(|o| app.config.origin_allowed(o))
            .unwrap_or(false);
        if !allowed {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "origin {:?} is not in cors_origins; add it to the configuration to allow it",
                    origin
                ),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// What a client may put in `auth`. Unknown keys are ignored.
#[derive(Debug, Clone, Default)]
pub(crate) struct Handshake {
    cursor: Option<Cursor>,
    workspaces: Vec<String>,
    token: Option<String>,
}

/// Who the socket is, decided at the handshake.
#[derive(Debug, Clone)]
pub(crate) struct Who(pub(crate) Identity);

#[derive(Debug, Deserialize)]
struct AuthIn {
    #[serde(default)]
    last_event_id: Value,
    #[serde(default)]
    epoch: Option<String>,
    #[serde(default)]
    workspaces: Option<Value>,
    #[serde(default)]
    token: Option<String>,
}

#[derive(Debug)]
pub(crate) struct HandshakeError(String);

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HandshakeError {}

pub(crate) fn parse_auth(auth: Option<Value>) -> Result<Handshake, HandshakeError> {
    let Some(v) = auth.filter(|v| !v.is_null()) else {
        return Ok(Handshake::default());
    };
    let a: AuthIn = serde_json::from_value(v).map_err(|e| HandshakeError(format!("auth: {e}")))?;
    let cursor = match a.last_event_id {
        Value::Null => None,
        Value::Number(n) => Some(Cursor {
            id: n.as_u64().ok_or_else(|| {
                HandshakeError(format!(
                    "auth.last_event_id {n} is not a non-negative whole number"
                ))
            })?,
            epoch: None,
        }),
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(
            Cursor::parse(&s).map_err(|m| HandshakeError(format!("auth.last_event_id: {m}")))?,
        ),
        other => {
            return Err(HandshakeError(format!(
                "auth.last_event_id must be a number or a string, not {other}"
            )));
        }
    };
    let cursor = cursor.map(|mut c| {
        if c.epoch.is_none() {
            c.epoch = a.epoch.clone().filter(|e| !e.is_empty());
        }
        c
    });
    let workspaces = match a.workspaces {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => parse_workspaces(Some(&s)).map_err(HandshakeError)?,
        Some(Value::Array(items)) => {
            let names: Vec<String> = items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| HandshakeError("auth.workspaces must be a list of names".into()))?;
            parse_workspaces(Some(&names.join(","))).map_err(HandshakeError)?
        }
        Some(_) => {
            return Err(HandshakeError(
                "auth.workspaces must be a list of names".into(),
            ));
        }
    };
    Ok(Handshake {
        cursor,
        workspaces,
        token: a.token,
    })
}

/// Connect middleware: a bad `auth`, a missing or refused token, or a workspace the user is
/// not a member of is refused with `connect_error` saying why.
async fn check_handshake(
    s: SocketRef,
    TryData(auth): TryData<Value>,
    IoState(app): IoState<App>,
) -> Result<(), HandshakeError> {
    let auth = auth.map_err(|e| HandshakeError(format!("auth is not valid JSON: {e}")))?;
    let mut hs = parse_auth(Some(auth))?;
    // `auth.token` first; Node clients may also send the header or `?token=` on the URL
    let token = hs.token.take().or_else(|| {
        let parts = s.req_parts();
        token_from(&parts.headers, parts.uri.query())
    });
    let identity =
        identify(&app.teams, token.as_deref()).map_err(|e| HandshakeError(e.to_string()))?;
    hs.workspaces = identity
        .workspaces_for(std::mem::take(&mut hs.workspaces))
        .map_err(|e| HandshakeError(e.to_string()))?;
    s.extensions.insert(hs);
    s.extensions.insert(Who(identity));
    // Installed here, not in `on_connect`: socketioxide sends the CONNECT packet before it
    // runs the connect handler, so a client that emits at once must find the handler ready.
    super::client_events::install(&s);
    Ok(())
}

fn transport_of(t: TransportType) -> Transport {
    match t {
        TransportType::Websocket => Transport::Websocket,
        TransportType::Polling => Transport::Polling,
    }
}

fn disconnect_reason(r: DisconnectReason) -> &'static str {
    match r {
        DisconnectReason::TransportClose => "client_closed",
        DisconnectReason::MultipleHttpPollingError => "multiple_polling_requests",
        DisconnectReason::PacketParsingError => "bad_packet",
        DisconnectReason::TransportError => "transport_error",
        DisconnectReason::HeartbeatTimeout => "heartbeat_timeout",
        DisconnectReason::ClientNSDisconnect => "client_disconnect",
        DisconnectReason::ServerNSDisconnect => "server_disconnect",
        DisconnectReason::ClosingServer => "server_shutdown",
    }
}

async fn on_connect(s: SocketRef, IoState(app): IoState<App>) {
    let hs = s.extensions.get::<Handshake>().unwrap_or_default();
    let Some(Who(identity)) = s.extensions.get::<Who>() else {
        let _ = s.disconnect(); // the handshake middleware always sets it
        return;
    };
    let parts = s.req_parts();
    let remote = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let meta = conn_meta(&parts.headers, remote, hs.workspaces.clone(), &identity);
    let Some(conn) =
        app.hub
            .registry
            .register(s.id.to_string(), transport_of(s.transport_type()), meta)
    else {
        tracing::warn!(sid = %s.id, "socket id already registered");
        let _ = s.disconnect();
        return;
    };
    // Polling clients upgrade to WebSocket at any time; ask the socket when asked.
    let probe = s.clone();
    conn.set_transport_probe(Box::new(move || transport_of(probe.transport_type())));

    let h = app.hub.clone();
    let c = conn.clone();
    let stalled = parts.extensions.get::<StallFlag>().cloned();
    s.on_disconnect(async move |_s: SocketRef, reason: DisconnectReason| {
        // (a reason the server gave first, such as a revocation, wins: see `Registry::ended`)
        let why = if stalled.as_ref().is_some_and(StallFlag::is_set) {
            "slow_consumer"
        } else {
            disconnect_reason(reason)
        };
        if matches!(
            reason,
            DisconnectReason::TransportError
                | DisconnectReason::HeartbeatTimeout
                | DisconnectReason::PacketParsingError
        ) {
            h.registry.record_error(
                c.transport().name(),
                Some(&c.id),
                disconnect_reason(reason),
                None,
                reason.to_string(),
            );
        }
        h.registry.ended(&c, why);
    });
    // A client that dropped between CONNECT and the line above has no disconnect handler to
    // run: it would stay registered (shown present, counted by revocations) for ever.
    if !s.connected() {
        app.hub.registry.ended(&conn, "client_closed");
        return;
    }

    tokio::spawn(deliver(app, s, conn, hs.cursor));
}

/// Pulls this socket's events from the hub and emits them, in order.
async fn deliver(app: App, s: SocketRef, conn: Arc<Conn>, cursor: Option<Cursor>) {
    let mut sub = match app.hub.subscribe(conn.clone(), cursor).await {
        Ok(sub) => sub,
        Err(e) => {
            tracing::error!(error = %e, sid = %s.id, "could not start delivery");
            conn.close("journal_error");
            let _ = s.disconnect();
            return;
        }
    };
    let slow_timeout = Duration::from_millis(app.config.slow_consumer_timeout_ms);
    loop {
        let ev = match sub.next().await {
            Ok(ev) => ev,
            Err(StreamEnd::Shutdown) => return, // the server closes every engine.io socket
            Err(end) => {
                let reason = end.reason();
                if s.connected() {
                    // Tell the client why, then end the namespace session. Clients resume
                    // from their last event id on reconnect.
                    let _ = s.emit(
                        "cmem_close",
                        &json!({
                            "reason": reason,
                            "message": end.to_string(),
                            "reconnect": true,
                            "last_event_id": app.hub.cursor_text(conn.cursor()),
                        }),
                    );
                    let _ = s.clone().disconnect();
                }
                // the disconnect handler would do this too, unless the transport is already gone
                app.hub.registry.ended(&conn, &reason);
                return;
            }
        };
        let mut full_since: Option<tokio::time::Instant> = None;
        loop {
            match s.emit(ev.kind.as_str(), &*ev.body) {
                Ok(()) => break,
                Err(socketioxide::SendError::Socket(
                    socketioxide::SocketError::InternalChannelFull,
                )) => {
                    // The send buffer is full: wait for the client to drain it. Only a buffer
                    // that makes no progress for `slow_consumer_timeout_ms` ends the session.
                    let since = *full_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= slow_timeout {
                        conn.close("slow_consumer");
                        stop_slow_consumer(&app, &s, &conn).await;
                        return;
                    }
                    // socketioxide offers no async "wait for room"; poll for it briefly.
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                        _ = conn.closer.cancelled() => return, // also on shutdown
                    }
                    if !s.connected() {
                        return;
                    }
                }
                Err(socketioxide::SendError::Socket(socketioxide::SocketError::Closed)) => {
                    // The transport is gone. Usually the disconnect handler removes the entry,
                    // but a client that drops while its CONNECT is being checked is closed by
                    // Engine.IO before socketioxide knows the socket, so no handler runs and
                    // `connected()` stays true: this is the only sign of it.
                    app.hub.registry.ended(&conn, "client_closed");
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, id = ev.id, "could not encode event for socket.io");
                    break;
                }
            }
        }
    }
}

/// Ends a socket whose send buffer stays full. The namespace disconnect needs room in that same
/// buffer, so it is retried while the client drains; a client that never reads again misses
/// its heartbeats and is closed by Engine.IO (`ping_interval + ping_timeout`). Either way the
/// registry records `slow_consumer`, and the client resumes from its cursor when it returns.
async fn stop_slow_consumer(app: &App, s: &SocketRef, conn: &Arc<Conn>) {
    tracing::info!(sid = %s.id, cursor = conn.cursor(), "closing slow consumer");
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(app.config.ping_interval_ms + app.config.ping_timeout_ms);
    while s.connected() && tokio::time::Instant::now() < deadline {
        if s.clone().disconnect().is_ok() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = app.hub.shutdown.cancelled() => return,
        }
    }
}

/// Binary attachments one packet may announce.
const MAX_ATTACHMENTS: usize = 4;

/// Builds the Socket.IO service from the configuration.
pub fn build(app: &App) -> Option<Layer> {
    let c = &app.config;
    let ws = c.transport_enabled(Transport::Websocket);
    let polling = c.transport_enabled(Transport::Polling);
    if !ws && !polling {
        return None;
    }
    let builder = SocketIo::builder()
        .ping_interval(Duration::from_millis(c.ping_interval_ms))
        .ping_timeout(Duration::from_millis(c.ping_timeout_ms))
        .connect_timeout(Duration::from_millis(c.connect_timeout_ms))
        .max_payload(c.max_payload_bytes)
        .ws_max_message_size(c.max_payload_bytes as usize)
        // The per-socket packet channel allocates lazily, so a large bound costs nothing idle
        // and lets replays stream without waiting on a full buffer.
        .max_buffer_size(c.queue_bound.max(128))
        // What a socket may hold of a binary packet still waiting for its attachments (before
        // CONNECT too): no more than one message's worth in all. socketioxide's defaults let a
        // socket pin 10 MB, or 10× `max_payload_bytes` in 10 attachments. Our binary events
        // (`doc_sync`, `doc_update`) carry one attachment.
        .with_parser(
            socketioxide::ParserConfig::common()
                .max_incoming_binaries(MAX_ATTACHMENTS)
                .max_incoming_binary_buf_size(c.max_payload_bytes as usize)
                .packet_completion_timeout(Duration::from_millis(c.connect_timeout_ms)),
        )
        .with_state(app.clone());
    let builder = match (ws, polling) {
        (true, false) => builder.transports([TransportType::Websocket]),
        (false, true) => builder.transports([TransportType::Polling]),
        _ => builder,
    };
    let (layer, io) = builder.build_layer();
    io.ns("/", on_connect.with(check_handshake));
    Some(Layer { layer, io })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_forms() {
        assert!(parse_auth(None).unwrap().cursor.is_none());
        let h = parse_auth(Some(json!({"last_event_id": 5, "epoch": "e"}))).unwrap();
        assert_eq!(
            h.cursor,
            Some(Cursor {
                id: 5,
                epoch: Some("e".into())
            })
        );
        let h = parse_auth(Some(
            json!({"last_event_id": "7", "workspaces": ["a", "b"]}),
        ))
        .unwrap();
        assert_eq!(h.cursor.unwrap().id, 7);
        assert_eq!(h.workspaces, vec!["a", "b"]);
        assert!(parse_auth(Some(json!({"last_event_id": "x"}))).is_err());
        assert!(parse_auth(Some(json!({"last_event_id": -1}))).is_err());
        assert!(parse_auth(Some(json!({"last_event_id": [1]}))).is_err());
        assert!(parse_auth(Some(json!({"workspaces": [1]}))).is_err());
        // unknown keys are tolerated (the token is read by the handshake, not here)
        assert!(parse_auth(Some(json!({"token": "t"}))).is_ok());
    }
}
