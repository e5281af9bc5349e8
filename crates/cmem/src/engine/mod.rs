//! Engine.IO 4 and Socket.IO 5, the server side, written for this server.
//!
//! Why our own rather than a general library: an idle connection is what the server holds most
//! of, and a general implementation keeps a task, a channel and a timer per socket for
//! features we do not use. Here a WebSocket session is one task that owns its socket, its
//! Socket.IO state and its event stream; nothing is queued per socket except replies (acks,
//! CONNECT answers), because events are pulled from the journal's shared fan-out when the
//! socket can take them (see `hub`). Heartbeats are one `Sleep` in that task (an entry in
//! tokio's timer wheel), re-armed only when the deadline changes. A long-polling session is a
//! small record in a table: its heartbeat is computed when a request arrives, and a sweeper
//! removes sessions nobody asks for.
//!
//! Layers, bottom to top:
//! - [`crate::protocol`]: the packets as data (no I/O);
//! - this module: Engine.IO sessions over long-polling and WebSocket, the upgrade between
//!   them, heartbeats, and the HTTP rules (status codes, `maxPayload`) of the reference server;
//!   it hands messages to an [`Upper`] layer and pulls what to send from it;
//! - [`socketio`]: the Socket.IO layer as an [`Upper`]: namespaces, CONNECT, events, acks and
//!   binary attachments, calling a [`socketio::Namespaces`] implementation (the server's
//!   transport, or the conformance example).

pub mod polling;
pub mod socketio;
mod websocket;
mod wsstream;

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

/// How the engine behaves: the values the handshake announces, and limits.
#[derive(Debug, Clone)]
pub struct Options {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Largest message or polling request body a client may send.
    pub max_payload: usize,
    pub polling: bool,
    pub websocket: bool,
    /// How long a probed WebSocket may take to send `5` (upgrade) after `2probe`.
    pub upgrade_timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload: 1_000_000,
            polling: true,
            websocket: true,
            upgrade_timeout: Duration::from_secs(10),
        }
    }
}

/// The transport a session uses now: `Polling` or `Websocket` (the engine serves only
/// Socket.IO's two).
pub use cmem_wire::Transport;

/// One message to the client, encoded once (an event's frame is shared by every receiver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole Engine.IO message packet as text, the leading `4` included.
    Message(Bytes),
    /// Binary data (a WebSocket binary frame; `b` + base64 in a polling payload).
    Binary(Bytes),
}

impl Frame {
    /// The message packet for Socket.IO packet text `text` (`4` is put in front).
    pub fn message(text: &str) -> Frame {
        let mut s = String::with_capacity(text.len() + 1);
        s.push('4');
        s.push_str(text);
        Frame::Message(Bytes::from(s))
    }

    fn len(&self) -> usize {
        match self {
            Frame::Message(b) | Frame::Binary(b) => b.len(),
        }
    }
}

/// One message from the client.
#[derive(Debug)]
pub enum Incoming {
    /// A message packet's text, without its `4`.
    Text(String),
    Binary(Vec<u8>),
}

/// Why a session ends, and what to send before it does.
#[derive(Debug, Clone)]
pub struct Close {
    /// A short machine-readable reason (`client_closed`, `heartbeat_timeout`, …).
    pub reason: Cow<'static, str>,
    /// Sent before the session closes, if the client can still take it.
    pub last: Option<Frame>,
}

impl Close {
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Close {
        Close {
            reason: reason.into(),
            last: None,
        }
    }
}

/// What the layer above needs to know of the request that opened a session.
#[derive(Debug, Clone)]
pub struct Opening {
    pub headers: axum::http::HeaderMap,
    pub uri: axum::http::Uri,
    pub extensions: axum::http::Extensions,
    pub transport: Transport,
    /// The Engine.IO session id.
    pub sid: Arc<str>,
}

/// The layer above Engine.IO (Socket.IO, or a bare echo in the conformance example).
pub trait Upper: Send + Sync + 'static {
    type In: Inbound;
    type Out: Outbound;
    /// A session opened: its two halves. They are used apart, since a long-polling session
    /// reads with one request while another one waits for something to send.
    fn open(&self, opening: Opening) -> (Self::In, Self::Out);
}

/// What the client sends, in order.
pub trait Inbound: Send + 'static {
    fn message(&mut self, m: Incoming) -> impl Future<Output = Result<(), Close>> + Send;
    /// The session moved from long-polling to WebSocket.
    fn upgraded(&mut self);
    /// The session ended. Called once.
    fn closed(&mut self, reason: &str);
}

/// What to send to the client.
pub trait Outbound: Send + 'static {
    /// The next frame to send; waits for one. Must be cancel-safe: the engine drops the
    /// future when something else happens first. An error ends the session.
    fn next(&mut self) -> impl Future<Output = Result<Frame, Close>> + Send;
    /// Whether `next` may have a frame without waiting (false only when it surely would
    /// wait). The engine asks before gathering more frames into one write, so a session with
    /// nothing more to send does not set up a wait only to drop it.
    fn more_ready(&self) -> bool {
        true
    }
}

/// An Engine.IO server for one path.
pub struct Engine<U: Upper> {
    upper: U,
    options: Options,
    /// Long-polling sessions by id. A WebSocket session is owned by its task and is not here;
    /// an upgraded session leaves the table, so a poll for it is answered 400.
    sessions: Mutex<HashMap<Arc<str>, Arc<polling::Session<U>>>>,
    /// Ids of sessions that upgraded to WebSocket and still run: a second WebSocket naming one
    /// is completed and closed at once, as the reference server does (an unknown id is a 400).
    upgraded: Mutex<std::collections::HashSet<Arc<str>>>,
    shutdown: CancellationToken,
}

/// Engine.IO's HTTP errors, with the codes and messages of the reference server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HttpError {
    UnknownTransport,
    UnknownSid,
    BadHandshakeMethod,
    BadRequest,
    UnsupportedVersion,
    /// A new session while the server shuts down: the client should try again (elsewhere, or
    /// here once the server is back), which socket.io-client does with its backoff.
    ShuttingDown,
}

impl HttpError {
    fn response(self, detail: &str) -> Response {
        let (code, message) = match self {
            HttpError::UnknownTransport => (0, "Transport unknown"),
            HttpError::UnknownSid => (1, "Session ID unknown"),
            HttpError::BadHandshakeMethod => (2, "Bad handshake method"),
            HttpError::BadRequest => (3, "Bad request"),
            HttpError::UnsupportedVersion => (5, "Unsupported protocol version"),
            HttpError::ShuttingDown => (3, "Server shutting down"),
        };
        let body = serde_json::json!({"code": code, "message": message, "detail": detail});
        let json = [(header::CONTENT_TYPE, "application/json")];
        match self {
            // only this one is worth trying again, in a moment
            HttpError::ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                json,
                [(header::RETRY_AFTER, "1")],
                body.to_string(),
            )
                .into_response(),
            _ => (StatusCode::BAD_REQUEST, json, body.to_string()).into_response(),
        }
    }
}

/// The query parameters Engine.IO reads.
struct Query {
    transport: Transport,
    sid: Option<String>,
}

fn parse_query(q: Option<&str>, options: &Options) -> Result<Query, (HttpError, String)> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(q.unwrap_or("")).map_err(|_| {
            (
                HttpError::BadRequest,
                "the query string is not readable".into(),
            )
        })?;
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    match get("EIO") {
        Some("4") => {}
        Some(v) => {
            return Err((
                HttpError::UnsupportedVersion,
                format!("EIO={v}: this server speaks Engine.IO 4 (socket.io-client 3 and later)"),
            ));
        }
        None => {
            return Err((
                HttpError::UnsupportedVersion,
                "the EIO parameter is missing".into(),
            ));
        }
    }
    let transport = match get("transport") {
        Some("polling") if options.polling => Transport::Polling,
        Some("websocket") if options.websocket => Transport::Websocket,
        Some(t @ ("polling" | "websocket")) => {
            return Err((
                HttpError::UnknownTransport,
                format!("the {t} transport is switched off on this server"),
            ));
        }
        Some(t) => {
            return Err((
                HttpError::UnknownTransport,
                format!("unknown transport `{t}`; use polling or websocket"),
            ));
        }
        None => {
            return Err((
                HttpError::UnknownTransport,
                "the transport parameter is missing".into(),
            ));
        }
    };
    Ok(Query {
        transport,
        sid: get("sid").map(str::to_string),
    })
}

/// A new session id: 20 characters of base64url from 15 random bytes.
fn new_sid() -> Option<Arc<str>> {
    use base64::Engine as _;
    let mut b = [0u8; 15];
    getrandom::fill(&mut b).ok()?;
    Some(Arc::from(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
    ))
}

impl<U: Upper> Engine<U> {
    /// An engine whose sessions all end when `shutdown` is cancelled.
    pub fn new(upper: U, options: Options, shutdown: CancellationToken) -> Arc<Engine<U>> {
        Arc::new(Engine {
            upper,
            options,
            sessions: Mutex::new(HashMap::new()),
            upgraded: Mutex::default(),
            shutdown,
        })
    }

    /// The handshake packet's JSON.
    fn handshake(&self, sid: &str, transport: Transport) -> String {
        let upgrades: &[&str] = if transport == Transport::Polling && self.options.websocket {
            &["websocket"]
        } else {
            &[]
        };
        serde_json::json!({
            "sid": sid,
            "upgrades": upgrades,
            "pingInterval": self.options.ping_interval.as_millis() as u64,
            "pingTimeout": self.options.ping_timeout.as_millis() as u64,
            "maxPayload": self.options.max_payload,
        })
        .to_string()
    }

    /// Answers one HTTP request to the engine's path.
    pub async fn handle(self: Arc<Self>, req: Request<Body>) -> Response {
        let q = match parse_query(req.uri().query(), &self.options) {
            Ok(q) => q,
            Err((e, detail)) => return e.response(&detail),
        };
        let method = req.method().clone();
        // While the server shuts down it still answers the sessions it has (their last words
        // are on their way), but opens none: a WebSocket, new or an upgrade, would only be
        // closed again.
        if self.shutdown.is_cancelled() && (q.sid.is_none() || q.transport == Transport::Websocket)
        {
            return HttpError::ShuttingDown
                .response("the server is shutting down; connect again in a moment");
        }
        match (q.transport, q.sid, method) {
            (Transport::Polling, None, Method::GET) => self.open_polling(req),
            (Transport::Polling, None, _) => HttpError::BadHandshakeMethod
                .response("a new long-polling session starts with a GET request"),
            (Transport::Polling, Some(sid), Method::GET) => self.poll(&sid).await,
            (Transport::Polling, Some(sid), Method::POST) => self.post(&sid, req).await,
            (Transport::Polling, Some(_), _) => HttpError::BadHandshakeMethod
                .response("long-polling uses GET to receive and POST to send"),
            (Transport::Websocket, sid, _) => websocket::accept(self, sid, req),
            // `query` reads only the two transports the engine serves
            (Transport::Sse | Transport::Poll, ..) => HttpError::UnknownTransport
                .response("the Engine.IO transports are polling and websocket"),
        }
    }

    fn session(&self, sid: &str) -> Option<Arc<polling::Session<U>>> {
        self.sessions.lock().ok()?.get(sid).cloned()
    }

    /// How many long-polling sessions still have something to collect: an open session (its
    /// upper layer ends it at its next GET), or last words and the close not yet fetched.
    /// Shutdown keeps accepting requests until this is 0 (or its grace period ends), because
    /// a polling client may need a new connection for the GET that brings them.
    pub fn owed(&self) -> usize {
        let all: Vec<_> = self
            .sessions
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        all.iter().filter(|s| s.owed()).count()
    }

    fn forget(&self, sid: &str) {
        if let Ok(mut m) = self.sessions.lock() {
            m.remove(sid);
        }
    }

    /// A long-polling session moved to WebSocket: it leaves the table and is remembered as
    /// upgraded until its WebSocket ends ([`Engine::upgrade_ended`]).
    fn upgraded_to_websocket(&self, sid: &Arc<str>) {
        if let Ok(mut u) = self.upgraded.lock() {
            u.insert(sid.clone());
        }
        self.forget(sid);
    }

    fn upgrade_ended(&self, sid: &str) {
        if let Ok(mut u) = self.upgraded.lock() {
            u.remove(sid);
        }
    }

    fn is_upgraded(&self, sid: &str) -> bool {
        self.upgraded.lock().is_ok_and(|u| u.contains(sid))
    }

    /// Removes long-polling sessions whose heartbeat failed or that nobody asked for, ending
    /// them. Requests check their own session on arrival; this finds the ones that stopped
    /// asking. Runs until the engine shuts down.
    pub async fn sweep(self: Arc<Self>) {
        let every = self.options.ping_interval.min(Duration::from_secs(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                // Sessions are not closed from here: each one's upper layer ends it with its
                // own last words (cmem's `cmem_close`), which a close from here would pre-empt.
                _ = self.shutdown.cancelled() => return,
            }
            let all: Vec<_> = self
                .sessions
                .lock()
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            for s in all {
                s.check(&self).await;
            }
        }
    }
}

/// The `text/plain` answer of a long-polling request.
fn text_response(body: impl Into<Body>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        body.into(),
    )
        .into_response()
}
