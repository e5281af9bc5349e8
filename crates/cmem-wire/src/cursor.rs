//! A position in a journal: the last event a client received, as `<epoch>:<id>` or a bare id.
//! The server hands cursors out (SSE `id:`, poll `next_cursor`, Socket.IO offsets, close
//! messages) and reads them back from every transport; the clients keep one across transports.

use std::fmt;

/// Why text is not a cursor (the message says what one looks like).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursor `{0}` is not an event id (a whole number, optionally prefixed by `<epoch>:`)")]
pub struct CursorError(pub String);

/// The last event seen: its id, and the epoch of the journal it belongs to (`None` for a bare
/// id, which cannot tell a new journal from the old one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor {
    pub epoch: Option<String>,
    pub id: u64,
}

impl Cursor {
    /// A cursor as the server writes it: `<epoch>:<id>`.
    pub fn format(epoch: &str, id: u64) -> String {
        format!("{epoch}:{id}")
    }

    /// Parses `N` or `<epoch>:N` (surrounding blanks ignored). The epoch may itself contain
    /// `:`; the id is what follows the last one.
    pub fn parse(s: &str) -> Result<Cursor, CursorError> {
        let t = s.trim();
        let bad = || CursorError(t.chars().take(100).collect());
        let (epoch, id) = match t.rsplit_once(':') {
            Some(("", _)) => return Err(bad()),
            Some((e, n)) => (Some(e.to_string()), n),
            None => (None, t),
        };
        // `u64::from_str` takes a leading `+`; a cursor is digits only
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let id = id.parse::<u64>().map_err(|_| bad())?;
        Ok(Cursor { epoch, id })
    }

    /// Whether the event `(epoch, id)` comes after this cursor: a later id in the same
    /// journal, or any event of another journal (a new epoch starts over).
    pub fn precedes(&self, epoch: &str, id: u64) -> bool {
        match &self.epoch {
            Some(e) if e != epoch => true,
            _ => id > self.id,
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.epoch {
            Some(e) => write!(f, "{e}:{}", self.id),
            None => write!(f, "{}", self.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_and_write() {
        let c = |epoch: Option<&str>, id| Cursor {
            epoch: epoch.map(str::to_string),
            id,
        };
        assert_eq!(Cursor::parse("42").unwrap(), c(None, 42));
        assert_eq!(Cursor::parse(" e1:42 ").unwrap(), c(Some("e1"), 42));
        assert_eq!(Cursor::parse("a:b:7").unwrap(), c(Some("a:b"), 7));
        assert_eq!(
            Cursor::parse(&Cursor::format("e1", 42)).unwrap(),
            c(Some("e1"), 42)
        );
        assert_eq!(c(Some("e1"), 42).to_string(), "e1:42");
        assert_eq!(c(None, 42).to_string(), "42");
        for bad in [
            "",
            "abc",
            "-1",
            "+1",
            ":5",
            "e1:",
            "e1:x",
            "99999999999999999999",
        ] {
            assert!(Cursor::parse(bad).is_err(), "{bad:?}");
        }
        let e = Cursor::parse("nope").unwrap_err().to_string();
        assert!(e.contains("`nope`") && e.contains("<epoch>:"), "{e}");
    }

    #[test]
    fn an_event_follows_a_cursor_by_id_or_by_a_new_epoch() {
        let c = Cursor::parse("e1:10").unwrap();
        assert!(c.precedes("e1", 11));
        assert!(!c.precedes("e1", 10));
        assert!(c.precedes("e2", 1), "another journal starts over");
        assert!(Cursor::parse("10").unwrap().precedes("any", 11));
    }
}
