//! The journal beside its algorithm: group commit, ids that never repeat (across restarts and
//! after retention empties the table), the in-memory window agreeing with SQLite, and retention
//! by count and by age.

use std::time::Duration;

use serde_json::json;

use super::*;

fn options() -> JournalOptions {
    JournalOptions {
        full_sync: false,
        batch_max: 1000,
        retention_max_events: 0,
        retention_max_age_s: 0,
    }
}

fn open(dir: &Path, opts: JournalOptions) -> (Journal, broadcast::Receiver<Arc<Event>>) {
    let (tx, rx) = broadcast::channel(1 << 16);
    let j = Journal::open(
        dir,
        opts,
        Fanout {
            shared: tx,
            direct: Box::new(|_, _| {}),
        },
    )
    .unwrap();
    (j, rx)
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
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn a_batch_is_one_commit_and_concurrent_publishers_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (j, mut rx) = open(dir.path(), options());
    let out = j.append(events(10)).await.unwrap();
    assert_eq!(
        out.iter().map(|e| e.id).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(j.info().commits_since_start, 1);
    let j = Arc::new(j);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let j = j.clone();
            tokio::spawn(async move { j.append(events(2)).await.unwrap() })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        let batch = t.await.unwrap();
        // each publisher's events are contiguous
        assert_eq!(batch[1].id, batch[0].id + 1);
        ids.extend(batch.iter().map(|e| e.id));
    }
    ids.sort();
    assert_eq!(ids, (11..=110).collect::<Vec<_>>(), "dense, unique ids");
    let info = j.info();
    assert_eq!(info.appended_since_start, 110);
    assert!(info.commits_since_start <= 51);
    // fan-out is in id order
    let mut seen = Vec::new();
    while let Ok(e) = rx.try_recv() {
        seen.push(e.id);
    }
    assert_eq!(seen, (1..=110).collect::<Vec<_>>());
}

#[tokio::test]
async fn ids_continue_across_a_restart_and_after_retention_empties_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _rx) = open(dir.path(), options());
    j.append(events(5)).await.unwrap();
    let epoch = j.epoch().to_string();
    j.close().await;
    drop(j);
    let (j, _rx) = open(dir.path(), options());
    assert_eq!(j.epoch(), epoch, "same journal, same epoch");
    assert_eq!(j.head(), 5);
    assert_eq!(j.append(events(1)).await.unwrap()[0].id, 6);
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
async fn activity_reads_the_newest_or_after_an_id_by_scope_and_type() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _rx) = open(dir.path(), options());
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
    let q =
        |after, scopes: &[&str], types: Option<&[&str]>, exclude: &[&str], limit| ActivityQuery {
            after,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            types: types.map(|t| t.iter().map(|s| s.to_string()).collect()),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            limit,
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
    // no scope, or an empty type list, reads nothing; a client's own events are never included
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
    // the same query on the file, without a writer
    let file = activity_in(
        &dir.path().join("journal.sqlite3"),
        &q(None, &["global"], None, &[], 3),
    )
    .unwrap();
    assert_eq!(ids(file), [5, 7, 9]);
    j.close().await;
}
