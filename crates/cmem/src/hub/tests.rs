//! The hub's algorithm, tested beside it on a real journal in a temporary folder: the resume
//! decision, replay then live without gap or duplicate, scope filtering, catching up after
//! falling behind the fan-out window, events addressed to one connection, pages for poll, and
//! why a subscription ends. The property test at the end drives random interleavings.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cmem_wire::Transport;
use serde_json::json;

use super::*;
use crate::envelope::{Cursor, NewEvent, Scope};
use crate::hub::registry::ConnMeta;

fn options(dir: &std::path::Path, queue_bound: usize) -> HubOptions {
    HubOptions {
        state_dir: dir.to_path_buf(),
        queue_bound,
        journal: JournalOptions {
            full_sync: false,
            batch_max: 1000,
            retention_max_events: 0,
            retention_max_age_s: 0,
        },
        cluster: None,
    }
}

fn conn(hub: &Hub, id: &str, workspaces: &[&str]) -> Arc<Conn> {
    hub.registry
        .register(
            id.into(),
            Transport::Sse,
            ConnMeta {
                user_agent: String::new(),
                remote_addr: String::new(),
                workspaces: workspaces.iter().map(|w| w.to_string()).collect(),
                user: None,
                token_id: None,
                user_id: None,
                admin: false,
            },
        )
        .expect("a fresh id registers")
}

fn ev(scope: Scope) -> NewEvent {
    NewEvent::new("test", scope, json!({}))
}

async fn publish(hub: &Hub, scopes: Vec<Scope>) -> Vec<u64> {
    hub.publish(scopes.into_iter().map(ev).collect())
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect()
}

/// Everything the subscription has ready now (publish returns after fan-out, so that is
/// everything committed so far that it may see).
async fn drain(sub: &mut Subscription) -> Vec<Arc<Event>> {
    let mut out = Vec::new();
    loop {
        let page = sub.fill(100, tokio::time::Instant::now()).await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

fn kinds(events: &[Arc<Event>]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

fn ids(events: &[Arc<Event>]) -> Vec<u64> {
    events.iter().map(|e| e.id).collect()
}

#[tokio::test]
async fn the_resume_decision_covers_fresh_resume_and_every_resync_reason() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(options(dir.path(), 64)).unwrap();
    assert_eq!(hub.decide(None), Start::Fresh);
    publish(&hub, vec![Scope::Global; 5]).await;
    let epoch = hub.journal.epoch().to_string();
    let at = |id, epoch: Option<&str>| Cursor {
        id,
        epoch: epoch.map(str::to_string),
    };
    assert_eq!(hub.decide(Some(at(3, Some(&epoch)))), Start::Resume(3));
    assert_eq!(hub.decide(Some(at(5, None))), Start::Resume(5));
    assert_eq!(hub.decide(Some(at(0, None))), Start::Resume(0));
    let reason = |s: Start| match s {
        Start::Resync { reason, .. } => reason,
        other => panic!("expected a resync, got {other:?}"),
    };
    assert_eq!(
        reason(hub.decide(Some(at(3, Some("another"))))),
        "epoch_mismatch"
    );
    assert_eq!(
        reason(hub.decide(Some(at(6, None)))),
        "cursor_ahead_of_journal"
    );
    drop(hub);

    // retention: a cursor below the oldest retained id cannot be honoured
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path(), 64);
    o.journal.retention_max_events = 3;
    let hub = Hub::open(o).unwrap();
    publish(&hub, vec![Scope::Global; 10]).await;
    for _ in 0..100 {
        if hub.journal.oldest() > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let oldest = hub.journal.oldest();
    assert!(oldest > 2, "retention ran (oldest {oldest})");
    assert_eq!(
        reason(hub.decide(Some(at(oldest - 2, None)))),
        "cursor_older_than_retention"
    );
    // the cursor just below the oldest id means "I have everything before it": honoured
    assert_eq!(
        hub.decide(Some(at(oldest - 1, None))),
        Start::Resume(oldest - 1)
    );
}

#[tokio::test]
async fn a_resync_is_one_event_addressed_to_the_client_then_the_stream_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(options(dir.path(), 64)).unwrap();
    publish(&hub, vec![Scope::Global; 2]).await;
    let c = conn(&hub, "a", &[]);
    let mut sub = hub
        .subscribe(
            c.clone(),
            Some(Cursor {
                id: 1,
                epoch: Some("old".into()),
            }),
        )
        .await
        .unwrap();
    let got = drain(&mut sub).await;
    assert_eq!(kinds(&got), ["resync", "system_status"]);
    assert_eq!(got[0].scope, Scope::Client(c.address.clone()));
    let next = publish(&hub, vec![Scope::Global]).await;
    assert_eq!(ids(&drain(&mut sub).await), next);
}

#[tokio::test]
async fn a_resumed_subscription_replays_what_was_missed_then_goes_live_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(options(dir.path(), 64)).unwrap();
    let before = publish(&hub, vec![Scope::Global; 5]).await;
    let c = conn(&hub, "a", &[]);
    let mut sub = hub
        .subscribe(
            c,
            Some(Cursor {
                id: before[1],
                epoch: None,
            }),
        )
        .await
        .unwrap();
    // committed between the subscription and the first read: must come once, in order
    let during = publish(&hub, vec![Scope::Global; 3]).await;
    let got = drain(&mut sub).await;
    let mut want: Vec<u64> = before[2..].to_vec();
    want.push(got.iter().find(|e| e.kind == "system_status").unwrap().id);
    want.extend(&during);
    want.sort();
    assert_eq!(ids(&got), want);
    let status = got.iter().find(|e| e.kind == "system_status").unwrap();
    let body: serde_json::Value = serde_json::from_str(status.body.get()).unwrap();
    assert_eq!(body["data"]["resumed_from"], json!(before[1]));
}

#[tokio::test]
async fn a_connection_sees_global_events_its_workspaces_and_what_is_addressed_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(options(dir.path(), 64)).unwrap();
    let a = conn(&hub, "a", &["eng"]);
    let _b = conn(&hub, "b", &["ops"]);
    let mut sub = hub.subscribe(a.clone(), None).await.unwrap();
    drain(&mut sub).await; // its system_status
    let published = publish(
        &hub,
        vec![
            Scope::Global,
            Scope::Workspace("eng".into()),
            Scope::Workspace("ops".into()),
            Scope::Client("b".into()),
            Scope::Client(a.address.clone()),
        ],
    )
    .await;
    assert_eq!(
        ids(&drain(&mut sub).await),
        [published[0], published[1], published[4]]
    );
    // leaving a workspace stops its events at once
    assert!(a.leave("eng"));
    publish(&hub, vec![Scope::Workspace("eng".into())]).await;
    assert!(drain(&mut sub).await.is_empty());
}

#[tokio::test]
async fn an_event_addressed_to_the_connection_is_never_passed_over_by_a_later_shared_one() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(options(dir.path(), 64)).unwrap();
    let a = conn(&hub, "a", &[]);
    let mut sub = hub.subscribe(a.clone(), None).await.unwrap();
    drain(&mut sub).await;
    for _ in 0..20 {
        // one commit: the direct event's nudge and the shared events arrive together
        let published = publish(
            &hub,
            vec![
                Scope::Global,
                Scope::Client(a.address.clone()),
                Scope::Global,
            ],
        )
        .await;
        assert_eq!(ids(&drain(&mut sub).await), published);
    }
}

#[tokio::test]
async fn a_subscription_that_falls_behind_the_window_catches_up_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(options(dir.path(), 4)).unwrap();
    let a = conn(&hub, "a", &[]);
    let mut sub = hub.subscribe(a, None).await.unwrap();
    drain(&mut sub).await;
    let mut want = Vec::new();
    for _ in 0..10 {
        want.extend(publish(&hub, vec![Scope::Global; 7]).await);
    }
    let got = drain(&mut sub).await;
    assert_eq!(ids(&got), want, "every event, once, in order");
    assert!(hub.catch_ups_total() >= 1, "it did fall behind");
}

#[tokio::test]
async fn fill_gives_pages_and_position_says_where_the_next_request_continues() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(options(dir.path(), 64)).unwrap();
    let a = conn(&hub, "a", &["eng"]);
    let mut sub = hub.subscribe(a.clone(), None).await.unwrap();
    drain(&mut sub).await;
    let published = publish(&hub, vec![Scope::Global; 5]).await;
    let now = tokio::time::Instant::now();
    assert_eq!(ids(&sub.fill(3, now).await.unwrap()), published[..3]);
    assert_eq!(sub.position(), published[2]);
    // a new request (a poll) continues from the position
    let mut sub = hub
        .resume(
            a.clone(),
            Cursor {
                id: published[2],
                epoch: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&sub.fill(3, now).await.unwrap()), published[3..]);
    // nothing visible left: the position moves to the head, past what it may not see
    let hidden = publish(&hub, vec![Scope::Workspace("ops".into())]).await;
    let mut sub = hub
        .resume(
            a.clone(),
            Cursor {
                id: published[4],
                epoch: None,
            },
        )
        .await
        .unwrap();
    assert!(sub.fill(3, now).await.unwrap().is_empty());
    assert_eq!(sub.position(), hidden[0]);
    // waiting: the first event that arrives ends the wait
    let h = hub.clone();
    let later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        publish(&h, vec![Scope::Global]).await
    });
    let got = sub
        .fill(3, tokio::time::Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(ids(&got), later.await.unwrap());
}

#[tokio::test]
async fn a_subscription_ends_with_the_reason_it_was_closed_for() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(options(dir.path(), 64)).unwrap();
    let a = conn(&hub, "a", &[]);
    let mut sub = hub.subscribe(a.clone(), None).await.unwrap();
    drain(&mut sub).await;
    // events committed and waiting for it: a revoked connection gets none of them
    publish(&hub, vec![Scope::Global, Scope::Global]).await;
    hub.registry.close(&a, "token_revoked");
    match sub.next().await {
        Err(StreamEnd::Closed(reason)) => assert_eq!(reason, "token_revoked"),
        other => panic!("expected a close, got {other:?}"),
    }
    // nor does a poll request's page
    let page = sub
        .fill(10, tokio::time::Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
    assert!(page.is_empty());
    let b = conn(&hub, "b", &[]);
    let mut sub = hub.subscribe(b, None).await.unwrap();
    drain(&mut sub).await;
    hub.shut_down();
    assert!(matches!(sub.next().await, Err(StreamEnd::Shutdown)));
    // a page being waited for ends early, empty, rather than failing
    let got = sub
        .fill(10, tokio::time::Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
    assert!(got.is_empty());
}

#[tokio::test]
async fn a_waiting_subscription_wakes_for_a_close_and_hands_out_what_is_ready_before_a_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(options(dir.path(), 64)).unwrap();
    let a = conn(&hub, "a", &[]);
    let mut sub = hub.subscribe(a.clone(), None).await.unwrap();
    drain(&mut sub).await;
    let waiting = tokio::spawn(async move { sub.next().await.map(|e| e.id) });
    // one turn of this single-threaded runtime: the spawned task runs until it waits
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    hub.registry.close(&a, "too_slow");
    match waiting.await.unwrap() {
        Err(StreamEnd::Closed(reason)) => assert_eq!(reason, "too_slow"),
        other => panic!("expected a close, got {other:?}"),
    }

    let b = conn(&hub, "b", &[]);
    let mut sub = hub.subscribe(b, None).await.unwrap();
    drain(&mut sub).await;
    let ids = publish(&hub, vec![Scope::Global, Scope::Global]).await;
    hub.shut_down();
    // committed before the shutdown: still handed out, then the stream ends
    assert_eq!(sub.next().await.unwrap().id, ids[0]);
    assert_eq!(sub.next().await.unwrap().id, ids[1]);
    assert!(matches!(sub.next().await, Err(StreamEnd::Shutdown)));

    // a connection that arrives during the shutdown ends too, rather than wait forever
    let c = conn(&hub, "c", &[]);
    let mut sub = hub.subscribe(c, None).await.unwrap();
    drain(&mut sub).await;
    assert!(matches!(sub.next().await, Err(StreamEnd::Shutdown)));
}

/// A poll client's requests can overlap: each has a subscription of the same connection, and
/// a close or the shutdown must end every one of them, not only the last to wait.
#[tokio::test]
async fn every_subscription_of_a_connection_wakes_for_its_close_and_for_the_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(options(dir.path(), 64)).unwrap();
    for shutdown in [false, true] {
        let a = conn(&hub, if shutdown { "b" } else { "a" }, &[]);
        let mut subs = vec![hub.subscribe(a.clone(), None).await.unwrap()];
        drain(&mut subs[0]).await;
        // the poll transport's later requests: a resume from the connection's cursor, which
        // publishes nothing (a second `subscribe` would greet, and the others would see it)
        for _ in 0..2 {
            let cursor = Cursor {
                id: a.cursor(),
                epoch: None,
            };
            let mut sub = hub.resume(a.clone(), cursor).await.unwrap();
            drain(&mut sub).await;
            subs.push(sub);
        }
        let waiting: Vec<_> = subs
            .into_iter()
            .map(|mut sub| tokio::spawn(async move { sub.next().await.map(|e| e.id) }))
            .collect();
        // one turn of this single-threaded runtime: each task runs until it waits
        tokio::task::yield_now().await;
        assert!(waiting.iter().all(|w| !w.is_finished()));
        if shutdown {
            hub.shut_down();
        } else {
            hub.registry.close(&a, "token_revoked");
        }
        for w in waiting {
            let ended = tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .expect("a subscription was not woken");
            match ended.unwrap() {
                Err(StreamEnd::Shutdown) if shutdown => {}
                Err(StreamEnd::Closed(reason)) if !shutdown => assert_eq!(reason, "token_revoked"),
                other => panic!("expected the stream to end, got {other:?}"),
            }
        }
    }
}

mod interleavings {
    //! Random interleavings of publish, subscribe, read, disconnect and resume. Afterwards each
    //! client's sequence is strictly increasing (no duplicate, no reordering) and each session
    //! received every event it could see between its starting cursor and its last read.

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Publish(Vec<u8>),
        Connect(usize),
        Read(usize),
        Disconnect(usize),
    }

    const CLIENTS: usize = 3;
    const WORKSPACES: [&str; 2] = ["eng", "ops"];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => prop::collection::vec(0u8..6, 1..12).prop_map(Op::Publish),
            1 => (0..CLIENTS).prop_map(Op::Connect),
            2 => (0..CLIENTS).prop_map(Op::Read),
            1 => (0..CLIENTS).prop_map(Op::Disconnect),
        ]
    }

    /// One connection of a client: what it started after and what it received.
    struct Session {
        conn: Arc<Conn>,
        sub: Subscription,
        started_after: u64,
        got: Vec<Arc<Event>>,
    }

    /// A finished session: its connection, the id it started after, what it received, and
    /// the position it had read to.
    type Ended = (Arc<Conn>, u64, Vec<Arc<Event>>, u64);

    #[derive(Default)]
    struct Client {
        live: Option<Session>,
        ended: Vec<Ended>,
        last: Option<u64>,
        serial: usize,
    }

    fn scope(code: u8, clients: &[Client]) -> Scope {
        match code {
            0 | 1 => Scope::Global,
            2 => Scope::Workspace(WORKSPACES[0].into()),
            3 => Scope::Workspace(WORKSPACES[1].into()),
            // addressed to one client's live connection (or a gone one)
            c => {
                let k = (c as usize) % CLIENTS;
                match &clients[k].live {
                    Some(s) => Scope::Client(s.conn.address.clone()),
                    None => Scope::Client(format!("gone-{k}")),
                }
            }
        }
    }

    async fn run(ops: Vec<Op>, queue_bound: usize) {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::open(options(dir.path(), queue_bound)).unwrap();
        let mut clients: Vec<Client> = (0..CLIENTS).map(|_| Client::default()).collect();
        let end = |c: &mut Client, hub: &Hub| {
            if let Some(s) = c.live.take() {
                let read_to = s.sub.position();
                hub.registry.ended(&s.conn, "test_disconnect");
                c.ended.push((s.conn, s.started_after, s.got, read_to));
            }
        };
        for op in ops {
            match op {
                Op::Publish(codes) => {
                    let scopes = codes.iter().map(|c| scope(*c, &clients)).collect();
                    publish(&hub, scopes).await;
                }
                Op::Connect(k) => {
                    let c = &mut clients[k];
                    if c.live.is_some() {
                        continue;
                    }
                    c.serial += 1;
                    // client k is in workspace k % 2
                    let conn = conn(&hub, &format!("c{k}-{}", c.serial), &[WORKSPACES[k % 2]]);
                    let cursor = c.last.map(|id| Cursor { id, epoch: None });
                    let sub = hub.subscribe(conn.clone(), cursor).await.unwrap();
                    // fresh: after the head it saw (less its own opening events); resumed: the cursor
                    let started_after = sub.cursor;
                    c.live = Some(Session {
                        conn,
                        sub,
                        started_after,
                        got: Vec::new(),
                    });
                }
                Op::Read(k) => {
                    let c = &mut clients[k];
                    if let Some(s) = c.live.as_mut() {
                        let got = drain(&mut s.sub).await;
                        if let Some(e) = got.last() {
                            c.last = Some(e.id);
                        }
                        s.got.extend(got);
                    }
                }
                Op::Disconnect(k) => end(&mut clients[k], &hub),
            }
        }
        // finally every client reads what is left and leaves
        for c in clients.iter_mut() {
            if let Some(s) = c.live.as_mut() {
                let got = drain(&mut s.sub).await;
                s.got.extend(got);
            }
            end(c, &hub);
        }
        let head = hub.journal.head();
        let all = hub
            .journal
            .read(ReadQuery {
                after: 0,
                upto: head,
                scopes: None,
                limit: 1_000_000,
            })
            .await
            .unwrap();
        for (k, c) in clients.iter().enumerate() {
            let seq: Vec<u64> = c.ended.iter().flat_map(|s| ids(&s.2)).collect();
            assert!(
                seq.windows(2).all(|w| w[0] < w[1]),
                "client {k}: not strictly increasing: {seq:?}"
            );
            for (conn, started_after, got, read_to) in &c.ended {
                // what the session could see (its connection has left the registry since)
                let ws = WORKSPACES[k % 2];
                let visible = |scope: &Scope| match scope {
                    Scope::Global => true,
                    Scope::Workspace(w) => w == ws,
                    Scope::Client(a) => *a == conn.address,
                    Scope::User(_) => false,
                };
                let want: BTreeSet<u64> = all
                    .iter()
                    .filter(|e| e.id > *started_after && e.id <= *read_to)
                    .filter(|e| visible(&e.scope))
                    .map(|e| e.id)
                    .collect();
                let have: BTreeSet<u64> = got.iter().map(|e| e.id).collect();
                assert_eq!(
                    have, want,
                    "client {k} ({}): after {started_after} up to {read_to}",
                    conn.address
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("CMEM_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
            ..ProptestConfig::default()
        })]

        #[test]
        fn every_subscriber_gets_exactly_what_it_may_see_in_order(
            ops in prop::collection::vec(op(), 1..60),
            queue_bound in prop_oneof![Just(2usize), Just(8), Just(256)],
        ) {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(run(ops, queue_bound));
        }
    }
}
