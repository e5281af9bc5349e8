//! Who may do what: users, their bearer tokens, workspaces and who belongs to which — the
//! access control every transport and the HTTP API consult before a client sees or sends
//! anything. `auth.rs` turns a request's token into an [`auth::Identity`] and an identity into
//! scopes; `live.rs` keeps live connections in step with these rows whoever changes them.
//!
//! Tokens are 32 random bytes shown once (`cm_<id>_<secret>`); only their SHA-256 is stored.
//! A token is random, not a password, so a fast hash is the right one: there is nothing to
//! guess that a slow hash would protect.

pub mod auth;
pub mod live;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rusqlite::{OptionalExtension, params};

use crate::teams::store::{Change, Check};
use crate::teams::{
    MAX_TOKEN_LABEL, NewToken, TeamStore, TeamsError, TokenHolder, TokenInfo, USERS_EXIST_TTL_MS,
    User, Workspace, check_name, exists, memberships, now, now_ms, random_hex, token_hash,
};

/// The access rows of the team store, and the operations on them. A handle: clones share the
/// store.
#[derive(Clone)]
pub struct Access {
    store: Arc<TeamStore>,
}

impl Access {
    pub fn new(store: Arc<TeamStore>) -> Access {
        Access { store }
    }

    /// The team store beneath.
    pub fn store(&self) -> &Arc<TeamStore> {
        &self.store
    }

    /// Keeps the workspaces Socket.IO session `sid` receives now (after a join or a leave).
    pub fn save_socket_workspaces(
        &self,
        sid: &str,
        workspaces: &[String],
    ) -> Result<(), TeamsError> {
        let ms = now_ms();
        self.store.commit(Check::Blind, &|_| {
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
            .store
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
        Ok(self.store.db()?.execute(
            "DELETE FROM socket_sessions WHERE updated_ms < ?1",
            params![now_ms().saturating_sub(max_age_ms)],
        )?)
    }

    /// Whether any user exists (then every client must present a token). Cached for a second.
    pub fn users_exist(&self) -> bool {
        let cached = self.store.shared().users_exist.load(Ordering::Relaxed);
        if cached >= 0
            && now_ms() - self.store.shared().checked_at_ms.load(Ordering::Relaxed)
                < USERS_EXIST_TTL_MS
        {
            return cached == 1;
        }
        let exists = self
            .store
            .db()
            .and_then(|c| {
                c.query_row("SELECT EXISTS (SELECT 1 FROM users)", [], |r| {
                    r.get::<_, bool>(0)
                })
                .map_err(TeamsError::from)
            })
            // if the database cannot answer, fail closed
            .unwrap_or(true);
        self.store
            .shared()
            .users_exist
            .store(i64::from(exists), Ordering::Relaxed);
        self.store
            .shared()
            .checked_at_ms
            .store(now_ms(), Ordering::Relaxed);
        exists
    }

    /// Whether any user exists, asked of the database now (not the cached answer).
    pub fn users_exist_now(&self) -> bool {
        self.store.forget_users_exist();
        self.users_exist()
    }

    /// Who holds the token with this id now, by id (as connections remember it).
    pub fn token_holder(&self, token_id: &str) -> Result<TokenHolder, TeamsError> {
        let row: Option<(String, Option<String>)> = self
            .store
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

    pub fn add_user(&self, name: &str, admin: bool) -> Result<User, TeamsError> {
        check_name("user", name)?;
        let created_at = now();
        let id = format!("u{}", random_hex(8)?);
        self.store.commit(Check::Checked, &|db| {
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
        self.store.commit(Check::Checked, &|db| {
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
        let db = self.store.db()?;
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
            id: id.unwrap_or_else(|| crate::teams::store::legacy_user_id(name, &created_at)),
            name: name.into(),
            admin,
            created_at,
            workspaces,
        }))
    }

    pub fn users(&self) -> Result<Vec<User>, TeamsError> {
        let db = self.store.db()?;
        let mut stmt = db.prepare("SELECT name, admin, created_at, id FROM users ORDER BY name")?;
        let rows: Vec<(String, bool, String, Option<String>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(name, admin, created_at, id)| {
                let workspaces = memberships(&db, &name)?;
                Ok(User {
                    id: id
                        .unwrap_or_else(|| crate::teams::store::legacy_user_id(&name, &created_at)),
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
        self.store.commit(Check::Checked, &|db| {
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
                hash: crate::teams::store::hex(&token_hash(&token)),
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
        self.store.commit(Check::Checked, &|db| {
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
        let db = self.store.db()?;
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
        let db = self.store.db().map_err(internal)?;
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
        self.store.commit(Check::Checked, &|db| {
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
        let db = self.store.db()?;
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
            let db = self.store.db()?;
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
        self.store.commit(Check::Checked, &|db| {
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
        self.store.commit(Check::Checked, &|db| {
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
        Ok(self.store.db()?.query_row(
            "SELECT EXISTS (SELECT 1 FROM members WHERE workspace = ?1 AND user = ?2)",
            params![workspace, user],
            |r| r.get(0),
        )?)
    }
}
