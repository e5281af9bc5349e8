//! `cmem tail` and `cmem publish`: the journal from a terminal or a script, through the Rust
//! client library (`cmem-client`), so they fall back, back off and resume as any client does.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use cmem_client::{Action, Client, Cursor, ErrorCode, Options, Phase, Transport, Update};

use crate::{EXIT_CONFIG, EXIT_RUNTIME, runtime};

/// Where the server is and who is asking.
#[derive(Args)]
pub(crate) struct ServerArgs {
    /// The server.
    #[arg(long, env = "CM_URL", default_value = "http://127.0.0.1:8000")]
    url: String,
    /// A token, for a server with users.
    #[arg(long, env = "CM_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Args)]
pub(crate) struct TailArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Workspaces to receive, comma-separated (default: all of the user's).
    #[arg(long, value_delimiter = ',', value_name = "WS,…")]
    workspaces: Vec<String>,
    /// Print only these event types, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_name = "TYPE,…")]
    types: Vec<String>,
    /// Print each event as its JSON envelope.
    #[arg(long)]
    json: bool,
    /// Start after this event (`<epoch>:<id>`, or an id); default: from now.
    #[arg(long, value_name = "ID")]
    from: Option<String>,
    /// Transports in order of preference.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "websocket,sse,poll",
        value_name = "T,…"
    )]
    transports: Vec<String>,
}

#[derive(Args)]
pub(crate) struct PublishArgs {
    /// The event type.
    #[arg(value_name = "TYPE")]
    kind: String,
    /// The event's data: a JSON value (`{}` if not given).
    #[arg(long, value_name = "JSON")]
    payload: Option<String>,
    /// The old name of --payload (every other command's --data is the data folder).
    #[arg(long, value_name = "JSON", hide = true)]
    data: Option<String>,
    /// `global` or `workspace:<name>`.
    #[arg(long, default_value = "global")]
    scope: String,
    /// Print the server's whole answer as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

fn options(a: &TailArgs) -> Result<Options, String> {
    let mut o = Options::new(a.server.url.trim_end_matches('/'));
    o.token = a.server.token.clone();
    o.workspaces = a.workspaces.clone();
    o.transports = a
        .transports
        .iter()
        .map(|t| t.parse::<Transport>())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    o.from = a
        .from
        .as_deref()
        .map(Cursor::parse)
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok(o)
}

#[cfg(unix)]
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn stop_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// `cmem tail`: prints events as they come, one line each; states on stderr; exits 0 on Ctrl-C.
pub(crate) fn tail(a: TailArgs) -> ExitCode {
    let opts = match options(&a) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let Ok(rt) = runtime() else {
        return ExitCode::from(EXIT_RUNTIME);
    };
    rt.block_on(async move {
        let mut client = match Client::connect(opts) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let stop = stop_signal();
        tokio::pin!(stop);
        let mut out = std::io::LineWriter::new(std::io::stdout());
        loop {
            let update = tokio::select! {
                _ = &mut stop => {
                    if let Some(c) = client.cursor() {
                        eprintln!("cmem tail: stopped after {c} (resume with --from {c})");
                    }
                    return ExitCode::SUCCESS;
                }
                u = client.next() => u,
            };
            match update {
                None => return ExitCode::from(EXIT_RUNTIME),
                Some(Update::State(s)) => {
                    eprintln!("cmem tail: {s}");
                    // a token problem does not mend by retrying, nor what the server says
                    // cannot (its code's action is `give_up`: the client stopped)
                    if let Some((_, e)) = &s.error {
                        if e.action == Some(Action::Reauthenticate)
                            || e.code == ErrorCode::Unauthorized
                        {
                            eprintln!("error: {e}: check --token (or CM_TOKEN)");
                            return ExitCode::from(EXIT_CONFIG);
                        }
                        if s.state == Phase::Failed {
                            eprintln!("error: {e}");
                            return ExitCode::from(EXIT_CONFIG);
                        }
                    }
                }
                Some(Update::Event(e)) => {
                    if !a.types.is_empty() && !a.types.contains(&e.kind) {
                        continue;
                    }
                    let line = if a.json {
                        serde_json::to_string(&e).unwrap_or_default()
                    } else {
                        format!("{} {} {} {} {}", e.id, e.ts, e.kind, e.scope, e.data)
                    };
                    // a closed stdout (`cmem tail | head`) ends the tail quietly
                    if writeln!(out, "{line}").is_err() {
                        return ExitCode::SUCCESS;
                    }
                }
            }
        }
    })
}

/// `cmem publish TYPE`: publishes one event and prints its cursor (`<epoch>:<id>`).
pub(crate) fn publish(a: PublishArgs) -> ExitCode {
    let (flag, text) = match (&a.payload, &a.data) {
        (Some(p), _) => ("--payload", p.as_str()),
        (None, Some(d)) => {
            eprintln!(
                "warning: `cmem publish --data` is now --payload (--data names the data folder in every other command); --data will go in a later release"
            );
            ("--data", d.as_str())
        }
        (None, None) => ("--payload", "{}"),
    };
    let data: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {flag} is not JSON: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let Ok(rt) = runtime() else {
        return ExitCode::from(EXIT_RUNTIME);
    };
    let url = a.server.url.trim_end_matches('/').to_string();
    let answer = rt.block_on(cmem_client::publish(
        &url,
        a.server.token.as_deref(),
        &a.kind,
        &a.scope,
        data,
    ));
    match answer {
        Ok(v) if a.json => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(v) => {
            let epoch = v["epoch"].as_str().unwrap_or("");
            for id in v["ids"].as_array().into_iter().flatten() {
                println!("{epoch}:{id}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            if matches!(e.code, ErrorCode::Transport | ErrorCode::Timeout) {
                eprintln!("  cannot reach a server at {url}: is it running? pass --url to name it");
            }
            // the server refused the request (4xx): the command needs changing
            match e.code {
                ErrorCode::Unauthorized | ErrorCode::Forbidden | ErrorCode::Http
                    if e.message.starts_with("HTTP 4") =>
                {
                    ExitCode::from(EXIT_CONFIG)
                }
                _ => ExitCode::from(EXIT_RUNTIME),
            }
        }
    }
}
