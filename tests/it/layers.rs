//! The library's layers only point down: a module may use the modules
//! ranked below it, never one above (and so there are no cycles). Checked
//! from the source: every `crate::NAME` path in code (comments aside) of
//! every file under `src/`, except the binary's own `main.rs`, `cli/` and
//! `testkit/`, which sit on top and may use anything public.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use modules of a lower rank only.
const RANKS: &[&[&str]] = &[
    &["pb", "encoding", "tls"],
    &["config", "net", "metrics", "blocking"],
    &["domain"],
    // W3C trace contexts and OpenTelemetry spans: the SDKs and the server
    // both make spans.
    &["telemetry"],
    // The SDKs: they speak the proto and the domain types, never the server.
    &["client", "worker"],
    &["store"],
    &["raft"],
    &["consensus"],
    &["scheduler"],
    &["api"],
    &["node"],
];

/// The server's layers: none of them may use an SDK (the SDKs sit below
/// the server only so that they cannot use it).
const SERVER: &[&str] = &["store", "raft", "consensus", "scheduler", "api", "node"];
const SDKS: &[&str] = &["client", "worker"];

/// Where protobuf types may appear: the gRPC edges (the api, the Raft wire,
/// the clock exchange between peers, the client and worker SDKs) and the
/// node that serves them. The store and the scheduler speak domain types.
const PB_ALLOWED: &[&str] =
    &["pb", "api", "raft", "consensus", "node", "client", "worker", "testkit", "net", "telemetry"];

/// Only these use openraft: `raft` owns its types; `consensus` is the handle
/// that keeps it behind drover's own types.
const OPENRAFT_ALLOWED: &[&str] = &["raft", "consensus"];

fn rank(module: &str) -> Option<usize> {
    RANKS.iter().position(|r| r.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments (line comments and doc comments).
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(|l| l.split("//").next().unwrap_or("")).filter(|l| !l.trim().is_empty())
}

/// Every top-level module a line names through `crate::`.
fn crate_refs(line: &str, out: &mut BTreeSet<String>) {
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::{c, d}}`: the first segment of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            for (i, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        item_start = false;
                        let name: String =
                            group[i..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                        if !name.is_empty() {
                            out.insert(name);
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.insert(name);
        }
    }
}

/// Every file of the library under `src/` (the binary's `main.rs`, `cli/`
/// and `testkit/` sit on top and are left out): (path, path under `src/`,
/// top-level module).
fn library_files() -> Vec<(PathBuf, PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .filter_map(|file| {
            let rel = file.strip_prefix(&src).expect("under src").to_path_buf();
            let first = rel.components().next().expect("a path").as_os_str().to_string_lossy().into_owned();
            let module = first.trim_end_matches(".rs").to_string();
            (!matches!(module.as_str(), "main" | "lib" | "cli" | "testkit")).then_some((file, rel, module))
        })
        .collect()
}

#[test]
fn modules_only_use_the_layers_below_them() {
    let mut violations = Vec::new();
    let mut checked = 0;
    for (file, rel, module) in library_files() {
        let Some(own) = rank(&module) else {
            violations.push(format!("{}: module {module} has no rank in this test", rel.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        let mut refs = BTreeSet::new();
        let mut openraft = false;
        for line in code_lines(&text) {
            crate_refs(line, &mut refs);
            openraft |= line.contains("openraft::");
        }
        for used in refs.iter().filter(|u| **u != module) {
            if SERVER.contains(&module.as_str()) && SDKS.contains(&used.as_str()) {
                violations.push(format!("{}: the server's {module} uses the SDK {used}", rel.display()));
                continue;
            }
            match rank(used) {
                Some(r) if r < own => {}
                Some(_) => violations.push(format!("{}: {module} uses {used}, which is not below it", rel.display())),
                None => violations.push(format!("{}: {module} uses unknown module {used}", rel.display())),
            }
        }
        if refs.contains("pb") && !PB_ALLOWED.contains(&module.as_str()) {
            violations.push(format!("{}: protobuf types in {module}", rel.display()));
        }
        if openraft && !OPENRAFT_ALLOWED.contains(&module.as_str()) {
            violations.push(format!("{}: openraft used in {module}", rel.display()));
        }
        checked += 1;
    }
    assert!(checked > 40, "only {checked} files checked: is the source tree where this test looks?");
    assert!(violations.is_empty(), "layering violations:\n{}", violations.join("\n"));
}

#[test]
fn the_checker_sees_upward_uses() {
    let mut refs = BTreeSet::new();
    crate_refs("use crate::{api::ApiError, store::{self, keys}};", &mut refs);
    crate_refs("    let x = crate::node::start(crate::worker::Handler);", &mut refs);
    let names: Vec<&str> = refs.iter().map(String::as_str).collect();
    assert_eq!(names, ["api", "node", "store", "worker"]);
    let code: Vec<&str> = code_lines("/// see [`crate::api`]\nuse crate::store; // crate::node\n").collect();
    assert_eq!(code, ["use crate::store; "]);
}

/// Every task the server spawns has an owner: the node's `TaskTracker`,
/// so that a shutdown waits for it. A bare `tokio::spawn` (or a thread) in
/// the server's modules would run outside it. The SDKs and the binary may
/// spawn as they like.
#[test]
fn the_server_spawns_only_on_its_tracker() {
    let mut bare = Vec::new();
    for (file, rel, module) in library_files() {
        if SDKS.contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        for line in code_lines(&text) {
            if line.contains("tokio::spawn(") || line.contains("thread::spawn(") {
                bare.push(format!("{}: {}", rel.display(), line.trim()));
            }
        }
    }
    assert!(bare.is_empty(), "spawned outside the node's TaskTracker:\n{}", bare.join("\n"));
}

/// What is for testing stays out of what users get: the library has no
/// test tooling, and the node's configuration no fault injection.
#[test]
fn the_library_carries_no_test_tooling() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("lib.rs");
    assert!(!code_lines(&lib).any(|l| l.contains("mod testkit")), "the library declares testkit");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    assert!(!manifest.contains("testkit"), "Cargo.toml names a testkit feature");
    let config = std::fs::read_to_string(root.join("src/config.rs")).expect("config.rs");
    assert!(!code_lines(&config).any(|l| l.contains("skew")), "NodeConfig carries a fault-injection setting");
}
