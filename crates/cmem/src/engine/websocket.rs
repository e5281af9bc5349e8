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
use futures::{FutureExt, SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use super::polling::{Heartbeat, Session};
use super::{
    Engine, Frame, HttpError, Inbound, Incoming, Opening, Outbound, Transport, Upper, new_sid,
};
use crate::protocol::eio::Packet;

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// How long a closing session tries to send its last frame and a close frame.
const GOODBYE: std::time::Duration = std::time::Duration::from_secs(1);

/// Frames gathered into one write at most.
const MAX_FRAMES_PER_WRITE: usize = 64;

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
    let probe = match sid {
        None => None,
        Some(sid) => match engine.session(&sid) {
            Some(s) => Some(s),
            None => {
                return HttpError::UnknownSid.response(
                    "no long-polling session to upgrade (it ended, or it upgraded already)",
                );
            }
        },
    };
    let accept = tungstenite::handshake::derive_accept_key(&key);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _) = req.into_parts();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        let o = &engine.options;
        let config = WebSocketConfig::default()
            .read_buffer_size(o.ws_read_chunk)
            .write_buffer_size(o.ws_write_batch)
            .max_message_size(Some(o.max_payload))
            .max_frame_size(Some(o.max_payload));
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        match probe {
            None => fresh(engine, ws, parts).await,
            Some(session) => upgrade(engine, ws, session).await,
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn text(s: &str) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

fn message(f: Frame) -> Message {
    match f {
        Frame::Message(b) => match Utf8Bytes::try_from(b) {
            Ok(t) => Message::Text(t),
            // frames are built from strings; this cannot happen, and sending the bytes as
            // binary would be worse than sending them as they are
            Err(_) => Message::Text(Utf8Bytes::from("")),
        },
        Frame::Binary(b) => Message::Binary(b),
    }
}

/// A WebSocket session from the start: the handshake packet, then the session.
async fn fresh<U: Upper>(engine: Arc<Engine<U>>, mut ws: Ws, parts: axum::http::request::Parts) {
    let Some(sid) = new_sid() else {
        let _ = ws.close(None).await;
        return;
    };
    let (inn, out) = engine.upper.open(Opening {
        headers: parts.headers,
        uri: parts.uri,
        extensions: parts.extensions,
        transport: Transport::Websocket,
        sid: sid.clone(),
    });
    let open = format!("0{}", engine.handshake(&sid, Transport::Websocket));
    if ws.send(text(&open)).await.is_err() {
        let mut inn = inn;
        inn.closed("client_closed");
        return;
    }
    let heartbeat = Heartbeat {
        next_ping: Instant::now() + engine.options.ping_interval,
        pong_due: None,
    };
    run(engine, ws, inn, out, heartbeat, Vec::new()).await;
}

/// The upgrade of a long-polling session: probe, `5`, then the session moves here.
async fn upgrade<U: Upper>(engine: Arc<Engine<U>>, mut ws: Ws, session: Arc<Session<U>>) {
    let deadline = Instant::now() + engine.options.upgrade_timeout;
    let mut probed = false;
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next()).await;
        match m {
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2probe" => {
                if ws.send(text("3probe")).await.is_err() {
                    break;
                }
                if !probed {
                    if !session.begin_upgrade() {
                        break;
                    }
                    probed = true;
                }
            }
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "5" && probed => {
                let Some((mut inn, out, heartbeat, control)) = session.take(&engine).await else {
                    break;
                };
                inn.upgraded();
                run(engine, ws, inn, out, heartbeat, control).await;
                return;
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            // anything else ends the probe; long-polling goes on
            _ => break,
        }
    }
    session.cancel_upgrade();
    let _ = ws.close(None).await;
}

/// Why a read ended the session.
fn read_error(e: &tungstenite::Error) -> &'static str {
    match e {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => "client_closed",
        tungstenite::Error::Capacity(_) => "message_too_large",
        tungstenite::Error::Protocol(_) | tungstenite::Error::Utf8(_) => "bad_packet",
        _ => "transport_error",
    }
}

/// The session: reads, writes and the heartbeat, until one of them ends it.
async fn run<U: Upper>(
    engine: Arc<Engine<U>>,
    mut ws: Ws,
    mut inn: U::In,
    mut out: U::Out,
    mut heartbeat: Heartbeat,
    control: Vec<Packet>,
) {
    let interval = engine.options.ping_interval;
    let timeout = engine.options.ping_timeout;
    drop(engine);
    let mut reason: Cow<'static, str> = Cow::Borrowed("client_closed");
    let mut last: Option<Frame> = None;
    for p in control {
        if ws.feed(text(&p.encode())).await.is_err() {
            inn.closed("transport_error");
            return;
        }
    }
    let sleep = tokio::time::sleep_until(heartbeat.pong_due.unwrap_or(heartbeat.next_ping));
    tokio::pin!(sleep);
    'session: loop {
        tokio::select! {
            biased;
            m = ws.next() => match m {
                None => break 'session,
                Some(Err(e)) => {
                    reason = Cow::Borrowed(read_error(&e));
                    break 'session;
                }
                Some(Ok(Message::Text(t))) => match Packet::decode(t.as_str()) {
                    Ok(Packet::Pong(_)) => {
                        if heartbeat.pong_due.take().is_some() {
                            heartbeat.next_ping = Instant::now() + interval;
                            sleep.as_mut().reset(heartbeat.next_ping);
                        }
                    }
                    Ok(Packet::Close) => break 'session,
                    Ok(Packet::Message(s)) => {
                        if let Err(c) = inn.message(Incoming::Text(s)).await {
                            (reason, last) = (c.reason, c.last);
                            break 'session;
                        }
                    }
                    Ok(Packet::Binary(b)) => {
                        if let Err(c) = inn.message(Incoming::Binary(b)).await {
                            (reason, last) = (c.reason, c.last);
                            break 'session;
                        }
                    }
                    Ok(Packet::Open(_) | Packet::Ping(_) | Packet::Upgrade | Packet::Noop) => {}
                    Err(_) => {
                        reason = Cow::Borrowed("bad_packet");
                        break 'session;
                    }
                },
                Some(Ok(Message::Binary(b))) => {
                    if let Err(c) = inn.message(Incoming::Binary(b.into())).await {
                        (reason, last) = (c.reason, c.last);
                        break 'session;
                    }
                }
                Some(Ok(Message::Close(_))) => break 'session,
                // tungstenite queued the answer to a ping: send it
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                    if ws.flush().await.is_err() {
                        reason = Cow::Borrowed("transport_error");
                        break 'session;
                    }
                }
            },
            r = out.next() => {
                let mut end = None;
                match r {
                    Ok(f) => {
                        if ws.feed(message(f)).await.is_err() {
                            reason = Cow::Borrowed("transport_error");
                            break 'session;
                        }
                        for _ in 1..MAX_FRAMES_PER_WRITE {
                            match out.next().now_or_never() {
                                Some(Ok(f)) => {
                                    if ws.feed(message(f)).await.is_err() {
                                        reason = Cow::Borrowed("transport_error");
                                        break 'session;
                                    }
                                }
                                Some(Err(c)) => {
                                    end = Some(c);
                                    break;
                                }
                                None => break,
                            }
                        }
                        if ws.flush().await.is_err() {
                            reason = Cow::Borrowed("transport_error");
                            break 'session;
                        }
                    }
                    Err(c) => end = Some(c),
                }
                if let Some(c) = end {
                    (reason, last) = (c.reason, c.last);
                    break 'session;
                }
            },
            _ = &mut sleep => {
                if heartbeat.pong_due.is_some() {
                    reason = Cow::Borrowed("heartbeat_timeout");
                    break 'session;
                }
                let due = Instant::now() + timeout;
                heartbeat.pong_due = Some(due);
                sleep.as_mut().reset(due);
                if ws.send(text("2")).await.is_err() {
                    reason = Cow::Borrowed("transport_error");
                    break 'session;
                }
            }
        }
    }
    inn.closed(&reason);
    // Last words, then a close frame; a client that reads nothing gets neither.
    let _ = tokio::time::timeout(GOODBYE, async {
        if let Some(f) = last {
            let _ = ws.send(message(f)).await;
        }
        let _ = ws.close(None).await;
    })
    .await;
}
