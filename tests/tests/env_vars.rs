//! The library's environment variables are one list
//! (`fmcache_core::config::LIBRARY_VARS`, and `CONTEXT_VARS` for those it
//! reads but does not own): every upper-case name the library's sources
//! spell as a string literal (what `getenv` is asked for) must be in it,
//! and every listed name must still be read somewhere, so the list
//! cannot go stale in either direction.

use std::collections::BTreeSet;
use std::path::Path;

use fmcache_core::config::{CONTEXT_VARS, LIBRARY_VARS};
use fmcache_tests::workspace;

/// Upper-case literals in these sources that are not variable names.
const NOT_VARIABLES: &[(&str, &str)] = &[
    ("ORIGIN", "the $ORIGIN token of a library search path"),
    ("LIB", "the $LIB token of a library search path"),
    ("PLATFORM", "the $PLATFORM token of a library search path"),
    (
        "DF_1_NODEFLIB",
        "an ELF dynamic flag (ld.so skips the default directories)",
    ),
    ("FMCLIVE1", "the live counters file's magic"),
    ("O_TMPFILE", "an open flag, named in a pass-through reason"),
];

/// The sources of what runs inside the user's processes.
const SOURCES: &[&str] = &["preload/src", "crates/fmcache-core/src"];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `"NAME"`, `b"NAME"`, `c"NAME"` and `"NAME="` literals (three or more
/// of A-Z, 0-9, `_`, starting with a letter) outside `//` comment lines,
/// with where each was found.
fn upper_case_literals(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'"' {
                i += 1;
                continue;
            }
            let start = i + 1;
            let mut j = start;
            while j < b.len()
                && (b[j].is_ascii_uppercase() || b[j].is_ascii_digit() || b[j] == b'_')
            {
                j += 1;
            }
            let name = &line[start..j];
            let end = if b.get(j) == Some(&b'=') { j + 1 } else { j };
            if b.get(end) == Some(&b'"') && name.len() >= 3 && b[start].is_ascii_uppercase() {
                out.push((name.to_string(), n + 1));
                i = end + 1;
            } else {
                // Not such a literal: go on after this quote.
                i = start;
            }
        }
    }
    out
}

#[test]
fn every_variable_the_library_reads_is_listed() {
    let mut files = Vec::new();
    for d in SOURCES {
        rust_files(&workspace().join(d), &mut files);
    }
    assert!(files.len() > 20, "sources not found: {files:?}");
    let listed: BTreeSet<&str> = LIBRARY_VARS
        .iter()
        .chain(CONTEXT_VARS)
        .map(|(n, _)| *n)
        .collect();
    let not_vars: BTreeSet<&str> = NOT_VARIABLES.iter().map(|(n, _)| *n).collect();
    let mut seen = BTreeSet::new();
    let mut unlisted = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (name, line) in upper_case_literals(&text) {
            if !listed.contains(name.as_str()) && !not_vars.contains(name.as_str()) {
                unlisted.push(format!("{}:{line}: {name}", f.display()));
            }
            seen.insert(name);
        }
    }
    assert!(
        unlisted.is_empty(),
        "read by the library but not in fmcache_core::config::LIBRARY_VARS or CONTEXT_VARS \
         (or NOT_VARIABLES here, if not a variable):\n{}",
        unlisted.join("\n")
    );
    let dead: Vec<&&str> = listed
        .iter()
        .chain(&not_vars)
        .filter(|n| !seen.contains(**n))
        .collect();
    assert!(dead.is_empty(), "listed but read nowhere: {dead:?}");
}

#[test]
fn the_scanner_finds_literals() {
    let found: Vec<String> = upper_case_literals(
        "let a = get(\"DLFM_OP\"); b\"LD_AUDIT=\" c\"X_Y\" \"lower\" \"AB\" \"A-B\"\n// \"IN_COMMENT\"\n",
    )
    .into_iter()
    .map(|(n, _)| n)
    .collect();
    assert_eq!(found, ["DLFM_OP", "LD_AUDIT", "X_Y"]);
}

/// README's Environment table names every one of the library's own
/// variables.
#[test]
fn the_readme_table_names_every_library_variable() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let start = readme
        .find("\n## Environment\n")
        .expect("README: ## Environment");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let rows: Vec<&str> = section.lines().filter(|l| l.starts_with("| `")).collect();
    let missing: Vec<&str> = LIBRARY_VARS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| {
            !rows.iter().any(|r| {
                r.split(" | ")
                    .next()
                    .is_some_and(|c| c.contains(&format!("`{n}`")))
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "not in README's Environment table: {missing:?}"
    );
}
