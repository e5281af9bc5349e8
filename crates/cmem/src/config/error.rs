//! Why a configuration cannot be used: each message names the key, the value, where it came
//! from and what is allowed, because start-up stops on it and the user must fix it by hand.

use std::path::PathBuf;

/// A configuration that cannot be used. Start-up stops with this message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "config key `{key}` has the value `{value}` (from {source_name}), but it must be {allowed}"
    )]
    Invalid {
        key: &'static str,
        value: String,
        source_name: String,
        allowed: String,
    },
    #[error("config: {message}")]
    Figment { message: String },
    #[error("config file {}: {message}", path.display())]
    File { path: PathBuf, message: String },
}

impl ConfigError {
    /// Rewords a figment error so it names the key, the offending value and its source.
    pub(crate) fn from_figment(e: figment::Error, figment: &figment::Figment) -> Self {
        let mut parts = Vec::new();
        for err in e {
            let key = err.path.join(".");
            let source = match err.metadata.as_ref() {
                Some(m) if m.name == "env" => format!("env CM_{}", key.to_uppercase()),
                Some(m) => m.name.to_string(),
                None => figment
                    .find_metadata(&key)
                    .map(|m| m.name.to_string())
                    .unwrap_or_else(|| "unknown source".into()),
            };
            // an unknown key: the closest known one, not the whole list
            if let figment::error::Kind::UnknownField(field, _) = &err.kind {
                parts.push(format!(
                    "unknown config key `{field}` (from {source}){}; `cmem config` lists every key",
                    did_you_mean(field)
                ));
                continue;
            }
            let what = err.kind.to_string();
            if key.is_empty() {
                parts.push(format!(
                    "{what} (from {source}); allowed keys: {}",
                    crate::config::KEYS.join(", ")
                ));
            } else {
                parts.push(format!("config key `{key}`: {what} (from {source})"));
            }
        }
        ConfigError::Figment {
            message: parts.join("; "),
        }
    }
}

/// `; did you mean `bind`?` for a key close to a known one (by edit distance), else nothing.
pub(crate) fn did_you_mean(unknown: &str) -> String {
    let lower = unknown.to_ascii_lowercase().replace('-', "_");
    crate::config::KEYS
        .iter()
        .map(|k| (strsim::damerau_levenshtein(&lower, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| format!("; did you mean `{k}`?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn a_near_miss_names_the_key_it_missed() {
        assert_eq!(did_you_mean("bnd"), "; did you mean `bind`?");
        assert_eq!(
            did_you_mean("ping-interval-ms"),
            "; did you mean `ping_interval_ms`?"
        );
        assert_eq!(
            did_you_mean("retention_max_event"),
            "; did you mean `retention_max_events`?"
        );
        assert_eq!(did_you_mean("completely_unrelated_words"), "");
    }
}
