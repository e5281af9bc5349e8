//! Every configuration key, declared once: its name, type, default, range and help. From this
//! one list the [`keys!`] macro derives the [`Config`] struct, its `Default`, the key list
//! `cmem config` prints, the environment variables (`CM_` + the name in capitals), the
//! command-line flags (`--name-with-dashes`), the range checks, and the README's table (a test
//! fails when README.md is not what [`markdown_table`] renders).
//!
//! A new key is one entry here; nothing else needs to know its name unless it uses it.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::profile::PlatformProfile;
use super::{JournalSync, Transport};

/// What is known about one key.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    /// The help text: the first line is the summary, shown by `--help`.
    pub help: &'static str,
    /// Inclusive bounds, for numbers.
    pub range: Option<(u64, u64)>,
    /// A switch (`--insecure`) rather than a flag taking a value.
    pub switch: bool,
}

impl Key {
    /// `CM_` + the name in capitals.
    pub fn env(&self) -> String {
        format!("CM_{}", self.name.to_uppercase())
    }

    /// The command-line flag: `--` + the name with dashes (`--data` for `data_dir`).
    pub fn flag(&self) -> String {
        match self.name {
            "data_dir" => "data".to_string(),
            n => n.replace('_', "-"),
        }
    }

    /// The first line of the help.
    pub fn summary(&self) -> &'static str {
        self.help.lines().next().unwrap_or("").trim()
    }

    /// The whole help as one paragraph.
    pub fn text(&self) -> String {
        self.help
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A value that range checks can read as a number.
trait AsNumber {
    /// Whether the key is a switch (a flag without a value).
    const SWITCH: bool = false;

    fn as_number(&self) -> Option<u64> {
        None
    }
}

impl AsNumber for u64 {
    fn as_number(&self) -> Option<u64> {
        Some(*self)
    }
}
impl AsNumber for usize {
    fn as_number(&self) -> Option<u64> {
        Some(*self as u64)
    }
}
impl AsNumber for u16 {
    fn as_number(&self) -> Option<u64> {
        Some(u64::from(*self))
    }
}
impl AsNumber for bool {
    const SWITCH: bool = true;
}
impl AsNumber for String {}
impl AsNumber for PathBuf {}
impl AsNumber for SocketAddr {}
impl AsNumber for PlatformProfile {}
impl AsNumber for JournalSync {}
impl<T> AsNumber for Vec<T> {}

/// Declares the keys; see the module documentation.
macro_rules! keys {
    ($(
        $(#[doc = $doc:literal])+
        $(#[serde($($serde:tt)*)])?
        $name:ident : $ty:ty = $default:expr $(, range $lo:literal ..= $hi:literal)? ;
    )*) => {
        /// The effective configuration of a server. Each field is one key of [`KEYS`].
        #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        pub struct Config {
            $(
                $(#[doc = $doc])+
                $(#[serde($($serde)*)])?
                pub $name: $ty,
            )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $($name: $default,)* }
            }
        }

        /// Every key, in the order `cmem config` prints them.
        pub const SPECS: &[Key] = &[$(
            Key {
                name: stringify!($name),
                help: concat!($($doc, "\n"),+),
                range: keys!(@range $($lo, $hi)?),
                switch: <$ty as AsNumber>::SWITCH,
            },
        )*];

        /// Every key's name, in the order `cmem config` prints them.
        pub const KEYS: &[&str] = &[$(stringify!($name)),*];

        impl Config {
            /// A key's value as a number (for range checks); `None` for other types.
            pub(crate) fn number(&self, key: &str) -> Option<u64> {
                match key {
                    $(stringify!($name) => AsNumber::as_number(&self.$name),)*
                    _ => None,
                }
            }
        }

        /// Some keys' values: a layer (a platform profile) that sets only these.
        #[derive(Debug, Default, Clone, Serialize)]
        pub struct Partial {
            $(
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $name: Option<$ty>,
            )*
        }
    };
    (@range $lo:literal, $hi:literal) => { Some(($lo, $hi)) };
    (@range) => { None };
}

keys! {
    /// `auto` (pick by the OS), `windows` or `default`.
    /// `windows` raises `ping_timeout_ms`, `poll_interval_ms` and `slow_consumer_timeout_ms` and
    /// turns `tcp_keepalive` on.
    platform_profile: PlatformProfile = PlatformProfile::Auto;
    /// Address and port to listen on; port 0 picks a free port.
    /// The port in use is printed as `cmem listening on http://…`.
    bind: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8000));
    /// The folder the memory covers; server state lives in `<data_dir>/.collective-memory/`.
    /// Not settable in the config file, which lives inside it.
    data_dir: PathBuf = PathBuf::from(".");
    /// Origins allowed by CORS, the Socket.IO `Origin` check and state-changing requests.
    /// Comma-separated; the server's own origin is always allowed; `*` allows any.
    /// None by default: a page elsewhere (a dev server on another port included) may act
    /// as the user only once its origin is listed here.
    #[serde(deserialize_with = "super::list")]
    cors_origins: Vec<String> = vec![];
    /// Host names an open server answers to besides loopback names and IP addresses.
    /// Against DNS rebinding; `*` allows any.
    #[serde(deserialize_with = "super::list")]
    allowed_hosts: Vec<String> = Vec::new();
    /// File extensions never indexed, comma-separated: images and other formats whose text
    /// is markup rather than knowledge (an SVG is text, but polygons). Empty indexes every
    /// text file.
    #[serde(deserialize_with = "super::list")]
    index_skip_extensions: Vec<String> = ["svg", "png", "jpg", "jpeg", "gif", "webp", "ico", "bmp", "tif", "tiff", "psd", "ai", "eps"]
        .map(String::from)
        .to_vec();
    /// Enabled transports: a comma-separated subset of websocket, polling, sse, poll.
    #[serde(deserialize_with = "super::list")]
    transports: Vec<Transport> = Transport::ALL.to_vec();
    /// Engine.IO ping interval.
    ping_interval_ms: u64 = 25_000, range 50..=600_000;
    /// Engine.IO ping timeout.
    ping_timeout_ms: u64 = 20_000, range 50..=600_000;
    /// Time a Socket.IO client has to join a namespace after the Engine.IO handshake.
    connect_timeout_ms: u64 = 45_000, range 100..=600_000;
    /// Largest HTTP body or Socket.IO message (413 above it).
    /// Also bounds all the binary attachments of one Socket.IO packet together; a larger
    /// `Content-Length` is refused before the body is read.
    max_payload_bytes: u64 = 1_000_000, range 1024..=1_073_741_824;
    /// Time a client has to send a request's headers, and at most between two pieces of a body.
    request_read_timeout_ms: u64 = 20_000, range 100..=600_000;
    /// TCP connections one source address may hold open at once (0 = no cap).
    /// More are closed at once with a 429. Loopback sources are not capped unless
    /// `connection_cap_loopback` is set (a proxy on this machine brings every client from one).
    max_connections_per_address: u64 = 1000, range 0..=1_000_000;
    /// Cap loopback sources too (`max_connections_per_address`).
    connection_cap_loopback: bool = false;
    /// Size of the shared fan-out window, in events. A connection further behind catches up
    /// from the journal (no connection has a queue of its own).
    queue_bound: usize = 1024, range 16..=1_048_576;
    /// A client whose socket accepts no data this long is closed as `slow_consumer`.
    /// It resumes from its cursor.
    slow_consumer_timeout_ms: u64 = 10_000, range 100..=3_600_000;
    /// Journal retention by count (0 = unlimited).
    retention_max_events: u64 = 1_000_000;
    /// Journal retention by age in seconds (0 = unlimited).
    retention_max_age_s: u64 = 7 * 24 * 3600;
    /// How the journal reaches the disk: `full` syncs every commit before it is acknowledged (survives power loss), `normal` leaves that to the OS (survives a process crash).
    journal_sync: JournalSync = JournalSync::Full;
    /// Most events committed in one group commit.
    journal_batch_max: usize = 1000, range 1..=100_000;
    /// Upper bound of the poll transport's `wait` parameter.
    poll_max_wait_s: u64 = 30, range 0..=300;
    /// Interval the poll transport advises clients to use between requests.
    poll_interval_ms: u64 = 1000, range 10..=600_000;
    /// A poll client not seen for this long is forgotten.
    poll_client_ttl_s: u64 = 120, range 5..=86_400;
    /// Interval of SSE heartbeat comments.
    sse_heartbeat_s: u64 = 15, range 1..=3600;
    /// SSE `retry:` value sent to clients.
    sse_retry_ms: u64 = 3000, range 100..=600_000;
    /// How long shutdown waits for clients to go before it stops anyway.
    shutdown_grace_ms: u64 = 5000, range 0..=600_000;
    /// Files larger than this are not indexed (counted as skipped).
    index_max_file_bytes: u64 = 10_000_000, range 1..=4_294_967_296;
    /// The system monitor publishes `system_status` to everyone this often (0 = only on demand).
    status_interval_s: u64 = 30, range 0..=86_400;
    /// Whether `search_started` / `search_completed` carry the query text.
    /// `false` publishes `query: null`, so other clients never see what was searched.
    search_publish_query: bool = true;
    /// The language documents and questions are read in: stop words and stems.
    /// Changing it re-indexes every file once.
    search_language: String = "english".into();
    /// The sentence-embedding model for meaning search: `built-in` (all-MiniLM-L6-v2, carried
    /// by the binary), `off` (keyword search only), or a folder with `config.json`,
    /// `tokenizer.json` and `model.safetensors`. Changing the model rebuilds the vectors.
    embedding_model: String = "built-in".into();
    /// Searches kept in the history for `GET /prompts/similar` (0 = keep none).
    search_history_max: u64 = 10_000, range 0..=10_000_000;
    /// Whether `GET /prompts/similar` offers everyone's earlier searches.
    /// Off, each user is offered their own only.
    search_history_shared: bool = false;
    /// Run open (no tokens) even on an address other machines can reach.
    /// Off, such a server refuses to start until a user exists.
    insecure: bool = false;
    /// Longest team message or notification body, in characters.
    team_message_max_chars: u64 = 4000, range 1..=1_000_000;
    /// Team messages one connection (or one user over HTTP) may send per second.
    /// Bursts of twice that.
    team_messages_per_s: u64 = 10, range 1..=10_000;
    /// Journal events one member's HTTP and MCP requests may append per second (a search
    /// is two, a publish one per event). Bursts of twice that. Admins are not limited.
    member_events_per_s: u64 = 20, range 1..=1_000_000;
    /// `doc_sync` and `doc_update` one Socket.IO connection may send per second.
    /// Bursts of twice that.
    doc_ops_per_s: u64 = 50, range 1..=100_000;
    /// Shared documents kept loaded in memory.
    /// The least recently used idle one is unloaded first (and reloaded when needed).
    docs_cached_max: u64 = 256, range 1..=1_000_000;
    /// Shared documents one workspace may hold.
    docs_per_workspace_max: u64 = 1000, range 1..=10_000_000;
    /// This node's name in diagnostics and cluster state (`/api/websocket/status`, `cmem doctor`).
    /// Empty: the host name and the port.
    node_name: String = String::new();
    /// Cluster mode: NATS server URLs, comma-separated (`nats://host:4222,…`). Set, the journal
    /// and the team state (users, tokens, workspaces, messages, documents) are JetStream streams
    /// every node shares instead of local SQLite files. Empty (the default), one node keeps its
    /// own.
    cluster_nats_url: String = String::new();
    /// Cluster mode: the JetStream stream that holds the journal (its subjects are its name in
    /// lower case); the team log and presence are `<name>_TEAMS` and `<name>_PRESENCE`. Every
    /// node of one cluster names the same stream.
    cluster_stream: String = "CMEM".to_string();
    /// Cluster mode: copies of each stream in the NATS cluster (3 recommended).
    /// An event is acknowledged once a majority of them stored it.
    cluster_replicas: usize = 1, range 1..=5;
    /// Serve the MCP server for AI assistants at `/mcp` (streamable HTTP).
    mcp_enabled: bool = true;
    /// MCP sessions open at once; more are refused with 503 until some end.
    /// An idle session closes after 5 minutes.
    mcp_max_sessions: usize = 256, range 1..=100_000;
    /// TCP keepalive on accepted sockets.
    /// Peers that vanished without closing are then dropped by the kernel.
    tcp_keepalive: bool = false;
    /// Idle seconds before the first keepalive probe.
    tcp_keepalive_idle_s: u64 = 60, range 1..=7200;
    /// Seconds between keepalive probes.
    tcp_keepalive_interval_s: u64 = 10, range 1..=600;
    /// Unanswered keepalive probes before the connection is dropped.
    tcp_keepalive_retries: u64 = 5, range 1..=127;
    /// If the port is taken or refused, try this many next ports (0 = fail at once).
    port_fallback: u16 = 0;
}

/// The README's table of keys: name, default (and the Windows profile's value where it
/// differs), allowed values, meaning.
pub fn markdown_table() -> String {
    let defaults = serde_json::to_value(Config::default()).unwrap_or_default();
    let windows =
        serde_json::to_value(super::profile_layer(PlatformProfile::Windows)).unwrap_or_default();
    let show = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) if s.is_empty() => "(none)".to_string(),
        serde_json::Value::String(s) => format!("`{s}`"),
        serde_json::Value::Array(a) if a.is_empty() => "(none)".to_string(),
        serde_json::Value::Array(a) => format!(
            "`{}`",
            a.iter()
                .map(|x| x
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| x.to_string()))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => format!("`{other}`"),
    };
    let mut out = String::from("| key | default | allowed | meaning |\n|---|---|---|---|\n");
    for k in SPECS {
        let mut default = show(&defaults[k.name]);
        if let Some(w) = windows.get(k.name).filter(|w| **w != defaults[k.name]) {
            default.push_str(&format!(" (Windows {})", show(w)));
        }
        let allowed = match (k.name, k.range) {
            (_, Some((lo, hi))) => format!("{lo} to {hi}"),
            ("platform_profile", _) => "`auto`, `windows`, `default`".into(),
            ("journal_sync", _) => "`full`, `normal`".into(),
            ("transports", _) => "`websocket`, `polling`, `sse`, `poll`".into(),
            (_, None) if k.switch => "`true`, `false`".into(),
            ("bind", _) => "an address and port".into(),
            ("data_dir", _) => "a folder".into(),
            ("cors_origins", _) => "origins (scheme and host, no path) or `*`".into(),
            ("allowed_hosts", _) => "host names or `*`".into(),
            ("node_name", _) => "a name".into(),
            ("cluster_nats_url", _) => "NATS URLs, comma-separated".into(),
            ("cluster_stream", _) => "a JetStream stream name".into(),
            ("search_language", _) => "a language with a stemmer: `english`, `german`, `french`, … (`arabic` to `turkish`)".into(),
            ("embedding_model", _) => "`built-in`, `off`, or a folder".into(),
            ("index_skip_extensions", _) => "file extensions, comma-separated".into(),
            _ => "a whole number".into(),
        };
        let meaning = k.text();
        out.push_str(&format!(
            "| `{}` | {default} | {allowed} | {meaning} |\n",
            k.name
        ));
    }
    out
}
