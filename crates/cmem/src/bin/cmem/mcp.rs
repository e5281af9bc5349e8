//! `cmem mcp --data DIR`: the MCP server over stdin/stdout, for an AI assistant that starts a
//! local process. Reads the folder's index, journal and team database on disk, beside a running
//! server or without one; what the team must see goes through the running server
//! (`cmem::mcp::local` says why). Logs go to stderr: stdout carries the protocol.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::{EXIT_CONFIG, EXIT_RUNTIME, config_for, runtime};
use cmem::mcp::local::{LocalError, LocalOptions, serve_stdio};

#[derive(Args)]
pub(crate) struct McpArgs {
    /// The data folder (the one `cmem serve` covers).
    #[arg(long, value_name = "DIR", default_value = ".")]
    data: PathBuf,
    /// A token, when the folder has users: the assistant acts as that user.
    #[arg(long, env = "CM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The folder's running server, for searches, messages and notifications (default: the
    /// address it recorded in the state folder, else the configured `bind`).
    #[arg(long, env = "CM_URL")]
    url: Option<String>,
}

pub(crate) fn mcp(args: McpArgs) -> ExitCode {
    if !args.data.is_dir() {
        eprintln!("error: {} is not a folder", args.data.display());
        return ExitCode::from(EXIT_CONFIG);
    }
    let loaded = match config_for(&args.data) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let state_dir = loaded.config.state_dir();
    let served = rt.block_on(serve_stdio(LocalOptions {
        data_dir: args.data,
        config: loaded.config,
        token: args.token,
        // the folder's running server, where it recorded its address (else the configured one)
        url: args
            .url
            .or_else(|| cmem::ops::running::recorded_url(&state_dir)),
    }));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (LocalError::TokenNeeded | LocalError::Refused(_))) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
