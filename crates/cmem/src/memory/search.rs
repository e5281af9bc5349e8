//! Full-text search over the index: parse, collect the page and the true total, highlight.

use std::time::Instant;

use serde::Serialize;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::QueryParser;
use tantivy::schema::Value;
use tantivy::snippet::SnippetGenerator;
use tantivy::{DocAddress, Score, TantivyDocument};

use super::Memory;

/// Largest page a search may ask for.
pub const MAX_LIMIT: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("query syntax error: {0}")]
    Syntax(String),
    #[error("search failed: {0}")]
    Index(#[from] tantivy::TantivyError),
}

#[derive(Debug, Serialize)]
pub struct Hit {
    pub id: String,
    pub title: String,
    pub filename: String,
    pub path: String,
    /// HTML with the matched terms in `<b>`.
    pub snippet: String,
    pub score: f32,
    #[serde(rename = "lastModified")]
    pub last_modified: String,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct Answer {
    pub results: Vec<Hit>,
    /// Every hit, not just this page.
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
    /// Milliseconds.
    #[serde(rename = "searchTime")]
    pub search_time: f64,
}

fn text(doc: &TantivyDocument, f: tantivy::schema::Field) -> String {
    doc.get_first(f)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

fn number(doc: &TantivyDocument, f: tantivy::schema::Field) -> u64 {
    doc.get_first(f)
        .and_then(|v| v.as_u64())
        .unwrap_or_default()
}

/// Runs a query; blocking (call it from a blocking thread).
pub fn search(m: &Memory, q: &str, limit: usize, offset: usize) -> Result<Answer, SearchError> {
    let started = Instant::now();
    let f = m.fields;
    let mut parser = QueryParser::for_index(&m.index, vec![f.title, f.filename, f.body]);
    parser.set_field_boost(f.title, 2.0);
    let query = parser
        .parse_query(q)
        .map_err(|e| SearchError::Syntax(e.to_string()))?;
    let searcher = m.reader.searcher();
    let (top, total): (Vec<(Score, DocAddress)>, usize) = searcher.search(
        &query,
        &(
            TopDocs::with_limit(limit.max(1))
                .and_offset(offset)
                .order_by_score(),
            Count,
        ),
    )?;
    let mut snippets = SnippetGenerator::create(&searcher, &*query, f.body)?;
    snippets.set_max_num_chars(200);
    let mut results = Vec::with_capacity(top.len());
    for (score, addr) in top {
        let doc: TantivyDocument = searcher.doc(addr)?;
        let path = text(&doc, f.path);
        let modified = number(&doc, f.modified);
        results.push(Hit {
            id: path.clone(),
            title: text(&doc, f.title),
            filename: text(&doc, f.filename),
            snippet: snippets.snippet_from_doc(&doc).to_html(),
            path,
            score,
            last_modified: chrono::DateTime::from_timestamp_millis(modified as i64)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default(),
            size: number(&doc, f.size),
        });
    }
    Ok(Answer {
        results,
        total,
        limit,
        offset,
        search_time: started.elapsed().as_secs_f64() * 1000.0,
    })
}
