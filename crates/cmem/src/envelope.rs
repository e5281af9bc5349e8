//! The event envelope `{id, epoch, type, scope, ts, data}` and the rules for what may be
//! published.
//!
//! An [`Event`] keeps its envelope serialized once (`body`), so fan-out to N receivers and
//! replay from the journal never re-serialize it: SSE and poll write the bytes as they are.

use std::fmt;

use serde::Serialize;
use serde_json::value::RawValue;

/// Why an event cannot be published as given (the message says what to change).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidEvent(pub String);

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

impl Scope {
    /// Parses `global`, `workspace:<name>` or `client:<id>`.
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
}

impl Scope {
    /// Whether this scope is the one written as `s` (as stored in the journal), without
    /// allocating.
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

/// A committed event: its id, type and scope for routing, and its serialized envelope.
#[derive(Debug)]
pub struct Event {
    pub id: u64,
    pub kind: String,
    pub scope: Scope,
    /// The whole envelope as JSON.
    pub body: Box<RawValue>,
    /// The event as one transport frame, encoded by the first connection that sends it and
    /// shared by every other (the Socket.IO packet: the same bytes for every receiver).
    pub frame: std::sync::OnceLock<bytes::Bytes>,
}

impl Event {
    /// The envelope as a JSON string.
    pub fn json(&self) -> &str {
        self.body.get()
    }
}

/// The envelope as serialized; used to build `body` once per event.
#[derive(Serialize)]
pub(crate) struct EnvelopeRef<'a> {
    pub id: u64,
    pub epoch: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub scope: String,
    pub ts: &'a str,
    pub data: &'a serde_json::Value,
    /// Present only on events a client published through `POST /api/events`: who, as the
    /// server authenticated them. Outside `data`, so no client can set it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publisher: Option<&'a serde_json::Value>,
}

/// An event to publish: what producers hand to `publish`.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: String,
    pub scope: Scope,
    pub data: serde_json::Value,
    /// Who published it, for events from clients (`None` for the server's own events).
    pub publisher: Option<serde_json::Value>,
    /// Several nodes of a cluster may publish the same event (presence, which each node
    /// computes alike): the journal keeps the first with this key and drops the others
    /// (JetStream's de-duplication window, two minutes). `None`: always stored.
    pub dedup: Option<String>,
}

/// Event types only the server itself emits; `POST /api/events` refuses them, so no client can
/// forge a status, a search, an indexing report, a message, a notification, presence or a
/// document edit for the others. Every type a producer in this crate publishes is here (a
/// test reads the sources to keep it so).
pub const SERVER_ONLY: [&str; 16] = [
    "resync",
    "team_message",
    "team_notification",
    "member_joined",
    "member_left",
    "doc_created",
    "doc_update",
    "system_status",
    "indexing_started",
    "indexing_progress",
    "indexing_completed",
    "file_changed",
    "search_started",
    "search_completed",
    "cache_cleared",
    "cmem_close",
];

impl NewEvent {
    pub fn new(kind: impl Into<String>, scope: Scope, data: serde_json::Value) -> Self {
        NewEvent {
            kind: kind.into(),
            scope,
            data,
            publisher: None,
            dedup: None,
        }
    }

    /// The same event, stored once however many nodes publish it (see [`NewEvent::dedup`]).
    pub fn once_as(mut self, key: String) -> Self {
        self.dedup = Some(key);
        self
    }

    /// The same event, marked as published by `publisher` (see [`EnvelopeRef::publisher`]).
    pub fn published_by(mut self, publisher: serde_json::Value) -> Self {
        self.publisher = Some(publisher);
        self
    }

    /// Checks the type name: 1-64 characters of `[A-Za-z0-9_.:-]`, not reserved by Socket.IO.
    pub fn validate(&self) -> Result<(), InvalidEvent> {
        let k = &self.kind;
        if k.is_empty() || k.len() > 64 {
            return Err(InvalidEvent(format!(
                "type `{k}` must be 1 to 64 characters long"
            )));
        }
        if !is_identifier(k, 64) {
            return Err(InvalidEvent(format!(
                "type `{k}` may contain only letters, digits and _ - . :"
            )));
        }
        if crate::protocol::sio::RESERVED_EVENTS.contains(&k.as_str()) {
            return Err(InvalidEvent(format!(
                "type `{k}` is reserved by Socket.IO and cannot be published"
            )));
        }
        Ok(())
    }
}

/// Where a client wants to resume from: the last event id it received, optionally with the
/// epoch that id belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub id: u64,
    pub epoch: Option<String>,
}

impl Cursor {
    /// A cursor as the server hands it out (SSE `id:`, poll `next_cursor`, close messages):
    /// `<epoch>:<id>`, what [`Cursor::parse`] reads back.
    pub fn format(epoch: &str, id: u64) -> String {
        format!("{epoch}:{id}")
    }

    /// Parses `N` or `<epoch>:N`. Errors say what was wrong.
    pub fn parse(s: &str) -> Result<Cursor, String> {
        let s = s.trim();
        let (epoch, id) = match s.rsplit_once(':') {
            Some((e, n)) => (Some(e.to_string()), n),
            None => (None, s),
        };
        let id = id.parse::<u64>().map_err(|_| {
            format!("cursor `{s}` is not an event id (a whole number, optionally prefixed by `<epoch>:`)")
        })?;
        Ok(Cursor { id, epoch })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip() {
        for s in ["global", "workspace:team-a", "client:abc_1"] {
            assert_eq!(Scope::parse(s).unwrap().to_string(), s);
        }
        assert!(Scope::parse("room:x").is_err());
        assert!(Scope::parse("workspace:").is_err());
        assert!(Scope::parse("workspace:a b").is_err());
    }

    #[test]
    fn cursors() {
        assert_eq!(
            Cursor::parse("42").unwrap(),
            Cursor {
                id: 42,
                epoch: None
            }
        );
        assert_eq!(
            Cursor::parse("e1:42").unwrap(),
            Cursor {
                id: 42,
                epoch: Some("e1".into())
            }
        );
        assert_eq!(
            Cursor::parse(&Cursor::format("e1", 42)).unwrap(),
            Cursor {
                id: 42,
                epoch: Some("e1".into())
            }
        );
        assert!(Cursor::parse("abc").is_err());
        assert!(Cursor::parse("-1").is_err());
        assert!(Cursor::parse("").is_err());
    }

    /// Every event type a producer in this crate publishes by name is server-only, so a
    /// producer added later cannot be forged through `POST /api/events` by forgetting the list.
    #[test]
    fn every_type_the_server_produces_is_server_only() {
        fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs")
                    // test modules kept in their own file
                    && !p.ends_with("tests.rs")
                {
                    let text = std::fs::read_to_string(&p).unwrap();
                    // the crate's own code, not its test fixtures
                    let text = text.split("#[cfg(test)]").next().unwrap();
                    for part in text.split("NewEvent::new(").skip(1) {
                        if let Some(lit) = part.trim_start().strip_prefix('"') {
                            out.push(lit.split('"').next().unwrap().to_string());
                        }
                    }
                    // names chosen at run time are listed beside the call
                    for name in [
                        "member_joined",
                        "member_left",
                        "indexing_started",
                        "indexing_progress",
                        "indexing_completed",
                    ] {
                        if text.contains(&format!("\"{name}\"")) {
                            out.push(name.to_string());
                        }
                    }
                }
            }
        }
        let mut produced = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut produced,
        );
        assert!(produced.len() > 10, "{produced:?}");
        for kind in produced {
            assert!(
                SERVER_ONLY.contains(&kind.as_str()),
                "`{kind}` is produced by the server but not in SERVER_ONLY"
            );
        }
    }

    #[test]
    fn types() {
        let ok = NewEvent::new("search_completed", Scope::Global, serde_json::Value::Null);
        assert!(ok.validate().is_ok());
        for bad in ["", "connect", "has space", &"x".repeat(65)] {
            let e = NewEvent::new(bad, Scope::Global, serde_json::Value::Null);
            assert!(e.validate().is_err(), "{bad}");
        }
    }
}
