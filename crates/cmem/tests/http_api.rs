//! The HTTP surface against a real server: publishing, bad input, poll, SSE framing and headers,
//! diagnostics, configuration errors at start-up.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{TestServer, until};
use futures::StreamExt;
use serde_json::{Value, json};

async fn body(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    (status, v)
}

/// Waits until the server holds a poll request of `client` open (diagnostics say `waiting`):
/// what a test that checks a long poll waits for, instead of a sleep.
async fn held(s: &TestServer, client: &str) {
    common::until(&format!("a held poll of {client}"), 10, || async {
        let (_, v) = common::get(format!("{}/api/websocket/status", s.url)).await;
        v["data"]["connections"]["clients"]
            .as_array()?
            .iter()
            .any(|c| c["id"] == client && c["waiting"] == true)
            .then_some(())
    })
    .await
}

#[tokio::test]
async fn health_and_publish_assign_increasing_ids() {
    let s = TestServer::start(&[]);
    let (st, v) = body(reqwest::get(format!("{}/health", s.url)).await.unwrap()).await;
    assert_eq!(st, 200);
    assert_eq!(v["success"], true);
    assert_eq!(v["data"]["status"], "ok");

    let (st, v) = body(s.publish(json!({"type": "note", "data": {"n": 1}})).await).await;
    assert_eq!(st, 200, "{v}");
    let first = v["data"]["ids"][0].as_u64().unwrap();
    let (st, v) = body(
        s.publish(json!({"events": [
            {"type": "note", "data": 1},
            {"type": "note", "scope": "workspace:w1", "data": 2},
            {"type": "note", "scope": "client:someone"}
        ]}))
        .await,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let ids: Vec<u64> = v["data"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![first + 1, first + 2, first + 3]);
    assert_eq!(s.head().await, first + 3);
}

#[tokio::test]
async fn bad_publish_input_gets_4xx_and_leaves_the_journal_alone() {
    let s = TestServer::start(&["--max-payload-bytes", "4096"]);
    let c = s.client();
    let url = format!("{}/api/events", s.url);
    // A bystander on SSE must see none of the bad requests and the good one after them.
    let sse = c
        .get(format!("{}/api/events/stream", s.url))
        .send()
        .await
        .unwrap();
    let mut bystander = SseReader {
        stream: sse.bytes_stream(),
        buf: String::new(),
    };
    assert_eq!(bystander.event().await.unwrap().1, "system_status");
    let head = s.head().await;

    let raw = |b: &'static str| {
        c.post(&url)
            .header("content-type", "application/json")
            .body(b)
            .send()
    };
    let cases: Vec<(&str, reqwest::Response, u16, &str)> = vec![
        (
            "malformed json",
            raw("{\"type\": ").await.unwrap(),
            400,
            "EOF",
        ),
        (
            "wrong type",
            raw("{\"type\": 5}").await.unwrap(),
            400,
            "invalid type",
        ),
        (
            "unknown field",
            raw("{\"type\": \"a\", \"colour\": 1}").await.unwrap(),
            400,
            "unknown field `colour`",
        ),
        (
            "bad scope",
            raw("{\"type\": \"a\", \"scope\": \"room:1\"}")
                .await
                .unwrap(),
            400,
            "room:1",
        ),
        (
            "empty batch",
            raw("{\"events\": []}").await.unwrap(),
            400,
            "empty",
        ),
        (
            "batch element",
            raw("{\"events\": [{\"type\": \"a\"}, {\"data\": 1}]}")
                .await
                .unwrap(),
            400,
            "events[1]",
        ),
        (
            "reserved type",
            raw("{\"type\": \"connect\"}").await.unwrap(),
            400,
            "reserved",
        ),
        (
            "server-only type",
            raw("{\"type\": \"resync\"}").await.unwrap(),
            400,
            "server only",
        ),
        (
            "forged search report",
            raw("{\"events\": [{\"type\": \"a\"}, {\"type\": \"search_completed\"}]}")
                .await
                .unwrap(),
            400,
            "server only",
        ),
        (
            "array body",
            raw("[1,2]").await.unwrap(),
            400,
            "JSON object",
        ),
        (
            "no content type",
            c.post(&url).body("{\"type\":\"a\"}").send().await.unwrap(),
            415,
            "Content-Type",
        ),
    ];
    for (name, resp, want, needle) in cases {
        let (st, v) = body(resp).await;
        assert_eq!(st, want, "{name}: {v}");
        assert_eq!(v["success"], false, "{name}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "{name}: message {msg:?} should mention {needle:?}"
        );
    }
    let big = json!({"type": "a", "data": "x".repeat(10_000)}).to_string();
    let resp = c
        .post(&url)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let (st, v) = body(resp).await;
    assert_eq!(st, 413, "{v}");
    assert!(v["error"].as_str().unwrap().contains("max_payload_bytes"));

    let (st, _) = body(
        c.get(format!("{}/no/such/thing", s.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(s.head().await, head, "no bad request reached the journal");
    // and the server still takes good input
    let (st, _) = body(s.publish(json!({"type": "fine"})).await).await;
    assert_eq!(st, 200);
    let (id, kind, _) = bystander.event().await.unwrap();
    assert_eq!((id, kind.as_str()), (head + 1, "fine"));
}

#[tokio::test]
async fn poll_validates_input_and_long_polls() {
    let s = TestServer::start(&[]);
    let c = s.client();
    let get = |q: &str| c.get(format!("{}/api/events/poll?{q}", s.url)).send();
    for (q, needle) in [
        ("", "client_id is required"),
        ("client_id=", "client_id is required"),
        ("client_id=a%20b", "client_id must be"),
        ("client_id=p&after=abc", "after"),
        ("client_id=p&after=-3", "after"),
        ("client_id=p&wait=soon", "wait"),
        ("client_id=p&limit=0", "limit"),
        ("client_id=p&limit=5000", "limit"),
        ("client_id=p&colour=red", "unknown query parameter `colour`"),
        ("client_id=p&workspaces=a%20b", "workspace"),
    ] {
        let (st, v) = body(get(q).await.unwrap()).await;
        assert_eq!(st, 400, "{q}: {v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{q}: {v}");
    }

    // First request: the client's own system_status.
    let (st, v) = body(get("client_id=lp").await.unwrap()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["events"][0]["type"], "system_status");
    // addressed to this registration of `lp` (an id reused later is another address)
    let address = v["events"][0]["scope"].as_str().unwrap().to_string();
    assert!(address.starts_with("client:lp."), "{v}");
    assert!(v["polling_interval_ms"].as_u64().is_some());
    assert!(v["timestamp"].as_str().is_some());
    let cursor = v["next_id"].as_u64().unwrap();
    assert_eq!(
        v["next_cursor"],
        format!("{}:{cursor}", v["epoch"].as_str().unwrap()),
        "next_cursor names the journal"
    );

    // A long poll is answered by the event that arrives while it waits.
    let url = format!(
        "{}/api/events/poll?client_id=lp&after={cursor}&wait=20",
        s.url
    );
    let waiting = tokio::spawn(async move {
        reqwest::get(url)
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    // the fence: the server says the request is held (it was not answered at once)
    held(&s, "lp").await;
    assert!(
        !waiting.is_finished(),
        "a long poll with nothing to say waits"
    );
    let (st, pv) = body(s.publish(json!({"type": "wake", "data": {"x": 1}})).await).await;
    assert_eq!(st, 200);
    let id = pv["data"]["ids"][0].as_u64().unwrap();
    let v = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v["events"][0]["type"], "wake");
    assert_eq!(v["events"][0]["id"], id);
    assert_eq!(v["next_id"], id);

    // A long poll is also woken by an event addressed to this client alone.
    let url = format!("{}/api/events/poll?client_id=lp&after={id}&wait=20", s.url);
    let waiting = tokio::spawn(async move {
        reqwest::get(url)
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    held(&s, "lp").await;
    s.publish(json!({"type": "for_lp", "scope": address})).await;
    let v = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v["events"][0]["type"], "for_lp");
    let id = v["next_id"].as_u64().unwrap();

    // Events scoped to another client or a workspace it did not join are not delivered.
    s.publish(json!({"events": [
        {"type": "secret", "scope": "client:someone-else"},
        {"type": "team", "scope": "workspace:w1"},
        {"type": "open"}
    ]}))
    .await;
    let (_, v) = body(get(&format!("client_id=lp&after={id}")).await.unwrap()).await;
    let types: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["open"]);
    let (_, v) = body(
        get(&format!("client_id=lp2&after={id}&workspaces=w1"))
            .await
            .unwrap(),
    )
    .await;
    let types: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["team", "open", "system_status"]);
}

/// Reads SSE frames (`field: value` lines until a blank line) from a byte stream.
struct SseReader<S> {
    stream: S,
    buf: String,
}

impl<S: futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin> SseReader<S> {
    async fn frame(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let f = self.buf[..i].to_string();
                self.buf.drain(..i + 2);
                return Some(f);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.stream.next())
                .await
                .ok()??
                .ok()?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Next frame that carries an event (skips comments and `retry:`).
    async fn event(&mut self) -> Option<(u64, String, Value)> {
        loop {
            let f = self.frame().await?;
            let mut id = None;
            let mut ev = None;
            let mut data = None;
            for line in f.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    // `<epoch>:<id>`: the id line names its journal
                    let (epoch, n) = v.rsplit_once(':').expect("id: <epoch>:<id>");
                    assert!(!epoch.is_empty(), "{v}");
                    id = n.parse().ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    ev = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).ok();
                }
            }
            if let (Some(ev), Some(data)) = (ev, data) {
                return Some((id.unwrap_or(0), ev, data));
            }
        }
    }
}

#[tokio::test]
async fn sse_headers_framing_and_resume() {
    let s = TestServer::start(&[]);
    let c = s.client();
    let bad = c
        .get(format!("{}/api/events/stream", s.url))
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    let (st, v) = body(bad).await;
    assert_eq!(st, 400);
    assert!(v["error"].as_str().unwrap().contains("Last-Event-ID"));

    let resp = c
        .get(format!("{}/api/events/stream", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    let mut r = SseReader {
        stream: resp.bytes_stream(),
        buf: String::new(),
    };
    let first = r.frame().await.unwrap();
    assert!(first.contains("retry: "), "opens with retry: {first:?}");
    let (id, ev, data) = r.event().await.unwrap();
    assert_eq!(ev, "system_status");
    assert_eq!(data["id"], id, "the id: line equals the envelope id");
    let me = data["data"]["client_id"].as_str().unwrap().to_string();

    // An event addressed to this connection alone arrives live; one for another does not.
    s.publish(json!({"events": [
        {"type": "not_mine", "scope": "client:somebody"},
        {"type": "direct", "scope": format!("client:{me}")}
    ]}))
    .await;
    let (_, ev, data) = r.event().await.unwrap();
    assert_eq!(ev, "direct");
    assert_eq!(data["scope"], format!("client:{me}"));

    let ids: Vec<u64> = body(
        s.publish(json!({"events": [{"type": "a"}, {"type": "b"}, {"type": "c"}]}))
            .await,
    )
    .await
    .1["data"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    for (want, t) in ids.iter().zip(["a", "b", "c"]) {
        let (id, ev, data) = r.event().await.unwrap();
        assert_eq!((id, ev.as_str()), (*want, t));
        assert_eq!(data["type"], t);
    }
    drop(r);

    // Resume with the header EventSource sends: only what follows.
    let resp = c
        .get(format!("{}/api/events/stream", s.url))
        .header("Last-Event-ID", ids[0].to_string())
        .send()
        .await
        .unwrap();
    let mut r = SseReader {
        stream: resp.bytes_stream(),
        buf: String::new(),
    };
    let got: Vec<(u64, String)> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let (id, ev, _) = r.event().await.unwrap();
            v.push((id, ev));
        }
        v
    };
    assert_eq!(got[0], (ids[1], "b".into()));
    assert_eq!(got[1], (ids[2], "c".into()));
    assert_eq!(got[2].1, "system_status");
}

#[tokio::test]
async fn sse_sends_heartbeat_comments() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::start_in(tmp.path(), &[], &[("CM_SSE_HEARTBEAT_S", "1")]);
    let resp = reqwest::get(format!("{}/api/events/stream", s.url))
        .await
        .unwrap();
    let mut r = SseReader {
        stream: resp.bytes_stream(),
        buf: String::new(),
    };
    let mut saw = false;
    for _ in 0..10 {
        let f = r.frame().await.unwrap();
        if f.trim() == ": heartbeat" {
            saw = true;
            break;
        }
    }
    assert!(saw, "a `: heartbeat` comment arrives on an idle stream");
}

#[tokio::test]
async fn disabled_transports_say_so() {
    let s = TestServer::start(&["--transports", "sse"]);
    let (st, v) = body(
        reqwest::get(format!("{}/api/events/poll?client_id=x", s.url))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 404);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("poll transport is disabled"),
        "{v}"
    );
    let (st, v) = body(
        reqwest::get(format!("{}/socket.io/?EIO=4&transport=polling", s.url))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 404);
    assert!(v["error"].as_str().unwrap().contains("disabled"), "{v}");
    let resp = reqwest::get(format!("{}/api/events/stream", s.url))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn diagnostics_report_config_journal_and_connections() {
    let s = TestServer::start(&["--queue-bound", "64"]);
    let _ = reqwest::get(format!("{}/api/events/poll?client_id=diag", s.url))
        .await
        .unwrap();
    let st = s.status().await;
    assert_eq!(st["config"]["queue_bound"], 64);
    assert_eq!(st["connections"]["by_transport"]["poll"], 1);
    assert_eq!(st["connections"]["clients"][0]["id"], "diag");
    assert!(
        st["connections"]["clients"][0]["remote_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(st["journal"]["epoch"].as_str().is_some());
    assert_eq!(st["journal"]["oldest_retained_id"], 1);
    let errors: Value = s.errors().await;
    assert_eq!(errors["success"], true);
    assert!(errors["data"]["errors"].is_array());
    let (_, cleared) = s.post("/api/websocket/clear-errors", &json!({})).await;
    assert_eq!(cleared["success"], true);
}

#[tokio::test]
async fn ids_continue_across_restart_and_shutdown_is_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = TestServer::start_in(tmp.path(), &[], &[]);
    let (_, v) = body(
        s.publish(json!({"events": [{"type": "a"}, {"type": "b"}]}))
            .await,
    )
    .await;
    let last = v["data"]["ids"][1].as_u64().unwrap();
    let epoch = v["data"]["epoch"].as_str().unwrap().to_string();
    let status = s.terminate();
    // a graceful stop exits 0; Windows gets a hard stop (no SIGTERM), after which the ids
    // must still continue, since every acknowledged event was committed
    #[cfg(unix)]
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    #[cfg(not(unix))]
    let _ = status;
    let s2 = TestServer::start_in(tmp.path(), &[], &[]);
    let (_, v) = body(s2.publish(json!({"type": "c"})).await).await;
    // the sequence continues (the restarted server's own indexing events come first)
    assert!(v["data"]["ids"][0].as_u64().unwrap() > last);
    assert_eq!(v["data"]["epoch"], epoch.as_str());
}

#[test]
fn bad_configuration_stops_startup_naming_key_value_and_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cmem"));
        cmd.args(args).arg("--data").arg(tmp.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = run(
        &["serve", "--bind", "127.0.0.1:0"],
        &[("CM_PING_TIMEOUT_MS", "5")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ping_timeout_ms")
            && err.contains("`5`")
            && err.contains("CM_PING_TIMEOUT_MS")
            && err.contains("from 50 to"),
        "{err}"
    );

    let out = run(&["serve", "--bind", "not-an-address"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bind"));

    std::fs::create_dir_all(tmp.path().join(".collective-memory/config")).unwrap();
    std::fs::write(
        tmp.path().join(".collective-memory/config/cmem.toml"),
        "queue_bound = 256\nretention_max_events = 99\n",
    )
    .unwrap();
    let out = run(
        &[
            "config",
            "--retention-max-events",
            "77",
            "--platform-profile",
            "default",
        ],
        &[("CM_SSE_RETRY_MS", "999")],
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("queue_bound = 256  (config file)"), "{text}");
    assert!(text.contains("retention_max_events = 77  (flag)"), "{text}");
    assert!(
        text.contains("sse_retry_ms = 999  (env CM_SSE_RETRY_MS)"),
        "{text}"
    );
    assert!(
        text.contains("ping_interval_ms = 25000  (default)"),
        "{text}"
    );

    std::fs::write(
        tmp.path().join(".collective-memory/config/cmem.toml"),
        "queue_size = 1\n",
    )
    .unwrap();
    let out = run(&["config"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("queue_size"));
}

#[tokio::test]
async fn cors_uses_the_allow_list() {
    let s = TestServer::start(&["--cors-origins", "http://app.test:3000"]);
    let c = s.client();
    let ok = c
        .get(format!("{}/health", s.url))
        .header("Origin", "http://app.test:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://app.test:3000"
    );
    let no = c
        .get(format!("{}/health", s.url))
        .header("Origin", "http://evil.test")
        .send()
        .await
        .unwrap();
    assert!(no.headers().get("access-control-allow-origin").is_none());
    // The WebSocket/polling endpoint refuses a foreign browser origin outright.
    let sio = c
        .get(format!("{}/socket.io/?EIO=4&transport=polling", s.url))
        .header("Origin", "http://evil.test")
        .send()
        .await
        .unwrap();
    assert_eq!(sio.status(), 403);
    let sio = c
        .get(format!("{}/socket.io/?EIO=4&transport=polling", s.url))
        .header("Origin", "http://app.test:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(sio.status(), 200);
    until("server alive", 5, || async {
        reqwest::get(format!("{}/health", s.url))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
}

/// A taken port is explained and exits with its own code; `--port-fallback` moves on and says
/// where it went.
#[tokio::test]
async fn a_taken_port_is_explained_and_fallback_finds_another() {
    let s = TestServer::start(&[]);
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cmem"))
        .args(["serve", "--bind", &s.addr, "--data"])
        .arg(data.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "port in use has exit code 3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[address_in_use]")
            && err.contains("cause:")
            && err.contains("--port-fallback"),
        "{err}"
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cmem"))
        .args([
            "serve",
            "--bind",
            &s.addr,
            "--port-fallback",
            "20",
            "--data",
        ])
        .arg(data.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_string();
    let taken: u16 = s.addr.rsplit(':').next().unwrap().parse().unwrap();
    let got: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    assert!(got > taken && got <= taken + 20, "{taken} -> {got}: {line}");
    // it serves there, and its configuration (its own CORS origin) says the port it took
    let v: Value = reqwest::get(format!("http://{addr}/api/websocket/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"]["config"]["bind"], addr.as_str());
    let _ = child.kill();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let _ = child.wait();
    assert!(err.contains("instead"), "says which port it took: {err}");
}

/// `cmem doctor` finds every transport working against a healthy server; `cmem firewall`
/// prints the exact rule, and refuses `--apply` off Windows with the reason.
#[tokio::test]
async fn doctor_and_firewall() {
    let s = TestServer::start(&[]);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cmem"))
        .args([
            "doctor",
            "--json",
            "--url",
            &s.url,
            "--bind",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(&s.data)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    let probes = report["selftest"].as_array().unwrap();
    let names: Vec<&str> = probes
        .iter()
        .map(|p| p["transport"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["http", "websocket", "polling", "sse", "poll", "mcp"]
    );
    assert!(probes.iter().all(|p| p["ok"] == true), "{report}");
    assert_eq!(report["platform"]["os"], std::env::consts::OS);
    assert!(report["config"].as_str().unwrap().contains("bind = "));
    // an open server lets the doctor see its node and journal
    assert_eq!(
        report["server"]["journal"]["engine"]["engine"], "sqlite",
        "{report}"
    );
    assert!(
        report["server"]["node"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
    );

    // nothing listening: the HTTP probe fails with a classified reason, exit code 1
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let out = Command::new(env!("CARGO_BIN_EXE_cmem"))
        .args([
            "doctor",
            "--url",
            &format!("http://{closed}"),
            "--bind",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(&s.data)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("connection_refused"), "{text}");
    assert!(text.contains("cannot be reached"), "{text}");

    let out = Command::new(env!("CARGO_BIN_EXE_cmem"))
        .args(["firewall", "--bind", "0.0.0.0:8123", "--data"])
        .arg(&s.data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("netsh advfirewall firewall add rule name=\"Collective Memory (cmem) TCP 8123\" dir=in action=allow protocol=TCP localport=8123"),
        "{text}"
    );
    if !cfg!(windows) {
        let out = Command::new(env!("CARGO_BIN_EXE_cmem"))
            .args(["firewall", "--apply", "--data"])
            .arg(&s.data)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("only on Windows"));
    }
}

/// `GET /config` shows every value with its source; `PUT /config` refuses what start-up would
/// refuse, writes nothing then, and otherwise changes the file for the next start.
#[tokio::test]
async fn config_is_shown_with_sources_and_changed_through_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = TestServer::start_in(
        tmp.path(),
        &["--queue-bound", "64"],
        &[("CM_SSE_HEARTBEAT_S", "7")],
    );
    let c = s.client();
    let get = || async {
        let v: Value = c
            .get(format!("{}/config", s.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["data"].clone()
    };
    let v = get().await;
    assert_eq!(v["config"]["queue_bound"], 64);
    assert_eq!(v["sources"]["queue_bound"], "flag");
    assert_eq!(v["sources"]["sse_heartbeat_s"], "env CM_SSE_HEARTBEAT_S");
    assert_eq!(v["sources"]["retention_max_events"], "default");
    assert_eq!(v["config"]["bind"], s.addr.as_str());

    let file = tmp.path().join(".collective-memory/config/cmem.toml");
    let put = |body: Value| {
        let c = c.clone();
        let url = format!("{}/config", s.url);
        async move {
            let r = c.put(url).json(&body).send().await.unwrap();
            let st = r.status().as_u16();
            (st, r.json::<Value>().await.unwrap())
        }
    };
    for (body, needle) in [
        (json!({"retention_max_events": -5}), "retention_max_events"),
        (json!({"sse_retry_ms": 5}), "from 100"),
        (json!({"colour": "red"}), "unknown key `colour`"),
        (json!({"data_dir": "/elsewhere"}), "data_dir cannot be set"),
        (json!({}), "no keys"),
    ] {
        let (code, v) = put(body.clone()).await;
        assert_eq!(code, 400, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{body}: {v}");
        assert!(!file.exists(), "a refused change writes nothing");
    }
    let (code, v) = put(json!({"sse_retry_ms": 1234, "sse_heartbeat_s": 9})).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["next_start"]["sse_retry_ms"], 1234);
    assert_eq!(v["data"]["shadowed_by_env"], json!(["sse_heartbeat_s"]));
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("sse_retry_ms = 1234")
    );

    // after a restart the file's value is in force, and says where it came from
    s.terminate();
    let s2 = TestServer::start_in(tmp.path(), &[], &[]);
    let v: Value = s2
        .client()
        .get(format!("{}/config", s2.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"]["config"]["sse_retry_ms"], 1234);
    assert_eq!(v["data"]["sources"]["sse_retry_ms"], "config file");
}
