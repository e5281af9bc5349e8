//! The client side of Engine.IO 4 / Socket.IO 5 over a WebSocket, as far as cmem uses it:
//! the open packet, heartbeats, joining the main namespace with `auth`, and events.
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

/// A packet the server sent once the namespace is joined.
#[derive(Debug)]
pub enum Packet {
    /// A journal event (`42["type", envelope, "epoch:id"]`).
    Event(Box<Envelope>),
    /// `cmem_close {reason}`: the server is about to close, and why.
    Closing(String),
    /// A ping, answered already.
    Ping,
    /// The namespace or the session was closed.
    Closed,
    /// Anything else (acks, other events).
    Other,
}

/// Reads a text packet of a joined session.
pub fn parse(text: &str) -> Packet {
    match text.as_bytes().first() {
        Some(b'2') => Packet::Ping,
        Some(b'1') => Packet::Closed,
        Some(b'4') => match text.as_bytes().get(1) {
            Some(b'1') => Packet::Closed,
            Some(b'2') => parse_event(&text[2..]),
            _ => Packet::Other,
        },
        _ => Packet::Other,
    }
}

fn parse_event(body: &str) -> Packet {
    // an event may carry an ack id before its array; cmem's events do not
    let body = body.trim_start_matches(|c: char| c.is_ascii_digit());
    let Ok(serde_json::Value::Array(mut args)) = serde_json::from_str::<serde_json::Value>(body)
    else {
        return Packet::Other;
    };
    if args.len() < 2 {
        return Packet::Other;
    }
    let env = args.swap_remove(1);
    match args.first().and_then(|v| v.as_str()) {
        Some("cmem_close") => Packet::Closing(
            env.get("reason")
                .and_then(|r| r.as_str())
                .unwrap_or("closed")
                .to_string(),
        ),
        Some(_) => match serde_json::from_value::<Envelope>(env) {
            Ok(e) => Packet::Event(Box::new(e)),
            Err(_) => Packet::Other,
        },
        None => Packet::Other,
    }
}

fn refused(body: &str) -> LegError {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.to_string());
    let lower = message.to_ascii_lowercase();
    let code = if lower.contains("token") || lower.contains("authenticat") {
        ErrorCode::Unauthorized
    } else if lower.contains("member") || lower.contains("forbidden") {
        ErrorCode::Forbidden
    } else {
        ErrorCode::Refused
    };
    LegError::new(
        code,
        format!("the server refused the connection: {message}"),
    )
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
            Some(Ok(Message::Text(t))) if t.starts_with("40") => return Ok(open),
            Some(Ok(Message::Text(t))) if t.starts_with("44") => return Err(refused(&t[2..])),
            Some(Ok(Message::Text(t))) if t.as_str() == "2" => ws
                .send(Message::text("3"))
                .await
                .map_err(|e| LegError::transport(format!("WebSocket: {e}")))?,
            Some(Ok(Message::Text(t))) if t.as_str() == "1" => {
                return Err(LegError::closed("the server closed the session"));
            }
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
            parse(r#"42["cmem_close",{"reason":"shutdown"}]"#),
            Packet::Closing(r) if r == "shutdown"
        ));
        assert!(matches!(parse("2"), Packet::Ping));
        assert!(matches!(parse("41"), Packet::Closed));
        assert!(matches!(parse("1"), Packet::Closed));
        assert!(matches!(parse("42[oops"), Packet::Other));
        assert!(matches!(parse(r#"431[{"ok":true}]"#), Packet::Other));
    }

    #[test]
    fn refusals_say_why() {
        let e = refused(r#"{"message":"unknown or revoked token"}"#);
        assert_eq!(e.code, ErrorCode::Unauthorized);
        let e = refused(r#"{"message":"not a member of ops"}"#);
        assert_eq!(e.code, ErrorCode::Forbidden);
    }
}
