//! The HTTP layer beneath the API and the transports: the JSON envelope
//! `{success, data, error, timestamp}` (and `code`, `message` on an error), [`ApiError`] and
//! how every feature's error becomes a status and a code (`cmem_wire::codes`), and the parsing of query parameters and cursors. Both `api/` and `transports/` answer
//! through it, so a refusal reads the same whichever endpoint gave it.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use cmem_wire::Code;

use crate::access::auth::AuthError;
use crate::clock::now_rfc3339;
use crate::envelope::Cursor;
use crate::hub::PublishError;
use crate::memory::search::SearchError;
use crate::teams::TeamsError;

/// A successful answer in the JSON envelope.
pub fn ok<T: Serialize>(data: T) -> Response {
    Json(Success {
        data,
        error: None,
        success: true,
        timestamp: now_rfc3339(),
    })
    .into_response()
}

/// The success envelope, serialized straight from its fields (a `json!` map cost every answer
/// a tree of allocations). Fields in the order `json!` gave them: sorted by name.
#[derive(Serialize)]
struct Success<T> {
    data: T,
    error: Option<()>,
    success: bool,
    timestamp: String,
}

/// An error answer: a status, the code a client acts on, and a message that says what was
/// wrong.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// An error with the code that goes with `status` (see [`Code::for_status`]).
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: Code::for_status(status.as_u16()),
            message: message.into(),
        }
    }

    /// The same answer with a more precise code.
    pub fn with_code(mut self, code: Code) -> Self {
        self.code = code;
        self
    }

    /// The body every error answer has: the envelope with `code` and `message` (and `error`,
    /// the message under its older name).
    pub fn body(code: Code, message: &str) -> serde_json::Value {
        json!({
            "success": false,
            "data": null,
            "code": code,
            "message": message,
            "error": message,
            "timestamp": now_rfc3339(),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ApiError::body(self.code, &self.message))).into_response()
    }
}

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::Invalid(_) | SearchError::Syntax { .. } | SearchError::TooComplex(_) => {
                ApiError::bad_request(e.to_string())
            }
            SearchError::Unavailable(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            SearchError::Index(_) | SearchError::Internal(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

impl From<crate::memory::service::ServiceError> for ApiError {
    fn from(e: crate::memory::service::ServiceError) -> Self {
        use crate::memory::service::ServiceError;
        match e {
            ServiceError::Search(e) => e.into(),
            ServiceError::Publish(e) => e.into(),
            ServiceError::Internal(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m),
        }
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Invalid(m) => ApiError::bad_request(m),
            PublishError::Journal(j) => {
                tracing::error!(error = %j, "publish failed");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, j.to_string())
            }
        }
    }
}

/// `Json<T>` whose rejections use the envelope and a 4xx that names the problem.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rej) => {
                let status = match &rej {
                    JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    JsonRejection::BytesRejection(_) => rej.status(),
                    _ => StatusCode::BAD_REQUEST,
                };
                Err(body_refusal(status, rej.body_text()))
            }
        }
    }
}

/// A body refused before it was parsed, in the envelope; a body over the limit is named by the
/// setting that limits it.
fn body_refusal(status: StatusCode, text: String) -> ApiError {
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "request body is larger than max_payload_bytes".to_string()
    } else {
        text
    };
    ApiError::new(status, message)
}

/// A JSON body read as a [`serde_json::Value`], for handlers that check its shape themselves
/// and word their own errors (`POST /api/events`). [`ApiJson`] goes through axum's `Json`,
/// which tracks the path of every key it reads for its error messages: for a `Value` those
/// paths say nothing a syntax error's line and column do not, and cost an allocation a key.
/// Refusals are [`ApiJson`]'s: 415 without a JSON `Content-Type`, 413 over
/// `max_payload_bytes`, 400 for bad JSON.
pub struct JsonValue(pub serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for JsonValue {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Expected request with `Content-Type: application/json`",
            ));
        }
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(rej) => return Err(body_refusal(rej.status(), rej.body_text())),
        };
        serde_json::from_slice(&bytes).map(JsonValue).map_err(|e| {
            ApiError::bad_request(format!("Failed to parse the request body as JSON: {e}"))
        })
    }
}

/// `application/json` or `application/<anything>+json`, parameters allowed (axum's rule).
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype
                .rsplit_once('+')
                .is_some_and(|(_, suffix)| suffix.eq_ignore_ascii_case("json")))
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = match e {
            AuthError::Missing | AuthError::Unknown | AuthError::Revoked(_) => {
                StatusCode::UNAUTHORIZED
            }
            AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
            AuthError::Unavailable(_) | AuthError::Closed => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string()).with_code(e.code())
    }
}

impl From<TeamsError> for ApiError {
    fn from(e: TeamsError) -> Self {
        let code = e.code();
        let status = code
            .status()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError::new(status, e.to_string()).with_code(code)
    }
}

/// Refuses query parameters other than `allowed` (and the `_` cache-buster), naming them, so a
/// typo is not silently ignored.
pub(crate) fn only_params(q: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    match q
        .keys()
        .find(|k| !allowed.contains(&k.as_str()) && *k != "_")
    {
        Some(k) => Err(ApiError::bad_request(format!(
            "unknown query parameter `{k}`; allowed: {}",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

/// A whole-number query parameter of at least `min`, if given (an empty value counts as not
/// given). The one parser of numbers in query strings.
pub(crate) fn number_param<T>(
    q: &HashMap<String, String>,
    key: &str,
    min: T,
) -> Result<Option<T>, ApiError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    match q.get(key).map(|v| (v, v.trim())) {
        None => Ok(None),
        Some((_, "")) => Ok(None),
        Some((raw, v)) => v
            .parse::<T>()
            .ok()
            .filter(|n| *n >= min)
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{key} `{raw}` is not a whole number of at least {min}"
                ))
            }),
    }
}

/// Query parameters, with unknown ones refused so that typos do not pass silently.
pub(crate) fn query_params(
    raw: Option<&str>,
    allowed: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    let mut out: HashMap<String, String> = form_urlencoded_pairs(raw.unwrap_or(""))
        .into_iter()
        .collect();
    only_params(&out, allowed)?;
    out.remove("_"); // cache-buster
    Ok(out)
}

fn form_urlencoded_pairs(q: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default()
}

/// Parses a cursor parameter, naming it in the error.
pub(crate) fn parse_cursor(
    name: &str,
    raw: Option<&str>,
    epoch: Option<&str>,
) -> Result<Option<Cursor>, ApiError> {
    let Some(raw) = raw.filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    let mut c = Cursor::parse(raw).map_err(|m| ApiError::bad_request(format!("{name}: {m}")))?;
    if c.epoch.is_none() {
        c.epoch = epoch.filter(|e| !e.is_empty()).map(str::to_string);
    }
    Ok(Some(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::JournalError;

    #[test]
    fn json_content_types_are_told_as_axum_tells_them() {
        let with = |v: &'static str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static(v),
            );
            json_content_type(&h)
        };
        for yes in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/vnd.api+json",
            " application/json ;charset=utf-8",
        ] {
            assert!(with(yes), "{yes}");
        }
        for no in [
            "text/plain",
            "application/jsonx",
            "application/x-www-form-urlencoded",
            "json",
            "text/json",
            "",
        ] {
            assert!(!with(no), "{no}");
        }
        assert!(!json_content_type(&axum::http::HeaderMap::new()));
    }

    /// The envelope keeps the shape (and key order) `json!` gave it.
    #[test]
    fn the_success_envelope_reads_as_before() {
        let body = serde_json::to_string(&Success {
            data: json!({"a": 1}),
            error: None,
            success: true,
            timestamp: "t".into(),
        })
        .unwrap();
        assert_eq!(
            body,
            r#"{"data":{"a":1},"error":null,"success":true,"timestamp":"t"}"#
        );
    }

    #[test]
    fn a_failure_of_the_server_is_a_5xx_and_a_bad_request_a_4xx() {
        let status = |e: TeamsError| ApiError::from(e).status;
        assert_eq!(
            status(TeamsError::Unavailable("message not sent".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(TeamsError::Invalid("x".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(TeamsError::TooFast("x".into())),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            status(TeamsError::TooMany("x".into())),
            StatusCode::CONFLICT
        );
        let journal = PublishError::Journal(JournalError::Closed);
        assert_eq!(
            ApiError::from(journal).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ApiError::from(PublishError::Invalid("x".into())).status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn query_parameters_are_checked_and_numbers_parsed_in_one_way() {
        let q = query_params(Some("limit=5&_=123"), &["limit"]).unwrap();
        assert_eq!(number_param(&q, "limit", 1usize).unwrap(), Some(5));
        assert!(!q.contains_key("_"), "the cache-buster is dropped");
        let e = query_params(Some("limt=5"), &["limit"]).unwrap_err();
        assert!(
            e.message.contains("unknown query parameter `limt`"),
            "{}",
            e.message
        );
        let q = query_params(
            Some("limit=0&after=&before=x"),
            &["limit", "after", "before"],
        )
        .unwrap();
        assert!(number_param(&q, "limit", 1usize).is_err());
        assert_eq!(number_param(&q, "after", 0u64).unwrap(), None);
        let e = number_param(&q, "before", 1i64).unwrap_err();
        assert_eq!(e.message, "before `x` is not a whole number of at least 1");
    }
}
