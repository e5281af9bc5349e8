//! Regression tests for the third round of attacks on the real binary (issue 24): idle sockets
//! held for ever and connections without a per-address bound, search text readable by every
//! member, a reused user name inheriting search history, members flooding the journal,
//! poll client ids taken over, and the smaller findings. Each test names its finding. (The
//! first finding, an exposed server opening when its last user goes, is in `teams.rs`.)

mod common;

use std::time::Duration;

use common::{TestServer, until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
