//! Architecture rules checked over the workspace's own source, as tests (see
//! `tests/architecture.rs`): no import cycle among a crate's top-level modules, and no error
//! turned into a `String` in a library crate (a `Result<_, String>`, or an error's text put
//! where its typed value belongs, losing the cause chain and any hint).
//!
//! These are line-based checks on rustfmt-formatted code, not a parser: enough to hold the
//! rules, with fixtures in their tests to show each one fires.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The non-test, non-comment lines of a source file: everything before its first
/// `#[cfg(test)]`, without `//` lines.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    Ok(())
}

/// The top-level module a file of `src` belongs to (`phases/etcd.rs` -> `phases`); `None` for
/// the crate root.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// Which top-level modules each one names through `crate::`.
pub fn module_graph(src: &Path) -> std::io::Result<BTreeMap<String, BTreeSet<String>>> {
    let mut files = Vec::new();
    rust_files(src, &mut files)?;
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = top_module(src, file) else {
            continue;
        };
        graph.entry(from.clone()).or_default();
        let text = std::fs::read_to_string(file)?;
        for (_, line) in code_lines(&text) {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                let after = &rest[at + "crate::".len()..];
                let preceded_by_colon = at > 0 && rest.as_bytes()[at - 1] == b':';
                if let Some(braced) = after.strip_prefix('{') {
                    // `use crate::{a, b::c}`: each item's first segment.
                    let inner = braced.split('}').next().unwrap_or_default();
                    for item in inner.split(',') {
                        let name: String = item
                            .trim()
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        if !name.is_empty() && name != from {
                            graph.entry(from.clone()).or_default().insert(name);
                        }
                    }
                } else if !preceded_by_colon {
                    let name: String = after
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != from {
                        graph.entry(from.clone()).or_default().insert(name);
                    }
                }
                rest = after;
            }
        }
    }
    // Only edges to modules of this crate (not `crate::SomeType` re-exported at the root).
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for targets in graph.values_mut() {
        targets.retain(|t| modules.contains(t));
    }
    Ok(graph)
}

/// Every set of modules that import each other in a cycle (strongly connected components
/// of more than one module), each sorted.
pub fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Tarjan's algorithm, iterative enough for a few dozen modules.
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(targets) = s.graph.get(v) {
            for w in targets {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if s.on_stack.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

/// Names an error value usually goes by in `map_err` closures and error fields.
const ERROR_NAMES: [&str; 6] = ["e", "err", "error", "source", "cause", "why"];

/// Whether `line` turns an error into text where a typed error belongs.
fn stringifies_an_error(line: &str) -> bool {
    let trimmed = line.trim();
    // The error type is a Result's last argument: `, String>` (a map's `String, String>` is not).
    if trimmed.contains("Result<")
        && trimmed.contains(", String>")
        && !trimmed.contains("String, String>")
    {
        return true;
    }
    let to_string = ERROR_NAMES.iter().any(|n| {
        trimmed.contains(&format!("({n}.to_string()"))
            || trimmed.contains(&format!(" {n}.to_string()"))
            || trimmed.contains(&format!("(&{n}.to_string()"))
    });
    let described =
        trimmed.contains("describe_reqwest_error(") || trimmed.contains("describe_error(");
    let into_error = trimmed.contains("map_err(")
        || trimmed.contains("Error::other(")
        || ["reason:", "cause:", "message:", "detail:", "body:"]
            .iter()
            .any(|f| trimmed.starts_with(f));
    (to_string || described) && into_error
}

/// `file:line: text` for every line of `src` that turns an error into a `String`.
pub fn string_errors(src: &Path) -> std::io::Result<Vec<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files)?;
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        for (n, line) in code_lines(&text) {
            if stringifies_an_error(line) {
                found.push(format!("{}:{n}: {}", file.display(), line.trim()));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn a_cycle_through_a_directory_module_is_found_and_a_chain_is_not_one() {
        let dir = tree(&[
            ("lib.rs", "pub mod a; pub mod b; pub mod c;\n"),
            ("a.rs", "use crate::b::Thing;\n"),
            ("b/mod.rs", "mod inner;\n"),
            (
                "b/inner.rs",
                "use crate::{c, d::X};\n// crate::a is only a comment\n",
            ),
            (
                "c.rs",
                "fn f() -> crate::a::T { todo!() }\n#[cfg(test)]\nmod tests { use crate::b; }\n",
            ),
        ]);
        let graph = module_graph(dir.path()).unwrap();
        assert_eq!(cycles(&graph), vec![vec!["a", "b", "c"]]);

        let dir = tree(&[
            ("a.rs", "use crate::b;\n"),
            ("b.rs", "use crate::c;\n"),
            ("c.rs", ""),
        ]);
        assert!(cycles(&module_graph(dir.path()).unwrap()).is_empty());
    }

    #[test]
    fn errors_turned_into_strings_are_found_and_plain_text_is_not() {
        for bad in [
            "fn parse(text: &str) -> Result<Spec, String> {",
            "    .map_err(|e| Problem::Bad(e.to_string()))?;",
            "            reason: e.to_string(),",
            "    let _ = tx.send(Err(std::io::Error::other(error.to_string())));",
            "                cause: describe_reqwest_error(&e),",
        ] {
            assert!(stringifies_an_error(bad), "{bad}");
        }
        for fine in [
            "    name: name.to_string(),",
            "    .map_err(|cause| Problem::Bad { path, cause })?;",
            "    tracing::info!(error = %describe_error(&e), \"request failed\");",
            "    let shown = reference.to_string();",
            ") -> Result<std::collections::BTreeMap<String, String>, WireError> {",
        ] {
            assert!(!stringifies_an_error(fine), "{fine}");
        }
    }
}
