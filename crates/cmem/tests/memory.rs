//! Indexing and search against the real server on a generated corpus.

mod common;

use std::time::Duration;

use common::{TestServer, get, until};
use futures::StreamExt;
use serde_json::{Value, json};

const WORD: &str = "zephyrquartz";

/// Writes a corpus where WORD is in exactly three indexable files, plus decoys that must be
/// skipped (binary, ignored folders, .gitignore).
fn corpus(dir: &std::path::Path) {
    let w = |p: &str, body: &[u8]| {
        let full = dir.join(p);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, body).unwrap();
    };
    w(
        "notes/a.md",
        format!("# Alpha notes\nthe {WORD} appears here\n").as_bytes(),
    );
    w(
        "notes/b.txt",
        format!("plain text with {WORD} inside").as_bytes(),
    );
    w(
        "src/c.rs",
        format!("// {WORD}\nfn main() {{}}\n").as_bytes(),
    );
    for i in 0..7 {
        w(
            &format!("other/{i}.md"),
            b"# Nothing\nordinary words only\n",
        );
    }
    w("bin/blob.dat", &[b'z', 0, 0, 1, 2, 3, b' ', b'z', b'e']);
    let mut bin = WORD.as_bytes().to_vec();
    bin.extend_from_slice(&[0, 0, 0]);
    w("bin/with_word.bin", &bin);
    w("node_modules/pkg/index.js", WORD.as_bytes());
    w(".git/objects/x", WORD.as_bytes());
    w(".gitignore", b"ignored/\n");
    w("ignored/secret.md", WORD.as_bytes());
    w("latin1.txt", &[b'c', b'a', b'f', 0xe9, b' ', b'o', b'k']);
}

async fn indexed(s: &TestServer) -> Value {
    until("indexing finished", 60, || async {
        let (_, v) = get(format!("{}/system/indexing", s.url)).await;
        let d = v["data"].clone();
        (d["running"] == false && d["finished_at"].is_string()).then_some(d)
    })
    .await
}

#[tokio::test]
async fn a_word_in_three_files_finds_those_three() {
    let tmp = tempfile::tempdir().unwrap();
    corpus(tmp.path());
    let s = TestServer::start_in(tmp.path(), &[], &[]);
    let st = indexed(&s).await;
    assert_eq!(st["errors"], 0, "{st}");
    assert!(
        st["skipped"].as_u64().unwrap() >= 2,
        "binaries are skipped: {st}"
    );

    let (code, v) = get(format!("{}/api/search?q={WORD}", s.url)).await;
    assert_eq!(code, 200, "{v}");
    let d = &v["data"];
    assert_eq!(d["total"], 3, "{d}");
    let mut paths: Vec<String> = d["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    paths.sort();
    assert_eq!(paths, vec!["notes/a.md", "notes/b.txt", "src/c.rs"]);
    let a = d["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == "notes/a.md")
        .unwrap();
    assert_eq!(a["title"], "Alpha notes");
    assert!(
        a["snippet"]
            .as_str()
            .unwrap()
            .contains(&format!("<b>{WORD}</b>")),
        "{a}"
    );
    assert!(a["last_modified"].as_str().unwrap().ends_with('Z'));
    assert!(d["search_time_ms"].as_f64().is_some());
    // the release before's keys, kept one release
    assert_eq!(a["lastModified"], a["last_modified"]);
    assert_eq!(d["searchTime"], d["search_time_ms"]);

    // paging: total stays the true total
    let (_, v) = get(format!("{}/search?q={WORD}&limit=1&offset=1", s.url)).await;
    assert_eq!(v["data"]["total"], 3);
    assert_eq!(v["data"]["results"].as_array().unwrap().len(), 1);
    // POST form
    let (_, v) = s
        .post("/api/search", &json!({"q": "ordinary", "limit": 50}))
        .await;
    assert_eq!(v["data"]["total"], 7);
    // a non-UTF-8 file is indexed lossily, not dropped
    let (_, v) = get(format!("{}/api/search?q=ok", s.url)).await;
    assert_eq!(v["data"]["results"][0]["path"], "latin1.txt");
}

#[tokio::test]
async fn bad_queries_and_traversal_paths_are_400() {
    let tmp = tempfile::tempdir().unwrap();
    corpus(tmp.path());
    let s = TestServer::start_in(tmp.path(), &[], &[]);
    indexed(&s).await;
    for (q, needle) in [
        ("q=", "q is required"),
        ("q=%20%20", "q is required"),
        ("", "q is required"),
        ("q=a&limit=500", "limit"),
        ("q=a&limit=x", "limit"),
        ("q=a&offset=-1", "offset"),
        ("q=title:(unclosed", "syntax"),
        ("q=a&colour=red", "unknown query parameter"),
    ] {
        let (code, v) = get(format!("{}/api/search?{q}", s.url)).await;
        assert_eq!(code, 400, "{q}: {v}");
        assert!(
            v["error"].as_str().unwrap().to_lowercase().contains(needle),
            "{q}: {v}"
        );
    }
    for (body, needle) in [
        (json!({"path": "../etc"}), ".."),
        (json!({"path": "/etc"}), "relative"),
        (json!({"path": "nope/missing"}), "does not exist"),
        (json!({"path": "notes", "extra": 1}), "unknown field"),
    ] {
        let (code, v) = s.post("/system/reindex", &body).await;
        assert_eq!(code, 400, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{body}: {v}");
    }
}

#[tokio::test]
async fn reindex_streams_progress_and_restart_is_incremental() {
    let tmp = tempfile::tempdir().unwrap();
    corpus(tmp.path());
    let s = TestServer::start_in(tmp.path(), &[], &[]);
    let first = indexed(&s).await;
    assert!(first["indexed"].as_u64().unwrap() >= 10, "{first}");

    // a client watching over SSE sees a whole run
    let resp = reqwest::get(format!("{}/api/events/stream", s.url))
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let (code, _) = s.post("/system/reindex", &json!({})).await;
    assert_eq!(code, 202);
    let mut text = String::new();
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: indexing_completed") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(got, "indexing_completed arrives: {text}");
    // the run's own events follow its start: the vectors' first pass may still be reporting
    // its embedding progress before it (slowly, under Wine)
    let started = text.find("event: indexing_started").expect("started");
    let run = &text[started..];
    let progress = run.find("event: indexing_progress").expect("progress");
    let done = run.find("event: indexing_completed").expect("completed");
    assert!(0 < progress && progress < done);
    let zero = run.find("\"progress\":0,").expect("progress starts at 0");
    let hundred = run.find("\"progress\":100").expect("progress reaches 100");
    assert!(zero < hundred && hundred < done);
    drop(body);

    // restart: nothing changed, nothing re-indexed; an edited file is
    let mut s = s;
    s.terminate();
    std::fs::write(tmp.path().join("notes/b.txt"), "now it says quasarfluff").unwrap();
    let s = TestServer::start_in(tmp.path(), &[], &[]);
    let again = indexed(&s).await;
    assert_eq!(again["indexed"], 1, "{again}");
    assert!(again["unchanged"].as_u64().unwrap() >= 9, "{again}");
    let (_, v) = get(format!("{}/api/search?q=quasarfluff", s.url)).await;
    assert_eq!(v["data"]["results"][0]["path"], "notes/b.txt");
    let (_, v) = get(format!("{}/api/search?q={WORD}", s.url)).await;
    assert_eq!(v["data"]["total"], 2, "the old content is gone");
}
