//! The `cmem` binary: command-line parsing and the process edge (`anyhow`, exit codes, logs).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use cmem::config::{self, Overrides};
use cmem::memory::search::{Filters, snippet_text};
use cmem::memory::{Memory, MemoryError, OpenOptions, indexer};
use cmem::net::classify::ErrorClass;
use cmem::ops::{doctor, firewall};
use cmem::server::{Server, ServerError, shutdown_signal};
use cmem::teams::{Teams, TeamsError};

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
    /// Print the Windows firewall rule for the configured port; --apply adds it (Windows).
    Firewall(FirewallArgs),
    /// Diagnose this machine and test which transports reach a running server.
    Doctor(DoctorArgs),
    /// Manage users (once one exists, every client needs a token).
    User {
        #[command(subcommand)]
        cmd: UserCmd,
        #[command(flatten)]
        data: DataArg,
    },
    /// Manage bearer tokens (shown once at creation, stored hashed).
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
        #[command(flatten)]
        data: DataArg,
    },
    /// Manage workspaces and their members.
    Workspace {
        #[command(subcommand)]
        cmd: WorkspaceCmd,
        #[command(flatten)]
        data: DataArg,
    },
    /// Copy the server's state (journal, team database, searches history, config) into a new
    /// folder; consistent and safe while the server runs.
    Backup {
        /// The folder to create (it must not exist, or be empty).
        dir: PathBuf,
        #[command(flatten)]
        data: DataArg,
    },
    /// Put a backup in place of the state (refused while a server runs on the folder); the
    /// journal gets a new epoch, so clients that read past the backup get a resync.
    Restore {
        /// A folder made by `cmem backup`.
        dir: PathBuf,
        #[command(flatten)]
        data: DataArg,
    },
}

#[derive(Args)]
struct FirewallArgs {
    #[command(flatten)]
    flags: ConfigFlags,
    /// Add the rule now with netsh (Windows, elevated prompt).
    #[arg(long)]
    apply: bool,
}

#[derive(Args)]
struct DoctorArgs {
    #[command(flatten)]
    flags: ConfigFlags,
    /// The server to test (default: the configured address, if something listens there).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// A token, for a server with users.
    #[arg(long, env = "CM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Where the teams database is: the data folder (default: CM_DATA_DIR, else "."). Global, so
/// it may follow the subcommand (`cmem user add alice --data DIR`).
#[derive(Args, Clone)]
struct DataArg {
    #[arg(long, value_name = "DIR", global = true)]
    data: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user.
    Add {
        name: String,
        /// May manage users, tokens and workspaces, and publish anywhere.
        #[arg(long)]
        admin: bool,
    },
    /// List users with their workspaces.
    List,
    /// Remove a user, their tokens and memberships.
    Remove { name: String },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token for a user and print it (the only time it is shown).
    Create {
        user: String,
        /// A note to recognise the token by (e.g. "laptop").
        #[arg(long)]
        label: Option<String>,
    },
    /// List tokens (ids, not secrets).
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token by id; a running server refuses it from its next check.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum WorkspaceCmd {
    /// Create a workspace.
    Create { name: String },
    /// List workspaces with their members.
    List,
    /// Make a user a member of a workspace.
    AddMember { workspace: String, user: String },
    /// Remove a user from a workspace.
    RemoveMember { workspace: String, user: String },
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
    /// If the port is taken (or refused), try up to N next ports and say which one was used.
    #[arg(long, value_name = "N")]
    port_fallback: Option<u16>,
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
            port_fallback: self.port_fallback,
        }
    }
}

/// Exit codes callers (and scripts) can tell apart.
const EXIT_CONFIG: u8 = 2;
/// The port is taken by another process.
const EXIT_PORT_IN_USE: u8 = 3;
/// The OS refused the port (Windows excluded range, privileged port).
const EXIT_PORT_DENIED: u8 = 4;
/// Any other failure to listen.
const EXIT_BIND: u8 = 5;
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
        Command::Firewall(a) => firewall(a),
        Command::Doctor(a) => doctor(a),
        Command::User { cmd, data } => teams_cmd(TeamsCmd::User(cmd), &data),
        Command::Token { cmd, data } => teams_cmd(TeamsCmd::Token(cmd), &data),
        Command::Workspace { cmd, data } => teams_cmd(TeamsCmd::Workspace(cmd), &data),
        Command::Backup { dir, data } => backup_cmd(&dir, &data),
        Command::Restore { dir, data } => restore_cmd(&dir, &data),
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
            let (loaded, runtime) =
                match load_config(&flags.overrides()).and_then(|l| Ok((l, runtime()?))) {
                    Ok(x) => x,
                    Err(code) => return code,
                };
            match runtime.block_on(serve(loaded)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    match e.downcast_ref::<ServerError>() {
                        Some(ServerError::Bind { diagnosis, .. }) => {
                            ExitCode::from(match diagnosis.class {
                                ErrorClass::AddressInUse => EXIT_PORT_IN_USE,
                                ErrorClass::AccessDenied => EXIT_PORT_DENIED,
                                _ => EXIT_BIND,
                            })
                        }
                        Some(ServerError::Insecure { .. }) => ExitCode::from(EXIT_CONFIG),
                        _ => ExitCode::from(EXIT_RUNTIME),
                    }
                }
            }
        }
    }
}

/// Loads the configuration, or says why not (exit code 2).
fn load_config(o: &Overrides) -> Result<config::Loaded, ExitCode> {
    config::load(o).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// The async runtime for the commands that need one.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::from(EXIT_RUNTIME)
    })
}

/// Loads the configuration for a folder (so `index_max_file_bytes` and the like apply).
fn config_for(dir: &std::path::Path) -> Result<config::Loaded, ExitCode> {
    load_config(&Overrides {
        data_dir: Some(dir.to_path_buf()),
        ..Overrides::default()
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

fn firewall(a: FirewallArgs) -> ExitCode {
    let loaded = match load_config(&a.flags.overrides()) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let port = loaded.config.bind.port();
    if !a.apply {
        print!("{}", firewall::advice(loaded.config.bind));
        return ExitCode::SUCCESS;
    }
    match firewall::apply(port) {
        Ok(out) => {
            println!("{out}\nrule `{}` added", firewall::rule_name(port));
            ExitCode::SUCCESS
        }
        Err(e @ firewall::FirewallError::NotWindows(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn doctor(a: DoctorArgs) -> ExitCode {
    let (loaded, runtime) =
        match load_config(&a.flags.overrides()).and_then(|l| Ok((l, runtime()?))) {
            Ok(x) => x,
            Err(code) => return code,
        };
    let report = runtime.block_on(doctor::run(&loaded, a.url, a.token));
    if a.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        print!("{}", doctor::render(&report));
    }
    if report.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_RUNTIME)
    }
}

enum TeamsCmd {
    User(UserCmd),
    Token(TokenCmd),
    Workspace(WorkspaceCmd),
}

/// The data folder a command acts on: `--data`, else the configured one; it must exist.
fn data_dir(data: &DataArg) -> Result<PathBuf, ExitCode> {
    let dir = match &data.data {
        Some(d) => d.clone(),
        None => match config::load(&Overrides::default()) {
            Ok(l) => l.config.data_dir,
            Err(e) => {
                eprintln!("error: {e}");
                return Err(ExitCode::from(EXIT_CONFIG));
            }
        },
    };
    if !dir.is_dir() {
        eprintln!("error: {} is not a folder", dir.display());
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    Ok(dir)
}

/// `cmem backup DIR`
fn backup_cmd(dest: &Path, data: &DataArg) -> ExitCode {
    let dir = match data_dir(data) {
        Ok(d) => d,
        Err(code) => return code,
    };
    report(
        data.json,
        cmem::ops::backup::backup(&dir.join(".collective-memory"), dest),
        |m| {
            format!(
                "backed up {} to {}: journal epoch {} up to event {}",
                m.files.join(", "),
                dest.display(),
                m.epoch,
                m.head
            )
        },
    )
}

/// `cmem restore DIR`: refused while a server (or `cmem index`) holds the folder's index.
fn restore_cmd(from: &Path, data: &DataArg) -> ExitCode {
    let dir = match data_dir(data) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let probe = OpenOptions {
        threads: 1,
        history_max: 0,
        ..Default::default()
    };
    match Memory::open(&dir, &probe) {
        Ok(m) => drop(m),
        Err(e @ MemoryError::Locked(_)) => {
            eprintln!(
                "error: {e}; stop the server before restoring (a restore replaces the journal it is writing)"
            );
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    }
    report(
        data.json,
        cmem::ops::backup::restore(&dir.join(".collective-memory"), from),
        |r| {
            format!(
                "restored the backup of {} (events up to {}); the journal's new epoch is {}; clients that read past event {} get a resync{}",
                r.from.created_at,
                r.from.head,
                r.epoch,
                r.from.head,
                r.previous
                    .as_ref()
                    .map(|p| format!("; the files that were in place are in {}", p.display()))
                    .unwrap_or_default()
            )
        },
    )
}

/// Opens the teams database of a data folder.
fn open_teams(data: &DataArg) -> Result<Teams, ExitCode> {
    let dir = data_dir(data)?;
    Teams::open(&dir.join(".collective-memory")).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_RUNTIME)
    })
}

/// Whether an error is a failure of this machine (exit 1) rather than a refusal of what was
/// asked (exit 2).
trait Failure {
    fn is_failure(&self) -> bool;
}

impl Failure for TeamsError {
    fn is_failure(&self) -> bool {
        matches!(self, TeamsError::Db(_) | TeamsError::Random(_))
    }
}

impl Failure for cmem::ops::backup::BackupError {
    fn is_failure(&self) -> bool {
        !matches!(self, cmem::ops::backup::BackupError::Refused(_))
    }
}

/// Prints a result as JSON or as text; a refusal (bad name, unknown user, a folder that is not
/// a backup…) exits 2, a failure 1.
fn report<T: serde::Serialize, E: std::fmt::Display + Failure>(
    json: bool,
    r: Result<T, E>,
    text: impl Fn(&T) -> String,
) -> ExitCode {
    match r {
        Ok(v) => {
            if json {
                println!("{}", serde_json::to_string(&v).unwrap_or_default());
            } else {
                println!("{}", text(&v));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            if e.is_failure() {
                ExitCode::from(EXIT_RUNTIME)
            } else {
                ExitCode::from(EXIT_CONFIG)
            }
        }
    }
}

fn teams_cmd(cmd: TeamsCmd, data: &DataArg) -> ExitCode {
    let t = match open_teams(data) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let json = data.json;
    match cmd {
        TeamsCmd::User(UserCmd::Add { name, admin }) => {
            report(json, t.add_user(&name, admin), |u| {
                format!(
                    "user `{}` added{}; create a token with `cmem token create {}`",
                    u.name,
                    if u.admin { " (admin)" } else { "" },
                    u.name
                )
            })
        }
        TeamsCmd::User(UserCmd::List) => report(json, t.users(), |users| {
            users
                .iter()
                .map(|u| {
                    format!(
                        "{}{}  workspaces: {}",
                        u.name,
                        if u.admin { " (admin)" } else { "" },
                        if u.workspaces.is_empty() {
                            "-".into()
                        } else {
                            u.workspaces.join(", ")
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        }),
        TeamsCmd::User(UserCmd::Remove { name }) => report(json, t.remove_user(&name), |_| {
            format!("user `{name}` removed")
        }),
        TeamsCmd::Token(TokenCmd::Create { user, label }) => {
            report(json, t.create_token(&user, label.as_deref()), |k| {
                format!(
                    "{}\n(token id {} for `{}`; it is shown only now, keep it somewhere safe)",
                    k.token, k.id, k.user
                )
            })
        }
        TeamsCmd::Token(TokenCmd::List { user }) => {
            report(json, t.tokens(user.as_deref()), |list| {
                list.iter()
                    .map(|k| {
                        format!(
                            "{}  {}  {}  created {}{}",
                            k.id,
                            k.user,
                            k.label.as_deref().unwrap_or("-"),
                            k.created_at,
                            k.revoked_at
                                .as_ref()
                                .map(|r| format!("  REVOKED {r}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        TeamsCmd::Token(TokenCmd::Revoke { id }) => {
            report(json, t.revoke_token(&id), |_| format!("token {id} revoked"))
        }
        TeamsCmd::Workspace(WorkspaceCmd::Create { name }) => {
            report(json, t.create_workspace(&name), |w| {
                format!(
                    "workspace `{}` created; add members with `cmem workspace add-member {} <user>`",
                    w.name, w.name
                )
            })
        }
        TeamsCmd::Workspace(WorkspaceCmd::List) => report(json, t.workspaces(), |list| {
            list.iter()
                .map(|w| {
                    format!(
                        "{}  members: {}",
                        w.name,
                        if w.members.is_empty() {
                            "-".into()
                        } else {
                            w.members.join(", ")
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        }),
        TeamsCmd::Workspace(WorkspaceCmd::AddMember { workspace, user }) => {
            report(json, t.add_member(&workspace, &user), |_| {
                format!("`{user}` is now a member of `{workspace}`")
            })
        }
        TeamsCmd::Workspace(WorkspaceCmd::RemoveMember { workspace, user }) => {
            report(json, t.remove_member(&workspace, &user), |_| {
                format!("`{user}` removed from `{workspace}`")
            })
        }
    }
}

async fn serve(loaded: config::Loaded) -> anyhow::Result<()> {
    tracing::info!(profile = loaded.profile.name(), "configuration loaded");
    let server = Server::bind(loaded).await?;
    let addr = server
        .local_addr()
        .ok_or_else(|| anyhow::anyhow!("the listener has no local address"))?;
    if !addr.ip().is_loopback() && !server.app().teams.users_exist() {
        tracing::warn!(
            %addr,
            "--insecure: listening beyond loopback with no users; every endpoint and transport is open to anyone who can reach this address"
        );
    }
    // Scripts and tests read this line to learn the port when binding to port 0.
    println!("cmem listening on http://{addr}");
    tracing::info!(%addr, data = %server.app().config.data_dir.display(), epoch = server.hub().journal.epoch(), head = server.hub().journal.head(), "serving");
    server.run(shutdown_signal()).await?;
    Ok(())
}
