//! The floor: the least a Socket.IO broadcast server can do on this machine, as a peer of its own.
//!
//! A plain tokio + tokio-tungstenite server (hyper only for the trigger) that speaks just enough Engine.IO 4 /
//! Socket.IO 5 for the bench's clients (the open packet, joining `/`, pongs) and broadcasts what
//! `POST /trigger` receives to every socket through one `tokio::sync::broadcast` channel. It keeps
//! nothing: no journal, no recovery, no authentication, no limits beyond the bench's loopback.
//! Measured beside cmem in the same `compare` run, it says how much of a figure is the machine,
//! the kernel and the load generator rather than the server — what issue-level goals such as
//! "paced p99 ≤ 8 ms" have to be weighed against.
//!
//! Not a server to use: it exists only for measurements.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::broadcast;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// The Engine.IO open packet: pings are announced but never sent (bench runs are short).
const OPEN: &str = r#"0{"sid":"floor","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;

/// Serves until killed: Socket.IO over WebSocket on `/socket.io/`, `POST /trigger`.
pub async fn serve(port: u16) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    let (tx, _) = broadcast::channel::<Utf8Bytes>(4096);
    println!("floor listening on http://{addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let tx = tx.clone();
        tokio::spawn(async move {
            if is_websocket(&stream).await {
                // tokio-tungstenite on the bare socket, no HTTP server in between
                let config = WebSocketConfig::default().read_buffer_size(1024);
                if let Ok(ws) =
                    tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
                {
                    session(ws, tx.subscribe()).await;
                }
                return;
            }
            let service = hyper::service::service_fn(move |req| handle(req, tx.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Whether the connection opens with a WebSocket request: waits (without consuming) until
/// the request line is in; on loopback it comes in the first segment.
async fn is_websocket(stream: &tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 256];
    for _ in 0..100 {
        if stream.readable().await.is_err() {
            return false;
        }
        let Ok(n) = stream.peek(&mut buf).await else {
            return false;
        };
        if n == 0 {
            return false;
        }
        if let Some(end) = buf[..n].iter().position(|b| *b == b'\n') {
            return memchr::memmem::find(&buf[..end], b"transport=websocket").is_some();
        }
        if n == buf.len() {
            return false;
        }
        // part of a line: the rest is on its way
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    false
}

async fn handle(
    req: Request<Incoming>,
    tx: broadcast::Sender<Utf8Bytes>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        Ok(r)
    };
    if req.method() == hyper::Method::POST && req.uri().path() == "/trigger" {
        let Ok(body) = req.into_body().collect().await else {
            return reply(StatusCode::BAD_REQUEST, "unreadable body");
        };
        #[derive(serde::Deserialize)]
        struct Trigger<'a> {
            #[serde(borrow)]
            events: Vec<&'a serde_json::value::RawValue>,
        }
        let bytes = body.to_bytes();
        let Ok(t) = serde_json::from_slice::<Trigger>(&bytes) else {
            return reply(StatusCode::BAD_REQUEST, "bad json");
        };
        for p in t.events {
            // no receivers is not an error here
            let _ = tx.send(Utf8Bytes::from(format!("42[\"bench\",{}]", p.get())));
        }
        return reply(StatusCode::OK, r#"{"ok":true}"#);
    }
    if !req.uri().path().starts_with("/socket.io/") {
        return reply(StatusCode::NOT_FOUND, "not found");
    }
    // the long-polling probe `compare` uses to see that a peer is up
    reply(StatusCode::OK, OPEN)
}

/// One client: the open packet, the join, then every broadcast frame until the client goes.
async fn session<S>(mut ws: WebSocketStream<S>, mut rx: broadcast::Receiver<Utf8Bytes>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if ws.send(Message::text(OPEN)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) if t.starts_with("40") => {
                    if ws.send(Message::text(r#"40{"sid":"floor"}"#)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            e = rx.recv() => match e {
                Ok(frame) => {
                    if ws.send(Message::Text(frame)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
