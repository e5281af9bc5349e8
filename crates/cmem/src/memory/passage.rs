//! Passages: a document split along its headings (and cut where a section is long), so a
//! search result can name the part of a document that answers, with its heading path and its
//! lines, rather than the whole file. Split once, at indexing time; stored with the document.

use serde::{Deserialize, Serialize};

/// Longest passage, in lines; a longer section is cut into several.
pub const MAX_LINES: usize = 60;

/// Longest passage, in bytes of text.
pub const MAX_BYTES: usize = 3000;

/// One passage: its lines (1-based, inclusive) and the headings it sits under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    pub start_line: usize,
    pub end_line: usize,
    /// The headings above it, outermost first (empty before the first heading).
    pub heading_path: Vec<String>,
}

impl Passage {
    /// The heading path as one line: `Setup › Install`.
    pub fn heading(&self) -> String {
        self.heading_path.join(" › ")
    }
}

/// The passages of `text`: a new one at every Markdown heading (outside code fences), and
/// wherever one grows past [`MAX_LINES`] or [`MAX_BYTES`]. Blank stretches make none.
pub fn split(text: &str) -> Vec<Passage> {
    let mut out = Vec::new();
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut start = 1usize;
    let mut bytes = 0usize;
    let mut has_text = false;
    let mut fenced = false;
    let close = |out: &mut Vec<Passage>,
                 start: usize,
                 end: usize,
                 path: &[(usize, String)],
                 has_text: bool| {
        if has_text && end >= start {
            out.push(Passage {
                start_line: start,
                end_line: end,
                heading_path: path.iter().map(|(_, h)| h.clone()).collect(),
            });
        }
    };
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            fenced = !fenced;
        }
        let heading = (!fenced).then(|| heading_level(t)).flatten();
        if let Some((level, h)) = heading {
            close(&mut out, start, n - 1, &path, has_text);
            path.retain(|(l, _)| *l < level);
            path.push((level, h.to_string()));
            start = n;
            // the heading line belongs to its passage, which still needs text of its own
            bytes = line.len() + 1;
            has_text = false;
            continue;
        } else if n > start && (n - start >= MAX_LINES || bytes + line.len() > MAX_BYTES) {
            close(&mut out, start, n - 1, &path, has_text);
            start = n;
            bytes = 0;
            has_text = false;
        }
        bytes += line.len() + 1;
        has_text |= !line.trim().is_empty();
    }
    let last = text.lines().count();
    close(&mut out, start, last, &path, has_text);
    out
}

/// The stored form: `[[start, end, "A › B"], …]` is read back by [`decode`].
pub fn encode(passages: &[Passage]) -> String {
    serde_json::to_string(passages).unwrap_or_else(|_| "[]".into())
}

/// Passages as stored (nothing, for a document indexed before passages existed).
pub fn decode(stored: &str) -> Vec<Passage> {
    serde_json::from_str(stored).unwrap_or_default()
}

/// A Markdown ATX heading's level (1 to 6) and text, if `line` (trimmed at the start) is one.
pub(crate) fn heading_level(line: &str) -> Option<(usize, &str)> {
    let level = line.chars().take_while(|c| *c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = line[level..].strip_prefix([' ', '\t'])?;
    let h = rest.trim().trim_end_matches('#').trim();
    (!h.is_empty()).then_some((level, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_start_passages_and_long_sections_are_cut() {
        let text = "intro line\n\n# Guide\nabout\n## Install\nstep one\nstep two\n```\n# not a heading\n```\n## Use\nrun it\n# Other\n";
        let p = split(text);
        let got: Vec<(usize, usize, String)> = p
            .iter()
            .map(|p| (p.start_line, p.end_line, p.heading()))
            .collect();
        assert_eq!(
            got,
            [
                (1, 2, String::new()),
                (3, 4, "Guide".into()),
                (5, 10, "Guide › Install".into()),
                (11, 12, "Guide › Use".into()),
            ],
            "a heading with nothing under it makes no passage"
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[p[2].start_line - 1..p[2].end_line].join("\n"),
            "## Install\nstep one\nstep two\n```\n# not a heading\n```"
        );
        let long: String = (0..150).map(|i| format!("line {i}\n")).collect();
        let p = split(&format!("# Long\n{long}"));
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|x| x.end_line - x.start_line < MAX_LINES));
        assert_eq!(p[2].end_line, 151);
        assert_eq!(decode(&encode(&p)), p);
    }
}
