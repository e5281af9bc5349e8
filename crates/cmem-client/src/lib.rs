//! Client for Collective Memory (cmem): receive every event once, in order, whatever the
//! network does.
//!
//! The same state machine as the JavaScript client (`clients/js`), on tokio:
//! - **Fallback.** Transports are tried in order (default: Socket.IO over WebSocket, Socket.IO
//!   over Engine.IO long-polling, SSE, plain poll). One that cannot connect within `connect_timeout`, or is cut again and again before
//!   it has been up `stable_after`, is abandoned for the next; the list wraps around.
//! - **Backoff.** Delays between attempts are random in `[0, min(max, initial × factor^n))`
//!   ("full jitter"; 500 ms, ×2, 30 s by default), reset once a connection has been stable.
//!   It gives up only when the server says trying again cannot help (a code whose action is
//!   `give_up`, such as `forbidden`: see `cmem_wire::codes`); then the last state is
//!   [`Phase::Failed`] and the updates end.
//! - **Liveness.** A connection silent for longer than the server's announced heartbeat allows
//!   is presumed dead and replaced.
//! - **Moving up.** While on a lesser transport, better ones are tried every `probe_interval`;
//!   the client switches when one connects.
//! - **Exactly once.** One cursor across transports and reconnects. Each connection starts
//!   from it, only the connection in use delivers, and ids at or below the cursor are dropped.
//!   A cursor the server cannot honour yields a `resync` event, which is delivered like any
//!   other.
//!
//! Start reading at [`Client::connect`]; the state machine is `client.rs`, one connection per
//! transport is `legs.rs`, and the Socket.IO handshake (shared with the load generator) is
//! [`eio`]. The wire format itself (packets, cursors, transports, SSE, codes) is `cmem-wire`.
//!
//! ```no_run
//! # async fn run() {
//! use cmem_client::{Client, Options, Update};
//! let mut c = Client::connect(Options::new("http://127.0.0.1:8000")).unwrap();
//! while let Some(update) = c.next().await {
//!     match update {
//!         Update::Event(e) => println!("{} {}", e.id, e.kind),
//!         Update::State(s) => eprintln!("{s}"),
//!     }
//! }
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod client;
pub mod eio;
mod legs;

pub use client::Client;

/// One journal event, as every transport delivers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: u64,
    pub epoch: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub scope: String,
    pub ts: String,
    #[serde(default)]
    pub data: serde_json::Value,
    /// Who published it (events published over the API), as the server saw the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<serde_json::Value>,
}

pub use cmem_wire::codes::{Action, Code};
pub use cmem_wire::{Cursor, Transport};

/// Exponential backoff with full jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub factor: u32,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            factor: 2,
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The bound for attempt `n` (0-based): `min(max, initial × factor^n)`.
    pub fn bound(&self, attempt: u32) -> Duration {
        let mult = (self.factor.max(1) as u64)
            .checked_pow(attempt.min(63))
            .unwrap_or(u64::MAX);
        let ms = (self.initial.as_millis() as u64).saturating_mul(mult);
        Duration::from_millis(ms).min(self.max)
    }

    /// A delay uniformly random in `[0, bound(attempt))`; `unit` is a random number in [0, 1).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        self.bound(attempt).mul_f64(unit.clamp(0.0, 0.999_999))
    }
}

/// How a client connects.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server, `http(s)://host:port`; for a cluster, its nodes separated by commas. The
    /// client stays on one node and moves to the next when it cannot reach it (refused, cut
    /// before opening, timed out), at once and with the same transport, once per node; then it
    /// falls back and backs off as with one server. Any node resumes the cursor.
    pub url: String,
    /// Bearer token; none on an open loopback server.
    pub token: Option<String>,
    /// Workspaces to receive; all of the user's when empty.
    pub workspaces: Vec<String>,
    /// Transports in order of preference.
    pub transports: Vec<Transport>,
    /// Start after this cursor (default: from now).
    pub from: Option<Cursor>,
    pub connect_timeout: Duration,
    pub backoff: Backoff,
    /// A connection up this long resets the backoff; one cut sooner counts as a failure of its
    /// transport.
    pub stable_after: Duration,
    /// Failures of one transport in a row before the next one is tried (one timeout is
    /// enough).
    pub failures_before_fallback: u32,
    /// While on a lesser transport, how often better ones are tried.
    pub probe_interval: Duration,
    /// The poll transport's long-poll wait.
    pub poll_wait: Duration,
    /// The poll transport's client id (default: random).
    pub client_id: Option<String>,
}

impl Options {
    pub fn new(url: impl Into<String>) -> Options {
        Options {
            url: url.into(),
            token: None,
            workspaces: Vec::new(),
            transports: Transport::ALL.to_vec(),
            from: None,
            connect_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            stable_after: Duration::from_secs(10),
            failures_before_fallback: 2,
            probe_interval: Duration::from_secs(60),
            poll_wait: Duration::from_secs(25),
            client_id: None,
        }
    }
}

/// Why a connection failed or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No token, an unknown one or a revoked one.
    Unauthorized,
    /// Not allowed (a workspace the user is not a member of, or a proxy that refuses).
    Forbidden,
    /// The server refused the connection for another reason.
    Refused,
    /// The transport did not connect in time.
    Timeout,
    /// Nothing arrived within the heartbeat interval: presumed dead.
    Stalled,
    /// The server (or something on the way) closed it.
    Closed,
    /// Network or protocol failure.
    Transport,
    /// Something that is not the protocol came back (a proxy's page, a broken packet).
    Protocol,
    /// Another HTTP status.
    Http,
}

/// A failed or ended connection: what, a message that says why, and — when the server said
/// it — the server's code and what it asks the client to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LegError {
    pub code: ErrorCode,
    pub message: String,
    /// The server's code (`cmem_wire::codes`), when it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the server's code asks for (for a code this version does not know, what the HTTP
    /// status suggests); `None` when the server said nothing (a network failure, a proxy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
}

impl LegError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> LegError {
        LegError {
            code,
            message: message.into(),
            reason: None,
            action: None,
        }
    }

    /// The server refused or closed with `refusal` (an HTTP answer of `status`, or none for a
    /// Socket.IO refusal or a close): the class follows the code's action, never the message.
    pub fn from_server(
        refusal: &cmem_wire::Refusal,
        status: Option<u16>,
        fallback: ErrorCode,
        message: impl Into<String>,
    ) -> LegError {
        let action = refusal.action(status);
        let code = match (refusal.known(), action) {
            (_, Action::Reauthenticate) => ErrorCode::Unauthorized,
            (Some(Code::Forbidden), _) => ErrorCode::Forbidden,
            (None, _) if status == Some(403) => ErrorCode::Forbidden,
            _ => fallback,
        };
        LegError {
            code,
            message: message.into(),
            reason: (!refusal.code.is_empty()).then(|| refusal.code.clone()),
            action: Some(action),
        }
    }

    /// Whether the server said that trying again cannot help.
    pub fn gives_up(&self) -> bool {
        self.reason.is_some() && self.action == Some(Action::GiveUp)
    }

    pub(crate) fn transport(message: impl Into<String>) -> LegError {
        LegError::new(ErrorCode::Transport, message)
    }

    pub(crate) fn closed(message: impl Into<String>) -> LegError {
        LegError::new(ErrorCode::Closed, message)
    }
}

impl fmt::Display for LegError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Where the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Connecting,
    Connected,
    Reconnecting,
    /// Stopped for good: the server said trying again cannot help (the error says why). The
    /// last update.
    Failed,
}

/// A change of the connection, with what the next step is.
#[derive(Debug, Clone, Serialize)]
pub struct State {
    pub state: Phase,
    /// The transport in use, or the one the next attempt uses.
    pub transport: Transport,
    /// The node in use, or the one the next attempt uses (one of [`Options::url`]'s).
    pub node: String,
    /// Attempts since the last stable connection.
    pub attempt: u32,
    /// Delay before the next attempt (`reconnecting`).
    #[serde(rename = "delay_ms", serialize_with = "millis")]
    pub delay: Duration,
    /// Why the last connection ended, and on which transport.
    pub error: Option<(Transport, LegError)>,
    /// Set when the client moved up from this transport.
    pub upgraded_from: Option<Transport>,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.state {
            Phase::Connecting => write!(f, "connecting via {}", self.transport),
            Phase::Connected => match self.upgraded_from {
                Some(from) => write!(f, "connected via {} (moved up from {from})", self.transport),
                None => write!(f, "connected via {}", self.transport),
            },
            Phase::Failed => match &self.error {
                Some((t, e)) => write!(f, "{t}: {e}; not trying again"),
                None => write!(f, "stopped"),
            },
            Phase::Reconnecting => {
                if let Some((t, e)) = &self.error {
                    write!(f, "{t}: {e}; ")?;
                }
                write!(
                    f,
                    "reconnecting via {} to {} in {:.1} s (attempt {})",
                    self.transport,
                    self.node,
                    self.delay.as_secs_f64(),
                    self.attempt
                )
            }
        }
    }
}

/// What [`Client::next`] yields.
#[derive(Debug, Clone)]
pub enum Update {
    /// The next event, in id order, once.
    Event(Box<Envelope>),
    /// The connection changed.
    State(State),
}

/// A client that cannot be made as asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Cursor(#[from] cmem_wire::cursor::CursorError),
    #[error(transparent)]
    Transport(#[from] cmem_wire::transport::UnknownTransport),
    #[error("the URL must start with http:// or https://: {0:?}")]
    Url(String),
    #[error("no transports to try")]
    NoTransports,
    #[error("HTTP client: {0}")]
    Http(String),
}

/// A response's `Content-Type`, empty when it has none (or one that is not text).
pub fn content_type(res: &reqwest::Response) -> String {
    res.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Publishes one event with `POST /api/events` and returns the server's answer (`{ids, epoch,
/// count}`). `url` may list a cluster's nodes separated by commas: the next is tried when one
/// cannot be reached (the request is never sent twice to a node that answered).
pub async fn publish(
    url: &str,
    token: Option<&str>,
    kind: &str,
    scope: &str,
    data: serde_json::Value,
) -> Result<serde_json::Value, LegError> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| LegError::transport(format!("HTTP client: {e}")))?;
    let mut last = LegError::transport(format!("no server URL in `{url}`"));
    for node in url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        match publish_to(&http, node, token, kind, scope, &data).await {
            Err(e) if e.code == ErrorCode::Transport => last = e,
            other => return other,
        }
    }
    Err(last)
}

async fn publish_to(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    kind: &str,
    scope: &str,
    data: &serde_json::Value,
) -> Result<serde_json::Value, LegError> {
    let mut req = http
        .post(format!("{}/api/events", url.trim_end_matches('/')))
        .json(&serde_json::json!({"type": kind, "scope": scope, "data": data}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    // only a failure to connect moves on to the next node: past that, the event may have
    // been taken, and sending it again could store it twice
    let res = req.send().await.map_err(|e| {
        if e.is_connect() {
            LegError::transport(format!("{url}: {e}"))
        } else {
            LegError::new(ErrorCode::Closed, format!("{url}: {e}"))
        }
    })?;
    let status = res.status();
    let body: serde_json::Value = res.json().await.unwrap_or(serde_json::Value::Null);
    if status.is_success() {
        return Ok(body.get("data").cloned().unwrap_or(body));
    }
    Err(legs::http_error(status.as_u16(), &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_s_code_decides_the_class_and_the_action() {
        let r = |code: &str| cmem_wire::Refusal {
            code: code.into(),
            message: String::new(),
        };
        let e = LegError::from_server(&r("token_revoked"), None, ErrorCode::Closed, "x");
        assert_eq!(
            (e.code, e.action),
            (ErrorCode::Unauthorized, Some(Action::Reauthenticate))
        );
        let e = LegError::from_server(&r("forbidden"), Some(403), ErrorCode::Http, "x");
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert!(e.gives_up());
        let e = LegError::from_server(&r("server_shutdown"), None, ErrorCode::Closed, "x");
        assert_eq!((e.code, e.action), (ErrorCode::Closed, Some(Action::Retry)));
        assert!(!e.gives_up());
        // a proxy's 403 says nothing of the server's: fall back, do not give up
        let e = LegError::from_server(&r(""), Some(403), ErrorCode::Http, "x");
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert!(!e.gives_up());
    }

    #[test]
    fn backoff_bounds_grow_and_cap() {
        let b = Backoff::default();
        let ms = |n| b.bound(n).as_millis();
        assert_eq!((ms(0), ms(1), ms(2), ms(5)), (500, 1000, 2000, 16000));
        assert_eq!(ms(6), 30000);
        assert_eq!(ms(1000), 30000);
        assert!(b.delay(3, 0.999_999_9) < b.bound(3));
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(2000));
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
    }
}
