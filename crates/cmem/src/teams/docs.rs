//! Shared documents: collaborative editing with `yrs`, the Rust port of Yjs, so the JS `yjs`
//! library works against it unchanged. A producer like the others: an accepted update is
//! stored, applied to the server's copy, and published as `doc_update` in the workspace, so
//! every member (and every member who resumes later) applies the same updates.
//!
//! Updates are kept in `teams.sqlite3` (`doc_updates`) and folded into one from time to time
//! (every [`COMPACT_AFTER`] updates), so a document survives restarts without its history
//! growing without bound. The in-memory copy answers `doc_sync`: a client sends its state
//! vector and gets exactly what it lacks — the whole document for a late joiner.
//!
//! Binary travels as base64 from the server (the journal and SSE/poll are JSON); clients may
//! send either base64 strings or binary.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rusqlite::params;
use serde_json::json;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use super::auth::Identity;
use super::messages::{LOCAL_USER, check_access};
use super::{Teams, TeamsError, check_name};
use crate::hub::Hub;
use crate::hub::envelope::{NewEvent, Scope};

/// Stored updates of one document before they are folded into one.
pub const COMPACT_AFTER: i64 = 200;

/// Largest update accepted, in bytes.
pub const MAX_UPDATE_BYTES: usize = 1_000_000;

/// A loaded document, shared by whoever is reading or applying to it.
type SharedDoc = Arc<Mutex<Doc>>;

/// The documents loaded in memory, by (workspace, document).
#[derive(Default)]
pub struct Docs {
    open: Mutex<HashMap<(String, String), SharedDoc>>,
}

/// Decodes client-sent bytes: base64 text or raw binary.
pub fn bytes_of(v: &rmpv::Value, what: &str) -> Result<Vec<u8>, TeamsError> {
    match v {
        rmpv::Value::Binary(b) => Ok(b.clone()),
        rmpv::Value::String(s) => s
            .as_str()
            .and_then(|s| B64.decode(s).ok())
            .ok_or_else(|| TeamsError::Invalid(format!("{what} is not valid base64"))),
        rmpv::Value::Nil => Ok(Vec::new()),
        _ => Err(TeamsError::Invalid(format!(
            "{what} must be binary or a base64 string"
        ))),
    }
}

impl Teams {
    /// The in-memory document, loaded from its stored updates on first use.
    fn doc(&self, workspace: &str, name: &str) -> Result<SharedDoc, TeamsError> {
        let key = (workspace.to_string(), name.to_string());
        let mut open = self
            .docs
            .open
            .lock()
            .map_err(|_| TeamsError::Invalid("documents lock poisoned".into()))?;
        if let Some(d) = open.get(&key) {
            return Ok(d.clone());
        }
        let updates: Vec<Vec<u8>> = {
            let db = self.db()?;
            let mut stmt = db.prepare(
                "SELECT data FROM doc_updates WHERE workspace = ?1 AND doc = ?2 ORDER BY seq",
            )?;
            stmt.query_map(params![workspace, name], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        let doc = Doc::new();
        {
            let mut txn = doc.transact_mut();
            for (i, u) in updates.iter().enumerate() {
                let applied = Update::decode_v1(u)
                    .map_err(|e| e.to_string())
                    .and_then(|u| txn.apply_update(u).map_err(|e| e.to_string()));
                if let Err(e) = applied {
                    tracing::error!(workspace, doc = name, row = i, error = %e, "stored document update unreadable; skipped");
                }
            }
        }
        let doc = Arc::new(Mutex::new(doc));
        open.insert(key, doc.clone());
        Ok(doc)
    }

    /// What a client with state vector `sv` lacks, and the server's state vector.
    pub fn doc_sync(
        &self,
        workspace: &str,
        name: &str,
        sv: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), TeamsError> {
        let sv = if sv.is_empty() {
            StateVector::default()
        } else {
            StateVector::decode_v1(sv).map_err(|e| {
                TeamsError::Invalid(format!("state_vector is not a Yjs state vector: {e}"))
            })?
        };
        let doc = self.doc(workspace, name)?;
        let doc = doc
            .lock()
            .map_err(|_| TeamsError::Invalid("document lock poisoned".into()))?;
        let txn = doc.transact();
        Ok((
            txn.encode_state_as_update_v1(&sv),
            txn.state_vector().encode_v1(),
        ))
    }

    /// Applies and stores one update; folds the stored updates when there are many.
    fn doc_apply(&self, workspace: &str, name: &str, update: &[u8]) -> Result<(), TeamsError> {
        let decoded = Update::decode_v1(update)
            .map_err(|e| TeamsError::Invalid(format!("update is not a Yjs update: {e}")))?;
        let doc = self.doc(workspace, name)?;
        let doc = doc
            .lock()
            .map_err(|_| TeamsError::Invalid("document lock poisoned".into()))?;
        doc.transact_mut()
            .apply_update(decoded)
            .map_err(|e| TeamsError::Invalid(format!("update does not apply: {e}")))?;
        let mut db = self.db()?;
        db.execute(
            "INSERT INTO doc_updates (workspace, doc, data) VALUES (?1, ?2, ?3)",
            params![workspace, name, update],
        )?;
        let stored: i64 = db.query_row(
            "SELECT COUNT(*) FROM doc_updates WHERE workspace = ?1 AND doc = ?2",
            params![workspace, name],
            |r| r.get(0),
        )?;
        if stored > COMPACT_AFTER {
            let full = doc
                .transact()
                .encode_state_as_update_v1(&StateVector::default());
            let tx = db.transaction()?;
            tx.execute(
                "DELETE FROM doc_updates WHERE workspace = ?1 AND doc = ?2",
                params![workspace, name],
            )?;
            tx.execute(
                "INSERT INTO doc_updates (workspace, doc, data) VALUES (?1, ?2, ?3)",
                params![workspace, name, full],
            )?;
            tx.commit()?;
            tracing::debug!(workspace, doc = name, folded = stored, "document compacted");
        }
        Ok(())
    }
}

fn check_doc_name(name: &str) -> Result<(), TeamsError> {
    check_name("document", name)
}

/// `doc_sync`: checks access and answers with what the client lacks (base64) and the
/// server's state vector (base64).
pub fn sync(
    hub: &Hub,
    identity: &Identity,
    workspace: &str,
    name: &str,
    sv: &[u8],
) -> Result<serde_json::Value, TeamsError> {
    check_access(&hub.teams, identity, workspace)?;
    check_doc_name(name)?;
    let (update, server_sv) = hub.teams.doc_sync(workspace, name, sv)?;
    Ok(json!({
        "workspace": workspace,
        "doc": name,
        "update": B64.encode(update),
        "state_vector": B64.encode(server_sv),
    }))
}

/// `doc_update`: checks access, applies and stores the update, publishes it as `doc_update`.
pub async fn update(
    hub: &Hub,
    identity: &Identity,
    workspace: &str,
    name: &str,
    update: &[u8],
) -> Result<u64, TeamsError> {
    check_access(&hub.teams, identity, workspace)?;
    check_doc_name(name)?;
    if update.is_empty() || update.len() > MAX_UPDATE_BYTES {
        return Err(TeamsError::Invalid(format!(
            "update must be 1 to {MAX_UPDATE_BYTES} bytes"
        )));
    }
    hub.teams.doc_apply(workspace, name, update)?;
    let event = NewEvent::new(
        "doc_update",
        Scope::Workspace(workspace.to_string()),
        json!({
            "workspace": workspace,
            "doc": name,
            "update": B64.encode(update),
            "from": identity.user_name().unwrap_or(LOCAL_USER),
        }),
    );
    let committed = hub
        .publish(vec![event])
        .await
        .map_err(|e| TeamsError::Invalid(format!("update stored but not published: {e}")))?;
    Ok(committed.first().map(|e| e.id).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Text};

    fn edit(doc: &Doc, at: u32, s: &str) -> Vec<u8> {
        let text = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, at, s);
        txn.encode_update_v1()
    }

    #[test]
    fn documents_survive_reopening_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let client = Doc::new();
        {
            let t = Teams::open(dir.path()).unwrap();
            for i in 0..(COMPACT_AFTER + 10) {
                let u = edit(&client, 0, &format!("{}", i % 10));
                t.doc_apply("eng", "notes", &u).unwrap();
            }
            assert!(t.doc_apply("eng", "notes", b"not yjs").is_err());
        }
        let t = Teams::open(dir.path()).unwrap();
        let rows: i64 = t
            .db()
            .unwrap()
            .query_row("SELECT COUNT(*) FROM doc_updates", [], |r| r.get(0))
            .unwrap();
        assert!(rows < COMPACT_AFTER, "compacted: {rows} rows");
        // a late joiner with an empty state vector gets the whole text
        let (full, _) = t.doc_sync("eng", "notes", &[]).unwrap();
        let joiner = Doc::new();
        let text = joiner.get_or_insert_text("t");
        joiner
            .transact_mut()
            .apply_update(Update::decode_v1(&full).unwrap())
            .unwrap();
        let want = client
            .get_or_insert_text("t")
            .get_string(&client.transact());
        assert_eq!(text.get_string(&joiner.transact()), want);
        assert_eq!(want.len(), (COMPACT_AFTER + 10) as usize);
    }
}
