//! What a new user meets in the first hour, through the real binary (issue 25): a mistyped
//! data folder, a mistyped config key, log lines in a file.

mod common;

use std::process::{Command, Stdio};

use common::TestServer;

/// `--data` naming a folder that does not exist was created silently and served 0 documents.
#[test]
fn a_data_folder_that_does_not_exist_is_refused_unless_created_on_purpose() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("notse");
    let out = Command::new(env!("CARGO_BIN_EXE_cmem"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data"])
        .arg(&missing)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("does not exist") && err.contains("--create"),
        "{err}"
    );
    assert!(!missing.exists(), "nothing is made without --create");

    let s = TestServer::start_in(&missing, &["--create"], &[]);
    assert!(missing.is_dir());
    drop(s);
}

/// An unknown key in the config file listed all the keys instead of the one meant.
#[test]
fn a_mistyped_config_key_names_the_key_it_meant() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".collective-memory").join("config");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cmem.toml"), "bnd = \"127.0.0.1:0\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cmem"))
        .args(["serve", "--data"])
        .arg(tmp.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("did you mean `bind`?"), "{err}");
    assert!(
        !err.contains("retention_max_events"),
        "not the whole list: {err}"
    );
}

/// Log lines kept their colour codes when written to a file or a pipe.
#[test]
fn logs_written_to_a_file_carry_no_colour_codes() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("server.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cmem"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data"])
        .arg(tmp.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    for line in std::io::BufReader::new(stdout).lines() {
        if line.unwrap().contains("listening on") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(err.contains("INFO"), "something was logged: {err}");
    assert!(!err.contains('\u{1b}'), "colour codes in a file: {err:?}");
}

/// SVG and other image formats were indexed as text: "text" matched twenty SVGs of polygons.
#[tokio::test]
async fn images_are_not_indexed_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("logo.svg"),
        "<svg><text>quokkavector</text><polygon points=\"0,0 1,1\"/></svg>",
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("notes.md"),
        "# Notes\nquokkavector drawing\n",
    )
    .unwrap();
    let paths = |url: String| async move {
        let (code, v) = common::get(format!("{url}/api/search?q=quokkavector")).await;
        assert_eq!(code, 200, "{v}");
        let mut p: Vec<String> = v["data"]["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["path"].as_str().unwrap().to_string())
            .collect();
        p.sort();
        p
    };
    let s = TestServer::start_in(tmp.path(), &[], &[]);
    assert_eq!(paths(s.url.clone()).await, ["notes.md"]);
    drop(s);
    // configurable: only PNGs skipped now, so the SVG is text again
    let s = TestServer::start_in(tmp.path(), &["--index-skip-extensions", "png"], &[]);
    assert_eq!(paths(s.url.clone()).await, ["logo.svg", "notes.md"]);
}

/// `cmem doctor --data X` tested port 8000 rather than the server running on X, and without
/// `--token` on a server with users it blamed a proxy for dropping `Upgrade`.
#[test]
fn doctor_finds_the_folders_server_and_asks_for_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, err) = common::cmem_in(tmp.path(), &["user", "add", "alice", "--admin"]);
    assert_eq!(code, 0, "{err}");
    let alice = common::token_for(tmp.path(), "alice");
    let s = TestServer::start_authed(tmp.path(), &[], &[], Some(&alice));
    let (_, out, err) = common::cmem_in(tmp.path(), &["doctor", "--json"]);
    let report: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    assert_eq!(report["url"].as_str(), Some(s.url.as_str()), "{report}");
    let advice = report["advice"].to_string();
    assert!(advice.contains("--token"), "{advice}");
    assert!(
        !advice.contains("Upgrade"),
        "no proxy is to blame: {advice}"
    );
    assert!(
        report["selftest"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["transport"] == "websocket" && p["needs_token"] == true),
        "{report}"
    );
    // with the token every transport gets through
    let (code, out, _) = common::cmem_in(tmp.path(), &["doctor", "--json", "--token", &alice]);
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(code, 0, "{report}");
}
