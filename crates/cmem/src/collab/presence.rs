//! Presence: a producer that turns connections joining and leaving workspaces into
//! `member_joined` / `member_left` events. A user counts once per workspace however many tabs
//! and transports they use: the first connection publishes `member_joined`, the last one to go
//! (closed, dropped, timed out as a poll client) publishes `member_left`.
//!
//! The registry reports each change on a channel; this task is the only owner of the counts,
//! so concurrent connects and disconnects cannot race each other.
//!
//! **In a cluster** a user counts once across all nodes. Each node announces who is online on
//! it (each workspace and user once, with their transports) on the stream `<stream>_PRESENCE`
//! (one subject per node process, last message kept, in memory): at once when it changes, and
//! every [`HEARTBEAT`] regardless. Every node reads every announcement, its own included, in
//! the stream's order, and keeps the last of each node ([`Board`]) and from them the
//! cluster-wide count of nodes on which each user is in each workspace: a count going from 0
//! to 1 is a join, to 0 a leave.
//!
//! So every node computes the same joins and leaves from the same announcements, and every
//! node publishes them, each keyed by the announcement's position in the stream: the journal
//! stores each once ([`NewEvent::once_as`]). No node leads, so none has to be replaced when it
//! dies. A node silent for [`NODE_TIMEOUT`] (killed, cut off) is announced gone by the others,
//! on its own subject, and its users leave unless another node has them; a node that stops
//! cleanly says so itself. A node starting (or following again after NATS failed) reads the
//! last announcement of every node first, without publishing what they change: others have.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{consumer, stream};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use super::Collab;
use crate::envelope::{NewEvent, Scope};
use crate::hub::Hub;
use crate::hub::registry::PresenceChange;
use crate::teams::cluster::Link;

/// How often a node announces who is online on it even when nothing changed.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// How long a node may be silent before its users count as gone.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(10);

/// A user online in a workspace on one node, with the transports of their connections.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Entry {
    workspace: String,
    user: String,
    transports: Vec<String>,
}

/// What a node announces.
#[derive(Debug, Serialize, Deserialize)]
struct Announcement {
    /// This process (a restarted node is a new one).
    instance: String,
    node: String,
    /// The node is stopping: drop it now.
    #[serde(default)]
    bye: bool,
    online: Vec<Entry>,
}

struct NodeView {
    node: String,
    seen: Instant,
    online: Vec<Entry>,
}

/// Who is online on each node of a cluster, as last announced.
#[derive(Default)]
pub struct Board {
    nodes: HashMap<String, NodeView>,
    /// On how many nodes each (workspace, user) is online.
    union: HashMap<(String, String), usize>,
}

/// A join or a leave, cluster-wide.
#[derive(Debug, PartialEq)]
enum Transition {
    Joined(String, String),
    Left(String, String),
}

impl Board {
    /// Puts `online` in place of what node `instance` announced before (`None`: the node is
    /// gone); returns the cluster-wide joins and leaves this makes.
    fn replace(
        &mut self,
        instance: &str,
        view: Option<(String, Vec<Entry>)>,
        now: Instant,
    ) -> Vec<Transition> {
        let pairs = |online: &[Entry]| -> HashSet<(String, String)> {
            online
                .iter()
                .map(|e| (e.workspace.clone(), e.user.clone()))
                .collect()
        };
        let before = self
            .nodes
            .get(instance)
            .map(|v| pairs(&v.online))
            .unwrap_or_default();
        let after = view.as_ref().map(|v| pairs(&v.1)).unwrap_or_default();
        match view {
            Some((node, online)) => {
                self.nodes.insert(
                    instance.to_string(),
                    NodeView {
                        node,
                        seen: now,
                        online,
                    },
                );
            }
            None => {
                self.nodes.remove(instance);
            }
        }
        let mut out = Vec::new();
        let mut gone: Vec<_> = before.difference(&after).collect();
        let mut new: Vec<_> = after.difference(&before).collect();
        gone.sort();
        new.sort();
        for gone in gone {
            if let Some(n) = self.union.get_mut(gone) {
                *n -= 1;
                if *n == 0 {
                    self.union.remove(gone);
                    out.push(Transition::Left(gone.0.clone(), gone.1.clone()));
                }
            }
        }
        for new in new {
            let n = self.union.entry(new.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                out.push(Transition::Joined(new.0.clone(), new.1.clone()));
            }
        }
        out
    }

    /// Nodes silent for longer than [`NODE_TIMEOUT`].
    fn silent(&self, now: Instant) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, v)| now.duration_since(v.seen) > NODE_TIMEOUT)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The live nodes, by name.
    pub fn node_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.nodes.values().map(|v| v.node.clone()).collect();
        names.sort();
        names.dedup();
        names
    }
}

fn event(t: &Transition) -> NewEvent {
    let (kind, workspace, user) = kind(t);
    NewEvent::new(
        kind,
        Scope::Workspace(workspace.clone()),
        json!({"workspace": workspace, "user": user}),
    )
}

fn kind(t: &Transition) -> (&'static str, &String, &String) {
    match t {
        Transition::Joined(w, u) => ("member_joined", w, u),
        Transition::Left(w, u) => ("member_left", w, u),
    }
}

/// Runs until shutdown, publishing presence changes in the order they happened: on this
/// node alone, or across the cluster when `teams` is a cluster's.
pub async fn run(
    hub: Arc<Hub>,
    teams: Arc<Collab>,
    changes: UnboundedReceiver<PresenceChange>,
    node: String,
) {
    match teams.store().cluster_link() {
        Some(link) => run_cluster(hub, teams, changes, link, node).await,
        None => run_local(hub, changes).await,
    }
}

/// Counts a change; whether the (workspace, user) went from 0 to 1 or from 1 to 0.
fn count(
    counts: &mut HashMap<(String, String), usize>,
    change: PresenceChange,
) -> Option<Transition> {
    match change {
        PresenceChange::Joined { user, workspace } => {
            let n = counts.entry((workspace.clone(), user.clone())).or_insert(0);
            *n += 1;
            (*n == 1).then_some(Transition::Joined(workspace, user))
        }
        PresenceChange::Left { user, workspace } => {
            let key = (workspace, user);
            match counts.get_mut(&key) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    None
                }
                Some(_) => {
                    counts.remove(&key);
                    Some(Transition::Left(key.0, key.1))
                }
                None => None,
            }
        }
    }
}

async fn run_local(hub: Arc<Hub>, mut changes: UnboundedReceiver<PresenceChange>) {
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    loop {
        let change = tokio::select! {
            _ = hub.shutdown.cancelled() => return,
            c = changes.recv() => match c { Some(c) => c, None => return },
        };
        if let Some(t) = count(&mut counts, change)
            && let Err(e) = hub.publish(vec![event(&t)]).await
        {
            tracing::warn!(error = %e, "could not publish presence");
        }
    }
}

/// This node's entries: each (workspace, user) it counts, with their connections' transports.
fn entries(hub: &Hub, counts: &HashMap<(String, String), usize>) -> Vec<Entry> {
    let mut transports: HashMap<(String, String), Vec<String>> = HashMap::new();
    for c in hub.registry.all() {
        if let Some(u) = &c.user {
            for w in c.workspaces() {
                transports
                    .entry((w, u.clone()))
                    .or_default()
                    .push(c.transport().name().to_string());
            }
        }
    }
    let mut out: Vec<Entry> = counts
        .keys()
        .map(|k| Entry {
            workspace: k.0.clone(),
            user: k.1.clone(),
            transports: transports.remove(k).unwrap_or_default(),
        })
        .collect();
    out.sort_by(|a, b| (&a.workspace, &a.user).cmp(&(&b.workspace, &b.user)));
    out
}

/// The presence stream, made if missing.
async fn presence_stream(link: &Link, subjects: &str) -> Result<stream::Stream, String> {
    link.js
        .get_or_create_stream(stream::Config {
            name: format!("{}_PRESENCE", link.base),
            subjects: vec![format!("{subjects}.*")],
            max_messages_per_subject: 1,
            max_age: NODE_TIMEOUT * 6,
            storage: stream::StorageType::Memory,
            num_replicas: link.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())
}

/// Every node's last announcement, then each new one.
async fn follow(s: &stream::Stream, subjects: &str) -> Result<consumer::pull::Ordered, String> {
    s.create_consumer(consumer::pull::OrderedConfig {
        deliver_policy: consumer::DeliverPolicy::LastPerSubject,
        filter_subject: format!("{subjects}.*"),
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?
    .messages()
    .await
    .map_err(|e| e.to_string())
}

/// This process's name in the presence announcements: random, so that no two processes share
/// one (a node restarted, two nodes given the same name). Without randomness from the system
/// it is made of the node's name, the process id and the clock — still one per process — and
/// the log says so; it is never a constant that two nodes could both fall back to.
fn instance_id(node: &str, fill: impl FnOnce(&mut [u8]) -> Result<(), getrandom::Error>) -> String {
    let mut id = [0u8; 8];
    match fill(&mut id) {
        Ok(()) => crate::teams::store::hex(&id),
        Err(e) => {
            // the clock, and a count for two calls within one tick of a coarse clock
            static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
            let made = format!("{node}-{}-{nanos:x}-{n}", std::process::id());
            tracing::error!(error = %e, instance = %made, "no random numbers from the operating system; the presence instance is named from the node, the process and the clock");
            made
        }
    }
}

async fn run_cluster(
    hub: Arc<Hub>,
    teams: Arc<Collab>,
    mut changes: UnboundedReceiver<PresenceChange>,
    link: Link,
    node: String,
) {
    let me = instance_id(&node, getrandom::fill);
    let subjects = format!("{}_presence", link.base.to_lowercase());
    let say = |a: Announcement| {
        let js = link.js.clone();
        let subject = format!("{subjects}.{}", a.instance);
        async move {
            let payload = serde_json::to_vec(&a).map_err(|e| e.to_string())?;
            let ack = js
                .publish(subject, payload.into())
                .await
                .map_err(|e| e.to_string())?;
            tokio::time::timeout(Duration::from_secs(2), ack)
                .await
                .map_err(|_| "no acknowledgement".to_string())?
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    };
    // the stream and its consumer, made again whenever they fail
    let mut messages: Option<consumer::pull::Ordered> = None;
    let mut epoch = String::new();
    // reading the last announcement of every node: what they change was published already
    let mut live = false;
    let mut since = Instant::now();
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    let mut dirty = true;
    let mut last_said: Option<Instant> = None;
    let mut last_heard = Instant::now();
    let mut expiring: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry_at = Instant::now();
    let mut backoff = Duration::from_millis(250);
    loop {
        if messages.is_none() && Instant::now() >= retry_at {
            retry_at = Instant::now() + backoff;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            live = false;
            since = Instant::now();
            match presence_stream(&link, &subjects).await {
                Ok(s) => {
                    let info = s.cached_info();
                    epoch = format!(
                        "{:x}",
                        info.created.timestamp_nanos_opt().unwrap_or_default()
                    );
                    let empty = info.state.messages == 0;
                    match follow(&s, &subjects).await {
                        Ok(m) => {
                            messages = Some(m);
                            live = empty;
                            last_heard = Instant::now();
                            backoff = Duration::from_millis(250);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot follow the cluster's presence yet")
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot open the cluster's presence yet"),
            }
        }
        let mut transitions: Vec<(u64, Transition)> = Vec::new();
        let heard = async {
            match messages.as_mut() {
                Some(m) => m.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = hub.shutdown.cancelled() => {
                let bye = Announcement { instance: me.clone(), node, bye: true, online: Vec::new() };
                if let Err(e) = say(bye).await {
                    tracing::warn!(error = %e, "cannot tell the cluster this node stops");
                }
                return;
            }
            c = changes.recv() => {
                let Some(c) = c else { return };
                let _ = count(&mut counts, c);
                // take the whole burst before saying anything
                while let Ok(c) = changes.try_recv() {
                    let _ = count(&mut counts, c);
                }
                dirty = true;
            }
            m = heard => match m {
                Some(Ok(msg)) => {
                    last_heard = Instant::now();
                    let (seq, pending) = msg
                        .info()
                        .map(|i| (i.stream_sequence, i.pending))
                        .unwrap_or((0, 0));
                    match serde_json::from_slice::<Announcement>(&msg.payload) {
                        Ok(a) => {
                            expiring.remove(&a.instance);
                            let view = (!a.bye).then_some((a.node, a.online));
                            if let Ok(mut board) = teams.board.write() {
                                let made = board.replace(&a.instance, view, Instant::now());
                                if live {
                                    transitions.extend(made.into_iter().map(|t| (seq, t)));
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "an unreadable presence announcement; skipped"),
                    }
                    if pending == 0 {
                        live = true;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the cluster's presence consumer failed; following again");
                    messages = None;
                }
                None => messages = None,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                let silent = teams.board.read().map(|b| b.silent(now)).unwrap_or_default();
                for gone in silent {
                    if gone == me || expiring.get(&gone).is_some_and(|t| now.duration_since(*t) < HEARTBEAT * 2) {
                        continue;
                    }
                    tracing::info!(instance = %gone, "a cluster node fell silent; its users count as gone");
                    expiring.insert(gone.clone(), now);
                    let bye = Announcement { instance: gone, node: String::new(), bye: true, online: Vec::new() };
                    if let Err(e) = say(bye).await {
                        tracing::warn!(error = %e, "cannot announce a silent node gone");
                    }
                }
                if last_said.is_none_or(|t| now.duration_since(t) >= HEARTBEAT) {
                    dirty = true;
                }
                // every node announces every heartbeat, this one included: silence means the
                // consumer is broken
                if messages.is_some() && now.duration_since(last_heard) > HEARTBEAT * 3 {
                    tracing::warn!("the cluster's presence consumer fell silent; following again");
                    messages = None;
                }
                // last announcements that never all arrive: go on with what came
                if !live && now.duration_since(since) > Duration::from_secs(3) {
                    live = true;
                }
            }
        }
        if dirty && messages.is_some() {
            dirty = false;
            last_said = Some(Instant::now());
            let a = Announcement {
                instance: me.clone(),
                node: node.clone(),
                bye: false,
                online: entries(&hub, &counts),
            };
            if let Err(e) = say(a).await {
                tracing::warn!(error = %e, "cannot announce this node's presence");
            }
        }
        if !transitions.is_empty() {
            let events = transitions
                .iter()
                .map(|(seq, t)| {
                    let (k, w, u) = kind(t);
                    event(t).once_as(format!("presence/{epoch}/{seq}/{k}/{w}/{u}"))
                })
                .collect();
            if let Err(e) = hub.publish(events).await {
                tracing::warn!(error = %e, "could not publish presence");
            }
        }
    }
}

/// Who is online in a workspace: each user once, with their connections — on this node, or
/// on every node of a cluster.
pub fn online(hub: &Hub, teams: &Collab, workspace: &str) -> Vec<serde_json::Value> {
    let mut by_user: BTreeMap<String, Vec<String>> = Default::default();
    if teams.store().is_cluster() {
        if let Ok(board) = teams.board.read() {
            for v in board.nodes.values() {
                for e in v.online.iter().filter(|e| e.workspace == workspace) {
                    by_user
                        .entry(e.user.clone())
                        .or_default()
                        .extend(e.transports.iter().cloned());
                }
            }
        }
    } else {
        for c in hub.registry.all() {
            if let Some(u) = &c.user
                && c.workspaces().iter().any(|w| w == workspace)
            {
                by_user
                    .entry(u.clone())
                    .or_default()
                    .push(c.transport().name().to_string());
            }
        }
    }
    by_user
        .into_iter()
        .map(|(user, mut transports)| {
            transports.sort();
            json!({"user": user, "connections": transports.len(), "transports": transports})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_never_named_by_a_constant() {
        assert_eq!(
            instance_id("n1", |b| {
                b.fill(0xab);
                Ok(())
            }),
            "abababababababab"
        );
        let failing = |_: &mut [u8]| Err(getrandom::Error::UNSUPPORTED);
        let a = instance_id("n1", failing);
        let b = instance_id("n1", failing);
        assert!(a.starts_with(&format!("n1-{}-", std::process::id())), "{a}");
        assert_ne!(a, b, "two instances are told apart");
        assert_ne!(a, "0000000000000000");
    }

    fn entry(w: &str, u: &str) -> Entry {
        Entry {
            workspace: w.into(),
            user: u.into(),
            transports: vec!["websocket".into()],
        }
    }

    #[test]
    fn a_user_counts_once_across_nodes() {
        let mut b = Board::default();
        let now = Instant::now();
        let view = |online| Some(("n".to_string(), online));
        assert_eq!(
            b.replace("a", view(vec![entry("eng", "bob")]), now),
            [Transition::Joined("eng".into(), "bob".into())]
        );
        // bob on a second node: no second join
        assert_eq!(b.replace("b", view(vec![entry("eng", "bob")]), now), []);
        // a heartbeat with the same people changes nothing
        assert_eq!(b.replace("a", view(vec![entry("eng", "bob")]), now), []);
        // gone from one node: still online on the other
        assert_eq!(b.replace("a", view(vec![]), now), []);
        // the other node dies: bob leaves
        assert_eq!(
            b.replace("b", None, now),
            [Transition::Left("eng".into(), "bob".into())]
        );
        assert!(b.union.is_empty());
    }

    #[test]
    fn silent_nodes_are_found() {
        let mut b = Board::default();
        let t0 = Instant::now();
        b.replace("old", Some(("a".into(), vec![])), t0);
        b.replace("new", Some(("b".into(), vec![])), t0 + NODE_TIMEOUT);
        assert_eq!(b.node_names(), ["a", "b"]);
        let later = t0 + NODE_TIMEOUT + Duration::from_secs(1);
        assert_eq!(b.silent(later), ["old"]);
    }

    #[test]
    fn local_counts_see_first_and_last() {
        let mut c = HashMap::new();
        let j = || PresenceChange::Joined {
            user: "bob".into(),
            workspace: "eng".into(),
        };
        let l = || PresenceChange::Left {
            user: "bob".into(),
            workspace: "eng".into(),
        };
        assert!(matches!(count(&mut c, j()), Some(Transition::Joined(..))));
        assert_eq!(count(&mut c, j()), None);
        assert_eq!(count(&mut c, l()), None);
        assert!(matches!(count(&mut c, l()), Some(Transition::Left(..))));
        assert_eq!(count(&mut c, l()), None, "a leave never counted is ignored");
    }
}
