//! The `cmem` binary: command-line parsing and the process edge (`anyhow`, exit codes, logs).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use cmem::config::{self, Overrides};
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
                        _ => ExitCode::from(EXIT_RUNTIME),
                    }
                }
            }
        }
    }
}

async fn serve(loaded: config::Loaded) -> anyhow::Result<()> {
    tracing::info!(profile = loaded.profile.name(), "configuration loaded");
    let server = Server::bind(loaded.config).await?;
    let addr = server
        .local_addr()
        .ok_or_else(|| anyhow::anyhow!("the listener has no local address"))?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "listening beyond loopback: publishing (POST /api/events) and every transport are open to anyone who can reach this address"
        );
    }
    // Scripts and tests read this line to learn the port when binding to port 0.
    println!("cmem listening on http://{addr}");
    tracing::info!(%addr, data = %server.hub().config.data_dir.display(), epoch = server.hub().journal.epoch(), head = server.hub().journal.head(), "serving");
    server.run(shutdown_signal()).await?;
    Ok(())
}
