//! The event envelope `{id, epoch, type, scope, ts, data}` and the rules for what may be
//! published.
//!
//! An [`Event`] keeps its envelope serialized once (`body`), so fan-out to N receivers and
//! replay from the journal never re-serialize it: SSE and poll write the bytes as they are,
//! and the Socket.IO transport keeps the frames it builds around them (its `FrameCache`).

use serde::Serialize;
use serde_json::value::RawValue;

/// Why an event cannot be published as given (the message says what to change).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidEvent(pub String);

pub use cmem_wire::scope::{EVERY_USER, Scope, is_identifier};

/// A committed event: its id, type and scope for routing, and its serialized envelope.
#[derive(Debug)]
pub struct Event {
    pub id: u64,
    pub kind: String,
    pub scope: Scope,
    /// The whole envelope as JSON.
    pub body: Box<RawValue>,
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
    pub scope: &'a str,
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
        if cmem_wire::sio::RESERVED_EVENTS.contains(&k.as_str()) {
            return Err(InvalidEvent(format!(
                "type `{k}` is reserved by Socket.IO and cannot be published"
            )));
        }
        Ok(())
    }
}

pub use cmem_wire::Cursor;

#[cfg(test)]
mod tests {
    use super::*;

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
