//! Indexing runs: walk the folder (the `ignore` crate applies `.gitignore` and skips hidden
//! folders), index what changed since the last run, drop what vanished, and report progress.
//!
//! A run reports to a sink: in the server the sink publishes `indexing_*` events through the
//! hub ([`run`]); `cmem index` on the command line draws a progress bar instead
//! ([`run_blocking`]).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;
use tantivy::{IndexWriter, Term, doc};

use super::{Memory, MemoryError, confined};
use crate::config::STATE_DIR;
use crate::envelope::{NewEvent, Scope};
use crate::hub::Hub;

/// Folders never indexed, whatever `.gitignore` says.
pub(crate) const SKIP_DIRS: [&str; 4] = [".git", "node_modules", "target", STATE_DIR];

/// Progress events at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Resolves a client-supplied sub-path of the data folder. Absolute paths, `..` and symlinks
/// that lead outside are refused with a message.
pub fn resolve_sub_path(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel);
    if p.is_absolute() || rel.starts_with('/') || rel.starts_with('\\') {
        return Err(format!("path `{rel}` must be relative to the data folder"));
    }
    if p.components().any(|c| {
        matches!(
            c,
            Component::ParentDir | Component::Prefix(_) | Component::RootDir
        )
    }) {
        return Err(format!("path `{rel}` may not contain `..`"));
    }
    let full = std::fs::canonicalize(root.join(p))
        .map_err(|_| format!("path `{rel}` does not exist in the data folder"))?;
    if !full.starts_with(root) {
        return Err(format!(
            "path `{rel}` leads outside the data folder (through a symlink)"
        ));
    }
    Ok(full)
}

fn rel_path(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The rules a file is indexed by (its title, which files are skipped). When they change, the
/// files indexed under the older ones are indexed again once: the incremental run would
/// otherwise keep their old entries for as long as the files stay unchanged.
const RULES: i64 = 4;

/// The index state, made ready. Two openers at once (the first run and a watcher update, or
/// a test's threads) can meet a lock that SQLite reports at once rather than waiting for, such
/// as switching a new file to WAL: those are retried for up to 5 s (seen under Wine).
fn state_db(m: &Memory) -> Result<Connection, MemoryError> {
    let mut waited = std::time::Duration::ZERO;
    loop {
        match open_state_db(m) {
            Err(MemoryError::State(rusqlite::Error::SqliteFailure(e, _)))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && waited < std::time::Duration::from_secs(5) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
                waited += std::time::Duration::from_millis(20);
            }
            other => return other,
        }
    }
}

fn open_state_db(m: &Memory) -> Result<Connection, MemoryError> {
    let mut c = Connection::open(m.index_dir.join("index-state.sqlite3"))?;
    // the vectors' pass and `/api/document` read it while a run writes: wait, never fail
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    c.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, mtime INTEGER NOT NULL, size INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    )?;
    // when each file was last indexed (added after the table; older rows say 0). A run and a
    // watcher update may open this at the same moment: the check and the change are one
    // write transaction, so the second waits and then finds the column
    {
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let has_indexed_at = tx
            .prepare("SELECT 1 FROM pragma_table_info('files') WHERE name = 'indexed_at'")?
            .exists([])?;
        if !has_indexed_at {
            tx.execute_batch(
                "ALTER TABLE files ADD COLUMN indexed_at INTEGER NOT NULL DEFAULT 0;",
            )?;
        }
        tx.commit()?;
    }
    // the language is part of the rules: the stems change with it
    let want = format!("{RULES}:{}", m.language);
    let rules: Option<String> = c
        .query_row(
            "SELECT CAST(value AS TEXT) FROM meta WHERE key = 'rules'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if rules.as_deref() != Some(want.as_str()) {
        c.execute("DELETE FROM files", [])?;
        c.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('rules', ?1)",
            [&want],
        )?;
    }
    Ok(c)
}

/// Every indexed file with the modification time and size it was indexed at.
fn known_files(db: &Connection) -> Result<HashMap<String, (u64, u64)>, MemoryError> {
    stamps(db, "", [])
}

/// The indexed files under the folder `rel` (not `rel` itself), as [`known_files`].
fn known_under(db: &Connection, rel: &str) -> Result<HashMap<String, (u64, u64)>, MemoryError> {
    // every path that starts with "rel/": from "rel/" up to, not including, "rel0" ('0' follows '/')
    stamps(
        db,
        "WHERE path >= ?1 AND path < ?2",
        [format!("{rel}/"), format!("{rel}0")],
    )
}

/// The state table's rows that `filter` (a `WHERE` clause, or nothing) keeps: path, and the
/// modification time and size it was indexed at.
fn stamps(
    db: &Connection,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<HashMap<String, (u64, u64)>, MemoryError> {
    let mut stmt = db.prepare(&format!("SELECT path, mtime, size FROM files {filter}"))?;
    let rows = stmt.query_map(args, |r| {
        Ok((
            r.get::<_, String>(0)?,
            (r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64),
        ))
    })?;
    Ok(rows.filter_map(Result::ok).collect())
}

/// Every file the keyword index holds, with the modification time and size it was indexed
/// at: what the vectors follow ([`super::dense`]).
/// Read-only, and waiting out a writer: it runs beside indexing runs and watcher updates,
/// and must never make them fail with "database is locked" (it once did, by creating the
/// tables at the moment the first run did).
pub(crate) fn indexed_files(m: &Memory) -> Result<HashMap<String, (u64, u64)>, MemoryError> {
    let path = m.index_dir.join("index-state.sqlite3");
    if !path.exists() {
        return Ok(HashMap::new());
    }
    let c = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    let has_files: bool = c.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'files')",
        [],
        |r| r.get(0),
    )?;
    if !has_files {
        return Ok(HashMap::new());
    }
    known_files(&c)
}

/// When the keyword index last took `path` in (ms since the epoch; `Some(0)` for a file
/// indexed before this was kept), or `None` when it does not hold it.
pub fn indexed_at(m: &Memory, path: &str) -> Result<Option<u64>, MemoryError> {
    let c = Connection::open_with_flags(
        m.index_dir.join("index-state.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    let at: Option<i64> = c
        .query_row(
            "SELECT indexed_at FROM files WHERE path = ?1",
            [path],
            |r| r.get(0),
        )
        .optional()?;
    Ok(at.map(|t| t.max(0) as u64))
}

/// The text of every Markdown heading (outside code fences), one a line: a question's words
/// found in a heading count for more.
pub(crate) fn headings_of(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for l in text.lines() {
        let t = l.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        if let Some(h) = heading(t).filter(|_| !fenced) {
            out.push_str(h);
            out.push('\n');
        }
    }
    out
}

/// The text of a Markdown ATX heading line (`#` to `######`, then a space), if it is one.
fn heading(line: &str) -> Option<&str> {
    heading_level(line).map(|(_, h)| h)
}

pub(crate) use super::passage::heading_level;

/// The title: the first Markdown heading of any level (outside code fences and front
/// matter), else the front matter's `title:`, else the file name.
pub(crate) fn title_of(text: &str, filename: &str) -> String {
    let mut lines = text.lines().take(200).peekable();
    let mut front_title = None;
    if lines.peek().is_some_and(|l| l.trim_end() == "---") {
        lines.next();
        for l in lines.by_ref() {
            if l.trim_end() == "---" || l.trim_end() == "..." {
                break;
            }
            if let Some(v) = l.strip_prefix("title:") {
                let v = v.trim().trim_matches(|c| c == '"' || c == '\'').trim();
                if !v.is_empty() {
                    front_title = Some(v.to_string());
                }
            }
        }
    }
    let mut fenced = false;
    for l in lines {
        let t = l.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        if let Some(h) = heading(t) {
            return h.to_string();
        }
    }
    front_title.unwrap_or_else(|| filename.to_string())
}

struct Candidate {
    path: PathBuf,
    rel: String,
    size: u64,
    mtime: u64,
}

/// The `/`-separated path of `p` under `root`, if every name in it is UTF-8. A name that is
/// not could only be indexed under a lossy spelling that opens nothing, so such files are
/// skipped (and counted).
pub(crate) fn rel_utf8(root: &Path, p: &Path) -> Option<String> {
    let parts: Option<Vec<&str>> = p
        .strip_prefix(root)
        .ok()?
        .components()
        .map(|c| c.as_os_str().to_str())
        .collect();
    Some(parts?.join("/"))
}

/// Whether a file's extension is one the index skips (`index_skip_extensions`).
pub(crate) fn skipped_kind(path: &Path, skip: &[String]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| skip.iter().any(|s| s.eq_ignore_ascii_case(e)))
}

/// The files under `from` to index, and how many were skipped: for a name that is not UTF-8,
/// or an extension in `skip`.
fn walk(root: &Path, from: &Path, skip: &[String]) -> (Vec<Candidate>, u64) {
    let mut out = Vec::new();
    let mut passed_over = 0u64;
    let walker = ignore::WalkBuilder::new(from)
        .hidden(true)
        .git_ignore(true)
        .require_git(false)
        .filter_entry(|e| {
            !(e.file_type().is_some_and(|t| t.is_dir())
                && SKIP_DIRS.iter().any(|d| e.file_name() == *d))
        })
        .build();
    for entry in walker.flatten() {
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        if skipped_kind(entry.path(), skip) {
            passed_over += 1;
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let mtime = mtime_ms(&meta);
        let Some(rel) = rel_utf8(root, entry.path()) else {
            tracing::warn!(path = %entry.path().display(), "not indexed: the file name is not UTF-8 (rename it to index it)");
            passed_over += 1;
            continue;
        };
        out.push(Candidate {
            rel,
            path: entry.path().to_path_buf(),
            size: meta.len(),
            mtime,
        });
    }
    (out, passed_over)
}

/// What became of one file.
enum Outcome {
    /// Indexed as it was when read: its modification time and size.
    Indexed {
        mtime: u64,
        size: u64,
    },
    /// Not indexed (too large, binary, gone, not a regular file, or reached through a link):
    /// any earlier version leaves the index.
    Skipped,
    Error,
}

/// Indexes one file (replacing its previous version): too large or binary files are skipped,
/// other bytes are decoded as UTF-8, lossily. The file is opened through
/// [`confined::open`], so nothing outside the data folder is ever read, whatever links the
/// folder holds or gains meanwhile.
fn index_file(m: &Memory, writer: &IndexWriter, rel: &str, path: &Path) -> Outcome {
    let f = m.fields;
    let skip = || {
        writer.delete_term(Term::from_field_text(f.path, rel));
        Outcome::Skipped
    };
    if skipped_kind(path, &m.skip_extensions) {
        return skip();
    }
    let (file, meta) = match confined::open(&m.root, path) {
        Ok(opened) => opened,
        Err(confined::Refused::OutsideOrLinked) => {
            tracing::debug!(path = %rel, "not indexed: reached through a symbolic link");
            return skip();
        }
        Err(confined::Refused::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return skip();
        }
        Err(confined::Refused::NotAFile) => return skip(),
        Err(confined::Refused::Io(e)) => {
            tracing::debug!(path = %rel, error = %e, "unreadable file");
            return Outcome::Error;
        }
    };
    let (size, mtime) = (meta.len(), mtime_ms(&meta));
    if size > m.max_file_bytes {
        return skip();
    }
    let bytes = match confined::read_capped(file, m.max_file_bytes) {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(path = %rel, error = %e, "unreadable file");
            return Outcome::Error;
        }
    };
    if bytes.len() as u64 > m.max_file_bytes || bytes.iter().take(8192).any(|b| *b == 0) {
        return skip(); // grew past the limit while read, or binary
    }
    let text = String::from_utf8_lossy(&bytes);
    let filename = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    writer.delete_term(Term::from_field_text(f.path, rel));
    let title = title_of(&text, &filename);
    let added = writer.add_document(doc!(
        f.path => rel.to_string(),
        f.filename => filename.clone(),
        f.extension => extension,
        f.title_stem => title.clone(),
        f.title => title,
        f.headings_stem => headings_of(&text),
        f.passages => super::passage::encode(&super::passage::split(&text)),
        f.body_stem => text.to_string(),
        f.body => text.into_owned(),
        f.modified => mtime,
        f.size => bytes.len() as u64,
    ));
    match added {
        Ok(_) => Outcome::Indexed {
            mtime,
            size: bytes.len() as u64,
        },
        Err(e) => {
            tracing::warn!(path = %rel, error = %e, "could not index");
            Outcome::Error
        }
    }
}

/// One change the watcher saw, relative to the data folder.
#[derive(Debug, Clone)]
pub struct Change {
    /// `/`-separated, relative to the data folder.
    pub rel: String,
    pub full: PathBuf,
    /// `created`, `modified` or `deleted` (a path gone by the time it is reported is `deleted`).
    pub kind: &'static str,
}

/// What an update did to one document, for `file_changed`: its path and `created`,
/// `modified` or `deleted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touched {
    pub rel: String,
    pub kind: &'static str,
}

/// Re-indexes the paths the watcher reports, one by one: a file that is gone, ignored, binary
/// or too large leaves the index.
///
/// A reported path may be a folder. The watcher reports a folder deleted or moved away as
/// that folder alone (notify's debouncer folds the removals of what it held into one event),
/// and a folder copied or moved in may be filled before its own watch exists, so its files are
/// never reported. So a path that is gone takes with it every document indexed under it, and
/// a folder reported created, or one under which nothing is indexed yet (moved in or renamed),
/// is walked like a run's folder: new and changed files are indexed, indexed ones no longer
/// there leave. A folder merely modified (its metadata; on Windows, any change inside it,
/// each of which is reported on its own too) is not walked.
///
/// Returns the documents whose index entry changed beyond the reported paths themselves: the
/// files found, changed or gone under a reported folder.
pub fn update_files(m: &Memory, files: &[Change]) -> Result<Vec<Touched>, MemoryError> {
    let mut gitignores = Gitignores::new(&m.root);
    let mut db = state_db(m)?;
    let writer = m.writer()?;
    let mut upserts = Vec::new();
    let mut removals = Vec::new();
    let mut touched = Vec::new();
    // a file reported itself and also found under a reported folder is indexed once
    let mut done: std::collections::HashSet<String> = files.iter().map(|c| c.rel.clone()).collect();
    for Change {
        rel,
        full: path,
        kind,
    } in files
    {
        let meta = std::fs::symlink_metadata(path);
        let is_dir = meta.as_ref().is_ok_and(|md| md.is_dir());
        let ignored = gitignores.ignored(path, is_dir);
        // documents indexed under `rel` that are no longer there
        let mut vanished: Vec<String> = Vec::new();
        if !ignored && is_dir {
            let known = known_under(&db, rel)?;
            if *kind != "created" && !known.is_empty() {
                continue;
            }
            let (found, _) = walk(&m.root, path, &m.skip_extensions);
            let mut present = std::collections::HashSet::new();
            for c in found {
                present.insert(c.rel.clone());
                if !done.insert(c.rel.clone()) {
                    continue;
                }
                let before = known.get(&c.rel);
                if before == Some(&(c.mtime, c.size)) {
                    continue;
                }
                let kind = if before.is_some() {
                    "modified"
                } else {
                    "created"
                };
                match index_file(m, &writer, &c.rel, &c.path) {
                    Outcome::Indexed { mtime, size } => {
                        upserts.push((c.rel.clone(), mtime, size));
                        touched.push(Touched { rel: c.rel, kind });
                    }
                    Outcome::Skipped if before.is_some() => {
                        removals.push(c.rel.clone());
                        touched.push(Touched {
                            rel: c.rel,
                            kind: "deleted",
                        });
                    }
                    Outcome::Skipped | Outcome::Error => {}
                }
            }
            vanished.extend(known.into_keys().filter(|k| !present.contains(k)));
        } else {
            let outcome = if ignored {
                writer.delete_term(Term::from_field_text(m.fields.path, rel));
                Outcome::Skipped
            } else {
                index_file(m, &writer, rel, path)
            };
            match outcome {
                Outcome::Indexed { mtime, size } => upserts.push((rel.clone(), mtime, size)),
                Outcome::Error => {}
                Outcome::Skipped => removals.push(rel.clone()),
            }
            // a folder that is gone (or now ignored, or replaced by a file) takes its documents
            vanished.extend(known_under(&db, rel)?.into_keys());
        }
        for gone in vanished {
            if done.insert(gone.clone()) {
                writer.delete_term(Term::from_field_text(m.fields.path, &gone));
                removals.push(gone.clone());
                touched.push(Touched {
                    rel: gone,
                    kind: "deleted",
                });
            }
        }
    }
    let t = &m.totals;
    t.add(&t.watcher_updates, 1);
    t.add(&t.indexed, upserts.len() as u64);
    t.add(&t.removed, removals.len() as u64);
    commit(m, writer, &mut db, &upserts, &removals)?;
    Ok(touched)
}

/// The `.gitignore` files from a file's folder up to the root, read once per folder, asked
/// deepest first as git does: the first that matches (ignore or `!` whitelist) decides. The
/// full walk gets this from `ignore::WalkBuilder`; single files from the watcher need it here.
struct Gitignores<'a> {
    root: &'a Path,
    by_dir: HashMap<PathBuf, ignore::gitignore::Gitignore>,
}

impl<'a> Gitignores<'a> {
    fn new(root: &'a Path) -> Self {
        Gitignores {
            root,
            by_dir: HashMap::new(),
        }
    }

    /// Whether `path` (a folder when `is_dir`: a `name/` rule matches only folders) is ignored.
    fn ignored(&mut self, path: &Path, is_dir: bool) -> bool {
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| d.starts_with(self.root)) {
            let gi = self
                .by_dir
                .entry(d.to_path_buf())
                .or_insert_with(|| ignore::gitignore::Gitignore::new(d.join(".gitignore")).0);
            match gi.matched_path_or_any_parents(path, is_dir) {
                ignore::Match::Ignore(_) => return true,
                ignore::Match::Whitelist(_) => return false,
                ignore::Match::None => {}
            }
            dir = d.parent();
        }
        false
    }
}

/// Commits the index, then records what it now holds in the state table, then makes the new
/// index visible to searches.
fn commit(
    m: &Memory,
    mut writer: std::sync::MutexGuard<'_, IndexWriter>,
    db: &mut Connection,
    upserts: &[(String, u64, u64)],
    removals: &[String],
) -> Result<(), MemoryError> {
    writer.commit()?;
    drop(writer);
    let tx = db.transaction()?;
    let now = crate::clock::now_ms() as i64;
    for (p, mtime, size) in upserts {
        tx.execute(
            "INSERT INTO files (path, mtime, size, indexed_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(path) DO UPDATE SET mtime = excluded.mtime, size = excluded.size,
               indexed_at = excluded.indexed_at",
            params![p, *mtime as i64, *size as i64, now],
        )?;
    }
    for p in removals {
        tx.execute("DELETE FROM files WHERE path = ?1", [p])?;
    }
    tx.commit()?;
    m.reader.reload()?;
    if let Some(dense) = &m.dense {
        dense.wake.notify_one();
    }
    Ok(())
}

/// Where a run reports: `indexing_started`, `indexing_progress` (at most every 100 ms, and
/// always at 100 %) and `indexing_completed`, each with its data.
pub type Sink<'a> = dyn FnMut(&str, serde_json::Value) + 'a;

/// Runs one indexing pass over `from` (the whole folder when `None`), publishing progress
/// through the hub. Refuses to start while another run is going.
pub async fn run(m: Arc<Memory>, hub: Arc<Hub>, from: Option<PathBuf>) -> Result<(), MemoryError> {
    let rt = tokio::runtime::Handle::current();
    let root = m.root.clone();
    tokio::task::spawn_blocking(move || {
        run_blocking(&m, from, &mut |kind, data| {
            let event = NewEvent::new(kind, Scope::Global, data);
            if let Err(e) = rt.block_on(hub.publish(vec![event])) {
                tracing::warn!(error = %e, kind, "could not publish indexing event");
            }
        })
    })
    .await
    .map_err(|e| MemoryError::Io {
        path: root,
        source: std::io::Error::other(e.to_string()),
    })?
}

/// Runs one indexing pass on this thread, reporting to `sink`. Refuses to start while another
/// run is going.
pub fn run_blocking(
    m: &Memory,
    from: Option<PathBuf>,
    sink: &mut Sink<'_>,
) -> Result<(), MemoryError> {
    {
        let mut st = m.state.lock().map_err(|_| MemoryError::Busy)?;
        if st.running {
            return Err(MemoryError::Busy);
        }
        *st = super::IndexingState {
            running: true,
            started_at: Some(crate::clock::now_rfc3339()),
            ..Default::default()
        };
    }
    let result = index_blocking(m, from, sink);
    if let Ok(mut st) = m.state.lock() {
        st.running = false;
        st.finished_at = Some(crate::clock::now_rfc3339());
    }
    m.totals.add(&m.totals.runs, 1);
    result
}

fn index_blocking(
    m: &Memory,
    from: Option<PathBuf>,
    sink: &mut Sink<'_>,
) -> Result<(), MemoryError> {
    let started = Instant::now();
    let from = from.unwrap_or_else(|| m.root.clone());
    let scope_rel = rel_path(&m.root, &from);
    let (files, passed_over) = walk(&m.root, &from, &m.skip_extensions);
    let total = files.len() as u64;
    if let Ok(mut st) = m.state.lock() {
        st.path = scope_rel.clone();
        st.total_files = total;
    }
    sink(
        "indexing_started",
        json!({"path": scope_rel, "total_files": total}),
    );
    // progress always runs from 0 to 100, whatever the folder's size
    sink(
        "indexing_progress",
        json!({"progress": 0, "current_file": "", "processed_files": 0, "total_files": total}),
    );

    let mut db = state_db(m)?;
    let mut known = known_files(&db)?;
    known.retain(|p, _| {
        scope_rel.is_empty() || p == &scope_rel || p.starts_with(&format!("{scope_rel}/"))
    });
    let f = m.fields;
    let writer = m.writer()?;
    let (mut indexed, mut unchanged, mut skipped, mut errors) = (0u64, 0u64, passed_over, 0u64);
    let mut indexed_bytes = 0u64;
    let mut updates: Vec<(String, u64, u64)> = Vec::new();
    // known files that can no longer be indexed (now too large, binary, or a link)
    let mut dropped: Vec<String> = Vec::new();
    let mut last_progress = Instant::now();
    for (i, c) in files.iter().enumerate() {
        let processed = i as u64 + 1;
        if known.get(&c.rel) == Some(&(c.mtime, c.size)) {
            unchanged += 1;
        } else {
            match index_file(m, &writer, &c.rel, &c.path) {
                Outcome::Indexed { mtime, size } => {
                    indexed += 1;
                    indexed_bytes += size;
                    updates.push((c.rel.clone(), mtime, size));
                }
                Outcome::Skipped => {
                    skipped += 1;
                    if known.contains_key(&c.rel) {
                        dropped.push(c.rel.clone());
                    }
                }
                Outcome::Error => errors += 1,
            }
        }
        let progress = (processed * 100 / total.max(1)) as u8;
        if let Ok(mut st) = m.state.lock() {
            st.processed_files = processed;
            st.progress = progress;
            st.current_file = c.rel.clone();
        }
        if last_progress.elapsed() >= PROGRESS_EVERY || processed == total {
            last_progress = Instant::now();
            sink(
                "indexing_progress",
                json!({
                    "progress": progress,
                    "current_file": c.rel,
                    "processed_files": processed,
                    "total_files": total,
                }),
            );
        }
    }
    // files that vanished
    let seen: std::collections::HashSet<&str> = files.iter().map(|c| c.rel.as_str()).collect();
    let removed: Vec<String> = known
        .keys()
        .filter(|p| !seen.contains(p.as_str()))
        .cloned()
        .chain(dropped)
        .collect();
    for p in &removed {
        writer.delete_term(Term::from_field_text(f.path, p));
    }
    commit(m, writer, &mut db, &updates, &removed)?;
    let duration_ms = started.elapsed().as_millis() as u64;
    if let Ok(mut st) = m.state.lock() {
        st.indexed = indexed;
        st.unchanged = unchanged;
        st.removed = removed.len() as u64;
        st.skipped = skipped;
        st.errors = errors;
        st.duration_ms = duration_ms;
        st.progress = 100;
    }
    let t = &m.totals;
    t.add(&t.indexed, indexed);
    t.add(&t.skipped, skipped);
    t.add(&t.errors, errors);
    t.add(&t.removed, removed.len() as u64);
    sink(
        "indexing_completed",
        json!({
            "path": scope_rel,
            "processed_files": total,
            "indexed": indexed,
            "indexed_bytes": indexed_bytes,
            "unchanged": unchanged,
            "removed": removed.len(),
            "skipped": skipped,
            "errors": errors,
            "duration_ms": duration_ms,
        }),
    );
    Ok(())
}

/// Modification time in milliseconds, as the index state keeps it.
pub(crate) fn mtime_ms(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first indexing run and the vectors' first pass opened the state at the same
    /// moment, and one of them failed ("duplicate column name", "database is locked"): the
    /// start-up index was then never made.
    #[test]
    fn the_state_opens_from_many_threads_at_once() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let m = Memory::open(dir.path(), &crate::memory::OpenOptions::default()).unwrap();
            std::thread::scope(|s| {
                let opened: Vec<_> = (0..8)
                    .map(|i| {
                        let m = &m;
                        s.spawn(move || {
                            if i % 2 == 0 {
                                state_db(m).map(|_| ())
                            } else {
                                indexed_files(m).map(|_| ())
                            }
                        })
                    })
                    .collect();
                for o in opened {
                    o.join().unwrap().unwrap();
                }
            });
        }
    }

    #[test]
    fn sub_paths_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("notes")).unwrap();
        assert!(resolve_sub_path(&root, "notes").is_ok());
        assert!(
            resolve_sub_path(&root, "../etc")
                .unwrap_err()
                .contains("..")
        );
        assert!(
            resolve_sub_path(&root, "/etc")
                .unwrap_err()
                .contains("relative")
        );
        assert!(
            resolve_sub_path(&root, "missing")
                .unwrap_err()
                .contains("does not exist")
        );
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/tmp", root.join("escape")).unwrap();
            assert!(
                resolve_sub_path(&root, "escape")
                    .unwrap_err()
                    .contains("outside")
            );
        }
    }

    #[test]
    fn nested_gitignores_decide_deepest_first() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join(".gitignore"), "*.log\nbuild/\n").unwrap();
        std::fs::write(root.join("a/.gitignore"), "secret.md\n!keep.log\n").unwrap();
        let mut g = Gitignores::new(&root);
        let file = |g: &mut Gitignores, p: &str| g.ignored(&root.join(p), false);
        assert!(file(&mut g, "x.log"));
        assert!(file(&mut g, "a/b/y.log"));
        assert!(!file(&mut g, "a/keep.log"));
        assert!(file(&mut g, "a/b/secret.md"));
        assert!(!file(&mut g, "secret.md"));
        assert!(!file(&mut g, "a/notes.md"));
        // a `name/` rule: the folder itself (as the watcher reports a new one) and what it holds
        assert!(g.ignored(&root.join("a/build"), true));
        assert!(file(&mut g, "a/build/x.md"));
        assert!(!file(&mut g, "a/build"));
    }

    #[test]
    fn titles() {
        assert_eq!(title_of("intro\n# Big Title\n", "a.md"), "Big Title");
        assert_eq!(title_of("no heading", "a.md"), "a.md");
        // any level, the first one
        assert_eq!(title_of("text\n## Setup\n# Later\n", "a.md"), "Setup");
        assert_eq!(title_of("### Deep ###\n", "a.md"), "Deep");
        // not a heading: no space, a code fence, seven #
        assert_eq!(
            title_of("#hashtag\n```\n# comment\n```\n####### x\n", "a.md"),
            "a.md"
        );
        // front matter: its title when no heading follows; a heading wins over it
        assert_eq!(
            title_of("---\ntitle: \"The Book\"\n---\nbody\n", "a.md"),
            "The Book"
        );
        assert_eq!(
            title_of("---\ntitle: Meta\n---\n## Chapter 1\n", "a.md"),
            "Chapter 1"
        );
        assert_eq!(
            title_of("---\n# not a heading: yaml\n---\nbody", "a.md"),
            "a.md"
        );
    }
}
