//! A server WebSocket over any byte stream, holding no buffer while it waits.
//!
//! Written here, over `cmem_wire::ws`, rather than taken from tokio-tungstenite: an idle
//! session's memory is what the engine is built for, and tungstenite keeps a read buffer, a
//! write buffer (with the capacity of its largest write) and two waker proxies for each socket
//! for its whole life. Here a read goes into a buffer on the stack and only the part of a
//! frame still missing is kept; frames to send are encoded into one buffer, written, and the
//! buffer is freed. A waiting session holds the stream, a decoder and two empty vectors.
//!
//! Reads are gated: the socket's read readiness wakes the session through a waker of the
//! stream's own ([`ReadGate`]), which records that it fired. A session is woken far more often
//! to send (every event) than to read, and polling the read side on each of those wake-ups
//! (down through hyper's upgraded stream to tokio's readiness, whose waiter list is behind a
//! mutex) cost a tenth of the server's CPU while fanning events out.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use futures::task::{ArcWake, AtomicWaker};

use cmem_wire::ws::{self, Decoded, Decoder, Message, WsError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What is read from the socket at once (on the stack; only an unfinished frame is kept).
const READ_CHUNK: usize = 8 * 1024;

/// Why reading ended.
#[derive(Debug)]
pub(super) enum ReadError {
    /// The client went away without a close frame.
    Closed,
    Io(io::Error),
    Ws(WsError),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => f.write_str("connection closed"),
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Ws(e) => write!(f, "{e}"),
        }
    }
}

/// The waker the socket's reads are polled with: it marks that the read side may have
/// something, then wakes the session's task.
struct ReadGate {
    /// The read side is to be polled: it was woken, or its last poll returned a message (more
    /// may be buffered), or it was never polled.
    open: AtomicBool,
    /// The task that polls the stream, woken by a read wake-up.
    task: AtomicWaker,
}

impl ArcWake for ReadGate {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.open.store(true, Ordering::Release);
        arc_self.task.wake();
    }
}

pub(super) struct WsStream<S> {
    io: S,
    gate: Arc<ReadGate>,
    decoder: Decoder,
    /// Bytes read and not yet decoded, from `pos` on: part of a frame, or frames behind a
    /// message already handed out. Without capacity once all is decoded.
    inbuf: Vec<u8>,
    pos: usize,
    /// Encoded frames, written up to `written`; freed once all is written.
    out: Vec<u8>,
    written: usize,
    /// The close status to send: 1000, or what a client's bad frame deserves.
    status: u16,
    sent_close: bool,
    got_close: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    pub fn new(io: S, max_message: usize) -> Self {
        WsStream {
            io,
            gate: Arc::new(ReadGate {
                open: AtomicBool::new(true),
                task: AtomicWaker::new(),
            }),
            decoder: Decoder::new(max_message),
            inbuf: Vec::new(),
            pos: 0,
            out: Vec::new(),
            written: 0,
            status: 1000,
            sent_close: false,
            got_close: false,
        }
    }

    /// The next message. Cancel-safe: what was read is kept in `inbuf`. Reads only when the
    /// read side was woken since it last found nothing (see [`ReadGate`]): a wake-up of the
    /// task for anything else returns `Pending` at once.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Message, ReadError>> {
        self.gate.task.register(cx.waker());
        // closed before the read, so that a wake-up during it opens the gate again
        if !self.gate.open.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let gate = self.gate.clone();
        let waker = futures::task::waker_ref(&gate);
        let polled = self.poll_read_message(&mut Context::from_waker(&waker));
        if polled.is_ready() {
            // what was read may hold more messages; the next call looks
            self.gate.open.store(true, Ordering::Release);
        }
        polled
    }

    fn poll_read_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Message, ReadError>> {
        loop {
            if self.pos < self.inbuf.len() {
                match self.decoder.decode(&self.inbuf[self.pos..]) {
                    Err(e) => {
                        self.status = e.status();
                        return Poll::Ready(Err(ReadError::Ws(e)));
                    }
                    Ok(Decoded::Frame { used, message }) => {
                        self.pos += used;
                        if self.pos >= self.inbuf.len() {
                            self.inbuf = Vec::new();
                            self.pos = 0;
                        }
                        if let Some(m) = message {
                            if matches!(m, Message::Close(_)) {
                                self.got_close = true;
                            }
                            return Poll::Ready(Ok(m));
                        }
                        continue;
                    }
                    Ok(Decoded::NeedMore { .. }) => {
                        if self.pos > 0 {
                            self.inbuf.drain(..self.pos);
                            self.pos = 0;
                        }
                    }
                }
            }
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut buf = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(match e.kind() {
                        io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::UnexpectedEof => ReadError::Closed,
                        _ => ReadError::Io(e),
                    }));
                }
                Poll::Ready(Ok(())) => {
                    let filled = buf.filled();
                    if filled.is_empty() {
                        return Poll::Ready(Err(ReadError::Closed));
                    }
                    self.inbuf.extend_from_slice(filled);
                }
            }
        }
    }

    pub async fn next(&mut self) -> Result<Message, ReadError> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Adds a frame to what the next flush writes.
    pub fn feed(&mut self, opcode: u8, payload: &[u8]) {
        ws::encode(opcode, payload, &mut self.out);
    }

    /// Bytes fed and not yet written.
    pub fn buffered(&self) -> usize {
        self.out.len() - self.written
    }

    pub fn feed_text(&mut self, text: &str) {
        self.feed(ws::opcode::TEXT, text.as_bytes());
    }

    /// Writes everything fed so far; not cancel-safe beyond what it wrote (it is awaited to
    /// the end or the session ends).
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        self.out = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }

    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.feed_text(text);
        self.flush().await
    }

    /// The closing handshake: a close frame (1000, or the status a bad frame deserves), then
    /// the client's close frame unless it sent one already, then the end of the stream. The
    /// caller bounds the wait for a client that never answers.
    pub async fn close(&mut self) {
        if !self.sent_close {
            self.sent_close = true;
            ws::encode_close(self.status, &mut self.out);
            if self.flush().await.is_err() {
                return;
            }
        }
        // a client that broke the protocol is not waited for
        while !self.got_close && self.status == 1000 {
            match self.next().await {
                Ok(Message::Close(_)) => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = std::future::poll_fn(|cx| Pin::new(&mut self.io).poll_shutdown(cx)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn client_frame(op: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        ws::encode_client(true, op, payload, [0x11, 0x22, 0x33, 0x44], &mut f);
        f
    }

    #[tokio::test]
    async fn messages_split_anywhere_arrive_whole_and_nothing_is_kept_between_them() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut ws = WsStream::new(server, 1 << 20);
        let mut bytes = client_frame(ws::opcode::TEXT, b"hello");
        bytes.extend(client_frame(ws::opcode::TEXT, &[b'x'; 3000]));
        bytes.extend(client_frame(ws::opcode::PING, b"p"));
        let writer = tokio::spawn(async move {
            // one byte at a time for the first frame, then the rest at once
            for b in &bytes[..11] {
                client.write_all(&[*b]).await.unwrap();
            }
            client.write_all(&bytes[11..]).await.unwrap();
            client
        });
        assert!(matches!(ws.next().await, Ok(Message::Text(t)) if t == "hello"));
        assert!(matches!(ws.next().await, Ok(Message::Text(t)) if t.len() == 3000));
        assert!(matches!(ws.next().await, Ok(Message::Ping(p)) if p == b"p"));
        assert_eq!(ws.inbuf.capacity(), 0, "nothing kept once all was decoded");
        let mut client = writer.await.unwrap();
        // what the server writes, and the buffer given back once it is written
        ws.feed_text("4hi");
        ws.feed(ws::opcode::PONG, b"p");
        ws.flush().await.unwrap();
        assert_eq!(ws.out.capacity(), 0);
        let mut got = [0u8; 8];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [0x81, 3, b'4', b'h', b'i', 0x8A, 1, b'p']);
        // the client goes away: a close, not an error
        drop(client);
        assert!(matches!(ws.next().await, Err(ReadError::Closed)));
    }

    /// A stream that counts the reads it is asked for.
    struct CountingIo {
        inner: tokio::io::DuplexStream,
        reads: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl AsyncRead for CountingIo {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for CountingIo {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// The session's task, as far as the stream can tell: counts its wake-ups.
    struct Task(std::sync::atomic::AtomicUsize);

    impl ArcWake for Task {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn the_read_side_is_polled_only_after_it_was_woken_or_gave_a_message() {
        let (mut client, server) = tokio::io::duplex(1024);
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut ws = WsStream::new(
            CountingIo {
                inner: server,
                reads: reads.clone(),
            },
            1 << 20,
        );
        let task = Arc::new(Task(std::sync::atomic::AtomicUsize::new(0)));
        let waker = futures::task::waker(task.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(ws.poll_next(&mut cx).is_pending());
        assert_eq!(reads.load(Ordering::Relaxed), 1, "the first poll reads");
        // the task woken for something else (an event to send): the socket is not read
        for _ in 0..3 {
            assert!(ws.poll_next(&mut cx).is_pending());
        }
        assert_eq!(
            reads.load(Ordering::Relaxed),
            1,
            "no read without a read wake-up"
        );
        // two messages arrive at once: the socket's wake-up reaches the task
        let mut bytes = client_frame(ws::opcode::TEXT, b"one");
        bytes.extend(client_frame(ws::opcode::TEXT, b"two"));
        client.write_all(&bytes).await.unwrap();
        assert_eq!(
            task.0.load(Ordering::Relaxed),
            1,
            "the read wake-up wakes the task"
        );
        assert!(matches!(ws.poll_next(&mut cx), Poll::Ready(Ok(Message::Text(t))) if t == "one"));
        // the second was read with the first: handed out without another wake-up
        assert!(matches!(ws.poll_next(&mut cx), Poll::Ready(Ok(Message::Text(t))) if t == "two"));
        assert!(ws.poll_next(&mut cx).is_pending());
        let after = reads.load(Ordering::Relaxed);
        assert!(ws.poll_next(&mut cx).is_pending());
        assert_eq!(
            reads.load(Ordering::Relaxed),
            after,
            "gated again once it found nothing"
        );
        drop(client);
        assert_eq!(
            task.0.load(Ordering::Relaxed),
            2,
            "the end of the stream wakes the task"
        );
        assert!(matches!(
            ws.poll_next(&mut cx),
            Poll::Ready(Err(ReadError::Closed))
        ));
    }

    #[tokio::test]
    async fn a_bad_frame_is_answered_with_its_close_status() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut ws = WsStream::new(server, 100);
        client
            .write_all(&client_frame(ws::opcode::BINARY, &[0; 101]))
            .await
            .unwrap();
        assert!(matches!(
            ws.next().await,
            Err(ReadError::Ws(WsError::TooLarge { limit: 100 }))
        ));
        ws.close().await;
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(
            got,
            [0x88, 2, 0x03, 0xf1],
            "1009, then the end of the stream"
        );
    }

    #[tokio::test]
    async fn a_close_waits_for_the_client_s_close() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut ws = WsStream::new(server, 100);
        let closing = tokio::spawn(async move {
            ws.close().await;
        });
        let mut got = [0u8; 4];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [0x88, 2, 0x03, 0xe8]);
        assert!(!closing.is_finished());
        client
            .write_all(&client_frame(ws::opcode::CLOSE, &[0x03, 0xe8]))
            .await
            .unwrap();
        closing.await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}
