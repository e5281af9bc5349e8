//! The four ways a client connects, best first: the names `transports` takes in the server's
//! configuration, the clients' fallback chain and the load generator.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a client is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Socket.IO over a WebSocket (`/socket.io/?transport=websocket`).
    Websocket,
    /// Socket.IO over Engine.IO HTTP long-polling (`/socket.io/?transport=polling`).
    Polling,
    /// Server-Sent Events (`/api/events/stream`).
    Sse,
    /// Plain HTTP polling (`/api/events/poll`).
    Poll,
}

/// Why text is not a transport's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport `{0}`; allowed: websocket, polling, sse, poll")]
pub struct UnknownTransport(pub String);

impl Transport {
    /// Every transport, best first (the default fallback order).
    pub const ALL: [Transport; 4] = [
        Transport::Websocket,
        Transport::Polling,
        Transport::Sse,
        Transport::Poll,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Transport::Websocket => "websocket",
            Transport::Polling => "polling",
            Transport::Sse => "sse",
            Transport::Poll => "poll",
        }
    }

    /// Whether it is one of Socket.IO's (the ones behind `/socket.io/`).
    pub fn is_socketio(self) -> bool {
        matches!(self, Transport::Websocket | Transport::Polling)
    }
}

impl std::str::FromStr for Transport {
    type Err = UnknownTransport;

    fn from_str(s: &str) -> Result<Self, UnknownTransport> {
        let t = s.trim();
        Transport::ALL
            .into_iter()
            .find(|x| x.name() == t)
            .ok_or_else(|| UnknownTransport(t.chars().take(100).collect()))
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back() {
        for t in Transport::ALL {
            assert_eq!(t.name().parse::<Transport>(), Ok(t));
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{t}\""));
        }
        let e = "ws".parse::<Transport>().unwrap_err().to_string();
        assert!(
            e.contains("unknown transport `ws`") && e.contains("polling"),
            "{e}"
        );
    }
}
