//! Files the server hands out as they are: the JavaScript client library
//! (`clients/js/src`, package `@collective-memory/client`) at `/client/`, so a page imports it
//! with `import { connect } from '/client/index.js'` and no build step. The files are compiled
//! into the binary, so what a server serves always matches the protocol it speaks.
//!
//! They are public (no token): a sign-in page needs the client before it has a token, and the
//! files hold no data. Each answer carries a strong `ETag`, so a browser revalidates with a
//! `304` instead of downloading again.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::http::ApiError;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
    etag: LazyLock<HeaderValue>,
}

macro_rules! asset {
    ($name:literal, $type:literal, $path:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../", $path)),
            etag: LazyLock::new(|| {
                etag(include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../",
                    $path
                )))
            }),
        }
    };
}

fn etag(body: &str) -> HeaderValue {
    let digest = Sha256::digest(body.as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

static CLIENT: [Asset; 2] = [
    asset!(
        "index.js",
        "text/javascript; charset=utf-8",
        "clients/js/src/index.js"
    ),
    asset!(
        "index.d.ts",
        "application/typescript; charset=utf-8",
        "clients/js/src/index.d.ts"
    ),
];

fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let etag = &*asset.etag;
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, etag.clone());
    // always revalidate: a new server version must never run against an old client file
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// `GET /client/`: the library itself (as `/client/index.js`).
pub async fn client_index(headers: HeaderMap) -> Response {
    serve(&CLIENT[0], &headers)
}

/// `GET /client/{file}`: `index.js` or `index.d.ts`.
pub async fn client_file(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match CLIENT.iter().find(|a| a.name == file) {
        Some(a) => serve(a, &headers),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no file {file:?} under /client/; there are: {}",
                CLIENT.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
            ),
        )
        .into_response(),
    }
}
