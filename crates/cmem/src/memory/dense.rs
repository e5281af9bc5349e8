//! Dense retrieval: keeps one vector per passage of every indexed document
//! ([`super::vectors`]), made by the embedding model ([`super::embed`]), and finds the
//! passages nearest in meaning to a question.
//!
//! The keyword index leads; the vectors follow it. After every commit of the keyword index
//! (an indexing run, a watcher batch) the background task compares the indexed files (path,
//! modification time, size, from the index state) with what the vectors were made from,
//! drops the vectors of files that left, and embeds the files that are new or changed —
//! newest first, one thread, pausing while an indexing run is going, so it never holds up
//! indexing or keyword search. It reports as `indexing_progress` with `phase: "embedding"`.
//! The vectors are saved to the state folder now and then and when a pass ends; a restart
//! embeds only what changed since, and a missing or damaged file is rebuilt.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use tantivy::collector::TopDocs;
use tantivy::query::TermQuery;
use tantivy::schema::IndexRecordOption;
use tantivy::{TantivyDocument, Term};

use super::embed::{EmbedError, Embedder};
use super::vectors::{DocVectors, Near, Store};
use super::{IndexTotals, Memory};
use crate::config::STATE_DIR;
use crate::envelope::{NewEvent, Scope};
use crate::hub::Hub;

/// Passages embedded per document at most; the rest of a very long file is found by keyword.
pub const MAX_PASSAGES_PER_DOC: usize = 256;

/// Characters of a passage given to the model (it reads at most 256 tokens, about 1,000
/// characters of English; the margin keeps the tokenizer's work bounded).
const MAX_PASSAGE_CHARS: usize = 2000;

/// How often a pass saves what it has embedded so far.
const SAVE_EVERY: Duration = Duration::from_secs(30);

/// How often a pass reports progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// What the vectors are doing, for `GET /system/indexing` and the status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DenseStatus {
    /// The model's id.
    pub model: String,
    /// A pass is embedding documents now.
    pub running: bool,
    /// Documents with vectors, and documents indexed (by keyword).
    pub documents: u64,
    pub documents_total: u64,
    pub passages: u64,
    /// Bytes the vectors take in memory.
    pub vector_bytes: u64,
    /// Passages embedded since start, and how long that took.
    pub embedded_passages: u64,
    pub embedding_ms: u64,
    /// Why the vector file was rebuilt at start, if it was.
    pub rebuilt: Option<String>,
    pub last_error: Option<String>,
}

/// The model, the vectors and their file.
pub struct Dense {
    pub embedder: Arc<Embedder>,
    file: PathBuf,
    pub store: RwLock<Store>,
    pub status: Mutex<DenseStatus>,
    /// Woken after each commit of the keyword index.
    pub wake: tokio::sync::Notify,
    /// One thread for background embedding; questions use every core.
    pool: Option<rayon::ThreadPool>,
}

impl std::fmt::Debug for Dense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dense").field("file", &self.file).finish()
    }
}

/// The file name a model's vectors are kept under: its id with anything but letters, digits,
/// `-`, `_` and `.` replaced.
fn file_name(model: &str) -> String {
    let safe: String = model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.bin")
}

impl Dense {
    /// Opens the vectors of `embedder`'s model under `root`'s state folder. A missing file
    /// starts empty; a damaged one (or one of another dimension) is set aside as `.bad` and
    /// rebuilt, never a failure. Vectors of another model are in another file, untouched.
    pub fn open(root: &Path, embedder: Arc<Embedder>, read_only: bool) -> Dense {
        let dir = root.join(STATE_DIR).join("vectors");
        let file = dir.join(file_name(embedder.id()));
        let dim = embedder.dim();
        let mut rebuilt = None;
        let store = match std::fs::read(&file) {
            Ok(bytes) => match Store::decode(&bytes, dim) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "the vector index is damaged; rebuilding it");
                    if !read_only {
                        let _ = std::fs::rename(&file, file.with_extension("bad"));
                    }
                    rebuilt = Some(e.to_string());
                    Store::new(dim)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Store::new(dim),
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "the vector index could not be read; rebuilding it");
                rebuilt = Some(e.to_string());
                Store::new(dim)
            }
        };
        let pool = (!read_only)
            .then(|| rayon::ThreadPoolBuilder::new().num_threads(1).build().ok())
            .flatten();
        let status = DenseStatus {
            model: embedder.id().to_string(),
            documents: store.docs.len() as u64,
            passages: store.passages() as u64,
            vector_bytes: store.vector_bytes() as u64,
            rebuilt,
            ..Default::default()
        };
        Dense {
            embedder,
            file,
            store: RwLock::new(store),
            status: Mutex::new(status),
            wake: tokio::sync::Notify::new(),
            pool,
        }
    }

    /// The vector of a question. Not cached: a question costs the model about 10 ms, and a
    /// search's time should say what a new question costs.
    pub fn query_vector(&self, q: &str) -> Result<Vec<f32>, EmbedError> {
        Ok(self
            .embedder
            .embed(&[q])?
            .into_iter()
            .next()
            .unwrap_or_default())
    }

    /// The `n` documents nearest to `q`, among those `keep` accepts.
    pub fn nearest(&self, q: &[f32], n: usize, keep: impl Fn(&str) -> bool + Sync) -> Vec<Near> {
        match self.store.read() {
            Ok(s) => s.nearest_docs(q, n, keep),
            Err(_) => Vec::new(),
        }
    }

    /// What a document is about as a whole (see [`Store::centroid`]).
    pub fn centroid(&self, path: &str) -> Option<Vec<f32>> {
        self.store.read().ok().and_then(|s| s.centroid(path))
    }

    /// When a document's vectors were made (ms since the epoch), if it has them.
    pub fn embedded_at(&self, path: &str) -> Option<u64> {
        self.store
            .read()
            .ok()
            .and_then(|s| s.docs.get(path).map(|d| d.embedded_at))
    }

    pub fn status(&self) -> DenseStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Writes the vectors to their file (a new file renamed over the old, so a crash leaves
    /// the old one or the new one, never half of one).
    pub fn save(&self) -> std::io::Result<()> {
        let bytes = match self.store.read() {
            Ok(s) => s.encode(),
            Err(_) => return Ok(()),
        };
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, &self.file)
    }

    fn set_status(&self, f: impl FnOnce(&mut DenseStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }
}

/// The text the model reads for a passage: the document's title and the passage's headings,
/// then its lines, cut to [`MAX_PASSAGE_CHARS`].
pub fn passage_text(title: &str, heading: &[String], lines: &[&str]) -> String {
    let mut t = String::with_capacity(MAX_PASSAGE_CHARS);
    t.push_str(title);
    for h in heading {
        if h != title {
            t.push_str(" › ");
            t.push_str(h);
        }
    }
    t.push('\n');
    for l in lines {
        if t.len() >= MAX_PASSAGE_CHARS {
            break;
        }
        t.push_str(l.trim());
        t.push('\n');
    }
    if t.len() > MAX_PASSAGE_CHARS {
        let mut cut = MAX_PASSAGE_CHARS;
        while !t.is_char_boundary(cut) {
            cut -= 1;
        }
        t.truncate(cut);
    }
    t
}

/// A document as the keyword index holds it.
pub(crate) struct Stored {
    pub title: String,
    pub filename: String,
    pub body: String,
    pub passages: Vec<super::passage::Passage>,
    pub modified: u64,
    pub size: u64,
}

/// The stored document at `path`, if the index has it.
pub(crate) fn stored(m: &Memory, path: &str) -> Option<Stored> {
    let f = m.fields;
    let searcher = m.reader.searcher();
    let q = TermQuery::new(
        Term::from_field_text(f.path, path),
        IndexRecordOption::Basic,
    );
    let top = searcher
        .search(&q, &TopDocs::with_limit(1).order_by_score())
        .ok()?;
    let (_, addr) = top.into_iter().next()?;
    let doc: TantivyDocument = searcher.doc(addr).ok()?;
    let text = |field| super::search::stored_text(&doc, field);
    let number = |field| super::search::stored_number(&doc, field);
    Some(Stored {
        title: text(f.title),
        filename: text(f.filename),
        passages: super::passage::decode(&text(f.passages)),
        body: text(f.body),
        modified: number(f.modified),
        size: number(f.size),
    })
}

/// The vectors of one stored document (its first [`MAX_PASSAGES_PER_DOC`] passages).
fn embed_doc(e: &Embedder, doc: &Stored) -> Result<DocVectors, EmbedError> {
    let lines: Vec<&str> = doc.body.lines().collect();
    let passages: Vec<_> = doc.passages.iter().take(MAX_PASSAGES_PER_DOC).collect();
    let texts: Vec<String> = passages
        .iter()
        .map(|p| {
            let from = p.start_line.saturating_sub(1).min(lines.len());
            let to = p.end_line.min(lines.len()).max(from);
            passage_text(&doc.title, &p.heading_path, &lines[from..to])
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors: Vec<f32> = e.embed(&refs)?.into_iter().flatten().collect();
    Ok(DocVectors::quantize(
        doc.modified,
        doc.size,
        crate::clock::now_ms(),
        passages
            .iter()
            .map(|p| (p.start_line as u32, p.end_line as u32))
            .collect(),
        &vectors,
        e.dim(),
    ))
}

/// One pass: drops the vectors of files no longer indexed and embeds the files whose vectors
/// are missing or older than their entry in the keyword index. `stop` is asked between
/// documents. Blocking; `sink` gets the progress events.
pub fn catch_up(
    m: &Memory,
    dense: &Dense,
    stop: &dyn Fn() -> bool,
    sink: &mut dyn FnMut(serde_json::Value),
) -> Result<(), super::MemoryError> {
    // indexing first: the vectors follow the keyword index, never the other way round (and
    // the run's `indexing_completed` comes before this pass says anything)
    while m.indexing_state().running && !stop() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let indexed = super::indexer::indexed_files(m)?;
    let todo: Vec<(String, u64)> = {
        let Ok(mut store) = dense.store.write() else {
            return Ok(());
        };
        store.docs.retain(|p, _| indexed.contains_key(p));
        let mut todo: Vec<(String, u64)> = indexed
            .iter()
            .filter(|(p, stamp)| {
                store
                    .docs
                    .get(*p)
                    .is_none_or(|d| (d.modified, d.size) != **stamp)
            })
            .map(|(p, (mtime, _))| (p.clone(), *mtime))
            .collect();
        // the newest first: what people are working on is what they search for
        todo.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        todo
    };
    let total = indexed.len() as u64;
    let update_counts = |dense: &Dense| {
        if let Ok(s) = dense.store.read() {
            let (docs, passages, bytes) = (s.docs.len(), s.passages(), s.vector_bytes());
            dense.set_status(|st| {
                st.documents = docs as u64;
                st.passages = passages as u64;
                st.vector_bytes = bytes as u64;
                st.documents_total = total;
            });
        }
    };
    update_counts(dense);
    if todo.is_empty() {
        return Ok(());
    }
    dense.set_status(|s| s.running = true);
    let (mut last_save, mut last_progress) = (Instant::now(), Instant::now());
    let todo_total = todo.len();
    let progress = |done: usize, current: &str| {
        json!({
            "phase": "embedding",
            "progress": (done * 100 / todo_total.max(1)) as u8,
            "current_file": current,
            "processed_files": done,
            "total_files": todo_total,
            "model": dense.embedder.id(),
        })
    };
    sink(progress(0, ""));
    let mut result = Ok(());
    for (done, (path, _)) in todo.iter().enumerate() {
        // a run that starts meanwhile goes first too
        while m.indexing_state().running && !stop() {
            std::thread::sleep(Duration::from_millis(200));
        }
        if stop() {
            break;
        }
        let Some(doc) = stored(m, path) else { continue };
        let started = Instant::now();
        let embedded = match &dense.pool {
            Some(pool) => pool.install(|| embed_doc(&dense.embedder, &doc)),
            None => embed_doc(&dense.embedder, &doc),
        };
        match embedded {
            Ok(v) => {
                let n = v.passages.len() as u64;
                if let Ok(mut s) = dense.store.write() {
                    s.docs.insert(path.clone(), v);
                }
                let ms = started.elapsed().as_millis() as u64;
                dense.set_status(|s| {
                    s.embedded_passages += n;
                    s.embedding_ms += ms;
                });
            }
            Err(e) => {
                tracing::warn!(path = %path, error = %e, "could not embed a document");
                dense.set_status(|s| s.last_error = Some(format!("{path}: {e}")));
            }
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            update_counts(dense);
            sink(progress(done + 1, path));
        }
        if last_save.elapsed() >= SAVE_EVERY {
            last_save = Instant::now();
            if let Err(e) = dense.save() {
                result = Err(e);
            }
        }
    }
    update_counts(dense);
    if let Err(e) = dense.save() {
        result = Err(e);
    }
    dense.set_status(|s| s.running = false);
    sink(progress(todo_total, ""));
    result.map_err(|source| super::MemoryError::Io {
        path: dense.file.clone(),
        source,
    })
}

/// Starts the background task that keeps the vectors in step with the keyword index, until
/// shutdown. Does nothing when the memory has no model.
pub fn start(m: Arc<Memory>, hub: Arc<Hub>) {
    if m.dense.is_none() {
        return;
    }
    let rt = tokio::runtime::Handle::current();
    tokio::spawn(async move {
        let shutdown = hub.shutdown.clone();
        // the first pass waits for the start-up indexing run: before it, the index state may
        // be empty (a first start, or an index rebuilt for a new version), and a pass would
        // take every file for gone and drop vectors that took hours to make
        while IndexTotals::get(&m.totals.runs) == 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
        loop {
            let (m2, hub2, rt2, stop) = (m.clone(), hub.clone(), rt.clone(), shutdown.clone());
            let pass = tokio::task::spawn_blocking(move || {
                let Some(dense) = m2.dense.as_ref() else {
                    return Ok(());
                };
                catch_up(&m2, dense, &|| stop.is_cancelled(), &mut |data| {
                    let event = NewEvent::new("indexing_progress", Scope::Global, data);
                    if let Err(e) = rt2.block_on(hub2.publish(vec![event])) {
                        tracing::warn!(error = %e, "could not publish embedding progress");
                    }
                })
            })
            .await;
            match pass {
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not bring the vector index up to date");
                    if let Some(d) = &m.dense {
                        d.set_status(|s| s.last_error = Some(e.to_string()));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "the embedding task failed"),
                Ok(Ok(())) => {}
            }
            let Some(dense) = m.dense.as_ref() else {
                return;
            };
            tokio::select! {
                _ = dense.wake.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passage_text_has_title_headings_and_is_bounded() {
        let t = passage_text(
            "Guide",
            &["Guide".into(), "Install".into()],
            &["  first line", "second"],
        );
        assert_eq!(t, "Guide › Install\nfirst line\nsecond\n");
        let long = "é".repeat(5000);
        let t = passage_text("T", &[], &[long.as_str()]);
        assert!(t.len() <= MAX_PASSAGE_CHARS);
    }

    #[test]
    fn vector_files_are_named_safely() {
        assert_eq!(
            file_name("all-MiniLM-L6-v2@040bc6"),
            "all-MiniLM-L6-v2_040bc6.bin"
        );
        assert_eq!(file_name("../x/y"), ".._x_y.bin");
    }
}
