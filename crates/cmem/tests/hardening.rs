//! Regression tests for what an attacker tried against the real binary: a query that
//! overflowed the parser's stack, members publishing as the server or as someone else,
//! symlinks reading outside the data folder, rights kept after the first user exists, DNS
//! rebinding, ghost connections, other users' search history, CLI team changes not reaching
//! live connections, scopes failing open, slow or lying HTTP clients. Each test says which
//! item of the hardening list it guards.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Sse, TestServer, cmem_in as cmem, get_as, post_as, token_for, until};
use serde_json::{Value, json};

/// Runs team commands on `data`, each of which must succeed.
fn team(data: &Path, commands: &[&[&str]]) {
    for args in commands {
        let (code, _, err) = cmem(data, args);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
}

/// alice (admin) and bob; their tokens.
fn alice_and_bob(d: &Path) -> (String, String) {
    team(
        d,
        &[
            &["user", "add", "alice", "--admin"],
            &["user", "add", "bob"],
        ],
    );
    (token_for(d, "alice"), token_for(d, "bob"))
}

/// alice (admin) and bob, both members of `ops`; their tokens.
fn alice_and_bob_in_ops(d: &Path) -> (String, String) {
    team(
        d,
        &[
            &["user", "add", "alice", "--admin"],
            &["user", "add", "bob"],
            &["workspace", "create", "ops"],
            &["workspace", "add-member", "ops", "alice"],
            &["workspace", "add-member", "ops", "bob"],
        ],
    );
    (token_for(d, "alice"), token_for(d, "bob"))
}

/// Every event a poll reader `client` sees after `after` (one request, up to `wait` s).
async fn poll(s: &TestServer, token: Option<&str>, client: &str, after: u64) -> (Vec<Value>, u64) {
    let (st, v) = get_as(
        &format!(
            "{}/api/events/poll?client_id={client}&after={after}&wait=5",
            s.url
        ),
        token,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    (
        v["events"].as_array().cloned().unwrap_or_default(),
        v["next_id"].as_u64().unwrap_or(after),
    )
}

/// `GET /api/websocket/status` as `token`.
async fn status(s: &TestServer, token: &str) -> Value {
    get_as(&format!("{}/api/websocket/status", s.url), Some(token))
        .await
        .1["data"]
        .clone()
}

async fn healthy(s: &TestServer) {
    let r = reqwest::get(format!("{}/health", s.url)).await;
    assert!(
        r.is_ok_and(|r| r.status().is_success()),
        "the server stopped answering /health"
    );
}

/// Item 1: 800 `(` aborted the process (stack overflow in the query parser). Every search
/// route now answers 400 naming the limit, and the server keeps running.
#[tokio::test]
async fn deeply_nested_queries_are_refused_on_every_search_route() {
    let s = TestServer::start(&[]);
    let deep = "(".repeat(800);
    let nots = "NOT ".repeat(200) + "x";
    for q in [&deep, &nots] {
        let enc: String = url_escape(q);
        for path in ["/api/search", "/search"] {
            let (st, v) = get_as(&format!("{}{path}?q={enc}", s.url), None).await;
            assert_eq!(st, 400, "{path}: {v}");
            assert!(v["error"].as_str().unwrap().contains("20 levels"), "{v}");
        }
        let (st, v) = post_as(&format!("{}/api/search", s.url), None, json!({"q": q})).await;
        assert_eq!(st, 400, "{v}");
        let (st, v) = post_as(
            &format!("{}/search/export", s.url),
            None,
            json!({"query": q, "format": "markdown"}),
        )
        .await;
        assert_eq!(st, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains("20 levels"), "{v}");
    }
    healthy(&s).await;
    // the command line refuses it too, with the same words
    let (code, _, err) = cmem(&s.data, &["search", &deep]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("20 levels"), "{err}");
}

fn url_escape(q: &str) -> String {
    q.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// Item 3: a member could publish `team_message` (and other server types) with any `user`,
/// and others received it as if the server had sent it.
#[tokio::test]
async fn members_cannot_publish_as_the_server_or_as_someone_else() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (alice, bob) = alice_and_bob_in_ops(d);
    let s = TestServer::start_authed(d, &[], &[], Some(&alice));
    let url = format!("{}/api/events", s.url);
    for kind in [
        "team_message",
        "team_notification",
        "member_joined",
        "member_left",
        "doc_update",
        "system_status",
        "file_changed",
    ] {
        let body = json!({"type": kind, "scope": "workspace:ops", "data": {"user": "alice", "from": "alice", "text": "forged"}});
        let (st, v) = post_as(&url, Some(&bob), body.clone()).await;
        assert_eq!(st, 400, "{kind}: {v}");
        assert!(v["error"].as_str().unwrap().contains("server only"), "{v}");
        // not even an admin may forge them
        let (st, _) = post_as(&url, Some(&alice), body).await;
        assert_eq!(st, 400, "{kind} from an admin");
    }
    // a type of its own goes through, marked with who published it
    let (_, start) = poll(&s, Some(&alice), "reader", 0).await;
    let (st, v) = post_as(
        &url,
        Some(&bob),
        json!({"type": "deploy", "scope": "workspace:ops", "data": {"user": "alice"}}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (events, _) = poll(&s, Some(&alice), "reader", start).await;
    let deploy = events
        .iter()
        .find(|e| e["type"] == "deploy")
        .expect("deploy");
    assert_eq!(deploy["publisher"], json!({"user": "bob"}), "{deploy}");
    // and the field cannot be set by the client
    let (st, v) = post_as(
        &url,
        Some(&bob),
        json!({"type": "deploy", "scope": "workspace:ops", "publisher": {"user": "alice"}}),
    )
    .await;
    assert_eq!(st, 400, "{v}");
}

/// The total hits for `q` (an open server).
#[cfg(unix)]
async fn hits(s: &TestServer, q: &str) -> u64 {
    let (st, v) = get_as(&format!("{}/api/search?q={q}", s.url), None).await;
    assert_eq!(st, 200, "{v}");
    v["data"]["total"].as_u64().expect("total")
}

/// Writes `word` in a new file and waits until the watcher has indexed it: every change made
/// before it has been handled by then.
#[cfg(unix)]
async fn fence(s: &TestServer, word: &str) {
    std::fs::write(s.data.join(format!("{word}.txt")), word).unwrap();
    until("the fence file indexed", 20, || async {
        (hits(s, word).await == 1).then_some(())
    })
    .await;
}

/// Item 2: a symlink to /etc/passwd made while the server ran was indexed; folders linked at
/// start-up were watched through. Nothing outside the data folder reaches the index: links
/// made before start, during the run, or re-pointed, to files or to folders.
#[cfg(unix)]
#[tokio::test]
async fn nothing_outside_the_data_folder_reaches_the_index() {
    use std::os::unix::fs::symlink;
    let outside = tempfile::tempdir().unwrap();
    let out = outside.path();
    std::fs::write(out.join("secret.txt"), "zebrasecret passwd").unwrap();
    std::fs::create_dir(out.join("dir")).unwrap();
    std::fs::write(out.join("dir/inside.txt"), "okapisecret").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("real.txt"), "walrusown").unwrap();
    symlink(out.join("secret.txt"), d.join("early.txt")).unwrap();
    symlink(out.join("dir"), d.join("linkdir")).unwrap();
    let s = TestServer::start_in(d, &[], &[]);
    assert_eq!(hits(&s, "walrusown").await, 1);
    assert_eq!(hits(&s, "zebrasecret").await, 0, "a link present at start");
    assert_eq!(hits(&s, "okapisecret").await, 0, "a linked folder at start");

    // made while the server runs: a link to a file, a link to a folder, a change in the
    // target of a folder linked at start, and a real file re-pointed to the outside
    symlink(out.join("secret.txt"), d.join("x.txt")).unwrap();
    symlink(out.join("dir"), d.join("laterdir")).unwrap();
    std::fs::write(out.join("dir/new.txt"), "llamasecret").unwrap();
    std::fs::write(out.join("dir/inside.txt"), "okapisecret changed").unwrap();
    symlink(out.join("secret.txt"), d.join("swap.tmp")).unwrap();
    std::fs::rename(d.join("swap.tmp"), d.join("real.txt")).unwrap();
    fence(&s, "fenceone").await;
    for word in [
        "zebrasecret",
        "okapisecret",
        "llamasecret",
        "passwd",
        "walrusown",
    ] {
        assert_eq!(hits(&s, word).await, 0, "{word} reached the index");
    }
    let (_, v) = get_as(&format!("{}/search/suggestions?q=zebra", s.url), None).await;
    assert_eq!(v["data"]["suggestions"], json!([]), "{v}");

    // a full re-index says the same
    let (st, v) = post_as(&format!("{}/system/reindex", s.url), None, json!({})).await;
    assert!(st < 300, "{v}");
    fence(&s, "fencetwo").await;
    until("the re-index to finish", 20, || async {
        let (_, v) = get_as(&format!("{}/system/indexing", s.url), None).await;
        (v["data"]["running"] == false).then_some(())
    })
    .await;
    for word in ["zebrasecret", "okapisecret", "llamasecret"] {
        assert_eq!(hits(&s, word).await, 0, "{word} after a re-index");
    }
}

/// Item 8: a WebSocket dropped right after CONNECT could stay in the registry for good (19 of
/// 40), shown present and counted by revocations. Every one leaves within a ping interval.
#[tokio::test]
async fn sockets_dropped_right_after_connect_leave_the_registry() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = TestServer::start_in(
        tempfile::tempdir().unwrap().path(),
        &[],
        &[
            ("CM_PING_INTERVAL_MS", "1000"),
            ("CM_PING_TIMEOUT_MS", "1000"),
        ],
    );
    let ws_url = &format!("ws://{}/socket.io/?EIO=4&transport=websocket", s.addr);
    let mut drops = Vec::new();
    for i in 0..40 {
        drops.push(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
                .await
                .unwrap();
            let _open = ws.next().await;
            ws.send(Message::text("40")).await.unwrap();
            // half of them wait for the server's CONNECT, half are gone at once
            if i % 2 == 0 {
                while let Some(Ok(m)) = ws.next().await {
                    if m.to_text().unwrap_or("").starts_with("40") {
                        break;
                    }
                }
            }
            drop(ws); // no close frame: just gone
        });
    }
    futures::future::join_all(drops).await;
    let left = until("every dropped socket to leave the registry", 15, || async {
        let st = s.status().await;
        (st["connections"]["total"] == 0).then_some(st)
    })
    .await;
    // (sockets gone before the connect handler ran were never registered at all)
    assert!(left["connections"]["opened_since_start"].as_u64().unwrap() >= 1);
    // a socket dropped without a close frame closed; it did not send a bad packet
    assert!(
        left["closes_by_reason"].get("bad_packet").is_none(),
        "{left}"
    );
}

/// Item 4: a socket that never sent CONNECT could hold a binary packet of 10 attachments,
/// each up to `max_payload_bytes`. What it may buffer is now one message's worth in all: the
/// socket is closed as soon as its attachments go past it.
#[tokio::test]
async fn a_socket_cannot_buffer_more_than_one_message_of_attachments() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = TestServer::start_in(
        tempfile::tempdir().unwrap().path(),
        &[],
        &[("CM_MAX_PAYLOAD_BYTES", "100000")],
    );
    let ws_url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", s.addr);
    for attachments in [4, 10] {
        let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
        let _open = ws.next().await;
        let placeholders: Vec<Value> = (0..attachments)
            .map(|n| json!({"_placeholder": true, "num": n}))
            .collect();
        // no CONNECT: straight to a binary event on the default namespace
        let header = format!("45{attachments}-{}", json!(["doc_update", placeholders]));
        ws.send(Message::text(header)).await.unwrap();
        let (mut tx, mut rx) = ws.split();
        let mut sent = 0;
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                tokio::select! {
                    m = rx.next() => match m {
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return true,
                        _ => {}
                    },
                    r = tx.send(Message::binary(vec![7u8; 60_000])), if sent < attachments - 1 => {
                        if r.is_err() { return true; }
                        sent += 1;
                    }
                }
            }
        })
        .await
        .unwrap_or(false);
        assert!(
            closed,
            "{attachments} attachments: the socket was not closed"
        );
    }
    healthy(&s).await;
}

/// Item 11: a user deleted between authentication and the handler got the notifications of
/// every workspace (5 of 1,200 racing requests). Scopes fail closed: such a request reads none.
#[tokio::test]
async fn notifications_fail_closed_for_a_user_removed_mid_request() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    team(
        d,
        &[
            &["user", "add", "alice", "--admin"],
            &["workspace", "create", "eng"],
            &["workspace", "create", "ops"],
            &["workspace", "add-member", "eng", "alice"],
        ],
    );
    let alice = token_for(d, "alice");
    let s = TestServer::start_authed(d, &[], &[], Some(&alice));
    let (st, v) = post_as(
        &format!("{}/api/workspaces/eng/notifications", s.url),
        Some(&alice),
        json!({"title": "eng only"}),
    )
    .await;
    assert!(st < 300, "{v}");
    for round in 0..6 {
        let name = format!("bob{round}");
        let (st, v) = post_as(
            &format!("{}/api/admin/users", s.url),
            Some(&alice),
            json!({"name": name, "create_token": true}),
        )
        .await;
        assert!(st < 300, "{v}");
        let bob = v["data"]["token"]["token"]
            .as_str()
            .or(v["data"]["token"].as_str())
            .expect("token")
            .to_string();
        let (st, _) = post_as(
            &format!("{}/api/admin/workspaces/ops/members", s.url),
            Some(&alice),
            json!({"user": name}),
        )
        .await;
        assert!(st < 300);
        let url = format!("{}/api/notifications", s.url);
        let readers: Vec<_> = (0..200)
            .map(|_| {
                let (url, bob) = (url.clone(), bob.clone());
                tokio::spawn(async move { get_as(&url, Some(&bob)).await })
            })
            .collect();
        let del = reqwest::Client::new()
            .delete(format!("{}/api/admin/users/{name}", s.url))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert!(del.status().is_success());
        for r in readers {
            let (st, v) = r.await.unwrap();
            if st == 200 {
                assert_eq!(v["data"]["notifications"], json!([]), "leaked: {v}");
            } else {
                assert!(st == 401 || st == 403, "{st} {v}");
            }
        }
    }
}

/// Item 6: connections opened while the server was open kept every right after the first
/// user was created. They are closed, with a reason, whether the user came from the command
/// line or from the admin API.
#[tokio::test]
async fn the_first_user_closes_connections_opened_without_a_token() {
    for via_http in [false, true] {
        let s = TestServer::start(&[]);
        let mut sse = Sse::open(&s, None, "workspaces=eng").await;
        let _ = poll(&s, None, "open-poller", 0).await;
        assert_eq!(s.status().await["connections"]["total"], 2);
        if via_http {
            let (st, v) = post_as(
                &format!("{}/api/admin/users", s.url),
                None,
                json!({"name": "alice", "admin": true, "create_token": true}),
            )
            .await;
            assert_eq!(st, 201, "{v}");
            assert_eq!(v["data"]["connections_closed"], 2, "{v}");
        } else {
            team(&s.data, &[&["user", "add", "alice", "--admin"]]);
        }
        sse.closed_with("authentication_required").await;
        let (st, v) = get_as(
            &format!("{}/api/events/poll?client_id=open-poller", s.url),
            None,
        )
        .await;
        assert_eq!(st, 401, "{v}");
    }
}

/// Item 10: after `cmem workspace remove-member` a poll client kept receiving the workspace,
/// and after `cmem token revoke` an SSE stream kept reading. The server notices command-line
/// changes within seconds and acts as it does for the admin API.
#[tokio::test]
async fn command_line_team_changes_reach_live_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (alice, bob) = alice_and_bob_in_ops(d);
    let bob2 = token_for(d, "bob");
    let s = TestServer::start_authed(d, &[], &[], Some(&alice));
    let (_, cursor) = poll(&s, Some(&bob), "bob-poller", 0).await;
    let mut sse = Sse::open(&s, Some(&bob2), "").await;

    team(d, &[&["workspace", "remove-member", "ops", "bob"]]);
    until("the poll client to leave ops", 10, || async {
        let st = status(&s, &alice).await;
        let clients = st["connections"]["clients"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let poller = clients.iter().find(|c| {
            c["id"]
                .as_str()
                .is_some_and(|id| id.ends_with(":bob-poller"))
        })?;
        let scopes = poller["scopes"].as_array()?;
        (!scopes.iter().any(|x| x == "workspace:ops")).then_some(())
    })
    .await;
    // an ops event, then a global fence: the poller gets the fence and not the ops event
    for (kind, scope) in [("ops-secret", "workspace:ops"), ("fence", "global")] {
        let (st, v) = post_as(
            &format!("{}/api/events", s.url),
            Some(&alice),
            json!({"type": kind, "scope": scope}),
        )
        .await;
        assert_eq!(st, 200, "{v}");
    }
    let mut seen = Vec::new();
    let mut after = cursor;
    while !seen.iter().any(|t| t == "fence") {
        let (events, next) = poll(&s, Some(&bob), "bob-poller", after).await;
        seen.extend(
            events
                .iter()
                .map(|e| e["type"].as_str().unwrap_or("").to_string()),
        );
        after = next;
    }
    assert!(!seen.iter().any(|t| t == "ops-secret"), "{seen:?}");

    // the token behind the SSE stream is revoked from the command line
    let (_, out, _) = cmem(d, &["token", "list", "--json"]);
    let tokens: Value = serde_json::from_str(out.trim()).unwrap();
    let prefix: String = bob2.split('_').nth(1).unwrap().to_string();
    let id = tokens
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .find(|id| *id == prefix)
        .expect("bob's second token");
    team(d, &[&["token", "revoke", &id]]);
    sse.closed_with("token_revoked").await;
    // and a user removed from the command line loses the rest
    team(d, &[&["user", "remove", "bob"]]);
    until("the poll client to be closed", 10, || async {
        let st = status(&s, &alice).await;
        let clients = st["connections"]["clients"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (!clients.iter().any(|c| {
            c["id"]
                .as_str()
                .is_some_and(|id| id.ends_with(":bob-poller"))
        }))
        .then_some(())
    })
    .await;
}

/// Item 13: a poll `client_id` whose registration expired could be taken by another user, who
/// then read the events addressed to the old one (its greeting). Events addressed to a poll
/// client belong to one registration.
#[tokio::test]
async fn a_reused_poll_client_id_reads_nothing_addressed_to_its_earlier_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (alice, bob) = alice_and_bob(d);
    let s = TestServer::start_authed(d, &[], &[("CM_POLL_CLIENT_TTL_S", "5")], Some(&alice));
    let (first, _) = poll(&s, Some(&alice), "shared-id", 0).await;
    let greeting = first
        .iter()
        .find(|e| e["type"] == "system_status")
        .expect("alice's greeting")["id"]
        .as_u64()
        .unwrap();
    until("alice's registration to expire", 20, || async {
        let st = status(&s, &alice).await;
        (st["connections"]["total"] == 0).then_some(())
    })
    .await;
    let (events, _) = poll(&s, Some(&bob), "shared-id", 0).await;
    assert!(
        !events.iter().any(|e| e["id"].as_u64() == Some(greeting)),
        "bob read alice's greeting: {events:?}"
    );
    assert!(
        events.iter().any(|e| e["type"] == "system_status"),
        "bob's own greeting"
    );
}

/// Item 9: with `search_publish_query=false`, `/prompts/similar` still returned another user's
/// query word for word. Each user is offered their own searches; sharing is an option.
#[tokio::test]
async fn similar_searches_are_each_users_own_unless_shared() {
    for shared in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let (alice, bob) = alice_and_bob(d);
        let s = TestServer::start_authed(
            d,
            &[],
            &[
                ("CM_SEARCH_PUBLISH_QUERY", "false"),
                (
                    "CM_SEARCH_HISTORY_SHARED",
                    if shared { "true" } else { "false" },
                ),
            ],
            Some(&alice),
        );
        let (st, _) = get_as(
            &format!("{}/api/search?q=merger%20plans%20acme", s.url),
            Some(&bob),
        )
        .await;
        assert_eq!(st, 200);
        let (st, _) = get_as(
            &format!("{}/api/search?q=merger%20schedule", s.url),
            Some(&alice),
        )
        .await;
        assert_eq!(st, 200);
        let similar = |token: String| {
            let url = format!("{}/prompts/similar?q=merger%20plans", s.url);
            async move {
                let (st, v) = get_as(&url, Some(&token)).await;
                assert_eq!(st, 200, "{v}");
                v["data"]["similar"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x["query"].as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            }
        };
        let for_alice = similar(alice.clone()).await;
        let for_bob = similar(bob.clone()).await;
        assert!(
            for_bob.contains(&"merger plans acme".to_string()),
            "{for_bob:?}"
        );
        assert!(
            for_alice.contains(&"merger schedule".to_string()),
            "{for_alice:?}"
        );
        assert_eq!(
            for_alice.contains(&"merger plans acme".to_string()),
            shared,
            "shared={shared}: {for_alice:?}"
        );
    }
}

/// Item 7: nothing checked `Host`, so a page on a name rebound to 127.0.0.1 could create an
/// admin on an open server; cross-origin `text/plain` POSTs reached the system endpoints.
#[tokio::test]
async fn dns_rebinding_and_cross_site_posts_are_refused() {
    let s = TestServer::start(&[]);
    let port = s.addr.rsplit(':').next().unwrap().to_string();
    let c = reqwest::Client::new();
    let rebound = format!("rebind.attacker.example:{port}");
    let r = c
        .post(format!("{}/api/admin/users", s.url))
        .header("Host", &rebound)
        .header("Origin", format!("http://{rebound}"))
        .json(&json!({"name": "m", "admin": true, "create_token": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("allowed_hosts"),
        "{v}"
    );
    // reads too: a rebound page would read answers as a same-origin page
    for path in [
        "/api/search?q=x",
        "/api/websocket/status",
        "/socket.io/?EIO=4&transport=polling",
    ] {
        let r = c
            .get(format!("{}{path}", s.url))
            .header("Host", &rebound)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    // no user was made
    let (_, v) = get_as(&format!("{}/api/admin/users", s.url), None).await;
    assert_eq!(v["data"], json!([]), "{v}");

    // a page elsewhere POSTs text/plain (no preflight) at the system endpoints
    for path in [
        "/system/cache/clear",
        "/system/status",
        "/system/reindex",
        "/api/events",
    ] {
        let r = c
            .post(format!("{}{path}", s.url))
            .header("Origin", "http://evil.example")
            .header("Content-Type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    // loopback names, IP addresses, allowed origins and origin-less clients still work
    let r = c
        .post(format!("{}/system/status", s.url))
        .header("Host", format!("localhost:{port}"))
        .header("Origin", format!("http://localhost:{port}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // another local origin (a dev server on another port) is not trusted by default (issue 24,
    // finding 6: a page there made an admin on an open server and read its token)
    let r = c
        .post(format!("{}/api/admin/users", s.url))
        .header("Origin", "http://localhost:3000")
        .json(&json!({"name": "mallory", "admin": true, "create_token": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let (st, _) = post_as(&format!("{}/system/status", s.url), None, json!({})).await;
    assert!(st < 300);

    // a name of the operator's choosing is accepted once configured
    let s2 = TestServer::start_in(
        tempfile::tempdir().unwrap().path(),
        &[],
        &[("CM_ALLOWED_HOSTS", "notes.lan")],
    );
    let r = c
        .get(format!("{}/api/search?q=x", s2.url))
        .header("Host", "notes.lan")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Item 13: no header-read timeout (40 slowloris connections held for ever); a
/// `Content-Length: 1e12` request with no body waited for ever; `body:*` was a 500; a 404
/// under `/socket.io` said "transport disabled".
#[tokio::test]
async fn slow_or_lying_http_clients_are_cut_and_mistakes_are_4xx() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start_in(
        tempfile::tempdir().unwrap().path(),
        &[],
        &[("CM_REQUEST_READ_TIMEOUT_MS", "1000")],
    );
    // slowloris: half a request line, then nothing
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut c = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
        c.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .await
            .unwrap();
        held.push(c);
    }
    // a body announced and never sent, within the limit
    let mut lying = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    lying
        .write_all(b"POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    held.push(lying);
    for mut c in held {
        let mut buf = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(15), c.read_to_end(&mut buf)).await;
        assert!(
            ended.is_ok(),
            "a connection that sends nothing more is still held"
        );
    }
    // a body announced too large is refused at once
    let r = reqwest::Client::new()
        .post(format!("{}/api/events", s.url))
        .header("Content-Type", "application/json")
        .header("Content-Length", "1000000000000")
        .body("{}")
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    let mut raw = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    raw.write_all(
        b"POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000000\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), raw.read_exact(&mut head))
        .await
        .expect("an answer at once")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");

    let (st, v) = get_as(&format!("{}/api/search?q=body:*", s.url), None).await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = get_as(&format!("{}/socket.iox", s.url), None).await;
    assert_eq!(st, 404);
    assert!(!v["error"].as_str().unwrap().contains("disabled"), "{v}");
    assert!(v["error"].as_str().unwrap().contains("no endpoint"), "{v}");
    healthy(&s).await;
}

/// Resident memory of a process, in KiB (Linux).
#[cfg(target_os = "linux")]
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// The whole list against one server with users: afterwards `/health` answers, a connected SSE
/// client still receives new events, and resident memory is back near where it started.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_server_survives_the_whole_list() {
    use futures::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::tungstenite::Message;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("notes.md"), "# Notes\nsurvival\n").unwrap();
    team(
        d,
        &[
            &["user", "add", "alice", "--admin"],
            &["workspace", "create", "eng"],
            &["workspace", "add-member", "eng", "alice"],
        ],
    );
    let alice = token_for(d, "alice");
    let s = TestServer::start_authed(
        d,
        &[],
        &[
            ("CM_REQUEST_READ_TIMEOUT_MS", "1000"),
            ("CM_PING_INTERVAL_MS", "1000"),
        ],
        Some(&alice),
    );
    let pid = s.child.id();
    let mut sse = Sse::open(&s, Some(&alice), "").await;
    let before = rss_kib(pid);
    let ws_url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", s.addr);
    let authed = |ws_url: String, alice: String| async move {
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .unwrap();
        let _open = ws.next().await;
        ws.send(Message::text(format!("40{}", json!({"token": alice}))))
            .await
            .unwrap();
        while let Some(Ok(m)) = ws.next().await {
            if m.to_text().unwrap_or("").starts_with("40") {
                break;
            }
        }
        ws
    };

    for round in 0..3 {
        // 1: deep queries
        for q in ["(".repeat(900), "NOT ".repeat(240)] {
            let (st, _) = get_as(
                &format!("{}/api/search?q={}", s.url, url_escape(&q)),
                Some(&alice),
            )
            .await;
            assert_eq!(st, 400);
        }
        // 3: forged server events
        let (st, _) = post_as(
            &format!("{}/api/events", s.url),
            Some(&alice),
            json!({"type": "team_message", "scope": "workspace:eng", "data": {"user": "x"}}),
        )
        .await;
        assert_eq!(st, 400);
        // 4: 20 sockets, no CONNECT, each announcing 10 attachments of a full message
        let mut pinned = Vec::new();
        for _ in 0..20 {
            let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
                .await
                .unwrap();
            let _open = ws.next().await;
            let placeholders: Vec<Value> = (0..10)
                .map(|n| json!({"_placeholder": true, "num": n}))
                .collect();
            let _ = ws
                .send(Message::text(format!(
                    "4510-{}",
                    json!(["doc_update", placeholders])
                )))
                .await;
            for _ in 0..3 {
                if ws.send(Message::binary(vec![1u8; 900_000])).await.is_err() {
                    break;
                }
            }
            pinned.push(ws);
        }
        drop(pinned);
        // 5: documents: 20,000 doc_sync of distinct names from one socket
        let mut ws = authed(ws_url.clone(), alice.clone()).await;
        for i in 0..20_000 {
            let frame = format!(
                "42{}",
                json!(["doc_sync", {"workspace": "eng", "doc": format!("r{round}n{i}")}])
            );
            if ws.send(Message::text(frame)).await.is_err() {
                break;
            }
        }
        drop(ws);
        // 8: sockets dropped right after CONNECT
        for _ in 0..40 {
            let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
                .await
                .unwrap();
            let _open = ws.next().await;
            let _ = ws
                .send(Message::text(format!("40{}", json!({"token": alice}))))
                .await;
        }
        // 7: a rebound Host (refused: users exist, but it needs a token it does not have)
        let r = reqwest::Client::new()
            .post(format!("{}/api/admin/users", s.url))
            .header("Host", "rebind.attacker.example")
            .json(&json!({"name": "m", "admin": true}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error());
        // 13: slowloris and a lying Content-Length
        let mut slow = Vec::new();
        for _ in 0..40 {
            let mut c = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
            let _ = c.write_all(b"GET /health HTTP/1.1\r\nX-Slow: ").await;
            slow.push(c);
        }
        let mut c = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
        let _ = c
            .write_all(b"POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000000\r\n\r\n")
            .await;
        slow.push(c);
        tokio::time::sleep(Duration::from_millis(1500)).await; // past the header timeout
        drop(slow);
    }
    healthy(&s).await;
    // every connection but the SSE reader is gone
    let st = until("only the SSE reader to remain", 20, || async {
        let st = status(&s, &alice).await;
        if st["connections"]["total"] != 1 {
            eprintln!("{}", st["connections"]);
        }
        (st["connections"]["total"] == 1).then_some(st)
    })
    .await;
    assert!(st["documents_loaded"].as_u64().unwrap() <= 256, "{st}");
    let (code, v) = post_as(
        &format!("{}/api/events", s.url),
        Some(&alice),
        json!({"type": "still_here", "data": {"n": 1}}),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    sse.until("the new event", |t| t.contains("still_here"))
        .await;
    let after = rss_kib(pid);
    eprintln!("server RSS: {before} KiB before, {after} KiB after the list");
    assert!(
        after < before + 64 * 1024,
        "resident memory grew from {before} KiB to {after} KiB"
    );
}

/// Socket.IO checks `Origin` against `cors_origins` (or the `Host` the request was sent to) on
/// every request (handshake, polling, WebSocket upgrade); clients that send none (Node, native
/// apps) are not affected.
#[tokio::test]
async fn socketio_refuses_origins_not_on_the_list() {
    let s = TestServer::start_in(
        tempfile::tempdir().unwrap().path(),
        &["--cors-origins", "http://localhost:3000"],
        &[],
    );
    let c = reqwest::Client::new();
    let url = format!("{}/socket.io/?EIO=4&transport=polling", s.url);
    let r = c
        .get(&url)
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("cors_origins"), "{v}");
    let r = c
        .get(&url)
        .header("Origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert!(r.text().await.unwrap().starts_with("0{"));
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200, "no Origin");
    // a page served by this server through a reverse proxy that keeps `Host` (another port):
    // its origin is the Host the request was sent to
    let r = c
        .get(&url)
        .header("Host", "127.0.0.1:9")
        .header("Origin", "http://127.0.0.1:9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "same-host origin");
    // ...which a rebound name cannot use: the guard refuses its Host on an open server
    let r = c
        .get(&url)
        .header("Host", "evil.example")
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "rebound host");
    // a WebSocket upgrade from another origin is refused before it is upgraded
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/socket.io/?EIO=4&transport=websocket", s.addr),
    )
    .unwrap();
    req.headers_mut()
        .insert("Origin", "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403)
        }
        other => panic!("expected a 403, got {:?}", other.map(|_| ())),
    }
}
