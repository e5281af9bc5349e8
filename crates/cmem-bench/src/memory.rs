//! The memory benchmark: index throughput on a generated corpus of mixed text, search latency
//! at that size (in-process and over HTTP), and ripgrep scanning the same files as a reference.
//!
//! The corpus is deterministic (fixed seed), so runs on different days measure the same
//! files. Marker words are planted at known rates, which lets the run check that cmem and
//! ripgrep agree on how many documents match before comparing their times.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

use cmem::memory::search::Filters;
use cmem::memory::{Memory, OpenOptions};

/// Bumped when the generator changes, so an old corpus is not reused.
const GENERATOR_VERSION: u32 = 1;

/// xorshift64*: a few lines for a fast, reproducible stream; the corpus needs speed and a
/// fixed sequence, not statistical quality, so a crate would add nothing.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Words from syllables, drawn with a Zipf-like law (weight 1/rank) as natural text is.
struct Vocabulary {
    words: Vec<String>,
    cumulative: Vec<f64>,
}

const SYLLABLES: [&str; 40] = [
    "ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "da", "chi", "mo", "ra", "le", "ni",
    "sa", "to", "wu", "ze", "fi", "gar", "bel", "tor", "min", "vas", "dun", "pel", "sor", "hil",
    "quen", "ar", "el", "in", "on", "us", "eth", "ost", "ump", "ald", "ion",
];

impl Vocabulary {
    fn new(size: usize, rng: &mut Rng) -> Vocabulary {
        let mut words = Vec::with_capacity(size);
        let mut seen = std::collections::HashSet::new();
        while words.len() < size {
            let n = 1 + rng.below(4);
            let w: String = (0..n)
                .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
                .collect();
            if w.len() > 2 && seen.insert(w.clone()) {
                words.push(w);
            }
        }
        let mut total = 0.0;
        let cumulative = (1..=size)
            .map(|r| {
                total += 1.0 / r as f64;
                total
            })
            .collect();
        Vocabulary { words, cumulative }
    }

    fn word(&self, rng: &mut Rng) -> &str {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let x = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * total;
        let i = self.cumulative.partition_point(|c| *c < x);
        &self.words[i.min(self.words.len() - 1)]
    }
}

/// Planted words: (word, one file in every N has it).
const MARKERS: [(&str, usize); 3] = [
    ("raremarker", 10_000),
    ("midmarker", 100),
    ("commonmarker", 10),
];
/// A planted phrase, in one file in every 50.
const PHRASE: (&str, usize) = ("velvet horizon", 50);

#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
struct Manifest {
    version: u32,
    files: usize,
    size_mb: u64,
    bytes: u64,
    top_words: Vec<String>,
}

fn sentence(v: &Vocabulary, rng: &mut Rng, out: &mut String) {
    let n = 6 + rng.below(12);
    for i in 0..n {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(v.word(rng));
    }
    out.push_str(". ");
}

/// One file's text in the style of its extension, about `target` bytes long.
fn file_text(i: usize, ext: &str, target: usize, v: &Vocabulary, rng: &mut Rng) -> String {
    let mut s = String::with_capacity(target + 256);
    let mut planted = Vec::new();
    for (w, every) in MARKERS {
        if i.is_multiple_of(every) {
            planted.push(w);
        }
    }
    if i.is_multiple_of(PHRASE.1) {
        planted.push(PHRASE.0);
    }
    let extra = planted.join(" ");
    match ext {
        "md" => {
            s.push_str("# ");
            sentence(v, rng, &mut s);
            s.push_str("\n\n");
        }
        "html" => s.push_str("<html><head><title>page</title></head><body>\n<p>"),
        "json" => s.push_str("{\n  \"notes\": [\n"),
        _ => {}
    }
    s.push_str(&extra);
    s.push('\n');
    while s.len() < target {
        match ext {
            "rs" => {
                s.push_str(&format!("fn {}_{}() {{\n    // ", v.word(rng), v.word(rng)));
                sentence(v, rng, &mut s);
                s.push_str(&format!(
                    "\n    let {} = \"{}\";\n}}\n",
                    v.word(rng),
                    v.word(rng)
                ));
            }
            "py" => {
                s.push_str(&format!(
                    "def {}({}):\n    \"\"\"",
                    v.word(rng),
                    v.word(rng)
                ));
                sentence(v, rng, &mut s);
                s.push_str("\"\"\"\n    return None\n\n");
            }
            "json" => {
                s.push_str(&format!("    {{\"{}\": \"", v.word(rng)));
                sentence(v, rng, &mut s);
                s.push_str("\"},\n");
            }
            "yaml" => {
                s.push_str(&format!("{}: \"", v.word(rng)));
                sentence(v, rng, &mut s);
                s.push_str("\"\n");
            }
            "html" => {
                sentence(v, rng, &mut s);
                s.push_str("</p>\n<p>");
            }
            _ => {
                for _ in 0..4 {
                    sentence(v, rng, &mut s);
                }
                s.push_str("\n\n");
            }
        }
    }
    match ext {
        "html" => s.push_str("</p></body></html>\n"),
        "json" => s.push_str("    {}\n  ]\n}\n"),
        _ => {}
    }
    s
}

const EXTENSIONS: [&str; 10] = [
    "md", "md", "md", "md", "txt", "rs", "py", "json", "yaml", "html",
];

/// Writes (or reuses) the corpus; returns its manifest.
fn corpus(dir: &Path, size_mb: u64, files: usize) -> anyhow::Result<Manifest> {
    let manifest_path = dir.join(".corpus.json");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let vocab = Vocabulary::new(30_000, &mut rng);
    let top_words: Vec<String> = vocab.words.iter().take(5_000).cloned().collect();
    if let Ok(text) = std::fs::read_to_string(&manifest_path)
        && let Ok(m) = serde_json::from_str::<Manifest>(&text)
        && m.version == GENERATOR_VERSION
        && m.files == files
        && m.size_mb == size_mb
    {
        eprintln!("memory: reusing the corpus in {}", dir.display());
        return Ok(m);
    }
    eprintln!(
        "memory: writing a {size_mb} MB corpus of {files} files to {}",
        dir.display()
    );
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clear {}", dir.display()))?;
    }
    let started = Instant::now();
    let avg = (size_mb as usize * 1_000_000) / files.max(1);
    let mut bytes = 0u64;
    for i in 0..files {
        let sub = dir.join(format!("d{:03}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        let ext = EXTENSIONS[i % EXTENSIONS.len()];
        let target = avg / 5 + rng.below(avg * 8 / 5 + 1);
        let text = file_text(i, ext, target, &vocab, &mut rng);
        bytes += text.len() as u64;
        std::fs::write(sub.join(format!("f{i:06}.{ext}")), text)?;
    }
    let m = Manifest {
        version: GENERATOR_VERSION,
        files,
        size_mb,
        bytes,
        top_words,
    };
    std::fs::write(&manifest_path, serde_json::to_vec(&m)?)?;
    eprintln!(
        "memory: corpus written in {:.1} s ({:.0} MB)",
        started.elapsed().as_secs_f64(),
        bytes as f64 / 1e6
    );
    Ok(m)
}

#[derive(Debug, Serialize)]
pub struct IndexRun {
    pub threads: usize,
    pub seconds: f64,
    pub files: u64,
    pub mb: f64,
    pub mb_per_s: f64,
    pub files_per_s: f64,
    pub index_mb: f64,
}

/// `cmem index` on a fresh index, timed from outside (process start to exit).
async fn index_once(bin: &Path, dir: &Path, threads: usize) -> anyhow::Result<IndexRun> {
    let state = dir.join(".collective-memory");
    if state.exists() {
        std::fs::remove_dir_all(&state)?;
    }
    let started = Instant::now();
    let out = tokio::process::Command::new(bin)
        .arg("index")
        .arg(dir)
        .args(["--json", "--threads", &threads.to_string()])
        .env("CM_INDEX_MAX_FILE_BYTES", "100000000")
        .output()
        .await
        .with_context(|| format!("run {}", bin.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{} index failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("cmem index --json output")?;
    let files = v["indexed"].as_u64().unwrap_or(0);
    let mb = v["indexed_bytes"].as_u64().unwrap_or(0) as f64 / 1e6;
    Ok(IndexRun {
        threads,
        seconds,
        files,
        mb,
        mb_per_s: mb / seconds,
        files_per_s: files as f64 / seconds,
        index_mb: v["index_bytes"].as_u64().unwrap_or(0) as f64 / 1e6,
    })
}

#[derive(Debug, Serialize)]
pub struct QueryTiming {
    pub query: String,
    /// Documents cmem found.
    pub total: u64,
    pub engine_p50_ms: f64,
    pub engine_p99_ms: f64,
    pub http_p50_ms: Option<f64>,
    pub http_p99_ms: Option<f64>,
    /// Files ripgrep lists for the same words (single words and the phrase only).
    pub rg_files: Option<u64>,
    pub rg_ms: Option<f64>,
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
    })
}

/// `rg -l -i -F` over the corpus: (files listed, median ms of three warm runs).
async fn ripgrep(dir: &Path, needle: &str) -> Option<(u64, f64)> {
    let mut times = Vec::new();
    let mut files = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let out = tokio::process::Command::new("rg")
            .args(["-l", "-i", "-F", "--", needle])
            .arg(dir)
            .stderr(Stdio::null())
            .output()
            .await
            .ok()?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        files = out.stdout.iter().filter(|b| **b == b'\n').count() as u64;
    }
    times.sort_by(f64::total_cmp);
    Some((files, times[1]))
}

#[derive(Debug, Serialize)]
pub struct MemoryResult {
    pub corpus_files: usize,
    pub corpus_mb: f64,
    pub index: Vec<IndexRun>,
    pub index_docs: u64,
    pub queries: Vec<QueryTiming>,
    pub engine_p50_ms: f64,
    pub engine_p99_ms: f64,
    pub http_p50_ms: Option<f64>,
    pub http_p99_ms: Option<f64>,
    pub ripgrep: bool,
    /// Marker words where cmem and ripgrep disagree on the number of documents.
    pub disagreements: Vec<String>,
}

pub struct MemoryArgs {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub size_mb: u64,
    pub files: usize,
    pub threads: Vec<usize>,
    pub repeat: usize,
    pub http: bool,
}

/// Runs the whole memory benchmark.
pub async fn run(a: MemoryArgs) -> anyhow::Result<MemoryResult> {
    let dir = a.dir.clone();
    let (size_mb, files) = (a.size_mb, a.files);
    let manifest = tokio::task::spawn_blocking(move || corpus(&dir, size_mb, files)).await??;
    // warm the page cache once so the first index run is not also a disk benchmark
    let _ = ripgrep(&a.dir, "warmup-nothing-matches").await;

    let mut index = Vec::new();
    for &t in &a.threads {
        let r = index_once(&a.bin, &a.dir, t).await?;
        eprintln!(
            "memory: indexed {} files ({:.0} MB) with {} thread(s) in {:.1} s: {:.1} MB/s, {:.0} files/s, index {:.0} MB",
            r.files, r.mb, r.threads, r.seconds, r.mb_per_s, r.files_per_s, r.index_mb
        );
        index.push(r);
    }

    let w = &manifest.top_words;
    let word = |i: usize| w.get(i).cloned().unwrap_or_else(|| "ka".into());
    let queries: Vec<String> = vec![
        "raremarker".into(),
        "midmarker".into(),
        "commonmarker".into(),
        word(0),
        word(100),
        word(4000),
        "midmarker commonmarker".into(),
        format!("\"{}\"", PHRASE.0),
        format!("{} OR {}", word(10), word(3000)),
    ];
    let memory = Memory::open(
        &a.dir,
        &OpenOptions {
            read_only: true,
            history_max: 0,
            ..OpenOptions::default()
        },
    )?;
    let index_docs = memory.doc_count();
    let rg = tokio::process::Command::new("rg")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !rg {
        eprintln!("memory: ripgrep (rg) is not installed: NO ripgrep reference in this run");
    }

    let server = if a.http {
        // keyword search is what is timed here: no embedding model, so no background
        // embedding of the corpus competes with the searches (`retrieval` and `vectors`
        // measure meaning search)
        Some(crate::servers::start_cmem_in(&a.bin, &a.dir, &[("CM_EMBEDDING_MODEL", "off")]).await?)
    } else {
        None
    };
    if let Some(s) = &server {
        wait_indexed(&s.target.base).await?;
    }
    let client = reqwest::Client::new();
    let mut all_engine = histogram();
    let mut all_http = histogram();
    let mut timings = Vec::new();
    let mut disagreements = Vec::new();
    for q in &queries {
        let mut engine = histogram();
        let mut total = 0;
        for _ in 0..a.repeat {
            let started = Instant::now();
            let answer = cmem::memory::search::search(&memory, q, &Filters::default(), 20, 0)?;
            let us = started.elapsed().as_micros() as u64;
            total = answer.total as u64;
            let _ = engine.record(us.max(1));
            let _ = all_engine.record(us.max(1));
        }
        let mut http = None;
        if let Some(s) = &server {
            let mut h = histogram();
            let url = format!("{}/api/search", s.target.base);
            for _ in 0..a.repeat {
                let started = Instant::now();
                let r = client.get(&url).query(&[("q", q.as_str())]).send().await?;
                if !r.status().is_success() {
                    bail!("search {q} over HTTP: {}", r.status());
                }
                let _ = r.bytes().await?;
                let us = started.elapsed().as_micros() as u64;
                let _ = h.record(us.max(1));
                let _ = all_http.record(us.max(1));
            }
            http = Some(h);
        }
        let needle = q.trim_matches('"');
        let rg_result = if rg && (!needle.contains(' ') || needle == PHRASE.0) {
            ripgrep(&a.dir, needle).await
        } else {
            None
        };
        if let Some((files, _)) = rg_result
            && MARKERS.iter().any(|(m, _)| *m == needle)
            && files != total
        {
            disagreements.push(format!("{needle}: cmem {total}, ripgrep {files}"));
        }
        let t = QueryTiming {
            query: q.clone(),
            total,
            engine_p50_ms: ms(&engine, 0.5),
            engine_p99_ms: ms(&engine, 0.99),
            http_p50_ms: http.as_ref().map(|h| ms(h, 0.5)),
            http_p99_ms: http.as_ref().map(|h| ms(h, 0.99)),
            rg_files: rg_result.map(|r| r.0),
            rg_ms: rg_result.map(|r| r.1),
        };
        eprintln!(
            "memory: {:<28} {:>6} docs  engine p50 {:.2} ms p99 {:.2} ms{}{}",
            t.query,
            t.total,
            t.engine_p50_ms,
            t.engine_p99_ms,
            t.http_p50_ms
                .map(|p| format!(
                    "  http p50 {p:.2} ms p99 {:.2} ms",
                    t.http_p99_ms.unwrap_or(0.0)
                ))
                .unwrap_or_default(),
            t.rg_ms
                .map(|r| format!("  rg {r:.0} ms ({} files)", t.rg_files.unwrap_or(0)))
                .unwrap_or_default()
        );
        timings.push(t);
    }
    drop(server);
    Ok(MemoryResult {
        corpus_files: manifest.files,
        corpus_mb: manifest.bytes as f64 / 1e6,
        index,
        index_docs,
        queries: timings,
        engine_p50_ms: ms(&all_engine, 0.5),
        engine_p99_ms: ms(&all_engine, 0.99),
        http_p50_ms: a.http.then(|| ms(&all_http, 0.5)),
        http_p99_ms: a.http.then(|| ms(&all_http, 0.99)),
        ripgrep: rg,
        disagreements,
    })
}

/// Waits for the server's start-up indexing run to finish.
async fn wait_indexed(base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("{base}/system/indexing")).await
            && let Ok(v) = r.json::<Value>().await
            && v["data"]["running"] == false
            && v["data"]["finished_at"].is_string()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the server's indexing did not finish in 10 minutes")
}

/// Markdown for BENCHMARKS.md.
pub fn markdown(r: &MemoryResult) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Corpus: {} files, {:.0} MB of mixed text (md, txt, rs, py, json, yaml, html); index holds {} documents.\n\n",
        r.corpus_files, r.corpus_mb, r.index_docs
    ));
    s.push_str(
        "| indexing threads | seconds | MB/s | files/s | index size |\n|---|---|---|---|---|\n",
    );
    for i in &r.index {
        s.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.0} | {:.0} MB |\n",
            i.threads, i.seconds, i.mb_per_s, i.files_per_s, i.index_mb
        ));
    }
    s.push_str("\n| query | docs | engine p50 | engine p99 | HTTP p50 | HTTP p99 | ripgrep (files, median of 3) |\n|---|---|---|---|---|---|---|\n");
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.2} ms")).unwrap_or("–".into());
    for q in &r.queries {
        s.push_str(&format!(
            "| `{}` | {} | {:.2} ms | {:.2} ms | {} | {} | {} |\n",
            q.query.replace('|', "\\|"),
            q.total,
            q.engine_p50_ms,
            q.engine_p99_ms,
            opt(q.http_p50_ms),
            opt(q.http_p99_ms),
            q.rg_ms
                .map(|m| format!("{m:.0} ms ({})", q.rg_files.unwrap_or(0)))
                .unwrap_or("–".into())
        ));
    }
    s.push_str(&format!(
        "| **all** | | **{:.2} ms** | **{:.2} ms** | **{}** | **{}** | |\n",
        r.engine_p50_ms,
        r.engine_p99_ms,
        opt(r.http_p50_ms),
        opt(r.http_p99_ms)
    ));
    s
}
