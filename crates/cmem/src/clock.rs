//! Wall-clock time as the project writes it everywhere: RFC 3339, UTC, milliseconds. One place,
//! so the envelope's `timestamp`, the journal's `ts` and every API answer agree on the format.

use chrono::{DateTime, SecondsFormat, Utc};

/// Now, as `2026-11-29T10:31:34.123Z`.
pub fn now_rfc3339() -> String {
    rfc3339(Utc::now())
}

/// `t`, as `2026-11-29T10:31:34.123Z`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch as RFC 3339 (`None` if out of chrono's range).
pub fn rfc3339_ms(ms: u64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms as i64).map(rfc3339)
}
