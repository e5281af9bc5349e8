//! The sentence-embedding model: turns a passage or a question into a vector, so that search
//! can find a passage that says the same thing in other words (dense retrieval).
//!
//! The model is all-MiniLM-L6-v2 (a 6-layer BERT, 384 dimensions, Apache-2.0), run on the CPU
//! in-process by candle (pure Rust: no C++ runtime to ship, and it cross-builds for Windows).
//! Its files come from the PyPI package named in `crates/cmem/model.lock`, pinned by version
//! and SHA-256; the build script fetches and checks them and the binary carries them
//! (`ModelFiles`), so nothing is fetched at run time. A folder with the same three files
//! (`embedding_model_dir`) can stand in for them.
//!
//! Vectors are mean-pooled over the tokens and normalised to length 1, as the model was
//! trained, so the dot product of two vectors is their cosine similarity.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use sha2::{Digest, Sha256};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Tokens a passage is cut to: the length the model was trained on.
pub const MAX_TOKENS: usize = 256;

/// Passages embedded in one forward pass: large enough to keep the matrix units busy, small
/// enough that padding to the longest one wastes little (batches are formed by length).
const BATCH: usize = 16;

/// Why the model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("model configuration: {0}")]
    Config(#[from] serde_json::Error),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The three files a model is made of, borrowed from the binary or read from a folder.
#[derive(Clone, Copy)]
pub struct ModelFiles<'a> {
    /// Which model and which build of it: a vector made by one model means nothing to
    /// another, so the vector index is kept per `id` and rebuilt when it changes.
    pub id: &'a str,
    /// `config.json` (a BERT configuration).
    pub config: &'a [u8],
    /// `tokenizer.json` (the Hugging Face tokenizer format).
    pub tokenizer: &'a [u8],
    /// `model.safetensors`.
    pub weights: &'a [u8],
}

static BUILT_IN: std::sync::OnceLock<ModelFiles<'static>> = std::sync::OnceLock::new();

/// Hands the library the model the binary carries (the `cmem` binary does this first thing;
/// a build without the model, and the library's own tests, never do).
pub fn provide_built_in(files: ModelFiles<'static>) {
    let _ = BUILT_IN.set(files);
}

/// The model the binary carries, if it carries one.
pub fn built_in() -> Option<ModelFiles<'static>> {
    BUILT_IN.get().copied()
}

/// Which model the memory uses (`embedding_model`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelChoice {
    /// The one built into the binary (`built-in`, the default).
    BuiltIn,
    /// None: keyword search only (`off`).
    Off,
    /// The model in a folder: `config.json`, `tokenizer.json`, `model.safetensors`.
    Dir(std::path::PathBuf),
}

impl ModelChoice {
    pub fn parse(s: &str) -> ModelChoice {
        match s.trim() {
            "" | "built-in" | "builtin" => ModelChoice::BuiltIn,
            "off" | "none" => ModelChoice::Off,
            dir => ModelChoice::Dir(dir.into()),
        }
    }
}

/// What a build without the model prints when asked for meaning search.
pub const NO_BUILT_IN: &str = "this cmem was built without its embedding model (the build could not fetch it; \
rebuild with network access, or set CMEM_MODEL_WHEEL to the wheel named in crates/cmem/model.lock, \
or point `embedding_model` at a folder with config.json, tokenizer.json and model.safetensors)";

/// Model files read from a folder, owned.
pub struct OwnedModelFiles {
    id: String,
    config: Vec<u8>,
    tokenizer: Vec<u8>,
    weights: Vec<u8>,
}

impl OwnedModelFiles {
    /// Reads `config.json`, `tokenizer.json` and `model.safetensors` from `dir`. The id is
    /// the folder's name and the weights' hash, so changed weights are a new model.
    pub fn read(dir: &std::path::Path) -> Result<OwnedModelFiles, EmbedError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| EmbedError::Io { path, source })
        };
        let weights = read("model.safetensors")?;
        let hash = Sha256::digest(&weights);
        let short: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        Ok(OwnedModelFiles {
            id: format!("{name}@{short}"),
            config: read("config.json")?,
            tokenizer: read("tokenizer.json")?,
            weights,
        })
    }

    pub fn files(&self) -> ModelFiles<'_> {
        ModelFiles {
            id: &self.id,
            config: &self.config,
            tokenizer: &self.tokenizer,
            weights: &self.weights,
        }
    }
}

/// A loaded model. `embed` takes `&self`, so one model serves the indexer and the searches
/// (a forward pass is CPU-bound: callers run it on a blocking thread).
pub struct Embedder {
    id: String,
    model: BertModel,
    tokenizer: Tokenizer,
    dim: usize,
}

impl ModelChoice {
    /// Loads the chosen model: `Ok(None)` when it is off or not built in (with the reason),
    /// an error when a folder was named and does not hold a model.
    pub fn load(&self) -> Result<Result<Embedder, String>, EmbedError> {
        match self {
            ModelChoice::Off => Ok(Err("`embedding_model` is `off`".into())),
            ModelChoice::BuiltIn => match built_in() {
                Some(files) => Embedder::load(files).map(Ok),
                None => Ok(Err(NO_BUILT_IN.into())),
            },
            ModelChoice::Dir(dir) => {
                let files = OwnedModelFiles::read(dir)?;
                Embedder::load(files.files()).map(Ok)
            }
        }
    }
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("id", &self.id)
            .field("dim", &self.dim)
            .finish()
    }
}

impl Embedder {
    /// Loads a model (about 0.3 s for MiniLM; the weights are copied out of `files`).
    pub fn load(files: ModelFiles<'_>) -> Result<Embedder, EmbedError> {
        let config: Config = serde_json::from_slice(files.config)?;
        let mut tokenizer = Tokenizer::from_bytes(files.tokenizer)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id: config.pad_token_id as u32,
            ..Default::default()
        }));
        let vb = VarBuilder::from_slice_safetensors(files.weights, DType::F32, &Device::Cpu)?;
        let model = BertModel::load(vb, &config)?;
        Ok(Embedder {
            id: files.id.to_string(),
            model,
            tokenizer,
            dim: config.hidden_size,
        })
    }

    /// Which model this is (see [`ModelFiles::id`]).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The length of its vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// One unit vector per text, in order. Texts longer than [`MAX_TOKENS`] are cut.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        // batches of similar length: padding a short text to a long one costs the long one
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(BATCH) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            for (&i, v) in chunk.iter().zip(self.batch(&batch)?) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        let rows = enc.len();
        let len = enc.first().map(|e| e.get_ids().len()).unwrap_or(0);
        let mut ids = Vec::with_capacity(rows * len);
        let mut mask = Vec::with_capacity(rows * len);
        for e in &enc {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        let ids = Tensor::from_vec(ids, (rows, len), &Device::Cpu)?;
        let mask = Tensor::from_vec(mask, (rows, len), &Device::Cpu)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        // mean over the real tokens, then unit length
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f32::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
        Ok(mean.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_a_build_without_the_model_says_how_to_get_it() {
        assert_eq!(ModelChoice::parse("built-in"), ModelChoice::BuiltIn);
        assert_eq!(ModelChoice::parse(" off "), ModelChoice::Off);
        assert_eq!(
            ModelChoice::parse("/models/minilm"),
            ModelChoice::Dir("/models/minilm".into())
        );
        // the library's tests never get the binary's model
        let why = ModelChoice::BuiltIn.load().unwrap().unwrap_err();
        assert!(
            why.contains("CMEM_MODEL_WHEEL") && why.contains("embedding_model"),
            "{why}"
        );
        let why = ModelChoice::Off.load().unwrap().unwrap_err();
        assert!(why.contains("off"), "{why}");
        // a folder that holds no model is an error that names the file
        let dir = tempfile::tempdir().unwrap();
        let e = ModelChoice::Dir(dir.path().into()).load().unwrap_err();
        assert!(e.to_string().contains("model.safetensors"), "{e}");
    }
}
