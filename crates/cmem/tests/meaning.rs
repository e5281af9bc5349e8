//! Meaning search through the real binary (issue 26): a question finds a document that shares
//! none of its words; hits name their passage and lines; the vectors follow edits, deletions
//! and renames, survive a restart, and are rebuilt when their file is damaged; bad modes are
//! refused; a server without the model says why.

mod common;

use common::{TestServer, get, until};
use serde_json::Value;

const SECRET: &str = "# Account help\n\
\n\
## Billing\n\
\n\
Invoices are sent on the first day of each month.\n\
\n\
## Changing your login secret\n\
\n\
Open the profile page, choose Security, and type a new passphrase twice.\n\
The old one stops working at once.\n";

const SHIPPING: &str = "# Shipping to production\n\nRun the release pipeline from the main branch; it builds the container image and rolls it out.\n";

const PETS: &str = "# Pets\n\nThe cat sat on the mat and purred at the dog.\n";

/// The question shares no word with SECRET in any form (its words: how, do, I, reset, my,
/// password).
const QUESTION: &str = "how do I reset my password";

fn folder() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("account.md"), SECRET).unwrap();
    std::fs::write(tmp.path().join("shipping.md"), SHIPPING).unwrap();
    std::fs::write(tmp.path().join("pets.md"), PETS).unwrap();
    tmp
}

/// `/system/indexing`'s `vectors` once every indexed document has its vectors (the fence for
/// everything about the vectors: a positive condition, never a sleep).
async fn vectors_settled(s: &TestServer, documents: u64) -> Value {
    until("the vectors to catch up", 120, || async {
        let (_, v) = get(format!("{}/system/indexing", s.url)).await;
        let d = &v["data"];
        let vec = &d["vectors"];
        (d["running"] == false
            && vec["running"] == false
            && vec["documents_total"] == documents
            && vec["documents"] == documents)
            .then(|| vec.clone())
    })
    .await
}

async fn search(s: &TestServer, q: &str, mode: Option<&str>) -> (u16, Value) {
    let mut url = reqwest::Url::parse(&format!("{}/api/search", s.url)).unwrap();
    url.query_pairs_mut().append_pair("q", q);
    if let Some(m) = mode {
        url.query_pairs_mut().append_pair("mode", m);
    }
    get(url.as_str()).await
}

fn paths(answer: &Value) -> Vec<String> {
    answer["data"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["path"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_question_finds_a_document_that_shares_none_of_its_words() {
    let tmp = folder();
    let s = TestServer::start_in(tmp.path(), &[], &[]);
    let v = vectors_settled(&s, 3).await;
    assert!(
        v["model"].as_str().unwrap().starts_with("all-MiniLM-L6-v2"),
        "{v}"
    );
    assert_eq!(v["passages"], 4, "{v}");

    // words alone cannot find it
    let (code, kw) = search(&s, QUESTION, Some("keyword")).await;
    assert_eq!(code, 200, "{kw}");
    assert!(!paths(&kw).contains(&"account.md".to_string()), "{kw}");
    assert_eq!(kw["data"]["mode"], "keyword");

    // the default (hybrid) does, first, and says the meaning found it
    let (code, hy) = search(&s, QUESTION, None).await;
    assert_eq!(code, 200, "{hy}");
    assert_eq!(hy["data"]["mode"], "hybrid");
    let first = &hy["data"]["results"][0];
    assert_eq!(first["path"], "account.md", "{hy}");
    assert_eq!(first["signals"], serde_json::json!(["semantic"]), "{hy}");
    // its passage is the section that answers, with its lines
    let p = &first["passage"];
    assert_eq!(
        p["heading"], "Account help › Changing your login secret",
        "{hy}"
    );
    assert_eq!(
        (p["start_line"].as_u64(), p["end_line"].as_u64()),
        (Some(7), Some(10)),
        "{hy}"
    );
    assert!(
        first["snippet"].as_str().unwrap().contains("passphrase"),
        "{hy}"
    );

    // semantic alone ranks it first too; the unrelated document is below it or absent
    let (_, se) = search(&s, QUESTION, Some("semantic")).await;
    assert_eq!(
        paths(&se).first().map(String::as_str),
        Some("account.md"),
        "{se}"
    );

    // a word both find is found by both
    let (_, both) = search(&s, "passphrase security", None).await;
    let hit = &both["data"]["results"][0];
    assert_eq!(hit["path"], "account.md");
    assert_eq!(
        hit["signals"],
        serde_json::json!(["keyword", "semantic"]),
        "{both}"
    );

    // each document says when its keyword entry and its vectors were made
    let (code, doc) = get(format!("{}/api/document?path=account.md", s.url)).await;
    assert_eq!(code, 200, "{doc}");
    let index = &doc["data"]["index"];
    for key in ["keyword_indexed_at", "vectors_embedded_at"] {
        let at = index[key].as_str().unwrap_or_default();
        assert!(at.starts_with("20") && at.ends_with('Z'), "{key}: {doc}");
    }
    let (_, lines) = get(format!(
        "{}/api/document?path=account.md&start_line=7&end_line=7",
        s.url
    ))
    .await;
    assert!(
        lines["data"]["index"]["keyword_indexed_at"].is_string(),
        "{lines}"
    );

    // the history offers an earlier question near in meaning, though it shares no word
    let (code, sim) = get(format!(
        "{}/prompts/similar?q=I+forgot+my+login+passphrase",
        s.url
    ))
    .await;
    assert_eq!(code, 200, "{sim}");
    let offered = &sim["data"]["similar"];
    assert!(
        offered
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["query"] == QUESTION && e["by"] == "meaning"),
        "{sim}"
    );
    let (_, none) = get(format!("{}/prompts/similar?q=quarterly+budget", s.url)).await;
    assert_eq!(none["data"]["similar"], serde_json::json!([]), "{none}");

    // explicit syntax means its words exactly: keyword, whatever the default
    let (_, ex) = search(&s, "\"release pipeline\"", None).await;
    assert_eq!(ex["data"]["mode"], "keyword");
    assert_eq!(paths(&ex), vec!["shipping.md".to_string()]);
}

#[tokio::test]
async fn bad_modes_and_limits_are_refused_with_the_reason() {
    let s = TestServer::start(&[]);
    for (query, want) in [
        ("q=x&mode=fuzzy", "hybrid, keyword or semantic"),
        ("q=x&limit=0", "limit"),
        ("q=x&limit=ten", "limit"),
        ("q=%22exact%22&mode=semantic", "keyword syntax"),
    ] {
        let (code, body) = get(format!("{}/api/search?{query}", s.url)).await;
        assert_eq!(code, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap_or_default().contains(want),
            "{query}: {body}"
        );
    }
    let (code, body) = common::post_as(
        &format!("{}/api/search", s.url),
        None,
        serde_json::json!({"q": "x", "mode": 3}),
    )
    .await;
    assert_eq!(code, 400, "{body}");
}

#[tokio::test]
async fn without_the_model_search_is_keyword_and_meaning_is_refused_with_why() {
    let tmp = folder();
    let s = TestServer::start_in(tmp.path(), &[], &[("CM_EMBEDDING_MODEL", "off")]);
    let (code, body) = search(&s, QUESTION, None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["mode"], "keyword");
    let (code, body) = search(&s, QUESTION, Some("semantic")).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("embedding_model"),
        "{body}"
    );
    let (_, st) = get(format!("{}/system/indexing", s.url)).await;
    assert!(st["data"]["vectors"]["model"].is_null(), "{st}");
    assert!(
        st["data"]["vectors"]["reason"]
            .as_str()
            .unwrap()
            .contains("off"),
        "{st}"
    );
}

#[tokio::test]
async fn the_vectors_follow_edits_deletions_and_renames_and_survive_a_restart() {
    let tmp = folder();
    let dir = tmp.path().to_path_buf();
    let mut s = TestServer::start_in(&dir, &[], &[]);
    vectors_settled(&s, 3).await;

    // an edit: the pets page now answers a question about boats
    std::fs::write(
        dir.join("pets.md"),
        "# Pets\n\nOur sailing dinghy is moored at the harbour; take the oars.\n",
    )
    .unwrap();
    until("the edit to be embedded", 120, || async {
        let (_, a) = search(&s, "where is the boat kept", Some("semantic")).await;
        (paths(&a).first().map(String::as_str) == Some("pets.md")).then_some(())
    })
    .await;

    // a deletion: its vectors go
    std::fs::remove_file(dir.join("shipping.md")).unwrap();
    vectors_settled(&s, 2).await;
    let (_, a) = search(&s, "deploy the container image", Some("semantic")).await;
    assert!(!paths(&a).contains(&"shipping.md".to_string()), "{a}");

    // a rename: found under the new name, never the old
    std::fs::rename(dir.join("account.md"), dir.join("help.md")).unwrap();
    until("the rename to be embedded", 120, || async {
        let (_, a) = search(&s, QUESTION, Some("semantic")).await;
        (paths(&a).first().map(String::as_str) == Some("help.md")).then_some(())
    })
    .await;
    let (_, a) = search(&s, QUESTION, Some("semantic")).await;
    assert!(!paths(&a).contains(&"account.md".to_string()), "{a}");
    vectors_settled(&s, 2).await;

    // a restart embeds nothing and still answers
    s.terminate();
    let s = TestServer::start_in(&dir, &[], &[]);
    let v = vectors_settled(&s, 2).await;
    assert_eq!(v["embedded_passages"], 0, "nothing embedded again: {v}");
    let (_, a) = search(&s, QUESTION, None).await;
    assert_eq!(
        paths(&a).first().map(String::as_str),
        Some("help.md"),
        "{a}"
    );

    // a keyword index made again from nothing (a new version's schema) keeps the vectors: the
    // first pass waits for the start-up run instead of taking every file for gone
    let mut s = s;
    s.terminate();
    std::fs::remove_dir_all(dir.join(".collective-memory").join("index")).unwrap();
    let s = TestServer::start_in(&dir, &[], &[]);
    let v = vectors_settled(&s, 2).await;
    assert_eq!(v["embedded_passages"], 0, "nothing embedded again: {v}");
}

#[tokio::test]
async fn a_damaged_or_missing_vector_file_is_rebuilt() {
    let tmp = folder();
    let dir = tmp.path().to_path_buf();
    let mut s = TestServer::start_in(&dir, &[], &[]);
    vectors_settled(&s, 3).await;
    s.terminate();
    let vectors = dir.join(".collective-memory").join("vectors");
    let file = std::fs::read_dir(&vectors)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "bin"))
        .expect("a vector file");

    // damaged: flipped bytes in the middle
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let mut s = TestServer::start_in(&dir, &[], &[]);
    let v = vectors_settled(&s, 3).await;
    assert!(v["rebuilt"].as_str().unwrap().contains("checksum"), "{v}");
    assert_eq!(v["embedded_passages"], 4, "embedded again: {v}");
    let (_, a) = search(&s, QUESTION, None).await;
    assert_eq!(
        paths(&a).first().map(String::as_str),
        Some("account.md"),
        "{a}"
    );
    s.terminate();

    // missing: made again
    std::fs::remove_dir_all(&vectors).unwrap();
    let s = TestServer::start_in(&dir, &[], &[]);
    let v = vectors_settled(&s, 3).await;
    assert_eq!(v["embedded_passages"], 4, "{v}");
    assert!(file.exists());
}
