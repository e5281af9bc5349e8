//! `cmem search DIR QUERY`: searches a folder's index from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::{EXIT_CONFIG, EXIT_RUNTIME, config_for};
use cmem::config::STATE_DIR;
use cmem::memory::search::snippet_text;
use cmem::memory::service;
use cmem::memory::{Memory, OpenOptions};

#[derive(Args)]
pub(crate) struct SearchArgs {
    /// Query: a question in plain words, or explicit syntax ("a phrase", AND/OR, -word,
    /// title:word).
    query: String,
    /// The folder whose index is searched.
    #[arg(long, value_name = "DIR", default_value = ".")]
    data: PathBuf,
    #[arg(long, default_value_t = 10)]
    limit: usize,
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// Only paths starting with this.
    #[arg(long, value_name = "PREFIX")]
    path_prefix: Option<String>,
    /// Only these extensions, comma-separated (e.g. md,txt).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    extensions: Vec<String>,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn search(args: SearchArgs) -> ExitCode {
    let loaded = match config_for(&args.data) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let meta = args.data.join(STATE_DIR).join("index").join("meta.json");
    if !meta.exists() {
        eprintln!(
            "error: {} has no index yet; run `cmem index {}` (or `cmem serve`) first",
            args.data.display(),
            args.data.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let opts = OpenOptions {
        max_file_bytes: loaded.config.index_max_file_bytes,
        history_max: 0,
        threads: 1,
        read_only: true,
        skip_extensions: loaded.config.index_skip_extensions.clone(),
        language: loaded.config.search_language.clone(),
        model: cmem::memory::embed::ModelChoice::parse(&loaded.config.embedding_model),
    };
    // the rules every front end's searches are checked by
    let checked = service::Search::validate(
        service::Asked {
            query: args.query.clone(),
            limit: Some(args.limit),
            offset: Some(args.offset),
            path_prefix: args.path_prefix.clone(),
            extensions: Some(args.extensions.clone()),
            ..service::Asked::default()
        },
        "the query",
    );
    let search = match checked {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let answer = Memory::open(&args.data, &opts)
        .map_err(|e| e.to_string())
        .and_then(|m| service::answer(&m, &search).map_err(|e| e.to_string()));
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.json {
        match serde_json::to_string(&answer) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
        return ExitCode::SUCCESS;
    }
    println!(
        "{} documents match {:?} ({:.2} ms)",
        answer.total, args.query, answer.search_time
    );
    for (i, h) in answer.results.iter().enumerate() {
        println!("\n{}. {}  [{}]", args.offset + i + 1, h.title, h.path);
        let s = snippet_text(&h.snippet, "*");
        if !s.is_empty() {
            println!("   {s}");
        }
    }
    ExitCode::SUCCESS
}
