//! The vector index: one vector per passage of every indexed document, the nearest ones to a
//! question, and the file that keeps them across restarts.
//!
//! The search is exact (every vector is compared), not an approximate graph: a flat list makes
//! what an approximate index makes hard — removing a document's passages when it changes,
//! checking the file, rebuilding it — and at the sizes a team folder has the scan is cheaper
//! than embedding the question. Vectors are kept as 8-bit codes with one scale each (a
//! quarter of the memory of 32-bit floats): a scan of 100k passages reads 37 MiB, not 146,
//! and memory bandwidth is what bounds it (`cmem-bench vectors`, BENCHMARKS.md). Each document's
//! entry keeps the file's modification time and size it was embedded from, so the vectors
//! follow the keyword index ([`super::dense`]) and a restart re-embeds only what changed.
//!
//! File format (`<data>/.collective-memory/vectors/<model>.bin`), little-endian: the magic
//! `CMEMVEC2`, the dimension (u32) and document count (u32); for each document its path
//! (u32 length, UTF-8), modification time, size and embedding time (u64 each), passage count
//! (u32), each passage's first and last line (u32 each), each passage's scale (f32), then the
//! codes (i8, dimension per passage); last, the SHA-256 of everything before. A file that
//! fails any check (an older format included) is set aside and rebuilt.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"CMEMVEC2";

/// The vectors of one document.
#[derive(Debug, Clone, PartialEq)]
pub struct DocVectors {
    /// The file's modification time (ms) and size it was embedded from.
    pub modified: u64,
    pub size: u64,
    /// When it was embedded (ms since the epoch).
    pub embedded_at: u64,
    /// Each passage's first and last line.
    pub passages: Vec<(u32, u32)>,
    /// Each passage's vector as `dim` codes, passage after passage: the number is
    /// `code × scale`.
    pub codes: Vec<i8>,
    pub scales: Vec<f32>,
}

impl DocVectors {
    /// A document's vectors (`dim` numbers a passage, passage after passage), as codes.
    pub fn quantize(
        modified: u64,
        size: u64,
        embedded_at: u64,
        passages: Vec<(u32, u32)>,
        vectors: &[f32],
        dim: usize,
    ) -> DocVectors {
        let mut codes = Vec::with_capacity(vectors.len());
        let mut scales = Vec::with_capacity(passages.len());
        for v in vectors.chunks_exact(dim.max(1)) {
            let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            scales.push(scale);
            codes.extend(
                v.iter()
                    .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8),
            );
        }
        DocVectors {
            modified,
            size,
            embedded_at,
            passages,
            codes,
            scales,
        }
    }
}

/// The dot product of a question's vector and a passage's codes.
fn score(q: &[f32], codes: &[i8], scale: f32) -> f32 {
    // eight accumulators, so the compiler vectorises without fast-math
    let mut acc = [0f32; 8];
    let (cq, rq) = q.as_chunks::<8>();
    let (cc, rc) = codes.as_chunks::<8>();
    for (x, c) in cq.iter().zip(cc) {
        for k in 0..8 {
            acc[k] += x[k] * c[k] as f32;
        }
    }
    let tail: f32 = rq.iter().zip(rc).map(|(x, c)| x * *c as f32).sum();
    (acc.iter().sum::<f32>() + tail) * scale
}

/// A passage near a question.
#[derive(Debug, Clone, PartialEq)]
pub struct Near {
    pub path: String,
    /// Which passage of the document (its index in [`DocVectors::passages`]).
    pub passage: usize,
    pub start_line: u32,
    pub end_line: u32,
    /// Cosine similarity, -1 to 1.
    pub score: f32,
}

/// Why a vector file was not read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not a vector file (bad magic)")]
    Magic,
    #[error("checksum mismatch (the file is damaged or was cut short)")]
    Checksum,
    #[error("the file ends inside a record")]
    Truncated,
    #[error("vectors of dimension {found}, the model makes {want}")]
    Dimension { found: usize, want: usize },
    #[error("a path is not UTF-8")]
    Path,
}

/// Every document's vectors, for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Store {
    pub dim: usize,
    pub docs: HashMap<String, DocVectors>,
}

struct Scored<'a> {
    score: f32,
    path: &'a str,
    passage: usize,
}

impl PartialEq for Scored<'_> {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Scored<'_> {}
impl PartialOrd for Scored<'_> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scored<'_> {
    // reversed: the heap's top is the worst kept, the one to drop
    fn cmp(&self, o: &Self) -> Ordering {
        o.score
            .total_cmp(&self.score)
            .then_with(|| self.path.cmp(o.path))
    }
}

/// Documents one task of a scan takes: enough that splitting costs little, few enough that
/// both cores get work at a few thousand documents.
const SCAN_CHUNK: usize = 2048;

/// Keeps the `n` best in a heap whose top is the worst kept.
fn push_bounded<'a>(heap: &mut BinaryHeap<Scored<'a>>, s: Scored<'a>, n: usize) {
    if heap.len() < n {
        heap.push(s);
    } else if heap.peek().is_some_and(|worst| s < *worst) {
        heap.pop();
        heap.push(s);
    }
}

impl Store {
    /// The best `n` of some documents, each with its nearest passage.
    fn scan<'s>(
        &self,
        chunk: &[(&'s String, &'s DocVectors)],
        q: &[f32],
        n: usize,
        keep: &(impl Fn(&str) -> bool + Sync),
    ) -> BinaryHeap<Scored<'s>> {
        let mut heap: BinaryHeap<Scored<'s>> = BinaryHeap::with_capacity(n + 1);
        for (path, d) in chunk {
            if d.passages.is_empty() || !keep(path) {
                continue;
            }
            let (mut best, mut at) = (f32::NEG_INFINITY, 0);
            for (i, (c, scale)) in d.codes.chunks_exact(self.dim).zip(&d.scales).enumerate() {
                let s = score(q, c, *scale);
                if s > best {
                    (best, at) = (s, i);
                }
            }
            push_bounded(
                &mut heap,
                Scored {
                    score: best,
                    path,
                    passage: at,
                },
                n,
            );
        }
        heap
    }

    pub fn new(dim: usize) -> Store {
        Store {
            dim,
            docs: HashMap::new(),
        }
    }

    /// The mean of a document's passage vectors, as a unit vector: what the document is about
    /// as a whole (`None` when it has no vectors).
    pub fn centroid(&self, path: &str) -> Option<Vec<f32>> {
        let d = self.docs.get(path).filter(|d| !d.scales.is_empty())?;
        let mut sum = vec![0f32; self.dim];
        for (c, scale) in d.codes.chunks_exact(self.dim).zip(&d.scales) {
            for (s, x) in sum.iter_mut().zip(c) {
                *s += *x as f32 * scale;
            }
        }
        let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
        (norm > 0.0).then(|| sum.iter().map(|x| x / norm).collect())
    }

    /// Passages held, over every document.
    pub fn passages(&self) -> usize {
        self.docs.values().map(|d| d.passages.len()).sum()
    }

    /// Bytes the vectors take in memory.
    pub fn vector_bytes(&self) -> usize {
        self.docs
            .values()
            .map(|d| d.codes.len() + d.scales.len() * 4)
            .sum()
    }

    /// The `n` documents nearest to `q` (a unit vector), each with its nearest passage, best
    /// first; only documents `keep` accepts are considered.
    pub fn nearest_docs<'s>(
        &'s self,
        q: &[f32],
        n: usize,
        keep: impl Fn(&str) -> bool + Sync,
    ) -> Vec<Near> {
        use rayon::prelude::*;
        if n == 0 || q.len() != self.dim {
            return Vec::new();
        }
        // each core scans a share of the documents into its own best n; then they are merged
        let docs: Vec<(&String, &DocVectors)> = self.docs.iter().collect();
        let best_of = |chunk: &[(&'s String, &'s DocVectors)]| self.scan(chunk, q, n, &keep);
        let heap = docs
            .par_chunks(SCAN_CHUNK)
            .map(best_of)
            .reduce(BinaryHeap::new, |mut a, b| {
                for s in b {
                    push_bounded(&mut a, s, n);
                }
                a
            });
        let mut out: Vec<Near> = heap
            .into_iter()
            .map(|s| {
                let (start_line, end_line) = self.docs[s.path].passages[s.passage];
                Near {
                    path: s.path.to_string(),
                    passage: s.passage,
                    start_line,
                    end_line,
                    score: s.score,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.path.cmp(&b.path))
        });
        out
    }

    /// The file's bytes (see the module's doc).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.vector_bytes() + self.docs.len() * 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.dim as u32).to_le_bytes());
        out.extend_from_slice(&(self.docs.len() as u32).to_le_bytes());
        let mut paths: Vec<&String> = self.docs.keys().collect();
        paths.sort();
        for path in paths {
            let d = &self.docs[path];
            out.extend_from_slice(&(path.len() as u32).to_le_bytes());
            out.extend_from_slice(path.as_bytes());
            for n in [d.modified, d.size, d.embedded_at] {
                out.extend_from_slice(&n.to_le_bytes());
            }
            out.extend_from_slice(&(d.passages.len() as u32).to_le_bytes());
            for (a, b) in &d.passages {
                out.extend_from_slice(&a.to_le_bytes());
                out.extend_from_slice(&b.to_le_bytes());
            }
            for x in &d.scales {
                out.extend_from_slice(&x.to_le_bytes());
            }
            out.extend(d.codes.iter().map(|c| *c as u8));
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Reads a file written by [`Store::encode`] for vectors of `dim` numbers. Every length
    /// is checked against what is left, so a damaged file is an error, never a panic or a
    /// huge allocation.
    pub fn decode(bytes: &[u8], dim: usize) -> Result<Store, FormatError> {
        if bytes.len() < MAGIC.len() + 8 + 32 || &bytes[..8] != MAGIC {
            return Err(FormatError::Magic);
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != sum {
            return Err(FormatError::Checksum);
        }
        let mut r = Reader { b: &body[8..] };
        let found = r.u32()? as usize;
        if found != dim {
            return Err(FormatError::Dimension { found, want: dim });
        }
        let count = r.u32()? as usize;
        let mut docs = HashMap::with_capacity(count.min(r.b.len() / 40));
        for _ in 0..count {
            let len = r.u32()? as usize;
            let path = std::str::from_utf8(r.take(len)?)
                .map_err(|_| FormatError::Path)?
                .to_string();
            let (modified, size, embedded_at) = (r.u64()?, r.u64()?, r.u64()?);
            let n = r.u32()? as usize;
            if n.saturating_mul(12 + dim) > r.b.len() {
                return Err(FormatError::Truncated);
            }
            let mut passages = Vec::with_capacity(n);
            for _ in 0..n {
                passages.push((r.u32()?, r.u32()?));
            }
            let mut scales = Vec::with_capacity(n);
            for _ in 0..n {
                scales.push(f32::from_bits(r.u32()?));
            }
            let codes = r.take(n * dim)?.iter().map(|b| *b as i8).collect();
            docs.insert(
                path,
                DocVectors {
                    modified,
                    size,
                    embedded_at,
                    passages,
                    codes,
                    scales,
                },
            );
        }
        if !r.b.is_empty() {
            return Err(FormatError::Truncated);
        }
        Ok(Store { dim, docs })
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if n > self.b.len() {
            return Err(FormatError::Truncated);
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, FormatError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, FormatError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    fn store() -> Store {
        let mut s = Store::new(3);
        let doc = |vs: &[&[f32]]| {
            let flat: Vec<f32> = vs.iter().flat_map(|v| unit(v)).collect();
            let passages = (0..vs.len() as u32)
                .map(|i| (i * 10 + 1, i * 10 + 9))
                .collect();
            DocVectors::quantize(1, 2, 3, passages, &flat, 3)
        };
        s.docs
            .insert("a.md".into(), doc(&[&[1.0, 0.0, 0.0], &[0.0, 1.0, 0.0]]));
        s.docs.insert("b.md".into(), doc(&[&[0.7, 0.7, 0.0]]));
        s.docs.insert("c.md".into(), doc(&[&[0.0, 0.0, 1.0]]));
        s.docs.insert("empty.md".into(), doc(&[]));
        s
    }

    #[test]
    fn nearest_documents_come_with_their_nearest_passage() {
        let s = store();
        let near = s.nearest_docs(&unit(&[0.1, 1.0, 0.0]), 2, |_| true);
        assert_eq!(near.len(), 2);
        assert_eq!((near[0].path.as_str(), near[0].passage), ("a.md", 1));
        assert_eq!((near[0].start_line, near[0].end_line), (11, 19));
        assert_eq!(near[1].path, "b.md");
        assert!(near[0].score >= near[1].score);
        let only_c = s.nearest_docs(&unit(&[0.1, 1.0, 0.0]), 5, |p| p.starts_with('c'));
        assert_eq!(only_c.len(), 1);
        assert!(
            s.nearest_docs(&[1.0, 0.0], 5, |_| true).is_empty(),
            "wrong dimension"
        );
    }

    #[test]
    fn a_documents_centroid_points_between_its_passages() {
        let s = store();
        let c = s.centroid("a.md").unwrap();
        let want = unit(&[1.0, 1.0, 0.0]);
        assert!(
            c.iter().zip(&want).all(|(a, b)| (a - b).abs() < 0.02),
            "{c:?}"
        );
        assert!(s.centroid("empty.md").is_none());
        assert!(s.centroid("missing.md").is_none());
    }

    #[test]
    fn codes_keep_the_dot_product() {
        let a = unit(&[0.3, -0.2, 0.9, 0.1, -0.5, 0.05, 0.7, -0.33, 0.2]);
        let b = unit(&[0.1, 0.4, 0.8, -0.2, -0.4, 0.3, 0.5, 0.1, -0.1]);
        let exact: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let d = DocVectors::quantize(0, 0, 0, vec![(1, 1)], &b, 9);
        let approx = score(&a, &d.codes, d.scales[0]);
        assert!((exact - approx).abs() < 0.01, "{exact} vs {approx}");
    }

    #[test]
    fn files_round_trip_and_damage_is_an_error() {
        let s = store();
        let bytes = s.encode();
        assert_eq!(Store::decode(&bytes, 3).unwrap(), s);
        assert!(matches!(
            Store::decode(&bytes, 4),
            Err(FormatError::Dimension { .. })
        ));
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        assert!(matches!(
            Store::decode(&flipped, 3),
            Err(FormatError::Checksum)
        ));
        for cut in [0, 5, 20, bytes.len() - 1] {
            assert!(Store::decode(&bytes[..cut], 3).is_err(), "cut at {cut}");
        }
        assert!(matches!(
            Store::decode(b"garbage!", 3),
            Err(FormatError::Magic)
        ));
    }

    #[test]
    fn lengths_in_a_well_summed_file_are_still_checked() {
        // a file whose checksum is right but whose counts lie (written by something else)
        let mut body = Vec::new();
        body.extend_from_slice(MAGIC);
        body.extend_from_slice(&3u32.to_le_bytes());
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(&1u32.to_le_bytes());
        body.push(b'x');
        for _ in 0..3 {
            body.extend_from_slice(&0u64.to_le_bytes());
        }
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        let sum = Sha256::digest(&body);
        body.extend_from_slice(&sum);
        assert!(matches!(
            Store::decode(&body, 3),
            Err(FormatError::Truncated)
        ));
    }
}
