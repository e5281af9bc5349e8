//! Cutting clients that stop reading.
//!
//! A client that stops reading (a frozen tab, a laptop that slept, a VPN that dropped the
//! route) leaves its TCP window closed. Nothing at the HTTP or Engine.IO level notices: the
//! writer simply waits, and a closed window is kept alive by the kernel's zero-window probes
//! indefinitely. [`StallGuard`] puts a write timeout on every accepted socket
//! (`slow_consumer_timeout_ms`): a write that makes no progress for that
//! long fails, the connection closes, and the transports see why through the shared
//! [`StallFlag`], so the registry counts it as `slow_consumer` whatever the transport.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Set when a connection's writes stalled past the timeout. Cloned into every request of that
/// connection (request extensions), so transports can name the close reason.
#[derive(Debug, Clone, Default)]
pub struct StallFlag(Arc<AtomicBool>);

impl StallFlag {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// An accepted stream whose writes fail with `TimedOut` after `timeout` without progress.
///
/// Written here rather than taken from `tokio-io-timeout`, which keeps a read and a write
/// timer inline in every stream: most connections never wait on a write, so the one timer is
/// made the first time a write has to wait, and kept for the next.
pub struct StallGuard<S> {
    inner: S,
    timeout: Duration,
    /// Armed while a write waits; `None` until the first write that had to.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
    flag: StallFlag,
    /// The socket's place in the per-address count, given back when the socket is dropped.
    _slot: Option<super::limit::Slot>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> StallGuard<S> {
    pub fn new(stream: S, timeout: Duration) -> (Self, StallFlag) {
        let flag = StallFlag::default();
        (
            StallGuard {
                inner: stream,
                timeout,
                timer: None,
                armed: false,
                flag: flag.clone(),
                _slot: None,
            },
            flag,
        )
    }

    /// Holds the socket's place in the per-address count for as long as the socket lives.
    pub fn hold(&mut self, slot: super::limit::Slot) {
        self._slot = Some(slot);
    }

    /// After a write attempt: progress disarms the timer; waiting arms it (once per wait) and
    /// fails the write when it fires.
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.armed = false;
            return r;
        }
        let deadline = Instant::now() + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.armed = false;
                self.flag.0.store(true, Ordering::Relaxed);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer accepted no data within the write timeout",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_that_waits_too_long_fails_and_sets_the_flag() {
        // a pipe whose other end never reads: writes wait once its buffer is full
        let (a, _b) = tokio::io::duplex(64);
        let (mut g, flag) = StallGuard::new(a, Duration::from_millis(50));
        g.write_all(&[0; 32]).await.unwrap();
        assert!(g.timer.is_none(), "no timer until a write has to wait");
        let e = g.write_all(&[0; 1024]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(flag.is_set());
    }

    #[tokio::test]
    async fn progress_disarms_the_timer() {
        let (a, mut b) = tokio::io::duplex(64);
        let (mut g, flag) = StallGuard::new(a, Duration::from_millis(200));
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            while n < 4096 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                n += b.read(&mut buf).await.unwrap();
            }
        });
        // slow but steady: 4 KiB through a 64-byte pipe takes far longer than the timeout
        // in all, but no single wait does
        g.write_all(&[1; 4096]).await.unwrap();
        reader.await.unwrap();
        assert!(!flag.is_set());
    }
}
