//! `cmem doctor`: diagnoses this machine and which transports reach a running server.

use std::process::ExitCode;

use clap::Args;

use crate::{ConfigFlags, EXIT_RUNTIME, load_config, runtime};
use cmem::ops::doctor;

#[derive(Args)]
pub(crate) struct DoctorArgs {
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

pub(crate) fn doctor(a: DoctorArgs) -> ExitCode {
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
