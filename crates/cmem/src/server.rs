//! Assembles and runs the server: open the hub, bind, serve every route on one port, and shut
//! down gracefully.
//!
//! Shutdown order matters for "nothing lost": stop accepting; tell clients why and close them
//! (SSE gets a `close` event, Socket.IO a `cmem_close` and an Engine.IO close, so clients
//! reconnect elsewhere and resume); then flush the journal. Every event acknowledged to a
//! publisher was committed before its acknowledgement, so the flush only completes in-flight
//! appends.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::net::TcpListener;

use crate::api;
use crate::config::Config;
use crate::error::JournalError;
use crate::hub::Hub;
use crate::transports;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// A bound, not yet running server. Splitting bind from run lets callers learn the port first.
pub struct Server {
    hub: Arc<Hub>,
    listener: TcpListener,
}

impl Server {
    /// Opens the journal and binds the listener.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let addr = config.bind;
        let hub = Hub::open(config)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Server { hub, listener })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Serves until `signal` resolves, then shuts down gracefully.
    pub async fn run(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let hub = self.hub;
        let io = transports::socketio::build(&hub);
        let io_handle = io.as_ref().map(|l| l.io.clone());
        let app = api::router(hub.clone(), io);
        tokio::spawn(transports::poll::sweep(hub.clone()));

        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
        let h = hub.clone();
        let graceful = async move {
            signal.await;
            tracing::info!("shutting down: closing clients");
            let _ = closed_tx.send(());
            // Ends SSE streams (with a `close` event), long polls and delivery tasks.
            h.shutdown.cancel();
            if let Some(io) = io_handle {
                let _ = io
                    .emit(
                        "cmem_close",
                        &json!({"reason": "server_shutdown", "reconnect": true}),
                    )
                    .await;
                io.close().await;
            }
        };
        let serve = axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(graceful);
        let grace = Duration::from_millis(hub.config.shutdown_grace_ms);
        let serve = tokio::spawn(async move { serve.await });
        let mut serve = serve;
        let result = tokio::select! {
            r = &mut serve => r,
            _ = async {
                let _ = closed_rx.await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(grace_ms = grace.as_millis() as u64, "clients still connected after the grace period; stopping anyway");
                serve.abort();
                Ok(Ok(()))
            }
        };
        hub.journal.close().await;
        tracing::info!(head = hub.journal.head(), "journal flushed; bye");
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServerError::Serve(e)),
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(ServerError::Serve(std::io::Error::other(e.to_string()))),
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
