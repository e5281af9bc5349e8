//! `cmem backup DIR` and `cmem restore DIR`: a consistent copy of the server's state, taken
//! while it runs, and putting one back.
//!
//! **What is copied.** The journal, the teams database (users, tokens, workspaces, messages,
//! notifications, documents) and the searches history, each with SQLite's `VACUUM INTO`: one
//! read transaction, so each file is a consistent snapshot even while the server writes, and
//! every event acknowledged before the backup started is in it. The config file is copied as
//! it is. The index is not: it is rebuilt from the data folder, which a backup of the state does
//! not cover (back the folder itself up as you would any folder). `manifest.json` records what
//! was copied, the journal's epoch and its head.
//!
//! **Restoring** refuses while a server (or `cmem index`) runs on the folder. The files in
//! place are moved aside to `.collective-memory/before-restore-<time>/`, never deleted, then
//! the copies are put in and the journal gets a new epoch (`journal::renew_epoch`): the ids
//! after the backup's head will be given again to different events, so every client that read
//! past it must get a `resync`, not a replay of other events under ids it has seen. Clients
//! that resume with a bare id (no epoch) cannot be told; see the README.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::journal;

/// The databases of the state folder a backup holds, in the order they are copied.
const DATABASES: [&str; 3] = ["journal.sqlite3", "teams.sqlite3", "history.sqlite3"];

/// The config file, relative to the state folder.
const CONFIG: &str = "config/cmem.toml";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{0}")]
    Journal(#[from] crate::journal::JournalError),
    #[error("{0}")]
    Refused(String),
}

/// What a backup holds; written as `manifest.json` beside the copies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub created_at: String,
    pub cmem_version: String,
    /// The journal's epoch and last id at the backup.
    pub epoch: String,
    pub head: u64,
    /// Files copied, relative to the state folder.
    pub files: Vec<String>,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    pub from: Manifest,
    /// The journal's epoch from now on.
    pub epoch: String,
    /// Where the files that were in place went.
    pub previous: Option<PathBuf>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sql(path: &Path) -> impl FnOnce(rusqlite::Error) -> BackupError + '_ {
    move |source| BackupError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies the state of `state_dir` (`<data>/.collective-memory`) into `dest`, which must not
/// exist or be empty. Safe while a server runs.
pub fn backup(state_dir: &Path, dest: &Path) -> Result<Manifest, BackupError> {
    if !state_dir.join(DATABASES[0]).exists() {
        return Err(BackupError::Refused(format!(
            "no journal in {}: is this the data folder of a cmem server?",
            state_dir.display()
        )));
    }
    if dest.exists() && std::fs::read_dir(dest).map_err(io(dest))?.next().is_some() {
        return Err(BackupError::Refused(format!(
            "{} is not empty; back up into a new folder",
            dest.display()
        )));
    }
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    let mut files = Vec::new();
    for name in DATABASES {
        let src = state_dir.join(name);
        if !src.exists() {
            continue;
        }
        let conn = Connection::open(&src).map_err(sql(&src))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(sql(&src))?;
        let out = dest.join(name);
        let target = out.to_str().ok_or_else(|| {
            BackupError::Refused(format!("{} is not a UTF-8 path", out.display()))
        })?;
        conn.execute("VACUUM INTO ?1", [target])
            .map_err(sql(&src))?;
        files.push(name.to_string());
    }
    let config = state_dir.join(CONFIG);
    if config.exists() {
        let out = dest.join(CONFIG);
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        std::fs::copy(&config, &out).map_err(io(&config))?;
        files.push(CONFIG.to_string());
    }
    let (epoch, head) = journal::describe(&dest.join(DATABASES[0]))?;
    let manifest = Manifest {
        format: 1,
        created_at: crate::clock::now_rfc3339(),
        cmem_version: env!("CARGO_PKG_VERSION").to_string(),
        epoch,
        head,
        files,
    };
    write_manifest(dest, &manifest)?;
    Ok(manifest)
}

fn write_manifest(dest: &Path, m: &Manifest) -> Result<(), BackupError> {
    let path = dest.join("manifest.json");
    let text = serde_json::to_string_pretty(m)
        .map_err(|e| BackupError::Refused(format!("manifest: {e}")))?;
    std::fs::write(&path, text).map_err(io(&path))
}

/// Reads and checks a backup folder: its manifest, and every database in it.
pub fn check(from: &Path) -> Result<Manifest, BackupError> {
    let path = from.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        BackupError::Refused(format!(
            "{} is not a cmem backup (no readable manifest.json: {e})",
            from.display()
        ))
    })?;
    let m: Manifest = serde_json::from_str(&text)
        .map_err(|e| BackupError::Refused(format!("{}: {e}", path.display())))?;
    if m.format != 1 {
        return Err(BackupError::Refused(format!(
            "backup format {} is not one this cmem reads (1)",
            m.format
        )));
    }
    if !m.files.iter().any(|f| f == DATABASES[0]) {
        return Err(BackupError::Refused("the backup holds no journal".into()));
    }
    for f in &m.files {
        if !DATABASES.contains(&f.as_str()) && f != CONFIG {
            return Err(BackupError::Refused(format!(
                "the manifest lists `{f}`, which is not a file of the state folder"
            )));
        }
        let p = from.join(f);
        if f.ends_with(".sqlite3") {
            let conn = Connection::open_with_flags(&p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(sql(&p))?;
            let ok: String = conn
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .map_err(sql(&p))?;
            if ok != "ok" {
                return Err(BackupError::Refused(format!(
                    "{} fails SQLite's integrity check: {ok}",
                    p.display()
                )));
            }
        } else if !p.is_file() {
            return Err(BackupError::Refused(format!("{} is missing", p.display())));
        }
    }
    Ok(m)
}

/// Puts the backup in `from` in place of the state in `state_dir`. The caller makes sure no
/// server runs on it. The journal gets a new epoch.
pub fn restore(state_dir: &Path, from: &Path) -> Result<Restored, BackupError> {
    let manifest = check(from)?;
    std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    // what is in place goes aside, with SQLite's side files (a stale -wal would be applied to
    // the restored database)
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let aside = state_dir.join(format!("before-restore-{stamp}"));
    let mut moved = false;
    // the config file is replaced only by one from the backup
    let config = manifest.files.iter().any(|f| f == CONFIG);
    for name in DATABASES
        .iter()
        .flat_map(|d| [d.to_string(), format!("{d}-wal"), format!("{d}-shm")])
        .chain(config.then(|| CONFIG.to_string()))
    {
        let p = state_dir.join(&name);
        if p.exists() {
            let to = aside.join(&name);
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir).map_err(io(dir))?;
            }
            std::fs::rename(&p, &to).map_err(io(&p))?;
            moved = true;
        }
    }
    for f in &manifest.files {
        let to = state_dir.join(f);
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        std::fs::copy(from.join(f), &to).map_err(io(&to))?;
    }
    let epoch = journal::renew_epoch(&state_dir.join(DATABASES[0]))?;
    Ok(Restored {
        from: manifest,
        epoch,
        previous: moved.then_some(aside),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restored_journal_has_a_new_epoch_everywhere() {
        let state = tempfile::tempdir().unwrap();
        let db = state.path().join("journal.sqlite3");
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE events (id INTEGER PRIMARY KEY, type TEXT NOT NULL, scope TEXT NOT NULL, ts_ms INTEGER NOT NULL, body TEXT NOT NULL);
             INSERT INTO meta VALUES ('epoch', 'old'), ('head', '2');
             INSERT INTO events VALUES (1, 'a', 'global', 0, '{\"id\":1,\"epoch\":\"old\",\"type\":\"a\",\"scope\":\"global\",\"ts\":\"t\",\"data\":{\"epoch\":\"old\",\"n\":1.5}}');
             INSERT INTO events VALUES (2, 'b', 'global', 0, '{\"id\":2,\"epoch\":\"old\",\"type\":\"b\",\"scope\":\"global\",\"ts\":\"t\",\"data\":null}');",
        )
        .unwrap();
        drop(conn);
        let copy = tempfile::tempdir().unwrap();
        let dest = copy.path().join("b");
        let m = backup(state.path(), &dest).unwrap();
        assert_eq!((m.epoch.as_str(), m.head), ("old", 2));
        assert!(
            backup(state.path(), &dest).is_err(),
            "a non-empty folder is refused"
        );
        let r = restore(state.path(), &dest).unwrap();
        assert_ne!(r.epoch, "old");
        assert!(
            r.previous
                .as_ref()
                .unwrap()
                .join("journal.sqlite3")
                .exists()
        );
        let (epoch, head) = journal::describe(&db).unwrap();
        assert_eq!((epoch.as_str(), head), (r.epoch.as_str(), 2));
        let conn = Connection::open(&db).unwrap();
        let body: String = conn
            .query_row("SELECT body FROM events WHERE id = 1", [], |r| r.get(0))
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["epoch"], r.epoch.as_str());
        assert_eq!(
            v["data"]["epoch"], "old",
            "data is the publisher's, untouched"
        );
        assert_eq!(v["data"]["n"], 1.5);
        assert!(
            check(state.path()).is_err(),
            "a state folder is not a backup"
        );
    }
}
