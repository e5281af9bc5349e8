//! Who a request or connection is: the local user of an open server, or a user named by a
//! token. Every transport and the HTTP API ask [`identify`]; what an identity may see is
//! decided by [`Identity::workspaces_for`], the one place membership meets scopes.

use axum::http::HeaderMap;
use cmem_wire::Code;

use super::Access;
use crate::teams::{TeamsError, User, check_name};

/// Why a client is refused. Messages say what to send instead.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum AuthError {
    #[error(
        "authentication required: this server has users, so send a token (HTTP: `Authorization: Bearer <token>` or `?token=`; Socket.IO: `auth: {{token}}`)"
    )]
    Missing,
    #[error("the token is not valid (not issued by this server, or its user was removed)")]
    Unknown,
    #[error("the token `{0}` has been revoked; ask for a new one (`cmem token create <user>`)")]
    Revoked(String),
    #[error("authentication is unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Forbidden(String),
    /// No users exist and the server may not run open (it listens beyond loopback and was
    /// not started with `--insecure`): everyone is refused until a user exists.
    #[error(
        "this server listens beyond loopback and has no users, so it refuses every request; an admin on its machine creates one (`cmem user add <name> --admin`, then `cmem token create <name>`), or restarts it with --insecure to run open on purpose"
    )]
    Closed,
}

impl AuthError {
    /// The code a client acts on.
    pub fn code(&self) -> Code {
        match self {
            AuthError::Missing => Code::TokenRequired,
            AuthError::Unknown => Code::TokenInvalid,
            AuthError::Revoked(_) => Code::TokenRevoked,
            AuthError::Unavailable(_) => Code::AuthUnavailable,
            AuthError::Forbidden(_) => Code::Forbidden,
            AuthError::Closed => Code::ServerClosed,
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    /// No users exist and the server is bound to loopback (or runs `--insecure`): the one
    /// local user, who may do everything.
    Open,
    /// A user who presented a valid token (its id is kept so revoking it can close the
    /// connections it opened).
    User { user: User, token_id: String },
}

impl Identity {
    pub fn user_name(&self) -> Option<&str> {
        match self {
            Identity::Open => None,
            Identity::User { user, .. } => Some(&user.name),
        }
    }

    /// The user's id (never reused, unlike the name).
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Identity::Open => None,
            Identity::User { user, .. } => Some(&user.id),
        }
    }

    pub fn token_id(&self) -> Option<&str> {
        match self {
            Identity::Open => None,
            Identity::User { token_id, .. } => Some(token_id),
        }
    }

    pub fn is_admin(&self) -> bool {
        match self {
            Identity::Open => true,
            Identity::User { user, .. } => user.admin,
        }
    }

    /// The workspaces a connection of this identity subscribes to. An open server takes the
    /// requested list as it is. A user gets their memberships when the list is empty, and is
    /// refused for any requested workspace they are not a member of.
    pub fn workspaces_for(&self, requested: Vec<String>) -> Result<Vec<String>, AuthError> {
        let Identity::User { user: u, .. } = self else {
            return Ok(requested);
        };
        if requested.is_empty() {
            return Ok(u.workspaces.clone());
        }
        if let Some(w) = requested.iter().find(|w| !u.workspaces.contains(w)) {
            return Err(AuthError::Forbidden(format!(
                "`{}` is not a member of workspace `{w}`",
                u.name
            )));
        }
        Ok(requested)
    }

    /// Refuses anyone but an admin (or the local user of an open server).
    pub fn require_admin(&self, what: &str) -> Result<(), AuthError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(AuthError::Forbidden(format!(
                "{what} needs an admin token; `{}` is not an admin",
                self.user_name().unwrap_or("?")
            )))
        }
    }
}

/// Decides who presents `token`: a token is always checked; without one, the server must be
/// open — no users exist *and* `open_allowed` ([`crate::config::Config::open_allowed`]: a
/// loopback bind or `--insecure`). Both are asked at every call, so a server that loses its
/// last user while exposed closes instead of opening.
pub fn identify(
    teams: &Access,
    token: Option<&str>,
    open_allowed: bool,
) -> Result<Identity, AuthError> {
    match token.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => teams
            .authenticate(t)
            .map(|(user, token_id)| Identity::User { user, token_id }),
        None if teams.users_exist() => Err(AuthError::Missing),
        None if !open_allowed => Err(AuthError::Closed),
        None => Ok(Identity::Open),
    }
}

/// The bearer token of an HTTP request: `Authorization: Bearer …` first, else `?token=`.
pub fn token_from(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string());
    bearer.or_else(|| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(query.unwrap_or(""))
            .ok()?
            .into_iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v)
    })
}

/// The query string without its `token` parameter, so handlers (which refuse unknown
/// parameters) never see it and it is not echoed anywhere.
pub fn strip_token(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("token=") && *p != "token")
        .collect::<Vec<_>>()
        .join("&")
}

/// The author of messages on an open server, where nobody signs in.
pub const LOCAL_USER: &str = "local";

/// Whether `identity` may read and write `workspace`: anyone on an open server, members
/// otherwise (asked of the database each time, so a removal applies at once).
pub fn check_access(
    teams: &Access,
    identity: &Identity,
    workspace: &str,
) -> Result<(), TeamsError> {
    check_name("workspace", workspace)?;
    match identity.user_name() {
        None => Ok(()),
        Some(user) if teams.is_member(workspace, user)? => Ok(()),
        Some(user) => Err(TeamsError::Forbidden(format!(
            "`{user}` is not a member of workspace `{workspace}`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_header_or_query() {
        let mut h = HeaderMap::new();
        assert_eq!(token_from(&h, Some("a=1&token=xyz")), Some("xyz".into()));
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(token_from(&h, Some("token=xyz")), Some("abc".into()));
        assert_eq!(strip_token("a=1&token=xyz&b=2"), "a=1&b=2");
        assert_eq!(strip_token("token=xyz"), "");
    }

    #[test]
    fn users_see_only_their_workspaces() {
        let u = Identity::User {
            user: User {
                id: "u1".into(),
                name: "bob".into(),
                admin: false,
                created_at: String::new(),
                workspaces: vec!["eng".into()],
            },
            token_id: "t".into(),
        };
        assert_eq!(u.workspaces_for(vec![]).unwrap(), vec!["eng"]);
        assert!(u.workspaces_for(vec!["ops".into()]).is_err());
        assert!(u.require_admin("x").is_err());
        assert_eq!(
            Identity::Open.workspaces_for(vec!["any".into()]).unwrap(),
            vec!["any"]
        );
    }
}
