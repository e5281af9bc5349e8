//! The scenarios: idle, broadcast, resume, journal. Each returns one serialisable result.
//! Every run is bounded in count and time; targets are loopback addresses only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::{self, Endpoint, Publisher, Seen};
use crate::stats::{Latency, Stats};

/// A server under test.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub base: String,
    pub addr: SocketAddr,
    /// `POST` here to publish: cmem's `/api/events`, or a peer's trigger URL.
    pub publish_url: String,
    pub cmem: bool,
    /// Server process, for memory readings.
    pub pid: Option<u32>,
    /// Source addresses 127.0.<block>.x when spreading (see `client::source_for`).
    pub source_block: u8,
}

impl Target {
    pub fn new(
        name: &str,
        base: &str,
        publish_url: Option<String>,
        cmem: bool,
        pid: Option<u32>,
    ) -> anyhow::Result<Target> {
        let url = reqwest::Url::parse(base).context("target url")?;
        let host = url.host_str().unwrap_or("127.0.0.1");
        let port = url.port_or_known_default().unwrap_or(80);
        let addr: SocketAddr = format!("{host}:{port}")
            .parse()
            .context("target must be an IP address and port")?;
        if !addr.ip().is_loopback() {
            bail!("only loopback targets are allowed, not {addr}");
        }
        let base = base.trim_end_matches('/').to_string();
        let publish_url = publish_url.unwrap_or_else(|| {
            if cmem {
                format!("{base}/api/events")
            } else {
                format!("{base}/trigger")
            }
        });
        Ok(Target {
            name: name.into(),
            base,
            addr,
            publish_url,
            cmem,
            pid,
            source_block: 0,
        })
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint {
            addr: self.addr,
            sio_path: "/socket.io/".into(),
        }
    }
}

/// Resident memory of a process in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time a process has used (user + system), in microseconds, from `/proc/<pid>/stat`
/// (clock-tick resolution, 10 ms on Linux: a paced run uses seconds).
pub fn cpu_us(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name may hold spaces: the fields are counted after its closing parenthesis
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    // fields 14 and 15 of the line are the 12th and 13th after the name
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime + stime) * 1_000_000 / clock_ticks_per_s()?)
}

#[cfg(unix)]
fn clock_ticks_per_s() -> Option<u64> {
    // SAFETY: sysconf reads a constant of the system
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0)
}

#[cfg(not(unix))]
fn clock_ticks_per_s() -> Option<u64> {
    None
}

/// CPU time this load generator has used (user + system, every thread), in microseconds.
#[cfg(unix)]
pub fn own_cpu_us() -> Option<u64> {
    // SAFETY: getrusage fills the struct it is given
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return None;
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Some(us(u.ru_utime) + us(u.ru_stime))
}

#[cfg(not(unix))]
pub fn own_cpu_us() -> Option<u64> {
    None
}

/// The resident size once it has stopped growing (the same reading 300 ms apart, or after
/// 3 s): a server just started still allocates for a moment after it listens (cmem: about
/// 3.5 MiB in its first 100 ms), which a baseline taken at once charges to the connections
/// that follow.
async fn settled_rss_kib(pid: u32) -> Option<u64> {
    let mut last = rss_kib(pid)?;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = rss_kib(pid)?;
        if now == last {
            return Some(now);
        }
        last = now;
    }
    Some(last)
}

/// Which transport the clients use (SSE and poll exist on cmem only; the load generator
/// does not drive Engine.IO long-polling).
pub use cmem_wire::Transport;

/// A set of connected clients reading until stopped.
struct Clients {
    stop: CancellationToken,
    tasks: JoinSet<Seen>,
    connected: usize,
    failed: usize,
    first_error: Option<String>,
    connect_time: Duration,
}

impl Clients {
    async fn finish(mut self) -> Vec<Seen> {
        self.stop.cancel();
        let mut out = Vec::new();
        while let Some(r) = self.tasks.join_next().await {
            if let Ok(s) = r {
                out.push(s);
            }
        }
        out
    }
}

/// Connects `n` clients (at most `parallel` handshakes in flight) and starts them reading.
async fn connect_clients(
    t: &Target,
    n: usize,
    transport: Transport,
    stats: Arc<Stats>,
    cursors: Option<&[Option<u64>]>,
    spread_sources: bool,
    parallel: usize,
) -> Clients {
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let sem = Arc::new(Semaphore::new(parallel.max(1)));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(1024);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap_or_default();
    let started = Instant::now();
    for i in 0..n {
        let cursor = cursors.and_then(|c| c.get(i).copied().flatten());
        let stats = stats.clone();
        let stop = stop.clone();
        let ready = ready_tx.clone();
        let sem = sem.clone();
        let ep = t.endpoint();
        let base = t.base.clone();
        let http = http.clone();
        let source = client::source_for(i, client::PER_SOURCE, spread_sources, t.source_block);
        tasks.spawn(async move {
            let permit = sem.acquire_owned().await.ok();
            match transport {
                Transport::Websocket => {
                    let auth = cursor.map(|c| format!("{{\"last_event_id\":{c}}}"));
                    match client::sio_connect(&ep, auth.as_deref(), source).await {
                        Ok(ws) => {
                            drop(permit);
                            let _ = ready.send(Ok(())).await;
                            client::sio_read(ws, stats, i, stop).await
                        }
                        Err(e) => {
                            let _ = ready.send(Err(format!("{e:#}"))).await;
                            Seen::default()
                        }
                    }
                }
                Transport::Polling => {
                    let _ = ready
                        .send(Err("the load generator drives websocket, sse and poll, not polling".into()))
                        .await;
                    Seen::default()
                }
                Transport::Sse | Transport::Poll => {
                    let (r_tx, mut r_rx) = tokio::sync::mpsc::channel(1);
                    let fut = async {
                        let reader = client::HttpReader { http, base, cursor, stats, idx: i, ready: r_tx, stop };
                        if transport == Transport::Sse { reader.sse().await } else { reader.poll().await }
                    };
                    tokio::pin!(fut);
                    tokio::select! {
                        _ = r_rx.recv() => {
                            drop(permit);
                            let _ = ready.send(Ok(())).await;
                            fut.await.unwrap_or_default()
                        }
                        r = &mut fut => {
                            let _ = ready.send(Err(match &r { Err(e) => format!("{e:#}"), Ok(_) => "ended early".into() })).await;
                            r.unwrap_or_default()
                        }
                    }
                }
            }
        });
    }
    drop(ready_tx);
    let (mut connected, mut failed, mut first_error) = (0, 0, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while connected + failed < n {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(Ok(()))) => connected += 1,
            Ok(Some(Err(e))) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            _ => break,
        }
    }
    Clients {
        stop,
        tasks,
        connected,
        failed,
        first_error,
        connect_time: started.elapsed(),
    }
}

#[derive(Debug, Serialize)]
pub struct IdleResult {
    pub scenario: &'static str,
    pub target: String,
    pub clients: usize,
    pub connected: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub connect_s: f64,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub kib_per_conn: Option<f64>,
}

pub async fn idle(t: &Target, n: usize, settle: Duration, spread: bool) -> IdleResult {
    let before = match t.pid {
        Some(pid) => settled_rss_kib(pid).await,
        None => None,
    };
    let stats = Arc::new(Stats::new(n));
    let clients = connect_clients(t, n, Transport::Websocket, stats, None, spread, 256).await;
    tokio::time::sleep(settle).await;
    let after = t.pid.and_then(rss_kib);
    let r = IdleResult {
        scenario: "idle",
        target: t.name.clone(),
        clients: n,
        connected: clients.connected,
        failed: clients.failed,
        first_error: clients.first_error.clone(),
        connect_s: clients.connect_time.as_secs_f64(),
        rss_before_kib: before,
        rss_after_kib: after,
        kib_per_conn: match (before, after) {
            (Some(b), Some(a)) if clients.connected > 0 => {
                Some((a.saturating_sub(b)) as f64 / clients.connected as f64)
            }
            _ => None,
        },
    };
    clients.finish().await;
    r
}

#[derive(Debug, Serialize)]
pub struct BroadcastResult {
    pub scenario: &'static str,
    pub target: String,
    pub transport: Transport,
    pub clients: usize,
    pub connected: usize,
    pub events: u64,
    pub size_bytes: usize,
    pub rate: Option<u64>,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Events that arrived with a lower cmem id than the one before (must be 0).
    pub out_of_order: u64,
    /// Connections the server closed during the run.
    pub disconnected: u64,
    pub seconds: f64,
    pub deliveries_per_s: f64,
    pub latency: Latency,
    /// The server's CPU (user + system) from the first publish to the last delivery, per
    /// delivery: what latency on a machine of its own would follow, without the load
    /// generator's share of the cores (`None` without the server's pid).
    pub server_cpu_us_per_delivery: Option<f64>,
    /// This load generator's CPU over the same span, per delivery (its publisher included):
    /// what it takes from the cores the server shares.
    pub generator_cpu_us_per_delivery: Option<f64>,
}

/// Waits until `stats` reaches `want` deliveries or makes no progress for `idle`.
/// Returns when the last delivery was seen.
async fn wait_deliveries(stats: &Stats, want: u64, idle: Duration, cap: Duration) -> Instant {
    let start = Instant::now();
    let mut last_count = stats.delivered_total();
    let mut last_change = Instant::now();
    loop {
        let c = stats.delivered_total();
        if c != last_count {
            last_count = c;
            last_change = Instant::now();
        }
        if c >= want || last_change.elapsed() > idle || start.elapsed() > cap {
            return last_change;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn broadcast(
    t: &Target,
    n: usize,
    events: u64,
    size: usize,
    rate: Option<u64>,
    batch: u64,
    transport: Transport,
    spread: bool,
) -> anyhow::Result<BroadcastResult> {
    if transport != Transport::Websocket && !t.cmem {
        bail!("SSE and poll exist on cmem only");
    }
    let stats = Arc::new(Stats::new(n));
    let clients = connect_clients(t, n, transport, stats.clone(), None, spread, 256).await;
    if clients.connected == 0 {
        bail!("no client connected: {:?}", clients.first_error);
    }
    // let greetings (system_status) settle so they do not count
    tokio::time::sleep(Duration::from_millis(300)).await;
    let publisher = Publisher::new(&t.publish_url, t.cmem, "x".repeat(size.saturating_sub(60)))?;
    let server_cpu_before = t.pid.and_then(cpu_us);
    let own_cpu_before = own_cpu_us();
    let start = Instant::now();
    let batch = batch.max(1);
    let mut sent = 0u64;
    let mut inflight = JoinSet::new();
    while sent < events {
        let k = batch.min(events - sent);
        let p = publisher.clone();
        let range = sent..sent + k;
        match rate {
            // paced: one batch per slot, sent in order
            Some(r) => {
                let due = start + Duration::from_secs_f64(sent as f64 / r.max(1) as f64);
                tokio::time::sleep_until(due.into()).await;
                p.send(range).await?;
            }
            // burst: keep a few batches in flight
            None => {
                if inflight.len() >= 4
                    && let Some(r) = inflight.join_next().await
                {
                    r??;
                }
                inflight.spawn(async move { p.send(range).await });
            }
        }
        sent += k;
    }
    while let Some(r) = inflight.join_next().await {
        r??;
    }
    let want = events * clients.connected as u64;
    let last = wait_deliveries(
        &stats,
        want,
        Duration::from_secs(3),
        Duration::from_secs(300),
    )
    .await;
    let server_cpu = t
        .pid
        .and_then(cpu_us)
        .zip(server_cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let own_cpu = own_cpu_us()
        .zip(own_cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let seconds = last
        .saturating_duration_since(start)
        .as_secs_f64()
        .max(1e-6);
    let connected = clients.connected;
    let seen = clients.finish().await;
    let delivered: u64 = seen.iter().map(|s| s.events).sum();
    let duplicated: u64 = seen.iter().map(|s| s.duplicates).sum();
    let per_delivery = |us: u64| us as f64 / delivered.max(1) as f64;
    Ok(BroadcastResult {
        scenario: "broadcast",
        target: t.name.clone(),
        transport,
        clients: n,
        connected,
        events,
        size_bytes: size,
        rate,
        expected: want,
        delivered,
        lost: want.saturating_sub(delivered - duplicated),
        duplicated,
        out_of_order: seen.iter().map(|s| s.out_of_order).sum(),
        disconnected: stats.dropped_total(),
        seconds,
        deliveries_per_s: (delivered - duplicated) as f64 / seconds,
        latency: stats.latency(),
        server_cpu_us_per_delivery: server_cpu.map(per_delivery),
        generator_cpu_us_per_delivery: own_cpu.map(per_delivery),
    })
}

#[derive(Debug, Serialize)]
pub struct ResumeResult {
    pub scenario: &'static str,
    pub target: String,
    pub clients: usize,
    pub missed_per_client: u64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub catch_up_ms: f64,
}

pub async fn resume(
    t: &Target,
    n: usize,
    missed: u64,
    size: usize,
) -> anyhow::Result<ResumeResult> {
    if !t.cmem {
        bail!("resume needs cmem's journal");
    }
    let publisher = Publisher::new(&t.publish_url, true, "x".repeat(size.saturating_sub(60)))?;
    // 1. connect, receive one event to learn a cursor, disconnect
    let stats = Arc::new(Stats::new(n));
    let clients =
        connect_clients(t, n, Transport::Websocket, stats.clone(), None, false, 256).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    publisher.send(0..1).await?;
    wait_deliveries(
        &stats,
        clients.connected as u64,
        Duration::from_secs(3),
        Duration::from_secs(30),
    )
    .await;
    let seen = clients.finish().await;
    let cursors: Vec<Option<u64>> = seen.iter().map(|s| s.last_id).collect();
    if cursors.iter().any(Option::is_none) {
        bail!("a client learned no cursor");
    }
    // 2. publish while they are away
    let mut sent = 1;
    while sent < missed + 1 {
        let k = 500.min(missed + 1 - sent);
        publisher.send(sent..sent + k).await?;
        sent += k;
    }
    // 3. come back with cursors; time until every client has every missed event
    let stats = Arc::new(Stats::new(n));
    let start = Instant::now();
    let clients = connect_clients(
        t,
        n,
        Transport::Websocket,
        stats.clone(),
        Some(&cursors),
        false,
        256,
    )
    .await;
    let want = missed * n as u64;
    let last = wait_deliveries(
        &stats,
        want,
        Duration::from_secs(3),
        Duration::from_secs(120),
    )
    .await;
    let catch_up = last.saturating_duration_since(start);
    let seen = clients.finish().await;
    let delivered: u64 = seen.iter().map(|s| s.events).sum();
    let duplicated: u64 = seen.iter().map(|s| s.duplicates).sum();
    Ok(ResumeResult {
        scenario: "resume",
        target: t.name.clone(),
        clients: n,
        missed_per_client: missed,
        expected: want,
        delivered,
        lost: want.saturating_sub(delivered - duplicated),
        duplicated,
        out_of_order: seen.iter().map(|s| s.out_of_order).sum(),
        catch_up_ms: catch_up.as_secs_f64() * 1000.0,
    })
}

#[derive(Debug, Serialize)]
pub struct JournalResult {
    pub scenario: &'static str,
    pub target: String,
    pub events: u64,
    pub batch: u64,
    pub publishers: usize,
    pub seconds: f64,
    pub events_per_s: f64,
    /// The server's CPU (user + system) per event published, when its pid is known.
    pub server_cpu_us_per_event: Option<f64>,
    /// The generator's own CPU per event (its publishers share the server's cores).
    pub generator_cpu_us_per_event: Option<f64>,
}

pub async fn journal(
    t: &Target,
    events: u64,
    batch: u64,
    publishers: usize,
    size: usize,
) -> anyhow::Result<JournalResult> {
    let publisher = Publisher::new(&t.publish_url, t.cmem, "x".repeat(size.saturating_sub(60)))?;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let batch = batch.max(1);
    let server_cpu_before = t.pid.and_then(cpu_us);
    let own_cpu_before = own_cpu_us();
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..publishers.max(1) {
        let p = publisher.clone();
        let next = next.clone();
        tasks.spawn(async move {
            loop {
                let from = next.fetch_add(batch, std::sync::atomic::Ordering::Relaxed);
                if from >= events {
                    return Ok::<(), anyhow::Error>(());
                }
                p.send(from..(from + batch).min(events)).await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let seconds = start.elapsed().as_secs_f64();
    let per_event = |after: Option<u64>, before: Option<u64>| {
        after
            .zip(before)
            .map(|(a, b)| a.saturating_sub(b) as f64 / events.max(1) as f64)
    };
    let server_cpu_us_per_event = per_event(t.pid.and_then(cpu_us), server_cpu_before);
    let generator_cpu_us_per_event = per_event(own_cpu_us(), own_cpu_before);
    Ok(JournalResult {
        scenario: "journal",
        target: t.name.clone(),
        events,
        batch,
        publishers,
        seconds,
        events_per_s: events as f64 / seconds,
        server_cpu_us_per_event,
        generator_cpu_us_per_event,
    })
}

fn micros(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1} µs"))
        .unwrap_or_else(|| "?".into())
}

impl BroadcastResult {
    /// One line for a person: who, how many, how fast, and whether anything was lost.
    pub fn human(&self) -> String {
        format!(
            "broadcast {} {:?}: {} clients x {} events of {} B{} -> {:.0} deliveries/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, lost {}, dup {}, CPU per delivery: server {}, generator {}",
            self.target,
            self.transport,
            self.connected,
            self.events,
            self.size_bytes,
            self.rate.map(|x| format!(" at {x}/s")).unwrap_or_default(),
            self.deliveries_per_s,
            self.latency.p50_ms,
            self.latency.p99_ms,
            self.latency.max_ms,
            self.lost,
            self.duplicated,
            micros(self.server_cpu_us_per_delivery),
            micros(self.generator_cpu_us_per_delivery),
        )
    }
}
