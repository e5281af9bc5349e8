//! The state machine: which transport to try, when, and which connection delivers.
//!
//! It runs as one task per client. At any time exactly one leg delivers (the one in use); a
//! probe of a better transport runs beside it and, once open, replaces it. Every delivered
//! event moves the one cursor; an event at or below it (a new leg repeating what the old one
//! already delivered) is dropped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};

use crate::legs::{self, Ctx, LegMsg, LegTask};
use crate::{
    ClientError, Cursor, Envelope, ErrorCode, LegError, Options, Phase, State, Transport, Update,
};

/// A connected client: call [`Client::next`] for events and state changes, in order.
/// Dropping it disconnects.
pub struct Client {
    rx: mpsc::Receiver<Update>,
    cursor: Arc<Mutex<Option<Cursor>>>,
    _task: LegTask,
}

fn random_unit() -> f64 {
    let x = getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Client {
    /// Starts connecting at once (call it within a tokio runtime). Events wait in a bounded
    /// queue until read: a reader that stops holds the connection back rather than growing
    /// memory.
    pub fn connect(opts: Options) -> Result<Client, ClientError> {
        let nodes: Vec<String> = opts
            .url
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        if nodes.is_empty()
            || nodes
                .iter()
                .any(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return Err(ClientError::Url(opts.url));
        }
        if opts.transports.is_empty() {
            return Err(ClientError::NoTransports);
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &opts.token {
            let v = format!("Bearer {t}")
                .parse()
                .map_err(|_| ClientError::Http("the token is not valid header text".into()))?;
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .default_headers(headers)
            .build()
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let client_id = opts
            .client_id
            .clone()
            .unwrap_or_else(|| format!("rs-{}", random_hex(9)));
        let cursor = Arc::new(Mutex::new(opts.from.clone()));
        let (tx, rx) = mpsc::channel(1024);
        let machine = Machine {
            ctx: Arc::new(Ctx {
                opts,
                http,
                client_id,
                nodes,
                node: Default::default(),
            }),
            nodes_tried: 0,
            gave_up: Vec::new(),
            tx,
            cursor: cursor.clone(),
            idx: 0,
            failures: 0,
            attempt: 0,
            ever: false,
        };
        let task = LegTask::spawn(machine.run());
        Ok(Client {
            rx,
            cursor,
            _task: task,
        })
    }

    /// The next event or state change; `None` only if the client's task ended.
    pub async fn next(&mut self) -> Option<Update> {
        self.rx.recv().await
    }

    /// The last event delivered (or the starting cursor).
    pub fn cursor(&self) -> Option<Cursor> {
        self.cursor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

struct Probe {
    idx: usize,
    _task: LegTask,
    rx: mpsc::Receiver<LegMsg>,
    deadline: Instant,
}

enum ProbeOutcome {
    Opened,
    Failed,
    Event,
}

async fn probe_next(p: &mut Option<Probe>) -> ProbeOutcome {
    let Some(p) = p else {
        return std::future::pending().await;
    };
    match timeout_at(p.deadline, p.rx.recv()).await {
        Ok(Some(LegMsg::Opened)) => ProbeOutcome::Opened,
        Ok(Some(LegMsg::Event(_))) => ProbeOutcome::Event,
        _ => ProbeOutcome::Failed,
    }
}

struct Machine {
    ctx: Arc<Ctx>,
    tx: mpsc::Sender<Update>,
    cursor: Arc<Mutex<Option<Cursor>>>,
    idx: usize,
    failures: u32,
    attempt: u32,
    ever: bool,
    /// Other nodes tried since the last connection (a round ends after each was tried once).
    nodes_tried: usize,
    /// Transports the server refused, since the last open connection, with a code that says
    /// trying again cannot help: once every transport has, the client stops.
    gave_up: Vec<Transport>,
}

impl Machine {
    fn transports(&self) -> &[Transport] {
        &self.ctx.opts.transports
    }

    fn cursor(&self) -> Option<Cursor> {
        self.cursor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn state(
        &self,
        state: Phase,
        transport: Transport,
        delay: Duration,
        error: Option<(Transport, LegError)>,
        upgraded_from: Option<Transport>,
    ) -> bool {
        let s = State {
            state,
            transport,
            node: self.ctx.base().to_string(),
            attempt: self.attempt,
            delay,
            error,
            upgraded_from,
        };
        self.tx.send(Update::State(s)).await.is_ok()
    }

    /// Passes `env` on unless the cursor is already at or past it.
    async fn deliver(&self, env: Box<Envelope>) -> bool {
        {
            let mut c = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(cur) = &*c
                && !cur.precedes(&env.epoch, env.id)
            {
                return true;
            }
            *c = Some(Cursor {
                epoch: Some(env.epoch.clone()),
                id: env.id,
            });
        }
        self.tx.send(Update::Event(env)).await.is_ok()
    }

    async fn run(mut self) {
        loop {
            let transport = self.transports()[self.idx];
            let phase = if self.ever || self.attempt > 0 {
                Phase::Reconnecting
            } else {
                Phase::Connecting
            };
            if !self
                .state(phase, transport, Duration::ZERO, None, None)
                .await
            {
                return;
            }
            let (task, mut rx) = legs::start(self.ctx.clone(), transport, self.cursor());
            let timeout_ms = self.ctx.opts.connect_timeout.as_millis();
            let (used, err, lived) =
                match timeout(self.ctx.opts.connect_timeout, opened(&mut rx)).await {
                    Err(_) => (
                        transport,
                        LegError::new(
                            ErrorCode::Timeout,
                            format!("{transport} did not connect within {timeout_ms} ms"),
                        ),
                        Duration::ZERO,
                    ),
                    Ok(Err(e)) => (transport, e, Duration::ZERO),
                    Ok(Ok(())) => match self.connected(transport, task, rx).await {
                        Some(x) => x,
                        None => return,
                    },
                };
            // the server said trying again cannot help (not a member of the workspace asked
            // for, a malformed request, a transport switched off): the next transport is tried
            // at once, and once every one has said so the client stops, saying why
            if err.gives_up() {
                if !self.gave_up.contains(&used) {
                    self.gave_up.push(used);
                }
                if self.transports().iter().all(|t| self.gave_up.contains(t)) {
                    let _ = self
                        .state(
                            Phase::Failed,
                            transport,
                            Duration::ZERO,
                            Some((used, err)),
                            None,
                        )
                        .await;
                    return;
                }
                self.failures = self.ctx.opts.failures_before_fallback;
            }
            // a node that cannot be reached: the next one is tried at once with the same
            // transport, each once per round; after a round, fallback and backoff as usual
            let nodes = self.ctx.nodes.len();
            let unreachable = matches!(
                err.code,
                ErrorCode::Transport | ErrorCode::Closed | ErrorCode::Timeout | ErrorCode::Stalled
            );
            if nodes > 1 && lived.is_zero() && unreachable {
                if self.nodes_tried + 1 < nodes {
                    self.nodes_tried += 1;
                    self.ctx
                        .node
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.attempt = self.attempt.saturating_add(1);
                    if !self
                        .state(
                            Phase::Reconnecting,
                            transport,
                            Duration::ZERO,
                            Some((used, err)),
                            None,
                        )
                        .await
                    {
                        return;
                    }
                    continue;
                }
                self.nodes_tried = 0;
            }
            let before = self.idx;
            if lived < self.ctx.opts.stable_after {
                // a timeout costs `connect_timeout` each time: one is enough to move on (a
                // proxy holding the response), where a quick failure may be passing
                self.failures += if err.code == ErrorCode::Timeout {
                    self.ctx.opts.failures_before_fallback
                } else {
                    1
                };
                if self.failures >= self.ctx.opts.failures_before_fallback {
                    self.failures = 0;
                    self.idx = (self.idx + 1) % self.transports().len();
                }
            } else {
                self.failures = 0;
                self.attempt = 0;
            }
            // moving on to another transport is not retrying what just failed: it is tried at
            // once (a proxy that blocks one costs no delay); the count still grows
            let delay = if self.idx != before {
                Duration::ZERO
            } else {
                self.ctx.opts.backoff.delay(self.attempt, random_unit())
            };
            self.attempt = self.attempt.saturating_add(1);
            let next = self.transports()[self.idx];
            if !self
                .state(Phase::Reconnecting, next, delay, Some((used, err)), None)
                .await
            {
                return;
            }
            tokio::select! {
                _ = sleep(delay) => {}
                _ = self.tx.closed() => return,
            }
        }
    }

    /// Runs while connected; returns the transport last used, why it ended and how long it was
    /// up, or `None` when the reader is gone.
    async fn connected(
        &mut self,
        mut transport: Transport,
        mut task: LegTask,
        mut rx: mpsc::Receiver<LegMsg>,
    ) -> Option<(Transport, LegError, Duration)> {
        self.ever = true;
        self.nodes_tried = 0;
        self.gave_up.clear();
        if !self
            .state(Phase::Connected, transport, Duration::ZERO, None, None)
            .await
        {
            return None;
        }
        let opts = self.ctx.opts.clone();
        let mut opened_at = Instant::now();
        let mut stable = false;
        let mut probe: Option<Probe> = None;
        let mut next_probe = Instant::now() + opts.probe_interval;
        loop {
            let probing = probe.is_some();
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(LegMsg::Event(e)) => {
                        if !self.deliver(e).await {
                            return None;
                        }
                    }
                    Some(LegMsg::Opened) => {}
                    Some(LegMsg::Ended(e)) => return Some((transport, e, opened_at.elapsed())),
                    None => {
                        return Some((transport, LegError::closed("the connection ended"), opened_at.elapsed()));
                    }
                },
                _ = sleep_until(opened_at + opts.stable_after), if !stable => {
                    stable = true;
                    self.attempt = 0;
                    self.failures = 0;
                }
                _ = sleep_until(next_probe), if self.idx > 0 && !probing => {
                    probe = Some(self.probe(0));
                }
                outcome = probe_next(&mut probe) => match outcome {
                    ProbeOutcome::Opened => {
                        let Some(p) = probe.take() else { continue };
                        // from here on only the new connection delivers; it started from a
                        // cursor at or before the one now held, so what it repeats is dropped
                        // and nothing is missing
                        let from = transport;
                        task = p._task;
                        rx = p.rx;
                        self.idx = p.idx;
                        transport = self.transports()[p.idx];
                        opened_at = Instant::now();
                        stable = false;
                        self.failures = 0;
                        next_probe = Instant::now() + opts.probe_interval;
                        if !self.state(Phase::Connected, transport, Duration::ZERO, None, Some(from)).await {
                            return None;
                        }
                    }
                    ProbeOutcome::Event => {}
                    ProbeOutcome::Failed => {
                        let next = probe.take().map(|p| p.idx + 1).unwrap_or(usize::MAX);
                        if next < self.idx {
                            probe = Some(self.probe(next));
                        } else {
                            next_probe = Instant::now() + opts.probe_interval;
                        }
                    }
                },
                _ = self.tx.closed() => return None,
            }
            // `task` keeps the leg in use running (dropping it aborts the leg)
            let _ = &task;
        }
    }

    fn probe(&self, idx: usize) -> Probe {
        let (task, rx) = legs::start(self.ctx.clone(), self.transports()[idx], self.cursor());
        Probe {
            idx,
            _task: task,
            rx,
            deadline: Instant::now() + self.ctx.opts.connect_timeout,
        }
    }
}

/// Waits for the leg to open; an end before that is its failure.
async fn opened(rx: &mut mpsc::Receiver<LegMsg>) -> Result<(), LegError> {
    loop {
        match rx.recv().await {
            Some(LegMsg::Opened) => return Ok(()),
            Some(LegMsg::Event(_)) => {}
            Some(LegMsg::Ended(e)) => return Err(e),
            None => return Err(LegError::closed("the connection ended before it opened")),
        }
    }
}
