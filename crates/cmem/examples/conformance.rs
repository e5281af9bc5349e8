//! A Socket.IO + Engine.IO server shaped the way the official protocol test suites expect
//! (socket.io-protocol `test-suite/` and engine.io-protocol `test-suite/`), built on the same
//! engine as `cmem` (`cmem::engine`).
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

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::any;
use cmem::engine::socketio::{Connected, Emit, Namespaces, NoStream, Refused, Reply, SocketIo};
use cmem::engine::{Close, Engine, Frame, Inbound, Incoming, Opening, Options, Outbound, Upper};
use cmem_wire::sio::Limits;
use tokio::sync::Notify;
use tower_http::cors::CorsLayer;

/// Namespaces `/` and `/custom`: report the auth, echo, ack.
struct Suite;

impl Namespaces for Suite {
    type Socket = ();
    type Stream = NoStream;

    async fn connect(
        &self,
        _opening: &Opening,
        nsp: &str,
        auth: Option<serde_json::Value>,
    ) -> Result<Connected<(), NoStream>, Refused> {
        if nsp != "/" && nsp != "/custom" {
            return Err("Invalid namespace".into());
        }
        // no handshake payload is reported as an empty object, as the suites expect
        let auth = auth.unwrap_or_else(|| serde_json::json!({}));
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| Refused::from(e.to_string().as_str()))?;
        Ok(Connected {
            socket: (),
            stream: None,
            sid: id.iter().map(|b| format!("{b:02x}")).collect(),
            pid: None,
            then: vec![Emit {
                event: "auth".into(),
                args: vec![
                    rmpv::ext::to_value(&auth)
                        .map_err(|e| Refused::from(e.to_string().as_str()))?,
                ],
            }],
        })
    }

    async fn event(&self, _socket: &(), event: &str, args: Vec<rmpv::Value>) -> Reply {
        match event {
            "message" => Reply::Emit(vec![Emit {
                event: "message-back".into(),
                args,
            }]),
            "message-with-ack" => Reply::Ack(args),
            _ => Reply::Nothing,
        }
    }

    fn upgraded(&self, _socket: &()) {}

    fn disconnected(&self, _socket: (), _reason: &str) {}
}

/// Engine.IO echo: whatever arrives goes back.
struct Echo;

struct EchoQueue {
    frames: Mutex<VecDeque<Frame>>,
    notify: Notify,
}

struct EchoIn(Arc<EchoQueue>);
struct EchoOut(Arc<EchoQueue>);

impl Upper for Echo {
    type In = EchoIn;
    type Out = EchoOut;
    fn open(&self, _opening: Opening) -> (EchoIn, EchoOut) {
        let q = Arc::new(EchoQueue {
            frames: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
        });
        (EchoIn(q.clone()), EchoOut(q))
    }
}

impl Inbound for EchoIn {
    async fn message(&mut self, m: Incoming) -> Result<(), Close> {
        let f = match m {
            Incoming::Text(t) => Frame::message(&t),
            Incoming::Binary(b) => Frame::Binary(b.into()),
        };
        if let Ok(mut q) = self.0.frames.lock() {
            q.push_back(f);
        }
        self.0.notify.notify_one();
        Ok(())
    }
    fn upgraded(&mut self) {}
    fn closed(&mut self, _reason: &str) {}
}

impl Outbound for EchoOut {
    async fn next(&mut self) -> Result<Frame, Close> {
        loop {
            if let Some(f) = self.0.frames.lock().ok().and_then(|mut q| q.pop_front()) {
                return Ok(f);
            }
            self.0.notify.notified().await;
        }
    }
}

async fn socketio(State(e): State<Arc<Engine<SocketIo<Suite>>>>, req: Request) -> Response {
    e.handle(req).await
}

async fn engineio(State(e): State<Arc<Engine<Echo>>>, req: Request) -> Response {
    e.handle(req).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let options = Options {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        ..Options::default()
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let sio = Engine::new(
        SocketIo::new(
            Suite,
            Limits {
                max_attachments: 10,
                max_attachment_bytes: 1_000_000,
            },
            Duration::from_millis(1000),
        ),
        options.clone(),
        shutdown.clone(),
    );
    let eio = Engine::new(Echo, options, shutdown);
    tokio::spawn(sio.clone().sweep());
    tokio::spawn(eio.clone().sweep());
    let app = Router::new()
        .route("/socket.io/", any(socketio))
        .with_state(sio)
        .merge(
            Router::new()
                .route("/engine.io/", any(engineio))
                .with_state(eio),
        )
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
