//! No import circle between the crate's top-level modules.
//!
//! The graph is read from the sources, not from the compiler: a file under
//! `src/<m>` (or `src/<m>.rs`) that names `crate::<n>…` (or reaches the
//! crate root through `super::`) is an arrow from `m` to `n`. Comments are
//! skipped; test code counts too, since a test module that needs a module
//! above it is the same tangle. `lib.rs` and `main.rs` are the root and
//! import everything by design. A circle fails the test with one path
//! around it and the lines that make each arrow.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Arrows `from -> to`, each with the first `file:line` that makes it.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

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

/// The module path of a file: `src/a/b.rs` → `[a, b]`, `src/a/mod.rs` and
/// `src/a.rs` → `[a]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_owned());
    }
    parts
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first names of a `{a, b::c, self}` group (nested groups skipped).
fn group_heads(s: &str) -> Vec<&str> {
    let mut heads = Vec::new();
    let (mut depth, mut start) = (0usize, 1usize);
    for (i, c) in s.char_indices() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    start = i + 1;
                }
            }
            '}' | ',' if depth == 1 => {
                heads.push(ident_at(s[start..i].trim_start()));
                start = i + 1;
                if c == '}' {
                    break;
                }
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
    heads.into_iter().filter(|h| !h.is_empty() && *h != "self").collect()
}

/// Top-level modules a line names, seen from a file at `module`.
fn targets(line: &str, module: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find(['c', 's']) {
        let at = &rest[i..];
        let boundary = !rest[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
        // `crate::x` is absolute; `super::` climbs one level per use
        let (depth, tail) = if boundary && at.starts_with("crate::") {
            (Some(0), &at["crate::".len()..])
        } else if boundary && at.starts_with("super::") {
            let mut tail = at;
            let mut ups = 0;
            while let Some(t) = tail.strip_prefix("super::") {
                tail = t;
                ups += 1;
            }
            (module.len().checked_sub(ups), tail)
        } else {
            (None, "")
        };
        if depth == Some(0) {
            if tail.starts_with('{') {
                out.extend(group_heads(tail).into_iter().map(str::to_owned));
            } else {
                let head = ident_at(tail);
                if !head.is_empty() {
                    out.push(head.to_owned());
                }
            }
        }
        rest = &rest[i + 1..];
    }
    out
}

fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut g = Graph::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let module = module_path(rel);
        let Some(top) = module.first().filter(|m| !matches!(m.as_str(), "lib" | "main")) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for to in targets(code, &module) {
                if &to != top {
                    g.entry(top.clone())
                        .or_default()
                        .entry(to)
                        .or_insert_with(|| format!("src/{}:{}", rel.display(), n + 1));
                }
            }
        }
    }
    g
}

/// One circle, as the modules around it, if there is any.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(g: &Graph, node: &str, stack: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in g.get(node).into_iter().flat_map(|e| e.keys()) {
            if let Some(c) = visit(g, next, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    g.keys().find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

#[test]
fn the_top_level_modules_import_each_other_without_a_circle() {
    // IMPORT_GRAPH_SRC reads another tree's `src/` (an older commit's, say)
    let src = std::env::var_os("IMPORT_GRAPH_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let g = graph(&src);
    assert!(g.contains_key("http"), "the graph was not read: {g:?}");
    if let Some(cycle) = find_cycle(&g) {
        let arrows: Vec<String> = cycle
            .windows(2)
            .map(|w| format!("  {} -> {}  ({})", w[0], w[1], g[&w[0]][&w[1]]))
            .collect();
        panic!("import circle: {}\n{}", cycle.join(" -> "), arrows.join("\n"));
    }
}

#[test]
fn the_reader_sees_grouped_nested_and_relative_paths() {
    let at = |m: &[&str]| m.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        targets("use crate::{http::{self, X}, settings::Y, self};", &at(&["a"])),
        ["http", "settings"]
    );
    assert_eq!(targets("let x = crate::otel::ids(s);", &at(&["a", "b"])), ["otel"]);
    assert_eq!(targets("use super::super::metrics::M;", &at(&["a", "b"])), ["metrics"]);
    assert!(targets("use super::respond::R;", &at(&["http", "gate"])).is_empty());
    assert!(targets("use supercrate::x; mycrate::y", &at(&["a"])).is_empty());
}
