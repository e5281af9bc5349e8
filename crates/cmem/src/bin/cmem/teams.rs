//! `cmem user|token|workspace`: the teams database from the command line, the same operations
//! as `/api/admin/*`.

use std::process::ExitCode;

use clap::Subcommand;

use crate::{DataArg, EXIT_RUNTIME, Failure, config_for, data_dir, report};
use cmem::access::Access;
use cmem::teams::TeamsError;

#[derive(Subcommand)]
pub(crate) enum UserCmd {
    /// Add a user.
    Add {
        name: String,
        /// May manage users, tokens and workspaces, and publish anywhere.
        #[arg(long)]
        admin: bool,
    },
    /// List users with their workspaces.
    List,
    /// Remove a user, their tokens and memberships. The last admin is kept unless
    /// --allow-no-admin is given.
    Remove {
        name: String,
        /// Remove even the last admin: nobody can then manage users, tokens and workspaces
        /// over HTTP, and a server listening beyond loopback that is left with no users
        /// refuses every request until one is added with `cmem user add`.
        #[arg(long)]
        allow_no_admin: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum TokenCmd {
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
pub(crate) enum WorkspaceCmd {
    /// Create a workspace.
    Create { name: String },
    /// List workspaces with their members.
    List,
    /// Make a user a member of a workspace.
    AddMember { workspace: String, user: String },
    /// Remove a user from a workspace.
    RemoveMember { workspace: String, user: String },
}

pub(crate) enum TeamsCmd {
    User(UserCmd),
    Token(TokenCmd),
    Workspace(WorkspaceCmd),
}

/// Opens the teams database of a data folder as configured: `teams.sqlite3`, or the
/// cluster's team log when `cluster_nats_url` is set (then a change made here reaches every
/// node).
pub(crate) fn open_teams(data: &DataArg) -> Result<Access, ExitCode> {
    let dir = data_dir(data)?;
    let loaded = config_for(&dir)?;
    cmem::open_teams(&loaded.config)
        .map(|store| Access::new(std::sync::Arc::new(store)))
        .map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        })
}

/// Forgets a removed user's searches in the folder's history (shared with a running server).
fn forget_searches(data: &DataArg, user_id: &str) {
    let Ok(dir) = data_dir(data) else { return };
    let Ok(loaded) = config_for(&dir) else { return };
    let forgotten = cmem::memory::history::History::open(&loaded.config.state_dir(), 1)
        .and_then(|h| h.forget(user_id));
    if let Err(e) = forgotten {
        eprintln!("warning: the user's searches could not be forgotten: {e}");
    }
}

impl Failure for TeamsError {
    fn is_failure(&self) -> bool {
        matches!(self, TeamsError::Db(_) | TeamsError::Random(_))
    }
}

pub(crate) fn teams_cmd(cmd: TeamsCmd, data: &DataArg) -> ExitCode {
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
        TeamsCmd::User(UserCmd::Remove {
            name,
            allow_no_admin,
        }) => {
            let r = t.remove_user(&name, allow_no_admin).map_err(|e| match e {
                TeamsError::Conflict(m) => {
                    TeamsError::Conflict(format!("{m}; --allow-no-admin removes it anyway"))
                }
                e => e,
            });
            if let Ok(user) = &r {
                forget_searches(data, &user.id);
            }
            report(json, r, |_| format!("user `{name}` removed"))
        }
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
