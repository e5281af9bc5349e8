//! The shape of the crate, checked: each top-level module may use only the modules listed for
//! it below, so the layers stay one-way (no import cycles) as the code grows. ARCHITECTURE.md
//! draws the same table top to bottom; change both together, and only by moving a module up,
//! never by letting a lower one reach up.
//!
//! The check reads the sources: every `crate::<module>` outside comments counts as a use, and so
//! does every module of a grouped import (`use crate::{hub, teams::Teams}`). The wire format is a
//! crate of its own below all of these (`cmem-wire`), which the compiler keeps from reaching up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top: a module may use those listed for it, nothing else in the crate.
const LAYERS: &[(&str, &[&str])] = &[
    ("testing", &[]),
    ("nats", &[]),
    ("clock", &[]),
    ("net", &[]),
    ("config", &["net"]),
    ("engine", &[]),
    ("envelope", &[]),
    ("journal", &["clock", "envelope", "nats", "testing"]),
    ("hub", &["clock", "envelope", "journal", "net"]),
    ("memory", &["clock", "config", "envelope", "hub"]),
    ("teams", &["clock", "nats"]),
    ("access", &["clock", "hub", "teams"]),
    (
        "collab",
        &["access", "clock", "envelope", "hub", "teams", "testing"],
    ),
    ("monitor", &["envelope", "hub", "memory"]),
    ("metrics", &["collab", "hub", "memory", "teams"]),
    (
        "app",
        &[
            "access", "collab", "config", "hub", "journal", "memory", "metrics", "monitor", "teams",
        ],
    ),
    (
        "http",
        &[
            "access", "clock", "collab", "envelope", "hub", "journal", "memory", "teams",
        ],
    ),
    (
        "transports",
        &[
            "access", "app", "clock", "collab", "config", "engine", "envelope", "http", "hub",
            "net", "teams",
        ],
    ),
    (
        "api",
        &[
            "access", "app", "clock", "collab", "config", "envelope", "http", "hub", "memory",
            "metrics", "teams",
        ],
    ),
    (
        "mcp",
        &[
            "access", "api", "app", "clock", "collab", "config", "envelope", "http", "journal",
            "memory", "teams",
        ],
    ),
    ("ops", &["clock", "config", "journal", "net"]),
    (
        "server",
        &[
            "access",
            "api",
            "app",
            "clock",
            "collab",
            "config",
            "http",
            "hub",
            "journal",
            "mcp",
            "memory",
            "metrics",
            "monitor",
            "net",
            "teams",
            "transports",
        ],
    ),
    (
        "fuzzing",
        &[
            "access",
            "api",
            "collab",
            "config",
            "envelope",
            "http",
            "hub",
            "mcp",
            "memory",
            "teams",
            "transports",
        ],
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `crate::<name>` uses in `text`, comments left out; a grouped import
/// (`crate::{hub, teams::{a, b}}`, over several lines too) uses each module it names.
fn uses(text: &str) -> BTreeSet<String> {
    let code: Vec<&str> = text
        .lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect();
    let code = code.join("\n");
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // the first name of each item at the group's top level
            let (mut depth, mut item) = (0usize, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            found.insert(ident(&item));
        } else {
            found.insert(ident(after));
        }
        rest = after;
    }
    found.remove("");
    found
}

#[test]
fn grouped_imports_count_as_uses() {
    let text = "use crate::{\n    hub::{self, Hub},\n    teams, // not crate::memory\n};\nuse crate::clock::now;";
    let got: Vec<String> = uses(text).into_iter().collect();
    assert_eq!(got, ["clock", "hub", "teams"]);
}

/// The module a file belongs to (`src/hub/registry.rs` → `hub`); `None` for `lib.rs` and the
/// binary, which sit above everything.
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.as_str() {
        "lib.rs" | "bin" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let allowed: BTreeMap<&str, BTreeSet<&str>> = LAYERS
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        let Some(ok) = allowed.get(module.as_str()) else {
            wrong.push(format!(
                "{}: module `{module}` is not in the LAYERS table of tests/layers.rs",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for used in uses(&text) {
            if used != module && !ok.contains(used.as_str()) {
                wrong.push(format!(
                    "{}: `{module}` uses `crate::{used}`, which is not below it",
                    file.display()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "layer violations:\n{}", wrong.join("\n"));
}

#[test]
fn the_layers_are_ordered_and_cover_the_crate() {
    // each module may use only modules listed before it: then no cycle is possible
    for (i, (module, deps)) in LAYERS.iter().enumerate() {
        for d in *deps {
            let below = LAYERS[..i].iter().any(|(m, _)| m == d);
            assert!(
                below,
                "`{module}` may use `{d}`, which is not listed before it"
            );
        }
    }
    // every module lib.rs declares is in the table
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(name) = line
            .trim()
            .strip_prefix("pub mod ")
            .or_else(|| line.trim().strip_prefix("mod "))
        {
            let name = name.trim_end_matches(';');
            assert!(
                LAYERS.iter().any(|(m, _)| *m == name),
                "lib.rs declares `{name}`, which tests/layers.rs does not place"
            );
        }
    }
}

#[test]
fn the_checker_sees_uses_and_skips_comments() {
    let found = uses(
        "use crate::hub::Hub; // crate::server\n/// [x](crate::api)\nlet a = crate::clock::now();",
    );
    assert_eq!(
        found,
        ["clock", "hub"].iter().map(|s| s.to_string()).collect()
    );
}

/// `super::<sibling>` uses in `text` (grouped ones too), comments left out.
fn sibling_uses(text: &str, siblings: &BTreeSet<String>) -> BTreeSet<String> {
    // only `super::`: a file's `crate::<name>` is a top-level module, whatever its name
    let as_crate = text
        .replace("crate::", "CRATE::")
        .replace("super::", "crate::");
    uses(&as_crate)
        .into_iter()
        .filter(|u| siblings.contains(u))
        .collect()
}

/// Inside a module folder the files may use each other, but never in a circle: a circle means
/// two of them are one thing cut in two, or one should sit beneath the others.
#[test]
fn no_module_folder_has_an_import_circle() {
    let mut circles = Vec::new();
    for entry in std::fs::read_dir(src()).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .collect();
        let name = |p: &Path| p.file_stem().unwrap().to_str().unwrap().to_string();
        let siblings: BTreeSet<String> = files
            .iter()
            .map(|p| name(p))
            .filter(|n| n != "mod" && n != "tests")
            .collect();
        let graph: BTreeMap<String, BTreeSet<String>> = files
            .iter()
            .filter(|p| siblings.contains(&name(p)))
            .map(|p| {
                let text = std::fs::read_to_string(p).unwrap();
                // a file's own test module may reach anywhere
                let text = text.split("#[cfg(test)]").next().unwrap_or("");
                (name(p), sibling_uses(text, &siblings))
            })
            .collect();
        // depth-first search for a path back to where it started
        for start in graph.keys() {
            let mut stack = vec![vec![start.clone()]];
            while let Some(path) = stack.pop() {
                let last = path.last().unwrap();
                for next in graph.get(last).into_iter().flatten() {
                    if next == start {
                        let mut c = path.clone();
                        c.push(next.clone());
                        circles.push(format!("{}: {}", dir.display(), c.join(" -> ")));
                    } else if !path.contains(next) {
                        let mut p = path.clone();
                        p.push(next.clone());
                        stack.push(p);
                    }
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}
