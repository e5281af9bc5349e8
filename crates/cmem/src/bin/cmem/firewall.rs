//! `cmem firewall`: prints (or on Windows adds) the firewall rule for the configured port.

use std::process::ExitCode;

use clap::Args;

use crate::{ConfigFlags, EXIT_CONFIG, EXIT_RUNTIME, load_config};
use cmem::ops::firewall;

#[derive(Args)]
pub(crate) struct FirewallArgs {
    #[command(flatten)]
    flags: ConfigFlags,
    /// Add the rule now with netsh (Windows, elevated prompt).
    #[arg(long)]
    apply: bool,
}

pub(crate) fn firewall(a: FirewallArgs) -> ExitCode {
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
