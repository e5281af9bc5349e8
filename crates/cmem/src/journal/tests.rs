//! The journal beside its algorithm. [`conformance`] is what every engine must do — dense ids in
//! one order, fan-out in that order before `append` returns, an addressed event only to its
//! connection, reads and activity by scope and type, ids and epoch kept across a reopen — and
//! runs here on the SQLite engine; an engine added later runs the same functions. Then what is
//! SQLite's own: group commit, the in-memory window agreeing with the file, retention by count
//! and by age.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::envelope::Scope;

/// The suite every engine passes, on a journal it opened (and can open again on the same store).
pub(crate) mod conformance {
    use super::*;

    /// Ids are dense and unique, each publisher's batch contiguous, and the fan-out sees them in
    /// id order, each before its `append` returned; an event addressed to one client reaches
    /// only the direct sink.
    pub async fn ids_and_fanout(
        j: Arc<Journal>,
        mut rx: broadcast::Receiver<Arc<Event>>,
        direct: Arc<Mutex<Vec<(String, u64)>>>,
    ) {
        let start = j.head();
        let first = j.append(events(10)).await.unwrap();
        assert_eq!(
            first.iter().map(|e| e.id).collect::<Vec<_>>(),
            ((start + 1)..=(start + 10)).collect::<Vec<_>>()
        );
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let j = j.clone();
                tokio::spawn(async move { j.append(events(2)).await.unwrap() })
            })
            .collect();
        let mut ids = Vec::new();
        for t in tasks {
            let batch = t.await.unwrap();
            assert!(batch[1].id > batch[0].id, "a batch keeps its order");
            ids.extend(batch.iter().map(|e| e.id));
        }
        ids.sort();
        assert_eq!(
            ids,
            ((start + 11)..=(start + 110)).collect::<Vec<_>>(),
            "dense, unique ids"
        );
        let addressed = j
            .append(vec![NewEvent::new(
                "note",
                Scope::Client("c1".into()),
                json!({}),
            )])
            .await
            .unwrap();
        let last = j.append(events(1)).await.unwrap()[0].id;
        let mut seen = Vec::new();
        while let Ok(e) = rx.try_recv() {
            seen.push(e.id);
        }
        let mut want: Vec<u64> = ((start + 1)..=(start + 110)).collect();
        want.push(last);
        assert_eq!(
            seen, want,
            "shared fan-out in id order, without the addressed event"
        );
        assert_eq!(
            direct.lock().unwrap().clone(),
            [("c1".to_string(), addressed[0].id)],
            "the addressed event went to its connection"
        );
        assert_eq!(j.head(), last);
    }

    /// Reads come in id order, bounded by `upto` and `limit`, only the scopes asked for.
    pub async fn reads(j: &Journal) {
        let start = j.head();
        let mut batch = Vec::new();
        for i in 0..20u64 {
            let scope = if i % 2 == 0 {
                Scope::Global
            } else {
                Scope::Workspace("x".into())
            };
            batch.push(NewEvent::new("test", scope, json!({ "i": i })));
        }
        j.append(batch).await.unwrap();
        assert_eq!(
            read_all(j, start).await,
            ((start + 1)..=(start + 20)).collect::<Vec<_>>()
        );
        let q = |after, upto, scopes: Option<Vec<String>>, limit| ReadQuery {
            after,
            upto,
            scopes,
            limit,
        };
        let page = j
            .read(q(start, start + 20, Some(vec!["workspace:x".into()]), 3))
            .await
            .unwrap();
        assert_eq!(
            page.iter().map(|e| e.id).collect::<Vec<_>>(),
            [start + 2, start + 4, start + 6]
        );
        let page = j.read(q(start + 5, start + 8, None, 100)).await.unwrap();
        assert_eq!(
            page.iter().map(|e| e.id).collect::<Vec<_>>(),
            [start + 6, start + 7, start + 8]
        );
        assert!(
            j.read(q(start, start + 20, Some(vec!["workspace:y".into()]), 5))
                .await
                .unwrap()
                .is_empty()
        );
        // every envelope names this store's epoch and its own id
        for e in j.read(q(start, start + 20, None, 100)).await.unwrap() {
            let v: serde_json::Value = serde_json::from_str(e.json()).unwrap();
            assert_eq!(v["id"], e.id);
            assert_eq!(v["epoch"], j.epoch());
        }
    }

    /// `activity`: the newest or those after an id, by scope, named and excluded types, never a
    /// client's own events. Expects an empty journal.
    pub async fn activity(j: &Journal) {
        assert_eq!(j.head(), 0, "activity runs on a fresh store");
        let mut batch = Vec::new();
        for i in 0..10u64 {
            let scope = if i % 2 == 0 {
                Scope::Global
            } else {
                Scope::Workspace("eng".into())
            };
            let kind = if i % 3 == 0 { "system_status" } else { "note" };
            batch.push(NewEvent::new(kind, scope, json!({ "i": i })));
        }
        batch.push(NewEvent::new("note", Scope::Client("c1".into()), json!({})));
        j.append(batch).await.unwrap();
        let ids = |v: Vec<Arc<Event>>| v.iter().map(|e| e.id).collect::<Vec<_>>();
        let q = |after, scopes: &[&str], types: Option<&[&str]>, exclude: &[&str], limit| {
            ActivityQuery {
                after,
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                types: types.map(|t| t.iter().map(|s| s.to_string()).collect()),
                exclude: exclude.iter().map(|s| s.to_string()).collect(),
                limit,
            }
        };
        // the newest three a global reader may see, oldest first
        assert_eq!(
            ids(j
                .activity(q(None, &["global"], None, &[], 3))
                .await
                .unwrap()),
            [5, 7, 9]
        );
        // after an id: the next ones, oldest first
        assert_eq!(
            ids(j
                .activity(q(Some(2), &["global", "workspace:eng"], None, &[], 3))
                .await
                .unwrap()),
            [3, 4, 5]
        );
        // excluded types go; named types are all that come
        assert_eq!(
            ids(j
                .activity(q(None, &["workspace:eng"], None, &["system_status"], 10))
                .await
                .unwrap()),
            [2, 6, 8]
        );
        assert_eq!(
            ids(j
                .activity(q(
                    None,
                    &["global", "workspace:eng"],
                    Some(&["system_status"]),
                    &[],
                    10
                ))
                .await
                .unwrap()),
            [1, 4, 7, 10]
        );
        // no scope, or an empty type list, reads nothing; a client's own events never come
        assert!(
            j.activity(q(None, &[], None, &[], 10))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            j.activity(q(None, &["global"], Some(&[]), &[], 10))
                .await
                .unwrap()
                .is_empty()
        );
        let all = j
            .activity(q(None, &["global", "workspace:eng"], None, &[], 100))
            .await
            .unwrap();
        assert_eq!(all.len(), 10);
    }

    /// Closed and opened again on the same store: the same epoch, the same head, the next id
    /// after the last one given.
    pub async fn reopen<F: std::future::Future<Output = Journal>>(
        first: Journal,
        open_again: impl FnOnce() -> F,
    ) {
        first.append(events(5)).await.unwrap();
        let (epoch, head) = (first.epoch().to_string(), first.head());
        first.close().await;
        assert!(
            first.append(events(1)).await.is_err(),
            "a closed journal refuses appends"
        );
        drop(first);
        let j = open_again().await;
        assert_eq!(j.epoch(), epoch, "same store, same epoch");
        assert_eq!(j.head(), head);
        assert_eq!(j.append(events(1)).await.unwrap()[0].id, head + 1);
        j.close().await;
    }
}

fn options() -> JournalOptions {
    JournalOptions {
        full_sync: false,
        batch_max: 1000,
        retention_max_events: 0,
        retention_max_age_s: 0,
    }
}

fn open(dir: &Path, opts: JournalOptions) -> (Journal, broadcast::Receiver<Arc<Event>>) {
    let (j, rx, _) = open_with_direct(dir, opts);
    (j, rx)
}

type Direct = Arc<Mutex<Vec<(String, u64)>>>;

fn open_with_direct(
    dir: &Path,
    opts: JournalOptions,
) -> (Journal, broadcast::Receiver<Arc<Event>>, Direct) {
    let (tx, rx) = broadcast::channel(1 << 16);
    let direct: Direct = Default::default();
    let d = direct.clone();
    let j = Journal::open(
        dir,
        opts,
        Fanout {
            shared: tx,
            direct: Box::new(move |client, id| d.lock().unwrap().push((client.to_string(), id))),
        },
    )
    .unwrap();
    (j, rx, direct)
}

/// The conformance suite on the SQLite engine opened with `opts`, each part on a new store.
async fn sqlite_conformance(opts: JournalOptions) {
    let dir = tempfile::tempdir().unwrap();
    let (j, _rx) = open(dir.path(), opts.clone());
    conformance::activity(&j).await;
    conformance::reads(&j).await;
    j.close().await;
    let dir = tempfile::tempdir().unwrap();
    let (j, rx, direct) = open_with_direct(dir.path(), opts.clone());
    conformance::ids_and_fanout(Arc::new(j), rx, direct).await;
    let dir = tempfile::tempdir().unwrap();
    let (j, _rx) = open(dir.path(), opts.clone());
    let path = dir.path().to_path_buf();
    conformance::reopen(j, move || async move { open(&path, opts).0 }).await;
}

#[tokio::test]
async fn sqlite_passes_the_conformance_suite() {
    sqlite_conformance(options()).await;
}

/// With `journal_sync = "full"` the WAL is synced by a thread of its own, which also publishes:
/// the same suite, and what the sync thread adds (order across overlapping commits, a close
/// that waits for the last sync).
#[tokio::test]
async fn sqlite_with_its_sync_thread_passes_the_conformance_suite() {
    let full = || JournalOptions {
        full_sync: true,
        ..options()
    };
    sqlite_conformance(full()).await;

    // many publishers at once: commits overlap their syncs, yet every reply holds its own
    // contiguous ids, the fan-out sees every id once in order, and a close waits for the last
    let dir = tempfile::tempdir().unwrap();
    let (j, mut rx) = open(dir.path(), full());
    assert_eq!(j.state().await["sync"], "thread");
    let j = Arc::new(j);
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let j = j.clone();
            tokio::spawn(async move { j.append(events(3)).await.unwrap() })
        })
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        let batch = t.await.unwrap();
        assert_eq!(batch[2].id, batch[0].id + 2);
        // acknowledged means published: the head already covers it
        assert!(j.head() >= batch[2].id);
        acked.extend(batch.iter().map(|e| e.id));
    }
    acked.sort_unstable();
    assert_eq!(acked, (1..=192).collect::<Vec<u64>>());
    let mut seen = Vec::new();
    while let Ok(e) = rx.try_recv() {
        seen.push(e.id);
    }
    assert_eq!(seen, (1..=192).collect::<Vec<u64>>());
    let last = j.append(events(5)).await.unwrap();
    j.close().await;
    drop(j);
    let (j, _rx) = open(dir.path(), full());
    assert_eq!(j.head(), last[4].id);
    assert_eq!(read_all(&j, 0).await.len(), 197);
    j.close().await;
}

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent::new("test", Scope::Global, json!({ "i": i })))
        .collect()
}

async fn read_all(j: &Journal, after: u64) -> Vec<u64> {
    j.read(ReadQuery {
        after,
        upto: j.head(),
        scopes: None,
        limit: 1_000_000,
    })
    .await
    .unwrap()
    .iter()
    .map(|e| e.id)
    .collect()
}

/// Waits (bounded) until `done` holds; retention runs on the writer's own schedule.
async fn until(what: &str, done: impl Fn() -> bool) {
    crate::testing::until(what, 10, || async { done().then_some(()) }).await
}

#[tokio::test]
async fn a_batch_is_one_commit_and_concurrent_publishers_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _rx) = open(dir.path(), options());
    j.append(events(10)).await.unwrap();
    assert_eq!(j.info().commits_since_start, 1);
    let j = Arc::new(j);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let j = j.clone();
            tokio::spawn(async move { j.append(events(2)).await.unwrap() })
        })
        .collect();
    for t in tasks {
        let batch = t.await.unwrap();
        // one commit per batch: contiguous (the replicated engine does not promise this)
        assert_eq!(batch[1].id, batch[0].id + 1);
    }
    let info = j.info();
    assert_eq!(info.appended_since_start, 110);
    assert!(info.commits_since_start <= 51);
}

#[tokio::test]
async fn ids_continue_across_a_restart_and_after_retention_empties_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _rx) = open(dir.path(), options());
    j.append(events(6)).await.unwrap();
    j.close().await;
    drop(j);

    // retention by age deletes every row; the next id still follows the last one given
    let mut o = options();
    o.retention_max_age_s = 1;
    let (j, _rx) = open(dir.path(), o.clone());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    until("age retention to empty the journal", || {
        j.oldest() == j.head() + 1
    })
    .await;
    assert!(read_all(&j, 0).await.is_empty());
    j.close().await;
    drop(j);
    let (j, _rx) = open(dir.path(), o);
    assert_eq!(j.head(), 6);
    assert_eq!(j.oldest(), 7, "an empty journal reports head + 1");
    assert_eq!(j.append(events(1)).await.unwrap()[0].id, 7);
}

#[tokio::test]
async fn reads_agree_inside_and_beyond_the_memory_window() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _rx) = open(dir.path(), options());
    let total = RECENT_CAPACITY + 500;
    for _ in 0..total / 1000 {
        j.append(events(1000)).await.unwrap();
    }
    j.append(events(total % 1000)).await.unwrap();
    assert_eq!(j.head(), total as u64);
    // from the start (SQLite), from near the head (memory), across the boundary
    for after in [0, 400, 600, total as u64 - 10] {
        assert_eq!(
            read_all(&j, after).await,
            ((after + 1)..=total as u64).collect::<Vec<_>>(),
            "after {after}"
        );
    }
    // with the window dropped, the same answers come from SQLite
    assert!(j.clear_cache() > 0);
    assert_eq!(read_all(&j, total as u64 - 10).await.len(), 10);
    // scopes and limits apply on both paths
    let page = j
        .read(ReadQuery {
            after: 0,
            upto: j.head(),
            scopes: Some(vec!["workspace:x".into()]),
            limit: 5,
        })
        .await
        .unwrap();
    assert!(page.is_empty());
}

/// Age retention removes the old prefix and keeps what is younger, and the head survives a
/// restart although commits no longer store it (the deletion does).
#[tokio::test]
async fn retention_by_age_keeps_the_younger_events_across_a_restart() {
    // five events written two hours ago (their times are moved back in the file: waiting for
    // a short limit to pass raced the writer's pruning schedule under load), three just now
    let dir = tempfile::tempdir().unwrap();
    let (j, _rx) = open(dir.path(), options());
    j.append(events(5)).await.unwrap();
    j.close().await;
    drop(j);
    let two_hours_ago = crate::clock::now_ms() as i64 - 2 * 3_600_000;
    let c = rusqlite::Connection::open(dir.path().join("journal.sqlite3")).unwrap();
    assert_eq!(
        c.execute("UPDATE events SET ts_ms = ?1", [two_hours_ago])
            .unwrap(),
        5
    );
    drop(c);
    let mut o = options();
    o.retention_max_age_s = 3_600;
    let (j, _rx) = open(dir.path(), o);
    j.append(events(3)).await.unwrap();
    until("age retention of the first five", || j.oldest() == 6).await;
    assert_eq!(read_all(&j, 0).await, (6..=8).collect::<Vec<_>>());
    j.close().await;
    drop(j);
    let (j, _rx) = open(dir.path(), options());
    assert_eq!((j.oldest(), j.head()), (6, 8));
    assert_eq!(j.append(events(1)).await.unwrap()[0].id, 9);
}

#[tokio::test]
async fn retention_by_count_keeps_the_newest_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options();
    o.retention_max_events = 10;
    let (j, _rx) = open(dir.path(), o);
    j.append(events(50)).await.unwrap();
    until("count retention", || j.oldest() == 41).await;
    assert_eq!(read_all(&j, 0).await, (41..=50).collect::<Vec<_>>());
    assert_eq!(j.info().oldest, 41);
}

#[tokio::test]
async fn activity_reads_the_file_without_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _rx) = open(dir.path(), options());
    conformance::activity(&j).await;
    let q = ActivityQuery {
        after: None,
        scopes: vec!["global".into()],
        types: None,
        exclude: vec![],
        limit: 3,
    };
    let file = activity_in(&dir.path().join("journal.sqlite3"), &q).unwrap();
    assert_eq!(file.iter().map(|e| e.id).collect::<Vec<_>>(), [5, 7, 9]);
    j.close().await;
}

/// The JetStream engine against a real `nats-server -js` (Debian's `nats-server`; CI installs
/// it). Unix only: the Windows build runs its tests under Wine, which cannot start it.
#[cfg(unix)]
mod jetstream {
    use super::*;
    use crate::journal::jetstream::{JetStreamJournal, JetStreamOptions};

    use crate::testing::{nats, nats_cluster};

    fn options(url: &str, stream: &str) -> JetStreamOptions {
        options_r(url, stream, 1)
    }

    fn options_r(url: &str, stream: &str, replicas: usize) -> JetStreamOptions {
        JetStreamOptions {
            url: url.into(),
            stream: stream.into(),
            replicas,
            retention_max_events: 0,
            retention_max_age_s: 0,
        }
    }

    async fn open(url: &str, stream: &str) -> (Journal, broadcast::Receiver<Arc<Event>>, Direct) {
        open_with(options(url, stream)).await.unwrap()
    }

    async fn open_with(
        o: JetStreamOptions,
    ) -> Result<(Journal, broadcast::Receiver<Arc<Event>>, Direct), JournalError> {
        let (tx, rx) = broadcast::channel(1 << 16);
        let direct: Direct = Default::default();
        let d = direct.clone();
        let engine = JetStreamJournal::open(
            o,
            Fanout {
                shared: tx,
                direct: Box::new(move |client, id| {
                    d.lock().unwrap().push((client.to_string(), id))
                }),
            },
        )
        .await?;
        Ok((Journal::with_engine(Box::new(engine)), rx, direct))
    }

    /// Presence is computed alike on every node and published by each: an event with a
    /// de-duplication key is stored once, and each publisher hears its one id.
    #[tokio::test]
    async fn an_event_published_by_two_nodes_with_one_key_is_stored_once() {
        let n = nats();
        let (a, _ra, _) = open(&n.url, "ONCE").await;
        let (b, _rb, _) = open(&n.url, "ONCE").await;
        let ev = |k: &str| {
            NewEvent::new("member_joined", Scope::Global, serde_json::json!({}))
                .once_as(k.to_string())
        };
        let first = a.append(vec![ev("k1")]).await.unwrap();
        let again = b.append(vec![ev("k1"), ev("k2")]).await.unwrap();
        assert_eq!(again[0].id, first[0].id);
        assert_eq!(again[1].id, first[0].id + 1);
        // read where the last append returned: node A may not have followed it yet
        assert_eq!(read_all(&b, 0).await, [first[0].id, first[0].id + 1]);
        a.close().await;
        b.close().await;
    }

    #[tokio::test]
    async fn oldest_is_the_streams_start_and_an_expired_range_is_never_read_with_a_gap() {
        let n = nats();
        // past the in-memory window, the oldest event is still the stream's first
        let (j, _rx, _) = open(&n.url, "LONG").await;
        for _ in 0..(RECENT_CAPACITY / 1000 + 1) {
            j.append(events(1000)).await.unwrap();
        }
        assert!(j.head() > RECENT_CAPACITY as u64);
        assert_eq!(j.oldest(), 1);
        assert_eq!(read_all(&j, 0).await.len() as u64, j.head());
        j.close().await;
        // retention by count drops the start while the node runs: a read from before it
        // fails (the client gets a resync), and `oldest` moves up
        let mut o = options(&n.url, "SHORT");
        o.retention_max_events = 10;
        let (j, _rx, _) = open_with(o).await.unwrap();
        j.append(events(50)).await.unwrap();
        assert!(j.clear_cache() > 0);
        let read = j
            .read(ReadQuery {
                after: 5,
                upto: j.head(),
                scopes: None,
                limit: 100,
            })
            .await;
        assert!(
            matches!(
                read,
                Err(JournalError::Expired {
                    after: 5,
                    oldest: 41
                })
            ),
            "{read:?}"
        );
        assert_eq!(j.oldest(), 41);
        assert_eq!(read_all(&j, 40).await, (41..=50).collect::<Vec<_>>());
        j.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_nats_server_dies_while_publishing_and_every_acknowledged_event_is_delivered() {
        let mut cluster = nats_cluster();
        let urls: Vec<String> = cluster.iter().map(|n| n.url.clone()).collect();
        // node A talks to servers 0 and 1, node B to 1 and 0; server 2 is killed
        let a_urls = format!("{},{}", urls[0], urls[1]);
        let b_urls = format!("{},{}", urls[1], urls[0]);
        // the cluster elects its JetStream leader first; until then the stream cannot be made
        let mut opened = None;
        for _ in 0..60 {
            match open_with(options_r(&a_urls, "R3", 3)).await {
                Ok(j) => {
                    opened = Some(j);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        let (a, _rx_a, _) = opened.expect("a replicated stream on the three servers");
        let (b, mut rx_b, _) = open_with(options_r(&b_urls, "R3", 3)).await.unwrap();
        let a = Arc::new(a);
        let mut acked = Vec::new();
        let mut failures = 0;
        for i in 0..300 {
            if i == 100 {
                let _ = cluster[2].child.kill();
                let _ = cluster[2].child.wait();
            }
            // a publisher retries what was not acknowledged (it may then be stored twice)
            loop {
                match a.append(events(1)).await {
                    Ok(e) => {
                        acked.push(e[0].id);
                        break;
                    }
                    Err(_) => {
                        failures += 1;
                        assert!(failures < 200, "publishing did not recover");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        // every acknowledged id reaches node B's fan-out, in increasing order
        let last = *acked.last().unwrap();
        let mut seen = Vec::new();
        while seen.last().is_none_or(|l| *l < last) {
            // a bound on recovery (the re-election, the consumer made again), not a timing
            let e = tokio::time::timeout(Duration::from_secs(45), rx_b.recv())
                .await
                .expect("node B keeps delivering")
                .unwrap();
            seen.push(e.id);
        }
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order, no repeat");
        let missing: Vec<u64> = acked
            .iter()
            .filter(|id| !seen.contains(id))
            .copied()
            .collect();
        assert!(
            missing.is_empty(),
            "acknowledged but never delivered: {missing:?}"
        );
        eprintln!("{} acknowledged, {failures} publishes retried", acked.len());
        a.close().await;
        b.close().await;
    }

    #[tokio::test]
    async fn jetstream_passes_the_conformance_suite() {
        let n = nats();
        let (j, _rx, _) = open(&n.url, "ACTIVITY").await;
        conformance::activity(&j).await;
        conformance::reads(&j).await;
        // beyond the window, from the stream itself
        assert!(j.clear_cache() > 0);
        assert_eq!(read_all(&j, 0).await, (1..=j.head()).collect::<Vec<_>>());
        conformance::reads(&j).await;
        j.close().await;
        let (j, rx, direct) = open(&n.url, "FANOUT").await;
        conformance::ids_and_fanout(Arc::new(j), rx, direct).await;
        let (j, _rx, _) = open(&n.url, "REOPEN").await;
        let url = n.url.clone();
        conformance::reopen(j, move || async move { open(&url, "REOPEN").await.0 }).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_share_one_order_and_a_new_stream_is_a_new_epoch() {
        let n = nats();
        let (a, mut rx_a, _) = open(&n.url, "SHARED").await;
        let (b, mut rx_b, _) = open(&n.url, "SHARED").await;
        assert_eq!(a.epoch(), b.epoch());
        let x = a.append(events(3)).await.unwrap();
        let y = b.append(events(2)).await.unwrap();
        assert_eq!(y[0].id, x[2].id + 1);
        // each node fans out every event, whichever stored it, in one order
        for rx in [&mut rx_a, &mut rx_b] {
            let mut seen = Vec::new();
            while seen.len() < 5 {
                seen.push(
                    tokio::time::timeout(Duration::from_secs(10), rx.recv())
                        .await
                        .unwrap()
                        .unwrap()
                        .id,
                );
            }
            assert_eq!(seen, [1, 2, 3, 4, 5]);
        }
        let epoch = a.epoch().to_string();
        a.close().await;
        b.close().await;
        // the stream made anew: a new epoch, ids from 1 again
        let client = async_nats::connect(n.url.as_str()).await.unwrap();
        async_nats::jetstream::new(client)
            .delete_stream("SHARED")
            .await
            .unwrap();
        let (c, _rx, _) = open(&n.url, "SHARED").await;
        assert_ne!(c.epoch(), epoch);
        assert_eq!(c.append(events(1)).await.unwrap()[0].id, 1);
        c.close().await;
    }
}
