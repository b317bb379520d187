//! The rules of ARCHITECTURE.md that the compiler does not check: no module of `node` or
//! `cli` depends on itself through others, and the crates depend on each other one way
//! only (the node never on an HTTP client, the client never on the node).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

/// `text` without `//` and `/* */` comments (a `crate::` in prose is not a dependency).
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |i| &after[i..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |i| &after[i + 2..]);
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The modules a crate root declares (`mod x;`, with any visibility).
fn top_modules(root: &Path) -> Vec<String> {
    let text = without_comments(&std::fs::read_to_string(root).expect("crate root"));
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("pub(crate) ")
                .or_else(|| l.strip_prefix("pub "))
                .unwrap_or(l);
            let name = l.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.trim().to_owned())
        })
        .collect()
}

/// Every source file of module `name` under `src`: its file or directory, and the files
/// its `#[path]` attributes name. Test files are left out (`tests.rs`, `*_tests.rs`):
/// a test may reach into any module it tests; the layering is the shipped code's.
fn module_files(src: &Path, name: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let file = src.join(format!("{name}.rs"));
    if file.is_file() {
        files.push(file);
    }
    let mut dirs = vec![src.join(name)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut named = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("source");
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("#[path = \"")
                && let Some(path) = rest.split('"').next()
            {
                let beside = f.parent().expect("dir").join(path);
                named.push(beside);
            }
        }
    }
    files.extend(named.into_iter().filter(|p| p.is_file()));
    files.retain(|f| {
        let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        stem != "tests" && !stem.ends_with("_tests")
    });
    files
}

/// `text` up to its test module (by convention the last thing in a file).
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .map_or(text, |at| &text[..at])
}

/// Which of `modules` each module names as `crate::<module>`.
fn module_graph(src: &Path, modules: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let known: BTreeSet<&str> = modules.iter().map(String::as_str).collect();
    modules
        .iter()
        .map(|m| {
            let mut uses = BTreeSet::new();
            for f in module_files(src, m) {
                let source = std::fs::read_to_string(&f).expect("source");
                let text = without_comments(without_tests(&source));
                for (i, _) in text.match_indices("crate::") {
                    let after = &text[i + "crate::".len()..];
                    let names: Vec<&str> = match after.strip_prefix('{') {
                        Some(group) => group
                            .split('}')
                            .next()
                            .unwrap_or("")
                            .split(',')
                            .map(|n| n.trim().split("::").next().unwrap_or(""))
                            .collect(),
                        None => vec![
                            after
                                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                                .next()
                                .unwrap_or(""),
                        ],
                    };
                    for n in names {
                        if known.contains(n) && n != m {
                            uses.insert(n.to_owned());
                        }
                    }
                }
            }
            (m.clone(), uses)
        })
        .collect()
}

/// A cycle in `graph`, as the path that closes it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

fn assert_acyclic(crate_dir: &str, root: &str) {
    let src = repo().join(crate_dir).join("src");
    let modules = top_modules(&src.join(root));
    assert!(modules.len() > 3, "{crate_dir}: found modules {modules:?}");
    let graph = module_graph(&src, &modules);
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "{crate_dir}: modules depend on each other in a cycle: {}",
            cycle.join(" → ")
        );
    }
}

#[test]
fn no_module_of_node_or_cli_depends_on_itself_through_others() {
    assert_acyclic("node", "lib.rs");
    assert_acyclic("cli", "lib.rs");
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        without_comments("x // crate::y\nz /* crate::w */"),
        "x \nz "
    );
}

/// The `[dependencies]` of a crate's manifest (not its dev-dependencies).
fn dependencies(crate_dir: &str) -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(repo().join(crate_dir).join("Cargo.toml")).expect("manifest");
    let manifest: toml::Value = toml::from_str(&text).expect("TOML");
    manifest
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn crates_depend_on_each_other_one_way() {
    let forbidden: [(&str, &[&str]); 11] = [
        (
            "crypto",
            &[
                "ordo-ledger",
                "ordo-genesis",
                "ordo-node",
                "libp2p",
                "rocksdb",
                "tokio",
            ],
        ),
        ("ledger", &["ordo-genesis", "ordo-node", "libp2p", "tokio"]),
        ("genesis", &["ordo-node", "ordo-api", "ordo-client"]),
        (
            "wire",
            &["ordo-genesis", "ordo-node", "libp2p", "rocksdb", "axum"],
        ),
        (
            "config",
            &["ordo-genesis", "ordo-node", "libp2p", "rocksdb"],
        ),
        ("harness", &["ordo-node"]),
        (
            "api",
            &[
                "ordo-node",
                "ordo-client",
                "reqwest",
                "axum",
                "tokio",
                "rocksdb",
            ],
        ),
        (
            "client",
            &[
                "ordo-node",
                "ordo-genesis",
                "ordo-harness",
                "rocksdb",
                "axum",
            ],
        ),
        ("node", &["ordo-client", "ordo-harness", "reqwest"]),
        ("nemesis", &["ordo-node"]),
        (
            "lazyfs",
            &["ordo-crypto", "ordo-ledger", "ordo-node", "ordo-harness"],
        ),
    ];
    for (krate, never) in forbidden {
        let deps = dependencies(krate);
        for dep in never {
            assert!(!deps.contains(*dep), "{krate} must not depend on {dep}");
        }
    }
    // The client, and what the fuzz targets decode with, take the ledger without its
    // RocksDB store.
    let text = std::fs::read_to_string(repo().join("Cargo.toml")).expect("manifest");
    let workspace: toml::Value = toml::from_str(&text).expect("TOML");
    let ledger = &workspace["workspace"]["dependencies"]["ordo-ledger"];
    assert_eq!(
        ledger.get("default-features"),
        Some(&toml::Value::Boolean(false))
    );
    for krate in ["client", "api", "wire", "config", "genesis"] {
        let manifest: toml::Value = toml::from_str(
            &std::fs::read_to_string(repo().join(krate).join("Cargo.toml")).expect("manifest"),
        )
        .expect("TOML");
        assert!(
            manifest["dependencies"]["ordo-ledger"]
                .get("features")
                .is_none(),
            "{krate} must not turn on the ledger's store"
        );
    }
}

/// Test-only faults (`ordo-node`'s `fault-injection` feature) reach only the `ordo-faulty`
/// binary: no crate depends on the node with the feature on, and the cli package turns it
/// on only through a feature of its own that is off by default.
#[test]
fn fault_injection_is_never_on_by_default() {
    let text = std::fs::read_to_string(repo().join("Cargo.toml")).expect("manifest");
    let workspace: toml::Value = toml::from_str(&text).expect("TOML");
    let members = workspace["workspace"]["members"]
        .as_array()
        .expect("members");
    for member in members {
        let member = member.as_str().expect("a path");
        let manifest: toml::Value = toml::from_str(
            &std::fs::read_to_string(repo().join(member).join("Cargo.toml")).expect("manifest"),
        )
        .expect("TOML");
        for table in ["dependencies", "dev-dependencies"] {
            let node = manifest.get(table).and_then(|d| d.get("ordo-node"));
            let features = node
                .and_then(|n| n.get("features"))
                .map(ToString::to_string);
            assert!(
                !features.unwrap_or_default().contains("fault-injection"),
                "{member} turns on the node's fault injection in its {table}"
            );
        }
        if let Some(features) = manifest.get("features") {
            let default = features.get("default").map(ToString::to_string);
            assert!(
                !default.unwrap_or_default().contains("fault-injection"),
                "{member} turns on fault injection by default"
            );
        }
    }
    let node: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo().join("node/Cargo.toml")).expect("manifest"))
            .expect("TOML");
    assert!(node["features"].get("default").is_none());
}
