//! `cmem serve`: binds, serves until Ctrl-C or SIGTERM, and maps a failure to its exit code.

use std::process::ExitCode;

use crate::{EXIT_BIND, EXIT_CONFIG, EXIT_PORT_DENIED, EXIT_PORT_IN_USE, EXIT_RUNTIME};
use cmem::config;
use cmem::net::classify::ErrorClass;
use cmem::ops::running;
use cmem::server::{Server, ServerError, shutdown_signal};

pub(crate) async fn serve(loaded: config::Loaded) -> Result<(), ServerError> {
    tracing::info!(profile = loaded.profile.name(), "configuration loaded");
    let server = Server::bind(loaded).await?;
    let addr = server.local_addr();
    if !addr.ip().is_loopback()
        && server.app().config.insecure
        && !server.app().access.users_exist()
    {
        tracing::warn!(
            %addr,
            "--insecure: listening beyond loopback with no users; every endpoint and transport is open to anyone who can reach this address"
        );
    }
    // Scripts and tests read this line to learn the port when binding to port 0.
    println!("cmem listening on http://{addr}");
    tracing::info!(%addr, data = %server.app().config.data_dir.display(), epoch = server.hub().journal.epoch(), head = server.hub().journal.head(), "serving");
    // where `cmem doctor --data` and `cmem mcp` find this server (the port may not be the
    // configured one)
    let state = server.app().config.state_dir();
    if let Err(e) = running::record(&state, addr) {
        tracing::warn!(error = %e, "could not record the server's address in the state folder");
    }
    let ran = server.run(shutdown_signal()).await;
    running::forget(&state);
    ran?;
    Ok(())
}

/// The data folder must exist, unless `--create` says to make it: a mistyped `--data` would
/// otherwise serve an empty memory without a word.
pub(crate) fn data_folder(dir: &std::path::Path, create: bool) -> Result<(), ExitCode> {
    if dir.is_dir() {
        return Ok(());
    }
    if dir.exists() {
        eprintln!(
            "error: the data folder {} is not a folder; --data names the folder of documents to serve",
            dir.display()
        );
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    if !create {
        eprintln!(
            "error: the data folder {} does not exist; check --data, or pass --create to make it",
            dir.display()
        );
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        eprintln!(
            "error: cannot create the data folder {}: {e}",
            dir.display()
        );
        ExitCode::from(EXIT_RUNTIME)
    })?;
    tracing::info!(data = %dir.display(), "created the data folder");
    Ok(())
}

/// The exit code for a server that could not run: the port is taken (3) or refused (4), any
/// other failure to listen (5), a configuration that may not run (2), anything else (1).
pub(crate) fn exit_code(e: &ServerError) -> ExitCode {
    match e {
        ServerError::Bind { diagnosis, .. } => ExitCode::from(match diagnosis.class {
            ErrorClass::AddressInUse => EXIT_PORT_IN_USE,
            ErrorClass::AccessDenied => EXIT_PORT_DENIED,
            _ => EXIT_BIND,
        }),
        ServerError::Insecure { .. } => ExitCode::from(EXIT_CONFIG),
        _ => ExitCode::from(EXIT_RUNTIME),
    }
}
