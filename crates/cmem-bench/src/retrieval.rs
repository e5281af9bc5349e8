//! Retrieval quality: plain-English questions with judged answers over a public
//! documentation corpus, asked of a running cmem in each search mode (keyword, semantic,
//! hybrid); nDCG@10 and recall@5 per mode, and the server's search time.
//!
//! The corpus is the Git documentation from Debian's `git-doc` package
//! (`scripts/retrieval-corpus.sh` puts its `.txt` files in `target/retrieval-corpus/git-doc`);
//! the questions and their judgments are `data/git-questions.tsv`, written before any result
//! was seen. The corpus keeps its index and vectors between runs (in its state folder), so
//! only the first run embeds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::servers;

pub struct RetrievalArgs {
    pub bin: PathBuf,
    pub corpus: PathBuf,
    pub questions: PathBuf,
    /// Times each question is asked per mode, for the timings.
    pub repeat: usize,
}

/// A question and its judged documents (path → grade, 1 or 2).
#[derive(Debug, Clone)]
pub struct Judged {
    pub question: String,
    pub relevant: HashMap<String, u32>,
}

/// Reads the questions file: `question<TAB>path:grade path:grade…`, `#` comments.
pub fn read_questions(text: &str) -> anyhow::Result<Vec<Judged>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (q, judged) = line
            .split_once('\t')
            .with_context(|| format!("line {}: no tab after the question", i + 1))?;
        let mut relevant = HashMap::new();
        for j in judged.split_whitespace() {
            let (p, g) = j
                .rsplit_once(':')
                .with_context(|| format!("line {}: `{j}` is not path:grade", i + 1))?;
            relevant.insert(p.to_string(), g.parse()?);
        }
        out.push(Judged {
            question: q.trim().to_string(),
            relevant,
        });
    }
    Ok(out)
}

/// nDCG@k with gains 2^grade − 1.
pub fn ndcg(ranked: &[String], relevant: &HashMap<String, u32>, k: usize) -> f64 {
    let gain = |g: u32| (2f64.powi(g as i32)) - 1.0;
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, p)| gain(relevant.get(p).copied().unwrap_or(0)) / ((i + 2) as f64).log2())
        .sum();
    let mut ideal: Vec<u32> = relevant.values().copied().collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, g)| gain(*g) / ((i + 2) as f64).log2())
        .sum();
    if idcg == 0.0 { 0.0 } else { dcg / idcg }
}

/// The share of the relevant documents in the first `k`.
pub fn recall(ranked: &[String], relevant: &HashMap<String, u32>, k: usize) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    let found = ranked
        .iter()
        .take(k)
        .filter(|p| relevant.contains_key(*p))
        .count();
    found as f64 / relevant.len() as f64
}

#[derive(Debug, Serialize)]
pub struct ModeResult {
    pub mode: String,
    pub ndcg_at_10: f64,
    pub recall_at_5: f64,
    /// Questions with a relevant document first.
    pub first_right: usize,
    /// Server-side search time over every question, median of the repeats (ms).
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct RetrievalResult {
    pub corpus: String,
    pub documents: u64,
    pub passages: u64,
    pub questions: usize,
    /// Embedding done by this run (0 when the vectors were already there).
    pub embedded_passages: u64,
    pub embedding_s: f64,
    pub modes: Vec<ModeResult>,
    /// Per question and mode: the rank of the first relevant document (0 = not in the 10).
    pub per_question: Vec<(String, Vec<usize>)>,
    /// Weighted RRF of the keyword and semantic lists (their first 50) computed here for a
    /// grid of weights, on the odd-numbered questions (tuning) and the even ones (held out).
    pub fusion_grid: Vec<FusionPoint>,
}

#[derive(Debug, Serialize)]
pub struct FusionPoint {
    pub k: f64,
    pub keyword_weight: f64,
    pub semantic_weight: f64,
    pub ndcg_tune: f64,
    pub ndcg_held_out: f64,
    pub recall_tune: f64,
    pub recall_held_out: f64,
}

/// The fused order of two scored lists by a convex combination of their min-max normalised
/// scores (`alpha` on the second); a document missing from a list scores 0 there.
pub fn convex(a: (&[String], &[f64]), b: (&[String], &[f64]), alpha: f64) -> Vec<String> {
    let norm = |s: &[f64]| {
        let (lo, hi) = s
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        let span = (hi - lo).max(1e-9);
        s.iter().map(|x| (x - lo) / span).collect::<Vec<f64>>()
    };
    let mut score: HashMap<&String, f64> = HashMap::new();
    for (p, x) in a.0.iter().zip(norm(a.1)) {
        *score.entry(p).or_default() += (1.0 - alpha) * x;
    }
    for (p, x) in b.0.iter().zip(norm(b.1)) {
        *score.entry(p).or_default() += alpha * x;
    }
    let mut order: Vec<(&String, f64)> = score.into_iter().collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    order.into_iter().map(|(p, _)| p.clone()).collect()
}

/// The fused order of two ranked lists (RRF: Σ weight / (k + rank)), as the server fuses.
pub fn rrf(lists: &[(&[String], f64)], k: f64) -> Vec<String> {
    let mut score: HashMap<&String, f64> = HashMap::new();
    for (list, w) in lists {
        for (i, p) in list.iter().enumerate() {
            *score.entry(p).or_default() += w / (k + i as f64 + 1.0);
        }
    }
    let mut order: Vec<(&String, f64)> = score.into_iter().collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    order.into_iter().map(|(p, _)| p.clone()).collect()
}

async fn get_json(c: &reqwest::Client, url: &str) -> anyhow::Result<serde_json::Value> {
    let r = c.get(url).send().await?;
    let status = r.status();
    let v: serde_json::Value = r.json().await?;
    if !status.is_success() {
        bail!("{url}: {status}: {v}");
    }
    Ok(v)
}

pub async fn run(a: RetrievalArgs) -> anyhow::Result<RetrievalResult> {
    if !a.corpus.is_dir() {
        bail!(
            "{} is missing: run scripts/retrieval-corpus.sh first",
            a.corpus.display()
        );
    }
    let questions = read_questions(&std::fs::read_to_string(&a.questions)?)?;
    let server = servers::start_cmem_in(&a.bin, &a.corpus, &[]).await?;
    let base = server.target.base.clone();
    let c = reqwest::Client::new();
    // indexing, then the vectors: wait until both are done
    let started = Instant::now();
    let status = loop {
        let s = get_json(&c, &format!("{base}/system/indexing")).await?;
        let d = &s["data"];
        let v = &d["vectors"];
        let done = d["running"] == false
            && d["finished_at"].is_string()
            && v["running"] == false
            && v["documents"].as_u64().is_some()
            && v["documents"] == v["documents_total"]
            && v["documents_total"].as_u64() > Some(0);
        if done {
            break d.clone();
        }
        if v["model"].is_null() && d["finished_at"].is_string() {
            bail!("this cmem has no embedding model: {}", v["reason"]);
        }
        if started.elapsed() > Duration::from_secs(4 * 3600) {
            bail!("indexing and embedding did not finish in 4 hours");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let v = &status["vectors"];
    let modes = ["keyword", "semantic", "hybrid"];
    let mut results = Vec::new();
    let mut first_ranks: Vec<Vec<usize>> = vec![Vec::new(); questions.len()];
    // the first 50 of keyword and of semantic, per question, for the fusion grid
    let mut lists: HashMap<&str, Vec<Vec<String>>> = HashMap::new();
    let mut scores: HashMap<&str, Vec<Vec<f64>>> = HashMap::new();
    for mode in ["keyword", "semantic"] {
        for j in &questions {
            let url = reqwest::Url::parse_with_params(
                &format!("{base}/api/search"),
                &[("q", j.question.as_str()), ("limit", "50"), ("mode", mode)],
            )?;
            let answer = get_json(&c, url.as_str()).await?;
            let hits = answer["data"]["results"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ranked = hits
                .iter()
                .filter_map(|h| h["path"].as_str().map(str::to_string))
                .collect();
            lists.entry(mode).or_default().push(ranked);
            scores.entry(mode).or_default().push(
                hits.iter()
                    .map(|h| h["score"].as_f64().unwrap_or(0.0))
                    .collect(),
            );
        }
    }
    let mut fusion_grid = Vec::new();
    // convex combination of min-max normalised scores (k = 0 in the table): alpha on meaning
    for alpha in [0.6, 0.65, 0.7, 0.75, 0.8] {
        let (mut nd, mut rc) = ([0.0; 2], [0.0; 2]);
        for (qi, j) in questions.iter().enumerate() {
            let fused = convex(
                (&lists["keyword"][qi], &scores["keyword"][qi]),
                (&lists["semantic"][qi], &scores["semantic"][qi]),
                alpha,
            );
            nd[qi % 2] += ndcg(&fused, &j.relevant, 10);
            rc[qi % 2] += recall(&fused, &j.relevant, 5);
        }
        let half = |i: usize| questions.iter().skip(i).step_by(2).count().max(1) as f64;
        fusion_grid.push(FusionPoint {
            k: 0.0,
            keyword_weight: 1.0 - alpha,
            semantic_weight: alpha,
            ndcg_tune: nd[1] / half(1),
            ndcg_held_out: nd[0] / half(0),
            recall_tune: rc[1] / half(1),
            recall_held_out: rc[0] / half(0),
        });
    }
    for k in [10.0, 60.0] {
        for kw in [0.0, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0] {
            let (mut nd, mut rc) = ([0.0; 2], [0.0; 2]);
            for (qi, j) in questions.iter().enumerate() {
                let fused = rrf(
                    &[(&lists["keyword"][qi], kw), (&lists["semantic"][qi], 1.0)],
                    k,
                );
                nd[qi % 2] += ndcg(&fused, &j.relevant, 10);
                rc[qi % 2] += recall(&fused, &j.relevant, 5);
            }
            let half = |i: usize| questions.iter().skip(i).step_by(2).count().max(1) as f64;
            fusion_grid.push(FusionPoint {
                k,
                keyword_weight: kw,
                semantic_weight: 1.0,
                ndcg_tune: nd[1] / half(1),
                ndcg_held_out: nd[0] / half(0),
                recall_tune: rc[1] / half(1),
                recall_held_out: rc[0] / half(0),
            });
        }
    }
    for mode in modes {
        let (mut nd, mut rc, mut first) = (0.0, 0.0, 0usize);
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); a.repeat.max(1)];
        for (qi, j) in questions.iter().enumerate() {
            for (rep, slot) in times.iter_mut().enumerate() {
                let url = reqwest::Url::parse_with_params(
                    &format!("{base}/api/search"),
                    &[("q", j.question.as_str()), ("limit", "10"), ("mode", mode)],
                )?;
                let answer = get_json(&c, url.as_str()).await?;
                let d = &answer["data"];
                slot.push(d["searchTime"].as_f64().unwrap_or(0.0));
                if rep > 0 {
                    continue;
                }
                let ranked: Vec<String> = d["results"]
                    .as_array()
                    .map(|r| {
                        r.iter()
                            .filter_map(|h| h["path"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                nd += ndcg(&ranked, &j.relevant, 10);
                rc += recall(&ranked, &j.relevant, 5);
                let rank = ranked
                    .iter()
                    .position(|p| j.relevant.contains_key(p))
                    .map_or(0, |i| i + 1);
                if rank == 1 {
                    first += 1;
                }
                first_ranks[qi].push(rank);
            }
        }
        let n = questions.len().max(1) as f64;
        // each repeat's percentile, then the median over the repeats
        let pct = |p: f64| {
            let mut per: Vec<f64> = times
                .iter()
                .map(|t| {
                    let mut t = t.clone();
                    t.sort_by(f64::total_cmp);
                    t[((t.len() as f64 - 1.0) * p).round() as usize]
                })
                .collect();
            per.sort_by(f64::total_cmp);
            per[per.len() / 2]
        };
        results.push(ModeResult {
            mode: mode.to_string(),
            ndcg_at_10: nd / n,
            recall_at_5: rc / n,
            first_right: first,
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
        });
    }
    Ok(RetrievalResult {
        corpus: a.corpus.display().to_string(),
        documents: status["index_docs"].as_u64().unwrap_or(0),
        passages: v["passages"].as_u64().unwrap_or(0),
        questions: questions.len(),
        embedded_passages: v["embedded_passages"].as_u64().unwrap_or(0),
        embedding_s: v["embedding_ms"].as_f64().unwrap_or(0.0) / 1000.0,
        modes: results,
        per_question: questions
            .iter()
            .map(|j| j.question.clone())
            .zip(first_ranks)
            .collect(),
        fusion_grid,
    })
}

pub fn markdown(r: &RetrievalResult) -> String {
    let mut s = format!(
        "Corpus: {} ({} documents, {} passages), {} judged questions.\n",
        r.corpus, r.documents, r.passages, r.questions
    );
    if r.embedded_passages > 0 {
        s.push_str(&format!(
            "Embedded {} passages in {:.1} s ({:.1} passages/s, one thread).\n",
            r.embedded_passages,
            r.embedding_s,
            r.embedded_passages as f64 / r.embedding_s.max(1e-9)
        ));
    }
    s.push_str("\n| mode | nDCG@10 | recall@5 | right first | search p50 | search p99 |\n|---|---|---|---|---|---|\n");
    for m in &r.modes {
        s.push_str(&format!(
            "| {} | {:.3} | {:.3} | {}/{} | {:.2} ms | {:.2} ms |\n",
            m.mode, m.ndcg_at_10, m.recall_at_5, m.first_right, r.questions, m.p50_ms, m.p99_ms
        ));
    }
    s.push_str("\nFusion grid over the first 50 of keyword and of semantic, computed here (tuned on the odd questions, held out: the even):\n\n| fusion | keyword weight | semantic weight | nDCG@10 tune | nDCG@10 held out | recall@5 tune | recall@5 held out |\n|---|---|---|---|---|---|---|\n");
    for g in &r.fusion_grid {
        let how = if g.k == 0.0 {
            "scores, min-max".to_string()
        } else {
            format!("RRF, k = {}", g.k)
        };
        s.push_str(&format!(
            "| {how} | {:.2} | {:.2} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            g.keyword_weight,
            g.semantic_weight,
            g.ndcg_tune,
            g.ndcg_held_out,
            g.recall_tune,
            g.recall_held_out
        ));
    }
    s
}

#[derive(Debug, Serialize)]
pub struct VectorScan {
    pub passages: usize,
    pub documents: usize,
    pub dim: usize,
    pub vector_mib: f64,
    /// Time to find the 50 nearest documents, per question (median of 3 runs of 50).
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Time to embed a question with the built-in model, if this binary has one (p50, ms).
    pub question_p50_ms: Option<f64>,
    pub model_load_ms: Option<f64>,
}

/// The exact vector scan at `passages` passages (random unit vectors of 384 numbers, 3
/// passages a document: the scan's cost does not depend on what the vectors say), and the
/// time to embed a question with the model at `model_dir` (the folder `cmem` is built with,
/// if given).
pub fn vector_scan(passages: usize, model_dir: Option<&Path>) -> anyhow::Result<VectorScan> {
    use cmem::memory::vectors::{DocVectors, Store};
    let dim = 384;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let mut unit = |n: usize| {
        let mut v: Vec<f32> = (0..n).map(|_| next()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    };
    let mut store = Store::new(dim);
    let per_doc = 3;
    for d in 0..passages.div_ceil(per_doc) {
        let n = per_doc.min(passages - d * per_doc);
        let flat: Vec<f32> = (0..n).flat_map(|_| unit(dim)).collect();
        store.docs.insert(
            format!("docs/{d:06}.md"),
            DocVectors::quantize(
                0,
                0,
                0,
                (0..n as u32).map(|i| (i * 10 + 1, i * 10 + 9)).collect(),
                &flat,
                dim,
            ),
        );
    }
    let questions: Vec<Vec<f32>> = (0..50).map(|_| unit(dim)).collect();
    let mut runs = Vec::new();
    for _ in 0..3 {
        let mut t: Vec<f64> = questions
            .iter()
            .map(|q| {
                let s = Instant::now();
                std::hint::black_box(store.nearest_docs(q, 50, |_| true));
                s.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        t.sort_by(f64::total_cmp);
        runs.push((t[t.len() / 2], t[((t.len() - 1) as f64 * 0.99) as usize]));
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (p50, p99) = runs[1];
    let (mut question_p50_ms, mut model_load_ms) = (None, None);
    if let Some(dir) = model_dir {
        let files = cmem::memory::embed::OwnedModelFiles::read(dir)?;
        let s = Instant::now();
        let e = cmem::memory::embed::Embedder::load(files.files())?;
        model_load_ms = Some(s.elapsed().as_secs_f64() * 1000.0);
        let qs = [
            "how do I undo my last commit but keep the changes",
            "which branching workflow should a team use",
            "remember my password so I do not have to type it every time",
        ];
        let mut t: Vec<f64> = (0..10)
            .flat_map(|_| qs.iter())
            .map(|q| {
                let s = Instant::now();
                let _ = e.embed(&[q]);
                s.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        t.sort_by(f64::total_cmp);
        question_p50_ms = Some(t[t.len() / 2]);
    }
    Ok(VectorScan {
        passages,
        documents: store.docs.len(),
        dim,
        vector_mib: store.vector_bytes() as f64 / (1024.0 * 1024.0),
        p50_ms: p50,
        p99_ms: p99,
        question_p50_ms,
        model_load_ms,
    })
}

/// Where the corpus script puts the Git documentation.
pub fn default_corpus() -> PathBuf {
    Path::new("target/retrieval-corpus/git-doc").to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_hand_computed_values() {
        let rel: HashMap<String, u32> = [("a".to_string(), 2), ("b".to_string(), 1)].into();
        let perfect = vec!["a".to_string(), "b".to_string()];
        assert!((ndcg(&perfect, &rel, 10) - 1.0).abs() < 1e-9);
        let swapped = vec!["b".to_string(), "a".to_string()];
        // dcg = 1/1 + 3/log2(3); idcg = 3/1 + 1/log2(3)
        let want = (1.0 + 3.0 / 3f64.log2()) / (3.0 + 1.0 / 3f64.log2());
        assert!((ndcg(&swapped, &rel, 10) - want).abs() < 1e-9);
        assert_eq!(recall(&["x".into(), "a".into()], &rel, 5), 0.5);
        assert_eq!(recall(&["x".into(), "a".into()], &rel, 1), 0.0);
        let q = read_questions("# c\nhow?\ta:2 b:1\n").unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].relevant["b"], 1);
    }
}
