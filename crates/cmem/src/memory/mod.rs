//! The memory itself: a tantivy full-text index of the data folder, and search over it.
//!
//! This is a producer in the hub's sense: indexing and searching publish their progress
//! (`indexing_started`, `indexing_progress`, `indexing_completed`, `search_started`,
//! `search_completed`) through `Hub::publish`; nothing here talks
//! to a socket.
//!
//! The index lives in `<data>/.collective-memory/index/`. Which files are indexed, with their
//! modification time and size, is kept in `index-state.sqlite3` beside it, so a restart
//! re-indexes only what changed.

pub mod confined;
pub mod dense;
pub mod embed;
pub mod history;
pub mod hybrid;
pub mod indexer;
pub mod language;
pub mod passage;
pub mod reader;
pub mod search;
pub mod service;
pub mod vectors;
pub mod watcher;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tantivy::schema::{
    FAST, Field, IndexRecordOption, STORED, STRING, Schema, TEXT, TextFieldIndexing, TextOptions,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy};

use crate::config::STATE_DIR;

/// Why the memory could not do something.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("index state: {0}")]
    State(#[from] rusqlite::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("an indexing run is already in progress")]
    Busy,
    #[error(
        "the index in {} is in use by another process (is `cmem serve` or `cmem index` running on this folder? a running server re-indexes with POST /system/reindex)",
        .0.display()
    )]
    Locked(PathBuf),
    #[error("embedding model: {0}")]
    Model(#[from] embed::EmbedError),
    #[error("this memory was opened read-only")]
    ReadOnly,
    /// A read-only opener found an index of an earlier version, which only a writer may
    /// rebuild.
    #[error(
        "the index in {} was written by an earlier version of cmem; start `cmem serve` on the folder (or run `cmem index` on it) to rebuild it",
        .0.display()
    )]
    Outdated(PathBuf),
}

/// The fields of an indexed document.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    pub path: Field,
    pub filename: Field,
    pub extension: Field,
    pub title: Field,
    pub body: Field,
    pub modified: Field,
    pub size: Field,
    /// The body, title and headings read by [`language::analyzer`] (stop words out, stems),
    /// for plain questions; the fields above keep the words as written, for explicit syntax,
    /// phrases and snippets.
    pub body_stem: Field,
    pub title_stem: Field,
    pub headings_stem: Field,
    /// The document's passages (stored, not searched): `[[first line, last line, "A › B"], …]`,
    /// split along headings at indexing time ([`passage::split`]).
    pub passages: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let stemmed = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(language::ANALYZER)
            // frequencies only: questions match stems one by one (BM25 needs no positions);
            // phrases run on the plain fields, which keep theirs. Positions here made indexing
            // slower and the index larger for nothing
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let f = Fields {
        path: b.add_text_field("path", STRING | STORED),
        filename: b.add_text_field("filename", TEXT | STORED),
        extension: b.add_text_field("extension", STRING | STORED),
        title: b.add_text_field("title", TEXT | STORED),
        body: b.add_text_field("body", TEXT | STORED),
        modified: b.add_u64_field("modified", STORED | FAST),
        size: b.add_u64_field("size", STORED | FAST),
        body_stem: b.add_text_field("body_stem", stemmed.clone()),
        title_stem: b.add_text_field("title_stem", stemmed.clone()),
        headings_stem: b.add_text_field("headings_stem", stemmed),
        passages: b.add_text_field("passages", STORED),
    };
    (b.build(), f)
}

/// What the last (or current) indexing run did; `GET /system/indexing` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexingState {
    pub running: bool,
    pub path: String,
    pub progress: u8,
    pub current_file: String,
    pub processed_files: u64,
    pub total_files: u64,
    pub indexed: u64,
    pub unchanged: u64,
    pub removed: u64,
    pub skipped: u64,
    pub errors: u64,
    pub duration_ms: u64,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// Counters over every indexing run and watcher update since start, for `GET /metrics`.
#[derive(Debug, Default)]
pub struct IndexTotals {
    pub runs: AtomicU64,
    pub indexed: AtomicU64,
    pub skipped: AtomicU64,
    pub removed: AtomicU64,
    pub errors: AtomicU64,
    pub watcher_updates: AtomicU64,
}

impl IndexTotals {
    pub fn add(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// How to open the memory.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Files larger than this are skipped.
    pub max_file_bytes: u64,
    /// Searches kept in the history (0 = none).
    pub history_max: u64,
    /// Indexing threads (the server uses one; it shares the cores with its clients).
    pub threads: usize,
    /// Search only: takes no writer lock, so it works beside a running server.
    pub read_only: bool,
    /// File extensions never indexed (lowercase, without the dot): images and other formats
    /// whose text is markup, not knowledge (`index_skip_extensions`).
    pub skip_extensions: Vec<String>,
    /// The language questions and documents are read in (`search_language`).
    pub language: String,
    /// The sentence-embedding model for meaning search (`embedding_model`).
    pub model: embed::ModelChoice,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            max_file_bytes: 10_000_000,
            history_max: 10_000,
            threads: 1,
            read_only: false,
            skip_extensions: crate::config::Config::default().index_skip_extensions,
            language: crate::config::Config::default().search_language,
            model: embed::ModelChoice::BuiltIn,
        }
    }
}

/// The index, its writer, the searches history, and the indexing state.
pub struct Memory {
    pub root: PathBuf,
    pub index_dir: PathBuf,
    pub index: Index,
    pub reader: IndexReader,
    pub fields: Fields,
    writer: Option<Mutex<IndexWriter>>,
    pub state: Mutex<IndexingState>,
    pub max_file_bytes: u64,
    /// Extensions never indexed (lowercase).
    pub skip_extensions: Vec<String>,
    /// The language of the stemmed fields (`search_language`).
    pub language: String,
    pub history: history::History,
    pub totals: IndexTotals,
    /// The model and the passage vectors, when there is a model ([`dense`]).
    pub dense: Option<dense::Dense>,
    /// Why there is none, when there is none (said when meaning search is asked for).
    pub no_model: Option<String>,
    /// Searches answered since start: the anonymous count everyone sees (`system_status`);
    /// who searched for what goes to the searcher's own scope only.
    pub searches_total: std::sync::atomic::AtomicU64,
}

/// Opens the index in `dir`, or makes it. An index of an older schema (written by an earlier
/// version) is removed and made again by a writer: the next indexing run fills it from the
/// folder (its state, in the same folder, goes with it). A read-only opener never touches it:
/// it is told the index is outdated ([`MemoryError::Outdated`]).
fn open_index(dir: &Path, schema: Schema, read_only: bool) -> Result<Index, MemoryError> {
    let mmap = |d: &Path| {
        tantivy::directory::MmapDirectory::open(d).map_err(|e| MemoryError::Index(e.into()))
    };
    if Index::exists(&mmap(dir)?).unwrap_or(false) {
        let existing = Index::open(mmap(dir)?)?;
        if existing.schema() == schema {
            return Ok(existing);
        }
        if read_only {
            // its fields are not this version's: reading it with them would go wrong
            return Err(MemoryError::Outdated(dir.to_path_buf()));
        }
        drop(existing);
        tracing::info!(index = %dir.display(), "the index was written by an earlier version; rebuilding it");
        let io = |source| MemoryError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::remove_dir_all(dir).map_err(io)?;
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    Ok(Index::open_or_create(mmap(dir)?, schema)?)
}

impl Memory {
    /// Opens (or creates) the index for `data_dir`.
    pub fn open(data_dir: &Path, opts: &OpenOptions) -> Result<Arc<Memory>, MemoryError> {
        let state = data_dir.join(STATE_DIR).join("index");
        std::fs::create_dir_all(&state).map_err(|source| MemoryError::Io {
            path: state.clone(),
            source,
        })?;
        let root = std::fs::canonicalize(data_dir).map_err(|source| MemoryError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let index_dir = root.join(STATE_DIR).join("index");
        std::fs::create_dir_all(&index_dir).map_err(|source| MemoryError::Io {
            path: index_dir.clone(),
            source,
        })?;
        let (schema, fields) = schema();
        let index = open_index(&index_dir, schema, opts.read_only)?;
        index
            .tokenizers()
            .register(language::ANALYZER, language::analyzer(&opts.language));
        let writer = if opts.read_only {
            None
        } else {
            let threads = opts.threads.clamp(1, 8);
            // tantivy wants at least 15 MB per thread; 50 MB each keeps segments large
            match index.writer_with_num_threads(threads, threads * 50_000_000) {
                Ok(w) => Some(Mutex::new(w)),
                Err(tantivy::TantivyError::LockFailure(..)) => {
                    return Err(MemoryError::Locked(index_dir));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::OnCommitWithDelay)
            .try_into()?;
        let history = history::History::open(&root.join(STATE_DIR), opts.history_max)?;
        let (dense, no_model) = match opts.model.load()? {
            Ok(e) => (
                Some(dense::Dense::open(&root, Arc::new(e), opts.read_only)),
                None,
            ),
            Err(why) => (None, Some(why)),
        };
        Ok(Arc::new(Memory {
            dense,
            no_model,
            root,
            index_dir,
            index,
            reader,
            fields,
            history,
            writer,
            state: Mutex::new(IndexingState::default()),
            max_file_bytes: opts.max_file_bytes,
            language: opts.language.clone(),
            skip_extensions: opts
                .skip_extensions
                .iter()
                .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                .collect(),
            totals: IndexTotals::default(),
            searches_total: Default::default(),
        }))
    }

    /// The index writer, for indexing runs and watcher updates.
    pub(crate) fn writer(&self) -> Result<std::sync::MutexGuard<'_, IndexWriter>, MemoryError> {
        self.writer
            .as_ref()
            .ok_or(MemoryError::ReadOnly)?
            .lock()
            .map_err(|_| MemoryError::Busy)
    }

    /// Bytes the index takes on disk.
    pub fn index_bytes(&self) -> u64 {
        std::fs::read_dir(&self.index_dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Drops the searchers' cached segment data by reopening the reader.
    pub fn clear_cache(&self) -> Result<(), MemoryError> {
        self.reader.reload()?;
        Ok(())
    }

    /// The indexing state as it is now.
    pub fn indexing_state(&self) -> IndexingState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Number of documents in the index.
    pub fn doc_count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }
}
