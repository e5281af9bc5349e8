//! Shared documents: collaborative editing with `yrs`, the Rust port of Yjs, so the JS `yjs`
//! library works against it unchanged. A producer like the others: an accepted update is
//! stored, applied to the server's copy, and published as `doc_update` in the workspace, so
//! every member (and every member who resumes later) applies the same updates.
//!
//! Updates are kept in the team store (`doc_updates`) and folded into one from time to time
//! (every [`COMPACT_AFTER`] updates), so a document survives restarts without its history
//! growing without bound. The in-memory copy answers `doc_sync`: a client sends its state
//! vector and gets exactly what it lacks — the whole document for a late joiner.
//!
//! Binary travels as base64 from the server (the journal and SSE/poll are JSON); clients may
//! send either base64 strings or binary.
//!
//! Memory is bounded: at most `docs_cached_max` documents stay loaded, the least recently used
//! one that nobody is reading leaving first (it is reloaded from its stored updates when
//! asked for again); asking for a document that was never written loads nothing; and a
//! workspace holds at most `docs_per_workspace_max` documents. (Socket.IO connections also
//! have a budget of `doc_ops_per_s` for `doc_sync` and `doc_update`.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rusqlite::params;
use serde_json::json;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use super::Collab;
use crate::access::auth::{Identity, LOCAL_USER, check_access};
use crate::envelope::{NewEvent, Scope};
use crate::hub::Hub;
use crate::teams::store::{Change, Check};
use crate::teams::{TeamsError, check_name};

pub use crate::teams::fold::COMPACT_AFTER;
use crate::teams::fold::guarded;

/// Largest update accepted, in bytes.
pub const MAX_UPDATE_BYTES: usize = 1_000_000;

/// A loaded document, shared by whoever is reading or applying to it.
type SharedDoc = Arc<Mutex<Doc>>;

/// Documents kept loaded by default.
pub const DEFAULT_CACHED_MAX: usize = 256;

/// Documents a workspace may hold by default.
pub const DEFAULT_PER_WORKSPACE_MAX: usize = 1000;

/// The documents loaded in memory, by (workspace, document), with when each was last used.
pub struct Docs {
    open: Mutex<Loaded>,
    cached_max: AtomicUsize,
    per_workspace_max: AtomicUsize,
}

#[derive(Default)]
struct Loaded {
    docs: HashMap<(String, String), (SharedDoc, u64)>,
    /// Counts uses; an entry's number says how recently it was used.
    clock: u64,
}

impl Default for Docs {
    fn default() -> Self {
        Docs {
            open: Mutex::default(),
            cached_max: AtomicUsize::new(DEFAULT_CACHED_MAX),
            per_workspace_max: AtomicUsize::new(DEFAULT_PER_WORKSPACE_MAX),
        }
    }
}

impl Docs {
    /// Drops a loaded document; it is reloaded from storage when next asked for.
    pub(crate) fn unload(&self, workspace: &str, name: &str) {
        if let Ok(mut loaded) = self.open.lock() {
            loaded
                .docs
                .remove(&(workspace.to_string(), name.to_string()));
        }
    }
}

impl Loaded {
    /// Makes room for one more: drops the least recently used documents nobody holds.
    fn evict_down_to(&mut self, max: usize) {
        while self.docs.len() >= max.max(1) {
            let idle = self
                .docs
                .iter()
                .filter(|(_, (d, _))| Arc::strong_count(d) == 1)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            match idle {
                Some(k) => {
                    self.docs.remove(&k);
                }
                None => return, // every one is in use right now; over budget until released
            }
        }
    }
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

impl Collab {
    /// Sets the memory and count limits of shared documents (the server does, from its
    /// configuration; the defaults hold otherwise).
    pub fn limit_docs(&self, cached_max: usize, per_workspace_max: usize) {
        self.docs.cached_max.store(cached_max, Ordering::Relaxed);
        self.docs
            .per_workspace_max
            .store(per_workspace_max, Ordering::Relaxed);
    }

    /// Sets the longest message or notification body, in characters.
    pub fn limit_messages(&self, max_chars: u64) {
        self.message_max_chars.store(max_chars, Ordering::Relaxed);
    }

    /// The longest message or notification body, in characters.
    pub fn message_max_chars(&self) -> u64 {
        self.message_max_chars.load(Ordering::Relaxed)
    }

    /// How many documents are loaded in memory.
    pub fn docs_loaded(&self) -> usize {
        self.docs.open.lock().map(|l| l.docs.len()).unwrap_or(0)
    }

    /// The in-memory document, loaded from its stored updates on first use. A document with
    /// no stored update is not kept unless `create` (an update is about to be applied), so
    /// asking about names that do not exist costs no memory; a new document must fit within
    /// the workspace's limit.
    fn doc(&self, workspace: &str, name: &str, create: bool) -> Result<SharedDoc, TeamsError> {
        let key = (workspace.to_string(), name.to_string());
        let lock = || {
            self.docs
                .open
                .lock()
                .map_err(|_| TeamsError::Invalid("documents lock poisoned".into()))
        };
        {
            let mut loaded = lock()?;
            loaded.clock += 1;
            let now = loaded.clock;
            if let Some((d, used)) = loaded.docs.get_mut(&key) {
                *used = now;
                return Ok(d.clone());
            }
        }
        let updates: Vec<Vec<u8>> = {
            let db = self.store.db()?;
            let mut stmt = db.prepare(
                "SELECT data FROM doc_updates WHERE workspace = ?1 AND doc = ?2 ORDER BY seq",
            )?;
            stmt.query_map(params![workspace, name], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        if updates.is_empty() {
            if !create {
                return Ok(Arc::new(Mutex::new(Doc::new())));
            }
            let max = self.docs.per_workspace_max.load(Ordering::Relaxed);
            let existing: i64 = self.store.db()?.query_row(
                "SELECT COUNT(DISTINCT doc) FROM doc_updates WHERE workspace = ?1",
                [workspace],
                |r| r.get(0),
            )?;
            if existing as usize >= max {
                return Err(TeamsError::TooMany(format!(
                    "workspace `{workspace}` already has {existing} documents; the limit is {max} (docs_per_workspace_max)"
                )));
            }
        }
        let doc = Doc::new();
        guarded("stored document", || {
            let mut txn = doc.transact_mut();
            for (i, u) in updates.iter().enumerate() {
                let applied = Update::decode_v1(u)
                    .map_err(|e| e.to_string())
                    .and_then(|u| txn.apply_update(u).map_err(|e| e.to_string()));
                if let Err(e) = applied {
                    tracing::error!(workspace, doc = name, row = i, error = %e, "stored document update unreadable; skipped");
                }
            }
        })?;
        let mut loaded = lock()?;
        // another caller may have loaded it meanwhile: one copy only
        if let Some((d, _)) = loaded.docs.get(&key) {
            return Ok(d.clone());
        }
        loaded.evict_down_to(self.docs.cached_max.load(Ordering::Relaxed));
        let doc = Arc::new(Mutex::new(doc));
        let now = loaded.clock;
        loaded.docs.insert(key, (doc.clone(), now));
        Ok(doc)
    }

    /// The shared documents of `workspace`, most recently edited first (at most 1,000).
    pub fn doc_names(&self, workspace: &str) -> Result<Vec<String>, TeamsError> {
        let db = self.store.db()?;
        let mut q = db.prepare(
            "SELECT doc FROM doc_updates WHERE workspace = ?1 GROUP BY doc ORDER BY MAX(seq) DESC LIMIT 1000",
        )?;
        let names = q
            .query_map(rusqlite::params![workspace], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(names)
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
            decode_state_vector(sv)?
        };
        let doc = self.doc(workspace, name, false)?;
        let doc = doc
            .lock()
            .map_err(|_| TeamsError::Invalid("document lock poisoned".into()))?;
        let encoded = guarded("document", || {
            let txn = doc.transact();
            (
                txn.encode_state_as_update_v1(&sv),
                txn.state_vector().encode_v1(),
            )
        });
        if encoded.is_err() {
            drop(doc);
            self.unload(workspace, name);
        }
        encoded
    }

    /// For the fuzzers: `bytes` as an update to a document, then as a state vector to sync it
    /// with, exactly as `doc_update` and `doc_sync` run them.
    #[doc(hidden)]
    pub fn fuzz_doc_ops(
        &self,
        workspace: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<(), TeamsError> {
        let applied = self.doc_apply(workspace, name, bytes);
        let synced = self.doc_sync(workspace, name, bytes);
        let full = self.doc_sync(workspace, name, &[]);
        applied.and(synced).and(full).map(|_| ())
    }

    /// Drops a loaded document (a panic may have left it half changed); it is reloaded from
    /// storage when next asked for.
    fn unload(&self, workspace: &str, name: &str) {
        self.docs.unload(workspace, name);
    }

    /// Applies and stores one update; folds the stored updates when there are many. Returns
    /// whether it is the document's first (the document is new).
    pub(super) fn doc_apply(
        &self,
        workspace: &str,
        name: &str,
        update: &[u8],
    ) -> Result<bool, TeamsError> {
        let decoded = decode_update(update)?;
        let new = !self.doc_stored(workspace, name)?;
        let doc = self.doc(workspace, name, true)?;
        let doc = doc
            .lock()
            .map_err(|_| TeamsError::Invalid("document lock poisoned".into()))?;
        // Caught inside the lock, so a panic cannot poison it. Then the document must still
        // encode: yrs keeps updates whose dependencies are missing as "pending" and merges them
        // on every encode, and some pending updates make that merge panic (found by the `yjs`
        // fuzz target), which would break every later `doc_sync`. Encoding against its own
        // state vector runs that merge and costs almost nothing. An update that fails either
        // step is not stored, and the copy it may have changed is dropped, to be reloaded.
        let applied = guarded("update", || {
            let mut txn = doc.transact_mut();
            txn.apply_update(decoded)
        });
        let checked = match applied {
            Ok(Ok(())) => guarded("update", || {
                let txn = doc.transact();
                txn.encode_state_as_update_v1(&txn.state_vector());
            }),
            Ok(Err(e)) => Err(TeamsError::Invalid(format!("update does not apply: {e}"))),
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            drop(doc);
            self.unload(workspace, name);
            return Err(e);
        }
        drop(doc);
        let data = B64.encode(update);
        let stored = self.store.commit(Check::Blind, &|_| {
            Ok(Change::DocUpdate {
                workspace: workspace.into(),
                doc: name.into(),
                data: data.clone(),
            })
        });
        if stored.is_err() {
            // applied in memory but not stored: drop the copy rather than serve it
            self.unload(workspace, name);
        }
        stored.map(|_| new)
    }

    /// Whether a document has anything stored.
    fn doc_stored(&self, workspace: &str, name: &str) -> Result<bool, TeamsError> {
        Ok(self.store.db()?.query_row(
            "SELECT EXISTS (SELECT 1 FROM doc_updates WHERE workspace = ?1 AND doc = ?2)",
            [workspace, name],
            |r| r.get(0),
        )?)
    }
}

/// Decodes a client's Yjs update (v1 encoding), after checking how deeply it nests: yrs
/// recurses once per level, so a deep update would overflow the stack ([`super::yjs_shape`]).
fn decode_update(bytes: &[u8]) -> Result<Update, TeamsError> {
    use super::yjs_shape::{MAX_ANY_DEPTH, Shape, any_depth_v1};
    match any_depth_v1(bytes) {
        Ok(_) => {}
        Err(Shape::TooDeep) => {
            return Err(TeamsError::Invalid(format!(
                "update nests values more than {MAX_ANY_DEPTH} levels deep; that is the limit"
            )));
        }
        Err(Shape::Unreadable(what)) => {
            return Err(TeamsError::Invalid(format!(
                "update is not a Yjs update (v1 encoding): {what}"
            )));
        }
    }
    guarded("update", || Update::decode_v1(bytes))?
        .map_err(|e| TeamsError::Invalid(format!("update is not a Yjs update: {e}")))
}

/// Decodes a client's Yjs state vector (v1 encoding).
fn decode_state_vector(bytes: &[u8]) -> Result<StateVector, TeamsError> {
    if let Err(super::yjs_shape::Shape::Unreadable(what)) = super::yjs_shape::state_vector_v1(bytes)
    {
        return Err(TeamsError::Invalid(format!(
            "state_vector is not a Yjs state vector: {what}"
        )));
    }
    guarded("state_vector", || StateVector::decode_v1(bytes))?
        .map_err(|e| TeamsError::Invalid(format!("state_vector is not a Yjs state vector: {e}")))
}

fn check_doc_name(name: &str) -> Result<(), TeamsError> {
    check_name("document", name)
}

/// `doc_sync`: checks access and answers with what the client lacks (base64) and the
/// server's state vector (base64).
pub fn sync(
    teams: &Collab,
    identity: &Identity,
    workspace: &str,
    name: &str,
    sv: &[u8],
) -> Result<serde_json::Value, TeamsError> {
    check_access(teams.access(), identity, workspace)?;
    check_doc_name(name)?;
    let (update, server_sv) = teams.doc_sync(workspace, name, sv)?;
    Ok(json!({
        "workspace": workspace,
        "doc": name,
        "update": B64.encode(update),
        "state_vector": B64.encode(server_sv),
    }))
}

/// `doc_update`: checks access, applies and stores the update, publishes it as `doc_update`.
pub async fn update(
    teams: &Collab,
    hub: &Hub,
    identity: &Identity,
    workspace: &str,
    name: &str,
    update: &[u8],
) -> Result<u64, TeamsError> {
    check_access(teams.access(), identity, workspace)?;
    check_doc_name(name)?;
    if update.is_empty() || update.len() > MAX_UPDATE_BYTES {
        return Err(TeamsError::Invalid(format!(
            "update must be 1 to {MAX_UPDATE_BYTES} bytes"
        )));
    }
    let new = teams.doc_apply(workspace, name, update)?;
    let by = identity.user_name().unwrap_or(LOCAL_USER);
    // a new document is announced first, so every member's list can show it at once
    let mut events = Vec::with_capacity(2);
    if new {
        events.push(NewEvent::new(
            "doc_created",
            Scope::Workspace(workspace.to_string()),
            json!({"workspace": workspace, "doc": name, "by": by}),
        ));
    }
    events.push(NewEvent::new(
        "doc_update",
        Scope::Workspace(workspace.to_string()),
        json!({
            "workspace": workspace,
            "doc": name,
            "update": B64.encode(update),
            "from": by,
        }),
    ));
    let committed = hub
        .publish(events)
        .await
        .map_err(|e| TeamsError::Unavailable(format!("update stored but not published: {e}")))?;
    Ok(committed.last().map(|e| e.id).unwrap_or(0))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use yrs::{GetString, Text};

    /// A client's edit: `s` inserted at `at` in the text `t`, as an update.
    pub(crate) fn edit(doc: &Doc, at: u32, s: &str) -> Vec<u8> {
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
            let t = crate::collab::for_tests(dir.path());
            for i in 0..(COMPACT_AFTER + 10) {
                let u = edit(&client, 0, &format!("{}", i % 10));
                t.doc_apply("eng", "notes", &u).unwrap();
            }
            assert!(t.doc_apply("eng", "notes", b"not yjs").is_err());
        }
        let t = crate::collab::for_tests(dir.path());
        let rows: i64 = t
            .store()
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

    /// Compaction folds what it can read and keeps what it cannot: a stored update that does
    /// not decode (written by a later version, or damaged) is not deleted with the others.
    #[test]
    fn compaction_keeps_an_update_it_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let t = crate::collab::for_tests(dir.path());
        let client = Doc::new();
        t.doc_apply("eng", "notes", &edit(&client, 0, "a")).unwrap();
        t.store()
            .db()
            .unwrap()
            .execute(
                "INSERT INTO doc_updates (workspace, doc, data) VALUES ('eng', 'notes', x'ff00ff')",
                [],
            )
            .unwrap();
        for _ in 0..COMPACT_AFTER {
            t.doc_apply("eng", "notes", &edit(&client, 0, "b")).unwrap();
        }
        let rows: Vec<Vec<u8>> = t
            .store()
            .db()
            .unwrap()
            .prepare("SELECT data FROM doc_updates WHERE doc = 'notes' ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(rows.len() < 10, "compacted: {} rows", rows.len());
        assert!(
            rows.contains(&vec![0xff, 0x00, 0xff]),
            "the unreadable update is kept"
        );
        let want = client
            .get_or_insert_text("t")
            .get_string(&client.transact());
        assert_eq!(text_of(&t, "eng", "notes"), want);
    }

    /// The text `t` of a document, as a late joiner syncing from nothing would see it.
    pub(crate) fn text_of(t: &Collab, workspace: &str, name: &str) -> String {
        let (full, _) = t.doc_sync(workspace, name, &[]).unwrap();
        let back = Doc::new();
        back.transact_mut()
            .apply_update(Update::decode_v1(&full).unwrap())
            .unwrap();
        back.get_or_insert_text("t").get_string(&back.transact())
    }

    /// Found by the `yjs` fuzz target: an update yrs keeps as pending whose merge panics on
    /// every later encode. It is refused and the document keeps working.
    #[test]
    fn an_update_that_breaks_encoding_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let t = crate::collab::for_tests(dir.path());
        let client = Doc::new();
        t.doc_apply("eng", "x", &edit(&client, 0, "kept")).unwrap();
        let crash = [1u8, 1, 0xb4, 0x55, 0x0a, 0x42, 0x0f, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(t.doc_apply("eng", "x", &crash).is_err());
        assert!(t.fuzz_doc_ops("eng", "y", &crash).is_err());
        assert_eq!(text_of(&t, "eng", "x"), "kept");
    }

    #[test]
    fn memory_and_count_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let t = crate::collab::for_tests(dir.path());
        t.limit_docs(3, 5);
        // names that were never written load nothing
        for i in 0..100 {
            let (u, _) = t.doc_sync("eng", &format!("ghost{i}"), &[]).unwrap();
            assert!(Update::decode_v1(&u).is_ok());
        }
        assert_eq!(t.docs_loaded(), 0);
        let client = Doc::new();
        for i in 0..5 {
            t.doc_apply("eng", &format!("d{i}"), &edit(&client, 0, "x"))
                .unwrap();
            assert!(t.docs_loaded() <= 3, "{} loaded", t.docs_loaded());
        }
        match t.doc_apply("eng", "d5", &edit(&client, 0, "x")) {
            Err(TeamsError::TooMany(m)) => assert!(m.contains("limit is 5"), "{m}"),
            other => panic!("{other:?}"),
        }
        // another workspace has its own count; an evicted document comes back whole
        t.doc_apply("ops", "d0", &edit(&client, 0, "y")).unwrap();
        assert_eq!(text_of(&t, "eng", "d0"), "x");
    }
}
