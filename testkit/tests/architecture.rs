//! The workspace's architecture rules, checked on its own source: no import cycle among a
//! library crate's modules, and no error turned into a `String` in a library crate.

use std::path::{Path, PathBuf};

use testkit::source_rules::{cycles, module_graph, string_errors};

/// The product's library crates (the CLI, the test kit and the fuzz targets are not).
const LIBRARIES: [&str; 6] = [
    "airgap",
    "bundler",
    "registry",
    "registry-server",
    "etcd",
    "installer",
];

fn src(krate: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("src")
}

#[test]
fn no_library_crate_has_an_import_cycle() {
    let installer = module_graph(&src("installer")).unwrap();
    assert!(
        installer.len() > 20,
        "read {} installer modules",
        installer.len()
    );
    let mut found = Vec::new();
    for krate in LIBRARIES {
        let graph = module_graph(&src(krate)).unwrap();
        assert!(!graph.is_empty(), "{krate}: read no modules");
        for cycle in cycles(&graph) {
            found.push(format!("{krate}: {}", cycle.join(" <-> ")));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn no_library_crate_turns_an_error_into_a_string() {
    let mut found = Vec::new();
    for krate in LIBRARIES {
        found.extend(string_errors(&src(krate)).unwrap());
    }
    assert!(
        found.is_empty(),
        "errors turned into strings (keep the typed error as a #[source]):\n{}",
        found.join("\n")
    );
}
