//! An incremental `text/event-stream` parser for clients (the server only writes the format):
//! bytes in, in chunks split anywhere, comments and dispatched events out, as the HTML
//! standard's event-stream interpretation reads them. Lines end with LF, CRLF or CR; a line is
//! bounded, so a proxy that streams garbage cannot make the reader hold unbounded memory.

/// The media type of an event stream.
pub const MIME: &str = "text/event-stream";

/// Whether a response's `Content-Type` is an event stream's (parameters allowed).
pub fn is_event_stream(content_type: &str) -> bool {
    content_type.trim_start().starts_with(MIME)
}

/// One item of an event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A `:` line (the server's heartbeats and its `connected heartbeat_ms=…` greeting).
    Comment(String),
    /// A dispatched event: its type (`message` when none was named), its data lines joined by
    /// LF, and the last event id the stream has set (it persists across events).
    Event {
        event: String,
        data: String,
        id: Option<String>,
    },
    /// A `retry:` field: the reconnection delay the server asks for, in milliseconds.
    Retry(u64),
}

/// Why the stream cannot be read further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error(
        "an event-stream line is longer than {max} bytes: not an event stream this client reads"
    )]
    LineTooLong { max: usize },
}

/// The parser's state between chunks.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    event: String,
    data: Vec<u8>,
    has_data: bool,
    id: Option<String>,
    // a CR ended the last chunk: an LF starting the next one belongs to it
    after_cr: bool,
    max_line: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::new(16 << 20)
    }
}

impl SseParser {
    /// A parser that refuses lines (and events) longer than `max_line` bytes.
    pub fn new(max_line: usize) -> SseParser {
        SseParser {
            line: Vec::new(),
            event: String::new(),
            data: Vec::new(),
            has_data: false,
            id: None,
            after_cr: false,
            max_line,
        }
    }

    /// Reads `chunk`, appending what it completes to `items`.
    pub fn feed(&mut self, mut chunk: &[u8], items: &mut Vec<SseItem>) -> Result<(), SseError> {
        if self.after_cr {
            self.after_cr = false;
            if chunk.first() == Some(&b'\n') {
                chunk = &chunk[1..];
            }
        }
        while let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, rest) = chunk.split_at(end);
            if self.line.is_empty() {
                self.field(head, items)?;
            } else {
                self.take(head)?;
                let line = std::mem::take(&mut self.line);
                self.field(&line, items)?;
                self.line = line;
                self.line.clear();
            }
            chunk = &rest[1..];
            if rest[0] == b'\r' {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.take(chunk)
    }

    fn take(&mut self, part: &[u8]) -> Result<(), SseError> {
        if self.line.len() + part.len() > self.max_line {
            return Err(SseError::LineTooLong { max: self.max_line });
        }
        self.line.extend_from_slice(part);
        Ok(())
    }

    fn field(&mut self, line: &[u8], items: &mut Vec<SseItem>) -> Result<(), SseError> {
        if line.is_empty() {
            if self.has_data {
                let event = std::mem::take(&mut self.event);
                items.push(SseItem::Event {
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        event
                    },
                    data: String::from_utf8_lossy(&self.data).into_owned(),
                    id: self.id.clone(),
                });
            }
            self.data.clear();
            self.has_data = false;
            self.event.clear();
            return Ok(());
        }
        if let Some(c) = line.strip_prefix(b":") {
            items.push(SseItem::Comment(
                String::from_utf8_lossy(c).trim().to_string(),
            ));
            return Ok(());
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.max_line {
                    return Err(SseError::LineTooLong { max: self.max_line });
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            // an id with a NUL is ignored, as the standard says
            b"id" if !value.contains(&0) => {
                self.id = Some(String::from_utf8_lossy(value).into_owned());
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                if let Some(ms) = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                    items.push(SseItem::Retry(ms));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b"retry: 200\r\n: connected heartbeat_ms=15000\r\n\r\nid: e:1\nevent: note\ndata: {\"a\":\ndata: 1}\n\n: heartbeat\r\revent: close\rdata: {}\r\rdata\n\n";

    fn expected() -> Vec<SseItem> {
        vec![
            SseItem::Retry(200),
            SseItem::Comment("connected heartbeat_ms=15000".into()),
            SseItem::Event {
                event: "note".into(),
                data: "{\"a\":\n1}".into(),
                id: Some("e:1".into()),
            },
            SseItem::Comment("heartbeat".into()),
            SseItem::Event {
                event: "close".into(),
                data: "{}".into(),
                id: Some("e:1".into()),
            },
            SseItem::Event {
                event: "message".into(),
                data: String::new(),
                id: Some("e:1".into()),
            },
        ]
    }

    #[test]
    fn any_line_ending_and_any_split_reads_the_same() {
        for size in [1, 2, 3, 7, STREAM.len()] {
            let mut p = SseParser::default();
            let mut items = Vec::new();
            // a CRLF split across chunks is one line end
            for part in STREAM.chunks(size) {
                p.feed(part, &mut items).unwrap();
            }
            assert_eq!(items, expected(), "chunks of {size}");
        }
    }

    #[test]
    fn a_line_longer_than_the_bound_is_refused() {
        let mut p = SseParser::new(16);
        let mut items = Vec::new();
        assert!(p.feed(b"data: 0123456789", &mut items).is_ok());
        assert_eq!(
            p.feed(b"abcdef", &mut items),
            Err(SseError::LineTooLong { max: 16 })
        );
        let mut p = SseParser::new(16);
        let many = b"data: 0123456789\ndata: 0123456789\n";
        assert!(p.feed(many, &mut items).is_err(), "data lines add up");
    }
}
