//! Starting the servers under test: cmem (in a fresh data folder) and the peers it is measured
//! against. The runs that use them are in `runs`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::scenario::Target;

/// A server process started for a measurement; killed on drop.
pub struct Server {
    child: Child,
    pub target: Target,
    _data: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn repo_root() -> PathBuf {
    // crates/cmem-bench -> repository root
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn default_cmem_bin() -> PathBuf {
    let root = repo_root();
    let release = root.join("target/release/cmem");
    if release.exists() {
        release
    } else {
        root.join("target/debug/cmem")
    }
}

/// Starts cmem on a fresh data folder and an ephemeral port.
pub async fn start_cmem(bin: &Path, extra_env: &[(&str, &str)]) -> anyhow::Result<Server> {
    let data = tempfile::tempdir()?;
    let mut s = start_cmem_in(bin, data.path(), extra_env).await?;
    s._data = Some(data);
    Ok(s)
}

/// Starts cmem on the given data folder and an ephemeral port.
pub async fn start_cmem_in(
    bin: &Path,
    data: &Path,
    extra_env: &[(&str, &str)],
) -> anyhow::Result<Server> {
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(u) = line.split("listening on ").nth(1) {
                return Ok::<String, anyhow::Error>(u.trim().to_string());
            }
        }
        bail!("cmem exited before listening")
    })
    .await
    .context("cmem did not start")??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let pid = child.id();
    Ok(Server {
        child,
        target: Target::new("cmem", &url, None, true, pid)?,
        _data: None,
    })
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A peer server: a name and how to start it on a port.
pub struct Peer {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The peers installed by `bench/install-peers.sh` into `dir`, as far as they are there.
pub fn peers(dir: &Path) -> Vec<Peer> {
    let root = repo_root().join("bench/peers");
    let mut out = Vec::new();
    // the floor is this binary itself, so it is always there
    if let Ok(me) = std::env::current_exe() {
        out.push(Peer {
            name: "floor",
            program: me,
            args: vec!["floor-server".into()],
            env: vec![],
        });
    }
    if dir.join("node_modules/socket.io").exists() {
        out.push(Peer {
            name: "node-socket.io",
            program: PathBuf::from("node"),
            args: vec![root.join("node_server.cjs").display().to_string()],
            env: vec![(
                "NODE_PATH".into(),
                dir.join("node_modules").display().to_string(),
            )],
        });
    }
    let py = dir.join("venv/bin/python");
    if py.exists() {
        out.push(Peer {
            name: "python-socketio",
            program: py.clone(),
            args: vec![root.join("python_socketio_server.py").display().to_string()],
            env: vec![],
        });
        out.push(Peer {
            name: "flask-socketio",
            program: py,
            args: vec![root.join("flask_socketio_server.py").display().to_string()],
            env: vec![],
        });
    }
    out
}

/// Starts a peer on a free port and waits until its Socket.IO endpoint answers.
pub async fn start_peer(p: &Peer) -> anyhow::Result<Server> {
    let port = free_port()?;
    let mut cmd = Command::new(&p.program);
    cmd.args(&p.args)
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in &p.env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("start peer {}", p.name))?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let probe = format!("{base}/socket.io/?EIO=4&transport=polling");
    let mut ok = false;
    for _ in 0..200 {
        if let Ok(r) = http.get(&probe).send().await
            && r.status().is_success()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !ok {
        bail!("peer {} did not answer on {base}", p.name);
    }
    let pid = child.id();
    Ok(Server {
        child,
        target: Target::new(p.name, &base, None, false, pid)?,
        _data: None,
    })
}
