//! Cluster mode: cmem nodes that share one journal on NATS JetStream (`cluster_nats_url`).
//! Two nodes on one `nats-server -js` (Debian's; CI installs it): an event published on either
//! reaches clients of both, once, in one id order; a cursor handed out by one node resumes on
//! the other. Unix only: under Wine the Windows build cannot start the Linux `nats-server`.
#![cfg(unix)]

mod common;

use std::time::Duration;

use common::TestServer;
use common::shared::{Nats, nats};
use serde_json::{Value, json};

fn node(nats: &Nats, data: &std::path::Path, name: &str) -> TestServer {
    TestServer::start_in(
        data,
        &["--cluster-nats-url", &nats.url, "--node-name", name],
        &[],
    )
}

/// One poll page after `after` (`None`: a new client, from now).
async fn poll(s: &TestServer, client: &str, after: Option<&str>) -> Value {
    let mut url = format!("{}/api/events/poll?client_id={client}&limit=1000", s.url);
    if let Some(a) = after {
        url.push_str(&format!("&after={a}"));
    }
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// The `test_event` tags a poller sees, following pages from `after` until `n` have come.
async fn tags(s: &TestServer, client: &str, after: &str, n: usize) -> Vec<(u64, String)> {
    let mut cursor = after.to_string();
    let mut out = Vec::new();
    for _ in 0..100 {
        let page = poll(s, client, Some(&cursor)).await;
        for e in page["events"].as_array().unwrap() {
            if e["type"] == "test_event" {
                out.push((
                    e["id"].as_u64().unwrap(),
                    e["data"]["tag"].as_str().unwrap().to_string(),
                ));
            }
        }
        cursor = page["next_cursor"].as_str().unwrap().to_string();
        if out.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out
}

#[tokio::test]
async fn two_nodes_share_one_journal_and_cursors_move_between_them() {
    let n = nats();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(&n, da.path(), "node-a");
    let b = node(&n, db.path(), "node-b");
    let (_, ha) = common::get(format!("{}/health", a.url)).await;
    let (_, hb) = common::get(format!("{}/health", b.url)).await;
    assert_eq!(
        ha["data"]["journal"]["epoch"], hb["data"]["journal"]["epoch"],
        "one stream, one epoch"
    );
    let start = poll(&a, "pa", None).await["next_cursor"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..5 {
        let (s, tag) = if i % 2 == 0 { (&a, "a") } else { (&b, "b") };
        let r = s
            .publish(json!({"type": "test_event", "data": {"tag": format!("{tag}{i}")}}))
            .await;
        assert!(r.status().is_success());
    }
    let on_a = tags(&a, "pa", &start, 5).await;
    let on_b = tags(&b, "pb", &start, 5).await;
    assert_eq!(
        on_a, on_b,
        "the same events, once, in the same order on both nodes"
    );
    let names: Vec<&str> = on_a.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(names, ["a0", "b1", "a2", "b3", "a4"]);
    assert!(on_a.windows(2).all(|w| w[0].0 < w[1].0), "ids increase");
    // a cursor from node A, taken after the third event, resumes on node B after it
    let (third, _) = &on_a[2];
    let epoch = ha["data"]["journal"]["epoch"].as_str().unwrap();
    let rest = tags(&b, "pb2", &format!("{epoch}:{third}"), 2).await;
    assert_eq!(
        rest.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(),
        ["b3", "a4"]
    );

    // diagnostics name the node and show the stream; `cmem doctor` prints them
    let (_, st) = common::get(format!("{}/api/websocket/status", b.url)).await;
    assert_eq!(st["data"]["node"], "node-b");
    let engine = &st["data"]["journal"]["engine"];
    assert_eq!(engine["engine"], "jetstream", "{engine}");
    assert_eq!(engine["stream"], "CMEM");
    assert_eq!(engine["replicas"], 1);
    assert!(engine["node_lag"].as_u64().is_some(), "{engine}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cmem"))
        .args(["doctor", "--url", &a.url, "--bind", "127.0.0.1:0", "--data"])
        .arg(da.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("node node-a; journal: JetStream stream CMEM on nats://"),
        "{text}"
    );
}

/// The Rust client given both nodes: its node is SIGKILLed mid-stream and it resumes on the
/// other, every event once, in order.
#[tokio::test]
async fn the_rust_client_moves_to_another_node_when_its_node_dies() {
    use cmem_client::{Backoff, Client, Options, Phase, Update};
    let n = nats();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = node(&n, da.path(), "rust-a");
    let b = node(&n, db.path(), "rust-b");
    let mut o = Options::new(format!("{},{}", a.url, b.url));
    o.connect_timeout = Duration::from_secs(3);
    o.backoff = Backoff {
        initial: Duration::from_millis(100),
        factor: 2,
        max: Duration::from_secs(1),
    };
    let mut c = Client::connect(o).unwrap();
    // connected to the first node
    loop {
        match tokio::time::timeout(Duration::from_secs(10), c.next())
            .await
            .unwrap()
        {
            Some(Update::State(s)) if s.state == Phase::Connected => {
                assert_eq!(s.node, a.url);
                break;
            }
            Some(_) => {}
            None => panic!("the client ended"),
        }
    }
    let mut ids = Vec::new();
    let publish = async |tag: &str| {
        let (st, v) = common::post_as(
            &format!("{}/api/events", b.url),
            None,
            json!({"type": "test_event", "data": {"tag": tag}}),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        v["data"]["ids"][0].as_u64().unwrap()
    };
    for i in 0..5 {
        ids.push(publish(&format!("r{i}")).await);
    }
    let mut got = Vec::new();
    let mut moved_to = None;
    let mut killed = false;
    while got.len() < 10 {
        match tokio::time::timeout(Duration::from_secs(20), c.next())
            .await
            .unwrap()
        {
            Some(Update::Event(e)) if e.kind == "test_event" => got.push(e.id),
            Some(Update::State(s)) if s.state == Phase::Connected && killed => {
                moved_to = Some(s.node.clone())
            }
            Some(_) => {}
            None => panic!("the client ended"),
        }
        if got.len() == 5 && !killed {
            a.child.kill().unwrap();
            a.child.wait().unwrap();
            killed = true;
            for i in 5..10 {
                ids.push(publish(&format!("r{i}")).await);
            }
        }
    }
    assert_eq!(got, ids, "every event once, in order");
    assert_eq!(moved_to.as_deref(), Some(b.url.as_str()));
}
