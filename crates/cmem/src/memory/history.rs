//! The searches history: every search (query, hit count, time taken, session, and who searched)
//! kept in SQLite at `<data>/.collective-memory/history.sqlite3`, so `GET /prompts/similar` can
//! offer earlier queries that resemble a new one. What someone searched for is theirs: a user is
//! offered their own earlier searches only, unless `search_history_shared` says the team shares
//! them ([`Whose`]).
//!
//! Similarity is the overlap of character trigrams (Jaccard), computed here over the most
//! recent distinct queries. That catches shared words, word order changes and typos, needs no
//! second index, and at the history's bounded size (`search_history_max`) costs well under a
//! millisecond per thousand queries. With the embedding model, each search also keeps its
//! question's vector, and an earlier query near in meaning is offered too ("undo my last
//! commit" for "revert the previous change"): the similarity is the higher of the two.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, params};
use serde::Serialize;

use super::MemoryError;

/// Distinct recent queries compared against a new one.
const CANDIDATES: usize = 5_000;

/// Below this similarity a query is not offered.
const MIN_SIMILARITY: f64 = 0.2;

/// Below this cosine similarity a query is not offered for its meaning (paraphrases of one
/// question score about 0.6 and up with the model; unrelated questions below 0.3).
const MIN_MEANING: f64 = 0.55;

/// A question's vector and the model that made it.
pub type Meaning<'a> = Option<(&'a str, &'a [f32])>;

/// An earlier query like the one asked about.
#[derive(Debug, Serialize)]
pub struct Similar {
    pub query: String,
    /// 0–1, 1 for the same text (ignoring case and spacing).
    pub similarity: f64,
    /// Hits the latest run of this query found.
    pub results: u64,
    /// How often it was searched.
    pub times: u64,
    pub last_searched: String,
    /// What makes it similar: `words` (shared letters) or `meaning` (the embedding model).
    pub by: &'static str,
}

/// Whose searches a lookup may offer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Whose<'a> {
    /// Everyone's (`search_history_shared`), including searches recorded before owners were.
    Everyone,
    /// One owner's: a user's id (never reused, so a name given again to someone else
    /// inherits nothing), or `""` for the local user of an open server.
    Owner(&'a str),
}

/// The history table; `max == 0` keeps nothing.
pub struct History {
    conn: Option<Mutex<Connection>>,
    max: u64,
}

impl History {
    pub fn open(state_dir: &Path, max: u64) -> Result<History, MemoryError> {
        if max == 0 {
            return Ok(History { conn: None, max });
        }
        let conn = Connection::open(state_dir.join("history.sqlite3"))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL; -- losing the last searches to a power cut is fine
             PRAGMA busy_timeout = 2000;
             CREATE TABLE IF NOT EXISTS searches (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 query TEXT NOT NULL,
                 normalized TEXT NOT NULL,
                 results INTEGER NOT NULL,
                 search_ms REAL NOT NULL,
                 session TEXT,
                 ts TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS searches_normalized ON searches(normalized);",
        )?;
        // who searched: added later, so older files gain the column (their rows have no
        // owner and are offered to nobody unless the history is shared)
        let has_owner: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('searches') WHERE name = 'owner')",
            [],
            |r| r.get(0),
        )?;
        if !has_owner {
            conn.execute_batch("ALTER TABLE searches ADD COLUMN owner TEXT")?;
        }
        conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS searches_owner ON searches(owner, normalized)",
        )?;
        // the question's vector and its model: added later too (older rows have none)
        let has_vector: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('searches') WHERE name = 'vector')",
            [],
            |r| r.get(0),
        )?;
        if !has_vector {
            conn.execute_batch(
                "ALTER TABLE searches ADD COLUMN vector BLOB;
                 ALTER TABLE searches ADD COLUMN vector_model TEXT;",
            )?;
        }
        // owners were user names before they were user ids (version 1): those rows are
        // detached (kept for the shared history, offered to no one as their own), since a
        // name may since have been given to someone else
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version < 1 {
            conn.execute_batch(
                "BEGIN;
                 UPDATE searches SET owner = NULL WHERE owner IS NOT NULL AND owner <> '';
                 PRAGMA user_version = 1;
                 COMMIT;",
            )?;
        }
        Ok(History {
            conn: Some(Mutex::new(conn)),
            max,
        })
    }

    /// Forgets every search of `owner` (a removed user's id); returns how many.
    pub fn forget(&self, owner: &str) -> Result<usize, MemoryError> {
        let Some(conn) = &self.conn else {
            return Ok(0);
        };
        let conn = conn.lock().map_err(|_| MemoryError::Busy)?;
        Ok(conn.execute("DELETE FROM searches WHERE owner = ?1", [owner])?)
    }

    /// Records one search by `owner` (a user's id, `""` for the local user of an open
    /// server) and trims the table to `max` rows.
    pub fn record(
        &self,
        query: &str,
        results: u64,
        search_ms: f64,
        session: Option<&str>,
        owner: &str,
    ) -> Result<(), MemoryError> {
        self.record_with(query, results, search_ms, session, owner, None)
    }

    /// [`History::record`], keeping the question's vector when the search made one.
    pub fn record_with(
        &self,
        query: &str,
        results: u64,
        search_ms: f64,
        session: Option<&str>,
        owner: &str,
        meaning: Meaning<'_>,
    ) -> Result<(), MemoryError> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        let (model, vector) = match meaning {
            Some((model, v)) => (
                Some(model),
                Some(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()),
            ),
            None => (None, None),
        };
        let conn = conn.lock().map_err(|_| MemoryError::Busy)?;
        conn.execute(
            "INSERT INTO searches (query, normalized, results, search_ms, session, ts, owner, vector, vector_model)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                query,
                normalize(query),
                results as i64,
                search_ms,
                session,
                crate::clock::now_rfc3339(),
                owner,
                vector,
                model
            ],
        )?;
        conn.execute(
            "DELETE FROM searches WHERE id <= (SELECT MAX(id) FROM searches) - ?1",
            [self.max as i64],
        )?;
        Ok(())
    }

    /// Earlier queries of `whose` resembling `q`, most similar first.
    pub fn similar(
        &self,
        q: &str,
        limit: usize,
        whose: Whose<'_>,
    ) -> Result<Vec<Similar>, MemoryError> {
        self.similar_to(q, limit, whose, None)
    }

    /// [`History::similar`], also by meaning when `meaning` is `q`'s vector: an earlier query
    /// whose vector (made by the same model) is near enough is offered as well.
    pub fn similar_to(
        &self,
        q: &str,
        limit: usize,
        whose: Whose<'_>,
        meaning: Meaning<'_>,
    ) -> Result<Vec<Similar>, MemoryError> {
        let owner = match whose {
            Whose::Everyone => None,
            Whose::Owner(o) => Some(o),
        };
        let Some(conn) = &self.conn else {
            return Ok(Vec::new());
        };
        let target = trigrams(&normalize(q));
        type Row = (
            String,
            String,
            u64,
            u64,
            String,
            Option<Vec<u8>>,
            Option<String>,
        );
        let rows: Vec<Row> = {
            let conn = conn.lock().map_err(|_| MemoryError::Busy)?;
            let mut stmt = conn.prepare(
                "SELECT s.query, s.normalized, s.results, g.times, s.ts, s.vector, s.vector_model
                 FROM (SELECT normalized, MAX(id) AS last, COUNT(*) AS times
                       FROM searches WHERE ?2 IS NULL OR owner = ?2
                       GROUP BY normalized ORDER BY last DESC LIMIT ?1) g
                 JOIN searches s ON s.id = g.last",
            )?;
            let mapped = stmt.query_map(params![CANDIDATES as i64, owner], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get::<_, i64>(2)? as u64,
                    r.get::<_, i64>(3)? as u64,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?;
            mapped.collect::<Result<_, _>>()?
        };
        let same = normalize(q);
        let mut out: Vec<Similar> = rows
            .into_iter()
            .filter_map(|(query, normalized, results, times, ts, vector, model)| {
                let words = jaccard(&target, &trigrams(&normalized));
                let near = match (meaning, vector, model) {
                    (Some((want, v)), Some(bytes), Some(m))
                        if m == want && bytes.len() == v.len() * 4 && normalized != same =>
                    {
                        cosine(v, &bytes)
                    }
                    _ => 0.0,
                };
                let (similarity, by) = if near >= MIN_MEANING && near > words {
                    (near, "meaning")
                } else {
                    (words, "words")
                };
                (similarity >= MIN_SIMILARITY).then(|| Similar {
                    query,
                    similarity: (similarity * 1000.0).round() / 1000.0,
                    results,
                    times,
                    last_searched: ts,
                    by,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b.similarity
                .total_cmp(&a.similarity)
                .then(b.times.cmp(&a.times))
        });
        out.truncate(limit);
        Ok(out)
    }

    /// Rows kept.
    pub fn len(&self) -> u64 {
        let Some(conn) = &self.conn else { return 0 };
        conn.lock()
            .ok()
            .and_then(|c| {
                c.query_row("SELECT COUNT(*) FROM searches", [], |r| r.get::<_, i64>(0))
                    .ok()
            })
            .unwrap_or(0) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn enabled(&self) -> bool {
        self.max > 0
    }
}

/// Lowercase words separated by single spaces.
fn normalize(q: &str) -> String {
    q.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

fn trigrams(s: &str) -> HashSet<[char; 3]> {
    let chars: Vec<char> = format!("  {s} ").chars().collect();
    chars.windows(3).map(|w| [w[0], w[1], w[2]]).collect()
}

/// The cosine of a unit vector and one stored as little-endian f32 bytes (also a unit vector).
fn cosine(v: &[f32], bytes: &[u8]) -> f64 {
    v.iter()
        .zip(bytes.chunks_exact(4))
        .map(|(x, b)| f64::from(*x) * f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .sum()
}

fn jaccard(a: &HashSet<[char; 3]>, b: &HashSet<[char; 3]>) -> f64 {
    let union = a.union(b).count();
    if union == 0 {
        return 0.0;
    }
    a.intersection(b).count() as f64 / union as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_queries_rank_above_unrelated_ones() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path(), 100).unwrap();
        h.record("websocket reconnect windows", 4, 1.0, Some("a"), "")
            .unwrap();
        h.record("WebSocket  reconnect, Windows", 5, 1.0, None, "")
            .unwrap();
        h.record("quarterly budget", 2, 1.0, None, "").unwrap();
        h.record("websoket reconect", 0, 1.0, None, "").unwrap();
        let found = h
            .similar("reconnect websocket", 10, Whose::Owner(""))
            .unwrap();
        let names: Vec<&str> = found.iter().map(|s| s.query.as_str()).collect();
        assert!(!names.contains(&"quarterly budget"), "{names:?}");
        assert!(
            names.contains(&"websoket reconect"),
            "typos still match: {names:?}"
        );
        // the two spellings of the same words are one query, searched twice
        let same = found
            .iter()
            .find(|s| s.query == "WebSocket  reconnect, Windows")
            .unwrap();
        assert_eq!(same.times, 2);
        assert_eq!(same.results, 5);
    }

    #[test]
    fn queries_near_in_meaning_are_offered_with_their_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path(), 100).unwrap();
        let unit = |v: [f32; 3]| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.map(|x| x / n)
        };
        let (near, far) = (unit([1.0, 0.2, 0.0]), unit([0.0, 0.1, 1.0]));
        h.record_with("undo my last commit", 3, 1.0, None, "", Some(("m", &near)))
            .unwrap();
        h.record_with("quarterly budget", 2, 1.0, None, "", Some(("m", &far)))
            .unwrap();
        h.record_with(
            "go back one change",
            1,
            1.0,
            None,
            "",
            Some(("other", &near)),
        )
        .unwrap();
        let q = unit([1.0, 0.0, 0.0]);
        let found = h
            .similar_to(
                "revert the previous change",
                10,
                Whose::Owner(""),
                Some(("m", &q)),
            )
            .unwrap();
        let by_meaning: Vec<&str> = found
            .iter()
            .filter(|s| s.by == "meaning")
            .map(|s| s.query.as_str())
            .collect();
        assert_eq!(by_meaning, vec!["undo my last commit"], "{found:?}");
        // without the question's vector only the words count
        assert!(
            h.similar("revert the previous change", 10, Whose::Owner(""))
                .unwrap()
                .iter()
                .all(|s| s.by == "words")
        );
    }

    #[test]
    fn history_is_bounded_and_can_be_off() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path(), 3).unwrap();
        for i in 0..10 {
            h.record(&format!("query {i}"), 1, 1.0, None, "").unwrap();
        }
        assert_eq!(h.len(), 3);
        let off = History::open(dir.path(), 0).unwrap();
        off.record("x", 1, 1.0, None, "").unwrap();
        assert!(off.similar("x", 5, Whose::Everyone).unwrap().is_empty());
    }

    #[test]
    fn each_user_is_offered_their_own_searches() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path(), 100).unwrap();
        h.record("merger plans acme", 1, 1.0, None, "alice")
            .unwrap();
        h.record("merger plans", 1, 1.0, None, "bob").unwrap();
        let names = |w| -> Vec<String> {
            h.similar("merger plans", 10, w)
                .unwrap()
                .into_iter()
                .map(|s| s.query)
                .collect()
        };
        assert_eq!(names(Whose::Owner("bob")), vec!["merger plans"]);
        assert_eq!(names(Whose::Owner("alice")), vec!["merger plans acme"]);
        assert!(names(Whose::Owner("")).is_empty());
        assert_eq!(names(Whose::Everyone).len(), 2);
    }
}
