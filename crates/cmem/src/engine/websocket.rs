//! Engine.IO over WebSocket: one task per session owns the socket, the upper layer's two
//! halves and the heartbeat.
//!
//! The task waits for whichever comes first: a message from the client, a frame to send, or
//! the heartbeat's deadline (one `Sleep`, re-armed only when the deadline moves). Frames ready
//! together are written together (one flush per wakeup). A WebSocket that names a long-polling
//! session is an upgrade: it answers `2probe` with `3probe`, waits for `5`, then takes the
//! session over from the long-polling side.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use futures::FutureExt;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::polling::{Heartbeat, Session};
use super::wsstream::{ReadError, WsStream};
use super::{
    Engine, Frame, HttpError, Inbound, Incoming, Opening, Outbound, Transport, Upper, new_sid,
};
use cmem_wire::eio::Packet;
use cmem_wire::ws::{self, Message, WsError};

type Ws = WsStream<TokioIo<hyper::upgrade::Upgraded>>;

/// How long a closing session tries to send its last frame and a close frame.
const GOODBYE: std::time::Duration = std::time::Duration::from_secs(1);

/// Frames gathered into one write at most.
const MAX_FRAMES_PER_WRITE: usize = 64;

/// Bytes gathered into one write at most (past this the write goes out and the next frames
/// wait for the next one): a session's buffer stays small even when large events come in a
/// burst.
const MAX_BYTES_PER_WRITE: usize = 16 * 1024;

fn header_has(req: &Request<Body>, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Answers a WebSocket request: 101 and a task for the session, or 400 saying what is wrong.
pub(super) fn accept<U: Upper>(
    engine: Arc<Engine<U>>,
    sid: Option<String>,
    mut req: Request<Body>,
) -> axum::response::Response {
    if req.method() != Method::GET {
        return HttpError::BadHandshakeMethod.response("a WebSocket starts with a GET request");
    }
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec());
    let version_ok = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let (Some(key), true, true, true) = (
        key,
        version_ok,
        header_has(&req, header::UPGRADE, "websocket"),
        header_has(&req, header::CONNECTION, "upgrade"),
    ) else {
        return HttpError::BadRequest.response(
            "transport=websocket needs a WebSocket upgrade request (Upgrade: websocket, Sec-WebSocket-Version: 13); a proxy may have dropped the Upgrade header",
        );
    };
    // an upgrade names a long-polling session that exists and is not upgrading already
    let accept = ws::accept_key(&key);
    let probe = match sid {
        None => None,
        Some(sid) => match engine.session(&sid) {
            Some(s) => Some(s),
            // a second WebSocket for a session that upgraded already: the reference server
            // completes the handshake and closes it (the session itself goes on)
            None if engine.is_upgraded(&sid) => {
                let on_upgrade = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    if let Ok(upgraded) = on_upgrade.await {
                        let mut ws = WsStream::new(TokioIo::new(upgraded), 1024);
                        let _ = tokio::time::timeout(GOODBYE, ws.close()).await;
                    }
                });
                return switching(accept);
            }
            None => {
                return HttpError::UnknownSid.response(
                    "no long-polling session to upgrade (it ended, or it upgraded already)",
                );
            }
        },
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _) = req.into_parts();
    // The setup (upgrade, handshake or probe) is boxed and freed once done: the task then
    // holds only what a running session needs, for as long as the connection lasts.
    let fut = async move {
        let Some(started) = Box::pin(start(engine, on_upgrade, probe, parts)).await else {
            return;
        };
        // the session runs as a task of its own: the future that set it up is gone
        tokio::spawn(run(started));
    };
    tokio::spawn(fut);
    switching(accept)
}

/// `101 Switching Protocols` for a WebSocket whose key gave `accept`.
fn switching(accept: String) -> axum::response::Response {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Adds an engine frame to what the session's next flush writes.
fn feed(ws: &mut Ws, f: &Frame) {
    match f {
        Frame::Message(b) => ws.feed(ws::opcode::TEXT, b),
        Frame::Binary(b) => ws.feed(ws::opcode::BINARY, b),
    }
}

/// What a running session holds.
struct Started<U: Upper> {
    engine: Arc<Engine<U>>,
    ws: Ws,
    inn: U::In,
    out: U::Out,
    heartbeat: Heartbeat,
    /// Engine.IO packets the long-polling side had not sent yet.
    control: Vec<Packet>,
    /// The id of the long-polling session this one upgraded, forgotten by the engine when
    /// this ends (`None` for a session that started on WebSocket).
    upgraded: Option<Arc<str>>,
}

/// Completes the HTTP upgrade and opens the session (a new one, or the upgrade of a
/// long-polling one).
async fn start<U: Upper>(
    engine: Arc<Engine<U>>,
    on_upgrade: hyper::upgrade::OnUpgrade,
    probe: Option<Arc<Session<U>>>,
    parts: axum::http::request::Parts,
) -> Option<Started<U>> {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            return None;
        }
    };
    let ws = WsStream::new(TokioIo::new(upgraded), engine.options.max_payload);
    match probe {
        None => fresh(engine, ws, parts).await,
        Some(session) => upgrade(engine, ws, session).await,
    }
}

/// A WebSocket session from the start: the handshake packet, then the session.
async fn fresh<U: Upper>(
    engine: Arc<Engine<U>>,
    mut ws: Ws,
    parts: axum::http::request::Parts,
) -> Option<Started<U>> {
    let Some(sid) = new_sid() else {
        let _ = tokio::time::timeout(GOODBYE, ws.close()).await;
        return None;
    };
    let (inn, out) = engine.upper.open(Opening {
        headers: parts.headers,
        uri: parts.uri,
        extensions: parts.extensions,
        transport: Transport::Websocket,
        sid: sid.clone(),
    });
    let open = format!("0{}", engine.handshake(&sid, Transport::Websocket));
    if ws.send_text(&open).await.is_err() {
        let mut inn = inn;
        inn.closed("client_closed");
        return None;
    }
    let heartbeat = Heartbeat {
        next_ping: Instant::now() + engine.options.ping_interval,
        pong_due: None,
    };
    Some(Started {
        engine,
        ws,
        inn,
        out,
        heartbeat,
        control: Vec::new(),
        upgraded: None,
    })
}

/// The upgrade of a long-polling session: probe, `5`, then the session moves here.
async fn upgrade<U: Upper>(
    engine: Arc<Engine<U>>,
    mut ws: Ws,
    session: Arc<Session<U>>,
) -> Option<Started<U>> {
    let deadline = Instant::now() + engine.options.upgrade_timeout;
    let mut probed = false;
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next()).await;
        match m {
            Ok(Ok(Message::Text(t))) if t == "2probe" => {
                if ws.send_text("3probe").await.is_err() {
                    break;
                }
                if !probed {
                    if !session.begin_upgrade() {
                        break;
                    }
                    probed = true;
                }
            }
            Ok(Ok(Message::Text(t))) if t == "5" && probed => {
                let Some((mut inn, out, heartbeat, control)) = session.take(&engine).await else {
                    break;
                };
                inn.upgraded();
                return Some(Started {
                    engine,
                    ws,
                    inn,
                    out,
                    heartbeat,
                    control,
                    upgraded: Some(session.sid().clone()),
                });
            }
            Ok(Ok(Message::Ping(p))) => {
                ws.feed(ws::opcode::PONG, &p);
                if ws.flush().await.is_err() {
                    break;
                }
            }
            Ok(Ok(Message::Pong)) => {}
            // anything else ends the probe; long-polling goes on
            _ => break,
        }
    }
    session.cancel_upgrade();
    let _ = tokio::time::timeout(GOODBYE, ws.close()).await;
    None
}

/// Why a read ended the session.
fn read_error(e: &ReadError) -> &'static str {
    match e {
        // a client that went away without a close frame (a process or tab ended, a network
        // dropped) is a close, not a malformed packet
        ReadError::Closed => "client_closed",
        ReadError::Ws(WsError::TooLarge { .. }) => "message_too_large",
        ReadError::Ws(_) => "bad_packet",
        ReadError::Io(_) => "transport_error",
    }
}

/// The session: reads, writes and the heartbeat, until one of them ends it.
///
/// It takes the session as one value and uses its fields in place: the task's future then
/// holds each of them once (a copy into locals would be kept beside the original).
async fn run<U: Upper>(mut s: Started<U>) {
    let interval = s.engine.options.ping_interval;
    let timeout = s.engine.options.ping_timeout;
    let mut reason: Cow<'static, str> = Cow::Borrowed("client_closed");
    let mut last: Option<Frame> = None;
    for p in std::mem::take(&mut s.control) {
        s.ws.feed_text(&p.encode());
    }
    let sleep = tokio::time::sleep_until(s.heartbeat.pong_due.unwrap_or(s.heartbeat.next_ping));
    tokio::pin!(sleep);
    // Each wakeup is turned into a small `Step` before anything else is awaited, so what the
    // waiting held (a read's error, the pending futures) is not kept beside what handling it
    // holds: the task stays small while it waits, which is most of its life.
    enum Step {
        Read(Message),
        Send(Frame),
        End(Cow<'static, str>, Option<Frame>),
        Beat,
    }
    'session: loop {
        let step = tokio::select! {
            biased;
            m = s.ws.next() => match m {
                Ok(m) => Step::Read(m),
                Err(e) => {
                    tracing::debug!(error = %e, "websocket read ended the session");
                    Step::End(Cow::Borrowed(read_error(&e)), None)
                }
            },
            r = s.out.next() => match r {
                Ok(f) => Step::Send(f),
                Err(c) => Step::End(c.reason, c.last),
            },
            _ = &mut sleep => Step::Beat,
        };
        let incoming = match step {
            Step::End(why, words) => {
                (reason, last) = (why, words);
                break 'session;
            }
            Step::Beat => {
                if s.heartbeat.pong_due.is_some() {
                    reason = Cow::Borrowed("heartbeat_timeout");
                    break 'session;
                }
                let due = Instant::now() + timeout;
                s.heartbeat.pong_due = Some(due);
                sleep.as_mut().reset(due);
                if s.ws.send_text("2").await.is_err() {
                    reason = Cow::Borrowed("transport_error");
                    break 'session;
                }
                continue;
            }
            Step::Send(f) => {
                let mut end = None;
                feed(&mut s.ws, &f);
                for _ in 1..MAX_FRAMES_PER_WRITE {
                    if s.ws.buffered() >= MAX_BYTES_PER_WRITE || !s.out.more_ready() {
                        break;
                    }
                    match s.out.next().now_or_never() {
                        Some(Ok(f)) => feed(&mut s.ws, &f),
                        Some(Err(c)) => {
                            end = Some(c);
                            break;
                        }
                        None => break,
                    }
                }
                if s.ws.flush().await.is_err() {
                    reason = Cow::Borrowed("transport_error");
                    break 'session;
                }
                if let Some(c) = end {
                    (reason, last) = (c.reason, c.last);
                    break 'session;
                }
                continue;
            }
            Step::Read(m) => match m {
                Message::Text(t) => match Packet::decode(&t) {
                    Ok(Packet::Pong(_)) => {
                        if s.heartbeat.pong_due.take().is_some() {
                            s.heartbeat.next_ping = Instant::now() + interval;
                            sleep.as_mut().reset(s.heartbeat.next_ping);
                        }
                        continue;
                    }
                    Ok(Packet::Close) => break 'session,
                    Ok(Packet::Message(text)) => Incoming::Text(text),
                    Ok(Packet::Binary(b)) => Incoming::Binary(b),
                    Ok(Packet::Open(_) | Packet::Ping(_) | Packet::Upgrade | Packet::Noop) => {
                        continue;
                    }
                    Err(_) => {
                        reason = Cow::Borrowed("bad_packet");
                        break 'session;
                    }
                },
                Message::Binary(b) => Incoming::Binary(b),
                Message::Close(_) => break 'session,
                Message::Pong => continue,
                Message::Ping(p) => {
                    s.ws.feed(ws::opcode::PONG, &p);
                    if s.ws.flush().await.is_err() {
                        reason = Cow::Borrowed("transport_error");
                        break 'session;
                    }
                    continue;
                }
            },
        };
        // boxed: handlers (a CONNECT, a message to publish) are large and rare
        if let Err(c) = Box::pin(s.inn.message(incoming)).await {
            (reason, last) = (c.reason, c.last);
            break 'session;
        }
    }
    tracing::debug!(reason = %reason, "websocket session ended");
    // Last words, then a close frame (a client that reads nothing gets neither, within
    // GOODBYE); only then is the session over for the layer above, so a server that waits for
    // its sessions to end before it exits has sent them their last words.
    let _ = Box::pin(tokio::time::timeout(GOODBYE, async {
        if let Some(f) = last {
            feed(&mut s.ws, &f);
        }
        s.ws.close().await;
    }))
    .await;
    if let Some(sid) = &s.upgraded {
        s.engine.upgrade_ended(sid);
    }
    s.inn.closed(&reason);
}
