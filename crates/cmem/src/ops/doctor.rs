//! `cmem doctor`: what a person needs when real-time "does not work here". The platform and
//! profile, the effective configuration with sources, whether the port is free, proxy
//! variables, on Windows the excluded port ranges, and a self-test against a running server
//! that tries each transport the way a client would and says which work and, when one does
//! not, why ("WebSocket upgrade refused by proxy: clients fall back to polling").
//!
//! HTTP goes through `reqwest`, which honours `HTTP_PROXY`/`NO_PROXY` like the clients on this
//! machine do; the WebSocket probe is `tokio-tungstenite`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cmem_client::ErrorCode;
use cmem_wire::codes::{Action, Refusal};
use futures::StreamExt;
use serde::Serialize;

use crate::config::Loaded;
use crate::net::classify::{ErrorClass, classify};

/// Proxy variables clients and browsers on this machine may use.
const PROXY_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];

/// How long each probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize)]
pub struct Platform {
    pub os: &'static str,
    pub arch: &'static str,
    pub profile: &'static str,
}

#[derive(Debug, Serialize)]
pub struct PortCheck {
    pub addr: String,
    /// `free`, `in_use` or `refused`.
    pub state: &'static str,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct ExcludedRanges {
    pub ranges: Vec<(u16, u16)>,
    /// The configured port lies in one of them (binding it fails with WSAEACCES 10013).
    pub port_excluded: bool,
}

#[derive(Debug, Serialize)]
pub struct Probe {
    pub transport: &'static str,
    pub ok: bool,
    pub detail: String,
    pub ms: u64,
    /// Refused for want of a (valid) token: the server has users, the network is fine.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub needs_token: bool,
}

/// What a refused HTTP answer means for the self-test, and whether it is the server asking
/// for a token (its code's action is to reauthenticate; from something without a code, a 401):
/// then the network is fine and the advice is `--token`, not a proxy fix.
async fn refused(r: reqwest::Response, what: &str) -> (String, bool) {
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    let refusal = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| Refusal::read(&v));
    let action = match &refusal {
        Some(x) => x.action(Some(status.as_u16())),
        None => Action::for_status(Some(status.as_u16())),
    };
    let code = refusal
        .as_ref()
        .filter(|x| !x.code.is_empty())
        .map(|x| format!(" ({})", x.code))
        .unwrap_or_default();
    if action == Action::Reauthenticate {
        (
            format!(
                "HTTP {status}{code} for {what}: this server has users and wants a token; pass --token (or set CM_TOKEN)"
            ),
            true,
        )
    } else {
        (format!("HTTP {status}{code} for {what}"), false)
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub platform: Platform,
    pub config: String,
    pub port: Option<PortCheck>,
    pub proxies: Vec<(String, String)>,
    pub excluded_ranges: Option<ExcludedRanges>,
    pub url: Option<String>,
    pub selftest: Vec<Probe>,
    /// The server's node and journal (`/api/websocket/status`), when the token may see them.
    pub server: Option<serde_json::Value>,
    /// One line per problem found, with what to do.
    pub advice: Vec<String>,
}

impl Report {
    /// Whether every self-test probe passed (and there was no problem to report).
    pub fn healthy(&self) -> bool {
        self.selftest.iter().all(|p| p.ok)
    }
}

/// Hides a password in `scheme://user:password@host`.
fn mask(value: &str) -> String {
    match (value.find("://"), value.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &value[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &value[..s + 3], &value[at..]),
                None => value.to_string(),
            }
        }
        _ => value.to_string(),
    }
}

fn proxies() -> Vec<(String, String)> {
    PROXY_VARS
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), mask(&v))))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// Tries to bind the configured port (then lets it go).
fn port_check(bind: SocketAddr) -> Option<PortCheck> {
    if bind.port() == 0 {
        return None;
    }
    let addr = bind.to_string();
    Some(match crate::net::socket::bind_std(bind, 1) {
        Ok(_) => PortCheck {
            addr,
            state: "free",
            detail: "nothing listens there now (is the server running?)".into(),
        },
        Err(e) => {
            let d = classify(&e);
            let state = match d.class {
                ErrorClass::AddressInUse => "in_use",
                _ => "refused",
            };
            PortCheck {
                addr,
                state,
                detail: format!("{e} [{}]: {}", d.class.name(), d.cause),
            }
        }
    })
}

/// Parses `netsh interface ipv4 show excludedportrange protocol=tcp`: lines of two numbers.
pub fn parse_excluded(text: &str) -> Vec<(u16, u16)> {
    text.lines()
        .filter_map(|l| {
            let mut nums = l
                .split_whitespace()
                .map(|w| w.trim_end_matches('*').parse::<u16>());
            match (nums.next(), nums.next()) {
                (Some(Ok(a)), Some(Ok(b))) if a <= b => Some((a, b)),
                _ => None,
            }
        })
        .collect()
}

fn excluded_ranges(port: u16) -> Option<ExcludedRanges> {
    if !cfg!(windows) {
        return None;
    }
    let out = std::process::Command::new("netsh")
        .args([
            "interface",
            "ipv4",
            "show",
            "excludedportrange",
            "protocol=tcp",
        ])
        .output()
        .ok()?;
    let ranges = parse_excluded(&String::from_utf8_lossy(&out.stdout));
    let port_excluded = ranges.iter().any(|(a, b)| (*a..=*b).contains(&port));
    Some(ExcludedRanges {
        ranges,
        port_excluded,
    })
}

fn elapsed(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

/// Words for a failed HTTP request.
fn http_failure(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            let d = classify(io);
            return format!("{io} [{}]: {}", d.class.name(), d.cause);
        }
        source = s.source();
    }
    if e.is_timeout() {
        return format!(
            "no answer within {} s (a proxy or firewall holding the request?)",
            PROBE_TIMEOUT.as_secs()
        );
    }
    e.to_string()
}

async fn probe_health(c: &reqwest::Client, base: &str) -> Probe {
    let t = Instant::now();
    let (ok, detail) = match c.get(format!("{base}/health")).send().await {
        Ok(r) if r.status().is_success() => (true, "the server answers".to_string()),
        Ok(r) => (false, format!("HTTP {} from {base}/health", r.status())),
        Err(e) => (false, http_failure(&e)),
    };
    Probe {
        transport: "http",
        ok,
        needs_token: false,
        detail,
        ms: elapsed(t),
    }
}

async fn probe_polling(c: &reqwest::Client, base: &str) -> Probe {
    let t = Instant::now();
    let url = format!("{base}/socket.io/?EIO=4&transport=polling");
    let (ok, detail) = match c.get(&url).send().await {
        Ok(r) if r.status().is_success() => match r.text().await {
            Ok(body) if body.starts_with("0{") && body.contains("\"sid\"") => (
                true,
                "Engine.IO long-polling handshake answered".to_string(),
            ),
            Ok(body) => (
                false,
                format!(
                    "unexpected answer (not an Engine.IO handshake): {}",
                    body.chars().take(80).collect::<String>()
                ),
            ),
            Err(e) => (false, http_failure(&e)),
        },
        Ok(r) => (
            false,
            format!("HTTP {} for the polling handshake", r.status()),
        ),
        Err(e) => (false, http_failure(&e)),
    };
    Probe {
        transport: "polling",
        ok,
        needs_token: false,
        detail,
        ms: elapsed(t),
    }
}

async fn probe_websocket(base: &str, token: Option<&str>) -> Probe {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let t = Instant::now();
    let ws_url = cmem_client::eio::websocket_url(base);
    let attempt = async {
        let mut req = ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| (format!("bad URL: {e}"), false))?;
        if let Some(tok) = token
            && let Ok(v) = format!("Bearer {tok}").parse()
        {
            req.headers_mut().insert("authorization", v);
        }
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.map_err(|e| {
            use tokio_tungstenite::tungstenite::Error as E;
            match e {
                E::Http(resp) => format!(
                    "WebSocket upgrade refused (HTTP {}): a proxy on the way may drop the Upgrade header; clients fall back to polling",
                    resp.status()
                ),
                E::Io(io) => {
                    let d = classify(&io);
                    format!("{io} [{}]: {}", d.class.name(), d.cause)
                }
                other => format!("WebSocket handshake failed: {other}"),
            }
        })
        .map_err(|d| (d, false))?;
        // the open packet and the namespace join, as cmem's client library does them
        let mut auth = serde_json::Map::new();
        if let Some(tok) = token {
            auth.insert("token".into(), tok.into());
        }
        let auth = serde_json::Value::Object(auth).to_string();
        match cmem_client::eio::handshake(&mut ws, &auth).await {
            Ok(_) => {
                Ok("WebSocket upgrade, Engine.IO open packet and Socket.IO connect".to_string())
            }
            Err(e) => match e.code {
                ErrorCode::Closed | ErrorCode::Transport => Err((
                    format!(
                        "the WebSocket was cut right after the upgrade ({e}): a proxy on the way does not pass WebSocket traffic (Upgrade and Connection headers); clients fall back to polling"
                    ),
                    false,
                )),
                ErrorCode::Unauthorized => Err((
                    format!(
                        "the WebSocket opened, and Socket.IO's connect was refused: this server has users and wants a token; pass --token (or set CM_TOKEN) ({})",
                        e.message
                    ),
                    true,
                )),
                _ => Err((e.message, false)),
            },
        }
    };
    let (ok, detail, needs_token) = match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Ok(Ok(d)) => (true, d, false),
        Ok(Err((d, needs_token))) => (false, d, needs_token),
        Err(_) => (
            false,
            format!(
                "no WebSocket answer within {} s (a proxy holding the upgrade?)",
                PROBE_TIMEOUT.as_secs()
            ),
            false,
        ),
    };
    Probe {
        transport: "websocket",
        ok,
        needs_token,
        detail,
        ms: elapsed(t),
    }
}

async fn probe_sse(c: &reqwest::Client, base: &str) -> Probe {
    let t = Instant::now();
    let attempt = async {
        let r = c
            .get(format!("{base}/api/events/stream"))
            .send()
            .await
            .map_err(|e| (http_failure(&e), false))?;
        if !r.status().is_success() {
            return Err(refused(r, "the event stream").await);
        }
        let ct = cmem_client::content_type(&r);
        if !cmem_wire::sse::is_event_stream(&ct) {
            return Err((
                format!(
                    "content-type is `{ct}`, not text/event-stream (something on the way rewrites it)"
                ),
                false,
            ));
        }
        let mut body = r.bytes_stream();
        match tokio::time::timeout(PROBE_TIMEOUT, body.next()).await {
            Ok(Some(Ok(_))) => Ok("event stream open, first bytes arrived at once".to_string()),
            Ok(_) => Err(("the event stream ended at once".to_string(), false)),
            Err(_) => Err((
                format!(
                    "no data within {} s: a proxy buffers the response; SSE needs buffering off (the server sends X-Accel-Buffering: no)",
                    PROBE_TIMEOUT.as_secs()
                ),
                false,
            )),
        }
    };
    let (ok, detail, needs_token) = match attempt.await {
        Ok(d) => (true, d, false),
        Err((d, needs_token)) => (false, d, needs_token),
    };
    Probe {
        transport: "sse",
        ok,
        needs_token,
        detail,
        ms: elapsed(t),
    }
}

async fn probe_poll(c: &reqwest::Client, base: &str) -> Probe {
    let t = Instant::now();
    let url = format!(
        "{base}/api/events/poll?client_id=cmem-doctor-{}",
        std::process::id()
    );
    let (ok, detail, needs_token) = match c.get(url).send().await {
        Ok(r) if r.status().is_success() => match r.json::<serde_json::Value>().await {
            Ok(v) if v["events"].is_array() => (true, "poll answered".to_string(), false),
            Ok(_) => (false, "the answer has no events list".to_string(), false),
            Err(e) => (false, format!("the answer is not JSON: {e}"), false),
        },
        Ok(r) => {
            let (d, needs_token) = refused(r, "a poll").await;
            (false, d, needs_token)
        }
        Err(e) => (false, http_failure(&e), false),
    };
    Probe {
        transport: "poll",
        ok,
        needs_token,
        detail,
        ms: elapsed(t),
    }
}

/// The MCP endpoint: a session opens (`initialize` answered with an `Mcp-Session-Id`) and is
/// ended again.
async fn probe_mcp(c: &reqwest::Client, base: &str) -> Probe {
    let t = Instant::now();
    let init = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "cmem-doctor", "version": env!("CARGO_PKG_VERSION")}},
    });
    let sent = c
        .post(format!("{base}/mcp"))
        .header(
            reqwest::header::ACCEPT,
            "application/json, text/event-stream",
        )
        .json(&init)
        .send()
        .await;
    let (ok, detail, needs_token) = match sent {
        Ok(r) if r.status().is_success() => match r.headers().get("mcp-session-id").cloned() {
            Some(id) => {
                drop(r);
                let _ = c
                    .delete(format!("{base}/mcp"))
                    .header("mcp-session-id", id)
                    .send()
                    .await;
                (true, "an MCP session opens".to_string(), false)
            }
            None => (
                false,
                "initialize answered without a session id".to_string(),
                false,
            ),
        },
        Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => (
            true,
            "the MCP server is off here (mcp_enabled = false)".to_string(),
            false,
        ),
        Ok(r) => {
            let (d, needs_token) = refused(r, "an MCP initialize").await;
            (false, d, needs_token)
        }
        Err(e) => (false, http_failure(&e), false),
    };
    Probe {
        transport: "mcp",
        ok,
        needs_token,
        detail,
        ms: elapsed(t),
    }
}

/// Tries every transport against `base`.
pub async fn selftest(base: &str, token: Option<&str>) -> Vec<Probe> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(tok) = token
        && let Ok(v) = format!("Bearer {tok}").parse()
    {
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    let client = match reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT * 2)
        .default_headers(headers)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return vec![Probe {
                transport: "http",
                ok: false,
                detail: format!("no HTTP client: {e}"),
                ms: 0,
                needs_token: false,
            }];
        }
    };
    vec![
        probe_health(&client, base).await,
        probe_websocket(base, token).await,
        probe_polling(&client, base).await,
        probe_sse(&client, base).await,
        probe_poll(&client, base).await,
        probe_mcp(&client, base).await,
    ]
}

/// What to do about the findings.
fn advise(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let ok = |t: &str| r.selftest.iter().any(|p| p.transport == t && p.ok);
    let tested = |t: &str| r.selftest.iter().any(|p| p.transport == t);
    let needs_token = r.selftest.iter().any(|p| p.needs_token);
    if needs_token {
        out.push("This server has users: run the self-test with a token, `cmem doctor --token <token>` (an admin makes one with `cmem token create <user>`). A refusal for want of a token says nothing about the network.".into());
    }
    let websocket_refused = r
        .selftest
        .iter()
        .any(|p| p.transport == "websocket" && p.needs_token);
    if tested("websocket") && !ok("websocket") && ok("polling") && !websocket_refused {
        out.push(
            "WebSocket does not get through but long-polling does: Socket.IO clients fall back to polling (slower, still complete). If a reverse proxy is in front, let it pass `Upgrade` and `Connection` headers.".into(),
        );
    }
    if tested("sse") && !ok("sse") && ok("poll") {
        out.push("SSE does not get through but plain polling does: use the poll transport behind this network.".into());
    }
    if tested("http") && !ok("http") {
        out.push("The server cannot be reached at all: check that it runs (`cmem serve`), the URL's port, and firewalls (`cmem firewall`).".into());
    }
    if let Some(x) = &r.excluded_ranges
        && x.port_excluded
    {
        out.push("The configured port is inside a Windows excluded port range: binding it fails with WSAEACCES (10013). Pick a port outside the ranges above, or use --port-fallback N.".into());
    }
    if !r.proxies.is_empty() {
        out.push("Proxy variables are set: HTTP clients on this machine (and this self-test) go through them; add the server's host to NO_PROXY if it is local.".into());
    }
    out
}

/// The node and the journal as the server reports them (admins only; `None` otherwise).
async fn server_side(base: &str, token: Option<&str>) -> Option<serde_json::Value> {
    let c = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .build()
        .ok()?;
    let mut req = c.get(format!("{base}/api/websocket/status"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let v: serde_json::Value = req.send().await.ok()?.json().await.ok()?;
    let d = &v["data"];
    (v["success"] == true).then(
        || serde_json::json!({"node": d["node"], "journal": d["journal"], "cluster": d["cluster"]}),
    )
}

/// One line for the journal an engine reports.
fn journal_line(j: &serde_json::Value) -> String {
    let e = &j["engine"];
    match e["engine"].as_str() {
        Some("jetstream") => {
            let peers = e["peers"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .map(|x| {
                            format!(
                                "{} {}",
                                x["name"].as_str().unwrap_or("?"),
                                if x["offline"] == true {
                                    "offline"
                                } else if x["current"] == true {
                                    "current"
                                } else {
                                    "behind"
                                }
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            format!(
                "JetStream stream {} on {}: {} replica(s), leader {}{}; this node is {} event(s) behind (head {}){}",
                e["stream"].as_str().unwrap_or("?"),
                e["servers"].as_str().unwrap_or("?"),
                e["replicas"],
                e["leader"].as_str().unwrap_or("-"),
                if peers.is_empty() {
                    String::new()
                } else {
                    format!(" (other replicas: {peers})")
                },
                e["node_lag"],
                e["node_head"],
                e["error"]
                    .as_str()
                    .map(|x| format!("; {x}"))
                    .unwrap_or_default()
            )
        }
        _ => format!(
            "SQLite {} (epoch {}, head {})",
            e["path"].as_str().unwrap_or("?"),
            j["epoch"].as_str().unwrap_or("?"),
            j["head"]
        ),
    }
}

/// Whether something accepts TCP connections at `url`'s host and port (within a second).
fn answers(url: &str) -> bool {
    let Some(hostport) = url.strip_prefix("http://") else {
        return false;
    };
    let hostport = hostport.split('/').next().unwrap_or(hostport);
    use std::net::ToSocketAddrs;
    hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

/// Builds the report; with `url` (or a running server: the one the data folder recorded, or at
/// the configured address) it runs the self-test.
pub async fn run(loaded: &Loaded, url: Option<String>, token: Option<String>) -> Report {
    let c = &loaded.config;
    let port = port_check(c.bind);
    // the folder's server where it recorded its address (when something listens there), else
    // where the configuration says, unless told otherwise
    let recorded = super::running::recorded_url(&c.state_dir()).filter(|u| answers(u));
    let url = url.or(recorded).or_else(|| {
        let running = port.as_ref().is_some_and(|p| p.state == "in_use");
        running.then(|| {
            let host = if c.bind.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                c.bind.ip().to_string()
            };
            format!("http://{host}:{}", c.bind.port())
        })
    });
    let url = url.map(|u| u.trim_end_matches('/').to_string());
    let selftest = match &url {
        Some(u) => selftest(u, token.as_deref()).await,
        None => Vec::new(),
    };
    let server = match &url {
        Some(u) if selftest.iter().any(|t| t.transport == "http" && t.ok) => {
            server_side(u, token.as_deref()).await
        }
        _ => None,
    };
    let mut port = port;
    if let Some(p) = port.as_mut()
        && p.state == "in_use"
        && selftest.iter().any(|t| t.transport == "http" && t.ok)
    {
        p.detail = "a server answers there (see the self-test)".into();
    }
    let mut report = Report {
        platform: Platform {
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            profile: loaded.profile.name(),
        },
        config: loaded.render(),
        port,
        proxies: proxies(),
        excluded_ranges: excluded_ranges(c.bind.port()),
        url,
        selftest,
        server,
        advice: Vec::new(),
    };
    report.advice = advise(&report);
    report
}

/// The report for people.
pub fn render(r: &Report) -> String {
    let mut s = format!(
        "platform: {} {} (profile {})\n\n{}\n",
        r.platform.os, r.platform.arch, r.platform.profile, r.config
    );
    if let Some(p) = &r.port {
        s.push_str(&format!("port {}: {} ({})\n", p.addr, p.state, p.detail));
    }
    if r.proxies.is_empty() {
        s.push_str("proxy variables: none set\n");
    } else {
        for (k, v) in &r.proxies {
            s.push_str(&format!("proxy variable {k} = {v}\n"));
        }
    }
    if let Some(x) = &r.excluded_ranges {
        let list: Vec<String> = x.ranges.iter().map(|(a, b)| format!("{a}-{b}")).collect();
        s.push_str(&format!(
            "Windows excluded port ranges: {}{}\n",
            if list.is_empty() {
                "none".into()
            } else {
                list.join(", ")
            },
            if x.port_excluded {
                " (the configured port is inside one!)"
            } else {
                ""
            }
        ));
    }
    match &r.url {
        Some(u) => {
            s.push_str(&format!("\nself-test against {u}:\n"));
            for p in &r.selftest {
                s.push_str(&format!(
                    "  {:<9} {}  {} ({} ms)\n",
                    p.transport,
                    if p.ok { "ok  " } else { "FAIL" },
                    p.detail,
                    p.ms
                ));
            }
        }
        None => s.push_str(
            "\nno server found at the configured address; run `cmem doctor --url http://HOST:PORT` to test one\n",
        ),
    }
    if let Some(sv) = &r.server {
        s.push_str(&format!(
            "\nnode {}; journal: {}\n",
            sv["node"].as_str().unwrap_or("?"),
            journal_line(&sv["journal"])
        ));
        if let Some(nodes) = sv["cluster"]["nodes"].as_array() {
            let names: Vec<&str> = nodes.iter().filter_map(|n| n.as_str()).collect();
            s.push_str(&format!(
                "cluster: {} node(s) alive ({}); team log applied to #{}\n",
                names.len(),
                names.join(", "),
                sv["cluster"]["teams"]["applied"]
            ));
        }
    }
    for a in &r.advice {
        s.push_str(&format!("\n* {a}"));
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excluded_ranges_parse_from_netsh_output() {
        let text = "\nProtocol tcp Port Exclusion Ranges\n\nStart Port    End Port\n----------    --------\n      5357        5357\n     49709       49808\n     50000       50059     *\n\n* - Administered port exclusions.\n";
        assert_eq!(
            parse_excluded(text),
            vec![(5357, 5357), (49709, 49808), (50000, 50059)]
        );
    }

    #[test]
    fn proxy_passwords_are_masked() {
        assert_eq!(
            mask("http://alice:s3cret@proxy:3128"),
            "http://alice:***@proxy:3128"
        );
        assert_eq!(mask("http://proxy:3128"), "http://proxy:3128");
    }
}
