//! The cluster's team store: team state kept as a replicated NATS JetStream stream, the team
//! log, that every node applies in order to its own SQLite view ([`super::CLUSTER_FILE`]).
//! [`super::store`] says why a log of changes and not shared rows.
//!
//! - **The log** is the stream `<cluster_stream>_TEAMS` (one subject), with the journal's
//!   replicas and no limits: it is the team state, so it is never trimmed. A change is stored
//!   as `{origin, change}`; `origin` tells a node its own changes from other nodes'.
//! - **A write** publishes its change and returns once this node has applied it (so a node
//!   reads its own writes), with the change's position in the log. A checked write is
//!   published with the log's last position it was checked against (`Nats-Expected-Last-
//!   Sequence`); if another change came first, the node catches up and checks again.
//! - **The follower** is one ordered consumer per process, from the view's last applied
//!   position; it applies what arrives in batches, one SQLite transaction each, and the
//!   position is stored in the same transaction. It is made again when it ends, fails or
//!   falls silent while the log holds more (as the journal's follower is).
//! - **The view** belongs to one stream: its `epoch` (the stream's name and creation time) is
//!   kept beside the position, and a view of another stream (deleted, recreated) is emptied and
//!   rebuilt from the log. Opening waits until the view has applied the whole log.
//! - **A node's own thread.** The teams API is synchronous (SQLite; called from handlers, the
//!   command line, tests) and a cluster write waits for NATS. The store runs its NATS client
//!   and follower on a small tokio runtime of its own (one worker thread), and a write blocks
//!   its caller until the change is stored and applied, as a SQLite commit would; on the
//!   server's runtime it blocks through `block_in_place`, so other tasks move to another
//!   worker meanwhile.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::{FutureExt, StreamExt};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::store::{self, Change, Check, Effects};
use super::{Shared, TeamsError};

/// Where the cluster is (the journal's NATS servers and stream name).
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// NATS server URLs, comma-separated.
    pub url: String,
    /// The journal's stream name; the team log is `<stream>_TEAMS`.
    pub stream: String,
    /// Copies of the team log in the NATS cluster.
    pub replicas: usize,
}

/// How long opening may take: connecting, and a JetStream cluster electing its leader.
const OPEN_WAIT: Duration = Duration::from_secs(30);
/// How long opening waits for the view to apply the whole log.
const REPLAY_WAIT: Duration = Duration::from_secs(300);
/// How long a write waits for the log to store it, then for this node to apply it.
const WRITE_WAIT: Duration = Duration::from_secs(10);
/// Checked writes that lost the race to another change before the writer gives up.
const WRITE_TRIES: usize = 20;
/// Silence after which the follower asks the log whether it holds more.
const FOLLOW_IDLE: Duration = Duration::from_secs(2);
/// Changes applied in one SQLite transaction at most.
const BATCH_MAX: usize = 500;

#[derive(Serialize)]
struct LoggedRef<'a> {
    origin: &'a str,
    change: &'a Change,
}

#[derive(Deserialize)]
struct Logged {
    origin: String,
    change: Change,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> TeamsError {
    TeamsError::Unavailable(format!("{what}: {e}"))
}

fn lock(conn: &Mutex<Connection>) -> Result<std::sync::MutexGuard<'_, Connection>, TeamsError> {
    conn.lock()
        .map_err(|_| TeamsError::Invalid("teams database lock poisoned".into()))
}

fn applied_in(db: &Connection) -> Result<u64, TeamsError> {
    Ok(store::meta(db, "applied")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Blocks the calling thread on `f`; on a multi-threaded tokio runtime through
/// `block_in_place`, so the runtime's other tasks keep running.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The position this process's view has applied, for writers to wait on.
#[derive(Default)]
struct Applied {
    seq: Mutex<u64>,
    moved: Condvar,
}

impl Applied {
    fn get(&self) -> u64 {
        self.seq.lock().map(|s| *s).unwrap_or(0)
    }

    fn set(&self, seq: u64) {
        if let Ok(mut s) = self.seq.lock() {
            *s = (*s).max(seq);
        }
        self.moved.notify_all();
    }

    /// Waits until `seq` is applied; false after `timeout`.
    fn wait(&self, seq: u64, timeout: Duration) -> bool {
        blocking(|| {
            let Ok(guard) = self.seq.lock() else {
                return false;
            };
            self.moved
                .wait_timeout_while(guard, timeout, |s| *s < seq)
                .map(|(s, _)| *s >= seq)
                .unwrap_or(false)
        })
    }
}

/// What other cluster features of the teams layer (presence) use: the NATS connection and the
/// names.
#[derive(Clone)]
pub struct Link {
    pub js: jetstream::Context,
    /// The journal's stream name, which the team log's and presence's names start with.
    pub base: String,
    pub replicas: usize,
}

/// The team log of a cluster, and this process's follower of it.
pub struct ClusterStore {
    rt: Option<tokio::runtime::Runtime>,
    js: jetstream::Context,
    stream: stream::Stream,
    base: String,
    name: String,
    subject: String,
    replicas: usize,
    origin: Arc<str>,
    conn: Arc<Mutex<Connection>>,
    applied: Arc<Applied>,
    stop: CancellationToken,
}

impl Drop for ClusterStore {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(rt) = self.rt.take() {
            // may be dropped on another runtime's thread, where waiting is not allowed
            rt.shutdown_background();
        }
    }
}

/// Runs `fut` on the store's runtime and waits for it, at most `timeout`.
fn run_on<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    timeout: Duration,
    what: &str,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, TeamsError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    blocking(|| rx.recv_timeout(timeout))
        .map_err(|_| TeamsError::Unavailable(format!("{what}: NATS did not answer in {timeout:?}")))
}

/// Why a publish did not store a change.
enum Refused {
    /// The log moved since the change was checked.
    Moved,
    Failed(String),
}

async fn publish(
    js: jetstream::Context,
    subject: String,
    payload: Vec<u8>,
    expected: Option<u64>,
) -> Result<u64, Refused> {
    let mut msg = jetstream::message::PublishMessage::build().payload(payload.into());
    if let Some(last) = expected {
        msg = msg.expected_last_sequence(last);
    }
    let ack = js
        .send_publish(subject, msg)
        .await
        .map_err(|e| Refused::Failed(e.to_string()))?;
    match ack.await {
        Ok(a) => Ok(a.sequence),
        Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
            Err(Refused::Moved)
        }
        Err(e) => Err(Refused::Failed(e.to_string())),
    }
}

impl ClusterStore {
    /// Connects, makes the team log if it does not exist, brings this state folder's view up to
    /// date with it, and keeps it so. `seed` (a single node's access state) is stored first if
    /// the log is empty.
    pub(crate) fn open(
        opts: &ClusterOptions,
        conn: Arc<Mutex<Connection>>,
        shared: Arc<Shared>,
        seed: Option<Change>,
    ) -> Result<ClusterStore, TeamsError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cmem-teams")
            .enable_all()
            .build()
            .map_err(|e| unavailable("cannot start the team store's runtime", e))?;
        let name = format!("{}_TEAMS", opts.stream);
        let subject = format!("{}_teams.log", opts.stream.to_lowercase());
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            num_replicas: opts.replicas.max(1),
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let url = opts.url.clone();
        let (js, stream, created, last) = run_on(
            rt.handle(),
            OPEN_WAIT + Duration::from_secs(5),
            "cannot open the cluster's team log",
            async move {
                let client = crate::nats::connect(&url, "cmem-teams")
                    .await
                    .map_err(TeamsError::Unavailable)?;
                let js = jetstream::new(client);
                let mut stream = crate::nats::open_stream(&js, config, OPEN_WAIT)
                    .await
                    .map_err(TeamsError::Unavailable)?;
                let info = stream
                    .info()
                    .await
                    .map_err(|e| unavailable("cannot read the team log's state", e))?
                    .clone();
                let created = info.created.timestamp_nanos_opt().unwrap_or_default();
                Ok::<_, TeamsError>((js, stream, created, info.state.last_sequence))
            },
        )??;
        let epoch = format!("{name}/{created:x}");
        let start = {
            let mut db = lock(&conn)?;
            let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if store::meta(&tx, "epoch")?.as_deref() != Some(epoch.as_str()) {
                tracing::info!(log = %name, "building this node's view of the team log");
                store::wipe(&tx)?;
                store::set_meta(&tx, "epoch", &epoch)?;
                store::set_meta(&tx, "applied", "0")?;
            }
            let start = applied_in(&tx)?;
            tx.commit()?;
            start
        };
        let applied = Arc::new(Applied::default());
        applied.set(start);
        let mut origin = [0u8; 8];
        getrandom::fill(&mut origin).map_err(|e| TeamsError::Random(e.to_string()))?;
        let origin: Arc<str> = store::hex(&origin).into();
        let stop = CancellationToken::new();
        let follower = Follower {
            stream: stream.clone(),
            origin: origin.clone(),
            conn: conn.clone(),
            shared,
            applied: applied.clone(),
        };
        rt.spawn(follower.run(stop.clone()));
        let store = ClusterStore {
            rt: Some(rt),
            js,
            stream,
            base: opts.stream.clone(),
            name,
            subject,
            replicas: opts.replicas.max(1),
            origin,
            conn,
            applied,
            stop,
        };
        if !store.applied.wait(last, REPLAY_WAIT) {
            return Err(TeamsError::Unavailable(format!(
                "this node's view of the team log reached {} of {last} changes in {REPLAY_WAIT:?}",
                store.applied.get()
            )));
        }
        if let Some(seed) = seed.filter(|_| last == 0) {
            store.seed(seed)?;
        }
        Ok(store)
    }

    fn handle(&self) -> Result<&tokio::runtime::Handle, TeamsError> {
        self.rt
            .as_ref()
            .map(|rt| rt.handle())
            .ok_or_else(|| TeamsError::Unavailable("the team store is closed".into()))
    }

    fn payload(&self, change: &Change) -> Result<Vec<u8>, TeamsError> {
        serde_json::to_vec(&LoggedRef {
            origin: &self.origin,
            change,
        })
        .map_err(|e| TeamsError::Invalid(format!("change: {e}")))
    }

    /// Stores `seed` as the log's first change, unless another node stored something first.
    fn seed(&self, seed: Change) -> Result<(), TeamsError> {
        let payload = self.payload(&seed)?;
        let sent = run_on(
            self.handle()?,
            WRITE_WAIT,
            "cannot store this node's users in the team log",
            publish(self.js.clone(), self.subject.clone(), payload, Some(0)),
        )?;
        match sent {
            Ok(seq) => {
                tracing::info!("this node's users, tokens and workspaces now are the cluster's");
                self.wait_applied(seq)
            }
            // another node's state came first: it is the cluster's, and this node follows it
            Err(Refused::Moved) => Ok(()),
            Err(Refused::Failed(e)) => Err(unavailable(
                "cannot store this node's users in the team log",
                e,
            )),
        }
    }

    fn wait_applied(&self, seq: u64) -> Result<(), TeamsError> {
        if self.applied.wait(seq, WRITE_WAIT) {
            Ok(())
        } else {
            Err(TeamsError::Unavailable(format!(
                "the change is stored in the team log (#{seq}) but this node has not applied it yet"
            )))
        }
    }

    /// Waits until this node has applied everything the log holds now.
    fn catch_up(&self) -> Result<(), TeamsError> {
        let stream = self.stream.clone();
        let last = run_on(
            self.handle()?,
            WRITE_WAIT,
            "cannot read the team log's state",
            async move { stream.get_info().await.map(|i| i.state.last_sequence) },
        )?
        .map_err(|e| unavailable("cannot read the team log's state", e))?;
        self.wait_applied(last)
    }

    pub fn link(&self) -> Link {
        Link {
            js: self.js.clone(),
            base: self.base.clone(),
            replicas: self.replicas,
        }
    }

    /// The last position of the team log this process has applied.
    pub fn applied(&self) -> u64 {
        self.applied.get()
    }

    /// The team store's state for status pages.
    pub fn state(&self) -> serde_json::Value {
        serde_json::json!({
            "engine": "jetstream",
            "stream": self.name,
            "replicas": self.replicas,
            "applied": self.applied.get(),
        })
    }
}

/// This process's consumer of the team log.
struct Follower {
    stream: stream::Stream,
    origin: Arc<str>,
    conn: Arc<Mutex<Connection>>,
    shared: Arc<Shared>,
    applied: Arc<Applied>,
}

impl Follower {
    async fn run(self, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let from = self.applied.get() + 1;
            let made = async {
                self.stream
                    .create_consumer(consumer::pull::OrderedConfig {
                        deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                            start_sequence: from,
                        },
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?
                    .messages()
                    .await
                    .map_err(|e| e.to_string())
            };
            let mut messages = tokio::select! {
                _ = stop.cancelled() => return,
                m = made => match m {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot follow the team log yet");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                },
            };
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = tokio::time::timeout(FOLLOW_IDLE, messages.next()) => m,
                };
                match next {
                    Ok(Some(Ok(first))) => {
                        backoff = Duration::from_millis(100);
                        let mut batch = vec![first];
                        while batch.len() < BATCH_MAX {
                            match messages.next().now_or_never() {
                                Some(Some(Ok(m))) => batch.push(m),
                                _ => break,
                            }
                        }
                        let batch: Vec<(u64, bytes::Bytes)> = batch
                            .into_iter()
                            .filter_map(|m| {
                                let seq = m.info().ok()?.stream_sequence;
                                Some((seq, m.payload.clone()))
                            })
                            .collect();
                        if let Err(e) = self.apply(batch) {
                            tracing::error!(error = %e, "cannot apply the team log; trying again");
                            tokio::time::sleep(backoff).await;
                            break;
                        }
                    }
                    Ok(Some(Err(e))) => {
                        tracing::warn!(error = %e, "the team log's consumer failed; following again");
                        break;
                    }
                    Ok(None) => break,
                    // silent: fine if the log holds nothing more, else follow again
                    Err(_) => {
                        let behind = match self.stream.get_info().await {
                            Ok(info) => info.state.last_sequence > self.applied.get(),
                            Err(_) => true,
                        };
                        if behind {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Applies a batch of logged changes in one transaction; those already applied (by this
    /// process before, or by another process sharing the view) are skipped.
    fn apply(&self, batch: Vec<(u64, bytes::Bytes)>) -> Result<(), TeamsError> {
        let mut own = Effects::default();
        let mut foreign = Effects::default();
        {
            let mut db = lock(&self.conn)?;
            let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut applied = applied_in(&tx)?;
            for (seq, payload) in batch {
                if seq <= applied {
                    continue;
                }
                if seq != applied + 1 {
                    tracing::warn!(
                        from = applied + 1,
                        to = seq - 1,
                        "changes are missing from the team log (purged?); skipped"
                    );
                }
                match serde_json::from_slice::<Logged>(&payload) {
                    Ok(l) => {
                        if let Err(e) = store::apply(&tx, Some(seq as i64), &l.change) {
                            tracing::error!(seq, error = %e, "a team change cannot be applied; skipped");
                        }
                        if *l.origin == *self.origin {
                            own.note(&l.change);
                        } else {
                            foreign.note(&l.change);
                        }
                    }
                    Err(e) => {
                        tracing::error!(seq, error = %e, "a team change cannot be read; skipped")
                    }
                }
                applied = seq;
            }
            store::set_meta(&tx, "applied", &applied.to_string())?;
            tx.commit()?;
            // while the view is still locked: whoever sees the new rows also sees the position,
            // the caches without what changed, and the watchers' count moved
            self.applied.set(applied);
            self.shared.applied(&own, false);
            self.shared.applied(&foreign, true);
        }
        Ok(())
    }
}

impl super::Engine for ClusterStore {
    /// Commits a change made by `make` from this node's view (see [`super::store`]).
    fn commit(
        &self,
        check: Check,
        make: &dyn Fn(&Connection) -> Result<Change, TeamsError>,
    ) -> Result<i64, TeamsError> {
        for _ in 0..WRITE_TRIES {
            let (payload, after) = {
                let db = lock(&self.conn)?;
                let after = applied_in(&db)?;
                (self.payload(&make(&db)?)?, after)
            };
            let expected = (check == Check::Checked).then_some(after);
            let sent = run_on(
                self.handle()?,
                WRITE_WAIT,
                "the team log did not store the change",
                publish(self.js.clone(), self.subject.clone(), payload, expected),
            )?;
            match sent {
                Ok(seq) => {
                    self.wait_applied(seq)?;
                    return Ok(seq as i64);
                }
                Err(Refused::Moved) => self.catch_up()?,
                Err(Refused::Failed(e)) => {
                    return Err(unavailable("the team log did not store the change", e));
                }
            }
        }
        Err(TeamsError::Unavailable(format!(
            "the team log kept changing under this change ({WRITE_TRIES} tries); try again"
        )))
    }

    fn link(&self) -> Option<Link> {
        Some(ClusterStore::link(self))
    }

    fn state(&self) -> Option<serde_json::Value> {
        Some(ClusterStore::state(self))
    }

    fn applied(&self) -> Option<u64> {
        Some(ClusterStore::applied(self))
    }
}
