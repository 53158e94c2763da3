//! Dependencies point one way. Reads the crate's own sources (test code left out) and fails when the top-level
//! modules, or the sibling modules inside one of them, import each other in a circle; the message names the
//! circle and where each step is imported.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file without its test code: `#[cfg(test)]` modules stand at the end of files here; files that are all
/// test code are skipped.
fn production_code(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if name.ends_with("tests.rs") || name == "testing.rs" {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let code = match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    // Comments mention modules without depending on them.
    Some(
        code.lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// The identifiers that follow `prefix` in `code` (`crate::view::…` → `view`).
fn references<'a>(code: &'a str, prefix: &str) -> BTreeSet<&'a str> {
    code.match_indices(prefix)
        .filter(|(i, _)| {
            // `crate::` itself, not `mycrate::`.
            *i == 0
                || !code.as_bytes()[i - 1].is_ascii_alphanumeric() && code.as_bytes()[i - 1] != b'_'
        })
        .filter_map(|(i, _)| {
            let rest = &code[i + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (end > 0).then(|| &rest[..end])
        })
        .collect()
}

type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// A circle in the graph, if there is one, as the list of nodes along it.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

fn explain(cycle: &[String], graph: &Graph) -> String {
    cycle
        .windows(2)
        .map(|w| format!("{} -> {} (in {})", w[0], w[1], graph[&w[0]][&w[1]]))
        .collect::<Vec<_>>()
        .join("\n  ")
}

#[test]
fn module_dependencies_have_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let top_modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(&src).ok()?;
            let first = rel.components().next()?.as_os_str().to_str()?;
            Some(first.trim_end_matches(".rs").to_string())
        })
        .filter(|m| m != "main" && m != "lib" && m != "cli")
        .collect();

    let mut top: Graph = BTreeMap::new();
    let mut siblings: Graph = BTreeMap::new();
    for file in &files {
        let Some(code) = production_code(file) else {
            continue;
        };
        let rel = file.strip_prefix(&src).unwrap();
        let parts: Vec<String> = rel
            .components()
            .map(|c| {
                c.as_os_str()
                    .to_str()
                    .unwrap()
                    .trim_end_matches(".rs")
                    .to_string()
            })
            .collect();
        let shown = rel.display().to_string();
        let module = &parts[0];
        if !top_modules.contains(module) {
            continue;
        }
        for target in references(&code, "crate::") {
            if target != module && top_modules.contains(target) {
                top.entry(module.clone())
                    .or_default()
                    .entry(target.to_string())
                    .or_insert_with(|| shown.clone());
            }
        }
        // Inside a module directory: src/probe/reading.rs using `super::endpoint::…` depends on its sibling.
        if parts.len() == 2 && parts[1] != "mod" {
            let dir = src.join(module);
            let sibling =
                |name: &str| dir.join(format!("{name}.rs")).exists() || dir.join(name).is_dir();
            let here = format!("{module}::{}", parts[1]);
            let crate_prefix = format!("crate::{module}::");
            for target in references(&code, "super::")
                .into_iter()
                .chain(references(&code, &crate_prefix))
            {
                if target != parts[1] && sibling(target) {
                    siblings
                        .entry(here.clone())
                        .or_default()
                        .entry(format!("{module}::{target}"))
                        .or_insert_with(|| shown.clone());
                }
            }
        }
    }
    assert!(
        top.contains_key("daemon") && top.contains_key("view"),
        "the scan found no dependencies: {top:?}"
    );
    if let Some(cycle) = find_cycle(&top) {
        panic!(
            "modules import each other in a circle:\n  {}",
            explain(&cycle, &top)
        );
    }
    if let Some(cycle) = find_cycle(&siblings) {
        panic!(
            "sibling modules import each other in a circle:\n  {}",
            explain(&cycle, &siblings)
        );
    }
    // The layering the design asks for, spelled out where it is easy to break.
    for (low, high) in [
        ("view", "export"),
        ("view", "daemon"),
        ("config", "daemon"),
        ("config", "probe"),
        ("config", "view"),
        ("state", "daemon"),
        ("export", "daemon"),
        ("maintenance", "daemon"),
        ("maintenance", "export"),
        ("settings", "config"),
        ("settings", "probe"),
        ("settings", "view"),
    ] {
        assert!(
            !top.get(low).is_some_and(|e| e.contains_key(high)),
            "{low} must not import {high} (it does in {})",
            top[low][high]
        );
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let mut g: Graph = BTreeMap::new();
    g.entry("a".into())
        .or_default()
        .insert("b".into(), "a.rs".into());
    g.entry("b".into())
        .or_default()
        .insert("c".into(), "b.rs".into());
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into())
        .or_default()
        .insert("a".into(), "c.rs".into());
    let cycle = find_cycle(&g).expect("a -> b -> c -> a");
    assert_eq!(cycle, vec!["a", "b", "c", "a"]);
    assert!(explain(&cycle, &g).contains("c -> a (in c.rs)"));
}
