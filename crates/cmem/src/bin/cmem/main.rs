//! The `cmem` binary: the command line (one file per command beside this one), dispatch, exit
//! codes and logging. The process edge: the only place errors become exit codes.

mod backup;
mod doctor;
mod firewall;
mod index;
mod mcp;
mod search;
mod serve;
mod tail;
mod teams;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use cmem::config::{self, Overrides};

use doctor::DoctorArgs;
use firewall::FirewallArgs;
use index::IndexArgs;
use mcp::McpArgs;
use search::SearchArgs;
use tail::{PublishArgs, TailArgs};
use teams::{TeamsCmd, TokenCmd, UserCmd, WorkspaceCmd};

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
    Serve(ServeArgs),
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
    /// Print a server's events as they come, one line each; reconnects and resumes by itself.
    Tail(TailArgs),
    /// Publish one event (for scripts); prints its cursor.
    Publish(PublishArgs),
    /// Serve the MCP server on stdin/stdout, for an AI assistant that starts a local process.
    Mcp(McpArgs),
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

/// Where the teams database is: the data folder (default: CM_DATA_DIR, else "."). Global, so
/// it may follow the subcommand (`cmem user add alice --data DIR`).
#[derive(Args, Clone)]
pub(crate) struct DataArg {
    #[arg(long, value_name = "DIR", global = true)]
    data: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

/// `cmem serve`: the configuration flags, and whether a missing data folder may be made.
#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    flags: ConfigFlags,
    /// Make the data folder if it does not exist (without this, a mistyped --data is an
    /// error rather than an empty memory).
    #[arg(long)]
    create: bool,
}

/// Flags that override every other configuration layer: one per configuration key
/// (`--ping-interval-ms 5000`, `--insecure`; `--data` for `data_dir`), made from the key list
/// so a new key has its flag without being written here.
#[derive(Clone, Default)]
pub(crate) struct ConfigFlags {
    overrides: Overrides,
}

impl ConfigFlags {
    fn overrides(&self) -> Overrides {
        self.overrides.clone()
    }
}

impl clap::FromArgMatches for ConfigFlags {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut overrides = Overrides::default();
        for key in config::SPECS {
            if let Some(v) = m.get_one::<String>(key.name) {
                overrides.set(key.name, v.clone());
            }
        }
        Ok(ConfigFlags { overrides })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for ConfigFlags {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        for key in config::SPECS {
            let arg = clap::Arg::new(key.name)
                .long(key.flag())
                .help(key.summary())
                .long_help(format!("{} [env: {}]", key.text(), key.env()));
            // a switch alone means true (`--insecure`); `--search-publish-query false` too
            cmd = cmd.arg(if key.switch {
                arg.num_args(0..=1)
                    .require_equals(false)
                    .default_missing_value("true")
                    .value_parser(["true", "false"])
                    .value_name("BOOL")
            } else {
                arg.value_name(key.name.to_uppercase())
            });
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// Exit codes callers (and scripts) can tell apart.
pub(crate) const EXIT_CONFIG: u8 = 2;

/// The port is taken by another process.
pub(crate) const EXIT_PORT_IN_USE: u8 = 3;

/// The OS refused the port (Windows excluded range, privileged port).
pub(crate) const EXIT_PORT_DENIED: u8 = 4;

/// Any other failure to listen.
pub(crate) const EXIT_BIND: u8 = 5;

pub(crate) const EXIT_RUNTIME: u8 = 1;

/// The embedding model, as build.rs found it (`MODEL`: `Some` with its bytes, or `None`).
mod built_in_model {
    include!(concat!(env!("OUT_DIR"), "/model.rs"));
}

fn main() -> ExitCode {
    if let Some(files) = built_in_model::MODEL {
        cmem::memory::embed::provide_built_in(files);
    }
    let cli = Cli::parse();
    // the team commands answer in a line; what they did on the way (reaching a cluster's NATS,
    // catching up with its team log) is only worth a warning
    let quiet = matches!(
        cli.command,
        Command::User { .. } | Command::Token { .. } | Command::Workspace { .. }
    );
    let default_filter = if quiet {
        "warn"
    } else {
        "info,rmcp=warn,async_nats=warn"
    };
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // WebSocket message payloads are never logged, whatever RUST_LOG asks: tungstenite logs
    // each message at trace, and a Socket.IO CONNECT carries the client's token
    if let Ok(quiet) = "tungstenite::protocol=debug".parse() {
        filter = filter.add_directive(quiet);
    }
    // colour only for a person at a terminal (not in files, pipes or service logs)
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Index(args) => index::index(args),
        Command::Search(args) => search::search(args),
        Command::Firewall(a) => firewall::firewall(a),
        Command::Doctor(a) => doctor::doctor(a),
        Command::Tail(a) => tail::tail(a),
        Command::Publish(a) => tail::publish(a),
        Command::Mcp(a) => mcp::mcp(a),
        Command::User { cmd, data } => teams::teams_cmd(TeamsCmd::User(cmd), &data),
        Command::Token { cmd, data } => teams::teams_cmd(TeamsCmd::Token(cmd), &data),
        Command::Workspace { cmd, data } => teams::teams_cmd(TeamsCmd::Workspace(cmd), &data),
        Command::Backup { dir, data } => backup::backup_cmd(&dir, &data),
        Command::Restore { dir, data } => backup::restore_cmd(&dir, &data),
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
        Command::Serve(ServeArgs { flags, create }) => {
            let (loaded, runtime) =
                match load_config(&flags.overrides()).and_then(|l| Ok((l, runtime()?))) {
                    Ok(x) => x,
                    Err(code) => return code,
                };
            if let Err(code) = serve::data_folder(&loaded.config.data_dir, create) {
                return code;
            }
            match runtime.block_on(serve::serve(loaded)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    serve::exit_code(&e)
                }
            }
        }
    }
}

/// Loads the configuration, or says why not (exit code 2).
pub(crate) fn load_config(o: &Overrides) -> Result<config::Loaded, ExitCode> {
    config::load(o).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// The async runtime for the commands that need one.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::from(EXIT_RUNTIME)
    })
}

/// Loads the configuration for a folder (so `index_max_file_bytes` and the like apply).
pub(crate) fn config_for(dir: &std::path::Path) -> Result<config::Loaded, ExitCode> {
    load_config(&Overrides::data_dir(dir))
}

/// The data folder a command acts on: `--data`, else the configured one; it must exist.
pub(crate) fn data_dir(data: &DataArg) -> Result<PathBuf, ExitCode> {
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

/// Whether an error is a failure of this machine (exit 1) rather than a refusal of what was
/// asked (exit 2).
pub(crate) trait Failure {
    fn is_failure(&self) -> bool;
}

/// Prints a result as JSON or as text; a refusal (bad name, unknown user, a folder that is not
/// a backup…) exits 2, a failure 1.
pub(crate) fn report<T: serde::Serialize, E: std::fmt::Display + Failure>(
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
