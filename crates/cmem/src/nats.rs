//! What the cluster engines share about NATS (the journal's and the team store's): reaching a
//! list of servers, and opening a JetStream stream while a NATS cluster may still be electing
//! its JetStream leader. Errors are text: each engine words them in its own error type.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

/// Connects to the first reachable of `urls` (comma-separated). Once connected, the client
/// reconnects by itself, to any server of the list.
pub async fn connect(urls: &str, name: &str) -> Result<async_nats::Client, String> {
    let servers: Vec<String> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect();
    async_nats::ConnectOptions::new()
        .name(name)
        .connect(servers)
        .await
        .map_err(|e| format!("cannot reach NATS at {urls}: {e}"))
}

/// Makes the stream if it does not exist, trying again every 500 ms for `wait`: a cluster that
/// is still electing its JetStream leader answers with errors for a few seconds.
pub async fn open_stream(
    js: &jetstream::Context,
    config: stream::Config,
    wait: Duration,
) -> Result<stream::Stream, String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(s) => return Ok(s),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::info!(stream = %config.name, error = %e, "the JetStream stream is not available yet; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(format!(
                    "cannot open the JetStream stream {}: {e}",
                    config.name
                ));
            }
        }
    }
}
