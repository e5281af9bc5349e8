//! Where the server of a data folder listens, for the tools that look for it (`cmem doctor
//! --data`, `cmem mcp`): the server records its address in the state folder when it starts
//! listening and removes the record when it stops. The configured `bind` is not enough: the
//! port may be 0 (any free one), or taken and moved on from with `port_fallback`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The record's file in the state folder.
pub const FILE: &str = "server.json";

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    url: String,
    pid: u32,
    started_at: String,
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The URL a local client uses for a server bound to `addr` (an unspecified address is
/// reached on loopback).
pub fn local_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v) if v.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(v) if v.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(v) => format!("[{v}]"),
        ip => ip.to_string(),
    };
    format!("http://{ip}:{}", addr.port())
}

/// Records that this process serves the folder at `addr`.
pub fn record(state_dir: &Path, addr: SocketAddr) -> std::io::Result<()> {
    let r = Record {
        url: local_url(addr),
        pid: std::process::id(),
        started_at: crate::clock::now_rfc3339(),
    };
    std::fs::create_dir_all(state_dir)?;
    let tmp = state_dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(&r).unwrap_or_default())?;
    std::fs::rename(tmp, path(state_dir))
}

/// Removes the record, if it is this process's.
pub fn forget(state_dir: &Path) {
    let mine = std::fs::read(path(state_dir))
        .ok()
        .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
        .is_some_and(|r| r.pid == std::process::id());
    if mine {
        let _ = std::fs::remove_file(path(state_dir));
    }
}

/// The URL the folder's server recorded, if any (it may have died without removing it: the
/// caller checks that something answers there).
pub fn recorded_url(state_dir: &Path) -> Option<String> {
    let bytes = std::fs::read(path(state_dir)).ok()?;
    let r: Record = serde_json::from_slice(&bytes).ok()?;
    (r.url.starts_with("http://") && r.url.len() < 300).then_some(r.url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_read_back_and_removed_by_its_writer() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(recorded_url(dir.path()), None);
        record(dir.path(), "0.0.0.0:8123".parse().unwrap()).unwrap();
        assert_eq!(
            recorded_url(dir.path()).as_deref(),
            Some("http://127.0.0.1:8123")
        );
        forget(dir.path());
        assert_eq!(recorded_url(dir.path()), None);
        assert_eq!(local_url("[::1]:9".parse().unwrap()), "http://[::1]:9");
    }
}
