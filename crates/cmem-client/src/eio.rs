//! The client side of Engine.IO 4 / Socket.IO 5, as far as cmem uses it: the open packet,
//! heartbeats, joining the main namespace with `auth`, and events — over a WebSocket here, and
//! the same packets over long-polling in `legs.rs`. The packets themselves are read by
//! `cmem-wire`, the parser the server uses.
//!
//! Written here rather than taken from a Socket.IO client crate because both users need what
//! such crates hide: the load generator (`cmem-bench`) drives tens of thousands of sockets on
//! streams it made itself (source addresses, small buffers) and reads raw frames; the client's
//! state machine needs every packet as a sign of life and no reconnection of its own.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use cmem_wire::codes::Refusal;
use cmem_wire::{eio, sio};

use crate::{Envelope, ErrorCode, LegError};

/// The Engine.IO open packet's fields the client uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Open {
    pub sid: String,
    #[serde(default = "default_ping_interval")]
    pub ping_interval: u64,
    #[serde(default = "default_ping_timeout")]
    pub ping_timeout: u64,
}

fn default_ping_interval() -> u64 {
    25_000
}

fn default_ping_timeout() -> u64 {
    20_000
}

impl Open {
    /// Longest silence before the connection is presumed dead: the server pings every
    /// `pingInterval` and allows `pingTimeout` for the answer.
    pub fn liveness(&self) -> Duration {
        Duration::from_millis(self.ping_interval.saturating_add(self.ping_timeout))
    }
}

/// `ws(s)://host/socket.io/?EIO=4&transport=websocket` for `http(s)://host`.
pub fn websocket_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let ws = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{ws}/socket.io/?EIO=4&transport=websocket")
}

/// `http(s)://host/socket.io/?EIO=4&transport=polling` for `http(s)://host`.
pub fn polling_url(base: &str) -> String {
    format!(
        "{}/socket.io/?EIO=4&transport=polling",
        base.trim_end_matches('/')
    )
}

/// What a client reads: no binary attachments (cmem sends none to clients).
const LIMITS: sio::Limits = sio::Limits {
    max_attachments: 0,
    max_attachment_bytes: 0,
};

/// A packet the server sent once the namespace is joined.
#[derive(Debug)]
pub enum Packet {
    /// A journal event (`42["type", envelope, "epoch:id"]`).
    Event(Box<Envelope>),
    /// `cmem_close`: the server is about to close, and why (its code and message).
    Closing(Refusal),
    /// A ping, to be answered with a pong.
    Ping,
    /// The namespace or the session was closed.
    Closed,
    /// The namespace's answer to the join: accepted.
    Joined,
    /// The namespace's answer to the join: refused, and why.
    Refused(LegError),
    /// Anything else (acks, other namespaces, noop).
    Other,
}

/// Reads one text packet (a WebSocket frame, or one packet of a polling payload).
pub fn parse(text: &str) -> Packet {
    match eio::peek(text) {
        Ok((eio::Type::Ping, _)) => Packet::Ping,
        Ok((eio::Type::Close, _)) => Packet::Closed,
        Ok((eio::Type::Message, m)) => match sio::Header::read(m, &LIMITS) {
            Ok(h) if h.nsp != "/" => Packet::Other,
            Ok(h) => match h.kind {
                sio::Kind::Connect => Packet::Joined,
                sio::Kind::ConnectError => Packet::Refused(refused(h.data)),
                sio::Kind::Disconnect => Packet::Closed,
                sio::Kind::Event => parse_event(h.data),
                _ => Packet::Other,
            },
            Err(_) => Packet::Other,
        },
        _ => Packet::Other,
    }
}

fn parse_event(body: &str) -> Packet {
    let Ok(serde_json::Value::Array(mut args)) = serde_json::from_str::<serde_json::Value>(body)
    else {
        return Packet::Other;
    };
    if args.len() < 2 {
        return Packet::Other;
    }
    let env = args.swap_remove(1);
    match args.first().and_then(|v| v.as_str()) {
        Some("cmem_close") => Packet::Closing(Refusal::read(&env).unwrap_or(Refusal {
            code: String::new(),
            message: "closed".into(),
        })),
        Some(_) => match serde_json::from_value::<Envelope>(env) {
            Ok(e) => Packet::Event(Box::new(e)),
            Err(_) => Packet::Other,
        },
        None => Packet::Other,
    }
}

/// A CONNECT_ERROR (`{message, data: {code}}`): classed by its code, never by its words.
fn refused(body: &str) -> LegError {
    let refusal = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| Refusal::read(&v))
        .unwrap_or_else(|| Refusal {
            code: String::new(),
            message: body.chars().take(200).collect(),
        });
    LegError::from_server(
        &refusal,
        None,
        ErrorCode::Refused,
        format!("the server refused the connection: {}", refusal.message),
    )
}

/// The error for a connection the server ended after `closing` (its `cmem_close`), if any.
pub(crate) fn closed_after(closing: Option<&Refusal>, what: &str) -> LegError {
    match closing {
        Some(r) => LegError::from_server(
            r,
            None,
            ErrorCode::Closed,
            format!(
                "the server closed the connection: {} ({})",
                r.code, r.message
            ),
        ),
        None => LegError::closed(what.to_string()),
    }
}

/// Reads the open packet on a fresh WebSocket session and joins the main namespace with
/// `auth` (a JSON object, or empty for none). Pings before the namespace answer are answered.
pub async fn handshake<S>(ws: &mut WebSocketStream<S>, auth: &str) -> Result<Open, LegError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let open = match ws.next().await {
        Some(Ok(Message::Text(t))) if t.starts_with('0') => {
            serde_json::from_str::<Open>(&t[1..])
                .map_err(|e| LegError::new(ErrorCode::Protocol, format!("bad open packet: {e}")))?
        }
        Some(Ok(m)) => {
            return Err(LegError::new(
                ErrorCode::Protocol,
                format!("expected an Engine.IO open packet, got {m}"),
            ));
        }
        Some(Err(e)) => return Err(LegError::transport(format!("WebSocket: {e}"))),
        None => {
            return Err(LegError::closed(
                "the WebSocket closed before the open packet",
            ));
        }
    };
    ws.send(Message::text(format!("40{auth}")))
        .await
        .map_err(|e| LegError::transport(format!("WebSocket: {e}")))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => match parse(&t) {
                Packet::Joined => return Ok(open),
                Packet::Refused(e) => return Err(e),
                Packet::Ping => ws
                    .send(Message::text("3"))
                    .await
                    .map_err(|e| LegError::transport(format!("WebSocket: {e}")))?,
                Packet::Closed => {
                    return Err(LegError::closed("the server closed the session"));
                }
                _ => {}
            },
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(LegError::transport(format!("WebSocket: {e}"))),
            None => return Err(LegError::closed("the WebSocket closed before joining")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            websocket_url("http://127.0.0.1:8000/"),
            "ws://127.0.0.1:8000/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            websocket_url("https://m.example"),
            "wss://m.example/socket.io/?EIO=4&transport=websocket"
        );
    }

    #[test]
    fn packets() {
        let ev = r#"42["note",{"id":7,"epoch":"e1","type":"note","scope":"global","ts":"t","data":{"a":1}},"e1:7"]"#;
        match parse(ev) {
            Packet::Event(e) => {
                assert_eq!((e.id, e.epoch.as_str(), e.kind.as_str()), (7, "e1", "note"));
                assert_eq!(e.data["a"], 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(r#"42["cmem_close",{"code":"server_shutdown","reason":"server_shutdown","message":"bye"}]"#),
            Packet::Closing(r) if r.code == "server_shutdown"
        ));
        assert!(matches!(parse("2"), Packet::Ping));
        assert!(matches!(parse("41"), Packet::Closed));
        assert!(matches!(parse("1"), Packet::Closed));
        assert!(matches!(parse(r#"40{"sid":"x"}"#), Packet::Joined));
        assert!(matches!(parse("42[oops"), Packet::Other));
        assert!(matches!(parse(r#"431[{"ok":true}]"#), Packet::Other));
        assert!(matches!(parse(r#"42/admin,["note",{}]"#), Packet::Other));
    }

    #[test]
    fn refusals_are_classed_by_code_not_by_words() {
        let e = refused(r#"{"message":"whatever it says","data":{"code":"token_revoked"}}"#);
        assert_eq!(
            (e.code, e.reason.as_deref()),
            (ErrorCode::Unauthorized, Some("token_revoked"))
        );
        let e = refused(r#"{"message":"a token is mentioned here","data":{"code":"forbidden"}}"#);
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert!(e.gives_up());
        // no code: nothing is read into the words
        let e = refused(r#"{"message":"unknown or revoked token"}"#);
        assert_eq!((e.code, e.reason), (ErrorCode::Refused, None));
    }
}
