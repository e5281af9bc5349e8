//! The MCP prompts: ready-made requests an assistant's user can pick, filled from the journal
//! and the index at the moment they are asked for.

use rmcp::model::{ErrorData as McpError, GetPromptResult, JsonObject};
use serde_json::{Value, json};

use super::{Shared, tools, wire};
use crate::access::auth::Identity;
use crate::api::search::Asked;
use crate::journal::ActivityQuery;

/// Events a "what changed" prompt reads at most.
const CHANGES_MAX: usize = 300;

pub fn definitions() -> Vec<Value> {
    vec![
        json!({
            "name": "what_changed",
            "title": "What changed in the team",
            "description": "What happened in the team since a time: files changed, messages, notifications, searches, from the journal.",
            "arguments": [
                {"name": "since", "description": "How far back: 30m, 6h, 2d, or a time like 2026-11-28T09:00:00Z (default 24h).", "required": false},
                {"name": "workspace", "description": "Only this workspace's events (you must be a member).", "required": false},
            ],
        }),
        json!({
            "name": "what_we_know",
            "title": "What we know about a topic",
            "description": "The team's documents about a topic, found by a search, for a summary with sources.",
            "arguments": [
                {"name": "topic", "description": "What to find out about.", "required": true},
            ],
        }),
    ]
}

fn arg(args: &JsonObject, name: &str) -> Option<String> {
    args.get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `30m`, `6h`, `2d`, `1w` back from now, or an RFC 3339 time; as RFC 3339 in UTC.
pub(crate) fn since_time(s: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "since `{s}` is neither a duration (30m, 6h, 2d, 1w) nor a time like 2026-11-28T09:00:00Z"
        )
    };
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(crate::clock::rfc3339(t.with_timezone(&chrono::Utc)));
    }
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let secs = match unit {
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return Err(bad()),
    };
    let back =
        chrono::Duration::try_seconds(n.checked_mul(secs).ok_or_else(bad)?).ok_or_else(bad)?;
    chrono::Utc::now()
        .checked_sub_signed(back)
        .filter(|_| n >= 0)
        .map(crate::clock::rfc3339)
        .ok_or_else(bad)
}

fn user_message(description: String, text: String) -> Result<GetPromptResult, McpError> {
    wire(json!({
        "description": description,
        "messages": [{"role": "user", "content": {"type": "text", "text": text}}],
    }))
}

pub async fn get(
    shared: &Shared,
    who: &Identity,
    name: &str,
    args: JsonObject,
) -> Result<GetPromptResult, McpError> {
    let invalid = |m: String| McpError::invalid_params(m, None);
    match name {
        "what_changed" => {
            let since_arg = arg(&args, "since").unwrap_or_else(|| "24h".into());
            let since = since_time(&since_arg).map_err(invalid)?;
            let workspace = arg(&args, "workspace");
            let events = tools::activity(
                shared,
                who,
                workspace.clone(),
                ActivityQuery {
                    after: None,
                    scopes: Vec::new(),
                    types: None,
                    exclude: vec!["system_status".into(), "search_started".into()],
                    limit: CHANGES_MAX,
                },
            )
            .await
            .map_err(invalid)?;
            let recent: Vec<&Value> = events
                .iter()
                .filter(|e| e["ts"].as_str().is_some_and(|t| t >= since.as_str()))
                .collect();
            let place = workspace
                .map(|w| format!("workspace `{w}`"))
                .unwrap_or_else(|| "the team".into());
            let mut text = format!(
                "Here is what happened in {place} since {since} ({} event{}, from Collective Memory's journal; each line is `#id time type [scope] data`):\n\n",
                recent.len(),
                if recent.len() == 1 { "" } else { "s" }
            );
            if recent.is_empty() {
                text.push_str("(nothing)\n");
            }
            for e in &recent {
                text.push_str(&tools::event_line(e));
                text.push('\n');
            }
            if recent.len() == CHANGES_MAX {
                text.push_str("(only the newest shown; recent_activity pages through the rest)\n");
            }
            text.push_str(
                "\nSummarize what changed: which documents were added, edited or removed, what the team discussed and was notified about, and what people looked for. Read a document with read_document where the change matters.",
            );
            user_message(format!("What changed in {place} since {since}"), text)
        }
        "what_we_know" => {
            let topic = arg(&args, "topic")
                .ok_or_else(|| invalid("topic is required: what to find out about".into()))?;
            let answer = tools::search(
                shared,
                who,
                Asked {
                    query: topic.clone(),
                    limit: Some(10),
                    path_prefix: None,
                    extensions: None,
                    mode: None,
                },
            )
            .await
            .map_err(invalid)?;
            let text = format!(
                "I want to know what our team knows about: {topic}\n\nCollective Memory's search of the team's documents found:\n\n{}\n\nRead the most relevant documents with read_document, then tell me what we know about {topic}, citing each document's path. Say what is missing or contradictory.",
                tools::format_answer(&topic, &answer)
            );
            user_message(format!("What the team knows about {topic}"), text)
        }
        other => Err(invalid(format!(
            "there is no prompt `{other}`; prompts/list names them"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_durations_and_times() {
        assert_eq!(
            since_time("2026-11-28T09:00:00+01:00").as_deref(),
            Ok("2026-11-28T08:00:00.000Z")
        );
        for ok in ["30m", "6h", "2d", "1w", "0h"] {
            assert!(since_time(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "h",
            "-2h",
            "2y",
            "99999999999999999d",
            "yesterday",
            "2ਯ",
            "ਯ",
        ] {
            assert!(since_time(bad).is_err(), "{bad}");
        }
    }
}
