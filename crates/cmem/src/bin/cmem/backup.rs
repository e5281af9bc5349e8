//! `cmem backup DIR` and `cmem restore DIR`.

use std::path::Path;
use std::process::ExitCode;

use crate::{DataArg, EXIT_CONFIG, EXIT_RUNTIME, Failure, data_dir, report};
use cmem::config::STATE_DIR;
use cmem::memory::{Memory, MemoryError, OpenOptions};

/// `cmem backup DIR`
pub(crate) fn backup_cmd(dest: &Path, data: &DataArg) -> ExitCode {
    let dir = match data_dir(data) {
        Ok(d) => d,
        Err(code) => return code,
    };
    report(
        data.json,
        cmem::ops::backup::backup(&dir.join(STATE_DIR), dest),
        |m| {
            format!(
                "backed up {} to {}: journal epoch {} up to event {}",
                m.files.join(", "),
                dest.display(),
                m.epoch,
                m.head
            )
        },
    )
}

/// `cmem restore DIR`: refused while a server (or `cmem index`) holds the folder's index.
pub(crate) fn restore_cmd(from: &Path, data: &DataArg) -> ExitCode {
    let dir = match data_dir(data) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let probe = OpenOptions {
        threads: 1,
        history_max: 0,
        ..Default::default()
    };
    match Memory::open(&dir, &probe) {
        Ok(m) => drop(m),
        Err(e @ MemoryError::Locked(_)) => {
            eprintln!(
                "error: {e}; stop the server before restoring (a restore replaces the journal it is writing)"
            );
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    }
    report(
        data.json,
        cmem::ops::backup::restore(&dir.join(STATE_DIR), from),
        |r| {
            format!(
                "restored the backup of {} (events up to {}); the journal's new epoch is {}; clients that read past event {} get a resync{}",
                r.from.created_at,
                r.from.head,
                r.epoch,
                r.from.head,
                r.previous
                    .as_ref()
                    .map(|p| format!("; the files that were in place are in {}", p.display()))
                    .unwrap_or_default()
            )
        },
    )
}

impl Failure for cmem::ops::backup::BackupError {
    fn is_failure(&self) -> bool {
        !matches!(self, cmem::ops::backup::BackupError::Refused(_))
    }
}
