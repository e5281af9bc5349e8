//! Server-Sent Events at `GET /api/events/stream`.
//!
//! Each journal event becomes `id: <epoch>:<id>`, `event: <type>`, `data: <envelope>`. The `id:`
//! names the journal, so a browser `EventSource`, which sends back exactly the last `id:` it saw,
//! resumes with the epoch and gets a `resync` if the journal was recreated or restored meanwhile
//! (a bare id cannot tell: ids restart with a new journal). The stream opens
//! with `retry:` and the comment `connected heartbeat_ms=<n>` (the heartbeat interval, for
//! clients that detect a silent stall); heartbeat comments keep proxies from timing it out; `X-Accel-Buffering: no`
//! keeps nginx from buffering it. Resume: `Last-Event-ID` (sent by `EventSource` on reconnect)
//! or `?last_event_id=`, optionally with `?epoch=`.
//!
//! Backpressure needs no queue of our own: hyper polls the stream only as fast as the socket
//! drains, so a slow reader simply pulls later — from the journal if it has fallen out of the
//! fan-out window. A reader that stops entirely is cut by the socket's write timeout
//! (`crate::net`) and counted as `slow_consumer`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cmem_wire::Transport;
use futures::Stream;

use super::{conn_meta, new_conn_id, workspaces_for};
use crate::access::auth::Identity;
use crate::app::App;
use crate::http::ApiError;
use crate::http::{parse_cursor, query_params};
use crate::hub::registry::Conn;
use crate::hub::{Hub, StreamEnd, Subscription};
use crate::net::StallFlag;

/// Removes the connection from the registry when the stream is dropped (client gone or
/// stream ended), counting why.
struct Registration {
    hub: Arc<Hub>,
    conn: Arc<Conn>,
    stalled: Option<StallFlag>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let stalled = self.stalled.as_ref().is_some_and(StallFlag::is_set);
        let reason = if stalled {
            cmem_wire::Code::SlowConsumer.as_str()
        } else {
            "client_closed"
        };
        self.hub.registry.ended(&self.conn, reason);
    }
}

enum Phase {
    Retry,
    Events,
    Done,
}

struct StreamState {
    sub: Subscription,
    phase: Phase,
    retry: Duration,
    heartbeat: Duration,
    _registration: Registration,
}

fn events(state: StreamState) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures::stream::unfold(state, |mut st| async move {
        match st.phase {
            Phase::Retry => {
                st.phase = Phase::Events;
                // clients that watch for a silent stall (the client libraries) read the
                // heartbeat interval from this comment
                let ev = SseEvent::default().retry(st.retry).comment(format!(
                    "connected heartbeat_ms={}",
                    st.heartbeat.as_millis()
                ));
                Some((Ok(ev), st))
            }
            Phase::Events => match st.sub.next().await {
                Ok(ev) => {
                    let out = SseEvent::default()
                        .id(st.sub.cursor_text(ev.id))
                        .event(ev.kind.as_str())
                        .data(ev.json());
                    Some((Ok(out), st))
                }
                Err(end) => {
                    let reason = end.reason();
                    if let StreamEnd::Journal(e) = &end {
                        tracing::error!(error = %e, "sse stream ended by journal error");
                    }
                    st.sub.conn().close(&reason);
                    st.phase = Phase::Done;
                    let last = st.sub.cursor_text(st.sub.conn().cursor());
                    let out = SseEvent::default()
                        .event("close")
                        .data(crate::hub::last_words(&reason, &end.to_string(), last).to_string());
                    Some((Ok(out), st))
                }
            },
            Phase::Done => None,
        }
    })
}

/// `GET /api/events/stream`
pub async fn stream(
    State(app): State<App>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    stalled: Option<Extension<StallFlag>>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let q = query_params(uri.query(), &["last_event_id", "epoch", "workspaces"])?;
    let header_cursor = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("Last-Event-ID header is not valid text"))?,
        ),
        None => None,
    };
    // The header is what EventSource sends on reconnect, so it wins over the query.
    let (name, raw) = match header_cursor {
        Some(h) => ("Last-Event-ID", Some(h)),
        None => ("last_event_id", q.get("last_event_id").map(String::as_str)),
    };
    let cursor = parse_cursor(name, raw, q.get("epoch").map(String::as_str))?;
    let workspaces = workspaces_for(&identity, q.get("workspaces").map(String::as_str))?;

    let id = new_conn_id("sse");
    let conn = app
        .hub
        .registry
        .register(
            id,
            Transport::Sse,
            conn_meta(&headers, Some(remote), workspaces, &identity),
        )
        .ok_or_else(|| ApiError::bad_request("connection id collision; retry"))?;
    let registration = Registration {
        hub: app.hub.clone(),
        conn: conn.clone(),
        stalled: stalled.map(|Extension(f)| f),
    };
    let sub = app.hub.subscribe(conn, cursor).await?;
    let state = StreamState {
        sub,
        phase: Phase::Retry,
        retry: Duration::from_millis(app.config.sse_retry_ms),
        heartbeat: Duration::from_secs(app.config.sse_heartbeat_s),
        _registration: registration,
    };
    let sse = Sse::new(events(state)).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(app.config.sse_heartbeat_s))
            .text("heartbeat"),
    );
    let mut resp = sse.into_response();
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}
