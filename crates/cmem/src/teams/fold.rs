//! Folding a shared document's stored updates into one: the helper beneath the team store
//! that keeps a document's history short. Part of applying a change (`store::apply`), so
//! every copy of team state folds alike; it knows Yjs and SQLite rows, nothing of who asked.

use rusqlite::params;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use super::TeamsError;

/// Stored updates of one document before they are folded into one.
pub const COMPACT_AFTER: i64 = 200;

/// Folds a document's stored updates into one when there are more than [`COMPACT_AFTER`], so
/// its history does not grow without bound. Part of applying a change, so every copy of team
/// state (each node of a cluster) keeps its own rows short.
pub(crate) fn compact_stored(
    db: &rusqlite::Connection,
    workspace: &str,
    name: &str,
) -> Result<(), TeamsError> {
    let stored: i64 = db.query_row(
        "SELECT COUNT(*) FROM doc_updates WHERE workspace = ?1 AND doc = ?2",
        params![workspace, name],
        |r| r.get(0),
    )?;
    if stored <= COMPACT_AFTER {
        return Ok(());
    }
    let updates: Vec<(i64, Vec<u8>)> = db
        .prepare(
            "SELECT seq, data FROM doc_updates WHERE workspace = ?1 AND doc = ?2 ORDER BY seq",
        )?
        .query_map(params![workspace, name], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    // only what was folded is deleted: an update that cannot be read stays stored as it is
    // (a later version may read it), and is reported
    let (full, folded) = guarded("stored document", || {
        let doc = Doc::new();
        let mut folded = Vec::with_capacity(updates.len());
        {
            let mut txn = doc.transact_mut();
            for (seq, u) in &updates {
                let applied = Update::decode_v1(u)
                    .map_err(|e| e.to_string())
                    .and_then(|u| txn.apply_update(u).map_err(|e| e.to_string()));
                match applied {
                    Ok(()) => folded.push(*seq),
                    Err(e) => tracing::error!(
                        workspace,
                        doc = name,
                        seq,
                        error = %e,
                        "a stored document update cannot be read; it is kept, not folded"
                    ),
                }
            }
        }
        let full = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        (full, folded)
    })?;
    let mut delete =
        db.prepare("DELETE FROM doc_updates WHERE workspace = ?1 AND doc = ?2 AND seq = ?3")?;
    for seq in &folded {
        delete.execute(params![workspace, name, seq])?;
    }
    db.execute(
        "INSERT INTO doc_updates (workspace, doc, data) VALUES (?1, ?2, ?3)",
        params![workspace, name, full],
    )?;
    tracing::debug!(
        workspace,
        doc = name,
        folded = folded.len(),
        "document compacted"
    );
    Ok(())
}

/// Runs yrs on client bytes with panics caught: yrs 0.28 asserts (in debug builds) that a
/// client id fits 53 bits, and an update can carry any id. A panic is the client's bad input.
pub(crate) fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, TeamsError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| {
        TeamsError::Invalid(format!("{what} is not valid Yjs (the decoder refused it)"))
    })
}
