//! The module graph of the host crates has no cycles: a module never uses, directly or through
//! others, a module that uses it. This reads the sources (`carousel` and `carousel-trace`) as
//! text: every `crate::…`, `super::…` and `self::…` path outside comments and test modules is an
//! edge from the file's module to the deepest module the path names, and the graph's strongly
//! connected components must all be single modules.
//!
//! A parent that re-exports its children's items (`pub use self::child::Item`) points at them;
//! children then name their siblings directly (`super::sibling::Item`), never the parent, and
//! the rest of the crate goes through the parent's re-exports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

/// The module path of a source file below `root` (`lib.rs` is the crate root, `a/mod.rs` is
/// `a`, `a/b.rs` is `a::b`); `None` for the binary's `main.rs`.
fn module_of(root: &Path, file: &Path) -> Option<Vec<String>> {
    let relative = file.strip_prefix(root).ok()?;
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    match last.as_str() {
        "main.rs" if parts.is_empty() => None,
        "lib.rs" | "mod.rs" => Some(parts),
        name => {
            parts.push(name.strip_suffix(".rs")?.to_string());
            Some(parts)
        }
    }
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its test module (by convention at its end) and comments.
fn code(text: &str) -> String {
    let tests = Regex::new(r"#\[cfg\(test\)\]\s*(pub(\(crate\))?\s+)?mod tests").unwrap();
    let text = match tests.find(text) {
        Some(found) => &text[..found.start()],
        None => text,
    };
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path a `use` tree names, braces expanded: `a::{b, c::{d, e}}` is `a::b`, `a::c::d`,
/// `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or(tree).trim().to_string()];
    };
    let prefix = tree[..open].trim_end_matches(':');
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (index, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|item| !item.trim().is_empty())
        .flat_map(expand)
        .map(|item| match item.as_str() {
            "self" => prefix.to_string(),
            _ => format!("{prefix}::{item}"),
        })
        .collect()
}

/// The module `path` (as written in module `at`) names: the deepest known module it reaches.
fn target(path: &str, at: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let mut segments = path.split("::").map(str::trim);
    let mut module: Vec<String> = match segments.next()? {
        "crate" => Vec::new(),
        "self" => at.to_vec(),
        "super" => at[..at.len().checked_sub(1)?].to_vec(),
        _ => return None,
    };
    for segment in segments {
        if segment == "super" {
            module.pop();
            continue;
        }
        let mut deeper = module.clone();
        deeper.push(segment.to_string());
        if !modules.contains(&deeper) {
            break;
        }
        module = deeper;
    }
    Some(module)
}

/// The uses edges of one crate's sources below `root`.
fn graph(root: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut files = Vec::new();
    sources(root, &mut files);
    let files: Vec<(Vec<String>, String)> = files
        .iter()
        .filter_map(|file| {
            let module = module_of(root, file)?;
            Some((module, code(&std::fs::read_to_string(file).ok()?)))
        })
        .collect();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(module, _)| module.clone()).collect();
    let uses = Regex::new(r"(?s)\buse\s+([^;]+);").unwrap();
    let paths = Regex::new(r"\b(crate|super|self)(::[A-Za-z_][A-Za-z0-9_]*)+").unwrap();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, code) in &files {
        let mut named: Vec<String> = uses
            .captures_iter(code)
            .flat_map(|found| expand(&found[1]))
            .collect();
        let rest = uses.replace_all(code, "");
        named.extend(
            paths
                .find_iter(&rest)
                .map(|found| found.as_str().to_string()),
        );
        let entry = edges.entry(module.clone()).or_default();
        for path in named {
            if let Some(to) = target(&path, module, &modules) {
                if &to != module {
                    entry.insert(to);
                }
            }
        }
    }
    edges
}

/// The strongly connected components of more than one module (Tarjan's algorithm).
fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a Vec<String>) {
        let next = state.index.len();
        state.index.insert(node, next);
        state.low.insert(node, next);
        state.stack.push(node);
        state.on_stack.insert(node);
        for to in state.edges.get(node).into_iter().flatten() {
            if !state.index.contains_key(to) {
                visit(state, to);
                let low = state.low[node].min(state.low[to]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(to) {
                let low = state.low[node].min(state.index[to]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                component.push(format!("crate::{}", member.join("::")));
                if member == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in edges.keys() {
        if !state.index.contains_key(node) {
            visit(&mut state, node);
        }
    }
    state.found
}

#[test]
fn the_host_crates_have_no_module_cycles() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    for root in [manifest.join("src"), manifest.join("../trace/src")] {
        let edges = graph(&root);
        assert!(edges.len() > 5, "{} has its modules", root.display());
        let found = cycles(&edges);
        assert!(
            found.is_empty(),
            "module cycles in {}: {found:#?}",
            root.display()
        );
    }
}

#[test]
fn the_checker_sees_a_cycle() {
    let modules: BTreeSet<Vec<String>> = [vec![], vec!["a".into()], vec!["b".into()]]
        .into_iter()
        .collect();
    assert_eq!(
        target("crate::a::Thing", &[], &modules),
        Some(vec!["a".to_string()])
    );
    assert_eq!(
        expand("crate::{a::{self, X}, b}"),
        ["crate::a", "crate::a::X", "crate::b"]
    );
    let mut edges = BTreeMap::new();
    edges.insert(
        vec!["a".to_string()],
        [vec!["b".to_string()]].into_iter().collect(),
    );
    edges.insert(
        vec!["b".to_string()],
        [vec!["a".to_string()]].into_iter().collect(),
    );
    assert_eq!(cycles(&edges), vec![vec!["crate::a", "crate::b"]]);
}
