//! Engine.IO long-polling: a session is a record in the engine's table; a GET waits for what
//! there is to send, a POST brings what the client sends.
//!
//! The rules are the reference server's:
//! - one GET at a time: a second one while the first waits is an error that closes the session
//!   (the waiting GET is answered `1`, the second 400);
//! - the heartbeat: the server pings one `pingInterval` after the handshake (and after each
//!   pong); no pong within `pingTimeout` of a ping closes the session. A ping is computed when
//!   a request arrives (a waiting GET wakes for it), so no timer is kept per session;
//! - a close the client asks for releases a waiting GET (or one sent with the close) with `6`
//!   (noop); a close for an error with `1`; a close the server decides sends its last frame in
//!   one answer and `1` in the next, as the reference server drains before it closes;
//! - during an upgrade a waiting GET is answered `6` at once, one that arrives meanwhile after
//!   at most 100 ms; after it the session has left the table, so any request for it is
//!   answered 400.

use std::sync::Arc;
use std::sync::Mutex;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    Close, Engine, Frame, HttpError, Inbound, Incoming, Opening, Outbound, Transport, Upper,
    new_sid, text_response,
};
use cmem_wire::eio::{self, Packet, SEPARATOR};

/// How long a GET that arrives during an upgrade is held before it is released with `6`
/// (the reference server checks every 100 ms).
const UPGRADE_HOLD: std::time::Duration = std::time::Duration::from_millis(100);

/// Frames one GET answer carries at most.
const MAX_FRAMES_PER_POLL: usize = 256;

/// How a session ends, which decides what a waiting GET is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum How {
    /// The client sent `1`: a waiting GET gets `6`.
    Client,
    /// A protocol error or a missed heartbeat: a waiting GET gets `1`; otherwise the session
    /// is gone at once.
    Error,
    /// The server ends it: its last frame and `1`, now or at the next GET.
    Server,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    Upgrading,
    Upgraded,
    /// Ended by the server; `1` waits for the next GET.
    Closing(Instant),
    Closed,
}

/// The heartbeat's two instants.
#[derive(Debug, Clone, Copy)]
pub(super) struct Heartbeat {
    /// When the next ping is due (if none is outstanding).
    pub next_ping: Instant,
    /// When the outstanding ping's pong is due.
    pub pong_due: Option<Instant>,
}

impl Heartbeat {
    /// When the session is dead unless a pong arrives: the outstanding ping's deadline, or the
    /// deadline of the ping due next.
    pub fn dead_at(&self, timeout: std::time::Duration) -> Instant {
        self.pong_due.unwrap_or(self.next_ping + timeout)
    }
}

struct State {
    /// Engine.IO packets for the next GET (ping, noop, close).
    control: Vec<Packet>,
    /// What the upper layer asked to send before the close.
    last: Option<Frame>,
    heartbeat: Heartbeat,
    phase: Phase,
    get_pending: bool,
}

/// One long-polling session.
pub struct Session<U: Upper> {
    sid: Arc<str>,
    state: Mutex<State>,
    /// Wakes the waiting GET (a packet to send, a close, an upgrade).
    wake: Notify,
    out: tokio::sync::Mutex<Option<U::Out>>,
    inn: tokio::sync::Mutex<Option<U::In>>,
}

/// Clears `get_pending` however the GET ends (answered, or dropped by a client that left).
struct Pending<'a, U: Upper>(&'a Session<U>);

impl<U: Upper> Drop for Pending<'_, U> {
    fn drop(&mut self) {
        if let Ok(mut st) = self.0.state.lock() {
            st.get_pending = false;
        }
    }
}

fn ok_response() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/html")], "ok").into_response()
}

impl<U: Upper> Session<U> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // the state is plain data that every writer leaves consistent: a poisoned lock is
        // still usable
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the client has yet to collect something: see [`Engine::owed`].
    pub(super) fn owed(&self) -> bool {
        let st = self.lock();
        match st.phase {
            Phase::Open | Phase::Upgrading => true,
            Phase::Closing(_) => st.last.is_some() || st.control.contains(&Packet::Close),
            Phase::Closed | Phase::Upgraded => false,
        }
    }

    /// Ends the session's protocol state (see [`How`]) and removes it from the table. Returns
    /// whether this call ended it. The upper layer is told by [`Session::finish`].
    pub(super) fn close_state(&self, engine: &Engine<U>, c: &Close, how: How) -> bool {
        {
            let mut st = self.lock();
            if matches!(
                st.phase,
                Phase::Closing(_) | Phase::Closed | Phase::Upgraded
            ) {
                return false;
            }
            let now = Instant::now();
            match how {
                // a GET sent together with the close may arrive just after it: it gets the
                // `6` it would have had a moment earlier (later ones get 400)
                How::Client => {
                    st.control.push(Packet::Noop);
                    st.phase = if st.get_pending {
                        Phase::Closed
                    } else {
                        Phase::Closing(now)
                    };
                }
                How::Error => {
                    if st.get_pending {
                        st.control.push(Packet::Close);
                    }
                    st.phase = Phase::Closed;
                }
                // Last words go in an answer of their own and `1` in the next, as the reference
                // server drains before it closes: socket.io-client handles a message it finds
                // after a close in the same answer only after that close, and drops it.
                How::Server => {
                    st.last = c.last.clone();
                    if st.last.is_none() {
                        st.control.push(Packet::Close);
                    }
                    st.phase = if st.get_pending && st.last.is_none() {
                        Phase::Closed
                    } else {
                        Phase::Closing(now)
                    };
                }
            }
            if st.phase == Phase::Closed {
                engine.forget(&self.sid);
            }
        }
        self.wake.notify_one();
        true
    }

    /// Tells the upper layer the session ended, from a task (a POST may hold the inbound half
    /// while its handler runs).
    fn finish_later(self: &Arc<Self>, reason: String) {
        let s = self.clone();
        tokio::spawn(async move {
            let mut inn = s.inn.lock().await;
            finish(&mut inn, &reason);
        });
    }

    /// Closes and tells the upper layer.
    async fn close(self: &Arc<Self>, engine: &Engine<U>, c: Close, how: How) {
        if self.close_state(engine, &c, how) {
            self.finish_later(c.reason.into_owned());
        }
    }

    /// The sweeper's look: a missed heartbeat, or a close nobody came to collect.
    pub(super) async fn check(self: &Arc<Self>, engine: &Engine<U>) {
        let now = Instant::now();
        let (dead, stale) = {
            let st = self.lock();
            let dead =
                st.phase == Phase::Open && now >= st.heartbeat.dead_at(engine.options.ping_timeout);
            let stale = matches!(st.phase, Phase::Closing(since)
                if now.saturating_duration_since(since) >= engine.options.ping_timeout);
            (dead, stale)
        };
        if dead {
            self.close(engine, Close::new("heartbeat_timeout"), How::Error)
                .await;
        } else if stale {
            self.lock().phase = Phase::Closed;
            engine.forget(&self.sid);
        }
    }

    /// Moves the session into its upgrade: waiting GETs are answered `6` from now on.
    pub(super) fn begin_upgrade(&self) -> bool {
        let ok = {
            let mut st = self.lock();
            if st.phase == Phase::Open {
                st.phase = Phase::Upgrading;
                // the client waits for the GET it has out to return before it sends `5`
                if st.get_pending {
                    st.control.push(Packet::Noop);
                }
                true
            } else {
                false
            }
        };
        self.wake.notify_one();
        ok
    }

    /// The probe failed: long-polling goes on.
    pub(super) fn cancel_upgrade(&self) {
        let mut st = self.lock();
        if st.phase == Phase::Upgrading {
            st.phase = Phase::Open;
        }
    }

    /// Completes the upgrade: the session leaves the table and its halves go to the WebSocket.
    pub(super) async fn take(
        &self,
        engine: &Engine<U>,
    ) -> Option<(U::In, U::Out, Heartbeat, Vec<Packet>)> {
        let (heartbeat, control) = {
            let mut st = self.lock();
            if st.phase != Phase::Upgrading {
                return None;
            }
            st.phase = Phase::Upgraded;
            let control: Vec<Packet> = std::mem::take(&mut st.control)
                .into_iter()
                .filter(|p| *p != Packet::Noop)
                .collect();
            (st.heartbeat, control)
        };
        engine.upgraded_to_websocket(&self.sid);
        self.wake.notify_one();
        let out = self.out.lock().await.take();
        let inn = self.inn.lock().await.take();
        let (Some(out), Some(inn)) = (out, inn) else {
            engine.upgrade_ended(&self.sid);
            return None;
        };
        Some((inn, out, heartbeat, control))
    }

    /// The session's id.
    pub(super) fn sid(&self) -> &Arc<str> {
        &self.sid
    }

    /// An end the outbound half reported while an answer was being gathered closes the
    /// session after that answer: its last words and `1` go to the next GETs.
    fn end_after_answer(self: &Arc<Self>, engine: &Engine<U>, end: Option<Close>) {
        if let Some(c) = end
            && self.close_state(engine, &c, How::Server)
        {
            self.finish_later(c.reason.into_owned());
        }
    }

    /// A GET: waits for something to send and answers with it.
    async fn get(self: &Arc<Self>, engine: &Engine<U>) -> Response {
        let Ok(mut out) = self.out.try_lock() else {
            // a second GET while one waits: the reference server closes the session
            self.close(engine, Close::new("multiple_polling_requests"), How::Error)
                .await;
            return HttpError::BadRequest.response(
                "another long-polling GET is already waiting for this session; only one at a time",
            );
        };
        let dead = {
            let mut st = self.lock();
            if matches!(st.phase, Phase::Closed | Phase::Upgraded) {
                return HttpError::UnknownSid.response("the session has ended");
            }
            let dead = st.phase == Phase::Open
                && Instant::now() >= st.heartbeat.dead_at(engine.options.ping_timeout);
            st.get_pending = !dead;
            dead
        };
        if dead {
            self.close(engine, Close::new("heartbeat_timeout"), How::Error)
                .await;
            return HttpError::UnknownSid.response("the session ended: no pong in time");
        }
        let _pending = Pending(self);
        let timeout = engine.options.ping_timeout;
        // a GET that arrives during an upgrade waits a moment for it to complete (then it is
        // refused: the session moved to WebSocket) before it is released with `6`
        let mut noop_at: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let step = {
                let mut st = self.lock();
                let mut dead = false;
                if st.phase == Phase::Open {
                    if now >= st.heartbeat.dead_at(timeout) {
                        dead = true;
                    } else if st.heartbeat.pong_due.is_none() && now >= st.heartbeat.next_ping {
                        st.heartbeat.pong_due = Some(st.heartbeat.next_ping + timeout);
                        st.control.push(Packet::Ping(String::new()));
                    }
                }
                if dead {
                    None
                } else if st.phase == Phase::Upgraded {
                    return HttpError::UnknownSid.response("the session upgraded to WebSocket");
                } else {
                    let mut hold = None;
                    if st.phase == Phase::Upgrading && st.control.is_empty() {
                        match noop_at {
                            Some(t) if now >= t => st.control.push(Packet::Noop),
                            Some(t) => hold = Some(t),
                            None => {
                                let t = now + UPGRADE_HOLD;
                                noop_at = Some(t);
                                hold = Some(t);
                            }
                        }
                    }
                    // a session closing with last words sends them now and `1` next time
                    let words = matches!(st.phase, Phase::Closing(_)) && st.last.is_some();
                    let ended = !words && matches!(st.phase, Phase::Closing(_) | Phase::Closed);
                    if ended && st.phase != Phase::Closed {
                        st.phase = Phase::Closed;
                        engine.forget(&self.sid);
                    }
                    let beat = st.heartbeat.pong_due.unwrap_or(st.heartbeat.next_ping);
                    let wait_until = hold.map_or(beat, |h| h.min(beat));
                    let packets = std::mem::take(&mut st.control);
                    if words {
                        st.control.push(Packet::Close);
                    }
                    Some((packets, st.last.take(), wait_until, ended || words))
                }
            };
            let Some((mut packets, last, wait_until, ending)) = step else {
                self.close(engine, Close::new("heartbeat_timeout"), How::Error)
                    .await;
                continue;
            };
            if ending || !packets.is_empty() {
                let mut frames: Vec<Frame> = last.into_iter().collect();
                if !ending && let Some(o) = out.as_mut() {
                    let end = ready_frames(o, &mut frames, engine.options.max_payload);
                    self.end_after_answer(engine, end);
                }
                // a close goes after the data it ends
                packets.sort_by_key(|p| *p == Packet::Close);
                return payload_response(&frames, &packets);
            }
            let Some(o) = out.as_mut() else {
                return HttpError::UnknownSid.response("the session has ended");
            };
            tokio::select! {
                biased;
                _ = self.wake.notified() => continue,
                r = o.next() => match r {
                    Ok(first) => {
                        let mut frames = vec![first];
                        let end = ready_frames(o, &mut frames, engine.options.max_payload);
                        self.end_after_answer(engine, end);
                        return payload_response(&frames, &[]);
                    }
                    Err(c) => {
                        self.close(engine, c, How::Server).await;
                        continue;
                    }
                },
                _ = tokio::time::sleep_until(wait_until.max(now)) => continue,
            }
        }
    }
}

/// Adds what the outbound half has ready now, without waiting, up to one answer's worth.
/// Returns the end the outbound half reported, if it reported one (it does so once).
fn ready_frames<O: Outbound>(
    out: &mut O,
    frames: &mut Vec<Frame>,
    max_bytes: usize,
) -> Option<Close> {
    let mut bytes: usize = frames.iter().map(Frame::len).sum();
    while frames.len() < MAX_FRAMES_PER_POLL && bytes < max_bytes && out.more_ready() {
        match out.next().now_or_never() {
            Some(Ok(f)) => {
                bytes += f.len();
                frames.push(f);
            }
            Some(Err(c)) => return Some(c),
            None => break,
        }
    }
    None
}

/// One GET answer: frames, then Engine.IO packets, joined by the record separator.
fn payload_response(frames: &[Frame], packets: &[Packet]) -> Response {
    let mut body = String::new();
    let mut first = true;
    let mut sep = |body: &mut String| {
        if !first {
            body.push(SEPARATOR);
        }
        first = false;
    };
    for p in packets.iter().filter(|p| **p != Packet::Close) {
        sep(&mut body);
        p.encode_into(&mut body);
    }
    for f in frames {
        sep(&mut body);
        match f {
            Frame::Message(b) => body.push_str(&String::from_utf8_lossy(b)),
            Frame::Binary(b) => Packet::Binary(b.to_vec()).encode_into(&mut body),
        }
    }
    for p in packets.iter().filter(|p| **p == Packet::Close) {
        sep(&mut body);
        p.encode_into(&mut body);
    }
    text_response(body)
}

/// Tells the upper layer, once, that the session ended.
fn finish<I: Inbound>(inn: &mut Option<I>, reason: &str) {
    if let Some(mut i) = inn.take() {
        i.closed(reason);
    }
}

impl<U: Upper> Engine<U> {
    /// A GET without a session id: the handshake.
    pub(super) fn open_polling(self: Arc<Self>, req: Request<Body>) -> Response {
        let Some(sid) = new_sid() else {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "no random numbers from the operating system for a session id",
            )
                .into_response();
        };
        let (parts, _) = req.into_parts();
        let (inn, out) = self.upper.open(Opening {
            headers: parts.headers,
            uri: parts.uri,
            extensions: parts.extensions,
            transport: Transport::Polling,
            sid: sid.clone(),
        });
        let session = Arc::new(Session {
            sid: sid.clone(),
            state: Mutex::new(State {
                control: Vec::new(),
                last: None,
                heartbeat: Heartbeat {
                    next_ping: Instant::now() + self.options.ping_interval,
                    pong_due: None,
                },
                phase: Phase::Open,
                get_pending: false,
            }),
            wake: Notify::new(),
            out: tokio::sync::Mutex::new(Some(out)),
            inn: tokio::sync::Mutex::new(Some(inn)),
        });
        let open = format!("0{}", self.handshake(&sid, Transport::Polling));
        if let Ok(mut m) = self.sessions.lock() {
            m.insert(sid, session);
        }
        text_response(open)
    }

    pub(super) async fn poll(self: Arc<Self>, sid: &str) -> Response {
        match self.session(sid) {
            Some(s) => s.get(&self).await,
            None => HttpError::UnknownSid
                .response("no such session (it ended, or it upgraded to WebSocket)"),
        }
    }

    /// A POST: the client's packets, handed to the upper layer in order.
    pub(super) async fn post(self: Arc<Self>, sid: &str, req: Request<Body>) -> Response {
        let Some(s) = self.session(sid) else {
            return HttpError::UnknownSid
                .response("no such session (it ended, or it upgraded to WebSocket)");
        };
        let max = self.options.max_payload;
        let body = match axum::body::to_bytes(req.into_body(), max).await {
            Ok(b) => b,
            Err(e) => {
                let too_large = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
                s.close(&self, Close::new("bad_packet"), How::Error).await;
                return if too_large {
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("a long-polling request may carry at most {max} bytes (maxPayload); the session is closed"),
                    )
                        .into_response()
                } else {
                    HttpError::BadRequest
                        .response(&format!("the request body could not be read: {e}"))
                };
            }
        };
        let packets = match std::str::from_utf8(&body)
            .map_err(|_| "the payload is not UTF-8 text".to_string())
            .and_then(|t| eio::decode_payload(t, max).map_err(|e| e.to_string()))
        {
            Ok(p) => p,
            Err(e) => {
                s.close(&self, Close::new("bad_packet"), How::Error).await;
                return HttpError::BadRequest.response(&format!("{e}; the session is closed"));
            }
        };
        let mut inn = s.inn.lock().await;
        if inn.is_none() {
            return HttpError::UnknownSid.response("the session has ended");
        }
        {
            let st = s.lock();
            if st.phase == Phase::Open
                && Instant::now() >= st.heartbeat.dead_at(self.options.ping_timeout)
            {
                drop(st);
                if s.close_state(&self, &Close::new("heartbeat_timeout"), How::Error) {
                    finish(&mut inn, "heartbeat_timeout");
                }
                return HttpError::UnknownSid.response("the session ended: no pong in time");
            }
            if matches!(st.phase, Phase::Closed | Phase::Upgraded) {
                return HttpError::UnknownSid.response("the session has ended");
            }
        }
        for p in packets {
            let incoming = match p {
                Packet::Pong(_) => {
                    let mut st = s.lock();
                    if st.heartbeat.pong_due.take().is_some() {
                        st.heartbeat.next_ping = Instant::now() + self.options.ping_interval;
                    }
                    drop(st);
                    s.wake.notify_one();
                    continue;
                }
                Packet::Close => {
                    if s.close_state(&self, &Close::new("client_closed"), How::Client) {
                        finish(&mut inn, "client_closed");
                    }
                    return ok_response();
                }
                Packet::Message(t) => Incoming::Text(t),
                Packet::Binary(b) => Incoming::Binary(b),
                Packet::Open(_) | Packet::Ping(_) | Packet::Upgrade | Packet::Noop => continue,
            };
            let Some(i) = inn.as_mut() else { break };
            if let Err(c) = i.message(incoming).await {
                let reason = c.reason.to_string();
                if s.close_state(&self, &c, How::Server) {
                    finish(&mut inn, &reason);
                }
                return ok_response();
            }
        }
        ok_response()
    }
}
