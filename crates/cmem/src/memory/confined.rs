//! Reading a file of the data folder without ever reading outside it.
//!
//! The folder may hold symbolic links, and a client with write access to it (or anyone who can
//! drop a file there) could point one at `/etc/passwd` or re-point it while the server runs.
//! The index must only ever contain the folder's own files, so every read the indexer makes
//! goes through [`open`]: the path must reach a regular file with no link at any level (the
//! canonical path is the path itself), the last component is opened without following a link,
//! and what was opened is checked again afterwards (same file as the path now names), so a link
//! swapped in between the check and the open is caught too. Links inside the folder are skipped
//! as well: the full walk does not follow them either.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;

/// Why a file was not read.
#[derive(Debug)]
pub enum Refused {
    /// Gone or unreadable.
    Io(std::io::Error),
    /// A folder, a FIFO, a device: not a regular file.
    NotAFile,
    /// A symbolic link at some level, or the file changed identity while being opened.
    OutsideOrLinked,
}

/// Whether `path` (absolute, under the canonical `root`) names a regular file reached without
/// any symbolic link.
fn unlinked(root: &Path, path: &Path) -> Result<(), Refused> {
    let canon = std::fs::canonicalize(path).map_err(Refused::Io)?;
    if canon.starts_with(root) && canon.components().eq(path.components()) {
        Ok(())
    } else {
        Err(Refused::OutsideOrLinked)
    }
}

/// Opens without following a link in the last component (and without blocking on a FIFO).
#[cfg(unix)]
fn open_nofollow(path: &Path) -> Result<File, Refused> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                Refused::OutsideOrLinked // it became a link after the check
            } else {
                Refused::Io(e)
            }
        })
}

#[cfg(not(unix))]
fn open_nofollow(path: &Path) -> Result<File, Refused> {
    File::open(path).map_err(Refused::Io)
}

/// The opened file is the one `path` names now (unix: same device and inode).
#[cfg(unix)]
fn same_file(opened: &Metadata, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .is_ok_and(|now| now.dev() == opened.dev() && now.ino() == opened.ino())
}

#[cfg(not(unix))]
fn same_file(opened: &Metadata, path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|now| now.is_file() && now.len() == opened.len())
}

/// Opens `path` for reading if it is a regular file of the folder `root` reached without any
/// symbolic link, and gives its metadata as opened.
pub fn open(root: &Path, path: &Path) -> Result<(File, Metadata), Refused> {
    unlinked(root, path)?;
    let file = open_nofollow(path)?;
    let meta = file.metadata().map_err(Refused::Io)?;
    if !meta.is_file() {
        return Err(Refused::NotAFile);
    }
    // a directory on the way may have been swapped for a link between the check and the open
    unlinked(root, path)?;
    if !same_file(&meta, path) {
        return Err(Refused::OutsideOrLinked);
    }
    Ok((file, meta))
}

/// Reads at most `max` bytes of an opened file (one more tells the caller it was larger).
pub fn read_capped(file: File, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn only_the_folders_own_files_are_opened() {
        let outside = tempfile::tempdir().unwrap();
        let secret = std::fs::canonicalize(outside.path()).unwrap();
        std::fs::write(secret.join("passwd"), "root:x:0:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/own.txt"), "mine").unwrap();
        symlink(secret.join("passwd"), root.join("x.txt")).unwrap();
        symlink(&secret, root.join("linkdir")).unwrap();
        symlink(root.join("sub/own.txt"), root.join("inner.txt")).unwrap();
        symlink(root.join("sub"), root.join("innerdir")).unwrap();

        let (f, meta) = open(&root, &root.join("sub/own.txt")).unwrap();
        assert_eq!(meta.len(), 4);
        assert_eq!(read_capped(f, 100).unwrap(), b"mine");
        for linked in ["x.txt", "linkdir/passwd", "inner.txt", "innerdir/own.txt"] {
            assert!(
                matches!(
                    open(&root, &root.join(linked)),
                    Err(Refused::OutsideOrLinked)
                ),
                "{linked}"
            );
        }
        assert!(matches!(
            open(&root, &root.join("sub")),
            Err(Refused::NotAFile)
        ));
        assert!(matches!(
            open(&root, &root.join("missing")),
            Err(Refused::Io(_))
        ));
    }

    #[test]
    fn reads_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(root.join("big"), vec![b'a'; 1000]).unwrap();
        let (f, _) = open(&root, &root.join("big")).unwrap();
        assert_eq!(read_capped(f, 10).unwrap().len(), 11);
    }
}
