//! The team store: what team state is kept in and how it changes — users, their bearer
//! tokens, workspaces, members, messages, notifications and shared documents. The operations
//! on it sit above: `access` (who may do what) and `collab` (what members do together).
//!
//! Kept in `<data>/.collective-memory/teams.sqlite3` so the `cmem user|token|workspace`
//! commands and a running server share it (SQLite WAL lets both open it at once; the server
//! reads it on every check, so a token revoked from the command line stops working at the
//! next connection or request).
//!
//! Tokens are 32 random bytes shown once (`cm_<id>_<secret>`); only their SHA-256 is stored.
//! A token is random, not a password, so a fast hash is the right one: there is nothing to
//! guess that a slow hash would protect.

pub mod cluster;
pub(crate) mod fold;
pub mod store;

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use store::{Change, Check};

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Why a teams operation failed. The messages are shown to people as they are.
#[derive(Debug, thiserror::Error)]
pub enum TeamsError {
    #[error("teams database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    /// Refused because of the state it would leave (the last admin removed).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    TooFast(String),
    /// A count limit was reached.
    #[error("{0}")]
    TooMany(String),
    /// Stored or checked, but the journal could not take the event: the server's fault, and
    /// worth a retry.
    #[error("{0}")]
    Unavailable(String),
    #[error("no random numbers from the operating system: {0}")]
    Random(String),
}

impl TeamsError {
    /// The code a client acts on (HTTP error bodies and Socket.IO acks say it alike).
    pub fn code(&self) -> cmem_wire::Code {
        use cmem_wire::Code;
        match self {
            TeamsError::Invalid(_) => Code::Invalid,
            TeamsError::Forbidden(_) => Code::Forbidden,
            TeamsError::NotFound(_) => Code::NotFound,
            TeamsError::Exists(_) => Code::Exists,
            TeamsError::Conflict(_) => Code::Conflict,
            TeamsError::TooFast(_) => Code::RateLimited,
            TeamsError::TooMany(_) => Code::LimitReached,
            TeamsError::Db(_) | TeamsError::Random(_) => Code::Internal,
            TeamsError::Unavailable(_) => Code::Unavailable,
        }
    }
}

/// A user as listed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct User {
    /// Never reused, unlike the name: what the user's search history and event scope
    /// (`user:<id>`) are keyed by.
    pub id: String,
    pub name: String,
    pub admin: bool,
    pub created_at: String,
    pub workspaces: Vec<String>,
}

/// A token as listed (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub user: String,
    pub label: Option<String>,
    pub created_at: String,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

/// A newly created token: the only time its secret exists outside the holder's hands.
#[derive(Debug, Clone, Serialize)]
pub struct NewToken {
    pub id: String,
    pub user: String,
    pub token: String,
}

/// A workspace as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Workspace {
    pub name: String,
    pub created_at: String,
    pub members: Vec<String>,
}

/// Who holds a token now.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenHolder {
    Active(User),
    Revoked,
    /// The token or its user no longer exists.
    Gone,
}

/// The team store: a local SQLite file, or a cluster's view of its replicated team log (see
/// [`store`]). Reads are SQLite queries on it; every write is a `Change` through [`Engine`].
/// `access::Access` and `collab::Collab` are the operations on it.
pub struct TeamStore {
    conn: Arc<Mutex<Connection>>,
    shared: Arc<Shared>,
    store: Box<dyn Engine>,
}

/// What every team store does, as `journal::Engine` is for events: it commits a change made
/// from the current state, deterministically applied by `store::apply`. Reads go to this
/// process's SQLite view either way. Two engines: [`Local`] (one node: one SQLite transaction
/// on `teams.sqlite3`) and `cluster::ClusterStore` (the change is appended to the cluster's
/// team log, and the call returns once this node's view has applied it).
pub(crate) trait Engine: Send + Sync {
    /// Commits the change `make` builds from the current state (`make` may refuse, with the
    /// reason); the id of the message or notification it made, else 0.
    fn commit(
        &self,
        check: Check,
        make: &dyn Fn(&Connection) -> Result<Change, TeamsError>,
    ) -> Result<i64, TeamsError>;

    /// The cluster's NATS connection and names (`None` on a single node).
    fn link(&self) -> Option<cluster::Link> {
        None
    }

    /// The store's state for status pages (`None` on a single node).
    fn state(&self) -> Option<serde_json::Value> {
        None
    }

    /// How far the team log has been applied here (`None` on a single node).
    fn applied(&self) -> Option<u64> {
        None
    }
}

/// One node's team store: a change is one SQLite transaction on `teams.sqlite3`.
struct Local {
    conn: Arc<Mutex<Connection>>,
    shared: Arc<Shared>,
}

impl Engine for Local {
    fn commit(
        &self,
        _check: Check,
        make: &dyn Fn(&Connection) -> Result<Change, TeamsError>,
    ) -> Result<i64, TeamsError> {
        let mut db = self
            .conn
            .lock()
            .map_err(|_| TeamsError::Unavailable("teams database lock poisoned".into()))?;
        let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let change = make(&tx)?;
        let id = store::apply(&tx, None, &change)?;
        tx.commit()?;
        drop(db);
        let mut effects = store::Effects::default();
        effects.note(&change);
        if effects.access {
            self.shared.users_exist.store(-1, Ordering::Relaxed);
        }
        Ok(id)
    }
}

/// Told of a (workspace, document) whose stored updates were applied from the team log.
pub type DocListener = Box<dyn Fn(&str, &str) + Send + Sync>;

/// What the code that applies changes (this process's, or a cluster follower) tells the rest.
pub(crate) struct Shared {
    /// Cached answer to "are there users?" (1 yes, 0 no, -1 unknown) with its time, so the
    /// open/secured decision does not cost a query on every request.
    pub(crate) users_exist: AtomicI64,
    pub(crate) checked_at_ms: AtomicI64,
    /// Counts changes to access (users, tokens, members) applied from elsewhere (another
    /// node), and wakes whoever watches them.
    access_changes: AtomicU64,
    changed: tokio::sync::Notify,
    /// Told of documents whose stored updates a cluster node applied (`collab` unloads them).
    doc_listeners: std::sync::RwLock<Vec<DocListener>>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            users_exist: AtomicI64::new(-1),
            checked_at_ms: AtomicI64::new(0),
            access_changes: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
            doc_listeners: std::sync::RwLock::default(),
        }
    }

    /// After a cluster node applied changes from its team log: caches forget what they
    /// changed; watchers wake if another node made them (`foreign`).
    pub(crate) fn applied(&self, effects: &store::Effects, foreign: bool) {
        if effects.access {
            self.users_exist.store(-1, Ordering::Relaxed);
            if foreign {
                self.access_changes.fetch_add(1, Ordering::AcqRel);
                self.changed.notify_one();
            }
        }
        if effects.docs.is_empty() {
            return;
        }
        if let Ok(listeners) = self.doc_listeners.read() {
            for (workspace, doc) in &effects.docs {
                for f in listeners.iter() {
                    f(workspace, doc);
                }
            }
        }
    }
}

/// How long the "are there users?" answer is trusted before asking the database again.
pub(crate) const USERS_EXIST_TTL_MS: i64 = 1000;

pub(crate) use crate::clock::now_rfc3339 as now;

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) fn random_hex(n: usize) -> Result<String, TeamsError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| TeamsError::Random(e.to_string()))?;
    Ok(store::hex(&buf))
}

/// The stored form of a token.
pub(crate) fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Checks a user or workspace name: 1–64 of letters, digits, `-`, `_`, `.`, starting with a
/// letter or digit (workspace names also appear in scopes `workspace:<name>`).
pub fn check_name(kind: &str, name: &str) -> Result<(), TeamsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(TeamsError::Invalid(format!(
            "{kind} name `{name}` is not valid: use 1 to 64 letters, digits, `-`, `_` or `.`, starting with a letter or digit"
        )))
    }
}

/// Longest token label, in characters (a note to recognise the token by).
pub const MAX_TOKEN_LABEL: usize = 100;

/// The file of a single node's team state, in the state folder.
pub const LOCAL_FILE: &str = "teams.sqlite3";

/// The file of a cluster node's view of the team log, in the state folder.
pub const CLUSTER_FILE: &str = "teams.cluster.sqlite3";

fn open_db(state_dir: &Path, file: &str) -> Result<Connection, TeamsError> {
    std::fs::create_dir_all(state_dir)
        .map_err(|e| TeamsError::Invalid(format!("cannot create {}: {e}", state_dir.display())))?;
    let conn = Connection::open(state_dir.join(file))?;
    conn.execute_batch(store::SCHEMA)?;
    store::migrate(&conn)?;
    Ok(conn)
}

impl TeamStore {
    /// Opens (or creates) `teams.sqlite3` in the state folder: a single node's team state.
    pub fn open(state_dir: &Path) -> Result<TeamStore, TeamsError> {
        let conn = Arc::new(Mutex::new(open_db(state_dir, LOCAL_FILE)?));
        let shared = Arc::new(Shared::new());
        let local = Local {
            conn: conn.clone(),
            shared: shared.clone(),
        };
        Ok(TeamStore::with(conn, shared, Box::new(local)))
    }

    /// Opens team state as configured: a cluster's team log when `cluster` is given (with
    /// this state folder's view of it), else `teams.sqlite3`.
    ///
    /// A cluster whose team log is still empty receives this folder's users, tokens,
    /// workspaces and members from `teams.sqlite3`, if it has any (the first node to ask
    /// wins; the file itself is left as it is).
    pub fn open_with(
        state_dir: &Path,
        cluster: Option<&cluster::ClusterOptions>,
    ) -> Result<TeamStore, TeamsError> {
        let Some(opts) = cluster else {
            return TeamStore::open(state_dir);
        };
        let conn = Arc::new(Mutex::new(open_db(state_dir, CLUSTER_FILE)?));
        let shared = Arc::new(Shared::new());
        let seed = if state_dir.join(LOCAL_FILE).exists() {
            store::export(&open_db(state_dir, LOCAL_FILE)?)?
        } else {
            None
        };
        let c = cluster::ClusterStore::open(opts, conn.clone(), shared.clone(), seed)?;
        Ok(TeamStore::with(conn, shared, Box::new(c)))
    }

    fn with(
        conn: Arc<Mutex<Connection>>,
        shared: Arc<Shared>,
        store: Box<dyn Engine>,
    ) -> TeamStore {
        TeamStore {
            conn,
            shared,
            store,
        }
    }

    /// Commits a change made by `make` from the current state (`make` may refuse, with the
    /// reason). Returns the id of the message or notification made, else 0.
    pub(crate) fn commit(
        &self,
        check: store::Check,
        make: &dyn Fn(&Connection) -> Result<store::Change, TeamsError>,
    ) -> Result<i64, TeamsError> {
        self.store.commit(check, make)
    }

    /// Whether team state is a cluster's.
    pub fn is_cluster(&self) -> bool {
        self.store.link().is_some()
    }

    /// The cluster's NATS connection and names (`None` on a single node).
    pub fn cluster_link(&self) -> Option<cluster::Link> {
        self.store.link()
    }

    /// How far a cluster node has applied the team log (`None` on a single node).
    pub fn team_log_applied(&self) -> Option<u64> {
        self.store.applied()
    }

    /// Counts access changes applied from elsewhere (another node).
    pub fn access_changes(&self) -> u64 {
        self.shared.access_changes.load(Ordering::Acquire)
    }

    /// Resolves when access changes arrive from elsewhere (see [`TeamStore::access_changes`]).
    pub async fn access_changed(&self) {
        self.shared.changed.notified().await
    }

    pub(crate) fn db(&self) -> Result<std::sync::MutexGuard<'_, Connection>, TeamsError> {
        self.conn
            .lock()
            .map_err(|_| TeamsError::Invalid("teams database lock poisoned".into()))
    }

    /// SQLite's `data_version`: it changes when another connection (another process, such as
    /// the `cmem user|token|workspace` commands) commits to the database. (Changes a cluster
    /// node applies from its team log are counted by [`TeamStore::access_changes`].)
    pub fn data_version(&self) -> Result<i64, TeamsError> {
        Ok(self
            .db()?
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    pub(crate) fn forget_users_exist(&self) {
        self.shared.users_exist.store(-1, Ordering::Relaxed);
    }

    /// What the code that applies changes tells the rest (caches to forget, watchers to wake).
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The store's engine state for status pages (`None` on a single node).
    pub fn engine_state(&self) -> Option<serde_json::Value> {
        self.store.state()
    }

    /// Calls `f` with each (workspace, document) whose stored updates a cluster node applied
    /// from the team log (another node's edit, or a fold): a loaded copy must be read again.
    pub fn on_doc_applied(&self, f: DocListener) {
        if let Ok(mut l) = self.shared.doc_listeners.write() {
            l.push(f);
        }
    }
}

/// Whether `sql` (a `SELECT 1 …`) finds a row.
pub(crate) fn exists(db: &Connection, sql: &str, args: &[&str]) -> Result<bool, TeamsError> {
    Ok(db
        .query_row(sql, rusqlite::params_from_iter(args), |_| Ok(()))
        .optional()?
        .is_some())
}

pub(crate) fn memberships(db: &Connection, user: &str) -> Result<Vec<String>, TeamsError> {
    let mut stmt =
        db.prepare("SELECT workspace FROM members WHERE user = ?1 ORDER BY workspace")?;
    let rows = stmt
        .query_map([user], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}
