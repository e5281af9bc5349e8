//! Clients that misbehave: raw WebSockets sending garbage, and a reader too slow to keep up.
//! Each must be dealt with (closed, with a reason where the protocol allows one) while other
//! clients keep receiving.

mod common;

use std::time::Duration;

use common::{TestServer, until};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// A poll client used as the bystander that must keep receiving.
async fn poll_types(s: &TestServer, client: &str, after: u64) -> (Vec<String>, u64) {
    let v: Value = reqwest::get(format!(
        "{}/api/events/poll?client_id={client}&after={after}&wait=5",
        s.url
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let types = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    (types, v["next_cursor"].as_u64().unwrap())
}

#[tokio::test]
async fn garbage_websocket_frames_close_that_socket_only() {
    let s = TestServer::start(&[]);
    let (_, mut cursor) = poll_types(&s, "bystander", 0).await;

    let ws_url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", s.addr);
    // 1. garbage before any handshake
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let open = ws.next().await.unwrap().unwrap();
    assert!(
        open.to_text().unwrap().starts_with('0'),
        "engine.io open packet"
    );
    ws.send(Message::text("this is not engine.io"))
        .await
        .unwrap();
    ws.send(Message::binary(vec![0xff, 0x00, 0x13]))
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(_)) | Err(_) => return true,
                _ => {}
            }
        }
        true
    })
    .await
    .unwrap_or(false);
    assert!(closed, "the server closes a socket that sends garbage");

    // 2. a connected Socket.IO session that then sends a malformed packet
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let _open = ws.next().await.unwrap().unwrap();
    ws.send(Message::text("40")).await.unwrap();
    let mut connected = false;
    while let Some(Ok(m)) = ws.next().await {
        if m.to_text().unwrap_or("").starts_with("40") {
            connected = true;
            break;
        }
    }
    assert!(connected, "namespace connect acknowledged");
    until("socket registered", 10, || async {
        let st = s.status().await;
        (st["connections"]["by_transport"]["websocket"] == 1).then_some(())
    })
    .await;
    ws.send(Message::text("42[unclosed")).await.unwrap();
    until("the bad socket is closed and counted", 10, || async {
        let st = s.status().await;
        let gone = st["connections"]["by_transport"]["websocket"] == 0;
        let counted = st["closes_by_reason"]["bad_packet"].as_u64().unwrap_or(0) >= 1;
        (gone && counted).then_some(())
    })
    .await;
    let errors: Value = s.errors().await;
    let errs = errors["data"]["errors"].as_array().unwrap();
    assert!(
        errs.iter()
            .any(|e| e["kind"] == "bad_packet" && e["transport"] == "websocket"),
        "{errors}"
    );

    // The bystander never noticed.
    s.publish(json!({"type": "still_here"})).await;
    let mut seen = Vec::new();
    while !seen.iter().any(|t| t == "still_here") {
        let (types, next) = poll_types(&s, "bystander", cursor).await;
        seen.extend(types);
        cursor = next;
    }
    let health = reqwest::get(format!("{}/health", s.url)).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn a_reader_that_falls_behind_is_closed_as_slow_consumer_and_can_resume() {
    let s = TestServer::start(&["--queue-bound", "16", "--max-payload-bytes", "2000000"]);

    // An SSE client with a tiny receive buffer that stops reading after the headers.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stream = sock.connect(s.addr.parse().unwrap()).await.unwrap();
    stream
        .write_all(
            b"GET /api/events/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = vec![0u8; 512];
    let n = stream.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    until("sse registered", 10, || async {
        (s.status().await["connections"]["by_transport"]["sse"] == 1).then_some(())
    })
    .await;

    // ~12 MB of events while it is not reading: far more than socket buffers hold.
    let payload = "x".repeat(2000);
    for _ in 0..60 {
        let events: Vec<Value> = (0..100)
            .map(|_| json!({"type": "bulk", "data": payload}))
            .collect();
        let r = s.publish(json!({ "events": events })).await;
        assert_eq!(r.status(), 200);
    }

    // Now it reads everything; the stream must end with a close event naming the reason.
    let mut all = Vec::new();
    let read_all = tokio::time::timeout(Duration::from_secs(60), async {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    all.extend_from_slice(&buf[..n]);
                    if all.windows(13).any(|w| w == b"slow_consumer") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read_all.is_ok(), "stream ended");
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("event: close"), "a close event is sent");
    assert!(text.contains("\"reason\":\"slow_consumer\""));
    // The close event carries the cursor to resume from; resuming gets the very next event.
    let close_line = text
        .lines()
        .skip_while(|l| *l != "event: close")
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let close: Value = serde_json::from_str(close_line).unwrap();
    let last = close["last_event_id"].as_u64().unwrap();
    assert!(last > 0);
    let resp = reqwest::Client::new()
        .get(format!("{}/api/events/stream", s.url))
        .header("Last-Event-ID", last.to_string())
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("\n\ndata: ") && !seen.contains("data: ") {
        let chunk = body.next().await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        seen.contains(&format!("id: {}\nevent: bulk", last + 1)),
        "resume starts right after the cursor: {}",
        &seen[..seen.len().min(300)]
    );
    drop(body);

    until("close counted", 10, || async {
        let st = s.status().await;
        (st["closes_by_reason"]["slow_consumer"]
            .as_u64()
            .unwrap_or(0)
            >= 1
            && st["connections"]["by_transport"]["sse"] == 0)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_socketio_client_that_stops_reading_is_closed_as_slow_consumer() {
    let s = TestServer::start(&[
        "--queue-bound",
        "16",
        "--ping-interval-ms",
        "300",
        "--ping-timeout-ms",
        "300",
        "--max-payload-bytes",
        "2000000",
    ]);
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(s.addr.parse().unwrap()).await.unwrap();
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", s.addr);
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let _open = ws.next().await.unwrap().unwrap();
    ws.send(Message::text("40")).await.unwrap();
    loop {
        let m = ws.next().await.unwrap().unwrap();
        if m.to_text().unwrap_or("").starts_with("40") {
            break;
        }
    }
    until("socket registered", 10, || async {
        (s.status().await["connections"]["by_transport"]["websocket"] == 1).then_some(())
    })
    .await;
    // From here on the client reads nothing (no pongs either).
    let payload = "y".repeat(2000);
    for _ in 0..60 {
        let events: Vec<Value> = (0..100)
            .map(|_| json!({"type": "bulk", "data": payload}))
            .collect();
        assert_eq!(s.publish(json!({ "events": events })).await.status(), 200);
    }
    until("slow consumer closed and counted", 30, || async {
        let st = s.status().await;
        (st["closes_by_reason"]["slow_consumer"]
            .as_u64()
            .unwrap_or(0)
            >= 1
            && st["connections"]["by_transport"]["websocket"] == 0)
            .then_some(())
    })
    .await;
    // the server is fine
    assert_eq!(s.publish(json!({"type": "after"})).await.status(), 200);
    drop(ws);
}

#[tokio::test]
async fn a_connection_reset_is_recorded_with_its_os_error_code() {
    let s = TestServer::start(&["--max-payload-bytes", "2000000"]);
    let stream = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    let mut stream = stream;
    stream
        .write_all(b"GET /api/events/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 256];
    let _ = stream.read(&mut head).await.unwrap();
    until("sse registered", 10, || async {
        (s.status().await["connections"]["by_transport"]["sse"] == 1).then_some(())
    })
    .await;
    // Abort: SO_LINGER 0 makes close() send RST instead of FIN.
    stream.set_zero_linger().unwrap();
    drop(stream);
    let payload = "z".repeat(1000);
    let errors = until("reset recorded", 20, || async {
        let events: Vec<Value> = (0..50)
            .map(|_| json!({"type": "fill", "data": payload}))
            .collect();
        s.publish(json!({ "events": events })).await;
        let v: Value = s.errors().await;
        let errs = v["data"]["errors"].as_array().cloned().unwrap_or_default();
        (!errs.is_empty()).then_some(errs)
    })
    .await;
    let e = &errors[0];
    let code = e["os_code"].as_i64().expect("an OS error code");
    // ECONNRESET or EPIPE on Linux; WSAECONNRESET / WSAECONNABORTED on Windows
    assert!([104, 32, 10054, 10053].contains(&code), "{e}");
    assert_eq!(e["transport"], "http");
    assert!(e["platform"].as_str().is_some());
    until("sse gone", 10, || async {
        (s.status().await["connections"]["by_transport"]["sse"] == 0).then_some(())
    })
    .await;
}
