//! Regression tests for the third round of attacks on the real binary (issue 24): idle sockets
//! held for ever and connections without a per-address bound, search text readable by every
//! member, a reused user name inheriting search history, members flooding the journal,
//! poll client ids taken over, and the smaller findings. Each test names its finding. (The
//! first finding, an exposed server opening when its last user goes, is in `teams.rs`.)

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Sse, TestServer, cmem_in as cmem, get_as, token_for, until};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs team commands on `data`, each of which must succeed.
fn team(data: &Path, commands: &[&[&str]]) {
    for args in commands {
        let (code, _, err) = cmem(data, args);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
}

/// alice (admin), bob and carol; their tokens.
fn three(d: &Path) -> (String, String, String) {
    team(
        d,
        &[
            &["user", "add", "alice", "--admin"],
            &["user", "add", "bob"],
            &["user", "add", "carol"],
        ],
    );
    (
        token_for(d, "alice"),
        token_for(d, "bob"),
        token_for(d, "carol"),
    )
}

/// Reads until the server closes the socket; `false` if it is still open after `secs`.
async fn closed_within(c: &mut tokio::net::TcpStream, secs: u64) -> bool {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(secs), c.read_to_end(&mut buf))
        .await
        .is_ok()
}

/// A metric's value from `/metrics` (`None` if the scrape was refused).
async fn metric(url: &str, name: &str) -> Option<f64> {
    let r = reqwest::get(format!("{url}/metrics")).await.ok()?;
    if r.status() != 200 {
        return None;
    }
    let text = r.text().await.ok()?;
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok());
    assert!(v.is_some(), "{name} not in /metrics:\n{text}");
    v
}

/// Finding 2: a socket that sends nothing, or only the HTTP/2 preface, was held for ever
/// (hyper's header timer starts after protocol detection); nothing bounded the sockets one
/// address holds.
#[tokio::test]
async fn idle_sockets_are_closed_and_each_address_holds_a_bounded_number() {
    let s = TestServer::start(&["--request-read-timeout-ms", "500"]);
    let mut silent = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    let mut preface = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // a whole HTTP/2 settings frame, so hyper is past the preface and waiting for a request
    preface
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    assert!(
        closed_within(&mut silent, 15).await,
        "a socket that sends nothing is held"
    );
    assert!(
        closed_within(&mut preface, 15).await,
        "a socket that sends only the HTTP/2 preface is held"
    );

    // the cap: loopback counted on purpose here (it is exempt by default, for a local proxy)
    let s = TestServer::start(&[
        "--max-connections-per-address",
        "3",
        "--connection-cap-loopback",
    ]);
    let mut streams = Vec::new();
    for _ in 0..3 {
        let r = reqwest::get(format!("{}/api/events/stream", s.url))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        streams.push(r);
    }
    // refused as it is accepted, before a request (one sent already could turn the close into
    // a reset that discards the answer)
    let mut fourth = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), fourth.read_to_string(&mut answer))
        .await
        .expect("refused at once");
    assert!(
        answer.starts_with("HTTP/1.1 429") && answer.contains("max_connections_per_address"),
        "{answer}"
    );
    // a closed stream gives its place back
    streams.pop();
    until("a place to come back", 10, || async {
        reqwest::get(format!("{}/health", s.url))
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;
    drop(streams);
    until("every place back", 10, || async {
        let open = metric(&s.url, "cmem_tcp_connections").await?;
        // the scrape's own connection
        (open <= 1.0).then_some(())
    })
    .await;
    let refused = metric(&s.url, "cmem_connections_refused_per_address_total").await;
    assert!(refused >= Some(1.0), "{refused:?}");
}

/// Finding 3: with the default `search_publish_query = true`, every member read every other
/// member's search text live, by replay and through MCP. A user's search events go to their
/// own scope (their connections and admins); everyone else sees only the count.
#[tokio::test]
async fn a_members_searches_are_theirs_and_admins_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (alice, bob, carol) = three(tmp.path());
    let s = TestServer::start_authed(tmp.path(), &[], &[], Some(&alice));
    let mut bob_live = Sse::open(&s, Some(&bob), "").await;
    let mut alice_live = Sse::open(&s, Some(&alice), "").await;
    let url = |q: &str| format!("{}/api/search?q={q}", s.url);
    assert_eq!(get_as(&url("quokkasecret"), Some(&carol)).await.0, 200);
    // the fence: bob's own search, after carol's, reaches bob
    assert_eq!(get_as(&url("bobfence"), Some(&bob)).await.0, 200);
    bob_live
        .until("bob's own search", |t| t.contains("bobfence"))
        .await;
    assert!(!bob_live.text.contains("quokkasecret"), "{}", bob_live.text);
    alice_live
        .until("carol's search, for the admin", |t| {
            t.contains("quokkasecret") && t.contains("bobfence")
        })
        .await;
    // nor by replay, on SSE or poll
    let mut bob_replay = Sse::open(&s, Some(&bob), "last_event_id=0").await;
    bob_replay
        .until("the replay up to bob's search", |t| t.contains("bobfence"))
        .await;
    assert!(!bob_replay.text.contains("quokkasecret"));
    let (code, page) = get_as(
        &format!("{}/api/events/poll?client_id=b1&after=0&limit=1000", s.url),
        Some(&bob),
    )
    .await;
    assert_eq!(code, 200, "{page}");
    let text = page.to_string();
    assert!(
        text.contains("bobfence") && !text.contains("quokkasecret"),
        "{text}"
    );
    // everyone sees how many, not who or what
    let (code, v) = get_as(&format!("{}/system/status", s.url), Some(&alice)).await;
    assert_eq!(code, 200, "{v}");
    assert!(v["data"]["searches_total"].as_u64() >= Some(2), "{v}");
}

/// Finding 4: the history was keyed by user name and kept on removal, so a new user given a
/// removed user's name was offered their searches.
#[tokio::test]
async fn a_reused_user_name_inherits_no_searches() {
    let tmp = tempfile::tempdir().unwrap();
    let (alice, _bob, carol) = three(tmp.path());
    let s = TestServer::start_authed(tmp.path(), &[], &[], Some(&alice));
    let similar = |token: String| {
        let url = format!("{}/prompts/similar?q=merger%20plans", s.url);
        async move {
            let (code, v) = get_as(&url, Some(&token)).await;
            assert_eq!(code, 200, "{v}");
            v["data"]["similar"].as_array().cloned().unwrap_or_default()
        }
    };
    let (code, _) = get_as(
        &format!("{}/api/search?q=merger%20plans", s.url),
        Some(&carol),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(similar(carol.clone()).await.len(), 1, "carol's own");
    // removed over the admin API, then again on the command line
    let c = reqwest::Client::new();
    let (code, v) = common::send(
        c.delete(format!("{}/api/admin/users/carol", s.url)),
        Some(&alice),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    team(tmp.path(), &[&["user", "add", "carol"]]);
    let new_carol = token_for(tmp.path(), "carol");
    let got: Vec<Value> = until("the new carol's token", 10, || {
        let t = new_carol.clone();
        let url = format!("{}/prompts/similar?q=merger%20plans", s.url);
        async move {
            let (code, v) = get_as(&url, Some(&t)).await;
            (code == 200).then(|| v["data"]["similar"].as_array().cloned().unwrap_or_default())
        }
    })
    .await;
    assert!(got.is_empty(), "the new carol inherits nothing: {got:?}");
    let (code, _) = get_as(
        &format!("{}/api/search?q=merger%20plans", s.url),
        Some(&new_carol),
    )
    .await;
    assert_eq!(code, 200);
    team(
        tmp.path(),
        &[&["user", "remove", "carol"], &["user", "add", "carol"]],
    );
    let third = token_for(tmp.path(), "carol");
    assert!(similar(third).await.is_empty(), "nor does the third");
}

/// Finding 5: any member could flood the journal (300 global `system_status` events in 3 s
/// through `POST /system/status`; two events per search) and push real events out of
/// retention. A member's requests that append to the journal draw on a per-user budget;
/// publishing a status on demand is for admins.
#[tokio::test]
async fn a_member_cannot_flood_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let (alice, bob, _carol) = three(tmp.path());
    team(
        tmp.path(),
        &[
            &["workspace", "create", "eng"],
            &["workspace", "add-member", "eng", "bob"],
        ],
    );
    let s = TestServer::start_authed(
        tmp.path(),
        &["--member-events-per-s", "5"],
        &[],
        Some(&alice),
    );
    let post = |token: String, path: &'static str, body: Value| {
        let url = format!("{}{path}", s.url);
        async move { common::post_as(&url, Some(&token), body).await }
    };
    let (code, v) = post(bob.clone(), "/system/status", Value::Null).await;
    assert_eq!(code, 403, "{v}");
    assert_eq!(
        post(alice.clone(), "/system/status", Value::Null).await.0,
        200
    );

    let head = s.status_as(&alice).await["journal"]["head"]
        .as_u64()
        .unwrap();
    let event = serde_json::json!({"type": "note", "scope": "workspace:eng", "data": {}});
    let mut refused = None;
    for _ in 0..40 {
        let (code, v) = post(bob.clone(), "/api/events", event.clone()).await;
        if code == 429 {
            refused = Some(v);
            break;
        }
        assert_eq!(code, 200, "{v}");
    }
    let refused = refused.expect("a member's publishes are limited");
    assert!(
        refused["error"].as_str().unwrap().contains("slow down"),
        "{refused}"
    );
    // searches draw on the same budget
    let (code, v) = get_as(&format!("{}/api/search?q=x", s.url), Some(&bob)).await;
    assert_eq!(code, 429, "{v}");
    // a batch larger than a burst never fits, and says so
    let batch: Vec<Value> = (0..11).map(|_| event.clone()).collect();
    let (code, v) = post(
        bob.clone(),
        "/api/events",
        serde_json::json!({"events": batch}),
    )
    .await;
    assert_eq!(code, 429, "{v}");
    assert!(v["error"].as_str().unwrap().contains("at once"), "{v}");
    let after = s.status_as(&alice).await["journal"]["head"]
        .as_u64()
        .unwrap();
    assert!(after - head < 40, "{} events from one member", after - head);
    // an admin is not limited
    for _ in 0..30 {
        assert_eq!(
            post(alice.clone(), "/api/events", event.clone()).await.0,
            200
        );
    }
}

/// Finding 7: a poll `client_id` was one name for everyone: another user who knew it could
/// take it (and hold it, so its owner got 403 for as long as the squatter polled). A client
/// id belongs to the identity that made it.
#[tokio::test]
async fn a_poll_client_id_belongs_to_its_user() {
    let tmp = tempfile::tempdir().unwrap();
    let (alice, bob, _carol) = three(tmp.path());
    let s = TestServer::start_authed(tmp.path(), &[], &[], Some(&alice));
    let poll = |token: String, after: u64| {
        let url = format!(
            "{}/api/events/poll?client_id=dashboard&after={after}",
            s.url
        );
        async move { get_as(&url, Some(&token)).await }
    };
    let (code, mine) = poll(alice.clone(), 0).await;
    assert_eq!(code, 200, "{mine}");
    let greeting = mine["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["type"] == "system_status" && e["scope"].as_str().unwrap().starts_with("client:")
        })
        .map(|e| e["id"].clone())
        .expect("alice's greeting");
    // bob polls with the same id at once: his own registration, nothing of alice's
    let (code, theirs) = poll(bob.clone(), 0).await;
    assert_eq!(code, 200, "{theirs}");
    assert!(
        !theirs["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == greeting),
        "bob read alice's greeting: {theirs}"
    );
    // and alice keeps hers, with her cursor
    let next = mine["next_id"].as_u64().unwrap();
    let (code, again) = poll(alice.clone(), next).await;
    assert_eq!(code, 200, "{again}");
    let (code, st) = get_as(&format!("{}/api/websocket/status", s.url), Some(&alice)).await;
    assert_eq!(code, 200);
    let pollers = st["data"]["connections"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["transport"] == "poll")
        .count();
    assert_eq!(pollers, 2, "{st}");
}

/// Finding 8: the smaller ones. `/api/document` answered 500 for a folder, a FIFO, `file/`,
/// `file/x` and names over 255 bytes; `Host: [::1]evil.example` passed the Host check; 405 and
/// 414 had empty bodies; a file whose name is not UTF-8 was indexed under a lossy name that
/// `/api/document` then could not open; token labels were unbounded.
#[tokio::test]
async fn the_smaller_findings_are_4xx_with_reasons_not_500s() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("notes")).unwrap();
    std::fs::write(d.join("notes/a.md"), "# A\nharbor").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let fifo = d.join("notes/pipe");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9.md");
        std::fs::write(d.join("notes").join(name), "latin1 quokkaname").unwrap();
    }
    let s = TestServer::start_in(d, &[], &[]);
    let doc = |p: &str| {
        let url = format!("{}/api/document?path={p}", s.url);
        async move { common::get(url).await }
    };
    let long = "n".repeat(300);
    for (path, want) in [
        ("notes", 422),
        ("notes/", 400),
        ("notes/a.md/x", 404),
        (long.as_str(), 400),
        #[cfg(unix)]
        ("notes/pipe", 422),
    ] {
        let (code, v) = doc(path).await;
        assert_eq!(code, want, "{path}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {v}"
        );
    }
    assert_eq!(doc("notes/a.md").await.0, 200);

    // Host: an address followed by a name is not an address
    let c = reqwest::Client::new();
    let r = c
        .get(format!("{}/api/search?q=x", s.url))
        .header("Host", "[::1]evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // 405 and 414 in the envelope
    let r = c.put(format!("{}/api/search", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("PUT"), "{v}");
    let r = c
        .get(format!("{}/api/search?q={}", s.url, "a".repeat(9000)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 414);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("8192"), "{v}");

    // a name that is not UTF-8 is skipped and counted, not indexed under a name that opens
    // nothing
    #[cfg(unix)]
    {
        let (code, v) = common::get(format!("{}/api/search?q=quokkaname", s.url)).await;
        assert_eq!(code, 200);
        assert_eq!(v["data"]["total"], 0, "{v}");
        let (_, v) = common::get(format!("{}/system/indexing", s.url)).await;
        assert!(v["data"]["skipped"].as_u64() >= Some(1), "{v}");
    }

    // token labels are bounded
    let (code, v) = common::post_as(
        &format!("{}/api/admin/users", s.url),
        None,
        serde_json::json!({"name": "alice", "admin": true, "create_token": true, "label": "x".repeat(900_000)}),
    )
    .await;
    assert!(code == 400 || code == 413, "{code}: {v}");
    let (code, _, err) = cmem(d, &["user", "add", "bob"]);
    assert_eq!(code, 0, "{err}");
    let label = "y".repeat(101);
    let (code, _, err) = cmem(d, &["token", "create", "bob", "--label", &label]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at most 100"), "{err}");
}

/// Finding 8: at `RUST_LOG=trace` the Socket.IO CONNECT packet, token and all, was logged.
#[tokio::test]
async fn tokens_never_reach_the_log_even_at_trace() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("server.log");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cmem"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let addr = {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        loop {
            let line = lines
                .next()
                .expect("the server prints its address")
                .unwrap();
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.trim().to_string();
            }
        }
    };
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let _open = ws.next().await;
    ws.send(Message::text(r#"40{"token":"cm_canary_s3cr3t"}"#))
        .await
        .unwrap();
    // the answer (the token is refused: it was never issued) is the fence
    let answer = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("an answer to CONNECT");
    assert!(
        matches!(&answer, Some(Ok(Message::Text(t))) if t.starts_with("44")),
        "{answer:?}"
    );
    // a kill loses what the server has not written out yet (seen under Wine): wait for its
    // trace lines to reach the file first
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("TRACE"))
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("TRACE"), "tracing was on");
    assert!(!text.contains("canary_s3cr3t"), "the token is in the log");
}
