//! Every refusal and close a client can get from cmem, as a code with a meaning and what the
//! client should do about it — the way Centrifugo documents its disconnect codes, so that
//! clients act on codes, never on the server's English.
//!
//! Where codes travel:
//! - HTTP error bodies: `{"code", "message", …}`.
//! - Socket.IO `CONNECT_ERROR`: `{"message", "data": {"code"}}` (socket.io-client puts `data` on
//!   the error it hands to `connect_error`).
//! - The last words before the server closes a connection: Socket.IO `cmem_close` and the SSE
//!   `close` event, `{"code", "reason", "message", "reconnect", "last_event_id"}` (`reason` is
//!   the code under its older name).
//! - Socket.IO acks of client events that fail: `{"ok": false, "code", "message"}`.
//! - The `resync` event's `reason`.
//!
//! One table, [`Code`], generates the JavaScript client's `clients/js/src/codes.js` and the
//! table in README; a test fails when either is out of date.

use serde::{Deserialize, Serialize};

/// What a client should do when it meets a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Try again after a backoff delay, resuming from the cursor: the cause passes.
    Retry,
    /// The credentials are not (or no longer) good: get a new token before trying again.
    Reauthenticate,
    /// Events could not be delivered: reload what is shown, then go on with the stream.
    Resync,
    /// The same request cannot succeed: change it, or stop.
    GiveUp,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Reauthenticate => "reauthenticate",
            Action::Resync => "resync",
            Action::GiveUp => "give_up",
        }
    }

    /// For a code this client does not know (a newer server): what its HTTP status suggests
    /// (a close without a status is retried; the server says when not to).
    pub fn for_status(status: Option<u16>) -> Action {
        match status {
            Some(401) => Action::Reauthenticate,
            Some(408 | 425 | 429) => Action::Retry,
            Some(400..=499) => Action::GiveUp,
            _ => Action::Retry,
        }
    }
}

macro_rules! codes {
    ($( $(#[doc = $doc:literal])+ $variant:ident = $name:literal, $status:expr, $action:ident; )*) => {
        /// A refusal or close code. Its name (`as_str`) is what travels.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $( $(#[doc = $doc])+ $variant, )*
        }

        impl Code {
            /// Every code, in the table's order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The name that travels.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            /// The HTTP status it comes with, when it answers a request (`None`: only a close
            /// or a resync says it).
            pub fn status(self) -> Option<u16> {
                match self { $(Code::$variant => $status,)* }
            }

            /// What a client should do.
            pub fn action(self) -> Action {
                match self { $(Code::$variant => Action::$action,)* }
            }

            /// What it means, in a sentence or two.
            pub fn meaning(self) -> &'static str {
                match self { $(Code::$variant => concat!($($doc),+).trim_ascii(),)* }
            }
        }
    };
}

codes! {
    /// This server has users and the request carried no token.
    TokenRequired = "token_required", Some(401), Reauthenticate;
    /// The token was not issued by this server, or its user was removed.
    TokenInvalid = "token_invalid", Some(401), Reauthenticate;
    /// The token was revoked; the connections that presented it are closed with this code.
    TokenRevoked = "token_revoked", Some(401), Reauthenticate;
    /// The user was removed; their connections are closed with this code.
    UserRemoved = "user_removed", Some(401), Reauthenticate;
    /// A connection opened while the server ran open (no users) is closed: the server has
    /// users now, so a token is needed.
    AuthenticationRequired = "authentication_required", Some(401), Reauthenticate;
    /// The server listens beyond loopback and has no users: it refuses everything until an
    /// admin creates a user and hands out a token.
    ServerClosed = "server_closed", Some(503), Reauthenticate;
    /// The token could not be checked just now.
    AuthUnavailable = "auth_unavailable", Some(503), Retry;
    /// Not allowed: a workspace the user is not a member of, an admin's action, or an origin
    /// not in `cors_origins`. The message names which.
    Forbidden = "forbidden", Some(403), GiveUp;
    /// The request is malformed or a value is out of range; the message names it.
    Invalid = "invalid", Some(400), GiveUp;
    /// No such path, document, user, workspace or message.
    NotFound = "not_found", Some(404), GiveUp;
    /// The path exists, not with this method.
    MethodNotAllowed = "method_not_allowed", Some(405), GiveUp;
    /// It exists already (a user, a workspace, a document).
    Exists = "exists", Some(409), GiveUp;
    /// A count limit was reached (documents in a workspace, members, subscriptions).
    LimitReached = "limit_reached", Some(409), GiveUp;
    /// It would leave a bad state (the last admin removed).
    Conflict = "conflict", Some(409), GiveUp;
    /// The body is larger than `max_payload_bytes`.
    PayloadTooLarge = "payload_too_large", Some(413), GiveUp;
    /// The URL is longer than the server reads.
    UriTooLong = "uri_too_long", Some(414), GiveUp;
    /// The body is not JSON (`Content-Type: application/json`).
    UnsupportedMediaType = "unsupported_media_type", Some(415), GiveUp;
    /// Valid, but this server cannot answer it as configured (search by meaning on a build
    /// without the embedding model).
    NotAvailable = "not_available", Some(422), GiveUp;
    /// Too many requests: wait (`Retry-After` when given), then send again.
    RateLimited = "rate_limited", Some(429), Retry;
    /// The server cannot take it now (the journal is unavailable, or it is at its connection
    /// limit): try again with backoff.
    Unavailable = "unavailable", Some(503), Retry;
    /// The server failed (it is logged); trying again may succeed.
    Internal = "internal", Some(500), Retry;
    /// The server is shutting down: reconnect (to another node, or once it is back) from the
    /// cursor.
    ServerShutdown = "server_shutdown", Some(503), Retry;
    /// The client accepted no data for `slow_consumer_timeout_ms`: reconnect from the cursor.
    SlowConsumer = "slow_consumer", None, Retry;
    /// The journal failed while delivering: reconnect from the cursor.
    JournalError = "journal_error", None, Retry;
    /// A newer connection recovered this Socket.IO session: this one is redundant and must not
    /// reconnect.
    RecoveredElsewhere = "recovered_elsewhere", None, GiveUp;
    /// The cursor belongs to another journal (the server's data was replaced or restored).
    EpochMismatch = "epoch_mismatch", None, Resync;
    /// The cursor is past the journal's last event (a journal restored from an older backup).
    CursorAheadOfJournal = "cursor_ahead_of_journal", None, Resync;
    /// Events after the cursor were pruned (retention): what happened in between cannot be
    /// replayed.
    CursorOlderThanRetention = "cursor_older_than_retention", None, Resync;
    /// The Socket.IO session the client presented is not one this server can vouch for
    /// (another server, another journal, or made up).
    UnknownSession = "unknown_session", None, Resync;
}

impl Code {
    /// The code named `s`, if this version knows it.
    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.as_str() == s)
    }

    /// The code of a request answered with `status` when nothing more precise is known.
    pub fn for_status(status: u16) -> Code {
        match status {
            401 => Code::TokenInvalid,
            403 => Code::Forbidden,
            404 => Code::NotFound,
            405 => Code::MethodNotAllowed,
            409 => Code::Conflict,
            413 => Code::PayloadTooLarge,
            414 => Code::UriTooLong,
            415 => Code::UnsupportedMediaType,
            422 => Code::NotAvailable,
            429 => Code::RateLimited,
            503 => Code::Unavailable,
            // 400 and any other 4xx
            400..=499 => Code::Invalid,
            _ => Code::Internal,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A refusal or close as a client reads it: the code as sent (which a newer server may have
/// made up since), and the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub code: String,
    pub message: String,
}

impl Refusal {
    /// Reads a refusal from any of the bodies the server sends: `{code, message}` (HTTP error
    /// bodies, closes, acks), `{message, data: {code}}` (Socket.IO `CONNECT_ERROR`), or an
    /// older server's `{error}` / `{reason}`. `None` when it carries neither a code nor a
    /// message.
    pub fn read(v: &serde_json::Value) -> Option<Refusal> {
        let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let code = text("code")
            .or_else(|| {
                v.get("data")
                    .and_then(|d| d.get("code"))
                    .and_then(|c| c.as_str())
                    .map(str::to_string)
            })
            .or_else(|| text("reason"));
        let message = text("message").or_else(|| text("error"));
        if code.is_none() && message.is_none() {
            return None;
        }
        Some(Refusal {
            message: message.unwrap_or_else(|| code.clone().unwrap_or_default()),
            code: code.unwrap_or_default(),
        })
    }

    /// The code, if this version knows it.
    pub fn known(&self) -> Option<Code> {
        Code::parse(&self.code)
    }

    /// What to do: the code's action, or for an unknown code what `status` suggests.
    pub fn action(&self, status: Option<u16>) -> Action {
        self.known()
            .map(Code::action)
            .unwrap_or_else(|| Action::for_status(status))
    }
}

/// The table as the JavaScript client's `src/codes.js` (generated; see the module's doc).
pub fn javascript() -> String {
    let mut out = [
        "// Generated from crates/cmem-wire/src/codes.rs: do not edit. A test fails when this file is",
        "// out of date; `CMEM_WRITE_CODES=1 cargo test -p cmem-wire` writes it again.",
        "",
        "/**",
        " * Every refusal and close code cmem sends: the HTTP status it comes with (null when only a",
        " * close or a resync says it), what a client should do (`retry`, `reauthenticate`, `resync`,",
        " * `give_up`), and what it means.",
        " */",
        "export const CODES = Object.freeze({",
        "",
    ]
    .join("\n");
    for c in Code::ALL {
        let status = c
            .status()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "null".into());
        let meaning = serde_json::Value::String(c.meaning().to_string());
        out.push_str(&format!(
            "  {}: Object.freeze({{ status: {status}, action: '{}', meaning: {meaning} }}),\n",
            c.as_str(),
            c.action().as_str()
        ));
    }
    out.push_str("});\n");
    out
}

/// The table as Markdown, for README (between `<!-- codes -->` and `<!-- /codes -->`).
pub fn markdown() -> String {
    let mut out = String::from("| code | HTTP | a client should | meaning |\n|---|---|---|---|\n");
    for c in Code::ALL {
        let status = c.status().map(|s| s.to_string()).unwrap_or_default();
        out.push_str(&format!(
            "| `{}` | {status} | {} | {} |\n",
            c.as_str(),
            c.action().as_str().replace('_', " "),
            c.meaning()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn names_are_unique_identifiers_and_read_back() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "{c} twice");
            assert!(
                c.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{c}"
            );
            assert_eq!(Code::parse(c.as_str()), Some(*c));
            assert!(!c.meaning().is_empty() && !c.meaning().starts_with(' '));
            if let Some(s) = c.status() {
                assert!((400..600).contains(&s), "{c}: {s}");
            }
        }
        assert_eq!(Code::parse("nope"), None);
        assert_eq!(
            serde_json::to_value(Code::SlowConsumer).unwrap(),
            "slow_consumer"
        );
    }

    #[test]
    fn every_status_the_server_answers_has_a_code_that_comes_with_it() {
        for status in [400, 403, 404, 405, 409, 413, 414, 415, 422, 429, 500, 503] {
            assert_eq!(Code::for_status(status).status(), Some(status), "{status}");
        }
        assert_eq!(Code::for_status(418), Code::Invalid);
        assert_eq!(Code::for_status(502), Code::Internal);
    }

    #[test]
    fn refusals_are_read_from_every_body_the_server_sends() {
        let read = |s: &str| Refusal::read(&serde_json::from_str(s).unwrap()).unwrap();
        let http = read(
            r#"{"success":false,"code":"token_revoked","message":"revoked","error":"revoked"}"#,
        );
        assert_eq!(
            (http.known(), http.message.as_str()),
            (Some(Code::TokenRevoked), "revoked")
        );
        let connect = read(r#"{"message":"not a member of ops","data":{"code":"forbidden"}}"#);
        assert_eq!(connect.action(None), Action::GiveUp);
        let old = read(r#"{"reason":"server_shutdown","message":"bye"}"#);
        assert_eq!(old.known(), Some(Code::ServerShutdown));
        let newer = read(r#"{"code":"made_up_later","message":"?"}"#);
        assert_eq!(newer.known(), None);
        assert_eq!(newer.action(Some(401)), Action::Reauthenticate);
        assert_eq!(newer.action(Some(404)), Action::GiveUp);
        assert_eq!(newer.action(None), Action::Retry);
        assert!(Refusal::read(&serde_json::json!({"other": 1})).is_none());
    }

    fn repo(path: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path)
    }

    /// The JavaScript client's table is this one: regenerated with `CMEM_WRITE_CODES=1`.
    #[test]
    fn the_javascript_table_is_current() {
        let path = repo("clients/js/src/codes.js");
        let want = javascript();
        if std::env::var_os("CMEM_WRITE_CODES").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is out of date: run `CMEM_WRITE_CODES=1 cargo test -p cmem-wire`",
            path.display()
        );
    }

    /// README's table of codes is this one.
    #[test]
    fn the_readme_table_is_current() {
        let path = repo("README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let (start, end) = ("<!-- codes -->\n", "<!-- /codes -->");
        let want = markdown();
        let have = readme
            .split_once(start)
            .and_then(|(_, rest)| rest.split_once(end))
            .map(|(table, _)| table.to_string());
        if std::env::var_os("CMEM_WRITE_CODES").is_some()
            && have.as_deref() != Some(&want)
            && let Some((head, rest)) = readme.split_once(start)
            && let Some((_, tail)) = rest.split_once(end)
        {
            std::fs::write(&path, format!("{head}{start}{want}{end}{tail}")).unwrap();
            return;
        }
        assert_eq!(
            have.as_deref(),
            Some(want.as_str()),
            "README's table of codes (between {start:?} and {end:?}) is out of date: run `CMEM_WRITE_CODES=1 cargo test -p cmem-wire`"
        );
    }
}
