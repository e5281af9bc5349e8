//! Cursors name their journal, and backups restore to a new one, against the real binary: a
//! client that resumes with `<epoch>:<id>` after the journal was recreated gets a `resync` (raw
//! SSE and poll; Socket.IO and EventSource are in tests/e2e/epoch.test.mjs); a backup taken
//! under load holds every event acknowledged before it started and restores with a new epoch;
//! a restore is refused while the server runs.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{TestServer, cmem_in as cmem, get};
use futures::StreamExt;
use serde_json::{Value, json};

/// Everything a poll reader gets after `after` (a cursor, bare or `<epoch>:<id>`), read to the
/// head; the events and the last `next_cursor`.
async fn read_all(s: &TestServer, client: &str, after: &str) -> (Vec<Value>, String) {
    let mut events = Vec::new();
    let mut cursor = after.to_string();
    loop {
        let (_, v) = get(format!(
            "{}/api/events/poll?client_id={client}&after={cursor}&limit=1000",
            s.url
        ))
        .await;
        let page = v["events"].as_array().cloned().unwrap_or_default();
        let next = v["next_cursor"].as_str().expect("next_cursor").to_string();
        let done = page.is_empty() || next == cursor;
        events.extend(page);
        cursor = next;
        if done {
            return (events, cursor);
        }
    }
}

/// The first event (type, data) an SSE stream opened with `Last-Event-ID: cursor` delivers.
async fn first_sse_event(s: &TestServer, cursor: &str) -> (String, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}/api/events/stream", s.url))
        .header("Last-Event-ID", cursor)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(frame) = text.split("\n\n").find(|f| f.contains("event: ")) {
                let kind = frame.lines().find_map(|l| l.strip_prefix("event: "))?;
                let data = frame.lines().find_map(|l| l.strip_prefix("data: "))?;
                return Some((kind.to_string(), serde_json::from_str(data).ok()?));
            }
        }
        None
    })
    .await;
    found.ok().flatten().expect("an event")
}

async fn publish(s: &TestServer, n: usize, tag: &str) -> Vec<u64> {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"type": "load", "data": {"tag": tag, "i": i}}))
        .collect();
    let v: Value = s
        .publish(json!({ "events": events }))
        .await
        .json()
        .await
        .unwrap();
    v["data"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// The reproduction: 3 events, a reader at cursor 7-ish, the state folder removed, a new
/// journal that grew past the cursor. With the epoch in the cursor the reader is told.
#[tokio::test]
async fn a_recreated_journal_is_noticed_by_cursors_that_name_their_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut s1 = TestServer::start_in(d, &[], &[]);
    publish(&s1, 3, "first").await;
    let (_, cursor) = read_all(&s1, "y", "").await;
    let (old_epoch, old_id) = cursor.rsplit_once(':').unwrap();
    let old_id: u64 = old_id.parse().unwrap();
    s1.terminate();
    std::fs::remove_dir_all(d.join(".collective-memory")).unwrap();
    let s2 = TestServer::start_in(d, &[], &[]);
    publish(&s2, 15, "second").await;
    assert!(
        s2.head().await > old_id,
        "the new journal grew past the cursor"
    );

    let (kind, data) = first_sse_event(&s2, &cursor).await;
    assert_eq!(kind, "resync", "{data}");
    assert_eq!(data["data"]["reason"], "epoch_mismatch");
    assert_eq!(data["data"]["requested_epoch"], old_epoch);
    let (events, next) = read_all(&s2, "y2", &cursor).await;
    assert_eq!(events[0]["type"], "resync", "{events:?}");
    assert!(
        !next.starts_with(old_epoch),
        "the new cursor names the new journal"
    );
    // (a bare id cannot tell: it resumes in the new journal, as documented)
    let (kind, _) = first_sse_event(&s2, &old_id.to_string()).await;
    assert_ne!(kind, "resync");
}

/// A backup taken while events are being published holds every event acknowledged before it
/// started, restores with a new epoch, and readers past its head get a `resync`.
#[tokio::test]
async fn a_backup_under_load_restores_every_acknowledged_event_with_a_new_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut s = TestServer::start_in(d, &[], &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let load = {
        let (url, stop, acked) = (s.url.clone(), stop.clone(), acked.clone());
        tokio::spawn(async move {
            let c = reqwest::Client::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let events: Vec<Value> = (0..20)
                    .map(|i| json!({"type": "load", "data": {"n": n * 20 + i}}))
                    .collect();
                let v: Value = c
                    .post(format!("{url}/api/events"))
                    .json(&json!({ "events": events }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let last = v["data"]["ids"][19].as_u64().unwrap();
                acked.fetch_max(last, Ordering::SeqCst);
                n += 1;
            }
        })
    };
    while acked.load(Ordering::SeqCst) < 2000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let acked_before = acked.load(Ordering::SeqCst);
    let dest = tmp.path().join("backup-1");
    let (code, out, err) = cmem(d, &["backup", dest.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    tokio::time::sleep(Duration::from_millis(300)).await; // more events past the backup
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let manifest: Value = serde_json::from_str(out.trim()).unwrap();
    let head = manifest["head"].as_u64().unwrap();
    assert!(
        head >= acked_before,
        "backup head {head} < acknowledged {acked_before}"
    );
    let old_epoch = manifest["epoch"].as_str().unwrap().to_string();
    let (_, cursor) = read_all(&s, "past-backup", "").await;
    let read_to: u64 = cursor.rsplit_once(':').unwrap().1.parse().unwrap();
    assert!(read_to > head, "the reader went past the backup");

    // a restore is refused while the server runs
    let (code, _, err) = cmem(d, &["restore", dest.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("stop the server"), "{err}");
    s.terminate();
    let (code, out, err) = cmem(d, &["restore", dest.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let restored: Value = serde_json::from_str(out.trim()).unwrap();
    let new_epoch = restored["epoch"].as_str().unwrap().to_string();
    assert_ne!(new_epoch, old_epoch);

    let s = TestServer::start_in(d, &[], &[]);
    let (events, _) = read_all(&s, "everything", "0").await;
    let ids: std::collections::BTreeSet<u64> = events
        .iter()
        .filter(|e| e["type"] == "load")
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    let missing: Vec<u64> = (1..=acked_before)
        .filter(|id| !ids.contains(id))
        .filter(|id| events.iter().all(|e| e["id"] != *id)) // ids taken by the server's own events
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged before the backup, missing after the restore: {:?}",
        &missing[..missing.len().min(10)]
    );
    assert!(
        ids.iter().all(|id| *id <= head),
        "nothing past the backup's head"
    );
    assert!(
        events.iter().all(|e| e["epoch"] == new_epoch.as_str()),
        "replayed envelopes name the new epoch"
    );
    // the reader that went past the backup is told, on poll and SSE
    let (events, _) = read_all(&s, "past-backup-2", &cursor).await;
    assert_eq!(events[0]["type"], "resync");
    assert_eq!(events[0]["data"]["reason"], "epoch_mismatch");
    let (kind, _) = first_sse_event(&s, &cursor).await;
    assert_eq!(kind, "resync");
}
