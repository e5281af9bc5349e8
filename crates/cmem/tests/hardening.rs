//! Regression tests for what an attacker tried against the real binary: a query that
//! overflowed the parser's stack, members publishing as the server or as someone else,
//! symlinks reading outside the data folder, rights kept after the first user exists, DNS
//! rebinding, ghost connections, other users' search history, CLI team changes not reaching
//! live connections, scopes failing open, slow or lying HTTP clients. Each test says which
//! item of the hardening list it guards.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{TestServer, until};
use serde_json::{Value, json};

fn cmem(data: &Path, args: &[&str]) -> (i32, String, String) {
    let data = data.to_str().expect("a UTF-8 temp path");
    common::cmem(&[args, &["--data", data]].concat())
}

fn token_for(data: &Path, user: &str) -> String {
    let (code, out, err) = cmem(data, &["token", "create", user, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// Runs team commands on `data`, each of which must succeed.
fn team(data: &Path, commands: &[&[&str]]) {
    for args in commands {
        let (code, _, err) = cmem(data, args);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
}

async fn send(r: reqwest::RequestBuilder, token: Option<&str>) -> (u16, Value) {
    let r = match token {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
    let r = r.send().await.expect("request");
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    send(reqwest::Client::new().get(url), token).await
}

async fn post(url: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    send(reqwest::Client::new().post(url).json(&body), token).await
}

/// Every event a poll reader `client` sees after `after` (one request, up to `wait` s).
async fn poll(s: &TestServer, token: Option<&str>, client: &str, after: u64) -> (Vec<Value>, u64) {
    let (st, v) = get(
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
        v["next_cursor"].as_u64().unwrap_or(after),
    )
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
            let (st, v) = get(&format!("{}{path}?q={enc}", s.url), None).await;
            assert_eq!(st, 400, "{path}: {v}");
            assert!(v["error"].as_str().unwrap().contains("20 levels"), "{v}");
        }
        let (st, v) = post(&format!("{}/api/search", s.url), None, json!({"q": q})).await;
        assert_eq!(st, 400, "{v}");
        let (st, v) = post(
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
    let (alice, bob) = (token_for(d, "alice"), token_for(d, "bob"));
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
        let (st, v) = post(&url, Some(&bob), body.clone()).await;
        assert_eq!(st, 400, "{kind}: {v}");
        assert!(v["error"].as_str().unwrap().contains("server only"), "{v}");
        // not even an admin may forge them
        let (st, _) = post(&url, Some(&alice), body).await;
        assert_eq!(st, 400, "{kind} from an admin");
    }
    // a type of its own goes through, marked with who published it
    let (_, start) = poll(&s, Some(&alice), "reader", 0).await;
    let (st, v) = post(
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
    let (st, v) = post(
        &url,
        Some(&bob),
        json!({"type": "deploy", "scope": "workspace:ops", "publisher": {"user": "alice"}}),
    )
    .await;
    assert_eq!(st, 400, "{v}");
}
