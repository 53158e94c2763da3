//! Dependencies point one way. Reads the crate's own sources (comments, strings and `#[cfg(test)]` items left
//! out) and fails when modules that share a parent — the top-level modules, or siblings inside any of them, at any
//! depth — import each other in a circle, or when a top-level module imports one above it in the layering the
//! design names. The message names the modules and the file of each import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules from the highest (imports the others) to the lowest (imports none); a module may only
/// import modules of lower layers. `cli` and `main` are the binary's, outside the library.
const LAYERS: &[&[&str]] = &[
    &["daemon"],
    &["export"],
    &["state"],
    &["maintenance", "events"],
    &["probe", "config"],
    &["view"],
    &["vitals"],
    &["settings", "schedule", "rule"],
    &["etcd"],
    &["units", "pem", "secret", "id", "names", "histogram"],
    &["files"],
];

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

/// The code with comments and string and char literals blanked out (their text mentions modules without
/// depending on them). Lifetimes (`'a`) are kept.
fn strip(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !ident_char(chars.get(i.wrapping_sub(1)))
        {
            // A raw string: r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|h| chars.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && next.is_some() && chars.get(i + 2) == Some(&'\'') {
            out.push_str("' '");
            i += 3;
        } else if c == '\'' && next == Some('\\') {
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_char(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
}

/// Where the item that starts at `from` ends: its `;`, or the brace that closes its body.
fn item_end(code: &[u8], from: usize) -> usize {
    let mut depth = 0usize;
    for (i, &b) in code.iter().enumerate().skip(from) {
        match b {
            b';' if depth == 0 => return i + 1,
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// The code without its `#[cfg(test)]` items (test modules, test-only imports).
fn without_tests(code: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut out = String::new();
    let mut rest = code;
    while let Some(i) = rest.find(MARK) {
        out.push_str(&rest[..i]);
        let after = &rest[i + MARK.len()..];
        let end = item_end(after.as_bytes(), 0);
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Every path written after `prefix` (`crate::`, `super::`), groups expanded: `crate::{a::X, b}` gives
/// `[a, X]` and `[b]`.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        if i > 0 && ident_char(Some(&(bytes[i - 1] as char))) {
            continue;
        }
        let mut pos = i + prefix.len();
        tree(code, &mut pos, Vec::new(), &mut out);
    }
    out
}

/// Parses one use-tree at `pos`: `ident(::ident)*(::{tree, …})?`, adding each full path to `out`.
fn tree(code: &str, pos: &mut usize, mut path: Vec<String>, out: &mut Vec<Vec<String>>) {
    let bytes = code.as_bytes();
    let skip_ws = |p: &mut usize| {
        while *p < bytes.len() && (bytes[*p] as char).is_whitespace() {
            *p += 1;
        }
    };
    loop {
        skip_ws(pos);
        if bytes.get(*pos) == Some(&b'{') {
            *pos += 1;
            loop {
                tree(code, pos, path.clone(), out);
                skip_ws(pos);
                match bytes.get(*pos) {
                    Some(b',') => *pos += 1,
                    Some(b'}') => {
                        *pos += 1;
                        return;
                    }
                    _ => return,
                }
                skip_ws(pos);
                if bytes.get(*pos) == Some(&b'}') {
                    *pos += 1;
                    return;
                }
            }
        }
        let start = *pos;
        while *pos < bytes.len() && ident_char(Some(&(bytes[*pos] as char))) {
            *pos += 1;
        }
        if *pos == start {
            if !path.is_empty() {
                out.push(path);
            }
            return;
        }
        path.push(code[start..*pos].to_string());
        if code[*pos..].starts_with("::") {
            *pos += 2;
        } else {
            out.push(path);
            return;
        }
    }
}

/// An import between two modules that share a parent: from → to, with the file that wrote it.
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

/// The module a file is: src/a.rs and src/a/mod.rs are `a`, src/a/b.rs is `a::b`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| {
            c.as_os_str()
                .to_str()
                .unwrap()
                .trim_end_matches(".rs")
                .to_string()
        })
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Adds, for an import of module `to` written in module `from`, the edge between the two modules that share a
/// parent on the way (`probe::reading` → `probe::endpoint`; `view::warnings` → `export::render` gives
/// `view` → `export`). Parents and children importing each other are not edges.
fn add_edge(graph: &mut Graph, from: &[String], to: &[String], file: &str) {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    if common >= from.len() || common >= to.len() {
        return;
    }
    graph
        .entry(from[..=common].join("::"))
        .or_default()
        .entry(to[..=common].join("::"))
        .or_insert_with(|| file.to_string());
}

fn dependency_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    // The module a path names: its longest prefix that is a module.
    let resolve = |path: &[String]| -> Option<Vec<String>> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| modules.contains(p))
    };
    let mut graph = Graph::new();
    for file in &files {
        let module = module_of(&src, file);
        let first = module.first().map(String::as_str);
        if matches!(first, Some("main" | "lib" | "cli" | "testing")) {
            continue;
        }
        let name = file.file_name().unwrap().to_str().unwrap();
        if name.ends_with("tests.rs") {
            continue;
        }
        let code = without_tests(&strip(&std::fs::read_to_string(file).unwrap()));
        let shown = file.strip_prefix(&src).unwrap().display().to_string();
        let parent = &module[..module.len().saturating_sub(1)];
        let absolute = paths_after(&code, "crate::");
        let relative = paths_after(&code, "super::")
            .into_iter()
            .map(|p| parent.iter().cloned().chain(p).collect::<Vec<_>>());
        for path in absolute.into_iter().chain(relative) {
            if let Some(target) = resolve(&path) {
                add_edge(&mut graph, &module, &target, &shown);
            }
        }
    }
    graph
}

#[test]
fn module_dependencies_have_no_cycle_and_point_down() {
    let graph = dependency_graph();
    assert!(
        graph
            .get("daemon")
            .is_some_and(|e| e.contains_key("export"))
            && graph.contains_key("probe::reading"),
        "the scan found too little: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "modules import each other in a circle:\n  {}",
            explain(&cycle, &graph)
        );
    }
    let rank = |m: &str| LAYERS.iter().position(|layer| layer.contains(&m));
    for (from, targets) in graph.iter().filter(|(m, _)| !m.contains("::")) {
        let from_rank =
            rank(from).unwrap_or_else(|| panic!("module {from} is in no layer of LAYERS"));
        for (to, file) in targets {
            let to_rank =
                rank(to).unwrap_or_else(|| panic!("module {to} is in no layer of LAYERS"));
            assert!(
                to_rank > from_rank,
                "{from} imports {to} (in {file}), which is not below it in LAYERS"
            );
        }
    }
}

#[test]
fn the_scanner_sees_groups_relative_paths_and_skips_tests_and_text() {
    let code = strip(
        "use crate::{view::{A, B}, etcd::endpoint};\n\
         use super::raw::Source; // crate::daemon in a comment\n\
         let s = \"crate::export in a string\";\n\
         #[cfg(test)]\nuse crate::testing::x;\n\
         fn f() { crate::units::unix_seconds(t) }\n\
         #[cfg(test)]\nmod tests { use crate::daemon::X; }\n",
    );
    let code = without_tests(&code);
    let paths = paths_after(&code, "crate::");
    let firsts: BTreeSet<&str> = paths.iter().map(|p| p[0].as_str()).collect();
    assert_eq!(
        firsts,
        BTreeSet::from(["etcd", "units", "view"]),
        "{paths:?}"
    );
    assert!(paths.contains(&vec!["view".into(), "B".into()]));
    assert_eq!(paths_after(&code, "super::"), vec![vec!["raw", "Source"]]);
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let mut g: Graph = BTreeMap::new();
    let m = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    add_edge(&mut g, &m("a"), &m("b::x"), "a.rs");
    add_edge(&mut g, &m("b::y"), &m("c"), "b/y.rs");
    add_edge(&mut g, &m("b::y"), &m("b"), "b/y.rs");
    assert_eq!(
        find_cycle(&g),
        None,
        "a child importing its parent is no edge"
    );
    add_edge(&mut g, &m("c::z"), &m("a"), "c/z.rs");
    let cycle = find_cycle(&g).expect("a -> b -> c -> a");
    assert_eq!(cycle, vec!["a", "b", "c", "a"]);
    assert!(explain(&cycle, &g).contains("c -> a (in c/z.rs)"));
}
