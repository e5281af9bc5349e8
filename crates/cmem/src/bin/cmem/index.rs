//! `cmem index DIR`: indexes a folder without a server (the same index `cmem serve` keeps).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::{EXIT_CONFIG, EXIT_RUNTIME, config_for};
use cmem::memory::{Memory, OpenOptions, indexer};

#[derive(Args)]
pub(crate) struct IndexArgs {
    /// The folder to index (the index goes to <DIR>/.collective-memory/index/).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Indexing threads (default: one per core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn index(args: IndexArgs) -> ExitCode {
    let loaded = match config_for(&args.dir) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if !args.dir.is_dir() {
        eprintln!("error: {} is not a folder", args.dir.display());
        return ExitCode::from(EXIT_CONFIG);
    }
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let opts = OpenOptions {
        max_file_bytes: loaded.config.index_max_file_bytes,
        history_max: 0,
        threads,
        read_only: false,
        skip_extensions: loaded.config.index_skip_extensions.clone(),
        language: loaded.config.search_language.clone(),
        // the keyword index only: `cmem serve` makes the vectors in the background
        model: cmem::memory::embed::ModelChoice::Off,
    };
    let memory = match Memory::open(&args.dir, &opts) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} files {wide_msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut summary = serde_json::Value::Null;
    let result = indexer::run_blocking(&memory, None, &mut |kind, data| match kind {
        "indexing_started" => bar.set_length(data["total_files"].as_u64().unwrap_or(0)),
        "indexing_progress" => {
            bar.set_position(data["processed_files"].as_u64().unwrap_or(0));
            bar.set_message(data["current_file"].as_str().unwrap_or("").to_string());
        }
        _ => summary = data,
    });
    bar.finish_and_clear();
    if let Err(e) = result {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_RUNTIME);
    }
    summary["index_docs"] = memory.doc_count().into();
    summary["index_bytes"] = memory.index_bytes().into();
    summary["threads"] = threads.into();
    let seconds = summary["duration_ms"].as_u64().unwrap_or(0) as f64 / 1000.0;
    let mb = summary["indexed_bytes"].as_u64().unwrap_or(0) as f64 / 1e6;
    summary["mb_per_s"] = (if seconds > 0.0 { mb / seconds } else { 0.0 }).into();
    let n = |k: &str| summary[k].as_u64().unwrap_or(0);
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "indexed {} files ({mb:.1} MB) in {seconds:.1} s; {} unchanged, {} removed, {} skipped, {} errors; the index holds {} documents",
            n("indexed"),
            n("unchanged"),
            n("removed"),
            n("skipped"),
            n("errors"),
            n("index_docs"),
        );
    }
    ExitCode::SUCCESS
}
