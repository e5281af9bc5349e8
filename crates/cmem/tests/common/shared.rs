//! What the crate's unit tests and its integration tests share, in one file compiled into
//! both (`src/testing.rs` and `tests/common/mod.rs` include it): NATS servers with JetStream
//! for the cluster suites, and waiting for a condition. Debian's `nats-server`; CI installs
//! it. The NATS helpers are for Unix: under Wine the Windows build cannot start it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// A NATS server with JetStream on a free loopback port, killed when dropped.
pub struct Nats {
    pub child: std::process::Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn spawn(args: &[String], dir: &tempfile::TempDir) -> std::process::Child {
    std::process::Command::new("nats-server")
        .args(args)
        .arg("-sd")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect(
            "nats-server is needed for the JetStream tests (Debian: apt-get install nats-server)",
        )
}

/// One NATS server with JetStream, accepting connections when this returns.
pub fn nats() -> Nats {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["-js", "-a", "127.0.0.1", "-p", &port.to_string()].map(String::from);
    let child = spawn(&args, &dir);
    eventually(5, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Nats {
        child,
        url: format!("nats://127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// Three NATS servers clustered on loopback, JetStream on each (a stream with 3 replicas
/// lives on all of them).
pub fn nats_cluster() -> Vec<Nats> {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let routes = ports
        .iter()
        .map(|(_, c)| format!("nats://127.0.0.1:{c}"))
        .collect::<Vec<_>>()
        .join(",");
    ports
        .iter()
        .enumerate()
        .map(|(i, (p, c))| {
            let dir = tempfile::tempdir().expect("tempdir");
            let args = [
                "-js".to_string(),
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                p.to_string(),
                "-n".into(),
                format!("n{i}"),
                "--cluster_name".into(),
                "cmem-test".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{c}"),
                "--routes".into(),
                routes.clone(),
            ];
            Nats {
                child: spawn(&args, &dir),
                url: format!("nats://127.0.0.1:{p}"),
                _dir: dir,
            }
        })
        .collect()
}

/// Polls `f` until it returns `Some`, or panics after `secs` naming `what`.
pub async fn until<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The same for code that cannot wait asynchronously: whether `f` came to hold within `secs`.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}
