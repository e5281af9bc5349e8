//! The durable journal: every event a client sees is stored here first, with an id that gives
//! its place in one total order, and only then fanned out.
//!
//! Why it looks like this: the journal is an interface ([`Engine`]) with a storage engine
//! behind it, as centrifuge keeps its engines behind one interface. [`sqlite`] is the engine of
//! a single node (the default): a writer thread, group commit, ids from a head counter stored
//! with the events. A replicated engine (cluster mode) implements the same interface; the hub
//! and everything above it see only [`Journal`]. What every engine promises:
//! - `append` returns only once the events are durable, with ids above every id given before
//!   (ids never repeat, even after retention deleted every event or a restart);
//! - committed events reach the [`Fanout`] in id order, each before `append` returns, and an
//!   event addressed to one client (`client:<id>`) reaches only its `direct` sink;
//! - `read` gives committed events in id order, the newest from memory where it can;
//! - the epoch names the store: a store made anew has a new epoch.
//!
//! The suite every engine must pass is `tests.rs` (`conformance`).

pub mod jetstream;
pub mod sqlite;
mod window;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::broadcast;

use crate::envelope::{Event, NewEvent};

pub use sqlite::{activity_in, describe, renew_epoch};

/// Failures of the durable journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("journal folder {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal write failed: {0}")]
    Write(String),
    #[error("the journal is shut down")]
    Closed,
    #[error("journal row {id} is corrupt: {message}")]
    Corrupt { id: u64, message: String },
    /// The store dropped the events after `after` (retention) before they could be read.
    #[error("the events after id {after} are no longer retained (the oldest is {oldest})")]
    Expired { after: u64, oldest: u64 },
}

/// How many of the newest events are kept in memory for replay.
pub const RECENT_CAPACITY: usize = 16_384;

/// Called for each committed event addressed to one client: its address and the event's id.
pub type DirectSink = Box<dyn Fn(&str, u64) + Send + Sync>;

/// Where committed events go: the shared broadcast channel, and a nudge for the one
/// connection a `client:<id>` event is addressed to.
pub struct Fanout {
    pub shared: broadcast::Sender<Arc<Event>>,
    /// Called with the client's address and the event's id, before any later event is sent.
    pub direct: DirectSink,
}

/// Settings the journal needs from the configuration.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// Each commit is synced to disk before it is acknowledged (survives power loss), rather
    /// than left to the OS (survives a process crash).
    pub full_sync: bool,
    pub batch_max: usize,
    pub retention_max_events: u64,
    pub retention_max_age_s: u64,
}

/// A snapshot of the journal's position.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JournalInfo {
    pub epoch: String,
    pub head: u64,
    /// Lowest id still stored; `head + 1` when the journal is empty.
    pub oldest: u64,
    pub appended_since_start: u64,
    pub commits_since_start: u64,
    pub path: String,
}

/// What a reader wants: ids in `(after, upto]`, only the given scopes (all when `None`).
#[derive(Debug, Clone)]
pub struct ReadQuery {
    pub after: u64,
    pub upto: u64,
    pub scopes: Option<Vec<String>>,
    pub limit: usize,
}

/// The newest events a reader may see, for a summary of what happened (the MCP server's
/// `recent_activity`): ids above `after` (the oldest first), or without `after` the `limit`
/// newest (returned oldest first too). Only the listed scopes; only the listed types when
/// `types` is given.
#[derive(Debug, Clone)]
pub struct ActivityQuery {
    pub after: Option<u64>,
    pub scopes: Vec<String>,
    pub types: Option<Vec<String>>,
    /// Types left out (when `types` is not given): the periodic ones that say nothing new.
    pub exclude: Vec<String>,
    pub limit: usize,
}

/// The newest committed events an engine keeps in memory (see [`window`]).
pub(crate) type Recent = Arc<std::sync::RwLock<window::Window>>;

fn new_window() -> Recent {
    Arc::new(std::sync::RwLock::new(window::Window::new()))
}

/// Serves `q` from an engine's in-memory window if the window covers everything after
/// `q.after`.
fn read_window(recent: &Recent, q: &ReadQuery) -> Option<Vec<Arc<Event>>> {
    recent.read().ok()?.read(q)
}

/// Empties an engine's in-memory window; returns how many events it held.
fn clear_window(recent: &Recent) -> usize {
    recent.write().map(|mut r| r.clear()).unwrap_or(0)
}

/// A storage engine of the journal (see the module's documentation for what each promises).
pub trait Engine: Send + Sync {
    /// The epoch of this store.
    fn epoch(&self) -> &str;
    /// Id of the newest committed event (0 if none ever).
    fn head(&self) -> u64;
    /// Lowest id still stored (`head + 1` when empty).
    fn oldest(&self) -> u64;
    fn info(&self) -> JournalInfo;
    /// Appends events durably; returns them with their ids once committed (and fanned out).
    fn append(&self, events: Vec<NewEvent>)
    -> BoxFuture<'_, Result<Vec<Arc<Event>>, JournalError>>;
    /// Committed events in id order.
    fn read(&self, q: ReadQuery) -> BoxFuture<'_, Result<Vec<Arc<Event>>, JournalError>>;
    /// The newest events a reader may see, or those after an id ([`ActivityQuery`]).
    fn activity(&self, q: ActivityQuery) -> BoxFuture<'_, Result<Vec<Arc<Event>>, JournalError>>;
    /// Empties what the engine keeps in memory; returns how many events it held.
    fn clear_cache(&self) -> usize;
    /// Commits everything queued, then stops. Later appends fail with `Closed`.
    fn close(&self) -> BoxFuture<'_, ()>;
    /// Where the journal lives and how it stands, for diagnostics (`engine` names the engine).
    fn state(&self) -> BoxFuture<'_, serde_json::Value>;
    /// A secret every node of a cluster shares (64 hex digits, made by the first node that
    /// asks), kept beside the journal; `None` when the engine serves one node (it then keeps
    /// its own secrets in its state folder).
    fn shared_secret<'a>(
        &'a self,
        _name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, JournalError>> {
        Box::pin(async { Ok(None) })
    }
}

/// The journal the hub holds: one engine behind the [`Engine`] interface.
pub struct Journal {
    engine: Box<dyn Engine>,
}

impl Journal {
    /// Opens (or creates) the SQLite journal at `<state_dir>/journal.sqlite3` and starts its
    /// writer. Committed events are handed to `fanout` in id order.
    pub fn open(
        state_dir: &Path,
        opts: JournalOptions,
        fanout: Fanout,
    ) -> Result<Journal, JournalError> {
        Ok(Journal::with_engine(Box::new(sqlite::SqliteJournal::open(
            state_dir, opts, fanout,
        )?)))
    }

    /// A journal on another engine.
    pub fn with_engine(engine: Box<dyn Engine>) -> Journal {
        Journal { engine }
    }

    pub fn epoch(&self) -> &str {
        self.engine.epoch()
    }

    pub fn head(&self) -> u64 {
        self.engine.head()
    }

    pub fn oldest(&self) -> u64 {
        self.engine.oldest()
    }

    pub fn info(&self) -> JournalInfo {
        self.engine.info()
    }

    pub async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Arc<Event>>, JournalError> {
        self.engine.append(events).await
    }

    pub async fn read(&self, q: ReadQuery) -> Result<Vec<Arc<Event>>, JournalError> {
        self.engine.read(q).await
    }

    pub async fn activity(&self, q: ActivityQuery) -> Result<Vec<Arc<Event>>, JournalError> {
        self.engine.activity(q).await
    }

    pub fn clear_cache(&self) -> usize {
        self.engine.clear_cache()
    }

    pub async fn close(&self) {
        self.engine.close().await
    }

    pub async fn state(&self) -> serde_json::Value {
        self.engine.state().await
    }

    pub async fn shared_secret(&self, name: &str) -> Result<Option<String>, JournalError> {
        self.engine.shared_secret(name).await
    }
}

#[cfg(test)]
mod tests;
