//! Keeps the index current while the server runs: a notify watcher (debounced, since one save
//! raises several raw events) reports changed paths; each batch is re-indexed file by file
//! (a reported folder with everything under it, see [`indexer::update_files`]) and every
//! change is published as `file_changed {path, kind}`, with one for each document found or
//! gone under a reported folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use notify_debouncer_full::notify::{self, EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, NoCache, new_debouncer_opt};
use serde_json::json;

use super::Memory;
use super::indexer;
use crate::envelope::{NewEvent, Scope};
use crate::hub::Hub;

/// What happened to a path, as published.
fn kind_name(k: &EventKind) -> Option<&'static str> {
    match k {
        EventKind::Create(_) => Some("created"),
        EventKind::Modify(_) => Some("modified"),
        EventKind::Remove(_) => Some("deleted"),
        _ => None,
    }
}

pub use super::indexer::Change;

/// Watches the folder `root` (canonical) until `stop`: batches of changes, debounced 300 ms,
/// the last kind per path winning, without the places the index never looks (hidden names,
/// the skipped folders). `None` when the OS gives no watcher (logged).
pub fn watch(root: &Path, stop: CancellationToken) -> Option<mpsc::Receiver<Vec<Change>>> {
    let (tx, mut rx) = mpsc::channel::<Vec<(PathBuf, &'static str)>>(64);
    // No file-id cache: on Windows and macOS the recommended one opens every file it hears
    // about to read its id, including the index's own segment files while tantivy is writing
    // them, which then fail with "access denied". We re-index by path, so ids (used only to
    // pair renames) are not needed.
    let debouncer = new_debouncer_opt::<_, RecommendedWatcher, NoCache>(
        Duration::from_millis(300),
        None,
        move |res: DebounceEventResult| match res {
            Ok(events) => {
                let batch: Vec<(PathBuf, &'static str)> = events
                    .iter()
                    .filter_map(|e| kind_name(&e.kind).map(|k| (e, k)))
                    .flat_map(|(e, k)| e.paths.iter().map(move |p| (p.clone(), k)))
                    .collect();
                if !batch.is_empty() {
                    let _ = tx.blocking_send(batch);
                }
            }
            Err(errors) => {
                for e in errors {
                    tracing::warn!(error = %e, "file watcher error");
                }
            }
        },
        NoCache::new(),
        // Never watch through a link: a linked folder (say to `/`) would otherwise be watched
        // as if it were part of the data folder. Links are not indexed either way
        // (`confined::open`); this keeps the watcher from even looking.
        notify::Config::default().with_follow_symlinks(false),
    );
    let mut debouncer = match debouncer {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "file watcher unavailable; changes are picked up by re-indexing");
            return None;
        }
    };
    if let Err(e) = debouncer.watch(root, RecursiveMode::Recursive) {
        tracing::warn!(error = %e, root = %root.display(), "cannot watch the data folder");
        return None;
    }
    // The state folder (the journal's WAL, the index's segments) is never indexed, and its
    // writes would wake the watcher's threads for each commit: with inotify, one recursive
    // watch is a watch per folder, and the state folder's (with those below it) can be taken
    // off again. Where the OS watches the tree as one (Windows, macOS) this finds no watch of
    // its own and changes nothing; those events are dropped in `watched_rel` as before.
    let state = root.join(crate::config::STATE_DIR);
    if state.is_dir()
        && let Err(e) = debouncer.unwatch(&state)
    {
        tracing::debug!(error = %e, "the state folder stays watched");
    }
    let (out, changes) = mpsc::channel::<Vec<Change>>(64);
    let root = root.to_path_buf();
    tokio::spawn(async move {
        let _keep = debouncer; // dropping it stops the watcher
        loop {
            let batch = tokio::select! {
                _ = stop.cancelled() => return,
                b = rx.recv() => match b { Some(b) => b, None => return },
            };
            let mut last: BTreeMap<String, (PathBuf, &'static str)> = BTreeMap::new();
            for (p, k) in batch {
                if let Some(rel) = watched_rel(&root, &p) {
                    last.insert(rel, (p, k));
                }
            }
            if last.is_empty() {
                continue;
            }
            let list = last
                .into_iter()
                .map(|(rel, (full, k))| {
                    let kind = if k != "deleted" && !full.exists() {
                        "deleted"
                    } else {
                        k
                    };
                    Change { rel, full, kind }
                })
                .collect();
            if out.send(list).await.is_err() {
                return;
            }
        }
    });
    Some(changes)
}

/// How long the watcher waits before trying a failed index update again, each time.
const UPDATE_RETRIES: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(100),
    std::time::Duration::from_millis(500),
    std::time::Duration::from_secs(2),
];

/// Starts watching the data folder; runs until shutdown. Each batch of changes is indexed,
/// then published as `file_changed {path, kind}`. Failures are logged, not fatal: the server
/// still serves and a re-index still works without a watcher.
pub fn start(m: Arc<Memory>, hub: Arc<Hub>) {
    let Some(mut changes) = watch(&m.root, hub.shutdown.clone()) else {
        return;
    };
    tokio::spawn(async move {
        while let Some(batch) = changes.recv().await {
            // A failure can pass: on Windows a file the index replaces or deletes may be held
            // open for a moment ("Access denied"). Given up on, the change would stay out of
            // the index until a re-index, so the batch is tried again a few times; it is
            // idempotent (each file is read again, each removal repeated).
            let mut retries = UPDATE_RETRIES.iter();
            let mut touched = Vec::new();
            loop {
                let (m2, list) = (m.clone(), batch.clone());
                let e = match tokio::task::spawn_blocking(move || indexer::update_files(&m2, &list))
                    .await
                {
                    Ok(Ok(t)) => {
                        touched = t;
                        break;
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => {
                        tracing::warn!(error = %e, "index update task failed");
                        break;
                    }
                };
                let Some(wait) = retries.next() else {
                    tracing::warn!(error = %e, "could not update the index; a re-index will");
                    break;
                };
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "could not update the index");
                tokio::select! {
                    _ = tokio::time::sleep(*wait) => {}
                    _ = hub.shutdown.cancelled() => return,
                }
            }
            // the reported paths, then the documents found or gone under reported folders
            let events = batch
                .into_iter()
                .map(|c| (c.rel, c.kind))
                .chain(touched.into_iter().map(|t| (t.rel, t.kind)))
                .map(|(path, kind)| {
                    NewEvent::new(
                        "file_changed",
                        Scope::Global,
                        json!({"path": path, "kind": kind}),
                    )
                })
                .collect();
            if let Err(e) = hub.publish(events).await {
                tracing::warn!(error = %e, "could not publish file_changed");
            }
        }
    });
}

/// The path relative to the root, unless it is somewhere the index never looks.
fn watched_rel(root: &Path, p: &Path) -> Option<String> {
    let rel = p.strip_prefix(root).ok()?;
    // a name that is not UTF-8 is not indexed (the walk counts it as skipped)
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_str().map(str::to_string))
        .collect::<Option<_>>()?;
    if parts.is_empty()
        || parts
            .iter()
            .any(|c| c.starts_with('.') || indexer::SKIP_DIRS.contains(&c.as_str()))
    {
        return None;
    }
    Some(parts.join("/"))
}
