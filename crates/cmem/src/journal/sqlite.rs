//! The SQLite engine of the journal (the default, one node): every event is appended to SQLite
//! (WAL) before anyone sees it.
//!
//! Why it looks like this:
//! - **One writer thread** owns the write connection. Publishers send batches over a bounded
//!   channel; the writer drains whatever is queued (up to `journal_batch_max` events) and commits
//!   it in one transaction — a group commit, so one fsync covers many publishers.
//! - **The sync has a thread of its own** (`journal_sync = "full"`): SQLite writes each commit
//!   to its WAL without syncing, and `cmem-journal-sync` makes the WAL durable with one
//!   `fdatasync` for every commit written since its last, then publishes them. The writer
//!   meanwhile writes the next commit, so the disk's flush and SQLite's work overlap instead of
//!   taking turns. Nothing is published or acknowledged before its sync: the head, the window,
//!   the fan-out and the replies all wait for it. (A process crash loses nothing written: the
//!   WAL is in the page cache; the sync is for power loss.)
//! - **Ids are assigned by the writer**, from a head counter stored in the `meta` table inside the
//!   same transaction, so they increase monotonically across restarts even when retention has
//!   deleted every row.
//! - **Fan-out happens after commit** (and its sync), in id order, from one thread (the sync
//!   thread, or the writer's without one): an event a client receives live is always already on
//!   disk, so it can always be replayed. Events addressed to
//!   one client (`client:<id>`) do not go to the shared channel — that would wake every
//!   connection for each one; the [`Fanout`] sink nudges that one connection instead, which
//!   then reads them from the journal.
//! - **The epoch** is created with the database; a recreated journal has a new epoch, which tells
//!   clients that their cursors mean nothing here.
//! - The newest events (up to [`RECENT_CAPACITY`]) are also kept in memory, in id order, so
//!   that the common reads — a new client's first events, a poll, a resume after a short
//!   absence — never touch SQLite. Older ranges go through a small pool of read connections on
//!   the blocking pool; WAL lets them run beside the writer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::{
    ActivityQuery, Engine, Fanout, JournalError, JournalInfo, JournalOptions, RECENT_CAPACITY,
    ReadQuery, Recent,
};
use crate::envelope::{EnvelopeRef, Event, NewEvent, Scope};
use futures::future::BoxFuture;

/// Counters shared between the writer and everyone else.
#[derive(Debug)]
struct Shared {
    epoch: Arc<str>,
    head: AtomicU64,
    oldest: AtomicU64,
    appended: AtomicU64,
    commits: AtomicU64,
    /// A sync of the WAL failed: every later write is refused (see [`sync_loop`]).
    failed: AtomicBool,
}

enum Msg {
    Write {
        events: Vec<NewEvent>,
        reply: oneshot::Sender<Result<Vec<Arc<Event>>, JournalError>>,
    },
    Shutdown(oneshot::Sender<()>),
}

/// The SQLite engine: a writer thread and a few readers.
pub struct SqliteJournal {
    shared: Arc<Shared>,
    recent: Recent,
    tx: mpsc::Sender<Msg>,
    path: PathBuf,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// Who syncs commits to disk: `thread` (the sync thread), `sqlite` (inside each commit, when
    /// the WAL was not found) or `off` (`journal_sync = "normal"`).
    sync: &'static str,
}

/// Runs an [`ActivityQuery`] on a journal file without starting a writer (read-only; safe
/// beside a running server).
pub fn activity_in(path: &Path, q: &ActivityQuery) -> Result<Vec<Arc<Event>>, JournalError> {
    activity_upto(path, q, None)
}

/// [`activity_in`], seeing no id above `upto` when given.
fn activity_upto(
    path: &Path,
    q: &ActivityQuery,
    upto: Option<u64>,
) -> Result<Vec<Arc<Event>>, JournalError> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    activity_rows(&conn, q, upto)
}

/// `upto`: the newest id the caller may see (a server's head: a commit still waiting for its
/// sync is in the file but not yet published).
fn activity_rows(
    conn: &Connection,
    q: &ActivityQuery,
    upto: Option<u64>,
) -> Result<Vec<Arc<Event>>, JournalError> {
    if q.scopes.is_empty() || q.types.as_ref().is_some_and(|t| t.is_empty()) {
        return Ok(Vec::new());
    }
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let list = |items: &[String], args: &mut Vec<rusqlite::types::Value>| {
        let marks: Vec<String> = items
            .iter()
            .map(|s| {
                args.push(s.clone().into());
                format!("?{}", args.len())
            })
            .collect();
        marks.join(",")
    };
    let mut sql = format!(
        "SELECT id, type, scope, body FROM events WHERE {}",
        scope_filter(&q.scopes, &mut args)
    );
    if let Some(types) = &q.types {
        sql.push_str(&format!(" AND type IN ({})", list(types, &mut args)));
    } else if !q.exclude.is_empty() {
        sql.push_str(&format!(
            " AND type NOT IN ({})",
            list(&q.exclude, &mut args)
        ));
    }
    if let Some(upto) = upto {
        args.push((upto.min(i64::MAX as u64) as i64).into());
        sql.push_str(&format!(" AND id <= ?{}", args.len()));
    }
    let limit = q.limit.max(1);
    match q.after {
        Some(after) => {
            args.push((after.min(i64::MAX as u64) as i64).into());
            sql.push_str(&format!(
                " AND id > ?{} ORDER BY id LIMIT {limit}",
                args.len()
            ));
        }
        None => sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}")),
    }
    let mut out = rows_to_events(conn, &sql, args)?;
    out.sort_by_key(|e| e.id);
    Ok(out)
}

fn open_connection(path: &Path, full_sync: bool) -> Result<Connection, JournalError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        if full_sync { "FULL" } else { "NORMAL" },
    )?;
    Ok(conn)
}

fn new_epoch() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:04x}", nanos as u64, std::process::id() & 0xffff)
}

/// What a journal file holds, read without starting a writer: its epoch and head.
pub fn describe(path: &Path) -> Result<(String, u64), JournalError> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let epoch: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
            r.get(0)
        })
        .optional()?;
    Ok((epoch.unwrap_or_default(), head_and_oldest(&conn)?.0))
}

/// The head (the last id given, kept in `meta` so retention cannot make ids repeat) and the
/// oldest id still stored (head + 1 when none is).
fn head_and_oldest(conn: &Connection) -> Result<(u64, u64), JournalError> {
    let stored: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'head'", [], |r| {
            r.get(0)
        })
        .optional()?;
    let stored = stored.and_then(|h| h.parse::<u64>().ok()).unwrap_or(0);
    let (max_id, min_id): (Option<i64>, Option<i64>) =
        conn.query_row("SELECT MAX(id), MIN(id) FROM events", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let head = stored.max(max_id.unwrap_or(0) as u64);
    Ok((head, min_id.map(|m| m as u64).unwrap_or(head + 1)))
}

/// Gives a journal file (not in use by a server) a new epoch, also in the envelopes it holds.
/// A restored journal needs one: ids after its last event will be given again to different
/// events, so every cursor read from the journal before the restore must get a `resync`, and
/// replayed envelopes must name the epoch the clients will resume with. Returns the new epoch.
pub fn renew_epoch(path: &Path) -> Result<String, JournalError> {
    let mut conn = open_connection(path, true)?;
    let epoch = new_epoch();
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('epoch', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [&epoch],
    )?;
    // json_set rewrites only the envelope's own top-level `epoch`, never one inside `data`
    tx.execute(
        "UPDATE events SET body = json_set(body, '$.epoch', ?1)",
        [&epoch],
    )?;
    tx.commit()?;
    Ok(epoch)
}

impl SqliteJournal {
    /// Opens (or creates) the journal at `<state_dir>/journal.sqlite3` and starts the writer.
    /// Committed events are handed to `fanout` in id order.
    pub fn open(
        state_dir: &Path,
        opts: JournalOptions,
        fanout: Fanout,
    ) -> Result<SqliteJournal, JournalError> {
        std::fs::create_dir_all(state_dir).map_err(|source| JournalError::Io {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join("journal.sqlite3");
        let conn = open_connection(&path, opts.full_sync)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS events (
                 id INTEGER PRIMARY KEY,
                 type TEXT NOT NULL,
                 scope TEXT NOT NULL,
                 ts_ms INTEGER NOT NULL,
                 body TEXT NOT NULL
             );
             -- age retention finds its cut in id order (see `prune_now`); the index on the
             -- time that earlier versions kept cost a page written by every commit
             DROP INDEX IF EXISTS events_ts;",
        )?;
        let epoch: String = match conn
            .query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
                r.get(0)
            })
            .optional()?
        {
            Some(e) => e,
            None => {
                let e = new_epoch();
                conn.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?1)", [&e])?;
                e
            }
        };
        let (head, oldest) = head_and_oldest(&conn)?;
        let shared = Arc::new(Shared {
            epoch: epoch.into(),
            head: AtomicU64::new(head),
            oldest: AtomicU64::new(oldest),
            appended: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        });
        // Warm the in-memory window with the newest stored events, so a resume right after a
        // restart is served from memory too.
        let recent: Recent = super::new_window();
        {
            let from = head
                .saturating_sub(RECENT_CAPACITY as u64)
                .max(oldest.saturating_sub(1));
            let rows = read_rows(
                &conn,
                &ReadQuery {
                    after: from,
                    upto: head,
                    scopes: None,
                    limit: RECENT_CAPACITY,
                },
            )?;
            // keep only a contiguous tail (retention may have left holes only below `oldest`)
            if let Ok(mut r) = recent.write() {
                r.extend(rows);
            }
        }
        let (tx, rx) = mpsc::channel(4096);
        let publisher = Publisher {
            recent: recent.clone(),
            shared: shared.clone(),
            fanout,
        };
        // With `journal_sync = "full"`, the WAL is synced by a thread of its own, so that
        // writing the next commit overlaps the flush of the last (see `sync_loop`); SQLite
        // itself then only writes. Without the WAL at hand SQLite syncs in each commit.
        let wal = if opts.full_sync {
            open_wal(&path)
        } else {
            None
        };
        let (next, sync) = match wal {
            Some(wal) => {
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                let (sync_tx, sync_rx) = std::sync::mpsc::sync_channel(SYNC_QUEUE);
                std::thread::Builder::new()
                    .name("cmem-journal-sync".into())
                    .spawn(move || sync_loop(move || wal.sync_data(), sync_rx, publisher))
                    .map_err(|source| JournalError::Io {
                        path: path.clone(),
                        source,
                    })?;
                (Next::Sync(sync_tx), "thread")
            }
            None if opts.full_sync => (Next::Publish(publisher), "sqlite"),
            None => (Next::Publish(publisher), "off"),
        };
        let writer = Writer {
            conn,
            recent: recent.clone(),
            shared: shared.clone(),
            opts,
            written: head,
            next,
            // `None`: prune at the first chance. (Never `Instant::now() - d`: on Windows an
            // `Instant` counts from boot, so that panics early after boot.)
            last_prune: None,
        };
        let rt = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("cmem-journal".into())
            .spawn(move || writer.run(rx, rt))
            .map_err(|source| JournalError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(SqliteJournal {
            shared,
            recent,
            tx,
            path,
            readers: Arc::new(Mutex::new(Vec::new())),
            sync,
        })
    }

    /// The epoch of this journal.
    pub fn epoch(&self) -> &str {
        &self.shared.epoch
    }

    /// Id of the newest committed event (0 if none ever).
    pub fn head(&self) -> u64 {
        self.shared.head.load(Ordering::Acquire)
    }

    /// Lowest id still stored (`head + 1` when empty).
    pub fn oldest(&self) -> u64 {
        self.shared.oldest.load(Ordering::Acquire)
    }

    pub fn info(&self) -> JournalInfo {
        JournalInfo {
            epoch: self.epoch().to_string(),
            head: self.head(),
            oldest: self.oldest(),
            appended_since_start: self.shared.appended.load(Ordering::Relaxed),
            commits_since_start: self.shared.commits.load(Ordering::Relaxed),
            path: self.path.display().to_string(),
        }
    }

    /// Appends events durably; returns them with their ids once committed (and fanned out).
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Arc<Event>>, JournalError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Write { events, reply })
            .await
            .map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Reads committed events in id order: from memory when the range is recent, else SQLite.
    pub async fn read(&self, q: ReadQuery) -> Result<Vec<Arc<Event>>, JournalError> {
        if let Some(hit) = super::read_window(&self.recent, &q) {
            return Ok(hit);
        }
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match readers.lock().map(|mut v| v.pop()) {
                Ok(Some(c)) => c,
                _ => {
                    let c = Connection::open(&path)?;
                    c.busy_timeout(Duration::from_secs(10))?;
                    c
                }
            };
            let out = read_rows(&conn, &q);
            if let Ok(mut v) = readers.lock()
                && v.len() < 4
            {
                v.push(conn);
            }
            out
        })
        .await
        .map_err(|e| JournalError::Write(format!("reader task failed: {e}")))?
    }

    /// Runs an [`ActivityQuery`] on a read connection (the blocking pool).
    pub async fn activity(&self, q: ActivityQuery) -> Result<Vec<Arc<Event>>, JournalError> {
        let path = self.path.clone();
        let upto = self.head();
        tokio::task::spawn_blocking(move || activity_upto(&path, &q, Some(upto)))
            .await
            .map_err(|e| JournalError::Write(format!("reader task failed: {e}")))?
    }

    /// Empties the in-memory window of recent events; reads go to SQLite until new commits
    /// refill it. Returns how many events it held.
    pub fn clear_cache(&self) -> usize {
        super::clear_window(&self.recent)
    }

    /// Commits everything queued, then stops the writer. Later appends fail with `Closed`.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

fn read_rows(conn: &Connection, q: &ReadQuery) -> Result<Vec<Arc<Event>>, JournalError> {
    let mut sql =
        String::from("SELECT id, type, scope, body FROM events WHERE id > ?1 AND id <= ?2");
    let mut args: Vec<rusqlite::types::Value> = vec![
        (q.after.min(i64::MAX as u64) as i64).into(),
        (q.upto.min(i64::MAX as u64) as i64).into(),
    ];
    if let Some(scopes) = &q.scopes {
        sql.push_str(" AND ");
        sql.push_str(&scope_filter(scopes, &mut args));
    }
    sql.push_str(&format!(" ORDER BY id LIMIT {}", q.limit.max(1)));
    rows_to_events(conn, &sql, args)
}

/// The SQL condition for events in `scopes` (as [`Scope::is`] reads them: exact names, and
/// [`crate::envelope::EVERY_USER`] for every user scope), its values appended to `args`.
fn scope_filter(scopes: &[String], args: &mut Vec<rusqlite::types::Value>) -> String {
    let mut exact = Vec::new();
    let mut every_user = false;
    for s in scopes {
        if s == crate::envelope::EVERY_USER {
            every_user = true;
        } else {
            args.push(s.clone().into());
            exact.push(format!("?{}", args.len()));
        }
    }
    let mut sql = format!("(scope IN ({})", exact.join(","));
    if every_user {
        sql.push_str(" OR scope GLOB 'user:*'");
    }
    sql.push(')');
    sql
}

/// Runs a `SELECT id, type, scope, body` and builds the events.
fn rows_to_events(
    conn: &Connection,
    sql: &str,
    args: Vec<rusqlite::types::Value>,
) -> Result<Vec<Arc<Event>>, JournalError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params_from_iter(args), |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, kind, scope, body) = row?;
        let id = id as u64;
        let scope =
            Scope::parse(&scope).map_err(|message| JournalError::Corrupt { id, message })?;
        let body = RawValue::from_string(body).map_err(|e| JournalError::Corrupt {
            id,
            message: e.to_string(),
        })?;
        out.push(Arc::new(Event {
            id,
            kind,
            scope,
            body,
        }));
    }
    Ok(out)
}

struct Writer {
    conn: Connection,
    recent: Recent,
    shared: Arc<Shared>,
    opts: JournalOptions,
    /// The id of the newest event written to SQLite. Ahead of `shared.head` while a commit
    /// waits for its sync; ids are given from here.
    written: u64,
    /// Where a commit goes next: the sync thread (`journal_sync = "full"` with the WAL found),
    /// or straight to [`Publisher::publish`].
    next: Next,
    /// When retention last ran; `None` before the first run.
    last_prune: Option<Instant>,
}

type Reply = oneshot::Sender<Result<Vec<Arc<Event>>, JournalError>>;

/// A commit written to SQLite, on its way to its publishers.
struct Committed {
    /// The id of its last event.
    head: u64,
    events: Vec<Arc<Event>>,
    /// Each publisher's reply and how many of `events` are theirs, in order.
    replies: Vec<(usize, Reply)>,
}

enum Next {
    Publish(Publisher),
    Sync(std::sync::mpsc::SyncSender<SyncMsg>),
}

enum SyncMsg {
    Committed(Committed),
    /// Everything sent before is published; then this is answered.
    Flush(std::sync::mpsc::Sender<()>),
}

/// How many commits may wait for the sync thread before the writer waits too. None: a
/// hand-over, so the writer waits until the sync thread takes its commit, and meanwhile the
/// next batch gathers in the channel (a queue of 64 was no faster; BENCHMARKS.md).
const SYNC_QUEUE: usize = 0;

/// Makes commits visible: the window, then the head, then the fan-out in id order, then the
/// replies. Runs on exactly one thread (the writer's, or the sync thread's), so commits are
/// published in the order they were written.
struct Publisher {
    recent: Recent,
    shared: Arc<Shared>,
    fanout: Fanout,
}

impl Publisher {
    fn publish(&self, c: Committed) {
        // The window first, then the head: a reader that sees the new head finds the events
        // in the window. `oldest` needs no update: an empty journal already reports
        // `head + 1`, which is the first id of this batch.
        let before = self.shared.head.load(Ordering::Acquire);
        if let Ok(mut r) = self.recent.write() {
            r.extend(c.events.iter().cloned());
        }
        self.shared.head.store(c.head, Ordering::Release);
        self.shared
            .appended
            .fetch_add(c.head.saturating_sub(before), Ordering::Relaxed);
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        let mut events = c.events.into_iter();
        for (n, reply) in c.replies {
            let mine: Vec<Arc<Event>> = events.by_ref().take(n).collect();
            for e in &mine {
                match &e.scope {
                    Scope::Client(client) => (self.fanout.direct)(client, e.id),
                    // no receivers is fine: nobody is connected
                    _ => {
                        let _ = self.fanout.shared.send(e.clone());
                    }
                }
            }
            let _ = reply.send(Ok(mine));
        }
    }

    /// Answers a commit whose sync failed: it is not durable, so nobody sees it.
    fn refuse(c: Committed, why: &str) {
        for (_, reply) in c.replies {
            let _ = reply.send(Err(JournalError::Write(why.to_string())));
        }
    }
}

/// The sync thread: makes the WAL durable for every commit queued behind one `fdatasync`, then
/// publishes them. The writer meanwhile writes the next commit, so the disk's flush no longer
/// stops the writing (with `synchronous = FULL` SQLite flushed inside each commit).
///
/// A failed sync is not retried (after a failed `fsync` the kernel may have dropped the
/// unwritten pages, and a second `fsync` can succeed without them): the journal refuses
/// every later write, and the server must be restarted (SQLite then recovers what the WAL
/// holds).
fn sync_loop(
    mut sync: impl FnMut() -> std::io::Result<()>,
    rx: std::sync::mpsc::Receiver<SyncMsg>,
    publisher: Publisher,
) {
    let mut queued: Vec<SyncMsg> = Vec::new();
    while let Ok(first) = rx.recv() {
        queued.push(first);
        while let Ok(m) = rx.try_recv() {
            queued.push(m);
        }
        let has_commits = queued.iter().any(|m| matches!(m, SyncMsg::Committed(_)));
        let synced = if !has_commits || publisher.shared.failed.load(Ordering::Acquire) {
            Ok(())
        } else {
            sync()
        };
        if let Err(e) = &synced {
            tracing::error!(error = %e, "journal sync failed; the journal refuses writes until the server restarts");
            publisher.shared.failed.store(true, Ordering::Release);
        }
        let failed = publisher.shared.failed.load(Ordering::Acquire);
        for m in queued.drain(..) {
            match m {
                SyncMsg::Committed(c) if failed => Publisher::refuse(c, SYNC_FAILED),
                SyncMsg::Committed(c) => publisher.publish(c),
                SyncMsg::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }
}

const SYNC_FAILED: &str = "the journal's disk failed to sync; restart the server (nothing after the last acknowledged event is kept)";

/// Opens the WAL of the journal at `db` for syncing it, and syncs its folder once so that
/// the file itself survives a power loss. `None` (then SQLite syncs in each commit) when the
/// WAL is not where SQLite keeps it.
fn open_wal(db: &Path) -> Option<std::fs::File> {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    // write access: Windows flushes a file only through a handle that may write it
    let wal = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(PathBuf::from(name))
    {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "journal WAL not found; SQLite syncs each commit itself");
            return None;
        }
    };
    #[cfg(unix)]
    if let Some(dir) = db.parent()
        && let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all())
    {
        tracing::warn!(error = %e, "cannot sync the journal's folder; SQLite syncs each commit itself");
        return None;
    }
    Some(wal)
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>, rt: tokio::runtime::Handle) {
        loop {
            let received = rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(1), rx.recv()).await });
            let first = match received {
                // idle: a good moment to apply age-based retention
                Err(_elapsed) => {
                    self.maybe_prune();
                    continue;
                }
                // every handle is gone
                Ok(None) => return,
                Ok(Some(m)) => m,
            };
            let mut batch: Vec<(Vec<NewEvent>, Reply)> = Vec::new();
            let mut shutdown = None;
            let mut count = 0usize;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Write { events, reply } => {
                        count += events.len();
                        batch.push((events, reply));
                    }
                    Msg::Shutdown(done) => {
                        shutdown = Some(done);
                        break;
                    }
                }
                if count >= self.opts.batch_max {
                    break;
                }
                next = rx.try_recv().ok();
            }
            if !batch.is_empty() {
                self.commit(batch);
            }
            if let Some(done) = shutdown {
                self.flush();
                self.prune_now();
                rx.close();
                tracing::info!(
                    head = self.shared.head.load(Ordering::Acquire),
                    "journal flushed and closed"
                );
                let _ = done.send(());
                return;
            }
            self.maybe_prune();
        }
    }

    /// Waits until every commit written so far is published.
    fn flush(&self) {
        if let Next::Sync(tx) = &self.next {
            let (done, wait) = std::sync::mpsc::channel();
            if tx.send(SyncMsg::Flush(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }

    fn commit(&mut self, batch: Vec<(Vec<NewEvent>, Reply)>) {
        if self.shared.failed.load(Ordering::Acquire) {
            for (_, reply) in batch {
                let _ = reply.send(Err(JournalError::Write(SYNC_FAILED.into())));
            }
            return;
        }
        let mut replies = Vec::with_capacity(batch.len());
        let mut events = Vec::with_capacity(batch.len());
        for (evs, reply) in batch {
            replies.push((evs.len(), reply));
            events.push(evs);
        }
        match self.write_batch(events) {
            Ok((head, events)) => {
                self.written = head;
                let c = Committed {
                    head,
                    events,
                    replies,
                };
                match &self.next {
                    Next::Publish(p) => p.publish(c),
                    Next::Sync(tx) => {
                        if let Err(std::sync::mpsc::SendError(SyncMsg::Committed(c))) =
                            tx.send(SyncMsg::Committed(c))
                        {
                            Publisher::refuse(c, "the journal's sync thread stopped");
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "journal commit failed");
                let msg = e.to_string();
                for (_, reply) in replies {
                    let _ = reply.send(Err(JournalError::Write(msg.clone())));
                }
            }
        }
    }

    /// Writes the events of one commit; the publishers' events in order, each owned (moved
    /// into the [`Event`]s, not copied).
    fn write_batch(
        &mut self,
        batch: Vec<Vec<NewEvent>>,
    ) -> Result<(u64, Vec<Arc<Event>>), JournalError> {
        use std::fmt::Write as _;
        let now = chrono::Utc::now();
        let ts = crate::clock::rfc3339(now);
        let ts_ms = now.timestamp_millis();
        let tx = self.conn.transaction()?;
        let mut id = self.written;
        let mut out = Vec::with_capacity(batch.iter().map(Vec::len).sum());
        // reused for every event
        let mut scope = String::new();
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO events (id, type, scope, ts_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for ev in batch.into_iter().flatten() {
                id += 1;
                scope.clear();
                let _ = write!(scope, "{}", ev.scope);
                // `to_raw_value` keeps the text it wrote without parsing it again
                // (`RawValue::from_string` would)
                let body = serde_json::value::to_raw_value(&EnvelopeRef {
                    id,
                    epoch: &self.shared.epoch,
                    kind: &ev.kind,
                    scope: &scope,
                    ts: &ts,
                    data: &ev.data,
                    publisher: ev.publisher.as_ref(),
                })
                .map_err(|e| JournalError::Write(e.to_string()))?;
                stmt.execute(params![id as i64, ev.kind, scope, ts_ms, body.get()])?;
                out.push(Arc::new(Event {
                    id,
                    kind: ev.kind,
                    scope: ev.scope,
                    body,
                }));
            }
        }
        tx.commit()?;
        Ok((id, out))
    }

    fn maybe_prune(&mut self) {
        if self
            .last_prune
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.prune_now();
        }
    }

    /// Applies retention by count and by age, then refreshes `oldest`.
    ///
    /// Both remove a prefix of the journal in id order. By age, that prefix ends before the
    /// first event younger than the limit: ids follow commit order, so events are in time order
    /// unless the wall clock stepped back, and then an older event behind a younger one waits
    /// for the next pass instead of leaving a hole. Finding the cut reads only the rows it
    /// removes (no index on the time: it cost every commit a page).
    ///
    /// The head is stored in `meta` in the same transaction as the deletion: commits do not
    /// write it (that too was a page per commit), so the stored head only has to cover ids
    /// that retention removed. On open the head is the larger of it and the newest stored id.
    fn prune_now(&mut self) {
        self.last_prune = Some(Instant::now());
        let head = self.shared.head.load(Ordering::Acquire);
        let mut cut = 0u64;
        if self.opts.retention_max_events > 0 && head > self.opts.retention_max_events {
            cut = head - self.opts.retention_max_events;
        }
        if self.opts.retention_max_age_s > 0 {
            let cutoff = chrono::Utc::now().timestamp_millis()
                - (self.opts.retention_max_age_s as i64).saturating_mul(1000);
            let first_young: Result<Option<i64>, _> = self
                .conn
                .query_row(
                    "SELECT id FROM events WHERE ts_ms >= ?1 ORDER BY id LIMIT 1",
                    [cutoff],
                    |r| r.get(0),
                )
                .optional();
            match first_young {
                Ok(Some(id)) => cut = cut.max((id as u64).saturating_sub(1)),
                // everything stored is older (or nothing is stored)
                Ok(None) => cut = cut.max(head),
                Err(e) => tracing::warn!(error = %e, "journal retention (age) failed"),
            }
        }
        // never past the published head (a commit waiting for its sync is young anyway)
        let cut = cut.min(head);
        if cut < self.shared.oldest.load(Ordering::Acquire) {
            return;
        }
        let deleted = (|| -> Result<usize, rusqlite::Error> {
            let tx = self.conn.transaction()?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('head', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [self.written.to_string()],
            )?;
            let n = tx.execute(
                "DELETE FROM events WHERE id <= ?1",
                [cut.min(i64::MAX as u64) as i64],
            )?;
            tx.commit()?;
            Ok(n)
        })();
        match deleted {
            Ok(deleted) => {
                // ids have no holes: everything up to the cut is gone
                self.shared.oldest.store(cut + 1, Ordering::Release);
                if let Ok(mut r) = self.recent.write() {
                    r.drop_before(cut + 1);
                }
                tracing::debug!(deleted, "journal retention applied");
            }
            Err(e) => tracing::warn!(error = %e, "journal retention failed"),
        }
    }
}

impl Engine for SqliteJournal {
    fn epoch(&self) -> &str {
        SqliteJournal::epoch(self)
    }

    fn head(&self) -> u64 {
        SqliteJournal::head(self)
    }

    fn oldest(&self) -> u64 {
        SqliteJournal::oldest(self)
    }

    fn info(&self) -> JournalInfo {
        SqliteJournal::info(self)
    }

    fn append(
        &self,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'_, Result<Vec<Arc<Event>>, JournalError>> {
        Box::pin(SqliteJournal::append(self, events))
    }

    fn read(&self, q: ReadQuery) -> BoxFuture<'_, Result<Vec<Arc<Event>>, JournalError>> {
        Box::pin(SqliteJournal::read(self, q))
    }

    fn activity(&self, q: ActivityQuery) -> BoxFuture<'_, Result<Vec<Arc<Event>>, JournalError>> {
        Box::pin(SqliteJournal::activity(self, q))
    }

    fn clear_cache(&self) -> usize {
        SqliteJournal::clear_cache(self)
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(SqliteJournal::close(self))
    }

    fn state(&self) -> BoxFuture<'_, serde_json::Value> {
        let path = self.path.display().to_string();
        let sync = self.sync;
        Box::pin(async move { serde_json::json!({"engine": "sqlite", "path": path, "sync": sync}) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Answer = oneshot::Receiver<Result<Vec<Arc<Event>>, JournalError>>;

    fn committed(head: u64, n: usize) -> (Committed, Answer) {
        let (reply, rx) = oneshot::channel();
        let events = (head + 1 - n as u64..=head)
            .map(|id| {
                Arc::new(Event {
                    id,
                    kind: "t".into(),
                    scope: Scope::Global,
                    body: RawValue::from_string("{}".into()).unwrap(),
                })
            })
            .collect();
        (
            Committed {
                head,
                events,
                replies: vec![(n, reply)],
            },
            rx,
        )
    }

    /// A failed sync publishes nothing it covered, and the journal refuses from then on (a
    /// second `fsync` could succeed without the pages the first one lost).
    #[test]
    fn a_failed_sync_publishes_nothing_and_stops_the_journal() {
        let shared = Arc::new(Shared {
            epoch: "e".into(),
            head: AtomicU64::new(0),
            oldest: AtomicU64::new(1),
            appended: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        });
        let (tx, mut fanned) = tokio::sync::broadcast::channel(16);
        let publisher = Publisher {
            recent: super::super::new_window(),
            shared: shared.clone(),
            fanout: Fanout {
                shared: tx,
                direct: Box::new(|_, _| {}),
            },
        };
        let (to_sync, rx) = std::sync::mpsc::sync_channel(SYNC_QUEUE);
        let mut results = vec![Ok(()), Err(std::io::Error::other("EIO")), Ok(())];
        results.reverse();
        let thread = std::thread::spawn(move || {
            sync_loop(move || results.pop().unwrap_or(Ok(())), rx, publisher)
        });
        let send = |c| to_sync.send(SyncMsg::Committed(c)).unwrap();
        let flush = || {
            let (done, wait) = std::sync::mpsc::channel();
            to_sync.send(SyncMsg::Flush(done)).unwrap();
            wait.recv().unwrap();
        };
        let (c, mut first) = committed(2, 2);
        send(c);
        flush();
        assert_eq!(first.try_recv().unwrap().unwrap().len(), 2);
        assert_eq!(shared.head.load(Ordering::Acquire), 2);
        let (c, mut second) = committed(3, 1);
        send(c);
        flush();
        assert!(matches!(
            second.try_recv().unwrap(),
            Err(JournalError::Write(_))
        ));
        assert!(shared.failed.load(Ordering::Acquire));
        // the next sync would succeed; the journal still refuses
        let (c, mut third) = committed(4, 1);
        send(c);
        flush();
        assert!(third.try_recv().unwrap().is_err());
        assert_eq!(
            shared.head.load(Ordering::Acquire),
            2,
            "nothing unsynced is published"
        );
        let ids: Vec<u64> = std::iter::from_fn(|| fanned.try_recv().ok())
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec![1, 2]);
        drop(to_sync);
        thread.join().unwrap();
    }
}
