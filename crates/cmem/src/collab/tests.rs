//! The team store's suite: [`conformance`] is what every store promises, run on the local
//! SQLite store and on a cluster's JetStream store; then what only a cluster has (two nodes
//! sharing one state, races between them, rebuilding a node's view, carrying a single node's
//! users into a new cluster).

use super::messages::{Notification, Workspaces};
use super::*;
use crate::access::auth;
use crate::teams::{LOCAL_FILE, TeamsError, TokenHolder, now};
use docs::tests::text_of;
use yrs::Doc;

fn edit(doc: &Doc, s: &str) -> Vec<u8> {
    docs::tests::edit(doc, 0, s)
}

fn note(t: &Collab, title: &str) -> i64 {
    t.store_notification(&Notification {
        id: 0,
        workspace: "eng".into(),
        from: "alice".into(),
        title: title.into(),
        body: String::new(),
        level: "info".into(),
        ts: now(),
    })
    .unwrap()
}

/// What every team store does, on a store with nothing in it.
fn conformance(t: &Collab) {
    // users
    assert!(!t.access().users_exist());
    t.access().add_user("alice", true).unwrap();
    t.access().add_user("bob", false).unwrap();
    assert!(
        t.access().users_exist(),
        "adding a user forgets the cached answer"
    );
    assert!(matches!(
        t.access().add_user("alice", false),
        Err(TeamsError::Exists(_))
    ));
    assert!(matches!(
        t.access().add_user("../x", false),
        Err(TeamsError::Invalid(_))
    ));
    assert!(matches!(
        t.access().remove_user("ghost", false),
        Err(TeamsError::NotFound(_))
    ));
    // tokens
    let tok = t.access().create_token("alice", Some("laptop")).unwrap();
    assert!(tok.token.starts_with(&format!("cm_{}_", tok.id)));
    assert!(matches!(
        t.access().create_token("ghost", None),
        Err(TeamsError::NotFound(_))
    ));
    let (who, id) = t.access().authenticate(&tok.token).unwrap();
    assert_eq!((who.name.as_str(), id.as_str()), ("alice", tok.id.as_str()));
    assert!(matches!(
        t.access().authenticate("cm_nope_nope"),
        Err(auth::AuthError::Unknown)
    ));
    // workspaces and members
    t.access().create_workspace("eng").unwrap();
    assert!(matches!(
        t.access().create_workspace("eng"),
        Err(TeamsError::Exists(_))
    ));
    t.access().add_member("eng", "alice").unwrap();
    t.access().add_member("eng", "bob").unwrap();
    assert!(matches!(
        t.access().add_member("eng", "alice"),
        Err(TeamsError::Exists(_))
    ));
    assert!(matches!(
        t.access().add_member("nope", "alice"),
        Err(TeamsError::NotFound(_))
    ));
    assert!(matches!(
        t.access().add_member("eng", "ghost"),
        Err(TeamsError::NotFound(_))
    ));
    assert_eq!(
        t.access().user("alice").unwrap().unwrap().workspaces,
        vec!["eng"]
    );
    assert_eq!(
        t.access().workspace("eng").unwrap().unwrap().members,
        ["alice", "bob"]
    );
    t.access().remove_member("eng", "bob").unwrap();
    assert!(matches!(
        t.access().remove_member("eng", "bob"),
        Err(TeamsError::NotFound(_))
    ));
    assert!(!t.access().is_member("eng", "bob").unwrap());
    // revocation
    let holder = |id: &str| t.access().token_holder(id).unwrap();
    assert!(matches!(holder(&tok.id), TokenHolder::Active(_)));
    t.access().revoke_token(&tok.id).unwrap();
    assert!(matches!(
        t.access().revoke_token(&tok.id),
        Err(TeamsError::NotFound(_))
    ));
    assert_eq!(holder(&tok.id), TokenHolder::Revoked);
    assert!(matches!(
        t.access().authenticate(&tok.token),
        Err(auth::AuthError::Revoked(_))
    ));
    assert!(
        t.access().tokens(Some("alice")).unwrap()[0]
            .revoked_at
            .is_some()
    );
    // messages: a retry with the same client_msg_id is the stored message, not a new one
    let (m1, dup) = t
        .store_message("eng", "alice", "hi", Some("c1"))
        .unwrap()
        .parts();
    assert!(!dup);
    let (again, dup) = t
        .store_message("eng", "alice", "hi", Some("c1"))
        .unwrap()
        .parts();
    assert!(dup);
    assert_eq!(again, m1);
    let (m2, _) = t
        .store_message("eng", "alice", "second", None)
        .unwrap()
        .parts();
    assert!(m2.id > m1.id);
    let page = t.messages("eng", None, 10).unwrap();
    assert_eq!(page, [m2.clone(), m1.clone()]);
    assert_eq!(t.messages("eng", Some(m2.id), 10).unwrap(), [m1]);
    // notifications: increasing ids, read back by workspace
    let (n1, n2) = (note(t, "one"), note(t, "two"));
    assert!(n2 > n1 && n1 > 0);
    let ws = ["eng".to_string()];
    let got = t.notifications(Workspaces::Only(&ws), n1, 10).unwrap();
    assert_eq!(
        got.iter().map(|n| n.title.as_str()).collect::<Vec<_>>(),
        ["two"]
    );
    // documents: stored, folded, whole for a late joiner
    let client = Doc::new();
    for i in 0..(docs::COMPACT_AFTER + 5) {
        let new = t
            .doc_apply("eng", "notes", &edit(&client, &(i % 10).to_string()))
            .unwrap();
        assert_eq!(new, i == 0, "only the first update makes a new document");
    }
    assert!(t.doc_apply("eng", "notes", b"not yjs").is_err());
    assert_eq!(
        text_of(t, "eng", "notes").len(),
        (docs::COMPACT_AFTER + 5) as usize
    );
    assert_eq!(t.doc_names("eng").unwrap(), ["notes"]);
    // Socket.IO sessions' workspaces
    t.access().save_socket_workspaces("s1", &ws).unwrap();
    assert_eq!(
        t.access().socket_workspaces("s1").unwrap(),
        Some(ws.to_vec())
    );
    assert_eq!(t.access().socket_workspaces("s2").unwrap(), None);
    // removing a user takes their tokens and memberships
    // ... but the last admin only on purpose
    assert!(matches!(
        t.access().remove_user("alice", false),
        Err(TeamsError::Conflict(_))
    ));
    t.access().remove_user("alice", true).unwrap();
    assert!(
        t.access()
            .workspace("eng")
            .unwrap()
            .unwrap()
            .members
            .is_empty()
    );
    assert_eq!(holder(&tok.id), TokenHolder::Gone);
    assert_eq!(t.access().users().unwrap().len(), 1);
}

/// A message stored and never published (the send that stored it could neither publish it nor
/// take it back) is published by the retry that finds it, once; a retry of a published
/// message publishes nothing.
#[tokio::test]
async fn a_retry_publishes_a_message_its_first_send_could_not() {
    use auth::LOCAL_USER;
    use messages::{Outgoing, send};
    let dir = tempfile::tempdir().unwrap();
    let t = crate::collab::for_tests(dir.path());
    let hub = crate::hub::for_tests(dir.path());
    let mut seen = hub.tap();
    // what a failed publish followed by a failed take-back leaves
    let (stored, _) = t
        .store_message("eng", LOCAL_USER, "hi", Some("c1"))
        .unwrap()
        .parts();
    let retry = || Outgoing {
        workspace: "eng",
        text: "hi",
        client_msg_id: Some("c1"),
    };
    for _ in 0..2 {
        let (m, again) = send(&t, &hub, &auth::Identity::Open, retry())
            .await
            .unwrap();
        assert_eq!((m.id, again), (stored.id, true));
    }
    // a fence: everything published before it has reached the tap
    hub.publish(vec![crate::envelope::NewEvent::new(
        "fence",
        crate::envelope::Scope::Global,
        serde_json::json!({}),
    )])
    .await
    .unwrap();
    let mut published = Vec::new();
    loop {
        let ev = seen.recv().await.unwrap();
        if ev.kind == "fence" {
            break;
        }
        if ev.kind == "team_message" {
            published.push(ev.json().to_string());
        }
    }
    assert_eq!(published.len(), 1, "published once: {published:?}");
    assert!(published[0].contains(&format!("\"id\":{}", stored.id)));
}

#[test]
fn the_local_store_keeps_its_promises() {
    let dir = tempfile::tempdir().unwrap();
    let t = crate::collab::for_tests(dir.path());
    let tok = t.access().create_token("nobody", None);
    assert!(tok.is_err());
    conformance(&t);
    // no token's secret is in the file
    let secret = t.access().tokens(None).unwrap();
    assert!(secret.is_empty(), "alice's tokens went with her");
    let kept = {
        t.access().add_user("dora", false).unwrap();
        t.access().create_token("dora", None).unwrap().token
    };
    let raw = std::fs::read(dir.path().join(LOCAL_FILE)).unwrap();
    let wal = std::fs::read(dir.path().join("teams.sqlite3-wal")).unwrap_or_default();
    let secret = kept.split('_').nth(2).unwrap();
    for bytes in [raw, wal] {
        assert!(!String::from_utf8_lossy(&bytes).contains(secret));
    }
    drop(t);
    // and keeps them across reopening
    let t = crate::collab::for_tests(dir.path());
    assert_eq!(t.access().users().unwrap()[0].name, "bob");
    assert_eq!(
        text_of(&t, "eng", "notes").len(),
        (docs::COMPACT_AFTER + 5) as usize
    );
}

#[cfg(unix)]
mod jetstream {
    use super::*;
    use crate::teams::cluster;
    use crate::testing::nats;

    fn options(url: &str, stream: &str) -> cluster::ClusterOptions {
        cluster::ClusterOptions {
            url: url.into(),
            stream: stream.into(),
            replicas: 1,
        }
    }

    /// Team state on a cluster's team log, viewed from `dir`.
    fn open(dir: &std::path::Path, options: Option<&cluster::ClusterOptions>) -> Collab {
        let store = Arc::new(TeamStore::open_with(dir, options).unwrap());
        Collab::new(store.clone(), Access::new(store))
    }

    fn node(url: &str, stream: &str) -> (Collab, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let t = open(dir.path(), Some(&options(url, stream)));
        (t, dir)
    }

    /// Waits (at most 10 s) for `f` to hold; whether it did.
    fn eventually(f: impl Fn() -> bool) -> bool {
        crate::testing::eventually(10, f)
    }

    #[test]
    fn the_cluster_store_keeps_its_promises() {
        let n = nats();
        let (t, dir) = node(&n.url, "CONF");
        conformance(&t);
        assert_eq!(t.cluster_state().unwrap()["teams"]["engine"], "jetstream");
        drop(t);
        // a node that comes back applies only what it missed; one that never ran replays all
        let back = open(dir.path(), Some(&options(&n.url, "CONF")));
        let (fresh, _d) = node(&n.url, "CONF");
        for t in [&back, &fresh] {
            assert_eq!(t.access().users().unwrap()[0].name, "bob");
            assert_eq!(
                text_of(t, "eng", "notes").len(),
                (docs::COMPACT_AFTER + 5) as usize
            );
            assert_eq!(t.messages("eng", None, 10).unwrap().len(), 2);
        }
        assert_eq!(
            back.messages("eng", None, 10).unwrap(),
            fresh.messages("eng", None, 10).unwrap(),
            "the same ids on every node"
        );
    }

    #[test]
    fn two_nodes_share_one_team_state() {
        let n = nats();
        let (a, _da) = node(&n.url, "SHARE");
        let (b, _db) = node(&n.url, "SHARE");
        a.access().add_user("alice", false).unwrap();
        let tok = a.access().create_token("alice", None).unwrap();
        assert!(eventually(|| b.access().authenticate(&tok.token).is_ok()));
        // a revocation on one node reaches the other, and wakes its watcher
        let seen = b.store().access_changes();
        a.access().revoke_token(&tok.id).unwrap();
        assert!(eventually(
            || b.access().token_holder(&tok.id).unwrap() == TokenHolder::Revoked
        ));
        assert!(b.store().access_changes() > seen);
        // a node refuses what the other already did
        assert!(matches!(
            b.access().revoke_token(&tok.id),
            Err(TeamsError::NotFound(_))
        ));
        // both nodes create the same user at once: exactly one succeeds
        let results: Vec<_> = std::thread::scope(|s| {
            let ha = s.spawn(|| a.access().add_user("carol", false));
            let hb = s.spawn(|| b.access().add_user("carol", false));
            vec![ha.join().unwrap(), hb.join().unwrap()]
        });
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(TeamsError::Exists(_))))
        );
        // a message retried on the other node at the same time is stored once
        for round in 0..5 {
            let cid = format!("retry-{round}");
            let (ma, mb) = std::thread::scope(|s| {
                let ha = s.spawn(|| a.store_message("eng", "carol", "once", Some(&cid)));
                let hb = s.spawn(|| b.store_message("eng", "carol", "once", Some(&cid)));
                (
                    ha.join().unwrap().unwrap().parts(),
                    hb.join().unwrap().unwrap().parts(),
                )
            });
            assert_eq!(ma.0.id, mb.0.id);
            assert!(
                ma.1 != mb.1,
                "one stored it, the other found it: {ma:?} {mb:?}"
            );
        }
        assert!(eventually(
            || a.messages("eng", None, 100).unwrap().len() == 5
        ));
        assert_eq!(
            a.messages("eng", None, 100).unwrap(),
            b.messages("eng", None, 100).unwrap()
        );
        // a document edited on both nodes is whole on both
        let (ca, cb) = (Doc::new(), Doc::new());
        a.doc_apply("eng", "d", &edit(&ca, "from a ")).unwrap();
        b.doc_apply("eng", "d", &edit(&cb, "from b ")).unwrap();
        assert!(eventually(|| text_of(&a, "eng", "d").len() == 14));
        assert!(eventually(
            || text_of(&b, "eng", "d") == text_of(&a, "eng", "d")
        ));
    }

    #[test]
    fn a_recreated_log_rebuilds_the_view() {
        let n = nats();
        let dir = tempfile::tempdir().unwrap();
        {
            let t = open(dir.path(), Some(&options(&n.url, "REMADE")));
            t.access().add_user("alice", false).unwrap();
        }
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let js = async_nats::jetstream::new(async_nats::connect(n.url.as_str()).await.unwrap());
            js.delete_stream("REMADE_TEAMS").await.unwrap();
        });
        let t = open(dir.path(), Some(&options(&n.url, "REMADE")));
        assert!(
            t.access().users().unwrap().is_empty(),
            "the old stream's users are gone"
        );
        t.access().add_user("bob", false).unwrap();
        assert_eq!(t.access().users().unwrap()[0].name, "bob");
    }

    #[test]
    fn a_new_cluster_takes_the_first_nodes_users() {
        let n = nats();
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let tok = {
            let t = open(one.path(), None);
            t.access().add_user("alice", true).unwrap();
            t.access().create_workspace("eng").unwrap();
            t.access().add_member("eng", "alice").unwrap();
            let gone = t.access().create_token("alice", None).unwrap();
            t.access().revoke_token(&gone.id).unwrap();
            (t.access().create_token("alice", None).unwrap(), gone)
        };
        open(two.path(), None)
            .access()
            .add_user("zed", false)
            .unwrap();
        let a = open(one.path(), Some(&options(&n.url, "SEED")));
        let b = open(two.path(), Some(&options(&n.url, "SEED")));
        for t in [&a, &b] {
            assert_eq!(
                t.access().authenticate(&tok.0.token).unwrap().0.workspaces,
                ["eng"]
            );
            assert!(matches!(
                t.access().authenticate(&tok.1.token),
                Err(auth::AuthError::Revoked(_))
            ));
            assert!(
                t.access().user("zed").unwrap().is_none(),
                "the first node's users win"
            );
        }
        // the single node's file is left as it was
        assert_eq!(
            open(two.path(), None).access().users().unwrap()[0].name,
            "zed"
        );
    }
}
