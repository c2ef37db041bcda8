//! The library's layers only point down: a module may use the modules
//! ranked below it, never one above (and so there are no cycles). Checked
//! from the source: every `crate::NAME` path in code (comments aside) of
//! every file under `src/`, except the binary's own `main.rs` and `cli/`,
//! which sit on top and may use anything public.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use modules of a lower rank only.
const RANKS: &[&[&str]] = &[
    &["pb", "encoding", "tls"],
    &["config", "net", "metrics"],
    &["domain"],
    &["store"],
    &["raft"],
    &["consensus"],
    &["scheduler"],
    &["api"],
    &["node"],
    &["client"],
    &["worker"],
    &["testkit"],
];

/// Where protobuf types may appear: the gRPC edges (the api, the Raft wire,
/// the clock exchange between peers, the client and worker SDKs) and the
/// node that serves them. The store and the scheduler speak domain types.
const PB_ALLOWED: &[&str] = &["pb", "api", "raft", "consensus", "node", "client", "worker", "testkit", "net"];

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

#[test]
fn modules_only_use_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("a path").as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_string();
        if matches!(module.as_str(), "main" | "lib" | "cli") {
            continue;
        }
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
