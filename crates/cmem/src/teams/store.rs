//! Where team state is kept, and how a change reaches it: the team store's one interface.
//!
//! Every write to team state (a user added, a token revoked, a message stored, a document
//! update, …) is a [`Change`], and [`apply`] is the only code that turns a change into rows.
//! `apply` is deterministic: the same changes applied in the same order to an empty database
//! give the same rows, ids included. That is what lets one interface have two stores:
//!
//! - **Local** (one node, the default): a change is made and applied in one SQLite transaction
//!   on `teams.sqlite3`, nothing else.
//! - **Cluster** ([`super::cluster`], NATS JetStream): a change is appended to a replicated
//!   stream, and every node (and every `cmem user|token|workspace` run) applies the stream in
//!   order to its own SQLite copy, `teams.cluster.sqlite3`. The copy is a view, rebuilt from the
//!   stream when it is missing or belongs to another stream; reads stay local and fast.
//!
//! A write that depends on the state (a user must not exist yet, a token must be active, a
//! message's `client_msg_id` must be new) is [`Check::Checked`]: in cluster mode it is
//! appended only if the stream has not moved since the state it was checked against (optimistic
//! concurrency on the stream's last sequence), else the node catches up and checks again. So two
//! nodes cannot both create user `alice`, and a retried message is stored once cluster-wide.
//! Writes that cannot conflict (a notification, a document update) are [`Check::Blind`].
//!
//! Rows that `apply` creates with an id (messages, notifications) get the change's position in
//! the stream as their id in cluster mode, the SQLite rowid locally.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::TeamsError;

/// One write to team state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    AddUser {
        name: String,
        admin: bool,
        at: String,
        /// The user's id, never reused (history and the user's event scope are keyed by it).
        /// Changes written before ids existed have none: [`legacy_user_id`] derives one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Removes the user with their tokens and memberships.
    RemoveUser {
        name: String,
    },
    AddToken {
        id: String,
        user: String,
        /// The SHA-256 of the token, hex (never the token).
        hash: String,
        label: Option<String>,
        at: String,
    },
    RevokeToken {
        id: String,
        at: String,
    },
    CreateWorkspace {
        name: String,
        at: String,
    },
    AddMember {
        workspace: String,
        user: String,
        at: String,
    },
    RemoveMember {
        workspace: String,
        user: String,
    },
    Message {
        workspace: String,
        user: String,
        text: String,
        client_msg_id: Option<String>,
        ts: String,
    },
    /// Forgets a message that could not be published.
    Unmessage {
        id: i64,
    },
    /// Records the journal id a message was published under.
    MessageEvent {
        id: i64,
        event_id: u64,
    },
    Notification {
        workspace: String,
        sender: String,
        title: String,
        body: String,
        level: String,
        ts: String,
    },
    DocUpdate {
        workspace: String,
        doc: String,
        /// The Yjs update, base64.
        data: String,
    },
    /// The workspaces a Socket.IO session receives after a join or a leave (for recovery on
    /// any node).
    SocketWorkspaces {
        sid: String,
        workspaces: Vec<String>,
        ms: i64,
    },
    /// The users, tokens, workspaces and members of a single node's `teams.sqlite3`, carried
    /// into an empty cluster by the first node that joins it.
    Import {
        users: Vec<(String, bool, String)>,
        tokens: Vec<ImportedToken>,
        workspaces: Vec<(String, String)>,
        /// workspace, user, added
        members: Vec<(String, String, String)>,
        /// user name, id (absent in imports written before ids existed)
        #[serde(default)]
        user_ids: Vec<(String, String)>,
    },
}

/// A token carried by [`Change::Import`]: id, user, hash (hex), label, created, revoked.
pub type ImportedToken = (
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
);

/// Whether a change depends on the state it was made from (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Check {
    Checked,
    Blind,
}

/// What a cluster node has applied, for the caches and watchers above the store.
#[derive(Debug, Default)]
pub struct Effects {
    /// Users, tokens or memberships changed: live connections must be checked again.
    pub access: bool,
    /// Documents changed: (workspace, document). A loaded copy may lack the change (it came
    /// from another node), so it is dropped and reloaded from the applied rows.
    pub docs: Vec<(String, String)>,
}

impl Effects {
    pub fn note(&mut self, change: &Change) {
        match change {
            Change::AddUser { .. }
            | Change::RemoveUser { .. }
            | Change::AddToken { .. }
            | Change::RevokeToken { .. }
            | Change::AddMember { .. }
            | Change::RemoveMember { .. }
            | Change::Import { .. } => self.access = true,
            Change::DocUpdate { workspace, doc, .. } => {
                self.docs.push((workspace.clone(), doc.clone()));
            }
            _ => {}
        }
    }
}

/// The id of a user made before users had ids: derived from the name and the creation time,
/// the same on every node (a name reused later has another creation time, so another id).
pub(crate) fn legacy_user_id(name: &str, created_at: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{name}\n{created_at}").as_bytes());
    format!("u{}", hex(&digest[..8]))
}

/// Brings an older database to the current schema: users get an `id` column, filled for the
/// users already there.
pub(crate) fn migrate(db: &Connection) -> Result<(), TeamsError> {
    let has_id: bool = db.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('users') WHERE name = 'id')",
        [],
        |r| r.get(0),
    )?;
    if !has_id {
        db.execute_batch("ALTER TABLE users ADD COLUMN id TEXT")?;
    }
    let missing: Vec<(String, String)> = db
        .prepare("SELECT name, created_at FROM users WHERE id IS NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (name, at) in missing {
        db.execute(
            "UPDATE users SET id = ?2 WHERE name = ?1",
            params![name, legacy_user_id(&name, &at)],
        )?;
    }
    db.execute_batch("CREATE UNIQUE INDEX IF NOT EXISTS users_id ON users(id)")?;
    Ok(())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| s.get(2 * i..2 * i + 2))
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect()
}

/// The schema of team state, local or a cluster view.
pub(crate) const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA foreign_keys = ON;
    PRAGMA busy_timeout = 5000;
    CREATE TABLE IF NOT EXISTS users (
        name TEXT PRIMARY KEY,
        admin INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        id TEXT
    );
    CREATE TABLE IF NOT EXISTS tokens (
        id TEXT PRIMARY KEY,
        user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        hash BLOB NOT NULL UNIQUE,
        label TEXT,
        created_at TEXT NOT NULL,
        revoked_at TEXT,
        last_used_at TEXT
    );
    CREATE TABLE IF NOT EXISTS workspaces (
        name TEXT PRIMARY KEY,
        created_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS members (
        workspace TEXT NOT NULL REFERENCES workspaces(name) ON DELETE CASCADE,
        user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        added_at TEXT NOT NULL,
        PRIMARY KEY (workspace, user)
    );
    -- no foreign keys: an open server has workspaces that exist only by name, and
    -- history outlives the users who wrote it
    CREATE TABLE IF NOT EXISTS messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        workspace TEXT NOT NULL,
        user TEXT NOT NULL,
        text TEXT NOT NULL,
        client_msg_id TEXT,
        ts TEXT NOT NULL,
        event_id INTEGER,
        UNIQUE (workspace, user, client_msg_id)
    );
    CREATE INDEX IF NOT EXISTS messages_by_workspace ON messages(workspace, id);
    CREATE TABLE IF NOT EXISTS notifications (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        workspace TEXT NOT NULL,
        sender TEXT NOT NULL,
        title TEXT NOT NULL,
        body TEXT NOT NULL,
        level TEXT NOT NULL,
        ts TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS notifications_by_workspace ON notifications(workspace, id);
    CREATE TABLE IF NOT EXISTS doc_updates (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        workspace TEXT NOT NULL,
        doc TEXT NOT NULL,
        data BLOB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS doc_updates_by_doc ON doc_updates(workspace, doc, seq);
    -- the workspaces a Socket.IO session joined or left after its handshake, so that
    -- connection state recovery restores them (also after a restart)
    CREATE TABLE IF NOT EXISTS socket_sessions (
        sid TEXT PRIMARY KEY,
        workspaces TEXT NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    -- what a cluster view has applied of which stream (unused on a single node)
    CREATE TABLE IF NOT EXISTS store_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );";

/// The tables [`wipe`] empties: everything a change can write.
const TABLES: [&str; 9] = [
    "members",
    "tokens",
    "users",
    "workspaces",
    "messages",
    "notifications",
    "doc_updates",
    "socket_sessions",
    "store_meta",
];

/// Empties every table (a cluster view about to be rebuilt from its stream).
pub(crate) fn wipe(db: &Connection) -> rusqlite::Result<()> {
    for t in TABLES {
        db.execute(&format!("DELETE FROM {t}"), [])?;
    }
    Ok(())
}

pub(crate) fn meta(db: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    db.query_row("SELECT value FROM store_meta WHERE key = ?1", [key], |r| {
        r.get(0)
    })
    .optional()
}

pub(crate) fn set_meta(db: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    db.execute(
        "INSERT INTO store_meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// Applies one change. `id` is the change's position in a cluster's stream (the id of the row
/// it makes), `None` on a single node (the rowid is the id). Returns the id of the message or
/// notification made, else 0.
///
/// Never refuses: whether a change is allowed was decided before it was committed. A change
/// that no longer fits (a member whose user is gone) changes nothing.
pub fn apply(db: &Connection, id: Option<i64>, change: &Change) -> Result<i64, TeamsError> {
    match change {
        Change::AddUser {
            name,
            admin,
            at,
            id: uid,
        } => {
            let uid = uid.clone().unwrap_or_else(|| legacy_user_id(name, at));
            db.execute(
                "INSERT OR IGNORE INTO users (name, admin, created_at, id) VALUES (?1, ?2, ?3, ?4)",
                params![name, admin, at, uid],
            )?;
        }
        Change::RemoveUser { name } => {
            db.execute("DELETE FROM users WHERE name = ?1", [name])?;
        }
        Change::AddToken {
            id: tid,
            user,
            hash,
            label,
            at,
        } => {
            db.execute(
                "INSERT OR IGNORE INTO tokens (id, user, hash, label, created_at)
                 SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM users WHERE name = ?2)",
                params![tid, user, unhex(hash), label, at],
            )?;
        }
        Change::RevokeToken { id: tid, at } => {
            db.execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![tid, at],
            )?;
        }
        Change::CreateWorkspace { name, at } => {
            db.execute(
                "INSERT OR IGNORE INTO workspaces (name, created_at) VALUES (?1, ?2)",
                params![name, at],
            )?;
        }
        Change::AddMember {
            workspace,
            user,
            at,
        } => {
            db.execute(
                "INSERT OR IGNORE INTO members (workspace, user, added_at)
                 SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM users WHERE name = ?2)
                   AND EXISTS (SELECT 1 FROM workspaces WHERE name = ?1)",
                params![workspace, user, at],
            )?;
        }
        Change::RemoveMember { workspace, user } => {
            db.execute(
                "DELETE FROM members WHERE workspace = ?1 AND user = ?2",
                params![workspace, user],
            )?;
        }
        Change::Message {
            workspace,
            user,
            text,
            client_msg_id,
            ts,
        } => {
            let n = db.execute(
                "INSERT OR IGNORE INTO messages (id, workspace, user, text, client_msg_id, ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, workspace, user, text, client_msg_id, ts],
            )?;
            return Ok(if n == 0 { 0 } else { db.last_insert_rowid() });
        }
        Change::Unmessage { id: mid } => {
            db.execute("DELETE FROM messages WHERE id = ?1", [mid])?;
        }
        Change::MessageEvent { id: mid, event_id } => {
            db.execute(
                "UPDATE messages SET event_id = ?2 WHERE id = ?1",
                params![mid, *event_id as i64],
            )?;
        }
        Change::Notification {
            workspace,
            sender,
            title,
            body,
            level,
            ts,
        } => {
            db.execute(
                "INSERT OR IGNORE INTO notifications (id, workspace, sender, title, body, level, ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![id, workspace, sender, title, body, level, ts],
            )?;
            return Ok(db.last_insert_rowid());
        }
        Change::DocUpdate {
            workspace,
            doc,
            data,
        } => {
            let bytes = B64
                .decode(data)
                .map_err(|_| TeamsError::Invalid("document update is not base64".into()))?;
            db.execute(
                "INSERT INTO doc_updates (workspace, doc, data) VALUES (?1, ?2, ?3)",
                params![workspace, doc, bytes],
            )?;
            super::fold::compact_stored(db, workspace, doc)?;
        }
        Change::SocketWorkspaces {
            sid,
            workspaces,
            ms,
        } => {
            let list = serde_json::to_string(workspaces)
                .map_err(|e| TeamsError::Invalid(format!("workspace list: {e}")))?;
            db.execute(
                "INSERT INTO socket_sessions (sid, workspaces, updated_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (sid) DO UPDATE SET workspaces = excluded.workspaces, updated_ms = excluded.updated_ms",
                params![sid, list, ms],
            )?;
        }
        Change::Import {
            users,
            tokens,
            workspaces,
            members,
            user_ids,
        } => {
            for (name, admin, at) in users {
                let id = user_ids
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, id)| id.clone());
                apply(
                    db,
                    None,
                    &Change::AddUser {
                        name: name.clone(),
                        admin: *admin,
                        at: at.clone(),
                        id,
                    },
                )?;
            }
            for (tid, user, hash, label, at, revoked) in tokens {
                db.execute(
                    "INSERT OR IGNORE INTO tokens (id, user, hash, label, created_at, revoked_at)
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM users WHERE name = ?2)",
                    params![tid, user, unhex(hash), label, at, revoked],
                )?;
            }
            for (name, at) in workspaces {
                apply(
                    db,
                    None,
                    &Change::CreateWorkspace {
                        name: name.clone(),
                        at: at.clone(),
                    },
                )?;
            }
            for (workspace, user, at) in members {
                apply(
                    db,
                    None,
                    &Change::AddMember {
                        workspace: workspace.clone(),
                        user: user.clone(),
                        at: at.clone(),
                    },
                )?;
            }
        }
    }
    Ok(0)
}

/// What a single node's `teams.sqlite3` holds of access control, as one change (`None` when it
/// holds no user and no workspace).
pub(crate) fn export(db: &Connection) -> Result<Option<Change>, TeamsError> {
    let users: Vec<(String, bool, String)> = db
        .prepare("SELECT name, admin, created_at FROM users ORDER BY name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let workspaces: Vec<(String, String)> = db
        .prepare("SELECT name, created_at FROM workspaces ORDER BY name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    if users.is_empty() && workspaces.is_empty() {
        return Ok(None);
    }
    let user_ids = db
        .prepare("SELECT name, id FROM users WHERE id IS NOT NULL ORDER BY name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let tokens = db
        .prepare("SELECT id, user, hash, label, created_at, revoked_at FROM tokens ORDER BY id")?
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                hex(&r.get::<_, Vec<u8>>(2)?),
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let members = db
        .prepare("SELECT workspace, user, added_at FROM members ORDER BY workspace, user")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(Some(Change::Import {
        users,
        tokens,
        workspaces,
        members,
        user_ids,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        migrate(&c).unwrap();
        c
    }

    /// The same changes in the same order give the same rows, ids included, on every copy.
    #[test]
    fn applying_is_deterministic() {
        let changes = [
            Change::AddUser {
                name: "alice".into(),
                admin: true,
                at: "t0".into(),
                id: Some("u1".into()),
            },
            // written before users had ids
            Change::AddUser {
                name: "bob".into(),
                admin: false,
                at: "t0".into(),
                id: None,
            },
            Change::AddToken {
                id: "ab".into(),
                user: "alice".into(),
                hash: hex(&[1, 2, 255]),
                label: None,
                at: "t1".into(),
            },
            Change::CreateWorkspace {
                name: "eng".into(),
                at: "t2".into(),
            },
            Change::AddMember {
                workspace: "eng".into(),
                user: "alice".into(),
                at: "t3".into(),
            },
            // a member whose user does not exist changes nothing (and fails nothing)
            Change::AddMember {
                workspace: "eng".into(),
                user: "ghost".into(),
                at: "t3".into(),
            },
            Change::Message {
                workspace: "eng".into(),
                user: "alice".into(),
                text: "hi".into(),
                client_msg_id: Some("c1".into()),
                ts: "t4".into(),
            },
        ];
        let dump = |c: &Connection| -> Vec<String> {
            let mut out = Vec::new();
            for q in [
                "SELECT name || admin || created_at FROM users",
                "SELECT id || user || hex(hash) FROM tokens",
                "SELECT workspace || user FROM members",
                "SELECT id || text FROM messages",
            ] {
                let mut s = c.prepare(q).unwrap();
                out.extend(
                    s.query_map([], |r| r.get::<_, String>(0))
                        .unwrap()
                        .map(|r| r.unwrap()),
                );
            }
            out
        };
        let (a, b) = (db(), db());
        for (i, ch) in changes.iter().enumerate() {
            let back: Change = serde_json::from_str(&serde_json::to_string(ch).unwrap()).unwrap();
            assert_eq!(&back, ch);
            apply(&a, Some(i as i64 + 10), ch).unwrap();
            apply(&b, Some(i as i64 + 10), &back).unwrap();
        }
        assert_eq!(dump(&a), dump(&b));
        assert_eq!(
            dump(&a),
            ["alice1t0", "bob0t0", "abalice0102FF", "engalice", "16hi"]
        );
        // a user's id is the change's, or derived from name and time for older changes
        let ids = |c: &Connection| -> Vec<String> {
            c.prepare("SELECT id FROM users ORDER BY name")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        };
        assert_eq!(ids(&a), ["u1".to_string(), legacy_user_id("bob", "t0")]);
        assert_eq!(ids(&b), ids(&a));
        // a retried message (same client_msg_id) makes no second row
        assert_eq!(apply(&a, Some(99), &changes[6]).unwrap(), 0);
        // the import of a node's state gives the same access rows, ids included
        let c = db();
        apply(&c, None, &export(&a).unwrap().unwrap()).unwrap();
        assert_eq!(dump(&c)[..4], dump(&a)[..4]);
        assert_eq!(ids(&c), ids(&a));
        assert!(export(&db()).unwrap().is_none());
    }
}
