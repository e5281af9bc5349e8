//! The hub: `publish`, fan-out, and the resume algorithm every transport shares.
//!
//! Invariants (see ARCHITECTURE.md):
//! 1. Everything a client sees was first committed to the journal by [`Hub::publish`].
//! 2. The journal writer sends committed events to one broadcast channel, in id order —
//!    except those addressed to one client, which nudge that connection to read the journal.
//! 3. A [`Subscription`] subscribes to that channel *before* it reads the journal, replays from
//!    the journal up to the head it saw, then takes live events whose id is above the last one
//!    it delivered — no gap, no duplicate.
//! 4. No connection has a queue of events of its own. The broadcast channel (`queue_bound`
//!    slots, shared) holds recent events; a connection that falls further behind than that
//!    catches up from the journal, from its cursor, exactly as a reconnecting client would.
//!    Memory per connection stays constant however far behind it is. (Transports close a
//!    connection whose *socket* stops draining: see `transports::socketio`.)
//! 5. A cursor the journal cannot honour (too old, from another epoch, ahead of the head) yields
//!    one `resync` event addressed to that client — never a silent gap.

pub mod envelope;
pub mod registry;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::config::Config;
use crate::error::{JournalError, PublishError};
use crate::journal::{Fanout, Journal, JournalOptions, ReadQuery};
use crate::teams::Teams;
use envelope::{Cursor, Event, NewEvent, Scope};
use registry::{Conn, Registry};

/// How many events one replay read fetches from the journal.
const REPLAY_PAGE: usize = 1000;

/// The shared heart of the server.
pub struct Hub {
    pub config: Arc<Config>,
    pub journal: Journal,
    pub registry: Arc<Registry>,
    /// Users, tokens and workspaces: who may connect and what they may see.
    pub teams: Arc<Teams>,
    fanout: broadcast::Sender<Arc<Event>>,
    /// Cancelled when the server shuts down; every subscription ends.
    pub shutdown: CancellationToken,
    started: Instant,
    published: AtomicU64,
    /// Times a subscription fell behind the fan-out window and caught up from the journal.
    catch_ups: AtomicU64,
}

/// Why a subscription ended.
#[derive(Debug, thiserror::Error)]
pub enum StreamEnd {
    #[error("server shutting down")]
    Shutdown,
    #[error("closed by server: {0}")]
    Closed(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl StreamEnd {
    /// A short machine-readable reason, used as the close reason and in close counts.
    pub fn reason(&self) -> String {
        match self {
            StreamEnd::Shutdown => "server_shutdown".into(),
            StreamEnd::Closed(r) => r.clone(),
            StreamEnd::Journal(_) => "journal_error".into(),
        }
    }
}

/// How a subscription starts, decided from the client's cursor.
#[derive(Debug, Clone, PartialEq)]
enum Start {
    Fresh,
    Resume(u64),
    Resync {
        reason: &'static str,
        requested: Cursor,
    },
}

impl Hub {
    /// Opens the journal under the configured data folder and builds the hub.
    pub fn open(config: Config, teams: Arc<Teams>) -> Result<Arc<Hub>, JournalError> {
        let (fanout, _) = broadcast::channel(config.queue_bound);
        let shutdown = CancellationToken::new();
        let registry = Arc::new(Registry::new(shutdown.clone()));
        let nudged = registry.clone();
        let journal = Journal::open(
            &config.state_dir(),
            JournalOptions {
                sync: config.journal_sync.clone(),
                batch_max: config.journal_batch_max,
                retention_max_events: config.retention_max_events,
                retention_max_age_s: config.retention_max_age_s,
            },
            Fanout {
                shared: fanout.clone(),
                direct: Box::new(move |client| {
                    if let Some(c) = nudged.by_address(client) {
                        c.nudge();
                    }
                }),
            },
        )?;
        Ok(Arc::new(Hub {
            config: Arc::new(config),
            journal,
            registry,
            teams,
            fanout,
            shutdown,
            started: Instant::now(),
            published: AtomicU64::new(0),
            catch_ups: AtomicU64::new(0),
        }))
    }

    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub fn published_total(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Times a connection fell behind the fan-out window and caught up from the journal.
    pub fn catch_ups_total(&self) -> u64 {
        self.catch_ups.load(Ordering::Relaxed)
    }

    /// The one way to put an event in front of clients: validate, append durably, fan out.
    /// Returns the committed events (with their ids) in order.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<Arc<Event>>, PublishError> {
        for e in &events {
            e.validate()?;
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let n = events.len() as u64;
        let out = self.journal.append(events).await?;
        self.published.fetch_add(n, Ordering::Relaxed);
        Ok(out)
    }

    /// The `system_status` data a new client receives first. Later producers (system monitor)
    /// publish the same type with more fields.
    pub fn status_data(&self, conn: Option<&Conn>) -> serde_json::Value {
        let info = self.journal.info();
        json!({
            "client_id": conn.map(|c| c.id.clone()),
            "transport": conn.map(|c| c.transport().name()),
            "server": {
                "name": "cmem",
                "version": env!("CARGO_PKG_VERSION"),
                "uptime_s": self.uptime_s(),
            },
            "journal": { "epoch": info.epoch, "head": info.head, "oldest": info.oldest },
            "connected_clients": self.registry.len(),
        })
    }

    fn decide(&self, cursor: Option<Cursor>) -> Start {
        let Some(c) = cursor else { return Start::Fresh };
        if let Some(e) = &c.epoch
            && e != self.journal.epoch()
        {
            return Start::Resync {
                reason: "epoch_mismatch",
                requested: c,
            };
        }
        if c.id > self.journal.head() {
            return Start::Resync {
                reason: "cursor_ahead_of_journal",
                requested: c,
            };
        }
        if c.id.saturating_add(1) < self.journal.oldest() {
            return Start::Resync {
                reason: "cursor_older_than_retention",
                requested: c,
            };
        }
        Start::Resume(c.id)
    }

    /// Starts delivering to `conn`: decides resume/fresh/resync, publishes the client's
    /// `resync` (if any) and `system_status`, and returns a subscription positioned so that the
    /// next events are exactly those the client has not seen.
    pub async fn subscribe(
        self: &Arc<Self>,
        conn: Arc<Conn>,
        cursor: Option<Cursor>,
    ) -> Result<Subscription, PublishError> {
        // Subscribe first: anything committed from now on reaches `rx`.
        let rx = self.fanout.subscribe();
        let start_after = self.open_position(&conn, cursor).await?;
        let head = self.journal.head();
        conn.set_cursor(start_after);
        let closed = Box::pin(conn.closer.clone().cancelled_owned());
        Ok(Subscription {
            closed,
            hub: self.clone(),
            conn,
            rx,
            backlog: VecDeque::new(),
            cursor: start_after,
            replay_upto: head,
            replayed: start_after,
        })
    }

    /// A receiver of committed events, for transports that wait on the live stream themselves
    /// (poll). Subscribe before reading the journal.
    pub fn fanout_receiver(&self) -> broadcast::Receiver<Arc<Event>> {
        self.fanout.subscribe()
    }

    /// For a new connection: publishes its opening events (`resync` if its cursor cannot be
    /// honoured, then `system_status`) and returns the id its stream starts after.
    pub async fn open_position(
        &self,
        conn: &Conn,
        cursor: Option<Cursor>,
    ) -> Result<u64, PublishError> {
        self.position(conn, cursor, true).await
    }

    /// `id` as a cursor of this journal (`<epoch>:<id>`): every cursor the transports hand
    /// out names its journal, so a client resuming in another one gets a `resync`.
    pub fn cursor_text(&self, id: u64) -> String {
        Cursor::format(self.journal.epoch(), id)
    }

    /// For a known connection presenting a cursor again (poll): publishes a `resync` if the
    /// cursor cannot be honoured and returns the id its stream continues after.
    pub async fn check_position(&self, conn: &Conn, cursor: Cursor) -> Result<u64, PublishError> {
        self.position(conn, Some(cursor), false).await
    }

    async fn position(
        &self,
        conn: &Conn,
        cursor: Option<Cursor>,
        greet: bool,
    ) -> Result<u64, PublishError> {
        let scope = Scope::Client(conn.address.clone());
        let start = self.decide(cursor);
        let mut opening = Vec::new();
        if let Start::Resync { reason, requested } = &start {
            let oldest = self.journal.oldest();
            let head = self.journal.head();
            tracing::info!(conn = %conn.id, reason, requested = requested.id, oldest, head, "resync");
            opening.push(NewEvent::new(
                "resync",
                scope.clone(),
                json!({
                    "reason": reason,
                    "requested_cursor": requested.id,
                    "requested_epoch": requested.epoch,
                    "epoch": self.journal.epoch(),
                    "oldest_available_id": oldest,
                    "head_id": head,
                    "action": "reload state; the stream continues with new events. To receive every retained event, reconnect with cursor oldest_available_id - 1.",
                }),
            ));
        }
        if greet {
            let mut status = self.status_data(Some(conn));
            if let Start::Resume(c) = start {
                status["resumed_from"] = json!(c);
            }
            opening.push(NewEvent::new("system_status", scope, status));
        }
        if opening.is_empty() {
            return Ok(match start {
                Start::Resume(c) => c,
                _ => self.journal.head(),
            });
        }
        let first = self
            .journal
            .append(opening)
            .await?
            .first()
            .map(|e| e.id)
            .ok_or_else(|| PublishError::Invalid("opening events were not committed".into()))?;
        Ok(match start {
            Start::Resume(c) => c,
            _ => first - 1,
        })
    }
}

/// A position in the event stream for one connection; the transports pull from it.
pub struct Subscription {
    /// Resolves when the connection is closed or the server shuts down (its token is a child
    /// of the shutdown token). Kept across calls: creating a `cancelled()` future per event
    /// would register and unregister a waiter on every delivery.
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    hub: Arc<Hub>,
    conn: Arc<Conn>,
    rx: broadcast::Receiver<Arc<Event>>,
    backlog: VecDeque<Arc<Event>>,
    /// Last id delivered (or passed over as invisible to this connection).
    cursor: u64,
    /// Replay from the journal until `replayed` reaches this id.
    replay_upto: u64,
    /// Highest id read from the journal so far.
    replayed: u64,
}

impl Subscription {
    /// `id` as a cursor of this journal (`<epoch>:<id>`).
    pub fn cursor_text(&self, id: u64) -> String {
        self.hub.cursor_text(id)
    }

    /// The connection this subscription delivers to.
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// The next event this connection may see, in id order.
    pub async fn next(&mut self) -> Result<Arc<Event>, StreamEnd> {
        loop {
            if let Some(ev) = self.backlog.pop_front() {
                if ev.id <= self.cursor {
                    continue; // never deliver an id twice
                }
                return Ok(self.deliver(ev));
            }
            if self.replayed < self.replay_upto {
                let page = self
                    .hub
                    .journal
                    .read(ReadQuery {
                        after: self.replayed,
                        upto: self.replay_upto,
                        scopes: Some(self.conn.scope_strings()),
                        limit: REPLAY_PAGE,
                    })
                    .await?;
                self.replayed = match page.last() {
                    Some(last) if page.len() == REPLAY_PAGE => last.id,
                    // a short page: nothing visible is left up to replay_upto
                    _ => self.replay_upto,
                };
                self.backlog.extend(page);
                continue;
            }
            let received = tokio::select! {
                biased;
                _ = &mut self.closed => {
                    return Err(if self.hub.shutdown.is_cancelled() {
                        StreamEnd::Shutdown
                    } else {
                        StreamEnd::Closed(self.conn.close_reason().unwrap_or_else(|| "closed".into()))
                    });
                }
                // An event addressed to this connection alone was committed: read the journal
                // from the cursor (what the channel also holds is skipped by id later).
                _ = self.conn.nudged() => {
                    self.replayed = self.cursor.max(self.replayed);
                    self.replay_upto = self.hub.journal.head();
                    continue;
                }
                r = self.rx.recv() => r,
            };
            match received {
                Ok(ev) => {
                    if ev.id <= self.cursor.max(self.replayed) || !self.conn.can_see(&ev.scope) {
                        continue;
                    }
                    return Ok(self.deliver(ev));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // More than `queue_bound` events behind (a burst, a long replay, a slow
                    // reader): the journal has them all. Re-subscribe, then replay from the
                    // cursor up to the new head — the same path a reconnect takes.
                    self.replayed = self.cursor;
                    self.rx = self.hub.fanout.subscribe();
                    self.replay_upto = self.hub.journal.head();
                    self.hub.catch_ups.fetch_add(1, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => return Err(StreamEnd::Shutdown),
            }
        }
    }

    fn deliver(&mut self, ev: Arc<Event>) -> Arc<Event> {
        if ev.id > self.cursor {
            self.cursor = ev.id;
        }
        self.conn.set_cursor(ev.id);
        self.conn.touch();
        ev
    }
}
