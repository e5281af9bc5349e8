//! The newest committed events an engine keeps in memory, so that replays and the reads of
//! live connections rarely reach the store.
//!
//! Most events are for many readers and are kept whole. An event addressed to one client (its
//! greeting, a `resync`, an answer) is read by that client alone, within moments of its commit;
//! kept whole it would hold about 600 bytes per connection for as long as the window holds it
//! (the newest 16,384 events: every greeting, for a server with fewer connections than that).
//! So once [`WHOLE`] newer events have followed it, only its id and a hash of its address are
//! kept. Every other reader passes over it as before (it was never theirs to see); the reader
//! it may be addressed to is sent to the store, which has it.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::{RECENT_CAPACITY, ReadQuery};
use crate::envelope::{Event, Scope};

/// How many of the newest events are always kept whole.
pub const WHOLE: usize = 1024;

#[derive(Debug, Clone)]
enum Kept {
    Whole(Arc<Event>),
    /// An event addressed to one client, older than the newest [`WHOLE`].
    Addressed {
        id: u64,
        to: u64,
    },
}

impl Kept {
    fn id(&self) -> u64 {
        match self {
            Kept::Whole(e) => e.id,
            Kept::Addressed { id, .. } => *id,
        }
    }
}

fn address_hash(address: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    address.hash(&mut h);
    h.finish()
}

/// Contiguous in id, oldest first, at most [`RECENT_CAPACITY`] events.
#[derive(Debug, Default)]
pub struct Window {
    events: VecDeque<Kept>,
}

impl Window {
    pub fn new() -> Self {
        Window {
            events: VecDeque::with_capacity(1024),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.events.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn front_id(&self) -> Option<u64> {
        self.events.front().map(Kept::id)
    }

    pub fn back_id(&self) -> Option<u64> {
        self.events.back().map(Kept::id)
    }

    /// Adds the next committed event (the caller keeps ids contiguous), dropping the oldest
    /// beyond the capacity, and keeps only the id and address of the client event that now
    /// falls out of the newest [`WHOLE`].
    pub fn push(&mut self, e: Arc<Event>) {
        if self.events.len() >= RECENT_CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back(Kept::Whole(e));
        if let Some(i) = self.events.len().checked_sub(WHOLE + 1)
            && let Some(slot) = self.events.get_mut(i)
            && let Kept::Whole(e) = slot
            && let Scope::Client(address) = &e.scope
        {
            *slot = Kept::Addressed {
                id: e.id,
                to: address_hash(address),
            };
        }
    }

    pub fn extend(&mut self, events: impl IntoIterator<Item = Arc<Event>>) {
        for e in events {
            self.push(e);
        }
    }

    /// Drops the events below `oldest` (retention).
    pub fn drop_before(&mut self, oldest: u64) {
        while self.events.front().is_some_and(|e| e.id() < oldest) {
            self.events.pop_front();
        }
    }

    pub fn clear(&mut self) -> usize {
        let n = self.events.len();
        self.events.clear();
        self.events.shrink_to_fit();
        n
    }

    /// `q` from memory, if the window covers everything after `q.after` and holds whole every
    /// event the reader may see.
    pub fn read(&self, q: &ReadQuery) -> Option<Vec<Arc<Event>>> {
        let front = self.front_id()?;
        if q.after + 1 < front {
            return None;
        }
        let start = ((q.after + 1 - front) as usize).min(self.events.len());
        // the reader's own addresses, hashed once
        let mine: Option<Vec<u64>> = q.scopes.as_ref().map(|list| {
            list.iter()
                .filter_map(|s| s.strip_prefix("client:"))
                .map(address_hash)
                .collect()
        });
        let limit = q.limit.max(1);
        let mut out = Vec::new();
        for kept in self.events.range(start..) {
            if kept.id() > q.upto || out.len() >= limit {
                break;
            }
            match kept {
                Kept::Whole(e) => {
                    let visible = match &q.scopes {
                        None => true,
                        Some(list) => list.iter().any(|s| e.scope.is(s)),
                    };
                    if visible {
                        out.push(e.clone());
                    }
                }
                // perhaps this reader's: the store has it whole
                Kept::Addressed { to, .. } => match &mine {
                    None => return None,
                    Some(mine) if mine.contains(to) => return None,
                    Some(_) => {}
                },
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn ev(id: u64, scope: Scope) -> Arc<Event> {
        Arc::new(Event {
            id,
            kind: "k".into(),
            scope,
            body: RawValue::from_string(format!("{{\"id\":{id}}}")).unwrap(),
        })
    }

    fn q(after: u64, scopes: &[&str]) -> ReadQuery {
        ReadQuery {
            after,
            upto: u64::MAX,
            scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
            limit: usize::MAX,
        }
    }

    fn ids(v: Option<Vec<Arc<Event>>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.id).collect())
    }

    #[test]
    fn an_old_client_event_is_passed_over_by_others_and_sends_its_owner_to_the_store() {
        let mut w = Window::new();
        w.push(ev(1, Scope::Client("a".into())));
        w.push(ev(2, Scope::Global));
        w.push(ev(3, Scope::Client("b".into())));
        // while new, it is read from memory by its owner
        assert_eq!(
            ids(w.read(&q(0, &["global", "client:a"]))),
            Some(vec![1, 2])
        );
        for id in 4..3 + WHOLE as u64 {
            w.push(ev(id, Scope::Global));
        }
        // 1 is now older than the newest WHOLE, 3 is not
        let everyone: Vec<u64> = (2..3 + WHOLE as u64).filter(|&i| i != 3).collect();
        assert_eq!(ids(w.read(&q(0, &["global", "client:c"]))), Some(everyone));
        assert_eq!(ids(w.read(&q(0, &["global", "client:a"]))), None);
        assert_eq!(
            ids(w.read(&q(1, &["global", "client:a"]))).map(|v| v.len()),
            Some(WHOLE),
            "after its own event, its owner reads from memory again"
        );
        assert_eq!(
            ids(w.read(&q(2, &["client:b"]))),
            Some(vec![3]),
            "3 is still whole"
        );
        // a reader of every scope cannot pass over it
        let all = ReadQuery {
            scopes: None,
            ..q(0, &[])
        };
        assert_eq!(ids(w.read(&all)), None);
    }

    #[test]
    fn the_window_is_bounded_contiguous_and_honours_limits() {
        let mut w = Window::new();
        w.extend((1..=RECENT_CAPACITY as u64 + 10).map(|i| ev(i, Scope::Global)));
        assert_eq!(w.len(), RECENT_CAPACITY);
        assert_eq!(w.front_id(), Some(11));
        assert_eq!(w.back_id(), Some(RECENT_CAPACITY as u64 + 10));
        assert_eq!(
            ids(w.read(&q(5, &["global"]))),
            None,
            "older than the window"
        );
        let page = ReadQuery {
            limit: 3,
            upto: 20,
            ..q(10, &["global"])
        };
        assert_eq!(ids(w.read(&page)), Some(vec![11, 12, 13]));
        let upto = ReadQuery {
            upto: 12,
            ..q(10, &["global"])
        };
        assert_eq!(ids(w.read(&upto)), Some(vec![11, 12]));
        w.drop_before(100);
        assert_eq!(w.front_id(), Some(100));
        assert_eq!(w.clear(), RECENT_CAPACITY - 89);
        assert!(w.is_empty());
        assert_eq!(ids(w.read(&q(0, &["global"]))), None);
    }
}
