//! The `cmem` binary: command-line parsing and the process edge (`anyhow`, exit codes, logs).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use cmem::config::{self, Overrides};
use cmem::memory::search::{Filters, snippet_text};
use cmem::memory::{Memory, OpenOptions, indexer};
use cmem::server::{Server, ServerError, shutdown_signal};

#[derive(Parser)]
#[command(
    name = "cmem",
    version,
    about = "Collective Memory: team memory server with a durable real-time journal"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ConfigFlags),
    /// Print the effective configuration and where each value came from.
    Config(ConfigFlags),
    /// Index a folder without running the server (the same index `cmem serve` uses).
    Index(IndexArgs),
    /// Search a folder's index from the command line.
    Search(SearchArgs),
}

#[derive(Args)]
struct IndexArgs {
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

#[derive(Args)]
struct SearchArgs {
    /// Query: words, "a phrase", AND/OR, -word, title:word.
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

/// Flags that override every other configuration layer.
#[derive(Args, Clone)]
struct ConfigFlags {
    /// Folder the memory covers (state goes to <DIR>/.collective-memory/).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8000 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR:PORT")]
    bind: Option<String>,
    /// Platform profile: auto, windows or default.
    #[arg(long, value_name = "PROFILE")]
    platform_profile: Option<String>,
    /// Allowed origins for CORS and WebSocket, comma-separated (`*` for any).
    #[arg(long, value_name = "LIST")]
    cors_origins: Option<String>,
    /// Enabled transports, comma-separated subset of websocket,polling,sse,poll.
    #[arg(long, value_name = "LIST")]
    transports: Option<String>,
    #[arg(long, value_name = "MS")]
    ping_interval_ms: Option<u64>,
    #[arg(long, value_name = "MS")]
    ping_timeout_ms: Option<u64>,
    #[arg(long, value_name = "BYTES")]
    max_payload_bytes: Option<u64>,
    /// Events a connection may fall behind before it is closed as a slow consumer.
    #[arg(long, value_name = "N")]
    queue_bound: Option<usize>,
    #[arg(long, value_name = "N")]
    retention_max_events: Option<u64>,
    #[arg(long, value_name = "SECONDS")]
    retention_max_age_s: Option<u64>,
    /// Run open (no tokens) even on an address other machines can reach.
    #[arg(long)]
    insecure: bool,
}

impl ConfigFlags {
    fn overrides(&self) -> Overrides {
        Overrides {
            bind: self.bind.clone(),
            data_dir: self.data.clone(),
            platform_profile: self.platform_profile.clone(),
            cors_origins: self.cors_origins.clone(),
            transports: self.transports.clone(),
            ping_interval_ms: self.ping_interval_ms,
            ping_timeout_ms: self.ping_timeout_ms,
            max_payload_bytes: self.max_payload_bytes,
            queue_bound: self.queue_bound,
            retention_max_events: self.retention_max_events,
            retention_max_age_s: self.retention_max_age_s,
            insecure: self.insecure.then_some(true),
        }
    }
}

/// Exit codes callers (and scripts) can tell apart.
const EXIT_CONFIG: u8 = 2;
const EXIT_BIND: u8 = 3;
const EXIT_RUNTIME: u8 = 1;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Index(args) => index(args),
        Command::Search(args) => search(args),
        Command::Config(flags) => match config::load(&flags.overrides()) {
            Ok(loaded) => {
                print!("{}", loaded.render());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Serve(flags) => {
            let loaded = match config::load(&flags.overrides()) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::from(EXIT_RUNTIME);
                }
            };
            match runtime.block_on(serve(loaded)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    match e.downcast_ref::<ServerError>() {
                        Some(ServerError::Bind { .. }) => ExitCode::from(EXIT_BIND),
                        Some(ServerError::Insecure { .. }) => ExitCode::from(EXIT_CONFIG),
                        _ => ExitCode::from(EXIT_RUNTIME),
                    }
                }
            }
        }
    }
}

/// Loads the configuration for a folder (so `index_max_file_bytes` and the like apply).
fn config_for(dir: &std::path::Path) -> Result<config::Loaded, ExitCode> {
    config::load(&Overrides {
        data_dir: Some(dir.to_path_buf()),
        ..Overrides::default()
    })
    .map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn index(args: IndexArgs) -> ExitCode {
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

fn search(args: SearchArgs) -> ExitCode {
    let loaded = match config_for(&args.data) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let meta = args
        .data
        .join(".collective-memory")
        .join("index")
        .join("meta.json");
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
    };
    let filters = Filters {
        path_prefix: args.path_prefix.clone(),
        extensions: args
            .extensions
            .iter()
            .map(|e| e.trim().trim_start_matches('.').to_lowercase())
            .filter(|e| !e.is_empty())
            .collect(),
    };
    let limit = args.limit.clamp(1, cmem::memory::search::MAX_LIMIT);
    let answer = Memory::open(&args.data, &opts)
        .map_err(|e| e.to_string())
        .and_then(|m| {
            cmem::memory::search::search(&m, &args.query, &filters, limit, args.offset)
                .map_err(|e| e.to_string())
        });
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

async fn serve(loaded: config::Loaded) -> anyhow::Result<()> {
    tracing::info!(profile = loaded.profile.name(), "configuration loaded");
    let server = Server::bind(loaded.config).await?;
    let addr = server
        .local_addr()
        .ok_or_else(|| anyhow::anyhow!("the listener has no local address"))?;
    if !addr.ip().is_loopback() && !server.hub().teams.users_exist() {
        tracing::warn!(
            %addr,
            "--insecure: listening beyond loopback with no users; every endpoint and transport is open to anyone who can reach this address"
        );
    }
    // Scripts and tests read this line to learn the port when binding to port 0.
    println!("cmem listening on http://{addr}");
    tracing::info!(%addr, data = %server.hub().config.data_dir.display(), epoch = server.hub().journal.epoch(), head = server.hub().journal.head(), "serving");
    server.run(shutdown_signal()).await?;
    Ok(())
}
