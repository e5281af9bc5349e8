//! Search modes and their fusion: keyword (BM25 over the words, [`super::search`]), semantic
//! (the passages nearest in meaning, [`super::dense`]) and hybrid, the two lists fused. Each
//! hit says which of them found it (`signals`).
//!
//! The fusion is a convex combination of the two lists' scores, each min-max normalised over
//! its candidates (the first 50, or the page's depth if deeper): a document's fused score is
//! `SEMANTIC_WEIGHT × cosine′ + (1 − SEMANTIC_WEIGHT) × bm25′`, 0 for a list it is not in.
//! Reciprocal rank fusion was measured beside it on the judged question set (BENCHMARKS.md,
//! "Retrieval quality") and lost to meaning alone at every weight: when one list is much
//! weaker, RRF gives its top ranks as much say as the stronger list's. Normalised scores keep
//! how sure each list is.

use std::collections::HashMap;
use std::time::Instant;

use super::Memory;
use super::search::{
    Answer, Filters, Hit, Keyword, PassageHit, Related, SearchError, search_typed,
};
use super::vectors::Near;

/// The share of meaning in the fused score (words have the rest); tuned on half of the
/// judged questions (BENCHMARKS.md).
pub const SEMANTIC_WEIGHT: f32 = 0.7;

/// Below this cosine similarity a passage is not taken as a semantic match at all (unrelated
/// English text scores about 0 to 0.15 with this model).
pub const MIN_SIMILARITY: f32 = 0.2;

/// In hybrid search, a document the words did not find must be at least this near to be
/// shown for its meaning alone. A made-up word lands 0.2 to 0.32 from ordinary text, so
/// without this a search for a word no document has would answer with whatever is nearest;
/// the answers to real questions are mostly 0.4 and up (on the judged set this bar cost 0.002
/// of nDCG@10).
pub const MIN_SIMILARITY_ALONE: f32 = 0.35;

/// Words a query needs before hybrid search adds documents found by meaning alone. One or
/// two words are a lookup: the answer is the documents that have them (ranked with the
/// meaning's help), not their neighbours — a search for a name must not answer with a
/// document about a word spelt like it. A question or a phrase of three words or more gets
/// the documents that say it in other words too. (Every judged question has three or more.)
pub const MIN_WORDS_ALONE: usize = 3;

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
        // the keyword search marks its hits and its mode itself
        (Mode::Keyword, _) | (_, None) => {
            return search_typed(m, query, filters, limit, offset, typing);
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
        let keyword = Keyword::new(m, query, filters, typing)?;
        let alone = query
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .count()
            >= MIN_WORDS_ALONE;
        fuse(m, &keyword, wanted, &near, alone, limit, offset)?
    };
    Ok(Answer {
        results,
        total,
        limit,
        offset,
        search_time: started.elapsed().as_secs_f64() * 1000.0,
        mode: mode.as_str(),
        note,
        question: Some((dense.embedder.id().to_string(), q)),
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

/// The documents nearest to the one at `path`, by words (more-like-this over its terms) and,
/// when it has vectors, by meaning (the passages nearest its centroid), fused as a search is.
pub fn related(m: &Memory, path: &str, limit: usize) -> Result<Vec<Related>, SearchError> {
    let wanted = limit.max(MIN_CANDIDATES);
    let words = super::search::related(m, path, wanted)?;
    let Some(centroid) = m.dense.as_ref().and_then(|d| d.centroid(path)) else {
        return Ok(words.into_iter().take(limit).collect());
    };
    let near: Vec<Near> = m
        .dense
        .as_ref()
        .map(|d| d.nearest(&centroid, wanted, |p| p != path))
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.score >= MIN_SIMILARITY)
        .collect();
    let mut fused: HashMap<String, (f32, Option<String>)> = HashMap::new();
    for (r, x) in words.iter().zip(normalised(words.iter().map(|r| r.score))) {
        let e = fused.entry(r.path.clone()).or_default();
        e.0 += (1.0 - SEMANTIC_WEIGHT) * x;
        e.1 = Some(r.title.clone());
    }
    for (n, x) in near.iter().zip(normalised(near.iter().map(|n| n.score))) {
        fused.entry(n.path.clone()).or_default().0 += SEMANTIC_WEIGHT * x;
    }
    let mut order: Vec<(String, (f32, Option<String>))> = fused.into_iter().collect();
    order.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
    Ok(order
        .into_iter()
        .take(limit)
        .filter_map(|(path, (score, title))| {
            let title = match title {
                Some(t) => t,
                None => super::dense::stored(m, &path)?.title,
            };
            Some(Related { path, title, score })
        })
        .collect())
}

/// Min-max normalised scores (a list of one, or of equal scores, is all 1).
fn normalised(scores: impl Iterator<Item = f32> + Clone) -> impl Iterator<Item = f32> {
    let (lo, hi) = scores
        .clone()
        .fold((f32::MAX, f32::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let span = hi - lo;
    scores.map(move |x| if span > 1e-9 { (x - lo) / span } else { 1.0 })
}

/// Fuses the keyword candidates (the first `wanted`) and the semantic list (documents only
/// the meaning found are taken when `alone`, see [`MIN_WORDS_ALONE`]); the page
/// `offset..offset + limit` of the fused order, and the total (every keyword match and every
/// document only the meaning found).
fn fuse(
    m: &Memory,
    keyword: &Keyword<'_>,
    wanted: usize,
    near: &[Near],
    alone: bool,
    limit: usize,
    offset: usize,
) -> Result<(Vec<Hit>, usize), SearchError> {
    let (top, keyword_total) = keyword.top(wanted, 0)?;
    let mut words_found = std::collections::HashSet::new();
    let mut paths = Vec::with_capacity(top.len());
    for (_, addr) in &top {
        let p = keyword.path(*addr)?;
        words_found.insert(p.clone());
        paths.push(p);
    }
    let near: Vec<&Near> = near
        .iter()
        .filter(|n| (alone && n.score >= MIN_SIMILARITY_ALONE) || words_found.contains(&n.path))
        .collect();
    /// A candidate: its fused score, where the words ranked it, whether the meaning did.
    #[derive(Default)]
    struct Fused {
        score: f32,
        by_words: Option<(f32, tantivy::DocAddress)>,
        by_meaning: bool,
    }
    let mut fused: HashMap<String, Fused> = HashMap::new();
    for (((score, addr), path), x) in top
        .iter()
        .zip(paths)
        .zip(normalised(top.iter().map(|t| t.0)))
    {
        let e = fused.entry(path).or_default();
        e.score += (1.0 - SEMANTIC_WEIGHT) * x;
        e.by_words = Some((*score, *addr));
    }
    let mut only_semantic = 0;
    for (n, x) in near.iter().zip(normalised(near.iter().map(|n| n.score))) {
        let e = fused.entry(n.path.clone()).or_default();
        if e.by_words.is_none() {
            only_semantic += 1;
        }
        e.score += SEMANTIC_WEIGHT * x;
        e.by_meaning = true;
    }
    let mut order: Vec<(&String, &Fused)> = fused.iter().collect();
    order.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then_with(|| a.0.cmp(b.0)));
    let by_path: HashMap<&str, &Near> = near.iter().map(|n| (n.path.as_str(), *n)).collect();
    let mut page = Vec::with_capacity(limit);
    for (path, f) in order.into_iter().skip(offset).take(limit) {
        let hit = match f.by_words {
            Some((s, addr)) => {
                let mut h = keyword.hit(s, addr)?;
                if f.by_meaning {
                    h.signals.push("semantic");
                }
                Some(h)
            }
            None => by_path.get(path.as_str()).and_then(|n| semantic_hit(m, n)),
        };
        if let Some(mut h) = hit {
            h.score = f.score;
            page.push(h);
        }
    }
    Ok((page, keyword_total + only_semantic))
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
        last_modified: crate::clock::rfc3339_ms(doc.modified).unwrap_or_default(),
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
