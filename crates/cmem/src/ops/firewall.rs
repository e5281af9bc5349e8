//! `cmem firewall`: the exact `netsh advfirewall` rule that lets other machines reach the
//! configured port, printed by default and applied with `--apply` (Windows only). It is run
//! as a program with its arguments, never through a shell, so nothing in the configuration can
//! become a command.

use std::net::SocketAddr;
use std::process::Command;

/// The rule's name, so it can be found and deleted later.
pub fn rule_name(port: u16) -> String {
    format!("Collective Memory (cmem) TCP {port}")
}

/// `netsh` arguments adding an inbound allow rule for `port`.
pub fn add_args(port: u16) -> Vec<String> {
    vec![
        "advfirewall".into(),
        "firewall".into(),
        "add".into(),
        "rule".into(),
        format!("name={}", rule_name(port)),
        "dir=in".into(),
        "action=allow".into(),
        "protocol=TCP".into(),
        format!("localport={port}"),
    ]
}

/// `netsh` arguments deleting that rule again.
pub fn delete_args(port: u16) -> Vec<String> {
    vec![
        "advfirewall".into(),
        "firewall".into(),
        "delete".into(),
        "rule".into(),
        format!("name={}", rule_name(port)),
    ]
}

/// How the arguments look typed at a prompt (quoting the name, which has spaces).
pub fn as_command_line(args: &[String]) -> String {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) if v.contains(' ') => format!("{k}=\"{v}\""),
            _ => a.clone(),
        })
        .collect();
    format!("netsh {}", quoted.join(" "))
}

/// What `cmem firewall` says about a bind address.
pub fn advice(bind: SocketAddr) -> String {
    let port = bind.port();
    let mut out = String::new();
    if bind.ip().is_loopback() {
        out.push_str(&format!(
            "note: cmem is configured to listen on {bind}, which only this machine can reach; a firewall rule matters once you bind beyond loopback (e.g. --bind 0.0.0.0:{port}).\n"
        ));
    }
    out.push_str("Allow other machines to reach cmem (run in an elevated prompt, or `cmem firewall --apply`):\n  ");
    out.push_str(&as_command_line(&add_args(port)));
    out.push_str("\nRemove the rule again:\n  ");
    out.push_str(&as_command_line(&delete_args(port)));
    out.push('\n');
    out
}

/// Why applying the rule failed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("--apply works only on Windows; on this system, open port {0} in its own firewall")]
    NotWindows(u16),
    #[error(
        "netsh refused: this needs an elevated prompt (right-click the terminal, \"Run as administrator\") — {0}"
    )]
    NotElevated(String),
    #[error("netsh could not be run: {0}")]
    Spawn(std::io::Error),
    #[error("netsh failed: {0}")]
    Failed(String),
}

/// Adds the rule with `netsh` (Windows only; no shell).
pub fn apply(port: u16) -> Result<String, FirewallError> {
    if !cfg!(windows) {
        return Err(FirewallError::NotWindows(port));
    }
    let out = Command::new("netsh")
        .args(add_args(port))
        .output()
        .map_err(FirewallError::Spawn)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .trim()
    .to_string();
    if out.status.success() {
        return Ok(text);
    }
    let lower = text.to_lowercase();
    if lower.contains("elevation")
        || lower.contains("administrator")
        || lower.contains("access is denied")
    {
        Err(FirewallError::NotElevated(text))
    } else {
        Err(FirewallError::Failed(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_is_exact_and_quoted() {
        let cmd = as_command_line(&add_args(8123));
        assert_eq!(
            cmd,
            "netsh advfirewall firewall add rule name=\"Collective Memory (cmem) TCP 8123\" dir=in action=allow protocol=TCP localport=8123"
        );
        assert!(advice("127.0.0.1:8123".parse().unwrap()).contains("only this machine"));
        assert!(!advice("0.0.0.0:8123".parse().unwrap()).contains("only this machine"));
        #[cfg(not(windows))]
        assert!(matches!(apply(8123), Err(FirewallError::NotWindows(8123))));
    }
}
