//! Access control against the real binary: users, tokens and workspaces made with the
//! command line and the admin API; tokens required on HTTP, SSE and poll once users exist;
//! workspace events only for members; revocation closing live streams; the refusal to listen
//! beyond loopback without users. (Socket.IO is covered end to end in tests/e2e/teams.test.mjs.)

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{TestServer, cmem_in as cmem, get_as, post_as, token_for, until};
use futures::StreamExt;
use serde_json::{Value, json};

/// alice (admin, in eng), bob (in ops), carol (in nothing).
fn team(data: &Path) -> (String, String, String) {
    for args in [
        &["user", "add", "alice", "--admin"][..],
        &["user", "add", "bob"],
        &["user", "add", "carol"],
        &["workspace", "create", "eng"],
        &["workspace", "create", "ops"],
        &["workspace", "add-member", "eng", "alice"],
        &["workspace", "add-member", "ops", "bob"],
    ] {
        let (code, _, err) = cmem(data, args);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    (
        token_for(data, "alice"),
        token_for(data, "bob"),
        token_for(data, "carol"),
    )
}

#[test]
fn command_line_manages_the_team_and_says_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (code, out, _) = cmem(d, &["user", "add", "alice", "--admin"]);
    assert_eq!(code, 0);
    assert!(out.contains("cmem token create alice"), "{out}");
    let (code, _, err) = cmem(d, &["user", "add", "alice"]);
    assert_eq!(code, 2);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = cmem(d, &["user", "add", "bad name!"]);
    assert_eq!(code, 2);
    assert!(err.contains("not valid"), "{err}");
    let (code, _, err) = cmem(d, &["token", "create", "nobody"]);
    assert_eq!(code, 2);
    assert!(err.contains("cmem user add nobody"), "{err}");
    let (code, _, err) = cmem(d, &["workspace", "add-member", "nowhere", "alice"]);
    assert_eq!(code, 2);
    assert!(err.contains("cmem workspace create nowhere"), "{err}");
    let (_, out, _) = cmem(d, &["token", "create", "alice", "--label", "laptop"]);
    assert!(
        out.starts_with("cm_") && out.contains("shown only now"),
        "{out}"
    );
    let (_, out, _) = cmem(d, &["token", "list", "--json"]);
    let list: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(list[0]["label"], "laptop");
    assert!(
        !out.contains("hash"),
        "secrets and hashes are never listed: {out}"
    );
}

#[test]
fn a_reachable_bind_without_users_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    // refused before the port is bound, so nothing listens beyond loopback
    let out = Command::new(env!("CARGO_BIN_EXE_cmem"))
        .args(["serve", "--bind", "0.0.0.0:0", "--data"])
        .arg(tmp.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no users exist")
            && err.contains("cmem user add")
            && err.contains("--insecure"),
        "says how to fix it: {err}"
    );
}

/// Openness is a property of the bind and the user table at every request: an exposed server
/// whose users are all removed refuses everyone (503 with the fix) on every route and
/// transport, never opens; the last admin is kept unless the command line is told otherwise.
#[tokio::test]
async fn an_exposed_server_that_loses_its_last_user_closes_instead_of_opening() {
    let tmp = tempfile::tempdir().unwrap();
    let (alice, _bob, _carol) = team(tmp.path());
    let s = TestServer::start_authed(tmp.path(), &["--bind", "0.0.0.0:0"], &[], Some(&alice));
    let u = |p: &str| format!("{}{p}", s.url);

    // the last admin stays: over HTTP always, on the command line unless told
    let c = reqwest::Client::new();
    let (code, v) = common::send(c.delete(u("/api/admin/users/alice")), Some(&alice)).await;
    assert_eq!(code, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("create another admin first"),
        "{v}"
    );
    let (code, _, err) = cmem(tmp.path(), &["user", "remove", "alice"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("last admin") && err.contains("--allow-no-admin"),
        "{err}"
    );
    // the status never claims --insecure when it was not given
    let (code, v) = get_as(&u("/api/websocket/status"), Some(&alice)).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["auth"]["mode"], "tokens");
    assert_eq!(v["data"]["auth"]["insecure"], false);
    assert!(v["data"]["auth"]["warning"].is_null(), "{v}");

    for user in ["bob", "carol"] {
        let (code, _, err) = cmem(tmp.path(), &["user", "remove", user]);
        assert_eq!(code, 0, "{err}");
    }
    let (code, _, err) = cmem(tmp.path(), &["user", "remove", "alice", "--allow-no-admin"]);
    assert_eq!(code, 0, "{err}");

    // the server notices within its cache's second; until then a request without a token is
    // refused as before (401), never let in
    let v = until("the server to close", 10, || async {
        let (code, v) = get_as(&u("/api/admin/users"), None).await;
        assert!(code == 401 || code == 503, "{code}: {v}");
        (code == 503).then_some(v)
    })
    .await;
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("no users") && msg.contains("cmem user add") && msg.contains("--insecure"),
        "says how to fix it: {msg}"
    );
    let (code, v) = post_as(
        &u("/api/admin/users"),
        None,
        json!({"name": "mallory", "admin": true, "create_token": true}),
    )
    .await;
    assert_eq!(code, 503, "{v}");
    // every path, the public ones and the transports included
    for path in [
        "/api/search?q=x",
        "/api/events/stream",
        "/api/events/poll?client_id=x",
        "/system/status",
        "/api/websocket/status",
        "/mcp",
        "/health",
        "/",
        "/client/index.js",
        "/socket.io/?EIO=4&transport=polling",
    ] {
        let (code, v) = get_as(&u(path), None).await;
        assert_eq!(code, 503, "{path}: {v}");
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("cmem user add")),
            "{path}: {v}"
        );
    }
    // a user added on the command line opens it to tokens again
    let (code, _, err) = cmem(tmp.path(), &["user", "add", "dora", "--admin"]);
    assert_eq!(code, 0, "{err}");
    let dora = token_for(tmp.path(), "dora");
    until("dora's token to work", 10, || async {
        (get_as(&u("/api/admin/users"), Some(&dora)).await.0 == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn tokens_are_required_and_checked_on_http_sse_and_poll() {
    let tmp = tempfile::tempdir().unwrap();
    let (alice, bob, _carol) = team(tmp.path());
    let s = TestServer::start_authed(tmp.path(), &[], &[], Some(&alice));
    let u = |p: &str| format!("{}{p}", s.url);

    assert_eq!(
        get_as(&u("/health"), None).await.0,
        200,
        "health stays open"
    );
    for path in [
        "/api/search?q=x",
        "/api/events/stream",
        "/api/events/poll?client_id=x",
        "/system/status",
        "/metrics",
    ] {
        let (code, v) = get_as(&u(path), None).await;
        assert_eq!(code, 401, "{path}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("authentication required"),
            "{path}: {v}"
        );
        let (code, v) = get_as(&u(path), Some("cm_00000000_forged")).await;
        assert_eq!(code, 401, "{path}: {v}");
        assert!(v["error"].as_str().unwrap().contains("not valid"), "{v}");
    }
    let (code, _) = post_as(&u("/api/events"), None, json!({"type": "x"})).await;
    assert_eq!(code, 401);

    // a valid token, as a header or in the query (which handlers never see as a parameter)
    assert_eq!(get_as(&u("/api/search?q=x"), Some(&bob)).await.0, 200);
    let (code, v) = get_as(&u(&format!("/api/search?q=x&token={bob}")), None).await;
    assert_eq!(code, 200, "{v}");
    let (code, v) = get_as(
        &u(&format!("/api/events/poll?client_id=b1&token={bob}")),
        None,
    )
    .await;
    assert_eq!(code, 200, "{v}");

    // admin-only paths
    for (path, body) in [
        ("/system/reindex", json!({})),
        ("/system/cache/clear", json!({})),
        ("/api/admin/workspaces", json!({"name": "x"})),
        ("/api/websocket/clear-errors", json!({})),
    ] {
        let (code, v) = post_as(&u(path), Some(&bob), body).await;
        assert_eq!(code, 403, "{path}: {v}");
        assert!(v["error"].as_str().unwrap().contains("admin"), "{v}");
    }
    assert_eq!(get_as(&u("/api/admin/users"), Some(&alice)).await.0, 200);
    assert_eq!(get_as(&u("/api/websocket/status"), Some(&bob)).await.0, 403);
    let (code, v) = get_as(&u("/api/websocket/status"), Some(&alice)).await;
    assert_eq!(code, 200);
    assert_eq!(v["data"]["auth"]["mode"], "tokens", "{v}");

    // publishing: bob only into his workspace
    let (code, v) = post_as(&u("/api/events"), Some(&bob), json!({"type": "note"})).await;
    assert_eq!(code, 403, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("ops"),
        "names what bob may do: {v}"
    );
    let (code, _) = post_as(
        &u("/api/events"),
        Some(&bob),
        json!({"type": "note", "scope": "workspace:eng"}),
    )
    .await;
    assert_eq!(code, 403);
    let (code, _) = post_as(
        &u("/api/events"),
        Some(&bob),
        json!({"type": "note", "scope": "workspace:ops"}),
    )
    .await;
    assert_eq!(code, 200);

    // messages over HTTP have the per-second budget Socket.IO connections have
    let mut codes = Vec::new();
    for i in 0..40 {
        let (code, v) = post_as(
            &u("/api/workspaces/ops/messages"),
            Some(&bob),
            json!({"text": format!("m{i}")}),
        )
        .await;
        if code == 429 {
            assert!(v["error"].as_str().unwrap().contains("slow down"), "{v}");
        }
        codes.push(code);
    }
    assert!(codes.contains(&201) && codes.contains(&429), "{codes:?}");

    // a poll client id belongs to its user: alice's `b1` is another client than bob's
    let (code, v) = get_as(&u("/api/events/poll?client_id=b1"), Some(&alice)).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["events"][0]["data"]["client_id"], "b1", "{v}");
}

#[tokio::test]
async fn workspace_events_reach_members_only_and_revocation_cuts_streams() {
    let tmp = tempfile::tempdir().unwrap();
    let (alice, bob, carol) = team(tmp.path());
    let s = TestServer::start_authed(tmp.path(), &[], &[], Some(&alice));
    let u = |p: &str| format!("{}{p}", s.url);
    let head = {
        let (_, v) = get_as(&u("/health"), None).await;
        v["data"]["journal"]["head"].as_u64().unwrap()
    };
    // asking for a workspace one is not in is refused, on SSE and poll
    let (code, v) = get_as(&u("/api/events/stream?workspaces=eng"), Some(&bob)).await;
    assert_eq!(code, 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not a member of workspace `eng`")
    );
    let (code, _) = get_as(
        &u("/api/events/poll?client_id=c&workspaces=ops"),
        Some(&carol),
    )
    .await;
    assert_eq!(code, 403);

    let (code, _) = post_as(
        &u("/api/events"),
        Some(&alice),
        json!({"events": [
            {"type": "memo", "scope": "workspace:eng", "data": {"n": 1}},
            {"type": "memo", "scope": "workspace:ops", "data": {"n": 2}},
            {"type": "memo", "data": {"n": 3}}
        ]}),
    )
    .await;
    assert_eq!(code, 200);
    // each user, polling from before the events with no workspace list, gets their memberships
    let seen = |v: &Value| -> Vec<i64> {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "memo")
            .map(|e| e["data"]["n"].as_i64().unwrap())
            .collect()
    };
    for (who, tok, want) in [
        ("alice", &alice, vec![1, 3]),
        ("bob", &bob, vec![2, 3]),
        ("carol", &carol, vec![3]),
    ] {
        let (code, v) = get_as(
            &u(&format!("/api/events/poll?client_id=p-{who}&after={head}")),
            Some(tok),
        )
        .await;
        assert_eq!(code, 200, "{who}: {v}");
        assert_eq!(seen(&v), want, "{who}");
    }

    // bob's SSE stream is closed when his token is revoked, and the token stops working
    let resp = reqwest::Client::new()
        .get(u("/api/events/stream"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let (_, tokens) = get_as(&u("/api/admin/tokens?user=bob"), Some(&alice)).await;
    let id = tokens["data"][0]["id"].as_str().unwrap().to_string();
    let (code, v) = post_as(
        &u(&format!("/api/admin/tokens/{id}/revoke")),
        Some(&alice),
        json!({}),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    // the SSE stream and the poll client `p-bob`
    assert_eq!(v["data"]["connections_closed"], 2, "{v}");
    let mut text = String::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: close") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(closed && text.contains("token_revoked"), "{text}");
    for path in [
        "/api/search?q=x",
        "/api/events/stream",
        "/api/events/poll?client_id=p-bob",
    ] {
        let (code, v) = get_as(&u(path), Some(&bob)).await;
        assert_eq!(code, 401, "{path}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("revoked"),
            "{path}: {v}"
        );
    }

    // the first admin and its token can be made over HTTP on an open server
    let open = tempfile::tempdir().unwrap();
    let s2 = TestServer::start_in(open.path(), &[], &[]);
    let (code, v) = post_as(
        &format!("{}/api/admin/users", s2.url),
        None,
        json!({"name": "root", "admin": true, "create_token": true}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let root = v["data"]["token"]["token"].as_str().unwrap().to_string();
    until("the server notices it now has users", 5, || async {
        let (code, _) = get_as(&format!("{}/api/search?q=x", s2.url), None).await;
        (code == 401).then_some(())
    })
    .await;
    let (code, _) = get_as(&format!("{}/api/search?q=x", s2.url), Some(&root)).await;
    assert_eq!(code, 200);
}

/// `GET /api/me` tells a client (the web app) who it is: name, role and workspaces; on an open
/// server, the local user who may do everything.
#[tokio::test]
async fn me_says_who_the_caller_is() {
    let open = TestServer::start(&[]);
    let (code, v) = get_as(&format!("{}/api/me", open.url), None).await;
    assert_eq!(code, 200);
    assert_eq!(
        v["data"],
        json!({"user": null, "admin": true, "workspaces": [], "open": true})
    );

    let tmp = tempfile::tempdir().unwrap();
    let (alice, bob, _carol) = team(tmp.path());
    let s = TestServer::start_authed(tmp.path(), &[], &[], Some(&alice));
    let me = |t: Option<String>| {
        let url = format!("{}/api/me", s.url);
        async move { get_as(&url, t.as_deref()).await }
    };
    assert_eq!(me(None).await.0, 401);
    let (_, mut v) = me(Some(alice)).await;
    let alice_id = v["data"]["id"].take();
    assert!(
        alice_id.as_str().is_some_and(|id| id.starts_with('u')),
        "{v}"
    );
    assert_eq!(
        v["data"],
        json!({"user": "alice", "id": null, "admin": true, "workspaces": ["eng"], "open": false})
    );
    let (_, mut v) = me(Some(bob)).await;
    let bob_id = v["data"]["id"].take();
    assert_ne!(bob_id, alice_id);
    assert_eq!(
        v["data"],
        json!({"user": "bob", "id": null, "admin": false, "workspaces": ["ops"], "open": false})
    );
}
