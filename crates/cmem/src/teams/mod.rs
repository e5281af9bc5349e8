//! Teams: users, their bearer tokens, workspaces and who belongs to which — the access control
//! every transport and the HTTP API consult before a client sees or sends anything.
//!
//! Kept in `<data>/.collective-memory/teams.sqlite3` so the `cmem user|token|workspace`
//! commands and a running server share it (SQLite WAL lets both open it at once; the server
//! reads it on every check, so a token revoked from the command line stops working at the
//! next connection or request).
//!
//! Tokens are 32 random bytes shown once (`cm_<id>_<secret>`); only their SHA-256 is stored.
//! A token is random, not a password, so a fast hash is the right one: there is nothing to
//! guess that a slow hash would protect.

pub mod auth;
pub mod cluster;
pub mod docs;
mod fold;
pub mod live;
pub mod messages;
pub mod presence;
pub mod rate;
pub mod store;
pub mod yjs_shape;

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use store::{Change, Check};

use rusqlite::{Connection, OptionalExtension, params};
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

/// The teams database: a local SQLite file, or a cluster's view of its replicated team log
/// (see [`store`]).
pub struct Teams {
    conn: Arc<Mutex<Connection>>,
    shared: Arc<Shared>,
    store: Box<dyn Engine>,
    /// Message budgets of HTTP senders, by user (HTTP has no connection to hang them on).
    http_budgets: rate::Budgets,
    /// Journal events a member's HTTP and MCP requests may append, per user id.
    event_budgets: rate::Budgets,
    /// Longest message or notification body, in characters (`team_message_max_chars`).
    message_max_chars: std::sync::atomic::AtomicU64,
    /// Messages being published by a send under way in this process (see `messages::send`).
    publishing: Mutex<std::collections::HashSet<i64>>,
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

/// What the code that applies changes (this process's, or a cluster follower) tells the rest.
pub(crate) struct Shared {
    /// Cached answer to "are there users?" (1 yes, 0 no, -1 unknown) with its time, so the
    /// open/secured decision does not cost a query on every request.
    users_exist: AtomicI64,
    checked_at_ms: AtomicI64,
    /// Shared documents loaded in memory.
    docs: docs::Docs,
    /// Counts changes to access (users, tokens, members) applied from elsewhere (another
    /// node), and wakes whoever watches them.
    access_changes: AtomicU64,
    changed: tokio::sync::Notify,
    /// Who is online on each node of a cluster (empty on a single node).
    board: std::sync::RwLock<presence::Board>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            users_exist: AtomicI64::new(-1),
            checked_at_ms: AtomicI64::new(0),
            docs: docs::Docs::default(),
            access_changes: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
            board: std::sync::RwLock::default(),
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
        for (workspace, doc) in &effects.docs {
            self.docs.unload(workspace, doc);
        }
    }
}

/// How long the "are there users?" answer is trusted before asking the database again.
const USERS_EXIST_TTL_MS: i64 = 1000;

use crate::clock::now_rfc3339 as now;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn random_hex(n: usize) -> Result<String, TeamsError> {
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

impl Teams {
    /// Opens (or creates) `teams.sqlite3` in the state folder: a single node's team state.
    pub fn open(state_dir: &Path) -> Result<Teams, TeamsError> {
        let conn = Arc::new(Mutex::new(open_db(state_dir, LOCAL_FILE)?));
        let shared = Arc::new(Shared::new());
        let local = Local {
            conn: conn.clone(),
            shared: shared.clone(),
        };
        Ok(Teams::with(conn, shared, Box::new(local)))
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
    ) -> Result<Teams, TeamsError> {
        let Some(opts) = cluster else {
            return Teams::open(state_dir);
        };
        let conn = Arc::new(Mutex::new(open_db(state_dir, CLUSTER_FILE)?));
        let shared = Arc::new(Shared::new());
        let seed = if state_dir.join(LOCAL_FILE).exists() {
            store::export(&open_db(state_dir, LOCAL_FILE)?)?
        } else {
            None
        };
        let c = cluster::ClusterStore::open(opts, conn.clone(), shared.clone(), seed)?;
        Ok(Teams::with(conn, shared, Box::new(c)))
    }

    fn with(conn: Arc<Mutex<Connection>>, shared: Arc<Shared>, store: Box<dyn Engine>) -> Teams {
        Teams {
            conn,
            shared,
            store,
            http_budgets: rate::Budgets::default(),
            event_budgets: rate::Budgets::default(),
            message_max_chars: std::sync::atomic::AtomicU64::new(4000),
            publishing: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Commits a change made by `make` from the current state (`make` may refuse, with the
    /// reason). Returns the id of the message or notification made, else 0.
    fn commit(
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

    /// The live nodes of a cluster by name, as their presence announcements say (empty on a
    /// single node).
    pub fn cluster_nodes(&self) -> Vec<String> {
        self.shared
            .board
            .read()
            .map(|b| b.node_names())
            .unwrap_or_default()
    }

    /// The cluster as this node sees it, for status pages (`None` on a single node).
    pub fn cluster_state(&self) -> Option<serde_json::Value> {
        let teams = self.store.state()?;
        Some(serde_json::json!({"nodes": self.cluster_nodes(), "teams": teams}))
    }

    /// How far a cluster node has applied the team log (`None` on a single node).
    pub fn team_log_applied(&self) -> Option<u64> {
        self.store.applied()
    }

    /// Counts access changes applied from elsewhere (another node).
    pub fn access_changes(&self) -> u64 {
        self.shared.access_changes.load(Ordering::Acquire)
    }

    /// Resolves when access changes arrive from elsewhere (see [`Teams::access_changes`]).
    pub async fn access_changed(&self) {
        self.shared.changed.notified().await
    }

    /// Keeps the workspaces Socket.IO session `sid` receives now (after a join or a leave).
    pub fn save_socket_workspaces(
        &self,
        sid: &str,
        workspaces: &[String],
    ) -> Result<(), TeamsError> {
        let ms = now_ms();
        self.commit(Check::Blind, &|_| {
            Ok(Change::SocketWorkspaces {
                sid: sid.into(),
                workspaces: workspaces.to_vec(),
                ms,
            })
        })?;
        Ok(())
    }

    /// The workspaces Socket.IO session `sid` last received, if it ever joined or left one
    /// after its handshake.
    pub fn socket_workspaces(&self, sid: &str) -> Result<Option<Vec<String>>, TeamsError> {
        let list: Option<String> = self
            .db()?
            .query_row(
                "SELECT workspaces FROM socket_sessions WHERE sid = ?1",
                params![sid],
                |r| r.get(0),
            )
            .optional()?;
        Ok(list.and_then(|l| serde_json::from_str(&l).ok()))
    }

    /// Forgets sessions not updated for `max_age_ms` (they can no longer be recovered: the
    /// journal has moved past them). Returns how many. (Each copy of a cluster's team state
    /// forgets them on its own: this is upkeep, not a change.)
    pub fn prune_socket_sessions(&self, max_age_ms: i64) -> Result<usize, TeamsError> {
        Ok(self.db()?.execute(
            "DELETE FROM socket_sessions WHERE updated_ms < ?1",
            params![now_ms().saturating_sub(max_age_ms)],
        )?)
    }

    fn db(&self) -> Result<std::sync::MutexGuard<'_, Connection>, TeamsError> {
        self.conn
            .lock()
            .map_err(|_| TeamsError::Invalid("teams database lock poisoned".into()))
    }

    /// Whether any user exists (then every client must present a token). Cached for a second.
    pub fn users_exist(&self) -> bool {
        let cached = self.shared.users_exist.load(Ordering::Relaxed);
        if cached >= 0
            && now_ms() - self.shared.checked_at_ms.load(Ordering::Relaxed) < USERS_EXIST_TTL_MS
        {
            return cached == 1;
        }
        let exists = self
            .db()
            .and_then(|c| {
                c.query_row("SELECT EXISTS (SELECT 1 FROM users)", [], |r| {
                    r.get::<_, bool>(0)
                })
                .map_err(TeamsError::from)
            })
            // if the database cannot answer, fail closed
            .unwrap_or(true);
        self.shared
            .users_exist
            .store(i64::from(exists), Ordering::Relaxed);
        self.shared.checked_at_ms.store(now_ms(), Ordering::Relaxed);
        exists
    }

    /// Whether any user exists, asked of the database now (not the cached answer).
    pub fn users_exist_now(&self) -> bool {
        self.forget_users_exist();
        self.users_exist()
    }

    /// SQLite's `data_version`: it changes when another connection (another process, such as
    /// the `cmem user|token|workspace` commands) commits to the database. (Changes a cluster
    /// node applies from its team log are counted by [`Teams::access_changes`].)
    pub fn data_version(&self) -> Result<i64, TeamsError> {
        Ok(self
            .db()?
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// Who holds the token with this id now, by id (as connections remember it).
    pub fn token_holder(&self, token_id: &str) -> Result<TokenHolder, TeamsError> {
        let row: Option<(String, Option<String>)> = self
            .db()?
            .query_row(
                "SELECT user, revoked_at FROM tokens WHERE id = ?1",
                [token_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            None => Ok(TokenHolder::Gone),
            Some((_, Some(_))) => Ok(TokenHolder::Revoked),
            Some((user, None)) => Ok(self
                .user(&user)?
                .map_or(TokenHolder::Gone, TokenHolder::Active)),
        }
    }

    fn forget_users_exist(&self) {
        self.shared.users_exist.store(-1, Ordering::Relaxed);
    }

    pub fn add_user(&self, name: &str, admin: bool) -> Result<User, TeamsError> {
        check_name("user", name)?;
        let created_at = now();
        let id = format!("u{}", random_hex(8)?);
        self.commit(Check::Checked, &|db| {
            if exists(db, "SELECT 1 FROM users WHERE name = ?1", &[name])? {
                return Err(TeamsError::Exists(format!("user `{name}` already exists")));
            }
            Ok(Change::AddUser {
                name: name.into(),
                admin,
                at: created_at.clone(),
                id: Some(id.clone()),
            })
        })?;
        Ok(User {
            id,
            name: name.into(),
            admin,
            created_at,
            workspaces: Vec::new(),
        })
    }

    /// Removes a user with their tokens and memberships. The last admin is refused
    /// ([`TeamsError::Conflict`]) unless `allow_last_admin`: without an admin nobody can manage
    /// the team over HTTP, and a server bound beyond loopback left with no users refuses
    /// everyone (`auth::identify`).
    /// Returns the user as they were (their id keys what must be forgotten with them).
    pub fn remove_user(&self, name: &str, allow_last_admin: bool) -> Result<User, TeamsError> {
        let before = self
            .user(name)?
            .ok_or_else(|| TeamsError::NotFound(format!("no user `{name}`")))?;
        self.commit(Check::Checked, &|db| {
            let admin: Option<bool> = db
                .query_row("SELECT admin FROM users WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?;
            let Some(admin) = admin else {
                return Err(TeamsError::NotFound(format!("no user `{name}`")));
            };
            let admins: i64 =
                db.query_row("SELECT COUNT(*) FROM users WHERE admin", [], |r| r.get(0))?;
            if admin && admins <= 1 && !allow_last_admin {
                return Err(TeamsError::Conflict(format!(
                    "`{name}` is the last admin; create another admin first (without one nobody can manage users, tokens and workspaces over HTTP)"
                )));
            }
            Ok(Change::RemoveUser { name: name.into() })
        })?;
        Ok(before)
    }

    pub fn user(&self, name: &str) -> Result<Option<User>, TeamsError> {
        let db = self.db()?;
        let row: Option<(bool, String, Option<String>)> = db
            .query_row(
                "SELECT admin, created_at, id FROM users WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((admin, created_at, id)) = row else {
            return Ok(None);
        };
        let workspaces = memberships(&db, name)?;
        Ok(Some(User {
            id: id.unwrap_or_else(|| store::legacy_user_id(name, &created_at)),
            name: name.into(),
            admin,
            created_at,
            workspaces,
        }))
    }

    pub fn users(&self) -> Result<Vec<User>, TeamsError> {
        let db = self.db()?;
        let mut stmt = db.prepare("SELECT name, admin, created_at, id FROM users ORDER BY name")?;
        let rows: Vec<(String, bool, String, Option<String>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(name, admin, created_at, id)| {
                let workspaces = memberships(&db, &name)?;
                Ok(User {
                    id: id.unwrap_or_else(|| store::legacy_user_id(&name, &created_at)),
                    name,
                    admin,
                    created_at,
                    workspaces,
                })
            })
            .collect()
    }

    /// Creates a token for `user`; the returned secret is not stored anywhere.
    pub fn create_token(&self, user: &str, label: Option<&str>) -> Result<NewToken, TeamsError> {
        if let Some(l) = label
            && (l.chars().count() > MAX_TOKEN_LABEL || l.chars().any(char::is_control))
        {
            return Err(TeamsError::Invalid(format!(
                "a token label is at most {MAX_TOKEN_LABEL} characters, without control characters"
            )));
        }
        if self.user(user)?.is_none() {
            return Err(TeamsError::NotFound(format!(
                "no user `{user}`; create it first with `cmem user add {user}`"
            )));
        }
        let id = random_hex(4)?;
        let token = format!("cm_{id}_{}", random_hex(32)?);
        let at = now();
        self.commit(Check::Checked, &|db| {
            if !exists(db, "SELECT 1 FROM users WHERE name = ?1", &[user])? {
                return Err(TeamsError::NotFound(format!("no user `{user}`")));
            }
            if exists(db, "SELECT 1 FROM tokens WHERE id = ?1", &[&id])? {
                return Err(TeamsError::Exists(format!(
                    "token id `{id}` is taken; try again"
                )));
            }
            Ok(Change::AddToken {
                id: id.clone(),
                user: user.into(),
                hash: store::hex(&token_hash(&token)),
                label: label.map(str::to_string),
                at: at.clone(),
            })
        })?;
        Ok(NewToken {
            id,
            user: user.into(),
            token,
        })
    }

    /// Revokes a token by its id (the part after `cm_`, also shown by `tokens`).
    pub fn revoke_token(&self, id: &str) -> Result<(), TeamsError> {
        let at = now();
        self.commit(Check::Checked, &|db| {
            if !exists(
                db,
                "SELECT 1 FROM tokens WHERE id = ?1 AND revoked_at IS NULL",
                &[id],
            )? {
                return Err(TeamsError::NotFound(format!(
                    "no active token with id `{id}`"
                )));
            }
            Ok(Change::RevokeToken {
                id: id.into(),
                at: at.clone(),
            })
        })?;
        Ok(())
    }

    pub fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenInfo>, TeamsError> {
        let db = self.db()?;
        let mut stmt = db.prepare(
            "SELECT id, user, label, created_at, revoked_at, last_used_at FROM tokens
             WHERE ?1 IS NULL OR user = ?1 ORDER BY created_at",
        )?;
        let rows = stmt
            .query_map([user], |r| {
                Ok(TokenInfo {
                    id: r.get(0)?,
                    user: r.get(1)?,
                    label: r.get(2)?,
                    created_at: r.get(3)?,
                    revoked_at: r.get(4)?,
                    last_used_at: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Who holds `token` (and the token's id), or why nobody does.
    pub fn authenticate(&self, token: &str) -> Result<(User, String), auth::AuthError> {
        let internal = |e: TeamsError| auth::AuthError::Unavailable(e.to_string());
        let db = self.db().map_err(internal)?;
        let row: Option<(String, String, Option<String>)> = db
            .query_row(
                "SELECT id, user, revoked_at FROM tokens WHERE hash = ?1",
                [token_hash(token)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| internal(e.into()))?;
        let Some((id, user, revoked)) = row else {
            return Err(auth::AuthError::Unknown);
        };
        if revoked.is_some() {
            return Err(auth::AuthError::Revoked(id));
        }
        // Best effort, and at most once a minute per token: every request and every poll
        // authenticates, and a durable write each time would cost an fsync per request.
        // (RFC 3339 times in one format compare as text.)
        let stale = crate::clock::rfc3339(chrono::Utc::now() - chrono::Duration::seconds(60));
        let _ = db.execute(
            "UPDATE tokens SET last_used_at = ?2
             WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?3)",
            params![id, now(), stale],
        );
        drop(db);
        let user = self
            .user(&user)
            .map_err(internal)?
            .ok_or(auth::AuthError::Unknown)?;
        Ok((user, id))
    }

    pub fn create_workspace(&self, name: &str) -> Result<Workspace, TeamsError> {
        check_name("workspace", name)?;
        let created_at = now();
        self.commit(Check::Checked, &|db| {
            if exists(db, "SELECT 1 FROM workspaces WHERE name = ?1", &[name])? {
                return Err(TeamsError::Exists(format!(
                    "workspace `{name}` already exists"
                )));
            }
            Ok(Change::CreateWorkspace {
                name: name.into(),
                at: created_at.clone(),
            })
        })?;
        Ok(Workspace {
            name: name.into(),
            created_at,
            members: Vec::new(),
        })
    }

    pub fn workspace(&self, name: &str) -> Result<Option<Workspace>, TeamsError> {
        let db = self.db()?;
        let created_at: Option<String> = db
            .query_row(
                "SELECT created_at FROM workspaces WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        let Some(created_at) = created_at else {
            return Ok(None);
        };
        let mut stmt = db.prepare("SELECT user FROM members WHERE workspace = ?1 ORDER BY user")?;
        let members = stmt
            .query_map([name], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(Some(Workspace {
            name: name.into(),
            created_at,
            members,
        }))
    }

    pub fn workspaces(&self) -> Result<Vec<Workspace>, TeamsError> {
        let names: Vec<String> = {
            let db = self.db()?;
            let mut stmt = db.prepare("SELECT name FROM workspaces ORDER BY name")?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        Ok(names
            .iter()
            .filter_map(|n| self.workspace(n).ok().flatten())
            .collect())
    }

    pub fn add_member(&self, workspace: &str, user: &str) -> Result<(), TeamsError> {
        let at = now();
        self.commit(Check::Checked, &|db| {
            if !exists(db, "SELECT 1 FROM workspaces WHERE name = ?1", &[workspace])? {
                return Err(TeamsError::NotFound(format!(
                    "no workspace `{workspace}`; create it first with `cmem workspace create {workspace}`"
                )));
            }
            if !exists(db, "SELECT 1 FROM users WHERE name = ?1", &[user])? {
                return Err(TeamsError::NotFound(format!("no user `{user}`")));
            }
            if exists(
                db,
                "SELECT 1 FROM members WHERE workspace = ?1 AND user = ?2",
                &[workspace, user],
            )? {
                return Err(TeamsError::Exists(format!(
                    "`{user}` is already a member of `{workspace}`"
                )));
            }
            Ok(Change::AddMember {
                workspace: workspace.into(),
                user: user.into(),
                at: at.clone(),
            })
        })?;
        Ok(())
    }

    pub fn remove_member(&self, workspace: &str, user: &str) -> Result<(), TeamsError> {
        self.commit(Check::Checked, &|db| {
            if !exists(
                db,
                "SELECT 1 FROM members WHERE workspace = ?1 AND user = ?2",
                &[workspace, user],
            )? {
                return Err(TeamsError::NotFound(format!(
                    "`{user}` is not a member of `{workspace}`"
                )));
            }
            Ok(Change::RemoveMember {
                workspace: workspace.into(),
                user: user.into(),
            })
        })?;
        Ok(())
    }

    pub fn is_member(&self, workspace: &str, user: &str) -> Result<bool, TeamsError> {
        Ok(self.db()?.query_row(
            "SELECT EXISTS (SELECT 1 FROM members WHERE workspace = ?1 AND user = ?2)",
            params![workspace, user],
            |r| r.get(0),
        )?)
    }
}

/// Whether `sql` (a `SELECT 1 …`) finds a row.
fn exists(db: &Connection, sql: &str, args: &[&str]) -> Result<bool, TeamsError> {
    Ok(db
        .query_row(sql, rusqlite::params_from_iter(args), |_| Ok(()))
        .optional()?
        .is_some())
}

fn memberships(db: &Connection, user: &str) -> Result<Vec<String>, TeamsError> {
    let mut stmt =
        db.prepare("SELECT workspace FROM members WHERE user = ?1 ORDER BY workspace")?;
    let rows = stmt
        .query_map([user], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests;
