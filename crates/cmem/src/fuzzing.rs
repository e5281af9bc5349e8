//! Entry points for the fuzzers and property tests: every parser a client (or the config file)
//! can reach, each taking raw input and returning nothing. They must never panic, overflow the
//! stack or hang, whatever the bytes; where a parser accepts something, the checks here assert
//! what acceptance promises (an accepted query runs; an accepted event is publishable).
//!
//! Used by `fuzz/` (cargo fuzz, libFuzzer) and by `tests/fuzz_props.rs` (proptest, in the
//! normal test run). Not part of the server's API.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

use crate::envelope::{Cursor, SERVER_ONLY, Scope};
use crate::memory::Memory;
use crate::memory::search::{self, Filters};

/// A scratch folder for the targets that need files (removed with the process's temp files).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cmem-fuzz-{}-{name}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn memory() -> Option<&'static Memory> {
    static M: OnceLock<Option<std::sync::Arc<Memory>>> = OnceLock::new();
    M.get_or_init(|| {
        let dir = scratch("index");
        let _ = std::fs::write(dir.join("a.md"), "# Alpha\nbeta gamma delta (epsilon)\n");
        let m = Memory::open(&dir, &crate::memory::OpenOptions::default()).ok()?;
        let mut sink = |_: &str, _: Value| {};
        let _ = crate::memory::indexer::run_blocking(&m, None, &mut sink);
        Some(m)
    })
    .as_deref()
}

/// A search query, as every search route and `cmem search` take it: bounded, then parsed and
/// run. Whatever passes the bound runs (an answer or a 400, never a crash).
pub fn search_query(q: &str) {
    if search::check_shape(q).is_err() {
        return;
    }
    if let Some(m) = memory() {
        let _ = search::search(m, q, &Filters::default(), 10, 0);
        let _ = search::suggestions(m, q, 10);
    }
}

/// What an MCP client sends that the MCP server parses itself: document URIs, a prompt's
/// `since`, tool arguments (`mcp::fuzz_input` says what acceptance promises).
pub fn mcp_input(text: &str) {
    crate::mcp::fuzz_input(text);
}

/// A `POST /api/events` body. Whatever is accepted is publishable and forges nothing.
pub fn publish_body(bytes: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    if let Ok(events) = crate::api::events::parse_body(v) {
        for e in events {
            assert!(e.validate().is_ok(), "accepted but invalid: {e:?}");
            assert!(
                !SERVER_ONLY.contains(&e.kind.as_str()),
                "server type accepted"
            );
            assert_eq!(
                Scope::parse(&e.scope.to_string()).ok(),
                Some(e.scope.clone())
            );
        }
    }
}

/// A cursor, as `after`, `Last-Event-ID` or `auth.last_event_id` carry it.
pub fn cursor(s: &str) {
    if let Ok(c) = Cursor::parse(s) {
        let again = match &c.epoch {
            Some(e) => Cursor::format(e, c.id),
            None => c.id.to_string(),
        };
        assert_eq!(Cursor::parse(&again).ok(), Some(c));
    }
    let _ = crate::http::parse_cursor("after", Some(s), None);
    let _ = crate::http::parse_cursor("after", Some(s), Some(s));
}

/// A poll or SSE query string.
pub fn query_string(s: &str) {
    let allowed = ["client_id", "after", "epoch", "wait", "limit", "workspaces"];
    if let Ok(q) = crate::http::query_params(Some(s), &allowed) {
        assert!(q.keys().all(|k| allowed.contains(&k.as_str()) || k == "_"));
        let _ = crate::transports::parse_workspaces(q.get("workspaces").map(String::as_str));
    }
    let _ = crate::access::auth::strip_token(s);
}

/// The Socket.IO handshake `auth` object.
pub fn socketio_auth(bytes: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        let _ = crate::transports::socketio::parse_auth(Some(v));
    }
}

/// A Yjs update and a state vector, through `doc_update` and `doc_sync` as the server runs
/// them (a scratch teams database; one document per input, so none grows without bound).
pub fn yjs(bytes: &[u8]) {
    static T: OnceLock<Option<crate::collab::Collab>> = OnceLock::new();
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let Some(t) = T.get_or_init(|| {
        let store = std::sync::Arc::new(crate::teams::TeamStore::open(&scratch("teams")).ok()?);
        let access = crate::access::Access::new(store.clone());
        Some(crate::collab::Collab::new(store, access))
    }) else {
        return;
    };
    let name = format!(
        "d{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 64
    );
    let _ = t.fuzz_doc_ops("fuzz", &name, bytes);
}

/// A client event payload (JSON as socket.io-client sends it, read the way the handlers do).
pub fn client_payload(bytes: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    let _ = crate::transports::client_events::workspace_of(&v);
    let Ok(packed) = rmpv::ext::to_value(&v) else {
        return;
    };
    use crate::transports::client_events::{field, text_field};
    for key in ["workspace", "doc", "text", "title", "client_msg_id"] {
        let _ = text_field(&packed, key);
    }
    for key in ["update", "state_vector"] {
        if let Some(b) = field(&packed, key) {
            let _ = crate::collab::docs::bytes_of(b, key);
        }
    }
    let _ = serde_json::to_value(&packed);
}

/// The config file, loaded as start-up loads it (without the process environment).
pub fn config_file(text: &str) {
    let dir = scratch("config");
    let path = dir.join(format!("cmem-{:?}.toml", std::thread::current().id()));
    if std::fs::write(&path, text).is_ok() {
        let env = figment::providers::Env::prefixed("CM_FUZZ_NOTHING_").only(&[]);
        let _ = crate::config::load_with(&crate::config::Overrides::default(), &path, env);
    }
}

/// A Socket.IO transport's input: an Engine.IO polling payload (or WebSocket text frame) and the
/// Socket.IO packets in it, binary attachments included. Whatever decodes encodes back to the
/// same packet.
pub fn protocol(bytes: &[u8]) {
    use cmem_wire::{eio, sio};
    let limits = sio::Limits {
        max_attachments: 4,
        max_attachment_bytes: 4096,
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(packets) = eio::decode_payload(text, 1 << 20) else {
        return;
    };
    let mut partial: Option<sio::Partial> = None;
    for p in packets {
        assert_eq!(eio::Packet::decode(&p.encode()).as_ref(), Ok(&p), "{p:?}");
        match p {
            eio::Packet::Message(m) => {
                let Ok(packet) = sio::Packet::decode(&m, &limits) else {
                    continue;
                };
                let again = sio::Packet::decode(&packet.encode(), &limits);
                assert_eq!(again.as_ref(), Ok(&packet), "{m:?}");
                partial = match sio::Partial::start(packet, &limits) {
                    sio::Assembly::Waiting(p) => Some(p),
                    sio::Assembly::Complete(..) => None,
                };
            }
            eio::Packet::Binary(b) => {
                if let Some(part) = partial.take() {
                    match part.push(b) {
                        Ok(sio::Assembly::Complete(packet, buffers)) => {
                            if let Some((_, args)) = packet.event_parts() {
                                for a in args {
                                    let _ = sio::with_attachments(a, &buffers);
                                }
                            }
                        }
                        Ok(sio::Assembly::Waiting(more)) => partial = Some(more),
                        Err(_) => {}
                    }
                }
            }
            _ => {}
        }
    }
}

/// What a client sends on a WebSocket, as the server's frame decoder reads it: whatever the
/// bytes, no panic, no message over the limit, and the same messages (or the same error)
/// whether the bytes come at once or split at any point (the first byte chooses where).
pub fn websocket_frames(bytes: &[u8]) {
    use cmem_wire::ws::{Decoded, Decoder, Message, WsError};
    const LIMIT: usize = 1024;
    fn run(chunks: &[&[u8]]) -> (Vec<Message>, Option<WsError>) {
        let mut d = Decoder::new(LIMIT);
        let mut buf: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match d.decode(&buf) {
                    Err(e) => return (out, Some(e)),
                    Ok(Decoded::NeedMore { frame_len }) => {
                        assert!(frame_len == 0 || frame_len > buf.len());
                        break;
                    }
                    Ok(Decoded::Frame { used, message }) => {
                        assert!(used > 0 && used <= buf.len());
                        buf.drain(..used);
                        if let Some(m) = message {
                            let len = match &m {
                                Message::Text(t) => t.len(),
                                Message::Binary(b) | Message::Ping(b) => b.len(),
                                Message::Pong | Message::Close(_) => 0,
                            };
                            assert!(len <= LIMIT);
                            out.push(m);
                        }
                    }
                }
            }
        }
        (out, None)
    }
    let Some((&first, rest)) = bytes.split_first() else {
        return;
    };
    let at = (first as usize).min(rest.len());
    let whole = run(&[rest]);
    let split = run(&[&rest[..at], &rest[at..]]);
    assert_eq!(whole, split);
}
