//! One connection over one transport (a "leg"): it connects, says when it is open, passes
//! on each event in the order the server sent it, and ends with the reason. The state machine
//! in `client.rs` decides what to try next; a leg never retries by itself.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{self, Message};

use cmem_wire::codes::Refusal;
use cmem_wire::sse::{SseItem, SseParser};

use crate::eio::{self, Packet};
use crate::{Cursor, Envelope, ErrorCode, LegError, Options, Transport};

/// What a leg tells the state machine.
#[derive(Debug)]
pub(crate) enum LegMsg {
    Opened,
    Event(Box<Envelope>),
    Ended(LegError),
}

/// What every leg of one client shares.
pub(crate) struct Ctx {
    pub opts: Options,
    pub http: reqwest::Client,
    pub client_id: String,
    /// The nodes of [`Options::url`], and the one in use.
    pub nodes: Vec<String>,
    pub node: std::sync::atomic::AtomicUsize,
}

impl Ctx {
    /// The node in use, without a trailing `/`.
    pub(crate) fn base(&self) -> &str {
        let i = self.node.load(std::sync::atomic::Ordering::Relaxed);
        self.nodes[i % self.nodes.len()].as_str()
    }

    fn scope_query(&self, q: &mut Vec<(&'static str, String)>) {
        if !self.opts.workspaces.is_empty() {
            q.push(("workspaces", self.opts.workspaces.join(",")));
        }
    }
}

/// Aborts the leg's task when the state machine lets go of it.
pub(crate) struct LegTask(tokio::task::JoinHandle<()>);

impl LegTask {
    pub fn spawn(fut: impl std::future::Future<Output = ()> + Send + 'static) -> LegTask {
        LegTask(tokio::spawn(fut))
    }
}

impl Drop for LegTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts a leg; its messages arrive on the returned channel, the last one `Ended`.
pub(crate) fn start(
    ctx: Arc<Ctx>,
    transport: Transport,
    cursor: Option<Cursor>,
) -> (LegTask, mpsc::Receiver<LegMsg>) {
    let (tx, rx) = mpsc::channel(256);
    let task = LegTask::spawn(async move {
        let end = match transport {
            Transport::Websocket => websocket(&ctx, cursor, &tx).await,
            Transport::Polling => polling(&ctx, cursor, &tx).await,
            Transport::Sse => sse(&ctx, cursor, &tx).await,
            Transport::Poll => poll(&ctx, cursor, &tx).await,
        };
        let _ = tx.send(LegMsg::Ended(end)).await;
    });
    (task, rx)
}

fn gone() -> LegError {
    LegError::closed("the client stopped reading")
}

/// An HTTP answer other than 2xx: classed by the server's code when its body has one (`{code,
/// message}`), else by the status (a proxy's page says nothing of the server's).
pub(crate) fn http_error(status: u16, body: &serde_json::Value) -> LegError {
    match Refusal::read(body) {
        Some(r) => {
            let message: String = r.message.chars().take(200).collect();
            LegError::from_server(
                &r,
                Some(status),
                ErrorCode::Http,
                format!("HTTP {status}: {message}"),
            )
        }
        None => {
            let code = match status {
                401 => ErrorCode::Unauthorized,
                403 => ErrorCode::Forbidden,
                _ => ErrorCode::Http,
            };
            LegError::new(code, format!("HTTP {status}"))
        }
    }
}

async fn error_of(res: reqwest::Response) -> LegError {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    let body = serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|_| {
        // not JSON (a proxy's page): its first words, as the message
        serde_json::json!({ "message": text.chars().take(200).collect::<String>() })
    });
    http_error(status, &body)
}

/// Sends `req`; a network failure or a status other than 2xx is the leg's end.
async fn fetch(req: reqwest::RequestBuilder) -> Result<reqwest::Response, LegError> {
    let res = req.send().await.map_err(|e| network(&e))?;
    if !res.status().is_success() {
        return Err(error_of(res).await);
    }
    Ok(res)
}

fn network(e: &reqwest::Error) -> LegError {
    if e.is_timeout() {
        LegError::new(ErrorCode::Stalled, format!("no answer in time: {e}"))
    } else {
        LegError::transport(format!("{e}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Socket.IO over WebSocket

async fn websocket(ctx: &Ctx, cursor: Option<Cursor>, out: &mpsc::Sender<LegMsg>) -> LegError {
    let url = eio::websocket_url(ctx.base());
    let (mut ws, _) = match tokio_tungstenite::connect_async(url).await {
        Ok(x) => x,
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let body = serde_json::from_str::<serde_json::Value>(&body).unwrap_or_else(
                |_| serde_json::json!({ "message": format!("WebSocket upgrade refused {body}") }),
            );
            return http_error(resp.status().as_u16(), &body);
        }
        Err(e) => return LegError::transport(format!("WebSocket: {e}")),
    };
    let auth = sio_auth(ctx, cursor.as_ref());
    let open = match eio::handshake(&mut ws, &auth).await {
        Ok(o) => o,
        Err(e) => return e,
    };
    if out.send(LegMsg::Opened).await.is_err() {
        return gone();
    }
    let live = open.liveness();
    let mut closing: Option<Refusal> = None;
    let closed =
        |closing: &Option<Refusal>| eio::closed_after(closing.as_ref(), "the WebSocket closed");
    loop {
        let msg = match timeout(live, ws.next()).await {
            Err(_) => {
                return LegError::new(
                    ErrorCode::Stalled,
                    format!(
                        "nothing from the server for {} ms: connection presumed dead",
                        live.as_millis()
                    ),
                );
            }
            Ok(None) => return closed(&closing),
            Ok(Some(Err(e))) => return LegError::transport(format!("WebSocket: {e}")),
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            Message::Text(t) => match eio::parse(&t) {
                Packet::Ping => {
                    if let Err(e) = ws.send(Message::text("3")).await {
                        return LegError::transport(format!("WebSocket: {e}"));
                    }
                }
                Packet::Event(e) => {
                    if out.send(LegMsg::Event(e)).await.is_err() {
                        return gone();
                    }
                }
                Packet::Closing(r) => closing = Some(r),
                Packet::Closed => return closed(&closing),
                Packet::Refused(e) => return e,
                Packet::Joined | Packet::Other => {}
            },
            Message::Close(_) => return closed(&closing),
            _ => {}
        }
    }
}

/// The Socket.IO `auth` a leg joins with: the token, the workspaces and the cursor.
fn sio_auth(ctx: &Ctx, cursor: Option<&Cursor>) -> String {
    let mut auth = serde_json::Map::new();
    if let Some(t) = &ctx.opts.token {
        auth.insert("token".into(), t.clone().into());
    }
    if !ctx.opts.workspaces.is_empty() {
        auth.insert("workspaces".into(), ctx.opts.workspaces.clone().into());
    }
    if let Some(c) = cursor {
        auth.insert("last_event_id".into(), c.to_string().into());
    }
    serde_json::Value::Object(auth).to_string()
}

// ---------------------------------------------------------------------------------------------
// Socket.IO over Engine.IO long-polling

/// Sends packets to a long-polling session (a pong, the namespace join).
async fn post(ctx: &Ctx, url: &str, packets: &[&str]) -> Result<(), LegError> {
    let body = packets.join(&cmem_wire::eio::SEPARATOR.to_string());
    let req = ctx
        .http
        .post(url)
        .header("content-type", "text/plain;charset=UTF-8")
        .body(body)
        .timeout(ctx.opts.connect_timeout);
    fetch(req).await.map(|_| ())
}

async fn polling(ctx: &Ctx, cursor: Option<Cursor>, out: &mpsc::Sender<LegMsg>) -> LegError {
    let base = eio::polling_url(ctx.base());
    let res = match fetch(ctx.http.get(&base).timeout(ctx.opts.connect_timeout)).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    let body = match res.text().await {
        Ok(b) => b,
        Err(e) => return network(&e),
    };
    // the handshake answer is the open packet (maybe followed by others)
    let first = body.split(cmem_wire::eio::SEPARATOR).next().unwrap_or("");
    let open = match first
        .strip_prefix('0')
        .map(serde_json::from_str::<eio::Open>)
    {
        Some(Ok(o)) => o,
        _ => {
            return LegError::new(
                ErrorCode::Protocol,
                format!(
                    "expected an Engine.IO open packet, got {:?}",
                    first.chars().take(80).collect::<String>()
                ),
            );
        }
    };
    let url = format!("{base}&sid={}", open.sid);
    let join = format!("40{}", sio_auth(ctx, cursor.as_ref()));
    if let Err(e) = post(ctx, &url, &[&join]).await {
        return e;
    }
    // the server answers a poll at the latest when it pings
    let live = open.liveness();
    let mut closing: Option<Refusal> = None;
    loop {
        let res = match fetch(ctx.http.get(&url).timeout(live)).await {
            Ok(r) => r,
            Err(e) if e.code == ErrorCode::Stalled => {
                return LegError::new(
                    ErrorCode::Stalled,
                    format!(
                        "nothing from the server for {} ms: connection presumed dead",
                        live.as_millis()
                    ),
                );
            }
            Err(e) => return e,
        };
        let body = match res.text().await {
            Ok(b) => b,
            Err(e) => return network(&e),
        };
        for text in body.split(cmem_wire::eio::SEPARATOR) {
            match eio::parse(text) {
                Packet::Ping => {
                    if let Err(e) = post(ctx, &url, &["3"]).await {
                        return e;
                    }
                }
                Packet::Joined => {
                    if out.send(LegMsg::Opened).await.is_err() {
                        return gone();
                    }
                }
                Packet::Refused(e) => return e,
                Packet::Event(e) => {
                    if out.send(LegMsg::Event(e)).await.is_err() {
                        return gone();
                    }
                }
                Packet::Closing(r) => closing = Some(r),
                Packet::Closed => {
                    return eio::closed_after(closing.as_ref(), "the server closed the session");
                }
                Packet::Other => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events

/// The heartbeat interval in `connected heartbeat_ms=<n>`, if the comment is that.
fn announced_heartbeat(comment: &str) -> Option<Duration> {
    let n = comment.split("heartbeat_ms=").nth(1)?;
    let n: u64 = n
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some(Duration::from_millis(n))
}

async fn sse(ctx: &Ctx, cursor: Option<Cursor>, out: &mpsc::Sender<LegMsg>) -> LegError {
    let mut q = Vec::new();
    ctx.scope_query(&mut q);
    if let Some(c) = &cursor {
        q.push(("last_event_id", c.to_string()));
    }
    let req = ctx
        .http
        .get(format!("{}/api/events/stream", ctx.base()))
        .query(&q)
        .header("accept", "text/event-stream");
    let res = match fetch(req).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    let ct = crate::content_type(&res);
    if !cmem_wire::sse::is_event_stream(&ct) {
        return LegError::new(
            ErrorCode::Protocol,
            format!("not an event stream (content-type {ct:?})"),
        );
    }
    let mut body = res.bytes_stream();
    let mut parser = SseParser::default();
    let mut items = Vec::new();
    let mut opened = false;
    // until the server announces its heartbeat: three times the default one
    let mut live = Duration::from_secs(45);
    loop {
        let chunk = match timeout(live, body.next()).await {
            Err(_) => {
                return LegError::new(
                    ErrorCode::Stalled,
                    format!(
                        "nothing on the event stream for {} ms: presumed dead (or held by a proxy)",
                        live.as_millis()
                    ),
                );
            }
            Ok(None) => return LegError::closed("the event stream ended"),
            Ok(Some(Err(e))) => return network(&e),
            Ok(Some(Ok(c))) => c,
        };
        if let Err(e) = parser.feed(&chunk, &mut items) {
            return LegError::new(ErrorCode::Protocol, e.to_string());
        }
        for item in items.drain(..) {
            // the stream is open once anything of it arrives (the server's first comment)
            if !opened {
                opened = true;
                if out.send(LegMsg::Opened).await.is_err() {
                    return gone();
                }
            }
            match item {
                SseItem::Comment(c) => {
                    if let Some(hb) = announced_heartbeat(&c) {
                        live = hb + (hb / 2).max(Duration::from_secs(5));
                    }
                }
                SseItem::Event { event, data, .. } if event == "close" => {
                    let last = serde_json::from_str::<serde_json::Value>(&data)
                        .ok()
                        .and_then(|v| Refusal::read(&v));
                    return eio::closed_after(last.as_ref(), "the server closed the stream");
                }
                SseItem::Retry(_) => {}
                SseItem::Event { data, .. } => {
                    let Ok(env) = serde_json::from_str::<Envelope>(&data) else {
                        continue;
                    };
                    if out.send(LegMsg::Event(Box::new(env))).await.is_err() {
                        return gone();
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Plain polling

#[derive(serde::Deserialize)]
struct PollAnswer {
    events: Vec<Envelope>,
    next_cursor: Option<String>,
}

async fn poll(ctx: &Ctx, cursor: Option<Cursor>, out: &mpsc::Sender<LegMsg>) -> LegError {
    let mut after = cursor.map(|c| c.to_string());
    let mut wait = Duration::ZERO;
    let mut opened = false;
    loop {
        let mut q = vec![
            ("client_id", ctx.client_id.clone()),
            ("limit", "1000".to_string()),
            ("wait", wait.as_secs().to_string()),
        ];
        if let Some(a) = &after {
            q.push(("after", a.clone()));
        }
        ctx.scope_query(&mut q);
        let allowance = if opened {
            Duration::from_secs(10)
        } else {
            ctx.opts.connect_timeout
        };
        let req = ctx
            .http
            .get(format!("{}/api/events/poll", ctx.base()))
            .query(&q)
            .timeout(wait + allowance);
        let res = match fetch(req).await {
            Ok(r) => r,
            Err(e) => return e,
        };
        let answer: PollAnswer = match res.json().await {
            Ok(a) => a,
            Err(e) if e.is_timeout() => return network(&e),
            Err(e) => {
                return LegError::new(ErrorCode::Protocol, format!("not a poll answer: {e}"));
            }
        };
        if !opened {
            opened = true;
            if out.send(LegMsg::Opened).await.is_err() {
                return gone();
            }
        }
        for env in answer.events {
            if out.send(LegMsg::Event(Box::new(env))).await.is_err() {
                return gone();
            }
        }
        if let Some(n) = answer.next_cursor {
            after = Some(n);
        }
        wait = ctx.opts.poll_wait;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announced_heartbeat_is_read() {
        assert_eq!(
            announced_heartbeat("connected heartbeat_ms=15000"),
            Some(Duration::from_secs(15))
        );
        assert_eq!(announced_heartbeat("heartbeat"), None);
    }

    #[test]
    fn an_http_refusal_is_classed_by_its_code() {
        let body = serde_json::json!({"code": "token_revoked", "message": "revoked"});
        let e = http_error(401, &body);
        assert_eq!(
            (e.code, e.reason.as_deref()),
            (ErrorCode::Unauthorized, Some("token_revoked"))
        );
        let e = http_error(403, &serde_json::json!({"message": "<html>proxy</html>"}));
        assert_eq!((e.code, e.reason.as_deref()), (ErrorCode::Forbidden, None));
        assert!(!e.gives_up(), "a proxy's 403 is worth falling back from");
        // Engine.IO's own errors carry a number, not a cmem code: a session another node does
        // not know is retried (a new session), never given up on
        let e = http_error(
            400,
            &serde_json::json!({"code": 1, "message": "Session ID unknown"}),
        );
        assert_eq!(e.reason, None);
        assert!(!e.gives_up());
    }
}
