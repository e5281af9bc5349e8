//! The NATS JetStream engine of the journal (cluster mode): several cmem nodes share one
//! replicated stream, and the stream is the journal.
//!
//! Why it looks like this:
//! - **The event id is the stream sequence.** JetStream gives every stored message the next
//!   sequence of the stream, dense and totally ordered, stored on a quorum of the stream's
//!   replicas before the publish is acknowledged; `append` returns after that acknowledgement,
//!   so an id given to a publisher is durable as on one node.
//! - **The stored message is the envelope without its id and epoch** (`{type, scope, ts, data,
//!   publisher?}`): the id is only known once stored. Each node adds both when it reads the
//!   message, the same bytes on every node.
//! - **The epoch is the stream's creation time**: a stream made anew (deleted, restored) has a
//!   new one, so every cursor into the old stream gets a `resync`.
//! - **Scopes are subjects** (`<prefix>.g`, `<prefix>.w.<workspace>`, `<prefix>.c.<client>`).
//! - **Fan-out** comes from one ordered consumer per node that reads the stream from where the
//!   node started: every node hands every event to its hub in id order, whichever node stored
//!   it. `append` waits until this node's consumer has passed its events, so an event is fanned
//!   out locally before `append` returns, as on one node.
//! - **Retention** is the stream's own limits (`max_msgs`, `max_age`).
//!
//! What differs from the SQLite engine: a batch is not atomic across nodes. The events of one
//! `append` get increasing ids, contiguous unless another node publishes at the same moment,
//! and a failure halfway leaves the first ones stored (each was acknowledged on its own).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;

use super::{
    ActivityQuery, Engine, Fanout, JournalError, JournalInfo, RECENT_CAPACITY, ReadQuery, Recent,
    read_window,
};
use crate::envelope::{EnvelopeRef, Event, NewEvent, Scope};

/// Where the stream is and how it is kept.
#[derive(Debug, Clone)]
pub struct JetStreamOptions {
    /// NATS server URLs, comma-separated (`nats://127.0.0.1:4222,nats://…`).
    pub url: String,
    /// The stream's name; its subjects are `<name lowercased>.>`.
    pub stream: String,
    /// Copies of the stream in the NATS cluster (1 on a single server; 3 recommended).
    pub replicas: usize,
    pub retention_max_events: u64,
    pub retention_max_age_s: u64,
}

/// What is stored per event: the envelope without `id` and `epoch`.
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    scope: String,
    ts: String,
    data: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    publisher: Option<serde_json::Value>,
}

/// How long a node tries to open the stream before it gives up starting.
const OPEN_WAIT: Duration = Duration::from_secs(15);

/// How long a read waits for the stream to hand over a message it says it holds.
const READ_WAIT: Duration = Duration::from_secs(10);

/// A subject token for a name: what NATS reserves (`.`, `*`, `>`, whitespace) and `%`
/// percent-encoded.
fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '.' | '*' | '>' | '%' => out.push_str(&format!("%{:02X}", c as u32)),
            c if c.is_whitespace() => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The subject an event of `scope` is stored under.
fn subject(prefix: &str, scope: &Scope) -> String {
    match scope {
        Scope::Global => format!("{prefix}.g"),
        Scope::Workspace(w) => format!("{prefix}.w.{}", token(w)),
        Scope::Client(c) => format!("{prefix}.c.{}", token(c)),
        Scope::User(u) => format!("{prefix}.u.{}", token(u)),
    }
}

fn nats_error(what: &str, e: impl std::fmt::Display) -> JournalError {
    JournalError::Write(format!("{what}: {e}"))
}

/// The event a stored message is, with its id.
fn event_from(epoch: &str, id: u64, payload: &[u8]) -> Result<Arc<Event>, JournalError> {
    let corrupt = |message: String| JournalError::Corrupt { id, message };
    let stored: Stored<'_> = serde_json::from_slice(payload).map_err(|e| corrupt(e.to_string()))?;
    let scope = Scope::parse(&stored.scope).map_err(corrupt)?;
    // `to_raw_value` keeps the text it wrote without parsing it again
    let body = serde_json::value::to_raw_value(&EnvelopeRef {
        id,
        epoch,
        kind: stored.kind,
        scope: &stored.scope,
        ts: &stored.ts,
        data: &stored.data,
        publisher: stored.publisher.as_ref(),
    })
    .map_err(|e| corrupt(e.to_string()))?;
    Ok(Arc::new(Event {
        id,
        kind: stored.kind.to_string(),
        scope,
        body,
    }))
}

/// An ordered consumer of the whole stream from `start`, as a stream of messages.
async fn ordered_from(
    stream: &stream::Stream,
    start: u64,
) -> Result<consumer::pull::Ordered, JournalError> {
    stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start.max(1),
            },
            ..Default::default()
        })
        .await
        .map_err(|e| nats_error("cannot follow the stream", e))?
        .messages()
        .await
        .map_err(|e| nats_error("cannot follow the stream", e))
}

/// How long this node's consumer may be silent before the stream is asked whether it holds
/// more (then the consumer is made again).
const FOLLOW_IDLE: Duration = Duration::from_secs(2);

/// What the follower task owns.
struct Follower {
    stream: stream::Stream,
    epoch: Arc<str>,
    head: Arc<AtomicU64>,
    oldest: Arc<AtomicU64>,
    recent: Recent,
    tx: watch::Sender<u64>,
    fanout: Fanout,
}

impl Follower {
    async fn run(self, first: consumer::pull::Ordered, stop: CancellationToken) {
        let mut messages = Some(first);
        let mut backoff = Duration::from_millis(100);
        loop {
            let Some(current) = messages.as_mut() else {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                match ordered_from(&self.stream, self.head.load(Ordering::Acquire) + 1).await {
                    Ok(m) => messages = Some(m),
                    Err(e) => tracing::warn!(error = %e, "cannot follow the journal stream yet"),
                }
                continue;
            };
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                m = tokio::time::timeout(FOLLOW_IDLE, current.next()) => m,
            };
            match next {
                Ok(Some(Ok(msg))) => {
                    backoff = Duration::from_millis(100);
                    if let Ok(info) = msg.info() {
                        self.deliver(info.stream_sequence, &msg.payload);
                    }
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "the journal stream's consumer failed; following again");
                    messages = None;
                }
                Ok(None) => {
                    tracing::warn!("the journal stream's consumer ended; following again");
                    messages = None;
                }
                // silent: fine if the stream holds nothing more, else follow again
                Err(_) => {
                    let behind = match self.stream.get_info().await {
                        Ok(info) => {
                            // retention moves the stream's start on its own: follow it
                            if info.state.messages > 0 {
                                self.oldest
                                    .fetch_max(info.state.first_sequence, Ordering::AcqRel);
                            }
                            info.state.last_sequence > self.head.load(Ordering::Acquire)
                        }
                        Err(_) => true,
                    };
                    if behind {
                        tracing::warn!(
                            "the journal stream's consumer fell silent; following again"
                        );
                        messages = None;
                    }
                }
            }
        }
    }

    /// One stored message to the window and the fan-out, in order; one this node already has
    /// (a consumer made again may repeat) is skipped.
    fn deliver(&self, id: u64, payload: &[u8]) {
        if id <= self.head.load(Ordering::Acquire) {
            return;
        }
        let event = match event_from(&self.epoch, id, payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "a stored event cannot be read; it is skipped");
                self.head.store(id, Ordering::Release);
                let _ = self.tx.send(id);
                return;
            }
        };
        if let Ok(mut r) = self.recent.write() {
            // the window stays contiguous: a gap (retention) restarts it
            if r.back_id().is_some_and(|b| b + 1 != id) {
                r.clear();
            }
            r.push(event.clone());
        }
        self.head.store(id, Ordering::Release);
        match &event.scope {
            Scope::Client(addr) => (self.fanout.direct)(addr, id),
            _ => {
                let _ = self.fanout.shared.send(event);
            }
        }
        let _ = self.tx.send(id);
    }
}

/// The JetStream engine: a publisher, this node's ordered consumer, the newest events in
/// memory.
pub struct JetStreamJournal {
    js: jetstream::Context,
    stream: stream::Stream,
    name: String,
    prefix: String,
    url: String,
    replicas: usize,
    epoch: Arc<str>,
    /// The last id this node has fanned out.
    head: Arc<AtomicU64>,
    oldest: Arc<AtomicU64>,
    recent: Recent,
    delivered: watch::Receiver<u64>,
    /// Held while a batch is sent, so one node's batches are not interleaved with each other.
    sending: Mutex<()>,
    appended: AtomicU64,
    commits: AtomicU64,
    closed: AtomicBool,
    stop: CancellationToken,
}

impl JetStreamJournal {
    /// Connects, makes the stream if it does not exist (or updates its limits), and starts this
    /// node's consumer at the stream's current end.
    pub async fn open(
        opts: JetStreamOptions,
        fanout: Fanout,
    ) -> Result<JetStreamJournal, JournalError> {
        let client = crate::nats::connect(&opts.url, "cmem")
            .await
            .map_err(JournalError::Write)?;
        let js = jetstream::new(client);
        let prefix = opts.stream.to_lowercase();
        let config = stream::Config {
            name: opts.stream.clone(),
            subjects: vec![format!("{prefix}.>")],
            max_messages: if opts.retention_max_events == 0 {
                -1
            } else {
                opts.retention_max_events.min(i64::MAX as u64) as i64
            },
            max_age: Duration::from_secs(opts.retention_max_age_s),
            num_replicas: opts.replicas.max(1),
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        };
        let mut stream = crate::nats::open_stream(&js, config.clone(), OPEN_WAIT)
            .await
            .map_err(JournalError::Write)?;
        let info = stream
            .info()
            .await
            .map_err(|e| nats_error("cannot read the stream's state", e))?
            .clone();
        if info.config.max_messages != config.max_messages || info.config.max_age != config.max_age
        {
            js.update_stream(config)
                .await
                .map_err(|e| nats_error("cannot apply the retention limits", e))?;
        }
        let epoch: Arc<str> = format!(
            "{:x}",
            info.created.timestamp_nanos_opt().unwrap_or_default()
        )
        .into();
        let head = info.state.last_sequence;
        let oldest = if info.state.messages == 0 {
            head + 1
        } else {
            info.state.first_sequence
        };
        let recent: Recent = super::new_window();
        let (tx, delivered) = watch::channel(head);
        let journal = JetStreamJournal {
            js,
            stream,
            name: opts.stream.clone(),
            prefix,
            url: opts.url.clone(),
            replicas: opts.replicas.max(1),
            epoch,
            head: Arc::new(AtomicU64::new(head)),
            oldest: Arc::new(AtomicU64::new(oldest)),
            recent,
            delivered,
            sending: Mutex::new(()),
            appended: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            stop: CancellationToken::new(),
        };
        // warm the window with the newest stored events, as the SQLite engine does
        let from = head
            .saturating_sub(RECENT_CAPACITY as u64)
            .max(oldest.saturating_sub(1));
        let warm = journal
            .read_stored(from, head, None, RECENT_CAPACITY, false)
            .await?;
        if let Ok(mut r) = journal.recent.write() {
            r.extend(warm);
        }
        journal.follow(tx, fanout).await?;
        Ok(journal)
    }

    /// This node's consumer: every message after the head, in order, to the window and the
    /// fan-out. The first consumer is made here (so a node that cannot follow the stream fails
    /// to start); afterwards it is made again from the head whenever it ends, fails or falls
    /// silent while the stream holds more (a NATS server that hosted it died).
    async fn follow(&self, tx: watch::Sender<u64>, fanout: Fanout) -> Result<(), JournalError> {
        let first = ordered_from(&self.stream, self.head.load(Ordering::Acquire) + 1).await?;
        let f = Follower {
            stream: self.stream.clone(),
            epoch: self.epoch.clone(),
            head: self.head.clone(),
            oldest: self.oldest.clone(),
            recent: self.recent.clone(),
            tx,
            fanout,
        };
        let stop = self.stop.clone();
        tokio::spawn(async move { f.run(first, stop).await });
        Ok(())
    }

    /// Stored events in `(after, upto]` from the stream (only `scopes`), at most `limit`.
    ///
    /// The stream's retention deletes from its start on its own, so `oldest` may lag behind
    /// it. A `strict` read (a client resuming) that finds its first event already gone raises
    /// `oldest` and fails with [`JournalError::Expired`]: the client then gets a `resync`
    /// when it comes back, instead of events after a silent gap.
    async fn read_stored(
        &self,
        after: u64,
        upto: u64,
        scopes: Option<&[String]>,
        limit: usize,
        strict: bool,
    ) -> Result<Vec<Arc<Event>>, JournalError> {
        let mut out = Vec::new();
        if upto <= after {
            return Ok(out);
        }
        let mut messages = ordered_from(&self.stream, after + 1).await?;
        let mut first = true;
        loop {
            let next = tokio::time::timeout(READ_WAIT, messages.next())
                .await
                .map_err(|_| JournalError::Write("the stream stopped answering a read".into()))?;
            let Some(msg) = next else { break };
            let msg = msg.map_err(|e| nats_error("cannot read the stream", e))?;
            let id = msg
                .info()
                .map_err(|e| nats_error("a message without its sequence", e))?
                .stream_sequence;
            if first && id > after + 1 {
                self.oldest.fetch_max(id, Ordering::AcqRel);
                if strict {
                    return Err(JournalError::Expired { after, oldest: id });
                }
            }
            first = false;
            if id > upto {
                break;
            }
            let event = event_from(&self.epoch, id, &msg.payload)?;
            if scopes.is_none_or(|list| list.iter().any(|s| event.scope.is(s))) {
                out.push(event);
                if out.len() >= limit.max(1) {
                    break;
                }
            }
            if id == upto {
                break;
            }
        }
        Ok(out)
    }

    async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Arc<Event>>, JournalError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(JournalError::Closed);
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let ts = crate::clock::now_rfc3339();
        let mut pending = Vec::with_capacity(events.len());
        {
            let _one_batch_at_a_time = self.sending.lock().await;
            for ev in &events {
                let payload = serde_json::to_vec(&Stored {
                    kind: &ev.kind,
                    scope: ev.scope.to_string(),
                    ts: ts.clone(),
                    data: ev.data.clone(),
                    publisher: ev.publisher.clone(),
                })
                .map_err(|e| JournalError::Write(e.to_string()))?;
                let mut msg =
                    jetstream::message::PublishMessage::build().payload(payload.clone().into());
                if let Some(key) = &ev.dedup {
                    // another node stored the same event: the ack names its sequence
                    msg = msg.message_id(key);
                }
                let ack = self
                    .js
                    .send_publish(subject(&self.prefix, &ev.scope), msg)
                    .await
                    .map_err(|e| nats_error("cannot publish to JetStream", e))?;
                pending.push((payload, ack));
            }
        }
        // each event as every node reads it back: the stored bytes with the sequence
        let mut out = Vec::with_capacity(events.len());
        for (payload, ack) in pending {
            let ack = ack
                .await
                .map_err(|e| nats_error("JetStream did not acknowledge an event", e))?;
            out.push(event_from(&self.epoch, ack.sequence, &payload)?);
        }
        self.appended.fetch_add(out.len() as u64, Ordering::Relaxed);
        self.commits.fetch_add(1, Ordering::Relaxed);
        // fanned out here before the publisher hears back, as on one node
        let last = out.iter().map(|e| e.id).max().unwrap_or(0);
        let mut delivered = self.delivered.clone();
        tokio::select! {
            r = delivered.wait_for(|d| *d >= last) => { r.map_err(|_| JournalError::Closed)?; }
            _ = self.stop.cancelled() => return Err(JournalError::Closed),
        }
        Ok(out)
    }

    async fn read_events(
        &self,
        q: ReadQuery,
        strict: bool,
    ) -> Result<Vec<Arc<Event>>, JournalError> {
        if let Some(hit) = read_window(&self.recent, &q) {
            return Ok(hit);
        }
        self.read_stored(q.after, q.upto, q.scopes.as_deref(), q.limit, strict)
            .await
    }

    /// The events in `(from, upto]` that `wanted` keeps, read a page at a time; stops early
    /// once `enough` are kept.
    async fn scan(
        &self,
        from: u64,
        upto: u64,
        wanted: &(dyn Fn(&Arc<Event>) -> bool + Sync),
        enough: Option<usize>,
    ) -> Result<Vec<Arc<Event>>, JournalError> {
        let mut out = Vec::new();
        let mut at = from;
        while at < upto && enough.is_none_or(|n| out.len() < n) {
            let page = self
                .read_events(
                    ReadQuery {
                        after: at,
                        upto,
                        scopes: None,
                        limit: 5000,
                    },
                    false,
                )
                .await?;
            let Some(last) = page.last().map(|e| e.id) else {
                break;
            };
            out.extend(page.into_iter().filter(|e| wanted(e)));
            at = last;
        }
        Ok(out)
    }

    async fn activity_events(&self, q: ActivityQuery) -> Result<Vec<Arc<Event>>, JournalError> {
        if q.scopes.is_empty() || q.types.as_ref().is_some_and(|t| t.is_empty()) {
            return Ok(Vec::new());
        }
        let wanted = |e: &Arc<Event>| {
            q.scopes.iter().any(|s| e.scope.is(s))
                && match &q.types {
                    Some(t) => t.contains(&e.kind),
                    None => !q.exclude.contains(&e.kind),
                }
        };
        let limit = q.limit.max(1);
        let head = self.head();
        if let Some(after) = q.after {
            // forward until `limit` are found or the head is reached
            let mut out = self.scan(after, head, &wanted, Some(limit)).await?;
            out.truncate(limit);
            return Ok(out);
        }
        // the newest: look back from the head in growing steps
        let floor = self.oldest().saturating_sub(1);
        let mut span = 1000u64;
        loop {
            let from = head.saturating_sub(span).max(floor);
            let mut found = self.scan(from, head, &wanted, None).await?;
            if found.len() >= limit || from == floor {
                let skip = found.len().saturating_sub(limit);
                return Ok(found.split_off(skip));
            }
            span = span.saturating_mul(4);
        }
    }
}

impl Engine for JetStreamJournal {
    fn epoch(&self) -> &str {
        &self.epoch
    }

    fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    fn oldest(&self) -> u64 {
        self.oldest.load(Ordering::Acquire)
    }

    fn info(&self) -> JournalInfo {
        JournalInfo {
            epoch: self.epoch.to_string(),
            head: self.head(),
            oldest: self.oldest(),
            appended_since_start: self.appended.load(Ordering::Relaxed),
            commits_since_start: self.commits.load(Ordering::Relaxed),
            path: format!("nats stream {} at {}", self.name, self.url),
        }
    }

    fn append(
        &self,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'_, Result<Vec<Arc<Event>>, JournalError>> {
        Box::pin(self.append_events(events))
    }

    fn read(&self, q: ReadQuery) -> BoxFuture<'_, Result<Vec<Arc<Event>>, JournalError>> {
        Box::pin(self.read_events(q, true))
    }

    fn activity(&self, q: ActivityQuery) -> BoxFuture<'_, Result<Vec<Arc<Event>>, JournalError>> {
        Box::pin(self.activity_events(q))
    }

    fn clear_cache(&self) -> usize {
        super::clear_window(&self.recent)
    }

    fn state(&self) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async move {
            let head = self.head();
            let mut out = serde_json::json!({
                "engine": "jetstream",
                "stream": self.name,
                "servers": self.url,
                "node_head": head,
            });
            match self.stream.get_info().await {
                Ok(info) => {
                    out["replicas"] = info.config.num_replicas.into();
                    out["last_sequence"] = info.state.last_sequence.into();
                    // how far this node's fan-out is behind the stream
                    out["node_lag"] = info.state.last_sequence.saturating_sub(head).into();
                    if let Some(c) = &info.cluster {
                        out["cluster"] = c.name.clone().into();
                        out["leader"] = c.leader.clone().into();
                        out["peers"] = c
                            .replicas
                            .iter()
                            .map(|r| serde_json::json!({"name": r.name, "current": r.current, "offline": r.offline, "lag": r.lag}))
                            .collect::<Vec<_>>()
                            .into();
                    }
                }
                Err(e) => out["error"] = format!("cannot read the stream's state: {e}").into(),
            }
            out
        })
    }

    fn shared_secret<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, JournalError>> {
        Box::pin(async move {
            // a stream of its own (one message per name), made with the journal's replicas;
            // plain stream requests, which every JetStream server since 2.9 answers
            let secrets = self
                .js
                .get_or_create_stream(stream::Config {
                    name: format!("{}_SECRETS", self.name),
                    subjects: vec![format!("{}_secrets.>", self.prefix)],
                    max_messages_per_subject: 1,
                    num_replicas: self.replicas,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| nats_error("cannot open the shared secrets", e))?;
            let subject = format!("{}_secrets.{}", self.prefix, token(name));
            let mut b = [0u8; 32];
            getrandom::fill(&mut b).map_err(|e| JournalError::Write(e.to_string()))?;
            let fresh: String = b.iter().map(|x| format!("{x:02x}")).collect();
            // stored only if the subject holds nothing yet: the first node to ask makes it
            let made = match self
                .js
                .send_publish(
                    subject.clone(),
                    jetstream::message::PublishMessage::build()
                        .payload(fresh.clone().into())
                        .expected_last_subject_sequence(0),
                )
                .await
            {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            };
            if made {
                return Ok(Some(fresh));
            }
            let stored = secrets
                .get_last_raw_message_by_subject(&subject)
                .await
                .map_err(|e| nats_error("cannot read a shared secret", e))?;
            String::from_utf8(stored.payload.to_vec())
                .map(Some)
                .map_err(|_| JournalError::Write(format!("the shared secret {name} is not text")))
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.closed.store(true, Ordering::Release);
            // wait for appends in flight to finish sending, then stop following
            let _ = self.sending.lock().await;
            self.stop.cancel();
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_subject_tokens() {
        assert_eq!(subject("cmem", &Scope::Global), "cmem.g");
        assert_eq!(
            subject("cmem", &Scope::Workspace("a.b c*>%".into())),
            "cmem.w.a%2Eb%20c%2A%3E%25"
        );
        assert_eq!(
            subject("cmem", &Scope::Client("sio:x-1".into())),
            "cmem.c.sio:x-1"
        );
    }
}
