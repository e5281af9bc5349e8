//! Full-text search over the index: parse, collect the page and the true total, highlight.

use std::time::Instant;

use serde::Serialize;
use std::ops::Bound;
use tantivy::collector::{Count, TopDocs};

use tantivy::query::{
    BooleanQuery, BoostQuery, EmptyQuery, InvertedIndexRangeQuery, Occur, Query, QueryParser,
    QueryParserError, RegexQuery, TermQuery, TermSetQuery,
};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::{DocAddress, Score, TantivyDocument, Term};

use super::Memory;

/// Largest page a search may ask for.
pub const MAX_LIMIT: usize = 200;

/// Longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 1000;

/// Deepest nesting of parentheses and `NOT` a query may have. The query grammar, the query
/// builder and the query itself all recurse once per level, so an unbounded depth lets one
/// request overflow the stack (800 `(` did); no one searches deeper than a few levels.
pub const MAX_QUERY_DEPTH: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// A parameter of the search is out of bounds (the message names it).
    #[error("{0}")]
    Invalid(String),
    /// The query is too long or nests too deeply; checked before anything parses it.
    #[error("{0}")]
    TooComplex(String),
    /// `position` counts characters from 0 and is where the parser gave up.
    #[error("query syntax error at position {position}: {message}")]
    Syntax { position: usize, message: String },
    #[error("search failed: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// What was asked needs something this server does not have (meaning search without the
    /// embedding model); the message says how to get it.
    #[error("{0}")]
    Unavailable(String),
    #[error("search failed: {0}")]
    Internal(String),
}

/// Restrictions on which documents a search may return.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// Only paths that start with this (relative, `/`-separated).
    pub path_prefix: Option<String>,
    /// Only these extensions (lowercase, without the dot); empty means any.
    pub extensions: Vec<String>,
}

/// The part of a document a hit points at: the passage its snippet's first match is in.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PassageHit {
    /// The headings above it, joined: `Setup › Install` (empty before the first heading).
    pub heading: String,
    pub heading_path: Vec<String>,
    /// Its lines in the document, 1-based, inclusive.
    pub start_line: usize,
    pub end_line: usize,
}

#[derive(Debug, Serialize)]
pub struct Hit {
    pub id: String,
    pub title: String,
    pub filename: String,
    pub path: String,
    /// HTML with the matched terms in `<b>`: the document's best-scoring stretch.
    pub snippet: String,
    /// The passage the snippet's first match is in (`None` for a document without passages).
    pub passage: Option<PassageHit>,
    pub score: f32,
    pub last_modified: String,
    pub size: u64,
    /// Which searches found it: `keyword`, `semantic`, or both ([`super::hybrid`]).
    pub signals: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct Answer {
    pub results: Vec<Hit>,
    /// Every hit, not just this page.
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
    /// Milliseconds.
    #[serde(rename = "search_time_ms")]
    pub search_time: f64,
    /// The mode it ran in: `hybrid`, `keyword` or `semantic`.
    pub mode: &'static str,
    /// Something the reader should know about this answer (meaning search still catching up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The question's vector and its model, when meaning search made one: kept in the
    /// history so later searches near in meaning find it (not sent).
    #[serde(skip)]
    pub question: Option<(String, Vec<f32>)>,
}

pub(crate) fn stored_text(doc: &TantivyDocument, f: tantivy::schema::Field) -> String {
    doc.get_first(f)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

pub(crate) fn stored_number(doc: &TantivyDocument, f: tantivy::schema::Field) -> u64 {
    doc.get_first(f)
        .and_then(|v| v.as_u64())
        .unwrap_or_default()
}

/// Whether a query uses the explicit syntax (`"phrases"`, `+must`, `-not`, `field:value`,
/// `AND`/`OR`/`NOT`, parentheses, `*`): then it means exactly what it says ([`parse`]);
/// anything else is read as a question ([`question`]).
pub fn is_explicit(q: &str) -> bool {
    q.contains(['"', ':', '(', ')', '*'])
        || q.split_whitespace()
            .any(|w| w.starts_with('+') || w.starts_with('-') || matches!(w, "AND" | "OR" | "NOT"))
}

/// The words of a query as the plain fields hold them (letters and digits, lowercased).
fn words(q: &str) -> Vec<String> {
    q.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// A plain query read as a question: ranked any-word matching over the stemmed body, title
/// (×3) and headings (×2), with the stop words out, so the words that carry the meaning decide
/// and a document with more of them ranks higher; a word in none of the documents costs
/// nothing. While `typing` (a search box searching as the keys come; the query does not end in
/// a space or a punctuation mark) the last word also counts as the start of a word. A
/// question of stop words only searches its words as they are. Returns the query and the terms to mark in snippets (in the plain body).
pub fn question(
    m: &Memory,
    q: &str,
    typing: bool,
) -> Result<(Box<dyn Query>, Vec<Term>), SearchError> {
    check_shape(q)?;
    let f = m.fields;
    let mut analyzer = m
        .index
        .tokenizers()
        .get(super::language::ANALYZER)
        .unwrap_or_else(|| super::language::analyzer(&m.language));
    let stems = super::language::stems(&mut analyzer, q);
    let words = words(q);
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    let mut marks: Vec<Term> = Vec::new();
    let term = |field, text: &str| {
        Box::new(TermQuery::new(
            Term::from_field_text(field, text),
            IndexRecordOption::WithFreqs,
        )) as Box<dyn Query>
    };
    for stem in &stems {
        clauses.push((Occur::Should, term(f.body_stem, stem)));
        clauses.push((
            Occur::Should,
            Box::new(BoostQuery::new(term(f.title_stem, stem), 3.0)),
        ));
        clauses.push((
            Occur::Should,
            Box::new(BoostQuery::new(term(f.headings_stem, stem), 2.0)),
        ));
        marks.push(Term::from_field_text(f.body, stem));
    }
    for w in &words {
        let meaningful = !super::language::stems(&mut analyzer, w).is_empty();
        if stems.is_empty() {
            clauses.push((Occur::Should, term(f.body, w)));
        }
        if meaningful || stems.is_empty() {
            marks.push(Term::from_field_text(f.body, w));
        }
    }
    let typing = typing && q.chars().last().is_some_and(char::is_alphanumeric);
    if typing && let Some(last) = words.last().filter(|w| w.chars().count() >= 2) {
        // the word is letters and digits only: nothing in it is a regex operator
        let prefix = RegexQuery::from_pattern(&format!("{last}.*"), f.body)?;
        clauses.push((
            Occur::Should,
            Box::new(BoostQuery::new(Box::new(prefix), 0.5)),
        ));
    }
    if clauses.is_empty() {
        return Ok((Box::new(EmptyQuery), marks));
    }
    Ok((Box::new(BooleanQuery::new(clauses)), marks))
}

/// Parses a query in tantivy's syntax (terms, `"phrases"`, `AND`/`OR`, `-term`, `title:word`)
/// over title, file name and body. Every word is required unless `OR` says otherwise: explicit
/// syntax means exactly what it says. A syntax error says where it is.
pub fn parse(m: &Memory, q: &str) -> Result<Box<dyn Query>, SearchError> {
    check_shape(q)?;
    let f = m.fields;
    let mut parser = QueryParser::for_index(&m.index, vec![f.title, f.filename, f.body]);
    parser.set_conjunction_by_default();
    parser.set_field_boost(f.title, 2.0);
    parser.parse_query(q).map_err(|e| syntax_error(q, e))
}

/// Bounds what the parser will recurse on, before it runs: the length, and the nesting depth
/// of parentheses and `NOT`s.
///
/// The count never under-estimates what the grammar sees, whatever the quoting: every `(` opens
/// a level, even inside a phrase or after a backslash; a `)` closes one only while no quote has
/// appeared yet and it is not escaped (inside a phrase it would be text); every `NOT` in an open
/// level adds one, as if each applied to the next. So a query can only be refused for being
/// complex, never let through for being tricky.
pub fn check_shape(q: &str) -> Result<(), SearchError> {
    let chars = q.chars().count();
    if chars > MAX_QUERY_CHARS {
        return Err(SearchError::TooComplex(format!(
            "the query is {chars} characters long; the limit is {MAX_QUERY_CHARS}"
        )));
    }
    // one entry per open level below the query itself: the `NOT`s seen in it
    let mut open: Vec<usize> = Vec::new();
    let mut nots = 0usize;
    let mut saw_quote = false;
    let mut prev = '\0';
    let mut tail = ['\0'; 2];
    for (i, c) in q.chars().enumerate() {
        match c {
            '(' => open.push(0),
            ')' if !saw_quote && prev != '\\' => nots -= open.pop().unwrap_or(0),
            '"' | '\'' => saw_quote = true,
            'T' if tail == ['N', 'O'] => {
                nots += 1;
                if let Some(level) = open.last_mut() {
                    *level += 1;
                }
            }
            _ => {}
        }
        tail = [tail[1], c];
        prev = c;
        if open.len() + nots > MAX_QUERY_DEPTH {
            return Err(SearchError::TooComplex(format!(
                "the query nests parentheses and NOT more than {MAX_QUERY_DEPTH} levels deep (at position {i}); that is the limit"
            )));
        }
    }
    Ok(())
}

/// Gives a parse error a position. The strict parser does not report one, so the lenient
/// grammar is asked where it had to recover; errors about a field name point at the field.
fn syntax_error(q: &str, e: QueryParserError) -> SearchError {
    let chars = |byte: usize| q.get(..byte).map_or(0, |p| p.chars().count());
    let (_, lenient) = tantivy::query_grammar::parse_query_lenient(q);
    if let QueryParserError::SyntaxError(_) = e
        && let Some(first) = lenient.first()
    {
        return SearchError::Syntax {
            position: chars(first.pos),
            message: first.message.clone(),
        };
    }
    let position = match &e {
        QueryParserError::FieldDoesNotExist(name)
        | QueryParserError::FieldNotIndexed(name)
        | QueryParserError::FieldDoesNotHavePositionsIndexed(name) => {
            q.find(&format!("{name}:")).map_or(0, chars)
        }
        _ => 0,
    };
    let message = match e {
        QueryParserError::FieldDoesNotExist(name) => {
            format!("no field `{name}`; fields are title, filename, body, path, extension")
        }
        other => other.to_string(),
    };
    SearchError::Syntax { position, message }
}

/// A query the grammar accepts but the index cannot run (`body:*` asks whether a field exists,
/// which needs a fast field) is the client's mistake, not a server failure.
fn refused_by_schema(q: &str, e: tantivy::TantivyError) -> SearchError {
    match e {
        tantivy::TantivyError::SchemaError(msg) | tantivy::TantivyError::InvalidArgument(msg) => {
            let position = q.find(":*").map_or(0, |b| {
                q[..b]
                    .rfind(|c: char| c.is_whitespace() || c == '(')
                    .map_or(0, |s| s + 1)
            });
            SearchError::Syntax {
                position: q.get(..position).map_or(0, |p| p.chars().count()),
                message: format!(
                    "this query cannot run on this index ({msg}); `field:*` is not supported, search for words instead"
                ),
            }
        }
        other => SearchError::Index(other),
    }
}

/// The query with the filters as extra required clauses that do not change scores.
fn filtered(m: &Memory, query: Box<dyn Query>, filters: &Filters) -> Box<dyn Query> {
    let f = m.fields;
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, query)];
    if let Some(prefix) = filters.path_prefix.as_deref().filter(|p| !p.is_empty()) {
        // every string that starts with `prefix` sorts between it and prefix + U+10FFFF
        let upper = format!("{prefix}{}", char::MAX);
        let range = InvertedIndexRangeQuery::new(
            Bound::Included(Term::from_field_text(f.path, prefix)),
            Bound::Excluded(Term::from_field_text(f.path, &upper)),
        );
        clauses.push((Occur::Must, Box::new(BoostQuery::new(Box::new(range), 0.0))));
    }
    if !filters.extensions.is_empty() {
        let terms = filters
            .extensions
            .iter()
            .map(|e| Term::from_field_text(f.extension, e));
        let set = TermSetQuery::new(terms);
        clauses.push((Occur::Must, Box::new(BoostQuery::new(Box::new(set), 0.0))));
    }
    if clauses.len() == 1 {
        return clauses.remove(0).1;
    }
    Box::new(BooleanQuery::new(clauses))
}

/// Runs a query; blocking (call it from a blocking thread).
pub fn search(
    m: &Memory,
    q: &str,
    filters: &Filters,
    limit: usize,
    offset: usize,
) -> Result<Answer, SearchError> {
    search_typed(m, q, filters, limit, offset, false)
}

/// [`search`] for a query being typed ([`question`] says what that changes).
pub fn search_typed(
    m: &Memory,
    q: &str,
    filters: &Filters,
    limit: usize,
    offset: usize,
    typing: bool,
) -> Result<Answer, SearchError> {
    let started = Instant::now();
    let k = Keyword::new(m, q, filters, typing)?;
    let (top, total) = k.top(limit, offset)?;
    let mut results = Vec::with_capacity(top.len());
    for (score, addr) in top {
        results.push(k.hit(score, addr)?);
    }
    Ok(Answer {
        results,
        total,
        limit,
        offset,
        search_time: started.elapsed().as_secs_f64() * 1000.0,
        mode: "keyword",
        note: None,
        question: None,
    })
}

/// A keyword search, parsed once: its ranked documents, their paths, and hits with snippets
/// made only for the documents shown (a snippet reads the whole document's text, so hybrid
/// search ranks 50 candidates by path and makes snippets for its page only).
pub(crate) struct Keyword<'a> {
    m: &'a Memory,
    q: &'a str,
    query: Box<dyn Query>,
    searcher: tantivy::Searcher,
    snippets: SnippetGenerator,
}

impl<'a> Keyword<'a> {
    pub(crate) fn new(
        m: &'a Memory,
        q: &'a str,
        filters: &Filters,
        typing: bool,
    ) -> Result<Keyword<'a>, SearchError> {
        let (query, marks) = if is_explicit(q) {
            (parse(m, q)?, None)
        } else {
            let (query, marks) = question(m, q, typing)?;
            (query, Some(marks))
        };
        let query = filtered(m, query, filters);
        let searcher = m.reader.searcher();
        // a question's terms are stems in other fields: the snippet marks its words in the body
        let highlight: Box<dyn Query> = match marks {
            Some(terms) if !terms.is_empty() => Box::new(TermSetQuery::new(terms)),
            Some(_) => Box::new(EmptyQuery),
            None => query.box_clone(),
        };
        let mut snippets = SnippetGenerator::create(&searcher, &*highlight, m.fields.body)
            .map_err(|e| refused_by_schema(q, e))?;
        snippets.set_max_num_chars(200);
        Ok(Keyword {
            m,
            q,
            query,
            searcher,
            snippets,
        })
    }

    /// The page `offset..offset + limit` of the ranked documents, and how many match.
    pub(crate) fn top(
        &self,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<(Score, DocAddress)>, usize), SearchError> {
        self.searcher
            .search(
                &self.query,
                &(
                    TopDocs::with_limit(limit.max(1))
                        .and_offset(offset)
                        .order_by_score(),
                    Count,
                ),
            )
            .map_err(|e| refused_by_schema(self.q, e))
    }

    /// A ranked document's path.
    pub(crate) fn path(&self, addr: DocAddress) -> Result<String, SearchError> {
        let doc: TantivyDocument = self.searcher.doc(addr)?;
        Ok(stored_text(&doc, self.m.fields.path))
    }

    /// A ranked document as a hit: its snippet (the best-scoring stretch) and the passage
    /// the snippet's first match is in.
    pub(crate) fn hit(&self, score: Score, addr: DocAddress) -> Result<Hit, SearchError> {
        let f = self.m.fields;
        let doc: TantivyDocument = self.searcher.doc(addr)?;
        let path = stored_text(&doc, f.path);
        let modified = stored_number(&doc, f.modified);
        let body = stored_text(&doc, f.body);
        let passages = super::passage::decode(&stored_text(&doc, f.passages));
        // the snippet is the document's best-scoring stretch: the passage holding its first
        // match is the one that answers (no second pass over the text)
        let snip = self.snippets.snippet(&body);
        let first_match = snip.highlighted().first().map_or(0, |r| r.start);
        let best = passage_at(&body, &passages, snip.fragment(), first_match);
        Ok(Hit {
            id: path.clone(),
            title: stored_text(&doc, f.title),
            filename: stored_text(&doc, f.filename),
            snippet: snip.to_html(),
            passage: best.map(|p| PassageHit {
                heading: p.heading(),
                heading_path: p.heading_path.clone(),
                start_line: p.start_line,
                end_line: p.end_line,
            }),
            path,
            score,
            last_modified: crate::clock::rfc3339_ms(modified).unwrap_or_default(),
            size: stored_number(&doc, f.size),
            signals: vec!["keyword"],
        })
    }
}

/// The passage holding the first match of `fragment` (the snippet, a stretch of `body`; the
/// match `first_match` bytes into it), or the first passage when there is nothing to place.
fn passage_at<'p>(
    body: &str,
    passages: &'p [super::passage::Passage],
    fragment: &str,
    first_match: usize,
) -> Option<&'p super::passage::Passage> {
    let at = (!fragment.is_empty())
        .then(|| body.find(fragment))
        .flatten()
        .map(|offset| (offset + first_match).min(body.len()))
        .map(|offset| {
            body.as_bytes()[..offset]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1
        });
    match at {
        Some(line) => passages
            .iter()
            .take_while(|p| p.start_line <= line)
            .last()
            .or(passages.first()),
        None => passages.first(),
    }
}

/// Snippet HTML (tantivy escapes the text and marks hits with `<b>`) as plain text, with hits
/// wrapped in `mark`, on one line.
pub fn snippet_text(html: &str, mark: &str) -> String {
    html.replace("<b>", mark)
        .replace("</b>", mark)
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A document near another, for `related_documents`.
#[derive(Debug, Serialize, PartialEq)]
pub struct Related {
    pub path: String,
    pub title: String,
    pub score: f32,
}

/// The documents nearest to the one at `path`, by the distinctive words they share with it
/// (more-like-this: its rarest, most frequent words, as a query); at most `limit`, never the
/// document itself. Blocking.
pub fn related(m: &Memory, path: &str, limit: usize) -> Result<Vec<Related>, SearchError> {
    let f = m.fields;
    let searcher = m.reader.searcher();
    let this = TermQuery::new(
        Term::from_field_text(f.path, path),
        IndexRecordOption::Basic,
    );
    let found: Vec<(Score, DocAddress)> =
        searcher.search(&this, &TopDocs::with_limit(1).order_by_score())?;
    let Some(&(_, addr)) = found.first() else {
        return Err(SearchError::Invalid(format!(
            "`{path}` is not an indexed document; list_documents names them"
        )));
    };
    let like = tantivy::query::MoreLikeThisQuery::builder()
        .with_min_doc_frequency(1)
        .with_min_term_frequency(1)
        .with_min_word_length(3)
        .with_max_query_terms(25)
        .with_document(addr);
    let top: Vec<(Score, DocAddress)> =
        searcher.search(&like, &TopDocs::with_limit(limit + 1).order_by_score())?;
    let mut out = Vec::with_capacity(limit);
    for (score, a) in top.into_iter().filter(|(_, a)| *a != addr).take(limit) {
        let doc: TantivyDocument = searcher.doc(a)?;
        out.push(Related {
            path: stored_text(&doc, f.path),
            title: stored_text(&doc, f.title),
            score,
        });
    }
    Ok(out)
}

/// A term from the index and how many documents hold it.
#[derive(Debug, Serialize, PartialEq)]
pub struct Suggestion {
    pub term: String,
    pub docs: u64,
}

/// How many dictionary terms one suggestion request may scan.
const SUGGEST_SCAN: usize = 20_000;

/// Index terms (of titles and bodies) that start with `prefix`, most frequent first.
/// The default tokenizer lowercases, so the prefix is lowercased too.
pub fn suggestions(m: &Memory, prefix: &str, limit: usize) -> Result<Vec<Suggestion>, SearchError> {
    let prefix = prefix.trim().to_lowercase();
    let mut upper = prefix.as_bytes().to_vec();
    upper.push(0xFF); // no UTF-8 text has this byte, so it bounds every continuation
    let mut counts: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let searcher = m.reader.searcher();
    for segment in searcher.segment_readers() {
        for field in [m.fields.title, m.fields.body] {
            let inverted = segment.inverted_index(field)?;
            let mut stream = inverted
                .terms()
                .range()
                .ge(prefix.as_bytes())
                .lt(&upper)
                .into_stream()
                .map_err(|e| SearchError::Index(e.into()))?;
            let mut scanned = 0;
            while stream.advance() && scanned < SUGGEST_SCAN {
                scanned += 1;
                if let Ok(term) = std::str::from_utf8(stream.key()) {
                    *counts.entry(term.to_string()).or_default() +=
                        u64::from(stream.value().doc_freq);
                }
            }
        }
    }
    let mut out: Vec<Suggestion> = counts
        .into_iter()
        .map(|(term, docs)| Suggestion { term, docs })
        .collect();
    out.sort_by(|a, b| b.docs.cmp(&a.docs).then_with(|| a.term.cmp(&b.term)));
    out.truncate(limit);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_page_by_path_and_skip_removed_documents() {
        let dir = tempfile::tempdir().unwrap();
        for p in ["a/2.md", "a/1.md", "ab/x.md", "b/3.md"] {
            let full = dir.path().join(p);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, "words\n").unwrap();
        }
        let m = Memory::open(dir.path(), &super::super::OpenOptions::default()).unwrap();
        let mut sink = |_: &str, _: serde_json::Value| {};
        super::super::indexer::run_blocking(&m, None, &mut sink).unwrap();
        let paths = |l: Vec<Listed>| l.into_iter().map(|d| d.path).collect::<Vec<_>>();
        let (all, total) = list(&m, "", None, 10).unwrap();
        assert_eq!(total, 4);
        assert_eq!(paths(all), ["a/1.md", "a/2.md", "ab/x.md", "b/3.md"]);
        let (page, total) = list(&m, "a/", None, 1).unwrap();
        assert_eq!((paths(page), total), (vec!["a/1.md".to_string()], 2));
        let (page, _) = list(&m, "a/", Some("a/1.md"), 1).unwrap();
        assert_eq!(paths(page), ["a/2.md"]);
        let (page, _) = list(&m, "a/", Some("a/2.md"), 5).unwrap();
        assert!(page.is_empty());
        // a removed file's term stays in the dictionary until a merge; its document is gone
        std::fs::remove_file(dir.path().join("a/1.md")).unwrap();
        super::super::indexer::run_blocking(&m, None, &mut sink).unwrap();
        m.reader.reload().unwrap();
        let (page, total) = list(&m, "a", None, 10).unwrap();
        assert_eq!(
            (paths(page), total),
            (vec!["a/2.md".into(), "ab/x.md".into()], 2)
        );
    }

    #[test]
    fn snippets_become_text() {
        assert_eq!(
            snippet_text("a <b>hit</b> &amp; &lt;tag&gt;\n next", "**"),
            "a **hit** & <tag> next"
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let dir = tempfile::tempdir().unwrap();
        let m = Memory::open(dir.path(), &super::super::OpenOptions::default()).unwrap();
        match parse(&m, "alpha AND (beta") {
            Err(SearchError::Syntax { position, .. }) => assert!(position > 0),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("an unclosed parenthesis parsed"),
        }
        match parse(&m, "alpha nosuch:beta") {
            Err(SearchError::Syntax { position, message }) => {
                assert_eq!(position, 6);
                assert!(message.contains("nosuch"), "{message}");
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("an unknown field parsed"),
        }
        assert!(parse(&m, "alpha \"beta gamma\" -delta").is_ok());
        // accepted by the grammar, refused by the index: the client's mistake, with a place
        match search(&m, "alpha body:*", &Filters::default(), 10, 0) {
            Err(SearchError::Syntax { position, message }) => {
                assert_eq!(position, 6);
                assert!(message.contains("field:*"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deep_queries_are_refused_before_parsing() {
        for deep in [
            "(".repeat(800),
            format!("{}a{}", "(".repeat(21), ")".repeat(21)),
            "NOT ".repeat(30) + "a",
            "(NOT ".repeat(11) + "a",
            // a quote does not hide parentheses from the count, nor close them
            format!("\"x\" {}", "(a) ".repeat(21)),
            format!("\\) {}", "(".repeat(21)),
        ] {
            match check_shape(&deep) {
                Err(SearchError::TooComplex(m)) => assert!(m.contains("20 levels"), "{m}"),
                other => panic!("{deep:?}: {other:?}"),
            }
        }
        match check_shape(&"a ".repeat(600)) {
            Err(SearchError::TooComplex(m)) => assert!(m.contains("limit is 1000"), "{m}"),
            other => panic!("{other:?}"),
        }
        for fine in [
            "(a OR b) AND (c OR d)",
            &"(a OR b) ".repeat(40),
            "\"foo (bar\" baz",
            "don't NOT stop",
            &format!("{}a{}", "(".repeat(20), ")".repeat(20)),
            &"(".repeat(20),
            &("NOT ".repeat(20) + "a"),
            &("(NOT ".repeat(10) + "a"),
            &("(-".repeat(20) + "a"),
        ] {
            assert!(check_shape(fine).is_ok(), "{fine}");
            assert!(runs_on_a_small_stack(fine.to_string()), "{fine}");
        }
    }

    /// Parses and runs `q` on a 2 MiB stack (what tokio's blocking threads get), in an
    /// unoptimised build whose frames are the largest; false if the thread died.
    fn runs_on_a_small_stack(q: String) -> bool {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let dir = tempfile::tempdir().unwrap();
                let m = Memory::open(dir.path(), &super::super::OpenOptions::default()).unwrap();
                let _ = search(&m, &q, &Filters::default(), 10, 0);
            })
            .unwrap()
            .join()
            .is_ok()
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("CMEM_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
            ..ProptestConfig::default()
        })]
        /// Whatever passes the shape check parses and runs on a small stack.
        #[test]
        fn what_passes_the_check_never_overflows(q in "([()\"'\\\\:+\\-*^~ ]|NOT |AND |OR |a|title:|[0-9]){0,400}") {
            if check_shape(&q).is_ok() {
                prop_assert!(runs_on_a_small_stack(q));
            }
        }
    }
}

/// One indexed document, as a listing shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Listed {
    pub path: String,
    pub size: u64,
    pub last_modified: String,
}

/// Indexed documents whose path starts with `prefix`, in path order, after the path `after`
/// (for the next page): at most `limit`, and how many match in all. Reads the `path` term
/// dictionary and two fast fields, never a stored document, so a listing of a large index
/// costs one pass over its paths.
pub fn list(
    m: &Memory,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<Listed>, usize), SearchError> {
    use std::collections::BTreeMap;
    use tantivy::DocSet;
    use tantivy::schema::IndexRecordOption;
    let io = |e: std::io::Error| SearchError::Index(e.into());
    let limit = limit.max(1);
    let searcher = m.reader.searcher();
    let mut page: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut total = 0usize;
    let start = match after {
        Some(a) if a >= prefix => a,
        _ => prefix,
    };
    for seg in searcher.segment_readers() {
        let inverted = seg.inverted_index(m.fields.path)?;
        let fast = seg.fast_fields();
        let modified = fast.u64("modified")?;
        let size = fast.u64("size")?;
        let mut terms = inverted
            .terms()
            .range()
            .ge(prefix.as_bytes())
            .into_stream()
            .map_err(io)?;
        while terms.advance() {
            let key = terms.key();
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            let mut postings = inverted
                .read_postings_from_terminfo(terms.value(), IndexRecordOption::Basic)
                .map_err(io)?;
            let mut alive = None;
            while postings.doc() != tantivy::TERMINATED {
                if !seg.is_deleted(postings.doc()) {
                    alive = Some(postings.doc());
                    break;
                }
                postings.advance();
            }
            let Some(doc) = alive else { continue };
            total += 1;
            let Ok(path) = std::str::from_utf8(key) else {
                continue;
            };
            if after.is_some() && path <= start {
                continue;
            }
            if page.len() < limit
                || page
                    .last_key_value()
                    .is_some_and(|(k, _)| path < k.as_str())
            {
                page.insert(
                    path.to_string(),
                    (
                        size.first(doc).unwrap_or_default(),
                        modified.first(doc).unwrap_or_default(),
                    ),
                );
                if page.len() > limit {
                    page.pop_last();
                }
            }
        }
    }
    let listed = page
        .into_iter()
        .map(|(path, (size, modified))| Listed {
            path,
            size,
            last_modified: crate::clock::rfc3339_ms(modified).unwrap_or_default(),
        })
        .collect();
    Ok((listed, total))
}
