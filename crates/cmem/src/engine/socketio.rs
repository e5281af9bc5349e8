//! Socket.IO 5 on top of the engine: namespaces, CONNECT and CONNECT_ERROR, events and acks,
//! binary attachments, DISCONNECT.
//!
//! The server decides what happens through a [`Namespaces`] implementation. Its `connect`
//! runs *before* the CONNECT answer is sent, so a client can emit the moment it is told it
//! is connected and find everything in place. Packets are checked as socket.io-parser checks
//! them; attachments are bounded (count and bytes) from the first packet, before any CONNECT.
//! A packet the parser refuses closes the session, as the reference server does.
//!
//! What goes to the client comes from two places: replies (CONNECT answers, acks, emits a
//! handler asks for), queued here; and the main namespace's event stream, pulled when the
//! socket can take more. Only the main namespace (`/`) has a stream: this server publishes
//! everything there.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::task::AtomicWaker;
use serde_json::{Value, json};

use super::{Close, Frame, Inbound, Incoming, Opening, Outbound, Upper};
use cmem_wire::sio::{self, Assembly, Kind, Limits, Packet, Partial};

/// An event to send: its name and arguments (binary values become attachments).
#[derive(Debug, Clone)]
pub struct Emit {
    pub event: String,
    pub args: Vec<rmpv::Value>,
}

/// What a handler answers to an event.
#[derive(Debug)]
pub enum Reply {
    Nothing,
    /// The ack's arguments (sent only if the client asked for an ack).
    Ack(Vec<rmpv::Value>),
    /// Events to send back.
    Emit(Vec<Emit>),
}

/// A namespace the client joined.
pub struct Connected<S, T> {
    pub socket: S,
    /// The events to deliver, for the main namespace.
    pub stream: Option<T>,
    /// The Socket.IO socket id the CONNECT answer carries.
    pub sid: String,
    /// The private session id for connection state recovery, if offered.
    pub pid: Option<String>,
    /// Events to send right after the CONNECT answer.
    pub then: Vec<Emit>,
}

/// The events a namespace delivers, in order.
pub trait EventStream: Send + 'static {
    /// Must be cancel-safe (see [`Outbound::next`]). An error ends the session.
    fn next(&mut self) -> impl Future<Output = Result<Frame, Close>> + Send;
    /// See [`Outbound::more_ready`].
    fn more_ready(&self) -> bool {
        true
    }
}

/// A stream with nothing in it, for namespaces that only answer.
pub enum NoStream {}

impl EventStream for NoStream {
    async fn next(&mut self) -> Result<Frame, Close> {
        match *self {}
    }
}

/// Why a namespace refused a client: the CONNECT_ERROR's `message`, and its `data`, which
/// socket.io-client puts on the error it hands to `connect_error` (`err.data`).
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub message: String,
    pub data: Option<Value>,
}

impl From<&str> for Refused {
    fn from(message: &str) -> Refused {
        Refused {
            message: message.to_string(),
            data: None,
        }
    }
}

/// The server's side of Socket.IO.
pub trait Namespaces: Send + Sync + 'static {
    type Socket: Send + Sync + 'static;
    type Stream: EventStream;
    /// A client asks to join `nsp` with `auth`. `Err` is the CONNECT_ERROR
    /// (`Invalid namespace` for one that does not exist).
    fn connect(
        &self,
        opening: &Opening,
        nsp: &str,
        auth: Option<Value>,
    ) -> impl Future<Output = Result<Connected<Self::Socket, Self::Stream>, Refused>> + Send;
    /// An event from the client, with its attachments in place.
    fn event(
        &self,
        socket: &Self::Socket,
        event: &str,
        args: Vec<rmpv::Value>,
    ) -> impl Future<Output = Reply> + Send;
    /// The session moved from long-polling to WebSocket.
    fn upgraded(&self, socket: &Self::Socket);
    /// The client left the namespace, or the session ended.
    fn disconnected(&self, socket: Self::Socket, reason: &str);
}

/// The Socket.IO layer, as the engine's upper layer.
pub struct SocketIo<N: Namespaces> {
    namespaces: Arc<N>,
    limits: Limits,
    connect_timeout: Duration,
}

impl<N: Namespaces> SocketIo<N> {
    /// `connect_timeout`: how long a session may stay without joining any namespace.
    pub fn new(namespaces: N, limits: Limits, connect_timeout: Duration) -> SocketIo<N> {
        SocketIo {
            namespaces: Arc::new(namespaces),
            limits,
            connect_timeout,
        }
    }
}

struct Queue<T> {
    /// Replies, each with whether it ends a write: a CONNECT answer is written on its own,
    /// as the reference server does (some clients read only one message per tick).
    frames: VecDeque<(Frame, bool)>,
    /// The main namespace's stream, handed from the inbound half to the outbound one.
    stream: Option<T>,
    /// The main namespace was left: stop delivering.
    stream_gone: bool,
    /// A namespace was joined: the connect timeout no longer applies.
    joined: bool,
}

/// What the two halves share.
///
/// The inbound half changes the queue rarely (a CONNECT, an ack); the outbound half looks for
/// changes before every event it delivers. So a change raises `changed` and wakes the outbound
/// half, and the outbound half takes the queue's lock only when `changed` is up: an event
/// costs one atomic load here, not a lock and a `Notify` waiter added and removed.
struct Shared<T> {
    queue: Mutex<Queue<T>>,
    /// The queue changed since the outbound half last looked.
    changed: AtomicBool,
    /// The outbound half, when it waits.
    waker: AtomicWaker,
}

impl<T> Shared<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<T>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, frames: impl IntoIterator<Item = Frame>) {
        self.lock()
            .frames
            .extend(frames.into_iter().map(|f| (f, false)));
        self.signal();
    }

    /// Tells the outbound half that the queue changed (after the change, outside the lock).
    fn signal(&self) {
        self.changed.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once the queue changed; otherwise the task is woken when it does.
    fn poll_changed(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.changed.load(Ordering::Acquire) {
            return std::task::Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // a change between the first look and the registration woke nobody
        if self.changed.load(Ordering::Acquire) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

impl<N: Namespaces> Upper for SocketIo<N> {
    type In = SioIn<N>;
    type Out = SioOut<N::Stream>;

    fn open(&self, opening: Opening) -> (SioIn<N>, SioOut<N::Stream>) {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                stream: None,
                stream_gone: false,
                joined: false,
            }),
            changed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        (
            SioIn {
                namespaces: self.namespaces.clone(),
                shared: shared.clone(),
                sid: opening.sid.clone(),
                transport: opening.transport,
                opening: Some(Box::new(opening)),
                sockets: Vec::new(),
                partial: None,
                limits: self.limits,
            },
            SioOut {
                shared,
                stream: None,
                boundary: false,
                connect_by: Some(Box::pin(tokio::time::sleep(self.connect_timeout))),
            },
        )
    }
}

/// The inbound half: packets from the client.
pub struct SioIn<N: Namespaces> {
    namespaces: Arc<N>,
    shared: Arc<Shared<N::Stream>>,
    /// The request that opened the session, until a namespace is joined.
    opening: Option<Box<Opening>>,
    sid: Arc<str>,
    transport: super::Transport,
    sockets: Vec<(String, N::Socket)>,
    /// A binary packet waiting for its attachments (boxed: rare, and the inbound half lives
    /// inside every WebSocket session's task).
    partial: Option<Box<Partial>>,
    limits: Limits,
}

fn bad(e: impl std::fmt::Display) -> Close {
    tracing::debug!(error = %e, "socket.io packet refused");
    Close::new("bad_packet")
}

impl<N: Namespaces> Inbound for SioIn<N> {
    async fn message(&mut self, m: Incoming) -> Result<(), Close> {
        let assembly = match (m, self.partial.take()) {
            (Incoming::Text(t), None) => {
                let p = Packet::decode(&t, &self.limits).map_err(bad)?;
                Partial::start(p, &self.limits)
            }
            (Incoming::Binary(b), Some(partial)) => (*partial).push(b).map_err(bad)?,
            (Incoming::Text(_), Some(_)) => {
                return Err(bad("a text packet arrived while attachments were expected"));
            }
            (Incoming::Binary(_), None) => {
                return Err(bad("binary data arrived that no packet announced"));
            }
        };
        match assembly {
            Assembly::Waiting(p) => {
                self.partial = Some(Box::new(p));
                Ok(())
            }
            Assembly::Complete(p, attachments) => {
                self.packet(p, attachments).await;
                Ok(())
            }
        }
    }

    fn upgraded(&mut self) {
        self.transport = super::Transport::Websocket;
        if let Some(o) = &mut self.opening {
            o.transport = self.transport;
        }
        for (_, s) in &self.sockets {
            self.namespaces.upgraded(s);
        }
    }

    fn closed(&mut self, reason: &str) {
        for (_, s) in self.sockets.drain(..) {
            self.namespaces.disconnected(s, reason);
        }
    }
}

impl<N: Namespaces> SioIn<N> {
    async fn packet(&mut self, p: Packet, attachments: Vec<Vec<u8>>) {
        match p.kind {
            Kind::Connect => self.connect(p).await,
            Kind::Disconnect => {
                if let Some(i) = self.sockets.iter().position(|(n, _)| *n == p.nsp) {
                    let (_, s) = self.sockets.remove(i);
                    self.namespaces.disconnected(s, "client_disconnect");
                    if p.nsp == "/" {
                        let mut q = self.shared.lock();
                        q.stream = None;
                        q.stream_gone = true;
                        drop(q);
                        self.shared.signal();
                    }
                }
            }
            Kind::Event | Kind::BinaryEvent => {
                // events for a namespace the client has not joined are ignored, as the
                // reference server does
                let Some((_, socket)) = self.sockets.iter().find(|(n, _)| *n == p.nsp) else {
                    return;
                };
                let Some((name, args)) = p.event_parts() else {
                    return;
                };
                let args: Vec<rmpv::Value> = args
                    .iter()
                    .map(|a| sio::with_attachments(a, &attachments))
                    .collect();
                let reply = self.namespaces.event(socket, name, args).await;
                let frames = match reply {
                    Reply::Nothing => Vec::new(),
                    Reply::Ack(args) => match p.id {
                        Some(id) => encode(Kind::Ack, &p.nsp, Some(id), None, args),
                        None => Vec::new(),
                    },
                    Reply::Emit(emits) => emits
                        .into_iter()
                        .flat_map(|e| encode(Kind::Event, &p.nsp, None, Some(e.event), e.args))
                        .collect(),
                };
                if !frames.is_empty() {
                    self.shared.push(frames);
                }
            }
            // this server asks clients for no acks; a client cannot send CONNECT_ERROR
            Kind::Ack | Kind::BinaryAck | Kind::ConnectError => {}
        }
    }

    async fn connect(&mut self, p: Packet) {
        if self.sockets.iter().any(|(n, _)| *n == p.nsp) {
            return; // joined already
        }
        // after the first namespace, later ones see no request headers
        let opening = self.opening.take().unwrap_or_else(|| {
            Box::new(Opening {
                headers: Default::default(),
                uri: Default::default(),
                extensions: Default::default(),
                transport: self.transport,
                sid: self.sid.clone(),
            })
        });
        let result = self.namespaces.connect(&opening, &p.nsp, p.data).await;
        match result {
            Ok(c) => {
                let mut answer = json!({"sid": c.sid});
                if let Some(pid) = &c.pid {
                    answer["pid"] = json!(pid);
                }
                let mut frames = vec![(
                    Frame::message(
                        &Packet {
                            kind: Kind::Connect,
                            nsp: p.nsp.clone(),
                            id: None,
                            data: Some(answer),
                            attachments: 0,
                        }
                        .encode(),
                    ),
                    true,
                )];
                for e in c.then {
                    frames.extend(
                        encode(Kind::Event, &p.nsp, None, Some(e.event), e.args)
                            .into_iter()
                            .map(|f| (f, false)),
                    );
                }
                {
                    let mut q = self.shared.lock();
                    q.frames.extend(frames);
                    q.joined = true;
                    if p.nsp == "/" && c.stream.is_some() {
                        q.stream = c.stream;
                        q.stream_gone = false;
                    }
                }
                self.shared.signal();
                // what the request said is not needed any more (it can be large): `opening` is
                // dropped here
                self.sockets.push((p.nsp, c.socket));
            }
            Err(Refused { message, data }) => {
                // kept for the next attempt, until a namespace is joined
                if self.sockets.is_empty() {
                    self.opening = Some(opening);
                }
                let refusal = Packet {
                    kind: Kind::ConnectError,
                    nsp: p.nsp,
                    id: None,
                    data: Some(match data {
                        Some(data) => json!({"message": message, "data": data}),
                        None => json!({"message": message}),
                    }),
                    attachments: 0,
                };
                self.shared.push([Frame::message(&refusal.encode())]);
            }
        }
    }
}

/// The outbound half: replies first, then the main namespace's events.
pub struct SioOut<T> {
    shared: Arc<Shared<T>>,
    stream: Option<T>,
    /// The last frame ended a write: yield once before the next.
    boundary: bool,
    /// Until a namespace is joined: when the session is closed for not joining one.
    connect_by: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T: EventStream> Outbound for SioOut<T> {
    fn more_ready(&self) -> bool {
        if self.boundary {
            return false;
        }
        self.shared.changed.load(Ordering::Acquire)
            || self.stream.as_ref().is_some_and(EventStream::more_ready)
    }

    async fn next(&mut self) -> Result<Frame, Close> {
        if std::mem::take(&mut self.boundary) {
            // ends the engine's batch (it only takes what is ready without waiting)
            tokio::task::yield_now().await;
        }
        loop {
            if self.shared.changed.load(Ordering::Acquire) {
                // lowered before the look: a change made after it raises it again
                self.shared.changed.store(false, Ordering::Release);
                let mut q = self.shared.lock();
                // everything but the frames is taken in this one look
                if let Some(s) = q.stream.take() {
                    self.stream = Some(s);
                }
                if q.stream_gone {
                    q.stream_gone = false;
                    self.stream = None;
                }
                if q.joined {
                    self.connect_by = None;
                }
                if let Some((f, boundary)) = q.frames.pop_front() {
                    if q.frames.is_empty() {
                        // replies are rare: give their room back rather than keep it idle
                        q.frames = VecDeque::new();
                    } else {
                        // more to take next time
                        self.shared.changed.store(true, Ordering::Release);
                    }
                    self.boundary = boundary;
                    return Ok(f);
                }
            }
            let shared = &self.shared;
            let notified = std::future::poll_fn(|cx| shared.poll_changed(cx));
            match (&mut self.stream, &mut self.connect_by) {
                (Some(s), _) => {
                    tokio::select! {
                        biased;
                        _ = notified => continue,
                        r = s.next() => return r,
                    }
                }
                (None, Some(deadline)) => {
                    tokio::select! {
                        biased;
                        _ = notified => continue,
                        _ = deadline.as_mut() => return Err(Close::new("connect_timeout")),
                    }
                }
                (None, None) => {
                    notified.await;
                }
            }
        }
    }
}

/// Frames for an event or an ack: the packet, then its attachments.
pub fn encode(
    kind: Kind,
    nsp: &str,
    id: Option<u64>,
    event: Option<String>,
    args: Vec<rmpv::Value>,
) -> Vec<Frame> {
    let mut binaries = Vec::new();
    let mut items: Vec<Value> = Vec::with_capacity(args.len() + 1);
    if let Some(e) = event {
        items.push(Value::String(e));
    }
    items.extend(args.into_iter().map(|a| to_json(a, &mut binaries)));
    let kind = match (kind, binaries.is_empty()) {
        (Kind::Event, false) => Kind::BinaryEvent,
        (Kind::Ack, false) => Kind::BinaryAck,
        (k, _) => k,
    };
    let packet = Packet {
        kind,
        nsp: nsp.to_string(),
        id,
        data: Some(Value::Array(items)),
        attachments: binaries.len(),
    };
    let mut frames = vec![Frame::message(&packet.encode())];
    frames.extend(binaries.into_iter().map(Frame::Binary));
    frames
}

/// A MessagePack-shaped value as JSON, binary values replaced by placeholders.
fn to_json(v: rmpv::Value, binaries: &mut Vec<Bytes>) -> Value {
    match v {
        rmpv::Value::Nil => Value::Null,
        rmpv::Value::Boolean(b) => Value::Bool(b),
        rmpv::Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => json!(u),
            (_, Some(i)) => json!(i),
            _ => Value::Null,
        },
        rmpv::Value::F32(f) => serde_json::Number::from_f64(f64::from(f))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        rmpv::Value::F64(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        rmpv::Value::String(s) => Value::String(s.into_str().unwrap_or_default()),
        rmpv::Value::Binary(b) | rmpv::Value::Ext(_, b) => {
            let num = binaries.len();
            binaries.push(Bytes::from(b));
            json!({"_placeholder": true, "num": num})
        }
        rmpv::Value::Array(items) => {
            Value::Array(items.into_iter().map(|i| to_json(i, binaries)).collect())
        }
        rmpv::Value::Map(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        rmpv::Value::String(s) => s.into_str().unwrap_or_default(),
                        other => other.to_string(),
                    };
                    (key, to_json(v, binaries))
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(frames: &[Frame]) -> Vec<String> {
        frames
            .iter()
            .map(|f| match f {
                Frame::Message(b) => String::from_utf8_lossy(b).into_owned(),
                Frame::Binary(b) => format!("<{} bytes>", b.len()),
            })
            .collect()
    }

    #[test]
    fn events_and_acks_encode_as_the_reference_does() {
        let f = encode(
            Kind::Event,
            "/",
            None,
            Some("message-back".into()),
            vec![rmpv::Value::from(1), rmpv::Value::from("2")],
        );
        assert_eq!(texts(&f), vec![r#"42["message-back",1,"2"]"#]);
        let f = encode(
            Kind::Ack,
            "/custom",
            Some(789),
            None,
            vec![
                rmpv::Value::Binary(vec![1, 2, 3]),
                rmpv::Value::Binary(vec![4, 5, 6]),
            ],
        );
        assert_eq!(
            texts(&f),
            vec![
                r#"462-/custom,789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
                    .to_string(),
                "<3 bytes>".into(),
                "<3 bytes>".into()
            ]
        );
    }
}
