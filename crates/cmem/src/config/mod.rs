//! Configuration: one typed [`Config`], assembled from layers so every value has a known source.
//!
//! Precedence, highest first: command-line flags > `CM_*` environment > the config file
//! `<data>/.collective-memory/config/cmem.toml` > the platform profile > built-in defaults.
//! The layering is done by `figment`; this module adds the platform profiles (plain data, so
//! both can be tested on any OS), range checks, and error messages that name the key, the
//! value, where it came from and what is allowed.

mod profile;

pub use profile::{PlatformProfile, profile_layer};

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

mod error;

pub use error::ConfigError;

mod keys;

pub use keys::{Config, KEYS, Key, Partial, SPECS, markdown_table};

/// How a client is connected (and the names `transports` takes).
pub use cmem_wire::Transport;

/// SQLite `synchronous` mode of the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalSync {
    /// Survives power loss (an fsync per commit).
    Full,
    /// Survives a process crash.
    Normal,
}

/// The name of the state folder inside the data folder.
pub const STATE_DIR: &str = ".collective-memory";

/// The languages `search_language` may name: those with a stemmer (Snowball) in tantivy.
pub const SEARCH_LANGUAGES: [&str; 18] = [
    "arabic",
    "danish",
    "dutch",
    "english",
    "finnish",
    "french",
    "german",
    "greek",
    "hungarian",
    "italian",
    "norwegian",
    "portuguese",
    "romanian",
    "russian",
    "spanish",
    "swedish",
    "tamil",
    "turkish",
];

impl Config {
    /// `<data_dir>/.collective-memory`
    pub fn state_dir(&self) -> PathBuf {
        self.data_dir.join(STATE_DIR)
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
    pub fn transport_enabled(&self, t: Transport) -> bool {
        self.transports.contains(&t)
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

    /// Whether this server may run open (no tokens) while no users exist: only on a loopback
    /// address, or with `--insecure`. Asked at every request, not only at start: an exposed
    /// server whose last user is removed refuses everyone rather than opening up.
    pub fn open_allowed(&self) -> bool {
        self.insecure || self.bind.ip().is_loopback()
    }

    /// This node's name: `node_name`, else the host name and the port.
    pub fn node(&self) -> String {
        if self.node_name.trim().is_empty() {
            format!(
                "{}:{}",
                sysinfo::System::host_name().unwrap_or_else(|_| "cmem".into()),
                self.bind.port()
            )
        } else {
            self.node_name.trim().to_string()
        }
    }

    /// Whether a browser request with `origin`, sent to `host` (its `Host` header), may act:
    /// an origin [`Config::origin_allowed`], or the origin of that very host (a page this
    /// server served, also through a reverse proxy that keeps `Host`; rebound host names are
    /// refused before this, by the server's guard).
    pub fn origin_allowed_for(&self, origin: &str, host: Option<&str>) -> bool {
        let same_host = host.is_some_and(|h| {
            origin.strip_prefix("http://") == Some(h) || origin.strip_prefix("https://") == Some(h)
        });
        same_host || self.origin_allowed(origin)
    }

    /// Range and enum checks that serde cannot express.
    fn validate(&self, sources: &Sources) -> Result<(), ConfigError> {
        let bad = |key: &'static str, value: String, allowed: &str| ConfigError::Invalid {
            key,
            value,
            source_name: sources.source_of(key),
            allowed: allowed.to_string(),
        };
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
        if !SEARCH_LANGUAGES.contains(&self.search_language.as_str()) {
            return Err(bad(
                "search_language",
                self.search_language.clone(),
                &format!("one of {}", SEARCH_LANGUAGES.join(", ")),
            ));
        }
        let stream = &self.cluster_stream;
        if stream.is_empty()
            || stream.len() > 32
            || !stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad(
                "cluster_stream",
                stream.clone(),
                "1 to 32 letters, digits, `_` or `-` (a JetStream stream name)",
            ));
        }
        for key in SPECS {
            if let (Some((lo, hi)), Some(v)) = (key.range, self.number(key.name))
                && (v < lo || v > hi)
            {
                return Err(bad(
                    key.name,
                    v.to_string(),
                    &format!("a number from {lo} to {hi}"),
                ));
            }
        }
        Ok(())
    }
}

/// Accepts `"a,b"` (environment, flags) as well as `["a", "b"]` (TOML), each item parsed.
fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    let items: Vec<String> = match Either::deserialize(d)? {
        Either::One(s) => s
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
        Either::Many(v) => v,
    };
    items
        .iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

/// Values given on the command line, as text (parsed like environment values).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    values: Vec<(&'static str, String)>,
}

impl Overrides {
    /// Only the data folder.
    pub fn data_dir(dir: &Path) -> Overrides {
        let mut o = Overrides::default();
        o.set("data_dir", dir.display().to_string());
        o
    }

    /// Sets a key; a name that is not a key is ignored (the flags are made from [`SPECS`]).
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        if let Some(k) = SPECS.iter().find(|k| k.name == key) {
            self.values.retain(|(n, _)| *n != k.name);
            self.values.push((k.name, value.into()));
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl Provider for Overrides {
    fn metadata(&self) -> Metadata {
        Metadata::named("flag")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (k, v) in &self.values {
            // a path is text as given; everything else is read as the environment is
            let value = if *k == "data_dir" {
                figment::value::Value::from(v.clone())
            } else {
                v.parse()
                    .unwrap_or_else(|_| figment::value::Value::from(v.clone()))
            };
            dict.insert(k.to_string(), value);
        }
        Ok(Profile::Default.collect(dict))
    }
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
    Env::prefixed(ENV_PREFIX).only(KEYS)
}

/// Loads the configuration from all layers, reading the process environment.
pub fn load(overrides: &Overrides) -> Result<Loaded, ConfigError> {
    // data_dir decides where the config file is, so it is resolved from flags/env first.
    let data_dir = overrides
        .get("data_dir")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CM_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    let config_file = data_dir.join(STATE_DIR).join("config").join("cmem.toml");
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
    let dir = data_dir.join(STATE_DIR).join("config");
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
                "unknown key `{key}`{}; `cmem config` lists every key",
                error::did_you_mean(key)
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
    let checked = load_with(&Overrides::data_dir(data_dir), &tmp, env_layer());
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
    let flags = overrides.clone();
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
    let flags = overrides.clone();
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

    fn flags(pairs: &[(&str, &str)]) -> Overrides {
        let mut o = Overrides::default();
        for (k, v) in pairs {
            o.set(k, *v);
        }
        o
    }

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
        let over = flags(&[
            ("ping_interval_ms", "4444"),
            ("platform_profile", "windows"),
        ]);
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
        let w = load_test(&flags(&[("platform_profile", "windows")]), None, &[]).unwrap();
        let d = load_test(&flags(&[("platform_profile", "default")]), None, &[]).unwrap();
        assert!(w.config.ping_timeout_ms > d.config.ping_timeout_ms);
        assert_eq!(w.profile, PlatformProfile::Windows);
        assert_eq!(d.profile, PlatformProfile::Default);
        assert!(w.config.transport_enabled(Transport::Polling));
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
            &flags(&[("transports", "websocket,carrier-pigeon")]),
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

        let e = load_test(
            &Overrides::default(),
            None,
            &[("CM_CLUSTER_STREAM", "cmem.prod")],
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("cmem.prod") && e.to_string().contains("stream name"),
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
        assert_eq!(l.config.transports, vec![Transport::Sse, Transport::Poll]);
        assert_eq!(l.config.cors_origins, vec!["http://a.test:1"]);
        assert!(l.config.origin_allowed("http://a.test:1"));
        assert!(!l.config.origin_allowed("http://evil.test"));
        assert!(l.config.origin_allowed("http://127.0.0.1:8000"));
        assert!(
            l.render()
                .contains("transports = [\"sse\",\"poll\"]  (env CM_TRANSPORTS)")
        );
    }

    /// README.md's table of keys is rendered from the key list; this fails when it is stale.
    /// `CMEM_UPDATE_README=1 cargo test -p cmem readme` rewrites it.
    #[test]
    fn the_readme_table_is_the_key_list() {
        const START: &str = "<!-- config keys: generated from crates/cmem/src/config/keys.rs -->\n";
        const END: &str = "<!-- end of config keys -->";
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let (Some(a), Some(b)) = (readme.find(START), readme.find(END)) else {
            panic!("README.md lacks the markers around the table of keys");
        };
        let want = markdown_table();
        let have = &readme[a + START.len()..b];
        if have != want && std::env::var_os("CMEM_UPDATE_README").is_some() {
            let updated = format!("{}{START}{want}{}", &readme[..a], &readme[b..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        assert_eq!(
            have, want,
            "README.md's table of keys is stale: run CMEM_UPDATE_README=1 cargo test -p cmem readme"
        );
    }

    #[test]
    fn the_key_list_is_the_struct() {
        let value = serde_json::to_value(Config::default()).unwrap();
        let fields: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut keys: Vec<&str> = KEYS.to_vec();
        keys.sort();
        let mut fields = fields;
        fields.sort();
        assert_eq!(keys, fields);
        assert!(
            SPECS.iter().all(|k| !k.summary().is_empty()),
            "every key has help"
        );
        assert_eq!(SPECS.iter().filter(|k| k.switch).count(), 6);
    }
}
