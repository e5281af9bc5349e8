//! Search modes and their fusion: keyword (BM25 over the words, [`super::search`]), semantic
//! (the passages nearest in meaning, [`super::dense`]) and hybrid, the two lists merged by
//! weighted reciprocal rank fusion. Each hit says which of them found it (`signals`).
//!
//! Rank fusion, not score mixing: BM25 scores and cosine similarities are on scales that say
//! nothing about each other, while ranks are comparable. A document's fused score is
//! `Σ weight / (K + rank)` over the lists it is in. The weights were tuned on the judged
//! question set (BENCHMARKS.md, "Retrieval quality"), because plain RRF can lose to its better
//! part when the other part is weak.

use std::collections::HashMap;
use std::time::Instant;

use super::Memory;
use super::search::{Answer, Filters, Hit, PassageHit, SearchError, search_typed};
use super::vectors::Near;

/// The RRF constant: how quickly the weight of a rank falls.
pub const RRF_K: f32 = 60.0;
/// Weight of the keyword list and of the semantic list in the fusion.
pub const KEYWORD_WEIGHT: f32 = 1.0;
pub const SEMANTIC_WEIGHT: f32 = 1.0;

/// Below this cosine similarity a passage is not taken as a semantic match at all (unrelated
/// English text scores about 0 to 0.15 with this model).
pub const MIN_SIMILARITY: f32 = 0.2;

/// Fewest candidates taken from each list before fusing, so that page 1 of a hybrid search
/// sees more than the first page of each.
const MIN_CANDIDATES: usize = 50;

/// How a search finds documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keyword and semantic, fused (the default when the model is there).
    Hybrid,
    /// Words only (the default without a model, and always for explicit syntax).
    Keyword,
    /// Meaning only.
    Semantic,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode, SearchError> {
        match s {
            "hybrid" => Ok(Mode::Hybrid),
            "keyword" => Ok(Mode::Keyword),
            "semantic" => Ok(Mode::Semantic),
            other => Err(SearchError::Invalid(format!(
                "mode `{other}` is not hybrid, keyword or semantic"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Hybrid => "hybrid",
            Mode::Keyword => "keyword",
            Mode::Semantic => "semantic",
        }
    }
}

/// The mode a search runs in: what was asked, else hybrid when there is a model. A query in
/// the explicit syntax (`"phrase"`, `-word`, `field:`) means exactly its words, so it is
/// always keyword (a semantic neighbour could be the document its `-word` excludes).
/// Asking for meaning without a model is refused with the reason.
pub fn resolve(m: &Memory, asked: Option<Mode>, query: &str) -> Result<Mode, SearchError> {
    let explicit = super::search::is_explicit(query);
    match asked {
        Some(Mode::Keyword) => Ok(Mode::Keyword),
        Some(mode) if m.dense.is_none() => Err(SearchError::Unavailable(format!(
            "{} search needs the embedding model: {}",
            mode.as_str(),
            m.no_model.as_deref().unwrap_or("there is none")
        ))),
        Some(Mode::Semantic) if explicit => Err(SearchError::Invalid(
            "semantic search reads plain text: quotes, +, -, fields and AND/OR/NOT are keyword syntax (use mode=keyword, or leave them out)".into(),
        )),
        _ if explicit || m.dense.is_none() => Ok(Mode::Keyword),
        Some(mode) => Ok(mode),
        None => Ok(Mode::Hybrid),
    }
}

/// Answers a search in `mode` (see [`resolve`]); blocking.
#[allow(clippy::too_many_arguments)]
pub fn answer(
    m: &Memory,
    query: &str,
    filters: &Filters,
    limit: usize,
    offset: usize,
    typing: bool,
    asked: Option<Mode>,
) -> Result<Answer, SearchError> {
    let started = Instant::now();
    let mode = resolve(m, asked, query)?;
    let dense = match (mode, m.dense.as_ref()) {
        (Mode::Keyword, _) | (_, None) => {
            let mut a = search_typed(m, query, filters, limit, offset, typing)?;
            for h in &mut a.results {
                h.signals = vec!["keyword"];
            }
            a.mode = Mode::Keyword.as_str();
            return Ok(a);
        }
        (_, Some(d)) => d,
    };
    let wanted = (offset + limit).max(MIN_CANDIDATES);
    let q = dense
        .query_vector(query)
        .map_err(|e| SearchError::Internal(format!("embedding the question: {e}")))?;
    let near: Vec<Near> = dense
        .nearest(&q, wanted, |p| keeps(filters, p))
        .into_iter()
        .filter(|n| n.score >= MIN_SIMILARITY)
        .collect();
    let status = dense.status();
    let note = (status.documents < status.documents_total).then(|| {
        format!(
            "meaning search covers {} of {} documents so far; the rest are being embedded",
            status.documents, status.documents_total
        )
    });
    let (results, total) = if mode == Mode::Semantic {
        let total = near.len();
        let hits = near
            .iter()
            .skip(offset)
            .take(limit)
            .filter_map(|n| semantic_hit(m, n))
            .collect();
        (hits, total)
    } else {
        let keyword = search_typed(m, query, filters, wanted, 0, typing)?;
        fuse(m, keyword, &near, limit, offset)
    };
    Ok(Answer {
        results,
        total,
        limit,
        offset,
        search_time: started.elapsed().as_secs_f64() * 1000.0,
        mode: mode.as_str(),
        note,
    })
}

/// Whether the filters let a path through.
fn keeps(f: &Filters, path: &str) -> bool {
    if let Some(prefix) = &f.path_prefix
        && !path.starts_with(prefix.as_str())
    {
        return false;
    }
    if f.extensions.is_empty() {
        return true;
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rsplit_once('.') {
        Some((_, ext)) => f.extensions.iter().any(|e| e.eq_ignore_ascii_case(ext)),
        None => false,
    }
}

/// Weighted RRF of the keyword answer (its first page of candidates) and the semantic list;
/// the page `offset..offset + limit` of the fused order, and the total (every keyword match
/// and every document only the meaning found).
fn fuse(
    m: &Memory,
    keyword: Answer,
    near: &[Near],
    limit: usize,
    offset: usize,
) -> (Vec<Hit>, usize) {
    let mut score: HashMap<String, f32> = HashMap::new();
    for (rank, h) in keyword.results.iter().enumerate() {
        *score.entry(h.path.clone()).or_default() += KEYWORD_WEIGHT / (RRF_K + rank as f32 + 1.0);
    }
    let mut only_semantic = 0;
    let by_path: HashMap<&str, &Near> = near.iter().map(|n| (n.path.as_str(), n)).collect();
    for (rank, n) in near.iter().enumerate() {
        let s = score.entry(n.path.clone()).or_insert_with(|| {
            only_semantic += 1;
            0.0
        });
        *s += SEMANTIC_WEIGHT / (RRF_K + rank as f32 + 1.0);
    }
    let mut order: Vec<(&String, &f32)> = score.iter().collect();
    order.sort_by(|a, b| b.1.total_cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let mut keyword_hits: HashMap<String, Hit> = keyword
        .results
        .into_iter()
        .map(|h| (h.path.clone(), h))
        .collect();
    let page = order
        .into_iter()
        .skip(offset)
        .take(limit)
        .filter_map(|(path, fused)| {
            let near = by_path.get(path.as_str());
            let mut hit = match keyword_hits.remove(path) {
                Some(mut h) => {
                    h.signals = vec!["keyword"];
                    if near.is_some() {
                        h.signals.push("semantic");
                    }
                    h
                }
                None => semantic_hit(m, near?)?,
            };
            hit.score = *fused;
            Some(hit)
        })
        .collect();
    (page, keyword.total + only_semantic)
}

/// A hit for a document only the meaning found: its nearest passage, with the passage's
/// opening as the snippet.
fn semantic_hit(m: &Memory, n: &Near) -> Option<Hit> {
    let doc = super::dense::stored(m, &n.path)?;
    let passage = doc
        .passages
        .iter()
        .find(|p| p.start_line == n.start_line as usize)
        .cloned();
    let lines: Vec<&str> = doc
        .body
        .lines()
        .skip((n.start_line as usize).saturating_sub(1))
        .take((n.end_line.saturating_sub(n.start_line) + 1) as usize)
        .filter(|l| !l.trim().is_empty() && super::indexer::heading_level(l.trim_start()).is_none())
        .collect();
    let mut opening = String::new();
    for l in lines {
        if opening.chars().count() >= 200 {
            break;
        }
        if !opening.is_empty() {
            opening.push(' ');
        }
        opening.push_str(l.trim());
    }
    let opening: String = opening.chars().take(200).collect();
    Some(Hit {
        id: n.path.clone(),
        title: doc.title,
        filename: doc.filename,
        path: n.path.clone(),
        snippet: escape(&opening),
        passage: Some(PassageHit {
            heading: passage.as_ref().map(|p| p.heading()).unwrap_or_default(),
            heading_path: passage.map(|p| p.heading_path).unwrap_or_default(),
            start_line: n.start_line as usize,
            end_line: n.end_line as usize,
        }),
        score: n.score,
        last_modified: chrono::DateTime::from_timestamp_millis(doc.modified as i64)
            .map(crate::clock::rfc3339)
            .unwrap_or_default(),
        size: doc.size,
        signals: vec!["semantic"],
    })
}

/// Text as HTML (snippets are HTML: tantivy's are escaped the same way).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_name_themselves() {
        for m in [Mode::Hybrid, Mode::Keyword, Mode::Semantic] {
            assert_eq!(Mode::parse(m.as_str()).unwrap(), m);
        }
        let e = Mode::parse("fuzzy").unwrap_err().to_string();
        assert!(e.contains("hybrid, keyword or semantic"), "{e}");
    }

    #[test]
    fn filters_apply_to_semantic_paths() {
        let f = Filters {
            path_prefix: Some("docs/".into()),
            extensions: vec!["md".into()],
        };
        assert!(keeps(&f, "docs/a.MD"));
        assert!(!keeps(&f, "docs/a.txt"));
        assert!(!keeps(&f, "src/a.md"));
        assert!(!keeps(&f, "docs/README"));
        assert!(keeps(&Filters::default(), "anything"));
    }

    #[test]
    fn snippets_are_escaped() {
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#x27;");
    }
}
