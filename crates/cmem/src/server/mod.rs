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

use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as AutoBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

mod assets;
mod guard;
mod router;

use crate::app::{App, AppState, Startup, hub_options};
use crate::config::Loaded;
use crate::hub::Hub;
use crate::journal::JournalError;
use crate::memory::{Memory, MemoryError, OpenOptions, indexer};
use crate::metrics::Metrics;
use crate::monitor::Monitor;
use crate::net::StallGuard;
use crate::net::classify::{Diagnosis, ErrorClass, classify};
use crate::transports;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "cannot listen on {addr}: {source} [{class}]\n  cause: {cause}\n  fix: {fix}",
        class = diagnosis.class.name(),
        cause = diagnosis.cause,
        fix = diagnosis.fix
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
        diagnosis: Diagnosis,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Teams(#[from] crate::teams::TeamsError),
    #[error("state folder: {0}")]
    State(std::io::Error),
    #[error(
        "refusing to listen on {addr}: other machines can reach it and no users exist, so anyone could read and publish. Create a user and a token first:\n  cmem user add <name> --admin --data {data}\n  cmem token create <name> --data {data}\nor pass --insecure to run open on purpose"
    )]
    Insecure { addr: SocketAddr, data: String },
}

/// A bound, not yet running server. Splitting bind from run lets callers learn the port first.
pub struct Server {
    app: App,
    listener: TcpListener,
    /// The address actually bound (the port may differ from the configured one).
    addr: SocketAddr,
    /// The cluster's Socket.IO recovery key (`None`: this node's own, in its state folder).
    shared_key: Option<String>,
}

/// How long a starting server waits for an index another process holds.
const INDEX_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Server {
    /// Binds the listener (trying up to `port_fallback` further ports if the port is taken
    /// or refused), then opens the index, the teams database and the journal.
    pub async fn bind(loaded: Loaded) -> Result<Server, ServerError> {
        let startup = Arc::new(Startup {
            sources: loaded.sources,
            profile: loaded.profile,
        });
        let mut config = loaded.config;
        let addr = config.bind;
        let options = OpenOptions {
            max_file_bytes: config.index_max_file_bytes,
            history_max: config.search_history_max,
            skip_extensions: config.index_skip_extensions.clone(),
            language: config.search_language.clone(),
            model: crate::memory::embed::ModelChoice::parse(&config.embedding_model),
            ..OpenOptions::default()
        };
        // `cmem mcp` takes the index's writer for moments while no server runs: wait that out
        let mut waited = std::time::Duration::ZERO;
        let memory = loop {
            match Memory::open(&config.data_dir, &options) {
                Err(crate::memory::MemoryError::Locked(_)) if waited < INDEX_LOCK_WAIT => {
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    waited += std::time::Duration::from_millis(250);
                }
                other => break other?,
            }
        };
        let (access, collab) = crate::app::team_parts(crate::app::open_teams(&config)?);
        collab.limit_docs(
            config.docs_cached_max as usize,
            config.docs_per_workspace_max as usize,
        );
        if !addr.ip().is_loopback() && !config.insecure && !access.users_exist() {
            return Err(ServerError::Insecure {
                addr,
                data: config.data_dir.display().to_string(),
            });
        }
        let listener = listen(addr, config.port_fallback)?;
        let bound = listener.local_addr().map_err(|source| ServerError::Bind {
            addr,
            diagnosis: classify(&source),
            source,
        })?;
        config.bind = bound; // the origin clients see, and what diagnostics report
        let hub = Hub::open_configured(hub_options(&config)).await?;
        // the recovery key of Socket.IO sessions: shared by a cluster's nodes, else local
        let shared_key = hub.journal.shared_secret("socketio").await?;
        collab.limit_messages(config.team_message_max_chars);
        let monitor = Monitor::new(hub.clone(), memory.clone(), config.status_interval_s);
        let metrics = Arc::new(Metrics::new(hub.clone(), memory.clone(), collab.clone()));
        let app = Arc::new(AppState {
            config: Arc::new(config),
            hub,
            access,
            collab,
            memory,
            monitor,
            metrics,
            startup,
        });
        Ok(Server {
            app,
            listener,
            addr: bound,
            shared_key,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.app.hub
    }

    /// Everything the server holds.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Serves until `signal` resolves, then shuts down gracefully.
    ///
    /// The accept loop is our own (hyper-util) rather than `axum::serve`, because the server
    /// needs what that hides: each accepted socket, to tune it (`TCP_NODELAY`); the error of
    /// each failed connection, to record its OS error code for diagnostics; and a hard stop
    /// for connections still open when the grace period ends.
    pub async fn run(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let state = self.app;
        let hub = state.hub.clone();
        let config = state.config.clone();
        let io =
            transports::socketio::build(&state, self.shared_key).map_err(ServerError::State)?;
        if let Some(io) = &io {
            tokio::spawn(io.clone().sweep());
        }
        state.monitor.start();
        let app = router::router(state.clone(), io.clone());
        tokio::spawn(transports::poll::sweep(
            hub.clone(),
            config.poll_client_ttl_s,
        ));
        tokio::spawn(crate::access::live::watch(
            Arc::new(state.access.clone()),
            hub.clone(),
        ));
        if let Some(changes) = hub.registry.take_presence_changes() {
            tokio::spawn(crate::collab::presence::run(
                hub.clone(),
                state.collab.clone(),
                changes,
                state.config.node(),
            ));
        }
        // Watch the folder, then bring the index up to date with it (only what changed since
        // last time); edits during that run are picked up by the watcher.
        crate::memory::watcher::start(state.memory.clone(), hub.clone());
        // then the vectors follow the index, in the background (after each commit)
        crate::memory::dense::start(state.memory.clone(), hub.clone());
        let (m, h) = (state.memory.clone(), hub.clone());
        tokio::spawn(async move {
            if let Err(e) = indexer::run(m, h, None).await {
                tracing::error!(error = %e, "initial indexing failed");
            }
        });

        let mut builder = AutoBuilder::new(TokioExecutor::new());
        // A client gets `request_read_timeout_ms` to send its request headers; without a timer
        // hyper waits for ever, so 40 slowloris connections were held open indefinitely.
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_millis(config.request_read_timeout_ms));
        let stall_timeout = Duration::from_millis(config.slow_consumer_timeout_ms);
        let keepalive = config.keepalive();
        let graceful = GracefulShutdown::new();
        hub.registry.tcp.configure(
            config.max_connections_per_address,
            config.connection_cap_loopback,
        );
        let head_timeout = Duration::from_millis(config.request_read_timeout_ms);
        let serve = |stream: tokio::net::TcpStream, remote: SocketAddr| {
            let slot = match hub.registry.tcp.admit(remote.ip()) {
                Ok(slot) => slot,
                Err(at_cap) => return refuse_at_cap(stream, &at_cap),
            };
            if let Err(e) = crate::net::socket::tune(&stream, keepalive.as_ref()) {
                tracing::debug!(error = %e, "socket options not set");
            }
            let (mut stream, stalled) = StallGuard::new(stream, stall_timeout);
            stream.hold(slot);
            // set when the first request head is complete (hyper calls the service)
            let first = Arc::new(tokio::sync::Notify::new());
            let seen = first.clone();
            let svc = app.clone().map_request(move |mut req: Request<Incoming>| {
                seen.notify_one();
                req.extensions_mut().insert(ConnectInfo(remote));
                req.extensions_mut().insert(stalled.clone());
                req
            });
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(svc))
                .into_owned();
            let conn = graceful.watch(conn);
            let h = hub.clone();
            let slow_ms = config.slow_consumer_timeout_ms;
            tokio::spawn(async move {
                // hyper's header timer starts only once hyper-util has told HTTP/1 from
                // HTTP/2 (hyperium/hyper#3756), and HTTP/2 has none: a socket that sends
                // nothing, or only the HTTP/2 preface, would be held for ever. It gets
                // `request_read_timeout_ms` for its first request head, whatever the protocol;
                // after that hyper's HTTP/1 timer applies between requests.
                let mut conn = std::pin::pin!(conn);
                let r = tokio::select! {
                    r = &mut conn => r,
                    _ = first.notified() => conn.await,
                    _ = tokio::time::sleep(head_timeout) => {
                        tracing::debug!(%remote, "no request head in time; connection closed");
                        return;
                    }
                };
                if let Err(e) = r {
                    record_connection_error(&h, slow_ms, remote, e.as_ref());
                }
            });
        };
        // Whether every client has been told: WebSocket and Socket.IO sessions are tasks of
        // their own, not hyper connections, and leave the registry once they have sent
        // `cmem_close` and closed; a long-polling session is done once its client fetched
        // its last words and the close.
        let told = || {
            !hub.registry.all().iter().any(|c| {
                matches!(
                    c.transport(),
                    crate::config::Transport::Websocket | crate::config::Transport::Polling
                )
            }) && io.as_ref().is_none_or(|io| io.owed() == 0)
        };
        let grace = Duration::from_millis(config.shutdown_grace_ms);
        let mut signal = std::pin::pin!(signal);
        // Set when the signal came: from then on the server tells its clients why it goes,
        // and still accepts connections for the grace period, because a long-polling client
        // may need a new one for the GET that brings its `cmem_close` (new sessions are
        // refused with a 503 meanwhile).
        let mut deadline: Option<tokio::time::Instant> = None;
        // one interval, not a sleep per turn: a stream of connections must not keep the
        // deadline from being looked at
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            let (stream, remote) = tokio::select! {
                _ = &mut signal, if deadline.is_none() => {
                    tracing::info!("shutting down: closing clients");
                    // ends SSE streams (with a `close` event), long polls, and Socket.IO
                    // deliveries (with `cmem_close` and an Engine.IO close)
                    hub.shut_down();
                    deadline = Some(tokio::time::Instant::now() + grace);
                    continue;
                }
                _ = tick.tick(), if deadline.is_some() => {
                    if told() {
                        break;
                    }
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        tracing::warn!(
                            grace_ms = grace.as_millis() as u64,
                            "some Socket.IO clients were not told why before the grace period ended (gone, or too slow to fetch it)"
                        );
                        break;
                    }
                    continue;
                }
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        hub.registry.record_error("tcp", None, "accept", e.raw_os_error(), e.to_string());
                        tracing::warn!(error = %e, "accept failed");
                        // out of file descriptors and the like: do not spin
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            serve(stream, remote);
        }
        // Stop accepting, then let the requests in flight finish (hyper closes idle
        // connections at once) until the grace period ends.
        drop(self.listener);
        let deadline = deadline.unwrap_or_else(tokio::time::Instant::now);
        if tokio::time::timeout_at(deadline, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "connections still open after the grace period; closing them"
            );
        }
        hub.journal.close().await;
        tracing::info!(head = hub.journal.head(), "journal flushed; bye");
        Ok(())
    }
}

/// Binds `addr`, or with `fallback > 0` the first of the next `fallback` ports that is free,
/// saying which one it took and why the others were skipped.
fn listen(addr: SocketAddr, fallback: u16) -> Result<TcpListener, ServerError> {
    let tries = if addr.port() == 0 { 0 } else { fallback };
    let mut port = addr.port();
    let mut i = 0;
    loop {
        let at = SocketAddr::new(addr.ip(), port);
        match crate::net::socket::bind(at, 1024) {
            Ok(l) => {
                if i > 0 {
                    tracing::warn!(wanted = %addr, using = %at, "port {} was not available; listening on {} instead", addr.port(), at.port());
                }
                return Ok(l);
            }
            Err(source) => {
                let diagnosis = classify(&source);
                let retry = matches!(
                    diagnosis.class,
                    ErrorClass::AddressInUse | ErrorClass::AccessDenied
                );
                match port.checked_add(1) {
                    Some(next) if retry && i < tries => {
                        tracing::info!(
                            port,
                            class = diagnosis.class.name(),
                            "port not available; trying {next}"
                        );
                        port = next;
                        i += 1;
                    }
                    _ => {
                        return Err(ServerError::Bind {
                            addr: at,
                            source,
                            diagnosis,
                        });
                    }
                }
            }
        }
    }
}

/// Closes a connection from an address at its cap, with a one-line 429 if the socket takes it
/// at once (never waiting on it: the point is to spend nothing on it).
fn refuse_at_cap(stream: tokio::net::TcpStream, at_cap: &crate::net::limit::AtCap) {
    let body =
        crate::http::ApiError::body(cmem_wire::Code::RateLimited, &at_cap.to_string()).to_string();
    let resp = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(resp.as_bytes());
    tracing::debug!(ip = %at_cap.ip, "connection refused: address at its cap");
}

/// Keeps a failed connection's OS error (reset, broken pipe, timeout…) for diagnostics.
/// Errors without an OS code (a client closing between requests) are only logged.
fn record_connection_error(
    hub: &Hub,
    slow_consumer_timeout_ms: u64,
    remote: SocketAddr,
    err: &(dyn std::error::Error + 'static),
) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
            && io.raw_os_error().is_none()
        {
            hub.registry.record_error(
                "http",
                None,
                "write_stalled",
                None,
                format!(
                    "{remote}: the client accepted no data for {} ms (slow_consumer_timeout_ms); connection closed",
                    slow_consumer_timeout_ms
                ),
            );
            return;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(code) = io.raw_os_error()
        {
            let kind = format!("{:?}", io.kind());
            hub.registry
                .record_error("http", None, &kind, Some(code), format!("{remote}: {io}"));
            return;
        }
        source = e.source();
    }
    tracing::debug!(%remote, error = %err, "connection ended with an error");
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
