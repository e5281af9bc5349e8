//! The rest of the memory's surface against the real server and binary: search filters and
//! syntax errors, suggestions, export, the searches history, the system monitor, cache
//! clearing, metrics, and `cmem index` / `cmem search` on the command line.

mod common;

use common::{TestServer, cmem, get, until};
use serde_json::{Value, json};

fn write(dir: &std::path::Path, p: &str, body: &str) {
    let full = dir.join(p);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, body).unwrap();
}

/// `vortexmint` is in five files: two .md under notes/, one .md under notes2/, one .rs under
/// src/, one .txt at the top. `lumenquill` is in exactly three.
fn corpus(dir: &std::path::Path) {
    write(dir, "notes/a.md", "# A\nvortexmint lumenquill\n");
    write(dir, "notes/deep/b.md", "vortexmint here lumenquill\n");
    write(dir, "notes2/c.md", "vortexmint elsewhere\n");
    write(dir, "src/d.rs", "// vortexmint lumenquill\nfn main() {}\n");
    write(dir, "e.txt", "vortexmint & <tags> in text\n");
    write(dir, "other.md", "lumenquillish is not the word\n");
}

fn paths(v: &Value) -> Vec<String> {
    let mut p: Vec<String> = v["data"]["results"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|r| r["path"].as_str().unwrap_or_default().to_string())
        .collect();
    p.sort();
    p
}

/// Every event in the journal after `after`, read over the poll transport.
async fn events_after(s: &TestServer, after: u64) -> Vec<Value> {
    let (_, v) = get(format!(
        "{}/api/events/poll?client_id=reader&after={after}&limit=1000",
        s.url
    ))
    .await;
    v["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn filters_narrow_results_and_syntax_errors_say_where() {
    let tmp = tempfile::tempdir().unwrap();
    corpus(tmp.path());
    let s = TestServer::start_in(tmp.path(), &[], &[]);

    let (_, v) = get(format!("{}/api/search?q=vortexmint", s.url)).await;
    assert_eq!(v["data"]["total"], 5, "{v}");
    // a plain string prefix: notes/ excludes notes2/
    let (_, v) = get(format!(
        "{}/api/search?q=vortexmint&path_prefix=notes/",
        s.url
    ))
    .await;
    assert_eq!(paths(&v), vec!["notes/a.md", "notes/deep/b.md"], "{v}");
    assert_eq!(v["data"]["total"], 2);
    let (_, v) = s
        .post(
            "/api/search",
            &json!({"q": "vortexmint", "extensions": [".md", "RS"]}),
        )
        .await;
    assert_eq!(
        paths(&v),
        vec!["notes/a.md", "notes/deep/b.md", "notes2/c.md", "src/d.rs"]
    );
    let (_, v) = s
        .post(
            "/api/search",
            &json!({"q": "vortexmint", "extensions": ["md"], "path_prefix": "notes2"}),
        )
        .await;
    assert_eq!(paths(&v), vec!["notes2/c.md"]);
    let (_, v) = get(format!("{}/search?q=vortexmint&extensions=txt", s.url)).await;
    assert_eq!(paths(&v), vec!["e.txt"]);

    for (q, needle) in [
        ("q=vortexmint%20AND%20(lumen", "position 21"),
        ("q=nosuchfield:x", "position 0"),
        ("q=a&path_prefix=../x", ".."),
        ("q=a&path_prefix=/etc", "relative"),
        ("q=a&extensions=m%20d", "extension"),
    ] {
        let (code, v) = get(format!("{}/api/search?{q}", s.url)).await;
        assert_eq!(code, 400, "{q}: {v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{q}: {v}");
    }
    let (code, v) = s
        .post(
            "/api/search",
            &json!({"q": "a", "extensions": "md", "x": 1}),
        )
        .await;
    assert_eq!(code, 400, "{v}");
}

#[tokio::test]
async fn suggestions_export_and_similar_queries() {
    let tmp = tempfile::tempdir().unwrap();
    corpus(tmp.path());
    let s = TestServer::start_in(tmp.path(), &[], &[]);

    let (code, v) = get(format!("{}/search/suggestions?q=LUMEN", s.url)).await;
    assert_eq!(code, 200, "{v}");
    let list = v["data"]["suggestions"].as_array().unwrap();
    assert_eq!(list[0], json!({"term": "lumenquill", "docs": 3}), "{v}");
    assert_eq!(list[1], json!({"term": "lumenquillish", "docs": 1}), "{v}");
    let (code, _) = get(format!("{}/search/suggestions?q=", s.url)).await;
    assert_eq!(code, 400);

    let c = s.client();
    let r = c
        .post(format!("{}/search/export", s.url))
        .json(&json!({"query": "lumenquill", "format": "markdown"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/markdown")
    );
    let md = r.text().await.unwrap();
    assert!(md.starts_with("# Search results for `lumenquill`"), "{md}");
    for p in ["notes/a.md", "notes/deep/b.md", "src/d.rs"] {
        assert!(md.contains(&format!("`{p}`")), "{md}");
    }
    assert!(md.contains("**lumenquill**"), "{md}");
    let r = c
        .post(format!("{}/search/export", s.url))
        .json(&json!({"query": "vortexmint", "format": "text", "extensions": ["txt"]}))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let txt = r.text().await.unwrap();
    assert!(
        txt.contains("e.txt") && txt.contains("vortexmint & <tags>"),
        "{txt}"
    );
    assert!(!txt.contains("<b>") && !txt.contains("notes/a.md"), "{txt}");
    let (code, v) = s
        .post("/search/export", &json!({"query": "x", "format": "pdf"}))
        .await;
    assert_eq!(code, 400);
    assert!(v["error"].as_str().unwrap().contains("pdf"));

    // the history: earlier searches come back for a similar query, with their hit counts
    s.post(
        "/api/search",
        &json!({"q": "lumenquill vortexmint", "session": "tab-1"}),
    )
    .await;
    get(format!("{}/api/search?q=budget%20report", s.url)).await;
    let (code, v) = get(format!(
        "{}/prompts/similar?q=vortexmint%20lumenquil",
        s.url
    ))
    .await;
    assert_eq!(code, 200, "{v}");
    let similar: Vec<&str> = v["data"]["similar"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["query"].as_str().unwrap())
        .collect();
    assert_eq!(similar[0], "lumenquill vortexmint", "{v}");
    assert!(!similar.contains(&"budget report"), "{v}");
    // a plain query is read as a question: any of its words, ranked (five documents hold one
    // of the two; the three with both come first)
    assert_eq!(v["data"]["similar"][0]["results"], 5);
    let (code, _) = get(format!("{}/prompts/similar?q=", s.url)).await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn query_text_can_be_withheld_and_history_switched_off() {
    let tmp = tempfile::tempdir().unwrap();
    corpus(tmp.path());
    let s = TestServer::start_in(
        tmp.path(),
        &[],
        &[
            ("CM_SEARCH_PUBLISH_QUERY", "false"),
            ("CM_SEARCH_HISTORY_MAX", "0"),
        ],
    );
    let before = s.head().await;
    get(format!("{}/api/search?q=lumenquill", s.url)).await;
    let evs = events_after(&s, before).await;
    let done = evs
        .iter()
        .find(|e| e["type"] == "search_completed")
        .expect("search_completed published");
    assert_eq!(done["data"]["query"], Value::Null, "{done}");
    assert_eq!(done["data"]["results_count"], 3, "{done}");
    assert!(!serde_json::to_string(&evs).unwrap().contains("lumenquill"));
    let (_, v) = get(format!("{}/prompts/similar?q=lumenquill", s.url)).await;
    assert_eq!(v["data"]["history_enabled"], false);
    assert_eq!(v["data"]["similar"], json!([]));
}

#[tokio::test]
async fn monitor_status_cache_clear_and_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    corpus(tmp.path());
    let s = TestServer::start_in(tmp.path(), &[], &[("CM_STATUS_INTERVAL_S", "1")]);
    let before = s.head().await;

    for path in ["/system/status", "/system/stats"] {
        let (code, v) = get(format!("{}{path}", s.url)).await;
        assert_eq!(code, 200, "{v}");
        let d = &v["data"];
        for k in [
            "cpu_usage",
            "memory_usage",
            "disk_usage",
            "indexing",
            "connected_clients",
            "uptime_s",
            "index_docs",
            "index_bytes",
        ] {
            assert!(!d[k].is_null(), "{path} has {k}: {d}");
        }
        assert_eq!(d["index_docs"], 6, "{d}");
        assert!(d["index_bytes"].as_u64().unwrap() > 0);
        assert!(d["memory_total_bytes"].as_u64().unwrap() > 0, "{d}");
        assert!(d["disk_total_bytes"].is_u64(), "{d}");
        // the Windows suite runs under Wine, which shows sysinfo no disks
        #[cfg(not(windows))]
        assert!(d["disk_total_bytes"].as_u64().unwrap() > 0, "{d}");
    }
    // periodic: with status_interval_s = 1 two arrive within a few seconds, to everyone
    let periodic = until("two periodic system_status events", 10, || async {
        let n = events_after(&s, before)
            .await
            .iter()
            .filter(|e| e["type"] == "system_status" && e["scope"] == "global")
            .count();
        (n >= 2).then_some(n)
    })
    .await;
    assert!(periodic >= 2);
    // on demand
    let (code, v) = s.post("/system/status", &json!({})).await;
    assert_eq!(code, 200, "{v}");
    let id = s.head().await;
    let evs = events_after(&s, id - 1).await;
    assert!(
        evs.iter()
            .any(|e| e["type"] == "system_status" && e["data"]["index_docs"] == 6),
        "{evs:?}"
    );

    // cache clear: announced, and a reader from the start still gets every event in order
    let (code, v) = s.post("/system/cache/clear", &json!({})).await;
    assert_eq!(code, 200, "{v}");
    assert!(
        v["data"]["journal_window_events"].as_u64().unwrap() > 0,
        "{v}"
    );
    let head = s.head().await;
    let all = events_after(&s, 0).await;
    let ids: Vec<u64> = all.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!(
        ids,
        (1..=head).collect::<Vec<_>>(),
        "nothing lost after a cache clear"
    );
    assert_eq!(all.last().unwrap()["type"], "cache_cleared");

    // metrics: three searches counted, an open SSE client shown by transport
    for q in ["lumenquill", "vortexmint", "nothinghere"] {
        get(format!("{}/api/search?q={q}", s.url)).await;
    }
    get(format!("{}/api/search?q=bad%20(", s.url)).await;
    let _sse = reqwest::get(format!("{}/api/events/stream", s.url))
        .await
        .unwrap();
    let text = until("the SSE connection is counted", 10, || async {
        let r = reqwest::get(format!("{}/metrics", s.url)).await.ok()?;
        let t = r.text().await.ok()?;
        t.contains("cmem_connections{transport=\"sse\"} 1")
            .then_some(t)
    })
    .await;
    let line = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
    };
    assert_eq!(line("cmem_search_duration_seconds_count"), 3.0);
    assert_eq!(line("cmem_search_errors_total"), 1.0);
    assert_eq!(line("cmem_index_documents"), 6.0);
    assert!(line("cmem_journal_head") >= head as f64);
    assert!(line("cmem_events_published_total") > 0.0);
    assert_eq!(line("cmem_indexing_runs_total"), 1.0);
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
}

#[tokio::test]
async fn command_line_index_and_search() {
    let tmp = tempfile::tempdir().unwrap();
    corpus(tmp.path());
    let dir = tmp.path().to_str().unwrap();

    let (code, _, err) = cmem(&["search", "lumenquill", "--data", dir]);
    assert_eq!(code, 2);
    assert!(err.contains("cmem index"), "says how to fix it: {err}");

    let (code, out, err) = cmem(&["index", dir, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["indexed"], 6, "{v}");
    assert_eq!(v["index_docs"], 6, "{v}");
    assert!(v["indexed_bytes"].as_u64().unwrap() > 100);

    let (code, out, _) = cmem(&["search", "lumenquill", "--data", dir, "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["total"], 3, "{v}");
    let (_, out, _) = cmem(&["search", "lumenquill", "--data", dir, "--extensions", "rs"]);
    assert!(
        out.contains("1 documents match") && out.contains("[src/d.rs]"),
        "{out}"
    );
    let (code, _, err) = cmem(&["search", "a AND (", "--data", dir]);
    assert_eq!(code, 2);
    assert!(err.contains("position"), "{err}");

    // incremental: a second run changes nothing, an edit is picked up
    write(tmp.path(), "e.txt", "now lumenquill too");
    let (_, out, _) = cmem(&["index", dir, "--json"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (v["indexed"].clone(), v["unchanged"].clone()),
        (json!(1), json!(5))
    );

    // with a server running on the folder, indexing is refused with a reason, search works
    let s = TestServer::start_in(tmp.path(), &[], &[]);
    let (code, _, err) = cmem(&["index", dir]);
    assert_eq!(code, 1);
    assert!(err.contains("in use"), "{err}");
    let (code, out, _) = cmem(&["search", "lumenquill", "--data", dir, "--json"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(out.trim()).unwrap()["total"],
        4
    );
    drop(s);
}

#[tokio::test]
async fn watcher_honours_nested_gitignore_files() {
    let tmp = tempfile::tempdir().unwrap();
    corpus(tmp.path());
    write(tmp.path(), "team/.gitignore", "drafts/\n*.tmp\n");
    let s = TestServer::start_in(tmp.path(), &[], &[]);
    // written in this order, so the watcher handles the ignored ones first (or together)
    write(tmp.path(), "team/drafts/x.md", "quillzephyr draft");
    write(tmp.path(), "team/y.tmp", "quillzephyr temp");
    write(
        tmp.path(),
        "y.tmp",
        "quillzephyr top level, not ignored here",
    );
    write(tmp.path(), "team/final.md", "quillzephyr final");
    until("the new files are searchable", 20, || async {
        let (_, v) = get(format!("{}/api/search?q=quillzephyr", s.url)).await;
        paths(&v)
            .contains(&"team/final.md".to_string())
            .then_some(())
    })
    .await;
    let v = until("the watcher has settled", 20, || async {
        let (_, again) = get(format!("{}/api/search?q=quillzephyr", s.url)).await;
        (paths(&again).len() >= 2).then_some(again)
    })
    .await;
    assert_eq!(paths(&v), vec!["team/final.md", "y.tmp"], "{v}");
}

/// Folders that arrive, move or go as a whole: the watcher reports only the folder (a folder
/// moved in fires one event; a folder deleted fires one, notify's debouncer folding away what
/// it held), so its documents are found, moved and removed by the folder's own change, each
/// with a `file_changed` of its own.
#[tokio::test]
async fn watcher_follows_folders_moved_in_renamed_and_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    corpus(tmp.path());
    let s = TestServer::start_in(tmp.path(), &[], &[]);
    let start = s.head().await;
    let search = |q: &'static str| {
        let url = format!("{}/api/search?q={q}", s.url);
        async move { paths(&get(url).await.1) }
    };
    // filled outside the data folder, then moved in: no watch ever saw the files arrive
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "pack/one.md", "orchidvane first");
    write(outside.path(), "pack/inner/two.md", "orchidvane second");
    write(outside.path(), "pack/.hidden.md", "orchidvane hidden");
    write(
        outside.path(),
        "pack/node_modules/x.md",
        "orchidvane skipped",
    );
    std::fs::rename(outside.path().join("pack"), tmp.path().join("pack")).unwrap();
    let found = until("the moved-in folder's files are searchable", 20, || async {
        let p = search("orchidvane").await;
        (p.len() == 2).then_some(p)
    })
    .await;
    assert_eq!(found, vec!["pack/inner/two.md", "pack/one.md"]);

    std::fs::rename(tmp.path().join("pack"), tmp.path().join("moved")).unwrap();
    let found = until(
        "the renamed folder's files are found under the new name",
        20,
        || async {
            let p = search("orchidvane").await;
            (p.iter().all(|p| p.starts_with("moved/")) && p.len() == 2).then_some(p)
        },
    )
    .await;
    assert_eq!(found, vec!["moved/inner/two.md", "moved/one.md"]);

    std::fs::remove_dir_all(tmp.path().join("moved")).unwrap();
    until("the deleted folder's files leave the index", 20, || async {
        search("orchidvane").await.is_empty().then_some(())
    })
    .await;
    // the rest of the folder is untouched
    assert_eq!(search("lumenquill").await.len(), 3);

    let changes: Vec<(String, String)> = events_after(&s, start)
        .await
        .iter()
        .filter(|e| e["type"] == "file_changed")
        .map(|e| {
            (
                e["data"]["path"].as_str().unwrap_or_default().to_string(),
                e["data"]["kind"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let has = |path: &str, kind: &str| changes.iter().any(|(p, k)| p == path && k == kind);
    for (path, kind) in [
        ("pack/one.md", "created"),
        ("pack/inner/two.md", "created"),
        ("pack/one.md", "deleted"),
        ("moved/one.md", "created"),
        ("moved/inner/two.md", "created"),
        ("moved/one.md", "deleted"),
        ("moved/inner/two.md", "deleted"),
    ] {
        assert!(has(path, kind), "file_changed {path} {kind} in {changes:?}");
    }
    assert!(
        !changes
            .iter()
            .any(|(p, _)| p.contains("hidden") || p.contains("node_modules")),
        "{changes:?}"
    );
}

/// `GET /api/document?path=` serves the data folder's own text files and nothing else: no `..`,
/// no absolute path, no hidden file (the server's state included), no link out.
#[tokio::test]
async fn documents_are_read_within_the_data_folder_only() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "notes/a.md", "# A\nhello there\n");
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret.txt", "do not serve");
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        tmp.path().join("link.txt"),
    )
    .unwrap();
    let s = TestServer::start_in(tmp.path(), &[], &[]);
    let read = |p: &str| get(format!("{}/api/document?path={}", s.url, urlencode(p)));
    let (code, v) = read("notes/a.md").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["text"], "# A\nhello there\n");
    assert_eq!(v["data"]["path"], "notes/a.md");
    assert!(v["data"]["last_modified"].is_string());
    assert_eq!(v["data"]["lastModified"], v["data"]["last_modified"]);
    for (p, status, says) in [
        ("../../etc/passwd", 400, "`..`"),
        ("/etc/passwd", 400, "relative"),
        (".collective-memory/journal.sqlite3", 400, "hidden"),
        ("notes/none.md", 404, "no file"),
        ("", 400, "required"),
    ] {
        let (code, v) = read(p).await;
        assert_eq!(code, status, "{p}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{p}: {v}");
    }
    #[cfg(unix)]
    {
        let (code, v) = read("link.txt").await;
        assert_eq!(code, 403, "{v}");
        assert!(!v.to_string().contains("do not serve"));
    }
    let (code, v) = get(format!("{}/api/document?path=notes/a.md&extra=1", s.url)).await;
    assert_eq!(code, 400, "{v}");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A plain query is read as a question: its filler words do not decide, forms of a word meet
/// at one stem, a word no document has costs nothing, and explicit syntax still means exactly
/// what it says. While typing, the last word is also the start of a word.
#[tokio::test]
async fn plain_questions_find_the_page_that_answers_them() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "ops/retention.md",
        "# Configuring retention\nThe journal keeps events for seven days. Set retention_max_age_s to change how long they are kept.\n",
    );
    write(
        tmp.path(),
        "misc/faq.md",
        "# How do I do this\nHow do I do it? How can I? What do I do when I do not know how?\n",
    );
    write(
        tmp.path(),
        "notes/deploy.md",
        "# Deployment\nShip the release on Friday.\n",
    );
    let s = TestServer::start_in(tmp.path(), &[], &[]);
    let search = |q: &str| {
        let url = format!(
            "{}/api/search?q={}",
            s.url,
            q.replace(' ', "%20")
                .replace('?', "%3F")
                .replace('"', "%22")
                .replace('+', "%2B")
        );
        async move {
            let (code, v) = get(url).await;
            assert_eq!(code, 200, "{v}");
            v["data"]["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["path"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    // the page that shares only "how do I" with the question is not the answer
    let got = search("How do I configure how long events are kept?").await;
    assert_eq!(
        got.first().map(String::as_str),
        Some("ops/retention.md"),
        "{got:?}"
    );
    assert!(!got.contains(&"misc/faq.md".to_string()), "{got:?}");
    // a word in no document does not hide the one with the others
    let got = search("configuring retention xylophone").await;
    assert_eq!(got, ["ops/retention.md"]);
    // explicit syntax: a phrase, a required and an excluded word
    assert_eq!(search("\"seven days\"").await, ["ops/retention.md"]);
    assert!(search("\"days seven\"").await.is_empty());
    assert_eq!(search("+release -friday").await, Vec::<String>::new());
    // the last word as a prefix, only while typing
    assert!(search("confi").await.is_empty());
    let (_, v) = get(format!("{}/api/search?q=confi&typing=true", s.url)).await;
    assert_eq!(v["data"]["results"][0]["path"], "ops/retention.md", "{v}");
    let (code, _) = get(format!("{}/api/search?q=x&typing=maybe", s.url)).await;
    assert_eq!(code, 400);
}

/// Documents are split into passages along their headings at indexing time: a result names the
/// passage that answers (heading path, lines), the one its snippet's first match is in; the
/// document endpoint reads a range of lines.
#[tokio::test]
async fn results_point_at_the_passage_that_answers() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "guide.md",
        "# Guide\nWelcome to the guide.\n## Install\nRun the installer.\nPick a folder.\n## Backups\nCopy the journal with cmem backup; restore it with cmem restore.\nKeep three copies.\n",
    );
    let s = TestServer::start_in(tmp.path(), &[], &[]);
    let (code, v) = get(format!(
        "{}/api/search?q=how%20do%20I%20restore%20a%20backup%3F",
        s.url
    ))
    .await;
    assert_eq!(code, 200, "{v}");
    let hit = &v["data"]["results"][0];
    assert_eq!(hit["path"], "guide.md", "{v}");
    assert_eq!(hit["passage"]["heading"], "Guide › Backups", "{v}");
    assert_eq!(hit["passage"]["heading_path"], json!(["Guide", "Backups"]));
    assert_eq!(
        (
            hit["passage"]["start_line"].as_u64(),
            hit["passage"]["end_line"].as_u64()
        ),
        (Some(6), Some(8)),
        "{v}"
    );
    let snippet = hit["snippet"].as_str().unwrap();
    assert!(snippet.contains("<b>restore</b>"), "{snippet}");
    // the lines it names, read back
    let (code, d) = get(format!(
        "{}/api/document?path=guide.md&start_line=6&end_line=8",
        s.url
    ))
    .await;
    assert_eq!(code, 200, "{d}");
    assert_eq!(
        d["data"]["text"],
        "## Backups\nCopy the journal with cmem backup; restore it with cmem restore.\nKeep three copies."
    );
    assert_eq!(d["data"]["total_lines"], 8);
    for bad in [
        "start_line=0",
        "start_line=5&end_line=4",
        "start_line=99",
        "start_line=x",
    ] {
        let (code, v) = get(format!("{}/api/document?path=guide.md&{bad}", s.url)).await;
        assert_eq!(code, 400, "{bad}: {v}");
    }
}

/// One search service: the HTTP API (GET and POST) and the command line check a search by the
/// same rules and say the same thing.
#[tokio::test]
async fn every_front_end_checks_a_search_by_the_same_rules() {
    let tmp = tempfile::tempdir().unwrap();
    corpus(tmp.path());
    let s = TestServer::start_in(tmp.path(), &[], &[]);
    let want = "limit must be from 1 to 200";
    let (code, v) = get(format!("{}/api/search?q=vortexmint&limit=500", s.url)).await;
    assert_eq!(code, 400);
    assert_eq!(v["error"], want);
    let (code, v) = s
        .post("/api/search", &json!({"q": "vortexmint", "limit": 500}))
        .await;
    assert_eq!(code, 400);
    assert_eq!(v["error"], want);
    drop(s);
    let dir = tmp.path().to_str().unwrap();
    let (code, _, err) = cmem(&["search", "vortexmint", "--data", dir, "--limit", "500"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(want), "{err}");
}

/// An index written by an earlier version (another schema) is rebuilt by the server, and a
/// read-only opener says so instead of reading it with the wrong fields.
#[tokio::test]
async fn an_index_of_an_earlier_version_is_rebuilt_not_misread() {
    let tmp = tempfile::tempdir().unwrap();
    corpus(tmp.path());
    let index = tmp.path().join(".collective-memory").join("index");
    std::fs::create_dir_all(&index).unwrap();
    {
        let mut b = tantivy::schema::Schema::builder();
        b.add_text_field("path", tantivy::schema::STRING | tantivy::schema::STORED);
        tantivy::Index::create_in_dir(&index, b.build()).unwrap();
    }
    let dir = tmp.path().to_str().unwrap();
    let (code, _, err) = cmem(&["search", "vortexmint", "--data", dir]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("earlier version"), "{err}");
    let s = TestServer::start_in(tmp.path(), &[], &[]);
    let (code, v) = get(format!("{}/api/search?q=vortexmint", s.url)).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["total"], 5, "{v}");
}
