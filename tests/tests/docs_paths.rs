//! The documents a newcomer reads first name files and folders; every one of them must exist, so
//! a move that forgets the docs fails here instead of misleading the next reader.
//!
//! Checked: every `code span` that looks like a repository path (has a `/`, no spaces, not an
//! absolute or variable path, no placeholders) and every relative Markdown link target.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository root")
        .to_path_buf()
}

/// Code spans of `text` (single backticks; fenced blocks are skipped).
fn code_spans(text: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut parts = line.split('`');
        parts.next();
        while let (Some(inside), Some(_)) = (parts.next(), parts.next()) {
            spans.push(inside.to_owned());
        }
    }
    spans
}

/// Relative link targets of `text`: `](target)`, anchors and titles dropped.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split_whitespace().next().unwrap_or("");
        let target = target.split('#').next().unwrap_or("");
        if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            targets.push(target.to_owned());
        }
        rest = &rest[end..];
    }
    targets
}

/// True when a code span names a file or folder of this repository.
fn looks_like_repo_path(span: &str) -> bool {
    let placeholder = |c: char| "{}<>*$|=:,()[]@~\\\"'".contains(c);
    span.contains('/')
        && !span.contains(' ')
        && !span.starts_with('/')
        && !span.starts_with('.')
        && !span.contains("://")
        && !span.chars().any(placeholder)
        // `a/b` pairs of words (`get/set`, `v2/v3`) are not paths; a path has a file name with
        // an extension or ends in a folder separator, or starts at a top-level folder.
        && (span.ends_with('/')
            || span.rsplit('/').next().is_some_and(|f| f.contains('.'))
            || TOP_LEVEL.iter().any(|t| span.starts_with(t)))
}

const TOP_LEVEL: &[&str] = &[
    "common/",
    "keepers/",
    "tests/",
    "docs/",
    "config/",
    "deploy/",
    "helm/",
    "systemd/",
    "scripts/",
    "migrations/",
];

fn missing_in(doc: &str) -> BTreeSet<String> {
    let root = repo_root();
    let path = root.join(doc);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {doc}: {e}"));
    let base = path.parent().unwrap_or(&root).to_path_buf();
    let mut missing = BTreeSet::new();
    for span in code_spans(&text) {
        if looks_like_repo_path(&span) && !root.join(&span).exists() {
            missing.insert(format!("`{span}`"));
        }
    }
    for target in link_targets(&text) {
        if !base.join(&target).exists() {
            missing.insert(format!("link ({target})"));
        }
    }
    missing
}

#[test]
fn architecture_names_only_paths_that_exist() {
    let missing = missing_in("docs/architecture.md");
    assert!(
        missing.is_empty(),
        "docs/architecture.md names paths that do not exist: {missing:?}"
    );
}

#[test]
fn readme_and_operations_name_only_paths_that_exist() {
    for doc in [
        "README.md",
        "docs/operations.md",
        "keepers/db-backup/README.md",
    ] {
        let missing = missing_in(doc);
        assert!(
            missing.is_empty(),
            "{doc} names paths that do not exist: {missing:?}"
        );
    }
}

#[test]
fn the_check_sees_a_missing_path() {
    let text =
        "see `common/nowhere/src/lib.rs` and [x](nowhere.md) but not `v2/v3` or `/proc/self`";
    let spans: Vec<_> = code_spans(text)
        .into_iter()
        .filter(|s| looks_like_repo_path(s))
        .collect();
    assert_eq!(spans, ["common/nowhere/src/lib.rs"]);
    assert_eq!(link_targets(text), ["nowhere.md"]);
}
