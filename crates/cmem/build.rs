//! Build script: bundles the web app's shared-document editor (`web/docs/editor.js`, Yjs and
//! CodeMirror from npm through `web/package-lock.json`) into `$OUT_DIR/docs.js`, which the
//! binary serves at `/app/docs.js`. Everything else the app needs is plain files compiled in as
//! they are; only this part comes from packages, so only it needs Node.
//!
//! Without Node and npm (or with `CMEM_SKIP_WEB_BUILD` set, or when npm cannot reach the
//! registry) cmem still builds: `docs.js` is then a small module that says how to get the
//! editor, and the rest of the app works. `npm ci` runs only when `web/node_modules` is older
//! than the lock file.

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
