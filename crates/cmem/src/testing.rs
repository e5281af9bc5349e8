//! What tests share: NATS servers with JetStream for the cluster engines' suites (the
//! journal's and the team store's). Debian's `nats-server`; CI installs it. Unix only: the
//! Windows build runs its tests under Wine, which cannot start it.

use std::time::Duration;

/// A NATS server with JetStream on a free loopback port, killed when dropped.
pub(crate) struct Nats {
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

pub(crate) fn nats() -> Nats {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect(
            "nats-server is needed for the JetStream tests (Debian: apt-get install nats-server)",
        );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Nats {
        child,
        url: format!("nats://127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// Three NATS servers clustered on loopback, JetStream on each (a stream with 3 replicas
/// lives on all of them).
pub(crate) fn nats_cluster() -> Vec<Nats> {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free(), free())).collect();
    let routes = ports
        .iter()
        .map(|(_, c)| format!("nats://127.0.0.1:{c}"))
        .collect::<Vec<_>>()
        .join(",");
    ports
        .iter()
        .enumerate()
        .map(|(i, (p, c))| {
            let dir = tempfile::tempdir().unwrap();
            let child = std::process::Command::new("nats-server")
                .args(["-js", "-a", "127.0.0.1", "-p", &p.to_string()])
                .args(["-n", &format!("n{i}"), "--cluster_name", "cmem-test"])
                .args([
                    "--cluster",
                    &format!("nats://127.0.0.1:{c}"),
                    "--routes",
                    &routes,
                ])
                .arg("-sd")
                .arg(dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("nats-server is needed for the JetStream tests");
            Nats {
                child,
                url: format!("nats://127.0.0.1:{p}"),
                _dir: dir,
            }
        })
        .collect()
}
