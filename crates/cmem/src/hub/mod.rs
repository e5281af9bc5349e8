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

pub mod registry;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::envelope::{Cursor, Event, NewEvent, Scope};
use crate::journal::jetstream::{JetStreamJournal, JetStreamOptions};
use crate::journal::{Fanout, Journal, JournalError, JournalOptions, ReadQuery};
use registry::{Conn, Registry, Slot};

/// How many events one replay read fetches from the journal.
const REPLAY_PAGE: usize = 1000;

/// What the hub needs to open: where the journal lives and how it behaves. The hub knows
/// nothing else of the configuration.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// The state folder; the journal is `journal.sqlite3` in it.
    pub state_dir: PathBuf,
    /// Slots of the shared fan-out channel: how far a connection may fall behind before it
    /// catches up from the journal.
    pub queue_bound: usize,
    pub journal: JournalOptions,
    /// Cluster mode: the JetStream stream that is the journal (`None`: the SQLite file).
    pub cluster: Option<JetStreamOptions>,
}

/// The event core: the journal, the registry of connections, fan-out and shutdown.
pub struct Hub {
    pub journal: Journal,
    pub registry: Arc<Registry>,
    fanout: broadcast::Sender<Arc<Event>>,
    /// Cancelled when the server shuts down, by [`Hub::shut_down`] (which also ends every
    /// subscription): the tasks beside the transports watch it.
    pub shutdown: CancellationToken,
    started: Instant,
    published: AtomicU64,
    /// Times a subscription fell behind the fan-out window and caught up from the journal.
    catch_ups: AtomicU64,
}

/// Why an event was refused by `publish`.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl From<crate::envelope::InvalidEvent> for PublishError {
    fn from(e: crate::envelope::InvalidEvent) -> Self {
        PublishError::Invalid(e.0)
    }
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
            StreamEnd::Shutdown => cmem_wire::Code::ServerShutdown.as_str().into(),
            StreamEnd::Closed(r) => r.clone(),
            StreamEnd::Journal(_) => cmem_wire::Code::JournalError.as_str().into(),
        }
    }
}

/// What a transport tells a client before it ends the connection (Socket.IO `cmem_close`, SSE
/// `close`): the `code` to act on (`cmem_wire::codes`; `reason` is the same under its older
/// name), a message, whether reconnecting as it is can help (the code's action is to retry),
/// and the cursor to resume from.
pub fn last_words(code: &str, message: &str, last_event_id: String) -> serde_json::Value {
    // a close without a status: an unknown code is retried (`Action::for_status(None)`)
    let action = cmem_wire::Code::parse(code)
        .map(cmem_wire::Code::action)
        .unwrap_or_else(|| cmem_wire::Action::for_status(None));
    json!({
        "code": code,
        "reason": code,
        "message": message,
        "reconnect": matches!(action, cmem_wire::Action::Retry | cmem_wire::Action::Resync),
        "last_event_id": last_event_id,
    })
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

/// What a hub is built from before its journal exists: the fan-out channel and the registry
/// the journal's fan-out nudges.
struct Parts {
    fanout: broadcast::Sender<Arc<Event>>,
    shutdown: CancellationToken,
    registry: Arc<Registry>,
}

impl Parts {
    fn new(queue_bound: usize) -> Parts {
        let (fanout, _) = broadcast::channel(queue_bound.max(1));
        let shutdown = CancellationToken::new();
        let registry = Arc::new(Registry::new());
        Parts {
            fanout,
            shutdown,
            registry,
        }
    }

    /// Where the journal hands committed events: the shared channel, and a nudge for the one
    /// connection an addressed event is for.
    fn fanout(&self) -> Fanout {
        let nudged = self.registry.clone();
        Fanout {
            shared: self.fanout.clone(),
            direct: Box::new(move |client, id| {
                if let Some(c) = nudged.by_address(client) {
                    c.nudge(id);
                }
            }),
        }
    }

    fn hub(self, journal: Journal) -> Arc<Hub> {
        Arc::new(Hub {
            journal,
            registry: self.registry,
            fanout: self.fanout,
            shutdown: self.shutdown,
            started: Instant::now(),
            published: AtomicU64::new(0),
            catch_ups: AtomicU64::new(0),
        })
    }
}

impl Hub {
    /// Opens the journal in the state folder and builds the hub.
    pub fn open(options: HubOptions) -> Result<Arc<Hub>, JournalError> {
        let parts = Parts::new(options.queue_bound);
        let journal = Journal::open(&options.state_dir, options.journal, parts.fanout())?;
        Ok(parts.hub(journal))
    }

    /// Builds the hub on the journal `options` name: the SQLite file of the state folder, or in
    /// cluster mode the JetStream stream every node shares.
    pub async fn open_configured(options: HubOptions) -> Result<Arc<Hub>, JournalError> {
        let Some(cluster) = options.cluster.clone() else {
            return Hub::open(options);
        };
        let parts = Parts::new(options.queue_bound);
        let engine = JetStreamJournal::open(cluster, parts.fanout()).await?;
        Ok(parts.hub(Journal::with_engine(Box::new(engine))))
    }

    /// Starts the shutdown: cancels [`Hub::shutdown`] and tells every connection, whose
    /// subscription then ends once it has handed out what is ready.
    pub fn shut_down(&self) {
        self.shutdown.cancel();
        self.registry.shut_down();
    }

    /// Every event committed from now on to the shared channel (not those addressed to one
    /// connection), for a feature inside the server that follows the journal without being a
    /// connection: the MCP server's resource notifications. A receiver that falls more than
    /// `queue_bound` behind gets `Lagged` and must assume it missed something.
    pub fn tap(&self) -> broadcast::Receiver<Arc<Event>> {
        self.fanout.subscribe()
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
            "client_id": conn.map(|c| c.client_id().to_string()),
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
                reason: cmem_wire::Code::EpochMismatch.as_str(),
                requested: c,
            };
        }
        if c.id > self.journal.head() {
            return Start::Resync {
                reason: cmem_wire::Code::CursorAheadOfJournal.as_str(),
                requested: c,
            };
        }
        if c.id.saturating_add(1) < self.journal.oldest() {
            return Start::Resync {
                reason: cmem_wire::Code::CursorOlderThanRetention.as_str(),
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
        self.subscription(conn, cursor, true, None).await
    }

    /// Whether a connection presenting `cursor` would resume from it (rather than get a
    /// `resync`).
    pub fn resumable(&self, cursor: &Cursor) -> bool {
        matches!(self.decide(Some(cursor.clone())), Start::Resume(_))
    }

    /// Starts delivering to `conn` whose client presented something the transport cannot
    /// honour (`reason`, such as a session it does not know) along with `requested`: it gets
    /// a `resync` saying so, `system_status`, and the events from now on.
    pub async fn subscribe_resync(
        self: &Arc<Self>,
        conn: Arc<Conn>,
        reason: &'static str,
        requested: Cursor,
    ) -> Result<Subscription, PublishError> {
        self.subscription(conn, Some(requested), true, Some(reason))
            .await
    }

    /// For a known connection presenting a cursor again (each poll request): publishes a
    /// `resync` if the cursor cannot be honoured, and returns a subscription that continues
    /// after it. No `system_status`: the connection had that when it was new.
    pub async fn resume(
        self: &Arc<Self>,
        conn: Arc<Conn>,
        cursor: Cursor,
    ) -> Result<Subscription, PublishError> {
        self.subscription(conn, Some(cursor), false, None).await
    }

    async fn subscription(
        self: &Arc<Self>,
        conn: Arc<Conn>,
        cursor: Option<Cursor>,
        greet: bool,
        forced: Option<&'static str>,
    ) -> Result<Subscription, PublishError> {
        // Subscribe first: anything committed from now on reaches `rx`.
        let rx = self.fanout.subscribe();
        // What was addressed to this connection before now is read from the journal below.
        conn.take_direct();
        let start_after = self.position(&conn, cursor, greet, forced).await?;
        let head = self.journal.head();
        conn.set_cursor(start_after);
        let slot = conn.claim_slot();
        Ok(Subscription {
            slot,
            hub: self.clone(),
            conn,
            rx,
            backlog: VecDeque::new(),
            cursor: start_after,
            replay_upto: head.max(start_after),
            replayed: start_after,
            seen: start_after,
        })
    }

    /// `id` as a cursor of this journal (`<epoch>:<id>`): every cursor the transports hand
    /// out names its journal, so a client resuming in another one gets a `resync`.
    pub fn cursor_text(&self, id: u64) -> String {
        Cursor::format(self.journal.epoch(), id)
    }

    async fn position(
        &self,
        conn: &Conn,
        cursor: Option<Cursor>,
        greet: bool,
        forced: Option<&'static str>,
    ) -> Result<u64, PublishError> {
        let scope = Scope::Client(conn.address.clone());
        let start = match (forced, cursor) {
            (Some(reason), Some(requested)) => Start::Resync { reason, requested },
            (_, cursor) => self.decide(cursor),
        };
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
    /// The waker of its connection this subscription waits on for a nudge, a close or the
    /// shutdown.
    slot: Slot,
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
    /// Highest id taken from the live channel, whether this connection may see it or not.
    seen: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.conn.release_slot(&self.slot);
    }
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

    /// Whether [`Subscription::next`] may have something without waiting: false only when
    /// nothing is buffered, nothing is left to replay, nothing was addressed to this
    /// connection, and the journal holds nothing after what it has looked at. Atomic loads
    /// only, so a transport can ask after every event before it asks for another.
    pub fn more_ready(&self) -> bool {
        !self.backlog.is_empty()
            || self.replayed < self.replay_upto
            || self.conn.has_direct()
            || self.cursor.max(self.replayed).max(self.seen) < self.hub.journal.head()
    }

    /// The next event this connection may see, in id order; waits for one.
    ///
    /// A connection closed by [`Conn::close`] (revoked, too slow) gets no further event. A
    /// shutdown is seen once the subscription would wait: what is ready is handed out first.
    pub async fn next(&mut self) -> Result<Arc<Event>, StreamEnd> {
        loop {
            if self.conn.is_closing() {
                return Err(self.end());
            }
            if let Some(ev) = self.ready().await? {
                return Ok(ev);
            }
            if self.conn.is_shut() {
                return Err(self.end());
            }
            let (conn, slot) = (&self.conn, &self.slot);
            let received = tokio::select! {
                biased;
                // An event addressed to this connection alone was committed (`ready` reads it
                // from the journal), or the connection closed, or the server shuts down: the
                // checks above say which.
                _ = std::future::poll_fn(|cx| conn.poll_signal(slot, cx)) => continue,
                r = self.rx.recv() => r,
            };
            if let Some(ev) = self.take(received)? {
                return Ok(ev);
            }
        }
    }

    /// Why the stream ended: a shutdown, or the connection's close.
    fn end(&self) -> StreamEnd {
        if self.conn.is_shut() {
            StreamEnd::Shutdown
        } else {
            StreamEnd::Closed(self.conn.close_reason().unwrap_or_else(|| "closed".into()))
        }
    }

    /// Up to `limit` events, in id order: whatever is ready at once, or else the first that
    /// arrives before `until` and whatever is ready with it. Ends early, with what it has,
    /// when the connection closes or the server shuts down. This is a poll request's page.
    pub async fn fill(
        &mut self,
        limit: usize,
        until: tokio::time::Instant,
    ) -> Result<Vec<Arc<Event>>, JournalError> {
        let mut out = Vec::new();
        // a closed connection gets no further event here either (see `next`)
        while out.len() < limit && !self.conn.is_closing() {
            if let Some(ev) = self.ready().await? {
                out.push(ev);
                continue;
            }
            if !out.is_empty() {
                break;
            }
            // `next` is cancel-safe: the state changes only after each await completes
            match tokio::time::timeout_at(until, self.next()).await {
                Ok(Ok(ev)) => out.push(ev),
                Ok(Err(StreamEnd::Journal(e))) => return Err(e),
                Ok(Err(_)) | Err(_) => break,
            }
        }
        Ok(out)
    }

    /// The id a later request continues after: the last one delivered, or — when nothing
    /// visible is left to read up to the head this subscription started from — that head
    /// (what lies between was looked at and is not for this connection).
    pub fn position(&self) -> u64 {
        if self.backlog.is_empty() && self.replayed >= self.replay_upto {
            self.cursor.max(self.replayed)
        } else {
            self.cursor
        }
    }

    /// The next event that can be had without waiting for a new commit: from the replay
    /// backlog, the journal, or what the live channel already holds.
    async fn ready(&mut self) -> Result<Option<Arc<Event>>, JournalError> {
        loop {
            if let Some(ev) = self.backlog.pop_front() {
                if ev.id <= self.cursor {
                    continue; // never deliver an id twice
                }
                return Ok(Some(self.deliver(ev)));
            }
            self.read_direct();
            if self.replayed < self.replay_upto {
                // boxed: this rare path would otherwise make every waiting subscription's
                // future (held by each idle connection) as large as a journal read
                let page = Box::pin(self.hub.journal.read(ReadQuery {
                    after: self.replayed,
                    upto: self.replay_upto,
                    scopes: Some(self.conn.scope_strings()),
                    limit: REPLAY_PAGE,
                }))
                .await?;
                self.replayed = match page.last() {
                    Some(last) if page.len() == REPLAY_PAGE => last.id,
                    // a short page: nothing visible is left up to replay_upto
                    _ => self.replay_upto,
                };
                self.backlog.extend(page);
                continue;
            }
            match self.rx.try_recv() {
                Ok(ev) => {
                    if let Ok(Some(ev)) = self.take(Ok(ev)) {
                        return Ok(Some(ev));
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    let _ = self.take(Err(broadcast::error::RecvError::Lagged(n)));
                }
                Err(
                    broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed,
                ) => {
                    return Ok(None);
                }
            }
        }
    }

    /// If an event addressed to this connection alone was committed since it last looked and
    /// is not read yet, arranges to read the journal from the cursor up to the head (where it
    /// is). Returns whether it did.
    fn read_direct(&mut self) -> bool {
        let Some(first) = self.conn.take_direct() else {
            return false;
        };
        let read_to = self.cursor.max(self.replayed);
        if first <= read_to {
            return false; // an earlier read already had it
        }
        self.replayed = read_to;
        self.replay_upto = self.replay_upto.max(self.hub.journal.head());
        true
    }

    /// Takes one event received from the live channel: `Some` if it is for this connection
    /// and new. A direct event committed before it is read from the journal first.
    fn take(
        &mut self,
        received: Result<Arc<Event>, broadcast::error::RecvError>,
    ) -> Result<Option<Arc<Event>>, StreamEnd> {
        match received {
            Ok(ev) => {
                self.seen = self.seen.max(ev.id);
                if ev.id <= self.cursor.max(self.replayed) || !self.conn.can_see(&ev.scope) {
                    return Ok(None);
                }
                // An event addressed to this connection alone came first (its nudge may have
                // lost the race with this event): read the journal instead, where both are, in
                // order. Delivering this one would put the cursor past the other.
                if self.conn.has_direct_before(ev.id) && self.read_direct() {
                    return Ok(None);
                }
                Ok(Some(self.deliver(ev)))
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // More than `queue_bound` events behind (a burst, a long replay, a slow
                // reader): the journal has them all. Re-subscribe, then replay from the
                // cursor up to the new head — the same path a reconnect takes.
                self.replayed = self.cursor;
                self.rx = self.hub.fanout.subscribe();
                self.replay_upto = self.hub.journal.head();
                self.hub.catch_ups.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            Err(broadcast::error::RecvError::Closed) => Err(StreamEnd::Shutdown),
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

/// A hub on a fresh journal in `dir`, for the tests of the layers above.
#[cfg(test)]
pub(crate) fn for_tests(dir: &std::path::Path) -> Arc<Hub> {
    let options = HubOptions {
        state_dir: dir.to_path_buf(),
        queue_bound: 1024,
        journal: crate::journal::JournalOptions {
            full_sync: false,
            batch_max: 1000,
            retention_max_events: 0,
            retention_max_age_s: 0,
        },
        cluster: None,
    };
    Hub::open(options).expect("a hub in a temporary folder")
}

#[cfg(test)]
mod tests;
