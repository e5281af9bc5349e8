//! The first check every request passes, before CORS, authentication or Socket.IO: where the
//! request says it is going (`Host`) and, for requests that change state, where it comes from
//! (`Origin`).
//!
//! - **DNS rebinding.** A page on `attacker.example` can make its own name resolve to
//!   127.0.0.1 and then talk to a local cmem as a same-origin page: it reads answers and needs
//!   no CORS. What gives it away is the `Host` header, which carries the attacker's name. An
//!   open server (no users, so no token to steal) therefore answers only to loopback names
//!   (`localhost`, `*.localhost`), IP addresses (a literal address cannot be rebound) and the
//!   names listed in `allowed_hosts`. A server with users needs a token for everything, which a
//!   rebound page does not have, and is often reached through a proxy under any name; it is not
//!   restricted.
//! - **Cross-site requests.** A browser sends a cross-origin `POST` with `text/plain` (or a
//!   form) without asking CORS first, so such a request could clear caches or start a re-index.
//!   Requests that change state (`POST`, `PUT`, `PATCH`, `DELETE`) with an `Origin` header must
//!   come from an allowed origin: one in `cors_origins`, the server's own, or the origin of the
//!   `Host` they were sent to. Clients that are not browsers send no `Origin` and are not
//!   affected.
//! - **A closed server.** Bound beyond loopback with no users and without `--insecure`, the
//!   server answers every request with 503 and the fix, whatever the path (see
//!   `teams::auth::identify`, which refuses the same at every authentication).
//! - **Bodies announced too large.** A `Content-Length` above `max_payload_bytes` is a 413 at
//!   once, before anything waits for a body that may never come.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::http::ApiError;

/// The host part of a `Host` header value (`name`, `name:port`, `[v6]`, `[v6]:port`),
/// lowercased; `None` for anything else (`[::1]evil.example`, user info, stray characters),
/// which is then refused rather than guessed at.
fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    let port_ok = |p: &str| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit());
    if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(port_ok)) {
            return None;
        }
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        return Some(v6.to_ascii_lowercase());
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port_ok(port) => name,
        Some(_) => return None,
        None => host,
    };
    let name = name.trim_end_matches('.');
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    valid.then(|| name.to_ascii_lowercase())
}

/// Whether an open server may answer a request for `host`.
pub fn host_allowed(host: &str, allowed_hosts: &[String]) -> bool {
    let Some(name) = host_name(host) else {
        return false;
    };
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::IpAddr>().is_ok()
        || allowed_hosts
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(&name))
}

/// Longest URL (path and query) a request may have.
pub const MAX_URL_BYTES: usize = 8192;

fn changes_state(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The middleware; see the module docs.
pub async fn check(State(app): State<App>, req: Request, next: Next) -> Response {
    // an exposed server without users (and without --insecure) serves nothing at all, not
    // even its health or its pages, until a user exists: it says how to fix that
    if !app.config.open_allowed() && !app.access.users_exist() {
        return ApiError::from(crate::access::auth::AuthError::Closed).into_response();
    }
    // hyper answers a URL above 64 KiB itself (414, no body); below that the answer says why
    let url_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if url_len > MAX_URL_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!(
                "the URL is {url_len} bytes; the limit is {MAX_URL_BYTES} (send a long search as POST /api/search)"
            ),
        )
        .into_response();
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    if let Some(host) = &host
        && !host_allowed(host, &app.config.allowed_hosts)
        && !app.access.users_exist()
    {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Host `{host}` is refused: a server without users answers only to localhost and IP addresses (a page on another name could be rebinding its DNS to reach you); add the name to allowed_hosts, or create a user"
            ),
        )
        .into_response();
    }
    // a body announced larger than any we accept is refused before anyone waits for it
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<u64>());
    match announced {
        Some(Ok(n)) if n > app.config.max_payload_bytes => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body is announced as {n} bytes; the limit is {} (max_payload_bytes)",
                    app.config.max_payload_bytes
                ),
            )
            .into_response();
        }
        Some(Err(_)) => {
            return ApiError::bad_request("Content-Length is not a whole number of bytes")
                .into_response();
        }
        _ => {}
    }
    if changes_state(req.method())
        && let Some(origin) = req.headers().get(header::ORIGIN)
    {
        let origin = origin.to_str().unwrap_or("");
        if !app.config.origin_allowed_for(origin, host.as_deref()) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "Origin `{origin}` may not change anything here (a page on another site sent this request); add it to cors_origins to allow it"
                ),
            )
            .into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_addresses_pass() {
        let none: Vec<String> = vec![];
        for ok in [
            "localhost:8000",
            "LOCALHOST",
            "app.localhost:3000",
            "127.0.0.1:8000",
            "127.1.2.3",
            "[::1]:8000",
            "10.0.0.5:80",
            "localhost.:8000",
        ] {
            assert!(host_allowed(ok, &none), "{ok}");
        }
        for bad in [
            "rebind.attacker.example:8000",
            "attacker.example",
            "localhost.attacker.example",
            "127.0.0.1.nip.io:8000",
            "",
            // issue 24: a bracketed address followed by a name passed as the address
            "[::1]evil.example",
            "[::1]evil.example:8000",
            "[::1]:80evil",
            "user@localhost",
            "localhost:80:80",
            "[not-an-address]",
        ] {
            assert!(!host_allowed(bad, &none), "{bad}");
        }
        assert!(host_allowed("notes.lan:8000", &["notes.lan".to_string()]));
    }
}
