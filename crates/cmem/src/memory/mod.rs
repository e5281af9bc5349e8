//! The memory itself: a tantivy full-text index of the data folder, and search over it.
//!
//! This is a producer in the hub's sense: indexing and searching publish their progress
//! (`indexing_started`, `indexing_progress`, `indexing_completed`, `search_started`,
//! `search_completed`) through [`Hub::publish`](crate::hub::Hub::publish); nothing here talks
//! to a socket.
//!
//! The index lives in `<data>/.collective-memory/index/`. Which files are indexed, with their
//! modification time and size, is kept in `index-state.sqlite3` beside it, so a restart
//! re-indexes only what changed.

pub mod indexer;
pub mod search;
pub mod watcher;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tantivy::schema::{FAST, Field, STORED, STRING, Schema, TEXT};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy};

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
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let f = Fields {
        path: b.add_text_field("path", STRING | STORED),
        filename: b.add_text_field("filename", TEXT | STORED),
        extension: b.add_text_field("extension", STRING | STORED),
        title: b.add_text_field("title", TEXT | STORED),
        body: b.add_text_field("body", TEXT | STORED),
        modified: b.add_u64_field("modified", STORED | FAST),
        size: b.add_u64_field("size", STORED | FAST),
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

/// The index, its writer, and the indexing state.
pub struct Memory {
    pub root: PathBuf,
    pub index_dir: PathBuf,
    pub index: Index,
    pub reader: IndexReader,
    pub fields: Fields,
    writer: Mutex<IndexWriter>,
    pub state: Mutex<IndexingState>,
    pub max_file_bytes: u64,
}

impl Memory {
    /// Opens (or creates) the index for `data_dir`.
    pub fn open(data_dir: &Path, max_file_bytes: u64) -> Result<Arc<Memory>, MemoryError> {
        let state = data_dir.join(".collective-memory").join("index");
        std::fs::create_dir_all(&state).map_err(|source| MemoryError::Io {
            path: state.clone(),
            source,
        })?;
        let root = std::fs::canonicalize(data_dir).map_err(|source| MemoryError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let index_dir = root.join(".collective-memory").join("index");
        std::fs::create_dir_all(&index_dir).map_err(|source| MemoryError::Io {
            path: index_dir.clone(),
            source,
        })?;
        let (schema, fields) = schema();
        let dir = tantivy::directory::MmapDirectory::open(&index_dir)
            .map_err(|e| MemoryError::Index(e.into()))?;
        let index = Index::open_or_create(dir, schema)?;
        // one indexing thread: the server shares two cores with everything else
        let writer = index.writer_with_num_threads(1, 50_000_000)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::OnCommitWithDelay)
            .try_into()?;
        Ok(Arc::new(Memory {
            root,
            index_dir,
            index,
            reader,
            fields,
            writer: Mutex::new(writer),
            state: Mutex::new(IndexingState::default()),
            max_file_bytes,
        }))
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
