//! The Rust client library (`cmem-client`) and `cmem tail` / `cmem publish` against the real
//! server: every transport, falling back when one is disabled, a TCP proxy that cuts every
//! connection again and again, the server killed and restarted, moving back up when a blocking
//! proxy gives way. Each must deliver every event exactly once, in order.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cmem_client::{Backoff, Client, Envelope, Options, Phase, State, Transport, Update};
use common::{TestServer, until};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc};

/// Reads a client into shared vectors in the background.
struct Reader {
    events: Arc<Mutex<Vec<Envelope>>>,
    states: Arc<Mutex<Vec<State>>>,
    _task: tokio::task::JoinHandle<()>,
}

fn read(mut c: Client) -> Reader {
    let events = Arc::new(Mutex::new(Vec::new()));
    let states = Arc::new(Mutex::new(Vec::new()));
    let (e, s) = (events.clone(), states.clone());
    let task = tokio::spawn(async move {
        while let Some(u) = c.next().await {
            match u {
                Update::Event(env) => e.lock().await.push(*env),
                Update::State(st) => s.lock().await.push(st),
            }
        }
    });
    Reader {
        events,
        states,
        _task: task,
    }
}

impl Reader {
    async fn tagged(&self, tag: &str) -> Vec<u64> {
        self.events
            .lock()
            .await
            .iter()
            .filter(|e| e.kind == "test_event" && e.data["tag"] == tag)
            .map(|e| e.id)
            .collect()
    }

    async fn wait(&self, tag: &str, n: usize, secs: u64) -> Vec<u64> {
        until(&format!("{n} events tagged {tag}"), secs, || async {
            let got = self.tagged(tag).await;
            (got.len() >= n).then_some(got)
        })
        .await
    }

    async fn connected_via(&self) -> Option<Transport> {
        let s = self.states.lock().await;
        s.last()
            .filter(|s| s.state == Phase::Connected)
            .map(|s| s.transport)
    }

    /// How many connections ended with an error (each followed by a reconnect).
    async fn cuts(&self) -> usize {
        self.states
            .lock()
            .await
            .iter()
            .filter(|s| s.error.is_some())
            .count()
    }

    /// Every delivered id is larger than the one before: no repeat, no reordering.
    async fn assert_in_order(&self) {
        let ev = self.events.lock().await;
        for w in ev.windows(2) {
            assert!(w[1].id > w[0].id, "{} after {}", w[1].id, w[0].id);
        }
    }
}

/// Publishes `events` in one request; their ids.
async fn publish_batch(
    http: &reqwest::Client,
    url: &str,
    events: Vec<serde_json::Value>,
) -> Vec<u64> {
    let r: serde_json::Value = http
        .post(format!("{url}/api/events"))
        .json(&json!({ "events": events }))
        .send()
        .await
        .expect("publish")
        .json()
        .await
        .expect("publish answer");
    r["data"]["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_u64().expect("id"))
        .collect()
}

async fn publish_tagged(url: &str, n: usize, tag: &str, gap: Duration) -> Vec<u64> {
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(5) {
        let events: Vec<_> = chunk
            .iter()
            .map(|i| json!({"type": "test_event", "data": {"tag": tag, "seq": i}}))
            .collect();
        ids.extend(publish_batch(&http, url, events).await);
        tokio::time::sleep(gap).await;
    }
    ids
}

fn opts(url: &str, transports: &[Transport]) -> Options {
    let mut o = Options::new(url);
    o.transports = transports.to_vec();
    o.connect_timeout = Duration::from_secs(3);
    o.backoff = Backoff {
        initial: Duration::from_millis(100),
        factor: 2,
        max: Duration::from_secs(1),
    };
    o
}

/// A TCP proxy that can cut every connection through it, and refuse connections whose first
/// request is for `/socket.io/` (a proxy that blocks Socket.IO).
struct Proxy {
    url: String,
    cut: mpsc::UnboundedSender<()>,
    /// Stops every connection open now without closing it (a network change).
    freeze: Arc<tokio::sync::watch::Sender<u64>>,
    block_socketio: Arc<AtomicBool>,
}

async fn proxy(upstream: String) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let block = Arc::new(AtomicBool::new(false));
    let (cut_tx, mut cut_rx) = mpsc::unbounded_channel::<()>();
    let generation = Arc::new(tokio::sync::watch::channel(0u64).0);
    let g = generation.clone();
    tokio::spawn(async move {
        while cut_rx.recv().await.is_some() {
            g.send_modify(|n| *n += 1);
        }
    });
    let freeze = Arc::new(tokio::sync::watch::channel(0u64).0);
    let f = freeze.clone();
    let b = block.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let block = b.clone();
            let mut cut = generation.subscribe();
            let mut frozen = f.subscribe();
            tokio::spawn(async move {
                let mut first = vec![0u8; 4096];
                let n = match client.read(&mut first).await {
                    Ok(n) if n > 0 => n,
                    _ => return,
                };
                let head = String::from_utf8_lossy(&first[..n]);
                if block.load(Ordering::SeqCst) && head.contains(" /socket.io/") {
                    return; // dropped: the client sees the connection closed
                }
                let Ok(mut up) = TcpStream::connect(&upstream).await else {
                    return;
                };
                use tokio::io::AsyncWriteExt;
                if up.write_all(&first[..n]).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut up) => {}
                    _ = cut.changed() => {}
                    // frozen: both sockets stay open and carry nothing until the end
                    _ = frozen.changed() => { let _ = cut.changed().await; }
                }
            });
        }
    });
    Proxy {
        url,
        cut: cut_tx,
        freeze,
        block_socketio: block,
    }
}

#[tokio::test]
async fn every_transport_delivers_each_event_once_in_order() {
    let s = TestServer::start(&[]);
    for t in Transport::ALL {
        let r = read(Client::connect(opts(&s.url, &[t])).expect("client"));
        until("connected", 10, || async { r.connected_via().await }).await;
        let tag = format!("alone-{t}");
        let ids = publish_tagged(&s.url, 60, &tag, Duration::ZERO).await;
        assert_eq!(r.wait(&tag, 60, 15).await, ids, "{t}");
        r.assert_in_order().await;
    }
}

#[tokio::test]
async fn falls_back_past_a_disabled_transport_and_resumes_from_a_cursor() {
    let s = TestServer::start(&["--transports", "sse,poll"]);
    let r = read(Client::connect(opts(&s.url, &Transport::ALL)).expect("client"));
    let via = until("connected", 20, || async { r.connected_via().await }).await;
    assert_eq!(via, Transport::Sse);
    let failed = r
        .states
        .lock()
        .await
        .iter()
        .filter_map(|s| s.error.clone())
        .collect::<Vec<_>>();
    assert!(
        failed.iter().all(|(t, e)| t.is_socketio()
            && e.message.contains("404")
            && e.reason.as_deref() == Some("not_found")),
        "{failed:?}"
    );
    let ids = publish_tagged(&s.url, 30, "fb", Duration::ZERO).await;
    assert_eq!(r.wait("fb", 30, 15).await, ids);

    // a new client from the cursor of the 10th event gets the 20 after it, and nothing else
    let from = r
        .events
        .lock()
        .await
        .iter()
        .find(|e| e.id == ids[9])
        .cloned()
        .expect("10th");
    let mut o = opts(&s.url, &[Transport::Poll]);
    o.from = Some(cmem_client::Cursor {
        epoch: Some(from.epoch),
        id: from.id,
    });
    let r2 = read(Client::connect(o).expect("client"));
    assert_eq!(r2.wait("fb", 20, 15).await, ids[10..].to_vec());
}

#[tokio::test]
async fn a_proxy_cutting_every_connection_loses_and_doubles_nothing() {
    let s = TestServer::start(&[]);
    let p = proxy(s.addr.clone()).await;
    let mut readers = Vec::new();
    for ts in [
        &Transport::ALL[..],
        &[Transport::Websocket],
        &[Transport::Sse],
        &[Transport::Poll],
    ] {
        let mut o = opts(&p.url, ts);
        o.stable_after = Duration::from_millis(500);
        readers.push(read(Client::connect(o).expect("client")));
    }
    for r in &readers {
        until("connected", 10, || async { r.connected_via().await }).await;
    }
    // Rounds: events while connected; once every reader has them (so each one's connection
    // is idle or waiting on a long poll, and is surely cut), every connection is cut and
    // more events are published while the readers reconnect. A round ends when each reader
    // has come back with all of them.
    const ROUNDS: usize = 4;
    let mut ids = Vec::new();
    for round in 0..ROUNDS {
        ids.extend(publish_tagged(&s.url, 30, "cut", Duration::from_millis(10)).await);
        let mut before = Vec::new();
        for r in &readers {
            r.wait("cut", ids.len(), 30).await;
            before.push(r.cuts().await);
        }
        p.cut.send(()).expect("proxy");
        ids.extend(publish_tagged(&s.url, 30, "cut", Duration::from_millis(10)).await);
        for (r, b) in readers.iter().zip(before) {
            until(&format!("a reader to notice cut {round}"), 20, || async {
                (r.cuts().await > b).then_some(())
            })
            .await;
            r.wait("cut", ids.len(), 30).await;
        }
    }
    for r in &readers {
        assert_eq!(r.wait("cut", ids.len(), 30).await, ids);
        r.assert_in_order().await;
        assert!(r.cuts().await >= ROUNDS, "was cut and came back each round");
    }
}

#[tokio::test]
async fn moves_back_up_to_websocket_when_the_proxy_stops_blocking() {
    let s = TestServer::start(&[]);
    let p = proxy(s.addr.clone()).await;
    p.block_socketio.store(true, Ordering::SeqCst);
    let mut o = opts(&p.url, &Transport::ALL);
    o.probe_interval = Duration::from_millis(1000);
    let r = read(Client::connect(o).expect("client"));
    let via = until("connected", 20, || async { r.connected_via().await }).await;
    assert_eq!(via, Transport::Sse);
    let url = s.url.clone();
    let publishing =
        tokio::spawn(
            async move { publish_tagged(&url, 200, "up", Duration::from_millis(80)).await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.block_socketio.store(false, Ordering::SeqCst);
    // the probe runs every second: wait for the move rather than hoping the publisher is
    // still running when it comes
    until(
        "the client to move up from SSE to WebSocket",
        30,
        || async {
            r.states
                .lock()
                .await
                .iter()
                .any(|s| {
                    s.upgraded_from == Some(Transport::Sse) && s.transport == Transport::Websocket
                })
                .then_some(())
        },
    )
    .await;
    let ids = publishing.await.expect("publisher");
    assert_eq!(r.wait("up", 200, 30).await, ids);
    r.assert_in_order().await;
}

#[tokio::test]
async fn survives_a_killed_server_with_a_jittered_capped_schedule() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut s = TestServer::start_in(data.path(), &[], &[]);
    let addr = s.addr.clone();
    let mut o = opts(&s.url, &[Transport::Websocket, Transport::Sse]);
    o.backoff = Backoff {
        initial: Duration::from_millis(100),
        factor: 2,
        max: Duration::from_millis(800),
    };
    let r = read(Client::connect(o.clone()).expect("client"));
    until("connected", 10, || async { r.connected_via().await }).await;
    let before = publish_tagged(&s.url, 20, "kill", Duration::ZERO).await;
    r.wait("kill", 20, 10).await;
    let _ = s.child.kill();
    let _ = s.child.wait();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let s2 = TestServer::start_in(data.path(), &["--bind", &addr], &[]);
    let during = publish_tagged(&s2.url, 20, "kill", Duration::ZERO).await;
    let got = r.wait("kill", 40, 20).await;
    assert_eq!(got, [before, during].concat());
    r.assert_in_order().await;
    let states = r.states.lock().await;
    let attempts: Vec<_> = states
        .iter()
        .filter(|s| s.state == Phase::Reconnecting && s.error.is_some())
        .collect();
    assert!(attempts.len() >= 5, "{} attempts in 5 s", attempts.len());
    for a in &attempts {
        let bound = o.backoff.bound(a.attempt.saturating_sub(1));
        assert!(
            a.delay < bound,
            "attempt {}: {:?} not below {:?}",
            a.attempt,
            a.delay,
            bound
        );
    }
    assert!(
        attempts
            .iter()
            .any(|a| o.backoff.bound(a.attempt - 1) == o.backoff.max),
        "reached the cap"
    );
}

#[tokio::test]
async fn cmem_tail_prints_resumes_across_a_restart_and_exits_0_on_ctrl_c() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut s = TestServer::start_in(data.path(), &[], &[]);
    let addr = s.addr.clone();
    let mut tail = Command::new(env!("CARGO_BIN_EXE_cmem"))
        .args(["tail", "--url", &s.url, "--json", "--types", "test_event"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tail");
    let (line_tx, mut lines) = mpsc::unbounded_channel::<String>();
    let stdout = tail.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = line_tx.send(l);
        }
    });
    let stderr = tail.stderr.take().expect("stderr");
    let (err_tx, mut errs) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send(l);
        }
    });
    let mut err_text = String::new();
    until("tail connected", 10, || {
        while let Ok(l) = errs.try_recv() {
            err_text.push_str(&l);
            err_text.push('\n');
        }
        let ok = err_text.contains("connected via websocket");
        async move { ok.then_some(()) }
    })
    .await;
    let mut want = publish_tagged(&s.url, 10, "tail", Duration::ZERO).await;
    // `cmem publish` too, for a script's view
    let out = Command::new(env!("CARGO_BIN_EXE_cmem"))
        .args([
            "publish",
            "test_event",
            "--payload",
            r#"{"tag":"tail"}"#,
            "--url",
            &s.url,
        ])
        .output()
        .expect("publish");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let id: u64 = printed
        .rsplit(':')
        .next()
        .and_then(|x| x.parse().ok())
        .expect("epoch:id printed");
    want.push(id);

    let _ = s.child.kill();
    let _ = s.child.wait();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s2 = TestServer::start_in(data.path(), &["--bind", &addr], &[]);
    want.extend(publish_tagged(&s2.url, 10, "tail", Duration::ZERO).await);

    // the server was down a few seconds (longer under Wine): tail's backoff may be waiting
    // up to its 30 s bound before it tries again
    let mut got = Vec::new();
    while got.len() < want.len() {
        let l = tokio::time::timeout(Duration::from_secs(45), lines.recv())
            .await
            .expect("a line in time")
            .expect("tail still running");
        let env: serde_json::Value = serde_json::from_str(&l).expect("one JSON envelope per line");
        assert_eq!(env["type"], "test_event");
        got.push(env["id"].as_u64().expect("id"));
    }
    assert_eq!(got, want);
    #[cfg(unix)]
    {
        let _ = Command::new("kill")
            .args(["-INT", &tail.id().to_string()])
            .status();
        let status = tail.wait().expect("wait tail");
        assert_eq!(status.code(), Some(0));
        while let Some(l) = errs.recv().await {
            err_text.push_str(&l);
            err_text.push('\n');
        }
        assert!(err_text.contains("reconnecting via"), "{err_text}");
        assert!(err_text.contains("resume with --from"), "{err_text}");
    }
    #[cfg(not(unix))]
    {
        let _ = tail.kill();
        let _ = tail.wait();
    }
}

#[test]
fn cmem_publish_says_what_is_wrong() {
    let s = TestServer::start(&[]);
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_cmem"))
            .args(args)
            .args(["--url", &s.url])
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["publish", "note", "--payload", "{oops"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--payload is not JSON"), "{err}");
    // the old flag still works, with a warning that says what it became
    let (code, err) = run(&["publish", "note", "--data", "{\"ok\":1}"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("now --payload"), "{err}");
    // nothing listens there: the error says what to check
    let out = Command::new(env!("CARGO_BIN_EXE_cmem"))
        .args(["publish", "note", "--url", "http://127.0.0.1:9"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is it running? pass --url"), "{err}");
    let (code, err) = run(&["publish", "resync"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("emitted by the server only"), "{err}");
    let (code, err) = run(&["tail", "--transports", "carrier-pigeon"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown transport"), "{err}");
}

#[tokio::test]
async fn a_connection_gone_silent_is_presumed_dead_and_replaced() {
    let s = TestServer::start(&[
        "--ping-interval-ms",
        "1000",
        "--ping-timeout-ms",
        "1000",
        "--sse-heartbeat-s",
        "1",
    ]);
    let p = proxy(s.addr.clone()).await;
    let mut readers = Vec::new();
    for t in Transport::ALL {
        let mut o = opts(&p.url, &[t]);
        o.poll_wait = Duration::from_secs(1);
        readers.push((t, read(Client::connect(o).expect("client"))));
    }
    for (_, r) in &readers {
        until("connected", 10, || async { r.connected_via().await }).await;
    }
    let before = publish_tagged(&s.url, 10, "silent", Duration::ZERO).await;
    for (_, r) in &readers {
        r.wait("silent", 10, 10).await;
    }
    p.freeze.send_modify(|n| *n += 1);
    let during = publish_tagged(&s.url, 10, "silent", Duration::ZERO).await;
    for (t, r) in &readers {
        assert_eq!(
            r.wait("silent", 20, 40).await,
            [before.clone(), during.clone()].concat(),
            "{t}"
        );
        let states = r.states.lock().await;
        assert!(
            states.iter().any(|s| s
                .error
                .as_ref()
                .is_some_and(|(_, e)| e.code == cmem_client::ErrorCode::Stalled)),
            "{t}: the silence was noticed: {states:?}"
        );
    }
}

/// A new token for `user` of `data`, and its id (for revoking it).
fn token_and_id(data: &std::path::Path, user: &str) -> (String, String) {
    let (code, out, err) = common::cmem_in(data, &["token", "create", user, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("token JSON");
    (
        v["token"].as_str().expect("token").to_string(),
        v["id"].as_str().expect("token id").to_string(),
    )
}

/// Reads a client until its updates end (or `secs` pass), returning every state.
async fn states_until_end(mut c: Client, secs: u64) -> Vec<State> {
    let mut states = Vec::new();
    let read = async {
        while let Some(u) = c.next().await {
            if let Update::State(s) = u {
                states.push(s);
            }
        }
    };
    let ended = tokio::time::timeout(Duration::from_secs(secs), read).await;
    assert!(ended.is_ok(), "the client did not stop: {states:?}");
    states
}

/// Refusals and closes reach the client as the server's codes, and it acts on the code, never
/// on the message: a bad token and a revoked one ask for a new token (class `Unauthorized` on
/// every transport), shutdown is a close to retry, a workspace the user was removed from is
/// refused by every transport and the client stops (`Failed`, the last update), and a cursor
/// from another journal yields a `resync` whose reason is a code that asks for one.
#[tokio::test]
async fn the_client_acts_on_the_server_s_codes() {
    use cmem_client::{Action, Code, ErrorCode};
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    for args in [
        &["user", "add", "alice", "--admin"][..],
        &["user", "add", "bob"],
        &["workspace", "create", "ops"],
        &["workspace", "add-member", "ops", "alice"],
        &["workspace", "add-member", "ops", "bob"],
    ] {
        let (code, _, err) = common::cmem_in(d, args);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    let (alice, _) = token_and_id(d, "alice");
    let (bob, _) = token_and_id(d, "bob");
    let (bob2, bob2_id) = token_and_id(d, "bob");
    let mut s = TestServer::start_authed(d, &[], &[], Some(&alice));
    let with = |token: &str, transports: &[Transport]| {
        let mut o = opts(&s.url, transports);
        o.token = Some(token.to_string());
        o
    };
    let failed_with = |states: &[State], reason: &str| -> std::collections::BTreeSet<String> {
        states
            .iter()
            .filter_map(|s| s.error.as_ref())
            .filter(|(_, e)| e.reason.as_deref() == Some(reason))
            .map(|(t, _)| t.to_string())
            .collect()
    };

    // a bad token: every transport says `token_invalid`, which asks for a new token
    let bad = read(Client::connect(with("cm_nope_nope", &Transport::ALL)).expect("client"));
    until("every transport refused the bad token", 30, || async {
        let st = bad.states.lock().await;
        (failed_with(&st, "token_invalid").len() == 4).then_some(())
    })
    .await;
    for st in bad.states.lock().await.iter() {
        if let Some((t, e)) = &st.error {
            assert_eq!(e.code, ErrorCode::Unauthorized, "{t}: {e:?}");
            assert_eq!(e.action, Some(Action::Reauthenticate), "{t}: {e:?}");
        }
        assert_ne!(
            st.state,
            Phase::Failed,
            "a token problem is not given up on"
        );
    }

    // a revoked token: the connection (long-polling, here) is closed with `token_revoked`
    let revoked = read(Client::connect(with(&bob2, &[Transport::Polling])).expect("client"));
    until("bob's second client connected", 15, || async {
        revoked.connected_via().await
    })
    .await;
    let (code, _, err) = common::cmem_in(d, &["token", "revoke", &bob2_id]);
    assert_eq!(code, 0, "{err}");
    let (_, e) = until("the revoked connection closed", 15, || async {
        let st = revoked.states.lock().await;
        st.iter().find_map(|s| s.error.clone())
    })
    .await;
    assert_eq!(e.reason.as_deref(), Some("token_revoked"), "{e:?}");
    assert_eq!(
        (e.code, e.action),
        (ErrorCode::Unauthorized, Some(Action::Reauthenticate))
    );

    // bob reads `ops`; the server shuts down: a close to retry
    let mut o = with(&bob, &Transport::ALL);
    o.workspaces = vec!["ops".into()];
    let mut member = Client::connect(o).expect("client");
    let connected = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(u) = member.next().await {
            if let Update::State(st) = u
                && st.state == Phase::Connected
            {
                return st.transport;
            }
        }
        panic!("the updates ended");
    })
    .await
    .expect("bob connected");
    assert_eq!(connected, Transport::Websocket);
    let (code, _, err) = common::cmem_in(d, &["workspace", "remove-member", "ops", "bob"]);
    assert_eq!(code, 0, "{err}");
    let addr = s.addr.clone();
    s.terminate();
    // the server comes back on the same address, without bob in `ops`
    let _s = TestServer::start_authed(d, &["--bind", &addr], &[], Some(&alice));
    let states = states_until_end(member, 60).await;
    // a graceful stop says why (Windows has no signal to ask another console process for one:
    // the test server is killed there, and the client sees its connection cut)
    #[cfg(unix)]
    {
        let (_, shutdown) = states
            .iter()
            .find_map(|s| s.error.clone())
            .expect("an error after the shutdown");
        assert_eq!(
            shutdown.reason.as_deref(),
            Some("server_shutdown"),
            "{shutdown:?}"
        );
        assert_eq!(shutdown.action, Some(Action::Retry));
    }
    // every transport refused `ops` with `forbidden`, and then the client stopped
    assert_eq!(failed_with(&states, "forbidden").len(), 4, "{states:?}");
    let last = states.last().expect("a last state");
    assert_eq!(last.state, Phase::Failed, "{states:?}");
    let (_, why) = last.error.clone().expect("why it stopped");
    assert_eq!(
        (why.code, why.reason.as_deref()),
        (ErrorCode::Forbidden, Some("forbidden"))
    );

    // a cursor of another journal: a `resync` whose reason is a code that asks for one
    let mut o = opts(&format!("http://{addr}"), &[Transport::Sse]);
    o.token = Some(alice.clone());
    o.from = Some(cmem_client::Cursor {
        epoch: Some("not-this-journal".into()),
        id: 5,
    });
    let r = read(Client::connect(o).expect("client"));
    let reason = until("a resync", 15, || async {
        let ev = r.events.lock().await;
        ev.iter()
            .find(|e| e.kind == "resync")
            .map(|e| e.data["reason"].as_str().unwrap_or("").to_string())
    })
    .await;
    assert_eq!(reason, "epoch_mismatch");
    assert_eq!(Code::parse(&reason).map(Code::action), Some(Action::Resync));
}

/// A client whose network stops carrying anything (a frozen proxy) is cut by the server as a
/// slow consumer once its writes stall — a close with no last words, since nothing more can
/// be written to it. The class's action is to retry: the client notices the silence,
/// reconnects from its cursor and delivers every event once, in order.
#[tokio::test]
async fn a_slow_consumer_is_cut_and_resumes_with_nothing_lost() {
    let data = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start_in(
        data.path(),
        &[
            "--max-payload-bytes",
            "2000000",
            "--ping-interval-ms",
            "1000",
            "--ping-timeout-ms",
            "1000",
        ],
        &[("CM_SLOW_CONSUMER_TIMEOUT_MS", "300")],
    );
    let p = proxy(s.addr.clone()).await;
    let r = read(Client::connect(opts(&p.url, &[Transport::Websocket])).expect("client"));
    until("connected", 10, || async { r.connected_via().await }).await;
    p.freeze.send_modify(|n| *n += 1);
    // some 8 MB while nothing moves: the server's writes stall
    let pad = "p".repeat(16_000);
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for batch in 0..10 {
        let events: Vec<_> = (0..50)
            .map(|i| json!({"type": "test_event", "data": {"tag": "slow", "seq": batch * 50 + i, "pad": pad}}))
            .collect();
        ids.extend(publish_batch(&http, &s.url, events).await);
    }
    until(
        "the server cut the client as a slow consumer",
        30,
        || async {
            let st = s.status().await;
            (st["closes_by_reason"]["slow_consumer"]
                .as_u64()
                .unwrap_or(0)
                >= 1)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        r.wait("slow", ids.len(), 60).await,
        ids,
        "once each, in order"
    );
    r.assert_in_order().await;
    assert!(
        r.cuts().await >= 1,
        "the client saw its connection end and reconnected"
    );
}
