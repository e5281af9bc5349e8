//! Files the server hands out as they are: the web app (`web/`) at `/` and `/app/`, and the
//! JavaScript client library (`clients/js/src`, package `@collective-memory/client`) at
//! `/client/`, so a page imports it with `import { connect } from '/client/index.js'` and no
//! build step. The files are compiled into the binary, so what a server serves always matches
//! the protocol it speaks, and a server needs nothing beside its binary to offer the app.
//!
//! They are public (no token): the sign-in page needs them before it has a token, and the
//! files hold no data. Each answer carries a strong `ETag`, so a browser revalidates with a
//! `304` instead of downloading again; the app's page carries a Content-Security-Policy that
//! allows only the server's own scripts, styles and connections.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::http::ApiError;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
    etag: OnceLock<HeaderValue>,
}

impl Asset {
    const fn new(name: &'static str, content_type: &'static str, body: &'static str) -> Asset {
        Asset {
            name,
            content_type,
            body,
            etag: OnceLock::new(),
        }
    }

    /// A strong validator made from the content, once.
    fn etag(&self) -> &HeaderValue {
        self.etag.get_or_init(|| {
            let digest = Sha256::digest(self.body.as_bytes());
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            HeaderValue::from_str(&format!("\"{hex}\""))
                .unwrap_or(HeaderValue::from_static("\"0\""))
        })
    }
}

macro_rules! repo_file {
    ($path:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../", $path))
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static CLIENT: [Asset; 3] = [
    Asset::new("index.js", JS, repo_file!("clients/js/src/index.js")),
    // the table of codes index.js imports, generated from cmem-wire's
    Asset::new("codes.js", JS, repo_file!("clients/js/src/codes.js")),
    Asset::new(
        "index.d.ts",
        "application/typescript; charset=utf-8",
        repo_file!("clients/js/src/index.d.ts"),
    ),
];

static APP: [Asset; 4] = [
    Asset::new(
        "index.html",
        "text/html; charset=utf-8",
        repo_file!("web/index.html"),
    ),
    Asset::new("app.js", JS, repo_file!("web/app.js")),
    Asset::new(
        "app.css",
        "text/css; charset=utf-8",
        repo_file!("web/app.css"),
    ),
    Asset::new(
        "favicon.svg",
        "image/svg+xml",
        repo_file!("web/favicon.svg"),
    ),
];

/// The shared-document editor, bundled from npm packages by `build.rs` (or a module saying how
/// to get it, when Node was missing at build time). Loaded only by the Documents page.
static DOCS: Asset = Asset::new(
    "docs.js",
    JS,
    include_str!(concat!(env!("OUT_DIR"), "/docs.js")),
);

/// Only the server's own scripts, styles and connections (WebSocket included); nothing inline,
/// no frames. What the server sends is put in the page as text, and this is the second line.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let etag = asset.etag();
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
    if asset.content_type.starts_with("text/html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    resp
}

/// `GET /`: the web app's page.
pub async fn app_index(headers: HeaderMap) -> Response {
    serve(&APP[0], &headers)
}

/// `GET /favicon.ico`: browsers ask for it whatever the page says; the app's icon.
pub async fn favicon(headers: HeaderMap) -> Response {
    serve(&APP[3], &headers)
}

/// `GET /app/{file}`: the app's script and stylesheet.
pub async fn app_file(Path(file): Path<String>, headers: HeaderMap) -> Response {
    if file == DOCS.name {
        return serve(&DOCS, &headers);
    }
    match APP[1..].iter().find(|a| a.name == file) {
        Some(a) => serve(a, &headers),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no file {file:?} under /app/; there are: app.js, app.css, favicon.svg, docs.js"
            ),
        )
        .into_response(),
    }
}

/// `GET /client/`: the library itself (as `/client/index.js`).
pub async fn client_index(headers: HeaderMap) -> Response {
    serve(&CLIENT[0], &headers)
}

/// `GET /client/{file}`: `index.js`, `codes.js` or `index.d.ts`.
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
