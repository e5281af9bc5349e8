//! Configuration: one typed [`Config`], assembled from layers so every value has a known source.
//!
//! Precedence, highest first: command-line flags > `CM_*` environment > the config file
//! `<data>/.collective-memory/config/cmem.toml` > the platform profile > built-in defaults.
//! The layering is done by `figment`; this module adds the platform profiles (plain data, so
//! both can be tested on any OS), range checks, and error messages that name the key, the
//! value, where it came from and what is allowed.

mod profile;

pub use profile::{PlatformProfile, profile_layer};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

mod error;

pub use error::ConfigError;

/// Transports a deployment may switch on or off.
pub const TRANSPORTS: [&str; 4] = ["websocket", "polling", "sse", "poll"];

/// Every configuration key, in the order `cmem config` prints them.
pub const KEYS: [&str; 39] = [
    "platform_profile",
    "bind",
    "data_dir",
    "cors_origins",
    "allowed_hosts",
    "transports",
    "ping_interval_ms",
    "ping_timeout_ms",
    "connect_timeout_ms",
    "max_payload_bytes",
    "request_read_timeout_ms",
    "queue_bound",
    "slow_consumer_timeout_ms",
    "retention_max_events",
    "retention_max_age_s",
    "journal_sync",
    "journal_batch_max",
    "poll_max_wait_s",
    "poll_interval_ms",
    "poll_client_ttl_s",
    "sse_heartbeat_s",
    "sse_retry_ms",
    "shutdown_grace_ms",
    "index_max_file_bytes",
    "status_interval_s",
    "search_publish_query",
    "search_history_max",
    "search_history_shared",
    "insecure",
    "team_message_max_chars",
    "team_messages_per_s",
    "doc_ops_per_s",
    "docs_cached_max",
    "docs_per_workspace_max",
    "tcp_keepalive",
    "tcp_keepalive_idle_s",
    "tcp_keepalive_interval_s",
    "tcp_keepalive_retries",
    "port_fallback",
];

/// The effective configuration of a server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `auto` (pick by OS), `windows` or `default`.
    pub platform_profile: String,
    /// Address and port the server listens on; port 0 picks a free port.
    pub bind: SocketAddr,
    /// The folder the memory covers; server state lives in `<data_dir>/.collective-memory/`.
    pub data_dir: PathBuf,
    /// Origins allowed by CORS and by the WebSocket `Origin` check; `*` allows any.
    #[serde(deserialize_with = "string_or_list")]
    pub cors_origins: Vec<String>,
    /// Host names a server without users answers to besides loopback names and IP addresses
    /// (against DNS rebinding); `*` allows any.
    #[serde(deserialize_with = "string_or_list")]
    pub allowed_hosts: Vec<String>,
    /// Enabled transports, a subset of [`TRANSPORTS`].
    #[serde(deserialize_with = "string_or_list")]
    pub transports: Vec<String>,
    /// Engine.IO ping interval.
    pub ping_interval_ms: u64,
    /// Engine.IO ping timeout.
    pub ping_timeout_ms: u64,
    /// Time a Socket.IO client has to join a namespace after the Engine.IO handshake.
    pub connect_timeout_ms: u64,
    /// Largest accepted message or HTTP body.
    pub max_payload_bytes: u64,
    /// Time a client has to send a request's headers, and at most between two pieces of its
    /// body; a client slower than that is cut.
    pub request_read_timeout_ms: u64,
    /// Size of the shared fan-out window and of each Socket.IO send buffer, in events.
    /// A connection further behind than this catches up from the journal.
    pub queue_bound: usize,
    /// A client whose socket accepts no data for this long (or whose Socket.IO send buffer
    /// stays full this long) is closed as a slow consumer; it resumes from its cursor.
    pub slow_consumer_timeout_ms: u64,
    /// Journal retention by count (0 = unlimited).
    pub retention_max_events: u64,
    /// Journal retention by age in seconds (0 = unlimited).
    pub retention_max_age_s: u64,
    /// SQLite `synchronous` mode for the journal: `full` (survives power loss) or `normal`
    /// (survives a process crash).
    pub journal_sync: String,
    /// Largest number of events committed in one group commit.
    pub journal_batch_max: usize,
    /// Upper bound for the poll transport's `wait` parameter.
    pub poll_max_wait_s: u64,
    /// Interval the poll transport advises clients to use between requests.
    pub poll_interval_ms: u64,
    /// A poll client not seen for this long is dropped from the registry.
    pub poll_client_ttl_s: u64,
    /// Interval of SSE heartbeat comments.
    pub sse_heartbeat_s: u64,
    /// SSE `retry:` value sent to clients.
    pub sse_retry_ms: u64,
    /// How long shutdown waits for clients to be closed before it stops anyway.
    pub shutdown_grace_ms: u64,
    /// Files larger than this are not indexed (counted as skipped).
    pub index_max_file_bytes: u64,
    /// The system monitor publishes `system_status` this often (0 = only on demand).
    pub status_interval_s: u64,
    /// Whether `search_started`/`search_completed` carry the query text (other clients see
    /// them); `false` publishes `query: null`.
    pub search_publish_query: bool,
    /// Searches kept in the history for `GET /prompts/similar` (0 = keep no history).
    pub search_history_max: u64,
    /// Whether `GET /prompts/similar` offers everyone's earlier searches; off, each user is
    /// offered their own only.
    pub search_history_shared: bool,
    /// Run open (no tokens) even when bound beyond loopback. Off by default: such a server
    /// refuses to start until a user exists.
    pub insecure: bool,
    /// Longest team message, in characters.
    pub team_message_max_chars: u64,
    /// Team messages one connection may send per second (bursts of twice that).
    pub team_messages_per_s: u64,
    /// `doc_sync` and `doc_update` one Socket.IO connection may send per second (bursts of
    /// twice that).
    pub doc_ops_per_s: u64,
    /// Shared documents kept loaded in memory; the least recently used idle one leaves first
    /// (it is reloaded from storage when needed).
    pub docs_cached_max: u64,
    /// Shared documents one workspace may hold.
    pub docs_per_workspace_max: u64,
    /// TCP keepalive on accepted sockets (on in the Windows profile), so peers that vanished
    /// without closing are noticed by the kernel.
    pub tcp_keepalive: bool,
    /// Idle seconds before the first keepalive probe.
    pub tcp_keepalive_idle_s: u64,
    /// Seconds between keepalive probes.
    pub tcp_keepalive_interval_s: u64,
    /// Unanswered probes before the connection is dropped.
    pub tcp_keepalive_retries: u64,
    /// If the port is taken or refused, try this many next ports (0 = fail at once).
    pub port_fallback: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            platform_profile: "auto".into(),
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            data_dir: PathBuf::from("."),
            cors_origins: vec![
                "http://localhost:3000".into(),
                "http://127.0.0.1:3000".into(),
            ],
            allowed_hosts: Vec::new(),
            transports: TRANSPORTS.iter().map(|s| s.to_string()).collect(),
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            connect_timeout_ms: 45_000,
            max_payload_bytes: 1_000_000,
            request_read_timeout_ms: 20_000,
            queue_bound: 1024,
            slow_consumer_timeout_ms: 10_000,
            retention_max_events: 1_000_000,
            retention_max_age_s: 7 * 24 * 3600,
            journal_sync: "full".into(),
            journal_batch_max: 1000,
            poll_max_wait_s: 30,
            poll_interval_ms: 1000,
            poll_client_ttl_s: 120,
            sse_heartbeat_s: 15,
            sse_retry_ms: 3000,
            shutdown_grace_ms: 5000,
            index_max_file_bytes: 10_000_000,
            status_interval_s: 30,
            search_publish_query: true,
            search_history_max: 10_000,
            search_history_shared: false,
            insecure: false,
            team_message_max_chars: 4000,
            team_messages_per_s: 10,
            doc_ops_per_s: 50,
            docs_cached_max: 256,
            docs_per_workspace_max: 1000,
            tcp_keepalive: false,
            tcp_keepalive_idle_s: 60,
            tcp_keepalive_interval_s: 10,
            tcp_keepalive_retries: 5,
            port_fallback: 0,
        }
    }
}

impl Config {
    /// `<data_dir>/.collective-memory`
    pub fn state_dir(&self) -> PathBuf {
        self.data_dir.join(".collective-memory")
    }

    /// Keepalive timings for accepted sockets, when keepalive is on.
    pub fn keepalive(&self) -> Option<crate::net::socket::Keepalive> {
        self.tcp_keepalive.then(|| crate::net::socket::Keepalive {
            idle: std::time::Duration::from_secs(self.tcp_keepalive_idle_s),
            interval: std::time::Duration::from_secs(self.tcp_keepalive_interval_s),
            retries: self.tcp_keepalive_retries as u32,
        })
    }

    /// Whether a transport is enabled.
    pub fn transport_enabled(&self, name: &str) -> bool {
        self.transports.iter().any(|t| t == name)
    }

    /// The origin this server answers on, which is always allowed.
    pub fn own_origins(&self) -> Vec<String> {
        let port = self.bind.port();
        let mut v = vec![format!("http://{}", self.bind)];
        if self.bind.ip().is_loopback() {
            v.push(format!("http://localhost:{port}"));
            v.push(format!("http://127.0.0.1:{port}"));
        }
        v
    }

    /// Whether an `Origin` header value is allowed (the one allow-list for CORS and WebSocket).
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.cors_origins.iter().any(|o| o == "*" || o == origin)
            || self.own_origins().iter().any(|o| o == origin)
    }

    /// Range and enum checks that serde cannot express.
    fn validate(&self, sources: &Sources) -> Result<(), ConfigError> {
        let bad = |key: &'static str, value: String, allowed: &str| ConfigError::Invalid {
            key,
            value,
            source_name: sources.source_of(key),
            allowed: allowed.to_string(),
        };
        if PlatformProfile::parse(&self.platform_profile).is_none() {
            return Err(bad(
                "platform_profile",
                self.platform_profile.clone(),
                "one of auto, windows, default",
            ));
        }
        for t in &self.transports {
            if !TRANSPORTS.contains(&t.as_str()) {
                return Err(bad(
                    "transports",
                    self.transports.join(","),
                    "a comma-separated subset of websocket, polling, sse, poll",
                ));
            }
        }
        if self.transports.is_empty() {
            return Err(bad("transports", String::new(), "at least one transport"));
        }
        for o in &self.cors_origins {
            let ok = o == "*"
                || ((o.starts_with("http://") || o.starts_with("https://"))
                    && !o.ends_with('/')
                    && o.len() > 8);
            if !ok {
                return Err(bad(
                    "cors_origins",
                    o.clone(),
                    "`*` or origins like http://localhost:3000 (scheme and host, no path)",
                ));
            }
        }
        let ranges: [(&'static str, u64, u64, u64); 25] = [
            ("ping_interval_ms", self.ping_interval_ms, 50, 600_000),
            ("ping_timeout_ms", self.ping_timeout_ms, 50, 600_000),
            ("connect_timeout_ms", self.connect_timeout_ms, 100, 600_000),
            ("max_payload_bytes", self.max_payload_bytes, 1024, 1 << 30),
            ("queue_bound", self.queue_bound as u64, 16, 1 << 20),
            (
                "slow_consumer_timeout_ms",
                self.slow_consumer_timeout_ms,
                100,
                3_600_000,
            ),
            (
                "journal_batch_max",
                self.journal_batch_max as u64,
                1,
                100_000,
            ),
            (
                "request_read_timeout_ms",
                self.request_read_timeout_ms,
                100,
                600_000,
            ),
            ("poll_max_wait_s", self.poll_max_wait_s, 0, 300),
            ("poll_interval_ms", self.poll_interval_ms, 10, 600_000),
            ("poll_client_ttl_s", self.poll_client_ttl_s, 5, 86_400),
            ("sse_heartbeat_s", self.sse_heartbeat_s, 1, 3600),
            ("sse_retry_ms", self.sse_retry_ms, 100, 600_000),
            ("shutdown_grace_ms", self.shutdown_grace_ms, 0, 600_000),
            (
                "index_max_file_bytes",
                self.index_max_file_bytes,
                1,
                1 << 32,
            ),
            ("status_interval_s", self.status_interval_s, 0, 86_400),
            ("search_history_max", self.search_history_max, 0, 10_000_000),
            (
                "team_message_max_chars",
                self.team_message_max_chars,
                1,
                1_000_000,
            ),
            ("team_messages_per_s", self.team_messages_per_s, 1, 10_000),
            ("doc_ops_per_s", self.doc_ops_per_s, 1, 100_000),
            ("docs_cached_max", self.docs_cached_max, 1, 1_000_000),
            (
                "docs_per_workspace_max",
                self.docs_per_workspace_max,
                1,
                10_000_000,
            ),
            ("tcp_keepalive_idle_s", self.tcp_keepalive_idle_s, 1, 7200),
            (
                "tcp_keepalive_interval_s",
                self.tcp_keepalive_interval_s,
                1,
                600,
            ),
            ("tcp_keepalive_retries", self.tcp_keepalive_retries, 1, 127),
        ];
        for (key, v, lo, hi) in ranges {
            if v < lo || v > hi {
                return Err(bad(
                    key,
                    v.to_string(),
                    &format!("a number from {lo} to {hi}"),
                ));
            }
        }
        if !matches!(self.journal_sync.as_str(), "full" | "normal") {
            return Err(bad(
                "journal_sync",
                self.journal_sync.clone(),
                "full or normal",
            ));
        }
        Ok(())
    }
}

/// Accepts `"a,b"` (environment, flags) as well as `["a", "b"]` (TOML).
fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Either::deserialize(d)? {
        Either::One(s) => s
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
        Either::Many(v) => v,
    })
}

/// Values given on the command line; `None` means "not given".
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors_origins: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transports: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_interval_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_payload_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_bound: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_max_events: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_max_age_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_fallback: Option<u16>,
}

/// Gives a figment provider a readable name, which `cmem config` prints as the source.
struct Named<P> {
    name: &'static str,
    inner: P,
}

impl<P: Provider> Provider for Named<P> {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name)
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.inner.data()
    }
}

/// Where each effective value came from.
#[derive(Debug, Clone, Default)]
pub struct Sources(Vec<(&'static str, String)>);

impl Sources {
    /// The source label of one key (`default`, `profile windows`, `config file`, `env CM_X`, `flag`).
    pub fn source_of(&self, key: &str) -> String {
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| "default".into())
    }
}

/// A loaded configuration together with the source of each value.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub sources: Sources,
    pub profile: PlatformProfile,
    pub config_file: PathBuf,
}

impl Loaded {
    /// One line per key: `key = value  (source)`, as `cmem config` prints it.
    pub fn render(&self) -> String {
        let value = serde_json::to_value(&self.config).unwrap_or_default();
        let mut out = format!(
            "# effective configuration (platform profile in force: {})\n# config file: {}\n",
            self.profile.name(),
            self.config_file.display()
        );
        for key in KEYS {
            let v = value.get(key).cloned().unwrap_or_default();
            let shown = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            out.push_str(&format!(
                "{key} = {shown}  ({})\n",
                self.sources.source_of(key)
            ));
        }
        out
    }
}

const ENV_PREFIX: &str = "CM_";

fn env_layer() -> Env {
    Env::prefixed(ENV_PREFIX).only(&KEYS)
}

/// Loads the configuration from all layers, reading the process environment.
pub fn load(overrides: &Overrides) -> Result<Loaded, ConfigError> {
    // data_dir decides where the config file is, so it is resolved from flags/env first.
    let data_dir = overrides
        .data_dir
        .clone()
        .or_else(|| std::env::var_os("CM_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    let config_file = data_dir
        .join(".collective-memory")
        .join("config")
        .join("cmem.toml");
    load_with(overrides, &config_file, env_layer())
}

/// Changes to the config file, checked the way start-up checks them.
#[derive(Debug)]
pub struct FileUpdate {
    /// The file written.
    pub path: PathBuf,
    /// The configuration a restart would use (with the environment as it is now; flags
    /// given at start are not known here).
    pub next: Loaded,
    /// Keys the environment sets, which win over the file.
    pub shadowed_by_env: Vec<String>,
}

/// Merges `changes` (key → value) into `<data>/.collective-memory/config/cmem.toml`: every key
/// must be known and settable in the file, and the result must load as start-up would load it,
/// or nothing is written. Written atomically (a temporary file renamed over the old one).
pub fn update_file(
    data_dir: &Path,
    changes: &serde_json::Map<String, serde_json::Value>,
) -> Result<FileUpdate, ConfigError> {
    let dir = data_dir.join(".collective-memory").join("config");
    let path = dir.join("cmem.toml");
    let file_err = |message: String| ConfigError::File {
        path: path.clone(),
        message,
    };
    if changes.is_empty() {
        return Err(file_err("no keys given: send {\"key\": value, …}".into()));
    }
    let mut table: toml::Table = match std::fs::read_to_string(&path) {
        Ok(text) => text
            .parse()
            .map_err(|e: toml::de::Error| file_err(e.to_string()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(e) => return Err(file_err(e.to_string())),
    };
    for (key, value) in changes {
        if !KEYS.contains(&key.as_str()) {
            return Err(file_err(format!(
                "unknown key `{key}`; keys: {}",
                KEYS.join(", ")
            )));
        }
        if key == "data_dir" {
            return Err(file_err(
                "data_dir cannot be set in the config file that lives inside it; use --data or CM_DATA_DIR"
                    .into(),
            ));
        }
        let v = toml::Value::try_from(value).map_err(|e| file_err(format!("`{key}`: {e}")))?;
        table.insert(key.clone(), v);
    }
    let text = toml::to_string(&table).map_err(|e| file_err(e.to_string()))?;
    std::fs::create_dir_all(&dir).map_err(|e| file_err(e.to_string()))?;
    let tmp = dir.join(format!(".cmem.toml.{}.tmp", std::process::id()));
    std::fs::write(&tmp, &text).map_err(|e| file_err(e.to_string()))?;
    let checked = load_with(
        &Overrides {
            data_dir: Some(data_dir.to_path_buf()),
            ..Overrides::default()
        },
        &tmp,
        env_layer(),
    );
    let next = match checked {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        file_err(e.to_string())
    })?;
    let shadowed_by_env = changes
        .keys()
        .filter(|k| next.sources.source_of(k).starts_with("env"))
        .cloned()
        .collect();
    Ok(FileUpdate {
        path,
        next,
        shadowed_by_env,
    })
}

pub(crate) fn load_with(
    overrides: &Overrides,
    config_file: &Path,
    env: Env,
) -> Result<Loaded, ConfigError> {
    if config_file.exists() {
        // The file may not move the data folder it lives in.
        let text = std::fs::read_to_string(config_file).map_err(|e| ConfigError::File {
            path: config_file.to_path_buf(),
            message: e.to_string(),
        })?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::File {
                path: config_file.to_path_buf(),
                message: e.to_string(),
            })?;
        if table.contains_key("data_dir") {
            return Err(ConfigError::File {
                path: config_file.to_path_buf(),
                message: "data_dir cannot be set in the config file that lives inside it; use --data or CM_DATA_DIR".into(),
            });
        }
    }
    let file = Named {
        name: "config file",
        inner: Toml::file(config_file),
    };
    let flags = Named {
        name: "flag",
        inner: Serialized::defaults(overrides.clone()),
    };
    let env = Named {
        name: "env",
        inner: env,
    };

    // First pass: which platform profile is asked for.
    let probe = Figment::new()
        .merge(Named {
            name: "default",
            inner: Serialized::defaults(Config::default()),
        })
        .merge(file)
        .merge(env)
        .merge(flags);
    let asked: String = probe
        .extract_inner("platform_profile")
        .map_err(|e| ConfigError::from_figment(e, &probe))?;
    let profile = PlatformProfile::parse(&asked)
        .ok_or_else(|| ConfigError::Invalid {
            key: "platform_profile",
            value: asked.clone(),
            source_name: source_label(&probe, "platform_profile"),
            allowed: "one of auto, windows, default".into(),
        })?
        .resolve();

    let file = Named {
        name: "config file",
        inner: Toml::file(config_file),
    };
    let flags = Named {
        name: "flag",
        inner: Serialized::defaults(overrides.clone()),
    };
    let env = Named {
        name: "env",
        inner: env_layer(),
    };
    let figment = Figment::new()
        .merge(Named {
            name: "default",
            inner: Serialized::defaults(Config::default()),
        })
        .merge(Named {
            name: profile.source_label(),
            inner: Serialized::defaults(profile_layer(profile)),
        })
        .merge(file)
        .merge(env)
        .merge(flags);
    let config: Config = figment
        .extract()
        .map_err(|e| ConfigError::from_figment(e, &figment))?;
    let sources = Sources(
        KEYS.iter()
            .map(|k| (*k, source_label(&figment, k)))
            .collect(),
    );
    config.validate(&sources)?;
    Ok(Loaded {
        config,
        sources,
        profile,
        config_file: config_file.to_path_buf(),
    })
}

fn source_label(figment: &Figment, key: &str) -> String {
    match figment.find_metadata(key) {
        Some(m) if m.name == "env" => format!("env {ENV_PREFIX}{}", key.to_uppercase()),
        Some(m) => m.name.to_string(),
        None => "default".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // figment's Jail closure signature returns its (large) error type; not ours to shrink.
    #[allow(clippy::result_large_err)]
    fn load_test(
        overrides: &Overrides,
        toml: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<Loaded, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cmem.toml");
        if let Some(t) = toml {
            std::fs::write(&file, t).unwrap();
        }
        let mut result = None;
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            for (k, v) in env {
                jail.set_env(k, v);
            }
            result = Some(load_with(overrides, &file, env_layer()));
            Ok(())
        });
        result.unwrap()
    }

    #[test]
    fn precedence_flag_env_file_profile_default() {
        let toml = "ping_interval_ms = 1111\nping_timeout_ms = 2222\nqueue_bound = 64\n";
        let over = Overrides {
            ping_interval_ms: Some(4444),
            platform_profile: Some("windows".into()),
            ..Default::default()
        };
        let l = load_test(&over, Some(toml), &[("CM_PING_TIMEOUT_MS", "3333")]).unwrap();
        assert_eq!(l.config.ping_interval_ms, 4444);
        assert_eq!(l.sources.source_of("ping_interval_ms"), "flag");
        assert_eq!(l.config.ping_timeout_ms, 3333);
        assert_eq!(
            l.sources.source_of("ping_timeout_ms"),
            "env CM_PING_TIMEOUT_MS"
        );
        assert_eq!(l.config.queue_bound, 64);
        assert_eq!(l.sources.source_of("queue_bound"), "config file");
        // The windows profile raises the poll interval; nothing else sets it.
        assert_eq!(l.config.poll_interval_ms, 2000);
        assert_eq!(l.sources.source_of("poll_interval_ms"), "profile windows");
        assert_eq!(l.sources.source_of("sse_retry_ms"), "default");
    }

    #[test]
    fn profiles_are_plain_data() {
        let w = load_test(
            &Overrides {
                platform_profile: Some("windows".into()),
                ..Default::default()
            },
            None,
            &[],
        )
        .unwrap();
        let d = load_test(
            &Overrides {
                platform_profile: Some("default".into()),
                ..Default::default()
            },
            None,
            &[],
        )
        .unwrap();
        assert!(w.config.ping_timeout_ms > d.config.ping_timeout_ms);
        assert_eq!(w.profile, PlatformProfile::Windows);
        assert_eq!(d.profile, PlatformProfile::Default);
        assert!(w.config.transport_enabled("polling"));
    }

    #[test]
    fn bad_values_name_key_value_and_allowed() {
        let e =
            load_test(&Overrides::default(), None, &[("CM_PING_INTERVAL_MS", "0")]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("ping_interval_ms"), "{msg}");
        assert!(msg.contains("env CM_PING_INTERVAL_MS"), "{msg}");
        assert!(msg.contains("from 50 to"), "{msg}");

        let e = load_test(&Overrides::default(), None, &[("CM_QUEUE_BOUND", "lots")]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("queue_bound") && msg.contains("lots"), "{msg}");

        let e = load_test(&Overrides::default(), Some("no_such_key = 1\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("no_such_key"), "{e}");

        let e = load_test(
            &Overrides {
                transports: Some("websocket,carrier-pigeon".into()),
                ..Default::default()
            },
            None,
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("carrier-pigeon"), "{e}");

        let e = load_test(
            &Overrides::default(),
            None,
            &[("CM_PLATFORM_PROFILE", "beos")],
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("beos") && e.to_string().contains("auto, windows, default"),
            "{e}"
        );
    }

    #[test]
    fn lists_from_env_and_toml() {
        let l = load_test(
            &Overrides::default(),
            Some("cors_origins = [\"http://a.test:1\"]\n"),
            &[("CM_TRANSPORTS", "sse, poll")],
        )
        .unwrap();
        assert_eq!(l.config.transports, vec!["sse", "poll"]);
        assert_eq!(l.config.cors_origins, vec!["http://a.test:1"]);
        assert!(l.config.origin_allowed("http://a.test:1"));
        assert!(!l.config.origin_allowed("http://evil.test"));
        assert!(l.config.origin_allowed("http://127.0.0.1:8000"));
        assert!(
            l.render()
                .contains("transports = [\"sse\",\"poll\"]  (env CM_TRANSPORTS)")
        );
    }
}
