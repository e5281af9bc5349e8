//! Cutting clients that stop reading.
//!
//! A client that stops reading (a frozen tab, a laptop that slept, a VPN that dropped the
//! route) leaves its TCP window closed. Nothing at the HTTP or Engine.IO level notices: the
//! writer simply waits, and a closed window is kept alive by the kernel's zero-window probes
//! indefinitely. [`StallGuard`] puts a write timeout on every accepted socket
//! (`slow_consumer_timeout_ms`, via `tokio-io-timeout`): a write that makes no progress for that
//! long fails, the connection closes, and the transports see why through the shared
//! [`StallFlag`], so the registry counts it as `slow_consumer` whatever the transport.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_io_timeout::TimeoutStream;

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
pub struct StallGuard<S> {
    inner: Pin<Box<TimeoutStream<S>>>,
    flag: StallFlag,
}

impl<S: AsyncRead + AsyncWrite> StallGuard<S> {
    pub fn new(stream: S, timeout: Duration) -> (Self, StallFlag) {
        let mut inner = TimeoutStream::new(stream);
        inner.set_write_timeout(Some(timeout));
        let flag = StallFlag::default();
        (
            StallGuard {
                inner: Box::pin(inner),
                flag: flag.clone(),
            },
            flag,
        )
    }

    fn note<T>(&self, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &r
            && e.kind() == io::ErrorKind::TimedOut
        {
            self.flag.0.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncRead + AsyncWrite> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.inner.as_mut().poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite> AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = self.inner.as_mut().poll_write(cx, buf);
        self.note(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = self.inner.as_mut().poll_write_vectored(cx, bufs);
        self.note(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = self.inner.as_mut().poll_flush(cx);
        self.note(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.as_mut().poll_shutdown(cx)
    }
}
