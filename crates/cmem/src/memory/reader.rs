//! Reading one document of the data folder for a client (the web app's viewer, and later the
//! MCP server's `read_document`), under the same rules as the index: a relative path with no
//! `..`, nothing hidden (so never the server's own state in `.collective-memory/`, nor `.git/`),
//! no symbolic link at any level (opened through [`super::confined`]), a text file no larger
//! than `index_max_file_bytes`.

use std::path::{Component, Path};

use serde::Serialize;

use super::confined::{self, Refused};

/// A text file of the data folder.
#[derive(Debug, Serialize)]
pub struct Document {
    pub path: String,
    pub text: String,
    pub size: u64,
    pub last_modified: Option<String>,
}

/// Why a document was not read; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    BadPath(String),
    #[error("there is no file `{0}` in the data folder")]
    NotFound(String),
    #[error(
        "`{0}` is reached through a symbolic link or changed while being opened; only the data folder's own files are served"
    )]
    Linked(String),
    #[error("`{path}` is larger than {max} bytes (index_max_file_bytes)")]
    TooLarge { path: String, max: u64 },
    #[error("`{0}` is not a text file")]
    NotText(String),
    #[error("`{0}` is a folder or a special file, not a document")]
    NotAFile(String),
    #[error("`{path}`: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Checks a client's relative path: the reasons are the ones `POST /system/reindex` gives, plus
/// hidden files.
pub fn check(rel: &str) -> Result<(), ReadError> {
    let bad = |why: &str| Err(ReadError::BadPath(format!("path `{rel}` {why}")));
    if rel.is_empty() {
        return Err(ReadError::BadPath(
            "path is required: a file's path relative to the data folder, as search results give it"
                .into(),
        ));
    }
    if rel.len() > 4096 || rel.contains('\0') {
        return bad("is not a usable path");
    }
    if rel.ends_with('/') || rel.ends_with('\\') {
        return bad("names a folder; give a file's path");
    }
    let p = Path::new(rel);
    if p.is_absolute() || rel.starts_with('/') || rel.starts_with('\\') || rel.contains(':') {
        return bad("must be relative to the data folder");
    }
    for c in p.components() {
        match c {
            Component::ParentDir | Component::Prefix(_) | Component::RootDir => {
                return bad("may not contain `..`");
            }
            Component::Normal(s) if s.to_string_lossy().starts_with('.') => {
                return bad("names a hidden file or folder, which the memory does not cover");
            }
            Component::Normal(s) if s.len() > 255 => {
                return bad("has a name longer than 255 bytes, which no file system here allows");
            }
            _ => {}
        }
    }
    Ok(())
}

/// Reads `rel` from the folder `root` (canonical).
pub fn read(root: &Path, rel: &str, max_bytes: u64) -> Result<Document, ReadError> {
    check(rel)?;
    let full = root.join(rel);
    let (file, meta) = confined::open(root, &full).map_err(|e| match e {
        Refused::OutsideOrLinked => ReadError::Linked(rel.to_string()),
        Refused::NotAFile => ReadError::NotAFile(rel.to_string()),
        // `file.md/x`: a file on the way where a folder should be
        Refused::Io(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            ReadError::NotFound(rel.to_string())
        }
        // Windows refuses to open a folder as a file
        Refused::Io(_) if std::fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) => {
            ReadError::NotAFile(rel.to_string())
        }
        Refused::Io(source) => ReadError::Io {
            path: rel.to_string(),
            source,
        },
    })?;
    if meta.len() > max_bytes {
        return Err(ReadError::TooLarge {
            path: rel.to_string(),
            max: max_bytes,
        });
    }
    let bytes = confined::read_capped(file, max_bytes).map_err(|source| ReadError::Io {
        path: rel.to_string(),
        source,
    })?;
    if bytes.len() as u64 > max_bytes {
        return Err(ReadError::TooLarge {
            path: rel.to_string(),
            max: max_bytes,
        });
    }
    if bytes.contains(&0) {
        return Err(ReadError::NotText(rel.to_string()));
    }
    let text = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    let last_modified = meta
        .modified()
        .ok()
        .map(|t| crate::clock::rfc3339(chrono::DateTime::<chrono::Utc>::from(t)));
    Ok(Document {
        path: rel.to_string(),
        size: meta.len(),
        text,
        last_modified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked_before_anything_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("notes")).unwrap();
        std::fs::create_dir_all(root.join(".collective-memory")).unwrap();
        std::fs::write(root.join("notes/a.md"), "# A\nhello").unwrap();
        std::fs::write(root.join(".collective-memory/teams.sqlite3"), "secret").unwrap();
        std::fs::write(root.join("notes/bin.dat"), [0u8, 1, 2]).unwrap();
        std::fs::write(root.join("big.txt"), "x".repeat(100)).unwrap();
        let doc = read(&root, "notes/a.md", 1000).unwrap();
        assert_eq!((doc.text.as_str(), doc.size), ("# A\nhello", 9));
        let err = |rel: &str, max| read(&root, rel, max).unwrap_err().to_string();
        assert!(err("../etc/passwd", 1000).contains("`..`"));
        assert!(err("/etc/passwd", 1000).contains("relative"));
        assert!(err(".collective-memory/teams.sqlite3", 1000).contains("hidden"));
        assert!(err("notes/../../x", 1000).contains("`..`"));
        assert!(err("notes/missing.md", 1000).contains("no file"));
        assert!(err("notes/bin.dat", 1000).contains("not a text file"));
        assert!(err("big.txt", 10).contains("larger than 10 bytes"));
        assert!(err("", 10).contains("required"));
        assert!(err("notes", 1000).contains("folder"));
        assert!(err("notes/", 1000).contains("folder"));
        assert!(err("notes/a.md/x", 1000).contains("no file"));
        assert!(err(&"n".repeat(300), 1000).contains("255 bytes"));
    }

    #[cfg(unix)]
    #[test]
    fn a_link_out_of_the_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.txt"), root.join("link.txt"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("dir")).unwrap();
        let e = read(&root, "link.txt", 1000).unwrap_err();
        assert!(matches!(e, ReadError::Linked(_)), "{e}");
        let e = read(&root, "dir/secret.txt", 1000).unwrap_err();
        assert!(matches!(e, ReadError::Linked(_)), "{e}");
    }
}
