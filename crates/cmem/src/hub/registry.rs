//! The connection registry: one table of every client on every transport.
//!
//! It answers three questions: who is connected (diagnostics and presence), what may a
//! connection see (its scopes, used by fan-out and replay alike), and why did connections close
//! (counted by reason). Transport failures are kept in a bounded log with their OS error codes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::task::AtomicWaker;

use cmem_wire::Transport;
use serde::Serialize;

use crate::envelope::Scope;

fn transport_from_u8(v: u8) -> Transport {
    Transport::ALL
        .get(v as usize)
        .copied()
        .unwrap_or(Transport::Poll)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A number no earlier registration used, even before a restart (the journal outlives the
/// process): random, or the clock if the system has no randomness to give.
fn registration_serial() -> String {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) => format!("{:016x}", u64::from_le_bytes(b)),
        Err(_) => format!(
            "t{}",
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ),
    }
}

/// A user's connection starting or stopping to receive a workspace, for presence.
#[derive(Debug, Clone, PartialEq)]
pub enum PresenceChange {
    Joined { user: String, workspace: String },
    Left { user: String, workspace: String },
}

type PresenceTx = tokio::sync::mpsc::UnboundedSender<PresenceChange>;

/// One connected client.
pub struct Conn {
    pub id: String,
    /// Where events addressed to this connection alone go (`client:<address>`). The id for
    /// server-chosen ids; a poll `client_id` is the client's own choice and outlives its
    /// registration (another user may take it after `poll_client_ttl_s`), so a poll
    /// connection's address adds a serial number: no registration can read what was
    /// addressed to an earlier one.
    pub address: String,
    transport: AtomicU8,
    pub connected_at: String,
    last_activity_ms: AtomicI64,
    pub user_agent: String,
    pub remote_addr: String,
    /// The user behind the connection (`None` on an open server).
    pub user: Option<String>,
    /// The token it authenticated with, so revoking the token can close it.
    pub token_id: Option<String>,
    /// The user's id, whose scope (`user:<id>`) this connection sees.
    user_id: Option<String>,
    /// Sees every user's scope.
    admin: bool,
    workspaces: RwLock<Vec<String>>,
    /// Id of the last event handed to this connection.
    cursor: AtomicU64,
    close_reason: Mutex<Option<String>>,
    /// Wakes the connection's subscription when it waits: an event addressed to it alone was
    /// committed ([`Conn::nudge`]), it was closed, or the server shuts down. One atomic
    /// registration per wait, where a `Notify` and a cancellation token each took a mutex on
    /// every event delivered (they were 6 % of the server's CPU in the paced benchmark).
    /// This one belongs to the first subscription ([`Slot::Primary`]); a connection rarely
    /// has more than one at a time (a poll client's overlapping requests), and those wait on
    /// `extra`.
    signal: AtomicWaker,
    /// The wakers of further concurrent subscriptions ([`Slot::Extra`]).
    extra: Mutex<Vec<Arc<AtomicWaker>>>,
    /// [`PRIMARY_TAKEN`] and [`HAS_EXTRA`].
    slots: AtomicU8,
    /// Lowest id of an event addressed to this connection alone that its subscription has not
    /// read yet (`u64::MAX`: none). Set before the events after it reach the shared channel,
    /// so a subscription that checks it before delivering a live event never passes over it.
    direct_from: AtomicU64,
    /// Where workspace joins and leaves are reported (connections with a user only).
    presence: Option<PresenceTx>,
    /// A poll request of this client is held open, waiting for an event (diagnostics, and
    /// what tests wait for instead of sleeping).
    waiting: std::sync::atomic::AtomicBool,
    /// [`CLOSING`] ([`Conn::close`] was called) and [`SHUT`] (the server shuts down). The
    /// subscription checks them before each event it hands out, and when it would wait.
    flags: AtomicU8,
}

/// A subscription holds [`Conn`]'s own waker.
const PRIMARY_TAKEN: u8 = 1;
/// `extra` is not empty.
const HAS_EXTRA: u8 = 2;

/// Which waker of its connection a subscription waits on ([`Conn::claim_slot`]); given back
/// with [`Conn::release_slot`].
#[derive(Debug)]
pub enum Slot {
    Primary,
    Extra(Arc<AtomicWaker>),
}

/// [`Conn::close`] was called.
const CLOSING: u8 = 1;
/// The server shuts down ([`Registry::shut_down`]).
const SHUT: u8 = 2;

impl Conn {
    pub fn transport(&self) -> Transport {
        transport_from_u8(self.transport.load(Ordering::Relaxed))
    }

    /// The transport changed (Socket.IO upgrades from long-polling to WebSocket).
    pub fn set_transport(&self, t: Transport) {
        self.transport.store(t as u8, Ordering::Relaxed);
    }

    /// A poll request starts or stops waiting for an event.
    pub fn set_waiting(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::Relaxed);
    }

    pub fn touch(&self) {
        self.last_activity_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn last_activity_ms(&self) -> i64 {
        self.last_activity_ms.load(Ordering::Relaxed)
    }

    pub fn set_cursor(&self, id: u64) {
        self.cursor.store(id, Ordering::Relaxed);
    }

    pub fn cursor(&self) -> u64 {
        self.cursor.load(Ordering::Relaxed)
    }

    pub fn workspaces(&self) -> Vec<String> {
        self.workspaces
            .read()
            .map(|w| w.clone())
            .unwrap_or_default()
    }

    /// Starts receiving a workspace's events (live; what came before is history to fetch).
    /// Returns false if it was already joined.
    pub fn join(&self, workspace: &str) -> bool {
        let joined = match self.workspaces.write() {
            Ok(mut ws) if !ws.iter().any(|w| w == workspace) => {
                ws.push(workspace.to_string());
                true
            }
            _ => false,
        };
        if joined {
            self.report(workspace, true);
        }
        joined
    }

    fn report(&self, workspace: &str, joined: bool) {
        if let (Some(tx), Some(user)) = (&self.presence, &self.user) {
            let (user, workspace) = (user.clone(), workspace.to_string());
            let _ = tx.send(if joined {
                PresenceChange::Joined { user, workspace }
            } else {
                PresenceChange::Left { user, workspace }
            });
        }
    }

    /// Stops receiving a workspace's events. Returns false if it was not joined.
    pub fn leave(&self, workspace: &str) -> bool {
        let left = match self.workspaces.write() {
            Ok(mut ws) => {
                let before = ws.len();
                ws.retain(|w| w != workspace);
                ws.len() != before
            }
            Err(_) => false,
        };
        if left {
            self.report(workspace, false);
        }
        left
    }

    /// The id the client knows itself by: the registry id, but for a poll client of a user,
    /// whose registry id is `<user id>:<client_id>`, the `client_id` it chose.
    pub fn client_id(&self) -> &str {
        match &self.user_id {
            Some(uid) if self.transport() == Transport::Poll => self
                .id
                .strip_prefix(uid.as_str())
                .and_then(|rest| rest.strip_prefix(':'))
                .unwrap_or(&self.id),
            _ => &self.id,
        }
    }

    /// Whether this connection may see an event of `scope`.
    pub fn can_see(&self, scope: &Scope) -> bool {
        match scope {
            Scope::Global => true,
            Scope::Client(c) => *c == self.address,
            Scope::User(u) => self.admin || self.user_id.as_ref() == Some(u),
            Scope::Workspace(w) => self
                .workspaces
                .read()
                .map(|ws| ws.iter().any(|x| x == w))
                .unwrap_or(false),
        }
    }

    /// The scopes as stored in the journal, for replay queries.
    pub fn scope_strings(&self) -> Vec<String> {
        let mut v = vec!["global".to_string(), format!("client:{}", self.address)];
        if self.admin {
            v.push(crate::envelope::EVERY_USER.to_string());
        } else if let Some(u) = &self.user_id {
            v.push(format!("user:{u}"));
        }
        v.extend(
            self.workspaces()
                .into_iter()
                .map(|w| format!("workspace:{w}")),
        );
        v
    }

    /// Tells the connection that event `id`, addressed to it alone, is in the journal. A nudge
    /// given while nobody waits is kept (in `direct_from`) for the next wait.
    pub fn nudge(&self, id: u64) {
        self.direct_from.fetch_min(id, Ordering::SeqCst);
        self.wake_all();
    }

    /// A waker for one subscription: the connection's own if no other subscription holds it
    /// (no allocation: the common case), else a new one of its own.
    pub fn claim_slot(&self) -> Slot {
        if self.slots.fetch_or(PRIMARY_TAKEN, Ordering::AcqRel) & PRIMARY_TAKEN == 0 {
            return Slot::Primary;
        }
        let w = Arc::new(AtomicWaker::new());
        let mut extra = self.extra.lock().unwrap_or_else(|p| p.into_inner());
        extra.push(w.clone());
        self.slots.fetch_or(HAS_EXTRA, Ordering::AcqRel);
        Slot::Extra(w)
    }

    /// Gives back what [`Conn::claim_slot`] gave (the subscription is dropped).
    pub fn release_slot(&self, slot: &Slot) {
        match slot {
            Slot::Primary => {
                self.slots.fetch_and(!PRIMARY_TAKEN, Ordering::AcqRel);
            }
            Slot::Extra(w) => {
                let mut extra = self.extra.lock().unwrap_or_else(|p| p.into_inner());
                extra.retain(|x| !Arc::ptr_eq(x, w));
                if extra.is_empty() {
                    self.slots.fetch_and(!HAS_EXTRA, Ordering::AcqRel);
                    *extra = Vec::new();
                }
            }
        }
    }

    /// Wakes every subscription of this connection that waits.
    fn wake_all(&self) {
        self.signal.wake();
        if self.slots.load(Ordering::Acquire) & HAS_EXTRA != 0 {
            let extra = self.extra.lock().unwrap_or_else(|p| p.into_inner());
            for w in extra.iter() {
                w.wake();
            }
        }
    }

    /// Whether an event addressed to this connection alone was committed and not read yet.
    pub fn has_direct(&self) -> bool {
        self.direct_from.load(Ordering::SeqCst) != u64::MAX
    }

    /// Whether an id below `id` was given to [`Conn::nudge`] and not taken yet.
    pub fn has_direct_before(&self, id: u64) -> bool {
        self.direct_from.load(Ordering::SeqCst) < id
    }

    /// The lowest id given to [`Conn::nudge`] since the last call, if any.
    pub fn take_direct(&self) -> Option<u64> {
        // a load first: the common case (nothing addressed to it) writes nothing, so the
        // delivery path does not take the cache line exclusively for every event
        if self.direct_from.load(Ordering::SeqCst) == u64::MAX {
            return None;
        }
        Some(self.direct_from.swap(u64::MAX, Ordering::SeqCst)).filter(|id| *id != u64::MAX)
    }

    /// Ready when something needs the subscription's attention: an event addressed to this
    /// connection alone is not read yet ([`Conn::has_direct`]), the connection was closed, or
    /// the server shuts down. Otherwise registers the task to be woken when one of these
    /// happens. Stays ready until the cause is dealt with: the subscription reads the direct
    /// event, or ends.
    pub fn poll_signal(&self, slot: &Slot, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.signalled() {
            return std::task::Poll::Ready(());
        }
        match slot {
            Slot::Primary => self.signal.register(cx.waker()),
            Slot::Extra(w) => w.register(cx.waker()),
        }
        // a nudge or close between the first look and the registration woke nobody
        if self.signalled() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }

    fn signalled(&self) -> bool {
        self.flags.load(Ordering::Acquire) != 0 || self.has_direct()
    }

    fn raise(&self, flag: u8) {
        self.flags.fetch_or(flag, Ordering::AcqRel);
        self.wake_all();
    }

    /// Asks the transport to close this connection, recording why.
    pub fn close(&self, reason: &str) {
        if let Ok(mut r) = self.close_reason.lock()
            && r.is_none()
        {
            *r = Some(reason.to_string());
        }
        self.raise(CLOSING);
    }

    /// Whether [`Conn::close`] was called (a shutdown is [`Conn::is_shut`]).
    pub fn is_closing(&self) -> bool {
        self.flags.load(Ordering::Acquire) & CLOSING != 0
    }

    /// Whether the server shuts down.
    pub fn is_shut(&self) -> bool {
        self.flags.load(Ordering::Acquire) & SHUT != 0
    }

    /// The reason given to [`Conn::close`], if any.
    pub fn close_reason(&self) -> Option<String> {
        self.close_reason.lock().ok().and_then(|r| r.clone())
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("transport", &self.transport())
            .field("cursor", &self.cursor())
            .finish_non_exhaustive()
    }
}

/// What a transport knows about a new client.
#[derive(Debug, Clone, Default)]
pub struct ConnMeta {
    pub user_agent: String,
    pub remote_addr: String,
    pub workspaces: Vec<String>,
    pub user: Option<String>,
    pub token_id: Option<String>,
    /// The user's id: the connection sees the user's own scope (`user:<id>`).
    pub user_id: Option<String>,
    /// An admin sees every user's scope.
    pub admin: bool,
}

/// A transport failure, as kept for `GET /api/websocket/errors`.
#[derive(Debug, Clone, Serialize)]
pub struct TransportErrorRecord {
    pub ts: String,
    pub transport: String,
    pub connection_id: Option<String>,
    pub kind: String,
    pub os_code: Option<i32>,
    /// The OS code's name (`WSAECONNRESET`, `ECONNRESET`), when there is a code.
    pub os_name: Option<&'static str>,
    /// `connection_reset`, `timed_out`… from the OS code; the kind for errors without one.
    pub class: String,
    /// Why this usually happens, in plain words.
    pub cause: Option<&'static str>,
    /// What to do about it.
    pub fix: Option<&'static str>,
    pub message: String,
    pub platform: &'static str,
}

/// The row shown by diagnostics.
#[derive(Debug, Clone, Serialize)]
pub struct ConnView {
    pub id: String,
    pub transport: Transport,
    pub connected_at: String,
    pub last_activity: String,
    pub user_agent: String,
    pub remote_addr: String,
    pub user: Option<String>,
    pub scopes: Vec<String>,
    pub cursor: u64,
    /// A poll request of this client is held open, waiting for an event.
    pub waiting: bool,
}

const MAX_ERRORS: usize = 200;

/// All connections, close counts and the error log.
#[derive(Debug)]
pub struct Registry {
    /// [`Registry::shut_down`] was called: a connection registered after it is shut at once.
    shut: std::sync::atomic::AtomicBool,
    conns: RwLock<HashMap<String, Arc<Conn>>>,
    closes: Mutex<BTreeMap<String, u64>>,
    errors: Mutex<VecDeque<TransportErrorRecord>>,
    errors_total: AtomicU64,
    /// Errors counted by class since start (not cleared with the log).
    errors_by_class: Mutex<BTreeMap<String, u64>>,
    opened_total: AtomicU64,
    presence_tx: PresenceTx,
    presence_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<PresenceChange>>>,
    /// Open TCP sockets per source address, below every transport (the accept loop counts
    /// them; `/metrics` shows them).
    pub tcp: crate::net::limit::PerAddress,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        let (presence_tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Registry {
            shut: std::sync::atomic::AtomicBool::new(false),
            conns: RwLock::default(),
            closes: Mutex::default(),
            errors: Mutex::default(),
            errors_total: AtomicU64::default(),
            errors_by_class: Mutex::default(),
            opened_total: AtomicU64::default(),
            presence_tx,
            presence_rx: Mutex::new(Some(rx)),
            tcp: Default::default(),
        }
    }

    /// The presence changes, for the one task that turns them into events.
    pub fn take_presence_changes(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<PresenceChange>> {
        self.presence_rx.lock().ok()?.take()
    }

    /// Adds a connection. Returns `None` if the id is taken (a transport bug or a client reusing
    /// a poll `client_id` concurrently).
    pub fn register(&self, id: String, transport: Transport, meta: ConnMeta) -> Option<Arc<Conn>> {
        let user_present = meta.user.is_some();
        let address = match transport {
            Transport::Poll => format!("{id}.{}", registration_serial()),
            _ => id.clone(),
        };
        let conn = Arc::new(Conn {
            id: id.clone(),
            address,
            transport: AtomicU8::new(transport as u8),
            connected_at: crate::clock::now_rfc3339(),
            last_activity_ms: AtomicI64::new(now_ms()),
            waiting: std::sync::atomic::AtomicBool::new(false),
            flags: AtomicU8::new(0),
            user_agent: meta.user_agent,
            remote_addr: meta.remote_addr,
            user: meta.user,
            token_id: meta.token_id,
            user_id: meta.user_id,
            admin: meta.admin,
            workspaces: RwLock::new(meta.workspaces),
            cursor: AtomicU64::new(0),
            close_reason: Mutex::new(None),
            signal: AtomicWaker::new(),
            extra: Mutex::new(Vec::new()),
            slots: AtomicU8::new(0),
            direct_from: AtomicU64::new(u64::MAX),
            presence: user_present.then(|| self.presence_tx.clone()),
        });
        {
            let mut map = self.conns.write().ok()?;
            if map.contains_key(&id) {
                return None;
            }
            // Under the lock that `shut_down` reads the map with: either it sees this
            // connection, or its flag was set before this look.
            if self.shut.load(Ordering::Acquire) {
                conn.raise(SHUT);
            }
            map.insert(id, conn.clone());
        }
        self.opened_total.fetch_add(1, Ordering::Relaxed);
        for w in conn.workspaces() {
            conn.report(&w, true);
        }
        Some(conn)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Conn>> {
        self.conns.read().ok()?.get(id).cloned()
    }

    /// The connection events `client:<address>` are for, if it is still registered.
    pub fn by_address(&self, address: &str) -> Option<Arc<Conn>> {
        let map = self.conns.read().ok()?;
        let id = match map.get(address) {
            Some(c) if c.address == address => return Some(c.clone()),
            _ => address.rsplit_once('.')?.0,
        };
        map.get(id).filter(|c| c.address == address).cloned()
    }

    /// The transport of `c` is gone: records `reason` (unless one was given first, say by a
    /// revocation) and removes the connection, counted under the reason it holds.
    pub fn ended(&self, c: &Conn, reason: &str) {
        c.close(reason);
        let why = c.close_reason().unwrap_or_else(|| reason.to_string());
        // only this registration: a recovered Socket.IO session registers again under the
        // same id, possibly before the transport it replaced is seen to end
        let removed = self.conns.write().ok().and_then(|mut m| {
            if m.get(&c.id).is_some_and(|x| std::ptr::eq(x.as_ref(), c)) {
                m.remove(&c.id)
            } else {
                None
            }
        });
        if let Some(conn) = removed {
            self.count_removed(conn, &why);
        }
    }

    /// Removes a connection and counts the reason it closed.
    pub fn remove(&self, id: &str, reason: &str) {
        let removed = self.conns.write().ok().and_then(|mut m| m.remove(id));
        if let Some(conn) = removed {
            self.count_removed(conn, reason);
        }
    }

    fn count_removed(&self, conn: Arc<Conn>, reason: &str) {
        if let Ok(mut c) = self.closes.lock() {
            *c.entry(reason.to_string()).or_insert(0) += 1;
        }
        // taken, so a late `leave` on this connection reports nothing twice
        let workspaces = conn
            .workspaces
            .write()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        for w in workspaces {
            conn.report(&w, false);
        }
    }

    /// Closes every connection opened with a token (it was revoked).
    pub fn close_token(&self, token_id: &str, reason: &str) -> usize {
        let hit: Vec<Arc<Conn>> = self
            .all()
            .into_iter()
            .filter(|c| c.token_id.as_deref() == Some(token_id))
            .collect();
        for c in &hit {
            self.close(c, reason);
        }
        hit.len()
    }

    /// Tells every connection that the server shuts down, and every one registered later:
    /// their subscriptions end once they have handed out what is ready.
    pub fn shut_down(&self) {
        self.shut.store(true, Ordering::Release);
        if let Ok(map) = self.conns.read() {
            for c in map.values() {
                c.raise(SHUT);
            }
        }
    }

    /// Closes a connection for the server's reasons. Streams end when their transport sees
    /// the close; a poll client has no stream, so its entry goes now.
    pub fn close(&self, c: &Conn, reason: &str) {
        c.close(reason);
        if c.transport() == Transport::Poll {
            self.remove(&c.id, reason);
        }
    }

    /// Every connection of one user.
    pub fn of_user(&self, user: &str) -> Vec<Arc<Conn>> {
        self.all()
            .into_iter()
            .filter(|c| c.user.as_deref() == Some(user))
            .collect()
    }

    pub fn all(&self) -> Vec<Arc<Conn>> {
        self.conns
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.conns.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn opened_total(&self) -> u64 {
        self.opened_total.load(Ordering::Relaxed)
    }

    /// Connection counts per transport (every transport listed, zeros included).
    pub fn by_transport(&self) -> BTreeMap<&'static str, usize> {
        let mut out: BTreeMap<&'static str, usize> =
            Transport::ALL.iter().map(|t| (t.name(), 0)).collect();
        for c in self.all() {
            *out.entry(c.transport().name()).or_insert(0) += 1;
        }
        out
    }

    pub fn closes_by_reason(&self) -> BTreeMap<String, u64> {
        self.closes.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn view(&self) -> Vec<ConnView> {
        let mut v: Vec<ConnView> = self
            .all()
            .into_iter()
            .map(|c| ConnView {
                id: c.id.clone(),
                transport: c.transport(),
                connected_at: c.connected_at.clone(),
                last_activity: chrono::DateTime::from_timestamp_millis(c.last_activity_ms())
                    .map(crate::clock::rfc3339)
                    .unwrap_or_default(),
                user_agent: c.user_agent.clone(),
                remote_addr: c.remote_addr.clone(),
                user: c.user.clone(),
                scopes: c.scope_strings(),
                cursor: c.cursor(),
                waiting: c.waiting.load(Ordering::Relaxed),
            })
            .collect();
        v.sort_by(|a, b| a.connected_at.cmp(&b.connected_at));
        v
    }

    /// Records a transport failure (bounded log, oldest dropped first).
    pub fn record_error(
        &self,
        transport: &str,
        connection_id: Option<&str>,
        kind: &str,
        os_code: Option<i32>,
        message: impl Into<String>,
    ) {
        self.errors_total.fetch_add(1, Ordering::Relaxed);
        let diagnosis = os_code.map(crate::net::classify::classify_code);
        let class = diagnosis
            .as_ref()
            .map(|d| d.class.name().to_string())
            .unwrap_or_else(|| kind.to_string());
        if let Ok(mut by) = self.errors_by_class.lock() {
            *by.entry(class.clone()).or_insert(0) += 1;
        }
        let rec = TransportErrorRecord {
            ts: crate::clock::now_rfc3339(),
            transport: transport.to_string(),
            connection_id: connection_id.map(str::to_string),
            kind: kind.to_string(),
            os_code,
            os_name: diagnosis.as_ref().map(|d| d.name).filter(|n| !n.is_empty()),
            class,
            cause: diagnosis.as_ref().map(|d| d.cause),
            fix: diagnosis.as_ref().map(|d| d.fix),
            message: message.into(),
            platform: std::env::consts::OS,
        };
        if let Ok(mut e) = self.errors.lock() {
            if e.len() >= MAX_ERRORS {
                e.pop_front();
            }
            e.push_back(rec);
        }
    }

    pub fn errors(&self) -> Vec<TransportErrorRecord> {
        self.errors
            .lock()
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Errors by class since start.
    pub fn errors_by_class(&self) -> BTreeMap<String, u64> {
        self.errors_by_class
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    pub fn errors_total(&self) -> u64 {
        self.errors_total.load(Ordering::Relaxed)
    }

    /// Empties the error log; returns how many records were dropped.
    pub fn clear_errors(&self) -> usize {
        self.errors
            .lock()
            .map(|mut e| {
                let n = e.len();
                e.clear();
                n
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(token: Option<&str>, workspaces: &[&str]) -> ConnMeta {
        ConnMeta {
            user_agent: String::new(),
            remote_addr: String::new(),
            workspaces: workspaces.iter().map(|w| w.to_string()).collect(),
            user: token.map(|_| "ann".to_string()),
            token_id: token.map(str::to_string),
            user_id: token.map(|_| "u1".to_string()),
            admin: false,
        }
    }

    #[test]
    fn ids_are_unique_and_poll_addresses_are_new_for_each_registration() {
        let r = Registry::new();
        let a = r
            .register("a".into(), Transport::Sse, meta(None, &[]))
            .unwrap();
        assert!(
            r.register("a".into(), Transport::Sse, meta(None, &[]))
                .is_none()
        );
        assert_eq!(a.address, "a");
        let p1 = r
            .register("p".into(), Transport::Poll, meta(None, &[]))
            .unwrap();
        r.remove("p", "poll_timeout");
        let p2 = r
            .register("p".into(), Transport::Poll, meta(None, &[]))
            .unwrap();
        assert_ne!(
            p1.address, p2.address,
            "a returning poll id is a new connection"
        );
        assert!(r.by_address(&p1.address).is_none());
        assert_eq!(r.by_address(&p2.address).unwrap().id, "p");
    }

    #[test]
    fn the_first_close_reason_is_the_one_counted() {
        let r = Registry::new();
        let a = r
            .register("a".into(), Transport::Websocket, meta(Some("t1"), &["eng"]))
            .unwrap();
        let b = r
            .register("b".into(), Transport::Sse, meta(Some("t1"), &[]))
            .unwrap();
        let c = r
            .register("c".into(), Transport::Poll, meta(Some("t1"), &[]))
            .unwrap();
        let d = r
            .register("d".into(), Transport::Sse, meta(Some("t2"), &[]))
            .unwrap();
        assert_eq!(r.close_token("t1", "token_revoked"), 3);
        assert!(a.is_closing() && b.is_closing());
        assert!(!d.is_closing());
        // a poll client has no stream to notice: it leaves at once
        assert!(r.get("c").is_none());
        assert_eq!(c.close_reason().as_deref(), Some("token_revoked"));
        // the transport then ends with its own reason; the revocation is what is counted
        r.ended(&a, "transport_close");
        r.ended(&b, "client_gone");
        r.ended(&d, "client_gone");
        let closes = r.closes_by_reason();
        assert_eq!(closes.get("token_revoked"), Some(&3));
        assert_eq!(closes.get("client_gone"), Some(&1));
        assert!(r.is_empty());
        // leaving after removal reports nothing (the workspaces went with the connection)
        assert!(!a.leave("eng"));
        // shutdown reaches every connection, and those registered after it
        let e = r
            .register("e".into(), Transport::Sse, meta(None, &[]))
            .unwrap();
        r.shut_down();
        assert!(e.is_shut() && !e.is_closing());
        let f = r
            .register("f".into(), Transport::Sse, meta(None, &[]))
            .unwrap();
        assert!(f.is_shut());
    }

    #[test]
    fn nudges_remember_the_lowest_direct_id_until_taken() {
        let r = Registry::new();
        let a = r
            .register("a".into(), Transport::Sse, meta(None, &[]))
            .unwrap();
        assert!(a.take_direct().is_none());
        a.nudge(9);
        a.nudge(7);
        assert!(a.has_direct_before(8) && !a.has_direct_before(7));
        assert_eq!(a.take_direct(), Some(7));
        assert!(a.take_direct().is_none());
    }
}
