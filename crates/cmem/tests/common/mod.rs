//! Starts the real `cmem` binary on an ephemeral loopback port for integration tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod shared;
#[allow(unused_imports)]
pub use shared::until;

pub struct TestServer {
    pub child: Child,
    pub url: String,
    pub addr: String,
    pub data: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server on a fresh data folder.
    pub fn start(args: &[&str]) -> TestServer {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().to_path_buf();
        let mut s = Self::start_in(&data, args, &[]);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on `data` with extra flags and environment.
    pub fn start_in(data: &Path, args: &[&str], env: &[(&str, &str)]) -> TestServer {
        Self::start_authed(data, args, env, None)
    }

    /// Starts a server whose folder has users; `token` is used to watch the start-up indexing.
    pub fn start_authed(
        data: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        token: Option<&str>,
    ) -> TestServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cmem"));
        cmd.arg("serve").arg("--data").arg(data);
        // a free port unless the test names one (a restart on the same address)
        if !args.contains(&"--bind") {
            cmd.args(["--bind", "127.0.0.1:0"]);
        }
        cmd.args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = retry_spawn(|| cmd.spawn()).expect("spawn cmem");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            assert!(Instant::now() < deadline, "server did not start");
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        // a server on every interface is reached on loopback (Windows refuses
                        // to connect to 0.0.0.0)
                        break rest.trim().replace("0.0.0.0:", "127.0.0.1:");
                    }
                }
                _ => panic!("server exited before listening"),
            }
        };
        // keep draining stdout so the child never blocks on a full pipe
        std::thread::spawn(move || for _ in lines {});
        wait_for_initial_indexing(&addr, token);
        TestServer {
            child,
            url: format!("http://{addr}"),
            addr,
            data: data.to_path_buf(),
            _tmp: None,
        }
    }

    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    pub async fn status(&self) -> serde_json::Value {
        let v: serde_json::Value = reqwest::get(format!("{}/api/websocket/status", self.url))
            .await
            .expect("status")
            .json()
            .await
            .expect("status json");
        v["data"].clone()
    }

    /// `GET /api/websocket/status` as an admin of a server with users.
    pub async fn status_as(&self, token: &str) -> serde_json::Value {
        let (code, v) = get_as(&format!("{}/api/websocket/status", self.url), Some(token)).await;
        assert_eq!(code, 200, "{v}");
        v["data"].clone()
    }

    /// The whole answer of `GET /api/websocket/errors`.
    pub async fn errors(&self) -> serde_json::Value {
        reqwest::get(format!("{}/api/websocket/errors", self.url))
            .await
            .expect("errors")
            .json()
            .await
            .expect("errors json")
    }

    pub async fn head(&self) -> u64 {
        self.status().await["journal"]["head"]
            .as_u64()
            .expect("head")
    }

    pub async fn publish(&self, body: serde_json::Value) -> reqwest::Response {
        self.client()
            .post(format!("{}/api/events", self.url))
            .json(&body)
            .send()
            .await
            .expect("publish request")
    }

    /// `POST <path>` with a JSON body; the status and the JSON answer.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .client()
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .expect("post request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Stops the server: SIGTERM (a graceful shutdown) where there are signals; on Windows,
    /// which has none to send to another console process, a hard stop.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        #[cfg(unix)]
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        #[cfg(not(unix))]
        let _ = self.child.kill();
        self.child.wait().expect("wait")
    }
}

/// The server indexes its folder at start and publishes that; tests that count events start
/// once that run is over, so the journal is quiet.
fn wait_for_initial_indexing(addr: &str, token: Option<&str>) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            let req = format!(
                "GET /system/indexing HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
            );
            let mut out = String::new();
            if s.write_all(req.as_bytes()).is_ok()
                && s.read_to_string(&mut out).is_ok()
                && out.contains("\"finished_at\":\"")
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("initial indexing did not finish");
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a `cmem` command (not the server) to its end: exit code, stdout, stderr.
pub fn cmem(args: &[&str]) -> (i32, String, String) {
    let out = retry_spawn(|| {
        Command::new(env!("CARGO_BIN_EXE_cmem"))
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
    })
    .expect("run cmem");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Starts a process, trying again (up to 5 times, 200 ms apart) when the OS refuses to create
/// it: under Wine, `CreateProcess` now and then fails with `ERROR_INTERNAL_ERROR` (1359) and a
/// test failed on it before the command ever ran. A process that started and failed is not
/// retried.
fn retry_spawn<T>(mut start: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let mut tries = 0;
    loop {
        match start() {
            Err(e) if tries < 4 => {
                tries += 1;
                eprintln!("could not start cmem ({e}); trying again");
                std::thread::sleep(Duration::from_millis(200));
            }
            r => return r,
        }
    }
}

/// A `cmem` command on the data folder `data` (`--data` appended).
pub fn cmem_in(data: &Path, args: &[&str]) -> (i32, String, String) {
    let data = data.to_str().expect("a UTF-8 temp path");
    cmem(&[args, &["--data", data]].concat())
}

/// A new token for `user` of the folder `data`.
pub fn token_for(data: &Path, user: &str) -> String {
    let (code, out, err) = cmem_in(data, &["token", "create", user, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("token JSON");
    v["token"].as_str().expect("token").to_string()
}

/// Sends a request (with a bearer token if given) and returns the status and the JSON body
/// (`null` when the body is not JSON).
pub async fn send(r: reqwest::RequestBuilder, token: Option<&str>) -> (u16, serde_json::Value) {
    let r = match token {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
    let r = r.send().await.expect("request");
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// `GET url` without a token.
pub async fn get(url: impl AsRef<str>) -> (u16, serde_json::Value) {
    send(reqwest::Client::new().get(url.as_ref()), None).await
}

/// `GET url` as the holder of `token`.
pub async fn get_as(url: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    send(reqwest::Client::new().get(url), token).await
}

/// `POST url` with a JSON body as the holder of `token`.
pub async fn post_as(
    url: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    send(reqwest::Client::new().post(url).json(&body), token).await
}

/// An open SSE stream: call `closed_with` to wait until the server ends it, with the reason.
pub struct Sse {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    pub text: String,
}

impl Sse {
    pub async fn open(s: &TestServer, token: Option<&str>, query: &str) -> Sse {
        let mut r = reqwest::Client::new().get(format!("{}/api/events/stream?{query}", s.url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut sse = Sse {
            body: Box::pin(resp.bytes_stream()),
            text: String::new(),
        };
        sse.until("the greeting", |t| t.contains("system_status"))
            .await;
        sse
    }

    /// Reads until `done(text)` holds; false if the stream ended first or 15 s passed.
    pub async fn until(&mut self, what: &str, done: impl Fn(&str) -> bool) -> bool {
        use futures::StreamExt;
        let found = tokio::time::timeout(std::time::Duration::from_secs(15), async {
            while !done(&self.text) {
                match self.body.next().await {
                    Some(Ok(chunk)) => self.text.push_str(&String::from_utf8_lossy(&chunk)),
                    _ => return done(&self.text),
                }
            }
            true
        })
        .await
        .unwrap_or(false);
        assert!(
            found || what.starts_with('?'),
            "SSE: no {what} in {}",
            self.text
        );
        found
    }

    pub async fn closed_with(&mut self, reason: &str) {
        self.until(&format!("close with {reason}"), |t| {
            t.contains("event: close") && t.contains(reason)
        })
        .await;
    }
}
