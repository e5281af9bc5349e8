//! Bench clients: Socket.IO over WebSocket (Engine.IO 4 / Socket.IO 5, spoken directly so any
//! Socket.IO server can be driven), and cmem's SSE and poll transports.
//!
//! Clients never parse whole messages: a delivery is found by scanning for the fields the bench
//! puts in every payload (`"bseq":`, `"bsent_us":`) and, for cmem, the envelope `"id":`. That
//! keeps the generator far cheaper per message than the servers it measures.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use cmem_wire::sse::{SseItem, SseParser};
use cmem_wire::{eio, sio};
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::stats::Stats;

/// cmem sends clients no binary attachments.
const NO_ATTACHMENTS: sio::Limits = sio::Limits {
    max_attachments: 0,
    max_attachment_bytes: 0,
};

/// Microseconds since the Unix epoch; the sender stamps this into each payload.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The integer after `key` (e.g. `"bseq":`) in `text`, if any.
pub fn scan_u64(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(text, key)? + key.len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut v: u64 = 0;
    let mut any = false;
    for d in digits {
        v = v.checked_mul(10)?.checked_add((d - b'0') as u64)?;
        any = true;
    }
    any.then_some(v)
}

/// What one client has seen; the scenario aggregates these.
///
/// Duplicates are found with a bitmap of `bseq` values, not by order: concurrent publishers may
/// commit batches in any order. Order is checked on cmem's envelope ids, which must increase.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Bench events received (duplicates included).
    pub events: u64,
    pub duplicates: u64,
    /// cmem envelope ids that did not increase.
    pub out_of_order: u64,
    /// Last cmem envelope id seen (resume cursor).
    pub last_id: Option<u64>,
    bits: Vec<u64>,
}

impl Seen {
    /// Records one message; returns true if it was a bench event.
    pub fn record(&mut self, msg: &[u8], stats: &Stats, idx: usize) -> bool {
        if let Some(id) = scan_u64(msg, b"{\"id\":") {
            if self.last_id.is_some_and(|last| id <= last) {
                self.out_of_order += 1;
            }
            self.last_id = Some(id);
        }
        let Some(seq) = scan_u64(msg, b"\"bseq\":") else {
            return false;
        };
        self.events += 1;
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & (1 << bit) != 0 {
            self.duplicates += 1;
        } else {
            self.bits[word] |= 1 << bit;
        }
        if let Some(sent) = scan_u64(msg, b"\"bsent_us\":") {
            stats.record_latency(idx, now_us().saturating_sub(sent));
        }
        stats.delivered(1);
        true
    }
}

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Socket.IO path, e.g. `/socket.io/`.
    pub sio_path: String,
}

fn ws_config() -> WebSocketConfig {
    // Small buffers: the generator holds tens of thousands of sockets.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

async fn tcp_connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> anyhow::Result<tokio::net::TcpStream> {
    let sock = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = source {
        defer_port_choice(&sock);
        sock.bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("bind source address {ip}"))?;
    }
    let stream = sock
        .connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Lets `connect` choose the source port rather than `bind`.
///
/// `bind(ip, 0)` searches the address's ports for one no socket holds, and that search grows
/// with the ports in use: 19,000 connections from one address took 10-20 s, 90 % of both
/// cores in the kernel's `inet_csk_get_port` (in this generator, not the server). `connect`
/// chooses a port by the whole address pair, in a few probes. Linux only; elsewhere `bind`
/// chooses.
#[cfg(target_os = "linux")]
fn defer_port_choice(sock: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, and an option value of the size given
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        eprintln!(
            "IP_BIND_ADDRESS_NO_PORT not set: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn defer_port_choice(_sock: &TcpSocket) {}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens a Socket.IO session over WebSocket and joins the main namespace with `auth`.
pub async fn sio_connect(
    ep: &Endpoint,
    auth: Option<&str>,
    source: Option<IpAddr>,
) -> anyhow::Result<Ws> {
    let stream = tcp_connect(ep.addr, source).await?;
    let url = format!("ws://{}{}?EIO=4&transport=websocket", ep.addr, ep.sio_path);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
        .await
        .context("websocket handshake")?;
    // the same handshake as cmem's own client library
    cmem_client::eio::handshake(&mut ws, auth.unwrap_or(""))
        .await
        .map_err(|e| anyhow!("{e}"))?;
    Ok(ws)
}

/// Reads a Socket.IO session until `stop`, answering pings and recording deliveries.
pub async fn sio_read(mut ws: Ws, stats: Arc<Stats>, idx: usize, stop: CancellationToken) -> Seen {
    let mut seen = Seen::default();
    // one waiter for the whole read: a `cancelled()` made per message locks the token's
    // mutex twice per delivery, shared by every client of the run
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let msg = tokio::select! {
            biased;
            m = ws.next() => m,
            _ = &mut stopped => break,
        };
        match msg {
            Some(Ok(Message::Text(t))) => match eio::peek(&t) {
                Ok((eio::Type::Ping, _)) => {
                    let pong = ws.send(Message::text("3")).await;
                    if pong.is_err() {
                        break;
                    }
                }
                Ok((eio::Type::Message, m)) => {
                    // the header only: the envelope is scanned, not parsed
                    if let Ok(h) = sio::Header::read(m, &NO_ATTACHMENTS)
                        && h.kind == sio::Kind::Event
                    {
                        seen.record(h.data.as_bytes(), &stats, idx);
                    }
                }
                _ => {}
            },
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                stats.dropped(1);
                break;
            }
            Some(Ok(_)) => {}
        }
    }
    let _ = ws.close(None).await;
    seen
}

/// A client of cmem's HTTP transports (SSE or poll): where to read, from which cursor, and
/// where to report.
pub struct HttpReader {
    pub http: reqwest::Client,
    pub base: String,
    pub cursor: Option<u64>,
    pub stats: Arc<Stats>,
    pub idx: usize,
    /// Signalled once the stream is open (SSE) or the first answer came (poll).
    pub ready: tokio::sync::mpsc::Sender<()>,
    pub stop: CancellationToken,
}

impl HttpReader {
    /// Reads cmem's SSE stream until `stop`.
    pub async fn sse(self) -> anyhow::Result<Seen> {
        let HttpReader {
            http,
            base,
            cursor,
            stats,
            idx,
            ready,
            stop,
        } = self;
        let mut req = http.get(format!("{base}/api/events/stream"));
        if let Some(c) = cursor {
            req = req.header("Last-Event-ID", c.to_string());
        }
        let resp = req.send().await?.error_for_status()?;
        let _ = ready.send(()).await;
        let mut body = resp.bytes_stream();
        let mut seen = Seen::default();
        let mut parser = SseParser::default();
        let mut items = Vec::new();
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        loop {
            let chunk = tokio::select! {
                biased;
                c = body.next() => c,
                _ = &mut stopped => break,
            };
            let Some(Ok(chunk)) = chunk else { break };
            parser.feed(&chunk, &mut items)?;
            for item in items.drain(..) {
                if let SseItem::Event { data, .. } = item {
                    seen.record(data.as_bytes(), &stats, idx);
                }
            }
        }
        Ok(seen)
    }

    /// Long-polls cmem's poll transport (as client `bench-<idx>`) until `stop`.
    pub async fn poll(self) -> anyhow::Result<Seen> {
        let HttpReader {
            http,
            base,
            cursor,
            stats,
            idx,
            ready,
            stop,
        } = self;
        let client_id = format!("bench-{idx}");
        let mut seen = Seen::default();
        let mut after = cursor;
        let mut first = true;
        while !stop.is_cancelled() {
            let mut url = format!("{base}/api/events/poll?client_id={client_id}&wait=1&limit=1000");
            if let Some(a) = after {
                url.push_str(&format!("&after={a}"));
            }
            let resp = tokio::select! {
                _ = stop.cancelled() => break,
                r = http.get(url).send() => r?,
            };
            let v: serde_json::Value = resp.error_for_status()?.json().await?;
            if first {
                first = false;
                let _ = ready.send(()).await;
            }
            for e in v["events"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                let text = e.to_string();
                seen.record(text.as_bytes(), &stats, idx);
            }
            // `next_cursor` is `<epoch>:<id>`; the bare id is `next_id`
            after = v["next_id"].as_u64().or(after);
        }
        seen.last_id = after.or(seen.last_id);
        Ok(seen)
    }
}

/// Sends events through cmem's `POST /api/events` or a peer's trigger URL, in batches.
#[derive(Clone)]
pub struct Publisher {
    /// cmem: `http://host:port/api/events`; a peer: its trigger URL.
    url: Arc<PublishUrl>,
    cmem: bool,
    pad: Arc<String>,
    /// Idle keep-alive connections, shared by every clone.
    idle: Arc<std::sync::Mutex<Vec<SendRequest<Full<Bytes>>>>>,
}

/// A publish URL split once into what each request needs.
struct PublishUrl {
    /// `host:port`, to connect to and for the `Host` header.
    authority: String,
    /// Path and query.
    target: String,
}

/// One event as the bench publishes it (serialized without building a `Value`).
#[derive(serde::Serialize)]
struct Payload<'a> {
    bseq: u64,
    bsent_us: u64,
    pad: &'a str,
}

#[derive(serde::Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    data: Payload<'a>,
}

#[derive(serde::Serialize)]
struct Body<T> {
    events: Vec<T>,
}

impl Publisher {
    /// A publisher for `url` (plain `http://` only); `pad` fills each payload.
    pub fn new(url: &str, cmem: bool, pad: String) -> anyhow::Result<Publisher> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("the publisher speaks plain http://, not {url}"))?;
        let (authority, target) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        Ok(Publisher {
            url: Arc::new(PublishUrl {
                authority: authority.to_string(),
                target: target.to_string(),
            }),
            cmem,
            pad: Arc::new(pad),
            idle: Arc::default(),
        })
    }

    /// Publishes events `seqs` (stamped with the current time); returns when acknowledged.
    ///
    /// Speaks HTTP/1.1 through hyper's connection API over keep-alive connections it pools
    /// itself: the generator shares the server's two cores, and reqwest's client spent about
    /// twice the CPU per request (its pool, URL and header handling).
    pub async fn send(&self, seqs: std::ops::Range<u64>) -> anyhow::Result<()> {
        let sent = now_us();
        let pad = self.pad.as_str();
        let payloads = seqs.map(|bseq| Payload {
            bseq,
            bsent_us: sent,
            pad,
        });
        let body = if self.cmem {
            serde_json::to_vec(&Body {
                events: payloads
                    .map(|data| Envelope {
                        kind: "bench",
                        data,
                    })
                    .collect(),
            })?
        } else {
            serde_json::to_vec(&Body {
                events: payloads.collect(),
            })?
        };
        let req = hyper::Request::post(self.url.target.as_str())
            .header(hyper::header::HOST, self.url.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let mut conn = self.connection().await?;
        let resp = conn.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(anyhow!(
                "publish answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        // a connection the server closed is dropped, not pooled
        if !conn.is_closed()
            && let Ok(mut idle) = self.idle.lock()
        {
            idle.push(conn);
        }
        Ok(())
    }

    /// An idle pooled connection that is ready, or a new one.
    async fn connection(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        loop {
            let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            let Some(mut conn) = pooled else { break };
            if conn.ready().await.is_ok() {
                return Ok(conn);
            }
        }
        let stream = tokio::net::TcpStream::connect(self.url.authority.as_str())
            .await
            .with_context(|| format!("connect to {}", self.url.authority))?;
        stream.set_nodelay(true)?;
        let (conn, driver) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = driver.await;
        });
        Ok(conn)
    }
}

/// Connections per source address when spreading: a fifth of the ephemeral port range.
///
/// `connect` looks for a port whose address pair is free from an offset it keeps per
/// destination, probing the ports in use one by one. With 20,000 connections from one address,
/// the last thousands spent most of both cores in the kernel's `__inet_check_established`
/// (the connect rate fell from 10,000/s to 2,000/s past 15,000); 5,000 per address keep the
/// probes few.
pub const PER_SOURCE: usize = 5_000;

/// Spreads connections over 127.0.<block>.x source addresses so that more than one ephemeral
/// port range is available (about 28k ports each). Generators running side by side take one
/// block each, so they never share a source address.
pub fn source_for(i: usize, per_source: usize, enabled: bool, block: u8) -> Option<IpAddr> {
    if !enabled {
        return None;
    }
    let n = (i / per_source.max(1)) as u8;
    Some(IpAddr::from([127, 0, block, 1u8.saturating_add(n)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanning() {
        let m = br#"42["bench",{"id":17,"epoch":"e","type":"bench","data":{"bseq":5,"bsent_us":123,"pad":""}}]"#;
        assert_eq!(scan_u64(m, b"{\"id\":"), Some(17));
        assert_eq!(scan_u64(m, b"\"bseq\":"), Some(5));
        assert_eq!(scan_u64(m, b"\"bsent_us\":"), Some(123));
        assert_eq!(scan_u64(m, b"\"nope\":"), None);
        let stats = Stats::new(1);
        let mut s = Seen::default();
        assert!(s.record(m, &stats, 0));
        assert!(s.record(m, &stats, 0));
        assert_eq!(
            (s.events, s.duplicates, s.out_of_order, s.last_id),
            (2, 1, 1, Some(17))
        );
    }
}
