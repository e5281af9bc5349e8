//! A Socket.IO + Engine.IO server shaped the way the official protocol test suites expect
//! (socket.io-protocol `test-suite/` and engine.io-protocol `test-suite/`), built on the same
//! socketioxide stack as `cmem`.
//!
//! `cargo run --example conformance` listens on 127.0.0.1:3000 with pingInterval 300 ms,
//! pingTimeout 200 ms, maxPayload 1000000, connectTimeout 1000 ms and CORS `*`:
//! - `/socket.io/`, namespaces `/` and `/custom`: on connect, emits `auth` with the handshake
//!   auth; echoes `message` as `message-back` and answers `message-with-ack` with an ack of the
//!   same arguments (any number of them, binary kept);
//! - `/engine.io/`: echoes every text and binary message.
//!
//! `tests/e2e/conformance.test.mjs` checks both endpoints packet by packet and with the official
//! clients; README.md says how to run the official suites against it.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use engineioxide::handler::EngineIoHandler;
use engineioxide::layer::EngineIoLayer;
use engineioxide::{DisconnectReason, Socket, Str};
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef};
use tower_http::cors::CorsLayer;

/// Every argument of an event, in order. It (de)serialises as a tuple, which socketioxide
/// treats as "all arguments" rather than "the first one"; `rmpv::Value` keeps binary
/// attachments binary.
struct Args(Vec<rmpv::Value>);

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Args;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("event arguments")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Args, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element()? {
                    v.push(x);
                }
                Ok(Args(v))
            }
        }
        d.deserialize_tuple(usize::MAX, V)
    }
}

impl Serialize for Args {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(self.0.len())?;
        for x in &self.0 {
            t.serialize_element(x)?;
        }
        t.end()
    }
}

async fn on_connect(socket: SocketRef, Data(auth): Data<serde_json::Value>) {
    // No handshake payload is reported as an empty object, as the suites expect.
    let auth = if auth.is_null() {
        serde_json::json!({})
    } else {
        auth
    };
    let _ = socket.emit("auth", &auth);
    socket.on("message", async |s: SocketRef, Data(args): Data<Args>| {
        let _ = s.emit("message-back", &args);
    });
    socket.on(
        "message-with-ack",
        async |Data(args): Data<Args>, ack: AckSender| {
            let _ = ack.send(&args);
        },
    );
}

/// Engine.IO echo.
#[derive(Debug, Clone)]
struct Echo;

impl EngineIoHandler for Echo {
    type Data = ();
    fn on_connect(self: Arc<Self>, _socket: Arc<Socket<()>>) {}
    fn on_disconnect(&self, _socket: Arc<Socket<()>>, _reason: DisconnectReason) {}
    fn on_message(self: &Arc<Self>, msg: Str, socket: Arc<Socket<()>>) {
        let _ = socket.emit(msg);
    }
    fn on_binary(self: &Arc<Self>, data: bytes::Bytes, socket: Arc<Socket<()>>) {
        let _ = socket.emit_binary(data);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let ping_interval = Duration::from_millis(300);
    let ping_timeout = Duration::from_millis(200);
    let (io_layer, io) = SocketIo::builder()
        .ping_interval(ping_interval)
        .ping_timeout(ping_timeout)
        .connect_timeout(Duration::from_millis(1000))
        .max_payload(1_000_000)
        .build_layer();
    io.ns("/", on_connect);
    io.ns("/custom", on_connect);
    let eio_config = engineioxide::config::EngineIoConfig::builder()
        .req_path("/engine.io")
        .ping_interval(ping_interval)
        .ping_timeout(ping_timeout)
        .max_payload(1_000_000)
        .build();
    let app = Router::new()
        .layer(io_layer)
        .layer(EngineIoLayer::from_config(Arc::new(Echo), eio_config))
        .layer(CorsLayer::permissive());
    let port = std::env::var("CONFORMANCE_PORT").unwrap_or_else(|_| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!(
        "conformance server listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}
