//! Who may see an event: everyone, a workspace's members, one connection, or one user. The
//! server routes by scope; clients name scopes when they publish and read them on envelopes.

use std::fmt;

/// In a scope list of a replay or activity query: every user's scope (for admins). Never a
/// scope of its own: `*` is not an identifier character.
pub const EVERY_USER: &str = "user:*";

/// The one rule for identifiers that travel in events and URLs (event types, scope names,
/// poll client ids): 1 to `max` characters of letters, digits and `_ - . :`.
pub fn is_identifier(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

/// Who may see an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every client.
    Global,
    /// Members of one workspace.
    Workspace(String),
    /// One connection.
    Client(String),
    /// One user (by id, never reused), on all their connections, and admins: what is theirs
    /// alone, such as the text of their searches.
    User(String),
}

impl Scope {
    /// Parses `global`, `workspace:<name>`, `client:<id>` or `user:<id>`; the error says what
    /// was wrong.
    pub fn parse(s: &str) -> Result<Scope, String> {
        let valid_name = |n: &str| is_identifier(n, 128);
        if s == "global" {
            Ok(Scope::Global)
        } else if let Some(w) = s.strip_prefix("workspace:") {
            if valid_name(w) {
                Ok(Scope::Workspace(w.to_string()))
            } else {
                Err(format!(
                    "scope `{s}`: the workspace name must be 1-128 characters of letters, digits, _ - . :"
                ))
            }
        } else if let Some(c) = s.strip_prefix("client:") {
            // a connection's address is made by the server and may be longer than a name: a
            // poll client's is its user id, its client id and a serial number
            if is_identifier(c, 256) {
                Ok(Scope::Client(c.to_string()))
            } else {
                Err(format!(
                    "scope `{s}`: the client address must be 1-256 characters of letters, digits, _ - . :"
                ))
            }
        } else if let Some(u) = s.strip_prefix("user:") {
            if valid_name(u) {
                Ok(Scope::User(u.to_string()))
            } else {
                Err(format!(
                    "scope `{s}`: the user id must be 1-128 characters of letters, digits, _ - . :"
                ))
            }
        } else {
            Err(format!(
                "scope `{s}` is not one of `global`, `workspace:<name>`, `client:<id>`, `user:<id>`"
            ))
        }
    }

    /// Whether this scope is the one written as `s` (as stored in the journal), without
    /// allocating. [`EVERY_USER`] is every user's scope.
    pub fn is(&self, s: &str) -> bool {
        match self {
            Scope::Global => s == "global",
            Scope::Workspace(w) => s.strip_prefix("workspace:") == Some(w.as_str()),
            Scope::Client(c) => s.strip_prefix("client:") == Some(c.as_str()),
            Scope::User(u) => s == EVERY_USER || s.strip_prefix("user:") == Some(u.as_str()),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Workspace(w) => write!(f, "workspace:{w}"),
            Scope::Client(c) => write!(f, "client:{c}"),
            Scope::User(u) => write!(f, "user:{u}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip() {
        for s in ["global", "workspace:team-a", "client:abc_1", "user:u1"] {
            assert_eq!(Scope::parse(s).unwrap().to_string(), s);
        }
        assert!(Scope::parse("room:x").is_err());
        assert!(Scope::parse("workspace:").is_err());
        assert!(Scope::parse("workspace:a b").is_err());
        assert!(
            Scope::parse(EVERY_USER).is_err(),
            "`user:*` is a query, not a scope"
        );
        assert!(Scope::User("u1".into()).is(EVERY_USER));
        assert!(Scope::Workspace("a".into()).is("workspace:a"));
        assert!(!Scope::Workspace("a".into()).is("workspace:ab"));
    }
}
