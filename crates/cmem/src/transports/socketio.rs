//! Socket.IO at `/socket.io/`: WebSocket, long-polling and the upgrade between them, on our
//! own Engine.IO / Socket.IO layer (`crate::engine`).
//!
//! The event name is the envelope `type`, the first argument the envelope, the last its
//! journal position as text (`<epoch>:<id>`, Socket.IO's "offset"). The namespace `/` is the
//! only one.
//!
//! Where a client resumes from, in order of preference:
//! 1. **Connection state recovery**, socket.io-client's own: the CONNECT answer carries
//!    `{sid, pid}`; a client that reconnects sends `{pid, offset}` in its auth by itself and,
//!    when the pid is one this server issued for this user in this journal and the offset is
//!    still retained, gets the same socket id, the workspaces that session had (also those it
//!    joined later, kept in the teams database), every event it missed and
//!    `socket.recovered === true`. This works after any absence within retention, after a
//!    restart, and from an offset obtained on another transport. A pid this server cannot
//!    verify gets a normal connect and a `resync` (reason `unknown_session`), never a replay
//!    it cannot vouch for.
//! 2. `auth: {last_event_id, epoch?}`: a cursor, as every transport takes.
//! 3. Nothing: events from now on.
//!
//! Delivery pulls from the connection's [`Subscription`]; nothing is queued per socket. A
//! client that stops reading is cut when its socket's writes stall for
//! `slow_consumer_timeout_ms` (the registry counts `slow_consumer`); socket.io-client then
//! reconnects and recovers by itself. A connection the server ends for another reason
//! (revoked token, shutdown) is told why with `cmem_close` first, then closed at the
//! Engine.IO level, so the client reconnects and, if it still may, recovers.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use cmem_wire::Code;
use cmem_wire::Transport;
use cmem_wire::sio::Limits;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::client_events::Socket;
use super::{conn_meta, parse_workspaces};
use crate::access::auth::{Identity, identify, token_from};
use crate::app::App;
use crate::engine::socketio::{Connected, EventStream, Namespaces, Refused, Reply, SocketIo};
use crate::engine::{self, Close, Engine, Frame, Opening};
use crate::envelope::{Cursor, Event, Scope};
use crate::hub::Subscription;
use crate::net::StallFlag;

/// Browsers send `Origin` on WebSocket upgrades and cross-origin polling; refuse origins the
/// rule the guard applies to state-changing requests does not allow
/// ([`crate::config::Config::origin_allowed_for`]). Non-browser clients send none and are not
/// affected.
pub(crate) async fn origin_check(
    axum::extract::State(app): axum::extract::State<App>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Some(origin) = req.headers().get(axum::http::header::ORIGIN) {
        let host = req
            .headers()
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok());
        let allowed = origin
            .to_str()
            .is_ok_and(|o| app.config.origin_allowed_for(o, host));
        if !allowed {
            return crate::http::ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                format!(
                    "origin {origin:?} is not in cors_origins; add it to the configuration to allow it"
                ),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// How long a session's workspaces are kept for recovery when the journal keeps events for
/// ever (`retention_max_age_s = 0`).
const SESSIONS_KEPT_S: u64 = 30 * 24 * 3600;

/// Binary attachments one packet may announce.
const MAX_ATTACHMENTS: usize = 4;

/// The Socket.IO engine of this server.
pub type IoEngine = Engine<SocketIo<Cmem>>;

/// What a client may put in `auth`. Unknown keys are ignored.
#[derive(Debug, Clone, Default)]
pub(crate) struct Handshake {
    cursor: Option<Cursor>,
    workspaces: Vec<String>,
    token: Option<String>,
    /// Connection state recovery: the private session id and the last offset seen.
    pid: Option<String>,
    offset: Option<String>,
}

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
    #[serde(default)]
    pid: Option<String>,
    #[serde(default)]
    offset: Option<String>,
}

/// Why a handshake's `auth` is refused (the CONNECT_ERROR message).
#[derive(Debug)]
pub(crate) struct HandshakeError(String);

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HandshakeError {}

/// Longest pid or offset read from `auth`.
const MAX_RECOVERY_TEXT: usize = 200;

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
    let bounded = |v: Option<String>, what: &str| match v {
        Some(s) if s.len() > MAX_RECOVERY_TEXT => Err(HandshakeError(format!(
            "auth.{what} is longer than {MAX_RECOVERY_TEXT} characters"
        ))),
        other => Ok(other.filter(|s| !s.is_empty())),
    };
    Ok(Handshake {
        cursor,
        workspaces,
        token: a.token,
        pid: bounded(a.pid, "pid")?,
        offset: bounded(a.offset, "offset")?,
    })
}

/// Issues and checks private session ids: `<sid>.<mac>`, where the MAC binds the socket id to
/// the journal's epoch and the user with a secret kept in the state folder. A pid says "this
/// server gave this socket id to this user in this journal", without a table of sessions.
pub(crate) struct SessionKeys {
    secret: [u8; 32],
}

impl SessionKeys {
    /// Reads the secret from `<state>/socketio.key`, creating it on first use.
    pub(crate) fn load(state_dir: &Path) -> std::io::Result<SessionKeys> {
        let path = state_dir.join("socketio.key");
        let hex = match std::fs::read_to_string(&path) {
            Ok(h) => h.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut b = [0u8; 32];
                getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
                let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
                std::fs::write(&path, &h)?;
                h
            }
            Err(e) => return Err(e),
        };
        SessionKeys::from_hex(
            &hex,
            &format!(
                "{} (delete it to make a new one; clients then reconnect without recovery)",
                path.display()
            ),
        )
    }

    /// A secret given as 64 hex digits; `what` names it in the error.
    pub(crate) fn from_hex(hex: &str, what: &str) -> std::io::Result<SessionKeys> {
        let bad = || std::io::Error::other(format!("{what} is not 64 hex digits"));
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut secret = [0u8; 32];
        for (i, s) in secret.iter_mut().enumerate() {
            *s = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(SessionKeys { secret })
    }

    fn mac(&self, epoch: &str, sid: &str, user: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.secret);
        for part in [epoch, sid, user] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub(crate) fn pid(&self, epoch: &str, sid: &str, user: &str) -> String {
        format!("{sid}.{}", self.mac(epoch, sid, user))
    }

    /// The socket id of a pid this server issued for `user` in journal `epoch`.
    pub(crate) fn verify(&self, pid: &str, epoch: &str, user: &str) -> Option<String> {
        let (sid, mac) = pid.rsplit_once('.')?;
        let expected = self.mac(epoch, sid, user);
        // compared in full whatever differs, so timing says nothing of the MAC
        let same = mac.len() == expected.len()
            && mac
                .bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        same.then(|| sid.to_string())
    }
}

/// A new Socket.IO socket id: 22 characters of base64url.
fn new_socket_id() -> Option<String> {
    use base64::Engine as _;
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// The server's namespace: who may connect, where they resume from, what they may send.
pub struct Cmem {
    app: App,
    keys: SessionKeys,
    frames: Arc<FrameCache>,
}

/// The Socket.IO frames of recent events, shared by every socket of the namespace: an event's
/// frame is built by the first socket that sends it and reused by the others (the same bytes
/// for every receiver). Kept here, by the transport that encodes them, not on the event: a
/// fixed ring of slots indexed by event id, each holding the newest event that maps to it, so
/// there is nothing to evict and nothing to lock (`arc-swap`), and what it holds is bounded by
/// its size, not by the journal's in-memory window.
pub(crate) struct FrameCache {
    slots: Box<[ArcSwapOption<(u64, Bytes)>]>,
}

impl FrameCache {
    /// Slots: a burst reaches every socket while its events are among the newest this many.
    const SLOTS: usize = 4096;

    fn new() -> FrameCache {
        FrameCache {
            slots: (0..Self::SLOTS).map(|_| ArcSwapOption::empty()).collect(),
        }
    }

    /// Event `id`'s frame, built with `build` unless a socket built it already.
    fn get_or_build(&self, id: u64, build: impl FnOnce() -> Bytes) -> Bytes {
        let slot = &self.slots[(id % Self::SLOTS as u64) as usize];
        if let Some(hit) = slot.load().as_ref()
            && hit.0 == id
        {
            return hit.1.clone();
        }
        let frame = build();
        slot.store(Some(Arc::new((id, frame.clone()))));
        frame
    }
}

/// The events one socket receives: its subscription, and where shared frames are kept.
pub struct Delivery(Subscription, Arc<FrameCache>);

/// `42["<type>",<envelope>,"<epoch>:<id>"]`: built once per event and shared by every
/// receiver through `frames`, except for an event addressed to one connection (built for it
/// alone, and not kept).
fn frame_of(sub: &Subscription, frames: &FrameCache, ev: &Event) -> Frame {
    let build = || {
        let kind = serde_json::to_string(&ev.kind).unwrap_or_else(|_| "\"\"".into());
        let offset = Value::String(sub.cursor_text(ev.id)).to_string();
        let body = ev.json();
        let mut s = String::with_capacity(kind.len() + body.len() + offset.len() + 6);
        s.push_str("42[");
        s.push_str(&kind);
        s.push(',');
        s.push_str(body);
        s.push(',');
        s.push_str(&offset);
        s.push(']');
        Bytes::from(s)
    };
    Frame::Message(match ev.scope {
        Scope::Client(_) => build(),
        _ => frames.get_or_build(ev.id, build),
    })
}

/// A CONNECT_ERROR's message with the code a client acts on in its `data`.
fn refuse(code: Code, message: impl std::fmt::Display) -> Refused {
    Refused {
        message: message.to_string(),
        data: Some(json!({ "code": code })),
    }
}

fn cmem_close(reason: &str, message: &str, last_event_id: String) -> Frame {
    let packet = json!([
        "cmem_close",
        crate::hub::last_words(reason, message, last_event_id)
    ]);
    Frame::message(&format!("2{packet}"))
}

impl EventStream for Delivery {
    fn more_ready(&self) -> bool {
        self.0.more_ready()
    }

    async fn next(&mut self) -> Result<Frame, Close> {
        let Delivery(sub, frames) = self;
        match sub.next().await {
            Ok(ev) => Ok(frame_of(sub, frames, &ev)),
            Err(end) => {
                let reason = end.reason();
                let last = cmem_close(
                    &reason,
                    &end.to_string(),
                    sub.cursor_text(sub.conn().cursor()),
                );
                Err(Close {
                    reason: reason.into(),
                    last: Some(last),
                })
            }
        }
    }
}

/// How a connecting client starts.
enum Start {
    /// Connection state recovery: the same socket id, from the offset, no greeting.
    Recover { sid: String, cursor: Cursor },
    /// A new socket from a cursor (or from now).
    Fresh { cursor: Option<Cursor> },
    /// A new socket whose client presented a session this server cannot vouch for.
    Resync { requested: Cursor },
}

impl Cmem {
    fn start(&self, hs: &Handshake, user: &str) -> Start {
        let Some(pid) = &hs.pid else {
            return Start::Fresh {
                cursor: hs.cursor.clone(),
            };
        };
        let hub = &self.app.hub;
        let offset = hs.offset.as_deref().and_then(|o| Cursor::parse(o).ok());
        match (self.keys.verify(pid, hub.journal.epoch(), user), offset) {
            (Some(sid), Some(cursor)) if hub.resumable(&cursor) => Start::Recover { sid, cursor },
            // a session of ours whose offset cannot be honoured: the hub says why
            (Some(_), Some(cursor)) => Start::Fresh {
                cursor: Some(cursor),
            },
            // it never received an event: nothing to recover
            (Some(_), None) => Start::Fresh {
                cursor: hs.cursor.clone(),
            },
            // not ours (another server, another journal, another user, or made up); an
            // explicit cursor still says where the client wants to be
            (None, offset) => match (&hs.cursor, offset) {
                (Some(c), _) => Start::Fresh {
                    cursor: Some(c.clone()),
                },
                (None, requested) => Start::Resync {
                    requested: requested.unwrap_or(Cursor { id: 0, epoch: None }),
                },
            },
        }
    }

    async fn connect_root(
        &self,
        o: &Opening,
        auth: Option<Value>,
    ) -> Result<Connected<Arc<Socket>, Delivery>, Refused> {
        let app = &self.app;
        let mut hs = parse_auth(auth).map_err(|e| refuse(Code::Invalid, e))?;
        // `auth.token` first; Node clients may also send the header or `?token=` on the URL
        let token = hs
            .token
            .take()
            .or_else(|| token_from(&o.headers, o.uri.query()));
        let identity = identify(&app.access, token.as_deref(), app.config.open_allowed())
            .map_err(|e| refuse(e.code(), e))?;
        let user = identity.user_name().unwrap_or("").to_string();
        let start = self.start(&hs, &user);
        let (sid, workspaces) = match &start {
            Start::Recover { sid, .. } => {
                // the workspaces the session had, as far as the user still belongs to them
                let had = app
                    .access
                    .socket_workspaces(sid)
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| hs.workspaces.clone());
                let allowed = match &identity {
                    Identity::Open => had,
                    Identity::User { user, .. } if had.is_empty() => user.workspaces.clone(),
                    Identity::User { user, .. } => had
                        .into_iter()
                        .filter(|w| user.workspaces.contains(w))
                        .collect(),
                };
                (sid.clone(), allowed)
            }
            _ => (
                new_socket_id().ok_or_else(|| {
                    refuse(
                        Code::Internal,
                        "no random numbers from the operating system",
                    )
                })?,
                identity
                    .workspaces_for(std::mem::take(&mut hs.workspaces))
                    .map_err(|e| refuse(e.code(), e))?,
            ),
        };
        let remote = o
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0);
        let meta = conn_meta(&o.headers, remote, workspaces, &identity);
        let registry = &app.hub.registry;
        if let Some(old) = registry.get(&sid) {
            // the transport this session replaces has not been seen to end yet
            old.close(Code::RecoveredElsewhere.as_str());
            registry.ended(&old, Code::RecoveredElsewhere.as_str());
        }
        let conn = registry
            .register(sid.clone(), o.transport, meta)
            .ok_or_else(|| refuse(Code::Conflict, "this socket id is in use"))?;
        // The subscription starts (greeting and any resync committed) before the CONNECT
        // answer: a client learns it is connected only once its position is fixed, so nothing
        // another client publishes after that moment can fall before it, and its greeting is
        // the first event it receives.
        let sub = match start {
            Start::Recover { cursor, .. } => app.hub.resume(conn.clone(), cursor).await,
            Start::Fresh { cursor } => app.hub.subscribe(conn.clone(), cursor).await,
            Start::Resync { requested } => {
                app.hub
                    .subscribe_resync(conn.clone(), Code::UnknownSession.as_str(), requested)
                    .await
            }
        };
        let sub = match sub {
            Ok(sub) => sub,
            Err(e) => {
                tracing::error!(error = %e, sid = %conn.id, "could not start delivery");
                registry.ended(&conn, Code::JournalError.as_str());
                return Err(refuse(
                    Code::Unavailable,
                    format!("the journal is unavailable: {e}"),
                ));
            }
        };
        let hub = &app.hub;
        let pid = self.keys.pid(hub.journal.epoch(), &sid, &user);
        Ok(Connected {
            socket: Arc::new(Socket {
                app: app.clone(),
                conn,
                identity,
                stall: o.extensions.get::<StallFlag>().cloned(),
                budgets: Mutex::new(None),
            }),
            stream: Some(Delivery(sub, self.frames.clone())),
            sid,
            pid: Some(pid),
            then: Vec::new(),
        })
    }
}

impl Namespaces for Cmem {
    type Socket = Arc<Socket>;
    type Stream = Delivery;

    async fn connect(
        &self,
        opening: &Opening,
        nsp: &str,
        auth: Option<Value>,
    ) -> Result<Connected<Arc<Socket>, Delivery>, Refused> {
        if nsp != "/" {
            // as the reference server says it, without a code: no cmem client asks for one
            return Err("Invalid namespace".into());
        }
        self.connect_root(opening, auth).await
    }

    async fn event(&self, socket: &Arc<Socket>, event: &str, args: Vec<rmpv::Value>) -> Reply {
        let data = args.into_iter().next().unwrap_or(rmpv::Value::Nil);
        let body = super::client_events::handle(socket, event, data).await;
        match rmpv::ext::to_value(&body) {
            Ok(v) => Reply::Ack(vec![v]),
            Err(e) => {
                tracing::error!(error = %e, "could not encode an ack");
                Reply::Nothing
            }
        }
    }

    fn upgraded(&self, socket: &Arc<Socket>) {
        socket.conn.set_transport(Transport::Websocket);
    }

    fn disconnected(&self, socket: Arc<Socket>, reason: &str) {
        let registry = &self.app.hub.registry;
        let c = &socket.conn;
        let why = if socket.stall.as_ref().is_some_and(StallFlag::is_set) {
            Code::SlowConsumer.as_str()
        } else {
            reason
        };
        if matches!(
            reason,
            "transport_error" | "heartbeat_timeout" | "bad_packet" | "message_too_large"
        ) && why != "slow_consumer"
        {
            registry.record_error(
                c.transport().name(),
                Some(&c.id),
                reason,
                None,
                format!("socket.io session ended: {reason}"),
            );
        }
        registry.ended(c, why);
    }
}

/// Builds the Socket.IO engine from the configuration, or `None` when both of its transports
/// are switched off.
/// `shared_key` is the secret of recovery tokens when the nodes of a cluster share one
/// (`Journal::shared_secret`); otherwise each node keeps its own in `<state>/socketio.key`.
pub fn build(
    app: &App,
    shared_key: Option<String>,
) -> Result<Option<Arc<IoEngine>>, std::io::Error> {
    let c = &app.config;
    let websocket = c.transport_enabled(Transport::Websocket);
    let polling = c.transport_enabled(Transport::Polling);
    if !websocket && !polling {
        return Ok(None);
    }
    let keys = match shared_key {
        Some(hex) => SessionKeys::from_hex(&hex, "the cluster's shared socketio key")?,
        None => SessionKeys::load(&c.state_dir())?,
    };
    // Sessions older than the journal's retention can no longer be recovered; with no age
    // limit, a month bounds what clients that joined workspaces leave behind.
    let max_age_s = match c.retention_max_age_s {
        0 => SESSIONS_KEPT_S,
        s => s,
    };
    let max_age_ms = (max_age_s as i64).saturating_mul(1000);
    let (access, shutdown) = (app.access.clone(), app.hub.shutdown.clone());
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            if let Err(e) = access.prune_socket_sessions(max_age_ms) {
                tracing::warn!(error = %e, "could not prune old socket sessions");
            }
        }
    });
    let max_payload = c.max_payload_bytes as usize;
    let io = SocketIo::new(
        Cmem {
            app: app.clone(),
            keys,
            frames: Arc::new(FrameCache::new()),
        },
        // What a socket may hold of a binary packet still waiting for its attachments (before
        // CONNECT too): no more than one message's worth in all. Our binary events
        // (`doc_sync`, `doc_update`) carry one attachment.
        Limits {
            max_attachments: MAX_ATTACHMENTS,
            max_attachment_bytes: max_payload,
        },
        Duration::from_millis(c.connect_timeout_ms),
    );
    let options = engine::Options {
        ping_interval: Duration::from_millis(c.ping_interval_ms),
        ping_timeout: Duration::from_millis(c.ping_timeout_ms),
        max_payload,
        polling,
        websocket,
        ..engine::Options::default()
    };
    Ok(Some(Engine::new(io, options, app.hub.shutdown.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_built_once_and_never_given_for_another_event() {
        let cache = FrameCache::new();
        let built = std::cell::Cell::new(0);
        let frame = |id: u64| {
            cache.get_or_build(id, || {
                built.set(built.get() + 1);
                Bytes::from(format!("frame {id}"))
            })
        };
        assert_eq!(frame(7), "frame 7");
        assert_eq!(frame(7), "frame 7");
        assert_eq!(
            built.get(),
            1,
            "the second socket reuses the first one's frame"
        );
        // an event that maps to the same slot replaces it, and is never answered with the old
        let other = 7 + FrameCache::SLOTS as u64;
        assert_eq!(frame(other), format!("frame {other}"));
        assert_eq!(frame(7), "frame 7");
        assert_eq!(built.get(), 3);
    }

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
        let h = parse_auth(Some(json!({"pid": "p.q", "offset": "e:3"}))).unwrap();
        assert_eq!(
            (h.pid.as_deref(), h.offset.as_deref()),
            (Some("p.q"), Some("e:3"))
        );
        assert!(parse_auth(Some(json!({"pid": "x".repeat(201)}))).is_err());
    }

    #[test]
    fn pids_bind_socket_epoch_and_user() {
        let dir = tempfile::tempdir().unwrap();
        let keys = SessionKeys::load(dir.path()).unwrap();
        let pid = keys.pid("e1", "sock", "ann");
        assert_eq!(keys.verify(&pid, "e1", "ann").as_deref(), Some("sock"));
        assert_eq!(keys.verify(&pid, "e2", "ann"), None, "another journal");
        assert_eq!(keys.verify(&pid, "e1", "bob"), None, "another user");
        assert_eq!(keys.verify("sock.00", "e1", "ann"), None, "made up");
        assert_eq!(keys.verify("nodot", "e1", "ann"), None);
        // the secret outlives the process
        let again = SessionKeys::load(dir.path()).unwrap();
        assert_eq!(again.verify(&pid, "e1", "ann").as_deref(), Some("sock"));
    }
}
