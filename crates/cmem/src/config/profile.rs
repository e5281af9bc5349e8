//! Platform profiles: the defaults that differ between Windows and everything else.
//!
//! They are plain data (a partial config layer), so the Windows profile is tested on Linux.
//! On Windows the defaults favour stability: a longer ping timeout (laptops sleep, VPNs stall),
//! more patience with a client that stops reading, a slower advised poll interval, TCP
//! keepalive on, and every fallback transport kept available.

use serde::{Deserialize, Serialize};

use super::{Partial, Transport};

/// Which profile is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlatformProfile {
    /// Pick by the OS the server runs on.
    Auto,
    Windows,
    Default,
}

impl PlatformProfile {
    /// Parses `auto|windows|default`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "windows" => Some(Self::Windows),
            "default" => Some(Self::Default),
            _ => None,
        }
    }

    /// Resolves `auto` to the profile of this OS.
    pub fn resolve(self) -> Self {
        match self {
            Self::Auto if cfg!(windows) => Self::Windows,
            Self::Auto => Self::Default,
            other => other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Windows => "windows",
            Self::Default => "default",
        }
    }

    /// The source label `cmem config` prints for values this profile sets.
    pub fn source_label(self) -> &'static str {
        match self {
            Self::Windows => "profile windows",
            _ => "profile default",
        }
    }
}

/// The layer for a resolved profile: the values it sets (the keys it leaves alone are absent).
pub fn profile_layer(profile: PlatformProfile) -> Partial {
    match profile.resolve() {
        PlatformProfile::Windows => Partial {
            ping_interval_ms: Some(25_000),
            ping_timeout_ms: Some(60_000),
            poll_interval_ms: Some(2_000),
            transports: Some(Transport::ALL.to_vec()),
            slow_consumer_timeout_ms: Some(30_000),
            tcp_keepalive: Some(true),
            ..Partial::default()
        },
        _ => Partial::default(),
    }
}
