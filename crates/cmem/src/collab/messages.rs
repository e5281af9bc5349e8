//! Team messages: a producer. A message is stored in the team store (the history that
//! `GET /api/workspaces/{ws}/messages` pages through) and published as `team_message` in the
//! workspace's scope, so members receive it live or when they resume.
//!
//! A client that retries (its ack was lost, it reconnected) sends the same `client_msg_id`;
//! the retry returns the stored message and publishes nothing, so nobody sees it twice —
//! unless the message was stored and never published (the attempt that stored it could not
//! publish it, nor take it back, or the process stopped between the two): then the retry
//! publishes it, so no message stays in the history that its members never received live.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde_json::json;

use super::Collab;
use crate::access::auth::{Identity, LOCAL_USER, check_access};
use crate::envelope::{NewEvent, Scope};
use crate::hub::Hub;
use crate::teams::TeamsError;
use crate::teams::store::{Change, Check};

/// What storing a message found.
#[derive(Debug)]
pub(super) enum Stored {
    /// Stored now.
    New(Message),
    /// Stored before with this `client_msg_id`; `published`: its event is in the journal.
    Again { message: Message, published: bool },
}

impl Stored {
    /// The message, and whether it was there already.
    #[cfg(test)]
    pub(super) fn parts(self) -> (Message, bool) {
        match self {
            Stored::New(m) => (m, false),
            Stored::Again { message, .. } => (message, true),
        }
    }
}

/// A stored message.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Message {
    pub id: i64,
    pub workspace: String,
    pub user: String,
    pub text: String,
    pub client_msg_id: Option<String>,
    pub ts: String,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: r.get(0)?,
        workspace: r.get(1)?,
        user: r.get(2)?,
        text: r.get(3)?,
        client_msg_id: r.get(4)?,
        ts: r.get(5)?,
    })
}

const COLUMNS: &str = "id, workspace, user, text, client_msg_id, ts";

impl Collab {
    /// Stores a message unless one with the same `(workspace, user, client_msg_id)` exists;
    /// returns the message and whether it was already there.
    pub(super) fn store_message(
        &self,
        workspace: &str,
        user: &str,
        text: &str,
        client_msg_id: Option<&str>,
    ) -> Result<Stored, TeamsError> {
        let find = |db: &rusqlite::Connection| -> Result<Option<(Message, bool)>, TeamsError> {
            let Some(cid) = client_msg_id else {
                return Ok(None);
            };
            Ok(db
                .query_row(
                    &format!(
                        "SELECT {COLUMNS}, event_id IS NOT NULL FROM messages WHERE workspace = ?1 AND user = ?2 AND client_msg_id = ?3"
                    ),
                    params![workspace, user, cid],
                    |r| Ok((row(r)?, r.get::<_, bool>(6)?)),
                )
                .optional()?)
        };
        let ts = crate::teams::now();
        let change = Change::Message {
            workspace: workspace.into(),
            user: user.into(),
            text: text.into(),
            client_msg_id: client_msg_id.map(str::to_string),
            ts: ts.clone(),
        };
        // a retry (same client_msg_id) finds the stored message: refused, then answered below
        let check = if client_msg_id.is_some() {
            Check::Checked
        } else {
            Check::Blind
        };
        let committed = self.store.commit(check, &|db| match find(db)? {
            Some(_) => Err(TeamsError::Exists(String::new())),
            None => Ok(change.clone()),
        });
        let id = match committed {
            Ok(id) => id,
            Err(TeamsError::Exists(_)) => {
                let found = find(&*self.store.db()?)?;
                return found
                    .map(|(message, published)| Stored::Again { message, published })
                    .ok_or_else(|| {
                        TeamsError::Unavailable("message vanished; send it again".into())
                    });
            }
            Err(e) => return Err(e),
        };
        Ok(Stored::New(Message {
            id,
            workspace: workspace.into(),
            user: user.into(),
            text: text.into(),
            client_msg_id: client_msg_id.map(str::to_string),
            ts,
        }))
    }

    /// Marks message `id` as being published by this process; `None` when a send under way
    /// is publishing it already. The mark goes when the guard is dropped.
    fn claim_publishing(&self, id: i64) -> Option<Publishing<'_>> {
        let mut set = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        set.insert(id).then_some(Publishing { teams: self, id })
    }

    fn unstore_message(&self, id: i64) -> Result<(), TeamsError> {
        self.store
            .commit(Check::Blind, &|_| Ok(Change::Unmessage { id }))?;
        Ok(())
    }

    fn set_message_event(&self, id: i64, event_id: u64) -> Result<(), TeamsError> {
        self.store
            .commit(Check::Blind, &|_| Ok(Change::MessageEvent { id, event_id }))?;
        Ok(())
    }

    /// A page of a workspace's history, newest first: messages with an id below `before`.
    pub fn messages(
        &self,
        workspace: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Message>, TeamsError> {
        let db = self.store.db()?;
        let mut stmt = db.prepare(&format!(
            "SELECT {COLUMNS} FROM messages WHERE workspace = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = stmt
            .query_map(
                params![workspace, before.unwrap_or(i64::MAX), limit as i64],
                row,
            )?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

impl Collab {
    /// Spends one message from an HTTP sender's budget (per user; `local` on an open server).
    pub fn take_http_budget(&self, user: &str, per_s: u64) -> Result<(), TeamsError> {
        self.http_budgets.take(user, per_s, 1, "messages")
    }

    /// Spends `events` from a member's journal budget (`member_events_per_s`, per user id):
    /// every HTTP or MCP request of a member that appends to the journal asks first. Admins
    /// and the local user of an open server are not limited (they may do everything anyway).
    pub fn take_event_budget(
        &self,
        who: &Identity,
        events: u64,
        per_s: u64,
    ) -> Result<(), TeamsError> {
        match who {
            Identity::User { user, .. } if !user.admin => self.event_budgets.take(
                &user.id,
                per_s,
                events,
                "journal events (publishes and searches)",
            ),
            _ => Ok(()),
        }
    }
}

/// A message this process is publishing (see `Collab::claim_publishing`).
struct Publishing<'a> {
    teams: &'a Collab,
    id: i64,
}

impl Drop for Publishing<'_> {
    fn drop(&mut self) {
        let mut set = self
            .teams
            .publishing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        set.remove(&self.id);
    }
}

/// What a client sends.
pub struct Outgoing<'a> {
    pub workspace: &'a str,
    pub text: &'a str,
    pub client_msg_id: Option<&'a str>,
}

/// Checks, stores and publishes a message. Returns it and whether it was a retry.
pub async fn send(
    teams: &Collab,
    hub: &Hub,
    identity: &Identity,
    m: Outgoing<'_>,
) -> Result<(Message, bool), TeamsError> {
    check_access(teams.access(), identity, m.workspace)?;
    let text = m.text.trim();
    if text.is_empty() {
        return Err(TeamsError::Invalid("text is empty".into()));
    }
    let max = teams.message_max_chars();
    let chars = text.chars().count() as u64;
    if chars > max {
        return Err(TeamsError::Invalid(format!(
            "text has {chars} characters; at most {max} are allowed (team_message_max_chars)"
        )));
    }
    let cid = m.client_msg_id.filter(|c| !c.is_empty());
    if cid.is_some_and(|c| c.len() > 128) {
        return Err(TeamsError::Invalid(
            "client_msg_id is longer than 128 bytes".into(),
        ));
    }
    let user = identity.user_name().unwrap_or(LOCAL_USER);
    let (msg, again) = match teams.store_message(m.workspace, user, text, cid)? {
        Stored::New(msg) => (msg, false),
        Stored::Again {
            message,
            published: true,
        } => return Ok((message, true)),
        // stored and never published: this retry publishes it (below), unless the send that
        // stored it is still publishing
        Stored::Again {
            message,
            published: false,
        } => (message, true),
    };
    let Some(_claim) = teams.claim_publishing(msg.id) else {
        return Ok((msg, true));
    };
    // the same message published by two nodes of a cluster is stored once
    let event = NewEvent::new(
        "team_message",
        Scope::Workspace(msg.workspace.clone()),
        json!(msg),
    )
    .once_as(format!("team_message:{}:{}", msg.workspace, msg.id));
    match hub.publish(vec![event]).await {
        Ok(committed) => {
            if let Some(e) = committed.first()
                && let Err(err) = teams.set_message_event(msg.id, e.id)
            {
                // published all the same; a retry would publish it again, which the journal's
                // de-duplication absorbs only in a cluster
                tracing::error!(error = %err, message = msg.id, "could not record a message's event id");
            }
            Ok((msg, again))
        }
        Err(e) => {
            // not published, so not kept: the client's retry stores it again. Should taking it
            // back fail too, the retry finds it stored and unpublished and publishes it then.
            if let Err(err) = teams.unstore_message(msg.id) {
                tracing::error!(
                    error = %err,
                    message = msg.id,
                    "a message that could not be published could not be taken back either; a retry with its client_msg_id publishes it"
                );
            }
            Err(TeamsError::Unavailable(format!("message not sent: {e}")))
        }
    }
}

/// Levels a notification may have.
pub const LEVELS: [&str; 4] = ["info", "success", "warning", "error"];

/// A stored notification.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Notification {
    pub id: i64,
    pub workspace: String,
    pub from: String,
    pub title: String,
    pub body: String,
    pub level: String,
    pub ts: String,
}

/// What a sender gives.
pub struct NotificationIn<'a> {
    pub workspace: &'a str,
    pub title: &'a str,
    pub body: &'a str,
    pub level: Option<&'a str>,
}

impl Collab {
    pub(super) fn store_notification(&self, n: &Notification) -> Result<i64, TeamsError> {
        self.store.commit(Check::Blind, &|_| {
            Ok(Change::Notification {
                workspace: n.workspace.clone(),
                sender: n.from.clone(),
                title: n.title.clone(),
                body: n.body.clone(),
                level: n.level.clone(),
                ts: n.ts.clone(),
            })
        })
    }

    /// Notifications after `after` in the workspaces `from` names, oldest first: what a client
    /// that was away missed, even without a cursor into the journal.
    pub fn notifications(
        &self,
        from: Workspaces<'_>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Notification>, TeamsError> {
        // a list is passed as a JSON array for `json_each`; an unencodable one matches nothing
        let only = match from {
            Workspaces::Every => None,
            Workspaces::Only(ws) => Some(serde_json::to_string(ws).unwrap_or_else(|_| "[]".into())),
        };
        let db = self.store.db()?;
        let mut stmt = db.prepare(
            "SELECT id, workspace, sender, title, body, level, ts FROM notifications
             WHERE id > ?1 AND (?3 IS NULL OR workspace IN (SELECT value FROM json_each(?3)))
             ORDER BY id LIMIT ?2",
        )?;
        let rows: Vec<Notification> = stmt
            .query_map(params![after, limit as i64, only], |r| {
                Ok(Notification {
                    id: r.get(0)?,
                    workspace: r.get(1)?,
                    from: r.get(2)?,
                    title: r.get(3)?,
                    body: r.get(4)?,
                    level: r.get(5)?,
                    ts: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

/// Which workspaces a read covers. Every workspace must be asked for by name (the local user
/// of an open server), so a missing list can never widen a read: scopes fail closed.
#[derive(Debug, Clone, Copy)]
pub enum Workspaces<'a> {
    Every,
    Only(&'a [String]),
}

/// Checks, stores and publishes a `team_notification` to a workspace's members: online ones
/// receive it live, the others when they resume (or from `GET /api/notifications`).
pub async fn notify(
    teams: &Collab,
    hub: &Hub,
    identity: &Identity,
    n: NotificationIn<'_>,
) -> Result<Notification, TeamsError> {
    check_access(teams.access(), identity, n.workspace)?;
    let level = n.level.unwrap_or("info");
    if !LEVELS.contains(&level) {
        return Err(TeamsError::Invalid(format!(
            "level `{level}` is not one of {}",
            LEVELS.join(", ")
        )));
    }
    let title = n.title.trim();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(TeamsError::Invalid(
            "title must be 1 to 200 characters".into(),
        ));
    }
    let max = teams.message_max_chars();
    if n.body.chars().count() as u64 > max {
        return Err(TeamsError::Invalid(format!(
            "body is longer than {max} characters (team_message_max_chars)"
        )));
    }
    let mut note = Notification {
        id: 0,
        workspace: n.workspace.into(),
        from: identity.user_name().unwrap_or(LOCAL_USER).into(),
        title: title.into(),
        body: n.body.into(),
        level: level.into(),
        ts: crate::teams::now(),
    };
    note.id = teams.store_notification(&note)?;
    let event = NewEvent::new(
        "team_notification",
        Scope::Workspace(note.workspace.clone()),
        json!(note),
    );
    hub.publish(vec![event])
        .await
        .map_err(|e| TeamsError::Unavailable(format!("notification not sent: {e}")))?;
    Ok(note)
}
